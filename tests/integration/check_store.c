/*
 * tests/integration/check_store.c - store/ against a real PostgreSQL.
 *
 * One server is started for the suite in an unchecked fixture (in the runner, before
 * Check forks each test); every test creates databases of its own on it, named after the
 * test, so tests never see each other's rows. Besides the store under test, tests use a
 * plain libpq "admin" connection to the harness database, which plays the other actors:
 * it kills the store's backend (pg_terminate_backend), closes the database to new
 * connections, holds row locks, inserts bulk data and fakes future schema versions.
 *
 * What is not tested here, and why: a server restarted on the same socket. The harness
 * has no restart (stopping a server deletes its directory), so the tests cover the two
 * halves separately: a backend killed mid-session with the database refusing connections
 * for a while (the store keeps retrying until it is back), and a server that is gone for
 * good (the store gives up with SL_ECONN after its reconnect budget).
 */
#include "store/store.h"
#include "common/arena.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "store/store_int.h"
#include "tests/harness/harness.h"
#include "tests/harness/pgtest.h"
#include "tests/testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* --- helpers ----------------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static struct store *open_with(const char *url, int reconnect_wait_ms, int statement_timeout_ms)
{
    struct store_options o = STORE_OPTIONS_INIT;
    o.reconnect_wait_ms = reconnect_wait_ms;
    o.statement_timeout_ms = statement_timeout_ms;
    o.reconnect_delay_ms = 20;
    o.reconnect_max_delay_ms = 200;
    struct store *st = NULL;
    struct strbuf err = STRBUF_INIT;
    int rc = store_open(&st, url, &o, &err);
    ck_assert_msg(rc == 0, "store_open: %s", err.buf);
    strbuf_release(&err);
    return st;
}

static struct store *open_store(const char *url)
{
    return open_with(url, 5000, 10000);
}

/* A migrated store on a fresh database; *out_url (may be NULL) gets its URL. */
static struct store *migrated(const char *name, char **out_url)
{
    char *url = pgtest_fresh_db(name);
    struct store *st = open_store(url);
    int version = 0;
    ck_assert_msg(store_migrate(st, &version, NULL) == 0, "%s", store_errmsg(st));
    ck_assert_int_eq(version, store_schema_latest());
    if (out_url)
        *out_url = url;
    else
        free(url);
    return st;
}

static const char sha_a[] = "0123456789abcdef0123456789abcdef01234567";
static const char sha_b[] = "89abcdef0123456789abcdef0123456789abcdef";

/* Puts a version of dag from file with a model that differs by variant. */
static int64_t put(struct store *st, const char *dag, const char *file, int variant, bool *changed)
{
    char *model =
        xasprintf("{\"name\": \"%s\", \"steps\": [{\"name\": \"s\", \"v\": %d}]}", dag, variant);
    struct store_dag_put in = {dag, file, model, "name: x\n", sha_a};
    int64_t id = 0;
    bool ch = false;
    CK_STORE_OK(st, store_dag_put_version(st, &id, &ch, &in));
    free(model);
    if (changed)
        *changed = ch;
    return id;
}

static void terminate_backend(PGconn *admin, int pid)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", pid);
    const char *params[] = {p};
    /* the timeout form waits until the backend has exited */
    char *ok = pgtest_admin_query(admin, "SELECT pg_terminate_backend($1::int, 5000)", 1, params);
    ck_assert_str_eq(ok, "t");
    free(ok);
}

static struct store_run_new run_new(const char *dag, enum store_trigger trigger)
{
    struct store_run_new in = {.dag_id = dag, .trigger = trigger, .logical_time_ms = STORE_NO_TIME};
    return in;
}

/* --- migrations ---------------------------------------------------------------------------- */

START_TEST(test_migrate_fresh_and_idempotent)
{
    char *url = pgtest_fresh_db("st_migrate");
    struct store *st = open_store(url);
    int v = -1, applied = -1;
    CK_STORE_OK(st, store_schema_version(st, &v));
    ck_assert_int_eq(v, 0);
    ck_assert_int_eq(store_schema_check(st), SL_ERANGE);
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), "run 'sluice db migrate'"));

    CK_STORE_OK(st, store_migrate(st, &v, &applied));
    ck_assert_int_eq(v, store_schema_latest());
    ck_assert_int_eq(applied, store_schema_latest());
    CK_STORE_OK(st, store_migrate(st, &v, &applied));
    ck_assert_int_eq(v, store_schema_latest());
    ck_assert_int_eq(applied, 0);
    CK_STORE_OK(st, store_schema_version(st, &v));
    ck_assert_int_eq(v, store_schema_latest());
    CK_STORE_OK(st, store_schema_check(st));

    /* Every table is there, with its name and checksum recorded. */
    PGconn *c = pgtest_admin_connect(url);
    char *n = pgtest_admin_query(c,
                                 "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND "
                                 "tablename IN ('dags', 'dag_versions', 'import_errors', 'runs', "
                                 "'step_instances', 'attempts', 'events', 'api_tokens', "
                                 "'scheduler_state', 'schema_migrations')",
                                 0, NULL);
    ck_assert_str_eq(n, "10");
    free(n);
    n = pgtest_admin_query(c, "SELECT name || ' ' || left(checksum, 8) FROM schema_migrations", 0,
                           NULL);
    ck_assert_str_eq(n, "initial schema fnv1a64:");
    free(n);
    /* The statement timeout is back to the configured one after migrating. */
    PGresult *res = NULL;
    CK_STORE_OK(st, store_exec_sql(st, &res, "SHOW statement_timeout", 0, NULL));
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "10s");
    PQclear(res);
    PQfinish(c);
    store_close(st);
    free(url);
}
END_TEST

/* Forks a process that opens url, waits for a byte on go (if >= 0), migrates and exits
 * 0 if it worked. */
static pid_t fork_migrator(const char *url, int go)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct store_options o = STORE_OPTIONS_INIT;
        o.reconnect_wait_ms = 5000;
        struct store *st = NULL;
        if (store_open(&st, url, &o, NULL) < 0)
            _exit(10);
        char b;
        if (go >= 0 && read(go, &b, 1) != 1)
            _exit(11);
        int v = 0;
        int rc = store_migrate(st, &v, NULL);
        if (rc < 0)
            fprintf(stderr, "migrator %d: %s\n", (int)getpid(), store_errmsg(st));
        store_close(st);
        _exit(rc == 0 && v == store_schema_latest() ? 0 : 12);
    }
    return pid;
}

static void wait_ok(pid_t pid)
{
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d ended with %d", (int)pid,
                  status);
}

START_TEST(test_migrate_concurrent)
{
    /* Four processes connected and released at once race to migrate a fresh database. */
    char *url = pgtest_fresh_db("st_migrate_race");
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t kids[4];
    for (int i = 0; i < 4; i++)
        kids[i] = fork_migrator(url, fds[0]);
    nap_ms(300); /* let them all connect */
    ck_assert_int_eq(write(fds[1], "gggg", 4), 4);
    for (int i = 0; i < 4; i++)
        wait_ok(kids[i]);
    close(fds[0]);
    close(fds[1]);
    PGconn *c = pgtest_admin_connect(url);
    char *rows = pgtest_admin_query(
        c, "SELECT count(*) || ' ' || max(version) FROM schema_migrations", 0, NULL);
    char *want = xasprintf("%d %d", store_schema_latest(), store_schema_latest());
    ck_assert_str_eq(rows, want);
    free(rows);
    free(want);
    PQfinish(c);
    free(url);

    /* The lock is what serializes them: while another session holds it, a migrator waits
     * on it (visible in pg_locks) and finishes once it is released. */
    url = pgtest_fresh_db("st_migrate_lock");
    c = pgtest_admin_connect(url);
    char key[32];
    snprintf(key, sizeof(key), "%lld", (long long)STORE_LOCK_MIGRATE);
    const char *kp[] = {key};
    free(pgtest_admin_query(c, "SELECT pg_advisory_lock($1::bigint)", 1, kp));
    pid_t kid = fork_migrator(url, -1);
    char *waiting = NULL;
    for (int i = 0; i < 200; i++) {
        free(waiting);
        waiting = pgtest_admin_query(c,
                                     "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                     "AND NOT granted AND database = (SELECT oid FROM pg_database "
                                     "WHERE datname = current_database())",
                                     0, NULL);
        if (!strcmp(waiting, "1"))
            break;
        nap_ms(20);
    }
    ck_assert_str_eq(waiting, "1");
    free(waiting);
    char *v = pgtest_admin_query(c, "SELECT to_regclass('dags') IS NULL", 0, NULL);
    ck_assert_str_eq(v, "t"); /* nothing applied while it waits */
    free(v);
    free(pgtest_admin_query(c, "SELECT pg_advisory_unlock($1::bigint)", 1, kp));
    wait_ok(kid);
    v = pgtest_admin_query(c, "SELECT max(version) FROM schema_migrations", 0, NULL);
    ck_assert_int_eq(atoi(v), store_schema_latest());
    free(v);
    PQfinish(c);
    free(url);
}
END_TEST

START_TEST(test_migrate_refuses_newer_and_changed)
{
    char *url = NULL;
    struct store *st = migrated("st_migrate_newer", &url);
    PGconn *c = pgtest_admin_connect(url);
    pgtest_admin_exec(c, "INSERT INTO schema_migrations (version, name, checksum) "
                         "VALUES (99, 'from the future', 'x')");
    int v = 0;
    ck_assert_int_eq(store_migrate(st, &v, NULL), SL_ERANGE);
    char *want = xasprintf("database schema is at version 99 but this sluice knows versions up "
                           "to %d; upgrade sluice",
                           store_schema_latest());
    ck_assert_str_eq(store_errmsg(st), want);
    ck_assert_int_eq(store_schema_check(st), SL_ERANGE);
    ck_assert_str_eq(store_errmsg(st), want);
    CK_STORE_OK(st, store_schema_version(st, &v));
    ck_assert_int_eq(v, 99);

    /* The CLI says the same and exits 1; `db version` reports it. */
    char *out = NULL, *err = NULL;
    char *argv[] = {(char *)test_sluice_bin(), "db", "migrate", "--database-url", url, NULL};
    ck_assert_int_eq(test_run(argv, &out, &err), 1);
    ck_assert_ptr_nonnull(strstr(err, want));
    ck_assert_str_eq(out, "");
    free(out);
    free(err);
    char *argv2[] = {(char *)test_sluice_bin(), "db", "version", "--database-url", url, NULL};
    ck_assert_int_eq(test_run(argv2, &out, &err), 0);
    ck_assert_str_eq(out, "schema version 99\n");
    ck_assert_ptr_nonnull(strstr(err, "upgrade sluice"));
    free(out);
    free(err);
    free(want);

    /* A version applied from a different definition is refused too. */
    pgtest_admin_exec(c, "DELETE FROM schema_migrations WHERE version = 99");
    pgtest_admin_exec(c, "UPDATE schema_migrations SET checksum = 'fnv1a64:0000000000000000'");
    ck_assert_int_eq(store_migrate(st, &v, NULL), SL_ECONFLICT);
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), "was applied from a different definition"));
    PQfinish(c);
    store_close(st);
    free(url);
}
END_TEST

