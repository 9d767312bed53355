/*
 * store/steps.c - the run engine's writes: step-instance transitions, attempts, events,
 * and run states.
 *
 * The scheduler applies an event to the pure run engine, then persists what changed in
 * one transaction of its own (store_begin ... store_commit) before it performs the
 * actions (dispatching attempts). A tick may change a thousand instances of a big fan-out,
 * so a batch costs three statements whatever its size: the writes travel as one jsonb
 * array ($2), unpacked by jsonb_to_recordset, and each table gets one INSERT ... SELECT.
 *
 * Every statement is idempotent, because a COMMIT whose answer was lost (STORE_EUNKNOWN)
 * is settled by writing the batch again:
 *
 *   - step_instances and attempts are upserts that set every column to the given value,
 *     so a second write leaves the same rows;
 *   - events, append-only, is made idempotent by a natural key rather than by its id: a
 *     step instance reaches a state at most once per attempt, and a run reaches a state at
 *     most once, so the unique indexes of migration 2 (events_step_transition_key,
 *     events_run_transition_key) with ON CONFLICT DO NOTHING drop a repeated transition.
 *     The alternative, a client-generated event id, would need the engine to remember ids
 *     across an unknown commit; the natural key needs nothing.
 *
 * Within a batch, several writes of one instance (pending -> queued -> running in one
 * tick) are all recorded as events, and the row (and attempt) takes the last of them:
 * ON CONFLICT DO UPDATE cannot touch a row twice in one statement, so the upserts keep
 * the last write per key with DISTINCT ON, ordered by the write's index "i".
 */
#include "store/store.h"
#include "store/store_int.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The columns of one write in the jsonb array, as jsonb_to_recordset reads them. Times are
 * bigint milliseconds; JSON values travel as text and are cast, so that malformed JSON
 * is refused by PostgreSQL like any other bad value. */
#define WRITE_RECORD                                                                               \
    "jsonb_to_recordset($2::jsonb) AS x(i int, step text, map_index int, state text,\n"            \
    "    attempt int, queued bigint, started bigint, ended bigint, next_try bigint,\n"             \
    "    worker text, exit_code int, reason text, outputs text, item text,\n"                      \
    "    from_state text, to_state text, event_reason text, event_at bigint,\n"                    \
    "    attempt_id text, attempt_state text, log_path text)"

/* clang-format off */

static const struct store_stmt stmt_steps_upsert = {
    "steps_upsert",
    "INSERT INTO step_instances AS s (run_pk, step, map_index, state, attempt, queued_at,\n"
    "    started_at, ended_at, next_try_at, worker, exit_code, reason, output_params, item)\n"
    "SELECT DISTINCT ON (x.step, x.map_index) $1::bigint, x.step, x.map_index, x.state,\n"
    "    x.attempt, " STORE_SQL_TS("x.queued") ", " STORE_SQL_TS("x.started") ",\n"
    "    " STORE_SQL_TS("x.ended") ", " STORE_SQL_TS("x.next_try") ", x.worker, x.exit_code,\n"
    "    x.reason, x.outputs::jsonb, x.item::jsonb\n"
    "FROM " WRITE_RECORD "\n"
    "ORDER BY x.step, x.map_index, x.i DESC\n"
    "ON CONFLICT (run_pk, step, map_index) DO UPDATE SET\n"
    "    state = excluded.state, attempt = excluded.attempt, queued_at = excluded.queued_at,\n"
    "    started_at = excluded.started_at, ended_at = excluded.ended_at,\n"
    "    next_try_at = excluded.next_try_at, worker = excluded.worker,\n"
    "    exit_code = excluded.exit_code, reason = excluded.reason,\n"
    "    output_params = excluded.output_params, item = excluded.item"};

static const struct store_stmt stmt_attempts_upsert = {
    "attempts_upsert",
    "INSERT INTO attempts AS a (attempt_id, run_pk, step, map_index, attempt, state, worker,\n"
    "    queued_at, started_at, ended_at, exit_code, reason, output_params, log_path)\n"
    "SELECT DISTINCT ON (x.attempt_id) x.attempt_id, $1::bigint, x.step, x.map_index,\n"
    "    x.attempt, x.attempt_state, x.worker, coalesce(" STORE_SQL_TS("x.queued") ", now()),\n"
    "    " STORE_SQL_TS("x.started") ", " STORE_SQL_TS("x.ended") ", x.exit_code, x.reason,\n"
    "    x.outputs::jsonb, x.log_path\n"
    "FROM " WRITE_RECORD "\n"
    "WHERE x.attempt_state IS NOT NULL\n"
    "ORDER BY x.attempt_id, x.i DESC\n"
    "ON CONFLICT (attempt_id) DO UPDATE SET\n"
    "    state = excluded.state, worker = excluded.worker,\n"
    "    queued_at = least(a.queued_at, excluded.queued_at),\n"
    "    started_at = excluded.started_at, ended_at = excluded.ended_at,\n"
    "    exit_code = excluded.exit_code, reason = excluded.reason,\n"
    "    output_params = excluded.output_params,\n"
    "    log_path = coalesce(excluded.log_path, a.log_path)"};

