/*
 * api/routes_misc.c - health, metrics, the OpenAPI document, import errors, the push
 * webhook, sync requests and tokens.
 *
 * Health answers 200 when the API can do its work (PostgreSQL answers) and 503 when it
 * cannot; Redis, the last DAG sync and the scheduler's heartbeat are reported with their
 * own status ("ok", "error", "stale", "unknown") without failing the check, because the
 * API serves reads and triggers without them. A key the scheduler has not written yet is
 * "unknown", never an error.
 *
 * The push webhook never syncs by itself: it records a request (scheduler_state key
 * "dags_sync_request") that the scheduler acts on, so a burst of pushes costs one sync
 * and the API needs no Git access. GitHub's X-Hub-Signature-256 is checked over the raw
 * body as received; GitLab's X-Gitlab-Token is compared with the same secret. Both
 * comparisons are constant-time.
 */
#include "api/api_int.h"

#include "common/error.h"
#include "common/timeutil.h"
#include "queue/queue.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* This thread's Redis connection, opened on first use; NULL (and a reason) if Redis is
 * down. */
static struct queue *redis(struct api_ctx *c, char *why, size_t len)
{
    if (!c->q) {
        struct queue_options o = {
            .connect_timeout_ms = 1000, .command_timeout_ms = 2000, .backoff_max_ms = 500};
        int rc = queue_open(&c->q, api_server_redis_url(c->srv), &o);
        if (rc < 0) {
            c->q = NULL;
            snprintf(why, len, "cannot connect: %s", sl_strerror(rc));
            return NULL;
        }
    }
    return c->q;
}

/* GET /api/v1/health */
void api_h_health(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    cJSON *doc = cJSON_CreateObject();
    int64_t now = sl_wall_ms();
    bool db_ok = true;

    cJSON *db = cJSON_AddObjectToObject(doc, "database");
    int version = 0;
    int rc = store_schema_version(c->st, &version);
    if (rc < 0) {
        db_ok = false;
        cJSON_AddStringToObject(db, "status", "error");
        cJSON_AddStringToObject(db, "message", store_errmsg(c->st));
    } else {
        cJSON_AddStringToObject(db, "status", "ok");
        cJSON_AddNumberToObject(db, "schema_version", version);
    }

    cJSON *rd = cJSON_AddObjectToObject(doc, "redis");
    char why[200] = "";
    struct queue *q = redis(c, why, sizeof(why));
    if (q && (rc = queue_ping(q)) < 0)
        snprintf(why, sizeof(why), "ping failed: %s", sl_strerror(rc));
    if (!q || rc < 0) {
        cJSON_AddStringToObject(rd, "status", "error");
        cJSON_AddStringToObject(rd, "message", why);
    } else {
        cJSON_AddStringToObject(rd, "status", "ok");
    }

    cJSON *sync = cJSON_AddObjectToObject(doc, "dags_sync");
    cJSON *sched = cJSON_AddObjectToObject(doc, "scheduler");
    if (db_ok) {
        const char *json = NULL;
        int64_t updated = 0;
        rc = store_state_get(c->st, &json, &updated, "dags_sync", &rq->mem);
        cJSON *last = rc == 0 ? cJSON_Parse(json) : NULL;
        if (!last) {
            cJSON_AddStringToObject(sync, "status", "unknown");
        } else {
            cJSON *ok = cJSON_GetObjectItemCaseSensitive(last, "ok");
            cJSON_AddStringToObject(sync, "status", cJSON_IsFalse(ok) ? "error" : "ok");
            cJSON_AddItemToObject(sync, "last", last);
        }
        rc = store_state_get(c->st, &json, &updated, "scheduler", &rq->mem);
        cJSON *beat = rc == 0 ? cJSON_Parse(json) : NULL;
        if (!beat) {
            cJSON_AddStringToObject(sched, "status", "unknown");
        } else {
            cJSON *at = cJSON_GetObjectItemCaseSensitive(beat, "at_ms");
            int64_t at_ms = cJSON_IsNumber(at) ? (int64_t)at->valuedouble : updated;
            bool stale = now - at_ms > api_server_scheduler_stale_ms(c->srv);
            cJSON_AddStringToObject(sched, "status", stale ? "stale" : "ok");
            cJSON *id = cJSON_GetObjectItemCaseSensitive(beat, "id");
            api_add_str(sched, "id", cJSON_IsString(id) ? id->valuestring : NULL);
            api_add_time(sched, "last_heartbeat", at_ms);
            cJSON_AddNumberToObject(sched, "age_s", (double)(now - at_ms) / 1000.0);
            cJSON_Delete(beat);
        }
    } else {
        cJSON_AddStringToObject(sync, "status", "unknown");
        cJSON_AddStringToObject(sched, "status", "unknown");
    }
    cJSON_AddStringToObject(doc, "status", db_ok ? "ok" : "error");
    cJSON_AddNumberToObject(doc, "uptime_s",
                            (double)(now - api_server_started_ms(c->srv)) / 1000.0);
    api_json(rs, db_ok ? 200 : 503, doc);
}

