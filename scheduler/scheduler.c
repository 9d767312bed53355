/*
 * scheduler/scheduler.c - the scheduler daemon around the pure run engine.
 *
 * Everything here runs on the thread that called scheduler_run(), with one database
 * session (the leader's) and one Redis connection. The engine decides; this file only
 * moves facts between PostgreSQL, Redis and the engines:
 *
 *   events (Redis) --apply--> engines --transitions--> one transaction (PostgreSQL)
 *                                     --after commit--> dispatches, stops (Redis)
 *                                     --after commit--> acks (Redis)
 *
 * Every transition is snapshotted into a store_step_write right after the engine_apply()
 * that produced it, so a batch records each attempt's own state even when an instance
 * moves twice (failed, then queued again) within one batch.
 */
#include "scheduler/scheduler.h"

#include "common/arena.h"
#include "common/error.h"
#include "common/gitauth.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/timeutil.h"
#include "common/tz.h"
#include "common/xalloc.h"
#include "dsl/dsl.h"
#include "queue/queue.h"
#include "scheduler/engine.h"
#include "scheduler/notify.h"
#include "scheduler/dagsync.h"
#include "scheduler/registry.h"
#include "scheduler/ticker.h"
#include "store/store.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define COMP "scheduler"

/* A DAG version's model, parsed once and kept while the scheduler runs: engines point
 * into it. */
struct model {
    int64_t version_id;
    char *dag_id;
    char *file_path; /* relative to the source's root, or NULL */
    char *dag_dir;   /* absolute directory of its file in a directory source (dag test) */
    struct dsl_dag *dag;
};

/* One active run: its engine, plus what the engine does not track. */
struct srun {
    int64_t pk;
    char *dag_id;
    char *run_id;
    enum store_trigger trigger;
    struct model *model;
    struct engine_run *er;
    char **workers;      /* per instance: the worker running its attempt, or NULL */
    int64_t *dead_since; /* per instance: when its worker was first seen dead, or 0 */
    int64_t wakeup;      /* engine_next_wakeup(er), valid unless wakeup_stale */
    bool wakeup_stale;   /* an event was applied since: recompute (it scans every instance) */
    size_t alloc_workers;
    /* this batch */
    struct engine_actions acts;
    struct store_step_write *writes;
    size_t n_writes, alloc_writes;
    bool state_changed;
    enum engine_run_state new_state;
};

struct scheduler {
    struct scheduler_options o; /* strings owned */
    atomic_int stop;
    pthread_mutex_t stats_lock;
    struct scheduler_stats stats;

    struct store *st;
    struct queue *q;
    struct dagsync *ds;        /* the DAG source, while the leader; NULL otherwise */
    int64_t sync_request_seen; /* updated_at of the last "dags_sync_request" acted on */
    struct notifier notifier;  /* embedded; zeroed until started */
    bool notifier_on;
    char *dags_root; /* absolute */
    bool leader;

    struct srun **runs;
    size_t n_runs, alloc_runs;
    struct model **models;
    size_t n_models, alloc_models;

    struct arena batch_mem; /* strings of the batch's writes */
    struct queue_id *acks;  /* events to acknowledge after the commit */
    size_t n_acks, alloc_acks;
    bool reconcile_all_queued; /* after a restore: re-send every missing message */

    int64_t next_sync, next_tick, next_poll, next_reconcile;
    double loop_last_ms, loop_max_ms; /* iteration times, less the wait for events */
};

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

#define STAT_ADD(s, field, n)                                                                      \
    do {                                                                                           \
        pthread_mutex_lock(&(s)->stats_lock);                                                      \
        (s)->stats.field += (n);                                                                   \
        pthread_mutex_unlock(&(s)->stats_lock);                                                    \
    } while (0)

/* --- options and lifetime ------------------------------------------------------------ */

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static char *absolute_dir(const char *dir)
{
    if (dir[0] == '/')
        return xstrdup(dir);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd)))
        return xstrdup(dir);
    if (!strcmp(dir, "."))
        return xstrdup(cwd);
    return xasprintf("%s/%s", cwd, dir[0] == '.' && dir[1] == '/' ? dir + 2 : dir);
}

int scheduler_new(struct scheduler **out, const struct scheduler_options *o)
{
    if (!o || !o->database_url || !o->redis_url)
        return SL_EINVAL;
    struct scheduler *s = xcalloc(1, sizeof(*s));
    s->o = *o;
    s->o.database_url = xstrdup(o->database_url);
    s->o.redis_url = xstrdup(o->redis_url);
    if (o->id) {
        s->o.id = xstrdup(o->id);
    } else {
        char host[256] = "scheduler";
        gethostname(host, sizeof(host) - 1);
        s->o.id = xasprintf("%s-%ld", host, (long)getpid());
    }
    s->o.dags_dir = dup_or_null(o->dags_dir);
    s->o.api_url = dup_or_null(o->api_url);
    s->o.git.url = dup_or_null(o->git.url);
    s->o.git.ref = dup_or_null(o->git.ref);
    s->o.git.path = dup_or_null(o->git.path);
    s->o.git.dir = dup_or_null(o->git.dir);
    s->o.git.username = dup_or_null(o->git.username);
    s->o.git.password = dup_or_null(o->git.password);
    s->o.git.ssh_key_file = dup_or_null(o->git.ssh_key_file);
    s->o.git.known_hosts_file = dup_or_null(o->git.known_hosts_file);
    s->o.git.ca_file = dup_or_null(o->git.ca_file);
    if (!s->o.dags_interval_ms)
        s->o.dags_interval_ms = 30000;
    if (!s->o.batch_size)
        s->o.batch_size = 1000;
    if (s->o.batch_size > QUEUE_READ_MAX)
        s->o.batch_size = QUEUE_READ_MAX;
    if (!s->o.reconcile_interval_ms)
        s->o.reconcile_interval_ms = 5000;
    if (!s->o.worker_timeout_ms)
        s->o.worker_timeout_ms = 30000;
    if (!s->o.requeue_after_ms)
        s->o.requeue_after_ms = 10000;
    if (!s->o.poll_interval_ms)
        s->o.poll_interval_ms = 500;
    if (s->o.dags_dir)
        s->dags_root = absolute_dir(s->o.dags_dir);
    atomic_init(&s->stop, 0);
    pthread_mutex_init(&s->stats_lock, NULL);
    arena_init(&s->batch_mem);
    *out = s;
    return 0;
}

void scheduler_request_stop(struct scheduler *s)
{
    atomic_store(&s->stop, 1);
}

static bool stopping(struct scheduler *s)
{
    return atomic_load(&s->stop) != 0;
}

void scheduler_get_stats(const struct scheduler *s, struct scheduler_stats *out)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->stats_lock);
    *out = s->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&s->stats_lock);
}

static void srun_free(struct srun *r)
{
    if (!r)
        return;
    engine_run_free(r->er);
    for (size_t i = 0; i < r->alloc_workers; i++)
        free(r->workers[i]);
    free(r->workers);
    free(r->dead_since);
    engine_actions_release(&r->acts);
    free(r->writes);
    free(r->dag_id);
    free(r->run_id);
    free(r);
}

static void drop_runs(struct scheduler *s)
{
    for (size_t i = 0; i < s->n_runs; i++)
        srun_free(s->runs[i]);
    s->n_runs = 0;
}

