/*
 * store/api.c - the REST API's statements: tokens, DAG and run listings with filters and
 * paging, attempts, and the counts behind /metrics.
 *
 * Listings return one page and the number of all matches in one round trip: the matches
 * are a CTE, and the page is LEFT JOINed LATERAL to their count, so even a page past the
 * end returns one row (with NULL columns) that carries the total.
 *
 * Every statement is idempotent, as store_int.h requires: token creation is INSERT ... ON
 * CONFLICT DO NOTHING followed by a SELECT by hash, so a repeat after a lost connection
 * finds the token it made.
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

/* clang-format off */

#define TOKEN_COLS                                                               \
    "id, name, role, " STORE_SQL_MS("created_at") ", "                          \
    STORE_SQL_MS("revoked_at") ", " STORE_SQL_MS("last_used_at")

static const struct store_stmt stmt_token_insert = {
    "api_token_insert",
    "INSERT INTO api_tokens (name, role, token_hash) VALUES ($1, $2, $3::bytea)\n"
    "ON CONFLICT DO NOTHING"};

static const struct store_stmt stmt_token_by_hash = {
    "api_token_by_hash",
    "SELECT " TOKEN_COLS " FROM api_tokens WHERE token_hash = $1::bytea"};

static const struct store_stmt stmt_token_find = {
    "api_token_find",
    "WITH touch AS (\n"
    "    UPDATE api_tokens SET last_used_at = now()\n"
    "    WHERE token_hash = $1::bytea AND revoked_at IS NULL\n"
    "      AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute'))\n"
    "SELECT " TOKEN_COLS " FROM api_tokens\n"
    "WHERE token_hash = $1::bytea AND revoked_at IS NULL"};

static const struct store_stmt stmt_tokens_list = {
    "api_tokens_list",
    "SELECT " TOKEN_COLS " FROM api_tokens ORDER BY id"};

static const struct store_stmt stmt_token_revoke = {
    "api_token_revoke",
    "WITH r AS (UPDATE api_tokens SET revoked_at = now()\n"
    "           WHERE id = $1::bigint AND revoked_at IS NULL RETURNING id)\n"
    "SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM api_tokens WHERE id = $1::bigint)"};

static const struct store_stmt stmt_tokens_count = {
    "api_tokens_count", "SELECT count(*) FROM api_tokens"};

#define ACTIVE "('queued', 'running', 'cancelling')"

static const struct store_stmt stmt_dags_query = {
    "api_dags_query",
    "WITH m AS (\n"
    "    SELECT d.dag_id, d.is_paused, d.is_active, d.current_version_id, d.file_path,\n"
    "           d.created_at, d.updated_at, d.last_parsed_at,\n"
    "           v.content_hash, v.commit_sha, v.model->>'schedule' AS schedule,\n"
    "           v.model->>'description' AS description,\n"
    "           coalesce(v.model->'tags', '[]'::jsonb)::text AS tags,\n"
    "           (v.model->'params')::text AS params\n"
    "    FROM dags d LEFT JOIN dag_versions v ON v.id = d.current_version_id\n"
    "    WHERE ($1::text IS NULL OR d.dag_id = $1)\n"
    "      AND ($2::text IS NULL OR coalesce(v.model->'tags', '[]'::jsonb) ? $2)\n"
    "      AND ($3::boolean IS NULL OR d.is_paused = $3::boolean)\n"
    "      AND ($4::text IS NULL OR strpos(lower(d.dag_id || ' ' ||\n"
    "                                   coalesce(v.model->>'description', '')), lower($4)) > 0)\n"
    "      AND ($5::boolean OR d.is_active))\n"
    "SELECT c.total, p.dag_id, p.is_paused, p.is_active, p.current_version_id, p.file_path,\n"
    "       " STORE_SQL_MS("p.created_at") ", " STORE_SQL_MS("p.updated_at") ",\n"
    "       " STORE_SQL_MS("p.last_parsed_at") ",\n"
    "       (SELECT " STORE_SQL_MS("max(r.logical_time)") " FROM runs r\n"
    "        WHERE r.dag_id = p.dag_id AND r.trigger = 'scheduled'),\n"
    "       p.content_hash, p.commit_sha, p.schedule, p.description, p.tags, p.params,\n"
    "       lr.run_id, lr.state, " STORE_SQL_MS("lr.logical_time") ",\n"
    "       (SELECT count(*) FROM runs a WHERE a.dag_id = p.dag_id AND a.state IN " ACTIVE ")\n"
    "FROM (SELECT count(*) AS total FROM m) c\n"
    "LEFT JOIN LATERAL (SELECT * FROM m ORDER BY dag_id LIMIT $6::bigint OFFSET $7::bigint) p\n"
    "    ON true\n"
    "LEFT JOIN LATERAL (SELECT run_id, state, logical_time FROM runs r\n"
    "                   WHERE r.dag_id = p.dag_id ORDER BY r.id DESC LIMIT 1) lr ON true\n"
    "ORDER BY p.dag_id"};

