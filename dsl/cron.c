/*
 * dsl/cron.c - cron schedules.
 *
 * Parsing turns each field into a bit set (minute 0-59, hour 0-23, day 1-31,
 * month 1-12, weekday 0-6 with 7 folded onto 0) plus, for the two day fields, a
 * "star" flag that selects the day rule: both restricted -> a day matches if
 * either field does; otherwise both must (the star field matches every day, so
 * in effect only the other one counts). The flag follows robfig/cron exactly: it
 * is set when some list element is a bare * or ? with no step or step 1.
 *
 * Finding the next fire time is a walk over spans of constant UTC offset. Within
 * a span the map from instants to wall-clock readings is a plain shift, so the
 * search is pure civil arithmetic (civil_next: month, then day, then hour, then
 * minute, each jumping straight to the next set bit); the first matching wall
 * time inside the span is the answer. If the span holds none, the walk moves to
 * the next span (sl_tz_next_change()). This yields the earliest instant after
 * `after` whose wall-clock reading matches, which is robfig/cron's DST policy:
 *
 *   spring forward (New York 2012-03-11, 02:00 EST -> 03:00 EDT): the EST span
 *   ends at wall time 02:00 and the EDT span starts at 03:00, so 02:xx is never
 *   a reading and "30 2 * * *" fires next on 03-12 at 02:30 EDT.
 *
 *   fall back (2012-11-04, 02:00 EDT -> 01:00 EST): the EDT span covers wall
 *   times up to 02:00 and the EST span starts again at 01:00, so "30 1 * * *"
 *   fires at 01:30 EDT and again at 01:30 EST, and "0 * * * *" fires at 01:00
 *   EDT, 01:00 EST and 02:00 EST.
 *
 * Termination: a spec with no possible day at all (day 30 of February only) is
 * recognised at parse time. Otherwise the walk stops after HORIZON_YEARS years of
 * wall time, which every satisfiable spec fires within (the longest wait is for
 * February 29: 2096 -> 2104), so the bound only cuts off specs that can only fire
 * inside DST gaps. A step of 0 is rejected at parse time, so no loop can stall.
 */
#include "dsl/cron.h"
#include "common/duration.h"
#include "common/error.h"
#include "common/timeutil.h"
#include "common/tz.h"
#include "common/xalloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HORIZON_YEARS 8
#define CRON_T_LIMIT  INT64_C(1000000000000000) /* +-10^15 s, as in common/tz.h */

struct dsl_cron {
    uint64_t minutes; /* bit n: minute n, 0-59 */
    uint32_t hours;   /* bit n: hour n, 0-23 */
    uint32_t doms;    /* bit n: day of month n, 1-31 */
    uint32_t months;  /* bit n: month n, 1-12 */
    uint32_t dows;    /* bit n: weekday n, 0 = Sunday .. 6 */
    bool dom_star;    /* day-of-month unrestricted (robfig's star bit) */
    bool dow_star;    /* day-of-week unrestricted */
    bool satisfiable; /* some month has some matching day */
    bool every;       /* "@every": only the three fields below matter */
    int64_t every_s;  /* period, >= 1 */
    int64_t anchor_s; /* fires at anchor_s + k * every_s */
};

enum field_id { F_MINUTE, F_HOUR, F_DOM, F_MONTH, F_DOW, F_COUNT };

