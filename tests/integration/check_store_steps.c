/*
 * tests/integration/check_store_steps.c - the run engine's writes (store/steps.c) against
 * a real PostgreSQL: step-instance upserts, attempts, idempotent events, run states, and
 * the time a 1,000-instance batch takes.
 *
 * As in check_store.c, one server is started for the suite in an unchecked fixture and
 * every test works in a database of its own. Rows are checked both through the store's
 * reads and, for attempts and events (which the store does not read yet), through a plain
 * libpq "admin" connection that dumps them as text.
 */
#include "store/store.h"
#include "common/arena.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "store/store_int.h"
#include "tests/harness/harness.h"
#include "tests/harness/pgtest.h"
#include "tests/testutil.h"

#include <check.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --- helpers ---------------------------------------------------------- */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void assert_query(PGconn *c, const char *sql, const char *want)
{
    char *got = pgtest_admin_value(c, sql);
    ck_assert_msg(!strcmp(got, want), "%s:\n got: %s\nwant: %s", sql, got, want);
    free(got);
}

/* A migrated store on a fresh database with one DAG and one run; *out_admin gets an admin
 * connection to that database and *out_run_pk the run. */
static struct store *with_run(const char *name, PGconn **out_admin, int64_t *out_run_pk)
{
    char *url = pgtest_fresh_db(name);
    struct store_options o = STORE_OPTIONS_INIT;
    o.reconnect_wait_ms = 5000;
    struct store *st = NULL;
    struct strbuf err = STRBUF_INIT;
    ck_assert_msg(store_open(&st, url, &o, &err) == 0, "store_open: %s", err.buf);
    strbuf_release(&err);
    int version = 0;
    CK_STORE_OK(st, store_migrate(st, &version, NULL));
    ck_assert_int_eq(version, store_schema_latest());

    struct store_dag_put put = {"etl", "dags/etl.yaml", "{\"name\": \"etl\"}", "name: etl\n", NULL};
    int64_t version_id = 0;
    bool changed = false;
    CK_STORE_OK(st, store_dag_put_version(st, &version_id, &changed, &put));
    struct store_run_new in = {.dag_id = "etl",
                               .trigger = STORE_TRIGGER_MANUAL,
                               .logical_time_ms = STORE_NO_TIME,
                               .run_id = "r1"};
    struct store_run run;
    bool existed = true;
    struct arena mem = ARENA_INIT;
    CK_STORE_OK(st, store_run_create(st, &run, &existed, &in, &mem));
    ck_assert(!existed);
    *out_run_pk = run.id;
    arena_release(&mem);
    *out_admin = pgtest_admin_connect(url);
    free(url);
    return st;
}

#define T0 INT64_C(1763800000000) /* 2025-11-22T08:26:40Z */

/* A write of step/map_index now in state, nothing else set, no event. */
static struct store_step_write wr(const char *step, int map_index, enum store_step_state state,
                                  int attempt)
{
    struct store_step_write w;
    memset(&w, 0, sizeof(w));
    w.step = step;
    w.map_index = map_index;
    w.state = state;
    w.attempt = attempt;
    w.queued_at_ms = w.started_at_ms = w.ended_at_ms = w.next_try_at_ms = STORE_NO_TIME;
    w.event_at_ms = STORE_NO_TIME;
    w.exit_code = STORE_NO_EXIT_CODE;
    w.from_state = w.to_state = state;
    return w;
}

/* Records the transition from -> w->state at at_ms. */
static void transition(struct store_step_write *w, enum store_step_state from, int64_t at_ms)
{
    w->from_state = from;
    w->to_state = w->state;
    w->event_at_ms = at_ms;
}

static void write_tx(struct store *st, int64_t run_pk, const struct store_step_write *w, size_t n)
{
    CK_STORE_OK(st, store_begin(st));
    CK_STORE_OK(st, store_steps_write(st, run_pk, w, n));
    CK_STORE_OK(st, store_commit(st));
}

