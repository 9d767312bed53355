/*
 * scheduler/notify.c - `notify` webhooks, delivered by a thread of their own.
 *
 * notifier_send() runs on the scheduler's thread: it checks the event, builds the body
 * (so the event's strings may die as soon as it returns) and appends a struct notify_item
 * to the queue. The notifier's thread takes the item that is due first, POSTs it with a
 * libcurl easy handle it alone uses, and then frees it, or puts it back with a due time
 * after the backoff. One request at a time: notifications are a handful per finished
 * run, and one slow webhook delaying the others by its timeout is acceptable.
 * NEEDSWORK: if a deployment ever notifies hundreds of webhooks a minute, move to the
 * multi interface and send in parallel.
 *
 * Locking: mu guards the state, the queue, the counters and drain_deadline_ms. The thread
 * drops it while a request is in flight; the item in flight belongs to the thread alone
 * and is in no queue, so a full queue cannot drop it. Outcomes are logged with mu
 * held: one write(2) to stderr each, never a network call, so notifier_send() waits no
 * longer than that.
 *
 * Why the Slack body is built here and not by Slack's own libraries: incoming webhooks
 * accept a plain JSON document with "text" (the fallback shown in notifications, mrkdwn)
 * and "blocks" (Block Kit: a header of plain text up to 150 characters, sections whose
 * mrkdwn text is up to 3000 characters or up to 10 fields of 2000). mrkdwn needs &, < and
 * > escaped as HTML entities; links are written <url|label>.
 */
#include "scheduler/notify.h"
#include "common/error.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "common/xalloc.h"

#include <assert.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* NEEDSWORK: the version belongs in common/ once the CLI prints one; until then the
 * build may pass -DSLUICE_VERSION="...". */
#ifndef SLUICE_VERSION
#define SLUICE_VERSION "0.1.0"
#endif

#define LOG_COMPONENT "notify"

/* Slack's limits (Block Kit reference), with a little room. */
#define SLACK_HEADER_MAX_CHARS  150
#define SLACK_FIELD_MAX_BYTES   1900
#define SLACK_SECTION_MAX_BYTES 2900
#define REASON_MAX_BYTES        2000 /* per failed step, in the plain JSON body */
#define SLACK_REASON_MAX_BYTES  300  /* per failed step, in the Slack list */
#define RESPONSE_EXCERPT_BYTES  160  /* of an error response, for the log */

struct notify_item {
    uint64_t seq;   /* order of notifier_send(): smaller is older */
    int attempts;   /* requests made so far */
    int64_t due_ms; /* monotonic: not before then */
    char *url;      /* the webhook, with its secrets: never logged */
    char *origin;   /* scheme://host[:port], what log lines say */
    char *path;     /* path and query, to keep them out of log lines; "" if none */
    char *body;     /* JSON */
    size_t body_len;
    char *dag_id; /* for log lines */
    char *run_id;
    char *state;
};

/* --- small utilities ----------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void item_free(struct notify_item *it)
{
    if (!it)
        return;
    free(it->url);
    free(it->origin);
    free(it->path);
    free(it->body);
    free(it->dag_id);
    free(it->run_id);
    free(it->state);
    free(it);
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if the bytes there are not one. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    unsigned lo = 0x80, hi = 0xbf;
    size_t n;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    }
    return n;
}

/*
 * Appends s to out as valid UTF-8 (an invalid byte becomes U+FFFD), with line breaks and
 * other control characters made spaces when one_line, and mrkdwn's &, < and > escaped
 * when mrkdwn. At most max_bytes are appended: a longer text is cut at a character (and
 * entity) boundary and ends in "…".
 */
static void add_text(struct strbuf *out, const char *s, size_t max_bytes, bool one_line,
                     bool mrkdwn)
{
    struct strbuf t = STRBUF_INIT;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_seq(p);
        if (n == 0) {
            strbuf_addstr(&t, "\xef\xbf\xbd");
            p++;
            continue;
        }
        if (n == 1 && one_line && (*p < 0x20 || *p == 0x7f))
            strbuf_addch(&t, ' ');
        else if (n == 1 && mrkdwn && *p == '&')
            strbuf_addstr(&t, "&amp;");
        else if (n == 1 && mrkdwn && *p == '<')
            strbuf_addstr(&t, "&lt;");
        else if (n == 1 && mrkdwn && *p == '>')
            strbuf_addstr(&t, "&gt;");
        else
            strbuf_add(&t, p, n);
        p += n;
    }
    if (t.len > max_bytes && max_bytes >= 3) {
        size_t cut = max_bytes - 3; /* room for the ellipsis */
        while (cut > 0 && ((unsigned char)t.buf[cut] & 0xc0) == 0x80)
            cut--;
        /* Never leave half an entity ("&am"): cut before its '&'. */
        for (size_t i = cut; i > 0 && i + 6 > cut; i--) {
            if (t.buf[i - 1] == ';')
                break;
            if (t.buf[i - 1] == '&') {
                cut = i - 1;
                break;
            }
        }
        t.len = cut;
        t.buf[cut] = '\0';
        strbuf_addstr(&t, "\xe2\x80\xa6");
    }
    strbuf_add(out, t.buf, t.len);
    strbuf_release(&t);
}

