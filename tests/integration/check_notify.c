/*
 * tests/integration/check_notify.c - `notify` webhooks against a real HTTP server.
 *
 * The "body" case checks the pure parts: which webhooks a DAG wants, the plain JSON body,
 * the Slack body and its limits, Slack detection and what log lines may say about a URL.
 * The Slack format is tested through notify_body(), so no DNS lookup of hooks.slack.com
 * is ever made.
 *
 * The "delivery" case runs a notifier against a tiny HTTP/1.1 server in a thread of the
 * test (struct http_server: a listening socket on 127.0.0.1:0, a thread per connection,
 * that records each request and answers with a scripted status, after an optional delay
 * or hold). Every wait is
 * bounded (WAIT_MS) and no assertion depends on a short timing: the only timing check is
 * a lower bound (Retry-After was waited for), which a slow machine cannot break. Log lines
 * are checked by pointing stderr at a file while the notifier runs.
 */
#include "scheduler/notify.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "dsl/dsl.h"
#include "tests/testutil.h"

#include <arpa/inet.h>
#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS      15000 /* the longest any test waits for something that should happen */
#define MAX_REQUESTS 32

/* --- helpers --------------------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* An event for dag "iris" whose run ended in state, to be sent to url. */
static struct notify_event event(const char *run_id, const char *state, const char *url)
{
    struct notify_event ev = {.dag_id = "iris",
                              .run_id = run_id,
                              .state = state,
                              .logical_time_ms = 1767323045000, /* 2026-01-02T03:04:05Z */
                              .started_at_ms = 1767323050000,   /* +5 s */
                              .ended_at_ms = 1767323133250,     /* +83.25 s */
                              .url = url};
    return ev;
}

/* --- the HTTP server ------------------------------------------------------------------- */

struct reply {
    int status;
    const char *headers; /* extra header lines, each ending in \r\n; or NULL */
    int delay_ms;        /* before answering (after the request was recorded) */
    int hold;            /* wait for http_server_release() before answering */
};

struct request {
    char *head; /* request line and headers */
    char *body;
    int64_t at_ms;
};

struct http_server {
    int fd;
    int port;
    pthread_t thread; /* accepts; each connection gets a thread of its own */
    pthread_t conns[2 * MAX_REQUESTS];
    size_t n_conns;
    pthread_mutex_t mu;
    int stop;
    int released;
    const struct reply *script; /* reply i answers request i; after it: 200 */
    size_t n_script;
    struct request reqs[MAX_REQUESTS];
    size_t n_reqs;
};

struct conn {
    struct http_server *s;
    int fd;
};

static int read_request(int fd, struct strbuf *head, struct strbuf *body)
{
    char buf[4096];
    size_t need = (size_t)-1, head_len = 0;
    struct strbuf all = STRBUF_INIT;
    int result = -1;
    for (;;) {
        if (head_len && all.len >= head_len + need) {
            result = 0;
            break;
        }
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, WAIT_MS) <= 0)
            break;
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        strbuf_add(&all, buf, (size_t)n);
        char *end = head_len ? NULL : strstr(all.buf, "\r\n\r\n");
        if (end) {
            head_len = (size_t)(end - all.buf) + 4;
            need = 0;
            for (char *h = all.buf; h && h < end; h = strstr(h, "\r\n"), h = h ? h + 2 : NULL) {
                if (!strncasecmp(h, "content-length:", 15))
                    need = (size_t)strtoul(h + 15, NULL, 10);
            }
        }
    }
    if (result == 0) {
        strbuf_add(head, all.buf, head_len);
        strbuf_add(body, all.buf + head_len, need);
    }
    strbuf_release(&all);
    return result;
}

/* One connection: records the request, then answers it as the script says. */
static void *http_conn_main(void *arg)
{
    struct conn *c = arg;
    struct http_server *s = c->s;
    struct strbuf head = STRBUF_INIT, body = STRBUF_INIT;
    if (read_request(c->fd, &head, &body) < 0)
        goto done;
    pthread_mutex_lock(&s->mu);
    size_t i = s->n_reqs;
    struct reply r = i < s->n_script ? s->script[i] : (struct reply){200, NULL, 0, 0};
    if (i < MAX_REQUESTS) {
        s->reqs[i].head = strbuf_detach(&head, NULL);
        s->reqs[i].body = strbuf_detach(&body, NULL);
        s->reqs[i].at_ms = now_ms();
        s->n_reqs++;
    }
    int64_t deadline = now_ms() + WAIT_MS;
    while (r.hold && !s->released && !s->stop && now_ms() < deadline) {
        pthread_mutex_unlock(&s->mu);
        sleep_ms(5);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    if (r.delay_ms)
        sleep_ms(r.delay_ms);
    const char *text = r.status < 300 ? "ok" : r.status == 404 ? "no_service" : "try later";
    char *resp = xasprintf("HTTP/1.1 %d Scripted\r\nContent-Type: text/plain\r\n"
                           "Content-Length: %zu\r\nConnection: close\r\n%s\r\n%s",
                           r.status, strlen(text), r.headers ? r.headers : "", text);
    ssize_t ignored = send(c->fd, resp, strlen(resp), MSG_NOSIGNAL);
    (void)ignored;
    free(resp);
done:
    strbuf_release(&head);
    strbuf_release(&body);
    close(c->fd);
    free(c);
    return NULL;
}

static void *http_server_main(void *arg)
{
    struct http_server *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            break;
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int fd = accept(s->fd, NULL, NULL);
        if (fd < 0)
            continue;
        if (s->n_conns == sizeof(s->conns) / sizeof(s->conns[0])) {
            close(fd);
            continue;
        }
        struct conn *c = xmalloc(sizeof(*c));
        *c = (struct conn){s, fd};
        if (pthread_create(&s->conns[s->n_conns], NULL, http_conn_main, c) != 0) {
            close(fd);
            free(c);
            continue;
        }
        s->n_conns++;
    }
    for (size_t i = 0; i < s->n_conns; i++)
        pthread_join(s->conns[i], NULL);
    return NULL;
}

