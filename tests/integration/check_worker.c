/*
 * tests/integration/check_worker.c - the worker daemon against a real Redis.
 *
 * The test plays the scheduler: it dispatches step messages with queue_dispatch() (specs
 * built by hand in build_spec()'s format), reads the worker's events with
 * queue_read_events() and checks the queue's state with queue_step_stats(). One Redis is
 * started for the whole case (unchecked fixture); each test uses a key prefix of its own
 * and a temporary directory for the log and work roots. Workers run in the test's
 * process (worker_start) except for the kill -9 test, which runs the sluice binary
 * ($SLUICE_BIN) as a child process and kills it.
 *
 * Waits are bounded polls with deadlines; what they wait for is then asserted.
 */
#include "worker/worker.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "queue/queue.h"
#include "tests/harness/harness.h"
#include "tests/testutil.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct harness_redis redis;

static void redis_setup(void)
{
    ck_assert_int_eq(harness_redis_start(&redis), 0);
}

static void redis_teardown(void)
{
    ck_assert_int_eq(harness_redis_stop(&redis), 0);
}

/* --- Per-test fixture: a temporary directory, a "scheduler" queue, the events seen --- */

static char tmpdir[64];
static char *url;
static const char *prefix;
static struct queue *sched;

struct seen {
    struct queue_event_msg **v;
    size_t n, alloc;
};
static struct seen seen;

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sluice-worker-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    url = xasprintf("unix://%s", redis.socket_path);
    memset(&seen, 0, sizeof(seen));
}

static void teardown(void)
{
    for (size_t i = 0; i < seen.n; i++)
        queue_event_msg_free(seen.v[i]);
    free(seen.v);
    queue_close(sched);
    sched = NULL;
    free(url);
    char *argv[] = {"/bin/rm", "-rf", tmpdir, NULL};
    test_run(argv, NULL, NULL);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static char *tmp(const char *rel)
{
    return xasprintf("%s/%s", tmpdir, rel);
}

/* Opens the scheduler's connection with the test's own key prefix. */
static void use_prefix(const char *p)
{
    prefix = p;
    struct queue_options qo = {.prefix = p, .command_timeout_ms = 5000};
    ck_assert_int_eq(queue_open(&sched, url, &qo), 0);
}

static struct worker_options options(enum worker_executor ex)
{
    static char logs[128], work[128];
    snprintf(logs, sizeof(logs), "%s/logs", tmpdir);
    snprintf(work, sizeof(work), "%s/work", tmpdir);
    struct worker_options o = {
        .redis_url = url,
        .key_prefix = prefix,
        .queue = "q",
        .id = "w1",
        .executor = ex,
        .log_root = logs,
        .work_root = work,
        .kill_grace_ms = 1000,
        .visibility_timeout_ms = 10000,
        .heartbeat_interval_ms = 500,
        .stop_grace_ms = 5000,
    };
    return o;
}

static struct worker *start(const struct worker_options *o)
{
    struct worker *w = NULL;
    int rc = worker_start(&w, o);
    ck_assert_msg(rc == 0, "worker_start: %s", sl_strerror(rc));
    return w;
}

/* Stops w and waits for it; returns how long that took. */
static int64_t stop(struct worker *w)
{
    int64_t t0 = mono_ms();
    worker_stop(w);
    ck_assert_int_eq(worker_join(w), 0);
    return mono_ms() - t0;
}

/* A spec as build_spec() renders it, running /bin/sh -c script. */
static cJSON *spec_sh(const char *attempt_id, const char *step, const char *script)
{
    cJSON *spec = cJSON_CreateObject();
    cJSON_AddStringToObject(spec, "attempt_id", attempt_id);
    cJSON_AddStringToObject(spec, "dag", "etl");
    cJSON_AddStringToObject(spec, "run_id", "r1");
    cJSON_AddStringToObject(spec, "step", step);
    cJSON_AddNumberToObject(spec, "map_index", -1);
    cJSON_AddNumberToObject(spec, "attempt", 1);
    cJSON *cmd = cJSON_AddArrayToObject(spec, "command");
    cJSON_AddItemToArray(cmd, cJSON_CreateString("/bin/sh"));
    cJSON_AddItemToArray(cmd, cJSON_CreateString("-c"));
    cJSON *args = cJSON_AddArrayToObject(spec, "args");
    cJSON_AddItemToArray(args, cJSON_CreateString(script));
    cJSON *env = cJSON_AddObjectToObject(spec, "env");
    cJSON_AddStringToObject(env, "SLUICE_STEP", step);
    cJSON_AddStringToObject(env, "SLUICE_ATTEMPT_ID", attempt_id);
    cJSON *res = cJSON_AddObjectToObject(spec, "resources");
    cJSON_AddNumberToObject(res, "cpu_millis", 0);
    cJSON_AddNumberToObject(res, "memory_bytes", 0);
    cJSON_AddNumberToObject(res, "gpu", 0);
    cJSON_AddStringToObject(spec, "queue", "q");
    cJSON_AddNumberToObject(spec, "timeout_ms", 0);
    cJSON *outs = cJSON_AddObjectToObject(spec, "outputs");
    cJSON_AddObjectToObject(outs, "params");
    cJSON_AddObjectToObject(outs, "artifacts");
    return spec;
}

static void spec_param(cJSON *spec, const char *name, const char *path)
{
    cJSON *p = cJSON_GetObjectItem(cJSON_GetObjectItem(spec, "outputs"), "params");
    cJSON_AddStringToObject(p, name, path);
}

static void spec_env(cJSON *spec, const char *name, const char *value)
{
    cJSON_AddStringToObject(cJSON_GetObjectItem(spec, "env"), name, value);
}

static void spec_gpu(cJSON *spec, int n)
{
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(spec, "resources"), "gpu", cJSON_CreateNumber(n));
}

/* Dispatches spec (taking it) for step of run r1 of DAG etl. */
static struct queue_id dispatch_map(const char *attempt_id, const char *step, int map_index,
                                    cJSON *spec)
{
    struct queue_step_msg m = {.attempt_id = (char *)attempt_id,
                               .dag_id = "etl",
                               .run_id = "r1",
                               .step = (char *)step,
                               .map_index = map_index,
                               .attempt = 1,
                               .spec = spec};
    struct queue_id id;
    int rc = queue_dispatch(&id, sched, "q", &m);
    ck_assert_msg(rc == 0, "dispatch %s: %s", attempt_id, sl_strerror(rc));
    cJSON_Delete(spec);
    return id;
}

