/*
 * tests/unit/worker/check_archive.c - directory artifacts as tar, and extraction that
 * refuses what could escape the destination.
 *
 * Round trips (plain and gzip) are checked against the source tree and against GNU tar
 * in both directions (tar reads ours, we read tar's). Hostile archives are built here
 * block by block, so each one carries exactly the trick under test: '..', absolute
 * names, links out, a path through a planted link, hard links, devices, FIFOs, pax and
 * GNU long names that hide a '..', truncation and a bad checksum.
 */
#include "worker/archive.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "tests/testutil.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char *base; /* a fresh directory per test */

static void setup(void)
{
    char tmpl[] = "/tmp/sluice-archive.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    base = xstrdup(tmpl);
}

static void teardown(void)
{
    char *argv[] = {"/bin/rm", "-rf", base, NULL};
    test_run(argv, NULL, NULL);
    free(base);
}

static char *at(const char *rel)
{
    return xasprintf("%s/%s", base, rel);
}

static void put_file(const char *rel, const char *content, mode_t mode)
{
    char *p = at(rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode);
    ck_assert_msg(fd >= 0, "create %s: %s", p, strerror(errno));
    ck_assert_int_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    chmod(p, mode);
    free(p);
}

static void make_dir(const char *rel)
{
    char *p = at(rel);
    ck_assert_int_eq(mkdir(p, 0755), 0);
    free(p);
}

static char *slurp(const char *rel)
{
    char *p = at(rel);
    size_t len;
    char *s = test_read_file(p, &len);
    free(p);
    return s;
}

static bool exists(const char *rel)
{
    char *p = at(rel);
    struct stat st;
    bool e = lstat(p, &st) == 0;
    free(p);
    return e;
}

static int sh(const char *cmd)
{
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    char *err = NULL;
    int rc = test_run(argv, NULL, &err);
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", cmd, err);
    free(err);
    return rc;
}

/* The tree every round trip uses. */
static void make_tree(void)
{
    make_dir("src");
    put_file("src/a.txt", "alpha\n", 0644);
    put_file("src/run.sh", "#!/bin/sh\necho hi\n", 0755);
    put_file("src/empty", "", 0600);
    make_dir("src/sub");
    make_dir("src/emptydir");
    struct strbuf big = STRBUF_INIT;
    for (int i = 0; i < 20000; i++)
        strbuf_addf(&big, "%d,", i * 7919 % 10007);
    put_file("src/sub/data.csv", big.buf, 0644);
    strbuf_release(&big);
    /* a path well over ustar's 100 bytes: a pax header */
    make_dir("src/sub/a-directory-name-that-is-quite-long-on-purpose");
    put_file("src/sub/a-directory-name-that-is-quite-long-on-purpose/"
             "and-a-file-name-that-makes-the-whole-path-longer-than-one-hundred-bytes.txt",
             "long\n", 0644);
    char *l = at("src/sub/link");
    ck_assert_int_eq(symlink("data.csv", l), 0);
    free(l);
}

