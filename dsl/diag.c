/*
 * dsl/diag.c - the list of diagnostics a parse produces, and the names of enums.
 */
#include "dsl/dsl.h"
#include "dsl/dsl_int.h"
#include "common/xalloc.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void dsl_diags_init(struct dsl_diags *d)
{
    memset(d, 0, sizeof(*d));
    arena_init(&d->mem);
}

void dsl_diags_release(struct dsl_diags *d)
{
    free(d->items);
    arena_release(&d->mem);
    dsl_diags_init(d);
}

void dsl_diags_add(struct dsl_diags *d, const char *file, int line, int col, const char *fmt, ...)
{
    if (d->n >= DSL_MAX_DIAGS) {
        d->dropped++;
        return;
    }
    struct strbuf sb = STRBUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    strbuf_vaddf(&sb, fmt, ap);
    va_end(ap);
    XGROW(d->items, d->alloc, d->n + 1);
    struct dsl_diag *item = &d->items[d->n++];
    item->file = arena_strdup(&d->mem, file ? file : "<input>");
    item->line = line;
    item->col = col;
    item->msg = arena_strdup(&d->mem, sb.buf);
    strbuf_release(&sb);
}

void dsl_diags_print(const struct dsl_diags *d, FILE *out)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct dsl_diag *g = &d->items[i];
        if (g->line > 0)
            fprintf(out, "%s:%d:%d: %s\n", g->file, g->line, g->col, g->msg);
        else
            fprintf(out, "%s: %s\n", g->file, g->msg);
    }
    if (d->dropped)
        fprintf(out, "%s: %zu more errors not shown\n", d->n ? d->items[0].file : "<input>",
                d->dropped);
}

const char *const dsl_trigger_names[DSL_N_TRIGGER_RULES] = {
    "all_success",
    "all_done",
    "all_failed",
    "one_success",
    "one_failed",
    "none_failed",
    "none_failed_min_one_success",
    "always",
};
const char *const dsl_retry_names[DSL_N_RETRY_POLICIES] = {"always", "on_failure", "on_error",
                                                           "on_transient"};
const char *const dsl_type_names[DSL_N_PARAM_TYPES] = {"string",  "integer", "number",
                                                       "boolean", "array",   "object"};
const char *const dsl_catchup_names[DSL_N_CATCHUP] = {"none", "latest", "all"};
const char *const dsl_overlap_names[DSL_N_OVERLAP] = {"allow", "forbid", "replace"};

const char *dsl_trigger_rule_name(enum dsl_trigger_rule r)
{
    return dsl_trigger_names[r];
}

const char *dsl_retry_policy_name(enum dsl_retry_policy p)
{
    return dsl_retry_names[p];
}

const char *dsl_param_type_name(enum dsl_param_type t)
{
    return dsl_type_names[t];
}

const char *dsl_catchup_name(enum dsl_catchup c)
{
    return dsl_catchup_names[c];
}

const char *dsl_overlap_name(enum dsl_overlap o)
{
    return dsl_overlap_names[o];
}