/* As add_text(), limited to max_chars characters rather than bytes (Slack's header). */
static void add_text_chars(struct strbuf *out, const char *s, size_t max_chars)
{
    struct strbuf t = STRBUF_INIT;
    add_text(&t, s, (size_t)-1, true, false);
    size_t chars = 0, cut = 0, i = 0;
    while (i < t.len) {
        if (chars == max_chars - 1)
            cut = i;
        chars++;
        i += utf8_seq((const unsigned char *)t.buf + i);
    }
    if (chars > max_chars) {
        t.len = cut;
        t.buf[cut] = '\0';
        strbuf_addstr(&t, "\xe2\x80\xa6");
    }
    strbuf_add(out, t.buf, t.len);
    strbuf_release(&t);
}

/* Appends s as a JSON string, made valid UTF-8 and at most max_bytes long. */
static void add_json_text(struct strbuf *out, const char *s, size_t max_bytes)
{
    struct strbuf t = STRBUF_INIT;
    add_text(&t, s, max_bytes, false, false);
    strbuf_add_json_string(out, t.buf);
    strbuf_release(&t);
}

static void format_time(char buf[32], int64_t unix_ms)
{
    sl_time_format_utc(buf, sl_floor_div(unix_ms, 1000));
}

static void add_json_time(struct strbuf *out, int64_t unix_ms)
{
    if (unix_ms == NOTIFY_NO_TIME) {
        strbuf_addstr(out, "null");
        return;
    }
    char buf[32];
    format_time(buf, unix_ms);
    strbuf_add_json_string(out, buf);
}

/* The run's duration in ms, or -1 if unknown. Clock skew never makes it negative. */
static int64_t duration_ms(const struct notify_event *ev)
{
    if (ev->started_at_ms == NOTIFY_NO_TIME || ev->ended_at_ms == NOTIFY_NO_TIME)
        return -1;
    return ev->ended_at_ms > ev->started_at_ms ? ev->ended_at_ms - ev->started_at_ms : 0;
}

/* "45s", "3m 05s", "1h 02m 03s". */
static void add_duration_text(struct strbuf *out, int64_t ms)
{
    int64_t s = ms / 1000;
    if (s < 60)
        strbuf_addf(out, "%llds", (long long)s);
    else if (s < 3600)
        strbuf_addf(out, "%lldm %02llds", (long long)(s / 60), (long long)(s % 60));
    else
        strbuf_addf(out, "%lldh %02lldm %02llds", (long long)(s / 3600), (long long)(s % 3600 / 60),
                    (long long)(s % 60));
}

static bool is_http_prefix(const char *s)
{
    return !strncasecmp(s, "http://", 7) || !strncasecmp(s, "https://", 8);
}

/* Percent-encodes s as one path segment (RFC 3986 unreserved characters stay). */
static void add_path_segment(struct strbuf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~')
            strbuf_addch(out, *p);
        else
            strbuf_addf(out, "%%%c%c", hex[*p >> 4], hex[*p & 15]);
    }
}

/* The run's address in the API, appended to out; false (nothing appended) without a
 * usable base URL. */
static bool add_run_link(struct strbuf *out, const struct notify_event *ev)
{
    const char *base = ev->api_base_url;
    if (!base || !is_http_prefix(base))
        return false;
    size_t len = strlen(base);
    while (len > 0 && base[len - 1] == '/')
        len--;
    strbuf_add(out, base, len);
    strbuf_addstr(out, "/api/v1/dags/");
    add_path_segment(out, ev->dag_id);
    strbuf_addstr(out, "/runs/");
    add_path_segment(out, ev->run_id);
    return true;
}

/* --- URLs ------------------------------------------------------------------------------ */

struct url_parts {
    char *scheme; /* lower-case */
    char *host;   /* lower-case; IPv6 in brackets */
    char *port;   /* as written, or NULL */
    char *path;   /* path plus "?query", or "" */
};

static void url_parts_release(struct url_parts *u)
{
    free(u->scheme);
    free(u->host);
    free(u->port);
    free(u->path);
    memset(u, 0, sizeof(*u));
}

