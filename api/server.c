/*
 * api/server.c - the HTTP server: h2o on a libuv loop, a pool of worker threads, live log
 * streams, graceful shutdown.
 *
 * Threads. The loop thread (the caller of api_server_run) owns libuv, h2o and every
 * h2o_req_t. A request is copied into a job (struct job) and queued for the pool; a
 * worker thread authenticates it, runs its handler with its own database session, and
 * puts the job on the done list; a uv_async_t wakes the loop, which sends the response.
 * h2o objects are never touched off the loop thread.
 *
 * The client may go away while its job is in the pool (HTTP/2 stream reset, the
 * connection closed): a guard object allocated in the request's pool (h2o_mem_alloc_shared)
 * clears job->req when h2o disposes the request, and the loop then drops the response.
 *
 * Live logs (follow=true). The response head is sent at once; then a follow_stream
 * alternates between "poll" (a job on the pool reads new bytes and whether the attempt is
 * still going), "send" (bytes handed to h2o, waiting for its proceed callback) and "wait"
 * (a timer, when there was nothing new). It ends with a final empty send once the attempt
 * is over and every byte was sent, or when the server stops. Its states:
 *
 *   POLL --bytes--> SEND --proceed--> POLL
 *     |--nothing new--> WAIT --timer--> POLL
 *     '--ended, all sent--> (final send) DONE
 *   any --client gone (stop / request disposed)--> freed once no job holds it
 *
 * Shutdown (api_server_request_stop, async-signal-safe through uv_async_send): close the
 * listener, ask h2o to shut down (HTTP/1 connections close after their current response,
 * HTTP/2 gets GOAWAY), end live log streams at their next poll, and wait until no job is
 * in flight and no connection is open, for at most shutdown_grace_ms. Connections still
 * open then (idle keep-alive ones) are closed, the pool is stopped and joined, the loop
 * drained.
 */
#include "api/api.h"

#include "api/api_int.h"
#include "common/error.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "queue/queue.h"
#include "store/store.h"

#include <errno.h>
#include <h2o.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define COMP "api"

/* Latency buckets of sluice_api_request_duration_seconds, in seconds. */
static const double latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define N_BUCKETS (sizeof(latency_buckets) / sizeof(latency_buckets[0]))
/* Status codes counted separately; others fall into the last slot. */
static const int counted_statuses[] = {200, 201, 202, 204, 400, 401, 403, 404,
                                       405, 409, 413, 422, 500, 503, 0};
#define N_STATUSES (sizeof(counted_statuses) / sizeof(counted_statuses[0]))
/* Jobs waiting for a worker beyond this answer 503 at once: a bounded queue. */
#define MAX_QUEUED_JOBS 10000

struct route_stats {
    uint64_t by_status[N_STATUSES];
    uint64_t buckets[N_BUCKETS + 1]; /* non-cumulative; the last is +Inf */
    double sum_s;
};

struct follow_stream;

enum job_kind { JOB_REQUEST, JOB_FOLLOW, JOB_BACKFILLS };

struct job {
    struct job *next;
    enum job_kind kind;
    /* JOB_REQUEST */
    h2o_req_t *req; /* NULL once h2o disposed the request */
    struct guard *guard;
    struct api_req rq;
    struct api_resp rs;
    uint64_t start_ns;
    /* JOB_FOLLOW */
    struct follow_stream *fs;
    struct strbuf chunk;
    bool ended;
};

/* Lives in the request's pool; tells a job or a stream that h2o disposed the request. */
struct guard {
    struct job *job;
    struct follow_stream *fs;
};

enum fs_state { FS_POLL, FS_SEND, FS_WAIT, FS_DONE };

struct follow_stream {
    h2o_generator_t super; /* first: h2o calls back with it */
    struct api_server *srv;
    h2o_req_t *req; /* NULL once gone */
    struct guard *guard;
    struct api_follow f;
    enum fs_state state;
    bool in_pool; /* a poll job holds it */
    bool closing;
    struct strbuf sending; /* bytes handed to h2o, kept until proceed */
    uv_timer_t timer;
    struct follow_stream *next, *prev; /* the server's list */
};

struct conn {
    uv_tcp_t tcp; /* first: h2o's close callback gives us the handle */
    struct api_server *srv;
};

struct api_server {
    /* options, copied */
    char *database_url, *redis_url, *listen, *log_root, *webhook_secret;
    struct artifacts_repo *artifacts; /* borrowed; NULL: none */
    size_t threads, max_body_bytes;
    int64_t request_timeout_ms, shutdown_grace_ms, follow_poll_ms, scheduler_stale_ms;
    int64_t backfill_interval_ms;
    int64_t started_ms;

    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t wake;           /* jobs done */
    uv_async_t stop_async;     /* a stop was requested */
    uv_timer_t drain_timer;    /* checks a stop's progress */
    uv_timer_t backfill_timer; /* moves backfills on (store_backfills_advance) */
    uint64_t stop_started_ms;
    int port;
    atomic_int stop_requested;

    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;

