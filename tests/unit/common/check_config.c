/*
 * tests/unit/common/check_config.c - sluice.yaml and SLUICE_* variables.
 */
#include "common/config.h"
#include "common/error.h"
#include "common/xalloc.h"
#include "tests/testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Writes text to a fresh temporary file; returns its path (caller frees, unlinks). */
static char *write_tmp(const char *text)
{
    char *path = xstrdup("/tmp/sluice-config-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq((int)write(fd, text, strlen(text)), (int)strlen(text));
    close(fd);
    return path;
}

START_TEST(test_config_defaults)
{
    unsetenv("SLUICE_CONFIG");
    struct sl_config c;
    struct strbuf err = STRBUF_INIT;
    char *empty = write_tmp("");
    ck_assert_int_eq(sl_config_load(&c, empty, &err), 0);
    ck_assert_str_eq(err.buf, "");
    ck_assert_ptr_null(c.database_url);
    ck_assert_str_eq(c.data_dir, ".sluice");
    ck_assert_str_eq(c.log_root, ".sluice/logs/steps");
    ck_assert_str_eq(c.work_root, ".sluice/work");
    ck_assert_str_eq(c.dags_dir, "dags");
    ck_assert_int_eq(c.dags_interval_ms, 30000);
    ck_assert_int_eq(c.scheduler.batch_size, 1000);
    ck_assert_str_eq(c.worker.queue, "default");
    ck_assert_int_eq(c.worker.slots, 4);
    ck_assert_int_eq(c.worker.retention_ms, 7LL * 24 * 3600 * 1000);
    sl_config_release(&c);
    unlink(empty);
    free(empty);
    strbuf_release(&err);
}
END_TEST

START_TEST(test_config_file_then_env)
{
    char *path = write_tmp("# a comment\n"
                           "database_url: postgresql://db/sluice\n"
                           "data_dir: /var/lib/sluice\n"
                           "scheduler:\n"
                           "  batch_size: 50\n"
                           "  reconcile_interval: 2s\n"
                           "worker:\n"
                           "  queue: gpu\n"
                           "  slots: 2\n"
                           "  gpus: \"0,1\"\n"
                           "secrets_dir: ~\n");
    setenv("SLUICE_WORKER_SLOTS", "8", 1);
    setenv("SLUICE_REDIS_URL", "redis://r:6379/1", 1);
    struct sl_config c;
    struct strbuf err = STRBUF_INIT;
    ck_assert_int_eq(sl_config_load(&c, path, &err), 0);
    ck_assert_str_eq(err.buf, "");
    ck_assert_str_eq(c.database_url, "postgresql://db/sluice");
    ck_assert_str_eq(c.redis_url, "redis://r:6379/1");
    ck_assert_str_eq(c.log_root, "/var/lib/sluice/logs/steps");
    ck_assert_int_eq(c.scheduler.batch_size, 50);
    ck_assert_int_eq(c.scheduler.reconcile_interval_ms, 2000);
    ck_assert_str_eq(c.worker.queue, "gpu");
    ck_assert_int_eq(c.worker.slots, 8); /* the environment wins */
    ck_assert_str_eq(c.worker.gpus, "0,1");
    ck_assert_ptr_null(c.secrets_dir);
    sl_config_release(&c);
    unlink(path);
    free(path);
    strbuf_release(&err);
}
END_TEST

START_TEST(test_config_errors_all_at_once)
{
    char *path = write_tmp("databse_url: x\n"
                           "scheduler:\n"
                           "  batch_size: many\n"
                           "  reconcile_interval: 5 minutes\n"
                           "workers:\n"
                           "  slots: 2\n"
                           "worker:\n"
                           "  queue: [a, b]\n");
    setenv("SLUICE_WORKER_KILL_GRACE", "soon", 1);
    struct sl_config c;
    struct strbuf err = STRBUF_INIT;
    ck_assert_int_eq(sl_config_load(&c, path, &err), SL_EINVAL);
    const char *expect[] = {
        ":1:1: unknown key 'databse_url'",
        ":3:15: scheduler.batch_size must be a whole number",
        ":4:23: scheduler.reconcile_interval must be a duration",
        ":5:1: unknown section 'workers'",
        ":8:10: worker.queue must be a single value",
        "SLUICE_WORKER_KILL_GRACE: worker.kill_grace must be a duration",
    };
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++)
        ck_assert_msg(strstr(err.buf, expect[i]), "missing '%s' in:\n%s", expect[i], err.buf);
    sl_config_release(&c);
    unlink(path);
    free(path);
    strbuf_release(&err);
}
END_TEST

START_TEST(test_config_missing_and_malformed)
{
    struct sl_config c;
    struct strbuf err = STRBUF_INIT;
    ck_assert_int_eq(sl_config_load(&c, "/nonexistent/sluice.yaml", &err), SL_ENOENT);
    ck_assert(strstr(err.buf, "/nonexistent/sluice.yaml"));
    sl_config_release(&c);
    strbuf_reset(&err);
    char *path = write_tmp("scheduler: {batch_size: 1\n");
    ck_assert_int_eq(sl_config_load(&c, path, &err), SL_EINVAL);
    ck_assert_msg(strstr(err.buf, path) && strstr(err.buf, ":2:"), "%s", err.buf);
    sl_config_release(&c);
    unlink(path);
    free(path);
    strbuf_reset(&err);
    path = write_tmp("- a\n- b\n");
    ck_assert_int_eq(sl_config_load(&c, path, &err), SL_EINVAL);
    ck_assert_msg(strstr(err.buf, "must be a mapping"), "%s", err.buf);
    sl_config_release(&c);
    unlink(path);
    free(path);
    strbuf_release(&err);
}
END_TEST

Suite *suite_common_config(void)
{
    Suite *s = suite_create("common_config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_config_defaults);
    tcase_add_test(tc, test_config_file_then_env);
    tcase_add_test(tc, test_config_errors_all_at_once);
    tcase_add_test(tc, test_config_missing_and_malformed);
    suite_add_tcase(s, tc);
    return s;
}