/* Everything the writes touch, as text, ids left out: equal dumps mean equal rows. */
static char *dump(PGconn *c)
{
    return pgtest_admin_value(
        c, "SELECT (SELECT coalesce(string_agg(s::text, E'\\n' ORDER BY step, map_index), '')"
           "        FROM step_instances s) || E'\\n--\\n' ||"
           "       (SELECT coalesce(string_agg(a::text, E'\\n' ORDER BY attempt_id), '')"
           "        FROM attempts a) || E'\\n--\\n' ||"
           "       (SELECT coalesce(string_agg(concat_ws(' ', run_pk, step, map_index, attempt,"
           "                 from_state, to_state, reason, at), E'\\n' ORDER BY id), '')"
           "        FROM events)");
}

/* A batch of the shapes the engine writes: a running attempt, a fan-out with items (one
 * succeeded with outputs, one failed), and a pending instance with no event. */
static size_t sample_batch(struct store_step_write *w)
{
    size_t n = 0;
    w[n] = wr("extract", -1, STORE_STEP_RUNNING, 1);
    w[n].queued_at_ms = T0;
    w[n].started_at_ms = T0 + 1500;
    w[n].worker = "worker-1";
    w[n].attempt_id = "r1.extract.-1.1";
    w[n].log_path = "logs/r1/extract/1.log";
    transition(&w[n++], STORE_STEP_QUEUED, T0 + 1500);

    w[n] = wr("load", 0, STORE_STEP_SUCCEEDED, 1);
    w[n].queued_at_ms = T0;
    w[n].started_at_ms = T0 + 10;
    w[n].ended_at_ms = T0 + 2000;
    w[n].worker = "worker-2";
    w[n].exit_code = 0;
    w[n].output_params_json = "{\"rows\": \"42\", \"file\": \"a.csv\"}";
    w[n].item_json = "{\"table\": \"users\", \"n\": 1}";
    w[n].attempt_id = "r1.load.0.1";
    transition(&w[n++], STORE_STEP_RUNNING, T0 + 2000);

    w[n] = wr("load", 1, STORE_STEP_FAILED, 1);
    w[n].queued_at_ms = T0;
    w[n].started_at_ms = T0 + 20;
    w[n].ended_at_ms = T0 + 3000;
    w[n].worker = "worker-3";
    w[n].exit_code = 3;
    w[n].reason = "exit code 3";
    w[n].event_reason = "exit code 3";
    w[n].item_json = "[\"orders\", 2]";
    w[n].attempt_id = "r1.load.1.1";
    transition(&w[n++], STORE_STEP_RUNNING, T0 + 3000);

    w[n++] = wr("report", -1, STORE_STEP_PENDING, 0);
    return n;
}

/* --- tests ----------------------------------------------------------------------------------- */

