/*
 * dsl/validate.c - checks that span fields: names, dependencies, cycles, and
 * every template and expression reference.
 *
 * Runs after load.c has built a model whose fields are each well-typed. In
 * order: step names are unique; depends_on names resolve (main steps to main
 * steps, on_exit steps to on_exit steps); the graph is acyclic (Kahn's
 * algorithm gives dag->topo; a cycle is printed step by step); then every
 * expression and template is parsed and each reference in it is checked against
 * the DAG, so that a typo fails when the DAG is pushed, never when it runs.
 *
 * A step may read steps.<s>.* only if <s> is upstream of it (a transitive
 * dependency): otherwise the value might not exist yet when it runs. on_exit
 * steps run after every main step, so they may read any main step, and
 * on_exit steps upstream of them.
 *
 * Cost: names are found through a hash table; "is s upstream of t" is answered
 * by topological positions, a depth-first numbering and a few kept descendant
 * sets before any search (see is_upstream), so a DAG whose steps all read one
 * step is linear, and memory stays linear in the size of the DAG.
 *
 * Memory: the model gets the resolved dependencies (step->deps) and dag->topo.
 * Parse trees of templates that recur from step to step are kept in P->scratch
 * (parsed once); other parse trees and did-you-mean candidates go to an arena
 * emptied after each step; the rest is malloc'd and freed here.
 */
#include "dsl/dsl_int.h"
#include "dsl/expr.h"
#include "common/xalloc.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* --- did you mean ----------------------------------------------------------------- */

/* Optimal string alignment distance: insertions, deletions, substitutions and
 * transpositions of neighbours ("trian" is one edit from "train"). */
static size_t edit_distance(const char *a, const char *b, size_t limit)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return limit + 1;
    if ((la > lb ? la - lb : lb - la) > limit)
        return limit + 1;
    size_t rows[3][65];
    size_t *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = prev[j - 1] + cost;
            if (prev[j] + 1 < best)
                best = prev[j] + 1;
            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                prev2[j - 2] + 1 < best)
                best = prev2[j - 2] + 1;
            cur[j] = best;
        }
        size_t *t = prev2;
        prev2 = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

const char *dsl_did_you_mean(const char *word, const char *const *candidates, size_t n)
{
    size_t limit = strlen(word) / 3;
    if (limit < 1)
        limit = 1;
    if (limit > 3)
        limit = 3;
    const char *best = NULL;
    size_t best_d = limit + 1;
    for (size_t i = 0; i < n; i++) {
        if (!candidates[i] || !*candidates[i])
            continue;
        size_t d = edit_distance(word, candidates[i], limit);
        if (d < best_d) {
            best_d = d;
            best = candidates[i];
        }
    }
    return best;
}

/* --- a name index ----------------------------------------------------------------- */

struct name_index {
    size_t cap;  /* a power of two */
    long *slots; /* -1 empty, else an index into steps */
    const struct dsl_step *steps;
};

