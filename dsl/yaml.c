/*
 * dsl/yaml.c - YAML text to a compact node tree, from libyaml's event parser.
 *
 * libyaml's document API (yaml_parser_load) mallocs every node, every scalar and a
 * copy of the default tag for each node, and yaml_document_delete frees them one by
 * one: for a large DAG that was most of the parse. Here yaml_parser_parse produces
 * events and this file composes them, as libyaml's loader does, into a tree of
 * struct dsl_yaml_node allocated from the caller's arena:
 *
 *   SCALAR              a node with its text (one allocation: node, then text)
 *   SEQUENCE/MAPPING-   a node, pushed on the stack of open collections; its
 *   START               children are pushed on one shared stack of children
 *   SEQUENCE/MAPPING-   the collection's children move from that stack into an
 *   END                 arena array of exactly their number; the node is closed
 *   ALIAS               the anchored node itself becomes the child
 *
 * A node is added to its parent when it starts, and its anchor is registered then,
 * so an alias inside the node it names (`&r [*r]`) refers to it: the tree is then
 * cyclic, exactly as libyaml's document was, and the walk in load.c stops it with its
 * depth and visit limits. Anchors are scoped to their document; redefining one is an
 * error ("found duplicate anchor"), as is an alias to an undefined one, with the
 * problem, context and mark libyaml's loader gives (those composer errors are stored
 * in the parser's error fields, where libyaml's loader stores them, so that every
 * YAML error is reported by one function).
 *
 * A file holds one document. After it, the next document is composed too (so that
 * an error in it is a syntax error, as before), then reported; nothing after it is
 * read.
 *
 * Memory: nodes, text, child arrays and anchor names live in the caller's arena,
 * through a struct dsl_pool (defined here, used by load.c too): a scalar is one
 * allocation, its node then its text. The two stacks and the anchor table are
 * malloc'd and freed before returning.
 *
 * Limits: libyaml's loader refused a document of INT_MAX - 1 nodes, or a collection
 * of INT_MAX - 1 children, as a memory error; so does this one, so counts fit in an
 * int.
 */
#include "dsl/yaml_int.h"
#include "dsl/dsl_int.h"
#include "common/error.h"
#include "common/xalloc.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define POOL_FIRST_BLOCK ((size_t)1 << 10)
#define POOL_BLOCK       ((size_t)64 << 10)
#define MAX_NODES        ((size_t)INT_MAX - 1) /* as libyaml's loader */

struct anchor {
    const char *name; /* NULL: an empty slot */
    const struct dsl_yaml_node *node;
    yaml_mark_t mark; /* of the anchored node, for the duplicate-anchor error */
};

struct open_collection {
    struct dsl_yaml_node *node;
    size_t first_child; /* its children are children[first_child..n_children) */
};

struct builder {
    yaml_parser_t *parser;
    struct dsl_pool pool;
    const struct dsl_yaml_node *root; /* of the document being composed */
    size_t n_nodes;                   /* in the document (aliases are not nodes) */

    struct open_collection *open; /* innermost last */
    size_t n_open, open_alloc;

    const struct dsl_yaml_node **children; /* of every open collection, in order */
    size_t n_children, children_alloc;

    struct anchor *anchors; /* open addressing; capacity a power of two */
    size_t n_anchors, anchors_cap;
};

/* --- memory ------------------------------------------------------------------------- */

/* Blocks are taken from the arena, 1 KiB first, each twice the last up to
 * POOL_BLOCK, so that a small parse takes little; a request above a quarter of a
 * block gets an arena allocation of its own. */
void *dsl_pool_alloc(struct dsl_pool *p, size_t size)
{
    size = (size + 7) & ~(size_t)7;
    if (size > p->left) {
        size_t block = p->block ? p->block * 2 : POOL_FIRST_BLOCK;
        if (block > POOL_BLOCK)
            block = POOL_BLOCK;
        if (size > block / 4)
            return arena_alloc(p->mem, size);
        p->next = arena_alloc(p->mem, block);
        p->left = p->block = block;
    }
    void *r = p->next;
    p->next += size;
    p->left -= size;
    return r;
}

