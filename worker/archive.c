/*
 * worker/archive.c - tar writer and safe reader (see archive.h for the contract).
 *
 * Both directions go through a small stream layer: struct tar_out writes blocks to a
 * file descriptor, through zlib's deflate when gzip is on; struct tar_in reads from a file
 * descriptor, through inflate when the file starts with gzip's magic. Above it, the tar
 * format is 512-byte blocks: a header (ustar), the content padded to 512, and two zero
 * blocks at the end. Long names and big sizes travel in pax extended headers ('x'),
 * which GNU tar, bsdtar and Python's tarfile all read; GNU's own long-name blocks ('L',
 * 'K') are read too.
 *
 * Extraction holds a directory fd for dest and opens every path component below it with
 * openat(..., O_NOFOLLOW | O_DIRECTORY), creating missing directories with mkdirat(). No
 * path is ever resolved as a string, so neither '..' (refused anyway) nor a symbolic link
 * created by an earlier entry can lead a write outside dest.
 */
#include "worker/archive.h"

#include "common/error.h"
#include "common/xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define BLOCK       512
#define IO_BUF      (64 * 1024)
#define MAX_PATH    4096
#define MAX_PAX     (64 * 1024)
#define USTAR_LIMIT 077777777777ULL /* 8 GiB - 1: the largest size in 11 octal digits */

/* --- output stream ------------------------------------------------------------------ */

struct tar_out {
    int fd;
    bool gzip;
    z_stream z;
    unsigned char *zbuf;
    int rc; /* the first error */
};

