/*
 * tests/integration/check_embed.c - the embedded servers of `sluice standalone` (cli/embed.c).
 *
 * Every test starts real PostgreSQL and Redis servers with embed_start() in a directory of
 * its own under one suite directory, which the runner creates (unchecked fixture, 0755 so
 * that "nobody" can reach it when the tests run as root) and removes at the end. The
 * servers belong to the forked test process; the checked teardown stops them, and if a
 * test dies on a failed assertion they stop through their parent-death signal.
 *
 * Data is written and read back through the real clients: store/ (libpq) and queue/
 * (hiredis). "Crashes" are played by a grandchild process that starts the servers and is
 * then killed, with or without its servers.
 */
#define _DEFAULT_SOURCE /* setgroups() */

#include "cli/embed.h"
#include "common/arena.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "queue/queue.h"
#include "store/store.h"
#include "tests/testutil.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char suite_dir[256]; /* set in the runner, inherited by every test */
static struct embed *emb;   /* the running test's servers, stopped by the teardown */

/* --- fixtures ------------------------------------------------------------------------- */

static void remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
                char *sub = xasprintf("%s/%s", path, de->d_name);
                remove_tree(sub);
                free(sub);
            }
        }
        if (d)
            closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void suite_setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(suite_dir, sizeof(suite_dir), "%s/sluice-check-embed.XXXXXX",
             tmp && *tmp == '/' && strlen(tmp) < 100 ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(suite_dir));
    ck_assert_int_eq(chmod(suite_dir, 0755), 0);
}

static void suite_teardown(void)
{
    if (suite_dir[0] && !getenv("SLUICE_EMBED_KEEP"))
        remove_tree(suite_dir);
}

static void test_teardown(void)
{
    embed_stop(emb);
    emb = NULL;
}

/* --- helpers -------------------------------------------------------------------------- */

/* A fresh directory <suite_dir>/<name>, newly allocated. */
static char *test_dir(const char *name)
{
    char *dir = xasprintf("%s/%s", suite_dir, name);
    ck_assert_msg(mkdir(dir, 0755) == 0, "mkdir %s: %s", dir, strerror(errno));
    return dir;
}

static struct embed *start_on(const char *data_dir)
{
    struct embed_options o = EMBED_OPTIONS_INIT;
    o.data_dir = data_dir;
    struct strbuf err = STRBUF_INIT;
    struct embed *e = NULL;
    int rc = embed_start(&e, &o, &err);
    ck_assert_msg(rc == 0, "embed_start(%s) = %s: %s", data_dir ? data_dir : "NULL",
                  sl_strerror(rc), err.buf);
    strbuf_release(&err);
    return e;
}

static struct store *open_store(const struct embed *e)
{
    struct store_options o = STORE_OPTIONS_INIT;
    o.reconnect_wait_ms = 2000;
    struct strbuf err = STRBUF_INIT;
    struct store *st = NULL;
    int rc = store_open(&st, embed_database_url(e), &o, &err);
    ck_assert_msg(rc == 0, "store_open(%s): %s", embed_database_url(e), err.buf);
    strbuf_release(&err);
    return st;
}

static struct queue *open_queue(const struct embed *e)
{
    struct queue_options o = {.connect_timeout_ms = 1000, .command_timeout_ms = 2000};
    struct queue *q = NULL;
    int rc = queue_open(&q, embed_redis_url(e), &o);
    ck_assert_msg(rc == 0, "queue_open(%s): %s", embed_redis_url(e), sl_strerror(rc));
    ck_assert_int_eq(queue_ping(q), 0);
    return q;
}

/* Writes one row (an import error of file) and one queued step (attempt) through the real
 * clients, after migrating the schema. */
static void write_data(const struct embed *e, const char *file, const char *attempt)
{
    struct store *st = open_store(e);
    int version = 0, applied = 0;
    ck_assert_msg(store_migrate(st, &version, &applied) == 0, "%s", store_errmsg(st));
    struct store_import_error_item item = {3, 7, "a remembered error"};
    ck_assert_msg(store_import_error_set(st, file, NULL, &item, 1) == 0, "%s", store_errmsg(st));
    store_close(st);

    struct queue *q = open_queue(e);
    cJSON *spec = cJSON_CreateObject();
    cJSON_AddStringToObject(spec, "image", "busybox");
    struct queue_step_msg m = {.attempt_id = (char *)attempt,
                               .dag_id = "etl",
                               .run_id = "run-1",
                               .step = "extract",
                               .map_index = -1,
                               .attempt = 1,
                               .spec = spec};
    ck_assert_int_eq(queue_dispatch(NULL, q, "cpu", &m), 0);
    cJSON_Delete(spec);
    queue_close(q);
}

