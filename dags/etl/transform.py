"""Keep the orders over 10.00 in one shard; write them and their count."""
import argparse
import csv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows-out", required=True)
    a = ap.parse_args()
    kept = 0
    with open(a.input, newline="") as src, open(a.out, "w", newline="") as dst:
        r, w = csv.reader(src), csv.writer(dst)
        w.writerow(next(r))
        for row in r:
            if int(row[1]) > 1000:
                w.writerow(row)
                kept += 1
    with open(a.rows_out, "w") as f:
        f.write(f"{kept}\n")
    print(f"transform: {a.input}: kept {kept} rows")


if __name__ == "__main__":
    main()
