/*
 * tests/integration/check_cli.c - the sluice binary's dag subcommands, run as a user would.
 *
 * Runs the sanitizer build of bin/sluice (test_sluice_bin()) on the example DAGs
 * and on broken copies, checking exit codes, stdout and stderr.
 */
#include "common/xalloc.h"
#include "tests/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Runs sluice with up to 6 arguments; returns the exit status. */
static int run_sluice(char **out, char **err, const char *a1, const char *a2, const char *a3,
                      const char *a4, const char *a5, const char *a6)
{
    char *argv[8] = {(char *)test_sluice_bin(),
                     (char *)a1,
                     (char *)a2,
                     (char *)a3,
                     (char *)a4,
                     (char *)a5,
                     (char *)a6,
                     NULL};
    return test_run(argv, out, err);
}

static char *write_temp(const char *dir, const char *name, const char *text)
{
    char *path = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

START_TEST(test_validate_examples)
{
    char *dags = test_path("dags");
    char *out, *err;
    int rc = run_sluice(&out, &err, "dag", "validate", dags, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "exit %d, stderr:\n%s", rc, err);
    ck_assert_ptr_nonnull(strstr(out, "iris.yaml: ok (dag 'iris', 4 steps, schedule @daily)"));
    ck_assert_ptr_nonnull(strstr(out, "etl-fanout.yaml: ok (dag 'etl-fanout'"));
    ck_assert_ptr_nonnull(strstr(out, "finetune.yaml: ok (dag 'finetune', 3 steps)"));
    ck_assert_str_eq(err, "");
    free(out);
    free(err);
    free(dags);
}
END_TEST

START_TEST(test_validate_reports_every_error)
{
    char dir[] = "/tmp/sluice-cli-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *good = write_temp(dir, "good.yaml", "name: good\nsteps: [{name: a, command: [true]}]\n");
    char *bad = write_temp(dir, "bad.yml",
                           "name: bad\nsteps:\n  - name: a\n    command: [echo]\n"
                           "    timeout: 30\n  - name: b\n    depends_on: [aa]\n"
                           "    command: [echo, \"{{ params.x }}\"]\n");
    char *dup = write_temp(dir, "dup.yaml", "name: good\nsteps: [{name: a, command: [true]}]\n");
    char *out, *err;
    int rc = run_sluice(&out, &err, "dag", "validate", dir, NULL, NULL, NULL);
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_nonnull(strstr(err, "bad.yml:5:14: timeout: '30' needs a unit"));
    ck_assert_ptr_nonnull(
        strstr(err, "bad.yml:7:18: step 'b' depends on unknown step 'aa' (did you mean 'a'?)"));
    ck_assert_ptr_nonnull(strstr(err, "bad.yml:8:25: command: 'params.x': no parameter 'x'"));
    ck_assert_ptr_nonnull(strstr(err, "DAG name 'good' is already declared by"));
    ck_assert_ptr_nonnull(strstr(err, "2 of 3 files invalid"));
    free(out);
    free(err);

    /* one file at a time: the good one passes */
    rc = run_sluice(&out, &err, "dag", "validate", good, NULL, NULL, NULL);
    ck_assert_int_eq(rc, 0);
    free(out);
    free(err);

    /* the size limit is configurable */
    rc = run_sluice(&out, &err, "dag", "validate", "--max-bytes", "10", good, NULL);
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_nonnull(strstr(err, "file is over the limit of 10 bytes"));
    free(out);
    free(err);

    rc = run_sluice(&out, &err, "dag", "validate", "/nonexistent/x.yaml", NULL, NULL, NULL);
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/x.yaml: no such file"));
    free(out);
    free(err);

    unlink(good);
    unlink(bad);
    unlink(dup);
    rmdir(dir);
    free(good);
    free(bad);
    free(dup);
}
END_TEST

START_TEST(test_graph_and_show)
{
    char *iris = test_path("dags/iris.yaml");
    char *out, *err;
    int rc = run_sluice(&out, &err, "dag", "graph", iris, "--format", "dot", NULL);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(strstr(out, "digraph \"iris\""));
    ck_assert_ptr_nonnull(strstr(out, "\"evaluate\" -> \"deploy\";"));
    free(out);
    free(err);

    rc = run_sluice(&out, &err, "dag", "graph", iris, "--format", "mermaid", NULL);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(strstr(out, "flowchart LR"));
    ck_assert_ptr_nonnull(strstr(out, "s2 --> s3"));
    free(out);
    free(err);

    rc = run_sluice(&out, &err, "dag", "graph", iris, "--format", "svg", NULL);
    ck_assert_int_eq(rc, 2);
    ck_assert_ptr_nonnull(strstr(err, "unknown format 'svg'"));
    free(out);
    free(err);

    rc = run_sluice(&out, &err, "dag", "show", iris, NULL, NULL, NULL);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(strstr(out, "\"name\": \"iris\""));
    ck_assert_ptr_nonnull(
        strstr(out, "\"when\": \"steps.evaluate.outputs.params.accuracy >= 0.9\""));
    free(out);
    free(err);

    rc = run_sluice(&out, &err, "dag", "show", iris, "--compact", NULL, NULL);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_null(strstr(out, "\n  "));
    ck_assert(!strncmp(out, "{\"name\":\"iris\"", 14));
    free(out);
    free(err);
    free(iris);
}
END_TEST

START_TEST(test_usage_errors)
{
    char *out, *err;
    ck_assert_int_eq(run_sluice(&out, &err, NULL, NULL, NULL, NULL, NULL, NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "usage: sluice"));
    free(out);
    free(err);
    ck_assert_int_eq(run_sluice(&out, &err, "frobnicate", NULL, NULL, NULL, NULL, NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "unknown command 'frobnicate'"));
    free(out);
    free(err);
    ck_assert_int_eq(run_sluice(&out, &err, "dag", "explode", NULL, NULL, NULL, NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "unknown dag command 'explode'"));
    free(out);
    free(err);
    ck_assert_int_eq(run_sluice(&out, &err, "dag", "validate", "--bogus", NULL, NULL, NULL), 2);
    free(out);
    free(err);
    ck_assert_int_eq(run_sluice(&out, &err, "dag", "show", NULL, NULL, NULL, NULL), 2);
    free(out);
    free(err);
    ck_assert_int_eq(run_sluice(&out, &err, "--help", NULL, NULL, NULL, NULL, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "dag"));
    free(out);
    free(err);
}
END_TEST

/* Bad input to the daemons and dag test: a clear error, exit 2, nothing started. */
START_TEST(test_run_commands_refuse_bad_input)
{
    char dir[] = "/tmp/sluice-cli-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *iris = test_path("dags/iris.yaml");
    char *out, *err;
    /* every bad parameter at once, before any server starts */
    int rc = run_sluice(&out, &err, "dag", "test", iris, "-p", "n_estimators=many", NULL);
    ck_assert_msg(rc == 2, "exit %d, stderr:\n%s", rc, err);
    ck_assert_msg(strstr(err, "n_estimators") && strstr(err, "integer"), "%s", err);
    ck_assert_ptr_null(strstr(err, "starting PostgreSQL"));
    free(out);
    free(err);
    rc = run_sluice(&out, &err, "dag", "test", iris, "-p", "colour=red", NULL);
    ck_assert_msg(rc == 2 && strstr(err, "colour"), "exit %d, stderr:\n%s", rc, err);
    free(out);
    free(err);
    rc = run_sluice(&out, &err, "dag", "test", iris, "-p", "=x", NULL);
    ck_assert_msg(rc == 2 && strstr(err, "NAME=VALUE"), "exit %d, stderr:\n%s", rc, err);
    free(out);
    free(err);
    /* an invalid DAG: its errors with their positions */
    char *bad = write_temp(dir, "bad.yaml", "name: bad\nsteps:\n  - {name: a, depends_on: [zz]}\n");
    rc = run_sluice(&out, &err, "dag", "test", bad, NULL, NULL, NULL);
    ck_assert_msg(rc == 2 && strstr(err, "bad.yaml:3:"), "exit %d, stderr:\n%s", rc, err);
    free(out);
    free(err);
    /* a configuration with a typo, and one without servers */
    char *typo = write_temp(dir, "typo.yaml", "scheduler:\n  batch_sise: 10\n");
    rc = run_sluice(&out, &err, "scheduler", "--config", typo, NULL, NULL, NULL);
    ck_assert_msg(rc == 2 && strstr(err, "typo.yaml:2:3: unknown key 'scheduler.batch_sise'"),
                  "exit %d, stderr:\n%s", rc, err);
    free(out);
    free(err);
    char *empty = write_temp(dir, "empty.yaml", "");
    rc = run_sluice(&out, &err, "scheduler", "--config", empty, NULL, NULL, NULL);
    ck_assert_msg(rc == 2 && strstr(err, "needs database_url and redis_url"),
                  "exit %d, stderr:\n%s", rc, err);
    free(out);
    free(err);
    rc = run_sluice(&out, &err, "worker", "--config", empty, "--slots", "0", NULL);
    ck_assert_msg(rc == 2, "exit %d, stderr:\n%s", rc, err);
    free(out);
    free(err);
    char *cmd = xasprintf("rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);
    free(bad);
    free(typo);
    free(empty);
    free(iris);
}
END_TEST

/* sluice config check: what every role would refuse at start, without starting anything. */
START_TEST(test_config_check)
{
    char dir[] = "/tmp/sluice-cli-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    struct {
        const char *text;
        int rc;
        const char *says;
    } cases[] = {
        {"worker:\n  slots: 3\ngit:\n  url: https://git.example/dags.git\n  path: dags\n", 0,
         ": ok"},
        {"artifacts:\n  type: s3\n", 2, "c.yaml:2:3: unknown key 'artifacts.type'"},
        {"git:\n  url: https://git.example/dags.git\n  ref: 'bad..ref'\n", 2, "git.ref 'bad..ref'"},
        {"git:\n  url: git@git.example:org/dags.git\n", 2, "known_hosts"},
        {"git:\n  url: file:///srv/dags.git\n  path: ../up\n", 2, "git.path"},
        {"worker:\n  executor: kubernetes\nkubernetes:\n  helper: sideways\n", 2, "helper"},
        {"git:\n  interval: soon\n", 2, "git.interval must be a duration"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *path = write_temp(dir, "c.yaml", cases[i].text);
        char *out, *err;
        int rc = run_sluice(&out, &err, "config", "check", "--config", path, NULL, NULL);
        ck_assert_msg(rc == cases[i].rc, "case %zu: exit %d, stderr:\n%s", i, rc, err);
        ck_assert_msg(strstr(rc ? err : out, cases[i].says), "case %zu: %s%s", i, out, err);
        free(out);
        free(err);
        free(path);
    }
    char *cmd = xasprintf("rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);
}
END_TEST

Suite *suite_integration_cli(void)
{
    Suite *s = suite_create("integration_cli");
    TCase *tc = tcase_create("dag");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_validate_examples);
    tcase_add_test(tc, test_validate_reports_every_error);
    tcase_add_test(tc, test_graph_and_show);
    tcase_add_test(tc, test_usage_errors);
    tcase_add_test(tc, test_run_commands_refuse_bad_input);
    tcase_add_test(tc, test_config_check);
    suite_add_tcase(s, tc);
    return s;
}
