/*
 * store/registry.c - what the DAG registry writes: DAGs, their versions, import errors.
 *
 * The registry (scheduler/) parses every DAG file of a Git commit and reports, per file,
 * either a model (store_dag_put_version) or diagnostics (store_import_error_set), then the
 * set of files that exist (store_dag_deactivate_missing). Versions are keyed by the hash
 * of the model's canonical jsonb text, computed by PostgreSQL itself (sha256(), jsonb's
 * text output sorts keys and normalizes spacing), so equal models always hash equally
 * whatever the JSON's formatting.
 *
 * put_version takes the DAG's row lock (SELECT ... FOR UPDATE) before it reads the version
 * table, so two registries writing the same DAG serialize on it and the insert-or-select
 * of the version row can be one statement.
 */
#include "store/store.h"
#include "common/xalloc.h"
#include "store/store_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- statements ------------------------------------------------------------------------ */

/* Laid out by hand, as SQL reads best: clang-format cannot split string concatenations
 * with macro calls in them readably. */
/* clang-format off */

static const struct store_stmt stmt_dag_ensure = {
    "dag_ensure",
    "INSERT INTO dags (dag_id, file_path) VALUES ($1, $2)\n"
    "ON CONFLICT (dag_id) DO NOTHING"};

static const struct store_stmt stmt_dag_lock = {
    "dag_lock",
    "SELECT file_path, is_active, current_version_id FROM dags\n"
    "WHERE dag_id = $1 FOR UPDATE"};

/* Inserts the version if its hash is new, and returns its id either way: the first
 * branch sees the row inserted now, the second a row that existed before the statement
 * (the DAG's row lock keeps a concurrent insert of the same hash out). */
static const struct store_stmt stmt_version_upsert = {
    "version_upsert",
    "WITH h AS (SELECT encode(sha256(convert_to(($2::jsonb)::text, 'UTF8')), 'hex') AS hash),\n"
    "ins AS (INSERT INTO dag_versions (dag_id, content_hash, model, source, commit_sha, "
    "file_path)\n"
    "        SELECT $1, h.hash, $2::jsonb, $3, $4, $5 FROM h\n"
    "        ON CONFLICT (dag_id, content_hash) DO NOTHING RETURNING id)\n"
    "SELECT id FROM ins\n"
    "UNION ALL\n"
    "SELECT v.id FROM dag_versions v, h WHERE v.dag_id = $1 AND v.content_hash = h.hash"};

static const struct store_stmt stmt_dag_set_current = {
    "dag_set_current",
    "UPDATE dags SET\n"
    "    updated_at = CASE WHEN current_version_id IS DISTINCT FROM $2::bigint\n"
    "                        OR NOT is_active OR file_path <> $3\n"
    "                      THEN now() ELSE updated_at END,\n"
    "    current_version_id = $2::bigint, file_path = $3, is_active = true,\n"
    "    last_parsed_at = now()\n"
    "WHERE dag_id = $1"};

static const struct store_stmt stmt_dag_deactivate = {
    "dag_deactivate",
    "UPDATE dags SET is_active = false, updated_at = now()\n"
    "WHERE is_active AND file_path NOT IN (SELECT jsonb_array_elements_text($1::jsonb))"};

static const struct store_stmt stmt_dags_set_commit = {
    "dags_set_commit",
    "UPDATE dags SET commit_sha = $1\n"
    "WHERE dag_id IN (SELECT jsonb_array_elements_text($2::jsonb))\n"
    "    AND commit_sha IS DISTINCT FROM $1"};

static const struct store_stmt stmt_dag_deactivate_one = {
    "dag_deactivate_one",
    "UPDATE dags SET is_active = false, updated_at = now()\n"
    "WHERE dag_id = $1 AND is_active"};

static const struct store_stmt stmt_import_errors_prune = {
    "import_errors_prune",
    "DELETE FROM import_errors\n"
    "WHERE file_path NOT IN (SELECT jsonb_array_elements_text($1::jsonb))"};

static const struct store_stmt stmt_dag_set_paused = {
    "dag_set_paused",
    "UPDATE dags SET is_paused = $2::boolean, updated_at = now()\n"
    "WHERE dag_id = $1"};

