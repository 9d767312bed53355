/*
 * tests/unit/common/check_strbuf.c - strbuf, arena and xalloc.
 */
#include "common/arena.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "tests/testutil.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

START_TEST(test_strbuf_grows_and_stays_terminated)
{
    struct strbuf sb = STRBUF_INIT;
    ck_assert_str_eq(sb.buf, "");
    for (int i = 0; i < 1000; i++)
        strbuf_addf(&sb, "%d,", i);
    ck_assert_uint_eq(sb.len, strlen(sb.buf));
    ck_assert(!strncmp(sb.buf, "0,1,2,", 6));
    ck_assert(!strcmp(sb.buf + sb.len - 4, "999,"));
    strbuf_reset(&sb);
    ck_assert_str_eq(sb.buf, "");
    strbuf_addch(&sb, 'x');
    size_t len;
    char *s = strbuf_detach(&sb, &len);
    ck_assert_str_eq(s, "x");
    ck_assert_uint_eq(len, 1);
    ck_assert_str_eq(sb.buf, "");
    free(s);
    strbuf_release(&sb);
}
END_TEST

START_TEST(test_strbuf_json_string_escapes)
{
    struct strbuf sb = STRBUF_INIT;
    strbuf_add_json_string(&sb, "a\"b\\c\nd\x01");
    ck_assert_str_eq(sb.buf, "\"a\\\"b\\\\c\\nd\\u0001\"");
    strbuf_release(&sb);
}
END_TEST

START_TEST(test_strbuf_read_file_limits)
{
    char path[] = "/tmp/sluice-test-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "0123456789", 10), 10);
    close(fd);

    struct strbuf sb = STRBUF_INIT;
    ck_assert_int_eq(strbuf_read_file(&sb, path, 9), SL_ETOOBIG);
    ck_assert_uint_eq(sb.len, 0);
    ck_assert_int_eq(strbuf_read_file(&sb, path, 10), 0);
    ck_assert_str_eq(sb.buf, "0123456789");
    ck_assert_int_eq(strbuf_read_file(&sb, "/nonexistent/sluice", 10), SL_ENOENT);
    ck_assert_int_eq(strbuf_read_file(&sb, "/tmp", 10), SL_EINVAL);
    ck_assert_str_eq(sb.buf, "0123456789");
    strbuf_release(&sb);
    unlink(path);
}
END_TEST

START_TEST(test_arena_alignment_and_big_blocks)
{
    struct arena a = ARENA_INIT;
    for (int i = 0; i < 10000; i++) {
        char *p = arena_alloc(&a, (size_t)(i % 37) + 1);
        ck_assert_uint_eq((uintptr_t)p % sizeof(max_align_t) % 8, 0);
        p[0] = 1;
    }
    char *big = arena_alloc(&a, 1 << 20);
    ck_assert_int_eq(big[12345], 0);
    char *s = arena_sprintf(&a, "%s-%d", "x", 42);
    ck_assert_str_eq(s, "x-42");
    ck_assert_str_eq(arena_strndup(&a, "hello", 3), "hel");
    ck_assert_uint_gt(a.total_bytes, 1 << 20);
    arena_release(&a);
    ck_assert_uint_eq(a.total_bytes, 0);
}
END_TEST

START_TEST(test_xgrow_and_errors)
{
    int *v = NULL;
    size_t alloc = 0;
    for (size_t i = 0; i < 100; i++) {
        XGROW(v, alloc, i + 1);
        v[i] = (int)i;
    }
    ck_assert_int_eq(v[99], 99);
    ck_assert_uint_ge(alloc, 100);
    free(v);
    char *s = xasprintf("%s=%d", "k", 7);
    ck_assert_str_eq(s, "k=7");
    free(s);
    ck_assert_str_eq(sl_strerror(SL_ETOOBIG), "input too large");
    ck_assert_str_eq(sl_strerror(12345), "unknown error");
}
END_TEST

Suite *suite_common_strbuf(void)
{
    Suite *s = suite_create("common_strbuf");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_strbuf_grows_and_stays_terminated);
    tcase_add_test(tc, test_strbuf_json_string_escapes);
    tcase_add_test(tc, test_strbuf_read_file_limits);
    tcase_add_test(tc, test_arena_alignment_and_big_blocks);
    tcase_add_test(tc, test_xgrow_and_errors);
    suite_add_tcase(s, tc);
    return s;
}
