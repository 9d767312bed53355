/*
 * tests/harness/harness.h - real PostgreSQL, Redis and git servers, started privately for
 * integration tests.
 *
 * Each server runs as a child of the process that called *_start(), in its own session
 * (so its process group can be signalled as one), listening on 127.0.0.1 and, for
 * PostgreSQL and Redis, on a unix socket inside a private temporary directory. Nothing
 * outside that directory is touched, so any number of runs can share a machine.
 *
 * Who may call what: every function here is for test code only and is not thread-safe.
 * A server belongs to the process that started it (its "owner"); only the owner may stop,
 * kill or start it again. Processes forked from the owner (Check's per-test children) may
 * use a server freely - its URL, socket and port are plain data in the struct they
 * inherited. A fault test that restarts a server therefore starts its own, in the test.
 *
 * Restarts: *_kill() takes a server down and keeps its directory, port and socket;
 * *_start_again() brings it back on the same addresses, so clients reconnect to the URL
 * they have. *_restart() does both; the split lets a test keep a server away for a while.
 * A killed server is "registered but not running": pid 0, everything else in place, and
 * *_stop() still removes its directory.
 *
 * Cleanup, in order of preference (tests/harness/README.md has the details):
 *   1. *_stop() in the test or its unchecked teardown;
 *   2. an atexit handler stops whatever its process still owns (a test that returns
 *      without stopping, a runner that finishes);
 *   3. each server gets the parent-death signal, so it shuts down on its own when its
 *      owner ends without exit() handlers: a failed ck_assert in a forked test (Check
 *      ends the child with _exit(1)), SIGKILL, a crash, Check's SIGINT handler;
 *   4. harness_sweep_stale() removes the temporary directories of owners that no longer
 *      exist; every process runs it on its first *_start(), and the test runner (the
 *      process that loaded this file) runs it again when it exits.
 *
 * Errors: functions returning int return 0 or a negative code from common/error.h, and
 * print a one-line reason (plus the server log, if a server failed to start) on stderr.
 * Structs are zero-initialized before use; a zeroed struct is "not running", and *_stop()
 * on it is a no-op, so unchecked teardowns can call it after a failed setup.
 *
 * Environment: SLUICE_HARNESS_VERBOSE=1 prints where each server runs and how long its
 * start took; SLUICE_HARNESS_KEEP=1 leaves the directories in place after stop for
 * post-mortems; SLUICE_PG_BINDIR overrides the PostgreSQL binaries' directory.
 */
#ifndef SLUICE_TESTS_HARNESS_HARNESS_H
#define SLUICE_TESTS_HARNESS_HARNESS_H

#include <sys/types.h>

#define HARNESS_LOOPBACK  "127.0.0.1"
#define HARNESS_PG_USER   "sluice"      /* the PostgreSQL superuser role */
#define HARNESS_PG_DBNAME "sluice_test" /* created empty in every server */

/* Seconds a server may take to become ready before start gives up with SL_ETIMEDOUT. */
#define HARNESS_START_TIMEOUT_MS 30000

/* --- PostgreSQL ----------------------------------------------------------------------- */

struct harness_pg {
    char *dir;        /* public: private temp dir holding all of the below */
    char *data_dir;   /* public: PGDATA, owned by the server's OS user */
    char *socket_dir; /* public: unix socket directory (libpq's "host") */
    char *log_path;   /* public: the postmaster's stderr */
    char *url;        /* public: "postgresql:///sluice_test?host=<socket_dir>&port=N&user=..." */
    char *tcp_url;    /* public: "postgresql://sluice@127.0.0.1:N/sluice_test" */
    int port;         /* public: TCP port on 127.0.0.1, also the unix socket's number */
    pid_t pid;        /* public: the postmaster, leader of its process group; 0 if stopped */
    int slot;         /* private: index + 1 in the cleanup registry */
};

/*
 * Starts a PostgreSQL server with an empty database HARNESS_PG_DBNAME owned by the
 * superuser HARNESS_PG_USER (trust authentication, settings tuned for speed: fsync off).
 * As root the server runs as the user "nobody" (PostgreSQL refuses root), otherwise as
 * the caller. The first start in a process runs initdb into a template cluster (about a
 * second); later starts copy it. Blocks until the server accepts connections. On success
 * fills *pg (strings owned by it until harness_pg_stop()); on failure leaves it zeroed and
 * returns SL_ENOENT (binaries missing), SL_EIO or SL_ETIMEDOUT.
 */
int harness_pg_start(struct harness_pg *pg);
/*
 * Shuts the server down (immediate shutdown of its process group, SIGKILL after 10 s),
 * reaps it, removes pg->dir and zeroes *pg. A no-op on a zeroed struct. Returns SL_EINVAL
 * if called by a process other than the owner (nothing is done), else 0.
 */