static void http_server_start(struct http_server *s, const struct reply *script, size_t n)
{
    memset(s, 0, sizeof(*s));
    s->script = script;
    s->n_script = n;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(s->fd, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    ck_assert_int_eq(bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(s->fd, 16), 0);
    ck_assert_int_eq(getsockname(s->fd, (struct sockaddr *)&sa, &len), 0);
    s->port = ntohs(sa.sin_port);
    pthread_mutex_init(&s->mu, NULL);
    ck_assert_int_eq(pthread_create(&s->thread, NULL, http_server_main, s), 0);
}

static void http_server_release(struct http_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->released = 1;
    pthread_mutex_unlock(&s->mu);
}

static void http_server_stop(struct http_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    close(s->fd);
    for (size_t i = 0; i < s->n_reqs; i++) {
        free(s->reqs[i].head);
        free(s->reqs[i].body);
    }
    pthread_mutex_destroy(&s->mu);
}

static size_t http_server_count(struct http_server *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->n_reqs;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Waits (bounded) until the server has recorded n requests. */
static void wait_requests(struct http_server *s, size_t n)
{
    int64_t deadline = now_ms() + WAIT_MS;
    while (http_server_count(s) < n && now_ms() < deadline)
        sleep_ms(5);
    ck_assert_uint_ge(http_server_count(s), n);
}

static char *server_url(const struct http_server *s, const char *path)
{
    return xasprintf("http://127.0.0.1:%d%s", s->port, path);
}

/* A port nobody listens on: bound, read and closed. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* --- stats and logs -------------------------------------------------------------------- */

/* Waits (bounded) until *field of the notifier's stats reaches want. */
#define WAIT_STAT(n, field, want)                                                                  \
    do {                                                                                           \
        struct notifier_stats st_;                                                                 \
        int64_t deadline_ = now_ms() + WAIT_MS;                                                    \
        for (;;) {                                                                                 \
            notifier_stats((n), &st_);                                                             \
            if (st_.field >= (want) || now_ms() > deadline_)                                       \
                break;                                                                             \
            sleep_ms(5);                                                                           \
        }                                                                                          \
        ck_assert_msg(st_.field >= (want), "stats." #field " = %llu, expected %llu",               \
                      (unsigned long long)st_.field, (unsigned long long)(want));                  \
    } while (0)

/* stderr pointed at a file, for the log lines of one test. */
struct capture {
    int saved_fd;
    char path[64];
};

static void capture_start(struct capture *c)
{
    snprintf(c->path, sizeof(c->path), "/tmp/sluice-check-notify.XXXXXX");
    int fd = mkstemp(c->path);
    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    c->saved_fd = dup(2);
    ck_assert_int_ge(c->saved_fd, 0);
    ck_assert_int_ge(dup2(fd, 2), 0);
    close(fd);
}

/* Restores stderr; returns what was logged (caller frees) and echoes it for the record. */
static char *capture_end(struct capture *c)
{
    fflush(stderr);
    dup2(c->saved_fd, 2);
    close(c->saved_fd);
    char *log = test_read_file(c->path, NULL);
    unlink(c->path);
    fprintf(stderr, "%s", log);
    return log;
}

static size_t count_substr(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* --- body: which webhooks -------------------------------------------------------------- */

static struct dsl_dag *parse_dag(const char *yaml)
{
    struct dsl_diags diags;
    dsl_diags_init(&diags);
    struct dsl_dag *dag = NULL;
    int rc = dsl_parse_buffer(&dag, "t.yaml", yaml, strlen(yaml), NULL, &diags);
    if (rc != 0)
        dsl_diags_print(&diags, stderr);
    ck_assert_int_eq(rc, 0);
    dsl_diags_release(&diags);
    return dag;
}

START_TEST(test_wants)
{
    struct dsl_dag *dag = parse_dag("name: iris\n"
                                    "steps:\n"
                                    "  - name: a\n"
                                    "    command: [/bin/true]\n"
                                    "notify:\n"
                                    "  on_failure:\n"
                                    "    - https://hooks.slack.com/services/T/B/X\n"
                                    "    - http://example.com/hook\n");
    ck_assert(notify_wants(dag, "failed"));
    ck_assert(!notify_wants(dag, "succeeded"));
    ck_assert(!notify_wants(dag, "cancelled"));
    ck_assert(!notify_wants(dag, "running"));
    ck_assert(!notify_wants(NULL, "failed"));
    size_t n = 99;
    const char *const *urls = notify_urls(dag, "failed", &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(urls[1], "http://example.com/hook");
    ck_assert(notify_urls(dag, "succeeded", &n) == NULL && n == 0);

    /* notifier_send_run() sends one per URL, and none for an unwanted state. */
    struct notifier nt = {0};
    ck_assert_int_eq(notifier_start(&nt, &(struct notifier_options){.max_attempts = 1}), 0);
    struct notify_event ev = event("r1", "succeeded", NULL);
    ck_assert_uint_eq(notifier_send_run(&nt, dag, &ev), 0);
    notifier_stop(&nt, 0);
    notifier_release(&nt);
    dsl_dag_free(dag);

    dag = parse_dag("name: quiet\nsteps:\n  - name: a\n    command: [/bin/true]\n");
    ck_assert(!notify_wants(dag, "failed") && !notify_wants(dag, "succeeded"));
    dsl_dag_free(dag);
}
END_TEST

/* --- body: URLs ------------------------------------------------------------------------ */

START_TEST(test_slack_detection)
{
    ck_assert(notify_is_slack_url("https://hooks.slack.com/services/T000/B000/XXXX"));
    ck_assert(notify_is_slack_url("HTTPS://Hooks.Slack.COM/services/T000/B000/XXXX"));
    ck_assert(notify_is_slack_url("https://hooks.slack.com:443/services/T/B/X"));
    ck_assert(notify_is_slack_url("https://hooks.slack-gov.com/services/T/B/X"));
    ck_assert(!notify_is_slack_url("https://hooks.slack.com.evil.example/services/T/B/X"));
    ck_assert(!notify_is_slack_url("https://evil.example/hooks.slack.com/services"));
    ck_assert(!notify_is_slack_url("https://hooks.slack.com@evil.example/services"));
    ck_assert(!notify_is_slack_url("https://evil.example?x=hooks.slack.com"));
    ck_assert(!notify_is_slack_url("https://evil.example#@hooks.slack.com"));
    ck_assert(!notify_is_slack_url("https://slack.com/api/chat.postMessage"));
    ck_assert(!notify_is_slack_url("ftp://hooks.slack.com/x"));
    ck_assert(!notify_is_slack_url("hooks.slack.com/services/T/B/X"));
    ck_assert(!notify_is_slack_url("not a url"));
    ck_assert(!notify_is_slack_url(""));
    ck_assert(!notify_is_slack_url(NULL));
}
END_TEST

START_TEST(test_url_origin)
{
    static const struct {
        const char *url, *want;
    } cases[] = {
        {"https://hooks.slack.com/services/T000/B000/XXXX", "https://hooks.slack.com"},
        {"HTTP://User:Secret@Example.COM:8080/p/a/t/h?token=abc#frag", "http://example.com:8080"},
        {"http://127.0.0.1:1234", "http://127.0.0.1:1234"},
        {"https://[::1]:8443/x", "https://[::1]:8443"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = NULL;
        ck_assert_int_eq(notify_url_origin(&got, cases[i].url), 0);
        ck_assert_str_eq(got, cases[i].want);
        free(got);
    }
    char *untouched = NULL;
    ck_assert_int_eq(notify_url_origin(&untouched, "ftp://example.com/x"), SL_EINVAL);
    ck_assert_int_eq(notify_url_origin(&untouched, "file:///etc/passwd"), SL_EINVAL);
    ck_assert_int_eq(notify_url_origin(&untouched, "http://"), SL_EINVAL);
    ck_assert_int_eq(notify_url_origin(&untouched, "no scheme"), SL_EINVAL);
    ck_assert(untouched == NULL);
}
END_TEST

/* --- body: plain JSON ------------------------------------------------------------------ */

static cJSON *body_json(const struct notify_event *ev)
{
    struct strbuf sb = STRBUF_INIT;
    ck_assert_int_eq(notify_body(&sb, ev), 0);
    cJSON *j = cJSON_Parse(sb.buf);
    ck_assert_msg(j != NULL, "body is not JSON: %s", sb.buf);
    strbuf_release(&sb);
    return j;
}

static const char *jstr(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    ck_assert_msg(cJSON_IsString(v), "\"%s\" is not a string", key);
    return v->valuestring;
}

START_TEST(test_body_plain)
{
    static const struct notify_failed_step failed[] = {
        {"train", "exit code 1"},
        {"score[2]", NULL},
    };
    struct notify_event ev = event("manual__2026-01-02T03:04:05+00:00", "failed",
                                   "https://ci.example.com/hooks/sluice?token=s3cret");
    ev.failed_steps = failed;
    ev.n_failed_steps = 2;
    ev.api_base_url = "https://sluice.example.com/";
    cJSON *j = body_json(&ev);
    ck_assert_str_eq(jstr(j, "dag"), "iris");
    ck_assert_str_eq(jstr(j, "run_id"), "manual__2026-01-02T03:04:05+00:00");
    ck_assert_str_eq(jstr(j, "state"), "failed");
    ck_assert_str_eq(jstr(j, "logical_time"), "2026-01-02T03:04:05Z");
    ck_assert_str_eq(jstr(j, "started_at"), "2026-01-02T03:04:10Z");
    ck_assert_str_eq(jstr(j, "ended_at"), "2026-01-02T03:05:33Z");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "duration_s");
    ck_assert(cJSON_IsNumber(d));
    ck_assert_double_eq_tol(d->valuedouble, 83.25, 1e-9);
    const cJSON *fs = cJSON_GetObjectItemCaseSensitive(j, "failed_steps");
    ck_assert_int_eq(cJSON_GetArraySize(fs), 2);
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(fs, 0), "step"), "train");
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(fs, 0), "reason"), "exit code 1");
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(fs, 1), "step"), "score[2]");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(fs, 1), "reason")));
    ck_assert_str_eq(jstr(j, "url"), "https://sluice.example.com/api/v1/dags/iris/runs/"
                                     "manual__2026-01-02T03%3A04%3A05%2B00%3A00");
    ck_assert_int_eq(cJSON_GetArraySize(j), 9); /* exactly the documented keys */
    cJSON_Delete(j);

    /* A run that never started, succeeded (say, everything skipped), without an API. */
    ev = event("r\"1\n", "succeeded", "http://example.com/");
    ev.logical_time_ms = ev.started_at_ms = NOTIFY_NO_TIME;
    j = body_json(&ev);
    ck_assert_str_eq(jstr(j, "run_id"), "r\"1\n");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "logical_time")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "started_at")));
    ck_assert_str_eq(jstr(j, "ended_at"), "2026-01-02T03:05:33Z");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "duration_s")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "url")));
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "failed_steps")), 0);
    cJSON_Delete(j);

    /* Incomplete events are refused and leave the buffer alone. */
    struct strbuf sb = STRBUF_INIT;
    ev = event("r1", "failed", NULL);
    ck_assert_int_eq(notify_body(&sb, &ev), SL_EINVAL);
    ev = event(NULL, "failed", "http://example.com/");
    ck_assert_int_eq(notify_body(&sb, &ev), SL_EINVAL);
    ev = event("r1", "failed", "http://example.com/");
    ev.n_failed_steps = 1; /* and no array */
    ck_assert_int_eq(notify_body(&sb, &ev), SL_EINVAL);
    ck_assert_uint_eq(sb.len, 0);
}
END_TEST

