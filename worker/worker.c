/*
 * worker/worker.c - the worker daemon: its API and its loop thread.
 *
 * The loop thread owns the libuv loop, and with it every job (one per step message the
 * worker holds), the executors, the GPUs and the timers. It never talks to Redis: the
 * three threads of worker_redis.c do, and hand their results over through struct worker's
 * shared vectors and one uv_async (wake). Events the loop thread makes during one loop
 * iteration are staged and moved to the publisher's outbox by a uv_check handle at the
 * end of the iteration, so a batch of 1000 noop steps costs one lock and one wake-up.
 *
 * A job, from the moment its message is read until it is released (which frees its slot):
 *
 *            +--> WAITING ---GPUs free--> PREPARING ---dirs made, exec started--> RUNNING
 *            |    (for GPUs)              (run and attempt         |                 |
 *   message -+                             directories,            | cancelled,      | exec
 *            |                             threadpool)             | dirs failed     | done
 *            |                                                     v                 v
 *            +--noop, cancelled, bad gpu request----------------> REPORTING <--------+
 *                                                                  | final event published
 *                                                                  | and message acked
 *                                                                  v
 *                                                               released
 *
 *   NEW        just made from its message (for the length of on_step())
 *   WAITING    in the GPU queue (w->gpu_head); nothing published yet
 *   PREPARING  running event staged; prep work queued; job->release / job->cancel are
 *              acted on when it completes
 *   RUNNING    job->exec alive; GPUs assigned
 *   REPORTING  the final event is in the outbox with the job as its token; the publisher
 *              posts a worker_done once it is published and the message acknowledged
 *
 * Handing back (stop after the grace period) and letting go (another consumer took the
 * message over) set job->release: a WAITING job is released at once, a PREPARING one
 * when its prep work completes, a RUNNING one when its executor, cancelled, reports; no
 * final event is published and the message is not acknowledged. A REPORTING job is past
 * that point and completes normally.
 *
 * The worker's own states: RUNNING (reading) -> DRAINING (worker_stop(): no new steps,
 * grace timer armed) -> CLOSING (no job left: the Redis threads are stopped and joined,
 * the handles closed; uv_run() returns and the loop thread ends).
 */
#include "worker/worker.h"
#include "worker/artifacts.h"
#include "worker/exec_local.h"
#include "worker/kube.h"
#include "worker/worker_int.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/xalloc.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RECENT_CANCELS    1024             /* cancels remembered for steps still in transit */
#define RECENT_CANCEL_MS  (10 * 60 * 1000) /* ... and for how long */
#define MIN_VISIBILITY_MS 100
#define MAX_SWEEP_MS      (3600 * 1000)

/* A cancel, remembered in case the step it names is still on its way to the loop. */
struct worker_recent_cancel {
    char *run_id;
    char *attempt_id; /* or NULL: every attempt of the run */
    struct queue_id id;
    int64_t at_ms; /* monotonic, when it arrived */
};

enum job_state {
    JOB_NEW,
    JOB_WAITING,
    JOB_PREPARING,
    JOB_RUNNING,
    JOB_REPORTING,
};

struct worker_job {
    struct worker_job *prev, *next; /* w->jobs */
    struct worker *w;
    uint64_t serial;             /* names the job across threads (refresh results) */
    struct worker_job *gpu_next; /* WAITING: the next in w->gpu_head's queue */
    enum job_state state;
    struct queue_id entry;
    struct queue_step_msg *msg;
    size_t gpus_wanted;
    size_t *gpu_idx; /* indexes into w->gpus of the assigned GPUs, n_gpus of them */
    int *gpu_ids;    /* the device ids */
    size_t n_gpus;
    int64_t started_ms; /* unix ms when the worker started the attempt */
    char *run_dir, *attempt_dir, *log_path;
    uv_work_t prep;
    int prep_rc;
    struct exec_local *exec; /* RUNNING (local) */
    struct kube_exec *kexec; /* RUNNING (kubernetes) */
    bool cancel;             /* a cancel came while PREPARING */
    bool release;            /* hand back or let go: stop it, report nothing, keep the message */
};

/* The job's transitions, as drawn above; anything else is a bug. */
static void job_set_state(struct worker_job *j, enum job_state to)
{
    bool legal = false;
    switch (j->state) {
    case JOB_NEW:
        legal = to == JOB_WAITING || to == JOB_PREPARING || to == JOB_REPORTING;
        break;
    case JOB_WAITING:
        legal = to == JOB_PREPARING || to == JOB_REPORTING;
        break;
    case JOB_PREPARING:
        legal = to == JOB_RUNNING || to == JOB_REPORTING;
        break;
    case JOB_RUNNING:
        legal = to == JOB_REPORTING;
        break;
    case JOB_REPORTING:
        break;
    }
    assert(legal);
    (void)legal;
    j->state = to;
}

/* RUNNING -> DRAINING -> CLOSING, nothing else. */
static void worker_set_state(struct worker *w, enum worker_state to)
{
    assert((w->state == WORKER_RUNNING && to == WORKER_DRAINING) ||
           (w->state == WORKER_DRAINING && to == WORKER_CLOSING));
    w->state = to;
}

/* --- Small helpers ------------------------------------------------------------------ */

/* The milliseconds part of a stream id "<ms>-<seq>"; false if malformed. */
static bool id_ms(const struct queue_id *id, unsigned long long *ms)
{
    char *end;
    errno = 0;
    *ms = strtoull(id->s, &end, 10);
    return !errno && end != id->s && *end == '-';
}

/* Whether the entry a of one stream was added no later than the entry b of another, by
 * Redis's clock. Sequence numbers are per stream, so within one millisecond the answer
 * is yes: a cancel sent in the same millisecond as a dispatch applies to it. */
static bool id_not_after(const struct queue_id *a, const struct queue_id *b)
{
    unsigned long long am, bm;
    if (!id_ms(a, &am) || !id_ms(b, &bm))
        return true; /* cannot tell: obey the cancel */
    return am <= bm;
}

/* A name used in Redis keys: 1..QUEUE_NAME_MAX bytes of [A-Za-z0-9._:@-]. */
static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > QUEUE_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("._:@-", *s)))
            return false;
    return true;
}

/* path, made absolute against the cwd (no realpath: nothing is resolved); trailing
 * slashes dropped. Newly allocated, or NULL if the cwd is unknown. */
static char *absolute(const char *path)
{
    char *out;
    if (path[0] == '/') {
        out = xstrdup(path);
    } else {
        char cwd[4096];
        if (!getcwd(cwd, sizeof(cwd)))
            return NULL;
        out = xasprintf("%s/%s", strcmp(cwd, "/") ? cwd : "", path);
    }
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/')
        out[--n] = '\0';
    return out;
}

