/*
 * worker/kube_pod.c - the Pod of an attempt, built from its dispatch spec. Pure.
 *
 * The Pod is the one a real cluster gets (docs/kubernetes.md, "The Pod"); the tests
 * validate every Pod built here against the official schema. Decisions, in short:
 *
 *   - `$(VAR)` references in command, args, workdir and output param paths are expanded
 *     here, against the plain (non-secret) environment, exactly as the local executor
 *     does; the results are then escaped ('$' -> "$$") so that the kubelet, which expands
 *     command and args again, leaves them as they are. env values go to the Pod as
 *     written: the kubelet expands them against earlier entries, the same rule. The
 *     kubelet does not expand workingDir at all, which is why it must happen here.
 *   - requests are cpu and memory; limits are memory (= its request: a pod over its
 *     memory is OOMKilled rather than starving its neighbours) and the GPUs (extended
 *     resources are set as limits); no cpu limit, so a step is never throttled.
 *   - the queue's node selector and tolerations come first; a step's node_selector wins
 *     per key, its tolerations are added.
 *   - artifacts are staged inside the pod, never by the worker: the init container
 *     sluice-stage-in (after sluice-init) fetches the inputs into the working directory,
 *     which must therefore be on the work volume both containers mount; the sidecar
 *     sluice-stage-out waits for the helper in the main container to report the step's
 *     end (files in the helper's emptyDir) and stores the declared outputs from the same
 *     working directory. Both read the bindings from one variable (the spec's inputs,
 *     outputs and ids as JSON) and the repository from SLUICE_ARTIFACTS_* variables with
 *     no sluice.yaml, so nothing in the step's image or working directory changes them.
 *     Credentials are secretKeyRefs to kubernetes.artifacts_credentials, never values,
 *     and only the two staging containers get them: the step's own code never sees the
 *     repository's write credentials. Without a repository the helper only checks that
 *     declared outputs exist.
 */
#include "worker/kube.h"
#include "worker/artifacts.h"
#include "worker/expand.h"
#include "worker/worker_int.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_WORK_MOUNT  "/sluice/work"
#define DEFAULT_DAGS_MOUNT  "/sluice/dags"
#define DEFAULT_RUN_AS      1000
#define VOL_HELPER          "sluice-bin"
#define VOL_WORK            "work"
#define VOL_DAGS            "dags"
#define VOL_ARTIFACTS       "artifacts"
#define NO_CONFIG           "/dev/null" /* the staging commands' sluice.yaml: none, env only */
#define DEFAULT_SECRET_KEYS "access_key_id,secret_access_key,session_token"
#define VOL_GIT             "git-credentials"
#define GIT_CREDENTIALS_DIR "/var/run/sluice-git" /* the stage-in container's only */
#define DEFAULT_GIT_KEYS    "password,ssh_key,known_hosts"

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static bool is_alnum_lower(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

char *kube_pod_name(const char *attempt_id)
{
    /* the readable part: the id's characters made lower-case [a-z0-9-] */
    struct strbuf sb = STRBUF_INIT;
    for (const char *p = attempt_id; *p; p++) {
        char c = (char)tolower((unsigned char)*p);
        if (!is_alnum_lower(c))
            c = '-';
        if (c == '-' && (sb.len == 0 || sb.buf[sb.len - 1] == '-'))
            continue;
        strbuf_addch(&sb, c);
    }
    size_t keep = KUBE_POD_NAME_MAX - 17; /* room for "-" + 16 hex digits */
    if (sb.len > keep)
        sb.len = keep;
    while (sb.len && sb.buf[sb.len - 1] == '-')
        sb.len--;
    sb.buf[sb.len] = '\0';
    char *name = xasprintf("%s%s%016llx", sb.len ? sb.buf : "", sb.len ? "-" : "s",
                           (unsigned long long)fnv1a64(attempt_id));
    strbuf_release(&sb);
    return name;
}

static bool label_char(char c)
{
    return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.';
}

char *kube_label_value(const char *s)
{
    size_t n = strlen(s);
    bool ok = n <= KUBE_LABEL_VALUE_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = label_char(s[i]);
    if (ok && n)
        ok = isalnum((unsigned char)s[0]) && isalnum((unsigned char)s[n - 1]);
    if (ok)
        return xstrdup(s);
    struct strbuf sb = STRBUF_INIT;
    for (size_t i = 0; i < n && sb.len < KUBE_LABEL_VALUE_MAX - 9; i++)
        strbuf_addch(&sb, label_char(s[i]) ? s[i] : '_');
    while (sb.len && !isalnum((unsigned char)sb.buf[0])) {
        memmove(sb.buf, sb.buf + 1, sb.len);
        sb.len--;
    }
    while (sb.len && !isalnum((unsigned char)sb.buf[sb.len - 1]))
        sb.buf[--sb.len] = '\0';
    char *out =
        xasprintf("%s%s%08x", sb.buf, sb.len ? "-" : "x", (unsigned)(fnv1a64(s) & 0xffffffffu));
    strbuf_release(&sb);
    return out;
}

/* --- small helpers -------------------------------------------------------------------- */

static const char *str_or(const char *s, const char *def)
{
    return s && *s ? s : def;
}

static const char *spec_str(const cJSON *spec, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double spec_num(const cJSON *spec, const char *key, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

/* A string with every '$' doubled: the kubelet turns "$$" back into '$'. */
static cJSON *escaped(const char *s)
{
    struct strbuf sb = STRBUF_INIT;
    for (; *s; s++) {
        if (*s == '$')
            strbuf_addch(&sb, '$');
        strbuf_addch(&sb, *s);
    }
    cJSON *v = cJSON_CreateString(sb.buf);
    strbuf_release(&sb);
    return v;
}

static void add_label(cJSON *labels, const char *key, const char *value)
{
    char *v = kube_label_value(value);
    cJSON_DeleteItemFromObjectCaseSensitive(labels, key);
    cJSON_AddStringToObject(labels, key, v);
    free(v);
}

/* Memory bytes as a canonical quantity: Gi, Mi or Ki when exact, else bytes. */
static void memory_quantity(char *buf, size_t len, double bytes)
{
    long long b = (long long)bytes;
    if (b % (1LL << 30) == 0)
        snprintf(buf, len, "%lldGi", b >> 30);
    else if (b % (1LL << 20) == 0)
        snprintf(buf, len, "%lldMi", b >> 20);
    else if (b % 1024 == 0)
        snprintf(buf, len, "%lldKi", b >> 10);
    else
        snprintf(buf, len, "%lld", b);
}

/* The plain environment for $(VAR) lookups: name -> value, in order. */
struct env_list {
    char **names, **values;
    size_t n, alloc_n, alloc_v;
};

static void env_set(struct env_list *e, const char *name, const char *value)
{
    for (size_t i = 0; i < e->n; i++) {
        if (!strcmp(e->names[i], name)) {
            free(e->values[i]);
            e->values[i] = value ? xstrdup(value) : NULL;
            return;
        }
    }
    XGROW(e->names, e->alloc_n, e->n + 1);
    XGROW(e->values, e->alloc_v, e->n + 1);
    e->names[e->n] = xstrdup(name);
    e->values[e->n++] = value ? xstrdup(value) : NULL;
}

static void env_release(struct env_list *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->names[i]);
        free(e->values[i]);
    }
    free(e->names);
    free(e->values);
}

/* NULL values (secrets) are not substituted: they stay as written. */
static const char *env_lookup(void *data, const char *name, size_t len)
{
    const struct env_list *e = data;
    for (size_t i = e->n; i > 0; i--)
        if (strlen(e->names[i - 1]) == len && !memcmp(e->names[i - 1], name, len))
            return e->values[i - 1];
    return NULL;
}

static char *expand_str(const char *in, struct env_list *env)
{
    struct strbuf sb = STRBUF_INIT;
    worker_expand(&sb, in, env_lookup, env);
    return strbuf_detach(&sb, NULL);
}

/* "k=v,k2=v2" into obj. Returns 0 or -1. */
static int parse_kv(cJSON *obj, const char *text)
{
    char *copy = xstrdup(text);
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok) {
            rc = -1;
            break;
        }
        *eq = '\0';
        cJSON_DeleteItemFromObjectCaseSensitive(obj, tok);
        cJSON_AddStringToObject(obj, tok, eq + 1);
    }
    free(copy);
    return rc;
}

