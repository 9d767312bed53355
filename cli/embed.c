/*
 * cli/embed.c - starts and stops the private PostgreSQL and Redis of `sluice standalone`.
 *
 * embed.h is the contract (the directory layout, users, sockets, crashes); this file is
 * the mechanics. A start goes through these steps, and every failure undoes the ones
 * before it (embed_release()):
 *
 *     absolute path -> mkdir -p -> lock (flock on standalone.lock)
 *       -> the servers' user (resolve, check it can reach the directory)
 *       -> subdirectories (run/, redis/, logs/, their owners)
 *       -> leftovers of a crash (pid files, shared memory, sockets, a /tmp socket dir)
 *       -> spawn Redis -> initdb if pg/ is missing -> spawn PostgreSQL
 *       -> wait until both answer -> URLs
 *
 * Spawning (spawn()) is a fork whose child does only async-signal-safe work before
 * execve: every string, the environment and the user's ids are prepared by the parent.
 * The child resets the signals the caller handled or ignored, starts a new session (so
 * the terminal's Ctrl-C goes to sluice alone), points stdout and stderr at the server's
 * log, closes every other descriptor (above all the lock's, so that a server outliving
 * sluice cannot keep the directory locked), drops root, takes its parent-death signal
 * and execs.
 *
 * Readiness is what the servers themselves publish: PostgreSQL's postmaster.pid says
 * "ready" on its eighth line once it accepts connections (what pg_ctl -w waits for), and
 * Redis answers PING with +PONG on its socket (-LOADING while it replays its AOF).
 *
 * The lock is flock() rather than fcntl(): fcntl locks belong to a process, so a second
 * embed_start() on the same directory in the same process would not see the first; a
 * flock belongs to the open file, so it conflicts with any other open.
 */
#define _DEFAULT_SOURCE /* setgroups(), flock(), shmctl(), syscall(): Linux and glibc */

#include "cli/embed.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define COMPONENT                "standalone"
#define DEFAULT_START_TIMEOUT_MS 60000
#define ORPHAN_WAIT_MS           15000 /* for a server of an earlier run to go away */
#define PG_IMMEDIATE_WAIT_MS     5000  /* after SIGQUIT, before SIGKILL */
#define POLL_INTERVAL_MS         10
#define PING_TIMEOUT_MS          1000
#define LOG_TAIL_BYTES           4096
#define LOG_TAIL_LINES           20
#define TMP_SOCKET_PREFIX        "/tmp/sluice-"
#define REDIS_SOCKET_NAME        "redis.sock"

/* --- small utilities ------------------------------------------------------------------ */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void errf(struct strbuf *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void errf(struct strbuf *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    strbuf_vaddf(err, fmt, ap);
    va_end(ap);
}

/* A file system failure: "cannot <what> "<path>": <strerror>", SL_EIO. */
static int errno_fail(struct strbuf *err, const char *what, const char *path)
{
    errf(err, "cannot %s \"%s\": %s", what, path, strerror(errno));
    return SL_EIO;
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Writes content to path (created with mode, or truncated). */
static int write_file(const char *path, const char *content, mode_t mode, struct strbuf *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return errno_fail(err, "create", path);
    if (write_all(fd, content, strlen(content)) < 0 || fsync(fd) < 0) {
        int result = errno_fail(err, "write", path);
        close(fd);
        return result;
    }
    if (close(fd) < 0)
        return errno_fail(err, "write", path);
    return 0;
}

static int append_file(const char *path, const char *content, struct strbuf *err)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno_fail(err, "open", path);
    int result = write_all(fd, content, strlen(content)) < 0 ? errno_fail(err, "write", path) : 0;
    close(fd);
    return result;
}

/* fsync of a directory, so that a rename or a new entry in it is durable. Best effort. */
static void sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* rm -rf of at_fd/name, a directory or anything else. Best effort. */
static void remove_at(int at_fd, const char *name)
{
    struct stat st;
    if (fstatat(at_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlinkat(at_fd, name, 0);
        return;
    }
    int fd = openat(at_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                remove_at(dirfd(d), de->d_name);
        }
        closedir(d);
    } else if (fd >= 0) {
        close(fd);
    }
    unlinkat(at_fd, name, AT_REMOVEDIR);
}

/*
 * path made absolute (against the working directory) and tidied lexically: no empty or
 * "." components, no trailing slash. ".." stays as it is (resolving it would need the
 * symlinks resolved too, and the kernel does that anyway). NULL if getcwd() fails.
 */
static char *absolute_path(const char *path)
{
    struct strbuf full = STRBUF_INIT, out = STRBUF_INIT;
    if (path[0] != '/') {
        size_t size = 256;
        for (;;) {
            char *cwd = xmalloc(size);
            if (getcwd(cwd, size)) {
                strbuf_addstr(&full, cwd);
                free(cwd);
                break;
            }
            free(cwd);
            if (errno != ERANGE || size > (1u << 20)) {
                strbuf_release(&full);
                return NULL;
            }
            size *= 2;
        }
        strbuf_addch(&full, '/');
    }
    strbuf_addstr(&full, path);
    for (const char *p = full.buf; *p;) {
        size_t n = strcspn(p, "/");
        if (n > 0 && !(n == 1 && p[0] == '.')) {
            strbuf_addch(&out, '/');
            strbuf_add(&out, p, n);
        }
        p += n;
        if (*p == '/')
            p++;
    }
    if (out.len == 0)
        strbuf_addch(&out, '/');
    strbuf_release(&full);
    return strbuf_detach(&out, NULL);
}

/* mkdir -p of the absolute path; directories it creates get exactly mode (not umask's). */
static int mkdir_p(const char *path, mode_t mode, struct strbuf *err)
{
    char *p = xstrdup(path);
    int result = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, mode) == 0) {
            if (chmod(p, mode) < 0) {
                result = errno_fail(err, "chmod", p);
                break;
            }
        } else if (errno != EEXIST) {
            result = errno_fail(err, "create directory", p);
            break;
        }
        *s = c;
        if (c == '\0')
            break;
    }
    struct stat st;
    if (result == 0 && (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))) {
        errf(err, "\"%s\" is not a directory", path);
        result = SL_EIO;
    }
    free(p);
    return result;
}

/* The pid on the first line of the file at path, or 0. */
static pid_t read_pid_file(const char *path)
{
    struct strbuf sb = STRBUF_INIT;
    long pid = 0;
    if (strbuf_read_file(&sb, path, 1 << 16) == 0) {
        char *end;
        pid = strtol(sb.buf, &end, 10);
        if (end == sb.buf || (*end != '\n' && *end != '\0') || pid <= 0 || pid > INT_MAX)
            pid = 0;
    }
    strbuf_release(&sb);
    return (pid_t)pid;
}