static const struct store_stmt stmt_versions_list = {
    "api_versions_list",
    "WITH m AS (SELECT id, dag_id, content_hash, commit_sha, file_path, created_at\n"
    "           FROM dag_versions WHERE dag_id = $1)\n"
    "SELECT c.total, p.id, p.dag_id, p.content_hash, p.commit_sha, p.file_path,\n"
    "       " STORE_SQL_MS("p.created_at") "\n"
    "FROM (SELECT count(*) AS total FROM m) c\n"
    "LEFT JOIN LATERAL (SELECT * FROM m ORDER BY id DESC LIMIT $2::bigint OFFSET $3::bigint) p\n"
    "    ON true\n"
    "ORDER BY p.id DESC"};

#define RUN_COLS_P                                                              \
    "p.id, p.dag_id, p.run_id, p.version_id, p.state, p.trigger, "             \
    STORE_SQL_MS("p.logical_time") ", "                                        \
    "p.params::text, p.idempotency_key, p.conf::text, "                        \
    STORE_SQL_MS("p.created_at") ", "                                          \
    STORE_SQL_MS("p.started_at") ", "                                          \
    STORE_SQL_MS("p.ended_at")

#define RUNS_QUERY(name, order)                                                 \
    {name,                                                                      \
     "WITH m AS (\n"                                                            \
     "    SELECT * FROM runs r\n"                                               \
     "    WHERE ($1::text IS NULL OR r.dag_id = $1)\n"                          \
     "      AND ($2::text[] IS NULL OR r.state = ANY ($2::text[]))\n"           \
     "      AND ($3::bigint IS NULL OR r.logical_time >= " STORE_SQL_TS("$3") ")\n" \
     "      AND ($4::bigint IS NULL OR r.logical_time <= " STORE_SQL_TS("$4") ")\n" \
     "      AND ($5::bigint IS NULL OR r.started_at >= " STORE_SQL_TS("$5") ")\n"   \
     "      AND ($6::bigint IS NULL OR r.started_at <= " STORE_SQL_TS("$6") ")\n"   \
     "      AND ($7::bigint IS NULL OR r.ended_at >= " STORE_SQL_TS("$7") ")\n"     \
     "      AND ($8::bigint IS NULL OR r.ended_at <= " STORE_SQL_TS("$8") "))\n"    \
     "SELECT c.total, " RUN_COLS_P "\n"                                         \
     "FROM (SELECT count(*) AS total FROM m) c\n"                               \
     "LEFT JOIN LATERAL (SELECT * FROM m ORDER BY " order "\n"                  \
     "                   LIMIT $9::bigint OFFSET $10::bigint) p ON true\n"      \
     "ORDER BY " order}

static const struct store_stmt stmt_runs_query[] = {
    RUNS_QUERY("api_runs_id_desc", "id DESC"),
    RUNS_QUERY("api_runs_id", "id"),
    RUNS_QUERY("api_runs_logical_desc", "logical_time DESC, id DESC"),
    RUNS_QUERY("api_runs_logical", "logical_time, id"),
    RUNS_QUERY("api_runs_start_desc", "started_at DESC NULLS LAST, id DESC"),
    RUNS_QUERY("api_runs_start", "started_at NULLS LAST, id"),
};

static const struct store_stmt stmt_attempts_of_run = {
    "api_attempts_of_run",
    "SELECT attempt_id, step, map_index, attempt, state, worker,\n"
    "       " STORE_SQL_MS("queued_at") ", " STORE_SQL_MS("started_at") ", "
    STORE_SQL_MS("ended_at") ",\n"
    "       exit_code, reason, output_params::text, log_path\n"
    "FROM attempts WHERE run_pk = $1::bigint AND ($2::text IS NULL OR step = $2)\n"
    "ORDER BY step, map_index, attempt"};

static const struct store_stmt stmt_run_state_counts = {
    "api_run_state_counts",
    "SELECT dag_id, state, count(*) FROM runs GROUP BY dag_id, state ORDER BY dag_id, state"};

static const struct store_stmt stmt_step_state_counts = {
    "api_step_state_counts",
    "SELECT '', state, count(*) FROM step_instances GROUP BY state ORDER BY state"};

static const struct store_stmt stmt_dispatch_latency = {
    "api_dispatch_latency",
    "SELECT width_bucket(d, $1::float8[]) AS k, count(*), sum(d)\n"
    "FROM (SELECT extract(epoch FROM started_at - queued_at)::float8 AS d FROM attempts\n"
    "      WHERE started_at IS NOT NULL AND queued_at IS NOT NULL) x\n"
    "GROUP BY k ORDER BY k"};

