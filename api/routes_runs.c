/*
 * api/routes_runs.c - runs: trigger, list, one, cancel, retry.
 *
 * Triggering creates a run in state queued through store_run_create(), which makes it
 * idempotent: a repeat of a request (same run_id, same params) returns the run it made
 * (200), a run_id already taken by different params is 409. The scheduler picks new runs
 * up at its next poll (scheduler.poll_interval). Params are checked against the DAG's
 * typed params first, every problem listed in one 422.
 *
 * Retry works in place, as Airflow's "clear" and Argo's "retry" do: the run keeps its
 * run_id, its DAG version and its run directory (so files that steps share through
 * {{ run.dir }} are still there), and its steps that succeeded are kept with their
 * outputs. The steps that did not succeed, the step named by "from", everything
 * downstream of those, and the on_exit steps are reset to pending (their attempt numbers
 * go on from where they were), the params may be replaced, and the run is queued again -
 * all in one transaction (store_run_retry), which the scheduler picks up at its next poll
 * as it does a new run. Of a fan-out step that failed, only the failed items run again,
 * unless its inputs may have changed (it is "from" or downstream of a step that runs
 * again), when all of them do. Only a finished run can be retried (409 otherwise), so the
 * scheduler, which drops a run from memory once it ended, never holds the run while the
 * API resets it.
 */
#include "api/api_int.h"

#include "common/error.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "dsl/dsl.h"
#include "scheduler/engine.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cJSON *run_json(const struct store_run *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "dag_id", r->dag_id);
    cJSON_AddStringToObject(o, "run_id", r->run_id);
    cJSON_AddStringToObject(o, "state", store_run_state_name(r->state));
    cJSON_AddStringToObject(o, "trigger", store_trigger_name(r->trigger));
    api_add_time(o, "logical_time", r->logical_time_ms);
    api_add_raw_json(o, "params", r->params_json ? r->params_json : "{}");
    api_add_raw_json(o, "conf", r->conf_json);
    api_add_str(o, "idempotency_key", r->idempotency_key);
    cJSON_AddNumberToObject(o, "version_id", (double)r->version_id);
    api_add_time(o, "created_at", r->created_at_ms);
    api_add_time(o, "started_at", r->started_at_ms);
    api_add_time(o, "ended_at", r->ended_at_ms);
    if (r->started_at_ms != STORE_NO_TIME && r->ended_at_ms != STORE_NO_TIME)
        cJSON_AddNumberToObject(o, "duration_s",
                                (double)(r->ended_at_ms - r->started_at_ms) / 1000.0);
    else
        cJSON_AddNullToObject(o, "duration_s");
    return o;
}

static void run_location(struct api_resp *rs, const struct store_run *r)
{
    char loc[512];
    snprintf(loc, sizeof(loc), API_PREFIX "/dags/%s/runs/%s", r->dag_id, r->run_id);
    api_header(rs, "location", loc);
}

/* engine_check_params' lines as [{"param": name or null, "message": line}]. */
static cJSON *param_errors(const char *lines)
{
    cJSON *arr = cJSON_CreateArray();
    const char *p = lines;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len) {
            char *line = xstrndup(p, len);
            cJSON *e = cJSON_CreateObject();
            const char *q = strstr(line, "param '");
            const char *qe = q ? strchr(q + 7, '\'') : NULL;
            if (q && qe) {
                char *name = xstrndup(q + 7, (size_t)(qe - q - 7));
                cJSON_AddStringToObject(e, "param", name);
                free(name);
            } else {
                cJSON_AddNullToObject(e, "param");
            }
            cJSON_AddStringToObject(e, "message", line);
            cJSON_AddItemToArray(arr, e);
            free(line);
        }
        p += len;
        if (*p)
            p++;
    }
    return arr;
}

/* Checks params against the version's model; answers 422 with every problem. */
static bool params_valid(struct api_ctx *c, int64_t version_id, const cJSON *params,
                         struct api_resp *rs)
{
    const struct dsl_dag *dag = api_model_get(c, version_id, rs);
    if (!dag)
        return false;
    struct strbuf errors = STRBUF_INIT;
    int rc = engine_check_params(dag, params, &errors);
    if (rc < 0 || errors.len) {
        api_error(rs, 422, "invalid_params", param_errors(errors.buf),
                  "the params do not match DAG '%s'", dag->name);
        strbuf_release(&errors);
        return false;
    }
    strbuf_release(&errors);
    return true;
}

