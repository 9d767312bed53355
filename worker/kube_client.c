/*
 * worker/kube_client.c - the Kubernetes API client: libcurl's multi-socket API on a libuv
 * loop, a client-side rate limiter, retries.
 *
 * One CURLM per client. libcurl tells us which sockets to watch (on_curl_socket: one
 * uv_poll_t per socket, made and closed as libcurl asks) and when to wake it
 * (on_curl_timer: one uv_timer_t); we tell it what happened with curl_multi_socket_action
 * and collect finished transfers with curl_multi_info_read. No thread per request, no
 * thread per pod: a thousand log streams are a thousand sockets on one loop.
 *
 * A call goes through these states:
 *
 *   QUEUED ---token---> ACTIVE ---done---> (retry?) --yes--> WAITING --timer--> QUEUED
 *     ^  (rate limiter)    |                   | no
 *     |                    |                   v
 *     +--------------------+--------------- on_done, freed
 *
 * QUEUED calls wait in FIFO order for a token of the bucket (qps tokens a second, at
 * most burst saved up: client-go's flowcontrol.NewTokenBucketRateLimiter); every send,
 * retries included, takes one. Calls are handed to libcurl only from the pump (a timer
 * callback), never from inside kube_call_start() or a libcurl callback, and removed from
 * it only outside libcurl's callbacks (a cancel inside one is deferred), as libcurl
 * requires.
 *
 * Retry policy (worker/kube_int.h): 429 and 5xx on GET and DELETE, waiting max(Retry-After,
 * backoff); for POST only what the server asked to be retried (429, 5xx with
 * Retry-After) or a connection that never carried the request; connection errors back off
 * exponentially (200 ms doubling to 10 s, +-10% jitter), up to max_retries. A 401 re-reads
 * a token file once and tries again.
 */
#include "worker/kube_int.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/xalloc.h"

#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#define BACKOFF_BASE_MS    200
#define BACKOFF_MAX_MS     10000
#define CONNECT_TIMEOUT_MS 10000
#define MAX_RETRY_AFTER_S  300

enum call_state { CALL_QUEUED, CALL_ACTIVE, CALL_WAITING, CALL_DONE };

struct kube_call {
    struct kube_client *c;
    struct kube_call *prev, *next; /* the client's list of calls */
    struct kube_call *q_next;      /* QUEUED: the rate limiter's FIFO */
    enum call_state state;
    enum kube_method method;
    char *url;
    char *body;
    bool stream;
    kube_data_cb on_data;
    kube_done_cb on_done;
    void *data;
    CURL *easy;
    struct curl_slist *headers;
    struct strbuf resp; /* the body (non-stream, or a stream's error) */
    long status;        /* from the status line of the current attempt */
    int64_t retry_after_ms;
    int attempts;
    bool auth_retried; /* a 401 re-read the token once */
    bool cancelled;
    bool streaming; /* a 2xx stream started: no more retries */
    bool unlinked;  /* out of the client's list */
    char errbuf[CURL_ERROR_SIZE];
    uv_timer_t *retry_timer; /* WAITING */
};

struct curl_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct kube_client *c;
    struct curl_sock *prev, *next; /* the client's open sockets */
};

struct kube_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t curl_timer;
    uv_timer_t pump_timer;
    struct kube_creds creds; /* copies */
    char *token;             /* the current bearer token, or NULL */
    struct timespec token_mtime;
    uint64_t token_checked_ms;
    double qps, tokens;
    int burst, max_retries;
    int64_t timeout_ms;
    uint64_t refill_ms; /* loop time of the last refill */
    struct kube_call *calls;
    struct kube_call *q_head, *q_tail;
    int in_curl;                /* inside a libcurl callback */
    struct kube_call **zombies; /* cancelled while in_curl: to remove afterwards */
    size_t n_zombies, alloc_zombies;
    uint64_t requests;
    struct curl_sock *socks;
    int open_handles; /* handles not yet through their close callback */
    bool closing;
    void (*on_closed)(void *data);
    void *closed_data;
};

