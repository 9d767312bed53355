/*
 * tests/integration/check_chart.c - the Helm chart (charts/sluice) and the Dockerfile.
 *
 * Runs the real `helm` (scripts/deps.d/helm.sh installs it; $SLUICE_HELM overrides the
 * one on $PATH) on the chart with its default values and with every realistic values
 * file of tests/chart/, and checks each rendering:
 *
 *   - `helm lint --strict` passes and `helm template` renders;
 *   - every core/v1 object (ConfigMap, Service, ServiceAccount, Secret, PVC, PV), every
 *     pod template (of Deployments, StatefulSets, Jobs) and every StatefulSet volume
 *     claim template is valid against the official Kubernetes OpenAPI schema
 *     (../shared/vectors/kubernetes/api__v1_openapi.json), through
 *     tests/k8s/schema_check.py ($SLUICE_SCHEMA_CHECK overrides its path);
 *   - the kinds that schema lacks (apps/v1, batch/v1, policy/v1, rbac/v1,
 *     networking/v1, autoscaling/v2, KEDA, the Prometheus operator) are checked here
 *     against a table of the fields the chart uses (shape_rules): no unknown field, the
 *     right types, the required fields; and no kind goes unchecked by both;
 *   - references hold: selectors match pod labels, every Secret, ConfigMap, claim and
 *     service account a pod names is rendered or is one the values file names;
 *   - what the chart promises: security contexts, secrets only from Secrets and only
 *     where needed, the Role's exact rules, sluice.yaml consistent with the mounts.
 *
 * Then each values file's own point (GPU pools, S3, NFS, Ingress, KEDA, ...), every bad
 * values file of tests/chart/bad/ refused with the message its first line names,
 * NOTES.txt, and the Dockerfile's rules (no Docker engine here: parsed and checked).
 *
 * YAML is read with libyaml into cJSON, resolving plain scalars as Kubernetes' YAML
 * reader (YAML 1.1) does, so "0440" is octal and an unquoted `no` a boolean.
 */
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define RELEASE   "prod"
#define NAMESPACE "sluice-system"
#define FULLNAME  "prod-sluice"

/* --- tools ---------------------------------------------------------------------------- */

/* The helm binary: $SLUICE_HELM, else the first `helm` on $PATH. Fails the test if none. */
static const char *helm_bin(void)
{
    static char found[4096];
    const char *env = getenv("SLUICE_HELM");
    if (env && *env)
        return env;
    if (found[0])
        return found;
    const char *path = getenv("PATH");
    char *copy = xstrdup(path ? path : "/usr/local/bin:/usr/bin:/bin");
    char *save = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        char *cand = xasprintf("%s/helm", dir);
        if (access(cand, X_OK) == 0 && strlen(cand) < sizeof(found)) {
            memcpy(found, cand, strlen(cand) + 1);
            free(cand);
            break;
        }
        free(cand);
    }
    free(copy);
    ck_assert_msg(found[0], "helm not found on $PATH: run `make deps` (scripts/deps.d/helm.sh)");
    return found;
}

static char *schema_check_path(void)
{
    const char *env = getenv("SLUICE_SCHEMA_CHECK");
    return env && *env ? xstrdup(env) : test_path("tests/k8s/schema_check.py");
}

static char *openapi_path(void)
{
    return test_path("../shared/vectors/kubernetes/api__v1_openapi.json");
}

/* Runs argv (a NULL-terminated list); returns the exit status. */
static int run_list(char **out, char **err, const char *arg0, va_list ap)
{
    const char *argv[64];
    size_t n = 0;
    argv[n++] = arg0;
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        ck_assert_uint_lt(n, 63);
        argv[n++] = a;
    }
    argv[n] = NULL;
    return test_run((char *const *)argv, out, err);
}

/* helm with the arguments up to NULL. */
static int helm(char **out, char **err, ...)
{
    va_list ap;
    va_start(ap, err);
    int rc = run_list(out, err, helm_bin(), ap);
    va_end(ap);
    return rc;
}

/* A private temporary directory; files written with tmp_write() are removed by tmp_clean(). */
struct tmpdir {
    char path[64];
    char *files[32];
    size_t nfiles;
};

static void tmp_init(struct tmpdir *t)
{
    memset(t, 0, sizeof(*t));
    memcpy(t->path, "/tmp/sluice-chart-XXXXXX", sizeof("/tmp/sluice-chart-XXXXXX"));
    ck_assert_ptr_nonnull(mkdtemp(t->path));
}

static const char *tmp_write(struct tmpdir *t, const char *name, const char *text)
{
    ck_assert_uint_lt(t->nfiles, sizeof(t->files) / sizeof(t->files[0]));
    char *p = xasprintf("%s/%s", t->path, name);
    FILE *f = fopen(p, "w");
    ck_assert_msg(f != NULL, "cannot write %s: %s", p, strerror(errno));
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
    t->files[t->nfiles++] = p;
    return p;
}

static void tmp_clean(struct tmpdir *t)
{
    for (size_t i = 0; i < t->nfiles; i++) {
        unlink(t->files[i]);
        free(t->files[i]);
    }
    rmdir(t->path);
    t->nfiles = 0;
}

/* --- YAML into cJSON -------------------------------------------------------------------- */

static bool all_chars(const char *s, const char *set)
{
    return *s && strspn(s, set) == strlen(s);
}

/* A plain scalar as YAML 1.1 (go-yaml v2, which Kubernetes and Helm read with) resolves it. */
static cJSON *yaml_plain_scalar(const char *v)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    static const char *const trues[] = {"true", "True", "TRUE", "yes", "Yes", "YES",
                                        "on",   "On",   "ON",   "y",   "Y"};
    static const char *const falses[] = {"false", "False", "FALSE", "no", "No", "NO",
                                         "off",   "Off",   "OFF",   "n",  "N"};
    for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
        if (!strcmp(v, nulls[i]))
            return cJSON_CreateNull();
    for (size_t i = 0; i < sizeof(trues) / sizeof(trues[0]); i++)
        if (!strcmp(v, trues[i]))
            return cJSON_CreateTrue();
    for (size_t i = 0; i < sizeof(falses) / sizeof(falses[0]); i++)
        if (!strcmp(v, falses[i]))
            return cJSON_CreateFalse();
    const char *d = (*v == '-' || *v == '+') ? v + 1 : v;
    int base = 0;
    const char *digits = NULL;
    if (!strncmp(d, "0x", 2) && all_chars(d + 2, "0123456789abcdefABCDEF")) {
        base = 16;
        digits = d + 2;
    } else if (!strncmp(d, "0b", 2) && all_chars(d + 2, "01")) {
        base = 2;
        digits = d + 2;
    } else if (d[0] == '0' && d[1] && all_chars(d + 1, "01234567")) {
        base = 8;
        digits = d + 1;
    } else if (all_chars(d, "0123456789")) {
        base = 10;
        digits = d;
    }
    if (base) {
        long long n = strtoll(digits, NULL, base);
        return cJSON_CreateNumber((double)(*v == '-' ? -n : n));
    }
    if (all_chars(d, "0123456789.eE+-") && strchr(d, '.') && strspn(d, "0123456789.") > 0) {
        char *end = NULL;
        double x = strtod(v, &end);
        if (end && *end == '\0')
            return cJSON_CreateNumber(x);
    }
    return cJSON_CreateString(v);
}

/* Reads the node whose first event is *ev (consumed). NULL with *err set on a failure. */
static cJSON *yaml_node(yaml_parser_t *p, yaml_event_t *ev, char **err)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        const char *v = (const char *)ev->data.scalar.value;
        bool plain =
            ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
            (!ev->data.scalar.tag || strcmp((const char *)ev->data.scalar.tag, YAML_STR_TAG) != 0);
        cJSON *node = plain ? yaml_plain_scalar(v) : cJSON_CreateString(v);
        yaml_event_delete(ev);
        return node;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool map = ev->type == YAML_MAPPING_START_EVENT;
        yaml_event_delete(ev);
        cJSON *node = map ? cJSON_CreateObject() : cJSON_CreateArray();
        for (;;) {
            yaml_event_t e;
            if (!yaml_parser_parse(p, &e)) {
                *err = xasprintf("line %zu: %s", p->problem_mark.line + 1,
                                 p->problem ? p->problem : "parse error");
                cJSON_Delete(node);
                return NULL;
            }
            if (e.type == YAML_SEQUENCE_END_EVENT || e.type == YAML_MAPPING_END_EVENT) {
                yaml_event_delete(&e);
                return node;
            }
            if (!map) {
                cJSON *item = yaml_node(p, &e, err);
                if (!item) {
                    cJSON_Delete(node);
                    return NULL;
                }
                cJSON_AddItemToArray(node, item);
                continue;
            }
            if (e.type != YAML_SCALAR_EVENT) {
                *err = xasprintf("line %zu: a mapping key that is not a scalar",
                                 e.start_mark.line + 1);
                yaml_event_delete(&e);
                cJSON_Delete(node);
                return NULL;
            }
            char *key = xstrdup((const char *)e.data.scalar.value);
            size_t line = e.start_mark.line + 1;
            yaml_event_delete(&e);
            yaml_event_t ve;
            cJSON *value = NULL;
            if (yaml_parser_parse(p, &ve))
                value = yaml_node(p, &ve, err);
            else
                *err = xasprintf("line %zu: %s", p->problem_mark.line + 1,
                                 p->problem ? p->problem : "parse error");
            if (value && cJSON_GetObjectItemCaseSensitive(node, key)) {
                *err = xasprintf("line %zu: duplicate key \"%s\"", line, key);
                cJSON_Delete(value);
                value = NULL;
            }
            if (!value) {
                free(key);
                cJSON_Delete(node);
                return NULL;
            }
            cJSON_AddItemToObject(node, key, value);
            free(key);
        }
    }
    case YAML_ALIAS_EVENT:
        *err = xasprintf("line %zu: aliases are not expected here", ev->start_mark.line + 1);
        yaml_event_delete(ev);
        return NULL;
    default:
        *err =
            xasprintf("line %zu: unexpected YAML event %d", ev->start_mark.line + 1, (int)ev->type);
        yaml_event_delete(ev);
        return NULL;
    }
}

/* Every non-empty document of a YAML stream, as a cJSON array (caller deletes). Fails the
 * test on a parse error. */
static cJSON *yaml_load_all(const char *text, const char *what)
{
    yaml_parser_t p;
    ck_assert(yaml_parser_initialize(&p));
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    cJSON *docs = cJSON_CreateArray();
    char *err = NULL;
    bool done = false;
    while (!done && !err) {
        yaml_event_t e;
        if (!yaml_parser_parse(&p, &e)) {
            err = xasprintf("line %zu: %s", p.problem_mark.line + 1,
                            p.problem ? p.problem : "parse error");
            break;
        }
        switch (e.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            yaml_event_delete(&e);
            break;
        case YAML_STREAM_START_EVENT:
        case YAML_DOCUMENT_START_EVENT:
        case YAML_DOCUMENT_END_EVENT:
            yaml_event_delete(&e);
            break;
        default: {
            cJSON *doc = yaml_node(&p, &e, &err);
            if (doc && !cJSON_IsNull(doc))
                cJSON_AddItemToArray(docs, doc);
            else
                cJSON_Delete(doc);
        }
        }
    }
    yaml_parser_delete(&p);
    ck_assert_msg(err == NULL, "%s is not valid YAML: %s", what, err ? err : "");
    return docs;
}

/* --- cJSON helpers -------------------------------------------------------------------------- */

/* The node at a dotted path ("spec.template.spec.containers[0].name"), or NULL. */
static cJSON *jget(const cJSON *o, const char *path)
{
    const cJSON *cur = o;
    const char *s = path;
    while (cur && *s) {
        if (*s == '.')
            s++;
        if (*s == '[') {
            char *end = NULL;
            long i = strtol(s + 1, &end, 10);
            if (!end || *end != ']')
                return NULL;
            cur = cJSON_GetArrayItem(cur, (int)i);
            s = end + 1;
            continue;
        }
        size_t n = strcspn(s, ".[");
        char *key = xstrndup(s, n);
        cur = cJSON_GetObjectItemCaseSensitive(cur, key);
        free(key);
        s += n;
    }
    return (cJSON *)cur;
}

/* The string at path, or NULL. */
static const char *jstr(const cJSON *o, const char *path)
{
    const cJSON *n = jget(o, path);
    return cJSON_IsString(n) ? n->valuestring : NULL;
}

static bool streq(const char *a, const char *b)
{
    return a && b && !strcmp(a, b);
}

/* The string member of o named key (keys with dots: labels, annotations), or NULL. */
static const char *jkey(const cJSON *o, const char *key)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
}

