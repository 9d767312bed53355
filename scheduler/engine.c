/*
 * scheduler/engine.c - the run engine: events in, transitions and actions out.
 *
 * Every event ends in advance(): a worklist of steps whose upstream changed is
 * drained, each step's trigger rule is decided (run, wait, skip, upstream
 * failed), a step cleared to run evaluates `when` and fans out, and its
 * instances join the ready queue; fill_slots() then queues ready instances
 * while max_parallel_steps and each step's max_parallel allow. So the work per
 * event is proportional to what changed, not to the size of the DAG (TICK,
 * which scans every instance for retries and timeouts, is the exception).
 *
 * The expression context ({params, run, dag, steps}) is kept in run->ctx and
 * updated as steps finish, so rendering a dispatch costs what its templates
 * cost.
 *
 * Invariants:
 * - an instance's state only changes through set_state(), which asserts the
 *   transition is legal and appends the TRANSITION action;
 * - run->active counts instances in queued or running;
 * - a step's own instance (self) leaves pending only once its trigger rule is
 *   decided; for a fan-out step it is `running` while items run and takes the
 *   items' outcome when they are all done.
 */
#include "scheduler/engine.h"
#include "common/error.h"
#include "common/xalloc.h"
#include "dsl/expr.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long past its timeout a running attempt may go unreported before the
 * engine fails it itself (the worker enforces the timeout; this covers a
 * worker that could not report). */
#define ENGINE_TIMEOUT_GRACE_MS 60000

static const char *const state_names[] = {
    "pending",      "queued",    "running", "succeeded",       "failed",
    "up_for_retry", "cancelled", "skipped", "upstream_failed",
};
static const char *const run_state_names[] = {"queued", "running",    "succeeded",
                                              "failed", "cancelling", "cancelled"};

const char *engine_state_name(enum engine_state s)
{
    return state_names[s];
}

const char *engine_run_state_name(enum engine_run_state s)
{
    return run_state_names[s];
}

int engine_state_parse(enum engine_state *out, const char *name)
{
    for (size_t i = 0; i < sizeof(state_names) / sizeof(state_names[0]); i++) {
        if (!strcmp(state_names[i], name)) {
            *out = (enum engine_state)i;
            return 0;
        }
    }
    return SL_EINVAL;
}

bool engine_state_is_done(enum engine_state s)
{
    return s == ENGINE_SUCCEEDED || s == ENGINE_FAILED || s == ENGINE_CANCELLED ||
           s == ENGINE_SKIPPED || s == ENGINE_UPSTREAM_FAILED;
}

/* The legal transitions of the diagram in engine.h. */
static bool transition_ok(enum engine_state from, enum engine_state to)
{
    switch (from) {
    case ENGINE_PENDING:
        return to == ENGINE_QUEUED || to == ENGINE_RUNNING || to == ENGINE_SKIPPED ||
               to == ENGINE_UPSTREAM_FAILED || to == ENGINE_CANCELLED || to == ENGINE_FAILED;
    case ENGINE_QUEUED:
        return to == ENGINE_RUNNING || to == ENGINE_SUCCEEDED || to == ENGINE_FAILED ||
               to == ENGINE_UP_FOR_RETRY || to == ENGINE_CANCELLED;
    case ENGINE_RUNNING:
        return to == ENGINE_SUCCEEDED || to == ENGINE_FAILED || to == ENGINE_UP_FOR_RETRY ||
               to == ENGINE_CANCELLED;
    case ENGINE_UP_FOR_RETRY:
        return to == ENGINE_QUEUED || to == ENGINE_CANCELLED;
    default:
        return false;
    }
}

/* --- actions ---------------------------------------------------------------------- */

void engine_actions_init(struct engine_actions *a)
{
    memset(a, 0, sizeof(*a));
}

void engine_actions_clear(struct engine_actions *a)
{
    for (size_t i = 0; i < a->n; i++)
        cJSON_Delete(a->v[i].spec);
    a->n = 0;
}

void engine_actions_release(struct engine_actions *a)
{
    engine_actions_clear(a);
    free(a->v);
    engine_actions_init(a);
}

static struct engine_action *push_action(struct engine_actions *a, enum engine_action_kind kind)
{
    XGROW(a->v, a->alloc, a->n + 1);
    struct engine_action *act = &a->v[a->n++];
    memset(act, 0, sizeof(*act));
    act->kind = kind;
    return act;
}

/* --- the run ---------------------------------------------------------------------- */

static size_t add_instance(struct engine_run *run, size_t step, int map_index)
{
    XGROW(run->inst, run->alloc_inst, run->n_inst + 1);
    struct engine_instance *in = &run->inst[run->n_inst];
    memset(in, 0, sizeof(*in));
    in->step = step;
    in->map_index = map_index;
    in->state = ENGINE_PENDING;
    in->exit_code = -1;
    return run->n_inst++;
}

static void set_reason(struct engine_instance *in, const char *reason)
{
    free(in->reason);
    in->reason = reason ? xstrdup(reason) : NULL;
}

static void set_state(struct engine_run *run, size_t i, enum engine_state to,
                      struct engine_actions *out)
{
    struct engine_instance *in = &run->inst[i];
    assert(transition_ok(in->state, to));
    bool was_active = in->state == ENGINE_QUEUED || in->state == ENGINE_RUNNING;
    bool is_active = to == ENGINE_QUEUED || to == ENGINE_RUNNING;
    if (in->map_index >= 0 || !run->steps[in->step].expanded) {
        if (was_active && !is_active)
            run->active--;
        if (!was_active && is_active)
            run->active++;
    }
    struct engine_action *act = push_action(out, ENGINE_ACT_TRANSITION);
    act->inst = i;
    act->attempt = in->attempt;
    act->from = in->state;
    act->to = to;
    act->reason = in->reason;
    in->state = to;
}

void engine_run_set_repo(struct engine_run *run, const char *url, const char *commit)
{
    free(run->repo_url);
    free(run->commit);
    run->repo_url = url ? xstrdup(url) : NULL;
    run->commit = commit ? xstrdup(commit) : NULL;
}

void engine_run_free(struct engine_run *run)
{
    if (!run)
        return;
    free(run->repo_url);
    free(run->commit);
    for (size_t i = 0; i < run->n_inst; i++) {
        free(run->inst[i].reason);
        cJSON_Delete(run->inst[i].outputs);
        cJSON_Delete(run->inst[i].item);
    }
    for (size_t k = 0; k < run->n_steps; k++)
        free(run->steps[k].dependents);
    free(run->inst);
    free(run->steps);
    free(run->ready);
    free(run->run_id);
    free(run->logical_time);
    free(run->dag_dir);
    free(run->main_outcome);
    cJSON_Delete(run->params);
    cJSON_Delete(run->ctx);
    free(run);
}

