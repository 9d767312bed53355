/*
 * dsl/expr.c - parser and evaluator of the expression and template language.
 *
 * Parsing is a hand-written recursive descent over a lazy lexer that keeps one
 * current token and at most one token of lookahead (needed only for `not in`).
 * Lexing on demand means the first error in source order is the one reported.
 * The grammar, lowest precedence first:
 *
 *   or      := and ('or' and)*
 *   and     := not ('and' not)*
 *   not     := 'not' not | cmp
 *   cmp     := primary (cmp_op primary)?        a second cmp_op is an error
 *   cmp_op  := '==' | '!=' | '<' | '<=' | '>' | '>=' | 'in' | 'not' 'in'
 *   primary := NUMBER | STRING | 'true' | 'false' | 'null' | REFERENCE
 *            | '(' or ')' | '[' (or (',' or)*)? ']'
 *
 * A reference is one token: name ('.' name)* with no blanks around the dots,
 * names being [A-Za-z_][A-Za-z0-9_-]*. Because '-' belongs to names there is no
 * binary minus; a '-' directly before a digit starts a negative number literal.
 *
 * The tree lives in the caller's arena. `and` and `or` chains are n-ary nodes,
 * not left-leaning binary trees, so the depth of the tree - and with it the
 * recursion of every walk over it - is bounded by DSL_EXPR_MAX_DEPTH, which
 * counts parentheses, list brackets and `not`. Source length is bounded too, so
 * no input can make the parser or the evaluator recurse or allocate without
 * limit.
 *
 * Evaluation works on cJSON values. A value read from the context is borrowed
 * (struct value.owned is NULL); a value built by the evaluator is owned and
 * freed as soon as it is consumed, so evaluating `k in steps` does not copy the
 * context. Recursion over context values (deep equality, JSON rendering) is
 * bounded by VALUE_MAX_DEPTH, since a context built in memory has no nesting
 * limit of its own.
 *
 * Templates are parsed by scanning literal text for "{{" and running the
 * expression parser in template mode, where "}}" is a token that ends the
 * expression. That way "}}" inside a string literal does not end a segment, and
 * the escape {{"{{"}} is just an expression; segments that are a lone string
 * literal are folded into the literal text at parse time.
 */
#include "dsl/expr.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deepest context value that equality and rendering will walk. */
#define VALUE_MAX_DEPTH 512
/* How much of a string value or reference an error message quotes. */
#define QUOTE_MAX 40
/* Room for a described token or value: QUOTE_MAX bytes, escaped, and a prefix. */
#define DESC_MAX 128

/* --- the tree ------------------------------------------------------------------ */

enum node_kind {
    N_NULL,
    N_BOOL,
    N_NUMBER,
    N_STRING,
    N_REF,
    N_LIST,
    N_NOT,
    N_AND,
    N_OR,
    N_CMP,
};

enum cmp_op {
    OP_EQ,
    OP_NE,
    OP_LT,
    OP_LE,
    OP_GT,
    OP_GE,
    OP_IN,
    OP_NOT_IN,
};

static const char *const cmp_op_names[] = {
    [OP_EQ] = "==", [OP_NE] = "!=", [OP_LT] = "<",  [OP_LE] = "<=",
    [OP_GT] = ">",  [OP_GE] = ">=", [OP_IN] = "in", [OP_NOT_IN] = "not in",
};

struct dsl_expr {
    enum node_kind kind;
    size_t offset;         /* of the node's first token in the source */
    bool boolean;          /* N_BOOL */
    double number;         /* N_NUMBER: finite */
    const char *string;    /* N_STRING: decoded text; N_REF: the reference's text */
    struct dsl_ref ref;    /* N_REF */
    enum cmp_op op;        /* N_CMP */
    struct dsl_expr *kids; /* N_LIST, N_NOT, N_AND, N_OR, N_CMP: first child */
    size_t n_kids;         /* children, linked through next */
    struct dsl_expr *next; /* next sibling */
};

struct template_seg {
    const char *text;            /* literal: the text; expression: its source, for messages */
    size_t len;                  /* bytes of text */
    const struct dsl_expr *expr; /* NULL for a literal segment */
};

struct dsl_template {
    const struct template_seg *segs;
    size_t n_segs; /* no two literal segments are adjacent; none is empty */
};

/* --- the lexer ----------------------------------------------------------------- */

enum tok_kind {
    T_EOF,
    T_CLOSE, /* "}}", in template mode only */
    T_NUMBER,
    T_STRING,
    T_REF,
    T_TRUE,
    T_FALSE,
    T_NULL,
    T_AND,
    T_OR,
    T_NOT,
    T_IN,
    T_EQ,
    T_NE,
    T_LT,
    T_LE,
    T_GT,
    T_GE,
    T_LPAREN,
    T_RPAREN,
    T_LBRACK,
    T_RBRACK,
    T_COMMA,
};

struct token {
    enum tok_kind kind;
    size_t offset;            /* in the source */
    size_t len;               /* bytes of source text */
    double number;            /* T_NUMBER */
    const char *string;       /* T_STRING: decoded, in the arena */
    const char *const *parts; /* T_REF: in the arena */
    size_t n_parts;           /* T_REF */
};

struct parser {
    struct arena *a;
    const char *src;
    size_t len;         /* bytes of src */
    size_t pos;         /* next byte to lex */
    bool template_mode; /* "}}" is T_CLOSE */
    int depth;          /* current nesting of (, [ and not */
    struct token cur;   /* the token being looked at */
    struct token next;  /* lookahead, valid if have_next */
    bool have_next;
    struct dsl_expr_error *err; /* may be NULL */
};

static const struct {
    const char *word;
    enum tok_kind kind;
} keywords[] = {
    {"and", T_AND},   {"or", T_OR},       {"not", T_NOT},   {"in", T_IN},
    {"true", T_TRUE}, {"false", T_FALSE}, {"null", T_NULL},
};

__attribute__((format(printf, 3, 4))) static void parse_msg(struct parser *p, size_t offset,
                                                            const char *fmt, ...)
{
    if (p->err) {
        va_list ap;
        va_start(ap, fmt);
        p->err->offset = offset;
        vsnprintf(p->err->msg, sizeof(p->err->msg), fmt, ap);
        va_end(ap);
    }
}

