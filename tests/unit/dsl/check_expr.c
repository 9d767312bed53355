/*
 * tests/unit/dsl/check_expr.c - the expression and template language.
 *
 * Most cases are tables: source text and the expected value, boolean, rendering
 * or error (message and offset). JSON in the tables is written with single
 * quotes for readability and converted by sq() before parsing. The last tests
 * feed random and mutated input to the parsers and evaluator: anything may be
 * rejected, nothing may crash, and every error must carry a message.
 */
#include "common/arena.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "dsl/expr.h"
#include "tests/testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* The evaluation context every table runs against. */
static const char ctx_sq[] =
    "{'params':{'n_estimators':100,'threshold':'0.9','name':'iris','flag':'true',"
    "'tags':['a','b'],'big-name':'x','none':null,'f':0.30000000000000004},"
    "'run':{'id':'r-1','logical_time':'2024-01-01T00:00:00Z','state':'running'},"
    "'dag':{'name':'iris-pipeline'},"
    "'steps':{'train':{'state':'succeeded','outputs':{'params':{'accuracy':'0.93',"
    "'ok':'true','no':'false','count':'10','word':'abc','multi':'l1\\nl2'},"
    "'artifacts':{'model':{'uri':'s3://b/m'}}}},"
    "'shard':{'state':'succeeded','outputs':{'params':{'rows':['1','2']}}},"
    "'prep-data':{'state':'failed','outputs':{'params':{}}}},"
    "'item':{'name':'x','n':3,'nested':{'k':[1,2,{'z':null}]}}}";

/* Parses JSON written with ' for ". Caller frees with cJSON_Delete. */
static cJSON *sq(const char *text)
{
    char *s = xstrdup(text);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    cJSON *j = cJSON_Parse(s);
    ck_assert_msg(j != NULL, "bad test JSON: %s", text);
    free(s);
    return j;
}

static cJSON *test_ctx(void)
{
    return sq(ctx_sq);
}

/* Parses src, failing the test (with the parse message) if it does not parse. */
static struct dsl_expr *parse_ok(struct arena *a, const char *src)
{
    struct dsl_expr *e = NULL;
    struct dsl_expr_error err = {0};
    int rc = dsl_expr_parse(&e, a, src, &err);
    ck_assert_msg(rc == 0, "parse of '%s' failed at %zu: %s", src, err.offset, err.msg);
    ck_assert_ptr_nonnull(e);
    return e;
}

/* --- values -------------------------------------------------------------------- */

static const struct {
    const char *src;
    const char *want; /* JSON, single-quoted */
} value_cases[] = {
    {"1", "1"},
    {"1.5", "1.5"},
    {"-2", "-2"},
    {"-0.25e1", "-2.5"},
    {"1e3", "1000"},
    {"1E+2", "100"},
    {"0.5e-1", "0.05"},
    {"007", "7"},
    {"\"a\\\"b\"", "'a\\'b'"},
    {"'it\\'s'", "'it\\u0027s'"},
    {"'say \"hi\"'", "'say \\'hi\\''"},
    {"\"tab\\there\\nnext\\\\\"", "'tab\\there\\nnext\\\\'"},
    {"\"\"", "''"},
    {"'}}'", "'}}'"},
    {"true", "true"},
    {"false", "false"},
    {"null", "null"},
    {"[]", "[]"},
    {"[ ]", "[]"},
    {"[1, 'a', [true, null]]", "[1,'a',[true,null]]"},
    {"[[[]]]", "[[[]]]"},
    {"params.n_estimators", "100"},
    {"params.threshold", "'0.9'"},
    {"params.big-name", "'x'"},
    {"params.none", "null"},
    {"steps.prep-data.state", "'failed'"},
    {"steps.train.outputs.params.accuracy", "'0.93'"},
    {"steps.train.outputs.artifacts.model", "{'uri':'s3://b/m'}"},
    {"steps.shard.outputs.params.rows", "['1','2']"},
    {"item.nested.k", "[1,2,{'z':null}]"},
    {"item", "{'name':'x','n':3,'nested':{'k':[1,2,{'z':null}]}}"},
    {"dag.name", "'iris-pipeline'"},
    {"run.logical_time", "'2024-01-01T00:00:00Z'"},
    {"(params.name)", "'iris'"},
    {"((((1))))", "1"},
    {"[params.name, item.n, run.id]", "['iris',3,'r-1']"},
    {"not true", "false"},
    {"not 'false'", "true"},
    {"params.flag and true", "true"},
    {"'false' or 'false'", "false"},
    {"1 == 1", "true"},
    {"[1 == 1, 'a' in 'cat']", "[true,true]"},
    /* names may contain '-' and may look like keywords after the first dot */
    {"\tparams.name\n", "'iris'"},
};

START_TEST(test_values)
{
    cJSON *ctx = test_ctx();
    for (size_t i = 0; i < N_ELEMS(value_cases); i++) {
        struct arena a = ARENA_INIT;
        char msg[256];
        cJSON *got = NULL, *want = sq(value_cases[i].want);
        struct dsl_expr *e = parse_ok(&a, value_cases[i].src);
        int rc = dsl_expr_eval(&got, e, ctx, msg, sizeof(msg));
        ck_assert_msg(rc == 0, "%s: %s", value_cases[i].src, msg);
        char *text = cJSON_PrintUnformatted(got);
        ck_assert_msg(cJSON_Compare(got, want, true), "%s: got %s, want %s", value_cases[i].src,
                      text, value_cases[i].want);
        free(text);
        cJSON_Delete(got);
        cJSON_Delete(want);
        arena_release(&a);
    }
    cJSON_Delete(ctx);
}
END_TEST

/* --- conditions ---------------------------------------------------------------- */

