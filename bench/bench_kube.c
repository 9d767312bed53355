/*
 * bench/bench_kube.c - the kubernetes executor driving many concurrent pods through the
 * API simulator: API requests per step, worker CPU seconds per 1,000 steps, peak RSS.
 *
 * `make bench` builds this optimized and runs it from the repository root. It starts
 * tests/k8s/sim.py (/usr/bin/python3, a separate process: its CPU is not ours), writes a
 * kubeconfig for it, and runs the executor layer of one worker - struct kube_ctx (the
 * client and the one pod watch) and one struct kube_exec per attempt - on one libuv
 * loop in this process, exactly as the worker's loop thread runs them; Redis is left out
 * (its cost per step is bench_engine's subject). N attempts (default 1,000; argv[1]) are
 * started at once; each pod runs `bin/sluice pod exec -- /bin/sh -c 'echo ...; sleep 2;
 * echo ...'` (helper "image": the step image has sluice, so no binary is copied per pod)
 * and writes one output param, so all N pods are alive together, each with its log
 * streamed and its result read from the termination message, then deleted.
 *
 * Printed: wall time, API requests per step (the client's count, and the simulator's),
 * this process's CPU seconds (user + system, getrusage) per 1,000 steps, peak RSS
 * (ru_maxrss) against the target of 100 MB, and the simulator's peak of live pods.
 *
 * Then the same for steps that declare an output artifact (M attempts, default 200;
 * argv[2]), twice: with no repository (the helper in the main container checks that the
 * output exists: one container, the request profile every step had before the stage-out
 * sidecar) and with an fs repository on the work volume (the sluice-stage-out sidecar
 * stores it, and its log is read once): the sidecar's cost in API requests per step.
 * Exit status non-zero only if something is broken (the simulator does not start, an
 * attempt fails).
 */
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "worker/kube.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

static int done_ok, done_failed, done_total;

