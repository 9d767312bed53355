/*
 * tests/unit/scheduler/check_ticker.c - the cron ticker's decision, without servers.
 *
 * A table of cases, each a DAG's schedule keys, the facts (newest run, active runs,
 * paused) and "now", and the expected decision written as RFC 3339 times. Then
 * loops that play the scheduler: they call ticker_decide() at its next_wakeup_ms
 * (a little late), store the runs it asks for, and check every tick gets exactly
 * one run; and the restart property (same facts, same decision).
 */
#include "common/error.h"
#include "common/strbuf.h"
#include "common/timeutil.h"
#include "common/tz.h"
#include "dsl/dsl.h"
#include "scheduler/ticker.h"
#include "tests/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct dsl_dag *load(const char *keys)
{
    char yaml[1024];
    snprintf(yaml, sizeof(yaml), "name: t\n%ssteps:\n  - {name: a, command: [echo]}\n", keys);
    struct dsl_diags diags;
    struct dsl_dag *dag = NULL;
    dsl_diags_init(&diags);
    int rc = dsl_parse_buffer(&dag, "t.yaml", yaml, strlen(yaml), NULL, &diags);
    if (rc < 0)
        dsl_diags_print(&diags, stderr);
    ck_assert_int_eq(rc, 0);
    dsl_diags_release(&diags);
    return dag;
}

static int64_t ms(const char *rfc3339)
{
    int64_t s;
    ck_assert_int_eq(sl_time_parse(&s, rfc3339, NULL), 0);
    return s * 1000;
}

/* "2026-03-10T12:00:00Z", or "never" for INT64_MAX; ms must be whole seconds. */
static void fmt(char buf[32], int64_t t_ms)
{
    if (t_ms == INT64_MAX) {
        strcpy(buf, "never");
        return;
    }
    ck_assert_int_eq(t_ms % 1000, 0);
    sl_time_format_utc(buf, t_ms / 1000);
}

static struct sl_tz *load_tz(const struct dsl_dag *dag)
{
    struct sl_tz *tz = NULL;
    ck_assert_int_eq(sl_tz_load(&tz, dag->timezone), 0);
    return tz;
}

/* Fields in reading order (facts, then expectations), not packed: a small test table. */
struct tcase_row { // NOLINT(clang-analyzer-optin.performance.Padding)
    const char *name;
    const char *keys; /* YAML lines: schedule, timezone, dates, catchup, overlap */
    const char *last; /* newest run's logical time, or NULL */
    size_t active;
    bool paused;
    bool inactive;
    const char *now;
    size_t max_create; /* 0: 100 */
    /* expected */
    const char *create; /* space-separated times, "" for none */
    bool cancel;
    const char *wakeup; /* a time, "now" or "never" */
    size_t n_skipped;
    const char *reason; /* NULL when nothing skipped */
};

#define NOW    "2026-03-10T12:34:56Z" /* a Tuesday */
#define HOURLY "schedule: \"@hourly\"\n"