/* Records a parse error and evaluates to SL_EPARSE. A macro rather than a
 * variadic function so that static analyzers see the nonzero result. */
#define PARSE_FAIL(p, offset, ...) (parse_msg((p), (offset), __VA_ARGS__), SL_EPARSE)

static bool is_name_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_name_char(int c)
{
    return is_name_start(c) || is_digit(c) || c == '-';
}

static size_t scan_digits(const char *s, size_t i, size_t len)
{
    while (i < len && is_digit((unsigned char)s[i]))
        i++;
    return i;
}

/* NUMBER := '-'? digits ('.' digits)? ([eE] [+-]? digits)?, not followed by a
 * name character or a dot (so `1abc` and `1.2.3` are errors, not two tokens). */
static int lex_number(struct parser *p, struct token *t)
{
    const char *s = p->src;
    size_t i = p->pos;
    if (s[i] == '-')
        i++;
    i = scan_digits(s, i, p->len);
    if (i < p->len && s[i] == '.') {
        size_t frac = i + 1;
        i = scan_digits(s, frac, p->len);
        if (i == frac)
            return PARSE_FAIL(p, t->offset, "invalid number");
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t exp = i;
        i = scan_digits(s, exp, p->len);
        if (i == exp)
            return PARSE_FAIL(p, t->offset, "invalid number");
    }
    if (i < p->len && (is_name_char((unsigned char)s[i]) || s[i] == '.'))
        return PARSE_FAIL(p, t->offset, "invalid number");

    /* strtod() follows LC_NUMERIC; sluice never changes it from "C". */
    char *text = arena_strndup(p->a, s + p->pos, i - p->pos);
    double v = strtod(text, NULL);
    if (!isfinite(v))
        return PARSE_FAIL(p, t->offset, "number out of range");
    t->kind = T_NUMBER;
    t->number = v;
    p->pos = i;
    return 0;
}

static int lex_string(struct parser *p, struct token *t)
{
    const char *s = p->src;
    char quote = s[p->pos];
    size_t i = p->pos + 1;
    struct strbuf sb = STRBUF_INIT;
    int rc = 0;

    for (;;) {
        if (i >= p->len) {
            rc = PARSE_FAIL(p, t->offset, "unterminated string");
            goto cleanup;
        }
        char c = s[i];
        if (c == quote)
            break;
        if (c != '\\') {
            strbuf_addch(&sb, c);
            i++;
            continue;
        }
        if (i + 1 >= p->len) {
            rc = PARSE_FAIL(p, t->offset, "unterminated string");
            goto cleanup;
        }
        char e = s[i + 1];
        switch (e) {
        case '\\':
        case '\'':
        case '"':
            strbuf_addch(&sb, e);
            break;
        case 'n':
            strbuf_addch(&sb, '\n');
            break;
        case 't':
            strbuf_addch(&sb, '\t');
            break;
        default:
            if (e > 0x20 && e < 0x7f)
                rc = PARSE_FAIL(p, i, "invalid escape '\\%c' in string", e);
            else
                rc = PARSE_FAIL(p, i, "invalid escape in string");
            goto cleanup;
        }
        i += 2;
    }
    t->kind = T_STRING;
    t->string = arena_strndup(p->a, sb.buf, sb.len);
    p->pos = i + 1;
cleanup:
    strbuf_release(&sb);
    return rc;
}

/* A keyword, or a reference: name ('.' name)*. */
static int lex_word(struct parser *p, struct token *t)
{
    const char *s = p->src;
    size_t i = p->pos;
    while (i < p->len && is_name_char((unsigned char)s[i]))
        i++;
    size_t first_len = i - p->pos;

    for (size_t k = 0; k < sizeof(keywords) / sizeof(keywords[0]); k++) {
        if (strlen(keywords[k].word) == first_len &&
            !memcmp(keywords[k].word, s + p->pos, first_len)) {
            if (i < p->len && s[i] == '.')
                return PARSE_FAIL(p, t->offset, "keyword '%s' cannot start a reference",
                                  keywords[k].word);
            t->kind = keywords[k].kind;
            p->pos = i;
            return 0;
        }
    }

    /* First pass: find the end and count the names; second: copy them. */
    size_t n_parts = 1;
    while (i < p->len && s[i] == '.') {
        i++;
        if (i >= p->len || !is_name_start((unsigned char)s[i]))
            return PARSE_FAIL(p, i, "expected a name after '.'");
        while (i < p->len && is_name_char((unsigned char)s[i]))
            i++;
        n_parts++;
    }
    const char **parts = arena_calloc(p->a, n_parts, sizeof(*parts));
    size_t start = p->pos;
    for (size_t k = 0; k < n_parts; k++) {
        size_t end = start;
        while (end < i && s[end] != '.')
            end++;
        parts[k] = arena_strndup(p->a, s + start, end - start);
        start = end + 1;
    }
    t->kind = T_REF;
    t->parts = parts;
    t->n_parts = n_parts;
    p->pos = i;
    return 0;
}

