/*
 * bench/bench_dsl.c - how fast the DAG language parses, and how much memory a model takes.
 *
 * `make bench` builds this optimized (-O2, no sanitizers) and runs it from the
 * repository root. It measures, on one thread:
 *
 *   1. dsl_parse_buffer() on one generated 10,000-step DAG (validation included:
 *      names, dependencies, cycles, every template and reference): best and
 *      median of several runs, input bytes, and the model's arena (dag->mem.
 *      total_bytes) against the input size. A forked child also reports the
 *      process's peak RSS growth over one parse, which adds the transient
 *      YAML node tree (dsl/yaml.c) to the model.
 *   2. dsl_parse_file() over a folder of 1,000 generated DAG files of 5-30
 *      steps each, written to a fresh temporary directory and removed after.
 *   3. `bin/sluice dag validate <folder>` end to end (fork/exec, output to
 *      /dev/null), when that binary exists (or $SLUICE_BIN names one).
 *   4. Scaling: input bytes, model bytes and parse time at 1k, 10k and 50k steps.
 *   5. A chain of steps that all read the first step's output (each depends on
 *      the one before), at 10k and 40k steps: "is s0 upstream of me" for every
 *      step, which a naive upward search makes quadratic.
 *
 * The DAGs are realistic rather than minimal: every step has a templated
 * command reading params and an upstream step's output param, 1-3
 * dependencies (mostly recent steps, some far back), env with a secret,
 * resources, retries with backoff, a timeout and declared outputs; some steps
 * fan out (a literal list or a `{{ expr }}`), some have `when:` conditions and
 * input artifacts. Generation uses a fixed-seed PRNG, so every run parses the
 * same bytes.
 *
 * It prints a table with the targets and PASS/MISS. Timings are never
 * asserted (a loaded CI machine is not a slow parser): the exit status is
 * nonzero only if a generated DAG fails to parse, which is a bug here or in
 * dsl/. bench/README.md has the figures measured on the development machine.
 */
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "dsl/dsl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BIG_STEPS        10000
#define BIG_RUNS         9 /* parses of the big DAG; best and median reported */
#define FOLDER_FILES     1000
#define FOLDER_RUNS      5 /* passes over the folder */
#define CLI_RUNS         5 /* `sluice dag validate` runs */
#define TARGET_BIG_MS    100.0
#define TARGET_FOLDER_MS 1000.0
#define MAX_BYTES        ((size_t)256 << 20) /* room for the 50k-step DAG */

/* --- small helpers ---------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* CPU time of this thread: on a shared machine it tells the parser's cost apart
 * from time spent waiting for the core. */