/* Line n (1-based) of the file at path, newly allocated without its newline, or NULL. */
static char *read_line(const char *path, int n)
{
    struct strbuf sb = STRBUF_INIT;
    char *line = NULL;
    if (strbuf_read_file(&sb, path, 1 << 16) == 0) {
        const char *p = sb.buf;
        for (int i = 1; i < n && p; i++) {
            p = strchr(p, '\n');
            p = p ? p + 1 : NULL;
        }
        if (p && *p)
            line = xstrndup(p, strcspn(p, "\n"));
    }
    strbuf_release(&sb);
    return line;
}

/* Appends "; the end of <shown>:\n    <line>..." with the log's last lines after offset. */
static void add_log_tail(struct strbuf *err, const char *path, const char *shown, off_t offset)
{
    if (!err)
        return;
    struct strbuf sb = STRBUF_INIT;
    if (strbuf_read_file(&sb, path, (size_t)256 << 20) != 0) {
        strbuf_release(&sb);
        return;
    }
    size_t start = offset > 0 && (size_t)offset <= sb.len ? (size_t)offset : 0;
    if (sb.len - start > LOG_TAIL_BYTES)
        start = sb.len - LOG_TAIL_BYTES;
    size_t end = sb.len;
    while (end > start && (sb.buf[end - 1] == '\n' || sb.buf[end - 1] == '\r'))
        end--;
    int lines = 0;
    size_t from = end;
    while (from > start && lines < LOG_TAIL_LINES) {
        from--;
        if (sb.buf[from] == '\n' && ++lines == LOG_TAIL_LINES) {
            from++;
            break;
        }
    }
    if (end > from) {
        strbuf_addf(err, "; the end of %s:", shown);
        for (const char *p = sb.buf + from; p < sb.buf + end;) {
            size_t n = strcspn(p, "\n");
            if (p + n > sb.buf + end)
                n = (size_t)(sb.buf + end - p);
            strbuf_addf(err, "\n    %.*s", (int)n, p);
            p += n + 1;
        }
    } else {
        strbuf_addf(err, " (%s is empty)", shown);
    }
    strbuf_release(&sb);
}

static void describe_status(char *buf, size_t len, int status)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, len, "status %d", status);
}

/* --- the servers' user ------------------------------------------------------------------ */

struct run_as {
    int drop;       /* the caller is root: children switch to uid/gid before exec */
    uid_t uid;      /* the servers' user */
    gid_t gid;      /* its primary group */
    char name[256]; /* its name, for messages */
};

static int resolve_user(struct run_as *ru, const char *want, struct strbuf *err)
{
    char buf[16384];
    struct passwd pw, *found = NULL;
    memset(ru, 0, sizeof(*ru));
    if (geteuid() != 0) {
        ru->uid = geteuid();
        ru->gid = getegid();
        if (getpwuid_r(ru->uid, &pw, buf, sizeof(buf), &found) == 0 && found)
            snprintf(ru->name, sizeof(ru->name), "%s", found->pw_name);
        else
            snprintf(ru->name, sizeof(ru->name), "%ld", (long)ru->uid);
        if (want && strcmp(want, ru->name) != 0) {
            errf(err, "cannot run the servers as \"%s\": only root can switch users", want);
            return SL_EINVAL;
        }
        return 0;
    }
    const char *name = want ? want : EMBED_DEFAULT_USER;
    ru->drop = 1;
    snprintf(ru->name, sizeof(ru->name), "%s", name);
    if (getpwnam_r(name, &pw, buf, sizeof(buf), &found) == 0 && found) {
        ru->uid = found->pw_uid;
        ru->gid = found->pw_gid;
    } else if (!want) {
        /* "nobody" is in every Debian base system; its numeric ids are the fallback. */
        ru->uid = 65534;
        ru->gid = 65534;
    } else {
        errf(err, "no user \"%s\" to run the servers as", name);
        return SL_EINVAL;
    }
    if (ru->uid == 0) {
        errf(err, "cannot run the servers as \"%s\": PostgreSQL refuses to run as root", name);
        return SL_EINVAL;
    }
    return 0;
}

/* Switches to ru's user; returns -1 on failure. For forked children: async-signal-safe. */
static int drop_privileges(const struct run_as *ru)
{
    if (!ru->drop)
        return 0;
    if (setgroups(0, NULL) < 0 || setgid(ru->gid) < 0 || setuid(ru->uid) < 0)
        return -1;
    return getuid() == ru->uid && geteuid() == ru->uid ? 0 : -1;
}

/* Gives path to the servers' user (when root) and sets its mode. */
static int own_dir(const char *path, mode_t mode, const struct run_as *ru, struct strbuf *err)
{
    if (ru->drop && chown(path, ru->uid, ru->gid) < 0)
        return errno_fail(err, "chown", path);
    if (chmod(path, mode) < 0)
        return errno_fail(err, "chmod", path);
    return 0;
}

/* Whether ru's user can reach dir (search permission all the way down). Forks to find
 * out, since only the kernel's own path walk as that user gives the true answer. */
static int check_reachable(const struct run_as *ru, const char *dir, const char *shown,
                           struct strbuf *err)
{
    if (!ru->drop)
        return 0;
    pid_t pid = fork();
    if (pid < 0)
        return errno_fail(err, "fork to check", dir);
    if (pid == 0)
        _exit(drop_privileges(ru) == 0 && access(dir, X_OK) == 0 ? 0 : 1);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    errf(err, "the servers run as \"%s\", who cannot reach data directory %s", ru->name, shown);
    if (strcmp(shown, dir) != 0)
        errf(err, " (\"%s\")", dir);
    errf(err, ": choose a directory that user can reach (every directory above it searchable "
              "by others, unlike /root), or run sluice as an unprivileged user");
    return SL_EINVAL;
}

/* --- spawning --------------------------------------------------------------------------- */

struct spawn {
    char *const *argv;       /* argv[0] a full path */
    char *const *envp;       /* the child's whole environment */
    const char *cwd;         /* changed to after the privileges are dropped */
    int stdin_fd;            /* -1: /dev/null */
    int out_fd;              /* the child's stdout and stderr */
    const struct run_as *ru; /* whose the child is */
    int pdeath_signal;       /* sent to the child when the forking thread ends */
};

/* The environment of every child: the caller's, without what would steer PostgreSQL or
 * libpq (PG*), the locale (messages in logs stay English), and systemd's notification and
 * socket-activation variables (meant for sluice, not for its children). Newly allocated
 * array; the strings are environ's. */