START_TEST(test_write_and_read_back)
{
    PGconn *c = NULL;
    int64_t run_pk = 0;
    struct store *st = with_run("sts_read_back", &c, &run_pk);
    struct store_step_write w[8];
    size_t n = sample_batch(w);
    write_tx(st, run_pk, w, n);

    struct arena mem = ARENA_INIT;
    struct store_step_instance *v = NULL;
    size_t nv = 0;
    CK_STORE_OK(st, store_steps_of_run(st, &v, &nv, run_pk, 0, &mem));
    ck_assert_uint_eq(nv, 4);
    /* by step, map_index: extract, load 0, load 1, report */
    ck_assert_str_eq(v[0].step, "extract");
    ck_assert_int_eq(v[0].map_index, -1);
    ck_assert_int_eq(v[0].state, STORE_STEP_RUNNING);
    ck_assert_int_eq(v[0].attempt, 1);
    ck_assert(v[0].queued_at_ms == T0);
    ck_assert(v[0].started_at_ms == T0 + 1500);
    ck_assert(v[0].ended_at_ms == STORE_NO_TIME);
    ck_assert(v[0].next_try_at_ms == STORE_NO_TIME);
    ck_assert_str_eq(v[0].worker, "worker-1");
    ck_assert_int_eq(v[0].exit_code, STORE_NO_EXIT_CODE);
    ck_assert_ptr_null(v[0].reason);
    ck_assert_ptr_null(v[0].output_params_json);
    ck_assert_ptr_null(v[0].item_json);

    ck_assert_str_eq(v[1].step, "load");
    ck_assert_int_eq(v[1].map_index, 0);
    ck_assert_int_eq(v[1].state, STORE_STEP_SUCCEEDED);
    ck_assert(v[1].ended_at_ms == T0 + 2000);
    ck_assert_int_eq(v[1].exit_code, 0);
    ck_assert_str_eq(v[1].output_params_json, "{\"file\": \"a.csv\", \"rows\": \"42\"}");
    ck_assert_str_eq(v[1].item_json, "{\"n\": 1, \"table\": \"users\"}");

    ck_assert_int_eq(v[2].map_index, 1);
    ck_assert_int_eq(v[2].state, STORE_STEP_FAILED);
    ck_assert_int_eq(v[2].exit_code, 3);
    ck_assert_str_eq(v[2].reason, "exit code 3");
    ck_assert_str_eq(v[2].item_json, "[\"orders\", 2]");

    ck_assert_str_eq(v[3].step, "report");
    ck_assert_int_eq(v[3].state, STORE_STEP_PENDING);
    ck_assert_int_eq(v[3].attempt, 0);

    /* A state filter sees the same rows. */
    CK_STORE_OK(st, store_steps_of_run(st, &v, &nv, run_pk,
                                       STORE_STEP_MASK(STORE_STEP_SUCCEEDED) |
                                           STORE_STEP_MASK(STORE_STEP_FAILED),
                                       &mem));
    ck_assert_uint_eq(nv, 2);

    /* One attempt per instance that has one, carrying its state, times and outputs. */
    assert_query(c,
                 "SELECT string_agg(concat_ws(' ', attempt_id, step, map_index, attempt, state,"
                 "  worker, extract(epoch FROM queued_at)::bigint, exit_code, reason,"
                 "  output_params, log_path), E'\\n' ORDER BY attempt_id) FROM attempts",
                 "r1.extract.-1.1 extract -1 1 running worker-1 1763800000 logs/r1/extract/1.log\n"
                 "r1.load.0.1 load 0 1 succeeded worker-2 1763800000 0 "
                 "{\"file\": \"a.csv\", \"rows\": \"42\"}\n"
                 "r1.load.1.1 load 1 1 failed worker-3 1763800000 3 exit code 3");
    /* One event per transition, none for the pending instance. */
    assert_query(c,
                 "SELECT string_agg(concat_ws(' ', step, map_index, attempt, from_state, "
                 "  to_state, reason, to_char(at AT TIME ZONE 'UTC', 'HH24:MI:SS.MS')),"
                 "  E'\\n' ORDER BY id) FROM events",
                 "extract -1 1 queued running 08:26:41.500\n"
                 "load 0 1 running succeeded 08:26:42.000\n"
                 "load 1 1 running failed exit code 3 08:26:43.000");
    arena_release(&mem);
    PQfinish(c);
    store_close(st);
}
END_TEST

/* A batch written twice (the reaction to an unknown COMMIT) changes nothing the second
 * time: same rows, no duplicate events; also outside a transaction and within one. */
START_TEST(test_write_twice_is_idempotent)
{
    PGconn *c = NULL;
    int64_t run_pk = 0;
    struct store *st = with_run("sts_twice", &c, &run_pk);
    struct store_step_write w[8];
    size_t n = sample_batch(w);
    write_tx(st, run_pk, w, n);
    char *before = dump(c);
    write_tx(st, run_pk, w, n);
    char *after = dump(c);
    ck_assert_str_eq(after, before);
    free(after);
    /* without a transaction of the caller's: store_tx_op runs it in one of its own */
    CK_STORE_OK(st, store_steps_write(st, run_pk, w, n));
    /* and twice inside one transaction */
    CK_STORE_OK(st, store_begin(st));
    CK_STORE_OK(st, store_steps_write(st, run_pk, w, n));
    CK_STORE_OK(st, store_steps_write(st, run_pk, w, n));
    CK_STORE_OK(st, store_commit(st));
    after = dump(c);
    ck_assert_str_eq(after, before);
    assert_query(c, "SELECT count(*) FROM events", "3");
    free(after);
    free(before);
    /* An empty batch is nothing to do. */
    CK_STORE_OK(st, store_steps_write(st, run_pk, NULL, 0));
    PQfinish(c);
    store_close(st);
}
END_TEST

