/*
 * tests/integration/check_harness.c - the test harness starts real servers, and cleans up.
 *
 * The "servers" case starts PostgreSQL, Redis and git daemon once, in an unchecked fixture
 * (so in the runner, before Check forks each test), and talks to them with their real
 * clients: psql, raw RESP and redis-cli, git push and git ls-remote. The "lifecycle" case
 * starts servers inside tests and checks that nothing survives a stop, or an owner that
 * exits without stopping them, fails like a ck_assert in a forked test, or is killed.
 * The "restart" case starts servers inside each test (only the owner may restart one) and
 * takes them down and back up on the same addresses: data kept or not, clients that
 * reconnect, and a port taken by someone else while the server was away.
 */
#include "tests/harness/harness.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "store/store.h"
#include "tests/testutil.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct harness_pg pg;
static struct harness_redis redis;
static struct harness_git git;

static void servers_setup(void)
{
    ck_assert_int_eq(harness_pg_start(&pg), 0);
    ck_assert_int_eq(harness_redis_start(&redis), 0);
    ck_assert_int_eq(harness_git_start(&git), 0);
}

static void servers_teardown(void)
{
    ck_assert_int_eq(harness_git_stop(&git), 0);
    ck_assert_int_eq(harness_redis_stop(&redis), 0);
    ck_assert_int_eq(harness_pg_stop(&pg), 0);
}

static char *psql_path(void)
{
    return xasprintf("%s/psql", harness_pg_bindir());
}

static int dir_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int process_gone(pid_t pid)
{
    return kill(pid, 0) < 0 && errno == ESRCH;
}

START_TEST(test_pg_psql_roundtrip)
{
    char *psql = psql_path(), *out = NULL, *err = NULL;
    char *argv[] = {psql,
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    pg.url,
                    "-c",
                    "CREATE TABLE harness_kv (k text PRIMARY KEY, v integer NOT NULL)",
                    "-c",
                    "INSERT INTO harness_kv VALUES ('answer', 42)",
                    "-c",
                    "SELECT v FROM harness_kv WHERE k = 'answer'",
                    NULL};
    int rc = test_run(argv, &out, &err);
    ck_assert_msg(rc == 0, "psql failed (%d): %s", rc, err);
    ck_assert_str_eq(out, "42\n");
    free(out);
    free(err);

    /* Over TCP too, as the predictable superuser, with the fast settings in effect. */
    char *settings = "SELECT current_user || ' ' || current_database() || ' ' || "
                     "current_setting('fsync') || ' ' || current_setting('TimeZone')";
    char *tcp_argv[] = {psql, "-X", "-A", "-t", "-d", pg.tcp_url, "-c", settings, NULL};
    rc = test_run(tcp_argv, &out, &err);
    ck_assert_msg(rc == 0, "psql over tcp failed (%d): %s", rc, err);
    ck_assert_str_eq(out, HARNESS_PG_USER " " HARNESS_PG_DBNAME " off UTC\n");
    free(out);
    free(err);
    free(psql);
}
END_TEST

START_TEST(test_pg_runs_unprivileged)
{
    /* /proc/<pid> belongs to the process's effective user. */
    char *proc = xasprintf("/proc/%ld", (long)pg.pid);
    struct stat st_proc, st_data;
    ck_assert_int_eq(stat(proc, &st_proc), 0);
    ck_assert_int_eq(stat(pg.data_dir, &st_data), 0);
    ck_assert_uint_eq(st_proc.st_uid, st_data.st_uid);
    ck_assert_uint_eq(st_data.st_mode & 0777, 0700);
    if (geteuid() == 0)
        ck_assert_uint_ne(st_proc.st_uid, 0);
    else
        ck_assert_uint_eq(st_proc.st_uid, geteuid());
    free(proc);

    char *pg_isready = xasprintf("%s/pg_isready", harness_pg_bindir());
    char *argv[] = {pg_isready, "-q", "-d", pg.url, NULL};
    ck_assert_int_eq(test_run(argv, NULL, NULL), 0);
    free(pg_isready);
}
END_TEST