/* Checks that write_data(e, file, attempt) survived. */
static void expect_data(const struct embed *e, const char *file, const char *attempt)
{
    struct store *st = open_store(e);
    int version = 0;
    ck_assert_int_eq(store_schema_version(st, &version), 0);
    ck_assert_int_eq(version, store_schema_latest());
    struct arena mem = ARENA_INIT;
    struct store_import_error *v = NULL;
    size_t n = 0, found = 0;
    ck_assert_msg(store_import_errors_list(st, &v, &n, &mem) == 0, "%s", store_errmsg(st));
    for (size_t i = 0; i < n; i++)
        found += !strcmp(v[i].file_path, file) && strstr(v[i].errors_json, "a remembered error");
    ck_assert_msg(found == 1, "the row of \"%s\" is gone", file);
    arena_release(&mem);
    store_close(st);

    struct queue *q = open_queue(e);
    bool has = false;
    ck_assert_int_eq(queue_has_message(&has, q, "cpu", attempt), 0);
    ck_assert_msg(has, "the queued message of \"%s\" is gone", attempt);
    queue_close(q);
}

/* Whether pid has exited: no such process, or a zombie nobody reaped yet (an orphan of a
 * killed grandchild, where PID 1 does not reap). */
static int is_gone(pid_t pid)
{
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return 1;
    char *path = xasprintf("/proc/%ld/stat", (long)pid);
    struct strbuf sb = STRBUF_INIT;
    int zombie = 0;
    if (strbuf_read_file(&sb, path, 4096) == 0) {
        const char *paren = strrchr(sb.buf, ')'); /* "pid (comm) S ..." */
        zombie = paren && paren[1] == ' ' && paren[2] == 'Z';
    }
    strbuf_release(&sb);
    free(path);
    return zombie;
}

/* The real uid of a process, from /proc. */
static long proc_uid(pid_t pid)
{
    char *path = xasprintf("/proc/%ld/status", (long)pid);
    char *status = test_read_file(path, NULL);
    const char *uid = strstr(status, "\nUid:");
    ck_assert_ptr_nonnull(uid);
    long v = strtol(uid + 5, NULL, 10);
    free(status);
    free(path);
    return v;
}

static long nobody_uid(void)
{
    struct passwd *pw = getpwnam("nobody");
    return pw ? (long)pw->pw_uid : 65534;
}

