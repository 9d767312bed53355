/*
 * tests/integration/check_examples.c - the example DAGs' scripts really run.
 *
 * Until the engine executes DAGs end to end, this runs each example's steps by
 * hand, in dependency order, in a scratch directory, with the same arguments
 * the DAG gives them (templates filled with the defaults), using Debian's
 * /usr/bin/python3 and its scikit-learn and numpy. It checks the outputs the
 * DAGs declare: iris's accuracy, finetune's loss and accuracy, the fan-in of
 * etl-fanout.
 */
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "tests/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char scratch[64];

static void run_py(const char *script, const char *const *args)
{
    char *argv[24];
    size_t n = 0;
    char cwd[4096];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    char *rel = test_path(script);
    /* the script runs from the scratch directory: make its path absolute */
    char *path = rel[0] == '/' ? xstrdup(rel) : xasprintf("%s/%s", cwd, rel);
    free(rel);
    argv[n++] = "/usr/bin/python3";
    argv[n++] = path;
    for (; *args && n < 23; args++)
        argv[n++] = (char *)*args;
    argv[n] = NULL;
    char *out = NULL, *err = NULL;
    ck_assert_int_eq(chdir(scratch), 0);
    int rc = test_run(argv, &out, &err);
    ck_assert_int_eq(chdir(cwd), 0);
    ck_assert_msg(rc == 0, "%s exited %d:\n%s%s", script, rc, out, err);
    free(out);
    free(err);
    free(path);
}

static char *read_output(const char *rel)
{
    char *p = xasprintf("%s/%s", scratch, rel);
    char *text = test_read_file(p, NULL);
    free(p);
    return text;
}

static void setup(void)
{
    snprintf(scratch, sizeof(scratch), "/tmp/sluice-examples-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(scratch));
}

static void teardown(void)
{
    char *argv[] = {"/bin/rm", "-rf", scratch, NULL};
    test_run(argv, NULL, NULL);
}

START_TEST(test_iris_pipeline)
{
    run_py("dags/iris/preprocess.py",
           (const char *[]){"--out", "data", "--test-size", "0.3", NULL});
    run_py("dags/iris/train.py",
           (const char *[]){"--data", "data", "--model", "model.pkl", "--n-estimators", "100",
                            "--max-depth", "4", NULL});
    run_py("dags/iris/evaluate.py", (const char *[]){"--data", "data", "--model", "model.pkl",
                                                     "--accuracy-out", "accuracy.txt", NULL});
    char *acc = read_output("accuracy.txt");
    double v = atof(acc);
    ck_assert_msg(v >= 0.9 && v <= 1.0, "accuracy %s", acc);
    char *to = xasprintf("%s/serving/iris/r1", scratch);
    run_py("dags/iris/deploy.py",
           (const char *[]){"--model", "model.pkl", "--to", to, "--accuracy", acc, NULL});
    char *manifest = read_output("serving/iris/r1/manifest.json");
    ck_assert_ptr_nonnull(strstr(manifest, "\"accuracy\""));
    free(manifest);
    free(to);
    free(acc);
}
END_TEST

START_TEST(test_finetune_pipeline)
{
    run_py("dags/finetune/prepare.py", (const char *[]){"--out", "data", NULL});
    run_py("dags/finetune/train.py",
           (const char *[]){"--data", "data", "--out", "checkpoint", "--epochs", "3", "--lr",
                            "0.05", "--base", "tiny-mlp", NULL});
    run_py("dags/finetune/evaluate.py",
           (const char *[]){"--data", "data", "--checkpoint", "checkpoint", "--out", "accuracy.txt",
                            NULL});
    char *loss = read_output("checkpoint/loss.txt");
    char *acc = read_output("accuracy.txt");
    ck_assert_msg(atof(loss) > 0 && atof(loss) < 0.5, "loss %s", loss);
    ck_assert_msg(atof(acc) > 0.8, "accuracy %s", acc);
    free(loss);
    free(acc);
}
END_TEST

START_TEST(test_etl_fanout_pipeline)
{
    run_py("dags/etl/extract.py", (const char *[]){"--shards", "3", "--rows", "200", "--out", "raw",
                                                   "--list", "shards.json", NULL});
    char *shards = read_output("shards.json");
    ck_assert_str_eq(shards, "[\"shard-000\", \"shard-001\", \"shard-002\"]");
    struct strbuf counts = STRBUF_INIT;
    strbuf_addch(&counts, '[');
    for (int i = 0; i < 3; i++) {
        char input[64], rows[32], out[32];
        snprintf(input, sizeof(input), "raw/shard-%03d.csv", i);
        snprintf(rows, sizeof(rows), "rows-%d.txt", i);
        snprintf(out, sizeof(out), "out-%d.csv", i);
        run_py("dags/etl/transform.py",
               (const char *[]){"--input", input, "--rows-out", rows, "--out", out, NULL});
        char *n = read_output(rows);
        n[strcspn(n, "\n")] = '\0';
        ck_assert_int_gt(atoi(n), 0);
        strbuf_addf(&counts, "%s\"%s\"", i ? "," : "", n);
        free(n);
    }
    strbuf_addch(&counts, ']');
    run_py("dags/etl/load.py", (const char *[]){"--counts", counts.buf, "--expect", "3", NULL});
    strbuf_release(&counts);
    free(shards);
}
END_TEST

Suite *suite_integration_examples(void)
{
    Suite *s = suite_create("integration_examples");
    TCase *tc = tcase_create("scripts");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_iris_pipeline);
    tcase_add_test(tc, test_finetune_pipeline);
    tcase_add_test(tc, test_etl_fanout_pipeline);
    suite_add_tcase(s, tc);
    return s;
}