START_TEST(test_redis_set_get)
{
    char *reply = NULL;
    ck_assert_int_eq(harness_redis_command(&reply, &redis, "SET", "harness:k", "a b\r\nc", NULL),
                     0);
    ck_assert_str_eq(reply, "+OK\r\n");
    free(reply);
    ck_assert_int_eq(harness_redis_command(&reply, &redis, "GET", "harness:k", NULL), 0);
    ck_assert_str_eq(reply, "$6\r\na b\r\nc\r\n");
    free(reply);
    ck_assert_int_eq(harness_redis_command(&reply, &redis, "GET", "harness:none", NULL), 0);
    ck_assert_str_eq(reply, "$-1\r\n");
    free(reply);
    ck_assert_int_eq(harness_redis_command(&reply, &redis, "RPUSH", "harness:l", "x", "y", NULL),
                     0);
    ck_assert_str_eq(reply, ":2\r\n");
    free(reply);
    ck_assert_int_eq(harness_redis_command(&reply, &redis, "LRANGE", "harness:l", "0", "-1", NULL),
                     0);
    ck_assert_str_eq(reply, "*2\r\n$1\r\nx\r\n$1\r\ny\r\n");
    free(reply);
    ck_assert_int_eq(harness_redis_command(&reply, &redis, "NOSUCHCOMMAND", NULL), 0);
    ck_assert(!strncmp(reply, "-ERR", 4));
    free(reply);
    /* No persistence. */
    ck_assert_int_eq(harness_redis_command(&reply, &redis, "CONFIG", "GET", "save", NULL), 0);
    ck_assert_str_eq(reply, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    free(reply);

    /* The real client, over TCP, sees the same data. */
    char *cli = harness_which("redis-cli"), *port = xasprintf("%d", redis.port), *out = NULL;
    ck_assert_msg(cli != NULL, "redis-cli not found (Debian package redis-tools)");
    char *argv[] = {cli, "-h", HARNESS_LOOPBACK, "-p", port, "LLEN", "harness:l", NULL};
    ck_assert_int_eq(test_run(argv, &out, NULL), 0);
    ck_assert_str_eq(out, "2\n");
    free(out);
    free(port);
    free(cli);
}
END_TEST

/* `git ls-remote <url>`'s line for ref, as "<sha>\t<ref>", or NULL; caller frees. */
static char *ls_remote_line(const char *url, const char *ref)
{
    char *gitbin = harness_which("git"), *out = NULL, *err = NULL;
    char *argv[] = {gitbin, "ls-remote", (char *)url, NULL};
    int rc = test_run(argv, &out, &err);
    ck_assert_msg(rc == 0, "git ls-remote failed (%d): %s", rc, err);
    char *line = NULL;
    for (char *s = strtok(out, "\n"); s; s = strtok(NULL, "\n")) {
        char *tab = strchr(s, '\t');
        if (tab && !strcmp(tab + 1, ref))
            line = xstrdup(s);
    }
    free(out);
    free(err);
    free(gitbin);
    return line;
}

static void assert_remote_main(const char *url, const char *sha)
{
    char *want = xasprintf("%s\trefs/heads/main", sha);
    char *got = ls_remote_line(url, "refs/heads/main");
    ck_assert_msg(got != NULL, "no refs/heads/main at %s", url);
    ck_assert_str_eq(got, want);
    free(got);
    free(want);
}

START_TEST(test_git_push_and_ls_remote)
{
    ck_assert_int_eq(harness_git_init_bare(&git, "dags.git"), 0);
    char *repo = harness_git_repo_path(&git, "dags.git");
    char *head = xasprintf("%s/HEAD", repo);
    ck_assert(dir_exists(head));
    char *url = harness_git_url(&git, "dags.git");
    ck_assert(ls_remote_line(url, "refs/heads/main") == NULL); /* empty */

    char *wt = NULL, *sha1 = NULL, *sha2 = NULL, *sha3 = NULL;
    ck_assert_int_eq(harness_git_clone(&wt, &git, "dags.git"), 0);
    ck_assert_int_eq(harness_git_write_file(wt, "dags/a.yaml", "name: a\n"), 0);
    ck_assert_int_eq(harness_git_commit(&sha1, wt, "add a"), 0);
    ck_assert_uint_eq(strlen(sha1), 40);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    assert_remote_main(url, sha1);

    /* Change, add and delete in one commit. */
    ck_assert_int_eq(harness_git_write_file(wt, "dags/b.yaml", "name: b\n"), 0);
    ck_assert_int_eq(harness_git_remove_file(wt, "dags/a.yaml"), 0);
    ck_assert_int_eq(harness_git_commit(&sha2, wt, "replace a with b"), 0);
    ck_assert_int_eq(harness_git_push(wt, 0), 0);
    assert_remote_main(url, sha2);

    /* Rewrite history: a plain push is refused, a forced one replaces main. */
    ck_assert_int_eq(harness_git_run(NULL, wt, "reset", "-q", "--hard", sha1, NULL), 0);
    ck_assert_int_eq(harness_git_write_file(wt, "dags/c.yaml", "name: c\n"), 0);
    ck_assert_int_eq(harness_git_commit(&sha3, wt, "add c instead"), 0);
    fprintf(stderr, "(the next git push is expected to fail)\n");
    ck_assert_int_eq(harness_git_push(wt, 0), SL_EIO);
    ck_assert_int_eq(harness_git_push(wt, 1), 0);
    assert_remote_main(url, sha3);

    /* A fresh clone sees exactly the forced history. */
    char *wt2 = NULL, *log = NULL;
    ck_assert_int_eq(harness_git_clone(&wt2, &git, "dags.git"), 0);
    ck_assert_int_eq(harness_git_run(&log, wt2, "log", "--format=%s", NULL), 0);
    ck_assert_str_eq(log, "add c instead\nadd a\n");
    char *a = xasprintf("%s/dags/a.yaml", wt2), *b = xasprintf("%s/dags/b.yaml", wt2);
    ck_assert(dir_exists(a) && !dir_exists(b));

    free(a);
    free(b);
    free(log);
    free(wt2);
    free(wt);
    free(sha1);
    free(sha2);
    free(sha3);
    free(url);
    free(head);
    free(repo);
}
END_TEST

START_TEST(test_stop_removes_dirs_and_processes)
{
    struct harness_pg p;
    struct harness_redis r;
    struct harness_git g;
    ck_assert_int_eq(harness_pg_start(&p), 0);
    ck_assert_int_eq(harness_redis_start(&r), 0);
    ck_assert_int_eq(harness_git_start(&g), 0);
    pid_t pids[3] = {p.pid, r.pid, g.pid};
    char *dirs[3] = {xstrdup(p.dir), xstrdup(r.dir), xstrdup(g.dir)};
    for (int i = 0; i < 3; i++) {
        ck_assert(kill(pids[i], 0) == 0);
        ck_assert(dir_exists(dirs[i]));
    }

    ck_assert_int_eq(harness_pg_stop(&p), 0);
    ck_assert_int_eq(harness_redis_stop(&r), 0);
    ck_assert_int_eq(harness_git_stop(&g), 0);
    ck_assert(p.pid == 0 && p.dir == NULL && r.pid == 0 && g.pid == 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(process_gone(pids[i]), "pid %ld survived its stop", (long)pids[i]);
        ck_assert_msg(kill(-pids[i], 0) < 0 && errno == ESRCH, "group %ld survived", (long)pids[i]);
        ck_assert_msg(!dir_exists(dirs[i]), "\"%s\" survived its stop", dirs[i]);
        free(dirs[i]);
    }
    /* Stopping twice, or a server never started, is a no-op. */
    ck_assert_int_eq(harness_pg_stop(&p), 0);
    struct harness_redis never = {0};
    ck_assert_int_eq(harness_redis_stop(&never), 0);
}
END_TEST

START_TEST(test_non_owner_cannot_stop)
{
    /* pg belongs to the runner; a process forked from it may use pg but not stop it. The
     * explicit fork keeps this true when Check itself does not fork (CK_FORK=no). */
    fprintf(stderr, "(the next \"belongs to process\" messages are expected)\n");
    fflush(NULL);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        struct harness_pg copy = pg;
        struct harness_redis rcopy = redis;
        int ok = harness_pg_stop(&copy) == SL_EINVAL &&
                 harness_pg_kill(&copy, HARNESS_PG_RESTART_CRASH) == SL_EINVAL &&
                 harness_pg_restart(&copy, HARNESS_PG_RESTART_FAST) == SL_EINVAL &&
                 harness_redis_kill(&rcopy, 0) == SL_EINVAL &&
                 harness_redis_restart(&rcopy, 1) == SL_EINVAL;
        _exit(ok ? 0 : 1);
    }
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert(kill(pg.pid, 0) == 0);
    ck_assert(kill(redis.pid, 0) == 0);
}
END_TEST