static struct queue_id dispatch(const char *attempt_id, const char *step, cJSON *spec)
{
    return dispatch_map(attempt_id, step, -1, spec);
}

/* Reads whatever events came within block_ms into seen, acking them. Returns how many. */
static size_t poll_events(int block_ms)
{
    struct queue_batch b = QUEUE_BATCH_INIT;
    int rc = queue_read_events(&b, sched, "sched", QUEUE_READ_MAX, block_ms);
    ck_assert_msg(rc == 0, "read events: %s", sl_strerror(rc));
    struct queue_id *ids = xcalloc(b.n ? b.n : 1, sizeof(*ids));
    for (size_t i = 0; i < b.n; i++) {
        ids[i] = b.entries[i].id;
        ck_assert_msg(b.entries[i].event != NULL, "malformed event: %s", b.entries[i].error);
        XGROW(seen.v, seen.alloc, seen.n + 1);
        seen.v[seen.n++] = b.entries[i].event;
        b.entries[i].event = NULL;
    }
    if (b.n)
        ck_assert_int_eq(queue_ack_events(sched, ids, b.n), 0);
    size_t n = b.n;
    free(ids);
    queue_batch_release(&b);
    return n;
}

static const struct queue_event_msg *find_event(const char *attempt_id, enum queue_event_kind kind)
{
    for (size_t i = 0; i < seen.n; i++)
        if (!strcmp(seen.v[i]->attempt_id, attempt_id) && seen.v[i]->kind == kind)
            return seen.v[i];
    return NULL;
}

/* The final event of attempt_id, if any yet. */
static const struct queue_event_msg *find_final(const char *attempt_id)
{
    const struct queue_event_msg *e = find_event(attempt_id, QUEUE_EVENT_SUCCEEDED);
    return e ? e : find_event(attempt_id, QUEUE_EVENT_FAILED);
}

static size_t count_events(const char *attempt_id)
{
    size_t n = 0;
    for (size_t i = 0; i < seen.n; i++)
        n += !strcmp(seen.v[i]->attempt_id, attempt_id);
    return n;
}

/* Waits up to timeout_ms for an event of attempt_id: kind, or any final one if final. */
static const struct queue_event_msg *wait_event(const char *attempt_id, bool final,
                                                enum queue_event_kind kind, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        const struct queue_event_msg *e =
            final ? find_final(attempt_id) : find_event(attempt_id, kind);
        if (e || mono_ms() >= deadline)
            return e;
        poll_events(100);
    }
}

static const struct queue_event_msg *wait_final(const char *attempt_id, int timeout_ms)
{
    const struct queue_event_msg *e = wait_event(attempt_id, true, QUEUE_EVENT_FAILED, timeout_ms);
    ck_assert_msg(e != NULL, "no final event for %s within %d ms", attempt_id, timeout_ms);
    return e;
}

static const struct queue_event_msg *wait_running(const char *attempt_id, int timeout_ms)
{
    const struct queue_event_msg *e =
        wait_event(attempt_id, false, QUEUE_EVENT_RUNNING, timeout_ms);
    ck_assert_msg(e != NULL, "no running event for %s within %d ms", attempt_id, timeout_ms);
    return e;
}

