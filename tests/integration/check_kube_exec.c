/*
 * tests/integration/check_kube_exec.c - the kubernetes executor against the API simulator
 * (tests/k8s/sim.py), on a real libuv loop: pods really run (as local processes), the
 * client really speaks HTTP, and every Pod created is validated by the simulator against
 * the official schema (an invalid one is refused with 422, which fails the test).
 *
 * Each test starts its own simulator (faults and behaviours are per test), a context, one
 * or more executors, counts on_done calls (exactly one per start), then closes the
 * context and checks that uv_loop_close() returns 0: every handle was closed.
 */
#include "worker/kube.h"
#include "worker/kube_int.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "tests/harness/harness.h"
#include "tests/harness/k8ssim.h"
#include "tests/testutil.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* --- fixture ---------------------------------------------------------------------------- */

static uv_loop_t loop;
static char tmpdir[64];
static char *work_dir, *log_dir, *kubeconfig;
static struct harness_k8ssim sim;
static struct kube_options kopts;
static struct kube_ctx *ctx;
static char *sluice_abs;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* A kubeconfig for the simulator: token auth, namespace "steps". */
static void write_kubeconfig(const char *server, const char *token)
{
    char *text = xasprintf("apiVersion: v1\nkind: Config\ncurrent-context: sim\n"
                           "clusters:\n- name: sim\n  cluster:\n    server: %s\n"
                           "users:\n- name: worker\n  user:\n    token: %s\n"
                           "contexts:\n- name: sim\n  context:\n    cluster: sim\n"
                           "    user: worker\n    namespace: steps\n",
                           server, token);
    write_file(kubeconfig, text);
    free(text);
}

static void start_sim(const struct harness_k8ssim_options *extra)
{
    char *claim = xasprintf("work=%s", work_dir);
    const char *claims[] = {claim};
    const char *nodes[] = {
        "{\"name\": \"cpu-1\"}",
        "{\"name\": \"gpu-1\", \"labels\": {\"nvidia.com/gpu.present\": \"true\"}, "
        "\"taints\": [{\"key\": \"nvidia.com/gpu\", \"effect\": \"NoSchedule\"}], \"gpus\": 2}",
    };
    struct harness_k8ssim_options o = {0};
    if (extra)
        o = *extra;
    o.claims = claims;
    o.n_claims = 1;
    o.nodes = nodes;
    o.n_nodes = 2;
    o.token = "t0ken";
    o.bookmark_seconds = 0.2;
    ck_assert_int_eq(harness_k8ssim_start(&sim, &o), 0);
    free(claim);
    write_kubeconfig(sim.url, "t0ken");
}

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sluice-kube-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    work_dir = xasprintf("%s/work", tmpdir);
    log_dir = xasprintf("%s/logs", tmpdir);
    kubeconfig = xasprintf("%s/kubeconfig", tmpdir);
    ck_assert_int_eq(mkdir(work_dir, 0755), 0);
    const char *bin = test_sluice_bin();
    char cwd[4096];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    sluice_abs = bin[0] == '/' ? xstrdup(bin) : xasprintf("%s/%s", cwd, bin);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    memset(&kopts, 0, sizeof(kopts));
    kopts.kubeconfig = kubeconfig;
    kopts.queue = "default";
    kopts.default_image = "python:3.11-slim";
    kopts.helper = KUBE_HELPER_INIT;
    kopts.sluice_image = "sluice:test";
    kopts.sluice_path = sluice_abs;
    kopts.work_claim = "work";
    kopts.work_mount = "/sluice/work";
    kopts.run_as_non_root = true;
    kopts.delete_grace_ms = 2000;
    ctx = NULL;
}

static void on_ctx_closed(void *data)
{
    *(int *)data += 1;
}

static void teardown(void)
{
    if (ctx) {
        int closed = 0;
        kube_ctx_close(ctx, on_ctx_closed, &closed);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(closed, 1);
        ctx = NULL;
    }
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    harness_k8ssim_stop(&sim);
    char *argv[] = {"/bin/rm", "-rf", tmpdir, NULL};
    test_run(argv, NULL, NULL);
    free(work_dir);
    free(log_dir);
    free(kubeconfig);
    free(sluice_abs);
}

static void new_ctx(void)
{
    ck_assert_int_eq(kube_ctx_new(&ctx, &loop, &kopts), 0);
}

/* --- running attempts ------------------------------------------------------------------- */

struct done {
    int calls;
    int exit_code;
    enum exec_failure failure;
    char *reason;
    cJSON *outputs;
};

static void on_done(struct exec_local_result *r, void *data)
{
    struct done *d = data;
    d->calls++;
    d->exit_code = r->exit_code;
    d->failure = r->failure;
    d->reason = r->reason ? xstrdup(r->reason) : NULL;
    d->outputs = r->outputs;
    r->outputs = NULL;
}

static void done_release(struct done *d)
{
    free(d->reason);
    cJSON_Delete(d->outputs);
}

/* A spec for attempt "<dag>.r1.<step>.-1.<attempt>" running /bin/sh -c script. */
static cJSON *spec_sh(const char *step, int attempt, const char *script)
{
    cJSON *s = cJSON_CreateObject();
    char *id = xasprintf("demo.r1.%s.-1.%d", step, attempt);
    cJSON_AddStringToObject(s, "attempt_id", id);
    free(id);
    cJSON_AddStringToObject(s, "dag", "demo");
    cJSON_AddStringToObject(s, "run_id", "r1");
    cJSON_AddStringToObject(s, "step", step);
    cJSON_AddNumberToObject(s, "map_index", -1);
    cJSON_AddNumberToObject(s, "attempt", attempt);
    cJSON *cmd = cJSON_AddArrayToObject(s, "command");
    cJSON_AddItemToArray(cmd, cJSON_CreateString("/bin/sh"));
    cJSON_AddItemToArray(cmd, cJSON_CreateString("-c"));
    cJSON_AddItemToArray(cmd, cJSON_CreateString(script));
    cJSON_AddStringToObject(s, "workdir", "$(SLUICE_ATTEMPT_DIR)");
    cJSON *env = cJSON_AddObjectToObject(s, "env");
    cJSON_AddStringToObject(env, "GREETING", "hello from $(SLUICE_RUN_DIR)");
    cJSON_AddNumberToObject(s, "timeout_ms", 60000);
    return s;
}

static char *log_path_of(const char *step, int attempt)
{
    return xasprintf("%s/demo/r1/%s/%d.log", log_dir, step, attempt);
}

/* Starts spec, runs the loop until its on_done. */
static struct kube_exec *start(struct done *d, const cJSON *spec)
{
    const char *step = cJSON_GetObjectItem(spec, "step")->valuestring;
    int attempt = (int)cJSON_GetObjectItem(spec, "attempt")->valuedouble;
    char *lp = log_path_of(step, attempt);
    struct kube_exec_options o = {.log_path = lp, .worker_id = "w1"};
    struct kube_exec *e = NULL;
    ck_assert_int_eq(kube_exec_start(&e, ctx, spec, &o, on_done, d), 0);
    free(lp);
    ck_assert_int_eq(d->calls, 0); /* never from inside start */
    return e;
}

static void run_until_done(struct done *d, int n)
{
    for (int i = 0; i < 6000 && d->calls < n; i++)
        uv_run(&loop, UV_RUN_ONCE);
    ck_assert_int_eq(d->calls, n);
}

static void run_one(struct done *d, cJSON *spec)
{
    start(d, spec);
    run_until_done(d, 1);
    cJSON_Delete(spec);
}

