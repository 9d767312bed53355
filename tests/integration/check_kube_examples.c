/*
 * tests/integration/check_kube_examples.c - the example DAGs end to end with the
 * kubernetes executor: real PostgreSQL and Redis (tests/harness), the scheduler in a
 * thread, kubernetes workers (one per queue: default, and gpu for finetune's GPU step),
 * and the API simulator running every step's pod. Every Pod the executor creates passes
 * the simulator's validation against the official schema (else 422 and the run fails).
 *
 * Then the worker killed mid-step: `sluice worker --executor kubernetes` is SIGKILLed
 * while its pod runs; a second worker takes the message over after the visibility
 * timeout, gets 409 on create, adopts the same pod and reports the step - one pod.
 *
 * The DAGs run from a copy of dags/ without their schedules (so no cron run starts on
 * its own); the copy is the "dags" claim mounted at its own path, the work volume a
 * second claim, mounted at /sluice/work and backed by a temporary directory.
 *
 * Artifacts: iris again with an emptyDir work volume per pod, so its dataset and model
 * can only travel as artifacts - through S3 (s3rver, credentials from a Secret) and
 * through an fs repository on a third claim - staged inside the pods (inputs by the
 * sluice-stage-in init container, outputs by the sluice-stage-out sidecar); a missing
 * declared output and a missing input fail their step with the reason. A stage-out that
 * S3 keeps refusing (503, past the client's retries; a small proxy in front of s3rver)
 * fails its attempt as transient, and the step's retry policy runs it again.
 */
#include "common/error.h"
#include "common/xalloc.h"
#include "scheduler/scheduler.h"
#include "store/store.h"
#include "tests/harness/harness.h"
#include "tests/harness/k8ssim.h"
#include "tests/harness/pgtest.h"
#include "tests/testutil.h"
#include "common/config.h"
#include "worker/artifacts.h"
#include "worker/kube.h"
#include "worker/worker.h"

#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct harness_redis redis;

static void servers_setup(void)
{
    pgtest_setup();
    ck_assert_int_eq(harness_redis_start(&redis), 0);
}

static void servers_teardown(void)
{
    harness_redis_stop(&redis);
    pgtest_teardown();
}

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

struct fx {
    char tmp[64];
    char *dags, *work, *logs, *kubeconfig, *db_url, *redis_url, *sluice;
    struct harness_k8ssim sim;
    struct store *st;
    struct scheduler *sched;
    pthread_t thread;
    struct arena mem;
    struct artifacts_repo *artifacts; /* the worker's own repository (archived logs); NULL */
};

static void *sched_main(void *arg)
{
    scheduler_run(arg);
    return NULL;
}

static void sh(const char *cmd)
{
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    char *err = NULL;
    int rc = test_run(argv, NULL, &err);
    ck_assert_msg(rc == 0, "%s: %s", cmd, err);
    free(err);
}