/* Fields of a JSON body other than those allowed: answers 400. */
static bool only_fields(const cJSON *body, const char *const *allowed, struct api_resp *rs)
{
    const cJSON *p = NULL;
    cJSON_ArrayForEach(p, body)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = !strcmp(p->string, *a);
        if (!ok) {
            api_error(rs, 400, "bad_request", NULL, "unknown field '%.100s'", p->string);
            return false;
        }
    }
    return true;
}

/* Reads an optional string field; answers 400 when it is there and not a string. */
static bool opt_string(const char **out, const cJSON *body, const char *name, struct api_resp *rs)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, name);
    *out = NULL;
    if (!v || cJSON_IsNull(v))
        return true;
    if (!cJSON_IsString(v)) {
        api_error(rs, 400, "bad_request", NULL, "%s must be a string", name);
        return false;
    }
    *out = v->valuestring;
    return true;
}

/* POST /api/v1/dags/{dag_id}/runs
 *   {"run_id"?, "params"?: {...}, "logical_time"?: RFC 3339, "idempotency_key"?, "conf"?} */
void api_h_runs_create(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    const char *dag_id = rq->params[0];
    if (!api_check_dag_id(dag_id, rs))
        return;
    cJSON *body = NULL;
    if (api_body_object(&body, rq, rs, true) < 0)
        return;
    static const char *const allowed[] = {"run_id",          "params", "logical_time",
                                          "idempotency_key", "conf",   NULL};
    const char *run_id = NULL, *lt = NULL, *key = NULL;
    cJSON *params = cJSON_GetObjectItemCaseSensitive(body, "params");
    cJSON *conf = cJSON_GetObjectItemCaseSensitive(body, "conf");
    char *params_text = NULL, *conf_text = NULL;
    struct store_dag dag;
    if (!only_fields(body, allowed, rs) || !opt_string(&run_id, body, "run_id", rs) ||
        !opt_string(&lt, body, "logical_time", rs) ||
        !opt_string(&key, body, "idempotency_key", rs))
        goto out;
    if (params && !cJSON_IsNull(params) && !cJSON_IsObject(params)) {
        api_error(rs, 400, "bad_request", NULL, "params must be a JSON object");
        goto out;
    }
    if (run_id && !api_check_run_id(run_id, rs))
        goto out;
    if (run_id && !strncmp(run_id, "scheduled__", 11)) {
        api_error(rs, 400, "bad_request", NULL,
                  "run ids starting with scheduled__ are reserved "
                  "for the scheduler");
        goto out;
    }
    if (key && (!*key || strlen(key) > 250)) {
        api_error(rs, 400, "bad_request", NULL, "idempotency_key must be 1 to 250 bytes");
        goto out;
    }
    int64_t lt_ms = STORE_NO_TIME;
    if (lt) {
        int64_t secs;
        if (sl_time_parse(&secs, lt, NULL) < 0 || secs > INT64_C(100000000000) ||
            secs < -INT64_C(100000000000)) {
            api_error(rs, 400, "bad_request", NULL,
                      "logical_time must be an RFC 3339 time such as 2026-01-02T03:04:05Z");
            goto out;
        }
        lt_ms = secs * 1000;
    }
    int rc = store_dag_get(c->st, &dag, dag_id, &rq->mem);
    if (rc < 0) {
        if (rc == SL_ENOENT)
            api_error(rs, 404, "not_found", NULL, "no DAG '%s'", dag_id);
        else
            api_store_error(rs, c->st, rc);
        goto out;
    }
    if (!dag.current_version_id) {
        api_error(rs, 409, "conflict", NULL, "DAG '%s' has no valid version yet", dag_id);
        goto out;
    }
    if (!dag.is_active) {
        api_error(rs, 409, "conflict", NULL,
                  "DAG '%s' is inactive: its file is gone from the DAG repository", dag_id);
        goto out;
    }
    cJSON *given = params && cJSON_IsObject(params) ? params : NULL;
    cJSON *empty = given ? NULL : cJSON_CreateObject();
    bool ok = params_valid(c, dag.current_version_id, given ? given : empty, rs);
    cJSON_Delete(empty);
    if (!ok)
        goto out;
    params_text = given ? cJSON_PrintUnformatted(given) : NULL;
    conf_text = conf && !cJSON_IsNull(conf) ? cJSON_PrintUnformatted(conf) : NULL;
    struct store_run_new rn = {.dag_id = dag_id,
                               .trigger = STORE_TRIGGER_MANUAL,
                               .logical_time_ms = lt_ms,
                               .run_id = run_id,
                               .idempotency_key = key,
                               .params_json = params_text,
                               .conf_json = conf_text,
                               .version_id = dag.current_version_id};
    struct store_run run;
    bool existed = false;
    rc = store_run_create(c->st, &run, &existed, &rn, &rq->mem);
    if (rc < 0) {
        if (rc == SL_EEXIST)
            api_error(rs, 409, "conflict", NULL,
                      "DAG '%s' already has a run with this %s and other params or logical time",
                      dag_id, run_id ? "run_id" : "idempotency key");
        else
            api_store_error(rs, c->st, rc);
        goto out;
    }
    run_location(rs, &run);
    api_json(rs, existed ? 200 : 201, run_json(&run));
out:
    free(params_text);
    free(conf_text);
    cJSON_Delete(body);
}