START_TEST(test_cli_db)
{
    char *url = pgtest_fresh_db("st_cli");
    char *out = NULL, *err = NULL;
    char *version[] = {(char *)test_sluice_bin(), "db", "version", "--database-url", url, NULL};
    ck_assert_int_eq(test_run(version, &out, &err), 0);
    ck_assert_str_eq(out, "schema version 0\n");
    ck_assert_ptr_nonnull(strstr(err, "run 'sluice db migrate'"));
    free(out);
    free(err);

    /* The URL from the environment. */
    setenv("SLUICE_DATABASE_URL", url, 1);
    char *migrate[] = {(char *)test_sluice_bin(), "db", "migrate", NULL};
    int rc = test_run(migrate, &out, &err);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    char *want = xasprintf("schema version %d (%d migration%s applied)\n", store_schema_latest(),
                           store_schema_latest(), store_schema_latest() == 1 ? "" : "s");
    ck_assert_str_eq(out, want);
    free(want);
    free(out);
    free(err);
    ck_assert_int_eq(test_run(migrate, &out, &err), 0);
    want = xasprintf("schema version %d (up to date)\n", store_schema_latest());
    ck_assert_str_eq(out, want);
    free(want);
    free(out);
    free(err);
    unsetenv("SLUICE_DATABASE_URL");

    /* Usage errors exit 2. */
    char *nourl[] = {(char *)test_sluice_bin(), "db", "migrate", NULL};
    ck_assert_int_eq(test_run(nourl, &out, &err), 2);
    ck_assert_ptr_nonnull(strstr(err, "SLUICE_DATABASE_URL"));
    free(out);
    free(err);
    char *bad[] = {(char *)test_sluice_bin(), "db", "frobnicate", NULL};
    ck_assert_int_eq(test_run(bad, &out, &err), 2);
    free(out);
    free(err);

    /* An unreachable database: exit 1, the reason, and never the password. */
    char *down[] = {(char *)test_sluice_bin(),
                    "db",
                    "migrate",
                    "--wait",
                    "0",
                    "--database-url=postgresql://sluice:TopSecret99@127.0.0.1:1/nodb",
                    NULL};
    ck_assert_int_eq(test_run(down, &out, &err), 1);
    ck_assert_ptr_nonnull(strstr(err, "cannot connect to the database (host=127.0.0.1 port=1 "
                                      "dbname=nodb user=sluice)"));
    ck_assert_ptr_null(strstr(err, "TopSecret99"));
    free(out);
    free(err);
    free(url);
}
END_TEST

/* --- the DAG registry ----------------------------------------------------------------------- */

START_TEST(test_registry_versions)
{
    struct store *st = migrated("st_registry", NULL);
    struct arena mem = ARENA_INIT;
    bool changed = false;

    int64_t v1 = put(st, "iris", "dags/iris.yaml", 1, &changed);
    ck_assert(changed);
    int64_t again = put(st, "iris", "dags/iris.yaml", 1, &changed);
    ck_assert(!changed);
    ck_assert_int_eq(again, v1);

    /* The same model formatted differently, from another commit: still no new version. */
    struct store_dag_put same = {
        "iris", "dags/iris.yaml",
        "{ \"steps\" : [ {\"v\":1, \"name\":\"s\"} ],\n\"name\":\"iris\" }",
        "# a comment\nname: iris\n", sha_b};
    int64_t id = 0;
    CK_STORE_OK(st, store_dag_put_version(st, &id, &changed, &same));
    ck_assert(!changed);
    ck_assert_int_eq(id, v1);

    int64_t v2 = put(st, "iris", "dags/iris.yaml", 2, &changed);
    ck_assert(changed);
    ck_assert_int_gt(v2, v1);
    /* Reverting makes the first version current again. */
    ck_assert_int_eq(put(st, "iris", "dags/iris.yaml", 1, &changed), v1);
    ck_assert(changed);

    struct store_dag d;
    CK_STORE_OK(st, store_dag_get(st, &d, "iris", &mem));
    ck_assert_str_eq(d.dag_id, "iris");
    ck_assert_int_eq(d.current_version_id, v1);
    ck_assert(d.is_active && !d.is_paused);
    ck_assert_str_eq(d.file_path, "dags/iris.yaml");
    ck_assert_int_ne(d.last_parsed_at_ms, STORE_NO_TIME);
    ck_assert_int_eq(d.last_scheduled_ms, STORE_NO_TIME);
    int64_t now_s = (int64_t)time(NULL);
    ck_assert_int_le(llabs(d.created_at_ms / 1000 - now_s), 60);

    struct store_dag_version ver;
    CK_STORE_OK(st, store_dag_version_get(st, &ver, v2, &mem));
    ck_assert_str_eq(ver.dag_id, "iris");
    ck_assert_str_eq(ver.model_json,
                     "{\"name\": \"iris\", \"steps\": [{\"v\": 2, \"name\": \"s\"}]}");
    ck_assert_uint_eq(strlen(ver.content_hash), 64);
    ck_assert_str_eq(ver.commit_sha, sha_a);
    ck_assert_str_eq(ver.source, "name: x\n");
    ck_assert_int_eq(store_dag_version_get(st, &ver, 424242, &mem), SL_ENOENT);

    /* Another file may not define an active DAG of the same name. */
    struct store_dag_put dup = {"iris", "dags/copy.yaml", "{\"name\": \"iris\"}", "", NULL};
    ck_assert_int_eq(store_dag_put_version(st, &id, &changed, &dup), SL_ECONFLICT);
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), "already defined in 'dags/iris.yaml'"));
    /* Bad input is refused with SL_EINVAL and leaves the store usable. */
    struct store_dag_put bad_name = {"Not_A_Label", "dags/x.yaml", "{}", "", NULL};
    ck_assert_int_eq(store_dag_put_version(st, &id, &changed, &bad_name), SL_EINVAL);
    struct store_dag_put bad_model = {"x", "dags/x.yaml", "[1, 2]", "", NULL};
    ck_assert_int_eq(store_dag_put_version(st, &id, &changed, &bad_model), SL_EINVAL);
    struct store_dag_put bad_json = {"x", "dags/x.yaml", "{oops", "", NULL};
    ck_assert_int_eq(store_dag_put_version(st, &id, &changed, &bad_json), SL_EINVAL);
    struct store_dag_put bad_sha = {"x", "dags/x.yaml", "{}", "", "abc"};
    ck_assert_int_eq(store_dag_put_version(st, &id, &changed, &bad_sha), SL_EINVAL);

    struct store_dag *list;
    size_t n;
    put(st, "etl", "dags/etl.yaml", 1, NULL);
    CK_STORE_OK(st, store_dag_list(st, &list, &n, &mem));
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(list[0].dag_id, "etl");
    ck_assert_str_eq(list[1].dag_id, "iris");
    ck_assert_int_eq(store_dag_get(st, &d, "nope", &mem), SL_ENOENT);
    arena_release(&mem);
    store_close(st);
}
END_TEST