static char *read_log(const char *step, int attempt)
{
    char *p = log_path_of(step, attempt);
    char *text = test_read_file(p, NULL);
    free(p);
    return text;
}

/* --- tests ------------------------------------------------------------------------------- */

START_TEST(test_success_outputs_log_and_delete)
{
    start_sim(NULL);
    new_ctx();
    cJSON *spec = spec_sh("hello", 1, "echo \"$GREETING\"; pwd; echo 0.97 > acc.txt; echo err >&2");
    cJSON *params = cJSON_AddObjectToObject(cJSON_AddObjectToObject(spec, "outputs"), "params");
    cJSON_AddStringToObject(params, "accuracy", "acc.txt");
    struct done d = {0};
    run_one(&d, spec);
    ck_assert_msg(d.failure == EXEC_FAIL_NONE, "failed: %s", d.reason);
    ck_assert_int_eq(d.exit_code, 0);
    ck_assert_str_eq(cJSON_GetObjectItem(d.outputs, "accuracy")->valuestring, "0.97");
    char *log = read_log("hello", 1);
    ck_assert_msg(strstr(log, "hello from /sluice/work/demo/r1\n"), "%s", log);
    /* the work volume is the claim's host directory */
    char *pwd = xasprintf("%s/demo/r1/.attempts/hello/1\n", work_dir);
    ck_assert_msg(strstr(log, pwd), "%s", log);
    ck_assert_msg(strstr(log, "err\n"), "%s", log);
    ck_assert_msg(strstr(log, "=== kubernetes: pod \""), "%s", log);
    ck_assert_msg(strstr(log, "succeeded"), "%s", log);
    free(pwd);
    free(log);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "live_pods"), 0); /* deleted */
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "pods_created"), 1);
    done_release(&d);
}
END_TEST

START_TEST(test_exit_code_is_the_step_failure)
{
    start_sim(NULL);
    new_ctx();
    struct done d = {0};
    run_one(&d, spec_sh("fail", 1, "echo about to fail; exit 3"));
    ck_assert_int_eq(d.failure, EXEC_FAIL_STEP);
    ck_assert_int_eq(d.exit_code, 3);
    ck_assert_str_eq(d.reason, "exit code 3");
    ck_assert_int_eq(cJSON_GetArraySize(d.outputs), 0);
    char *log = read_log("fail", 1);
    ck_assert_msg(strstr(log, "about to fail\n"), "%s", log);
    ck_assert_msg(strstr(log, "terminated: Error, exit code 3"), "%s", log);
    free(log);
    done_release(&d);
}
END_TEST

/* Runs the loop until the attempt's log contains text (the step got that far). */
static void run_until_log(const char *step, int attempt, const char *text)
{
    char *p = log_path_of(step, attempt);
    bool found = false;
    for (int i = 0; i < 20000 && !found; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        struct strbuf sb = STRBUF_INIT;
        found = strbuf_read_file(&sb, p, 1 << 20) == 0 && strstr(sb.buf, text);
        strbuf_release(&sb);
        if (!found)
            nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    ck_assert_msg(found, "\"%s\" never appeared in %s", text, p);
    free(p);
}

static void post(const char *path, const char *body)
{
    ck_assert_int_eq(harness_k8ssim_post(&sim, path, body), 0);
}

static void expect(const struct done *d, enum exec_failure f, const char *reason_part)
{
    ck_assert_msg(d->failure == f, "failure %s (%s), want %s", exec_failure_name(d->failure),
                  d->reason ? d->reason : "-", exec_failure_name(f));
    if (reason_part)
        ck_assert_msg(d->reason && strstr(d->reason, reason_part), "reason \"%s\", want \"%s\"",
                      d->reason ? d->reason : "(none)", reason_part);
}

static void expect_log(const char *step, int attempt, const char *text)
{
    char *log = read_log(step, attempt);
    ck_assert_msg(strstr(log, text), "\"%s\" not in the log:\n%s", text, log);
    free(log);
}

/* 429 with Retry-After, then 503 with Retry-After, on create: retried, one pod. */
START_TEST(test_create_retried_on_429_and_503)
{
    start_sim(NULL);
    new_ctx();
    post("/_sim/faults", "[{\"match\": {\"method\": \"POST\"}, \"action\": \"status\", \"code\": "
                         "429, \"retry_after\": 1, \"count\": 1}, {\"match\": {\"method\": "
                         "\"POST\"}, \"action\": \"status\", \"code\": 503, \"retry_after\": 0, "
                         "\"count\": 1}]");
    struct done d = {0};
    run_one(&d, spec_sh("retry", 1, "echo ok"));
    expect(&d, EXEC_FAIL_NONE, NULL);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "create"), 3);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "pods_created"), 1);
    done_release(&d);
}
END_TEST

/* A 500 without Retry-After on create may hide an applied create: the executor looks
 * (GET: 404) and creates again; never blindly. */
START_TEST(test_create_500_is_checked_before_creating_again)
{
    start_sim(NULL);
    new_ctx();
    post("/_sim/faults", "{\"match\": {\"method\": \"POST\"}, \"action\": \"status\", \"code\": "
                         "500, \"count\": 1}");
    struct done d = {0};
    run_one(&d, spec_sh("five", 1, "echo ok"));
    expect(&d, EXEC_FAIL_NONE, NULL);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "create"), 2);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "get"), 1);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "pods_created"), 1);
    done_release(&d);
}
END_TEST

/* The connection drops after the create was applied: the executor finds its pod and
 * follows it (one pod); the repeated create would have said 409. */
START_TEST(test_connection_dropped_after_create_adopts)
{
    start_sim(NULL);
    new_ctx();
    post("/_sim/faults", "{\"match\": {\"method\": \"POST\"}, \"action\": \"drop_after_apply\", "
                         "\"count\": 1}");
    struct done d = {0};
    run_one(&d, spec_sh("dropped", 1, "echo ran once"));
    expect(&d, EXEC_FAIL_NONE, NULL);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "pods_created"), 1);
    expect_log("dropped", 1, "adopting the existing pod");
    done_release(&d);
}
END_TEST

/* POSTs pod to the simulator as another client would; it must be created (201). */
static void post_pod(const cJSON *pod)
{
    char *json = cJSON_PrintUnformatted(pod);
    int status = 0;
    ck_assert_int_eq(
        harness_k8ssim_request(&status, NULL, &sim, "POST", "/api/v1/namespaces/steps/pods", json),
        0);
    ck_assert_int_eq(status, 201);
    free(json);
}

/* The Pod of spec, created behind the executor's back (by a worker that died, say). The
 * caller deletes the returned Pod object. */
static cJSON *create_pod(const cJSON *spec)
{
    cJSON *pod = NULL;
    struct strbuf err = STRBUF_INIT;
    ck_assert_msg(kube_pod_build(&pod, spec, &kopts, &err) == 0, "%s", err.buf);
    strbuf_release(&err);
    post_pod(pod);
    return pod;
}

/* 409 on create: the pod is this attempt's (made by a worker that died): adopt it. A pod
 * of the same name that belongs to another attempt is an error. */
