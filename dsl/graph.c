/*
 * dsl/graph.c - a DAG as a picture: Graphviz dot or a Mermaid flowchart.
 *
 * Nodes carry the step name; a step with `when` shows its condition, a fan-out
 * step is drawn as a stack (dot: a 3-D box; Mermaid: a subroutine shape) and
 * GPU steps name their GPUs. on_exit steps sit in their own cluster, drawn
 * after the DAG with a dashed edge from every main step that has no dependents.
 * Mermaid node ids are s<index> (step names may hold '-', which Mermaid reads as
 * an edge), and labels are quoted.
 */
#include "dsl/dsl_int.h"

#include "common/xalloc.h"

#include <stdlib.h>
#include <string.h>

/* Appends s with the characters special to a quoted label escaped. */
static void add_label_text(struct strbuf *sb, const char *s, bool mermaid)
{
    for (; *s; s++) {
        if (*s == '"')
            strbuf_addstr(sb, mermaid ? "#quot;" : "\\\"");
        else if (*s == '\\' && !mermaid)
            strbuf_addstr(sb, "\\\\");
        else if (*s == '\n')
            strbuf_addstr(sb, mermaid ? " " : "\\n");
        else if (mermaid && (*s == '<' || *s == '>'))
            strbuf_addstr(sb, *s == '<' ? "#lt;" : "#gt;");
        else
            strbuf_addch(sb, *s);
    }
}

static void add_label(struct strbuf *sb, const struct dsl_step *s, bool mermaid)
{
    const char *nl = mermaid ? "<br/>" : "\\n";
    add_label_text(sb, s->name, mermaid);
    if (s->for_each_json || s->for_each_expr)
        strbuf_addf(sb, "%s(for each)", nl);
    if (s->resources.gpu)
        strbuf_addf(sb, "%sgpu: %lld", nl, (long long)s->resources.gpu);
    if (s->when) {
        strbuf_addf(sb, "%swhen: ", nl);
        add_label_text(sb, s->when, mermaid);
    }
}

/* Marks the main steps that no other main step depends on: the DAG's last steps. */
static bool *find_leaves(const struct dsl_dag *dag)
{
    bool *leaf = xcalloc(dag->n_steps + 1, sizeof(*leaf));
    for (size_t i = 0; i < dag->n_steps; i++)
        leaf[i] = true;
    for (size_t j = 0; j < dag->n_steps; j++) {
        for (size_t d = 0; d < dag->steps[j].n_depends_on; d++)
            leaf[dag->steps[j].deps[d]] = false;
    }
    return leaf;
}

static void graph_dot(struct strbuf *sb, const struct dsl_dag *dag)
{
    strbuf_addstr(sb, "digraph ");
    strbuf_add_json_string(sb, dag->name);
    strbuf_addstr(sb, " {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for (size_t i = 0; i < dag->n_steps; i++) {
        const struct dsl_step *s = &dag->steps[i];
        strbuf_addf(sb, "  \"%s\" [label=\"", s->name);
        add_label(sb, s, false);
        strbuf_addch(sb, '"');
        if (s->for_each_json || s->for_each_expr)
            strbuf_addstr(sb, ", shape=box3d");
        if (s->when)
            strbuf_addstr(sb, ", style=\"rounded,dashed\"");
        strbuf_addstr(sb, "];\n");
    }
    for (size_t i = 0; i < dag->n_steps; i++) {
        const struct dsl_step *s = &dag->steps[i];
        for (size_t d = 0; d < s->n_depends_on; d++)
            strbuf_addf(sb, "  \"%s\" -> \"%s\";\n", s->depends_on[d], s->name);
    }
    if (dag->n_on_exit) {
        strbuf_addstr(sb, "  subgraph cluster_on_exit {\n    label=\"on_exit\";\n"
                          "    style=dashed;\n");
        for (size_t i = 0; i < dag->n_on_exit; i++) {
            const struct dsl_step *s = &dag->on_exit[i];
            strbuf_addf(sb, "    \"%s\" [label=\"", s->name);
            add_label(sb, s, false);
            strbuf_addstr(sb, "\"];\n");
        }
        strbuf_addstr(sb, "  }\n");
        bool *leaf = find_leaves(dag);
        for (size_t i = 0; i < dag->n_on_exit; i++) {
            const struct dsl_step *s = &dag->on_exit[i];
            for (size_t d = 0; d < s->n_depends_on; d++)
                strbuf_addf(sb, "  \"%s\" -> \"%s\";\n", s->depends_on[d], s->name);
            if (s->n_depends_on)
                continue;
            for (size_t j = 0; j < dag->n_steps; j++) {
                if (leaf[j])
                    strbuf_addf(sb, "  \"%s\" -> \"%s\" [style=dashed];\n", dag->steps[j].name,
                                s->name);
            }
        }
        free(leaf);
    }
    strbuf_addstr(sb, "}\n");
}

static void graph_mermaid(struct strbuf *sb, const struct dsl_dag *dag)
{
    strbuf_addstr(sb, "flowchart LR\n");
    for (size_t i = 0; i < dag->n_steps; i++) {
        const struct dsl_step *s = &dag->steps[i];
        bool fan = s->for_each_json || s->for_each_expr;
        strbuf_addf(sb, "  s%zu%s\"", i, fan ? "[[" : (s->when ? "{{" : "["));
        add_label(sb, s, true);
        strbuf_addf(sb, "\"%s\n", fan ? "]]" : (s->when ? "}}" : "]"));
    }
    for (size_t i = 0; i < dag->n_steps; i++) {
        const struct dsl_step *s = &dag->steps[i];
        for (size_t d = 0; d < s->n_depends_on; d++)
            strbuf_addf(sb, "  s%zu --> s%zu\n", s->deps[d], i);
    }
    if (dag->n_on_exit) {
        strbuf_addstr(sb, "  subgraph on_exit\n");
        for (size_t i = 0; i < dag->n_on_exit; i++) {
            strbuf_addf(sb, "    x%zu[\"", i);
            add_label(sb, &dag->on_exit[i], true);
            strbuf_addstr(sb, "\"]\n");
        }
        strbuf_addstr(sb, "  end\n");
        bool *leaf = find_leaves(dag);
        for (size_t i = 0; i < dag->n_on_exit; i++) {
            const struct dsl_step *s = &dag->on_exit[i];
            for (size_t d = 0; d < s->n_depends_on; d++)
                strbuf_addf(sb, "  x%zu --> x%zu\n", s->deps[d], i);
            if (s->n_depends_on)
                continue;
            for (size_t j = 0; j < dag->n_steps; j++) {
                if (leaf[j])
                    strbuf_addf(sb, "  s%zu -.-> x%zu\n", j, i);
            }
        }
        free(leaf);
    }
}

void dsl_dag_graph(struct strbuf *sb, const struct dsl_dag *dag, enum dsl_graph_format format)
{
    if (format == DSL_GRAPH_DOT)
        graph_dot(sb, dag);
    else
        graph_mermaid(sb, dag);
}