/* The rendered object of this kind and name, or NULL. */
static cJSON *find_obj(const cJSON *docs, const char *kind, const char *name)
{
    const cJSON *d;
    cJSON_ArrayForEach(d, docs)
    {
        if (streq(jstr(d, "kind"), kind) && streq(jstr(d, "metadata.name"), name))
            return (cJSON *)d;
    }
    return NULL;
}

static int count_kind(const cJSON *docs, const char *kind)
{
    int n = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, docs)
    {
        if (streq(jstr(d, "kind"), kind))
            n++;
    }
    return n;
}

/* The env entry named name of a container, or NULL. */
static cJSON *env_of(const cJSON *container, const char *name)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(container, "env"))
    {
        if (streq(jstr(e, "name"), name))
            return (cJSON *)e;
    }
    return NULL;
}

/* The first container of a workload's pod template. */
static cJSON *container0(const cJSON *workload)
{
    return jget(workload, "spec.template.spec.containers[0]");
}

/* The volume named name of a workload's pod template, or NULL. */
static cJSON *volume_of(const cJSON *workload, const char *name)
{
    const cJSON *v;
    cJSON_ArrayForEach(v, jget(workload, "spec.template.spec.volumes"))
    {
        if (streq(jstr(v, "name"), name))
            return (cJSON *)v;
    }
    return NULL;
}

/* Whether every label of sel is among labels. */
static bool labels_match(const cJSON *sel, const cJSON *labels)
{
    if (!cJSON_IsObject(sel) || !sel->child)
        return false;
    const cJSON *l;
    cJSON_ArrayForEach(l, sel)
    {
        if (!cJSON_IsString(l) || !streq(l->valuestring, jkey(labels, l->string)))
            return false;
    }
    return true;
}

static bool is_workload(const cJSON *d)
{
    const char *k = jstr(d, "kind");
    return streq(k, "Deployment") || streq(k, "StatefulSet") || streq(k, "Job");
}

/* --- rendering ---------------------------------------------------------------------------- */

struct render {
    char *yaml;  /* helm template's output */
    cJSON *docs; /* its documents */
};

/* helm template of the chart with a values file (relative to the source tree; NULL for
 * the defaults). Fails the test if helm refuses. */
static void render(struct render *r, const char *values)
{
    char *chart = test_path("charts/sluice");
    char *vpath = values ? test_path(values) : NULL;
    char *err = NULL;
    int rc = vpath
                 ? helm(&r->yaml, &err, "template", RELEASE, chart, "--namespace", NAMESPACE,
                        "--values", vpath, NULL)
                 : helm(&r->yaml, &err, "template", RELEASE, chart, "--namespace", NAMESPACE, NULL);
    ck_assert_msg(rc == 0, "helm template with %s: exit %d\n%s", values ? values : "defaults", rc,
                  err);
    r->docs = yaml_load_all(r->yaml, "helm template's output");
    ck_assert_int_gt(cJSON_GetArraySize(r->docs), 0);
    free(err);
    free(chart);
    free(vpath);
}

static void render_free(struct render *r)
{
    free(r->yaml);
    cJSON_Delete(r->docs);
}

/* --- shapes of the kinds the core/v1 schema lacks -------------------------------------------- */

/*
 * The fields the chart uses of each non-core kind, from the API references of apps/v1,
 * batch/v1, policy/v1, rbac.authorization.k8s.io/v1, networking.k8s.io/v1,
 * autoscaling/v2, keda.sh/v1alpha1 and monitoring.coreos.com/v1. A path names object
 * members with '.', array items with "[]". Types: o object, a array, s string,
 * i integer, I int-or-string, b boolean, m map of strings, x checked elsewhere (pod
 * templates and claim templates go to the official schema). A field the table does not
 * list is an error; a required one ('!') must be there.
 */
struct shape_rule {
    const char *kind; /* "*" for every kind */
    const char *path;
    char type;
    bool required;
};

static const struct shape_rule shape_rules[] = {
    {"*", "apiVersion", 's', true},
    {"*", "kind", 's', true},
    {"*", "metadata", 'o', true},
    {"*", "metadata.name", 's', true},
    {"*", "metadata.namespace", 's', true},
    {"*", "metadata.labels", 'm', false},
    {"*", "metadata.annotations", 'm', false},

    {"Deployment", "spec", 'o', true},
    {"Deployment", "spec.replicas", 'i', false},
    {"Deployment", "spec.revisionHistoryLimit", 'i', false},
    {"Deployment", "spec.selector", 'o', true},
    {"Deployment", "spec.selector.matchLabels", 'm', true},
    {"Deployment", "spec.template", 'x', true},

    {"StatefulSet", "spec", 'o', true},
    {"StatefulSet", "spec.serviceName", 's', false},
    {"StatefulSet", "spec.replicas", 'i', false},
    {"StatefulSet", "spec.selector", 'o', true},
    {"StatefulSet", "spec.selector.matchLabels", 'm', true},
    {"StatefulSet", "spec.template", 'x', true},
    {"StatefulSet", "spec.volumeClaimTemplates", 'a', false},
    {"StatefulSet", "spec.volumeClaimTemplates[]", 'x', false},

    {"Job", "spec", 'o', true},
    {"Job", "spec.backoffLimit", 'i', false},
    {"Job", "spec.activeDeadlineSeconds", 'i', false},
    {"Job", "spec.template", 'x', true},

    {"PodDisruptionBudget", "spec", 'o', true},
    {"PodDisruptionBudget", "spec.minAvailable", 'I', false},
    {"PodDisruptionBudget", "spec.maxUnavailable", 'I', false},
    {"PodDisruptionBudget", "spec.selector", 'o', true},
    {"PodDisruptionBudget", "spec.selector.matchLabels", 'm', true},

    {"Role", "rules", 'a', true},
    {"Role", "rules[]", 'o', false},
    {"Role", "rules[].apiGroups", 'a', true},
    {"Role", "rules[].apiGroups[]", 's', false},
    {"Role", "rules[].resources", 'a', true},
    {"Role", "rules[].resources[]", 's', false},
    {"Role", "rules[].verbs", 'a', true},
    {"Role", "rules[].verbs[]", 's', false},

    {"RoleBinding", "roleRef", 'o', true},
    {"RoleBinding", "roleRef.apiGroup", 's', true},
    {"RoleBinding", "roleRef.kind", 's', true},
    {"RoleBinding", "roleRef.name", 's', true},
    {"RoleBinding", "subjects", 'a', true},
    {"RoleBinding", "subjects[]", 'o', false},
    {"RoleBinding", "subjects[].kind", 's', true},
    {"RoleBinding", "subjects[].name", 's', true},
    {"RoleBinding", "subjects[].namespace", 's', false},

    {"Ingress", "spec", 'o', true},
    {"Ingress", "spec.ingressClassName", 's', false},
    {"Ingress", "spec.tls", 'a', false},
    {"Ingress", "spec.tls[]", 'o', false},
    {"Ingress", "spec.tls[].secretName", 's', false},
    {"Ingress", "spec.tls[].hosts", 'a', false},
    {"Ingress", "spec.tls[].hosts[]", 's', false},
    {"Ingress", "spec.rules", 'a', false},
    {"Ingress", "spec.rules[]", 'o', false},
    {"Ingress", "spec.rules[].host", 's', false},
    {"Ingress", "spec.rules[].http", 'o', false},
    {"Ingress", "spec.rules[].http.paths", 'a', true},
    {"Ingress", "spec.rules[].http.paths[]", 'o', false},
    {"Ingress", "spec.rules[].http.paths[].path", 's', false},
    {"Ingress", "spec.rules[].http.paths[].pathType", 's', true},
    {"Ingress", "spec.rules[].http.paths[].backend", 'o', true},
    {"Ingress", "spec.rules[].http.paths[].backend.service", 'o', true},
    {"Ingress", "spec.rules[].http.paths[].backend.service.name", 's', true},
    {"Ingress", "spec.rules[].http.paths[].backend.service.port", 'o', true},
    {"Ingress", "spec.rules[].http.paths[].backend.service.port.name", 's', false},
    {"Ingress", "spec.rules[].http.paths[].backend.service.port.number", 'i', false},

    {"HorizontalPodAutoscaler", "spec", 'o', true},
    {"HorizontalPodAutoscaler", "spec.scaleTargetRef", 'o', true},
    {"HorizontalPodAutoscaler", "spec.scaleTargetRef.apiVersion", 's', false},
    {"HorizontalPodAutoscaler", "spec.scaleTargetRef.kind", 's', true},
    {"HorizontalPodAutoscaler", "spec.scaleTargetRef.name", 's', true},
    {"HorizontalPodAutoscaler", "spec.minReplicas", 'i', false},
    {"HorizontalPodAutoscaler", "spec.maxReplicas", 'i', true},
    {"HorizontalPodAutoscaler", "spec.metrics", 'a', false},
    {"HorizontalPodAutoscaler", "spec.metrics[]", 'o', false},
    {"HorizontalPodAutoscaler", "spec.metrics[].type", 's', true},
    {"HorizontalPodAutoscaler", "spec.metrics[].external", 'o', false},
    {"HorizontalPodAutoscaler", "spec.metrics[].external.metric", 'o', true},
    {"HorizontalPodAutoscaler", "spec.metrics[].external.metric.name", 's', true},
    {"HorizontalPodAutoscaler", "spec.metrics[].external.metric.selector", 'o', false},
    {"HorizontalPodAutoscaler", "spec.metrics[].external.metric.selector.matchLabels", 'm', false},
    {"HorizontalPodAutoscaler", "spec.metrics[].external.target", 'o', true},
    {"HorizontalPodAutoscaler", "spec.metrics[].external.target.type", 's', true},
    {"HorizontalPodAutoscaler", "spec.metrics[].external.target.averageValue", 's', false},
    {"HorizontalPodAutoscaler", "spec.behavior", 'o', false},
    {"HorizontalPodAutoscaler", "spec.behavior.scaleDown", 'o', false},
    {"HorizontalPodAutoscaler", "spec.behavior.scaleDown.stabilizationWindowSeconds", 'i', false},
    {"HorizontalPodAutoscaler", "spec.behavior.scaleDown.policies", 'a', false},
    {"HorizontalPodAutoscaler", "spec.behavior.scaleDown.policies[]", 'o', false},
    {"HorizontalPodAutoscaler", "spec.behavior.scaleDown.policies[].type", 's', true},
    {"HorizontalPodAutoscaler", "spec.behavior.scaleDown.policies[].value", 'i', true},
    {"HorizontalPodAutoscaler", "spec.behavior.scaleDown.policies[].periodSeconds", 'i', true},

    {"ScaledObject", "spec", 'o', true},
    {"ScaledObject", "spec.scaleTargetRef", 'o', true},
    {"ScaledObject", "spec.scaleTargetRef.apiVersion", 's', false},
    {"ScaledObject", "spec.scaleTargetRef.kind", 's', false},
    {"ScaledObject", "spec.scaleTargetRef.name", 's', true},
    {"ScaledObject", "spec.pollingInterval", 'i', false},
    {"ScaledObject", "spec.cooldownPeriod", 'i', false},
    {"ScaledObject", "spec.minReplicaCount", 'i', false},
    {"ScaledObject", "spec.maxReplicaCount", 'i', false},
    {"ScaledObject", "spec.triggers", 'a', true},
    {"ScaledObject", "spec.triggers[]", 'o', false},
    {"ScaledObject", "spec.triggers[].type", 's', true},
    {"ScaledObject", "spec.triggers[].metadata", 'm', true},
    {"ScaledObject", "spec.triggers[].authenticationRef", 'o', false},
    {"ScaledObject", "spec.triggers[].authenticationRef.name", 's', true},

    {"TriggerAuthentication", "spec", 'o', true},
    {"TriggerAuthentication", "spec.secretTargetRef", 'a', true},
    {"TriggerAuthentication", "spec.secretTargetRef[]", 'o', false},
    {"TriggerAuthentication", "spec.secretTargetRef[].parameter", 's', true},
    {"TriggerAuthentication", "spec.secretTargetRef[].name", 's', true},
    {"TriggerAuthentication", "spec.secretTargetRef[].key", 's', true},

    {"ServiceMonitor", "spec", 'o', true},
    {"ServiceMonitor", "spec.selector", 'o', true},
    {"ServiceMonitor", "spec.selector.matchLabels", 'm', true},
    {"ServiceMonitor", "spec.endpoints", 'a', true},
    {"ServiceMonitor", "spec.endpoints[]", 'o', false},
    {"ServiceMonitor", "spec.endpoints[].port", 's', false},
    {"ServiceMonitor", "spec.endpoints[].path", 's', false},
    {"ServiceMonitor", "spec.endpoints[].interval", 's', false},
};