/* How the owner forked by fork_owner() ends once its servers run. */
enum owner_end {
    OWNER_EXIT,    /* exit(1): a test that returns, or a runner that finishes */
    OWNER_FAIL,    /* _exit(1): how Check ends a forked test whose ck_assert failed */
    OWNER_SIGKILL, /* killed outright */
};

struct owner_report {
    pid_t pids[2];
    char dirs[2][512];
};

/* Forks an owner that starts PostgreSQL and Redis, reports their pids and directories on
 * a pipe, then ends as told without stopping them. Returns its wait status. */
static int fork_owner(struct owner_report *rep, enum owner_end end)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        close(fds[0]);
        struct harness_pg p;
        struct harness_redis r;
        if (harness_pg_start(&p) < 0 || harness_redis_start(&r) < 0)
            _exit(99);
        struct owner_report mine = {{p.pid, r.pid}, {{0}}};
        snprintf(mine.dirs[0], sizeof(mine.dirs[0]), "%s", p.dir);
        snprintf(mine.dirs[1], sizeof(mine.dirs[1]), "%s", r.dir);
        if (write(fds[1], &mine, sizeof(mine)) != (ssize_t)sizeof(mine))
            _exit(98);
        close(fds[1]);
        if (end == OWNER_SIGKILL)
            raise(SIGKILL);
        if (end == OWNER_FAIL)
            _exit(1);
        exit(1);
    }
    close(fds[1]);
    ssize_t n = read(fds[0], rep, sizeof(*rep));
    close(fds[0]);
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert_msg(n == (ssize_t)sizeof(*rep), "owner failed to start servers (status %d)", status);
    return status;
}