static int lex(struct parser *p, struct token *t)
{
    const char *s = p->src;
    int rc = 0;

    while (p->pos < p->len &&
           (s[p->pos] == ' ' || s[p->pos] == '\t' || s[p->pos] == '\n' || s[p->pos] == '\r'))
        p->pos++;
    memset(t, 0, sizeof(*t));
    t->offset = p->pos;
    if (p->pos >= p->len) {
        t->kind = T_EOF;
        return 0;
    }

    unsigned char c = (unsigned char)s[p->pos];
    char c1 = p->pos + 1 < p->len ? s[p->pos + 1] : '\0';
    size_t width = 1;
    switch (c) {
    case '(':
        t->kind = T_LPAREN;
        break;
    case ')':
        t->kind = T_RPAREN;
        break;
    case '[':
        t->kind = T_LBRACK;
        break;
    case ']':
        t->kind = T_RBRACK;
        break;
    case ',':
        t->kind = T_COMMA;
        break;
    case '=':
        if (c1 != '=')
            return PARSE_FAIL(p, t->offset, "unexpected '=' (use '==' to compare)");
        t->kind = T_EQ;
        width = 2;
        break;
    case '!':
        if (c1 != '=')
            return PARSE_FAIL(p, t->offset, "unexpected '!' (use 'not' to negate)");
        t->kind = T_NE;
        width = 2;
        break;
    case '<':
        t->kind = c1 == '=' ? T_LE : T_LT;
        width = c1 == '=' ? 2 : 1;
        break;
    case '>':
        t->kind = c1 == '=' ? T_GE : T_GT;
        width = c1 == '=' ? 2 : 1;
        break;
    case '&':
        return PARSE_FAIL(p, t->offset, "unexpected '&' (use 'and')");
    case '|':
        return PARSE_FAIL(p, t->offset, "unexpected '|' (use 'or')");
    case '}':
        if (!p->template_mode || c1 != '}')
            return PARSE_FAIL(p, t->offset, "unexpected '}'");
        t->kind = T_CLOSE;
        width = 2;
        break;
    case '"':
    case '\'':
        rc = lex_string(p, t);
        goto done;
    case '-':
        if (!is_digit((unsigned char)c1))
            return PARSE_FAIL(p, t->offset,
                              "unexpected '-' (there is no minus operator; '-' is part of names)");
        rc = lex_number(p, t);
        goto done;
    default:
        if (is_digit(c)) {
            rc = lex_number(p, t);
            goto done;
        }
        if (is_name_start(c)) {
            rc = lex_word(p, t);
            goto done;
        }
        if (c > 0x20 && c < 0x7f)
            return PARSE_FAIL(p, t->offset, "unexpected character '%c'", c);
        return PARSE_FAIL(p, t->offset, "unexpected byte 0x%02x", c);
    }
    p->pos += width;
done:
    if (rc == 0)
        t->len = p->pos - t->offset;
    return rc;
}

static int advance(struct parser *p)
{
    if (p->have_next) {
        p->cur = p->next;
        p->have_next = false;
        return 0;
    }
    return lex(p, &p->cur);
}

static int peek(struct parser *p, const struct token **out)
{
    if (!p->have_next) {
        int rc = lex(p, &p->next);
        if (rc)
            return rc;
        p->have_next = true;
    }
    *out = &p->next;
    return 0;
}

/* Describes a token for "unexpected ..." messages. */
static const char *describe_token(const struct parser *p, const struct token *t, char *buf,
                                  size_t size)
{
    switch (t->kind) {
    case T_EOF:
        return "end of input";
    case T_NUMBER:
        return "number";
    case T_STRING:
        return "string";
    case T_REF:
        if (t->len > QUOTE_MAX)
            snprintf(buf, size, "reference '%.*s...'", QUOTE_MAX, p->src + t->offset);
        else
            snprintf(buf, size, "reference '%.*s'", (int)t->len, p->src + t->offset);
        return buf;
    default:
        snprintf(buf, size, "'%.*s'", (int)t->len, p->src + t->offset);
        return buf;
    }
}

/* --- the parser ---------------------------------------------------------------- */

static struct dsl_expr *new_node(struct parser *p, enum node_kind kind, size_t offset)
{
    struct dsl_expr *e = arena_alloc(p->a, sizeof(*e));
    e->kind = kind;
    e->offset = offset;
    return e;
}

static int enter(struct parser *p)
{
    if (++p->depth > DSL_EXPR_MAX_DEPTH)
        return PARSE_FAIL(p, p->cur.offset, "expression nested too deeply (limit %d)",
                          DSL_EXPR_MAX_DEPTH);
    return 0;
}

static bool at_end(const struct parser *p)
{
    return p->cur.kind == T_EOF || p->cur.kind == T_CLOSE;
}

static int parse_or(struct parser *p, const char *after, struct dsl_expr **out);

/* A parenthesized expression or the elements of a list; cur is '(' or '['. */
static int parse_group(struct parser *p, struct dsl_expr **out)
{
    struct token open = p->cur;
    bool is_list = open.kind == T_LBRACK;
    enum tok_kind close = is_list ? T_RBRACK : T_RPAREN;
    struct dsl_expr *list = NULL, *inner = NULL, **tail = NULL;
    char buf[DESC_MAX];
    int rc;

    if ((rc = enter(p)) || (rc = advance(p)))
        return rc;
    if (is_list) {
        list = new_node(p, N_LIST, open.offset);
        tail = &list->kids;
        if (p->cur.kind == T_RBRACK)
            goto closed;
    }
    for (;;) {
        const char *after = is_list && list->n_kids ? "," : is_list ? "[" : "(";
        if ((rc = parse_or(p, after, &inner)))
            return rc;
        if (!is_list)
            break;
        *tail = inner;
        tail = &inner->next;
        list->n_kids++;
        if (p->cur.kind != T_COMMA)
            break;
        if ((rc = advance(p)))
            return rc;
    }
    if (p->cur.kind != close) {
        if (at_end(p))
            return PARSE_FAIL(p, open.offset, "unclosed '%c'", is_list ? '[' : '(');
        return PARSE_FAIL(p, p->cur.offset, "expected %s, got %s", is_list ? "',' or ']'" : "')'",
                          describe_token(p, &p->cur, buf, sizeof(buf)));
    }
closed:
    if ((rc = advance(p)))
        return rc;
    p->depth--;
    *out = is_list ? list : inner;
    return 0;
}

/* after: the text of the operator before this operand, for messages; NULL at
 * the start of the input. */