START_TEST(test_409_adopts_ours_and_refuses_a_foreign_pod)
{
    start_sim(NULL);
    new_ctx();
    cJSON *spec = spec_sh("adopt", 1, "echo from the first pod");
    cJSON *pod = create_pod(spec);
    struct done d = {0};
    run_one(&d, spec);
    expect(&d, EXEC_FAIL_NONE, NULL);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "pods_created"), 1);
    expect_log("adopt", 1, "adopting the existing pod");
    expect_log("adopt", 1, "from the first pod");
    done_release(&d);

    /* the same name, another attempt's annotation */
    cJSON *ann = cJSON_GetObjectItem(cJSON_GetObjectItem(pod, "metadata"), "annotations");
    cJSON_ReplaceItemInObject(ann, KUBE_ANNOTATION_ATTEMPT, cJSON_CreateString("someone.else"));
    post_pod(pod);
    struct done d2 = {0};
    run_one(&d2, spec_sh("adopt", 1, "echo never"));
    expect(&d2, EXEC_FAIL_ERROR, "pod name collision");
    done_release(&d2);
    cJSON_Delete(pod);
}
END_TEST

/* The log connection drops mid-stream, twice: every line arrives once, in order. */
START_TEST(test_log_resumes_without_gaps_or_duplicates)
{
    start_sim(NULL);
    new_ctx();
    post("/_sim/faults", "{\"match\": {\"path\": \"/log$\"}, \"action\": \"cut\", \"after_bytes\": "
                         "150, \"count\": 2}");
    struct done d = {0};
    run_one(&d, spec_sh("chatty", 1,
                        "i=1; while [ $i -le 40 ]; do echo line $i; i=$((i+1)); "
                        "[ $((i % 10)) = 0 ] && sleep 0.2; done; true"));
    expect(&d, EXEC_FAIL_NONE, NULL);
    ck_assert_int_ge(harness_k8ssim_stat(&sim, "log"), 3);
    char *log = read_log("chatty", 1);
    const char *p = log;
    for (int i = 1; i <= 40; i++) {
        char want[32];
        snprintf(want, sizeof(want), "\nline %d\n", i);
        const char *at = strstr(p, want);
        ck_assert_msg(at, "line %d missing or out of order:\n%s", i, log);
        ck_assert_msg(!strstr(at + 1, want), "line %d twice:\n%s", i, log);
        p = at + 1;
    }
    free(log);
    done_release(&d);
}
END_TEST

/* The watch drops mid-stream and later answers 410 Expired: the executor still sees its
 * pod finish (resume from the resourceVersion; a fresh list after 410). */
START_TEST(test_watch_drop_and_410_relist)
{
    start_sim(NULL);
    post("/_sim/faults", "[{\"match\": {\"watch\": true}, \"action\": \"cut\", \"after_events\": "
                         "1, \"count\": 2}, {\"match\": {\"watch\": true}, \"action\": \"expire\", "
                         "\"count\": 1}]");
    new_ctx();
    struct done d = {0};
    run_one(&d, spec_sh("watched", 1, "sleep 0.5; echo done"));
    expect(&d, EXEC_FAIL_NONE, NULL);
    ck_assert_int_ge(harness_k8ssim_stat(&sim, "list"), 2); /* the first, and after 410 */
    ck_assert_int_ge(harness_k8ssim_stat(&sim, "watch"), 4);
    done_release(&d);
}
END_TEST

/* Every open stream is cut and the watch history compacted while a pod runs: the resumed
 * watch gets 410 and lists again. */
START_TEST(test_streams_dropped_and_history_compacted)
{
    start_sim(NULL);
    new_ctx();
    cJSON *spec = spec_sh("compact", 1, "echo before; sleep 1; echo after");
    struct done d = {0};
    start(&d, spec);
    run_until_log("compact", 1, "before");
    post("/_sim/compact", "{}");
    post("/_sim/drop_streams", "{}");
    run_until_done(&d, 1);
    expect(&d, EXEC_FAIL_NONE, NULL);
    expect_log("compact", 1, "after\n");
    ck_assert_int_ge(harness_k8ssim_stat(&sim, "list"), 2);
    cJSON_Delete(spec);
    done_release(&d);
}
END_TEST

START_TEST(test_unschedulable_beyond_pending_timeout)
{
    start_sim(NULL);
    new_ctx();
    /* 4 GPUs: no node has them, so the simulator's scheduler says Unschedulable */
    cJSON *spec = spec_sh("greedy", 1, "echo never runs");
    cJSON *res = cJSON_AddObjectToObject(spec, "resources");
    cJSON_AddNumberToObject(res, "gpu", 4);
    cJSON_AddNumberToObject(spec, "pending_timeout_ms", 800);
    struct done d = {0};
    run_one(&d, spec);
    expect(&d, EXEC_FAIL_ERROR, "pending_timeout");
    expect_log("greedy", 1, "is unschedulable: 0/2 nodes are available");
    expect_log("greedy", 1, "Insufficient nvidia.com/gpu");
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "live_pods"), 0);
    done_release(&d);
}
END_TEST

START_TEST(test_stuck_pending_by_behaviour)
{
    start_sim(NULL);
    kopts.pending_timeout_ms = 700;
    new_ctx();
    post("/_sim/behaviours", "{\"selector\": \"sluice.io/step=stuck\", \"behaviour\": "
                             "\"unschedulable\", \"message\": \"0/2 nodes are available: 2 "
                             "node(s) had untolerated taint {dedicated: ml}.\"}");
    struct done d = {0};
    run_one(&d, spec_sh("stuck", 1, "echo never"));
    expect(&d, EXEC_FAIL_ERROR, "pending_timeout");
    expect_log("stuck", 1, "untolerated taint {dedicated: ml}");
    done_release(&d);
}
END_TEST

START_TEST(test_image_pull_backoff_fails_after_grace)
{
    start_sim(NULL);
    kopts.image_pull_grace_ms = 800;
    new_ctx();
    post("/_sim/behaviours", "{\"selector\": \"sluice.io/step=pull\", \"behaviour\": "
                             "\"image_pull_backoff\", \"period\": 0.2}");
    struct done d = {0};
    run_one(&d, spec_sh("pull", 1, "echo never"));
    expect(&d, EXEC_FAIL_ERROR, "ErrImagePull");
    expect_log("pull", 1, "waiting: ErrImagePull: failed to pull and unpack image");
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "live_pods"), 0);
    done_release(&d);
}
END_TEST

START_TEST(test_oomkilled_is_the_steps_failure)
{
    start_sim(NULL);
    new_ctx();
    post("/_sim/behaviours", "{\"selector\": \"sluice.io/step=hungry\", \"behaviour\": \"oom\", "
                             "\"after_seconds\": 0.3}");
    cJSON *spec = spec_sh("hungry", 1, "echo eating; sleep 10");
    cJSON *res = cJSON_AddObjectToObject(spec, "resources");
    cJSON_AddNumberToObject(res, "memory_bytes", 512.0 * 1024 * 1024);
    struct done d = {0};
    run_one(&d, spec);
    expect(&d, EXEC_FAIL_STEP, "OOMKilled (memory limit 512Mi)");
    ck_assert_int_eq(d.exit_code, 137);
    expect_log("hungry", 1, "terminated: OOMKilled, exit code 137");
    done_release(&d);
}
END_TEST