static char *lower_dup(const char *s)
{
    char *d = xstrdup(s);
    for (char *c = d; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    return d;
}

/* Splits an http(s) URL with libcurl's own parser, the one the request will use. */
static int url_split(struct url_parts *out, const char *url)
{
    if (!url || !is_http_prefix(url))
        return SL_EINVAL;
    CURLU *h = curl_url();
    if (!h)
        return SL_EINVAL;
    struct url_parts u = {0};
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL;
    int result = SL_EINVAL;
    if (curl_url_set(h, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host)
        goto cleanup;
    if (curl_url_get(h, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        port = NULL; /* CURLUE_NO_PORT: none written */
    if (curl_url_get(h, CURLUPART_PATH, &path, 0) != CURLUE_OK)
        path = NULL;
    if (curl_url_get(h, CURLUPART_QUERY, &query, 0) != CURLUE_OK)
        query = NULL;
    u.scheme = lower_dup(scheme);
    if (strcmp(u.scheme, "http") && strcmp(u.scheme, "https")) {
        url_parts_release(&u);
        goto cleanup;
    }
    u.host = lower_dup(host);
    u.port = port ? xstrdup(port) : NULL;
    u.path = xasprintf("%s%s%s", path && strcmp(path, "/") ? path : "", query ? "?" : "",
                       query ? query : "");
    *out = u;
    result = 0;
cleanup:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(query);
    curl_url_cleanup(h);
    return result;
}

bool notify_is_slack_url(const char *url)
{
    struct url_parts u;
    if (url_split(&u, url) < 0)
        return false;
    bool slack = !strcmp(u.host, "hooks.slack.com") || !strcmp(u.host, "hooks.slack-gov.com");
    url_parts_release(&u);
    return slack;
}

int notify_url_origin(char **out, const char *url)
{
    struct url_parts u;
    int result = url_split(&u, url);
    if (result < 0)
        return result;
    *out = xasprintf("%s://%s%s%s", u.scheme, u.host, u.port ? ":" : "", u.port ? u.port : "");
    url_parts_release(&u);
    return 0;
}

/* --- which webhooks --------------------------------------------------------------------- */

const char *const *notify_urls(const struct dsl_dag *dag, const char *state, size_t *out_n)
{
    *out_n = 0;
    if (!dag || !state)
        return NULL;
    if (!strcmp(state, "succeeded") && dag->n_notify_on_success) {
        *out_n = dag->n_notify_on_success;
        return (const char *const *)dag->notify_on_success;
    }
    if (!strcmp(state, "failed") && dag->n_notify_on_failure) {
        *out_n = dag->n_notify_on_failure;
        return (const char *const *)dag->notify_on_failure;
    }
    return NULL;
}

bool notify_wants(const struct dsl_dag *dag, const char *state)
{
    size_t n;
    return notify_urls(dag, state, &n) != NULL;
}

/* --- bodies ----------------------------------------------------------------------------- */

static void plain_body(struct strbuf *sb, const struct notify_event *ev)
{
    strbuf_addstr(sb, "{\"dag\":");
    add_json_text(sb, ev->dag_id, (size_t)-1);
    strbuf_addstr(sb, ",\"run_id\":");
    add_json_text(sb, ev->run_id, (size_t)-1);
    strbuf_addstr(sb, ",\"state\":");
    add_json_text(sb, ev->state, (size_t)-1);
    strbuf_addstr(sb, ",\"logical_time\":");
    add_json_time(sb, ev->logical_time_ms);
    strbuf_addstr(sb, ",\"started_at\":");
    add_json_time(sb, ev->started_at_ms);
    strbuf_addstr(sb, ",\"ended_at\":");
    add_json_time(sb, ev->ended_at_ms);
    strbuf_addstr(sb, ",\"duration_s\":");
    int64_t d = duration_ms(ev);
    if (d < 0)
        strbuf_addstr(sb, "null");
    else if (d % 1000 == 0)
        strbuf_addf(sb, "%lld", (long long)(d / 1000));
    else
        strbuf_addf(sb, "%lld.%03lld", (long long)(d / 1000), (long long)(d % 1000));
    strbuf_addstr(sb, ",\"failed_steps\":[");
    for (size_t i = 0; i < ev->n_failed_steps; i++) {
        const struct notify_failed_step *f = &ev->failed_steps[i];
        strbuf_addstr(sb, i ? ",{\"step\":" : "{\"step\":");
        add_json_text(sb, f->step ? f->step : "", (size_t)-1);
        strbuf_addstr(sb, ",\"reason\":");
        if (f->reason)
            add_json_text(sb, f->reason, REASON_MAX_BYTES);
        else
            strbuf_addstr(sb, "null");
        strbuf_addch(sb, '}');
    }
    strbuf_addstr(sb, "],\"url\":");
    struct strbuf link = STRBUF_INIT;
    if (add_run_link(&link, ev))
        strbuf_add_json_string(sb, link.buf);
    else
        strbuf_addstr(sb, "null");
    strbuf_release(&link);
    strbuf_addch(sb, '}');
}

/* One entry of a section's "fields": "*label*\nvalue", value already mrkdwn. */
static void slack_field(struct strbuf *sb, bool *first, const char *label, const char *value)
{
    struct strbuf t = STRBUF_INIT;
    strbuf_addf(&t, "*%s*\n", label);
    strbuf_addstr(&t, value);
    strbuf_addstr(sb,
                  *first ? "{\"type\":\"mrkdwn\",\"text\":" : ",{\"type\":\"mrkdwn\",\"text\":");
    strbuf_add_json_string(sb, t.buf);
    strbuf_addch(sb, '}');
    *first = false;
    strbuf_release(&t);
}

/* A time as Slack shows it to each reader in their own zone, UTC as the fallback. */
static void slack_time(struct strbuf *out, int64_t unix_ms)
{
    char buf[32];
    format_time(buf, unix_ms);
    strbuf_addf(out, "<!date^%lld^{date_short_pretty} {time_secs}|%s>",
                (long long)sl_floor_div(unix_ms, 1000), buf);
}

/* The mrkdwn list of failed steps, within Slack's section limit. */
static void slack_failed_list(struct strbuf *out, const struct notify_event *ev)
{
    strbuf_addstr(out, "*Failed steps*");
    for (size_t i = 0; i < ev->n_failed_steps; i++) {
        const struct notify_failed_step *f = &ev->failed_steps[i];
        struct strbuf line = STRBUF_INIT;
        strbuf_addstr(&line, "\n\xe2\x80\xa2 `");
        add_text(&line, f->step ? f->step : "", 200, true, true);
        strbuf_addch(&line, '`');
        if (f->reason && *f->reason) {
            strbuf_addstr(&line, ": ");
            add_text(&line, f->reason, SLACK_REASON_MAX_BYTES, true, true);
        }
        /* Leave room for the "and N more" line. */
        if (out->len + line.len + 40 > SLACK_SECTION_MAX_BYTES) {
            strbuf_addf(out,
                        "\n_\xe2\x80\xa6"
                        "and %zu more_",
                        ev->n_failed_steps - i);
            strbuf_release(&line);
            break;
        }
        strbuf_add(out, line.buf, line.len);
        strbuf_release(&line);
    }
}

static void slack_body(struct strbuf *sb, const struct notify_event *ev)
{
    const char *emoji = !strcmp(ev->state, "succeeded") ? ":white_check_mark:"
                        : !strcmp(ev->state, "failed")  ? ":x:"
                                                        : ":information_source:";
    char *title = xasprintf("%s %s run %s %s", emoji, ev->dag_id, ev->run_id, ev->state);
    struct strbuf t = STRBUF_INIT;

    strbuf_addstr(sb, "{\"text\":");
    add_text(&t, title, SLACK_SECTION_MAX_BYTES, true, true);
    strbuf_add_json_string(sb, t.buf);

    strbuf_reset(&t);
    add_text_chars(&t, title, SLACK_HEADER_MAX_CHARS);
    strbuf_addstr(sb,
                  ",\"blocks\":[{\"type\":\"header\",\"text\":{\"type\":\"plain_text\",\"text\":");
    strbuf_add_json_string(sb, t.buf);
    strbuf_addstr(sb, ",\"emoji\":true}}");

    /* The facts, two columns. */
    bool first = true;
    strbuf_addstr(sb, ",{\"type\":\"section\",\"fields\":[");
    strbuf_reset(&t);
    strbuf_addch(&t, '`');
    add_text(&t, ev->dag_id, SLACK_FIELD_MAX_BYTES, true, true);
    strbuf_addch(&t, '`');
    slack_field(sb, &first, "DAG", t.buf);
    strbuf_reset(&t);
    strbuf_addch(&t, '`');
    add_text(&t, ev->run_id, SLACK_FIELD_MAX_BYTES, true, true);
    strbuf_addch(&t, '`');
    slack_field(sb, &first, "Run", t.buf);
    strbuf_reset(&t);
    add_text(&t, ev->state, SLACK_FIELD_MAX_BYTES, true, true);
    slack_field(sb, &first, "State", t.buf);
    if (ev->logical_time_ms != NOTIFY_NO_TIME) {
        char buf[32];
        format_time(buf, ev->logical_time_ms);
        slack_field(sb, &first, "Logical time", buf);
    }
    if (ev->started_at_ms != NOTIFY_NO_TIME) {
        strbuf_reset(&t);
        slack_time(&t, ev->started_at_ms);
        slack_field(sb, &first, "Started", t.buf);
    }
    int64_t d = duration_ms(ev);
    if (d >= 0) {
        strbuf_reset(&t);
        add_duration_text(&t, d);
        slack_field(sb, &first, "Duration", t.buf);
    }
    strbuf_addstr(sb, "]}");

    if (ev->n_failed_steps > 0) {
        strbuf_reset(&t);
        slack_failed_list(&t, ev);
        strbuf_addstr(sb, ",{\"type\":\"section\",\"text\":{\"type\":\"mrkdwn\",\"text\":");
        strbuf_add_json_string(sb, t.buf);
        strbuf_addstr(sb, "}}");
    }

    struct strbuf link = STRBUF_INIT;
    if (add_run_link(&link, ev)) {
        strbuf_reset(&t);
        strbuf_addch(&t, '<');
        add_text(&t, link.buf, SLACK_SECTION_MAX_BYTES - 40, true, true);
        strbuf_addstr(&t, "|View the run in sluice>");
        strbuf_addstr(sb, ",{\"type\":\"section\",\"text\":{\"type\":\"mrkdwn\",\"text\":");
        strbuf_add_json_string(sb, t.buf);
        strbuf_addstr(sb, "}}");
    }
    strbuf_release(&link);
    strbuf_addstr(sb, "]}");
    strbuf_release(&t);
    free(title);
}

static bool event_complete(const struct notify_event *ev)
{
    return ev && ev->dag_id && *ev->dag_id && ev->run_id && *ev->run_id && ev->state &&
           *ev->state && ev->url && (ev->n_failed_steps == 0 || ev->failed_steps);
}

int notify_body(struct strbuf *out, const struct notify_event *ev)
{
    if (!event_complete(ev))
        return SL_EINVAL;
    if (notify_is_slack_url(ev->url))
        slack_body(out, ev);
    else
        plain_body(out, ev);
    return 0;
}

/* --- the notifier's state and queue ------------------------------------------------------ */

/* The one place the state changes; asserts the diagram in notify.h. Called with mu held
 * (or before the thread exists). */
static void notifier_set_state(struct notifier *n, enum notifier_state to)
{
    enum notifier_state from = n->state;
    assert((from == NOTIFIER_STOPPED && to == NOTIFIER_RUNNING) ||
           (from == NOTIFIER_RUNNING && to == NOTIFIER_DRAINING) ||
           (from == NOTIFIER_DRAINING && to == NOTIFIER_STOPPED));
    (void)from;
    n->state = to;
}

static void log_dropped(const struct notify_item *it, const char *why)
{
    sl_warn(LOG_COMPONENT,
            "dropped the notification to \"%s\" (%s) dag_id=%s run_id=%s state=%s attempts=%d",
            it->origin, why, it->dag_id, it->run_id, it->state, it->attempts);
}

/* Adds it to the queue, dropping the oldest notification if the queue is full. mu held. */
static void enqueue_locked(struct notifier *n, struct notify_item *it)
{
    if (n->n_queue >= n->opts.queue_capacity) {
        size_t oldest = 0;
        for (size_t i = 1; i < n->n_queue; i++) {
            if (n->queue[i]->seq < n->queue[oldest]->seq)
                oldest = i;
        }
        struct notify_item *victim = n->queue[oldest];
        if (victim->seq > it->seq) { /* it is older than everything queued */
            victim = it;
        } else {
            n->queue[oldest] = n->queue[--n->n_queue];
        }
        log_dropped(victim, "the queue is full");
        n->stats.dropped++;
        item_free(victim);
        if (victim == it)
            return;
    }
    n->queue[n->n_queue++] = it;
}

/* Removes and returns the queued notification that is due first. mu held, queue not empty. */
static struct notify_item *take_earliest_locked(struct notifier *n, bool remove)
{
    size_t best = 0;
    for (size_t i = 1; i < n->n_queue; i++) {
        const struct notify_item *a = n->queue[i], *b = n->queue[best];
        if (a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq))
            best = i;
    }
    struct notify_item *it = n->queue[best];
    if (remove)
        n->queue[best] = n->queue[--n->n_queue];
    return it;
}

/* Waits on cond until the monotonic time until_ms, or a signal. mu held. */
static void wait_until_locked(struct notifier *n, int64_t until_ms)
{
    struct timespec ts = {(time_t)(until_ms / 1000), (long)(until_ms % 1000) * 1000000L};
    int rc = pthread_cond_timedwait(&n->cond, &n->mu, &ts);
    (void)rc; /* ETIMEDOUT and spurious wake-ups alike: the caller looks again */
}

/* --- one request ----------------------------------------------------------------------- */

enum outcome { OUTCOME_DELIVERED, OUTCOME_RETRY, OUTCOME_PERMANENT };

struct excerpt {
    char buf[RESPONSE_EXCERPT_BYTES + 1];
    size_t len;
};

/* CURLOPT_WRITEFUNCTION: keeps the start of the response for the log, drops the rest. */
static size_t on_response_data(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct excerpt *ex = userdata;
    size_t total = size * nmemb;
    for (size_t i = 0; i < total && ex->len < RESPONSE_EXCERPT_BYTES; i++) {
        unsigned char c = (unsigned char)data[i];
        ex->buf[ex->len++] = c >= 0x20 && c < 0x7f ? (char)c : ' ';
    }
    ex->buf[ex->len] = '\0';
    return total;
}

/* CURLOPT_XFERINFOFUNCTION: cuts a request short when notifier_stop()'s time is up. */
static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    struct notifier *n = userdata;
    pthread_mutex_lock(&n->mu);
    int stop = n->state == NOTIFIER_DRAINING && mono_ms() >= n->drain_deadline_ms;
    pthread_mutex_unlock(&n->mu);
    return stop;
}

/* Whether text would reveal the webhook's path or query (some servers echo them). */
static bool reveals_secret(const struct notify_item *it, const char *text)
{
    return it->path[0] && strstr(text, it->path);
}

/*
 * POSTs it once. Sets *why to a log-safe description of a failure and *retry_after_ms to
 * the server's Retry-After (or -1).
 */
static enum outcome deliver(struct notifier *n, CURL *curl, struct curl_slist *headers,
                            const struct notify_item *it, long timeout_ms, struct strbuf *why,
                            int64_t *retry_after_ms)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct excerpt ex = {{0}, 0};
    *retry_after_ms = -1;
    curl_easy_reset(curl); /* keeps live connections for reuse */
    curl_easy_setopt(curl, CURLOPT_URL, it->url);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, it->body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)it->body_len);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "sluice/" SLUICE_VERSION);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L); /* not the process's signals: a thread */
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_response_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &ex);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, n);

    CURLcode res = curl_easy_perform(curl);
    if (res != CURLE_OK) {
        const char *msg =
            errbuf[0] && !reveals_secret(it, errbuf) ? errbuf : curl_easy_strerror(res);
        if (res == CURLE_ABORTED_BY_CALLBACK) /* on_progress(): notifier_stop()'s deadline */
            msg = "cut short: the notifier is stopping";
        strbuf_addstr(why, msg);
        /* A URL curl cannot use will not get better by waiting. */
        if (res == CURLE_UNSUPPORTED_PROTOCOL || res == CURLE_URL_MALFORMAT)
            return OUTCOME_PERMANENT;
        return OUTCOME_RETRY;
    }
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300)
        return OUTCOME_DELIVERED;
    strbuf_addf(why, "HTTP %ld", status);
    if (ex.len && !reveals_secret(it, ex.buf))
        strbuf_addf(why, " \"%s\"", ex.buf);
    if (status >= 300 && status < 400)
        strbuf_addstr(why, " (redirects are not followed)");
    curl_off_t retry_after = -1;
    if (curl_easy_getinfo(curl, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK && retry_after > 0)
        *retry_after_ms = retry_after > NOTIFY_RETRY_AFTER_MAX_MS / 1000
                              ? NOTIFY_RETRY_AFTER_MAX_MS
                              : (int64_t)retry_after * 1000;
    if (status == 429 || status >= 500)
        return OUTCOME_RETRY;
    return OUTCOME_PERMANENT;
}