/* --- body: Slack ----------------------------------------------------------------------- */

static const char *slack_url = "https://hooks.slack.com/services/T000/B000/XXXXXXXX";

/* Number of UTF-8 characters in s. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

/* Every text object of the message, checked against Slack's limits. */
static void assert_slack_limits(const cJSON *msg)
{
    const cJSON *blocks = cJSON_GetObjectItemCaseSensitive(msg, "blocks");
    ck_assert(cJSON_IsArray(blocks));
    ck_assert_int_le(cJSON_GetArraySize(blocks), 50);
    const cJSON *b;
    cJSON_ArrayForEach(b, blocks)
    {
        const char *type = jstr(b, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(b, "text");
        if (!strcmp(type, "header")) {
            ck_assert_str_eq(jstr(text, "type"), "plain_text");
            ck_assert_uint_le(utf8_chars(jstr(text, "text")), 150);
            continue;
        }
        ck_assert_str_eq(type, "section");
        if (text) {
            ck_assert_str_eq(jstr(text, "type"), "mrkdwn");
            ck_assert_uint_le(strlen(jstr(text, "text")), 3000);
        }
        const cJSON *fields = cJSON_GetObjectItemCaseSensitive(b, "fields");
        ck_assert(text || fields);
        if (fields) {
            ck_assert_int_le(cJSON_GetArraySize(fields), 10);
            const cJSON *f;
            cJSON_ArrayForEach(f, fields)
            {
                ck_assert_str_eq(jstr(f, "type"), "mrkdwn");
                ck_assert_uint_le(strlen(jstr(f, "text")), 2000);
            }
        }
    }
}

/* The blocks' texts, concatenated (fields included), for searching. */
static char *slack_all_text(const cJSON *msg)
{
    struct strbuf sb = STRBUF_INIT;
    const cJSON *b;
    cJSON_ArrayForEach(b, cJSON_GetObjectItemCaseSensitive(msg, "blocks"))
    {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(b, "text");
        if (text)
            strbuf_addf(&sb, "%s\n", jstr(text, "text"));
        const cJSON *f;
        cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(b, "fields"))
        {
            strbuf_addf(&sb, "%s\n", jstr(f, "text"));
        }
    }
    return strbuf_detach(&sb, NULL);
}