static const struct store_stmt stmt_run_lock_final = {
    "api_run_lock_final",
    "SELECT state IN ('succeeded', 'failed', 'cancelled') FROM runs\n"
    "WHERE id = $1::bigint FOR UPDATE"};

static const struct store_stmt stmt_run_set_params = {
    "api_run_set_params",
    "UPDATE runs SET params = $2::jsonb WHERE id = $1::bigint"};

static const struct store_stmt stmt_backfill_insert = {
    "api_backfill_insert",
    "INSERT INTO backfills (dag_id, start_at, end_at, reprocess, max_active_runs, params,\n"
    "                       logical_times)\n"
    "SELECT d.dag_id, " STORE_SQL_TS("$2") ", " STORE_SQL_TS("$3") ", $4, $5::integer,\n"
    "       $6::jsonb, $7::bigint[]\n"
    "FROM dags d WHERE d.dag_id = $1 RETURNING id"};

static const struct store_stmt stmt_backfill_get = {
    "api_backfill_get",
    "SELECT b.id, b.dag_id, " STORE_SQL_MS("b.start_at") ", " STORE_SQL_MS("b.end_at") ",\n"
    "       b.reprocess, b.max_active_runs, b.params::text, array_to_string(b.logical_times, ','),\n"
    "       b.next_index, b.n_skipped, b.state, " STORE_SQL_MS("b.created_at") ",\n"
    "       (SELECT coalesce(jsonb_object_agg(state, n), '{}')::text FROM\n"
    "        (SELECT state, count(*) AS n FROM runs WHERE backfill_id = b.id GROUP BY state) c)\n"
    "FROM backfills b WHERE b.id = $1::bigint"};

static const struct store_stmt stmt_backfill_cancel = {
    "api_backfill_cancel",
    "WITH b AS (UPDATE backfills SET state = 'cancelled', updated_at = now()\n"
    "           WHERE id = $1::bigint AND state = 'running' RETURNING id),\n"
    "r AS (UPDATE runs SET state = 'cancelling'\n"
    "      WHERE backfill_id = $1::bigint AND state IN ('queued', 'running') RETURNING id)\n"
    "SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM backfills WHERE id = $1::bigint),\n"
    "       (SELECT count(*) FROM r)"};

static const struct store_stmt stmt_backfills_running = {
    "api_backfills_running",
    "SELECT id FROM backfills WHERE state = 'running' ORDER BY id LIMIT 100"};

static const struct store_stmt stmt_backfill_lock = {
    "api_backfill_lock",
    "SELECT b.dag_id, b.reprocess, b.max_active_runs, b.params::text, b.next_index,\n"
    "       coalesce(array_length(b.logical_times, 1), 0),\n"
    "       (SELECT count(*) FROM runs r WHERE r.backfill_id = b.id\n"
    "        AND r.state IN ('queued', 'running', 'cancelling'))\n"
    "FROM backfills b WHERE b.id = $1::bigint AND b.state = 'running'\n"
    "FOR UPDATE SKIP LOCKED"};

/* The next tick and whether the reprocess rule skips it. */
static const struct store_stmt stmt_backfill_tick = {
    "api_backfill_tick",
    "SELECT b.logical_times[b.next_index + 1],\n"
    "       CASE b.reprocess\n"
    "         WHEN 'all' THEN false\n"
    "         WHEN 'none' THEN EXISTS (SELECT 1 FROM runs r WHERE r.dag_id = b.dag_id\n"
    "              AND r.logical_time = " STORE_SQL_TS("b.logical_times[b.next_index + 1]") ")\n"
    "         ELSE EXISTS (SELECT 1 FROM runs r WHERE r.dag_id = b.dag_id\n"
    "              AND r.logical_time = " STORE_SQL_TS("b.logical_times[b.next_index + 1]") "\n"
    "              AND r.state NOT IN ('failed', 'cancelled'))\n"
    "       END\n"
    "FROM backfills b WHERE b.id = $1::bigint"};

static const struct store_stmt stmt_backfill_run_insert = {
    "api_backfill_run_insert",
    "INSERT INTO runs (dag_id, run_id, version_id, trigger, logical_time, params, backfill_id)\n"
    "SELECT b.dag_id, $2, d.current_version_id, 'backfill', " STORE_SQL_TS("$3") ",\n"
    "       b.params, b.id\n"
    "FROM backfills b JOIN dags d ON d.dag_id = b.dag_id\n"
    "WHERE b.id = $1::bigint AND d.current_version_id IS NOT NULL\n"
    "ON CONFLICT DO NOTHING RETURNING id"};

