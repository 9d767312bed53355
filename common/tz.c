/*
 * common/tz.c - IANA time zones from TZif files (RFC 8536), without touching TZ.
 *
 * A loaded zone is three things:
 *
 *   initial_off   the offset before the first listed change (TZif time type 0)
 *   changes[]     (instant, offset) pairs in strictly ascending order of instant,
 *                 each with an offset different from the one before it: the file's
 *                 transitions with the ones that change only the abbreviation or
 *                 the DST flag dropped, so lookups and "next change" are one binary
 *                 search each
 *   rule          the footer's POSIX TZ string, e.g. "EST5EDT,M3.2.0,M11.1.0",
 *                 which governs every instant at or after rule_from (one second
 *                 after the last transition; all instants if the file lists none)
 *
 * The rule is evaluated per year: rule_transitions() lists a year's two changes
 * (DST starts, DST ends) as instants, and the offset at t is the one set by the
 * latest change at or before t among the years around t. That one formulation
 * covers northern rules, southern rules whose DST spans New Year, and the RFC 8536
 * idiom for permanent DST ("EST5EDT,0/0,J365/25", where the end of one year and
 * the start of the next coincide and the later-listed change wins).
 *
 * Parsing checks everything before trusting it: the header counts against the
 * bytes present (in 64-bit arithmetic, so no count can overflow a size), every
 * type index against typecnt, abbreviation indexes against charcnt, transition
 * order, offsets against RFC 8536's +-25:59:59, flag bytes, the footer's framing
 * and grammar. A file that fails any check is SL_EPARSE as a whole.
 *
 * Conversions from wall-clock time (sl_tz_local_to_utc) do not assume anything
 * about the shape of transitions: they collect the offsets in force within two
 * days of the reading (offsets never exceed 26 hours) and keep each candidate
 * instant local - offset whose own offset is that offset.
 */
#include "common/tz.h"
#include "common/error.h"
#include "common/timeutil.h"
#include "common/xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TZ_T_LIMIT      INT64_C(1000000000000000) /* +-10^15 s: see tz.h */
#define TZ_FILE_MAX     ((size_t)1 << 20)
#define TZ_OFF_MAX      93599 /* RFC 8536: utoff within [-89999, 93599] */
#define TZ_OFF_MIN      (-89999)
#define TZ_DEFAULT_DIR  "/usr/share/zoneinfo"
#define TZ_LOCAL_WINDOW (2 * SL_SECONDS_PER_DAY)

enum rule_date_kind {
    RULE_JULIAN1, /* Jn: day n of 1..365, February 29 never counted */
    RULE_JULIAN0, /* n: day n of 0..365, February 29 counted in leap years */
    RULE_MONTH,   /* Mm.w.d: weekday d (0 = Sunday) of week w (5 = last) of month m */
};

struct rule_date {
    enum rule_date_kind kind;
    int n;          /* RULE_JULIAN1, RULE_JULIAN0 */
    int m, w, d;    /* RULE_MONTH */
    int32_t time_s; /* local time of day of the change, -167h..167h (RFC 8536) */
};

struct tz_rule {
    int32_t std_off; /* seconds east, outside DST */
    int32_t dst_off; /* seconds east, during DST */
    bool has_dst;    /* false: std_off always */
    struct rule_date start, end;
};

struct tz_change {
    int64_t at;    /* first instant of the new offset */
    int32_t utoff; /* seconds east from at on */
};

struct sl_tz {
    char *name;
    int32_t initial_off;       /* before changes[0] (and when there are none) */
    struct tz_change *changes; /* ascending; consecutive offsets differ */
    size_t nchanges;
    bool has_rule;     /* a non-empty footer was given */
    int64_t rule_from; /* the rule governs instants >= rule_from */
    struct tz_rule rule;
};

/* --- the POSIX TZ rule (the TZif footer) ----------------------------------------- */

struct rule_change {
    int64_t at;
    int32_t utoff;
};

static int64_t clamp_t(int64_t t)
{
    return t < -TZ_T_LIMIT ? -TZ_T_LIMIT : t > TZ_T_LIMIT ? TZ_T_LIMIT : t;
}

static int64_t year_of(int64_t t)
{
    int64_t y;
    unsigned m, d;
    sl_civil_from_days(sl_floor_div(t, SL_SECONDS_PER_DAY), &y, &m, &d);
    return y;
}