START_TEST(test_owner_exit_stops_servers)
{
    struct owner_report rep;
    int status = fork_owner(&rep, OWNER_EXIT);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    /* The owner's atexit handler stopped and reaped them before it exited. */
    for (int i = 0; i < 2; i++) {
        ck_assert_msg(process_gone(rep.pids[i]), "pid %ld outlived its owner", (long)rep.pids[i]);
        ck_assert_msg(!dir_exists(rep.dirs[i]), "\"%s\" outlived its owner", rep.dirs[i]);
    }
}
END_TEST

/* _i: 0 the owner fails like a ck_assert in a forked test, 1 it is killed. */
START_TEST(test_owner_gone_servers_die)
{
    /* Orphans are re-parented to this process, which can then reap them. */
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    struct owner_report rep;
    int status = fork_owner(&rep, _i == 0 ? OWNER_FAIL : OWNER_SIGKILL);
    if (_i == 0)
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    else
        ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* No exit handler ran: the parent-death signal shuts each server down. */
    for (int i = 0; i < 2; i++) {
        int reaped = 0;
        for (int tries = 0; tries < 3000 && !reaped; tries++) {
            pid_t w = waitpid(rep.pids[i], NULL, WNOHANG);
            reaped = w == rep.pids[i] || (w < 0 && process_gone(rep.pids[i]));
            if (!reaped)
                nanosleep(&(struct timespec){0, 5000000}, NULL);
        }
        ck_assert_msg(reaped, "pid %ld outlived its owner", (long)rep.pids[i]);
        ck_assert(dir_exists(rep.dirs[i])); /* nobody was left to remove it */
    }
    /* The sweep (at the next start, or when the runner exits) removes the leftovers. */
    ck_assert_int_ge(harness_sweep_stale(), 2);
    for (int i = 0; i < 2; i++)
        ck_assert_msg(!dir_exists(rep.dirs[i]), "\"%s\" survived the sweep", rep.dirs[i]);
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 0), 0); /* matters with CK_FORK=no */
}
END_TEST

/* --- restarts -------------------------------------------------------------------------- */