static void fx_init(struct fx *f, const char *db)
{
    memset(f, 0, sizeof(*f));
    arena_init(&f->mem);
    snprintf(f->tmp, sizeof(f->tmp), "/tmp/sluice-kube-e2e-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(f->tmp));
    chmod(f->tmp, 0755);
    f->dags = xasprintf("%s/dags", f->tmp);
    f->work = xasprintf("%s/work", f->tmp);
    f->logs = xasprintf("%s/logs", f->tmp);
    f->kubeconfig = xasprintf("%s/kubeconfig", f->tmp);
    char *src = test_path("dags");
    char *cmd = xasprintf("cp -r '%s' '%s' && mkdir -p '%s' '%s/artifacts' && "
                          "sed -i '/^schedule:/d' '%s'/*.yaml",
                          src, f->dags, f->work, f->tmp, f->dags);
    sh(cmd);
    free(cmd);
    free(src);
    char cwd[4096];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    const char *bin = test_sluice_bin();
    f->sluice = bin[0] == '/' ? xstrdup(bin) : xasprintf("%s/%s", cwd, bin);

    char *c1 = xasprintf("work=%s", f->work), *c2 = xasprintf("dags=%s", f->dags);
    char *c3 = xasprintf("artifacts=%s/artifacts", f->tmp);
    const char *claims[] = {c1, c2, c3};
    const char *nodes[] = {
        "{\"name\": \"cpu-1\"}",
        "{\"name\": \"gpu-1\", \"labels\": {\"nvidia.com/gpu.present\": \"true\"}, \"taints\": "
        "[{\"key\": \"nvidia.com/gpu\", \"effect\": \"NoSchedule\"}], \"gpus\": 1}",
    };
    struct harness_k8ssim_options so = {.claims = claims,
                                        .n_claims = 3,
                                        .nodes = nodes,
                                        .n_nodes = 2,
                                        .token = "e2e",
                                        .bookmark_seconds = 0.5};
    ck_assert_int_eq(harness_k8ssim_start(&f->sim, &so), 0);
    free(c1);
    free(c2);
    free(c3);
    FILE *kc = fopen(f->kubeconfig, "w");
    ck_assert_ptr_nonnull(kc);
    fprintf(kc,
            "apiVersion: v1\nkind: Config\ncurrent-context: e2e\nclusters:\n- name: sim\n"
            "  cluster: {server: \"%s\"}\nusers:\n- name: w\n  user: {token: e2e}\n"
            "contexts:\n- name: e2e\n  context: {cluster: sim, user: w, namespace: ml}\n",
            f->sim.url);
    fclose(kc);

    f->db_url = pgtest_fresh_db(db);
    f->redis_url = xasprintf("unix://%s", redis.socket_path);
    char *reply = NULL;
    ck_assert_int_eq(harness_redis_command(&reply, &redis, "FLUSHALL", NULL), 0);
    free(reply);
    struct strbuf err = STRBUF_INIT;
    ck_assert_int_eq(store_open(&f->st, f->db_url, NULL, &err), 0);
    strbuf_release(&err);
    ck_assert_int_eq(store_migrate(f->st, NULL, NULL), 0);
    struct scheduler_options o = {.database_url = f->db_url,
                                  .redis_url = f->redis_url,
                                  .id = "sched",
                                  .dags_dir = f->dags,
                                  .dags_interval_ms = 500,
                                  .reconcile_interval_ms = 500,
                                  .worker_timeout_ms = 30000,
                                  .requeue_after_ms = 5000,
                                  .poll_interval_ms = 50};
    ck_assert_int_eq(scheduler_new(&f->sched, &o), 0);
    ck_assert_int_eq(pthread_create(&f->thread, NULL, sched_main, f->sched), 0);
}

static void fx_done(struct fx *f)
{
    scheduler_request_stop(f->sched);
    pthread_join(f->thread, NULL);
    scheduler_free(f->sched);
    store_close(f->st);
    harness_k8ssim_stop(&f->sim);
    char *cmd = xasprintf("rm -rf '%s'", f->tmp);
    sh(cmd);
    free(cmd);
    free(f->dags);
    free(f->work);
    free(f->logs);
    free(f->kubeconfig);
    free(f->db_url);
    free(f->redis_url);
    free(f->sluice);
    arena_release(&f->mem);
}

static struct kube_options kube_opts(const struct fx *f)
{
    struct kube_options k = {
        .kubeconfig = f->kubeconfig,
        .default_image = "registry.example.com/ml/python:3.11",
        .helper = KUBE_HELPER_INIT,
        .sluice_image = "registry.example.com/sluice:test",
        .sluice_path = f->sluice,
        .work_claim = "work",
        .work_mount = "/sluice/work",
        .dags_claim = "dags",
        .dags_mount = f->dags,
        .run_as_non_root = true,
        .delete_grace_ms = 2000,
    };
    return k;
}

static struct worker *start_worker_with(const struct fx *f, const char *queue, size_t slots,
                                        struct kube_options k)
{
    struct worker_options o = {.redis_url = f->redis_url,
                               .queue = queue,
                               .slots = slots,
                               .executor = WORKER_EXEC_KUBERNETES,
                               .log_root = f->logs,
                               .heartbeat_interval_ms = 500,
                               .stop_grace_ms = 2000,
                               .kube = &k,
                               .artifacts = f->artifacts};
    struct worker *w = NULL;
    ck_assert_int_eq(worker_start(&w, &o), 0);
    return w;
}

static struct worker *start_worker(const struct fx *f, const char *queue, size_t slots)
{
    return start_worker_with(f, queue, slots, kube_opts(f));
}

static void stop_worker(struct worker *w)
{
    worker_stop(w);
    ck_assert_int_eq(worker_join(w), 0);
}

static struct store_run trigger(struct fx *f, const char *dag_id, const char *params)
{
    int64_t deadline = now_ms() + 20000;
    for (;;) {
        struct store_dag d;
        if (store_dag_get(f->st, &d, dag_id, &f->mem) == 0 && d.current_version_id)
            break;
        ck_assert_msg(now_ms() < deadline, "DAG %s never synced", dag_id);
        nap(50);
    }
    struct store_run_new rn = {
        .dag_id = dag_id, .trigger = STORE_TRIGGER_MANUAL, .params_json = params};
    struct store_run r;
    bool existed;
    CK_STORE_OK(f->st, store_run_create(f->st, &r, &existed, &rn, &f->mem));
    return r;
}

static enum store_run_state wait_run(struct fx *f, const struct store_run *r, int64_t ms)
{
    int64_t deadline = now_ms() + ms;
    for (;;) {
        struct store_run now;
        CK_STORE_OK(f->st, store_run_get_by_pk(f->st, &now, r->id, &f->mem));
        if (now.state == STORE_RUN_SUCCEEDED || now.state == STORE_RUN_FAILED ||
            now.state == STORE_RUN_CANCELLED || now_ms() > deadline)
            return now.state;
        nap(100);
    }
}

/* The step table, for failure messages. */
static char *describe(struct fx *f, const struct store_run *r)
{
    struct store_step_instance *s = NULL;
    size_t n = 0;
    CK_STORE_OK(f->st, store_steps_of_run(f->st, &s, &n, r->id, 0, &f->mem));
    struct strbuf sb = STRBUF_INIT;
    for (size_t i = 0; i < n; i++)
        strbuf_addf(&sb, "  %s[%d] state %d attempt %d: %s %s\n", s[i].step, s[i].map_index,
                    (int)s[i].state, s[i].attempt, s[i].reason ? s[i].reason : "",
                    s[i].output_params_json ? s[i].output_params_json : "");
    return strbuf_detach(&sb, NULL);
}

static const struct store_step_instance *step_of(struct fx *f, const struct store_run *r,
                                                 const char *step)
{
    struct store_step_instance *s = NULL;
    size_t n = 0;
    CK_STORE_OK(f->st, store_steps_of_run(f->st, &s, &n, r->id, 0, &f->mem));
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s[i].step, step))
            return &s[i];
    return NULL;
}