static char **child_env(void)
{
    static char lc_all[] = "LC_ALL=C";
    static const char *const drop[] = {
        "PG",          "LC_",         "LANG=",          "LANGUAGE=", "NOTIFY_SOCKET=",
        "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES="};
    size_t n = 0, k = 0;
    while (environ[n])
        n++;
    char **envp = xcalloc(n + 2, sizeof(*envp));
    for (size_t i = 0; i < n; i++) {
        int keep = 1;
        for (size_t j = 0; j < sizeof(drop) / sizeof(drop[0]) && keep; j++)
            keep = strncmp(environ[i], drop[j], strlen(drop[j])) != 0;
        if (keep)
            envp[k++] = environ[i];
    }
    envp[k++] = lc_all;
    envp[k] = NULL;
    return envp;
}

/* Writes "sluice: <what> "<arg>": <reason>" to stderr and exits; async-signal-safe. */
static void child_die(const char *what, const char *arg)
{
    int e = errno;
    const char *reason = e == EACCES    ? "permission denied"
                         : e == ENOENT  ? "no such file or directory"
                         : e == EPERM   ? "operation not permitted"
                         : e == ENOEXEC ? "not an executable"
                                        : "system error";
    char num[24];
    size_t i = sizeof(num);
    num[--i] = '\0';
    do {
        num[--i] = (char)('0' + e % 10);
        e /= 10;
    } while (e > 0 && i > 0);
    const char *parts[] = {
        "sluice: ", what, " \"", arg, "\": ", reason, " (errno ", num + i, ")\n"};
    for (size_t p = 0; p < sizeof(parts) / sizeof(parts[0]); p++) {
        if (write(2, parts[p], strlen(parts[p])) < 0)
            break;
    }
    _exit(127);
}

static void close_from(int first)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)first, ~0u, 0u) == 0)
        return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536)
        max = 65536;
    for (int fd = first; fd < max; fd++)
        close(fd);
}

static int spawn(pid_t *out_pid, const struct spawn *sp, struct strbuf *err)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return errno_fail(err, "fork for", sp->argv[0]);
    if (pid == 0) {
        /* Handlers are reset by exec anyway; ignored signals and the mask are not. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        for (int sig = 1; sig < 65; sig++)
            sigaction(sig, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (setsid() < 0)
            child_die("cannot start a session for", sp->argv[0]);
        int in_fd = sp->stdin_fd >= 0 ? sp->stdin_fd : open("/dev/null", O_RDONLY);
        if (in_fd < 0 || dup2(in_fd, 0) < 0 || dup2(sp->out_fd, 1) < 0 || dup2(sp->out_fd, 2) < 0)
            child_die("cannot redirect the output of", sp->argv[0]);
        close_from(3);
        if (drop_privileges(sp->ru) < 0)
            child_die("cannot drop privileges for", sp->argv[0]);
        /* After the uid change, which clears the parent-death signal. */
        if (sp->pdeath_signal && prctl(PR_SET_PDEATHSIG, sp->pdeath_signal) < 0)
            child_die("cannot set the parent-death signal of", sp->argv[0]);
        if (getppid() != parent)
            _exit(1); /* the parent died before the signal was armed */
        if (sp->cwd && chdir(sp->cwd) < 0)
            child_die("cannot change to directory", sp->cwd);
        execve(sp->argv[0], sp->argv, sp->envp);
        child_die("cannot execute", sp->argv[0]);
    }
    *out_pid = pid;
    return 0;
}

/* Runs sp to completion; returns its wait status, or -1 if it could not be spawned. */
static int spawn_wait(const struct spawn *sp, struct strbuf *err)
{
    pid_t pid;
    if (spawn(&pid, sp, err) < 0)
        return -1;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return status;
}

/* --- the embed -------------------------------------------------------------------------- */

struct server {
    const char *name; /* "postgresql" or "redis", for messages */
    pid_t pid;        /* leader of its own session; 0 when not running */
    int stop_signal;  /* the clean stop request, also its parent-death signal */
    char *log_path;   /* <data_dir>/logs/<name>.log */
    char *log_shown;  /* the same, as the caller would name it */
    off_t log_start;  /* where this start's output begins in the log */
};

struct embed {
    char *shown_dir;  /* the data directory as the caller named it, for messages */
    char *data_dir;   /* absolute */
    char *pg_dir;     /* <data_dir>/pg, PGDATA */
    char *redis_dir;  /* <data_dir>/redis */
    char *log_dir;    /* <data_dir>/logs */
    char *socket_dir; /* <data_dir>/run, or the /tmp fallback */
    int tmp_sockets;  /* socket_dir is the /tmp fallback: removed at stop */
    int pg_port;      /* the number in the socket's name, and the TCP port if pg_port_tcp */
    int pg_port_tcp;  /* PostgreSQL also listens on 127.0.0.1 */
    int redis_port;   /* 0: no TCP */
    char *db_url;
    char *redis_url;
    char **envp;      /* child_env() */
    struct run_as ru; /* the servers' user */
    int lock_fd;      /* holds the flock on standalone.lock; -1 when not held */
    pid_t owner;      /* the process that started the servers */
    struct server pg;
    struct server redis;
};

static char *shown_path(const struct embed *e, const char *rel)
{
    return xasprintf("%s/%s", e->shown_dir, rel);
}

static void server_init(struct embed *e, struct server *s, const char *name, int stop_signal)
{
    s->name = name;
    s->stop_signal = stop_signal;
    s->log_path = xasprintf("%s/%s.log", e->log_dir, name);
    char *rel = xasprintf("logs/%s.log", name);
    s->log_shown = shown_path(e, rel);
    free(rel);
}

/* Opens the server's log for appending, marks where this start begins, and writes a
 * separator line so that the runs in one log can be told apart. Returns the fd or -1. */
static int open_log(struct server *s, struct strbuf *err)
{
    int fd = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        errno_fail(err, "open log", s->log_path);
        return -1;
    }
    struct stat st;
    s->log_start = fstat(fd, &st) == 0 ? st.st_size : 0;
    char stamp[32] = "";
    time_t t = time(NULL);
    struct tm tm;
    if (gmtime_r(&t, &tm))
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
    char line[128];
    snprintf(line, sizeof(line), "--- sluice standalone: starting %s at %s ---\n", s->name, stamp);
    if (write_all(fd, line, strlen(line)) < 0) {
        errno_fail(err, "write log", s->log_path);
        close(fd);
        return -1;
    }
    return fd;
}

/* Whether pid is a live process (not a zombie) whose working directory is dir: a server
 * of an earlier run, which chdir'd there (PostgreSQL to PGDATA, Redis to its dir). */
