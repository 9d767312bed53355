/*
 * tests/unit/dsl/check_parse.c - the DAG language, driven by data files.
 *
 * Every tests/data/dsl/<case>.yaml is parsed. A case named err-* must fail and
 * print exactly <case>.errors; any other case must parse, print exactly
 * <case>.json (the normalized model), and that JSON must parse back into the
 * same model. With SLUICE_UPDATE_GOLDEN=1 the expected files are rewritten
 * instead (review the diff before committing). The remaining tests cover the
 * building blocks and the limits: quantities, names, sizes, alias bombs.
 */
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "dsl/dsl.h"
#include "tests/testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *diags_text(const struct dsl_diags *d)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    dsl_diags_print(d, f);
    fclose(f);
    return buf;
}

/* Parses buf as file; returns the model or NULL, and the diagnostics text. */
static struct dsl_dag *parse_text(const char *file, const char *buf, size_t len, char **errors)
{
    struct dsl_diags diags;
    struct dsl_dag *dag = NULL;
    dsl_diags_init(&diags);
    int rc = dsl_parse_buffer(&dag, file, buf, len, NULL, &diags);
    if (errors)
        *errors = diags_text(&diags);
    if (rc == 0)
        ck_assert_uint_eq(diags.n, 0);
    else
        ck_assert_uint_gt(diags.n, 0);
    dsl_diags_release(&diags);
    return dag;
}

static char *to_json(const struct dsl_dag *dag, bool pretty)
{
    struct strbuf sb = STRBUF_INIT;
    dsl_dag_to_json(&sb, dag, pretty);
    return strbuf_detach(&sb, NULL);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write \"%s\"", path);
    fputs(text, f);
    fclose(f);
}

/* The JSON of a model parses back into a model with the same JSON. */
static void assert_round_trip(const char *name, const char *json)
{
    char *errors = NULL;
    struct dsl_dag *again = parse_text(name, json, strlen(json), &errors);
    ck_assert_msg(again != NULL, "%s: normalized JSON does not parse back:\n%s", name, errors);
    char *json2 = to_json(again, true);
    ck_assert_msg(!strcmp(json, json2), "%s: round trip changed the model:\n%s\n---\n%s", name,
                  json, json2);
    char *compact = to_json(again, false);
    struct dsl_dag *third = parse_text(name, compact, strlen(compact), NULL);
    ck_assert_msg(third != NULL, "%s: compact JSON does not parse back", name);
    char *json3 = to_json(third, true);
    ck_assert_str_eq(json, json3);
    free(json3);
    dsl_dag_free(third);
    free(compact);
    free(json2);
    free(errors);
    dsl_dag_free(again);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

START_TEST(test_data_cases)
{
    char *dir = test_path("tests/data/dsl");
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "no directory \"%s\"", dir);
    char **names = NULL;
    size_t n = 0, alloc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len > 5 && !strcmp(de->d_name + len - 5, ".yaml")) {
            XGROW(names, alloc, n + 1);
            names[n++] = xstrndup(de->d_name, len - 5);
        }
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_str);
    ck_assert_uint_ge(n, 25);

    bool update = getenv("SLUICE_UPDATE_GOLDEN") != NULL;
    size_t failures = 0;
    for (size_t i = 0; i < n; i++) {
        char *yaml_path = xasprintf("%s/%s.yaml", dir, names[i]);
        char *label = xasprintf("%s.yaml", names[i]);
        size_t len;
        char *text = test_read_file(yaml_path, &len);
        char *errors = NULL;
        struct dsl_dag *dag = parse_text(label, text, len, &errors);
        bool expect_error = !strncmp(names[i], "err-", 4);
        char *expected_path =
            xasprintf("%s/%s.%s", dir, names[i], expect_error ? "errors" : "json");
        char *actual = NULL;
        if (expect_error) {
            if (dag) {
                fprintf(stderr, "%s: expected errors, but it parsed\n", label);
                failures++;
            }
            actual = xstrdup(errors);
        } else {
            if (!dag) {
                fprintf(stderr, "%s: expected a valid DAG, got:\n%s", label, errors);
                failures++;
            } else {
                actual = to_json(dag, true);
                assert_round_trip(label, actual);
            }
        }
        if (actual && update) {
            write_file(expected_path, actual);
        } else if (actual) {
            size_t elen;
            char *expected = test_read_file(expected_path, &elen);
            if (strcmp(expected, actual)) {
                fprintf(stderr, "%s: output differs from %s\n--- expected\n%s--- actual\n%s", label,
                        expected_path, expected, actual);
                failures++;
            }
            free(expected);
        }
        free(actual);
        free(expected_path);
        dsl_dag_free(dag);
        free(errors);
        free(text);
        free(label);
        free(yaml_path);
        free(names[i]);
    }
    free(names);
    free(dir);
    ck_assert_msg(failures == 0, "%zu DSL cases failed (see stderr)", failures);
}
END_TEST