void scheduler_free(struct scheduler *s)
{
    if (!s)
        return;
    drop_runs(s);
    free(s->runs);
    for (size_t i = 0; i < s->n_models; i++) {
        dsl_dag_free(s->models[i]->dag);
        free(s->models[i]->dag_id);
        free(s->models[i]->dag_dir);
        free(s->models[i]->file_path);
        free(s->models[i]);
    }
    free(s->models);
    free(s->acks);
    arena_release(&s->batch_mem);
    free((char *)s->o.database_url);
    free((char *)s->o.redis_url);
    free((char *)s->o.id);
    free((char *)s->o.dags_dir);
    free((char *)s->o.api_url);
    free((char *)s->o.git.url);
    free((char *)s->o.git.ref);
    free((char *)s->o.git.path);
    free((char *)s->o.git.dir);
    free((char *)s->o.git.username);
    free((char *)s->o.git.password);
    free((char *)s->o.git.ssh_key_file);
    free((char *)s->o.git.known_hosts_file);
    free((char *)s->o.git.ca_file);
    dagsync_free(s->ds);
    free(s->dags_root);
    pthread_mutex_destroy(&s->stats_lock);
    free(s);
}

/* --- state names between engine and store -------------------------------------------- */

static enum store_step_state to_store_state(enum engine_state e)
{
    switch (e) {
    case ENGINE_PENDING:
        return STORE_STEP_PENDING;
    case ENGINE_QUEUED:
        return STORE_STEP_QUEUED;
    case ENGINE_RUNNING:
        return STORE_STEP_RUNNING;
    case ENGINE_SUCCEEDED:
        return STORE_STEP_SUCCEEDED;
    case ENGINE_FAILED:
        return STORE_STEP_FAILED;
    case ENGINE_UP_FOR_RETRY:
        return STORE_STEP_UP_FOR_RETRY;
    case ENGINE_CANCELLED:
        return STORE_STEP_CANCELLED;
    case ENGINE_SKIPPED:
        return STORE_STEP_SKIPPED;
    case ENGINE_UPSTREAM_FAILED:
        return STORE_STEP_UPSTREAM_FAILED;
    }
    return STORE_STEP_PENDING;
}

static enum engine_state from_store_state(enum store_step_state e)
{
    static const enum engine_state map[] = {
        [STORE_STEP_PENDING] = ENGINE_PENDING,
        [STORE_STEP_QUEUED] = ENGINE_QUEUED,
        [STORE_STEP_RUNNING] = ENGINE_RUNNING,
        [STORE_STEP_SUCCEEDED] = ENGINE_SUCCEEDED,
        [STORE_STEP_FAILED] = ENGINE_FAILED,
        [STORE_STEP_UP_FOR_RETRY] = ENGINE_UP_FOR_RETRY,
        [STORE_STEP_CANCELLED] = ENGINE_CANCELLED,
        [STORE_STEP_SKIPPED] = ENGINE_SKIPPED,
        [STORE_STEP_UPSTREAM_FAILED] = ENGINE_UPSTREAM_FAILED,
    };
    return (unsigned)e < sizeof(map) / sizeof(map[0]) ? map[e] : ENGINE_PENDING;
}

static enum store_run_state to_store_run_state(enum engine_run_state e)
{
    switch (e) {
    case ENGINE_RUN_QUEUED:
        return STORE_RUN_QUEUED;
    case ENGINE_RUN_RUNNING:
        return STORE_RUN_RUNNING;
    case ENGINE_RUN_SUCCEEDED:
        return STORE_RUN_SUCCEEDED;
    case ENGINE_RUN_FAILED:
        return STORE_RUN_FAILED;
    case ENGINE_RUN_CANCELLING:
        return STORE_RUN_CANCELLING;
    case ENGINE_RUN_CANCELLED:
        return STORE_RUN_CANCELLED;
    }
    return STORE_RUN_QUEUED;
}

static enum engine_run_state from_store_run_state(enum store_run_state e)
{
    switch (e) {
    case STORE_RUN_QUEUED:
        return ENGINE_RUN_QUEUED;
    case STORE_RUN_RUNNING:
        return ENGINE_RUN_RUNNING;
    case STORE_RUN_SUCCEEDED:
        return ENGINE_RUN_SUCCEEDED;
    case STORE_RUN_FAILED:
        return ENGINE_RUN_FAILED;
    case STORE_RUN_CANCELLING:
        return ENGINE_RUN_CANCELLING;
    case STORE_RUN_CANCELLED:
        return ENGINE_RUN_CANCELLED;
    }
    return ENGINE_RUN_QUEUED;
}

static int64_t time_or_null(int64_t ms)
{
    return ms > 0 ? ms : STORE_NO_TIME;
}

static int64_t time_or_zero(int64_t ms)
{
    return ms == STORE_NO_TIME ? 0 : ms;
}

/* --- models and runs ------------------------------------------------------------------- */

static struct model *model_get(struct scheduler *s, int64_t version_id, struct arena *mem)
{
    for (size_t i = 0; i < s->n_models; i++)
        if (s->models[i]->version_id == version_id)
            return s->models[i];
    struct store_dag_version v;
    if (store_dag_version_get(s->st, &v, version_id, mem) < 0) {
        sl_error(COMP, "cannot load DAG version %lld: %s", (long long)version_id,
                 store_errmsg(s->st));
        return NULL;
    }
    struct dsl_diags diags;
    dsl_diags_init(&diags);
    struct dsl_dag *dag = NULL;
    /* the normalized model is larger than the file it came from: no size limit here,
     * the file was held to it when the version was recorded */
    struct dsl_options mo = {.max_bytes = strlen(v.model_json) + 1};
    int rc = dsl_parse_buffer(&dag, v.file_path ? v.file_path : v.dag_id, v.model_json,
                              strlen(v.model_json), &mo, &diags);
    dsl_diags_release(&diags);
    if (rc < 0) {
        sl_error(COMP, "DAG '%s' version %lld: its stored model does not parse", v.dag_id,
                 (long long)version_id);
        return NULL;
    }
    struct model *m = xcalloc(1, sizeof(*m));
    m->version_id = version_id;
    m->dag_id = xstrdup(v.dag_id);
    m->dag = dag;
    m->file_path = dup_or_null(v.file_path);
    if (s->dags_root && v.file_path) {
        const char *slash = strrchr(v.file_path, '/');
        m->dag_dir =
            slash ? xasprintf("%s/%.*s", s->dags_root, (int)(slash - v.file_path), v.file_path)
                  : xstrdup(s->dags_root);
    }
    XGROW(s->models, s->alloc_models, s->n_models + 1); // NOLINT(bugprone-sizeof-expression)
    s->models[s->n_models++] = m;
    return m;
}

static struct srun *find_run(struct scheduler *s, const char *dag, size_t dag_len,
                             const char *run_id, size_t run_len)
{
    for (size_t i = s->n_runs; i-- > 0;) {
        struct srun *r = s->runs[i];
        if (strlen(r->dag_id) == dag_len && !memcmp(r->dag_id, dag, dag_len) &&
            strlen(r->run_id) == run_len && !memcmp(r->run_id, run_id, run_len))
            return r;
    }
    return NULL;
}

static struct srun *find_run_pk(struct scheduler *s, int64_t pk)
{
    for (size_t i = 0; i < s->n_runs; i++)
        if (s->runs[i]->pk == pk)
            return s->runs[i];
    return NULL;
}

