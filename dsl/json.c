/*
 * dsl/json.c - the normalized model as JSON, and parameter value checks.
 *
 * The output uses the language's own keys, so that it parses back (JSON being
 * YAML) into the same model: every default is written out, `defaults:` is
 * already merged into each step, and fields that are unset and have no default
 * are left out rather than written as null. Keys come in a fixed order and
 * numbers in a fixed format, so equal models give equal bytes: the content hash
 * of a DAG version is taken over this text.
 */
#include "dsl/dsl_int.h"
#include "common/duration.h"
#include "common/error.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* A streaming JSON writer with optional two-space indentation. */
struct jw {
    struct strbuf *sb;
    bool pretty;
    int depth;
    bool need_comma[64];
    bool after_key;
};

static void jw_newline(struct jw *w)
{
    if (!w->pretty)
        return;
    strbuf_addch(w->sb, '\n');
    for (int i = 0; i < w->depth; i++)
        strbuf_addstr(w->sb, "  ");
}

/* Before any value: a comma and a newline unless it follows its key. */
static void jw_value_prefix(struct jw *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (w->depth > 0) {
        if (w->need_comma[w->depth])
            strbuf_addch(w->sb, ',');
        jw_newline(w);
    }
    w->need_comma[w->depth] = true;
}

static void jw_open(struct jw *w, char c)
{
    jw_value_prefix(w);
    strbuf_addch(w->sb, c);
    w->depth++;
    w->need_comma[w->depth] = false;
}

static void jw_close(struct jw *w, char c)
{
    bool empty = !w->need_comma[w->depth];
    w->depth--;
    if (!empty)
        jw_newline(w);
    strbuf_addch(w->sb, c);
}

static void jw_key(struct jw *w, const char *key)
{
    jw_value_prefix(w);
    strbuf_add_json_string(w->sb, key);
    strbuf_addstr(w->sb, w->pretty ? ": " : ":");
    w->after_key = true;
}

static void jw_str(struct jw *w, const char *s)
{
    jw_value_prefix(w);
    strbuf_add_json_string(w->sb, s);
}

static void jw_raw(struct jw *w, const char *json)
{
    jw_value_prefix(w);
    strbuf_addstr(w->sb, json);
}

static void jw_int(struct jw *w, int64_t v)
{
    jw_value_prefix(w);
    strbuf_addf(w->sb, "%lld", (long long)v);
}

static void jw_kstr(struct jw *w, const char *key, const char *s)
{
    if (!s)
        return;
    jw_key(w, key);
    jw_str(w, s);
}

static void jw_kint(struct jw *w, const char *key, int64_t v)
{
    jw_key(w, key);
    jw_int(w, v);
}

static void jw_kduration(struct jw *w, const char *key, int64_t ms)
{
    char buf[64];
    sl_duration_format(buf, sizeof(buf), ms);
    jw_kstr(w, key, buf);
}

static void jw_kstrings(struct jw *w, const char *key, const char *const *v, size_t n)
{
    jw_key(w, key);
    jw_open(w, '[');
    for (size_t i = 0; i < n; i++)
        jw_str(w, v[i]);
    jw_close(w, ']');
}

static void jw_kkv(struct jw *w, const char *key, const struct dsl_kv *kv, size_t n)
{
    jw_key(w, key);
    jw_open(w, '{');
    for (size_t i = 0; i < n; i++)
        jw_kstr(w, kv[i].key, kv[i].value);
    jw_close(w, '}');
}

static void jw_koutputs(struct jw *w, const char *key, const struct dsl_output *o, size_t n)
{
    jw_key(w, key);
    jw_open(w, '{');
    for (size_t i = 0; i < n; i++)
        jw_kstr(w, o[i].name, o[i].path);
    jw_close(w, '}');
}