/* The pause after the attempts-th failed attempt. */
static int64_t backoff_ms(const struct notifier_options *o, int attempts)
{
    int64_t d = o->backoff_initial_ms;
    for (int i = 1; i < attempts && d < o->backoff_max_ms; i++)
        d *= 2;
    return d < o->backoff_max_ms ? d : o->backoff_max_ms;
}

/* Decides what becomes of it after an attempt. mu held. */
static void after_attempt_locked(struct notifier *n, struct notify_item *it, enum outcome oc,
                                 const char *why, int64_t retry_after_ms)
{
    const struct notifier_options *o = &n->opts;
    if (oc == OUTCOME_DELIVERED) {
        n->stats.delivered++;
        sl_info(LOG_COMPONENT, "notified \"%s\" dag_id=%s run_id=%s state=%s attempts=%d",
                it->origin, it->dag_id, it->run_id, it->state, it->attempts);
        item_free(it);
        return;
    }
    if (oc == OUTCOME_PERMANENT) {
        n->stats.failed++;
        sl_warn(LOG_COMPONENT,
                "notification to \"%s\" failed: %s; not retrying dag_id=%s run_id=%s state=%s",
                it->origin, why, it->dag_id, it->run_id, it->state);
        item_free(it);
        return;
    }
    if (it->attempts >= o->max_attempts) {
        n->stats.failed++;
        sl_warn(LOG_COMPONENT,
                "giving up on the notification to \"%s\" after %d attempts: %s dag_id=%s "
                "run_id=%s state=%s",
                it->origin, it->attempts, why, it->dag_id, it->run_id, it->state);
        item_free(it);
        return;
    }
    int64_t delay = retry_after_ms >= 0 ? retry_after_ms : backoff_ms(o, it->attempts);
    it->due_ms = mono_ms() + delay;
    if (n->state == NOTIFIER_DRAINING && it->due_ms >= n->drain_deadline_ms) {
        /* The thread drops it next, with a line of its own. */
        sl_warn(LOG_COMPONENT,
                "notification to \"%s\" failed (attempt %d of %d): %s; no time left to retry "
                "dag_id=%s run_id=%s state=%s",
                it->origin, it->attempts, o->max_attempts, why, it->dag_id, it->run_id, it->state);
        enqueue_locked(n, it);
        return;
    }
    sl_warn(LOG_COMPONENT,
            "notification to \"%s\" failed (attempt %d of %d): %s; retrying in %lld ms "
            "dag_id=%s run_id=%s state=%s",
            it->origin, it->attempts, o->max_attempts, why, (long long)delay, it->dag_id,
            it->run_id, it->state);
    enqueue_locked(n, it);
}

