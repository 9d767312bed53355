/*
 * queue/conn.c - the Redis connection: URLs, connecting, reconnecting with backoff,
 * running one command with a deadline.
 *
 * hiredis is used in its blocking mode: each call writes a command and reads its
 * reply, with the socket's send and receive timeouts (SO_SNDTIMEO, SO_RCVTIMEO) as
 * the deadline, so no call waits forever. A command that fails at the I/O level leaves
 * the connection in an unknown protocol state, so it is dropped; the next call
 * reconnects. Reconnection attempts are spaced by a backoff that starts at
 * backoff_min_ms, doubles up to backoff_max_ms and has +-25% jitter so that a fleet of
 * workers does not reconnect in lockstep after a Redis restart. A call waits out the
 * backoff itself (bounded), which paces a caller that retries in a loop.
 *
 * A connection that was open before the call and fails with an I/O error (not a
 * timeout) is usually one Redis closed while idle, or a Redis that restarted: the call
 * reconnects at once and sends the command again. That is safe only because every
 * command of queue/ is safe to repeat (see queue.h); a timeout is not retried, because
 * the server may be stuck and the caller's deadline would double.
 *
 * SIGPIPE: hiredis writes with write(2), so a write to a connection the server closed
 * raises SIGPIPE, which kills a process that did not ignore it. A library must not
 * change the process's signal dispositions, so, as libpq does, each call blocks SIGPIPE
 * in the calling thread while it talks to Redis and consumes a SIGPIPE that it caused
 * before unblocking it.
 */
#include "queue/queue_int.h"
#include "common/error.h"
#include "common/log.h"
#include "common/xalloc.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    while (ms > 0 && nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static struct timeval timeval_ms(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* --- SIGPIPE ------------------------------------------------------------------------- */

struct sigpipe_guard {
    sigset_t old_mask;
    bool was_pending; /* a SIGPIPE was pending before: not ours to consume */
};

static void sigpipe_block(struct sigpipe_guard *g)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old_mask);
    g->was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
}

static void sigpipe_unblock(struct sigpipe_guard *g)
{
    sigset_t set, pending;
    if (!g->was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old_mask, NULL);
}

/* --- URLs ---------------------------------------------------------------------------- */

static int url_fail(char *reason, size_t reason_len, const char *msg)
{
    if (reason && reason_len)
        snprintf(reason, reason_len, "%s", msg);
    return SL_EINVAL;
}

/* Parses 1..max decimal digits of s[0..len) into *out. */
static bool parse_uint(int *out, const char *s, size_t len, int max)
{
    long v = 0;
    if (len == 0 || len > 9)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return false;
    *out = (int)v;
    return true;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* %-decodes s[0..len) into a new string, or returns NULL if an escape is malformed or
 * decodes to NUL. */
static char *percent_decode(const char *s, size_t len)
{
    char *out = xmalloc(len + 1), *o = out;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        int h = i + 1 < len ? hex_value(s[i + 1]) : -1;
        int l = i + 2 < len ? hex_value(s[i + 2]) : -1;
        if (h < 0 || l < 0 || (h == 0 && l == 0)) {
            free(out);
            return NULL;
        }
        *o++ = (char)(h * 16 + l);
        i += 2;
    }
    *o = '\0';
    return out;
}

void queue_url_release(struct queue_url *u)
{
    free(u->host);
    free(u->unix_path);
    free(u->user);
    free(u->password);
    memset(u, 0, sizeof(*u));
}

/* unix:///path/to/sock[?db=N] */
static int parse_unix_url(struct queue_url *u, const char *rest, char *reason, size_t reason_len)
{
    const char *q = strchr(rest, '?');
    size_t path_len = q ? (size_t)(q - rest) : strlen(rest);
    if (path_len < 2 || rest[0] != '/')
        return url_fail(reason, reason_len, "unix URL needs an absolute socket path");
    if (q) {
        if (strncmp(q + 1, "db=", 3) != 0 || !parse_uint(&u->db, q + 4, strlen(q + 4), 65535))
            return url_fail(reason, reason_len, "unix URL accepts only \"?db=N\"");
    }
    u->unix_path = xstrndup(rest, path_len);
    return 0;
}