static void pump(struct kube_client *c);
static void on_pump_timer(uv_timer_t *t);
static void check_done(struct kube_client *c);

/* --- credentials at request time -------------------------------------------------------- */

static char *read_token_file(const char *path)
{
    struct strbuf sb = STRBUF_INIT;
    if (strbuf_read_file(&sb, path, 64 * 1024) < 0) {
        strbuf_release(&sb);
        return NULL;
    }
    while (sb.len &&
           (sb.buf[sb.len - 1] == '\n' || sb.buf[sb.len - 1] == '\r' || sb.buf[sb.len - 1] == ' '))
        sb.buf[--sb.len] = '\0';
    return strbuf_detach(&sb, NULL);
}

/* Re-reads the token file if it changed (checked at most every KUBE_TOKEN_CHECK_MS), or at
 * once when force. */
static void refresh_token(struct kube_client *c, bool force)
{
    if (!c->creds.token_file)
        return;
    uint64_t now = uv_now(c->loop);
    if (!force && c->token && now - c->token_checked_ms < KUBE_TOKEN_CHECK_MS)
        return;
    c->token_checked_ms = now;
    struct stat st;
    if (stat(c->creds.token_file, &st) < 0) {
        sl_warn(KUBE_LOG, "token file \"%s\": %s", c->creds.token_file, strerror(errno));
        return;
    }
    if (!force && c->token && st.st_mtim.tv_sec == c->token_mtime.tv_sec &&
        st.st_mtim.tv_nsec == c->token_mtime.tv_nsec)
        return;
    char *t = read_token_file(c->creds.token_file);
    if (!t) {
        sl_warn(KUBE_LOG, "cannot read the token file \"%s\"", c->creds.token_file);
        return;
    }
    if (c->token && strcmp(c->token, t) != 0)
        sl_info(KUBE_LOG, "the service account token changed: using the new one");
    free(c->token);
    c->token = t;
    c->token_mtime = st.st_mtim;
}

/* --- libcurl's callbacks ---------------------------------------------------------------- */

static size_t on_header(char *buf, size_t size, size_t n, void *userp)
{
    struct kube_call *call = userp;
    size_t len = size * n;
    if (len > 5 && !strncmp(buf, "HTTP/", 5)) {
        const char *sp = memchr(buf, ' ', len);
        call->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        call->retry_after_ms = -1;
    } else if (len > 12 && !strncasecmp(buf, "Retry-After:", 12)) {
        char tmp[32];
        size_t k = len - 12 < sizeof(tmp) - 1 ? len - 12 : sizeof(tmp) - 1;
        memcpy(tmp, buf + 12, k);
        tmp[k] = '\0';
        char *end;
        errno = 0;
        long v = strtol(tmp, &end, 10);
        if (!errno && end != tmp && v >= 0)
            call->retry_after_ms = (v > MAX_RETRY_AFTER_S ? MAX_RETRY_AFTER_S : v) * 1000;
    }
    return len;
}

static size_t on_write(char *buf, size_t size, size_t n, void *userp)
{
    struct kube_call *call = userp;
    size_t len = size * n;
    if (call->cancelled)
        return 0; /* aborts the transfer */
    bool ok = call->status >= 200 && call->status < 300;
    if (call->stream && ok) {
        call->streaming = true;
        call->c->in_curl++;
        call->on_data(call->data, buf, len);
        call->c->in_curl--;
        return call->cancelled ? 0 : len;
    }
    if (call->resp.len + len > KUBE_MAX_BODY_BYTES)
        return 0;
    strbuf_add(&call->resp, buf, len);
    return len;
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct curl_sock *s = h->data;
    struct kube_client *c = s->c;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    c->in_curl++;
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    c->in_curl--;
    check_done(c);
}