static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts t (n samples) in place; sets the best and the median. */
static void summarize(double *t, size_t n, double *best, double *median)
{
    qsort(t, n, sizeof(*t), cmp_double);
    *best = t[0];
    *median = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

/* xorshift64*: deterministic, so every run generates the same DAGs. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dULL) >> 32) % n;
}

static const char *human_bytes(char *buf, size_t len, double bytes)
{
    if (bytes >= 1024.0 * 1024.0)
        snprintf(buf, len, "%.1f MiB", bytes / (1024.0 * 1024.0));
    else if (bytes >= 1024.0)
        snprintf(buf, len, "%.1f KiB", bytes / 1024.0);
    else
        snprintf(buf, len, "%.0f B", bytes);
    return buf;
}

/* --- the generator ---------------------------------------------------------------- */

struct gen_opts {
    const char *name;
    size_t n_steps;
    bool scheduled;      /* schedule, timezone, start_date, catchup */
    bool defaults;       /* a defaults: block (then steps carry less themselves) */
    bool on_exit;        /* an on_exit step */
    unsigned fan_every;  /* every nth step fans out; 0 = none */
    unsigned when_every; /* every nth step has a when: condition; 0 = none */
    bool lean;           /* the least a realistic step has (about 300 bytes) */
};

static const char *const regions[] = {"eu", "us", "jp"};
static const char *const tools[] = {"extract.py",  "transform.py", "train.py",
                                    "evaluate.py", "load.py",      "report.py"};
static const char *const cpus[] = {"250m", "500m", "1", "2", "4"};
static const char *const mems[] = {"256Mi", "512Mi", "1Gi", "2Gi", "8Gi"};
static const char *const policies[] = {"always", "on_failure", "on_error", "on_transient"};

/* Step i declares outputs.artifacts.data when this holds, so consumers know. */
static bool has_artifact(size_t i)
{
    return i % 4 == 0;
}

/* Picks 1-3 distinct dependencies of step i (i > 0) into deps; returns how many. */
static size_t pick_deps(size_t i, size_t deps[3])
{
    size_t want = 1 + rnd(3), n = 0;
    if (want > i)
        want = i;
    while (n < want) {
        size_t d;
        if (rnd(5) == 0)
            d = rnd((uint32_t)i); /* far back: a long edge */
        else
            d = i - 1 - rnd((uint32_t)(i < 20 ? i : 20)); /* recent */
        bool dup = false;
        for (size_t k = 0; k < n; k++)
            dup |= deps[k] == d;
        if (!dup)
            deps[n++] = d;
    }
    return n;
}

/* A step with only what the brief of the benchmark requires: a templated
 * command reading params and an upstream output, 1-3 dependencies, env,
 * resources, retries and an output; every 25th step fans out. */
static void gen_lean_step(struct strbuf *sb, size_t i)
{
    size_t deps[3], n_deps = i > 0 ? pick_deps(i, deps) : 0;

    strbuf_addf(sb, "  - name: step-%05zu\n", i);
    if (n_deps > 0) {
        strbuf_addstr(sb, "    depends_on: [");
        for (size_t k = 0; k < n_deps; k++)
            strbuf_addf(sb, "%sstep-%05zu", k ? ", " : "", deps[k]);
        strbuf_addstr(sb, "]\n");
    }
    if (i > 0 && i % 25 == 0)
        strbuf_addstr(sb, "    for_each: [eu, us, jp]\n");
    strbuf_addf(sb, "    command: [python3, jobs/%s, --lr, \"{{ params.learning_rate }}\"",
                tools[rnd(6)]);
    if (n_deps > 0)
        strbuf_addf(sb, ", --in, \"{{ steps.step-%05zu.outputs.params.out }}\"", deps[0]);
    strbuf_addf(sb, "%s]\n", i > 0 && i % 25 == 0 ? ", \"{{ item }}\"" : "");
    strbuf_addf(sb, "    env: {SHARD: \"%zu\"}\n", i);
    strbuf_addf(sb, "    resources: {cpu: %s, memory: %s}\n", cpus[rnd(5)], mems[rnd(5)]);
    strbuf_addf(sb, "    retries: %u\n", rnd(4));
    strbuf_addstr(sb, "    outputs: {params: {out: out.txt}}\n");
}

static void gen_step(struct strbuf *sb, const struct gen_opts *o, size_t i)
{
    if (o->lean) {
        gen_lean_step(sb, i);
        return;
    }
    size_t deps[3], n_deps = i > 0 ? pick_deps(i, deps) : 0;
    bool fan = o->fan_every && i > 0 && i % o->fan_every == 0;
    bool when = o->when_every && i > 0 && i % o->when_every == 0;
    const char *tool = tools[rnd(6)];

    strbuf_addf(sb, "  - name: step-%05zu\n", i);
    if (n_deps > 0) {
        strbuf_addstr(sb, "    depends_on: [");
        for (size_t k = 0; k < n_deps; k++)
            strbuf_addf(sb, "%sstep-%05zu", k ? ", " : "", deps[k]);
        strbuf_addstr(sb, "]\n");
        if (rnd(20) == 0)
            strbuf_addstr(sb, "    trigger_rule: none_failed_min_one_success\n");
    }
    if (when)
        strbuf_addf(sb,
                    "    when: steps.step-%05zu.outputs.params.rows >= %u and "
                    "params.region != \"%s\"\n",
                    deps[0], 100 + rnd(10000), regions[rnd(3)]);
    if (fan) {
        if (rnd(2))
            strbuf_addstr(sb, "    for_each: [eu, us, jp, \"shard-{{ params.version }}\"]\n");
        else
            strbuf_addf(sb, "    for_each: \"{{ steps.step-%05zu.outputs.params.out }}\"\n",
                        deps[0]);
        strbuf_addf(sb, "    max_parallel: %u\n", 2 + rnd(7));
    }
    if (!o->defaults || rnd(4) == 0)
        strbuf_addstr(sb, "    image: \"registry.example.com/ml/jobs:{{ params.version }}\"\n");
    strbuf_addf(
        sb, "    command: [/usr/bin/python3, \"{{ dag.dir }}/jobs/%s\", --run, \"{{ run.id }}\"",
        tool);
    if (n_deps > 0)
        strbuf_addf(sb, ",\n              --input, \"{{ steps.step-%05zu.outputs.params.out }}\"",
                    deps[n_deps - 1]);
    strbuf_addf(sb,
                ",\n              --lr, \"{{ params.learning_rate }}\", --trees, "
                "\"{{ params.n_estimators }}\"%s]\n",
                fan ? ", --item, \"{{ item }}\"" : "");
    strbuf_addf(sb, "    env:\n      SHARD: \"%zu\"\n      REGION: \"{{ params.region }}\"\n", i);
    if (rnd(3) == 0)
        strbuf_addstr(sb, "      API_TOKEN: {from_secret: {name: api-token, key: token}}\n");
    strbuf_addf(sb, "    resources: {cpu: %s, memory: %s%s}\n", cpus[rnd(5)], mems[rnd(5)],
                rnd(10) == 0 ? ", gpu: 1" : "");
    if (!o->defaults || rnd(3) == 0)
        strbuf_addf(sb,
                    "    retries: {limit: %u, policy: %s, backoff: {initial: %us, factor: 2, "
                    "max: 10m}}\n",
                    rnd(5), policies[rnd(4)], 1 + rnd(30));
    strbuf_addf(sb, "    timeout: %uh%um\n", rnd(3), 1 + rnd(59));
    if (n_deps > 0 && has_artifact(deps[0]))
        strbuf_addf(sb,
                    "    inputs:\n      artifacts:\n        data: {from: "
                    "\"{{ steps.step-%05zu.outputs.artifacts.data }}\", path: in/data}\n",
                    deps[0]);
    strbuf_addstr(sb, "    outputs:\n      params: {out: out.json, rows: rows.txt}\n");
    if (has_artifact(i))
        strbuf_addstr(sb, "      artifacts: {data: data/}\n");
}

/* Appends a whole DAG file to sb. */
static void gen_dag(struct strbuf *sb, const struct gen_opts *o)
{
    strbuf_addf(sb, "# generated by bench/bench_dsl.c: %zu steps\n", o->n_steps);
    strbuf_addf(sb, "name: %s\n", o->name);
    strbuf_addf(sb, "description: benchmark DAG with %zu steps\n", o->n_steps);
    strbuf_addstr(sb, "tags: [bench, generated]\n");
    if (o->scheduled)
        strbuf_addf(sb,
                    "schedule: \"%u %u * * *\"\ntimezone: Europe/Paris\n"
                    "start_date: 2026-01-01\ncatchup: latest\noverlap: forbid\n",
                    rnd(60), rnd(24));
    strbuf_addstr(sb, "max_active_runs: 2\n"
                      "params:\n"
                      "  version: {type: string, default: \"1.4.2\"}\n"
                      "  region: {type: string, enum: [eu, us, jp], default: eu}\n"
                      "  learning_rate: {type: number, default: 0.01}\n"
                      "  n_estimators: {type: integer, default: 100, description: trees}\n"
                      "  dry_run: {type: boolean, default: false}\n");
    if (o->defaults)
        strbuf_addstr(sb, "defaults:\n"
                          "  image: \"registry.example.com/ml/base:{{ params.version }}\"\n"
                          "  retries: {limit: 2, policy: on_error, backoff: {initial: 10s}}\n"
                          "  env: {LOG_LEVEL: info}\n"
                          "  labels: {team: data}\n");
    strbuf_addstr(sb, "steps:\n");
    for (size_t i = 0; i < o->n_steps; i++)
        gen_step(sb, o, i);
    if (o->on_exit)
        strbuf_addstr(sb, "on_exit:\n"
                          "  - name: report\n"
                          "    command: [/usr/bin/python3, -c, \"print('done')\", "
                          "\"{{ run.id }}\", \"{{ run.state }}\"]\n");
}

/* The big DAG: full steps (about 600 bytes each), or lean ones. */
static void gen_big(struct strbuf *sb, size_t n_steps, bool lean)
{
    char name[32];
    snprintf(name, sizeof(name), "bench-%zu", n_steps);
    struct gen_opts o = {.name = name,
                         .n_steps = n_steps,
                         .scheduled = !lean,
                         .defaults = !lean,
                         .on_exit = !lean,
                         .fan_every = 25,
                         .when_every = 10,
                         .lean = lean};
    rng_state = 0x9e3779b97f4a7c15ULL;
    gen_dag(sb, &o);
}

/* --- parsing ---------------------------------------------------------------------- */

struct timing {
    double wall_ms;
    double cpu_ms;
};

/* Parses buf once and sets *t and *model_bytes. Returns 0, or -1 (after
 * printing the diagnostics) if it does not parse. */
static int parse_once(const struct strbuf *buf, struct timing *t, size_t *model_bytes)
{
    const struct dsl_options opts = {.max_bytes = MAX_BYTES};
    struct dsl_diags diags;
    struct dsl_dag *dag = NULL;

    dsl_diags_init(&diags);
    double w0 = now_ms(), c0 = cpu_ms();
    int rc = dsl_parse_buffer(&dag, "bench.yaml", buf->buf, buf->len, &opts, &diags);
    if (t) {
        t->cpu_ms = cpu_ms() - c0;
        t->wall_ms = now_ms() - w0;
    }
    if (rc < 0) {
        fprintf(stderr, "bench_dsl: the generated DAG does not parse:\n");
        dsl_diags_print(&diags, stderr);
    } else {
        if (model_bytes)
            *model_bytes = dag->mem.total_bytes;
        dsl_dag_free(dag);
    }
    dsl_diags_release(&diags);
    return rc < 0 ? -1 : 0;
}

/* Parses buf runs times (after one warm-up parse); sets the best and median
 * wall times, the median CPU time and the model's size. Returns 0 or -1. */
static int parse_runs(const struct strbuf *buf, size_t runs, double *best, double *median,
                      double *cpu_median, size_t *model_bytes)
{
    double wall[16], cpu[16], unused;
    struct timing t;
    if (runs > 16)
        runs = 16;
    if (parse_once(buf, NULL, NULL) < 0) /* warm up: the allocator, the zone file */
        return -1;
    for (size_t r = 0; r < runs; r++) {
        if (parse_once(buf, &t, model_bytes) < 0)
            return -1;
        wall[r] = t.wall_ms;
        cpu[r] = t.cpu_ms;
    }
    summarize(wall, runs, best, median);
    summarize(cpu, runs, &unused, cpu_median);
    return 0;
}

/* Reads a "Key:  123 kB" line of /proc/self/status, in bytes; 0 if unavailable. */
static size_t proc_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t v = 0, klen = strlen(key);
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, key, klen) && line[klen] == ':')
            v = strtoull(line + klen + 1, NULL, 10) * 1024;
    fclose(f);
    return v;
}

