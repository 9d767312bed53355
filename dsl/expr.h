/*
 * dsl/expr.h - the expression and template language of DAG files.
 *
 * Conditions (`when: steps.evaluate.outputs.params.accuracy >= 0.9`) are
 * expressions; parameter values and commands are templates, literal text with
 * `{{ expr }}` segments. The language is small on purpose: literals, dotted
 * references into an evaluation context, `and`/`or`/`not`, comparisons and
 * `in`. There are no functions, no arithmetic and no loops, so evaluation is
 * bounded by the size of the expression and the values it reads. The user-facing
 * reference, with every rule of comparison and rendering, is docs/expressions.md.
 *
 * Parsing and evaluation are pure: no I/O, no globals, deterministic, and safe
 * to call from any thread as long as each arena has one owner. Parsed
 * expressions and templates are immutable and live in the caller's arena; they
 * are freed with it (arena_release), never individually. Values are cJSON
 * (libcjson): the evaluation context is a cJSON object such as
 *
 *   {"params": {...}, "run": {...}, "dag": {...}, "item": ...,
 *    "steps": {"train": {"state": "succeeded",
 *                        "outputs": {"params": {"accuracy": "0.93"}, "artifacts": {...}}}}}
 *
 * Errors: every parse failure returns SL_EPARSE and fills a struct
 * dsl_expr_error with a 0-based byte offset into the source and a lower-case
 * message. Evaluation returns SL_EINVAL when a reference is not defined (or a
 * value is nested too deeply to handle) and SL_ETYPE when a value has the wrong
 * type for an operator, a condition or rendering; the message goes to a
 * caller-provided buffer.
 */
#ifndef SLUICE_DSL_EXPR_H
#define SLUICE_DSL_EXPR_H

#include "common/arena.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

/* Longest expression source accepted by dsl_expr_parse(), in bytes. */
#define DSL_EXPR_MAX_LEN 16384
/* Longest template source accepted by dsl_template_parse(), in bytes. */
#define DSL_TEMPLATE_MAX_LEN (1024 * 1024)
/* Deepest nesting of parentheses, lists and `not` accepted by the parsers. */
#define DSL_EXPR_MAX_DEPTH 64

struct dsl_expr;     /* parsed expression; lives in the arena it was parsed into */
struct dsl_template; /* parsed template; lives in its arena */

struct dsl_expr_error {
    size_t offset; /* 0-based byte offset of the error in the source */
    char msg[160]; /* lower-case, no final period, e.g. "unterminated string" */
};

/* One reference in an expression, e.g. `steps.train.outputs.params.accuracy` is
 * parts {"steps", "train", "outputs", "params", "accuracy"}, n_parts 5. offset
 * and len locate its text in the source that was parsed (for a template, the
 * whole template). Owned by the arena of the expression. */
struct dsl_ref {
    const char *const *parts;
    size_t n_parts;
    size_t offset;
    size_t len;
};

/* Called once per reference, in source order. A nonzero return stops the walk
 * and is returned by the walker. */
typedef int (*dsl_ref_fn)(void *ctx, const struct dsl_ref *ref);

/* Parses the NUL-terminated expression src (at most DSL_EXPR_MAX_LEN bytes).
 * On success sets *out to an expression allocated from a; src need not outlive
 * it. Returns 0, or SL_EPARSE with *err filled (err may be NULL); memory already
 * taken from a on failure is released with the arena. SL_EINVAL if an argument
 * is NULL. */
int dsl_expr_parse(struct dsl_expr **out, struct arena *a, const char *src,
                   struct dsl_expr_error *err);

/* Parses the NUL-terminated template src (at most DSL_TEMPLATE_MAX_LEN bytes):
 * literal text with `{{ expr }}` segments. A segment that is a single string
 * literal, such as the escape `{{"{{"}}`, is folded into the literal text. Same
 * ownership and errors as dsl_expr_parse(); offsets count from the start of the
 * template. */
int dsl_template_parse(struct dsl_template **out, struct arena *a, const char *src,
                       struct dsl_expr_error *err);

/* True if the template has no expression segments (after folding string
 * literals), so rendering it cannot fail and yields its text. */
bool dsl_template_is_literal(const struct dsl_template *t);

/* If the template is exactly one `{{ expr }}` and nothing else (not even
 * whitespace), returns that expression, else NULL. Lets a caller keep the typed
 * value (a list, a number) instead of its rendering. Owned by the template. */
const struct dsl_expr *dsl_template_single_expr(const struct dsl_template *t);

/* Calls fn for every reference in e (or every segment of t), in source order,
 * including references that short-circuit evaluation would skip. Returns 0, or
 * the first nonzero value fn returned. */
int dsl_expr_each_ref(const struct dsl_expr *e, dsl_ref_fn fn, void *ctx);
int dsl_template_each_ref(const struct dsl_template *t, dsl_ref_fn fn, void *ctx);

/* Evaluates e against the context object ctx (NULL means an empty context). On
 * success sets *out to a new cJSON value the caller frees with cJSON_Delete.
 * Returns 0, SL_EINVAL (a reference is not defined) or SL_ETYPE (an operand has
 * the wrong type), with a message written to errmsg (errlen bytes, always
 * NUL-terminated; errmsg may be NULL when errlen is 0). */
int dsl_expr_eval(cJSON **out, const struct dsl_expr *e, const cJSON *ctx, char *errmsg,
                  size_t errlen);

/* Evaluates e as a condition: the result must be a boolean or one of the strings
 * "true" and "false" (exactly); anything else is SL_ETYPE. Otherwise as
 * dsl_expr_eval(). */
int dsl_expr_eval_bool(bool *out, const struct dsl_expr *e, const cJSON *ctx, char *errmsg,
                       size_t errlen);

/* Renders t against ctx into a newly malloc'd NUL-terminated string the caller
 * frees. Strings are inserted as they are, numbers in their shortest exact form
 * (integers without ".0"), booleans as true/false, lists and objects as compact
 * JSON. A null value is an error (SL_ETYPE), not an empty string. Errors as
 * dsl_expr_eval(). */
int dsl_template_render(char **out, const struct dsl_template *t, const cJSON *ctx, char *errmsg,
                        size_t errlen);

#endif