const char *worker_executor_name(enum worker_executor e)
{
    return e == WORKER_EXEC_NOOP ? "noop" : e == WORKER_EXEC_KUBERNETES ? "kubernetes" : "local";
}

int worker_executor_parse(enum worker_executor *out, const char *name)
{
    if (name && !strcmp(name, "local"))
        *out = WORKER_EXEC_LOCAL;
    else if (name && !strcmp(name, "noop"))
        *out = WORKER_EXEC_NOOP;
    else if (name && !strcmp(name, "kubernetes"))
        *out = WORKER_EXEC_KUBERNETES;
    else
        return SL_EINVAL;
    return 0;
}

int worker_parse_gpus(int **out, size_t *n, const char *s)
{
    int *ids = NULL;
    size_t count = 0, alloc = 0;
    const char *p = s ? s : "";
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (*p < '0' || *p > '9' || errno || v > 65535 || (*end && *end != ',') ||
            (*end == ',' && !end[1]) || count >= WORKER_MAX_GPUS)
            goto bad;
        for (size_t i = 0; i < count; i++)
            if (ids[i] == (int)v)
                goto bad;
        XGROW(ids, alloc, count + 1);
        ids[count++] = (int)v;
        p = *end ? end + 1 : end;
    }
    *out = ids;
    *n = count;
    return 0;
bad:
    free(ids);
    return SL_EINVAL;
}

const char *worker_id(const struct worker *w)
{
    return w->id;
}

/* --- Slots, staging, the outbox -------------------------------------------------------- */

/* Gives n slots back to the reader. */
static void release_slots(struct worker *w, size_t n)
{
    uv_mutex_lock(&w->lock);
    assert(w->held >= n);
    w->held -= n;
    uv_cond_signal(&w->reader_cond);
    uv_mutex_unlock(&w->lock);
}

/* Stages ev (taking it); job: ev is job's final event. Flushed by on_flush(). */
static void stage(struct worker *w, struct queue_event_msg *ev, struct worker_job *job)
{
    XGROW(w->staged, w->alloc_staged, w->n_staged + 1);
    struct worker_outbox_item *it = &w->staged[w->n_staged++];
    it->ev = ev;
    it->job = job;
    if (job)
        it->entry = job->entry;
}

/* Moves the staged events to the outbox, in order. */
static void flush_staged(struct worker *w)
{
    if (w->n_staged == 0)
        return;
    uv_mutex_lock(&w->lock);
    XGROW(w->outbox, w->alloc_outbox, w->n_outbox + w->n_staged);
    memcpy(w->outbox + w->n_outbox, w->staged, w->n_staged * sizeof(*w->staged));
    w->n_outbox += w->n_staged;
    uv_cond_signal(&w->pub_cond);
    uv_mutex_unlock(&w->lock);
    w->n_staged = 0;
}

static void on_flush(uv_check_t *h)
{
    flush_staged(h->data);
}

/* --- Jobs ---------------------------------------------------------------------------- */

static struct worker_job *job_new(struct worker *w, struct worker_intake *in)
{
    struct worker_job *j = xcalloc(1, sizeof(*j));
    j->w = w;
    j->serial = ++w->next_serial;
    j->entry = in->id;
    j->msg = in->msg;
    in->msg = NULL;
    j->prep.data = j;
    j->next = w->jobs;
    if (w->jobs)
        w->jobs->prev = j;
    w->jobs = j;
    w->n_jobs++;
    return j;
}

static void gpu_give_back(struct worker *w, struct worker_job *j)
{
    for (size_t i = 0; i < j->n_gpus; i++)
        w->gpu_busy[j->gpu_idx[i]] = false;
    j->n_gpus = 0;
}

static void gpu_fifo_remove(struct worker *w, struct worker_job *j)
{
    struct worker_job *prev = NULL;
    for (struct worker_job *it = w->gpu_head; it; prev = it, it = it->gpu_next) {
        if (it != j)
            continue;
        if (prev)
            prev->gpu_next = j->gpu_next;
        else
            w->gpu_head = j->gpu_next;
        if (w->gpu_tail == j)
            w->gpu_tail = prev;
        j->gpu_next = NULL;
        return;
    }
}

/* Forgets j and gives its slot back; its message is left as it is in Redis. */
static void job_release(struct worker_job *j)
{
    struct worker *w = j->w;
    gpu_give_back(w, j);
    if (j->state == JOB_WAITING)
        gpu_fifo_remove(w, j);
    if (j->prev)
        j->prev->next = j->next;
    else
        w->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    w->n_jobs--;
    queue_step_msg_free(j->msg);
    free(j->gpu_idx);
    free(j->gpu_ids);
    free(j->run_dir);
    free(j->attempt_dir);
    free(j->log_path);
    free(j);
    release_slots(w, 1);
}

static struct queue_event_msg *job_event(const struct worker_job *j, enum queue_event_kind kind)
{
    struct queue_event_msg *ev = xcalloc(1, sizeof(*ev));
    ev->attempt_id = xstrdup(j->msg->attempt_id);
    ev->kind = kind;
    ev->worker_id = xstrdup(j->w->id);
    ev->seq = kind == QUEUE_EVENT_RUNNING ? 1 : 2;
    ev->time_ms = worker_wall_ms();
    ev->started_ms = j->started_ms;
    ev->log_path = j->log_path ? xstrdup(j->log_path) : NULL;
    return ev;
}

static void job_stage_running(struct worker_job *j)
{
    j->started_ms = worker_wall_ms();
    stage(j->w, job_event(j, QUEUE_EVENT_RUNNING), NULL);
}

/* Stages j's final event (taking outputs) and moves it to REPORTING. */
static void job_report(struct worker_job *j, enum exec_failure failure, const char *reason,
                       int exit_code, int64_t started_ms, int64_t finished_ms, cJSON *outputs)
{
    struct queue_event_msg *ev =
        job_event(j, failure == EXEC_FAIL_NONE ? QUEUE_EVENT_SUCCEEDED : QUEUE_EVENT_FAILED);
    if (started_ms)
        ev->started_ms = started_ms;
    ev->finished_ms = finished_ms ? finished_ms : worker_wall_ms();
    ev->has_exit_code = exit_code >= 0;
    ev->exit_code = exit_code >= 0 ? exit_code : 0;
    if (failure != EXEC_FAIL_NONE) {
        ev->reason = xstrdup(reason ? reason : "failed");
        ev->failure = xstrdup(exec_failure_name(failure));
    }
    ev->outputs = outputs;
    job_set_state(j, JOB_REPORTING);
    stage(j->w, ev, j);
    if (j->w->executor != WORKER_EXEC_NOOP) {
        if (failure == EXEC_FAIL_NONE)
            sl_info(WORKER_LOG, "attempt \"%s\" succeeded", j->msg->attempt_id);
        else
            sl_info(WORKER_LOG, "attempt \"%s\" failed (%s): %s", j->msg->attempt_id,
                    exec_failure_name(failure), ev->reason);
    }
}

