/*
 * tests/unit/common/check_timeutil.c - calendar arithmetic and ISO 8601 timestamps.
 *
 * The calendar functions are checked against glibc's gmtime_r (a test-only oracle)
 * over every day of 1890-2110 and random instants far beyond.
 */
#include "common/timeutil.h"
#include "common/error.h"
#include "common/tz.h"
#include "tests/testutil.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

START_TEST(test_civil_known_dates)
{
    ck_assert_int_eq(sl_days_from_civil(1970, 1, 1), 0);
    ck_assert_int_eq(sl_days_from_civil(1969, 12, 31), -1);
    ck_assert_int_eq(sl_days_from_civil(2000, 3, 1), 11017);
    ck_assert_int_eq(sl_days_from_civil(0, 3, 1), -719468);
    ck_assert_int_eq(sl_days_from_civil(2026, 1, 2), 20455);
    /* a day past the month's end counts on */
    ck_assert_int_eq(sl_days_from_civil(2026, 1, 32), sl_days_from_civil(2026, 2, 1));
    ck_assert_int_eq(sl_days_from_civil(2024, 2, 30), sl_days_from_civil(2024, 3, 1));

    ck_assert(sl_is_leap_year(2000) && sl_is_leap_year(2024) && sl_is_leap_year(0) &&
              sl_is_leap_year(-4));
    ck_assert(!sl_is_leap_year(1900) && !sl_is_leap_year(2100) && !sl_is_leap_year(2026) &&
              !sl_is_leap_year(-1));
    ck_assert_uint_eq(sl_days_in_month(2024, 2), 29);
    ck_assert_uint_eq(sl_days_in_month(2100, 2), 28);
    ck_assert_uint_eq(sl_days_in_month(2026, 4), 30);
    ck_assert_uint_eq(sl_days_in_month(2026, 12), 31);
    ck_assert_uint_eq(sl_days_in_month(2026, 13), 0);
    ck_assert_uint_eq(sl_weekday_from_days(0), 4);  /* Thursday */
    ck_assert_uint_eq(sl_weekday_from_days(-1), 3); /* Wednesday */
    ck_assert_uint_eq(sl_weekday_from_days(20455), 5);
    ck_assert_int_eq(sl_floor_div(-1, 60), -1);
    ck_assert_int_eq(sl_floor_div(-60, 60), -1);
    ck_assert_int_eq(sl_floor_div(59, 60), 0);
    ck_assert_int_eq(sl_floor_div(INT64_MIN, 86400), -106751991167301);
}
END_TEST

