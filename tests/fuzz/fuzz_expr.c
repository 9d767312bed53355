/*
 * tests/fuzz/fuzz_expr.c - libFuzzer target for expressions and templates (dsl/expr.h).
 *
 * The first byte of an input picks the mode, the rest is the source:
 *
 *   even  an expression: dsl_expr_parse, then dsl_expr_eval and dsl_expr_eval_bool
 *   odd   a template: dsl_template_parse, then dsl_template_render, and if it is a
 *         single `{{ expr }}`, that expression's eval as well
 *
 * Both modes walk the references (dsl_*_each_ref) and check each one lies inside
 * the source. Parse and evaluation errors are expected outcomes; what must never
 * happen is a crash, a sanitizer report, a leak, a result that is NULL on
 * success, or an error message that is not NUL-terminated. The context is one
 * fixed cJSON object shaped like a run's (params of every type, run, dag, steps
 * with string and fan-in list outputs, item), built once and never modified:
 * evaluation must not write to it, and ASan would catch a free of it.
 *
 * Built and run by `make fuzz` (tests/fuzz/corpus/fuzz_expr/ seeds it,
 * tests/fuzz/expr.dict holds the operators and context names).
 */
#include "dsl/expr.h"
#include "common/arena.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char context_json[] =
    "{"
    "\"params\": {\"n_estimators\": 100, \"ratio\": 0.5, \"name\": \"world\", \"flag\": false,"
    "  \"region\": \"eu\", \"items\": [\"x\", 1, true, null], \"cfg\": {\"lr\": 0.1,"
    "  \"layers\": [1, 2], \"nested\": {\"a\": {\"b\": {\"c\": \"deep\"}}}},"
    "  \"empty\": \"\", \"nothing\": null, \"num_str\": \"0.93\", \"big\": 1e21,"
    "  \"neg\": -2, \"dash-name\": \"d\"},"
    "\"run\": {\"id\": \"run-42\", \"logical_time\": \"2026-01-01T00:00:00Z\","
    "  \"state\": \"succeeded\"},"
    "\"dag\": {\"name\": \"iris\", \"dir\": \"/srv/dags\"},"
    "\"steps\": {"
    "  \"train\": {\"state\": \"succeeded\", \"outputs\": {"
    "    \"params\": {\"accuracy\": \"0.93\", \"ok\": \"true\", \"text\": \"hello {{ world }}\"},"
    "    \"artifacts\": {\"model\": \"s3://bucket/run-42/model.pkl\"}}},"
    "  \"transform\": {\"state\": \"failed\", \"outputs\": {"
    "    \"params\": {\"rows\": [\"91\", \"90\", \"95\"], \"none\": []},"
    "    \"artifacts\": {}}},"
    "  \"prep-data\": {\"state\": \"skipped\", \"outputs\": {\"params\": {}, \"artifacts\": {}}},"
    "  \"in\": {\"state\": \"upstream_failed\"}"
    "},"
    "\"item\": {\"x\": 1, \"name\": \"shard-000\", \"tags\": [\"a\", \"b\"]}"
    "}";

static cJSON *context; /* built once; lives for the process */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    context = cJSON_Parse(context_json);
    if (!context) {
        fprintf(stderr, "fuzz_expr: the fixed context is not valid JSON\n");
        abort();
    }
    return 0;
}

static void fail(const char *what, const char *src)
{
    fprintf(stderr, "fuzz_expr: %s\n--- source ---\n%s\n", what, src);
    abort();
}

struct ref_check {
    size_t src_len;
    size_t n;
};

static int on_ref(void *ctx, const struct dsl_ref *ref)
{
    struct ref_check *rc = ctx;
    if (ref->n_parts == 0 || ref->offset > rc->src_len || ref->len > rc->src_len - ref->offset)
        return 1;
    for (size_t i = 0; i < ref->n_parts; i++)
        if (ref->parts[i] == NULL)
            return 1;
    rc->n++;
    return 0;
}

/* errmsg must always come back NUL-terminated within its buffer. */
static void check_msg(const char *msg, size_t len, const char *src)
{
    if (memchr(msg, '\0', len) == NULL)
        fail("error message is not NUL-terminated", src);
}

static void eval_expr(const struct dsl_expr *e, const char *src)
{
    char msg[256];
    cJSON *value = NULL;
    bool b;

    memset(msg, 'x', sizeof(msg));
    if (dsl_expr_eval(&value, e, context, msg, sizeof(msg)) == 0) {
        if (!value)
            fail("eval succeeded with a NULL value", src);
        /* Results must be printable: it is how templates render them. */
        char *printed = cJSON_PrintUnformatted(value);
        free(printed);
        cJSON_Delete(value);
    } else {
        check_msg(msg, sizeof(msg), src);
    }
    memset(msg, 'x', sizeof(msg));
    if (dsl_expr_eval_bool(&b, e, context, msg, sizeof(msg)) != 0)
        check_msg(msg, sizeof(msg), src);

    /* A NULL context is an empty one: references fail, literals do not. */
    value = NULL;
    if (dsl_expr_eval(&value, e, NULL, msg, sizeof(msg)) == 0)
        cJSON_Delete(value);
    /* Room for nothing: must not write past it. */
    if (dsl_expr_eval(&value, e, context, NULL, 0) == 0)
        cJSON_Delete(value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    bool template_mode = data[0] & 1;
    size_t len = size - 1;
    /* The API takes NUL-terminated sources: an embedded NUL just ends it early. */
    char *src = malloc(len + 1);
    if (!src)
        abort();
    memcpy(src, data + 1, len);
    src[len] = '\0';
    size_t src_len = strlen(src);

    struct arena a;
    struct dsl_expr_error err;
    struct ref_check refs = {.src_len = src_len};
    arena_init(&a);

    if (!template_mode) {
        struct dsl_expr *e = NULL;
        if (dsl_expr_parse(&e, &a, src, &err) != 0) {
            if (err.offset > src_len)
                fail("parse error offset past the end of the source", src);
            check_msg(err.msg, sizeof(err.msg), src);
            goto cleanup;
        }
        if (dsl_expr_each_ref(e, on_ref, &refs) != 0)
            fail("a reference lies outside the source or has no parts", src);
        eval_expr(e, src);
    } else {
        struct dsl_template *t = NULL;
        if (dsl_template_parse(&t, &a, src, &err) != 0) {
            if (err.offset > src_len)
                fail("parse error offset past the end of the source", src);
            check_msg(err.msg, sizeof(err.msg), src);
            goto cleanup;
        }
        if (dsl_template_each_ref(t, on_ref, &refs) != 0)
            fail("a reference lies outside the source or has no parts", src);

        char msg[256];
        char *out = NULL;
        memset(msg, 'x', sizeof(msg));
        int rc = dsl_template_render(&out, t, context, msg, sizeof(msg));
        if (rc == 0) {
            if (!out)
                fail("render succeeded with a NULL string", src);
            free(out);
        } else {
            check_msg(msg, sizeof(msg), src);
        }
        /* A literal template renders without fail, whatever the context. */
        if (dsl_template_is_literal(t)) {
            out = NULL;
            if (dsl_template_render(&out, t, NULL, msg, sizeof(msg)) != 0)
                fail("a literal template failed to render", src);
            free(out);
        }
        const struct dsl_expr *single = dsl_template_single_expr(t);
        if (single)
            eval_expr(single, src);
    }

cleanup:
    arena_release(&a);
    free(src);
    return 0;
}