/* pending -> queued -> running -> up_for_retry -> queued (attempt 2) -> succeeded, one
 * transaction per transition: 2 attempts, 5 events. */
START_TEST(test_retry_sequence)
{
    PGconn *c = NULL;
    int64_t run_pk = 0;
    struct store *st = with_run("sts_retry", &c, &run_pk);
    write_tx(st, run_pk, (struct store_step_write[]){wr("train", -1, STORE_STEP_PENDING, 0)}, 1);

    struct store_step_write w = wr("train", -1, STORE_STEP_QUEUED, 1);
    w.queued_at_ms = T0;
    w.attempt_id = "r1.train.-1.1";
    transition(&w, STORE_STEP_PENDING, T0);
    write_tx(st, run_pk, &w, 1);

    w.state = STORE_STEP_RUNNING;
    w.started_at_ms = T0 + 1000;
    w.worker = "w1";
    w.log_path = "logs/1";
    transition(&w, STORE_STEP_QUEUED, T0 + 1000);
    write_tx(st, run_pk, &w, 1);

    w.state = STORE_STEP_UP_FOR_RETRY;
    w.ended_at_ms = T0 + 2000;
    w.next_try_at_ms = T0 + 62000;
    w.exit_code = 137;
    w.reason = w.event_reason = "lost";
    w.log_path = NULL; /* the attempt keeps the path it had */
    transition(&w, STORE_STEP_RUNNING, T0 + 2000);
    write_tx(st, run_pk, &w, 1);
    assert_query(c, "SELECT count(*) FROM step_instances WHERE state = 'up_for_retry'", "1");

    w = wr("train", -1, STORE_STEP_QUEUED, 2);
    w.queued_at_ms = T0 + 62000;
    w.attempt_id = "r1.train.-1.2";
    transition(&w, STORE_STEP_UP_FOR_RETRY, T0 + 62000);
    write_tx(st, run_pk, &w, 1);

    w.state = STORE_STEP_SUCCEEDED;
    w.started_at_ms = T0 + 63000;
    w.ended_at_ms = T0 + 64000;
    w.worker = "w2";
    w.exit_code = 0;
    w.output_params_json = "{\"model\": \"m.pkl\"}";
    transition(&w, STORE_STEP_QUEUED, T0 + 64000);
    write_tx(st, run_pk, &w, 1);

    assert_query(c,
                 "SELECT string_agg(concat_ws(' ', attempt, state, worker, exit_code, reason,"
                 "  extract(epoch FROM ended_at - queued_at)::int, output_params, log_path),"
                 "  E'\\n' ORDER BY attempt) FROM attempts",
                 "1 failed w1 137 lost 2 logs/1\n"
                 "2 succeeded w2 0 2 {\"model\": \"m.pkl\"}");
    assert_query(c,
                 "SELECT string_agg(concat_ws(' ', attempt, from_state, to_state, reason),"
                 "  E'\\n' ORDER BY id) FROM events",
                 "1 pending queued\n1 queued running\n1 running up_for_retry lost\n"
                 "2 up_for_retry queued\n2 queued succeeded");
    assert_query(c,
                 "SELECT concat_ws(' ', state, attempt, worker, exit_code, next_try_at IS NULL,"
                 "  output_params) FROM step_instances",
                 "succeeded 2 w2 0 t {\"model\": \"m.pkl\"}");

    /* Several transitions of one instance in one batch: every event, the last row. */
    struct store_step_write b[2] = {wr("score", 3, STORE_STEP_QUEUED, 1),
                                    wr("score", 3, STORE_STEP_RUNNING, 1)};
    b[0].queued_at_ms = b[1].queued_at_ms = T0;
    b[1].started_at_ms = T0 + 5;
    b[0].attempt_id = b[1].attempt_id = "r1.score.3.1";
    transition(&b[0], STORE_STEP_PENDING, T0);
    transition(&b[1], STORE_STEP_QUEUED, T0 + 5);
    write_tx(st, run_pk, b, 2);
    write_tx(st, run_pk, b, 2);
    assert_query(c, "SELECT state || attempt FROM step_instances WHERE step = 'score'", "running1");
    assert_query(c, "SELECT string_agg(state, ',') FROM attempts WHERE step = 'score'", "running");
    assert_query(c, "SELECT count(*) FROM events WHERE step = 'score'", "2");

    /* A run cancelled while its step waits for a retry: the failed attempt stays failed. */
    struct store_step_write r = wr("fit", -1, STORE_STEP_UP_FOR_RETRY, 1);
    r.queued_at_ms = T0;
    r.ended_at_ms = T0 + 1;
    r.next_try_at_ms = T0 + 100;
    r.attempt_id = "r1.fit.-1.1";
    transition(&r, STORE_STEP_RUNNING, T0 + 1);
    write_tx(st, run_pk, &r, 1);
    r.state = STORE_STEP_CANCELLED;
    r.next_try_at_ms = STORE_NO_TIME;
    transition(&r, STORE_STEP_UP_FOR_RETRY, T0 + 50);
    write_tx(st, run_pk, &r, 1);
    assert_query(c, "SELECT state FROM attempts WHERE step = 'fit'", "failed");
    assert_query(c, "SELECT state FROM step_instances WHERE step = 'fit'", "cancelled");
    PQfinish(c);
    store_close(st);
}
END_TEST