START_TEST(test_eviction_and_node_loss_are_transient)
{
    start_sim(NULL);
    new_ctx();
    post("/_sim/behaviours", "[{\"selector\": \"sluice.io/step=evicted\", \"behaviour\": "
                             "\"evict\", \"after_seconds\": 0.3}, {\"selector\": "
                             "\"sluice.io/step=lost\", \"behaviour\": \"node_lost\", "
                             "\"after_seconds\": 0.3}, {\"selector\": \"sluice.io/step=gone\", "
                             "\"behaviour\": \"delete\", \"after_seconds\": 0.3}]");
    struct done d1 = {0}, d2 = {0}, d3 = {0};
    cJSON *s1 = spec_sh("evicted", 1, "sleep 10"), *s2 = spec_sh("lost", 1, "sleep 10");
    cJSON *s3 = spec_sh("gone", 1, "sleep 10");
    start(&d1, s1);
    start(&d2, s2);
    start(&d3, s3);
    run_until_done(&d1, 1);
    run_until_done(&d2, 1);
    run_until_done(&d3, 1);
    expect(&d1, EXEC_FAIL_TRANSIENT, "evicted: The node was low on resource: memory");
    expect(&d2, EXEC_FAIL_TRANSIENT, NULL);
    ck_assert_msg(strstr(d2.reason, "node lost") || strstr(d2.reason, "deleted"), "%s", d2.reason);
    expect(&d3, EXEC_FAIL_TRANSIENT, "pod deleted before it finished");
    expect_log("evicted", 1, "failed: Evicted");
    expect_log("lost", 1, "NodeLost");
    expect_log("gone", 1, "was deleted");
    cJSON_Delete(s1);
    cJSON_Delete(s2);
    cJSON_Delete(s3);
    done_release(&d1);
    done_release(&d2);
    done_release(&d3);
}
END_TEST

START_TEST(test_deadline_exceeded_is_a_timeout)
{
    start_sim(NULL);
    new_ctx();
    cJSON *spec = spec_sh("slow", 1, "sleep 10");
    cJSON_ReplaceItemInObject(spec, "timeout_ms", cJSON_CreateNumber(1000));
    struct done d = {0};
    run_one(&d, spec);
    expect(&d, EXEC_FAIL_STEP, "DeadlineExceeded");
    expect_log("slow", 1, "failed: DeadlineExceeded");
    done_release(&d);
}
END_TEST

/* Cancel: the pod is deleted with the grace period; the step sees SIGTERM. */
START_TEST(test_cancel_deletes_with_grace)
{
    start_sim(NULL);
    new_ctx();
    cJSON *spec = spec_sh("cancelme", 1,
                          "trap 'echo got TERM; exit 143' TERM; echo waiting; "
                          "while true; do sleep 0.1; done");
    struct done d = {0};
    struct kube_exec *e = start(&d, spec);
    run_until_log("cancelme", 1, "waiting");
    kube_exec_cancel(e);
    run_until_done(&d, 1);
    expect(&d, EXEC_FAIL_CANCELLED, "cancelled");
    expect_log("cancelme", 1, "got TERM");
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "live_pods"), 0);
    cJSON_Delete(spec);
    done_release(&d);
}
END_TEST

/* Release (the worker hands the attempt back): the pod keeps running; the executor that
 * takes the attempt over adopts the same pod and reports its outcome. */
START_TEST(test_release_then_adopt_the_same_pod)
{
    start_sim(NULL);
    new_ctx();
    cJSON *spec = spec_sh("handover", 1,
                          "echo first half; sleep 1; echo second half; "
                          "echo 42 > answer");
    cJSON *params = cJSON_AddObjectToObject(cJSON_AddObjectToObject(spec, "outputs"), "params");
    cJSON_AddStringToObject(params, "answer", "answer");
    struct done d = {0};
    struct kube_exec *e = start(&d, spec);
    run_until_log("handover", 1, "first half");
    kube_exec_release(e);
    run_until_done(&d, 1);
    expect(&d, EXEC_FAIL_TRANSIENT, "released");
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "live_pods"), 1); /* still there */
    struct done d2 = {0};
    run_one(&d2, spec);
    expect(&d2, EXEC_FAIL_NONE, NULL);
    ck_assert_str_eq(cJSON_GetObjectItem(d2.outputs, "answer")->valuestring, "42");
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "pods_created"), 1);
    expect_log("handover", 1, "adopting the existing pod");
    expect_log("handover", 1, "second half");
    char *log = read_log("handover", 1);
    const char *first = strstr(log, "\nfirst half\n");
    ck_assert_msg(first && !strstr(first + 1, "\nfirst half\n"), "resumed with a duplicate:\n%s",
                  log);
    free(log);
    char *pos = xasprintf("%s/demo/r1/handover/1.log.pos", log_dir);
    ck_assert_int_ne(access(pos, F_OK), 0); /* gone with the reported outcome */
    free(pos);
    done_release(&d);
    done_release(&d2);
}
END_TEST

/* A secretKeyRef: missing, the container cannot start (CreateContainerConfigError: an
 * error after the grace); present, its value reaches the step. */
START_TEST(test_secret_env)
{
    start_sim(NULL);
    kopts.image_pull_grace_ms = 600;
    new_ctx();
    cJSON *spec = spec_sh("secret", 1, "echo \"token=$API_TOKEN\"");
    cJSON *sec = cJSON_AddObjectToObject(cJSON_GetObjectItem(spec, "env"), "API_TOKEN");
    cJSON_AddStringToObject(sec, "secret_name", "api");
    cJSON_AddStringToObject(sec, "secret_key", "token");
    struct done d = {0};
    start(&d, spec);
    run_until_done(&d, 1);
    expect(&d, EXEC_FAIL_ERROR, "CreateContainerConfigError");
    done_release(&d);
    post("/_sim/secrets", "{\"namespace\": \"steps\", \"name\": \"api\", \"data\": {\"token\": "
                          "\"s3cr3t\"}}");
    cJSON_ReplaceItemInObject(spec, "attempt", cJSON_CreateNumber(2));
    cJSON_ReplaceItemInObject(spec, "attempt_id", cJSON_CreateString("demo.r1.secret.-1.2"));
    struct done d2 = {0};
    run_one(&d2, spec);
    expect(&d2, EXEC_FAIL_NONE, NULL);
    expect_log("secret", 2, "token=s3cr3t");
    done_release(&d2);
}
END_TEST

/* Posts the Secret dags-git: the token, and the private CA of the https server. */
static void post_git_secret(const char *token, const char *ca_path)
{
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "namespace", "steps");
    cJSON_AddStringToObject(body, "name", "dags-git");
    cJSON *data = cJSON_AddObjectToObject(body, "data");
    cJSON_AddStringToObject(data, "password", token);
    char *ca = test_read_file(ca_path, NULL);
    cJSON_AddStringToObject(data, "ca.crt", ca);
    free(ca);
    char *text = cJSON_PrintUnformatted(body);
    post("/_sim/secrets", text);
    free(text);
    cJSON_Delete(body);
}

/*
 * An input from: git of a private repository (https, basic auth, a private CA): the
 * stage-in container fetches it with the Secret's token and CA, the step reads the file;
 * a wrong token fails the attempt as an error (no retry can help) with the reason, and
 * the token is in no log.
 */
