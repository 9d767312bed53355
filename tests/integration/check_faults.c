/*
 * tests/integration/check_faults.c - the whole system under faults: the real `sluice
 * scheduler` and `sluice worker` processes ($SLUICE_BIN) on private PostgreSQL and Redis,
 * killed and restarted while a run is under way.
 *
 * Every step appends "<step>" to one file; the run must end succeeded and the file must
 * hold each step exactly once (nothing lost, nothing completed twice), except where a
 * test says why a step may legitimately run again (a worker killed mid-step leaves its
 * orphaned process to finish; the attempt is then taken over and run again).
 */
#include "common/error.h"
#include "common/xalloc.h"
#include "store/store.h"
#include "tests/harness/harness.h"
#include "tests/harness/pgtest.h"
#include "tests/testutil.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

struct sys {
    struct harness_pg pg;
    struct harness_redis redis;
    char dir[64]; /* dags/, logs/, work/, out.txt, *.log */
    char *redis_url;
    pid_t sched, worker, worker2;
    struct store *st;
    struct arena mem;
};

static const char *bin(void)
{
    const char *b = getenv("SLUICE_BIN");
    return b && *b ? b : "bin/sluice";
}

/* Starts `sluice <role> [extra]` with the system's settings; output to <dir>/<log>. */
static pid_t spawn(struct sys *s, const char *role, const char *log, const char *const *extra)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char *path = xasprintf("%s/%s", s->dir, log);
        FILE *f = fopen(path, "a");
        if (f) {
            dup2(fileno(f), 1);
            dup2(fileno(f), 2);
        }
        char *dags = xasprintf("%s/dags", s->dir);
        char *logs = xasprintf("%s/logs", s->dir);
        char *work = xasprintf("%s/work", s->dir);
        setenv("SLUICE_DATABASE_URL", s->pg.url, 1);
        setenv("SLUICE_REDIS_URL", s->redis_url, 1);
        setenv("SLUICE_DAGS_DIR", dags, 1);
        setenv("SLUICE_DAGS_INTERVAL", "200ms", 1);
        setenv("SLUICE_LOG_ROOT", logs, 1);
        setenv("SLUICE_WORK_ROOT", work, 1);
        setenv("SLUICE_SCHEDULER_RECONCILE_INTERVAL", "300ms", 1);
        setenv("SLUICE_SCHEDULER_REQUEUE_AFTER", "1s", 1);
        setenv("SLUICE_SCHEDULER_WORKER_TIMEOUT", "20s", 1);
        setenv("SLUICE_SCHEDULER_POLL_INTERVAL", "100ms", 1);
        setenv("SLUICE_WORKER_HEARTBEAT_INTERVAL", "500ms", 1);
        setenv("SLUICE_LOG_LEVEL", "info", 1);
        setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
        unsetenv("SLUICE_CONFIG");
        const char *argv[16] = {bin(), role};
        size_t n = 2;
        for (size_t i = 0; extra && extra[i] && n < 15; i++)
            argv[n++] = extra[i];
        argv[n] = NULL;
        execv(bin(), (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static void kill_wait(pid_t *pid, int sig)
{
    if (*pid <= 0)
        return;
    kill(*pid, sig);
    int st;
    while (waitpid(*pid, &st, 0) < 0 && errno == EINTR)
        ;
    *pid = 0;
}

static void sys_start(struct sys *s)
{
    memset(s, 0, sizeof(*s));
    arena_init(&s->mem);
    ck_assert_int_eq(harness_pg_start(&s->pg), 0);
    ck_assert_int_eq(harness_redis_start(&s->redis), 0);
    s->redis_url = xasprintf("unix://%s", s->redis.socket_path);
    snprintf(s->dir, sizeof(s->dir), "/tmp/sluice-faults-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(s->dir));
    char *dags = xasprintf("%s/dags", s->dir);
    ck_assert_int_eq(mkdir(dags, 0755), 0);
    free(dags);
    struct strbuf err = STRBUF_INIT;
    ck_assert_int_eq(store_open(&s->st, s->pg.url, NULL, &err), 0);
    strbuf_release(&err);
    ck_assert_int_eq(store_migrate(s->st, NULL, NULL), 0);
}

static void dump_logs(const struct sys *s)
{
    char *cmd = xasprintf("tail -n 40 %s/*.log >&2", s->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "(no logs)\n");
    free(cmd);
}

static void sys_stop(struct sys *s)
{
    kill_wait(&s->worker, SIGKILL);
    kill_wait(&s->worker2, SIGKILL);
    kill_wait(&s->sched, SIGKILL);
    store_close(s->st);
    harness_redis_stop(&s->redis);
    harness_pg_stop(&s->pg);
    char *cmd = xasprintf("rm -rf '%s'", s->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", s->dir);
    free(cmd);
    free(s->redis_url);
    arena_release(&s->mem);
}

/* Writes a DAG of `layers` x `width` steps, each layer depending on the previous one;
 * each step appends its name to <dir>/out.txt after sleeping `sleep`. */
static void write_layers(struct sys *s, const char *name, int layers, int width,
                         const char *sleep_s, const char *retries)
{
    struct strbuf y = STRBUF_INIT;
    strbuf_addf(&y, "name: %s\nmax_active_runs: 1\ndefaults:\n  retries: %s\nsteps:\n", name,
                retries);
    for (int l = 0; l < layers; l++) {
        for (int w = 0; w < width; w++) {
            strbuf_addf(&y, "  - name: s%d-%d\n", l, w);
            if (l > 0) {
                strbuf_addstr(&y, "    depends_on: [");
                for (int p = 0; p < width; p++)
                    strbuf_addf(&y, "%ss%d-%d", p ? ", " : "", l - 1, p);
                strbuf_addstr(&y, "]\n");
            }
            strbuf_addf(&y,
                        "    command: [/bin/sh, -c, \"sleep %s; echo $SLUICE_STEP >> "
                        "%s/out.txt\"]\n",
                        sleep_s, s->dir);
        }
    }
    char *path = xasprintf("%s/dags/%s.yaml", s->dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(y.buf, f);
    fclose(f);
    free(path);
    strbuf_release(&y);
}

static struct store_run trigger(struct sys *s, const char *dag)
{
    int64_t deadline = now_ms() + 20000;
    struct store_dag d;
    while (store_dag_get(s->st, &d, dag, &s->mem) < 0 || !d.current_version_id) {
        if (now_ms() > deadline)
            dump_logs(s);
        ck_assert_msg(now_ms() < deadline, "DAG %s never synced", dag);
        nap(50);
    }
    struct store_run_new rn = {.dag_id = dag, .trigger = STORE_TRIGGER_MANUAL};
    struct store_run r;
    bool existed;
    CK_STORE_OK(s->st, store_run_create(s->st, &r, &existed, &rn, &s->mem));
    return r;
}

static enum store_run_state state_of(struct sys *s, const struct store_run *r)
{
    struct store_run now;
    if (store_run_get_by_pk(s->st, &now, r->id, &s->mem) < 0)
        return STORE_RUN_RUNNING; /* the database may be restarting */
    return now.state;
}

/* A whole decimal number, or -1. */
static int to_int(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    return end != s && *end == '\0' && v >= 0 && v <= 1000000 ? (int)v : -1;
}

static bool finished(enum store_run_state st)
{
    return st == STORE_RUN_SUCCEEDED || st == STORE_RUN_FAILED || st == STORE_RUN_CANCELLED;
}

static enum store_run_state wait_run(struct sys *s, const struct store_run *r, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    enum store_run_state st;
    while (!finished(st = state_of(s, r))) {
        if (now_ms() > deadline) {
            dump_logs(s);
            ck_abort_msg("run %s still %s", r->run_id, store_run_state_name(st));
        }
        nap(100);
    }
    return st;
}

/* Counts the lines of out.txt per step; asserts each of `expect` names appears `times`. */
static void check_out(struct sys *s, int layers, int width, int min_times, int max_times)
{
    char *path = xasprintf("%s/out.txt", s->dir);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "no output at all");
    int *count = xcalloc((size_t)layers * (size_t)width, sizeof(int));
    char line[128];
    int total = 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *dash = strchr(line, '-');
        int l = -1, w = -1;
        if (line[0] == 's' && dash) {
            *dash = '\0';
            l = to_int(line + 1);
            w = to_int(dash + 1);
        }
        ck_assert_msg(l >= 0 && w >= 0 && l < layers && w < width, "unexpected line %s", line);
        count[l * width + w]++;
        total++;
    }
    fclose(f);
    for (int i = 0; i < layers * width; i++)
        ck_assert_msg(count[i] >= min_times && count[i] <= max_times,
                      "step s%d-%d completed %d times", i / width, i % width, count[i]);
    (void)total;
    free(count);
    free(path);
}

START_TEST(test_scheduler_killed_repeatedly)
{
    struct sys s;
    sys_start(&s);
    write_layers(&s, "wide", 20, 10, "0.1", "0");
    s.sched = spawn(&s, "scheduler", "scheduler.log", NULL);
    const char *wargs[] = {"--slots", "8", "--id", "w1", NULL};
    s.worker = spawn(&s, "worker", "worker.log", wargs);
    struct store_run r = trigger(&s, "wide");
    srand((unsigned)getpid());
    int kills = 0;
    int64_t deadline = now_ms() + 150000;
    while (!finished(state_of(&s, &r))) {
        ck_assert_msg(now_ms() < deadline, "run did not finish after %d kills", kills);
        nap(100 + rand() % 400);
        if (finished(state_of(&s, &r)))
            break;
        kill_wait(&s.sched, SIGKILL);
        kills++;
        s.sched = spawn(&s, "scheduler", "scheduler.log", NULL);
    }
    ck_assert_int_eq(wait_run(&s, &r, 60000), STORE_RUN_SUCCEEDED);
    ck_assert_int_ge(kills, 3);
    /* 200 steps, each completed exactly once */
    check_out(&s, 20, 10, 1, 1);
    PGconn *c = pgtest_admin_connect(s.pg.url);
    char *v = pgtest_admin_value(c, "SELECT count(*) FROM attempts WHERE state = 'succeeded'");
    ck_assert_str_eq(v, "200");
    free(v);
    PQfinish(c);
    sys_stop(&s);
}
END_TEST

START_TEST(test_worker_killed_mid_step)
{
    struct sys s;
    sys_start(&s);
    write_layers(&s, "slow", 2, 1, "2", "0");
    s.sched = spawn(&s, "scheduler", "scheduler.log", NULL);
    const char *a_args[] = {"--id", "wa", "--visibility-timeout", "2s", NULL};
    s.worker = spawn(&s, "worker", "worker-a.log", a_args);
    struct store_run r = trigger(&s, "slow");
    /* once s0-0 runs on worker a, kill it */
    PGconn *c = pgtest_admin_connect(s.pg.url);
    int64_t deadline = now_ms() + 20000;
    for (;;) {
        char *v = pgtest_admin_value(
            c, "SELECT count(*) FROM step_instances WHERE step = 's0-0' AND state = 'running'");
        bool running = !strcmp(v, "1");
        free(v);
        if (running)
            break;
        ck_assert(now_ms() < deadline);
        nap(50);
    }
    kill_wait(&s.worker, SIGKILL);
    const char *b_args[] = {"--id", "wb", "--visibility-timeout", "2s", NULL};
    s.worker2 = spawn(&s, "worker", "worker-b.log", b_args);
    ck_assert_int_eq(wait_run(&s, &r, 60000), STORE_RUN_SUCCEEDED);
    /* the attempt was taken over by b; a's orphaned process may have finished it too */
    char *v = pgtest_admin_value(c, "SELECT worker FROM attempts WHERE attempt_id LIKE "
                                    "'slow.%.s0-0.-1.1'");
    ck_assert_str_eq(v, "wb");
    free(v);
    check_out(&s, 2, 1, 1, 2);
    PQfinish(c);
    sys_stop(&s);
}
END_TEST

START_TEST(test_redis_restarted_empty)
{
    struct sys s;
    sys_start(&s);
    write_layers(&s, "chain", 8, 2, "0.3",
                 "{limit: 2, policy: on_transient, backoff: {initial: 0s}}");
    s.sched = spawn(&s, "scheduler", "scheduler.log", NULL);
    const char *wargs[] = {"--id", "w1", NULL};
    s.worker = spawn(&s, "worker", "worker.log", wargs);
    struct store_run r = trigger(&s, "chain");
    PGconn *c = pgtest_admin_connect(s.pg.url);
    for (int round = 0; round < 2; round++) {
        int64_t deadline = now_ms() + 30000;
        for (;;) {
            char *v = pgtest_admin_value(
                c, "SELECT count(*) FROM step_instances WHERE state = 'succeeded'");
            int n = to_int(v);
            free(v);
            if (n >= 4 + 6 * round)
                break;
            ck_assert(now_ms() < deadline);
            nap(50);
        }
        ck_assert_int_eq(harness_redis_restart(&s.redis, 0), 0);
    }
    ck_assert_int_eq(wait_run(&s, &r, 90000), STORE_RUN_SUCCEEDED);
    check_out(&s, 8, 2, 1, 2);
    PQfinish(c);
    sys_stop(&s);
}
END_TEST

START_TEST(test_postgres_restarted)
{
    struct sys s;
    sys_start(&s);
    write_layers(&s, "pgchain", 8, 2, "0.2", "0");
    s.sched = spawn(&s, "scheduler", "scheduler.log", NULL);
    const char *wargs[] = {"--id", "w1", NULL};
    s.worker = spawn(&s, "worker", "worker.log", wargs);
    struct store_run r = trigger(&s, "pgchain");
    PGconn *c = pgtest_admin_connect(s.pg.url);
    int64_t deadline = now_ms() + 30000;
    for (;;) {
        char *v =
            pgtest_admin_value(c, "SELECT count(*) FROM step_instances WHERE state = 'succeeded'");
        int n = to_int(v);
        free(v);
        if (n >= 4)
            break;
        ck_assert(now_ms() < deadline);
        nap(50);
    }
    PQfinish(c);
    /* a crash, then the database stays away for a second */
    ck_assert_int_eq(harness_pg_kill(&s.pg, HARNESS_PG_RESTART_CRASH), 0);
    nap(1000);
    ck_assert_int_eq(harness_pg_start_again(&s.pg), 0);
    ck_assert_int_eq(wait_run(&s, &r, 90000), STORE_RUN_SUCCEEDED);
    check_out(&s, 8, 2, 1, 1);
    sys_stop(&s);
}
END_TEST

Suite *suite_integration_faults(void)
{
    Suite *s = suite_create("integration_faults");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_scheduler_killed_repeatedly);
    tcase_add_test(tc, test_worker_killed_mid_step);
    tcase_add_test(tc, test_redis_restarted_empty);
    tcase_add_test(tc, test_postgres_restarted);
    suite_add_tcase(s, tc);
    return s;
}