static size_t hash_str(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void index_init(struct name_index *ix, const struct dsl_step *steps, size_t n)
{
    ix->cap = 16;
    while (ix->cap < n * 2)
        ix->cap *= 2;
    ix->slots = xmalloc(ix->cap * sizeof(*ix->slots));
    for (size_t i = 0; i < ix->cap; i++)
        ix->slots[i] = -1;
    ix->steps = steps;
}

static long index_find(const struct name_index *ix, const char *name)
{
    for (size_t h = hash_str(name) & (ix->cap - 1);; h = (h + 1) & (ix->cap - 1)) {
        if (ix->slots[h] < 0)
            return -1;
        if (!strcmp(ix->steps[ix->slots[h]].name, name))
            return ix->slots[h];
    }
}

/* Adds steps[i]; returns the index already holding that name, or -1. */
static long index_add(struct name_index *ix, size_t i)
{
    const char *name = ix->steps[i].name;
    for (size_t h = hash_str(name) & (ix->cap - 1);; h = (h + 1) & (ix->cap - 1)) {
        if (ix->slots[h] < 0) {
            ix->slots[h] = (long)i;
            return -1;
        }
        if (!strcmp(ix->steps[ix->slots[h]].name, name))
            return ix->slots[h];
    }
}

static void index_release(struct name_index *ix)
{
    free(ix->slots);
    ix->slots = NULL;
}

/* --- one group of steps: main steps, or on_exit steps ----------------------------- */

/* The names of n steps, as did-you-mean candidates, in mem. Only made when a
 * name did not resolve: a valid DAG never needs it. */
static const char **step_names(struct arena *mem, const struct dsl_step *steps, size_t n)
{
    const char **names = arena_calloc(mem, n + 1, sizeof(*names));
    for (size_t i = 0; i < n; i++)
        names[i] = steps[i].name;
    return names;
}

/* Descendant sets kept for the steps asked about most recently; see is_upstream. */
#define REACH_MEMOS 8

struct reach_memo {
    size_t target;        /* the step whose descendants are marked; SIZE_MAX: unused */
    unsigned char *below; /* per step: 1 if downstream of target */
    unsigned long used;   /* when last used, for replacing the least recently used */
};

struct group {
    struct dsl_step *steps;
    size_t n;
    struct dsl_step_marks *marks;
    struct name_index ix;
    bool acyclic;
    bool *unresolved; /* per step: a depends_on entry did not resolve */

    /* the graph, from order_steps: dependents of step i are
     * dependents[dep_start[i]..dep_start[i + 1]) */
    size_t *dep_start, *dependents;

    /* for is_upstream, set up by reach_init when the group is acyclic */
    size_t *pos;        /* per step: its place in the topological order */
    size_t *pre, *post; /* per step: numbers in a depth-first forest of dependents */
    bool *tainted;      /* per step: it or a step upstream has an unresolved dependency */
    bool *asked;        /* per step: asked about before (as the upstream one) */
    unsigned *stamp;    /* per step, for upstream searches */
    unsigned epoch;
    size_t *stack;
    struct reach_memo memo[REACH_MEMOS];
    unsigned long clock;
};

static void resolve_deps(struct dsl_parse *P, struct group *g, const struct group *other,
                         const char *kind)
{
    const char **names = NULL; /* the steps' names, for did-you-mean: made on first use */
    for (size_t i = 0; i < g->n; i++) {
        struct dsl_step *s = &g->steps[i];
        s->deps = arena_calloc(P->mem, s->n_depends_on + 1, sizeof(*s->deps));
        size_t kept = 0;
        for (size_t j = 0; j < s->n_depends_on; j++) {
            const char *dep = s->depends_on[j];
            struct dsl_pos pos = g->marks[i].depends_on[j];
            long k = index_find(&g->ix, dep);
            if (k < 0)
                g->unresolved[i] = true;
            if (k < 0) {
                if (other && index_find(&other->ix, dep) >= 0) {
                    if (s->on_exit)
                        dsl_parse_error(P, pos,
                                        "on_exit step '%s' cannot depend on '%s': on_exit steps "
                                        "run after every step of the DAG",
                                        s->name, dep);
                    else
                        dsl_parse_error(P, pos, "step '%s' cannot depend on on_exit step '%s'",
                                        s->name, dep);
                    continue;
                }
                if (!names)
                    names = step_names(P->scratch, g->steps, g->n);
                const char *hint = dsl_did_you_mean(dep, names, g->n);
                if (hint)
                    dsl_parse_error(P, pos,
                                    "step '%s' depends on unknown %s '%s' (did you mean '%s'?)",
                                    s->name, kind, dep, hint);
                else
                    dsl_parse_error(P, pos, "step '%s' depends on unknown %s '%s'", s->name, kind,
                                    dep);
                continue;
            }
            if ((size_t)k == i) {
                dsl_parse_error(P, pos, "step '%s' depends on itself", s->name);
                continue;
            }
            bool dup = false;
            for (size_t d = 0; d < kept; d++)
                dup |= s->deps[d] == (size_t)k;
            if (dup) {
                dsl_parse_error(P, pos, "step '%s' lists '%s' twice in depends_on", s->name, dep);
                continue;
            }
            s->deps[kept++] = (size_t)k;
        }
        s->n_depends_on = kept;
        for (size_t d = 0; d < kept; d++)
            s->depends_on[d] = g->steps[s->deps[d]].name;
    }
}

/* Kahn's algorithm. Fills topo (g->n entries) when acyclic; else reports each cycle. */
static void order_steps(struct dsl_parse *P, struct group *g, size_t *topo)
{
    size_t *indeg = xcalloc(g->n + 1, sizeof(*indeg));
    size_t *head = xcalloc(g->n + 1, sizeof(*head)); /* CSR of dependents */
    size_t n_edges = 0;
    for (size_t i = 0; i < g->n; i++) {
        indeg[i] = g->steps[i].n_depends_on;
        n_edges += g->steps[i].n_depends_on;
        for (size_t d = 0; d < g->steps[i].n_depends_on; d++)
            head[g->steps[i].deps[d] + 1]++;
    }
    for (size_t i = 0; i < g->n; i++)
        head[i + 1] += head[i];
    size_t *fill = xcalloc(g->n + 1, sizeof(*fill));
    size_t *dependents = xcalloc(n_edges + 1, sizeof(*dependents));
    for (size_t i = 0; i < g->n; i++) {
        for (size_t d = 0; d < g->steps[i].n_depends_on; d++) {
            size_t dep = g->steps[i].deps[d];
            dependents[head[dep] + fill[dep]++] = i;
        }
    }
    size_t qh = 0, qt = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (indeg[i] == 0)
            topo[qt++] = i;
    }
    while (qh < qt) {
        size_t u = topo[qh++];
        for (size_t e = head[u]; e < head[u + 1]; e++) {
            size_t v = dependents[e];
            if (--indeg[v] == 0)
                topo[qt++] = v;
        }
    }
    g->acyclic = qt == g->n;
    if (!g->acyclic) {
        /* Every step left has a dependency that is left too: follow them to a loop. */
        size_t *seen_at = xcalloc(g->n + 1, sizeof(*seen_at)); /* position in path + 1 */
        size_t *path = xcalloc(g->n + 1, sizeof(*path));
        bool *reported = xcalloc(g->n + 1, sizeof(*reported));
        for (size_t start = 0; start < g->n; start++) {
            if (indeg[start] == 0 || reported[start])
                continue;
            size_t len = 0, u = start;
            while (!seen_at[u] && !reported[u]) {
                seen_at[u] = ++len;
                path[len - 1] = u;
                struct dsl_step *s = &g->steps[u];
                size_t next = u;
                for (size_t d = 0; d < s->n_depends_on; d++) {
                    if (indeg[s->deps[d]] > 0) {
                        next = s->deps[d];
                        break;
                    }
                }
                u = next;
            }
            if (!reported[u]) {
                /* path[seen_at[u]-1 .. len-1] is the loop; each depends on the next. */
                struct strbuf sb = STRBUF_INIT;
                size_t first = seen_at[u] - 1;
                for (size_t k = len; k-- > first;) {
                    strbuf_addf(&sb, "%s -> ", g->steps[path[k]].name);
                    reported[path[k]] = true;
                }
                strbuf_addstr(&sb, g->steps[path[len - 1]].name);
                dsl_parse_error(P, g->steps[path[first]].pos, "dependency cycle: %s", sb.buf);
                strbuf_release(&sb);
            }
            for (size_t k = 0; k < len; k++)
                seen_at[path[k]] = 0;
        }
        free(seen_at);
        free(path);
        free(reported);
    }
    free(indeg);
    free(fill);
    g->dep_start = head;
    g->dependents = dependents;
}

