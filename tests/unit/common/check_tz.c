/*
 * tests/unit/common/check_tz.c - time zones from TZif files.
 *
 * The oracle is glibc: setenv("TZ", ...) + tzset() + localtime_r()'s tm_gmtoff,
 * used here in the test only (the library never touches TZ). Offsets are compared
 * for named zones over 1900-2100 at random instants and one second either side of
 * every change, for every zone of the installed database, for "slim" copies that
 * keep only the POSIX footer, and for footers given to glibc as TZ strings.
 * Malformed files are written to a temporary $TZDIR: every prefix of a real file,
 * one targeted corruption per validation rule, and random mutations must all fail
 * cleanly (ASan/UBSan watch the rest).
 */
#include "common/tz.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "tests/testutil.h"

#include <check.h>
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ZONEINFO "/usr/share/zoneinfo"

static const int64_t T1900 = -2208988800, T2100 = 4102444800;
/* glibc evaluates a POSIX TZ *string* (TZ="EST5EDT,M3.2.0,M11.1.0") as if every
 * year up to 1970 were 1970 (compute_change() in glibc's time/tzset.c starts from
 * "if (year > 1970) ... else t = 0"), so comparisons of rule-only zones against
 * glibc's TZ-string parsing start in 1971. Zone files are not affected. */
static const int64_t T1971 = 31536000;

/* --- helpers ---------------------------------------------------------------------- */

static uint64_t rng = 1;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int64_t rnd_between(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rnd() % (uint64_t)(hi - lo));
}

static struct sl_tz *load(const char *name)
{
    struct sl_tz *tz = NULL;
    int rc = sl_tz_load(&tz, name);
    ck_assert_msg(rc == 0, "loading %s: %s", name, sl_strerror(rc));
    return tz;
}

/* Makes glibc use TZ=tzvalue (a zone name or a POSIX TZ string), reading zone
 * files from the real database even while a test points TZDIR elsewhere. glibc
 * reads the file in tzset(); localtime_r() does not reload it. */
static void glibc_use(const char *tzvalue)
{
    const char *old = getenv("TZDIR");
    char *saved = old ? xstrdup(old) : NULL;
    setenv("TZDIR", ZONEINFO, 1);
    setenv("TZ", tzvalue, 1);
    tzset();
    if (saved)
        setenv("TZDIR", saved, 1);
    else
        unsetenv("TZDIR");
    free(saved);
}

/* glibc's UTC offset at t: its wall-clock reading minus t. (That is tm_gmtoff,
 * which strict POSIX mode hides; the broken-down fields carry the same.) */
static long glibc_offset(int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    ck_assert_ptr_nonnull(localtime_r(&tt, &tm));
    int64_t wall =
        sl_days_from_civil(tm.tm_year + 1900, (unsigned)tm.tm_mon + 1, (unsigned)tm.tm_mday) *
            SL_SECONDS_PER_DAY +
        tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
    return (long)(wall - t);
}

/* Compares tz with glibc (already set up) at n random instants in [lo, hi) and one
 * second either side of every change in that range. Returns instants checked. */
static long compare_with_glibc(const struct sl_tz *tz, const char *what, int64_t lo, int64_t hi,
                               int n)
{
    long checked = 0;
    for (int i = 0; i < n; i++) {
        int64_t t = rnd_between(lo, hi);
        ck_assert_msg(sl_tz_offset_at(tz, t) == glibc_offset(t), "%s at %lld: sluice %d, glibc %ld",
                      what, (long long)t, sl_tz_offset_at(tz, t), glibc_offset(t));
        checked++;
    }
    for (int64_t t = sl_tz_next_change(tz, lo); t < hi; t = sl_tz_next_change(tz, t)) {
        for (int64_t u = t - 1; u <= t; u++) {
            ck_assert_msg(sl_tz_offset_at(tz, u) == glibc_offset(u),
                          "%s around change %lld: at %lld sluice %d, glibc %ld", what, (long long)t,
                          (long long)u, sl_tz_offset_at(tz, u), glibc_offset(u));
            checked++;
        }
        ck_assert_int_ne(sl_tz_offset_at(tz, t - 1), sl_tz_offset_at(tz, t));
    }
    return checked;
}

/* --- a TZif writer, for slim, synthetic and corrupt files ------------------------- */

struct tzif_params {
    char version;  /* 0 (version 1) or '2', '3', ... */
    size_t ntimes; /* transitions */
    const int64_t *times;
    const uint8_t *idx;
    size_t ntypes; /* local time types, abbreviation "LMT" for all */
    const int32_t *offs;
    size_t nflags;      /* isstdcnt = isutcnt; ntypes in a valid file */
    size_t nleap;       /* leap-second records (all zero) */
    const char *footer; /* the TZ string between the final newlines (v2+) */
};

struct tzif_layout {
    size_t v2_header; /* offset of the second header */
    size_t counts;    /* offset of its six counts */
    size_t times, idx, types, chars, flags, footer, end;
};

static void put32(struct strbuf *sb, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    strbuf_add(sb, b, 4);
}

static void put64(struct strbuf *sb, int64_t v)
{
    put32(sb, (uint32_t)((uint64_t)v >> 32));
    put32(sb, (uint32_t)v);
}

static void put_header(struct strbuf *sb, char version, uint32_t isut, uint32_t isstd,
                       uint32_t leap, uint32_t time, uint32_t type, uint32_t chr)
{
    strbuf_add(sb, "TZif", 4);
    strbuf_addch(sb, version);
    for (int i = 0; i < 15; i++)
        strbuf_addch(sb, 0);
    put32(sb, isut);
    put32(sb, isstd);
    put32(sb, leap);
    put32(sb, time);
    put32(sb, type);
    put32(sb, chr);
}

static void put_data(struct strbuf *sb, const struct tzif_params *p, int time_size,
                     struct tzif_layout *lo)
{
    lo->times = sb->len;
    for (size_t i = 0; i < p->ntimes; i++) {
        if (time_size == 8)
            put64(sb, p->times[i]);
        else
            put32(sb, (uint32_t)(int32_t)p->times[i]);
    }
    lo->idx = sb->len;
    if (p->ntimes)
        strbuf_add(sb, p->idx, p->ntimes);
    lo->types = sb->len;
    for (size_t i = 0; i < p->ntypes; i++) {
        put32(sb, (uint32_t)p->offs[i]);
        strbuf_addch(sb, 0); /* isdst */
        strbuf_addch(sb, 0); /* abbreviation index */
    }
    lo->chars = sb->len;
    strbuf_add(sb, "LMT", 4);
    for (size_t i = 0; i < p->nleap; i++) {
        if (time_size == 8)
            put64(sb, 0);
        else
            put32(sb, 0);
        put32(sb, 0);
    }
    lo->flags = sb->len;
    for (size_t i = 0; i < 2 * p->nflags; i++)
        strbuf_addch(sb, 0);
}

