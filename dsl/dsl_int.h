/*
 * dsl/dsl_int.h - internals shared by the files of dsl/; not part of the contract.
 */
#ifndef SLUICE_DSL_DSL_INT_H
#define SLUICE_DSL_DSL_INT_H

#include "dsl/dsl.h"

#define DSL_N_TRIGGER_RULES  8
#define DSL_N_RETRY_POLICIES 4
#define DSL_N_PARAM_TYPES    6
#define DSL_N_CATCHUP        3
#define DSL_N_OVERLAP        3

extern const char *const dsl_trigger_names[DSL_N_TRIGGER_RULES];
extern const char *const dsl_retry_names[DSL_N_RETRY_POLICIES];
extern const char *const dsl_type_names[DSL_N_PARAM_TYPES];
extern const char *const dsl_catchup_names[DSL_N_CATCHUP];
extern const char *const dsl_overlap_names[DSL_N_OVERLAP];

/*
 * Bump allocation for the many small objects of a parse (YAML nodes, the model's
 * strings): 8-byte aligned, not zeroed, carved from blocks taken from mem, and
 * freed with it. An arena aligns every allocation to 16 bytes and zero-fills it,
 * which for short strings costs a quarter of the memory. Defined in yaml.c.
 */
struct dsl_pool {
    struct arena *mem; /* where blocks come from; set before the first allocation */
    char *next;        /* private: the free part of the current block */
    size_t left;       /* private */
    size_t block;      /* private: the current block's size */
};

void *dsl_pool_alloc(struct dsl_pool *p, size_t size);
/* A copy of s (of len bytes, then a NUL is added) in p. */
char *dsl_pool_strndup(struct dsl_pool *p, const char *s, size_t len);

/* Where a loaded value came from, kept while validating so that later checks
 * (dependencies, templates) can point at the line that is wrong. Scratch memory. */
struct dsl_step_marks {
    struct dsl_pos *depends_on; /* one per depends_on entry */
    struct dsl_pos when;
    struct dsl_pos for_each;
    struct dsl_pos *command, *args, *env, *inputs;
    struct dsl_pos image, workdir;
};

/* The state of one parse: loading (load.c) then validation (validate.c). */
struct dsl_parse {
    const char *file;
    struct dsl_diags *diags;
    size_t first_diag; /* diags->items[first_diag..] are this parse's */
    size_t errors;
    struct dsl_dag *dag;
    struct arena *mem;                 /* == &dag->mem: only what the model keeps */
    struct arena *scratch;             /* everything else; released when the parse ends */
    struct dsl_step_marks *marks;      /* parallel to dag->steps */
    struct dsl_step_marks *exit_marks; /* parallel to dag->on_exit */
    struct dsl_pos schedule_pos, timezone_pos, start_pos, end_pos;
};

void dsl_parse_error(struct dsl_parse *P, struct dsl_pos pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Cross-field validation of a loaded model: names, dependencies, cycles,
 * templates and expressions. Reports into P. */
void dsl_validate(struct dsl_parse *P);

/* The closest candidate to word within an edit distance of a third of its
 * length (at least 1, at most 3), or NULL. */
const char *dsl_did_you_mean(const char *word, const char *const *candidates, size_t n);

#endif