/* Fails j before it ran anything (no running event). */
static void job_fail_now(struct worker_job *j, enum exec_failure failure, const char *reason)
{
    j->started_ms = 0;
    job_report(j, failure, reason, -1, 0, 0, NULL);
}

/* Stops j without reporting it: its message stays pending, to be taken over. */
static void job_let_go(struct worker_job *j)
{
    switch (j->state) {
    case JOB_WAITING:
        job_release(j);
        break;
    case JOB_PREPARING:
        j->release = true; /* on_prep_done() releases it */
        break;
    case JOB_RUNNING:
        if (!j->release) {
            j->release = true;
            if (j->kexec)
                kube_exec_release(j->kexec); /* the pod stays, for whoever takes it over */
            else
                exec_local_cancel(j->exec); /* on_exec_done() releases it */
        }
        break;
    case JOB_NEW:       /* never outlives on_step() */
    case JOB_REPORTING: /* the outcome is known: report it */
        break;
    }
}

/* --- The local executor --------------------------------------------------------------- */

static void gpu_pump(struct worker *w);
static void maybe_close(struct worker *w);

static void on_exec_done(struct exec_local_result *r, void *data)
{
    struct worker_job *j = data;
    struct worker *w = j->w;

    j->exec = NULL;
    j->kexec = NULL;
    gpu_give_back(w, j);
    if (j->release) {
        sl_info(WORKER_LOG, "attempt \"%s\" stopped and handed back", j->msg->attempt_id);
        job_release(j);
    } else {
        cJSON *outputs = r->outputs;
        r->outputs = NULL;
        job_report(j, r->failure, r->reason, r->exit_code, r->started_ms, r->finished_ms, outputs);
    }
    gpu_pump(w);
    maybe_close(w);
}

static void on_prep_work(uv_work_t *req)
{
    struct worker_job *j = req->data;
    uv_mutex_lock(&j->w->dirs_lock);
    j->prep_rc = worker_dirs_prepare(j->run_dir, j->attempt_dir);
    uv_mutex_unlock(&j->w->dirs_lock);
}

static void on_prep_done(uv_work_t *req, int status)
{
    struct worker_job *j = req->data;
    struct worker *w = j->w;
    (void)status; /* never cancelled */

    if (j->release) {
        job_release(j);
        gpu_pump(w);
        maybe_close(w);
        return;
    }
    if (j->cancel || j->prep_rc < 0) {
        char *reason = j->cancel ? xstrdup("cancelled")
                                 : xasprintf("cannot create directory '%s': %s", j->attempt_dir,
                                             strerror(-j->prep_rc));
        gpu_give_back(w, j);
        job_report(j, j->cancel ? EXEC_FAIL_CANCELLED : EXEC_FAIL_TRANSIENT, reason, -1, 0, 0,
                   NULL);
        free(reason);
        gpu_pump(w);
        return;
    }
    char *run_env = xasprintf("SLUICE_RUN_DIR=%s", j->run_dir);
    char *attempt_env = xasprintf("SLUICE_ATTEMPT_DIR=%s", j->attempt_dir);
    char *base_env = xasprintf(ARTIFACTS_BASE_VAR "=%s", artifacts_base(w->artifacts));
    const char *extra[] = {run_env, attempt_env, base_env};
    struct exec_local_options o = {
        .log_path = j->log_path,
        .secrets_dir = w->secrets_dir,
        .artifacts = w->artifacts,
        .default_workdir = j->attempt_dir,
        .gpus = j->gpu_ids,
        .n_gpus = j->n_gpus,
        .kill_grace_ms = (uint64_t)w->kill_grace_ms,
        .extra_env = extra,
        .n_extra_env = 3,
    };
    int rc = exec_local_start(&j->exec, &w->loop, j->msg->spec, &o, on_exec_done, j);
    free(run_env);
    free(attempt_env);
    free(base_env);
    if (rc < 0) {
        gpu_give_back(w, j);
        job_report(j, EXEC_FAIL_ERROR, "cannot start the executor", -1, 0, 0, NULL);
        gpu_pump(w);
        return;
    }
    job_set_state(j, JOB_RUNNING);
}

/* Starts a local job whose GPUs (if any) are assigned: directories, then the process. */
static void job_start_local(struct worker_job *j)
{
    struct worker *w = j->w;
    j->run_dir = worker_run_dir(w->work_root, j->msg);
    j->attempt_dir = worker_attempt_dir(j->run_dir, j->msg);
    j->log_path = worker_log_path(w->log_root, j->msg);
    job_set_state(j, JOB_PREPARING);
    job_stage_running(j);
    sl_info(WORKER_LOG, "attempt \"%s\" started (dag_id=%s run_id=%s step=%s)", j->msg->attempt_id,
            j->msg->dag_id, j->msg->run_id, j->msg->step);
    int rc = uv_queue_work(&w->loop, &j->prep, on_prep_work, on_prep_done);
    assert(rc == 0); /* fails only for a NULL work callback */
    (void)rc;
}

/* Starts a kubernetes job: its pod is created (or adopted); the cluster places GPUs. */
static void job_start_kube(struct worker_job *j)
{
    struct worker *w = j->w;
    j->log_path = worker_log_path(w->log_root, j->msg);
    job_set_state(j, JOB_PREPARING);
    job_stage_running(j);
    sl_info(WORKER_LOG, "attempt \"%s\" started as a pod (dag_id=%s run_id=%s step=%s)",
            j->msg->attempt_id, j->msg->dag_id, j->msg->run_id, j->msg->step);
    struct kube_exec_options o = {
        .log_path = j->log_path, .worker_id = w->id, .artifacts = w->artifacts};
    int rc = kube_exec_start(&j->kexec, w->kube, j->msg->spec, &o, on_exec_done, j);
    if (rc < 0) {
        job_report(j, EXEC_FAIL_ERROR, "cannot start the executor", -1, 0, 0, NULL);
        return;
    }
    job_set_state(j, JOB_RUNNING);
}

static size_t gpus_free(const struct worker *w)
{
    size_t n = 0;
    for (size_t i = 0; i < w->n_gpus; i++)
        n += !w->gpu_busy[i];
    return n;
}

static void gpu_take(struct worker *w, struct worker_job *j)
{
    j->gpu_idx = xcalloc(j->gpus_wanted, sizeof(*j->gpu_idx));
    j->gpu_ids = xcalloc(j->gpus_wanted, sizeof(*j->gpu_ids));
    for (size_t i = 0; i < w->n_gpus && j->n_gpus < j->gpus_wanted; i++) {
        if (w->gpu_busy[i])
            continue;
        w->gpu_busy[i] = true;
        j->gpu_idx[j->n_gpus] = i;
        j->gpu_ids[j->n_gpus] = w->gpus[i];
        j->n_gpus++;
    }
}

