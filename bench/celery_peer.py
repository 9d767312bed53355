"""bench/celery_peer.py - the Celery side of sluice's engine benchmark (bench_engine.c).

Celery with its Redis broker is the closest peer of sluice's architecture (Airflow's
CeleryExecutor runs on it): a client publishes task messages to Redis, workers take them,
results go back through Redis. This file is both the Celery app (the worker imports it
with `-A celery_peer`) and the driver that bench_engine runs:

    /usr/bin/python3 bench/celery_peer.py --socket /path/redis.sock [--db 1]
        [--pool solo|prefork] [--concurrency N] [--prefetch N]
        [--chain 1000] [--group 10000] [--runs 100] [--width 8]

It flushes the Redis database --db (sluice uses database 0 of the same server, which is
left alone), starts one Celery worker as a child process, runs the three shapes of the
benchmark one after the other and prints one JSON object on its last line of output:

  chain   a chain of --chain no-op tasks (`chain(noop.si(), ...)`): every task returns
          time.time() at its start, so the step-to-step latency of task k+1 is its start
          minus the start of task k (task k's body, storing its result, publishing the
          next message, the worker fetching it); p50, p99, mean; plus the wall time from
          apply_async() to the last result;
  group   --group independent no-op tasks (`group(...)`), wall time from apply_async()
          (publishing included, as sluice's fan-out includes its dispatch) to the moment
          every result is in;
  dags    --runs concurrent instances of a 10-task DAG of the same shape as sluice's
          (one task, then --width tasks in parallel, then one: chain(noop, chord(group,
          noop))), wall time from the first apply_async() to the last result.

No durable state anywhere: Celery keeps nothing but the Redis keys (broker lists and
results with an expiry); Redis itself runs as sluice's embedded server does (appendonly,
fsync every second).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from celery import Celery, chain, chord, group

SOCKET = os.environ.get("CELERY_PEER_SOCKET", "/tmp/redis.sock")
DB = int(os.environ.get("CELERY_PEER_DB", "1"))
URL = "redis+socket://%s?virtual_host=%d" % (SOCKET, DB)

app = Celery("celery_peer", broker=URL, backend=URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=int(os.environ.get("CELERY_PEER_PREFETCH", "4")),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    result_expires=3600,
)


@app.task(name="noop")
def noop():
    """Does nothing; returns when it started, for the chain's step-to-step latency."""
    return time.time()


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def bench_chain(n):
    t0 = time.time()
    res = chain(noop.si() for _ in range(n)).apply_async()
    res.get(timeout=3600, disable_sync_subtasks=False)
    wall = time.time() - t0
    ids = []
    r = res
    while r is not None:
        ids.append(r.id)
        r = r.parent
    ids.reverse()
    starts = [app.backend.get_task_meta(i)["result"] for i in ids]
    gaps = sorted((b - a) * 1000.0 for a, b in zip(starts, starts[1:]))
    return {
        "n": n,
        "seconds": wall,
        "steps_per_s": n / wall,
        "p50_ms": percentile(gaps, 50),
        "p99_ms": percentile(gaps, 99),
        "mean_ms": sum(gaps) / len(gaps) if gaps else 0.0,
        "first_to_last_s": starts[-1] - starts[0],
    }


def bench_group(n):
    t0 = time.time()
    res = group(noop.si() for _ in range(n)).apply_async()
    res.get(timeout=3600, disable_sync_subtasks=False)
    wall = time.time() - t0
    return {"n": n, "seconds": wall, "steps_per_s": n / wall}


def bench_dags(runs, width):
    t0 = time.time()
    results = [
        chain(noop.si(), chord([noop.si() for _ in range(width)], noop.si())).apply_async()
        for _ in range(runs)
    ]
    for r in results:
        r.get(timeout=3600, disable_sync_subtasks=False)
    wall = time.time() - t0
    return {"runs": runs, "steps": width + 2, "seconds": wall, "runs_per_s": runs / wall}


def start_worker(pool, concurrency, prefetch):
    env = dict(os.environ)
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = here + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["CELERY_PEER_SOCKET"] = SOCKET
    env["CELERY_PEER_DB"] = str(DB)
    env["CELERY_PEER_PREFETCH"] = str(prefetch)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ left in bench/
    cmd = [sys.executable, "-m", "celery", "-A", "celery_peer", "worker",
           "--pool=%s" % pool, "--concurrency=%d" % concurrency, "--loglevel=WARNING",
           "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if os.geteuid() == 0:
        env["C_FORCE_ROOT"] = "1"  # Celery refuses root only with the pickle serializer
    return subprocess.Popen(cmd, cwd=here, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def stop_worker(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main():
    global SOCKET, DB, URL
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", required=True, help="Redis unix socket")
    ap.add_argument("--db", type=int, default=1, help="Redis database for Celery (flushed)")
    ap.add_argument("--pool", default="solo", choices=["solo", "prefork", "threads"])
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--prefetch", type=int, default=4, help="worker_prefetch_multiplier")
    ap.add_argument("--chain", type=int, default=1000)
    ap.add_argument("--group", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--width", type=int, default=8)
    a = ap.parse_args()
    SOCKET, DB = a.socket, a.db
    URL = "redis+socket://%s?virtual_host=%d" % (SOCKET, DB)
    app.conf.broker_url = URL
    app.conf.result_backend = URL
    app.conf.worker_prefetch_multiplier = a.prefetch

    app.backend.client.flushdb()
    proc = start_worker(a.pool, a.concurrency, a.prefetch)
    out = {"pool": a.pool, "concurrency": a.concurrency, "prefetch": a.prefetch}
    try:
        # ready once a task makes the round trip; also warms both ends up
        noop.si().apply_async().get(timeout=60)
        group(noop.si() for _ in range(200)).apply_async().get(timeout=60)
        if a.chain:
            out["chain"] = bench_chain(a.chain)
        if a.group:
            out["group"] = bench_group(a.group)
        if a.runs:
            out["dags"] = bench_dags(a.runs, a.width)
    except Exception as e:  # report, never hang the C side
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        stop_worker(proc)
        app.backend.client.flushdb()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if "error" in out and err:
        out["worker_log_tail"] = err[-2000:]
    print(json.dumps(out))
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main())