/* Days since 1970-01-01 of the date rd names in year y. */
static int64_t rule_date_days(const struct rule_date *rd, int64_t y)
{
    int64_t jan1 = sl_days_from_civil(y, 1, 1);
    switch (rd->kind) {
    case RULE_JULIAN1:
        return jan1 + rd->n - 1 + (sl_is_leap_year(y) && rd->n >= 60);
    case RULE_JULIAN0:
        return jan1 + rd->n;
    case RULE_MONTH:
    default: {
        int64_t first = sl_days_from_civil(y, (unsigned)rd->m, 1);
        int day = (rd->d - (int)sl_weekday_from_days(first) + 7) % 7 + 7 * (rd->w - 1);
        if (day >= (int)sl_days_in_month(y, (unsigned)rd->m))
            day -= 7; /* only "week 5" (the last) can overshoot, by one week */
        return first + day;
    }
    }
}

/* The DST start and end of year y, in that order (not sorted). A start is given in
 * standard time, an end in daylight time, as POSIX specifies. */
static void rule_transitions(const struct tz_rule *r, int64_t y, struct rule_change out[2])
{
    out[0].at = rule_date_days(&r->start, y) * SL_SECONDS_PER_DAY + r->start.time_s - r->std_off;
    out[0].utoff = r->dst_off;
    out[1].at = rule_date_days(&r->end, y) * SL_SECONDS_PER_DAY + r->end.time_s - r->dst_off;
    out[1].utoff = r->std_off;
}

/* Lists the changes of years y0..y0+nyears-1 sorted by instant; at equal instants
 * the later-listed change comes last, so "last one at or before t" wins. */
static size_t rule_changes_sorted(const struct tz_rule *r, int64_t y0, int nyears,
                                  struct rule_change *out)
{
    size_t n = 0;
    for (int i = 0; i < nyears; i++) {
        rule_transitions(r, y0 + i, out + n);
        n += 2;
    }
    for (size_t i = 1; i < n; i++) { /* insertion sort: stable, and n <= 12 */
        struct rule_change x = out[i];
        size_t j = i;
        while (j > 0 && out[j - 1].at > x.at) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = x;
    }
    return n;
}

static int32_t rule_offset_at(const struct tz_rule *r, int64_t t)
{
    struct rule_change ch[8];
    if (!r->has_dst)
        return r->std_off;
    t = clamp_t(t);
    /* Changes of year y lie within 8 days of it (rule times are at most 167h,
     * offsets 26h), so years y-2..y+1 hold every change at or before t that
     * matters: the latest one, and any others at the same instant. */
    size_t n = rule_changes_sorted(r, year_of(t) - 2, 4, ch);
    int32_t off = r->std_off;
    for (size_t i = 0; i < n && ch[i].at <= t; i++)
        off = ch[i].utoff;
    return off;
}

/* The first instant > t at which the rule's offset differs from cur. */
static int64_t rule_next_change(const struct tz_rule *r, int64_t t, int32_t cur)
{
    struct rule_change ch[12];
    if (!r->has_dst || r->std_off == r->dst_off || t >= TZ_T_LIMIT)
        return INT64_MAX;
    t = t < -TZ_T_LIMIT ? -TZ_T_LIMIT : t;
    int64_t y = year_of(t);
    size_t n = rule_changes_sorted(r, y - 2, 6, ch);
    /* Changes of year y lie within 8 days of it (167h rule times, 26h offsets), so
     * every change at or before `bound` belongs to a listed year: a group of
     * changes at one instant (one year's end, the next one's start) is never
     * cut in half at the end of the list. */
    int64_t bound = (sl_days_from_civil(y + 3, 1, 1) - 9) * SL_SECONDS_PER_DAY;
    for (size_t i = 0; i < n && ch[i].at <= bound; i++) {
        if (ch[i].at <= t)
            continue;
        /* the offset after every change at this same instant */
        size_t j = i;
        while (j + 1 < n && ch[j + 1].at == ch[i].at)
            j++;
        if (ch[j].utoff != cur)
            return ch[i].at;
        i = j;
    }
    /* Nothing changes the offset for about two years: a rule such as permanent
     * DST ("EST5EDT,0/0,J365/25") whose changes always cancel out. */
    return INT64_MAX;
}