int harness_pg_stop(struct harness_pg *pg);
/* The directory of the PostgreSQL binaries (initdb, postgres, psql, pg_isready), or NULL
 * if none is installed. Static storage. */
const char *harness_pg_bindir(void);

/* How harness_pg_kill() and harness_pg_restart() take the server down. */
#define HARNESS_PG_RESTART_FAST  1 /* pg_ctl stop -m fast: SIGINT, clean shutdown, checkpoint */
#define HARNESS_PG_RESTART_CRASH 2 /* SIGKILL of the whole group: the next start recovers */

/*
 * Takes a running server down, as mode says, and keeps everything else: the data
 * directory, the port, the socket, the URLs and the registration (so *_stop() and the
 * exit handlers still clean up). Blocks until every process of the server is gone.
 * Clients see their connections fail; new connections are refused (TCP) or fail to find
 * the socket's server until harness_pg_start_again(). pg->pid is 0 afterwards.
 * Returns 0; SL_EINVAL if pg is not running, mode is unknown or the caller is not the
 * owner (nothing is done); SL_ETIMEDOUT if a process of the server would not die.
 */
int harness_pg_kill(struct harness_pg *pg, int mode);
/*
 * Starts a server taken down by harness_pg_kill() again on the same data directory, port
 * and socket; after a CRASH it runs crash recovery first. Data committed before the kill
 * is there. Blocks until it accepts connections. Returns 0; SL_EINVAL (not killed, or not
 * the owner); SL_EEXIST if another process took the port meanwhile (the server is still
 * down, and the call may be repeated once the port is free); SL_EIO or SL_ETIMEDOUT as
 * harness_pg_start() (the log is printed).
 */
int harness_pg_start_again(struct harness_pg *pg);
/* harness_pg_kill(pg, mode), then harness_pg_start_again(pg). */
int harness_pg_restart(struct harness_pg *pg, int mode);

/* --- Redis ---------------------------------------------------------------------------- */

struct harness_redis {
    char *dir;         /* public: private temp dir (also Redis's working directory) */
    char *socket_path; /* public: unix socket */
    char *log_path;    /* public: the server's log */
    int port;          /* public: TCP port on 127.0.0.1 */
    pid_t pid;         /* public: redis-server, leader of its process group; 0 if stopped */
    int slot;          /* private: index + 1 in the cleanup registry */
};

/* Starts redis-server without persistence (save "", appendonly no), DEBUG allowed from
 * local clients. Blocks until it answers PING on its socket. Like harness_pg_start(). */
int harness_redis_start(struct harness_redis *r);
/* Stops it (SIGTERM, SIGKILL after 10 s), removes r->dir and zeroes *r. Like
 * harness_pg_stop(). */
int harness_redis_stop(struct harness_redis *r);
/*
 * Sends one command (the NULL-terminated arguments, as a RESP array of bulk strings) over
 * the unix socket on a fresh connection and reads one complete reply. *out_reply gets the
 * reply's raw RESP bytes (e.g. "+OK\r\n", "$3\r\nbar\r\n", "$-1\r\n"), newly allocated,
 * caller frees; an error reply ("-ERR ...") is a reply too, not a failure. Returns 0,
 * SL_ECONN, SL_EIO or SL_ETIMEDOUT (no reply within 10 s). Blocks.
 */
int harness_redis_command(char **out_reply, const struct harness_redis *r, const char *arg, ...)
    __attribute__((sentinel));
/*
 * Kills a running Redis with SIGKILL, a crash, keeping its directory, port, socket path and
 * registration. keep_data == 0: the next start comes back empty, as a Redis without
 * persistence does after a crash. keep_data != 0: a snapshot is written first (SAVE) and
 * the next start loads it. r->pid is 0 afterwards. Returns 0; SL_EINVAL (not running, or
 * not the owner); SL_EIO, SL_ECONN or SL_ETIMEDOUT if the snapshot failed (the server is
 * then still running) or the server would not die.
 */
int harness_redis_kill(struct harness_redis *r, int keep_data);
/* Starts a Redis killed by harness_redis_kill() again on the same unix socket and TCP
 * port. Returns as harness_pg_start_again(): SL_EEXIST if the port was taken meanwhile. */
int harness_redis_start_again(struct harness_redis *r);
/* harness_redis_kill(r, keep_data), then harness_redis_start_again(r). */
int harness_redis_restart(struct harness_redis *r, int keep_data);

/* --- Git ------------------------------------------------------------------------------ */

struct harness_git {
    char *dir;            /* public: private temp dir */
    char *repos_dir;      /* public: git daemon's --base-path; bare repositories live here */
    char *log_path;       /* public: git daemon's log (--verbose) */
    int port;             /* public: git daemon's port on 127.0.0.1 */
    pid_t pid;            /* public: git-daemon, leader of its process group; 0 if stopped */
    int slot;             /* private: index + 1 in the cleanup registry */
    unsigned n_worktrees; /* private: names work trees uniquely */
};

