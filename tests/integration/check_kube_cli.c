/*
 * tests/integration/check_kube_cli.c - the command-line side of the kubernetes executor:
 * `sluice pod install|exec` (the pod-side helper: exit codes, output params into the
 * termination message, and each way they can be refused), `sluice pod stage-out` (the
 * sidecar: the handshake with the helper, what it stores, how it reports, how it gives
 * up) and `sluice worker --executor kubernetes` refusing bad settings with exit 2 before
 * it starts anything.
 */
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "tests/testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[64];
static char *msg_path;     /* the main container's termination message */
static char *out_msg_path; /* the stage-out sidecar's */

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/sluice-podcli-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    msg_path = xasprintf("%s/termination-log", dir);
    out_msg_path = xasprintf("%s/stage-out-termination-log", dir);
}

static void teardown(void)
{
    char *argv[] = {"/bin/rm", "-rf", dir, NULL};
    test_run(argv, NULL, NULL);
    free(msg_path);
    free(out_msg_path);
}

/* sluice pod exec --message-file <msg> <extra...> -- /bin/sh -c script, in dir. */
static int pod_exec(const char *script, const char *const *extra, char **err)
{
    char *argv[32];
    size_t n = 0;
    argv[n++] = (char *)test_sluice_bin();
    argv[n++] = "pod";
    argv[n++] = "exec";
    argv[n++] = "--message-file";
    argv[n++] = msg_path;
    for (; extra && *extra; extra++)
        argv[n++] = (char *)*extra;
    argv[n++] = "--";
    argv[n++] = "/bin/sh";
    argv[n++] = "-c";
    argv[n++] = (char *)script;
    argv[n] = NULL;
    char cwd[4096];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    char *bin = argv[0][0] == '/' ? xstrdup(argv[0]) : xasprintf("%s/%s", cwd, argv[0]);
    argv[0] = bin;
    ck_assert_int_eq(chdir(dir), 0);
    int rc = test_run(argv, NULL, err);
    ck_assert_int_eq(chdir(cwd), 0);
    free(bin);
    return rc;
}

static char *message_of(const char *path)
{
    struct strbuf sb = STRBUF_INIT;
    if (strbuf_read_file(&sb, path, 1 << 20) < 0) {
        strbuf_release(&sb);
        return xstrdup("");
    }
    return strbuf_detach(&sb, NULL);
}

static char *message(void)
{
    return message_of(msg_path);
}

static char *out_message(void)
{
    return message_of(out_msg_path);
}

START_TEST(test_outputs_into_the_termination_message)
{
    char *sub = xasprintf("%s/made/by/helper", dir);
    const char *extra[] = {"--mkdir", sub, "--param", "a=a.txt", "--param", "b=sub/b.txt", NULL};
    int rc =
        pod_exec("mkdir -p sub; printf '0.97\\n' > a.txt; printf 'x\\ny' > sub/b.txt", extra, NULL);
    ck_assert_int_eq(rc, 0);
    char *m = message();
    ck_assert_str_eq(m, "{\"outputs\":{\"a\":\"0.97\",\"b\":\"x\\ny\"}}");
    struct stat st;
    ck_assert_int_eq(stat(sub, &st), 0); /* --mkdir made it */
    free(m);
    free(sub);
}
END_TEST

START_TEST(test_exit_codes_pass_through)
{
    const char *extra[] = {"--param", "a=a.txt", NULL};
    ck_assert_int_eq(pod_exec("exit 7", extra, NULL), 7);
    char *m = message();
    ck_assert_str_eq(m, ""); /* a failed step writes no outputs */
    free(m);
    ck_assert_int_eq(pod_exec("kill -9 $$", NULL, NULL), 128 + 9);
    ck_assert_int_eq(pod_exec("exec /nonexistent/binary", NULL, NULL), 127);
}
END_TEST

static void refused(const char *script, const char *param, const char *part)
{
    const char *extra[] = {"--param", param, NULL};
    char *err = NULL;
    ck_assert_int_eq(pod_exec(script, extra, &err), 1);
    char *m = message();
    ck_assert_msg(strstr(m, "{\"error\":") && strstr(m, part), "message %s, want %s", m, part);
    ck_assert_msg(strstr(err, part), "stderr %s", err);
    free(m);
    free(err);
}