/* redis://[[user]:password@]host[:port][/db] */
static int parse_tcp_url(struct queue_url *u, const char *rest, char *reason, size_t reason_len)
{
    size_t auth_len = strcspn(rest, "/?#");
    const char *after = rest + auth_len;
    const char *at = NULL;
    for (const char *p = rest; p < after; p++)
        if (*p == '@')
            at = p;
    const char *hostport = rest;
    if (at) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        if (!colon)
            return url_fail(reason, reason_len,
                            "credentials must read \"user:password@\" or \":password@\"");
        if (colon > rest && !(u->user = percent_decode(rest, (size_t)(colon - rest))))
            return url_fail(reason, reason_len, "bad %-escape in the user name");
        if (!(u->password = percent_decode(colon + 1, (size_t)(at - colon - 1))))
            return url_fail(reason, reason_len, "bad %-escape in the password");
        hostport = at + 1;
    }
    const char *host_end, *port_start = NULL;
    if (*hostport == '[') {
        host_end = memchr(hostport, ']', (size_t)(after - hostport));
        if (!host_end || host_end == hostport + 1)
            return url_fail(reason, reason_len, "unterminated \"[\" in the host");
        if (host_end + 1 < after) {
            if (host_end[1] != ':')
                return url_fail(reason, reason_len, "unexpected text after \"]\"");
            port_start = host_end + 2;
        }
        u->host = xstrndup(hostport + 1, (size_t)(host_end - hostport - 1));
    } else {
        host_end = memchr(hostport, ':', (size_t)(after - hostport));
        if (host_end)
            port_start = host_end + 1;
        else
            host_end = after;
        if (host_end == hostport)
            return url_fail(reason, reason_len, "missing host");
        u->host = xstrndup(hostport, (size_t)(host_end - hostport));
    }
    u->port = 6379;
    if (port_start &&
        (!parse_uint(&u->port, port_start, (size_t)(after - port_start), 65535) || u->port == 0))
        return url_fail(reason, reason_len, "port must be 1-65535");
    if (*after == '/' && after[1] != '\0') {
        if (!parse_uint(&u->db, after + 1, strlen(after + 1), 65535))
            return url_fail(reason, reason_len, "database must be a number 0-65535");
    } else if (*after != '\0' && strcmp(after, "/") != 0) {
        return url_fail(reason, reason_len, "unexpected query or fragment");
    }
    return 0;
}

int queue_url_parse(struct queue_url *out, const char *url, char *reason, size_t reason_len)
{
    struct queue_url u = {0};
    int result;
    if (!url)
        return url_fail(reason, reason_len, "no URL");
    if (!strncmp(url, "unix://", 7))
        result = parse_unix_url(&u, url + 7, reason, reason_len);
    else if (!strncmp(url, "redis://", 8))
        result = parse_tcp_url(&u, url + 8, reason, reason_len);
    else if (!strncmp(url, "rediss://", 9))
        result = url_fail(reason, reason_len, "TLS (rediss://) is not supported");
    else
        result = url_fail(reason, reason_len, "URL must start with redis:// or unix://");
    if (result < 0) {
        queue_url_release(&u);
        return result;
    }
    *out = u;
    return 0;
}

char *queue_url_describe(const struct queue_url *u)
{
    if (u->unix_path)
        return xasprintf("unix://%s?db=%d", u->unix_path, u->db);
    if (strchr(u->host, ':'))
        return xasprintf("redis://[%s]:%d/%d", u->host, u->port, u->db);
    return xasprintf("redis://%s:%d/%d", u->host, u->port, u->db);
}

/* --- Connecting ---------------------------------------------------------------------- */

static void queue_set_state(struct queue *q, enum queue_state next)
{
    /* The only legal moves are between the two states. */
    assert(q->state != next);
    assert(next == QUEUE_CONNECTED ? q->ctx != NULL : q->ctx == NULL);
    q->state = next;
}

/* The wait before the next attempt: backoff_ms +-25%, then the backoff doubles. */
static int next_backoff(struct queue *q)
{
    q->rng ^= q->rng << 13;
    q->rng ^= q->rng >> 7;
    q->rng ^= q->rng << 17;
    int base = q->backoff_ms;
    int wait = base - base / 4 + (int)(q->rng % (uint64_t)(base / 2 + 1));
    q->backoff_ms = base > q->backoff_max_ms / 2 ? q->backoff_max_ms : base * 2;
    return wait;
}

void queue_disconnect(struct queue *q, const char *why)
{
    if (q->state != QUEUE_CONNECTED)
        return;
    if (why) {
        sl_warn(QUEUE_LOG, "lost the connection to \"%s\": %s", q->where, why);
        q->down_logged = true;
    }
    redisFree(q->ctx);
    q->ctx = NULL;
    q->socket_timeout_ms = 0;
    queue_set_state(q, QUEUE_DISCONNECTED);
}

static void connect_failed(struct queue *q, const char *why)
{
    int wait = next_backoff(q);
    q->next_connect_ms = monotonic_ms() + wait;
    if (!q->down_logged)
        sl_warn(QUEUE_LOG, "cannot connect to \"%s\": %s", q->where, why);
    else
        sl_debug(QUEUE_LOG, "cannot connect to \"%s\": %s (next attempt in %d ms)", q->where, why,
                 wait);
    q->down_logged = true;
}