/* A DAG and the logical time of its newest scheduled run (runs_scheduled_key). */
#define DAG_COLS                                                                \
    "d.dag_id, d.is_paused, d.is_active, d.current_version_id, d.file_path, "  \
    STORE_SQL_MS("d.created_at") ", "                                          \
    STORE_SQL_MS("d.updated_at") ", "                                          \
    STORE_SQL_MS("d.last_parsed_at") ",\n"                                     \
    "    (SELECT " STORE_SQL_MS("max(r.logical_time)") " FROM runs r\n"        \
    "     WHERE r.dag_id = d.dag_id AND r.trigger = 'scheduled')"

/* The cron ticker's list: every DAG with its newest scheduled logical time, found per DAG
 * in runs_scheduled_key. */
const struct store_stmt store_stmt_dag_list = {
    "dag_list",
    "SELECT " DAG_COLS " FROM dags d ORDER BY d.dag_id"};

static const struct store_stmt stmt_dag_get = {
    "dag_get",
    "SELECT " DAG_COLS " FROM dags d WHERE d.dag_id = $1"};

static const struct store_stmt stmt_version_get = {
    "version_get",
    "SELECT id, dag_id, content_hash, model::text, source, commit_sha, file_path, "
    STORE_SQL_MS("created_at") "\n"
    "FROM dag_versions WHERE id = $1::bigint"};

static const struct store_stmt stmt_import_errors_list = {
    "import_errors_list",
    "SELECT file_path, commit_sha, errors::text, "
    STORE_SQL_MS("first_seen") ", " STORE_SQL_MS("last_seen") "\n"
    "FROM import_errors ORDER BY file_path"};

/* clang-format on */

static const struct store_stmt stmt_import_error_set = {
    "import_error_set",
    "INSERT INTO import_errors (file_path, commit_sha, errors) VALUES ($1, $2, $3::jsonb)\n"
    "ON CONFLICT (file_path) DO UPDATE\n"
    "SET commit_sha = EXCLUDED.commit_sha, errors = EXCLUDED.errors, last_seen = now()"};

static const struct store_stmt stmt_import_error_clear = {
    "import_error_clear", "DELETE FROM import_errors WHERE file_path = $1"};

/* --- put_version -------------------------------------------------------------------------- */

struct put_ctx {
    const struct store_dag_put *in;
    int64_t version_id; /* out */
    bool have_before;   /* before_id was read, by this or an earlier run of the op */
    int64_t before_id;  /* the current version when the call began */
};

static int put_op(struct store *st, void *arg)
{
    struct put_ctx *c = arg;
    const struct store_dag_put *in = c->in;
    PGresult *res = NULL;
    const char *ensure[] = {in->dag_id, in->file_path};
    int rc = store_exec(st, &res, &stmt_dag_ensure, 2, ensure);
    PQclear(res);
    if (rc < 0)
        return rc;

    const char *key[] = {in->dag_id};
    rc = store_exec(st, &res, &stmt_dag_lock, 1, key);
    if (rc < 0)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return store_fail(st, SL_EINTERNAL, "dag '%s' vanished while being written", in->dag_id);
    }
    bool active = store_col_bool(res, 0, 1);
    if (active && strcmp(PQgetvalue(res, 0, 0), in->file_path) != 0) {
        rc = store_fail(st, SL_ECONFLICT,
                        "dag '%s' is already defined in '%s', so '%s' cannot define it too",
                        in->dag_id, PQgetvalue(res, 0, 0), in->file_path);
        PQclear(res);
        return rc;
    }
    if (!c->have_before) {
        /* A repeat after a lost COMMIT may find our own version current already: compare
         * with what the first run saw. */
        c->before_id = store_col_i64(res, 0, 2);
        c->have_before = true;
    }
    PQclear(res);

    const char *version[] = {in->dag_id, in->model_json, in->source ? in->source : "",
                             in->commit_sha, in->file_path};
    rc = store_exec(st, &res, &stmt_version_upsert, 5, version);
    if (rc < 0)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return store_fail(st, SL_EINTERNAL, "dag '%s': no version row after its upsert",
                          in->dag_id);
    }
    c->version_id = store_col_i64(res, 0, 0);
    PQclear(res);

    char id[32];
    snprintf(id, sizeof(id), "%" PRId64, c->version_id);
    const char *current[] = {in->dag_id, id, in->file_path};
    rc = store_exec(st, &res, &stmt_dag_set_current, 3, current);
    PQclear(res);
    return rc;
}