/* --- is A upstream of B ------------------------------------------------------------ */

/*
 * Every steps.X reference asks whether X is upstream of the referring step. A
 * search up the graph per question is O(steps) each, which a chain of steps that
 * all read the first one's output makes quadratic. So, in order:
 *
 *   1. a step with an unresolved dependency upstream: yes (that error is reported
 *      already, and guessing here would only add noise);
 *   2. a direct dependency: yes;
 *   3. X later in the topological order: no;
 *   4. the referring step inside X's subtree of a depth-first forest of the graph
 *      (pre/post numbers): yes. In a chain or a tree, or for a step read by
 *      everything after it, that answers every question;
 *   5. X asked about before: mark X's descendants with one downward search and keep
 *      the marks (for REACH_MEMOS steps at a time, the least recently used
 *      replaced), so a step read by many others costs one search;
 *   6. otherwise a depth-first search up from the referring step, stamped per step,
 *      that skips steps placed before X in the topological order.
 *
 * Memory is linear in the size of the graph. NEEDSWORK: more than REACH_MEMOS
 * distinct steps read, in turn, by most of a long DAG, through paths that 4 does
 * not see, still cost a downward search per question.
 */

static void reach_init(struct group *g, const size_t *topo)
{
    size_t n = g->n;
    g->pos = xcalloc(n + 1, sizeof(*g->pos));
    g->pre = xcalloc(n + 1, sizeof(*g->pre));
    g->post = xcalloc(n + 1, sizeof(*g->post));
    g->tainted = xcalloc(n + 1, sizeof(*g->tainted));
    g->asked = xcalloc(n + 1, sizeof(*g->asked));
    g->stamp = xcalloc(n + 1, sizeof(*g->stamp));
    g->stack = xcalloc(n + 1, sizeof(*g->stack));
    for (size_t m = 0; m < REACH_MEMOS; m++)
        g->memo[m].target = SIZE_MAX;

    for (size_t i = 0; i < n; i++) {
        size_t v = topo[i];
        const struct dsl_step *s = &g->steps[v];
        g->pos[v] = i;
        g->tainted[v] = g->unresolved[v];
        for (size_t d = 0; d < s->n_depends_on && !g->tainted[v]; d++)
            g->tainted[v] = g->tainted[s->deps[d]];
    }

    /* The forest: a depth-first search down from each step not yet visited when
     * its turn comes in topological order (only steps without dependencies can
     * be). pre[v] is v's number on the way down, post[v] one past the numbers of
     * its subtree, so w lies in v's subtree iff pre[v] <= pre[w] < post[v]. */
    size_t *next_edge = xcalloc(n + 1, sizeof(*next_edge));
    bool *seen = xcalloc(n + 1, sizeof(*seen));
    size_t counter = 0;
    for (size_t i = 0; i < n; i++) {
        size_t root = topo[i], sp = 0;
        if (seen[root])
            continue;
        seen[root] = true;
        g->pre[root] = counter++;
        next_edge[root] = g->dep_start[root];
        g->stack[sp++] = root;
        while (sp) {
            size_t v = g->stack[sp - 1];
            if (next_edge[v] == g->dep_start[v + 1]) {
                g->post[v] = counter;
                sp--;
                continue;
            }
            size_t w = g->dependents[next_edge[v]++];
            if (!seen[w]) {
                seen[w] = true;
                g->pre[w] = counter++;
                next_edge[w] = g->dep_start[w];
                g->stack[sp++] = w;
            }
        }
    }
    free(next_edge);
    free(seen);
}