static char *step_log(const struct fx *f, const char *dag, const struct store_run *r,
                      const char *step, const char *file)
{
    char *p = xasprintf("%s/%s/%s/%s/%s", f->logs, dag, r->run_id, step, file);
    char *t = test_read_file(p, NULL);
    free(p);
    return t;
}

START_TEST(test_examples_run_as_pods)
{
    struct fx f;
    fx_init(&f, "kube_examples");
    struct worker *w_cpu = start_worker(&f, "default", 8);
    struct worker *w_gpu = start_worker(&f, "gpu", 1);
    struct store_run iris =
        trigger(&f, "iris", "{\"serving_dir\": \"/sluice/work/serving\", \"n_estimators\": 20}");
    struct store_run ft = trigger(&f, "finetune", "{\"epochs\": 2}");
    struct store_run etl = trigger(&f, "etl-fanout", "{\"shards\": 3, \"rows_per_shard\": 200}");
    enum store_run_state s1 = wait_run(&f, &iris, 240000);
    enum store_run_state s2 = wait_run(&f, &ft, 120000);
    enum store_run_state s3 = wait_run(&f, &etl, 120000);
    char *d1 = describe(&f, &iris), *d2 = describe(&f, &ft), *d3 = describe(&f, &etl);
    ck_assert_msg(s1 == STORE_RUN_SUCCEEDED, "iris: %d\n%s", (int)s1, d1);
    ck_assert_msg(s2 == STORE_RUN_SUCCEEDED, "finetune: %d\n%s", (int)s2, d2);
    ck_assert_msg(s3 == STORE_RUN_SUCCEEDED, "etl-fanout: %d\n%s", (int)s3, d3);
    /* outputs came back through the termination message */
    const struct store_step_instance *ev = step_of(&f, &iris, "evaluate");
    ck_assert_msg(ev && ev->output_params_json && strstr(ev->output_params_json, "accuracy"), "%s",
                  d1);
    const struct store_step_instance *dep = step_of(&f, &iris, "deploy");
    ck_assert_msg(dep && dep->state == STORE_STEP_SUCCEEDED, "%s", d1);
    const struct store_step_instance *tr = step_of(&f, &ft, "finetune");
    ck_assert_msg(tr && tr->output_params_json && strstr(tr->output_params_json, "final_loss"),
                  "%s", d2);
    /* the logs: the step's own output and Kubernetes' view */
    char *log = step_log(&f, "finetune", &ft, "finetune", "1.log");
    ck_assert_msg(strstr(log, "scheduled on node gpu-1"), "%s", log);
    free(log);
    log = step_log(&f, "iris", &iris, "train", "1.log");
    ck_assert_msg(strstr(log, "scheduled on node cpu-1") && strstr(log, "succeeded"), "%s", log);
    free(log);
    log = step_log(&f, "etl-fanout", &etl, "transform", "2.1.log");
    ck_assert_msg(strstr(log, "pod \""), "%s", log);
    free(log);
    /* one pod per step instance, all deleted */
    long created = harness_k8ssim_stat(&f.sim, "pods_created");
    ck_assert_int_eq(created, 4 + 3 + (1 + 3 + 1 + 1));
    ck_assert_int_eq(harness_k8ssim_stat(&f.sim, "live_pods"), 0);
    free(d1);
    free(d2);
    free(d3);
    stop_worker(w_cpu);
    stop_worker(w_gpu);
    fx_done(&f);
}
END_TEST