static const struct store_stmt stmt_events_insert = {
    "events_insert",
    "INSERT INTO events (run_pk, step, map_index, attempt, from_state, to_state, reason, at)\n"
    "SELECT $1::bigint, x.step, x.map_index, x.attempt, x.from_state, x.to_state,\n"
    "    x.event_reason, coalesce(" STORE_SQL_TS("x.event_at") ", now())\n"
    "FROM " WRITE_RECORD "\n"
    "WHERE x.to_state IS NOT NULL\n"
    "ORDER BY x.i\n"
    "ON CONFLICT (run_pk, step, map_index, attempt, to_state) WHERE step IS NOT NULL\n"
    "DO NOTHING"};

/* The run's state, its times and its event in one statement. The old state comes from a
 * locking subquery of the UPDATE itself: a separate SELECT ... FOR UPDATE in its own CTE
 * would find the row already updated by this command and skip it. */
static const struct store_stmt stmt_run_set_state = {
    "run_set_state",
    "WITH u AS (\n"
    "    UPDATE runs r SET state = $2::text,\n"
    "        started_at = CASE WHEN $2::text = 'running'\n"
    "                          THEN coalesce(r.started_at, " STORE_SQL_TS("$3") ", now())\n"
    "                          ELSE r.started_at END,\n"
    "        ended_at = CASE WHEN $2::text IN ('succeeded', 'failed', 'cancelled')\n"
    "                        THEN coalesce(r.ended_at, " STORE_SQL_TS("$3") ", now())\n"
    "                   END\n"
    "    FROM (SELECT id, state FROM runs WHERE id = $1::bigint FOR UPDATE) o\n"
    "    WHERE r.id = o.id RETURNING o.state AS old_state),\n"
    "e AS (INSERT INTO events (run_pk, from_state, to_state, at)\n"
    "      SELECT $1::bigint, u.old_state, $2::text, coalesce(" STORE_SQL_TS("$3") ", now())\n"
    "      FROM u WHERE u.old_state <> $2::text\n"
    "      ON CONFLICT (run_pk, to_state) WHERE step IS NULL DO NOTHING)\n"
    "SELECT count(*) FROM u"};

/* clang-format on */

/*
 * The state of the attempts row a write implies, or NULL for none (store.h). An attempt
 * that ended as up_for_retry is a failed attempt; one whose instance then leaves
 * up_for_retry for anything but a new queued attempt keeps its row as it was.
 */
static const char *attempt_state_of(const struct store_step_write *w)
{
    if (w->attempt <= 0)
        return NULL;
    if (w->from_state == STORE_STEP_UP_FOR_RETRY && w->from_state != w->to_state &&
        w->state != STORE_STEP_QUEUED)
        return NULL;
    switch (w->state) {
    case STORE_STEP_QUEUED:
        return "queued";
    case STORE_STEP_RUNNING:
        return "running";
    case STORE_STEP_SUCCEEDED:
        return "succeeded";
    case STORE_STEP_FAILED:
    case STORE_STEP_UP_FOR_RETRY:
        return "failed";
    case STORE_STEP_CANCELLED:
        return "cancelled";
    case STORE_STEP_PENDING:
    case STORE_STEP_SKIPPED:
    case STORE_STEP_UPSTREAM_FAILED:
        break;
    }
    return NULL;
}

static bool valid_step_state(enum store_step_state s)
{
    return (unsigned)s < STORE_STEP_STATE_COUNT;
}

static void add_time(cJSON *o, const char *key, int64_t ms)
{
    if (ms == STORE_NO_TIME)
        cJSON_AddNullToObject(o, key);
    else
        cJSON_AddNumberToObject(o, key, (double)ms); /* exact: |ms| < 2^53 */
}

static void add_str(cJSON *o, const char *key, const char *s)
{
    if (s)
        cJSON_AddStringToObject(o, key, s);
    else
        cJSON_AddNullToObject(o, key);
}

/* Checks w[0..n) and encodes it as the jsonb array the statements read. Returns 0 and
 * sets *out (free()) or returns a code with st's message set. */
