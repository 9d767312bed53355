/*
 * scheduler/dagsync.c - when and how the registry is synced, for the scheduler's loop.
 *
 * The fetch thread waits for a request, runs gitsync_fetch() into a snapshot of its own
 * and hands it back under the mutex; the loop thread applies it with registry_apply()
 * (the store belongs to the loop thread) and publishes the outcome.
 */
#include "scheduler/dagsync.h"

#include "common/error.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "dsl/dsl.h"
#include "scheduler/registry.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define COMP             "registry"
#define FIRST_BACKOFF_MS 1000
#define GC_MIN_AGE_MS    (10 * 60 * 1000)

struct dagsync {
    char *dir;
    struct registry_source *dir_src;
    struct gitsync *git;
    char *git_path;
    const char *source_name;
    int64_t interval_ms;
    struct registry_cache cache;
    int64_t next_ms;
    int failures;
    bool requested;
    char *last_commit;
    int64_t last_ok_ms;  /* when the last successful sync ended; 0: none yet */
    size_t last_invalid; /* import errors at the last successful sync */

    /* the fetch thread; everything below under mu */
    pthread_t thread;
    bool thread_on;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool want, busy, done, quit;
    int result_rc;
    struct registry_snapshot result;
    struct strbuf result_err;
    int64_t started_ms;
};

static void *fetch_main(void *arg)
{
    struct dagsync *ds = arg;
    pthread_mutex_lock(&ds->mu);
    for (;;) {
        while (!ds->want && !ds->quit)
            pthread_cond_wait(&ds->cv, &ds->mu);
        if (ds->quit)
            break;
        ds->want = false;
        ds->busy = true;
        pthread_mutex_unlock(&ds->mu);

        struct registry_snapshot snap;
        struct strbuf err = STRBUF_INIT;
        registry_snapshot_init(&snap);
        int rc = gitsync_fetch(ds->git, &snap, DSL_DEFAULT_MAX_BYTES, &err);

        pthread_mutex_lock(&ds->mu);
        registry_snapshot_release(&ds->result);
        ds->result = snap; /* the arena moves with it */
        strbuf_release(&ds->result_err);
        ds->result_err = err;
        ds->result_rc = rc;
        ds->busy = false;
        ds->done = true;
    }
    pthread_mutex_unlock(&ds->mu);
    return NULL;
}

int dagsync_new(struct dagsync **out, const struct dagsync_options *o, struct strbuf *err)
{
    struct dagsync *ds = xcalloc(1, sizeof(*ds));
    ds->interval_ms = o->interval_ms > 0 ? o->interval_ms : 30000;
    registry_cache_init(&ds->cache);
    registry_snapshot_init(&ds->result);
    strbuf_init(&ds->result_err, 0);
    pthread_mutex_init(&ds->mu, NULL);
    pthread_cond_init(&ds->cv, NULL);
    int rc = 0;
    if (o->git.url) {
        rc = gitsync_open(&ds->git, &o->git, err);
        if (rc == 0) {
            ds->git_path = xstrdup(o->git.path ? o->git.path : "");
            ds->source_name = gitsync_name(ds->git);
            if (pthread_create(&ds->thread, NULL, fetch_main, ds) != 0) {
                strbuf_addf(err, "cannot start the Git fetch thread");
                rc = SL_EIO;
            } else {
                ds->thread_on = true;
            }
        }
    } else if (o->dir) {
        ds->dir = xstrdup(o->dir);
        rc = registry_dir_source(&ds->dir_src, ds->dir);
        if (rc < 0)
            strbuf_addf(err, "the DAG directory %s cannot be read", ds->dir);
        else
            ds->source_name = ds->dir_src->name;
    } else {
        strbuf_addf(err, "no DAG source: neither a directory nor git.url");
        rc = SL_EINVAL;
    }
    if (rc < 0) {
        dagsync_free(ds);
        return rc;
    }
    *out = ds;
    return 0;
}