int engine_check_params(const struct dsl_dag *dag, const cJSON *params, struct strbuf *errors)
{
    int result = 0;
    char err[256];
    if (params && !cJSON_IsObject(params)) {
        strbuf_addstr(errors, "params must be a JSON object\n");
        return SL_EINVAL;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, params)
    {
        size_t i;
        for (i = 0; i < dag->n_params; i++) {
            if (!strcmp(dag->params[i].name, item->string))
                break;
        }
        if (i == dag->n_params) {
            strbuf_addf(errors, "param '%s': not declared by DAG '%s'\n", item->string, dag->name);
            result = SL_EINVAL;
        } else if (dsl_param_check(&dag->params[i], item, err, sizeof(err)) < 0) {
            strbuf_addf(errors, "param '%s': %s\n", item->string, err);
            result = SL_EINVAL;
        }
    }
    for (size_t i = 0; i < dag->n_params; i++) {
        if (dag->params[i].required &&
            !cJSON_GetObjectItemCaseSensitive(params, dag->params[i].name)) {
            strbuf_addf(errors, "param '%s': required, but not given\n", dag->params[i].name);
            result = SL_EINVAL;
        }
    }
    return result;
}

static cJSON *step_ctx_entry(struct engine_run *run, size_t k);

int engine_run_new(struct engine_run **out, const struct dsl_dag *dag, const char *run_id,
                   const char *logical_time, const char *dag_dir, const cJSON *params)
{
    if (!dag || !run_id || (params && !cJSON_IsObject(params)))
        return SL_EINVAL;
    struct engine_run *run = xcalloc(1, sizeof(*run));
    run->dag = dag;
    run->state = ENGINE_RUN_QUEUED;
    run->run_id = xstrdup(run_id);
    run->logical_time = xstrdup(logical_time ? logical_time : "");
    run->dag_dir = xstrdup(dag_dir ? dag_dir : ".");
    run->n_main = dag->n_steps;
    run->n_steps = dag->n_steps + dag->n_on_exit;
    run->steps = xcalloc(run->n_steps + 1, sizeof(*run->steps));

    run->params = params ? cJSON_Duplicate(params, true) : cJSON_CreateObject();
    for (size_t i = 0; i < dag->n_params; i++) {
        const struct dsl_param *p = &dag->params[i];
        if (p->default_json && !cJSON_GetObjectItemCaseSensitive(run->params, p->name))
            cJSON_AddItemToObject(run->params, p->name, cJSON_Parse(p->default_json));
    }

    for (size_t k = 0; k < run->n_steps; k++) {
        struct engine_step *s = &run->steps[k];
        s->on_exit = k >= run->n_main;
        s->def = s->on_exit ? &dag->on_exit[k - run->n_main] : &dag->steps[k];
        s->self = add_instance(run, k, -1);
    }
    /* dependents, from depends_on */
    for (size_t k = 0; k < run->n_steps; k++) {
        const struct dsl_step *d = run->steps[k].def;
        size_t base = run->steps[k].on_exit ? run->n_main : 0;
        for (size_t j = 0; j < d->n_depends_on; j++) {
            struct engine_step *up = &run->steps[base + d->deps[j]];
            up->dependents = xrealloc(up->dependents, (up->n_dependents + 1) * sizeof(size_t));
            up->dependents[up->n_dependents++] = k;
        }
    }

    run->ctx = cJSON_CreateObject();
    cJSON_AddItemReferenceToObject(run->ctx, "params", run->params);
    cJSON *r = cJSON_AddObjectToObject(run->ctx, "run");
    cJSON_AddStringToObject(r, "id", run->run_id);
    cJSON_AddStringToObject(r, "logical_time", run->logical_time);
    /* directories on the worker, expanded there like Kubernetes' $(VAR) (docs/dsl.md) */
    cJSON_AddStringToObject(r, "dir", "$(SLUICE_RUN_DIR)");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(run->ctx, "attempt"), "dir",
                            "$(SLUICE_ATTEMPT_DIR)");
    cJSON *dg = cJSON_AddObjectToObject(run->ctx, "dag");
    cJSON_AddStringToObject(dg, "name", dag->name);
    cJSON_AddStringToObject(dg, "dir", run->dag_dir);
    cJSON *steps = cJSON_AddObjectToObject(run->ctx, "steps");
    for (size_t k = 0; k < run->n_steps; k++)
        cJSON_AddItemToObject(steps, run->steps[k].def->name, step_ctx_entry(run, k));
    *out = run;
    return 0;
}

/* --- the expression context ------------------------------------------------------- */

/*
 * What `{{ steps.<s>.outputs.artifacts.<a> }}` renders before the artifact's key: only the
 * worker knows its repository (a shared path, an s3:// URI, or nothing), so the scheduler
 * writes a reference the executor expands like `$(SLUICE_RUN_DIR)` (worker/artifacts.h:
 * ARTIFACTS_BASE_VAR). An input's `from` names keys, as it always has (so a worker of an
 * earlier version reads it during a rolling upgrade): the reference is dropped there.
 */
#define ARTIFACT_BASE_REF "$(SLUICE_ARTIFACT_BASE)"

/* Removes every ARTIFACT_BASE_REF from s, in place. */
static void drop_base_refs(char *s)
{
    const size_t n = sizeof(ARTIFACT_BASE_REF) - 1;
    char *w = s;
    for (const char *r = s; *r;) {
        if (!strncmp(r, ARTIFACT_BASE_REF, n)) {
            r += n;
            continue;
        }
        *w++ = *r++;
    }
    *w = '\0';
}

static void artifact_key(struct strbuf *sb, const struct engine_run *run, size_t i,
                         const char *name)
{
    const struct engine_instance *in = &run->inst[i];
    const struct dsl_step *d = run->steps[in->step].def;
    strbuf_addf(sb, "%s/%s/%s", run->dag->name, run->run_id, d->name);
    if (in->map_index >= 0)
        strbuf_addf(sb, "/%d", in->map_index);
    strbuf_addf(sb, "/%d/%s", in->attempt, name);
}

/* {state, outputs: {params, artifacts}} of step k as it stands. */
static cJSON *step_ctx_entry(struct engine_run *run, size_t k)
{
    const struct engine_step *s = &run->steps[k];
    const struct engine_instance *self = &run->inst[s->self];
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "state", state_names[self->state]);
    cJSON *outs = cJSON_AddObjectToObject(e, "outputs");
    cJSON *params = cJSON_AddObjectToObject(outs, "params");
    cJSON *arts = cJSON_AddObjectToObject(outs, "artifacts");
    if (self->state != ENGINE_SUCCEEDED)
        return e;
    struct strbuf sb = STRBUF_INIT;
    for (size_t p = 0; p < s->def->n_output_params; p++) {
        const char *name = s->def->output_params[p].name;
        if (!s->expanded) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(self->outputs, name);
            if (v)
                cJSON_AddItemToObject(params, name, cJSON_Duplicate(v, true));
            continue;
        }
        cJSON *list = cJSON_AddArrayToObject(params, name);
        for (size_t j = 0; j < s->count; j++) {
            const cJSON *v =
                cJSON_GetObjectItemCaseSensitive(run->inst[s->first + j].outputs, name);
            cJSON_AddItemToArray(list, v ? cJSON_Duplicate(v, true) : cJSON_CreateNull());
        }
    }
    for (size_t a = 0; a < s->def->n_output_artifacts; a++) {
        const char *name = s->def->output_artifacts[a].name;
        if (!s->expanded) {
            strbuf_reset(&sb);
            strbuf_addstr(&sb, ARTIFACT_BASE_REF);
            artifact_key(&sb, run, s->self, name);
            cJSON_AddStringToObject(arts, name, sb.buf);
            continue;
        }
        cJSON *list = cJSON_AddArrayToObject(arts, name);
        for (size_t j = 0; j < s->count; j++) {
            strbuf_reset(&sb);
            strbuf_addstr(&sb, ARTIFACT_BASE_REF);
            artifact_key(&sb, run, s->first + j, name);
            cJSON_AddItemToArray(list, cJSON_CreateString(sb.buf));
        }
    }
    strbuf_release(&sb);
    return e;
}