/* Latency buckets of the dispatch histogram, seconds. */
static const double dispatch_bounds[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
#define N_DISPATCH (sizeof(dispatch_bounds) / sizeof(dispatch_bounds[0]))

static void add_label_value(struct strbuf *out, const char *s)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\' || *p == '"')
            strbuf_addch(out, '\\');
        if (*p == '\n') {
            strbuf_addstr(out, "\\n");
            continue;
        }
        strbuf_addch(out, *p);
    }
}

/* The scheduler's last DAG sync ("dags_sync", written by scheduler/dagsync.c). */
static void sync_metrics(struct strbuf *out, const char *json)
{
    cJSON *s = cJSON_Parse(json);
    if (!s)
        return;
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(s, "ok");
    const cJSON *failures = cJSON_GetObjectItemCaseSensitive(s, "failures");
    const cJSON *last_ok = cJSON_GetObjectItemCaseSensitive(s, "last_ok_ms");
    const cJSON *duration = cJSON_GetObjectItemCaseSensitive(s, "duration_ms");
    const cJSON *invalid = cJSON_GetObjectItemCaseSensitive(s, "invalid");
    strbuf_addf(out,
                "# HELP sluice_dags_sync_ok Whether the scheduler's last DAG sync succeeded.\n"
                "# TYPE sluice_dags_sync_ok gauge\n"
                "sluice_dags_sync_ok %d\n"
                "# HELP sluice_dags_sync_failures DAG syncs failed in a row.\n"
                "# TYPE sluice_dags_sync_failures gauge\n"
                "sluice_dags_sync_failures %d\n",
                cJSON_IsTrue(ok) ? 1 : 0, cJSON_IsNumber(failures) ? failures->valueint : 0);
    if (cJSON_IsNumber(last_ok))
        strbuf_addf(out,
                    "# HELP sluice_dags_sync_last_success_timestamp_seconds When the last DAG "
                    "sync succeeded.\n"
                    "# TYPE sluice_dags_sync_last_success_timestamp_seconds gauge\n"
                    "sluice_dags_sync_last_success_timestamp_seconds %.3f\n",
                    last_ok->valuedouble / 1000.0);
    if (cJSON_IsNumber(duration))
        strbuf_addf(out,
                    "# HELP sluice_dags_sync_duration_seconds Duration of the last DAG sync.\n"
                    "# TYPE sluice_dags_sync_duration_seconds gauge\n"
                    "sluice_dags_sync_duration_seconds %.3f\n",
                    duration->valuedouble / 1000.0);
    if (cJSON_IsNumber(invalid))
        strbuf_addf(out,
                    "# HELP sluice_dags_import_errors DAG files that failed to parse at the last "
                    "successful sync.\n"
                    "# TYPE sluice_dags_import_errors gauge\n"
                    "sluice_dags_import_errors %d\n",
                    invalid->valueint);
    cJSON_Delete(s);
}