static int write_full(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return SL_EIO;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static void out_write(struct tar_out *o, const void *p, size_t n, struct strbuf *err)
{
    if (o->rc)
        return;
    if (!o->gzip) {
        if ((o->rc = write_full(o->fd, p, n)) < 0)
            strbuf_addf(err, "archive: cannot write: %s", strerror(errno));
        return;
    }
    o->z.next_in = (Bytef *)(void *)p; /* zlib does not write through next_in */
    o->z.avail_in = (uInt)n;
    while (o->z.avail_in > 0) {
        o->z.next_out = o->zbuf;
        o->z.avail_out = IO_BUF;
        deflate(&o->z, Z_NO_FLUSH);
        size_t have = IO_BUF - o->z.avail_out;
        if (have && (o->rc = write_full(o->fd, o->zbuf, have)) < 0) {
            strbuf_addf(err, "archive: cannot write: %s", strerror(errno));
            return;
        }
    }
}

static int out_finish(struct tar_out *o, struct strbuf *err)
{
    if (o->gzip) {
        int zr;
        do {
            o->z.next_out = o->zbuf;
            o->z.avail_out = IO_BUF;
            zr = deflate(&o->z, Z_FINISH);
            size_t have = IO_BUF - o->z.avail_out;
            if (!o->rc && have && (o->rc = write_full(o->fd, o->zbuf, have)) < 0)
                strbuf_addf(err, "archive: cannot write: %s", strerror(errno));
        } while (zr == Z_OK && !o->rc);
        deflateEnd(&o->z);
        free(o->zbuf);
    }
    return o->rc;
}

/* --- writing ------------------------------------------------------------------------- */

/* width - 1 octal digits and a NUL; v must fit (callers clamp it) */
static void octal(char *field, size_t width, uint64_t v)
{
    field[width - 1] = '\0';
    for (size_t i = width - 1; i > 0; i--) {
        field[i - 1] = (char)('0' + (v & 7));
        v >>= 3;
    }
}

static void set_checksum(unsigned char *h)
{
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < BLOCK; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
}

static void header_block(unsigned char *h, const char *name, char type, uint64_t size,
                         unsigned mode, int64_t mtime, const char *linkname)
{
    memset(h, 0, BLOCK);
    snprintf((char *)h, 100, "%s", name);
    octal((char *)h + 100, 8, mode & 07777);
    octal((char *)h + 108, 8, 0);
    octal((char *)h + 116, 8, 0);
    octal((char *)h + 124, 12, size > USTAR_LIMIT ? 0 : size);
    octal((char *)h + 136, 12, mtime > 0 ? (uint64_t)mtime : 0);
    h[156] = (unsigned char)type;
    if (linkname)
        memcpy(h + 157, linkname, strnlen(linkname, 100));
    memcpy(h + 257, "ustar", 6);
    h[263] = '0';
    h[264] = '0';
    set_checksum(h);
}

/* Appends one pax record "len key=value\n" (len counts itself). */
static void pax_record(struct strbuf *sb, const char *key, const char *value)
{
    size_t body = 1 + strlen(key) + 1 + strlen(value) + 1; /* " key=value\n" */
    size_t len = body + 1;
    char digits[24];
    for (;;) {
        int d = snprintf(digits, sizeof(digits), "%zu", len);
        if ((size_t)d + body == len)
            break;
        len = (size_t)d + body;
    }
    strbuf_addf(sb, "%zu %s=%s\n", len, key, value);
}

static void write_padding(struct tar_out *o, uint64_t size, struct strbuf *err)
{
    static const unsigned char zeros[BLOCK];
    size_t pad = (size_t)((BLOCK - size % BLOCK) % BLOCK);
    if (pad)
        out_write(o, zeros, pad, err);
}

/* Writes the header(s) of one entry; a pax header first when the ustar fields cannot
 * hold the name, the link target or the size. */
static void write_header(struct tar_out *o, const char *name, char type, uint64_t size,
                         unsigned mode, int64_t mtime, const char *linkname, struct strbuf *err)
{
    unsigned char h[BLOCK];
    bool long_name = strlen(name) >= 100, long_link = linkname && strlen(linkname) >= 100;
    if (long_name || long_link || size > USTAR_LIMIT) {
        struct strbuf pax = STRBUF_INIT;
        if (long_name)
            pax_record(&pax, "path", name);
        if (long_link)
            pax_record(&pax, "linkpath", linkname);
        if (size > USTAR_LIMIT) {
            char num[24];
            snprintf(num, sizeof(num), "%llu", (unsigned long long)size);
            pax_record(&pax, "size", num);
        }
        header_block(h, "././@PaxHeader", 'x', pax.len, 0644, mtime, NULL);
        out_write(o, h, BLOCK, err);
        out_write(o, pax.buf, pax.len, err);
        write_padding(o, pax.len, err);
        strbuf_release(&pax);
    }
    header_block(h, name, type, size, mode, mtime, linkname);
    out_write(o, h, BLOCK, err);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Archives the directory open at dfd, whose entries are named prefix + name. */
static int write_tree(struct tar_out *o, int dfd, const char *prefix, unsigned char *buf,
                      struct strbuf *err)
{
    int dup_fd = dup(dfd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) {
        if (dup_fd >= 0)
            close(dup_fd);
        strbuf_addf(err, "archive: cannot read directory '%s': %s", *prefix ? prefix : ".",
                    strerror(errno));
        return SL_EIO;
    }
    char **names = NULL;
    size_t n = 0, alloc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        XGROW(names, alloc, n + 1); // NOLINT(bugprone-sizeof-expression)
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    if (n > 1)
        qsort(names, n, sizeof(*names), name_cmp);

    int rc = 0;
    for (size_t i = 0; i < n && rc == 0 && o->rc == 0; i++) {
        char *path = xasprintf("%s%s", prefix, names[i]);
        struct stat st;
        if (fstatat(dfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
            strbuf_addf(err, "archive: cannot stat '%s': %s", path, strerror(errno));
            rc = SL_EIO;
        } else if (S_ISDIR(st.st_mode)) {
            char *dname = xasprintf("%s/", path);
            write_header(o, dname, '5', 0, st.st_mode, st.st_mtime, NULL, err);
            int sub = openat(dfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                strbuf_addf(err, "archive: cannot open '%s': %s", path, strerror(errno));
                rc = SL_EIO;
            } else {
                rc = write_tree(o, sub, dname, buf, err);
                close(sub);
            }
            free(dname);
        } else if (S_ISLNK(st.st_mode)) {
            char target[MAX_PATH];
            ssize_t tl = readlinkat(dfd, names[i], target, sizeof(target) - 1);
            if (tl < 0) {
                strbuf_addf(err, "archive: cannot read link '%s': %s", path, strerror(errno));
                rc = SL_EIO;
            } else {
                target[tl] = '\0';
                write_header(o, path, '2', 0, 0777, st.st_mtime, target, err);
            }
        } else if (S_ISREG(st.st_mode)) {
            int fd = openat(dfd, names[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) {
                strbuf_addf(err, "archive: cannot open '%s': %s", path, strerror(errno));
                rc = SL_EIO;
            } else {
                uint64_t size = (uint64_t)st.st_size, done = 0;
                write_header(o, path, '0', size, st.st_mode, st.st_mtime, NULL, err);
                while (done < size && o->rc == 0) {
                    size_t want = size - done < IO_BUF ? (size_t)(size - done) : IO_BUF;
                    ssize_t r = read(fd, buf, want);
                    if (r < 0 && errno == EINTR)
                        continue;
                    if (r <= 0) {
                        strbuf_addf(err, "archive: '%s' changed while being archived", path);
                        rc = SL_EIO;
                        break;
                    }
                    out_write(o, buf, (size_t)r, err);
                    done += (uint64_t)r;
                }
                if (rc == 0)
                    write_padding(o, size, err);
                close(fd);
            }
        } else {
            strbuf_addf(err,
                        "archive: cannot archive '%s': not a regular file, directory or "
                        "symbolic link",
                        path);
            rc = SL_EINVAL;
        }
        free(path);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc ? rc : o->rc;
}

int archive_write_dir(const char *dir, const char *out_path, bool gzip, struct strbuf *err)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        strbuf_addf(err, "archive: cannot open directory '%s': %s", dir, strerror(errno));
        return errno == ENOENT ? SL_ENOENT : SL_EIO;
    }
    struct tar_out o = {.fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644),
                        .gzip = gzip};
    if (o.fd < 0) {
        strbuf_addf(err, "archive: cannot create '%s': %s", out_path, strerror(errno));
        close(dfd);
        return SL_EIO;
    }
    if (gzip) {
        o.zbuf = xmalloc(IO_BUF);
        /* windowBits 15 + 16: a gzip wrapper; level 6, zlib's default */
        if (deflateInit2(&o.z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
            Z_OK)
            abort();
    }
    unsigned char *buf = xmalloc(IO_BUF);
    int rc = write_tree(&o, dfd, "", buf, err);
    static const unsigned char end[2 * BLOCK];
    out_write(&o, end, sizeof(end), err);
    int frc = out_finish(&o, err);
    if (close(o.fd) < 0 && rc == 0 && frc == 0) {
        strbuf_addf(err, "archive: cannot write '%s': %s", out_path, strerror(errno));
        rc = SL_EIO;
    }
    free(buf);
    close(dfd);
    return rc ? rc : frc;
}

/* --- input stream -------------------------------------------------------------------------- */

struct tar_in {
    int fd;
    bool gzip;
    bool z_end; /* the gzip stream ended */
    z_stream z;
    unsigned char *zbuf;
};

/* Reads exactly n bytes. Returns 0, 1 at a clean end of input before any byte, or an
 * error (SL_EINVAL: truncated or corrupt; SL_EIO: read error). */
static int in_read(struct tar_in *in, void *p, size_t n, struct strbuf *err)
{
    unsigned char *c = p;
    size_t got = 0;
    while (got < n) {
        if (!in->gzip) {
            ssize_t r = read(in->fd, c + got, n - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                strbuf_addf(err, "archive: cannot read: %s", strerror(errno));
                return SL_EIO;
            }
            if (r == 0)
                break;
            got += (size_t)r;
            continue;
        }
        if (in->z_end)
            break;
        if (in->z.avail_in == 0) {
            ssize_t r = read(in->fd, in->zbuf, IO_BUF);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                strbuf_addf(err, "archive: cannot read: %s", strerror(errno));
                return SL_EIO;
            }
            if (r == 0)
                break;
            in->z.next_in = in->zbuf;
            in->z.avail_in = (uInt)r;
        }
        in->z.next_out = c + got;
        in->z.avail_out = (uInt)(n - got);
        int zr = inflate(&in->z, Z_NO_FLUSH);
        got = n - in->z.avail_out;
        if (zr == Z_STREAM_END) {
            in->z_end = true;
        } else if (zr != Z_OK && zr != Z_BUF_ERROR) {
            strbuf_addf(err, "archive: corrupt gzip data: %s", in->z.msg ? in->z.msg : "?");
            return SL_EINVAL;
        }
    }
    if (got == 0 && n > 0)
        return 1;
    if (got < n) {
        strbuf_addstr(err, "archive: truncated");
        return SL_EINVAL;
    }
    return 0;
}

static int in_skip(struct tar_in *in, uint64_t n, unsigned char *buf, struct strbuf *err)
{
    while (n > 0) {
        size_t take = n < IO_BUF ? (size_t)n : IO_BUF;
        int rc = in_read(in, buf, take, err);
        if (rc == 1) {
            strbuf_addstr(err, "archive: truncated");
            return SL_EINVAL;
        }
        if (rc < 0)
            return rc;
        n -= take;
    }
    return 0;
}

/* --- reading headers ------------------------------------------------------------------------- */

/* Parses a numeric field: octal (NUL/space terminated) or GNU base-256. */
static bool parse_num(uint64_t *out, const unsigned char *f, size_t width)
{
    if (f[0] & 0x80) {
        uint64_t v = f[0] & 0x7f;
        for (size_t i = 1; i < width; i++) {
            if (v >> 56)
                return false;
            v = (v << 8) | f[i];
        }
        *out = v;
        return true;
    }
    uint64_t v = 0;
    size_t i = 0;
    while (i < width && f[i] == ' ')
        i++;
    bool any = false;
    for (; i < width && f[i] >= '0' && f[i] <= '7'; i++) {
        if (v >> 60)
            return false;
        v = v * 8 + (uint64_t)(f[i] - '0');
        any = true;
    }
    if (i < width && f[i] != ' ' && f[i] != '\0')
        return false;
    *out = any ? v : 0;
    return true;
}

static bool checksum_ok(const unsigned char *h)
{
    uint64_t want;
    if (!parse_num(&want, h + 148, 8))
        return false;
    unsigned sum = 0;
    for (int i = 0; i < BLOCK; i++)
        sum += (i >= 148 && i < 156) ? ' ' : h[i];
    return sum == want;
}

static bool all_zero(const unsigned char *h)
{
    for (int i = 0; i < BLOCK; i++)
        if (h[i])
            return false;
    return true;
}

/* Reads a pax extended header's records, taking path, linkpath and size. */
static int parse_pax(const char *data, size_t len, char **path, char **linkpath, uint64_t *size,
                     bool *has_size, struct strbuf *err)
{
    size_t pos = 0;
    while (pos < len) {
        char *end;
        unsigned long rlen = strtoul(data + pos, &end, 10);
        if (end == data + pos || *end != ' ' || rlen == 0 || pos + rlen > len ||
            data[pos + rlen - 1] != '\n') {
            strbuf_addstr(err, "archive: malformed pax header");
            return SL_EINVAL;
        }
        const char *kv = end + 1, *rec_end = data + pos + rlen - 1;
        const char *eq = memchr(kv, '=', (size_t)(rec_end - kv));
        if (!eq) {
            strbuf_addstr(err, "archive: malformed pax record");
            return SL_EINVAL;
        }
        size_t klen = (size_t)(eq - kv);
        char *value = xstrndup(eq + 1, (size_t)(rec_end - eq - 1));
        if (klen == 4 && !memcmp(kv, "path", 4)) {
            free(*path);
            *path = value;
        } else if (klen == 8 && !memcmp(kv, "linkpath", 8)) {
            free(*linkpath);
            *linkpath = value;
        } else if (klen == 4 && !memcmp(kv, "size", 4)) {
            char *e;
            *size = strtoull(value, &e, 10);
            *has_size = !*e && *value;
            free(value);
            if (!*has_size) {
                strbuf_addstr(err, "archive: malformed pax size");
                return SL_EINVAL;
            }
        } else {
            free(value);
        }
        pos += rlen;
    }
    return 0;
}

/* --- extraction ---------------------------------------------------------------------------- */

/* Splits a member name into components: no absolute names, no '..'; "." and empty
 * components are dropped. Returns the count (0: the root itself) or -1. */
static int split_name(char ***out, const char *name)
{
    if (name[0] == '/')
        return -1;
    char *copy = xstrdup(name);
    char **v = NULL;
    size_t n = 0, alloc = 0;
    for (char *save = NULL, *t = strtok_r(copy, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (!strcmp(t, "."))
            continue;
        if (!strcmp(t, "..")) {
            for (size_t i = 0; i < n; i++)
                free(v[i]);
            free(v);
            free(copy);
            return -1;
        }
        XGROW(v, alloc, n + 1); // NOLINT(bugprone-sizeof-expression)
        v[n++] = xstrdup(t);
    }
    free(copy);
    *out = v;
    return (int)n;
}

static void free_comps(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* True if a symlink at depth `depth` (its parent's components) pointing at target stays
 * inside the root, judged lexically. */
static bool link_stays_inside(const char *target, int depth)
{
    if (!*target || target[0] == '/')
        return false;
    char *copy = xstrdup(target);
    bool ok = true;
    for (char *save = NULL, *t = strtok_r(copy, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (!strcmp(t, "."))
            continue;
        if (!strcmp(t, "..")) {
            if (--depth < 0) {
                ok = false;
                break;
            }
        } else {
            depth++;
        }
    }
    free(copy);
    return ok;
}

/* Opens (creating as needed) the directory comps[0..n) below root, never following a
 * link. Returns an fd or an error (err set). */
static int open_dirs(int root, char **comps, int n, const char *name, struct strbuf *err)
{
    int cur = dup(root);
    for (int i = 0; i < n && cur >= 0; i++) {
        int next = openat(cur, comps[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0 && errno == ENOENT) {
            if (mkdirat(cur, comps[i], 0755) < 0 && errno != EEXIST) {
                strbuf_addf(err, "archive: cannot create directory for '%s': %s", name,
                            strerror(errno));
                close(cur);
                return SL_EIO;
            }
            next = openat(cur, comps[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (next < 0) {
            int en = errno;
            close(cur);
            if (en == ELOOP || en == ENOTDIR) {
                strbuf_addf(err,
                            "archive: refusing '%s': its path goes through a symbolic link "
                            "or a file",
                            name);
                return SL_EINVAL;
            }
            strbuf_addf(err, "archive: cannot open directory for '%s': %s", name, strerror(en));
            return SL_EIO;
        }
        close(cur);
        cur = next;
    }
    return cur;
}

/* Removes a non-directory at parent/name, if any, so the entry can take its place. */
static int clear_place(int parent, const char *leaf, const char *name, struct strbuf *err)
{
    struct stat st;
    if (fstatat(parent, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return 0;
    if (S_ISDIR(st.st_mode)) {
        strbuf_addf(err, "archive: refusing '%s': a directory of that name exists", name);
        return SL_EINVAL;
    }
    if (unlinkat(parent, leaf, 0) < 0) {
        strbuf_addf(err, "archive: cannot replace '%s': %s", name, strerror(errno));
        return SL_EIO;
    }
    return 0;
}

static int extract_file(struct tar_in *in, int parent, const char *leaf, const char *name,
                        uint64_t size, unsigned mode, unsigned char *buf, struct strbuf *err)
{
    int rc = clear_place(parent, leaf, name, err);
    if (rc < 0)
        return rc;
    int fd = openat(parent, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    (mode & 0777) | 0600);
    if (fd < 0) {
        strbuf_addf(err, "archive: cannot create '%s': %s", name, strerror(errno));
        return SL_EIO;
    }
    uint64_t left = size;
    while (left > 0 && rc == 0) {
        size_t take = left < IO_BUF ? (size_t)left : IO_BUF;
        rc = in_read(in, buf, take, err);
        if (rc == 1) {
            strbuf_addf(err, "archive: truncated in '%s'", name);
            rc = SL_EINVAL;
        }
        if (rc == 0 && write_full(fd, buf, take) < 0) {
            strbuf_addf(err, "archive: cannot write '%s': %s", name, strerror(errno));
            rc = SL_EIO;
        }
        left -= take;
    }
    if (close(fd) < 0 && rc == 0) {
        strbuf_addf(err, "archive: cannot write '%s': %s", name, strerror(errno));
        rc = SL_EIO;
    }
    if (rc == 0)
        rc = in_skip(in, (BLOCK - size % BLOCK) % BLOCK, buf, err);
    return rc;
}

static int extract_entries(struct tar_in *in, int root, struct strbuf *err)
{
    unsigned char h[BLOCK];
    unsigned char *buf = xmalloc(IO_BUF);
    char *pax_path = NULL, *pax_link = NULL, *gnu_name = NULL, *gnu_link = NULL;
    uint64_t pax_size = 0;
    bool has_pax_size = false;
    int rc = 0, zero_blocks = 0;

    for (;;) {
        rc = in_read(in, h, BLOCK, err);
        if (rc == 1) {
            if (zero_blocks == 0) {
                strbuf_addstr(err, "archive: truncated (no end-of-archive marker)");
                rc = SL_EINVAL;
            } else {
                rc = 0;
            }
            break;
        }
        if (rc < 0)
            break;
        if (all_zero(h)) {
            if (++zero_blocks == 2)
                break;
            continue;
        }
        zero_blocks = 0;
        if (!checksum_ok(h)) {
            strbuf_addstr(err, "archive: bad header checksum (not a tar archive, or corrupt)");
            rc = SL_EINVAL;
            break;
        }
        char type = (char)h[156];
        uint64_t size;
        if (!parse_num(&size, h + 124, 12)) {
            strbuf_addstr(err, "archive: bad size field");
            rc = SL_EINVAL;
            break;
        }
        if (has_pax_size)
            size = pax_size;

        /* extended headers: they describe the next entry */
        if (type == 'x' || type == 'g' || type == 'L' || type == 'K') {
            if (size > MAX_PAX) {
                strbuf_addstr(err, "archive: extended header too large");
                rc = SL_EINVAL;
                break;
            }
            char *data = xmalloc((size_t)size + 1);
            rc = in_read(in, data, (size_t)size, err);
            if (rc == 1 && size > 0) {
                strbuf_addstr(err, "archive: truncated");
                rc = SL_EINVAL;
            }
            if (rc >= 0)
                rc = in_skip(in, (BLOCK - size % BLOCK) % BLOCK, buf, err);
            data[size] = '\0';
            if (rc == 0 && type == 'x')
                rc = parse_pax(data, (size_t)size, &pax_path, &pax_link, &pax_size, &has_pax_size,
                               err);
            if (rc == 0 && type == 'L') {
                free(gnu_name);
                gnu_name = xstrdup(data);
            } else if (rc == 0 && type == 'K') {
                free(gnu_link);
                gnu_link = xstrdup(data);
            }
            free(data);
            if (rc < 0)
                break;
            continue;
        }

        /* the entry's name and link target */
        char name[MAX_PATH + 256];
        if (pax_path) {
            snprintf(name, sizeof(name), "%s", pax_path);
        } else if (gnu_name) {
            snprintf(name, sizeof(name), "%s", gnu_name);
        } else {
            char n100[101], prefix[156];
            memcpy(n100, h, 100);
            n100[100] = '\0';
            memcpy(prefix, h + 345, 155);
            prefix[155] = '\0';
            bool ustar = !memcmp(h + 257, "ustar", 5);
            if (ustar && prefix[0])
                snprintf(name, sizeof(name), "%s/%s", prefix, n100);
            else
                snprintf(name, sizeof(name), "%s", n100);
        }
        char link[MAX_PATH + 1];
        if (pax_link) {
            snprintf(link, sizeof(link), "%s", pax_link);
        } else if (gnu_link) {
            snprintf(link, sizeof(link), "%s", gnu_link);
        } else {
            memcpy(link, h + 157, 100);
            link[100] = '\0';
        }
        free(pax_path);
        free(pax_link);
        free(gnu_name);
        free(gnu_link);
        pax_path = pax_link = gnu_name = gnu_link = NULL;
        has_pax_size = false;
        uint64_t mode = 0644;
        parse_num(&mode, h + 100, 8);

        char **comps = NULL;
        int nc = split_name(&comps, name);
        if (nc < 0) {
            strbuf_addf(err, "archive: refusing '%s': absolute, or with a '..' component", name);
            rc = SL_EINVAL;
            break;
        }
        switch (type) {
        case '0':
        case '\0':
        case '7':
        case '5':
        case '2':
            break;
        case '1':
            strbuf_addf(err, "archive: refusing '%s': hard links are not extracted", name);
            rc = SL_EINVAL;
            break;
        case '3':
        case '4':
            strbuf_addf(err, "archive: refusing '%s': device files are not extracted", name);
            rc = SL_EINVAL;
            break;
        case '6':
            strbuf_addf(err, "archive: refusing '%s': FIFOs are not extracted", name);
            rc = SL_EINVAL;
            break;
        default:
            strbuf_addf(err, "archive: refusing '%s': unknown entry type '%c'", name, type);
            rc = SL_EINVAL;
            break;
        }
        if (rc == 0 && type == '2' && !link_stays_inside(link, nc - 1)) {
            strbuf_addf(err, "archive: refusing '%s': symbolic link to '%s' leaves the directory",
                        name, link);
            rc = SL_EINVAL;
        }
        if (rc == 0 && nc == 0) {
            /* the root itself ("./"): nothing to create */
            if (type != '5')
                rc = in_skip(in, size + (BLOCK - size % BLOCK) % BLOCK, buf, err);
            free_comps(comps, nc);
            if (rc < 0)
                break;
            continue;
        }
        int parent = rc == 0 ? open_dirs(root, comps, type == '5' ? nc : nc - 1, name, err) : rc;
        if (parent < 0)
            rc = parent;
        if (rc == 0 && type == '5') {
            /* open_dirs created it; keep it writable by us while extracting */
            if (fchmod(parent, ((unsigned)mode & 0777) | 0700) < 0) {
                strbuf_addf(err, "archive: cannot set the mode of '%s': %s", name, strerror(errno));
                rc = SL_EIO;
            }
            if (rc == 0)
                rc = in_skip(in, size + (BLOCK - size % BLOCK) % BLOCK, buf, err);
        } else if (rc == 0 && type == '2') {
            rc = clear_place(parent, comps[nc - 1], name, err);
            if (rc == 0 && symlinkat(link, parent, comps[nc - 1]) < 0) {
                strbuf_addf(err, "archive: cannot create link '%s': %s", name, strerror(errno));
                rc = SL_EIO;
            }
            if (rc == 0)
                rc = in_skip(in, size + (BLOCK - size % BLOCK) % BLOCK, buf, err);
        } else if (rc == 0) {
            rc = extract_file(in, parent, comps[nc - 1], name, size, (unsigned)mode, buf, err);
        }
        if (parent >= 0)
            close(parent);
        free_comps(comps, nc);
        if (rc < 0)
            break;
    }
    free(pax_path);
    free(pax_link);
    free(gnu_name);
    free(gnu_link);
    free(buf);
    return rc;
}

int archive_extract(const char *archive_path, const char *dest, struct strbuf *err)
{
    struct tar_in in = {.fd = open(archive_path, O_RDONLY | O_CLOEXEC)};
    if (in.fd < 0) {
        strbuf_addf(err, "archive: cannot open '%s': %s", archive_path, strerror(errno));
        return errno == ENOENT ? SL_ENOENT : SL_EIO;
    }
    int root = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
        strbuf_addf(err, "archive: cannot open directory '%s': %s", dest, strerror(errno));
        close(in.fd);
        return errno == ENOENT ? SL_ENOENT : SL_EIO;
    }
    unsigned char magic[2];
    ssize_t m = pread(in.fd, magic, 2, 0);
    in.gzip = m == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    if (in.gzip) {
        in.zbuf = xmalloc(IO_BUF);
        if (inflateInit2(&in.z, 15 + 32) != Z_OK) /* gzip or zlib, detected */
            abort();
    }
    int rc = extract_entries(&in, root, err);
    if (in.gzip) {
        inflateEnd(&in.z);
        free(in.zbuf);
    }
    close(root);
    close(in.fd);
    return rc;
}
