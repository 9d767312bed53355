/*
 * api/routes_backfills.c - backfills: a DAG's runs over a past date range.
 *
 * The logical times are the schedule's ticks in [start, end] (both included), computed
 * once at creation with the DAG's current version (time zone, and start_date as the
 * anchor of an @every schedule, as the cron ticker does). A dry run lists them and
 * records nothing. A real backfill is a row in `backfills`; the API servers move it on
 * every api.backfill_interval (store_backfills_advance): runs are created oldest first,
 * never more than the backfill's own max_active_runs at once (the DAG's max_active_runs
 * still applies to admission on top), each checked against the reprocess rule when its
 * turn comes:
 *
 *   none    skip a time that has any run of the DAG (Airflow's default)
 *   failed  skip a time that has a run that did not fail (or get cancelled)
 *   all     run every time again
 *
 * Backfill runs have trigger "backfill", run_id backfill__<time>__<backfill id>, and the
 * backfill's params. Cancelling a backfill stops it creating runs and cancels its active
 * ones.
 */
#include "api/api_int.h"

#include "common/error.h"
#include "common/timeutil.h"
#include "common/tz.h"
#include "common/xalloc.h"
#include "dsl/cron.h"
#include "dsl/dsl.h"
#include "scheduler/engine.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKFILL_MAX_TIMES 10000

static cJSON *backfill_json(const struct store_backfill *b)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)b->id);
    cJSON_AddStringToObject(o, "dag_id", b->dag_id);
    cJSON_AddStringToObject(o, "state", b->state);
    api_add_time(o, "start", b->start_ms);
    api_add_time(o, "end", b->end_ms);
    cJSON_AddStringToObject(o, "reprocess", b->reprocess);
    cJSON_AddNumberToObject(o, "max_active_runs", (double)b->max_active_runs);
    api_add_raw_json(o, "params", b->params_json ? b->params_json : "{}");
    cJSON *arr = cJSON_AddArrayToObject(o, "logical_times");
    for (size_t i = 0; i < b->n_logical; i++) {
        cJSON *tmp = cJSON_CreateObject();
        api_add_time(tmp, "t", b->logical_ms[i]);
        cJSON_AddItemToArray(arr, cJSON_DetachItemFromObject(tmp, "t"));
        cJSON_Delete(tmp);
    }
    cJSON_AddNumberToObject(o, "handled", (double)b->next_index);
    cJSON_AddNumberToObject(o, "skipped", (double)b->n_skipped);
    api_add_raw_json(o, "runs", b->runs_by_state_json ? b->runs_by_state_json : "{}");
    api_add_time(o, "created_at", b->created_at_ms);
    return o;
}

/* The schedule's ticks in [start_ms, end_ms]; answers and returns SL_EINVAL or SL_ERANGE. */
static int ticks(int64_t **out, size_t *out_n, const struct dsl_dag *dag, int64_t start_ms,
                 int64_t end_ms, struct api_resp *rs)
{
    if (!dag->schedule) {
        api_error(rs, 422, "invalid_params", NULL,
                  "DAG '%s' has no schedule, so it has no logical times to backfill; trigger "
                  "runs with a logical_time instead",
                  dag->name);
        return SL_EINVAL;
    }
    char err[200] = "";
    struct dsl_cron *cron = NULL;
    if (dsl_cron_parse(&cron, dag->schedule, err, sizeof(err)) < 0) {
        api_error(rs, 500, "internal", NULL, "the DAG's schedule does not parse: %s", err);
        return SL_EINVAL;
    }
    if (dag->start_date)
        dsl_cron_set_anchor(cron, dag->start_unix);
    struct sl_tz *tz = NULL;
    if (dag->timezone && strcmp(dag->timezone, "UTC") && sl_tz_load(&tz, dag->timezone) < 0) {
        dsl_cron_free(cron);
        api_error(rs, 500, "internal", NULL, "unknown time zone '%s'", dag->timezone);
        return SL_EINVAL;
    }
    int64_t *v = NULL;
    size_t n = 0, alloc = 0;
    int64_t t = start_ms / 1000 - 1; /* dsl_cron_next is strictly after */
    int rc = 0;
    for (;;) {
        int64_t next;
        if (dsl_cron_next(&next, cron, tz, t) < 0 || next * 1000 > end_ms)
            break;
        if (n == BACKFILL_MAX_TIMES) {
            api_error(rs, 422, "invalid_params", NULL,
                      "the range holds more than %d logical times; backfill it in parts",
                      BACKFILL_MAX_TIMES);
            rc = SL_ERANGE;
            break;
        }
        XGROW(v, alloc, n + 1);
        v[n++] = next * 1000;
        t = next;
    }
    dsl_cron_free(cron);
    sl_tz_free(tz);
    if (rc == 0 && n == 0) {
        api_error(rs, 422, "invalid_params", NULL,
                  "the schedule '%s' has no tick between start and end", dag->schedule);
        rc = SL_EINVAL;
    }
    if (rc < 0) {
        free(v);
        return rc;
    }
    *out = v;
    *out_n = n;
    return 0;
}

