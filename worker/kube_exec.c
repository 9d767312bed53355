/*
 * worker/kube_exec.c - the kubernetes executor: the per-worker context (the pod watch,
 * garbage collection) and one executor per attempt.
 *
 * The context keeps ONE watch of the worker's pods (label selector managed-by=sluice and
 * the worker's queue), as client-go's informers do: list, then watch from the list's
 * resourceVersion with bookmarks; a dropped watch resumes from the last resourceVersion
 * seen (events or bookmarks), a 410 (HTTP, or an ERROR event in the stream) lists afresh.
 * Every pod object that arrives goes to the executor following that pod name (a hash
 * table). A thousand pods cost one watch, not a thousand.
 *
 * An executor, per attempt:
 *
 *   CREATING --201--------------------------------------> FOLLOWING
 *      | 409, or an answer that may hide an applied create     |  pod objects from the watch;
 *      v                                                        |  the log streamed once the
 *   ADOPTING (GET: ours? adopt; 404: create again) ---ours--->  |  container started
 *                                                               |
 *      terminal phase, or gone, or pending/image-pull too long, |
 *      or a cancel (DELETE with grace, then wait for it to go)  v
 *                                                          FINISHING
 *            result fixed; the log drained; the trailer written; the pod deleted
 *            (unless a failed one is kept) -> on_done -> freed
 *
 * A release (hand back) cancels every call and finishes at once without touching the pod.
 *
 * Pods with the stage-out sidecar (output artifacts and a repository): the main
 * container usually ends first. If it succeeded, the executor waits for the pod's end and
 * takes the sidecar's outcome (its termination message: an output missing or not
 * stored) when it failed. If the main container failed (an exit code, OOMKilled, killed)
 * the outcome is the main container's at once and the pod is deleted: the sidecar, told
 * by the helper or never told (the helper died too), has nothing to add.
 *
 * Logs: GET .../pods/<name>/log?container=main&follow=true&timestamps=true. Each line's
 * timestamp is parsed and dropped from what is written; after a dropped connection the
 * stream is asked again with sinceTime (second precision, as the API takes it) and the
 * lines at or before the last one written are skipped - the last timestamp and how many
 * lines carried it - so nothing is lost or doubled. A partial line at a drop is thrown
 * away (the resumed stream sends it again whole). Kubernetes' own view (scheduling,
 * image pulls, OOMKilled, eviction, deletion) is written into the same file as
 * "=== kubernetes: ..." lines, once per distinct condition. The sidecar's few lines (what
 * it stored) are read once, with one plain GET after it ended, and go in before the
 * trailer; the position file records that they are in, so a worker adopting the pod
 * never writes them twice.
 */
#include "worker/kube.h"
#include "worker/artifacts.h"
#include "worker/kube_int.h"
#include "worker/worker_int.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/timeutil.h"
#include "common/xalloc.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_BUCKETS              4096
#define WATCH_TIMEOUT_S        300
#define WATCH_BACKOFF_MAX_MS   10000
#define LOG_BACKOFF_MS         200
#define LOG_CLEAN_END_WAIT_MS  1000
#define LOG_DRAIN_MS           30000 /* after the pod ended, the log may take this long */
#define GONE_WAIT_MS           5000  /* after a cancel's grace, the pod may take this long */
#define ORPHAN_CANCEL_SLACK_MS 5000  /* after a cancel's grace: pods left are orphans */
#define ORPHAN_AGE_MS          (10 * 60 * 1000)
#define MAX_CREATES            3
#define DEFAULT_PENDING_MS     (15 * 60 * 1000)
#define DEFAULT_PULL_GRACE_MS  (2 * 60 * 1000)
#define DEFAULT_DELETE_GRACE   10000
#define DEFAULT_GC_MS          60000
#define STAGE_OUT_LOG_MAX      (256 * 1024) /* bytes of the sidecar's log taken into the log */

enum exec_state { KX_CREATING, KX_ADOPTING, KX_FOLLOWING, KX_FINISHING, KX_DONE };

/* The log file writer: appends, through libuv's threadpool, in order. */
struct logw {
    uv_fs_t req;
    uv_work_t work; /* open at the start, close at the end */
    char *path;
    int fd;       /* -1 until open */
    int open_err; /* errno of a failed open */
    bool busy;    /* a request is in flight */
    struct strbuf pending, inflight;
    size_t inflight_off;
    /* the position file, <path>.pos: the last log timestamp written and how many lines
     * carried it, so a worker that adopts the pod resumes the log where this one stopped */
    char *pos_path;
    int pos_fd;
    bool pos_dirty, pos_unlink;
    int64_t pending_ns, inflight_ns, loaded_ns; /* the position at the end of each */
    size_t pending_n, inflight_n, loaded_n;
    /* ... and whether the stage-out sidecar's log is in the file (its third number) */
    bool out_pending, out_inflight, out_written, out_loaded;
    bool opened; /* the open (and the position file's read) is done */
    char pos_buf[64];
};

struct kube_exec {
    /* --- identity and links ------------------------------------------------------- */
    struct kube_ctx *k;
    /* --- the finished log's archive (artifacts.archive_logs) ----------------------- */
    struct artifacts_repo *artifacts; /* borrowed; NULL: none */
    cJSON *ids;                       /* dag, run_id, step, map_index, attempt */
    uv_work_t archive_work;
    bool archive_busy, archive_done;
    struct kube_exec *hnext;       /* the ctx's hash bucket */
    struct kube_exec *prev, *next; /* the ctx's list */
    char *attempt_id, *name, *pod_json;
    char *path_pod; /* /api/v1/namespaces/<ns>/pods/<name> */
    char *worker_id;
    exec_local_done_cb on_done;
    void *data;
    /* --- the pod and the calls ------------------------------------------------------ */
    cJSON *pod;                 /* the latest pod object */
    struct kube_call *call;     /* create / get / delete */
    struct kube_call *log_call; /* the log stream */
    uv_timer_t timer;           /* deadlines: pending, image pull, drain, log retry */
    struct logw log;
    struct strbuf log_line; /* a partial line of the log stream */
    /* what has been said in the log about the pod */
    char *said_sched, *said_wait, *said_node, *said_term, *said_phase, *said_out;
    char *reason;    /* the outcome's */
    cJSON *outputs;  /* the outcome's */
    uint64_t pod_rv; /* resourceVersion of pod */
    int64_t created_mono;
    int64_t log_last_ns;                     /* the last log line written: its timestamp */
    size_t log_n_same, log_skip_same;        /* ... how many carried it; to skip on resume */
    int64_t unschedulable_since, pull_since; /* monotonic ms, 0: not now */
    int64_t pending_ms, pull_grace_ms;
    int64_t gone_deadline, drain_deadline; /* monotonic ms */
    int64_t started_ms, finished_ms;       /* unix ms */
    enum exec_state state;
    enum exec_failure failure;
    int exit_code;
    int creates;
    int log_failures;
    /* --- flags --------------------------------------------------------------------- */
    bool pod_gone;     /* deleted (by anyone) */
    bool timer_closed; /* its close callback ran */
    bool log_started, log_complete, log_wait_retry;
    bool log_resuming;  /* skipping what was written before a reconnect */
    bool seen_deleted;  /* a DELETED event came while creating or adopting */
    bool log_clean_end; /* the last stream ended cleanly: the container probably exited */
    bool in_finish;     /* exec_try_finish() is on the stack */
    bool want_params;
    bool out_log_done; /* the stage-out sidecar's log was written (or cannot be) */
    bool cancel, release, deleting, fixed, delete_after, trailer_done;
};

struct kube_ctx {
    uv_loop_t *loop;
    struct kube_options o;
    struct strbuf strings; /* unused: copies live in owned[] */
    char **owned;
    size_t n_owned, alloc_owned;
    char *ns;
    char *selector_q; /* the URL-encoded label selector */
    struct kube_client *client;
    struct kube_exec *buckets[N_BUCKETS];
    struct kube_exec *execs;
    size_t n_execs;
    /* the watch */
    struct kube_call *wcall;
    char *rv; /* the last resourceVersion seen, or NULL: list first */
    struct strbuf wbuf;
    uv_timer_t w_timer;
    int w_failures;
    bool listing;
    /* garbage collection */
    uv_timer_t gc_timer;
    struct orphan_req *orphans; /* cancels waiting for their grace period */
    struct kube_call *gc_call;
    bool closing;
    int open_handles;
    void (*on_closed)(void *);
    void *closed_data;
};

static void exec_try_finish(struct kube_exec *e);
static void ctx_free(struct kube_ctx *k);
static void exec_maybe_free(struct kube_exec *e);
static void on_gc_delete_done(void *data, const struct kube_response *r);
static void exec_on_pod(struct kube_exec *e, const cJSON *pod, bool deleted);
static void watch_start(struct kube_ctx *k);
static void exec_arm_timer(struct kube_exec *e);

/* --- small helpers ---------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    return (int64_t)(uv_hrtime() / 1000000);
}

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const cJSON *jobj(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* The status of the container name in status.containerStatuses, or NULL. */
static const cJSON *container_status(const cJSON *status, const char *name)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, jobj(status, "containerStatuses"))
    {
        const char *n = jstr(c, "name");
        if (n && !strcmp(n, name))
            return c;
    }
    return NULL;
}

/* The terminated state of the container name, or NULL while it has not ended. */
static const cJSON *container_ended(const cJSON *status, const char *name)
{
    return jobj(jobj(container_status(status, name), "state"), "terminated");
}

/* The exit code of a terminated state, or -1. */
static int exit_code_of(const cJSON *term)
{
    const cJSON *ec = jobj(term, "exitCode");
    return cJSON_IsNumber(ec) ? (int)ec->valuedouble : -1;
}

/* Whether the pod has the stage-out sidecar (it was built with one; an adopted pod is
 * judged by what it has, not by what this worker would build). */
static bool pod_has_stage_out(const cJSON *pod)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, jobj(jobj(pod, "spec"), "containers"))
    {
        const char *n = jstr(c, "name");
        if (n && !strcmp(n, KUBE_STAGE_OUT_CONTAINER))
            return true;
    }
    return false;
}

/* "2026-11-22T13:45:01.123456789Z" (any number of fraction digits) -> unix ns; -1 if bad. */
static int64_t parse_ts_ns(const char *s, size_t n)
{
    int v[6] = {0};
    static const int pos[6][2] = {{0, 4}, {5, 2}, {8, 2}, {11, 2}, {14, 2}, {17, 2}};
    if (n < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':')
        return -1;
    for (int i = 0; i < 6; i++) {
        for (int j = 0; j < pos[i][1]; j++) {
            char c = s[pos[i][0] + j];
            if (c < '0' || c > '9')
                return -1;
            v[i] = v[i] * 10 + (c - '0');
        }
    }
    int64_t frac = 0;
    size_t i = 19;
    int digits = 0;
    if (i < n && s[i] == '.') {
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            if (digits < 9) {
                frac = frac * 10 + (s[i] - '0');
                digits++;
            }
        }
    }
    for (; digits < 9; digits++)
        frac *= 10;
    if (i >= n || s[i] != 'Z')
        return -1;
    int64_t days = sl_days_from_civil(v[0], (unsigned)v[1], (unsigned)v[2]);
    int64_t secs = days * 86400 + v[3] * 3600 + v[4] * 60 + v[5];
    return secs * 1000000000 + frac;
}