/* Runs sql through psql on p's unix socket; returns psql's exit status, *out its output. */
static int psql_run(const struct harness_pg *p, const char *sql, char **out)
{
    char *psql = psql_path(), *err = NULL;
    char *argv[] = {psql, "-X",   "-q", "-A",        "-t", "-v", "ON_ERROR_STOP=1",
                    "-d", p->url, "-c", (char *)sql, NULL};
    int rc = test_run(argv, out, &err);
    if (rc != 0)
        fprintf(stderr, "(psql: %s)\n", err);
    free(err);
    free(psql);
    return rc;
}

static void psql_ok(const struct harness_pg *p, const char *sql, const char *want)
{
    char *out = NULL;
    ck_assert_int_eq(psql_run(p, sql, &out), 0);
    if (want)
        ck_assert_str_eq(out, want);
    free(out);
}

static struct store *open_store(const struct harness_pg *p)
{
    struct store_options o = STORE_OPTIONS_INIT;
    o.reconnect_wait_ms = 30000;
    o.reconnect_delay_ms = 20;
    o.reconnect_max_delay_ms = 200;
    struct store *st = NULL;
    struct strbuf err = STRBUF_INIT;
    int rc = store_open(&st, p->url, &o, &err);
    ck_assert_msg(rc == 0, "store_open: %s", err.buf);
    strbuf_release(&err);
    return st;
}

/* _i: 0 a fast shutdown, 1 a crash. */
START_TEST(test_pg_restart_keeps_data)
{
    int mode = _i == 0 ? HARNESS_PG_RESTART_FAST : HARNESS_PG_RESTART_CRASH;
    struct harness_pg p;
    ck_assert_int_eq(harness_pg_start(&p), 0);
    struct store *st = open_store(&p);
    int version = -1;
    ck_assert_int_eq(store_migrate(st, &version, NULL), 0);
    uint64_t generation = store_generation(st);
    psql_ok(&p, "CREATE TABLE restart_kv (k text PRIMARY KEY, v integer NOT NULL)", NULL);
    /* The last commit before the server goes down survives it, crash or not. */
    psql_ok(&p, "INSERT INTO restart_kv VALUES ('answer', 42)", NULL);

    pid_t old_pid = p.pid;
    int port = p.port;
    char *url = xstrdup(p.url), *dir = xstrdup(p.dir);
    ck_assert_int_eq(harness_pg_restart(&p, mode), 0);
    ck_assert(p.pid > 0 && p.pid != old_pid);
    ck_assert(process_gone(old_pid) || waitpid(old_pid, NULL, WNOHANG) < 0);
    ck_assert_int_eq(p.port, port);
    ck_assert_str_eq(p.url, url);
    ck_assert_str_eq(p.dir, dir);
    psql_ok(&p, "SELECT v FROM restart_kv WHERE k = 'answer'", "42\n");
    if (mode == HARNESS_PG_RESTART_CRASH) {
        char *log = test_read_file(p.log_path, NULL);
        ck_assert_msg(strstr(log, "was not properly shut down") || strstr(log, "interrupted"),
                      "no crash recovery in the log");
        free(log);
    }

    /* The store's connection died with the server; its next call reconnects. */
    int again = -1;
    ck_assert_int_eq(store_schema_version(st, &again), 0);
    ck_assert_int_eq(again, version);
    ck_assert_uint_gt(store_generation(st), generation);
    store_close(st);

    /* Over TCP too, on the same port. */
    char *psql = psql_path(), *out = NULL;
    char *argv[] = {
        psql, "-X", "-A", "-t", "-d", p.tcp_url, "-c", "SELECT count(*) FROM restart_kv", NULL};
    ck_assert_int_eq(test_run(argv, &out, NULL), 0);
    ck_assert_str_eq(out, "1\n");
    free(out);
    free(psql);
    free(url);
    free(dir);
    ck_assert_int_eq(harness_pg_stop(&p), 0);
}
END_TEST

struct slow_call {
    struct store *st;
    int rc;
    int version;
};

static void *call_while_down(void *arg)
{
    struct slow_call *c = arg;
    c->rc = store_schema_version(c->st, &c->version);
    return NULL;
}