static void queue_metrics(struct api_ctx *c, struct strbuf *out)
{
    char why[200];
    struct queue *q = redis(c, why, sizeof(why));
    strbuf_addstr(out, "# HELP sluice_redis_up Whether Redis answered this scrape.\n"
                       "# TYPE sluice_redis_up gauge\n");
    if (!q || queue_ping(q) < 0) {
        strbuf_addstr(out, "sluice_redis_up 0\n");
        return;
    }
    strbuf_addstr(out, "sluice_redis_up 1\n");
    /* the queues: "default" and every queue a worker serves */
    const char *names[64];
    size_t n = 0;
    names[n++] = "default";
    struct queue_workers w = {0};
    bool have_workers = queue_list_workers(&w, q) == 0;
    for (size_t i = 0; have_workers && i < w.n && n < 64; i++) {
        cJSON *qn =
            w.items[i].info ? cJSON_GetObjectItemCaseSensitive(w.items[i].info, "queue") : NULL;
        if (!qn || !cJSON_IsString(qn))
            continue;
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++)
            seen = !strcmp(names[k], qn->valuestring);
        if (!seen)
            names[n++] = qn->valuestring;
    }
    strbuf_addstr(out, "# HELP sluice_queue_depth Steps waiting in a queue, not yet taken by a "
                       "worker.\n# TYPE sluice_queue_depth gauge\n");
    struct strbuf pending = STRBUF_INIT;
    strbuf_addstr(&pending, "# HELP sluice_queue_pending Steps taken by a worker and not yet "
                            "finished.\n# TYPE sluice_queue_pending gauge\n");
    for (size_t i = 0; i < n; i++) {
        struct queue_stats qs;
        if (queue_step_stats(&qs, q, names[i]) < 0)
            continue;
        strbuf_addstr(out, "sluice_queue_depth{queue=\"");
        add_label_value(out, names[i]);
        strbuf_addf(out, "\"} %lld\n", (long long)qs.waiting);
        strbuf_addstr(&pending, "sluice_queue_pending{queue=\"");
        add_label_value(&pending, names[i]);
        strbuf_addf(&pending, "\"} %lld\n", (long long)qs.pending);
    }
    strbuf_add(out, pending.buf, pending.len);
    strbuf_release(&pending);
    struct queue_stats es;
    if (queue_event_stats(&es, q) == 0)
        strbuf_addf(out,
                    "# HELP sluice_events_waiting Worker events the scheduler has not read.\n"
                    "# TYPE sluice_events_waiting gauge\nsluice_events_waiting %lld\n",
                    (long long)es.waiting);
    int alive = 0;
    for (size_t i = 0; have_workers && i < w.n; i++)
        alive += w.items[i].alive;
    strbuf_addf(out,
                "# HELP sluice_workers_alive Workers whose heartbeat is current.\n"
                "# TYPE sluice_workers_alive gauge\nsluice_workers_alive %d\n",
                alive);
    if (have_workers)
        queue_workers_release(&w);
}

