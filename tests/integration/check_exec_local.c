/*
 * tests/integration/check_exec_local.c - the `local` executor with real processes on a
 * real libuv loop.
 *
 * Every test owns a loop and a temporary directory. It counts on_done calls (exactly one
 * per start) and ends with uv_run() returning and uv_loop_close() returning 0, which
 * proves every handle the executor opened was closed. Steps are /bin/sh -c scripts.
 */
#include "worker/exec_local.h"
#include "common/xalloc.h"
#include "tests/testutil.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* --- Fixture ------------------------------------------------------------------------- */

static uv_loop_t loop;
static char tmpdir[64];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sluice-exec-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    ck_assert_int_eq(uv_loop_init(&loop), 0);
}

static void teardown(void)
{
    char *argv[] = {"/bin/rm", "-rf", tmpdir, NULL};
    ck_assert_int_eq(test_run(argv, NULL, NULL), 0);
}

/* Runs the loop until nothing is left and closes it: every handle must be closed. */
static void finish_loop(void)
{
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}

/* --- Helpers ------------------------------------------------------------------------- */

struct done {
    int calls;
    int exit_code;
    int term_signal;
    enum exec_failure failure;
    char *reason;   /* copy, or NULL */
    char *attempt;  /* copy */
    cJSON *outputs; /* taken from the result */
    int64_t started_ms;
    int64_t finished_ms;
};

static void on_done(struct exec_local_result *r, void *data)
{
    struct done *d = data;
    d->calls++;
    d->exit_code = r->exit_code;
    d->term_signal = r->term_signal;
    d->failure = r->failure;
    d->reason = r->reason ? xstrdup(r->reason) : NULL;
    d->attempt = xstrdup(r->attempt_id);
    d->outputs = r->outputs;
    r->outputs = NULL;
    d->started_ms = r->started_ms;
    d->finished_ms = r->finished_ms;
    ck_assert((r->reason == NULL) == (r->failure == EXEC_FAIL_NONE));
}

static void done_release(struct done *d)
{
    free(d->reason);
    free(d->attempt);
    cJSON_Delete(d->outputs);
    memset(d, 0, sizeof(*d));
}