static int runs_in(pid_t pid, const char *dir)
{
    if (pid <= 0 || pid == getpid())
        return 0;
    struct stat want, have;
    if (stat(dir, &want) < 0)
        return 0;
    if (access("/proc/self/cwd", F_OK) < 0) /* no /proc: all we can tell is "alive" */
        return kill(pid, 0) == 0 || errno == EPERM;
    char link[64];
    snprintf(link, sizeof(link), "/proc/%ld/cwd", (long)pid);
    /* A zombie's cwd is gone (ENOENT); a process we may not inspect is not ours. */
    return stat(link, &have) == 0 && have.st_dev == want.st_dev && have.st_ino == want.st_ino;
}

/*
 * A pid file of an earlier run (pidfile, written by the server in dir): if its server
 * still runs there, waits for it to go away (a crashed sluice's servers shut down on
 * their own, through their parent-death signal), and refuses if it does not. The caller
 * then removes the stale file: PostgreSQL would refuse a postmaster.pid whose pid is
 * alive, even if that pid is now someone else's, or a zombie.
 */
static int wait_pid_file(struct embed *e, const char *pidfile, const char *dir, const char *what,
                         const char *stop_signal_name, struct strbuf *err)
{
    pid_t pid = read_pid_file(pidfile);
    if (pid && runs_in(pid, dir)) {
        sl_warn(COMPONENT,
                "%s pid=%ld of an earlier run still runs in \"%s\", waiting for it to "
                "exit",
                what, (long)pid, dir);
        long long deadline = now_ms() + ORPHAN_WAIT_MS;
        while (runs_in(pid, dir)) {
            if (now_ms() > deadline) {
                errf(err,
                     "%s pid %ld of an earlier run still uses data directory %s; stop it "
                     "(kill -%s %ld) and start again",
                     what, (long)pid, e->shown_dir, stop_signal_name, (long)pid);
                return SL_ECONFLICT;
            }
            sleep_ms(50);
        }
    }
    return 0;
}

static int remove_pid_file(const char *pidfile, struct strbuf *err)
{
    if (unlink(pidfile) < 0 && errno != ENOENT)
        return errno_fail(err, "remove stale pid file", pidfile);
    return 0;
}

/*
 * After a postmaster was killed, its children notice within moments and exit; until they
 * have, they stay attached to its System V shared memory segment and a new postmaster
 * refuses to start ("pre-existing shared memory block is still in use"). Waits for them.
 * The segment's id is on line 7 of the old postmaster.pid ("<key> <id>").
 */
static int pg_wait_old_shm(struct embed *e, const char *pidfile, struct strbuf *err)
{
    char *line = read_line(pidfile, 7);
    if (!line)
        return 0;
    char *after_key = NULL, *after_id = NULL;
    (void)strtol(line, &after_key, 10);
    long id = strtol(after_key, &after_id, 10);
    int valid = after_id != after_key && id >= 0 && id <= INT_MAX;
    free(line);
    if (!valid)
        return 0;
    long long deadline = now_ms() + ORPHAN_WAIT_MS;
    for (;;) {
        struct shmid_ds ds;
        if (shmctl((int)id, IPC_STAT, &ds) < 0 || ds.shm_nattch == 0)
            return 0; /* gone, or unattached: PostgreSQL removes it itself */
        if (now_ms() > deadline) {
            errf(err,
                 "processes of an earlier PostgreSQL are still attached to its shared memory "
                 "(segment %ld) in data directory %s; end them and start again",
                 id, e->shown_dir);
            return SL_ECONFLICT;
        }
        sleep_ms(50);
    }
}

/* Removes the sockets (and PostgreSQL's socket lock files) a crash left in dir. */
static void remove_stale_sockets(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strncmp(de->d_name, ".s.PGSQL.", 9) || !strcmp(de->d_name, REDIS_SOCKET_NAME))
            unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
}

/* --- the socket directory --------------------------------------------------------------- */

/* Whether dir can hold both servers' sockets: short enough for sun_path, and plain enough
 * to appear unquoted in a URL and in unix_socket_directories. */
static int socket_dir_fits(const char *dir, int pg_port)
{
    char pg_name[32];
    snprintf(pg_name, sizeof(pg_name), "/.s.PGSQL.%d", pg_port);
    size_t longest = strlen(pg_name) > strlen("/" REDIS_SOCKET_NAME)
                         ? strlen(pg_name)
                         : strlen("/" REDIS_SOCKET_NAME);
    if (strlen(dir) + longest + 1 > sizeof(((struct sockaddr_un *)0)->sun_path))
        return 0;
    for (const char *p = dir; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("/._+~-", *p)))
            return 0;
    }
    return 1;
}

/* Removes the /tmp socket directory an earlier run recorded in <data_dir>/socket-dir, if
 * it is still there and looks like ours, and the record. */
static void remove_old_tmp_sockets(const struct embed *e)
{
    char *record = xasprintf("%s/socket-dir", e->data_dir);
    char *old = read_line(record, 1);
    struct stat st;
    if (old && strlen(old) == strlen(TMP_SOCKET_PREFIX "XXXXXX") &&
        !strncmp(old, TMP_SOCKET_PREFIX, strlen(TMP_SOCKET_PREFIX)) &&
        !strchr(old + strlen(TMP_SOCKET_PREFIX), '/') && lstat(old, &st) == 0 &&
        S_ISDIR(st.st_mode) && (st.st_uid == e->ru.uid || st.st_uid == geteuid())) {
        remove_stale_sockets(old);
        rmdir(old);
    }
    unlink(record);
    free(old);
    free(record);
}

/* Chooses, creates and cleans the socket directory. */
static int prepare_socket_dir(struct embed *e, struct strbuf *err)
{
    remove_old_tmp_sockets(e);
    char *run = xasprintf("%s/run", e->data_dir);
    if (socket_dir_fits(run, e->pg_port)) {
        e->socket_dir = run;
        if (mkdir(run, 0700) < 0 && errno != EEXIST)
            return errno_fail(err, "create directory", run);
        remove_stale_sockets(run);
        return own_dir(run, 0700, &e->ru, err);
    }
    free(run);
    char tmpl[] = TMP_SOCKET_PREFIX "XXXXXX";
    if (!mkdtemp(tmpl))
        return errno_fail(err, "create directory", tmpl);
    e->socket_dir = xstrdup(tmpl);
    e->tmp_sockets = 1;
    char *record = xasprintf("%s/socket-dir", e->data_dir);
    char *content = xasprintf("%s\n", tmpl);
    int result = write_file(record, content, 0644, err);
    free(record);
    free(content);
    if (result == 0)
        result = own_dir(e->socket_dir, 0700, &e->ru, err);
    if (result == 0)
        sl_info(COMPONENT, "data directory \"%s\" is too long for unix sockets, using \"%s\"",
                e->data_dir, e->socket_dir);
    return result;
}

/* --- PostgreSQL ------------------------------------------------------------------------- */