START_TEST(test_example_dags_are_valid)
{
    static const char *const examples[] = {"dags/iris.yaml", "dags/finetune.yaml",
                                           "dags/etl-fanout.yaml"};
    for (size_t i = 0; i < 3; i++) {
        char *path = test_path(examples[i]);
        struct dsl_diags diags;
        struct dsl_dag *dag = NULL;
        dsl_diags_init(&diags);
        int rc = dsl_parse_file(&dag, path, NULL, &diags);
        if (rc < 0)
            dsl_diags_print(&diags, stderr);
        ck_assert_msg(rc == 0, "%s is invalid", examples[i]);
        char *json = to_json(dag, true);
        assert_round_trip(examples[i], json);
        free(json);
        dsl_dag_free(dag);
        dsl_diags_release(&diags);
        free(path);
    }
}
END_TEST

START_TEST(test_iris_model)
{
    char *path = test_path("dags/iris.yaml");
    struct dsl_diags diags;
    struct dsl_dag *dag = NULL;
    dsl_diags_init(&diags);
    ck_assert_int_eq(dsl_parse_file(&dag, path, NULL, &diags), 0);
    ck_assert_str_eq(dag->name, "iris");
    ck_assert_uint_eq(dag->n_steps, 4);
    const struct dsl_step *deploy = dsl_dag_find_step(dag, "deploy");
    ck_assert_ptr_nonnull(deploy);
    ck_assert_str_eq(deploy->when, "steps.evaluate.outputs.params.accuracy >= 0.9");
    ck_assert_int_eq(deploy->retries.limit, 0);                   /* its own value */
    ck_assert_int_eq(deploy->retries.policy, DSL_RETRY_ON_ERROR); /* merged from defaults */
    ck_assert_int_eq(deploy->timeout_ms, 600000);
    const struct dsl_step *train = dsl_dag_find_step(dag, "train");
    ck_assert_int_eq(train->resources.cpu_millis, 1000);
    ck_assert_int_eq(train->resources.memory_bytes, 512 * 1024 * 1024);
    ck_assert_uint_eq(train->n_labels, 1);
    /* topological order puts every step after its dependencies */
    size_t seen[4] = {0};
    for (size_t i = 0; i < dag->n_steps; i++) {
        const struct dsl_step *s = &dag->steps[dag->topo[i]];
        for (size_t d = 0; d < s->n_depends_on; d++)
            ck_assert_uint_eq(seen[s->deps[d]], 1);
        seen[dag->topo[i]] = 1;
    }
    ck_assert_ptr_null(dsl_dag_find_step(dag, "nope"));
    dsl_dag_free(dag);
    dsl_diags_release(&diags);
    free(path);
}
END_TEST