START_TEST(test_git_input_fetched_with_the_secret)
{
    struct harness_git git;
    ck_assert_int_eq(harness_git_start(&git), 0);
    ck_assert_int_eq(harness_git_init_bare(&git, "code.git"), 0);
    char *wt = NULL, *sha = NULL;
    ck_assert_int_eq(harness_git_clone(&wt, &git, "code.git"), 0);
    ck_assert_int_eq(harness_git_write_file(wt, "hello.txt", "hello from the repository\n"), 0);
    ck_assert_int_eq(harness_git_commit(&sha, wt, "one"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    struct test_git_https h;
    test_git_https_start(&h, git.repos_dir, "sluice", "t0ken-for-git");
    start_sim(NULL);
    kopts.git_username = "sluice";
    kopts.git_credentials = "dags-git";
    kopts.git_credentials_keys = "password,,,ca.crt";
    new_ctx();
    post_git_secret("t0ken-for-git", h.ca);

    cJSON *spec = spec_sh("code", 1, "cat src/hello.txt");
    cJSON *repo = cJSON_AddObjectToObject(spec, "repo");
    char *url = xasprintf("%s/code.git", h.url_base);
    cJSON_AddStringToObject(repo, "url", url);
    cJSON_AddStringToObject(repo, "commit", sha);
    cJSON *in = cJSON_AddObjectToObject(
        cJSON_AddObjectToObject(cJSON_AddObjectToObject(spec, "inputs"), "artifacts"), "code");
    cJSON_AddStringToObject(in, "from", "git");
    cJSON_AddStringToObject(in, "path", "src");
    cJSON *again = cJSON_Duplicate(spec, true);
    struct done d = {0};
    run_one(&d, spec);
    expect(&d, EXEC_FAIL_NONE, NULL);
    expect_log("code", 1, "hello from the repository");
    done_release(&d);

    /* the Secret changed to a wrong token: refused, an error, the token nowhere */
    post_git_secret("wr0ng-t0ken", h.ca);
    cJSON_ReplaceItemInObject(again, "attempt", cJSON_CreateNumber(2));
    cJSON_ReplaceItemInObject(again, "attempt_id", cJSON_CreateString("demo.r1.code.-1.2"));
    struct done d2 = {0};
    run_one(&d2, again);
    expect(&d2, EXEC_FAIL_ERROR, "authentication failed");
    ck_assert_ptr_null(strstr(d2.reason, "wr0ng"));
    char *log = read_log("code", 2);
    ck_assert_ptr_null(strstr(log, "wr0ng"));
    ck_assert_ptr_null(strstr(log, "hello from the repository"));
    free(log);
    done_release(&d2);

    test_git_https_stop(&h);
    ck_assert_int_eq(harness_git_stop(&git), 0);
    free(url);
    free(sha);
    free(wt);
}
END_TEST

/* The GPU step: GPU limit, node selector and toleration put it on the GPU node. */
START_TEST(test_gpu_step_lands_on_the_gpu_node)
{
    start_sim(NULL);
    new_ctx();
    cJSON *spec = spec_sh("train", 1, "echo training");
    cJSON *res = cJSON_AddObjectToObject(spec, "resources");
    cJSON_AddNumberToObject(res, "gpu", 1);
    cJSON_AddNumberToObject(res, "cpu_millis", 4000);
    cJSON_AddNumberToObject(res, "memory_bytes", 16.0 * 1024 * 1024 * 1024);
    cJSON *sel = cJSON_AddObjectToObject(spec, "node_selector");
    cJSON_AddStringToObject(sel, "nvidia.com/gpu.present", "true");
    cJSON *tols = cJSON_AddArrayToObject(spec, "tolerations");
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "key", "nvidia.com/gpu");
    cJSON_AddStringToObject(t, "operator", "Exists");
    cJSON_AddStringToObject(t, "effect", "NoSchedule");
    cJSON_AddItemToArray(tols, t);
    struct done d = {0};
    run_one(&d, spec);
    expect(&d, EXEC_FAIL_NONE, NULL);
    expect_log("train", 1, "scheduled on node gpu-1");
    done_release(&d);
}
END_TEST

/* A cancel for a run whose worker died: its pods, followed by nobody, are deleted after the
 * grace period; the executor's own pods of other runs are not touched. */
START_TEST(test_cancel_deletes_orphan_pods_after_the_grace)
{
    start_sim(NULL);
    new_ctx();
    cJSON *spec = spec_sh("orphan", 1, "sleep 30");
    cJSON_ReplaceItemInObject(spec, "run_id", cJSON_CreateString("r9"));
    cJSON_ReplaceItemInObject(spec, "attempt_id", cJSON_CreateString("demo.r9.orphan.-1.1"));
    cJSON *pod = create_pod(spec);
    struct done d = {0};
    cJSON *mine = spec_sh("mine", 1, "sleep 12; echo mine survived");
    start(&d, mine);
    kube_ctx_cancel_orphans(ctx, "r9", NULL);
    run_until_done(&d, 1);
    expect(&d, EXEC_FAIL_NONE, NULL);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "live_pods"), 0);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "delete"), 2); /* the orphan, then mine */
    done_release(&d);
    cJSON_Delete(mine);
    cJSON_Delete(pod);
    cJSON_Delete(spec);
}
END_TEST

/* The shared fixtures' exact bodies (../shared/vectors/kubernetes/api-error-fixtures.json):
 * 429 and 503 with Retry-After are retried, a 500 without is checked before creating again,
 * and a watch that ends with the legacy 410 "Gone" ERROR event lists afresh. */
START_TEST(test_fixture_bodies)
{
    start_sim(NULL);
    post("/_sim/faults",
         "[{\"match\": {\"watch\": true}, \"action\": \"fixture_events\", \"names\": "
         "[\"bookmark\", \"error_gone_in_stream_legacy\"]}, "
         "{\"match\": {\"method\": \"POST\"}, \"action\": \"fixture\", \"name\": "
         "\"too_many_requests_with_retry_after\"}, "
         "{\"match\": {\"method\": \"POST\"}, \"action\": \"fixture\", \"name\": "
         "\"server_error_503_with_retry_after\"}, "
         "{\"match\": {\"method\": \"POST\"}, \"action\": \"fixture\", \"name\": "
         "\"server_error_500_without_retry_after\"}]");
    new_ctx();
    struct done d = {0};
    run_one(&d, spec_sh("fixtures", 1, "echo through the fixtures"));
    expect(&d, EXEC_FAIL_NONE, NULL);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "create"), 4); /* 429, 503, 500, 201 */
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "get"), 1);    /* after the 500: 404 */
    ck_assert_int_ge(harness_k8ssim_stat(&sim, "list"), 2);   /* after "Gone" */
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "pods_created"), 1);
    done_release(&d);
}
END_TEST

/* 403 exceeded quota (the fixture): no retry by the client, a transient failure of the
 * attempt (the engine's retry policy decides); the API's refusal of a Pod is an error. */
START_TEST(test_quota_is_transient_and_forbidden_is_an_error)
{
    start_sim(NULL);
    post("/_sim/faults", "[{\"match\": {\"method\": \"POST\"}, \"action\": \"fixture\", \"name\": "
                         "\"quota_exceeded_forbidden\"}, {\"match\": {\"method\": \"POST\"}, "
                         "\"action\": \"status\", \"code\": 403, \"reason\": \"Forbidden\", "
                         "\"message\": \"pods is forbidden: User cannot create resource\"}]");
    new_ctx();
    struct done d = {0}, d2 = {0};
    run_one(&d, spec_sh("quota", 1, "echo never"));
    expect(&d, EXEC_FAIL_TRANSIENT, "exceeded quota");
    run_one(&d2, spec_sh("quota", 2, "echo never"));
    expect(&d2, EXEC_FAIL_ERROR, "cannot create the pod: kubernetes API 403");
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "create"), 2);
    done_release(&d);
    done_release(&d2);
}
END_TEST