static int64_t ts_ms(const char *s)
{
    if (!s)
        return 0;
    int64_t ns = parse_ts_ns(s, strlen(s));
    return ns < 0 ? 0 : ns / 1000000;
}

static char *url_encode(const char *s)
{
    struct strbuf sb = STRBUF_INIT;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-_.~", c))
            strbuf_addch(&sb, c);
        else
            strbuf_addf(&sb, "%%%02X", c);
    }
    return strbuf_detach(&sb, NULL);
}

/* The Status message of an error body, else a short description. Newly allocated. */
static char *api_error(const struct kube_response *r)
{
    if (r->status == 0)
        return xasprintf("kubernetes API unreachable: %s", r->error ? r->error : "no response");
    cJSON *st = r->body ? cJSON_ParseWithLength(r->body, r->len) : NULL;
    const char *msg = jstr(st, "message");
    char *out = msg ? xasprintf("kubernetes API %ld: %s", r->status, msg)
                    : xasprintf("kubernetes API %ld", r->status);
    cJSON_Delete(st);
    return out;
}

static uint64_t rv_num(const cJSON *obj)
{
    const char *rv = jstr(jobj(obj, "metadata"), "resourceVersion");
    return rv ? strtoull(rv, NULL, 10) : 0;
}

/* --- the log writer ------------------------------------------------------------------ */

static void logw_pump(struct kube_exec *e);