static const struct {
    const char *src;
    bool want;
} bool_cases[] = {
    /* precedence: or < and < not < comparison */
    {"true or false and false", true},
    {"false and true or true", true},
    {"not false and false", false},
    {"not 1 == 2", true},
    {"not 1 == 1 or true", true},
    {"false or not false", true},
    {"(true or false) and false", false},
    {"not not true", true},
    {"not (true and false)", true},
    {"true and true and true and false", false},
    {"false or false or false or true", true},
    /* numbers */
    {"1 == 1.0", true},
    {"1 != 2", true},
    {"1 < 2", true},
    {"2 <= 2", true},
    {"3 > 2", true},
    {"2 >= 3", false},
    {"-1 < 0", true},
    {"1e2 == 100", true},
    /* numeric strings against numbers compare as numbers */
    {"steps.train.outputs.params.accuracy >= 0.9", true},
    {"steps.train.outputs.params.accuracy < 0.9", false},
    {"0.9 < steps.train.outputs.params.accuracy", true},
    {"steps.train.outputs.params.accuracy == 0.93", true},
    {"steps.train.outputs.params.count > 9", true},
    {"params.threshold <= 0.9", true},
    {"'0.93' == 0.930", true},
    {"'1e2' == 100", true},
    {"'+5' == 5", true},
    {"'-1.5' < -1", true},
    {"'.5' == 0.5", true},
    {"'5.' == 5", true},
    {"' 1' == 1", false},
    {"'1 ' == 1", false},
    {"'abc' == 1", false},
    {"'abc' != 1", true},
    {"'inf' == 1", false},
    {"'nan' != 1", true},
    {"'0x10' == 16", false},
    {"'1e999' == 1", false},
    {"'' == 0", false},
    {"'.' == 0", false},
    {"'1e' == 1", false},
    /* two strings compare bytewise, even when both look like numbers */
    {"steps.train.outputs.params.count > '9'", false},
    {"'10' < '9'", true},
    {"'0.93' == '0.930'", false},
    {"'a' < 'b'", true},
    {"'B' < 'a'", true},
    {"'abc' == 'abc'", true},
    {"'abc' != 'abd'", true},
    {"'ab' < 'abc'", true},
    {"'' <= ''", true},
    /* booleans, and the strings "true"/"false" */
    {"true == true", true},
    {"true != false", true},
    {"true == 'true'", true},
    {"'false' == false", true},
    {"steps.train.outputs.params.ok == true", true},
    {"steps.train.outputs.params.ok", true},
    {"steps.train.outputs.params.no", false},
    {"not steps.train.outputs.params.no", true},
    {"true == 1", false},
    {"true == 'yes'", false},
    {"true == 'True'", false},
    {"'true' == 'true'", true},
    /* null */
    {"null == null", true},
    {"null == false", false},
    {"null == ''", false},
    {"null != 0", true},
    {"params.none == null", true},
    /* deep equality */
    {"[1, '2', [true]] == [1, 2, ['true']]", true},
    {"[1, 2] == [1, 2, 3]", false},
    {"[1, 2, 3] == [1, 2]", false},
    {"[1, 2] == [2, 1]", false},
    {"[] == []", true},
    {"[] != [[]]", true},
    {"item.nested == item.nested", true},
    {"item == params", false},
    {"item.nested.k == [1, 2, null]", false},
    {"steps.shard.outputs.params.rows == ['1', '2']", true},
    {"steps.shard.outputs.params.rows == [1, 2]", true},
    {"steps.train.outputs == steps.shard.outputs", false},
    {"[1] == 1", false},
    {"params == 'x'", false},
    {"params != 'x'", true},
    /* in */
    {"'a' in params.tags", true},
    {"'c' in params.tags", false},
    {"'c' not in params.tags", true},
    {"'a' not in params.tags", false},
    {"2 in ['1', '2']", true},
    {"'2' in [1, 2]", true},
    {"'2' in steps.shard.outputs.params.rows", true},
    {"[1] in [[1], 2]", true},
    {"null in [null]", true},
    {"null in []", false},
    {"run.state in ['running', 'queued']", true},
    {"'iri' in params.name", true},
    {"'xyz' in 'abc'", false},
    {"'' in 'abc'", true},
    {"'n_estimators' in params", true},
    {"'missing' in params", false},
    {"'train' in steps", true},
    {"'nope' not in steps", true},
    {"'prep-data' in steps", true},
    /* comparisons of comparisons need parentheses */
    {"(1 < 2) == true", true},
    {"(1 < 2) == (2 < 1)", false},
    /* names with '-': no binary minus */
    {"params.big-name == 'x'", true},
    {"steps.prep-data.state == 'failed'", true},
    /* short-circuit: the right operand is never evaluated */
    {"false and steps.missing.state", false},
    {"true or steps.missing.state", true},
    {"false and 1", false},
    {"true or 1", true},
    {"params.n_estimators == 100 or steps.missing.state == 'x'", true},
    {"'false' and nope", false},
    {"false or 'true'", true},
    {"false or false or true or nope", true},
    /* a realistic condition */
    {"steps.train.state == 'succeeded' and steps.train.outputs.params.accuracy >= 0.9 and "
     "'model' in steps.train.outputs.artifacts",
     true},
    {"item.n >= 3 and item.name != ''", true},
};

START_TEST(test_conditions)
{
    cJSON *ctx = test_ctx();
    for (size_t i = 0; i < N_ELEMS(bool_cases); i++) {
        struct arena a = ARENA_INIT;
        char msg[256];
        bool got = !bool_cases[i].want;
        struct dsl_expr *e = parse_ok(&a, bool_cases[i].src);
        int rc = dsl_expr_eval_bool(&got, e, ctx, msg, sizeof(msg));
        ck_assert_msg(rc == 0, "%s: %s", bool_cases[i].src, msg);
        ck_assert_msg(got == bool_cases[i].want, "%s: got %d", bool_cases[i].src, got);
        /* dsl_expr_eval agrees, and gives a real boolean */
        cJSON *v = NULL;
        ck_assert_int_eq(dsl_expr_eval(&v, e, ctx, msg, sizeof(msg)), 0);
        ck_assert_msg(cJSON_IsBool(v) || cJSON_IsString(v), "%s", bool_cases[i].src);
        cJSON_Delete(v);
        arena_release(&a);
    }
    cJSON_Delete(ctx);
}
END_TEST

/* --- evaluation errors --------------------------------------------------------- */

