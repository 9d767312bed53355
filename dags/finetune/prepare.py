"""Make a small two-class data set (two noisy interleaved moons) for the fine-tune."""
import argparse
import os

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    t = rng.uniform(0, np.pi, a.n)
    label = rng.integers(0, 2, a.n)
    x = np.where(label == 0, np.cos(t), 1 - np.cos(t))
    y = np.where(label == 0, np.sin(t), 0.5 - np.sin(t))
    X = np.stack([x, y], axis=1) + rng.normal(0, 0.1, (a.n, 2))
    os.makedirs(a.out, exist_ok=True)
    split = int(a.n * 0.8)
    np.savez(os.path.join(a.out, "data.npz"), X_train=X[:split], y_train=label[:split],
             X_test=X[split:], y_test=label[split:])
    print(f"prepare: {split} train and {a.n - split} test examples")


if __name__ == "__main__":
    main()
