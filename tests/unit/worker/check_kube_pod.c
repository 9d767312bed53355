/*
 * tests/unit/worker/check_kube_pod.c - the Pod builder (worker/kube_pod.c): names, labels,
 * every option, and every Pod built here - for the example DAGs' steps (as the engine
 * renders them) and for each option - validated against the official schema with
 * tests/k8s/schema_check.py (unknown fields, types, required fields, enums, quantities).
 */
#include "worker/kube.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "dsl/dsl.h"
#include "scheduler/engine.h"
#include "tests/harness/k8ssim.h"
#include "tests/testutil.h"

#include <check.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct kube_options base_opts(void)
{
    struct kube_options o = {
        .namespace_ = "ml",
        .queue = "default",
        .default_image = "python:3.11-slim",
        .helper = KUBE_HELPER_INIT,
        .sluice_image = "ghcr.io/sluice-dev/sluice:1.0",
        .sluice_path = "/usr/local/bin/sluice",
        .work_claim = "sluice-work",
        .work_mount = "/sluice/work",
        .run_as_non_root = true,
    };
    return o;
}

static cJSON *spec_of(const char *json)
{
    cJSON *s = cJSON_Parse(json);
    ck_assert_ptr_nonnull(s);
    return s;
}

static const char *const base_spec =
    "{\"attempt_id\": \"iris.manual__2026.train.-1.2\", \"dag\": \"iris\", \"run_id\": "
    "\"manual__2026\", \"step\": \"train\", \"map_index\": -1, \"attempt\": 2, "
    "\"command\": [\"/usr/bin/python3\", \"train.py\"], \"args\": [\"--out\", "
    "\"$(SLUICE_RUN_DIR)/model\", \"--cost\", \"$$5\", \"--token\", \"$(TOKEN)\"], "
    "\"env\": {\"A\": \"1\", \"B\": \"$(A)-$(SLUICE_ATTEMPT_DIR)\", \"TOKEN\": "
    "{\"secret_name\": \"api\", \"secret_key\": \"token\"}}, "
    "\"workdir\": \"$(SLUICE_RUN_DIR)\", \"timeout_ms\": 600001, "
    "\"resources\": {\"cpu_millis\": 500, \"memory_bytes\": 1073741824, \"gpu\": 1}, "
    "\"node_selector\": {\"pool\": \"gpu-a100\"}, "
    "\"tolerations\": [{\"key\": \"nvidia.com/gpu\", \"operator\": \"Exists\", \"effect\": "
    "\"NoSchedule\", \"toleration_seconds\": 30}], "
    "\"outputs\": {\"params\": {\"accuracy\": \"$(SLUICE_ATTEMPT_DIR)/acc.txt\"}}, "
    "\"labels\": {\"team\": \"ml\", \"sluice.io/dag\": \"spoofed\"}, "
    "\"annotations\": {\"owner\": \"ada@example.com\"}}";

/* Builds, and appends the Pod to a JSON array written for the schema check. */
static cJSON *all_pods;

static cJSON *build(const cJSON *spec, const struct kube_options *o)
{
    cJSON *pod = NULL;
    struct strbuf err = STRBUF_INIT;
    int rc = kube_pod_build(&pod, spec, o, &err);
    ck_assert_msg(rc == 0, "build failed: %s", err.buf);
    strbuf_release(&err);
    if (all_pods)
        cJSON_AddItemToArray(all_pods, cJSON_Duplicate(pod, true));
    return pod;
}

static const cJSON *at(const cJSON *o, const char *path)
{
    char *copy = xstrdup(path), *save = NULL;
    for (char *t = strtok_r(copy, ".", &save); t && o; t = strtok_r(NULL, ".", &save)) {
        if (isdigit((unsigned char)t[0]))
            o = cJSON_GetArrayItem(o, atoi(t)); /* NOLINT(cert-err34-c): test paths */
        else
            o = cJSON_GetObjectItemCaseSensitive(o, t);
    }
    free(copy);
    return o;
}

static const char *str_at(const cJSON *o, const char *path)
{
    const cJSON *v = at(o, path);
    ck_assert_msg(cJSON_IsString(v), "%s is not a string", path);
    return v->valuestring;
}

static const cJSON *env_named(const cJSON *pod, const char *name)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, at(pod, "spec.containers.0.env"))
    {
        if (!strcmp(cJSON_GetObjectItem(e, "name")->valuestring, name))
            return e;
    }
    return NULL;
}