static const struct tcase_row rows[] = {
    /* first ticks without start_date: nothing from the past, the tick due now yes */
    {"fresh dag waits for next tick", HOURLY, NULL, 0, false, false, NOW, 0, "", false,
     "2026-03-10T13:00:00Z", 0, NULL},
    {"fresh dag runs tick within grace", HOURLY, NULL, 0, false, false, "2026-03-10T13:00:30Z", 0,
     "2026-03-10T13:00:00Z", false, "2026-03-10T14:00:00Z", 0, NULL},
    {"fresh dag, tick older than grace", HOURLY "catchup: all\n", NULL, 0, false, false,
     "2026-03-10T13:01:30Z", 0, "", false, "2026-03-10T14:00:00Z", 0, NULL},
    {"tick exactly now", HOURLY, NULL, 0, false, false, "2026-03-10T13:00:00Z", 0,
     "2026-03-10T13:00:00Z", false, "2026-03-10T14:00:00Z", 0, NULL},
    /* catchup */
    {"none skips missed ticks", HOURLY "catchup: none\n", "2026-03-10T09:00:00Z", 0, false, false,
     NOW, 0, "", false, "2026-03-10T13:00:00Z", 3, "catchup: none"},
    {"none runs the tick due now", HOURLY "catchup: none\n", "2026-03-10T09:00:00Z", 0, false,
     false, "2026-03-10T13:00:59Z", 0, "2026-03-10T13:00:00Z", false, "2026-03-10T14:00:00Z", 3,
     "catchup: none"},
    {"none: grace is exclusive", HOURLY "catchup: none\n", "2026-03-10T12:00:00Z", 0, false, false,
     "2026-03-10T13:01:00Z", 0, "", false, "2026-03-10T14:00:00Z", 1, "catchup: none"},
    {"latest runs the newest missed tick", HOURLY "catchup: latest\n", "2026-03-10T09:00:00Z", 0,
     false, false, NOW, 0, "2026-03-10T12:00:00Z", false, "2026-03-10T13:00:00Z", 2,
     "catchup: latest"},
    {"all runs every missed tick", HOURLY "catchup: all\n", "2026-03-10T09:00:00Z", 0, false, false,
     NOW, 0, "2026-03-10T10:00:00Z 2026-03-10T11:00:00Z 2026-03-10T12:00:00Z", false,
     "2026-03-10T13:00:00Z", 0, NULL},
    {"all is batched by max_create", HOURLY "catchup: all\n", "2026-03-10T09:00:00Z", 0, false,
     false, NOW, 2, "2026-03-10T10:00:00Z 2026-03-10T11:00:00Z", false, "now", 0, NULL},
    {"all, batch exactly fits", HOURLY "catchup: all\n", "2026-03-10T09:00:00Z", 0, false, false,
     NOW, 3, "2026-03-10T10:00:00Z 2026-03-10T11:00:00Z 2026-03-10T12:00:00Z", false,
     "2026-03-10T13:00:00Z", 0, NULL},
    {"up to date", HOURLY "catchup: all\n", "2026-03-10T12:00:00Z", 0, false, false, NOW, 0, "",
     false, "2026-03-10T13:00:00Z", 0, NULL},
    {"newest run in the future", HOURLY "catchup: all\n", "2026-03-11T00:00:00Z", 0, false, false,
     NOW, 0, "", false, "2026-03-10T13:00:00Z", 0, NULL},
    /* start_date and end_date */
    {"start_date is inclusive", HOURLY "catchup: all\nstart_date: 2026-03-10T10:00:00Z\n", NULL, 0,
     false, false, NOW, 0, "2026-03-10T10:00:00Z 2026-03-10T11:00:00Z 2026-03-10T12:00:00Z", false,
     "2026-03-10T13:00:00Z", 0, NULL},
    {"start_date between ticks", HOURLY "catchup: all\nstart_date: 2026-03-10T10:30:00Z\n", NULL, 0,
     false, false, NOW, 0, "2026-03-10T11:00:00Z 2026-03-10T12:00:00Z", false,
     "2026-03-10T13:00:00Z", 0, NULL},
    {"start_date raises an older last run",
     HOURLY "catchup: all\nstart_date: 2026-03-10T11:00:00Z\n", "2026-03-01T00:00:00Z", 0, false,
     false, NOW, 0, "2026-03-10T11:00:00Z 2026-03-10T12:00:00Z", false, "2026-03-10T13:00:00Z", 0,
     NULL},
    {"start_date in the future", HOURLY "catchup: all\nstart_date: 2026-03-11\n", NULL, 0, false,
     false, NOW, 0, "", false, "2026-03-11T00:00:00Z", 0, NULL},
    {"none with start_date in the past", HOURLY "catchup: none\nstart_date: 2026-03-01\n", NULL, 0,
     false, false, NOW, 0, "", false, "2026-03-10T13:00:00Z", 229, "catchup: none"},
    {"end_date is inclusive",
     HOURLY "catchup: all\nstart_date: 2026-03-10T09:00:00Z\nend_date: 2026-03-10T11:00:00Z\n",
     NULL, 0, false, false, NOW, 0,
     "2026-03-10T09:00:00Z 2026-03-10T10:00:00Z 2026-03-10T11:00:00Z", false, "never", 0, NULL},
    {"end_date passed, all done",
     HOURLY "catchup: all\nstart_date: 2026-03-10T09:00:00Z\nend_date: 2026-03-10T11:00:00Z\n",
     "2026-03-10T11:00:00Z", 0, false, false, NOW, 0, "", false, "never", 0, NULL},
    {"end_date in the future bounds wakeup",
     HOURLY "catchup: latest\nend_date: 2026-03-10T13:30:00Z\n", "2026-03-10T12:00:00Z", 0, false,
     false, NOW, 0, "", false, "2026-03-10T13:00:00Z", 0, NULL},
    {"end_date before next tick", HOURLY "catchup: latest\nend_date: 2026-03-10T12:59:00Z\n",
     "2026-03-10T12:00:00Z", 0, false, false, NOW, 0, "", false, "never", 0, NULL},
    /* paused, inactive, manual-only */
    {"paused", HOURLY "catchup: all\n", "2026-03-10T09:00:00Z", 0, true, false, NOW, 0, "", false,
     "never", 0, NULL},
    {"inactive", HOURLY "catchup: all\n", "2026-03-10T09:00:00Z", 0, false, true, NOW, 0, "", false,
     "never", 0, NULL},
    {"no schedule", "catchup: all\n", "2026-03-10T09:00:00Z", 0, false, false, NOW, 0, "", false,
     "never", 0, NULL},
    /* schedule forms */
    {"@daily", "schedule: \"@daily\"\ncatchup: all\nstart_date: 2026-03-07\n", NULL, 0, false,
     false, NOW, 0,
     "2026-03-07T00:00:00Z 2026-03-08T00:00:00Z 2026-03-09T00:00:00Z 2026-03-10T00:00:00Z", false,
     "2026-03-11T00:00:00Z", 0, NULL},
    {"5-field weekdays", "schedule: \"30 6 * * MON-FRI\"\ncatchup: all\nstart_date: 2026-03-06\n",
     NULL, 0, false, false, NOW, 0,
     "2026-03-06T06:30:00Z 2026-03-09T06:30:00Z 2026-03-10T06:30:00Z", false,
     "2026-03-11T06:30:00Z", 0, NULL},
    {"@every anchored at start_date",
     "schedule: \"@every 90m\"\ncatchup: all\nstart_date: 2026-03-10T08:15:00Z\n", NULL, 0, false,
     false, NOW, 0, "2026-03-10T08:15:00Z 2026-03-10T09:45:00Z 2026-03-10T11:15:00Z", false,
     "2026-03-10T12:45:00Z", 0, NULL},
    {"@every anchored at the epoch", "schedule: \"@every 90m\"\ncatchup: all\n",
     "2026-03-10T09:00:00Z", 0, false, false, NOW, 0, "2026-03-10T10:30:00Z 2026-03-10T12:00:00Z",
     false, "2026-03-10T13:30:00Z", 0, NULL},
    {"every minute for years, latest", "schedule: \"* * * * *\"\ncatchup: latest\n",
     "2020-01-01T00:00:00Z", 0, false, false, NOW, 0, "2026-03-10T12:34:00Z", false,
     "2026-03-10T12:35:00Z", TICKER_SKIP_COUNT_MAX, "catchup: latest"},
    /* overlap */
    {"forbid with an active run", HOURLY "catchup: latest\noverlap: forbid\n",
     "2026-03-10T09:00:00Z", 1, false, false, NOW, 0, "", false, "2026-03-10T13:00:00Z", 3,
     "catchup: latest, overlap: forbid"},
    {"forbid, all, active", HOURLY "catchup: all\noverlap: forbid\n", "2026-03-10T09:00:00Z", 2,
     false, false, NOW, 0, "", false, "2026-03-10T13:00:00Z", 3, "overlap: forbid"},
    {"forbid, all, idle: one at a time", HOURLY "catchup: all\noverlap: forbid\n",
     "2026-03-10T09:00:00Z", 0, false, false, NOW, 0, "2026-03-10T10:00:00Z", false, "now", 0,
     NULL},
    {"forbid, none, tick due now", HOURLY "catchup: none\noverlap: forbid\n",
     "2026-03-10T09:00:00Z", 1, false, false, "2026-03-10T13:00:10Z", 0, "", false,
     "2026-03-10T14:00:00Z", 4, "catchup: none, overlap: forbid"},
    {"forbid, idle, latest", HOURLY "catchup: latest\noverlap: forbid\n", "2026-03-10T11:00:00Z", 0,
     false, false, NOW, 0, "2026-03-10T12:00:00Z", false, "2026-03-10T13:00:00Z", 0, NULL},
    {"replace cancels the active run", HOURLY "catchup: latest\noverlap: replace\n",
     "2026-03-10T09:00:00Z", 1, false, false, NOW, 0, "2026-03-10T12:00:00Z", true,
     "2026-03-10T13:00:00Z", 2, "catchup: latest"},
    {"replace, all: only the newest", HOURLY "catchup: all\noverlap: replace\n",
     "2026-03-10T09:00:00Z", 1, false, false, NOW, 0, "2026-03-10T12:00:00Z", true,
     "2026-03-10T13:00:00Z", 2, "overlap: replace"},
    {"replace, idle", HOURLY "catchup: latest\noverlap: replace\n", "2026-03-10T11:00:00Z", 0,
     false, false, NOW, 0, "2026-03-10T12:00:00Z", false, "2026-03-10T13:00:00Z", 0, NULL},
    {"replace, nothing due, no cancel", HOURLY "catchup: latest\noverlap: replace\n",
     "2026-03-10T12:00:00Z", 1, false, false, NOW, 0, "", false, "2026-03-10T13:00:00Z", 0, NULL},
    {"allow ignores max_active_runs", HOURLY "catchup: all\nmax_active_runs: 1\n",
     "2026-03-10T09:00:00Z", 3, false, false, NOW, 0,
     "2026-03-10T10:00:00Z 2026-03-10T11:00:00Z 2026-03-10T12:00:00Z", false,
     "2026-03-10T13:00:00Z", 0, NULL},
    /* daylight saving time in New York (docs/schedules.md's worked example) */
    {"spring forward skips 02:30",
     "schedule: \"30 2 * * *\"\ntimezone: America/New_York\ncatchup: all\nstart_date: "
     "2026-03-07\n",
     NULL, 0, false, false, "2026-03-10T12:00:00Z", 0,
     "2026-03-07T07:30:00Z 2026-03-09T06:30:00Z 2026-03-10T06:30:00Z", false,
     "2026-03-11T06:30:00Z", 0, NULL},
    {"spring forward: nothing due on the day",
     "schedule: \"30 2 * * *\"\ntimezone: America/New_York\ncatchup: latest\n",
     "2026-03-07T07:30:00Z", 0, false, false, "2026-03-08T12:00:00Z", 0, "", false,
     "2026-03-09T06:30:00Z", 0, NULL},
    {"fall back runs 01:30 twice",
     "schedule: \"30 1 * * *\"\ntimezone: America/New_York\ncatchup: all\n", "2026-10-31T05:30:00Z",
     0, false, false, "2026-11-01T12:00:00Z", 0, "2026-11-01T05:30:00Z 2026-11-01T06:30:00Z", false,
     "2026-11-02T06:30:00Z", 0, NULL},
    {"naive start_date is in the zone",
     "schedule: \"0 * * * *\"\ntimezone: America/New_York\ncatchup: all\nstart_date: "
     "2026-03-08T01:00\n",
     NULL, 0, false, false, "2026-03-08T08:30:00Z", 0,
     "2026-03-08T06:00:00Z 2026-03-08T07:00:00Z 2026-03-08T08:00:00Z", false,
     "2026-03-08T09:00:00Z", 0, NULL},
};

