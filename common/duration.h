/*
 * common/duration.h - Go-style durations ("30s", "1h30m", "1.5h") in milliseconds.
 *
 * Used wherever a DAG names a length of time: timeouts, retry delays, "@every"
 * schedules. The grammar is Go's time.ParseDuration restricted to what a workflow
 * needs: no sign, no units below a millisecond, plus "d" for a 24-hour day.
 */
#ifndef SLUICE_COMMON_DURATION_H
#define SLUICE_COMMON_DURATION_H

#include <stddef.h>
#include <stdint.h>

/* Enough for any int64_t duration: "-106751991167d7h12m55s808ms" is 28 bytes. */
#define SL_DURATION_BUFSZ 32

/*
 * Parses one or more <number><unit> groups with no space between them, e.g. "30s",
 * "1h30m", "500ms", "2d", "1.5h", ".5s". Units: ms, s, m, h, d (d = 24h). A number
 * is digits with an optional fraction; a fraction is exact to 10^-9 of its unit and
 * the total is truncated to whole milliseconds ("1.0005s" = 1000 ms). The bare
 * string "0" means zero; anything else needs a unit on every number.
 *
 * Returns 0 and sets *out_ms, SL_EINVAL for an empty string, a sign, a number
 * without a unit, an unknown unit ("us", "w") or any other character, or SL_ERANGE
 * if the total does not fit in int64_t milliseconds.
 */
int sl_duration_parse(int64_t *out_ms, const char *s);

/*
 * Writes ms in canonical form: its non-zero d, h, m, s and ms components, largest
 * first ("1h30m", "500ms", "2d", "1d2h3m4s5ms"); "0s" for zero; a leading '-' for
 * negative values. sl_duration_parse() reads it back to the same value. Writes at
 * most len bytes, always NUL-terminated when len > 0 (truncated like snprintf);
 * SL_DURATION_BUFSZ bytes always suffice.
 */
void sl_duration_format(char *buf, size_t len, int64_t ms);

#endif