/* The kinds checked by shape_rules, with their one apiVersion. */
static const struct {
    const char *kind, *api_version;
} shape_kinds[] = {
    {"Deployment", "apps/v1"},
    {"StatefulSet", "apps/v1"},
    {"Job", "batch/v1"},
    {"PodDisruptionBudget", "policy/v1"},
    {"Role", "rbac.authorization.k8s.io/v1"},
    {"RoleBinding", "rbac.authorization.k8s.io/v1"},
    {"Ingress", "networking.k8s.io/v1"},
    {"HorizontalPodAutoscaler", "autoscaling/v2"},
    {"ScaledObject", "keda.sh/v1alpha1"},
    {"TriggerAuthentication", "keda.sh/v1alpha1"},
    {"ServiceMonitor", "monitoring.coreos.com/v1"},
};

static const char *shape_api_version(const char *kind)
{
    for (size_t i = 0; i < sizeof(shape_kinds) / sizeof(shape_kinds[0]); i++)
        if (streq(kind, shape_kinds[i].kind))
            return shape_kinds[i].api_version;
    return NULL;
}

static const struct shape_rule *shape_rule(const char *kind, const char *path)
{
    for (size_t i = 0; i < sizeof(shape_rules) / sizeof(shape_rules[0]); i++) {
        const struct shape_rule *r = &shape_rules[i];
        if ((streq(r->kind, kind) || !strcmp(r->kind, "*")) && !strcmp(r->path, path))
            return r;
    }
    return NULL;
}

static bool shape_type_ok(char type, const cJSON *v)
{
    switch (type) {
    case 'o':
        return cJSON_IsObject(v);
    case 'a':
        return cJSON_IsArray(v);
    case 's':
        return cJSON_IsString(v);
    case 'b':
        return cJSON_IsBool(v);
    case 'i':
        return cJSON_IsNumber(v) && v->valuedouble == (double)(long long)v->valuedouble;
    case 'I':
        return cJSON_IsString(v) ||
               (cJSON_IsNumber(v) && v->valuedouble == (double)(long long)v->valuedouble);
    case 'm': {
        if (!cJSON_IsObject(v))
            return false;
        const cJSON *c;
        cJSON_ArrayForEach(c, v)
        {
            if (!cJSON_IsString(c))
                return false;
        }
        return true;
    }
    case 'x':
        return true;
    default:
        return false;
    }
}

/* Walks v at path against the rules of kind, adding one line per problem to *problems. */
static void shape_walk(struct strbuf *problems, const char *what, const char *kind,
                       const char *path, const cJSON *v)
{
    const cJSON *c;
    if (cJSON_IsObject(v)) {
        cJSON_ArrayForEach(c, v)
        {
            char *sub = *path ? xasprintf("%s.%s", path, c->string) : xstrdup(c->string);
            const struct shape_rule *r = shape_rule(kind, sub);
            if (!r && cJSON_IsNull(c))
                ; /* an absent field, as the API server reads null */
            else if (!r)
                strbuf_addf(problems, "%s: .%s: unknown field\n", what, sub);
            else if (!shape_type_ok(r->type, c))
                strbuf_addf(problems, "%s: .%s: wrong type (want %c)\n", what, sub, r->type);
            else if (r->type == 'o' || r->type == 'a')
                shape_walk(problems, what, kind, sub, c);
            free(sub);
        }
    } else if (cJSON_IsArray(v)) {
        char *sub = xasprintf("%s[]", path);
        const struct shape_rule *r = shape_rule(kind, sub);
        cJSON_ArrayForEach(c, v)
        {
            if (!r)
                strbuf_addf(problems, "%s: .%s: unexpected items\n", what, sub);
            else if (!shape_type_ok(r->type, c))
                strbuf_addf(problems, "%s: .%s: wrong type (want %c)\n", what, sub, r->type);
            else if (r->type == 'o' || r->type == 'a')
                shape_walk(problems, what, kind, sub, c);
        }
        free(sub);
    }
}

/* Whether the required rule r (a path with "[]") holds in o: for arrays, in every item. */
static void shape_required(struct strbuf *problems, const char *what, const cJSON *o,
                           const char *path)
{
    const char *br = strstr(path, "[]");
    if (!br) {
        if (!jget(o, path))
            strbuf_addf(problems, "%s: .%s: missing required field\n", what, path);
        return;
    }
    char *head = xstrndup(path, (size_t)(br - path));
    const char *rest = br[2] == '.' ? br + 3 : br + 2;
    const cJSON *found = jget(o, head);
    const cJSON *arr = cJSON_IsArray(found) ? found : NULL;
    const cJSON *item;
    cJSON_ArrayForEach(item, arr)
    {
        if (*rest)
            shape_required(problems, what, item, rest);
    }
    free(head);
}

/* The whole shape check of one object of a shape_kinds kind. */
static void shape_check(struct strbuf *problems, const cJSON *d)
{
    const char *kind = jstr(d, "kind");
    char *what = xasprintf("%s/%s", kind ? kind : "?",
                           jstr(d, "metadata.name") ? jstr(d, "metadata.name") : "?");
    const char *want = shape_api_version(kind);
    if (!streq(jstr(d, "apiVersion"), want))
        strbuf_addf(problems, "%s: apiVersion %s, want %s\n", what,
                    jstr(d, "apiVersion") ? jstr(d, "apiVersion") : "(none)", want ? want : "?");
    shape_walk(problems, what, kind, "", d);
    for (size_t i = 0; i < sizeof(shape_rules) / sizeof(shape_rules[0]); i++) {
        const struct shape_rule *r = &shape_rules[i];
        if (r->required && (streq(r->kind, kind) || !strcmp(r->kind, "*")))
            shape_required(problems, what, d, r->path);
    }
    if (streq(kind, "PodDisruptionBudget") &&
        !jget(d, "spec.minAvailable") == !jget(d, "spec.maxUnavailable"))
        strbuf_addf(problems, "%s: exactly one of minAvailable and maxUnavailable\n", what);
    free(what);
}

/* --- the official schema ----------------------------------------------------------------- */

/* Runs schema_check.py on file (with --kind kind unless NULL). Returns its exit status;
 * *out and *err get its output. */
static int schema_check(const char *file, const char *kind, char **out, char **err)
{
    char *script = schema_check_path();
    char *schema = openapi_path();
    ck_assert_msg(access(script, R_OK) == 0, "%s is missing (the schema validator)", script);
    ck_assert_msg(access(schema, R_OK) == 0, "%s is missing", schema);
    const char *argv[] = {
        "/usr/bin/python3", script, "--schema", schema, kind ? "--kind" : file, kind ? kind : NULL,
        kind ? file : NULL, NULL};
    int rc = test_run((char *const *)argv, out, err);
    free(script);
    free(schema);
    return rc;
}

/* Every document, every pod template and every claim template of a rendering through the
 * official schema; every kind it skips must be one of shape_kinds. */
static void check_schema(struct strbuf *problems, const struct render *r)
{
    struct tmpdir t;
    tmp_init(&t);
    const char *all = tmp_write(&t, "rendered.yaml", r->yaml);
    char *out = NULL, *err = NULL;
    int rc = schema_check(all, NULL, &out, &err);
    if (rc != 0)
        strbuf_addf(problems, "schema_check (objects) exit %d:\n%s%s", rc, out, err);
    /* Each "skipped" line names a kind the schema lacks: it must be one we shape-check. */
    for (char *line = err; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char *l = xstrndup(line, len);
        if (strstr(l, "skipped")) {
            bool known = false;
            for (size_t i = 0; i < sizeof(shape_kinds) / sizeof(shape_kinds[0]); i++) {
                char *needle = xasprintf("(%s/", shape_kinds[i].kind);
                known = known || strstr(l, needle) != NULL;
                free(needle);
            }
            if (!known)
                strbuf_addf(problems, "a kind neither schema- nor shape-checked: %s\n", l);
        }
        free(l);
        line = nl ? nl + 1 : NULL;
    }
    free(out);
    free(err);

    struct strbuf templates = STRBUF_INIT, claims = STRBUF_INIT;
    const cJSON *d;
    cJSON_ArrayForEach(d, r->docs)
    {
        if (is_workload(d)) {
            char *json = cJSON_PrintUnformatted(jget(d, "spec.template"));
            strbuf_addf(&templates, "%s%s\n", templates.len ? "---\n" : "", json);
            free(json);
        }
        const cJSON *vct;
        cJSON_ArrayForEach(vct, jget(d, "spec.volumeClaimTemplates"))
        {
            char *json = cJSON_PrintUnformatted(vct);
            strbuf_addf(&claims, "%s%s\n", claims.len ? "---\n" : "", json);
            free(json);
        }
    }
    struct {
        struct strbuf *sb;
        const char *file, *kind;
    } extra[] = {{&templates, "pod-templates.yaml", "io.k8s.api.core.v1.PodTemplateSpec"},
                 {&claims, "claim-templates.yaml", "io.k8s.api.core.v1.PersistentVolumeClaim"}};
    for (size_t i = 0; i < 2; i++) {
        if (!extra[i].sb->len)
            continue;
        const char *f = tmp_write(&t, extra[i].file, extra[i].sb->buf);
        rc = schema_check(f, extra[i].kind, &out, &err);
        if (rc != 0)
            strbuf_addf(problems, "schema_check (%s) exit %d:\n%s%s", extra[i].kind, rc, out, err);
        free(out);
        free(err);
    }
    strbuf_release(&templates);
    strbuf_release(&claims);
    tmp_clean(&t);
}

/* --- what every rendering must hold ------------------------------------------------------- */

/* Names a values file refers to that the chart does not render (existing Secrets, claims,
 * service accounts, ConfigMaps): anything else a pod names must be rendered. */
struct chart_case {
    const char *values; /* relative to the source tree; NULL: the defaults */
    const char *external[8];
};

static const struct chart_case chart_cases[] = {
    {NULL, {NULL}},
    {"tests/chart/cpu-gpu.yaml", {NULL}},
    {"tests/chart/external-db.yaml",
     {"sluice-db", "sluice-redis", "sluice-git", "sluice-webhook", "acme-registry", NULL}},
    {"tests/chart/s3.yaml", {"sluice-db", "sluice-redis", "sluice-s3", "shared-logs", NULL}},
    {"tests/chart/nfs.yaml", {NULL}},
    {"tests/chart/storageclass.yaml", {NULL}},
    {"tests/chart/ingress.yaml", {"sluice-acme-tls", NULL}},
    {"tests/chart/keda.yaml", {"sluice-db", "sluice-redis", NULL}},
    {"tests/chart/hpa.yaml", {NULL}},
    {"tests/chart/git-ssh.yaml",
     {"sluice-git-ssh", "sluice", "sluice-worker", "pipeline-runner", NULL}},
    {"tests/chart/local.yaml", {"my-dags", NULL}},
    {"tests/chart/git-local.yaml", {"sluice-git-ssh", NULL}},
};
#define N_CASES ((int)(sizeof(chart_cases) / sizeof(chart_cases[0])))

static const struct chart_case *case_for(const char *values)
{
    for (int i = 0; i < N_CASES; i++)
        if (streq(chart_cases[i].values, values))
            return &chart_cases[i];
    ck_abort_msg("no chart case %s", values);
    return NULL;
}

static bool is_external(const struct chart_case *c, const char *name)
{
    for (size_t i = 0; c->external[i]; i++)
        if (streq(c->external[i], name))
            return true;
    return false;
}

/* A reference from what to an object of kind named name: rendered, or external. */
static void check_ref(struct strbuf *problems, const struct render *r, const struct chart_case *c,
                      const char *what, const char *kind, const char *name)
{
    if (!name)
        strbuf_addf(problems, "%s: a %s reference without a name\n", what, kind);
    else if (!find_obj(r->docs, kind, name) && !is_external(c, name) && strcmp(name, "default"))
        strbuf_addf(problems, "%s: %s \"%s\" is neither rendered nor named by the values\n", what,
                    kind, name);
}

/* The variables that carry secrets: only ever from a Secret. */
static const char *const secret_vars[] = {
    "SLUICE_DATABASE_URL",       "SLUICE_REDIS_URL",  "SLUICE_GIT_PASSWORD",
    "SLUICE_API_WEBHOOK_SECRET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "POSTGRES_PASSWORD",         "REDIS_PASSWORD",
};

