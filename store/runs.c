/*
 * store/runs.c - runs and the reads of step instances (their writes are in steps.c).
 *
 * store_run_create() is the only writer here, and it must be race-free across processes
 * (two API replicas receiving the same retried POST, two schedulers during a fail-over).
 * It never reads before writing: INSERT ... ON CONFLICT DO NOTHING lets exactly one
 * request create the row, and only when the insert did nothing does a second statement
 * SELECT the row that was in the way (a separate statement, hence a fresh snapshot under
 * READ COMMITTED: it sees a row committed by a concurrent request after our insert waited
 * for it). Whether that row is a repeat of this request or a conflict is then decided here,
 * by the rules in store.h.
 *
 * Every read here is one statement served by an index (store/README.md, "Indexes"); the
 * store's integration tests check the plans with EXPLAIN on 100,000 runs.
 */
#include "store/store.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "store/store_int.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --- names ---------------------------------------------------------------------------- */

static const char *const run_state_names[] = {"queued", "running",    "succeeded",
                                              "failed", "cancelling", "cancelled"};
static const char *const trigger_names[] = {"scheduled", "manual", "backfill", "retry"};
static const char *const step_state_names[] = {"pending",   "queued",  "running",
                                               "succeeded", "failed",  "up_for_retry",
                                               "cancelled", "skipped", "upstream_failed"};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static int parse_name(int *out, const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; name && i < n; i++) {
        if (!strcmp(names[i], name)) {
            *out = (int)i;
            return 0;
        }
    }
    return SL_EINVAL;
}

const char *store_run_state_name(enum store_run_state s)
{
    return (size_t)s < N_OF(run_state_names) ? run_state_names[s] : "?";
}

const char *store_trigger_name(enum store_trigger t)
{
    return (size_t)t < N_OF(trigger_names) ? trigger_names[t] : "?";
}

const char *store_step_state_name(enum store_step_state s)
{
    return (size_t)s < N_OF(step_state_names) ? step_state_names[s] : "?";
}

int store_run_state_parse(enum store_run_state *out, const char *name)
{
    int v;
    int rc = parse_name(&v, run_state_names, N_OF(run_state_names), name);
    if (rc == 0)
        *out = (enum store_run_state)v;
    return rc;
}

int store_trigger_parse(enum store_trigger *out, const char *name)
{
    int v;
    int rc = parse_name(&v, trigger_names, N_OF(trigger_names), name);
    if (rc == 0)
        *out = (enum store_trigger)v;
    return rc;
}

int store_step_state_parse(enum store_step_state *out, const char *name)
{
    int v;
    int rc = parse_name(&v, step_state_names, N_OF(step_state_names), name);
    if (rc == 0)
        *out = (enum store_step_state)v;
    return rc;
}

/* --- statements ------------------------------------------------------------------------- */

/* Laid out by hand, as SQL reads best: clang-format cannot split string concatenations
 * with macro calls in them readably. */
/* clang-format off */

#define RUN_COLS                                                                \
    "id, dag_id, run_id, version_id, state, trigger, "                         \
    STORE_SQL_MS("logical_time") ", "                                          \
    "params::text, idempotency_key, conf::text, "                              \
    STORE_SQL_MS("created_at") ", "                                            \
    STORE_SQL_MS("started_at") ", "                                            \
    STORE_SQL_MS("ended_at") ", commit_sha"
#define N_RUN_COLS 14

#define ACTIVE_STATES "('queued', 'running', 'cancelling')"

static const struct store_stmt stmt_run_insert = {
    "run_insert",
    "INSERT INTO runs (dag_id, run_id, version_id, trigger, logical_time, params,\n"
    "                  idempotency_key, conf, commit_sha)\n"
    "SELECT d.dag_id, $2, v.id, $3, coalesce(" STORE_SQL_TS("$4") ", now()),\n"
    "       $5::jsonb, $6, $7::jsonb, coalesce($9, d.commit_sha)\n"
    "FROM dags d JOIN dag_versions v\n"
    "  ON v.dag_id = d.dag_id AND v.id = coalesce($8::bigint, d.current_version_id)\n"
    "WHERE d.dag_id = $1\n"
    "ON CONFLICT DO NOTHING\n"
    "RETURNING " RUN_COLS};

