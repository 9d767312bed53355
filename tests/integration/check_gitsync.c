/*
 * tests/integration/check_gitsync.c - DAGs from a real Git repository.
 *
 * A bare repository served by `git daemon` on loopback (and the same repository over
 * file://) receives pushes as a user would make them: add, change, break, fix, delete,
 * rename, force-push. After each, a fetch and a registry sync against a real PostgreSQL,
 * and the store's view is checked. Then the checkouts, the failures (unreachable server,
 * missing ref, bad options, credentials kept out of messages), and the recoveries (a
 * corrupt clone, a process killed mid-fetch, stale locks).
 */
#include "scheduler/gitsync.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/gitauth.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "scheduler/registry.h"
#include "store/store.h"
#include "tests/harness/harness.h"
#include "tests/harness/pgtest.h"
#include "tests/testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct harness_git git;

static void git_setup(void)
{
    pgtest_setup();
    ck_assert_int_eq(harness_git_start(&git), 0);
}

static void git_teardown(void)
{
    harness_git_stop(&git);
    pgtest_teardown();
}

static char *dag_text(const char *name, const char *description)
{
    return xasprintf("name: %s\ndescription: %s\nsteps:\n  - {name: a, command: [echo]}\n", name,
                     description);
}

static void write_dag(const char *wt, const char *path, const char *name, const char *descr)
{
    char *t = dag_text(name, descr);
    ck_assert_int_eq(harness_git_write_file(wt, path, t), 0);
    free(t);
}

/* A fresh temporary directory for a gitsync; caller frees. */
static char *temp_dir(void)
{
    char *d = xstrdup("/tmp/sluice-gitsync-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(d));
    return d;
}

static void remove_dir(char *d)
{
    sl_remove_tree(AT_FDCWD, d);
    free(d);
}

static struct gitsync *open_ok(const char *url, const char *ref, const char *path, const char *dir)
{
    struct gitsync_options o = {.url = url, .ref = ref, .path = path, .dir = dir};
    struct gitsync *g = NULL;
    struct strbuf err = STRBUF_INIT;
    int rc = gitsync_open(&g, &o, &err);
    ck_assert_msg(rc == 0, "gitsync_open: %s", err.buf);
    strbuf_release(&err);
    return g;
}

/* Fetches and applies; returns the report. *commit gets the synced commit (caller frees). */
static struct registry_report sync_ok(struct store *st, struct gitsync *g,
                                      struct registry_cache *cache, char **commit)
{
    struct registry_snapshot snap;
    registry_snapshot_init(&snap);
    struct strbuf err = STRBUF_INIT;
    int rc = gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err);
    ck_assert_msg(rc == 0, "fetch: %s", err.buf);
    ck_assert_ptr_nonnull(snap.commit_sha);
    struct registry_report rep;
    rc = registry_apply(st, &snap, gitsync_name(g), NULL, cache, &rep, &err);
    ck_assert_msg(rc == 0, "apply: %s", err.buf);
    if (commit)
        *commit = xstrdup(snap.commit_sha);
    registry_snapshot_release(&snap);
    strbuf_release(&err);
    return rep;
}

static struct store_dag get_dag(struct store *st, const char *id, struct arena *mem)
{
    struct store_dag d;
    ck_assert_int_eq(store_dag_get(st, &d, id, mem), 0);
    return d;
}

static const char *import_errors(struct store *st, const char *file, struct arena *mem)
{
    struct store_import_error *v;
    size_t n;
    ck_assert_int_eq(store_import_errors_list(st, &v, &n, mem), 0);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].file_path, file))
            return v[i].errors_json;
    return NULL;
}

/* The commit a new manual run of dag is pinned to (NULL for none), in mem. */
static const char *run_commit(struct store *st, const char *dag, struct arena *mem)
{
    struct store_run r;
    bool existed;
    struct store_run_new in = {
        .dag_id = dag, .trigger = STORE_TRIGGER_MANUAL, .logical_time_ms = STORE_NO_TIME};
    CK_STORE_OK(st, store_run_create(st, &r, &existed, &in, mem));
    return r.commit_sha;
}