/* Starts the waiting jobs, in arrival order, while their GPUs are free. */
static void gpu_pump(struct worker *w)
{
    while (w->gpu_head && w->state == WORKER_RUNNING) {
        struct worker_job *j = w->gpu_head;
        if (j->gpus_wanted > gpus_free(w))
            return;
        gpu_fifo_remove(w, j);
        gpu_take(w, j);
        job_start_local(j);
    }
}

/* resources.gpu of a spec: absent or null is 0. Returns 0 or -1 (malformed). */
static int spec_gpus(size_t *out, const cJSON *spec)
{
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(spec, "resources");
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(res, "gpu");
    *out = 0;
    if (!g || cJSON_IsNull(g))
        return 0;
    if (!cJSON_IsNumber(g) || g->valuedouble < 0 || g->valuedouble > 65536 ||
        g->valuedouble != floor(g->valuedouble))
        return -1;
    *out = (size_t)g->valuedouble;
    return 0;
}

/* --- Steps, cancels and results from the other threads ----------------------------------- */

static bool cancel_matches(const struct queue_cancel_msg *c, const struct queue_step_msg *m)
{
    return !strcmp(c->run_id, m->run_id) &&
           (!c->attempt_id || !strcmp(c->attempt_id, m->attempt_id));
}

/* Whether a cancel that arrived before step m (message id) names it. */
static bool cancelled_early(struct worker *w, const struct queue_step_msg *m,
                            const struct queue_id *id)
{
    int64_t now = worker_mono_ms();
    for (size_t i = 0; i < w->n_recent; i++) {
        const struct worker_recent_cancel *rc = &w->recent[i];
        if (now - rc->at_ms > RECENT_CANCEL_MS || strcmp(rc->run_id, m->run_id) != 0 ||
            (rc->attempt_id && strcmp(rc->attempt_id, m->attempt_id) != 0))
            continue;
        if (id_not_after(id, &rc->id))
            return true; /* dispatched before the cancel was sent */
    }
    return false;
}

static void remember_cancel(struct worker *w, const struct worker_cancel_in *c)
{
    if (!w->recent)
        w->recent = xcalloc(RECENT_CANCELS, sizeof(*w->recent));
    struct worker_recent_cancel *rc = &w->recent[w->recent_next];
    free(rc->run_id);
    free(rc->attempt_id);
    rc->run_id = xstrdup(c->msg->run_id);
    rc->attempt_id = c->msg->attempt_id ? xstrdup(c->msg->attempt_id) : NULL;
    rc->id = c->id;
    rc->at_ms = worker_mono_ms();
    w->recent_next = (w->recent_next + 1) % RECENT_CANCELS;
    if (w->n_recent < RECENT_CANCELS)
        w->n_recent++;
}

static void on_cancel(struct worker *w, struct worker_cancel_in *c)
{
    remember_cancel(w, c);
    bool held = false;
    for (struct worker_job *j = w->jobs, *next; j; j = next) {
        next = j->next; /* j may be released below */
        if (!cancel_matches(c->msg, j->msg) || !id_not_after(&j->entry, &c->id) || j->release)
            continue;
        held = true;
        sl_info(WORKER_LOG, "cancelling attempt \"%s\"%s%s", j->msg->attempt_id,
                c->msg->reason ? ": " : "", c->msg->reason ? c->msg->reason : "");
        switch (j->state) {
        case JOB_WAITING:
            gpu_fifo_remove(w, j);
            job_fail_now(j, EXEC_FAIL_CANCELLED, "cancelled");
            break;
        case JOB_PREPARING:
            j->cancel = true;
            break;
        case JOB_RUNNING:
            if (j->kexec)
                kube_exec_cancel(j->kexec);
            else
                exec_local_cancel(j->exec);
            break;
        case JOB_NEW:
        case JOB_REPORTING:
            break;
        }
    }
    /* pods of the run that no worker follows (their worker died): deleted after the grace */
    if (!held && w->kube)
        kube_ctx_cancel_orphans(w->kube, c->msg->run_id, c->msg->attempt_id);
    gpu_pump(w); /* the head of the GPU queue may have been cancelled */
}

static void on_step(struct worker *w, struct worker_intake *in)
{
    if (w->state != WORKER_RUNNING) {
        /* read while the stop was under way: not started, so simply not acked */
        sl_info(WORKER_LOG, "handing back attempt \"%s\": the worker is stopping",
                in->msg->attempt_id);
        queue_step_msg_free(in->msg);
        release_slots(w, 1);
        return;
    }
    for (struct worker_job *j = w->jobs; in->taken_over && j; j = j->next) {
        if (!strcmp(j->entry.s, in->id.s)) {
            /* our own message, idle too long (a Redis outage): we run it already */
            queue_step_msg_free(in->msg);
            release_slots(w, 1);
            return;
        }
    }
    struct worker_job *j = job_new(w, in);
    if (w->n_recent && cancelled_early(w, j->msg, &j->entry)) {
        job_fail_now(j, EXEC_FAIL_CANCELLED, "cancelled");
        return;
    }
    if (w->executor == WORKER_EXEC_NOOP) {
        job_stage_running(j);
        job_report(j, EXEC_FAIL_NONE, NULL, 0, j->started_ms, j->started_ms, NULL);
        return;
    }
    if (spec_gpus(&j->gpus_wanted, j->msg->spec) < 0) {
        job_fail_now(j, EXEC_FAIL_ERROR,
                     "malformed spec: 'resources.gpu' must be a whole number >= 0");
        return;
    }
    if (w->executor == WORKER_EXEC_KUBERNETES) {
        job_start_kube(j); /* GPUs are the cluster's to place */
        return;
    }
    if (j->gpus_wanted > w->n_gpus) {
        char *reason = xasprintf("needs %zu GPU%s, this worker has %zu", j->gpus_wanted,
                                 j->gpus_wanted == 1 ? "" : "s", w->n_gpus);
        job_fail_now(j, EXEC_FAIL_ERROR, reason);
        free(reason);
        return;
    }
    if (j->gpus_wanted > 0 && (w->gpu_head || j->gpus_wanted > gpus_free(w))) {
        job_set_state(j, JOB_WAITING);
        if (w->gpu_tail)
            w->gpu_tail->gpu_next = j;
        else
            w->gpu_head = j;
        w->gpu_tail = j;
        sl_info(WORKER_LOG, "attempt \"%s\" waits for %zu GPU%s", j->msg->attempt_id,
                j->gpus_wanted, j->gpus_wanted == 1 ? "" : "s");
        return;
    }
    if (j->gpus_wanted > 0)
        gpu_take(w, j);
    job_start_local(j);
}