/* The memo of step anc's descendants, made if needed. */
static const struct reach_memo *reach_memo_get(struct group *g, size_t anc)
{
    struct reach_memo *oldest = &g->memo[0];
    g->clock++;
    for (size_t m = 0; m < REACH_MEMOS; m++) {
        if (g->memo[m].target == anc) {
            g->memo[m].used = g->clock;
            return &g->memo[m];
        }
        if (g->memo[m].used < oldest->used)
            oldest = &g->memo[m];
    }
    if (!oldest->below)
        oldest->below = xmalloc(g->n + 1);
    memset(oldest->below, 0, g->n + 1);
    oldest->target = anc;
    oldest->used = g->clock;
    size_t sp = 0;
    g->stack[sp++] = anc;
    while (sp) {
        size_t v = g->stack[--sp];
        for (size_t e = g->dep_start[v]; e < g->dep_start[v + 1]; e++) {
            size_t w = g->dependents[e];
            if (!oldest->below[w]) {
                oldest->below[w] = 1;
                g->stack[sp++] = w;
            }
        }
    }
    return oldest;
}

/* Is step anc upstream of step desc (both in g, anc != desc, g acyclic)? Also true
 * when the answer is unknown because a step on the way has a dependency that did
 * not resolve. */
static bool is_upstream(struct group *g, size_t anc, size_t desc)
{
    const struct dsl_step *self = &g->steps[desc];
    if (g->tainted[desc])
        return true;
    for (size_t d = 0; d < self->n_depends_on; d++) {
        if (self->deps[d] == anc)
            return true;
    }
    if (g->pos[anc] > g->pos[desc])
        return false;
    if (g->pre[anc] <= g->pre[desc] && g->pre[desc] < g->post[anc])
        return true;
    if (g->asked[anc])
        return reach_memo_get(g, anc)->below[desc];
    g->asked[anc] = true;

    if (++g->epoch == 0) {
        memset(g->stamp, 0, g->n * sizeof(*g->stamp));
        g->epoch = 1;
    }
    size_t sp = 0;
    g->stack[sp++] = desc;
    g->stamp[desc] = g->epoch;
    while (sp) {
        const struct dsl_step *s = &g->steps[g->stack[--sp]];
        for (size_t d = 0; d < s->n_depends_on; d++) {
            size_t p = s->deps[d];
            if (p == anc)
                return true;
            /* what is placed before anc cannot be downstream of it */
            if (g->stamp[p] != g->epoch && g->pos[p] > g->pos[anc]) {
                g->stamp[p] = g->epoch;
                g->stack[sp++] = p;
            }
        }
    }
    return false;
}

static void group_release(struct group *g)
{
    index_release(&g->ix);
    free(g->unresolved);
    free(g->dep_start);
    free(g->dependents);
    free(g->pos);
    free(g->pre);
    free(g->post);
    free(g->tainted);
    free(g->asked);
    free(g->stamp);
    free(g->stack);
    for (size_t m = 0; m < REACH_MEMOS; m++)
        free(g->memo[m].below);
}

/* --- templates parsed once --------------------------------------------------------- */

/*
 * The same template text recurs in step after step ("{{ params.lr }}", "{{ run.id }}",
 * an image from defaults:). Parsing is pure, so the result of each distinct text
 * is kept (in P->scratch) and its references walked again for each step that uses
 * it. Texts that mention "steps" are left out: they name a step, are usually one of
 * a kind, and would only fill the cache.
 */
struct parsed_template {
    const char *src;
    size_t hash;
    int rc;                    /* of dsl_template_parse */
    struct dsl_template *t;    /* when rc is 0 */
    struct dsl_expr_error err; /* when it is not */
};

struct template_cache {
    struct parsed_template **slots; /* open addressing; capacity a power of two */
    size_t cap, n;
};