    /* the pool */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *q_head, *q_tail; /* waiting for a worker */
    size_t n_queued;
    struct job *done_head; /* handled, waiting for the loop */
    pthread_t *workers;
    struct api_ctx *ctxs;
    size_t n_workers;

    size_t in_flight; /* loop thread: jobs out, live streams */
    size_t n_conns;
    struct follow_stream *streams;

    struct api_token_cache *tokens;

    pthread_mutex_t stats_mu;
    struct route_stats *stats; /* one per route, then one for unmatched requests */
    uint64_t conns_total;

    bool loop_ready;
    bool listening;
    bool handles_ready;
    bool stopping;
    bool h2o_ready;
    bool pool_stop;
    bool backfills_busy; /* a backfill job is in the pool */
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* --- accessors for handlers --------------------------------------------------------------- */

struct artifacts_repo *api_server_artifacts(const struct api_server *s)
{
    return s->artifacts;
}

const char *api_server_log_root(const struct api_server *s)
{
    return s->log_root;
}

const char *api_server_webhook_secret(const struct api_server *s)
{
    return s->webhook_secret;
}

int64_t api_server_started_ms(const struct api_server *s)
{
    return s->started_ms;
}

int64_t api_server_scheduler_stale_ms(const struct api_server *s)
{
    return s->scheduler_stale_ms;
}

const char *api_server_redis_url(const struct api_server *s)
{
    return s->redis_url;
}

struct api_token_cache *api_server_token_cache(struct api_server *s)
{
    return s->tokens;
}

void api_server_token_cache_clear(struct api_server *s)
{
    api_token_cache_clear(s->tokens);
}

int api_server_port(const struct api_server *s)
{
    return s->port;
}

/* --- metrics of the server itself ----------------------------------------------------------- */

static void record(struct api_server *s, const struct api_route *route, int status,
                   uint64_t elapsed_ns)
{
    size_t r = route ? (size_t)(route - api_routes) : api_routes_count();
    size_t k = 0;
    while (counted_statuses[k] && counted_statuses[k] != status)
        k++;
    double secs = (double)elapsed_ns / 1e9;
    size_t b = 0;
    while (b < N_BUCKETS && secs > latency_buckets[b])
        b++;
    pthread_mutex_lock(&s->stats_mu);
    s->stats[r].by_status[k]++;
    s->stats[r].buckets[b]++;
    s->stats[r].sum_s += secs;
    pthread_mutex_unlock(&s->stats_mu);
}

static const char *method_name(enum api_method m)
{
    switch (m) {
    case API_GET:
        return "GET";
    case API_POST:
        return "POST";
    case API_PATCH:
        return "PATCH";
    case API_DELETE:
        return "DELETE";
    case API_OTHER:
        break;
    }
    return "OTHER";
}

void api_server_metrics(struct api_server *s, struct strbuf *out)
{
    size_t n = api_routes_count();
    struct route_stats *copy = xcalloc(n + 1, sizeof(*copy));
    pthread_mutex_lock(&s->stats_mu);
    memcpy(copy, s->stats, (n + 1) * sizeof(*copy));
    uint64_t conns_total = s->conns_total;
    pthread_mutex_unlock(&s->stats_mu);

    strbuf_addstr(out, "# HELP sluice_api_requests_total API requests answered, by route and "
                       "status.\n# TYPE sluice_api_requests_total counter\n");
    for (size_t r = 0; r <= n; r++) {
        const char *route = r < n ? api_routes[r].pattern : "unmatched";
        const char *method = r < n ? method_name(api_routes[r].method) : "";
        for (size_t k = 0; k < N_STATUSES; k++) {
            if (!copy[r].by_status[k])
                continue;
            char code[16];
            if (counted_statuses[k])
                snprintf(code, sizeof(code), "%d", counted_statuses[k]);
            else
                snprintf(code, sizeof(code), "other");
            strbuf_addf(out,
                        "sluice_api_requests_total{method=\"%s\",route=\"%s\",status=\"%s\"} "
                        "%llu\n",
                        method, route, code, (unsigned long long)copy[r].by_status[k]);
        }
    }
    strbuf_addstr(out, "# HELP sluice_api_request_duration_seconds Time from a request's "
                       "arrival to its response, by route.\n"
                       "# TYPE sluice_api_request_duration_seconds histogram\n");
    for (size_t r = 0; r <= n; r++) {
        uint64_t total = 0;
        for (size_t b = 0; b <= N_BUCKETS; b++)
            total += copy[r].buckets[b];
        if (!total)
            continue;
        const char *route = r < n ? api_routes[r].pattern : "unmatched";
        const char *method = r < n ? method_name(api_routes[r].method) : "";
        uint64_t cum = 0;
        for (size_t b = 0; b < N_BUCKETS; b++) {
            cum += copy[r].buckets[b];
            strbuf_addf(out,
                        "sluice_api_request_duration_seconds_bucket{method=\"%s\",route=\"%s\","
                        "le=\"%g\"} %llu\n",
                        method, route, latency_buckets[b], (unsigned long long)cum);
        }
        strbuf_addf(out,
                    "sluice_api_request_duration_seconds_bucket{method=\"%s\",route=\"%s\","
                    "le=\"+Inf\"} %llu\n",
                    method, route, (unsigned long long)total);
        strbuf_addf(out,
                    "sluice_api_request_duration_seconds_sum{method=\"%s\",route=\"%s\"} %.6f\n",
                    method, route, copy[r].sum_s);
        strbuf_addf(out,
                    "sluice_api_request_duration_seconds_count{method=\"%s\",route=\"%s\"} %llu\n",
                    method, route, (unsigned long long)total);
    }
    strbuf_addf(out,
                "# HELP sluice_api_connections_total Connections accepted.\n"
                "# TYPE sluice_api_connections_total counter\nsluice_api_connections_total %llu\n",
                (unsigned long long)conns_total);
    free(copy);
}

/* --- the pool ------------------------------------------------------------------------------ */

static void job_free(struct job *j)
{
    if (!j)
        return;
    arena_release(&j->rq.mem);
    strbuf_release(&j->rs.body);
    for (size_t i = 0; i < j->rs.n_hdr; i++)
        free(j->rs.hdr_value[i]);
    if (j->rs.follow) {
        free(j->rs.follow->path);
        free(j->rs.follow->step);
        free(j->rs.follow);
    }
    strbuf_release(&j->chunk);
    free(j);
}

/* Queues j for a worker. Returns false when the queue is full. Loop thread. */
static bool pool_submit(struct api_server *s, struct job *j)
{
    pthread_mutex_lock(&s->mu);
    if (s->n_queued >= MAX_QUEUED_JOBS) {
        pthread_mutex_unlock(&s->mu);
        return false;
    }
    j->next = NULL;
    if (s->q_tail)
        s->q_tail->next = j;
    else
        s->q_head = j;
    s->q_tail = j;
    s->n_queued++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    s->in_flight++;
    return true;
}

static void handle_request(struct api_ctx *c, struct job *j)
{
    struct api_req *rq = &j->rq;
    struct api_resp *rs = &j->rs;
    int status = 0;
    char msg[256];
    if (api_query_parse(rq) < 0) {
        api_error(rs, 400, "bad_request", NULL, "the query string has a malformed %%-escape");
        return;
    }
    rq->route = api_route_match(rq, &status, msg, sizeof(msg));
    if (!rq->route) {
        api_error(rs, status, status == 405 ? "method_not_allowed" : "not_found", NULL, "%s", msg);
        return;
    }
    if (rq->route->min_role != API_ROLE_NONE) {
        if (!api_authenticate(c, rq, rs))
            return;
        if (rq->role < rq->route->min_role) {
            api_error(rs, 403, "forbidden", NULL,
                      "this needs the %s role; the token has the %s role",
                      api_role_name(rq->route->min_role), api_role_name(rq->role));
            return;
        }
    }
    rq->route->fn(c, rq, rs);
    if (!rs->status)
        api_error(rs, 500, "internal", NULL, "the handler gave no answer");
}

static void *worker_main(void *arg)
{
    struct api_ctx *c = arg;
    struct api_server *s = c->srv;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals go to the loop thread */
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->q_head && !s->pool_stop)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->q_head && s->pool_stop)
            break;
        struct job *j = s->q_head;
        s->q_head = j->next;
        if (!s->q_head)
            s->q_tail = NULL;
        s->n_queued--;
        pthread_mutex_unlock(&s->mu);

        if (j->kind == JOB_REQUEST) {
            handle_request(c, j);
        } else if (j->kind == JOB_BACKFILLS) {
            size_t created = 0;
            if (store_backfills_advance(c->st, &created) < 0)
                sl_warn(COMP, "cannot move backfills on: %s", store_errmsg(c->st));
            else if (created)
                sl_info(COMP, "backfills: %zu runs created", created);
        } else {
            j->ended = false;
            api_follow_poll(c, &j->fs->f, &j->chunk, 64 * 1024, &j->ended);
        }

        pthread_mutex_lock(&s->mu);
        j->next = s->done_head;
        s->done_head = j;
        uv_async_send(&s->wake);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* --- live log streams ----------------------------------------------------------------------- */