START_TEST(test_graph_output)
{
    char *path = test_path("dags/etl-fanout.yaml");
    struct dsl_diags diags;
    struct dsl_dag *dag = NULL;
    dsl_diags_init(&diags);
    ck_assert_int_eq(dsl_parse_file(&dag, path, NULL, &diags), 0);
    struct strbuf sb = STRBUF_INIT;
    dsl_dag_graph(&sb, dag, DSL_GRAPH_DOT);
    ck_assert_ptr_nonnull(strstr(sb.buf, "digraph \"etl-fanout\" {"));
    ck_assert_ptr_nonnull(strstr(sb.buf, "\"extract\" -> \"transform\";"));
    ck_assert_ptr_nonnull(strstr(sb.buf, "\"transform\" -> \"load\";"));
    ck_assert_ptr_nonnull(strstr(sb.buf, "shape=box3d"));
    ck_assert_ptr_nonnull(strstr(sb.buf, "\"load\" -> \"report\" [style=dashed];"));
    ck_assert_ptr_null(strstr(sb.buf, "\"extract\" -> \"report\""));
    strbuf_reset(&sb);
    dsl_dag_graph(&sb, dag, DSL_GRAPH_MERMAID);
    ck_assert_ptr_nonnull(strstr(sb.buf, "flowchart LR\n"));
    ck_assert_ptr_nonnull(strstr(sb.buf, "  s0 --> s1\n"));
    ck_assert_ptr_nonnull(strstr(sb.buf, "  s1 --> s2\n"));
    ck_assert_ptr_nonnull(strstr(sb.buf, "s1[[\"transform<br/>(for each)\"]]"));
    ck_assert_ptr_nonnull(strstr(sb.buf, "  s2 -.-> x0\n"));
    strbuf_release(&sb);
    dsl_dag_free(dag);
    dsl_diags_release(&diags);
    free(path);
}
END_TEST

START_TEST(test_quantities)
{
    static const struct {
        const char *in;
        int64_t milli;
    } ok[] = {
        {"500m", 500},
        {"2", 2000},
        {"1.5", 1500},
        {"0.1", 100},
        {"2Gi", 2147483648000},
        {"512Mi", 536870912000},
        {"1k", 1000000},
        {"1e3", 1000000},
        {"1E-3", 1},
        {"128974848", 128974848000},
        {"+1", 1000},
        {"1.0001m", 2}, /* rounded up */
        {"0", 0},
        {"1Ki", 1024000},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = -1;
        ck_assert_msg(dsl_quantity_parse(&v, ok[i].in) == 0, "'%s' refused", ok[i].in);
        ck_assert_msg(v == ok[i].milli, "'%s' gave %lld", ok[i].in, (long long)v);
    }
    static const char *const bad[] = {"", "-1", "m", "1x", "1GB", "1.2.3", "Gi", "1e", "1 Gi"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = 42;
        ck_assert_msg(dsl_quantity_parse(&v, bad[i]) == SL_EINVAL, "'%s' accepted", bad[i]);
        ck_assert_int_eq(v, 42);
    }
    int64_t v;
    ck_assert_int_eq(dsl_quantity_parse(&v, "99999999999999999999"), SL_ERANGE);
    ck_assert_int_eq(dsl_quantity_parse(&v, "9Ei"), SL_ERANGE);
    ck_assert_int_eq(dsl_quantity_parse(&v, "1e40"), SL_ERANGE);
}
END_TEST

START_TEST(test_dns_labels)
{
    ck_assert(dsl_is_dns_label("a"));
    ck_assert(dsl_is_dns_label("etl-fanout"));
    ck_assert(dsl_is_dns_label("0abc9"));
    ck_assert(!dsl_is_dns_label(""));
    ck_assert(!dsl_is_dns_label("-a"));
    ck_assert(!dsl_is_dns_label("a-"));
    ck_assert(!dsl_is_dns_label("A"));
    ck_assert(!dsl_is_dns_label("a_b"));
    ck_assert(!dsl_is_dns_label("a.b"));
    char long_name[65];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    ck_assert(!dsl_is_dns_label(long_name));
    long_name[63] = '\0';
    ck_assert(dsl_is_dns_label(long_name));
}
END_TEST