/* [+-]hh[:mm[:ss]], hh at most max_hours; stores the signed number of seconds. */
static bool parse_hms(const char **pp, int max_hours, int32_t *out)
{
    const char *p = *pp;
    int sign = 1, h = 0, m = 0, s = 0, nd = 0;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    while (*p >= '0' && *p <= '9' && nd < 3) {
        h = h * 10 + (*p++ - '0');
        nd++;
    }
    if (nd == 0 || h > max_hours)
        return false;
    for (int part = 0; part < 2 && *p == ':'; part++) {
        int v = 0;
        p++;
        nd = 0;
        while (*p >= '0' && *p <= '9' && nd < 2) {
            v = v * 10 + (*p++ - '0');
            nd++;
        }
        if (nd == 0 || v > 59)
            return false;
        if (part == 0)
            m = v;
        else
            s = v;
    }
    *out = sign * (h * 3600 + m * 60 + s);
    *pp = p;
    return true;
}

/* An abbreviation: three or more letters, or <...> of three or more [A-Za-z0-9+-]. */
static bool parse_abbr(const char **pp)
{
    const char *p = *pp;
    size_t n = 0;
    if (*p == '<') {
        p++;
        while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
               *p == '+' || *p == '-') {
            p++;
            n++;
        }
        if (*p != '>' || n < 3)
            return false;
        p++;
    } else {
        while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) {
            p++;
            n++;
        }
        if (n < 3)
            return false;
    }
    *pp = p;
    return true;
}

static bool parse_int(const char **pp, int lo, int hi, int *out)
{
    const char *p = *pp;
    int v = 0, nd = 0;
    while (*p >= '0' && *p <= '9' && nd < 4) {
        v = v * 10 + (*p++ - '0');
        nd++;
    }
    if (nd == 0 || v < lo || v > hi)
        return false;
    *out = v;
    *pp = p;
    return true;
}

/* date[/time] */
static bool parse_rule_date(const char **pp, struct rule_date *rd)
{
    const char *p = *pp;
    if (*p == 'J') {
        p++;
        rd->kind = RULE_JULIAN1;
        if (!parse_int(&p, 1, 365, &rd->n))
            return false;
    } else if (*p == 'M') {
        p++;
        rd->kind = RULE_MONTH;
        if (!parse_int(&p, 1, 12, &rd->m) || *p++ != '.' || !parse_int(&p, 1, 5, &rd->w) ||
            *p++ != '.' || !parse_int(&p, 0, 6, &rd->d))
            return false;
    } else {
        rd->kind = RULE_JULIAN0;
        if (!parse_int(&p, 0, 365, &rd->n))
            return false;
    }
    rd->time_s = 7200;
    if (*p == '/') {
        p++;
        if (!parse_hms(&p, 167, &rd->time_s))
            return false;
    }
    *pp = p;
    return true;
}

/* Parses a whole POSIX TZ string ("std offset [dst [offset] [,start[/time],end[/time]]]"). */
static bool parse_posix_tz(const char *s, struct tz_rule *r)
{
    const char *p = s;
    int32_t v;

    memset(r, 0, sizeof(*r));
    if (!parse_abbr(&p) || !parse_hms(&p, 24, &v))
        return false;
    r->std_off = -v; /* POSIX offsets count hours west */
    if (*p == '\0')
        return true;
    if (!parse_abbr(&p))
        return false;
    r->has_dst = true;
    r->dst_off = r->std_off + 3600;
    if (*p != ',' && *p != '\0') {
        if (!parse_hms(&p, 24, &v))
            return false;
        r->dst_off = -v;
    }
    if (*p == '\0') {
        /* No rule: the US rules, which is what glibc and tzcode assume too. */
        r->start = (struct rule_date){RULE_MONTH, 0, 3, 2, 0, 7200};
        r->end = (struct rule_date){RULE_MONTH, 0, 11, 1, 0, 7200};
        return true;
    }
    if (*p++ != ',' || !parse_rule_date(&p, &r->start) || *p++ != ',' ||
        !parse_rule_date(&p, &r->end))
        return false;
    return *p == '\0';
}

/* --- TZif ------------------------------------------------------------------------- */