static void check_pod(struct strbuf *problems, const struct render *r, const struct chart_case *c,
                      const cJSON *d)
{
    char *what = xasprintf("%s/%s", jstr(d, "kind"), jstr(d, "metadata.name"));
    const cJSON *spec = jget(d, "spec.template.spec");
    if (!labels_match(jget(d, "spec.selector.matchLabels"),
                      jget(d, "spec.template.metadata.labels")) &&
        !streq(jstr(d, "kind"), "Job"))
        strbuf_addf(problems, "%s: the selector does not match the pod labels\n", what);
    if (!cJSON_IsTrue(jget(spec, "securityContext.runAsNonRoot")))
        strbuf_addf(problems, "%s: the pod may run as root\n", what);
    if (!streq(jstr(spec, "securityContext.seccompProfile.type"), "RuntimeDefault"))
        strbuf_addf(problems, "%s: no RuntimeDefault seccomp profile\n", what);
    if (jget(spec, "hostNetwork") || jget(spec, "hostPID") || jget(spec, "hostIPC"))
        strbuf_addf(problems, "%s: shares a host namespace\n", what);
    const char *sa = jstr(spec, "serviceAccountName");
    if (sa)
        check_ref(problems, r, c, what, "ServiceAccount", sa);
    const cJSON *ps;
    cJSON_ArrayForEach(ps, jget(spec, "imagePullSecrets"))
        check_ref(problems, r, c, what, "Secret", jstr(ps, "name"));

    const cJSON *v;
    cJSON_ArrayForEach(v, jget(spec, "volumes"))
    {
        if (jget(v, "hostPath"))
            strbuf_addf(problems, "%s: a hostPath volume\n", what);
        if (jget(v, "configMap"))
            check_ref(problems, r, c, what, "ConfigMap", jstr(v, "configMap.name"));
        if (jget(v, "secret"))
            check_ref(problems, r, c, what, "Secret", jstr(v, "secret.secretName"));
        if (jget(v, "persistentVolumeClaim"))
            check_ref(problems, r, c, what, "PersistentVolumeClaim",
                      jstr(v, "persistentVolumeClaim.claimName"));
    }
    const cJSON *ct;
    cJSON_ArrayForEach(ct, jget(spec, "containers"))
    {
        const char *cn = jstr(ct, "name");
        if (!cJSON_IsFalse(jget(ct, "securityContext.allowPrivilegeEscalation")))
            strbuf_addf(problems, "%s/%s: allowPrivilegeEscalation is not false\n", what, cn);
        if (!cJSON_IsTrue(jget(ct, "securityContext.readOnlyRootFilesystem")))
            strbuf_addf(problems, "%s/%s: the root filesystem is writable\n", what, cn);
        if (!streq(jstr(ct, "securityContext.capabilities.drop[0]"), "ALL"))
            strbuf_addf(problems, "%s/%s: capabilities are not all dropped\n", what, cn);
        if (cJSON_IsTrue(jget(ct, "securityContext.privileged")))
            strbuf_addf(problems, "%s/%s: privileged\n", what, cn);
        if (!jget(ct, "resources.requests") || !jget(ct, "resources.limits.memory"))
            strbuf_addf(problems, "%s/%s: no resource requests or memory limit\n", what, cn);
        const cJSON *e;
        cJSON_ArrayForEach(e, jget(ct, "env"))
        {
            const char *en = jstr(e, "name");
            for (size_t i = 0; i < sizeof(secret_vars) / sizeof(secret_vars[0]); i++) {
                if (streq(en, secret_vars[i]) && !jget(e, "valueFrom.secretKeyRef"))
                    strbuf_addf(problems, "%s/%s: %s is not from a Secret\n", what, cn, en);
            }
            if (jget(e, "valueFrom.secretKeyRef"))
                check_ref(problems, r, c, what, "Secret", jstr(e, "valueFrom.secretKeyRef.name"));
            if (jget(e, "valueFrom.configMapKeyRef"))
                check_ref(problems, r, c, what, "ConfigMap",
                          jstr(e, "valueFrom.configMapKeyRef.name"));
        }
        /* Every mount names a volume of the pod (or a claim template). */
        const cJSON *m;
        cJSON_ArrayForEach(m, jget(ct, "volumeMounts"))
        {
            bool found = false;
            const cJSON *vol;
            cJSON_ArrayForEach(vol, jget(spec, "volumes")) found =
                found || streq(jstr(vol, "name"), jstr(m, "name"));
            cJSON_ArrayForEach(vol, jget(d, "spec.volumeClaimTemplates")) found =
                found || streq(jstr(vol, "metadata.name"), jstr(m, "name"));
            if (!found)
                strbuf_addf(problems, "%s/%s: mounts the unknown volume \"%s\"\n", what, cn,
                            jstr(m, "name"));
        }
        /* A sluice daemon reads sluice.yaml from the mounted ConfigMap (the migration Job,
         * a hook that may run before it exists, reads none). */
        const char *role = jstr(ct, "args[0]");
        if (streq(role, "scheduler") || streq(role, "api") || streq(role, "worker")) {
            const char *cfg = jstr(env_of(ct, "SLUICE_CONFIG"), "value");
            bool mounted = false;
            cJSON_ArrayForEach(m, jget(ct, "volumeMounts"))
            {
                const char *mp = jstr(m, "mountPath");
                mounted = mounted || (streq(jstr(m, "name"), "config") && cfg && mp &&
                                      !strncmp(cfg, mp, strlen(mp)));
            }
            if (!mounted)
                strbuf_addf(problems, "%s/%s: SLUICE_CONFIG is not in the config volume\n", what,
                            cn);
        }
    }
    free(what);
}

/* The keys sluice.yaml must never hold: secrets come from the environment only. */
static void check_no_secret_keys(struct strbuf *problems, const cJSON *o, const char *path)
{
    static const char *const words[] = {"password",     "secret",    "token",
                                        "database_url", "redis_url", "access_key"};
    const cJSON *c;
    cJSON_ArrayForEach(c, o)
    {
        if (!c->string)
            continue;
        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
            if (strstr(c->string, words[i]) && !strstr(c->string, "_file") &&
                strcmp(c->string, "image_pull_secrets") != 0) /* names, not secrets */
                strbuf_addf(problems, "sluice.yaml: %s%s may hold a secret\n", path, c->string);
        if (cJSON_IsObject(c)) {
            char *sub = xasprintf("%s%s.", path, c->string);
            check_no_secret_keys(problems, c, sub);
            free(sub);
        }
    }
}

/* `sluice config check` on the ConfigMap's sluice.yaml: every key one sluice knows, every
 * value one it takes (the chart and the binary cannot drift apart). */
static void check_config_accepted(struct strbuf *problems, const struct render *r)
{
    const cJSON *cm = find_obj(r->docs, "ConfigMap", FULLNAME "-config");
    const char *text = cm ? jkey(jget(cm, "data"), "sluice.yaml") : NULL;
    if (!text) {
        strbuf_addf(problems, "no ConfigMap with sluice.yaml\n");
        return;
    }
    char path[] = "/tmp/sluice-chart-config-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char *argv[] = {(char *)test_sluice_bin(), "config", "check", "--config", path, NULL};
    char *out = NULL, *err = NULL;
    int rc = test_run(argv, &out, &err);
    if (rc != 0)
        strbuf_addf(problems, "sluice config check refuses sluice.yaml (exit %d): %s\n", rc,
                    err ? err : "");
    unlink(path);
    free(out);
    free(err);
}

/* sluice.yaml from the ConfigMap (caller deletes). */
static cJSON *sluice_yaml(const struct render *r)
{
    const cJSON *cm = find_obj(r->docs, "ConfigMap", FULLNAME "-config");
    ck_assert_msg(cm != NULL, "no ConfigMap " FULLNAME "-config");
    const char *text = jkey(jget(cm, "data"), "sluice.yaml");
    ck_assert_msg(text != NULL, "the ConfigMap has no sluice.yaml");
    cJSON *docs = yaml_load_all(text, "sluice.yaml");
    ck_assert_int_eq(cJSON_GetArraySize(docs), 1);
    cJSON *conf = cJSON_DetachItemFromArray(docs, 0);
    cJSON_Delete(docs);
    return conf;
}

/* The mountPath of volume vol in a container, or NULL. */
static const char *mount_of(const cJSON *container, const char *vol)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, jget(container, "volumeMounts"))
    {
        if (streq(jstr(m, "name"), vol))
            return jstr(m, "mountPath");
    }
    return NULL;
}

static void check_render(struct strbuf *problems, const struct render *r,
                         const struct chart_case *c)
{
    const cJSON *d, *e;
    cJSON_ArrayForEach(d, r->docs)
    {
        const char *kind = jstr(d, "kind"), *name = jstr(d, "metadata.name");
        if (!kind || !name) {
            strbuf_addf(problems, "an object without kind or name\n");
            continue;
        }
        if (strlen(name) > 63 ||
            strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(name))
            strbuf_addf(problems, "%s/%s: not a DNS-1123 label\n", kind, name);
        if (!streq(jkey(jget(d, "metadata.labels"), "app.kubernetes.io/instance"), RELEASE))
            strbuf_addf(problems, "%s/%s: no app.kubernetes.io/instance label\n", kind, name);
        if (!streq(kind, "PersistentVolume") && !jstr(d, "metadata.namespace"))
            strbuf_addf(problems, "%s/%s: no namespace\n", kind, name);
        cJSON_ArrayForEach(e, r->docs)
        {
            if (e != d && streq(jstr(e, "kind"), kind) && streq(jstr(e, "metadata.name"), name) &&
                streq(jstr(e, "metadata.namespace"), jstr(d, "metadata.namespace")))
                strbuf_addf(problems, "%s/%s: rendered twice\n", kind, name);
        }
        if (shape_api_version(kind))
            shape_check(problems, d);
        if (is_workload(d))
            check_pod(problems, r, c, d);

        /* Selectors of Services, PDBs and ServiceMonitors select some pod template. */
        const cJSON *sel = NULL;
        if (streq(kind, "Service"))
            sel = jget(d, "spec.selector");
        else if (streq(kind, "PodDisruptionBudget"))
            sel = jget(d, "spec.selector.matchLabels");
        if (sel) {
            bool hit = false;
            cJSON_ArrayForEach(e, r->docs) hit =
                hit ||
                (is_workload(e) && labels_match(sel, jget(e, "spec.template.metadata.labels")));
            if (!hit)
                strbuf_addf(problems, "%s/%s: selects no pod\n", kind, name);
        }
        if (streq(kind, "ServiceMonitor")) {
            bool hit = false;
            cJSON_ArrayForEach(e, r->docs) hit =
                hit ||
                (streq(jstr(e, "kind"), "Service") &&
                 labels_match(jget(d, "spec.selector.matchLabels"), jget(e, "metadata.labels")));
            if (!hit)
                strbuf_addf(problems, "%s/%s: selects no Service\n", kind, name);
        }
        /* Autoscalers scale a rendered Deployment that leaves replicas to them. */
        if (streq(kind, "ScaledObject") || streq(kind, "HorizontalPodAutoscaler")) {
            const cJSON *dep = find_obj(r->docs, "Deployment", jstr(d, "spec.scaleTargetRef.name"));
            if (!dep)
                strbuf_addf(problems, "%s/%s: scales no rendered Deployment\n", kind, name);
            else if (jget(dep, "spec.replicas"))
                strbuf_addf(problems, "%s/%s: its Deployment also sets replicas\n", kind, name);
        }
        if (streq(kind, "RoleBinding")) {
            const cJSON *role = find_obj(r->docs, "Role", jstr(d, "roleRef.name"));
            if (!role || !streq(jstr(role, "metadata.namespace"), jstr(d, "metadata.namespace")))
                strbuf_addf(problems, "%s/%s: binds no Role of its namespace\n", kind, name);
            cJSON_ArrayForEach(e, jget(d, "subjects"))
                check_ref(problems, r, c, "RoleBinding", "ServiceAccount", jstr(e, "name"));
        }
        if (streq(kind, "Ingress")) {
            const cJSON *rule, *p;
            cJSON_ArrayForEach(rule, jget(d, "spec.rules"))
            {
                cJSON_ArrayForEach(p, jget(rule, "http.paths"))
                {
                    const cJSON *svc =
                        find_obj(r->docs, "Service", jstr(p, "backend.service.name"));
                    if (!svc || !streq(jstr(svc, "spec.ports[0].name"),
                                       jstr(p, "backend.service.port.name")))
                        strbuf_addf(problems, "Ingress/%s: a path to no Service port\n", name);
                }
            }
            cJSON_ArrayForEach(e, jget(d, "spec.tls"))
                check_ref(problems, r, c, "Ingress", "Secret", jstr(e, "secretName"));
        }
    }

    /* sluice.yaml: accepted by the binary itself, no secret, consistent with the mounts. */
    check_config_accepted(problems, r);
    cJSON *conf = sluice_yaml(r);
    check_no_secret_keys(problems, conf, "");
    const cJSON *api = find_obj(r->docs, "Deployment", FULLNAME "-api");
    if (!api) {
        strbuf_addf(problems, "no API Deployment\n");
    } else {
        char *listen =
            xasprintf("0.0.0.0:%d",
                      (int)cJSON_GetNumberValue(jget(container0(api), "ports[0].containerPort")));
        if (!streq(jstr(conf, "api.listen"), listen))
            strbuf_addf(problems, "sluice.yaml: api.listen %s, want %s\n",
                        jstr(conf, "api.listen") ? jstr(conf, "api.listen") : "(none)", listen);
        free(listen);
    }
    cJSON_ArrayForEach(d, r->docs)
    {
        const char *name = jstr(d, "metadata.name");
        if (!streq(jstr(d, "kind"), "Deployment") || !name ||
            strncmp(name, FULLNAME "-worker-", strlen(FULLNAME "-worker-")))
            continue;
        const cJSON *ct = container0(d);
        if (jstr(conf, "log_root") && !streq(mount_of(ct, "logs"), jstr(conf, "log_root")))
            strbuf_addf(problems, "%s: the logs volume is not at log_root\n", name);
        if (streq(jstr(conf, "artifacts.repository"), "fs") &&
            !streq(mount_of(ct, "artifacts"), jstr(conf, "artifacts.root")))
            strbuf_addf(problems, "%s: the artifacts volume is not at artifacts.root\n", name);
        if (!mount_of(ct, "work") || !streq(mount_of(ct, "work"), jstr(conf, "work_root")))
            strbuf_addf(problems, "%s: work_root is not a writable volume\n", name);
        /* Least privilege: a worker never sees the database nor the webhook secret; the Git
         * secret only when its own processes run steps (local: from: git inputs), never when
         * step pods do (they get it by reference) */
        bool local = cJSON_IsFalse(jget(d, "spec.template.spec.automountServiceAccountToken"));
        if (env_of(ct, "SLUICE_DATABASE_URL"))
            strbuf_addf(problems, "%s: a worker gets SLUICE_DATABASE_URL\n", name);
        if ((!local && (env_of(ct, "SLUICE_GIT_PASSWORD") || mount_of(ct, "git-credentials"))) ||
            env_of(ct, "SLUICE_API_WEBHOOK_SECRET"))
            strbuf_addf(problems, "%s: a worker gets the Git or webhook secret\n", name);
    }
    const cJSON *sched = find_obj(r->docs, "Deployment", FULLNAME "-scheduler");
    if (!sched)
        strbuf_addf(problems, "no scheduler Deployment\n");
    else if (env_of(container0(sched), "AWS_SECRET_ACCESS_KEY") ||
             env_of(container0(sched), "SLUICE_API_WEBHOOK_SECRET"))
        strbuf_addf(problems, "the scheduler gets S3 or webhook secrets\n");
    if (api && env_of(container0(api), "SLUICE_GIT_PASSWORD"))
        strbuf_addf(problems, "the API gets the Git password\n");
    /* The executor's Role: exactly pods create/get/list/watch/delete and pods/log get, in
     * the namespace sluice.yaml sends steps to. */
    const cJSON *role = find_obj(r->docs, "Role", FULLNAME "-executor");
    if (role) {
        char *json = cJSON_PrintUnformatted(jget(role, "rules"));
        if (strcmp(json, "[{\"apiGroups\":[\"\"],\"resources\":[\"pods\"],\"verbs\":[\"create\","
                         "\"get\",\"list\",\"watch\",\"delete\"]},{\"apiGroups\":[\"\"],"
                         "\"resources\":[\"pods/log\"],\"verbs\":[\"get\"]}]"))
            strbuf_addf(problems, "Role: rules %s\n", json);
        free(json);
        if (!streq(jstr(role, "metadata.namespace"), jstr(conf, "kubernetes.namespace")))
            strbuf_addf(problems, "Role: namespace %s, steps go to %s\n",
                        jstr(role, "metadata.namespace"), jstr(conf, "kubernetes.namespace"));
    }
    cJSON_Delete(conf);
}