/* Peak RSS growth of a fresh process over one parse of buf: the model plus
 * everything transient (the YAML node tree, scratch arrays). Returns 0 if
 * /proc is not there to ask. */
static size_t parse_peak_rss(const struct strbuf *buf)
{
    int fd[2];
    size_t growth = 0;
    if (pipe(fd) < 0)
        return 0;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        size_t before = proc_status_kb("VmRSS");
        parse_once(buf, NULL, NULL);
        size_t hwm = proc_status_kb("VmHWM");
        size_t d = hwm > before ? hwm - before : 0;
        ssize_t w = write(fd[1], &d, sizeof(d));
        _exit(w == (ssize_t)sizeof(d) ? 0 : 1);
    }
    close(fd[1]);
    if (pid > 0) {
        if (read(fd[0], &growth, sizeof(growth)) != (ssize_t)sizeof(growth))
            growth = 0;
        waitpid(pid, NULL, 0);
    }
    close(fd[0]);
    return growth;
}

/* --- the folder --------------------------------------------------------------------- */

static int write_file(const char *path, const struct strbuf *sb)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    size_t w = fwrite(sb->buf, 1, sb->len, f);
    return fclose(f) == 0 && w == sb->len ? 0 : -1;
}

/* Writes FOLDER_FILES varied DAGs into dir; sets *bytes and *steps to their totals. */
static int make_folder(const char *dir, size_t *bytes, size_t *steps)
{
    struct strbuf sb = STRBUF_INIT;
    *bytes = *steps = 0;
    rng_state = 0x2545f4914f6cdd1dULL;
    for (size_t f = 0; f < FOLDER_FILES; f++) {
        char name[32], path[4096];
        snprintf(name, sizeof(name), "pipeline-%04zu", f);
        struct gen_opts o = {.name = name,
                             .n_steps = 5 + rnd(26),
                             .scheduled = rnd(3) != 0,
                             .defaults = rnd(2) != 0,
                             .on_exit = rnd(4) == 0,
                             .fan_every = rnd(2) ? 4 + rnd(4) : 0,
                             .when_every = rnd(2) ? 3 + rnd(4) : 0};
        strbuf_reset(&sb);
        gen_dag(&sb, &o);
        snprintf(path, sizeof(path), "%s/%s.yaml", dir, name);
        if (write_file(path, &sb) < 0) {
            fprintf(stderr, "bench_dsl: cannot write '%s': %s\n", path, strerror(errno));
            strbuf_release(&sb);
            return -1;
        }
        *bytes += sb.len;
        *steps += o.n_steps;
    }
    strbuf_release(&sb);
    return 0;
}

