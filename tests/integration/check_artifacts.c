/*
 * tests/integration/check_artifacts.c - artifacts end to end: the iris pipeline passing
 * its dataset and model through S3 (s3rver) and through a shared volume (fs), `sluice
 * artifact get|put` by hand and from a spec (what step pods run), a zip-slip archive and
 * bad keys refused, Git as an input, a missing declared output failing its step, and
 * archived logs read back.
 *
 * Everything goes through the real binary (SLUICE_BIN), configured by SLUICE_ARTIFACTS_*
 * variables as a pod would be; `sluice dag test` starts its own PostgreSQL and Redis.
 */
#include "common/config.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "tests/harness/harness.h"
#include "tests/testutil.h"
#include "worker/artifacts.h"
#include "worker/s3.h"

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct harness_s3 srv;
static char *tmp; /* the suite's scratch directory, 0755 (the embedded PostgreSQL runs as
                   * nobody when the tests run as root) */

static void setup(void)
{
    ck_assert_int_eq(harness_s3_start(&srv, "art"), 0);
    char tmpl[] = "/tmp/sluice-arttest.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    ck_assert_int_eq(chmod(tmpl, 0755), 0);
    tmp = xstrdup(tmpl);
}

static void teardown(void)
{
    harness_s3_stop(&srv);
    if (tmp) {
        char *argv[] = {"/bin/rm", "-rf", tmp, NULL};
        test_run(argv, NULL, NULL);
        free(tmp);
        tmp = NULL;
    }
}

/* --- helpers ---------------------------------------------------------------------------- */

static void use_s3(const char *prefix)
{
    setenv("SLUICE_ARTIFACTS_REPOSITORY", "s3", 1);
    setenv("SLUICE_ARTIFACTS_ENDPOINT", srv.endpoint, 1);
    setenv("SLUICE_ARTIFACTS_BUCKET", "art", 1);
    setenv("SLUICE_ARTIFACTS_PATH_STYLE", "true", 1);
    setenv("SLUICE_ARTIFACTS_PREFIX", prefix, 1);
    setenv("AWS_ACCESS_KEY_ID", HARNESS_S3_ACCESS_KEY, 1);
    setenv("AWS_SECRET_ACCESS_KEY", HARNESS_S3_SECRET_KEY, 1);
}

static char *use_fs(const char *name)
{
    char *root = xasprintf("%s/%s", tmp, name);
    ck_assert_int_eq(mkdir(root, 0755), 0);
    setenv("SLUICE_ARTIFACTS_REPOSITORY", "fs", 1);
    setenv("SLUICE_ARTIFACTS_ROOT", root, 1);
    return root;
}