/* --- the tests ------------------------------------------------------------------------------- */

/* Each values file (and the defaults): lint, render, and every rule above. */
START_TEST(test_values_render_valid)
{
    const struct chart_case *c = &chart_cases[_i];
    char *chart = test_path("charts/sluice");
    char *vpath = c->values ? test_path(c->values) : NULL;
    char *out = NULL, *err = NULL;
    int rc = vpath ? helm(&out, &err, "lint", "--strict", chart, "--values", vpath, NULL)
                   : helm(&out, &err, "lint", "--strict", chart, NULL);
    ck_assert_msg(rc == 0, "helm lint --strict with %s: exit %d\n%s%s",
                  c->values ? c->values : "defaults", rc, out, err);
    free(out);
    free(err);

    struct render r;
    render(&r, c->values);
    struct strbuf problems = STRBUF_INIT;
    check_schema(&problems, &r);
    check_render(&problems, &r, c);
    ck_assert_msg(problems.len == 0, "%s:\n%s", c->values ? c->values : "defaults", problems.buf);
    strbuf_release(&problems);
    render_free(&r);
    free(chart);
    free(vpath);
}
END_TEST

/* The checks above are not vacuous: each catches a planted fault. */
START_TEST(test_checks_catch_faults)
{
    struct render r;
    render(&r, "tests/chart/keda.yaml");
    struct strbuf problems = STRBUF_INIT;

    /* An unknown field in a pod template: the official schema refuses it. */
    cJSON *dep = find_obj(r.docs, "Deployment", FULLNAME "-worker-cpu");
    ck_assert_ptr_nonnull(dep);
    cJSON_AddNumberToObject(container0(dep), "gpuCount", 1);
    struct tmpdir t;
    tmp_init(&t);
    char *json = cJSON_PrintUnformatted(jget(dep, "spec.template"));
    const char *f = tmp_write(&t, "template.json", json);
    char *out = NULL, *err = NULL;
    ck_assert_int_eq(schema_check(f, "io.k8s.api.core.v1.PodTemplateSpec", &out, &err), 1);
    ck_assert_msg(strstr(out, "gpuCount") != NULL, "%s", out);
    free(out);
    free(err);
    free(json);
    tmp_clean(&t);

    /* A number in KEDA's string-only metadata, an unknown field, a missing required one. */
    cJSON *so = find_obj(r.docs, "ScaledObject", FULLNAME "-worker-cpu");
    ck_assert_ptr_nonnull(so);
    cJSON_ReplaceItemInObjectCaseSensitive(jget(so, "spec.triggers[0].metadata"), "streamLength",
                                           cJSON_CreateNumber(8));
    cJSON_AddNumberToObject(jget(so, "spec"), "minReplicas", 1);
    cJSON_DeleteItemFromObjectCaseSensitive(jget(so, "spec"), "scaleTargetRef");
    shape_check(&problems, so);
    ck_assert_msg(strstr(problems.buf, ".spec.triggers[].metadata: wrong type"), "%s",
                  problems.buf);
    ck_assert_msg(strstr(problems.buf, ".spec.minReplicas: unknown field"), "%s", problems.buf);
    ck_assert_msg(strstr(problems.buf, ".spec.scaleTargetRef: missing required field"), "%s",
                  problems.buf);

    /* A secret as a literal, a Role with more rights, a dangling Secret reference. */
    strbuf_reset(&problems);
    cJSON *redis = env_of(container0(dep), "SLUICE_REDIS_URL");
    cJSON_DeleteItemFromObjectCaseSensitive(redis, "valueFrom");
    cJSON_AddStringToObject(redis, "value", "redis://:pw@redis:6379");
    cJSON *role = find_obj(r.docs, "Role", FULLNAME "-executor");
    cJSON_AddItemToArray(jget(role, "rules[0].verbs"), cJSON_CreateString("patch"));
    cJSON_AddItemToObject(jget(so, "spec"), "scaleTargetRef", cJSON_CreateObject());
    cJSON *api = find_obj(r.docs, "Deployment", FULLNAME "-api");
    cJSON *db = env_of(container0(api), "SLUICE_DATABASE_URL");
    cJSON_ReplaceItemInObjectCaseSensitive(jget(db, "valueFrom.secretKeyRef"), "name",
                                           cJSON_CreateString("sluice-dbb"));
    check_render(&problems, &r, case_for("tests/chart/keda.yaml"));
    ck_assert_msg(strstr(problems.buf, "SLUICE_REDIS_URL is not from a Secret"), "%s",
                  problems.buf);
    ck_assert_msg(strstr(problems.buf, "Role: rules"), "%s", problems.buf);
    ck_assert_msg(strstr(problems.buf, "\"sluice-dbb\" is neither rendered"), "%s", problems.buf);

    strbuf_release(&problems);
    render_free(&r);
}
END_TEST

/* Every file of tests/chart/bad is refused, saying what its first line expects. */
START_TEST(test_bad_values_refused)
{
    char *dir = test_path("tests/chart/bad");
    char *chart = test_path("charts/sluice");
    DIR *dh = opendir(dir);
    ck_assert_msg(dh != NULL, "cannot open %s", dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dh)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".yaml"))
            continue;
        char *path = xasprintf("%s/%s", dir, de->d_name);
        char *text = test_read_file(path, NULL);
        ck_assert_msg(!strncmp(text, "# expect: ", 10), "%s: no \"# expect:\" line", path);
        char *expect = xstrndup(text + 10, strcspn(text + 10, "\n"));
        bool template_only = strstr(text, "\n# stage: template\n") != NULL;
        char *out = NULL, *err = NULL;
        int rc = helm(&out, &err, "template", RELEASE, chart, "--values", path, NULL);
        ck_assert_msg(rc != 0, "%s: helm template accepted it", de->d_name);
        ck_assert_msg(strstr(err, expect) != NULL, "%s: the refusal does not mention \"%s\":\n%s",
                      de->d_name, expect, err);
        free(out);
        free(err);
        if (!template_only) {
            rc = helm(&out, &err, "lint", chart, "--values", path, NULL);
            ck_assert_msg(rc != 0, "%s: helm lint accepted it", de->d_name);
            ck_assert_msg(strstr(out, expect) || strstr(err, expect),
                          "%s: lint does not mention \"%s\":\n%s%s", de->d_name, expect, out, err);
            free(out);
            free(err);
        }
        free(expect);
        free(text);
        free(path);
        n++;
    }
    closedir(dh);
    ck_assert_int_ge(n, 15);
    free(chart);
    free(dir);
}
END_TEST

/* The defaults: a trial that stands alone (bundled PostgreSQL and Redis), two schedulers
 * with a PDB, the API with its probes, the migration hook, the Role. */