static const struct store_stmt stmt_backfill_step = {
    "api_backfill_step",
    "UPDATE backfills SET next_index = next_index + 1,\n"
    "       n_skipped = n_skipped + $2::integer, updated_at = now()\n"
    "WHERE id = $1::bigint"};

static const struct store_stmt stmt_backfill_complete = {
    "api_backfill_complete",
    "UPDATE backfills SET state = 'completed', updated_at = now()\n"
    "WHERE id = $1::bigint AND state = 'running'"};

/* clang-format on */

/* --- tokens ---------------------------------------------------------------------------- */

static void hash_param(char out[2 + 64 + 1], const unsigned char *hash)
{
    static const char hex[] = "0123456789abcdef";
    out[0] = '\\';
    out[1] = 'x';
    for (size_t i = 0; i < 32; i++) {
        out[2 + 2 * i] = hex[hash[i] >> 4];
        out[3 + 2 * i] = hex[hash[i] & 15];
    }
    out[66] = '\0';
}

static void read_token(struct store_token *t, const PGresult *res, int r, int c0, struct arena *mem)
{
    t->id = store_col_i64(res, r, c0);
    t->name = store_col_str(res, r, c0 + 1, mem);
    t->role = store_col_str(res, r, c0 + 2, mem);
    t->created_at_ms = store_col_time(res, r, c0 + 3);
    t->revoked_at_ms = store_col_time(res, r, c0 + 4);
    t->last_used_at_ms = store_col_time(res, r, c0 + 5);
}

int store_token_create(struct store *st, struct store_token *out, const char *name,
                       const char *role, const unsigned char *hash, size_t hash_len,
                       struct arena *mem)
{
    if (!name || !*name || strlen(name) > 200)
        return store_fail(st, SL_EINVAL, "a token needs a name of 1 to 200 bytes");
    if (!role || (strcmp(role, "viewer") && strcmp(role, "operator") && strcmp(role, "admin")))
        return store_fail(st, SL_EINVAL, "unknown role '%s'", role ? role : "");
    if (hash_len != 32)
        return store_fail(st, SL_EINVAL, "a token hash is 32 bytes");
    char h[67];
    hash_param(h, hash);
    const char *params[] = {name, role, h};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_token_insert, 3, params);
    if (rc < 0)
        return rc;
    PQclear(res);
    rc = store_exec(st, &res, &stmt_token_by_hash, 1, params + 2);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return store_fail(st, SL_EEXIST, "a live token named '%s' exists", name);
    }
    read_token(out, res, 0, 0, mem);
    PQclear(res);
    return 0;
}

int store_token_find(struct store *st, struct store_token *out, const unsigned char *hash,
                     size_t hash_len, struct arena *mem)
{
    if (hash_len != 32)
        return store_fail(st, SL_EINVAL, "a token hash is 32 bytes");
    char h[67];
    hash_param(h, hash);
    const char *params[] = {h};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_token_find, 1, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return store_fail(st, SL_ENOENT, "no such token");
    }
    read_token(out, res, 0, 0, mem);
    PQclear(res);
    return 0;
}

int store_tokens_list(struct store *st, struct store_token **out, size_t *out_n, struct arena *mem)
{
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_tokens_list, 0, NULL);
    if (rc < 0)
        return rc;
    size_t n = (size_t)PQntuples(res);
    struct store_token *v = n ? arena_calloc(mem, n, sizeof(*v)) : NULL;
    for (size_t i = 0; i < n; i++)
        read_token(&v[i], res, (int)i, 0, mem);
    PQclear(res);
    *out = v;
    *out_n = n;
    return 0;
}

int store_token_revoke(struct store *st, bool *out_changed, int64_t id)
{
    char ids[32];
    snprintf(ids, sizeof(ids), "%" PRId64, id);
    const char *params[] = {ids};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_token_revoke, 1, params);
    if (rc < 0)
        return rc;
    bool changed = store_col_i64(res, 0, 0) > 0, exists = store_col_i64(res, 0, 1) > 0;
    PQclear(res);
    if (!exists)
        return store_fail(st, SL_ENOENT, "no token with id %" PRId64, id);
    if (out_changed)
        *out_changed = changed;
    return 0;
}

int store_tokens_count(struct store *st, int64_t *out)
{
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_tokens_count, 0, NULL);
    if (rc < 0)
        return rc;
    *out = store_col_i64(res, 0, 0);
    PQclear(res);
    return 0;
}

/* --- DAGs -------------------------------------------------------------------------------- */

static void i64s(char buf[32], int64_t v)
{
    snprintf(buf, 32, "%" PRId64, v);
}