START_TEST(test_registry_import_errors)
{
    struct store *st = migrated("st_import_errors", NULL);
    struct arena mem = ARENA_INIT;
    int64_t v1 = put(st, "iris", "dags/iris.yaml", 1, NULL);

    struct store_import_error_item items[] = {
        {3, 7, "unknown key \"scheduel\""},
        {0, 0, "a message with a\nnewline, a tab\t, a quote \" and \\ and \xe2\x98\x83"},
    };
    CK_STORE_OK(st, store_import_error_set(st, "dags/iris.yaml", sha_b, items, 2));
    CK_STORE_OK(st, store_import_error_set(st, "dags/other.yaml", NULL, items, 1));
    struct store_import_error *errs;
    size_t n;
    CK_STORE_OK(st, store_import_errors_list(st, &errs, &n, &mem));
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(errs[0].file_path, "dags/iris.yaml");
    ck_assert_str_eq(errs[0].commit_sha, sha_b);
    ck_assert_ptr_null(errs[1].commit_sha);
    cJSON *doc = cJSON_Parse(errs[0].errors_json);
    ck_assert_ptr_nonnull(doc);
    ck_assert_int_eq(cJSON_GetArraySize(doc), 2);
    cJSON *e0 = cJSON_GetArrayItem(doc, 0), *e1 = cJSON_GetArrayItem(doc, 1);
    ck_assert_int_eq(cJSON_GetObjectItem(e0, "line")->valueint, 3);
    ck_assert_int_eq(cJSON_GetObjectItem(e0, "col")->valueint, 7);
    ck_assert_str_eq(cJSON_GetObjectItem(e0, "message")->valuestring, items[0].message);
    ck_assert_str_eq(cJSON_GetObjectItem(e1, "message")->valuestring, items[1].message);
    cJSON_Delete(doc);
    int64_t first_seen = errs[0].first_seen_ms;

    /* The last good version stays current; a new error list keeps first_seen. */
    struct store_dag d;
    CK_STORE_OK(st, store_dag_get(st, &d, "iris", &mem));
    ck_assert_int_eq(d.current_version_id, v1);
    ck_assert(d.is_active);
    nap_ms(20);
    CK_STORE_OK(st, store_import_error_set(st, "dags/iris.yaml", sha_a, items, 1));
    CK_STORE_OK(st, store_import_errors_list(st, &errs, &n, &mem));
    ck_assert_int_eq(errs[0].first_seen_ms, first_seen);
    ck_assert_int_gt(errs[0].last_seen_ms, first_seen);
    ck_assert_str_eq(errs[0].commit_sha, sha_a);

    CK_STORE_OK(st, store_import_error_clear(st, "dags/iris.yaml"));
    CK_STORE_OK(st, store_import_error_clear(st, "dags/iris.yaml")); /* twice is fine */
    CK_STORE_OK(st, store_import_errors_list(st, &errs, &n, &mem));
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(errs[0].file_path, "dags/other.yaml");
    arena_release(&mem);
    store_close(st);
}
END_TEST

START_TEST(test_registry_deactivate_and_pause)
{
    struct store *st = migrated("st_deactivate", NULL);
    struct arena mem = ARENA_INIT;
    put(st, "a", "dags/a.yaml", 1, NULL);
    put(st, "b", "dags/b.yaml", 1, NULL);
    put(st, "c", "dags/c.yaml", 1, NULL);
    struct store_import_error_item item = {1, 1, "broken"};
    CK_STORE_OK(st, store_import_error_set(st, "dags/broken.yaml", NULL, &item, 1));
    CK_STORE_OK(st, store_import_error_set(st, "dags/gone.yaml", NULL, &item, 1));

    const char *present[] = {"dags/a.yaml", "dags/c.yaml", "dags/broken.yaml"};
    size_t n = 99;
    CK_STORE_OK(st, store_dag_deactivate_missing(st, &n, present, 3));
    ck_assert_uint_eq(n, 1);
    CK_STORE_OK(st, store_dag_deactivate_missing(st, &n, present, 3));
    ck_assert_uint_eq(n, 0);
    struct store_dag *list;
    size_t nd;
    CK_STORE_OK(st, store_dag_list(st, &list, &nd, &mem));
    ck_assert_uint_eq(nd, 3); /* never deleted */
    ck_assert(list[0].is_active && !list[1].is_active && list[2].is_active);
    ck_assert_int_ne(list[1].current_version_id, 0);
    struct store_import_error *errs;
    size_t ne;
    CK_STORE_OK(st, store_import_errors_list(st, &errs, &ne, &mem));
    ck_assert_uint_eq(ne, 1);
    ck_assert_str_eq(errs[0].file_path, "dags/broken.yaml");

    /* A DAG moved to another file: deactivated first, so the new file may take it. */
    const char *moved[] = {"dags/a.yaml", "dags/c2.yaml"};
    CK_STORE_OK(st, store_dag_deactivate_missing(st, &n, moved, 2));
    ck_assert_uint_eq(n, 1);
    bool changed = true;
    put(st, "c", "dags/c2.yaml", 1, &changed);
    ck_assert(!changed); /* same content, same version */
    struct store_dag d;
    CK_STORE_OK(st, store_dag_get(st, &d, "c", &mem));
    ck_assert(d.is_active);
    ck_assert_str_eq(d.file_path, "dags/c2.yaml");
    /* b comes back when its file does. */
    put(st, "b", "dags/b.yaml", 1, NULL);
    CK_STORE_OK(st, store_dag_get(st, &d, "b", &mem));
    ck_assert(d.is_active);
    /* An empty repository deactivates everything. */
    CK_STORE_OK(st, store_dag_deactivate_missing(st, &n, NULL, 0));
    ck_assert_uint_eq(n, 3);

    CK_STORE_OK(st, store_dag_set_paused(st, "a", true));
    CK_STORE_OK(st, store_dag_get(st, &d, "a", &mem));
    ck_assert(d.is_paused);
    CK_STORE_OK(st, store_dag_set_paused(st, "a", false));
    CK_STORE_OK(st, store_dag_get(st, &d, "a", &mem));
    ck_assert(!d.is_paused);
    ck_assert_int_eq(store_dag_set_paused(st, "nope", true), SL_ENOENT);
    arena_release(&mem);
    store_close(st);
}
END_TEST

/* --- runs --------------------------------------------------------------------------------- */

