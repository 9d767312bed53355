/*
 * dsl/load.c - YAML text to the DAG model, checking every field's type.
 *
 * yaml.c turns the text into a tree of nodes in a scratch arena; this file walks
 * it once, field by field, against declarative tables of the keys each mapping
 * may hold. Every problem is reported with the position of the node it concerns
 * and the walk goes on, so that one run reports every error in the file.
 * Cross-field checks (dependencies, cycles, template references) follow in
 * validate.c.
 *
 * Scalars follow the YAML 1.2 core schema, not YAML 1.1: only true/false are
 * booleans (so `on`, `yes` and `no` stay strings), `~`/`null`/empty are null,
 * and numbers are decimal, 0x hex or 0o octal. Quoted scalars are always strings.
 *
 * Aliases are followed, but the walk is bounded: at most DSL_MAX_DEPTH levels
 * of nesting and DSL_MAX_VISITS nodes in all, so a recursive alias or a
 * "billion laughs" document is an error, not a hang.
 *
 * `defaults:` is applied here: for each step field the step's own value wins;
 * for the mapping fields env, labels, annotations, node_selector, resources and
 * retries the two mappings are merged key by key (the step's keys win).
 *
 * Memory: two arenas. Whatever the model keeps (strings, arrays) is copied into
 * the model's, P->mem; everything needed only while parsing (the node tree, the
 * entries of each mapping, positions for validate.c, merge buffers) goes to
 * P->scratch, released when the parse ends. Node text is never referenced by the
 * model.
 */
#include "dsl/dsl_int.h"
#include "dsl/yaml_int.h"
#include "dsl/cron.h"
#include "common/duration.h"
#include "common/error.h"
#include "common/timeutil.h"
#include "common/tz.h"
#include "common/xalloc.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define DSL_MAX_DEPTH  64
#define DSL_MAX_VISITS 4000000

struct loader {
    struct dsl_parse *P;
    struct dsl_pool strings; /* the model's strings, in P->mem */
    struct arena *tmp;       /* entries of mappings and merge buffers: emptied after each step */
    size_t visits;
    bool too_big; /* the visit budget ran out: stop reporting */
};

/* --- nodes ------------------------------------------------------------------------ */

static struct dsl_pos node_pos(const struct dsl_yaml_node *n)
{
    struct dsl_pos p = {n->line, n->col};
    return p;
}

/* Where a scalar's text begins: one column after the opening quote of a quoted
 * scalar, so that offsets into expressions land on the right column. */
static struct dsl_pos value_pos(const struct dsl_yaml_node *n)
{
    struct dsl_pos p = node_pos(n);
    if (n->kind == DSL_YAML_SCALAR &&
        (n->style == DSL_YAML_SINGLE_QUOTED || n->style == DSL_YAML_DOUBLE_QUOTED))
        p.col++;
    return p;
}

static void lerr(struct loader *L, const struct dsl_yaml_node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void lerr(struct loader *L, const struct dsl_yaml_node *n, const char *fmt, ...)
{
    struct strbuf sb = STRBUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    strbuf_vaddf(&sb, fmt, ap);
    va_end(ap);
    dsl_parse_error(L->P, node_pos(n), "%s", sb.buf);
    strbuf_release(&sb);
}

/* Every step of the walk into a node goes through here: it counts against the
 * visit budget (aliases make a small file a big walk), and a scalar's NUL is
 * reported where the walk meets it. Returns n, or NULL when the budget is spent. */
static const struct dsl_yaml_node *visit(struct loader *L, const struct dsl_yaml_node *n)
{
    if (++L->visits > DSL_MAX_VISITS) {
        if (!L->too_big) {
            L->too_big = true;
            dsl_parse_error(L->P, (struct dsl_pos){0, 0},
                            "document expands to more than %d nodes (recursive or "
                            "repeated aliases?)",
                            DSL_MAX_VISITS);
        }
        return NULL;
    }
    /* "\0" in a quoted scalar would silently cut the C string short */
    if (n->kind == DSL_YAML_SCALAR && n->has_nul)
        lerr(L, n, "a string contains a NUL character (\\0)");
    return n;
}

static const char *scalar(const struct dsl_yaml_node *n)
{
    return n->u.text;
}

static bool is_plain(const struct dsl_yaml_node *n)
{
    return n->kind == DSL_YAML_SCALAR && n->style == DSL_YAML_PLAIN;
}

/* A copy of s in the model's arena. */
static const char *model_strdup(struct loader *L, const char *s)
{
    return dsl_pool_strndup(&L->strings, s, strlen(s));
}

enum vkind { V_NULL, V_BOOL, V_INT, V_FLOAT, V_STRING, V_LIST, V_MAP };

/* Kinds with their article, as messages use them: "must be a list, not an integer". */
static const char *const vkind_names[] = {"null",     "a boolean", "an integer", "a number",
                                          "a string", "a list",    "a mapping"};

static bool match_int(const char *s, long long *out)
{
    const char *p = s;
    int base = 10;
    if (*p == '+' || *p == '-')
        p++;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'o')) {
        if (s[0] == '+' || s[0] == '-')
            return false;
        base = p[1] == 'x' ? 16 : 8;
        p += 2;
    }
    if (!*p)
        return false;
    for (const char *q = p; *q; q++) {
        bool ok = base == 16 ? strchr("0123456789abcdefABCDEF", *q) != NULL
                             : (*q >= '0' && *q < (base == 8 ? '8' : ':'));
        if (!ok)
            return false;
    }
    errno = 0;
    long long v = strtoll(base == 10 ? s : p, NULL, base);
    if (errno == ERANGE)
        return false;
    if (out)
        *out = v;
    return true;
}

static bool match_float(const char *s, double *out)
{
    /* the special values have their '.' first, or second after a sign */
    bool dot = s[0] == '.' || (s[0] != '\0' && s[1] == '.');
    if (dot && (!strcmp(s, ".inf") || !strcmp(s, "+.inf") || !strcmp(s, "-.inf") ||
                !strcmp(s, ".nan") || !strcmp(s, ".Inf") || !strcmp(s, ".NaN"))) {
        if (out)
            *out = strchr(s, 'n') || strchr(s, 'N') ? (s[1] == 'n' || s[1] == 'N' ? NAN : INFINITY)
                                                    : INFINITY;
        if (out && s[0] == '-')
            *out = -INFINITY;
        return true;
    }
    const char *p = s;
    int digits = 0;
    if (*p == '+' || *p == '-')
        p++;
    while (*p >= '0' && *p <= '9')
        p++, digits++;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9')
            p++, digits++;
    }
    if (!digits)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p)
        return false;
    if (out)
        *out = strtod(s, NULL);
    return true;
}

static enum vkind kind_of(const struct dsl_yaml_node *n)
{
    if (n->kind == DSL_YAML_SEQUENCE)
        return V_LIST;
    if (n->kind == DSL_YAML_MAPPING)
        return V_MAP;
    if (!is_plain(n))
        return V_STRING;
    const char *s = scalar(n);
    switch (s[0]) {
    case '\0':
        return V_NULL;
    case '~':
    case 'n':
    case 'N':
        if (!strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL"))
            return V_NULL;
        return V_STRING;
    case 't':
    case 'T':
    case 'f':
    case 'F':
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE") || !strcmp(s, "false") ||
            !strcmp(s, "False") || !strcmp(s, "FALSE"))
            return V_BOOL;
        return V_STRING;
    default:
        break;
    }
    /* a number starts with a digit, a sign or a dot */
    if (!strchr("+-.0123456789", s[0]))
        return V_STRING;
    if (match_int(s, NULL))
        return V_INT;
    if (match_float(s, NULL))
        return V_FLOAT;
    return V_STRING;
}