static struct worker_job *find_serial(struct worker *w, uint64_t serial)
{
    for (struct worker_job *j = w->jobs; j; j = j->next)
        if (j->serial == serial)
            return j;
    return NULL;
}

/* --- Timers ---------------------------------------------------------------------------- */

static void on_heartbeat(uv_timer_t *t)
{
    struct worker *w = t->data;
    cJSON *info = cJSON_CreateObject();
    cJSON_AddStringToObject(info, "queue", w->queue);
    cJSON_AddNumberToObject(info, "slots", (double)w->slots);
    cJSON_AddNumberToObject(info, "busy", (double)w->n_jobs);
    cJSON_AddStringToObject(info, "executor", worker_executor_name(w->executor));
    cJSON_AddNumberToObject(info, "pid", (double)getpid());
    cJSON_AddStringToObject(info, "host", w->host);
    cJSON *gpus = cJSON_AddArrayToObject(info, "gpus");
    for (size_t i = 0; i < w->n_gpus; i++)
        cJSON_AddItemToArray(gpus, cJSON_CreateNumber(w->gpus[i]));
    cJSON_AddStringToObject(info, "state", w->state == WORKER_RUNNING ? "running" : "stopping");
    /* the attempts it holds until their final event is published: the scheduler's
     * reconciler tells a result lost in Redis from one still to come by this list */
    cJSON *held = cJSON_AddArrayToObject(info, "attempts");
    for (struct worker_job *j = w->jobs; j; j = j->next)
        if (!j->release)
            cJSON_AddItemToArray(held, cJSON_CreateString(j->msg->attempt_id));
    uv_mutex_lock(&w->lock);
    cJSON_Delete(w->heartbeat);
    w->heartbeat = info;
    uv_cond_signal(&w->pub_cond);
    uv_mutex_unlock(&w->lock);
}

static void on_refresh(uv_timer_t *t)
{
    struct worker *w = t->data;
    if (w->n_jobs == 0)
        return;
    struct queue_id *ids = xcalloc(w->n_jobs, sizeof(*ids));
    uint64_t *serials = xcalloc(w->n_jobs, sizeof(*serials));
    size_t n = 0;
    for (struct worker_job *j = w->jobs; j; j = j->next) {
        ids[n] = j->entry;
        serials[n++] = j->serial;
    }
    uv_mutex_lock(&w->lock);
    free(w->refresh_ids);
    free(w->refresh_serials);
    w->refresh_ids = ids;
    w->refresh_serials = serials;
    w->n_refresh = n;
    w->refresh_pending = true;
    uv_cond_signal(&w->pub_cond);
    uv_mutex_unlock(&w->lock);
}

struct sweep_req {
    uv_work_t req;
    struct worker *w;
    char **keep;
    size_t n_keep;
    int64_t cutoff_s;
    struct worker_sweep_stats stats;
};

static void on_sweep_work(uv_work_t *req)
{
    struct sweep_req *s = req->data;
    worker_dirs_sweep(&s->stats, s->w->work_root, s->cutoff_s, (const char *const *)s->keep,
                      s->n_keep, &s->w->dirs_lock, &s->w->sweep_stop);
}

static void on_sweep_done(uv_work_t *req, int status)
{
    struct sweep_req *s = req->data;
    (void)status;
    if (s->stats.removed || s->stats.errors)
        sl_info(WORKER_LOG, "retention: removed %zu run director%s under \"%s\"%s",
                s->stats.removed, s->stats.removed == 1 ? "y" : "ies", s->w->work_root,
                s->stats.errors ? " (some could not be removed)" : "");
    s->w->sweeping = false;
    for (size_t i = 0; i < s->n_keep; i++)
        free(s->keep[i]);
    free(s->keep);
    free(s);
}

static void on_sweep(uv_timer_t *t)
{
    struct worker *w = t->data;
    if (w->sweeping || w->state == WORKER_CLOSING)
        return;
    struct sweep_req *s = xcalloc(1, sizeof(*s));
    s->req.data = s;
    s->w = w;
    s->cutoff_s = (worker_wall_ms() - w->retention_ms) / 1000;
    s->keep = xcalloc(w->n_jobs ? w->n_jobs : 1, sizeof(char *));
    for (struct worker_job *j = w->jobs; j; j = j->next)
        if (j->run_dir)
            s->keep[s->n_keep++] = xstrdup(j->run_dir);
    w->sweeping = true;
    int rc = uv_queue_work(&w->loop, &s->req, on_sweep_work, on_sweep_done);
    assert(rc == 0);
    (void)rc;
}

/* --- Stopping -------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

/* No job left while stopping: stop the Redis threads, close the handles. */
static void worker_close(struct worker *w)
{
    worker_set_state(w, WORKER_CLOSING);
    atomic_store(&w->sweep_stop, 1);
    flush_staged(w);
    uv_mutex_lock(&w->lock);
    w->reader_stop = w->cancel_stop = w->pub_stop = true;
    if (!w->abandon_at_ms)
        w->abandon_at_ms = worker_mono_ms() + WORKER_FLUSH_MS;
    uv_cond_broadcast(&w->reader_cond);
    uv_cond_broadcast(&w->pub_cond);
    uv_mutex_unlock(&w->lock);
    /* Bounded: a blocking read ends within WORKER_READ_BLOCK_MS (plus the queue's
     * timeouts), the publisher by abandon_at_ms. */
    uv_thread_join(&w->reader_thread);
    uv_thread_join(&w->cancel_thread);
    uv_thread_join(&w->publisher_thread);
    w->reader_started = w->cancel_started = w->publisher_started = false;

    uv_mutex_lock(&w->lock);
    w->wake_closed = true;
    for (size_t i = 0; i < w->n_intake; i++)
        queue_step_msg_free(w->intake[i].msg); /* read too late: left pending */
    w->n_intake = 0;
    for (size_t i = 0; i < w->n_cancels; i++)
        queue_cancel_msg_free(w->cancels[i].msg);
    w->n_cancels = 0;
    uv_mutex_unlock(&w->lock);

    uv_close((uv_handle_t *)&w->wake, on_handle_closed);
    uv_close((uv_handle_t *)&w->flush, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_beat, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_fresh, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_sweep, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_grace, on_handle_closed);
    if (w->kube) {
        kube_ctx_close(w->kube, NULL, NULL);
        w->kube = NULL;
    }
    sl_info(WORKER_LOG, "worker \"%s\" stopped", w->id);
}

static void maybe_close(struct worker *w)
{
    if (w->state == WORKER_DRAINING && w->n_jobs == 0)
        worker_close(w);
}