static int count_in_file(const char *path, const char *needle)
{
    char *text = test_read_file(path, NULL);
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    free(text);
    return n;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Waits (bounded) for a process that is not our child to disappear. */
static void wait_gone(pid_t pid)
{
    for (int i = 0; i < 1000 && !is_gone(pid); i++)
        sleep_ms(10);
}

/* --- tests ---------------------------------------------------------------------------- */

/* First start initializes, data written through the real clients survives a clean stop,
 * the second start reuses it. As root, both servers run as "nobody". */
START_TEST(test_start_stop_reuse)
{
    char *dir = test_dir("reuse");
    char *data = xasprintf("%s/.sluice", dir);
    emb = start_on(data);

    char *want_db = xasprintf("postgresql:///sluice?host=%s/run&port=5432&user=sluice", data);
    char *want_redis = xasprintf("unix://%s/run/redis.sock", data);
    ck_assert_str_eq(embed_database_url(emb), want_db);
    ck_assert_str_eq(embed_redis_url(emb), want_redis);
    ck_assert_str_eq(embed_data_dir(emb), data);

    /* The layout. */
    const char *files[] = {"pg/PG_VERSION",   "logs/postgresql.log", "logs/redis.log",
                           "logs/initdb.log", "redis/redis.conf",    "standalone.lock"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char *path = xasprintf("%s/%s", data, files[i]);
        ck_assert_msg(access(path, R_OK) == 0, "%s missing", path);
        free(path);
    }
    char *lock = xasprintf("%s/standalone.lock", data);
    char *lock_text = test_read_file(lock, NULL);
    ck_assert_int_eq(strtol(lock_text, NULL, 10), getpid());
    free(lock_text);
    char *conf = xasprintf("%s/redis/redis.conf", data);
    ck_assert_int_eq(count_in_file(conf, "appendonly yes\n"), 1);
    ck_assert_int_eq(count_in_file(conf, "appendfsync everysec\n"), 1);
    ck_assert_int_eq(count_in_file(conf, "port 0\n"), 1);

    /* Whose the servers are. */
    pid_t pg = embed_pg_pid(emb), redis = embed_redis_pid(emb);
    ck_assert_int_gt(pg, 0);
    ck_assert_int_gt(redis, 0);
    ck_assert_int_eq(getpgid(pg), pg); /* own process group: no Ctrl-C from the terminal */
    ck_assert_int_eq(getpgid(redis), redis);
    ck_assert_int_eq(getsid(pg), pg);
    long want_uid = geteuid() == 0 ? nobody_uid() : (long)geteuid();
    ck_assert_int_eq(proc_uid(pg), want_uid);
    ck_assert_int_eq(proc_uid(redis), want_uid);
    struct stat st;
    char *pg_dir = xasprintf("%s/pg", data);
    ck_assert_int_eq(stat(pg_dir, &st), 0);
    ck_assert_int_eq((long)st.st_uid, want_uid);
    ck_assert_int_eq(st.st_mode & 0777, 0700);

    write_data(emb, "dags/reuse.yaml", "att-reuse");
    ck_assert_int_eq(embed_check(emb, NULL), 0);
    ck_assert_int_eq(embed_stop(emb), 0);
    emb = NULL;
    ck_assert(is_gone(pg));
    ck_assert(is_gone(redis));
    /* The lock is free: another process may take it now. */
    int fd = open(lock, O_RDWR);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
    close(fd);

    /* Second start: no initdb, same data. */
    emb = start_on(data);
    ck_assert_str_eq(embed_database_url(emb), want_db);
    expect_data(emb, "dags/reuse.yaml", "att-reuse");
    char *initdb_log = xasprintf("%s/logs/initdb.log", data);
    char *pg_log = xasprintf("%s/logs/postgresql.log", data);
    ck_assert_int_eq(count_in_file(initdb_log, "--- sluice standalone: starting initdb"), 1);
    ck_assert_int_eq(count_in_file(pg_log, "--- sluice standalone: starting postgresql"), 2);
    ck_assert_int_eq(embed_stop(emb), 0);
    emb = NULL;

    free(initdb_log);
    free(pg_log);
    free(pg_dir);
    free(conf);
    free(lock);
    free(want_db);
    free(want_redis);
    free(data);
    free(dir);
}
END_TEST

/* A directory in use is refused with its user's pid, in this process and in another; the
 * default data directory is ".sluice" under the working directory. */
START_TEST(test_in_use)
{
    char *dir = test_dir("inuse");
    ck_assert_int_eq(chdir(dir), 0);
    emb = start_on(NULL);
    char *want_db =
        xasprintf("postgresql:///sluice?host=%s/.sluice/run&port=5432&user=sluice", dir);
    ck_assert_str_eq(embed_database_url(emb), want_db);

    char *want = xasprintf("data directory .sluice is in use by pid %ld", (long)getpid());
    struct strbuf err = STRBUF_INIT;
    struct embed *second = NULL;
    ck_assert_int_eq(embed_start(&second, NULL, &err), SL_ECONFLICT);
    ck_assert_ptr_null(second);
    ck_assert_str_eq(err.buf, want);

    /* Another process, which inherited our lock's descriptor: refused all the same. */
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        close(fds[0]);
        struct strbuf cerr = STRBUF_INIT;
        struct embed *ce = NULL;
        int rc = embed_start(&ce, NULL, &cerr);
        if (write(fds[1], cerr.buf, cerr.len) < 0)
            _exit(3);
        _exit(rc == SL_ECONFLICT ? 0 : 1);
    }
    close(fds[1]);
    char buf[512] = "";
    ssize_t n = 0, r;
    while ((r = read(fds[0], buf + n, sizeof(buf) - 1 - (size_t)n)) > 0)
        n += r;
    close(fds[0]);
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_str_eq(buf, want);

    /* The refusals changed nothing: the servers still run, and still serve. */
    ck_assert_int_eq(embed_check(emb, NULL), 0);
    write_data(emb, "dags/inuse.yaml", "att-inuse");
    ck_assert_int_eq(embed_stop(emb), 0);
    emb = NULL;
    emb = start_on(".sluice");
    expect_data(emb, "dags/inuse.yaml", "att-inuse");

    strbuf_release(&err);
    free(want);
    free(want_db);
    free(dir);
}
END_TEST

/* A grandchild plays a sluice that starts the servers and then crashes. It reports the
 * servers' pids, then waits to be killed. */