static void decide(struct ticker_decision *d, const struct dsl_dag *dag, const struct sl_tz *tz,
                   const struct ticker_dag_state *st, int64_t now_ms, size_t max_create)
{
    ck_assert_int_eq(ticker_decide(d, dag, tz, st, now_ms, max_create), 0);
}

/* The created times as "t1 t2 ...". */
static void created(struct strbuf *sb, const struct ticker_decision *d)
{
    strbuf_reset(sb);
    for (size_t i = 0; i < d->n_create; i++) {
        char buf[32];
        fmt(buf, d->create_logical_ms[i]);
        if (i)
            strbuf_addch(sb, ' ');
        strbuf_addstr(sb, buf);
    }
}

START_TEST(test_table)
{
    const struct tcase_row *r = &rows[_i];
    struct dsl_dag *dag = load(r->keys);
    struct sl_tz *tz = load_tz(dag);
    struct ticker_dag_state st = {
        .last_logical_ms = r->last ? ms(r->last) : INT64_MIN,
        .active_runs = r->active,
        .paused = r->paused,
        .active = !r->inactive,
    };
    int64_t now = ms(r->now);
    struct ticker_decision d;
    decide(&d, dag, tz, &st, now, r->max_create ? r->max_create : 100);

    struct strbuf sb;
    strbuf_init(&sb, 0);
    created(&sb, &d);
    ck_assert_msg(!strcmp(sb.buf, r->create), "%s: created '%s', want '%s'", r->name, sb.buf,
                  r->create);
    ck_assert_msg(d.cancel_active == r->cancel, "%s: cancel_active", r->name);
    char wake[32];
    if (d.next_wakeup_ms == now)
        strcpy(wake, "now");
    else
        fmt(wake, d.next_wakeup_ms);
    ck_assert_msg(!strcmp(wake, r->wakeup), "%s: wakeup %s, want %s", r->name, wake, r->wakeup);
    ck_assert_msg(d.n_skipped == r->n_skipped, "%s: n_skipped %zu, want %zu", r->name, d.n_skipped,
                  r->n_skipped);
    if (r->reason)
        ck_assert_msg(d.skipped_reason && !strcmp(d.skipped_reason, r->reason),
                      "%s: reason '%s', want '%s'", r->name,
                      d.skipped_reason ? d.skipped_reason : "(null)", r->reason);
    else
        ck_assert_msg(!d.skipped_reason, "%s: unexpected reason '%s'", r->name, d.skipped_reason);

    /* restart: the same facts give the same decision */
    struct ticker_decision again;
    decide(&again, dag, tz, &st, now, r->max_create ? r->max_create : 100);
    ck_assert_uint_eq(again.n_create, d.n_create);
    for (size_t i = 0; i < d.n_create; i++)
        ck_assert_int_eq(again.create_logical_ms[i], d.create_logical_ms[i]);
    ck_assert_int_eq(again.cancel_active, d.cancel_active);
    ck_assert_int_eq(again.next_wakeup_ms, d.next_wakeup_ms);
    ck_assert_uint_eq(again.n_skipped, d.n_skipped);
    ck_assert_ptr_eq(again.skipped_reason, d.skipped_reason);

    ticker_decision_release(&again);
    ticker_decision_release(&d);
    ticker_decision_release(&d); /* twice is harmless */
    ck_assert_ptr_null(d.create_logical_ms);
    strbuf_release(&sb);
    sl_tz_free(tz);
    dsl_dag_free(dag);
}
END_TEST