/* One handle fewer; the last one of a closing client frees it. */
static void handle_gone(struct kube_client *c)
{
    c->open_handles--;
    if (!c->closing || c->open_handles > 0)
        return;
    void (*cb)(void *) = c->on_closed;
    void *d = c->closed_data;
    kube_creds_release(&c->creds);
    free(c->token);
    free(c->zombies);
    free(c);
    if (cb)
        cb(d);
}

static void on_sock_closed(uv_handle_t *h)
{
    struct curl_sock *s = h->data;
    struct kube_client *c = s->c;
    free(s);
    handle_gone(c);
}

static void sock_close(struct curl_sock *s)
{
    struct kube_client *c = s->c;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct kube_client *c = userp;
    struct curl_sock *s = socketp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            if (c->multi)
                curl_multi_assign(c->multi, fd, NULL);
            sock_close(s);
        }
        return 0;
    }
    if (!s) {
        s = xcalloc(1, sizeof(*s));
        s->fd = fd;
        s->c = c;
        if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        c->open_handles++;
        s->next = c->socks;
        if (c->socks)
            c->socks->prev = s;
        c->socks = s;
        curl_multi_assign(c->multi, fd, s);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static void on_curl_timeout(uv_timer_t *t)
{
    struct kube_client *c = t->data;
    int running;
    c->in_curl++;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    c->in_curl--;
    check_done(c);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct kube_client *c = userp;
    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&c->curl_timer);
    else
        uv_timer_start(&c->curl_timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* --- calls ------------------------------------------------------------------------------ */

static void on_timer_closed(uv_handle_t *h)
{
    struct kube_client *c = h->data;
    free(h);
    handle_gone(c);
}

static void on_embedded_closed(uv_handle_t *h)
{
    handle_gone(h->data);
}

static void detach_easy(struct kube_call *call)
{
    if (!call->easy)
        return;
    curl_multi_remove_handle(call->c->multi, call->easy);
    curl_easy_cleanup(call->easy);
    curl_slist_free_all(call->headers);
    call->easy = NULL;
    call->headers = NULL;
}

static void q_remove(struct kube_client *c, struct kube_call *call)
{
    struct kube_call *prev = NULL;
    for (struct kube_call *it = c->q_head; it; prev = it, it = it->q_next) {
        if (it != call)
            continue;
        if (prev)
            prev->q_next = it->q_next;
        else
            c->q_head = it->q_next;
        if (c->q_tail == it)
            c->q_tail = prev;
        it->q_next = NULL;
        return;
    }
}

/* Takes call out of the client's list (once). */
static void call_unlink(struct kube_call *call)
{
    struct kube_client *c = call->c;
    if (call->unlinked)
        return;
    call->unlinked = true;
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    call->prev = call->next = NULL;
}

static void call_free(struct kube_call *call)
{
    struct kube_client *c = call->c;
    call_unlink(call);
    if (call->retry_timer) {
        uv_timer_stop(call->retry_timer);
        call->retry_timer->data = c;
        uv_close((uv_handle_t *)call->retry_timer, on_timer_closed);
    }
    detach_easy(call);
    strbuf_release(&call->resp);
    free(call->url);
    free(call->body);
    free(call);
}

static void enqueue(struct kube_client *c, struct kube_call *call)
{
    call->state = CALL_QUEUED;
    call->q_next = NULL;
    if (c->q_tail)
        c->q_tail->q_next = call;
    else
        c->q_head = call;
    c->q_tail = call;
    if (!uv_is_active((uv_handle_t *)&c->pump_timer))
        uv_timer_start(&c->pump_timer, on_pump_timer, 0, 0);
}

struct kube_call *kube_call_start(struct kube_client *c, enum kube_method method, const char *path,
                                  const char *body, bool stream, kube_data_cb on_data,
                                  kube_done_cb on_done, void *data)
{
    assert(!c->closing);
    struct kube_call *call = xcalloc(1, sizeof(*call));
    call->c = c;
    call->method = method;
    call->url = xasprintf("%s%s", c->creds.server, path);
    call->body = body ? xstrdup(body) : NULL;
    call->stream = stream;
    call->on_data = on_data;
    call->on_done = on_done;
    call->data = data;
    strbuf_init(&call->resp, 0);
    call->next = c->calls;
    if (c->calls)
        c->calls->prev = call;
    c->calls = call;
    enqueue(c, call);
    return call;
}

/* Configures and adds call's transfer. */
static void send_call(struct kube_client *c, struct kube_call *call)
{
    refresh_token(c, false);
    CURL *e = curl_easy_init();
    if (!e) {
        sl_error(KUBE_LOG, "curl_easy_init failed");
        abort();
    }
    call->easy = e;
    call->state = CALL_ACTIVE;
    call->status = 0;
    call->retry_after_ms = -1;
    call->errbuf[0] = '\0';
    call->attempts++;
    c->requests++;
    strbuf_reset(&call->resp);
    curl_easy_setopt(e, CURLOPT_URL, call->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, call);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, call);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "sluice-worker");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (!call->stream)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
    struct curl_slist *h = NULL;
    h = curl_slist_append(
        h, call->stream && strstr(call->url, "/log") ? "Accept: */*" : "Accept: application/json");
    if (c->token) {
        char *auth = xasprintf("Authorization: Bearer %s", c->token);
        h = curl_slist_append(h, auth);
        kube_wipe(auth, strlen(auth));
        free(auth);
    }
    if (call->method == KUBE_POST) {
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->body ? call->body : "");
    } else if (call->method == KUBE_DELETE) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    h = curl_slist_append(h, "Expect:");
    call->headers = h;
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    const struct kube_creds *cr = &c->creds;
    if (cr->insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (cr->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, cr->ca_file);
    if (cr->ca_pem) {
        struct curl_blob b = {cr->ca_pem, cr->ca_pem_len, CURL_BLOB_NOCOPY};
        curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &b);
    }
    if (cr->cert_file)
        curl_easy_setopt(e, CURLOPT_SSLCERT, cr->cert_file);
    if (cr->key_file)
        curl_easy_setopt(e, CURLOPT_SSLKEY, cr->key_file);
    if (cr->cert_pem) {
        struct curl_blob b = {cr->cert_pem, cr->cert_pem_len, CURL_BLOB_NOCOPY};
        curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &b);
        curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
    }
    if (cr->key_pem) {
        struct curl_blob b = {cr->key_pem, cr->key_pem_len, CURL_BLOB_NOCOPY};
        curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &b);
        curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
    }
    CURLMcode mc = curl_multi_add_handle(c->multi, e);
    assert(mc == CURLM_OK);
    (void)mc;
}