static void fs_on_close(uv_handle_t *h)
{
    struct follow_stream *fs = h->data;
    free(fs->f.path);
    free(fs->f.step);
    strbuf_release(&fs->sending);
    free(fs);
}

/* Frees fs once nothing refers to it: not in the pool, request gone or finished. */
static void fs_maybe_free(struct follow_stream *fs)
{
    if (fs->in_pool || fs->req || fs->closing)
        return;
    fs->closing = true;
    struct api_server *s = fs->srv;
    if (fs->prev)
        fs->prev->next = fs->next;
    else
        s->streams = fs->next;
    if (fs->next)
        fs->next->prev = fs->prev;
    s->in_flight--;
    uv_timer_stop(&fs->timer);
    uv_close((uv_handle_t *)&fs->timer, fs_on_close);
}

static void fs_on_timer(uv_timer_t *t);

static void fs_poll(struct follow_stream *fs)
{
    struct job *j = xcalloc(1, sizeof(*j));
    j->kind = JOB_FOLLOW;
    j->fs = fs;
    strbuf_init(&j->chunk, 0);
    fs->state = FS_POLL;
    fs->in_pool = true;
    if (!pool_submit(fs->srv, j)) {
        /* overloaded: try again at the next tick */
        fs->in_pool = false;
        job_free(j);
        fs->state = FS_WAIT;
        uv_timer_start(&fs->timer, fs_on_timer, (uint64_t)fs->srv->follow_poll_ms, 0);
    }
}