struct tzif_header {
    int version;                /* 0 for version 1, else '2', '3', ... */
    uint32_t isutcnt, isstdcnt; /* counts, in file order */
    uint32_t leapcnt, timecnt, typecnt, charcnt;
};

struct reader {
    const unsigned char *buf;
    size_t len, pos;
};

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

static bool read_header(struct reader *rd, struct tzif_header *h)
{
    const unsigned char *p = rd->buf + rd->pos;
    if (rd->len - rd->pos < 44 || memcmp(p, "TZif", 4) != 0)
        return false;
    h->version = p[4];
    if (h->version != 0 && (h->version < '2' || h->version > '9'))
        return false;
    h->isutcnt = be32(p + 20);
    h->isstdcnt = be32(p + 24);
    h->leapcnt = be32(p + 28);
    h->timecnt = be32(p + 32);
    h->typecnt = be32(p + 36);
    h->charcnt = be32(p + 40);
    rd->pos += 44;
    return true;
}

static uint64_t data_size(const struct tzif_header *h, unsigned time_size)
{
    return (uint64_t)h->timecnt * time_size + h->timecnt + (uint64_t)h->typecnt * 6 + h->charcnt +
           (uint64_t)h->leapcnt * (time_size + 4) + h->isstdcnt + h->isutcnt;
}

/* Reads and validates one data block and fills tz's offset table. */
static int read_data(struct reader *rd, const struct tzif_header *h, unsigned time_size,
                     struct sl_tz *tz)
{
    uint64_t need = data_size(h, time_size);
    if (need > rd->len - rd->pos)
        return SL_EPARSE;
    if (h->typecnt == 0 || h->typecnt > 256 || h->leapcnt != 0 ||
        (h->isstdcnt != 0 && h->isstdcnt != h->typecnt) ||
        (h->isutcnt != 0 && h->isutcnt != h->typecnt))
        return SL_EPARSE;

    const unsigned char *times = rd->buf + rd->pos;
    const unsigned char *idx = times + (size_t)h->timecnt * time_size;
    const unsigned char *types = idx + h->timecnt;
    const unsigned char *flags = types + (size_t)h->typecnt * 6 + h->charcnt;
    int32_t offs[256];

    for (uint32_t i = 0; i < h->typecnt; i++) {
        const unsigned char *t = types + (size_t)i * 6;
        int32_t off = (int32_t)be32(t);
        if (off < TZ_OFF_MIN || off > TZ_OFF_MAX || t[4] > 1 || t[5] >= h->charcnt)
            return SL_EPARSE;
        offs[i] = off;
    }
    for (uint32_t i = 0; i < h->isstdcnt + h->isutcnt; i++)
        if (flags[i] > 1)
            return SL_EPARSE;

    tz->initial_off = offs[0];
    tz->changes = xmalloc(sizeof(*tz->changes) * (h->timecnt ? h->timecnt : 1));
    tz->nchanges = 0;
    int32_t prev_off = offs[0];
    int64_t prev_at = 0;
    for (uint32_t i = 0; i < h->timecnt; i++) {
        int64_t at = time_size == 8 ? be64(times + (size_t)i * 8)
                                    : (int64_t)(int32_t)be32(times + (size_t)i * 4);
        if ((i > 0 && at <= prev_at) || idx[i] >= h->typecnt)
            return SL_EPARSE;
        prev_at = at;
        if (offs[idx[i]] != prev_off) {
            tz->changes[tz->nchanges].at = at;
            tz->changes[tz->nchanges].utoff = offs[idx[i]];
            tz->nchanges++;
            prev_off = offs[idx[i]];
        }
    }
    tz->rule_from = h->timecnt == 0 ? INT64_MIN : prev_at == INT64_MAX ? INT64_MAX : prev_at + 1;
    rd->pos += (size_t)need;
    return 0;
}