/* Takes tokens from the bucket for as many queued calls as it allows. */
static void pump(struct kube_client *c)
{
    uint64_t now = uv_now(c->loop);
    c->tokens += (double)(now - c->refill_ms) * c->qps / 1000.0;
    if (c->tokens > c->burst)
        c->tokens = c->burst;
    c->refill_ms = now;
    while (c->q_head && c->tokens >= 1.0 && !c->closing) {
        struct kube_call *call = c->q_head;
        c->q_head = call->q_next;
        if (!c->q_head)
            c->q_tail = NULL;
        call->q_next = NULL;
        c->tokens -= 1.0;
        send_call(c, call);
    }
    if (c->q_head && !c->closing) {
        uint64_t wait = (uint64_t)ceil((1.0 - c->tokens) * 1000.0 / c->qps);
        uv_timer_start(&c->pump_timer, on_pump_timer, wait ? wait : 1, 0);
    }
}

static void on_pump_timer(uv_timer_t *t)
{
    pump(t->data);
}

static void on_retry_timer(uv_timer_t *t)
{
    struct kube_call *call = t->data;
    struct kube_client *c = call->c;
    call->retry_timer = NULL;
    t->data = c;
    uv_close((uv_handle_t *)t, on_timer_closed);
    enqueue(c, call);
}

