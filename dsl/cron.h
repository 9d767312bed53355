/*
 * dsl/cron.h - cron schedules: parsing and "when does it fire next".
 *
 * A DAG's `schedule:` is a standard 5-field cron expression
 * (minute hour day-of-month month day-of-week), a macro (@daily ...), or
 * "@every <duration>". docs/schedules.md is the user-facing reference; in short:
 *
 *   - fields take "*", "?" (the same as "*"), lists "1,15", ranges "9-17", steps
 *     "10-40/5", a star with a step (every 15 minutes), and "5/10" meaning
 *     "5-<max>/10"; JAN-DEC and SUN-SAT case-insensitively; day-of-week 0-7 with 7 =
 *     Sunday. No seconds field, no L, W or #
 *   - day-of-month and day-of-week: when both are restricted a day matches if EITHER
 *     does (Vixie cron, robfig/cron, croniter). A field is unrestricted when one of
 *     its list elements is a bare "*" or "?" (a step of 1 allowed), so a star with a
 *     step of 5 is a restriction, as in robfig/cron and croniter
 *   - time zones and daylight saving (robfig/cron's and so Argo's policy, which the
 *     shared test vectors encode): a schedule fires at every instant whose
 *     wall-clock reading in the zone matches it. A wall time skipped by a
 *     spring-forward gap does not fire that day; a wall time repeated by a fall-back
 *     fires at both occurrences
 *   - @every D fires at anchor + k*D for integer k, independent of time zones
 *
 * A struct dsl_cron holds no pointers to the spec string and is not modified by
 * dsl_cron_next(), so concurrent dsl_cron_next() calls on one object are safe; set
 * the anchor (dsl_cron_set_anchor()) before sharing it.
 */
#ifndef SLUICE_DSL_CRON_H
#define SLUICE_DSL_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dsl_cron;
struct sl_tz;

/*
 * Parses spec (leading and trailing white space ignored). Returns 0 and sets *out
 * (free it with dsl_cron_free()), or SL_EINVAL with a lower-case message such as
 * "minute field: value 60 out of range 0-59" or "expected 5 fields, got 6" written
 * to err (truncated to errlen bytes; err may be NULL when errlen is 0).
 */
int dsl_cron_parse(struct dsl_cron **out, const char *spec, char *err, size_t errlen);
/* Frees c; NULL is allowed. */
void dsl_cron_free(struct dsl_cron *c);

/* True if c is an "@every <duration>" schedule. */
bool dsl_cron_is_every(const struct dsl_cron *c);
/* Sets the instant an @every schedule counts from (default 0, the Unix epoch); it
 * fires at anchor + k * duration for every integer k. No effect on other specs. */
void dsl_cron_set_anchor(struct dsl_cron *c, int64_t anchor_unix);

/*
 * Sets *out_next to the first fire instant strictly after after_unix, evaluating
 * wall-clock fields in tz (NULL: UTC). Pure computation, no I/O.
 *
 * Returns 0, SL_ENOTFOUND if the spec never fires (e.g. "0 0 30 2 *") or does not
 * fire within 8 years of after_unix (enough for every satisfiable spec: February 29
 * can be 8 years away across 2100), or SL_ERANGE if after_unix is more than 10^15 s
 * from 1970 or the next @every instant does not fit in int64_t.
 */
int dsl_cron_next(int64_t *out_next, const struct dsl_cron *c, const struct sl_tz *tz,
                  int64_t after_unix);

#endif