static int parse_tzif(struct sl_tz *tz, const unsigned char *buf, size_t len)
{
    struct reader rd = {buf, len, 0};
    struct tzif_header h1, h2;

    if (!read_header(&rd, &h1))
        return SL_EPARSE;
    if (h1.version == 0) {
        int rc = read_data(&rd, &h1, 4, tz);
        if (rc == 0 && rd.pos != rd.len)
            rc = SL_EPARSE;
        return rc;
    }

    /* Version 2+: skip the 32-bit block, whose content we do not use. */
    uint64_t skip = data_size(&h1, 4);
    if (skip > rd.len - rd.pos)
        return SL_EPARSE;
    rd.pos += (size_t)skip;
    if (!read_header(&rd, &h2) || h2.version != h1.version)
        return SL_EPARSE;
    int rc = read_data(&rd, &h2, 8, tz);
    if (rc < 0)
        return rc;

    /* The footer: "\n" TZ-string "\n", and nothing after it. */
    const char *f = (const char *)buf + rd.pos;
    size_t flen = rd.len - rd.pos;
    if (flen < 2 || f[0] != '\n' || f[flen - 1] != '\n')
        return SL_EPARSE;
    size_t slen = flen - 2;
    if (memchr(f + 1, '\n', slen) || memchr(f + 1, '\0', slen) || slen > 255)
        return SL_EPARSE;
    if (slen > 0) {
        char spec[256];
        memcpy(spec, f + 1, slen);
        spec[slen] = '\0';
        if (!parse_posix_tz(spec, &tz->rule))
            return SL_EPARSE;
        tz->has_rule = tz->rule_from != INT64_MAX;
    }
    return 0;
}

/* --- loading ---------------------------------------------------------------------- */

static bool valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > SL_TZ_NAME_MAX || name[0] == '/' || strstr(name, ".."))
        return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '+' || c == '-' || c == '/'))
            return false;
    }
    return true;
}

/* Reads a regular file of at most TZ_FILE_MAX bytes. O_NONBLOCK so that a FIFO
 * planted in the zone directory cannot block the open. */
static int read_zone_file(unsigned char **out, size_t *out_len, const char *path)
{
    int result = SL_EIO;
    unsigned char *buf = NULL;
    size_t len = 0;
    struct stat st;
    int fd = open(path, O_RDONLY | O_NONBLOCK);

    if (fd < 0)
        return errno == ENOENT || errno == ENOTDIR || errno == EISDIR ? SL_ENOENT : SL_EIO;
    if (fstat(fd, &st) < 0)
        goto cleanup;
    if (!S_ISREG(st.st_mode)) {
        result = SL_ENOENT;
        goto cleanup;
    }
    buf = xmalloc(TZ_FILE_MAX + 1);
    for (;;) {
        ssize_t n = read(fd, buf + len, TZ_FILE_MAX + 1 - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            goto cleanup;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > TZ_FILE_MAX) {
            result = SL_ETOOBIG;
            goto cleanup;
        }
    }
    *out = buf;
    *out_len = len;
    buf = NULL;
    result = 0;
cleanup:
    free(buf);
    close(fd);
    return result;
}

static struct sl_tz *tz_new(const char *name)
{
    struct sl_tz *tz = xcalloc(1, sizeof(*tz));
    tz->name = xstrdup(name);
    tz->rule_from = INT64_MIN;
    return tz;
}

int sl_tz_from_tzif(struct sl_tz **out, const char *name, const void *data, size_t len)
{
    if (len > TZ_FILE_MAX)
        return SL_ETOOBIG;
    struct sl_tz *tz = tz_new(name ? name : "");
    int rc = parse_tzif(tz, data, len);
    if (rc < 0) {
        sl_tz_free(tz);
        return rc;
    }
    *out = tz;
    return 0;
}

int sl_tz_load(struct sl_tz **out, const char *name)
{
    int result;
    unsigned char *buf = NULL;
    size_t len = 0;
    char *path = NULL;

    if (!name || !valid_name(name))
        return SL_EINVAL;
    if (!strcmp(name, "UTC") || !strcmp(name, "Etc/UTC")) {
        *out = tz_new(name);
        return 0;
    }
    const char *dir = getenv("TZDIR");
    path = xasprintf("%s/%s", dir && *dir ? dir : TZ_DEFAULT_DIR, name);
    result = read_zone_file(&buf, &len, path);
    if (result == 0)
        result = sl_tz_from_tzif(out, name, buf, len);
    free(path);
    free(buf);
    return result;
}

void sl_tz_free(struct sl_tz *tz)
{
    if (!tz)
        return;
    free(tz->name);
    free(tz->changes);
    free(tz);
}