START_TEST(test_body_slack)
{
    static const struct notify_failed_step failed[] = {
        {"train", "exit code 1: <b>oops</b> & more"},
        {"deploy", "OOMKilled"},
    };
    struct notify_event ev = event("manual__2026-01-02T03:04:05Z", "failed", slack_url);
    ev.failed_steps = failed;
    ev.n_failed_steps = 2;
    ev.api_base_url = "https://sluice.example.com";
    cJSON *j = body_json(&ev);
    assert_slack_limits(j);
    ck_assert_str_eq(jstr(j, "text"), ":x: iris run manual__2026-01-02T03:04:05Z failed");
    const cJSON *blocks = cJSON_GetObjectItemCaseSensitive(j, "blocks");
    const cJSON *header = cJSON_GetArrayItem(blocks, 0);
    ck_assert_str_eq(jstr(header, "type"), "header");
    ck_assert_str_eq(jstr(cJSON_GetObjectItemCaseSensitive(header, "text"), "text"),
                     ":x: iris run manual__2026-01-02T03:04:05Z failed");
    ck_assert(cJSON_GetObjectItemCaseSensitive(j, "dag") == NULL); /* not the plain body */
    char *all = slack_all_text(j);
    ck_assert_msg(strstr(all, "*DAG*\n`iris`"), "%s", all);
    ck_assert_msg(strstr(all, "*Run*\n`manual__2026-01-02T03:04:05Z`"), "%s", all);
    ck_assert_msg(strstr(all, "*Logical time*\n2026-01-02T03:04:05Z"), "%s", all);
    ck_assert_msg(strstr(all, "*Duration*\n1m 23s"), "%s", all);
    ck_assert_msg(strstr(all, "|2026-01-02T03:04:10Z>"), "%s", all); /* started, fallback */
    ck_assert_msg(strstr(all, "*Failed steps*"), "%s", all);
    /* mrkdwn's three special characters are escaped. */
    ck_assert_msg(strstr(all, "`train`: exit code 1: &lt;b&gt;oops&lt;/b&gt; &amp; more"), "%s",
                  all);
    ck_assert_msg(strstr(all, "`deploy`: OOMKilled"), "%s", all);
    ck_assert_msg(strstr(all, "<https://sluice.example.com/api/v1/dags/iris/runs/"
                              "manual__2026-01-02T03%3A04%3A05Z|View the run in sluice>"),
                  "%s", all);
    free(all);
    cJSON_Delete(j);

    /* Success: a check mark, no failed steps section. */
    ev = event("scheduled__2026-01-02T00:00:00Z", "succeeded", slack_url);
    j = body_json(&ev);
    assert_slack_limits(j);
    ck_assert_str_eq(jstr(j, "text"),
                     ":white_check_mark: iris run scheduled__2026-01-02T00:00:00Z succeeded");
    all = slack_all_text(j);
    ck_assert(!strstr(all, "Failed steps"));
    free(all);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_body_slack_limits)
{
    /* A long run id, 200 failed steps with long reasons, and bytes that are not UTF-8. */
    char *run_id = xmalloc(1001);
    memset(run_id, 'r', 1000);
    run_id[1000] = '\0';
    memcpy(run_id, "\xc3\xa9t\xc3\xa9-", 6); /* "été-" */
    char *reason = xmalloc(5001);
    memset(reason, 'x', 5000);
    reason[5000] = '\0';
    memcpy(reason, "bad \xff\xfe bytes & <more>\n", 22);
    struct notify_failed_step *failed = xcalloc(200, sizeof(*failed));
    char names[200][24];
    for (int i = 0; i < 200; i++) {
        snprintf(names[i], sizeof(names[i]), "step-%d", i);
        failed[i].step = names[i];
        failed[i].reason = reason;
    }
    struct notify_event ev = event(run_id, "failed", slack_url);
    ev.failed_steps = failed;
    ev.n_failed_steps = 200;
    cJSON *j = body_json(&ev);
    assert_slack_limits(j);
    const cJSON *header = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "blocks"), 0);
    const char *htext = jstr(cJSON_GetObjectItemCaseSensitive(header, "text"), "text");
    ck_assert_uint_eq(utf8_chars(htext), 150);
    ck_assert(!strncmp(htext, ":x: iris run \xc3\xa9t\xc3\xa9-rrr", 20));
    ck_assert_str_eq(htext + strlen(htext) - 3, "\xe2\x80\xa6"); /* ends in "…" */
    char *all = slack_all_text(j);
    ck_assert_msg(strstr(all, "more_"), "no \"and N more\" line");
    ck_assert(strstr(all, "bad \xef\xbf\xbd\xef\xbf\xbd bytes &amp; &lt;more&gt; xxx"));
    free(all);
    cJSON_Delete(j);

    /* The plain body keeps every step, each reason shortened, all of it valid UTF-8. */
    ev.url = "https://example.com/hook";
    j = body_json(&ev);
    const cJSON *fs = cJSON_GetObjectItemCaseSensitive(j, "failed_steps");
    ck_assert_int_eq(cJSON_GetArraySize(fs), 200);
    const char *r0 = jstr(cJSON_GetArrayItem(fs, 0), "reason");
    ck_assert_uint_le(strlen(r0), 2000);
    ck_assert(!strncmp(r0, "bad \xef\xbf\xbd\xef\xbf\xbd bytes & <more>\nxx", 28));
    cJSON_Delete(j);
    free(failed);
    free(reason);
    free(run_id);
}
END_TEST

