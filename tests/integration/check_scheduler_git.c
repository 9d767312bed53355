/*
 * tests/integration/check_scheduler_git.c - the scheduler with its DAGs in Git.
 *
 * A real `git daemon`, PostgreSQL and Redis; the scheduler and a real worker (the local
 * executor) in threads of the test. A DAG whose step runs a script kept beside it in the
 * repository: each run must run the script of the commit it is pinned to, in that
 * commit's read-only checkout, even after newer commits arrive. Pokes through the
 * database, the published sync status, a server that goes away, and a scheduler
 * restarted while a fetch is in flight.
 */
#include "common/error.h"
#include "common/fsutil.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "scheduler/scheduler.h"
#include "store/store.h"
#include "tests/harness/harness.h"
#include "tests/harness/pgtest.h"
#include "tests/testutil.h"
#include "worker/worker.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct harness_redis redis;
static struct harness_git git;

static void servers_setup(void)
{
    pgtest_setup();
    ck_assert_int_eq(harness_redis_start(&redis), 0);
    ck_assert_int_eq(harness_git_start(&git), 0);
}

static void servers_teardown(void)
{
    harness_git_stop(&git);
    harness_redis_stop(&redis);
    pgtest_teardown();
}

static void nap(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

struct fx {
    char *db_url, *redis_url, *repo_url, *wt;
    char dir[64];
    char *data, *logs, *work;
    struct store *st;
    struct scheduler *sched;
    pthread_t thread;
    bool running;
    struct worker *worker;
    struct arena mem;
};

static void *sched_main(void *arg)
{
    scheduler_run(arg);
    return NULL;
}

static void start_scheduler(struct fx *f)
{
    struct scheduler_options o = {
        .database_url = f->db_url,
        .redis_url = f->redis_url,
        .id = "git-sched",
        .git = {.url = f->repo_url, .ref = "main", .path = "dags", .dir = f->data},
        /* only pokes and the first sync: nothing by the clock */
        .dags_interval_ms = 600000,
        .reconcile_interval_ms = 200,
        .poll_interval_ms = 50};
    ck_assert_int_eq(scheduler_new(&f->sched, &o), 0);
    ck_assert_int_eq(pthread_create(&f->thread, NULL, sched_main, f->sched), 0);
    f->running = true;
}

static void stop_scheduler(struct fx *f)
{
    if (!f->running)
        return;
    scheduler_request_stop(f->sched);
    pthread_join(f->thread, NULL);
    scheduler_free(f->sched);
    f->sched = NULL;
    f->running = false;
}

static void fx_init(struct fx *f, struct harness_git *server, const char *name)
{
    memset(f, 0, sizeof(*f));
    arena_init(&f->mem);
    f->db_url = pgtest_fresh_db(name);
    f->redis_url = xasprintf("unix://%s", redis.socket_path);
    char *reply = NULL;
    ck_assert_int_eq(harness_redis_command(&reply, &redis, "FLUSHALL", NULL), 0);
    free(reply);
    snprintf(f->dir, sizeof(f->dir), "/tmp/sluice-schedgit-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(f->dir));
    f->data = xasprintf("%s/git", f->dir);
    f->logs = xasprintf("%s/logs", f->dir);
    f->work = xasprintf("%s/work", f->dir);
    char *repo = xasprintf("%s.git", name);
    ck_assert_int_eq(harness_git_init_bare(server, repo), 0);
    ck_assert_int_eq(harness_git_clone(&f->wt, server, repo), 0);
    f->repo_url = harness_git_url(server, repo);
    free(repo);
    struct strbuf err = STRBUF_INIT;
    ck_assert_int_eq(store_open(&f->st, f->db_url, NULL, &err), 0);
    strbuf_release(&err);
    ck_assert_int_eq(store_migrate(f->st, NULL, NULL), 0);
}

static void start_worker(struct fx *f)
{
    struct worker_options wo = {.redis_url = f->redis_url,
                                .id = "w",
                                .slots = 2,
                                .executor = WORKER_EXEC_LOCAL,
                                .log_root = f->logs,
                                .work_root = f->work,
                                .kill_grace_ms = 500};
    ck_assert_int_eq(worker_start(&f->worker, &wo), 0);
}

static void fx_done(struct fx *f)
{
    stop_scheduler(f);
    if (f->worker) {
        worker_stop(f->worker);
        worker_join(f->worker);
    }
    store_close(f->st);
    sl_remove_tree(AT_FDCWD, f->dir);
    free(f->db_url);
    free(f->redis_url);
    free(f->repo_url);
    free(f->wt);
    free(f->data);
    free(f->logs);
    free(f->work);
    arena_release(&f->mem);
}

/* Commits and pushes; returns the commit (caller frees). */
static char *push(struct fx *f, const char *message)
{
    char *sha = NULL;
    ck_assert_int_eq(harness_git_commit(&sha, f->wt, message), 0);
    ck_assert_int_eq(harness_git_push(f->wt, 0), 0);
    return sha;
}

/* The "dags_sync" status document, parsed (caller deletes), or NULL if none yet. */
static cJSON *sync_status(struct fx *f)
{
    const char *json;
    if (store_state_get(f->st, &json, NULL, "dags_sync", &f->mem) < 0)
        return NULL;
    return cJSON_Parse(json);
}

/* Waits until the status shows the given commit synced (ok) — or, with commit NULL, a
 * failure with at least `failures` in a row. Returns the status (caller deletes). */
static cJSON *wait_status(struct fx *f, const char *commit, int failures)
{
    int64_t deadline = sl_wall_ms() + 20000;
    for (;;) {
        cJSON *s = sync_status(f);
        if (s) {
            const cJSON *ok = cJSON_GetObjectItem(s, "ok");
            const cJSON *c = cJSON_GetObjectItem(s, "commit");
            const cJSON *n = cJSON_GetObjectItem(s, "failures");
            if (commit && cJSON_IsTrue(ok) && cJSON_IsString(c) && !strcmp(c->valuestring, commit))
                return s;
            if (!commit && cJSON_IsFalse(ok) && cJSON_IsNumber(n) && n->valueint >= failures)
                return s;
            cJSON_Delete(s);
        }
        ck_assert_msg(sl_wall_ms() < deadline, "the sync status never showed %s",
                      commit ? commit : "a failure");
        nap(20);
    }
}

static void poke(struct fx *f)
{
    CK_STORE_OK(f->st, store_state_put(f->st, "dags_sync_request", "{\"by\": \"test\"}"));
}

static struct store_run trigger(struct fx *f, const char *dag)
{
    struct store_run_new rn = {
        .dag_id = dag, .trigger = STORE_TRIGGER_MANUAL, .logical_time_ms = STORE_NO_TIME};
    struct store_run r;
    bool existed;
    CK_STORE_OK(f->st, store_run_create(f->st, &r, &existed, &rn, &f->mem));
    return r;
}

/* A run of dag pinned to an older commit, as a retry of an old run is. */
static struct store_run run_pinned_to(struct fx *f, const char *dag, const char *commit)
{
    struct store_run_new rn = {.dag_id = dag,
                               .trigger = STORE_TRIGGER_RETRY,
                               .logical_time_ms = STORE_NO_TIME,
                               .commit_sha = commit};
    struct store_run r;
    bool existed;
    CK_STORE_OK(f->st, store_run_create(f->st, &r, &existed, &rn, &f->mem));
    return r;
}

/* Waits for the run to end; returns its step's output param "out" (in f->mem). */
static const char *run_output(struct fx *f, const struct store_run *r)
{
    int64_t deadline = sl_wall_ms() + 30000;
    struct store_run now;
    for (;;) {
        CK_STORE_OK(f->st, store_run_get_by_pk(f->st, &now, r->id, &f->mem));
        if (now.state == STORE_RUN_SUCCEEDED || now.state == STORE_RUN_FAILED)
            break;
        ck_assert_msg(sl_wall_ms() < deadline, "run %s still %s", r->run_id,
                      store_run_state_name(now.state));
        nap(50);
    }
    struct store_step_instance *rows;
    size_t n;
    CK_STORE_OK(f->st, store_steps_of_run(f->st, &rows, &n, r->id, 0, &f->mem));
    ck_assert_uint_eq(n, 1);
    ck_assert_msg(now.state == STORE_RUN_SUCCEEDED, "run %s failed: %s", r->run_id,
                  rows[0].reason ? rows[0].reason : "(no reason)");
    cJSON *o = cJSON_Parse(rows[0].output_params_json);
    const cJSON *out = cJSON_GetObjectItem(o, "out");
    ck_assert_ptr_nonnull(out);
    const char *v = arena_strdup(&f->mem, out->valuestring);
    cJSON_Delete(o);
    return v;
}

/* The DAG: its step reads the file kept beside it in the repository, through
 * {{ dag.dir }} (the commit's checkout), and writes what it read and that directory as
 * the output "out" (in its attempt directory: the checkout is read-only). */
static const char pipeline[] =
    "name: pipe\n"
    "steps:\n"
    "  - name: show\n"
    "    workdir: '{{ attempt.dir }}'\n"
    "    command: [/bin/sh, -c, 'echo \"$(cat \"$0/version.txt\") $0\" > out', '{{ dag.dir }}']\n"
    "    outputs: {params: {out: out}}\n";

START_TEST(test_runs_use_their_commit)
{
    struct fx f;
    fx_init(&f, &git, "gitpin");
    ck_assert_int_eq(harness_git_write_file(f.wt, "dags/ml/pipe.yaml", pipeline), 0);
    ck_assert_int_eq(harness_git_write_file(f.wt, "dags/ml/version.txt", "v1\n"), 0);
    char *c1 = push(&f, "v1");
    start_worker(&f);
    start_scheduler(&f);
    cJSON *s = wait_status(&f, c1, 0);
    ck_assert_int_eq(cJSON_GetObjectItem(s, "files")->valueint, 1);
    char *source = xasprintf("git:%s#main", f.repo_url);
    ck_assert_str_eq(cJSON_GetObjectItem(s, "source")->valuestring, source);
    free(source);
    cJSON_Delete(s);

    struct store_run r1 = trigger(&f, "pipe");
    ck_assert_str_eq(r1.commit_sha, c1);
    const char *out1 = run_output(&f, &r1);
    char *want_dir = xasprintf("v1 %s/checkouts/%s/dags/ml", f.data, c1);
    ck_assert_str_eq(out1, want_dir);
    free(want_dir);

    /* a new script, the DAG file unchanged: a poke syncs it, new runs take it */
    ck_assert_int_eq(harness_git_write_file(f.wt, "dags/ml/version.txt", "v2\n"), 0);
    char *c2 = push(&f, "v2");
    poke(&f);
    cJSON_Delete(wait_status(&f, c2, 0));
    struct store_run r2 = trigger(&f, "pipe");
    ck_assert_str_eq(r2.commit_sha, c2);
    ck_assert_ptr_nonnull(strstr(run_output(&f, &r2), "v2 "));

    /* a run pinned to the old commit still runs the old script (its retry would too) */
    struct store_run r3 = run_pinned_to(&f, "pipe", c1);
    ck_assert_str_eq(r3.commit_sha, c1);
    ck_assert_ptr_nonnull(strstr(run_output(&f, &r3), "v1 "));

    /* the checkouts are read-only */
    char *file = xasprintf("%s/checkouts/%s/dags/ml/version.txt", f.data, c2);
    struct stat st;
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_int_eq(st.st_mode & 0222, 0);
    free(file);

    /* a broken DAG file keeps the last good version and its commit */
    ck_assert_int_eq(harness_git_write_file(f.wt, "dags/ml/pipe.yaml", "name: pipe\nsteps: 7\n"),
                     0);
    ck_assert_int_eq(harness_git_write_file(f.wt, "dags/ml/version.txt", "v3\n"), 0);
    char *c3 = push(&f, "broken");
    poke(&f);
    s = wait_status(&f, c3, 0);
    ck_assert_int_eq(cJSON_GetObjectItem(s, "invalid")->valueint, 1);
    cJSON_Delete(s);
    struct store_run r4 = trigger(&f, "pipe");
    ck_assert_str_eq(r4.commit_sha, c2);
    ck_assert_ptr_nonnull(strstr(run_output(&f, &r4), "v2 "));

    fx_done(&f);
    free(c1);
    free(c2);
    free(c3);
}
END_TEST

START_TEST(test_failed_syncs_keep_everything)
{
    struct fx f;
    struct harness_git own = {0}; /* it goes away: not the suite's server */
    ck_assert_int_eq(harness_git_start(&own), 0);
    fx_init(&f, &own, "gitfail");
    ck_assert_int_eq(harness_git_write_file(f.wt, "dags/pipe.yaml", pipeline), 0);
    ck_assert_int_eq(harness_git_write_file(f.wt, "dags/version.txt", "v1\n"), 0);
    char *c1 = push(&f, "v1");
    start_worker(&f);
    start_scheduler(&f);
    cJSON_Delete(wait_status(&f, c1, 0));

    /* the server goes away: failures are published, counted, and change no DAG */
    ck_assert_int_eq(harness_git_stop(&own), 0);
    poke(&f);
    cJSON *s = wait_status(&f, NULL, 2); /* the poke, then the backoff's retry */
    const char *error = cJSON_GetObjectItem(s, "error")->valuestring;
    ck_assert_msg(strstr(error, "cannot reach"), "%s", error);
    ck_assert_str_eq(cJSON_GetObjectItem(s, "commit")->valuestring, c1);
    ck_assert_double_gt(cJSON_GetObjectItem(s, "last_ok_ms")->valuedouble, 0);
    ck_assert_int_eq(cJSON_GetObjectItem(s, "invalid")->valueint, 0);
    cJSON_Delete(s);
    struct store_dag d;
    CK_STORE_OK(f.st, store_dag_get(f.st, &d, "pipe", &f.mem));
    ck_assert(d.is_active);
    struct store_run r = trigger(&f, "pipe");
    ck_assert_str_eq(r.commit_sha, c1);
    ck_assert_ptr_nonnull(strstr(run_output(&f, &r), "v1 "));

    fx_done(&f);
    free(c1);
}
END_TEST

START_TEST(test_restart_during_a_fetch)
{
    struct fx f;
    fx_init(&f, &git, "gitrestart");
    for (int i = 0; i < 200; i++) {
        char *p = xasprintf("dags/bulk/d%03d.yaml", i);
        char *t = xasprintf("name: d%03d\nsteps:\n  - {name: a, command: [/bin/true]}\n", i);
        ck_assert_int_eq(harness_git_write_file(f.wt, p, t), 0);
        free(p);
        free(t);
    }
    ck_assert_int_eq(harness_git_write_file(f.wt, "dags/pipe.yaml", pipeline), 0);
    ck_assert_int_eq(harness_git_write_file(f.wt, "dags/version.txt", "v1\n"), 0);
    char *c1 = push(&f, "bulk");
    /* stopped at once, and again a little later: the first fetch is interrupted */
    for (int ms = 0; ms <= 60; ms += 30) {
        start_scheduler(&f);
        nap(ms);
        stop_scheduler(&f);
    }
    start_worker(&f);
    start_scheduler(&f);
    cJSON *s = wait_status(&f, c1, 0);
    ck_assert_int_eq(cJSON_GetObjectItem(s, "files")->valueint, 201);
    cJSON_Delete(s);
    struct store_run r = trigger(&f, "pipe");
    ck_assert_ptr_nonnull(strstr(run_output(&f, &r), "v1 "));
    fx_done(&f);
    free(c1);
}
END_TEST

/* A step that asks for the DAG repository itself (inputs "from: git") gets it at its run's
 * commit, checked out in its attempt directory, whatever was pushed since. */
static const char code_dag[] =
    "name: code\n"
    "steps:\n"
    "  - name: read\n"
    "    workdir: '{{ attempt.dir }}'\n"
    "    inputs: {artifacts: {repo: {from: git, path: src}}}\n"
    "    command: [/bin/sh, -c, 'cat src/dags/version.txt > out; test ! -e src/.git']\n"
    "    outputs: {params: {out: out}}\n";

START_TEST(test_git_input_artifact)
{
    struct fx f;
    fx_init(&f, &git, "gitinput");
    ck_assert_int_eq(harness_git_write_file(f.wt, "dags/code.yaml", code_dag), 0);
    ck_assert_int_eq(harness_git_write_file(f.wt, "dags/version.txt", "one\n"), 0);
    char *c1 = push(&f, "one");
    start_worker(&f);
    start_scheduler(&f);
    cJSON_Delete(wait_status(&f, c1, 0));
    struct store_run r1 = trigger(&f, "code");
    ck_assert_str_eq(run_output(&f, &r1), "one");
    ck_assert_int_eq(harness_git_write_file(f.wt, "dags/version.txt", "two\n"), 0);
    char *c2 = push(&f, "two");
    poke(&f);
    cJSON_Delete(wait_status(&f, c2, 0));
    struct store_run r2 = trigger(&f, "code");
    ck_assert_str_eq(run_output(&f, &r2), "two");
    /* a run pinned to the first commit still gets the first commit's files */
    struct store_run r3 = run_pinned_to(&f, "code", c1);
    ck_assert_str_eq(run_output(&f, &r3), "one");
    fx_done(&f);
    free(c1);
    free(c2);
}
END_TEST

Suite *suite_integration_scheduler_git(void)
{
    Suite *s = suite_create("integration_scheduler_git");
    TCase *tc = tcase_create("git");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, servers_setup, servers_teardown);
    tcase_add_test(tc, test_runs_use_their_commit);
    tcase_add_test(tc, test_failed_syncs_keep_everything);
    tcase_add_test(tc, test_restart_during_a_fetch);
    tcase_add_test(tc, test_git_input_artifact);
    suite_add_tcase(s, tc);
    return s;
}