static void build_tzif(struct strbuf *sb, const struct tzif_params *p, struct tzif_layout *lo)
{
    struct tzif_layout dummy;
    lo = lo ? lo : &dummy;
    strbuf_reset(sb);
    if (p->version == 0) {
        put_header(sb, 0, (uint32_t)p->nflags, (uint32_t)p->nflags, (uint32_t)p->nleap,
                   (uint32_t)p->ntimes, (uint32_t)p->ntypes, 4);
        lo->counts = 20;
        put_data(sb, p, 4, lo);
        lo->footer = lo->end = sb->len;
        return;
    }
    /* a minimal version-1 block, as zic -b slim writes: one type, no transitions */
    put_header(sb, p->version, 0, 0, 0, 0, 1, 4);
    put32(sb, 0);
    strbuf_addch(sb, 0);
    strbuf_addch(sb, 0);
    strbuf_add(sb, "UTC", 4);
    lo->v2_header = sb->len;
    lo->counts = sb->len + 20;
    put_header(sb, p->version, (uint32_t)p->nflags, (uint32_t)p->nflags, (uint32_t)p->nleap,
               (uint32_t)p->ntimes, (uint32_t)p->ntypes, 4);
    put_data(sb, p, 8, lo);
    lo->footer = sb->len;
    strbuf_addf(sb, "\n%s\n", p->footer ? p->footer : "");
    lo->end = sb->len;
}

/* The tests that write zones share one temporary $TZDIR, made and removed by an
 * unchecked fixture: that runs in the parent process, so the directory goes away
 * even when a test fails (a failing test's process ends before a checked teardown). */
static char tzdir[64];
static char *saved_tzdir, *saved_tz;

/* glibc_use() changes TZ; with CK_FORK=no that would leak into later suites. */
static void tz_env_save(void)
{
    const char *old = getenv("TZ");
    saved_tz = old ? xstrdup(old) : NULL;
}

static void tz_env_restore(void)
{
    if (saved_tz)
        setenv("TZ", saved_tz, 1);
    else
        unsetenv("TZ");
    tzset();
    free(saved_tz);
    saved_tz = NULL;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *p = xasprintf("%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(p);
        else
            unlink(p);
        free(p);
    }
    if (d)
        closedir(d);
    rmdir(path);
}

static void tzdir_setup(void)
{
    tz_env_save();
    snprintf(tzdir, sizeof(tzdir), "/tmp/sluice-tz-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tzdir));
    const char *old = getenv("TZDIR");
    saved_tzdir = old ? xstrdup(old) : NULL;
    setenv("TZDIR", tzdir, 1);
}

static void tzdir_teardown(void)
{
    remove_tree(tzdir);
    if (saved_tzdir)
        setenv("TZDIR", saved_tzdir, 1);
    else
        unsetenv("TZDIR");
    free(saved_tzdir);
    saved_tzdir = NULL;
    tz_env_restore();
}

/* Writes bytes as $TZDIR/Test/Zone... and loads it. */
static int load_bytes(struct sl_tz **out, const void *buf, size_t len)
{
    char *dir = xasprintf("%s/Test", tzdir);
    char *path = xasprintf("%s/Zone", dir);
    mkdir(dir, 0700);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
    int rc = sl_tz_load(out, "Test/Zone");
    unlink(path);
    rmdir(dir);
    free(path);
    free(dir);
    return rc;
}

static struct sl_tz *load_params(const struct tzif_params *p)
{
    struct strbuf sb = STRBUF_INIT;
    struct sl_tz *tz = NULL;
    build_tzif(&sb, p, NULL);
    int rc = load_bytes(&tz, sb.buf, sb.len);
    ck_assert_msg(rc == 0, "synthetic zone (footer \"%s\"): %s", p->footer ? p->footer : "",
                  sl_strerror(rc));
    strbuf_release(&sb);
    return tz;
}

/* A zone that is only a footer: every instant follows the POSIX TZ rule. */
static struct sl_tz *footer_zone(const char *footer)
{
    static const int32_t off0[] = {0};
    struct tzif_params p = {
        .version = '2', .ntypes = 1, .offs = off0, .nflags = 1, .footer = footer};
    return load_params(&p);
}

/* The footer of an installed zone file (its last line). */
static char *installed_footer(const char *name)
{
    char *path = xasprintf(ZONEINFO "/%s", name);
    size_t len;
    char *text = test_read_file(path, &len);
    ck_assert(len > 2 && text[len - 1] == '\n');
    size_t start = len - 1;
    while (start > 0 && text[start - 1] != '\n')
        start--;
    ck_assert(start > 0);
    char *footer = xstrndup(text + start, len - 1 - start);
    free(text);
    free(path);
    return footer;
}

static int64_t utc(int y, unsigned m, unsigned d, int hh, int mm, int ss)
{
    return sl_days_from_civil(y, m, d) * SL_SECONDS_PER_DAY + hh * 3600 + mm * 60 + ss;
}

/* --- named zones vs glibc --------------------------------------------------------- */

static const char *const zones[] = {
    "America/New_York",   "Europe/London",      "Australia/Lord_Howe", "America/Sao_Paulo",
    "Asia/Kolkata",       "Pacific/Chatham",    "Africa/Casablanca",   "Europe/Dublin",
    "America/St_Johns",   "Pacific/Apia",       "Antarctica/Troll",    "Asia/Jerusalem",
    "America/Nuuk",       "Africa/Cairo",       "America/Santiago",    "Asia/Tehran",
    "Europe/Moscow",      "Pacific/Kiritimati", "America/Asuncion",    "Asia/Gaza",
    "Australia/Adelaide", "Asia/Kathmandu",     "Pacific/Marquesas",   "America/Havana",
    "Europe/Lisbon",      "Asia/Tokyo",         "America/Anchorage",   "Pacific/Honolulu",
    "Europe/Amsterdam",   "Africa/Monrovia",    "America/Caracas",     "Asia/Pyongyang",
    "Pacific/Kwajalein",  "America/Adak",       "Antarctica/Casey",    "Etc/GMT+12",
};

START_TEST(test_tz_named_zones_match_glibc)
{
    long checked = 0;
    rng = 0x5eed;
    for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++) {
        struct sl_tz *tz = load(zones[i]);
        ck_assert_str_eq(sl_tz_name(tz), zones[i]);
        glibc_use(zones[i]);
        checked += compare_with_glibc(tz, zones[i], T1900, T2100, 3000);
        sl_tz_free(tz);
    }
    fprintf(stderr, "tz: %zu named zones, %ld instants agree with glibc\n",
            sizeof(zones) / sizeof(zones[0]), checked);
    ck_assert_int_ge(checked, 100000);
}
END_TEST