static const struct {
    const char *src;
    int rc;
    const char *msg;
} eval_errors[] = {
    {"steps.train.outputs.params.acc", SL_EINVAL, "steps.train.outputs.params.acc is not defined"},
    {"nope", SL_EINVAL, "nope is not defined"},
    {"steps.missing.state", SL_EINVAL, "steps.missing.state is not defined"},
    {"params.name.x", SL_EINVAL,
     "params.name.x is not defined (params.name is a string, not an object)"},
    {"params.tags.x", SL_EINVAL,
     "params.tags.x is not defined (params.tags is a list, not an object)"},
    {"params.none.x.y", SL_EINVAL,
     "params.none.x.y is not defined (params.none is null, not an object)"},
    {"item.n.x", SL_EINVAL, "item.n.x is not defined (item.n is a number, not an object)"},
    {"Params.name", SL_EINVAL, "Params.name is not defined"},
    {"[1, nope]", SL_EINVAL, "nope is not defined"},
    {"nope == 1", SL_EINVAL, "nope is not defined"},
    {"1 == nope", SL_EINVAL, "nope is not defined"},
    {"true and steps.missing.state", SL_EINVAL, "steps.missing.state is not defined"},
    {"false or steps.missing.state", SL_EINVAL, "steps.missing.state is not defined"},
    {"1 and true", SL_ETYPE, "'and' needs booleans, got number"},
    {"true and 'yes'", SL_ETYPE, "'and' needs booleans, got string \"yes\""},
    {"true and 'True'", SL_ETYPE, "'and' needs booleans, got string \"True\""},
    {"true and steps.train.outputs.params.multi", SL_ETYPE,
     "'and' needs booleans, got string \"l1\\nl2\""},
    {"true and 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'", SL_ETYPE,
     "'and' needs booleans, got string \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"..."},
    {"false or null", SL_ETYPE, "'or' needs booleans, got null"},
    {"[] or true", SL_ETYPE, "'or' needs booleans, got list"},
    {"not [1]", SL_ETYPE, "'not' needs a boolean, got list"},
    {"not params", SL_ETYPE, "'not' needs a boolean, got object"},
    {"not 0", SL_ETYPE, "'not' needs a boolean, got number"},
    {"1 < 'abc'", SL_ETYPE, "'<' cannot compare number with string \"abc\""},
    {"steps.train.outputs.params.word >= 0.5", SL_ETYPE,
     "'>=' cannot compare string \"abc\" with number"},
    {"true < false", SL_ETYPE, "'<' cannot compare boolean with boolean"},
    {"[1] >= [0]", SL_ETYPE, "'>=' cannot compare list with list"},
    {"null > 1", SL_ETYPE, "'>' cannot compare null with number"},
    {"params <= 'x'", SL_ETYPE, "'<=' cannot compare object with string \"x\""},
    {"'true' < true", SL_ETYPE, "'<' cannot compare string \"true\" with boolean"},
    {"1 in 2", SL_ETYPE, "'in' needs a list, string or object on the right, got number"},
    {"'x' in null", SL_ETYPE, "'in' needs a list, string or object on the right, got null"},
    {"1 not in 'abc'", SL_ETYPE,
     "'not in' needs a string on the left when the right is a string, got number"},
    {"1 in params", SL_ETYPE,
     "'in' needs a string key on the left when the right is an object, got number"},
    {"['a'] in 'abc'", SL_ETYPE,
     "'in' needs a string on the left when the right is a string, got list"},
};

START_TEST(test_eval_errors)
{
    cJSON *ctx = test_ctx();
    for (size_t i = 0; i < N_ELEMS(eval_errors); i++) {
        struct arena a = ARENA_INIT;
        char msg[256];
        cJSON *sentinel = (cJSON *)&msg, *got = sentinel;
        struct dsl_expr *e = parse_ok(&a, eval_errors[i].src);
        int rc = dsl_expr_eval(&got, e, ctx, msg, sizeof(msg));
        ck_assert_msg(rc == eval_errors[i].rc, "%s: rc %d (%s)", eval_errors[i].src, rc, msg);
        ck_assert_msg(!strcmp(msg, eval_errors[i].msg), "%s: got '%s', want '%s'",
                      eval_errors[i].src, msg, eval_errors[i].msg);
        ck_assert_ptr_eq(got, sentinel);
        arena_release(&a);
    }
    cJSON_Delete(ctx);
}
END_TEST

static const struct {
    const char *src;
    const char *msg;
} condition_errors[] = {
    {"1", "condition needs a boolean, got number"},
    {"params.name", "condition needs a boolean, got string \"iris\""},
    {"'True'", "condition needs a boolean, got string \"True\""},
    {"null", "condition needs a boolean, got null"},
    {"[true]", "condition needs a boolean, got list"},
    {"steps.train.outputs", "condition needs a boolean, got object"},
};

START_TEST(test_condition_errors)
{
    cJSON *ctx = test_ctx();
    for (size_t i = 0; i < N_ELEMS(condition_errors); i++) {
        struct arena a = ARENA_INIT;
        char msg[256];
        bool got = true;
        struct dsl_expr *e = parse_ok(&a, condition_errors[i].src);
        ck_assert_int_eq(dsl_expr_eval_bool(&got, e, ctx, msg, sizeof(msg)), SL_ETYPE);
        ck_assert_str_eq(msg, condition_errors[i].msg);
        ck_assert(got); /* untouched */
        arena_release(&a);
    }
    cJSON_Delete(ctx);
}
END_TEST

START_TEST(test_error_buffers_and_empty_context)
{
    struct arena a = ARENA_INIT;
    struct dsl_expr *e = parse_ok(&a, "params.x");
    cJSON *v = NULL;
    char small[8];
    bool b;

    /* no buffer at all */
    ck_assert_int_eq(dsl_expr_eval(&v, e, NULL, NULL, 0), SL_EINVAL);
    /* a short buffer is truncated but terminated */
    ck_assert_int_eq(dsl_expr_eval(&v, e, NULL, small, sizeof(small)), SL_EINVAL);
    ck_assert_str_eq(small, "params.");
    /* the context may be NULL or not an object: every reference is undefined */
    cJSON *num = cJSON_CreateNumber(1);
    ck_assert_int_eq(dsl_expr_eval(&v, e, num, small, sizeof(small)), SL_EINVAL);
    cJSON_Delete(num);
    ck_assert_ptr_null(v);
    /* expressions without references need no context */
    e = parse_ok(&a, "1 < 2 and 'a' in ['a']");
    ck_assert_int_eq(dsl_expr_eval_bool(&b, e, NULL, NULL, 0), 0);
    ck_assert(b);
    /* a parse error with no error struct */
    ck_assert_int_eq(dsl_expr_parse(&e, &a, "(", NULL), SL_EPARSE);
    ck_assert_int_eq(dsl_expr_parse(&e, &a, NULL, NULL), SL_EINVAL);
    ck_assert_int_eq(dsl_template_parse(NULL, &a, "x", NULL), SL_EINVAL);
    arena_release(&a);
}
END_TEST

START_TEST(test_result_is_a_copy)
{
    struct arena a = ARENA_INIT;
    cJSON *ctx = test_ctx(), *v = NULL;
    struct dsl_expr *e = parse_ok(&a, "steps.train");
    ck_assert_int_eq(dsl_expr_eval(&v, e, ctx, NULL, 0), 0);
    cJSON_DeleteItemFromObject(v, "outputs");
    cJSON_Delete(v);
    e = parse_ok(&a, "steps.train.outputs.params.accuracy >= 0.9");
    bool b = false;
    ck_assert_int_eq(dsl_expr_eval_bool(&b, e, ctx, NULL, 0), 0);
    ck_assert(b);
    cJSON_Delete(ctx);
    arena_release(&a);
}
END_TEST

/* --- parse errors -------------------------------------------------------------- */

static const struct {
    const char *src;
    size_t offset;
    const char *msg;
} parse_errors[] = {
    {"", 0, "empty expression"},
    {"   ", 3, "empty expression"},
    {")", 0, "unexpected ')'"},
    {"a)", 1, "unexpected ')'"},
    {"(a))", 3, "unexpected ')'"},
    {"a b", 2, "unexpected reference 'b'"},
    {"a 1", 2, "unexpected number"},
    {"a -1", 2, "unexpected number"},
    {"a 'x'", 2, "unexpected string"},
    {"a true", 2, "unexpected 'true'"},
    {"in x", 0, "unexpected 'in'"},
    {"or", 0, "unexpected 'or'"},
    {"]", 0, "unexpected ']'"},
    {",", 0, "unexpected ','"},
    {"== 1", 0, "unexpected '=='"},
    {"a and", 5, "expected an expression after 'and'"},
    {"a or  ", 6, "expected an expression after 'or'"},
    {"not", 3, "expected an expression after 'not'"},
    {"a ==", 4, "expected an expression after '=='"},
    {"a >=", 4, "expected an expression after '>='"},
    {"a in", 4, "expected an expression after 'in'"},
    {"a not in", 8, "expected an expression after 'not in'"},
    {"(", 1, "expected an expression after '('"},
    {"[", 1, "expected an expression after '['"},
    {"[1,", 3, "expected an expression after ','"},
    {"(a and)", 6, "unexpected ')' after 'and'"},
    {"a and or b", 6, "unexpected 'or' after 'and'"},
    {"a == not b", 5, "unexpected 'not' after '=='"},
    {"()", 1, "unexpected ')' after '('"},
    {"[1,]", 3, "unexpected ']' after ','"},
    {"[,]", 1, "unexpected ',' after '['"},
    {"(a", 0, "unclosed '('"},
    {"((a)", 0, "unclosed '('"},
    {"x and (a or (b)", 6, "unclosed '('"},
    {"[1, 2", 0, "unclosed '['"},
    {"(a b)", 3, "expected ')', got reference 'b'"},
    {"(a ]", 3, "expected ')', got ']'"},
    {"[1 2]", 3, "expected ',' or ']', got number"},
    {"[1 )", 3, "expected ',' or ']', got ')'"},
    {"a not b", 6, "expected 'in' after 'not'"},
    {"a not", 5, "expected 'in' after 'not'"},
    {"a < b < c", 6, "comparison operators cannot be chained"},
    {"a == b == c", 7, "comparison operators cannot be chained"},
    {"a == b not in c", 7, "comparison operators cannot be chained"},
    {"a in b in c", 7, "comparison operators cannot be chained"},
    {"1abc", 0, "invalid number"},
    {"1.", 0, "invalid number"},
    {"1.x", 0, "invalid number"},
    {"1e", 0, "invalid number"},
    {"1e+", 0, "invalid number"},
    {"a == 1.2.3", 5, "invalid number"},
    {"1_000", 0, "invalid number"},
    {"2-1", 0, "invalid number"},
    {"1e999", 0, "number out of range"},
    {"-1e400", 0, "number out of range"},
    {"\"abc", 0, "unterminated string"},
    {"a == 'x", 5, "unterminated string"},
    {"'a\\", 0, "unterminated string"},
    {"'a\\'", 0, "unterminated string"},
    {"\"a\\x\"", 2, "invalid escape '\\x' in string"},
    {"'\\u0041'", 1, "invalid escape '\\u' in string"},
    {"\"a\\ b\"", 2, "invalid escape in string"},
    {"true.x", 0, "keyword 'true' cannot start a reference"},
    {"a and not.b", 6, "keyword 'not' cannot start a reference"},
    {"steps.", 6, "expected a name after '.'"},
    {"steps.1a", 6, "expected a name after '.'"},
    {"a..b", 2, "expected a name after '.'"},
    {"steps.-x", 6, "expected a name after '.'"},
    {"a . b", 2, "unexpected character '.'"},
    {".5", 0, "unexpected character '.'"},
    {"a = b", 2, "unexpected '=' (use '==' to compare)"},
    {"!a", 0, "unexpected '!' (use 'not' to negate)"},
    {"a && b", 2, "unexpected '&' (use 'and')"},
    {"a || b", 2, "unexpected '|' (use 'or')"},
    {"a - b", 2, "unexpected '-' (there is no minus operator; '-' is part of names)"},
    {"-a", 0, "unexpected '-' (there is no minus operator; '-' is part of names)"},
    {"a }", 2, "unexpected '}'"},
    {"a }}", 2, "unexpected '}'"},
    {"{{ a }}", 0, "unexpected character '{'"},
    {"a # b", 2, "unexpected character '#'"},
    {"a + b", 2, "unexpected character '+'"},
    {"a\x01", 1, "unexpected byte 0x01"},
    {"\xc3\xa9t\xc3\xa9", 0, "unexpected byte 0xc3"},
    {"a\x7f", 1, "unexpected byte 0x7f"},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b", 51, "unexpected reference 'b'"},
    {"a bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", 2,
     "unexpected reference 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb...'"},
};

START_TEST(test_parse_errors)
{
    for (size_t i = 0; i < N_ELEMS(parse_errors); i++) {
        struct arena a = ARENA_INIT;
        struct dsl_expr *sentinel = (struct dsl_expr *)&a, *e = sentinel;
        struct dsl_expr_error err = {0};
        int rc = dsl_expr_parse(&e, &a, parse_errors[i].src, &err);
        ck_assert_msg(rc == SL_EPARSE, "'%s' parsed", parse_errors[i].src);
        ck_assert_msg(!strcmp(err.msg, parse_errors[i].msg), "'%s': got '%s', want '%s'",
                      parse_errors[i].src, err.msg, parse_errors[i].msg);
        ck_assert_msg(err.offset == parse_errors[i].offset, "'%s': offset %zu, want %zu",
                      parse_errors[i].src, err.offset, parse_errors[i].offset);
        ck_assert_ptr_eq(e, sentinel);
        arena_release(&a);
    }
}
END_TEST

/* Repeats unit n times around middle: prefix^n middle suffix^n. */
static char *nest(const char *prefix, const char *middle, const char *suffix, int n)
{
    struct strbuf sb = STRBUF_INIT;
    for (int i = 0; i < n; i++)
        strbuf_addstr(&sb, prefix);
    strbuf_addstr(&sb, middle);
    for (int i = 0; i < n; i++)
        strbuf_addstr(&sb, suffix);
    return strbuf_detach(&sb, NULL);
}

START_TEST(test_depth_limit)
{
    /* levels: how many nesting levels one prefix opens */
    static const struct {
        const char *prefix, *suffix;
        int levels;
    } shapes[] = {
        {"(", ")", 1}, {"[", "]", 1}, {"not ", "", 1}, {"(not ", ")", 2}, {"[(", ")]", 2},
    };
    struct arena a = ARENA_INIT;
    struct dsl_expr *e;
    struct dsl_expr_error err;
    cJSON *v;

    for (size_t i = 0; i < N_ELEMS(shapes); i++) {
        int ok_n = DSL_EXPR_MAX_DEPTH / shapes[i].levels;
        char *src = nest(shapes[i].prefix, "true", shapes[i].suffix, ok_n);
        ck_assert_msg(dsl_expr_parse(&e, &a, src, &err) == 0, "%s: %s", src, err.msg);
        ck_assert_int_eq(dsl_expr_eval(&v, e, NULL, NULL, 0), 0);
        cJSON_Delete(v);
        free(src);

        src = nest(shapes[i].prefix, "true", shapes[i].suffix, ok_n + 1);
        ck_assert_int_eq(dsl_expr_parse(&e, &a, src, &err), SL_EPARSE);
        ck_assert_str_eq(err.msg, "expression nested too deeply (limit 64)");
        /* the first token of the level past the limit */
        ck_assert_uint_eq(err.offset, (size_t)ok_n * strlen(shapes[i].prefix));
        free(src);
    }

    /* Thousands of levels only cost the first 65. */
    char *src = nest("(", "1", ")", 5000);
    ck_assert_int_eq(dsl_expr_parse(&e, &a, src, &err), SL_EPARSE);
    ck_assert_uint_eq(err.offset, 64);
    free(src);
    arena_release(&a);
}
END_TEST

START_TEST(test_long_flat_expressions)
{
    struct arena a = ARENA_INIT;
    struct dsl_expr *e;
    struct dsl_expr_error err;
    bool b = false;
    cJSON *v;

    /* n-ary chains: evaluation does not recurse per operand */
    char *src = nest("true and ", "true", "", 1800);
    ck_assert_int_eq(dsl_expr_parse(&e, &a, src, &err), 0);
    ck_assert_int_eq(dsl_expr_eval_bool(&b, e, NULL, NULL, 0), 0);
    ck_assert(b);
    free(src);
    src = nest("false or ", "true", "", 1800);
    ck_assert_int_eq(dsl_expr_parse(&e, &a, src, &err), 0);
    ck_assert_int_eq(dsl_expr_eval_bool(&b, e, NULL, NULL, 0), 0);
    ck_assert(b);
    free(src);
    src = nest("", "[", "1,", 5000);
    src[strlen(src) - 1] = ']';
    ck_assert_int_eq(dsl_expr_parse(&e, &a, src, &err), 0);
    ck_assert_int_eq(dsl_expr_eval(&v, e, NULL, NULL, 0), 0);
    ck_assert_int_eq(cJSON_GetArraySize(v), 5000);
    cJSON_Delete(v);
    free(src);

    /* the length limit */
    src = xmalloc(DSL_EXPR_MAX_LEN + 2);
    memset(src, ' ', DSL_EXPR_MAX_LEN + 1);
    src[DSL_EXPR_MAX_LEN + 1] = '\0';
    src[0] = 'a';
    ck_assert_int_eq(dsl_expr_parse(&e, &a, src, &err), SL_EPARSE);
    ck_assert_str_eq(err.msg, "expression too long (limit 16384 bytes)");
    ck_assert_uint_eq(err.offset, DSL_EXPR_MAX_LEN);
    src[DSL_EXPR_MAX_LEN] = '\0';
    ck_assert_int_eq(dsl_expr_parse(&e, &a, src, &err), 0);
    free(src);
    arena_release(&a);
}
END_TEST

/* A context value nested deeper than the evaluator walks: errors, no crash. */
START_TEST(test_deep_context_values)
{
    struct arena a = ARENA_INIT;
    cJSON *ctx = cJSON_CreateObject(), *v = NULL;
    cJSON *deep = cJSON_CreateArray(), *cur = deep;
    char msg[128], *out = NULL;
    struct dsl_template *t;
    bool b;
    for (int i = 0; i < 2000; i++) {
        cJSON *inner = cJSON_CreateArray();
        cJSON_AddItemToArray(cur, inner);
        cur = inner;
    }
    cJSON_AddItemToObject(ctx, "item", deep);
    cJSON *shallow = cJSON_CreateArray();
    cJSON_AddItemToArray(shallow, cJSON_CreateArray());
    cJSON_AddItemToObject(ctx, "shallow", shallow);

    struct dsl_expr *e = parse_ok(&a, "item == item");
    ck_assert_int_eq(dsl_expr_eval(&v, e, ctx, msg, sizeof(msg)), SL_EINVAL);
    ck_assert_str_eq(msg, "value nested too deeply to compare (limit 512)");
    /* inequality is found before the limit */
    e = parse_ok(&a, "item == shallow");
    ck_assert_int_eq(dsl_expr_eval_bool(&b, e, ctx, msg, sizeof(msg)), 0);
    ck_assert(!b);
    ck_assert_int_eq(dsl_template_parse(&t, &a, "{{ item }}", NULL), 0);
    ck_assert_int_eq(dsl_template_render(&out, t, ctx, msg, sizeof(msg)), SL_EINVAL);
    ck_assert_str_eq(msg, "value nested too deeply to render (limit 512)");
    ck_assert_int_eq(dsl_template_parse(&t, &a, "{{ shallow }}", NULL), 0);
    ck_assert_int_eq(dsl_template_render(&out, t, ctx, msg, sizeof(msg)), 0);
    ck_assert_str_eq(out, "[[]]");
    free(out);
    cJSON_Delete(ctx);
    arena_release(&a);
}
END_TEST

/* --- references ---------------------------------------------------------------- */

struct ref_log {
    const char *src;
    struct strbuf sb;
    int stop_after; /* return 7 from this call (1-based), 0 = never */
    int calls;
};

/* Logs "parts.joined@offset" and checks that offset and len locate exactly
 * that text in the source. */
static int on_ref(void *ctx, const struct dsl_ref *ref)
{
    struct ref_log *log = ctx;
    struct strbuf text = STRBUF_INIT;
    ck_assert_uint_ge(ref->n_parts, 1);
    for (size_t i = 0; i < ref->n_parts; i++) {
        if (i)
            strbuf_addch(&text, '.');
        strbuf_addstr(&text, ref->parts[i]);
    }
    ck_assert_uint_eq(ref->len, text.len);
    ck_assert_uint_le(ref->offset + ref->len, strlen(log->src));
    ck_assert(!memcmp(log->src + ref->offset, text.buf, text.len));
    strbuf_addf(&log->sb, "%s%s@%zu", log->sb.len ? " " : "", text.buf, ref->offset);
    strbuf_release(&text);
    return ++log->calls == log->stop_after ? 7 : 0;
}

static int on_ref_capture(void *ctx, const struct dsl_ref *ref)
{
    *(const struct dsl_ref **)ctx = ref;
    return 0;
}

static const struct {
    bool is_template;
    const char *src;
    const char *want;
} ref_cases[] = {
    {false, "steps.train.state == \"succeeded\" and params.x in [item, run.id]",
     "steps.train.state@0 params.x@37 item@50 run.id@56"},
    {false, "false and steps.missing.state", "steps.missing.state@10"},
    {false, "not (a or b.c-d) and [1, [e]] == f", "a@5 b.c-d@10 e@26 f@33"},
    {false, "1 == 2", ""},
    {false, "steps.in.not.and", "steps.in.not.and@0"},
    {true, "x {{ a.b }} y {{ c or d.e-f }}", "a.b@5 c@17 d.e-f@22"},
    {true, "no refs {{ 'at all' }}", ""},
    {true, "{{item}}{{ item.name }}", "item@2 item.name@11"},
};

START_TEST(test_refs)
{
    for (size_t i = 0; i < N_ELEMS(ref_cases); i++) {
        struct arena a = ARENA_INIT;
        struct ref_log log = {.src = ref_cases[i].src, .sb = STRBUF_INIT};
        struct dsl_expr_error err;
        int rc;
        if (ref_cases[i].is_template) {
            struct dsl_template *t;
            ck_assert_int_eq(dsl_template_parse(&t, &a, ref_cases[i].src, &err), 0);
            rc = dsl_template_each_ref(t, on_ref, &log);
        } else {
            rc = dsl_expr_each_ref(parse_ok(&a, ref_cases[i].src), on_ref, &log);
        }
        ck_assert_int_eq(rc, 0);
        ck_assert_msg(!strcmp(log.sb.buf, ref_cases[i].want), "%s: got '%s'", ref_cases[i].src,
                      log.sb.buf);
        strbuf_release(&log.sb);
        arena_release(&a);
    }
}
END_TEST

START_TEST(test_refs_stop_and_parts)
{
    struct arena a = ARENA_INIT;
    const char *src = "a or b or c";
    struct ref_log log = {.src = src, .sb = STRBUF_INIT, .stop_after = 2};
    ck_assert_int_eq(dsl_expr_each_ref(parse_ok(&a, src), on_ref, &log), 7);
    ck_assert_int_eq(log.calls, 2);
    ck_assert_str_eq(log.sb.buf, "a@0 b@5");
    strbuf_release(&log.sb);

    struct dsl_template *t;
    src = "{{ a }} {{ b }} {{ c }}";
    log = (struct ref_log){.src = src, .sb = STRBUF_INIT, .stop_after = 1};
    ck_assert_int_eq(dsl_template_parse(&t, &a, src, NULL), 0);
    ck_assert_int_eq(dsl_template_each_ref(t, on_ref, &log), 7);
    ck_assert_int_eq(log.calls, 1);
    strbuf_release(&log.sb);

    /* the parts of a reference outlive the source text */
    static const char *const want[] = {"steps", "train", "outputs", "params", "accuracy"};
    char *copy = xstrdup("1 <= steps.train.outputs.params.accuracy");
    struct dsl_expr *e = parse_ok(&a, copy);
    memset(copy, 'x', strlen(copy));
    free(copy);
    const struct dsl_ref *ref = NULL;
    ck_assert_int_eq(dsl_expr_each_ref(e, on_ref_capture, &ref), 0);
    ck_assert_ptr_nonnull(ref);
    ck_assert_uint_eq(ref->n_parts, N_ELEMS(want));
    for (size_t i = 0; i < N_ELEMS(want); i++)
        ck_assert_str_eq(ref->parts[i], want[i]);
    ck_assert_uint_eq(ref->offset, 5);
    ck_assert_uint_eq(ref->len, strlen("steps.train.outputs.params.accuracy"));
    arena_release(&a);
}
END_TEST

/* --- templates ----------------------------------------------------------------- */

static const struct {
    const char *src;
    const char *want;
} render_cases[] = {
    {"", ""},
    {"plain text", "plain text"},
    {"{{params.name}}", "iris"},
    {"{{ params.name }}-{{ run.id }}", "iris-r-1"},
    {"{{params.name}}{{params.name}}", "irisiris"},
    {"  {{ params.name }}\n", "  iris\n"},
    {"python train.py --n {{ params.n_estimators }} --t {{ params.threshold }}",
     "python train.py --n 100 --t 0.9"},
    {"{{ steps.shard.outputs.params.rows }}", "[\"1\",\"2\"]"},
    {"rows={{ steps.shard.outputs.params.rows }};", "rows=[\"1\",\"2\"];"},
    {"{{ item.nested }}", "{\"k\":[1,2,{\"z\":null}]}"},
    {"{{ steps.train.outputs.artifacts }}", "{\"model\":{\"uri\":\"s3://b/m\"}}"},
    {"{{ ['a', 1, true, null, 'q\"\\\\', 'l\\n'] }}", "[\"a\",1,true,null,\"q\\\"\\\\\",\"l\\n\"]"},
    {"{{ [] }}", "[]"},
    {"{{ steps.train.outputs.params.multi }}", "l1\nl2"},
    {"{{ true }}/{{ 1 == 2 }}", "true/false"},
    {"{{ steps.train.outputs.params.accuracy >= 0.9 }}", "true"},
    /* numbers: shortest form that reads back exactly */
    {"{{ 1 }} {{ 100 }} {{ 1.5 }} {{ 2.50 }} {{ -3 }}", "1 100 1.5 2.5 -3"},
    {"{{ 0.1 }} {{ 1e-7 }} {{ 123456789012 }} {{ -0.0 }}", "0.1 1e-07 123456789012 0"},
    {"{{ 9007199254740992 }} {{ -9007199254740991 }}", "9007199254740992 -9007199254740991"},
    {"{{ 1e16 }} {{ 9007199254740993 }} {{ 1e17 }} {{ 1e21 }}",
     "1e+16 9007199254740992 1e+17 1e+21"},
    {"{{ params.f }} {{ 0.30000000000000004 }}", "0.30000000000000004 0.30000000000000004"},
    {"{{ 1.7976931348623157e308 }} {{ 5e-324 }}", "1.7976931348623157e+308 5e-324"},
    {"{{ [0.1, 1e100] }}", "[0.1,1e+100]"},
    /* escapes and literal braces */
    {"{{\"{{\"}} literal }}", "{{ literal }}"},
    {"a }} b } c { d", "a }} b } c { d"},
    {"{{ '}}' }}", "}}"},
    {"{{ \"{{ x }}\" }}", "{{ x }}"},
    {"{ {{ params.name }} }", "{ iris }"},
    {"{{ 'single' }} and {{ \"double\" }}", "single and double"},
    {"{{\nparams.name\n}}", "iris"},
};

START_TEST(test_render)
{
    cJSON *ctx = test_ctx();
    for (size_t i = 0; i < N_ELEMS(render_cases); i++) {
        struct arena a = ARENA_INIT;
        struct dsl_template *t = NULL;
        struct dsl_expr_error err = {0};
        char msg[256], *out = NULL;
        ck_assert_msg(dsl_template_parse(&t, &a, render_cases[i].src, &err) == 0, "%s: at %zu: %s",
                      render_cases[i].src, err.offset, err.msg);
        ck_assert_msg(dsl_template_render(&out, t, ctx, msg, sizeof(msg)) == 0, "%s: %s",
                      render_cases[i].src, msg);
        ck_assert_msg(!strcmp(out, render_cases[i].want), "%s: got '%s', want '%s'",
                      render_cases[i].src, out, render_cases[i].want);
        free(out);
        arena_release(&a);
    }
    cJSON_Delete(ctx);
}
END_TEST

static const struct {
    const char *src;
    size_t offset;
    const char *msg;
} template_parse_errors[] = {
    {"{{", 0, "unterminated '{{'"},
    {"a {{ b", 2, "unterminated '{{'"},
    {"a {{ b }} c {{ d", 12, "unterminated '{{'"},
    {"x {{ \"}}\"", 2, "unterminated '{{'"},
    {"{{ }}", 3, "expected an expression after '{{'"},
    {"{{}}", 2, "expected an expression after '{{'"},
    {"{{ a and }}", 9, "expected an expression after 'and'"},
    {"{{ a c }}", 5, "unexpected reference 'c'"},
    {"{{ a ) }}", 5, "unexpected ')'"},
    {"{{ a }", 5, "unexpected '}'"},
    {"{{ a } }}", 5, "unexpected '}'"},
    {"{{ \"abc }}", 3, "unterminated string"},
    {"{{ (a }}", 3, "unclosed '('"},
    {"{{ a < b < c }}", 9, "comparison operators cannot be chained"},
    {"hello {{ steps.x. }}", 17, "expected a name after '.'"},
    {"ok {{ a }} then {{ a = 1 }}", 21, "unexpected '=' (use '==' to compare)"},
    {"{{{ a }}}", 2, "unexpected character '{'"},
};

START_TEST(test_template_parse_errors)
{
    for (size_t i = 0; i < N_ELEMS(template_parse_errors); i++) {
        struct arena a = ARENA_INIT;
        struct dsl_template *sentinel = (struct dsl_template *)&a, *t = sentinel;
        struct dsl_expr_error err = {0};
        int rc = dsl_template_parse(&t, &a, template_parse_errors[i].src, &err);
        ck_assert_msg(rc == SL_EPARSE, "'%s' parsed", template_parse_errors[i].src);
        ck_assert_msg(!strcmp(err.msg, template_parse_errors[i].msg), "'%s': got '%s', want '%s'",
                      template_parse_errors[i].src, err.msg, template_parse_errors[i].msg);
        ck_assert_msg(err.offset == template_parse_errors[i].offset, "'%s': offset %zu, want %zu",
                      template_parse_errors[i].src, err.offset, template_parse_errors[i].offset);
        ck_assert_ptr_eq(t, sentinel);
        arena_release(&a);
    }
}
END_TEST

static const struct {
    const char *src;
    int rc;
    const char *msg;
} render_errors[] = {
    {"{{ params.none }}", SL_ETYPE, "'params.none' is null, which cannot be rendered"},
    {"x={{ null }}", SL_ETYPE, "'null' is null, which cannot be rendered"},
    {"{{ item.nested.k == item.nested.k and params.none }}", SL_ETYPE,
     "'and' needs booleans, got null"},
    {"{{   params.none   or   params.none   or   params.none   or   params.none  }}", SL_ETYPE,
     "'or' needs booleans, got null"},
    {"a {{ steps.x.state }}", SL_EINVAL, "steps.x.state is not defined"},
    {"{{ params.name }} {{ 1 and 2 }}", SL_ETYPE, "'and' needs booleans, got number"},
    {"{{ steps.prep-data.outputs.params.rows_long_name_here_and_longer }}", SL_EINVAL,
     "steps.prep-data.outputs.params.rows_long_name_here_and_longer is not defined"},
};

START_TEST(test_render_errors)
{
    cJSON *ctx = test_ctx();
    for (size_t i = 0; i < N_ELEMS(render_errors); i++) {
        struct arena a = ARENA_INIT;
        struct dsl_template *t = NULL;
        char msg[256], *sentinel = msg, *out = sentinel;
        ck_assert_int_eq(dsl_template_parse(&t, &a, render_errors[i].src, NULL), 0);
        int rc = dsl_template_render(&out, t, ctx, msg, sizeof(msg));
        ck_assert_msg(rc == render_errors[i].rc, "%s: rc %d", render_errors[i].src, rc);
        ck_assert_msg(!strcmp(msg, render_errors[i].msg), "%s: got '%s'", render_errors[i].src,
                      msg);
        ck_assert_ptr_eq(out, sentinel);
        arena_release(&a);
    }

    /* a long null expression is quoted shortened */
    struct arena a = ARENA_INIT;
    struct dsl_template *t;
    char msg[256], *out;
    cJSON_AddNullToObject(cJSON_GetObjectItem(ctx, "params"),
                          "a_very_long_parameter_name_that_is_null_too");
    ck_assert_int_eq(dsl_template_parse(
                         &t, &a, "{{ params.a_very_long_parameter_name_that_is_null_too }}", NULL),
                     0);
    ck_assert_int_eq(dsl_template_render(&out, t, ctx, msg, sizeof(msg)), SL_ETYPE);
    ck_assert_str_eq(msg, "'params.a_very_long_parameter_name_that_i...' is null, which cannot be "
                          "rendered");
    /* a non-finite number put into the context by code cannot be rendered */
    cJSON_AddNumberToObject(cJSON_GetObjectItem(ctx, "params"), "inf", 1e308 * 10);
    ck_assert_int_eq(dsl_template_parse(&t, &a, "{{ params.inf }}", NULL), 0);
    ck_assert_int_eq(dsl_template_render(&out, t, ctx, msg, sizeof(msg)), SL_ETYPE);
    ck_assert_str_eq(msg, "cannot render a non-finite number");
    arena_release(&a);
    cJSON_Delete(ctx);
}
END_TEST

START_TEST(test_template_shapes)
{
    static const struct {
        const char *src;
        bool literal;
        bool single;
    } cases[] = {
        {"", true, false},
        {"abc", true, false},
        {"{{\"{{\"}}", true, false},
        {"{{ 'x' }}", true, false},
        {"a {{ 'b' }} c", true, false},
        {"{{ a }}", false, true},
        {"{{a}}", false, true},
        {"{{ (a) }}", false, true},
        {"{{ 1 }}", false, true},
        {" {{ a }}", false, false},
        {"{{ a }}\n", false, false},
        {"{{ a }}{{ b }}", false, false},
        {"{{ a }}{{ '' }}", false, true},
    };
    cJSON *ctx = test_ctx();
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct arena a = ARENA_INIT;
        struct dsl_template *t;
        ck_assert_int_eq(dsl_template_parse(&t, &a, cases[i].src, NULL), 0);
        ck_assert_msg(dsl_template_is_literal(t) == cases[i].literal, "%s", cases[i].src);
        ck_assert_msg((dsl_template_single_expr(t) != NULL) == cases[i].single, "%s", cases[i].src);
        arena_release(&a);
    }

    /* a single expression keeps its type: the fan-in list stays a list */
    struct arena a = ARENA_INIT;
    struct dsl_template *t;
    cJSON *v = NULL;
    ck_assert_int_eq(dsl_template_parse(&t, &a, "{{ steps.shard.outputs.params.rows }}", NULL), 0);
    ck_assert_int_eq(dsl_expr_eval(&v, dsl_template_single_expr(t), ctx, NULL, 0), 0);
    ck_assert(cJSON_IsArray(v));
    ck_assert_int_eq(cJSON_GetArraySize(v), 2);
    cJSON_Delete(v);

    /* a literal template renders to its text, even with no context */
    char *out;
    ck_assert_int_eq(dsl_template_parse(&t, &a, "echo {{\"{{\"}}x}}", NULL), 0);
    ck_assert_int_eq(dsl_template_render(&out, t, NULL, NULL, 0), 0);
    ck_assert_str_eq(out, "echo {{x}}");
    free(out);

    /* many segments */
    char *src = nest("{{ params.name }},", "", "", 2000);
    ck_assert_int_eq(dsl_template_parse(&t, &a, src, NULL), 0);
    ck_assert_int_eq(dsl_template_render(&out, t, ctx, NULL, 0), 0);
    ck_assert_uint_eq(strlen(out), 2000 * 5);
    free(out);
    free(src);

    /* the length limit */
    src = xmalloc(DSL_TEMPLATE_MAX_LEN + 2);
    memset(src, 'x', DSL_TEMPLATE_MAX_LEN + 1);
    src[DSL_TEMPLATE_MAX_LEN + 1] = '\0';
    struct dsl_expr_error err;
    ck_assert_int_eq(dsl_template_parse(&t, &a, src, &err), SL_EPARSE);
    ck_assert_str_eq(err.msg, "template too long (limit 1048576 bytes)");
    ck_assert_uint_eq(err.offset, DSL_TEMPLATE_MAX_LEN);
    src[DSL_TEMPLATE_MAX_LEN] = '\0';
    ck_assert_int_eq(dsl_template_parse(&t, &a, src, &err), 0);
    ck_assert(dsl_template_is_literal(t));
    free(src);
    arena_release(&a);
    cJSON_Delete(ctx);
}
END_TEST

