/*
 * api/routes_dags.c - DAGs: list, one, pause, versions, source.
 *
 * A DAG's view joins its row, its current version (schedule, tags, params come from the
 * version's model) and its newest run. next_run_time is the cron ticker's own answer
 * (scheduler/ticker.h) for the facts as they are now, so the API and the scheduler never
 * disagree on it: null for a paused, inactive or unscheduled DAG.
 */
#include "api/api_int.h"

#include "common/error.h"
#include "common/timeutil.h"
#include "common/tz.h"
#include "dsl/dsl.h"
#include "scheduler/ticker.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cJSON *dag_json(const struct store_dag_info *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "dag_id", d->dag.dag_id);
    api_add_str(o, "description", d->description);
    api_add_raw_json(o, "tags", d->tags_json ? d->tags_json : "[]");
    api_add_str(o, "schedule", d->schedule);
    cJSON_AddBoolToObject(o, "is_paused", d->dag.is_paused);
    cJSON_AddBoolToObject(o, "is_active", d->dag.is_active);
    api_add_str(o, "file_path", d->dag.file_path);
    if (d->dag.current_version_id) {
        cJSON *v = cJSON_AddObjectToObject(o, "current_version");
        cJSON_AddNumberToObject(v, "id", (double)d->dag.current_version_id);
        api_add_str(v, "content_hash", d->content_hash);
        api_add_str(v, "commit_sha", d->commit_sha);
    } else {
        cJSON_AddNullToObject(o, "current_version");
    }
    if (d->last_run_id) {
        cJSON *r = cJSON_AddObjectToObject(o, "last_run");
        cJSON_AddStringToObject(r, "run_id", d->last_run_id);
        api_add_str(r, "state", d->last_run_state);
        api_add_time(r, "logical_time", d->last_run_logical_ms);
    } else {
        cJSON_AddNullToObject(o, "last_run");
    }
    cJSON_AddNumberToObject(o, "active_runs", (double)d->active_runs);
    api_add_time(o, "created_at", d->dag.created_at_ms);
    api_add_time(o, "updated_at", d->dag.updated_at_ms);
    api_add_time(o, "last_parsed_at", d->dag.last_parsed_at_ms);
    return o;
}

static int parse_bool(int *out, const char *s)
{
    if (!strcmp(s, "true") || !strcmp(s, "1")) {
        *out = 1;
        return 0;
    }
    if (!strcmp(s, "false") || !strcmp(s, "0")) {
        *out = 0;
        return 0;
    }
    return SL_EINVAL;
}

/* GET /api/v1/dags?tag=&paused=&search=&include_inactive=&limit=&offset= */
void api_h_dags_list(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct store_dag_filter f = {.paused = -1};
    if (api_paging(&f.limit, &f.offset, rq, rs) < 0)
        return;
    f.tag = api_query(rq, "tag");
    f.search = api_query(rq, "search");
    const char *paused = api_query(rq, "paused"), *inactive = api_query(rq, "include_inactive");
    if (paused && parse_bool(&f.paused, paused) < 0) {
        api_error(rs, 400, "bad_request", NULL, "paused must be true or false");
        return;
    }
    int inc = 0;
    if (inactive && parse_bool(&inc, inactive) < 0) {
        api_error(rs, 400, "bad_request", NULL, "include_inactive must be true or false");
        return;
    }
    f.include_inactive = inc;
    struct store_dag_info *v = NULL;
    size_t n = 0;
    int64_t total = 0;
    int rc = store_dags_query(c->st, &v, &n, &total, &f, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "dags");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, dag_json(&v[i]));
    cJSON_AddNumberToObject(doc, "total_entries", (double)total);
    api_json(rs, 200, doc);
}

/* Loads one DAG's info, or answers 404. */
static int load_dag(struct api_ctx *c, struct api_req *rq, struct api_resp *rs,
                    struct store_dag_info *out)
{
    const char *dag_id = rq->params[0];
    if (!api_check_dag_id(dag_id, rs))
        return SL_EINVAL;
    struct store_dag_filter f = {
        .dag_id = dag_id, .paused = -1, .include_inactive = true, .limit = 1};
    struct store_dag_info *v = NULL;
    size_t n = 0;
    int64_t total = 0;
    int rc = store_dags_query(c->st, &v, &n, &total, &f, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return rc;
    }
    if (n == 0) {
        api_error(rs, 404, "not_found", NULL, "no DAG '%s'", dag_id);
        return SL_ENOENT;
    }
    *out = v[0];
    return 0;
}

/* When the scheduler will create the DAG's next scheduled run, or STORE_NO_TIME. */
static int64_t next_run_time(struct api_ctx *c, const struct store_dag_info *d, struct api_resp *rs)
{
    if (!d->schedule || !d->dag.current_version_id || d->dag.is_paused || !d->dag.is_active)
        return STORE_NO_TIME;
    const struct dsl_dag *dag = api_model_get(c, d->dag.current_version_id, rs);
    if (!dag)
        return STORE_NO_TIME;
    struct sl_tz *tz = NULL;
    if (dag->timezone && strcmp(dag->timezone, "UTC") && sl_tz_load(&tz, dag->timezone) < 0)
        return STORE_NO_TIME;
    struct ticker_dag_state ts = {
        .last_logical_ms =
            d->dag.last_scheduled_ms == STORE_NO_TIME ? INT64_MIN : d->dag.last_scheduled_ms,
        .active_runs = (size_t)d->active_runs,
        .paused = false,
        .active = true,
    };
    struct ticker_decision dec;
    int64_t now = sl_wall_ms(), next = STORE_NO_TIME;
    if (ticker_decide(&dec, dag, tz, &ts, now, 1) == 0) {
        if (dec.n_create)
            next = dec.create_logical_ms[0];
        else if (dec.next_wakeup_ms != INT64_MAX)
            next = dec.next_wakeup_ms;
        ticker_decision_release(&dec);
    }
    sl_tz_free(tz);
    return next;
}

