/*
 * scheduler/scheduler.h - the scheduler daemon: leader lock, DAG registry, cron ticker,
 * run admission, the event loop around the run engine, dispatch, and the reconciler.
 *
 * One struct scheduler is one scheduler process's work, run by one thread through
 * scheduler_run(). Any number may run against one database; exactly one is the leader
 * (DESIGN.md): it holds the advisory lock STORE_LOCK_LEADER on the very session that
 * writes, so a scheduler that lost its session cannot commit. The others wait as
 * standbys, trying for the lock every second, and take over within about a second of
 * the leader's session ending.
 *
 * The leader's loop, each iteration (docs/engine.md, "The scheduler loop"):
 *   1. syncs the DAG source when due or asked (dagsync.h: a Git fetch runs on a thread
 *      of its own) and runs the cron ticker;
 *   2. picks up runs created or cancelled by other processes (the API, the CLI);
 *   3. admits queued runs within their DAG's max_active_runs;
 *   4. reads a batch of worker events (waiting briefly when idle) and applies them, and
 *      time (retries, pending timeouts), to the runs' engines;
 *   5. writes every resulting transition in one transaction, then, only after it
 *      committed, sends the dispatches and stops, then acknowledges the events;
 *   6. notifies the webhooks of runs that ended, and reconciles when due.
 * A crash anywhere loses nothing: events are acknowledged after their effects commit
 * (redelivery is harmless: the engine ignores stale events), and a new leader rebuilds
 * every active run from PostgreSQL and re-sends queued attempts whose message is gone.
 *
 * Errors: scheduler_run() returns 0 after scheduler_request_stop(), or a negative code
 * for a failure it cannot outlive (the schema is newer than this binary, the options are
 * invalid); lost servers are waited out, never fatal.
 */
#ifndef SLUICE_SCHEDULER_SCHEDULER_H
#define SLUICE_SCHEDULER_SCHEDULER_H

#include "scheduler/gitsync.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct scheduler_options {
    const char *database_url;      /* required */
    const char *redis_url;         /* required */
    const char *id;                /* in logs and as the events consumer; NULL: <host>-<pid> */
    const char *dags_dir;          /* the directory source; NULL: no registry sync */
    struct gitsync_options git;    /* git.url set: the Git source replaces dags_dir */
    int64_t dags_interval_ms;      /* between syncs of either source; 0: 30 s */
    size_t batch_size;             /* events per transaction; 0: 1000 */
    int64_t reconcile_interval_ms; /* 0: 5 s */
    int64_t worker_timeout_ms;     /* 0: 30 s */
    int64_t requeue_after_ms;      /* 0: 10 s */
    int64_t poll_interval_ms;      /* 0: 500 ms */
    const char *api_url;           /* for links in notifications; NULL: none */
    bool no_migrate;               /* check the schema instead of migrating it */
    bool no_sync; /* dags_dir only roots {{ dag.dir }}; DAG versions are put by the caller
                   * (sluice dag test) */
};

/* What a scheduler did, for logs, tests and benchmarks. Counters only grow. */
struct scheduler_stats {
    uint64_t batches;          /* transactions committed */
    uint64_t events;           /* worker events applied */
    uint64_t dispatched;       /* messages sent */
    uint64_t redispatched;     /* of those, re-sent by the reconciler */
    uint64_t lost;             /* running attempts failed because their worker died */
    uint64_t runs_started;     /* runs admitted */
    uint64_t runs_finished;    /* runs that reached a final state */
    uint64_t leader_elections; /* times this scheduler became the leader */
};

struct scheduler;

/* Copies the options (strings included). Returns 0 or SL_EINVAL (a required URL
 * missing). Connects to nothing yet. */
int scheduler_new(struct scheduler **out, const struct scheduler_options *o);
void scheduler_free(struct scheduler *s);

/* Runs until scheduler_request_stop(). Blocks; call it from the thread that owns s. */
int scheduler_run(struct scheduler *s);

/* Asks scheduler_run() to return after its current iteration (within about 100 ms plus
 * one batch). Async-signal-safe and callable from any thread. */
void scheduler_request_stop(struct scheduler *s);

/* A copy of the counters; callable from any thread. */
void scheduler_get_stats(const struct scheduler *s, struct scheduler_stats *out);

#endif