/* A write the schema refuses fails and leaves nothing behind: the caller's transaction is
 * aborted and rolls back cleanly, the store works again afterwards. */
START_TEST(test_constraints_roll_back)
{
    PGconn *c = NULL;
    int64_t run_pk = 0;
    struct store *st = with_run("sts_constraints", &c, &run_pk);
    struct store_step_write good = wr("a", -1, STORE_STEP_PENDING, 0);

    struct store_step_write bad[6];
    bad[0] = wr("b", -1, STORE_STEP_QUEUED, 1); /* queued without queued_at */
    bad[0].attempt_id = "r1.b.-1.1";
    bad[1] = wr("b", -1, STORE_STEP_UP_FOR_RETRY, 1); /* without next_try_at */
    bad[1].attempt_id = "r1.b.-1.1";
    bad[2] = wr("b", -1, STORE_STEP_SUCCEEDED, 0); /* outputs not an object */
    bad[2].output_params_json = "[1, 2]";
    bad[3] = wr("b", -1, STORE_STEP_PENDING, 0); /* not JSON */
    bad[3].item_json = "{oops";
    bad[4] = wr("b", -2, STORE_STEP_PENDING, 0); /* map_index < -1 */
    bad[5] = wr("b", -1, STORE_STEP_RUNNING, 1); /* no attempt_id */
    for (size_t i = 0; i < 6; i++) {
        CK_STORE_OK(st, store_begin(st));
        CK_STORE_OK(st, store_steps_write(st, run_pk, &good, 1));
        ck_assert_int_eq(store_steps_write(st, run_pk, &bad[i], 1), SL_EINVAL);
        ck_assert_ptr_nonnull(strstr(store_errmsg(st), "run "));
        if (i >= 4) {
            /* refused before any statement: the transaction goes on */
            CK_STORE_OK(st, store_rollback(st));
        } else {
            /* the server aborted it: statements are refused, commit rolls back */
            ck_assert_int_eq(store_steps_write(st, run_pk, &good, 1), SL_EINVAL);
            ck_assert_int_eq(store_commit(st), SL_EINVAL);
        }
        assert_query(c, "SELECT count(*) FROM step_instances", "0");
        assert_query(c, "SELECT count(*) FROM events", "0");
    }
    ck_assert_int_eq(store_rollback(st), SL_EINVAL); /* nothing is open */

    /* An unknown run. */
    ck_assert_int_eq(store_steps_write(st, run_pk + 1000, &good, 1), SL_ENOENT);
    /* Another attempt_id with the same attempt number. */
    struct store_step_write q = wr("b", -1, STORE_STEP_QUEUED, 1);
    q.queued_at_ms = T0;
    q.attempt_id = "one";
    CK_STORE_OK(st, store_steps_write(st, run_pk, &q, 1));
    q.attempt_id = "two";
    ck_assert_int_eq(store_steps_write(st, run_pk, &q, 1), SL_EEXIST);

    /* Outputs over the limit. */
    char *big = xmalloc(STORE_OUTPUT_PARAMS_MAX_BYTES + 32);
    memset(big, 'x', STORE_OUTPUT_PARAMS_MAX_BYTES + 20);
    memcpy(big, "{\"k\": \"", 7);
    strcpy(big + STORE_OUTPUT_PARAMS_MAX_BYTES + 20, "\"}");
    struct store_step_write o = wr("c", -1, STORE_STEP_SUCCEEDED, 0);
    o.output_params_json = big;
    ck_assert_int_eq(store_steps_write(st, run_pk, &o, 1), SL_ETOOBIG);
    free(big);

    /* And the store works as before. */
    write_tx(st, run_pk, &good, 1);
    assert_query(c, "SELECT string_agg(step, ',' ORDER BY step) FROM step_instances", "a,b");
    PQfinish(c);
    store_close(st);
}
END_TEST