START_TEST(test_civil_matches_gmtime)
{
    int64_t first = sl_days_from_civil(1890, 1, 1), last = sl_days_from_civil(2110, 12, 31);
    for (int64_t days = first; days <= last; days++) {
        time_t t = (time_t)(days * SL_SECONDS_PER_DAY);
        struct tm tm;
        int64_t y;
        unsigned m, d;
        ck_assert_ptr_nonnull(gmtime_r(&t, &tm));
        sl_civil_from_days(days, &y, &m, &d);
        ck_assert_msg(y == tm.tm_year + 1900 && m == (unsigned)tm.tm_mon + 1 &&
                          d == (unsigned)tm.tm_mday,
                      "day %lld", (long long)days);
        ck_assert_int_eq(sl_days_from_civil(y, m, d), days);
        ck_assert_uint_eq(sl_weekday_from_days(days), (unsigned)tm.tm_wday);
    }
    /* random instants within +-10^12 s (years -29000..33000) */
    uint64_t x = 12345;
    for (int i = 0; i < 50000; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        int64_t s = (int64_t)(x >> 20) % INT64_C(1000000000000);
        time_t t = (time_t)s;
        struct tm tm;
        char buf[32], want[48];
        ck_assert_ptr_nonnull(gmtime_r(&t, &tm));
        sl_time_format_utc(buf, s);
        long long y = (long long)tm.tm_year + 1900;
        snprintf(want, sizeof(want),
                 y >= 0 && y <= 9999 ? "%04lld-%02d-%02dT%02d:%02d:%02dZ"
                                     : "%+05lld-%02d-%02dT%02d:%02d:%02dZ",
                 y, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        ck_assert_str_eq(buf, want);
    }
}
END_TEST

START_TEST(test_time_format_utc)
{
    char buf[32];
    sl_time_format_utc(buf, 0);
    ck_assert_str_eq(buf, "1970-01-01T00:00:00Z");
    sl_time_format_utc(buf, 1767323045);
    ck_assert_str_eq(buf, "2026-01-02T03:04:05Z");
    sl_time_format_utc(buf, -1);
    ck_assert_str_eq(buf, "1969-12-31T23:59:59Z");
    sl_time_format_utc(buf, 253402300799);
    ck_assert_str_eq(buf, "9999-12-31T23:59:59Z");
    sl_time_format_utc(buf, 253402300800);
    ck_assert_str_eq(buf, "+10000-01-01T00:00:00Z");
    sl_time_format_utc(buf, -62167219201);
    ck_assert_str_eq(buf, "-0001-12-31T23:59:59Z");
    sl_time_format_utc(buf, INT64_MAX);
    ck_assert_str_eq(buf, "+292277026596-12-04T15:30:07Z");
    sl_time_format_utc(buf, INT64_MIN);
    ck_assert_str_eq(buf, "-292277022657-01-27T08:29:52Z");
}
END_TEST

START_TEST(test_time_parse_forms)
{
    static const struct {
        const char *s;
        int64_t t;
    } ok[] = {
        {"2026-01-02", 1767312000},
        {"2026-01-02T03:04", 1767323040},
        {"2026-01-02T03:04:05", 1767323045},
        {"2026-01-02t03:04:05", 1767323045},
        {"2026-01-02 03:04:05", 1767323045},
        {"2026-01-02T03:04:05Z", 1767323045},
        {"2026-01-02T03:04:05z", 1767323045},
        {"2026-01-02T03:04Z", 1767323040},
        {"2026-01-02T03:04:05+00:00", 1767323045},
        {"2026-01-02T03:04:05-00:00", 1767323045},
        {"2026-01-02T08:34:05+05:30", 1767323045},
        {"2026-01-01T22:04:05-05:00", 1767323045},
        {"2026-01-02T03:04+23:59", 1767323040 - 86340},
        {"2024-02-29T00:00:00Z", 1709164800},
        {"2000-02-29", 951782400},
        {"1970-01-01T00:00:00Z", 0},
        {"1969-12-31T23:59:59Z", -1},
        {"0000-01-01", -62167219200},
        {"9999-12-31T23:59:59Z", 253402300799},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t t = 42;
        int rc = sl_time_parse(&t, ok[i].s, NULL);
        ck_assert_msg(rc == 0, "\"%s\": %s", ok[i].s, sl_strerror(rc));
        ck_assert_msg(t == ok[i].t, "\"%s\": got %lld want %lld", ok[i].s, (long long)t,
                      (long long)ok[i].t);
    }
}
END_TEST

START_TEST(test_time_parse_rejects)
{
    static const struct {
        const char *s;
        int rc;
    } bad[] = {
        {"", SL_EINVAL},
        {"2026", SL_EINVAL},
        {"2026-1-2", SL_EINVAL},
        {"26-01-02", SL_EINVAL},
        {"+2026-01-02", SL_EINVAL},
        {"2026/01/02", SL_EINVAL},
        {"2026-01-02T", SL_EINVAL},
        {"2026-01-02T3:04", SL_EINVAL},
        {"2026-01-02T03", SL_EINVAL},
        {"2026-01-02T03:04:5", SL_EINVAL},
        {"2026-01-02T03:04:05.123Z", SL_EINVAL},
        {"2026-01-02T03:04:05+0530", SL_EINVAL},
        {"2026-01-02T03:04:05+05", SL_EINVAL},
        {"2026-01-02T03:04:05 Z", SL_EINVAL},
        {"2026-01-02T03:04:05ZZ", SL_EINVAL},
        {"2026-01-02Z", SL_EINVAL},
        {"2026-01-02T03:04:05UTC", SL_EINVAL},
        {" 2026-01-02", SL_EINVAL},
        {"2026-01-02 ", SL_EINVAL},
        {"2026-01-02TT03:04", SL_EINVAL},
        {"2026-00-10", SL_ERANGE},
        {"2026-13-10", SL_ERANGE},
        {"2026-01-00", SL_ERANGE},
        {"2026-01-32", SL_ERANGE},
        {"2026-04-31", SL_ERANGE},
        {"2026-02-29", SL_ERANGE},
        {"1900-02-29", SL_ERANGE},
        {"2100-02-29", SL_ERANGE},
        {"2026-01-02T24:00", SL_ERANGE},
        {"2026-01-02T23:60", SL_ERANGE},
        {"2026-01-02T23:59:60Z", SL_ERANGE},
        {"2026-01-02T03:04:05+24:00", SL_ERANGE},
        {"2026-01-02T03:04:05+05:60", SL_ERANGE},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t t = 42;
        int rc = sl_time_parse(&t, bad[i].s, NULL);
        ck_assert_msg(rc == bad[i].rc, "\"%s\": got %d (%s), want %d", bad[i].s, rc,
                      sl_strerror(rc), bad[i].rc);
        ck_assert_int_eq(t, 42);
    }
    int64_t t;
    ck_assert_int_eq(sl_time_parse(&t, NULL, NULL), SL_EINVAL);
}
END_TEST

START_TEST(test_time_parse_naive_in_zone)
{
    struct sl_tz *ny = NULL, *utc = NULL;
    int64_t t;
    ck_assert_int_eq(sl_tz_load(&ny, "America/New_York"), 0);
    ck_assert_int_eq(sl_tz_load(&utc, "UTC"), 0);

    ck_assert_int_eq(sl_time_parse(&t, "2026-01-02", ny), 0);
    ck_assert_int_eq(t, 1767312000 + 5 * 3600);
    ck_assert_int_eq(sl_time_parse(&t, "2026-07-02T12:00", ny), 0);
    ck_assert_int_eq(t, 1782993600 + 4 * 3600);
    ck_assert_int_eq(sl_time_parse(&t, "2026-07-02T12:00", utc), 0);
    ck_assert_int_eq(t, 1782993600);
    /* an explicit offset ignores the zone */
    ck_assert_int_eq(sl_time_parse(&t, "2026-07-02T12:00Z", ny), 0);
    ck_assert_int_eq(t, 1782993600);

    /* gap: 2026-03-08 02:00-02:59 does not exist; the gap ends at 03:00 EDT = 07:00Z */
    int64_t gap_end;
    ck_assert_int_eq(sl_time_parse(&gap_end, "2026-03-08T07:00:00Z", NULL), 0);
    ck_assert_int_eq(sl_time_parse(&t, "2026-03-08T02:30", ny), 0);
    ck_assert_int_eq(t, gap_end);
    ck_assert_int_eq(sl_time_parse(&t, "2026-03-08T02:00:00", ny), 0);
    ck_assert_int_eq(t, gap_end);
    ck_assert_int_eq(sl_time_parse(&t, "2026-03-08T03:00:00", ny), 0);
    ck_assert_int_eq(t, gap_end);
    ck_assert_int_eq(sl_time_parse(&t, "2026-03-08T01:59:59", ny), 0);
    ck_assert_int_eq(t, gap_end - 1);

    /* overlap: 2026-11-01 01:30 happens at 05:30Z (EDT) and 06:30Z (EST); first wins */
    int64_t first;
    ck_assert_int_eq(sl_time_parse(&first, "2026-11-01T05:30:00Z", NULL), 0);
    ck_assert_int_eq(sl_time_parse(&t, "2026-11-01T01:30", ny), 0);
    ck_assert_int_eq(t, first);
    sl_tz_free(ny);
    sl_tz_free(utc);
}
END_TEST

Suite *suite_common_timeutil(void)
{
    Suite *s = suite_create("common_timeutil");
    TCase *tc = tcase_create("timeutil");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_civil_known_dates);
    tcase_add_test(tc, test_civil_matches_gmtime);
    tcase_add_test(tc, test_time_format_utc);
    tcase_add_test(tc, test_time_parse_forms);
    tcase_add_test(tc, test_time_parse_rejects);
    tcase_add_test(tc, test_time_parse_naive_in_zone);
    suite_add_tcase(s, tc);
    return s;
}