START_TEST(test_defaults)
{
    struct render r;
    render(&r, NULL);
    const cJSON *sched = find_obj(r.docs, "Deployment", FULLNAME "-scheduler");
    ck_assert_ptr_nonnull(sched);
    ck_assert_int_eq((int)cJSON_GetNumberValue(jget(sched, "spec.replicas")), 2);
    ck_assert_str_eq(jstr(container0(sched), "args[0]"), "scheduler");
    ck_assert_ptr_nonnull(env_of(container0(sched), "SLUICE_SCHEDULER_ID"));
    const cJSON *pdb = find_obj(r.docs, "PodDisruptionBudget", FULLNAME "-scheduler");
    ck_assert_ptr_nonnull(pdb);
    ck_assert_int_eq((int)cJSON_GetNumberValue(jget(pdb, "spec.minAvailable")), 1);

    const cJSON *api = find_obj(r.docs, "Deployment", FULLNAME "-api");
    ck_assert_ptr_nonnull(api);
    ck_assert_str_eq(jstr(container0(api), "readinessProbe.httpGet.path"), "/api/v1/health");
    ck_assert_str_eq(jstr(container0(api), "readinessProbe.httpGet.port"), "http");
    ck_assert_ptr_nonnull(jget(container0(api), "livenessProbe.tcpSocket"));
    const cJSON *svc = find_obj(r.docs, "Service", FULLNAME "-api");
    ck_assert_ptr_nonnull(svc);
    ck_assert_str_eq(jstr(svc, "spec.ports[0].targetPort"), "http");

    const cJSON *job = find_obj(r.docs, "Job", FULLNAME "-migrate");
    ck_assert_ptr_nonnull(job);
    /* The bundled database does not exist before the install: post-install then. */
    ck_assert_str_eq(jkey(jget(job, "metadata.annotations"), "helm.sh/hook"),
                     "post-install,pre-upgrade");
    ck_assert_str_eq(jstr(container0(job), "args[0]"), "db");
    ck_assert_str_eq(jstr(container0(job), "args[1]"), "migrate");
    ck_assert_str_eq(jstr(job, "spec.template.spec.restartPolicy"), "Never");

    ck_assert_ptr_nonnull(find_obj(r.docs, "StatefulSet", FULLNAME "-postgresql"));
    ck_assert_ptr_nonnull(find_obj(r.docs, "StatefulSet", FULLNAME "-redis"));
    const cJSON *sec = find_obj(r.docs, "Secret", FULLNAME "-bundled");
    ck_assert_ptr_nonnull(sec);
    ck_assert_ptr_nonnull(jget(sec, "data.database-url"));
    ck_assert_ptr_nonnull(jget(sec, "data.redis-url"));
    ck_assert_int_eq(count_kind(r.docs, "Secret"), 1);

    /* Shared volumes: ReadWriteMany claims, kept on uninstall. */
    const cJSON *logs = find_obj(r.docs, "PersistentVolumeClaim", FULLNAME "-logs");
    ck_assert_ptr_nonnull(logs);
    ck_assert_str_eq(jstr(logs, "spec.accessModes[0]"), "ReadWriteMany");
    ck_assert_ptr_nonnull(find_obj(r.docs, "PersistentVolumeClaim", FULLNAME "-artifacts"));

    const cJSON *rb = find_obj(r.docs, "RoleBinding", FULLNAME "-executor");
    ck_assert_ptr_nonnull(rb);
    ck_assert_str_eq(jstr(rb, "subjects[0].name"), FULLNAME "-worker");
    const cJSON *worker = find_obj(r.docs, "Deployment", FULLNAME "-worker-default");
    ck_assert_ptr_nonnull(worker);
    ck_assert_str_eq(jstr(worker, "spec.template.spec.serviceAccountName"), FULLNAME "-worker");
    ck_assert(cJSON_IsTrue(jget(worker, "spec.template.spec.automountServiceAccountToken")));
    /* The scheduler and the API never get a Kubernetes token. */
    ck_assert(cJSON_IsFalse(jget(sched, "spec.template.spec.automountServiceAccountToken")));
    ck_assert(cJSON_IsFalse(jget(api, "spec.template.spec.automountServiceAccountToken")));

    cJSON *conf = sluice_yaml(&r);
    ck_assert_str_eq(jstr(conf, "kubernetes.namespace"), NAMESPACE);
    ck_assert_str_eq(jstr(conf, "kubernetes.service_account"), FULLNAME "-step");
    ck_assert_ptr_nonnull(find_obj(r.docs, "ServiceAccount", FULLNAME "-step"));
    ck_assert_str_eq(jstr(conf, "worker.executor"), "kubernetes");
    /* Step pods' helper init container comes from this release's own image. */
    ck_assert_str_eq(jstr(conf, "kubernetes.sluice_image"), jstr(container0(sched), "image"));
    ck_assert_ptr_null(jget(conf, "kubernetes.default_image"));
    ck_assert_str_eq(jstr(conf, "scheduler.api_url"),
                     "http://" FULLNAME "-api." NAMESPACE ".svc:80");
    cJSON_Delete(conf);
    render_free(&r);
}
END_TEST

START_TEST(test_gpu_pools)
{
    struct render r;
    render(&r, "tests/chart/cpu-gpu.yaml");
    /* The GPU pool runs steps inside its pods: they carry the GPUs and the placement. */
    const cJSON *gpu = find_obj(r.docs, "Deployment", FULLNAME "-worker-gpu");
    ck_assert_ptr_nonnull(gpu);
    const cJSON *ct = container0(gpu);
    ck_assert_int_eq((int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(
                         jget(ct, "resources.limits"), "nvidia.com/gpu")),
                     2);
    ck_assert_str_eq(jstr(env_of(ct, "SLUICE_WORKER_GPUS"), "value"), "0,1");
    ck_assert_str_eq(jstr(env_of(ct, "SLUICE_WORKER_EXECUTOR"), "value"), "local");
    ck_assert_str_eq(jstr(env_of(ct, "SLUICE_WORKER_QUEUE"), "value"), "gpu");
    ck_assert_str_eq(jstr(env_of(ct, "SLUICE_WORKER_SLOTS"), "value"), "2");
    ck_assert_str_eq(jstr(gpu, "spec.template.spec.tolerations[0].key"), "nvidia.com/gpu");
    ck_assert_ptr_nonnull(jget(gpu, "spec.template.spec.nodeSelector"));
    ck_assert(cJSON_IsFalse(jget(gpu, "spec.template.spec.automountServiceAccountToken")));
    /* The AMD pool's step pods ask for amd.com/gpu. */
    const cJSON *amd = find_obj(r.docs, "Deployment", FULLNAME "-worker-amd");
    ck_assert_ptr_nonnull(amd);
    ck_assert_str_eq(jstr(env_of(container0(amd), "SLUICE_KUBERNETES_GPU_RESOURCE"), "value"),
                     "amd.com/gpu");
    ck_assert_ptr_null(env_of(container0(amd), "SLUICE_WORKER_GPUS"));
    /* Its placement goes to its step pods, not to the worker pod. */
    ck_assert_str_eq(jstr(env_of(container0(amd), "SLUICE_KUBERNETES_NODE_SELECTOR"), "value"),
                     "accelerator=amd-mi250,pool=gpu");
    cJSON *tol =
        cJSON_Parse(jstr(env_of(container0(amd), "SLUICE_KUBERNETES_TOLERATIONS"), "value"));
    ck_assert_ptr_nonnull(tol);
    ck_assert_str_eq(jstr(tol, "[0].key"), "amd.com/gpu");
    ck_assert_str_eq(jstr(tol, "[0].operator"), "Exists");
    ck_assert_str_eq(jstr(tol, "[0].effect"), "NoSchedule");
    cJSON_Delete(tol);
    ck_assert_ptr_null(jget(amd, "spec.template.spec.nodeSelector"));
    ck_assert_ptr_null(jget(amd, "spec.template.spec.tolerations"));
    ck_assert_ptr_null(env_of(ct, "SLUICE_KUBERNETES_NODE_SELECTOR"));
    /* The CPU pool requests no GPU. */
    const cJSON *cpu = find_obj(r.docs, "Deployment", FULLNAME "-worker-cpu");
    ck_assert_ptr_nonnull(cpu);
    char *res = cJSON_PrintUnformatted(jget(container0(cpu), "resources"));
    ck_assert_msg(strstr(res, "gpu") == NULL, "%s", res);
    free(res);
    ck_assert_int_eq((int)cJSON_GetNumberValue(jget(cpu, "spec.replicas")), 3);
    ck_assert_int_eq(count_kind(r.docs, "PodDisruptionBudget"), 5);
    render_free(&r);
}
END_TEST

START_TEST(test_external_database)
{
    struct render r;
    render(&r, "tests/chart/external-db.yaml");
    /* Nothing bundled, no Secret rendered: every secret is a reference. */
    ck_assert_int_eq(count_kind(r.docs, "StatefulSet"), 0);
    ck_assert_int_eq(count_kind(r.docs, "Secret"), 0);
    const cJSON *sched = find_obj(r.docs, "Deployment", FULLNAME "-scheduler");
    ck_assert_ptr_nonnull(sched);
    ck_assert_int_eq((int)cJSON_GetNumberValue(jget(sched, "spec.replicas")), 3);
    const cJSON *ct = container0(sched);
    ck_assert_str_eq(jstr(env_of(ct, "SLUICE_DATABASE_URL"), "valueFrom.secretKeyRef.name"),
                     "sluice-db");
    ck_assert_str_eq(jstr(env_of(ct, "SLUICE_DATABASE_URL"), "valueFrom.secretKeyRef.key"), "url");
    ck_assert_str_eq(jstr(env_of(ct, "SLUICE_REDIS_URL"), "valueFrom.secretKeyRef.name"),
                     "sluice-redis");
    ck_assert_str_eq(jstr(env_of(ct, "SLUICE_GIT_PASSWORD"), "valueFrom.secretKeyRef.key"),
                     "token");
    ck_assert_str_eq(jstr(ct, "image"), "registry.acme.io/platform/sluice:0.1.0");
    const cJSON *api = find_obj(r.docs, "Deployment", FULLNAME "-api");
    ck_assert_str_eq(
        jstr(env_of(container0(api), "SLUICE_API_WEBHOOK_SECRET"), "valueFrom.secretKeyRef.name"),
        "sluice-webhook");
    /* The external database exists before the install: the migration runs pre-install. */
    const cJSON *job = find_obj(r.docs, "Job", FULLNAME "-migrate");
    ck_assert_str_eq(jkey(jget(job, "metadata.annotations"), "helm.sh/hook"),
                     "pre-install,pre-upgrade");
    ck_assert_str_eq(
        jstr(env_of(container0(job), "SLUICE_DATABASE_URL"), "valueFrom.secretKeyRef.name"),
        "sluice-db");
    cJSON *conf = sluice_yaml(&r);
    ck_assert_str_eq(jstr(conf, "git.url"), "https://github.com/acme/pipelines.git");
    ck_assert_str_eq(jstr(conf, "git.ref"), "release-1.4");
    ck_assert_str_eq(jstr(conf, "git.username"), "x-access-token");
    ck_assert_str_eq(jstr(conf, "git.interval"), "2m");
    ck_assert_ptr_null(jget(conf, "git.ssh_key_file"));
    /* from: git inputs: step pods get the Secret's key by reference, the worker nothing */
    const cJSON *wd = find_obj(r.docs, "Deployment", FULLNAME "-worker-default");
    ck_assert_ptr_null(env_of(container0(wd), "SLUICE_GIT_PASSWORD"));
    ck_assert_str_eq(jstr(conf, "kubernetes.git_credentials"), "sluice-git");
    ck_assert_str_eq(jstr(conf, "kubernetes.git_credentials_keys"), "token,,");
    /* Step pods pull the helper image with the release's pull secrets. */
    ck_assert_str_eq(jstr(conf, "kubernetes.image_pull_secrets"), "acme-registry");
    ck_assert_str_eq(jstr(conf, "kubernetes.sluice_image"), jstr(ct, "image"));
    cJSON_Delete(conf);
    render_free(&r);
}
END_TEST

START_TEST(test_s3_artifacts)
{
    struct render r;
    render(&r, "tests/chart/s3.yaml");
    cJSON *conf = sluice_yaml(&r);
    ck_assert_str_eq(jstr(conf, "artifacts.repository"), "s3");
    ck_assert_str_eq(jstr(conf, "artifacts.endpoint"), "https://minio.storage.svc:9000");
    ck_assert_str_eq(jstr(conf, "artifacts.bucket"), "sluice-artifacts");
    ck_assert_str_eq(jstr(conf, "artifacts.prefix"), "prod/");
    ck_assert(cJSON_IsTrue(jget(conf, "artifacts.path_style")));
    ck_assert_ptr_null(jget(conf, "artifacts.root"));
    /* No artifacts volume; the logs on the existing claim. */
    ck_assert_ptr_null(find_obj(r.docs, "PersistentVolumeClaim", FULLNAME "-artifacts"));
    ck_assert_int_eq(count_kind(r.docs, "PersistentVolumeClaim"), 0);
    const cJSON *w = find_obj(r.docs, "Deployment", FULLNAME "-worker-default");
    ck_assert_ptr_null(mount_of(container0(w), "artifacts"));
    ck_assert_str_eq(jstr(volume_of(w, "logs"), "persistentVolumeClaim.claimName"), "shared-logs");
    /* Credentials to the workers and the API, from the Secret's own keys. */
    const cJSON *key = env_of(container0(w), "AWS_SECRET_ACCESS_KEY");
    ck_assert_str_eq(jstr(key, "valueFrom.secretKeyRef.name"), "sluice-s3");
    ck_assert_str_eq(jstr(key, "valueFrom.secretKeyRef.key"), "secret-key");
    ck_assert_str_eq(jstr(env_of(container0(w), "AWS_ACCESS_KEY_ID"), "valueFrom.secretKeyRef.key"),
                     "access-key");
    ck_assert_ptr_nonnull(
        env_of(container0(find_obj(r.docs, "Deployment", FULLNAME "-api")), "AWS_ACCESS_KEY_ID"));
    ck_assert_ptr_null(env_of(container0(find_obj(r.docs, "Deployment", FULLNAME "-scheduler")),
                              "AWS_ACCESS_KEY_ID"));
    cJSON_Delete(conf);
    render_free(&r);
}
END_TEST