START_TEST(test_run_set_state)
{
    PGconn *c = NULL;
    int64_t run_pk = 0;
    struct store *st = with_run("sts_run_state", &c, &run_pk);
    struct arena mem = ARENA_INIT;
    struct store_run r;

    /* queued -> running, in the caller's transaction with the first step writes */
    CK_STORE_OK(st, store_begin(st));
    CK_STORE_OK(st, store_run_set_state(st, run_pk, STORE_RUN_RUNNING, T0));
    struct store_step_write w = wr("a", -1, STORE_STEP_QUEUED, 1);
    w.queued_at_ms = T0;
    w.attempt_id = "r1.a.-1.1";
    transition(&w, STORE_STEP_PENDING, T0);
    CK_STORE_OK(st, store_steps_write(st, run_pk, &w, 1));
    CK_STORE_OK(st, store_commit(st));
    CK_STORE_OK(st, store_run_get_by_pk(st, &r, run_pk, &mem));
    ck_assert_int_eq(r.state, STORE_RUN_RUNNING);
    ck_assert(r.started_at_ms == T0);
    ck_assert(r.ended_at_ms == STORE_NO_TIME);

    /* again (an unknown commit settled): nothing changes, no second event */
    CK_STORE_OK(st, store_run_set_state(st, run_pk, STORE_RUN_RUNNING, T0 + 500));
    CK_STORE_OK(st, store_run_get_by_pk(st, &r, run_pk, &mem));
    ck_assert(r.started_at_ms == T0);

    /* running -> cancelling -> cancelled: ended_at with the final state, started_at kept */
    CK_STORE_OK(st, store_run_set_state(st, run_pk, STORE_RUN_CANCELLING, T0 + 1000));
    CK_STORE_OK(st, store_run_get_by_pk(st, &r, run_pk, &mem));
    ck_assert_int_eq(r.state, STORE_RUN_CANCELLING);
    ck_assert(r.ended_at_ms == STORE_NO_TIME);
    CK_STORE_OK(st, store_run_set_state(st, run_pk, STORE_RUN_CANCELLED, T0 + 2000));
    CK_STORE_OK(st, store_run_set_state(st, run_pk, STORE_RUN_CANCELLED, T0 + 3000));
    CK_STORE_OK(st, store_run_get_by_pk(st, &r, run_pk, &mem));
    ck_assert_int_eq(r.state, STORE_RUN_CANCELLED);
    ck_assert(r.started_at_ms == T0);
    ck_assert(r.ended_at_ms == T0 + 2000);
    assert_query(c,
                 "SELECT string_agg(concat_ws(' ', coalesce(step, '-'), from_state, to_state,"
                 "  extract(epoch FROM at)::bigint - 1763800000), E'\\n' ORDER BY id) FROM events",
                 "- queued running 0\na pending queued 0\n- running cancelling 1\n"
                 "- cancelling cancelled 2");

    /* A second run that goes straight to succeeded; now() when no time is given. */
    struct store_run_new in = {.dag_id = "etl",
                               .trigger = STORE_TRIGGER_MANUAL,
                               .logical_time_ms = STORE_NO_TIME,
                               .run_id = "r2"};
    struct store_run r2;
    bool existed = true;
    CK_STORE_OK(st, store_run_create(st, &r2, &existed, &in, &mem));
    CK_STORE_OK(st, store_run_set_state(st, r2.id, STORE_RUN_SUCCEEDED, STORE_NO_TIME));
    CK_STORE_OK(st, store_run_get_by_pk(st, &r2, r2.id, &mem));
    ck_assert_int_eq(r2.state, STORE_RUN_SUCCEEDED);
    ck_assert(r2.started_at_ms == STORE_NO_TIME);
    ck_assert(r2.ended_at_ms >= r2.created_at_ms);

    ck_assert_int_eq(store_run_set_state(st, run_pk + 1000, STORE_RUN_RUNNING, T0), SL_ENOENT);
    ck_assert_int_eq(store_run_set_state(st, run_pk, (enum store_run_state)42, T0), SL_EINVAL);
    arena_release(&mem);
    PQfinish(c);
    store_close(st);
}
END_TEST