char *dsl_pool_strndup(struct dsl_pool *p, const char *s, size_t len)
{
    char *copy = dsl_pool_alloc(p, len + 1);
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

/* --- anchors ------------------------------------------------------------------------ */

static size_t hash_name(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static struct anchor *anchor_slot(const struct builder *b, const char *name)
{
    size_t mask = b->anchors_cap - 1;
    for (size_t h = hash_name(name) & mask;; h = (h + 1) & mask) {
        struct anchor *a = &b->anchors[h];
        if (!a->name || !strcmp(a->name, name))
            return a;
    }
}

static const struct anchor *anchor_find(const struct builder *b, const char *name)
{
    if (b->n_anchors == 0)
        return NULL;
    const struct anchor *a = anchor_slot(b, name);
    return a->name ? a : NULL;
}

static void anchors_grow(struct builder *b)
{
    struct anchor *old = b->anchors;
    size_t old_cap = b->anchors_cap;
    b->anchors_cap = old_cap ? old_cap * 2 : 16;
    b->anchors = xcalloc(b->anchors_cap, sizeof(*b->anchors));
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].name)
            *anchor_slot(b, old[i].name) = old[i];
    }
    free(old);
}

/* Anchors name nodes of one document only. */
static void anchors_clear(struct builder *b)
{
    if (b->anchors)
        memset(b->anchors, 0, b->anchors_cap * sizeof(*b->anchors));
    b->n_anchors = 0;
}

/* libyaml's loader records its errors in these fields of the parser. */
static int composer_error(yaml_parser_t *parser, const char *context, yaml_mark_t context_mark,
                          const char *problem, yaml_mark_t problem_mark)
{
    parser->error = YAML_COMPOSER_ERROR;
    if (context) {
        parser->context = context;
        parser->context_mark = context_mark;
    }
    parser->problem = problem;
    parser->problem_mark = problem_mark;
    return 0;
}

/* Names node by the event's anchor (name may be NULL: no anchor). Returns 0 on a
 * duplicate anchor, with the parser's error set, else 1. */
static int anchor_register(struct builder *b, const yaml_char_t *name,
                           const struct dsl_yaml_node *node, yaml_mark_t mark)
{
    if (!name)
        return 1;
    const struct anchor *first = anchor_find(b, (const char *)name);
    if (first)
        return composer_error(b->parser, "found duplicate anchor; first occurrence", first->mark,
                              "second occurrence", mark);
    if ((b->n_anchors + 1) * 2 > b->anchors_cap)
        anchors_grow(b);
    struct anchor *a = anchor_slot(b, (const char *)name);
    a->name = dsl_pool_strndup(&b->pool, (const char *)name, strlen((const char *)name));
    a->node = node;
    a->mark = mark;
    b->n_anchors++;
    return 1;
}

/* --- composing ----------------------------------------------------------------------- */

/* A memory error, as libyaml's loader reports when a count would pass MAX_NODES. */
static int too_many(yaml_parser_t *parser)
{
    parser->error = YAML_MEMORY_ERROR;
    return 0;
}

/* Allocates a node of size bytes (text included) and fills its common fields.
 * Returns NULL (with the parser's error set) when the document has too many. */
static struct dsl_yaml_node *node_new(struct builder *b, size_t size, enum dsl_yaml_kind kind,
                                      yaml_mark_t mark)
{
    if (b->n_nodes >= MAX_NODES) {
        too_many(b->parser);
        return NULL;
    }
    b->n_nodes++;
    struct dsl_yaml_node *n = dsl_pool_alloc(&b->pool, size);
    n->line = (int)mark.line + 1;
    n->col = (int)mark.column + 1;
    n->n = 0;
    n->kind = (unsigned char)kind;
    n->style = DSL_YAML_PLAIN;
    n->has_nul = false;
    n->u.text = NULL;
    return n;
}

/* Adds node to the innermost open collection, or makes it the root. Returns 0
 * (a memory error) when the collection has too many children. */
static int add_child(struct builder *b, const struct dsl_yaml_node *node)
{
    if (b->n_open == 0) {
        b->root = node;
        return 1;
    }
    const struct open_collection *oc = &b->open[b->n_open - 1];
    size_t count = b->n_children - oc->first_child;
    if (oc->node->kind == DSL_YAML_MAPPING)
        count /= 2; /* pairs */
    if (count >= MAX_NODES)
        return too_many(b->parser);
    if (b->n_children == b->children_alloc)
        xgrow((void **)&b->children, &b->children_alloc, b->n_children + 1,
              sizeof(const struct dsl_yaml_node *));
    b->children[b->n_children++] = node;
    return 1;
}