static const char *output(const struct queue_event_msg *e, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(e->outputs, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static struct queue_stats stats(void)
{
    struct queue_stats st;
    ck_assert_int_eq(queue_step_stats(&st, sched, "q"), 0);
    return st;
}

/* Waits up to timeout_ms for the step queue to be empty (everything acked). */
static void wait_queue_empty(int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    struct queue_stats st = stats();
    while ((st.length || st.pending) && mono_ms() < deadline) {
        sleep_ms(20);
        st = stats();
    }
    ck_assert_msg(st.length == 0 && st.pending == 0, "queue holds %lld, %lld pending",
                  (long long)st.length, (long long)st.pending);
}

static bool file_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* The physical path of dir (what pwd prints). */
static char *physical(const char *dir)
{
    char old[4096], buf[4096];
    ck_assert_ptr_nonnull(getcwd(old, sizeof(old)));
    ck_assert_int_eq(chdir(dir), 0);
    ck_assert_ptr_nonnull(getcwd(buf, sizeof(buf)));
    ck_assert_int_eq(chdir(old), 0);
    return xstrdup(buf);
}

/* True once pid is gone (or a zombie), within timeout_ms. */
static bool pid_gone(int pid, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    do {
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return true;
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        FILE *f = fopen(path, "r");
        if (f) {
            char state = 0;
            int n = fscanf(f, "%*d (%*[^)]) %c", &state);
            fclose(f);
            if (n == 1 && state == 'Z')
                return true;
        }
        sleep_ms(10);
    } while (mono_ms() < deadline);
    return false;
}

/* Reads an integer the step wrote to path (waiting up to 5 s for it to appear). */
static int read_pid(const char *path)
{
    int64_t deadline = mono_ms() + 5000;
    while (!file_exists(path) && mono_ms() < deadline)
        sleep_ms(10);
    sleep_ms(20); /* written with one echo: let it finish */
    char *s = test_read_file(path, NULL);
    int pid = atoi(s);
    free(s);
    ck_assert_int_gt(pid, 1);
    return pid;
}

/* --- Tests ------------------------------------------------------------------------- */

START_TEST(test_noop_success)
{
    use_prefix("t_noop:");
    struct worker_options o = options(WORKER_EXEC_NOOP);
    struct worker *w = start(&o);
    ck_assert_str_eq(worker_id(w), "w1");
    char id[32];
    for (int i = 0; i < 50; i++) {
        snprintf(id, sizeof(id), "etl.r1.s.%d.1", i);
        dispatch_map(id, "s", i, spec_sh(id, "s", "exit 1")); /* never runs */
    }
    for (int i = 0; i < 50; i++) {
        snprintf(id, sizeof(id), "etl.r1.s.%d.1", i);
        const struct queue_event_msg *fin = wait_final(id, 5000);
        ck_assert_int_eq(fin->kind, QUEUE_EVENT_SUCCEEDED);
        ck_assert_str_eq(fin->worker_id, "w1");
        ck_assert_int_eq(fin->seq, 2);
        ck_assert(fin->has_exit_code && fin->exit_code == 0);
        ck_assert_ptr_null(fin->reason);
        ck_assert_ptr_null(fin->failure);
        ck_assert_ptr_null(fin->log_path); /* no file for noop */
        ck_assert(cJSON_IsObject(fin->outputs) && !fin->outputs->child);
        ck_assert_int_gt(fin->started_ms, 1700000000000LL);
        ck_assert_int_ge(fin->finished_ms, fin->started_ms);
        const struct queue_event_msg *run = find_event(id, QUEUE_EVENT_RUNNING);
        ck_assert_ptr_nonnull(run);
        ck_assert_int_eq(run->seq, 1);
        /* running came first on the stream */
        size_t ri = 0, fi = 0;
        for (size_t k = 0; k < seen.n; k++) {
            if (seen.v[k] == run)
                ri = k;
            if (seen.v[k] == fin)
                fi = k;
        }
        ck_assert_uint_lt(ri, fi);
        ck_assert_uint_eq(count_events(id), 2);
    }
    wait_queue_empty(5000); /* acked and deleted */

    /* It heartbeats with its info; a clean stop removes the record. */
    struct queue_workers ws;
    ck_assert_int_eq(queue_list_workers(&ws, sched), 0);
    ck_assert_uint_eq(ws.n, 1);
    ck_assert_str_eq(ws.items[0].id, "w1");
    ck_assert(ws.items[0].alive);
    ck_assert_str_eq(cJSON_GetObjectItem(ws.items[0].info, "executor")->valuestring, "noop");
    ck_assert_str_eq(cJSON_GetObjectItem(ws.items[0].info, "queue")->valuestring, "q");
    ck_assert_int_eq(cJSON_GetObjectItem(ws.items[0].info, "slots")->valueint, 1000);
    ck_assert_int_eq(cJSON_GetObjectItem(ws.items[0].info, "pid")->valueint, getpid());
    queue_workers_release(&ws);
    ck_assert_int_lt(stop(w), 3000);
    ck_assert_int_eq(queue_list_workers(&ws, sched), 0);
    ck_assert_uint_eq(ws.n, 0);
    queue_workers_release(&ws);
    /* noop wrote nothing */
    char *logs = tmp("logs/etl");
    ck_assert(!file_exists(logs));
    free(logs);
}
END_TEST

START_TEST(test_local_success_outputs)
{
    use_prefix("t_ok:");
    struct worker_options o = options(WORKER_EXEC_LOCAL);
    struct worker *w = start(&o);
    cJSON *spec = spec_sh("etl.r1.extract.-1.1", "extract",
                          "echo hello from $SLUICE_STEP; printf '12\\n' > rows; "
                          "printf '%s' \"$GREETING\" > greeting");
    spec_env(spec, "GREETING", "hi there");
    spec_param(spec, "rows", "rows");
    spec_param(spec, "greeting", "greeting");
    dispatch("etl.r1.extract.-1.1", "extract", spec);
    const struct queue_event_msg *run = wait_running("etl.r1.extract.-1.1", 5000);
    const struct queue_event_msg *fin = wait_final("etl.r1.extract.-1.1", 10000);
    ck_assert_int_eq(fin->kind, QUEUE_EVENT_SUCCEEDED);
    ck_assert(fin->has_exit_code && fin->exit_code == 0);
    ck_assert_ptr_null(fin->failure);
    ck_assert_str_eq(output(fin, "rows"), "12");
    ck_assert_str_eq(output(fin, "greeting"), "hi there");
    ck_assert_int_eq(cJSON_GetArraySize(fin->outputs), 2);
    ck_assert_int_ge(fin->started_ms, run->started_ms);
    ck_assert_int_ge(fin->finished_ms, fin->started_ms);

    /* The log: <log_root>/<dag>/<run>/<step>/<attempt>.log, named in both events. */
    char *log = tmp("logs/etl/r1/extract/1.log");
    ck_assert_str_eq(fin->log_path, log);
    ck_assert_str_eq(run->log_path, log);
    char *text = test_read_file(log, NULL);
    ck_assert_ptr_nonnull(strstr(text, "hello from extract\n"));
    ck_assert_ptr_nonnull(strstr(text, "=== sluice: attempt etl.r1.extract.-1.1 succeeded"));
    free(text);
    free(log);
    wait_queue_empty(5000);
    stop(w);
}
END_TEST

START_TEST(test_local_failures)
{
    use_prefix("t_fail:");
    struct worker_options o = options(WORKER_EXEC_LOCAL);
    struct worker *w = start(&o);
    dispatch("etl.r1.a.-1.1", "a", spec_sh("etl.r1.a.-1.1", "a", "echo partial > x; exit 3"));
    cJSON *bad = spec_sh("etl.r1.b.-1.1", "b", "true");
    cJSON_DeleteItemFromObject(bad, "command"); /* malformed: no command */
    dispatch("etl.r1.b.-1.1", "b", bad);
    cJSON *missing = spec_sh("etl.r1.c.-1.1", "c", "true");
    spec_param(missing, "out", "nothing-here");
    dispatch("etl.r1.c.-1.1", "c", missing);

    const struct queue_event_msg *a = wait_final("etl.r1.a.-1.1", 10000);
    ck_assert_int_eq(a->kind, QUEUE_EVENT_FAILED);
    ck_assert(a->has_exit_code);
    ck_assert_int_eq(a->exit_code, 3);
    ck_assert_str_eq(a->reason, "exit code 3");
    ck_assert_str_eq(a->failure, "step");

    const struct queue_event_msg *b = wait_final("etl.r1.b.-1.1", 10000);
    ck_assert_int_eq(b->kind, QUEUE_EVENT_FAILED);
    ck_assert(!b->has_exit_code);
    ck_assert_str_eq(b->failure, "error");
    ck_assert_ptr_nonnull(strstr(b->reason, "malformed spec"));

    const struct queue_event_msg *c = wait_final("etl.r1.c.-1.1", 10000);
    ck_assert_str_eq(c->failure, "step");
    ck_assert_str_eq(c->reason, "missing output param 'out' (nothing-here)");
    ck_assert(c->has_exit_code && c->exit_code == 0);
    wait_queue_empty(5000);
    stop(w);
}
END_TEST

START_TEST(test_dirs_and_expansion)
{
    use_prefix("t_dirs:");
    struct worker_options o = options(WORKER_EXEC_LOCAL);
    char *secrets = tmp("secrets");
    char *secret_dir = tmp("secrets/db");
    ck_assert_int_eq(mkdir(secrets, 0700), 0);
    ck_assert_int_eq(mkdir(secret_dir, 0700), 0);
    char *secret_file = tmp("secrets/db/password");
    FILE *f = fopen(secret_file, "w");
    fputs("s3cret", f);
    fclose(f);
    o.secrets_dir = secrets;
    struct worker *w = start(&o);

    /* The DAG's directory, with a file the step reads by a relative path. */
    char *dag_dir = tmp("dags");
    ck_assert_int_eq(mkdir(dag_dir, 0755), 0);
    char *data = tmp("dags/data.txt");
    f = fopen(data, "w");
    fputs("from the dag dir\n", f);
    fclose(f);

    cJSON *spec = spec_sh("etl.r1.train.2.1", "train",
                          "pwd > \"$SLUICE_RUN_DIR/pwd\"; cat data.txt > $0/copy; "
                          "printf '%s|%s|%s|%s' \"$1\" \"$2\" \"$OUT\" \"$PASS_REF\" > "
                          "\"$SLUICE_ATTEMPT_DIR/args\"");
    cJSON *args = cJSON_GetObjectItem(spec, "args");
    cJSON_AddItemToArray(args, cJSON_CreateString("$(SLUICE_ATTEMPT_DIR)"));
    cJSON_AddItemToArray(args, cJSON_CreateString("$$(SLUICE_RUN_DIR)"));
    cJSON_AddItemToArray(args, cJSON_CreateString("$(PASSWORD)-$(NOPE)"));
    cJSON *sec = cJSON_AddObjectToObject(cJSON_GetObjectItem(spec, "env"), "PASSWORD");
    cJSON_AddStringToObject(sec, "secret_name", "db");
    cJSON_AddStringToObject(sec, "secret_key", "password");
    spec_env(spec, "OUT", "$(SLUICE_RUN_DIR)/model.pkl");
    spec_env(spec, "PASS_REF", "[$(PASSWORD)]");
    cJSON_AddStringToObject(spec, "dag_dir", dag_dir);
    spec_param(spec, "pwd", "$(SLUICE_RUN_DIR)/pwd");
    spec_param(spec, "copy", "$(SLUICE_ATTEMPT_DIR)/copy");
    spec_param(spec, "args", "$(SLUICE_ATTEMPT_DIR)/args");
    dispatch_map("etl.r1.train.2.1", "train", 2, spec);

    const struct queue_event_msg *fin = wait_final("etl.r1.train.2.1", 10000);
    ck_assert_msg(fin->kind == QUEUE_EVENT_SUCCEEDED, "failed: %s", fin->reason);
    char *run_dir = tmp("work/etl/r1");
    char *attempt_dir = tmp("work/etl/r1/.attempts/train/2.1");
    char *phys = physical(dag_dir);
    ck_assert_str_eq(output(fin, "pwd"), phys); /* cwd: the DAG's directory */
    ck_assert_str_eq(output(fin, "copy"), "from the dag dir");
    /* $(VAR) expanded in args and env, $$ escaped, undefined left, secrets not in argv but
     * usable in env values */
    struct strbuf want = STRBUF_INIT;
    strbuf_addf(&want, "$(SLUICE_RUN_DIR)|$(PASSWORD)-$(NOPE)|%s/model.pkl|[s3cret]", run_dir);
    ck_assert_str_eq(output(fin, "args"), want.buf);
    strbuf_release(&want);
    /* a fanned-out step's log: <step>/<map_index>.<attempt>.log */
    char *log = tmp("logs/etl/r1/train/2.1.log");
    ck_assert_str_eq(fin->log_path, log);
    char *text = test_read_file(log, NULL);
    ck_assert_ptr_null(strstr(text, "s3cret")); /* the header shows argv: no secret in it */
    ck_assert_ptr_nonnull(strstr(text, attempt_dir));
    free(text);
    ck_assert(file_exists(attempt_dir));
    stop(w);
    free(log);
    free(phys);
    free(run_dir);
    free(attempt_dir);
    free(dag_dir);
    free(data);
    free(secrets);
    free(secret_dir);
    free(secret_file);
}
END_TEST

START_TEST(test_run_dir_shared)
{
    use_prefix("t_shared:");
    struct worker_options o = options(WORKER_EXEC_LOCAL);
    struct worker *w = start(&o);
    /* No dag_dir, no workdir: the attempt's own directory is the cwd. */
    dispatch("etl.r1.a.-1.1", "a",
             spec_sh("etl.r1.a.-1.1", "a",
                     "echo made-by-a > \"$SLUICE_RUN_DIR/shared\"; echo mine > local"));
    const struct queue_event_msg *a = wait_final("etl.r1.a.-1.1", 10000);
    ck_assert_int_eq(a->kind, QUEUE_EVENT_SUCCEEDED);
    cJSON *spec = spec_sh("etl.r1.b.-1.1", "b", "test ! -e local && pwd > where");
    spec_param(spec, "shared", "$(SLUICE_RUN_DIR)/shared");
    spec_param(spec, "where", "where");
    dispatch("etl.r1.b.-1.1", "b", spec);
    const struct queue_event_msg *b = wait_final("etl.r1.b.-1.1", 10000);
    ck_assert_msg(b->kind == QUEUE_EVENT_SUCCEEDED, "b failed: %s", b->reason);
    ck_assert_str_eq(output(b, "shared"), "made-by-a");
    char *b_dir = tmp("work/etl/r1/.attempts/b/1");
    char *phys = physical(b_dir);
    ck_assert_str_eq(output(b, "where"), phys);
    char *a_local = tmp("work/etl/r1/.attempts/a/1/local");
    ck_assert(file_exists(a_local));
    stop(w);
    free(a_local);
    free(phys);
    free(b_dir);
}
END_TEST

START_TEST(test_cancel_running)
{
    use_prefix("t_cancel:");
    struct worker_options o = options(WORKER_EXEC_LOCAL);
    struct worker *w = start(&o);
    dispatch("etl.r1.slow.-1.1", "slow",
             spec_sh("etl.r1.slow.-1.1", "slow",
                     "echo $$$$ > \"$SLUICE_ATTEMPT_DIR/pid\"; exec sleep 30"));
    wait_running("etl.r1.slow.-1.1", 5000);
    char *pidfile = tmp("work/etl/r1/.attempts/slow/1/pid");
    int pid = read_pid(pidfile);
    struct queue_cancel_msg c = {.run_id = "r1", .reason = "by the test", .time_ms = 1};
    ck_assert_int_eq(queue_publish_cancel(NULL, sched, &c), 0);
    int64_t t0 = mono_ms();
    const struct queue_event_msg *fin = wait_final("etl.r1.slow.-1.1", 5000);
    ck_assert_int_lt(mono_ms() - t0, 4000);
    ck_assert_int_eq(fin->kind, QUEUE_EVENT_FAILED);
    ck_assert_str_eq(fin->failure, "cancelled");
    ck_assert_str_eq(fin->reason, "cancelled");
    ck_assert(pid_gone(pid, 3000));
    wait_queue_empty(5000);

    /* A cancel for another run touches nothing; a later dispatch of the run (a retry)
     * is not hit by the old cancel. */
    dispatch("etl.r1.after.-1.1", "after", spec_sh("etl.r1.after.-1.1", "after", "true"));
    const struct queue_event_msg *after = wait_final("etl.r1.after.-1.1", 10000);
    ck_assert_int_eq(after->kind, QUEUE_EVENT_SUCCEEDED);
    stop(w);
    free(pidfile);
}
END_TEST

START_TEST(test_graceful_stop_hands_back)
{
    use_prefix("t_stop:");
    struct worker_options o = options(WORKER_EXEC_LOCAL);
    o.stop_grace_ms = 1500;
    struct worker *w = start(&o);
    dispatch("etl.r1.long.-1.1", "long",
             spec_sh("etl.r1.long.-1.1", "long",
                     "echo $$$$ > \"$SLUICE_ATTEMPT_DIR/pid\"; exec sleep 60"));
    dispatch("etl.r1.short.-1.1", "short",
             spec_sh("etl.r1.short.-1.1", "short", "sleep 0.5; echo done > out"));
    wait_running("etl.r1.long.-1.1", 5000);
    wait_running("etl.r1.short.-1.1", 5000);
    char *pidfile = tmp("work/etl/r1/.attempts/long/1/pid");
    int pid = read_pid(pidfile);

    int64_t took = stop(w); /* the grace period, then the hand-back */
    ck_assert_msg(took >= 1400 && took < 8000, "stop took %lld ms", (long long)took);
    ck_assert(pid_gone(pid, 3000));
    /* the short step finished within the grace period and was reported as usual */
    poll_events(200);
    const struct queue_event_msg *s = find_final("etl.r1.short.-1.1");
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(s->kind, QUEUE_EVENT_SUCCEEDED);
    /* the long one: no final event, message still pending, to be taken over */
    ck_assert_ptr_null(find_final("etl.r1.long.-1.1"));
    struct queue_stats st = stats();
    ck_assert_int_eq(st.length, 1);
    ck_assert_int_eq(st.pending, 1);

    /* A new worker takes it over once it has been idle past the visibility timeout. */
    o.id = "w2";
    o.visibility_timeout_ms = 500;
    struct worker_options o2 = o;
    struct worker *w2 = start(&o2);
    const struct queue_event_msg *taken = NULL;
    int64_t deadline = mono_ms() + 10000;
    while (!taken && mono_ms() < deadline) {
        poll_events(100);
        for (size_t i = 0; i < seen.n; i++)
            if (!strcmp(seen.v[i]->attempt_id, "etl.r1.long.-1.1") &&
                seen.v[i]->kind == QUEUE_EVENT_RUNNING && !strcmp(seen.v[i]->worker_id, "w2"))
                taken = seen.v[i];
    }
    ck_assert_msg(taken != NULL, "not taken over");
    /* cut it short: a second stop hands back at once */
    int64_t t0 = mono_ms();
    worker_stop(w2);
    worker_stop(w2);
    ck_assert_int_eq(worker_join(w2), 0);
    ck_assert_int_lt(mono_ms() - t0, 4000);
    ck_assert_ptr_null(find_final("etl.r1.long.-1.1"));
    free(pidfile);
}
END_TEST

START_TEST(test_lost_to_other)
{
    /* Another consumer took the message over (this worker looked dead): at its next
     * refresh the worker stops the step and reports nothing. */
    use_prefix("t_lost:");
    struct worker_options o = options(WORKER_EXEC_LOCAL);
    o.visibility_timeout_ms = 1500; /* refresh every 500 ms */
    struct worker *w = start(&o);
    dispatch(
        "etl.r1.l.-1.1", "l",
        spec_sh("etl.r1.l.-1.1", "l", "echo $$$$ > \"$SLUICE_ATTEMPT_DIR/pid\"; exec sleep 30"));
    wait_running("etl.r1.l.-1.1", 5000);
    char *pidfile = tmp("work/etl/r1/.attempts/l/1/pid");
    int pid = read_pid(pidfile);
    struct queue *other = NULL;
    struct queue_options qo = {.prefix = prefix};
    ck_assert_int_eq(queue_open(&other, url, &qo), 0);
    struct queue_batch b = QUEUE_BATCH_INIT;
    ck_assert_int_eq(queue_takeover(&b, other, "q", "w-other", 0, 10), 0);
    ck_assert_uint_eq(b.n, 1);
    struct queue_id id = b.entries[0].id;
    queue_batch_release(&b);
    bool gone = false;
    int64_t deadline = mono_ms() + 4000;
    while (!gone && mono_ms() < deadline) {
        /* w-other keeps it fresh, so w1 cannot take it back */
        ck_assert_int_eq(queue_refresh(NULL, other, "q", "w-other", &id, 1), 0);
        gone = pid_gone(pid, 200);
    }
    ck_assert_msg(gone, "the step was not stopped");
    poll_events(300);
    ck_assert_ptr_null(find_final("etl.r1.l.-1.1"));
    struct queue_stats st = stats();
    ck_assert_int_eq(st.pending, 1); /* w-other's now */
    ck_assert_int_lt(stop(w), 4000);
    queue_close(other);
    free(pidfile);
}
END_TEST

START_TEST(test_malformed_entry)
{
    use_prefix("t_junk:");
    struct worker_options o = options(WORKER_EXEC_NOOP);
    struct worker *w = start(&o);
    char *reply = NULL;
    ck_assert_int_eq(
        harness_redis_command(&reply, &redis, "XADD", "t_junk:q:q", "*", "m", "junk", NULL), 0);
    ck_assert_msg(reply[0] == '$', "XADD: %s", reply);
    free(reply);
    ck_assert_int_eq(
        harness_redis_command(&reply, &redis, "XADD", "t_junk:q:q", "*", "x", "no m field", NULL),
        0);
    free(reply);
    dispatch("etl.r1.ok.-1.1", "ok", spec_sh("etl.r1.ok.-1.1", "ok", "true"));
    const struct queue_event_msg *fin = wait_final("etl.r1.ok.-1.1", 5000);
    ck_assert_int_eq(fin->kind, QUEUE_EVENT_SUCCEEDED);
    wait_queue_empty(5000); /* the junk was acknowledged and deleted too */
    /* nothing was reported for the junk */
    poll_events(100);
    ck_assert_uint_eq(seen.n, 2);
    stop(w);
}
END_TEST

START_TEST(test_event_retry)
{
    /* Events cannot be published for a while (the events key holds a string: XADD fails
     * with WRONGTYPE): the final event waits in memory, the message is not acked, and both
     * happen once publishing works again. */
    use_prefix("t_retry:");
    char *reply = NULL;
    ck_assert_int_eq(harness_redis_command(&reply, &redis, "SET", "t_retry:events", "x", NULL), 0);
    free(reply);
    struct worker_options o = options(WORKER_EXEC_NOOP);
    struct worker *w = start(&o);
    dispatch("etl.r1.x.-1.1", "x", spec_sh("etl.r1.x.-1.1", "x", "true"));
    int64_t deadline = mono_ms() + 5000;
    while (stats().pending == 0 && mono_ms() < deadline)
        sleep_ms(20);
    sleep_ms(1000); /* a second of failing publishes */
    struct queue_stats st = stats();
    ck_assert_int_eq(st.length, 1);
    ck_assert_int_eq(st.pending, 1); /* read, run, not acked */
    ck_assert_int_eq(harness_redis_command(&reply, &redis, "DEL", "t_retry:events", NULL), 0);
    free(reply);
    const struct queue_event_msg *fin = wait_final("etl.r1.x.-1.1", 5000);
    ck_assert_int_eq(fin->kind, QUEUE_EVENT_SUCCEEDED);
    ck_assert_ptr_nonnull(find_event("etl.r1.x.-1.1", QUEUE_EVENT_RUNNING));
    wait_queue_empty(5000);
    stop(w);
}
END_TEST

START_TEST(test_kill9_takeover)
{
    /* The binary uses the default key prefix; no other test does. */
    use_prefix(QUEUE_DEFAULT_PREFIX);
    char *logs = tmp("logs"), *work = tmp("work");
    const char *bin = test_sluice_bin();
    fflush(NULL);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 2);
        execl(bin, bin, "worker", "--redis-url", url, "--queue", "q", "--id", "w-dead",
              "--executor", "local", "--log-root", logs, "--work-root", work,
              "--visibility-timeout", "60s", (char *)NULL);
        _exit(127);
    }
    dispatch("etl.r1.k.-1.1", "k",
             spec_sh("etl.r1.k.-1.1", "k",
                     "echo $$$$ >> \"$SLUICE_RUN_DIR/pids\"; sleep 3; echo $SLUICE_STEP > out"));
    const struct queue_event_msg *run = wait_running("etl.r1.k.-1.1", 15000);
    ck_assert_str_eq(run->worker_id, "w-dead");
    /* the running event goes out before the process starts: wait for the process */
    char *pids = tmp("work/etl/r1/pids");
    int orphan = read_pid(pids);
    ck_assert_int_eq(kill(child, SIGKILL), 0);
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFSIGNALED(status));
    /* the machine is "dead" too: its step's process group goes with it */
    kill(-orphan, SIGKILL);
    ck_assert(pid_gone(orphan, 3000));

    struct queue_stats st = stats();
    ck_assert_int_eq(st.pending, 1); /* left pending by the dead worker */

    struct worker_options o = options(WORKER_EXEC_LOCAL);
    o.id = "w2";
    o.visibility_timeout_ms = 1000;
    struct worker *w = start(&o);
    int64_t t0 = mono_ms();
    const struct queue_event_msg *fin = NULL;
    int64_t deadline = mono_ms() + 15000;
    while (!fin && mono_ms() < deadline) {
        poll_events(100);
        for (size_t i = 0; i < seen.n; i++)
            if (!strcmp(seen.v[i]->attempt_id, "etl.r1.k.-1.1") &&
                seen.v[i]->kind != QUEUE_EVENT_RUNNING)
                fin = seen.v[i];
    }
    ck_assert_msg(fin != NULL, "the step was not completed by the second worker");
    ck_assert_str_eq(fin->worker_id, "w2");
    ck_assert_int_eq(fin->kind, QUEUE_EVENT_SUCCEEDED);
    ck_assert_int_lt(mono_ms() - t0, 10000);
    wait_queue_empty(5000);
    stop(w);
    free(pids);
    free(logs);
    free(work);
}
END_TEST

