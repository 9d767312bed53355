/*
 * dsl/yaml_int.h - the YAML layer of dsl/: DAG file text in, one document's node tree out.
 *
 * Internal to dsl/ (used by load.c); not part of the contract. yaml.c drives libyaml's
 * event parser and builds the tree itself, in an arena the caller owns, so that a parse
 * costs one bump allocation per node instead of libyaml's mallocs per node, string and
 * tag. The tree is what libyaml's document API would build, node for node: an alias is
 * a pointer to the node its anchor names, so a document may be a graph, even a cyclic
 * one (`&r [*r]`). Whoever walks it must bound the walk (load.c does).
 */
#ifndef SLUICE_DSL_YAML_INT_H
#define SLUICE_DSL_YAML_INT_H

#include "common/arena.h"
#include "dsl/dsl.h"

#include <stdbool.h>
#include <stddef.h>

enum dsl_yaml_kind {
    DSL_YAML_SCALAR,
    DSL_YAML_SEQUENCE,
    DSL_YAML_MAPPING,
};

/* How a scalar was written: a plain scalar is resolved by the schema (null,
 * booleans, numbers); every other style is a string. */
enum dsl_yaml_style {
    DSL_YAML_PLAIN,
    DSL_YAML_SINGLE_QUOTED,
    DSL_YAML_DOUBLE_QUOTED,
    DSL_YAML_LITERAL, /* | */
    DSL_YAML_FOLDED,  /* > */
};

struct dsl_yaml_pair {
    const struct dsl_yaml_node *key;
    const struct dsl_yaml_node *value;
};

struct dsl_yaml_node {
    int line;            /* where the node starts, 1-based: libyaml's start mark + 1 */
    int col;             /* 1-based, in characters as libyaml counts them */
    unsigned n;          /* sequence: items; mapping: pairs; scalar: 0 */
    unsigned char kind;  /* enum dsl_yaml_kind */
    unsigned char style; /* enum dsl_yaml_style; scalars only */
    bool has_nul;        /* a scalar whose text holds "\0" (an escape): C strings stop early */
    union {
        const char *text;                         /* scalar: NUL-terminated */
        const struct dsl_yaml_node *const *items; /* sequence: n items */
        const struct dsl_yaml_pair *pairs;        /* mapping: n pairs, in file order */
    } u;
};

/*
 * Parses len bytes at buf, which must hold at most one YAML document, into a tree
 * allocated from mem (which the caller releases; nothing else needs freeing).
 *
 * Returns 0 and sets *root to the document's root node, or to NULL when the stream
 * holds no document at all (empty, or only comments). Otherwise adds one diagnostic
 * for file to diags and returns SL_EPARSE for a YAML error (syntax, encoding, an
 * undefined alias, a duplicate anchor), or SL_EINVALID when a second document follows
 * the first. *root is untouched on failure.
 */
int dsl_yaml_parse(const struct dsl_yaml_node **root, struct arena *mem, const char *buf,
                   size_t len, const char *file, struct dsl_diags *diags);

#endif
