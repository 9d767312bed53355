/*
 * store/migrate.c - the schema, as numbered migrations compiled into the binary.
 *
 * Each version is a name and a list of SQL statements, applied in one transaction together
 * with its row in schema_migrations (version, name, checksum, applied_at). Versions are
 * never edited once released: a change is a new version appended to migrations[]. The
 * checksum (FNV-1a 64 of the statements) lets store_migrate() notice a database migrated
 * by a binary whose version N was different from ours, instead of silently diverging.
 *
 * Concurrency: store_migrate() holds the session advisory lock STORE_LOCK_MIGRATE while
 * it reads and applies, so any number of processes may migrate at once; the first applies
 * each version, the others wait and then find nothing to do. The session is bound
 * meanwhile (store_session_bind): if the connection drops, the lock is gone, so the
 * migration stops with SL_ECONN instead of carrying on unlocked on a new connection.
 *
 * store/README.md draws the schema and says which index serves which query.
 */
#include "store/store.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "store/store_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct migration {
    int version;
    const char *name;
    const char *const *sql; /* NULL-terminated */
};

/* --- version 1: the initial schema -------------------------------------------------------- */

#define RUN_STATES "'queued', 'running', 'succeeded', 'failed', 'cancelling', 'cancelled'"
#define STEP_STATES                                                                                \
    "'pending', 'queued', 'running', 'succeeded', 'failed', 'up_for_retry', 'cancelled', "         \
    "'skipped', 'upstream_failed'"
/* output_params of step instances and attempts: an object of at most 64 KiB of JSON text
 * (STORE_OUTPUT_PARAMS_MAX_BYTES). */
#define OUTPUT_PARAMS_CHECK                                                                        \
    "CHECK (output_params IS NULL OR (jsonb_typeof(output_params) = 'object'\n"                    \
    "                      AND octet_length(output_params::text) <= 65536))"