/* A step toleration {key, operator, value, effect, toleration_seconds} in Kubernetes form. */
static cJSON *toleration(const cJSON *t)
{
    cJSON *o = cJSON_CreateObject();
    static const char *const keys[][2] = {
        {"key", "key"}, {"operator", "operator"}, {"value", "value"}, {"effect", "effect"}};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *v = spec_str(t, keys[i][0]);
        if (v)
            cJSON_AddStringToObject(o, keys[i][1], v);
    }
    const cJSON *secs = cJSON_GetObjectItemCaseSensitive(t, "toleration_seconds");
    if (cJSON_IsNumber(secs))
        cJSON_AddNumberToObject(o, "tolerationSeconds", floor(secs->valuedouble));
    return o;
}

static cJSON *volume_mount(const char *name, const char *path, bool read_only)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "name", name);
    cJSON_AddStringToObject(m, "mountPath", path);
    if (read_only)
        cJSON_AddBoolToObject(m, "readOnly", true);
    return m;
}

static cJSON *claim_volume(const char *name, const char *claim, bool read_only)
{
    cJSON *v = cJSON_CreateObject();
    cJSON_AddStringToObject(v, "name", name);
    cJSON *pvc = cJSON_AddObjectToObject(v, "persistentVolumeClaim");
    cJSON_AddStringToObject(pvc, "claimName", claim);
    if (read_only)
        cJSON_AddBoolToObject(pvc, "readOnly", true);
    return v;
}

static cJSON *empty_dir(const char *name)
{
    cJSON *v = cJSON_CreateObject();
    cJSON_AddStringToObject(v, "name", name);
    cJSON_AddObjectToObject(v, "emptyDir");
    return v;
}

static cJSON *container_security(const struct kube_options *o)
{
    cJSON *sc = cJSON_CreateObject();
    cJSON_AddBoolToObject(sc, "allowPrivilegeEscalation", false);
    if (o->run_as_non_root) {
        cJSON *caps = cJSON_AddObjectToObject(sc, "capabilities");
        cJSON *drop = cJSON_AddArrayToObject(caps, "drop");
        cJSON_AddItemToArray(drop, cJSON_CreateString("ALL"));
    }
    return sc;
}

/* --- artifacts -------------------------------------------------------------------------- */

static bool repo_is(const struct kube_options *o, const char *kind)
{
    return !strcmp(str_or(o->artifacts_repository, "none"), kind);
}

/* Whether spec has inputs the stage-in container would fetch: a key needs a repository
 * (without one the upstream output is where the upstream step left it, as for `local`),
 * a URI is always fetched. */
static bool has_inputs_to_stage(const cJSON *spec, const struct kube_options *o)
{
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(spec, "inputs"), "artifacts");
    const cJSON *in;
    cJSON_ArrayForEach(in, ins)
    {
        const char *from = spec_str(in, "from");
        if (!repo_is(o, "none") || !from)
            return true; /* a malformed one: `sluice artifact get` says what is wrong */
        if (strstr(from, "://") || !strcmp(from, "git")) /* a URI, or the DAG repository */
            return true;
    }
    return false;
}