static void refresh_step_ctx(struct engine_run *run, size_t k)
{
    cJSON *steps = cJSON_GetObjectItemCaseSensitive(run->ctx, "steps");
    cJSON_ReplaceItemInObjectCaseSensitive(steps, run->steps[k].def->name, step_ctx_entry(run, k));
}

/* --- rendering a dispatch --------------------------------------------------------- */

/* Renders src into *out; on error sets err and returns a negative code. */
static int render(char **out, const char *src, const cJSON *ctx, char *err, size_t errlen)
{
    struct arena a = ARENA_INIT;
    struct dsl_template *t;
    struct dsl_expr_error perr;
    int rc = dsl_template_parse(&t, &a, src, &perr);
    if (rc < 0)
        snprintf(err, errlen, "%s", perr.msg);
    else
        rc = dsl_template_render(out, t, ctx, err, errlen);
    arena_release(&a);
    return rc;
}

static int render_list(cJSON *parent, const char *key, const char *const *v, size_t n,
                       const cJSON *ctx, char *err, size_t errlen)
{
    cJSON *list = cJSON_AddArrayToObject(parent, key);
    for (size_t i = 0; i < n; i++) {
        char *s;
        int rc = render(&s, v[i], ctx, err, errlen);
        if (rc < 0)
            return rc;
        cJSON_AddItemToArray(list, cJSON_CreateString(s));
        free(s);
    }
    return 0;
}

static void add_kv(cJSON *parent, const char *key, const struct dsl_kv *kv, size_t n)
{
    cJSON *o = cJSON_AddObjectToObject(parent, key);
    for (size_t i = 0; i < n; i++)
        cJSON_AddStringToObject(o, kv[i].key, kv[i].value);
}

/*
 * The message a worker executes: everything rendered, ids included. Returns NULL
 * and fills err when a template cannot be rendered.
 */
static cJSON *build_spec(struct engine_run *run, size_t i, char *err, size_t errlen)
{
    const struct engine_instance *in = &run->inst[i];
    const struct dsl_step *d = run->steps[in->step].def;
    char id[ENGINE_ATTEMPT_ID_MAX];
    char *s = NULL;
    int rc = 0;

    engine_attempt_id(run, i, id, sizeof(id));
    if (in->item)
        cJSON_AddItemReferenceToObject(run->ctx, "item", in->item);
    cJSON *spec = cJSON_CreateObject();
    cJSON_AddStringToObject(spec, "attempt_id", id);
    cJSON_AddStringToObject(spec, "dag", run->dag->name);
    cJSON_AddStringToObject(spec, "run_id", run->run_id);
    cJSON_AddStringToObject(spec, "step", d->name);
    cJSON_AddNumberToObject(spec, "map_index", in->map_index);
    cJSON_AddNumberToObject(spec, "attempt", in->attempt);
    if (run->dag_dir[0])
        cJSON_AddStringToObject(spec, "dag_dir", run->dag_dir);
    if (d->image) {
        if ((rc = render(&s, d->image, run->ctx, err, errlen)) < 0)
            goto cleanup;
        cJSON_AddStringToObject(spec, "image", s);
        free(s);
    }
    if ((rc = render_list(spec, "command", d->command, d->n_command, run->ctx, err, errlen)) < 0 ||
        (rc = render_list(spec, "args", d->args, d->n_args, run->ctx, err, errlen)) < 0)
        goto cleanup;
    cJSON *env = cJSON_AddObjectToObject(spec, "env");
    for (size_t e = 0; e < d->n_env; e++) {
        if (!d->env[e].value) {
            cJSON *sec = cJSON_AddObjectToObject(env, d->env[e].name);
            cJSON_AddStringToObject(sec, "secret_name", d->env[e].secret_name);
            cJSON_AddStringToObject(sec, "secret_key", d->env[e].secret_key);
            continue;
        }
        if ((rc = render(&s, d->env[e].value, run->ctx, err, errlen)) < 0) {
            struct strbuf detail = STRBUF_INIT;
            strbuf_addf(&detail, "env %s: %s", d->env[e].name, err);
            snprintf(err, errlen, "%s", detail.buf);
            strbuf_release(&detail);
            goto cleanup;
        }
        cJSON_AddStringToObject(env, d->env[e].name, s);
        free(s);
    }
    /* the ids, so that a step can be idempotent */
    char num[32];
    cJSON_AddStringToObject(env, "SLUICE_DAG", run->dag->name);
    cJSON_AddStringToObject(env, "SLUICE_RUN_ID", run->run_id);
    cJSON_AddStringToObject(env, "SLUICE_LOGICAL_TIME", run->logical_time);
    cJSON_AddStringToObject(env, "SLUICE_STEP", d->name);
    snprintf(num, sizeof(num), "%d", in->map_index);
    cJSON_AddStringToObject(env, "SLUICE_MAP_INDEX", num);
    snprintf(num, sizeof(num), "%d", in->attempt);
    cJSON_AddStringToObject(env, "SLUICE_ATTEMPT", num);
    cJSON_AddStringToObject(env, "SLUICE_ATTEMPT_ID", id);
    if (d->workdir) {
        if ((rc = render(&s, d->workdir, run->ctx, err, errlen)) < 0)
            goto cleanup;
        cJSON_AddStringToObject(spec, "workdir", s);
        free(s);
    }
    cJSON *res = cJSON_AddObjectToObject(spec, "resources");
    cJSON_AddNumberToObject(res, "cpu_millis", (double)d->resources.cpu_millis);
    cJSON_AddNumberToObject(res, "memory_bytes", (double)d->resources.memory_bytes);
    cJSON_AddNumberToObject(res, "gpu", (double)d->resources.gpu);
    cJSON_AddStringToObject(spec, "queue", d->queue);
    add_kv(spec, "node_selector", d->node_selector, d->n_node_selector);
    cJSON *tols = cJSON_AddArrayToObject(spec, "tolerations");
    for (size_t t = 0; t < d->n_tolerations; t++) {
        cJSON *o = cJSON_CreateObject();
        if (d->tolerations[t].key)
            cJSON_AddStringToObject(o, "key", d->tolerations[t].key);
        cJSON_AddStringToObject(o, "operator", d->tolerations[t].op);
        if (d->tolerations[t].value)
            cJSON_AddStringToObject(o, "value", d->tolerations[t].value);
        if (d->tolerations[t].effect)
            cJSON_AddStringToObject(o, "effect", d->tolerations[t].effect);
        if (d->tolerations[t].seconds >= 0)
            cJSON_AddNumberToObject(o, "toleration_seconds", (double)d->tolerations[t].seconds);
        cJSON_AddItemToArray(tols, o);
    }
    cJSON_AddNumberToObject(spec, "timeout_ms", (double)d->timeout_ms);
    /* the kubernetes executor: how long a pod may stay unschedulable */
    if (d->pending_timeout_ms)
        cJSON_AddNumberToObject(spec, "pending_timeout_ms", (double)d->pending_timeout_ms);
    cJSON *outs = cJSON_AddObjectToObject(spec, "outputs");
    cJSON *op = cJSON_AddObjectToObject(outs, "params");
    for (size_t p = 0; p < d->n_output_params; p++)
        cJSON_AddStringToObject(op, d->output_params[p].name, d->output_params[p].path);
    cJSON *oa = cJSON_AddObjectToObject(outs, "artifacts");
    struct strbuf key = STRBUF_INIT;
    for (size_t a = 0; a < d->n_output_artifacts; a++) {
        cJSON *o = cJSON_AddObjectToObject(oa, d->output_artifacts[a].name);
        cJSON_AddStringToObject(o, "path", d->output_artifacts[a].path);
        strbuf_reset(&key);
        artifact_key(&key, run, i, d->output_artifacts[a].name);
        cJSON_AddStringToObject(o, "key", key.buf);
    }
    strbuf_release(&key);
    cJSON *ins = cJSON_AddObjectToObject(cJSON_AddObjectToObject(spec, "inputs"), "artifacts");
    for (size_t a = 0; a < d->n_input_artifacts; a++) {
        if ((rc = render(&s, d->input_artifacts[a].from, run->ctx, err, errlen)) < 0)
            goto cleanup;
        drop_base_refs(s);
        cJSON *o = cJSON_AddObjectToObject(ins, d->input_artifacts[a].name);
        cJSON_AddStringToObject(o, "from", s);
        cJSON_AddStringToObject(o, "path", d->input_artifacts[a].path);
        if (!strcmp(s, "git") && run->repo_url && run->commit &&
            !cJSON_GetObjectItemCaseSensitive(spec, "repo")) {
            cJSON *repo = cJSON_AddObjectToObject(spec, "repo");
            cJSON_AddStringToObject(repo, "url", run->repo_url);
            cJSON_AddStringToObject(repo, "commit", run->commit);
        }
        free(s);
    }
    add_kv(spec, "labels", d->labels, d->n_labels);
    add_kv(spec, "annotations", d->annotations, d->n_annotations);
cleanup:
    if (in->item)
        cJSON_DeleteItemFromObjectCaseSensitive(run->ctx, "item");
    if (rc < 0) {
        cJSON_Delete(spec);
        return NULL;
    }
    return spec;
}