int store_dags_query(struct store *st, struct store_dag_info **out, size_t *out_n,
                     int64_t *out_total, const struct store_dag_filter *f, struct arena *mem)
{
    char lim[32], off[32];
    i64s(lim, f->limit > 0 ? f->limit : 100);
    i64s(off, f->offset > 0 ? f->offset : 0);
    const char *params[] = {f->dag_id,
                            f->tag,
                            f->paused < 0 ? NULL : (f->paused ? "true" : "false"),
                            f->search,
                            f->include_inactive ? "true" : "false",
                            lim,
                            off};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_dags_query, 7, params);
    if (rc < 0)
        return rc;
    int rows = PQntuples(res);
    int64_t total = rows ? store_col_i64(res, 0, 0) : 0;
    size_t n = 0;
    struct store_dag_info *v = rows ? arena_calloc(mem, (size_t)rows, sizeof(*v)) : NULL;
    for (int r = 0; r < rows; r++) {
        if (PQgetisnull(res, r, 1))
            continue; /* the page is empty: only the total came back */
        struct store_dag_info *d = &v[n++];
        d->dag.dag_id = store_col_str(res, r, 1, mem);
        d->dag.is_paused = store_col_bool(res, r, 2);
        d->dag.is_active = store_col_bool(res, r, 3);
        d->dag.current_version_id = store_col_i64(res, r, 4);
        d->dag.file_path = store_col_str(res, r, 5, mem);
        d->dag.created_at_ms = store_col_time(res, r, 6);
        d->dag.updated_at_ms = store_col_time(res, r, 7);
        d->dag.last_parsed_at_ms = store_col_time(res, r, 8);
        d->dag.last_scheduled_ms = store_col_time(res, r, 9);
        d->content_hash = store_col_str(res, r, 10, mem);
        d->commit_sha = store_col_str(res, r, 11, mem);
        d->schedule = store_col_str(res, r, 12, mem);
        d->description = store_col_str(res, r, 13, mem);
        d->tags_json = store_col_str(res, r, 14, mem);
        d->params_json = store_col_str(res, r, 15, mem);
        d->last_run_id = store_col_str(res, r, 16, mem);
        d->last_run_state = store_col_str(res, r, 17, mem);
        d->last_run_logical_ms = store_col_time(res, r, 18);
        d->active_runs = store_col_i64(res, r, 19);
    }
    PQclear(res);
    *out = v;
    *out_n = n;
    *out_total = total;
    return 0;
}

int store_dag_versions_list(struct store *st, struct store_dag_version **out, size_t *out_n,
                            int64_t *out_total, const char *dag_id, int64_t limit, int64_t offset,
                            struct arena *mem)
{
    char lim[32], off[32];
    i64s(lim, limit > 0 ? limit : 100);
    i64s(off, offset > 0 ? offset : 0);
    const char *params[] = {dag_id, lim, off};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_versions_list, 3, params);
    if (rc < 0)
        return rc;
    int rows = PQntuples(res);
    int64_t total = rows ? store_col_i64(res, 0, 0) : 0;
    size_t n = 0;
    struct store_dag_version *v = rows ? arena_calloc(mem, (size_t)rows, sizeof(*v)) : NULL;
    for (int r = 0; r < rows; r++) {
        if (PQgetisnull(res, r, 1))
            continue;
        struct store_dag_version *d = &v[n++];
        d->id = store_col_i64(res, r, 1);
        d->dag_id = store_col_str(res, r, 2, mem);
        d->content_hash = store_col_str(res, r, 3, mem);
        d->commit_sha = store_col_str(res, r, 4, mem);
        d->file_path = store_col_str(res, r, 5, mem);
        d->created_at_ms = store_col_time(res, r, 6);
    }
    PQclear(res);
    *out = v;
    *out_n = n;
    *out_total = total;
    return 0;
}

/* --- runs ---------------------------------------------------------------------------------- */

static const char *opt_time(char buf[32], int64_t ms)
{
    if (ms == STORE_NO_TIME)
        return NULL;
    i64s(buf, ms);
    return buf;
}

