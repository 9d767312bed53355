/*
 * api/api_int.h - what the files of api/ share: requests, responses, routes, the worker
 * threads' context. Nothing outside api/ (tests of api/ excepted) may use it.
 *
 * A request travels as a struct api_req: copied out of h2o on the loop thread (method,
 * raw path, query, the few headers the API reads, the body), then handled on a worker
 * thread, which fills a struct api_resp. Both live in one job (server.c) and are freed
 * together once the response was handed to h2o. Handlers run on worker threads only and
 * may block; each worker thread owns the struct api_ctx it passes them.
 */
#ifndef SLUICE_API_API_INT_H
#define SLUICE_API_API_INT_H

#include "api/api.h"
#include "common/arena.h"
#include "common/strbuf.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct queue;
struct api_server;

#define API_PREFIX       "/api/v1"
#define API_MAX_SEGS     12   /* path segments a route may have */
#define API_LIST_MAX     1000 /* the largest `limit` of a listing */
#define API_LIST_DEFAULT 100

enum api_method { API_GET, API_POST, API_PATCH, API_DELETE, API_OTHER };

struct api_route;

struct api_req {
    enum api_method method;
    char *path;          /* raw path without the query */
    char *query;         /* raw query (after '?'), or "" */
    char *authorization; /* header values, or NULL */
    char *content_type;
    char *hub_signature; /* X-Hub-Signature-256 */
    char *gitlab_token;  /* X-Gitlab-Token */
    char *github_event;  /* X-GitHub-Event */
    char *gitlab_event;  /* X-Gitlab-Event */
    char *body;          /* NUL-terminated copy of the body */
    size_t body_len;
    const struct api_route *route;
    const char *params[API_MAX_SEGS]; /* decoded path parameters, in pattern order */
    size_t n_params;
    size_t n_query; /* decoded query pairs */
    const char **qname, **qvalue;
    enum api_role role; /* after authentication */
    int64_t token_id;   /* 0 without a token */
    struct arena mem;   /* everything above that is not a literal */
};

/* A log stream (follow=true) handed back to the loop thread with the response head. */
struct api_follow {
    char *path;     /* the log file */
    int64_t offset; /* next byte to send */
    int64_t run_pk; /* which attempt to watch */
    char *step;
    int map_index;
    int attempt;
};

#define API_MAX_HEADERS 4

struct api_resp {
    int status;
    struct strbuf body;
    const char *content_type;              /* static; NULL: application/json */
    const char *hdr_name[API_MAX_HEADERS]; /* static names */
    char *hdr_value[API_MAX_HEADERS];      /* owned (malloc) */
    size_t n_hdr;
    struct api_follow *follow; /* owned; non-NULL: stream after the body */
};

struct api_ctx {
    struct api_server *srv;
    struct store *st; /* this thread's database session */
    struct queue *q;  /* this thread's Redis connection, opened on first use; may be NULL */
    struct api_model_cache *models; /* parsed DAG versions, this thread's */
};

typedef void (*api_handler_fn)(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);

struct api_route {
    enum api_method method;
    const char *pattern;    /* "/api/v1/dags/{dag_id}/runs"; also the metrics label */
    enum api_role min_role; /* API_ROLE_NONE: public */
    api_handler_fn fn;
};

/* The route table (routes.c), terminated by a NULL pattern. */
extern const struct api_route api_routes[];
/* How many routes the table has. */
size_t api_routes_count(void);

/*
 * Matches method and path against the table. Returns the route and fills rq->params, or
 * NULL with *out_status 404 (no path matches) or 405 (the path matches another method)
 * and a message in msg. Path segments are percent-decoded; a decoded segment holding '/'
 * or a NUL byte matches nothing.
 */
const struct api_route *api_route_match(struct api_req *rq, int *out_status, char *msg,
                                        size_t msglen);
/* Decodes rq->query into rq->qname/qvalue ('+' is a space, %XX a byte). Returns 0 or
 * SL_EINVAL for a malformed escape. */
int api_query_parse(struct api_req *rq);
/* The last value of query parameter name, or NULL. */
const char *api_query(const struct api_req *rq, const char *name);

/* --- responses ------------------------------------------------------------------------- */

/* {"error": {"code", "message", "detail"}} with status; detail may be NULL (null) and is
 * taken over (cJSON_Delete'd). */
void api_error(struct api_resp *rs, int status, const char *code, cJSON *detail, const char *fmt,
               ...) __attribute__((format(printf, 5, 6)));
/* The error a store failure deserves: 404 for SL_ENOENT, 409 for SL_EEXIST/SL_ECONFLICT,
 * 503 for SL_ECONN/SL_ETIMEDOUT, 400 for SL_EINVAL, 413 for SL_ETOOBIG, else 500. */