static void grow_workers(struct srun *r, size_t i)
{
    if (i < r->alloc_workers)
        return;
    size_t old = r->alloc_workers, alloc = r->alloc_workers;
    XGROW(r->workers, alloc, i + 1);
    memset(r->workers + old, 0, (alloc - old) * sizeof(*r->workers));
    r->dead_since = xrealloc(r->dead_since, alloc * sizeof(*r->dead_since));
    memset(r->dead_since + old, 0, (alloc - old) * sizeof(*r->dead_since));
    r->alloc_workers = alloc;
}

static void set_worker(struct srun *r, size_t i, const char *worker)
{
    grow_workers(r, i);
    free(r->workers[i]);
    r->workers[i] = worker ? xstrdup(worker) : NULL;
    r->dead_since[i] = 0;
}

static int64_t *dead_since(struct srun *r, size_t i)
{
    grow_workers(r, i);
    return &r->dead_since[i];
}

static const char *worker_of(const struct srun *r, size_t i)
{
    return i < r->alloc_workers ? r->workers[i] : NULL;
}

/* Records, for the batch, the new row of instance i after a transition to `to` of
 * attempt `attempt`. */
static void snapshot(struct scheduler *s, struct srun *r, size_t i, int attempt,
                     enum engine_state from, enum engine_state to, const char *reason, int64_t at)
{
    const struct engine_instance *in = &r->er->inst[i];
    const struct dsl_step *d = r->er->steps[in->step].def;
    struct arena *mem = &s->batch_mem;
    XGROW(r->writes, r->alloc_writes, r->n_writes + 1);
    struct store_step_write *w = &r->writes[r->n_writes++];
    memset(w, 0, sizeof(*w));
    w->step = d->name;
    w->map_index = in->map_index;
    w->state = to_store_state(attempt == in->attempt ? in->state : to);
    w->attempt = attempt;
    w->queued_at_ms = time_or_null(in->queued_at_ms);
    w->started_at_ms = time_or_null(in->started_at_ms);
    w->ended_at_ms = time_or_null(in->ended_at_ms);
    w->next_try_at_ms = time_or_null(in->next_try_at_ms);
    if (w->state == STORE_STEP_UP_FOR_RETRY && w->next_try_at_ms == STORE_NO_TIME)
        w->next_try_at_ms = at;
    if (w->state == STORE_STEP_QUEUED && w->queued_at_ms == STORE_NO_TIME)
        w->queued_at_ms = at;
    const char *worker = worker_of(r, i);
    w->worker = worker ? arena_strdup(mem, worker) : NULL;
    w->exit_code = in->exit_code >= 0 ? in->exit_code : STORE_NO_EXIT_CODE;
    w->reason = in->reason ? arena_strdup(mem, in->reason) : NULL;
    if (in->outputs && in->state == ENGINE_SUCCEEDED) {
        char *j = cJSON_PrintUnformatted(in->outputs);
        w->output_params_json = arena_strdup(mem, j);
        free(j);
    }
    if (in->item) {
        char *j = cJSON_PrintUnformatted(in->item);
        w->item_json = arena_strdup(mem, j);
        free(j);
    }
    w->from_state = to_store_state(from);
    w->to_state = to_store_state(to);
    w->event_reason = reason ? arena_strdup(mem, reason) : NULL;
    w->event_at_ms = at;
    if (attempt > 0)
        w->attempt_id = arena_sprintf(mem, "%s.%s.%s.%d.%d", r->er->dag->name, r->run_id, d->name,
                                      in->map_index, attempt);
}

/* Snapshots the transitions among r->acts.v[from ..]. */
static void take_actions(struct scheduler *s, struct srun *r, size_t from, int64_t at)
{
    for (size_t k = from; k < r->acts.n; k++) {
        const struct engine_action *a = &r->acts.v[k];
        if (a->kind == ENGINE_ACT_TRANSITION)
            snapshot(s, r, a->inst, a->attempt, a->from, a->to, a->reason, at);
        else if (a->kind == ENGINE_ACT_RUN_STATE) {
            r->state_changed = true;
            r->new_state = a->run_state;
        }
    }
}

static int apply(struct scheduler *s, struct srun *r, const struct engine_event *ev)
{
    size_t before = r->acts.n;
    int rc = engine_apply(r->er, ev, &r->acts);
    take_actions(s, r, before, ev->now_ms);
    r->wakeup_stale = true;
    return rc;
}

/* When the run next needs a TICK; recomputed only after the run changed. */
static int64_t run_wakeup(struct srun *r)
{
    if (r->wakeup_stale) {
        r->wakeup = engine_next_wakeup(r->er);
        r->wakeup_stale = false;
    }
    return r->wakeup;
}

/* Loads an active run (restored from its rows) into memory. */
static int load_run(struct scheduler *s, const struct store_run *sr, int64_t now)
{
    struct arena mem = ARENA_INIT;
    int rc = SL_EINVAL;
    struct model *m = model_get(s, sr->version_id, &mem);
    struct store_step_instance *rows = NULL;
    size_t n_rows = 0;
    cJSON *params = NULL;
    struct engine_row *er = NULL;
    char *dag_dir = NULL;
    if (!m) {
        rc = store_session_lost(s->st) ? SL_ECONN : SL_EINVAL;
        goto out;
    }
    if (s->ds && !s->o.no_sync) {
        struct strbuf why = STRBUF_INIT;
        rc = dagsync_dag_dir(s->ds, &dag_dir, m->file_path, sr->commit_sha, &why);
        if (rc < 0) {
            sl_error(COMP, "run %s/%s: no checkout of its commit %.12s: %s", sr->dag_id, sr->run_id,
                     sr->commit_sha ? sr->commit_sha : "(none)", why.buf);
            strbuf_release(&why);
            rc = rc == SL_ENOENT ? SL_EINVAL : rc; /* a commit gone for good fails the run */
            goto out;
        }
        strbuf_release(&why);
    }
    if ((rc = store_steps_of_run(s->st, &rows, &n_rows, sr->id, 0, &mem)) < 0) {
        sl_error(COMP, "run %s/%s: cannot read its steps: %s", sr->dag_id, sr->run_id,
                 store_errmsg(s->st));
        goto out;
    }
    er = xcalloc(n_rows + 1, sizeof(*er));
    cJSON **owned = xcalloc(2 * n_rows + 1, sizeof(cJSON *));
    for (size_t i = 0; i < n_rows; i++) {
        const struct store_step_instance *si = &rows[i];
        er[i].step = si->step;
        er[i].map_index = si->map_index;
        er[i].state = from_store_state(si->state);
        er[i].attempt = si->attempt;
        er[i].queued_at_ms = time_or_zero(si->queued_at_ms);
        er[i].started_at_ms = time_or_zero(si->started_at_ms);
        er[i].ended_at_ms = time_or_zero(si->ended_at_ms);
        er[i].next_try_at_ms = time_or_zero(si->next_try_at_ms);
        er[i].exit_code = si->exit_code == STORE_NO_EXIT_CODE ? -1 : si->exit_code;
        er[i].reason = si->reason;
        er[i].outputs = owned[2 * i] =
            si->output_params_json ? cJSON_Parse(si->output_params_json) : NULL;
        er[i].item = owned[2 * i + 1] = si->item_json ? cJSON_Parse(si->item_json) : NULL;
    }
    params = sr->params_json ? cJSON_Parse(sr->params_json) : NULL;
    char lt[32];
    sl_time_format_utc(lt, sr->logical_time_ms / 1000);
    struct srun *r = xcalloc(1, sizeof(*r));
    engine_actions_init(&r->acts);
    r->pk = sr->id;
    r->dag_id = xstrdup(sr->dag_id);
    r->run_id = xstrdup(sr->run_id);
    r->trigger = sr->trigger;
    r->model = m;
    r->wakeup_stale = true;
    rc = engine_run_restore(&r->er, m->dag, sr->run_id, lt, dag_dir ? dag_dir : m->dag_dir, params,
                            from_store_run_state(sr->state), er, n_rows, now, &r->acts);
    for (size_t i = 0; i < 2 * n_rows; i++)
        cJSON_Delete(owned[i]);
    free(owned);
    if (rc < 0) {
        sl_error(COMP, "run %s/%s cannot be restored from its rows (version %lld)", sr->dag_id,
                 sr->run_id, (long long)sr->version_id);
        engine_actions_release(&r->acts);
        free(r->dag_id);
        free(r->run_id);
        free(r);
        goto out;
    }
    if (s->o.git.url && sr->commit_sha) { /* inputs "from: git" */
        char *url = gitauth_shareable_url(s->o.git.url);
        engine_run_set_repo(r->er, url, sr->commit_sha);
        free(url);
    }
    /* the workers of running attempts, for the reconciler */
    for (size_t i = 0; i < n_rows; i++) {
        if (!rows[i].worker)
            continue;
        for (size_t j = 0; j < r->er->n_inst; j++) {
            const struct engine_instance *in = &r->er->inst[j];
            if (in->map_index == rows[i].map_index &&
                !strcmp(r->er->steps[in->step].def->name, rows[i].step))
                set_worker(r, j, rows[i].worker);
        }
    }
    take_actions(s, r, 0, now);
    XGROW(s->runs, s->alloc_runs, s->n_runs + 1); // NOLINT(bugprone-sizeof-expression)
    s->runs[s->n_runs++] = r;
    rc = 0;
out:
    cJSON_Delete(params);
    free(er);
    free(dag_dir);
    arena_release(&mem);
    return rc;
}