static void write_step(struct jw *w, const struct dsl_step *s)
{
    jw_open(w, '{');
    jw_kstr(w, "name", s->name);
    jw_kstrings(w, "depends_on", s->depends_on, s->n_depends_on);
    jw_kstr(w, "trigger_rule", dsl_trigger_rule_name(s->trigger_rule));
    jw_kstr(w, "when", s->when);
    jw_kstr(w, "image", s->image);
    jw_kstrings(w, "command", s->command, s->n_command);
    jw_kstrings(w, "args", s->args, s->n_args);
    jw_key(w, "env");
    jw_open(w, '{');
    for (size_t i = 0; i < s->n_env; i++) {
        if (s->env[i].value) {
            jw_kstr(w, s->env[i].name, s->env[i].value);
            continue;
        }
        jw_key(w, s->env[i].name);
        jw_open(w, '{');
        jw_key(w, "from_secret");
        jw_open(w, '{');
        jw_kstr(w, "name", s->env[i].secret_name);
        jw_kstr(w, "key", s->env[i].secret_key);
        jw_close(w, '}');
        jw_close(w, '}');
    }
    jw_close(w, '}');
    jw_kstr(w, "workdir", s->workdir);
    jw_key(w, "resources");
    jw_open(w, '{');
    jw_kstr(w, "cpu", s->resources.cpu);
    jw_kstr(w, "memory", s->resources.memory);
    if (s->resources.gpu)
        jw_kint(w, "gpu", s->resources.gpu);
    jw_close(w, '}');
    jw_kstr(w, "queue", s->queue);
    jw_kkv(w, "node_selector", s->node_selector, s->n_node_selector);
    jw_key(w, "tolerations");
    jw_open(w, '[');
    for (size_t i = 0; i < s->n_tolerations; i++) {
        const struct dsl_toleration *t = &s->tolerations[i];
        jw_open(w, '{');
        jw_kstr(w, "key", t->key);
        jw_kstr(w, "operator", t->op);
        jw_kstr(w, "value", t->value);
        jw_kstr(w, "effect", t->effect);
        if (t->seconds >= 0)
            jw_kint(w, "toleration_seconds", t->seconds);
        jw_close(w, '}');
    }
    jw_close(w, ']');
    jw_key(w, "retries");
    jw_open(w, '{');
    jw_kint(w, "limit", s->retries.limit);
    jw_kstr(w, "policy", dsl_retry_policy_name(s->retries.policy));
    jw_key(w, "backoff");
    jw_open(w, '{');
    jw_kduration(w, "initial", s->retries.backoff_initial_ms);
    char factor[40];
    snprintf(factor, sizeof(factor), "%.15g", s->retries.backoff_factor);
    jw_key(w, "factor");
    jw_raw(w, factor);
    jw_kduration(w, "max", s->retries.backoff_max_ms);
    jw_close(w, '}');
    jw_close(w, '}');
    if (s->timeout_ms)
        jw_kduration(w, "timeout", s->timeout_ms);
    if (s->pending_timeout_ms)
        jw_kduration(w, "pending_timeout", s->pending_timeout_ms);
    if (s->for_each_json) {
        jw_key(w, "for_each");
        jw_raw(w, s->for_each_json);
    }
    jw_kstr(w, "for_each", s->for_each_expr);
    if (s->max_parallel)
        jw_kint(w, "max_parallel", s->max_parallel);
    jw_key(w, "outputs");
    jw_open(w, '{');
    jw_koutputs(w, "params", s->output_params, s->n_output_params);
    jw_koutputs(w, "artifacts", s->output_artifacts, s->n_output_artifacts);
    jw_close(w, '}');
    jw_key(w, "inputs");
    jw_open(w, '{');
    jw_key(w, "artifacts");
    jw_open(w, '{');
    for (size_t i = 0; i < s->n_input_artifacts; i++) {
        jw_key(w, s->input_artifacts[i].name);
        jw_open(w, '{');
        jw_kstr(w, "from", s->input_artifacts[i].from);
        jw_kstr(w, "path", s->input_artifacts[i].path);
        jw_close(w, '}');
    }
    jw_close(w, '}');
    jw_close(w, '}');
    jw_kkv(w, "labels", s->labels, s->n_labels);
    jw_kkv(w, "annotations", s->annotations, s->n_annotations);
    jw_close(w, '}');
}