START_TEST(test_gpu_limit)
{
    use_prefix("t_gpu:");
    struct worker_options o = options(WORKER_EXEC_LOCAL);
    static const int gpus[] = {3, 5};
    o.gpus = gpus;
    o.n_gpus = 2;
    struct worker *w = start(&o);

    cJSON *a =
        spec_sh("etl.r1.a.-1.1", "a", "printf '%s' \"$CUDA_VISIBLE_DEVICES\" > dev; sleep 0.5");
    spec_gpu(a, 2);
    spec_param(a, "dev", "dev");
    cJSON *b = spec_sh("etl.r1.b.-1.1", "b", "printf '%s' \"$CUDA_VISIBLE_DEVICES\" > dev");
    spec_gpu(b, 1);
    spec_param(b, "dev", "dev");
    cJSON *c = spec_sh("etl.r1.c.-1.1", "c", "true");
    spec_gpu(c, 3);
    cJSON *d = spec_sh("etl.r1.d.-1.1", "d", "printf '[%s]' \"$CUDA_VISIBLE_DEVICES\" > dev");
    spec_param(d, "dev", "dev");
    dispatch("etl.r1.a.-1.1", "a", a);
    wait_running("etl.r1.a.-1.1", 5000);
    dispatch("etl.r1.b.-1.1", "b", b);
    dispatch("etl.r1.c.-1.1", "c", c);
    dispatch("etl.r1.d.-1.1", "d", d);

    const struct queue_event_msg *fc = wait_final("etl.r1.c.-1.1", 5000);
    ck_assert_int_eq(fc->kind, QUEUE_EVENT_FAILED);
    ck_assert_str_eq(fc->failure, "error");
    ck_assert_str_eq(fc->reason, "needs 3 GPUs, this worker has 2");
    ck_assert_ptr_null(find_event("etl.r1.c.-1.1", QUEUE_EVENT_RUNNING));
    /* a step without GPUs does not wait for them */
    const struct queue_event_msg *fd = wait_final("etl.r1.d.-1.1", 5000);
    ck_assert_str_eq(output(fd, "dev"), "[]");

    const struct queue_event_msg *fa = wait_final("etl.r1.a.-1.1", 10000);
    ck_assert_int_eq(fa->kind, QUEUE_EVENT_SUCCEEDED);
    ck_assert_str_eq(output(fa, "dev"), "3,5");
    const struct queue_event_msg *fb = wait_final("etl.r1.b.-1.1", 10000);
    ck_assert_int_eq(fb->kind, QUEUE_EVENT_SUCCEEDED);
    ck_assert_str_eq(output(fb, "dev"), "3"); /* the lowest free one */
    /* b waited for a's GPUs: it started after a ended */
    const struct queue_event_msg *rb = find_event("etl.r1.b.-1.1", QUEUE_EVENT_RUNNING);
    ck_assert_ptr_nonnull(rb);
    ck_assert_int_ge(rb->started_ms, fa->finished_ms);
    stop(w);
}
END_TEST