int store_dag_put_version(struct store *st, int64_t *out_version_id, bool *out_changed,
                          const struct store_dag_put *in)
{
    if (!in->dag_id || !in->file_path || !in->model_json)
        return store_fail(st, SL_EINVAL, "a dag version needs a dag_id, a file and a model");
    struct put_ctx c = {in, 0, false, 0};
    int rc = store_tx_op(st, put_op, &c);
    if (rc < 0) {
        if (rc != SL_ECONFLICT && rc != SL_ECONN) {
            struct strbuf msg = STRBUF_INIT;
            strbuf_addstr(&msg, store_errmsg(st));
            store_fail(st, rc, "dag '%s' from '%s': %s", in->dag_id, in->file_path, msg.buf);
            strbuf_release(&msg);
        }
        return rc;
    }
    *out_version_id = c.version_id;
    *out_changed = c.before_id != c.version_id;
    return 0;
}

/* A JSON array of the n strings v, for a jsonb parameter. */
static void json_strings(struct strbuf *json, const char *const *v, size_t n)
{
    strbuf_addch(json, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            strbuf_addch(json, ',');
        strbuf_add_json_string(json, v[i]);
    }
    strbuf_addch(json, ']');
}

int store_dags_set_commit(struct store *st, const char *commit_sha, const char *const *dag_ids,
                          size_t n)
{
    struct strbuf json = STRBUF_INIT;
    json_strings(&json, dag_ids, n);
    PGresult *res = NULL;
    const char *params[] = {commit_sha, json.buf};
    int rc = store_exec(st, &res, &stmt_dags_set_commit, 2, params);
    strbuf_release(&json);
    PQclear(res);
    return rc < 0 ? rc : 0;
}

/* --- deactivate_missing -------------------------------------------------------------------- */

struct deactivate_ctx {
    const char *files_json;
    size_t n; /* out */
};

static int deactivate_op(struct store *st, void *arg)
{
    struct deactivate_ctx *c = arg;
    PGresult *res = NULL;
    const char *params[] = {c->files_json};
    int rc = store_exec(st, &res, &stmt_dag_deactivate, 1, params);
    if (rc < 0)
        return rc;
    c->n = (size_t)strtoull(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    rc = store_exec(st, &res, &stmt_import_errors_prune, 1, params);
    PQclear(res);
    return rc;
}

int store_dag_deactivate_missing(struct store *st, size_t *out_deactivated,
                                 const char *const *files, size_t n_files)
{
    struct strbuf json = STRBUF_INIT;
    json_strings(&json, files, n_files);
    struct deactivate_ctx c = {json.buf, 0};
    int rc = store_tx_op(st, deactivate_op, &c);
    strbuf_release(&json);
    if (rc == 0 && out_deactivated)
        *out_deactivated = c.n;
    return rc;
}

int store_dag_deactivate(struct store *st, bool *out_deactivated, const char *dag_id)
{
    PGresult *res = NULL;
    const char *params[] = {dag_id};
    int rc = store_exec(st, &res, &stmt_dag_deactivate_one, 1, params);
    if (rc < 0)
        return rc;
    if (out_deactivated)
        *out_deactivated = strcmp(PQcmdTuples(res), "0") != 0;
    PQclear(res);
    return 0;
}

/* --- DAG reads and pausing ------------------------------------------------------------------ */

int store_dag_set_paused(struct store *st, const char *dag_id, bool paused)
{
    PGresult *res = NULL;
    const char *params[] = {dag_id, paused ? "true" : "false"};
    int rc = store_exec(st, &res, &stmt_dag_set_paused, 2, params);
    if (rc < 0)
        return rc;
    bool found = strcmp(PQcmdTuples(res), "0") != 0;
    PQclear(res);
    return found ? 0 : store_fail(st, SL_ENOENT, "no dag '%s'", dag_id);
}

static void read_dag(struct store_dag *d, const PGresult *res, int r, struct arena *mem)
{
    d->dag_id = store_col_str(res, r, 0, mem);
    d->is_paused = store_col_bool(res, r, 1);
    d->is_active = store_col_bool(res, r, 2);
    d->current_version_id = store_col_i64(res, r, 3);
    d->file_path = store_col_str(res, r, 4, mem);
    d->created_at_ms = store_col_time(res, r, 5);
    d->updated_at_ms = store_col_time(res, r, 6);
    d->last_parsed_at_ms = store_col_time(res, r, 7);
    d->last_scheduled_ms = store_col_time(res, r, 8);
}

int store_dag_list(struct store *st, struct store_dag **out, size_t *out_n, struct arena *mem)
{
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &store_stmt_dag_list, 0, NULL);
    if (rc < 0)
        return rc;
    size_t n = (size_t)PQntuples(res);
    struct store_dag *v = n ? arena_calloc(mem, n, sizeof(*v)) : NULL;
    for (size_t i = 0; i < n; i++)
        read_dag(&v[i], res, (int)i, mem);
    PQclear(res);
    *out = v;
    *out_n = n;
    return 0;
}