/* The rows that can have been in the way of run_insert: one per unique key. */
static const struct store_stmt stmt_run_conflicts = {
    "run_conflicts",
    "SELECT " RUN_COLS ", params = $5::jsonb FROM runs\n"
    "WHERE dag_id = $1 AND (run_id = $2 OR idempotency_key = $3\n"
    "      OR ($4::text = 'scheduled' AND trigger = 'scheduled'\n"
    "          AND logical_time = " STORE_SQL_TS("$6") "))\n"
    "ORDER BY id"};

static const struct store_stmt stmt_run_diagnose = {
    "run_diagnose",
    "SELECT d.current_version_id,\n"
    "       EXISTS (SELECT 1 FROM dag_versions v\n"
    "               WHERE v.dag_id = d.dag_id AND v.id = $2::bigint)\n"
    "FROM dags d WHERE d.dag_id = $1"};

const struct store_stmt store_stmt_run_get = {
    "run_get",
    "SELECT " RUN_COLS " FROM runs WHERE dag_id = $1 AND run_id = $2"};

static const struct store_stmt stmt_run_get_by_pk = {
    "run_get_by_pk",
    "SELECT " RUN_COLS " FROM runs WHERE id = $1::bigint"};

const struct store_stmt store_stmt_runs_active = {
    "runs_active",
    "SELECT " RUN_COLS " FROM runs\n"
    "WHERE dag_id = $1 AND state IN " ACTIVE_STATES " ORDER BY id"};

const struct store_stmt store_stmt_runs_active_all = {
    "runs_active_all",
    "SELECT " RUN_COLS " FROM runs WHERE state IN " ACTIVE_STATES " ORDER BY id"};

static const struct store_stmt stmt_run_request_cancel = {
    "run_request_cancel",
    "UPDATE runs SET state = 'cancelling' WHERE dag_id = $1 AND run_id = $2\n"
    "    AND state IN ('queued', 'running')\n"
    "RETURNING id"};

static const struct store_stmt stmt_commits_in_use = {
    "commits_in_use",
    "SELECT commit_sha FROM dags WHERE commit_sha IS NOT NULL\n"
    "UNION SELECT commit_sha FROM runs\n"
    "    WHERE state IN " ACTIVE_STATES " AND commit_sha IS NOT NULL"};

static const struct store_stmt stmt_leader_try = {"leader_try",
                                                  "SELECT pg_try_advisory_lock($1::bigint)"};

const struct store_stmt store_stmt_runs_active_count = {
    "runs_active_count",
    "SELECT count(*) FROM runs WHERE dag_id = $1 AND state IN " ACTIVE_STATES};

const struct store_stmt store_stmt_runs_active_counts = {
    "runs_active_counts",
    "SELECT dag_id, count(*) FROM runs WHERE state IN " ACTIVE_STATES "\n"
    "GROUP BY dag_id ORDER BY dag_id"};

const struct store_stmt store_stmt_dag_last_scheduled = {
    "dag_last_scheduled",
    "SELECT " STORE_SQL_MS("max(logical_time)") " FROM runs\n"
    "WHERE dag_id = $1 AND trigger = 'scheduled'"};

#define STEP_COLS                                                               \
    "run_pk, step, map_index, state, attempt, "                                \
    STORE_SQL_MS("queued_at") ", "                                             \
    STORE_SQL_MS("started_at") ", "                                            \
    STORE_SQL_MS("ended_at") ", "                                              \
    STORE_SQL_MS("next_try_at") ", "                                           \
    "worker, exit_code, reason, output_params::text, item::text"