/* Removes dir and the files in it (it has no subdirectories). */
static void remove_folder(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];
    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (unlink(path) < 0)
            fprintf(stderr, "bench_dsl: cannot remove '%s': %s\n", path, strerror(errno));
    }
    closedir(d);
    if (rmdir(dir) < 0)
        fprintf(stderr, "bench_dsl: cannot remove '%s': %s\n", dir, strerror(errno));
}

/* Parses every file of the folder once with dsl_parse_file, as a scheduler
 * rescanning its DAG directory would. Returns 0, or -1 if a file fails. */
static int parse_folder(const char *dir, struct timing *t)
{
    char path[4096];
    int bad = 0;
    double w0 = now_ms(), c0 = cpu_ms();
    for (size_t f = 0; f < FOLDER_FILES; f++) {
        struct dsl_diags diags;
        struct dsl_dag *dag = NULL;
        snprintf(path, sizeof(path), "%s/pipeline-%04zu.yaml", dir, f);
        dsl_diags_init(&diags);
        if (dsl_parse_file(&dag, path, NULL, &diags) < 0) {
            if (bad++ == 0)
                dsl_diags_print(&diags, stderr);
        }
        dsl_dag_free(dag);
        dsl_diags_release(&diags);
    }
    t->cpu_ms = cpu_ms() - c0;
    t->wall_ms = now_ms() - w0;
    return bad ? -1 : 0;
}

