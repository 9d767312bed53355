/*
 * scheduler/notify.h - `notify` webhooks: tell someone when a run ends.
 *
 * A DAG's `notify:` block lists webhook URLs to call when a run succeeds (on_success) or
 * fails (on_failure); see docs/dsl.md. When a run ends the scheduler asks notify_wants()
 * and hands one struct notify_event per URL to a struct notifier, which delivers it.
 *
 * The scheduler's loop must never wait for somebody else's web server, so a notifier owns
 * a worker thread and a bounded queue in memory. notifier_send() copies the event, builds
 * the body and returns at once; the thread POSTs the bodies one at a time with libcurl's
 * easy API, retrying connection errors, timeouts, 429 (after Retry-After) and 5xx with
 * exponential backoff. A notification is best effort: it is logged when it fails and never
 * changes the run's outcome, and what is still queued when the process stops is lost (the
 * run's state in PostgreSQL is the truth; a notification is a courtesy).
 *
 * Life of a notifier (one notifier_set_state() asserts every transition):
 *
 *     (zeroed) STOPPED --notifier_start()--> RUNNING --notifier_stop()--> DRAINING
 *                 ^                                                          |
 *                 '------ the thread is joined, the queue is freed ----------'
 *
 * Life of one notification, inside the thread:
 *
 *     queued --due--> in flight --2xx--> delivered (freed)
 *       ^                |------ 3xx, other 4xx, bad URL --> failed for good (logged)
 *       |                |------ attempts exhausted --------> given up (logged)
 *       '--- backoff ----'------ connection error, timeout, 429, 5xx
 *     queued --queue full (it is the oldest)--> dropped (logged)
 *     queued --notifier_stop() time is up-----> dropped (logged)
 *
 * Body: a JSON object (notify_body()), or, for a Slack incoming webhook (host
 * hooks.slack.com), a Slack message with "text" and Block Kit "blocks". The HTTP request
 * is a POST with Content-Type application/json and User-Agent sluice/<version>; only
 * http and https are spoken, redirects are not followed.
 *
 * Secrets: a Slack webhook's path is its credential, and any URL may carry a token in its
 * path, query or user info. Log lines name a webhook by notify_url_origin() only:
 * scheme, host and port.
 *
 * Threads: notifier_send() and notifier_stats() may be called from any thread, from
 * the first notifier_start() until notifier_release(); notifier_start(), notifier_stop()
 * and notifier_release() by the notifier's owner only. The pure helpers (notify_wants, notify_urls,
 * notify_body, notify_is_slack_url, notify_url_origin) are thread-safe.
 */
#ifndef SLUICE_SCHEDULER_NOTIFY_H
#define SLUICE_SCHEDULER_NOTIFY_H

#include "common/strbuf.h"
#include "dsl/dsl.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A time that is not known (a run that never started); written as JSON null. */
#define NOTIFY_NO_TIME INT64_MIN

/* Defaults of struct notifier_options (a zero field means the default). */
#define NOTIFY_DEFAULT_MAX_ATTEMPTS       5
#define NOTIFY_DEFAULT_BACKOFF_INITIAL_MS 1000
#define NOTIFY_DEFAULT_BACKOFF_MAX_MS     60000
#define NOTIFY_DEFAULT_TIMEOUT_MS         10000
#define NOTIFY_DEFAULT_QUEUE_CAPACITY     1000
/* The longest Retry-After honoured; a server asking for more gets this. */
#define NOTIFY_RETRY_AFTER_MAX_MS 600000

/* --- the event -------------------------------------------------------------------------- */

struct notify_failed_step {
    const char *step;   /* the step's name (with "[i]" for a fan-out item, if the caller likes) */
    const char *reason; /* why it failed ("exit code 1", "OOMKilled"); may be NULL */
};

/* One run that ended, for one webhook. Borrowed: notifier_send() copies what it needs. */
struct notify_event {
    const char *dag_id;                            /* required */
    const char *run_id;                            /* required */
    const char *state;                             /* required: "succeeded" or "failed" */
    int64_t logical_time_ms;                       /* unix ms, or NOTIFY_NO_TIME */
    int64_t started_at_ms;                         /* unix ms, or NOTIFY_NO_TIME */
    int64_t ended_at_ms;                           /* unix ms, or NOTIFY_NO_TIME */
    const char *url;                               /* required: the webhook, http:// or https:// */
    const struct notify_failed_step *failed_steps; /* may be NULL when n_failed_steps is 0 */
    size_t n_failed_steps;
    const char *api_base_url; /* e.g. "https://sluice.example.com", for a link; or NULL */
};

/* --- which webhooks a run calls --------------------------------------------------------- */

/* true if the DAG has a webhook for a run that ended in state ("succeeded" goes to
 * notify.on_success, "failed" to notify.on_failure; nothing else, e.g. "cancelled",
 * is notified). dag may be NULL (false). */
bool notify_wants(const struct dsl_dag *dag, const char *state);
/* The webhook URLs for a run that ended in state; *out_n gets their number (0 when
 * notify_wants() is false, and then the result is NULL). Owned by the model. */
const char *const *notify_urls(const struct dsl_dag *dag, const char *state, size_t *out_n);