const struct store_stmt store_stmt_steps_of_run = {
    "steps_of_run",
    "SELECT " STEP_COLS " FROM step_instances\n"
    "WHERE run_pk = $1::bigint AND ($2::text[] IS NULL OR state = ANY ($2::text[]))\n"
    "ORDER BY step, map_index"};

const struct store_stmt store_stmt_steps_queued_before = {
    "steps_queued_before",
    "SELECT " STEP_COLS " FROM step_instances\n"
    "WHERE state = 'queued' AND queued_at < " STORE_SQL_TS("$1") "\n"
    "ORDER BY queued_at LIMIT $2::bigint"};

/* clang-format on */

/* --- reading rows ------------------------------------------------------------------------ */

static void read_run(struct store_run *run, const PGresult *res, int r, struct arena *mem)
{
    int v = 0;
    run->id = store_col_i64(res, r, 0);
    run->dag_id = store_col_str(res, r, 1, mem);
    run->run_id = store_col_str(res, r, 2, mem);
    run->version_id = store_col_i64(res, r, 3);
    /* the CHECK constraints admit no other names */
    run->state = parse_name(&v, run_state_names, N_OF(run_state_names), PQgetvalue(res, r, 4))
                     ? STORE_RUN_QUEUED
                     : (enum store_run_state)v;
    run->trigger = parse_name(&v, trigger_names, N_OF(trigger_names), PQgetvalue(res, r, 5))
                       ? STORE_TRIGGER_MANUAL
                       : (enum store_trigger)v;
    run->logical_time_ms = store_col_time(res, r, 6);
    run->params_json = store_col_str(res, r, 7, mem);
    run->idempotency_key = store_col_str(res, r, 8, mem);
    run->conf_json = store_col_str(res, r, 9, mem);
    run->created_at_ms = store_col_time(res, r, 10);
    run->started_at_ms = store_col_time(res, r, 11);
    run->ended_at_ms = store_col_time(res, r, 12);
    run->commit_sha = store_col_str(res, r, 13, mem);
}

static int read_runs(struct store_run **out, size_t *out_n, PGresult *res, struct arena *mem)
{
    size_t n = (size_t)PQntuples(res);
    struct store_run *v = n ? arena_calloc(mem, n, sizeof(*v)) : NULL;
    for (size_t i = 0; i < n; i++)
        read_run(&v[i], res, (int)i, mem);
    PQclear(res);
    *out = v;
    *out_n = n;
    return 0;
}

/* --- run_create ---------------------------------------------------------------------------- */

static bool valid_run_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 250)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("_.~:+-", c)))
            return false;
    }
    return true;
}

/* "2026-01-02T03:04:05Z", or "...05.123Z" when ms has a fraction of a second. */
static void format_time_ms(char buf[48], int64_t ms)
{
    char secs[32];
    int64_t s = sl_floor_div(ms, 1000), frac = ms - s * 1000;
    sl_time_format_utc(secs, s);
    if (frac == 0) {
        snprintf(buf, 48, "%s", secs);
        return;
    }
    secs[strlen(secs) - 1] = '\0'; /* drop the Z */
    snprintf(buf, 48, "%s.%03dZ", secs, (int)frac);
}

/* Checks that json is at most STORE_PARAMS_MAX_BYTES of valid JSON, an object if
 * must_be_object. */
static int check_json(struct store *st, const char *json, const char *what, bool must_be_object)
{
    if (strlen(json) > STORE_PARAMS_MAX_BYTES)
        return store_fail(st, SL_ETOOBIG, "%s are larger than %zu bytes", what,
                          STORE_PARAMS_MAX_BYTES);
    cJSON *doc = cJSON_ParseWithOpts(json, NULL, 1);
    if (!doc)
        return store_fail(st, SL_EINVAL, "%s are not valid JSON", what);
    bool object = cJSON_IsObject(doc);
    cJSON_Delete(doc);
    if (must_be_object && !object)
        return store_fail(st, SL_EINVAL, "%s must be a JSON object", what);
    return 0;
}