/*
 * Creates a private directory and starts `git daemon --export-all --enable=receive-pack`
 * on it, so anyone may fetch from and push to git://127.0.0.1:<port>/<name>. Blocks until
 * the port accepts connections. Like harness_pg_start().
 */
int harness_git_start(struct harness_git *g);
/* Stops the daemon, removes g->dir (repositories and work trees) and zeroes *g. Like
 * harness_pg_stop(). */
int harness_git_stop(struct harness_git *g);
/* Creates the bare repository <repos_dir>/<name> (e.g. "dags.git") with HEAD on "main".
 * Returns 0, SL_EEXIST or SL_EIO. */
int harness_git_init_bare(const struct harness_git *g, const char *name);
/* Returns "git://127.0.0.1:<port>/<name>", newly allocated, caller frees. */
char *harness_git_url(const struct harness_git *g, const char *name);
/* Returns "<repos_dir>/<name>", newly allocated, caller frees. */
char *harness_git_repo_path(const struct harness_git *g, const char *name);
/*
 * Clones git://.../<name> (empty or not) into a new work tree under g->dir, with the
 * branch "main" checked out or unborn. *out_dir gets its path, newly allocated, caller
 * frees. The work tree is removed with the rest of g->dir by harness_git_stop().
 */
int harness_git_clone(char **out_dir, struct harness_git *g, const char *name);

/*
 * Runs `git -C <worktree> <arg>...` (NULL-terminated) with a configuration independent of
 * the machine: no system or global config, a fixed author and committer, init.defaultBranch
 * main. If out is not NULL, *out gets git's stdout, newly allocated. Returns 0, or SL_EIO
 * (git failed; its stderr is printed). worktree may be NULL (no -C).
 */
int harness_git_run(char **out, const char *worktree, const char *arg, ...)
    __attribute__((sentinel));
/* Writes content to <worktree>/<rel_path>, creating parent directories. Returns 0 or SL_EIO. */
int harness_git_write_file(const char *worktree, const char *rel_path, const char *content);
/* Deletes <worktree>/<rel_path>. Returns 0, SL_ENOENT or SL_EIO. */
int harness_git_remove_file(const char *worktree, const char *rel_path);
/* Stages every change (git add -A) and commits it with message. If out_sha is not NULL,
 * *out_sha gets the new commit's full hex id, newly allocated. Returns 0 or SL_EIO. */
int harness_git_commit(char **out_sha, const char *worktree, const char *message);
/* Pushes HEAD to origin's main; force != 0 rewrites history (git push --force). Returns 0
 * or SL_EIO. */
int harness_git_push(const char *worktree, int force);

/* --- S3 (s3rver) ------------------------------------------------------------------------ */

/* s3rver's fixed credentials: it checks every request's Signature V4 against them. */
#define HARNESS_S3_ACCESS_KEY "S3RVER"
#define HARNESS_S3_SECRET_KEY "S3RVER"
#define HARNESS_S3_REGION     "us-east-1"
#define HARNESS_S3_BUCKET     "sluice-test" /* created at start when no other is named */

struct harness_s3 {
    char *dir;      /* public: private temp dir */
    char *data_dir; /* public: where s3rver keeps buckets and objects */
    char *log_path; /* public: s3rver's output */
    char *endpoint; /* public: "http://127.0.0.1:<port>" (path-style addressing) */
    char *bucket;   /* public: the bucket created at start */
    int port;       /* public: TCP port on 127.0.0.1 */
    pid_t pid;      /* public: s3rver (node), leader of its process group; 0 if stopped */
    int slot;       /* private: index + 1 in the cleanup registry */
};

/* Starts s3rver (the npm package, installed by make deps) on 127.0.0.1 with an empty
 * bucket (bucket, or HARNESS_S3_BUCKET when NULL). Ready when the port accepts
 * connections. Returns 0, SL_ENOENT if s3rver is not on PATH, or another error. */
int harness_s3_start(struct harness_s3 *s, const char *bucket);
/* Stops it (SIGTERM, SIGKILL after 10 s), removes s->dir and zeroes *s. */
int harness_s3_stop(struct harness_s3 *s);

/* --- Whole-process helpers ------------------------------------------------------------ */

/* Stops every server, and removes every directory, that this process owns. Runs at exit
 * in every process; safe to call at any time. */
void harness_stop_all(void);
/* Removes $TMPDIR/sluice-harness.<pid>.* directories whose owning process no longer
 * exists and which belong to the caller's user. Returns how many it removed. */
int harness_sweep_stale(void);
/* Returns the full path of prog found on $PATH, newly allocated, or NULL. */
char *harness_which(const char *prog);

#endif