static enum dsl_yaml_style scalar_style(yaml_scalar_style_t style)
{
    switch (style) {
    case YAML_SINGLE_QUOTED_SCALAR_STYLE:
        return DSL_YAML_SINGLE_QUOTED;
    case YAML_DOUBLE_QUOTED_SCALAR_STYLE:
        return DSL_YAML_DOUBLE_QUOTED;
    case YAML_LITERAL_SCALAR_STYLE:
        return DSL_YAML_LITERAL;
    case YAML_FOLDED_SCALAR_STYLE:
        return DSL_YAML_FOLDED;
    default:
        return DSL_YAML_PLAIN;
    }
}

static int on_scalar(struct builder *b, const yaml_event_t *ev)
{
    size_t len = ev->data.scalar.length;
    const char *value = (const char *)ev->data.scalar.value;
    struct dsl_yaml_node *n = node_new(b, sizeof(*n) + len + 1, DSL_YAML_SCALAR, ev->start_mark);
    if (!n)
        return 0;
    char *text = (char *)(n + 1);

    n->style = (unsigned char)scalar_style(ev->data.scalar.style);
    memcpy(text, value, len);
    text[len] = '\0';
    n->has_nul = memchr(value, '\0', len) != NULL;
    n->u.text = text;
    if (!anchor_register(b, ev->data.scalar.anchor, n, ev->start_mark))
        return 0;
    return add_child(b, n);
}

static int on_collection_start(struct builder *b, const yaml_event_t *ev, enum dsl_yaml_kind kind)
{
    struct dsl_yaml_node *n = node_new(b, sizeof(*n), kind, ev->start_mark);
    const yaml_char_t *anchor =
        kind == DSL_YAML_SEQUENCE ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor;

    if (!n || !anchor_register(b, anchor, n, ev->start_mark) || !add_child(b, n))
        return 0;
    if (b->n_open == b->open_alloc)
        XGROW(b->open, b->open_alloc, b->n_open + 1);
    b->open[b->n_open].node = n;
    b->open[b->n_open].first_child = b->n_children;
    b->n_open++;
    return 1;
}

static void on_collection_end(struct builder *b)
{
    if (b->n_open == 0) /* never: the parser pairs every end with a start */
        return;
    struct open_collection *oc = &b->open[--b->n_open];
    struct dsl_yaml_node *n = oc->node;
    const struct dsl_yaml_node **kids = b->children + oc->first_child;
    size_t count = b->n_children - oc->first_child;

    if (n->kind == DSL_YAML_SEQUENCE) {
        const struct dsl_yaml_node **items = NULL;
        if (count) {
            items = dsl_pool_alloc(&b->pool, count * sizeof(const struct dsl_yaml_node *));
            memcpy(items, kids, count * sizeof(const struct dsl_yaml_node *));
        }
        n->n = (unsigned)count;
        n->u.items = items;
    } else {
        /* the parser always gives a mapping's events as key, value, key, value... */
        struct dsl_yaml_pair *pairs = NULL;
        n->n = (unsigned)(count / 2);
        if (n->n)
            pairs = dsl_pool_alloc(&b->pool, n->n * sizeof(*pairs));
        for (size_t i = 0; i < n->n; i++) {
            pairs[i].key = kids[2 * i];
            pairs[i].value = kids[2 * i + 1];
        }
        n->u.pairs = pairs;
    }
    b->n_children = oc->first_child;
}

/* Handles one event inside a document. Returns 0 on a composer error. */
static int on_event(struct builder *b, const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return on_scalar(b, ev);
    case YAML_SEQUENCE_START_EVENT:
        return on_collection_start(b, ev, DSL_YAML_SEQUENCE);
    case YAML_MAPPING_START_EVENT:
        return on_collection_start(b, ev, DSL_YAML_MAPPING);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        on_collection_end(b);
        return 1;
    case YAML_ALIAS_EVENT: {
        const struct anchor *a = anchor_find(b, (const char *)ev->data.alias.anchor);
        if (!a)
            return composer_error(b->parser, NULL, ev->start_mark, "found undefined alias",
                                  ev->start_mark);
        return add_child(b, a->node);
    }
    default: /* nothing else occurs between DOCUMENT-START and DOCUMENT-END */
        return 1;
    }
}