START_TEST(test_param_check)
{
    struct dsl_param p = {.name = "n", .type = DSL_PARAM_INTEGER};
    char err[160];
    cJSON *v = cJSON_Parse("3");
    ck_assert_int_eq(dsl_param_check(&p, v, err, sizeof(err)), 0);
    cJSON_Delete(v);
    v = cJSON_Parse("3.5");
    ck_assert_int_eq(dsl_param_check(&p, v, err, sizeof(err)), SL_ETYPE);
    ck_assert_str_eq(err, "expected integer, got number");
    cJSON_Delete(v);
    v = cJSON_Parse("\"3\"");
    ck_assert_int_eq(dsl_param_check(&p, v, err, sizeof(err)), SL_ETYPE);
    ck_assert_str_eq(err, "expected integer, got string");
    cJSON_Delete(v);
    p.enum_json = "[1,3]";
    v = cJSON_Parse("2");
    ck_assert_int_eq(dsl_param_check(&p, v, err, sizeof(err)), SL_EINVAL);
    ck_assert_str_eq(err, "2 is not one of [1,3]");
    cJSON_Delete(v);
    ck_assert_int_eq(dsl_param_check(&p, NULL, err, sizeof(err)), SL_EINVAL);
    struct dsl_param o = {.name = "o", .type = DSL_PARAM_OBJECT};
    v = cJSON_Parse("[]");
    ck_assert_int_eq(dsl_param_check(&o, v, err, sizeof(err)), SL_ETYPE);
    ck_assert_str_eq(err, "expected object, got array");
    cJSON_Delete(v);
}
END_TEST

static void assert_single_error(const char *text, size_t len, const char *needle)
{
    char *errors = NULL;
    struct dsl_dag *dag = parse_text("t.yaml", text, len, &errors);
    ck_assert_ptr_null(dag);
    ck_assert_msg(strstr(errors, needle) != NULL, "expected \"%s\" in:\n%s", needle, errors);
    free(errors);
}

START_TEST(test_size_limit)
{
    struct strbuf sb = STRBUF_INIT;
    strbuf_addstr(&sb, "name: big\nsteps:\n  - name: a\n    command: [echo]\n");
    while (sb.len <= DSL_DEFAULT_MAX_BYTES)
        strbuf_addstr(&sb, "# padding padding padding padding padding padding padding\n");
    assert_single_error(sb.buf, sb.len, "over the limit of 1048576 bytes");

    struct dsl_diags diags;
    struct dsl_dag *dag = NULL;
    struct dsl_options opts = {.max_bytes = 10 << 20};
    dsl_diags_init(&diags);
    ck_assert_int_eq(dsl_parse_buffer(&dag, "t.yaml", sb.buf, sb.len, &opts, &diags), 0);
    dsl_dag_free(dag);
    opts.max_bytes = 16;
    ck_assert_int_eq(dsl_parse_buffer(&dag, "t.yaml", sb.buf, sb.len, &opts, &diags), SL_ETOOBIG);
    dsl_diags_release(&diags);
    strbuf_release(&sb);
}
END_TEST