START_TEST(test_output_params_refused)
{
    refused("true", "a=missing.txt", "missing output param 'a' (missing.txt)");
    refused("echo 1 > a.txt", "a=../a.txt", "has a '..' component");
    refused("head -c 5000 /dev/zero | tr '\\0' x > big.txt", "a=big.txt",
            "over the 4096 bytes of a Kubernetes termination message");
}
END_TEST

START_TEST(test_install_and_usage)
{
    char *dest = xasprintf("%s/bin/sluice", dir);
    char *argv[] = {(char *)test_sluice_bin(), "pod", "install", dest, NULL};
    ck_assert_int_eq(test_run(argv, NULL, NULL), 0);
    ck_assert_int_eq(access(dest, X_OK), 0);
    char *out = NULL;
    char *argv2[] = {dest, "pod", "--help", NULL};
    ck_assert_int_eq(test_run(argv2, &out, NULL), 0); /* the copy runs */
    ck_assert_ptr_nonnull(strstr(out, "sluice pod exec"));
    free(out);
    /* it brought its loader and every library it needs: the loader resolves each one
     * inside lib/, none from the machine, so a step image needs none of them */
    char *loader = xasprintf("%s/bin/ld.so", dir), *libs = xasprintf("%s/bin/lib", dir);
    char *list[] = {loader, "--list", "--library-path", libs, dest, NULL};
    ck_assert_int_eq(test_run(list, &out, NULL), 0);
    size_t resolved = 0;
    for (char *line = out, *eol; line && *line; line = eol ? eol + 1 : NULL) {
        eol = strchr(line, '\n');
        if (eol)
            *eol = '\0';
        const char *arrow = strstr(line, " => ");
        if (!arrow || strstr(line, "ld-linux"))
            continue; /* the vDSO, and the loader (it is ld.so itself) */
        ck_assert_msg(!strncmp(arrow + 4, libs, strlen(libs)), "resolved outside: %s", line);
        resolved++;
    }
    ck_assert_uint_gt(resolved, 5); /* libc, libcurl, libpq, libgit2, libuv, ... */
    free(out);
    char *through[] = {loader, "--library-path", libs, dest, "pod", "exec",
                       "--",   "/bin/true",      NULL};
    ck_assert_int_eq(test_run(through, NULL, NULL), 0);
    free(loader);
    free(libs);
    char *a3[] = {
        (char *)test_sluice_bin(), "pod", "exec", "--param", "noequals", "--", "true", NULL};
    ck_assert_int_eq(test_run(a3, NULL, NULL), 2);
    char *a4[] = {(char *)test_sluice_bin(), "pod", "exec", "--", NULL};
    ck_assert_int_eq(test_run(a4, NULL, NULL), 2);
    char *a5[] = {(char *)test_sluice_bin(), "pod", "frobnicate", NULL};
    ck_assert_int_eq(test_run(a5, NULL, NULL), 2);
    char *blocker = xasprintf("%s/file", dir);
    FILE *f = fopen(blocker, "w");
    fclose(f);
    char *under_file = xasprintf("%s/file/x", dir); /* a regular file where a dir should be */
    char *a6[] = {(char *)test_sluice_bin(), "pod", "install", under_file, NULL};
    ck_assert_int_eq(test_run(a6, NULL, NULL), 1);
    free(blocker);
    free(under_file);
    free(dest);
}
END_TEST