static int64_t backoff_ms(int attempt)
{
    double ms = BACKOFF_BASE_MS * pow(2.0, attempt > 1 ? attempt - 1 : 0);
    if (ms > BACKOFF_MAX_MS)
        ms = BACKOFF_MAX_MS;
    double jitter = 0.9 + 0.2 * ((double)rand() / RAND_MAX); /* NOLINT(cert-msc30-c) */
    return (int64_t)(ms * jitter);
}

static bool retryable_status(long s)
{
    return s == 429 || s == 500 || s == 502 || s == 503 || s == 504;
}

/* Whether a failed attempt of call should be sent again; sets *wait_ms. */
static bool should_retry(struct kube_call *call, CURLcode res, int64_t *wait_ms)
{
    struct kube_client *c = call->c;
    if (call->attempts > c->max_retries || call->streaming || c->closing)
        return false;
    if (res != CURLE_OK) {
        bool unsent = res == CURLE_COULDNT_CONNECT || res == CURLE_COULDNT_RESOLVE_HOST ||
                      res == CURLE_COULDNT_RESOLVE_PROXY;
        if (call->method == KUBE_POST && !unsent)
            return false; /* may have been applied: the caller finds out */
        *wait_ms = backoff_ms(call->attempts);
        return true;
    }
    if (call->status == 401 && c->creds.token_file && !call->auth_retried) {
        call->auth_retried = true;
        refresh_token(c, true);
        *wait_ms = 0;
        return true;
    }
    if (!retryable_status(call->status))
        return false;
    if (call->method == KUBE_POST && call->status != 429 && call->retry_after_ms < 0)
        return false;
    int64_t b = backoff_ms(call->attempts);
    *wait_ms = call->retry_after_ms > b ? call->retry_after_ms : b;
    return true;
}

static void finish(struct kube_call *call, CURLcode res)
{
    struct kube_client *c = call->c;
    int64_t wait = 0;
    bool retry = !call->cancelled && should_retry(call, res, &wait);
    detach_easy(call);
    if (call->cancelled)
        return; /* a zombie: freed at the end of check_done() */
    if (retry) {
        sl_debug(KUBE_LOG, "retrying %s in %lld ms (%s)", call->url, (long long)wait,
                 res != CURLE_OK ? call->errbuf : "server asked");
        call->state = CALL_WAITING;
        call->retry_timer = xcalloc(1, sizeof(uv_timer_t));
        uv_timer_init(c->loop, call->retry_timer);
        c->open_handles++;
        call->retry_timer->data = call;
        uv_timer_start(call->retry_timer, on_retry_timer, (uint64_t)wait, 0);
        return;
    }
    struct kube_response r = {
        .status = res == CURLE_OK ? call->status : 0,
        .body = call->resp.buf,
        .len = call->resp.len,
        .attempts = call->attempts,
    };
    if (res != CURLE_OK) {
        r.error = call->errbuf[0] ? call->errbuf : curl_easy_strerror(res);
        r.unsent = res == CURLE_COULDNT_CONNECT || res == CURLE_COULDNT_RESOLVE_HOST;
    }
    call->state = CALL_DONE;
    call->on_done(call->data, &r);
    call_free(call);
}

static void check_done(struct kube_client *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct kube_call *call = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&call);
        finish(call, msg->data.result);
    }
    for (size_t i = 0; i < c->n_zombies; i++)
        call_free(c->zombies[i]);
    c->n_zombies = 0;
}

void kube_call_cancel(struct kube_call *call)
{
    struct kube_client *c = call->c;
    if (call->cancelled)
        return;
    call->cancelled = true;
    call->on_data = NULL;
    if (c->closing)
        return; /* kube_client_close() frees it */
    if (call->state == CALL_QUEUED) {
        q_remove(c, call);
        call_free(call);
    } else if (call->state == CALL_WAITING) {
        call_free(call);
    } else if (call->state == CALL_ACTIVE && c->in_curl) {
        XGROW(c->zombies, c->alloc_zombies, c->n_zombies + 1); // NOLINT(bugprone-sizeof-expression)
        c->zombies[c->n_zombies++] = call;
    } else {
        call_free(call);
    }
}