static const char *output(const struct done *d, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(d->outputs, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A spec running /bin/sh -c script, as build_spec() renders it. */
static cJSON *sh_spec(const char *attempt_id, const char *script)
{
    cJSON *spec = cJSON_CreateObject();
    cJSON_AddStringToObject(spec, "attempt_id", attempt_id);
    cJSON *cmd = cJSON_AddArrayToObject(spec, "command");
    cJSON_AddItemToArray(cmd, cJSON_CreateString("/bin/sh"));
    cJSON_AddItemToArray(cmd, cJSON_CreateString("-c"));
    cJSON *args = cJSON_AddArrayToObject(spec, "args");
    cJSON_AddItemToArray(args, cJSON_CreateString(script));
    cJSON_AddObjectToObject(spec, "env");
    cJSON_AddNumberToObject(spec, "timeout_ms", 0);
    cJSON_AddObjectToObject(cJSON_AddObjectToObject(spec, "outputs"), "params");
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

static char *tmp(const char *rel)
{
    return xasprintf("%s/%s", tmpdir, rel);
}

/* Options with a log under the tmpdir and the tmpdir as default workdir. */
static struct exec_local_options opts_for(char **log_path)
{
    *log_path = tmp("logs/attempt.log");
    struct exec_local_options o = {
        .log_path = *log_path,
        .default_workdir = tmpdir,
        .kill_grace_ms = 2000,
    };
    return o;
}

/* Starts one spec, runs the loop to the end, closes it. */
static void run_one(cJSON *spec, const struct exec_local_options *o, struct done *d)
{
    struct exec_local *e = NULL;
    ck_assert_int_eq(exec_local_start(&e, &loop, spec, o, on_done, d), 0);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(d->calls, 0); /* never from inside start */
    cJSON_Delete(spec);            /* not needed after start */
    finish_loop();
    ck_assert_int_eq(d->calls, 1);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* True if pid is gone (or a zombie waiting for init) within 3 s. */
static int pid_gone(int pid)
{
    for (int i = 0; i < 300; i++) {
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return 1;
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        FILE *f = fopen(path, "r");
        if (f) {
            char state = 0;
            int n = fscanf(f, "%*d (%*[^)]) %c", &state);
            fclose(f);
            if (n == 1 && state == 'Z')
                return 1;
        }
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* The physical path of dir (what pwd prints), in buf. */
static const char *physical(const char *dir, char *buf, size_t len)
{
    char old[4096];
    ck_assert_ptr_nonnull(getcwd(old, sizeof(old)));
    ck_assert_int_eq(chdir(dir), 0);
    ck_assert_ptr_nonnull(getcwd(buf, len));
    ck_assert_int_eq(chdir(old), 0);
    return buf;
}

static int read_pid(const char *rel)
{
    char *path = tmp(rel);
    char *s = test_read_file(path, NULL);
    int pid = (int)strtol(s, NULL, 10);
    free(s);
    free(path);
    ck_assert_int_gt(pid, 1);
    return pid;
}

/* --- Tests --------------------------------------------------------------------------- */

START_TEST(success_env_and_outputs)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    struct done d = {0};
    setenv("SLUICE_TEST_LEAK", "1", 1);
    cJSON *spec = sh_spec("r1.hello.-1.1",
                          "printf '%s\\n' \"$GREETING\" > greeting.txt; "
                          "printf '%s|%s' \"$SLUICE_STEP\" \"${SLUICE_TEST_LEAK-unset}\" > ids; "
                          "printf '%s' \"$PATH\" > path; printf 'two\\n\\n' > two");
    spec_env(spec, "GREETING", "hello world");
    spec_env(spec, "SLUICE_STEP", "hello");
    spec_param(spec, "greeting", "greeting.txt");
    spec_param(spec, "ids", "ids");
    spec_param(spec, "two", "./two");
    char *abs = tmp("path");
    spec_param(spec, "path", abs);
    int64_t before = mono_ms();
    run_one(spec, &o, &d);
    ck_assert_ptr_null(d.reason);
    ck_assert_int_eq(d.failure, EXEC_FAIL_NONE);
    ck_assert_int_eq(d.exit_code, 0);
    ck_assert_int_eq(d.term_signal, 0);
    ck_assert_str_eq(d.attempt, "r1.hello.-1.1");
    ck_assert_str_eq(output(&d, "greeting"), "hello world"); /* one newline trimmed */
    ck_assert_str_eq(output(&d, "ids"), "hello|unset");      /* worker env not leaked */
    ck_assert_str_eq(output(&d, "two"), "two\n");            /* only one */
    ck_assert_str_eq(output(&d, "path"), getenv("PATH"));    /* base env passed */
    ck_assert_int_eq(cJSON_GetArraySize(d.outputs), 4);
    ck_assert_int_gt(d.started_ms, 1700000000000LL);
    ck_assert_int_ge(d.finished_ms, d.started_ms);
    ck_assert_int_lt(mono_ms() - before, 2000);
    unsetenv("SLUICE_TEST_LEAK");
    done_release(&d);
    free(abs);
    free(log);
}
END_TEST

START_TEST(nonzero_exit)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    struct done d = {0};
    cJSON *spec = sh_spec("r.s.-1.1", "echo out > x; exit 3");
    spec_param(spec, "x", "x");
    run_one(spec, &o, &d);
    ck_assert_str_eq(d.reason, "exit code 3");
    ck_assert_int_eq(d.failure, EXEC_FAIL_STEP);
    ck_assert_int_eq(d.exit_code, 3);
    ck_assert_int_eq(cJSON_GetArraySize(d.outputs), 0); /* no outputs on failure */
    done_release(&d);
    free(log);
}
END_TEST

START_TEST(killed_by_signal)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    struct done d = {0};
    /* "$$" is an escaped "$" for the executor (Kubernetes' $(VAR) rule): "$$$$" is the
     * shell's "$$" */
    run_one(sh_spec("r.s.-1.1", "kill -USR1 $$$$"), &o, &d);
    ck_assert_int_eq(d.exit_code, -1);
    ck_assert_int_eq(d.term_signal, SIGUSR1);
    char *want = xasprintf("killed by signal %d", SIGUSR1);
    ck_assert_str_eq(d.reason, want);
    ck_assert_int_eq(d.failure, EXEC_FAIL_STEP);
    free(want);
    done_release(&d);
    free(log);
}
END_TEST

START_TEST(missing_binary)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    struct done d = {0};
    cJSON *spec = sh_spec("r.s.-1.1", "unused");
    cJSON_ReplaceItemInArray(cJSON_GetObjectItem(spec, "command"), 0,
                             cJSON_CreateString("/nonexistent/bin/tool"));
    run_one(spec, &o, &d);
    ck_assert_str_eq(d.reason, "cannot start: no such file or directory");
    ck_assert_int_eq(d.failure, EXEC_FAIL_STEP);
    ck_assert_int_eq(d.exit_code, -1);
    ck_assert_int_eq(d.started_ms, 0);
    char *text = test_read_file(log, NULL);
    ck_assert_ptr_nonnull(strstr(text, "failed (cannot start: no such file or directory)"));
    ck_assert_ptr_nonnull(strstr(text, "not started"));
    free(text);
    done_release(&d);
    free(log);
}
END_TEST

START_TEST(malformed_spec)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    struct done d = {0};
    cJSON *spec = sh_spec("r.s.-1.1", "true");
    cJSON_DeleteItemFromObject(spec, "command");
    run_one(spec, &o, &d);
    ck_assert_str_eq(d.reason, "malformed spec: 'command' must be a non-empty list of strings");
    ck_assert_int_eq(d.failure, EXEC_FAIL_ERROR);
    done_release(&d);
    free(log);
}
END_TEST

START_TEST(timeout_kills_process_group)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    struct done d = {0};
    cJSON *spec = sh_spec("r.s.-1.1", "sleep 30 & echo $! > bg.pid; echo $$$$ > sh.pid; sleep 30");
    cJSON_ReplaceItemInObject(spec, "timeout_ms", cJSON_CreateNumber(300));
    int64_t before = mono_ms();
    run_one(spec, &o, &d);
    int64_t took = mono_ms() - before;
    ck_assert_str_eq(d.reason, "timeout");
    ck_assert_int_eq(d.failure, EXEC_FAIL_STEP);
    ck_assert_int_eq(d.term_signal, SIGTERM);
    ck_assert_int_ge(took, 300);
    ck_assert_int_lt(took, 1500); /* TERM was enough: no grace period waited */
    ck_assert(pid_gone(read_pid("sh.pid")));
    ck_assert(pid_gone(read_pid("bg.pid")));
    char *text = test_read_file(log, NULL);
    ck_assert_ptr_nonnull(strstr(text, "failed (timeout): killed by signal 15"));
    free(text);
    done_release(&d);
    free(log);
}
END_TEST