static void check_tree(const char *dir)
{
    char *rel = xasprintf("%s/a.txt", dir);
    char *s = slurp(rel);
    ck_assert_str_eq(s, "alpha\n");
    free(s);
    free(rel);
    rel = xasprintf("%s/sub/data.csv", dir);
    char *src = slurp("src/sub/data.csv");
    s = slurp(rel);
    ck_assert_str_eq(s, src);
    free(s);
    free(src);
    free(rel);
    rel = xasprintf("%s/sub/a-directory-name-that-is-quite-long-on-purpose/"
                    "and-a-file-name-that-makes-the-whole-path-longer-than-one-hundred-bytes.txt",
                    dir);
    s = slurp(rel);
    ck_assert_str_eq(s, "long\n");
    free(s);
    free(rel);
    struct stat st;
    rel = xasprintf("%s/%s/run.sh", base, dir);
    ck_assert_int_eq(stat(rel, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0755);
    free(rel);
    rel = xasprintf("%s/%s/empty", base, dir);
    ck_assert_int_eq(stat(rel, &st), 0);
    ck_assert_int_eq(st.st_size, 0);
    free(rel);
    rel = xasprintf("%s/%s/emptydir", base, dir);
    ck_assert_int_eq(stat(rel, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    free(rel);
    rel = xasprintf("%s/%s/sub/link", base, dir);
    char target[64];
    ssize_t n = readlink(rel, target, sizeof(target) - 1);
    ck_assert_int_eq(n, 8);
    target[n] = '\0';
    ck_assert_str_eq(target, "data.csv");
    free(rel);
}

static void round_trip(bool gzip)
{
    make_tree();
    struct strbuf err = STRBUF_INIT;
    char *src = at("src"), *tar = at("out.tar"), *dst = at("dst");
    ck_assert_int_eq(mkdir(dst, 0755), 0);
    int rc = archive_write_dir(src, tar, gzip, &err);
    ck_assert_msg(rc == 0, "write: %s", err.buf);
    unsigned char magic[2];
    FILE *f = fopen(tar, "rb");
    ck_assert_int_eq(fread(magic, 1, 2, f), 2);
    fclose(f);
    ck_assert_int_eq(magic[0] == 0x1f && magic[1] == 0x8b, gzip);
    rc = archive_extract(tar, dst, &err);
    ck_assert_msg(rc == 0, "extract: %s", err.buf);
    check_tree("dst");

    /* GNU tar reads ours */
    char *cmd =
        xasprintf("mkdir %s/bytar && tar -x%sf %s -C %s/bytar", base, gzip ? "z" : "", tar, base);
    ck_assert_int_eq(sh(cmd), 0);
    free(cmd);
    check_tree("bytar");

    /* the same tree gives the same bytes */
    char *tar2 = at("out2.tar");
    ck_assert_int_eq(archive_write_dir(src, tar2, gzip, &err), 0);
    cmd = xasprintf("cmp -s %s %s", tar, tar2);
    ck_assert_int_eq(sh(cmd), 0);
    free(cmd);
    free(tar2);
    free(src);
    free(tar);
    free(dst);
    strbuf_release(&err);
}

START_TEST(test_archive_round_trip_plain)
{
    round_trip(false);
}
END_TEST

START_TEST(test_archive_round_trip_gzip)
{
    round_trip(true);
}
END_TEST

START_TEST(test_archive_reads_gnu_tar)
{
    make_tree();
    struct strbuf err = STRBUF_INIT;
    /* GNU format (long names as 'L' blocks) and pax format, gzip'd or not */
    const char *formats[] = {"--format=gnu -cf", "--format=pax -czf", "--format=ustar -cf"};
    for (size_t i = 0; i < 3; i++) {
        char *cmd = xasprintf("cd %s/src && tar %s %s/t%zu.tar %s .", base, formats[i], base, i,
                              i == 2 ? "--exclude=./sub/a-directory-name-that-is-quite-long-on-"
                                       "purpose"
                                     : "");
        ck_assert_int_eq(sh(cmd), 0);
        free(cmd);
        char *tar = xasprintf("%s/t%zu.tar", base, i), *dst = xasprintf("%s/x%zu", base, i);
        ck_assert_int_eq(mkdir(dst, 0755), 0);
        int rc = archive_extract(tar, dst, &err);
        ck_assert_msg(rc == 0, "%s: %s", formats[i], err.buf);
        char *rel = xasprintf("x%zu/sub/data.csv", i);
        char *a = slurp(rel), *b = slurp("src/sub/data.csv");
        ck_assert_str_eq(a, b);
        free(a);
        free(b);
        free(rel);
        free(tar);
        free(dst);
    }
    strbuf_release(&err);
}
END_TEST

START_TEST(test_archive_refuses_odd_sources)
{
    struct strbuf err = STRBUF_INIT;
    make_dir("src");
    char *fifo = at("src/pipe");
    ck_assert_int_eq(mkfifo(fifo, 0644), 0);
    char *src = at("src"), *tar = at("o.tar");
    ck_assert_int_eq(archive_write_dir(src, tar, false, &err), SL_EINVAL);
    ck_assert_msg(strstr(err.buf, "'pipe'") && strstr(err.buf, "not a regular file"), "%s",
                  err.buf);
    strbuf_reset(&err);
    ck_assert_int_eq(archive_write_dir("/nonexistent/dir", tar, false, &err), SL_ENOENT);
    free(fifo);
    free(src);
    free(tar);
    strbuf_release(&err);
}
END_TEST

/* --- hostile archives ----------------------------------------------------------------------- */

static void blk_header(struct strbuf *sb, const char *name, char type, const char *content,
                       const char *link, const char *prefix)
{
    unsigned char h[512] = {0};
    size_t size = content ? strlen(content) : 0;
    snprintf((char *)h, 100, "%s", name);
    snprintf((char *)h + 100, 8, "%07o", 0644);
    snprintf((char *)h + 108, 8, "%07o", 0);
    snprintf((char *)h + 116, 8, "%07o", 0);
    snprintf((char *)h + 124, 12, "%011o", (unsigned)(size & 07777777777));
    snprintf((char *)h + 136, 12, "%011o", 0);
    h[156] = (unsigned char)type;
    if (link)
        snprintf((char *)h + 157, 100, "%s", link);
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    if (prefix)
        snprintf((char *)h + 345, 155, "%s", prefix);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    strbuf_add(sb, h, 512);
    if (size) {
        strbuf_add(sb, content, size);
        static const char zeros[512];
        strbuf_add(sb, zeros, (512 - size % 512) % 512);
    }
}

static void blk_end(struct strbuf *sb)
{
    static const char zeros[1024];
    strbuf_add(sb, zeros, 1024);
}

/* Writes sb as base/evil.tar (gzip'd when asked) and extracts it into base/dst. */
static int extract_bytes(const struct strbuf *sb, bool gzip, struct strbuf *err)
{
    char *tar = at("evil.tar"), *dst = at("dst");
    mkdir(dst, 0755);
    if (gzip) {
        gzFile g = gzopen(tar, "wb");
        ck_assert_ptr_nonnull(g);
        ck_assert_int_eq(gzwrite(g, sb->buf, (unsigned)sb->len), (int)sb->len);
        gzclose(g);
    } else {
        FILE *f = fopen(tar, "wb");
        ck_assert_uint_eq(fwrite(sb->buf, 1, sb->len, f), sb->len);
        fclose(f);
    }
    strbuf_reset(err);
    int rc = archive_extract(tar, dst, err);
    free(tar);
    free(dst);
    return rc;
}

struct evil {
    const char *what;
    void (*build)(struct strbuf *sb);
    const char *message;        /* expected in the error */
    const char *must_not_exist; /* relative to base */
};

static void ev_dotdot(struct strbuf *sb)
{
    blk_header(sb, "../escaped", '0', "x", NULL, NULL);
}
static void ev_dotdot_deep(struct strbuf *sb)
{
    blk_header(sb, "a/b/../../../escaped", '0', "x", NULL, NULL);
}
static void ev_dotdot_prefix(struct strbuf *sb)
{
    blk_header(sb, "escaped", '0', "x", NULL, "..");
}
static void ev_absolute(struct strbuf *sb)
{
    char *name = xasprintf("%s/escaped", base);
    blk_header(sb, name, '0', "x", NULL, NULL);
    free(name);
}
static void ev_link_abs(struct strbuf *sb)
{
    blk_header(sb, "l", '2', NULL, "/etc", NULL);
}
static void ev_link_up(struct strbuf *sb)
{
    blk_header(sb, "d/l", '2', NULL, "../../escaped", NULL);
}
static void ev_through_link(struct strbuf *sb)
{
    /* a link that stays inside (dst/l -> dst/sub), then a file through it */
    blk_header(sb, "sub/", '5', NULL, NULL, NULL);
    blk_header(sb, "l", '2', NULL, "sub", NULL);
    blk_header(sb, "l/x", '0', "x", NULL, NULL);
}
static void ev_hardlink(struct strbuf *sb)
{
    blk_header(sb, "h", '1', NULL, "/etc/passwd", NULL);
}
static void ev_chardev(struct strbuf *sb)
{
    blk_header(sb, "null", '3', NULL, NULL, NULL);
}
static void ev_blockdev(struct strbuf *sb)
{
    blk_header(sb, "sda", '4', NULL, NULL, NULL);
}
static void ev_fifo(struct strbuf *sb)
{
    blk_header(sb, "fifo", '6', NULL, NULL, NULL);
}
static void ev_unknown(struct strbuf *sb)
{
    blk_header(sb, "z", 'Z', NULL, NULL, NULL);
}
static void ev_pax_dotdot(struct strbuf *sb)
{
    blk_header(sb, "././@PaxHeader", 'x', "19 path=../escaped\n", NULL, NULL);
    blk_header(sb, "innocent", '0', "x", NULL, NULL);
}
static void ev_gnu_dotdot(struct strbuf *sb)
{
    blk_header(sb, "././@LongLink", 'L', "../escaped", NULL, NULL);
    blk_header(sb, "innocent", '0', "x", NULL, NULL);
}
static void ev_truncated(struct strbuf *sb)
{
    blk_header(sb, "f", '0', "0123456789", NULL, NULL);
    sb->len -= 512 - 4; /* cut inside the content */
}
static void ev_no_end(struct strbuf *sb)
{
    blk_header(sb, "f", '0', "x", NULL, NULL);
}
static void ev_bad_checksum(struct strbuf *sb)
{
    blk_header(sb, "f", '0', "x", NULL, NULL);
    sb->buf[0] = 'g';
}

static const struct evil evils[] = {
    {"dotdot", ev_dotdot, "refusing '../escaped'", "escaped"},
    {"dotdot deep", ev_dotdot_deep, "'..' component", "escaped"},
    {"dotdot in ustar prefix", ev_dotdot_prefix, "refusing '../escaped'", "escaped"},
    {"absolute", ev_absolute, "absolute", "escaped"},
    {"link to an absolute path", ev_link_abs, "symbolic link to '/etc'", "dst/l"},
    {"link up and out", ev_link_up, "leaves the directory", "dst/d/l"},
    {"write through a link", ev_through_link, "goes through a symbolic link", "dst/sub/x"},
    {"hard link", ev_hardlink, "hard links", "dst/h"},
    {"character device", ev_chardev, "device files", "dst/null"},
    {"block device", ev_blockdev, "device files", "dst/sda"},
    {"fifo", ev_fifo, "FIFOs", "dst/fifo"},
    {"unknown type", ev_unknown, "unknown entry type 'Z'", "dst/z"},
    {"pax path with ..", ev_pax_dotdot, "refusing '../escaped'", "escaped"},
    {"gnu long name with ..", ev_gnu_dotdot, "refusing '../escaped'", "escaped"},
    {"truncated", ev_truncated, "truncated", NULL},
    {"no end marker", ev_no_end, "truncated", NULL},
    {"bad checksum", ev_bad_checksum, "checksum", "dst/g"},
};

START_TEST(test_archive_refuses_hostile)
{
    struct strbuf err = STRBUF_INIT;
    for (int gz = 0; gz < 2; gz++) {
        for (size_t i = 0; i < sizeof(evils) / sizeof(evils[0]); i++) {
            const struct evil *ev = &evils[i];
            struct strbuf sb = STRBUF_INIT;
            ev->build(&sb);
            if (strcmp(ev->what, "truncated") != 0 && strcmp(ev->what, "no end marker") != 0)
                blk_end(&sb);
            int rc = extract_bytes(&sb, gz, &err);
            ck_assert_msg(rc == SL_EINVAL, "%s%s: extracted (rc %d)", ev->what, gz ? " (gzip)" : "",
                          rc);
            ck_assert_msg(strstr(err.buf, ev->message), "%s: message '%s' lacks '%s'", ev->what,
                          err.buf, ev->message);
            if (ev->must_not_exist)
                ck_assert_msg(!exists(ev->must_not_exist), "%s: %s was created", ev->what,
                              ev->must_not_exist);
            ck_assert_msg(!exists("escaped"), "%s: wrote outside", ev->what);
            strbuf_release(&sb);
            char *cmd = xasprintf("rm -rf %s/dst", base);
            ck_assert_int_eq(sh(cmd), 0);
            free(cmd);
        }
    }
    strbuf_release(&err);
}
END_TEST

START_TEST(test_archive_allows_links_inside)
{
    struct strbuf sb = STRBUF_INIT, err = STRBUF_INIT;
    blk_header(&sb, "d/", '5', NULL, NULL, NULL);
    blk_header(&sb, "d/f", '0', "inside", NULL, NULL);
    blk_header(&sb, "d/up", '2', NULL, "../top", NULL); /* dst/top: inside */
    blk_header(&sb, "d/self", '2', NULL, "./f", NULL);
    blk_header(&sb, "./", '5', NULL, NULL, NULL); /* the root itself */
    blk_header(&sb, "top", '0', "top", NULL, NULL);
    blk_header(&sb, "top", '0', "again", NULL, NULL); /* a later copy replaces it */
    blk_end(&sb);
    int rc = extract_bytes(&sb, false, &err);
    ck_assert_msg(rc == 0, "%s", err.buf);
    char *s = slurp("dst/d/up");
    ck_assert_str_eq(s, "again");
    free(s);
    s = slurp("dst/d/self");
    ck_assert_str_eq(s, "inside");
    free(s);
    strbuf_release(&sb);
    strbuf_release(&err);
}
END_TEST

Suite *suite_worker_archive(void)
{
    Suite *s = suite_create("worker_archive");
    TCase *tc = tcase_create("archive");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_archive_round_trip_plain);
    tcase_add_test(tc, test_archive_round_trip_gzip);
    tcase_add_test(tc, test_archive_reads_gnu_tar);
    tcase_add_test(tc, test_archive_refuses_odd_sources);
    tcase_add_test(tc, test_archive_refuses_hostile);
    tcase_add_test(tc, test_archive_allows_links_inside);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    return s;
}