int store_runs_query(struct store *st, struct store_run **out, size_t *out_n, int64_t *out_total,
                     const struct store_run_filter *f, struct arena *mem)
{
    if ((size_t)f->order >= sizeof(stmt_runs_query) / sizeof(stmt_runs_query[0]))
        return store_fail(st, SL_EINVAL, "unknown run order %d", (int)f->order);
    struct strbuf states = STRBUF_INIT;
    if (f->states) {
        strbuf_addch(&states, '{');
        for (int s = STORE_RUN_QUEUED; s <= STORE_RUN_CANCELLED; s++) {
            if (!(f->states & (1u << s)))
                continue;
            if (states.len > 1)
                strbuf_addch(&states, ',');
            strbuf_addstr(&states, store_run_state_name((enum store_run_state)s));
        }
        strbuf_addch(&states, '}');
    }
    char t[6][32], lim[32], off[32];
    i64s(lim, f->limit > 0 ? f->limit : 100);
    i64s(off, f->offset > 0 ? f->offset : 0);
    const char *params[] = {f->dag_id,
                            f->states ? states.buf : NULL,
                            opt_time(t[0], f->logical_gte),
                            opt_time(t[1], f->logical_lte),
                            opt_time(t[2], f->start_gte),
                            opt_time(t[3], f->start_lte),
                            opt_time(t[4], f->end_gte),
                            opt_time(t[5], f->end_lte),
                            lim,
                            off};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_runs_query[f->order], 10, params);
    strbuf_release(&states);
    if (rc < 0)
        return rc;
    int rows = PQntuples(res);
    int64_t total = rows ? store_col_i64(res, 0, 0) : 0;
    size_t n = 0;
    struct store_run *v = rows ? arena_calloc(mem, (size_t)rows, sizeof(*v)) : NULL;
    for (int r = 0; r < rows; r++) {
        if (PQgetisnull(res, r, 1))
            continue;
        struct store_run *run = &v[n++];
        run->id = store_col_i64(res, r, 1);
        run->dag_id = store_col_str(res, r, 2, mem);
        run->run_id = store_col_str(res, r, 3, mem);
        run->version_id = store_col_i64(res, r, 4);
        enum store_run_state s = STORE_RUN_QUEUED;
        store_run_state_parse(&s, PQgetvalue(res, r, 5));
        run->state = s;
        enum store_trigger tr = STORE_TRIGGER_MANUAL;
        store_trigger_parse(&tr, PQgetvalue(res, r, 6));
        run->trigger = tr;
        run->logical_time_ms = store_col_time(res, r, 7);
        run->params_json = store_col_str(res, r, 8, mem);
        run->idempotency_key = store_col_str(res, r, 9, mem);
        run->conf_json = store_col_str(res, r, 10, mem);
        run->created_at_ms = store_col_time(res, r, 11);
        run->started_at_ms = store_col_time(res, r, 12);
        run->ended_at_ms = store_col_time(res, r, 13);
    }
    PQclear(res);
    *out = v;
    *out_n = n;
    *out_total = total;
    return 0;
}

int store_attempts_of_run(struct store *st, struct store_attempt **out, size_t *out_n,
                          int64_t run_pk, const char *step, struct arena *mem)
{
    char pk[32];
    i64s(pk, run_pk);
    const char *params[] = {pk, step};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_attempts_of_run, 2, params);
    if (rc < 0)
        return rc;
    size_t n = (size_t)PQntuples(res);
    struct store_attempt *v = n ? arena_calloc(mem, n, sizeof(*v)) : NULL;
    for (size_t i = 0; i < n; i++) {
        int r = (int)i;
        struct store_attempt *a = &v[i];
        a->attempt_id = store_col_str(res, r, 0, mem);
        a->step = store_col_str(res, r, 1, mem);
        a->map_index = (int)store_col_i64(res, r, 2);
        a->attempt = (int)store_col_i64(res, r, 3);
        a->state = store_col_str(res, r, 4, mem);
        a->worker = store_col_str(res, r, 5, mem);
        a->queued_at_ms = store_col_time(res, r, 6);
        a->started_at_ms = store_col_time(res, r, 7);
        a->ended_at_ms = store_col_time(res, r, 8);
        a->exit_code = PQgetisnull(res, r, 9) ? STORE_NO_EXIT_CODE : (int)store_col_i64(res, r, 9);
        a->reason = store_col_str(res, r, 10, mem);
        a->output_params_json = store_col_str(res, r, 11, mem);
        a->log_path = store_col_str(res, r, 12, mem);
    }
    PQclear(res);
    *out = v;
    *out_n = n;
    return 0;
}

/* --- metrics ------------------------------------------------------------------------------ */

static int state_counts(struct store *st, const struct store_stmt *stmt,
                        struct store_state_count **out, size_t *out_n, struct arena *mem)
{
    PGresult *res = NULL;
    int rc = store_exec(st, &res, stmt, 0, NULL);
    if (rc < 0)
        return rc;
    size_t n = (size_t)PQntuples(res);
    struct store_state_count *v = n ? arena_calloc(mem, n, sizeof(*v)) : NULL;
    for (size_t i = 0; i < n; i++) {
        v[i].label = store_col_str(res, (int)i, 0, mem);
        v[i].state = store_col_str(res, (int)i, 1, mem);
        v[i].n = store_col_i64(res, (int)i, 2);
    }
    PQclear(res);
    *out = v;
    *out_n = n;
    return 0;
}

int store_run_state_counts(struct store *st, struct store_state_count **out, size_t *out_n,
                           struct arena *mem)
{
    return state_counts(st, &stmt_run_state_counts, out, out_n, mem);
}