static int parse_primary(struct parser *p, const char *after, struct dsl_expr **out)
{
    struct token *t = &p->cur;
    struct dsl_expr *e = NULL;
    char buf[DESC_MAX];
    int rc;

    switch (t->kind) {
    case T_LPAREN:
    case T_LBRACK:
        return parse_group(p, out);
    case T_NUMBER:
        e = new_node(p, N_NUMBER, t->offset);
        e->number = t->number;
        break;
    case T_STRING:
        e = new_node(p, N_STRING, t->offset);
        e->string = t->string;
        break;
    case T_TRUE:
    case T_FALSE:
        e = new_node(p, N_BOOL, t->offset);
        e->boolean = t->kind == T_TRUE;
        break;
    case T_NULL:
        e = new_node(p, N_NULL, t->offset);
        break;
    case T_REF:
        e = new_node(p, N_REF, t->offset);
        e->string = arena_strndup(p->a, p->src + t->offset, t->len);
        e->ref.parts = t->parts;
        e->ref.n_parts = t->n_parts;
        e->ref.offset = t->offset;
        e->ref.len = t->len;
        break;
    default:
        if (!after)
            return PARSE_FAIL(p, t->offset, t->kind == T_EOF ? "empty expression" : "unexpected %s",
                              describe_token(p, t, buf, sizeof(buf)));
        if (at_end(p))
            return PARSE_FAIL(p, t->offset, "expected an expression after '%s'", after);
        return PARSE_FAIL(p, t->offset, "unexpected %s after '%s'",
                          describe_token(p, t, buf, sizeof(buf)), after);
    }
    if ((rc = advance(p)))
        return rc;
    *out = e;
    return 0;
}

static bool is_cmp_token(enum tok_kind k)
{
    return k == T_EQ || k == T_NE || k == T_LT || k == T_LE || k == T_GT || k == T_GE ||
           k == T_IN || k == T_NOT;
}

/* Recognizes a comparison operator at cur, including the two tokens of
 * `not in`. Returns 1 if found (*op set), 0 if not, or a parse error. */
static int cmp_op_at(struct parser *p, enum cmp_op *op)
{
    const struct token *next;
    int rc;

    switch (p->cur.kind) {
    case T_EQ:
        *op = OP_EQ;
        return 1;
    case T_NE:
        *op = OP_NE;
        return 1;
    case T_LT:
        *op = OP_LT;
        return 1;
    case T_LE:
        *op = OP_LE;
        return 1;
    case T_GT:
        *op = OP_GT;
        return 1;
    case T_GE:
        *op = OP_GE;
        return 1;
    case T_IN:
        *op = OP_IN;
        return 1;
    case T_NOT:
        if ((rc = peek(p, &next)))
            return rc;
        if (next->kind != T_IN)
            return PARSE_FAIL(p, next->offset, "expected 'in' after 'not'");
        *op = OP_NOT_IN;
        return 1;
    default:
        return 0;
    }
}

static int parse_cmp(struct parser *p, const char *after, struct dsl_expr **out)
{
    struct dsl_expr *lhs = NULL, *rhs = NULL, *e;
    enum cmp_op op = OP_EQ;
    size_t op_offset;
    int rc;

    if ((rc = parse_primary(p, after, &lhs)))
        return rc;
    if ((rc = cmp_op_at(p, &op)) <= 0) {
        if (rc == 0)
            *out = lhs;
        return rc;
    }
    op_offset = p->cur.offset;
    if (op == OP_NOT_IN && (rc = advance(p)))
        return rc;
    if ((rc = advance(p)) || (rc = parse_primary(p, cmp_op_names[op], &rhs)))
        return rc;
    if (is_cmp_token(p->cur.kind))
        return PARSE_FAIL(p, p->cur.offset, "comparison operators cannot be chained");

    e = new_node(p, N_CMP, op_offset);
    e->op = op;
    e->kids = lhs;
    lhs->next = rhs;
    e->n_kids = 2;
    *out = e;
    return 0;
}

static int parse_not(struct parser *p, const char *after, struct dsl_expr **out)
{
    struct dsl_expr *operand = NULL, *e;
    size_t offset = p->cur.offset;
    int rc;

    if (p->cur.kind != T_NOT)
        return parse_cmp(p, after, out);
    if ((rc = enter(p)) || (rc = advance(p)) || (rc = parse_not(p, "not", &operand)))
        return rc;
    p->depth--;
    e = new_node(p, N_NOT, offset);
    e->kids = operand;
    e->n_kids = 1;
    *out = e;
    return 0;
}

/* One level of an n-ary chain: `and` over `not`, or `or` over `and`. */
static int parse_chain(struct parser *p, const char *after, enum tok_kind op_tok,
                       struct dsl_expr **out)
{
    bool is_or = op_tok == T_OR;
    const char *op_name = is_or ? "or" : "and";
    struct dsl_expr *first = NULL, *e, *operand = NULL, **tail;
    int rc;

    rc = is_or ? parse_chain(p, after, T_AND, &first) : parse_not(p, after, &first);
    if (rc)
        return rc;
    if (p->cur.kind != op_tok) {
        *out = first;
        return 0;
    }
    e = new_node(p, is_or ? N_OR : N_AND, first->offset);
    e->kids = first;
    e->n_kids = 1;
    tail = &first->next;
    while (p->cur.kind == op_tok) {
        if ((rc = advance(p)))
            return rc;
        rc = is_or ? parse_chain(p, op_name, T_AND, &operand) : parse_not(p, op_name, &operand);
        if (rc)
            return rc;
        *tail = operand;
        tail = &operand->next;
        e->n_kids++;
    }
    *out = e;
    return 0;
}

static int parse_or(struct parser *p, const char *after, struct dsl_expr **out)
{
    return parse_chain(p, after, T_OR, out);
}

int dsl_expr_parse(struct dsl_expr **out, struct arena *a, const char *src,
                   struct dsl_expr_error *err)
{
    struct parser p = {.a = a, .src = src, .err = err};
    struct dsl_expr *e = NULL;
    char buf[DESC_MAX];
    int rc;

    if (!out || !a || !src)
        return SL_EINVAL;
    p.len = strnlen(src, (size_t)DSL_EXPR_MAX_LEN + 1);
    if (p.len > DSL_EXPR_MAX_LEN)
        return PARSE_FAIL(&p, DSL_EXPR_MAX_LEN, "expression too long (limit %d bytes)",
                          DSL_EXPR_MAX_LEN);
    if ((rc = advance(&p)) || (rc = parse_or(&p, NULL, &e)))
        return rc;
    if (p.cur.kind != T_EOF)
        return PARSE_FAIL(&p, p.cur.offset, "unexpected %s",
                          describe_token(&p, &p.cur, buf, sizeof(buf)));
    *out = e;
    return 0;
}

