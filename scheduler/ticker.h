/*
 * scheduler/ticker.h - the cron ticker's decision: which scheduled runs to create now.
 *
 * A pure function, like the run engine (scheduler/engine.h): the scheduler reads the
 * facts about one DAG from PostgreSQL (the newest scheduled run's logical time, how
 * many runs are queued or running, paused or not), passes them with the current time,
 * and gets back the logical times of the runs to create, whether to cancel the active
 * runs, and when to ask again. No I/O, no clock, no global state: the same facts give
 * the same decision. Runs are unique on (dag, logical time) in the store, so deciding
 * again after a crash, or on two schedulers at once, never creates a run twice.
 *
 * Semantics (docs/schedules.md, "How the scheduler creates runs"):
 *
 * Logical time. The logical time of a scheduled run is its tick itself, the instant
 * the schedule fires: the run for the 02:00 tick is created at (or after) 02:00 and
 * has logical time 02:00. This is Argo's convention; Airflow instead gives a run the
 * start of its data interval (the previous tick). Ticks have whole-second precision
 * (cron ticks fall on minutes); times here are Unix milliseconds.
 *
 * Ticks. The ticks of a DAG are the fire times of its `schedule` in its `timezone`
 * (dsl/cron.h: a wall time skipped by a spring-forward gap does not fire that day, a
 * repeated one fires twice). `@every D` counts from `start_date` when one is set,
 * else from the Unix epoch: it fires at anchor + k*D. Ticks before `start_date` or
 * after `end_date` never get a run; a tick exactly at either date does.
 *
 * Due ticks. A call considers the ticks T with L < T <= now, where L is
 *   - the newest scheduled run's logical time (last_logical_ms), if there is one;
 *   - else start_date - 1 ms, if start_date is set (so a tick at start_date is due);
 *   - else now - TICKER_GRACE_MS: a DAG that has no start_date and never ran gets no
 *     run for the past, only for a tick that is less than the grace period old;
 * and L is raised to start_date - 1 ms when it is earlier. Ticks after end_date are
 * never due.
 *
 * Paused or inactive DAGs, and DAGs without a schedule, get nothing: no runs, no
 * skipped ticks, next_wakeup_ms = INT64_MAX. Ticks that passed while a DAG was paused
 * (or sluice was down) are still "due" once it is unpaused, and catchup decides.
 *
 * Catchup picks among the due ticks, oldest first:
 *   all     every due tick gets a run, in order (Airflow's catchup=True). At most
 *           max_create runs per call; if more remain, next_wakeup_ms = now so the
 *           scheduler calls again once it has stored these
 *   latest  only the newest due tick gets a run; the older ones are skipped
 *   none    the newest due tick gets a run only if it is less than TICKER_GRACE_MS
 *           old (now - tick < 60 s); every other due tick is skipped. So ticks missed
 *           while sluice was down or the DAG was paused are not run, and the DAG waits
 *           for its next tick; a scheduler that wakes a little late still runs the
 *           tick it woke up for
 *
 * Overlap then applies to what catchup picked, given active_runs (runs of this DAG
 * in queued or running):
 *   allow   create them all. max_active_runs does not limit creation: runs beyond it
 *           wait in queued (the scheduler admits them)
 *   forbid  if active_runs > 0, create nothing: the picked ticks are skipped with the
 *           reason "overlap: forbid". Else create only the oldest picked tick (so two
 *           scheduled runs never overlap); with catchup all the others stay due and
 *           next_wakeup_ms = now. A skipped tick is only remembered through
 *           last_logical_ms, so once the active run ends catchup decides again:
 *           `none` drops ticks older than the grace period, `latest` runs the newest
 *           one late (as a Kubernetes CronJob with startingDeadlineSeconds does),
 *           `all` runs each of them in turn
 *   replace create only the newest picked tick (the others are skipped with the
 *           reason "overlap: replace") and set cancel_active if active_runs > 0; the
 *           scheduler cancels the active runs and creates the new one
 *
 * Skipped ticks. n_skipped counts the due ticks this decision neither creates nor
 * leaves for a later call, at most TICKER_SKIP_COUNT_MAX (the count saturates
 * there); skipped_reason says why, one or two of "catchup: none", "catchup: latest",
 * "overlap: forbid", "overlap: replace" joined by ", " (NULL when n_skipped is 0).
 * The facts carry no record of skipped ticks, so a later call with the same
 * last_logical_ms reports them again: log them, do not add them up.
 *
 * Next wakeup. next_wakeup_ms is now when due ticks remain for the next call (above),
 * else the first tick strictly after now that is not before start_date nor after
 * end_date, else INT64_MAX (past end_date, or a schedule that never fires again). It
 * assumes the facts stay as they are: the scheduler also decides again when a run of
 * the DAG ends, when the DAG is unpaused, and when its file changes.
 *
 * Ownership: the decision owns create_logical_ms; free it with
 * ticker_decision_release(). skipped_reason is a static string. Thread-safe: no
 * shared state (tz is only read).
 */
#ifndef SLUICE_SCHEDULER_TICKER_H
#define SLUICE_SCHEDULER_TICKER_H

#include "dsl/dsl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sl_tz;

/* How old a tick may be and still get a run under catchup: none (and on a DAG's
 * first tick without start_date). */
#define TICKER_GRACE_MS 60000
/* n_skipped saturates here; also bounds the work of one call. */
#define TICKER_SKIP_COUNT_MAX 10000

struct ticker_dag_state {
    int64_t last_logical_ms; /* newest scheduled run's logical time, or INT64_MIN if none */
    size_t active_runs;      /* queued or running runs of this DAG */
    bool paused;             /* paused by a user */
    bool active;             /* false once the DAG's file is gone */
};

struct ticker_decision {
    int64_t *create_logical_ms; /* logical times of the runs to create, ascending; owned */
    size_t n_create;
    bool cancel_active;         /* overlap: replace and runs are active: cancel them */
    int64_t next_wakeup_ms;     /* when to decide again; INT64_MAX: never by itself */
    const char *skipped_reason; /* static, or NULL when n_skipped is 0 */
    size_t n_skipped;           /* due ticks given up (see above) */
};

/*
 * Decides what the schedule of dag asks for at now_ms, given st. tz is the DAG's
 * time zone (NULL: UTC), loaded by the caller from dag->timezone. At most
 * max_create runs are returned (at least 1 must be allowed).
 *
 * Returns 0 and fills *out (release it with ticker_decision_release()), or
 * SL_EINVAL if max_create is 0 or dag->schedule does not parse (dsl_parse_*
 * validated it, so that is a bug in the caller). *out is untouched on error.
 */
int ticker_decide(struct ticker_decision *out, const struct dsl_dag *dag, const struct sl_tz *tz,
                  const struct ticker_dag_state *st, int64_t now_ms, size_t max_create);

/* Frees create_logical_ms and empties d; safe to call twice. */
void ticker_decision_release(struct ticker_decision *d);

#endif