void dagsync_free(struct dagsync *ds)
{
    if (!ds)
        return;
    if (ds->thread_on) {
        pthread_mutex_lock(&ds->mu);
        ds->quit = true;
        pthread_cond_signal(&ds->cv);
        pthread_mutex_unlock(&ds->mu);
        pthread_join(ds->thread, NULL);
    }
    gitsync_close(ds->git);
    if (ds->dir_src)
        ds->dir_src->free(ds->dir_src);
    registry_cache_release(&ds->cache);
    registry_snapshot_release(&ds->result);
    strbuf_release(&ds->result_err);
    pthread_mutex_destroy(&ds->mu);
    pthread_cond_destroy(&ds->cv);
    free(ds->dir);
    free(ds->git_path);
    free(ds->last_commit);
    free(ds);
}

void dagsync_reset(struct dagsync *ds)
{
    registry_cache_clear(&ds->cache);
    ds->next_ms = 0;
}

void dagsync_request(struct dagsync *ds)
{
    ds->requested = true;
}

int64_t dagsync_next(const struct dagsync *ds, int64_t now)
{
    if (ds->git) {
        pthread_mutex_lock((pthread_mutex_t *)&ds->mu);
        bool in_flight = ds->busy || ds->want || ds->done;
        pthread_mutex_unlock((pthread_mutex_t *)&ds->mu);
        if (in_flight)
            return now + 50;
    }
    return ds->requested ? now : ds->next_ms;
}

/* Publishes the outcome of a sync in the "dags_sync" state document. */
static void publish(struct dagsync *ds, struct store *st, int64_t started, int64_t now,
                    const struct registry_report *rep, const char *commit, const char *error)
{
    struct strbuf j = STRBUF_INIT;
    strbuf_addf(&j, "{\"ok\": %s, \"source\": ", error ? "false" : "true");
    strbuf_add_json_string(&j, ds->source_name);
    strbuf_addstr(&j, ", \"commit\": ");
    if (commit)
        strbuf_add_json_string(&j, commit);
    else
        strbuf_addstr(&j, "null");
    strbuf_addf(&j, ", \"at_ms\": %lld, \"duration_ms\": %lld, \"failures\": %d", (long long)now,
                (long long)(now - started), ds->failures);
    if (ds->last_ok_ms)
        strbuf_addf(&j, ", \"last_ok_ms\": %lld, \"invalid\": %zu", (long long)ds->last_ok_ms,
                    ds->last_invalid);
    if (rep)
        strbuf_addf(&j, ", \"files\": %zu, \"parsed\": %zu", rep->files, rep->parsed);
    strbuf_addstr(&j, ", \"error\": ");
    if (error)
        strbuf_add_json_string(&j, error);
    else
        strbuf_addstr(&j, "null");
    strbuf_addf(&j, ", \"next_ms\": %lld}", (long long)ds->next_ms);
    if (store_state_put(st, "dags_sync", j.buf) < 0)
        sl_warn(COMP, "cannot publish the sync status: %s", store_errmsg(st));
    strbuf_release(&j);
}

static void failed(struct dagsync *ds, struct store *st, int64_t started, int64_t now,
                   const char *why)
{
    ds->failures++;
    int64_t backoff = FIRST_BACKOFF_MS;
    for (int i = 1; i < ds->failures && backoff < ds->interval_ms; i++)
        backoff *= 2;
    if (backoff > ds->interval_ms)
        backoff = ds->interval_ms;
    ds->next_ms = now + backoff;
    sl_warn(COMP, "DAG sync from %s failed (%d in a row, next try in %lld ms): %s", ds->source_name,
            ds->failures, (long long)backoff, why);
    publish(ds, st, started, now, NULL, ds->last_commit, why);
}

/* Applies a snapshot read from the source. Returns as dagsync_step(). */
static int apply(struct dagsync *ds, struct store *st, const struct registry_snapshot *snap,
                 int64_t started, int64_t now)
{
    struct registry_report rep = {0};
    struct strbuf err = STRBUF_INIT;
    int rc = registry_apply(st, snap, ds->source_name, NULL, &ds->cache, &rep, &err);
    if (rc < 0) {
        failed(ds, st, started, now, err.buf);
        strbuf_release(&err);
        return store_session_lost(st) ? SL_ECONN : 0;
    }
    strbuf_release(&err);
    ds->failures = 0;
    ds->next_ms = now + ds->interval_ms;
    if (snap->commit_sha && (!ds->last_commit || strcmp(ds->last_commit, snap->commit_sha))) {
        free(ds->last_commit);
        ds->last_commit = xstrdup(snap->commit_sha);
    }
    ds->last_ok_ms = sl_wall_ms();
    ds->last_invalid = rep.invalid;
    publish(ds, st, started, ds->last_ok_ms, &rep, ds->last_commit, NULL);
    if (ds->git)
        dagsync_gc(ds, st);
    return rep.changed || rep.deactivated ? 1 : 0;
}