static int time_field(int64_t *out_ms, const cJSON *body, const char *name, struct api_resp *rs)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, name);
    int64_t secs;
    if (!cJSON_IsString(v) || sl_time_parse(&secs, v->valuestring, NULL) < 0 ||
        secs > INT64_C(100000000000) || secs < -INT64_C(100000000000)) {
        api_error(rs, 400, "bad_request", NULL,
                  "%s must be an RFC 3339 time such as 2026-01-02T00:00:00Z", name);
        return SL_EINVAL;
    }
    *out_ms = secs * 1000;
    return 0;
}

/* POST /api/v1/backfills {"dag_id", "start", "end", "reprocess"?, "max_active_runs"?,
 *   "params"?, "dry_run"?} */
void api_h_backfills_create(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    cJSON *body = NULL;
    if (api_body_object(&body, rq, rs, false) < 0)
        return;
    static const char *const allowed[] = {"dag_id",          "start",  "end",     "reprocess",
                                          "max_active_runs", "params", "dry_run", NULL};
    int64_t *times = NULL;
    size_t n = 0;
    char *params_text = NULL;
    const cJSON *p = NULL;
    cJSON_ArrayForEach(p, body)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = !strcmp(p->string, *a);
        if (!ok) {
            api_error(rs, 400, "bad_request", NULL, "unknown field '%.100s'", p->string);
            goto out;
        }
    }
    const cJSON *dag_id = cJSON_GetObjectItemCaseSensitive(body, "dag_id");
    if (!cJSON_IsString(dag_id)) {
        api_error(rs, 400, "bad_request", NULL, "dag_id must be a string");
        goto out;
    }
    if (!api_check_dag_id(dag_id->valuestring, rs))
        goto out;
    int64_t start_ms, end_ms;
    if (time_field(&start_ms, body, "start", rs) < 0 || time_field(&end_ms, body, "end", rs) < 0)
        goto out;
    if (end_ms < start_ms) {
        api_error(rs, 400, "bad_request", NULL, "end is before start");
        goto out;
    }
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(body, "reprocess");
    const char *reprocess = "none";
    if (rp) {
        if (!cJSON_IsString(rp) ||
            (strcmp(rp->valuestring, "none") && strcmp(rp->valuestring, "failed") &&
             strcmp(rp->valuestring, "all"))) {
            api_error(rs, 400, "bad_request", NULL, "reprocess must be none, failed or all");
            goto out;
        }
        reprocess = rp->valuestring;
    }
    const cJSON *ma = cJSON_GetObjectItemCaseSensitive(body, "max_active_runs");
    if (ma && (!cJSON_IsNumber(ma) || ma->valuedouble < 1 || ma->valuedouble > 1000 ||
               ma->valuedouble != (double)(int)ma->valuedouble)) {
        api_error(rs, 400, "bad_request", NULL,
                  "max_active_runs must be a whole number from 1 "
                  "to 1000");
        goto out;
    }
    const cJSON *dry = cJSON_GetObjectItemCaseSensitive(body, "dry_run");
    if (dry && !cJSON_IsBool(dry)) {
        api_error(rs, 400, "bad_request", NULL, "dry_run must be true or false");
        goto out;
    }
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(body, "params");
    if (params && !cJSON_IsObject(params)) {
        api_error(rs, 400, "bad_request", NULL, "params must be a JSON object");
        goto out;
    }
    struct store_dag d;
    int rc = store_dag_get(c->st, &d, dag_id->valuestring, &rq->mem);
    if (rc < 0) {
        if (rc == SL_ENOENT)
            api_error(rs, 404, "not_found", NULL, "no DAG '%s'", dag_id->valuestring);
        else
            api_store_error(rs, c->st, rc);
        goto out;
    }
    if (!d.current_version_id) {
        api_error(rs, 404, "not_found", NULL, "DAG '%s' has no valid version", d.dag_id);
        goto out;
    }
    const struct dsl_dag *dag = api_model_get(c, d.current_version_id, rs);
    if (!dag)
        goto out;
    cJSON *empty = params ? NULL : cJSON_CreateObject();
    struct strbuf errors = STRBUF_INIT;
    engine_check_params(dag, params ? params : empty, &errors);
    cJSON_Delete(empty);
    if (errors.len) {
        api_error(rs, 422, "invalid_params", NULL, "the params do not match DAG '%s': %s", d.dag_id,
                  errors.buf);
        strbuf_release(&errors);
        goto out;
    }
    strbuf_release(&errors);
    if (ticks(&times, &n, dag, start_ms, end_ms, rs) < 0)
        goto out;
    int64_t max_active = ma ? (int64_t)ma->valuedouble : dag->max_active_runs;
    if (max_active < 1)
        max_active = 1;
    params_text = params ? cJSON_PrintUnformatted(params) : NULL;
    struct store_backfill b = {.id = 0,
                               .dag_id = d.dag_id,
                               .start_ms = start_ms,
                               .end_ms = end_ms,
                               .reprocess = reprocess,
                               .max_active_runs = max_active,
                               .params_json = params_text,
                               .logical_ms = times,
                               .n_logical = n,
                               .state = "dry_run",
                               .created_at_ms = STORE_NO_TIME};
    if (cJSON_IsTrue(dry)) {
        api_json(rs, 200, backfill_json(&b));
        goto out;
    }
    int64_t id = 0;
    rc = store_backfill_create(c->st, &id, d.dag_id, start_ms, end_ms, reprocess, max_active,
                               params_text, times, n);
    if (rc == 0)
        rc = store_backfill_get(c->st, &b, id, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        goto out;
    }
    char loc[64];
    snprintf(loc, sizeof(loc), API_PREFIX "/backfills/%lld", (long long)id);
    api_header(rs, "location", loc);
    api_json(rs, 201, backfill_json(&b));