static void on_log_open_work(uv_work_t *req)
{
    struct kube_exec *e = req->data;
    char *slash = strrchr(e->log.path, '/');
    if (slash && slash != e->log.path) {
        char *dir = xstrndup(e->log.path, (size_t)(slash - e->log.path));
        (void)worker_mkdir_p(dir);
        free(dir);
    }
    e->log.fd = open(e->log.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    e->log.open_err = e->log.fd < 0 ? errno : 0;
    struct strbuf sb = STRBUF_INIT;
    if (strbuf_read_file(&sb, e->log.pos_path, 64) == 0) {
        char *end;
        long long ns = strtoll(sb.buf, &end, 10);
        unsigned long long n = strtoull(end, &end, 10);
        long out = strtol(end, NULL, 10); /* absent in files of older versions: 0 */
        if (ns > 0) {
            e->log.loaded_ns = ns;
            e->log.loaded_n = (size_t)n;
        }
        e->log.out_loaded = out == 1;
    }
    strbuf_release(&sb);
    e->log.pos_fd =
        e->log.fd < 0 ? -1 : open(e->log.pos_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
}

static void on_log_close_work(uv_work_t *req)
{
    struct kube_exec *e = req->data;
    if (e->log.fd >= 0)
        close(e->log.fd);
    if (e->log.pos_fd >= 0)
        close(e->log.pos_fd);
    if (e->log.pos_unlink)
        unlink(e->log.pos_path);
}

static void on_log_open_done(uv_work_t *req, int status)
{
    struct kube_exec *e = req->data;
    (void)status;
    e->log.busy = false;
    e->log.opened = true;
    if (e->log.fd < 0)
        sl_error(KUBE_LOG, "attempt \"%s\": cannot open log file \"%s\": %s", e->attempt_id,
                 e->log.path, strerror(e->log.open_err));
    if (e->log.loaded_ns > e->log_last_ns) {
        /* an earlier worker streamed this pod's log up to there */
        e->log_last_ns = e->log.pending_ns = e->log.inflight_ns = e->log.loaded_ns;
        e->log_n_same = e->log.pending_n = e->log.inflight_n = e->log.loaded_n;
        e->log_resuming = true;
        e->log_skip_same = e->log_n_same;
    }
    if (e->log.out_loaded) /* an earlier worker wrote the sidecar's lines */
        e->out_log_done = e->log.out_written = true;
    logw_pump(e);
}

static void on_log_written(uv_fs_t *req)
{
    struct kube_exec *e = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    e->log.busy = false;
    if (n < 0) {
        sl_error(KUBE_LOG, "attempt \"%s\": writing \"%s\": %s", e->attempt_id, e->log.path,
                 uv_strerror((int)n));
        strbuf_reset(&e->log.inflight); /* lost; the step goes on */
        e->log.inflight_off = 0;
    } else {
        e->log.inflight_off += (size_t)n;
        if (e->log.inflight_off >= e->log.inflight.len) {
            strbuf_reset(&e->log.inflight);
            e->log.inflight_off = 0;
            if (e->log.out_inflight)
                e->log.out_written = true;
            e->log.out_inflight = false;
            e->log.pos_dirty = e->log.inflight_ns > 0 || e->log.out_written;
        }
    }
    logw_pump(e);
}

static void on_log_closed(uv_work_t *req, int status)
{
    struct kube_exec *e = req->data;
    (void)status;
    e->log.busy = false;
    e->log.fd = -1;
    e->log.pos_fd = -1;
    exec_maybe_free(e);
}

static void on_pos_written(uv_fs_t *req)
{
    struct kube_exec *e = req->data;
    uv_fs_req_cleanup(req);
    e->log.busy = false;
    logw_pump(e);
}

/* Starts the next write, or the close once finishing and everything is out. */
static void logw_pump(struct kube_exec *e)
{
    struct logw *l = &e->log;
    if (l->busy)
        return;
    if (l->fd < 0) {
        if (l->open_err)
            strbuf_reset(&l->pending); /* no file: nothing can be written */
        exec_try_finish(e);
        return;
    }
    if (l->inflight.len == 0 && l->pos_dirty && l->pos_fd >= 0) {
        /* fixed width, written in place: a reader never sees a shorter, stale tail */
        int len = snprintf(l->pos_buf, sizeof(l->pos_buf), "%020lld %020zu %d\n",
                           (long long)l->inflight_ns, l->inflight_n, l->out_written ? 1 : 0);
        uv_buf_t b = uv_buf_init(l->pos_buf, (unsigned)len);
        l->pos_dirty = false;
        l->busy = true;
        l->req.data = e;
        uv_fs_write(e->k->loop, &l->req, l->pos_fd, &b, 1, 0, on_pos_written);
        return;
    }
    if (l->inflight.len == 0 && l->pending.len) {
        struct strbuf t = l->inflight;
        l->inflight = l->pending;
        l->pending = t;
        l->inflight_off = 0;
        l->inflight_ns = l->pending_ns;
        l->inflight_n = l->pending_n;
        l->out_inflight = l->out_pending;
        l->out_pending = false;
    }
    if (l->inflight.len > l->inflight_off) {
        uv_buf_t b = uv_buf_init(l->inflight.buf + l->inflight_off,
                                 (unsigned)(l->inflight.len - l->inflight_off));
        l->busy = true;
        l->req.data = e;
        uv_fs_write(e->k->loop, &l->req, l->fd, &b, 1, -1, on_log_written);
        return;
    }
    exec_try_finish(e);
}

static void logw_add(struct kube_exec *e, const char *buf, size_t len)
{
    strbuf_add(&e->log.pending, buf, len);
    logw_pump(e);
}

static void logw_printf(struct kube_exec *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void logw_printf(struct kube_exec *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    strbuf_vaddf(&e->log.pending, fmt, ap);
    va_end(ap);
    logw_pump(e);
}

static bool logw_idle(const struct kube_exec *e)
{
    return !e->log.busy && !e->log.pending.len && e->log.inflight.len <= e->log.inflight_off &&
           !(e->log.pos_dirty && e->log.pos_fd >= 0);
}

/* --- the executor table ---------------------------------------------------------------- */

static struct kube_exec *ctx_find(struct kube_ctx *k, const char *name)
{
    for (struct kube_exec *e = k->buckets[hash_name(name) % N_BUCKETS]; e; e = e->hnext)
        if (!strcmp(e->name, name))
            return e;
    return NULL;
}

static void ctx_add(struct kube_ctx *k, struct kube_exec *e)
{
    size_t b = hash_name(e->name) % N_BUCKETS;
    e->hnext = k->buckets[b];
    k->buckets[b] = e;
    e->next = k->execs;
    if (k->execs)
        k->execs->prev = e;
    k->execs = e;
    k->n_execs++;
}

static void ctx_remove(struct kube_ctx *k, struct kube_exec *e)
{
    struct kube_exec **pp = &k->buckets[hash_name(e->name) % N_BUCKETS];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    if (e->prev)
        e->prev->next = e->next;
    else
        k->execs = e->next;
    if (e->next)
        e->next->prev = e->prev;
    k->n_execs--;
}

/* --- the outcome ------------------------------------------------------------------------ */

/* Fixes the result (the first one stands). Takes nothing; copies reason. */
static void exec_fix(struct kube_exec *e, enum exec_failure failure, const char *reason,
                     int exit_code)
{
    if (e->fixed)
        return;
    e->fixed = true;
    e->failure = failure;
    e->reason = reason ? xstrdup(reason) : NULL;
    e->exit_code = exit_code;
    if (!e->finished_ms)
        e->finished_ms = worker_wall_ms();
    e->state = KX_FINISHING;
    e->drain_deadline = mono_ms() + LOG_DRAIN_MS;
    exec_arm_timer(e);
}

static void exec_free(struct kube_exec *e);

/* Frees a reported executor once its timer and its files are closed: only ever called
 * from those close callbacks, which nothing follows. */
static void exec_maybe_free(struct kube_exec *e)
{
    if (e->state == KX_DONE && e->timer_closed && !e->log.busy && e->log.fd < 0 &&
        e->log.pos_fd < 0)
        exec_free(e);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct kube_exec *e = h->data;
    e->timer_closed = true;
    exec_maybe_free(e);
}

static void exec_free(struct kube_exec *e)
{
    cJSON_Delete(e->ids);
    cJSON_Delete(e->pod);
    cJSON_Delete(e->outputs);
    strbuf_release(&e->log.pending);
    strbuf_release(&e->log.inflight);
    strbuf_release(&e->log_line);
    free(e->log.path);
    free(e->log.pos_path);
    free(e->attempt_id);
    free(e->name);
    free(e->pod_json);
    free(e->path_pod);
    free(e->worker_id);
    free(e->said_sched);
    free(e->said_wait);
    free(e->said_node);
    free(e->said_term);
    free(e->said_phase);
    free(e->said_out);
    free(e->reason);
    free(e);
}

static void on_deleted_after(void *data, const struct kube_response *r)
{
    struct kube_exec *e = data;
    e->call = NULL;
    if (r->status != 200 && r->status != 202 && r->status != 404) {
        char *msg = api_error(r);
        sl_warn(KUBE_LOG,
                "attempt \"%s\": cannot delete pod \"%s\": %s (the garbage collection "
                "will)",
                e->attempt_id, e->name, msg);
        free(msg);
    }
    e->delete_after = false;
    exec_try_finish(e);
}

/*
 * Moves a fixed executor on: log drained -> trailer -> pod deleted -> on_done -> closed ->
 * freed. Called whenever anything it waits for completes.
 */
static void exec_try_finish_once(struct kube_exec *e);
static void exec_try_finish(struct kube_exec *e);

/* Whether the stage-out sidecar's log should be read into the log before the trailer:
 * once, when the step succeeded and the sidecar has ended, while the pod is there, and
 * once the position file said whether an earlier worker wrote it already. */
static bool stage_out_log_wanted(const struct kube_exec *e)
{
    const cJSON *status = jobj(e->pod, "status");
    const cJSON *mterm = container_ended(status, KUBE_MAIN_CONTAINER);
    return !e->out_log_done && e->log.opened && !e->pod_gone && pod_has_stage_out(e->pod) &&
           mterm && exit_code_of(mterm) == 0 && container_ended(status, KUBE_STAGE_OUT_CONTAINER);
}

static void on_stage_out_log(void *data, const struct kube_response *r)
{
    struct kube_exec *e = data;
    e->call = NULL;
    e->out_log_done = true; /* read or not, once */
    if (r->status == 200) {
        if (r->len) {
            strbuf_add(&e->log.pending, r->body, r->len);
            if (r->body[r->len - 1] != '\n')
                strbuf_addch(&e->log.pending, '\n');
            e->log.out_pending = true;
        }
    } else {
        char *msg = api_error(r);
        logw_printf(e, "=== sluice: the log of container \"%s\" could not be read: %s\n",
                    KUBE_STAGE_OUT_CONTAINER, msg);
        free(msg);
    }
    logw_pump(e);
    exec_try_finish(e);
}

/* One plain GET of the sidecar's whole log (it has ended: no follow, no timestamps). */
static void stage_out_log_start(struct kube_exec *e)
{
    char *path = xasprintf("%s/log?container=%s&limitBytes=%d", e->path_pod,
                           KUBE_STAGE_OUT_CONTAINER, STAGE_OUT_LOG_MAX);
    e->call = kube_call_start(e->k->client, KUBE_GET, path, NULL, false, NULL, on_stage_out_log, e);
    free(path);
}

/* Threadpool: the finished log next to the attempt's artifacts. A failure is logged and
 * does not change the step's outcome. */
static void on_archive_work(uv_work_t *w)
{
    struct kube_exec *e = w->data;
    struct strbuf err = STRBUF_INIT;
    if (artifacts_put_log(e->artifacts, e->ids, e->log.path, &err) < 0)
        sl_warn("kube", "attempt \"%s\": cannot archive the log: %s", e->attempt_id, err.buf);
    strbuf_release(&err);
}

static void on_archive_done(uv_work_t *w, int status)
{
    (void)status;
    struct kube_exec *e = w->data;
    e->archive_busy = false;
    e->archive_done = true;
    exec_try_finish(e);
}

static void exec_try_finish(struct kube_exec *e)
{
    if (e->in_finish)
        return; /* the outer call goes on */
    e->in_finish = true;
    exec_try_finish_once(e);
    e->in_finish = false;
}

static void exec_try_finish_once(struct kube_exec *e)
{
    if (e->state != KX_FINISHING && e->state != KX_DONE)
        return;
    if (e->state == KX_FINISHING) {
        bool drained =
            e->release || e->log_complete || !e->log_started || mono_ms() >= e->drain_deadline;
        if (!drained || e->call)
            return;
        if (e->log_call) {
            kube_call_cancel(e->log_call);
            e->log_call = NULL;
        }
        if (!e->trailer_done && !e->release && stage_out_log_wanted(e)) {
            stage_out_log_start(e);
            return;
        }
        if (!e->trailer_done) {
            e->trailer_done = true;
            if (!e->release) {
                int64_t dur = e->started_ms ? e->finished_ms - e->started_ms : 0;
                if (e->failure == EXEC_FAIL_NONE)
                    logw_printf(e, "=== sluice: attempt %s succeeded, duration %lld ms\n",
                                e->attempt_id, (long long)dur);
                else
                    logw_printf(e, "=== sluice: attempt %s failed (%s): %s, duration %lld ms\n",
                                e->attempt_id, exec_failure_name(e->failure), e->reason,
                                (long long)dur);
                /* the pod goes, unless it failed and failed pods are kept a while */
                bool keep = e->failure != EXEC_FAIL_NONE && e->k->o.keep_failed_ms > 0;
                e->delete_after = !e->pod_gone && !e->deleting && !keep && e->pod;
                if (e->delete_after) {
                    char *path = xasprintf("%s?gracePeriodSeconds=0", e->path_pod);
                    e->call = kube_call_start(e->k->client, KUBE_DELETE, path, NULL, false, NULL,
                                              on_deleted_after, e);
                    free(path);
                    return;
                }
            }
        }
        if (e->call || !logw_idle(e))
            return;
        if (!e->release && !e->archive_done && artifacts_archive_logs(e->artifacts)) {
            if (!e->archive_busy) {
                e->archive_busy = true;
                e->archive_work.data = e;
                if (uv_queue_work(e->k->loop, &e->archive_work, on_archive_work, on_archive_done) <
                    0) {
                    e->archive_busy = false;
                    e->archive_done = true; /* not archived: the log volume keeps it */
                }
            }
            if (e->archive_busy)
                return;
        }
        /* report */
        e->state = KX_DONE;
        struct exec_local_result r = {
            .attempt_id = e->attempt_id,
            .exit_code = e->exit_code,
            .reason = e->failure == EXEC_FAIL_NONE ? NULL : e->reason,
            .failure = e->failure,
            .started_ms = e->started_ms,
            .finished_ms = e->finished_ms,
            .outputs = e->outputs ? e->outputs : cJSON_CreateObject(),
        };
        e->outputs = NULL;
        ctx_remove(e->k, e);
        e->on_done(&r, e->data);
        cJSON_Delete(r.outputs);
        uv_timer_stop(&e->timer);
        uv_close((uv_handle_t *)&e->timer, on_timer_closed);
        if (e->log.fd >= 0 || e->log.pos_fd >= 0) {
            /* the position file goes with a reported outcome; a released attempt keeps it
             * for the worker that adopts the pod */
            e->log.pos_unlink = !e->release;
            e->log.busy = true;
            e->log.work.data = e;
            uv_queue_work(e->k->loop, &e->log.work, on_log_close_work, on_log_closed);
        }
        return;
    }
    /* KX_DONE: freed by the close callbacks (exec_maybe_free) */
}

/* --- the log stream ----------------------------------------------------------------------- */

static void log_start(struct kube_exec *e);

/* One complete line "TS content\n" (or a final partial one). */
static void log_take_line(struct kube_exec *e, const char *line, size_t len)
{
    const char *sp = memchr(line, ' ', len);
    int64_t ns = sp ? parse_ts_ns(line, (size_t)(sp - line)) : -1;
    if (ns < 0) { /* no timestamp: take it as is */
        logw_add(e, line, len);
        return;
    }
    if (e->log_resuming) {
        if (ns < e->log_last_ns)
            return;
        if (ns == e->log_last_ns && e->log_skip_same > 0) {
            e->log_skip_same--;
            return;
        }
        e->log_resuming = false;
    }
    if (ns == e->log_last_ns) {
        e->log_n_same++;
    } else {
        e->log_last_ns = ns;
        e->log_n_same = 1;
    }
    e->log.pending_ns = e->log_last_ns;
    e->log.pending_n = e->log_n_same;
    logw_add(e, sp + 1, len - (size_t)(sp + 1 - line));
}

static void on_log_data(void *data, const char *buf, size_t len)
{
    struct kube_exec *e = data;
    strbuf_add(&e->log_line, buf, len);
    size_t start = 0;
    for (size_t i = 0; i < e->log_line.len; i++) {
        if (e->log_line.buf[i] != '\n')
            continue;
        log_take_line(e, e->log_line.buf + start, i + 1 - start);
        start = i + 1;
    }
    if (start) {
        memmove(e->log_line.buf, e->log_line.buf + start, e->log_line.len - start);
        e->log_line.len -= start;
        e->log_line.buf[e->log_line.len] = '\0';
    }
}

static bool container_terminated(const struct kube_exec *e)
{
    const cJSON *st = jobj(jobj(e->pod, "status"), "containerStatuses");
    const cJSON *c;
    cJSON_ArrayForEach(c, st)
    {
        const char *n = jstr(c, "name");
        if (n && !strcmp(n, KUBE_MAIN_CONTAINER))
            return jobj(jobj(c, "state"), "terminated") != NULL;
    }
    return false;
}

static void on_log_done(void *data, const struct kube_response *r)
{
    struct kube_exec *e = data;
    e->log_call = NULL;
    if (r->status == 200 && !r->error) {
        /* a clean end: the container ended (or the server closed a long stream) */
        if (e->log_line.len) {
            log_take_line(e, e->log_line.buf, e->log_line.len);
            strbuf_reset(&e->log_line);
        }
        if (container_terminated(e) || e->pod_gone || e->fixed) {
            e->log_complete = true;
            exec_try_finish(e);
            return;
        }
        /* The kubelet ends a followed stream when the container exits, usually just before
         * the watch says so: wait a moment for that news before asking again. */
        e->log_clean_end = true;
    } else {
        strbuf_reset(&e->log_line); /* a partial line: it comes again whole */
        if (r->status == 404 || e->pod_gone) {
            e->log_complete = true;
            exec_try_finish(e);
            return;
        }
        if (r->status == 400) {
            /* "waiting to start": asked again on the next status change */
            e->log_started = false;
            exec_try_finish(e);
            return;
        }
        e->log_failures++;
        sl_debug(KUBE_LOG, "attempt \"%s\": log stream ended (%ld %s): resuming", e->attempt_id,
                 r->status, r->error ? r->error : "");
    }
    if (e->release || e->state == KX_DONE)
        return;
    e->log_wait_retry = true;
    exec_arm_timer(e);
}

static void log_start(struct kube_exec *e)
{
    struct strbuf path = STRBUF_INIT;
    strbuf_addf(&path, "%s/log?container=%s&follow=true&timestamps=true", e->path_pod,
                KUBE_MAIN_CONTAINER);
    if (e->log_last_ns > 0) {
        char t[32];
        sl_time_format_utc(t, e->log_last_ns / 1000000000);
        char *q = url_encode(t);
        strbuf_addf(&path, "&sinceTime=%s", q);
        free(q);
        e->log_resuming = true;
        e->log_skip_same = e->log_n_same;
    }
    e->log_started = true;
    e->log_clean_end = false;
    e->log_call =
        kube_call_start(e->k->client, KUBE_GET, path.buf, NULL, true, on_log_data, on_log_done, e);
    strbuf_release(&path);
}

/* --- timers ------------------------------------------------------------------------------- */

static void on_exec_timer(uv_timer_t *t)
{
    struct kube_exec *e = t->data;
    int64_t now = mono_ms();
    if (e->log_wait_retry && !e->log_call && !e->release && !e->log_complete) {
        e->log_wait_retry = false;
        log_start(e);
    }
    if (e->state == KX_FINISHING) {
        exec_try_finish(e);
        if (e->state == KX_FINISHING)
            exec_arm_timer(e);
        return;
    }
    if (e->deleting && e->gone_deadline && now >= e->gone_deadline) {
        exec_fix(e, EXEC_FAIL_CANCELLED, "cancelled", -1);
        exec_try_finish(e);
        return;
    }
    if (e->pod && !e->fixed)
        exec_on_pod(e, NULL, false);
    exec_arm_timer(e);
}

/* The next moment something must be checked: pending and image-pull deadlines, a log
 * retry, the end of the drain, the wait for a cancelled pod to go. */
static void exec_arm_timer(struct kube_exec *e)
{
    if (e->state == KX_DONE)
        return;
    int64_t now = mono_ms(), next = INT64_MAX;
    if (e->log_wait_retry)
        next = now + (e->log_clean_end
                          ? LOG_CLEAN_END_WAIT_MS
                          : LOG_BACKOFF_MS * (e->log_failures > 5 ? 5 : e->log_failures + 1));
    if (e->state == KX_FINISHING && e->log_started && !e->log_complete)
        next = e->drain_deadline < next ? e->drain_deadline : next;
    if (!e->fixed && e->unschedulable_since && e->unschedulable_since + e->pending_ms < next)
        next = e->unschedulable_since + e->pending_ms;
    if (!e->fixed && e->pull_since && e->pull_since + e->pull_grace_ms < next)
        next = e->pull_since + e->pull_grace_ms;
    if (e->deleting && e->gone_deadline && e->gone_deadline < next)
        next = e->gone_deadline;
    if (next == INT64_MAX) {
        uv_timer_stop(&e->timer);
        return;
    }
    uv_timer_start(&e->timer, on_exec_timer, (uint64_t)(next > now ? next - now : 0), 0);
}

/* --- pod status: what Kubernetes says, and what it means -------------------------------- */

/* Writes "=== kubernetes: <text>" once per distinct text of one kind (*said). */
static void say(struct kube_exec *e, char **said, const char *text)
{
    if (*said && !strcmp(*said, text))
        return;
    free(*said);
    *said = xstrdup(text);
    logw_printf(e, "=== kubernetes: %s\n", text);
}

static const cJSON *main_status(const cJSON *status, const char *list)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, jobj(status, list))
    {
        const char *n = jstr(c, "name");
        if (n && (!strcmp(list, "initContainerStatuses") || !strcmp(n, KUBE_MAIN_CONTAINER)))
            return c;
    }
    return NULL;
}

static void start_delete(struct kube_exec *e, int64_t grace_ms);

/* The first init container that terminated with a non-zero exit code, or NULL. */
static const cJSON *failed_init(const cJSON *status)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, jobj(status, "initContainerStatuses"))
    {
        const cJSON *ec = jobj(jobj(jobj(c, "state"), "terminated"), "exitCode");
        if (jstr(c, "name") && cJSON_IsNumber(ec) && ec->valuedouble != 0)
            return c;
    }
    return NULL;
}