/* --- templates ----------------------------------------------------------------- */

struct seg_list {
    struct template_seg *v;
    size_t n, alloc;
};

static void seg_push(struct seg_list *l, const char *text, size_t len, const struct dsl_expr *e)
{
    XGROW(l->v, l->alloc, l->n + 1);
    l->v[l->n++] = (struct template_seg){.text = text, .len = len, .expr = e};
}

static void flush_literal(struct seg_list *l, struct arena *a, struct strbuf *lit)
{
    if (!lit->len)
        return;
    seg_push(l, arena_strndup(a, lit->buf, lit->len), lit->len, NULL);
    strbuf_reset(lit);
}

int dsl_template_parse(struct dsl_template **out, struct arena *a, const char *src,
                       struct dsl_expr_error *err)
{
    struct parser p = {.a = a, .src = src, .err = err, .template_mode = true};
    struct seg_list segs = {0};
    struct strbuf lit = STRBUF_INIT;
    struct dsl_template *t;
    char buf[DESC_MAX];
    size_t i = 0;
    int rc = 0;

    if (!out || !a || !src)
        return SL_EINVAL;
    p.len = strnlen(src, (size_t)DSL_TEMPLATE_MAX_LEN + 1);
    if (p.len > DSL_TEMPLATE_MAX_LEN) {
        rc = PARSE_FAIL(&p, DSL_TEMPLATE_MAX_LEN, "template too long (limit %d bytes)",
                        DSL_TEMPLATE_MAX_LEN);
        goto cleanup;
    }

    while (i < p.len) {
        const char *open = strstr(src + i, "{{");
        size_t open_at = open ? (size_t)(open - src) : p.len;
        strbuf_add(&lit, src + i, open_at - i);
        if (!open)
            break;

        struct dsl_expr *e;
        p.pos = open_at + 2;
        p.depth = 0;
        p.have_next = false;
        if ((rc = advance(&p)))
            goto cleanup;
        if (p.cur.kind == T_EOF) {
            rc = PARSE_FAIL(&p, open_at, "unterminated '{{'");
            goto cleanup;
        }
        size_t expr_at = p.cur.offset;
        if ((rc = parse_or(&p, "{{", &e)))
            goto cleanup;
        if (p.cur.kind != T_CLOSE) {
            if (p.cur.kind == T_EOF)
                rc = PARSE_FAIL(&p, open_at, "unterminated '{{'");
            else
                rc = PARSE_FAIL(&p, p.cur.offset, "unexpected %s",
                                describe_token(&p, &p.cur, buf, sizeof(buf)));
            goto cleanup;
        }
        if (e->kind == N_STRING) {
            strbuf_addstr(&lit, e->string);
        } else {
            size_t expr_end = p.cur.offset;
            while (expr_end > expr_at && strchr(" \t\r\n", src[expr_end - 1]))
                expr_end--;
            flush_literal(&segs, a, &lit);
            seg_push(&segs, arena_strndup(a, src + expr_at, expr_end - expr_at), expr_end - expr_at,
                     e);
        }
        i = p.cur.offset + p.cur.len;
    }
    flush_literal(&segs, a, &lit);

    t = arena_alloc(a, sizeof(*t));
    if (segs.n) {
        struct template_seg *v = arena_calloc(a, segs.n, sizeof(*v));
        memcpy(v, segs.v, segs.n * sizeof(*v));
        t->segs = v;
        t->n_segs = segs.n;
    }
    *out = t;
cleanup:
    free(segs.v);
    strbuf_release(&lit);
    return rc;
}

bool dsl_template_is_literal(const struct dsl_template *t)
{
    for (size_t i = 0; i < t->n_segs; i++)
        if (t->segs[i].expr)
            return false;
    return true;
}

const struct dsl_expr *dsl_template_single_expr(const struct dsl_template *t)
{
    return t->n_segs == 1 ? t->segs[0].expr : NULL;
}

/* --- walking references -------------------------------------------------------- */

int dsl_expr_each_ref(const struct dsl_expr *e, dsl_ref_fn fn, void *ctx)
{
    if (e->kind == N_REF)
        return fn(ctx, &e->ref);
    for (const struct dsl_expr *k = e->kids; k; k = k->next) {
        int rc = dsl_expr_each_ref(k, fn, ctx);
        if (rc)
            return rc;
    }
    return 0;
}

int dsl_template_each_ref(const struct dsl_template *t, dsl_ref_fn fn, void *ctx)
{
    for (size_t i = 0; i < t->n_segs; i++) {
        if (!t->segs[i].expr)
            continue;
        int rc = dsl_expr_each_ref(t->segs[i].expr, fn, ctx);
        if (rc)
            return rc;
    }
    return 0;
}

/* --- evaluation ---------------------------------------------------------------- */

struct eval {
    const cJSON *ctx; /* the context object, or NULL */
    char *errmsg;     /* caller's buffer */
    size_t errlen;
};

/* A value during evaluation: borrowed from the context (owned == NULL) or built
 * by the evaluator (owned == j, freed by value_release). */
struct value {
    const cJSON *j;
    cJSON *owned;
};

__attribute__((format(printf, 2, 3))) static void eval_msg(struct eval *ev, const char *fmt, ...)
{
    if (ev->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ev->errmsg, ev->errlen, fmt, ap);
        va_end(ap);
    }
}

/* Writes an evaluation error message and evaluates to code (see PARSE_FAIL). */
#define EVAL_FAIL(ev, code, ...) (eval_msg((ev), __VA_ARGS__), (code))

/* cJSON reports allocation failure as NULL; like xmalloc, sluice aborts. */
static cJSON *json_check(cJSON *j)
{
    if (!j) {
        fprintf(stderr, "fatal: out of memory building a cJSON value\n");
        abort();
    }
    return j;
}

static struct value value_own(cJSON *j)
{
    json_check(j);
    return (struct value){.j = j, .owned = j};
}

static void value_release(struct value *v)
{
    cJSON_Delete(v->owned);
    v->j = NULL;
    v->owned = NULL;
}