/* --- delivery -------------------------------------------------------------------------- */

/* libcurl honours the proxy variables; the test server is on loopback, never behind one. */
static void no_proxy_setup(void)
{
    const char *vars[] = {"http_proxy",  "HTTP_PROXY", "https_proxy",
                          "HTTPS_PROXY", "all_proxy",  "ALL_PROXY"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
}

/* Fast retries for tests; everything else default unless a test says otherwise. */
static const struct notifier_options fast = {
    .max_attempts = 5, .backoff_initial_ms = 10, .backoff_max_ms = 40, .timeout_ms = 5000};

static const char *header_value(const char *head, const char *name)
{
    static char value[256];
    size_t len = strlen(name);
    for (const char *h = strstr(head, "\r\n"); h; h = strstr(h, "\r\n")) {
        h += 2;
        if (!strncasecmp(h, name, len) && h[len] == ':') {
            const char *v = h + len + 1;
            while (*v == ' ')
                v++;
            snprintf(value, sizeof(value), "%.*s", (int)strcspn(v, "\r\n"), v);
            return value;
        }
    }
    return NULL;
}

START_TEST(test_deliver)
{
    struct http_server srv;
    http_server_start(&srv, NULL, 0);
    char *url = server_url(&srv, "/hook/secret-token?x=1");
    struct notifier nt = {0};
    ck_assert_int_eq(notifier_start(&nt, &fast), 0);
    static const struct notify_failed_step failed[] = {{"train", "exit code 2"}};
    struct notify_event ev = event("manual__1", "failed", url);
    ev.failed_steps = failed;
    ev.n_failed_steps = 1;
    ck_assert_int_eq(notifier_send(&nt, &ev), 0);
    WAIT_STAT(&nt, delivered, 1);
    notifier_stop(&nt, 1000);

    ck_assert_uint_eq(http_server_count(&srv), 1);
    const struct request *r = &srv.reqs[0];
    ck_assert_msg(!strncmp(r->head, "POST /hook/secret-token?x=1 HTTP/1.1\r\n", 38), "%s", r->head);
    ck_assert_str_eq(header_value(r->head, "Content-Type"), "application/json");
    ck_assert(!strncmp(header_value(r->head, "User-Agent"), "sluice/", 7));
    ck_assert(header_value(r->head, "Expect") == NULL);
    cJSON *j = cJSON_Parse(r->body);
    ck_assert_msg(j != NULL, "%s", r->body);
    ck_assert_str_eq(jstr(j, "dag"), "iris");
    ck_assert_str_eq(jstr(j, "run_id"), "manual__1");
    ck_assert_str_eq(jstr(j, "state"), "failed");
    ck_assert_str_eq(
        jstr(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "failed_steps"), 0), "reason"),
        "exit code 2");
    cJSON_Delete(j);

    struct notifier_stats st;
    notifier_stats(&nt, &st);
    ck_assert_uint_eq(st.queued, 1);
    ck_assert_uint_eq(st.attempts, 1);
    ck_assert_uint_eq(st.delivered, 1);
    ck_assert_uint_eq(st.failed + st.dropped, 0);
    notifier_release(&nt);
    http_server_stop(&srv);
    free(url);
}
END_TEST