uint64_t kube_client_requests(const struct kube_client *c)
{
    return c->requests;
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static char *dup_blob(const char *s, size_t n)
{
    if (!s)
        return NULL;
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int kube_client_new(struct kube_client **out, uv_loop_t *loop, const struct kube_creds *creds,
                    const struct kube_client_limits *limits)
{
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, global_init);
    if (!creds || !creds->server)
        return SL_EINVAL;
    struct kube_client *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->multi = curl_multi_init();
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    uv_timer_init(loop, &c->curl_timer);
    c->curl_timer.data = c;
    uv_timer_init(loop, &c->pump_timer);
    c->pump_timer.data = c;
    c->open_handles = 2;
    struct kube_creds *cc = &c->creds;
    cc->server = xstrdup(creds->server);
    size_t n = strlen(cc->server);
    while (n > 0 && cc->server[n - 1] == '/')
        cc->server[--n] = '\0';
    cc->token = dup_or_null(creds->token);
    cc->token_file = dup_or_null(creds->token_file);
    cc->ca_file = dup_or_null(creds->ca_file);
    cc->ca_pem = dup_blob(creds->ca_pem, creds->ca_pem_len);
    cc->ca_pem_len = creds->ca_pem_len;
    cc->cert_file = dup_or_null(creds->cert_file);
    cc->key_file = dup_or_null(creds->key_file);
    cc->cert_pem = dup_blob(creds->cert_pem, creds->cert_pem_len);
    cc->cert_pem_len = creds->cert_pem_len;
    cc->key_pem = dup_blob(creds->key_pem, creds->key_pem_len);
    cc->key_pem_len = creds->key_pem_len;
    cc->insecure = creds->insecure;
    cc->namespace_ = dup_or_null(creds->namespace_);
    cc->source = dup_or_null(creds->source);
    c->token = dup_or_null(creds->token);
    if (cc->token_file)
        refresh_token(c, true);
    c->qps = limits && limits->qps > 0 ? limits->qps : KUBE_DEFAULT_QPS;
    c->burst = limits && limits->burst > 0 ? limits->burst : KUBE_DEFAULT_BURST;
    c->max_retries =
        limits && limits->max_retries > 0 ? limits->max_retries : KUBE_DEFAULT_MAX_RETRIES;
    c->timeout_ms = limits && limits->request_timeout_ms > 0 ? limits->request_timeout_ms : 30000;
    c->tokens = c->burst;
    c->refill_ms = uv_now(loop);
    *out = c;
    return 0;
}

void kube_client_close(struct kube_client *c, void (*on_closed)(void *data), void *data)
{
    c->closing = true;
    c->on_closed = on_closed;
    c->closed_data = data;
    /* every call still open ends now, with status 0: its owner may need to free its data.
     * The list is taken whole first; a cancel made meanwhile only marks its call. */
    struct kube_call *list = c->calls;
    c->calls = NULL;
    while (list) {
        struct kube_call *call = list;
        list = call->next;
        call->prev = call->next = NULL;
        call->unlinked = true;
        bool notify = !call->cancelled && call->on_done;
        call->cancelled = true;
        if (call->state == CALL_QUEUED)
            q_remove(c, call);
        if (notify) {
            struct kube_response r = {
                .error = "the client is closing", .unsent = true, .attempts = call->attempts};
            call->on_done(call->data, &r);
        }
        call_free(call);
    }
    c->n_zombies = 0;
    /* closes the cached connections (libcurl says CURL_POLL_REMOVE for each) */
    CURLM *multi = c->multi;
    c->multi = NULL;
    curl_multi_cleanup(multi);
    while (c->socks)
        sock_close(c->socks);
    uv_timer_stop(&c->curl_timer);
    uv_timer_stop(&c->pump_timer);
    uv_close((uv_handle_t *)&c->curl_timer, on_embedded_closed);
    uv_close((uv_handle_t *)&c->pump_timer, on_embedded_closed);
}