START_TEST(test_run_idempotency)
{
    struct store *st = migrated("st_run_idem", NULL);
    struct arena mem = ARENA_INIT;
    int64_t v1 = put(st, "iris", "dags/iris.yaml", 1, NULL);
    struct store_run r1, r2;
    bool existed = true;

    /* The same idempotency key and params: the same run. */
    struct store_run_new in = run_new("iris", STORE_TRIGGER_MANUAL);
    in.idempotency_key = "req-1";
    in.params_json = "{\"a\": 1, \"b\": [1, 2]}";
    CK_STORE_OK(st, store_run_create(st, &r1, &existed, &in, &mem));
    ck_assert(!existed);
    ck_assert_int_eq(r1.state, STORE_RUN_QUEUED);
    ck_assert_int_eq(r1.trigger, STORE_TRIGGER_MANUAL);
    ck_assert_int_eq(r1.version_id, v1);
    ck_assert_str_eq(r1.idempotency_key, "req-1");
    ck_assert(!strncmp(r1.run_id, "manual__", 8));
    in.params_json = "{\"b\":[1,2],\"a\":1.0}"; /* equal as JSON */
    CK_STORE_OK(st, store_run_create(st, &r2, &existed, &in, &mem));
    ck_assert(existed);
    ck_assert_int_eq(r2.id, r1.id);
    ck_assert_str_eq(r2.run_id, r1.run_id);
    /* The same key, other params: a conflict. */
    in.params_json = "{\"a\": 2}";
    ck_assert_int_eq(store_run_create(st, &r2, &existed, &in, &mem), SL_EEXIST);
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), r1.run_id));

    /* A caller-chosen run_id behaves the same way. */
    struct store_run_new named = run_new("iris", STORE_TRIGGER_MANUAL);
    named.run_id = "nightly-fix_1";
    CK_STORE_OK(st, store_run_create(st, &r1, &existed, &named, &mem));
    ck_assert(!existed);
    ck_assert_str_eq(r1.run_id, "nightly-fix_1");
    ck_assert_str_eq(r1.params_json, "{}");
    CK_STORE_OK(st, store_run_create(st, &r2, &existed, &named, &mem));
    ck_assert(existed);
    ck_assert_int_eq(r2.id, r1.id);
    named.params_json = "{\"x\": true}";
    ck_assert_int_eq(store_run_create(st, &r2, &existed, &named, &mem), SL_EEXIST);
    named.params_json = NULL;
    named.trigger = STORE_TRIGGER_BACKFILL; /* same id, another trigger: a conflict */
    ck_assert_int_eq(store_run_create(st, &r2, &existed, &named, &mem), SL_EEXIST);
    /* A key naming one run and a run_id naming another. */
    struct store_run_new both = run_new("iris", STORE_TRIGGER_MANUAL);
    both.run_id = "nightly-fix_1";
    both.idempotency_key = "req-1";
    both.params_json = "{\"a\": 1, \"b\": [1, 2]}";
    ck_assert_int_eq(store_run_create(st, &r2, &existed, &both, &mem), SL_EEXIST);
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), "existing runs"));

    /* Generated ids differ per request. */
    struct store_run_new plain = run_new("iris", STORE_TRIGGER_MANUAL);
    CK_STORE_OK(st, store_run_create(st, &r1, &existed, &plain, &mem));
    ck_assert(!existed);
    CK_STORE_OK(st, store_run_create(st, &r2, &existed, &plain, &mem));
    ck_assert(!existed);
    ck_assert_str_ne(r1.run_id, r2.run_id);

    /* Refused requests. */
    struct store_run_new bad = run_new("iris", STORE_TRIGGER_MANUAL);
    bad.run_id = "has space";
    ck_assert_int_eq(store_run_create(st, &r1, &existed, &bad, &mem), SL_EINVAL);
    bad.run_id = "scheduled__2026-01-01T00:00:00Z";
    ck_assert_int_eq(store_run_create(st, &r1, &existed, &bad, &mem), SL_EINVAL);
    bad.run_id = NULL;
    bad.params_json = "[1]";
    ck_assert_int_eq(store_run_create(st, &r1, &existed, &bad, &mem), SL_EINVAL);
    bad.params_json = "{\"x\": \"\\u0000\"}"; /* valid JSON that jsonb cannot hold */
    ck_assert_int_eq(store_run_create(st, &r1, &existed, &bad, &mem), SL_EINVAL);
    bad.params_json = NULL;
    bad.trigger = STORE_TRIGGER_SCHEDULED; /* without a logical time */
    ck_assert_int_eq(store_run_create(st, &r1, &existed, &bad, &mem), SL_EINVAL);
    struct store_run_new missing = run_new("nope", STORE_TRIGGER_MANUAL);
    ck_assert_int_eq(store_run_create(st, &r1, &existed, &missing, &mem), SL_ENOENT);
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), "no dag 'nope'"));
    struct store_run_new wrong_version = run_new("iris", STORE_TRIGGER_MANUAL);
    wrong_version.version_id = v1 + 1000;
    ck_assert_int_eq(store_run_create(st, &r1, &existed, &wrong_version, &mem), SL_ENOENT);
    char *big = xmalloc(STORE_PARAMS_MAX_BYTES + 16);
    memset(big, 'x', STORE_PARAMS_MAX_BYTES + 15);
    memcpy(big, "{\"x\": \"", 7);
    memcpy(big + STORE_PARAMS_MAX_BYTES + 12, "\"}", 3);
    struct store_run_new huge = run_new("iris", STORE_TRIGGER_MANUAL);
    huge.params_json = big;
    ck_assert_int_eq(store_run_create(st, &r1, &existed, &huge, &mem), SL_ETOOBIG);
    free(big);

    /* Lookups. */
    CK_STORE_OK(st, store_run_get(st, &r2, "iris", "nightly-fix_1", &mem));
    ck_assert_str_eq(r2.run_id, "nightly-fix_1");
    CK_STORE_OK(st, store_run_get_by_pk(st, &r1, r2.id, &mem));
    ck_assert_str_eq(r1.run_id, "nightly-fix_1");
    ck_assert_int_eq(store_run_get(st, &r2, "iris", "nope", &mem), SL_ENOENT);
    ck_assert_int_eq(store_run_get_by_pk(st, &r2, 123456789, &mem), SL_ENOENT);
    arena_release(&mem);
    store_close(st);
}
END_TEST

/* Forks a process that creates in (on url) when released by go, and writes "<id> <existed>"
 * to out. */
static pid_t fork_creator(const char *url, int go, int out, const struct store_run_new *in)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct store *st = NULL;
        if (store_open(&st, url, NULL, NULL) < 0)
            _exit(10);
        char b;
        if (read(go, &b, 1) != 1)
            _exit(11);
        struct arena mem = ARENA_INIT;
        struct store_run r;
        bool existed;
        int rc = store_run_create(st, &r, &existed, in, &mem);
        if (rc < 0)
            _exit(12);
        char line[64];
        int len = snprintf(line, sizeof(line), "%lld %d\n", (long long)r.id, (int)existed);
        if (write(out, line, (size_t)len) != len)
            _exit(13);
        arena_release(&mem);
        store_close(st);
        _exit(0);
    }
    return pid;
}

/* Runs 4 concurrent creators of in; checks they found one run, created by exactly one. */
static void race_create(const char *url, const struct store_run_new *in)
{
    int go[2], res[2];
    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(res), 0);
    pid_t kids[4];
    for (int i = 0; i < 4; i++)
        kids[i] = fork_creator(url, go[0], res[1], in);
    nap_ms(300);
    ck_assert_int_eq(write(go[1], "gggg", 4), 4);
    for (int i = 0; i < 4; i++)
        wait_ok(kids[i]);
    close(res[1]);
    char buf[512] = {0};
    size_t len = 0;
    ssize_t n;
    while ((n = read(res[0], buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)n;
    close(res[0]);
    close(go[0]);
    close(go[1]);
    long long first_id = -1;
    int created = 0, lines = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        long long id;
        int existed;
        ck_assert_int_eq(sscanf(line, "%lld %d", &id, &existed), 2);
        if (first_id < 0)
            first_id = id;
        ck_assert_int_eq(id, first_id);
        created += !existed;
        lines++;
    }
    ck_assert_int_eq(lines, 4);
    ck_assert_int_eq(created, 1);
}

START_TEST(test_run_scheduled_never_doubles)
{
    char *url = NULL;
    struct store *st = migrated("st_run_sched", &url);
    struct arena mem = ARENA_INIT;
    put(st, "iris", "dags/iris.yaml", 1, NULL);
    const int64_t t = INT64_C(1767225600000); /* 2026-01-01T00:00:00Z */

    struct store_run_new in = run_new("iris", STORE_TRIGGER_SCHEDULED);
    in.logical_time_ms = t;
    struct store_run r1, r2;
    bool existed = true;
    CK_STORE_OK(st, store_run_create(st, &r1, &existed, &in, &mem));
    ck_assert(!existed);
    ck_assert_str_eq(r1.run_id, "scheduled__2026-01-01T00:00:00Z");
    ck_assert_int_eq(r1.logical_time_ms, t);
    int64_t last = 0;
    CK_STORE_OK(st, store_dag_last_scheduled(st, &last, "iris"));
    ck_assert_int_eq(last, t);

    /* A scheduler restart: a new session asks again, even with other params. */
    store_close(st);
    st = open_store(url);
    in.params_json = "{\"changed\": 1}";
    CK_STORE_OK(st, store_run_create(st, &r2, &existed, &in, &mem));
    ck_assert(existed);
    ck_assert_int_eq(r2.id, r1.id);
    /* A manual run at the same logical time is a different run. */
    struct store_run_new manual = run_new("iris", STORE_TRIGGER_MANUAL);
    manual.logical_time_ms = t;
    CK_STORE_OK(st, store_run_create(st, &r2, &existed, &manual, &mem));
    ck_assert(!existed);
    ck_assert_int_ne(r2.id, r1.id);
    ck_assert_int_eq(r2.logical_time_ms, t);

    /* Milliseconds show in a generated id; the newest scheduled time is the max. */
    in.logical_time_ms = t + 3600 * 1000 + 250;
    in.params_json = NULL;
    CK_STORE_OK(st, store_run_create(st, &r2, &existed, &in, &mem));
    ck_assert_str_eq(r2.run_id, "scheduled__2026-01-01T01:00:00.250Z");
    CK_STORE_OK(st, store_dag_last_scheduled(st, &last, "iris"));
    ck_assert_int_eq(last, t + 3600 * 1000 + 250);
    struct store_dag d;
    CK_STORE_OK(st, store_dag_get(st, &d, "iris", &mem));
    ck_assert_int_eq(d.last_scheduled_ms, last);
    CK_STORE_OK(st, store_dag_last_scheduled(st, &last, "nope"));
    ck_assert_int_eq(last, STORE_NO_TIME);

    /* Four schedulers racing for the same tick, and four API replicas for the same key. */
    struct store_run_new tick = run_new("iris", STORE_TRIGGER_SCHEDULED);
    tick.logical_time_ms = t + 7200 * 1000;
    race_create(url, &tick);
    struct store_run_new keyed = run_new("iris", STORE_TRIGGER_MANUAL);
    keyed.idempotency_key = "retried-post";
    keyed.params_json = "{\"n\": 1}";
    race_create(url, &keyed);
    arena_release(&mem);
    store_close(st);
    free(url);
}
END_TEST