static int parse_order(enum store_run_order *out, const char *s)
{
    static const struct {
        const char *name;
        enum store_run_order order;
    } orders[] = {
        {"-id", STORE_RUN_ORDER_ID_DESC},
        {"id", STORE_RUN_ORDER_ID},
        {"-logical_time", STORE_RUN_ORDER_LOGICAL_DESC},
        {"logical_time", STORE_RUN_ORDER_LOGICAL},
        {"-started_at", STORE_RUN_ORDER_START_DESC},
        {"started_at", STORE_RUN_ORDER_START},
    };
    for (size_t i = 0; i < sizeof(orders) / sizeof(orders[0]); i++) {
        if (!strcmp(s, orders[i].name)) {
            *out = orders[i].order;
            return 0;
        }
    }
    return SL_EINVAL;
}

/* GET /api/v1/dags/{dag_id}/runs and GET /api/v1/runs?dag_id=
 *   ?state=a,b&logical_time_gte=&logical_time_lte=&started_at_gte=&started_at_lte=
 *    &ended_at_gte=&ended_at_lte=&order_by=&limit=&offset= */
void api_h_runs_list(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct store_run_filter f = {.order = STORE_RUN_ORDER_ID_DESC};
    f.dag_id = rq->n_params ? rq->params[0] : api_query(rq, "dag_id");
    if (f.dag_id && !api_check_dag_id(f.dag_id, rs))
        return;
    if (api_paging(&f.limit, &f.offset, rq, rs) < 0 ||
        api_query_time(&f.logical_gte, rq, rs, "logical_time_gte") < 0 ||
        api_query_time(&f.logical_lte, rq, rs, "logical_time_lte") < 0 ||
        api_query_time(&f.start_gte, rq, rs, "started_at_gte") < 0 ||
        api_query_time(&f.start_lte, rq, rs, "started_at_lte") < 0 ||
        api_query_time(&f.end_gte, rq, rs, "ended_at_gte") < 0 ||
        api_query_time(&f.end_lte, rq, rs, "ended_at_lte") < 0)
        return;
    const char *order = api_query(rq, "order_by");
    if (order && parse_order(&f.order, order) < 0) {
        api_error(rs, 400, "bad_request", NULL,
                  "order_by must be one of id, -id, logical_time, -logical_time, started_at, "
                  "-started_at");
        return;
    }
    const char *states = api_query(rq, "state");
    if (states) {
        char *copy = arena_strdup(&rq->mem, states), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            enum store_run_state s;
            if (store_run_state_parse(&s, t) < 0) {
                api_error(rs, 400, "bad_request", NULL,
                          "unknown run state '%.60s' (queued, running, succeeded, failed, "
                          "cancelling, cancelled)",
                          t);
                return;
            }
            f.states |= 1u << s;
        }
    }
    if (rq->n_params) { /* a DAG named in the path must exist */
        struct store_dag d;
        int rc = store_dag_get(c->st, &d, f.dag_id, &rq->mem);
        if (rc < 0) {
            if (rc == SL_ENOENT)
                api_error(rs, 404, "not_found", NULL, "no DAG '%s'", f.dag_id);
            else
                api_store_error(rs, c->st, rc);
            return;
        }
    }
    struct store_run *v = NULL;
    size_t n = 0;
    int64_t total = 0;
    int rc = store_runs_query(c->st, &v, &n, &total, &f, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "runs");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, run_json(&v[i]));
    cJSON_AddNumberToObject(doc, "total_entries", (double)total);
    api_json(rs, 200, doc);
}