/* kubernetes.keep_failed: a failed pod stays (for kubectl describe); a succeeded one goes. */
START_TEST(test_failed_pods_kept_when_asked)
{
    start_sim(NULL);
    kopts.keep_failed_ms = 3600 * 1000;
    new_ctx();
    struct done d = {0}, d2 = {0};
    run_one(&d, spec_sh("kept", 1, "exit 2"));
    expect(&d, EXEC_FAIL_STEP, "exit code 2");
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "live_pods"), 1);
    run_one(&d2, spec_sh("gone", 1, "true"));
    expect(&d2, EXEC_FAIL_NONE, NULL);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "live_pods"), 1);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "delete"), 1);
    done_release(&d);
    done_release(&d2);
}
END_TEST

/* Garbage collection: a finished pod that no executor follows (its worker died after the
 * pod ended, and nobody adopted it) is deleted once it is old enough; a running one is
 * left alone. */
START_TEST(test_gc_deletes_finished_unfollowed_pods)
{
    start_sim(NULL);
    kopts.gc_interval_ms = 200;
    kopts.gc_min_age_ms = 300;
    new_ctx();
    const char *scripts[] = {"echo done early", "sleep 30"};
    const char *steps[] = {"ended", "running"};
    for (int i = 0; i < 2; i++) {
        cJSON *spec = spec_sh(steps[i], 1, scripts[i]);
        cJSON_Delete(create_pod(spec));
        cJSON_Delete(spec);
    }
    for (int i = 0; i < 20000 && harness_k8ssim_stat(&sim, "delete") < 1; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    }
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "delete"), 1);
    /* a few more passes: the running pod stays */
    for (int i = 0; i < 100; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "delete"), 1);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "live_pods"), 1);
}
END_TEST

/* A spec the builder refuses fails the attempt (error) without any API call; the reason is
 * in the step log too. */
START_TEST(test_bad_spec_fails_without_a_pod)
{
    start_sim(NULL);
    new_ctx();
    cJSON *spec = spec_sh("nocmd", 1, "x");
    cJSON_DeleteItemFromObject(spec, "command");
    struct done d = {0};
    run_one(&d, spec);
    expect(&d, EXEC_FAIL_ERROR, "the step has no command");
    expect_log("nocmd", 1, "the step has no command");
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "create"), 0);
    done_release(&d);
}
END_TEST

/* --- output artifacts: the stage-out sidecar ---------------------------------------------- */

/* An fs repository on the work volume (the claim's host directory has it at
 * <work_dir>/artifacts), so every pod with declared outputs gets the sidecar. */
static void fs_repository(void)
{
    char *root = xasprintf("%s/artifacts", work_dir);
    ck_assert_int_eq(mkdir(root, 0755), 0);
    free(root);
    kopts.artifacts_repository = "fs";
    kopts.artifacts_root = "/sluice/work/artifacts";
}

/* spec_sh with one declared output artifact 'model' at model.txt. */
static cJSON *spec_out(const char *step, int attempt, const char *script)
{
    cJSON *s = spec_sh(step, attempt, script);
    cJSON *arts = cJSON_AddObjectToObject(cJSON_AddObjectToObject(s, "outputs"), "artifacts");
    cJSON *m = cJSON_AddObjectToObject(arts, "model");
    cJSON_AddStringToObject(m, "path", "model.txt");
    char *key = xasprintf("demo/r1/%s/%d/model", step, attempt);
    cJSON_AddStringToObject(m, "key", key);
    free(key);
    return s;
}

/* How many times needle occurs in hay. */
static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* The sidecar stores the output after the step; its lines land in the step log once,
 * before the trailer; the pod is deleted. */
START_TEST(test_sidecar_stores_the_outputs_and_its_log_lands_once)
{
    fs_repository();
    start_sim(NULL);
    new_ctx();
    cJSON *spec = spec_out("store", 1, "echo training; echo weights > model.txt");
    cJSON *params = cJSON_AddObjectToObject(cJSON_GetObjectItem(spec, "outputs"), "params");
    cJSON_AddStringToObject(params, "where", "model.txt");
    struct done d = {0};
    run_one(&d, spec);
    expect(&d, EXEC_FAIL_NONE, NULL);
    ck_assert_str_eq(cJSON_GetObjectItem(d.outputs, "where")->valuestring, "weights");
    char *log = read_log("store", 1);
    /* fs:<root>: the simulator shows its host path for /sluice/work (tests/k8s/README.md) */
    const char *line = "/artifacts/demo/r1/store/1/model (";
    ck_assert_msg(count_of(log, line) == 1, "%s", log);
    ck_assert_msg(count_of(log, "output artifact 'model' (model.txt) stored as fs:") == 1, "%s",
                  log);
    const char *trailer = strstr(log, "=== sluice: attempt demo.r1.store.-1.1 succeeded");
    ck_assert_msg(trailer && strstr(log, line) < trailer, "%s", log);
    ck_assert_msg(strstr(log, "training\n") < strstr(log, line), "%s", log);
    free(log);
    char *stored = xasprintf("%s/artifacts/demo/r1/store/1/model", work_dir);
    char *text = test_read_file(stored, NULL);
    ck_assert_str_eq(text, "weights\n");
    free(text);
    free(stored);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "live_pods"), 0);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "create"), 1);
    ck_assert_int_ge(harness_k8ssim_stat(&sim, "log"), 2); /* main's stream, the sidecar's */
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "delete"), 1);
    done_release(&d);
}
END_TEST

/* A declared output the step did not write: the sidecar's reason, kind step. */
START_TEST(test_missing_output_is_the_steps_failure)
{
    fs_repository();
    start_sim(NULL);
    new_ctx();
    struct done d = {0};
    run_one(&d, spec_out("forgot", 1, "echo forgot to save"));
    expect(&d, EXEC_FAIL_STEP, NULL);
    ck_assert_str_eq(d.reason, "missing output artifact 'model' (model.txt)");
    ck_assert_int_eq(d.exit_code, 1);
    expect_log("forgot", 1, "container \"sluice-stage-out\" terminated: Error, exit code 1");
    expect_log("forgot", 1, "sluice pod stage-out: missing output artifact 'model'");
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "live_pods"), 0);
    done_release(&d);
}
END_TEST

/* The main container dies with its helper while the sidecar waits for a word that never
 * comes: the attempt ends at once with the main container's reason, and the pod goes
 * (long before the sidecar's own heartbeat limit would end it). */
static void main_dies(const char *behaviour, const char *step, const char *reason, bool keep_failed)
{
    fs_repository();
    start_sim(NULL);
    if (keep_failed)
        kopts.keep_failed_ms = 3600 * 1000;
    new_ctx();
    char *b = xasprintf("{\"selector\": \"sluice.io/step=%s\", \"behaviour\": \"%s\", "
                        "\"container\": \"main\", \"after_seconds\": 0.5}",
                        step, behaviour);
    post("/_sim/behaviours", b);
    free(b);
    cJSON *spec = spec_out(step, 1, "echo working; echo w > model.txt; sleep 30");
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(spec, "resources"), "memory_bytes",
                            512.0 * 1024 * 1024);
    struct done d = {0};
    uint64_t t0 = uv_hrtime();
    run_one(&d, spec);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    expect(&d, EXEC_FAIL_STEP, reason);
    ck_assert_int_eq(d.exit_code, 137);
    ck_assert_msg(secs < 30, "took %.1f s: waited for the sidecar", secs);
    char *log = read_log(step, 1);
    ck_assert_msg(!strstr(log, "stored as"), "stored after a failed step:\n%s", log);
    free(log);
    /* deleted, or kept failed as asked - the attempt finished either way */
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "live_pods"), keep_failed ? 1 : 0);
    char *pods = NULL;
    int status = 0;
    ck_assert_int_eq(harness_k8ssim_request(&status, &pods, &sim, "GET", "/_sim/pods", NULL), 0);
    if (keep_failed) /* the sidecar still waits in the kept pod: its own limit ends it */
        ck_assert_msg(strstr(pods, "\"phase\": \"Running\""), "%s", pods);
    free(pods);
    done_release(&d);
}