START_TEST(timeout_escalates_to_sigkill)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    o.kill_grace_ms = 300;
    struct done d = {0};
    /* SIG_IGN is inherited: neither sh nor its sleeps die of TERM */
    cJSON *spec = sh_spec("r.s.-1.1", "trap '' TERM; sleep 30 & echo $! > bg.pid; "
                                      "while :; do sleep 0.05; done");
    cJSON_ReplaceItemInObject(spec, "timeout_ms", cJSON_CreateNumber(200));
    int64_t before = mono_ms();
    run_one(spec, &o, &d);
    int64_t took = mono_ms() - before;
    ck_assert_str_eq(d.reason, "timeout");
    ck_assert_int_eq(d.term_signal, SIGKILL);
    ck_assert_int_ge(took, 500);
    ck_assert_int_lt(took, 2500);
    ck_assert(pid_gone(read_pid("bg.pid")));
    done_release(&d);
    free(log);
}
END_TEST

static struct exec_local *to_cancel;

static void on_cancel_timer(uv_timer_t *t)
{
    exec_local_cancel(to_cancel);
    uv_close((uv_handle_t *)t, NULL);
}

START_TEST(cancel_running)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    struct done d = {0};
    cJSON *spec = sh_spec("r.s.-1.1", "sleep 30 & echo $! > bg.pid; sleep 30");
    uv_timer_t t;
    ck_assert_int_eq(exec_local_start(&to_cancel, &loop, spec, &o, on_done, &d), 0);
    cJSON_Delete(spec);
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, on_cancel_timer, 200, 0);
    int64_t before = mono_ms();
    finish_loop();
    ck_assert_int_eq(d.calls, 1);
    ck_assert_int_lt(mono_ms() - before, 1500);
    ck_assert_str_eq(d.reason, "cancelled");
    ck_assert_int_eq(d.failure, EXEC_FAIL_CANCELLED);
    ck_assert_int_eq(d.term_signal, SIGTERM);
    ck_assert(pid_gone(read_pid("bg.pid")));
    done_release(&d);
    free(log);
}
END_TEST