/* Returns an owned copy of v, consuming v. */
static cJSON *value_take(struct value *v)
{
    cJSON *j = v->owned ? v->owned : json_check(cJSON_Duplicate(v->j, true));
    v->j = NULL;
    v->owned = NULL;
    return j;
}

static const char *type_name(const cJSON *j)
{
    if (cJSON_IsNull(j))
        return "null";
    if (cJSON_IsBool(j))
        return "boolean";
    if (cJSON_IsNumber(j))
        return "number";
    if (cJSON_IsString(j))
        return "string";
    if (cJSON_IsArray(j))
        return "list";
    if (cJSON_IsObject(j))
        return "object";
    return "raw value";
}

/* Describes a value for messages: its type, and for a string its (quoted,
 * escaped, possibly shortened) text, since "yes" vs "true" is usually the bug. */
static const char *describe_value(const cJSON *j, char *buf, size_t size)
{
    if (!cJSON_IsString(j))
        return type_name(j);
    const char *s = j->valuestring;
    size_t n = strlen(s);
    char shown[QUOTE_MAX + 1];
    struct strbuf sb = STRBUF_INIT;
    memcpy(shown, s, n > QUOTE_MAX ? QUOTE_MAX : n);
    shown[n > QUOTE_MAX ? QUOTE_MAX : n] = '\0';
    strbuf_add_json_string(&sb, shown);
    snprintf(buf, size, "string %s%s", sb.buf, n > QUOTE_MAX ? "..." : "");
    strbuf_release(&sb);
    return buf;
}

/* Booleans, and the exact strings "true" and "false", are booleans. */
static bool as_bool(const cJSON *j, bool *b)
{
    if (cJSON_IsBool(j)) {
        *b = cJSON_IsTrue(j);
        return true;
    }
    if (cJSON_IsString(j) &&
        (!strcmp(j->valuestring, "true") || !strcmp(j->valuestring, "false"))) {
        *b = j->valuestring[0] == 't';
        return true;
    }
    return false;
}

/* A string that is entirely a number: [+-]? (d+ (. d*)? | . d+) ([eE] [+-]? d+)?,
 * no blanks, finite. */
static bool as_number(const char *s, double *out)
{
    size_t i = 0, n = strlen(s), int_digits, frac_digits = 0;
    if (s[i] == '+' || s[i] == '-')
        i++;
    size_t start = i;
    i = scan_digits(s, i, n);
    int_digits = i - start;
    if (s[i] == '.') {
        size_t frac = ++i;
        i = scan_digits(s, i, n);
        frac_digits = i - frac;
    }
    if (!int_digits && !frac_digits)
        return false;
    if (s[i] == 'e' || s[i] == 'E') {
        i++;
        if (s[i] == '+' || s[i] == '-')
            i++;
        size_t exp = i;
        i = scan_digits(s, i, n);
        if (i == exp)
            return false;
    }
    if (i != n)
        return false;
    double v = strtod(s, NULL);
    if (!isfinite(v))
        return false;
    *out = v;
    return true;
}

static int value_equal(struct eval *ev, const cJSON *a, const cJSON *b, int depth, bool *eq);

static int object_equal(struct eval *ev, const cJSON *a, const cJSON *b, int depth, bool *eq)
{
    if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) {
        *eq = false;
        return 0;
    }
    for (const cJSON *k = a->child; k; k = k->next) {
        const cJSON *other = cJSON_GetObjectItemCaseSensitive(b, k->string);
        if (!other) {
            *eq = false;
            return 0;
        }
        int rc = value_equal(ev, k, other, depth + 1, eq);
        if (rc || !*eq)
            return rc;
    }
    /* Equal sizes and a's keys in b miss only duplicate keys; check b's too. */
    for (const cJSON *k = b->child; k; k = k->next) {
        if (!cJSON_GetObjectItemCaseSensitive(a, k->string)) {
            *eq = false;
            return 0;
        }
    }
    *eq = true;
    return 0;
}

/* `==` as documented in docs/expressions.md: numbers and numeric strings
 * compare as numbers, booleans and the strings "true"/"false" as booleans,
 * lists and objects deeply, any other mix of types is unequal. */
static int value_equal(struct eval *ev, const cJSON *a, const cJSON *b, int depth, bool *eq)
{
    double x, y;
    bool p, q;

    if (depth > VALUE_MAX_DEPTH)
        return EVAL_FAIL(ev, SL_EINVAL, "value nested too deeply to compare (limit %d)",
                         VALUE_MAX_DEPTH);
    if (cJSON_IsNumber(a) || cJSON_IsNumber(b)) {
        *eq = false;
        if (cJSON_IsNumber(a) && cJSON_IsNumber(b))
            *eq = a->valuedouble == b->valuedouble;
        else if (cJSON_IsNumber(a) && cJSON_IsString(b) && as_number(b->valuestring, &y))
            *eq = a->valuedouble == y;
        else if (cJSON_IsString(a) && cJSON_IsNumber(b) && as_number(a->valuestring, &x))
            *eq = x == b->valuedouble;
        return 0;
    }
    if (cJSON_IsBool(a) || cJSON_IsBool(b)) {
        *eq = as_bool(a, &p) && as_bool(b, &q) && p == q;
        return 0;
    }
    if (cJSON_IsString(a) && cJSON_IsString(b)) {
        *eq = !strcmp(a->valuestring, b->valuestring);
        return 0;
    }
    if (cJSON_IsNull(a) && cJSON_IsNull(b)) {
        *eq = true;
        return 0;
    }
    if (cJSON_IsArray(a) && cJSON_IsArray(b)) {
        const cJSON *i = a->child, *j = b->child;
        for (; i && j; i = i->next, j = j->next) {
            int rc = value_equal(ev, i, j, depth + 1, eq);
            if (rc || !*eq)
                return rc;
        }
        *eq = !i && !j;
        return 0;
    }
    if (cJSON_IsObject(a) && cJSON_IsObject(b))
        return object_equal(ev, a, b, depth, eq);
    *eq = false;
    return 0;
}

/* `<`, `<=`, `>`, `>=`: numbers (and numeric strings against numbers)
 * numerically, two strings bytewise; anything else is a type error. */