START_TEST(test_pg_away_for_a_while)
{
    struct harness_pg p;
    ck_assert_int_eq(harness_pg_start(&p), 0);
    struct store *st = open_store(&p);
    int version = -1;
    ck_assert_int_eq(store_migrate(st, &version, NULL), 0);
    psql_ok(&p, "CREATE TABLE away (n integer)", NULL);
    psql_ok(&p, "INSERT INTO away VALUES (1)", NULL);

    ck_assert_int_eq(harness_pg_kill(&p, HARNESS_PG_RESTART_CRASH), 0);
    ck_assert_int_eq(p.pid, 0);
    ck_assert(dir_exists(p.data_dir));
    /* Misuse is refused, and changes nothing. */
    ck_assert_int_eq(harness_pg_kill(&p, HARNESS_PG_RESTART_FAST), SL_EINVAL);
    fprintf(stderr, "(the next psql failure is expected)\n");
    ck_assert_int_ne(psql_run(&p, "SELECT 1", NULL), 0);

    /* A client keeps trying while the server is away, and gets through once it is back. */
    struct slow_call call = {st, -1, -1};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, call_while_down, &call), 0);
    nanosleep(&(struct timespec){0, 300 * 1000000L}, NULL);
    ck_assert_int_eq(harness_pg_start_again(&p), 0);
    ck_assert_int_eq(harness_pg_start_again(&p), SL_EINVAL); /* already running */
    pthread_join(t, NULL);
    ck_assert_msg(call.rc == 0, "store_schema_version = %d: %s", call.rc, store_errmsg(st));
    ck_assert_int_eq(call.version, version);
    store_close(st);
    psql_ok(&p, "SELECT n FROM away", "1\n");

    /* A server that is down may be stopped: its directory goes. */
    char *dir = xstrdup(p.dir);
    ck_assert_int_eq(harness_pg_kill(&p, HARNESS_PG_RESTART_FAST), 0);
    ck_assert_int_eq(harness_pg_stop(&p), 0);
    ck_assert(p.dir == NULL && !dir_exists(dir));
    ck_assert_int_eq(harness_pg_kill(&p, HARNESS_PG_RESTART_CRASH), SL_EINVAL); /* zeroed */
    free(dir);
}
END_TEST

/* Listens on 127.0.0.1:port, as some other program that took the port would. */
static int take_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)); /* past TIME_WAIT */
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((unsigned short)port);
    ck_assert_msg(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind port %d: %s", port,
                  strerror(errno));
    ck_assert_int_eq(listen(fd, 4), 0);
    return fd;
}

START_TEST(test_pg_port_taken)
{
    struct harness_pg p;
    ck_assert_int_eq(harness_pg_start(&p), 0);
    psql_ok(&p, "CREATE TABLE taken (n integer)", NULL);
    ck_assert_int_eq(harness_pg_kill(&p, HARNESS_PG_RESTART_FAST), 0);
    int fd = take_port(p.port);
    fprintf(stderr, "(the next \"port ... is taken\" message is expected)\n");
    ck_assert_int_eq(harness_pg_start_again(&p), SL_EEXIST);
    ck_assert_int_eq(p.pid, 0);
    close(fd);
    ck_assert_int_eq(harness_pg_start_again(&p), 0);
    psql_ok(&p, "SELECT count(*) FROM taken", "0\n");
    ck_assert_int_eq(harness_pg_stop(&p), 0);
}
END_TEST

/* A raw RESP command over TCP to 127.0.0.1:port; returns the reply (caller frees). */
static char *redis_tcp(int port, const char *inline_cmd)
{
    char *cli = harness_which("redis-cli"), *port_s = xasprintf("%d", port), *out = NULL;
    ck_assert_msg(cli != NULL, "redis-cli not found (Debian package redis-tools)");
    char *argv[] = {cli, "-h", HARNESS_LOOPBACK, "-p", port_s, (char *)inline_cmd, NULL};
    ck_assert_int_eq(test_run(argv, &out, NULL), 0);
    free(port_s);
    free(cli);
    return out;
}

static void redis_expect(const struct harness_redis *r, const char *want, const char *a,
                         const char *b, const char *c)
{
    char *reply = NULL;
    ck_assert_int_eq(harness_redis_command(&reply, r, a, b, c, NULL), 0);
    ck_assert_str_eq(reply, want);
    free(reply);
}