/* sluice worker --executor kubernetes with one bad setting (env) exits 2 with a reason. */
static void worker_refuses(const char *var, const char *value, const char *part)
{
    char *kc = xasprintf("%s/kubeconfig", dir);
    FILE *f = fopen(kc, "w");
    fputs("current-context: c\nclusters:\n- name: s\n  cluster: {server: "
          "\"http://127.0.0.1:1\"}\ncontexts:\n- name: c\n  context: {cluster: s}\n",
          f);
    fclose(f);
    char *script = xasprintf("SLUICE_CONFIG=/dev/null SLUICE_REDIS_URL=unix:///nonexistent "
                             "SLUICE_KUBERNETES_KUBECONFIG='%s' SLUICE_KUBERNETES_DEFAULT_IMAGE=x "
                             "%s='%s' exec '%s' worker --executor kubernetes",
                             kc, var, value, test_sluice_bin());
    char *argv[] = {"/bin/sh", "-c", script, NULL};
    char *err = NULL;
    int rc = test_run(argv, NULL, &err);
    ck_assert_msg(rc == 2, "%s=%s: exit %d: %s", var, value, rc, err);
    ck_assert_msg(strstr(err, part), "%s=%s: stderr %s, want %s", var, value, err, part);
    free(err);
    free(script);
    free(kc);
}

START_TEST(test_worker_refuses_bad_kubernetes_settings)
{
    worker_refuses("SLUICE_KUBERNETES_HELPER", "sidecar", "kubernetes.helper must be");
    worker_refuses("SLUICE_KUBERNETES_QPS", "0", "kubernetes.qps");
    worker_refuses("SLUICE_KUBERNETES_KUBECONFIG", "/nonexistent/kubeconfig",
                   "cannot open kubeconfig");
    worker_refuses("SLUICE_KUBERNETES_TOLERATIONS", "{oops", "kubernetes.tolerations");
    worker_refuses("SLUICE_KUBERNETES_RUN_AS_NON_ROOT", "maybe", "must be true or false");
    worker_refuses("SLUICE_KUBERNETES_PENDING_TIMEOUT", "soon", "must be a duration");
}
END_TEST

/* pod exec --artifacts: the declared outputs after an exit 0, failures with their kind */
static void artifacts_refused(const char *script, const char *part, const char *kind)
{
    const char *extra[] = {"--artifacts", "SLUICE_ARTIFACT_SPEC", NULL};
    char *err = NULL;
    ck_assert_int_eq(pod_exec(script, extra, &err), 1);
    char *m = message();
    char *want_kind = xasprintf("\"kind\":\"%s\"", kind);
    ck_assert_msg(strstr(m, part) && strstr(m, want_kind), "message %s, want %s (%s)", m, part,
                  kind);
    free(want_kind);
    free(m);
    free(err);
}

START_TEST(test_pod_exec_stores_output_artifacts)
{
    unsetenv("SLUICE_ARTIFACT_SPEC");
    artifacts_refused("true", "the variable 'SLUICE_ARTIFACT_SPEC' holds no spec", "error");
    setenv("SLUICE_ARTIFACT_SPEC",
           "{\"outputs\": {\"artifacts\": {\"report\": {\"path\": \"report.txt\", \"key\": "
           "\"d/r/s/1/report\"}}}, \"dag\": \"d\", \"run_id\": \"r\", \"step\": \"s\", "
           "\"attempt\": 1}",
           1);
    /* no repository: a declared output is still checked (as for local steps) */
    unsetenv("SLUICE_ARTIFACTS_REPOSITORY");
    artifacts_refused("echo hi > other.txt", "missing output artifact 'report' (report.txt)",
                      "step");
    const char *extra[] = {"--artifacts", "SLUICE_ARTIFACT_SPEC", NULL};
    ck_assert_int_eq(pod_exec("echo 1 > report.txt", extra, NULL), 0);
    char *m = message();
    ck_assert_str_eq(m, "{\"outputs\":{}}");
    free(m);
    /* an fs repository: the output moves into it under its key */
    char *root = xasprintf("%s/repo", dir);
    ck_assert_int_eq(mkdir(root, 0755), 0);
    setenv("SLUICE_ARTIFACTS_REPOSITORY", "fs", 1);
    setenv("SLUICE_ARTIFACTS_ROOT", root, 1);
    ck_assert_int_eq(pod_exec("echo stored > report.txt", extra, NULL), 0);
    char *key = xasprintf("%s/d/r/s/1/report", root);
    char *text = test_read_file(key, NULL);
    ck_assert_str_eq(text, "stored\n");
    free(text);
    free(key);
    /* settings that cannot work: the repository's error, kind error */
    setenv("SLUICE_ARTIFACTS_ROOT", "/nonexistent/artifacts", 1);
    artifacts_refused("echo 1 > report.txt",
                      "artifacts.root '/nonexistent/artifacts' is not a directory", "error");
    /* a failed step stores nothing and reports its own exit code */
    setenv("SLUICE_ARTIFACTS_ROOT", root, 1);
    unlink(msg_path);
    ck_assert_int_eq(pod_exec("rm -f report.txt; echo 2 > report.txt; exit 3", extra, NULL), 3);
    m = message();
    ck_assert_str_eq(m, "");
    free(m);
    unsetenv("SLUICE_ARTIFACTS_REPOSITORY");
    unsetenv("SLUICE_ARTIFACTS_ROOT");
    unsetenv("SLUICE_ARTIFACT_SPEC");
    char *rm[] = {"/bin/rm", "-rf", root, NULL};
    test_run(rm, NULL, NULL);
    free(root);
}
END_TEST