/* Composes the document whose DOCUMENT-START was just read, up to and including its
 * DOCUMENT-END; sets b->root. Returns 0 on an error, which the parser's fields
 * describe. */
static int compose_document(struct builder *b)
{
    yaml_event_t ev;
    int ok = 1;

    anchors_clear(b);
    b->root = NULL;
    b->n_nodes = 0;
    b->n_open = b->n_children = 0;
    while (ok) {
        if (!yaml_parser_parse(b->parser, &ev))
            return 0;
        if (ev.type == YAML_DOCUMENT_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        ok = on_event(b, &ev);
        yaml_event_delete(&ev);
    }
    return ok;
}

/* Reads the event that starts the next document. Sets *found to whether there is
 * one (else the stream ended). Returns 0 on an error. */
static int next_document(struct builder *b, bool *found)
{
    yaml_event_t ev;
    if (!yaml_parser_parse(b->parser, &ev))
        return 0;
    *found = ev.type == YAML_DOCUMENT_START_EVENT;
    yaml_event_delete(&ev);
    return 1;
}

/* --- errors -------------------------------------------------------------------------- */

/*
 * Reports the parser's error. An error in the first document says where libyaml
 * was (its context: "while parsing a block mapping"); one in a second document gives
 * the problem alone. That difference is old, and kept: diagnostics are stable.
 */
static void report_error(const yaml_parser_t *parser, bool first_document, const char *buf,
                         size_t len, const char *file, struct dsl_diags *diags)
{
    const char *what = parser->problem ? parser->problem : "invalid YAML";
    yaml_mark_t mark = parser->problem_mark;

    if (!first_document) {
        dsl_diags_add(diags, file, (int)mark.line + 1, (int)mark.column + 1,
                      "YAML syntax error: %s", what);
        return;
    }
    if (parser->error == YAML_READER_ERROR) {
        /* encoding errors carry a byte offset, not a mark */
        mark.line = mark.column = 0;
        for (size_t i = 0; i < parser->problem_offset && i < len; i++) {
            if (buf[i] == '\n') {
                mark.line++;
                mark.column = 0;
            } else {
                mark.column++;
            }
        }
    }
    if (parser->context)
        dsl_diags_add(diags, file, (int)mark.line + 1, (int)mark.column + 1,
                      "YAML syntax error: %s %s", what, parser->context);
    else
        dsl_diags_add(diags, file, (int)mark.line + 1, (int)mark.column + 1,
                      "YAML syntax error: %s", what);
}

/* --- entry point --------------------------------------------------------------------- */

int dsl_yaml_parse(const struct dsl_yaml_node **root, struct arena *mem, const char *buf,
                   size_t len, const char *file, struct dsl_diags *diags)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    struct builder b = {.parser = &parser, .pool = {.mem = mem}};
    const struct dsl_yaml_node *first = NULL;
    bool found = false;
    int result = 0;

    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);

    /* STREAM-START, then DOCUMENT-START or STREAM-END */
    if (!yaml_parser_parse(&parser, &ev)) {
        report_error(&parser, true, buf, len, file, diags);
        result = SL_EPARSE;
        goto cleanup;
    }
    yaml_event_delete(&ev);
    if (!next_document(&b, &found) || (found && !compose_document(&b))) {
        report_error(&parser, true, buf, len, file, diags);
        result = SL_EPARSE;
        goto cleanup;
    }
    if (!found) /* no document: the caller says the file is empty */
        goto cleanup;
    first = b.root;

    if (!next_document(&b, &found) || (found && !compose_document(&b))) {
        report_error(&parser, false, buf, len, file, diags);
        result = SL_EPARSE;
    } else if (found && b.root) {
        dsl_diags_add(diags, file, b.root->line, b.root->col,
                      "a file holds one DAG: found a second YAML document");
        result = SL_EINVALID;
    }

cleanup:
    if (result == 0)
        *root = first;
    yaml_parser_delete(&parser);
    free(b.open);
    free(b.children);
    free(b.anchors);
    return result;
}