static int sluice(char **out, char **err, const char *const *args)
{
    const char *argv[24];
    int n = 0;
    argv[n++] = test_sluice_bin();
    for (; *args && n < 23; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    return test_run((char *const *)argv, out, err);
}

static int sh(const char *cmd)
{
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    char *err = NULL;
    int rc = test_run(argv, NULL, &err);
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", cmd, err);
    free(err);
    return rc;
}

static char *file_text(const char *path)
{
    size_t len;
    return test_read_file(path, &len);
}

/* Runs `sluice dag test dag` in a data directory of its own; returns the run id. */
static char *dag_test(const char *dag, const char *data_name, char **out_text)
{
    char *data = xasprintf("%s/%s", tmp, data_name);
    setenv("SLUICE_DATA_DIR", data, 1);
    char *out = NULL, *err = NULL;
    const char *args[] = {"dag", "test", dag, NULL};
    int rc = sluice(&out, &err, args);
    ck_assert_msg(rc == 0, "dag test %s failed (%d):\n%s\n%s", dag, rc, out, err);
    const char *p = strstr(out, "\nrun ");
    ck_assert_ptr_nonnull(p);
    p += 5;
    char *run = xstrndup(p, strcspn(p, " "));
    free(err);
    free(data);
    if (out_text)
        *out_text = out;
    else
        free(out);
    return run;
}

static struct s3_client *direct_client(void)
{
    struct s3_config cfg = {.endpoint = srv.endpoint,
                            .bucket = "art",
                            .path_style = true,
                            .access_key_id = HARNESS_S3_ACCESS_KEY,
                            .secret_access_key = HARNESS_S3_SECRET_KEY};
    struct s3_client *c = NULL;
    struct strbuf err = STRBUF_INIT;
    ck_assert_int_eq(s3_client_new(&c, &cfg, &err), 0);
    strbuf_release(&err);
    return c;
}

/* --- iris in both modes ---------------------------------------------------------------------- */

START_TEST(test_artifacts_iris_s3)
{
    use_s3("runs");
    setenv("SLUICE_ARTIFACTS_ARCHIVE_LOGS", "true", 1);
    char *iris = test_path("dags/iris.yaml");
    char *run = dag_test(iris, "iris-s3", NULL);

    /* the dataset went up as a directory archive, the model as a file */
    struct s3_client *c = direct_client();
    struct strbuf err = STRBUF_INIT;
    struct s3_object_info info;
    char *key = xasprintf("runs/iris/%s/preprocess/1/dataset", run);
    ck_assert_msg(s3_head(c, key, &info, &err) == 0, "%s", err.buf);
    ck_assert_str_eq(info.kind, "dir");
    free(key);
    key = xasprintf("runs/iris/%s/train/1/model", run);
    ck_assert_msg(s3_head(c, key, &info, &err) == 0, "%s", err.buf);
    ck_assert_str_eq(info.kind, "file");
    ck_assert_uint_gt(info.size, 1000);
    free(key);

    /* train and evaluate got them from S3, and say so in their logs */
    char *log = xasprintf("%s/iris-s3/logs/steps/iris/%s/evaluate/1.log", tmp, run);
    char *text = file_text(log);
    char *want = xasprintf("input artifact 'model' from s3://art/runs/iris/%s/train/1/model", run);
    ck_assert_msg(strstr(text, want), "%s", text);
    free(want);
    free(text);
    free(log);

    /* the logs were archived next to the artifacts, and read back from there */
    struct sl_config cfg;
    ck_assert_int_eq(sl_config_load(&cfg, NULL, &err), 0);
    struct artifacts_repo *repo = NULL;
    ck_assert_msg(artifacts_open(&repo, &cfg, &err) == 0, "%s", err.buf);
    int fd = -1;
    ck_assert_msg(artifacts_open_log(repo, "iris", run, "train", -1, 1, tmp, &fd, &err) == 0, "%s",
                  err.buf);
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    close(fd);
    want = xasprintf("attempt iris.%s.train.-1.1 started", run);
    ck_assert_msg(strstr(buf, want), "%s", buf);
    free(want);
    strbuf_reset(&err);
    ck_assert_int_eq(artifacts_open_log(repo, "iris", run, "train", -1, 7, tmp, &fd, &err),
                     SL_ENOENT);
    artifacts_close(repo);
    sl_config_release(&cfg);
    strbuf_release(&err);
    s3_client_free(c);
    free(run);
    free(iris);
}
END_TEST

START_TEST(test_artifacts_iris_fs)
{
    char *root = use_fs("volume");
    setenv("SLUICE_ARTIFACTS_ARCHIVE_LOGS", "true", 1);
    char *iris = test_path("dags/iris.yaml");
    char *run = dag_test(iris, "iris-fs", NULL);

    /* on the volume as themselves: a directory and a file, nothing archived */
    char *p = xasprintf("%s/iris/%s/preprocess/1/dataset/train.csv", root, run);
    struct stat st;
    ck_assert_msg(stat(p, &st) == 0 && S_ISREG(st.st_mode), "no %s", p);
    free(p);
    p = xasprintf("%s/iris/%s/train/1/model", root, run);
    ck_assert_msg(stat(p, &st) == 0 && S_ISREG(st.st_mode), "no %s", p);
    free(p);
    /* the steps see links into the volume: nothing was copied */
    p = xasprintf("%s/iris-fs/work/iris/%s/model.pkl", tmp, run);
    char target[4096];
    ssize_t n = readlink(p, target, sizeof(target) - 1);
    ck_assert_msg(n > 0, "%s is not a link", p);
    target[n] = '\0';
    char *want = xasprintf("%s/iris/%s/train/1/model", root, run);
    ck_assert_str_eq(target, want);
    free(want);
    free(p);
    /* and the archived log */
    struct strbuf err = STRBUF_INIT;
    struct sl_config cfg;
    ck_assert_int_eq(sl_config_load(&cfg, NULL, &err), 0);
    struct artifacts_repo *repo = NULL;
    ck_assert_msg(artifacts_open(&repo, &cfg, &err) == 0, "%s", err.buf);
    int fd = -1;
    ck_assert_int_eq(artifacts_open_log(repo, "iris", run, "evaluate", -1, 1, NULL, &fd, &err), 0);
    char buf[256];
    ck_assert_int_gt(read(fd, buf, sizeof(buf)), 0);
    close(fd);
    artifacts_close(repo);
    sl_config_release(&cfg);
    strbuf_release(&err);
    free(run);
    free(iris);
    free(root);
}
END_TEST

/*
 * `{{ steps.<s>.outputs.artifacts.<a> }}` in a command is where the artifact is stored:
 * with fs the shared path itself, which a step reads in place (nothing staged or copied);
 * with s3 its s3:// URI. As an input's `from` it is still staged. Writes the DAG and runs
 * it; returns what the reading step saw (its first argument, then the directory's file).
 */
static char *where_run(const char *data_name, char **out_run)
{
    char *dag = xasprintf("%s/where-%s.yaml", tmp, data_name);
    char *seen = xasprintf("%s/seen-%s.txt", tmp, data_name);
    FILE *f = fopen(dag, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "name: where\n"
            "steps:\n"
            "  - name: make\n"
            "    workdir: \"{{ attempt.dir }}\"\n"
            "    command: [/bin/sh, -c, 'mkdir -p out && echo hi > out/x && echo one > f.txt']\n"
            "    outputs: {artifacts: {data: out, file: f.txt}}\n"
            "  - name: read\n"
            "    depends_on: [make]\n"
            "    workdir: \"{{ attempt.dir }}\"\n"
            "    command: [/bin/sh, -c, 'echo \"$1\" > %s; case \"$1\" in /*) cat \"$1/x\" >> %s;; "
            "esac; cat inputs/file >> %s', sh, \"{{ steps.make.outputs.artifacts.data }}\"]\n"
            "    inputs: {artifacts: {file: \"{{ steps.make.outputs.artifacts.file }}\"}}\n",
            seen, seen, seen);
    fclose(f);
    *out_run = dag_test(dag, data_name, NULL);
    char *text = file_text(seen);
    free(seen);
    free(dag);
    return text;
}

START_TEST(test_artifacts_templates_render_locations)
{
    char *root = use_fs("shared");
    setenv("SLUICE_ARTIFACTS_PREFIX", "/pfx/", 1);
    char *run = NULL;
    char *text = where_run("where-fs", &run);
    char *want = xasprintf("%s/pfx/where/%s/make/1/data\nhi\none\n", root, run);
    ck_assert_str_eq(text, want);
    free(want);
    free(text);
    free(run);
    free(root);

    use_s3("pfx");
    text = where_run("where-s3", &run);
    want = xasprintf("s3://art/pfx/where/%s/make/1/data\none\n", run);
    ck_assert_str_eq(text, want);
    free(want);
    free(text);
    free(run);
}
END_TEST

/*
 * The fan-in of a fanned-out step's artifact: as an input, each item's artifact at
 * <path>/<index>; in a command, the JSON list of their locations (shared paths with fs).
 */
START_TEST(test_artifacts_fan_in)
{
    char *root = use_fs("fanin");
    char *dag = xasprintf("%s/fanin.yaml", tmp);
    char *seen = xasprintf("%s/seen-fanin.txt", tmp);
    FILE *f = fopen(dag, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "name: fanin\n"
            "steps:\n"
            "  - name: parts\n"
            "    for_each: [a, b, c]\n"
            "    workdir: \"{{ attempt.dir }}\"\n"
            "    command: [/bin/sh, -c, 'echo \"$1\" > part.txt', sh, \"{{ item }}\"]\n"
            "    outputs: {artifacts: {part: part.txt}}\n"
            "  - name: join\n"
            "    depends_on: [parts]\n"
            "    workdir: \"{{ attempt.dir }}\"\n"
            "    command: [/bin/sh, -c, 'cat in/0 in/1 in/2 > %s; echo \"$1\" >> %s', sh,\n"
            "              \"{{ steps.parts.outputs.artifacts.part }}\"]\n"
            "    inputs: {artifacts: {part: {from: \"{{ steps.parts.outputs.artifacts.part }}\", "
            "path: in}}}\n",
            seen, seen);
    fclose(f);
    char *run = dag_test(dag, "fanin", NULL);
    char *text = file_text(seen);
    ck_assert_msg(!strncmp(text, "a\nb\nc\n[", 7), "%s", text);
    for (int i = 0; i < 3; i++) {
        char *want = xasprintf("\"%s/fanin/%s/parts/%d/1/part\"", root, run, i);
        ck_assert_msg(strstr(text, want), "%s not in %s", want, text);
        free(want);
    }
    ck_assert_ptr_null(strstr(text, "SLUICE_ARTIFACT_BASE"));
    free(text);
    free(run);
    free(seen);
    free(dag);
    free(root);
}
END_TEST

/* A declared output the step did not write fails the step with a clear reason. */
START_TEST(test_artifacts_missing_output_fails_step)
{
    use_s3("missing");
    char *dag = xasprintf("%s/forgetful.yaml", tmp);
    FILE *f = fopen(dag, "w");
    fputs("name: forgetful\n"
          "steps:\n"
          "  - name: make\n"
          "    command: [/bin/sh, -c, 'echo made > made.txt']\n"
          "    retries: 0\n"
          "    outputs:\n"
          "      artifacts: {made: made.txt, lost: lost.bin}\n",
          f);
    fclose(f);
    setenv("SLUICE_DATA_DIR", tmp, 1);
    char *out = NULL, *err = NULL;
    const char *args[] = {"dag", "test", dag, NULL};
    int rc = sluice(&out, &err, args);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "missing output artifact 'lost' (lost.bin)"), "%s\n%s", out, err);
    free(out);
    free(err);
    free(dag);
}
END_TEST

