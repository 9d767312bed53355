"""Shared by the iris steps: read the CSV files preprocess.py writes."""
import csv


def read(path):
    X, y = [], []
    with open(path, newline="") as f:
        r = csv.reader(f)
        next(r)
        for row in r:
            X.append([float(v) for v in row[:-1]])
            y.append(int(row[-1]))
    return X, y