START_TEST(test_main_oomkilled_while_the_sidecar_waits)
{
    main_dies("oom", "hungry", "OOMKilled (memory limit 512Mi)", false);
    expect_log("hungry", 1, "container \"main\" terminated: OOMKilled, exit code 137");
}
END_TEST

START_TEST(test_main_killed_while_the_sidecar_waits)
{
    main_dies("kill", "killed", "exit code 137 (killed by signal 9)", false);
}
END_TEST

START_TEST(test_main_dies_and_the_failed_pod_is_kept)
{
    main_dies("oom", "kept", "OOMKilled", true);
}
END_TEST

/* A listening socket that never accepts: a connection to it waits for an answer. */
static int blackhole(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Cancel while the sidecar uploads (to an S3 endpoint that never answers): the pod is
 * deleted, both containers stop, the attempt is cancelled. */
START_TEST(test_cancel_during_stage_out_deletes_the_pod)
{
    int port = 0, hole = blackhole(&port);
    char *endpoint = xasprintf("http://127.0.0.1:%d", port);
    kopts.artifacts_repository = "s3";
    kopts.artifacts_endpoint = endpoint;
    kopts.artifacts_bucket = "art";
    kopts.artifacts_region = "us-east-1";
    kopts.artifacts_path_style = true;
    start_sim(NULL);
    new_ctx();
    cJSON *spec = spec_out("uploading", 1, "echo big > model.txt; echo step done");
    struct done d = {0};
    struct kube_exec *e = start(&d, spec);
    /* the step is over and the sidecar has connected to "S3": the upload is under way */
    bool connected = false;
    for (int i = 0; i < 20000 && !connected && d.calls == 0; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        struct pollfd pfd = {hole, POLLIN, 0};
        connected = poll(&pfd, 1, 1) > 0;
    }
    ck_assert_msg(connected, "the sidecar never connected (done: %d, %s)", d.calls,
                  d.reason ? d.reason : "-");
    run_until_log("uploading", 1, "step done");
    ck_assert_int_eq(d.calls, 0);
    kube_exec_cancel(e);
    run_until_done(&d, 1);
    expect(&d, EXEC_FAIL_CANCELLED, "cancelled");
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "live_pods"), 0);
    ck_assert_int_eq(harness_k8ssim_stat(&sim, "delete"), 1);
    expect_log("uploading", 1, "cancelled: deleting pod");
    close(hole);
    free(endpoint);
    cJSON_Delete(spec);
    done_release(&d);
}
END_TEST

/* Adoption: a worker that hands the attempt back mid-step and the one that adopts the pod
 * write the sidecar's lines once between them; the position file says when an earlier
 * worker already wrote them. */
START_TEST(test_sidecar_log_once_across_adoption)
{
    fs_repository();
    start_sim(NULL);
    new_ctx();
    cJSON *spec = spec_out("handover", 1, "echo first half; sleep 1; echo m > model.txt");
    struct done d = {0};
    struct kube_exec *e = start(&d, spec);
    run_until_log("handover", 1, "first half");
    kube_exec_release(e);
    run_until_done(&d, 1);
    struct done d2 = {0};
    run_one(&d2, spec);
    expect(&d2, EXEC_FAIL_NONE, NULL);
    char *log = read_log("handover", 1);
    ck_assert_msg(count_of(log, "adopting the existing pod") == 1, "%s", log);
    ck_assert_msg(count_of(log, "output artifact 'model' (model.txt) stored as") == 1, "%s", log);
    free(log);
    done_release(&d);
    done_release(&d2);

    /* a pod that ended while nobody followed it, whose log an earlier worker wrote up to
     * the sidecar's lines (the position file's third number): not written again */
    cJSON *spec2 = spec_out("handover", 2, "echo second pod; echo m > model.txt");
    cJSON *pod = create_pod(spec2);
    int status = 0;
    char *get =
        xasprintf("/api/v1/namespaces/steps/pods/%s",
                  cJSON_GetObjectItem(cJSON_GetObjectItem(pod, "metadata"), "name")->valuestring);
    bool ended = false;
    for (int i = 0; i < 2000 && !ended; i++) {
        char *body = NULL;
        ck_assert_int_eq(harness_k8ssim_request(&status, &body, &sim, "GET", get, NULL), 0);
        ended = strstr(body, "\"phase\": \"Succeeded\"") != NULL;
        free(body);
        if (!ended)
            nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    ck_assert(ended);
    char *lp = log_path_of("handover", 2), *pos = xasprintf("%s.pos", lp);
    char *dirp = xasprintf("%s/demo/r1/handover", log_dir);
    char *mk[] = {"/bin/mkdir", "-p", dirp, NULL};
    ck_assert_int_eq(test_run(mk, NULL, NULL), 0);
    write_file(pos, "00000000000000000000 00000000000000000000 1\n");
    struct done d3 = {0};
    run_one(&d3, spec2);
    expect(&d3, EXEC_FAIL_NONE, NULL);
    log = read_log("handover", 2);
    ck_assert_msg(strstr(log, "second pod\n") && !strstr(log, "stored as"), "%s", log);
    free(log);
    /* gone with the reported outcome (closed on the threadpool after on_done) */
    for (int i = 0; i < 5000 && access(pos, F_OK) == 0; i++)
        uv_run(&loop, UV_RUN_ONCE);
    ck_assert_int_ne(access(pos, F_OK), 0);
    done_release(&d3);
    free(dirp);
    free(pos);
    free(lp);
    free(get);
    cJSON_Delete(pod);
}
END_TEST

/* --- credentials and the client ----------------------------------------------------------- */

static char *base64_of_file(const char *path)
{
    char *argv[] = {"/usr/bin/openssl", "base64", "-A", "-in", (char *)path, NULL};
    char *out = NULL;
    ck_assert_int_eq(test_run(argv, &out, NULL), 0);
    return out;
}

static void tls_sim(bool client_certs)
{
    struct harness_k8ssim_options o = {.tls = true, .client_certs = client_certs};
    start_sim(&o);
}

/* TLS: the CA inline (certificate-authority-data) and a client certificate instead of a
 * token. */
START_TEST(test_tls_ca_data_and_client_certificate)
{
    tls_sim(true);
    char *ca = base64_of_file(sim.ca_path);
    char *text = xasprintf("apiVersion: v1\ncurrent-context: c\nclusters:\n- name: s\n  cluster:\n"
                           "    server: %s\n    certificate-authority-data: %s\nusers:\n"
                           "- name: u\n  user:\n    client-certificate: %s\n    client-key: %s\n"
                           "contexts:\n- name: c\n  context: {cluster: s, user: u, namespace: "
                           "steps}\n",
                           sim.url, ca, sim.client_cert_path, sim.client_key_path);
    write_file(kubeconfig, text);
    new_ctx();
    struct done d = {0};
    run_one(&d, spec_sh("tls", 1, "echo over tls"));
    expect(&d, EXEC_FAIL_NONE, NULL);
    expect_log("tls", 1, "over tls");
    done_release(&d);
    free(text);
    free(ca);
}
END_TEST

/* A server whose certificate cannot be verified is refused - unless the kubeconfig says
 * insecure-skip-tls-verify. */
START_TEST(test_unverified_server_refused_unless_insecure)
{
    tls_sim(false);
    kopts.max_retries = 1;
    new_ctx();
    struct done d = {0};
    run_one(&d, spec_sh("untrusted", 1, "echo never"));
    expect(&d, EXEC_FAIL_TRANSIENT, "unreachable");
    done_release(&d);
    int closed = 0;
    kube_ctx_close(ctx, on_ctx_closed, &closed);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ctx = NULL;
    char *text = xasprintf("apiVersion: v1\ncurrent-context: c\nclusters:\n- name: s\n  cluster:\n"
                           "    server: %s\n    insecure-skip-tls-verify: true\nusers:\n"
                           "- name: u\n  user: {token: t0ken}\ncontexts:\n- name: c\n"
                           "  context: {cluster: s, user: u, namespace: steps}\n",
                           sim.url);
    write_file(kubeconfig, text);
    free(text);
    new_ctx();
    struct done d2 = {0};
    run_one(&d2, spec_sh("untrusted", 2, "echo insecure but asked for"));
    expect(&d2, EXEC_FAIL_NONE, NULL);
    done_release(&d2);
}
END_TEST

/* In-cluster: KUBERNETES_SERVICE_HOST/PORT, the service account's token, CA and namespace;
 * the token file is rotated after the client read it: a 401 makes it read the new one. */
START_TEST(test_in_cluster_with_a_rotated_token)
{
    tls_sim(false);
    char *sa = xasprintf("%s/sa", tmpdir);
    ck_assert_int_eq(mkdir(sa, 0755), 0);
    char *tok = xasprintf("%s/token", sa), *ca = xasprintf("%s/ca.crt", sa);
    char *ns = xasprintf("%s/namespace", sa);
    write_file(tok, "expired-token\n");
    write_file(ns, "steps\n");
    char *cp = xasprintf("cp '%s' '%s'", sim.ca_path, ca);
    char *argv[] = {"/bin/sh", "-c", cp, NULL};
    ck_assert_int_eq(test_run(argv, NULL, NULL), 0);
    char port[16];
    snprintf(port, sizeof(port), "%d", sim.port);
    setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", port, 1);
    kopts.kubeconfig = NULL;
    kopts.sa_dir = sa;
    new_ctx();
    write_file(tok, "t0ken\n"); /* the kubelet rotated it */
    struct done d = {0};
    run_one(&d, spec_sh("incluster", 1, "echo in cluster"));
    expect(&d, EXEC_FAIL_NONE, NULL);
    expect_log("incluster", 1, "in cluster");
    done_release(&d);
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    free(cp);
    free(tok);
    free(ca);
    free(ns);
    free(sa);
}
END_TEST

struct counted {
    int done;
    long status;
};

static void on_counted(void *data, const struct kube_response *r)
{
    struct counted *c = data;
    c->done++;
    c->status = r->status;
}

static void on_client_closed(void *data)
{
    *(int *)data += 1;
}

/* The client-side rate limiter: 10 requests a second with a burst of 1 cannot send 6
 * requests in less than half a second (a lower bound, so never flaky). */
START_TEST(test_rate_limiter_spaces_requests)
{
    start_sim(NULL);
    struct kube_creds cr = {.server = sim.url, .token = "t0ken"};
    struct kube_client_limits lim = {.qps = 10, .burst = 1};
    struct kube_client *c = NULL;
    ck_assert_int_eq(kube_client_new(&c, &loop, &cr, &lim), 0);
    struct counted n = {0};
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < 6; i++)
        kube_call_start(c, KUBE_GET, "/api", NULL, false, NULL, on_counted, &n);
    while (n.done < 6)
        uv_run(&loop, UV_RUN_ONCE);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    ck_assert_msg(secs >= 0.5, "6 requests at 10/s (burst 1) took only %.3f s", secs);
    ck_assert_int_eq(n.status, 200);
    ck_assert_uint_eq(kube_client_requests(c), 6);
    int closed = 0;
    kube_client_close(c, on_client_closed, &closed);
    while (!closed)
        uv_run(&loop, UV_RUN_ONCE);
}
END_TEST