/*
 * An upload that fails on the network after the step succeeded is a transient error: the
 * step's on_transient policy retries it (a failure policy does not), the reason names the
 * artifact and the server, and the step's output is still in its attempt directory.
 */
static char *upload_run(const char *policy, int *out_rc)
{
    char *dag = xasprintf("%s/upload-%s.yaml", tmp, policy);
    FILE *f = fopen(dag, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "name: upload\n"
            "steps:\n"
            "  - name: make\n"
            "    workdir: \"{{ attempt.dir }}\"\n"
            "    command: [/bin/sh, -c, 'echo made > made.txt']\n"
            "    retries: {limit: 1, policy: %s, backoff: {initial: 1s}}\n"
            "    outputs: {artifacts: {made: made.txt}}\n",
            policy);
    fclose(f);
    char *data = xasprintf("%s/upload-%s", tmp, policy);
    setenv("SLUICE_DATA_DIR", data, 1);
    char *out = NULL;
    const char *args[] = {"dag", "test", dag, NULL};
    *out_rc = sluice(&out, NULL, args);
    free(data);
    free(dag);
    return out;
}

START_TEST(test_artifacts_failed_upload_is_transient)
{
    use_s3("up");
    setenv("SLUICE_ARTIFACTS_ENDPOINT", "http://127.0.0.1:9", 1); /* nothing listens */
    int rc;
    char *out = upload_run("on_transient", &rc);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(
        strstr(out, "up_for_retry: output artifact 'made' (made.txt): s3 PUT s3://art/up/"), "%s",
        out);
    ck_assert_msg(strstr(out, "Couldn't connect to server"), "%s", out);
    const char *row = strstr(out, "\nmake ");
    ck_assert_ptr_nonnull(row);
    ck_assert_msg(strstr(row, "failed                  2"), "%s", out);
    char *kept = xasprintf("%s/upload-on_transient/work/upload", tmp);
    char *cmd = xasprintf("test \"$(cat %s/*/.attempts/make/1/made.txt)\" = made", kept);
    ck_assert_int_eq(sh(cmd), 0);
    free(cmd);
    free(kept);
    free(out);

    out = upload_run("on_failure", &rc);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(!strstr(out, "up_for_retry"), "%s", out);
    row = strstr(out, "\nmake ");
    ck_assert_ptr_nonnull(row);
    ck_assert_msg(strstr(row, "failed                  1"), "%s", out);
    free(out);
}
END_TEST