/* --- the thread ------------------------------------------------------------------------- */

static void *notifier_main(void *arg)
{
    struct notifier *n = arg;
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = NULL;
    /* An empty Expect: keeps curl from waiting for "100 Continue" on larger bodies. */
    const char *const header_lines[] = {"Content-Type: application/json", "Expect:"};
    for (size_t i = 0; curl && i < sizeof(header_lines) / sizeof(header_lines[0]); i++) {
        struct curl_slist *h = curl_slist_append(headers, header_lines[i]);
        if (!h) {
            sl_error(LOG_COMPONENT, "out of memory");
            abort();
        }
        headers = h;
    }
    if (!curl)
        sl_error(LOG_COMPONENT, "cannot create a libcurl handle; notifications are dropped");

    pthread_mutex_lock(&n->mu);
    for (;;) {
        int64_t now = mono_ms();
        bool draining = n->state == NOTIFIER_DRAINING;
        if (draining && (n->n_queue == 0 || now >= n->drain_deadline_ms))
            break;
        if (n->n_queue == 0) {
            pthread_cond_wait(&n->cond, &n->mu);
            continue;
        }
        const struct notify_item *next = take_earliest_locked(n, false);
        if (next->due_ms > now) {
            if (draining && next->due_ms >= n->drain_deadline_ms)
                break; /* nothing more can be sent in time */
            int64_t until = next->due_ms;
            if (draining && n->drain_deadline_ms < until)
                until = n->drain_deadline_ms;
            wait_until_locked(n, until);
            continue;
        }
        struct notify_item *it = take_earliest_locked(n, true);
        long timeout_ms = n->opts.timeout_ms;
        if (draining && n->drain_deadline_ms - now < timeout_ms)
            timeout_ms = (long)(n->drain_deadline_ms - now);
        if (timeout_ms < 1)
            timeout_ms = 1;
        it->attempts++;
        n->stats.attempts++;
        pthread_mutex_unlock(&n->mu);

        struct strbuf why = STRBUF_INIT;
        int64_t retry_after_ms = -1;
        enum outcome oc = OUTCOME_RETRY;
        if (curl)
            oc = deliver(n, curl, headers, it, timeout_ms, &why, &retry_after_ms);
        else
            strbuf_addstr(&why, "no libcurl handle");

        pthread_mutex_lock(&n->mu);
        after_attempt_locked(n, it, oc, why.buf, retry_after_ms);
        strbuf_release(&why);
    }
    /* Time is up (or the queue is empty): what is left is lost. */
    struct notify_item **left = n->queue;
    size_t n_left = n->n_queue;
    n->stats.dropped += n_left;
    n->queue = NULL;
    n->n_queue = 0;
    pthread_mutex_unlock(&n->mu);

    for (size_t i = 0; i < n_left; i++) {
        log_dropped(left[i], "the notifier stopped before it could be delivered");
        item_free(left[i]);
    }
    free(left);
    curl_slist_free_all(headers);
    if (curl)
        curl_easy_cleanup(curl);
    return NULL;
}