/* The last line of a container's log tail (a termination message that fell back to the
 * log) starting "error: ", without it; else its last non-empty line. NULL: none. */
static char *last_error_line(const char *log)
{
    if (!log)
        return NULL;
    const char *best = NULL, *last = NULL;
    size_t best_len = 0, last_len = 0;
    for (const char *p = log; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > 0) {
            last = p;
            last_len = len;
        }
        if (len > 7 && !strncmp(p, "error: ", 7)) {
            best = p + 7;
            best_len = len - 7;
        }
        p += len + (nl ? 1 : 0);
    }
    if (best)
        return xstrndup(best, best_len);
    return last ? xstrndup(last, last_len) : NULL;
}

/* Reads the termination message: {"outputs": {...}} (kept in e->outputs) or
 * {"error": "...", "kind": "step" | "error" | "transient"} (the error returned, newly
 * allocated, and *kind set from its kind: step when absent or unknown). Anything else is
 * ignored. */
static char *read_message(struct kube_exec *e, const char *msg, enum exec_failure *kind)
{
    cJSON *m = msg ? cJSON_Parse(msg) : NULL;
    const char *err = jstr(m, "error"), *k = jstr(m, "kind");
    char *out = err ? xstrdup(err) : NULL;
    *kind = EXEC_FAIL_STEP;
    if (k && !strcmp(k, "error"))
        *kind = EXEC_FAIL_ERROR;
    else if (k && !strcmp(k, "transient"))
        *kind = EXEC_FAIL_TRANSIENT;
    const cJSON *outs = jobj(m, "outputs");
    if (cJSON_IsObject(outs)) {
        cJSON_Delete(e->outputs);
        e->outputs = cJSON_Duplicate(outs, true);
    }
    cJSON_Delete(m);
    return out;
}

/* The main container ended 0 and the stage-out sidecar did not: its reason is the
 * outcome ({"error", "kind"} in its termination message, else how it ended). Returns
 * whether it decided. */
static bool judge_stage_out(struct kube_exec *e, const cJSON *status, const cJSON *term)
{
    const cJSON *sterm = container_ended(status, KUBE_STAGE_OUT_CONTAINER);
    int scode = exit_code_of(sterm);
    if (!term || exit_code_of(term) != 0 || !sterm || scode == 0)
        return false;
    enum exec_failure kind = EXEC_FAIL_ERROR;
    char *err = read_message(e, jstr(sterm, "message"), &kind);
    cJSON_Delete(e->outputs); /* a failed attempt reports no outputs */
    e->outputs = NULL;
    char buf[1024];
    const char *treason = jstr(sterm, "reason");
    if (err) {
        snprintf(buf, sizeof(buf), "%s", err);
    } else if (treason && !strcmp(treason, "OOMKilled")) {
        kind = EXEC_FAIL_ERROR;
        snprintf(buf, sizeof(buf),
                 "stage-out of the output artifacts failed: OOMKilled (the %s "
                 "container's memory limit)",
                 KUBE_STAGE_OUT_CONTAINER);
    } else {
        /* no message of its own: it crashed or was killed; the log tail, if any */
        char *line = last_error_line(jstr(sterm, "message"));
        kind = EXEC_FAIL_ERROR;
        snprintf(buf, sizeof(buf),
                 "stage-out of the output artifacts failed (exit code %d%s%s)%s%s", scode,
                 treason ? ", " : "", treason ? treason : "", line ? ": " : "", line ? line : "");
        free(line);
    }
    free(err);
    exec_fix(e, kind, buf, scode);
    return true;
}

/* The outcome of a pod in a terminal phase. */
static void judge_terminal(struct kube_exec *e, const cJSON *status, const char *phase)
{
    const cJSON *mainc = main_status(status, "containerStatuses");
    const cJSON *term = jobj(jobj(mainc, "state"), "terminated");
    const cJSON *ec = jobj(term, "exitCode");
    int exit_code = cJSON_IsNumber(ec) ? (int)ec->valuedouble : -1;
    const char *treason = jstr(term, "reason");
    const char *preason = jstr(status, "reason"), *pmsg = jstr(status, "message");
    if (term) {
        e->started_ms =
            ts_ms(jstr(term, "startedAt")) ? ts_ms(jstr(term, "startedAt")) : e->started_ms;
        e->finished_ms = ts_ms(jstr(term, "finishedAt"));
        /* storing the outputs is part of the attempt, as it was when the helper did it */
        int64_t out_end =
            ts_ms(jstr(container_ended(status, KUBE_STAGE_OUT_CONTAINER), "finishedAt"));
        if (exit_code_of(term) == 0 && out_end > e->finished_ms)
            e->finished_ms = out_end;
    }
    char buf[1024];
    if (!strcmp(phase, "Succeeded")) {
        enum exec_failure kind;
        char *err = read_message(e, jstr(term, "message"), &kind);
        if (err) {
            exec_fix(e, kind, err, exit_code);
            free(err);
        } else if (e->want_params && !e->outputs) {
            exec_fix(e, EXEC_FAIL_STEP,
                     "no output params: the termination message is empty (was the step run "
                     "through `sluice pod exec`?)",
                     exit_code);
        } else {
            exec_fix(e, EXEC_FAIL_NONE, NULL, 0);
        }
        return;
    }
    /* Failed */
    if (jstr(jobj(e->pod, "metadata"), "deletionTimestamp") && !e->deleting && !e->cancel &&
        !(preason && strcmp(preason, "DeadlineExceeded") == 0)) {
        /* killed because someone (or something: the node lifecycle) deleted it */
        snprintf(buf, sizeof(buf), "pod \"%s\" was deleted before it finished", e->name);
        say(e, &e->said_phase, buf);
        snprintf(buf, sizeof(buf), "pod deleted before it finished%s%s", preason ? ": " : "",
                 preason ? preason : "");
        if (preason && (!strcmp(preason, "NodeLost") || !strcmp(preason, "Evicted")))
            snprintf(buf, sizeof(buf), "%s: %s",
                     !strcmp(preason, "Evicted") ? "evicted" : "node lost", pmsg ? pmsg : preason);
        exec_fix(e, EXEC_FAIL_TRANSIENT, buf, -1);
        return;
    }
    if (preason && !strcmp(preason, "Evicted")) {
        snprintf(buf, sizeof(buf), "evicted: %s", pmsg ? pmsg : "by the kubelet");
        exec_fix(e, EXEC_FAIL_TRANSIENT, buf, -1);
        return;
    }
    if (preason && (!strcmp(preason, "NodeLost") || !strcmp(preason, "Shutdown") ||
                    !strcmp(preason, "Terminated") || !strcmp(preason, "NodeAffinity"))) {
        snprintf(buf, sizeof(buf), "node lost (%s): %s", preason, pmsg ? pmsg : "");
        exec_fix(e, EXEC_FAIL_TRANSIENT, buf, -1);
        return;
    }
    if (preason && !strcmp(preason, "DeadlineExceeded")) {
        exec_fix(e, EXEC_FAIL_STEP, "timeout (DeadlineExceeded: activeDeadlineSeconds)", -1);
        return;
    }
    const cJSON *init = failed_init(status);
    const cJSON *iterm = jobj(jobj(init, "state"), "terminated");
    const cJSON *iec = jobj(iterm, "exitCode");
    if (init && !strcmp(jstr(init, "name"), KUBE_STAGE_IN_CONTAINER)) {
        /* `sluice artifact get`: 1 the transfer failed (worth a retry), else (a missing
         * input, a refused source, bad settings) retrying the same spec cannot help */
        int code = (int)iec->valuedouble;
        char *line = last_error_line(jstr(iterm, "message"));
        snprintf(buf, sizeof(buf), "stage-in of the input artifacts failed (exit code %d): %s",
                 code, line ? line : (jstr(iterm, "reason") ? jstr(iterm, "reason") : "?"));
        free(line);
        exec_fix(e, code == 1 ? EXEC_FAIL_TRANSIENT : EXEC_FAIL_ERROR, buf, -1);
        return;
    }
    if (cJSON_IsNumber(iec) && iec->valuedouble != 0) {
        snprintf(buf, sizeof(buf), "the sluice init container failed: exit code %d (%s)%s%s",
                 (int)iec->valuedouble, jstr(iterm, "reason") ? jstr(iterm, "reason") : "?",
                 jstr(iterm, "message") ? ": " : "",
                 jstr(iterm, "message") ? jstr(iterm, "message") : "");
        exec_fix(e, EXEC_FAIL_ERROR, buf, -1);
        return;
    }
    if (judge_stage_out(e, status, term))
        return;
    if (treason && !strcmp(treason, "OOMKilled")) {
        const char *lim = NULL;
        const cJSON *c;
        cJSON_ArrayForEach(c, jobj(jobj(e->pod, "spec"), "containers"))
        {
            lim = jstr(jobj(jobj(c, "resources"), "limits"), "memory");
            break;
        }
        snprintf(buf, sizeof(buf), "OOMKilled (memory limit %s)", lim ? lim : "none");
        exec_fix(e, EXEC_FAIL_STEP, buf, exit_code);
        return;
    }
    if (treason && (!strcmp(treason, "StartError") || !strcmp(treason, "ContainerCannotRun"))) {
        snprintf(buf, sizeof(buf), "cannot start: %s",
                 jstr(term, "message") ? jstr(term, "message") : treason);
        exec_fix(e, EXEC_FAIL_STEP, buf, exit_code >= 0 ? exit_code : -1);
        return;
    }
    if (term && exit_code > 0) {
        enum exec_failure kind = EXEC_FAIL_STEP;
        char *err = read_message(e, jstr(term, "message"), &kind);
        cJSON_Delete(e->outputs); /* a failed attempt reports no outputs */
        e->outputs = NULL;
        if (err)
            snprintf(buf, sizeof(buf), "%s", err);
        else if (exit_code > 128 && exit_code < 160)
            snprintf(buf, sizeof(buf), "exit code %d (killed by signal %d)", exit_code,
                     exit_code - 128);
        else
            snprintf(buf, sizeof(buf), "exit code %d", exit_code);
        free(err);
        exec_fix(e, kind, buf, exit_code);
        return;
    }
    snprintf(buf, sizeof(buf), "pod failed%s%s%s%s", preason ? ": " : "", preason ? preason : "",
             pmsg ? ": " : "", pmsg ? pmsg : "");
    exec_fix(e, EXEC_FAIL_TRANSIENT, buf, -1);
}