START_TEST(test_retry_5xx)
{
    static const struct reply script[] = {{500, NULL, 0, 0}, {503, NULL, 0, 0}, {200, NULL, 0, 0}};
    struct http_server srv;
    http_server_start(&srv, script, 3);
    char *url = server_url(&srv, "/h");
    struct notifier nt = {0};
    ck_assert_int_eq(notifier_start(&nt, &fast), 0);
    struct notify_event ev = event("r1", "succeeded", url);
    ck_assert_int_eq(notifier_send(&nt, &ev), 0);
    WAIT_STAT(&nt, delivered, 1);
    notifier_stop(&nt, 1000);
    struct notifier_stats st;
    notifier_stats(&nt, &st);
    ck_assert_uint_eq(st.attempts, 3);
    ck_assert_uint_eq(st.delivered, 1);
    ck_assert_uint_eq(st.failed, 0);
    ck_assert_uint_eq(http_server_count(&srv), 3);
    /* The same body every time. */
    ck_assert_str_eq(srv.reqs[0].body, srv.reqs[2].body);
    notifier_release(&nt);
    http_server_stop(&srv);
    free(url);
}
END_TEST

START_TEST(test_retry_after_429)
{
    static const struct reply script[] = {{429, "Retry-After: 1\r\n", 0, 0}};
    struct http_server srv;
    http_server_start(&srv, script, 1);
    char *url = server_url(&srv, "/h");
    struct notifier nt = {0};
    ck_assert_int_eq(notifier_start(&nt, &fast), 0); /* backoff alone would be 10 ms */
    struct notify_event ev = event("r1", "failed", url);
    ck_assert_int_eq(notifier_send(&nt, &ev), 0);
    WAIT_STAT(&nt, delivered, 1);
    notifier_stop(&nt, 1000);
    ck_assert_uint_eq(http_server_count(&srv), 2);
    int64_t gap = srv.reqs[1].at_ms - srv.reqs[0].at_ms;
    ck_assert_msg(gap >= 900, "retried after %lld ms, before Retry-After's second", (long long)gap);
    notifier_release(&nt);
    http_server_stop(&srv);
    free(url);
}
END_TEST

START_TEST(test_4xx_not_retried)
{
    static const struct reply script[] = {{404, NULL, 0, 0}, {200, NULL, 0, 0}};
    struct http_server srv;
    http_server_start(&srv, script, 2);
    char *url = server_url(&srv, "/services/T0/B0/very-secret");
    struct capture cap;
    capture_start(&cap);
    struct notifier nt = {0};
    ck_assert_int_eq(notifier_start(&nt, &fast), 0);
    struct notify_event ev = event("r404", "failed", url);
    ck_assert_int_eq(notifier_send(&nt, &ev), 0);
    WAIT_STAT(&nt, failed, 1);
    notifier_stop(&nt, 1000);
    char *log = capture_end(&cap);
    struct notifier_stats st;
    notifier_stats(&nt, &st);
    ck_assert_uint_eq(st.attempts, 1);
    ck_assert_uint_eq(st.delivered, 0);
    ck_assert_uint_eq(http_server_count(&srv), 1);
    char *origin = xasprintf("\"http://127.0.0.1:%d\"", srv.port);
    ck_assert_msg(strstr(log, origin) && strstr(log, "HTTP 404 \"no_service\"") &&
                      strstr(log, "not retrying") && strstr(log, "run_id=r404"),
                  "%s", log);
    ck_assert_msg(!strstr(log, "very-secret") && !strstr(log, "/services"), "%s", log);
    free(origin);
    free(log);
    notifier_release(&nt);
    http_server_stop(&srv);
    free(url);
}
END_TEST

START_TEST(test_redirect_not_followed)
{
    static const struct reply script[] = {
        {301, "Location: http://127.0.0.1:9/elsewhere\r\n", 0, 0}};
    struct http_server srv;
    http_server_start(&srv, script, 1);
    char *url = server_url(&srv, "/h");
    struct notifier nt = {0};
    ck_assert_int_eq(notifier_start(&nt, &fast), 0);
    struct notify_event ev = event("r301", "failed", url);
    ck_assert_int_eq(notifier_send(&nt, &ev), 0);
    WAIT_STAT(&nt, failed, 1);
    notifier_stop(&nt, 1000);
    struct notifier_stats st;
    notifier_stats(&nt, &st);
    ck_assert_uint_eq(st.attempts, 1);
    ck_assert_uint_eq(http_server_count(&srv), 1);
    notifier_release(&nt);
    http_server_stop(&srv);
    free(url);
}
END_TEST

START_TEST(test_connection_refused)
{
    int port = closed_port();
    char *url = xasprintf("http://127.0.0.1:%d/services/T0/B0/very-secret", port);
    struct capture cap;
    capture_start(&cap);
    struct notifier nt = {0};
    struct notifier_options o = fast;
    o.max_attempts = 3;
    ck_assert_int_eq(notifier_start(&nt, &o), 0);
    struct notify_event ev = event("r-refused", "failed", url);
    ck_assert_int_eq(notifier_send(&nt, &ev), 0);
    WAIT_STAT(&nt, failed, 1);
    notifier_stop(&nt, 1000);
    char *log = capture_end(&cap);
    struct notifier_stats st;
    notifier_stats(&nt, &st);
    ck_assert_uint_eq(st.attempts, 3);
    ck_assert_uint_eq(st.delivered + st.dropped, 0);
    ck_assert_uint_eq(count_substr(log, "(attempt "), 2); /* two retries announced */
    ck_assert_msg(strstr(log, "giving up on the notification") && strstr(log, "after 3 attempts"),
                  "%s", log);
    char *origin = xasprintf("\"http://127.0.0.1:%d\"", port);
    ck_assert_msg(strstr(log, origin), "%s", log);
    ck_assert_msg(!strstr(log, "very-secret") && !strstr(log, "/services"), "%s", log);
    free(origin);
    free(log);
    notifier_release(&nt);
    free(url);
}
END_TEST

