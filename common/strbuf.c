/*
 * common/strbuf.c - growable byte buffers.
 */
#include "common/strbuf.h"
#include "common/error.h"
#include "common/xalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

char strbuf_empty[1];

void strbuf_init(struct strbuf *sb, size_t hint)
{
    sb->alloc = 0;
    sb->len = 0;
    sb->buf = strbuf_empty;
    if (hint)
        strbuf_grow(sb, hint);
}

void strbuf_release(struct strbuf *sb)
{
    if (sb->alloc)
        free(sb->buf);
    strbuf_init(sb, 0);
}

char *strbuf_detach(struct strbuf *sb, size_t *len)
{
    char *res;
    if (len)
        *len = sb->len;
    if (sb->alloc)
        res = sb->buf;
    else
        res = xstrdup("");
    strbuf_init(sb, 0);
    return res;
}

void strbuf_reset(struct strbuf *sb)
{
    sb->len = 0;
    if (sb->alloc)
        sb->buf[0] = '\0';
}

void strbuf_grow(struct strbuf *sb, size_t extra)
{
    size_t need = sb->len + extra + 1;
    if (need <= sb->alloc)
        return;
    if (!sb->alloc) {
        sb->buf = NULL;
    }
    size_t alloc = sb->alloc;
    char *buf = sb->buf;
    xgrow((void **)&buf, &alloc, need, 1);
    if (!sb->alloc)
        buf[0] = '\0';
    sb->buf = buf;
    sb->alloc = alloc;
}

void strbuf_add(struct strbuf *sb, const void *data, size_t len)
{
    strbuf_grow(sb, len);
    memcpy(sb->buf + sb->len, data, len);
    sb->len += len;
    sb->buf[sb->len] = '\0';
}

void strbuf_addstr(struct strbuf *sb, const char *s)
{
    strbuf_add(sb, s, strlen(s));
}

void strbuf_addch(struct strbuf *sb, int c)
{
    strbuf_grow(sb, 1);
    sb->buf[sb->len++] = (char)c;
    sb->buf[sb->len] = '\0';
}

void strbuf_vaddf(struct strbuf *sb, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(sb->buf + sb->len, sb->alloc ? sb->alloc - sb->len : 0, fmt, ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n >= (sb->alloc ? sb->alloc - sb->len : 0)) {
        strbuf_grow(sb, (size_t)n);
        vsnprintf(sb->buf + sb->len, sb->alloc - sb->len, fmt, ap2);
    }
    va_end(ap2);
    sb->len += (size_t)n;
}

void strbuf_addf(struct strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    strbuf_vaddf(sb, fmt, ap);
    va_end(ap);
}

void strbuf_add_json_string(struct strbuf *sb, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    strbuf_addch(sb, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            strbuf_addstr(sb, "\\\"");
            break;
        case '\\':
            strbuf_addstr(sb, "\\\\");
            break;
        case '\n':
            strbuf_addstr(sb, "\\n");
            break;
        case '\r':
            strbuf_addstr(sb, "\\r");
            break;
        case '\t':
            strbuf_addstr(sb, "\\t");
            break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                char esc[7] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15], 0};
                strbuf_addstr(sb, esc);
            } else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
                /* C1 controls: YAML refuses them raw and reads U+0085 as a line
                 * break, so JSON meant to be read back as YAML escapes them */
                char esc[7] = {'\\', 'u', '0', '0', hex[p[1] >> 4], hex[p[1] & 15], 0};
                strbuf_addstr(sb, esc);
                p++;
            } else if (*p == 0xef && p[1] == 0xbf && (p[2] == 0xbe || p[2] == 0xbf)) {
                strbuf_addstr(sb, p[2] == 0xbe ? "\\ufffe" : "\\uffff"); /* non-characters */
                p += 2;
            } else if (*p == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9)) {
                strbuf_addstr(sb, p[2] == 0xa8 ? "\\u2028" : "\\u2029"); /* YAML 1.1 breaks */
                p += 2;
            } else {
                strbuf_addch(sb, *p);
            }
        }
    }
    strbuf_addch(sb, '"');
}

int strbuf_read_file(struct strbuf *sb, const char *path, size_t max_bytes)
{
    int result = SL_EIO;
    FILE *f = fopen(path, "rb");
    struct stat st;
    size_t old_len = sb->len;

    if (!f)
        return errno == ENOENT ? SL_ENOENT : SL_EIO;
    if (fstat(fileno(f), &st) < 0)
        goto cleanup;
    if (S_ISDIR(st.st_mode)) {
        result = SL_EINVAL;
        goto cleanup;
    }
    if (st.st_size > 0 && (size_t)st.st_size > max_bytes) {
        result = SL_ETOOBIG;
        goto cleanup;
    }
    for (;;) {
        strbuf_grow(sb, 8192);
        size_t n = fread(sb->buf + sb->len, 1, sb->alloc - sb->len - 1, f);
        sb->len += n;
        sb->buf[sb->len] = '\0';
        if (sb->len - old_len > max_bytes) {
            result = SL_ETOOBIG;
            goto cleanup;
        }
        if (n == 0) {
            if (ferror(f))
                goto cleanup;
            break;
        }
    }
    result = 0;
cleanup:
    if (result < 0 && sb->alloc) {
        sb->len = old_len;
        sb->buf[old_len] = '\0';
    }
    fclose(f);
    return result;
}