static bool has_outputs(const cJSON *spec)
{
    return cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(
               cJSON_GetObjectItemCaseSensitive(spec, "outputs"), "artifacts")) > 0;
}

/* What the staging commands need of spec, as JSON: the artifact bindings and the ids. */
static char *artifact_spec_json(const cJSON *spec)
{
    cJSON *a = cJSON_CreateObject();
    const char *const sections[] = {"inputs", "outputs"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(spec, sections[i]), "artifacts");
        if (v)
            cJSON_AddItemToObject(cJSON_AddObjectToObject(a, sections[i]), "artifacts",
                                  cJSON_Duplicate(v, true));
    }
    const char *const ids[] = {"dag", "run_id", "step", "map_index", "attempt", "repo"};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, ids[i]);
        if (v)
            cJSON_AddItemToObject(a, ids[i], cJSON_Duplicate(v, true));
    }
    char *text = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return text;
}

/* An env entry whose value the kubelet passes through unchanged ('$' escaped). */
static void add_env_value(cJSON *env, const char *name, const char *value)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", name);
    cJSON_AddItemToObject(e, "value", escaped(value));
    cJSON_AddItemToArray(env, e);
}

static void add_env_secret(cJSON *env, const char *name, const char *secret, const char *key,
                           bool optional)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", name);
    cJSON *ref = cJSON_AddObjectToObject(cJSON_AddObjectToObject(e, "valueFrom"), "secretKeyRef");
    cJSON_AddStringToObject(ref, "name", secret);
    cJSON_AddStringToObject(ref, "key", key);
    if (optional)
        cJSON_AddBoolToObject(ref, "optional", true);
    cJSON_AddItemToArray(env, e);
}

/* Whether spec has an input from the DAG repository (from: git). */
static bool wants_git(const cJSON *spec)
{
    const cJSON *in;
    cJSON_ArrayForEach(in, cJSON_GetObjectItemCaseSensitive(
                               cJSON_GetObjectItemCaseSensitive(spec, "inputs"), "artifacts"))
    {
        const char *from = spec_str(in, "from");
        if (from && !strcmp(from, "git"))
            return true;
    }
    return false;
}

/*
 * The git.* credentials of a stage-in that fetches the DAG repository, from the Secret
 * kubernetes.git_credentials: the password (a token) as SLUICE_GIT_PASSWORD; the ssh key,
 * known_hosts and a private CA (when the fourth key is named) as files of a volume that
 * only this container mounts. The keys are optional in the Secret, so one Secret serves
 * https and ssh repositories alike; a file the fetch needs and does not find is named in
 * its error.
 */
static void add_git_credentials(cJSON *env, cJSON *mounts, cJSON *volumes,
                                const struct kube_options *o)
{
    if (o->git_username && *o->git_username)
        add_env_value(env, "SLUICE_GIT_USERNAME", o->git_username);
    if (!o->git_credentials || !*o->git_credentials)
        return;
    /* "password,ssh_key,known_hosts[,ca]": an empty entry is a credential not used */
    char *keys = xstrdup(str_or(o->git_credentials_keys, DEFAULT_GIT_KEYS));
    const char *key[4] = {NULL, NULL, NULL, NULL};
    char *p = keys;
    for (size_t i = 0; i < 4 && p; i++) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        key[i] = *p ? p : NULL;
        p = comma ? comma + 1 : NULL;
    }
    if (key[0])
        add_env_secret(env, "SLUICE_GIT_PASSWORD", o->git_credentials, key[0], true);
    if (key[1] || key[2] || key[3]) {
        cJSON *v = cJSON_CreateObject();
        cJSON_AddStringToObject(v, "name", VOL_GIT);
        cJSON *sec = cJSON_AddObjectToObject(v, "secret");
        cJSON_AddStringToObject(sec, "secretName", o->git_credentials);
        cJSON_AddNumberToObject(sec, "defaultMode", 0440);
        cJSON_AddBoolToObject(sec, "optional", true);
        cJSON *items = cJSON_AddArrayToObject(sec, "items");
        static const char *const files[] = {NULL, "ssh_key", "known_hosts", "ca.crt"};
        static const char *const vars[] = {NULL, "SLUICE_GIT_SSH_KEY_FILE",
                                           "SLUICE_GIT_KNOWN_HOSTS_FILE", "SLUICE_GIT_CA_FILE"};
        for (size_t i = 1; i < 4; i++) {
            if (!key[i])
                continue;
            cJSON *item = cJSON_CreateObject();
            cJSON_AddStringToObject(item, "key", key[i]);
            cJSON_AddStringToObject(item, "path", files[i]);
            cJSON_AddItemToArray(items, item);
            char *path = xasprintf("%s/%s", GIT_CREDENTIALS_DIR, files[i]);
            add_env_value(env, vars[i], path);
            free(path);
        }
        cJSON_AddItemToArray(volumes, v);
        cJSON_AddItemToArray(mounts, volume_mount(VOL_GIT, GIT_CREDENTIALS_DIR, true));
    }
    free(keys);
}

/* The staging environment: the bindings, the repository's settings (as the config loader
 * reads them), and the credentials as references to the Secret. */
