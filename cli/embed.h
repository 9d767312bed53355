/*
 * cli/embed.h - the private PostgreSQL and Redis of `sluice standalone`.
 *
 * With no database or Redis configured, `sluice standalone` runs both servers itself, from
 * the machine's own binaries, under one data directory (default ".sluice/"):
 *
 *     <data_dir>/standalone.lock   held (flock) by the sluice process using the directory;
 *                                  holds its pid, for the "in use by pid N" message
 *     <data_dir>/pg/               PGDATA: initdb'd on the first start, reused afterwards
 *     <data_dir>/run/              the unix sockets: .s.PGSQL.<port> and redis.sock
 *     <data_dir>/redis/            Redis's working directory: redis.conf (rewritten at
 *                                  every start), appendonlydir/ (the data), redis.pid
 *     <data_dir>/logs/             postgresql.log, redis.log, initdb.log (appended to)
 *     <data_dir>/socket-dir        only while the sockets live in a /tmp fallback (below)
 *
 * The first start runs initdb (superuser role "sluice", trust authentication on the unix
 * socket only, scram-sha-256 on TCP, UTF8, locale C) into pg.init/, creates the database
 * "sluice" in single-user mode, and only then renames pg.init/ to pg/: an interrupted
 * first start is simply redone. PostgreSQL keeps its durable defaults (fsync,
 * synchronous_commit); Redis runs with appendonly yes, appendfsync everysec, so queued
 * messages survive a restart (and a crash of Redis itself; a power loss may lose the last
 * second, which the scheduler's reconciler re-sends: PostgreSQL is the truth).
 *
 * Sockets. A unix socket path is limited to 107 bytes (sun_path). When "<data_dir>/run/"
 * is too long for that, or holds characters that would need quoting in a URL (anything
 * but [A-Za-z0-9/._+~-]), the sockets go to a fresh directory /tmp/sluice-XXXXXX instead.
 * Its name is recorded in <data_dir>/socket-dir; it is removed by embed_stop(), and a
 * leftover from a crash is removed by the next start. The URLs below always say where
 * the sockets are.
 *
 * TCP. pg_port and redis_port 0 (the default) mean no TCP at all. A port makes the server
 * listen on 127.0.0.1 too: Redis without a password (anyone on the machine may use it),
 * PostgreSQL with scram-sha-256, so TCP logins work only after a password was set over
 * the socket (ALTER ROLE sluice PASSWORD '...').
 *
 * Users. Run as an ordinary user, both servers run as that user. Run as root, both run as
 * an unprivileged user (run_as_user, default "nobody"): PostgreSQL refuses to run as
 * root, and Redis is kept off root for the same reason (a Redis client can make the
 * server write files). pg/, redis/ and the socket directory belong to that user (0700);
 * the data directory itself stays the caller's (0755, so that user can reach pg/). The
 * user must be able to reach the data directory: under /root (0700) it cannot, and
 * embed_start() says so. Note that any process running as that user can reach the
 * servers; pick a dedicated user with run_as_user where that matters. The logs are
 * written through descriptors opened by the caller, so they stay the caller's (0600).
 *
 * Crashes. Each server leads its own session (setsid: the terminal's Ctrl-C never
 * reaches it, so the caller can stop its own loops first and then call embed_stop()) and
 * gets a parent-death signal (PostgreSQL SIGINT, a fast shutdown; Redis SIGTERM), so it
 * shuts down by itself if the process that started it dies, however it dies. The next
 * start copes with what a crash leaves behind: a stale postmaster.pid or redis.pid (PG
 * refuses a pid file whose pid is alive, even as a zombie, so embed_start() removes one
 * whose pid is not a running postgres), stale sockets, leftover PostgreSQL processes
 * still attached to the old shared memory (waited for). A server of an earlier run that
 * is really still running on this directory is waited for (bounded), then reported.
 *
 * Threads and signals. embed_start() and embed_stop() block (up to start_timeout_ms and
 * about a minute). Call embed_start() from the thread that lives as long as the servers
 * should, normally the main thread: Linux delivers the parent-death signal when the
 * *thread* that forked a server ends. Both fork and exec safely from a multi-threaded
 * process. They reap only their own children (waitpid on each pid), so the caller must not
 * reap with waitpid(-1) or set SIGCHLD to SIG_IGN. The caller's signal handlers and
 * ignored signals are not passed on to the servers.
 *
 * Errors: functions returning int return 0 or a negative code from common/error.h, and
 * append a one-line reason (plus the tail of a server's log when a server failed) to err
 * when err is not NULL. Messages name the data directory as the caller gave it.
 *
 * Binaries: PostgreSQL's come from $SLUICE_PG_BINDIR, else /usr/lib/postgresql/<N>/bin
 * (N the version pg/ was made with, or the newest installed for a new cluster), else
 * $PATH; redis-server from $PATH.
 */