/* --- bodies and URLs (pure) ------------------------------------------------------------- */

/* true if url is a Slack incoming webhook: http(s) with host hooks.slack.com (or
 * hooks.slack-gov.com, GovSlack's), any case. No DNS lookup. */
bool notify_is_slack_url(const char *url);

/*
 * Sets *out to "scheme://host[:port]" of url (lower-case scheme; no user info, path, query
 * or fragment), newly allocated, caller frees: what log lines may say about a webhook.
 * Returns 0, or SL_EINVAL if url cannot be parsed or is not http(s) (then *out is untouched).
 */
int notify_url_origin(char **out, const char *url);

/*
 * Appends the request body for ev to out: Slack's message format when
 * notify_is_slack_url(ev->url), else
 *
 *   {"dag": "iris", "run_id": "...", "state": "failed",
 *    "logical_time": "2026-01-02T03:04:05Z", "started_at": "...", "ended_at": "...",
 *    "duration_s": 83.25, "failed_steps": [{"step": "train", "reason": "exit code 1"}],
 *    "url": "https://sluice.example.com/api/v1/dags/iris/runs/..."}
 *
 * Times are RFC 3339 UTC (null when unknown), duration_s is ended minus started in seconds
 * (null unless both are known), failed_steps is [] when there are none, and url is the
 * run's address in the API (null without ev->api_base_url). Slack's limits (header 150
 * characters, field 2000, section 3000) are respected by shortening, never by failing.
 * Returns 0, or SL_EINVAL when a required field of ev is missing (out is then unchanged).
 */
int notify_body(struct strbuf *out, const struct notify_event *ev);

/* --- the notifier ----------------------------------------------------------------------- */

struct notifier_options {
    int max_attempts;       /* per notification, the first included; 0: 5 */
    int backoff_initial_ms; /* pause after the first failed attempt, doubling; 0: 1000 */
    int backoff_max_ms;     /* longest pause; 0: 60000 */
    int timeout_ms;         /* per request, connecting included; 0: 10000 */
    size_t queue_capacity;  /* notifications waiting at most; when full the oldest is
                               dropped (and logged); 0: 1000 */
};

/* Counters since notifier_start(); a snapshot, for tests and metrics. */
struct notifier_stats {
    uint64_t queued;    /* accepted by notifier_send() */
    uint64_t attempts;  /* HTTP requests made */
    uint64_t delivered; /* answered 2xx */
    uint64_t failed;    /* failed for good, or gave up after max_attempts */
    uint64_t dropped;   /* pushed out of a full queue, or left when notifier_stop() ended */
};

enum notifier_state { NOTIFIER_STOPPED, NOTIFIER_RUNNING, NOTIFIER_DRAINING };

struct notify_item; /* private: one queued notification */

/* Embed it anywhere; zero it (or leave it static) before the first notifier_start(). Every
 * field is private. */
struct notifier {
    enum notifier_state state; /* guarded by mu */
    bool sync_ready;           /* mu and cond are initialized (first start to release) */
    struct notifier_options opts;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;        /* signalled on send and on stop (CLOCK_MONOTONIC) */
    struct notify_item **queue; /* waiting notifications, in no particular order */
    size_t n_queue;
    uint64_t next_seq;           /* age of a notification: smaller is older */
    int64_t drain_deadline_ms;   /* monotonic; while DRAINING */
    struct notifier_stats stats; /* guarded by mu */
};

/*
 * Starts n's thread. opts may be NULL (the defaults); it is copied. Returns 0, SL_EINVAL
 * (n is not stopped) or SL_EIO (no thread or no libcurl). Non-blocking apart from that.
 */
int notifier_start(struct notifier *n, const struct notifier_options *opts);

/*
 * Queues a notification for ev->url and returns at once: ev is copied and its body built
 * (notify_body()) before the call returns. Thread-safe. If the queue is full its oldest
 * notification is dropped and logged. Returns 0, SL_EINVAL (ev is incomplete, its URL is
 * not http(s), or n is not running: logged, nothing queued).
 */
int notifier_send(struct notifier *n, const struct notify_event *ev);

/* For each webhook the DAG has for ev->state, notifier_send() of ev with that URL (ev->url
 * is ignored). Returns how many were queued. */
size_t notifier_send_run(struct notifier *n, const struct dsl_dag *dag,
                         const struct notify_event *ev);

/* Copies n's counters to *out. Thread-safe. */
void notifier_stats(struct notifier *n, struct notifier_stats *out);

/*
 * Stops accepting notifications, keeps delivering (and retrying) what is queued for at
 * most drain_ms (a request in flight is cut short at the deadline), then logs every
 * notification still undelivered as dropped, joins the thread and frees the queue. n is
 * then stopped: notifier_send() refuses, notifier_stats() still answers, and
 * notifier_start() may start it again. Blocks for at most drain_ms plus about a second
 * (libcurl looks at the deadline about once a second while a request waits). A no-op on a
 * stopped notifier.
 */
void notifier_stop(struct notifier *n, int drain_ms);

/* notifier_stop(n, 0) if still running, then frees n's mutex and condition variable and
 * zeroes it. Call it when no other thread can reach n any more. */
void notifier_release(struct notifier *n);

#endif