/* Loads the run named by the path (params 0 and 1), or answers 400/404. */
static int load_run(struct api_ctx *c, struct api_req *rq, struct api_resp *rs,
                    struct store_run *out)
{
    const char *dag_id = rq->params[0], *run_id = rq->params[1];
    if (!api_check_dag_id(dag_id, rs) || !api_check_run_id(run_id, rs))
        return SL_EINVAL;
    int rc = store_run_get(c->st, out, dag_id, run_id, &rq->mem);
    if (rc < 0) {
        if (rc == SL_ENOENT)
            api_error(rs, 404, "not_found", NULL, "DAG '%s' has no run '%s'", dag_id, run_id);
        else
            api_store_error(rs, c->st, rc);
    }
    return rc;
}

/* GET /api/v1/dags/{dag_id}/runs/{run_id} */
void api_h_run_get(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct store_run run;
    if (load_run(c, rq, rs, &run) < 0)
        return;
    api_json(rs, 200, run_json(&run));
}

/* POST /api/v1/dags/{dag_id}/runs/{run_id}/cancel */
void api_h_run_cancel(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct store_run run;
    if (load_run(c, rq, rs, &run) < 0)
        return;
    bool changed = false;
    int rc = store_run_request_cancel(c->st, &changed, run.dag_id, run.run_id);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return;
    }
    if (load_run(c, rq, rs, &run) < 0)
        return;
    if (!changed && run.state != STORE_RUN_CANCELLING) {
        api_error(rs, 409, "conflict", NULL, "run '%s' already ended: %s", run.run_id,
                  store_run_state_name(run.state));
        return;
    }
    api_json(rs, 202, run_json(&run));
}

/* --- retry ------------------------------------------------------------------------------ */

static long main_step_index(const struct dsl_dag *dag, const char *name)
{
    for (size_t i = 0; i < dag->n_steps; i++)
        if (!strcmp(dag->steps[i].name, name))
            return (long)i;
    return -1;
}

