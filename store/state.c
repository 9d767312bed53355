/*
 * store/state.c - small named JSON documents shared between processes (scheduler_state).
 *
 * The scheduler publishes its view of things other processes show (the last DAG sync,
 * its heartbeat) and other processes leave requests for it (sync now), without a
 * channel of their own: one row per key, replaced whole.
 */
#include "store/store_int.h"

#include <string.h>

static const struct store_stmt stmt_state_put = {
    "state_put", "INSERT INTO scheduler_state (key, value, updated_at)\n"
                 "VALUES ($1, $2::jsonb, now())\n"
                 "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"};

static const struct store_stmt stmt_state_get = {
    "state_get",
    "SELECT value::text, " STORE_SQL_MS("updated_at") " FROM scheduler_state WHERE key = $1"};

int store_state_put(struct store *st, const char *key, const char *json)
{
    PGresult *res = NULL;
    const char *params[] = {key, json};
    int rc = store_exec(st, &res, &stmt_state_put, 2, params);
    if (rc < 0)
        return rc;
    PQclear(res);
    return 0;
}

int store_state_get(struct store *st, const char **out_json, int64_t *out_updated_ms,
                    const char *key, struct arena *mem)
{
    PGresult *res = NULL;
    const char *params[] = {key};
    int rc = store_exec(st, &res, &stmt_state_get, 1, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return store_fail(st, SL_ENOENT, "no state '%s'", key);
    }
    *out_json = store_col_str(res, 0, 0, mem);
    if (out_updated_ms)
        *out_updated_ms = store_col_time(res, 0, 1);
    PQclear(res);
    return 0;
}