START_TEST(cancel_before_spawn)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    struct done d = {0};
    struct exec_local *e;
    cJSON *spec = sh_spec("r.s.-1.1", "touch ran");
    ck_assert_int_eq(exec_local_start(&e, &loop, spec, &o, on_done, &d), 0);
    cJSON_Delete(spec);
    exec_local_cancel(e);
    exec_local_cancel(e); /* idempotent */
    finish_loop();
    ck_assert_int_eq(d.calls, 1);
    ck_assert_str_eq(d.reason, "cancelled");
    ck_assert_int_eq(d.failure, EXEC_FAIL_CANCELLED);
    ck_assert_int_eq(d.started_ms, 0);
    char *ran = tmp("ran");
    ck_assert_int_ne(access(ran, F_OK), 0); /* never spawned */
    free(ran);
    done_release(&d);
    free(log);
}
END_TEST

START_TEST(missing_output)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    struct done d = {0};
    cJSON *spec = sh_spec("r.s.-1.1", "echo a > a");
    spec_param(spec, "a", "a");
    spec_param(spec, "x", "out/x.txt");
    run_one(spec, &o, &d);
    ck_assert_str_eq(d.reason, "missing output param 'x' (out/x.txt)");
    ck_assert_int_eq(d.failure, EXEC_FAIL_STEP);
    ck_assert_int_eq(d.exit_code, 0);
    ck_assert_int_eq(cJSON_GetArraySize(d.outputs), 0);
    done_release(&d);
    free(log);
}
END_TEST

START_TEST(oversized_output)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    struct done d = {0};
    cJSON *spec = sh_spec("r.s.-1.1", "head -c 70000 /dev/zero | tr '\\0' a > big");
    spec_param(spec, "big", "big");
    run_one(spec, &o, &d);
    ck_assert_str_eq(d.reason, "output param 'big' is larger than 64 KiB");
    ck_assert_int_eq(d.failure, EXEC_FAIL_STEP);
    done_release(&d);

    /* exactly 64 KiB plus the trimmed newline is fine; two of 40 KiB are not */
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    spec = sh_spec("r.s.-1.2", "head -c 65536 /dev/zero | tr '\\0' a > big; echo >> big");
    spec_param(spec, "big", "big");
    run_one(spec, &o, &d);
    ck_assert_ptr_null(d.reason);
    ck_assert_uint_eq(strlen(output(&d, "big")), 65536);
    done_release(&d);

    ck_assert_int_eq(uv_loop_init(&loop), 0);
    spec = sh_spec("r.s.-1.3", "head -c 40000 /dev/zero | tr '\\0' a > a; cp a b");
    spec_param(spec, "a", "a");
    spec_param(spec, "b", "b");
    run_one(spec, &o, &d);
    ck_assert_str_eq(d.reason, "output params are larger than 64 KiB in total (at 'b')");
    done_release(&d);
    free(log);
}
END_TEST