/* --- the batch: one transaction, then Redis ------------------------------------------- */

static void clear_batch(struct scheduler *s)
{
    for (size_t i = 0; i < s->n_runs; i++) {
        struct srun *r = s->runs[i];
        engine_actions_clear(&r->acts);
        r->n_writes = 0;
        r->state_changed = false;
    }
    arena_release(&s->batch_mem);
    arena_init(&s->batch_mem);
    s->n_acks = 0;
}

static bool batch_empty(const struct scheduler *s)
{
    if (s->n_acks)
        return false;
    for (size_t i = 0; i < s->n_runs; i++)
        if (s->runs[i]->n_writes || s->runs[i]->state_changed || s->runs[i]->acts.n)
            return false;
    return true;
}

static int write_batch(struct scheduler *s)
{
    int rc = store_begin(s->st);
    for (size_t i = 0; rc == 0 && i < s->n_runs; i++) {
        struct srun *r = s->runs[i];
        if (r->n_writes)
            rc = store_steps_write(s->st, r->pk, r->writes, r->n_writes);
        if (rc == 0 && r->state_changed)
            rc = store_run_set_state(s->st, r->pk, to_store_run_state(r->new_state), STORE_NO_TIME);
    }
    if (rc < 0) {
        sl_error(COMP, "writing a batch failed: %s", store_errmsg(s->st));
        store_rollback(s->st);
        return rc;
    }
    rc = store_commit(s->st);
    if (rc < 0)
        sl_error(COMP, "committing a batch failed: %s", store_errmsg(s->st));
    return rc;
}

static const char *step_queue(const struct srun *r, size_t i)
{
    return r->er->steps[r->er->inst[i].step].def->queue;
}

static void send_dispatch(struct scheduler *s, struct srun *r, size_t i, cJSON *spec,
                          bool redispatch)
{
    const struct engine_instance *in = &r->er->inst[i];
    char id[ENGINE_ATTEMPT_ID_MAX];
    engine_attempt_id(r->er, i, id, sizeof(id));
    struct queue_step_msg m = {
        .attempt_id = id,
        .dag_id = r->dag_id,
        .run_id = r->run_id,
        .step = (char *)r->er->steps[in->step].def->name,
        .map_index = in->map_index,
        .attempt = in->attempt,
        .spec = spec,
    };
    int rc = queue_dispatch(NULL, s->q, step_queue(r, i), &m);
    if (rc == 0) {
        STAT_ADD(s, dispatched, 1);
        if (redispatch) {
            STAT_ADD(s, redispatched, 1);
            sl_info(COMP, "re-sent %s: its message was gone", id);
        }
    } else if (rc != SL_EEXIST) {
        /* the reconciler sends it again once Redis is back */
        sl_warn(COMP, "cannot send %s to queue %s (%s); the reconciler will retry", id,
                step_queue(r, i), sl_strerror(rc));
    }
}

/* Sends the batch's dispatches, one pipelined call per queue. */
static void send_dispatches(struct scheduler *s)
{
    struct queue_step_msg *msgs = NULL;
    const char **queues = NULL;
    size_t n = 0, alloc = 0, alloc_q = 0;
    for (size_t i = 0; i < s->n_runs; i++) {
        struct srun *r = s->runs[i];
        for (size_t k = 0; k < r->acts.n; k++) {
            const struct engine_action *a = &r->acts.v[k];
            const struct engine_instance *in = &r->er->inst[a->inst];
            if (a->kind != ENGINE_ACT_DISPATCH || a->attempt != in->attempt ||
                in->state != ENGINE_QUEUED)
                continue;
            char id[ENGINE_ATTEMPT_ID_MAX];
            engine_attempt_id(r->er, a->inst, id, sizeof(id));
            XGROW(msgs, alloc, n + 1);
            XGROW(queues, alloc_q, n + 1); // NOLINT(bugprone-sizeof-expression)
            queues[n] = step_queue(r, a->inst);
            msgs[n++] = (struct queue_step_msg){
                .attempt_id = arena_strdup(&s->batch_mem, id),
                .dag_id = r->dag_id,
                .run_id = r->run_id,
                .step = (char *)r->er->steps[in->step].def->name,
                .map_index = in->map_index,
                .attempt = in->attempt,
                .spec = a->spec,
            };
        }
    }
    /* group by queue, keeping each queue's order */
    bool *sent = xcalloc(n + 1, sizeof(*sent));
    struct queue_step_msg *group = xcalloc(n + 1, sizeof(*group));
    for (size_t i = 0; i < n; i++) {
        if (sent[i])
            continue;
        size_t g = 0;
        for (size_t j = i; j < n; j++) {
            if (!sent[j] && !strcmp(queues[j], queues[i])) {
                group[g++] = msgs[j];
                sent[j] = true;
            }
        }
        int rc = queue_dispatch_many(NULL, s->q, queues[i], group, g);
        if (rc == 0)
            STAT_ADD(s, dispatched, g);
        else /* the reconciler sends them once Redis is back */
            sl_warn(COMP, "cannot send %zu steps to queue %s (%s); the reconciler will retry", g,
                    queues[i], sl_strerror(rc));
    }
    free(group);
    free(sent);
    free(queues);
    free(msgs);
}

static void send_stop(struct scheduler *s, struct srun *r, size_t i, const char *reason)
{
    char id[ENGINE_ATTEMPT_ID_MAX];
    engine_attempt_id(r->er, i, id, sizeof(id));
    bool removed = false;
    queue_withdraw(&removed, s->q, step_queue(r, i), id);
    struct queue_cancel_msg c = {.run_id = r->run_id,
                                 .attempt_id = id,
                                 .reason = (char *)(reason ? reason : "stopped"),
                                 .time_ms = sl_wall_ms()};
    if (queue_publish_cancel(NULL, s->q, &c) < 0)
        sl_warn(COMP, "cannot publish the cancel of %s", id);
}