static void fs_on_timer(uv_timer_t *t)
{
    struct follow_stream *fs = t->data;
    if (fs->req && fs->state == FS_WAIT)
        fs_poll(fs);
}

static void fs_finish(struct follow_stream *fs)
{
    fs->state = FS_DONE;
    if (fs->req) {
        h2o_req_t *req = fs->req;
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    }
}

/* A poll came back. Loop thread. */
static void fs_on_polled(struct follow_stream *fs, struct job *j)
{
    fs->in_pool = false;
    if (!fs->req) {
        fs_maybe_free(fs);
        return;
    }
    bool ended = j->ended || fs->srv->stopping;
    if (j->chunk.len) {
        strbuf_reset(&fs->sending);
        strbuf_add(&fs->sending, j->chunk.buf, j->chunk.len);
        fs->f.offset += (int64_t)j->chunk.len;
        fs->state = FS_SEND;
        h2o_iovec_t buf = h2o_iovec_init(fs->sending.buf, fs->sending.len);
        /* the attempt was over before this read and the read was short: this is all */
        bool last = ended && j->chunk.len < 64 * 1024;
        if (last)
            fs->state = FS_DONE;
        h2o_send(fs->req, &buf, 1, last ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
        return;
    }
    if (ended) {
        fs_finish(fs);
        return;
    }
    fs->state = FS_WAIT;
    uv_timer_start(&fs->timer, fs_on_timer, (uint64_t)fs->srv->follow_poll_ms, 0);
}

static void fs_on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    struct follow_stream *fs = (struct follow_stream *)g;
    if (fs->state == FS_SEND && fs->req)
        fs_poll(fs);
}

static void fs_on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    struct follow_stream *fs = (struct follow_stream *)g;
    fs->req = NULL;
    if (fs->guard)
        fs->guard->fs = NULL;
    fs->guard = NULL;
    fs_maybe_free(fs);
}

/* --- requests ------------------------------------------------------------------------------- */

static void guard_dispose(void *p)
{
    struct guard *g = p;
    if (g->job)
        g->job->req = NULL;
    if (g->fs) {
        g->fs->req = NULL;
        g->fs->guard = NULL;
        fs_maybe_free(g->fs);
    }
}

/* Adds a response header; the value is copied into the request's pool (h2o keeps the
 * pointer until it writes the head, which for a stream is after the job is freed). */
static void set_header(h2o_req_t *req, const char *name, const char *value)
{
    h2o_iovec_t v = h2o_strdup(&req->pool, value, strlen(value));
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 1, NULL, v.base,
                          v.len);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 416:
        return "Range Not Satisfiable";
    case 422:
        return "Unprocessable Entity";
    case 503:
        return "Service Unavailable";
    default:
        return status < 400 ? "OK" : "Error";
    }
}