/* Every zone file of the installed database (minus the right/ and posix/ copies). */
static void walk_zones(const char *rel, long *nzones, long *checked)
{
    char *path = xasprintf(ZONEINFO "%s%s", *rel ? "/" : "", rel);
    DIR *d = opendir(path);
    struct dirent *e;
    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strchr(e->d_name, '.') || !strcmp(e->d_name, "right") ||
            !strcmp(e->d_name, "posix") || !strcmp(e->d_name, "posixrules") ||
            !strcmp(e->d_name, "leapseconds") || !strcmp(e->d_name, "SECURITY"))
            continue;
        char *name = *rel ? xasprintf("%s/%s", rel, e->d_name) : xstrdup(e->d_name);
        char *full = xasprintf(ZONEINFO "/%s", name);
        struct stat st;
        ck_assert_int_eq(stat(full, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            walk_zones(name, nzones, checked);
        } else if (S_ISREG(st.st_mode)) {
            struct sl_tz *tz = load(name);
            glibc_use(name);
            *checked += compare_with_glibc(tz, name, T1900, T2100, 300);
            (*nzones)++;
            sl_tz_free(tz);
        }
        free(full);
        free(name);
    }
    closedir(d);
    free(path);
}

START_TEST(test_tz_every_installed_zone_matches_glibc)
{
    long nzones = 0, checked = 0;
    rng = 0xa11;
    walk_zones("", &nzones, &checked);
    fprintf(stderr, "tz: all %ld installed zones, %ld instants agree with glibc\n", nzones,
            checked);
    ck_assert_int_ge(nzones, 300);
}
END_TEST

/* --- the footer ------------------------------------------------------------------- */

/* Slim copies: an installed zone's footer alone must reproduce the zone (per glibc,
 * from the fat file) from the year its current rules started. */
START_TEST(test_tz_slim_footer_only_files)
{
    static const struct {
        const char *zone;
        int since;
    } slim[] = {
        {"America/New_York", 2008}, {"Europe/London", 1997},     {"Australia/Lord_Howe", 2009},
        {"Pacific/Chatham", 2008},  {"Asia/Jerusalem", 2014},    {"Antarctica/Troll", 2006},
        {"America/Nuuk", 2024},     {"Australia/Sydney", 2009},  {"America/Santiago", 2023},
        {"Asia/Tehran", 2023},      {"Africa/Cairo", 2024},      {"America/Sao_Paulo", 2020},
        {"Asia/Kolkata", 1946},     {"Africa/Casablanca", 2088}, {"Europe/Moscow", 2015},
        {"America/St_Johns", 2012}, {"Europe/Dublin", 1997},     {"Pacific/Auckland", 2008},
        {"America/Havana", 2013},   {"Asia/Gaza", 2087},
    };
    long checked = 0;
    rng = 0x51;
    for (size_t i = 0; i < sizeof(slim) / sizeof(slim[0]); i++) {
        char *footer = installed_footer(slim[i].zone);
        struct sl_tz *tz = footer_zone(footer);
        char what[128];
        snprintf(what, sizeof(what), "slim %s \"%s\"", slim[i].zone, footer);
        glibc_use(slim[i].zone);
        checked += compare_with_glibc(tz, what, utc(slim[i].since, 1, 1, 0, 0, 0), T2100, 1500);
        /* and the same footer as a POSIX TZ string, over all of 1971-2100 */
        if (strchr(footer, ',') || footer[0] == '<') {
            glibc_use(footer);
            checked += compare_with_glibc(tz, what, T1971, T2100, 1000);
        }
        sl_tz_free(tz);
        free(footer);
    }
    fprintf(stderr, "tz: slim files, %ld instants agree with glibc\n", checked);
    ck_assert_int_ge(checked, 40000);
}
END_TEST