cJSON *engine_render_spec(struct engine_run *run, size_t i, char *err, size_t errlen)
{
    if (i >= run->n_inst || run->inst[i].attempt < 1) {
        snprintf(err, errlen, "instance %zu has no attempt", i);
        return NULL;
    }
    return build_spec(run, i, err, errlen);
}

void engine_attempt_id(const struct engine_run *run, size_t i, char *buf, size_t len)
{
    const struct engine_instance *in = &run->inst[i];
    snprintf(buf, len, "%s.%s.%s.%d.%d", run->dag->name, run->run_id,
             run->steps[in->step].def->name, in->map_index, in->attempt);
}

/* Parses a decimal int in [lo, INT_MAX] from s[0..n). */
static bool parse_int_n(int *out, const char *s, size_t n, int lo)
{
    if (n == 0 || n > 11)
        return false;
    char buf[12];
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (*end || errno || v < lo || v > INT_MAX ||
        !(isdigit((unsigned char)buf[0]) || buf[0] == '-'))
        return false;
    *out = (int)v;
    return true;
}

int engine_attempt_id_split(struct engine_attempt_ref *out, const char *id)
{
    if (!id)
        return SL_EINVAL;
    const char *first = strchr(id, '.');
    size_t len = strlen(id);
    /* the last three dots, from the right */
    const char *dots[3] = {NULL, NULL, NULL};
    size_t found = 0;
    for (size_t i = len; i > 0 && found < 3; i--)
        if (id[i - 1] == '.')
            dots[found++] = id + i - 1;
    if (!first || found < 3 || dots[2] <= first)
        return SL_EINVAL;
    struct engine_attempt_ref r = {0};
    r.dag = id;
    r.dag_len = (size_t)(first - id);
    r.run_id = first + 1;
    r.run_id_len = (size_t)(dots[2] - r.run_id);
    r.step = dots[2] + 1;
    r.step_len = (size_t)(dots[1] - r.step);
    if (!r.dag_len || !r.run_id_len || !r.step_len ||
        !parse_int_n(&r.map_index, dots[1] + 1, (size_t)(dots[0] - dots[1] - 1), -1) ||
        !parse_int_n(&r.attempt, dots[0] + 1, strlen(dots[0] + 1), 1))
        return SL_EINVAL;
    *out = r;
    return 0;
}

/* --- deciding steps ---------------------------------------------------------------- */

enum decision { DECIDE_WAIT, DECIDE_RUN, DECIDE_SKIP, DECIDE_UPSTREAM_FAILED };

/* The trigger rules of docs/dsl.md, from the upstream steps' own states. */
static enum decision decide(const struct engine_run *run, size_t k)
{
    const struct engine_step *s = &run->steps[k];
    const struct dsl_step *d = s->def;
    size_t base = s->on_exit ? run->n_main : 0;
    size_t n = d->n_depends_on, done = 0, ok = 0, failed = 0, skipped = 0;
    for (size_t j = 0; j < n; j++) {
        enum engine_state st = run->inst[run->steps[base + d->deps[j]].self].state;
        if (!engine_state_is_done(st))
            continue;
        done++;
        if (st == ENGINE_SUCCEEDED)
            ok++;
        else if (st == ENGINE_SKIPPED)
            skipped++;
        else
            failed++; /* failed, upstream_failed, cancelled */
    }
    bool all_done = done == n;
    switch (d->trigger_rule) {
    case DSL_TRIGGER_ALL_SUCCESS:
        /* A failure decides at once; a skip waits for the rest, so that the
         * outcome does not depend on the order upstream steps finish in. */
        if (failed)
            return DECIDE_UPSTREAM_FAILED;
        if (!all_done)
            return DECIDE_WAIT;
        return skipped ? DECIDE_SKIP : DECIDE_RUN;
    case DSL_TRIGGER_ALL_FAILED:
        if (ok || skipped)
            return DECIDE_SKIP;
        return all_done ? DECIDE_RUN : DECIDE_WAIT;
    case DSL_TRIGGER_ALL_DONE:
    case DSL_TRIGGER_ALWAYS:
        return all_done ? DECIDE_RUN : DECIDE_WAIT;
    case DSL_TRIGGER_ONE_SUCCESS:
        if (ok || n == 0)
            return DECIDE_RUN;
        if (!all_done)
            return DECIDE_WAIT;
        return skipped == n ? DECIDE_SKIP : DECIDE_UPSTREAM_FAILED;
    case DSL_TRIGGER_ONE_FAILED:
        if (failed)
            return DECIDE_RUN;
        return all_done ? (n == 0 ? DECIDE_RUN : DECIDE_SKIP) : DECIDE_WAIT;
    case DSL_TRIGGER_NONE_FAILED:
        if (failed)
            return DECIDE_UPSTREAM_FAILED;
        return all_done ? DECIDE_RUN : DECIDE_WAIT;
    case DSL_TRIGGER_NONE_FAILED_MIN_ONE_SUCCESS:
        if (failed)
            return DECIDE_UPSTREAM_FAILED;
        if (!all_done)
            return DECIDE_WAIT;
        return (ok || n == 0) ? DECIDE_RUN : DECIDE_SKIP;
    }
    return DECIDE_WAIT;
}