/* The grace period is over (or a second stop came): hand back what still runs. */
static void hand_back_all(struct worker *w)
{
    size_t n = 0;
    w->handed_back_all = true;
    for (struct worker_job *j = w->jobs, *next; j; j = next) {
        next = j->next;
        if (j->state != JOB_REPORTING && !j->release) {
            n++;
            job_let_go(j);
        }
    }
    if (n)
        sl_info(WORKER_LOG, "handing back %zu unfinished step%s: other workers will take %s over",
                n, n == 1 ? "" : "s", n == 1 ? "it" : "them");
    uv_mutex_lock(&w->lock);
    if (!w->abandon_at_ms)
        w->abandon_at_ms = worker_mono_ms() + WORKER_FLUSH_MS;
    uv_cond_signal(&w->pub_cond);
    uv_mutex_unlock(&w->lock);
}

static void on_grace(uv_timer_t *t)
{
    struct worker *w = t->data;
    if (!w->handed_back_all)
        hand_back_all(w);
    maybe_close(w);
}

static void begin_drain(struct worker *w)
{
    worker_set_state(w, WORKER_DRAINING);
    sl_info(WORKER_LOG, "worker \"%s\" stopping: %zu step%s may finish within %lld ms", w->id,
            w->n_jobs, w->n_jobs == 1 ? "" : "s", (long long)w->stop_grace_ms);
    uv_mutex_lock(&w->lock);
    w->reader_stop = true;
    uv_cond_broadcast(&w->reader_cond);
    uv_mutex_unlock(&w->lock);
    /* never started: hand back at once */
    struct worker_job *j = w->gpu_head;
    w->gpu_head = w->gpu_tail = NULL;
    while (j) {
        struct worker_job *next = j->gpu_next;
        job_let_go(j);
        j = next;
    }
    uv_timer_start(&w->t_grace, on_grace, (uint64_t)w->stop_grace_ms, 0);
    on_heartbeat(&w->t_beat);
}

/* --- The wake-up: everything the other threads handed over -------------------------------- */

static void on_wake(uv_async_t *h)
{
    struct worker *w = h->data;
    if (w->state == WORKER_CLOSING)
        return;

    uv_mutex_lock(&w->lock);
    struct worker_intake *intake = w->intake;
    size_t n_intake = w->n_intake;
    struct worker_cancel_in *cancels = w->cancels;
    size_t n_cancels = w->n_cancels;
    struct worker_done *done = w->done;
    size_t n_done = w->n_done;
    uint64_t *lost = w->lost;
    size_t n_lost = w->n_lost;
    w->intake = NULL;
    w->n_intake = w->alloc_intake = 0;
    w->cancels = NULL;
    w->n_cancels = w->alloc_cancels = 0;
    w->done = NULL;
    w->n_done = w->alloc_done = 0;
    w->lost = NULL;
    w->n_lost = w->alloc_lost = 0;
    int stops = w->stop_requests;
    uv_mutex_unlock(&w->lock);

    /* Cancels first, so that steps arriving in this same batch see them. */
    for (size_t i = 0; i < n_cancels; i++) {
        on_cancel(w, &cancels[i]);
        queue_cancel_msg_free(cancels[i].msg);
    }
    for (size_t i = 0; i < n_done; i++) {
        struct worker_job *j = done[i].job;
        assert(j->state == JOB_REPORTING);
        job_release(j);
    }
    for (size_t i = 0; i < n_lost; i++) {
        struct worker_job *j = find_serial(w, lost[i]);
        if (j && j->state != JOB_REPORTING && !j->release) {
            sl_warn(WORKER_LOG,
                    "attempt \"%s\" was taken over by another worker (this one stalled past "
                    "the visibility timeout): stopping it here",
                    j->msg->attempt_id);
            job_let_go(j);
        }
    }
    for (size_t i = 0; i < n_intake; i++)
        on_step(w, &intake[i]);
    free(intake);
    free(cancels);
    free(done);
    free(lost);

    if (stops > 0 && w->state == WORKER_RUNNING)
        begin_drain(w);
    if (stops > 1 && w->state == WORKER_DRAINING && !w->handed_back_all)
        hand_back_all(w);
    maybe_close(w);
}

/* --- Start, stop, join ----------------------------------------------------------------- */

static void loop_main(void *arg)
{
    struct worker *w = arg;
    uv_timer_start(&w->t_beat, on_heartbeat, 0, (uint64_t)w->heartbeat_ms);
    uv_timer_start(&w->t_fresh, on_refresh, (uint64_t)w->visibility_ms / 3,
                   (uint64_t)w->visibility_ms / 3);
    if (w->executor == WORKER_EXEC_LOCAL)
        uv_timer_start(&w->t_sweep, on_sweep, (uint64_t)w->sweep_ms, (uint64_t)w->sweep_ms);
    uv_check_start(&w->flush, on_flush);
    sl_info(WORKER_LOG, "worker \"%s\" serving queue \"%s\": %zu slot%s, executor %s, %zu GPU%s",
            w->id, w->queue, w->slots, w->slots == 1 ? "" : "s", worker_executor_name(w->executor),
            w->n_gpus, w->n_gpus == 1 ? "" : "s");
    uv_run(&w->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&w->loop);
    if (rc != 0) {
        sl_error(WORKER_LOG, "worker \"%s\": the loop did not close: %s", w->id, uv_strerror(rc));
        uv_mutex_lock(&w->lock);
        if (!w->result)
            w->result = SL_EINTERNAL;
        uv_mutex_unlock(&w->lock);
    }
    uv_mutex_lock(&w->lock);
    w->ended = true;
    uv_cond_broadcast(&w->ended_cond);
    uv_mutex_unlock(&w->lock);
}

/* Frees w and everything it holds; its threads have ended (or never started). */
static void worker_free(struct worker *w)
{
    queue_close(w->q_read);
    queue_close(w->q_cancel);
    queue_close(w->q_pub);
    for (size_t i = 0; i < w->n_intake; i++)
        queue_step_msg_free(w->intake[i].msg);
    free(w->intake);
    for (size_t i = 0; i < w->n_cancels; i++)
        queue_cancel_msg_free(w->cancels[i].msg);
    free(w->cancels);
    for (size_t i = w->outbox_head; i < w->n_outbox; i++)
        queue_event_msg_free(w->outbox[i].ev);
    free(w->outbox);
    for (size_t i = 0; i < w->n_staged; i++)
        queue_event_msg_free(w->staged[i].ev);
    free(w->staged);
    free(w->done);
    free(w->lost);
    free(w->refresh_ids);
    free(w->refresh_serials);
    cJSON_Delete(w->heartbeat);
    for (size_t i = 0; w->recent && i < RECENT_CANCELS; i++) {
        free(w->recent[i].run_id);
        free(w->recent[i].attempt_id);
    }
    free(w->recent);
    free(w->gpu_busy);
    free(w->gpus);
    free(w->redis_url);
    free(w->key_prefix);
    free(w->queue);
    free(w->id);
    free(w->host);
    free(w->log_root);
    free(w->work_root);
    free(w->secrets_dir);
    uv_cond_destroy(&w->reader_cond);
    uv_cond_destroy(&w->pub_cond);
    uv_cond_destroy(&w->ended_cond);
    uv_mutex_destroy(&w->lock);
    uv_mutex_destroy(&w->dirs_lock);
    free(w);
}