static const char *const v1_sql[] = {
    /* DAGs, one row per DAG name, never deleted: is_active goes false when the file goes. */
    "CREATE TABLE dags (\n"
    "    dag_id             text PRIMARY KEY\n"
    "                       CHECK (dag_id ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'\n"
    "                              AND length(dag_id) <= 63),\n"
    "    is_paused          boolean NOT NULL DEFAULT false,\n"
    "    is_active          boolean NOT NULL DEFAULT true,\n"
    "    current_version_id bigint,\n"
    "    file_path          text NOT NULL CHECK (file_path <> ''),\n"
    "    created_at         timestamptz NOT NULL DEFAULT now(),\n"
    "    updated_at         timestamptz NOT NULL DEFAULT now(),\n"
    "    last_parsed_at     timestamptz\n"
    ")",

    /* Every distinct content of every DAG; runs are pinned to one. (dag_id, id) is unique
     * so that composite foreign keys can require a version to belong to the right DAG. */
    "CREATE TABLE dag_versions (\n"
    "    id           bigserial PRIMARY KEY,\n"
    "    dag_id       text NOT NULL REFERENCES dags (dag_id),\n"
    "    content_hash text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),\n"
    "    model        jsonb NOT NULL CHECK (jsonb_typeof(model) = 'object'),\n"
    "    source       text NOT NULL,\n"
    "    commit_sha   text CHECK (commit_sha ~ '^[0-9a-f]{40}([0-9a-f]{24})?$'),\n"
    "    file_path    text NOT NULL CHECK (file_path <> ''),\n"
    "    created_at   timestamptz NOT NULL DEFAULT now(),\n"
    "    UNIQUE (dag_id, content_hash),\n"
    "    UNIQUE (dag_id, id)\n"
    ")",

    "ALTER TABLE dags ADD CONSTRAINT dags_current_version_fkey\n"
    "    FOREIGN KEY (dag_id, current_version_id) REFERENCES dag_versions (dag_id, id)",

    /* Files that failed to parse; the DAG's last good version stays current. */
    "CREATE TABLE import_errors (\n"
    "    file_path  text PRIMARY KEY CHECK (file_path <> ''),\n"
    "    commit_sha text,\n"
    "    errors     jsonb NOT NULL CHECK (jsonb_typeof(errors) = 'array'),\n"
    "    first_seen timestamptz NOT NULL DEFAULT now(),\n"
    "    last_seen  timestamptz NOT NULL DEFAULT now()\n"
    ")",

    "CREATE TABLE runs (\n"
    "    id              bigserial PRIMARY KEY,\n"
    "    dag_id          text NOT NULL REFERENCES dags (dag_id),\n"
    "    run_id          text NOT NULL\n"
    "                    CHECK (run_id ~ '^[A-Za-z0-9_.~:+-]+$' AND length(run_id) <= 250),\n"
    "    version_id      bigint NOT NULL,\n"
    "    state           text NOT NULL DEFAULT 'queued' CHECK (state IN (" RUN_STATES ")),\n"
    "    trigger         text NOT NULL\n"
    "                    CHECK (trigger IN ('scheduled', 'manual', 'backfill', 'retry')),\n"
    "    logical_time    timestamptz NOT NULL,\n"
    "    params          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),\n"
    "    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 250),\n"
    "    conf            jsonb,\n"
    "    created_at      timestamptz NOT NULL DEFAULT now(),\n"
    "    started_at      timestamptz,\n"
    "    ended_at        timestamptz,\n"
    "    UNIQUE (dag_id, run_id),\n"
    "    FOREIGN KEY (dag_id, version_id) REFERENCES dag_versions (dag_id, id),\n"
    "    CHECK ((ended_at IS NOT NULL) = (state IN ('succeeded', 'failed', 'cancelled')))\n"
    ")",
    /* A restarted scheduler never doubles a run; also serves "newest scheduled run". */
    "CREATE UNIQUE INDEX runs_scheduled_key ON runs (dag_id, logical_time)\n"
    "    WHERE trigger = 'scheduled'",
    "CREATE UNIQUE INDEX runs_idempotency_key ON runs (dag_id, idempotency_key)\n"
    "    WHERE idempotency_key IS NOT NULL",
    /* Active runs of a DAG and their counts: a small index, however long the history. */
    "CREATE INDEX runs_active_idx ON runs (dag_id, id)\n"
    "    WHERE state IN ('queued', 'running', 'cancelling')",
    /* Runs of a DAG, newest first (API listing). */
    "CREATE INDEX runs_dag_idx ON runs (dag_id, id)",

    "CREATE TABLE step_instances (\n"
    "    run_pk        bigint NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "    step          text NOT NULL CHECK (step <> ''),\n"
    "    map_index     integer NOT NULL DEFAULT -1 CHECK (map_index >= -1),\n"
    "    state         text NOT NULL DEFAULT 'pending' CHECK (state IN (" STEP_STATES ")),\n"
    "    attempt       integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),\n"
    "    queued_at     timestamptz,\n"
    "    started_at    timestamptz,\n"
    "    ended_at      timestamptz,\n"
    "    next_try_at   timestamptz,\n"
    "    worker        text,\n"
    "    exit_code     integer,\n"
    "    reason        text,\n"
    "    output_params jsonb " OUTPUT_PARAMS_CHECK ",\n"
    "    PRIMARY KEY (run_pk, step, map_index),\n"
    "    CHECK (state <> 'queued' OR queued_at IS NOT NULL),\n"
    "    CHECK (state <> 'up_for_retry' OR next_try_at IS NOT NULL)\n"
    ")",
    /* The reconciler: queued steps whose message may be lost, running steps by worker,
     * retries that are due. Partial, so they stay as small as the work in flight. */
    "CREATE INDEX step_instances_queued_idx ON step_instances (queued_at)\n"
    "    WHERE state = 'queued'",
    "CREATE INDEX step_instances_running_idx ON step_instances (worker)\n"
    "    WHERE state = 'running'",
    "CREATE INDEX step_instances_retry_idx ON step_instances (next_try_at)\n"
    "    WHERE state = 'up_for_retry'",

    "CREATE TABLE attempts (\n"
    "    attempt_id    text PRIMARY KEY CHECK (attempt_id <> ''),\n"
    "    run_pk        bigint NOT NULL,\n"
    "    step          text NOT NULL,\n"
    "    map_index     integer NOT NULL,\n"
    "    attempt       integer NOT NULL CHECK (attempt >= 1),\n"
    "    state         text NOT NULL\n"
    "                  CHECK (state IN ('queued', 'running', 'succeeded', 'failed', "
    "'cancelled')),\n"
    "    worker        text,\n"
    "    queued_at     timestamptz NOT NULL DEFAULT now(),\n"
    "    started_at    timestamptz,\n"
    "    ended_at      timestamptz,\n"
    "    exit_code     integer,\n"
    "    reason        text,\n"
    "    output_params jsonb " OUTPUT_PARAMS_CHECK ",\n"
    "    log_path      text,\n"
    "    UNIQUE (run_pk, step, map_index, attempt),\n"
    "    FOREIGN KEY (run_pk, step, map_index)\n"
    "        REFERENCES step_instances (run_pk, step, map_index) ON DELETE "
    "CASCADE\n"
    ")",

    /* The audit trail: append-only, one row per transition of a run or a step. */
    "CREATE TABLE events (\n"
    "    id         bigserial PRIMARY KEY,\n"
    "    run_pk     bigint NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "    step       text,\n"
    "    map_index  integer,\n"
    "    attempt    integer,\n"
    "    from_state text CHECK (from_state IN (" RUN_STATES ", " STEP_STATES ")),\n"
    "    to_state   text NOT NULL CHECK (to_state IN (" RUN_STATES ", " STEP_STATES ")),\n"
    "    reason     text,\n"
    "    at         timestamptz NOT NULL DEFAULT now(),\n"
    "    CHECK (step IS NOT NULL OR (map_index IS NULL AND attempt IS NULL))\n"
    ")",
    "CREATE INDEX events_run_idx ON events (run_pk, id)",

    "CREATE TABLE api_tokens (\n"
    "    id           bigserial PRIMARY KEY,\n"
    "    name         text NOT NULL CHECK (name <> ''),\n"
    "    role         text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),\n"
    "    token_hash   bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),\n"
    "    created_at   timestamptz NOT NULL DEFAULT now(),\n"
    "    revoked_at   timestamptz,\n"
    "    last_used_at timestamptz\n"
    ")",
    /* `sluice token revoke NAME` names one live token. */
    "CREATE UNIQUE INDEX api_tokens_live_name_key ON api_tokens (name)\n"
    "    WHERE revoked_at IS NULL",

    "CREATE TABLE scheduler_state (\n"
    "    key        text PRIMARY KEY CHECK (key <> ''),\n"
    "    value      jsonb NOT NULL,\n"
    "    updated_at timestamptz NOT NULL DEFAULT now()\n"
    ")",
    NULL,
};