static void notify_end(struct scheduler *s, struct srun *r)
{
    const struct dsl_dag *d = r->er->dag;
    if (r->er->state == ENGINE_RUN_CANCELLED || !s->notifier_on)
        return;
    const char *state = r->er->state == ENGINE_RUN_SUCCEEDED ? "succeeded" : "failed";
    size_t n = 0;
    const char *const *urls = notify_urls(d, state, &n);
    if (!n)
        return;
    struct notify_failed_step *failed = xcalloc(r->er->n_inst + 1, sizeof(*failed));
    size_t n_failed = 0;
    int64_t started = INT64_MAX, ended = 0;
    for (size_t i = 0; i < r->er->n_inst; i++) {
        const struct engine_instance *in = &r->er->inst[i];
        if (in->started_at_ms && in->started_at_ms < started)
            started = in->started_at_ms;
        if (in->ended_at_ms > ended)
            ended = in->ended_at_ms;
        if (in->state == ENGINE_FAILED) {
            failed[n_failed].step = r->er->steps[in->step].def->name;
            failed[n_failed].reason = in->reason;
            n_failed++;
        }
    }
    int64_t logical = 0;
    bool has_logical = sl_time_parse(&logical, r->er->logical_time, NULL) == 0;
    for (size_t u = 0; u < n; u++) {
        struct notify_event ev = {
            .url = urls[u],
            .dag_id = r->dag_id,
            .run_id = r->run_id,
            .state = state,
            .logical_time_ms = has_logical ? logical * 1000 : NOTIFY_NO_TIME,
            .started_at_ms = started == INT64_MAX ? NOTIFY_NO_TIME : started,
            .ended_at_ms = ended ? ended : sl_wall_ms(),
            .failed_steps = failed,
            .n_failed_steps = n_failed,
            .api_base_url = s->o.api_url,
        };
        notifier_send(&s->notifier, &ev);
    }
    free(failed);
}

/*
 * Commits the batch and then acts on it. On a failed commit the in-memory engines are
 * ahead of the database: the caller drops them and restores from PostgreSQL.
 */
static int flush(struct scheduler *s)
{
    if (batch_empty(s))
        return 0;
    bool any_write = false;
    for (size_t i = 0; i < s->n_runs; i++)
        any_write |= s->runs[i]->n_writes || s->runs[i]->state_changed;
    if (any_write) {
        int rc = write_batch(s);
        if (rc < 0)
            return rc;
        STAT_ADD(s, batches, 1);
    }
    /* committed: now Redis */
    send_dispatches(s);
    for (size_t i = 0; i < s->n_runs; i++) {
        struct srun *r = s->runs[i];
        for (size_t k = 0; k < r->acts.n; k++)
            if (r->acts.v[k].kind == ENGINE_ACT_STOP)
                send_stop(s, r, r->acts.v[k].inst, r->acts.v[k].reason);
    }
    if (s->n_acks && queue_ack_events(s->q, s->acks, s->n_acks) < 0)
        sl_warn(COMP, "cannot acknowledge %zu events; they will be applied again (harmless)",
                s->n_acks);
    /* runs that ended leave memory */
    size_t kept = 0;
    for (size_t i = 0; i < s->n_runs; i++) {
        struct srun *r = s->runs[i];
        if (r->state_changed && r->new_state == ENGINE_RUN_RUNNING)
            STAT_ADD(s, runs_started, 1);
        if (engine_run_done(r->er)) {
            sl_info(COMP, "run %s/%s %s", r->dag_id, r->run_id,
                    engine_run_state_name(r->er->state));
            STAT_ADD(s, runs_finished, 1);
            notify_end(s, r);
            if (r->trigger == STORE_TRIGGER_SCHEDULED)
                s->next_tick = 0; /* overlap and max_active_runs may allow the next one */
            srun_free(r);
            continue;
        }
        s->runs[kept++] = r;
    }
    s->n_runs = kept;
    clear_batch(s);
    return 0;
}

/* --- leadership ----------------------------------------------------------------------- */

static void lose_leadership(struct scheduler *s, const char *why)
{
    if (s->leader)
        sl_warn(COMP, "%s: no longer the leader (%s); rebuilding from PostgreSQL", s->o.id, why);
    s->leader = false;
    clear_batch(s);
    drop_runs(s);
    dagsync_free(s->ds); /* its directory is the next leader's if it runs here */
    s->ds = NULL;
    store_session_unbind(s->st);
    queue_rewind_events(s->q);
}

/* Loads every active run from PostgreSQL (a new leader, or after a failed commit). */
static int restore_all(struct scheduler *s)
{
    struct arena mem = ARENA_INIT;
    struct store_run *runs = NULL;
    size_t n = 0;
    int rc = store_runs_active_all(s->st, &runs, &n, &mem);
    int64_t now = sl_wall_ms();
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (load_run(s, &runs[i], now) < 0 && store_session_lost(s->st))
            rc = SL_ECONN;
    arena_release(&mem);
    if (rc == 0) {
        sl_info(COMP, "%s restored %zu active run%s", s->o.id, s->n_runs,
                s->n_runs == 1 ? "" : "s");
        s->reconcile_all_queued = true;
        s->next_reconcile = 0;
        s->next_sync = s->next_tick = s->next_poll = 0;
    }
    return rc;
}

/* Opens the DAG source for a new leadership. A source that cannot be opened (its
 * directory missing, another process using the Git directory) is logged and tried again
 * at the next sync interval; the scheduler runs on with the DAGs it has. */
static void open_source(struct scheduler *s)
{
    bool git = s->o.git.url != NULL;
    if (s->ds || (!git && (!s->dags_root || s->o.no_sync)))
        return;
    struct dagsync_options o = {
        .dir = s->dags_root, .git = s->o.git, .interval_ms = s->o.dags_interval_ms};
    struct strbuf err = STRBUF_INIT;
    if (dagsync_new(&s->ds, &o, &err) < 0) {
        sl_warn(COMP, "the DAG source cannot be opened (trying again in %lld ms): %s",
                (long long)s->o.dags_interval_ms, err.buf);
        s->next_sync = sl_wall_ms() + s->o.dags_interval_ms;
    }
    strbuf_release(&err);
}

static int become_leader(struct scheduler *s)
{
    bool got = false;
    int rc = store_leader_try(s->st, &got);
    if (rc < 0 || !got)
        return rc < 0 ? rc : SL_ENOTFOUND; /* another scheduler leads */
    s->leader = true;
    STAT_ADD(s, leader_elections, 1);
    sl_info(COMP, "%s is the leader", s->o.id);
    queue_rewind_events(s->q);
    open_source(s);
    rc = restore_all(s);
    if (rc < 0)
        lose_leadership(s, "restore failed");
    return rc;
}

/* --- sources of work ------------------------------------------------------------------ */

static void sync_dags(struct scheduler *s, int64_t now)
{
    if (!s->ds) {
        if (now >= s->next_sync)
            open_source(s);
        if (!s->ds)
            return;
    }
    if (dagsync_step(s->ds, s->st, now) > 0)
        s->next_tick = 0; /* new versions: the ticker looks again */
    s->next_sync = dagsync_next(s->ds, sl_wall_ms());
}

