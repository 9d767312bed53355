/*
 * common/timeutil.h - civil-calendar arithmetic and ISO 8601 timestamps.
 *
 * Instants are int64_t seconds since 1970-01-01T00:00:00Z ("unix seconds", leap
 * seconds ignored, as POSIX does). A civil (wall-clock) time is written the same
 * way, as seconds since 1970-01-01T00:00 *in some zone*; common/tz.h converts between
 * the two. The calendar is the proleptic Gregorian one, for every year.
 *
 * Nothing here reads the process time zone (TZ, localtime): results depend on the
 * arguments only, so every function is pure and thread-safe.
 */
#ifndef SLUICE_COMMON_TIMEUTIL_H
#define SLUICE_COMMON_TIMEUTIL_H

#include <stdint.h>

struct sl_tz;

#define SL_SECONDS_PER_DAY 86400

/* Days from 1970-01-01 to the civil date y-m-d (negative before 1970). m is 1-12;
 * d may exceed the month's length (it then counts on into the next month), which
 * callers use for "day n of the year". Exact for |y| <= 10^12. */
int64_t sl_days_from_civil(int64_t y, unsigned m, unsigned d);
/* The civil date of a day count from 1970-01-01; the inverse of the above. Every out
 * pointer must be non-NULL. Exact for |days| <= 10^14 (about 270 billion years). */
void sl_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);
/* 1 if y is a Gregorian leap year, else 0. */
int sl_is_leap_year(int64_t y);
/* Days in month m (1-12) of year y. */
unsigned sl_days_in_month(int64_t y, unsigned m);
/* Day of the week of a day count from 1970-01-01: 0 = Sunday ... 6 = Saturday. */
unsigned sl_weekday_from_days(int64_t days);
/* Floor division of a by b (b > 0), unlike C's truncating '/'. */
int64_t sl_floor_div(int64_t a, int64_t b);

/*
 * Parses an ISO 8601 / RFC 3339 timestamp into unix seconds. Accepted forms:
 *
 *   YYYY-MM-DD                    midnight, a naive (zone-less) time
 *   YYYY-MM-DDTHH:MM[:SS]         naive ('T' may also be 't' or one space)
 *   YYYY-MM-DDTHH:MM[:SS]Z        UTC ('z' too)
 *   YYYY-MM-DDTHH:MM[:SS]+HH:MM   an explicit UTC offset ('-' too; HH 00-23)
 *
 * A naive time is read as wall-clock time in tz_for_naive (UTC if NULL). If that
 * wall time was skipped by a daylight-saving change (a "gap"), the result is the
 * instant the gap ends (the first instant whose wall time is later); if it occurred
 * twice, the first occurrence (see sl_tz_resolve_local()). Fractional seconds,
 * leap seconds (:60), week dates and ordinal dates are not accepted.
 *
 * Returns 0 and sets *out_unix, SL_EINVAL if s is malformed, or SL_ERANGE if a field
 * is out of range (month 1-12, day within the month, hour 0-23, minute and second
 * 0-59, offset hours 0-23 and minutes 0-59).
 */
int sl_time_parse(int64_t *out_unix, const char *s, const struct sl_tz *tz_for_naive);

/* Writes unix_s as "2026-01-02T03:04:05Z" (always UTC, NUL-terminated). Years
 * outside 0000-9999 are written with a sign and at least 4 digits ("+10000-...",
 * "-0001-..."); every int64_t fits in 32 bytes. */
void sl_time_format_utc(char buf[32], int64_t unix_s);

/* The wall clock (CLOCK_REALTIME) in unix milliseconds. */
int64_t sl_wall_ms(void);

#endif