/* Sets path's mtime to seconds_ago. */
static void age(const char *path, int seconds_ago)
{
    struct timespec t[2];
    clock_gettime(CLOCK_REALTIME, &t[0]);
    t[0].tv_sec -= seconds_ago;
    t[1] = t[0];
    ck_assert_int_eq(utimensat(AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW), 0);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* tmpdir + "/" + rel, in one of a few rotating static buffers. */
static const char *at(const char *rel)
{
    static char bufs[8][256];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof(bufs[0]), "%s/%s", tmpdir, rel);
    return b;
}

START_TEST(test_retention_sweep)
{
    use_prefix("t_sweep:");
    static const char *const dirs[] = {
        "work",       "work/etl",        "work/etl/old", "work/etl/old/sub", "work/etl/new",
        "work/other", "work/other/old2", "outside",      "outside/victim"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
        ck_assert_int_eq(mkdir(at(dirs[i]), 0755), 0);
    write_file(at("work/etl/old/sub/file"), "x");
    write_file(at("outside/sentinel"), "keep me");
    /* links planted in an old run directory and at the DAG level: never followed */
    ck_assert_int_eq(symlink(at("outside"), at("work/etl/old/link")), 0);
    ck_assert_int_eq(symlink(at("outside"), at("work/linked")), 0);
    age(at("outside/victim"), 30 * 24 * 3600);
    age(at("work/etl/old/sub"), 3 * 3600);
    age(at("work/etl/old"), 3 * 3600);
    age(at("work/other/old2"), 3 * 3600);

    struct worker_options o = options(WORKER_EXEC_LOCAL);
    o.retention_ms = 3600 * 1000;
    o.sweep_interval_ms = 100;
    struct worker *w = start(&o);
    int64_t deadline = mono_ms() + 5000;
    while ((file_exists(at("work/etl/old")) || file_exists(at("work/other"))) &&
           mono_ms() < deadline)
        sleep_ms(20);
    ck_assert_msg(!file_exists(at("work/etl/old")), "old run directory not removed");
    ck_assert_msg(!file_exists(at("work/other")), "emptied DAG directory not removed");
    ck_assert(file_exists(at("work/etl/new")));
    ck_assert(file_exists(at("outside/sentinel")));
    ck_assert(file_exists(at("outside/victim")));
    ck_assert(file_exists(at("work/linked")));

    /* The run directory of a running step is kept even when it looks old. */
    cJSON *spec = spec_sh("etl.r1.s.-1.1", "s",
                          "echo ok > \"$SLUICE_RUN_DIR/kept\"; "
                          "touch -d '3 hours ago' \"$SLUICE_RUN_DIR\"; sleep 0.6");
    spec_param(spec, "kept", "$(SLUICE_RUN_DIR)/kept");
    dispatch("etl.r1.s.-1.1", "s", spec);
    const struct queue_event_msg *fin = wait_final("etl.r1.s.-1.1", 10000);
    ck_assert_msg(fin->kind == QUEUE_EVENT_SUCCEEDED, "failed: %s", fin->reason);
    ck_assert_str_eq(output(fin, "kept"), "ok");
    /* once it is done, its directory goes at the next sweep */
    deadline = mono_ms() + 5000;
    while (file_exists(at("work/etl/r1")) && mono_ms() < deadline)
        sleep_ms(20);
    ck_assert(!file_exists(at("work/etl/r1")));
    stop(w);
}
END_TEST

START_TEST(test_noop_throughput)
{
    use_prefix("t_bench:");
    enum { N = 20000 };
    /* Dispatched before the worker starts, so the worker's rate is measured. */
    char id[48];
    cJSON *spec = cJSON_CreateObject();
    cJSON_AddStringToObject(spec, "image", "none");
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "etl.r1.s.%d.1", i);
        struct queue_step_msg m = {.attempt_id = id,
                                   .dag_id = "etl",
                                   .run_id = "r1",
                                   .step = "s",
                                   .map_index = i,
                                   .attempt = 1,
                                   .spec = spec};
        ck_assert_int_eq(queue_dispatch(NULL, sched, "q", &m), 0);
    }
    cJSON_Delete(spec);
    struct worker_options o = options(WORKER_EXEC_NOOP);
    int64_t t0 = mono_ms();
    struct worker *w = start(&o);
    size_t finals = 0;
    int64_t deadline = mono_ms() + 60000;
    while (finals < N && mono_ms() < deadline) {
        size_t before = seen.n;
        poll_events(100);
        for (size_t i = before; i < seen.n; i++)
            finals += seen.v[i]->kind == QUEUE_EVENT_SUCCEEDED;
    }
    int64_t ms = mono_ms() - t0;
    ck_assert_uint_eq(finals, N);
    double rate = N * 1000.0 / (double)(ms ? ms : 1);
    fprintf(stderr, "noop: %d steps in %lld ms: %.0f steps/s (this build)\n", N, (long long)ms,
            rate);
    /* a loose floor: sanitizers and a busy machine slow it down several times */
    ck_assert_msg(rate > 2000, "only %.0f noop steps/s", rate);
    wait_queue_empty(5000);
    stop(w);
}
END_TEST

