/*
 * common/duration.c - Go-style durations.
 *
 * Parsing accumulates in uint64_t milliseconds and checks every multiply and add
 * against INT64_MAX, so overflow is an error (SL_ERANGE), never a wrapped value.
 * A fraction keeps at most 9 digits (10^-9 of the unit); its contribution is
 * fraction * unit_ms / 10^digits, which stays below 10^9 * 8.64 * 10^7 < 2^63.
 */
#include "common/duration.h"
#include "common/error.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define FRAC_DIGITS_MAX 9

struct unit {
    const char *name;
    uint64_t ms;
};

/* "ms" before "m", so that the longer unit wins. */
static const struct unit units[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int sl_duration_parse(int64_t *out_ms, const char *s)
{
    uint64_t total = 0;
    bool range_error = false;

    if (!s || !*s)
        return SL_EINVAL;
    if (!strcmp(s, "0")) {
        *out_ms = 0;
        return 0;
    }
    while (*s) {
        uint64_t whole = 0, frac = 0, frac_scale = 1;
        bool any_digit = false;

        for (; is_digit(*s); s++) {
            any_digit = true;
            if (whole > (uint64_t)INT64_MAX / 10)
                range_error = true;
            else
                whole = whole * 10 + (uint64_t)(*s - '0');
        }
        if (*s == '.') {
            int kept = 0;
            for (s++; is_digit(*s); s++) {
                any_digit = true;
                if (kept < FRAC_DIGITS_MAX) {
                    frac = frac * 10 + (uint64_t)(*s - '0');
                    frac_scale *= 10;
                    kept++;
                }
            }
        }
        if (!any_digit)
            return SL_EINVAL;

        const struct unit *u = NULL;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t n = strlen(units[i].name);
            if (!strncmp(s, units[i].name, n)) {
                u = &units[i];
                s += n;
                break;
            }
        }
        if (!u)
            return SL_EINVAL;
        if (range_error)
            continue; /* keep checking the syntax: EINVAL outranks ERANGE */

        uint64_t part = frac * u->ms / frac_scale;
        if (whole > ((uint64_t)INT64_MAX - part) / u->ms) {
            range_error = true;
            continue;
        }
        part += whole * u->ms;
        if (part > (uint64_t)INT64_MAX - total)
            range_error = true;
        else
            total += part;
    }
    if (range_error)
        return SL_ERANGE;
    *out_ms = (int64_t)total;
    return 0;
}

void sl_duration_format(char *buf, size_t len, int64_t ms)
{
    char tmp[SL_DURATION_BUFSZ];
    size_t n = 0;
    uint64_t v = ms < 0 ? (uint64_t)0 - (uint64_t)ms : (uint64_t)ms;

    if (ms < 0)
        tmp[n++] = '-';
    if (v == 0)
        n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "0s");
    for (size_t i = sizeof(units) / sizeof(units[0]); i-- > 0 && v > 0;) {
        /* largest unit first: d, h, m, s, ms */
        uint64_t q = v / units[i].ms;
        if (q == 0)
            continue;
        v -= q * units[i].ms;
        n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "%llu%s", (unsigned long long)q,
                              units[i].name);
    }
    if (len > 0)
        snprintf(buf, len, "%s", tmp);
}