START_TEST(test_errors)
{
    struct dsl_dag *dag = load(HOURLY);
    struct ticker_dag_state st = {.last_logical_ms = INT64_MIN, .active = true};
    struct ticker_decision d = {.n_create = 42};
    ck_assert_int_eq(ticker_decide(&d, dag, NULL, &st, ms(NOW), 0), SL_EINVAL);
    ck_assert_int_eq(ticker_decide(&d, dag, NULL, &st, INT64_MAX, 1), SL_EINVAL);
    ck_assert_int_eq(ticker_decide(&d, NULL, NULL, &st, ms(NOW), 1), SL_EINVAL);
    ck_assert_int_eq(ticker_decide(&d, dag, NULL, NULL, ms(NOW), 1), SL_EINVAL);
    ck_assert_uint_eq(d.n_create, 42); /* untouched on error */
    /* extreme but valid facts do not crash */
    st.last_logical_ms = INT64_MIN + 1;
    decide(&d, dag, NULL, &st, ms(NOW), 1);
    ck_assert_uint_eq(d.n_create, 0); /* catchup: none */
    ck_assert_uint_eq(d.n_skipped, TICKER_SKIP_COUNT_MAX);
    ticker_decision_release(&d);
    st.last_logical_ms = INT64_MAX;
    decide(&d, dag, NULL, &st, ms(NOW), 1);
    ck_assert_uint_eq(d.n_create, 0);
    ticker_decision_release(&d);
    ticker_decision_release(NULL);
    dsl_dag_free(dag);
}
END_TEST