START_TEST(test_run_params_round_trip)
{
    struct store *st = migrated("st_run_params", NULL);
    struct arena mem = ARENA_INIT;
    put(st, "iris", "dags/iris.yaml", 1, NULL);
    static const char params[] =
        "{\"big\": 9007199254740993, \"neg\": -12345678901234567890, \"dec\": 0.1,"
        " \"float\": 1.5e300, \"tiny\": 1e-300, \"s\": \"h\\u00e9llo \\\"q\\\" \\\\ \\n\\t "
        "\\u2603 \\ud834\\udd1e\", \"none\": null, \"arr\": [1, \"two\", [3], {\"four\": 4}],"
        " \"obj\": {\"z\": 1, \"a\": {\"b\": []}}, \"t\": true, \"f\": false, \"e\": \"\"}";
    struct store_run_new in = run_new("iris", STORE_TRIGGER_MANUAL);
    in.params_json = params;
    in.conf_json = "[\"any\", 1, {\"json\": null}]";
    struct store_run r, g;
    bool existed;
    CK_STORE_OK(st, store_run_create(st, &r, &existed, &in, &mem));
    CK_STORE_OK(st, store_run_get(st, &g, "iris", r.run_id, &mem));

    /* Equal as JSON, and integers beyond 2^53 exact (jsonb numbers are numeric). */
    cJSON *want = cJSON_Parse(params), *got = cJSON_Parse(g.params_json);
    ck_assert_ptr_nonnull(got);
    ck_assert_msg(cJSON_Compare(want, got, 1), "params came back as %s", g.params_json);
    ck_assert_ptr_nonnull(strstr(g.params_json, "\"big\": 9007199254740993"));
    ck_assert_ptr_nonnull(strstr(g.params_json, "\"neg\": -12345678901234567890"));
    ck_assert_ptr_nonnull(strstr(g.params_json, "\"dec\": 0.1"));
    ck_assert_str_eq(cJSON_GetObjectItem(got, "s")->valuestring,
                     "h\xc3\xa9llo \"q\" \\ \n\t \xe2\x98\x83 \xf0\x9d\x84\x9e");
    cJSON_Delete(want);
    cJSON_Delete(got);
    ck_assert_str_eq(g.conf_json, "[\"any\", 1, {\"json\": null}]");
    ck_assert_str_eq(r.params_json, g.params_json);
    arena_release(&mem);
    store_close(st);
}
END_TEST

START_TEST(test_runs_active)
{
    char *url = NULL;
    struct store *st = migrated("st_runs_active", &url);
    struct arena mem = ARENA_INIT;
    put(st, "a", "dags/a.yaml", 1, NULL);
    put(st, "b", "dags/b.yaml", 1, NULL);
    struct store_run r;
    bool existed;
    int64_t pks[3];
    for (int i = 0; i < 3; i++) {
        struct store_run_new in = run_new("a", STORE_TRIGGER_MANUAL);
        CK_STORE_OK(st, store_run_create(st, &r, &existed, &in, &mem));
        pks[i] = r.id;
    }
    struct store_run_new in = run_new("b", STORE_TRIGGER_MANUAL);
    CK_STORE_OK(st, store_run_create(st, &r, &existed, &in, &mem));

    /* The engine's transitions, played by the admin connection. */
    PGconn *c = pgtest_admin_connect(url);
    char p0[32], p1[32];
    snprintf(p0, sizeof(p0), "%lld", (long long)pks[0]);
    snprintf(p1, sizeof(p1), "%lld", (long long)pks[1]);
    const char *one[] = {p0}, *two[] = {p1};
    free(pgtest_admin_query(
        c, "UPDATE runs SET state = 'succeeded', ended_at = now() WHERE id = $1", 1, one));
    free(pgtest_admin_query(c, "UPDATE runs SET state = 'cancelling' WHERE id = $1", 1, two));
    /* The CHECK constraints guard the engine's invariants. */
    PGresult *bad = PQexec(c, "UPDATE runs SET state = 'failed' WHERE dag_id = 'b'");
    ck_assert_str_eq(PQresultErrorField(bad, PG_DIAG_SQLSTATE), "23514"); /* no ended_at */
    PQclear(bad);
    bad = PQexec(c, "UPDATE runs SET state = 'exploded' WHERE dag_id = 'b'");
    ck_assert_str_eq(PQresultErrorField(bad, PG_DIAG_SQLSTATE), "23514");
    PQclear(bad);
    PQfinish(c);

    struct store_run *active;
    size_t n;
    CK_STORE_OK(st, store_runs_active(st, &active, &n, "a", &mem));
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(active[0].id, pks[1]);
    ck_assert_int_eq(active[0].state, STORE_RUN_CANCELLING);
    ck_assert_int_eq(active[1].id, pks[2]);
    int64_t count = 0;
    CK_STORE_OK(st, store_runs_active_count(st, &count, "a"));
    ck_assert_int_eq(count, 2);
    CK_STORE_OK(st, store_runs_active_count(st, &count, "nope"));
    ck_assert_int_eq(count, 0);
    struct store_dag_count *counts;
    CK_STORE_OK(st, store_runs_active_counts(st, &counts, &n, &mem));
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(counts[0].dag_id, "a");
    ck_assert_int_eq(counts[0].n, 2);
    ck_assert_str_eq(counts[1].dag_id, "b");
    ck_assert_int_eq(counts[1].n, 1);
    CK_STORE_OK(st, store_run_get_by_pk(st, &r, pks[0], &mem));
    ck_assert_int_eq(r.state, STORE_RUN_SUCCEEDED);
    ck_assert_int_ne(r.ended_at_ms, STORE_NO_TIME);
    arena_release(&mem);
    store_close(st);
    free(url);
}
END_TEST

/* Returns the SQLSTATE of sql on c ("" when it succeeds). */
static char *sqlstate_of(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    char *v = xstrdup(state ? state : "");
    PQclear(res);
    return v;
}

#define ASSERT_SQLSTATE(c, want, sql)                                                              \
    do {                                                                                           \
        char *got_ = sqlstate_of(c, sql);                                                          \
        ck_assert_msg(!strcmp(got_, want), "%s: SQLSTATE '%s', want '%s'", sql, got_, want);       \
        free(got_);                                                                                \
    } while (0)