static pid_t start_doomed(const char *data, pid_t *pg, pid_t *redis)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        close(fds[0]);
        struct embed_options o = EMBED_OPTIONS_INIT;
        o.data_dir = data;
        struct strbuf err = STRBUF_INIT;
        struct embed *e = NULL;
        long pids[2] = {0, 0};
        if (embed_start(&e, &o, &err) == 0) {
            pids[0] = embed_pg_pid(e);
            pids[1] = embed_redis_pid(e);
        } else {
            fprintf(stderr, "embed_start in the doomed child: %s\n", err.buf);
        }
        if (write(fds[1], pids, sizeof(pids)) != sizeof(pids) || !pids[0])
            _exit(1);
        for (;;)
            pause();
    }
    close(fds[1]);
    long pids[2] = {0, 0};
    ck_assert_int_eq(read(fds[0], pids, sizeof(pids)), sizeof(pids));
    close(fds[0]);
    ck_assert_msg(pids[0] > 0, "the doomed child could not start the servers");
    *pg = (pid_t)pids[0];
    *redis = (pid_t)pids[1];
    return child;
}

/* kill -9 of the postmaster, redis-server and sluice: stale pid files, stale sockets,
 * PostgreSQL children still attached to the old shared memory. The next start recovers,
 * and nothing committed or queued is lost. */
START_TEST(test_crash_restart)
{
    char *dir = test_dir("crash");
    char *data = xasprintf("%s/.sluice", dir);
    pid_t pg, redis, doomed = start_doomed(data, &pg, &redis);

    struct embed_options o = EMBED_OPTIONS_INIT;
    o.data_dir = data;
    struct strbuf err = STRBUF_INIT;
    ck_assert_int_eq(embed_start(&emb, &o, &err), SL_ECONFLICT); /* the child holds it */
    strbuf_release(&err);

    /* Connect the way the scheduler would, with the URLs the child's start produced. */
    emb = NULL;
    {
        char *db = xasprintf("postgresql:///sluice?host=%s/run&port=5432&user=sluice", data);
        struct store_options so = STORE_OPTIONS_INIT;
        struct store *st = NULL;
        struct strbuf serr = STRBUF_INIT;
        ck_assert_msg(store_open(&st, db, &so, &serr) == 0, "%s", serr.buf);
        int version, applied;
        ck_assert_int_eq(store_migrate(st, &version, &applied), 0);
        struct store_import_error_item item = {3, 7, "a remembered error"};
        ck_assert_int_eq(store_import_error_set(st, "dags/crash.yaml", NULL, &item, 1), 0);
        store_close(st);
        strbuf_release(&serr);
        free(db);

        char *url = xasprintf("unix://%s/run/redis.sock", data);
        struct queue *q = NULL;
        ck_assert_int_eq(queue_open(&q, url, NULL), 0);
        cJSON *spec = cJSON_CreateObject();
        struct queue_step_msg m = {.attempt_id = "att-crash",
                                   .dag_id = "etl",
                                   .run_id = "run-1",
                                   .step = "extract",
                                   .map_index = -1,
                                   .attempt = 1,
                                   .spec = spec};
        ck_assert_int_eq(queue_dispatch(NULL, q, "cpu", &m), 0);
        cJSON_Delete(spec);
        queue_close(q);
        free(url);
    }

    ck_assert_int_eq(kill(pg, SIGKILL), 0);
    ck_assert_int_eq(kill(redis, SIGKILL), 0);
    ck_assert_int_eq(kill(doomed, SIGKILL), 0);
    int status;
    ck_assert_int_eq(waitpid(doomed, &status, 0), doomed);
    char *pidfile = xasprintf("%s/pg/postmaster.pid", data);
    char *redis_pidfile = xasprintf("%s/redis/redis.pid", data);
    ck_assert_int_eq(access(pidfile, F_OK), 0); /* stale, left behind */
    ck_assert_int_eq(access(redis_pidfile, F_OK), 0);

    emb = start_on(data);
    ck_assert_int_ne(embed_pg_pid(emb), pg);
    expect_data(emb, "dags/crash.yaml", "att-crash");
    ck_assert_int_eq(embed_stop(emb), 0);
    emb = NULL;
    ck_assert_int_ne(access(redis_pidfile, F_OK), 0); /* a clean stop removes it */

    free(pidfile);
    free(redis_pidfile);
    free(data);
    free(dir);
}
END_TEST

/* kill -9 of sluice alone: its servers shut down through their parent-death signal, and
 * a start right away waits for them instead of failing. */