struct worklist {
    size_t *v;
    size_t n, alloc;
};

static void work_push(struct worklist *w, size_t k)
{
    XGROW(w->v, w->alloc, w->n + 1);
    w->v[w->n++] = k;
}

/* Step k's own state became final: its dependents may now be decided. */
static void step_done(struct engine_run *run, size_t k, struct worklist *w)
{
    refresh_step_ctx(run, k);
    for (size_t j = 0; j < run->steps[k].n_dependents; j++)
        work_push(w, run->steps[k].dependents[j]);
}

static void ready_push(struct engine_run *run, size_t i)
{
    if (run->inst[i].in_ready)
        return;
    XGROW(run->ready, run->alloc_ready, run->n_ready + 1);
    run->ready[run->n_ready++] = i;
    run->inst[i].in_ready = true;
}

/* Fails instance i for good (no retry), with reason. */
static void fail_final(struct engine_run *run, size_t i, const char *reason, int64_t now,
                       struct engine_actions *out)
{
    struct engine_instance *in = &run->inst[i];
    set_reason(in, reason);
    in->ended_at_ms = now;
    set_state(run, i, ENGINE_FAILED, out);
}

/* Evaluates when and for_each of step k, cleared to run; queues its instances. */
static void start_step(struct engine_run *run, size_t k, int64_t now, struct engine_actions *out,
                       struct worklist *w)
{
    struct engine_step *s = &run->steps[k];
    const struct dsl_step *d = s->def;
    struct engine_instance *self = &run->inst[s->self];
    char err[256];
    struct arena a = ARENA_INIT;

    if (d->when) {
        struct dsl_expr *e;
        struct dsl_expr_error perr;
        bool yes = false;
        int rc = dsl_expr_parse(&e, &a, d->when, &perr);
        if (rc < 0)
            snprintf(err, sizeof(err), "%s", perr.msg);
        else
            rc = dsl_expr_eval_bool(&yes, e, run->ctx, err, sizeof(err));
        if (rc < 0) {
            char reason[300];
            snprintf(reason, sizeof(reason), "when: %s", err);
            fail_final(run, s->self, reason, now, out);
            step_done(run, k, w);
            goto cleanup;
        }
        if (!yes) {
            set_reason(self, "when was false");
            self->ended_at_ms = now;
            set_state(run, s->self, ENGINE_SKIPPED, out);
            step_done(run, k, w);
            goto cleanup;
        }
    }
    if (!d->for_each_json && !d->for_each_expr) {
        ready_push(run, s->self);
        goto cleanup;
    }

    cJSON *items = NULL;
    if (d->for_each_json) {
        items = cJSON_Parse(d->for_each_json);
    } else {
        struct dsl_template *t;
        struct dsl_expr_error perr;
        cJSON *v = NULL;
        int rc = dsl_template_parse(&t, &a, d->for_each_expr, &perr);
        const struct dsl_expr *e = rc == 0 ? dsl_template_single_expr(t) : NULL;
        if (!e) {
            snprintf(err, sizeof(err), "for_each: not a single expression");
            rc = SL_EINVAL;
        } else {
            rc = dsl_expr_eval(&v, e, run->ctx, err, sizeof(err));
        }
        if (rc == 0 && cJSON_IsString(v)) {
            items = cJSON_Parse(v->valuestring);
            if (!cJSON_IsArray(items)) {
                snprintf(err, sizeof(err), "for_each: value is not a JSON list");
                rc = SL_ETYPE;
            }
        } else if (rc == 0 && cJSON_IsArray(v)) {
            items = cJSON_Duplicate(v, true);
        } else if (rc == 0) {
            snprintf(err, sizeof(err), "for_each: value is not a list");
            rc = SL_ETYPE;
        }
        cJSON_Delete(v);
        if (rc < 0) {
            cJSON_Delete(items);
            char reason[300];
            snprintf(reason, sizeof(reason), "%s%s",
                     strncmp(err, "for_each", 8) ? "for_each: " : "", err);
            fail_final(run, s->self, reason, now, out);
            step_done(run, k, w);
            goto cleanup;
        }
    }
    size_t n = (size_t)cJSON_GetArraySize(items);
    if (n == 0) {
        cJSON_Delete(items);
        set_reason(self, "for_each gave an empty list");
        self->ended_at_ms = now;
        set_state(run, s->self, ENGINE_SKIPPED, out);
        step_done(run, k, w);
        goto cleanup;
    }
    s->expanded = true;
    s->first = run->n_inst;
    s->count = n;
    for (size_t j = 0; j < n; j++) {
        size_t i = add_instance(run, k, (int)j);
        run->inst[i].item = cJSON_DetachItemFromArray(items, 0);
        ready_push(run, i);
    }
    cJSON_Delete(items);
    self = &run->inst[s->self]; /* add_instance may have moved the array */
    self->started_at_ms = now;
    set_state(run, s->self, ENGINE_RUNNING, out);
cleanup:
    arena_release(&a);
}

/* Counts queued or running items of fan-out step k. */
static size_t step_active(const struct engine_run *run, size_t k)
{
    const struct engine_step *s = &run->steps[k];
    size_t n = 0;
    for (size_t j = 0; j < s->count; j++) {
        enum engine_state st = run->inst[s->first + j].state;
        n += st == ENGINE_QUEUED || st == ENGINE_RUNNING;
    }
    return n;
}

static void maybe_finish_fanout(struct engine_run *run, size_t k, int64_t now,
                                struct engine_actions *out, struct worklist *w);

/* Queues instance i (attempt + 1) with its rendered spec, or fails it if the
 * spec cannot be rendered. */
