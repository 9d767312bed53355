/*
 * common/tz.h - IANA time zones, read straight from TZif files.
 *
 * Schedules run in the zone their DAG names ("Europe/Paris"), many zones in one
 * process, on many threads; the C library's localtime() has one process-wide zone
 * (TZ) and is the wrong tool. A struct sl_tz is an immutable, self-contained table
 * loaded from the compiled tz database (RFC 8536 TZif, versions 1-4): the list of
 * UTC-offset changes and the POSIX TZ rule (the file's footer, e.g.
 * "EST5EDT,M3.2.0,M11.1.0") that extends it past the last listed change. Debian
 * may ship "slim" files that list only the changes up to the current rules and
 * rely on the footer for everything after, so the footer is always honoured.
 *
 * Only UTC offsets are modelled: abbreviations and the is-DST flag are not kept.
 * Instants are unix seconds; a "local" time is wall-clock time written as seconds
 * since 1970-01-01T00:00 in the zone (see common/timeutil.h). Offsets are seconds
 * east of Greenwich (New York in winter: -18000).
 *
 * Ownership and threads: sl_tz_load() returns an object the caller frees with
 * sl_tz_free(). It is never modified after loading, so any number of threads may
 * use one concurrently. Loading reads one file; nothing else here does I/O.
 *
 * Files are untrusted input: every count, index and offset is checked, and a bad
 * file yields an error, never a crash. Results are meaningful for instants within
 * +-10^15 s (about 31 million years) of 1970; beyond that, offsets are those of the
 * nearest end of that range.
 */
#ifndef SLUICE_COMMON_TZ_H
#define SLUICE_COMMON_TZ_H

#include <stddef.h>
#include <stdint.h>

struct sl_tz;

/* The largest name accepted by sl_tz_load(), in bytes. */
#define SL_TZ_NAME_MAX 255

/*
 * Loads the zone called name. "UTC" and "Etc/UTC" are built in and read no file;
 * any other name is read from $TZDIR/<name> if TZDIR is set and non-empty, else
 * from /usr/share/zoneinfo/<name>.
 *
 * Returns 0 and sets *out (free it with sl_tz_free()), or:
 *   SL_EINVAL   name is empty, longer than SL_TZ_NAME_MAX, absolute, contains "..",
 *               a backslash, or a character outside [A-Za-z0-9_+-/]
 *   SL_ENOENT   there is no such zone (no file, or a directory)
 *   SL_EIO      the file exists but could not be read
 *   SL_ETOOBIG  the file is larger than 1 MiB (real ones are under 4 KiB)
 *   SL_EPARSE   the file is not a valid TZif file, has an invalid footer, or
 *               carries leap-second records (the "right/" zones, whose clocks
 *               count leap seconds, are not civil time and are refused)
 */
int sl_tz_load(struct sl_tz **out, const char *name);
/*
 * Builds a zone from TZif bytes already in memory (data, len), named name (any
 * string; copied). For zones that do not come from the zone directory, and for
 * fuzzing. Returns 0 and sets *out, or SL_EPARSE as sl_tz_load() would for a file
 * with the same bytes (SL_ETOOBIG over 1 MiB).
 */
int sl_tz_from_tzif(struct sl_tz **out, const char *name, const void *data, size_t len);
/* Frees tz; NULL is allowed. */
void sl_tz_free(struct sl_tz *tz);
/* The name tz was loaded under ("UTC", "America/New_York"); owned by tz. */
const char *sl_tz_name(const struct sl_tz *tz);

/* The UTC offset (seconds east) in force at the instant unix_s. */
int32_t sl_tz_offset_at(const struct sl_tz *tz, int64_t unix_s);
/* The first instant strictly after unix_s at which the UTC offset changes (to a
 * different value: a change of abbreviation or DST flag alone does not count), or
 * INT64_MAX if it never changes again. Lets a caller walk time in spans of constant
 * offset, as dsl/cron.c does. */
int64_t sl_tz_next_change(const struct sl_tz *tz, int64_t unix_s);

/*
 * Converts a wall-clock reading to instants. local_s is civil time in tz as
 * seconds since 1970-01-01T00:00 local. Returns how many instants show that
 * reading and stores them in ascending order in out_utc:
 *   0  the reading was skipped (a spring-forward gap); out_utc is untouched
 *   1  the usual case; out_utc[0]
 *   2  the reading occurred twice (a fall-back overlap); out_utc[0] is the
 *      earlier instant, out_utc[1] the later
 * (A zone whose offset changes several times within two days could show one
 * reading more than twice; the earliest and the latest are returned, and 2.)
 * Readings more than 10^15 s from 1970 return 0.
 */
int sl_tz_local_to_utc(const struct sl_tz *tz, int64_t local_s, int64_t out_utc[2]);

/*
 * The one instant a wall-clock reading stands for when a single answer is needed
 * (a naive timestamp typed by a user): the first occurrence if the reading is
 * repeated; if it falls in a gap, the instant the gap ends, i.e. the earliest
 * instant whose wall time is later than local_s (so resolving preserves the order
 * of readings). For 02:30 on a New York spring-forward day that is 03:00 EDT.
 */
int64_t sl_tz_resolve_local(const struct sl_tz *tz, int64_t local_s);

#endif