START_TEST(output_dotdot_refused)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    struct done d = {0};
    cJSON *spec = sh_spec("r.s.-1.1", "touch ran");
    spec_param(spec, "x", "a/../../etc/passwd");
    run_one(spec, &o, &d);
    ck_assert_str_eq(d.reason, "output param 'x' path 'a/../../etc/passwd' has a '..' component");
    ck_assert_int_eq(d.failure, EXEC_FAIL_STEP);
    char *ran = tmp("ran");
    ck_assert_int_ne(access(ran, F_OK), 0);
    free(ran);
    done_release(&d);
    free(log);
}
END_TEST

START_TEST(secret_from_secrets_dir)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    char *dir = tmp("secrets");
    char *sdir = tmp("secrets/db");
    char *file = tmp("secrets/db/password");
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    ck_assert_int_eq(mkdir(sdir, 0700), 0);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fputs("s3cr3t-value", f);
    fclose(f);
    o.secrets_dir = dir;

    struct done d = {0};
    cJSON *spec = sh_spec("r.s.-1.1", "printf '%s' \"$PW\" > pw");
    cJSON *sec = cJSON_AddObjectToObject(cJSON_GetObjectItem(spec, "env"), "PW");
    cJSON_AddStringToObject(sec, "secret_name", "db");
    cJSON_AddStringToObject(sec, "secret_key", "password");
    spec_param(spec, "pw", "pw");
    run_one(spec, &o, &d);
    ck_assert_ptr_null(d.reason);
    ck_assert_str_eq(output(&d, "pw"), "s3cr3t-value");
    char *text = test_read_file(log, NULL);
    ck_assert_ptr_null(strstr(text, "s3cr3t")); /* never in the log */
    free(text);
    done_release(&d);

    /* a missing key: an error, and the step never runs */
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    spec = sh_spec("r.s.-1.2", "touch ran");
    sec = cJSON_AddObjectToObject(cJSON_GetObjectItem(spec, "env"), "PW");
    cJSON_AddStringToObject(sec, "secret_name", "db");
    cJSON_AddStringToObject(sec, "secret_key", "nokey");
    run_one(spec, &o, &d);
    ck_assert_str_eq(d.reason, "secret 'db/nokey' for env 'PW' not found");
    ck_assert_int_eq(d.failure, EXEC_FAIL_ERROR);
    char *ran = tmp("ran");
    ck_assert_int_ne(access(ran, F_OK), 0);
    free(ran);
    done_release(&d);

    /* a secret name that would leave the secrets directory */
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    spec = sh_spec("r.s.-1.3", "true");
    sec = cJSON_AddObjectToObject(cJSON_GetObjectItem(spec, "env"), "PW");
    cJSON_AddStringToObject(sec, "secret_name", "..");
    cJSON_AddStringToObject(sec, "secret_key", "passwd");
    run_one(spec, &o, &d);
    ck_assert_str_eq(d.reason, "malformed spec: env 'PW' names a bad secret");
    done_release(&d);
    free(dir);
    free(sdir);
    free(file);
    free(log);
}
END_TEST