/* Writes the node as JSON into sb. Returns false (after reporting) when it cannot. */
static bool node_to_json(struct loader *L, struct strbuf *sb, const struct dsl_yaml_node *n,
                         int depth)
{
    if (depth > DSL_MAX_DEPTH) {
        lerr(L, n, "value is nested more than %d levels deep", DSL_MAX_DEPTH);
        return false;
    }
    switch (kind_of(n)) {
    case V_NULL:
        strbuf_addstr(sb, "null");
        return true;
    case V_BOOL:
        strbuf_addstr(sb, (scalar(n)[0] == 't' || scalar(n)[0] == 'T') ? "true" : "false");
        return true;
    case V_INT: {
        long long v = 0;
        match_int(scalar(n), &v);
        strbuf_addf(sb, "%lld", v);
        return true;
    }
    case V_FLOAT: {
        double v = 0;
        match_float(scalar(n), &v);
        if (!isfinite(v)) {
            lerr(L, n, "'%s' cannot be represented in JSON", scalar(n));
            return false;
        }
        if (v == 0)
            v = 0; /* -0.0 prints as -0, which reads back as the integer 0 */
        char buf[40];
        snprintf(buf, sizeof(buf), "%.15g", v);
        if (strtod(buf, NULL) != v)
            snprintf(buf, sizeof(buf), "%.17g", v);
        strbuf_addstr(sb, buf);
        return true;
    }
    case V_STRING:
        strbuf_add_json_string(sb, scalar(n));
        return true;
    case V_LIST: {
        strbuf_addch(sb, '[');
        bool ok = true;
        for (size_t i = 0; ok && i < n->n; i++) {
            const struct dsl_yaml_node *c = visit(L, n->u.items[i]);
            if (!c)
                return false;
            if (i > 0)
                strbuf_addch(sb, ',');
            ok = node_to_json(L, sb, c, depth + 1);
        }
        strbuf_addch(sb, ']');
        return ok;
    }
    case V_MAP: {
        strbuf_addch(sb, '{');
        bool ok = true;
        for (size_t i = 0; ok && i < n->n; i++) {
            const struct dsl_yaml_node *k = visit(L, n->u.pairs[i].key);
            const struct dsl_yaml_node *v = visit(L, n->u.pairs[i].value);
            if (!k || !v)
                return false;
            if (k->kind != DSL_YAML_SCALAR) {
                lerr(L, k, "mapping keys must be scalars");
                return false;
            }
            if (i > 0)
                strbuf_addch(sb, ',');
            strbuf_add_json_string(sb, scalar(k));
            strbuf_addch(sb, ':');
            ok = node_to_json(L, sb, v, depth + 1);
        }
        strbuf_addch(sb, '}');
        return ok;
    }
    }
    return false;
}

/* --- mappings with declared keys -------------------------------------------------- */

/* One entry of a mapping, after the duplicate-key check. */
struct entry {
    const char *key; /* the declared key, or the key node's text (scratch: copy to keep) */
    const struct dsl_yaml_node *key_node;
    const struct dsl_yaml_node *value;
    size_t field; /* with declared keys, the key's index among them */
};

/* The index of key in known[0..n_known), or n_known. This runs for every key of
 * every step, so the first bytes are compared before strcmp is called. */
static size_t known_index(const char *key, const char *const *known, size_t n_known)
{
    for (size_t i = 0; i < n_known; i++) {
        if (known[i][0] == key[0] && !strcmp(known[i], key))
            return i;
    }
    return n_known;
}

/*
 * Collects the entries of a mapping node into out (L->tmp), reporting
 * non-scalar and duplicate keys, and, when known != NULL, unknown keys with a
 * did-you-mean. Returns the number of entries, or -1 if n is not a mapping.
 */
static long map_entries(struct loader *L, const struct dsl_yaml_node *n, const char *what,
                        const char *const *known, size_t n_known, struct entry **out)
{
    if (n->kind != DSL_YAML_MAPPING) {
        lerr(L, n, "%s must be a mapping, not %s", what, vkind_names[kind_of(n)]);
        return -1;
    }
    struct entry *e = arena_calloc(L->tmp, n->n ? n->n : 1, sizeof(*e));
    size_t count = 0;
    for (size_t p = 0; p < n->n; p++) {
        const struct dsl_yaml_node *k = visit(L, n->u.pairs[p].key);
        const struct dsl_yaml_node *v = visit(L, n->u.pairs[p].value);
        if (!k || !v)
            break;
        if (k->kind != DSL_YAML_SCALAR) {
            lerr(L, k, "keys of %s must be strings", what);
            continue;
        }
        const char *key = scalar(k);
        if (!strcmp(key, "<<") && is_plain(k)) {
            lerr(L, k,
                 "YAML merge keys ('<<') are not supported: use 'defaults:' for values "
                 "shared by steps, or repeat the fields");
            continue;
        }
        /* With declared keys only declared ones are kept, so an undeclared key
         * cannot be a duplicate: it is reported as unknown each time. */
        size_t field = known ? known_index(key, known, n_known) : 0;
        bool declared = !known || field < n_known;
        bool dup = false;
        for (size_t i = 0; declared && i < count; i++) {
            if (known ? e[i].field == field : !strcmp(e[i].key, key)) {
                lerr(L, k, "duplicate key '%s' in %s (first at line %d)", key, what,
                     node_pos(e[i].key_node).line);
                dup = true;
                break;
            }
        }
        if (dup)
            continue;
        if (!declared) {
            const char *hint = dsl_did_you_mean(key, known, n_known);
            if (hint)
                lerr(L, k, "unknown key '%s' in %s (did you mean '%s'?)", key, what, hint);
            else
                lerr(L, k, "unknown key '%s' in %s", key, what);
            continue;
        }
        e[count].key = known ? known[field] : key;
        e[count].key_node = k;
        e[count].value = v;
        e[count].field = field;
        count++;
    }
    *out = e;
    return (long)count;
}

static const struct dsl_yaml_node *lookup(const struct entry *e, long n, const char *key)
{
    for (long i = 0; i < n; i++) {
        if (!strcmp(e[i].key, key))
            return e[i].value;
    }
    return NULL;
}

/* --- typed values ----------------------------------------------------------------- */

/* A string: any non-null scalar, as written. Returns the node's own text
 * (scratch memory), or NULL after reporting. */
static const char *get_text(struct loader *L, const struct dsl_yaml_node *n, const char *what)
{
    enum vkind k = kind_of(n);
    if (k == V_LIST || k == V_MAP || k == V_NULL) {
        lerr(L, n, "%s must be a string, not %s", what, vkind_names[k]);
        return NULL;
    }
    return scalar(n);
}

/* As get_text, copied into the model. */
static const char *get_string(struct loader *L, const struct dsl_yaml_node *n, const char *what)
{
    const char *s = get_text(L, n, what);
    return s ? model_strdup(L, s) : NULL;
}

static bool get_int(struct loader *L, const struct dsl_yaml_node *n, const char *what, int64_t min,
                    int64_t max, int64_t *out)
{
    long long v;
    if (kind_of(n) != V_INT || !match_int(scalar(n), &v)) {
        enum vkind k = kind_of(n);
        if (k == V_INT)
            lerr(L, n, "%s: '%s' is out of range", what, scalar(n));
        else
            lerr(L, n, "%s must be an integer, not %s", what, vkind_names[k]);
        return false;
    }
    if (v < min || v > max) {
        lerr(L, n, "%s must be between %lld and %lld, got %lld", what, (long long)min,
             (long long)max, v);
        return false;
    }
    *out = v;
    return true;
}

static bool get_bool(struct loader *L, const struct dsl_yaml_node *n, const char *what, bool *out)
{
    if (kind_of(n) != V_BOOL) {
        lerr(L, n, "%s must be true or false, not %s", what, vkind_names[kind_of(n)]);
        return false;
    }
    *out = scalar(n)[0] == 't' || scalar(n)[0] == 'T';
    return true;
}

static bool get_number(struct loader *L, const struct dsl_yaml_node *n, const char *what,
                       double *out)
{
    enum vkind k = kind_of(n);
    double v;
    long long iv;
    if (k == V_INT && match_int(scalar(n), &iv)) {
        *out = (double)iv;
        return true;
    }
    if (k == V_FLOAT && match_float(scalar(n), &v) && isfinite(v)) {
        *out = v;
        return true;
    }
    lerr(L, n, "%s must be a number, not %s", what, vkind_names[k]);
    return false;
}

