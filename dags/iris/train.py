"""Train a RandomForest on data/train.csv and save it with pickle."""
import argparse
import os
import pickle
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import read  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--n-estimators", type=int, default=100)
    ap.add_argument("--max-depth", type=int, default=None)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    X, y = read(os.path.join(a.data, "train.csv"))
    clf = RandomForestClassifier(n_estimators=a.n_estimators, max_depth=a.max_depth,
                                 random_state=a.seed)
    clf.fit(X, y)
    with open(a.model, "wb") as f:
        pickle.dump(clf, f)
    print(f"train: {a.n_estimators} trees, max_depth={a.max_depth}, "
          f"train accuracy {clf.score(X, y):.4f}")


if __name__ == "__main__":
    main()