/* 1,000 fan-out instances queued in one batch, then all running: three statements each. */
START_TEST(test_batch_1000)
{
    enum { N = 1000 };
    PGconn *c = NULL;
    int64_t run_pk = 0;
    struct store *st = with_run("sts_batch", &c, &run_pk);
    struct store_step_write *w = xcalloc(N, sizeof(*w));
    char(*ids)[64] = xcalloc(N, sizeof(*ids));
    char(*items)[64] = xcalloc(N, sizeof(*items));
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "r1.shard.%d.1", i);
        snprintf(items[i], sizeof(items[i]), "{\"shard\": %d, \"path\": \"s3://b/%04d\"}", i, i);
        w[i] = wr("shard", i, STORE_STEP_QUEUED, 1);
        w[i].queued_at_ms = T0 + i;
        w[i].item_json = items[i];
        w[i].attempt_id = ids[i];
        transition(&w[i], STORE_STEP_PENDING, T0 + i);
    }
    double t = mono_s();
    write_tx(st, run_pk, w, N);
    double queued_s = mono_s() - t;
    for (int i = 0; i < N; i++) {
        w[i].state = STORE_STEP_RUNNING;
        w[i].started_at_ms = T0 + 5000 + i;
        w[i].worker = "worker-7";
        transition(&w[i], STORE_STEP_QUEUED, T0 + 5000 + i);
    }
    t = mono_s();
    write_tx(st, run_pk, w, N);
    double running_s = mono_s() - t;
    t = mono_s();
    write_tx(st, run_pk, w, N); /* the same batch again */
    double again_s = mono_s() - t;
    fprintf(stderr,
            "store_steps_write: %d instances in one transaction: new %.1f ms, update %.1f ms, "
            "repeated %.1f ms\n",
            N, queued_s * 1e3, running_s * 1e3, again_s * 1e3);

    assert_query(c, "SELECT count(*) FROM step_instances WHERE state = 'running'", "1000");
    assert_query(c, "SELECT count(*) FROM attempts WHERE state = 'running'", "1000");
    assert_query(c, "SELECT count(*) FROM events", "2000");
    struct arena mem = ARENA_INIT;
    struct store_step_instance *v = NULL;
    size_t nv = 0;
    CK_STORE_OK(st, store_steps_of_run(st, &v, &nv, run_pk, 0, &mem));
    ck_assert_uint_eq(nv, N);
    ck_assert_int_eq(v[999].map_index, 999);
    ck_assert(v[999].queued_at_ms == T0 + 999);
    ck_assert_str_eq(v[999].item_json, "{\"path\": \"s3://b/0999\", \"shard\": 999}");
    arena_release(&mem);
    /* generous: a batch must not cost a round trip per instance */
    ck_assert_msg(queued_s < 5 && running_s < 5, "batches too slow");
    free(w);
    free(ids);
    free(items);
    PQfinish(c);
    store_close(st);
}
END_TEST

Suite *suite_integration_store_steps(void)
{
    Suite *s = suite_create("integration_store_steps");
    TCase *tc = tcase_create("store_steps");
    tcase_add_unchecked_fixture(tc, pgtest_setup, pgtest_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_write_and_read_back);
    tcase_add_test(tc, test_write_twice_is_idempotent);
    tcase_add_test(tc, test_retry_sequence);
    tcase_add_test(tc, test_constraints_roll_back);
    tcase_add_test(tc, test_run_set_state);
    tcase_add_test(tc, test_batch_1000);
    suite_add_tcase(s, tc);
    return s;
}