/* GET /api/v1/dags/{dag_id} */
void api_h_dag_get(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct store_dag_info d;
    if (load_dag(c, rq, rs, &d) < 0)
        return;
    cJSON *o = dag_json(&d);
    int64_t next = next_run_time(c, &d, rs);
    if (rs->status) { /* the model could not be loaded */
        cJSON_Delete(o);
        return;
    }
    api_add_time(o, "next_run_time", next);
    api_add_raw_json(o, "params", d.params_json ? d.params_json : "{}");
    api_json(rs, 200, o);
}

/* PATCH /api/v1/dags/{dag_id}  {"is_paused": bool} */
void api_h_dag_patch(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    const char *dag_id = rq->params[0];
    if (!api_check_dag_id(dag_id, rs))
        return;
    cJSON *body = NULL;
    if (api_body_object(&body, rq, rs, false) < 0)
        return;
    cJSON *p = NULL;
    cJSON_ArrayForEach(p, body)
    {
        if (strcmp(p->string, "is_paused") != 0) {
            api_error(rs, 400, "bad_request", NULL,
                      "unknown field '%.100s': only is_paused can be changed", p->string);
            cJSON_Delete(body);
            return;
        }
    }
    cJSON *paused = cJSON_GetObjectItemCaseSensitive(body, "is_paused");
    if (!cJSON_IsBool(paused)) {
        api_error(rs, 400, "bad_request", NULL, "is_paused must be true or false");
        cJSON_Delete(body);
        return;
    }
    int rc = store_dag_set_paused(c->st, dag_id, cJSON_IsTrue(paused));
    cJSON_Delete(body);
    if (rc < 0) {
        if (rc == SL_ENOENT)
            api_error(rs, 404, "not_found", NULL, "no DAG '%s'", dag_id);
        else
            api_store_error(rs, c->st, rc);
        return;
    }
    struct store_dag_info d;
    if (load_dag(c, rq, rs, &d) < 0)
        return;
    api_json(rs, 200, dag_json(&d));
}

/* GET /api/v1/dags/{dag_id}/versions?limit=&offset= */
void api_h_dag_versions(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct store_dag_info d;
    int64_t limit, offset;
    if (api_paging(&limit, &offset, rq, rs) < 0 || load_dag(c, rq, rs, &d) < 0)
        return;
    struct store_dag_version *v = NULL;
    size_t n = 0;
    int64_t total = 0;
    int rc = store_dag_versions_list(c->st, &v, &n, &total, d.dag.dag_id, limit, offset, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "versions");
    for (size_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", (double)v[i].id);
        cJSON_AddStringToObject(o, "content_hash", v[i].content_hash);
        api_add_str(o, "commit_sha", v[i].commit_sha);
        api_add_str(o, "file_path", v[i].file_path);
        api_add_time(o, "created_at", v[i].created_at_ms);
        cJSON_AddBoolToObject(o, "is_current", v[i].id == d.dag.current_version_id);
        cJSON_AddItemToArray(arr, o);
    }
    cJSON_AddNumberToObject(doc, "total_entries", (double)total);
    api_json(rs, 200, doc);
}

/* GET /api/v1/dags/{dag_id}/source?version_id= : the file's text, as text/yaml */
void api_h_dag_source(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct store_dag_info d;
    if (load_dag(c, rq, rs, &d) < 0)
        return;
    int64_t version = d.dag.current_version_id;
    const char *vq = api_query(rq, "version_id");
    if (vq) {
        char *end;
        long long v = strtoll(vq, &end, 10);
        if (!*vq || *end || v <= 0) {
            api_error(rs, 400, "bad_request", NULL, "version_id must be a positive number");
            return;
        }
        version = v;
    }
    if (!version) {
        api_error(rs, 404, "not_found", NULL, "DAG '%s' has no version yet", d.dag.dag_id);
        return;
    }
    struct store_dag_version v;
    int rc = store_dag_version_get(c->st, &v, version, &rq->mem);
    if (rc == 0 && strcmp(v.dag_id, d.dag.dag_id) != 0)
        rc = SL_ENOENT; /* another DAG's version: never shown through this one */
    if (rc < 0) {
        if (rc == SL_ENOENT)
            api_error(rs, 404, "not_found", NULL, "DAG '%s' has no version %lld", d.dag.dag_id,
                      (long long)version);
        else
            api_store_error(rs, c->st, rc);
        return;
    }
    strbuf_reset(&rs->body);
    strbuf_addstr(&rs->body, v.source ? v.source : "");
    rs->status = 200;
    rs->content_type = "text/yaml; charset=utf-8";
    char hdr[32];
    snprintf(hdr, sizeof(hdr), "%lld", (long long)v.id);
    api_header(rs, "x-sluice-version-id", hdr);
}