START_TEST(test_tz_posix_footers_match_glibc)
{
    static const char *const footers[] = {
        "EST5EDT,M3.2.0,M11.1.0",
        "EST5EDT4,M3.2.0/2:00:00,M11.1.0/02:00:00",
        "<-03>3",
        "<+0545>-5:45",
        "IST-2IDT,M3.4.4/26,M10.5.0",
        "<-02>2<-01>,M3.5.0/-1,M10.5.0/0",
        "<+00>0<+02>-2,M3.5.0/1,M10.5.0/3",
        "<-04>4<-03>,M9.1.6/24,M4.1.6/24",
        "EET-2EEST,M4.5.5/0,M10.5.4/24",
        "NZST-12NZDT,M9.5.0,M4.1.0/3",
        "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
        "<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45",
        "GMT0IST,M10.5.0,M3.5.0/1",
        "AAA3BBB,J60/2,J300/2",
        "AAA-10BBB-11,1/2,200/3",
        "AAA-10BBB-11,59/2,365/3",
        "AAA+5:30:15BBB+4:30,M3.5.0/0:00:30,M10.5.0/0:00:15",
        "AAA4BBB,M3.1.0/-100,M10.5.6/167",
        "AAA-14BBB-13,M3.1.0,M10.1.0",
        "AAA12BBB11,M3.1.0,M10.1.0",
        "AAA24BBB,M3.1.0,M10.1.0",
    };
    long checked = 0;
    rng = 0xf00;
    for (size_t i = 0; i < sizeof(footers) / sizeof(footers[0]); i++) {
        struct sl_tz *tz = footer_zone(footers[i]);
        glibc_use(footers[i]);
        checked += compare_with_glibc(tz, footers[i], T1971, T2100, 2000);
        sl_tz_free(tz);
    }
    /* A DST name with no rule means the US rules (as in glibc and tzcode). */
    struct sl_tz *tz = footer_zone("EST5EDT");
    glibc_use("EST5EDT,M3.2.0,M11.1.0");
    checked += compare_with_glibc(tz, "EST5EDT", T1971, T2100, 2000);
    /* before 1971 the rule still applies (glibc's answer would be 1970's) */
    ck_assert_int_eq(sl_tz_offset_at(tz, utc(1908, 6, 10, 12, 0, 0)), -4 * 3600);
    ck_assert_int_eq(sl_tz_offset_at(tz, utc(1908, 12, 10, 12, 0, 0)), -5 * 3600);
    sl_tz_free(tz);
    /* Changes near New Year: glibc applies only the rule of t's UTC year, so it
     * misses a change that happens, in UTC, in the year before (here DST starts
     * 2032-01-01 02:00 local = 2031-12-31 16:00Z; glibc switches at 2032-01-01Z). */
    tz = footer_zone("AAA-10BBB-11,0/2,200/3");
    ck_assert_int_eq(sl_tz_offset_at(tz, utc(2031, 12, 31, 15, 59, 59)), 10 * 3600);
    ck_assert_int_eq(sl_tz_offset_at(tz, utc(2031, 12, 31, 16, 0, 0)), 11 * 3600);
    ck_assert_int_eq(sl_tz_offset_at(tz, utc(2031, 12, 31, 21, 36, 5)), 11 * 3600);
    ck_assert_int_eq(sl_tz_next_change(tz, utc(2031, 8, 1, 0, 0, 0)), utc(2031, 12, 31, 16, 0, 0));
    sl_tz_free(tz);
    /* Permanent DST (RFC 8536's idiom): the changes cancel out at every New Year,
     * so the offset is -4h throughout, including the hours around midnight UTC. */
    tz = footer_zone("EST5EDT,0/0,J365/25");
    for (int y = 1901; y < 2100; y += 7)
        for (int h = -6; h <= 6; h++)
            ck_assert_int_eq(sl_tz_offset_at(tz, utc(y, 1, 1, 0, 0, 0) + h * 3600), -4 * 3600);
    ck_assert_int_eq(sl_tz_next_change(tz, 0), INT64_MAX);
    ck_assert_int_eq(sl_tz_next_change(tz, utc(2040, 12, 31, 23, 0, 0)), INT64_MAX);
    sl_tz_free(tz);
    fprintf(stderr, "tz: %zu POSIX footers, %ld instants agree with glibc\n",
            sizeof(footers) / sizeof(footers[0]), checked);
}
END_TEST

/* A file with a few transitions and a footer: the hand-off at the last transition. */
START_TEST(test_tz_transitions_then_footer)
{
    /* New York from 2019-11-03 on: EST, EDT from 2020-03-08, EST from 2020-11-01 */
    static const int64_t times[] = {1583650800, 1604210400};
    static const uint8_t idx[] = {1, 0};
    static const int32_t offs[] = {-18000, -14400};
    struct tzif_params p = {.version = '2',
                            .ntimes = 2,
                            .times = times,
                            .idx = idx,
                            .ntypes = 2,
                            .offs = offs,
                            .nflags = 2,
                            .footer = "EST5EDT,M3.2.0,M11.1.0"};
    struct sl_tz *tz = load_params(&p);
    glibc_use("America/New_York");
    rng = 0x42;
    compare_with_glibc(tz, "transitions+footer", utc(2019, 11, 3, 6, 0, 0), T2100, 5000);
    sl_tz_free(tz);

    /* Version 3 and 4 files read the same; version 1 files (no footer) keep the last
     * type after the last transition. */
    p.version = '3';
    tz = load_params(&p);
    ck_assert_int_eq(sl_tz_offset_at(tz, utc(2030, 7, 1, 0, 0, 0)), -14400);
    sl_tz_free(tz);
    p.version = '4';
    tz = load_params(&p);
    ck_assert_int_eq(sl_tz_offset_at(tz, utc(2030, 7, 1, 0, 0, 0)), -14400);
    sl_tz_free(tz);
    p.version = 0;
    tz = load_params(&p);
    ck_assert_int_eq(sl_tz_offset_at(tz, utc(2020, 7, 1, 0, 0, 0)), -14400);
    ck_assert_int_eq(sl_tz_offset_at(tz, utc(2030, 7, 1, 0, 0, 0)), -18000);
    ck_assert_int_eq(sl_tz_offset_at(tz, 0), -18000); /* type 0 before the first */
    ck_assert_int_eq(sl_tz_next_change(tz, utc(2021, 1, 1, 0, 0, 0)), INT64_MAX);
    sl_tz_free(tz);

    /* A footer that disagrees with the last transition: the rule takes over one
     * second after it, and that is a change. */
    static const int64_t t1[] = {946684800};
    static const uint8_t i1[] = {1};
    static const int32_t o1[] = {0, 3600};
    struct tzif_params q = {.version = '2',
                            .ntimes = 1,
                            .times = t1,
                            .idx = i1,
                            .ntypes = 2,
                            .offs = o1,
                            .nflags = 2,
                            .footer = "<+02>-2"};
    tz = load_params(&q);
    ck_assert_int_eq(sl_tz_offset_at(tz, 946684799), 0);
    ck_assert_int_eq(sl_tz_offset_at(tz, 946684800), 3600);
    ck_assert_int_eq(sl_tz_offset_at(tz, 946684801), 7200);
    ck_assert_int_eq(sl_tz_next_change(tz, 0), 946684800);
    ck_assert_int_eq(sl_tz_next_change(tz, 946684800), 946684801);
    ck_assert_int_eq(sl_tz_next_change(tz, 946684801), INT64_MAX);
    sl_tz_free(tz);

    /* Transitions that do not change the offset (only the abbreviation) are not
     * reported as changes. */
    static const int64_t t2[] = {1000, 2000, 3000};
    static const uint8_t i2[] = {1, 2, 0};
    static const int32_t o2[] = {0, 0, 3600};
    struct tzif_params r = {.version = '2',
                            .ntimes = 3,
                            .times = t2,
                            .idx = i2,
                            .ntypes = 3,
                            .offs = o2,
                            .nflags = 3,
                            .footer = ""};
    tz = load_params(&r);
    ck_assert_int_eq(sl_tz_next_change(tz, 0), 2000);
    ck_assert_int_eq(sl_tz_next_change(tz, 2000), 3000);
    ck_assert_int_eq(sl_tz_next_change(tz, 3000), INT64_MAX);
    ck_assert_int_eq(sl_tz_offset_at(tz, 2500), 3600);
    ck_assert_int_eq(sl_tz_offset_at(tz, 5000), 0); /* empty footer: last type */
    sl_tz_free(tz);
}
END_TEST