out:
    free(times);
    free(params_text);
    cJSON_Delete(body);
}

static bool backfill_id(int64_t *out, const struct api_req *rq, struct api_resp *rs)
{
    char *end;
    long long id = strtoll(rq->params[0], &end, 10);
    if (!*rq->params[0] || *end || id <= 0) {
        api_error(rs, 400, "bad_request", NULL, "a backfill id is a positive number");
        return false;
    }
    *out = id;
    return true;
}

/* GET /api/v1/backfills/{backfill_id} */
void api_h_backfill_get(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    int64_t id;
    if (!backfill_id(&id, rq, rs))
        return;
    struct store_backfill b = {0};
    int rc = store_backfill_get(c->st, &b, id, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return;
    }
    api_json(rs, 200, backfill_json(&b));
}

/* POST /api/v1/backfills/{backfill_id}/cancel */
void api_h_backfill_cancel(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    int64_t id;
    if (!backfill_id(&id, rq, rs))
        return;
    bool changed = false;
    int rc = store_backfill_cancel(c->st, &changed, id);
    struct store_backfill b = {0};
    if (rc == 0)
        rc = store_backfill_get(c->st, &b, id, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return;
    }
    if (!changed && (!b.state || strcmp(b.state, "cancelled") != 0)) {
        api_error(rs, 409, "conflict", NULL, "backfill %lld already ended: %s", (long long)id,
                  b.state);
        return;
    }
    api_json(rs, 202, backfill_json(&b));
}
