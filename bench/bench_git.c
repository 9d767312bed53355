/*
 * bench/bench_git.c - syncing DAGs from Git: a repository of 1,000 DAG files.
 *
 * Measures, over git:// (a `git daemon` on loopback) and file://, against the embedded
 * PostgreSQL: the first sync (clone, read every file, parse, record 1,000 versions), a
 * sync with nothing new, and a sync after one file changed (issue target: under 200 ms,
 * dominated by the fetch). The peer is `git fetch` of the same change into a clone, run
 * side by side: the part of our sync that is the fetch itself.
 */
#include "cli/embed.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "scheduler/gitsync.h"
#include "scheduler/registry.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N_FILES 1000
#define ROUNDS  7

static char root[64];
static pid_t daemon_pid; /* the git daemon, stopped at exit however the program ends */

static void stop_daemon(void)
{
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGTERM);
        waitpid(daemon_pid, NULL, 0);
        daemon_pid = 0;
    }
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    va_list ap;
    struct strbuf cmd = STRBUF_INIT;
    strbuf_addf(&cmd, "cd %s && (", root);
    va_start(ap, fmt);
    strbuf_vaddf(&cmd, fmt, ap);
    va_end(ap);
    strbuf_addstr(&cmd, ") >/dev/null 2>&1");
    int rc = system(cmd.buf);
    strbuf_release(&cmd);
    return rc;
}

static double ms_since(int64_t t0)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - t0) / 1e6;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return v[n / 2];
}

static const char dag_template[] =
    "name: pipeline-%04d\n"
    "description: generated pipeline %d for the sync benchmark\n"
    "schedule: \"0 %d * * *\"\n"
    "tags: [bench, team%d]\n"
    "params:\n"
    "  size: {type: integer, default: %d}\n"
    "  mode: {type: string, default: fast}\n"
    "defaults:\n"
    "  retries: {limit: 2, policy: on_error, backoff: {initial: 5s, factor: 2, max: 1m}}\n"
    "steps:\n"
    "  - name: extract\n"
    "    command: [python3, extract.py, --size, \"{{ params.size }}\"]\n"
    "    outputs: {params: {rows: rows.txt}}\n"
    "  - name: transform\n"
    "    depends_on: [extract]\n"
    "    command: [python3, transform.py, --mode, \"{{ params.mode }}\"]\n"
    "    resources: {cpu: \"1\", memory: 512Mi}\n"
    "  - name: load\n"
    "    depends_on: [transform]\n"
    "    when: steps.extract.outputs.params.rows > 0\n"
    "    command: [python3, load.py]\n";

static void write_dag(int i, int variant)
{
    char *path = xasprintf("%s/work/dags/team%d/p%04d.yaml", root, i % 10, i);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fprintf(f, dag_template, i, i, i % 24, i % 10, 100 + variant);
    fclose(f);
    free(path);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        return -1;
    close(fd);
    return ntohs(sa.sin_port);
}