static bool get_duration(struct loader *L, const struct dsl_yaml_node *n, const char *what,
                         int64_t *out)
{
    enum vkind k = kind_of(n);
    if (k == V_INT && !strcmp(scalar(n), "0")) {
        *out = 0;
        return true;
    }
    if (k == V_INT || k == V_FLOAT) {
        lerr(L, n, "%s: '%s' needs a unit, e.g. '%ss' or '%sm'", what, scalar(n), scalar(n),
             scalar(n));
        return false;
    }
    if (k != V_STRING) {
        lerr(L, n, "%s must be a duration such as '30s' or '1h30m', not %s", what, vkind_names[k]);
        return false;
    }
    if (sl_duration_parse(out, scalar(n)) < 0) {
        lerr(L, n, "%s: invalid duration '%s' (use units ms, s, m, h, d, e.g. '1h30m')", what,
             scalar(n));
        return false;
    }
    return true;
}

static bool get_enum(struct loader *L, const struct dsl_yaml_node *n, const char *what,
                     const char *const *names, size_t n_names, int *out)
{
    if (n->kind != DSL_YAML_SCALAR) {
        lerr(L, n, "%s must be a string, not %s", what, vkind_names[kind_of(n)]);
        return false;
    }
    for (size_t i = 0; i < n_names; i++) {
        if (!strcmp(scalar(n), names[i])) {
            *out = (int)i;
            return true;
        }
    }
    struct strbuf sb = STRBUF_INIT;
    for (size_t i = 0; i < n_names; i++)
        strbuf_addf(&sb, "%s%s", i ? ", " : "", names[i]);
    const char *hint = dsl_did_you_mean(scalar(n), names, n_names);
    if (hint)
        lerr(L, n, "%s: unknown value '%s' (did you mean '%s'?); expected one of %s", what,
             scalar(n), hint, sb.buf);
    else
        lerr(L, n, "%s: unknown value '%s'; expected one of %s", what, scalar(n), sb.buf);
    strbuf_release(&sb);
    return false;
}

/* A list of strings; a single scalar is refused unless allow_scalar. The
 * positions of the strings, for later checks, go to scratch memory. */
static const char **get_string_list(struct loader *L, const struct dsl_yaml_node *n,
                                    const char *what, bool allow_scalar, size_t *count,
                                    struct dsl_pos **positions)
{
    *count = 0;
    if (allow_scalar && n->kind == DSL_YAML_SCALAR && kind_of(n) != V_NULL) {
        const char **v = arena_calloc(L->P->mem, 1, sizeof(*v));
        v[0] = model_strdup(L, scalar(n));
        if (positions) {
            *positions = arena_calloc(L->P->scratch, 1, sizeof(**positions));
            (*positions)[0] = value_pos(n);
        }
        *count = 1;
        return v;
    }
    if (n->kind != DSL_YAML_SEQUENCE) {
        lerr(L, n, "%s must be a list of strings, not %s", what, vkind_names[kind_of(n)]);
        return NULL;
    }
    size_t cap = n->n;
    const char **v = arena_calloc(L->P->mem, cap ? cap : 1, sizeof(*v));
    if (positions)
        *positions = arena_calloc(L->P->scratch, cap ? cap : 1, sizeof(**positions));
    for (size_t i = 0; i < n->n; i++) {
        const struct dsl_yaml_node *c = visit(L, n->u.items[i]);
        if (!c)
            break;
        enum vkind k = kind_of(c);
        if (k == V_LIST || k == V_MAP || k == V_NULL) {
            lerr(L, c, "each entry of %s must be a string, not %s", what, vkind_names[k]);
            continue;
        }
        if (positions)
            (*positions)[*count] = value_pos(c);
        v[(*count)++] = model_strdup(L, scalar(c));
    }
    return v;
}

/* --- Kubernetes names --------------------------------------------------------------- */

/* A label value: at most 63 of [A-Za-z0-9_.-], starting and ending alphanumeric. */
static bool is_label_value(const char *s)
{
    size_t n = strlen(s);
    if (n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !((c == '-' || c == '_' || c == '.') && i > 0 && i < n - 1))
            return false;
    }
    return true;
}

/* A DNS-1123 subdomain: dot-separated labels, at most 253 bytes. */
static bool is_dns_subdomain(const char *s, size_t n)
{
    if (n == 0 || n > 253)
        return false;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            char label[64];
            if (i - start == 0 || i - start > 63)
                return false;
            memcpy(label, s + start, i - start);
            label[i - start] = '\0';
            if (!dsl_is_dns_label(label))
                return false;
            start = i + 1;
        }
    }
    return true;
}

/* A label or annotation key: [prefix/]name, prefix a DNS subdomain. */
static bool is_qualified_name(const char *s)
{
    const char *slash = strchr(s, '/');
    const char *name = s;
    if (slash) {
        if (!is_dns_subdomain(s, (size_t)(slash - s)))
            return false;
        name = slash + 1;
    }
    return *name && is_label_value(name);
}

/* The number of entries a merge of these mappings can hold at most. */
static size_t merge_cap(const struct dsl_yaml_node *const layers[2])
{
    size_t cap = 1;
    for (int l = 0; l < 2; l++) {
        if (layers[l] && layers[l]->kind == DSL_YAML_MAPPING)
            cap += layers[l]->n;
    }
    return cap;
}

/*
 * A string-to-string mapping: layers[0] (from defaults:) then layers[1] (the
 * step's own), either may be NULL, a later key replacing an earlier one. The merge
 * is done in scratch memory and the model gets the result; *kv and *count are
 * set when either layer is a mapping.
 */
static void load_kv(struct loader *L, const struct dsl_yaml_node *const layers[2], const char *what,
                    bool label_values, struct dsl_kv **kv, size_t *count)
{
    if (!layers[0] && !layers[1])
        return;
    struct dsl_kv *v = arena_calloc(L->tmp, merge_cap(layers), sizeof(*v));
    size_t total = 0;
    bool any = false;
    for (int l = 0; l < 2; l++) {
        struct entry *e;
        long ne = layers[l] ? map_entries(L, layers[l], what, NULL, 0, &e) : -1;
        if (ne < 0)
            continue;
        any = true;
        for (long i = 0; i < ne; i++) {
            const char *val = get_text(L, e[i].value, what);
            if (!val)
                continue;
            if (!is_qualified_name(e[i].key)) {
                lerr(L, e[i].key_node,
                     "%s: invalid key '%s' (expected [prefix/]name, the name at most 63 "
                     "characters of [A-Za-z0-9_.-])",
                     what, e[i].key);
                continue;
            }
            if (label_values && !is_label_value(val)) {
                lerr(L, e[i].value,
                     "%s: invalid value '%s' for '%s' (at most 63 characters of "
                     "[A-Za-z0-9_.-], starting and ending with a letter or digit)",
                     what, val, e[i].key);
                continue;
            }
            size_t j;
            for (j = 0; j < total; j++) {
                if (!strcmp(v[j].key, e[i].key))
                    break;
            }
            v[j].key = e[i].key;
            v[j].value = val;
            if (j == total)
                total++;
        }
    }
    if (!any)
        return;
    *kv = arena_calloc(L->P->mem, total + 1, sizeof(**kv));
    for (size_t j = 0; j < total; j++) {
        (*kv)[j].key = model_strdup(L, v[j].key);
        (*kv)[j].value = model_strdup(L, v[j].value);
    }
    *count = total;
}

/* --- step fields ------------------------------------------------------------------ */

/* The keys of a step, and of defaults:. load_step reads a step's fields by these
 * indices; step_keys[] below spells them, in the same order. */