START_TEST(test_redis_restart)
{
    struct harness_redis r;
    ck_assert_int_eq(harness_redis_start(&r), 0);
    redis_expect(&r, "+OK\r\n", "SET", "restart:k", "v1");
    pid_t old_pid = r.pid;
    int port = r.port;
    char *sock = xstrdup(r.socket_path);

    /* Without persistence a crashed Redis comes back empty, where it was. */
    ck_assert_int_eq(harness_redis_restart(&r, 0), 0);
    ck_assert(r.pid > 0 && r.pid != old_pid);
    ck_assert_int_eq(r.port, port);
    ck_assert_str_eq(r.socket_path, sock);
    redis_expect(&r, "$-1\r\n", "GET", "restart:k", NULL);
    redis_expect(&r, ":0\r\n", "DBSIZE", NULL, NULL);
    char *out = redis_tcp(port, "PING");
    ck_assert_str_eq(out, "PONG\n");
    free(out);

    /* keep_data: what was there before is there after. */
    redis_expect(&r, "+OK\r\n", "SET", "restart:k", "v2");
    ck_assert_int_eq(harness_redis_restart(&r, 1), 0);
    redis_expect(&r, "$2\r\nv2\r\n", "GET", "restart:k", NULL);
    /* ...and the next crash without it empties it again, snapshot or not. */
    ck_assert_int_eq(harness_redis_restart(&r, 0), 0);
    redis_expect(&r, ":0\r\n", "DBSIZE", NULL, NULL);

    free(sock);
    ck_assert_int_eq(harness_redis_stop(&r), 0);
}
END_TEST

START_TEST(test_redis_away_and_port_taken)
{
    struct harness_redis r;
    ck_assert_int_eq(harness_redis_start(&r), 0);
    redis_expect(&r, "+OK\r\n", "SET", "away:k", "v");
    pid_t old_pid = r.pid;
    ck_assert_int_eq(harness_redis_kill(&r, 0), 0);
    ck_assert(r.pid == 0 && process_gone(old_pid));
    ck_assert_int_eq(harness_redis_kill(&r, 0), SL_EINVAL); /* not running */
    char *reply = NULL;
    ck_assert_int_eq(harness_redis_command(&reply, &r, "PING", NULL), SL_ECONN);

    /* Someone took the port meanwhile: a clear error, at once, and the server stays down. */
    int fd = take_port(r.port);
    fprintf(stderr, "(the next \"port ... is taken\" message is expected)\n");
    ck_assert_int_eq(harness_redis_start_again(&r), SL_EEXIST);
    ck_assert_int_eq(r.pid, 0);
    close(fd);
    ck_assert_int_eq(harness_redis_start_again(&r), 0);
    redis_expect(&r, "+PONG\r\n", "PING", NULL, NULL);
    redis_expect(&r, "$-1\r\n", "GET", "away:k", NULL);

    /* Killed and never started again: stop still cleans up. */
    char *dir = xstrdup(r.dir);
    ck_assert_int_eq(harness_redis_kill(&r, 1), 0);
    ck_assert_int_eq(harness_redis_stop(&r), 0);
    ck_assert(!dir_exists(dir));
    free(dir);
}
END_TEST

Suite *suite_integration_harness(void)
{
    Suite *s = suite_create("integration_harness");

    TCase *tc = tcase_create("servers");
    tcase_add_unchecked_fixture(tc, servers_setup, servers_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_pg_psql_roundtrip);
    tcase_add_test(tc, test_pg_runs_unprivileged);
    tcase_add_test(tc, test_redis_set_get);
    tcase_add_test(tc, test_git_push_and_ls_remote);
    tcase_add_test(tc, test_non_owner_cannot_stop);
    suite_add_tcase(s, tc);

    tc = tcase_create("lifecycle");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_stop_removes_dirs_and_processes);
    tcase_add_test(tc, test_owner_exit_stops_servers);
    tcase_add_loop_test(tc, test_owner_gone_servers_die, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("restart");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_pg_restart_keeps_data, 0, 2);
    tcase_add_test(tc, test_pg_away_for_a_while);
    tcase_add_test(tc, test_pg_port_taken);
    tcase_add_test(tc, test_redis_restart);
    tcase_add_test(tc, test_redis_away_and_port_taken);
    suite_add_tcase(s, tc);
    return s;
}