/* --- robustness ---------------------------------------------------------------- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    /* xorshift64*: deterministic, so a failure reproduces */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ULL) >> 32) % n;
}

static const char *const corpus[] = {
    "steps.train.state == 'succeeded' and steps.train.outputs.params.accuracy >= 0.9",
    "not (params.flag or false) and 'a' in params.tags",
    "[1, 'two', [true, null], item.nested] == item.nested.k",
    "run.state not in ['failed', \"cancelled\"] or item.n < -1.5e3",
    "{{ params.name }}-{{ steps.shard.outputs.params.rows }} {{\"{{\"}}",
    "echo {{ item.name }} > /tmp/{{ run.id }}.txt",
    "(((a)))",
    "'esc\\'aped\\n' in \"str\\\\ing\"",
};

static const char *const fragments[] = {
    "(",
    ")",
    "[",
    "]",
    ",",
    " and ",
    " or ",
    "not ",
    " in ",
    " not in ",
    "==",
    "!=",
    "<",
    ">=",
    "params.name",
    "item",
    "steps.train.outputs.params.accuracy",
    "1",
    "-2.5e3",
    "'s'",
    "\"q\\\"\"",
    "true",
    "null",
    "{{",
    "}}",
    " ",
    "'",
    "\\",
    ".",
    "-",
    "}",
    "{",
    "\n",
};