/* --- artifacts ------------------------------------------------------------------------ */

static void write_dag(const struct fx *f, const char *name, const char *text)
{
    char *path = xasprintf("%s/%s.yaml", f->dags, name);
    FILE *d = fopen(path, "w");
    ck_assert_ptr_nonnull(d);
    fputs(text, d);
    fclose(d);
    free(path);
}

/* Options of a worker whose pods share nothing but artifacts: an emptyDir work volume. */
static struct kube_options isolated_opts(const struct fx *f)
{
    struct kube_options k = kube_opts(f);
    k.work_claim = NULL;
    return k;
}

/* Runs iris and the two failing DAGs with the worker's options k; checks the outcomes.
 * stored is how the step log names an artifact it stored ("s3://", "fs:"). */
static void run_artifact_dags(struct fx *f, struct kube_options k, const char *stored,
                              const char *missing_from)
{
    write_dag(f, "noout",
              "name: noout\nsteps:\n  - name: make\n    workdir: \"{{ attempt.dir }}\"\n    "
              "command: [/bin/sh, -c, \"echo "
              "working; echo 1 > other.txt\"]\n    outputs: {artifacts: {report: report.txt}}\n");
    char *noin = xasprintf("name: noin\nsteps:\n  - name: use\n    workdir: \"{{ attempt.dir "
                           "}}\"\n    command: [/bin/cat, data]\n"
                           "    inputs: {artifacts: {data: {from: \"%s\", path: data}}}\n",
                           missing_from);
    write_dag(f, "noin", noin);
    free(noin);
    struct worker *w = start_worker_with(f, "default", 8, k);
    struct store_run iris = trigger(f, "iris",
                                    "{\"serving_dir\": \"/sluice/work/serving\", "
                                    "\"n_estimators\": 20}");
    struct store_run noout = trigger(f, "noout", NULL);
    struct store_run noin_run = trigger(f, "noin", NULL);
    enum store_run_state s1 = wait_run(f, &iris, 240000);
    enum store_run_state s2 = wait_run(f, &noout, 60000);
    enum store_run_state s3 = wait_run(f, &noin_run, 60000);
    char *d1 = describe(f, &iris), *d2 = describe(f, &noout), *d3 = describe(f, &noin_run);
    ck_assert_msg(s1 == STORE_RUN_SUCCEEDED, "iris: %d\n%s", (int)s1, d1);
    const struct store_step_instance *ev = step_of(f, &iris, "evaluate");
    ck_assert_msg(ev && ev->output_params_json && strstr(ev->output_params_json, "accuracy"), "%s",
                  d1);
    ck_assert_int_eq(step_of(f, &iris, "train")->attempt, 1); /* no retry needed */
    /* the helper's lines in the step log: the model went to the repository */
    char *log = step_log(f, "iris", &iris, "train", "1.log");
    ck_assert_msg(strstr(log, "output artifact 'model' (model.pkl) stored as ") &&
                      strstr(log, stored),
                  "%s", log);
    free(log);
    /* a declared output the step did not write fails it, kind step */
    ck_assert_msg(s2 == STORE_RUN_FAILED, "noout: %d\n%s", (int)s2, d2);
    const struct store_step_instance *mk = step_of(f, &noout, "make");
    ck_assert_msg(mk->reason &&
                      !strcmp(mk->reason, "missing output artifact 'report' (report.txt)"),
                  "%s", d2);
    /* a missing input fails its step before it starts */
    ck_assert_msg(s3 == STORE_RUN_FAILED, "noin: %d\n%s", (int)s3, d3);
    const struct store_step_instance *use = step_of(f, &noin_run, "use");
    ck_assert_msg(use->reason && strstr(use->reason, "stage-in of the input artifacts failed") &&
                      strstr(use->reason, "input artifact 'data'"),
                  "%s", d3);
    ck_assert_int_eq(harness_k8ssim_stat(&f->sim, "live_pods"), 0);
    free(d1);
    free(d2);
    free(d3);
    stop_worker(w);
}