/*
 * A new pod object (pod, or NULL: look again at the one we have), or its deletion.
 * Writes Kubernetes' view into the log, starts the log stream, checks the deadlines and
 * fixes the outcome of a finished pod.
 */
static void exec_on_pod(struct kube_exec *e, const cJSON *pod, bool deleted)
{
    if (e->state == KX_DONE || e->release)
        return;
    if (pod) {
        uint64_t rv = rv_num(pod);
        if (!(rv && e->pod_rv && rv < e->pod_rv)) { /* else older than what we have */
            if (rv)
                e->pod_rv = rv;
            cJSON_Delete(e->pod);
            e->pod = cJSON_Duplicate(pod, true);
        }
    }
    if (e->seen_deleted)
        deleted = true;
    if (!e->pod)
        return;
    const cJSON *status = jobj(e->pod, "status");
    const char *phase = jstr(status, "phase");
    char buf[2048];
    const char *node = jstr(jobj(e->pod, "spec"), "nodeName");
    if (node) {
        snprintf(buf, sizeof(buf), "pod \"%s\" scheduled on node %s", e->name, node);
        say(e, &e->said_node, buf);
    }
    /* scheduling */
    const cJSON *cond;
    bool unschedulable = false;
    cJSON_ArrayForEach(cond, jobj(status, "conditions"))
    {
        const char *type = jstr(cond, "type"), *st = jstr(cond, "status");
        const char *reason = jstr(cond, "reason");
        if (type && !strcmp(type, "PodScheduled") && st && !strcmp(st, "False") && reason &&
            !strcmp(reason, "Unschedulable")) {
            unschedulable = true;
            snprintf(buf, sizeof(buf), "pod \"%s\" is unschedulable: %s", e->name,
                     jstr(cond, "message") ? jstr(cond, "message") : "no reason given");
            say(e, &e->said_sched, buf);
        }
    }
    if (unschedulable && !e->unschedulable_since)
        e->unschedulable_since = mono_ms();
    if (!unschedulable)
        e->unschedulable_since = 0;
    /* waiting containers: image pulls, configuration errors */
    bool pulling = false;
    const char *lists[] = {"initContainerStatuses", "containerStatuses"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *c;
        cJSON_ArrayForEach(c, jobj(status, lists[i]))
        {
            const cJSON *w = jobj(jobj(c, "state"), "waiting");
            const char *reason = jstr(w, "reason");
            if (!reason || !strcmp(reason, "ContainerCreating") ||
                !strcmp(reason, "PodInitializing"))
                continue;
            snprintf(buf, sizeof(buf), "container \"%s\" waiting: %s%s%s",
                     jstr(c, "name") ? jstr(c, "name") : "?", reason,
                     jstr(w, "message") ? ": " : "", jstr(w, "message") ? jstr(w, "message") : "");
            /* the message of a backoff changes every time: say the reason once */
            char key[256];
            snprintf(key, sizeof(key), "container \"%s\" waiting: %s",
                     jstr(c, "name") ? jstr(c, "name") : "?",
                     !strcmp(reason, "ImagePullBackOff") ? "ErrImagePull" : reason);
            if (!e->said_wait || strcmp(e->said_wait, key) != 0) {
                free(e->said_wait);
                e->said_wait = xstrdup(key);
                logw_printf(e, "=== kubernetes: %s\n", buf);
            }
            if (!strcmp(reason, "ErrImagePull") || !strcmp(reason, "ImagePullBackOff") ||
                !strcmp(reason, "InvalidImageName") ||
                !strcmp(reason, "CreateContainerConfigError") ||
                !strcmp(reason, "CreateContainerError")) {
                pulling = true;
                if (!e->pull_since)
                    e->pull_since = mono_ms();
            }
        }
    }
    if (!pulling)
        e->pull_since = 0;
    /* the main container's end, and the pod's */
    const cJSON *mainc = main_status(status, "containerStatuses");
    const cJSON *term = jobj(jobj(mainc, "state"), "terminated");
    if (term && jstr(term, "reason")) {
        const cJSON *ec = jobj(term, "exitCode");
        snprintf(buf, sizeof(buf), "container \"%s\" terminated: %s, exit code %d",
                 KUBE_MAIN_CONTAINER, jstr(term, "reason"),
                 cJSON_IsNumber(ec) ? (int)ec->valuedouble : -1);
        say(e, &e->said_term, buf);
    }
    const cJSON *oterm = container_ended(status, KUBE_STAGE_OUT_CONTAINER);
    if (oterm && exit_code_of(oterm) != 0) {
        snprintf(buf, sizeof(buf), "container \"%s\" terminated: %s, exit code %d",
                 KUBE_STAGE_OUT_CONTAINER, jstr(oterm, "reason") ? jstr(oterm, "reason") : "?",
                 exit_code_of(oterm));
        say(e, &e->said_out, buf);
    }
    const char *preason = jstr(status, "reason");
    if (phase && !strcmp(phase, "Failed") && preason) {
        snprintf(buf, sizeof(buf), "pod \"%s\" failed: %s%s%s", e->name, preason,
                 jstr(status, "message") ? ": " : "",
                 jstr(status, "message") ? jstr(status, "message") : "");
        say(e, &e->said_phase, buf);
    }
    if (!e->started_ms) {
        const cJSON *run = jobj(jobj(mainc, "state"), "running");
        if (run)
            e->started_ms = ts_ms(jstr(run, "startedAt"));
    }
    /* the log, once the main container runs (or ran) */
    if (term && e->log_clean_end && !e->log_call) {
        e->log_complete = true; /* the stream had ended because the container did */
        e->log_wait_retry = false;
    }
    bool started = jobj(jobj(mainc, "state"), "running") || term;
    if (started && !e->log_started && !e->log_complete)
        log_start(e);

    if (deleted || e->pod_gone) {
        e->pod_gone = true;
        if (!e->fixed) {
            if (phase && (!strcmp(phase, "Succeeded") || !strcmp(phase, "Failed")) &&
                !e->deleting) {
                judge_terminal(e, status, phase);
            } else if (e->cancel) {
                exec_fix(e, EXEC_FAIL_CANCELLED, "cancelled", -1);
            } else {
                snprintf(buf, sizeof(buf), "pod \"%s\" was deleted", e->name);
                say(e, &e->said_phase, buf);
                exec_fix(e, EXEC_FAIL_TRANSIENT, "pod deleted before it finished", -1);
            }
        }
        exec_try_finish(e);
        return;
    }
    if (e->fixed) {
        exec_try_finish(e);
        return;
    }
    if (e->deleting)
        return; /* cancelled: waiting for it to go */
    if (phase && (!strcmp(phase, "Succeeded") || !strcmp(phase, "Failed"))) {
        judge_terminal(e, status, phase);
        exec_try_finish(e);
        return;
    }
    if (term && exit_code_of(term) != 0 && pod_has_stage_out(e->pod)) {
        /* The step failed while the stage-out sidecar runs. Told by the helper, it ends at
         * once; if the helper died with the step (OOMKilled, killed) it would wait for its
         * heartbeat timeout. Either way it has nothing to add: the outcome is the main
         * container's now, and the pod goes (or stays, failed, with keep_failed). */
        judge_terminal(e, status, "Failed");
        exec_try_finish(e);
        return;
    }
    int64_t now = mono_ms();
    if (e->unschedulable_since && now - e->unschedulable_since >= e->pending_ms) {
        snprintf(buf, sizeof(buf), "pending_timeout: unschedulable for %lld s: %s",
                 (long long)(e->pending_ms / 1000), e->said_sched ? e->said_sched : "");
        exec_fix(e, EXEC_FAIL_ERROR, buf, -1);
        start_delete(e, 0);
        return;
    }
    if (e->pull_since && now - e->pull_since >= e->pull_grace_ms) {
        const char *w = e->said_wait ? strstr(e->said_wait, "waiting: ") : NULL;
        snprintf(buf, sizeof(buf), "%s (for %lld s)", w ? w + 9 : "image pull failed",
                 (long long)(e->pull_grace_ms / 1000));
        exec_fix(e, EXEC_FAIL_ERROR, buf, -1);
        start_delete(e, 0);
        return;
    }
    exec_arm_timer(e);
}