void dsl_dag_to_json(struct strbuf *sb, const struct dsl_dag *dag, bool pretty)
{
    struct jw w = {.sb = sb, .pretty = pretty};
    jw_open(&w, '{');
    jw_kstr(&w, "name", dag->name);
    jw_kstr(&w, "description", dag->description);
    jw_kstrings(&w, "tags", dag->tags, dag->n_tags);
    jw_kstr(&w, "schedule", dag->schedule);
    jw_kstr(&w, "timezone", dag->timezone);
    jw_kstr(&w, "start_date", dag->start_date);
    jw_kstr(&w, "end_date", dag->end_date);
    jw_kstr(&w, "catchup", dsl_catchup_name(dag->catchup));
    jw_kstr(&w, "overlap", dsl_overlap_name(dag->overlap));
    jw_kint(&w, "max_active_runs", dag->max_active_runs);
    if (dag->max_parallel_steps)
        jw_kint(&w, "max_parallel_steps", dag->max_parallel_steps);
    jw_key(&w, "params");
    jw_open(&w, '{');
    for (size_t i = 0; i < dag->n_params; i++) {
        const struct dsl_param *p = &dag->params[i];
        jw_key(&w, p->name);
        jw_open(&w, '{');
        jw_kstr(&w, "type", dsl_param_type_name(p->type));
        if (p->default_json) {
            jw_key(&w, "default");
            jw_raw(&w, p->default_json);
        }
        if (p->enum_json) {
            jw_key(&w, "enum");
            jw_raw(&w, p->enum_json);
        }
        jw_key(&w, "required");
        jw_raw(&w, p->required ? "true" : "false");
        jw_kstr(&w, "description", p->description);
        jw_close(&w, '}');
    }
    jw_close(&w, '}');
    jw_key(&w, "steps");
    jw_open(&w, '[');
    for (size_t i = 0; i < dag->n_steps; i++)
        write_step(&w, &dag->steps[i]);
    jw_close(&w, ']');
    jw_key(&w, "on_exit");
    jw_open(&w, '[');
    for (size_t i = 0; i < dag->n_on_exit; i++)
        write_step(&w, &dag->on_exit[i]);
    jw_close(&w, ']');
    jw_key(&w, "notify");
    jw_open(&w, '{');
    jw_kstrings(&w, "on_success", dag->notify_on_success, dag->n_notify_on_success);
    jw_kstrings(&w, "on_failure", dag->notify_on_failure, dag->n_notify_on_failure);
    jw_close(&w, '}');
    jw_close(&w, '}');
    if (pretty)
        strbuf_addch(sb, '\n');
}

/* --- parameter values --------------------------------------------------------------- */

static const char *json_type_name(const cJSON *v)
{
    if (cJSON_IsString(v))
        return "string";
    if (cJSON_IsNumber(v))
        return v->valuedouble == floor(v->valuedouble) ? "integer" : "number";
    if (cJSON_IsBool(v))
        return "boolean";
    if (cJSON_IsArray(v))
        return "array";
    if (cJSON_IsObject(v))
        return "object";
    return "null";
}

int dsl_param_check(const struct dsl_param *p, const cJSON *value, char *err, size_t errlen)
{
    bool ok;
    if (!value) {
        snprintf(err, errlen, "has no value");
        return SL_EINVAL;
    }
    switch (p->type) {
    case DSL_PARAM_STRING:
        ok = cJSON_IsString(value);
        break;
    case DSL_PARAM_INTEGER:
        ok = cJSON_IsNumber(value) && value->valuedouble == floor(value->valuedouble) &&
             fabs(value->valuedouble) <= 9007199254740992.0;
        break;
    case DSL_PARAM_NUMBER:
        ok = cJSON_IsNumber(value) && isfinite(value->valuedouble);
        break;
    case DSL_PARAM_BOOLEAN:
        ok = cJSON_IsBool(value);
        break;
    case DSL_PARAM_ARRAY:
        ok = cJSON_IsArray(value);
        break;
    case DSL_PARAM_OBJECT:
        ok = cJSON_IsObject(value);
        break;
    default:
        ok = false;
    }
    if (!ok && p->type == DSL_PARAM_INTEGER && cJSON_IsNumber(value) &&
        value->valuedouble == floor(value->valuedouble)) {
        snprintf(err, errlen, "integer out of range (at most 2^53 in magnitude)");
        return SL_ERANGE;
    }
    if (!ok) {
        snprintf(err, errlen, "expected %s, got %s", dsl_param_type_name(p->type),
                 json_type_name(value));
        return SL_ETYPE;
    }
    if (p->enum_json) {
        cJSON *allowed = cJSON_Parse(p->enum_json);
        cJSON *item;
        bool found = false;
        cJSON_ArrayForEach(item, allowed)
        {
            if (cJSON_Compare(item, value, true)) {
                found = true;
                break;
            }
        }
        cJSON_Delete(allowed);
        if (!found) {
            char *shown = cJSON_PrintUnformatted(value);
            snprintf(err, errlen, "%s is not one of %s", shown ? shown : "value", p->enum_json);
            cJSON_free(shown);
            return SL_EINVAL;
        }
    }
    return 0;
}