/*
 * Plays the scheduler for a while: wake at next_wakeup_ms plus a delay (under the
 * grace period unless `late`), store the created runs (last_logical = newest),
 * count them. Returns the number of runs; checks they are strictly increasing.
 */
static size_t play(const char *keys, const char *from, const char *until, int64_t delay_ms,
                   size_t max_create, size_t max_calls)
{
    struct dsl_dag *dag = load(keys);
    struct sl_tz *tz = load_tz(dag);
    struct ticker_dag_state st = {.last_logical_ms = INT64_MIN, .active = true};
    int64_t now = ms(from), end = ms(until);
    size_t runs = 0, calls = 0;
    while (now <= end) {
        ck_assert_uint_lt(calls++, max_calls);
        struct ticker_decision d;
        decide(&d, dag, tz, &st, now, max_create);
        for (size_t i = 0; i < d.n_create; i++) {
            ck_assert_int_gt(d.create_logical_ms[i], st.last_logical_ms);
            ck_assert_int_le(d.create_logical_ms[i], now);
            st.last_logical_ms = d.create_logical_ms[i];
            runs++;
        }
        ck_assert_int_ge(d.next_wakeup_ms, now);
        int64_t wake = d.next_wakeup_ms;
        ticker_decision_release(&d);
        if (wake == INT64_MAX)
            break;
        now = wake == now ? now : wake + delay_ms; /* "now": more runs to create */
    }
    sl_tz_free(tz);
    dsl_dag_free(dag);
    return runs;
}