/* Appended to postgresql.conf by the first start; the user may change them afterwards.
 * listen_addresses, port and unix_socket_directories come from the command line. */
static const char pg_conf[] =
    "\n"
    "# --- sluice standalone ---\n"
    "# Everything above is initdb's default. The command line of every start sets\n"
    "# listen_addresses, port and unix_socket_directories, which override this file.\n"
    "timezone = 'UTC'\n"
    "log_timezone = 'UTC'\n"
    "unix_socket_permissions = 0700\n"
    "# Dynamic shared memory in PGDATA rather than /dev/shm, which containers often\n"
    "# limit to 64 MB.\n"
    "dynamic_shared_memory_type = mmap\n";

/* The directory of postgres and initdb, newly allocated, or NULL with err set. version is
 * the major version the cluster was made with (pg/PG_VERSION), or NULL for a new one. */
static char *pg_bindir(const char *version, const char *shown_pg, struct strbuf *err)
{
    const char *env = getenv("SLUICE_PG_BINDIR");
    if (env && *env)
        return xstrdup(env);
    /* Debian keeps each major version in /usr/lib/postgresql/<N>/bin. */
    long newest = 0;
    DIR *d = opendir("/usr/lib/postgresql");
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        char *end;
        long v = strtol(de->d_name, &end, 10);
        if (v <= newest || *end)
            continue;
        char *postgres = xasprintf("/usr/lib/postgresql/%ld/bin/postgres", v);
        if (access(postgres, X_OK) == 0)
            newest = v;
        free(postgres);
    }
    if (d)
        closedir(d);
    if (version) {
        char *postgres = xasprintf("/usr/lib/postgresql/%s/bin/postgres", version);
        int found = strspn(version, "0123456789") == strlen(version) && access(postgres, X_OK) == 0;
        free(postgres);
        if (found)
            return xasprintf("/usr/lib/postgresql/%s/bin", version);
        if (newest) {
            errf(err,
                 "%s was made by PostgreSQL %s, which is not installed (found %ld): install it, "
                 "or upgrade the cluster with pg_upgrade",
                 shown_pg, version, newest);
            return NULL;
        }
    }
    if (newest)
        return xasprintf("/usr/lib/postgresql/%ld/bin", newest);
    const char *path = getenv("PATH");
    for (const char *p = path && *path ? path : "/usr/local/bin:/usr/bin:/bin"; *p;) {
        size_t n = strcspn(p, ":");
        char *cand = xasprintf("%.*s/postgres", (int)n, p);
        if (n > 0 && p[0] == '/' && access(cand, X_OK) == 0) {
            *strrchr(cand, '/') = '\0';
            return cand;
        }
        free(cand);
        p += n;
        if (*p == ':')
            p++;
    }
    errf(err, "no PostgreSQL server found in /usr/lib/postgresql/*/bin or on PATH: install "
              "PostgreSQL (Debian: apt install postgresql) or set SLUICE_PG_BINDIR");
    return NULL;
}

/*
 * The first start: initdb into pg.init/, the settings, CREATE DATABASE in single-user
 * mode (no server, no socket needed), then the rename to pg/ that makes it count.
 */
static int pg_init(struct embed *e, const char *bindir, struct strbuf *err)
{
    char *init_dir = xasprintf("%s/pg.init", e->data_dir);
    char *log_path = xasprintf("%s/initdb.log", e->log_dir);
    char *log_shown = shown_path(e, "logs/initdb.log");
    char *initdb = xasprintf("%s/initdb", bindir);
    char *postgres = xasprintf("%s/postgres", bindir);
    char *conf = xasprintf("%s/postgresql.conf", init_dir);
    int log_fd = -1, in_pipe[2] = {-1, -1}, result = SL_EIO;
    struct server marker = {.name = "initdb", .log_path = log_path};

    sl_info(COMPONENT, "creating a PostgreSQL cluster in \"%s\" (first start)", e->pg_dir);
    remove_at(AT_FDCWD, init_dir); /* an interrupted first start */
    if (mkdir(init_dir, 0700) < 0) {
        result = errno_fail(err, "create directory", init_dir);
        goto cleanup;
    }
    if ((result = own_dir(init_dir, 0700, &e->ru, err)) < 0)
        goto cleanup;
    if ((log_fd = open_log(&marker, err)) < 0) {
        result = SL_EIO;
        goto cleanup;
    }
    if (access(initdb, X_OK) < 0) {
        errf(err, "\"%s\" not found: install PostgreSQL's server package", initdb);
        result = SL_ENOENT;
        goto cleanup;
    }
    char *initdb_argv[] = {initdb,
                           "-D",
                           init_dir,
                           "-U",
                           EMBED_PG_USER,
                           "--auth-local=trust",
                           "--auth-host=scram-sha-256",
                           "-E",
                           "UTF8",
                           "--no-locale",
                           "--no-instructions",
                           NULL};
    struct spawn sp = {.argv = initdb_argv,
                       .envp = e->envp,
                       .cwd = e->data_dir,
                       .stdin_fd = -1,
                       .out_fd = log_fd,
                       .ru = &e->ru,
                       .pdeath_signal = SIGTERM};
    int status = spawn_wait(&sp, err);
    if (status < 0) {
        result = SL_EIO;
        goto cleanup;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char how[64];
        describe_status(how, sizeof(how), status);
        errf(err, "initdb failed (%s)", how);
        add_log_tail(err, log_path, log_shown, marker.log_start);
        result = SL_EIO;
        goto cleanup;
    }
    if ((result = append_file(conf, pg_conf, err)) < 0)
        goto cleanup;

    /* The statement fits in the pipe's buffer, so it is written before the child runs. */
    static const char create_db[] = "CREATE DATABASE " EMBED_PG_DBNAME ";\n";
    if (pipe(in_pipe) < 0 || write_all(in_pipe[1], create_db, strlen(create_db)) < 0) {
        result = errno_fail(err, "write to a pipe for", postgres);
        goto cleanup;
    }
    close(in_pipe[1]);
    in_pipe[1] = -1;
    struct stat st;
    off_t before = fstat(log_fd, &st) == 0 ? st.st_size : 0;
    char *single_argv[] = {postgres, "--single", "-D", init_dir, "postgres", NULL};
    struct spawn single = sp;
    single.argv = single_argv;
    single.stdin_fd = in_pipe[0];
    status = spawn_wait(&single, err);
    if (status < 0) {
        result = SL_EIO;
        goto cleanup;
    }
    struct strbuf out = STRBUF_INIT;
    int failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
                 strbuf_read_file(&out, log_path, (size_t)64 << 20) != 0 ||
                 (size_t)before > out.len || strstr(out.buf + before, "ERROR:") != NULL;
    strbuf_release(&out);
    if (failed) {
        errf(err, "cannot create the database \"%s\"", EMBED_PG_DBNAME);
        add_log_tail(err, log_path, log_shown, before);
        result = SL_EIO;
        goto cleanup;
    }
    if (rename(init_dir, e->pg_dir) < 0) {
        result = errno_fail(err, "rename to pg/", init_dir);
        goto cleanup;
    }
    sync_dir(e->data_dir);
    result = 0;
cleanup:
    if (result < 0)
        remove_at(AT_FDCWD, init_dir);
    if (log_fd >= 0)
        close(log_fd);
    for (int i = 0; i < 2; i++) {
        if (in_pipe[i] >= 0)
            close(in_pipe[i]);
    }
    free(init_dir);
    free(log_path);
    free(log_shown);
    free(initdb);
    free(postgres);
    free(conf);
    return result;
}