/* --- create, adopt, delete ------------------------------------------------------------- */

static void exec_create(struct kube_exec *e);

static void on_delete_done(void *data, const struct kube_response *r)
{
    struct kube_exec *e = data;
    e->call = NULL;
    if (r->status == 404) {
        exec_on_pod(e, NULL, true);
    } else if (r->status != 200 && r->status != 202) {
        char *msg = api_error(r);
        sl_warn(KUBE_LOG, "attempt \"%s\": cannot delete pod \"%s\": %s", e->attempt_id, e->name,
                msg);
        logw_printf(e, "=== sluice: cannot delete pod \"%s\": %s\n", e->name, msg);
        free(msg);
        if (!e->fixed)
            exec_fix(e, e->cancel ? EXEC_FAIL_CANCELLED : EXEC_FAIL_TRANSIENT,
                     e->cancel ? "cancelled" : "cannot delete the pod", -1);
    }
    exec_try_finish(e);
}

/* Deletes the pod with a grace period; the pod's DELETED event (or the deadline) ends it. */
static void start_delete(struct kube_exec *e, int64_t grace_ms)
{
    if (e->deleting || e->pod_gone)
        return;
    e->deleting = true;
    char *path =
        xasprintf("%s?gracePeriodSeconds=%lld", e->path_pod, (long long)((grace_ms + 999) / 1000));
    e->call =
        kube_call_start(e->k->client, KUBE_DELETE, path, NULL, false, NULL, on_delete_done, e);
    free(path);
    e->gone_deadline = mono_ms() + grace_ms + GONE_WAIT_MS;
    exec_arm_timer(e);
}

static bool pod_is_ours(const struct kube_exec *e, const cJSON *pod)
{
    const char *id = jstr(jobj(jobj(pod, "metadata"), "annotations"), KUBE_ANNOTATION_ATTEMPT);
    return id && !strcmp(id, e->attempt_id);
}

static void follow(struct kube_exec *e, const cJSON *pod, bool adopted)
{
    e->state = KX_FOLLOWING;
    const char *ns = jstr(jobj(pod, "metadata"), "namespace");
    if (adopted)
        logw_printf(e,
                    "=== sluice: attempt %s: adopting the existing pod \"%s\" in namespace %s "
                    "(worker %s)\n",
                    e->attempt_id, e->name, ns ? ns : e->k->ns, e->worker_id);
    if (e->cancel) {
        start_delete(e, e->k->o.delete_grace_ms);
        return;
    }
    exec_on_pod(e, pod, false);
}

static void on_get_done(void *data, const struct kube_response *r)
{
    struct kube_exec *e = data;
    e->call = NULL;
    if (r->status == 404) {
        if (e->cancel) {
            exec_fix(e, EXEC_FAIL_CANCELLED, "cancelled", -1);
            exec_try_finish(e);
            return;
        }
        exec_create(e); /* the earlier create did not happen after all */
        return;
    }
    cJSON *pod = r->status == 200 ? cJSON_ParseWithLength(r->body, r->len) : NULL;
    if (!pod) {
        char *msg = api_error(r);
        exec_fix(e, EXEC_FAIL_TRANSIENT, msg, -1);
        logw_printf(e, "=== sluice: %s\n", msg);
        free(msg);
        exec_try_finish(e);
        return;
    }
    if (!pod_is_ours(e, pod)) {
        char *msg = xasprintf(
            "pod name collision: pod \"%s\" exists and belongs to another "
            "attempt (%s)",
            e->name,
            jstr(jobj(jobj(pod, "metadata"), "annotations"), KUBE_ANNOTATION_ATTEMPT)
                ? jstr(jobj(jobj(pod, "metadata"), "annotations"), KUBE_ANNOTATION_ATTEMPT)
                : "no sluice annotation");
        exec_fix(e, EXEC_FAIL_ERROR, msg, -1);
        logw_printf(e, "=== sluice: %s\n", msg);
        free(msg);
        cJSON_Delete(pod);
        exec_try_finish(e);
        return;
    }
    follow(e, pod, true);
    cJSON_Delete(pod);
}

static void exec_get(struct kube_exec *e)
{
    e->state = KX_ADOPTING;
    e->call =
        kube_call_start(e->k->client, KUBE_GET, e->path_pod, NULL, false, NULL, on_get_done, e);
}

static void on_create_done(void *data, const struct kube_response *r)
{
    struct kube_exec *e = data;
    e->call = NULL;
    if (r->status == 201 || r->status == 200) {
        cJSON *pod = cJSON_ParseWithLength(r->body, r->len);
        logw_printf(e, "=== sluice: attempt %s: pod \"%s\" created in namespace %s (worker %s)\n",
                    e->attempt_id, e->name, e->k->ns, e->worker_id);
        follow(e, pod, false);
        cJSON_Delete(pod);
        return;
    }
    if (r->status == 409) {
        exec_get(e); /* AlreadyExists: this attempt's pod, made by a worker before us */
        return;
    }
    bool ambiguous = r->status == 0 ? !r->unsent : r->status >= 500;
    if (ambiguous && e->creates < MAX_CREATES) {
        /* it may have been applied: look before creating again */
        sl_info(KUBE_LOG,
                "attempt \"%s\": create of pod \"%s\" ended unclearly (%ld %s): "
                "checking whether it exists",
                e->attempt_id, e->name, r->status, r->error ? r->error : "");
        exec_get(e);
        return;
    }
    char *msg = api_error(r);
    bool quota = r->status == 403 && r->body && strstr(r->body, "exceeded quota");
    enum exec_failure kind = (r->status == 0 || r->status >= 500 || r->status == 429 || quota)
                                 ? EXEC_FAIL_TRANSIENT
                                 : EXEC_FAIL_ERROR;
    char *reason = xasprintf("cannot create the pod: %s", msg);
    logw_printf(e, "=== sluice: %s\n", reason);
    exec_fix(e, kind, reason, -1);
    free(reason);
    free(msg);
    exec_try_finish(e);
}

static void exec_create(struct kube_exec *e)
{
    e->state = KX_CREATING;
    e->creates++;
    char *path = xasprintf("/api/v1/namespaces/%s/pods", e->k->ns);
    e->call =
        kube_call_start(e->k->client, KUBE_POST, path, e->pod_json, false, NULL, on_create_done, e);
    free(path);
}

/* --- the executor's API ------------------------------------------------------------------ */

static void on_start_later(uv_timer_t *t)
{
    struct kube_exec *e = t->data;
    if (e->fixed) {
        exec_try_finish(e);
        return;
    }
    if (e->cancel) {
        exec_fix(e, EXEC_FAIL_CANCELLED, "cancelled", -1);
        exec_try_finish(e);
        return;
    }
    exec_create(e);
}

int kube_exec_start(struct kube_exec **out, struct kube_ctx *k, const cJSON *spec,
                    const struct kube_exec_options *opts, exec_local_done_cb on_done, void *data)
{
    if (!out || !k || !spec || !opts || !opts->log_path || !on_done)
        return SL_EINVAL;
    struct kube_exec *e = xcalloc(1, sizeof(*e));
    e->k = k;
    e->on_done = on_done;
    e->data = data;
    e->exit_code = -1;
    e->log.fd = -1;
    e->log.pos_fd = -1;
    e->log.path = xstrdup(opts->log_path);
    e->log.pos_path = xasprintf("%s.pos", opts->log_path);
    strbuf_init(&e->log.pending, 0);
    strbuf_init(&e->log.inflight, 0);
    strbuf_init(&e->log_line, 0);
    const char *aid = jstr(spec, "attempt_id");
    e->attempt_id = xstrdup(aid ? aid : "");
    e->name = kube_pod_name(e->attempt_id);
    e->path_pod = xasprintf("/api/v1/namespaces/%s/pods/%s", k->ns, e->name);
    e->worker_id = xstrdup(opts->worker_id ? opts->worker_id : "?");
    e->artifacts = opts->artifacts;
    if (artifacts_archive_logs(e->artifacts)) { /* what the archive's key is made of */
        static const char *const keep[] = {"dag", "run_id", "step", "map_index", "attempt"};
        e->ids = cJSON_CreateObject();
        for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, keep[i]);
            if (v)
                cJSON_AddItemToObject(e->ids, keep[i], cJSON_Duplicate(v, true));
        }
    }
    e->created_mono = mono_ms();
    const cJSON *pt = jobj(spec, "pending_timeout_ms");
    e->pending_ms = cJSON_IsNumber(pt) && pt->valuedouble > 0 ? (int64_t)pt->valuedouble
                                                              : k->o.pending_timeout_ms;
    e->pull_grace_ms = k->o.image_pull_grace_ms;
    e->want_params = cJSON_GetArraySize(jobj(jobj(spec, "outputs"), "params")) > 0 &&
                     k->o.helper != KUBE_HELPER_NONE;
    uv_timer_init(k->loop, &e->timer);
    e->timer.data = e;
    ctx_add(k, e);

    /* the log file, opened on the threadpool */
    e->log.busy = true;
    e->log.work.data = e;
    uv_queue_work(k->loop, &e->log.work, on_log_open_work, on_log_open_done);

    struct strbuf err = STRBUF_INIT;
    cJSON *pod = NULL;
    if (kube_pod_build(&pod, spec, &k->o, &err) < 0) {
        logw_printf(e, "=== sluice: attempt %s: %s\n", e->attempt_id, err.buf);
        exec_fix(e, EXEC_FAIL_ERROR, err.buf, -1);
    } else {
        e->pod_json = cJSON_PrintUnformatted(pod);
        cJSON_Delete(pod);
        e->state = KX_CREATING;
    }
    strbuf_release(&err);
    /* never call back from inside this function */
    uv_timer_start(&e->timer, on_start_later, 0, 0);
    *out = e;
    return 0;
}