/* --- public API ------------------------------------------------------------------------- */

int notifier_start(struct notifier *n, const struct notifier_options *opts)
{
    if (n->state != NOTIFIER_STOPPED)
        return SL_EINVAL;
    struct notifier_options o = opts ? *opts : (struct notifier_options){0};
    if (o.max_attempts <= 0)
        o.max_attempts = NOTIFY_DEFAULT_MAX_ATTEMPTS;
    if (o.backoff_initial_ms <= 0)
        o.backoff_initial_ms = NOTIFY_DEFAULT_BACKOFF_INITIAL_MS;
    if (o.backoff_max_ms <= 0)
        o.backoff_max_ms = NOTIFY_DEFAULT_BACKOFF_MAX_MS;
    if (o.backoff_max_ms < o.backoff_initial_ms)
        o.backoff_max_ms = o.backoff_initial_ms;
    if (o.timeout_ms <= 0)
        o.timeout_ms = NOTIFY_DEFAULT_TIMEOUT_MS;
    if (o.queue_capacity == 0)
        o.queue_capacity = NOTIFY_DEFAULT_QUEUE_CAPACITY;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        sl_error(LOG_COMPONENT, "cannot initialize libcurl");
        return SL_EIO;
    }
    if (!n->sync_ready) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_mutex_init(&n->mu, NULL);
        pthread_cond_init(&n->cond, &ca);
        pthread_condattr_destroy(&ca);
        n->sync_ready = true;
    }
    pthread_mutex_lock(&n->mu);
    n->opts = o;
    n->queue = xcalloc(o.queue_capacity, sizeof(struct notify_item *));
    n->n_queue = 0;
    n->next_seq = 0;
    memset(&n->stats, 0, sizeof(n->stats));
    notifier_set_state(n, NOTIFIER_RUNNING);
    int rc = pthread_create(&n->thread, NULL, notifier_main, n);
    if (rc != 0) {
        n->state = NOTIFIER_STOPPED; /* never ran: not a transition of the diagram */
        free(n->queue);
        n->queue = NULL;
        pthread_mutex_unlock(&n->mu);
        curl_global_cleanup();
        sl_error(LOG_COMPONENT, "cannot start the notifier thread: %s", strerror(rc));
        return SL_EIO;
    }
    pthread_mutex_unlock(&n->mu);
    return 0;
}