int dagsync_step(struct dagsync *ds, struct store *st, int64_t now)
{
    if (!ds->git) {
        if (!ds->requested && now < ds->next_ms)
            return 0;
        ds->requested = false;
        struct registry_snapshot snap;
        struct strbuf err = STRBUF_INIT;
        registry_snapshot_init(&snap);
        int rc = ds->dir_src->read(ds->dir_src, &snap, DSL_DEFAULT_MAX_BYTES, &err);
        if (rc < 0)
            failed(ds, st, now, sl_wall_ms(), err.buf);
        else
            rc = apply(ds, st, &snap, now, sl_wall_ms());
        registry_snapshot_release(&snap);
        strbuf_release(&err);
        return rc < 0 && rc != SL_ECONN ? 0 : rc;
    }

    pthread_mutex_lock(&ds->mu);
    if (ds->done) {
        struct registry_snapshot snap = ds->result;
        registry_snapshot_init(&ds->result);
        int rc = ds->result_rc;
        char *why = strbuf_detach(&ds->result_err, NULL);
        strbuf_init(&ds->result_err, 0);
        ds->done = false;
        int64_t started = ds->started_ms;
        pthread_mutex_unlock(&ds->mu);
        if (rc < 0)
            failed(ds, st, started, sl_wall_ms(), why);
        else
            rc = apply(ds, st, &snap, started, sl_wall_ms());
        free(why);
        registry_snapshot_release(&snap);
        return rc < 0 && rc != SL_ECONN ? 0 : rc;
    }
    if (!ds->busy && !ds->want && (ds->requested || now >= ds->next_ms)) {
        ds->requested = false;
        ds->want = true;
        ds->started_ms = now;
        pthread_cond_signal(&ds->cv);
    }
    pthread_mutex_unlock(&ds->mu);
    return 0;
}

int dagsync_dag_dir(struct dagsync *ds, char **out, const char *file_path, const char *commit_sha,
                    struct strbuf *err)
{
    const char *slash = file_path ? strrchr(file_path, '/') : NULL;
    int sub = slash ? (int)(slash - file_path) : 0;
    if (!ds->git) {
        *out = slash ? xasprintf("%s/%.*s", ds->dir, sub, file_path) : xstrdup(ds->dir);
        return 0;
    }
    const char *commit = commit_sha ? commit_sha : ds->last_commit;
    if (!commit) {
        strbuf_addf(err, "no commit synced from %s yet", ds->source_name);
        return SL_ENOENT;
    }
    char *co = NULL;
    int rc = gitsync_checkout(ds->git, &co, commit, err);
    if (rc < 0)
        return rc;
    struct strbuf p = STRBUF_INIT;
    strbuf_addstr(&p, co);
    if (*ds->git_path)
        strbuf_addf(&p, "/%s", ds->git_path);
    if (slash)
        strbuf_addf(&p, "/%.*s", sub, file_path);
    free(co);
    *out = strbuf_detach(&p, NULL);
    return 0;
}

void dagsync_gc(struct dagsync *ds, struct store *st)
{
    if (!ds->git)
        return;
    struct arena mem = ARENA_INIT;
    const char **keep = NULL;
    size_t n = 0;
    if (store_commits_in_use(st, &keep, &n, &mem) < 0) {
        sl_warn(COMP, "checkouts not collected: %s", store_errmsg(st));
        arena_release(&mem);
        return;
    }
    const char **all = xcalloc(n + 2, sizeof(*all));
    memcpy(all, keep, n * sizeof(*keep));
    all[n] = ds->last_commit;
    size_t removed = 0;
    gitsync_gc(ds->git, all, n + 1, GC_MIN_AGE_MS, &removed);
    free(all);
    arena_release(&mem);
}
