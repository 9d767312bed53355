/*
 * common/arena.c - chunked bump allocation.
 *
 * Chunks grow geometrically (4 KiB doubling to 1 MiB); a request larger than a
 * quarter of the chunk size gets a chunk of its own, so memory stays
 * proportional to what was asked for.
 */
#include "common/arena.h"
#include "common/xalloc.h"

#include <stdalign.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct arena_chunk {
    struct arena_chunk *next;
    size_t size; /* usable bytes in data */
    size_t used;
    alignas(max_align_t) unsigned char data[];
};

#define ARENA_MIN_CHUNK ((size_t)4096)
#define ARENA_MAX_CHUNK ((size_t)1 << 20)

void arena_init(struct arena *a)
{
    a->head = NULL;
    a->total_bytes = 0;
}

void arena_release(struct arena *a)
{
    struct arena_chunk *c = a->head;
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    arena_init(a);
}

static struct arena_chunk *arena_new_chunk(struct arena *a, size_t size)
{
    struct arena_chunk *c = xmalloc(sizeof(*c) + size);
    c->size = size;
    c->used = 0;
    a->total_bytes += sizeof(*c) + size;
    return c;
}

void *arena_alloc(struct arena *a, size_t size)
{
    const size_t align = alignof(max_align_t);
    if (size > SIZE_MAX - align)
        size = SIZE_MAX - align; /* xmalloc will abort */
    size = (size + align - 1) & ~(align - 1);
    if (size == 0)
        size = align;

    struct arena_chunk *c = a->head;
    if (!c || c->size - c->used < size) {
        size_t chunk = c ? c->size * 2 : ARENA_MIN_CHUNK;
        if (chunk > ARENA_MAX_CHUNK)
            chunk = ARENA_MAX_CHUNK;
        if (size > chunk / 4) {
            /* A big block gets its own chunk behind the current one, so the
             * current chunk's free space stays usable. */
            struct arena_chunk *big = arena_new_chunk(a, size);
            big->used = size;
            if (c) {
                big->next = c->next;
                c->next = big;
            } else {
                big->next = NULL;
                a->head = big;
            }
            memset(big->data, 0, size);
            return big->data;
        }
        struct arena_chunk *fresh = arena_new_chunk(a, chunk);
        fresh->next = c;
        a->head = fresh;
        c = fresh;
    }
    void *p = c->data + c->used;
    c->used += size;
    memset(p, 0, size);
    return p;
}

void *arena_calloc(struct arena *a, size_t n, size_t elem_size)
{
    if (elem_size && n > SIZE_MAX / elem_size) {
        fprintf(stderr, "fatal: arena array overflow\n");
        abort();
    }
    return arena_alloc(a, n * elem_size);
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = arena_alloc(a, len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *arena_strdup(struct arena *a, const char *s)
{
    return arena_strndup(a, s, SIZE_MAX);
}

char *arena_sprintf(struct arena *a, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    char *p = arena_alloc(a, (size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}