void api_store_error(struct api_resp *rs, struct store *st, int rc);
/* Prints doc as the body with status, and deletes doc. */
void api_json(struct api_resp *rs, int status, cJSON *doc);
/* Adds a response header (name static, value copied). */
void api_header(struct api_resp *rs, const char *name, const char *value);
/* Parses the body as a JSON object into *out (caller deletes). On failure answers 400 and
 * returns SL_EINVAL. An empty body is {} when empty_ok. */
int api_body_object(cJSON **out, struct api_req *rq, struct api_resp *rs, bool empty_ok);
/* Reads ?limit= and ?offset= (defaults API_LIST_DEFAULT and 0). Answers 400 and returns
 * SL_EINVAL when malformed. */
int api_paging(int64_t *limit, int64_t *offset, const struct api_req *rq, struct api_resp *rs);
/* Reads an optional RFC 3339 query time into *out_ms (STORE_NO_TIME when absent).
 * Answers 400 and returns SL_EINVAL when malformed. */
int api_query_time(int64_t *out_ms, const struct api_req *rq, struct api_resp *rs,
                   const char *name);
/* Adds name: RFC 3339 time (or null for STORE_NO_TIME) to obj. */
void api_add_time(cJSON *obj, const char *name, int64_t ms);
/* Adds name: parsed JSON text (or null) to obj. */
void api_add_raw_json(cJSON *obj, const char *name, const char *json);
/* Adds name: string or null. */
void api_add_str(cJSON *obj, const char *name, const char *s);

/* Validators for path parameters; on failure answer 400 and return false. */
bool api_check_dag_id(const char *s, struct api_resp *rs);
bool api_check_run_id(const char *s, struct api_resp *rs);
bool api_check_step(const char *s, struct api_resp *rs);

/* --- what handlers need from the server (server.c) -------------------------------------- */

const char *api_server_log_root(const struct api_server *s);
/* The artifact repository of archived step logs, or NULL. Thread-safe to use. */
struct artifacts_repo *api_server_artifacts(const struct api_server *s);
const char *api_server_webhook_secret(const struct api_server *s);
int64_t api_server_started_ms(const struct api_server *s);
int64_t api_server_scheduler_stale_ms(const struct api_server *s);
const char *api_server_redis_url(const struct api_server *s);
/* Forgets cached roles (a token was revoked). */
void api_server_token_cache_clear(struct api_server *s);
/* Appends the server's own metrics (API latency by route, connections) in Prometheus
 * text format. */
void api_server_metrics(struct api_server *s, struct strbuf *out);

/* Authenticates rq->authorization (auth.c): sets rq->role and rq->token_id, or answers
 * 401 and returns false. Uses the server's cache, else the database. */
bool api_authenticate(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);

/* The token cache (auth.c), shared by the worker threads. */
struct api_token_cache;
struct api_token_cache *api_token_cache_new(int64_t ttl_ms);
void api_token_cache_free(struct api_token_cache *tc);
void api_token_cache_clear(struct api_token_cache *tc);
struct api_token_cache *api_server_token_cache(struct api_server *s);

/* Parsed DAG versions, per worker thread (models.c). */
struct dsl_dag;
struct api_model_cache *api_model_cache_new(void);
void api_model_cache_free(struct api_model_cache *mc);
/* The model of version version_id (parsed once per thread and kept), or NULL with the
 * answer already set in rs. */
const struct dsl_dag *api_model_get(struct api_ctx *c, int64_t version_id, struct api_resp *rs);

/* The OpenAPI document (openapi.c): NUL-terminated JSON text. */
const char *api_openapi_json(void);

/* Handlers, one per route (routes_*.c). */
void api_h_health(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_metrics(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_openapi(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_import_errors(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_hook_git(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_dags_sync(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_dags_list(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_dag_get(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_dag_patch(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_dag_versions(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_dag_source(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_runs_create(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_runs_list(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_run_get(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_run_cancel(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_run_retry(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_steps_list(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_step_get(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_step_log(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_tokens_list(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_tokens_create(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_token_revoke(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_backfills_create(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_backfill_get(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);
void api_h_backfill_cancel(struct api_ctx *c, struct api_req *rq, struct api_resp *rs);

/*
 * One poll of a live log stream, on a worker thread: reads up to max bytes of f->path
 * from f->offset into out (advancing nothing: the loop thread advances f->offset when it
 * sent them) and sets *out_ended when the attempt is over (no longer queued or running)
 * - checked before reading, so bytes written before the end are never missed.
 */
void api_follow_poll(struct api_ctx *c, const struct api_follow *f, struct strbuf *out, size_t max,
                     bool *out_ended);

#endif
