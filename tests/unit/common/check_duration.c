/*
 * tests/unit/common/check_duration.c - Go-style durations: parse, format, round trip.
 */
#include "common/duration.h"
#include "common/error.h"
#include "tests/testutil.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

START_TEST(test_duration_parse_valid)
{
    static const struct {
        const char *s;
        int64_t ms;
    } cases[] = {
        {"0", 0},
        {"0s", 0},
        {"0ms", 0},
        {"0d0h", 0},
        {"500ms", 500},
        {"1s", 1000},
        {"30s", 30000},
        {"1m", 60000},
        {"90m", 5400000},
        {"1h", 3600000},
        {"1h30m", 5400000},
        {"2d", 172800000},
        {"1d2h3m4s5ms", 93784005},
        {"1.5h", 5400000},
        {".5s", 500},
        {"1.s", 1000},
        {"0.001s", 1},
        {"1.0005s", 1000}, /* truncated to whole milliseconds */
        {"0.1ms", 0},
        {"2.25m", 135000},
        {"1.000000001d", 86400000},
        {"1.123456789123456789s", 1123},
        {"30s30s", 60000}, /* repeated units add up, as in Go */
        {"1m1h", 3660000},
        {"007s", 7000},
        {"9223372036854775807ms", INT64_MAX},
        {"9223372036854775s807ms", INT64_MAX},
        {"106751991167d7h12m55s807ms", INT64_MAX},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t ms = -42;
        int rc = sl_duration_parse(&ms, cases[i].s);
        ck_assert_msg(rc == 0, "\"%s\": %s", cases[i].s, sl_strerror(rc));
        ck_assert_msg(ms == cases[i].ms, "\"%s\": got %lld, want %lld", cases[i].s, (long long)ms,
                      (long long)cases[i].ms);
    }
}
END_TEST

START_TEST(test_duration_parse_invalid)
{
    static const struct {
        const char *s;
        int rc;
    } cases[] = {
        {"", SL_EINVAL},
        {"s", SL_EINVAL},
        {".s", SL_EINVAL},
        {".", SL_EINVAL},
        {"10", SL_EINVAL},
        {"00", SL_EINVAL},
        {"1h30", SL_EINVAL},
        {"-1s", SL_EINVAL},
        {"+1s", SL_EINVAL},
        {"-0", SL_EINVAL},
        {"1w", SL_EINVAL},
        {"1us", SL_EINVAL},
        {"1ns", SL_EINVAL},
        {"1µs", SL_EINVAL},
        {"1S", SL_EINVAL},
        {"1H", SL_EINVAL},
        {"1 s", SL_EINVAL},
        {" 1s", SL_EINVAL},
        {"1s ", SL_EINVAL},
        {"1h 30m", SL_EINVAL},
        {"1..5s", SL_EINVAL},
        {"1.5.5s", SL_EINVAL},
        {"1e3s", SL_EINVAL},
        {"0x10s", SL_EINVAL},
        {"1sm", SL_EINVAL},
        {"1mss", SL_EINVAL},
        {"9223372036854775808ms", SL_ERANGE},
        {"106751991167d7h12m55s808ms", SL_ERANGE},
        {"106751991168d", SL_ERANGE},
        {"99999999999999999999999h", SL_ERANGE},
        {"9223372036854775807ms1ms", SL_ERANGE},
        {"99999999999999999999999h1x", SL_EINVAL}, /* syntax errors win */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t ms = -42;
        int rc = sl_duration_parse(&ms, cases[i].s);
        ck_assert_msg(rc == cases[i].rc, "\"%s\": got %d (%s), want %d", cases[i].s, rc,
                      sl_strerror(rc), cases[i].rc);
        ck_assert_int_eq(ms, -42); /* untouched on error */
    }
    int64_t ms = 0;
    ck_assert_int_eq(sl_duration_parse(&ms, NULL), SL_EINVAL);
}
END_TEST

START_TEST(test_duration_format)
{
    static const struct {
        int64_t ms;
        const char *s;
    } cases[] = {
        {0, "0s"},
        {1, "1ms"},
        {500, "500ms"},
        {1000, "1s"},
        {1500, "1s500ms"},
        {60000, "1m"},
        {5400000, "1h30m"},
        {3600000, "1h"},
        {86400000, "1d"},
        {172800000, "2d"},
        {93784005, "1d2h3m4s5ms"},
        {86400001, "1d1ms"},
        {-1500, "-1s500ms"},
        {INT64_MAX, "106751991167d7h12m55s807ms"},
        {INT64_MIN, "-106751991167d7h12m55s808ms"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[SL_DURATION_BUFSZ];
        sl_duration_format(buf, sizeof(buf), cases[i].ms);
        ck_assert_str_eq(buf, cases[i].s);
    }
    /* truncation like snprintf */
    char small[5] = "xxxx";
    sl_duration_format(small, sizeof(small), 5400000);
    ck_assert_str_eq(small, "1h30");
    sl_duration_format(small, 1, 5400000);
    ck_assert_str_eq(small, "");
    sl_duration_format(small, 0, 5400000); /* writes nothing */
    ck_assert_str_eq(small, "");
}
END_TEST

START_TEST(test_duration_round_trip)
{
    uint64_t x = 88172645463325252u;
    for (int i = 0; i < 100000; i++) {
        /* xorshift64, spread over all magnitudes */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t ms = (int64_t)((x >> 1) >> (x % 63));
        char buf[SL_DURATION_BUFSZ];
        int64_t back = -1;
        sl_duration_format(buf, sizeof(buf), ms);
        ck_assert_msg(sl_duration_parse(&back, buf) == 0 && back == ms, "%lld -> \"%s\" -> %lld",
                      (long long)ms, buf, (long long)back);
    }
}
END_TEST

Suite *suite_common_duration(void)
{
    Suite *s = suite_create("common_duration");
    TCase *tc = tcase_create("duration");
    tcase_add_test(tc, test_duration_parse_valid);
    tcase_add_test(tc, test_duration_parse_invalid);
    tcase_add_test(tc, test_duration_format);
    tcase_add_test(tc, test_duration_round_trip);
    suite_add_tcase(s, tc);
    return s;
}
