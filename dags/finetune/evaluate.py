"""Accuracy of the fine-tuned MLP on the held-out examples."""
import argparse
import os

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    d = np.load(os.path.join(a.data, "data.npz"))
    w = np.load(os.path.join(a.checkpoint, "weights.npz"))
    z = np.tanh(d["X_test"] @ w["W1"] + w["b1"])
    p = 1 / (1 + np.exp(-(z @ w["W2"] + w["b2"])[:, 0]))
    acc = float(np.mean((p > 0.5) == (d["y_test"] == 1)))
    with open(a.out, "w") as f:
        f.write(f"{acc:.4f}\n")
    print(f"evaluate: accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
