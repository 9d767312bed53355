/*
 * common/timeutil.c - civil-calendar arithmetic and ISO 8601 timestamps.
 *
 * The day-count conversions are Howard Hinnant's "days_from_civil" and
 * "civil_from_days" algorithms (http://howardhinnant.github.io/date_algorithms.html):
 * they shift the year to start on March 1 so that the leap day is the last day of
 * the shifted year, then count in 400-year eras of 146097 days. They are exact for
 * every date, negative years included, with no tables and no loops.
 *
 * The parser is deliberately strict (fixed-width fields, one grammar, no locale):
 * timestamps reach it from DAG files and the command line, and a typo should be an
 * error, not a silently different instant.
 */
#include "common/timeutil.h"
#include "common/error.h"
#include "common/tz.h"

#include <stdbool.h>
#include <time.h>
#include <stdio.h>

int64_t sl_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && (a < 0))
        q--;
    return q;
}

int sl_is_leap_year(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

unsigned sl_days_in_month(int64_t y, unsigned m)
{
    static const unsigned char mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m < 1 || m > 12)
        return 0;
    return mdays[m - 1] + (m == 2 && sl_is_leap_year(y));
}

int64_t sl_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = sl_floor_div(y, 400);
    int64_t yoe = y - era * 400;                          /* [0, 399] */
    int64_t mp = m > 2 ? (int64_t)m - 3 : (int64_t)m + 9; /* March = 0 */
    int64_t doy = (153 * mp + 2) / 5 + (int64_t)d - 1;    /* [0, 365] for valid d */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;  /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

void sl_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t z = days + 719468;
    int64_t era = sl_floor_div(z, 146097);
    int64_t doe = z - era * 146097;                                      /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                    /* [0, 11] */
    unsigned mm = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = mm;
    *y = yoe + era * 400 + (mm <= 2);
}

unsigned sl_weekday_from_days(int64_t days)
{
    /* 1970-01-01 was a Thursday (4). */
    int64_t w = (days % 7 + 7 + 4) % 7;
    return (unsigned)w;
}

/* Reads exactly n decimal digits at *p, advancing it. */
static bool read_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

int sl_time_parse(int64_t *out_unix, const char *s, const struct sl_tz *tz_for_naive)
{
    int year, month, day, hour = 0, minute = 0, second = 0;
    int off_sign = 0, off_h = 0, off_m = 0;
    bool naive = true;
    const char *p = s;

    if (!s)
        return SL_EINVAL;
    if (!read_digits(&p, 4, &year) || *p++ != '-' || !read_digits(&p, 2, &month) || *p++ != '-' ||
        !read_digits(&p, 2, &day))
        return SL_EINVAL;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (!read_digits(&p, 2, &hour) || *p++ != ':' || !read_digits(&p, 2, &minute))
            return SL_EINVAL;
        if (*p == ':') {
            p++;
            if (!read_digits(&p, 2, &second))
                return SL_EINVAL;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
            naive = false;
        } else if (*p == '+' || *p == '-') {
            off_sign = *p++ == '+' ? 1 : -1;
            if (!read_digits(&p, 2, &off_h) || *p++ != ':' || !read_digits(&p, 2, &off_m))
                return SL_EINVAL;
            naive = false;
        }
    }
    if (*p != '\0')
        return SL_EINVAL;

    if (month < 1 || month > 12 || day < 1 ||
        (unsigned)day > sl_days_in_month(year, (unsigned)month))
        return SL_ERANGE;
    if (hour > 23 || minute > 59 || second > 59 || off_h > 23 || off_m > 59)
        return SL_ERANGE;

    int64_t civil = sl_days_from_civil(year, (unsigned)month, (unsigned)day) * SL_SECONDS_PER_DAY +
                    hour * 3600 + minute * 60 + second;
    if (!naive)
        *out_unix = civil - off_sign * (off_h * 3600 + off_m * 60);
    else if (tz_for_naive)
        *out_unix = sl_tz_resolve_local(tz_for_naive, civil);
    else
        *out_unix = civil;
    return 0;
}

void sl_time_format_utc(char buf[32], int64_t unix_s)
{
    /* days * 86400 may not fit for the smallest instants: split with % instead */
    int64_t days = unix_s / SL_SECONDS_PER_DAY;
    int64_t secs = unix_s % SL_SECONDS_PER_DAY;
    int64_t y;
    unsigned m, d;

    if (secs < 0) {
        secs += SL_SECONDS_PER_DAY;
        days--;
    }
    sl_civil_from_days(days, &y, &m, &d);
    snprintf(buf, 32,
             y >= 0 && y <= 9999 ? "%04lld-%02u-%02uT%02d:%02d:%02dZ"
                                 : "%+05lld-%02u-%02uT%02d:%02d:%02dZ",
             (long long)y, m, d, (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60));
}

int64_t sl_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