struct field_def {
    const char *name;         /* for messages: "minute field: ..." */
    int min, max;             /* accepted values; "*" and "N/step" span min..max */
    const char *const *names; /* 3-letter names for min.., or NULL */
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                          "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const dow_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

/* Day-of-week accepts 0-7 (7 = Sunday, as Vixie cron and croniter do); "*" and
 * "N/step" run to 7 as in croniter, so MON/2 is Mon, Wed, Fri, Sun. */
static const struct field_def fields[F_COUNT] = {
    {"minute", 0, 59, NULL},          {"hour", 0, 23, NULL},
    {"day-of-month", 1, 31, NULL},    {"month", 1, 12, month_names},
    {"day-of-week", 0, 7, dow_names},
};

static const struct {
    const char *name;
    const char *spec;
} macros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool ieq(const char *a, size_t alen, const char *b)
{
    if (alen != strlen(b))
        return false;
    for (size_t i = 0; i < alen; i++)
        if (lower(a[i]) != lower(b[i]))
            return false;
    return true;
}

/* --- parsing ---------------------------------------------------------------------- */

/* Parses one value (a number or a name) at *pp; the value's token is the longest
 * run of letters and digits. */
static int parse_value(const char **pp, const char *end, const struct field_def *f, int *out,
                       char *err, size_t errlen)
{
    const char *p = *pp, *tok = p;
    while (p < end && is_alnum(*p))
        p++;
    size_t n = (size_t)(p - tok);
    if (n == 0)
        return SL_EINVAL; /* the caller reports the element */

    bool digits = true;
    for (size_t i = 0; i < n; i++)
        digits = digits && is_digit(tok[i]);
    if (digits) {
        long v = 0;
        for (size_t i = 0; i < n && v <= 1000; i++)
            v = v * 10 + (tok[i] - '0');
        if (v < f->min || v > f->max) {
            set_err(err, errlen, "%s field: value %.*s out of range %d-%d", f->name, (int)n, tok,
                    f->min, f->max);
            return SL_EINVAL;
        }
        *out = (int)v;
        *pp = p;
        return 0;
    }
    for (int i = 0; f->names && f->names[i]; i++) {
        if (ieq(tok, n, f->names[i])) {
            *out = f->min + i;
            *pp = p;
            return 0;
        }
    }
    set_err(err, errlen, "%s field: invalid value \"%.*s\"", f->name, (int)n, tok);
    return SL_EINVAL;
}

/* Explains Quartz-style extensions sluice does not implement, if elem uses one.
 * Neither day field has a name containing 'l' or (day-of-month: any name at all)
 * 'w', so those letters can only mean the extension. */
static bool unsupported_feature(enum field_id id, const char *elem, size_t n, char *err,
                                size_t errlen)
{
    const char *what = NULL;
    bool has_l = memchr(elem, 'L', n) || memchr(elem, 'l', n);
    bool has_w = memchr(elem, 'W', n) || memchr(elem, 'w', n);
    if (id == F_DOW && memchr(elem, '#', n))
        what = "\"#\" (nth weekday of the month)";
    else if (id == F_DOM && has_l)
        what = "\"L\" (last day of the month)";
    else if (id == F_DOM && has_w)
        what = "\"W\" (nearest weekday)";
    else if (id == F_DOW && has_l)
        what = "\"L\" (last weekday of the month)";
    if (!what)
        return false;
    set_err(err, errlen, "%s field: %s is not supported", fields[id].name, what);
    return true;
}

/* One list element: ( "*" | "?" | value [ "-" value ] ) [ "/" step ]. */
static int parse_element(enum field_id id, const char *elem, size_t n, uint64_t *bits, bool *star,
                         char *err, size_t errlen)
{
    const struct field_def *f = &fields[id];
    const char *p = elem, *end = elem + n, *base_end;
    int lo, hi, step = 1;
    bool any = false, single = false;
    int rc;

    if (n == 0) {
        set_err(err, errlen, "%s field: empty list element", f->name);
        return SL_EINVAL;
    }
    if (unsupported_feature(id, elem, n, err, errlen))
        return SL_EINVAL;
    if (*p == '*' || *p == '?') {
        any = true;
        lo = f->min;
        hi = f->max;
        p++;
    } else {
        if ((rc = parse_value(&p, end, f, &lo, err, errlen)) < 0)
            goto bad_element;
        hi = lo;
        single = true;
        if (p < end && *p == '-') {
            p++;
            if ((rc = parse_value(&p, end, f, &hi, err, errlen)) < 0)
                goto bad_element;
            single = false;
        }
    }
    base_end = p;
    if (p < end && *p == '/') {
        const char *s = ++p;
        long v = 0;
        while (p < end && is_digit(*p)) {
            if (v <= 1000)
                v = v * 10 + (*p - '0');
            p++;
        }
        if (p == s || p != end) {
            set_err(err, errlen, "%s field: invalid step \"%.*s\"", f->name, (int)(end - s), s);
            return SL_EINVAL;
        }
        if (v < 1) {
            set_err(err, errlen, "%s field: step must be at least 1", f->name);
            return SL_EINVAL;
        }
        if (v > f->max - f->min + 1) {
            set_err(err, errlen, "%s field: step %.*s out of range 1-%d", f->name, (int)(end - s),
                    s, f->max - f->min + 1);
            return SL_EINVAL;
        }
        step = (int)v;
        if (single)
            hi = f->max; /* "N/step" is "N-max/step" */
    }
    if (p != end) {
        set_err(err, errlen, "%s field: invalid value \"%.*s\"", f->name, (int)n, elem);
        return SL_EINVAL;
    }
    if (lo > hi) {
        set_err(err, errlen, "%s field: range %.*s runs backwards%s", f->name,
                (int)(base_end - elem), elem,
                id == F_DOW && hi == 0 ? " (write sunday as 7 to end a range on it)" : "");
        return SL_EINVAL;
    }
    for (int v = lo; v <= hi; v += step)
        *bits |= (uint64_t)1 << (id == F_DOW && v == 7 ? 0 : v);
    if (any && step == 1)
        *star = true;
    return 0;

bad_element:
    /* parse_value() explained bad numbers and names; an empty value it did not */
    if (err && errlen > 0 && err[0] == '\0')
        set_err(err, errlen, "%s field: invalid value \"%.*s\"", f->name, (int)n, elem);
    return rc;
}

static int parse_field(enum field_id id, const char *s, size_t n, uint64_t *bits, bool *star,
                       char *err, size_t errlen)
{
    const char *p = s, *end = s + n;
    *bits = 0;
    *star = false;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        int rc = parse_element(id, p, (size_t)(e - p), bits, star, err, errlen);
        if (rc < 0)
            return rc;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

/* True if some selected month has some selected day of month (February counting
 * 29 days): else a spec whose day rule is "day-of-month only" can never fire. */
static bool some_valid_date(uint32_t months, uint32_t doms)
{
    static const int max_days[13] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    for (int m = 1; m <= 12; m++)
        for (int d = 1; d <= max_days[m]; d++)
            if ((months >> m & 1) && (doms >> d & 1))
                return true;
    return false;
}

static int parse_fields(struct dsl_cron *c, const char *s, char *err, size_t errlen)
{
    const char *tok[F_COUNT + 1];
    size_t len[F_COUNT + 1];
    int nf = 0;
    const char *p = s;

    for (;;) {
        while (*p && is_space(*p))
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && !is_space(*p))
            p++;
        if (nf < F_COUNT + 1) {
            tok[nf] = start;
            len[nf] = (size_t)(p - start);
        }
        nf++;
    }
    if (nf == 0) {
        set_err(err, errlen, "empty schedule");
        return SL_EINVAL;
    }
    if (nf != F_COUNT) {
        set_err(err, errlen, "expected 5 fields, got %d", nf);
        return SL_EINVAL;
    }

    uint64_t bits[F_COUNT];
    bool star[F_COUNT];
    for (int i = 0; i < F_COUNT; i++) {
        int rc = parse_field((enum field_id)i, tok[i], len[i], &bits[i], &star[i], err, errlen);
        if (rc < 0)
            return rc;
    }
    c->minutes = bits[F_MINUTE];
    c->hours = (uint32_t)bits[F_HOUR];
    c->doms = (uint32_t)bits[F_DOM];
    c->months = (uint32_t)bits[F_MONTH];
    c->dows = (uint32_t)bits[F_DOW];
    c->dom_star = star[F_DOM];
    c->dow_star = star[F_DOW];
    /* Both restricted: every month has every weekday, so the OR always has days.
     * Day-of-month unrestricted: every weekday occurs. Only a restricted
     * day-of-month under an unrestricted day-of-week can be impossible. */
    c->satisfiable = !c->dow_star || c->dom_star || some_valid_date(c->months, c->doms);
    return 0;
}

static int parse_every(struct dsl_cron *c, const char *arg, size_t n, char *err, size_t errlen)
{
    char buf[64];
    int64_t ms;

    if (n == 0) {
        set_err(err, errlen, "@every: missing duration");
        return SL_EINVAL;
    }
    if (n >= sizeof(buf) || memchr(arg, ' ', n) || memchr(arg, '\t', n)) {
        set_err(err, errlen, "@every: invalid duration \"%.*s\"", (int)n, arg);
        return SL_EINVAL;
    }
    memcpy(buf, arg, n);
    buf[n] = '\0';
    int rc = sl_duration_parse(&ms, buf);
    if (rc == SL_ERANGE) {
        set_err(err, errlen, "@every: duration \"%s\" is too long", buf);
        return SL_EINVAL;
    }
    if (rc < 0) {
        set_err(err, errlen, "@every: invalid duration \"%s\"", buf);
        return SL_EINVAL;
    }
    if (ms < 1000) {
        set_err(err, errlen, "@every: duration must be at least 1s");
        return SL_EINVAL;
    }
    if (ms % 1000 != 0) {
        set_err(err, errlen, "@every: duration must be a whole number of seconds");
        return SL_EINVAL;
    }
    c->every = true;
    c->every_s = ms / 1000;
    return 0;
}

int dsl_cron_parse(struct dsl_cron **out, const char *spec, char *err, size_t errlen)
{
    int result = SL_EINVAL;
    struct dsl_cron *c = xcalloc(1, sizeof(*c));
    const char *s = spec ? spec : "", *end;

    set_err(err, errlen, "%s", "");
    while (*s && is_space(*s))
        s++;
    end = s + strlen(s);
    while (end > s && is_space(end[-1]))
        end--;

    if (*s != '@') {
        result = parse_fields(c, s, err, errlen);
        goto cleanup;
    }

    /* A macro: the word up to the first space, then (for @every) one argument. */
    const char *w = s, *arg;
    while (w < end && !is_space(*w))
        w++;
    size_t wlen = (size_t)(w - s);
    for (arg = w; arg < end && is_space(*arg); arg++)
        ;
    if (ieq(s, wlen, "@every")) {
        result = parse_every(c, arg, (size_t)(end - arg), err, errlen);
        goto cleanup;
    }
    for (size_t i = 0; i < sizeof(macros) / sizeof(macros[0]); i++) {
        if (!ieq(s, wlen, macros[i].name))
            continue;
        if (arg < end) {
            set_err(err, errlen, "unexpected text after \"%s\"", macros[i].name);
            goto cleanup;
        }
        result = parse_fields(c, macros[i].spec, err, errlen);
        goto cleanup;
    }
    set_err(err, errlen, "unknown macro \"%.*s\"", (int)wlen, s);
cleanup:
    if (result < 0) {
        free(c);
        return result;
    }
    *out = c;
    return 0;
}

void dsl_cron_free(struct dsl_cron *c)
{
    free(c);
}

bool dsl_cron_is_every(const struct dsl_cron *c)
{
    return c->every;
}

void dsl_cron_set_anchor(struct dsl_cron *c, int64_t anchor_unix)
{
    c->anchor_s = anchor_unix;
}

/* --- evaluation ------------------------------------------------------------------- */

/* The lowest set bit of mask in [from, max], or -1. */
static int next_bit(uint64_t mask, int from, int max)
{
    for (int i = from; i <= max; i++)
        if (mask >> i & 1)
            return i;
    return -1;
}

struct civil {
    int64_t days; /* since 1970-01-01, always the date y-m-d below */
    int64_t y;
    unsigned m, d;
    int h, mi;
};

static void next_day(struct civil *t)
{
    t->days++;
    t->h = t->mi = 0;
    if (++t->d > sl_days_in_month(t->y, t->m)) {
        t->d = 1;
        if (++t->m > 12) {
            t->m = 1;
            t->y++;
        }
    }
}

static bool day_matches(const struct dsl_cron *c, const struct civil *t)
{
    bool dom = c->doms >> t->d & 1;
    bool dow = c->dows >> sl_weekday_from_days(t->days) & 1;
    if (c->dom_star || c->dow_star)
        return dom && dow;
    return dom || dow;
}

/*
 * The earliest wall time L with from <= L < limit, L on a whole minute, that
 * matches c's fields. Returns 1 and sets *out; 0 if there is none before limit;
 * -1 if the search passed the end of year_limit first.
 */
static int civil_next(const struct dsl_cron *c, int64_t from, int64_t limit, int64_t year_limit,
                      int64_t *out)
{
    struct civil t;
    int64_t L = sl_floor_div(from, 60) * 60;
    if (L < from)
        L += 60;
    t.days = sl_floor_div(L, SL_SECONDS_PER_DAY);
    int secs = (int)(L - t.days * SL_SECONDS_PER_DAY);
    t.h = secs / 3600;
    t.mi = secs % 3600 / 60;
    sl_civil_from_days(t.days, &t.y, &t.m, &t.d);

    for (;;) {
        if (t.y > year_limit)
            return -1;
        L = t.days * SL_SECONDS_PER_DAY + t.h * 3600 + t.mi * 60;
        if (L >= limit)
            return 0;
        if (!(c->months >> t.m & 1)) {
            int m = next_bit(c->months, (int)t.m + 1, 12);
            if (m < 0) {
                t.y++;
                m = next_bit(c->months, 1, 12);
            }
            t.m = (unsigned)m;
            t.d = 1;
            t.h = t.mi = 0;
            t.days = sl_days_from_civil(t.y, t.m, 1);
            continue;
        }
        if (!day_matches(c, &t)) {
            next_day(&t);
            continue;
        }
        if (!(c->hours >> t.h & 1)) {
            int h = next_bit(c->hours, t.h + 1, 23);
            if (h < 0) {
                next_day(&t);
            } else {
                t.h = h;
                t.mi = 0;
            }
            continue;
        }
        if (!(c->minutes >> t.mi & 1)) {
            int mi = next_bit(c->minutes, t.mi + 1, 59);
            if (mi >= 0) {
                t.mi = mi;
            } else if (t.h < 23) {
                t.h++;
                t.mi = 0;
            } else {
                next_day(&t);
            }
            continue;
        }
        *out = L;
        return 1;
    }
}

static int every_next(int64_t *out_next, const struct dsl_cron *c, int64_t after)
{
    int64_t diff, k, next;
    /* next = anchor + (floor((after - anchor) / every) + 1) * every */
    if (__builtin_sub_overflow(after, c->anchor_s, &diff))
        return SL_ERANGE;
    k = sl_floor_div(diff, c->every_s) + 1;
    if (__builtin_mul_overflow(k, c->every_s, &next) ||
        __builtin_add_overflow(next, c->anchor_s, &next))
        return SL_ERANGE;
    *out_next = next;
    return 0;
}

int dsl_cron_next(int64_t *out_next, const struct dsl_cron *c, const struct sl_tz *tz,
                  int64_t after_unix)
{
    if (after_unix < -CRON_T_LIMIT || after_unix > CRON_T_LIMIT)
        return SL_ERANGE;
    if (c->every)
        return every_next(out_next, c, after_unix);
    if (!c->satisfiable)
        return SL_ENOTFOUND;

    int64_t t = after_unix + 1;
    int32_t off = tz ? sl_tz_offset_at(tz, t) : 0;
    int64_t y;
    unsigned m, d;
    sl_civil_from_days(sl_floor_div(t + off, SL_SECONDS_PER_DAY), &y, &m, &d);
    int64_t year_limit = y + HORIZON_YEARS;
    int64_t t_limit = t + (HORIZON_YEARS + 2) * INT64_C(366) * SL_SECONDS_PER_DAY;

    /* One iteration per span of constant UTC offset. */
    while (t < t_limit) {
        off = tz ? sl_tz_offset_at(tz, t) : 0;
        int64_t change = tz ? sl_tz_next_change(tz, t) : INT64_MAX;
        int64_t limit = change >= t_limit ? INT64_MAX : change + off;
        int64_t local;
        int r = civil_next(c, t + off, limit, year_limit, &local);
        if (r > 0) {
            *out_next = local - off;
            return 0;
        }
        if (r < 0 || change >= t_limit)
            break;
        t = change;
    }
    return SL_ENOTFOUND;
}