START_TEST(test_schema_constraints)
{
    char *url = NULL;
    struct store *st = migrated("st_constraints", &url);
    struct arena mem = ARENA_INIT;
    put(st, "a", "dags/a.yaml", 1, NULL);
    struct store_run_new in = run_new("a", STORE_TRIGGER_MANUAL);
    in.run_id = "r1";
    struct store_run r;
    bool existed;
    CK_STORE_OK(st, store_run_create(st, &r, &existed, &in, &mem));
    PGconn *c = pgtest_admin_connect(url);
    const char *pk = "(SELECT id FROM runs WHERE run_id = 'r1')";
    char *sql;

    /* Step instances: known states only; queued needs queued_at, up_for_retry next_try_at. */
    sql = xasprintf("INSERT INTO step_instances (run_pk, step) VALUES (%s, 'train')", pk);
    ASSERT_SQLSTATE(c, "", sql);
    ASSERT_SQLSTATE(c, "23505", sql); /* (run_pk, step, map_index) is the key */
    free(sql);
    ASSERT_SQLSTATE(c, "23514", "UPDATE step_instances SET state = 'queued'");
    ASSERT_SQLSTATE(c, "23514", "UPDATE step_instances SET state = 'up_for_retry'");
    ASSERT_SQLSTATE(c, "23514", "UPDATE step_instances SET state = 'lost'");
    ASSERT_SQLSTATE(c, "", "UPDATE step_instances SET state = 'queued', queued_at = now()");
    ASSERT_SQLSTATE(c, "23514", "UPDATE step_instances SET map_index = -2");
    /* output_params: an object of at most 64 KiB. */
    ASSERT_SQLSTATE(c, "",
                    "UPDATE step_instances SET output_params = "
                    "jsonb_build_object('p', repeat('x', 65000))");
    ASSERT_SQLSTATE(c, "23514",
                    "UPDATE step_instances SET output_params = "
                    "jsonb_build_object('p', repeat('x', 65600))");
    ASSERT_SQLSTATE(c, "23514", "UPDATE step_instances SET output_params = '[1]'");

    /* Attempts belong to a step instance, number from 1, are unique per number. */
    sql = xasprintf("INSERT INTO attempts (attempt_id, run_pk, step, map_index, attempt, state) "
                    "VALUES ('a-1', %s, 'train', -1, 1, 'queued')",
                    pk);
    ASSERT_SQLSTATE(c, "", sql);
    free(sql);
    sql = xasprintf("INSERT INTO attempts (attempt_id, run_pk, step, map_index, attempt, state) "
                    "VALUES ('a-2', %s, 'train', -1, 1, 'queued')",
                    pk);
    ASSERT_SQLSTATE(c, "23505", sql);
    free(sql);
    sql = xasprintf("INSERT INTO attempts (attempt_id, run_pk, step, map_index, attempt, state) "
                    "VALUES ('a-3', %s, 'nope', -1, 1, 'queued')",
                    pk);
    ASSERT_SQLSTATE(c, "23503", sql);
    free(sql);
    ASSERT_SQLSTATE(c, "23514",
                    "UPDATE attempts SET output_params = "
                    "jsonb_build_object('p', repeat('x', 65600))");

    /* Events: run or step transitions between known states. */
    sql =
        xasprintf("INSERT INTO events (run_pk, step, attempt, from_state, to_state) "
                  "VALUES (%s, 'train', 1, 'pending', 'queued'), (%s, NULL, NULL, NULL, 'queued')",
                  pk, pk);
    ASSERT_SQLSTATE(c, "", sql);
    free(sql);
    sql = xasprintf("INSERT INTO events (run_pk, to_state) VALUES (%s, 'exploded')", pk);
    ASSERT_SQLSTATE(c, "23514", sql);
    free(sql);

    /* Runs: a version of another DAG cannot be pinned; ended_at goes with the final states. */
    put(st, "b", "dags/b.yaml", 1, NULL);
    ASSERT_SQLSTATE(c, "23503",
                    "UPDATE runs SET version_id = (SELECT current_version_id "
                    "FROM dags WHERE dag_id = 'b')");
    ASSERT_SQLSTATE(c, "23514", "UPDATE runs SET ended_at = now()");
    ASSERT_SQLSTATE(c, "", "UPDATE runs SET state = 'failed', ended_at = now()");
    ASSERT_SQLSTATE(c, "23514", "UPDATE runs SET params = '[]'");
    ASSERT_SQLSTATE(c, "23503",
                    "UPDATE dags SET current_version_id = (SELECT "
                    "current_version_id FROM dags WHERE dag_id = 'b') "
                    "WHERE dag_id = 'a'");

    /* Tokens: SHA-256 hashes, known roles, one live token per name. */
    ASSERT_SQLSTATE(c, "",
                    "INSERT INTO api_tokens (name, role, token_hash) "
                    "VALUES ('ci', 'operator', sha256('one'))");
    ASSERT_SQLSTATE(c, "23505",
                    "INSERT INTO api_tokens (name, role, token_hash) "
                    "VALUES ('ci', 'operator', sha256('two'))");
    ASSERT_SQLSTATE(c, "23514",
                    "INSERT INTO api_tokens (name, role, token_hash) "
                    "VALUES ('x', 'root', sha256('three'))");
    ASSERT_SQLSTATE(c, "23514",
                    "INSERT INTO api_tokens (name, role, token_hash) "
                    "VALUES ('x', 'viewer', '\\x00')");
    ASSERT_SQLSTATE(c, "", "UPDATE api_tokens SET revoked_at = now()");
    ASSERT_SQLSTATE(c, "",
                    "INSERT INTO api_tokens (name, role, token_hash) "
                    "VALUES ('ci', 'operator', sha256('two'))");
    ASSERT_SQLSTATE(c, "",
                    "INSERT INTO scheduler_state (key, value) "
                    "VALUES ('leader', '{\"id\": \"sched-1\"}')");
    PQfinish(c);
    arena_release(&mem);
    store_close(st);
    free(url);
}
END_TEST

START_TEST(test_names)
{
    for (int s = 0; s < STORE_STEP_STATE_COUNT; s++) {
        enum store_step_state back;
        ck_assert_int_eq(store_step_state_parse(&back, store_step_state_name(s)), 0);
        ck_assert_int_eq(back, s);
    }
    enum store_run_state rs;
    ck_assert_int_eq(store_run_state_parse(&rs, "cancelling"), 0);
    ck_assert_int_eq(rs, STORE_RUN_CANCELLING);
    ck_assert_int_eq(store_run_state_parse(&rs, "pending"), SL_EINVAL);
    enum store_trigger t;
    ck_assert_int_eq(store_trigger_parse(&t, "backfill"), 0);
    ck_assert_str_eq(store_trigger_name(t), "backfill");
    ck_assert_int_eq(store_trigger_parse(&t, NULL), SL_EINVAL);
}
END_TEST

/* --- lost connections ----------------------------------------------------------------------- */

START_TEST(test_reconnect_after_terminate)
{
    struct store *st = migrated("st_reconnect", NULL);
    struct arena mem = ARENA_INIT;
    put(st, "a", "dags/a.yaml", 1, NULL);
    PGconn *admin = pgtest_admin_connect(NULL);

    /* Between calls: the next call reconnects, prepares again and succeeds. */
    int pid = store_backend_pid(st);
    uint64_t gen = store_generation(st);
    ck_assert_int_gt(pid, 0);
    terminate_backend(admin, pid);
    struct store_dag d;
    CK_STORE_OK(st, store_dag_get(st, &d, "a", &mem));
    ck_assert_str_eq(d.dag_id, "a");
    ck_assert_int_ne(store_backend_pid(st), pid);
    ck_assert_uint_eq(store_generation(st), gen + 1);
    /* Session settings come back with the new connection. */
    PGresult *res = NULL;
    CK_STORE_OK(st, store_exec_sql(st, &res, "SHOW statement_timeout", 0, NULL));
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "10s");
    PQclear(res);

    /* A multi-statement operation (its own transaction) survives it too. */
    terminate_backend(admin, store_backend_pid(st));
    bool changed = false;
    put(st, "a", "dags/a.yaml", 2, &changed);
    ck_assert(changed);
    /* ... and so does a run creation, which reports the run as new. */
    terminate_backend(admin, store_backend_pid(st));
    struct store_run_new in = run_new("a", STORE_TRIGGER_MANUAL);
    in.idempotency_key = "after-kill";
    struct store_run r;
    bool existed = true;
    CK_STORE_OK(st, store_run_create(st, &r, &existed, &in, &mem));
    ck_assert(!existed);
    ck_assert_uint_eq(store_generation(st), gen + 3);

    /* Inside a transaction the loss is reported, never hidden. */
    CK_STORE_OK(st, store_begin(st));
    CK_STORE_OK(st, store_dag_set_paused(st, "a", true));
    terminate_backend(admin, store_backend_pid(st));
    ck_assert_int_eq(store_dag_set_paused(st, "a", false), SL_ECONN);
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), "rolled back"));
    ck_assert_int_eq(store_dag_get(st, &d, "a", &mem), SL_ECONN); /* still, until rollback */
    ck_assert_int_eq(store_begin(st), SL_EINVAL);
    CK_STORE_OK(st, store_rollback(st));
    CK_STORE_OK(st, store_dag_get(st, &d, "a", &mem));
    ck_assert(!d.is_paused);
    /* Commit after a loss the store already saw: definitely rolled back. */
    CK_STORE_OK(st, store_begin(st));
    terminate_backend(admin, store_backend_pid(st));
    ck_assert_int_eq(store_dag_set_paused(st, "a", true), SL_ECONN);
    ck_assert_int_eq(store_commit(st), SL_ECONN);
    CK_STORE_OK(st, store_dag_get(st, &d, "a", &mem));
    ck_assert(!d.is_paused);

    /* An error inside a transaction aborts it: commit rolls back and says so. */
    CK_STORE_OK(st, store_begin(st));
    CK_STORE_OK(st, store_dag_set_paused(st, "a", true));
    struct store_dag_put bad = {"Bad", "dags/bad.yaml", "{}", "", NULL};
    int64_t id;
    ck_assert_int_eq(store_dag_put_version(st, &id, &changed, &bad), SL_EINVAL);
    ck_assert_int_eq(store_dag_set_paused(st, "a", true), SL_EINVAL);
    ck_assert_int_eq(store_commit(st), SL_EINVAL);
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), "rolled back"));
    CK_STORE_OK(st, store_dag_get(st, &d, "a", &mem));
    ck_assert(!d.is_paused);
    ck_assert_int_eq(store_commit(st), SL_EINVAL);   /* none open */
    ck_assert_int_eq(store_rollback(st), SL_EINVAL); /* none open */
    PQfinish(admin);
    arena_release(&mem);
    store_close(st);
}
END_TEST

START_TEST(test_prepared_statements_vanish)
{
    struct store *st = migrated("st_deallocate", NULL);
    struct arena mem = ARENA_INIT;
    put(st, "a", "dags/a.yaml", 1, NULL);
    struct store_dag *list;
    struct store_dag d;
    size_t n;
    CK_STORE_OK(st, store_dag_list(st, &list, &n, &mem));
    CK_STORE_OK(st, store_dag_get(st, &d, "a", &mem));
    /* Someone (a pooler, an operator) drops one of the session's prepared statements: the
     * store prepares it again, and the others it still finds in place. */
    PGresult *res = NULL;
    CK_STORE_OK(st, store_exec_sql(st, &res, "DEALLOCATE sluice_dag_list", 0, NULL));
    PQclear(res);
    CK_STORE_OK(st, store_dag_list(st, &list, &n, &mem));
    ck_assert_uint_eq(n, 1);
    CK_STORE_OK(st, store_dag_get(st, &d, "a", &mem));
    CK_STORE_OK(st, store_exec_sql(st, &res, "DEALLOCATE ALL", 0, NULL));
    PQclear(res);
    CK_STORE_OK(st, store_dag_get(st, &d, "a", &mem));
    CK_STORE_OK(st, store_dag_list(st, &list, &n, &mem));
    arena_release(&mem);
    store_close(st);
}
END_TEST