START_TEST(log_file_content)
{
    struct exec_local_options o = {.default_workdir = tmpdir};
    char *log = tmp("a/b/c/r.s.-1.1.log"); /* parents created */
    o.log_path = log;
    struct done d = {0};
    run_one(sh_spec("r.s.-1.1", "echo to-stdout; echo to-stderr >&2"), &o, &d);
    ck_assert_ptr_null(d.reason);
    /* a second attempt appends */
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    struct done d2 = {0};
    run_one(sh_spec("r.s.-1.2", "exit 4"), &o, &d2);
    char *text = test_read_file(log, NULL);
    const char *h = strstr(text, "=== sluice: attempt r.s.-1.1 started at ");
    ck_assert_ptr_nonnull(h);
    ck_assert_ptr_nonnull(strstr(h, ", argv [\"/bin/sh\", \"-c\", \"echo to-stdout; echo "
                                    "to-stderr >&2\"], cwd "));
    const char *out = strstr(h, "\nto-stdout\nto-stderr\n");
    ck_assert_ptr_nonnull(out);
    const char *t = strstr(out, "\n=== sluice: attempt r.s.-1.1 succeeded: exit code 0, duration ");
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_nonnull(strstr(t, " ms\n=== sluice: attempt r.s.-1.2 started at "));
    ck_assert_ptr_nonnull(
        strstr(t, "=== sluice: attempt r.s.-1.2 failed (exit code 4): exit code 4, duration "));
    free(text);
    done_release(&d);
    done_release(&d2);
    free(log);
}
END_TEST

START_TEST(cwd_default_and_workdir)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    struct done d = {0};
    cJSON *spec = sh_spec("r.s.-1.1", "pwd > where");
    spec_param(spec, "where", "where");
    run_one(spec, &o, &d);
    ck_assert_ptr_null(d.reason);
    char real[4096];
    ck_assert_str_eq(output(&d, "where"), physical(tmpdir, real, sizeof(real)));
    done_release(&d);

    /* spec.workdir wins, and relative output paths follow it */
    char *sub = tmp("sub");
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    spec = sh_spec("r.s.-1.2", "pwd > where");
    cJSON_AddStringToObject(spec, "workdir", sub);
    spec_param(spec, "where", "where");
    run_one(spec, &o, &d);
    ck_assert_ptr_null(d.reason);
    ck_assert_str_eq(output(&d, "where"), physical(sub, real, sizeof(real)));
    done_release(&d);

    /* a workdir that does not exist cannot start: the step's fault */
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    spec = sh_spec("r.s.-1.3", "true");
    cJSON_AddStringToObject(spec, "workdir", "/nonexistent/dir");
    run_one(spec, &o, &d);
    ck_assert_str_eq(d.reason, "cannot start: no such file or directory");
    ck_assert_int_eq(d.failure, EXEC_FAIL_STEP);
    done_release(&d);
    free(sub);
    free(log);
}
END_TEST

START_TEST(cuda_visible_devices)
{
    char *log;
    struct exec_local_options o = opts_for(&log);
    const int gpus[] = {1, 3};
    o.gpus = gpus;
    o.n_gpus = 2;
    struct done d = {0};
    cJSON *spec = sh_spec("r.s.-1.1", "printf '%s' \"${CUDA_VISIBLE_DEVICES-unset}\" > g");
    spec_env(spec, "CUDA_VISIBLE_DEVICES", "0,1,2,3"); /* the worker's assignment wins */
    spec_param(spec, "g", "g");
    run_one(spec, &o, &d);
    ck_assert_str_eq(output(&d, "g"), "1,3");
    done_release(&d);

    ck_assert_int_eq(uv_loop_init(&loop), 0);
    o.gpus = NULL;
    o.n_gpus = 0;
    spec = sh_spec("r.s.-1.2", "printf '%s' \"${CUDA_VISIBLE_DEVICES-unset}\" > g");
    spec_param(spec, "g", "g");
    run_one(spec, &o, &d);
    ck_assert_str_eq(output(&d, "g"), ""); /* set, and empty */
    done_release(&d);
    free(log);
}
END_TEST

#define N_CONCURRENT 8