static pid_t start_daemon(int port)
{
    pid_t pid = fork();
    if (pid == 0) {
        char *base = xasprintf("--base-path=%s", root), *p = xasprintf("--port=%d", port);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
        execlp("git", "git", "daemon", "--export-all", "--reuseaddr", "--listen=127.0.0.1", p, base,
               root, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) { /* until it accepts */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        if (ok)
            return pid;
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

struct timing {
    double fetch_ms, apply_ms;
    size_t parsed;
};

static struct timing sync_once(struct gitsync *g, struct store *st, struct registry_cache *cache)
{
    struct timing t = {0};
    struct registry_snapshot snap;
    struct strbuf err = STRBUF_INIT;
    registry_snapshot_init(&snap);
    int64_t t0 = mono_ns();
    if (gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err) < 0) {
        fprintf(stderr, "bench_git: fetch: %s\n", err.buf);
        exit(1);
    }
    t.fetch_ms = ms_since(t0);
    struct registry_report rep;
    t0 = mono_ns();
    if (registry_apply(st, &snap, gitsync_name(g), NULL, cache, &rep, &err) < 0) {
        fprintf(stderr, "bench_git: apply: %s\n", err.buf);
        exit(1);
    }
    t.apply_ms = ms_since(t0);
    t.parsed = rep.parsed;
    if (rep.files != N_FILES || rep.valid != N_FILES) {
        fprintf(stderr, "bench_git: %zu files, %zu valid\n", rep.files, rep.valid);
        exit(1);
    }
    registry_snapshot_release(&snap);
    strbuf_release(&err);
    return t;
}

static void bench_url(const char *label, const char *url, struct store *st, int *variant)
{
    char *dir = xasprintf("%s/sync-%s", root, label);
    struct gitsync_options o = {.url = url, .ref = "main", .path = "dags", .dir = dir};
    struct gitsync *g;
    struct strbuf err = STRBUF_INIT;
    if (gitsync_open(&g, &o, &err) < 0) {
        fprintf(stderr, "bench_git: %s\n", err.buf);
        exit(1);
    }
    /* a fresh database view each time: drop what the previous URL recorded */
    struct registry_cache cache;
    registry_cache_init(&cache);
    bool db_had_them = *variant > 0; /* an earlier URL recorded the same DAGs */
    struct timing first = sync_once(g, st, &cache);
    double idle[ROUNDS], one[ROUNDS], one_fetch[ROUNDS], peer[ROUNDS];
    for (int r = 0; r < ROUNDS; r++)
        idle[r] = sync_once(g, st, &cache).fetch_ms;
    sh("git clone -q %s peer-%s", url, label);
    for (int r = 0; r < ROUNDS; r++) {
        write_dag(r * 37 % N_FILES, ++*variant);
        sh("cd work && git commit -qam change%d && git push -q origin main", *variant);
        int64_t t0 = mono_ns();
        sh("cd peer-%s && git fetch -q origin", label);
        peer[r] = ms_since(t0);
        struct timing t = sync_once(g, st, &cache);
        if (t.parsed != 1) {
            fprintf(stderr, "bench_git: %zu files parsed after a one-file change\n", t.parsed);
            exit(1);
        }
        one[r] = t.fetch_ms + t.apply_ms;
        one_fetch[r] = t.fetch_ms;
    }
    double one_med = median(one, ROUNDS), fetch_med = median(one_fetch, ROUNDS);
    double peer_med = median(peer, ROUNDS);
    printf("%-8s first sync (clone, read, parse and record %d DAGs): %7.1f ms "
           "(fetch and checkout %.1f, parse and record %.1f%s)\n",
           label, N_FILES, first.fetch_ms + first.apply_ms, first.fetch_ms, first.apply_ms,
           db_had_them ? "; the database already held them" : "");
    printf("%-8s sync with nothing new:                              %7.1f ms (median of %d)\n",
           label, median(idle, ROUNDS), ROUNDS);
    printf("%-8s sync after one file changed:                        %7.1f ms (median of %d; "
           "fetch %.1f ms = %.0f%%)   target < 200 ms: %s\n",
           label, one_med, ROUNDS, fetch_med, 100.0 * fetch_med / one_med,
           one_med < 200 ? "met" : "MISSED");
    printf("%-8s peer: `git fetch` of the same change:               %7.1f ms; our whole sync "
           "/ git fetch = %.2f\n",
           label, peer_med, one_med / peer_med);
    registry_cache_release(&cache);
    gitsync_close(g);
    free(dir);
    strbuf_release(&err);
}

int main(void)
{
    sl_log_set_level(getenv("BENCH_DEBUG") ? SL_LOG_DEBUG : SL_LOG_WARN);
    snprintf(root, sizeof(root), "/tmp/sluice-bench-git-XXXXXX");
    if (!mkdtemp(root) || chmod(root, 0755) < 0) /* the embedded servers run as nobody */
        return 1;
    printf("bench_git: a repository of %d DAG files (%zu bytes each, about)\n", N_FILES,
           sizeof(dag_template));
    sh("git init -q -b main work && mkdir -p work/dags");
    for (int t = 0; t < 10; t++) {
        char *d = xasprintf("%s/work/dags/team%d", root, t);
        sl_mkdir_p(d);
        free(d);
    }
    for (int i = 0; i < N_FILES; i++)
        write_dag(i, 0);
    if (sh("cd work && git -c user.name=b -c user.email=b@b add -A && "
           "git -c user.name=b -c user.email=b@b commit -qm initial && "
           "git clone -q --bare . ../dags.git && git remote add origin ../dags.git && "
           "git config user.name b && git config user.email b@b") != 0) {
        fprintf(stderr, "bench_git: cannot build the repository\n");
        return 1;
    }
    int port = free_port();
    daemon_pid = start_daemon(port);
    atexit(stop_daemon);
    if (daemon_pid < 0) {
        fprintf(stderr, "bench_git: git daemon did not start\n");
        return 1;
    }
    struct embed *embed = NULL;
    struct embed_options eo = EMBED_OPTIONS_INIT;
    char *data = xasprintf("%s/data", root);
    eo.data_dir = data;
    struct strbuf err = STRBUF_INIT;
    struct store *st = NULL;
    if (embed_start(&embed, &eo, &err) < 0 ||
        store_open(&st, embed_database_url(embed), NULL, &err) < 0 ||
        store_migrate(st, NULL, NULL) < 0) {
        fprintf(stderr, "bench_git: database: %s\n", err.buf);
        return 1;
    }
    int variant = 0;
    char *git_url = xasprintf("git://127.0.0.1:%d/dags.git", port);
    char *file_url = xasprintf("file://%s/dags.git", root);
    bench_url("git", git_url, st, &variant);
    bench_url("file", file_url, st, &variant);

    store_close(st);
    embed_stop(embed);
    stop_daemon();
    sl_remove_tree(AT_FDCWD, root);
    free(git_url);
    free(file_url);
    free(data);
    strbuf_release(&err);
    return 0;
}
