/*
 * tests/unit/worker/check_expand.c - $(NAME) expansion: Kubernetes' rules case by case.
 *
 * The expected outputs follow the kubelet's expansion tests (third_party/forked/golang/
 * expansion/expand_test.go), with the variables VAR_A, VAR_B, VAR_C, VAR_REF, VAR_EMPTY
 * defined below, plus the cases the worker relies on: the run and attempt directories.
 */
#include "worker/expand.h"
#include "common/strbuf.h"
#include "tests/testutil.h"

#include <check.h>
#include <string.h>

static const char *const vars[][2] = {
    {"VAR_A", "A"},
    {"VAR_B", "B"},
    {"VAR_C", "C"},
    {"VAR_REF", "$(VAR_A)"}, /* a value is never expanded again */
    {"VAR_EMPTY", ""},
    {"SLUICE_RUN_DIR", "/w/etl/r1"},
    {"SLUICE_ATTEMPT_DIR", "/w/etl/r1/.attempts/load/1"},
};

static const char *lookup(void *data, const char *name, size_t len)
{
    int *calls = data;
    (*calls)++;
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        if (strlen(vars[i][0]) == len && !memcmp(vars[i][0], name, len))
            return vars[i][1];
    return NULL;
}

START_TEST(test_expand_table)
{
    static const struct {
        const char *in, *want;
        size_t replaced;
    } cases[] = {
        {"", "", 0},
        {"plain text", "plain text", 0},
        {"$(VAR_A)", "A", 1},
        {"___$(VAR_B)___", "___B___", 1},
        {"$(VAR_A)-$(VAR_A)", "A-A", 2},
        {"$(VAR_A)$(VAR_B)$(VAR_C)", "ABC", 3},
        {"$(VAR_EMPTY)", "", 1},
        {"x$(VAR_EMPTY)y", "xy", 1},
        {"$(VAR_REF)", "$(VAR_A)", 1},
        /* undefined: left as written */
        {"$(VAR_DNE)", "$(VAR_DNE)", 0},
        {"foo$(VAR_DNE)bar", "foo$(VAR_DNE)bar", 0},
        {"$()", "$()", 0},
        {"$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))", 0}, /* the name is "VAR_A$(VAR_B" */
        /* escapes */
        {"$$(VAR_A)", "$(VAR_A)", 0},
        {"$$$(VAR_A)", "$A", 1},
        {"$$$$(VAR_A)", "$$(VAR_A)", 0},
        {"$$", "$", 0},
        {"$$$", "$$", 0},
        {"f00__(VAR_A)__", "f00__(VAR_A)__", 0},
        /* operators that begin no reference */
        {"$", "$", 0},
        {"a$", "a$", 0},
        {"$VAR_A", "$VAR_A", 0},
        {"$x$(VAR_A)", "$xA", 1},
        {"$(VAR_A", "$(VAR_A", 0},
        {"$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)", 0}, /* the name runs to the first ')' */
        {"$($(VAR_A", "$($(VAR_A", 0},
        {"$(", "$(", 0},
        {"?_$(VAR_A)_$(", "?_A_$(", 1},
        {"$\xc3\xa9", "$\xc3\xa9", 0}, /* bytes copied as is */
        /* the worker's directories, as the scheduler renders {{ run.dir }} */
        {"$(SLUICE_RUN_DIR)/model.pkl", "/w/etl/r1/model.pkl", 1},
        {"--out=$(SLUICE_ATTEMPT_DIR)/x", "--out=/w/etl/r1/.attempts/load/1/x", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct strbuf sb = STRBUF_INIT;
        strbuf_addstr(&sb, "<"); /* appends, never overwrites */
        int calls = 0;
        size_t n = worker_expand(&sb, cases[i].in, lookup, &calls);
        ck_assert_msg(!strncmp(sb.buf, "<", 1) && !strcmp(sb.buf + 1, cases[i].want),
                      "case %zu \"%s\": got \"%s\", want \"%s\"", i, cases[i].in, sb.buf + 1,
                      cases[i].want);
        ck_assert_msg(n == cases[i].replaced, "case %zu \"%s\": %zu replaced, want %zu", i,
                      cases[i].in, n, cases[i].replaced);
        ck_assert_uint_eq(sb.len, strlen(sb.buf));
        strbuf_release(&sb);
    }
}
END_TEST

START_TEST(test_expand_no_lookup)
{
    /* Without a lookup nothing is defined; escapes still apply. */
    struct strbuf sb = STRBUF_INIT;
    ck_assert_uint_eq(worker_expand(&sb, "$(A) $$(B) $$", NULL, NULL), 0);
    ck_assert_str_eq(sb.buf, "$(A) $(B) $");
    strbuf_release(&sb);
}
END_TEST

START_TEST(test_expand_lookup_calls)
{
    /* Escaped references are never looked up; each reference once. */
    struct strbuf sb = STRBUF_INIT;
    int calls = 0;
    worker_expand(&sb, "$$(VAR_A) $(VAR_B) $(VAR_DNE) $(", lookup, &calls);
    ck_assert_int_eq(calls, 2);
    ck_assert_str_eq(sb.buf, "$(VAR_A) B $(VAR_DNE) $(");
    strbuf_release(&sb);
}
END_TEST

Suite *suite_worker_expand(void)
{
    Suite *s = suite_create("worker_expand");
    TCase *tc = tcase_create("expand");
    tcase_add_test(tc, test_expand_table);
    tcase_add_test(tc, test_expand_no_lookup);
    tcase_add_test(tc, test_expand_lookup_calls);
    suite_add_tcase(s, tc);
    return s;
}