/* --- version 2: the run engine's writes ---------------------------------------------------- */

static const char *const v2_sql[] = {
    /* The fan-out item of a for_each instance, so that a restarted scheduler rebuilds the
     * run without evaluating for_each again (its inputs may have changed). */
    "ALTER TABLE step_instances ADD COLUMN item jsonb",
    /* Idempotent events (store_steps_write, store_run_set_state): a batch written again
     * after an unknown COMMIT adds nothing. A step instance reaches a given state at most
     * once per attempt, and a run reaches a given state at most once. */
    "CREATE UNIQUE INDEX events_step_transition_key\n"
    "    ON events (run_pk, step, map_index, attempt, to_state) WHERE step IS NOT NULL",
    "CREATE UNIQUE INDEX events_run_transition_key ON events (run_pk, to_state)\n"
    "    WHERE step IS NULL",
    NULL,
};

/* --- version 3: Git sync --------------------------------------------------------------------- */

static const char *const v3_sql[] = {
    /* The commit a DAG's new runs are pinned to: the last synced commit in which its file
     * was valid. A DAG version is keyed by content hash, so one version spans many
     * commits, while the scripts beside the DAG file may change in each. NULL for a
     * directory source. */
    "ALTER TABLE dags ADD COLUMN commit_sha text\n"
    "    CHECK (commit_sha ~ '^[0-9a-f]{40}([0-9a-f]{24})?$')",
    /* The commit a run is pinned to (its DAG's when it was created): its steps run in a
     * checkout of this commit, and a retry uses it again. */
    "ALTER TABLE runs ADD COLUMN commit_sha text\n"
    "    CHECK (commit_sha ~ '^[0-9a-f]{40}([0-9a-f]{24})?$')",
    NULL,
};