/* Parses src as an expression and as a template; whatever parses is evaluated,
 * rendered and walked. Only the documented outcomes are allowed. */
static void check_any(const char *src, const cJSON *ctx)
{
    struct arena a = ARENA_INIT;
    struct dsl_expr *e;
    struct dsl_template *t;
    struct dsl_expr_error err;
    size_t len = strlen(src);
    char msg[200];
    int rc;

    memset(&err, 0, sizeof(err));
    rc = dsl_expr_parse(&e, &a, src, &err);
    if (rc == 0) {
        cJSON *v = NULL;
        bool b;
        struct ref_log log = {.src = src, .sb = STRBUF_INIT};
        rc = dsl_expr_eval(&v, e, ctx, msg, sizeof(msg));
        ck_assert_msg(rc == 0 || rc == SL_EINVAL || rc == SL_ETYPE, "%s: rc %d", src, rc);
        ck_assert_msg(rc == 0 ? v != NULL : msg[0] != '\0', "%s", src);
        cJSON_Delete(v);
        rc = dsl_expr_eval_bool(&b, e, ctx, msg, sizeof(msg));
        ck_assert_msg(rc == 0 || rc == SL_EINVAL || rc == SL_ETYPE, "%s: rc %d", src, rc);
        ck_assert_int_eq(dsl_expr_each_ref(e, on_ref, &log), 0);
        strbuf_release(&log.sb);
    } else {
        ck_assert_msg(rc == SL_EPARSE, "%s: rc %d", src, rc);
        ck_assert_msg(err.msg[0] != '\0', "%s: no message", src);
        ck_assert_msg(err.offset <= len, "%s: offset %zu", src, err.offset);
    }

    memset(&err, 0, sizeof(err));
    rc = dsl_template_parse(&t, &a, src, &err);
    if (rc == 0) {
        char *out = NULL;
        struct ref_log log = {.src = src, .sb = STRBUF_INIT};
        rc = dsl_template_render(&out, t, ctx, msg, sizeof(msg));
        ck_assert_msg(rc == 0 || rc == SL_EINVAL || rc == SL_ETYPE, "%s: rc %d", src, rc);
        ck_assert_msg(rc == 0 ? out != NULL : msg[0] != '\0', "%s", src);
        if (dsl_template_is_literal(t))
            ck_assert_int_eq(rc, 0);
        free(out);
        ck_assert_int_eq(dsl_template_each_ref(t, on_ref, &log), 0);
        strbuf_release(&log.sb);
    } else {
        ck_assert_msg(rc == SL_EPARSE, "%s: rc %d", src, rc);
        ck_assert_msg(err.msg[0] != '\0', "%s: no message", src);
        ck_assert_msg(err.offset <= len, "%s: offset %zu", src, err.offset);
    }
    arena_release(&a);
}