/* --- local time ------------------------------------------------------------------- */

START_TEST(test_tz_local_to_utc_gaps_and_overlaps)
{
    struct sl_tz *ny = load("America/New_York");
    int64_t out[2] = {-1, -1};
    int64_t local;

    /* 2026-03-08: 02:00 EST -> 03:00 EDT (07:00Z) */
    local = utc(2026, 3, 8, 2, 30, 0);
    ck_assert_int_eq(sl_tz_local_to_utc(ny, local, out), 0);
    ck_assert_int_eq(out[0], -1);
    ck_assert_int_eq(sl_tz_local_to_utc(ny, utc(2026, 3, 8, 2, 0, 0), out), 0);
    ck_assert_int_eq(sl_tz_local_to_utc(ny, utc(2026, 3, 8, 1, 59, 59), out), 1);
    ck_assert_int_eq(out[0], utc(2026, 3, 8, 6, 59, 59));
    ck_assert_int_eq(sl_tz_local_to_utc(ny, utc(2026, 3, 8, 3, 0, 0), out), 1);
    ck_assert_int_eq(out[0], utc(2026, 3, 8, 7, 0, 0));
    ck_assert_int_eq(sl_tz_resolve_local(ny, local), utc(2026, 3, 8, 7, 0, 0));

    /* 2026-11-01: 02:00 EDT -> 01:00 EST (06:00Z) */
    ck_assert_int_eq(sl_tz_local_to_utc(ny, utc(2026, 11, 1, 1, 30, 0), out), 2);
    ck_assert_int_eq(out[0], utc(2026, 11, 1, 5, 30, 0));
    ck_assert_int_eq(out[1], utc(2026, 11, 1, 6, 30, 0));
    ck_assert_int_eq(sl_tz_local_to_utc(ny, utc(2026, 11, 1, 1, 0, 0), out), 2);
    ck_assert_int_eq(sl_tz_local_to_utc(ny, utc(2026, 11, 1, 0, 59, 59), out), 1);
    ck_assert_int_eq(sl_tz_local_to_utc(ny, utc(2026, 11, 1, 2, 0, 0), out), 1);
    ck_assert_int_eq(out[0], utc(2026, 11, 1, 7, 0, 0));
    ck_assert_int_eq(sl_tz_resolve_local(ny, utc(2026, 11, 1, 1, 30, 0)),
                     utc(2026, 11, 1, 5, 30, 0));
    sl_tz_free(ny);

    /* Lord Howe: half-hour DST; 2026-04-05 02:00 (+11) -> 01:30 (+10:30) */
    struct sl_tz *lh = load("Australia/Lord_Howe");
    ck_assert_int_eq(sl_tz_local_to_utc(lh, utc(2026, 4, 5, 1, 45, 0), out), 2);
    ck_assert_int_eq(out[1] - out[0], 1800);
    ck_assert_int_eq(sl_tz_local_to_utc(lh, utc(2026, 10, 4, 2, 15, 0), out), 0);
    sl_tz_free(lh);

    /* Samoa skipped Friday 2011-12-30 entirely */
    struct sl_tz *apia = load("Pacific/Apia");
    ck_assert_int_eq(sl_tz_local_to_utc(apia, utc(2011, 12, 30, 12, 0, 0), out), 0);
    ck_assert_int_eq(sl_tz_resolve_local(apia, utc(2011, 12, 30, 12, 0, 0)),
                     utc(2011, 12, 30, 10, 0, 0)); /* 2011-12-31T00:00+14:00 */
    sl_tz_free(apia);

    /* UTC: always exactly one */
    struct sl_tz *u = load("UTC");
    ck_assert_int_eq(sl_tz_local_to_utc(u, 12345, out), 1);
    ck_assert_int_eq(out[0], 12345);
    ck_assert_int_eq(sl_tz_local_to_utc(u, INT64_MAX, out), 0); /* out of range */
    ck_assert_int_eq(sl_tz_local_to_utc(u, INT64_MIN, out), 0);
    sl_tz_resolve_local(u, INT64_MAX);
    sl_tz_resolve_local(u, INT64_MIN);
    sl_tz_free(u);
}
END_TEST

/* Every offset a zone uses, for brute-force local-time conversion. */
static size_t all_offsets(const struct sl_tz *tz, int32_t *offs, size_t max)
{
    size_t n = 0;
    int64_t t = -INT64_C(100000000000);
    for (;;) {
        int32_t o = sl_tz_offset_at(tz, t);
        bool seen = false;
        for (size_t i = 0; i < n; i++)
            seen = seen || offs[i] == o;
        if (!seen && n < max)
            offs[n++] = o;
        t = sl_tz_next_change(tz, t);
        if (t > INT64_C(100000000000))
            return n;
    }
}

