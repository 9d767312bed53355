"""Load the iris data set, split it, and standardize the features (fitted on train only)."""
import argparse
import csv
import os

from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler


def write(path, X, y):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["f0", "f1", "f2", "f3", "label"])
        for row, label in zip(X, y):
            w.writerow([f"{v:.6f}" for v in row] + [int(label)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--test-size", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=a.test_size, random_state=a.seed, stratify=y)
    scaler = StandardScaler().fit(X_train)
    os.makedirs(a.out, exist_ok=True)
    write(os.path.join(a.out, "train.csv"), scaler.transform(X_train), y_train)
    write(os.path.join(a.out, "test.csv"), scaler.transform(X_test), y_test)
    print(f"preprocess: {len(y_train)} train rows, {len(y_test)} test rows in {a.out}/")


if __name__ == "__main__":
    main()