START_TEST(test_timeout_retried)
{
    /* The first answer comes long after the notifier's 300 ms timeout. */
    static const struct reply script[] = {{200, NULL, 2000, 0}};
    struct http_server srv;
    http_server_start(&srv, script, 1);
    char *url = server_url(&srv, "/h");
    struct notifier nt = {0};
    struct notifier_options o = fast;
    o.timeout_ms = 300;
    ck_assert_int_eq(notifier_start(&nt, &o), 0);
    struct notify_event ev = event("r-slow", "succeeded", url);
    ck_assert_int_eq(notifier_send(&nt, &ev), 0);
    WAIT_STAT(&nt, delivered, 1);
    notifier_stop(&nt, 1000);
    struct notifier_stats st;
    notifier_stats(&nt, &st);
    ck_assert_uint_ge(st.attempts, 2);
    ck_assert_uint_eq(st.delivered, 1);
    notifier_release(&nt);
    http_server_stop(&srv);
    free(url);
}
END_TEST

START_TEST(test_stop_drains)
{
    static const struct reply script[] = {
        {200, NULL, 50, 0}, {200, NULL, 50, 0}, {200, NULL, 50, 0}, {500, NULL, 0, 0}};
    struct http_server srv;
    http_server_start(&srv, script, 4);
    char *url = server_url(&srv, "/h");
    struct notifier nt = {0};
    ck_assert_int_eq(notifier_start(&nt, &fast), 0);
    char run_ids[5][16];
    for (int i = 0; i < 5; i++) {
        snprintf(run_ids[i], sizeof(run_ids[i]), "r%d", i);
        struct notify_event ev = event(run_ids[i], "succeeded", url);
        ck_assert_int_eq(notifier_send(&nt, &ev), 0);
    }
    /* Stopped at once: everything queued, a retry included, is still delivered. */
    notifier_stop(&nt, WAIT_MS);
    struct notifier_stats st;
    notifier_stats(&nt, &st);
    ck_assert_uint_eq(st.delivered, 5);
    ck_assert_uint_eq(st.dropped + st.failed, 0);
    ck_assert_uint_eq(http_server_count(&srv), 6);
    /* A stopped notifier refuses new work. */
    struct notify_event ev = event("late", "succeeded", url);
    ck_assert_int_eq(notifier_send(&nt, &ev), SL_EINVAL);
    notifier_release(&nt);
    http_server_stop(&srv);
    free(url);
}
END_TEST

START_TEST(test_stop_drops_after_deadline)
{
    struct http_server srv;
    static const struct reply script[] = {{500, NULL, 0, 0}, {500, NULL, 0, 0}};
    http_server_start(&srv, script, 2);
    char *url = server_url(&srv, "/h");
    struct capture cap;
    capture_start(&cap);
    struct notifier nt = {0};
    /* After a failure the next attempt is a minute away: far past the drain deadline. */
    struct notifier_options o = {.backoff_initial_ms = 60000, .timeout_ms = 5000};
    ck_assert_int_eq(notifier_start(&nt, &o), 0);
    struct notify_event a = event("r-a", "failed", url), b = event("r-b", "failed", url);
    ck_assert_int_eq(notifier_send(&nt, &a), 0);
    ck_assert_int_eq(notifier_send(&nt, &b), 0);
    WAIT_STAT(&nt, attempts, 2);
    int64_t t0 = now_ms();
    notifier_stop(&nt, 200);
    int64_t took = now_ms() - t0;
    char *log = capture_end(&cap);
    ck_assert_msg(took < WAIT_MS, "notifier_stop(200) took %lld ms", (long long)took);
    struct notifier_stats st;
    notifier_stats(&nt, &st);
    ck_assert_uint_eq(st.dropped, 2);
    ck_assert_uint_eq(st.delivered, 0);
    ck_assert_uint_eq(count_substr(log, "the notifier stopped before it could be delivered"), 2);
    ck_assert(strstr(log, "run_id=r-a") && strstr(log, "run_id=r-b"));
    free(log);
    notifier_release(&nt);
    http_server_stop(&srv);
    free(url);
}
END_TEST

START_TEST(test_stop_cuts_request_short)
{
    /* The server never answers in time; the notifier's own timeout is the default 10 s. */
    static const struct reply script[] = {{200, NULL, 0, 1}};
    struct http_server srv;
    http_server_start(&srv, script, 1);
    char *url = server_url(&srv, "/h");
    struct notifier nt = {0};
    ck_assert_int_eq(notifier_start(&nt, NULL), 0);
    struct notify_event ev = event("r-hung", "failed", url);
    ck_assert_int_eq(notifier_send(&nt, &ev), 0);
    wait_requests(&srv, 1);
    int64_t t0 = now_ms();
    notifier_stop(&nt, 200);
    int64_t took = now_ms() - t0;
    /* About 200 ms plus libcurl's once-a-second progress check; far below 10 s anyway. */
    ck_assert_msg(took < 8000, "notifier_stop(200) took %lld ms", (long long)took);
    struct notifier_stats st;
    notifier_stats(&nt, &st);
    ck_assert_uint_eq(st.dropped, 1);
    ck_assert_uint_eq(st.delivered, 0);
    http_server_release(&srv);
    notifier_release(&nt);
    http_server_stop(&srv);
    free(url);
}
END_TEST