START_TEST(test_iris_passes_its_artifacts_through_s3)
{
    struct fx f;
    fx_init(&f, "kube_art_s3");
    struct harness_s3 s3;
    ck_assert_int_eq(harness_s3_start(&s3, NULL), 0);
    /* the credentials exist only in the Secret: the pods get them as secretKeyRefs */
    ck_assert_int_eq(harness_k8ssim_post(&f.sim, "/_sim/secrets",
                                         "{\"namespace\": \"ml\", \"name\": \"s3-creds\", "
                                         "\"data\": {\"access_key_id\": \"" HARNESS_S3_ACCESS_KEY
                                         "\", \"secret_access_key\": \"" HARNESS_S3_SECRET_KEY
                                         "\"}}"),
                     0);
    struct kube_options k = isolated_opts(&f);
    k.artifacts_repository = "s3";
    k.artifacts_endpoint = s3.endpoint;
    k.artifacts_bucket = s3.bucket;
    k.artifacts_region = HARNESS_S3_REGION;
    k.artifacts_path_style = true;
    k.artifacts_prefix = "runs";
    k.artifacts_credentials = "s3-creds";
    char *missing = xasprintf("s3://%s/runs/no/such/object", s3.bucket);
    run_artifact_dags(&f, k, "stored as s3://", missing);
    free(missing);
    harness_s3_stop(&s3);
    fx_done(&f);
}
END_TEST

START_TEST(test_iris_passes_its_artifacts_through_an_fs_claim)
{
    struct fx f;
    fx_init(&f, "kube_art_fs");
    struct kube_options k = isolated_opts(&f);
    k.artifacts_repository = "fs";
    k.artifacts_root = "/sluice/artifacts";
    k.artifacts_claim = "artifacts";
    /* the worker mounts the same claim (here: the simulator's host directory for it) and
     * archives every finished log there */
    struct sl_config ac = {0};
    char *root = xasprintf("%s/artifacts", f.tmp);
    ac.artifacts.repository = "fs";
    ac.artifacts.root = root;
    ac.artifacts.prefix = "";
    ac.artifacts.compression = "gzip";
    ac.artifacts.archive_logs = true;
    struct strbuf err = STRBUF_INIT;
    ck_assert_msg(artifacts_open(&f.artifacts, &ac, &err) == 0, "%s", err.buf);
    strbuf_release(&err);
    run_artifact_dags(&f, k, "stored as fs:", "file:///sluice/artifacts/no/such/data");
    /* every finished attempt's log was archived, trailer included */
    char *logs = xasprintf("grep -l '=== sluice: attempt .* succeeded' "
                           "%s/iris/*/train/1/sluice.log %s/iris/*/evaluate/1/sluice.log",
                           root, root);
    sh(logs);
    free(logs);
    artifacts_close(f.artifacts);
    f.artifacts = NULL;
    free(root);
    /* the model is in the repository's volume, under its key */
    char *cmd = xasprintf("test -n \"$(find '%s/artifacts/iris' -path '*/train/1/model' -type f "
                          "-size +0)\"",
                          f.tmp);
    sh(cmd);
    free(cmd);
    fx_done(&f);
}
END_TEST