START_TEST(test_hostile_documents)
{
    /* a billion laughs: nine levels of nine aliases */
    struct strbuf sb = STRBUF_INIT;
    strbuf_addstr(&sb, "name: laughs\nx0: &a0 [lol]\n");
    for (int i = 1; i < 10; i++) {
        strbuf_addf(&sb, "x%d: &a%d [", i, i);
        for (int j = 0; j < 9; j++)
            strbuf_addf(&sb, "%s*a%d", j ? ", " : "", i - 1);
        strbuf_addstr(&sb, "]\n");
    }
    strbuf_addstr(&sb, "params:\n  p: {type: array, default: *a9}\n"
                       "steps: [{name: a, command: [echo]}]\n");
    assert_single_error(sb.buf, sb.len, "document expands to more than");
    strbuf_release(&sb);

    /* a recursive alias */
    const char *rec = "name: rec\nparams:\n  p: {type: array, default: &r [*r]}\n"
                      "steps: [{name: a, command: [echo]}]\n";
    char *errors = NULL;
    struct dsl_dag *dag = parse_text("t.yaml", rec, strlen(rec), &errors);
    ck_assert_ptr_null(dag);
    free(errors);

    /* deep nesting */
    strbuf_addstr(&sb, "name: deep\nparams:\n  p: {type: array, default: ");
    for (int i = 0; i < 200; i++)
        strbuf_addch(&sb, '[');
    for (int i = 0; i < 200; i++)
        strbuf_addch(&sb, ']');
    strbuf_addstr(&sb, "}\nsteps: [{name: a, command: [echo]}]\n");
    assert_single_error(sb.buf, sb.len, "nested more than 64 levels deep");
    strbuf_release(&sb);

    /* NUL bytes and binary junk */
    static const char nul[] = "name: a\0b\nsteps: []\n";
    assert_single_error(nul, sizeof(nul) - 1, "NUL byte");
    static const char junk[] = "\xff\xfe\x01\x02{{[[";
    errors = NULL;
    ck_assert_ptr_null(parse_text("t.yaml", junk, sizeof(junk) - 1, &errors));
    ck_assert_ptr_nonnull(strstr(errors, "t.yaml:"));
    free(errors);
    static const char bad_utf8[] = "name: x\nsteps: [{name: a, command: [echo, \"\xc3\x28\"]}]\n";
    assert_single_error(bad_utf8, sizeof(bad_utf8) - 1,
                        "t.yaml:2:37: YAML syntax error: invalid trailing UTF-8 octet");
}
END_TEST

START_TEST(test_parse_file_errors)
{
    struct dsl_diags diags;
    struct dsl_dag *dag = NULL;
    dsl_diags_init(&diags);
    ck_assert_int_eq(dsl_parse_file(&dag, "/nonexistent/x.yaml", NULL, &diags), SL_ENOENT);
    ck_assert_int_eq(dsl_parse_file(&dag, "/tmp", NULL, &diags), SL_EINVAL);
    ck_assert_ptr_null(dag);
    char *text = diags_text(&diags);
    ck_assert_str_eq(text, "/nonexistent/x.yaml: no such file\n/tmp: is a directory, not a DAG "
                           "file\n");
    free(text);
    dsl_diags_release(&diags);
}
END_TEST

START_TEST(test_error_cap)
{
    struct strbuf sb = STRBUF_INIT;
    strbuf_addstr(&sb, "name: many\nsteps:\n");
    for (int i = 0; i < 150; i++)
        strbuf_addf(&sb, "  - {name: s%d, command: [echo], bogus: 1}\n", i);
    struct dsl_diags diags;
    struct dsl_dag *dag = NULL;
    dsl_diags_init(&diags);
    ck_assert_int_eq(dsl_parse_buffer(&dag, "t.yaml", sb.buf, sb.len, NULL, &diags), SL_EINVALID);
    ck_assert_uint_eq(diags.n, DSL_MAX_DIAGS);
    ck_assert_uint_eq(diags.dropped, 50);
    char *text = diags_text(&diags);
    ck_assert_ptr_nonnull(strstr(text, "t.yaml: 50 more errors not shown\n"));
    free(text);
    dsl_diags_release(&diags);
    strbuf_release(&sb);
}
END_TEST

Suite *suite_dsl_parse(void)
{
    Suite *s = suite_create("dsl_parse");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_data_cases);
    tcase_add_test(tc, test_example_dags_are_valid);
    tcase_add_test(tc, test_iris_model);
    tcase_add_test(tc, test_graph_output);
    tcase_add_test(tc, test_quantities);
    tcase_add_test(tc, test_dns_labels);
    tcase_add_test(tc, test_param_check);
    tcase_add_test(tc, test_size_limit);
    tcase_add_test(tc, test_hostile_documents);
    tcase_add_test(tc, test_parse_file_errors);
    tcase_add_test(tc, test_error_cap);
    suite_add_tcase(s, tc);
    return s;
}