START_TEST(test_nfs_and_storage_class)
{
    struct render r;
    render(&r, "tests/chart/nfs.yaml");
    /* NFS: a PersistentVolume per volume, its claim bound to it by name. */
    ck_assert_int_eq(count_kind(r.docs, "PersistentVolume"), 2);
    const char *pv_name = FULLNAME "-" NAMESPACE "-artifacts";
    const cJSON *pv = find_obj(r.docs, "PersistentVolume", pv_name);
    ck_assert_ptr_nonnull(pv);
    ck_assert_str_eq(jstr(pv, "spec.nfs.server"), "10.0.12.4");
    ck_assert_str_eq(jstr(pv, "spec.nfs.path"), "/exports/sluice/artifacts");
    ck_assert_str_eq(jstr(pv, "spec.accessModes[0]"), "ReadWriteMany");
    ck_assert_str_eq(jstr(pv, "spec.persistentVolumeReclaimPolicy"), "Retain");
    ck_assert_str_eq(jstr(pv, "spec.capacity.storage"), "1Ti");
    const cJSON *pvc = find_obj(r.docs, "PersistentVolumeClaim", FULLNAME "-artifacts");
    ck_assert_ptr_nonnull(pvc);
    ck_assert_str_eq(jstr(pvc, "spec.volumeName"), pv_name);
    ck_assert_str_eq(jstr(pvc, "spec.storageClassName"), "");
    render_free(&r);

    /* A storage class: dynamic provisioning, no PersistentVolume. */
    render(&r, "tests/chart/storageclass.yaml");
    ck_assert_int_eq(count_kind(r.docs, "PersistentVolume"), 0);
    pvc = find_obj(r.docs, "PersistentVolumeClaim", FULLNAME "-logs");
    ck_assert_ptr_nonnull(pvc);
    ck_assert_str_eq(jstr(pvc, "spec.storageClassName"), "nfs-client");
    ck_assert_ptr_null(jget(pvc, "spec.volumeName"));
    ck_assert_str_eq(jstr(pvc, "spec.resources.requests.storage"), "50Gi");
    render_free(&r);
}
END_TEST

START_TEST(test_ingress_and_monitoring)
{
    struct render r;
    render(&r, "tests/chart/ingress.yaml");
    const cJSON *ing = find_obj(r.docs, "Ingress", FULLNAME "-api");
    ck_assert_ptr_nonnull(ing);
    ck_assert_str_eq(jstr(ing, "spec.ingressClassName"), "nginx");
    ck_assert_str_eq(jstr(ing, "spec.tls[0].secretName"), "sluice-acme-tls");
    ck_assert_str_eq(jstr(ing, "spec.tls[0].hosts[0]"), "sluice.acme.io");
    ck_assert_str_eq(jstr(ing, "spec.rules[0].host"), "sluice.acme.io");
    ck_assert_str_eq(jstr(ing, "spec.rules[0].http.paths[0].backend.service.name"),
                     FULLNAME "-api");
    const cJSON *sm = find_obj(r.docs, "ServiceMonitor", FULLNAME "-api");
    ck_assert_ptr_nonnull(sm);
    ck_assert_str_eq(jstr(sm, "spec.endpoints[0].path"), "/api/v1/metrics");
    ck_assert_str_eq(jstr(sm, "spec.endpoints[0].port"), "http");
    /* Links in notifications use the public URL. */
    cJSON *conf = sluice_yaml(&r);
    ck_assert_str_eq(jstr(conf, "scheduler.api_url"), "https://sluice.acme.io");
    cJSON_Delete(conf);
    /* With a ServiceMonitor, no scrape annotations. */
    const cJSON *api = find_obj(r.docs, "Deployment", FULLNAME "-api");
    ck_assert_ptr_null(
        jkey(jget(api, "spec.template.metadata.annotations"), "prometheus.io/scrape"));
    ck_assert_int_eq((int)cJSON_GetNumberValue(jget(api, "spec.replicas")), 3);
    render_free(&r);
}
END_TEST

START_TEST(test_keda_autoscaling)
{
    struct render r;
    render(&r, "tests/chart/keda.yaml");
    ck_assert_int_eq(count_kind(r.docs, "ScaledObject"), 2);
    const cJSON *so = find_obj(r.docs, "ScaledObject", FULLNAME "-worker-cpu");
    ck_assert_ptr_nonnull(so);
    const cJSON *trig = jget(so, "spec.triggers[0]");
    ck_assert_str_eq(jstr(trig, "type"), "redis-streams");
    ck_assert_str_eq(jstr(trig, "metadata.address"), "redis-master.redis.svc:6379");
    /* XLEN of the queue's stream = steps queued or running; one worker per `slots`. */
    ck_assert_str_eq(jstr(trig, "metadata.stream"), "sluice:q:default");
    ck_assert_str_eq(jstr(trig, "metadata.streamLength"), "8");
    ck_assert_ptr_null(jget(trig, "metadata.consumerGroup"));
    ck_assert_int_eq((int)cJSON_GetNumberValue(jget(so, "spec.maxReplicaCount")), 20);
    ck_assert_str_eq(jstr(so, "spec.scaleTargetRef.name"), FULLNAME "-worker-cpu");
    const cJSON *ta =
        find_obj(r.docs, "TriggerAuthentication", jstr(trig, "authenticationRef.name"));
    ck_assert_ptr_nonnull(ta);
    ck_assert_str_eq(jstr(ta, "spec.secretTargetRef[0].parameter"), "password");
    ck_assert_str_eq(jstr(ta, "spec.secretTargetRef[0].name"), "sluice-redis");
    ck_assert_str_eq(jstr(ta, "spec.secretTargetRef[0].key"), "password");
    /* The autoscaler owns replicas. */
    ck_assert_ptr_null(
        jget(find_obj(r.docs, "Deployment", FULLNAME "-worker-cpu"), "spec.replicas"));
    render_free(&r);

    /* The bundled Redis: KEDA is pointed at it and its password without configuration. */
    render(&r, "tests/chart/hpa.yaml");
    ck_assert_int_eq(count_kind(r.docs, "ScaledObject"), 0);
    const cJSON *hpa = find_obj(r.docs, "HorizontalPodAutoscaler", FULLNAME "-worker-default");
    ck_assert_ptr_nonnull(hpa);
    ck_assert_str_eq(jstr(hpa, "spec.metrics[0].external.metric.name"), "sluice_queue_length");
    ck_assert_str_eq(jstr(hpa, "spec.metrics[0].external.metric.selector.matchLabels.queue"),
                     "default");
    ck_assert_str_eq(jstr(hpa, "spec.metrics[0].external.target.averageValue"), "4");
    ck_assert_int_eq((int)cJSON_GetNumberValue(jget(hpa, "spec.minReplicas")), 2);
    ck_assert_ptr_null(
        jget(find_obj(r.docs, "Deployment", FULLNAME "-worker-default"), "spec.replicas"));
    render_free(&r);
}
END_TEST

START_TEST(test_git_ssh_and_step_namespace)
{
    struct render r;
    render(&r, "tests/chart/git-ssh.yaml");
    cJSON *conf = sluice_yaml(&r);
    ck_assert_str_eq(jstr(conf, "git.url"), "git@github.com:acme/pipelines.git");
    const char *key_file = jstr(conf, "git.ssh_key_file");
    const char *hosts_file = jstr(conf, "git.known_hosts_file");
    ck_assert_ptr_nonnull(key_file);
    ck_assert_ptr_nonnull(hosts_file);
    /* The files sluice.yaml names are where the Secret is mounted, readable by the group. */
    const cJSON *sched = find_obj(r.docs, "Deployment", FULLNAME "-scheduler");
    const char *mp = mount_of(container0(sched), "git-credentials");
    ck_assert_ptr_nonnull(mp);
    ck_assert_int_eq(strncmp(key_file, mp, strlen(mp)), 0);
    ck_assert_int_eq(strncmp(hosts_file, mp, strlen(mp)), 0);
    const cJSON *vol = volume_of(sched, "git-credentials");
    ck_assert_ptr_nonnull(vol);
    ck_assert_str_eq(jstr(vol, "secret.secretName"), "sluice-git-ssh");
    ck_assert_int_eq((int)cJSON_GetNumberValue(jget(vol, "secret.defaultMode")), 0440);
    ck_assert_str_eq(jstr(vol, "secret.items[0].key"), "ssh-privatekey");
    ck_assert_ptr_null(env_of(container0(sched), "SLUICE_GIT_PASSWORD"));
    /* Step pods get the Secret's keys for their stage-in container (the kubernetes
     * workers themselves nothing: checked for every values file) */
    ck_assert_str_eq(jstr(conf, "kubernetes.git_credentials"), "sluice-git-ssh");
    ck_assert_str_eq(jstr(conf, "kubernetes.git_credentials_keys"), ",ssh-privatekey,known_hosts");
    /* Steps in their own namespace: the Role and the step account follow them. */
    ck_assert_str_eq(jstr(conf, "kubernetes.namespace"), "sluice-steps");
    ck_assert_str_eq(jstr(conf, "kubernetes.service_account"), "pipeline-runner");
    ck_assert_str_eq(jstr(conf, "kubernetes.default_image"), "registry.acme.io/ml/runtime:2024.06");
    const cJSON *role = find_obj(r.docs, "Role", FULLNAME "-executor");
    ck_assert_str_eq(jstr(role, "metadata.namespace"), "sluice-steps");
    const cJSON *rb = find_obj(r.docs, "RoleBinding", FULLNAME "-executor");
    ck_assert_str_eq(jstr(rb, "metadata.namespace"), "sluice-steps");
    ck_assert_str_eq(jstr(rb, "subjects[0].name"), "sluice-worker");
    ck_assert_str_eq(jstr(rb, "subjects[0].namespace"), NAMESPACE);
    ck_assert_int_eq(count_kind(r.docs, "ServiceAccount"), 0);
    cJSON_Delete(conf);
    render_free(&r);
}
END_TEST

/* Local-executor workers run from: git inputs themselves: the Git Secret's files where
 * sluice.yaml says, as on the scheduler. */
START_TEST(test_local_workers_get_the_git_credentials)
{
    struct render r;
    render(&r, "tests/chart/git-local.yaml");
    cJSON *conf = sluice_yaml(&r);
    const cJSON *w = find_obj(r.docs, "Deployment", FULLNAME "-worker-default");
    const char *mp = mount_of(container0(w), "git-credentials");
    ck_assert_ptr_nonnull(mp);
    ck_assert_str_eq(mp, mount_of(container0(find_obj(r.docs, "Deployment", FULLNAME "-scheduler")),
                                  "git-credentials"));
    const char *key_file = jstr(conf, "git.ssh_key_file");
    ck_assert_ptr_nonnull(key_file);
    ck_assert_int_eq(strncmp(key_file, mp, strlen(mp)), 0);
    ck_assert_str_eq(jstr(volume_of(w, "git-credentials"), "secret.secretName"), "sluice-git-ssh");
    cJSON_Delete(conf);
    render_free(&r);
}
END_TEST

START_TEST(test_local_executor_has_no_rbac)
{
    struct render r;
    render(&r, "tests/chart/local.yaml");
    ck_assert_int_eq(count_kind(r.docs, "Role"), 0);
    ck_assert_int_eq(count_kind(r.docs, "RoleBinding"), 0);
    ck_assert_ptr_null(find_obj(r.docs, "ServiceAccount", FULLNAME "-step"));
    const cJSON *w = find_obj(r.docs, "Deployment", FULLNAME "-worker-default");
    ck_assert(cJSON_IsFalse(jget(w, "spec.template.spec.automountServiceAccountToken")));
    cJSON *conf = sluice_yaml(&r);
    ck_assert_str_eq(
        jstr(conf, "dags.dir"),
        mount_of(container0(find_obj(r.docs, "Deployment", FULLNAME "-scheduler")), "dags"));
    ck_assert_ptr_null(jget(conf, "git"));
    cJSON_Delete(conf);
    render_free(&r);
}
END_TEST

/* NOTES.txt, as `helm install` prints it (client-side dry run: no cluster). */
START_TEST(test_notes)
{
    char *chart = test_path("charts/sluice");
    char *out = NULL, *err = NULL;
    int rc = helm(&out, &err, "install", RELEASE, chart, "--namespace", NAMESPACE,
                  "--dry-run=client", NULL);
    ck_assert_msg(rc == 0, "exit %d\n%s", rc, err);
    const char *notes = strstr(out, "NOTES:");
    ck_assert_ptr_nonnull(notes);
    ck_assert_ptr_nonnull(strstr(notes, "exec deploy/" FULLNAME "-api -- \\\n"
                                        "     sluice token create --role admin"));
    ck_assert_ptr_nonnull(strstr(notes, "port-forward svc/" FULLNAME "-api 8080:80"));
    ck_assert_ptr_nonnull(strstr(notes, "git.url is empty"));
    ck_assert_ptr_nonnull(strstr(notes, "bundled PostgreSQL and Redis"));
    free(out);
    free(err);

    char *ing = test_path("tests/chart/ingress.yaml");
    rc = helm(&out, &err, "install", RELEASE, chart, "--namespace", NAMESPACE, "--dry-run=client",
              "--values", ing, NULL);
    ck_assert_msg(rc == 0, "exit %d\n%s", rc, err);
    notes = strstr(out, "NOTES:");
    ck_assert_ptr_nonnull(notes);
    ck_assert_ptr_nonnull(strstr(notes, "https://sluice.acme.io/api/v1/health"));
    ck_assert_ptr_null(strstr(notes, "port-forward"));
    ck_assert_ptr_null(strstr(notes, "git.url is empty"));
    free(out);
    free(err);
    free(ing);
    free(chart);
}
END_TEST