static void dispatch(struct engine_run *run, size_t i, int64_t now, struct engine_actions *out,
                     struct worklist *w)
{
    struct engine_instance *in = &run->inst[i];
    char err[256];
    in->attempt++;
    in->queued_at_ms = now;
    in->started_at_ms = 0;
    in->stop_sent = false;
    cJSON *spec = build_spec(run, i, err, sizeof(err));
    if (!spec) {
        char reason[300];
        snprintf(reason, sizeof(reason), "cannot render the step: %s", err);
        in->attempt--;
        if (in->state == ENGINE_UP_FOR_RETRY) {
            /* a retry whose templates broke: fail it through the normal path */
            in->attempt++;
            set_reason(in, reason);
            set_state(run, i, ENGINE_QUEUED, out);
            in->ended_at_ms = now;
            set_state(run, i, ENGINE_FAILED, out);
        } else {
            fail_final(run, i, reason, now, out);
        }
        size_t k = in->step;
        if (run->steps[k].expanded && in->map_index >= 0)
            maybe_finish_fanout(run, k, now, out, w);
        else
            step_done(run, k, w);
        return;
    }
    set_reason(in, NULL);
    set_state(run, i, ENGINE_QUEUED, out);
    struct engine_action *act = push_action(out, ENGINE_ACT_DISPATCH);
    act->inst = i;
    act->attempt = in->attempt;
    act->spec = spec;
}

/* Queues ready instances while the run's and their step's limits allow. */
static void fill_slots(struct engine_run *run, int64_t now, struct engine_actions *out,
                       struct worklist *w)
{
    size_t limit = run->dag->max_parallel_steps ? (size_t)run->dag->max_parallel_steps : SIZE_MAX;
    size_t kept = 0;
    for (size_t r = 0; r < run->n_ready; r++) {
        size_t i = run->ready[r];
        struct engine_instance *in = &run->inst[i];
        if (in->state != ENGINE_PENDING && in->state != ENGINE_UP_FOR_RETRY) {
            in->in_ready = false; /* cancelled meanwhile */
            continue;
        }
        const struct dsl_step *d = run->steps[in->step].def;
        bool step_full = in->map_index >= 0 && d->max_parallel &&
                         step_active(run, in->step) >= (size_t)d->max_parallel;
        bool held = run->state == ENGINE_RUN_CANCELLING && !run->steps[in->step].on_exit;
        if (run->active >= limit || step_full || held) {
            run->ready[kept++] = i;
            continue;
        }
        in->in_ready = false;
        dispatch(run, i, now, out, w);
    }
    run->n_ready = kept;
}

/* All items of fan-out step k done: the step takes their outcome. */
static void maybe_finish_fanout(struct engine_run *run, size_t k, int64_t now,
                                struct engine_actions *out, struct worklist *w)
{
    struct engine_step *s = &run->steps[k];
    size_t failed = 0, cancelled = 0;
    for (size_t j = 0; j < s->count; j++) {
        enum engine_state st = run->inst[s->first + j].state;
        if (!engine_state_is_done(st))
            return;
        failed += st == ENGINE_FAILED || st == ENGINE_UPSTREAM_FAILED;
        cancelled += st == ENGINE_CANCELLED;
    }
    struct engine_instance *self = &run->inst[s->self];
    if (self->state != ENGINE_RUNNING)
        return;
    self->ended_at_ms = now;
    if (failed) {
        char reason[64];
        snprintf(reason, sizeof(reason), "%zu of %zu items failed", failed, s->count);
        set_reason(self, reason);
        set_state(run, s->self, ENGINE_FAILED, out);
    } else if (cancelled) {
        set_reason(self, "cancelled");
        set_state(run, s->self, ENGINE_CANCELLED, out);
    } else {
        set_state(run, s->self, ENGINE_SUCCEEDED, out);
    }
    step_done(run, k, w);
}

/* The outcome of the main steps, by Airflow's leaf rule: failed if a step that
 * nothing depends on failed or was upstream_failed, else succeeded. */
static const char *main_outcome(const struct engine_run *run)
{
    if (run->state == ENGINE_RUN_CANCELLING)
        return "cancelled";
    for (size_t k = 0; k < run->n_main; k++) {
        if (run->steps[k].n_dependents)
            continue;
        enum engine_state st = run->inst[run->steps[k].self].state;
        if (st == ENGINE_FAILED || st == ENGINE_UPSTREAM_FAILED || st == ENGINE_CANCELLED)
            return "failed";
    }
    return "succeeded";
}

static bool steps_done(const struct engine_run *run, size_t from, size_t to)
{
    for (size_t k = from; k < to; k++) {
        if (!engine_state_is_done(run->inst[run->steps[k].self].state))
            return false;
    }
    return true;
}

static void set_run_state(struct engine_run *run, enum engine_run_state to,
                          struct engine_actions *out)
{
    if (run->state == to)
        return;
    run->state = to;
    struct engine_action *act = push_action(out, ENGINE_ACT_RUN_STATE);
    act->run_state = to;
}

/* Drains the worklist, fills slots, releases on_exit steps, ends the run. */
static void advance(struct engine_run *run, int64_t now, struct engine_actions *out,
                    struct worklist *w)
{
    for (;;) {
        while (w->n) {
            size_t k = w->v[--w->n];
            struct engine_step *s = &run->steps[k];
            struct engine_instance *self = &run->inst[s->self];
            if (self->state != ENGINE_PENDING || s->expanded || self->in_ready)
                continue;
            if (s->on_exit && !run->exit_started)
                continue; /* released once every main step is done */
            if (run->state == ENGINE_RUN_CANCELLING && !s->on_exit) {
                set_reason(self, "run cancelled");
                set_state(run, s->self, ENGINE_CANCELLED, out);
                step_done(run, k, w);
                continue;
            }
            switch (decide(run, k)) {
            case DECIDE_WAIT:
                break;
            case DECIDE_RUN:
                start_step(run, k, now, out, w);
                break;
            case DECIDE_SKIP:
                set_reason(self, "skipped by trigger rule");
                self->ended_at_ms = now;
                set_state(run, s->self, ENGINE_SKIPPED, out);
                step_done(run, k, w);
                break;
            case DECIDE_UPSTREAM_FAILED:
                set_reason(self, "an upstream step failed");
                self->ended_at_ms = now;
                set_state(run, s->self, ENGINE_UPSTREAM_FAILED, out);
                step_done(run, k, w);
                break;
            }
        }
        fill_slots(run, now, out, w);
        if (w->n)
            continue;
        if (!run->exit_started && steps_done(run, 0, run->n_main)) {
            run->exit_started = true;
            run->main_outcome = xstrdup(main_outcome(run));
            cJSON *r = cJSON_GetObjectItemCaseSensitive(run->ctx, "run");
            cJSON_AddStringToObject(r, "state", run->main_outcome);
            for (size_t k = run->n_main; k < run->n_steps; k++)
                work_push(w, k);
            continue;
        }
        break;
    }
    if (run->exit_started && steps_done(run, run->n_main, run->n_steps) && !engine_run_done(run)) {
        bool exit_failed = false;
        for (size_t k = run->n_main; k < run->n_steps; k++) {
            enum engine_state st = run->inst[run->steps[k].self].state;
            exit_failed |= st == ENGINE_FAILED || st == ENGINE_UPSTREAM_FAILED;
        }
        if (run->state == ENGINE_RUN_CANCELLING)
            set_run_state(run, ENGINE_RUN_CANCELLED, out);
        else if (exit_failed || !strcmp(run->main_outcome, "failed"))
            set_run_state(run, ENGINE_RUN_FAILED, out);
        else
            set_run_state(run, ENGINE_RUN_SUCCEEDED, out);
    }
}

