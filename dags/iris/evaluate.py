"""Score the model on data/test.csv; write the accuracy as the step's output param."""
import argparse
import os
import pickle
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import read  # noqa: E402
from sklearn.metrics import accuracy_score, classification_report  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--accuracy-out", required=True)
    a = ap.parse_args()
    X, y = read(os.path.join(a.data, "test.csv"))
    with open(a.model, "rb") as f:
        clf = pickle.load(f)
    pred = clf.predict(X)
    acc = accuracy_score(y, pred)
    print(classification_report(y, pred, digits=3))
    with open(a.accuracy_out, "w") as f:
        f.write(f"{acc:.4f}\n")
    print(f"evaluate: accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