/* --- sluice artifact get|put --------------------------------------------------------------------
 */

START_TEST(test_artifacts_cli_round_trip)
{
    use_s3("cli");
    char *cmd = xasprintf("mkdir -p %s/src/sub && printf 'one\\n' > %s/src/a.txt && "
                          "head -c 300000 /dev/urandom > %s/src/sub/b.bin && "
                          "ln -s a.txt %s/src/link",
                          tmp, tmp, tmp, tmp);
    ck_assert_int_eq(sh(cmd), 0);
    free(cmd);
    char *src = xasprintf("%s/src", tmp), *dst = xasprintf("%s/out/deep/dst", tmp);
    char *err = NULL;
    const char *put[] = {"artifact", "put", "d/r/s/1/tree", src, NULL};
    ck_assert_msg(sluice(NULL, &err, put) == 0, "%s", err);
    free(err);
    const char *get[] = {"artifact", "get", "d/r/s/1/tree", dst, NULL};
    ck_assert_msg(sluice(NULL, &err, get) == 0, "%s", err);
    free(err);
    cmd = xasprintf("diff -r --no-dereference %s %s", src, dst);
    ck_assert_int_eq(sh(cmd), 0);
    free(cmd);
    /* a file, fetched over one that is there already */
    char *file = xasprintf("%s/src/a.txt", tmp);
    const char *putf[] = {"artifact", "put", "d/r/s/1/file", file, NULL};
    ck_assert_int_eq(sluice(NULL, NULL, putf), 0);
    const char *getf[] = {"artifact", "get", "d/r/s/1/file", dst, NULL};
    ck_assert_int_eq(sluice(NULL, NULL, getf), 0);
    char *text = file_text(dst);
    ck_assert_str_eq(text, "one\n");
    free(text);
    /* s3:// names the same object */
    const char *gets3[] = {"artifact", "get", "s3://art/cli/d/r/s/1/file", dst, NULL};
    ck_assert_int_eq(sluice(NULL, NULL, gets3), 0);

    /* exit codes: 3 not found, 4 refused, 2 usage and configuration */
    const char *missing[] = {"artifact", "get", "d/r/s/1/nothing", dst, NULL};
    ck_assert_int_eq(sluice(NULL, &err, missing), 3);
    ck_assert_msg(strstr(err, "404"), "%s", err);
    free(err);
    const char *nofile[] = {"artifact", "put", "d/r/s/1/x", "/nonexistent/x", NULL};
    ck_assert_int_eq(sluice(NULL, NULL, nofile), 3);
    const char *badkey[] = {"artifact", "put", "d/../../etc/x", file, NULL};
    ck_assert_int_eq(sluice(NULL, &err, badkey), 4);
    ck_assert_msg(strstr(err, "invalid artifact key"), "%s", err);
    free(err);
    const char *badscheme[] = {"artifact", "get", "ftp://x/y", dst, NULL};
    ck_assert_int_eq(sluice(NULL, NULL, badscheme), 4);
    const char *usage[] = {"artifact", "get", "only-one", NULL};
    ck_assert_int_eq(sluice(NULL, NULL, usage), 2);
    setenv("SLUICE_ARTIFACTS_REPOSITORY", "ftp", 1);
    ck_assert_int_eq(sluice(NULL, &err, getf), 2);
    ck_assert_msg(strstr(err, "artifacts.repository must be none, s3 or fs, not 'ftp'"), "%s", err);
    free(err);
    free(file);
    free(src);
    free(dst);
}
END_TEST

