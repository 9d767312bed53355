/*
 * cli/cmd_dag.c - sluice dag validate|graph|show: the DAG language from the shell.
 *
 *   sluice dag validate [--max-bytes N] PATH...   files or directories (*.yaml, *.yml)
 *   sluice dag graph FILE [--format dot|mermaid]
 *   sluice dag show FILE [--compact]
 *   sluice dag test FILE [-p NAME=VALUE ...]      one run, end to end (cli/cmd_run.c)
 *
 * validate prints one line per valid file on stdout and every diagnostic, as
 * file:line:column: message, on stderr; it exits 1 if any file is invalid or
 * two files declare the same DAG name.
 */
#include "cli/cli.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "dsl/dsl.h"
#include "scheduler/registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void dag_usage(FILE *out)
{
    fprintf(out, "usage: sluice dag validate [--max-bytes N] PATH...\n"
                 "       sluice dag graph FILE [--format dot|mermaid]\n"
                 "       sluice dag show FILE [--compact]\n"
                 "       sluice dag test FILE [-p NAME=VALUE ...] [--config FILE] [--verbose]\n");
}

struct path_list {
    char **v;
    size_t n, alloc;
};

static void path_list_add(struct path_list *l, char *path)
{
    XGROW(l->v, l->alloc, l->n + 1);
    l->v[l->n++] = path;
}

static int parse_size(size_t *out, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v == 0)
        return SL_EINVAL;
    *out = (size_t)v;
    return 0;
}

static int dag_validate(int argc, char **argv)
{
    struct dsl_options opts = {0};
    struct path_list files = {0};
    int status = 0;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--max-bytes")) {
            if (i + 1 >= argc || parse_size(&opts.max_bytes, argv[i + 1]) < 0) {
                fprintf(stderr, "error: --max-bytes needs a positive number of bytes\n");
                status = 2;
                goto cleanup;
            }
            i++;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "error: unknown option '%s'\n", argv[i]);
            dag_usage(stderr);
            status = 2;
            goto cleanup;
        }
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            char **found;
            size_t n_found;
            struct strbuf err = STRBUF_INIT;
            if (registry_list_dir(&found, &n_found, argv[i], &err) < 0) {
                fprintf(stderr, "error: %s\n", err.buf);
                status = 1;
                n_found = 0;
                found = NULL;
            }
            strbuf_release(&err);
            for (size_t j = 0; j < n_found; j++)
                path_list_add(&files, found[j]);
            free(found);
            if (n_found == 0 && status == 0)
                fprintf(stderr, "warning: no *.yaml or *.yml files under '%s'\n", argv[i]);
        } else {
            path_list_add(&files, xstrdup(argv[i]));
        }
    }
    if (files.n == 0 && status == 0) {
        dag_usage(stderr);
        status = 2;
        goto cleanup;
    }

    char **names = xcalloc(files.n + 1, sizeof(*names));
    size_t valid = 0;
    for (size_t i = 0; i < files.n; i++) {
        struct dsl_diags diags;
        struct dsl_dag *dag = NULL;
        dsl_diags_init(&diags);
        if (dsl_parse_file(&dag, files.v[i], &opts, &diags) < 0) {
            dsl_diags_print(&diags, stderr);
            status = 1;
        } else {
            size_t j;
            for (j = 0; j < i; j++) {
                if (names[j] && !strcmp(names[j], dag->name))
                    break;
            }
            if (j < i) {
                fprintf(stderr, "%s: DAG name '%s' is already declared by '%s'\n", files.v[i],
                        dag->name, files.v[j]);
                status = 1;
            } else {
                names[i] = xstrdup(dag->name);
                printf("%s: ok (dag '%s', %zu steps%s%s)\n", files.v[i], dag->name,
                       dag->n_steps + dag->n_on_exit, dag->schedule ? ", schedule " : "",
                       dag->schedule ? dag->schedule : "");
                valid++;
            }
            dsl_dag_free(dag);
        }
        dsl_diags_release(&diags);
    }
    if (status)
        fprintf(stderr, "%zu of %zu files invalid\n", files.n - valid, files.n);
    for (size_t i = 0; i < files.n; i++)
        free(names[i]);
    free(names);
cleanup:
    for (size_t i = 0; i < files.n; i++)
        free(files.v[i]);
    free(files.v);
    return status;
}

/* Parses the one FILE argument of graph/show; prints diagnostics on failure. */
static struct dsl_dag *load_one(const char *path)
{
    struct dsl_diags diags;
    struct dsl_dag *dag = NULL;
    dsl_diags_init(&diags);
    if (dsl_parse_file(&dag, path, NULL, &diags) < 0)
        dsl_diags_print(&diags, stderr);
    dsl_diags_release(&diags);
    return dag;
}

static int dag_graph(int argc, char **argv)
{
    const char *file = NULL;
    enum dsl_graph_format format = DSL_GRAPH_DOT;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--format") && i + 1 < argc) {
            const char *f = argv[++i];
            if (!strcmp(f, "dot")) {
                format = DSL_GRAPH_DOT;
            } else if (!strcmp(f, "mermaid")) {
                format = DSL_GRAPH_MERMAID;
            } else {
                fprintf(stderr, "error: unknown format '%s' (use dot or mermaid)\n", f);
                return 2;
            }
        } else if (argv[i][0] == '-' || file) {
            dag_usage(stderr);
            return 2;
        } else {
            file = argv[i];
        }
    }
    if (!file) {
        dag_usage(stderr);
        return 2;
    }
    struct dsl_dag *dag = load_one(file);
    if (!dag)
        return 1;
    struct strbuf sb = STRBUF_INIT;
    dsl_dag_graph(&sb, dag, format);
    fwrite(sb.buf, 1, sb.len, stdout);
    strbuf_release(&sb);
    dsl_dag_free(dag);
    return 0;
}

static int dag_show(int argc, char **argv)
{
    const char *file = NULL;
    bool pretty = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--compact")) {
            pretty = false;
        } else if (argv[i][0] == '-' || file) {
            dag_usage(stderr);
            return 2;
        } else {
            file = argv[i];
        }
    }
    if (!file) {
        dag_usage(stderr);
        return 2;
    }
    struct dsl_dag *dag = load_one(file);
    if (!dag)
        return 1;
    struct strbuf sb = STRBUF_INIT;
    dsl_dag_to_json(&sb, dag, pretty);
    if (!pretty)
        strbuf_addch(&sb, '\n');
    fwrite(sb.buf, 1, sb.len, stdout);
    strbuf_release(&sb);
    dsl_dag_free(dag);
    return 0;
}

int cmd_dag(int argc, char **argv)
{
    if (argc < 2) {
        dag_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "validate"))
        return dag_validate(argc - 1, argv + 1);
    if (!strcmp(argv[1], "graph"))
        return dag_graph(argc - 1, argv + 1);
    if (!strcmp(argv[1], "show"))
        return dag_show(argc - 1, argv + 1);
    if (!strcmp(argv[1], "test"))
        return cmd_dag_test(argc - 1, argv + 1);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        dag_usage(stdout);
        return 0;
    }
    fprintf(stderr, "error: unknown dag command '%s'\n", argv[1]);
    dag_usage(stderr);
    return 2;
}