/* Pipelines AUTH, SELECT and one SCRIPT LOAD per script, then reads every reply. */
static int handshake(struct queue *q, redisContext *c, char *why, size_t why_len)
{
    int n_sent = 0, result = 0;
    if (q->url.password) {
        const char *argv[3] = {"AUTH", q->url.user ? q->url.user : q->url.password,
                               q->url.password};
        redisAppendCommandArgv(c, q->url.user ? 3 : 2, argv, NULL);
        n_sent++;
    }
    if (q->url.db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", q->url.db);
        const char *argv[2] = {"SELECT", db};
        redisAppendCommandArgv(c, 2, argv, NULL);
        n_sent++;
    }
    for (int i = 0; i < QUEUE_NSCRIPTS; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", queue_script_source[i]};
        redisAppendCommandArgv(c, 3, argv, NULL);
    }
    for (int i = 0; i < n_sent + QUEUE_NSCRIPTS; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK) {
            snprintf(why, why_len, "%s", c->errstr[0] ? c->errstr : "connection error");
            return SL_ECONN;
        }
        if (r->type == REDIS_REPLY_ERROR && result == 0) {
            /* The password is not in an error reply: Redis says only WRONGPASS etc. */
            snprintf(why, why_len, "%s refused: %s",
                     i < n_sent ? "authentication or SELECT" : "SCRIPT LOAD", r->str);
            result = i < n_sent ? SL_EINVAL : SL_ECONN;
        } else if (i >= n_sent && r->type == REDIS_REPLY_STRING && r->len == 40) {
            memcpy(q->shas[i - n_sent], r->str, 40);
            q->shas[i - n_sent][40] = '\0';
        } else if (i >= n_sent && result == 0) {
            snprintf(why, why_len, "unexpected reply to SCRIPT LOAD");
            result = SL_ECONN;
        }
        freeReplyObject(r);
    }
    return result;
}

int queue_connect(struct queue *q, bool now)
{
    if (q->state == QUEUE_CONNECTED)
        return 0;
    int64_t wait = q->next_connect_ms - monotonic_ms();
    if (!now && wait > 0)
        sleep_ms(wait);

    struct timeval tv = timeval_ms(q->connect_timeout_ms);
    struct sigpipe_guard guard;
    sigpipe_block(&guard);
    redisContext *c = q->url.unix_path ? redisConnectUnixWithTimeout(q->url.unix_path, tv)
                                       : redisConnectWithTimeout(q->url.host, q->url.port, tv);
    char why[256] = "";
    int result = 0;
    if (!c) {
        snprintf(why, sizeof(why), "out of memory");
        result = SL_ECONN;
    } else if (c->err) {
        snprintf(why, sizeof(why), "%s", c->errstr);
        result = SL_ECONN;
    } else {
        if (!q->url.unix_path)
            redisEnableKeepAlive(c);
        if (redisSetTimeout(c, timeval_ms(q->command_timeout_ms)) != REDIS_OK) {
            snprintf(why, sizeof(why), "cannot set the socket timeout");
            result = SL_ECONN;
        } else {
            result = handshake(q, c, why, sizeof(why));
        }
    }
    sigpipe_unblock(&guard);

    if (result < 0) {
        if (c)
            redisFree(c);
        connect_failed(q, why);
        return result;
    }
    q->ctx = c;
    q->socket_timeout_ms = q->command_timeout_ms;
    q->backoff_ms = q->backoff_min_ms;
    q->next_connect_ms = 0;
    q->generation++;
    queue_set_state(q, QUEUE_CONNECTED);
    if (q->down_logged)
        sl_info(QUEUE_LOG, "connected to \"%s\"", q->where);
    q->down_logged = false;
    return 0;
}

/* --- Commands ------------------------------------------------------------------------ */

void queue_cmd_init(struct queue_cmd *c)
{
    memset(c, 0, sizeof(*c));
    arena_init(&c->mem);
}

void queue_cmd_release(struct queue_cmd *c)
{
    free(c->argv);
    free(c->lens);
    arena_release(&c->mem);
    memset(c, 0, sizeof(*c));
}

void queue_cmd_addb(struct queue_cmd *c, const void *data, size_t len)
{
    size_t n = (size_t)c->argc + 1, alloc = c->alloc;
    XGROW(c->argv, c->alloc, n);
    XGROW(c->lens, alloc, n);
    c->argv[c->argc] = data;
    c->lens[c->argc] = len;
    c->argc++;
}

void queue_cmd_add(struct queue_cmd *c, const char *s)
{
    queue_cmd_addb(c, s, strlen(s));
}