/* What a pod's init container and sidecar run: a whole spec's inputs and outputs. */
START_TEST(test_artifacts_cli_spec)
{
    char *root = use_fs("podvol");
    char *work = xasprintf("%s/pod", tmp);
    char *cmd = xasprintf("mkdir -p %s/podvol/up/r/a/1/data && echo up > %s/podvol/up/r/a/1/data/x "
                          "&& mkdir -p %s && echo result > %s/result.txt",
                          tmp, tmp, work, work);
    ck_assert_int_eq(sh(cmd), 0);
    free(cmd);
    char *spec = xasprintf("%s/spec.json", tmp);
    FILE *f = fopen(spec, "w");
    fputs("{\"dag\":\"up\",\"run_id\":\"r\",\"step\":\"b\",\"map_index\":-1,\"attempt\":1,"
          "\"inputs\":{\"artifacts\":{\"data\":{\"from\":\"up/r/a/1/data\",\"path\":\"in/data\"},"
          "\"web\":{\"from\":\"file:///etc/hostname\"}}},"
          "\"outputs\":{\"artifacts\":{\"result\":{\"path\":\"result.txt\",\"key\":\"up/r/b/1/"
          "result\"}}}}",
          f);
    fclose(f);
    char *err = NULL;
    const char *get[] = {"artifact", "get", "--spec", spec, "--workdir", work, NULL};
    ck_assert_msg(sluice(NULL, &err, get) == 0, "%s", err);
    ck_assert_msg(strstr(err, "input artifact 'data'"), "%s", err);
    free(err);
    char *p = xasprintf("%s/in/data/x", work);
    char *text = file_text(p);
    ck_assert_str_eq(text, "up\n");
    free(text);
    free(p);
    p = xasprintf("%s/inputs/web", work); /* the default path */
    ck_assert_int_eq(access(p, R_OK), 0);
    free(p);
    const char *put[] = {"artifact", "put", "--spec", spec, "--workdir", work, NULL};
    ck_assert_int_eq(sluice(NULL, NULL, put), 0);
    p = xasprintf("%s/up/r/b/1/result", root);
    text = file_text(p);
    ck_assert_str_eq(text, "result\n");
    free(text);
    free(p);
    /* a declared output that is not there: exit 3 and the reason */
    p = xasprintf("%s/result.txt", work);
    unlink(p);
    free(p);
    ck_assert_int_eq(sluice(NULL, &err, put), 3);
    ck_assert_msg(strstr(err, "missing output artifact 'result' (result.txt)"), "%s", err);
    free(err);
    free(spec);
    free(work);
    free(root);
}
END_TEST