/* --- events ------------------------------------------------------------------------ */

static bool policy_retries(enum dsl_retry_policy p, enum engine_failure f)
{
    switch (f) {
    case ENGINE_FAIL_STEP:
        return p == DSL_RETRY_ALWAYS || p == DSL_RETRY_ON_FAILURE;
    case ENGINE_FAIL_ERROR:
        return p == DSL_RETRY_ALWAYS || p == DSL_RETRY_ON_ERROR;
    case ENGINE_FAIL_TRANSIENT:
        return p != DSL_RETRY_ON_FAILURE;
    case ENGINE_FAIL_CANCELLED:
        return false;
    }
    return false;
}

/* The wait before attempt `attempt` + 1: initial × factor^(attempt − 1), capped. */
static int64_t backoff_ms(const struct dsl_retry *r, int attempt)
{
    double d = (double)r->backoff_initial_ms * pow(r->backoff_factor, attempt - 1);
    if (!(d < (double)r->backoff_max_ms))
        return r->backoff_max_ms;
    return (int64_t)d;
}

/* Attempt of instance i ended in failure: retry, fail, or (cancel) cancelled. */
static void attempt_failed(struct engine_run *run, size_t i, enum engine_failure f,
                           const char *reason, int exit_code, int64_t now,
                           struct engine_actions *out, struct worklist *w)
{
    struct engine_instance *in = &run->inst[i];
    const struct dsl_step *d = run->steps[in->step].def;
    in->exit_code = exit_code;
    in->ended_at_ms = now;
    set_reason(in, reason);
    if (f == ENGINE_FAIL_CANCELLED || run->state == ENGINE_RUN_CANCELLING) {
        set_state(run, i, ENGINE_CANCELLED, out);
    } else if (in->attempt <= d->retries.limit && policy_retries(d->retries.policy, f)) {
        in->next_try_at_ms = now + backoff_ms(&d->retries, in->attempt);
        set_state(run, i, ENGINE_UP_FOR_RETRY, out);
        return;
    } else {
        set_state(run, i, ENGINE_FAILED, out);
    }
    if (run->steps[in->step].expanded && in->map_index >= 0)
        maybe_finish_fanout(run, in->step, now, out, w);
    else
        step_done(run, in->step, w);
}

static long find_instance(const struct engine_run *run, const char *step, int map_index)
{
    for (size_t k = 0; k < run->n_steps; k++) {
        const struct engine_step *s = &run->steps[k];
        if (strcmp(s->def->name, step))
            continue;
        if (map_index < 0)
            return s->expanded ? -1 : (long)s->self;
        if (!s->expanded || (size_t)map_index >= s->count)
            return -1;
        return (long)(s->first + (size_t)map_index);
    }
    return -2;
}

static void stop(struct engine_run *run, size_t i, const char *reason, struct engine_actions *out)
{
    struct engine_instance *in = &run->inst[i];
    if (in->stop_sent)
        return;
    in->stop_sent = true;
    struct engine_action *act = push_action(out, ENGINE_ACT_STOP);
    act->inst = i;
    act->attempt = in->attempt;
    act->reason = reason;
}

static void on_tick(struct engine_run *run, int64_t now, struct engine_actions *out,
                    struct worklist *w)
{
    for (size_t i = 0; i < run->n_inst; i++) {
        struct engine_instance *in = &run->inst[i];
        const struct dsl_step *d = run->steps[in->step].def;
        if (in->state == ENGINE_UP_FOR_RETRY && in->next_try_at_ms <= now) {
            ready_push(run, i);
        } else if (in->state == ENGINE_QUEUED && d->pending_timeout_ms &&
                   now - in->queued_at_ms >= d->pending_timeout_ms) {
            stop(run, i, "pending_timeout", out);
            attempt_failed(run, i, ENGINE_FAIL_ERROR, "pending_timeout", -1, now, out, w);
        } else if (in->state == ENGINE_RUNNING && d->timeout_ms &&
                   now - in->started_at_ms >= d->timeout_ms + ENGINE_TIMEOUT_GRACE_MS) {
            stop(run, i, "timeout", out);
            attempt_failed(run, i, ENGINE_FAIL_STEP, "timeout (not reported by the worker)", -1,
                           now, out, w);
        }
    }
}

static void on_cancel(struct engine_run *run, int64_t now, struct engine_actions *out,
                      struct worklist *w)
{
    if (run->state != ENGINE_RUN_QUEUED && run->state != ENGINE_RUN_RUNNING)
        return;
    bool never_started = run->state == ENGINE_RUN_QUEUED;
    set_run_state(run, ENGINE_RUN_CANCELLING, out);
    if (never_started) {
        set_run_state(run, ENGINE_RUN_CANCELLED, out);
        return;
    }
    for (size_t i = 0; i < run->n_inst; i++) {
        struct engine_instance *in = &run->inst[i];
        const struct engine_step *s = &run->steps[in->step];
        if (s->on_exit || (s->expanded && in->map_index < 0))
            continue;
        if (in->state == ENGINE_PENDING || in->state == ENGINE_UP_FOR_RETRY) {
            set_reason(in, "run cancelled");
            in->ended_at_ms = now;
            set_state(run, i, ENGINE_CANCELLED, out);
        } else if (in->state == ENGINE_QUEUED) {
            stop(run, i, "cancelled", out);
            set_reason(in, "run cancelled");
            in->ended_at_ms = now;
            set_state(run, i, ENGINE_CANCELLED, out);
        } else if (in->state == ENGINE_RUNNING) {
            stop(run, i, "cancelled", out);
            continue; /* the worker reports it, then it is cancelled */
        } else {
            continue;
        }
        if (s->expanded)
            maybe_finish_fanout(run, in->step, now, out, w);
        else
            step_done(run, in->step, w);
    }
}

