/*
 * common/arena.h - a bump allocator for memory that dies all at once.
 *
 * A parse, a request or a rendered message allocates from one arena and
 * releases everything with arena_release(). Individual frees do not exist.
 * Allocation failure aborts (through xmalloc). Not thread-safe: one owner.
 */
#ifndef SLUICE_COMMON_ARENA_H
#define SLUICE_COMMON_ARENA_H

#include <stddef.h>

struct arena_chunk;

struct arena {
    struct arena_chunk *head; /* private: newest chunk first */
    size_t total_bytes;       /* public, read-only: bytes obtained from malloc */
};

#define ARENA_INIT                                                                                 \
    {                                                                                              \
        NULL, 0                                                                                    \
    }

void arena_init(struct arena *a);
/* Frees every allocation made from a; a is empty and reusable afterwards. */
void arena_release(struct arena *a);
/* Returns size bytes aligned for any type, zero-filled. Never NULL. */
void *arena_alloc(struct arena *a, size_t size);
/* Returns an array of n elements of elem_size bytes, zero-filled. */
void *arena_calloc(struct arena *a, size_t n, size_t elem_size);
char *arena_strdup(struct arena *a, const char *s);
char *arena_strndup(struct arena *a, const char *s, size_t n);
char *arena_sprintf(struct arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