enum step_key {
    SK_NAME,
    SK_DEPENDS_ON,
    SK_TRIGGER_RULE,
    SK_WHEN,
    SK_IMAGE,
    SK_COMMAND,
    SK_ARGS,
    SK_ENV,
    SK_WORKDIR,
    SK_RESOURCES,
    SK_QUEUE,
    SK_NODE_SELECTOR,
    SK_TOLERATIONS,
    SK_RETRIES,
    SK_TIMEOUT,
    SK_PENDING_TIMEOUT,
    SK_FOR_EACH,
    SK_MAX_PARALLEL,
    SK_OUTPUTS,
    SK_INPUTS,
    SK_LABELS,
    SK_ANNOTATIONS,
    N_STEP_KEYS
};

static const char *const step_keys[N_STEP_KEYS] = {
    [SK_NAME] = "name",
    [SK_DEPENDS_ON] = "depends_on",
    [SK_TRIGGER_RULE] = "trigger_rule",
    [SK_WHEN] = "when",
    [SK_IMAGE] = "image",
    [SK_COMMAND] = "command",
    [SK_ARGS] = "args",
    [SK_ENV] = "env",
    [SK_WORKDIR] = "workdir",
    [SK_RESOURCES] = "resources",
    [SK_QUEUE] = "queue",
    [SK_NODE_SELECTOR] = "node_selector",
    [SK_TOLERATIONS] = "tolerations",
    [SK_RETRIES] = "retries",
    [SK_TIMEOUT] = "timeout",
    [SK_PENDING_TIMEOUT] = "pending_timeout",
    [SK_FOR_EACH] = "for_each",
    [SK_MAX_PARALLEL] = "max_parallel",
    [SK_OUTPUTS] = "outputs",
    [SK_INPUTS] = "inputs",
    [SK_LABELS] = "labels",
    [SK_ANNOTATIONS] = "annotations",
};

/* The value of each step key in one mapping (a step, or defaults:), or NULL. */
struct step_fields {
    const struct dsl_yaml_node *v[N_STEP_KEYS];
};

/* Reads the mapping n as a step's keys into *f. Returns false (after reporting)
 * if n is not a mapping. */
static bool step_fields_load(struct loader *L, const struct dsl_yaml_node *n, const char *what,
                             struct step_fields *f)
{
    struct entry *e;
    long ne = map_entries(L, n, what, step_keys, N_STEP_KEYS, &e);
    memset(f, 0, sizeof(*f));
    for (long i = 0; i < ne; i++)
        f->v[e[i].field] = e[i].value;
    return ne >= 0;
}

