"""Write N shards of synthetic order data and the list of shard names (JSON)."""
import argparse
import csv
import json
import os
import random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, required=True)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--list", required=True)
    a = ap.parse_args()
    rng = random.Random(1234)
    os.makedirs(a.out, exist_ok=True)
    names = []
    for s in range(a.shards):
        name = f"shard-{s:03d}"
        with open(os.path.join(a.out, name + ".csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["order_id", "amount_cents", "country"])
            for i in range(a.rows):
                w.writerow([f"{s}-{i}", rng.randint(100, 100000), rng.choice("FR DE US JP".split())])
        names.append(name)
    with open(a.list, "w") as f:
        json.dump(names, f)
    print(f"extract: {a.shards} shards of {a.rows} rows")


if __name__ == "__main__":
    main()
