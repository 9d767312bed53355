/*
 * scheduler/ticker.c - the cron ticker's decision (see ticker.h for the semantics).
 *
 * Everything is computed from dsl_cron_next(), which only looks forward. The due
 * ticks are those in a window (after_s, until_s] of whole seconds; the oldest are
 * walked forward one by one (bounded by max_create or TICKER_SKIP_COUNT_MAX), and
 * the newest is found by a binary search for the largest x with next(x) <= until_s
 * (next() is non-decreasing in x), so a DAG paused for years with a per-minute
 * schedule costs about 50 calls, not millions.
 */
#include "scheduler/ticker.h"

#include "common/error.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "dsl/cron.h"

#include <stdlib.h>
#include <string.h>

/* dsl_cron_next() answers within +-10^15 s of 1970; nothing earlier or later matters. */
#define TICK_LIMIT_S 1000000000000000LL

/* The due ticks: after_s < tick <= until_s. */
struct window {
    const struct dsl_cron *cron;
    const struct sl_tz *tz;
    int64_t after_s;
    int64_t until_s;
};

static int64_t clamp_s(int64_t s)
{
    if (s < -TICK_LIMIT_S)
        return -TICK_LIMIT_S;
    if (s > TICK_LIMIT_S)
        return TICK_LIMIT_S;
    return s;
}

/* The first tick strictly after after_s, into *out; false if there is none. */
static bool next_tick(int64_t *out, const struct window *w, int64_t after_s)
{
    return dsl_cron_next(out, w->cron, w->tz, after_s) == 0;
}

static bool is_due(const struct window *w, int64_t after_s, int64_t *out)
{
    return next_tick(out, w, after_s) && *out <= w->until_s;
}

/* How many ticks are due, counting no further than cap. */
static size_t count_due(const struct window *w, size_t cap)
{
    size_t n = 0;
    int64_t t = w->after_s;
    while (n < cap && is_due(w, t, &t))
        n++;
    return n;
}

/* The newest due tick; there must be at least one. */
static int64_t newest_due(const struct window *w)
{
    int64_t lo = w->after_s; /* next(lo) <= until */
    int64_t hi = w->until_s; /* next(hi) > until */
    int64_t t;
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (is_due(w, mid, &t))
            lo = mid;
        else
            hi = mid;
    }
    (void)is_due(w, lo, &t);
    return t;
}

static const char *skip_reason(enum dsl_catchup catchup, bool by_catchup, enum dsl_overlap overlap,
                               bool by_overlap)
{
    /* [catchup: -, none, latest][overlap: -, forbid, replace] */
    static const char *const reasons[3][3] = {
        {NULL, "overlap: forbid", "overlap: replace"},
        {"catchup: none", "catchup: none, overlap: forbid", "catchup: none, overlap: replace"},
        {"catchup: latest", "catchup: latest, overlap: forbid",
         "catchup: latest, overlap: replace"},
    };
    int c = !by_catchup ? 0 : catchup == DSL_CATCHUP_NONE ? 1 : 2;
    int o = !by_overlap ? 0 : overlap == DSL_OVERLAP_FORBID ? 1 : 2;
    return reasons[c][o];
}