int notifier_send(struct notifier *n, const struct notify_event *ev)
{
    if (!event_complete(ev)) {
        sl_warn(LOG_COMPONENT, "refusing an incomplete notification dag_id=%s run_id=%s",
                ev && ev->dag_id ? ev->dag_id : "?", ev && ev->run_id ? ev->run_id : "?");
        return SL_EINVAL;
    }
    struct url_parts u;
    if (url_split(&u, ev->url) < 0) {
        sl_warn(LOG_COMPONENT, "notify URL is not a valid http(s) URL dag_id=%s run_id=%s",
                ev->dag_id, ev->run_id);
        return SL_EINVAL;
    }
    struct notify_item *it = xcalloc(1, sizeof(*it));
    it->url = xstrdup(ev->url);
    it->origin =
        xasprintf("%s://%s%s%s", u.scheme, u.host, u.port ? ":" : "", u.port ? u.port : "");
    it->path = xstrdup(u.path);
    it->dag_id = xstrdup(ev->dag_id);
    it->run_id = xstrdup(ev->run_id);
    it->state = xstrdup(ev->state);
    url_parts_release(&u);
    struct strbuf body = STRBUF_INIT;
    notify_body(&body, ev); /* cannot fail: ev is complete */
    it->body = strbuf_detach(&body, &it->body_len);

    if (!n->sync_ready) {
        sl_warn(LOG_COMPONENT, "notifier not started; dropped dag_id=%s run_id=%s", ev->dag_id,
                ev->run_id);
        item_free(it);
        return SL_EINVAL;
    }
    pthread_mutex_lock(&n->mu);
    if (n->state != NOTIFIER_RUNNING) {
        pthread_mutex_unlock(&n->mu);
        log_dropped(it, "the notifier is not running");
        item_free(it);
        return SL_EINVAL;
    }
    it->seq = n->next_seq++;
    it->due_ms = mono_ms();
    n->stats.queued++;
    enqueue_locked(n, it);
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->mu);
    return 0;
}