START_TEST(test_queue_batches)
{
    /* The batch calls the worker's publisher uses (queue_publish_events, queue_ack_steps). */
    use_prefix("t_batch:");
    enum { N = 2500 }; /* three script calls */
    struct queue_event_msg *evs = xcalloc(N, sizeof(*evs));
    char(*ids)[32] = xcalloc(N, sizeof(*ids));
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "a-%d", i);
        evs[i].attempt_id = ids[i];
        evs[i].kind = i % 2 ? QUEUE_EVENT_SUCCEEDED : QUEUE_EVENT_RUNNING;
        evs[i].worker_id = "w";
        evs[i].seq = i;
        evs[i].time_ms = 1;
        evs[i].failure = i % 3 ? NULL : "transient";
    }
    /* one invalid event: nothing is sent, its index is reported */
    evs[1700].failure = "bogus";
    size_t bad = 0;
    ck_assert_int_eq(queue_publish_events(NULL, &bad, sched, evs, N), SL_EINVAL);
    ck_assert_uint_eq(bad, 1700);
    struct queue_stats st;
    ck_assert_int_eq(queue_event_stats(&st, sched), 0);
    ck_assert_int_eq(st.length, 0);
    evs[1700].failure = NULL;
    struct queue_id *out = xcalloc(N, sizeof(*out));
    ck_assert_int_eq(queue_publish_events(out, NULL, sched, evs, N), 0);
    for (int i = 1; i < N; i++)
        ck_assert_msg(strcmp(out[i - 1].s, out[i].s) != 0, "ids %d and %d equal", i - 1, i);
    /* all of them, in order */
    while (seen.n < N)
        ck_assert_uint_gt(poll_events(100), 0);
    for (int i = 0; i < N; i++) {
        ck_assert_str_eq(seen.v[i]->attempt_id, ids[i]);
        ck_assert_int_eq(seen.v[i]->seq, i);
        if (i % 3 == 0 && i != 1700)
            ck_assert_str_eq(seen.v[i]->failure, "transient");
        else
            ck_assert_ptr_null(seen.v[i]->failure);
    }
    free(out);
    free(ids);
    free(evs);

    /* Steps acknowledged in one call: entries and index records go. */
    struct queue_id sid[3];
    char name[16];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "s-%d", i);
        sid[i] = dispatch(name, "s", spec_sh(name, "s", "true"));
    }
    struct queue *wq = NULL;
    struct queue_options qo = {.prefix = prefix};
    ck_assert_int_eq(queue_open(&wq, url, &qo), 0);
    struct queue_batch b = QUEUE_BATCH_INIT;
    ck_assert_int_eq(queue_read_steps(&b, wq, "q", "w", 10, 0), 0);
    ck_assert_uint_eq(b.n, 3);
    queue_batch_release(&b);
    ck_assert_int_eq(queue_ack_steps(wq, "q", sid, 3), 0);
    ck_assert_int_eq(queue_ack_steps(wq, "q", sid, 3), 0); /* idempotent */
    st = stats();
    ck_assert_int_eq(st.length, 0);
    ck_assert_int_eq(st.pending, 0);
    bool has = true;
    ck_assert_int_eq(queue_has_message(&has, sched, "q", "s-1"), 0);
    ck_assert(!has);
    /* no group at all (Redis lost its data): nothing to ack, not an error */
    ck_assert_int_eq(queue_ack_steps(wq, "nosuch", sid, 3), 0);
    struct queue_id junk = {"x"};
    ck_assert_int_eq(queue_ack_steps(wq, "q", &junk, 1), SL_EINVAL);
    queue_close(wq);
}
END_TEST