START_TEST(test_sluice_killed)
{
    char *dir = test_dir("killed");
    char *data = xasprintf("%s/.sluice", dir);
    pid_t pg, redis, doomed = start_doomed(data, &pg, &redis);
    ck_assert_int_eq(kill(doomed, SIGKILL), 0);
    int status;
    ck_assert_int_eq(waitpid(doomed, &status, 0), doomed);

    emb = start_on(data); /* perhaps while the old servers are still shutting down */
    ck_assert(is_gone(pg) || embed_pg_pid(emb) != pg);
    wait_gone(pg);
    wait_gone(redis);
    ck_assert(is_gone(pg));
    ck_assert(is_gone(redis));
    struct store *st = open_store(emb);
    store_close(st);
    queue_close(open_queue(emb));
    ck_assert_int_eq(embed_stop(emb), 0);
    emb = NULL;
    free(data);
    free(dir);
}
END_TEST

/* A data directory whose path is too long for a unix socket: the sockets move to /tmp,
 * which a stop removes. */
START_TEST(test_long_path)
{
    char *dir = test_dir("long");
    char *data = xasprintf("%s/%s/%s/.sluice", dir,
                           "a-directory-with-a-rather-long-name-to-push-the-path-over-the-limit",
                           "and-another-one-for-good-measure");
    ck_assert_int_gt(strlen(data), 107);
    emb = start_on(data);
    const char *url = embed_database_url(emb);
    ck_assert_msg(!strncmp(url, "postgresql:///sluice?host=/tmp/sluice-", 38), "%s", url);
    ck_assert_msg(!strncmp(embed_redis_url(emb), "unix:///tmp/sluice-", 19), "%s",
                  embed_redis_url(emb));
    char *record = xasprintf("%s/socket-dir", data);
    char *sockets = test_read_file(record, NULL);
    sockets[strcspn(sockets, "\n")] = '\0';
    ck_assert(strstr(url, sockets) != NULL);
    write_data(emb, "dags/long.yaml", "att-long");
    ck_assert_int_eq(embed_stop(emb), 0);
    emb = NULL;
    ck_assert_int_ne(access(sockets, F_OK), 0);
    ck_assert_int_ne(access(record, F_OK), 0);

    emb = start_on(data);
    expect_data(emb, "dags/long.yaml", "att-long");
    ck_assert_int_eq(embed_stop(emb), 0);
    emb = NULL;

    free(sockets);
    free(record);
    free(data);
    free(dir);
}
END_TEST

/* embed_check() notices a server that died, with its log. */
START_TEST(test_check_notices_death)
{
    char *dir = test_dir("death");
    emb = start_on(dir);
    ck_assert_int_eq(embed_check(emb, NULL), 0);
    ck_assert_int_eq(kill(embed_redis_pid(emb), SIGKILL), 0);
    struct strbuf err = STRBUF_INIT;
    int rc = 0;
    for (int i = 0; i < 500 && rc == 0; i++) {
        rc = embed_check(emb, &err);
        if (rc == 0)
            sleep_ms(10);
    }
    ck_assert_int_eq(rc, SL_EIO);
    ck_assert_msg(strstr(err.buf, "redis exited unexpectedly (killed by signal 9)"), "%s", err.buf);
    ck_assert_msg(strstr(err.buf, "logs/redis.log:"), "%s", err.buf);
    ck_assert_int_eq(embed_redis_pid(emb), 0);
    ck_assert_int_eq(embed_stop(emb), 0); /* PostgreSQL still stops cleanly */
    emb = NULL;
    strbuf_release(&err);
    free(dir);
}
END_TEST

/* Options and directories that cannot work are refused with a reason, and leave nothing
 * running or locked. */