static void add_artifact_env(cJSON *env, const char *spec_json, const struct kube_options *o)
{
    add_env_value(env, KUBE_ENV_ARTIFACT_SPEC, spec_json);
    add_env_value(env, "SLUICE_ARTIFACTS_REPOSITORY", str_or(o->artifacts_repository, "none"));
    const struct {
        const char *name, *value;
    } strs[] = {
        {"SLUICE_ARTIFACTS_PREFIX", o->artifacts_prefix},
        {"SLUICE_ARTIFACTS_ROOT", o->artifacts_root},
        {"SLUICE_ARTIFACTS_ENDPOINT", o->artifacts_endpoint},
        {"SLUICE_ARTIFACTS_REGION", o->artifacts_region},
        {"SLUICE_ARTIFACTS_BUCKET", o->artifacts_bucket},
        {"SLUICE_ARTIFACTS_COMPRESSION", o->artifacts_compression},
    };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (strs[i].value && *strs[i].value)
            add_env_value(env, strs[i].name, strs[i].value);
    if (repo_is(o, "s3"))
        add_env_value(env, "SLUICE_ARTIFACTS_PATH_STYLE",
                      o->artifacts_path_style ? "true" : "false");
    const struct {
        const char *name;
        int64_t value;
    } nums[] = {
        {"SLUICE_ARTIFACTS_PART_SIZE_MB", o->artifacts_part_size_mb},
        {"SLUICE_ARTIFACTS_MULTIPART_THRESHOLD_MB", o->artifacts_multipart_threshold_mb},
        {"SLUICE_ARTIFACTS_PARALLEL_PARTS", o->artifacts_parallel_parts},
    };
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        if (nums[i].value > 0) {
            char num[32];
            snprintf(num, sizeof(num), "%lld", (long long)nums[i].value);
            add_env_value(env, nums[i].name, num);
        }
    }
    if (repo_is(o, "s3") && o->artifacts_credentials && *o->artifacts_credentials) {
        static const char *const vars[] = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                           "AWS_SESSION_TOKEN"};
        char *keys = xstrdup(str_or(o->artifacts_credentials_keys, DEFAULT_SECRET_KEYS)),
             *save = NULL;
        size_t i = 0;
        for (char *k = strtok_r(keys, ", ", &save); k && i < 3; k = strtok_r(NULL, ", ", &save)) {
            add_env_secret(env, vars[i], o->artifacts_credentials, k, i == 2);
            i++;
        }
        free(keys);
    }
}

/* Whether path is dir or lies under it. */
static bool path_under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    return !strncmp(path, dir, n) && (path[n] == '\0' || path[n] == '/');
}

/*
 * A container of the sluice image running `<sluice_path> argv...` (each '$' escaped for
 * the kubelet), with the given requests and memory limit and, when share is not NULL,
 * the main container's volumes but the helper's at the same paths. Appended to list;
 * returns it for what the caller adds (env, more mounts).
 */
static cJSON *add_sluice_container(cJSON *list, const char *name, const char *const *argv,
                                   size_t argc, const char *cpu, const char *memory,
                                   const char *memory_limit, const cJSON *share,
                                   const struct kube_options *o)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToArray(list, c);
    cJSON_AddStringToObject(c, "name", name);
    cJSON_AddStringToObject(c, "image", str_or(o->sluice_image, "sluice:latest"));
    if (o->image_pull_policy && *o->image_pull_policy)
        cJSON_AddStringToObject(c, "imagePullPolicy", o->image_pull_policy);
    cJSON *cmd = cJSON_AddArrayToObject(c, "command");
    cJSON_AddItemToArray(cmd, escaped(str_or(o->sluice_path, "/usr/local/bin/sluice")));
    for (size_t i = 0; i < argc; i++)
        cJSON_AddItemToArray(cmd, escaped(argv[i]));
    cJSON *res = cJSON_AddObjectToObject(c, "resources");
    cJSON *req = cJSON_AddObjectToObject(res, "requests");
    cJSON_AddStringToObject(req, "cpu", cpu);
    cJSON_AddStringToObject(req, "memory", memory);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(res, "limits"), "memory", memory_limit);
    cJSON *vm = cJSON_AddArrayToObject(c, "volumeMounts");
    const cJSON *it;
    cJSON_ArrayForEach(it, share) /* the main container's volumes, at the same paths */
    {
        const char *vname = spec_str(it, "name");
        if (vname && strcmp(vname, VOL_HELPER) != 0)
            cJSON_AddItemToArray(vm, cJSON_Duplicate(it, true));
    }
    cJSON_AddStringToObject(c, "terminationMessagePolicy", "FallbackToLogsOnError");
    cJSON_AddItemToObject(c, "securityContext", container_security(o));
    return c;
}

/* The sidecar that stores the declared outputs (docs/kubernetes.md, "Artifacts"): the
 * sluice image, the main container's volumes at the same paths (the working directory
 * and, for fs, the repository's claim) and the helper's emptyDir read-only, where it
 * waits for the helper's report of the step's end. Its own termination message carries
 * its outcome. Returns 0, or -1 with the reason in err. */
static int add_stage_out(cJSON *ps, const cJSON *mounts, const char *wd, const char *work_mount,
                         const char *art_json, const struct kube_options *o, struct strbuf *err)
{
    if (!path_under(wd, work_mount)) {
        strbuf_addf(err,
                    "output artifacts are stored from the working directory by the %s "
                    "container, so it must be on the work volume (kubernetes.work_mount '%s'), "
                    "not '%s'",
                    KUBE_STAGE_OUT_CONTAINER, work_mount, wd);
        return -1;
    }
    const char *parts[] = {"pod",
                           "stage-out",
                           "--handshake",
                           KUBE_HELPER_DIR,
                           "--spec-env",
                           KUBE_ENV_ARTIFACT_SPEC,
                           "--workdir",
                           wd,
                           "--message-file",
                           KUBE_TERMINATION_PATH};
    /* It idles for the whole step, so it reserves little (no cpu limit: an upload uses
     * what is free); transfers stream in constant memory. */
    cJSON *c = add_sluice_container(
        cJSON_GetObjectItemCaseSensitive(ps, "containers"), KUBE_STAGE_OUT_CONTAINER, parts,
        sizeof(parts) / sizeof(parts[0]), "10m", "64Mi", "256Mi", mounts, o);
    add_artifact_env(cJSON_AddArrayToObject(c, "env"), art_json, o);
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(c, "volumeMounts"),
                         volume_mount(VOL_HELPER, KUBE_HELPER_DIR, true));
    cJSON_AddStringToObject(c, "terminationMessagePath", KUBE_TERMINATION_PATH);
    return 0;
}