START_TEST(test_unknown_commit)
{
    struct store *st = migrated("st_unknown_commit", NULL);
    struct arena mem = ARENA_INIT;
    put(st, "a", "dags/a.yaml", 1, NULL);
    PGconn *admin = pgtest_admin_connect(NULL);

    /* The backend dies between the last statement and COMMIT: the store cannot know
     * whether COMMIT was executed, so it says so. */
    CK_STORE_OK(st, store_begin(st));
    CK_STORE_OK(st, store_dag_set_paused(st, "a", true));
    terminate_backend(admin, store_backend_pid(st));
    ck_assert_int_eq(store_commit(st), STORE_EUNKNOWN);
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), "may or may not have committed"));
    /* The caller re-reads: the next call reconnects; here the answer is "not committed". */
    struct store_dag d;
    CK_STORE_OK(st, store_dag_get(st, &d, "a", &mem));
    ck_assert(!d.is_paused);
    /* A transaction that did commit reads back as such. */
    CK_STORE_OK(st, store_begin(st));
    CK_STORE_OK(st, store_dag_set_paused(st, "a", true));
    CK_STORE_OK(st, store_commit(st));
    CK_STORE_OK(st, store_dag_get(st, &d, "a", &mem));
    ck_assert(d.is_paused);
    PQfinish(admin);
    arena_release(&mem);
    store_close(st);
}
END_TEST

START_TEST(test_reconnect_backoff)
{
    char *url = NULL;
    struct store *st = migrated("st_backoff", &url);
    store_close(st);
    st = open_with(url, 10000, 10000);
    struct arena mem = ARENA_INIT;
    PGconn *admin = pgtest_admin_connect(NULL);

    /* The database refuses connections for 600 ms: the store keeps trying, then gets in. */
    pgtest_admin_exec(admin, "ALTER DATABASE st_backoff ALLOW_CONNECTIONS false");
    terminate_backend(admin, store_backend_pid(st));
    fflush(NULL);
    pid_t kid = fork();
    ck_assert_int_ge(kid, 0);
    if (kid == 0) {
        nap_ms(600);
        PGconn *c = PQconnectdb(pgtest_pg.url);
        PGresult *res = PQexec(c, "ALTER DATABASE st_backoff ALLOW_CONNECTIONS true");
        int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        PQfinish(c);
        _exit(ok ? 0 : 1);
    }
    int64_t t0 = mono_ms();
    struct store_dag *list;
    size_t n;
    CK_STORE_OK(st, store_dag_list(st, &list, &n, &mem));
    int64_t waited = mono_ms() - t0;
    wait_ok(kid);
    ck_assert_msg(waited >= 500 && waited < 5000, "waited %lld ms", (long long)waited);
    ck_assert_uint_eq(store_generation(st), 2);
    store_close(st);

    /* With a budget of 400 ms, a database that stays closed is given up on in time. */
    st = open_with(url, 400, 10000);
    pgtest_admin_exec(admin, "ALTER DATABASE st_backoff ALLOW_CONNECTIONS false");
    terminate_backend(admin, store_backend_pid(st));
    t0 = mono_ms();
    ck_assert_int_eq(store_dag_list(st, &list, &n, &mem), SL_ECONN);
    waited = mono_ms() - t0;
    ck_assert_msg(waited >= 350 && waited < 3000, "gave up after %lld ms", (long long)waited);
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), "cannot connect to the database"));
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), "not currently accepting connections"));
    pgtest_admin_exec(admin, "ALTER DATABASE st_backoff ALLOW_CONNECTIONS true");
    CK_STORE_OK(st, store_dag_list(st, &list, &n, &mem)); /* and recovers on the next call */
    PQfinish(admin);
    arena_release(&mem);
    store_close(st);
    free(url);
}
END_TEST

START_TEST(test_server_gone)
{
    /* A server of this test's own, stopped for good under the store. */
    struct harness_pg mine;
    ck_assert_int_eq(harness_pg_start(&mine), 0);
    struct store *st = open_with(mine.url, 300, 10000);
    int v;
    CK_STORE_OK(st, store_migrate(st, &v, NULL));
    ck_assert_int_eq(harness_pg_stop(&mine), 0);
    struct arena mem = ARENA_INIT;
    struct store_dag *list;
    size_t n;
    int64_t t0 = mono_ms();
    int rc = store_dag_list(st, &list, &n, &mem);
    ck_assert_msg(rc == SL_ECONN, "rc %d: %s", rc, store_errmsg(st));
    int64_t waited = mono_ms() - t0;
    ck_assert_msg(waited >= 250 && waited < 3000, "gave up after %lld ms", (long long)waited);
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), "cannot connect to the database (host="));
    ck_assert_int_eq(store_begin(st), SL_ECONN);
    ck_assert_int_eq(store_backend_pid(st), 0);
    arena_release(&mem);
    store_close(st);
}
END_TEST

START_TEST(test_session_bind)
{
    struct store *st = migrated("st_bind", NULL);
    struct arena mem = ARENA_INIT;
    PGconn *admin = pgtest_admin_connect(NULL);
    store_session_bind(st);
    uint64_t gen = store_generation(st);
    struct store_dag *list;
    size_t n;
    CK_STORE_OK(st, store_dag_list(st, &list, &n, &mem));
    ck_assert(!store_session_lost(st));
    terminate_backend(admin, store_backend_pid(st));
    /* A bound session is not replaced behind the caller's back. */
    ck_assert_int_eq(store_dag_list(st, &list, &n, &mem), SL_ECONN);
    ck_assert(store_session_lost(st));
    ck_assert_int_eq(store_dag_list(st, &list, &n, &mem), SL_ECONN);
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), "advisory locks are gone"));
    ck_assert_uint_eq(store_generation(st), gen);
    store_session_unbind(st);
    CK_STORE_OK(st, store_dag_list(st, &list, &n, &mem));
    ck_assert_uint_eq(store_generation(st), gen + 1);
    PQfinish(admin);
    arena_release(&mem);
    store_close(st);
}
END_TEST

START_TEST(test_statement_timeout)
{
    char *url = NULL;
    struct store *st = migrated("st_timeout", &url);
    put(st, "a", "dags/a.yaml", 1, NULL);
    store_close(st);
    st = open_with(url, 5000, 300);
    PGconn *holder = pgtest_admin_connect(url);
    pgtest_admin_exec(holder, "BEGIN");
    pgtest_admin_exec(holder, "SELECT * FROM dags WHERE dag_id = 'a' FOR UPDATE");
    int64_t t0 = mono_ms();
    ck_assert_int_eq(store_dag_set_paused(st, "a", true), SL_ETIMEDOUT);
    int64_t waited = mono_ms() - t0;
    ck_assert_msg(waited >= 250 && waited < 3000, "timed out after %lld ms", (long long)waited);
    ck_assert_ptr_nonnull(strstr(store_errmsg(st), "statement timeout"));
    pgtest_admin_exec(holder, "ROLLBACK");
    CK_STORE_OK(st, store_dag_set_paused(st, "a", true));
    PQfinish(holder);
    store_close(st);
    free(url);
}
END_TEST

START_TEST(test_secrets_stay_secret)
{
    struct strbuf err = STRBUF_INIT;
    struct store_options o = STORE_OPTIONS_INIT;
    o.reconnect_wait_ms = 0;
    struct store *st = NULL;
    ck_assert_int_eq(store_open(&st, "postgresql://sluice:TopSecret99@127.0.0.1:1/nodb", &o, &err),
                     SL_ECONN);
    ck_assert_ptr_null(st);
    ck_assert_ptr_nonnull(strstr(err.buf, "dbname=nodb user=sluice"));
    ck_assert_ptr_null(strstr(err.buf, "TopSecret99"));
    strbuf_reset(&err);
    /* libpq's parse errors quote the URL: they are not passed on. */
    ck_assert_int_eq(store_open(&st, "postgresql://sluice:Top%zzSecret@host/db", &o, &err),
                     SL_EINVAL);
    ck_assert_ptr_null(strstr(err.buf, "Secret"));
    strbuf_reset(&err);
    /* A working URL with a password (trust authentication ignores it). */
    char *url = xasprintf("%s&password=TopSecret99", pgtest_pg.url);
    ck_assert_int_eq(store_open(&st, url, &o, &err), 0);
    ck_assert_ptr_null(strstr(store_target(st), "TopSecret99"));
    ck_assert_int_eq(store_fail(st, SL_EINVAL, "echo TopSecret99 echo"), SL_EINVAL);
    ck_assert_str_eq(store_errmsg(st), "echo *** echo");
    store_close(st);
    free(url);
    strbuf_release(&err);
}
END_TEST