/* Sends j's response. Loop thread. */
static void send_response(struct api_server *s, struct job *j)
{
    h2o_req_t *req = j->req;
    struct api_resp *rs = &j->rs;
    record(s, j->rq.route, rs->status, mono_ns() - j->start_ns);
    req->res.status = rs->status;
    req->res.reason = reason_phrase(rs->status);
    const char *ctype = rs->content_type ? rs->content_type : "application/json";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype,
                   strlen(ctype));
    for (size_t i = 0; i < rs->n_hdr; i++)
        set_header(req, rs->hdr_name[i], rs->hdr_value[i]);
    if (rs->status == 401)
        set_header(req, "www-authenticate", "Bearer realm=\"sluice\"");
    if (!rs->follow) {
        j->guard->job = NULL;
        /* a known length: without it h2o's chunked encoder closes the connection after
         * any status but 200 */
        req->res.content_length = rs->body.len;
        h2o_send_inline(req, rs->body.buf, rs->body.len);
        return;
    }
    struct follow_stream *fs = xcalloc(1, sizeof(*fs));
    fs->srv = s;
    fs->req = req;
    fs->guard = j->guard;
    j->guard->job = NULL;
    j->guard->fs = fs;
    fs->f = *rs->follow;
    free(rs->follow);
    rs->follow = NULL;
    fs->super.proceed = fs_on_proceed;
    fs->super.stop = fs_on_stop;
    strbuf_init(&fs->sending, 0);
    uv_timer_init(&s->loop, &fs->timer);
    fs->timer.data = fs;
    fs->next = s->streams;
    if (s->streams)
        s->streams->prev = fs;
    s->streams = fs;
    s->in_flight++;
    h2o_start_response(req, &fs->super);
    if (!rs->body.len) {
        fs_poll(fs);
        return;
    }
    /* the bytes the handler read already go first */
    strbuf_add(&fs->sending, rs->body.buf, rs->body.len);
    fs->state = FS_SEND;
    h2o_iovec_t buf = h2o_iovec_init(fs->sending.buf, fs->sending.len);
    h2o_send(req, &buf, 1, H2O_SEND_STATE_IN_PROGRESS);
}

static void on_wake(uv_async_t *a)
{
    struct api_server *s = a->data;
    pthread_mutex_lock(&s->mu);
    struct job *done = s->done_head;
    s->done_head = NULL;
    pthread_mutex_unlock(&s->mu);
    /* the list is newest first: reverse it so responses go out in completion order */
    struct job *rev = NULL;
    while (done) {
        struct job *next = done->next;
        done->next = rev;
        rev = done;
        done = next;
    }
    while (rev) {
        struct job *j = rev;
        rev = j->next;
        s->in_flight--;
        if (j->kind == JOB_FOLLOW) {
            fs_on_polled(j->fs, j);
        } else if (j->kind == JOB_BACKFILLS) {
            s->backfills_busy = false;
        } else if (j->req) {
            send_response(s, j);
        }
        job_free(j);
    }
}

static char *dup_header(h2o_req_t *req, const char *name, struct arena *mem)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    if (i < 0)
        return NULL;
    h2o_iovec_t v = req->headers.entries[i].value;
    return arena_strndup(mem, v.base, v.len);
}

static enum api_method parse_method(h2o_iovec_t m)
{
    if (h2o_memis(m.base, m.len, H2O_STRLIT("GET")) || h2o_memis(m.base, m.len, H2O_STRLIT("HEAD")))
        return API_GET;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("POST")))
        return API_POST;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("PATCH")))
        return API_PATCH;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("DELETE")))
        return API_DELETE;
    return API_OTHER;
}

/* Answers at once on the loop thread (overload, shutting down). */
static void answer_now(struct api_server *s, h2o_req_t *req, int status, const char *code,
                       const char *msg)
{
    struct strbuf b = STRBUF_INIT;
    strbuf_addf(&b, "{\"error\":{\"code\":\"%s\",\"message\":", code);
    strbuf_add_json_string(&b, msg);
    strbuf_addstr(&b, ",\"detail\":null}}");
    record(s, NULL, status, 0);
    req->res.status = status;
    req->res.reason = reason_phrase(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    set_header(req, "retry-after", "1");
    req->res.content_length = b.len;
    h2o_send_inline(req, b.buf, b.len);
    strbuf_release(&b);
}

/* The one h2o handler: every path. Loop thread. */
static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    struct api_server *s = *(struct api_server **)(self + 1);
    if (s->stopping) {
        answer_now(s, req, 503, "unavailable", "the server is shutting down");
        return 0;
    }
    struct job *j = xcalloc(1, sizeof(*j));
    j->kind = JOB_REQUEST;
    j->start_ns = mono_ns();
    j->req = req;
    strbuf_init(&j->rs.body, 0);
    strbuf_init(&j->chunk, 0);
    struct api_req *rq = &j->rq;
    arena_init(&rq->mem);
    rq->method = parse_method(req->method);
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    rq->path = arena_strndup(&rq->mem, req->path.base, path_len);
    rq->query = req->query_at != SIZE_MAX ? arena_strndup(&rq->mem, req->path.base + path_len + 1,
                                                          req->path.len - path_len - 1)
                                          : "";
    rq->authorization = dup_header(req, "authorization", &rq->mem);
    rq->content_type = dup_header(req, "content-type", &rq->mem);
    rq->hub_signature = dup_header(req, "x-hub-signature-256", &rq->mem);
    rq->gitlab_token = dup_header(req, "x-gitlab-token", &rq->mem);
    rq->github_event = dup_header(req, "x-github-event", &rq->mem);
    rq->gitlab_event = dup_header(req, "x-gitlab-event", &rq->mem);
    rq->body = arena_alloc(&rq->mem, req->entity.len + 1);
    if (req->entity.len)
        memcpy(rq->body, req->entity.base, req->entity.len);
    rq->body[req->entity.len] = '\0';
    rq->body_len = req->entity.len;
    if (req->entity.base && req->entity.len > s->max_body_bytes) {
        job_free(j);
        answer_now(s, req, 413, "payload_too_large", "the request body is over the size limit");
        return 0;
    }
    struct guard *g = h2o_mem_alloc_shared(&req->pool, sizeof(*g), guard_dispose);
    g->job = j;
    g->fs = NULL;
    j->guard = g;
    if (!pool_submit(s, j)) {
        g->job = NULL;
        job_free(j);
        answer_now(s, req, 503, "unavailable", "the server is overloaded; try again");
    }
    return 0;
}