/* POST /api/v1/dags/{dag_id}/runs/{run_id}/retry  {"from"?: step, "params"?: {...}} */
void api_h_run_retry(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct store_run run;
    if (load_run(c, rq, rs, &run) < 0)
        return;
    cJSON *body = NULL;
    if (api_body_object(&body, rq, rs, true) < 0)
        return;
    static const char *const allowed[] = {"from", "params", NULL};
    const char *from = NULL;
    cJSON *merged = NULL;
    char *params_text = NULL;
    bool *rerun = NULL, *rerun_all = NULL;
    struct store_step_write *w = NULL;
    if (!only_fields(body, allowed, rs) || !opt_string(&from, body, "from", rs))
        goto out;
    cJSON *given = cJSON_GetObjectItemCaseSensitive(body, "params");
    if (given && !cJSON_IsNull(given) && !cJSON_IsObject(given)) {
        api_error(rs, 400, "bad_request", NULL, "params must be a JSON object");
        goto out;
    }
    if (run.state == STORE_RUN_QUEUED || run.state == STORE_RUN_RUNNING ||
        run.state == STORE_RUN_CANCELLING) {
        api_error(rs, 409, "conflict", NULL,
                  "run '%s' is still %s: retry it once it has ended, or cancel it first",
                  run.run_id, store_run_state_name(run.state));
        goto out;
    }
    const struct dsl_dag *dag = api_model_get(c, run.version_id, rs);
    if (!dag)
        goto out;
    long from_i = -1;
    if (from) {
        from_i = main_step_index(dag, from);
        if (from_i < 0) {
            api_error(rs, 400, "bad_request", NULL, "DAG '%s' has no step '%.100s'", run.dag_id,
                      from);
            goto out;
        }
    }
    /* the params: the run's, with the given ones on top */
    if (given && cJSON_IsObject(given)) {
        merged = run.params_json ? cJSON_Parse(run.params_json) : NULL;
        if (!merged)
            merged = cJSON_CreateObject();
        const cJSON *p = NULL;
        cJSON_ArrayForEach(p, given)
        {
            cJSON_DeleteItemFromObjectCaseSensitive(merged, p->string);
            cJSON_AddItemToObject(merged, p->string, cJSON_Duplicate(p, 1));
        }
        if (!params_valid(c, run.version_id, merged, rs))
            goto out;
        params_text = cJSON_PrintUnformatted(merged);
    }

    struct store_step_instance *rows = NULL;
    size_t n_rows = 0;
    int rc = store_steps_of_run(c->st, &rows, &n_rows, run.id, 0, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        goto out;
    }
    /* which main steps run again: those that did not succeed, the one named by from, and
     * everything downstream; rerun_all marks those whose inputs may change (from, or an
     * upstream step runs again), whose fan-out items all run again */
    rerun = xcalloc(dag->n_steps + 1, sizeof(*rerun));
    rerun_all = xcalloc(dag->n_steps + 1, sizeof(*rerun_all));
    for (size_t i = 0; i < dag->n_steps; i++) {
        bool succeeded = false;
        for (size_t r = 0; r < n_rows; r++)
            if (rows[r].map_index < 0 && !strcmp(rows[r].step, dag->steps[i].name))
                succeeded = rows[r].state == STORE_STEP_SUCCEEDED;
        rerun[i] = !succeeded;
    }
    if (from_i >= 0)
        rerun[from_i] = rerun_all[from_i] = true;
    for (size_t t = 0; t < dag->n_steps; t++) {
        size_t i = dag->topo[t];
        const struct dsl_step *st = &dag->steps[i];
        for (size_t d = 0; d < st->n_depends_on; d++) {
            long up = main_step_index(dag, st->depends_on[d]);
            if (up >= 0 && rerun[up])
                rerun[i] = rerun_all[i] = true;
        }
    }
    size_t n_rerun = 0;
    for (size_t i = 0; i < dag->n_steps; i++)
        n_rerun += rerun[i];
    if (!n_rerun) {
        api_error(rs, 409, "conflict", NULL,
                  "every step of run '%s' succeeded: name a step with \"from\" to run it and "
                  "what follows again",
                  run.run_id);
        goto out;
    }
    /* the rows to reset: rerun main steps (fan-out items: the failed ones, or all when
     * rerun_all), and every on_exit step, which runs again at the end */
    char *reason = arena_sprintf(&rq->mem, "retry requested (token %lld)", (long long)rq->token_id);
    w = xcalloc(n_rows + 1, sizeof(*w));
    size_t n_w = 0;
    for (size_t r = 0; r < n_rows; r++) {
        const struct store_step_instance *si = &rows[r];
        long i = main_step_index(dag, si->step);
        bool on_exit = i < 0;
        if (!on_exit && !rerun[i])
            continue;
        bool expanded = false;
        for (size_t k = 0; k < n_rows && si->map_index < 0; k++)
            expanded |= rows[k].map_index >= 0 && !strcmp(rows[k].step, si->step);
        enum store_step_state to = STORE_STEP_PENDING;
        if (si->map_index >= 0) {
            if (!on_exit && !rerun_all[i] && si->state == STORE_STEP_SUCCEEDED)
                continue; /* a good item of a fan-out whose inputs did not change */
        } else if (expanded && !on_exit) {
            to = STORE_STEP_RUNNING; /* the placeholder of a fan-out whose items run */
        }
        if (si->state == to)
            continue;
        struct store_step_write *x = &w[n_w++];
        x->step = si->step;
        x->map_index = si->map_index;
        x->state = to;
        x->attempt = si->attempt;
        x->queued_at_ms = STORE_NO_TIME;
        x->started_at_ms = to == STORE_STEP_RUNNING ? si->started_at_ms : STORE_NO_TIME;
        x->ended_at_ms = STORE_NO_TIME;
        x->next_try_at_ms = STORE_NO_TIME;
        x->exit_code = STORE_NO_EXIT_CODE;
        x->reason = NULL;
        x->item_json = si->item_json;
        x->from_state = si->state;
        x->to_state = to;
        x->event_reason = reason;
        x->event_at_ms = STORE_NO_TIME;
        if (si->attempt > 0)
            x->attempt_id = arena_sprintf(&rq->mem, "%s.%s.%s.%d.%d", run.dag_id, run.run_id,
                                          si->step, si->map_index, si->attempt);
    }
    rc = store_run_retry(c->st, run.id, params_text, w, n_w);
    if (rc < 0) {
        if (rc == SL_ECONFLICT)
            api_error(rs, 409, "conflict", NULL, "run '%s' is active again: %s", run.run_id,
                      store_errmsg(c->st));
        else
            api_store_error(rs, c->st, rc);
        goto out;
    }
    if (load_run(c, rq, rs, &run) < 0)
        goto out;
    cJSON *doc = run_json(&run);
    cJSON *reused = cJSON_AddArrayToObject(doc, "reused_steps");
    cJSON *again = cJSON_AddArrayToObject(doc, "rerun_steps");
    for (size_t i = 0; i < dag->n_steps; i++)
        cJSON_AddItemToArray(rerun[i] ? again : reused, cJSON_CreateString(dag->steps[i].name));
    api_json(rs, 202, doc);
out:
    free(w);
    free(rerun);
    free(rerun_all);
    free(params_text);
    cJSON_Delete(merged);
    cJSON_Delete(body);
}
