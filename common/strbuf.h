/*
 * common/strbuf.h - a growable, always NUL-terminated byte buffer (after git's).
 *
 * struct strbuf sb = STRBUF_INIT;  ... strbuf_addf(&sb, ...); ... strbuf_release(&sb);
 * buf is never NULL: an empty strbuf points at a shared "" until first growth.
 * strbuf_detach() hands the bytes to the caller, who free()s them.
 */
#ifndef SLUICE_COMMON_STRBUF_H
#define SLUICE_COMMON_STRBUF_H

#include <stdarg.h>
#include <stddef.h>

struct strbuf {
    size_t alloc; /* private: bytes allocated, 0 while buf is the shared "" */
    size_t len;   /* public: bytes used, not counting the NUL */
    char *buf;    /* public: the bytes, NUL-terminated */
};

extern char strbuf_empty[];
#define STRBUF_INIT                                                                                \
    {                                                                                              \
        0, 0, strbuf_empty                                                                         \
    }

void strbuf_init(struct strbuf *sb, size_t hint);
/* Frees the bytes and leaves sb empty and reusable. */
void strbuf_release(struct strbuf *sb);
/* Returns the bytes (caller frees) and leaves sb empty. Never NULL. */
char *strbuf_detach(struct strbuf *sb, size_t *len);
void strbuf_reset(struct strbuf *sb);
void strbuf_grow(struct strbuf *sb, size_t extra);
void strbuf_add(struct strbuf *sb, const void *data, size_t len);
void strbuf_addstr(struct strbuf *sb, const char *s);
void strbuf_addch(struct strbuf *sb, int c);
void strbuf_addf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_vaddf(struct strbuf *sb, const char *fmt, va_list ap);
/* Appends s as a JSON string literal, quotes included. */
void strbuf_add_json_string(struct strbuf *sb, const char *s);
/* Reads the whole file at path into sb, refusing files larger than max_bytes.
 * Returns 0, SL_ENOENT, SL_EIO or SL_ETOOBIG; on error sb is unchanged. */
int strbuf_read_file(struct strbuf *sb, const char *path, size_t max_bytes);

#endif
