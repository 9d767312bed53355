"""The join: read every shard's row count (a JSON list, one entry per shard)."""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", required=True, help="JSON list of per-shard row counts")
    ap.add_argument("--expect", type=int, required=True, help="number of shards expected")
    a = ap.parse_args()
    counts = [int(c) for c in json.loads(a.counts)]
    if len(counts) != a.expect:
        print(f"load: expected {a.expect} shard results, got {len(counts)}", file=sys.stderr)
        sys.exit(1)
    print(f"load: {sum(counts)} rows from {len(counts)} shards")


if __name__ == "__main__":
    main()