/* --- the builder ---------------------------------------------------------------------- */

int kube_pod_build(cJSON **out, const cJSON *spec, const struct kube_options *o, struct strbuf *err)
{
    int rc = SL_EINVAL;
    cJSON *pod = NULL;
    struct env_list env = {0};
    char *run_dir = NULL, *attempt_dir = NULL, *name = NULL, *wd = NULL, *art_json = NULL;

    const char *attempt_id = spec_str(spec, "attempt_id");
    const char *dag = spec_str(spec, "dag"), *run_id = spec_str(spec, "run_id");
    const char *step = spec_str(spec, "step");
    if (!cJSON_IsObject(spec) || !attempt_id || !dag || !run_id || !step) {
        strbuf_addstr(err, "malformed spec: attempt_id, dag, run_id and step are required");
        goto cleanup;
    }
    const char *image = str_or(spec_str(spec, "image"), o->default_image);
    if (!image || !*image) {
        strbuf_addstr(err, "no image: the step names none and kubernetes.default_image is not "
                           "set");
        goto cleanup;
    }
    const cJSON *command = cJSON_GetObjectItemCaseSensitive(spec, "command");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(spec, "args");
    const cJSON *env_in = cJSON_GetObjectItemCaseSensitive(spec, "env");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(spec, "outputs"), "params");
    const cJSON *it;
    cJSON_ArrayForEach(it, command) if (!cJSON_IsString(it)) goto malformed;
    cJSON_ArrayForEach(it, args) if (!cJSON_IsString(it)) goto malformed;
    if ((command && !cJSON_IsArray(command)) || (args && !cJSON_IsArray(args)) ||
        (env_in && !cJSON_IsObject(env_in)) || (params && !cJSON_IsObject(params)))
        goto malformed;
    cJSON_ArrayForEach(it, params) if (!cJSON_IsString(it)) goto malformed;
    if (o->helper != KUBE_HELPER_NONE && cJSON_GetArraySize(command) == 0) {
        strbuf_addstr(err, "the step has no command (the pod-side helper runs it)");
        goto cleanup;
    }
    if (o->helper == KUBE_HELPER_NONE && cJSON_GetArraySize(params) > 0) {
        strbuf_addstr(err, "output params need the pod-side helper (kubernetes.helper is none)");
        goto cleanup;
    }
    const char *repo = str_or(o->artifacts_repository, "none");
    if (strcmp(repo, "none") != 0 && strcmp(repo, "s3") != 0 && strcmp(repo, "fs") != 0) {
        strbuf_addf(err, "artifacts.repository must be none, s3 or fs, not '%s'", repo);
        goto cleanup;
    }
    if (repo_is(o, "fs") && !(o->artifacts_root && o->artifacts_root[0] == '/')) {
        strbuf_addstr(err, "artifacts.root must be an absolute path with artifacts.repository fs");
        goto cleanup;
    }
    if (o->artifacts_credentials_keys && *o->artifacts_credentials_keys) {
        /* two or three keys: "id,secret[,token]" */
        size_t commas = 0;
        for (const char *p = o->artifacts_credentials_keys; *p; p++)
            commas += *p == ',';
        if (commas < 1 || commas > 2 || strstr(o->artifacts_credentials_keys, ",,") ||
            o->artifacts_credentials_keys[0] == ',' ||
            o->artifacts_credentials_keys[strlen(o->artifacts_credentials_keys) - 1] == ',') {
            strbuf_addf(err,
                        "kubernetes.artifacts_credentials_keys '%s' is not id,secret[,token] (the "
                        "Secret's keys)",
                        o->artifacts_credentials_keys);
            goto cleanup;
        }
    }
    bool stage_in = has_inputs_to_stage(spec, o), stage_out = has_outputs(spec);
    if (o->helper == KUBE_HELPER_NONE) {
        if ((stage_in || stage_out) && !repo_is(o, "none")) {
            strbuf_addstr(err, "artifacts need the pod-side helper (kubernetes.helper is none)");
            goto cleanup;
        }
        stage_in = stage_out = false; /* without a repository: ignored, as before */
    }
    /* outputs go to a repository through the sidecar; without one, the helper checks
     * that they exist */
    bool sidecar = stage_out && !repo_is(o, "none");
    bool check_outputs = stage_out && !sidecar;
    if (stage_in || stage_out)
        art_json = artifact_spec_json(spec);

    /* the directories, on the work volume, named as the local executor names them */
    struct queue_step_msg m = {
        .attempt_id = (char *)attempt_id,
        .dag_id = (char *)dag,
        .run_id = (char *)run_id,
        .step = (char *)step,
        .map_index = (int64_t)spec_num(spec, "map_index", -1),
        .attempt = (int64_t)spec_num(spec, "attempt", 1),
    };
    const char *work_mount = str_or(o->work_mount, DEFAULT_WORK_MOUNT);
    run_dir = worker_run_dir(work_mount, &m);
    attempt_dir = worker_attempt_dir(run_dir, &m);
    name = kube_pod_name(attempt_id);

    pod = cJSON_CreateObject();
    cJSON_AddStringToObject(pod, "apiVersion", "v1");
    cJSON_AddStringToObject(pod, "kind", "Pod");
    cJSON *meta = cJSON_AddObjectToObject(pod, "metadata");
    cJSON_AddStringToObject(meta, "name", name);
    if (o->namespace_ && *o->namespace_)
        cJSON_AddStringToObject(meta, "namespace", o->namespace_);
    cJSON *labels = cJSON_AddObjectToObject(meta, "labels");
    const cJSON *user_labels = cJSON_GetObjectItemCaseSensitive(spec, "labels");
    cJSON_ArrayForEach(it, user_labels) if (cJSON_IsString(it))
        add_label(labels, it->string, it->valuestring);
    add_label(labels, KUBE_LABEL_MANAGED_BY, KUBE_MANAGED_BY);
    add_label(labels, "sluice.io/dag", dag);
    add_label(labels, "sluice.io/run", run_id);
    add_label(labels, "sluice.io/step", step);
    char num[32];
    snprintf(num, sizeof(num), "%lld", (long long)m.attempt);
    add_label(labels, "sluice.io/attempt", num);
    if (m.map_index >= 0) {
        snprintf(num, sizeof(num), "%lld", (long long)m.map_index);
        add_label(labels, "sluice.io/map-index", num);
    }
    if (o->queue && *o->queue)
        add_label(labels, "sluice.io/queue", o->queue);
    cJSON *annotations = cJSON_AddObjectToObject(meta, "annotations");
    const cJSON *user_ann = cJSON_GetObjectItemCaseSensitive(spec, "annotations");
    cJSON_ArrayForEach(it, user_ann) if (cJSON_IsString(it))
        cJSON_AddStringToObject(annotations, it->string, it->valuestring);
    cJSON_DeleteItemFromObjectCaseSensitive(annotations, KUBE_ANNOTATION_ATTEMPT);
    cJSON_AddStringToObject(annotations, KUBE_ANNOTATION_ATTEMPT, attempt_id);
    cJSON_DeleteItemFromObjectCaseSensitive(annotations, "sluice.io/run-id");
    cJSON_AddStringToObject(annotations, "sluice.io/run-id", run_id);

    cJSON *ps = cJSON_AddObjectToObject(pod, "spec");
    cJSON_AddStringToObject(ps, "restartPolicy", "Never");
    double timeout_ms = spec_num(spec, "timeout_ms", 0);
    if (timeout_ms > 0)
        cJSON_AddNumberToObject(ps, "activeDeadlineSeconds", ceil(timeout_ms / 1000.0));
    cJSON_AddBoolToObject(ps, "enableServiceLinks", false);
    if (o->service_account && *o->service_account)
        cJSON_AddStringToObject(ps, "serviceAccountName", o->service_account);
    else
        cJSON_AddBoolToObject(ps, "automountServiceAccountToken", false);
    if (o->image_pull_secrets && *o->image_pull_secrets) {
        cJSON *ips = cJSON_AddArrayToObject(ps, "imagePullSecrets");
        char *copy = xstrdup(o->image_pull_secrets), *save = NULL;
        for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
            cJSON *ref = cJSON_CreateObject();
            cJSON_AddStringToObject(ref, "name", tok);
            cJSON_AddItemToArray(ips, ref);
        }
        free(copy);
    }
    /* placement: the queue's, then the step's */
    cJSON *sel = cJSON_CreateObject();
    if (o->node_selector && *o->node_selector && parse_kv(sel, o->node_selector) < 0) {
        cJSON_Delete(sel);
        strbuf_addf(err, "kubernetes.node_selector '%s' is not k=v[,k=v...]", o->node_selector);
        goto cleanup;
    }
    const cJSON *step_sel = cJSON_GetObjectItemCaseSensitive(spec, "node_selector");
    cJSON_ArrayForEach(it, step_sel) if (cJSON_IsString(it))
    {
        cJSON_DeleteItemFromObjectCaseSensitive(sel, it->string);
        cJSON_AddStringToObject(sel, it->string, it->valuestring);
    }
    if (cJSON_GetArraySize(sel) > 0)
        cJSON_AddItemToObject(ps, "nodeSelector", sel);
    else
        cJSON_Delete(sel);
    cJSON *tols = cJSON_CreateArray();
    if (o->tolerations && *o->tolerations) {
        cJSON *q = cJSON_Parse(o->tolerations);
        if (!cJSON_IsArray(q)) {
            cJSON_Delete(q);
            cJSON_Delete(tols);
            strbuf_addstr(err, "kubernetes.tolerations is not a JSON array of tolerations");
            goto cleanup;
        }
        cJSON_ArrayForEach(it, q) cJSON_AddItemToArray(tols, cJSON_Duplicate(it, true));
        cJSON_Delete(q);
    }
    const cJSON *step_tols = cJSON_GetObjectItemCaseSensitive(spec, "tolerations");
    cJSON_ArrayForEach(it, step_tols) cJSON_AddItemToArray(tols, toleration(it));
    if (cJSON_GetArraySize(tols) > 0)
        cJSON_AddItemToObject(ps, "tolerations", tols);
    else
        cJSON_Delete(tols);
    if (o->run_as_non_root) {
        cJSON *psc = cJSON_AddObjectToObject(ps, "securityContext");
        double uid = (double)(o->run_as_user ? o->run_as_user : DEFAULT_RUN_AS);
        cJSON_AddBoolToObject(psc, "runAsNonRoot", true);
        cJSON_AddNumberToObject(psc, "runAsUser", uid);
        cJSON_AddNumberToObject(psc, "runAsGroup", uid);
        cJSON_AddNumberToObject(psc, "fsGroup", uid);
        cJSON *seccomp = cJSON_AddObjectToObject(psc, "seccompProfile");
        cJSON_AddStringToObject(seccomp, "type", "RuntimeDefault");
    }

    /* volumes */
    cJSON *volumes = cJSON_AddArrayToObject(ps, "volumes");
    cJSON *mounts = cJSON_CreateArray();
    if (o->helper == KUBE_HELPER_INIT || sidecar) {
        /* the helper's binary (helper: init) and the handshake with the sidecar, which
         * the helper writes: read-only for the step only when there is no sidecar */
        cJSON_AddItemToArray(volumes, empty_dir(VOL_HELPER));
        cJSON_AddItemToArray(mounts, volume_mount(VOL_HELPER, KUBE_HELPER_DIR, !sidecar));
    }
    if (o->work_claim && *o->work_claim)
        cJSON_AddItemToArray(volumes, claim_volume(VOL_WORK, o->work_claim, false));
    else
        cJSON_AddItemToArray(volumes, empty_dir(VOL_WORK));
    cJSON_AddItemToArray(mounts, volume_mount(VOL_WORK, work_mount, false));
    if (o->dags_claim && *o->dags_claim) {
        cJSON_AddItemToArray(volumes, claim_volume(VOL_DAGS, o->dags_claim, true));
        cJSON_AddItemToArray(
            mounts, volume_mount(VOL_DAGS, str_or(o->dags_mount, DEFAULT_DAGS_MOUNT), true));
    }
    if (repo_is(o, "fs") && o->artifacts_claim && *o->artifacts_claim) {
        cJSON_AddItemToArray(volumes, claim_volume(VOL_ARTIFACTS, o->artifacts_claim, false));
        cJSON_AddItemToArray(mounts, volume_mount(VOL_ARTIFACTS, o->artifacts_root, false));
    }

    /* the environment: the attempt's directories, then the step's own, in order */
    cJSON *env_out = cJSON_CreateArray();
    char *base = artifacts_base_for(o->artifacts_repository, o->artifacts_root, o->artifacts_bucket,
                                    o->artifacts_prefix);
    const char *dir_names[] = {"SLUICE_RUN_DIR", "SLUICE_ATTEMPT_DIR", ARTIFACTS_BASE_VAR};
    const char *dir_values[] = {run_dir, attempt_dir, base};
    for (size_t i = 0; i < 3; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", dir_names[i]);
        cJSON_AddStringToObject(e, "value", dir_values[i]);
        cJSON_AddItemToArray(env_out, e);
        env_set(&env, dir_names[i], dir_values[i]);
    }
    free(base);
    cJSON_ArrayForEach(it, env_in)
    {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", it->string);
        if (cJSON_IsString(it)) {
            cJSON_AddStringToObject(e, "value", it->valuestring);
            char *v = expand_str(it->valuestring, &env);
            env_set(&env, it->string, v);
            free(v);
        } else {
            const char *sname = spec_str(it, "secret_name"), *skey = spec_str(it, "secret_key");
            if (!sname || !skey) {
                cJSON_Delete(e);
                cJSON_Delete(env_out);
                cJSON_Delete(mounts);
                strbuf_addf(err, "malformed spec: env '%s' is neither a string nor a secret",
                            it->string);
                goto cleanup;
            }
            cJSON *ref =
                cJSON_AddObjectToObject(cJSON_AddObjectToObject(e, "valueFrom"), "secretKeyRef");
            cJSON_AddStringToObject(ref, "name", sname);
            cJSON_AddStringToObject(ref, "key", skey);
            env_set(&env, it->string, NULL); /* never substituted outside env */
        }
        cJSON_AddItemToArray(env_out, e);
    }
    if (check_outputs) /* after the step's own: the helper's settings win */
        add_artifact_env(env_out, art_json, o);

    /* the main container */
    cJSON *containers = cJSON_AddArrayToObject(ps, "containers");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToArray(containers, c);
    cJSON_AddStringToObject(c, "name", KUBE_MAIN_CONTAINER);
    cJSON_AddStringToObject(c, "image", image);
    if (o->image_pull_policy && *o->image_pull_policy)
        cJSON_AddStringToObject(c, "imagePullPolicy", o->image_pull_policy);
    cJSON *cmd = cJSON_AddArrayToObject(c, "command");
    cJSON *argv_out = cJSON_CreateArray();
    if (o->helper != KUBE_HELPER_NONE) {
        if (o->helper == KUBE_HELPER_INIT) { /* through its own loader and libraries */
            const char *loader[] = {KUBE_HELPER_LOADER, "--library-path", KUBE_HELPER_LIBS,
                                    KUBE_HELPER_BIN};
            for (size_t i = 0; i < sizeof(loader) / sizeof(loader[0]); i++)
                cJSON_AddItemToArray(cmd, escaped(loader[i]));
        } else {
            cJSON_AddItemToArray(cmd, escaped(str_or(o->sluice_path, "/usr/local/bin/sluice")));
        }
        const char *fixed[] = {"pod",     "exec",  "--message-file", KUBE_TERMINATION_PATH,
                               "--mkdir", run_dir, "--mkdir",        attempt_dir};
        for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
            cJSON_AddItemToArray(cmd, escaped(fixed[i]));
        cJSON_ArrayForEach(it, params)
        {
            char *path = expand_str(it->valuestring, &env);
            char *kv = xasprintf("%s=%s", it->string, path);
            cJSON_AddItemToArray(cmd, cJSON_CreateString("--param"));
            cJSON_AddItemToArray(cmd, escaped(kv));
            free(kv);
            free(path);
        }
        if (check_outputs) {
            cJSON_AddItemToArray(cmd, cJSON_CreateString("--artifacts"));
            cJSON_AddItemToArray(cmd, cJSON_CreateString(KUBE_ENV_ARTIFACT_SPEC));
        }
        if (sidecar) {
            cJSON_AddItemToArray(cmd, cJSON_CreateString("--handshake"));
            cJSON_AddItemToArray(cmd, escaped(KUBE_HELPER_DIR));
        }
        cJSON_AddItemToArray(cmd, cJSON_CreateString("--"));
    }
    cJSON *target = o->helper != KUBE_HELPER_NONE ? argv_out : cmd;
    cJSON_ArrayForEach(it, command)
    {
        char *v = expand_str(it->valuestring, &env);
        cJSON_AddItemToArray(target, escaped(v));
        free(v);
    }
    if (o->helper == KUBE_HELPER_NONE)
        target = argv_out;
    cJSON_ArrayForEach(it, args)
    {
        char *v = expand_str(it->valuestring, &env);
        cJSON_AddItemToArray(target, escaped(v));
        free(v);
    }
    if (cJSON_GetArraySize(cmd) == 0)
        cJSON_DeleteItemFromObjectCaseSensitive(c, "command");
    if (cJSON_GetArraySize(argv_out) > 0)
        cJSON_AddItemToObject(c, "args", argv_out);
    else
        cJSON_Delete(argv_out);
    const char *workdir =
        str_or(spec_str(spec, "workdir"), str_or(spec_str(spec, "dag_dir"), NULL));
    wd = expand_str(workdir ? workdir : attempt_dir, &env);
    cJSON_AddStringToObject(c, "workingDir", wd);
    if (cJSON_GetArraySize(env_out) > 0)
        cJSON_AddItemToObject(c, "env", env_out);
    else
        cJSON_Delete(env_out);

    const cJSON *res = cJSON_GetObjectItemCaseSensitive(spec, "resources");
    double cpu = spec_num(res, "cpu_millis", 0), mem = spec_num(res, "memory_bytes", 0);
    double gpu = spec_num(res, "gpu", 0);
    if (cpu < 0 || mem < 0 || gpu < 0 || gpu != floor(gpu)) {
        strbuf_addstr(err, "malformed spec: resources must be whole numbers >= 0");
        cJSON_Delete(mounts);
        goto cleanup;
    }
    cJSON *resources = cJSON_AddObjectToObject(c, "resources");
    char q[64];
    if (cpu > 0 || mem > 0) {
        cJSON *req = cJSON_AddObjectToObject(resources, "requests");
        if (cpu > 0) {
            snprintf(q, sizeof(q), "%lldm", (long long)cpu);
            cJSON_AddStringToObject(req, "cpu", q);
        }
        if (mem > 0) {
            memory_quantity(q, sizeof(q), mem);
            cJSON_AddStringToObject(req, "memory", q);
        }
    }
    if (mem > 0 || gpu > 0) {
        cJSON *lim = cJSON_AddObjectToObject(resources, "limits");
        if (mem > 0) {
            memory_quantity(q, sizeof(q), mem);
            cJSON_AddStringToObject(lim, "memory", q);
        }
        if (gpu > 0) {
            snprintf(q, sizeof(q), "%lld", (long long)gpu);
            cJSON_AddStringToObject(lim, str_or(o->gpu_resource, KUBE_DEFAULT_GPU_RESOURCE), q);
        }
    }
    cJSON_AddItemToObject(c, "volumeMounts", mounts);
    cJSON_AddStringToObject(c, "terminationMessagePath", KUBE_TERMINATION_PATH);
    cJSON_AddStringToObject(c, "terminationMessagePolicy", "File");
    cJSON_AddItemToObject(c, "securityContext", container_security(o));

    cJSON *inits = NULL;
    if (o->helper == KUBE_HELPER_INIT || stage_in)
        inits = cJSON_AddArrayToObject(ps, "initContainers");
    if (o->helper == KUBE_HELPER_INIT) {
        const char *parts[] = {"pod", "install", KUBE_HELPER_BIN};
        cJSON *ic = add_sluice_container(inits, KUBE_INIT_CONTAINER, parts, 3, "10m", "32Mi",
                                         "64Mi", NULL, o);
        cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(ic, "volumeMounts"),
                             volume_mount(VOL_HELPER, KUBE_HELPER_DIR, false));
    }
    if (stage_in) {
        /* the inputs land in the working directory: it must be on a volume the main
         * container shares */
        if (!path_under(wd, work_mount)) {
            strbuf_addf(err,
                        "input artifacts are staged into the working directory, which must be on "
                        "the work volume (kubernetes.work_mount '%s'), not '%s'",
                        work_mount, wd);
            goto cleanup;
        }
        const char *parts[] = {
            "artifact",  "get", "--config", NO_CONFIG, "--spec-env", KUBE_ENV_ARTIFACT_SPEC,
            "--workdir", wd};
        /* transfers stream in constant memory; a directory's tar is extracted on the fly */
        cJSON *sc = add_sluice_container(inits, KUBE_STAGE_IN_CONTAINER, parts,
                                         sizeof(parts) / sizeof(parts[0]), "100m", "64Mi", "256Mi",
                                         mounts, o);
        cJSON *senv = cJSON_AddArrayToObject(sc, "env");
        add_artifact_env(senv, art_json, o);
        if (wants_git(spec))
            add_git_credentials(senv, cJSON_GetObjectItemCaseSensitive(sc, "volumeMounts"), volumes,
                                o);
    }
    if (sidecar && add_stage_out(ps, mounts, wd, work_mount, art_json, o, err) < 0)
        goto cleanup;
    rc = 0;
    goto cleanup;
malformed:
    strbuf_addstr(err, "malformed spec: command and args must be lists of strings, env and "
                       "outputs.params objects");
cleanup:
    env_release(&env);
    free(run_dir);
    free(attempt_dir);
    free(name);
    free(wd);
    free(art_json);
    if (rc < 0) {
        cJSON_Delete(pod);
        return rc;
    }
    *out = pod;
    return 0;
}