START_TEST(test_artifact_get_spec_env)
{
    unsetenv("NO_SUCH_SPEC");
    char *argv[] = {(char *)test_sluice_bin(),
                    "artifact",
                    "get",
                    "--config",
                    "/dev/null",
                    "--spec-env",
                    "NO_SUCH_SPEC",
                    "--workdir",
                    dir,
                    NULL};
    char *err = NULL;
    ck_assert_int_eq(test_run(argv, NULL, &err), 2);
    ck_assert_msg(strstr(err, "the variable 'NO_SUCH_SPEC' that should hold the spec is not set"),
                  "%s", err);
    free(err);
    char *both[] = {(char *)test_sluice_bin(),
                    "artifact",
                    "get",
                    "--spec",
                    "-",
                    "--spec-env",
                    "X",
                    "--workdir",
                    dir,
                    NULL};
    ck_assert_int_eq(test_run(both, NULL, &err), 2);
    ck_assert_msg(strstr(err, "--spec and --spec-env are exclusive"), "%s", err);
    free(err);
    /* a spec from the variable: an input fetched from a file:// URI into the workdir */
    char *src = xasprintf("%s/src.txt", dir);
    FILE *f = fopen(src, "w");
    ck_assert_ptr_nonnull(f);
    fputs("data\n", f);
    fclose(f);
    char *spec = xasprintf("{\"inputs\": {\"artifacts\": {\"x\": {\"from\": \"file://%s\", "
                           "\"path\": \"in/x.txt\"}}}}",
                           src);
    setenv("A_SPEC", spec, 1);
    char *ok[] = {(char *)test_sluice_bin(),
                  "artifact",
                  "get",
                  "--config",
                  "/dev/null",
                  "--spec-env",
                  "A_SPEC",
                  "--workdir",
                  dir,
                  NULL};
    ck_assert_int_eq(test_run(ok, NULL, NULL), 0);
    char *placed = xasprintf("%s/in/x.txt", dir);
    char *text = test_read_file(placed, NULL);
    ck_assert_str_eq(text, "data\n");
    free(text);
    free(placed);
    free(spec);
    free(src);
    unsetenv("A_SPEC");
}
END_TEST

/* --- the stage-out sidecar and its handshake with the helper ------------------------------ */

static const char *const out_spec =
    "{\"outputs\": {\"artifacts\": {\"report\": {\"path\": \"report.txt\", \"key\": "
    "\"d/r/s/1/report\"}}}, \"dag\": \"d\", \"run_id\": \"r\", \"step\": \"s\", "
    "\"attempt\": 1}";

/* sluice pod stage-out --handshake <dir>/hs --spec-env SPEC --workdir <dir> --message-file
 * <msg> <extra...>, as argv (static storage until the next call). */
static char **stage_out_argv(const char *const *extra)
{
    static char *argv[24];
    static char *hs;
    free(hs);
    hs = xasprintf("%s/hs", dir);
    size_t n = 0;
    argv[n++] = (char *)test_sluice_bin();
    argv[n++] = "pod";
    argv[n++] = "stage-out";
    argv[n++] = "--handshake";
    argv[n++] = hs;
    argv[n++] = "--spec-env";
    argv[n++] = "SPEC";
    argv[n++] = "--workdir";
    argv[n++] = dir;
    argv[n++] = "--message-file";
    argv[n++] = out_msg_path;
    for (; extra && *extra; extra++)
        argv[n++] = (char *)*extra;
    argv[n] = NULL;
    return argv;
}