/* Does the existing run r repeat the request (store.h, store_run_create)? */
static bool repeats(const struct store_run_new *in, const char *run_id, bool run_id_given,
                    const struct store_run *r, bool same_params)
{
    if (in->trigger == STORE_TRIGGER_SCHEDULED)
        return r->trigger == STORE_TRIGGER_SCHEDULED && r->logical_time_ms == in->logical_time_ms &&
               (!run_id_given || !strcmp(r->run_id, run_id));
    if (r->trigger != in->trigger || !same_params)
        return false;
    if ((run_id_given || !in->idempotency_key) && strcmp(r->run_id, run_id) != 0)
        return false;
    if (in->idempotency_key &&
        (!r->idempotency_key || strcmp(r->idempotency_key, in->idempotency_key) != 0))
        return false;
    return in->logical_time_ms == STORE_NO_TIME || r->logical_time_ms == in->logical_time_ms;
}

/* Nothing was inserted and nothing was in the way: say what is missing. */
static int diagnose(struct store *st, const struct store_run_new *in, const char *version)
{
    PGresult *res = NULL;
    const char *params[] = {in->dag_id, version ? version : "0"};
    int rc = store_exec(st, &res, &stmt_run_diagnose, 2, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0)
        rc = store_fail(st, SL_ENOENT, "no dag '%s'", in->dag_id);
    else if (version && !store_col_bool(res, 0, 1))
        rc = store_fail(st, SL_ENOENT, "dag '%s' has no version %s", in->dag_id, version);
    else if (!version && PQgetisnull(res, 0, 0))
        rc = store_fail(st, SL_ENOENT, "dag '%s' has no version yet", in->dag_id);
    else
        rc = 1; /* all there: the row in the way vanished; try again */
    PQclear(res);
    return rc;
}

