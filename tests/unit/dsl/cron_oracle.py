#!/usr/bin/python3
# tests/unit/dsl/cron_oracle.py - croniter as an oracle for tests/unit/dsl/check_cron.c.
#
# Usage: /usr/bin/python3 cron_oracle.py INPUT
# INPUT has one case per line, tab-separated: zone, base (unix seconds), count, expr.
# For each case prints one line: "OK t1 t2 ..." (the next `count` fire times after
# base, as unix seconds, computed by Debian's python3-croniter with a timezone-aware
# base datetime in `zone`), or "ERR <exception class>" if croniter raises.
# Deliberately naive: it only drives croniter, so the C test compares against
# croniter's own semantics, not a re-implementation.
import sys
import datetime
import zoneinfo

from croniter import croniter


def main():
    zones = {}
    out = []
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            zone, base, count, expr = line.rstrip("\n").split("\t")
            tz = zones.get(zone) or zones.setdefault(zone, zoneinfo.ZoneInfo(zone))
            start = datetime.datetime.fromtimestamp(int(base), tz)
            try:
                it = croniter(expr, start, ret_type=float)
                times = [int(it.get_next()) for _ in range(int(count))]
                out.append("OK " + " ".join(str(t) for t in times))
            except Exception as e:  # any croniter error is a result to compare
                out.append("ERR " + type(e).__name__)
    sys.stdout.write("\n".join(out) + "\n")


main()