/* Runs `sluice dag validate dir` with its output thrown away. Returns 0 and
 * sets *t (CPU: the child's user + system time), or -1 (with the reason on
 * stderr) if it cannot run or says a file is invalid. */
static double children_cpu_ms(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_CHILDREN, &ru) < 0)
        return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static int run_validate(const char *sluice, const char *dir, struct timing *t)
{
    double w0 = now_ms(), c0 = children_cpu_ms();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execl(sluice, sluice, "dag", "validate", dir, (char *)NULL);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0)
        return -1;
    t->wall_ms = now_ms() - w0;
    t->cpu_ms = children_cpu_ms() - c0; /* RUSAGE_CHILDREN counts waited-for children */
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_dsl: '%s dag validate %s' exited with status %d\n", sluice, dir,
                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return -1;
    }
    return 0;
}

/* --- the report --------------------------------------------------------------------- */

static void header(void)
{
    printf("  %-40s %-10s %-10s %-10s %-10s %s\n", "measure", "best", "median", "cpu med.",
           "target", "result");
}

static void row_ms(const char *what, double best, double median, double cpu, double target)
{
    char tgt[32];
    snprintf(tgt, sizeof(tgt), "< %.0f ms", target);
    printf("  %-40s %-10.1f %-10.1f %-10.1f %-10s %s\n", what, best, median, cpu, tgt,
           best < target ? "PASS" : "MISS");
}