static int value_order(struct eval *ev, enum cmp_op op, const cJSON *a, const cJSON *b,
                       bool *result)
{
    char abuf[DESC_MAX], bbuf[DESC_MAX];
    double x = 0, y = 0;
    int cmp;

    if (cJSON_IsString(a) && cJSON_IsString(b)) {
        cmp = strcmp(a->valuestring, b->valuestring);
    } else if ((cJSON_IsNumber(a) || (cJSON_IsString(a) && as_number(a->valuestring, &x))) &&
               (cJSON_IsNumber(b) || (cJSON_IsString(b) && as_number(b->valuestring, &y))) &&
               (cJSON_IsNumber(a) || cJSON_IsNumber(b))) {
        if (cJSON_IsNumber(a))
            x = a->valuedouble;
        if (cJSON_IsNumber(b))
            y = b->valuedouble;
        if (isnan(x) || isnan(y))
            return EVAL_FAIL(ev, SL_ETYPE, "'%s' cannot order a non-finite number",
                             cmp_op_names[op]);
        cmp = x < y ? -1 : x > y ? 1 : 0;
    } else {
        return EVAL_FAIL(ev, SL_ETYPE, "'%s' cannot compare %s with %s", cmp_op_names[op],
                         describe_value(a, abuf, sizeof(abuf)),
                         describe_value(b, bbuf, sizeof(bbuf)));
    }
    switch (op) {
    case OP_LT:
        *result = cmp < 0;
        break;
    case OP_LE:
        *result = cmp <= 0;
        break;
    case OP_GT:
        *result = cmp > 0;
        break;
    default:
        *result = cmp >= 0;
        break;
    }
    return 0;
}

/* `in`: list membership by `==`, substring of a string, key of an object. */
static int value_in(struct eval *ev, enum cmp_op op, const cJSON *needle, const cJSON *hay,
                    bool *result)
{
    const char *name = cmp_op_names[op];
    char buf[DESC_MAX];
    int rc;

    if (cJSON_IsArray(hay)) {
        *result = false;
        for (const cJSON *k = hay->child; k && !*result; k = k->next)
            if ((rc = value_equal(ev, needle, k, 0, result)))
                return rc;
        return 0;
    }
    if (cJSON_IsString(hay)) {
        if (!cJSON_IsString(needle))
            return EVAL_FAIL(ev, SL_ETYPE,
                             "'%s' needs a string on the left when the right is a "
                             "string, got %s",
                             name, type_name(needle));
        *result = strstr(hay->valuestring, needle->valuestring) != NULL;
        return 0;
    }
    if (cJSON_IsObject(hay)) {
        if (!cJSON_IsString(needle))
            return EVAL_FAIL(ev, SL_ETYPE,
                             "'%s' needs a string key on the left when the right "
                             "is an object, got %s",
                             name, type_name(needle));
        *result = cJSON_GetObjectItemCaseSensitive(hay, needle->valuestring) != NULL;
        return 0;
    }
    return EVAL_FAIL(ev, SL_ETYPE, "'%s' needs a list, string or object on the right, got %s", name,
                     describe_value(hay, buf, sizeof(buf)));
}

static int eval_ref(struct eval *ev, const struct dsl_expr *e, struct value *out)
{
    const cJSON *cur = ev->ctx;
    size_t prefix_len = 0;

    for (size_t i = 0; i < e->ref.n_parts; i++) {
        if (i > 0 && !cJSON_IsObject(cur))
            return EVAL_FAIL(ev, SL_EINVAL, "%s is not defined (%.*s is %s%s, not an object)",
                             e->string, (int)prefix_len, e->string, cJSON_IsNull(cur) ? "" : "a ",
                             type_name(cur));
        const cJSON *next =
            cJSON_IsObject(cur) ? cJSON_GetObjectItemCaseSensitive(cur, e->ref.parts[i]) : NULL;
        if (!next)
            return EVAL_FAIL(ev, SL_EINVAL, "%s is not defined", e->string);
        cur = next;
        prefix_len += (i ? 1 : 0) + strlen(e->ref.parts[i]);
    }
    if (!cur) /* only if a reference had no parts, which the parser never makes */
        return EVAL_FAIL(ev, SL_EINVAL, "%s is not defined", e->string);
    *out = (struct value){.j = cur};
    return 0;
}

static int eval_node(struct eval *ev, const struct dsl_expr *e, struct value *out);

/* Evaluates e and reads it as a boolean; what names the consumer for messages. */
static int eval_bool(struct eval *ev, const struct dsl_expr *e, const char *what, bool *out)
{
    struct value v = {0};
    char buf[DESC_MAX];
    int rc = eval_node(ev, e, &v);
    if (rc)
        return rc;
    if (!as_bool(v.j, out))
        rc = EVAL_FAIL(ev, SL_ETYPE, "%s, got %s", what, describe_value(v.j, buf, sizeof(buf)));
    value_release(&v);
    return rc;
}

static int eval_cmp(struct eval *ev, const struct dsl_expr *e, bool *result)
{
    struct value lhs = {0}, rhs = {0};
    int rc;

    if ((rc = eval_node(ev, e->kids, &lhs)) || (rc = eval_node(ev, e->kids->next, &rhs)))
        goto cleanup;
    switch (e->op) {
    case OP_EQ:
    case OP_NE:
        rc = value_equal(ev, lhs.j, rhs.j, 0, result);
        break;
    case OP_IN:
    case OP_NOT_IN:
        rc = value_in(ev, e->op, lhs.j, rhs.j, result);
        break;
    default:
        rc = value_order(ev, e->op, lhs.j, rhs.j, result);
        break;
    }
    if (rc == 0 && (e->op == OP_NE || e->op == OP_NOT_IN))
        *result = !*result;
cleanup:
    value_release(&lhs);
    value_release(&rhs);
    return rc;
}