START_TEST(test_pod_names)
{
    char *a = kube_pod_name("iris.manual__2026-01-01T00:00:00+00:00.train.-1.1");
    char *b = kube_pod_name("iris.manual__2026-01-01T00:00:00+00:00.train.-1.2");
    char *c = kube_pod_name("Iris.manual__2026-01-01T00:00:00+00:00.train.-1.1");
    char *longer = kube_pod_name("a-very-long-dag-name-indeed-for-sure.run-with-a-long-id-"
                                 "that-goes-on.and-a-long-step-name.12.3");
    char *weird = kube_pod_name("...");
    const char *names[] = {a, b, c, longer, weird};
    for (size_t i = 0; i < 5; i++) {
        const char *n = names[i];
        size_t len = strlen(n);
        ck_assert_msg(len >= 1 && len <= 63, "%s: length %zu", n, len);
        ck_assert_msg(isalnum((unsigned char)n[0]) && isalnum((unsigned char)n[len - 1]), "%s", n);
        for (const char *p = n; *p; p++)
            ck_assert_msg((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-', "%s",
                          n);
    }
    ck_assert_str_ne(a, b);
    ck_assert_str_ne(a, c); /* the readable part is the same, the hash is not */
    ck_assert_ptr_nonnull(strstr(a, "iris-manual-2026"));
    char *again = kube_pod_name("iris.manual__2026-01-01T00:00:00+00:00.train.-1.1");
    ck_assert_str_eq(a, again); /* deterministic: a second create of one attempt is a 409 */
    free(again);
    for (size_t i = 0; i < 5; i++)
        free((void *)names[i]);
    char *v = kube_label_value("manual__2026-01-01T00:00:00+00:00");
    ck_assert_int_le((int)strlen(v), 63);
    ck_assert_ptr_null(strchr(v, ':'));
    free(v);
    v = kube_label_value("scheduled__20260101");
    ck_assert_str_eq(v, "scheduled__20260101"); /* valid values are kept as they are */
    free(v);
}
END_TEST

START_TEST(test_pod_fields)
{
    struct kube_options o = base_opts();
    o.node_selector = "pool=cpu,zone=eu-1";
    o.tolerations = "[{\"key\": \"dedicated\", \"operator\": \"Equal\", \"value\": \"ml\", "
                    "\"effect\": \"NoSchedule\"}]";
    o.image_pull_secrets = "regcred, other";
    o.service_account = "steps";
    o.gpu_resource = "amd.com/gpu";
    o.dags_claim = "dags";
    o.dags_mount = "/git/dags";
    cJSON *spec = spec_of(base_spec);
    cJSON *pod = build(spec, &o);
    ck_assert_str_eq(str_at(pod, "spec.restartPolicy"), "Never");
    ck_assert_int_eq((int)at(pod, "spec.activeDeadlineSeconds")->valuedouble, 601);
    ck_assert_str_eq(str_at(pod, "metadata.namespace"), "ml");
    const cJSON *labels = at(pod, "metadata.labels");
    ck_assert_str_eq(cJSON_GetObjectItem(labels, "sluice.io/dag")->valuestring, "iris");
    ck_assert_str_eq(cJSON_GetObjectItem(labels, "sluice.io/step")->valuestring, "train");
    ck_assert_str_eq(cJSON_GetObjectItem(labels, "sluice.io/run")->valuestring, "manual__2026");
    ck_assert_str_eq(cJSON_GetObjectItem(labels, "sluice.io/attempt")->valuestring, "2");
    ck_assert_str_eq(cJSON_GetObjectItem(labels, "team")->valuestring, "ml");
    ck_assert_str_eq(cJSON_GetObjectItem(labels, "app.kubernetes.io/managed-by")->valuestring,
                     "sluice");
    const cJSON *ann = at(pod, "metadata.annotations");
    ck_assert_str_eq(cJSON_GetObjectItem(ann, KUBE_ANNOTATION_ATTEMPT)->valuestring,
                     "iris.manual__2026.train.-1.2");
    ck_assert_str_eq(cJSON_GetObjectItem(ann, "owner")->valuestring, "ada@example.com");
    /* placement: the step's selector joins the queue's; tolerations add up */
    const cJSON *sel = at(pod, "spec.nodeSelector");
    ck_assert_str_eq(cJSON_GetObjectItem(sel, "pool")->valuestring, "gpu-a100");
    ck_assert_str_eq(cJSON_GetObjectItem(sel, "zone")->valuestring, "eu-1");
    ck_assert_int_eq(cJSON_GetArraySize(at(pod, "spec.tolerations")), 2);
    ck_assert_int_eq((int)at(pod, "spec.tolerations.1.tolerationSeconds")->valuedouble, 30);
    ck_assert_str_eq(str_at(pod, "spec.serviceAccountName"), "steps");
    ck_assert_str_eq(str_at(pod, "spec.imagePullSecrets.1.name"), "other");
    ck_assert(cJSON_IsTrue(at(pod, "spec.securityContext.runAsNonRoot")));
    /* resources */
    const cJSON *c = at(pod, "spec.containers.0");
    ck_assert_str_eq(str_at(c, "resources.requests.cpu"), "500m");
    ck_assert_str_eq(str_at(c, "resources.requests.memory"), "1Gi");
    ck_assert_str_eq(str_at(c, "resources.limits.memory"), "1Gi");
    ck_assert_str_eq(cJSON_GetObjectItem(at(c, "resources.limits"), "amd.com/gpu")->valuestring,
                     "1");
    ck_assert_ptr_null(at(c, "resources.limits.cpu"));
    /* the command goes through the helper; $(VAR) expanded here, then '$' escaped */
    ck_assert_str_eq(str_at(c, "command.0"), KUBE_HELPER_LOADER);
    ck_assert_str_eq(str_at(c, "command.1"), "--library-path");
    ck_assert_str_eq(str_at(c, "command.2"), KUBE_HELPER_LIBS);
    ck_assert_str_eq(str_at(c, "command.3"), KUBE_HELPER_BIN);
    ck_assert_str_eq(str_at(c, "command.4"), "pod");
    ck_assert_str_eq(str_at(c, "image"), "python:3.11-slim");
    char *all = cJSON_PrintUnformatted(at(c, "command"));
    ck_assert_ptr_nonnull(strstr(all, "\"--param\",\"accuracy=/sluice/work/iris/manual__2026/"
                                      ".attempts/train/2/acc.txt\""));
    free(all);
    ck_assert_str_eq(str_at(c, "args.0"), "/usr/bin/python3");
    ck_assert_str_eq(str_at(c, "args.3"), "/sluice/work/iris/manual__2026/model");
    ck_assert_str_eq(str_at(c, "args.5"), "$$5");       /* "$$5" -> "$5" -> "$$5" */
    ck_assert_str_eq(str_at(c, "args.7"), "$$(TOKEN)"); /* a secret: never substituted */
    ck_assert_str_eq(str_at(c, "workingDir"), "/sluice/work/iris/manual__2026");
    /* env: the directories first, then the step's, values as written (the kubelet expands
     * them), the secret as a secretKeyRef */
    ck_assert_str_eq(str_at(c, "env.0.name"), "SLUICE_RUN_DIR");
    ck_assert_str_eq(str_at(env_named(pod, "B"), "value"), "$(A)-$(SLUICE_ATTEMPT_DIR)");
    ck_assert_str_eq(str_at(env_named(pod, "TOKEN"), "valueFrom.secretKeyRef.key"), "token");
    /* volumes: the helper's emptyDir, the work claim, the DAG claim read-only */
    ck_assert_str_eq(str_at(pod, "spec.volumes.1.persistentVolumeClaim.claimName"), "sluice-work");
    ck_assert(cJSON_IsTrue(at(pod, "spec.volumes.2.persistentVolumeClaim.readOnly")));
    ck_assert_str_eq(str_at(c, "volumeMounts.2.mountPath"), "/git/dags");
    ck_assert_str_eq(str_at(c, "terminationMessagePath"), KUBE_TERMINATION_PATH);
    ck_assert_str_eq(str_at(pod, "spec.initContainers.0.command.2"), "install");
    cJSON_Delete(pod);
    cJSON_Delete(spec);
}
END_TEST

START_TEST(test_helper_modes_and_minimal_options)
{
    struct kube_options o = base_opts();
    cJSON *spec = spec_of(base_spec);
    o.helper = KUBE_HELPER_IMAGE;
    cJSON *pod = build(spec, &o);
    ck_assert_ptr_null(at(pod, "spec.initContainers"));
    ck_assert_str_eq(str_at(pod, "spec.containers.0.command.0"), "/usr/local/bin/sluice");
    cJSON_Delete(pod);

    /* no helper: argv as is, no params allowed */
    o.helper = KUBE_HELPER_NONE;
    cJSON_DeleteItemFromObject(spec, "outputs");
    pod = build(spec, &o);
    ck_assert_str_eq(str_at(pod, "spec.containers.0.command.0"), "/usr/bin/python3");
    ck_assert_str_eq(str_at(pod, "spec.containers.0.args.0"), "--out");
    cJSON_Delete(pod);

    /* the least: no claim (an emptyDir), root allowed, no resources, no namespace */
    struct kube_options m = {.default_image = "busybox", .helper = KUBE_HELPER_INIT};
    cJSON *small = spec_of("{\"attempt_id\": \"d.r.s.3.1\", \"dag\": \"d\", \"run_id\": \"r\", "
                           "\"step\": \"s\", \"map_index\": 3, \"attempt\": 1, \"command\": "
                           "[\"true\"]}");
    pod = build(small, &m);
    ck_assert_ptr_nonnull(at(pod, "spec.volumes.1.emptyDir"));
    ck_assert_ptr_null(at(pod, "spec.securityContext"));
    ck_assert_ptr_null(at(pod, "spec.activeDeadlineSeconds"));
    ck_assert_str_eq(
        cJSON_GetObjectItem(at(pod, "metadata.labels"), "sluice.io/map-index")->valuestring, "3");
    ck_assert_str_eq(str_at(pod, "spec.containers.0.workingDir"),
                     "/sluice/work/d/r/.attempts/s/3.1");
    cJSON_Delete(pod);
    cJSON_Delete(small);
    cJSON_Delete(spec);
}
END_TEST

static void expect_error(const char *spec_json, const struct kube_options *o, const char *part)
{
    cJSON *spec = spec_of(spec_json);
    cJSON *pod = NULL;
    struct strbuf err = STRBUF_INIT;
    ck_assert_int_eq(kube_pod_build(&pod, spec, o, &err), SL_EINVAL);
    ck_assert_ptr_null(pod);
    ck_assert_msg(strstr(err.buf, part), "error \"%s\", want \"%s\"", err.buf, part);
    strbuf_release(&err);
    cJSON_Delete(spec);
}

START_TEST(test_bad_input_is_refused_with_a_reason)
{
    struct kube_options o = base_opts();
    const char *ok = "{\"attempt_id\": \"d.r.s.-1.1\", \"dag\": \"d\", \"run_id\": \"r\", "
                     "\"step\": \"s\", \"command\": [\"x\"]";
    char *no_image = xasprintf("%s}", ok);
    struct kube_options no_default = o;
    no_default.default_image = NULL;
    expect_error(no_image, &no_default, "no image");
    expect_error("{\"dag\": \"d\"}", &o, "malformed spec");
    char *bad_cmd = xasprintf("%s, \"args\": [1]}", ok);
    expect_error(bad_cmd, &o, "malformed spec");
    char *bad_env = xasprintf("%s, \"env\": {\"X\": {\"secret_name\": \"a\"}}}", ok);
    expect_error(bad_env, &o, "env 'X'");
    char *params = xasprintf("%s, \"outputs\": {\"params\": {\"p\": \"f\"}}}", ok);
    struct kube_options none = o;
    none.helper = KUBE_HELPER_NONE;
    expect_error(params, &none, "output params need the pod-side helper");
    struct kube_options bad_q = o;
    bad_q.tolerations = "{not json";
    expect_error(no_image, &bad_q, "kubernetes.tolerations");
    bad_q.tolerations = NULL;
    bad_q.node_selector = "novalue";
    expect_error(no_image, &bad_q, "kubernetes.node_selector");
    expect_error("{\"attempt_id\": \"d.r.s.-1.1\", \"dag\": \"d\", \"run_id\": \"r\", "
                 "\"step\": \"s\"}",
                 &o, "no command");
    free(no_image);
    free(bad_cmd);
    free(bad_env);
    free(params);
}
END_TEST

/* Every step of an example DAG as the engine dispatches it: the run is driven to its end,
 * each dispatched attempt "succeeds" with plausible outputs, and each spec becomes a Pod. */
static void add_example_pods(const char *file, const struct kube_options *o, size_t *n)
{
    char *path = test_path(file);
    struct dsl_dag *dag = NULL;
    struct dsl_diags diags;
    dsl_diags_init(&diags);
    ck_assert_int_eq(dsl_parse_file(&dag, path, NULL, &diags), 0);
    dsl_diags_release(&diags);
    struct engine_run *run = NULL;
    ck_assert_int_eq(engine_run_new(&run, dag, "manual__2026-01-01T00:00:00+00:00",
                                    "2026-01-01T00:00:00Z", "/sluice/dags", NULL),
                     0);
    cJSON *outputs = cJSON_Parse("{\"accuracy\": \"0.97\", \"final_loss\": \"0.1\", "
                                 "\"shards\": \"[\\\"s0\\\", \\\"s1\\\"]\", \"rows\": \"10\"}");
    struct engine_actions acts, next;
    engine_actions_init(&acts);
    engine_actions_init(&next);
    int64_t now = 1000000;
    struct engine_event start = {.kind = ENGINE_EV_START, .now_ms = now};
    ck_assert_int_eq(engine_apply(run, &start, &acts), 0);
    for (int round = 0; round < 50 && acts.n; round++) {
        engine_actions_clear(&next);
        for (size_t i = 0; i < acts.n; i++) {
            const struct engine_action *a = &acts.v[i];
            if (a->kind != ENGINE_ACT_DISPATCH)
                continue;
            cJSON_Delete(build(a->spec, o));
            (*n)++;
            const cJSON *step = cJSON_GetObjectItem(a->spec, "step");
            const cJSON *map = cJSON_GetObjectItem(a->spec, "map_index");
            struct engine_event ev = {.kind = ENGINE_EV_RUNNING,
                                      .now_ms = ++now,
                                      .step = step->valuestring,
                                      .map_index = (int)map->valuedouble,
                                      .attempt = a->attempt};
            ck_assert_int_eq(engine_apply(run, &ev, &next), 0);
            ev.kind = ENGINE_EV_SUCCEEDED;
            ev.outputs = outputs;
            ck_assert_int_eq(engine_apply(run, &ev, &next), 0);
        }
        struct engine_actions t = acts;
        acts = next;
        next = t;
    }
    engine_actions_release(&acts);
    engine_actions_release(&next);
    cJSON_Delete(outputs);
    engine_run_free(run);
    dsl_dag_free(dag);
    free(path);
}

/* --- artifacts --------------------------------------------------------------------- */

static const char *const art_spec =
    "{\"attempt_id\": \"iris.r1.train.-1.2\", \"dag\": \"iris\", \"run_id\": \"r1\", "
    "\"step\": \"train\", \"map_index\": -1, \"attempt\": 2, "
    "\"command\": [\"/usr/bin/python3\", \"train.py\"], \"workdir\": \"$(SLUICE_RUN_DIR)\", "
    "\"inputs\": {\"artifacts\": {\"dataset\": {\"from\": \"iris/r1/preprocess/1/dataset\", "
    "\"path\": \"da$(X)ta\"}}}, "
    "\"outputs\": {\"artifacts\": {\"model\": {\"path\": \"model.pkl\", \"key\": "
    "\"iris/r1/train/2/model\"}}}}";

static const char *const git_spec =
    "{\"attempt_id\": \"iris.r1.train.-1.1\", \"dag\": \"iris\", \"run_id\": \"r1\", "
    "\"step\": \"train\", \"map_index\": -1, \"attempt\": 1, "
    "\"command\": [\"/usr/bin/python3\", \"src/train.py\"], \"workdir\": \"$(SLUICE_RUN_DIR)\", "
    "\"repo\": {\"url\": \"https://git.example.com/ml/dags.git\", \"commit\": \"3f2a9c1\"}, "
    "\"inputs\": {\"artifacts\": {\"code\": {\"from\": \"git\", \"path\": \"src\"}}}}";

static struct kube_options s3_opts(void)
{
    struct kube_options o = base_opts();
    o.artifacts_repository = "s3";
    o.artifacts_endpoint = "https://s3.eu-west-3.amazonaws.com";
    o.artifacts_bucket = "ml-artifacts";
    o.artifacts_prefix = "runs";
    o.artifacts_region = "eu-west-3";
    o.artifacts_part_size_mb = 32;
    o.artifacts_credentials = "sluice-s3";
    return o;
}

/* The entry name of a container's env, or NULL. */
static const cJSON *env_of(const cJSON *container, const char *name)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(container, "env"))
    {
        if (!strcmp(cJSON_GetObjectItem(e, "name")->valuestring, name))
            return e;
    }
    return NULL;
}