static void row_info(const char *what, const char *value)
{
    printf("  %-40s %s\n", what, value);
}

/* 1. the one big DAG, full and lean steps. Returns 0 or -1. */
static int bench_big(double *big_best)
{
    struct strbuf big = STRBUF_INIT, lean = STRBUF_INIT;
    double best, median, cpu, lbest, lmedian, lcpu;
    size_t model = 0, lmodel = 0;
    char v[96], h1[32], h2[32];
    int rc = -1;

    gen_big(&big, BIG_STEPS, false);
    gen_big(&lean, BIG_STEPS, true);
    if (parse_runs(&big, BIG_RUNS, &best, &median, &cpu, &model) < 0 ||
        parse_runs(&lean, BIG_RUNS, &lbest, &lmedian, &lcpu, &lmodel) < 0)
        goto cleanup;
    size_t peak = parse_peak_rss(&big);

    printf("%d-step DAG, parsed and validated by dsl_parse_buffer, %d runs (ms)\n", BIG_STEPS,
           BIG_RUNS);
    header();
    snprintf(v, sizeof(v), "10k full steps (%s)", human_bytes(h1, sizeof(h1), (double)big.len));
    row_ms(v, best, median, cpu, TARGET_BIG_MS);
    snprintf(v, sizeof(v), "10k lean steps (%s)", human_bytes(h1, sizeof(h1), (double)lean.len));
    row_ms(v, lbest, lmedian, lcpu, TARGET_BIG_MS);
    printf("\n");
    snprintf(v, sizeof(v), "%zu bytes, %.0f B/step; lean %zu bytes, %.0f B/step", big.len,
             (double)big.len / BIG_STEPS, lean.len, (double)lean.len / BIG_STEPS);
    row_info("input", v);
    snprintf(v, sizeof(v), "%.1f MiB/s (lean %.1f MiB/s)",
             (double)big.len / (1024.0 * 1024.0) / (best / 1e3),
             (double)lean.len / (1024.0 * 1024.0) / (lbest / 1e3));
    row_info("throughput, best", v);
    snprintf(v, sizeof(v), "%s = %.2fx input, %.0f B/step (lean %s = %.2fx)",
             human_bytes(h1, sizeof(h1), (double)model), (double)model / (double)big.len,
             (double)model / BIG_STEPS, human_bytes(h2, sizeof(h2), (double)lmodel),
             (double)lmodel / (double)lean.len);
    row_info("model: dag->mem.total_bytes", v);
    if (peak) {
        snprintf(v, sizeof(v), "%s = %.2fx input", human_bytes(h1, sizeof(h1), (double)peak),
                 (double)peak / (double)big.len);
        row_info("peak RSS growth over one parse", v);
    }
    *big_best = best;
    rc = 0;
cleanup:
    strbuf_release(&big);
    strbuf_release(&lean);
    return rc;
}