/* A directory artifact whose archive tries to climb out is refused; nothing escapes. */
START_TEST(test_artifacts_zip_slip_refused)
{
    use_s3("evil");
    /* a tar with ../escaped, built by GNU tar from a crafted tree (-P keeps the ..) */
    char *cmd = xasprintf("mkdir -p %s/z/a && echo pwned > %s/z/escaped && cd %s/z/a && "
                          "tar -P -cf %s/evil.tar ../escaped",
                          tmp, tmp, tmp, tmp);
    ck_assert_int_eq(sh(cmd), 0);
    free(cmd);
    struct s3_client *c = direct_client();
    struct strbuf err = STRBUF_INIT;
    char *tar = xasprintf("%s/evil.tar", tmp);
    const char *meta[] = {"sluice-kind=dir", NULL};
    ck_assert_int_eq(s3_put_file(c, "evil/d/r/s/1/data", tar, meta, NULL, NULL, &err), 0);
    char *dest = xasprintf("%s/victim/in/data", tmp);
    char *out = NULL, *e = NULL;
    const char *get[] = {"artifact", "get", "d/r/s/1/data", dest, NULL};
    ck_assert_int_eq(sluice(&out, &e, get), 4);
    ck_assert_msg(strstr(e, "refusing '../escaped'"), "%s", e);
    char *escaped = xasprintf("%s/victim/in/escaped", tmp);
    ck_assert_int_ne(access(escaped, F_OK), 0);
    ck_assert_int_ne(access(dest, F_OK), 0);
    free(escaped);
    free(out);
    free(e);
    free(dest);
    free(tar);
    strbuf_release(&err);
    s3_client_free(c);
}
END_TEST