int store_run_create(struct store *st, struct store_run *out, bool *out_existed,
                     const struct store_run_new *in, struct arena *mem)
{
    if (!in->dag_id)
        return store_fail(st, SL_EINVAL, "a run needs a dag_id");
    if ((size_t)in->trigger >= N_OF(trigger_names))
        return store_fail(st, SL_EINVAL, "dag '%s': unknown trigger %d", in->dag_id,
                          (int)in->trigger);
    bool scheduled = in->trigger == STORE_TRIGGER_SCHEDULED;
    if (scheduled && in->logical_time_ms == STORE_NO_TIME)
        return store_fail(st, SL_EINVAL, "dag '%s': a scheduled run needs a logical time",
                          in->dag_id);
    bool run_id_given = in->run_id != NULL;
    if (run_id_given && !valid_run_id(in->run_id))
        return store_fail(st, SL_EINVAL,
                          "dag '%s': invalid run_id \"%.250s\": use 1 to 250 of A-Z a-z 0-9 _ . ~ "
                          ": + -",
                          in->dag_id, in->run_id);
    if (run_id_given && !scheduled && !strncmp(in->run_id, "scheduled__", 11))
        return store_fail(st, SL_EINVAL,
                          "dag '%s': run_id \"%s\": only scheduled runs may start with "
                          "\"scheduled__\"",
                          in->dag_id, in->run_id);
    if (in->idempotency_key &&
        (strlen(in->idempotency_key) < 1 || strlen(in->idempotency_key) > 250))
        return store_fail(st, SL_EINVAL, "dag '%s': an idempotency key has 1 to 250 bytes",
                          in->dag_id);
    const char *params_json = in->params_json ? in->params_json : "{}";
    int rc = check_json(st, params_json, "run params", true);
    if (rc == 0 && in->conf_json)
        rc = check_json(st, in->conf_json, "run conf", false);
    if (rc < 0)
        return rc;

    /* Generated ids are chosen before the first statement, so a repeat after a lost
     * connection finds the run by its id. */
    char gen[128], when[48], logical[32], version[32];
    const char *run_id = in->run_id;
    bool random_id = false;
    if (!run_id_given) {
        if (scheduled || in->trigger == STORE_TRIGGER_BACKFILL) {
            format_time_ms(when, in->logical_time_ms == STORE_NO_TIME ? sl_wall_ms()
                                                                      : in->logical_time_ms);
            snprintf(gen, sizeof(gen), "%s__%s", trigger_names[in->trigger], when);
        } else {
            format_time_ms(when, sl_wall_ms());
            snprintf(gen, sizeof(gen), "%s__%s_%08x", trigger_names[in->trigger], when,
                     store_random(st));
            random_id = true;
        }
        run_id = gen;
    }
    if (in->logical_time_ms != STORE_NO_TIME)
        snprintf(logical, sizeof(logical), "%" PRId64, in->logical_time_ms);
    if (in->version_id)
        snprintf(version, sizeof(version), "%" PRId64, in->version_id);
    const char *logical_p = in->logical_time_ms != STORE_NO_TIME ? logical : NULL;
    const char *version_p = in->version_id ? version : NULL;

    for (int tries = 0; tries < 2; tries++) {
        PGresult *res = NULL;
        const char *ins[] = {in->dag_id,    run_id,      trigger_names[in->trigger],
                             logical_p,     params_json, in->idempotency_key,
                             in->conf_json, version_p,   in->commit_sha};
        rc = store_exec(st, &res, &stmt_run_insert, 9, ins);
        if (rc < 0)
            return rc;
        if (PQntuples(res) == 1) {
            read_run(out, res, 0, mem);
            PQclear(res);
            *out_existed = false;
            return 0;
        }
        PQclear(res);

        const char *sel[] = {in->dag_id,  run_id,   in->idempotency_key, trigger_names[in->trigger],
                             params_json, logical_p};
        rc = store_exec(st, &res, &stmt_run_conflicts, 6, sel);
        if (rc < 0)
            return rc;
        int n = PQntuples(res);
        if (n == 0) {
            PQclear(res);
            rc = diagnose(st, in, version_p);
            if (rc < 0)
                return rc;
            continue;
        }
        struct store_run r;
        read_run(&r, res, 0, mem);
        bool same_params = store_col_bool(res, 0, N_RUN_COLS);
        if (n == 1 && repeats(in, run_id, run_id_given, &r, same_params)) {
            PQclear(res);
            *out = r;
            *out_existed = !(random_id && !strcmp(r.run_id, run_id));
            return 0;
        }
        struct strbuf others = STRBUF_INIT;
        for (int i = 0; i < n; i++)
            strbuf_addf(&others, "%s'%s'", i ? ", " : "", PQgetvalue(res, i, 2));
        PQclear(res);
        rc = store_fail(st, SL_EEXIST,
                        "dag '%s': run %s conflicts with existing run%s %s (same run_id, "
                        "idempotency key or logical time, but a different trigger, params or "
                        "logical time)",
                        in->dag_id, run_id, n > 1 ? "s" : "", others.buf);
        strbuf_release(&others);
        return rc;
    }
    return store_fail(st, SL_EINTERNAL, "dag '%s': run %s was neither created nor found",
                      in->dag_id, run_id);
}

/* --- run reads -------------------------------------------------------------------------- */

static int get_one_run(struct store *st, struct store_run *out, const struct store_stmt *stmt,
                       int nparams, const char *const *params, struct arena *mem)
{
    PGresult *res = NULL;
    int rc = store_exec(st, &res, stmt, nparams, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return SL_ENOENT;
    }
    read_run(out, res, 0, mem);
    PQclear(res);
    return 0;
}