/* GET /api/v1/metrics (Prometheus text format 0.0.4) */
void api_h_metrics(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct strbuf *out = &rs->body;
    strbuf_reset(out);
    struct store_state_count *v = NULL;
    size_t n = 0;
    bool db_ok = store_run_state_counts(c->st, &v, &n, &rq->mem) == 0;
    strbuf_addf(out,
                "# HELP sluice_database_up Whether PostgreSQL answered this scrape.\n"
                "# TYPE sluice_database_up gauge\nsluice_database_up %d\n",
                db_ok);
    if (db_ok) {
        strbuf_addstr(out, "# HELP sluice_runs Runs by DAG and state.\n"
                           "# TYPE sluice_runs gauge\n");
        for (size_t i = 0; i < n; i++) {
            strbuf_addstr(out, "sluice_runs{dag=\"");
            add_label_value(out, v[i].label);
            strbuf_addf(out, "\",state=\"%s\"} %lld\n", v[i].state, (long long)v[i].n);
        }
    }
    if (db_ok && store_step_state_counts(c->st, &v, &n, &rq->mem) == 0) {
        strbuf_addstr(out, "# HELP sluice_step_instances Step instances by state.\n"
                           "# TYPE sluice_step_instances gauge\n");
        for (size_t i = 0; i < n; i++)
            strbuf_addf(out, "sluice_step_instances{state=\"%s\"} %lld\n", v[i].state,
                        (long long)v[i].n);
    }
    uint64_t counts[N_DISPATCH + 1];
    double sum = 0;
    if (db_ok && store_dispatch_latency(c->st, counts, &sum, dispatch_bounds, N_DISPATCH) == 0) {
        strbuf_addstr(out, "# HELP sluice_dispatch_latency_seconds Time from an attempt being "
                           "queued to a worker starting it.\n"
                           "# TYPE sluice_dispatch_latency_seconds histogram\n");
        for (size_t i = 0; i < N_DISPATCH; i++)
            strbuf_addf(out, "sluice_dispatch_latency_seconds_bucket{le=\"%g\"} %llu\n",
                        dispatch_bounds[i], (unsigned long long)counts[i]);
        strbuf_addf(out, "sluice_dispatch_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
                    (unsigned long long)counts[N_DISPATCH]);
        strbuf_addf(out, "sluice_dispatch_latency_seconds_sum %.6f\n", sum);
        strbuf_addf(out, "sluice_dispatch_latency_seconds_count %llu\n",
                    (unsigned long long)counts[N_DISPATCH]);
    }
    const char *json = NULL;
    int64_t updated = 0;
    if (db_ok && store_state_get(c->st, &json, &updated, "scheduler", &rq->mem) == 0) {
        cJSON *beat = cJSON_Parse(json);
        cJSON *at = cJSON_GetObjectItemCaseSensitive(beat, "at_ms");
        int64_t at_ms = cJSON_IsNumber(at) ? (int64_t)at->valuedouble : updated;
        strbuf_addf(out,
                    "# HELP sluice_scheduler_heartbeat_age_seconds Time since the leading "
                    "scheduler's last heartbeat.\n"
                    "# TYPE sluice_scheduler_heartbeat_age_seconds gauge\n"
                    "sluice_scheduler_heartbeat_age_seconds %.3f\n",
                    (double)(sl_wall_ms() - at_ms) / 1000.0);
        /* the scheduler's loop time, when its heartbeat carries it */
        cJSON *loop = cJSON_GetObjectItemCaseSensitive(beat, "loop_ms");
        if (cJSON_IsNumber(loop))
            strbuf_addf(out,
                        "# HELP sluice_scheduler_loop_seconds Duration of the leading "
                        "scheduler's last loop iteration.\n"
                        "# TYPE sluice_scheduler_loop_seconds gauge\n"
                        "sluice_scheduler_loop_seconds %.6f\n",
                        loop->valuedouble / 1000.0);
        cJSON *loop_max = cJSON_GetObjectItemCaseSensitive(beat, "loop_max_ms");
        if (cJSON_IsNumber(loop_max))
            strbuf_addf(out,
                        "# HELP sluice_scheduler_loop_max_seconds Longest loop iteration of "
                        "the leading scheduler since its previous heartbeat.\n"
                        "# TYPE sluice_scheduler_loop_max_seconds gauge\n"
                        "sluice_scheduler_loop_max_seconds %.6f\n",
                        loop_max->valuedouble / 1000.0);
        cJSON_Delete(beat);
    }
    if (db_ok && store_state_get(c->st, &json, &updated, "dags_sync", &rq->mem) == 0)
        sync_metrics(out, json);
    queue_metrics(c, out);
    api_server_metrics(c->srv, out);
    rs->status = 200;
    rs->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

/* GET /api/v1/openapi.json */
void api_h_openapi(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    (void)c;
    (void)rq;
    strbuf_reset(&rs->body);
    strbuf_addstr(&rs->body, api_openapi_json());
    rs->status = 200;
}

/* GET /api/v1/import-errors */
void api_h_import_errors(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct store_import_error *v = NULL;
    size_t n = 0;
    int rc = store_import_errors_list(c->st, &v, &n, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "import_errors");
    for (size_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file_path", v[i].file_path);
        api_add_str(o, "commit_sha", v[i].commit_sha);
        api_add_raw_json(o, "errors", v[i].errors_json);
        api_add_time(o, "first_seen", v[i].first_seen_ms);
        api_add_time(o, "last_seen", v[i].last_seen_ms);
        cJSON_AddItemToArray(arr, o);
    }
    cJSON_AddNumberToObject(doc, "total_entries", (double)n);
    api_json(rs, 200, doc);
}

/* Records a sync request for the scheduler; answers 202. */
static void request_sync(struct api_ctx *c, struct api_resp *rs, const char *by)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "by", by);
    cJSON_AddNumberToObject(doc, "at_ms", (double)sl_wall_ms());
    char *json = cJSON_PrintUnformatted(doc);
    int rc = store_state_put(c->st, "dags_sync_request", json);
    free(json);
    if (rc < 0) {
        cJSON_Delete(doc);
        api_store_error(rs, c->st, rc);
        return;
    }
    cJSON_AddBoolToObject(doc, "accepted", true);
    api_json(rs, 202, doc);
}

/* POST /api/v1/hooks/git (GitHub X-Hub-Signature-256, or GitLab X-Gitlab-Token) */
void api_h_hook_git(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    const char *secret = api_server_webhook_secret(c->srv);
    if (!secret) {
        api_error(rs, 404, "not_found", NULL,
                  "the push webhook is off: set api.webhook_secret to turn it on");
        return;
    }
    const char *by;
    if (rq->hub_signature) {
        if (!api_webhook_github_valid(secret, rq->body, rq->body_len, rq->hub_signature)) {
            api_error(rs, 401, "unauthenticated", NULL,
                      "X-Hub-Signature-256 does not match the body and the webhook secret");
            return;
        }
        by = "webhook:github";
        if (rq->github_event && !strcmp(rq->github_event, "ping")) {
            cJSON *doc = cJSON_CreateObject();
            cJSON_AddStringToObject(doc, "event", "ping");
            cJSON_AddBoolToObject(doc, "accepted", false);
            api_json(rs, 200, doc);
            return;
        }
    } else if (rq->gitlab_token) {
        if (!api_webhook_gitlab_valid(secret, rq->gitlab_token)) {
            api_error(rs, 401, "unauthenticated", NULL,
                      "X-Gitlab-Token does not match the webhook secret");
            return;
        }
        by = "webhook:gitlab";
    } else {
        api_error(rs, 401, "unauthenticated", NULL,
                  "a push webhook needs X-Hub-Signature-256 (GitHub) or X-Gitlab-Token "
                  "(GitLab)");
        return;
    }
    request_sync(c, rs, by);
}

