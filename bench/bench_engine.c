/*
 * bench/bench_engine.c - the engine end to end: the real scheduler, PostgreSQL and Redis,
 * one worker, against Celery on the same Redis.
 *
 * `make bench` builds this optimized and runs it from the repository root, after
 * bench_dsl. In a fresh temporary directory it starts the embedded PostgreSQL and Redis
 * of `sluice standalone` (cli/embed.h: PostgreSQL with its durable defaults, fsync and
 * synchronous_commit on; Redis appendonly with fsync every second), writes the DAG files
 * of the benchmark, runs the scheduler in a thread (scheduler_run, the directory as its
 * DAG source) and a worker in threads of this process (worker_start), exactly as
 * `sluice standalone` does, and measures:
 *
 *   1. chain-noop    a chain of 1,000 steps, noop executor: step-to-step latency, from
 *                    the events table (below), p50 and p99; steps per second;
 *   2. fanout-noop   10,000 independent steps in one run, noop: steps per second from
 *                    the run's started_at to its ended_at. The steps are the instances of
 *                    one `for_each` step over a literal list of 10,000 items: a DAG of
 *                    10,000 separate steps cannot run today (its stored model is over the
 *                    1 MiB that the scheduler's reparse allows, bench/README.md);
 *   3. runs          100 runs of a 10-step DAG (one step, 8 in parallel, one) created at
 *                    once, max_active_runs 1000: runs per second from the first run's
 *                    created_at to the last one's ended_at;
 *   4. chain-local   the chain of 1, with the local executor running /bin/true;
 *   5. fanout-local  2,000 independent /bin/true steps (for_each), local executor with
 *                    16 slots;
 *   6. celery        bench/celery_peer.py on the same Redis (database 1): a chain of
 *                    1,000 no-op tasks, a group of 10,000, 100 runs of the same 10-task
 *                    shape, with one Celery worker (solo pool).
 *
 * Step-to-step latency of step k+1 is `at` of its transition to running minus `at` of
 * step k's transition to succeeded, both from the events table. The scheduler stamps
 * `at` with its own clock (milliseconds) when it applies the event, right after the
 * XREADGROUP that brought it returned; so the figure is what the scheduler sees: the
 * transaction that records k's success and k+1 queued (fsync of the WAL included), the
 * dispatch (XADD) and the events' XACK, the worker reading the message, reporting
 * running (and, for noop, succeeded), and the scheduler's next XREADGROUP returning. The
 * stamps are whole milliseconds, so each figure is +-1 ms; the mean of many is not
 * biased, and is printed too. bench/README.md has the details and the figures.
 *
 * A run of the 10-step DAG warms everything up first (connections, prepared statements,
 * PostgreSQL's caches). Scenarios run one after the other; Celery runs last, after the
 * scheduler and the worker stopped, so that the two never share the CPUs. With
 * SLUICE_BENCH_PERF_CTL naming the control FIFO of `perf record -D -1 --control
 * fifo:PATH`, perf samples only the measured parts.
 *
 * Nothing is asserted: timings are printed with PASS/MISS against the targets of
 * issue 3. The exit status is non-zero only if the servers cannot start or a run does
 * not succeed, which would be a bug.
 *
 *   bench_engine [--only NAME[,NAME...]] [--no-celery] [--keep] [--chain N] [--fanout N]
 *                [--runs N] [--local-fanout N] [--local-slots N] [--celery-pool P]
 *                [--step-dir DIR]
 */
#include "cli/embed.h"
#include "common/arena.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "scheduler/scheduler.h"
#include "store/store.h"
#include "worker/worker.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TARGET_P50_MS        1.0
#define TARGET_P99_MS        5.0
#define TARGET_FANOUT_PER_S  10000.0
#define TARGET_LOCAL_PER_S   1000.0
#define DAG10_WIDTH          8       /* the 10-step DAG: start, 8 in parallel, end */
#define RUN_TIMEOUT_MS       240000  /* a run not finished by then is reported as failed */
#define POLL_INTERVAL_MS     50      /* the scheduler's poll for runs created elsewhere */
#define DAGS_INTERVAL_MS     3600000 /* no re-sync of the DAG folder while measuring */
#define CELERY_DB            1       /* Celery's Redis database; sluice uses 0 */
#define PYTHON               "/usr/bin/python3"
#define DEFAULT_CELERY_PEER  "bench/celery_peer.py"
#define DEFAULT_CELERY_POOL  "solo"
#define DEFAULT_CHAIN        1000
#define DEFAULT_FANOUT       10000
#define DEFAULT_RUNS         100
#define DEFAULT_LOCAL_FANOUT 2000
#define DEFAULT_LOCAL_SLOTS  16

/* --- small helpers ---------------------------------------------------------------- */

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n), as bench/celery_peer.py computes it. */
static double percentile(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    double rank = p / 100.0 * (double)n;
    size_t k = (size_t)rank;
    if ((double)k < rank)
        k++; /* ceil */
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

/* Removes path and everything under it (no symbolic links are followed). */
static void remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char *child = xasprintf("%s/%s", path, e->d_name);
            remove_tree(child);
            free(child);
        }
        if (d)
            closedir(d);
        if (rmdir(path) < 0)
            fprintf(stderr, "bench_engine: cannot remove '%s': %s\n", path, strerror(errno));
    } else if (unlink(path) < 0) {
        fprintf(stderr, "bench_engine: cannot remove '%s': %s\n", path, strerror(errno));
    }
}

static int write_file(const char *path, const struct strbuf *sb)
{
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    size_t put = fwrite(sb->buf, 1, sb->len, fp);
    int rc = fclose(fp);
    return put == sb->len && rc == 0 ? 0 : -1;
}