int store_run_get(struct store *st, struct store_run *out, const char *dag_id, const char *run_id,
                  struct arena *mem)
{
    const char *params[] = {dag_id, run_id};
    int rc = get_one_run(st, out, &store_stmt_run_get, 2, params, mem);
    if (rc == SL_ENOENT)
        store_fail(st, rc, "dag '%s' has no run '%s'", dag_id, run_id);
    return rc;
}

int store_run_get_by_pk(struct store *st, struct store_run *out, int64_t id, struct arena *mem)
{
    char pk[32];
    snprintf(pk, sizeof(pk), "%" PRId64, id);
    const char *params[] = {pk};
    int rc = get_one_run(st, out, &stmt_run_get_by_pk, 1, params, mem);
    if (rc == SL_ENOENT)
        store_fail(st, rc, "no run with id %" PRId64, id);
    return rc;
}

int store_runs_active(struct store *st, struct store_run **out, size_t *out_n, const char *dag_id,
                      struct arena *mem)
{
    PGresult *res = NULL;
    const char *params[] = {dag_id};
    int rc = store_exec(st, &res, &store_stmt_runs_active, 1, params);
    if (rc < 0)
        return rc;
    return read_runs(out, out_n, res, mem);
}

int store_runs_active_all(struct store *st, struct store_run **out, size_t *out_n,
                          struct arena *mem)
{
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &store_stmt_runs_active_all, 0, NULL);
    if (rc < 0)
        return rc;
    return read_runs(out, out_n, res, mem);
}

int store_run_request_cancel(struct store *st, bool *out_changed, const char *dag_id,
                             const char *run_id)
{
    PGresult *res = NULL;
    const char *params[] = {dag_id, run_id};
    int rc = store_exec(st, &res, &stmt_run_request_cancel, 2, params);
    if (rc < 0)
        return rc;
    bool changed = PQntuples(res) > 0;
    PQclear(res);
    if (!changed) {
        struct arena mem = ARENA_INIT;
        struct store_run r;
        rc = store_run_get(st, &r, dag_id, run_id, &mem);
        arena_release(&mem);
        if (rc < 0)
            return rc;
    }
    if (out_changed)
        *out_changed = changed;
    return 0;
}

int store_leader_try(struct store *st, bool *out_leader)
{
    if (st->tx != STORE_TX_NONE)
        return store_fail(st, SL_EINVAL, "cannot take the leader lock inside a transaction");
    char key[32];
    snprintf(key, sizeof(key), "%" PRId64, STORE_LOCK_LEADER);
    const char *params[] = {key};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_leader_try, 1, params);
    if (rc < 0)
        return rc;
    bool got = store_col_bool(res, 0, 0);
    PQclear(res);
    if (got)
        store_session_bind(st);
    *out_leader = got;
    return 0;
}

int store_runs_active_count(struct store *st, int64_t *out, const char *dag_id)
{
    PGresult *res = NULL;
    const char *params[] = {dag_id};
    int rc = store_exec(st, &res, &store_stmt_runs_active_count, 1, params);
    if (rc < 0)
        return rc;
    *out = store_col_i64(res, 0, 0);
    PQclear(res);
    return 0;
}

int store_runs_active_counts(struct store *st, struct store_dag_count **out, size_t *out_n,
                             struct arena *mem)
{
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &store_stmt_runs_active_counts, 0, NULL);
    if (rc < 0)
        return rc;
    size_t n = (size_t)PQntuples(res);
    struct store_dag_count *v = n ? arena_calloc(mem, n, sizeof(*v)) : NULL;
    for (size_t i = 0; i < n; i++) {
        v[i].dag_id = store_col_str(res, (int)i, 0, mem);
        v[i].n = store_col_i64(res, (int)i, 1);
    }
    PQclear(res);
    *out = v;
    *out_n = n;
    return 0;
}