static bool has_arg(const cJSON *list, const char *arg)
{
    const cJSON *a;
    cJSON_ArrayForEach(a, list) if (!strcmp(a->valuestring, arg)) return true;
    return false;
}

START_TEST(test_artifacts_are_staged_inside_the_pod)
{
    cJSON *spec = spec_of(art_spec);
    struct kube_options o = s3_opts();
    cJSON *pod = build(spec, &o);
    /* stage-in: after sluice-init, `sluice artifact get` into the working directory */
    ck_assert_str_eq(str_at(pod, "spec.initContainers.0.name"), KUBE_INIT_CONTAINER);
    const cJSON *in = at(pod, "spec.initContainers.1");
    ck_assert_str_eq(str_at(in, "name"), KUBE_STAGE_IN_CONTAINER);
    ck_assert_str_eq(str_at(in, "image"), "ghcr.io/sluice-dev/sluice:1.0");
    ck_assert_str_eq(str_at(in, "command.0"), "/usr/local/bin/sluice");
    ck_assert_str_eq(str_at(in, "command.1"), "artifact");
    ck_assert_str_eq(str_at(in, "command.2"), "get");
    ck_assert(has_arg(at(in, "command"), "--spec-env"));
    ck_assert_str_eq(str_at(in, "command.8"), "/sluice/work/iris/r1"); /* --workdir */
    ck_assert_str_eq(str_at(pod, "spec.containers.0.workingDir"), "/sluice/work/iris/r1");
    /* the work volume at the same path as in the main container; not the helper's */
    ck_assert_str_eq(str_at(in, "volumeMounts.0.name"), "work");
    ck_assert_str_eq(str_at(in, "volumeMounts.0.mountPath"), "/sluice/work");
    ck_assert_int_eq(cJSON_GetArraySize(at(in, "volumeMounts")), 1);
    /* the bindings, '$' escaped for the kubelet, which expands $(VAR) in env values */
    const cJSON *se = env_of(in, KUBE_ENV_ARTIFACT_SPEC);
    ck_assert_ptr_nonnull(se);
    const char *sv = cJSON_GetObjectItem(se, "value")->valuestring;
    ck_assert_msg(strstr(sv, "da$$(X)ta") && strstr(sv, "iris/r1/preprocess/1/dataset") &&
                      strstr(sv, "\"attempt\":2") && strstr(sv, "iris/r1/train/2/model"),
                  "%s", sv);
    ck_assert_ptr_null(strstr(sv, "train.py")); /* only what staging needs */
    /* the repository's settings, and credentials only as references to the Secret */
    ck_assert_str_eq(
        cJSON_GetObjectItem(env_of(in, "SLUICE_ARTIFACTS_REPOSITORY"), "value")->valuestring, "s3");
    ck_assert_str_eq(
        cJSON_GetObjectItem(env_of(in, "SLUICE_ARTIFACTS_BUCKET"), "value")->valuestring,
        "ml-artifacts");
    ck_assert_str_eq(
        cJSON_GetObjectItem(env_of(in, "SLUICE_ARTIFACTS_PART_SIZE_MB"), "value")->valuestring,
        "32");
    ck_assert_ptr_null(env_of(in, "SLUICE_ARTIFACTS_ROOT"));
    const cJSON *ak = env_of(in, "AWS_ACCESS_KEY_ID");
    ck_assert_ptr_null(cJSON_GetObjectItem(ak, "value"));
    ck_assert_str_eq(str_at(ak, "valueFrom.secretKeyRef.name"), "sluice-s3");
    ck_assert_str_eq(str_at(ak, "valueFrom.secretKeyRef.key"), "access_key_id");
    ck_assert_str_eq(str_at(env_of(in, "AWS_SECRET_ACCESS_KEY"), "valueFrom.secretKeyRef.key"),
                     "secret_access_key");
    ck_assert(cJSON_IsTrue(at(env_of(in, "AWS_SESSION_TOKEN"), "valueFrom.secretKeyRef.optional")));
    /* stage-out: the sidecar, from the sluice image, waits for the helper's word through
     * the helper's emptyDir and stores the outputs from the same working directory */
    const cJSON *mainc = at(pod, "spec.containers.0");
    ck_assert(!has_arg(at(mainc, "command"), "--artifacts"));
    ck_assert(has_arg(at(mainc, "command"), "--handshake"));
    ck_assert_str_eq(str_at(mainc, "volumeMounts.0.name"), "sluice-bin");
    ck_assert_ptr_null(at(mainc, "volumeMounts.0.readOnly")); /* the helper writes there */
    ck_assert_int_eq(cJSON_GetArraySize(at(pod, "spec.containers")), 2);
    const cJSON *out = at(pod, "spec.containers.1");
    ck_assert_str_eq(str_at(out, "name"), KUBE_STAGE_OUT_CONTAINER);
    ck_assert_str_eq(str_at(out, "image"), "ghcr.io/sluice-dev/sluice:1.0");
    const char *want_cmd[] = {"/usr/local/bin/sluice",
                              "pod",
                              "stage-out",
                              "--handshake",
                              KUBE_HELPER_DIR,
                              "--spec-env",
                              KUBE_ENV_ARTIFACT_SPEC,
                              "--workdir",
                              "/sluice/work/iris/r1",
                              "--message-file",
                              KUBE_TERMINATION_PATH};
    ck_assert_int_eq(cJSON_GetArraySize(at(out, "command")), 11);
    for (int i = 0; i < 11; i++)
        ck_assert_str_eq(cJSON_GetArrayItem(at(out, "command"), i)->valuestring, want_cmd[i]);
    ck_assert_str_eq(str_at(out, "volumeMounts.0.name"), "work");
    ck_assert_str_eq(str_at(out, "volumeMounts.0.mountPath"), "/sluice/work");
    ck_assert_str_eq(str_at(out, "volumeMounts.1.name"), "sluice-bin");
    ck_assert_str_eq(str_at(out, "volumeMounts.1.mountPath"), KUBE_HELPER_DIR);
    ck_assert(cJSON_IsTrue(at(out, "volumeMounts.1.readOnly")));
    ck_assert_str_eq(str_at(out, "terminationMessagePath"), KUBE_TERMINATION_PATH);
    ck_assert_str_eq(str_at(out, "resources.limits.memory"), "256Mi");
    ck_assert_str_eq(str_at(env_of(out, KUBE_ENV_ARTIFACT_SPEC), "value"), sv);
    ck_assert_str_eq(str_at(env_of(out, "SLUICE_ARTIFACTS_REPOSITORY"), "value"), "s3");
    ck_assert_str_eq(str_at(env_of(out, "AWS_ACCESS_KEY_ID"), "valueFrom.secretKeyRef.name"),
                     "sluice-s3");
    cJSON_Delete(pod);

    /* the Secret's own key names (the chart's secrets.s3 keys); no token key: none asked */
    o.artifacts_credentials_keys = "AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY";
    pod = build(spec, &o);
    ck_assert_str_eq(str_at(env_of(at(pod, "spec.containers.1"), "AWS_SECRET_ACCESS_KEY"),
                            "valueFrom.secretKeyRef.key"),
                     "AWS_SECRET_ACCESS_KEY");
    ck_assert_ptr_null(env_of(at(pod, "spec.containers.1"), "AWS_SESSION_TOKEN"));
    cJSON_Delete(pod);
    o.artifacts_credentials_keys = NULL;

    /* no Secret: no credentials at all (unsigned requests), never the worker's own */
    o.artifacts_credentials = NULL;
    pod = build(spec, &o);
    ck_assert_ptr_null(env_of(at(pod, "spec.initContainers.1"), "AWS_ACCESS_KEY_ID"));
    ck_assert_ptr_null(env_of(at(pod, "spec.containers.0"), "AWS_ACCESS_KEY_ID"));
    ck_assert_ptr_null(env_of(at(pod, "spec.containers.1"), "AWS_ACCESS_KEY_ID"));
    cJSON_Delete(pod);

    /* helper: image - the stage-in container is the only init container; the sidecar is
     * still the sluice image's (the step image's sluice never holds the credentials), and
     * the handshake gets an emptyDir of its own */
    o.helper = KUBE_HELPER_IMAGE;
    pod = build(spec, &o);
    ck_assert_str_eq(str_at(pod, "spec.initContainers.0.name"), KUBE_STAGE_IN_CONTAINER);
    ck_assert_ptr_null(at(pod, "spec.initContainers.1"));
    ck_assert_str_eq(str_at(pod, "spec.containers.0.command.0"), "/usr/local/bin/sluice");
    ck_assert_str_eq(str_at(pod, "spec.volumes.0.name"), "sluice-bin");
    ck_assert_ptr_nonnull(at(pod, "spec.volumes.0.emptyDir"));
    ck_assert_str_eq(str_at(pod, "spec.containers.0.volumeMounts.0.mountPath"), KUBE_HELPER_DIR);
    ck_assert_str_eq(str_at(pod, "spec.containers.1.name"), KUBE_STAGE_OUT_CONTAINER);
    ck_assert_str_eq(str_at(pod, "spec.containers.1.image"), "ghcr.io/sluice-dev/sluice:1.0");
    cJSON_Delete(pod);

    /* fs: the repository's claim mounted at artifacts.root in both containers */
    struct kube_options f = base_opts();
    f.artifacts_repository = "fs";
    f.artifacts_root = "/mnt/artifacts";
    f.artifacts_claim = "sluice-artifacts";
    pod = build(spec, &f);
    ck_assert_str_eq(str_at(pod, "spec.volumes.2.name"), "artifacts");
    ck_assert_str_eq(str_at(pod, "spec.volumes.2.persistentVolumeClaim.claimName"),
                     "sluice-artifacts");
    ck_assert_str_eq(str_at(pod, "spec.containers.0.volumeMounts.2.mountPath"), "/mnt/artifacts");
    ck_assert_str_eq(str_at(pod, "spec.initContainers.1.volumeMounts.1.mountPath"),
                     "/mnt/artifacts");
    ck_assert_str_eq(cJSON_GetObjectItem(
                         env_of(at(pod, "spec.initContainers.1"), "SLUICE_ARTIFACTS_ROOT"), "value")
                         ->valuestring,
                     "/mnt/artifacts");
    ck_assert_ptr_null(env_of(at(pod, "spec.containers.0"), "AWS_ACCESS_KEY_ID"));
    /* ... and in the sidecar, which moves the outputs into it */
    const cJSON *fout = at(pod, "spec.containers.1");
    ck_assert_str_eq(str_at(fout, "name"), KUBE_STAGE_OUT_CONTAINER);
    ck_assert_str_eq(str_at(fout, "volumeMounts.1.name"), "artifacts");
    ck_assert_str_eq(str_at(fout, "volumeMounts.1.mountPath"), "/mnt/artifacts");
    ck_assert_str_eq(str_at(env_of(fout, "SLUICE_ARTIFACTS_ROOT"), "value"), "/mnt/artifacts");
    ck_assert_ptr_null(env_of(at(pod, "spec.containers.0"), "SLUICE_ARTIFACTS_REPOSITORY"));
    cJSON_Delete(pod);

    /* none: keys are where the upstream step left them - no stage-in; the helper still
     * checks that declared outputs exist, as `local` does */
    struct kube_options n = base_opts();
    pod = build(spec, &n);
    ck_assert_int_eq(cJSON_GetArraySize(at(pod, "spec.initContainers")), 1);
    ck_assert(has_arg(at(pod, "spec.containers.0.command"), "--artifacts"));
    ck_assert(!has_arg(at(pod, "spec.containers.0.command"), "--handshake"));
    ck_assert_int_eq(cJSON_GetArraySize(at(pod, "spec.containers")), 1); /* no sidecar */
    ck_assert(cJSON_IsTrue(at(pod, "spec.containers.0.volumeMounts.0.readOnly")));
    cJSON_Delete(pod);
    /* ... but a URL input is fetched */
    cJSON *url = spec_of(art_spec);
    cJSON *from = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(url, "inputs"), "artifacts"),
                            "dataset"),
        "from");
    cJSON_SetValuestring(from, "https://example.com/iris.csv");
    pod = build(url, &n);
    ck_assert_str_eq(str_at(pod, "spec.initContainers.1.name"), KUBE_STAGE_IN_CONTAINER);
    cJSON_Delete(pod);
    cJSON_Delete(url);
    /* no helper and no repository: artifacts are ignored, as before */
    n.helper = KUBE_HELPER_NONE;
    pod = build(spec, &n);
    ck_assert_ptr_null(at(pod, "spec.initContainers"));
    ck_assert_ptr_null(env_of(at(pod, "spec.containers.0"), KUBE_ENV_ARTIFACT_SPEC));
    cJSON_Delete(pod);
    cJSON_Delete(spec);
}
END_TEST