START_TEST(test_refusals)
{
    char *dir = test_dir("refusals");
    struct strbuf err = STRBUF_INIT;
    struct embed *e = NULL;

    char *file = xasprintf("%s/a-file", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    struct embed_options o = EMBED_OPTIONS_INIT;
    o.data_dir = file;
    ck_assert_int_eq(embed_start(&e, &o, &err), SL_EIO);
    ck_assert_msg(strstr(err.buf, "not a directory") || strstr(err.buf, "Not a directory"), "%s",
                  err.buf);

    strbuf_reset(&err);
    o.data_dir = dir;
    o.pg_port = 70000;
    ck_assert_int_eq(embed_start(&e, &o, &err), SL_EINVAL);
    o.pg_port = 0;

    strbuf_reset(&err);
    o.run_as_user = "no-such-user-for-sluice";
    ck_assert_int_eq(embed_start(&e, &o, &err), SL_EINVAL);
    ck_assert_msg(strstr(err.buf, "no-such-user-for-sluice"), "%s", err.buf);
    if (geteuid() == 0) {
        strbuf_reset(&err);
        o.run_as_user = "root";
        ck_assert_int_eq(embed_start(&e, &o, &err), SL_EINVAL);
        ck_assert_msg(strstr(err.buf, "refuses to run as root"), "%s", err.buf);

        /* A directory "nobody" cannot reach. */
        char *closed = xasprintf("%s/closed", dir);
        ck_assert_int_eq(mkdir(closed, 0700), 0);
        char *inner = xasprintf("%s/closed/.sluice", dir);
        strbuf_reset(&err);
        o.run_as_user = NULL;
        o.data_dir = inner;
        ck_assert_int_eq(embed_start(&e, &o, &err), SL_EINVAL);
        ck_assert_msg(strstr(err.buf, "cannot reach data directory"), "%s", err.buf);
        free(inner);
        free(closed);
    }
    ck_assert_ptr_null(e);

    /* pg/ that is not a cluster. */
    char *bogus = xasprintf("%s/bogus", dir);
    char *bogus_pg = xasprintf("%s/bogus/pg", dir);
    ck_assert_int_eq(mkdir(bogus, 0755), 0);
    ck_assert_int_eq(mkdir(bogus_pg, 0700), 0);
    strbuf_reset(&err);
    o.run_as_user = NULL;
    o.data_dir = bogus;
    ck_assert_int_eq(embed_start(&e, &o, &err), SL_EINVAL);
    ck_assert_msg(strstr(err.buf, "not a PostgreSQL data directory"), "%s", err.buf);
    /* ... and the refusal released the directory. */
    char *lock = xasprintf("%s/standalone.lock", bogus);
    int fd = open(lock, O_RDWR);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
    close(fd);

    free(lock);
    free(bogus);
    free(bogus_pg);
    free(file);
    strbuf_release(&err);
    free(dir);
}
END_TEST

/* Run by an unprivileged user, everything runs as that user (no switching). Needs root
 * to become someone else, so the test runs only as root. */
START_TEST(test_unprivileged_caller)
{
    if (geteuid() != 0)
        return;
    char *dir = test_dir("unprivileged");
    long uid = nobody_uid();
    struct passwd *pw = getpwnam("nobody");
    gid_t gid = pw ? pw->pw_gid : 65534;
    ck_assert_int_eq(chown(dir, (uid_t)uid, gid), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        /* No ck_assert here: report through the exit status; _exit skips LeakSanitizer,
         * which cannot trace a process that changed its uid. */
        if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid((uid_t)uid) < 0)
            _exit(10);
        struct embed_options o = EMBED_OPTIONS_INIT;
        o.data_dir = dir;
        struct strbuf err = STRBUF_INIT;
        struct embed *e = NULL;
        if (embed_start(&e, &o, &err) != 0) {
            fprintf(stderr, "embed_start as nobody: %s\n", err.buf);
            _exit(11);
        }
        if (proc_uid(embed_pg_pid(e)) != uid || proc_uid(embed_redis_pid(e)) != uid)
            _exit(12);
        struct store *st = NULL;
        struct store_options so = STORE_OPTIONS_INIT;
        if (store_open(&st, embed_database_url(e), &so, NULL) != 0)
            _exit(13);
        store_close(st);
        struct queue *q = NULL;
        if (queue_open(&q, embed_redis_url(e), NULL) != 0 || queue_ping(q) != 0)
            _exit(14);
        queue_close(q);
        o.run_as_user = "root";
        struct embed *other = NULL;
        if (embed_stop(e) != 0 || embed_start(&other, &o, NULL) != SL_EINVAL)
            _exit(15);
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    free(dir);
}
END_TEST

Suite *suite_integration_embed(void)
{
    Suite *s = suite_create("integration_embed");
    TCase *tc = tcase_create("embed");
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_checked_fixture(tc, NULL, test_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_start_stop_reuse);
    tcase_add_test(tc, test_in_use);
    tcase_add_test(tc, test_crash_restart);
    tcase_add_test(tc, test_sluice_killed);
    tcase_add_test(tc, test_long_path);
    tcase_add_test(tc, test_check_notices_death);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_unprivileged_caller);
    suite_add_tcase(s, tc);
    return s;
}