/* Every backfill_interval_ms: one job moves the running backfills on (never two at once). */
static void on_backfill_timer(uv_timer_t *t)
{
    struct api_server *s = t->data;
    if (s->backfills_busy || s->stopping)
        return;
    struct job *j = xcalloc(1, sizeof(*j));
    j->kind = JOB_BACKFILLS;
    strbuf_init(&j->rs.body, 0);
    strbuf_init(&j->chunk, 0);
    arena_init(&j->rq.mem);
    if (pool_submit(s, j))
        s->backfills_busy = true;
    else
        job_free(j);
}

/* --- connections ---------------------------------------------------------------------------- */

static void on_conn_close(uv_handle_t *h)
{
    struct conn *c = (struct conn *)h;
    c->srv->n_conns--;
    free(c);
}

static void on_accept(uv_stream_t *listener, int status)
{
    struct api_server *s = listener->data;
    if (status != 0 || s->stopping)
        return;
    struct conn *c = xcalloc(1, sizeof(*c));
    c->srv = s;
    uv_tcp_init(&s->loop, &c->tcp);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    s->n_conns++;
    pthread_mutex_lock(&s->stats_mu);
    s->conns_total++;
    pthread_mutex_unlock(&s->stats_mu);
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, on_conn_close);
    h2o_accept(&s->accept_ctx, sock);
}

/* --- shutdown ------------------------------------------------------------------------------- */

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Ends idle keep-alive connections now rather than at their timeout: h2o closes a
 * connection whose request timeout expires, and an idle HTTP/1 connection is exactly one
 * waiting on that timeout (a connection busy with a request is not in the list). */
static void close_idle_connections(struct api_server *s)
{
    s->ctx.http1.req_timeout.timeout = 0;
    s->ctx.http2.idle_timeout.timeout = 0;
    uv_update_time(&s->loop);
    h2o_timeout_run(&s->loop, &s->ctx.http1.req_timeout, uv_now(&s->loop));
    h2o_timeout_run(&s->loop, &s->ctx.http2.idle_timeout, uv_now(&s->loop));
}

static void on_drain_timer(uv_timer_t *t)
{
    struct api_server *s = t->data;
    uint64_t elapsed = uv_now(&s->loop) - s->stop_started_ms;
    for (struct follow_stream *fs = s->streams; fs; fs = fs->next) {
        if (fs->state == FS_WAIT && fs->req) {
            uv_timer_stop(&fs->timer);
            fs_finish(fs);
        }
    }
    bool idle = s->in_flight == 0;
    if (idle)
        close_idle_connections(s);
    if ((idle && s->n_conns == 0) || elapsed >= (uint64_t)s->shutdown_grace_ms) {
        if (!idle)
            sl_warn(COMP, "shutdown grace of %lld ms is over with %zu requests in flight",
                    (long long)s->shutdown_grace_ms, s->in_flight);
        uv_timer_stop(t);
        uv_stop(&s->loop);
    }
}

static void on_stop_async(uv_async_t *a)
{
    struct api_server *s = a->data;
    if (s->stopping)
        return;
    s->stopping = true;
    s->stop_started_ms = uv_now(&s->loop);
    sl_info(COMP, "stopping: %zu requests in flight, %zu connections", s->in_flight, s->n_conns);
    if (s->listening) {
        uv_close((uv_handle_t *)&s->listener, NULL);
        s->listening = false;
    }
    uv_timer_stop(&s->backfill_timer);
    h2o_context_request_shutdown(&s->ctx);
    uv_timer_start(&s->drain_timer, on_drain_timer, 0, 20);
}

void api_server_request_stop(struct api_server *s)
{
    atomic_store(&s->stop_requested, 1);
    if (s->handles_ready)
        uv_async_send(&s->stop_async);
}