/* "<hostname>-<pid>", made a valid consumer name. */
static char *default_id(const char *host)
{
    char *id = xasprintf("%s-%ld", host, (long)getpid());
    for (char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("._:@-", *p)))
            *p = '-';
    return id;
}

/* Copies and checks the options into w. Returns 0 or SL_EINVAL (logged). */
static int configure(struct worker *w, const struct worker_options *o)
{
    char host[256] = "localhost";
    if (gethostname(host, sizeof(host)) < 0 || !host[0])
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    w->host = xstrdup(host);
    if (!o->redis_url || !*o->redis_url) {
        sl_error(WORKER_LOG, "no Redis URL");
        return SL_EINVAL;
    }
    w->redis_url = xstrdup(o->redis_url);
    w->key_prefix = o->key_prefix ? xstrdup(o->key_prefix) : NULL;
    w->queue = xstrdup(o->queue ? o->queue : WORKER_DEFAULT_QUEUE);
    w->id = o->id ? xstrdup(o->id) : default_id(host);
    if (!valid_name(w->queue) || !valid_name(w->id)) {
        sl_error(WORKER_LOG, "invalid %s \"%s\": want 1-%d characters of [A-Za-z0-9._:@-]",
                 valid_name(w->queue) ? "worker id" : "queue name",
                 valid_name(w->queue) ? w->id : w->queue, QUEUE_NAME_MAX);
        return SL_EINVAL;
    }
    w->executor = o->executor;
    if (o->executor != WORKER_EXEC_LOCAL && o->executor != WORKER_EXEC_NOOP &&
        o->executor != WORKER_EXEC_KUBERNETES) {
        sl_error(WORKER_LOG, "unknown executor %d", (int)o->executor);
        return SL_EINVAL;
    }
    if (o->executor == WORKER_EXEC_KUBERNETES && (!o->kube || kube_options_check(o->kube) < 0)) {
        if (!o->kube)
            sl_error(WORKER_LOG, "the kubernetes executor needs its settings");
        return SL_EINVAL; /* before anything connects */
    }
    w->slots = o->slots ? o->slots
                        : (o->executor == WORKER_EXEC_NOOP ? WORKER_DEFAULT_NOOP_SLOTS
                                                           : WORKER_DEFAULT_SLOTS);
    if (w->slots > WORKER_MAX_SLOTS) {
        sl_error(WORKER_LOG, "slots must be 1 to %d, not %zu", WORKER_MAX_SLOTS, w->slots);
        return SL_EINVAL;
    }
    if (o->n_gpus > WORKER_MAX_GPUS || (o->n_gpus && !o->gpus)) {
        sl_error(WORKER_LOG, "at most %d GPUs", WORKER_MAX_GPUS);
        return SL_EINVAL;
    }
    w->n_gpus = o->n_gpus;
    w->gpus = xcalloc(o->n_gpus ? o->n_gpus : 1, sizeof(int));
    w->gpu_busy = xcalloc(o->n_gpus ? o->n_gpus : 1, sizeof(bool));
    for (size_t i = 0; i < o->n_gpus; i++) {
        w->gpus[i] = o->gpus[i];
        for (size_t k = 0; k < i; k++) {
            if (o->gpus[i] < 0 || o->gpus[k] == o->gpus[i]) {
                sl_error(WORKER_LOG, "GPU ids must be distinct and >= 0");
                return SL_EINVAL;
            }
        }
    }
    if (o->kill_grace_ms < 0 || o->visibility_timeout_ms < 0 || o->heartbeat_interval_ms < 0 ||
        o->stop_grace_ms < 0 || o->retention_ms < 0 || o->sweep_interval_ms < 0 ||
        (o->visibility_timeout_ms && o->visibility_timeout_ms < MIN_VISIBILITY_MS)) {
        sl_error(WORKER_LOG,
                 "durations must be positive, and the visibility timeout at least %d ms",
                 MIN_VISIBILITY_MS);
        return SL_EINVAL;
    }
    w->kill_grace_ms = o->kill_grace_ms ? o->kill_grace_ms : EXEC_LOCAL_DEFAULT_KILL_GRACE_MS;
    w->visibility_ms =
        o->visibility_timeout_ms ? o->visibility_timeout_ms : WORKER_DEFAULT_VISIBILITY_MS;
    w->heartbeat_ms =
        o->heartbeat_interval_ms ? o->heartbeat_interval_ms : WORKER_DEFAULT_HEARTBEAT_MS;
    w->stop_grace_ms = o->stop_grace_ms ? o->stop_grace_ms : WORKER_DEFAULT_STOP_GRACE_MS;
    w->retention_ms = o->retention_ms ? o->retention_ms : WORKER_DEFAULT_RETENTION_MS;
    w->sweep_ms = o->sweep_interval_ms ? o->sweep_interval_ms : w->retention_ms / 4;
    if (w->sweep_ms > MAX_SWEEP_MS)
        w->sweep_ms = MAX_SWEEP_MS;
    if (w->sweep_ms < 1)
        w->sweep_ms = 1;
    /* look for dead workers' messages often enough that one waits at most ~1.25 x the
     * visibility timeout */
    w->takeover_ms = w->visibility_ms / 4;
    w->log_root = absolute(o->log_root ? o->log_root : ".sluice/logs/steps");
    w->work_root = absolute(o->work_root ? o->work_root : ".sluice/work");
    w->secrets_dir = o->secrets_dir ? absolute(o->secrets_dir) : NULL;
    w->artifacts = o->artifacts;
    if (!w->log_root || !w->work_root || (o->secrets_dir && !w->secrets_dir)) {
        sl_error(WORKER_LOG, "cannot make the directories absolute: %s", strerror(errno));
        return SL_EINVAL;
    }
    return 0;
}