/* --- a stage-out that S3 refuses ---------------------------------------------------------- */

/* A proxy in front of s3rver that answers 503 SlowDown to every request whose request line
 * contains refuse (and forwards the rest), one thread per connection. */
struct s3_refuser {
    int listen_fd, port, upstream_port;
    const char *refuse;
    pthread_t thread;
    pthread_mutex_t mu;
    int refused; /* requests answered 503 */
    volatile bool stop;
};

struct refuser_conn {
    struct s3_refuser *p;
    int fd;
};

/* Reads from fd until the head is complete, and its body too when it is to be refused
 * (so that closing never resets a client still sending). Returns the bytes read. */
static size_t read_request(int fd, char *buf, size_t cap, bool whole)
{
    size_t len = 0;
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (len + 1 >= cap || poll(&pfd, 1, 2000) <= 0)
            break;
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end)
            continue;
        if (!whole)
            break;
        size_t body = 0;
        for (const char *l = strstr(buf, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n"))
            if (!strncasecmp(l + 2, "content-length:", 15))
                body = (size_t)strtoul(l + 17, NULL, 10);
        if (len >= (size_t)(end + 4 - buf) + body)
            break;
    }
    return len;
}

static void *refuser_conn_main(void *data)
{
    struct refuser_conn *c = data;
    struct s3_refuser *p = c->p;
    static __thread char buf[1 << 16];
    size_t len = read_request(c->fd, buf, sizeof(buf), false);
    bool refuse = len && strstr(buf, p->refuse) && strstr(buf, "\r\n") > strstr(buf, p->refuse);
    if (refuse) {
        len += read_request(c->fd, buf + len, sizeof(buf) - len, true);
        const char *body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown"
                           "</Code><Message>Please reduce your request rate.</Message></Error>";
        char resp[512];
        int n = snprintf(resp, sizeof(resp),
                         "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                         strlen(body), body);
        (void)!write(c->fd, resp, (size_t)n);
        pthread_mutex_lock(&p->mu);
        p->refused++;
        pthread_mutex_unlock(&p->mu);
    } else if (len) {
        int up = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)p->upstream_port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (connect(up, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
            write(up, buf, len) == (ssize_t)len) {
            struct pollfd pfd[2] = {{c->fd, POLLIN, 0}, {up, POLLIN, 0}};
            while (!p->stop && poll(pfd, 2, 200) >= 0) {
                int from = (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))   ? c->fd
                           : (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) ? up
                                                                             : -1;
                if (from < 0)
                    continue;
                ssize_t n = read(from, buf, sizeof(buf));
                if (n <= 0 || write(from == up ? c->fd : up, buf, (size_t)n) != n)
                    break;
            }
        }
        close(up);
    }
    shutdown(c->fd, SHUT_RDWR);
    close(c->fd);
    free(c);
    return NULL;
}