START_TEST(test_tz_local_to_utc_brute_force)
{
    long conversions = 0, gaps = 0, overlaps = 0;
    rng = 0x10ca1;
    for (size_t z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
        struct sl_tz *tz = load(zones[z]);
        int32_t offs[64];
        size_t noffs = all_offsets(tz, offs, 64);
        /* readings near changes (gaps and overlaps) and anywhere */
        int64_t t = T1900;
        for (int i = 0; i < 1000; i++) {
            int64_t local;
            if (i % 2 == 0 && (t = sl_tz_next_change(tz, t)) < T2100)
                local = t + sl_tz_offset_at(tz, t) + rnd_between(-5400, 5400);
            else
                local = rnd_between(T1900, T2100);
            int64_t want[64];
            size_t nwant = 0;
            for (size_t k = 0; k < noffs; k++)
                if (sl_tz_offset_at(tz, local - offs[k]) == offs[k])
                    want[nwant++] = local - offs[k];
            for (size_t a = 1; a < nwant; a++) /* sort */
                for (size_t b = a; b > 0 && want[b - 1] > want[b]; b--) {
                    int64_t x = want[b];
                    want[b] = want[b - 1];
                    want[b - 1] = x;
                }
            int64_t out[2];
            int n = sl_tz_local_to_utc(tz, local, out);
            ck_assert_msg((size_t)n == (nwant > 2 ? 2 : nwant), "%s local %lld: %d vs %zu",
                          zones[z], (long long)local, n, nwant);
            if (n >= 1)
                ck_assert_int_eq(out[0], want[0]);
            if (n == 2)
                ck_assert_int_eq(out[1], want[nwant - 1]);
            int64_t r = sl_tz_resolve_local(tz, local);
            if (n == 0) {
                /* the first instant whose wall time is later */
                ck_assert(r + sl_tz_offset_at(tz, r) > local);
                ck_assert(r - 1 + sl_tz_offset_at(tz, r - 1) < local);
                gaps++;
            } else {
                ck_assert_int_eq(r, out[0]);
                overlaps += n == 2;
            }
            conversions++;
        }
        sl_tz_free(tz);
    }
    fprintf(stderr, "tz: %ld local conversions (%ld in gaps, %ld in overlaps) match brute force\n",
            conversions, gaps, overlaps);
    ck_assert_int_gt(gaps, 300);
    ck_assert_int_gt(overlaps, 300);
}
END_TEST

START_TEST(test_tz_next_change_is_first)
{
    rng = 0xc4a;
    for (size_t z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
        struct sl_tz *tz = load(zones[z]);
        for (int i = 0; i < 500; i++) {
            int64_t t = rnd_between(T1900, T2100), nc = sl_tz_next_change(tz, t);
            int32_t o = sl_tz_offset_at(tz, t);
            ck_assert(nc > t);
            if (nc == INT64_MAX)
                continue;
            ck_assert_int_ne(sl_tz_offset_at(tz, nc), o);
            ck_assert_int_eq(sl_tz_offset_at(tz, nc - 1), o);
            for (int k = 0; k < 20; k++)
                ck_assert_int_eq(sl_tz_offset_at(tz, rnd_between(t, nc)), o);
        }
        /* extreme instants are answered, not undefined */
        sl_tz_offset_at(tz, INT64_MIN);
        sl_tz_offset_at(tz, INT64_MAX);
        ck_assert(sl_tz_next_change(tz, INT64_MIN) > INT64_MIN);
        ck_assert_int_eq(sl_tz_next_change(tz, INT64_MAX), INT64_MAX);
        sl_tz_free(tz);
    }
}
END_TEST

/* --- names and files -------------------------------------------------------------- */

START_TEST(test_tz_names)
{
    static const char *const bad[] = {
        "",
        "/etc/localtime",
        "../etc/passwd",
        "America/../../etc/passwd",
        "..",
        "a..b",
        "America\\New_York",
        "America/New York",
        "America/New_York\n",
        "zone.tab",
        "~root",
        "a:b",
        "Europe/Lond%6Fn",
        "*",
    };
    struct sl_tz *tz = NULL;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(sl_tz_load(&tz, bad[i]) == SL_EINVAL, "\"%s\" accepted", bad[i]);
    ck_assert_int_eq(sl_tz_load(&tz, NULL), SL_EINVAL);
    char longname[300];
    memset(longname, 'a', sizeof(longname));
    longname[256] = '\0';
    ck_assert_int_eq(sl_tz_load(&tz, longname), SL_EINVAL);
    longname[255] = '\0';
    ck_assert_int_eq(sl_tz_load(&tz, longname), SL_ENOENT); /* 255 is allowed */
    ck_assert_ptr_null(tz);

    ck_assert_int_eq(sl_tz_load(&tz, "Nowhere/Zone"), SL_ENOENT);
    ck_assert_int_eq(sl_tz_load(&tz, "America"), SL_ENOENT);              /* a directory */
    ck_assert_int_eq(sl_tz_load(&tz, "America/New_York/Sub"), SL_ENOENT); /* not a dir */
    ck_assert_int_eq(sl_tz_load(&tz, "Etc/GMT-14"), 0);
    ck_assert_int_eq(sl_tz_offset_at(tz, 0), 14 * 3600);
    sl_tz_free(tz);
    sl_tz_free(NULL);
}
END_TEST

START_TEST(test_tz_tzdir)
{
    struct sl_tz *tz = NULL;
    /* UTC is built in: found even where no file exists */
    ck_assert_int_eq(sl_tz_load(&tz, "UTC"), 0);
    ck_assert_str_eq(sl_tz_name(tz), "UTC");
    ck_assert_int_eq(sl_tz_offset_at(tz, 123456789), 0);
    ck_assert_int_eq(sl_tz_next_change(tz, 0), INT64_MAX);
    sl_tz_free(tz);
    ck_assert_int_eq(sl_tz_load(&tz, "Etc/UTC"), 0);
    sl_tz_free(tz);
    ck_assert_int_eq(sl_tz_load(&tz, "America/New_York"), SL_ENOENT);

    /* a FIFO must not block, a huge file is refused */
    char *fifo = xasprintf("%s/Fifo", tzdir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert_int_eq(sl_tz_load(&tz, "Fifo"), SL_ENOENT);
    char *big = xasprintf("%s/Big", tzdir);
    FILE *f = fopen(big, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, 2 << 20, SEEK_SET), 0);
    fputc(0, f);
    fclose(f);
    ck_assert_int_eq(sl_tz_load(&tz, "Big"), SL_ETOOBIG);
    unlink(fifo);
    unlink(big);
    free(fifo);
    free(big);

    /* an empty TZDIR means the default */
    setenv("TZDIR", "", 1);
    ck_assert_int_eq(sl_tz_load(&tz, "America/New_York"), 0);
    sl_tz_free(tz);
    setenv("TZDIR", tzdir, 1);
}
END_TEST

