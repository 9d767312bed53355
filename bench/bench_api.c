/*
 * bench/bench_api.c - the REST API under load, with wrk on loopback.
 *
 * In a fresh temporary directory it starts the embedded PostgreSQL and Redis of `sluice
 * standalone` (cli/embed.h, PostgreSQL with its durable defaults), migrates, records a
 * DAG, makes an operator token and one run, and starts the API server (api/api.h) in a
 * thread of this process on a free loopback port, with api.threads worker threads. Then
 * wrk (Debian's, 2 threads, 64 connections, keep-alive) measures:
 *
 *   1. GET  /api/v1/dags/{id}/runs/{run_id}   target >= 20,000 requests/s
 *   2. POST /api/v1/dags/{id}/runs            target >= 2,000 runs/s (each a new run)
 *
 * printing requests/s, p50/p99 latency and PASS/MISS against the targets. Nothing is
 * asserted; the exit status is non-zero only when something is broken (no wrk, servers
 * that do not start, answers that are not 2xx). wrk, PostgreSQL, the API and this
 * process share the machine's cores, as they would on one small host.
 *
 *   BENCH_API_SECONDS  seconds per measurement (default 10)
 *   BENCH_API_THREADS  the API's worker threads (default 8)
 */
#include "api/api.h"
#include "cli/embed.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "dsl/dsl.h"
#include "store/store.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *dag_yaml = "name: bench\n"
                              "params:\n"
                              "  n: {type: integer, default: 1}\n"
                              "steps:\n"
                              "  - name: one\n"
                              "    command: [/bin/true]\n";

struct wrk_result {
    double rps;
    double p50_ms, p99_ms;
    long non2xx;
    bool ok;
};

/* "1.23ms", "456.78us", "1.2s" -> milliseconds */
static double to_ms(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (!strncmp(end, "us", 2))
        return v / 1000.0;
    if (!strncmp(end, "ms", 2))
        return v;
    if (!strncmp(end, "s", 1))
        return v * 1000.0;
    return v;
}

static int run_wrk(struct wrk_result *r, const char *url, const char *script, int seconds)
{
    char dur[16];
    snprintf(dur, sizeof(dur), "%ds", seconds);
    char *cmd = xasprintf("wrk -t2 -c64 -d%s --latency -s '%s' '%s' 2>&1", dur, script, url);
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (!p)
        return -1;
    memset(r, 0, sizeof(*r));
    char line[512];
    while (fgets(line, sizeof(line), p)) {
        fputs("    | ", stdout);
        fputs(line, stdout);
        char a[64];
        if (sscanf(line, " Requests/sec: %lf", &r->rps) == 1) // NOLINT(cert-err34-c)
            r->ok = true;
        if (sscanf(line, " 50%% %63s", a) == 1) // NOLINT(cert-err34-c)
            r->p50_ms = to_ms(a);
        if (sscanf(line, " 99%% %63s", a) == 1) // NOLINT(cert-err34-c)
            r->p99_ms = to_ms(a);
        long bad = 0;
        if (sscanf(line, " Non-2xx or 3xx responses: %ld", &bad) == 1) // NOLINT(cert-err34-c)
            r->non2xx = bad;
    }
    int st = pclose(p);
    return st == 0 && r->ok ? 0 : -1;
}

static void *serve(void *arg)
{
    api_server_run(arg);
    return NULL;
}