static void template_cache_release(struct template_cache *tc)
{
    free(tc->slots);
}

static struct parsed_template **template_cache_slot(const struct template_cache *tc,
                                                    const char *src, size_t hash)
{
    for (size_t i = hash & (tc->cap - 1);; i = (i + 1) & (tc->cap - 1)) {
        struct parsed_template *pt = tc->slots[i];
        if (!pt || (pt->hash == hash && !strcmp(pt->src, src)))
            return &tc->slots[i];
    }
}

static void template_cache_grow(struct template_cache *tc)
{
    struct parsed_template **old = tc->slots;
    size_t old_cap = tc->cap;
    tc->cap = old_cap ? old_cap * 2 : 64;
    tc->slots = xcalloc(tc->cap, sizeof(struct parsed_template *));
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i])
            *template_cache_slot(tc, old[i]->src, old[i]->hash) = old[i];
    }
    free(old);
}

/* --- references ------------------------------------------------------------------- */

struct ref_check {
    struct dsl_parse *P;
    struct arena *tmp; /* parse trees and candidate lists: emptied after each step */
    struct template_cache *templates;
    struct group *main, *exits;
    struct group *g; /* the group of the step being checked */
    size_t index;    /* of that step in g */
    struct dsl_pos base;
    const char *field;
    bool allow_item;
};

static void join_ref(struct strbuf *sb, const struct dsl_ref *r)
{
    for (size_t i = 0; i < r->n_parts; i++)
        strbuf_addf(sb, "%s%s", i ? "." : "", r->parts[i]);
}