START_TEST(test_random_bytes)
{
    cJSON *ctx = test_ctx();
    char buf[64];
    rng_state = 0x9e3779b97f4a7c15ULL;
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = rnd(sizeof(buf));
        for (size_t i = 0; i < n; i++) {
            /* mostly the language's own characters, sometimes any byte */
            static const char alphabet[] = "()[],.'\"\\{}=!<>-_ \tabnotrueflsi019eE+";
            buf[i] = rnd(4) ? alphabet[rnd(sizeof(alphabet) - 1)] : (char)(rnd(255) + 1);
        }
        buf[n] = '\0';
        check_any(buf, ctx);
    }
    cJSON_Delete(ctx);
}
END_TEST

START_TEST(test_random_tokens)
{
    cJSON *ctx = test_ctx();
    struct strbuf sb = STRBUF_INIT;
    rng_state = 0x2545f4914f6cdd1dULL;
    for (int iter = 0; iter < 20000; iter++) {
        strbuf_reset(&sb);
        for (uint32_t n = rnd(16); n > 0; n--)
            strbuf_addstr(&sb, fragments[rnd(N_ELEMS(fragments))]);
        check_any(sb.buf, ctx);
    }
    strbuf_release(&sb);
    cJSON_Delete(ctx);
}
END_TEST

