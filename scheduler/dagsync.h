/*
 * scheduler/dagsync.h - keeping the DAG registry in step with its source, for the
 * scheduler's loop: when to sync, a Git fetch off the loop's thread, backoff after
 * failures, the published status, and the directory {{ dag.dir }} of a run.
 *
 * The source is a directory (read on the loop's thread: it is quick) or a Git repository
 * (fetched by a thread of its own, so that a slow server never holds up events; the
 * loop applies the fetched snapshot to the store when it is ready). A sync is due every
 * interval, at once after dagsync_request() (the push webhook, `sluice dags sync`), and
 * after a failure again in 1 s, 2 s, 4 s ... up to the interval. A failed fetch changes
 * no DAG: it is logged with its reason and published, with the count of failures in a
 * row, in the "dags_sync" state document (store_state_put) that health and metrics read.
 *
 * Thread-safety: every function is for the loop's thread (the one that owns the store),
 * except that the fetch runs on the internal thread.
 */
#ifndef SLUICE_SCHEDULER_DAGSYNC_H
#define SLUICE_SCHEDULER_DAGSYNC_H

#include "common/strbuf.h"
#include "scheduler/gitsync.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>

struct dagsync_options {
    const char *dir;            /* the directory source (absolute); used when git.url is NULL */
    struct gitsync_options git; /* git.url set: the Git source */
    int64_t interval_ms;        /* between syncs; 0: 30 s */
};

struct dagsync;

/* Opens the source (for Git: gitsync_open, whose errors are returned with err set) and
 * starts the fetch thread. Nothing is synced until dagsync_step(). */
int dagsync_new(struct dagsync **out, const struct dagsync_options *o, struct strbuf *err);
void dagsync_free(struct dagsync *ds);

/* Forget what was synced (a new leadership: another scheduler may have synced since)
 * and sync at the next step. */
void dagsync_reset(struct dagsync *ds);

/* Asks for a sync as soon as possible. */
void dagsync_request(struct dagsync *ds);

/*
 * Does what is due at now: starts a fetch, or applies a finished one to the store and
 * publishes the status. Returns 1 if DAG versions may have changed (the caller's cron
 * ticker should look again), 0 if not, or SL_ECONN if the store's session was lost.
 */
int dagsync_step(struct dagsync *ds, struct store *st, int64_t now);

/* When dagsync_step() next has something to do (a fetch in flight: soon). */
int64_t dagsync_next(const struct dagsync *ds, int64_t now);

/*
 * The directory for {{ dag.dir }} of a run of the DAG in file_path (relative to the
 * source), pinned to commit_sha (NULL for a directory source): the file's directory in
 * the source, or in the commit's read-only checkout (made if missing). Newly allocated.
 * Returns 0, SL_ENOENT (the commit is not in the clone: the run cannot be run) or SL_EIO.
 */
int dagsync_dag_dir(struct dagsync *ds, char **out, const char *file_path, const char *commit_sha,
                    struct strbuf *err);

/* Removes the checkouts no DAG and no active run needs (store_commits_in_use). */
void dagsync_gc(struct dagsync *ds, struct store *st);

#endif