#ifndef SLUICE_CLI_EMBED_H
#define SLUICE_CLI_EMBED_H

#include <sys/types.h>

struct strbuf;
struct embed;

#define EMBED_DEFAULT_DATA_DIR ".sluice"
#define EMBED_DEFAULT_USER     "nobody" /* the servers' user when run as root */
#define EMBED_PG_USER          "sluice" /* the PostgreSQL superuser role */
#define EMBED_PG_DBNAME        "sluice" /* the database sluice uses */
#define EMBED_PG_SOCKET_PORT   5432     /* names PostgreSQL's socket when pg_port is 0 */
#define EMBED_STOP_TIMEOUT_MS  60000    /* embed_stop()'s patience before it kills */

struct embed_options {
    const char *data_dir;    /* NULL: EMBED_DEFAULT_DATA_DIR, relative to the cwd */
    const char *run_as_user; /* when euid == 0: the servers' user; NULL: "nobody". Must be
                              * NULL or the caller's own user name otherwise */
    int pg_port;             /* 0: unix socket only; else also 127.0.0.1:pg_port */
    int redis_port;          /* 0: unix socket only; else also 127.0.0.1:redis_port */
    int start_timeout_ms;    /* bound on embed_start() once the servers are spawned
                              * (crash recovery included); 0: 60000 */
};

#define EMBED_OPTIONS_INIT                                                                         \
    {                                                                                              \
        NULL, NULL, 0, 0, 0                                                                        \
    }

/*
 * Takes the data directory (creating it and its parents if needed), initializes what is
 * missing, starts PostgreSQL and Redis and waits until both accept connections. o may be
 * NULL (the defaults); it is not retained.
 *
 * On success sets *out (stop it with embed_stop()) and returns 0. Otherwise nothing is
 * left running, the directory is released, and it returns
 *   SL_ECONFLICT  another process holds the data directory ("data directory .sluice is in
 *                 use by pid N"), or a server of an earlier run still runs on it
 *   SL_ENOENT     a binary is missing (initdb, postgres, redis-server, or the PostgreSQL
 *                 version pg/ was made with)
 *   SL_EINVAL     a bad option: unknown run_as_user, root as run_as_user, another user
 *                 without root, a port out of range, a data directory the servers' user
 *                 cannot reach, pg/ that is not a PostgreSQL cluster or belongs to
 *                 another user
 *   SL_EIO        a file system operation, initdb or a server failed (with its log's tail)
 *   SL_ETIMEDOUT  a server was not ready within start_timeout_ms (with its log's tail)
 */
int embed_start(struct embed **out, const struct embed_options *o, struct strbuf *err);

/*
 * Stops both servers cleanly and at once: PostgreSQL with a fast shutdown (SIGINT: active
 * sessions are disconnected, a checkpoint is written), Redis with SIGTERM (it flushes and
 * fsyncs its append-only file). Either one still running after EMBED_STOP_TIMEOUT_MS is
 * killed (PostgreSQL first with an immediate shutdown, then the whole process group with
 * SIGKILL). Reaps both, removes the /tmp socket directory if one was used, releases the
 * data directory and frees e. Returns 0, or SL_ETIMEDOUT if a server had to be killed
 * (logged). e may be NULL.
 *
 * Only the process that started the servers stops them: in a forked child embed_stop()
 * just frees e (the parent keeps its lock and servers).
 */
int embed_stop(struct embed *e);

/*
 * Whether both servers still run (waitpid without blocking). Returns 0, or SL_EIO after
 * appending to err which one ended, how, and the tail of its log; e is then only good for
 * embed_stop(). For the standalone's main loop, which should stop when a server died.
 */
int embed_check(struct embed *e, struct strbuf *err);

/* "postgresql:///sluice?host=<socket dir>&port=<port>&user=sluice", owned by e. */
const char *embed_database_url(const struct embed *e);
/* "unix://<socket dir>/redis.sock", owned by e. */
const char *embed_redis_url(const struct embed *e);
/* The postmaster's and redis-server's pids (each leads its own process group); 0 once
 * stopped or found dead. */
pid_t embed_pg_pid(const struct embed *e);
pid_t embed_redis_pid(const struct embed *e);
/* The data directory as an absolute path, owned by e. */
const char *embed_data_dir(const struct embed *e);

#endif