START_TEST(test_start_errors)
{
    use_prefix("t_err:");
    struct worker *w = NULL;
    struct worker_options o = options(WORKER_EXEC_LOCAL);
    o.queue = "bad queue";
    ck_assert_int_eq(worker_start(&w, &o), SL_EINVAL);
    o = options(WORKER_EXEC_LOCAL);
    o.redis_url = NULL;
    ck_assert_int_eq(worker_start(&w, &o), SL_EINVAL);
    o = options(WORKER_EXEC_LOCAL);
    o.redis_url = "unix:///nonexistent/redis.sock";
    ck_assert_int_eq(worker_start(&w, &o), SL_ECONN);
    ck_assert_ptr_null(w);

    int *gpus = NULL;
    size_t n = 0;
    ck_assert_int_eq(worker_parse_gpus(&gpus, &n, "0,1,7"), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(gpus[2], 7);
    free(gpus);
    ck_assert_int_eq(worker_parse_gpus(&gpus, &n, ""), 0);
    ck_assert_uint_eq(n, 0);
    static const char *const bad[] = {"0,0", "a", "1,", ",1", "-1", "1,,2", "70000", " 1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(worker_parse_gpus(&gpus, &n, bad[i]) == SL_EINVAL, "'%s' accepted", bad[i]);
    enum worker_executor ex;
    ck_assert_int_eq(worker_executor_parse(&ex, "noop"), 0);
    ck_assert_int_eq(ex, WORKER_EXEC_NOOP);
    ck_assert_int_eq(worker_executor_parse(&ex, "kubernetes"), 0);
    ck_assert_int_eq(ex, WORKER_EXEC_KUBERNETES);
    ck_assert_int_eq(worker_executor_parse(&ex, "docker"), SL_EINVAL);
    o = options(WORKER_EXEC_KUBERNETES); /* without its settings */
    ck_assert_int_eq(worker_start(&w, &o), SL_EINVAL);
}
END_TEST

Suite *suite_integration_worker(void)
{
    Suite *s = suite_create("integration_worker");
    TCase *tc = tcase_create("redis");
    tcase_add_unchecked_fixture(tc, redis_setup, redis_teardown);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_noop_success);
    tcase_add_test(tc, test_local_success_outputs);
    tcase_add_test(tc, test_local_failures);
    tcase_add_test(tc, test_dirs_and_expansion);
    tcase_add_test(tc, test_run_dir_shared);
    tcase_add_test(tc, test_cancel_running);
    tcase_add_test(tc, test_graceful_stop_hands_back);
    tcase_add_test(tc, test_lost_to_other);
    tcase_add_test(tc, test_malformed_entry);
    tcase_add_test(tc, test_event_retry);
    tcase_add_test(tc, test_gpu_limit);
    tcase_add_test(tc, test_retention_sweep);
    tcase_add_test(tc, test_noop_throughput);
    tcase_add_test(tc, test_queue_batches);
    tcase_add_test(tc, test_start_errors);
    suite_add_tcase(s, tc);

    /* the sluice binary as a worker process, killed with SIGKILL */
    tc = tcase_create("kill9");
    tcase_add_unchecked_fixture(tc, redis_setup, redis_teardown);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_kill9_takeover);
    suite_add_tcase(s, tc);
    return s;
}