START_TEST(test_queue_full_drops_oldest)
{
    /* The first request is held until released, so the queue fills up behind it. */
    static const struct reply script[] = {{200, NULL, 0, 1}};
    struct http_server srv;
    http_server_start(&srv, script, 1);
    char *url = server_url(&srv, "/h");
    struct capture cap;
    capture_start(&cap);
    struct notifier nt = {0};
    struct notifier_options o = fast;
    o.queue_capacity = 2;
    ck_assert_int_eq(notifier_start(&nt, &o), 0);
    const char *ids[] = {"A", "B", "C", "D"};
    struct notify_event ev = event(ids[0], "succeeded", url);
    ck_assert_int_eq(notifier_send(&nt, &ev), 0);
    wait_requests(&srv, 1); /* A is in flight, the queue is empty */
    for (int i = 1; i < 4; i++) {
        ev = event(ids[i], "succeeded", url);
        ck_assert_int_eq(notifier_send(&nt, &ev), 0);
    }
    struct notifier_stats st;
    notifier_stats(&nt, &st);
    ck_assert_uint_eq(st.dropped, 1); /* B, the oldest waiting */
    http_server_release(&srv);
    WAIT_STAT(&nt, delivered, 3);
    notifier_stop(&nt, 1000);
    char *log = capture_end(&cap);
    ck_assert_uint_eq(http_server_count(&srv), 3);
    const char *want[] = {"A", "C", "D"};
    for (int i = 0; i < 3; i++) {
        cJSON *j = cJSON_Parse(srv.reqs[i].body);
        ck_assert_str_eq(jstr(j, "run_id"), want[i]);
        cJSON_Delete(j);
    }
    ck_assert_msg(strstr(log, "the queue is full") && strstr(log, "run_id=B "), "%s", log);
    free(log);
    notifier_release(&nt);
    http_server_stop(&srv);
    free(url);
}
END_TEST

START_TEST(test_send_refused)
{
    struct notifier nt = {0};
    struct notify_event ev = event("r1", "failed", "http://127.0.0.1:9/h");
    ck_assert_int_eq(notifier_send(&nt, &ev), SL_EINVAL); /* never started */
    struct notifier_stats st;
    notifier_stats(&nt, &st);
    ck_assert_uint_eq(st.queued, 0);
    notifier_stop(&nt, 0); /* a no-op */

    ck_assert_int_eq(notifier_start(&nt, &fast), 0);
    ck_assert_int_eq(notifier_start(&nt, &fast), SL_EINVAL); /* already running */
    ev.url = "ftp://127.0.0.1/h";
    ck_assert_int_eq(notifier_send(&nt, &ev), SL_EINVAL);
    ev.url = "file:///etc/passwd";
    ck_assert_int_eq(notifier_send(&nt, &ev), SL_EINVAL);
    ev.url = NULL;
    ck_assert_int_eq(notifier_send(&nt, &ev), SL_EINVAL);
    ev = event("r1", NULL, "http://127.0.0.1:9/h");
    ck_assert_int_eq(notifier_send(&nt, &ev), SL_EINVAL);
    ck_assert_int_eq(notifier_send(&nt, NULL), SL_EINVAL);
    notifier_stats(&nt, &st);
    ck_assert_uint_eq(st.queued, 0);
    notifier_stop(&nt, 0);

    /* Stopped, it starts again. */
    ck_assert_int_eq(notifier_start(&nt, &fast), 0);
    notifier_release(&nt);
}
END_TEST

/* Many threads sending at once while the notifier delivers. */
struct sender {
    struct notifier *nt;
    const char *url;
    int id;
};

static void *send_many(void *arg)
{
    const struct sender *s = arg;
    for (int i = 0; i < 10; i++) {
        char run_id[32];
        snprintf(run_id, sizeof(run_id), "t%d-%d", s->id, i);
        struct notify_event ev = event(run_id, "succeeded", s->url);
        if (notifier_send(s->nt, &ev) != 0)
            return (void *)1;
    }
    return NULL;
}

START_TEST(test_concurrent_senders)
{
    struct http_server srv;
    http_server_start(&srv, NULL, 0);
    char *url = server_url(&srv, "/h");
    struct notifier nt = {0};
    ck_assert_int_eq(notifier_start(&nt, &fast), 0);
    pthread_t threads[3];
    struct sender senders[3];
    for (int i = 0; i < 3; i++) {
        senders[i] = (struct sender){&nt, url, i};
        ck_assert_int_eq(pthread_create(&threads[i], NULL, send_many, &senders[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        void *ret = NULL;
        pthread_join(threads[i], &ret);
        ck_assert(ret == NULL);
    }
    notifier_stop(&nt, WAIT_MS);
    struct notifier_stats st;
    notifier_stats(&nt, &st);
    ck_assert_uint_eq(st.queued, 30);
    ck_assert_uint_eq(st.delivered, 30);
    ck_assert_uint_eq(http_server_count(&srv), 30);
    notifier_release(&nt);
    http_server_stop(&srv);
    free(url);
}
END_TEST

Suite *suite_integration_notify(void)
{
    Suite *s = suite_create("integration_notify");

    TCase *tc = tcase_create("body");
    tcase_add_test(tc, test_wants);
    tcase_add_test(tc, test_slack_detection);
    tcase_add_test(tc, test_url_origin);
    tcase_add_test(tc, test_body_plain);
    tcase_add_test(tc, test_body_slack);
    tcase_add_test(tc, test_body_slack_limits);
    suite_add_tcase(s, tc);

    tc = tcase_create("delivery");
    tcase_add_checked_fixture(tc, no_proxy_setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_deliver);
    tcase_add_test(tc, test_retry_5xx);
    tcase_add_test(tc, test_retry_after_429);
    tcase_add_test(tc, test_4xx_not_retried);
    tcase_add_test(tc, test_redirect_not_followed);
    tcase_add_test(tc, test_connection_refused);
    tcase_add_test(tc, test_timeout_retried);
    tcase_add_test(tc, test_stop_drains);
    tcase_add_test(tc, test_stop_drops_after_deadline);
    tcase_add_test(tc, test_stop_cuts_request_short);
    tcase_add_test(tc, test_queue_full_drops_oldest);
    tcase_add_test(tc, test_send_refused);
    tcase_add_test(tc, test_concurrent_senders);
    suite_add_tcase(s, tc);
    return s;
}