static void on_done(struct exec_local_result *r, void *data)
{
    (void)data;
    done_total++;
    if (r->failure == EXEC_FAIL_NONE && cJSON_GetObjectItem(r->outputs, "n"))
        done_ok++;
    else {
        if (done_failed < 5)
            fprintf(stderr, "bench_kube: attempt %s failed: %s\n", r->attempt_id,
                    r->reason ? r->reason : "(no outputs)");
        done_failed++;
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* GET path from the simulator with plain HTTP; the body, newly allocated, or NULL. */
static char *sim_get(int port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    char req[256];
    int n =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return NULL;
    }
    struct strbuf sb = STRBUF_INIT;
    char buf[4096];
    ssize_t r;
    while ((r = read(fd, buf, sizeof(buf))) > 0)
        strbuf_add(&sb, buf, (size_t)r);
    close(fd);
    char *body = strstr(sb.buf, "\r\n\r\n");
    char *out = body ? xstrdup(body + 4) : NULL;
    strbuf_release(&sb);
    return out;
}

/* POST path (body "{}") to the simulator; the answer's body, newly allocated, or NULL. */
static char *sim_post(int port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    char req[256];
    int n = snprintf(req, sizeof(req),
                     "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: 2\r\nConnection: close\r\n\r\n{}",
                     path);
    struct strbuf sb = STRBUF_INIT;
    if (write(fd, req, (size_t)n) == n) {
        char buf[4096];
        ssize_t r;
        while ((r = read(fd, buf, sizeof(buf))) > 0)
            strbuf_add(&sb, buf, (size_t)r);
    }
    close(fd);
    char *body = sb.len ? strstr(sb.buf, "\r\n\r\n") : NULL;
    char *out = body ? xstrdup(body + 4) : NULL;
    strbuf_release(&sb);
    return out;
}

static long stat_of(const char *json, const char *key)
{
    cJSON *j = cJSON_Parse(json);
    const cJSON *v = cJSON_GetObjectItem(j, key);
    long out = cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
    cJSON_Delete(j);
    return out;
}

/* One phase's figures. */
struct phase {
    double wall, cpu, rss_mb;
    uint64_t reqs;
    long sim_reqs, peak;
};

/* Runs n attempts at once through a fresh context (its own request count); with
 * artifacts, each declares the output artifact 'out' (n.txt) and repo is the
 * repository ("none" or "fs"). Returns 0, or 1 if the context could not start. */
static int run_phase(struct phase *out, int port, const char *kc, const char *sluice, long n,
                     const char *logs, const char *tag, bool artifacts, const char *repo)
{
    done_ok = done_failed = done_total = 0;
    free(sim_post(port, "/_sim/reset"));
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct kube_options o = {
        .kubeconfig = kc,
        .queue = "bench",
        .default_image = "bench:1",
        .helper = KUBE_HELPER_IMAGE,
        .sluice_image = "sluice:bench",
        .sluice_path = sluice,
        .work_claim = "work",
        .work_mount = "/sluice/work",
        .qps = 1000,
        .burst = 1000,
        .artifacts_repository = repo,
        .artifacts_root = "/sluice/work/artifacts",
    };
    struct kube_ctx *k = NULL;
    if (kube_ctx_new(&k, &loop, &o) < 0)
        return 1;
    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        char id[64], step[32], *lp;
        snprintf(step, sizeof(step), "%s%ld", tag, i);
        snprintf(id, sizeof(id), "bench.r1.%s.-1.1", step);
        cJSON *spec = cJSON_CreateObject();
        cJSON_AddStringToObject(spec, "attempt_id", id);
        cJSON_AddStringToObject(spec, "dag", "bench");
        cJSON_AddStringToObject(spec, "run_id", "r1");
        cJSON_AddStringToObject(spec, "step", step);
        cJSON_AddNumberToObject(spec, "map_index", -1);
        cJSON_AddNumberToObject(spec, "attempt", 1);
        cJSON *cmd = cJSON_AddArrayToObject(spec, "command");
        cJSON_AddItemToArray(cmd, cJSON_CreateString("/bin/sh"));
        cJSON_AddItemToArray(cmd, cJSON_CreateString("-c"));
        cJSON_AddItemToArray(cmd,
                             cJSON_CreateString("echo start; sleep 2; echo 1 > n.txt; echo end"));
        cJSON_AddStringToObject(spec, "workdir", "$(SLUICE_ATTEMPT_DIR)");
        cJSON *outs = cJSON_AddObjectToObject(spec, "outputs");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(outs, "params"), "n", "n.txt");
        if (artifacts) {
            cJSON *a = cJSON_AddObjectToObject(cJSON_AddObjectToObject(outs, "artifacts"), "out");
            cJSON_AddStringToObject(a, "path", "n.txt");
            char *key = xasprintf("bench/r1/%s/1/out", step);
            cJSON_AddStringToObject(a, "key", key);
            free(key);
        }
        lp = xasprintf("%s/bench/r1/%s/1.log", logs, step);
        struct kube_exec_options eo = {.log_path = lp, .worker_id = "bench"};
        struct kube_exec *e;
        kube_exec_start(&e, k, spec, &eo, on_done, NULL);
        free(lp);
        cJSON_Delete(spec);
    }
    while (done_total < n)
        uv_run(&loop, UV_RUN_ONCE);
    out->wall = now_s() - t0;
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    out->cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
               (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
               (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
               (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    out->rss_mb = (double)ru1.ru_maxrss / 1024.0;
    out->reqs = kube_ctx_requests(k);
    kube_ctx_close(k, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    char *stats = sim_get(port, "/_sim/stats");
    out->sim_reqs = stats ? stat_of(stats, "requests") : 0;
    out->peak = stats ? stat_of(stats, "peak_live_pods") : 0;
    free(stats);
    return 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 1000;
    if (n < 1)
        n = 1000;
    long m = argc > 2 ? strtol(argv[2], NULL, 10) : 200;
    if (m < 1)
        m = 200;
    signal(SIGPIPE, SIG_IGN);
    char tmp[] = "/tmp/sluice-bench-kube-XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    char *state = xasprintf("%s/state", tmp), *port_file = xasprintf("%s/port", tmp);
    char *work = xasprintf("%s/work", tmp), *logs = xasprintf("%s/logs", tmp);
    char *kc = xasprintf("%s/kubeconfig", tmp), *claim = xasprintf("work=%s", work);
    char *art = xasprintf("%s/artifacts", work);
    mkdir(work, 0755);
    mkdir(art, 0755);
    char cwd[4096];
    if (!getcwd(cwd, sizeof(cwd)))
        return 1;
    char *sluice =
        getenv("SLUICE_BIN") ? xstrdup(getenv("SLUICE_BIN")) : xasprintf("%s/bin/sluice", cwd);
    if (access(sluice, X_OK) != 0) {
        fprintf(stderr, "bench_kube: no sluice binary at %s\n", sluice);
        return 1;
    }
    pid_t sim = fork();
    if (sim == 0) {
        setsid();
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        execl("/usr/bin/python3", "python3", "tests/k8s/sim.py", "--state-dir", state,
              "--port-file", port_file, "--claim", claim, "--bookmark-seconds", "5", (char *)NULL);
        _exit(127);
    }
    int port = 0;
    for (int i = 0; i < 3000 && !port; i++) {
        struct strbuf sb = STRBUF_INIT;
        if (strbuf_read_file(&sb, port_file, 64) == 0 && sb.len > 1)
            port = (int)strtol(sb.buf, NULL, 10);
        strbuf_release(&sb);
        if (!port)
            nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    if (!port) {
        fprintf(stderr, "bench_kube: the simulator did not start\n");
        kill(-sim, SIGKILL);
        return 1;
    }
    FILE *f = fopen(kc, "w");
    fprintf(f,
            "apiVersion: v1\ncurrent-context: b\nclusters:\n- name: s\n  cluster: {server: "
            "\"http://127.0.0.1:%d\"}\nusers:\n- name: u\n  user: {token: x}\ncontexts:\n"
            "- name: b\n  context: {cluster: s, user: u, namespace: bench}\n",
            port);
    fclose(f);

    int failed = 0;
    struct phase p;
    if (run_phase(&p, port, kc, sluice, n, logs, "s", false, "none") != 0) {
        kill(-sim, SIGKILL);
        return 1;
    }
    failed += done_failed;
    printf("bench_kube: %ld pods at once through the API simulator (one worker's executor, "
           "one loop)\n",
           n);
    printf("  succeeded                 %d / %ld (failed %d)\n", done_ok, n, done_failed);
    printf("  wall time                 %.1f s (each step sleeps 2 s; the Python simulator "
           "runs every pod)\n",
           p.wall);
    printf("  peak live pods            %ld\n", p.peak);
    printf("  API requests per step     %.2f (client), %.2f (simulator, incl. the watch)\n",
           (double)p.reqs / (double)n, (double)p.sim_reqs / (double)n);
    printf("  worker CPU per 1,000 steps %.2f s (user + system)\n", p.cpu * 1000.0 / (double)n);
    printf("  peak RSS                  %.1f MB  %s (target < 100 MB)\n", p.rss_mb,
           p.rss_mb < 100 ? "PASS" : "MISS");

    /* steps with a declared output artifact: checked in the main container, or stored by
     * the sidecar */
    const char *repos[] = {"none", "fs"};
    const char *what[] = {"checked by the helper (no repository: one container)",
                          "stored by the sluice-stage-out sidecar (fs repository)"};
    double per_step[2] = {0, 0};
    printf("bench_kube: %ld steps with an output artifact, at once\n", m);
    for (int i = 0; i < 2; i++) {
        char tag[8];
        snprintf(tag, sizeof(tag), "a%d-", i);
        if (run_phase(&p, port, kc, sluice, m, logs, tag, true, repos[i]) != 0) {
            kill(-sim, SIGKILL);
            return 1;
        }
        failed += done_failed;
        per_step[i] = (double)p.reqs / (double)m;
        printf("  %-56s %d / %ld succeeded, %.1f s, %.2f API requests per step (client), %.2f "
               "(simulator), worker CPU %.2f s per 1,000\n",
               what[i], done_ok, m, p.wall, per_step[i], (double)p.sim_reqs / (double)m,
               p.cpu * 1000.0 / (double)m);
    }
    printf("  the sidecar's cost         %+.2f API requests per step (its log, read once)\n",
           per_step[1] - per_step[0]);
    kill(-sim, SIGTERM);
    int status;
    waitpid(sim, &status, 0);
    char *rm = xasprintf("rm -rf '%s'", tmp);
    if (system(rm) != 0)
        fprintf(stderr, "bench_kube: could not remove %s\n", tmp);
    free(rm);
    free(state);
    free(port_file);
    free(work);
    free(art);
    free(logs);
    free(kc);
    free(claim);
    free(sluice);
    return failed == 0 ? 0 : 1;
}