START_TEST(test_scheduler_loop)
{
    /* a fresh DAG without start_date, woken 5 s late each time: every tick of the
     * day after the first wakeup gets its run (hours 01..23 and the next 00:00) */
    ck_assert_uint_eq(play(HOURLY, "2026-03-10T00:17:00Z", "2026-03-11T00:30:00Z", 5000, 100, 100),
                      24);
    /* catchup all from start_date in batches of 7: 10 days of hourly ticks */
    ck_assert_uint_eq(play(HOURLY "catchup: all\nstart_date: 2026-03-01\nend_date: "
                                  "2026-03-10T23:00:00Z\n",
                           "2026-03-20T00:00:00Z", "2026-03-21T00:00:00Z", 1000, 7, 100),
                      240);
    /* DST week in New York: the 02:30 job runs 6 times in 7 days */
    ck_assert_uint_eq(play("schedule: \"30 2 * * *\"\ntimezone: America/New_York\n"
                           "start_date: 2026-03-05\ncatchup: all\n",
                           "2026-03-05T00:00:00Z", "2026-03-11T23:00:00Z", 30000, 100, 100),
                      6);
    /* @every 7m for 2 hours with no start_date, woken on time */
    ck_assert_uint_eq(play("schedule: \"@every 7m\"\n", "2026-03-10T00:00:01Z",
                           "2026-03-10T02:00:00Z", 0, 100, 100),
                      17);
}
END_TEST

/* After a crash between deciding and storing, deciding again gives the same runs;
 * after storing some of them, only the rest. */
START_TEST(test_restart_after_partial_store)
{
    struct dsl_dag *dag = load(HOURLY "catchup: all\nstart_date: 2026-03-10T00:00:00Z\n");
    struct ticker_dag_state st = {.last_logical_ms = INT64_MIN, .active = true};
    struct ticker_decision d1, d2;
    decide(&d1, dag, NULL, &st, ms(NOW), 100);
    ck_assert_uint_eq(d1.n_create, 13);
    st.last_logical_ms = d1.create_logical_ms[4]; /* stored 5 before crashing */
    decide(&d2, dag, NULL, &st, ms(NOW), 100);
    ck_assert_uint_eq(d2.n_create, 8);
    ck_assert_int_eq(memcmp(d2.create_logical_ms, d1.create_logical_ms + 5, 8 * sizeof(int64_t)),
                     0);
    ticker_decision_release(&d1);
    ticker_decision_release(&d2);
    dsl_dag_free(dag);
}
END_TEST

Suite *suite_scheduler_ticker(void)
{
    Suite *s = suite_create("scheduler_ticker");
    TCase *tc = tcase_create("ticker");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_table, 0, (int)(sizeof(rows) / sizeof(rows[0])));
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_scheduler_loop);
    tcase_add_test(tc, test_restart_after_partial_store);
    suite_add_tcase(s, tc);
    return s;
}