/* Whether any env entry of container mentions the repository or its credentials: an AWS_*
 * or SLUICE_ARTIFACT* name, or a reference to the Secret secret. */
static bool env_has_repository(const cJSON *container, const char *secret)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(container, "env"))
    {
        const char *name = cJSON_GetObjectItem(e, "name")->valuestring;
        const cJSON *ref = at(e, "valueFrom.secretKeyRef.name");
        /* SLUICE_ARTIFACT_BASE, the artifacts' location for templates, is no setting */
        if (!strncmp(name, "AWS_", 4) || !strncmp(name, "SLUICE_ARTIFACTS_", 17) ||
            !strcmp(name, KUBE_ENV_ARTIFACT_SPEC) ||
            (cJSON_IsString(ref) && !strcmp(ref->valuestring, secret)))
            return true;
    }
    return false;
}

/* The step's own container never holds the repository's write credentials: only the
 * staging containers (init and sidecar) get them, in every helper mode. */
START_TEST(test_credentials_reach_only_the_staging_containers)
{
    cJSON *spec = spec_of(art_spec);
    const enum kube_helper modes[] = {KUBE_HELPER_INIT, KUBE_HELPER_IMAGE};
    for (size_t i = 0; i < 2; i++) {
        struct kube_options o = s3_opts();
        o.helper = modes[i];
        cJSON *pod = build(spec, &o);
        const cJSON *mainc = at(pod, "spec.containers.0");
        ck_assert_str_eq(str_at(mainc, "name"), KUBE_MAIN_CONTAINER);
        ck_assert_msg(!env_has_repository(mainc, "sluice-s3"), "helper mode %zu: %s", i,
                      cJSON_PrintUnformatted(at(mainc, "env")));
        const cJSON *out = at(pod, "spec.containers.1");
        ck_assert_str_eq(str_at(out, "name"), KUBE_STAGE_OUT_CONTAINER);
        ck_assert(env_has_repository(out, "sluice-s3"));
        const char *vars[] = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"};
        for (size_t v = 0; v < 3; v++) {
            const cJSON *e = env_of(out, vars[v]);
            ck_assert_msg(e, "%s missing in the sidecar", vars[v]);
            ck_assert_ptr_null(cJSON_GetObjectItem(e, "value")); /* a reference, never a value */
            ck_assert_str_eq(str_at(e, "valueFrom.secretKeyRef.name"), "sluice-s3");
        }
        const cJSON *in = at(pod, "spec.initContainers");
        const cJSON *c;
        cJSON_ArrayForEach(c, in)
        {
            if (!strcmp(str_at(c, "name"), KUBE_STAGE_IN_CONTAINER))
                ck_assert(env_has_repository(c, "sluice-s3"));
            else
                ck_assert(!env_has_repository(c, "sluice-s3")); /* sluice-init */
        }
        cJSON_Delete(pod);
    }
    cJSON_Delete(spec);
}
END_TEST