/* A sync asked for through the database (the API's push webhook, `sluice dags sync`). */
static void check_sync_request(struct scheduler *s)
{
    struct arena mem = ARENA_INIT;
    const char *json;
    int64_t at = 0;
    if (s->ds && store_state_get(s->st, &json, &at, "dags_sync_request", &mem) == 0 &&
        at > s->sync_request_seen) {
        if (s->sync_request_seen)
            sl_info(COMP, "a DAG sync was asked for: %s", json);
        if (s->sync_request_seen || at > sl_wall_ms() - 60000)
            dagsync_request(s->ds);
        s->sync_request_seen = at;
        s->next_sync = 0;
    }
    arena_release(&mem);
}

static size_t active_runs_of(const struct scheduler *s, const char *dag_id, bool started_only)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_runs; i++) {
        const struct srun *r = s->runs[i];
        if (strcmp(r->dag_id, dag_id))
            continue;
        if (!started_only || r->er->state == ENGINE_RUN_RUNNING ||
            r->er->state == ENGINE_RUN_CANCELLING)
            n++;
    }
    return n;
}

static void cancel_run(struct scheduler *s, struct srun *r, int64_t now)
{
    struct engine_event ev = {.kind = ENGINE_EV_CANCEL, .now_ms = now};
    apply(s, r, &ev);
}

/* The cron ticker over every active, unpaused DAG with a schedule. */
static void tick(struct scheduler *s, int64_t now)
{
    s->next_tick = now + 10000; /* pauses and new versions are noticed this fast */
    struct arena mem = ARENA_INIT;
    struct store_dag *dags = NULL;
    size_t n = 0;
    if (store_dag_list(s->st, &dags, &n, &mem) < 0) {
        arena_release(&mem);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const struct store_dag *d = &dags[i];
        if (!d->is_active || d->is_paused || !d->current_version_id)
            continue;
        struct model *m = model_get(s, d->current_version_id, &mem);
        if (!m || !m->dag->schedule)
            continue;
        struct sl_tz *tz = NULL;
        if (m->dag->timezone && strcmp(m->dag->timezone, "UTC") &&
            sl_tz_load(&tz, m->dag->timezone) < 0) {
            sl_warn(COMP, "DAG %s: time zone %s cannot be loaded", d->dag_id, m->dag->timezone);
            continue;
        }
        struct ticker_dag_state ts = {
            .last_logical_ms =
                d->last_scheduled_ms == STORE_NO_TIME ? INT64_MIN : d->last_scheduled_ms,
            .active_runs = active_runs_of(s, d->dag_id, false),
            .paused = d->is_paused,
            .active = d->is_active,
        };
        struct ticker_decision dec;
        if (ticker_decide(&dec, m->dag, tz, &ts, now, 100) == 0) {
            /* the ticker reports the same skipped ticks on every pass: debug only */
            if (dec.n_skipped)
                sl_debug(COMP, "DAG %s: %zu tick%s skipped (%s)", d->dag_id, dec.n_skipped,
                         dec.n_skipped == 1 ? "" : "s", dec.skipped_reason);
            if (dec.cancel_active)
                for (size_t k = 0; k < s->n_runs; k++)
                    if (!strcmp(s->runs[k]->dag_id, d->dag_id))
                        cancel_run(s, s->runs[k], now);
            for (size_t k = 0; k < dec.n_create; k++) {
                struct store_run_new rn = {.dag_id = d->dag_id,
                                           .trigger = STORE_TRIGGER_SCHEDULED,
                                           .logical_time_ms = dec.create_logical_ms[k],
                                           .version_id = d->current_version_id};
                struct store_run out;
                bool existed = false;
                if (store_run_create(s->st, &out, &existed, &rn, &mem) < 0) {
                    sl_warn(COMP, "DAG %s: cannot create a scheduled run: %s", d->dag_id,
                            store_errmsg(s->st));
                    break;
                }
                if (!find_run_pk(s, out.id) && load_run(s, &out, now) == 0)
                    sl_info(COMP, "DAG %s: scheduled run %s created", d->dag_id, out.run_id);
            }
            if (dec.next_wakeup_ms < s->next_tick)
                s->next_tick = dec.next_wakeup_ms;
            ticker_decision_release(&dec);
        }
        sl_tz_free(tz);
    }
    arena_release(&mem);
}

/* Runs created by others (API, CLI) and cancels asked for through the database. */
static void poll_runs(struct scheduler *s, int64_t now)
{
    s->next_poll = now + s->o.poll_interval_ms;
    check_sync_request(s);
    struct arena mem = ARENA_INIT;
    struct store_run *runs = NULL;
    size_t n = 0;
    if (store_runs_active_all(s->st, &runs, &n, &mem) == 0) {
        for (size_t i = 0; i < n; i++) {
            struct srun *r = find_run_pk(s, runs[i].id);
            if (!r) {
                if (load_run(s, &runs[i], now) == SL_EINVAL) {
                    /* its pinned version cannot be run: fail it once, loudly, rather
                     * than leave it queued and try again every poll */
                    sl_error(COMP, "run %s/%s failed: its DAG version %lld cannot be loaded",
                             runs[i].dag_id, runs[i].run_id, (long long)runs[i].version_id);
                    store_run_set_state(s->st, runs[i].id, STORE_RUN_FAILED, STORE_NO_TIME);
                }
            } else if (runs[i].state == STORE_RUN_CANCELLING &&
                       r->er->state != ENGINE_RUN_CANCELLING && !engine_run_done(r->er)) {
                sl_info(COMP, "run %s/%s: cancel requested", r->dag_id, r->run_id);
                cancel_run(s, r, now);
            }
        }
    }
    arena_release(&mem);
}

/* Starts queued runs, oldest first, within each DAG's max_active_runs. */
static void admit(struct scheduler *s, int64_t now)
{
    for (size_t i = 0; i < s->n_runs; i++) {
        struct srun *r = s->runs[i];
        if (r->er->state != ENGINE_RUN_QUEUED)
            continue;
        int64_t max = r->er->dag->max_active_runs;
        if (max > 0 && (int64_t)active_runs_of(s, r->dag_id, true) >= max)
            continue;
        struct engine_event ev = {.kind = ENGINE_EV_START, .now_ms = now};
        apply(s, r, &ev);
    }
}

static enum engine_failure parse_failure(const char *name)
{
    if (name && !strcmp(name, "error"))
        return ENGINE_FAIL_ERROR;
    if (name && !strcmp(name, "transient"))
        return ENGINE_FAIL_TRANSIENT;
    if (name && !strcmp(name, "cancelled"))
        return ENGINE_FAIL_CANCELLED;
    return ENGINE_FAIL_STEP;
}

/* Finds instance (step, map_index) of r: the step by name, then its instance directly.
 * Returns its index or SIZE_MAX. */
static size_t find_instance(const struct srun *r, const char *step, size_t step_len, int map)
{
    for (size_t k = 0; k < r->er->n_steps; k++) {
        const struct engine_step *es = &r->er->steps[k];
        if (strlen(es->def->name) != step_len || memcmp(es->def->name, step, step_len))
            continue;
        if (map < 0)
            return es->self;
        return es->expanded && (size_t)map < es->count ? es->first + (size_t)map : SIZE_MAX;
    }
    return SIZE_MAX;
}

