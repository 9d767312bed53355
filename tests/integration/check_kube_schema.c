/*
 * tests/integration/check_kube_schema.c - tests/k8s/schema_check.py, the validator every
 * Pod the kubernetes executor builds goes through (and the Helm chart's objects), rejects
 * each class of error against the official schema and accepts what is valid.
 */
#include "common/xalloc.h"
#include "tests/harness/k8ssim.h"
#include "tests/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs schema_check.py on files (NULL-terminated) with --kind kind (or none). */
static int schema_check(char **out, char **err, const char *kind, const char *const *files)
{
    char *script = test_path("tests/k8s/schema_check.py");
    char *argv[16];
    size_t n = 0;
    argv[n++] = "/usr/bin/python3";
    argv[n++] = script;
    argv[n++] = "--schema";
    argv[n++] = (char *)harness_k8s_schema_path();
    if (kind) {
        argv[n++] = "--kind";
        argv[n++] = (char *)kind;
    }
    for (; *files && n < 15; files++)
        argv[n++] = (char *)*files;
    argv[n] = NULL;
    int rc = test_run(argv, out, err);
    free(script);
    return rc;
}

START_TEST(test_valid_objects_pass_and_unknown_kinds_are_skipped)
{
    char *good = test_path("tests/k8s/testdata/pod_good.yaml");
    char *out = NULL, *err = NULL;
    int rc = schema_check(&out, &err, NULL, (const char *[]){good, NULL});
    ck_assert_msg(rc == 0, "exit %d\n%s%s", rc, out, err);
    ck_assert_str_eq(out, "");
    ck_assert_msg(strstr(err, "doc 3 (Deployment/skipped): skipped"), "stderr: %s", err);
    free(out);
    free(err);
    free(good);
}
END_TEST

/* Each document of pod_bad.yaml carries one error of one class. */
START_TEST(test_each_class_of_error_is_reported)
{
    static const char *const expect[] = {
        "doc 1 (Pod/unknown-field): .spec.containers[0].colour: unknown field",
        "doc 2 (Pod/wrong-type): .spec.activeDeadlineSeconds: expected an integer, got string",
        "doc 3 (Pod/missing-required): .spec.containers[0].name: required field is missing",
        "doc 4 (Pod/bad-enum): .spec.restartPolicy: unsupported value 'Sometimes'",
        "doc 5 (Pod/bad-quantity): .spec.containers[0].resources.limits.memory: '2GB' is not a "
        "quantity",
        "doc 6 (Pod/bad-int-or-string): .spec.containers[0].livenessProbe.httpGet.port: expected "
        "an integer or a string",
        "doc 7 (Pod/out-of-range): .spec.containers[0].ports[0].containerPort: integer 4294967296 "
        "is out of the int32 range",
    };
    char *bad = test_path("tests/k8s/testdata/pod_bad.yaml");
    char *out = NULL, *err = NULL;
    int rc = schema_check(&out, &err, NULL, (const char *[]){bad, NULL});
    ck_assert_int_eq(rc, 1);
    size_t lines = 0;
    for (const char *p = out; *p; p++)
        lines += *p == '\n';
    ck_assert_msg(lines == sizeof(expect) / sizeof(expect[0]), "%zu lines:\n%s", lines, out);
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        char *line = xasprintf("%s: %s", bad, expect[i]);
        ck_assert_msg(strstr(out, line), "missing \"%s\" in:\n%s", line, out);
        free(line);
    }
    free(out);
    free(err);
    free(bad);
}
END_TEST

/* --kind validates JSON from a file regardless of apiVersion/kind; an unparsable file is an
 * error of its own; an unknown --kind is a usage error. */
START_TEST(test_kind_option_json_and_bad_files)
{
    char dir[] = "/tmp/sluice-schema-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *json = xasprintf("%s/pod.json", dir), *broken = xasprintf("%s/broken.yaml", dir);
    FILE *f = fopen(json, "w");
    fputs("{\"metadata\": {\"name\": \"j\"}, \"spec\": {\"containers\": [{\"name\": \"m\", "
          "\"env\": [{\"name\": \"A\", \"value\": 1}]}]}}",
          f);
    fclose(f);
    f = fopen(broken, "w");
    fputs("a: [unclosed\n", f);
    fclose(f);
    char *out = NULL, *err = NULL;
    int rc = schema_check(&out, &err, "io.k8s.api.core.v1.Pod", (const char *[]){json, NULL});
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "doc 1 (?/j): .spec.containers[0].env[0].value: expected a string, "
                              "got integer"),
                  "%s", out);
    free(out);
    free(err);
    rc = schema_check(&out, &err, NULL, (const char *[]){broken, NULL});
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "cannot read"), "%s", out);
    free(out);
    free(err);
    rc = schema_check(&out, &err, "io.k8s.api.core.v1.NoSuchThing", (const char *[]){json, NULL});
    ck_assert_int_eq(rc, 2);
    free(out);
    free(err);
    char *argv[] = {"/bin/rm", "-rf", dir, NULL};
    test_run(argv, NULL, NULL);
    free(json);
    free(broken);
}
END_TEST

Suite *suite_integration_kube_schema(void)
{
    Suite *s = suite_create("integration_kube_schema");
    TCase *tc = tcase_create("schema_check");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_valid_objects_pass_and_unknown_kinds_are_skipped);
    tcase_add_test(tc, test_each_class_of_error_is_reported);
    tcase_add_test(tc, test_kind_option_json_and_bad_files);
    suite_add_tcase(s, tc);
    return s;
}