START_TEST(test_tz_rejects_malformed_files)
{
    static const int64_t times[] = {1583650800, 1604210400};
    static const uint8_t idx[] = {1, 0};
    static const int32_t offs[] = {-18000, -14400};
    const struct tzif_params good = {.version = '2',
                                     .ntimes = 2,
                                     .times = times,
                                     .idx = idx,
                                     .ntypes = 2,
                                     .offs = offs,
                                     .nflags = 2,
                                     .footer = "EST5EDT,M3.2.0,M11.1.0"};
    struct strbuf sb = STRBUF_INIT;
    struct tzif_layout lo;
    struct sl_tz *tz = NULL;
    int cases = 0;

#define EXPECT_PARSE_ERROR(what)                                                                   \
    do {                                                                                           \
        ck_assert_msg(sl_tz_from_tzif(&tz, "T", sb.buf, sb.len) == SL_EPARSE, "accepted: %s",      \
                      what);                                                                       \
        ck_assert_ptr_null(tz);                                                                    \
        cases++;                                                                                   \
    } while (0)
#define PATCH(what, off, byte)                                                                     \
    do {                                                                                           \
        build_tzif(&sb, &good, &lo);                                                               \
        sb.buf[off] = (char)(byte);                                                                \
        EXPECT_PARSE_ERROR(what);                                                                  \
    } while (0)
#define PATCH32(what, off, val)                                                                    \
    do {                                                                                           \
        build_tzif(&sb, &good, &lo);                                                               \
        uint32_t v_ = (val);                                                                       \
        sb.buf[off] = (char)(v_ >> 24), sb.buf[(off) + 1] = (char)(v_ >> 16);                      \
        sb.buf[(off) + 2] = (char)(v_ >> 8), sb.buf[(off) + 3] = (char)v_;                         \
        EXPECT_PARSE_ERROR(what);                                                                  \
    } while (0)

    build_tzif(&sb, &good, &lo);
    ck_assert_int_eq(load_bytes(&tz, sb.buf, sb.len), 0); /* the baseline loads, from disk */
    sl_tz_free(tz);
    tz = NULL;
    ck_assert_int_eq(sl_tz_from_tzif(&tz, "Mem/Zone", sb.buf, sb.len), 0); /* and in memory */
    ck_assert_str_eq(sl_tz_name(tz), "Mem/Zone");
    sl_tz_free(tz);
    tz = NULL;
    /* and a corrupt one fails from disk too */
    sb.buf[0] = 'X';
    ck_assert_int_eq(load_bytes(&tz, sb.buf, sb.len), SL_EPARSE);
    char *huge = xcalloc((1 << 20) + 1, 1);
    ck_assert_int_eq(sl_tz_from_tzif(&tz, "T", huge, (1 << 20) + 1), SL_ETOOBIG);
    free(huge);

    PATCH("bad magic", 0, 'X');
    PATCH("version 1 byte", 4, '1');
    PATCH("version byte 0x05", 4, 5);
    PATCH("second magic", lo.v2_header, 'X');
    PATCH("second version differs", lo.v2_header + 4, '3');
    PATCH32("isutcnt not 0 or typecnt", lo.counts, 1);
    PATCH32("v1 timecnt too big", 32, 0xffffffff);
    PATCH32("v1 charcnt too big", 40, 0x7fffffff);
    PATCH32("timecnt too big", lo.counts + 12, 0xffffffff);
    PATCH32("timecnt one too many", lo.counts + 12, 3);
    PATCH32("typecnt too big", lo.counts + 16, 0x10000000);
    PATCH32("charcnt too big", lo.counts + 20, 0xffffffff);
    PATCH("transition index out of range", lo.idx, 2);
    PATCH("transition index 255", lo.idx + 1, 255);
    PATCH("isdst 2", lo.types + 4, 2);
    PATCH("abbreviation index past charcnt", lo.types + 5, 4);
    PATCH32("utoff -2^31", lo.types, 0x80000000);
    PATCH32("utoff +26h", lo.types + 6, 93600);
    PATCH32("utoff -25h", lo.types, (uint32_t)-90000);
    PATCH("isstd flag 2", lo.flags, 2);
    PATCH("isut flag 7", lo.flags + 3, 7);
    PATCH("transitions not ascending", lo.times + 4, 0x7f); /* first now after second */
    PATCH("footer not starting with newline", lo.footer, 'X');
    PATCH("footer with NUL", lo.footer + 3, 0);
    PATCH("footer not ending with newline", lo.end - 1, 'X');

    build_tzif(&sb, &good, &lo);
    memcpy(sb.buf + lo.times + 8, sb.buf + lo.times, 8); /* equal transition times */
    EXPECT_PARSE_ERROR("repeated transition time");
    build_tzif(&sb, &good, &lo);
    strbuf_addstr(&sb, "junk");
    EXPECT_PARSE_ERROR("trailing bytes");
    build_tzif(&sb, &good, &lo);
    strbuf_addch(&sb, '\n');
    EXPECT_PARSE_ERROR("two footer lines");
    build_tzif(&sb, &good, &lo);
    sb.len = lo.footer + 1;
    EXPECT_PARSE_ERROR("footer cut off");

    /* structurally consistent files that break a rule */
    struct tzif_params p = good;
    p.nflags = 1;
    build_tzif(&sb, &p, &lo);
    EXPECT_PARSE_ERROR("isstdcnt neither 0 nor typecnt");
    p = good;
    p.nleap = 1;
    build_tzif(&sb, &p, &lo);
    EXPECT_PARSE_ERROR("leap-second records");
    p = good;
    p.ntimes = 0;
    p.ntypes = 0;
    build_tzif(&sb, &p, &lo);
    EXPECT_PARSE_ERROR("no types");
    int32_t many_offs[257] = {0};
    p = good;
    p.ntypes = 257;
    p.offs = many_offs;
    p.nflags = 257;
    build_tzif(&sb, &p, &lo);
    EXPECT_PARSE_ERROR("257 types");
    p.ntypes = p.nflags = 256; /* the maximum is fine */
    build_tzif(&sb, &p, &lo);
    ck_assert_int_eq(sl_tz_from_tzif(&tz, "T", sb.buf, sb.len), 0);
    sl_tz_free(tz);
    tz = NULL;
    p = good;
    p.version = 0;
    build_tzif(&sb, &p, &lo);
    strbuf_addch(&sb, 0);
    EXPECT_PARSE_ERROR("version 1 with trailing byte");

    static const char *const bad_footers[] = {
        "EST",
        "ES5",
        "EST25",
        "EST-25",
        "5",
        "<ES>5",
        "<EST5",
        "<E$T>5",
        "EST5:60",
        "EST5:5:5:5",
        "EST5EDT,M13.1.0,M11.1.0",
        "EST5EDT,M0.1.0,M11.1.0",
        "EST5EDT,M3.6.0,M11.1.0",
        "EST5EDT,M3.0.0,M11.1.0",
        "EST5EDT,M3.2.7,M11.1.0",
        "EST5EDT,M3.2,M11.1.0",
        "EST5EDT,M3.2.0",
        "EST5EDT,J0,J100",
        "EST5EDT,J366,J100",
        "EST5EDT,366,J100",
        "EST5EDT,M3.2.0/168,M11.1.0",
        "EST5EDT,M3.2.0/2:60,M11.1.0",
        "EST5EDT,M3.2.0,M11.1.0x",
        "EST5EDT,M3.2.0,M11.1.0,",
        "EST5EDT,",
        "EST5EDT25",
        " EST5",
        "EST5 ",
        "EST5\tEDT",
        "EST5EDT;M3.2.0,M11.1.0",
        "EST5EDT,M3.2.0/,M11.1.0",
        "EST5EDT,/2,M11.1.0",
        "EST5EDT,M3.2.0/2:,M11.1.0",
        "EST+",
        "EST5EDT4x",
        "EST5EDT,M3.2.0/1234,M11.1.0",
    };
    for (size_t i = 0; i < sizeof(bad_footers) / sizeof(bad_footers[0]); i++) {
        p = good;
        p.footer = bad_footers[i];
        build_tzif(&sb, &p, &lo);
        EXPECT_PARSE_ERROR(bad_footers[i]);
    }
    char longf[300];
    memset(longf, 'A', sizeof(longf) - 1);
    longf[sizeof(longf) - 1] = '\0';
    memcpy(longf + 280, "5", 2);
    p = good;
    p.footer = longf;
    build_tzif(&sb, &p, &lo);
    EXPECT_PARSE_ERROR("footer longer than 255");

#undef PATCH32
#undef PATCH
#undef EXPECT_PARSE_ERROR
    fprintf(stderr, "tz: %d malformed files rejected\n", cases);
    strbuf_release(&sb);
}
END_TEST