int store_dag_get(struct store *st, struct store_dag *out, const char *dag_id, struct arena *mem)
{
    PGresult *res = NULL;
    const char *params[] = {dag_id};
    int rc = store_exec(st, &res, &stmt_dag_get, 1, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return store_fail(st, SL_ENOENT, "no dag '%s'", dag_id);
    }
    read_dag(out, res, 0, mem);
    PQclear(res);
    return 0;
}

int store_dag_version_get(struct store *st, struct store_dag_version *out, int64_t version_id,
                          struct arena *mem)
{
    PGresult *res = NULL;
    char id[32];
    snprintf(id, sizeof(id), "%" PRId64, version_id);
    const char *params[] = {id};
    int rc = store_exec(st, &res, &stmt_version_get, 1, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return store_fail(st, SL_ENOENT, "no dag version %" PRId64, version_id);
    }
    out->id = store_col_i64(res, 0, 0);
    out->dag_id = store_col_str(res, 0, 1, mem);
    out->content_hash = store_col_str(res, 0, 2, mem);
    out->model_json = store_col_str(res, 0, 3, mem);
    out->source = store_col_str(res, 0, 4, mem);
    out->commit_sha = store_col_str(res, 0, 5, mem);
    out->file_path = store_col_str(res, 0, 6, mem);
    out->created_at_ms = store_col_time(res, 0, 7);
    PQclear(res);
    return 0;
}

/* --- import errors -------------------------------------------------------------------------- */

int store_import_error_set(struct store *st, const char *file_path, const char *commit_sha,
                           const struct store_import_error_item *items, size_t n)
{
    struct strbuf json = STRBUF_INIT;
    strbuf_addch(&json, '[');
    for (size_t i = 0; i < n; i++) {
        strbuf_addf(&json, "%s{\"line\":%d,\"col\":%d,\"message\":", i ? "," : "", items[i].line,
                    items[i].col);
        strbuf_add_json_string(&json, items[i].message ? items[i].message : "");
        strbuf_addch(&json, '}');
    }
    strbuf_addch(&json, ']');
    PGresult *res = NULL;
    const char *params[] = {file_path, commit_sha, json.buf};
    int rc = store_exec(st, &res, &stmt_import_error_set, 3, params);
    PQclear(res);
    strbuf_release(&json);
    return rc;
}

int store_import_error_clear(struct store *st, const char *file_path)
{
    PGresult *res = NULL;
    const char *params[] = {file_path};
    int rc = store_exec(st, &res, &stmt_import_error_clear, 1, params);
    PQclear(res);
    return rc;
}

int store_import_errors_list(struct store *st, struct store_import_error **out, size_t *out_n,
                             struct arena *mem)
{
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_import_errors_list, 0, NULL);
    if (rc < 0)
        return rc;
    size_t n = (size_t)PQntuples(res);
    struct store_import_error *v = n ? arena_calloc(mem, n, sizeof(*v)) : NULL;
    for (size_t i = 0; i < n; i++) {
        int r = (int)i;
        v[i].file_path = store_col_str(res, r, 0, mem);
        v[i].commit_sha = store_col_str(res, r, 1, mem);
        v[i].errors_json = store_col_str(res, r, 2, mem);
        v[i].first_seen_ms = store_col_time(res, r, 3);
        v[i].last_seen_ms = store_col_time(res, r, 4);
    }
    PQclear(res);
    *out = v;
    *out_n = n;
    return 0;
}