/* --- version 4: the REST API ----------------------------------------------------------------- */

static const char *const v4_sql[] = {
    /* A backfill: the runs of a DAG over past logical times, created by the API a few at a
     * time (its own max_active_runs) as earlier ones end. logical_times are the schedule's
     * ticks in [start_at, end_at], fixed at creation; next_index is how many of them have
     * been handled (a run created, or skipped by the reprocess rule). */
    "CREATE TABLE backfills (\n"
    "    id              bigserial PRIMARY KEY,\n"
    "    dag_id          text NOT NULL REFERENCES dags (dag_id),\n"
    "    start_at        timestamptz NOT NULL,\n"
    "    end_at          timestamptz NOT NULL CHECK (end_at >= start_at),\n"
    "    reprocess       text NOT NULL CHECK (reprocess IN ('none', 'failed', 'all')),\n"
    "    max_active_runs integer NOT NULL CHECK (max_active_runs >= 1),\n"
    "    params          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),\n"
    "    logical_times   bigint[] NOT NULL,\n"
    "    next_index      integer NOT NULL DEFAULT 0 CHECK (next_index >= 0),\n"
    "    n_skipped       integer NOT NULL DEFAULT 0,\n"
    "    state           text NOT NULL DEFAULT 'running'\n"
    "                    CHECK (state IN ('running', 'completed', 'cancelled')),\n"
    "    created_at      timestamptz NOT NULL DEFAULT now(),\n"
    "    updated_at      timestamptz NOT NULL DEFAULT now()\n"
    ")",
    "CREATE INDEX backfills_running_idx ON backfills (id) WHERE state = 'running'",
    /* the runs a backfill made */
    "ALTER TABLE runs ADD COLUMN backfill_id bigint REFERENCES backfills (id)",
    "CREATE INDEX runs_backfill_idx ON runs (backfill_id, state) WHERE backfill_id IS NOT NULL",
    NULL,
};

static const struct migration migrations[] = {
    {1, "initial schema", v1_sql},
    {2, "engine writes", v2_sql},
    {3, "git sync", v3_sql},
    {4, "api", v4_sql},
};
#define N_MIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

int store_schema_latest(void)
{
    return migrations[N_MIGRATIONS - 1].version;
}

/* FNV-1a 64 over the statements, each followed by a NUL: "fnv1a64:<16 hex>". */
static void checksum(char out[32], const struct migration *m)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (const char *const *s = m->sql; *s; s++) {
        for (const unsigned char *p = (const unsigned char *)*s;; p++) {
            h = (h ^ *p) * UINT64_C(0x100000001b3);
            if (!*p)
                break;
        }
    }
    snprintf(out, 32, "fnv1a64:%016" PRIx64, h);
}

/* --- statements -------------------------------------------------------------------------- */

static const struct store_stmt stmt_lock = {"migrate_lock", "SELECT pg_advisory_lock($1::bigint)"};
static const struct store_stmt stmt_unlock = {"migrate_unlock",
                                              "SELECT pg_advisory_unlock($1::bigint)"};
