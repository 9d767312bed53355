/*
 * worker/expand.h - Kubernetes' dependent-variable expansion, $(NAME), for the executors.
 *
 * The scheduler renders `{{ run.dir }}` and `{{ attempt.dir }}` to the literal text
 * `$(SLUICE_RUN_DIR)` and `$(SLUICE_ATTEMPT_DIR)`, because only the worker that runs the
 * step knows those directories. The executor then expands references in command, args,
 * env values (and, for `local`, workdir and output param paths) exactly as the kubelet
 * expands a container's command, args and env (Kubernetes'
 * third_party/forked/golang/expansion):
 *
 *   $(NAME)   the value of NAME if lookup() knows it, else left as written, "$(NAME)";
 *             NAME is every byte up to the next ')' (so "$()" is a name too, never
 *             defined); a value is inserted as is, never expanded again
 *   $$        a literal '$' (so "$$(NAME)" gives "$(NAME)", never expanded)
 *   $( with no ')' after it, '$' before any other byte, and a final '$': kept as written
 *
 * One difference, on purpose: after a lone '$' Kubernetes re-encodes the next byte as if
 * it were a code point (so "$é" comes out mangled); here every byte is copied as is.
 *
 * Pure: no I/O, no shared state, any thread.
 */
#ifndef SLUICE_WORKER_EXPAND_H
#define SLUICE_WORKER_EXPAND_H

#include <stddef.h>

struct strbuf;

/* Returns the value of the variable name[0..len) (not NUL-terminated), or NULL if it is
 * not defined. The returned string must stay valid until worker_expand() returns. */
typedef const char *(*worker_expand_lookup_fn)(void *data, const char *name, size_t len);

/*
 * Appends in, with its $(NAME) references expanded as above, to out. Returns how many
 * references were replaced by a value (0: out got in with only "$$" unescaped).
 */
size_t worker_expand(struct strbuf *out, const char *in, worker_expand_lookup_fn lookup,
                     void *data);

#endif