/* pg/ must be a cluster that belongs to the servers' user; *out_version gets its major
 * version (newly allocated), or NULL if pg/ does not exist yet. */
static int pg_check_dir(char **out_version, const struct embed *e, const char *shown_pg,
                        struct strbuf *err)
{
    struct stat st;
    *out_version = NULL;
    if (lstat(e->pg_dir, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        return errno_fail(err, "inspect", e->pg_dir);
    }
    char *pg_version = xasprintf("%s/PG_VERSION", e->pg_dir);
    char *version = S_ISDIR(st.st_mode) ? read_line(pg_version, 1) : NULL;
    free(pg_version);
    if (!version) {
        errf(err, "%s is not a PostgreSQL data directory (no PG_VERSION): move it away", shown_pg);
        return SL_EINVAL;
    }
    if (st.st_uid != e->ru.uid) {
        errf(err, "%s belongs to uid %ld, but PostgreSQL runs as \"%s\" (uid %ld)", shown_pg,
             (long)st.st_uid, e->ru.name, (long)e->ru.uid);
        free(version);
        return SL_EINVAL;
    }
    *out_version = version;
    return 0;
}

static int pg_spawn(struct embed *e, const char *bindir, struct strbuf *err)
{
    char *postgres = xasprintf("%s/postgres", bindir);
    char *port = xasprintf("%d", e->pg_port);
    char *listen = xasprintf("listen_addresses=%s", e->pg_port_tcp ? "127.0.0.1" : "");
    char *argv[] = {postgres, "-D", e->pg_dir, "-k", e->socket_dir, "-p", port, "-c", listen, NULL};
    int result = SL_ENOENT;
    if (access(postgres, X_OK) < 0) {
        errf(err, "\"%s\" not found: install PostgreSQL's server package", postgres);
        goto cleanup;
    }
    int log_fd = open_log(&e->pg, err);
    result = SL_EIO;
    if (log_fd < 0)
        goto cleanup;
    struct spawn sp = {.argv = argv,
                       .envp = e->envp,
                       .cwd = e->pg_dir,
                       .stdin_fd = -1,
                       .out_fd = log_fd,
                       .ru = &e->ru,
                       .pdeath_signal = e->pg.stop_signal};
    result = spawn(&e->pg.pid, &sp, err);
    close(log_fd);
cleanup:
    free(postgres);
    free(port);
    free(listen);
    return result;
}

/* Ready when postmaster.pid is our postmaster's and its status line (8) says "ready". */
static int pg_is_ready(const struct embed *e)
{
    char *pidfile = xasprintf("%s/postmaster.pid", e->pg_dir);
    char *status = read_line(pidfile, 8);
    int ready = status && !strncmp(status, "ready", 5) && read_pid_file(pidfile) == e->pg.pid;
    free(status);
    free(pidfile);
    return ready;
}

/* --- Redis ------------------------------------------------------------------------------ */

/* Appends s to sb as a double-quoted Redis configuration argument. */
static void redis_quote(struct strbuf *sb, const char *s)
{
    strbuf_addch(sb, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            strbuf_addf(sb, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            strbuf_addf(sb, "\\x%02x", *p);
        else
            strbuf_addch(sb, (char)*p);
    }
    strbuf_addch(sb, '"');
}

/* redis.conf, written at every start: the socket directory may move between starts. */
static int redis_write_conf(const struct embed *e, const char *conf_path, struct strbuf *err)
{
    struct strbuf sb = STRBUF_INIT;
    char *socket = xasprintf("%s/" REDIS_SOCKET_NAME, e->socket_dir);
    char *pidfile = xasprintf("%s/redis.pid", e->redis_dir);
    strbuf_addstr(&sb, "# Written by sluice standalone at every start: changes here are lost.\n"
                       "daemonize no\n"
                       "supervised no\n"
                       "logfile \"\"\n"
                       "always-show-logo no\n");
    if (e->redis_port)
        strbuf_addf(&sb, "bind 127.0.0.1\nport %d\n", e->redis_port);
    else
        strbuf_addstr(&sb, "port 0\n");
    strbuf_addstr(&sb, "unixsocket ");
    redis_quote(&sb, socket);
    strbuf_addstr(&sb, "\nunixsocketperm 700\ndir ");
    redis_quote(&sb, e->redis_dir);
    strbuf_addstr(&sb, "\npidfile ");
    redis_quote(&sb, pidfile);
    /* The queue survives a restart through the append-only file alone (no RDB snapshots):
     * everysec costs at most a second of messages on a power loss, which the reconciler
     * re-sends from PostgreSQL. */
    strbuf_addstr(&sb, "\nappendonly yes\n"
                       "appendfsync everysec\n"
                       "save \"\"\n"
                       "maxmemory-policy noeviction\n");
    int result = write_file(conf_path, sb.buf, 0644, err);
    strbuf_release(&sb);
    free(socket);
    free(pidfile);
    return result;
}

static char *which(const char *prog)
{
    const char *path = getenv("PATH");
    for (const char *p = path && *path ? path : "/usr/local/bin:/usr/bin:/bin"; *p;) {
        size_t n = strcspn(p, ":");
        char *cand = xasprintf("%.*s/%s", (int)n, p, prog);
        if (n > 0 && p[0] == '/' && access(cand, X_OK) == 0)
            return cand;
        free(cand);
        p += n;
        if (*p == ':')
            p++;
    }
    return NULL;
}

static int redis_spawn(struct embed *e, struct strbuf *err)
{
    char *bin = which("redis-server");
    char *conf = xasprintf("%s/redis.conf", e->redis_dir);
    int result = SL_ENOENT;
    if (!bin) {
        errf(err, "\"redis-server\" not found on PATH: install Redis (Debian: apt install "
                  "redis-server)");
        goto cleanup;
    }
    if ((result = redis_write_conf(e, conf, err)) < 0)
        goto cleanup;
    int log_fd = open_log(&e->redis, err);
    result = SL_EIO;
    if (log_fd < 0)
        goto cleanup;
    char *argv[] = {bin, conf, NULL};
    struct spawn sp = {.argv = argv,
                       .envp = e->envp,
                       .cwd = e->redis_dir,
                       .stdin_fd = -1,
                       .out_fd = log_fd,
                       .ru = &e->ru,
                       .pdeath_signal = e->redis.stop_signal};
    result = spawn(&e->redis.pid, &sp, err);
    close(log_fd);
cleanup:
    free(bin);
    free(conf);
    return result;
}

/* PING over the unix socket: ready on +PONG (not while -LOADING the append-only file). */
static int redis_is_ready(const struct embed *e)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/" REDIS_SOCKET_NAME, e->socket_dir);
    if (n < 0 || (size_t)n >= sizeof(sa.sun_path))
        return 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    char reply[64] = "";
    size_t got = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        send(fd, ping, strlen(ping), MSG_NOSIGNAL) == (ssize_t)strlen(ping)) {
        long long deadline = now_ms() + PING_TIMEOUT_MS;
        while (got < 7 && !memchr(reply, '\n', got)) {
            struct pollfd pfd = {fd, POLLIN, 0};
            long long left = deadline - now_ms();
            if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
                break;
            ssize_t r = read(fd, reply + got, sizeof(reply) - 1 - got);
            if (r <= 0)
                break;
            got += (size_t)r;
        }
    }
    close(fd);
    reply[got] = '\0';
    return !strncmp(reply, "+PONG", 5);
}