int ticker_decide(struct ticker_decision *out, const struct dsl_dag *dag, const struct sl_tz *tz,
                  const struct ticker_dag_state *st, int64_t now_ms, size_t max_create)
{
    struct ticker_decision d = {.next_wakeup_ms = INT64_MAX};
    struct dsl_cron *cron = NULL;
    int rc = 0;

    if (!out || !dag || !st || max_create == 0 || now_ms < -TICK_LIMIT_S * 1000 ||
        now_ms > TICK_LIMIT_S * 1000)
        return SL_EINVAL;
    if (!dag->schedule || st->paused || !st->active)
        goto done;
    if (dsl_cron_parse(&cron, dag->schedule, NULL, 0) < 0) {
        rc = SL_EINVAL;
        goto cleanup;
    }
    if (dsl_cron_is_every(cron))
        dsl_cron_set_anchor(cron, dag->start_date ? dag->start_unix : 0);

    int64_t now_s = sl_floor_div(now_ms, 1000);
    int64_t first_s = dag->start_date ? dag->start_unix - 1 : INT64_MIN; /* ticks > first_s */
    struct window w = {.cron = cron, .tz = tz};
    if (st->last_logical_ms != INT64_MIN)
        w.after_s = sl_floor_div(st->last_logical_ms, 1000);
    else if (dag->start_date)
        w.after_s = first_s;
    else
        w.after_s = sl_floor_div(now_ms - TICKER_GRACE_MS, 1000);
    if (w.after_s < first_s)
        w.after_s = first_s;
    w.until_s = now_s;
    if (dag->end_date && w.until_s > dag->end_unix)
        w.until_s = dag->end_unix;
    w.after_s = clamp_s(w.after_s);
    w.until_s = clamp_s(w.until_s);

    size_t skip_catchup = 0, skip_overlap = 0;
    bool more = false;
    int64_t t;
    if (w.until_s <= w.after_s || !is_due(&w, w.after_s, &t)) {
        /* nothing due */
    } else if (dag->catchup == DSL_CATCHUP_ALL && dag->overlap != DSL_OVERLAP_REPLACE) {
        if (dag->overlap == DSL_OVERLAP_FORBID && st->active_runs > 0) {
            skip_overlap = count_due(&w, TICKER_SKIP_COUNT_MAX);
        } else {
            /* oldest first; forbid: one at a time, so scheduled runs never overlap */
            size_t limit = dag->overlap == DSL_OVERLAP_FORBID ? 1 : max_create;
            d.create_logical_ms = xmalloc(limit * sizeof(*d.create_logical_ms));
            int64_t after = w.after_s;
            while (d.n_create < limit && is_due(&w, after, &t)) {
                d.create_logical_ms[d.n_create++] = t * 1000;
                after = t;
            }
            more = is_due(&w, after, &t);
        }
    } else {
        /* one run at most: the newest due tick */
        int64_t newest = newest_due(&w);
        size_t total = count_due(&w, TICKER_SKIP_COUNT_MAX + 1);
        bool pick = dag->catchup != DSL_CATCHUP_NONE || now_ms - newest * 1000 < TICKER_GRACE_MS;
        if (dag->catchup == DSL_CATCHUP_ALL)
            skip_overlap = total - 1; /* replace: only the newest matters */
        else
            skip_catchup = total - (pick ? 1 : 0);
        if (pick && dag->overlap == DSL_OVERLAP_FORBID && st->active_runs > 0) {
            skip_overlap++;
        } else if (pick) {
            d.create_logical_ms = xmalloc(sizeof(*d.create_logical_ms));
            d.create_logical_ms[d.n_create++] = newest * 1000;
            d.cancel_active = dag->overlap == DSL_OVERLAP_REPLACE && st->active_runs > 0;
        }
    }
    d.n_skipped = skip_catchup + skip_overlap;
    if (d.n_skipped > TICKER_SKIP_COUNT_MAX)
        d.n_skipped = TICKER_SKIP_COUNT_MAX;
    d.skipped_reason = skip_reason(dag->catchup, skip_catchup > 0, dag->overlap, skip_overlap > 0);

    if (more) {
        d.next_wakeup_ms = now_ms;
    } else {
        int64_t from = clamp_s(now_s < first_s ? first_s : now_s);
        if (next_tick(&t, &w, from) && (!dag->end_date || t <= dag->end_unix))
            d.next_wakeup_ms = t * 1000;
    }

done:
    *out = d;
    d.create_logical_ms = NULL;
cleanup:
    free(d.create_logical_ms);
    dsl_cron_free(cron);
    return rc;
}

void ticker_decision_release(struct ticker_decision *d)
{
    if (!d)
        return;
    free(d->create_logical_ms);
    memset(d, 0, sizeof(*d));
    d->next_wakeup_ms = INT64_MAX;
}