size_t notifier_send_run(struct notifier *n, const struct dsl_dag *dag,
                         const struct notify_event *ev)
{
    size_t n_urls, sent = 0;
    const char *const *urls = notify_urls(dag, ev ? ev->state : NULL, &n_urls);
    for (size_t i = 0; i < n_urls; i++) {
        struct notify_event one = *ev;
        one.url = urls[i];
        if (notifier_send(n, &one) == 0)
            sent++;
    }
    return sent;
}

void notifier_stats(struct notifier *n, struct notifier_stats *out)
{
    if (!n->sync_ready) {
        memset(out, 0, sizeof(*out));
        return;
    }
    pthread_mutex_lock(&n->mu);
    *out = n->stats;
    pthread_mutex_unlock(&n->mu);
}

void notifier_stop(struct notifier *n, int drain_ms)
{
    if (!n->sync_ready)
        return;
    pthread_mutex_lock(&n->mu);
    if (n->state != NOTIFIER_RUNNING) {
        pthread_mutex_unlock(&n->mu);
        return;
    }
    notifier_set_state(n, NOTIFIER_DRAINING);
    n->drain_deadline_ms = mono_ms() + (drain_ms > 0 ? drain_ms : 0);
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->mu);

    pthread_join(n->thread, NULL);

    pthread_mutex_lock(&n->mu);
    notifier_set_state(n, NOTIFIER_STOPPED);
    free(n->queue); /* the thread emptied it */
    n->queue = NULL;
    pthread_mutex_unlock(&n->mu);
    curl_global_cleanup();
}

void notifier_release(struct notifier *n)
{
    if (!n->sync_ready)
        return;
    notifier_stop(n, 0);
    pthread_cond_destroy(&n->cond);
    pthread_mutex_destroy(&n->mu);
    memset(n, 0, sizeof(*n));
}