START_TEST(test_artifact_settings_that_cannot_work_are_refused)
{
    struct kube_options o = s3_opts();
    o.helper = KUBE_HELPER_NONE;
    expect_error(art_spec, &o, "artifacts need the pod-side helper");
    o = s3_opts();
    o.artifacts_credentials_keys = "only_one";
    expect_error(art_spec, &o, "kubernetes.artifacts_credentials_keys 'only_one' is not id,secret");
    o.artifacts_credentials_keys = "a,,b";
    expect_error(art_spec, &o, "kubernetes.artifacts_credentials_keys 'a,,b'");
    o = s3_opts();
    o.artifacts_repository = "ftp";
    expect_error(art_spec, &o, "artifacts.repository must be none, s3 or fs, not 'ftp'");
    o = s3_opts();
    o.artifacts_repository = "fs";
    expect_error(art_spec, &o, "artifacts.root must be an absolute path");
    o.artifacts_root = "relative/dir";
    expect_error(art_spec, &o, "artifacts.root must be an absolute path");
    /* inputs staged into a directory the main container would not see */
    o = s3_opts();
    char *outside = xstrdup(art_spec);
    char *wd = strstr(outside, "$(SLUICE_RUN_DIR)");
    memcpy(wd, "/opt/app/iris/code", strlen("$(SLUICE_RUN_DIR)"));
    expect_error(outside, &o,
                 "must be on the work volume (kubernetes.work_mount '/sluice/work'), "
                 "not '/opt/app/iris/cod'");
    /* outputs stored from a directory the sidecar would not see */
    cJSON *only_out = spec_of(outside);
    cJSON_DeleteItemFromObject(only_out, "inputs");
    char *text = cJSON_PrintUnformatted(only_out);
    expect_error(text, &o,
                 "output artifacts are stored from the working directory by the "
                 "sluice-stage-out container, so it must be on the work volume "
                 "(kubernetes.work_mount '/sluice/work'), not '/opt/app/iris/cod'");
    /* ... with no repository the helper checks them in place: any directory will do */
    struct kube_options none = base_opts();
    cJSON_Delete(build(only_out, &none));
    free(text);
    cJSON_Delete(only_out);
    free(outside);
}
END_TEST