/* --- start and stop --------------------------------------------------------------------- */

/* Reaps s if it has exited; returns 1 (and sets *status) if it has, else 0. */
static int server_exited(struct server *s, int *status)
{
    if (s->pid <= 0)
        return 0;
    pid_t r = waitpid(s->pid, status, WNOHANG);
    if (r == s->pid || (r < 0 && errno == ECHILD)) {
        s->pid = 0;
        return 1;
    }
    return 0;
}

/* "<name> exited (...)" plus its log's tail. */
static void server_died(struct strbuf *err, struct server *s, const char *when, int status)
{
    char how[64];
    describe_status(how, sizeof(how), status);
    errf(err, "%s exited %s (%s)", s->name, when, how);
    add_log_tail(err, s->log_path, s->log_shown, s->log_start);
}

static int wait_ready(struct embed *e, int timeout_ms, struct strbuf *err)
{
    long long t0 = now_ms(), deadline = t0 + timeout_ms;
    int pg_ready = 0, redis_ready = 0, status = 0;
    for (;;) {
        if (!pg_ready) {
            if (server_exited(&e->pg, &status)) {
                server_died(err, &e->pg, "during start-up", status);
                return SL_EIO;
            }
            pg_ready = pg_is_ready(e);
        }
        if (!redis_ready) {
            if (server_exited(&e->redis, &status)) {
                server_died(err, &e->redis, "during start-up", status);
                return SL_EIO;
            }
            redis_ready = redis_is_ready(e);
        }
        if (pg_ready && redis_ready) {
            sl_debug(COMPONENT, "servers ready in %lld ms", now_ms() - t0);
            return 0;
        }
        if (now_ms() > deadline) {
            struct server *late = pg_ready ? &e->redis : &e->pg;
            errf(err, "%s not ready after %d ms", late->name, timeout_ms);
            add_log_tail(err, late->log_path, late->log_shown, late->log_start);
            return SL_ETIMEDOUT;
        }
        sleep_ms(POLL_INTERVAL_MS);
    }
}

/* Waits until both servers have exited or the deadline passes. */
static void reap_until(struct embed *e, long long deadline)
{
    int status;
    for (;;) {
        server_exited(&e->pg, &status);
        server_exited(&e->redis, &status);
        if ((e->pg.pid <= 0 && e->redis.pid <= 0) || now_ms() > deadline)
            return;
        sleep_ms(POLL_INTERVAL_MS);
    }
}

/* Stops whatever runs: the polite signal, then PostgreSQL's immediate shutdown, then
 * SIGKILL to each process group. Returns 0, or SL_ETIMEDOUT if it had to escalate. */
static int stop_servers(struct embed *e)
{
    struct server *servers[] = {&e->pg, &e->redis};
    int result = 0;
    for (int i = 0; i < 2; i++) {
        if (servers[i]->pid > 0)
            kill(servers[i]->pid, servers[i]->stop_signal);
    }
    reap_until(e, now_ms() + EMBED_STOP_TIMEOUT_MS);
    if (e->pg.pid > 0) {
        sl_warn(COMPONENT,
                "postgresql pid=%ld still runs after %d ms, shutting it down "
                "immediately",
                (long)e->pg.pid, EMBED_STOP_TIMEOUT_MS);
        kill(e->pg.pid, SIGQUIT);
        reap_until(e, now_ms() + PG_IMMEDIATE_WAIT_MS);
        result = SL_ETIMEDOUT;
    }
    for (int i = 0; i < 2; i++) {
        struct server *s = servers[i];
        if (s->pid <= 0)
            continue;
        sl_warn(COMPONENT, "%s pid=%ld does not stop, killing it", s->name, (long)s->pid);
        kill(-s->pid, SIGKILL);
        while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
            ;
        s->pid = 0;
        result = SL_ETIMEDOUT;
    }
    return result;
}

static void server_free(struct server *s)
{
    free(s->log_path);
    free(s->log_shown);
}

/* Stops the servers (if this process owns them), removes the /tmp socket directory,
 * releases the lock and frees e. */
static int embed_release(struct embed *e)
{
    int result = 0;
    if (e->owner == getpid()) {
        result = stop_servers(e);
        if (e->tmp_sockets) {
            remove_stale_sockets(e->socket_dir);
            rmdir(e->socket_dir);
            char *record = xasprintf("%s/socket-dir", e->data_dir);
            unlink(record);
            free(record);
        }
    }
    if (e->lock_fd >= 0)
        close(e->lock_fd); /* in the owner, this releases the flock */
    server_free(&e->pg);
    server_free(&e->redis);
    free(e->shown_dir);
    free(e->data_dir);
    free(e->pg_dir);
    free(e->redis_dir);
    free(e->log_dir);
    free(e->socket_dir);
    free(e->db_url);
    free(e->redis_url);
    free(e->envp);
    free(e);
    return result;
}