START_TEST(test_mutated_valid_input)
{
    cJSON *ctx = test_ctx();
    struct strbuf sb = STRBUF_INIT;
    rng_state = 0x853c49e6748fea9bULL;
    for (size_t c = 0; c < N_ELEMS(corpus); c++)
        check_any(corpus[c], ctx);
    for (int iter = 0; iter < 20000; iter++) {
        const char *base = corpus[rnd(N_ELEMS(corpus))];
        strbuf_reset(&sb);
        strbuf_addstr(&sb, base);
        for (uint32_t m = rnd(4) + 1; m > 0; m--) {
            size_t at = rnd((uint32_t)sb.len + 1);
            char *rest = xstrdup(sb.buf + at);
            sb.len = at;
            sb.buf[at] = '\0';
            switch (rnd(4)) {
            case 0: { /* delete up to four bytes */
                size_t n = rnd(4) + 1, rest_len = strlen(rest);
                strbuf_addstr(&sb, rest + (n < rest_len ? n : rest_len));
                break;
            }
            case 1: /* insert a fragment */
                strbuf_addstr(&sb, fragments[rnd(N_ELEMS(fragments))]);
                strbuf_addstr(&sb, rest);
                break;
            case 2: /* replace a byte with any byte */
                strbuf_addch(&sb, (char)(rnd(255) + 1));
                strbuf_addstr(&sb, rest[0] ? rest + 1 : rest);
                break;
            default: /* cut here */
                break;
            }
            free(rest);
        }
        check_any(sb.buf, ctx);
    }
    strbuf_release(&sb);
    cJSON_Delete(ctx);
}
END_TEST