int store_step_state_counts(struct store *st, struct store_state_count **out, size_t *out_n,
                            struct arena *mem)
{
    return state_counts(st, &stmt_step_state_counts, out, out_n, mem);
}

int store_dispatch_latency(struct store *st, uint64_t *out_counts, double *out_sum_s,
                           const double *bounds_s, size_t n_bounds)
{
    struct strbuf arr = STRBUF_INIT;
    strbuf_addch(&arr, '{');
    for (size_t i = 0; i < n_bounds; i++)
        strbuf_addf(&arr, "%s%.17g", i ? "," : "", bounds_s[i]);
    strbuf_addch(&arr, '}');
    const char *params[] = {arr.buf};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_dispatch_latency, 1, params);
    strbuf_release(&arr);
    if (rc < 0)
        return rc;
    /* width_bucket: 0 below the first bound, k for bounds[k-1] <= d < bounds[k], n_bounds
     * at or past the last */
    uint64_t *per = xcalloc(n_bounds + 1, sizeof(*per));
    double sum = 0;
    for (int r = 0; r < PQntuples(res); r++) {
        int64_t k = store_col_i64(res, r, 0);
        if (k < 0)
            k = 0;
        if ((size_t)k > n_bounds)
            k = (int64_t)n_bounds;
        per[k] += (uint64_t)store_col_i64(res, r, 1);
        sum += PQgetisnull(res, r, 2) ? 0 : strtod(PQgetvalue(res, r, 2), NULL);
    }
    PQclear(res);
    uint64_t cum = 0;
    for (size_t i = 0; i <= n_bounds; i++) {
        cum += per[i];
        out_counts[i] = cum;
    }
    free(per);
    *out_sum_s = sum;
    return 0;
}

/* --- retry --------------------------------------------------------------------------------- */

struct retry_op {
    int64_t run_pk;
    const char *params_json;
    const struct store_step_write *w;
    size_t n;
};

static int retry_op(struct store *st, void *arg)
{
    struct retry_op *o = arg;
    char pk[32];
    i64s(pk, o->run_pk);
    const char *params[] = {pk, o->params_json};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_run_lock_final, 1, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return store_fail(st, SL_ENOENT, "no run with id %" PRId64, o->run_pk);
    }
    bool final = store_col_bool(res, 0, 0);
    PQclear(res);
    if (!final)
        return store_fail(st, SL_ECONFLICT, "the run is active: it can be retried once it ended");
    if (o->params_json) {
        rc = store_exec(st, &res, &stmt_run_set_params, 2, params);
        if (rc < 0)
            return rc;
        PQclear(res);
    }
    if (o->n && (rc = store_steps_write(st, o->run_pk, o->w, o->n)) < 0)
        return rc;
    return store_run_set_state(st, o->run_pk, STORE_RUN_QUEUED, STORE_NO_TIME);
}

int store_run_retry(struct store *st, int64_t run_pk, const char *params_json,
                    const struct store_step_write *w, size_t n)
{
    if (params_json) {
        cJSON *doc = cJSON_Parse(params_json);
        bool object = cJSON_IsObject(doc);
        cJSON_Delete(doc);
        if (!object)
            return store_fail(st, SL_EINVAL, "params must be a JSON object");
    }
    struct retry_op o = {run_pk, params_json, w, n};
    return store_tx_op(st, retry_op, &o);
}

/* --- backfills ------------------------------------------------------------------------------ */

int store_backfill_create(struct store *st, int64_t *out_id, const char *dag_id, int64_t start_ms,
                          int64_t end_ms, const char *reprocess, int64_t max_active_runs,
                          const char *params_json, const int64_t *logical_ms, size_t n)
{
    struct strbuf arr = STRBUF_INIT;
    strbuf_addch(&arr, '{');
    for (size_t i = 0; i < n; i++)
        strbuf_addf(&arr, "%s%" PRId64, i ? "," : "", logical_ms[i]);
    strbuf_addch(&arr, '}');
    char a[32], b[32], m[32];
    i64s(a, start_ms);
    i64s(b, end_ms);
    i64s(m, max_active_runs);
    const char *params[] = {dag_id, a, b, reprocess, m, params_json ? params_json : "{}", arr.buf};
    PGresult *res = NULL;
    /* not idempotent by itself (a repeat after a lost answer makes a second backfill), so
     * it runs once: the caller sees SL_ECONN and may look before trying again */
    int rc = store_exec(st, &res, &stmt_backfill_insert, 7, params);
    strbuf_release(&arr);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return store_fail(st, SL_ENOENT, "no dag '%s'", dag_id);
    }
    *out_id = store_col_i64(res, 0, 0);
    PQclear(res);
    return 0;
}