static bool is_env_name(const char *s)
{
    if (!*s || (*s >= '0' && *s <= '9'))
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

static bool is_identifier(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return false;
    for (s++; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

/* A step's env: the defaults' (layers[0]) merged with the step's own (layers[1]),
 * as load_kv does. The positions of the values go to m->env (scratch). */
static void load_env(struct loader *L, const struct dsl_yaml_node *const layers[2],
                     struct dsl_step *s, struct dsl_step_marks *m)
{
    if (!layers[0] && !layers[1])
        return;
    size_t cap = merge_cap(layers);
    struct dsl_env *v = arena_calloc(L->tmp, cap, sizeof(*v));
    struct dsl_pos *pos = arena_calloc(L->P->scratch, cap, sizeof(*pos));
    size_t total = 0;
    bool any = false;
    for (int l = 0; l < 2; l++) {
        struct entry *e;
        long ne = layers[l] ? map_entries(L, layers[l], "env", NULL, 0, &e) : -1;
        if (ne < 0)
            continue;
        any = true;
        for (long i = 0; i < ne; i++) {
            struct dsl_env item = {.name = e[i].key};
            if (!is_env_name(e[i].key)) {
                lerr(L, e[i].key_node,
                     "env: invalid variable name '%s' (letters, digits, '_', '-' and '.', not "
                     "starting with a digit)",
                     e[i].key);
                continue;
            }
            if (e[i].value->kind == DSL_YAML_MAPPING) {
                static const char *const env_keys[] = {"from_secret"};
                static const char *const secret_keys[] = {"name", "key"};
                struct entry *f, *g;
                long nf = map_entries(L, e[i].value, "an env value", env_keys, 1, &f);
                const struct dsl_yaml_node *fs = nf > 0 ? lookup(f, nf, "from_secret") : NULL;
                if (!fs) {
                    /* an unknown key was reported already; an empty mapping was not */
                    if (nf == 0 && e[i].value->n == 0)
                        lerr(L, e[i].value,
                             "env '%s': a mapping value must be {from_secret: "
                             "{name, key}}",
                             e[i].key);
                    continue;
                }
                long ng = map_entries(L, fs, "from_secret", secret_keys, 2, &g);
                if (ng < 0)
                    continue;
                const struct dsl_yaml_node *sn = lookup(g, ng, "name"), *sk = lookup(g, ng, "key");
                if (!sn || !sk) {
                    lerr(L, fs, "env '%s': from_secret needs both 'name' and 'key'", e[i].key);
                    continue;
                }
                item.secret_name = get_text(L, sn, "from_secret.name");
                item.secret_key = get_text(L, sk, "from_secret.key");
                if (!item.secret_name || !item.secret_key)
                    continue;
                if (!is_dns_subdomain(item.secret_name, strlen(item.secret_name))) {
                    lerr(L, sn,
                         "from_secret.name: '%s' is not a valid secret name (DNS-1123 "
                         "subdomain)",
                         item.secret_name);
                    continue;
                }
            } else if (kind_of(e[i].value) == V_NULL) {
                item.value = "";
            } else {
                item.value = get_text(L, e[i].value, "env value");
                if (!item.value)
                    continue;
            }
            size_t j;
            for (j = 0; j < total; j++) {
                if (!strcmp(v[j].name, item.name))
                    break;
            }
            v[j] = item;
            pos[j] = value_pos(e[i].value);
            if (j == total)
                total++;
        }
    }
    if (!any)
        return;
    s->env = arena_calloc(L->P->mem, total + 1, sizeof(*s->env));
    for (size_t j = 0; j < total; j++) {
        s->env[j].name = model_strdup(L, v[j].name);
        s->env[j].value = v[j].value ? model_strdup(L, v[j].value) : NULL;
        s->env[j].secret_name = v[j].secret_name ? model_strdup(L, v[j].secret_name) : NULL;
        s->env[j].secret_key = v[j].secret_key ? model_strdup(L, v[j].secret_key) : NULL;
    }
    s->n_env = total;
    m->env = pos;
}

static void load_resources(struct loader *L, const struct dsl_yaml_node *n, struct dsl_resources *r)
{
    static const char *const keys[] = {"cpu", "memory", "gpu"};
    struct entry *e;
    long ne = map_entries(L, n, "resources", keys, 3, &e);
    for (long i = 0; i < ne; i++) {
        const struct dsl_yaml_node *v = e[i].value;
        if (!strcmp(e[i].key, "gpu")) {
            get_int(L, v, "resources.gpu", 0, 1024, &r->gpu);
            continue;
        }
        bool cpu = !strcmp(e[i].key, "cpu");
        enum vkind k = kind_of(v);
        if (k != V_STRING && k != V_INT && k != V_FLOAT) {
            lerr(L, v, "resources.%s must be a quantity such as '%s', not %s", e[i].key,
                 cpu ? "500m" : "2Gi", vkind_names[k]);
            continue;
        }
        int64_t milli;
        int rc = dsl_quantity_parse(&milli, scalar(v));
        if (rc < 0) {
            lerr(L, v, "resources.%s: %s quantity '%s' (e.g. %s)", e[i].key,
                 rc == SL_ERANGE ? "out-of-range" : "invalid", scalar(v),
                 cpu ? "'500m', '2'" : "'512Mi', '2Gi'");
            continue;
        }
        if (milli == 0) {
            lerr(L, v, "resources.%s must be greater than zero", e[i].key);
            continue;
        }
        if (cpu) {
            r->cpu = model_strdup(L, scalar(v));
            r->cpu_millis = milli;
        } else {
            r->memory = model_strdup(L, scalar(v));
            r->memory_bytes = milli / 1000 + (milli % 1000 != 0);
        }
    }
}

static void load_tolerations(struct loader *L, const struct dsl_yaml_node *n, struct dsl_step *s)
{
    static const char *const keys[] = {"key", "operator", "value", "effect", "toleration_seconds"};
    static const char *const ops[] = {"Equal", "Exists"};
    static const char *const effects[] = {"NoSchedule", "PreferNoSchedule", "NoExecute"};
    if (n->kind != DSL_YAML_SEQUENCE) {
        lerr(L, n, "tolerations must be a list, not %s", vkind_names[kind_of(n)]);
        return;
    }
    s->tolerations = arena_calloc(L->P->mem, n->n ? n->n : 1, sizeof(*s->tolerations));
    s->n_tolerations = 0;
    for (size_t i = 0; i < n->n; i++) {
        const struct dsl_yaml_node *c = visit(L, n->u.items[i]);
        if (!c)
            break;
        struct entry *e;
        long ne = map_entries(L, c, "a toleration", keys, 5, &e);
        if (ne < 0)
            continue;
        struct dsl_toleration t = {.op = "Equal", .seconds = -1};
        bool ok = true;
        int idx;
        const struct dsl_yaml_node *v;
        if ((v = lookup(e, ne, "key")))
            ok &= (t.key = get_string(L, v, "toleration key")) != NULL;
        if ((v = lookup(e, ne, "operator"))) {
            ok &= get_enum(L, v, "toleration operator", ops, 2, &idx);
            if (ok)
                t.op = ops[idx];
        }
        if ((v = lookup(e, ne, "value")))
            ok &= (t.value = get_string(L, v, "toleration value")) != NULL;
        if ((v = lookup(e, ne, "effect"))) {
            bool eok = get_enum(L, v, "toleration effect", effects, 3, &idx);
            if (eok)
                t.effect = effects[idx];
            ok &= eok;
        }
        if ((v = lookup(e, ne, "toleration_seconds")))
            ok &= get_int(L, v, "toleration_seconds", 0, INT64_MAX / 1000, &t.seconds);
        if (!ok)
            continue;
        if (!strcmp(t.op, "Exists") && t.value) {
            lerr(L, c, "a toleration with operator Exists cannot have a value");
            continue;
        }
        if (!t.key && strcmp(t.op, "Exists")) {
            lerr(L, c, "a toleration without a key must use operator Exists");
            continue;
        }
        if (t.seconds >= 0 && (!t.effect || strcmp(t.effect, "NoExecute"))) {
            lerr(L, c, "toleration_seconds only applies to effect NoExecute");
            continue;
        }
        s->tolerations[s->n_tolerations++] = t;
    }
}

static void load_retries(struct loader *L, const struct dsl_yaml_node *n, struct dsl_retry *r)
{
    static const char *const keys[] = {"limit", "policy", "backoff"};
    static const char *const backoff_keys[] = {"initial", "factor", "max"};
    if (kind_of(n) == V_INT) {
        get_int(L, n, "retries", 0, 1000, &r->limit);
        return;
    }
    struct entry *e;
    long ne = map_entries(L, n, "retries", keys, 3, &e);
    if (ne < 0) {
        return;
    }
    const struct dsl_yaml_node *v;
    int idx;
    if ((v = lookup(e, ne, "limit")))
        get_int(L, v, "retries.limit", 0, 1000, &r->limit);
    if ((v = lookup(e, ne, "policy")) &&
        get_enum(L, v, "retries.policy", dsl_retry_names, DSL_N_RETRY_POLICIES, &idx))
        r->policy = (enum dsl_retry_policy)idx;
    if ((v = lookup(e, ne, "backoff"))) {
        struct entry *b;
        long nb = map_entries(L, v, "retries.backoff", backoff_keys, 3, &b);
        const struct dsl_yaml_node *w;
        if ((w = lookup(b, nb, "initial")))
            get_duration(L, w, "retries.backoff.initial", &r->backoff_initial_ms);
        if ((w = lookup(b, nb, "max")))
            get_duration(L, w, "retries.backoff.max", &r->backoff_max_ms);
        if ((w = lookup(b, nb, "factor"))) {
            double f;
            if (get_number(L, w, "retries.backoff.factor", &f)) {
                if (f < 1 || f > 100)
                    lerr(L, w, "retries.backoff.factor must be between 1 and 100, got %g", f);
                else
                    r->backoff_factor = f;
            }
        }
    }
}

static void load_outputs(struct loader *L, const struct dsl_yaml_node *n, struct dsl_step *s)
{
    static const char *const keys[] = {"params", "artifacts"};
    struct entry *e;
    long ne = map_entries(L, n, "outputs", keys, 2, &e);
    for (long i = 0; i < ne; i++) {
        bool params = !strcmp(e[i].key, "params");
        const char *what = params ? "outputs.params" : "outputs.artifacts";
        struct entry *o;
        long no = map_entries(L, e[i].value, what, NULL, 0, &o);
        if (no < 0)
            continue;
        struct dsl_output *v = arena_calloc(L->P->mem, (size_t)no + 1, sizeof(*v));
        size_t count = 0;
        for (long j = 0; j < no; j++) {
            if (!is_identifier(o[j].key)) {
                lerr(L, o[j].key_node,
                     "%s: invalid name '%s' (letters, digits and '_', not starting with a "
                     "digit)",
                     what, o[j].key);
                continue;
            }
            const char *path = get_string(L, o[j].value, what);
            if (!path)
                continue;
            if (!*path) {
                lerr(L, o[j].value, "%s: '%s' needs a path", what, o[j].key);
                continue;
            }
            v[count].name = model_strdup(L, o[j].key);
            v[count].path = path;
            count++;
        }
        if (params) {
            s->output_params = v;
            s->n_output_params = count;
        } else {
            s->output_artifacts = v;
            s->n_output_artifacts = count;
        }
    }
}

static void load_inputs(struct loader *L, const struct dsl_yaml_node *n, struct dsl_step *s,
                        struct dsl_step_marks *m)
{
    static const char *const keys[] = {"artifacts"};
    static const char *const art_keys[] = {"from", "path"};
    struct entry *e;
    long ne = map_entries(L, n, "inputs", keys, 1, &e);
    const struct dsl_yaml_node *arts = ne > 0 ? lookup(e, ne, "artifacts") : NULL;
    if (!arts)
        return;
    struct entry *a;
    long na = map_entries(L, arts, "inputs.artifacts", NULL, 0, &a);
    if (na < 0)
        return;
    s->input_artifacts = arena_calloc(L->P->mem, (size_t)na + 1, sizeof(*s->input_artifacts));
    m->inputs = arena_calloc(L->P->scratch, (size_t)na + 1, sizeof(*m->inputs));
    for (long i = 0; i < na; i++) {
        struct dsl_input_artifact in = {.name = a[i].key};
        const struct dsl_yaml_node *from = a[i].value;
        if (!is_identifier(a[i].key)) {
            lerr(L, a[i].key_node,
                 "inputs.artifacts: invalid name '%s' (letters, digits and '_', not starting "
                 "with a digit)",
                 a[i].key);
            continue;
        }
        if (a[i].value->kind == DSL_YAML_MAPPING) {
            struct entry *f;
            long nf = map_entries(L, a[i].value, "an input artifact", art_keys, 2, &f);
            if (nf < 0)
                continue;
            from = lookup(f, nf, "from");
            const struct dsl_yaml_node *p = lookup(f, nf, "path");
            if (!from) {
                lerr(L, a[i].value, "input artifact '%s' needs 'from'", a[i].key);
                continue;
            }
            if (p && !(in.path = get_string(L, p, "inputs.artifacts path")))
                continue;
        }
        if (!(in.from = get_string(L, from, "inputs.artifacts from")))
            continue;
        in.name = model_strdup(L, in.name);
        if (!in.path)
            in.path = arena_sprintf(L->P->mem, "inputs/%s", in.name);
        m->inputs[s->n_input_artifacts] = value_pos(from);
        s->input_artifacts[s->n_input_artifacts++] = in;
    }
}

static void load_for_each(struct loader *L, const struct dsl_yaml_node *n, struct dsl_step *s)
{
    enum vkind k = kind_of(n);
    if (k == V_LIST) {
        if (n->n == 0) {
            lerr(L, n, "for_each: the list is empty, so the step would never run");
            return;
        }
        struct strbuf sb = STRBUF_INIT;
        if (node_to_json(L, &sb, n, 0))
            s->for_each_json = model_strdup(L, sb.buf);
        strbuf_release(&sb);
        return;
    }
    if (k == V_STRING) {
        s->for_each_expr = model_strdup(L, scalar(n));
        return;
    }
    lerr(L, n, "for_each must be a list or a \"{{ expression }}\" yielding a list, not %s",
         vkind_names[k]);
}

/* A step's fields: its own (own) and those of defaults: (def). */
struct step_layers {
    const struct step_fields *own;
    const struct step_fields *def;
};

/* The value for key: the step's own, else the default's. */
static const struct dsl_yaml_node *pick(const struct step_layers *f, enum step_key key)
{
    return f->own->v[key] ? f->own->v[key] : f->def->v[key];
}

/* Both values for a field whose mappings are merged, the default's first. */
static void layers_of(const struct step_layers *f, enum step_key key,
                      const struct dsl_yaml_node *layers[2])
{
    layers[0] = f->def->v[key];
    layers[1] = f->own->v[key];
}

static void load_step(struct loader *L, const struct dsl_yaml_node *n,
                      const struct step_fields *def, struct dsl_step *s, struct dsl_step_marks *m,
                      bool on_exit)
{
    struct step_fields own;
    const struct step_layers f = {.own = &own, .def = def};
    bool is_map = step_fields_load(L, n, "a step", &own);
    const struct dsl_yaml_node *v, *layers[2];
    int idx;

    memset(s, 0, sizeof(*s));
    s->pos = node_pos(n);
    s->on_exit = on_exit;
    s->queue = "default";
    s->retries.backoff_initial_ms = 10000;
    s->retries.backoff_factor = 2;
    s->retries.backoff_max_ms = 600000;
    if (!is_map)
        return;

    if ((v = own.v[SK_NAME])) {
        s->name = get_string(L, v, "step name");
        if (s->name && !dsl_is_dns_label(s->name)) {
            lerr(L, v,
                 "invalid step name '%s': use at most 63 lower-case letters, digits and '-', "
                 "starting and ending with a letter or digit",
                 s->name);
            s->name = NULL;
        }
    } else {
        lerr(L, n, "a step needs a 'name'");
    }
    if ((v = own.v[SK_DEPENDS_ON]))
        s->depends_on = get_string_list(L, v, "depends_on", true, &s->n_depends_on, &m->depends_on);

    if ((v = pick(&f, SK_TRIGGER_RULE)) &&
        get_enum(L, v, "trigger_rule", dsl_trigger_names, DSL_N_TRIGGER_RULES, &idx))
        s->trigger_rule = (enum dsl_trigger_rule)idx;
    if ((v = pick(&f, SK_WHEN))) {
        s->when = get_string(L, v, "when");
        m->when = value_pos(v);
    }
    if ((v = pick(&f, SK_IMAGE))) {
        s->image = get_string(L, v, "image");
        m->image = value_pos(v);
        if (s->image && !*s->image) {
            lerr(L, v, "image must not be empty");
            s->image = NULL;
        }
    }
    if ((v = pick(&f, SK_COMMAND))) {
        if (v->kind == DSL_YAML_SCALAR && kind_of(v) == V_STRING)
            lerr(L, v,
                 "command must be a list of arguments (argv), not a shell string; to use a "
                 "shell write [\"sh\", \"-c\", \"...\"]");
        else
            s->command = get_string_list(L, v, "command", false, &s->n_command, &m->command);
    }
    if ((v = pick(&f, SK_ARGS))) {
        if (v->kind == DSL_YAML_SCALAR && kind_of(v) == V_STRING)
            lerr(L, v, "args must be a list of arguments, not a string");
        else
            s->args = get_string_list(L, v, "args", false, &s->n_args, &m->args);
    }
    layers_of(&f, SK_ENV, layers);
    load_env(L, layers, s, m);
    if ((v = pick(&f, SK_WORKDIR))) {
        s->workdir = get_string(L, v, "workdir");
        m->workdir = value_pos(v);
    }
    if ((v = def->v[SK_RESOURCES]))
        load_resources(L, v, &s->resources);
    if ((v = own.v[SK_RESOURCES]))
        load_resources(L, v, &s->resources);
    if ((v = pick(&f, SK_QUEUE))) {
        const char *q = get_string(L, v, "queue");
        if (q && !dsl_is_dns_label(q))
            lerr(L, v,
                 "invalid queue name '%s': use lower-case letters, digits and '-', at most 63", q);
        else if (q)
            s->queue = q;
    }
    layers_of(&f, SK_NODE_SELECTOR, layers);
    load_kv(L, layers, "node_selector", true, &s->node_selector, &s->n_node_selector);
    if ((v = pick(&f, SK_TOLERATIONS)))
        load_tolerations(L, v, s);
    if ((v = def->v[SK_RETRIES]))
        load_retries(L, v, &s->retries);
    if ((v = own.v[SK_RETRIES]))
        load_retries(L, v, &s->retries);
    if (s->retries.backoff_max_ms < s->retries.backoff_initial_ms) {
        v = pick(&f, SK_RETRIES);
        lerr(L, v ? v : n, "retries.backoff.max must not be less than retries.backoff.initial");
    }
    if ((v = pick(&f, SK_TIMEOUT)))
        get_duration(L, v, "timeout", &s->timeout_ms);
    if ((v = pick(&f, SK_PENDING_TIMEOUT)))
        get_duration(L, v, "pending_timeout", &s->pending_timeout_ms);
    if ((v = pick(&f, SK_FOR_EACH))) {
        load_for_each(L, v, s);
        m->for_each = value_pos(v);
    }
    if ((v = pick(&f, SK_MAX_PARALLEL))) {
        get_int(L, v, "max_parallel", 1, 100000, &s->max_parallel);
        if (!pick(&f, SK_FOR_EACH))
            lerr(L, v, "max_parallel only applies to a step with for_each");
    }
    if ((v = pick(&f, SK_OUTPUTS)))
        load_outputs(L, v, s);
    if ((v = pick(&f, SK_INPUTS)))
        load_inputs(L, v, s, m);
    layers_of(&f, SK_LABELS, layers);
    load_kv(L, layers, "labels", true, &s->labels, &s->n_labels);
    layers_of(&f, SK_ANNOTATIONS, layers);
    load_kv(L, layers, "annotations", false, &s->annotations, &s->n_annotations);

    if (!s->image && s->n_command == 0)
        lerr(L, n, "step '%s' needs a 'command' or an 'image'", s->name ? s->name : "?");
}

static void load_steps(struct loader *L, const struct dsl_yaml_node *n,
                       const struct step_fields *def, bool on_exit)
{
    const char *what = on_exit ? "on_exit" : "steps";
    if (n->kind != DSL_YAML_SEQUENCE) {
        lerr(L, n, "%s must be a list of steps, not %s", what, vkind_names[kind_of(n)]);
        return;
    }
    size_t cap = n->n;
    if (cap == 0 && !on_exit) {
        lerr(L, n, "steps is empty: a DAG needs at least one step");
        return;
    }
    struct dsl_step *steps = arena_calloc(L->P->mem, cap ? cap : 1, sizeof(*steps));
    struct dsl_step_marks *marks = arena_calloc(L->P->scratch, cap ? cap : 1, sizeof(*marks));
    struct arena step_mem = ARENA_INIT, *outer = L->tmp;
    size_t count = 0;
    L->tmp = &step_mem;
    for (size_t i = 0; i < n->n; i++) {
        const struct dsl_yaml_node *c = visit(L, n->u.items[i]);
        if (!c)
            break;
        load_step(L, c, def, &steps[count], &marks[count], on_exit);
        arena_release(&step_mem);
        if (steps[count].name)
            count++;
    }
    L->tmp = outer;
    if (on_exit) {
        L->P->dag->on_exit = steps;
        L->P->dag->n_on_exit = count;
        L->P->exit_marks = marks;
    } else {
        L->P->dag->steps = steps;
        L->P->dag->n_steps = count;
        L->P->marks = marks;
    }
}

/* --- DAG fields ------------------------------------------------------------------- */

static void load_params(struct loader *L, const struct dsl_yaml_node *n)
{
    static const char *const keys[] = {"type", "default", "enum", "required", "description"};
    struct dsl_dag *dag = L->P->dag;
    struct entry *e;
    long ne = map_entries(L, n, "params", NULL, 0, &e);
    if (ne <= 0)
        return;
    dag->params = arena_calloc(L->P->mem, (size_t)ne, sizeof(*dag->params));
    for (long i = 0; i < ne; i++) {
        struct dsl_param p = {.name = NULL};
        if (!is_identifier(e[i].key)) {
            lerr(L, e[i].key_node,
                 "invalid parameter name '%s' (letters, digits and '_', not starting with a "
                 "digit)",
                 e[i].key);
            continue;
        }
        p.name = model_strdup(L, e[i].key);
        struct entry *f;
        char what[128];
        snprintf(what, sizeof(what), "parameter '%s'", e[i].key);
        long nf = map_entries(L, e[i].value, what, keys, 5, &f);
        if (nf < 0) {
            dag->params[dag->n_params++] = p;
            continue;
        }
        bool ok = true;
        int idx;
        const struct dsl_yaml_node *v;
        if ((v = lookup(f, nf, "type"))) {
            ok = get_enum(L, v, "type", dsl_type_names, DSL_N_PARAM_TYPES, &idx);
            if (ok)
                p.type = (enum dsl_param_type)idx;
        }
        if ((v = lookup(f, nf, "description")))
            ok &= (p.description = get_string(L, v, "description")) != NULL;
        if ((v = lookup(f, nf, "required")))
            ok &= get_bool(L, v, "required", &p.required);
        if ((v = lookup(f, nf, "enum"))) {
            struct strbuf sb = STRBUF_INIT;
            if (v->kind != DSL_YAML_SEQUENCE || v->n == 0) {
                lerr(L, v, "parameter '%s': enum must be a non-empty list", p.name);
                ok = false;
            } else if (node_to_json(L, &sb, v, 0)) {
                p.enum_json = model_strdup(L, sb.buf);
            } else {
                ok = false;
            }
            strbuf_release(&sb);
        }
        const struct dsl_yaml_node *dv = lookup(f, nf, "default");
        if (dv) {
            struct strbuf sb = STRBUF_INIT;
            if (node_to_json(L, &sb, dv, 0))
                p.default_json = model_strdup(L, sb.buf);
            else
                ok = false;
            strbuf_release(&sb);
        }
        if (ok && p.required && p.default_json) {
            lerr(L, e[i].value, "parameter '%s' has a default, so it cannot be required", p.name);
            ok = false;
        }
        char err[160];
        if (p.enum_json) {
            cJSON *en = cJSON_Parse(p.enum_json);
            struct dsl_param bare = p;
            bare.enum_json = NULL;
            cJSON *item;
            cJSON_ArrayForEach(item, en)
            {
                if (dsl_param_check(&bare, item, err, sizeof(err)) < 0) {
                    lerr(L, v, "parameter '%s': enum value %s", p.name, err);
                    ok = false;
                    break;
                }
            }
            cJSON_Delete(en);
        }
        if (ok && p.default_json) {
            cJSON *d = cJSON_Parse(p.default_json);
            if (dsl_param_check(&p, d, err, sizeof(err)) < 0) {
                lerr(L, dv, "parameter '%s': default %s", p.name, err);
                ok = false;
            }
            cJSON_Delete(d);
        }
        /* Kept even when invalid: it is declared, and references to it must not
         * report a second, misleading error. The model is discarded anyway. */
        (void)ok;
        dag->params[dag->n_params++] = p;
    }
}

static void load_notify(struct loader *L, const struct dsl_yaml_node *n)
{
    static const char *const keys[] = {"on_success", "on_failure"};
    struct dsl_dag *dag = L->P->dag;
    struct entry *e;
    long ne = map_entries(L, n, "notify", keys, 2, &e);
    for (long i = 0; i < ne; i++) {
        bool success = !strcmp(e[i].key, "on_success");
        struct dsl_pos *pos = NULL;
        size_t count = 0;
        const char **urls = get_string_list(L, e[i].value, e[i].key, true, &count, &pos);
        size_t kept = 0;
        for (size_t j = 0; j < count; j++) {
            if (strncmp(urls[j], "http://", 7) && strncmp(urls[j], "https://", 8)) {
                dsl_parse_error(L->P, pos[j], "notify.%s: '%s' is not an http:// or https:// URL",
                                e[i].key, urls[j]);
                continue;
            }
            urls[kept++] = urls[j];
        }
        if (success) {
            dag->notify_on_success = urls;
            dag->n_notify_on_success = kept;
        } else {
            dag->notify_on_failure = urls;
            dag->n_notify_on_failure = kept;
        }
    }
}

static const char *const dag_keys[] = {
    "name",     "description", "tags",    "schedule",        "timezone",           "start_date",
    "end_date", "catchup",     "overlap", "max_active_runs", "max_parallel_steps", "params",
    "defaults", "steps",       "on_exit", "notify",
};
#define N_DAG_KEYS (sizeof(dag_keys) / sizeof(dag_keys[0]))

static void load_time(struct loader *L, const struct dsl_yaml_node *v, const char *what,
                      const struct sl_tz *tz, const char **out, int64_t *out_unix)
{
    const char *s = get_string(L, v, what);
    if (!s)
        return;
    if (sl_time_parse(out_unix, s, tz) < 0) {
        lerr(L, v,
             "%s: invalid time '%s' (use YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS, or with Z or an "
             "offset such as +02:00)",
             what, s);
        return;
    }
    char buf[32];
    sl_time_format_utc(buf, *out_unix);
    *out = model_strdup(L, buf);
}

static void load_dag(struct loader *L, const struct dsl_yaml_node *root)
{
    struct dsl_dag *dag = L->P->dag;
    struct entry *e;
    long ne = map_entries(L, root, "the DAG", dag_keys, N_DAG_KEYS, &e);
    struct step_fields def = {{NULL}};
    const struct dsl_yaml_node *v;
    int idx;
    struct sl_tz *tz = NULL;

    if (ne < 0)
        return;
    dag->timezone = "UTC";
    dag->max_active_runs = 1;

    if ((v = lookup(e, ne, "name"))) {
        dag->name = get_string(L, v, "name");
        if (dag->name && !dsl_is_dns_label(dag->name)) {
            lerr(L, v,
                 "invalid DAG name '%s': use at most 63 lower-case letters, digits and '-', "
                 "starting and ending with a letter or digit",
                 dag->name);
            dag->name = NULL;
        }
    } else {
        lerr(L, root, "the DAG needs a 'name'");
    }
    if ((v = lookup(e, ne, "description")))
        dag->description = get_string(L, v, "description");
    if ((v = lookup(e, ne, "tags")))
        dag->tags = get_string_list(L, v, "tags", false, &dag->n_tags, NULL);
    if ((v = lookup(e, ne, "timezone"))) {
        const char *name = get_string(L, v, "timezone");
        L->P->timezone_pos = node_pos(v);
        if (name) {
            int rc = sl_tz_load(&tz, name);
            if (rc < 0)
                lerr(L, v, "unknown time zone '%s' (use an IANA name such as 'Europe/Paris')",
                     name);
            else
                dag->timezone = name;
        }
    }
    if ((v = lookup(e, ne, "schedule"))) {
        const char *spec = get_string(L, v, "schedule");
        L->P->schedule_pos = node_pos(v);
        if (spec) {
            struct dsl_cron *cron = NULL;
            char err[160];
            if (dsl_cron_parse(&cron, spec, err, sizeof(err)) < 0)
                lerr(L, v, "invalid schedule '%s': %s", spec, err);
            else
                dag->schedule = spec;
            dsl_cron_free(cron);
        }
    }
    if ((v = lookup(e, ne, "start_date"))) {
        L->P->start_pos = node_pos(v);
        load_time(L, v, "start_date", tz, &dag->start_date, &dag->start_unix);
    }
    if ((v = lookup(e, ne, "end_date"))) {
        L->P->end_pos = node_pos(v);
        load_time(L, v, "end_date", tz, &dag->end_date, &dag->end_unix);
        if (dag->start_date && dag->end_date && dag->end_unix <= dag->start_unix)
            lerr(L, v, "end_date %s is not after start_date %s", dag->end_date, dag->start_date);
    }
    if ((v = lookup(e, ne, "catchup"))) {
        if (kind_of(v) == V_BOOL)
            lerr(L, v,
                 "catchup must be one of none, latest, all (for Airflow's catchup=False write "
                 "'none', for catchup=True write 'all')");
        else if (get_enum(L, v, "catchup", dsl_catchup_names, DSL_N_CATCHUP, &idx))
            dag->catchup = (enum dsl_catchup)idx;
    }
    if ((v = lookup(e, ne, "overlap")) &&
        get_enum(L, v, "overlap", dsl_overlap_names, DSL_N_OVERLAP, &idx))
        dag->overlap = (enum dsl_overlap)idx;
    if ((v = lookup(e, ne, "max_active_runs")))
        get_int(L, v, "max_active_runs", 1, 10000, &dag->max_active_runs);
    if ((v = lookup(e, ne, "max_parallel_steps")))
        get_int(L, v, "max_parallel_steps", 1, 100000, &dag->max_parallel_steps);
    if ((v = lookup(e, ne, "params")))
        load_params(L, v);
    if ((v = lookup(e, ne, "notify")))
        load_notify(L, v);
    if ((v = lookup(e, ne, "defaults"))) {
        struct entry *de;
        long nd = map_entries(L, v, "defaults", step_keys, N_STEP_KEYS, &de);
        for (long i = 0; i < nd; i++) {
            if (de[i].field == SK_NAME || de[i].field == SK_DEPENDS_ON) {
                lerr(L, de[i].key_node, "'%s' cannot have a default: set it on each step",
                     de[i].key);
                continue;
            }
            def.v[de[i].field] = de[i].value;
        }
    }
    if ((v = lookup(e, ne, "steps")))
        load_steps(L, v, &def, false);
    else
        lerr(L, root, "the DAG needs 'steps'");
    if ((v = lookup(e, ne, "on_exit")))
        load_steps(L, v, &def, true);
    sl_tz_free(tz);
}

/* --- entry points ------------------------------------------------------------------ */

void dsl_parse_error(struct dsl_parse *P, struct dsl_pos pos, const char *fmt, ...)
{
    struct strbuf sb = STRBUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    strbuf_vaddf(&sb, fmt, ap);
    va_end(ap);
    P->errors++;
    /* A bad value under defaults: is loaded once per step; say it once. */
    for (size_t i = P->first_diag; i < P->diags->n; i++) {
        const struct dsl_diag *d = &P->diags->items[i];
        if (d->line == pos.line && d->col == pos.col && !strcmp(d->msg, sb.buf)) {
            strbuf_release(&sb);
            return;
        }
    }
    dsl_diags_add(P->diags, P->file, pos.line, pos.col, "%s", sb.buf);
    strbuf_release(&sb);
}

static int cmp_diag(const void *a, const void *b)
{
    const struct dsl_diag *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return 0;
}

int dsl_parse_buffer(struct dsl_dag **out, const char *file, const char *buf, size_t len,
                     const struct dsl_options *opts, struct dsl_diags *diags)
{
    size_t max_bytes = opts && opts->max_bytes ? opts->max_bytes : DSL_DEFAULT_MAX_BYTES;
    size_t first_diag = diags->n;
    int result = 0;
    struct arena scratch = ARENA_INIT;
    const struct dsl_yaml_node *root = NULL;
    struct dsl_dag *dag = xcalloc(1, sizeof(*dag));
    struct dsl_parse P = {.file = file ? file : "<input>",
                          .diags = diags,
                          .dag = dag,
                          .first_diag = diags->n,
                          .scratch = &scratch};

    arena_init(&dag->mem);
    P.mem = &dag->mem;
    dag->file = arena_strdup(&dag->mem, P.file);

    if (len > max_bytes) {
        dsl_diags_add(diags, P.file, 0, 0, "file is %zu bytes, over the limit of %zu bytes", len,
                      max_bytes);
        result = SL_ETOOBIG;
        goto cleanup;
    }
    if (memchr(buf, '\0', len)) {
        dsl_diags_add(diags, P.file, 0, 0, "file contains a NUL byte: not a text file");
        result = SL_EPARSE;
        goto cleanup;
    }

    result = dsl_yaml_parse(&root, &scratch, buf, len, P.file, diags);
    if (result < 0)
        goto cleanup;
    if (!root) {
        dsl_diags_add(diags, P.file, 0, 0, "file is empty: expected a DAG");
        result = SL_EINVALID;
        goto cleanup;
    }

    struct loader L = {.P = &P, .strings = {.mem = &dag->mem}, .tmp = &scratch};
    load_dag(&L, root);
    /* Validation runs on a partly loaded model too, so that one pass reports
     * every problem; fields that failed to load are simply absent. */
    if (!L.too_big)
        dsl_validate(&P);
    if (P.errors > 0 || L.too_big)
        result = SL_EINVALID;

cleanup:
    arena_release(&scratch);
    if (diags->n > first_diag)
        qsort(diags->items + first_diag, diags->n - first_diag, sizeof(*diags->items), cmp_diag);
    if (result < 0) {
        dsl_dag_free(dag);
        return result;
    }
    *out = dag;
    return 0;
}

int dsl_parse_file(struct dsl_dag **out, const char *path, const struct dsl_options *opts,
                   struct dsl_diags *diags)
{
    size_t max_bytes = opts && opts->max_bytes ? opts->max_bytes : DSL_DEFAULT_MAX_BYTES;
    struct strbuf sb = STRBUF_INIT;
    int rc = strbuf_read_file(&sb, path, max_bytes);
    if (rc < 0) {
        if (rc == SL_ETOOBIG)
            dsl_diags_add(diags, path, 0, 0, "file is over the limit of %zu bytes", max_bytes);
        else if (rc == SL_ENOENT)
            dsl_diags_add(diags, path, 0, 0, "no such file");
        else if (rc == SL_EINVAL)
            dsl_diags_add(diags, path, 0, 0, "is a directory, not a DAG file");
        else
            dsl_diags_add(diags, path, 0, 0, "cannot read file");
        strbuf_release(&sb);
        return rc;
    }
    rc = dsl_parse_buffer(out, path, sb.buf, sb.len, opts, diags);
    strbuf_release(&sb);
    return rc;
}

void dsl_dag_free(struct dsl_dag *dag)
{
    if (!dag)
        return;
    arena_release(&dag->mem);
    free(dag);
}

const struct dsl_step *dsl_dag_find_step(const struct dsl_dag *dag, const char *name)
{
    for (size_t i = 0; i < dag->n_steps; i++) {
        if (!strcmp(dag->steps[i].name, name))
            return &dag->steps[i];
    }
    for (size_t i = 0; i < dag->n_on_exit; i++) {
        if (!strcmp(dag->on_exit[i].name, name))
            return &dag->on_exit[i];
    }
    return NULL;
}