/* 2 and 3. a folder of DAG files. Returns 0 or -1. */
static int bench_folder(double *folder_best)
{
    char dirbuf[4096], h1[32];
    double wall[FOLDER_RUNS > CLI_RUNS ? FOLDER_RUNS : CLI_RUNS];
    double cpu[FOLDER_RUNS > CLI_RUNS ? FOLDER_RUNS : CLI_RUNS];
    double best, median, cpu_med, unused;
    struct timing t;
    size_t bytes, steps;
    int rc = -1;

    const char *tmp = getenv("TMPDIR");
    snprintf(dirbuf, sizeof(dirbuf), "%s/sluice-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    char *dir = mkdtemp(dirbuf);
    if (!dir) {
        fprintf(stderr, "bench_dsl: cannot create a temporary directory: %s\n", strerror(errno));
        return -1;
    }
    if (make_folder(dir, &bytes, &steps) < 0)
        goto cleanup;
    if (parse_folder(dir, &t) < 0) { /* warm up: the page cache */
        fprintf(stderr, "bench_dsl: a generated DAG file does not parse\n");
        goto cleanup;
    }
    for (size_t r = 0; r < FOLDER_RUNS; r++) {
        if (parse_folder(dir, &t) < 0)
            goto cleanup;
        wall[r] = t.wall_ms;
        cpu[r] = t.cpu_ms;
    }
    summarize(wall, FOLDER_RUNS, &best, &median);
    summarize(cpu, FOLDER_RUNS, &unused, &cpu_med);
    *folder_best = best;

    printf("\n%d DAG files of 5-30 steps (%zu steps, %s), %d passes (ms)\n", FOLDER_FILES, steps,
           human_bytes(h1, sizeof(h1), (double)bytes), FOLDER_RUNS);
    header();
    row_ms("dsl_parse_file x 1,000", best, median, cpu_med, TARGET_FOLDER_MS);

    const char *sluice = getenv("SLUICE_BIN");
    if (!sluice || !*sluice)
        sluice = "bin/sluice";
    if (access(sluice, X_OK) == 0) {
        size_t ok = 0;
        for (size_t r = 0; r < CLI_RUNS && run_validate(sluice, dir, &t) == 0; r++, ok++) {
            wall[r] = t.wall_ms;
            cpu[r] = t.cpu_ms;
        }
        if (ok == CLI_RUNS) {
            summarize(wall, CLI_RUNS, &best, &median);
            summarize(cpu, CLI_RUNS, &unused, &cpu_med);
            row_ms("`sluice dag validate DIR` (process)", best, median, cpu_med, TARGET_FOLDER_MS);
        } else {
            printf("  %-40s failed (see above)\n", "`sluice dag validate DIR` (process)");
        }
    } else {
        printf("  %-40s skipped: no %s (make bin/sluice)\n", "`sluice dag validate DIR`", sluice);
    }
    rc = 0;
cleanup:
    remove_folder(dir);
    return rc;
}

/* 4. scaling of model bytes and time with the number of steps. Returns 0 or -1. */
static int bench_scaling(void)
{
    static const size_t sizes[] = {1000, 10000, 50000};
    char h1[32], h2[32];

    printf("\nscaling, full steps: model bytes should grow linearly with steps\n");
    printf("  %-8s %-11s %-11s %-12s %-9s %-11s %s\n", "steps", "input", "model", "model/input",
           "B/step", "best (ms)", "ms per 1k steps");
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        struct strbuf sb = STRBUF_INIT;
        size_t n = sizes[s], model = 0;
        double best, median, cpu;
        gen_big(&sb, n, false);
        int rc = parse_runs(&sb, n >= 50000 ? 3 : 5, &best, &median, &cpu, &model);
        if (rc == 0)
            printf("  %-8zu %-11s %-11s %-12.2f %-9.0f %-11.1f %.1f\n", n,
                   human_bytes(h1, sizeof(h1), (double)sb.len),
                   human_bytes(h2, sizeof(h2), (double)model), (double)model / (double)sb.len,
                   (double)model / (double)n, best, best / ((double)n / 1000.0));
        strbuf_release(&sb);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* A chain: step i depends on step i-1 and reads steps.s0.outputs.params.data. */
static void gen_chain(struct strbuf *sb, size_t n_steps)
{
    strbuf_addf(sb, "name: chain-%zu\nsteps:\n", n_steps);
    strbuf_addstr(sb, "  - name: s0\n    command: [extract]\n"
                      "    outputs: {params: {data: data.txt}}\n");
    for (size_t i = 1; i < n_steps; i++)
        strbuf_addf(sb,
                    "  - name: s%zu\n    depends_on: [s%zu]\n"
                    "    command: [run, --in, \"{{ steps.s0.outputs.params.data }}\"]\n",
                    i, i - 1);
}

/* 5. the chain case: time per step should not grow with the chain. Returns 0 or -1. */
static int bench_chain(void)
{
    static const size_t sizes[] = {10000, 40000};

    printf("\nchain, every step reading the first one: time should grow linearly\n");
    printf("  %-8s %-11s %-11s %s\n", "steps", "input", "best (ms)", "ms per 1k steps");
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        struct strbuf sb = STRBUF_INIT;
        double best, median, cpu;
        char h1[32];
        gen_chain(&sb, sizes[s]);
        int rc = parse_runs(&sb, 3, &best, &median, &cpu, NULL);
        if (rc == 0)
            printf("  %-8zu %-11s %-11.1f %.1f\n", sizes[s],
                   human_bytes(h1, sizeof(h1), (double)sb.len), best,
                   best / ((double)sizes[s] / 1000.0));
        strbuf_release(&sb);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* bench_dsl --write STEPS FILE | --write-lean STEPS FILE | --write-folder DIR:
 * writes the generated input, for profiling the parser on its own (see
 * bench/README.md). */
static int write_only(int argc, char **argv)
{
    int rc = -1;
    bool lean = argc == 4 && !strcmp(argv[1], "--write-lean");
    if (argc == 4 && (lean || !strcmp(argv[1], "--write"))) {
        char *end;
        unsigned long n = strtoul(argv[2], &end, 10);
        if (*end || n == 0)
            return 2;
        struct strbuf sb = STRBUF_INIT;
        gen_big(&sb, n, lean);
        rc = write_file(argv[3], &sb);
        if (rc == 0)
            printf("%s: %lu steps, %zu bytes\n", argv[3], n, sb.len);
        strbuf_release(&sb);
    } else if (argc == 3 && !strcmp(argv[1], "--write-folder")) {
        size_t bytes, steps;
        if (mkdir(argv[2], 0777) < 0 && errno != EEXIST)
            rc = -1;
        else
            rc = make_folder(argv[2], &bytes, &steps);
        if (rc == 0)
            printf("%s: %d files, %zu steps, %zu bytes\n", argv[2], FOLDER_FILES, steps, bytes);
    } else {
        return 2;
    }
    if (rc < 0)
        fprintf(stderr, "bench_dsl: cannot write '%s': %s\n", argv[argc - 1], strerror(errno));
    return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    double big_best = 0, folder_best = 0;

    if (argc > 1) {
        int rc = write_only(argc, argv);
        if (rc == 2)
            fprintf(stderr, "usage: bench_dsl [--write STEPS FILE | --write-lean STEPS FILE | "
                            "--write-folder DIR]\n");
        return rc;
    }
    printf("bench_dsl: the DAG language (dsl/), one thread; wall times best and median, "
           "CPU time median\n\n");
    if (bench_big(&big_best) < 0 || bench_folder(&folder_best) < 0 || bench_scaling() < 0 ||
        bench_chain() < 0)
        return 1;
    printf("\nsummary: 10k-step DAG %s (%.1f ms, target %.0f ms); 1,000 files %s (%.1f ms, "
           "target %.0f ms)\n",
           big_best < TARGET_BIG_MS ? "PASS" : "MISS", big_best, TARGET_BIG_MS,
           folder_best < TARGET_FOLDER_MS ? "PASS" : "MISS", folder_best, TARGET_FOLDER_MS);
    return 0;
}