Suite *suite_dsl_expr(void)
{
    Suite *s = suite_create("dsl_expr");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_values);
    tcase_add_test(tc, test_conditions);
    tcase_add_test(tc, test_eval_errors);
    tcase_add_test(tc, test_condition_errors);
    tcase_add_test(tc, test_error_buffers_and_empty_context);
    tcase_add_test(tc, test_result_is_a_copy);
    tcase_add_test(tc, test_parse_errors);
    tcase_add_test(tc, test_depth_limit);
    tcase_add_test(tc, test_long_flat_expressions);
    tcase_add_test(tc, test_deep_context_values);
    tcase_add_test(tc, test_refs);
    tcase_add_test(tc, test_refs_stop_and_parts);
    tcase_add_test(tc, test_render);
    tcase_add_test(tc, test_template_parse_errors);
    tcase_add_test(tc, test_render_errors);
    tcase_add_test(tc, test_template_shapes);
    suite_add_tcase(s, tc);

    TCase *fuzz = tcase_create("robustness");
    tcase_set_timeout(fuzz, 120);
    tcase_add_test(fuzz, test_random_bytes);
    tcase_add_test(fuzz, test_random_tokens);
    tcase_add_test(fuzz, test_mutated_valid_input);
    suite_add_tcase(s, fuzz);
    return s;
}