/* POST /api/v1/sync: `sluice dags sync` */
void api_h_dags_sync(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    char by[64];
    snprintf(by, sizeof(by), "api:token %lld", (long long)rq->token_id);
    request_sync(c, rs, by);
}

/* --- tokens -------------------------------------------------------------------------------- */

static cJSON *token_json(const struct store_token *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)t->id);
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON_AddStringToObject(o, "role", t->role);
    api_add_time(o, "created_at", t->created_at_ms);
    api_add_time(o, "revoked_at", t->revoked_at_ms);
    api_add_time(o, "last_used_at", t->last_used_at_ms);
    return o;
}

/* GET /api/v1/tokens */
void api_h_tokens_list(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct store_token *v = NULL;
    size_t n = 0;
    int rc = store_tokens_list(c->st, &v, &n, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "tokens");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, token_json(&v[i]));
    cJSON_AddNumberToObject(doc, "total_entries", (double)n);
    api_json(rs, 200, doc);
}

/* POST /api/v1/tokens {"role": "viewer|operator|admin", "name"?} */
void api_h_tokens_create(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    cJSON *body = NULL;
    if (api_body_object(&body, rq, rs, false) < 0)
        return;
    const cJSON *p = NULL;
    cJSON_ArrayForEach(p, body)
    {
        if (strcmp(p->string, "role") && strcmp(p->string, "name")) {
            api_error(rs, 400, "bad_request", NULL, "unknown field '%.100s'", p->string);
            cJSON_Delete(body);
            return;
        }
    }
    cJSON *role = cJSON_GetObjectItemCaseSensitive(body, "role");
    cJSON *name = cJSON_GetObjectItemCaseSensitive(body, "name");
    enum api_role r;
    if (!cJSON_IsString(role) || api_role_parse(&r, role->valuestring) < 0) {
        api_error(rs, 400, "bad_request", NULL, "role must be viewer, operator or admin");
        cJSON_Delete(body);
        return;
    }
    if (name && !cJSON_IsNull(name) &&
        (!cJSON_IsString(name) || !*name->valuestring || strlen(name->valuestring) > 200)) {
        api_error(rs, 400, "bad_request", NULL, "name must be a string of 1 to 200 bytes");
        cJSON_Delete(body);
        return;
    }
    char token[API_TOKEN_BUFSZ];
    if (api_token_generate(token) < 0) {
        api_error(rs, 500, "internal", NULL, "no randomness available for a token");
        cJSON_Delete(body);
        return;
    }
    char gen[64];
    const char *nm =
        name && cJSON_IsString(name) ? arena_strdup(&rq->mem, name->valuestring) : NULL;
    if (!nm) {
        snprintf(gen, sizeof(gen), "%s-%.8s", api_role_name(r), token + 4);
        nm = gen;
    }
    unsigned char hash[API_TOKEN_HASH_SZ];
    api_token_hash(hash, token);
    struct store_token t;
    int rc = store_token_create(c->st, &t, nm, api_role_name(r), hash, sizeof(hash), &rq->mem);
    cJSON_Delete(body);
    if (rc < 0) {
        if (rc == SL_EEXIST)
            api_error(rs, 409, "conflict", NULL,
                      "a live token named '%.200s' exists: revoke it or pick another name", nm);
        else
            api_store_error(rs, c->st, rc);
        return;
    }
    cJSON *doc = token_json(&t);
    cJSON_AddStringToObject(doc, "token", token);
    memset(token, 0, sizeof(token));
    api_json(rs, 201, doc);
}

/* DELETE /api/v1/tokens/{token_id} */
void api_h_token_revoke(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    char *end;
    long long id = strtoll(rq->params[0], &end, 10);
    if (!*rq->params[0] || *end || id <= 0) {
        api_error(rs, 400, "bad_request", NULL, "a token id is a positive number");
        return;
    }
    int rc = store_token_revoke(c->st, NULL, id);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return;
    }
    api_server_token_cache_clear(c->srv);
    struct store_token *v = NULL;
    size_t n = 0;
    rc = store_tokens_list(c->st, &v, &n, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i].id == id) {
            api_json(rs, 200, token_json(&v[i]));
            return;
        }
    }
    api_error(rs, 404, "not_found", NULL, "no token with id %lld", id);
}