int store_backfill_get(struct store *st, struct store_backfill *out, int64_t id, struct arena *mem)
{
    char ids[32];
    i64s(ids, id);
    const char *params[] = {ids};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_backfill_get, 1, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return store_fail(st, SL_ENOENT, "no backfill %" PRId64, id);
    }
    memset(out, 0, sizeof(*out));
    out->id = store_col_i64(res, 0, 0);
    out->dag_id = store_col_str(res, 0, 1, mem);
    out->start_ms = store_col_time(res, 0, 2);
    out->end_ms = store_col_time(res, 0, 3);
    out->reprocess = store_col_str(res, 0, 4, mem);
    out->max_active_runs = store_col_i64(res, 0, 5);
    out->params_json = store_col_str(res, 0, 6, mem);
    const char *times = PQgetvalue(res, 0, 7);
    size_t n = *times ? 1 : 0;
    for (const char *p = times; *p; p++)
        n += *p == ',';
    out->logical_ms = n ? arena_calloc(mem, n, sizeof(int64_t)) : NULL;
    const char *p = times;
    for (size_t i = 0; i < n; i++) {
        char *end;
        out->logical_ms[i] = strtoll(p, &end, 10);
        p = *end ? end + 1 : end;
    }
    out->n_logical = n;
    out->next_index = store_col_i64(res, 0, 8);
    out->n_skipped = store_col_i64(res, 0, 9);
    out->state = store_col_str(res, 0, 10, mem);
    out->created_at_ms = store_col_time(res, 0, 11);
    out->runs_by_state_json = store_col_str(res, 0, 12, mem);
    PQclear(res);
    return 0;
}

int store_backfill_cancel(struct store *st, bool *out_changed, int64_t id)
{
    char ids[32];
    i64s(ids, id);
    const char *params[] = {ids};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_backfill_cancel, 1, params);
    if (rc < 0)
        return rc;
    bool changed = store_col_i64(res, 0, 0) > 0, exists = store_col_i64(res, 0, 1) > 0;
    PQclear(res);
    if (!exists)
        return store_fail(st, SL_ENOENT, "no backfill %" PRId64, id);
    if (out_changed)
        *out_changed = changed;
    return 0;
}

struct advance_op {
    int64_t id;
    size_t created;
};

/* One backfill, in its own transaction (store_tx_op): idempotent, since every step reads
 * next_index again and run creation is ON CONFLICT DO NOTHING on a run_id of its own. */
static int advance_one(struct store *st, void *arg)
{
    struct advance_op *o = arg;
    o->created = 0;
    char ids[32];
    i64s(ids, o->id);
    const char *p1[] = {ids};
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_backfill_lock, 1, p1);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0) { /* another replica holds it, or it ended */
        PQclear(res);
        return 0;
    }
    int64_t max_active = store_col_i64(res, 0, 2), next = store_col_i64(res, 0, 4);
    int64_t n = store_col_i64(res, 0, 5), active = store_col_i64(res, 0, 6);
    PQclear(res);
    while (next < n && active < max_active) {
        rc = store_exec(st, &res, &stmt_backfill_tick, 1, p1);
        if (rc < 0)
            return rc;
        int64_t lt = store_col_i64(res, 0, 0);
        bool skip = store_col_bool(res, 0, 1);
        PQclear(res);
        if (!skip) {
            char secs[32], run_id[96], lts[32];
            sl_time_format_utc(secs, lt / 1000);
            snprintf(run_id, sizeof(run_id), "backfill__%s__%" PRId64, secs, o->id);
            i64s(lts, lt);
            const char *p2[] = {ids, run_id, lts};
            rc = store_exec(st, &res, &stmt_backfill_run_insert, 3, p2);
            if (rc < 0)
                return rc;
            if (PQntuples(res) > 0)
                o->created++;
            PQclear(res);
            active++;
        }
        const char *p3[] = {ids, skip ? "1" : "0"};
        rc = store_exec(st, &res, &stmt_backfill_step, 2, p3);
        if (rc < 0)
            return rc;
        PQclear(res);
        next++;
    }
    if (next >= n && active == 0) {
        rc = store_exec(st, &res, &stmt_backfill_complete, 1, p1);
        if (rc < 0)
            return rc;
        PQclear(res);
    }
    return 0;
}

int store_backfills_advance(struct store *st, size_t *out_created)
{
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_backfills_running, 0, NULL);
    if (rc < 0)
        return rc;
    size_t n = (size_t)PQntuples(res);
    int64_t *ids = xcalloc(n + 1, sizeof(*ids));
    for (size_t i = 0; i < n; i++)
        ids[i] = store_col_i64(res, (int)i, 0);
    PQclear(res);
    size_t created = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct advance_op o = {ids[i], 0};
        rc = store_tx_op(st, advance_one, &o);
        created += o.created;
    }
    free(ids);
    if (rc < 0)
        return rc;
    if (out_created)
        *out_created = created;
    return 0;
}