static void *refuser_main(void *data)
{
    struct s3_refuser *p = data;
    while (!p->stop) {
        struct pollfd pfd = {p->listen_fd, POLLIN, 0};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        int fd = accept(p->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        struct refuser_conn *c = xmalloc(sizeof(*c));
        *c = (struct refuser_conn){p, fd};
        pthread_t t;
        if (pthread_create(&t, NULL, refuser_conn_main, c) == 0) {
            pthread_detach(t);
        } else {
            close(fd);
            free(c);
        }
    }
    return NULL;
}

static void refuser_start(struct s3_refuser *p, int upstream_port, const char *refuse)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    p->upstream_port = upstream_port;
    p->refuse = refuse;
    p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    ck_assert_int_eq(bind(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(p->listen_fd, 64), 0);
    ck_assert_int_eq(getsockname(p->listen_fd, (struct sockaddr *)&sa, &len), 0);
    p->port = ntohs(sa.sin_port);
    ck_assert_int_eq(pthread_create(&p->thread, NULL, refuser_main, p), 0);
}

static void refuser_stop(struct s3_refuser *p)
{
    p->stop = true;
    pthread_join(p->thread, NULL);
    close(p->listen_fd);
    pthread_mutex_destroy(&p->mu);
}

/* S3 refuses the first attempt's upload past the client's retries: the attempt fails,
 * transient, with the upload's reason; the retry policy runs attempt 2, whose upload goes
 * through. */
START_TEST(test_refused_upload_is_transient_and_retried)
{
    struct fx f;
    fx_init(&f, "kube_art_503");
    struct harness_s3 s3;
    ck_assert_int_eq(harness_s3_start(&s3, NULL), 0);
    ck_assert_int_eq(harness_k8ssim_post(&f.sim, "/_sim/secrets",
                                         "{\"namespace\": \"ml\", \"name\": \"s3-creds\", "
                                         "\"data\": {\"access_key_id\": \"" HARNESS_S3_ACCESS_KEY
                                         "\", \"secret_access_key\": \"" HARNESS_S3_SECRET_KEY
                                         "\"}}"),
                     0);
    struct s3_refuser proxy;
    refuser_start(&proxy, s3.port, "/make/1/out"); /* attempt 1's key only */
    char *endpoint = xasprintf("http://127.0.0.1:%d", proxy.port);
    write_dag(&f, "flaky",
              "name: flaky\nsteps:\n  - name: make\n    workdir: \"{{ attempt.dir }}\"\n"
              "    command: [/bin/sh, -c, \"echo making; echo data > out.txt\"]\n"
              "    outputs: {artifacts: {out: out.txt}}\n"
              "    retries: {limit: 1, policy: on_transient, backoff: {initial: 1s}}\n");
    struct kube_options k = isolated_opts(&f);
    k.artifacts_repository = "s3";
    k.artifacts_endpoint = endpoint;
    k.artifacts_bucket = s3.bucket;
    k.artifacts_region = HARNESS_S3_REGION;
    k.artifacts_path_style = true;
    k.artifacts_prefix = "runs";
    k.artifacts_credentials = "s3-creds";
    struct worker *w = start_worker_with(&f, "default", 2, k);
    struct store_run r = trigger(&f, "flaky", NULL);
    enum store_run_state st = wait_run(&f, &r, 120000);
    char *d = describe(&f, &r);
    ck_assert_msg(st == STORE_RUN_SUCCEEDED, "%d\n%s", (int)st, d);
    ck_assert_int_eq(step_of(&f, &r, "make")->attempt, 2);
    pthread_mutex_lock(&proxy.mu);
    int refused = proxy.refused;
    pthread_mutex_unlock(&proxy.mu);
    ck_assert_msg(refused >= 2, "refused %d: the upload was not retried by the client", refused);
    /* attempt 1: failed, transient, with the upload's reason - from the sidecar's
     * termination message - and the sidecar's own line, in the step log */
    char *log = step_log(&f, "flaky", &r, "make", "1.log");
    ck_assert_msg(strstr(log, "making\n") &&
                      strstr(log, "failed (transient): output artifact 'out' (out.txt): ") &&
                      strstr(log, "503") && strstr(log, "SlowDown") &&
                      strstr(log, "=== sluice: output artifact 'out' failed: "),
                  "%s", log);
    free(log);
    log = step_log(&f, "flaky", &r, "make", "2.log");
    ck_assert_msg(strstr(log, "output artifact 'out' (out.txt) stored as s3://"), "%s", log);
    free(log);
    ck_assert_int_eq(harness_k8ssim_stat(&f.sim, "live_pods"), 0);
    free(d);
    stop_worker(w);
    refuser_stop(&proxy);
    free(endpoint);
    harness_s3_stop(&s3);
    fx_done(&f);
}
END_TEST

/* sluice worker, as a process of its own that can be killed. */
static pid_t spawn_worker(const struct fx *f, const char *id)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("SLUICE_REDIS_URL", f->redis_url, 1);
        setenv("SLUICE_LOG_ROOT", f->logs, 1);
        setenv("SLUICE_KUBERNETES_KUBECONFIG", f->kubeconfig, 1);
        setenv("SLUICE_KUBERNETES_DEFAULT_IMAGE", "registry.example.com/ml/python:3.11", 1);
        setenv("SLUICE_KUBERNETES_SLUICE_PATH", f->sluice, 1);
        setenv("SLUICE_KUBERNETES_WORK_CLAIM", "work", 1);
        setenv("SLUICE_KUBERNETES_DAGS_CLAIM", "dags", 1);
        setenv("SLUICE_KUBERNETES_DAGS_MOUNT", f->dags, 1);
        setenv("SLUICE_CONFIG", "/dev/null", 1);
        int null_fd = open("/dev/null", O_WRONLY);
        dup2(null_fd, 1);
        execl(f->sluice, f->sluice, "worker", "--executor", "kubernetes", "--id", id,
              "--visibility-timeout", "2s", "--heartbeat-interval", "500ms", (char *)NULL);
        _exit(127);
    }
    return pid;
}