static int stage_out(const char *const *extra, char **err)
{
    return test_run(stage_out_argv(extra), NULL, err);
}

/* Writes the helper's end report as the helper would, through `pod exec --handshake`. */
static int helper_run(const char *script)
{
    char *hs = xasprintf("%s/hs", dir);
    const char *extra[] = {"--handshake", hs, NULL};
    int rc = pod_exec(script, extra, NULL);
    free(hs);
    return rc;
}

START_TEST(test_helper_reports_the_end_through_the_handshake)
{
    char *hs = xasprintf("%s/hs", dir);
    ck_assert_int_eq(mkdir(hs, 0755), 0);
    char *done = xasprintf("%s/step.done", hs), *alive = xasprintf("%s/step.alive", hs);
    ck_assert_int_eq(helper_run("echo 1 > report.txt"), 0);
    char *text = test_read_file(done, NULL);
    ck_assert_str_eq(text, "{\"succeeded\": true, \"exit_code\": 0}\n");
    free(text);
    ck_assert_int_eq(access(alive, F_OK), 0); /* the heartbeat began with the step */
    ck_assert_int_eq(helper_run("exit 3"), 3);
    text = test_read_file(done, NULL);
    ck_assert_str_eq(text, "{\"succeeded\": false, \"exit_code\": 3}\n");
    free(text);
    /* a step that succeeded but whose params are refused did not succeed */
    const char *extra[] = {"--handshake", hs, "--param", "p=missing.txt", NULL};
    ck_assert_int_eq(pod_exec("true", extra, NULL), 1);
    text = test_read_file(done, NULL);
    ck_assert_str_eq(text, "{\"succeeded\": false, \"exit_code\": 1}\n");
    free(text);
    free(done);
    free(alive);
    free(hs);
}
END_TEST

START_TEST(test_stage_out_stores_after_the_helper_says_so)
{
    char *hs = xasprintf("%s/hs", dir), *root = xasprintf("%s/repo", dir);
    ck_assert_int_eq(mkdir(hs, 0755), 0);
    ck_assert_int_eq(mkdir(root, 0755), 0);
    setenv("SPEC", out_spec, 1);
    setenv("SLUICE_ARTIFACTS_REPOSITORY", "fs", 1);
    setenv("SLUICE_ARTIFACTS_ROOT", root, 1);
    /* the sidecar starts first and waits; the step runs in the helper and writes its
     * output; the sidecar sees the report and stores the output */
    char **argv = stage_out_argv(NULL);
    char *err_path = xasprintf("%s/stage-out.err", dir);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        FILE *ef = freopen(err_path, "w", stderr);
        (void)ef;
        execv(argv[0], argv);
        _exit(127);
    }
    ck_assert_int_eq(helper_run("echo stored > report.txt"), 0);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    char *err = test_read_file(err_path, NULL);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d: %s", status, err);
    ck_assert_msg(strstr(err, "output artifact 'report' (report.txt) stored as fs:"), "%s", err);
    free(err);
    char *key = xasprintf("%s/d/r/s/1/report", root);
    char *text = test_read_file(key, NULL);
    ck_assert_str_eq(text, "stored\n");
    free(text);
    char *m = out_message();
    ck_assert_str_eq(m, ""); /* stored: nothing to report */
    free(m);

    /* the step failed: nothing stored, exit 0 at once */
    unlink(key);
    ck_assert_int_eq(helper_run("rm -f report.txt; echo 2 > report.txt; exit 4"), 4);
    ck_assert_int_eq(stage_out(NULL, NULL), 0);
    ck_assert_int_ne(access(key, F_OK), 0);

    /* a declared output the step did not write: kind step, in the termination message */
    char *report = xasprintf("%s/report.txt", dir);
    unlink(report);
    ck_assert_int_eq(helper_run("echo 1 > other.txt"), 0);
    ck_assert_int_eq(stage_out(NULL, &err), 1);
    m = out_message();
    ck_assert_msg(strstr(m, "\"error\":\"missing output artifact 'report' (report.txt)\"") &&
                      strstr(m, "\"kind\":\"step\""),
                  "%s", m);
    ck_assert_msg(strstr(err, "missing output artifact 'report'"), "%s", err);
    free(m);
    free(err);
    /* the repository cannot be reached (here: its root is gone): kind error */
    setenv("SLUICE_ARTIFACTS_ROOT", "/nonexistent/artifacts", 1);
    ck_assert_int_eq(helper_run("echo 1 > report.txt"), 0);
    ck_assert_int_eq(stage_out(NULL, NULL), 1);
    m = out_message();
    ck_assert_msg(strstr(m, "is not a directory") && strstr(m, "\"kind\":\"error\""), "%s", m);
    free(m);
    unsetenv("SPEC");
    unsetenv("SLUICE_ARTIFACTS_REPOSITORY");
    unsetenv("SLUICE_ARTIFACTS_ROOT");
    free(report);
    free(key);
    free(err_path);
    free(root);
    free(hs);
}
END_TEST