int store_dag_last_scheduled(struct store *st, int64_t *out_ms, const char *dag_id)
{
    PGresult *res = NULL;
    const char *params[] = {dag_id};
    int rc = store_exec(st, &res, &store_stmt_dag_last_scheduled, 1, params);
    if (rc < 0)
        return rc;
    *out_ms = store_col_time(res, 0, 0);
    PQclear(res);
    return 0;
}

/* --- step instances ----------------------------------------------------------------------- */

static int read_steps(struct store_step_instance **out, size_t *out_n, PGresult *res,
                      struct arena *mem)
{
    size_t n = (size_t)PQntuples(res);
    struct store_step_instance *v = n ? arena_calloc(mem, n, sizeof(*v)) : NULL;
    for (size_t i = 0; i < n; i++) {
        int r = (int)i, s = 0;
        v[i].run_pk = store_col_i64(res, r, 0);
        v[i].step = store_col_str(res, r, 1, mem);
        v[i].map_index = (int)store_col_i64(res, r, 2);
        v[i].state = parse_name(&s, step_state_names, N_OF(step_state_names), PQgetvalue(res, r, 3))
                         ? STORE_STEP_PENDING
                         : (enum store_step_state)s;
        v[i].attempt = (int)store_col_i64(res, r, 4);
        v[i].queued_at_ms = store_col_time(res, r, 5);
        v[i].started_at_ms = store_col_time(res, r, 6);
        v[i].ended_at_ms = store_col_time(res, r, 7);
        v[i].next_try_at_ms = store_col_time(res, r, 8);
        v[i].worker = store_col_str(res, r, 9, mem);
        v[i].exit_code =
            PQgetisnull(res, r, 10) ? STORE_NO_EXIT_CODE : (int)store_col_i64(res, r, 10);
        v[i].reason = store_col_str(res, r, 11, mem);
        v[i].output_params_json = store_col_str(res, r, 12, mem);
        v[i].item_json = store_col_str(res, r, 13, mem);
    }
    PQclear(res);
    *out = v;
    *out_n = n;
    return 0;
}

int store_steps_of_run(struct store *st, struct store_step_instance **out, size_t *out_n,
                       int64_t run_pk, unsigned states, struct arena *mem)
{
    char pk[32];
    snprintf(pk, sizeof(pk), "%" PRId64, run_pk);
    /* a text[] literal of our own state names, e.g. {queued,running}: never user text */
    struct strbuf set = STRBUF_INIT;
    for (size_t s = 0; s < N_OF(step_state_names); s++) {
        if (states & STORE_STEP_MASK(s))
            strbuf_addf(&set, "%s%s", set.len ? "," : "{", step_state_names[s]);
    }
    if (set.len)
        strbuf_addch(&set, '}');
    const char *params[] = {pk, set.len ? set.buf : NULL};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &store_stmt_steps_of_run, 2, params);
    strbuf_release(&set);
    if (rc < 0)
        return rc;
    return read_steps(out, out_n, res, mem);
}

int store_steps_queued_before(struct store *st, struct store_step_instance **out, size_t *out_n,
                              int64_t before_ms, size_t limit, struct arena *mem)
{
    char before[32], lim[32];
    snprintf(before, sizeof(before), "%" PRId64, before_ms);
    snprintf(lim, sizeof(lim), "%zu", limit);
    const char *params[] = {before, lim};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &store_stmt_steps_queued_before, 2, params);
    if (rc < 0)
        return rc;
    return read_steps(out, out_n, res, mem);
}

int store_commits_in_use(struct store *st, const char ***out, size_t *out_n, struct arena *mem)
{
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_commits_in_use, 0, NULL);
    if (rc < 0)
        return rc;
    size_t n = (size_t)PQntuples(res);
    const char **v = arena_calloc(mem, n + 1, sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = store_col_str(res, (int)i, 0, mem);
    PQclear(res);
    *out = v;
    *out_n = n;
    return 0;
}