/* Connects the three queues; positions the cancel stream at its end. */
static int connect_redis(struct worker *w)
{
    struct queue_options qo = {.prefix = w->key_prefix};
    int rc = queue_open(&w->q_read, w->redis_url, &qo);
    if (rc == 0)
        rc = queue_open(&w->q_cancel, w->redis_url, &qo);
    if (rc == 0)
        rc = queue_open(&w->q_pub, w->redis_url, &qo);
    if (rc == 0)
        rc = queue_ensure_step_group(w->q_read, w->queue);
    if (rc == 0) {
        /* From here on no cancel is missed: the cancel thread goes on from this point. */
        struct queue_batch b = QUEUE_BATCH_INIT;
        rc = queue_read_cancels(&b, w->q_cancel, &w->cancel_after, 100, 0);
        for (size_t i = 0; rc == 0 && i < b.n; i++) {
            if (!b.entries[i].cancel)
                continue;
            XGROW(w->cancels, w->alloc_cancels, w->n_cancels + 1);
            w->cancels[w->n_cancels].id = b.entries[i].id;
            w->cancels[w->n_cancels].msg = b.entries[i].cancel;
            b.entries[i].cancel = NULL;
            w->n_cancels++;
        }
        queue_batch_release(&b);
    }
    if (rc < 0)
        sl_error(WORKER_LOG, "worker \"%s\": cannot use Redis: %s", w->id, sl_strerror(rc));
    return rc;
}

static void init_loop(struct worker *w)
{
    int rc = uv_loop_init(&w->loop);
    if (rc == 0)
        rc = uv_async_init(&w->loop, &w->wake, on_wake);
    if (rc != 0) {
        sl_error(WORKER_LOG, "cannot create the event loop: %s", uv_strerror(rc));
        abort(); /* out of file descriptors or memory at start-up */
    }
    w->wake.data = w;
    uv_check_init(&w->loop, &w->flush);
    w->flush.data = w;
    uv_timer_t *timers[] = {&w->t_beat, &w->t_fresh, &w->t_sweep, &w->t_grace};
    for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++) {
        uv_timer_init(&w->loop, timers[i]);
        timers[i]->data = w;
    }
}

/* Stops and joins whichever Redis threads started (start-up failed half-way). */
static void abort_threads(struct worker *w)
{
    uv_mutex_lock(&w->lock);
    w->reader_stop = w->cancel_stop = w->pub_stop = true;
    uv_cond_broadcast(&w->reader_cond);
    uv_cond_broadcast(&w->pub_cond);
    uv_mutex_unlock(&w->lock);
    if (w->reader_started)
        uv_thread_join(&w->reader_thread);
    if (w->cancel_started)
        uv_thread_join(&w->cancel_thread);
    if (w->publisher_started)
        uv_thread_join(&w->publisher_thread);
}

int worker_start(struct worker **out, const struct worker_options *o)
{
    if (!out || !o)
        return SL_EINVAL;
    struct worker *w = xcalloc(1, sizeof(*w));
    uv_mutex_init(&w->lock);
    uv_mutex_init(&w->dirs_lock);
    uv_cond_init(&w->reader_cond);
    uv_cond_init(&w->pub_cond);
    uv_cond_init(&w->ended_cond);
    atomic_init(&w->sweep_stop, 0);
    w->state = WORKER_RUNNING;

    int rc = configure(w, o);
    if (rc == 0 && w->executor != WORKER_EXEC_NOOP) {
        int e = worker_mkdir_p(w->log_root);
        if (e == 0 && w->executor == WORKER_EXEC_LOCAL)
            e = worker_mkdir_p(w->work_root);
        if (e < 0) {
            sl_error(WORKER_LOG, "cannot create \"%s\" or \"%s\": %s", w->log_root, w->work_root,
                     strerror(-e));
            rc = SL_EIO;
        }
    }
    if (rc == 0)
        rc = connect_redis(w);
    if (rc < 0) {
        worker_free(w);
        return rc;
    }
    init_loop(w);
    if (w->executor == WORKER_EXEC_KUBERNETES) {
        struct kube_options ko = *o->kube;
        ko.queue = w->queue;
        rc = kube_ctx_new(&w->kube, &w->loop, &ko);
        if (rc < 0) {
            uv_close((uv_handle_t *)&w->wake, NULL);
            uv_close((uv_handle_t *)&w->flush, NULL);
            uv_close((uv_handle_t *)&w->t_beat, NULL);
            uv_close((uv_handle_t *)&w->t_fresh, NULL);
            uv_close((uv_handle_t *)&w->t_sweep, NULL);
            uv_close((uv_handle_t *)&w->t_grace, NULL);
            uv_run(&w->loop, UV_RUN_DEFAULT);
            uv_loop_close(&w->loop);
            worker_free(w);
            return SL_EINVAL;
        }
    }
    rc = uv_thread_create(&w->publisher_thread, worker_publisher_main, w);
    w->publisher_started = rc == 0;
    if (rc == 0)
        rc = uv_thread_create(&w->cancel_thread, worker_cancel_main, w);
    w->cancel_started = w->publisher_started && rc == 0;
    if (rc == 0)
        rc = uv_thread_create(&w->reader_thread, worker_reader_main, w);
    w->reader_started = w->cancel_started && rc == 0;
    if (rc == 0)
        rc = uv_thread_create(&w->loop_thread, loop_main, w);
    w->loop_started = w->reader_started && rc == 0;
    if (rc != 0) {
        sl_error(WORKER_LOG, "cannot start the worker's threads: %s", uv_strerror(rc));
        abort_threads(w);
        if (w->kube)
            kube_ctx_close(w->kube, NULL, NULL);
        uv_close((uv_handle_t *)&w->wake, NULL);
        uv_close((uv_handle_t *)&w->flush, NULL);
        uv_close((uv_handle_t *)&w->t_beat, NULL);
        uv_close((uv_handle_t *)&w->t_fresh, NULL);
        uv_close((uv_handle_t *)&w->t_sweep, NULL);
        uv_close((uv_handle_t *)&w->t_grace, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
        worker_free(w);
        return SL_EIO;
    }
    *out = w;
    return 0;
}

void worker_stop(struct worker *w)
{
    uv_mutex_lock(&w->lock);
    w->stop_requests++;
    if (!w->wake_closed)
        uv_async_send(&w->wake);
    uv_mutex_unlock(&w->lock);
}

int worker_wait(struct worker *w, int64_t timeout_ms)
{
    int64_t deadline = worker_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    uv_mutex_lock(&w->lock);
    while (!w->ended && timeout_ms != 0) {
        if (timeout_ms < 0) {
            uv_cond_wait(&w->ended_cond, &w->lock);
            continue;
        }
        int64_t left = deadline - worker_mono_ms();
        if (left <= 0)
            break;
        (void)uv_cond_timedwait(&w->ended_cond, &w->lock, (uint64_t)left * 1000000);
    }
    bool ended = w->ended;
    uv_mutex_unlock(&w->lock);
    return ended ? 0 : SL_ETIMEDOUT;
}

int worker_join(struct worker *w)
{
    uv_thread_join(&w->loop_thread);
    int rc = w->result;
    worker_free(w);
    return rc;
}