static int write_script(const char *path, const char *method, const char *body, const char *token)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "wrk.method = \"%s\"\n", method);
    if (body)
        fprintf(f, "wrk.body = '%s'\n", body);
    fprintf(f, "wrk.headers[\"Authorization\"] = \"Bearer %s\"\n", token);
    fprintf(f, "wrk.headers[\"Content-Type\"] = \"application/json\"\n");
    fclose(f);
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    sl_log_set_level(SL_LOG_WARN);
    if (system("command -v wrk >/dev/null 2>&1") != 0) {
        fprintf(stderr, "bench_api: wrk is not installed (make deps installs it)\n");
        return 1;
    }
    const char *sec_env = getenv("BENCH_API_SECONDS"), *thr_env = getenv("BENCH_API_THREADS");
    int seconds = sec_env ? (int)strtol(sec_env, NULL, 10) : 10;
    int threads = thr_env ? (int)strtol(thr_env, NULL, 10) : 8;
    if (seconds < 1)
        seconds = 10;
    if (threads < 1)
        threads = 8;
    const char *tmp = getenv("TMPDIR");
    char templ[512];
    snprintf(templ, sizeof(templ), "%s/sluice-bench-api-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(templ)) {
        perror("mkdtemp");
        return 1;
    }
    chmod(templ, 0755);
    int status = 1;
    struct embed *embed = NULL;
    struct store *st = NULL;
    struct api_server *srv = NULL;
    pthread_t thread;
    bool serving = false;
    struct strbuf err = STRBUF_INIT;
    char *data = xasprintf("%s/data", templ);
    struct embed_options eo = EMBED_OPTIONS_INIT;
    eo.data_dir = data;
    printf("bench_api: starting PostgreSQL and Redis under %s ...\n", templ);
    fflush(stdout);
    if (embed_start(&embed, &eo, &err) < 0) {
        fprintf(stderr, "bench_api: %s\n", err.buf);
        goto out;
    }
    if (store_open(&st, embed_database_url(embed), NULL, &err) < 0 ||
        store_migrate(st, NULL, NULL) < 0) {
        fprintf(stderr, "bench_api: database: %s\n", err.buf);
        goto out;
    }
    struct dsl_diags diags;
    dsl_diags_init(&diags);
    struct dsl_dag *dag = NULL;
    if (dsl_parse_buffer(&dag, "bench.yaml", dag_yaml, strlen(dag_yaml), NULL, &diags) < 0) {
        dsl_diags_release(&diags);
        goto out;
    }
    dsl_diags_release(&diags);
    struct strbuf model = STRBUF_INIT;
    dsl_dag_to_json(&model, dag, false);
    dsl_dag_free(dag);
    struct store_dag_put put = {
        .dag_id = "bench", .file_path = "bench.yaml", .model_json = model.buf, .source = dag_yaml};
    int64_t version;
    bool changed;
    int rc = store_dag_put_version(st, &version, &changed, &put);
    strbuf_release(&model);
    char token[API_TOKEN_BUFSZ];
    unsigned char hash[API_TOKEN_HASH_SZ];
    struct arena mem = ARENA_INIT;
    struct store_token t;
    api_token_generate(token);
    api_token_hash(hash, token);
    if (rc < 0 || store_token_create(st, &t, "bench", "operator", hash, sizeof(hash), &mem) < 0) {
        fprintf(stderr, "bench_api: setup: %s\n", store_errmsg(st));
        arena_release(&mem);
        goto out;
    }
    struct store_run_new rn = {.dag_id = "bench",
                               .trigger = STORE_TRIGGER_MANUAL,
                               .logical_time_ms = STORE_NO_TIME,
                               .run_id = "bench-run-1"};
    struct store_run run;
    bool existed;
    if (store_run_create(st, &run, &existed, &rn, &mem) < 0) {
        fprintf(stderr, "bench_api: run: %s\n", store_errmsg(st));
        arena_release(&mem);
        goto out;
    }
    arena_release(&mem);
    struct api_options o = {.database_url = embed_database_url(embed),
                            .redis_url = embed_redis_url(embed),
                            .listen = "127.0.0.1:0",
                            .log_root = templ,
                            .threads = (size_t)threads};
    if (api_server_new(&srv, &o, &err) < 0) {
        fprintf(stderr, "bench_api: %s\n", err.buf);
        goto out;
    }
    if (pthread_create(&thread, NULL, serve, srv) != 0)
        goto out;
    serving = true;
    /* no wait needed: the listener is bound, connections queue until the loop runs */
    int port = api_server_port(srv);
    printf("bench_api: API on 127.0.0.1:%d, %d worker threads, wrk -t2 -c64 for %d s each, "
           "%ld CPUs online\n\n",
           port, threads, seconds, sysconf(_SC_NPROCESSORS_ONLN));

    char *get_lua = xasprintf("%s/get.lua", templ), *post_lua = xasprintf("%s/post.lua", templ);
    write_script(get_lua, "GET", NULL, token);
    write_script(post_lua, "POST", "{\"params\":{\"n\":2}}", token);
    char url_get[256], url_post[256];
    snprintf(url_get, sizeof(url_get), "http://127.0.0.1:%d/api/v1/dags/bench/runs/bench-run-1",
             port);
    snprintf(url_post, sizeof(url_post), "http://127.0.0.1:%d/api/v1/dags/bench/runs", port);
    struct wrk_result g, p;
    printf("1. GET %s\n", url_get + strlen("http://127.0.0.1:") + 5);
    int g_rc = run_wrk(&g, url_get, get_lua, seconds);
    printf("2. POST /api/v1/dags/bench/runs (a new run each)\n");
    int p_rc = run_wrk(&p, url_post, post_lua, seconds);
    int64_t made = 0;
    struct store_run_filter f = {.dag_id = "bench",
                                 .logical_gte = STORE_NO_TIME,
                                 .logical_lte = STORE_NO_TIME,
                                 .start_gte = STORE_NO_TIME,
                                 .start_lte = STORE_NO_TIME,
                                 .end_gte = STORE_NO_TIME,
                                 .end_lte = STORE_NO_TIME,
                                 .limit = 1};
    struct store_run *v;
    size_t n;
    struct arena m2 = ARENA_INIT;
    store_runs_query(st, &v, &n, &made, &f, &m2);
    arena_release(&m2);
    printf("\n%-44s %12s %10s %10s %10s  %s\n", "what", "per second", "p50 ms", "p99 ms", "target",
           "");
    printf("%-44s %12.0f %10.2f %10.2f %10s  %s\n", "GET /dags/{id}/runs/{run_id}", g.rps, g.p50_ms,
           g.p99_ms, ">= 20000", g.rps >= 20000 ? "PASS" : "MISS");
    printf("%-44s %12.0f %10.2f %10.2f %10s  %s\n", "POST /dags/{id}/runs (runs created)", p.rps,
           p.p50_ms, p.p99_ms, ">= 2000", p.rps >= 2000 ? "PASS" : "MISS");
    printf("runs in the database after the POSTs: %lld; non-2xx answers: GET %ld, POST %ld\n",
           (long long)made, g.non2xx, p.non2xx);
    free(get_lua);
    free(post_lua);
    status = g_rc == 0 && p_rc == 0 && g.non2xx == 0 && p.non2xx == 0 ? 0 : 1;
out:
    if (serving) {
        api_server_request_stop(srv);
        pthread_join(thread, NULL);
    }
    api_server_free(srv);
    store_close(st);
    embed_stop(embed);
    char *rm = xasprintf("rm -rf '%s'", templ);
    if (system(rm) != 0)
        fprintf(stderr, "bench_api: cannot remove %s\n", templ);
    free(rm);
    free(data);
    strbuf_release(&err);
    return status;
}