/* --- the Dockerfile ------------------------------------------------------------------------ */

struct docker_stage {
    char *from, *name;
    struct strbuf body; /* the stage's instructions, one logical line each */
};

/* Splits the Dockerfile into stages of logical lines (continuations joined, comments
 * dropped). Returns the number of stages. */
static int dockerfile_stages(struct docker_stage *st, int max, const char *text)
{
    int n = 0;
    struct strbuf line = STRBUF_INIT;
    const char *p = text;
    while (*p) {
        size_t len = strcspn(p, "\n");
        const char *s = p;
        while (s < p + len && (*s == ' ' || *s == '\t'))
            s++;
        bool comment = *s == '#';
        if (!comment) {
            size_t l = (size_t)(p + len - s);
            bool cont = l > 0 && s[l - 1] == '\\';
            strbuf_add(&line, s, cont ? l - 1 : l);
            if (cont) {
                strbuf_addch(&line, ' ');
            } else if (line.len) {
                if (!strncmp(line.buf, "FROM ", 5)) {
                    ck_assert_int_lt(n, max);
                    char *rest = line.buf + 5;
                    char *as = strstr(rest, " AS ");
                    st[n].from = xstrndup(rest, as ? (size_t)(as - rest) : strlen(rest));
                    st[n].name = as ? xstrdup(as + 4) : NULL;
                    strbuf_init(&st[n].body, 0);
                    n++;
                } else if (n > 0) {
                    strbuf_addf(&st[n - 1].body, "%s\n", line.buf);
                }
                strbuf_reset(&line);
            }
        }
        p += len;
        if (*p)
            p++;
    }
    strbuf_release(&line);
    return n;
}

/* The packages of the stage's `apt-get install` lines, space-separated and padded. */
static char *stage_apt_packages(const struct docker_stage *st)
{
    struct strbuf pk = STRBUF_INIT;
    strbuf_addch(&pk, ' ');
    const char *p = st->body.buf;
    while ((p = strstr(p, "apt-get install")) != NULL) {
        p += strlen("apt-get install");
        for (;;) {
            p += strspn(p, " \t");
            size_t w = strcspn(p, " \t\n");
            if (w == 0 || !strncmp(p, "&&", 2) || *p == '\n')
                break;
            if (*p != '-')
                strbuf_addf(&pk, "%.*s ", (int)w, p);
            p += w;
        }
    }
    return strbuf_detach(&pk, NULL);
}

static bool word_in(const char *padded_list, const char *word)
{
    char *needle = xasprintf(" %s ", word);
    bool in = strstr(padded_list, needle) != NULL;
    free(needle);
    return in;
}

/* The Debian package owning a file, or NULL. With merged /usr, ldd may name /lib/x a
 * package registered as /usr/lib/x (or the other way round): both are asked. */
static char *dpkg_owner(const char *file)
{
    char *alt = !strncmp(file, "/usr/", 5) ? xstrdup(file + 4) : xasprintf("/usr%s", file);
    const char *cands[] = {file, alt};
    char *pkg = NULL;
    for (size_t i = 0; i < 2 && !pkg; i++) {
        const char *argv[] = {"/usr/bin/dpkg", "-S", cands[i], NULL};
        char *out = NULL;
        if (test_run((char *const *)argv, &out, NULL) == 0 && out)
            pkg = xstrndup(out, strcspn(out, ":"));
        free(out);
    }
    free(alt);
    return pkg;
}

START_TEST(test_dockerfile)
{
    char *path = test_path("Dockerfile");
    char *text = test_read_file(path, NULL);
    struct docker_stage st[4];
    int n = dockerfile_stages(st, 4, text);
    /* Multi-stage: a build stage on Debian 12, a slim Debian 12 runtime last. */
    ck_assert_int_ge(n, 2);
    struct docker_stage *build = &st[0], *rt = &st[n - 1];
    ck_assert_str_eq(build->from, "debian:bookworm");
    ck_assert_str_eq(rt->from, "debian:bookworm-slim");
    ck_assert_ptr_nonnull(build->name);

    /* The runtime stage: nothing ADDed, one COPY, of the binary, from the build stage. */
    ck_assert_ptr_null(strstr(rt->body.buf, "\nADD "));
    ck_assert(strncmp(rt->body.buf, "ADD ", 4) != 0);
    int copies = 0;
    for (const char *p = rt->body.buf; (p = strstr(p, "COPY ")) != NULL; p += 5) {
        if (p != rt->body.buf && p[-1] != '\n')
            continue;
        copies++;
        char *want =
            xasprintf("COPY --from=%s /src/bin/sluice /usr/local/bin/sluice\n", build->name);
        ck_assert_msg(!strncmp(p, want, strlen(want)), "runtime COPY: %.*s", (int)strcspn(p, "\n"),
                      p);
        free(want);
    }
    ck_assert_int_eq(copies, 1);
    ck_assert_ptr_nonnull(strstr(rt->body.buf, "ENTRYPOINT [\"/usr/local/bin/sluice\"]\n"));

    /* Its last USER is numeric and not root (Kubernetes' runAsNonRoot checks numbers). */
    const char *user = NULL;
    for (const char *p = rt->body.buf; (p = strstr(p, "USER ")) != NULL; p += 5)
        if (p == rt->body.buf || p[-1] == '\n')
            user = p + 5;
    ck_assert_ptr_nonnull(user);
    char *end = NULL;
    long uid = strtol(user, &end, 10);
    ck_assert_msg(end != user && uid > 0, "USER %.*s", (int)strcspn(user, "\n"), user);

    /* Runtime packages: CA certificates and shared libraries only, each a Debian 12
     * package, and covering every library the binary needs. */
    char *rt_pkgs = stage_apt_packages(rt);
    ck_assert(word_in(rt_pkgs, "ca-certificates"));
    ck_assert_ptr_null(strstr(rt_pkgs, "-dev "));
    ck_assert(!word_in(rt_pkgs, "build-essential") && !word_in(rt_pkgs, "gcc"));
    ck_assert_ptr_nonnull(strstr(rt->body.buf, "rm -rf /var/lib/apt/lists/*"));
    ck_assert_ptr_nonnull(strstr(rt->body.buf, "--no-install-recommends"));
    char *save = NULL, *copy = xstrdup(rt_pkgs);
    for (char *w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        ck_assert_msg(!strcmp(w, "ca-certificates") || !strncmp(w, "lib", 3) ||
                          !strcmp(w, "zlib1g"),
                      "runtime package %s is neither a library nor the CA certificates", w);
        const char *argv[] = {"/usr/bin/apt-cache", "show", "--no-all-versions", w, NULL};
        char *out = NULL;
        int rc = test_run((char *const *)argv, &out, NULL);
        ck_assert_msg(rc == 0 && strstr(out, "Package: "), "%s is not a Debian package here", w);
        free(out);
    }
    free(copy);

    /* Every library the binary links directly (readelf NEEDED, resolved by ldd) comes
     * from a runtime package, or from the slim base, or is a sanitizer runtime of the
     * test build. */
    static const char *const base_pkgs[] = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"};
    static const char *const sanitizer_pkgs[] = {"libasan8", "libubsan1", "libasan6", "libubsan0"};
    const char *bin = test_sluice_bin();
    const char *ldd_argv[] = {"/usr/bin/ldd", bin, NULL};
    char *ldd = NULL;
    ck_assert_int_eq(test_run((char *const *)ldd_argv, &ldd, NULL), 0);
    const char *re_argv[] = {"/usr/bin/readelf", "-d", bin, NULL};
    char *needed = NULL;
    ck_assert_int_eq(test_run((char *const *)re_argv, &needed, NULL), 0);
    int libs = 0;
    for (const char *p = needed; (p = strstr(p, "Shared library: [")) != NULL;) {
        p += strlen("Shared library: [");
        char *soname = xstrndup(p, strcspn(p, "]"));
        char *key = xasprintf("\t%s => ", soname);
        const char *at = strstr(ldd, key);
        ck_assert_msg(at != NULL, "ldd does not resolve %s", soname);
        at += strlen(key);
        char *file = xstrndup(at, strcspn(at, " \n"));
        char *pkg = dpkg_owner(file);
        ck_assert_msg(pkg != NULL, "no Debian package owns %s", file);
        bool ok = word_in(rt_pkgs, pkg);
        for (size_t i = 0; i < 4; i++)
            ok = ok || !strcmp(pkg, base_pkgs[i]) || !strcmp(pkg, sanitizer_pkgs[i]);
        ck_assert_msg(ok,
                      "bin/sluice needs %s (%s, package %s): not installed in the runtime stage",
                      soname, file, pkg);
        libs++;
        free(pkg);
        free(file);
        free(key);
        free(soname);
    }
    ck_assert_int_ge(libs, 5);

    /* The build stage installs the -dev package of every library in the Makefile's PKGS. */
    char *mk_path = test_path("Makefile");
    char *mk = test_read_file(mk_path, NULL);
    const char *pk = strstr(mk, "\nPKGS ");
    ck_assert_ptr_nonnull(pk);
    pk = strchr(pk, '=') + 1;
    char *mods = xstrndup(pk, strcspn(pk, "\n"));
    char *build_pkgs = stage_apt_packages(build);
    ck_assert(word_in(build_pkgs, "build-essential") && word_in(build_pkgs, "pkg-config"));
    save = NULL;
    for (char *m = strtok_r(mods, " \t", &save); m; m = strtok_r(NULL, " \t", &save)) {
        const char *argv[] = {"/usr/bin/pkg-config", "--path", m, NULL};
        char *pc = NULL;
        ck_assert_int_eq(test_run((char *const *)argv, &pc, NULL), 0);
        pc[strcspn(pc, "\n")] = '\0';
        char *pkg = dpkg_owner(pc);
        ck_assert_msg(pkg && word_in(build_pkgs, pkg),
                      "the build stage lacks %s (pkg-config module %s)", pkg ? pkg : pc, m);
        free(pkg);
        free(pc);
    }
    free(build_pkgs);
    free(mods);
    free(mk);
    free(mk_path);

    /* .dockerignore keeps build output and local state out of the context. */
    char *di_path = test_path(".dockerignore");
    char *di = test_read_file(di_path, NULL);
    ck_assert_ptr_nonnull(strstr(di, "\nbuild/\n"));
    ck_assert_ptr_nonnull(strstr(di, "\nbin/\n"));
    ck_assert_ptr_nonnull(strstr(di, "\n.sluice/\n"));
    free(di);
    free(di_path);

    free(needed);
    free(ldd);
    free(rt_pkgs);
    for (int i = 0; i < n; i++) {
        free(st[i].from);
        free(st[i].name);
        strbuf_release(&st[i].body);
    }
    free(text);
    free(path);
}
END_TEST

/* Without Docker, `make image` says so and fails: it never pretends. (PATH names no
 * directory, so no docker is found whatever the machine has.) */
START_TEST(test_make_image_without_docker)
{
    const char *argv[] = {"/usr/bin/env", "PATH=/nonexistent", "/usr/bin/make", "-s",
                          "-C",           test_src_dir(),      "image",         NULL};
    char *out = NULL, *err = NULL;
    int rc = test_run((char *const *)argv, &out, &err);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(err, "image: no docker command on this machine: cannot build") != NULL,
                  "exit %d\n%s%s", rc, out, err);
    free(out);
    free(err);
}
END_TEST

Suite *suite_integration_chart(void)
{
    Suite *s = suite_create("integration_chart");
    TCase *tc = tcase_create("render");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_values_render_valid, 0, N_CASES);
    tcase_add_test(tc, test_checks_catch_faults);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_gpu_pools);
    tcase_add_test(tc, test_external_database);
    tcase_add_test(tc, test_s3_artifacts);
    tcase_add_test(tc, test_nfs_and_storage_class);
    tcase_add_test(tc, test_ingress_and_monitoring);
    tcase_add_test(tc, test_keda_autoscaling);
    tcase_add_test(tc, test_git_ssh_and_step_namespace);
    tcase_add_test(tc, test_local_executor_has_no_rbac);
    tcase_add_test(tc, test_local_workers_get_the_git_credentials);
    tcase_add_test(tc, test_notes);
    suite_add_tcase(s, tc);

    TCase *bad = tcase_create("refuse");
    tcase_set_timeout(bad, 120);
    tcase_add_test(bad, test_bad_values_refused);
    suite_add_tcase(s, bad);

    TCase *img = tcase_create("image");
    tcase_set_timeout(img, 60);
    tcase_add_test(img, test_dockerfile);
    tcase_add_test(img, test_make_image_without_docker);
    suite_add_tcase(s, img);
    return s;
}