START_TEST(test_every_pod_passes_the_official_schema)
{
    all_pods = cJSON_CreateArray();
    struct kube_options o = base_opts();
    o.dags_claim = "dags";
    o.dags_mount = "/sluice/dags";
    size_t n = 0;
    add_example_pods("dags/iris.yaml", &o, &n);
    add_example_pods("dags/finetune.yaml", &o, &n);
    add_example_pods("dags/etl-fanout.yaml", &o, &n);
    ck_assert_uint_eq(n, 4 + 3 + (1 + 2 + 1 + 1)); /* every step, both fan-out items */
    /* every option */
    cJSON *spec = spec_of(base_spec);
    struct kube_options v[6];
    for (size_t i = 0; i < 6; i++)
        v[i] = base_opts();
    v[0].helper = KUBE_HELPER_IMAGE;
    v[1].run_as_non_root = false;
    v[2].node_selector = "a=b";
    v[2].tolerations = "[{\"operator\": \"Exists\"}]";
    v[3].image_pull_policy = "IfNotPresent";
    v[3].image_pull_secrets = "regcred";
    v[3].service_account = "runner";
    v[4].work_claim = NULL;
    v[4].gpu_resource = "amd.com/gpu";
    v[5].run_as_user = 2000;
    for (size_t i = 0; i < 6; i++)
        cJSON_Delete(build(spec, &v[i]));
    struct kube_options none = base_opts();
    none.helper = KUBE_HELPER_NONE;
    cJSON_DeleteItemFromObject(spec, "outputs");
    cJSON_Delete(build(spec, &none));
    cJSON_Delete(spec);
    /* every artifact option */
    spec = spec_of(art_spec);
    struct kube_options a[4] = {s3_opts(), s3_opts(), base_opts(), s3_opts()};
    a[1].artifacts_credentials = NULL;
    a[1].helper = KUBE_HELPER_IMAGE;
    a[2].artifacts_repository = "fs";
    a[2].artifacts_root = "/mnt/artifacts";
    a[2].artifacts_claim = "sluice-artifacts";
    a[3].artifacts_path_style = true;
    a[3].artifacts_credentials_keys = "AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY";
    a[3].image_pull_policy = "Always";
    for (size_t i = 0; i < 4; i++)
        cJSON_Delete(build(spec, &a[i]));
    cJSON_Delete(spec);
    /* the DAG repository as an input, with every credential */
    spec = spec_of(git_spec);
    struct kube_options g = base_opts();
    g.git_username = "sluice";
    g.git_credentials = "dags-git";
    cJSON_Delete(build(spec, &g));
    cJSON_Delete(spec);

    char dir[] = "/tmp/sluice-kube-pod-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *file = xasprintf("%s/pods.json", dir);
    char *text = cJSON_Print(all_pods);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    char *script = test_path("tests/k8s/schema_check.py");
    char *argv[] = {
        "/usr/bin/python3",       script, "--schema", (char *)harness_k8s_schema_path(), "--kind",
        "io.k8s.api.core.v1.Pod", file,   NULL};
    char *out = NULL, *err = NULL;
    int rc = test_run(argv, &out, &err);
    ck_assert_msg(rc == 0, "%d pods; schema_check exit %d:\n%s%s", cJSON_GetArraySize(all_pods), rc,
                  out, err);
    free(out);
    free(err);
    free(script);
    free(text);
    unlink(file);
    rmdir(dir);
    free(file);
    cJSON_Delete(all_pods);
    all_pods = NULL;
}
END_TEST