void kube_exec_cancel(struct kube_exec *e)
{
    if (e->cancel || e->fixed || e->state == KX_DONE)
        return;
    e->cancel = true;
    logw_printf(e, "=== sluice: attempt %s cancelled: deleting pod \"%s\" (grace %lld s)\n",
                e->attempt_id, e->name, (long long)(e->k->o.delete_grace_ms / 1000));
    if (e->state == KX_FOLLOWING && !e->call)
        start_delete(e, e->k->o.delete_grace_ms);
    /* CREATING / ADOPTING: follow() deletes it once we know the pod */
}

void kube_exec_release(struct kube_exec *e)
{
    if (e->release || e->state == KX_DONE)
        return;
    e->release = true;
    if (e->call) {
        kube_call_cancel(e->call);
        e->call = NULL;
    }
    if (e->log_call) {
        kube_call_cancel(e->log_call);
        e->log_call = NULL;
    }
    logw_printf(e,
                "=== sluice: attempt %s handed back: pod \"%s\" left running for the worker "
                "that takes it over\n",
                e->attempt_id, e->name);
    if (e->fixed) {
        /* the outcome was known but is not ours to report any more */
        e->failure = EXEC_FAIL_TRANSIENT;
        free(e->reason);
        e->reason = xstrdup("released");
    } else {
        exec_fix(e, EXEC_FAIL_TRANSIENT, "released", -1);
    }
    e->delete_after = false;
    e->trailer_done = true;
    exec_try_finish(e);
}

/* --- the pod watch ------------------------------------------------------------------------ */

static void dispatch(struct kube_ctx *k, const cJSON *pod, bool deleted)
{
    const char *name = jstr(jobj(pod, "metadata"), "name");
    struct kube_exec *e = name ? ctx_find(k, name) : NULL;
    if (!e || e->state == KX_DONE)
        return;
    if (e->state == KX_CREATING || e->state == KX_ADOPTING) {
        /* kept until we know the pod is ours: follow() looks at it */
        uint64_t rv = rv_num(pod);
        if (!e->pod || !e->pod_rv || rv >= e->pod_rv) {
            cJSON_Delete(e->pod);
            e->pod = cJSON_Duplicate(pod, true);
            e->pod_rv = rv;
        }
        e->seen_deleted |= deleted;
        return;
    }
    exec_on_pod(e, pod, deleted);
}

static void on_watch_line(struct kube_ctx *k, const char *line, size_t len)
{
    cJSON *ev = cJSON_ParseWithLength(line, len);
    const char *type = jstr(ev, "type");
    const cJSON *obj = jobj(ev, "object");
    if (!type || !obj) {
        sl_warn(KUBE_LOG, "watch: an event that is not {type, object}: %.*s",
                (int)(len > 200 ? 200 : len), line);
        cJSON_Delete(ev);
        return;
    }
    const char *rv = jstr(jobj(obj, "metadata"), "resourceVersion");
    if (!strcmp(type, "ERROR")) {
        const cJSON *code = jobj(obj, "code");
        bool expired = cJSON_IsNumber(code) && code->valuedouble == 410;
        sl_info(KUBE_LOG, "watch: %s: %s", expired ? "expired, listing again" : "error",
                jstr(obj, "message") ? jstr(obj, "message") : "?");
        if (expired) {
            free(k->rv);
            k->rv = NULL;
        }
        cJSON_Delete(ev);
        return;
    }
    if (rv && *rv) {
        free(k->rv);
        k->rv = xstrdup(rv);
    }
    if (strcmp(type, "BOOKMARK") != 0)
        dispatch(k, obj, !strcmp(type, "DELETED"));
    cJSON_Delete(ev);
}

static void on_watch_data(void *data, const char *buf, size_t len)
{
    struct kube_ctx *k = data;
    strbuf_add(&k->wbuf, buf, len);
    size_t start = 0;
    for (size_t i = 0; i < k->wbuf.len; i++) {
        if (k->wbuf.buf[i] != '\n')
            continue;
        if (i > start)
            on_watch_line(k, k->wbuf.buf + start, i - start);
        start = i + 1;
    }
    if (start) {
        memmove(k->wbuf.buf, k->wbuf.buf + start, k->wbuf.len - start);
        k->wbuf.len -= start;
        k->wbuf.buf[k->wbuf.len] = '\0';
    }
    k->w_failures = 0;
}

static void on_w_timer(uv_timer_t *t)
{
    watch_start(t->data);
}

static void on_watch_done(void *data, const struct kube_response *r)
{
    struct kube_ctx *k = data;
    k->wcall = NULL;
    strbuf_reset(&k->wbuf); /* a partial last line is never parsed */
    if (k->closing)
        return;
    if (r->status == 200 && !r->error) {
        /* a clean end (timeoutSeconds): watch again from where it stopped */
        uv_timer_start(&k->w_timer, on_w_timer, 0, 0);
        return;
    }
    k->w_failures++;
    if (r->status == 410) {
        free(k->rv);
        k->rv = NULL;
    } else {
        char *msg = api_error(r);
        sl_log(k->w_failures > 3 ? SL_LOG_WARN : SL_LOG_DEBUG, KUBE_LOG,
               "watch of pods ended: %s: resuming", msg);
        free(msg);
    }
    int64_t wait = 100LL << (k->w_failures > 7 ? 7 : k->w_failures);
    if (wait > WATCH_BACKOFF_MAX_MS)
        wait = WATCH_BACKOFF_MAX_MS;
    uv_timer_start(&k->w_timer, on_w_timer, (uint64_t)wait, 0);
}

static void on_list_done(void *data, const struct kube_response *r)
{
    struct kube_ctx *k = data;
    k->wcall = NULL;
    k->listing = false;
    if (k->closing)
        return;
    cJSON *list = r->status == 200 ? cJSON_ParseWithLength(r->body, r->len) : NULL;
    const char *rv = jstr(jobj(list, "metadata"), "resourceVersion");
    if (!list || !rv) {
        char *msg = api_error(r);
        sl_warn(KUBE_LOG, "list of pods failed: %s", msg);
        free(msg);
        cJSON_Delete(list);
        k->w_failures++;
        int64_t wait = 100LL << (k->w_failures > 7 ? 7 : k->w_failures);
        uv_timer_start(&k->w_timer, on_w_timer,
                       (uint64_t)(wait > WATCH_BACKOFF_MAX_MS ? WATCH_BACKOFF_MAX_MS : wait), 0);
        return;
    }
    free(k->rv);
    k->rv = xstrdup(rv);
    const cJSON *pod;
    cJSON_ArrayForEach(pod, jobj(list, "items")) dispatch(k, pod, false);
    /* followed pods the list does not have may be gone: look at each */
    for (struct kube_exec *e = k->execs; e; e = e->next) {
        if (e->state != KX_FOLLOWING || e->call || e->pod_gone)
            continue;
        bool found = false;
        cJSON_ArrayForEach(pod, jobj(list, "items"))
        {
            const char *n = jstr(jobj(pod, "metadata"), "name");
            if (n && !strcmp(n, e->name)) {
                found = true;
                break;
            }
        }
        if (!found && e->pod && rv_num(e->pod) <= strtoull(rv, NULL, 10))
            exec_on_pod(e, NULL, true);
    }
    cJSON_Delete(list);
    watch_start(k);
}

static void watch_start(struct kube_ctx *k)
{
    if (k->closing || k->wcall)
        return;
    char *path;
    if (!k->rv) {
        k->listing = true;
        path = xasprintf("/api/v1/namespaces/%s/pods?labelSelector=%s", k->ns, k->selector_q);
        k->wcall = kube_call_start(k->client, KUBE_GET, path, NULL, false, NULL, on_list_done, k);
    } else {
        path = xasprintf("/api/v1/namespaces/%s/pods?labelSelector=%s&watch=true&"
                         "allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%d",
                         k->ns, k->selector_q, k->rv, WATCH_TIMEOUT_S);
        k->wcall =
            kube_call_start(k->client, KUBE_GET, path, NULL, true, on_watch_data, on_watch_done, k);
    }
    free(path);
}

/* --- garbage collection: finished pods nobody follows ------------------------------------ */

static void on_gc_delete_done(void *data, const struct kube_response *r)
{
    char *name = data;
    if (r->status != 200 && r->status != 202 && r->status != 404)
        sl_warn(KUBE_LOG, "garbage collection: cannot delete pod \"%s\" (%ld)", name, r->status);
    free(name);
}

static void on_gc_list(void *data, const struct kube_response *r)
{
    struct kube_ctx *k = data;
    k->gc_call = NULL;
    if (k->closing)
        return;
    cJSON *list = r->status == 200 ? cJSON_ParseWithLength(r->body, r->len) : NULL;
    const cJSON *pod;
    int64_t now = worker_wall_ms();
    cJSON_ArrayForEach(pod, jobj(list, "items"))
    {
        const char *name = jstr(jobj(pod, "metadata"), "name");
        const char *phase = jstr(jobj(pod, "status"), "phase");
        if (!name || !phase || ctx_find(k, name) ||
            (strcmp(phase, "Succeeded") != 0 && strcmp(phase, "Failed") != 0))
            continue;
        int64_t finished = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, jobj(jobj(pod, "status"), "containerStatuses"))
        {
            int64_t f = ts_ms(jstr(jobj(jobj(c, "state"), "terminated"), "finishedAt"));
            finished = f > finished ? f : finished;
        }
        int64_t keep = k->o.gc_min_age_ms;
        if (!strcmp(phase, "Failed") && k->o.keep_failed_ms > keep)
            keep = k->o.keep_failed_ms;
        if (!finished || now - finished < keep)
            continue;
        sl_info(KUBE_LOG, "garbage collection: deleting pod \"%s\" (%s, unfollowed)", name, phase);
        char *path = xasprintf("/api/v1/namespaces/%s/pods/%s", k->ns, name);
        kube_call_start(k->client, KUBE_DELETE, path, NULL, false, NULL, on_gc_delete_done,
                        xstrdup(name));
        free(path);
    }
    cJSON_Delete(list);
}

static void on_gc_timer(uv_timer_t *t)
{
    struct kube_ctx *k = t->data;
    if (k->closing || k->gc_call)
        return;
    char *path = xasprintf("/api/v1/namespaces/%s/pods?labelSelector=%s", k->ns, k->selector_q);
    k->gc_call = kube_call_start(k->client, KUBE_GET, path, NULL, false, NULL, on_gc_list, k);
    free(path);
}

/* A cancel for a run this worker holds nothing of: after the grace period (the workers
 * that follow its pods delete them themselves), whatever pods of it are left belong to
 * no live worker, and go. */
struct orphan_req {
    uv_timer_t timer;
    struct kube_ctx *k;
    struct orphan_req *next; /* k->orphans */
    char *path;              /* the LIST */
    char *attempt_id;        /* or NULL: every pod of the run */
    bool listing;
};

static void orphan_unlink(struct orphan_req *o)
{
    for (struct orphan_req **pp = &o->k->orphans; *pp; pp = &(*pp)->next) {
        if (*pp == o) {
            *pp = o->next;
            return;
        }
    }
}