/* --- creation ------------------------------------------------------------------------------- */

static int parse_listen(struct sockaddr_storage *out, const char *listen, struct strbuf *err)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || !colon[1]) {
        strbuf_addf(err, "api.listen must be host:port, not '%s'", listen);
        return SL_EINVAL;
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) {
        strbuf_addf(err, "api.listen: '%s' is not a port", colon + 1);
        return SL_EINVAL;
    }
    char host[256];
    size_t hl = (size_t)(colon - listen);
    if (hl >= sizeof(host)) {
        strbuf_addf(err, "api.listen: the host is too long");
        return SL_EINVAL;
    }
    memcpy(host, listen, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%ld", port);
    int gai = getaddrinfo(strcmp(host, "*") ? host : NULL, portstr, &hints, &res);
    if (gai != 0 || !res) {
        strbuf_addf(err, "api.listen: cannot resolve '%s': %s", host, gai_strerror(gai));
        return SL_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

int api_server_new(struct api_server **out, const struct api_options *o, struct strbuf *err)
{
    if (!o->database_url || !o->redis_url) {
        strbuf_addstr(err, "the API needs database_url and redis_url");
        return SL_EINVAL;
    }
    struct api_server *s = xcalloc(1, sizeof(*s));
    s->database_url = xstrdup(o->database_url);
    s->redis_url = xstrdup(o->redis_url);
    s->listen = xstrdup(o->listen ? o->listen : "127.0.0.1:8080");
    s->log_root = xstrdup(o->log_root ? o->log_root : ".sluice/logs/steps");
    s->artifacts = o->artifacts;
    s->webhook_secret = o->webhook_secret && *o->webhook_secret ? xstrdup(o->webhook_secret) : NULL;
    s->threads = o->threads ? o->threads : 8;
    s->max_body_bytes = o->max_body_bytes ? o->max_body_bytes : (size_t)1 << 20;
    s->request_timeout_ms = o->request_timeout_ms > 0 ? o->request_timeout_ms : 30000;
    s->shutdown_grace_ms = o->shutdown_grace_ms > 0 ? o->shutdown_grace_ms : 10000;
    s->follow_poll_ms = o->follow_poll_ms > 0 ? o->follow_poll_ms : 250;
    s->scheduler_stale_ms = o->scheduler_stale_ms > 0 ? o->scheduler_stale_ms : 60000;
    s->backfill_interval_ms = o->backfill_interval_ms > 0 ? o->backfill_interval_ms : 1000;
    s->tokens = api_token_cache_new(o->token_cache_ttl_ms > 0 ? o->token_cache_ttl_ms : 5000);
    s->stats = xcalloc(api_routes_count() + 1, sizeof(*s->stats));
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->stats_mu, NULL);
    if (s->threads > 256) {
        strbuf_addf(err, "api.threads must be at most 256, not %zu", s->threads);
        api_server_free(s);
        return SL_EINVAL;
    }

    struct sockaddr_storage addr;
    if (parse_listen(&addr, s->listen, err) < 0) {
        api_server_free(s);
        return SL_EINVAL;
    }
    uv_loop_init(&s->loop);
    s->loop_ready = true;
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s;
    s->listening = true;
    int rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 511, on_accept);
    if (rc != 0) {
        strbuf_addf(err, "cannot listen on %s: %s", s->listen, uv_strerror(rc));
        api_server_free(s);
        return SL_EIO;
    }
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
    s->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);

    uv_async_init(&s->loop, &s->wake, on_wake);
    s->wake.data = s;
    uv_async_init(&s->loop, &s->stop_async, on_stop_async);
    s->stop_async.data = s;
    uv_timer_init(&s->loop, &s->drain_timer);
    s->drain_timer.data = s;
    uv_timer_init(&s->loop, &s->backfill_timer);
    s->backfill_timer.data = s;
    s->handles_ready = true;

    h2o_config_init(&s->config);
    /* h2o refuses bodies over its limit itself, with a plain-text 413, before the API
     * sees them; up to 4 times the API's limit the API answers with its JSON 413 */
    s->config.max_request_entity_size = s->max_body_bytes * 4;
    s->config.http1.req_timeout = (uint64_t)s->request_timeout_ms;
    s->config.http2.idle_timeout = (uint64_t)s->request_timeout_ms;
    s->config.http2.graceful_shutdown_timeout = (uint64_t)s->shutdown_grace_ms;
    s->config.server_name = h2o_iovec_init(H2O_STRLIT("sluice"));
    h2o_hostconf_t *host =
        h2o_config_register_host(&s->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *h = h2o_create_handler(path, sizeof(*h) + sizeof(struct api_server *));
    h->on_req = on_req;
    *(struct api_server **)(h + 1) = s;
    h2o_context_init(&s->ctx, &s->loop, &s->config);
    s->accept_ctx.ctx = &s->ctx;
    s->accept_ctx.hosts = s->config.hosts;
    s->h2o_ready = true;
    s->started_ms = sl_wall_ms();
    *out = s;
    return 0;
}