Suite *suite_integration_kube_exec(void)
{
    Suite *s = suite_create("integration_kube_exec");
    TCase *tc = tcase_create("lifecycle");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_success_outputs_log_and_delete);
    tcase_add_test(tc, test_exit_code_is_the_step_failure);
    tcase_add_test(tc, test_create_retried_on_429_and_503);
    tcase_add_test(tc, test_create_500_is_checked_before_creating_again);
    tcase_add_test(tc, test_connection_dropped_after_create_adopts);
    tcase_add_test(tc, test_409_adopts_ours_and_refuses_a_foreign_pod);
    tcase_add_test(tc, test_log_resumes_without_gaps_or_duplicates);
    tcase_add_test(tc, test_watch_drop_and_410_relist);
    tcase_add_test(tc, test_streams_dropped_and_history_compacted);
    tcase_add_test(tc, test_unschedulable_beyond_pending_timeout);
    tcase_add_test(tc, test_stuck_pending_by_behaviour);
    tcase_add_test(tc, test_image_pull_backoff_fails_after_grace);
    tcase_add_test(tc, test_oomkilled_is_the_steps_failure);
    tcase_add_test(tc, test_eviction_and_node_loss_are_transient);
    tcase_add_test(tc, test_deadline_exceeded_is_a_timeout);
    tcase_add_test(tc, test_cancel_deletes_with_grace);
    tcase_add_test(tc, test_release_then_adopt_the_same_pod);
    tcase_add_test(tc, test_secret_env);
    tcase_add_test(tc, test_git_input_fetched_with_the_secret);
    tcase_add_test(tc, test_gpu_step_lands_on_the_gpu_node);
    tcase_add_test(tc, test_cancel_deletes_orphan_pods_after_the_grace);
    tcase_add_test(tc, test_fixture_bodies);
    tcase_add_test(tc, test_quota_is_transient_and_forbidden_is_an_error);
    tcase_add_test(tc, test_failed_pods_kept_when_asked);
    tcase_add_test(tc, test_gc_deletes_finished_unfollowed_pods);
    tcase_add_test(tc, test_bad_spec_fails_without_a_pod);
    suite_add_tcase(s, tc);
    TCase *so = tcase_create("stage-out");
    tcase_add_checked_fixture(so, setup, teardown);
    tcase_set_timeout(so, 40);
    tcase_add_test(so, test_sidecar_stores_the_outputs_and_its_log_lands_once);
    tcase_add_test(so, test_missing_output_is_the_steps_failure);
    tcase_add_test(so, test_main_oomkilled_while_the_sidecar_waits);
    tcase_add_test(so, test_main_killed_while_the_sidecar_waits);
    tcase_add_test(so, test_main_dies_and_the_failed_pod_is_kept);
    tcase_add_test(so, test_cancel_during_stage_out_deletes_the_pod);
    tcase_add_test(so, test_sidecar_log_once_across_adoption);
    suite_add_tcase(s, so);
    TCase *cr = tcase_create("credentials");
    tcase_add_checked_fixture(cr, setup, teardown);
    tcase_set_timeout(cr, 30);
    tcase_add_test(cr, test_tls_ca_data_and_client_certificate);
    tcase_add_test(cr, test_unverified_server_refused_unless_insecure);
    tcase_add_test(cr, test_in_cluster_with_a_rotated_token);
    tcase_add_test(cr, test_rate_limiter_spaces_requests);
    suite_add_tcase(s, cr);
    return s;
}