/* A from: git input: the stage-in container alone gets the git.* credentials, from the
 * Secret kubernetes.git_credentials (every key optional). */
START_TEST(test_git_input_credentials_reach_the_stage_in_only)
{
    cJSON *spec = spec_of(git_spec);
    struct kube_options o = base_opts();
    o.git_username = "sluice";
    o.git_credentials = "dags-git";
    cJSON *pod = build(spec, &o);
    const cJSON *in = at(pod, "spec.initContainers.1");
    ck_assert_str_eq(str_at(in, "name"), KUBE_STAGE_IN_CONTAINER);
    ck_assert_str_eq(str_at(env_of(in, "SLUICE_GIT_USERNAME"), "value"), "sluice");
    const cJSON *pw = env_of(in, "SLUICE_GIT_PASSWORD");
    ck_assert_str_eq(str_at(pw, "valueFrom.secretKeyRef.name"), "dags-git");
    ck_assert_str_eq(str_at(pw, "valueFrom.secretKeyRef.key"), "password");
    ck_assert(cJSON_IsTrue(at(pw, "valueFrom.secretKeyRef.optional")));
    ck_assert_str_eq(str_at(env_of(in, "SLUICE_GIT_SSH_KEY_FILE"), "value"),
                     "/var/run/sluice-git/ssh_key");
    ck_assert_str_eq(str_at(env_of(in, "SLUICE_GIT_KNOWN_HOSTS_FILE"), "value"),
                     "/var/run/sluice-git/known_hosts");
    /* the files: a volume of the Secret's two keys, mounted read-only in the stage-in */
    const cJSON *vol = NULL, *v;
    cJSON_ArrayForEach(
        v, at(pod, "spec.volumes")) if (!strcmp(str_at(v, "name"), "git-credentials")) vol = v;
    ck_assert_ptr_nonnull(vol);
    ck_assert_str_eq(str_at(vol, "secret.secretName"), "dags-git");
    ck_assert(cJSON_IsTrue(at(vol, "secret.optional")));
    ck_assert_str_eq(str_at(vol, "secret.items.0.key"), "ssh_key");
    ck_assert_str_eq(str_at(vol, "secret.items.1.path"), "known_hosts");
    bool mounted = false;
    cJSON_ArrayForEach(v, at(in, "volumeMounts")) mounted |=
        !strcmp(str_at(v, "name"), "git-credentials") && cJSON_IsTrue(at(v, "readOnly"));
    ck_assert(mounted);
    /* the step's own container sees none of it */
    const cJSON *mainc = at(pod, "spec.containers.0");
    ck_assert_ptr_null(env_of(mainc, "SLUICE_GIT_PASSWORD"));
    cJSON_ArrayForEach(v, at(mainc, "volumeMounts"))
        ck_assert_str_ne(str_at(v, "name"), "git-credentials");
    ck_assert_ptr_null(env_of(in, "SLUICE_GIT_CA_FILE")); /* the fourth key: none named */
    cJSON_Delete(pod);

    /* a private CA as the fourth key */
    o.git_credentials_keys = "password,ssh_key,known_hosts,ca.pem";
    pod = build(spec, &o);
    in = at(pod, "spec.initContainers.1");
    ck_assert_str_eq(str_at(env_of(in, "SLUICE_GIT_CA_FILE"), "value"),
                     "/var/run/sluice-git/ca.crt");
    cJSON_ArrayForEach(
        v, at(pod, "spec.volumes")) if (!strcmp(str_at(v, "name"), "git-credentials")) vol = v;
    ck_assert_str_eq(str_at(vol, "secret.items.2.key"), "ca.pem");
    cJSON_Delete(pod);

    /* a token only (the Secret's key named): no volume */
    o.git_credentials_keys = "token,,";
    pod = build(spec, &o);
    in = at(pod, "spec.initContainers.1");
    ck_assert_str_eq(str_at(env_of(in, "SLUICE_GIT_PASSWORD"), "valueFrom.secretKeyRef.key"),
                     "token");
    ck_assert_ptr_null(env_of(in, "SLUICE_GIT_SSH_KEY_FILE"));
    cJSON_ArrayForEach(v, at(pod, "spec.volumes"))
        ck_assert_str_ne(str_at(v, "name"), "git-credentials");
    cJSON_Delete(pod);

    /* no Secret configured: the user name only */
    o.git_credentials = NULL;
    pod = build(spec, &o);
    in = at(pod, "spec.initContainers.1");
    ck_assert_ptr_nonnull(env_of(in, "SLUICE_GIT_USERNAME"));
    ck_assert_ptr_null(env_of(in, "SLUICE_GIT_PASSWORD"));
    cJSON_Delete(pod);
    cJSON_Delete(spec);

    /* inputs that are not git get no credentials */
    spec = spec_of(art_spec);
    o = s3_opts();
    o.git_credentials = "dags-git";
    pod = build(spec, &o);
    ck_assert_ptr_null(env_of(at(pod, "spec.initContainers.1"), "SLUICE_GIT_PASSWORD"));
    cJSON_Delete(pod);
    cJSON_Delete(spec);
}
END_TEST