static const struct store_stmt stmt_set_timeout = {
    "migrate_set_timeout", "SELECT set_config('statement_timeout', $1::text, false)"};
static const struct store_stmt stmt_has_table = {
    "migrate_has_table", "SELECT to_regclass('schema_migrations') IS NOT NULL"};
static const char sql_create_table[] = "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
                                       "    version    integer PRIMARY KEY CHECK (version > 0),\n"
                                       "    name       text NOT NULL,\n"
                                       "    checksum   text NOT NULL,\n"
                                       "    applied_at timestamptz NOT NULL DEFAULT now()\n"
                                       ")";
static const char sql_applied[] =
    "SELECT version, checksum FROM schema_migrations ORDER BY version";
static const char sql_record[] =
    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1::integer, $2, $3)";
static const char sql_version[] = "SELECT coalesce(max(version), 0) FROM schema_migrations";

int store_schema_version(struct store *st, int *out)
{
    PGresult *res = NULL;
    int rc = store_exec(st, &res, &stmt_has_table, 0, NULL);
    if (rc < 0)
        return rc;
    bool exists = store_col_bool(res, 0, 0);
    PQclear(res);
    if (!exists) {
        *out = 0;
        return 0;
    }
    rc = store_exec_sql(st, &res, sql_version, 0, NULL);
    if (rc < 0)
        return rc;
    *out = (int)store_col_i64(res, 0, 0);
    PQclear(res);
    return 0;
}

static int newer_schema(struct store *st, int db_version)
{
    return store_fail(st, SL_ERANGE,
                      "database schema is at version %d but this sluice knows versions up to "
                      "%d; upgrade sluice",
                      db_version, store_schema_latest());
}

int store_schema_check(struct store *st)
{
    int v;
    int rc = store_schema_version(st, &v);
    if (rc < 0)
        return rc;
    if (v > store_schema_latest())
        return newer_schema(st, v);
    if (v < store_schema_latest())
        return store_fail(st, SL_ERANGE,
                          "database schema is at version %d but this sluice needs version %d; "
                          "run 'sluice db migrate'",
                          v, store_schema_latest());
    return 0;
}

static int apply(struct store *st, const struct migration *m, const char *sum)
{
    int rc = store_begin(st);
    if (rc < 0)
        return rc;
    PGresult *res = NULL;
    for (const char *const *s = m->sql; *s && rc == 0; s++) {
        rc = store_exec_sql(st, &res, *s, 0, NULL);
        PQclear(res);
        res = NULL;
    }
    if (rc == 0) {
        char version[16];
        snprintf(version, sizeof(version), "%d", m->version);
        const char *params[] = {version, m->name, sum};
        rc = store_exec_sql(st, &res, sql_record, 3, params);
        PQclear(res);
    }
    if (rc < 0) {
        struct strbuf why = STRBUF_INIT;
        strbuf_addstr(&why, store_errmsg(st));
        store_rollback(st);
        store_fail(st, rc, "migration %d \"%s\" failed: %s", m->version, m->name, why.buf);
        strbuf_release(&why);
        return rc;
    }
    rc = store_commit(st);
    if (rc < 0) /* unknown is lost too: the next store_migrate() sees what happened */
        return rc == STORE_EUNKNOWN ? SL_ECONN : rc;
    sl_info("store", "applied migration %d \"%s\"", m->version, m->name);
    return 0;
}