static void apply_event(struct scheduler *s, const struct queue_event_msg *m, int64_t now)
{
    struct engine_attempt_ref ref;
    if (engine_attempt_id_split(&ref, m->attempt_id) < 0) {
        sl_warn(COMP, "dropping an event with a malformed attempt id '%s'", m->attempt_id);
        return;
    }
    struct srun *r = find_run(s, ref.dag, ref.dag_len, ref.run_id, ref.run_id_len);
    if (!r) {
        sl_debug(COMP, "event for %s: its run is not active (stale)", m->attempt_id);
        return;
    }
    char step[256];
    snprintf(step, sizeof(step), "%.*s", (int)ref.step_len, ref.step);
    struct engine_event ev = {
        .now_ms = now, .step = step, .map_index = ref.map_index, .attempt = ref.attempt};
    size_t i = find_instance(r, ref.step, ref.step_len, ref.map_index);
    switch (m->kind) {
    case QUEUE_EVENT_RUNNING:
        ev.kind = ENGINE_EV_RUNNING;
        if (i != SIZE_MAX && r->er->inst[i].attempt == ref.attempt) {
            bool takeover = r->er->inst[i].state == ENGINE_RUNNING &&
                            (!worker_of(r, i) || strcmp(worker_of(r, i), m->worker_id));
            set_worker(r, i, m->worker_id);
            if (takeover) /* another worker took the message over: remember who runs it */
                snapshot(s, r, i, ref.attempt, ENGINE_RUNNING, ENGINE_RUNNING, NULL, now);
        }
        break;
    case QUEUE_EVENT_SUCCEEDED:
        ev.kind = ENGINE_EV_SUCCEEDED;
        ev.outputs = m->outputs;
        break;
    case QUEUE_EVENT_FAILED:
        ev.kind = ENGINE_EV_FAILED;
        ev.failure = parse_failure(m->failure);
        ev.exit_code = m->has_exit_code ? m->exit_code : -1;
        ev.reason = m->reason ? m->reason : "failed";
        break;
    }
    if (apply(s, r, &ev) < 0)
        sl_warn(COMP, "event for %s names an unknown step; dropped", m->attempt_id);
    STAT_ADD(s, events, 1);
}

static void apply_ticks(struct scheduler *s, int64_t now)
{
    for (size_t i = 0; i < s->n_runs; i++) {
        struct srun *r = s->runs[i];
        if (run_wakeup(r) <= now) {
            struct engine_event ev = {.kind = ENGINE_EV_TICK, .now_ms = now};
            apply(s, r, &ev);
        }
    }
}

static int64_t next_wakeup(struct scheduler *s)
{
    int64_t t = s->next_poll;
    if (s->next_tick < t)
        t = s->next_tick;
    if ((s->dags_root || s->o.git.url) && s->next_sync < t)
        t = s->next_sync;
    if (s->next_reconcile < t)
        t = s->next_reconcile;
    for (size_t i = 0; i < s->n_runs; i++) {
        int64_t w = run_wakeup(s->runs[i]);
        if (w < t)
            t = w;
    }
    return t;
}

/* --- the reconciler --------------------------------------------------------------------- */

static const struct queue_worker *find_worker(const struct queue_workers *w, const char *id)
{
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->items[i].id, id))
            return &w->items[i];
    return NULL;
}

static bool worker_alive(const struct queue_workers *w, const char *id, int64_t timeout_ms)
{
    const struct queue_worker *x = find_worker(w, id);
    return x && x->alive && w->now_ms - x->last_seen_ms <= timeout_ms;
}

/*
 * Whether a live worker's last heartbeat says it no longer runs attempt id, which started
 * at started_ms: its heartbeat lists the attempts it holds, and one that started well
 * before that heartbeat and is not listed has ended - so its final event was lost (Redis
 * lost its data) if none is waiting.
 */
static bool worker_dropped(const struct queue_workers *w, const char *worker, const char *id,
                           int64_t started_ms)
{
    const struct queue_worker *x = find_worker(w, worker);
    if (!x || !x->alive || !x->info || x->last_seen_ms - started_ms < 3000)
        return false;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(x->info, "attempts");
    if (!cJSON_IsArray(list))
        return false; /* a worker that does not say */
    const cJSON *it;
    cJSON_ArrayForEach(it, list)
    {
        if (cJSON_IsString(it) && !strcmp(it->valuestring, id))
            return false;
    }
    return true;
}

/* Fails instance i's running attempt as lost: a transient error, retried by policy. */
static void fail_lost(struct scheduler *s, struct srun *r, size_t i, const char *reason,
                      int64_t now)
{
    const struct engine_instance *in = &r->er->inst[i];
    sl_warn(COMP, "%s/%s step %s attempt %d: %s", r->dag_id, r->run_id,
            r->er->steps[in->step].def->name, in->attempt, reason);
    struct engine_event ev = {.kind = ENGINE_EV_FAILED,
                              .now_ms = now,
                              .step = r->er->steps[in->step].def->name,
                              .map_index = in->map_index,
                              .attempt = in->attempt,
                              .failure = ENGINE_FAIL_TRANSIENT,
                              .exit_code = -1,
                              .reason = reason};
    apply(s, r, &ev);
    STAT_ADD(s, lost, 1);
}

/* An attempt queued in PostgreSQL whose message is missing from Redis. */
struct resend {
    struct srun *run;
    size_t inst;
};

/* The leader's heartbeat in the "scheduler" state document, for health checks. */
static void publish_heartbeat(struct scheduler *s, int64_t now)
{
    struct strbuf j = STRBUF_INIT;
    strbuf_addstr(&j, "{\"id\": ");
    strbuf_add_json_string(&j, s->o.id);
    strbuf_addf(&j, ", \"at_ms\": %lld, \"runs\": %zu, \"loop_ms\": %.3f, \"loop_max_ms\": %.3f}",
                (long long)now, s->n_runs, s->loop_last_ms, s->loop_max_ms);
    s->loop_max_ms = 0;
    if (store_state_put(s->st, "scheduler", j.buf) < 0)
        sl_debug(COMP, "heartbeat not written: %s", store_errmsg(s->st));
    strbuf_release(&j);
}