START_TEST(concurrent_on_one_loop)
{
    struct done d[N_CONCURRENT] = {{0}};
    char *logs[N_CONCURRENT];
    struct exec_local *e[N_CONCURRENT];
    int64_t before = mono_ms();
    for (int i = 0; i < N_CONCURRENT; i++) {
        char id[32], script[128], rel[32];
        snprintf(id, sizeof(id), "r.fan.%d.1", i);
        snprintf(rel, sizeof(rel), "logs/%d.log", i);
        snprintf(script, sizeof(script), "sleep 0.3; echo item-$SLUICE_MAP_INDEX > out-%d", i);
        logs[i] = tmp(rel);
        struct exec_local_options o = {.log_path = logs[i], .default_workdir = tmpdir};
        cJSON *spec = sh_spec(id, script);
        char idx[16], path[32];
        snprintf(idx, sizeof(idx), "%d", i);
        snprintf(path, sizeof(path), "out-%d", i);
        spec_env(spec, "SLUICE_MAP_INDEX", idx);
        spec_param(spec, "v", path);
        if (i == N_CONCURRENT - 1)
            cJSON_ReplaceItemInObject(spec, "timeout_ms", cJSON_CreateNumber(100));
        ck_assert_int_eq(exec_local_start(&e[i], &loop, spec, &o, on_done, &d[i]), 0);
        cJSON_Delete(spec);
    }
    exec_local_cancel(e[N_CONCURRENT - 2]);
    finish_loop();
    ck_assert_int_lt(mono_ms() - before, 2000); /* in parallel, not 8 x 0.3 s */
    for (int i = 0; i < N_CONCURRENT; i++) {
        ck_assert_int_eq(d[i].calls, 1);
        if (i == N_CONCURRENT - 2) {
            ck_assert_str_eq(d[i].reason, "cancelled");
        } else if (i == N_CONCURRENT - 1) {
            ck_assert_str_eq(d[i].reason, "timeout");
        } else {
            char want[32];
            snprintf(want, sizeof(want), "item-%d", i);
            ck_assert_ptr_null(d[i].reason);
            ck_assert_str_eq(output(&d[i], "v"), want);
        }
        done_release(&d[i]);
        free(logs[i]);
    }
}
END_TEST

START_TEST(bad_arguments)
{
    struct exec_local *e = NULL;
    struct exec_local_options o = {0};
    cJSON *spec = sh_spec("r.s.-1.1", "true");
    ck_assert_int_eq(exec_local_start(&e, &loop, spec, &o, on_done, NULL), -1); /* no log */
    ck_assert_int_eq(exec_local_start(&e, &loop, NULL, &o, on_done, NULL), -1);
    ck_assert_ptr_null(e);
    ck_assert_str_eq(exec_failure_name(EXEC_FAIL_TRANSIENT), "transient");
    cJSON_Delete(spec);
    finish_loop();
}
END_TEST

Suite *suite_integration_exec_local(void)
{
    Suite *s = suite_create("integration_exec_local");
    TCase *tc = tcase_create("exec_local");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, success_env_and_outputs);
    tcase_add_test(tc, nonzero_exit);
    tcase_add_test(tc, killed_by_signal);
    tcase_add_test(tc, missing_binary);
    tcase_add_test(tc, malformed_spec);
    tcase_add_test(tc, timeout_kills_process_group);
    tcase_add_test(tc, timeout_escalates_to_sigkill);
    tcase_add_test(tc, cancel_running);
    tcase_add_test(tc, cancel_before_spawn);
    tcase_add_test(tc, missing_output);
    tcase_add_test(tc, oversized_output);
    tcase_add_test(tc, output_dotdot_refused);
    tcase_add_test(tc, secret_from_secrets_dir);
    tcase_add_test(tc, log_file_content);
    tcase_add_test(tc, cwd_default_and_workdir);
    tcase_add_test(tc, cuda_visible_devices);
    tcase_add_test(tc, concurrent_on_one_loop);
    tcase_add_test(tc, bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}