/* Takes <data_dir>/standalone.lock for the life of e, and writes our pid in it. */
static int take_lock(struct embed *e, struct strbuf *err)
{
    char *path = xasprintf("%s/standalone.lock", e->data_dir);
    int result = 0;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        result = errno_fail(err, "open", path);
        goto cleanup;
    }
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EINTR)
            continue;
        if (errno != EWOULDBLOCK) {
            result = errno_fail(err, "lock", path);
            goto cleanup;
        }
        pid_t holder = read_pid_file(path);
        if (holder)
            errf(err, "data directory %s is in use by pid %ld", e->shown_dir, (long)holder);
        else
            errf(err, "data directory %s is in use by another process", e->shown_dir);
        result = SL_ECONFLICT;
        goto cleanup;
    }
    char pid[32];
    snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, strlen(pid), 0) != (ssize_t)strlen(pid)) {
        result = errno_fail(err, "write", path);
        goto cleanup;
    }
    e->lock_fd = fd;
    fd = -1;
cleanup:
    if (fd >= 0)
        close(fd); /* releases the lock, if taken */
    free(path);
    return result;
}

/* Creates a subdirectory of the data directory (if missing) and gives it its owner. */
static int make_subdir(const struct embed *e, const char *path, mode_t mode, int servers_own,
                       struct strbuf *err)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return errno_fail(err, "create directory", path);
    if (servers_own)
        return own_dir(path, mode, &e->ru, err);
    return 0;
}

/* Everything of embed_start() after the lock: prepare, start, wait. */
static int start_locked(struct embed *e, const struct embed_options *o, struct strbuf *err)
{
    char *shown_pg = shown_path(e, "pg");
    char *version = NULL, *bindir = NULL;
    char *pg_pidfile = xasprintf("%s/postmaster.pid", e->pg_dir);
    char *redis_pidfile = xasprintf("%s/redis.pid", e->redis_dir);
    int result = resolve_user(&e->ru, o->run_as_user, err);
    if (result < 0)
        goto cleanup;
    if ((result = check_reachable(&e->ru, e->data_dir, e->shown_dir, err)) < 0)
        goto cleanup;
    if ((result = make_subdir(e, e->log_dir, 0755, 0, err)) < 0 ||
        (result = make_subdir(e, e->redis_dir, 0700, 1, err)) < 0)
        goto cleanup;
    if ((result = pg_check_dir(&version, e, shown_pg, err)) < 0)
        goto cleanup;
    if (!(bindir = pg_bindir(version, shown_pg, err))) {
        result = SL_ENOENT;
        goto cleanup;
    }

    /* What a crash of an earlier run may have left behind. */
    if (version &&
        ((result = wait_pid_file(e, pg_pidfile, e->pg_dir, "postgresql", "INT", err)) < 0 ||
         (result = pg_wait_old_shm(e, pg_pidfile, err)) < 0 ||
         (result = remove_pid_file(pg_pidfile, err)) < 0))
        goto cleanup;
    if ((result = wait_pid_file(e, redis_pidfile, e->redis_dir, "redis", "TERM", err)) < 0 ||
        (result = remove_pid_file(redis_pidfile, err)) < 0)
        goto cleanup;
    if ((result = prepare_socket_dir(e, err)) < 0)
        goto cleanup;

    /* Redis first: it comes up while initdb runs. */
    if ((result = redis_spawn(e, err)) < 0)
        goto cleanup;
    if (!version && (result = pg_init(e, bindir, err)) < 0)
        goto cleanup;
    if ((result = pg_spawn(e, bindir, err)) < 0)
        goto cleanup;
    result = wait_ready(e, o->start_timeout_ms > 0 ? o->start_timeout_ms : DEFAULT_START_TIMEOUT_MS,
                        err);
cleanup:
    free(shown_pg);
    free(version);
    free(bindir);
    free(pg_pidfile);
    free(redis_pidfile);
    return result;
}

int embed_start(struct embed **out, const struct embed_options *opts, struct strbuf *err)
{
    struct embed_options o = EMBED_OPTIONS_INIT;
    if (opts)
        o = *opts;
    const char *dir = o.data_dir && *o.data_dir ? o.data_dir : EMBED_DEFAULT_DATA_DIR;
    if (o.pg_port < 0 || o.pg_port > 65535 || o.redis_port < 0 || o.redis_port > 65535) {
        errf(err, "a port must be between 1 and 65535, or 0 for none");
        return SL_EINVAL;
    }
    char *abs = absolute_path(dir);
    if (!abs) {
        errf(err, "cannot resolve data directory %s: the working directory is gone", dir);
        return SL_EIO;
    }
    int result = mkdir_p(abs, 0755, err);
    if (result < 0) {
        free(abs);
        return result;
    }

    struct embed *e = xcalloc(1, sizeof(*e));
    e->shown_dir = xstrdup(dir);
    e->data_dir = abs;
    e->pg_dir = xasprintf("%s/pg", abs);
    e->redis_dir = xasprintf("%s/redis", abs);
    e->log_dir = xasprintf("%s/logs", abs);
    e->pg_port = o.pg_port ? o.pg_port : EMBED_PG_SOCKET_PORT;
    e->pg_port_tcp = o.pg_port != 0;
    e->redis_port = o.redis_port;
    e->envp = child_env();
    e->lock_fd = -1;
    e->owner = getpid();
    server_init(e, &e->pg, "postgresql", SIGINT);
    server_init(e, &e->redis, "redis", SIGTERM);

    if ((result = take_lock(e, err)) < 0 || (result = start_locked(e, &o, err)) < 0) {
        embed_release(e);
        return result;
    }
    e->db_url = xasprintf("postgresql:///%s?host=%s&port=%d&user=%s", EMBED_PG_DBNAME,
                          e->socket_dir, e->pg_port, EMBED_PG_USER);
    e->redis_url = xasprintf("unix://%s/" REDIS_SOCKET_NAME, e->socket_dir);
    sl_info(COMPONENT, "postgresql pid=%ld and redis pid=%ld ready in \"%s\" as user \"%s\"",
            (long)e->pg.pid, (long)e->redis.pid, e->data_dir, e->ru.name);
    *out = e;
    return 0;
}

int embed_stop(struct embed *e)
{
    return e ? embed_release(e) : 0;
}

int embed_check(struct embed *e, struct strbuf *err)
{
    struct server *servers[] = {&e->pg, &e->redis};
    int status;
    for (int i = 0; i < 2; i++) {
        if (server_exited(servers[i], &status)) {
            server_died(err, servers[i], "unexpectedly", status);
            return SL_EIO;
        }
    }
    return 0;
}

const char *embed_database_url(const struct embed *e)
{
    return e->db_url;
}

const char *embed_redis_url(const struct embed *e)
{
    return e->redis_url;
}

pid_t embed_pg_pid(const struct embed *e)
{
    return e->pg.pid;
}

pid_t embed_redis_pid(const struct embed *e)
{
    return e->redis.pid;
}

const char *embed_data_dir(const struct embed *e)
{
    return e->data_dir;
}