/* --- plans of the hot queries --------------------------------------------------------------- */

/* Fails if plan (an EXPLAIN (FORMAT JSON) node) or any node under it scans runs or
 * step_instances sequentially. */
static void assert_no_seq_scan(const cJSON *node, const char *stmt, const char *json)
{
    if (cJSON_IsArray(node) || cJSON_IsObject(node)) {
        const cJSON *type = cJSON_IsObject(node) ? cJSON_GetObjectItem(node, "Node Type") : NULL;
        const cJSON *rel = cJSON_IsObject(node) ? cJSON_GetObjectItem(node, "Relation Name") : NULL;
        if (cJSON_IsString(type) && !strcmp(type->valuestring, "Seq Scan") && cJSON_IsString(rel))
            ck_assert_msg(strcmp(rel->valuestring, "runs") != 0 &&
                              strcmp(rel->valuestring, "step_instances") != 0,
                          "%s scans %s sequentially:\n%s", stmt, rel->valuestring, json);
        for (const cJSON *c = node->child; c; c = c->next)
            assert_no_seq_scan(c, stmt, json);
    }
}

static void check_plan(struct store *st, const struct store_stmt *stmt, int n,
                       const char *const *params, const char *index)
{
    char *json = NULL;
    CK_STORE_OK(st, store_explain(st, &json, stmt, n, params));
    cJSON *plan = cJSON_Parse(json);
    ck_assert_ptr_nonnull(plan);
    assert_no_seq_scan(plan, stmt->name, json);
    ck_assert_msg(strstr(json, index) != NULL, "%s does not use %s:\n%s", stmt->name, index, json);
    cJSON_Delete(plan);
    free(json);
}

START_TEST(test_hot_queries_use_indexes)
{
    char *url = NULL;
    struct store *st = migrated("st_explain", &url);
    PGconn *c = pgtest_admin_connect(url);
    int64_t t0 = mono_ms();
    /* 100 DAGs, 100,000 runs (0.1% still running), two step instances per run. The
     * foreign key triggers are skipped for the bulk load (the rows are consistent). */
    pgtest_admin_exec(c, "SET session_replication_role = replica");
    pgtest_admin_exec(
        c, "INSERT INTO dags (dag_id, file_path) "
           "SELECT 'dag-' || i, 'dags/dag-' || i || '.yaml' FROM generate_series(1, 100) i");
    pgtest_admin_exec(c,
                      "INSERT INTO dag_versions (dag_id, content_hash, model, source, file_path) "
                      "SELECT dag_id, encode(sha256(convert_to(dag_id, 'UTF8')), 'hex'), "
                      "jsonb_build_object('name', dag_id), '', file_path FROM dags");
    pgtest_admin_exec(c, "UPDATE dags d SET current_version_id = v.id FROM dag_versions v "
                         "WHERE v.dag_id = d.dag_id");
    pgtest_admin_exec(
        c, "INSERT INTO runs (dag_id, run_id, version_id, state, trigger, logical_time, "
           "started_at, ended_at) "
           "SELECT v.dag_id, 'scheduled__' || g.i, v.id, "
           "  CASE WHEN g.i % 1000 = 0 THEN 'running' ELSE 'succeeded' END, 'scheduled', "
           "  timestamptz '2015-01-01' + g.i * interval '1 hour', now(), "
           "  CASE WHEN g.i % 1000 = 0 THEN NULL ELSE now() END "
           "FROM (SELECT i, 'dag-' || (i % 100 + 1) AS dag_id "
           "      FROM generate_series(1, 100000) i) g "
           "JOIN dag_versions v ON v.dag_id = g.dag_id");
    pgtest_admin_exec(c, "INSERT INTO step_instances (run_pk, step, state, attempt, queued_at, "
                         "started_at, ended_at) "
                         "SELECT r.id, s.step, "
                         "  CASE WHEN r.state = 'running' THEN "
                         "    CASE s.step WHEN 'a' THEN 'running' ELSE 'queued' END "
                         "  ELSE 'succeeded' END, 1, r.logical_time, r.started_at, r.ended_at "
                         "FROM runs r CROSS JOIN (VALUES ('a'), ('b')) s(step)");
    pgtest_admin_exec(c, "VACUUM ANALYZE");
    int64_t load_ms = mono_ms() - t0;
    PQfinish(c);

    /* The store's own statements, with parameters, as the engine will run them. */
    const char *dag[] = {"dag-1"}; /* 1,000 runs, 100 of them active */
    const char *run[] = {"dag-8", "scheduled__507"};
    const char *steps[] = {"5000", "{queued,running}"};
    const char *queued[] = {"1893456000000", "100"}; /* before 2030 */
    check_plan(st, &store_stmt_runs_active, 1, dag, "runs_active_idx");
    check_plan(st, &store_stmt_runs_active_count, 1, dag, "runs_active_idx");
    check_plan(st, &store_stmt_runs_active_counts, 0, NULL, "runs_active_idx");
    check_plan(st, &store_stmt_runs_active_all, 0, NULL, "runs_active_idx");
    check_plan(st, &store_stmt_run_get, 2, run, "runs_dag_id_run_id_key");
    check_plan(st, &store_stmt_steps_of_run, 2, steps, "step_instances_pkey");
    check_plan(st, &store_stmt_steps_queued_before, 2, queued, "step_instances_queued_idx");
    check_plan(st, &store_stmt_dag_last_scheduled, 1, dag, "runs_scheduled_key");
    check_plan(st, &store_stmt_dag_list, 0, NULL, "runs_scheduled_key");

    /* And they answer correctly. */
    struct arena mem = ARENA_INIT;
    struct store_run *active;
    size_t n;
    CK_STORE_OK(st, store_runs_active(st, &active, &n, "dag-1", &mem));
    ck_assert_uint_eq(n, 100); /* i = 1000, 2000, ... all land on dag-1 */
    CK_STORE_OK(st, store_runs_active(st, &active, &n, "dag-8", &mem));
    ck_assert_uint_eq(n, 0);
    CK_STORE_OK(st, store_runs_active(st, &active, &n, "dag-1", &mem));
    struct store_step_instance *si;
    CK_STORE_OK(st, store_steps_of_run(st, &si, &n, active[0].id,
                                       STORE_STEP_MASK(STORE_STEP_QUEUED), &mem));
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(si[0].step, "b");
    ck_assert_int_eq(si[0].map_index, -1);
    ck_assert_int_eq(si[0].state, STORE_STEP_QUEUED);
    ck_assert_int_eq(si[0].exit_code, STORE_NO_EXIT_CODE);
    CK_STORE_OK(st, store_steps_of_run(st, &si, &n, active[0].id, 0, &mem));
    ck_assert_uint_eq(n, 2);
    CK_STORE_OK(st, store_steps_queued_before(st, &si, &n, INT64_C(1893456000000), 10, &mem));
    ck_assert_uint_eq(n, 10);
    ck_assert_int_le(si[0].queued_at_ms, si[9].queued_at_ms);
    struct store_dag_count *counts;
    CK_STORE_OK(st, store_runs_active_counts(st, &counts, &n, &mem));
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(counts[0].n, 100);
    struct store_dag *dags;
    CK_STORE_OK(st, store_dag_list(st, &dags, &n, &mem));
    ck_assert_uint_eq(n, 100);
    ck_assert_int_ne(dags[0].last_scheduled_ms, STORE_NO_TIME);
    fprintf(stderr, "store: loaded 100,000 runs and 200,000 step instances in %lld ms\n",
            (long long)load_ms);
    arena_release(&mem);
    store_close(st);
    free(url);
}
END_TEST

Suite *suite_integration_store(void)
{
    Suite *s = suite_create("integration_store");
    TCase *tc = tcase_create("store");
    tcase_add_unchecked_fixture(tc, pgtest_setup, pgtest_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_migrate_fresh_and_idempotent);
    tcase_add_test(tc, test_migrate_concurrent);
    tcase_add_test(tc, test_migrate_refuses_newer_and_changed);
    tcase_add_test(tc, test_cli_db);
    tcase_add_test(tc, test_registry_versions);
    tcase_add_test(tc, test_registry_import_errors);
    tcase_add_test(tc, test_registry_deactivate_and_pause);
    tcase_add_test(tc, test_run_idempotency);
    tcase_add_test(tc, test_run_scheduled_never_doubles);
    tcase_add_test(tc, test_run_params_round_trip);
    tcase_add_test(tc, test_runs_active);
    tcase_add_test(tc, test_schema_constraints);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_reconnect_after_terminate);
    tcase_add_test(tc, test_prepared_statements_vanish);
    tcase_add_test(tc, test_unknown_commit);
    tcase_add_test(tc, test_reconnect_backoff);
    tcase_add_test(tc, test_server_gone);
    tcase_add_test(tc, test_session_bind);
    tcase_add_test(tc, test_statement_timeout);
    tcase_add_test(tc, test_secrets_stay_secret);
    tcase_add_test(tc, test_hot_queries_use_indexes);
    suite_add_tcase(s, tc);
    return s;
}
