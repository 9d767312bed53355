/*
 * dsl/quantity.c - Kubernetes resource quantities and DNS-1123 labels.
 *
 * A quantity is <sign><number><suffix>: the number is decimal with an optional
 * fraction, the suffix a binary SI one (Ki Mi Gi Ti Pi Ei), a decimal SI one
 * (m k M G T P E, where m is a thousandth) or a decimal exponent (e3, E-2).
 * Negative quantities are refused: no resource request is negative. The result
 * is kept in thousandths so that both "500m" CPUs and "1Gi" bytes are exact.
 */
#include "dsl/dsl.h"
#include "common/error.h"

#include <ctype.h>
#include <string.h>

bool dsl_is_dns_label(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > DSL_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' && i > 0 && i < n - 1))
            return false;
    }
    return true;
}

/* Multiplies *v by m, failing on overflow past INT64_MAX. */
static int mul_checked(__int128 *v, __int128 m)
{
    *v *= m;
    return *v > INT64_MAX ? SL_ERANGE : 0;
}

int dsl_quantity_parse(int64_t *out_milli, const char *s)
{
    const char *p = s;
    __int128 whole = 0, frac = 0, frac_scale = 1;
    int digits = 0;

    if (*p == '+')
        p++;
    if (*p == '-')
        return SL_EINVAL;
    while (isdigit((unsigned char)*p)) {
        whole = whole * 10 + (*p - '0');
        if (whole > INT64_MAX)
            return SL_ERANGE;
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            if (frac_scale < (__int128)1000000000000000000)
                frac = frac * 10 + (*p - '0'), frac_scale *= 10;
            p++;
            digits++;
        }
    }
    if (digits == 0)
        return SL_EINVAL;

    /* value = (whole + frac/frac_scale) * mult_num / mult_den, then in thousandths */
    __int128 mult_num = 1000, mult_den = 1;
    static const struct {
        const char *suffix;
        int64_t num;
        int64_t den;
    } suffixes[] = {
        {"Ki", (int64_t)1 << 10, 1},
        {"Mi", (int64_t)1 << 20, 1},
        {"Gi", (int64_t)1 << 30, 1},
        {"Ti", (int64_t)1 << 40, 1},
        {"Pi", (int64_t)1 << 50, 1},
        {"Ei", (int64_t)1 << 60, 1},
        {"m", 1, 1000},
        {"k", 1000, 1},
        {"M", 1000000, 1},
        {"G", 1000000000, 1},
        {"T", 1000000000000, 1},
        {"P", 1000000000000000, 1},
        {"E", 1000000000000000000, 1},
        {"", 1, 1},
    };
    if ((*p == 'e' || *p == 'E') &&
        (isdigit((unsigned char)p[1]) ||
         ((p[1] == '-' || p[1] == '+') && isdigit((unsigned char)p[2])))) {
        p++;
        int sign = 1, exp = 0;
        if (*p == '-' || *p == '+')
            sign = *p++ == '-' ? -1 : 1;
        while (isdigit((unsigned char)*p)) {
            exp = exp * 10 + (*p++ - '0');
            if (exp > 30)
                return SL_ERANGE;
        }
        if (*p)
            return SL_EINVAL;
        for (int i = 0; i < exp; i++) {
            if (sign > 0) {
                if (mul_checked(&mult_num, 10) < 0)
                    return SL_ERANGE;
            } else {
                mult_den *= 10;
            }
        }
    } else {
        size_t i;
        for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
            if (!strcmp(p, suffixes[i].suffix))
                break;
        }
        if (i == sizeof(suffixes) / sizeof(suffixes[0]))
            return SL_EINVAL;
        if (mul_checked(&mult_num, suffixes[i].num) < 0 && whole + frac > 0)
            return SL_ERANGE;
        mult_den *= suffixes[i].den;
    }

    __int128 v = whole;
    if (mul_checked(&v, mult_num) < 0)
        return SL_ERANGE;
    __int128 fnum = frac * mult_num;
    /* ceil((whole*num + frac*num/frac_scale) / den) */
    __int128 total_num = v * frac_scale + fnum;
    __int128 total_den = frac_scale * mult_den;
    __int128 q = total_num / total_den + (total_num % total_den != 0);
    if (q > INT64_MAX)
        return SL_ERANGE;
    *out_milli = (int64_t)q;
    return 0;
}