/* The sidecar never waits forever: a heartbeat that stops (the main container died with
 * its helper), or none at all, ends the wait with a reason. */
START_TEST(test_stage_out_gives_up_without_a_heartbeat)
{
    char *hs = xasprintf("%s/hs", dir), *alive = xasprintf("%s/hs/step.alive", dir);
    ck_assert_int_eq(mkdir(hs, 0755), 0);
    setenv("SPEC", out_spec, 1);
    const char *quick[] = {"--heartbeat-timeout", "1", "--start-timeout", "1", NULL};
    char *err = NULL;
    ck_assert_int_eq(stage_out(quick, &err), 1);
    char *m = out_message();
    ck_assert_msg(strstr(m, "the step never started (no heartbeat in ") &&
                      strstr(m, "within 1 s): no output artifact stored") &&
                      strstr(m, "\"kind\":\"transient\""),
                  "%s", m);
    free(m);
    free(err);
    FILE *f = fopen(alive, "w"); /* a helper that beat once, then died */
    ck_assert_ptr_nonnull(f);
    fclose(f);
    ck_assert_int_eq(stage_out(quick, NULL), 1);
    m = out_message();
    ck_assert_msg(strstr(m, "the main container stopped without saying how the step ended (no "
                            "heartbeat in ") &&
                      strstr(m, "for 1 s)"),
                  "%s", m);
    free(m);
    /* usage */
    const char *zero[] = {"--heartbeat-timeout", "0", NULL};
    ck_assert_int_eq(stage_out(zero, &err), 2);
    ck_assert_msg(strstr(err, "bad argument '--heartbeat-timeout'"), "%s", err);
    free(err);
    char *no_workdir[] = {(char *)test_sluice_bin(),
                          "pod",
                          "stage-out",
                          "--handshake",
                          hs,
                          "--spec-env",
                          "SPEC",
                          NULL};
    ck_assert_int_eq(test_run(no_workdir, NULL, &err), 2);
    ck_assert_msg(strstr(err, "--handshake, --spec-env and --workdir are required"), "%s", err);
    free(err);
    unsetenv("SPEC");
    free(alive);
    free(hs);
}
END_TEST

Suite *suite_integration_kube_cli(void)
{
    Suite *s = suite_create("integration_kube_cli");
    TCase *tc = tcase_create("cli");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_outputs_into_the_termination_message);
    tcase_add_test(tc, test_exit_codes_pass_through);
    tcase_add_test(tc, test_output_params_refused);
    tcase_add_test(tc, test_install_and_usage);
    tcase_add_test(tc, test_worker_refuses_bad_kubernetes_settings);
    tcase_add_test(tc, test_pod_exec_stores_output_artifacts);
    tcase_add_test(tc, test_artifact_get_spec_env);
    tcase_add_test(tc, test_helper_reports_the_end_through_the_handshake);
    tcase_add_test(tc, test_stage_out_stores_after_the_helper_says_so);
    tcase_add_test(tc, test_stage_out_gives_up_without_a_heartbeat);
    suite_add_tcase(s, tc);
    return s;
}