/* Every proper prefix of a real file is invalid; random mutations never crash.
 * (Parsed from memory: the same parser as for files, minus thousands of writes.) */
START_TEST(test_tz_truncated_and_mutated_files)
{
    size_t len;
    char *real = test_read_file(ZONEINFO "/America/New_York", &len);
    struct sl_tz *tz = NULL;

    ck_assert_int_eq(sl_tz_from_tzif(&tz, "T", real, len), 0);
    sl_tz_free(tz);
    for (size_t n = 0; n < len; n++) {
        tz = NULL;
        /* in memory: a prefix is exactly the file a truncated write leaves */
        char *copy = xmalloc(n ? n : 1); /* exact size, so ASan sees any over-read */
        memcpy(copy, real, n);
        ck_assert_msg(sl_tz_from_tzif(&tz, "T", copy, n) == SL_EPARSE,
                      "prefix of %zu bytes accepted", n);
        free(copy);
    }

    /* where the second header starts: 44 + the version-1 block's size */
    const unsigned char *u = (const unsigned char *)real;
    uint32_t c1[6];
    for (int k = 0; k < 6; k++)
        c1[k] = (uint32_t)u[20 + 4 * k] << 24 | (uint32_t)u[21 + 4 * k] << 16 |
                (uint32_t)u[22 + 4 * k] << 8 | u[23 + 4 * k];
    size_t v2 =
        44 + (size_t)c1[3] * 5 + (size_t)c1[4] * 6 + c1[5] + (size_t)c1[2] * 8 + c1[1] + c1[0];
    ck_assert(v2 + 44 < len && !memcmp(real + v2, "TZif", 4));

    int loaded = 0;
    rng = 0xbadf11e;
    char *buf = xmalloc(len);
    for (int i = 0; i < 3000; i++) {
        memcpy(buf, real, len);
        int flips = 1 + (int)(rnd() % 8);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)(rnd() % len);
            /* aim half of the mutations at the headers, where the counts are */
            if (k == 0 && rnd() % 2)
                at = (size_t)(rnd() % 44) + (rnd() % 2 ? 0 : v2);
            buf[at] = (char)rnd();
        }
        tz = NULL;
        int rc = sl_tz_from_tzif(&tz, "T", buf, len);
        ck_assert_msg(rc == 0 || rc == SL_EPARSE, "mutation %d: %s", i, sl_strerror(rc));
        if (rc < 0)
            continue;
        loaded++;
        /* whatever loaded must answer every query */
        int64_t out[2];
        for (int k = 0; k < 50; k++) {
            int64_t t = (int64_t)rnd();
            sl_tz_offset_at(tz, t);
            sl_tz_next_change(tz, t);
            sl_tz_local_to_utc(tz, rnd_between(T1900, T2100), out);
            sl_tz_resolve_local(tz, rnd_between(T1900, T2100));
        }
        for (int64_t t = T1900, k = 0; k < 100 && t < T2100; k++)
            t = sl_tz_next_change(tz, t);
        sl_tz_free(tz);
    }
    fprintf(stderr, "tz: %zu truncations rejected, %d of 3000 mutations still valid\n", len,
            loaded);
    free(buf);
    free(real);
}
END_TEST

Suite *suite_common_tz(void)
{
    Suite *s = suite_create("common_tz");
    TCase *tc = tcase_create("glibc");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, tz_env_save, tz_env_restore);
    tcase_add_test(tc, test_tz_named_zones_match_glibc);
    tcase_add_test(tc, test_tz_every_installed_zone_matches_glibc);
    tcase_add_test(tc, test_tz_local_to_utc_gaps_and_overlaps);
    tcase_add_test(tc, test_tz_local_to_utc_brute_force);
    tcase_add_test(tc, test_tz_next_change_is_first);
    tcase_add_test(tc, test_tz_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("files");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, tzdir_setup, tzdir_teardown);
    tcase_add_test(tc, test_tz_slim_footer_only_files);
    tcase_add_test(tc, test_tz_posix_footers_match_glibc);
    tcase_add_test(tc, test_tz_transitions_then_footer);
    tcase_add_test(tc, test_tz_tzdir);
    tcase_add_test(tc, test_tz_rejects_malformed_files);
    tcase_add_test(tc, test_tz_truncated_and_mutated_files);
    suite_add_tcase(s, tc);
    return s;
}