static int eval_node(struct eval *ev, const struct dsl_expr *e, struct value *out)
{
    struct value item = {0};
    cJSON *list;
    bool b = false;
    int rc = 0;

    switch (e->kind) {
    case N_NULL:
        *out = value_own(cJSON_CreateNull());
        return 0;
    case N_BOOL:
        *out = value_own(cJSON_CreateBool(e->boolean));
        return 0;
    case N_NUMBER:
        *out = value_own(cJSON_CreateNumber(e->number));
        return 0;
    case N_STRING:
        *out = value_own(cJSON_CreateString(e->string));
        return 0;
    case N_REF:
        return eval_ref(ev, e, out);
    case N_LIST:
        list = json_check(cJSON_CreateArray());
        for (const struct dsl_expr *k = e->kids; k; k = k->next) {
            if ((rc = eval_node(ev, k, &item))) {
                cJSON_Delete(list);
                return rc;
            }
            cJSON_AddItemToArray(list, value_take(&item));
        }
        *out = value_own(list);
        return 0;
    case N_NOT:
        rc = eval_bool(ev, e->kids, "'not' needs a boolean", &b);
        b = !b;
        break;
    case N_AND:
    case N_OR:
        /* Short-circuit: stop at the first false (and) or true (or) operand. */
        b = e->kind == N_AND;
        for (const struct dsl_expr *k = e->kids; k && rc == 0 && b == (e->kind == N_AND);
             k = k->next)
            rc = eval_bool(ev, k, e->kind == N_AND ? "'and' needs booleans" : "'or' needs booleans",
                           &b);
        break;
    case N_CMP:
        rc = eval_cmp(ev, e, &b);
        break;
    }
    if (rc == 0)
        *out = value_own(cJSON_CreateBool(b));
    return rc;
}

static void eval_init(struct eval *ev, const cJSON *ctx, char *errmsg, size_t errlen)
{
    ev->ctx = ctx;
    ev->errmsg = errmsg;
    ev->errlen = errmsg ? errlen : 0;
    if (ev->errlen)
        errmsg[0] = '\0';
}

int dsl_expr_eval(cJSON **out, const struct dsl_expr *e, const cJSON *ctx, char *errmsg,
                  size_t errlen)
{
    struct eval ev;
    struct value v = {0};
    eval_init(&ev, ctx, errmsg, errlen);
    int rc = eval_node(&ev, e, &v);
    if (rc == 0)
        *out = value_take(&v);
    return rc;
}

int dsl_expr_eval_bool(bool *out, const struct dsl_expr *e, const cJSON *ctx, char *errmsg,
                       size_t errlen)
{
    struct eval ev;
    bool b = false;
    eval_init(&ev, ctx, errmsg, errlen);
    int rc = eval_bool(&ev, e, "condition needs a boolean", &b);
    if (rc == 0)
        *out = b;
    return rc;
}

/* --- rendering ----------------------------------------------------------------- */

/* The shortest text that reads back as exactly v; integers up to 2^53 in plain
 * digits. v must be finite. */
static void format_number(char *buf, size_t size, double v)
{
    if (v == 0) {
        snprintf(buf, size, "0"); /* also -0 */
        return;
    }
    if (v == trunc(v) && fabs(v) <= 9007199254740992.0) {
        snprintf(buf, size, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static int render_json(struct eval *ev, struct strbuf *sb, const cJSON *j, int depth)
{
    char num[40];
    int rc;

    if (depth > VALUE_MAX_DEPTH)
        return EVAL_FAIL(ev, SL_EINVAL, "value nested too deeply to render (limit %d)",
                         VALUE_MAX_DEPTH);
    if (cJSON_IsNull(j)) {
        strbuf_addstr(sb, "null");
    } else if (cJSON_IsBool(j)) {
        strbuf_addstr(sb, cJSON_IsTrue(j) ? "true" : "false");
    } else if (cJSON_IsNumber(j)) {
        if (!isfinite(j->valuedouble))
            return EVAL_FAIL(ev, SL_ETYPE, "cannot render a non-finite number");
        format_number(num, sizeof(num), j->valuedouble);
        strbuf_addstr(sb, num);
    } else if (cJSON_IsString(j)) {
        strbuf_add_json_string(sb, j->valuestring);
    } else if (cJSON_IsArray(j) || cJSON_IsObject(j)) {
        bool is_obj = cJSON_IsObject(j);
        strbuf_addch(sb, is_obj ? '{' : '[');
        for (const cJSON *k = j->child; k; k = k->next) {
            if (k != j->child)
                strbuf_addch(sb, ',');
            if (is_obj) {
                strbuf_add_json_string(sb, k->string ? k->string : "");
                strbuf_addch(sb, ':');
            }
            if ((rc = render_json(ev, sb, k, depth + 1)))
                return rc;
        }
        strbuf_addch(sb, is_obj ? '}' : ']');
    } else {
        return EVAL_FAIL(ev, SL_ETYPE, "cannot render an unsupported value");
    }
    return 0;
}

static int render_value(struct eval *ev, struct strbuf *sb, const cJSON *j,
                        const struct template_seg *seg)
{
    if (cJSON_IsString(j)) {
        strbuf_addstr(sb, j->valuestring);
        return 0;
    }
    if (cJSON_IsNull(j)) {
        if (seg->len > QUOTE_MAX)
            return EVAL_FAIL(ev, SL_ETYPE, "'%.*s...' is null, which cannot be rendered", QUOTE_MAX,
                             seg->text);
        return EVAL_FAIL(ev, SL_ETYPE, "'%s' is null, which cannot be rendered", seg->text);
    }
    return render_json(ev, sb, j, 0);
}

int dsl_template_render(char **out, const struct dsl_template *t, const cJSON *ctx, char *errmsg,
                        size_t errlen)
{
    struct eval ev;
    struct strbuf sb = STRBUF_INIT;
    int rc = 0;

    eval_init(&ev, ctx, errmsg, errlen);
    for (size_t i = 0; i < t->n_segs; i++) {
        const struct template_seg *seg = &t->segs[i];
        if (!seg->expr) {
            strbuf_add(&sb, seg->text, seg->len);
            continue;
        }
        struct value v = {0};
        if ((rc = eval_node(&ev, seg->expr, &v)))
            goto cleanup;
        rc = render_value(&ev, &sb, v.j, seg);
        value_release(&v);
        if (rc)
            goto cleanup;
    }
    *out = strbuf_detach(&sb, NULL);
cleanup:
    strbuf_release(&sb);
    return rc;
}