int engine_apply(struct engine_run *run, const struct engine_event *ev, struct engine_actions *out)
{
    struct worklist w = {0};
    int64_t now = ev->now_ms;
    int result = 0;

    if (engine_run_done(run))
        return 0;
    switch (ev->kind) {
    case ENGINE_EV_START:
        if (run->state != ENGINE_RUN_QUEUED)
            break;
        set_run_state(run, ENGINE_RUN_RUNNING, out);
        for (size_t k = run->n_main; k-- > 0;)
            work_push(&w, k);
        break;
    case ENGINE_EV_TICK:
        if (run->state == ENGINE_RUN_QUEUED)
            break;
        on_tick(run, now, out, &w);
        break;
    case ENGINE_EV_CANCEL:
        on_cancel(run, now, out, &w);
        break;
    case ENGINE_EV_RUNNING:
    case ENGINE_EV_SUCCEEDED:
    case ENGINE_EV_FAILED: {
        long i = ev->step ? find_instance(run, ev->step, ev->map_index) : -2;
        if (i == -2) {
            result = SL_EINVAL;
            break;
        }
        if (i < 0)
            break;
        struct engine_instance *in = &run->inst[i];
        if (in->attempt != ev->attempt)
            break; /* a stale or redelivered message */
        if (ev->kind == ENGINE_EV_RUNNING) {
            if (in->state != ENGINE_QUEUED)
                break;
            in->started_at_ms = now;
            set_state(run, (size_t)i, ENGINE_RUNNING, out);
            break;
        }
        if (in->state != ENGINE_QUEUED && in->state != ENGINE_RUNNING)
            break;
        if (!in->started_at_ms)
            in->started_at_ms = now;
        if (ev->kind == ENGINE_EV_SUCCEEDED) {
            cJSON_Delete(in->outputs);
            in->outputs = ev->outputs ? cJSON_Duplicate(ev->outputs, true) : cJSON_CreateObject();
            in->exit_code = 0;
            in->ended_at_ms = now;
            set_reason(in, NULL);
            set_state(run, (size_t)i, ENGINE_SUCCEEDED, out);
            if (run->steps[in->step].expanded && in->map_index >= 0)
                maybe_finish_fanout(run, in->step, now, out, &w);
            else
                step_done(run, in->step, &w);
        } else {
            attempt_failed(run, (size_t)i, ev->failure, ev->reason ? ev->reason : "failed",
                           ev->exit_code, now, out, &w);
        }
        break;
    }
    }
    if (result == 0 && run->state != ENGINE_RUN_QUEUED && !engine_run_done(run))
        advance(run, now, out, &w);
    free(w.v);
    return result;
}

static long step_index(const struct engine_run *run, const char *name)
{
    for (size_t k = 0; k < run->n_steps; k++) {
        if (!strcmp(run->steps[k].def->name, name))
            return (long)k;
    }
    return -1;
}

static void restore_instance(struct engine_instance *in, const struct engine_row *r)
{
    in->state = r->state;
    in->attempt = r->attempt;
    in->queued_at_ms = r->queued_at_ms;
    in->started_at_ms = r->started_at_ms;
    in->ended_at_ms = r->ended_at_ms;
    in->next_try_at_ms = r->next_try_at_ms;
    in->exit_code = r->exit_code;
    set_reason(in, r->reason);
    cJSON_Delete(in->outputs);
    in->outputs = r->outputs ? cJSON_Duplicate(r->outputs, true) : NULL;
    cJSON_Delete(in->item);
    in->item = r->item ? cJSON_Duplicate(r->item, true) : NULL;
}

int engine_run_restore(struct engine_run **out, const struct dsl_dag *dag, const char *run_id,
                       const char *logical_time, const char *dag_dir, const cJSON *params,
                       enum engine_run_state state, const struct engine_row *rows, size_t n_rows,
                       int64_t now_ms, struct engine_actions *actions)
{
    struct engine_run *run;
    int rc = engine_run_new(&run, dag, run_id, logical_time, dag_dir, params);
    if (rc < 0)
        return rc;
    /* fan-outs first: a step's items are rows with map_index >= 0 */
    size_t *count = xcalloc(run->n_steps + 1, sizeof(*count));
    for (size_t r = 0; r < n_rows; r++) {
        long k = step_index(run, rows[r].step);
        if (k < 0 || rows[r].map_index < -1) {
            free(count);
            engine_run_free(run);
            return SL_EINVAL;
        }
        if (rows[r].map_index >= 0 && (size_t)rows[r].map_index + 1 > count[k])
            count[k] = (size_t)rows[r].map_index + 1;
    }
    for (size_t k = 0; k < run->n_steps; k++) {
        if (!count[k])
            continue;
        run->steps[k].expanded = true;
        run->steps[k].first = run->n_inst;
        run->steps[k].count = count[k];
        for (size_t j = 0; j < count[k]; j++)
            add_instance(run, k, (int)j);
    }
    free(count);
    for (size_t r = 0; r < n_rows; r++) {
        const struct engine_step *s = &run->steps[step_index(run, rows[r].step)];
        size_t i = rows[r].map_index < 0 ? s->self : s->first + (size_t)rows[r].map_index;
        restore_instance(&run->inst[i], &rows[r]);
    }
    run->state = state;

    /* derived state: active count, the expression context, what waits for a slot */
    struct worklist w = {0};
    for (size_t i = 0; i < run->n_inst; i++) {
        const struct engine_instance *in = &run->inst[i];
        bool placeholder = run->steps[in->step].expanded && in->map_index < 0;
        if (!placeholder && (in->state == ENGINE_QUEUED || in->state == ENGINE_RUNNING))
            run->active++;
        if (run->steps[in->step].expanded && in->map_index >= 0 && in->state == ENGINE_PENDING)
            ready_push(run, i);
    }
    for (size_t k = 0; k < run->n_steps; k++) {
        if (engine_state_is_done(run->inst[run->steps[k].self].state))
            refresh_step_ctx(run, k);
        if (k < run->n_main)
            work_push(&w, k); /* on_exit steps: advance() releases them */
    }
    if (state == ENGINE_RUN_RUNNING || state == ENGINE_RUN_CANCELLING) {
        for (size_t k = 0; k < run->n_steps; k++) {
            if (run->steps[k].expanded)
                maybe_finish_fanout(run, k, now_ms, actions, &w);
        }
        advance(run, now_ms, actions, &w);
    }
    free(w.v);
    *out = run;
    return 0;
}

int64_t engine_next_wakeup(const struct engine_run *run)
{
    int64_t next = INT64_MAX;
    if (engine_run_done(run))
        return next;
    for (size_t i = 0; i < run->n_inst; i++) {
        const struct engine_instance *in = &run->inst[i];
        const struct dsl_step *d = run->steps[in->step].def;
        int64_t t = INT64_MAX;
        if (in->state == ENGINE_UP_FOR_RETRY)
            t = in->next_try_at_ms;
        else if (in->state == ENGINE_QUEUED && d->pending_timeout_ms)
            t = in->queued_at_ms + d->pending_timeout_ms;
        else if (in->state == ENGINE_RUNNING && d->timeout_ms &&
                 (in->map_index >= 0 || !run->steps[in->step].expanded))
            t = in->started_at_ms + d->timeout_ms + ENGINE_TIMEOUT_GRACE_MS;
        if (t < next)
            next = t;
    }
    return next;
}

bool engine_run_done(const struct engine_run *run)
{
    return run->state == ENGINE_RUN_SUCCEEDED || run->state == ENGINE_RUN_FAILED ||
           run->state == ENGINE_RUN_CANCELLED;
}