static int encode_batch(struct store *st, char **out, const struct store_step_write *w, size_t n)
{
    /* times must survive a trip through a double */
    const int64_t max_ms = INT64_C(1) << 53;
    cJSON *arr = cJSON_CreateArray();
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const struct store_step_write *x = &w[i];
        const int64_t times[] = {x->queued_at_ms, x->started_at_ms, x->ended_at_ms,
                                 x->next_try_at_ms, x->event_at_ms};
        bool bad_time = false;
        for (size_t t = 0; t < sizeof(times) / sizeof(times[0]); t++)
            bad_time |= times[t] != STORE_NO_TIME && (times[t] > max_ms || times[t] < -max_ms);
        if (!x->step || !*x->step || x->map_index < -1 || x->attempt < 0 ||
            !valid_step_state(x->state) || !valid_step_state(x->from_state) ||
            !valid_step_state(x->to_state) || bad_time) {
            rc = store_fail(st, SL_EINVAL, "write %zu (step '%s'): malformed", i,
                            x->step ? x->step : "");
            goto cleanup;
        }
        if (x->attempt > 0 && (!x->attempt_id || !*x->attempt_id)) {
            rc = store_fail(st, SL_EINVAL, "step '%s' map_index %d attempt %d: no attempt_id",
                            x->step, x->map_index, x->attempt);
            goto cleanup;
        }
        if (x->output_params_json &&
            strlen(x->output_params_json) > STORE_OUTPUT_PARAMS_MAX_BYTES) {
            rc = store_fail(st, SL_ETOOBIG, "step '%s' map_index %d: output params over %d bytes",
                            x->step, x->map_index, STORE_OUTPUT_PARAMS_MAX_BYTES);
            goto cleanup;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        cJSON_AddNumberToObject(o, "i", (double)i);
        cJSON_AddStringToObject(o, "step", x->step);
        cJSON_AddNumberToObject(o, "map_index", x->map_index);
        cJSON_AddStringToObject(o, "state", store_step_state_name(x->state));
        cJSON_AddNumberToObject(o, "attempt", x->attempt);
        add_time(o, "queued", x->queued_at_ms);
        add_time(o, "started", x->started_at_ms);
        add_time(o, "ended", x->ended_at_ms);
        add_time(o, "next_try", x->next_try_at_ms);
        add_str(o, "worker", x->worker);
        if (x->exit_code == STORE_NO_EXIT_CODE)
            cJSON_AddNullToObject(o, "exit_code");
        else
            cJSON_AddNumberToObject(o, "exit_code", x->exit_code);
        add_str(o, "reason", x->reason);
        add_str(o, "outputs", x->output_params_json);
        add_str(o, "item", x->item_json);
        bool event = x->from_state != x->to_state;
        add_str(o, "from_state", event ? store_step_state_name(x->from_state) : NULL);
        add_str(o, "to_state", event ? store_step_state_name(x->to_state) : NULL);
        add_str(o, "event_reason", x->event_reason);
        add_time(o, "event_at", x->event_at_ms);
        const char *astate = attempt_state_of(x);
        add_str(o, "attempt_id", astate ? x->attempt_id : NULL);
        add_str(o, "attempt_state", astate);
        add_str(o, "log_path", x->log_path);
    }
    *out = cJSON_PrintUnformatted(arr);
    if (!*out)
        rc = store_fail(st, SL_EINTERNAL, "step writes: out of memory encoding the batch");
cleanup:
    cJSON_Delete(arr);
    return rc;
}

struct write_ctx {
    const char *run_pk;
    const char *batch;
};

/* Three idempotent statements: the operation may be repeated whole (store_tx_op). */
static int write_op(struct store *st, void *arg)
{
    const struct write_ctx *c = arg;
    const char *params[] = {c->run_pk, c->batch};
    const struct store_stmt *stmts[] = {&stmt_steps_upsert, &stmt_attempts_upsert,
                                        &stmt_events_insert};
    for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
        PGresult *res = NULL;
        int rc = store_exec(st, &res, stmts[i], 2, params);
        PQclear(res);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int store_steps_write(struct store *st, int64_t run_pk, const struct store_step_write *w, size_t n)
{
    if (n == 0)
        return store_fail(st, 0, NULL);
    char *batch = NULL;
    int rc = w ? encode_batch(st, &batch, w, n) : store_fail(st, SL_EINVAL, "no step writes");
    if (rc == 0) {
        char pk[32];
        snprintf(pk, sizeof(pk), "%" PRId64, run_pk);
        struct write_ctx c = {pk, batch};
        rc = store_tx_op(st, write_op, &c);
    }
    free(batch);
    if (rc < 0 && rc != SL_ECONN) {
        struct strbuf msg = STRBUF_INIT;
        strbuf_addstr(&msg, store_errmsg(st));
        store_fail(st, rc, "run %" PRId64 ": writing %zu step instance%s: %s", run_pk, n,
                   n == 1 ? "" : "s", msg.buf);
        strbuf_release(&msg);
    }
    return rc;
}

int store_run_set_state(struct store *st, int64_t run_pk, enum store_run_state state, int64_t at_ms)
{
    if ((unsigned)state > STORE_RUN_CANCELLED)
        return store_fail(st, SL_EINVAL, "run %" PRId64 ": bad run state %d", run_pk, (int)state);
    char pk[32], at[32];
    snprintf(pk, sizeof(pk), "%" PRId64, run_pk);
    snprintf(at, sizeof(at), "%" PRId64, at_ms);
    const char *params[] = {pk, store_run_state_name(state), at_ms == STORE_NO_TIME ? NULL : at};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_run_set_state, 3, params);
    if (rc < 0)
        return rc;
    int64_t updated = store_col_i64(res, 0, 0);
    PQclear(res);
    if (updated == 0)
        return store_fail(st, SL_ENOENT, "no run with id %" PRId64, run_pk);
    return 0;
}