static void ref_error(struct ref_check *c, const struct dsl_ref *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ref_error(struct ref_check *c, const struct dsl_ref *r, const char *fmt, ...)
{
    struct strbuf msg = STRBUF_INIT, ref = STRBUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    strbuf_vaddf(&msg, fmt, ap);
    va_end(ap);
    join_ref(&ref, r);
    struct dsl_pos pos = c->base;
    pos.col += (int)r->offset;
    dsl_parse_error(c->P, pos, "%s: '%s': %s", c->field, ref.buf, msg.buf);
    strbuf_release(&msg);
    strbuf_release(&ref);
}

/*
 * run.dir and attempt.dir are directories on the worker that runs the step: the
 * scheduler renders them as $(SLUICE_RUN_DIR) and $(SLUICE_ATTEMPT_DIR), which the
 * executor expands. They mean nothing where the scheduler itself evaluates.
 */
static int check_worker_dir(struct ref_check *c, const struct dsl_ref *r)
{
    if (!strcmp(c->field, "when") || !strcmp(c->field, "for_each"))
        ref_error(c, r, "%s.dir is a directory on the worker and is not known in %s", r->parts[0],
                  c->field);
    return 0;
}

static int check_ref(void *vctx, const struct dsl_ref *r)
{
    struct ref_check *c = vctx;
    struct dsl_dag *dag = c->P->dag;
    const struct dsl_step *self = &c->g->steps[c->index];
    const char *root = r->parts[0];

    if (!strcmp(root, "params")) {
        if (r->n_parts < 2) {
            ref_error(c, r, "name a parameter, e.g. params.<name>");
            return 0;
        }
        for (size_t i = 0; i < dag->n_params; i++) {
            const char *name = dag->params[i].name;
            if (!strcmp(name, r->parts[1])) {
                if (r->n_parts > 2 && dag->params[i].type != DSL_PARAM_OBJECT)
                    ref_error(c, r, "parameter '%s' is a %s, not an object", name,
                              dsl_param_type_name(dag->params[i].type));
                return 0;
            }
        }
        const char **names = arena_calloc(c->tmp, dag->n_params + 1, sizeof(*names));
        for (size_t i = 0; i < dag->n_params; i++)
            names[i] = dag->params[i].name;
        const char *hint = dsl_did_you_mean(r->parts[1], names, dag->n_params);
        if (hint)
            ref_error(c, r, "no parameter '%s' is declared (did you mean '%s'?)", r->parts[1],
                      hint);
        else
            ref_error(c, r, "no parameter '%s' is declared in params", r->parts[1]);
        return 0;
    }
    if (!strcmp(root, "run")) {
        static const char *const fields[] = {"id", "logical_time", "state", "dir"};
        if (r->n_parts == 2 && (!strcmp(r->parts[1], "id") || !strcmp(r->parts[1], "logical_time")))
            return 0;
        if (r->n_parts == 2 && !strcmp(r->parts[1], "dir"))
            return check_worker_dir(c, r);
        if (r->n_parts == 2 && !strcmp(r->parts[1], "state")) {
            if (!self->on_exit)
                ref_error(c, r, "run.state is only known to on_exit steps");
            return 0;
        }
        const char *hint = r->n_parts == 2 ? dsl_did_you_mean(r->parts[1], fields, 4) : NULL;
        if (hint)
            ref_error(c, r, "unknown run field (did you mean 'run.%s'?)", hint);
        else
            ref_error(c, r,
                      "unknown run field; use run.id, run.logical_time, run.state or run.dir");
        return 0;
    }
    if (!strcmp(root, "attempt")) {
        if (r->n_parts == 2 && !strcmp(r->parts[1], "dir"))
            return check_worker_dir(c, r);
        ref_error(c, r, "unknown attempt field; use attempt.dir");
        return 0;
    }
    if (!strcmp(root, "dag")) {
        if (!(r->n_parts == 2 && (!strcmp(r->parts[1], "name") || !strcmp(r->parts[1], "dir"))))
            ref_error(c, r, "unknown dag field; use dag.name or dag.dir");
        return 0;
    }
    if (!strcmp(root, "item")) {
        if (!c->allow_item) {
            if (self->for_each_json || self->for_each_expr)
                ref_error(c, r, "item is not known in %s, only in the fields of each instance",
                          c->field);
            else
                ref_error(c, r, "item is only defined in a step with for_each");
        }
        return 0;
    }
    if (!strcmp(root, "steps")) {
        if (r->n_parts < 2) {
            ref_error(c, r, "name a step, e.g. steps.<step>.outputs.params.<name>");
            return 0;
        }
        const char *name = r->parts[1];
        struct group *tg = c->main;
        long k = index_find(&c->main->ix, name);
        if (k < 0 && c->exits) {
            tg = c->exits;
            k = index_find(&c->exits->ix, name);
        }
        if (k < 0) {
            const char **names = step_names(c->tmp, c->main->steps, c->main->n);
            const char *hint = dsl_did_you_mean(name, names, c->main->n);
            if (hint)
                ref_error(c, r, "no step '%s' (did you mean '%s'?)", name, hint);
            else
                ref_error(c, r, "no step '%s' in this DAG", name);
            return 0;
        }
        const struct dsl_step *target = &tg->steps[k];
        bool shape_ok = false;
        if (r->n_parts == 3 && !strcmp(r->parts[2], "state")) {
            shape_ok = true;
        } else if (r->n_parts == 5 && !strcmp(r->parts[2], "outputs") &&
                   (!strcmp(r->parts[3], "params") || !strcmp(r->parts[3], "artifacts"))) {
            bool params = !strcmp(r->parts[3], "params");
            const struct dsl_output *outs =
                params ? target->output_params : target->output_artifacts;
            size_t n = params ? target->n_output_params : target->n_output_artifacts;
            for (size_t i = 0; i < n && !shape_ok; i++)
                shape_ok = !strcmp(outs[i].name, r->parts[4]);
            if (!shape_ok) {
                const char **names = arena_calloc(c->tmp, n + 1, sizeof(*names));
                for (size_t i = 0; i < n; i++)
                    names[i] = outs[i].name;
                const char *hint = dsl_did_you_mean(r->parts[4], names, n);
                if (hint)
                    ref_error(c, r, "step '%s' declares no output %s '%s' (did you mean '%s'?)",
                              name, r->parts[3], r->parts[4], hint);
                else
                    ref_error(c, r, "step '%s' declares no output %s '%s'", name, r->parts[3],
                              r->parts[4]);
                return 0;
            }
        }
        if (!shape_ok) {
            ref_error(c, r,
                      "expected steps.<step>.state, steps.<step>.outputs.params.<name> or "
                      "steps.<step>.outputs.artifacts.<name>");
            return 0;
        }
        if (target == self) {
            ref_error(c, r, "a step cannot refer to itself");
            return 0;
        }
        if (tg == c->exits && !self->on_exit) {
            ref_error(c, r, "'%s' is an on_exit step, which runs after every other step", name);
            return 0;
        }
        if (tg == c->g && c->g->acyclic && !is_upstream(c->g, (size_t)k, c->index))
            ref_error(c, r,
                      "step '%s' is not upstream of '%s': add it to depends_on (directly or "
                      "through another step)",
                      name, self->name);
        return 0;
    }
    static const char *const roots[] = {"params", "run", "attempt", "dag", "steps", "item"};
    const char *hint = dsl_did_you_mean(root, roots, 6);
    if (hint)
        ref_error(c, r, "unknown name '%s' (did you mean '%s'?)", root, hint);
    else
        ref_error(c, r,
                  "unknown name '%s': expressions can use params, run, attempt, dag, steps and "
                  "item",
                  root);
    return 0;
}

/* dsl_template_parse, through the cache. */
static int parse_template(struct ref_check *c, const char *src, struct dsl_template **t,
                          struct dsl_expr_error *err)
{
    struct template_cache *tc = c->templates;
    if (strstr(src, "steps"))
        return dsl_template_parse(t, c->tmp, src, err);
    if ((tc->n + 1) * 2 > tc->cap)
        template_cache_grow(tc);
    size_t hash = hash_str(src);
    struct parsed_template **slot = template_cache_slot(tc, src, hash);
    if (!*slot) {
        struct parsed_template *fresh = arena_alloc(c->P->scratch, sizeof(*fresh));
        *fresh = (struct parsed_template){.src = src, .hash = hash};
        fresh->rc = dsl_template_parse(&fresh->t, c->P->scratch, src, &fresh->err);
        *slot = fresh;
        tc->n++;
    }
    const struct parsed_template *pt = *slot;
    int rc = pt->rc;
    if (rc < 0)
        *err = pt->err;
    else
        *t = pt->t;
    return rc;
}

static void check_template(struct ref_check *c, const char *src, struct dsl_pos pos,
                           const char *field, bool allow_item)
{
    struct dsl_template *t = NULL;
    struct dsl_expr_error err;
    /* Most arguments are plain text. Without "{{" a template has no reference, and
     * the parser's one complaint would be its length, so it need not be parsed. */
    if (!strstr(src, "{{") &&
        strnlen(src, (size_t)DSL_TEMPLATE_MAX_LEN + 1) <= DSL_TEMPLATE_MAX_LEN)
        return;
    c->base = pos;
    c->field = field;
    c->allow_item = allow_item;
    if (parse_template(c, src, &t, &err) < 0) {
        pos.col += (int)err.offset;
        dsl_parse_error(c->P, pos, "%s: %s", field, err.msg);
        return;
    }
    dsl_template_each_ref(t, check_ref, c);
}

static bool has_dotdot(const char *path)
{
    for (const char *p = path; *p;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return true;
        if (!end)
            break;
        p = end + 1;
    }
    return false;
}

static void check_step(struct ref_check *c)
{
    struct dsl_step *s = &c->g->steps[c->index];
    struct dsl_step_marks *m = &c->g->marks[c->index];
    bool fan = s->for_each_json || s->for_each_expr;
    struct dsl_expr_error err;

    if (s->when) {
        c->base = m->when;
        c->field = "when";
        c->allow_item = false;
        struct dsl_expr *e;
        if (strstr(s->when, "{{")) {
            dsl_parse_error(c->P, m->when,
                            "when is an expression, not a template: write it without {{ }}, "
                            "e.g. when: steps.evaluate.outputs.params.accuracy >= 0.9");
        } else if (dsl_expr_parse(&e, c->tmp, s->when, &err) < 0) {
            struct dsl_pos pos = m->when;
            pos.col += (int)err.offset;
            dsl_parse_error(c->P, pos, "when: %s", err.msg);
        } else {
            dsl_expr_each_ref(e, check_ref, c);
        }
    }
    if (s->for_each_expr) {
        struct dsl_template *t;
        if (s->on_exit) {
            dsl_parse_error(c->P, m->for_each, "on_exit steps cannot use for_each");
        } else if (dsl_template_parse(&t, c->tmp, s->for_each_expr, &err) < 0) {
            struct dsl_pos pos = m->for_each;
            pos.col += (int)err.offset;
            dsl_parse_error(c->P, pos, "for_each: %s", err.msg);
        } else if (!dsl_template_single_expr(t)) {
            dsl_parse_error(c->P, m->for_each,
                            "for_each must be a list or a single \"{{ expression }}\" yielding a "
                            "list, e.g. \"{{ steps.split.outputs.params.shards }}\"");
        } else {
            c->base = m->for_each;
            c->field = "for_each";
            c->allow_item = false;
            dsl_template_each_ref(t, check_ref, c);
        }
    } else if (s->for_each_json && s->on_exit) {
        dsl_parse_error(c->P, m->for_each, "on_exit steps cannot use for_each");
    }
    if (s->image)
        check_template(c, s->image, m->image, "image", fan);
    if (s->workdir)
        check_template(c, s->workdir, m->workdir, "workdir", fan);
    for (size_t i = 0; i < s->n_command; i++)
        check_template(c, s->command[i], m->command[i], "command", fan);
    for (size_t i = 0; i < s->n_args; i++)
        check_template(c, s->args[i], m->args[i], "args", fan);
    for (size_t i = 0; i < s->n_env; i++) {
        if (s->env[i].value)
            check_template(c, s->env[i].value, m->env[i], "env", fan);
    }
    for (size_t i = 0; i < s->n_output_params; i++) {
        if (has_dotdot(s->output_params[i].path))
            dsl_parse_error(c->P, s->pos, "step '%s': output param '%s' path must not contain '..'",
                            s->name, s->output_params[i].name);
    }
    for (size_t i = 0; i < s->n_output_artifacts; i++) {
        if (has_dotdot(s->output_artifacts[i].path))
            dsl_parse_error(c->P, s->pos,
                            "step '%s': output artifact '%s' path must not contain '..'", s->name,
                            s->output_artifacts[i].name);
    }
    for (size_t i = 0; i < s->n_input_artifacts; i++) {
        const struct dsl_input_artifact *in = &s->input_artifacts[i];
        if (has_dotdot(in->path))
            dsl_parse_error(c->P, m->inputs[i], "input artifact '%s' path must not contain '..'",
                            in->name);
        if (strstr(in->from, "{{")) {
            struct dsl_template *t;
            const struct dsl_expr *single;
            if (dsl_template_parse(&t, c->tmp, in->from, &err) < 0) {
                struct dsl_pos pos = m->inputs[i];
                pos.col += (int)err.offset;
                dsl_parse_error(c->P, pos, "inputs.artifacts: %s", err.msg);
                continue;
            }
            single = dsl_template_single_expr(t);
            c->base = m->inputs[i];
            c->field = "inputs.artifacts";
            c->allow_item = fan;
            if (!single) {
                dsl_parse_error(c->P, m->inputs[i],
                                "input artifact '%s': from must be a single \"{{ "
                                "steps.<step>.outputs.artifacts.<name> }}\" or a URI",
                                in->name);
                continue;
            }
            dsl_template_each_ref(t, check_ref, c);
        } else if (strcmp(in->from, "git") && strncmp(in->from, "s3://", 5) &&
                   strncmp(in->from, "file://", 7) && strncmp(in->from, "http://", 7) &&
                   strncmp(in->from, "https://", 8)) {
            dsl_parse_error(c->P, m->inputs[i],
                            "input artifact '%s': from '%s' is neither \"{{ "
                            "steps.<step>.outputs.artifacts.<name> }}\", git (the DAG's "
                            "repository) nor an s3://, file://, http:// or https:// URI",
                            in->name, in->from);
        }
    }
}

void dsl_validate(struct dsl_parse *P)
{
    struct dsl_dag *dag = P->dag;
    struct group main = {.steps = dag->steps, .n = dag->n_steps, .marks = P->marks};
    struct group exits = {.steps = dag->on_exit, .n = dag->n_on_exit, .marks = P->exit_marks};
    size_t duplicates = 0;

    index_init(&main.ix, main.steps, main.n);
    index_init(&exits.ix, exits.steps, exits.n);
    for (size_t i = 0; i < main.n; i++) {
        long prev = index_add(&main.ix, i);
        if (prev >= 0) {
            dsl_parse_error(P, main.steps[i].pos, "duplicate step name '%s' (first at line %d)",
                            main.steps[i].name, main.steps[prev].pos.line);
            duplicates++;
        }
    }
    for (size_t i = 0; i < exits.n; i++) {
        long prev = index_add(&exits.ix, i);
        long other = index_find(&main.ix, exits.steps[i].name);
        if (prev >= 0 || other >= 0) {
            dsl_parse_error(P, exits.steps[i].pos, "duplicate step name '%s' (first at line %d)",
                            exits.steps[i].name,
                            prev >= 0 ? exits.steps[prev].pos.line : main.steps[other].pos.line);
            duplicates++;
        }
    }
    /* With two steps of one name, dependencies and references are ambiguous. */
    if (duplicates)
        goto cleanup;

    main.unresolved = xcalloc(main.n + 1, sizeof(bool));
    exits.unresolved = xcalloc(exits.n + 1, sizeof(bool));
    resolve_deps(P, &main, &exits, "step");
    resolve_deps(P, &exits, &main, "on_exit step");
    dag->topo = arena_calloc(P->mem, main.n + 1, sizeof(*dag->topo));
    size_t *exit_topo = xcalloc(exits.n + 1, sizeof(*exit_topo));
    order_steps(P, &main, dag->topo);
    order_steps(P, &exits, exit_topo);
    if (main.acyclic)
        reach_init(&main, dag->topo);
    if (exits.acyclic)
        reach_init(&exits, exit_topo);
    free(exit_topo);

    struct arena step_mem = ARENA_INIT;
    struct template_cache templates = {NULL, 0, 0};
    struct ref_check c = {
        .P = P, .tmp = &step_mem, .templates = &templates, .main = &main, .exits = &exits};
    for (size_t i = 0; i < main.n; i++) {
        c.g = &main;
        c.index = i;
        check_step(&c);
        arena_release(&step_mem);
    }
    for (size_t i = 0; i < exits.n; i++) {
        c.g = &exits;
        c.index = i;
        check_step(&c);
        arena_release(&step_mem);
    }
    template_cache_release(&templates);
cleanup:
    group_release(&main);
    group_release(&exits);
}
