/*
 * common/xalloc.h - allocation that never returns NULL.
 *
 * Running out of memory is not a condition sluice recovers from: these wrappers
 * log one line and abort, so callers never check for NULL. Memory from them is
 * released with free().
 */
#ifndef SLUICE_COMMON_XALLOC_H
#define SLUICE_COMMON_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Returns a newly allocated string formatted as printf() would. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Grows *ptr (an array of elem_size items, *alloc of them allocated) so that it can
 * hold at least n items. Doubles, so appends are amortized O(1). */
void xgrow(void **ptr, size_t *alloc, size_t n, size_t elem_size);
#define XGROW(ptr, alloc, n) xgrow((void **)&(ptr), &(alloc), (n), sizeof(*(ptr)))

#endif