/* --- running -------------------------------------------------------------------------------- */

/* h2o keeps freed socket buffers for reuse in a list per thread; a thread that ends
 * would lose them, so the loop thread hands them back to the allocator when it is done.
 * (h2o_mem_alloc_recycle pops the list while it holds anything.) */
static void drain_recycled(void)
{
    h2o_mem_recycle_t *r = &h2o_socket_buffer_prototype.allocator;
    while (r->cnt > 0)
        free(h2o_mem_alloc_recycle(r, 0));
}

static void stop_pool(struct api_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->pool_stop = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < s->n_workers; i++)
        pthread_join(s->workers[i], NULL);
    s->n_workers = 0;
}

int api_server_run(struct api_server *s)
{
    int rc = 0;
    s->ctxs = xcalloc(s->threads, sizeof(*s->ctxs));
    s->workers = xcalloc(s->threads, sizeof(*s->workers));
    struct store_options so = STORE_OPTIONS_INIT;
    so.application_name = "sluice-api";
    so.statement_timeout_ms = 30000;
    for (size_t i = 0; i < s->threads; i++) {
        struct strbuf err = STRBUF_INIT;
        s->ctxs[i].srv = s;
        s->ctxs[i].models = api_model_cache_new();
        rc = store_open(&s->ctxs[i].st, s->database_url, &so, &err);
        if (rc < 0) {
            sl_error(COMP, "cannot connect to the database: %s", err.buf);
            strbuf_release(&err);
            goto out;
        }
        strbuf_release(&err);
    }
    rc = store_schema_check(s->ctxs[0].st);
    if (rc < 0) {
        sl_error(COMP, "%s", store_errmsg(s->ctxs[0].st));
        goto out;
    }
    for (size_t i = 0; i < s->threads; i++) {
        if (pthread_create(&s->workers[i], NULL, worker_main, &s->ctxs[i]) != 0) {
            sl_error(COMP, "cannot start a worker thread");
            rc = SL_EINTERNAL;
            stop_pool(s);
            goto out;
        }
        s->n_workers++;
    }
    sl_info(COMP, "listening on port %d (%s), %zu worker threads", s->port, s->listen, s->threads);
    uv_timer_start(&s->backfill_timer, on_backfill_timer, (uint64_t)s->backfill_interval_ms,
                   (uint64_t)s->backfill_interval_ms);
    if (atomic_load(&s->stop_requested))
        uv_async_send(&s->stop_async);
    uv_run(&s->loop, UV_RUN_DEFAULT);

    /* stopped: let the workers finish what they hold, hand back what they did, and let
     * h2o close what is left before its context goes */
    stop_pool(s);
    on_wake(&s->wake);
    close_idle_connections(s);
    uv_run(&s->loop, UV_RUN_NOWAIT);
    if (s->n_conns)
        sl_warn(COMP, "%zu connections were still open at the end of the shutdown", s->n_conns);
    /* h2o_context_request_shutdown() armed HTTP/2's graceful-shutdown timer; its entry
     * must be gone before the context is disposed */
    if (h2o_timeout_is_linked(&s->ctx.http2._graceful_shutdown_timeout))
        h2o_timeout_unlink(&s->ctx.http2._graceful_shutdown_timeout);
    h2o_context_dispose(&s->ctx);
    h2o_config_dispose(&s->config);
    s->h2o_ready = false;
    uv_walk(&s->loop, close_walk, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    s->handles_ready = false;
    drain_recycled();
    sl_info(COMP, "stopped");
out:
    return rc;
}

void api_server_free(struct api_server *s)
{
    if (!s)
        return;
    if (s->h2o_ready) {
        h2o_context_dispose(&s->ctx);
        h2o_config_dispose(&s->config);
    }
    if (s->loop_ready) {
        uv_walk(&s->loop, close_walk, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
    }
    for (size_t i = 0; s->ctxs && i < s->threads; i++) {
        store_close(s->ctxs[i].st);
        queue_close(s->ctxs[i].q);
        api_model_cache_free(s->ctxs[i].models);
    }
    while (s->q_head) {
        struct job *j = s->q_head;
        s->q_head = j->next;
        job_free(j);
    }
    free(s->ctxs);
    free(s->workers);
    api_token_cache_free(s->tokens);
    free(s->stats);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->stats_mu);
    free(s->database_url);
    free(s->redis_url);
    free(s->listen);
    free(s->log_root);
    if (s->webhook_secret) {
        memset(s->webhook_secret, 0, strlen(s->webhook_secret));
        free(s->webhook_secret);
    }
    free(s);
}