static void reconcile(struct scheduler *s, int64_t now)
{
    s->next_reconcile = now + s->o.reconcile_interval_ms;
    publish_heartbeat(s, now);
    bool all = s->reconcile_all_queued;
    s->reconcile_all_queued = false;
    struct queue_workers workers = {0};
    bool have_workers = queue_list_workers(&workers, s->q) == 0;
    struct resend *resend = NULL, *dropped = NULL;
    size_t n_resend = 0, alloc_resend = 0, n_dropped = 0, alloc_dropped = 0;
    size_t budget = 2000; /* messages checked per pass */
    for (size_t k = 0; k < s->n_runs; k++) {
        struct srun *r = s->runs[k];
        for (size_t i = 0; i < r->er->n_inst && budget; i++) {
            const struct engine_instance *in = &r->er->inst[i];
            bool placeholder = r->er->steps[in->step].expanded && in->map_index < 0;
            if (placeholder)
                continue;
            char id[ENGINE_ATTEMPT_ID_MAX];
            if (in->state == ENGINE_QUEUED &&
                (all || now - in->queued_at_ms >= s->o.requeue_after_ms)) {
                budget--;
                engine_attempt_id(r->er, i, id, sizeof(id));
                bool has = true;
                if (queue_has_message(&has, s->q, step_queue(r, i), id) < 0 || has)
                    continue;
                XGROW(resend, alloc_resend, n_resend + 1);
                resend[n_resend++] = (struct resend){r, i};
            } else if (in->state == ENGINE_RUNNING && have_workers && worker_of(r, i) &&
                       now - in->started_at_ms >= s->o.worker_timeout_ms &&
                       !worker_alive(&workers, worker_of(r, i), s->o.worker_timeout_ms)) {
                engine_attempt_id(r->er, i, id, sizeof(id));
                /*
                 * Its worker is dead. While the message is still pending, another worker
                 * takes it over after the visibility timeout (a worker that stopped
                 * gracefully handed it back the same way): give that a while - twice the
                 * worker timeout from when the death was first seen - before failing it.
                 */
                bool has = false;
                queue_has_message(&has, s->q, step_queue(r, i), id);
                int64_t *since = dead_since(r, i);
                if (!*since)
                    *since = now;
                if (has && now - *since < 2 * s->o.worker_timeout_ms)
                    continue;
                char reason[QUEUE_NAME_MAX + 64];
                snprintf(reason, sizeof(reason), "lost: worker %s stopped heartbeating",
                         worker_of(r, i));
                /* nobody may take the old attempt over now: it is failed */
                queue_withdraw(NULL, s->q, step_queue(r, i), id);
                fail_lost(s, r, i, reason, now);
            } else if (in->state == ENGINE_RUNNING && have_workers && worker_of(r, i)) {
                engine_attempt_id(r->er, i, id, sizeof(id));
                bool has = true;
                if (worker_dropped(&workers, worker_of(r, i), id, in->started_at_ms) &&
                    queue_has_message(&has, s->q, step_queue(r, i), id) == 0 && !has) {
                    XGROW(dropped, alloc_dropped, n_dropped + 1);
                    dropped[n_dropped++] = (struct resend){r, i};
                }
            }
        }
    }
    if (have_workers)
        queue_workers_release(&workers);
    /*
     * A message is also missing once its worker finished: the worker publishes the final
     * event, then acknowledges the message. So resend only when no event waits to be
     * applied: an attempt whose message was already gone when it was checked, with the
     * events stream empty after that, really was lost. Otherwise try again shortly.
     */
    if (n_resend || n_dropped) {
        struct queue_stats es;
        if (queue_event_stats(&es, s->q) == 0 && es.waiting == 0 && es.pending == 0) {
            for (size_t k = 0; k < n_dropped; k++) {
                struct srun *r = dropped[k].run;
                char reason[QUEUE_NAME_MAX + 80];
                snprintf(reason, sizeof(reason),
                         "lost: worker %s no longer runs it and its result never arrived",
                         worker_of(r, dropped[k].inst));
                fail_lost(s, r, dropped[k].inst, reason, now);
            }
            for (size_t k = 0; k < n_resend; k++) {
                char err[256];
                cJSON *spec =
                    engine_render_spec(resend[k].run->er, resend[k].inst, err, sizeof(err));
                if (spec) {
                    send_dispatch(s, resend[k].run, resend[k].inst, spec, true);
                    cJSON_Delete(spec);
                }
            }
        } else {
            s->reconcile_all_queued = all;
            s->next_reconcile = now + 200;
        }
    }
    free(resend);
    free(dropped);
}

/* --- the loop ---------------------------------------------------------------------------- */

static bool has_work(const struct scheduler *s)
{
    return !batch_empty(s);
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int iterate(struct scheduler *s)
{
    double t0 = mono_ms();
    int64_t now = sl_wall_ms();
    if ((s->dags_root || s->o.git.url) && !s->o.no_sync && now >= s->next_sync)
        sync_dags(s, now);
    if (now >= s->next_poll)
        poll_runs(s, now);
    if (now >= s->next_tick)
        tick(s, now);
    admit(s, now);
    apply_ticks(s, now);

    int64_t wait = has_work(s) ? 0 : next_wakeup(s) - sl_wall_ms();
    if (wait > 100)
        wait = 100;
    if (wait < 0)
        wait = 0;
    struct queue_batch b = QUEUE_BATCH_INIT;
    double wait_from = mono_ms();
    int rc = queue_read_events(&b, s->q, s->o.id, s->o.batch_size, (int)wait);
    double waited = b.n ? 0 : mono_ms() - wait_from; /* an empty read is idle time */
    if (rc == 0) {
        now = sl_wall_ms();
        for (size_t i = 0; i < b.n; i++) {
            XGROW(s->acks, s->alloc_acks, s->n_acks + 1);
            s->acks[s->n_acks++] = b.entries[i].id;
            if (b.entries[i].error)
                sl_warn(COMP, "dropping a malformed event %s: %s", b.entries[i].id.s,
                        b.entries[i].error);
            else
                apply_event(s, b.entries[i].event, now);
        }
        /* what the events released may already be due (zero backoff) */
        apply_ticks(s, now);
    } else if (rc == SL_ECONN) {
        /* Redis is away: the queue call already waited out its backoff */
    }
    queue_batch_release(&b);

    rc = flush(s);
    /* after the commit, so that a queued step is never re-sent before it was sent */
    if (rc == 0 && sl_wall_ms() >= s->next_reconcile) {
        reconcile(s, sl_wall_ms());
        rc = flush(s);
    }
    if (rc < 0) {
        /* the engines ran ahead of the database: rebuild them from it */
        if (store_session_lost(s->st)) {
            lose_leadership(s, "database session lost");
        } else {
            clear_batch(s);
            drop_runs(s);
            queue_rewind_events(s->q);
            if (restore_all(s) < 0)
                lose_leadership(s, "restore failed");
        }
    }
    s->loop_last_ms = mono_ms() - t0 - waited;
    if (s->loop_last_ms > s->loop_max_ms)
        s->loop_max_ms = s->loop_last_ms;
    return 0;
}

int scheduler_run(struct scheduler *s)
{
    struct strbuf err = STRBUF_INIT;
    struct store_options so = STORE_OPTIONS_INIT;
    so.application_name = "sluice-scheduler";
    int rc = store_open(&s->st, s->o.database_url, &so, &err);
    if (rc < 0) {
        sl_error(COMP, "cannot connect to PostgreSQL: %s", err.buf);
        strbuf_release(&err);
        return rc;
    }
    strbuf_release(&err);
    rc = s->o.no_migrate ? store_schema_check(s->st) : store_migrate(s->st, NULL, NULL);
    if (rc < 0) {
        sl_error(COMP, "%s", store_errmsg(s->st));
        store_close(s->st);
        s->st = NULL;
        return rc;
    }
    rc = queue_open(&s->q, s->o.redis_url, NULL);
    if (rc < 0) {
        sl_error(COMP, "cannot connect to Redis");
        store_close(s->st);
        s->st = NULL;
        return rc;
    }
    struct notifier_options no = {0};
    s->notifier_on = notifier_start(&s->notifier, &no) == 0;
    sl_info(COMP, "%s started (standby until it holds the leader lock)", s->o.id);
    while (!stopping(s)) {
        if (!s->leader) {
            rc = become_leader(s);
            if (rc < 0) {
                if (rc == SL_ECONN && store_session_lost(s->st))
                    store_session_unbind(s->st);
                sleep_ms(rc == SL_ENOTFOUND ? 1000 : 200);
                continue;
            }
        }
        iterate(s);
    }
    sl_info(COMP, "%s stopping", s->o.id);
    if (s->notifier_on) {
        notifier_stop(&s->notifier, 5000); /* what is queued gets five seconds */
        notifier_release(&s->notifier);
    }
    s->notifier_on = false;
    drop_runs(s);
    dagsync_free(s->ds);
    s->ds = NULL;
    queue_close(s->q);
    s->q = NULL;
    store_close(s->st); /* releases the leader lock with the session */
    s->st = NULL;
    s->leader = false;
    return 0;
}
