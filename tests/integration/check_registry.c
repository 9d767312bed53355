/*
 * tests/integration/check_registry.c - the DAG registry against a real PostgreSQL.
 *
 * One scenario, as a user would push changes: add two DAGs, sync twice, change
 * one and break the other, fix it, delete a file, rename one, declare one name
 * in two files, rename a DAG inside its file, lose the source. After each sync
 * the store's view is checked.
 */
#include "scheduler/registry.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "store/store.h"
#include "tests/harness/harness.h"
#include "tests/harness/pgtest.h"
#include "tests/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

static void put_file(const char *name, const char *text)
{
    char *path = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    free(path);
}

static void remove_file(const char *name)
{
    char *path = xasprintf("%s/%s", dir, name);
    ck_assert_int_eq(unlink(path), 0);
    free(path);
}

static char *dag_text(const char *name, const char *description)
{
    return xasprintf("name: %s\ndescription: %s\nsteps:\n  - {name: a, command: [echo]}\n", name,
                     description);
}

static struct registry_report sync_ok(struct store *st, struct registry_source *src)
{
    struct registry_report rep;
    struct strbuf err = STRBUF_INIT;
    int rc = registry_sync(st, src, NULL, NULL, &rep, &err);
    ck_assert_msg(rc == 0, "sync: %s", err.buf);
    strbuf_release(&err);
    return rep;
}

static struct store_dag get_dag(struct store *st, const char *id, struct arena *mem)
{
    struct store_dag d;
    ck_assert_int_eq(store_dag_get(st, &d, id, mem), 0);
    return d;
}

/* The import errors of file as JSON text, or NULL. */
static const char *import_errors(struct store *st, const char *file, struct arena *mem)
{
    struct store_import_error *v;
    size_t n;
    ck_assert_int_eq(store_import_errors_list(st, &v, &n, mem), 0);
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(v[i].file_path, file))
            return v[i].errors_json;
    }
    return NULL;
}

START_TEST(test_registry_follows_the_files)
{
    struct store *st = NULL;
    struct strbuf err = STRBUF_INIT;
    ck_assert_msg(store_open(&st, pgtest_pg.url, NULL, &err) == 0, "%s", err.buf);
    ck_assert_int_eq(store_migrate(st, NULL, NULL), 0);
    snprintf(dir, sizeof(dir), "/tmp/sluice-registry-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    struct arena mem = ARENA_INIT;
    char *t;

    struct registry_source *src;
    ck_assert_int_eq(registry_dir_source(&src, dir), 0);
    put_file("alpha.yaml", t = dag_text("alpha", "one"));
    free(t);
    put_file("beta.yml", t = dag_text("beta", "one"));
    free(t);
    put_file("notes.txt", "not a DAG file");

    struct registry_report rep = sync_ok(st, src);
    ck_assert_uint_eq(rep.files, 2);
    ck_assert_uint_eq(rep.valid, 2);
    ck_assert_uint_eq(rep.changed, 2);
    int64_t beta_v1 = get_dag(st, "beta", &mem).current_version_id;

    rep = sync_ok(st, src); /* nothing changed */
    ck_assert_uint_eq(rep.changed, 0);

    /* change one, break the other: its last good version stays current */
    put_file("alpha.yaml", t = dag_text("alpha", "two"));
    free(t);
    put_file("beta.yml", "name: beta\nsteps:\n  - {name: a, command: [echo], timeout: 5}\n");
    rep = sync_ok(st, src);
    ck_assert_uint_eq(rep.changed, 1);
    ck_assert_uint_eq(rep.invalid, 1);
    struct store_dag beta = get_dag(st, "beta", &mem);
    ck_assert(beta.is_active);
    ck_assert_int_eq(beta.current_version_id, beta_v1);
    const char *errs = import_errors(st, "beta.yml", &mem);
    ck_assert_ptr_nonnull(errs);
    ck_assert_msg(strstr(errs, "\"line\": 3") && strstr(errs, "needs a unit"), "%s", errs);

    /* fix it: the error goes */
    put_file("beta.yml", t = dag_text("beta", "three"));
    free(t);
    rep = sync_ok(st, src);
    ck_assert_uint_eq(rep.invalid, 0);
    ck_assert_ptr_null(import_errors(st, "beta.yml", &mem));
    ck_assert_int_ne(get_dag(st, "beta", &mem).current_version_id, beta_v1);

    /* delete a file: its DAG is deactivated, not deleted */
    remove_file("alpha.yaml");
    rep = sync_ok(st, src);
    ck_assert_uint_eq(rep.deactivated, 1);
    ck_assert(!get_dag(st, "alpha", &mem).is_active);

    /* rename a file: no conflict, same DAG */
    remove_file("beta.yml");
    put_file("gamma.yaml", t = dag_text("beta", "three"));
    free(t);
    rep = sync_ok(st, src);
    ck_assert_uint_eq(rep.valid, 1);
    beta = get_dag(st, "beta", &mem);
    ck_assert(beta.is_active);
    ck_assert_str_eq(beta.file_path, "gamma.yaml");

    /* two files, one name: both are errors, the DAG keeps its version */
    put_file("delta.yaml", t = dag_text("beta", "four"));
    free(t);
    rep = sync_ok(st, src);
    ck_assert_uint_eq(rep.invalid, 2);
    /* files are taken in path order: delta.yaml, then gamma.yaml */
    ck_assert_ptr_nonnull(
        strstr(import_errors(st, "delta.yaml", &mem), "also declared by 'gamma.yaml'"));
    ck_assert_ptr_nonnull(
        strstr(import_errors(st, "gamma.yaml", &mem), "already declared by 'delta.yaml'"));
    ck_assert(get_dag(st, "beta", &mem).is_active);
    remove_file("delta.yaml");

    /* the file now declares another DAG: the old one is deactivated */
    put_file("gamma.yaml", t = dag_text("beta2", "five"));
    free(t);
    rep = sync_ok(st, src);
    ck_assert_uint_eq(rep.deactivated, 1);
    ck_assert(!get_dag(st, "beta", &mem).is_active);
    ck_assert(get_dag(st, "beta2", &mem).is_active);
    ck_assert_ptr_null(import_errors(st, "delta.yaml", &mem)); /* gone with its file */

    /* an oversized file is an import error */
    struct strbuf big = STRBUF_INIT;
    strbuf_addstr(&big, "name: big\nsteps: [{name: a, command: [x]}]\n");
    while (big.len <= DSL_DEFAULT_MAX_BYTES)
        strbuf_addstr(&big, "# padding padding padding padding padding padding padding\n");
    put_file("big.yaml", big.buf);
    strbuf_release(&big);
    rep = sync_ok(st, src);
    ck_assert_ptr_nonnull(strstr(import_errors(st, "big.yaml", &mem), "over the limit"));
    remove_file("big.yaml");

    /* the source disappears: the sync fails and changes nothing */
    remove_file("gamma.yaml");
    remove_file("notes.txt");
    ck_assert_int_eq(rmdir(dir), 0);
    strbuf_reset(&err);
    ck_assert_int_lt(registry_sync(st, src, NULL, NULL, &rep, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.buf, "cannot open directory"));
    ck_assert(get_dag(st, "beta2", &mem).is_active);

    src->free(src);
    arena_release(&mem);
    strbuf_release(&err);
    store_close(st);
}
END_TEST

Suite *suite_integration_registry(void)
{
    Suite *s = suite_create("integration_registry");
    TCase *tc = tcase_create("dir");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, pgtest_setup, pgtest_teardown);
    tcase_add_test(tc, test_registry_follows_the_files);
    suite_add_tcase(s, tc);
    return s;
}
