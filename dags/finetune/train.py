"""Fine-tune a small MLP with plain numpy gradient descent.

The step asks for one GPU; sluice passes it as CUDA_VISIBLE_DEVICES. This script
reports the device it was given and computes on the CPU with numpy, so the
example runs on machines without CUDA libraries too.
"""
import argparse
import os

import numpy as np

HIDDEN = {"tiny-mlp": 16, "small-mlp": 64}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--base", default="tiny-mlp", choices=sorted(HIDDEN))
    a = ap.parse_args()
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    print(f"finetune: CUDA_VISIBLE_DEVICES={gpus or '(none)'}")
    d = np.load(os.path.join(a.data, "data.npz"))
    X, y = d["X_train"], d["y_train"].astype(float)
    rng = np.random.default_rng(0)
    h = HIDDEN[a.base]
    W1, b1 = rng.normal(0, 1, (2, h)), np.zeros(h)
    W2, b2 = rng.normal(0, 1, (h, 1)), np.zeros(1)
    loss = float("nan")
    for epoch in range(a.epochs * 100):
        z = np.tanh(X @ W1 + b1)
        p = 1 / (1 + np.exp(-(z @ W2 + b2)[:, 0]))
        loss = float(-np.mean(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9)))
        g = (p - y)[:, None] / len(y)
        gW2, gb2 = z.T @ g, g.sum(0)
        gz = (g @ W2.T) * (1 - z ** 2)
        W1 -= a.lr * 10 * (X.T @ gz)
        b1 -= a.lr * 10 * gz.sum(0)
        W2 -= a.lr * 10 * gW2
        b2 -= a.lr * 10 * gb2
        if epoch % 100 == 99:
            print(f"finetune: epoch {epoch // 100 + 1}/{a.epochs} loss {loss:.4f}")
    os.makedirs(a.out, exist_ok=True)
    np.savez(os.path.join(a.out, "weights.npz"), W1=W1, b1=b1, W2=W2, b2=b2)
    with open(os.path.join(a.out, "loss.txt"), "w") as f:
        f.write(f"{loss:.4f}\n")


if __name__ == "__main__":
    main()