/* "1,234,567" into buf. */
static const char *thousands(char *buf, size_t len, double v)
{
    char digits[32];
    snprintf(digits, sizeof(digits), "%.0f", v);
    size_t n = strlen(digits), o = 0;
    for (size_t i = 0; i < n && o + 2 < len; i++) {
        if (i && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

/* The 1-minute load average, "1.52", into buf ("?" if unknown). */
static void load_average(char *buf, size_t len)
{
    snprintf(buf, len, "?");
    FILE *fp = fopen("/proc/loadavg", "r");
    if (!fp)
        return;
    char first[16];
    if (fscanf(fp, "%15s", first) == 1)
        snprintf(buf, len, "%s", first);
    fclose(fp);
}

/* --- CPU accounting: this process, PostgreSQL's process group, Redis ---------------- */

/* CPU seconds used so far: this process (the scheduler and the worker are its threads),
 * PostgreSQL (the postmaster, its live children - each leads a session of its own - and,
 * through the postmaster's children times, those that exited) and Redis. */
struct cpu {
    double wall_ms;
    double self_s;
    double children_s; /* the steps' processes (local executor), once reaped */
    double pg_s;
    double redis_s;
};

/* utime + stime (+ cutime + cstime when children) of /proc/<pid>/stat, in seconds, and
 * its parent in *out_ppid. Returns false if the process is gone. */
static bool proc_cpu(pid_t pid, bool children, double *out_s, long *out_ppid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return false;
    /* after ") ": state, then numbers: ppid (field 4) ... utime (14) stime cutime cstime */
    long long f[18] = {0};
    const char *q = p + 2;
    if (p[1] != ' ' || !*q)
        return false;
    q++; /* the state letter */
    for (int i = 4; i <= 17; i++) {
        char *end;
        errno = 0;
        f[i] = strtoll(q, &end, 10);
        if (errno || end == q)
            return false;
        q = end;
    }
    long long ppid = f[4], ut = f[14], stm = f[15], cut = f[16], cst = f[17];
    double ticks = (double)sysconf(_SC_CLK_TCK);
    double s = (double)(ut + stm);
    if (children)
        s += (double)(cut + cst);
    *out_s = s / ticks;
    if (out_ppid)
        *out_ppid = (long)ppid;
    return true;
}

/* The CPU time of parent (with its reaped children) and of its live children. */
static double family_cpu_s(pid_t parent)
{
    double total = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (parent > 0 && d && (e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        double s;
        long ppid;
        if (proc_cpu((pid_t)pid, pid == parent, &s, &ppid) && (pid == parent || ppid == parent))
            total += s;
    }
    if (d)
        closedir(d);
    return total;
}

static void cpu_now(struct cpu *c, const struct embed *e)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    c->wall_ms = mono_ms();
    c->self_s = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    getrusage(RUSAGE_CHILDREN, &ru);
    c->children_s = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                    (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    c->pg_s = family_cpu_s(embed_pg_pid(e));
    c->redis_s = family_cpu_s(embed_redis_pid(e));
}

/* The share of one core each used between a and b, "sluice 92%, postgres 41%, ...". */
static void cpu_format(char *buf, size_t len, const struct cpu *a, const struct cpu *b)
{
    double wall = (b->wall_ms - a->wall_ms) / 1e3;
    if (wall <= 0)
        wall = 1e-9;
    double kids = b->children_s - a->children_s;
    int n = snprintf(buf, len, "CPU: sluice %.0f%%, postgres %.0f%%, redis %.0f%%",
                     100 * (b->self_s - a->self_s) / wall, 100 * (b->pg_s - a->pg_s) / wall,
                     100 * (b->redis_s - a->redis_s) / wall);
    if (kids > 0.005 && n > 0 && (size_t)n < len)
        snprintf(buf + n, len - (size_t)n, ", steps' processes %.0f%%", 100 * kids / wall);
}

/* --- the stack: servers, scheduler thread, worker --------------------------------- */

struct bench {
    char *root; /* the temporary directory: data/, dags/, logs/, work/ */
    char *dags_dir;
    struct embed *embed;
    const char *db_url, *redis_url;
    struct store *st;
    PGconn *pg;
    struct scheduler *sched;
    pthread_t sched_thread;
    bool sched_running;
    struct worker *worker;
    enum worker_executor executor;
    /* options */
    size_t n_chain, n_fanout, n_runs, n_local_fanout, local_slots;
    const char *celery_pool;
    const char *only;
    const char *step_dir;              /* logs/ and work/ of the local executor; NULL: under root */
    char load_start[16], load_end[16]; /* /proc/loadavg, the machine is shared */
    bool no_celery, keep;
};

static void *sched_main(void *arg)
{
    int rc = scheduler_run(arg);
    if (rc < 0)
        fprintf(stderr, "bench_engine: the scheduler ended: %s\n", sl_strerror(rc));
    return NULL;
}

static bool selected(const struct bench *b, const char *name)
{
    if (!b->only)
        return true;
    size_t len = strlen(name);
    for (const char *p = b->only; *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == len && !memcmp(p, name, n))
            return true;
        p += n + (comma ? 1 : 0);
    }
    return false;
}

static void stop_worker(struct bench *b)
{
    if (!b->worker)
        return;
    worker_stop(b->worker);
    worker_join(b->worker);
    b->worker = NULL;
}

/* Starts a worker with the executor ex, stopping the one running if it differs. */
static int use_worker(struct bench *b, enum worker_executor ex, size_t slots)
{
    if (b->worker && b->executor == ex)
        return 0;
    stop_worker(b);
    const char *base = b->step_dir ? b->step_dir : b->root;
    char *logs = xasprintf("%s/logs", base), *work = xasprintf("%s/work", base);
    struct worker_options wo = {
        .redis_url = b->redis_url,
        .id = ex == WORKER_EXEC_NOOP ? "bench-noop" : "bench-local",
        .executor = ex,
        .slots = slots,
        .log_root = logs,
        .work_root = work,
    };
    int rc = worker_start(&b->worker, &wo);
    free(logs);
    free(work);
    if (rc < 0) {
        fprintf(stderr, "bench_engine: the worker cannot start: %s\n", sl_strerror(rc));
        b->worker = NULL;
        return rc;
    }
    b->executor = ex;
    return 0;
}

static void stop_scheduler(struct bench *b)
{
    if (b->sched_running) {
        scheduler_request_stop(b->sched);
        pthread_join(b->sched_thread, NULL);
        b->sched_running = false;
    }
    scheduler_free(b->sched);
    b->sched = NULL;
}

/* The DAG files of the benchmark. Every step runs /bin/true (the noop executor ignores
 * the command). */
static int write_dags(struct bench *b)
{
    struct strbuf sb = STRBUF_INIT;
    int rc = 0;
    char *path;

    strbuf_addstr(&sb, "name: bench-chain\nmax_active_runs: 10\nsteps:\n"
                       "  - name: s0\n    command: [/bin/true]\n");
    for (size_t i = 1; i < b->n_chain; i++)
        strbuf_addf(&sb, "  - name: s%zu\n    depends_on: [s%zu]\n    command: [/bin/true]\n", i,
                    i - 1);
    path = xasprintf("%s/bench-chain.yaml", b->dags_dir);
    rc |= write_file(path, &sb);
    free(path);

    const struct {
        const char *name;
        size_t n;
    } fans[] = {{"bench-fanout", b->n_fanout}, {"bench-local-fanout", b->n_local_fanout}};
    for (size_t f = 0; f < sizeof(fans) / sizeof(fans[0]); f++) {
        strbuf_reset(&sb);
        strbuf_addf(&sb,
                    "name: %s\nmax_active_runs: 10\nsteps:\n"
                    "  - name: s\n    command: [/bin/true]\n    for_each: [",
                    fans[f].name);
        for (size_t i = 0; i < fans[f].n; i++)
            strbuf_addf(&sb, "%s%zu", i == 0 ? "" : i % 20 ? ", " : ",\n      ", i);
        strbuf_addstr(&sb, "]\n");
        path = xasprintf("%s/%s.yaml", b->dags_dir, fans[f].name);
        rc |= write_file(path, &sb);
        free(path);
    }

    strbuf_reset(&sb);
    strbuf_addstr(&sb, "name: bench-dag10\nmax_active_runs: 1000\nsteps:\n"
                       "  - name: start\n    command: [/bin/true]\n");
    for (int i = 0; i < DAG10_WIDTH; i++)
        strbuf_addf(&sb, "  - name: m%d\n    depends_on: [start]\n    command: [/bin/true]\n", i);
    strbuf_addstr(&sb, "  - name: end\n    depends_on: [");
    for (int i = 0; i < DAG10_WIDTH; i++)
        strbuf_addf(&sb, "%sm%d", i ? ", " : "", i);
    strbuf_addstr(&sb, "]\n    command: [/bin/true]\n");
    path = xasprintf("%s/bench-dag10.yaml", b->dags_dir);
    rc |= write_file(path, &sb);
    free(path);

    strbuf_release(&sb);
    if (rc)
        fprintf(stderr, "bench_engine: cannot write the DAG files under %s\n", b->dags_dir);
    return rc ? -1 : 0;
}

/* Waits until the scheduler synced every DAG of the folder. */
static int wait_dags(struct bench *b)
{
    static const char *const dags[] = {"bench-chain", "bench-fanout", "bench-local-fanout",
                                       "bench-dag10"};
    double deadline = mono_ms() + 120000;
    for (size_t i = 0; i < sizeof(dags) / sizeof(dags[0]);) {
        struct arena mem = ARENA_INIT;
        struct store_dag d;
        bool ok = store_dag_get(b->st, &d, dags[i], &mem) == 0 && d.current_version_id;
        arena_release(&mem);
        if (ok) {
            i++;
            continue;
        }
        if (mono_ms() > deadline) {
            fprintf(stderr, "bench_engine: the scheduler never synced DAG %s\n", dags[i]);
            return -1;
        }
        nap_ms(20);
    }
    return 0;
}

static int start_stack(struct bench *b)
{
    struct embed_options eo = EMBED_OPTIONS_INIT;
    char *data = xasprintf("%s/data", b->root);
    eo.data_dir = data;
    struct strbuf err = STRBUF_INIT;
    int rc = embed_start(&b->embed, &eo, &err);
    free(data);
    if (rc < 0) {
        fprintf(stderr, "bench_engine: cannot start PostgreSQL and Redis: %s\n", err.buf);
        strbuf_release(&err);
        return rc;
    }
    b->db_url = embed_database_url(b->embed);
    b->redis_url = embed_redis_url(b->embed);
    if ((rc = store_open(&b->st, b->db_url, NULL, &err)) < 0 ||
        (rc = store_migrate(b->st, NULL, NULL)) < 0) {
        fprintf(stderr, "bench_engine: database: %s%s\n", err.buf,
                b->st ? store_errmsg(b->st) : "");
        strbuf_release(&err);
        return rc;
    }
    strbuf_release(&err);
    b->pg = PQconnectdb(b->db_url);
    if (PQstatus(b->pg) != CONNECTION_OK) {
        fprintf(stderr, "bench_engine: database: %s", PQerrorMessage(b->pg));
        return SL_ECONN;
    }
    struct scheduler_options so = {
        .database_url = b->db_url,
        .redis_url = b->redis_url,
        .id = "bench-scheduler",
        .dags_dir = b->dags_dir,
        .dags_interval_ms = DAGS_INTERVAL_MS,
        .poll_interval_ms = POLL_INTERVAL_MS,
    };
    if ((rc = scheduler_new(&b->sched, &so)) < 0)
        return rc;
    if (pthread_create(&b->sched_thread, NULL, sched_main, b->sched) != 0)
        return SL_EINTERNAL;
    b->sched_running = true;
    return wait_dags(b);
}

static void stop_stack(struct bench *b)
{
    stop_worker(b);
    stop_scheduler(b);
    if (b->pg)
        PQfinish(b->pg);
    b->pg = NULL;
    store_close(b->st);
    b->st = NULL;
    if (b->embed)
        embed_stop(b->embed);
    b->embed = NULL;
}

/* --- runs -------------------------------------------------------------------------- */

static int create_run(struct bench *b, int64_t *out_pk, const char *dag_id)
{
    struct arena mem = ARENA_INIT;
    struct store_run_new rn = {.dag_id = dag_id, .trigger = STORE_TRIGGER_MANUAL};
    struct store_run r;
    bool existed;
    int rc = store_run_create(b->st, &r, &existed, &rn, &mem);
    if (rc < 0)
        fprintf(stderr, "bench_engine: cannot create a run of %s: %s\n", dag_id,
                store_errmsg(b->st));
    else
        *out_pk = r.id;
    arena_release(&mem);
    return rc;
}

static uint64_t runs_finished(const struct bench *b)
{
    struct scheduler_stats s;
    scheduler_get_stats(b->sched, &s);
    return s.runs_finished;
}

/* What the scheduler's counters showed while a fan-out ran, in ms after the run was
 * created: when its first transaction committed, when every message was sent. */
struct progress {
    uint64_t batches0, dispatched0, want_dispatched;
    double t0, first_commit_ms, all_sent_ms;
};

/* Waits until the scheduler finished `count` more runs than `before` (its counters cost
 * nothing to read, unlike polling the database, which would load it while measuring).
 * Fills pr (may be NULL) along the way. */
static int wait_finished(struct bench *b, uint64_t before, uint64_t count, struct progress *pr)
{
    double deadline = mono_ms() + RUN_TIMEOUT_MS;
    for (;;) {
        struct scheduler_stats s;
        scheduler_get_stats(b->sched, &s);
        if (pr && pr->first_commit_ms == 0 && s.batches > pr->batches0)
            pr->first_commit_ms = mono_ms() - pr->t0;
        if (pr && pr->all_sent_ms == 0 && s.dispatched >= pr->dispatched0 + pr->want_dispatched)
            pr->all_sent_ms = mono_ms() - pr->t0;
        if (s.runs_finished >= before + count)
            return 0;
        if (mono_ms() > deadline) {
            fprintf(stderr, "bench_engine: %llu run(s) not finished after %d s\n",
                    (unsigned long long)(before + count - s.runs_finished), RUN_TIMEOUT_MS / 1000);
            return SL_ETIMEDOUT;
        }
        nap_ms(1);
    }
}

/* A number of a result (0 when NULL or malformed). */
static double pg_num(const PGresult *res, int row, int col)
{
    const char *v = PQgetvalue(res, row, col);
    char *end;
    double d = strtod(v, &end);
    return end == v ? 0 : d;
}

/* One query with one int8 parameter; the result (caller PQclear()s it) or NULL. */
static PGresult *query1(struct bench *b, const char *sql, int64_t arg)
{
    char param[32];
    snprintf(param, sizeof(param), "%lld", (long long)arg);
    const char *values[1] = {param};
    PGresult *res = PQexecParams(b->pg, sql, 1, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_engine: query failed: %s", PQerrorMessage(b->pg));
        PQclear(res);
        return NULL;
    }
    return res;
}

/* Run pk's state, and started_at -> ended_at in ms. Returns 0, or -1 if it did not
 * succeed. */
static int run_span(struct bench *b, int64_t pk, double *out_ms)
{
    PGresult *res = query1(b,
                           "SELECT state, extract(epoch FROM ended_at - started_at) * 1000 "
                           "FROM runs WHERE id = $1",
                           pk);
    int rc = -1;
    if (res && PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "succeeded")) {
        *out_ms = pg_num(res, 0, 1);
        rc = 0;
    } else if (res && PQntuples(res) == 1) {
        fprintf(stderr, "bench_engine: run %lld ended %s\n", (long long)pk, PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    return rc;
}

/* --- scenarios --------------------------------------------------------------------- */

struct result {
    bool ran, ok;
    size_t n;           /* steps, or runs */
    double seconds;     /* the measured span */
    double per_s;       /* steps (or runs) per second */
    double p50_ms;      /* chains: step-to-step */
    double p99_ms;      /* chains */
    double mean_ms;     /* chains */
    double max_ms;      /* chains */
    double step_ms;     /* chains: mean running -> succeeded */
    double wall_s;      /* from creating the run(s) to the scheduler's last end */
    uint64_t batches;   /* transactions the scheduler committed */
    uint64_t events;    /* worker events it applied */
    char cpu[160];      /* CPU shares during the measurement */
    char timeline[384]; /* fan-outs: when the instances were queued, ran, ended */
};

struct celery_result {
    bool ran, ok;
    char pool[64];
    double chain_p50_ms, chain_p99_ms, chain_mean_ms, chain_per_s;
    double group_per_s;
    double dags_runs_per_s;
    size_t n_chain, n_group, n_runs;
    char error[512];
};

/* With SLUICE_BENCH_PERF_CTL naming the control FIFO of `perf record --control
 * fifo:PATH -D -1`, perf samples only while a scenario is measured (bench/README.md). */
static void perf_ctl(const char *cmd)
{
    const char *path = getenv("SLUICE_BENCH_PERF_CTL");
    if (!path || !*path)
        return;
    int fd = open(path, O_WRONLY | O_NONBLOCK);
    if (fd < 0)
        return;
    ssize_t n = write(fd, cmd, strlen(cmd));
    (void)n;
    close(fd);
}

/* Everything measured around one scenario. */
struct meter {
    struct cpu cpu;
    struct scheduler_stats stats;
    double t0;
};

static void meter_start(struct bench *b, struct meter *m)
{
    scheduler_get_stats(b->sched, &m->stats);
    cpu_now(&m->cpu, b->embed);
    m->t0 = mono_ms();
    perf_ctl("enable\n");
}

static void meter_stop(struct bench *b, const struct meter *m, struct result *r)
{
    struct cpu c;
    struct scheduler_stats s;
    perf_ctl("disable\n");
    cpu_now(&c, b->embed);
    scheduler_get_stats(b->sched, &s);
    r->wall_s = (mono_ms() - m->t0) / 1e3;
    r->batches = s.batches - m->stats.batches;
    r->events = s.events - m->stats.events;
    cpu_format(r->cpu, sizeof(r->cpu), &m->cpu, &c);
}

/* A chain run of bench-chain with the worker's current executor. */
static int bench_chain(struct bench *b, struct result *r)
{
    struct meter m;
    int64_t pk = 0;
    memset(r, 0, sizeof(*r));
    r->ran = true;
    r->n = b->n_chain;
    uint64_t before = runs_finished(b);
    meter_start(b, &m);
    if (create_run(b, &pk, "bench-chain") < 0 || wait_finished(b, before, 1, NULL) < 0)
        return -1;
    meter_stop(b, &m, r);
    double span_ms;
    if (run_span(b, pk, &span_ms) < 0)
        return -1;
    r->seconds = span_ms / 1e3;
    r->per_s = (double)r->n / r->seconds;

    /* step k succeeded -> step k+1 running, as the scheduler stamped them */
    PGresult *res = query1(b,
                           "SELECT extract(epoch FROM nxt.at - cur.at) * 1000 "
                           "FROM events cur JOIN events nxt ON nxt.run_pk = cur.run_pk "
                           "  AND nxt.step = 's' || (substr(cur.step, 2)::int + 1) "
                           "  AND nxt.to_state = 'running' "
                           "WHERE cur.run_pk = $1 AND cur.step IS NOT NULL "
                           "  AND cur.to_state = 'succeeded' ORDER BY 1",
                           pk);
    if (!res)
        return -1;
    size_t n = (size_t)PQntuples(res);
    double *gaps = xcalloc(n + 1, sizeof(*gaps)), sum = 0;
    for (size_t i = 0; i < n; i++) {
        gaps[i] = pg_num(res, (int)i, 0);
        sum += gaps[i];
    }
    PQclear(res);
    qsort(gaps, n, sizeof(*gaps), cmp_double);
    r->p50_ms = percentile(gaps, n, 50);
    r->p99_ms = percentile(gaps, n, 99);
    r->max_ms = n ? gaps[n - 1] : 0;
    r->mean_ms = n ? sum / (double)n : 0;
    free(gaps);
    if (n + 1 != r->n) {
        fprintf(stderr, "bench_engine: %zu step-to-step pairs in the events, expected %zu\n", n,
                r->n - 1);
        return -1;
    }

    /* how long a step itself took: running -> succeeded */
    res = query1(b,
                 "SELECT avg(extract(epoch FROM ok.at - run.at) * 1000) "
                 "FROM events run JOIN events ok ON ok.run_pk = run.run_pk "
                 "  AND ok.step = run.step AND ok.to_state = 'succeeded' "
                 "WHERE run.run_pk = $1 AND run.step IS NOT NULL AND run.to_state = 'running'",
                 pk);
    if (res && PQntuples(res) == 1)
        r->step_ms = pg_num(res, 0, 0);
    PQclear(res);
    r->ok = true;
    return 0;
}

/* One run of a DAG of independent steps: steps per second, started_at -> ended_at. */
static int bench_fanout(struct bench *b, struct result *r, const char *dag_id, size_t n)
{
    struct meter m;
    int64_t pk = 0;
    memset(r, 0, sizeof(*r));
    r->ran = true;
    r->n = n;
    uint64_t before = runs_finished(b);
    meter_start(b, &m);
    struct progress pr = {.batches0 = m.stats.batches,
                          .dispatched0 = m.stats.dispatched,
                          .want_dispatched = n,
                          .t0 = mono_ms()};
    if (create_run(b, &pk, dag_id) < 0 || wait_finished(b, before, 1, &pr) < 0)
        return -1;
    meter_stop(b, &m, r);
    double span_ms;
    if (run_span(b, pk, &span_ms) < 0)
        return -1;
    r->seconds = span_ms / 1e3;
    r->per_s = (double)n / r->seconds;
    /* where the time went: the instances' events against the run's start */
    PGresult *res =
        query1(b,
               "WITH e AS (SELECT e.map_index, e.to_state, "
               "  extract(epoch FROM e.at - r.started_at) * 1000 AS t "
               "  FROM events e JOIN runs r ON r.id = e.run_pk "
               "  WHERE e.run_pk = $1 AND e.map_index >= 0), "
               "p AS (SELECT q.t AS queued, ru.t AS running, ok.t AS done FROM e q "
               "  JOIN e ru ON ru.map_index = q.map_index AND ru.to_state = 'running' "
               "  JOIN e ok ON ok.map_index = q.map_index AND ok.to_state = 'succeeded' "
               "  WHERE q.to_state = 'queued') "
               "SELECT max(queued), min(running), max(running), avg(running - queued), "
               "  avg(done - running) FROM p",
               pk);
    if (res && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
        snprintf(r->timeline, sizeof(r->timeline),
                 "after the run was created: first commit +%.0f ms, all %zu sent +%.0f ms; "
                 "after it started: first running +%.0f ms, last +%.0f ms; "
                 "an instance waited %.0f ms queued, then ran %.1f ms",
                 pr.first_commit_ms, n, pr.all_sent_ms, pg_num(res, 0, 1), pg_num(res, 0, 2),
                 pg_num(res, 0, 3), pg_num(res, 0, 4));
    PQclear(res);
    r->ok = true;
    return 0;
}

/* n_runs runs of bench-dag10 created at once: runs per second from the first run's
 * created_at to the last run's ended_at. */
static int bench_runs(struct bench *b, struct result *r)
{
    struct meter m;
    int64_t first = 0, last = 0;
    memset(r, 0, sizeof(*r));
    r->ran = true;
    r->n = b->n_runs;
    uint64_t before = runs_finished(b);
    meter_start(b, &m);
    for (size_t i = 0; i < b->n_runs; i++)
        if (create_run(b, i ? &last : &first, "bench-dag10") < 0)
            return -1;
    if (b->n_runs == 1)
        last = first;
    if (wait_finished(b, before, b->n_runs, NULL) < 0)
        return -1;
    meter_stop(b, &m, r);
    char lo[32], hi[32];
    snprintf(lo, sizeof(lo), "%lld", (long long)first);
    snprintf(hi, sizeof(hi), "%lld", (long long)last);
    const char *values[2] = {lo, hi};
    PGresult *res =
        PQexecParams(b->pg,
                     "SELECT count(*) FILTER (WHERE state = 'succeeded'), "
                     "  extract(epoch FROM max(ended_at) - min(created_at)) * 1000, "
                     "  percentile_disc(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ended_at - "
                     "started_at) * 1000) "
                     "FROM runs WHERE dag_id = 'bench-dag10' AND id BETWEEN $1 AND $2",
                     2, NULL, values, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        size_t ok = (size_t)pg_num(res, 0, 0);
        r->seconds = pg_num(res, 0, 1) / 1e3;
        r->per_s = (double)b->n_runs / r->seconds;
        r->p50_ms = pg_num(res, 0, 2); /* a run's own duration, median */
        if (ok == b->n_runs) {
            r->ok = true;
            rc = 0;
        } else {
            fprintf(stderr, "bench_engine: %zu of %zu runs succeeded\n", ok, b->n_runs);
        }
    } else {
        fprintf(stderr, "bench_engine: query failed: %s", PQerrorMessage(b->pg));
    }
    PQclear(res);
    return rc;
}

/* --- Celery ------------------------------------------------------------------------ */

static double json_num(const cJSON *o, const char *a, const char *k)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    const cJSON *v = x ? cJSON_GetObjectItemCaseSensitive(x, k) : NULL;
    return v && cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* Runs bench/celery_peer.py against our Redis (database CELERY_DB) and reads its JSON. */
static int bench_celery(struct bench *b, struct celery_result *c)
{
    memset(c, 0, sizeof(*c));
    const char *peer = getenv("SLUICE_CELERY_PEER");
    if (!peer || !*peer)
        peer = DEFAULT_CELERY_PEER;
    if (access(PYTHON, X_OK) < 0 || access(peer, R_OK) < 0) {
        snprintf(c->error, sizeof(c->error), "skipped: no %s or no %s", PYTHON, peer);
        return 0;
    }
    const char *sock = b->redis_url + strlen("unix://");
    char db[16], chain[32], group[32], runs[32], width[16];
    snprintf(db, sizeof(db), "%d", CELERY_DB);
    snprintf(chain, sizeof(chain), "%zu", b->n_chain);
    snprintf(group, sizeof(group), "%zu", b->n_fanout);
    snprintf(runs, sizeof(runs), "%zu", b->n_runs);
    snprintf(width, sizeof(width), "%d", DAG10_WIDTH);
    int fds[2];
    if (pipe(fds) < 0)
        return -1;
    c->ran = true;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(PYTHON, PYTHON, peer, "--socket", sock, "--db", db, "--pool", b->celery_pool,
              "--chain", chain, "--group", group, "--runs", runs, "--width", width, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    struct strbuf out = STRBUF_INIT;
    char buf[4096];
    ssize_t got;
    while ((got = read(fds[0], buf, sizeof(buf))) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            break;
        strbuf_add(&out, buf, (size_t)got);
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    /* the JSON object is the last line */
    while (out.len && out.buf[out.len - 1] == '\n')
        out.buf[--out.len] = '\0';
    const char *line = out.len ? strrchr(out.buf, '\n') : NULL;
    line = line ? line + 1 : (out.len ? out.buf : "");
    cJSON *j = cJSON_Parse(line);
    if (!j) {
        snprintf(c->error, sizeof(c->error), "celery_peer.py exited with status %d%s%.300s",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1, out.len ? ": " : "", line);
    } else {
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
        const cJSON *pool = cJSON_GetObjectItemCaseSensitive(j, "pool");
        const cJSON *conc = cJSON_GetObjectItemCaseSensitive(j, "concurrency");
        const cJSON *pre = cJSON_GetObjectItemCaseSensitive(j, "prefetch");
        snprintf(c->pool, sizeof(c->pool), "%s pool, concurrency %d, prefetch %d",
                 cJSON_IsString(pool) ? pool->valuestring : "?",
                 cJSON_IsNumber(conc) ? conc->valueint : 0,
                 cJSON_IsNumber(pre) ? pre->valueint : 0);
        c->chain_p50_ms = json_num(j, "chain", "p50_ms");
        c->chain_p99_ms = json_num(j, "chain", "p99_ms");
        c->chain_mean_ms = json_num(j, "chain", "mean_ms");
        c->chain_per_s = json_num(j, "chain", "steps_per_s");
        c->group_per_s = json_num(j, "group", "steps_per_s");
        c->dags_runs_per_s = json_num(j, "dags", "runs_per_s");
        c->n_chain = b->n_chain;
        c->n_group = b->n_fanout;
        c->n_runs = b->n_runs;
        if (cJSON_IsString(err))
            snprintf(c->error, sizeof(c->error), "%s", err->valuestring);
        else
            c->ok = true;
        cJSON_Delete(j);
    }
    strbuf_release(&out);
    return 0;
}

/* --- the report -------------------------------------------------------------------- */

#define ROW_FMT "  %-44s %-11s %-11s %-14s %-11s %s\n"

/* "4.7x faster" / "1.3x slower"; lower_is_better for latencies. */
static const char *versus(char *buf, size_t len, double ours, double theirs, bool lower_is_better)
{
    if (ours <= 0 || theirs <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    double f = lower_is_better ? theirs / ours : ours / theirs;
    if (f >= 1)
        snprintf(buf, len, "%.1fx faster", f);
    else
        snprintf(buf, len, "%.1fx slower", 1 / f);
    return buf;
}

static void row(const char *what, const char *ours, const char *theirs, const char *vs,
                const char *target, const char *result)
{
    printf(ROW_FMT, what, ours, theirs, vs, target, result);
}

/* A value: "1.37 ms" for latencies, "3,460/s" for rates. */
static const char *value(char *buf, size_t len, double v, bool latency)
{
    char h[32];
    if (latency)
        snprintf(buf, len, "%.2f ms", v);
    else if (v >= 100)
        snprintf(buf, len, "%s/s", thousands(h, sizeof(h), v));
    else
        snprintf(buf, len, "%.1f/s", v);
    return buf;
}

/*
 * One line of the table. r is sluice's scenario (the line shows "-" when it did not run,
 * "failed" when it failed), theirs Celery's figure (0: none). A target of 0 means none;
 * latencies pass at or under it, rates at or over it.
 */
static void row_figure(const char *what, const struct result *r, double ours, double theirs,
                       bool latency, double target)
{
    char o[32] = "-", t[32] = "-", v[32] = "-", tg[32] = "-", h[32];
    const char *res = "";
    if (!r->ran && theirs <= 0)
        return;
    if (r->ran && !r->ok)
        snprintf(o, sizeof(o), "failed");
    else if (r->ran)
        value(o, sizeof(o), ours, latency);
    if (theirs > 0)
        value(t, sizeof(t), theirs, latency);
    if (r->ok && theirs > 0)
        versus(v, sizeof(v), ours, theirs, latency);
    if (target > 0) {
        if (latency)
            snprintf(tg, sizeof(tg), "<= %.0f ms", target);
        else
            snprintf(tg, sizeof(tg), ">= %s/s", thousands(h, sizeof(h), target));
        if (r->ok)
            res = (latency ? ours <= target : ours >= target) ? "PASS" : "MISS";
    }
    row(what, o, t, v, tg, res);
}

static void detail(const char *name, const struct result *r)
{
    if (!r->ran || !r->ok)
        return;
    printf("  %-13s %.2f s measured, %.2f s wall; %llu transactions, %llu events\n", name,
           r->seconds, r->wall_s, (unsigned long long)r->batches, (unsigned long long)r->events);
    printf("  %-13s %s\n", "", r->cpu);
    if (r->timeline[0])
        printf("  %-13s %s\n", "", r->timeline);
}

static void report(const struct bench *b, const struct result *cn, const struct result *fn,
                   const struct result *rn, const struct result *cl, const struct result *fl,
                   const struct celery_result *c)
{
    char what[96], chain[32], fan[32], lfan[32];
    thousands(chain, sizeof(chain), (double)b->n_chain);
    thousands(fan, sizeof(fan), (double)b->n_fanout);
    thousands(lfan, sizeof(lfan), (double)b->n_local_fanout);
    printf("\n");
    row("measure", "sluice", "Celery", "vs Celery", "target", "result");
    snprintf(what, sizeof(what), "chain %s noop: step-to-step p50", chain);
    row_figure(what, cn, cn->p50_ms, c->chain_p50_ms, true, TARGET_P50_MS);
    snprintf(what, sizeof(what), "chain %s noop: step-to-step p99", chain);
    row_figure(what, cn, cn->p99_ms, c->chain_p99_ms, true, TARGET_P99_MS);
    snprintf(what, sizeof(what), "chain %s noop: step-to-step mean", chain);
    row_figure(what, cn, cn->mean_ms, c->chain_mean_ms, true, 0);
    snprintf(what, sizeof(what), "chain %s noop: steps/s", chain);
    row_figure(what, cn, cn->per_s, c->chain_per_s, false, 0);
    snprintf(what, sizeof(what), "fan-out %s noop: steps/s", fan);
    row_figure(what, fn, fn->per_s, c->group_per_s, false, TARGET_FANOUT_PER_S);
    snprintf(what, sizeof(what), "%zu runs x %d steps, noop: runs/s", b->n_runs, DAG10_WIDTH + 2);
    row_figure(what, rn, rn->per_s, c->dags_runs_per_s, false, 0);
    snprintf(what, sizeof(what), "chain %s local: step-to-step p50", chain);
    row_figure(what, cl, cl->p50_ms, c->chain_p50_ms, true, TARGET_P50_MS);
    snprintf(what, sizeof(what), "chain %s local: step-to-step p99", chain);
    row_figure(what, cl, cl->p99_ms, c->chain_p99_ms, true, TARGET_P99_MS);
    snprintf(what, sizeof(what), "chain %s local: steps/s", chain);
    row_figure(what, cl, cl->per_s, c->chain_per_s, false, 0);
    snprintf(what, sizeof(what), "fan-out %s local, %zu slots: steps/s", lfan, b->local_slots);
    row_figure(what, fl, fl->per_s, c->group_per_s, false, TARGET_LOCAL_PER_S);

    printf("\n");
    detail("chain-noop", cn);
    if (cn->ran && cn->ok)
        printf("  %-13s step-to-step max %.0f ms; a step itself (running -> succeeded) "
               "%.2f ms on average\n",
               "", cn->max_ms, cn->step_ms);
    detail("fanout-noop", fn);
    detail("runs", rn);
    if (rn->ran && rn->ok)
        printf("  %-13s a run's own duration (started -> ended), median %.0f ms\n", "", rn->p50_ms);
    detail("chain-local", cl);
    if (cl->ran && cl->ok)
        printf("  %-13s step-to-step max %.0f ms; a step itself (running -> succeeded) "
               "%.2f ms on average\n",
               "", cl->max_ms, cl->step_ms);
    detail("fanout-local", fl);
    if (c->ran && c->ok)
        printf("  %-13s %s; chain %s tasks, group %s tasks, %zu runs of chain(noop, "
               "chord(%d x noop, noop))\n",
               "celery", c->pool, chain, fan, c->n_runs, DAG10_WIDTH);
    else if (c->error[0])
        printf("  %-13s %s\n", "celery", c->error);
    else if (!c->ran)
        printf("  %-13s not run\n", "celery");
    printf("\nload average (1 min) %s at the start, %s at the end; ", b->load_start, b->load_end);
    printf("latencies: the scheduler's stamps in events.at (whole ms, so +-1 ms each); "
           "Celery: task start to next task start (time.time())\n");
}

/* --- main -------------------------------------------------------------------------- */

static int usage(void)
{
    fprintf(stderr,
            "usage: bench_engine [--only NAME[,NAME...]] [--no-celery] [--keep] [--chain N]\n"
            "                    [--fanout N] [--runs N] [--local-fanout N] [--local-slots N]\n"
            "                    [--celery-pool solo|prefork|threads] [--step-dir DIR]\n"
            "names: chain-noop fanout-noop runs chain-local fanout-local celery\n");
    return 2;
}

static bool parse_size(size_t *out, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v == 0 || v > 1000000)
        return false;
    *out = (size_t)v;
    return true;
}

static int parse_args(struct bench *b, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-celery")) {
            b->no_celery = true;
        } else if (!strcmp(a, "--keep")) {
            b->keep = true;
        } else if (v && !strcmp(a, "--only")) {
            b->only = v;
            i++;
        } else if (v && !strcmp(a, "--step-dir")) {
            b->step_dir = v;
            i++;
        } else if (v && !strcmp(a, "--celery-pool")) {
            b->celery_pool = v;
            i++;
        } else if (v && !strcmp(a, "--chain") && parse_size(&b->n_chain, v)) {
            i++;
        } else if (v && !strcmp(a, "--fanout") && parse_size(&b->n_fanout, v)) {
            i++;
        } else if (v && !strcmp(a, "--runs") && parse_size(&b->n_runs, v)) {
            i++;
        } else if (v && !strcmp(a, "--local-fanout") && parse_size(&b->n_local_fanout, v)) {
            i++;
        } else if (v && !strcmp(a, "--local-slots") && parse_size(&b->local_slots, v)) {
            i++;
        } else {
            return usage();
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct bench b = {
        .n_chain = DEFAULT_CHAIN,
        .n_fanout = DEFAULT_FANOUT,
        .n_runs = DEFAULT_RUNS,
        .n_local_fanout = DEFAULT_LOCAL_FANOUT,
        .local_slots = DEFAULT_LOCAL_SLOTS,
        .celery_pool = DEFAULT_CELERY_POOL,
    };
    struct result cn = {0}, fn = {0}, rn = {0}, cl = {0}, fl = {0};
    struct celery_result cel = {0};
    int status = 0;

    if (parse_args(&b, argc, argv))
        return 2;
    signal(SIGPIPE, SIG_IGN);
    sl_log_set_level(SL_LOG_WARN);

    const char *tmp = getenv("TMPDIR");
    char *templ = xasprintf("%s/sluice-bench-engine-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(templ)) {
        fprintf(stderr, "bench_engine: cannot create a temporary directory: %s\n", strerror(errno));
        free(templ);
        return 1;
    }
    b.root = templ;
    chmod(b.root, 0755); /* run as root, the servers run as nobody and must reach data/ */
    b.dags_dir = xasprintf("%s/dags", b.root);
    if (mkdir(b.dags_dir, 0755) < 0 || write_dags(&b) < 0) {
        status = 1;
        goto out;
    }

    printf("bench_engine: the scheduler, PostgreSQL (fsync on) and Redis (embedded, under %s), "
           "one worker in this process; %ld CPUs\n",
           b.root, sysconf(_SC_NPROCESSORS_ONLN));
    fflush(stdout);
    load_average(b.load_start, sizeof(b.load_start));
    double t0 = mono_ms();
    if (start_stack(&b) < 0) {
        status = 1;
        goto out;
    }
    printf("servers up and DAGs synced in %.1f s (PostgreSQL %d)\n", (mono_ms() - t0) / 1e3,
           PQserverVersion(b.pg));
    fflush(stdout);

    /* warm up: connections, the DAG model caches, PostgreSQL's buffers */
    if (use_worker(&b, WORKER_EXEC_NOOP, 0) < 0) {
        status = 1;
        goto out;
    }
    {
        int64_t pk;
        uint64_t before = runs_finished(&b);
        if (create_run(&b, &pk, "bench-dag10") < 0 || wait_finished(&b, before, 1, NULL) < 0) {
            status = 1;
            goto out;
        }
    }

    if (selected(&b, "chain-noop") && bench_chain(&b, &cn) < 0)
        status = 1;
    if (selected(&b, "fanout-noop") && bench_fanout(&b, &fn, "bench-fanout", b.n_fanout) < 0)
        status = 1;
    if (selected(&b, "runs") && bench_runs(&b, &rn) < 0)
        status = 1;
    if (selected(&b, "chain-local") || selected(&b, "fanout-local")) {
        if (use_worker(&b, WORKER_EXEC_LOCAL, b.local_slots) < 0) {
            status = 1;
            goto out;
        }
        if (selected(&b, "chain-local") && bench_chain(&b, &cl) < 0)
            status = 1;
        if (selected(&b, "fanout-local") &&
            bench_fanout(&b, &fl, "bench-local-fanout", b.n_local_fanout) < 0)
            status = 1;
    }
    /* Celery alone on the machine: sluice's threads are stopped first */
    stop_worker(&b);
    stop_scheduler(&b);
    if (!b.no_celery && selected(&b, "celery")) {
        printf("running Celery on the same Redis ...\n");
        fflush(stdout);
        bench_celery(&b, &cel);
    }
    load_average(b.load_end, sizeof(b.load_end));
    report(&b, &cn, &fn, &rn, &cl, &fl, &cel);
out:
    stop_stack(&b);
    if (b.keep)
        printf("kept %s\n", b.root);
    else
        remove_tree(b.root);
    free(b.dags_dir);
    free(b.root);
    return status;
}