const char *sl_tz_name(const struct sl_tz *tz)
{
    return tz->name;
}

/* --- queries ---------------------------------------------------------------------- */

static bool in_rule(const struct sl_tz *tz, int64_t t)
{
    return tz->has_rule && t >= tz->rule_from;
}

/* Index of the first change with at > t (nchanges if none). */
static size_t first_change_after(const struct sl_tz *tz, int64_t t)
{
    size_t lo = 0, hi = tz->nchanges;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (tz->changes[mid].at <= t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int32_t sl_tz_offset_at(const struct sl_tz *tz, int64_t unix_s)
{
    if (in_rule(tz, unix_s))
        return rule_offset_at(&tz->rule, unix_s);
    size_t i = first_change_after(tz, unix_s);
    return i == 0 ? tz->initial_off : tz->changes[i - 1].utoff;
}

int64_t sl_tz_next_change(const struct sl_tz *tz, int64_t unix_s)
{
    int32_t cur = sl_tz_offset_at(tz, unix_s);
    if (!in_rule(tz, unix_s)) {
        size_t i = first_change_after(tz, unix_s);
        /* Listed changes all lie before rule_from, and each changes the offset. */
        if (i < tz->nchanges)
            return tz->changes[i].at;
        if (!tz->has_rule)
            return INT64_MAX;
        if (rule_offset_at(&tz->rule, tz->rule_from) != cur)
            return tz->rule_from;
        unix_s = tz->rule_from;
    }
    return rule_next_change(&tz->rule, unix_s, cur);
}

int sl_tz_local_to_utc(const struct sl_tz *tz, int64_t local_s, int64_t out_utc[2])
{
    int32_t offs[64];
    size_t noffs = 0;
    int64_t sol[64];
    size_t nsol = 0;

    if (local_s < -TZ_T_LIMIT || local_s > TZ_T_LIMIT)
        return 0;
    /* Every offset that is in force somewhere within two days of the reading: any
     * instant showing the reading lies within 26 hours of it. The walk is bounded
     * so that a file with absurdly many changes costs time, not correctness of
     * memory. */
    int64_t t = local_s - TZ_LOCAL_WINDOW, hi = local_s + TZ_LOCAL_WINDOW;
    offs[noffs++] = sl_tz_offset_at(tz, t);
    for (int steps = 0; steps < 4096 && noffs < 64; steps++) {
        t = sl_tz_next_change(tz, t);
        if (t > hi)
            break;
        int32_t o = sl_tz_offset_at(tz, t);
        bool seen = false;
        for (size_t i = 0; i < noffs && !seen; i++)
            seen = offs[i] == o;
        if (!seen)
            offs[noffs++] = o;
    }
    for (size_t i = 0; i < noffs; i++) {
        int64_t cand = local_s - offs[i];
        if (sl_tz_offset_at(tz, cand) == offs[i])
            sol[nsol++] = cand; /* distinct offsets give distinct candidates */
    }
    if (nsol == 0)
        return 0;
    int64_t lo_sol = sol[0], hi_sol = sol[0];
    for (size_t i = 1; i < nsol; i++) {
        lo_sol = sol[i] < lo_sol ? sol[i] : lo_sol;
        hi_sol = sol[i] > hi_sol ? sol[i] : hi_sol;
    }
    out_utc[0] = lo_sol;
    if (nsol == 1)
        return 1;
    out_utc[1] = hi_sol;
    return 2;
}

int64_t sl_tz_resolve_local(const struct sl_tz *tz, int64_t local_s)
{
    int64_t inst[2];
    local_s = clamp_t(local_s);
    if (sl_tz_local_to_utc(tz, local_s, inst) > 0)
        return inst[0];
    /* In a gap: the first change after which the wall clock reads later than
     * local_s. Before the window's start it reads earlier (offsets < 26h). */
    int64_t t = local_s - TZ_LOCAL_WINDOW;
    for (int steps = 0; steps < 4096; steps++) {
        t = sl_tz_next_change(tz, t);
        if (t > local_s + TZ_LOCAL_WINDOW)
            break;
        if (t + sl_tz_offset_at(tz, t) > local_s)
            return t;
    }
    return local_s - sl_tz_offset_at(tz, local_s); /* unreachable for sane files */
}