START_TEST(test_pushes_are_followed)
{
    struct store *st = NULL;
    struct strbuf err = STRBUF_INIT;
    char *url = pgtest_fresh_db("gitsync_push");
    ck_assert_msg(store_open(&st, url, NULL, &err) == 0, "%s", err.buf);
    free(url);
    CK_STORE_OK(st, store_migrate(st, NULL, NULL));
    ck_assert_int_eq(harness_git_init_bare(&git, "dags.git"), 0);
    char *wt;
    ck_assert_int_eq(harness_git_clone(&wt, &git, "dags.git"), 0);
    struct arena mem = ARENA_INIT;
    struct registry_cache cache;
    registry_cache_init(&cache);
    char *dir = temp_dir(), *sha = NULL, *c1 = NULL, *c = NULL;
    char *daemon_url = harness_git_url(&git, "dags.git");
    struct gitsync *g = open_ok(daemon_url, "main", "pipelines", dir);

    /* add: two DAGs under the sub-path, one file outside it, a script beside them */
    write_dag(wt, "pipelines/alpha.yaml", "alpha", "one");
    write_dag(wt, "pipelines/ml/beta.yml", "beta", "one");
    write_dag(wt, "elsewhere.yaml", "outside", "not under git.path");
    ck_assert_int_eq(harness_git_write_file(wt, "pipelines/ml/train.py", "print('v1')\n"), 0);
    ck_assert_int_eq(harness_git_commit(&sha, wt, "add"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    struct registry_report rep = sync_ok(st, g, &cache, &c1);
    ck_assert_str_eq(c1, sha);
    ck_assert_uint_eq(rep.files, 2);
    ck_assert_uint_eq(rep.parsed, 2);
    ck_assert_uint_eq(rep.changed, 2);
    struct store_dag beta = get_dag(st, "beta", &mem);
    ck_assert_str_eq(beta.file_path, "ml/beta.yml");
    ck_assert_int_eq(store_dag_get(st, &beta, "outside", &mem), SL_ENOENT);
    struct store_dag_version v;
    CK_STORE_OK(st, store_dag_version_get(st, &v, beta.current_version_id, &mem));
    ck_assert_str_eq(v.commit_sha, sha);
    ck_assert_str_eq(run_commit(st, "beta", &mem), sha);
    int64_t beta_v1 = beta.current_version_id;
    free(sha);

    /* nothing pushed: nothing parsed */
    rep = sync_ok(st, g, &cache, &c);
    ck_assert_str_eq(c, c1);
    ck_assert_uint_eq(rep.parsed, 0);
    ck_assert_uint_eq(rep.valid, 2);
    free(c);

    /* change one file and a script: only that file is parsed; both DAGs' new runs take the
     * new commit (beta's scripts changed even though its file did not) */
    write_dag(wt, "pipelines/alpha.yaml", "alpha", "two");
    ck_assert_int_eq(harness_git_write_file(wt, "pipelines/ml/train.py", "print('v2')\n"), 0);
    ck_assert_int_eq(harness_git_commit(&sha, wt, "change"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    rep = sync_ok(st, g, &cache, &c);
    ck_assert_str_eq(c, sha);
    ck_assert_uint_eq(rep.parsed, 1);
    ck_assert_uint_eq(rep.changed, 1);
    ck_assert_int_eq(get_dag(st, "beta", &mem).current_version_id, beta_v1);
    ck_assert_str_eq(run_commit(st, "beta", &mem), sha);
    ck_assert_str_eq(run_commit(st, "alpha", &mem), sha);
    char *c2 = c;
    free(sha);

    /* break beta: an import error with the commit and line:column; its last good version
     * and commit stay current */
    ck_assert_int_eq(
        harness_git_write_file(wt, "pipelines/ml/beta.yml",
                               "name: beta\nsteps:\n  - {name: a, command: [echo], timeout: 5}\n"),
        0);
    ck_assert_int_eq(harness_git_commit(&sha, wt, "break"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    rep = sync_ok(st, g, &cache, &c);
    free(c);
    ck_assert_uint_eq(rep.invalid, 1);
    struct store_import_error *ie;
    size_t n_ie;
    CK_STORE_OK(st, store_import_errors_list(st, &ie, &n_ie, &mem));
    ck_assert_uint_eq(n_ie, 1);
    ck_assert_str_eq(ie[0].file_path, "ml/beta.yml");
    ck_assert_str_eq(ie[0].commit_sha, sha);
    ck_assert_msg(strstr(ie[0].errors_json, "\"line\": 3") && strstr(ie[0].errors_json, "unit"),
                  "%s", ie[0].errors_json);
    beta = get_dag(st, "beta", &mem);
    ck_assert(beta.is_active);
    ck_assert_int_eq(beta.current_version_id, beta_v1);
    ck_assert_str_eq(run_commit(st, "beta", &mem), c2);
    ck_assert_str_eq(run_commit(st, "alpha", &mem), sha);
    /* unchanged and still broken: not parsed again, the error stays */
    rep = sync_ok(st, g, &cache, &c);
    free(c);
    ck_assert_uint_eq(rep.parsed, 0);
    ck_assert_uint_eq(rep.invalid, 1);
    ck_assert_ptr_nonnull(import_errors(st, "ml/beta.yml", &mem));
    free(sha);

    /* fix it: the error goes, a new version */
    write_dag(wt, "pipelines/ml/beta.yml", "beta", "three");
    ck_assert_int_eq(harness_git_commit(NULL, wt, "fix"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    rep = sync_ok(st, g, &cache, &c);
    free(c);
    ck_assert_uint_eq(rep.invalid, 0);
    ck_assert_ptr_null(import_errors(st, "ml/beta.yml", &mem));
    ck_assert_int_ne(get_dag(st, "beta", &mem).current_version_id, beta_v1);

    /* rename a file: the same DAG, no conflict */
    ck_assert_int_eq(
        harness_git_run(NULL, wt, "mv", "pipelines/alpha.yaml", "pipelines/renamed.yaml", NULL), 0);
    ck_assert_int_eq(harness_git_commit(NULL, wt, "rename"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    rep = sync_ok(st, g, &cache, &c);
    free(c);
    struct store_dag alpha = get_dag(st, "alpha", &mem);
    ck_assert(alpha.is_active);
    ck_assert_str_eq(alpha.file_path, "renamed.yaml");

    /* one name in two files: both are errors, then the copy goes and all is well */
    write_dag(wt, "pipelines/copy.yaml", "alpha", "copy");
    ck_assert_int_eq(harness_git_commit(NULL, wt, "copy"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    rep = sync_ok(st, g, &cache, &c);
    free(c);
    ck_assert_uint_eq(rep.invalid, 2);
    ck_assert_ptr_nonnull(strstr(import_errors(st, "renamed.yaml", &mem), "copy.yaml"));
    ck_assert_int_eq(harness_git_remove_file(wt, "pipelines/copy.yaml"), 0);
    ck_assert_int_eq(harness_git_commit(NULL, wt, "uncopy"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    rep = sync_ok(st, g, &cache, &c);
    free(c);
    ck_assert_uint_eq(rep.invalid, 0);
    ck_assert_ptr_null(import_errors(st, "renamed.yaml", &mem));
    ck_assert(get_dag(st, "alpha", &mem).is_active);

    /* delete: deactivated, history kept */
    ck_assert_int_eq(harness_git_remove_file(wt, "pipelines/renamed.yaml"), 0);
    ck_assert_int_eq(harness_git_commit(&sha, wt, "delete"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    rep = sync_ok(st, g, &cache, &c);
    free(c);
    ck_assert_uint_eq(rep.deactivated, 1);
    alpha = get_dag(st, "alpha", &mem);
    ck_assert(!alpha.is_active);
    ck_assert_int_gt(alpha.current_version_id, 0);

    /* force-push: history rewritten to drop the delete and change alpha instead */
    ck_assert_int_eq(harness_git_run(NULL, wt, "reset", "--hard", "HEAD~1", NULL), 0);
    write_dag(wt, "pipelines/renamed.yaml", "alpha", "rewritten");
    char *rewritten = NULL;
    ck_assert_int_eq(harness_git_commit(&rewritten, wt, "rewrite"), 0);
    ck_assert_int_eq(harness_git_push(wt, 1), 0);
    rep = sync_ok(st, g, &cache, &c);
    ck_assert_str_eq(c, rewritten);
    free(c);
    ck_assert(get_dag(st, "alpha", &mem).is_active);
    ck_assert_str_eq(run_commit(st, "alpha", &mem), rewritten);
    gitsync_close(g);

    /* the same repository over file://, in a new directory: the same commit */
    char *path = harness_git_repo_path(&git, "dags.git");
    char *file_url = xasprintf("file://%s", path);
    char *dir2 = temp_dir();
    g = open_ok(file_url, "main", "pipelines/", dir2);
    struct registry_snapshot snap;
    registry_snapshot_init(&snap);
    ck_assert_int_eq(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err), 0);
    ck_assert_str_eq(snap.commit_sha, rewritten);
    ck_assert_uint_eq(snap.n_files, 2);
    ck_assert_str_eq(snap.files[0].path, "ml/beta.yml");
    ck_assert_str_eq(snap.files[1].path, "renamed.yaml");
    ck_assert_ptr_nonnull(strstr(snap.files[1].content, "rewritten"));
    registry_snapshot_release(&snap);
    gitsync_close(g);

    free(path);
    free(file_url);
    free(rewritten);
    free(sha);
    free(c1);
    free(c2);
    free(daemon_url);
    remove_dir(dir);
    remove_dir(dir2);
    free(wt);
    registry_cache_release(&cache);
    arena_release(&mem);
    strbuf_release(&err);
    store_close(st);
}
END_TEST

static mode_t mode_of(const char *dir, const char *rel)
{
    char *p = xasprintf("%s/%s", dir, rel);
    struct stat st;
    ck_assert_msg(lstat(p, &st) == 0, "%s: %s", p, strerror(errno));
    free(p);
    return st.st_mode;
}

START_TEST(test_checkouts)
{
    ck_assert_int_eq(harness_git_init_bare(&git, "co.git"), 0);
    char *wt, *c1, *c2, *c3;
    ck_assert_int_eq(harness_git_clone(&wt, &git, "co.git"), 0);
    write_dag(wt, "a.yaml", "a", "one");
    ck_assert_int_eq(harness_git_write_file(wt, "bin/run.sh", "#!/bin/sh\necho hi\n"), 0);
    char *script = xasprintf("%s/bin/run.sh", wt);
    ck_assert_int_eq(chmod(script, 0755), 0);
    free(script);
    ck_assert_int_eq(harness_git_commit(&c1, wt, "one"), 0);
    ck_assert_int_eq(harness_git_run(NULL, wt, "tag", "v1", NULL), 0);
    ck_assert_int_eq(harness_git_run(NULL, wt, "push", "origin", "main", "v1", NULL), 0);
    write_dag(wt, "a.yaml", "a", "two");
    ck_assert_int_eq(harness_git_commit(&c2, wt, "two"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);

    char *dir = temp_dir();
    char *url = harness_git_url(&git, "co.git");
    /* a tag is followed like a branch */
    struct gitsync *g = open_ok(url, "v1", NULL, dir);
    struct registry_snapshot snap;
    struct strbuf err = STRBUF_INIT;
    registry_snapshot_init(&snap);
    ck_assert_int_eq(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err), 0);
    ck_assert_str_eq(snap.commit_sha, c1);
    registry_snapshot_release(&snap);
    gitsync_close(g);

    g = open_ok(url, "main", NULL, dir);
    registry_snapshot_init(&snap);
    ck_assert_int_eq(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err), 0);
    ck_assert_str_eq(snap.commit_sha, c2);
    registry_snapshot_release(&snap);

    /* the fetch made c2's checkout; c1's is made when asked for */
    char *co2 = NULL, *co1 = NULL;
    ck_assert_int_eq(gitsync_checkout(g, &co2, c2, &err), 0);
    char *text = xasprintf("%s/a.yaml", co2);
    char *content = test_read_file(text, NULL);
    ck_assert_ptr_nonnull(strstr(content, "two"));
    free(content);
    free(text);
    ck_assert_int_eq(gitsync_checkout(g, &co1, c1, &err), 0);
    ck_assert_int_eq(mode_of(co1, "a.yaml") & 0777, 0444);
    ck_assert_int_eq(mode_of(co1, "bin/run.sh") & 0777, 0555);
    ck_assert_int_eq(mode_of(co1, "bin") & 0777, 0555);
    ck_assert_int_eq(mode_of(co1, ".") & 0777, 0555);
    if (geteuid() != 0) { /* root ignores permission bits */
        char *p = xasprintf("%s/new", co1);
        ck_assert_int_lt(open(p, O_WRONLY | O_CREAT, 0644), 0);
        free(p);
    }

    /* bad or unknown commits */
    ck_assert_int_eq(gitsync_checkout(g, &co1, "../../etc", &err), SL_EINVAL);
    ck_assert_int_eq(gitsync_checkout(g, &co1, "0123456789012345678901234567890123456789", &err),
                     SL_ENOENT);

    /* gc keeps what is listed and what is young, removes the rest */
    size_t removed = 99;
    const char *keep[] = {c2};
    ck_assert_int_eq(gitsync_gc(g, keep, 1, 60000, &removed), 0);
    ck_assert_uint_eq(removed, 0);
    ck_assert_int_eq(gitsync_gc(g, keep, 1, 0, &removed), 0);
    ck_assert_uint_eq(removed, 1);
    struct stat st;
    ck_assert_int_ne(stat(co1, &st), 0);
    ck_assert_int_eq(stat(co2, &st), 0);

    /* a checkout removed while needed is made again */
    char *again = NULL;
    ck_assert_int_eq(gitsync_checkout(g, &again, c1, &err), 0);
    ck_assert_str_eq(again, co1);
    ck_assert_int_eq(stat(co1, &st), 0);
    /* made from the previous checkout: the unchanged file is shared, the changed one not */
    char *s1 = xasprintf("%s/bin/run.sh", co1), *s2 = xasprintf("%s/bin/run.sh", co2);
    char *a1 = xasprintf("%s/a.yaml", co1), *a2 = xasprintf("%s/a.yaml", co2);
    struct stat x, y;
    ck_assert_int_eq(stat(s1, &x), 0);
    ck_assert_int_eq(stat(s2, &y), 0);
    ck_assert(x.st_ino == y.st_ino);
    ck_assert_int_eq(stat(a1, &x), 0);
    ck_assert_int_eq(stat(a2, &y), 0);
    ck_assert(x.st_ino != y.st_ino);
    char *content1 = test_read_file(a1, NULL);
    ck_assert_ptr_nonnull(strstr(content1, "one"));
    free(content1);
    free(s1);
    free(s2);
    free(a1);
    free(a2);

    /* a commit made after the last fetch is not there yet */
    write_dag(wt, "a.yaml", "a", "three");
    ck_assert_int_eq(harness_git_commit(&c3, wt, "three"), 0);
    ck_assert_int_eq(gitsync_checkout(g, &co1, c3, &err), SL_ENOENT);

    gitsync_close(g);
    free(again);
    free(co1);
    free(co2);
    free(c1);
    free(c2);
    free(c3);
    free(url);
    free(wt);
    remove_dir(dir);
    strbuf_release(&err);
}
END_TEST

START_TEST(test_failures_change_nothing)
{
    char *dir = temp_dir();
    struct gitsync *g = NULL;
    struct strbuf err = STRBUF_INIT;

    /* options refused up front */
    struct gitsync_options bad[] = {
        {.url = "git://127.0.0.1/x", .ref = "bad..ref", .dir = dir},
        {.url = "git://127.0.0.1/x", .ref = "with space", .dir = dir},
        {.url = "git://127.0.0.1/x", .path = "../up", .dir = dir},
        {.url = "git://127.0.0.1/x", .path = "/abs", .dir = dir},
        {.url = "git@example.com:org/dags.git", .dir = dir},
        {.url = "ssh://git@example.com/org/dags.git", .dir = dir},
        {.url = "", .dir = dir},
    };
    const char *why[] = {"git.ref",     "git.ref",     "git.path", "git.path",
                         "known_hosts", "known_hosts", "URL"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        strbuf_reset(&err);
        ck_assert_int_eq(gitsync_open(&g, &bad[i], &err), SL_EINVAL);
        ck_assert_msg(strstr(err.buf, why[i]), "case %zu: %s", i, err.buf);
    }

    /* nothing listens: an error that names the server without the password */
    struct gitsync_options o = {.url = "http://sluice:s3cr3t@127.0.0.1:9/dags.git", .dir = dir};
    ck_assert_int_eq(gitsync_open(&g, &o, &err), 0);
    ck_assert_ptr_null(strstr(gitsync_name(g), "s3cr3t"));
    ck_assert_str_eq(gitsync_name(g), "git:http://127.0.0.1:9/dags.git#main");
    struct registry_snapshot snap;
    registry_snapshot_init(&snap);
    strbuf_reset(&err);
    ck_assert_int_eq(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err), SL_EIO);
    ck_assert_msg(strstr(err.buf, "cannot reach http://127.0.0.1:9/dags.git"), "%s", err.buf);
    ck_assert_ptr_null(strstr(err.buf, "s3cr3t"));
    ck_assert_uint_eq(snap.n_files, 0);

    /* the directory is ours alone */
    struct gitsync *g2 = NULL;
    strbuf_reset(&err);
    ck_assert_int_eq(gitsync_open(&g2, &o, &err), SL_EEXIST);
    ck_assert_ptr_nonnull(strstr(err.buf, "in use"));
    gitsync_close(g);

    /* a missing branch, a missing sub-path: on a server of this test's own, which goes
     * away below */
    struct harness_git own = {0};
    ck_assert_int_eq(harness_git_start(&own), 0);
    ck_assert_int_eq(harness_git_init_bare(&own, "f.git"), 0);
    char *wt;
    ck_assert_int_eq(harness_git_clone(&wt, &own, "f.git"), 0);
    write_dag(wt, "a.yaml", "a", "one");
    ck_assert_int_eq(harness_git_commit(NULL, wt, "one"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    char *url = harness_git_url(&own, "f.git");
    g = open_ok(url, "release", NULL, dir);
    strbuf_reset(&err);
    ck_assert_int_eq(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err), SL_ENOENT);
    ck_assert_ptr_nonnull(strstr(err.buf, "no branch or tag 'release'"));
    gitsync_close(g);
    g = open_ok(url, "main", "dags", dir);
    strbuf_reset(&err);
    ck_assert_int_eq(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err), SL_ENOENT);
    ck_assert_ptr_nonnull(strstr(err.buf, "git.path 'dags' is not a directory"));
    gitsync_close(g);

    /* the server goes away between syncs */
    g = open_ok(url, "main", NULL, dir);
    ck_assert_int_eq(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err), 0);
    ck_assert_uint_eq(snap.n_files, 1);
    registry_snapshot_release(&snap);
    ck_assert_int_eq(harness_git_stop(&own), 0);
    strbuf_reset(&err);
    ck_assert_int_eq(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err), SL_EIO);
    ck_assert_ptr_nonnull(strstr(err.buf, "cannot reach"));
    ck_assert_uint_eq(snap.n_files, 0);
    gitsync_close(g);

    free(url);
    free(wt);
    remove_dir(dir);
    strbuf_release(&err);
}
END_TEST

/* Counts the entries of dir whose name starts with prefix. */
static int count_prefixed(const char *dir, const char *prefix)
{
    char *cmd = xasprintf("ls -a %s", dir);
    FILE *p = popen(cmd, "r");
    char line[512];
    int n = 0;
    while (p && fgets(line, sizeof(line), p))
        n += !strncmp(line, prefix, strlen(prefix));
    if (p)
        pclose(p);
    free(cmd);
    return n;
}

START_TEST(test_recovers_from_damage)
{
    ck_assert_int_eq(harness_git_init_bare(&git, "r.git"), 0);
    char *wt, *c1;
    ck_assert_int_eq(harness_git_clone(&wt, &git, "r.git"), 0);
    /* enough files that a fetch takes a while to kill it in the middle */
    for (int i = 0; i < 300; i++) {
        char *path = xasprintf("d/dag%03d.yaml", i), *name = xasprintf("dag%03d", i);
        write_dag(wt, path, name, "bulk");
        free(path);
        free(name);
    }
    ck_assert_int_eq(harness_git_commit(&c1, wt, "bulk"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    char *url = harness_git_url(&git, "r.git");
    char *dir = temp_dir();
    struct strbuf err = STRBUF_INIT;
    struct registry_snapshot snap;

    /* a process killed at various points of its first fetch */
    for (int delay_us = 0; delay_us <= 40000; delay_us += 10000) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            struct gitsync *g = open_ok(url, "main", NULL, dir);
            struct registry_snapshot s;
            struct strbuf e = STRBUF_INIT;
            registry_snapshot_init(&s);
            _exit(gitsync_fetch(g, &s, DSL_DEFAULT_MAX_BYTES, &e) == 0 ? 0 : 1);
        }
        struct timespec ts = {0, (long)delay_us * 1000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        struct gitsync *g = open_ok(url, "main", NULL, dir);
        registry_snapshot_init(&snap);
        strbuf_reset(&err);
        ck_assert_msg(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err) == 0,
                      "after a kill at %d us: %s", delay_us, err.buf);
        ck_assert_str_eq(snap.commit_sha, c1);
        ck_assert_uint_eq(snap.n_files, 300);
        registry_snapshot_release(&snap);
        gitsync_close(g);
    }

    /* stale locks and half-written checkouts, as a killed process leaves them */
    char *lock = xasprintf("%s/repo.git/refs/sluice/head.lock", dir);
    char *tmp = xasprintf("%s/checkouts/.tmp-%s-1-1", dir, c1);
    ck_assert_int_eq(harness_git_write_file(dir, "repo.git/refs/sluice/head.lock", "x"), 0);
    ck_assert_int_eq(sl_mkdir_p(tmp), 0);
    struct gitsync *g = open_ok(url, "main", NULL, dir);
    struct stat st;
    ck_assert_int_ne(stat(lock, &st), 0);
    ck_assert_int_ne(stat(tmp, &st), 0);
    ck_assert_int_eq(count_prefixed(gitsync_checkouts_dir(g), ".tmp-"), 0);

    /* a corrupt clone: every object gone; the fetch clones again */
    gitsync_close(g);
    char *objects = xasprintf("%s/repo.git/objects", dir);
    ck_assert_int_eq(sl_remove_tree(AT_FDCWD, objects), 0);
    ck_assert_int_eq(sl_mkdir_p(objects), 0);
    char *co = xasprintf("%s/checkouts/%s", dir, c1);
    ck_assert_int_eq(sl_remove_tree(AT_FDCWD, co), 0);
    g = open_ok(url, "main", NULL, dir);
    registry_snapshot_init(&snap);
    strbuf_reset(&err);
    ck_assert_msg(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err) == 0, "%s", err.buf);
    ck_assert_str_eq(snap.commit_sha, c1);
    ck_assert_uint_eq(snap.n_files, 300);
    ck_assert_int_eq(stat(co, &st), 0);
    registry_snapshot_release(&snap);
    gitsync_close(g);

    free(co);
    free(objects);
    free(lock);
    free(tmp);
    free(c1);
    free(url);
    free(wt);
    remove_dir(dir);
    strbuf_release(&err);
}
END_TEST

/* --- ssh: a private sshd on loopback -------------------------------------------------- */

struct sshd {
    char *dir;
    int port;
    pid_t pid;
    char *host_pub, *other_pub; /* "ssh-ed25519 <base64>" */
};

static char *first_line(const char *path)
{
    char *t = test_read_file(path, NULL);
    t[strcspn(t, "\n")] = '\0';
    /* "ssh-ed25519 AAAA... comment": keep the type and the key */
    char *sp = strchr(t, ' ');
    if (sp && (sp = strchr(sp + 1, ' ')))
        *sp = '\0';
    return t;
}

static void run_ok(const char *cmd)
{
    ck_assert_msg(system(cmd) == 0, "%s", cmd);
}

static int free_port(void)
{
    char *out = NULL;
    char *argv[] = {"/usr/bin/python3", "-c",
                    "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); "
                    "print(s.getsockname()[1])",
                    NULL};
    ck_assert_int_eq(test_run(argv, &out, NULL), 0);
    int port = (int)strtol(out, NULL, 10);
    free(out);
    return port;
}

/* Starts sshd as the current user, accepting the key <dir>/client (made here). */
static void sshd_start(struct sshd *d)
{
    memset(d, 0, sizeof(*d));
    d->dir = temp_dir();
    char *cmd = xasprintf("cd %s && ssh-keygen -q -t ed25519 -N '' -f host && "
                          "ssh-keygen -q -t ed25519 -N '' -f other && "
                          "ssh-keygen -q -t ed25519 -N '' -f client && "
                          "cp client.pub authorized_keys && chmod 600 authorized_keys && "
                          "mkdir -p /run/sshd 2>/dev/null; true",
                          d->dir);
    run_ok(cmd);
    free(cmd);
    char *p = xasprintf("%s/host.pub", d->dir), *o = xasprintf("%s/other.pub", d->dir);
    d->host_pub = first_line(p);
    d->other_pub = first_line(o);
    free(p);
    free(o);
    d->port = free_port();
    char *cfg = xasprintf("%s/sshd_config", d->dir);
    FILE *f = fopen(cfg, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "Port %d\nListenAddress 127.0.0.1\nHostKey %s/host\nPidFile %s/sshd.pid\n"
            "AuthorizedKeysFile %s/authorized_keys\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "PermitRootLogin prohibit-password\n",
            d->port, d->dir, d->dir, d->dir);
    fclose(f);
    d->pid = fork();
    ck_assert_int_ge(d->pid, 0);
    if (d->pid == 0) {
        char *log = xasprintf("%s/sshd.log", d->dir);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        execl("/usr/sbin/sshd", "/usr/sbin/sshd", "-D", "-e", "-f", cfg, (char *)NULL);
        _exit(127);
    }
    free(cfg);
    /* ready when it answers with its banner */
    char *probe = xasprintf("for i in $(seq 100); do "
                            "(exec 3<>/dev/tcp/127.0.0.1/%d && head -c 4 <&3) 2>/dev/null "
                            "| grep -q SSH && exit 0; sleep 0.05; done; exit 1",
                            d->port);
    char *argv[] = {"/bin/bash", "-c", probe, NULL};
    ck_assert_msg(test_run(argv, NULL, NULL) == 0, "sshd did not start (see %s/sshd.log)", d->dir);
    free(probe);
}

static void sshd_stop(struct sshd *d)
{
    kill(d->pid, SIGTERM);
    waitpid(d->pid, NULL, 0);
    remove_dir(d->dir);
    free(d->host_pub);
    free(d->other_pub);
}

/*
 * In a child: a fetch with o must return want_rc, with a message containing want (when
 * it fails) or the commit want (when it succeeds). Returns 0 if so; the child says why
 * not on stderr. libgit2 1.5's ssh transport leaks a few dozen bytes per connection
 * inside git_remote_connect() (nothing a caller can free), so ssh fetches run in a child
 * that leaves with _exit(), out of the leak checker's sight; the same code of ours is
 * leak-checked over git:// and file:// above.
 */
static int ssh_fetch(const struct gitsync_options *o, int want_rc, const char *want)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct gitsync *g = NULL;
        struct strbuf err = STRBUF_INIT;
        struct registry_snapshot snap;
        registry_snapshot_init(&snap);
        if (gitsync_open(&g, o, &err) < 0)
            _exit(2);
        int rc = gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err);
        bool ok = rc == want_rc &&
                  (rc == 0 ? snap.commit_sha && !strcmp(snap.commit_sha, want) && snap.n_files == 1
                           : strstr(err.buf, want) && snap.n_files == 0);
        if (!ok)
            fprintf(stderr, "ssh_fetch: rc %d, commit %s, message: %s\n", rc,
                    snap.commit_sha ? snap.commit_sha : "-", err.buf);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/*
 * `sluice artifact get --git URL --commit SHA DEST` (what a `from: git` input runs, in a
 * worker or a pod's stage-in container) with the git.* settings given as SLUICE_GIT_*
 * variables: vars is "NAME=value" pairs, NULL-terminated (a NULL value unsets NAME).
 * Returns the exit status; *out_err gets stderr.
 */
static int artifact_git(const char *url, const char *commit, const char *dest, char **out_err,
                        const char *const *vars)
{
    static const char *const names[] = {"SLUICE_GIT_USERNAME", "SLUICE_GIT_PASSWORD",
                                        "SLUICE_GIT_SSH_KEY_FILE", "SLUICE_GIT_KNOWN_HOSTS_FILE",
                                        "SLUICE_GIT_CA_FILE"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unsetenv(names[i]);
    for (; vars && *vars; vars++) {
        char *name = xstrndup(*vars, strcspn(*vars, "="));
        setenv(name, *vars + strlen(name) + 1, 1);
        free(name);
    }
    const char *argv[] = {
        test_sluice_bin(), "artifact", "get", "--config", "/dev/null", "--git", url,
        "--commit",        commit,     dest,  NULL};
    int rc = test_run((char *const *)argv, NULL, out_err);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unsetenv(names[i]);
    return rc;
}

START_TEST(test_ssh_with_key_and_known_hosts)
{
    struct sshd d;
    sshd_start(&d);
    ck_assert_int_eq(harness_git_init_bare(&git, "ssh.git"), 0);
    char *wt, *c1;
    ck_assert_int_eq(harness_git_clone(&wt, &git, "ssh.git"), 0);
    write_dag(wt, "a.yaml", "a", "over ssh");
    ck_assert_int_eq(harness_git_commit(&c1, wt, "one"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    char *repo = harness_git_repo_path(&git, "ssh.git");
    const char *user = getenv("USER") && *getenv("USER") ? getenv("USER") : "root";
    char *url = xasprintf("ssh://%s@127.0.0.1:%d%s", user, d.port, repo);
    char *key = xasprintf("%s/client", d.dir), *other_key = xasprintf("%s/other", d.dir);
    char *known = xasprintf("%s/known_hosts", d.dir), *wrong = xasprintf("%s/wrong_hosts", d.dir);
    char *line = xasprintf("# test\n[127.0.0.1]:%d %s\n", d.port, d.host_pub);
    ck_assert_int_eq(harness_git_write_file(d.dir, "known_hosts", line), 0);
    free(line);
    line = xasprintf("127.0.0.1 %s\n", d.other_pub);
    ck_assert_int_eq(harness_git_write_file(d.dir, "wrong_hosts", line), 0);
    free(line);
    char *dir = temp_dir();
    struct strbuf err = STRBUF_INIT;

    /* the right key and a known host: the commit's files */
    struct gitsync_options o = {
        .url = url, .dir = dir, .ssh_key_file = key, .known_hosts_file = known};
    struct gitsync *g = NULL;
    ck_assert_int_eq(gitsync_open(&g, &o, &err), 0);
    char *shown = xasprintf("git:ssh://127.0.0.1:%d%s#main", d.port, repo);
    ck_assert_str_eq(gitsync_name(g), shown); /* the user is not shown */
    free(shown);
    gitsync_close(g);
    ck_assert_int_eq(ssh_fetch(&o, 0, c1), 0);

    /* a host key that known_hosts does not list, a client key the server does not
     * accept: both refused */
    o.known_hosts_file = wrong;
    ck_assert_int_eq(ssh_fetch(&o, SL_EIO, "host key of 127.0.0.1 is not in"), 0);
    o.known_hosts_file = known;
    o.ssh_key_file = other_key;
    ck_assert_int_eq(ssh_fetch(&o, SL_EIO, "cannot reach"), 0);

    /* a `from: git` input over ssh with the same settings; the binary runs without the
     * leak checker, for libgit2's ssh leak above */
    char *dest = xasprintf("%s/code", dir), *file = xasprintf("%s/code/a.yaml", dir);
    char *e = NULL;
    char *key_var = xasprintf("SLUICE_GIT_SSH_KEY_FILE=%s", key);
    char *known_var = xasprintf("SLUICE_GIT_KNOWN_HOSTS_FILE=%s", known);
    char *wrong_var = xasprintf("SLUICE_GIT_KNOWN_HOSTS_FILE=%s", wrong);
    const char *saved = getenv("ASAN_OPTIONS");
    char *asan = saved ? xstrdup(saved) : NULL;
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
    const char *good[] = {key_var, known_var, NULL};
    ck_assert_msg(artifact_git(url, c1, dest, &e, good) == 0, "%s", e);
    ck_assert_int_eq(access(file, R_OK), 0);
    free(e);
    const char *unknown_host[] = {key_var, wrong_var, NULL};
    ck_assert_int_eq(artifact_git(url, c1, dest, &e, unknown_host), 4);
    ck_assert_msg(strstr(e, "host key of 127.0.0.1 is not in"), "%s", e);
    free(e);
    const char *no_known_hosts[] = {key_var, NULL};
    ck_assert_int_eq(artifact_git(url, c1, dest, &e, no_known_hosts), 4);
    ck_assert_msg(strstr(e, "git.known_hosts_file"), "%s", e);
    free(e);
    /* a URL without a user (ssh asks the user name first), the user from git.username */
    char *bare_url = xasprintf("ssh://127.0.0.1:%d%s", d.port, repo);
    char *user_var = xasprintf("SLUICE_GIT_USERNAME=%s", user);
    const char *by_setting[] = {key_var, known_var, user_var, NULL};
    ck_assert_int_eq(remove(file), 0);
    ck_assert_msg(artifact_git(bare_url, c1, dest, &e, by_setting) == 0, "%s", e);
    ck_assert_int_eq(access(file, R_OK), 0);
    free(e);
    free(user_var);
    free(bare_url);
    if (asan)
        setenv("ASAN_OPTIONS", asan, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(asan);
    free(key_var);
    free(known_var);
    free(wrong_var);
    free(dest);
    free(file);

    sshd_stop(&d);
    remove_dir(dir);
    free(known);
    free(wrong);
    free(key);
    free(other_key);
    free(url);
    free(repo);
    free(c1);
    free(wt);
    strbuf_release(&err);
}
END_TEST

/* --- https: smart HTTP over TLS with basic auth ----------------------------------------- */

START_TEST(test_https_with_basic_auth_and_a_private_ca)
{
    struct test_git_https h;
    test_git_https_start(&h, git.repos_dir, "sluice", "t0ken");
    ck_assert_int_eq(harness_git_init_bare(&git, "web.git"), 0);
    char *wt, *c1;
    ck_assert_int_eq(harness_git_clone(&wt, &git, "web.git"), 0);
    write_dag(wt, "a.yaml", "a", "over https");
    ck_assert_int_eq(harness_git_commit(&c1, wt, "one"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    char *url = xasprintf("%s/web.git", h.url_base);
    char *dir = temp_dir();
    struct strbuf err = STRBUF_INIT;
    struct registry_snapshot snap;
    struct gitsync *g = NULL;

    /* the token and the private CA: the commit's files */
    struct gitsync_options o = {
        .url = url, .dir = dir, .username = "sluice", .password = "t0ken", .ca_file = h.ca};
    ck_assert_int_eq(gitsync_open(&g, &o, &err), 0);
    registry_snapshot_init(&snap);
    ck_assert_msg(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err) == 0, "%s", err.buf);
    ck_assert_str_eq(snap.commit_sha, c1);
    ck_assert_uint_eq(snap.n_files, 1);
    registry_snapshot_release(&snap);
    gitsync_close(g);

    /* a wrong token: refused, and the token appears nowhere */
    o.password = "wr0ng-t0ken";
    ck_assert_int_eq(gitsync_open(&g, &o, &err), 0);
    strbuf_reset(&err);
    ck_assert_int_eq(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err), SL_EIO);
    ck_assert_msg(strstr(err.buf, "authentication failed"), "%s", err.buf);
    ck_assert_ptr_null(strstr(err.buf, "wr0ng"));
    gitsync_close(g);

    /* no credentials at all */
    o.password = NULL;
    ck_assert_int_eq(gitsync_open(&g, &o, &err), 0);
    strbuf_reset(&err);
    ck_assert_int_eq(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err), SL_EIO);
    ck_assert_msg(strstr(err.buf, "none are configured"), "%s", err.buf);
    gitsync_close(g);

    /* the system's CAs do not know this server: refused */
    o.password = "t0ken";
    o.ca_file = NULL;
    ck_assert_int_eq(gitsync_open(&g, &o, &err), 0);
    strbuf_reset(&err);
    ck_assert_int_eq(gitsync_fetch(g, &snap, DSL_DEFAULT_MAX_BYTES, &err), SL_EIO);
    ck_assert_msg(strstr(err.buf, "cannot reach"), "%s", err.buf);
    gitsync_close(g);

    /* a CA file that cannot be read is a configuration error */
    o.ca_file = "/nonexistent/ca.pem";
    strbuf_reset(&err);
    ck_assert_int_eq(gitsync_open(&g, &o, &err), SL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.buf, "git.ca_file"));

    /* a `from: git` input: the same credentials from the git.* settings */
    char *dest = xasprintf("%s/code", dir), *file = xasprintf("%s/code/a.yaml", dir);
    char *ca_var = xasprintf("SLUICE_GIT_CA_FILE=%s", h.ca);
    char *e = NULL;
    const char *good[] = {"SLUICE_GIT_USERNAME=sluice", "SLUICE_GIT_PASSWORD=t0ken", ca_var, NULL};
    ck_assert_msg(artifact_git(url, c1, dest, &e, good) == 0, "%s", e);
    ck_assert_int_eq(access(file, R_OK), 0);
    free(e);
    /* a wrong token: refused (exit 4: no retry can help), never shown */
    const char *wrong[] = {"SLUICE_GIT_USERNAME=sluice", "SLUICE_GIT_PASSWORD=wr0ng-t0ken", ca_var,
                           NULL};
    ck_assert_int_eq(artifact_git(url, c1, dest, &e, wrong), 4);
    ck_assert_msg(strstr(e, "authentication failed") && !strstr(e, "wr0ng"), "%s", e);
    free(e);
    /* none at all: the server asks, and the message says what to configure */
    const char *none[] = {ca_var, NULL};
    ck_assert_int_eq(artifact_git(url, c1, dest, &e, none), 4);
    ck_assert_msg(strstr(e, "none are configured"), "%s", e);
    free(e);
    /* the token from a file, as a mounted Secret gives it */
    char *pw_file = xasprintf("%s/token", dir);
    ck_assert_int_eq(harness_git_write_file(dir, "token", "t0ken\n"), 0);
    char *pw_var = xasprintf("SLUICE_GIT_PASSWORD_FILE=%s", pw_file);
    const char *from_file[] = {"SLUICE_GIT_USERNAME=sluice", pw_var, ca_var, NULL};
    ck_assert_msg(artifact_git(url, c1, dest, &e, from_file) == 0, "%s", e);
    free(e);
    /* a password file that cannot be read: named, when a fetch needs it */
    setenv("SLUICE_GIT_PASSWORD_FILE", "/nonexistent/token", 1);
    const char *no_file[] = {"SLUICE_GIT_USERNAME=sluice",
                             "SLUICE_GIT_PASSWORD_FILE=/nonexistent/token", ca_var, NULL};
    ck_assert_int_eq(artifact_git(url, c1, dest, &e, no_file), 4);
    ck_assert_msg(strstr(e, "cannot read git.password_file '/nonexistent/token'"), "%s", e);
    free(e);
    unsetenv("SLUICE_GIT_PASSWORD_FILE");
    free(pw_var);
    free(pw_file);
    free(ca_var);
    free(dest);
    free(file);

    test_git_https_stop(&h);
    remove_dir(dir);
    free(url);
    free(c1);
    free(wt);
    strbuf_release(&err);
}
END_TEST

Suite *suite_integration_gitsync(void)
{
    Suite *s = suite_create("integration_gitsync");
    TCase *tc = tcase_create("git");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, git_setup, git_teardown);
    tcase_add_test(tc, test_pushes_are_followed);
    tcase_add_test(tc, test_checkouts);
    tcase_add_test(tc, test_failures_change_nothing);
    tcase_add_test(tc, test_recovers_from_damage);
    tcase_add_test(tc, test_ssh_with_key_and_known_hosts);
    tcase_add_test(tc, test_https_with_basic_auth_and_a_private_ca);
    suite_add_tcase(s, tc);
    return s;
}