void queue_cmd_addf(struct queue_cmd *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = arena_alloc(&c->mem, (size_t)len + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)len + 1, fmt, ap);
    va_end(ap);
    queue_cmd_addb(c, s, (size_t)len);
}

/* argv[1] is filled in by queue_run(), which knows the connection's sha. */
void queue_cmd_init_script(struct queue_cmd *c, enum queue_script script, int nkeys)
{
    queue_cmd_init(c);
    queue_cmd_add(c, "EVALSHA");
    queue_cmd_add(c, queue_script_source[script]); /* replaced by the sha when known */
    queue_cmd_addf(c, "%d", nkeys);
}

static enum queue_script script_of(const struct queue_cmd *c)
{
    for (int i = 0; i < QUEUE_NSCRIPTS; i++)
        if (c->argv[1] == queue_script_source[i])
            return (enum queue_script)i;
    return QUEUE_NSCRIPTS;
}

bool queue_reply_is(const redisReply *r, const char *code)
{
    size_t n = strlen(code);
    return r && r->type == REDIS_REPLY_ERROR && r->len >= n && !strncmp(r->str, code, n) &&
           (r->len == n || r->str[n] == ' ');
}

int queue_reply_fail(struct queue *q, redisReply *r, const char *what)
{
    if (r && r->type == REDIS_REPLY_ERROR)
        sl_error(QUEUE_LOG, "%s on \"%s\" failed: %s", what, q->where, r->str);
    else
        sl_error(QUEUE_LOG, "%s on \"%s\": unexpected reply (type %d)", what, q->where,
                 r ? r->type : -1);
    freeReplyObject(r);
    return SL_EIO;
}

/* Sends argv once on the open connection. NULL means the connection failed; *timed_out
 * says whether it was the deadline. */
static redisReply *send_once(struct queue *q, struct queue_cmd *cmd, int timeout_ms,
                             bool *timed_out)
{
    if (q->socket_timeout_ms != timeout_ms) {
        if (redisSetTimeout(q->ctx, timeval_ms(timeout_ms)) != REDIS_OK) {
            *timed_out = false;
            return NULL;
        }
        q->socket_timeout_ms = timeout_ms;
    }
    struct sigpipe_guard guard;
    sigpipe_block(&guard);
    errno = 0;
    redisReply *r = redisCommandArgv(q->ctx, cmd->argc, cmd->argv, cmd->lens);
    int saved_errno = errno;
    sigpipe_unblock(&guard);
    *timed_out =
        !r && q->ctx->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK);
    return r;
}

int queue_run(redisReply **out, struct queue *q, struct queue_cmd *cmd, int block_ms)
{
    enum queue_script script =
        cmd->argc > 1 && !strcmp(cmd->argv[0], "EVALSHA") ? script_of(cmd) : QUEUE_NSCRIPTS;
    int timeout_ms = q->command_timeout_ms;
    if (block_ms > 0)
        timeout_ms = block_ms > INT_MAX - timeout_ms ? INT_MAX : timeout_ms + block_ms;

    for (int attempt = 0;; attempt++) {
        bool was_open = q->state == QUEUE_CONNECTED;
        if (queue_connect(q, attempt > 0) < 0)
            return SL_ECONN; /* even if AUTH was refused: logged, and a call can only fail */
        if (script != QUEUE_NSCRIPTS) {
            cmd->argv[0] = "EVALSHA";
            cmd->lens[0] = 7;
            cmd->argv[1] = q->shas[script];
            cmd->lens[1] = strlen(q->shas[script]);
        }
        bool timed_out = false;
        redisReply *r = send_once(q, cmd, timeout_ms, &timed_out);
        if (r && script != QUEUE_NSCRIPTS && queue_reply_is(r, "NOSCRIPT")) {
            /* SCRIPT FLUSH since we connected: EVAL loads it again. */
            freeReplyObject(r);
            cmd->argv[0] = "EVAL";
            cmd->lens[0] = 4;
            cmd->argv[1] = queue_script_source[script];
            cmd->lens[1] = strlen(queue_script_source[script]);
            r = send_once(q, cmd, timeout_ms, &timed_out);
        }
        if (script != QUEUE_NSCRIPTS)
            cmd->argv[1] = queue_script_source[script]; /* so a retry finds the script */
        if (r) {
            *out = r;
            return 0;
        }
        char why[160];
        snprintf(why, sizeof(why), "%s%s", timed_out ? "no reply in time: " : "",
                 q->ctx->errstr[0] ? q->ctx->errstr : "connection error");
        queue_disconnect(q, why);
        if (timed_out || !was_open || attempt > 0)
            return SL_ECONN;
        /* An open connection was found dead: reconnect now and send it again. */
    }
}
