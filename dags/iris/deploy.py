"""Copy an accepted model to the serving location, with a small manifest."""
import argparse
import json
import os
import shutil


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--accuracy", required=True)
    a = ap.parse_args()
    os.makedirs(a.to, exist_ok=True)
    dest = os.path.join(a.to, "model.pkl")
    tmp = dest + ".tmp"
    shutil.copyfile(a.model, tmp)
    os.replace(tmp, dest)
    with open(os.path.join(a.to, "manifest.json"), "w") as f:
        json.dump({"model": "model.pkl", "accuracy": float(a.accuracy)}, f)
    print(f"deploy: model with accuracy {a.accuracy} copied to {dest}")


if __name__ == "__main__":
    main()