/* The work done under the lock. */
static int migrate_locked(struct store *st, int *out_version, int *out_applied)
{
    PGresult *res = NULL;
    int rc = store_exec_sql(st, &res, sql_create_table, 0, NULL);
    PQclear(res);
    if (rc < 0)
        return rc;
    rc = store_exec_sql(st, &res, sql_applied, 0, NULL);
    if (rc < 0)
        return rc;

    /* applied[v] for v in 1..latest; newer versions refuse everything */
    int latest = store_schema_latest(), db_version = 0, applied_now = 0;
    bool *applied = xcalloc((size_t)latest + 1, sizeof(*applied));
    for (int r = 0; r < PQntuples(res) && rc == 0; r++) {
        int v = (int)store_col_i64(res, r, 0);
        db_version = v > db_version ? v : db_version;
        if (v > latest)
            continue;
        for (int i = 0; i < N_MIGRATIONS; i++) {
            if (migrations[i].version != v)
                continue;
            char sum[32];
            checksum(sum, &migrations[i]);
            applied[v] = true;
            if (strcmp(sum, PQgetvalue(res, r, 1)) != 0)
                rc = store_fail(st, SL_ECONFLICT,
                                "migration %d \"%s\" was applied from a different definition "
                                "(checksum %s, this sluice has %s): the database and this "
                                "sluice disagree on the schema",
                                v, migrations[i].name, PQgetvalue(res, r, 1), sum);
        }
    }
    PQclear(res);
    if (rc == 0 && db_version > latest)
        rc = newer_schema(st, db_version);

    for (int i = 0; i < N_MIGRATIONS && rc == 0; i++) {
        if (applied[migrations[i].version])
            continue;
        char sum[32];
        checksum(sum, &migrations[i]);
        rc = apply(st, &migrations[i], sum);
        if (rc == 0) {
            applied_now++;
            db_version = migrations[i].version > db_version ? migrations[i].version : db_version;
        }
    }
    free(applied);
    if (rc == 0) {
        *out_version = db_version;
        if (out_applied)
            *out_applied = applied_now;
    }
    return rc;
}

int store_migrate(struct store *st, int *out_version, int *out_applied)
{
    if (st->tx != STORE_TX_NONE)
        return store_fail(st, SL_EINVAL, "cannot migrate inside a transaction");
    char key[32], timeout[16];
    snprintf(key, sizeof(key), "%" PRId64, STORE_LOCK_MIGRATE);
    const char *key_param[] = {key};
    PGresult *res = NULL;
    bool was_bound = st->bound;

    /* Statement timeouts are for the daemons' queries, not for building indexes or waiting
     * for another migrator. Set before binding: a lost connection here is harmless. */
    const char *zero[] = {"0"};
    int rc = store_exec(st, &res, &stmt_set_timeout, 1, zero);
    PQclear(res);
    if (rc < 0)
        return rc;
    store_session_bind(st);
    rc = store_exec(st, &res, &stmt_lock, 1, key_param);
    PQclear(res);
    if (rc == 0) {
        int v = 0, n = 0;
        rc = migrate_locked(st, &v, &n);
        struct strbuf why = STRBUF_INIT;
        strbuf_addstr(&why, store_errmsg(st));
        int rc2 = store_exec(st, &res, &stmt_unlock, 1, key_param);
        PQclear(res);
        if (rc == 0 && rc2 < 0)
            rc = rc2;
        else if (rc < 0)
            store_fail(st, rc, "%s", why.buf);
        strbuf_release(&why);
        if (rc == 0) {
            if (out_version)
                *out_version = v;
            if (out_applied)
                *out_applied = n;
        }
    }
    if (!was_bound)
        store_session_unbind(st);
    /* Back to the configured timeout; a new connection would have it anyway. */
    snprintf(timeout, sizeof(timeout), "%d", st->opts.statement_timeout_ms);
    const char *timeout_param[] = {timeout};
    if (st->conn && PQstatus(st->conn) == CONNECTION_OK && st->tx == STORE_TX_NONE) {
        struct strbuf why = STRBUF_INIT;
        strbuf_addstr(&why, store_errmsg(st));
        int rc2 = store_exec(st, &res, &stmt_set_timeout, 1, timeout_param);
        PQclear(res);
        if (rc == 0 && rc2 < 0)
            rc = rc2;
        else if (rc < 0)
            store_fail(st, rc, "%s", why.buf);
        strbuf_release(&why);
    }
    return rc;
}