START_TEST(test_worker_killed_mid_step_is_replaced_and_adopts_the_pod)
{
    struct fx f;
    fx_init(&f, "kube_adopt");
    char *dag_path = xasprintf("%s/slow.yaml", f.dags);
    FILE *dag = fopen(dag_path, "w");
    free(dag_path);
    ck_assert_ptr_nonnull(dag);
    fputs("name: slow\nsteps:\n  - name: wait\n    command: [/bin/sh, -c, \"echo started; "
          "sleep 4; echo finished; echo 7 > n.txt\"]\n    workdir: \"{{ attempt.dir }}\"\n"
          "    outputs: {params: {n: n.txt}}\n",
          dag);
    fclose(dag);
    pid_t w1 = spawn_worker(&f, "first");
    struct store_run r = trigger(&f, "slow", NULL);
    /* wait until the pod's step printed "started", then kill the worker outright */
    char *logp = xasprintf("%s/slow/%s/wait/1.log", f.logs, r.run_id);
    int64_t deadline = now_ms() + 60000;
    for (;;) {
        struct strbuf sb = STRBUF_INIT;
        bool started = strbuf_read_file(&sb, logp, 1 << 20) == 0 && strstr(sb.buf, "started");
        strbuf_release(&sb);
        if (started)
            break;
        ck_assert_msg(now_ms() < deadline, "the step never started");
        nap(50);
    }
    kill(w1, SIGKILL);
    int status;
    waitpid(w1, &status, 0);
    pid_t w2 = spawn_worker(&f, "second");
    enum store_run_state st = wait_run(&f, &r, 60000);
    char *d = describe(&f, &r);
    ck_assert_msg(st == STORE_RUN_SUCCEEDED, "%d\n%s", (int)st, d);
    const struct store_step_instance *s = step_of(&f, &r, "wait");
    ck_assert_int_eq(s->attempt, 1); /* the same attempt, not a retry */
    ck_assert_msg(s->output_params_json && strstr(s->output_params_json, "\"7\""), "%s", d);
    ck_assert_int_eq(harness_k8ssim_stat(&f.sim, "pods_created"), 1);
    char *log = test_read_file(logp, NULL);
    ck_assert_msg(strstr(log, "adopting the existing pod"), "%s", log);
    ck_assert_msg(strstr(log, "finished"), "%s", log);
    /* the second worker resumed the log where the first stopped: nothing twice */
    const char *first = strstr(log, "\nstarted\n");
    ck_assert_msg(first && !strstr(first + 1, "\nstarted\n"), "%s", log);
    free(log);
    free(d);
    free(logp);
    kill(w2, SIGTERM);
    waitpid(w2, &status, 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    fx_done(&f);
}
END_TEST

Suite *suite_integration_kube_examples(void)
{
    Suite *s = suite_create("integration_kube_examples");
    TCase *tc = tcase_create("examples");
    tcase_add_unchecked_fixture(tc, servers_setup, servers_teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_examples_run_as_pods);
    tcase_add_test(tc, test_worker_killed_mid_step_is_replaced_and_adopts_the_pod);
    suite_add_tcase(s, tc);
    TCase *ta = tcase_create("artifacts");
    tcase_add_unchecked_fixture(ta, servers_setup, servers_teardown);
    tcase_set_timeout(ta, 300);
    tcase_add_test(ta, test_iris_passes_its_artifacts_through_s3);
    tcase_add_test(ta, test_iris_passes_its_artifacts_through_an_fs_claim);
    tcase_add_test(ta, test_refused_upload_is_transient_and_retried);
    suite_add_tcase(s, ta);
    return s;
}