static void on_orphan_closed(uv_handle_t *h)
{
    struct orphan_req *o = h->data;
    struct kube_ctx *k = o->k;
    free(o->path);
    free(o->attempt_id);
    free(o);
    if (k->closing && --k->open_handles == 0)
        ctx_free(k);
}

static void on_orphans_list(void *data, const struct kube_response *r)
{
    struct orphan_req *o = data;
    struct kube_ctx *k = o->k;
    o->listing = false;
    cJSON *list = r->status == 200 && !k->closing ? cJSON_ParseWithLength(r->body, r->len) : NULL;
    const cJSON *pod;
    cJSON_ArrayForEach(pod, jobj(list, "items"))
    {
        const char *name = jstr(jobj(pod, "metadata"), "name");
        const char *aid = jstr(jobj(jobj(pod, "metadata"), "annotations"), KUBE_ANNOTATION_ATTEMPT);
        if (!name || ctx_find(k, name) || (o->attempt_id && (!aid || strcmp(aid, o->attempt_id))))
            continue;
        sl_info(KUBE_LOG, "cancel: deleting pod \"%s\" that no worker follows", name);
        char *path = xasprintf("/api/v1/namespaces/%s/pods/%s?gracePeriodSeconds=%lld", k->ns, name,
                               (long long)(k->o.delete_grace_ms / 1000));
        kube_call_start(k->client, KUBE_DELETE, path, NULL, false, NULL, on_gc_delete_done,
                        xstrdup(name));
        free(path);
    }
    cJSON_Delete(list);
    if (!k->closing) {
        orphan_unlink(o);
        uv_close((uv_handle_t *)&o->timer, on_orphan_closed);
    }
}

static void on_orphan_timer(uv_timer_t *t)
{
    struct orphan_req *o = t->data;
    o->listing = true;
    kube_call_start(o->k->client, KUBE_GET, o->path, NULL, false, NULL, on_orphans_list, o);
}

void kube_ctx_cancel_orphans(struct kube_ctx *k, const char *run_id, const char *attempt_id)
{
    if (k->closing)
        return;
    struct orphan_req *o = xcalloc(1, sizeof(*o));
    o->k = k;
    o->attempt_id = attempt_id ? xstrdup(attempt_id) : NULL;
    char *run = kube_label_value(run_id);
    char *sel = xasprintf("%s=%s,sluice.io/run=%s", KUBE_LABEL_MANAGED_BY, KUBE_MANAGED_BY, run);
    char *q = url_encode(sel);
    o->path = xasprintf("/api/v1/namespaces/%s/pods?labelSelector=%s", k->ns, q);
    free(q);
    free(sel);
    free(run);
    uv_timer_init(k->loop, &o->timer);
    o->timer.data = o;
    o->next = k->orphans;
    k->orphans = o;
    uv_timer_start(&o->timer, on_orphan_timer,
                   (uint64_t)(k->o.delete_grace_ms + ORPHAN_CANCEL_SLACK_MS), 0);
}

/* --- the context -------------------------------------------------------------------------- */

static const char *own(struct kube_ctx *k, const char *s)
{
    if (!s)
        return NULL;
    XGROW(k->owned, k->alloc_owned, k->n_owned + 1);
    return k->owned[k->n_owned++] = xstrdup(s);
}

/* Loads the credentials and checks the options with a dry build. 0, or a code (logged). */
static int load_and_check(struct kube_creds *creds, const struct kube_options *o)
{
    struct strbuf err = STRBUF_INIT;
    int rc;
    if (o->kubeconfig && *o->kubeconfig) {
        rc = kube_creds_from_kubeconfig(creds, o->kubeconfig, o->context, &err);
    } else if (getenv("KUBERNETES_SERVICE_HOST")) {
        rc = kube_creds_in_cluster(creds, o->sa_dir, &err);
    } else {
        const char *env = getenv("KUBECONFIG"), *home = getenv("HOME");
        char *path = env && *env ? xstrdup(env) : xasprintf("%s/.kube/config", home ? home : "");
        char *colon = strchr(path, ':'); /* a list: the first file */
        if (colon)
            *colon = '\0';
        rc = kube_creds_from_kubeconfig(creds, path, o->context, &err);
        free(path);
    }
    if (rc < 0) {
        sl_error(KUBE_LOG, "no Kubernetes credentials: %s", err.buf);
        strbuf_release(&err);
        return rc;
    }
    cJSON *probe_spec = cJSON_Parse("{\"attempt_id\":\"d.r.s.-1.1\",\"dag\":\"d\",\"run_id\":\"r\","
                                    "\"step\":\"s\",\"image\":\"x\",\"command\":[\"x\"]}");
    cJSON *probe = NULL;
    rc = kube_pod_build(&probe, probe_spec, o, &err);
    cJSON_Delete(probe_spec);
    cJSON_Delete(probe);
    if (rc < 0) {
        sl_error(KUBE_LOG, "kubernetes settings: %s", err.buf);
        kube_creds_release(creds);
        rc = SL_EINVAL;
    }
    strbuf_release(&err);
    return rc;
}

int kube_options_check(const struct kube_options *o)
{
    struct kube_creds creds = {0};
    int rc = load_and_check(&creds, o);
    if (rc == 0)
        kube_creds_release(&creds);
    return rc;
}

int kube_ctx_new(struct kube_ctx **out, uv_loop_t *loop, const struct kube_options *o)
{
    struct kube_creds creds = {0};
    int rc = load_and_check(&creds, o);
    if (rc < 0)
        return rc;
    struct kube_ctx *k = xcalloc(1, sizeof(*k));
    k->loop = loop;
    k->o = *o;
    const char **strs[] = {&k->o.kubeconfig, &k->o.context, &k->o.sa_dir, &k->o.namespace_,
                           &k->o.queue, &k->o.default_image, &k->o.image_pull_policy,
                           &k->o.service_account, &k->o.image_pull_secrets, &k->o.gpu_resource,
                           &k->o.node_selector, &k->o.tolerations, &k->o.sluice_image,
                           &k->o.sluice_path, &k->o.work_claim, &k->o.work_mount, &k->o.dags_claim,
                           &k->o.dags_mount,
                           /* artifacts */
                           &k->o.artifacts_repository, &k->o.artifacts_prefix, &k->o.artifacts_root,
                           &k->o.artifacts_endpoint, &k->o.artifacts_region, &k->o.artifacts_bucket,
                           &k->o.artifacts_compression, &k->o.artifacts_credentials,
                           &k->o.artifacts_claim, &k->o.artifacts_credentials_keys,
                           &k->o.git_username, &k->o.git_credentials, &k->o.git_credentials_keys};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        *strs[i] = own(k, *strs[i]);
    const char *ns = o->namespace_ && *o->namespace_ ? o->namespace_
                     : creds.namespace_              ? creds.namespace_
                                                     : "default";
    k->ns = xstrdup(ns);
    k->o.namespace_ = own(k, ns);
    if (!k->o.pending_timeout_ms)
        k->o.pending_timeout_ms = DEFAULT_PENDING_MS;
    if (!k->o.image_pull_grace_ms)
        k->o.image_pull_grace_ms = DEFAULT_PULL_GRACE_MS;
    if (!k->o.delete_grace_ms)
        k->o.delete_grace_ms = DEFAULT_DELETE_GRACE;
    if (!k->o.gc_interval_ms)
        k->o.gc_interval_ms = DEFAULT_GC_MS;
    if (!k->o.gc_min_age_ms)
        k->o.gc_min_age_ms = ORPHAN_AGE_MS;
    struct kube_client_limits lim = {
        .qps = o->qps, .burst = o->burst, .max_retries = o->max_retries};
    rc = kube_client_new(&k->client, loop, &creds, &lim);
    sl_info(KUBE_LOG, "kubernetes API %s (%s), namespace %s", creds.server,
            creds.source ? creds.source : "?", k->ns);
    kube_creds_release(&creds);
    if (rc < 0) {
        for (size_t i = 0; i < k->n_owned; i++)
            free(k->owned[i]);
        free(k->owned);
        free(k->ns);
        free(k);
        return rc;
    }
    struct strbuf sel = STRBUF_INIT;
    strbuf_addf(&sel, "%s=%s", KUBE_LABEL_MANAGED_BY, KUBE_MANAGED_BY);
    if (k->o.queue && *k->o.queue) {
        char *q = kube_label_value(k->o.queue);
        strbuf_addf(&sel, ",sluice.io/queue=%s", q);
        free(q);
    }
    k->selector_q = url_encode(sel.buf);
    strbuf_release(&sel);
    strbuf_init(&k->wbuf, 0);
    uv_timer_init(loop, &k->w_timer);
    k->w_timer.data = k;
    uv_timer_init(loop, &k->gc_timer);
    k->gc_timer.data = k;
    uv_timer_start(&k->gc_timer, on_gc_timer, (uint64_t)k->o.gc_interval_ms,
                   (uint64_t)k->o.gc_interval_ms);
    watch_start(k);
    *out = k;
    return 0;
}

uint64_t kube_ctx_requests(const struct kube_ctx *k)
{
    return kube_client_requests(k->client);
}

static void ctx_free(struct kube_ctx *k)
{
    void (*cb)(void *) = k->on_closed;
    void *d = k->closed_data;
    for (size_t i = 0; i < k->n_owned; i++)
        free(k->owned[i]);
    free(k->owned);
    free(k->ns);
    free(k->rv);
    free(k->selector_q);
    strbuf_release(&k->wbuf);
    free(k);
    if (cb)
        cb(d);
}

static void on_ctx_part_closed(void *data)
{
    struct kube_ctx *k = data;
    if (--k->open_handles == 0)
        ctx_free(k);
}

static void on_ctx_handle_closed(uv_handle_t *h)
{
    on_ctx_part_closed(h->data);
}

void kube_ctx_close(struct kube_ctx *k, void (*on_closed)(void *data), void *data)
{
    assert(k->n_execs == 0);
    k->closing = true;
    k->on_closed = on_closed;
    k->closed_data = data;
    k->wcall = NULL;
    k->gc_call = NULL;
    k->open_handles = 3;
    while (k->orphans) {
        struct orphan_req *o = k->orphans;
        k->orphans = o->next;
        k->open_handles++;
        uv_timer_stop(&o->timer);
        uv_close((uv_handle_t *)&o->timer, on_orphan_closed);
    }
    uv_timer_stop(&k->w_timer);
    uv_timer_stop(&k->gc_timer);
    uv_close((uv_handle_t *)&k->w_timer, on_ctx_handle_closed);
    uv_close((uv_handle_t *)&k->gc_timer, on_ctx_handle_closed);
    kube_client_close(k->client, on_ctx_part_closed, k);
}