/* The DAG repository at a commit, as an input (for pods without the code in the image). */
START_TEST(test_artifacts_git_input)
{
    struct harness_git g = {0};
    ck_assert_int_eq(harness_git_start(&g), 0);
    ck_assert_int_eq(harness_git_init_bare(&g, "dags.git"), 0);
    char *wt = NULL, *first = NULL, *second = NULL;
    ck_assert_int_eq(harness_git_clone(&wt, &g, "dags.git"), 0);
    ck_assert_int_eq(harness_git_write_file(wt, "iris/train.py", "print('v1')\n"), 0);
    ck_assert_int_eq(harness_git_commit(&first, wt, "v1"), 0);
    ck_assert_int_eq(harness_git_write_file(wt, "iris/train.py", "print('v2')\n"), 0);
    ck_assert_int_eq(harness_git_commit(&second, wt, "v2"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    char *url = harness_git_url(&g, "dags.git");
    char *dest = xasprintf("%s/code", tmp);
    char *err = NULL;
    /* the pinned commit, not the branch's head */
    const char *get[] = {"artifact", "get", "--git", url, "--commit", first, dest, NULL};
    ck_assert_msg(sluice(NULL, &err, get) == 0, "%s", err);
    free(err);
    char *p = xasprintf("%s/iris/train.py", dest);
    char *text = file_text(p);
    ck_assert_str_eq(text, "print('v1')\n");
    free(text);
    free(p);
    p = xasprintf("%s/.git", dest);
    ck_assert_int_ne(access(p, F_OK), 0);
    free(p);
    const char *nope[] = {"artifact", "get",      "--git",
                          url,        "--commit", "0123456789abcdef0123456789abcdef01234567",
                          dest,       NULL};
    ck_assert_int_eq(sluice(NULL, &err, nope), 3);
    free(err);
    harness_git_stop(&g);
    free(url);
    free(dest);
    free(wt);
    free(first);
    free(second);
}
END_TEST

Suite *suite_integration_artifacts(void)
{
    Suite *s = suite_create("integration_artifacts");
    TCase *tc = tcase_create("artifacts");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_artifacts_iris_s3);
    tcase_add_test(tc, test_artifacts_iris_fs);
    tcase_add_test(tc, test_artifacts_templates_render_locations);
    tcase_add_test(tc, test_artifacts_fan_in);
    tcase_add_test(tc, test_artifacts_missing_output_fails_step);
    tcase_add_test(tc, test_artifacts_failed_upload_is_transient);
    tcase_add_test(tc, test_artifacts_cli_round_trip);
    tcase_add_test(tc, test_artifacts_cli_spec);
    tcase_add_test(tc, test_artifacts_zip_slip_refused);
    tcase_add_test(tc, test_artifacts_git_input);
    suite_add_tcase(s, tc);
    return s;
}