/* {{ steps.s.outputs.artifacts.a }} renders "$(SLUICE_ARTIFACT_BASE)<key>": the main
 * container defines the variable as the repository's location, for the kubelet to expand. */
START_TEST(test_artifact_base_names_the_repository)
{
    cJSON *spec = spec_of(art_spec);
    struct kube_options o = s3_opts();
    o.artifacts_prefix = "/runs/";
    cJSON *pod = build(spec, &o);
    const cJSON *mainc = at(pod, "spec.containers.0");
    ck_assert_str_eq(str_at(env_of(mainc, "SLUICE_ARTIFACT_BASE"), "value"),
                     "s3://ml-artifacts/runs/");
    cJSON_Delete(pod);
    o = base_opts();
    o.artifacts_repository = "fs";
    o.artifacts_root = "/mnt/artifacts/";
    o.artifacts_claim = "art";
    pod = build(spec, &o);
    mainc = at(pod, "spec.containers.0");
    ck_assert_str_eq(str_at(env_of(mainc, "SLUICE_ARTIFACT_BASE"), "value"), "/mnt/artifacts/");
    cJSON_Delete(pod);
    o = base_opts();
    pod = build(spec, &o);
    ck_assert_str_eq(str_at(env_of(at(pod, "spec.containers.0"), "SLUICE_ARTIFACT_BASE"), "value"),
                     "");
    cJSON_Delete(pod);
    cJSON_Delete(spec);
}
END_TEST

Suite *suite_worker_kube_pod(void)
{
    Suite *s = suite_create("worker_kube_pod");
    TCase *tc = tcase_create("pod");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_pod_names);
    tcase_add_test(tc, test_pod_fields);
    tcase_add_test(tc, test_helper_modes_and_minimal_options);
    tcase_add_test(tc, test_bad_input_is_refused_with_a_reason);
    tcase_add_test(tc, test_artifacts_are_staged_inside_the_pod);
    tcase_add_test(tc, test_credentials_reach_only_the_staging_containers);
    tcase_add_test(tc, test_artifact_settings_that_cannot_work_are_refused);
    tcase_add_test(tc, test_every_pod_passes_the_official_schema);
    tcase_add_test(tc, test_artifact_base_names_the_repository);
    tcase_add_test(tc, test_git_input_credentials_reach_the_stage_in_only);
    suite_add_tcase(s, tc);
    return s;
}
