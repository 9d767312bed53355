/*
 * tests/harness/harness.c - starts real PostgreSQL, Redis and git daemon servers for tests.
 *
 * Every server gets a private directory <root>/sluice-harness.<owner pid>.<kind>.XXXXXX (root
 * is /dev/shm if roomy, else $TMPDIR: see harness_root()) and
 * is spawned by spawn() below: a fork that starts a new session (so the server and whatever
 * it forks form one process group), points stdout and stderr at a log file in that
 * directory, closes every other descriptor, sets the parent-death signal and execs the real
 * binary with an explicit environment. PostgreSQL additionally drops root to "nobody".
 *
 * A server's life:
 *
 *     (zeroed) --*_start()--> starting --ready--> running --*_stop()--> (zeroed)
 *                                |                   |
 *                                +-- exits early: "address in use" -> retry on a new port
 *                                +-- exits / times out -> log printed, dir removed, error
 *
 * The registry (reg[] below) mirrors every directory and server this process tree created,
 * as plain fixed-size data, so that the atexit handler can stop them without touching
 * memory owned by tests (a test's struct may live on a stack that is long gone). Each entry
 * records its owner pid: Check forks every test from the runner, the children inherit the
 * registry and the atexit handler, and must not stop the servers that the runner's
 * unchecked fixtures started for them.
 *
 * Ports: a free port is found by binding 127.0.0.1:0 and closing the socket; another
 * process may take it before the server binds, so a server that exits complaining the
 * address is in use is restarted on a new port, up to PORT_ATTEMPTS times.
 *
 * PostgreSQL start-up is dominated by initdb (about a second), so the first start in a
 * process builds a template cluster (initdb, the harness's postgresql.conf settings and the
 * database sluice_test, made in single-user mode) and every start copies it (~0.1 s).
 */
#define _DEFAULT_SOURCE /* setgroups(), to drop root's supplementary groups */

#include "tests/harness/harness.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PORT_ATTEMPTS      5
#define STOP_TIMEOUT_MS    10000
#define REDIS_TIMEOUT_MS   10000
#define POLL_INTERVAL_MS   5
#define REG_MAX            64
#define REG_DIR_MAX        512
#define DIR_PREFIX         "sluice-harness."
#define SHM_DIR            "/dev/shm"
#define SHM_MIN_FREE_BYTES (512ULL << 20)

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

static int env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

/* $TMPDIR, else /tmp. */
static const char *tmp_dir(void)
{
    const char *t = getenv("TMPDIR");
    return t && *t == '/' ? t : "/tmp";
}

/*
 * Where the private directories go: $SLUICE_HARNESS_TMPDIR if set, else /dev/shm when it
 * is a writable tmpfs with room to spare (a PostgreSQL cluster is ~25 MB written per start,
 * which takes ~0.1 s in memory but over a second on a slow virtual disk), else tmp_dir().
 */
static const char *harness_root(void)
{
    static char root[REG_DIR_MAX / 2];
    if (root[0])
        return root;
    const char *env = getenv("SLUICE_HARNESS_TMPDIR");
    struct statvfs vfs;
    const char *pick = tmp_dir();
    if (env && *env == '/')
        pick = env;
    else if (access(SHM_DIR, W_OK | X_OK) == 0 && statvfs(SHM_DIR, &vfs) == 0 &&
             (unsigned long long)vfs.f_bavail * vfs.f_frsize >= SHM_MIN_FREE_BYTES)
        pick = SHM_DIR;
    snprintf(root, sizeof(root), "%s", pick);
    return root;
}

char *harness_which(const char *prog)
{
    if (strchr(prog, '/'))
        return access(prog, X_OK) == 0 ? xstrdup(prog) : NULL;
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
    while (*path) {
        size_t n = strcspn(path, ":");
        char *cand = xasprintf("%.*s/%s", (int)n, n ? path : ".", prog);
        if (access(cand, X_OK) == 0)
            return cand;
        free(cand);
        path += n;
        if (*path == ':')
            path++;
    }
    return NULL;
}

/* Prints the last max_bytes of the file at path to stderr, framed. */
static void print_log(const char *what, const char *path)
{
    struct strbuf sb = STRBUF_INIT;
    if (strbuf_read_file(&sb, path, (size_t)64 << 20) != 0) {
        fprintf(stderr, "harness: (no log at \"%s\")\n", path);
        return;
    }
    size_t max_bytes = 8192, off = sb.len > max_bytes ? sb.len - max_bytes : 0;
    fprintf(stderr, "harness: --- %s (%s)%s ---\n%s%s--- end of %s ---\n", what, path,
            off ? ", last 8 KiB" : "", sb.buf + off,
            sb.len && sb.buf[sb.len - 1] != '\n' ? "\n" : "", what);
    strbuf_release(&sb);
}

/* Whether the file at path holds needle at or after byte offset. */
static int file_contains(const char *path, size_t offset, const char *needle)
{
    struct strbuf sb = STRBUF_INIT;
    int found = strbuf_read_file(&sb, path, (size_t)64 << 20) == 0 && sb.len >= offset &&
                strstr(sb.buf + offset, needle);
    strbuf_release(&sb);
    return found;
}

static int write_file(const char *path, const char *content, int flags)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0644);
    if (fd < 0) {
        fprintf(stderr, "harness: cannot open \"%s\": %s\n", path, strerror(errno));
        return SL_EIO;
    }
    size_t len = strlen(content), done = 0;
    while (done < len) {
        ssize_t n = write(fd, content + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "harness: cannot write \"%s\": %s\n", path, strerror(errno));
            close(fd);
            return SL_EIO;
        }
        done += (size_t)n;
    }
    return close(fd) == 0 ? 0 : SL_EIO;
}

/* mkdir -p of every directory above path's last component. */
static int mkdir_parents(const char *path)
{
    char *p = xstrdup(path);
    int result = 0;
    for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST) {
            fprintf(stderr, "harness: cannot create \"%s\": %s\n", p, strerror(errno));
            result = SL_EIO;
            break;
        }
        *s = '/';
    }
    free(p);
    return result;
}

/* rm -rf of at_fd/name, a directory or a file. Best effort: keeps going on errors. */
static void remove_at(int at_fd, const char *name)
{
    struct stat st;
    if (fstatat(at_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        int fd = openat(at_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (d) {
            struct dirent *de;
            while ((de = readdir(d)) != NULL) {
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                    remove_at(dirfd(d), de->d_name);
            }
            closedir(d);
        } else if (fd >= 0) {
            close(fd);
        }
        unlinkat(at_fd, name, AT_REMOVEDIR);
    } else {
        unlinkat(at_fd, name, 0);
    }
}

static void remove_tree(const char *path)
{
    remove_at(AT_FDCWD, path);
}

/* --- the unprivileged user PostgreSQL runs as ------------------------------------------ */

struct run_as {
    int drop;  /* we are root: switch to uid/gid before exec */
    uid_t uid; /* the server's user */
    gid_t gid;
};

static struct run_as server_user(void)
{
    struct run_as ru = {0, geteuid(), getegid()};
    if (geteuid() != 0)
        return ru;
    /* "nobody" exists on every Debian system (base-passwd); its numeric ids are the
     * fallback should the name be missing. Nothing is created on the machine. */
    struct passwd *pw = getpwnam("nobody");
    ru.drop = 1;
    ru.uid = pw ? pw->pw_uid : 65534;
    ru.gid = pw ? pw->pw_gid : 65534;
    return ru;
}

static int chown_to_server(const char *path)
{
    struct run_as ru = server_user();
    if (ru.drop && chown(path, ru.uid, ru.gid) < 0) {
        fprintf(stderr, "harness: cannot chown \"%s\": %s\n", path, strerror(errno));
        return SL_EIO;
    }
    return 0;
}

/* --- the registry of what this process tree started ------------------------------------ */

enum reg_kind { REG_DIR, REG_PG, REG_REDIS, REG_GIT, REG_S3 };

static struct reg_entry {
    int used;
    enum reg_kind kind;
    pid_t owner;           /* the process that created it; only it stops it */
    pid_t pid;             /* the server (its process group's leader), 0 if none yet */
    int stop_signal;       /* polite shutdown request for the leader */
    char dir[REG_DIR_MAX]; /* removed after the server is gone */
} reg[REG_MAX];

static pid_t initialized_pid; /* getpid() of the last process that ran harness_init() */
static pid_t atexit_pid;      /* who registered on_exit(); inherited by forked children with it */

static const char *kind_name(enum reg_kind k)
{
    static const char *const names[] = {"dir", "postgres", "redis", "git-daemon", "s3rver"};
    return names[k];
}

/* Returns a slot number (index + 1), or 0 if the registry is full or dir too long. */
static int reg_add(enum reg_kind kind, const char *dir)
{
    if (strlen(dir) >= REG_DIR_MAX) {
        fprintf(stderr, "harness: path too long: \"%s\"\n", dir);
        return 0;
    }
    for (int i = 0; i < REG_MAX; i++) {
        if (!reg[i].used) {
            reg[i] = (struct reg_entry){1, kind, getpid(), 0, 0, {0}};
            memcpy(reg[i].dir, dir, strlen(dir) + 1);
            return i + 1;
        }
    }
    fprintf(stderr, "harness: more than %d servers and directories at once\n", REG_MAX);
    return 0;
}

/*
 * An immediate shutdown lets PostgreSQL remove its shared memory; after SIGKILL the small
 * System V segment it keeps as an interlock would outlive it, so remove it here. Its key
 * and id are line 7 of postmaster.pid ("key id").
 */
static void pg_remove_sysv_shm(const char *dir)
{
    char *pidfile = xasprintf("%s/data/postmaster.pid", dir);
    struct strbuf sb = STRBUF_INIT;
    if (strbuf_read_file(&sb, pidfile, 1 << 16) == 0) {
        const char *line = sb.buf;
        for (int i = 1; i < 7 && line; i++) {
            line = strchr(line, '\n');
            line = line ? line + 1 : NULL;
        }
        char *after_key = NULL, *after_id = NULL;
        long id = -1;
        if (line) {
            (void)strtol(line, &after_key, 10); /* the key, not needed */
            id = strtol(after_key, &after_id, 10);
        }
        if (line && after_id != after_key && id >= 0)
            shmctl((int)id, IPC_RMID, NULL);
    }
    strbuf_release(&sb);
    free(pidfile);
}

/* Asks the leader to stop, waits, then kills the whole group; reaps the leader. */
static void kill_and_reap(struct reg_entry *e)
{
    pid_t pid = e->pid;
    int status, escalated = 0;
    kill(pid, e->stop_signal);
    long long deadline = now_ms() + STOP_TIMEOUT_MS;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            break;
        if (now_ms() > deadline) {
            fprintf(stderr, "harness: %s pid=%ld ignored signal %d, killing it\n",
                    kind_name(e->kind), (long)pid, e->stop_signal);
            kill(-pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            escalated = 1;
            break;
        }
        sleep_ms(2);
    }
    /* Stragglers in the group (git daemon's per-connection children). */
    kill(-pid, SIGKILL);
    if (escalated && e->kind == REG_PG)
        pg_remove_sysv_shm(e->dir);
    e->pid = 0;
}

/* Stops the entry's server if any and removes its directory. Owner only. */
static void reg_stop(struct reg_entry *e)
{
    if (!e->used || e->owner != getpid())
        return;
    if (e->pid > 0)
        kill_and_reap(e);
    if (e->dir[0]) {
        if (env_flag("SLUICE_HARNESS_KEEP"))
            fprintf(stderr, "harness: keeping \"%s\"\n", e->dir);
        else
            remove_tree(e->dir);
    }
    e->used = 0;
}

/* The registry entry behind a struct's slot, if it is still this server's (running, or
 * killed and not yet started again: pid 0). */
static struct reg_entry *reg_get(int slot, pid_t pid, enum reg_kind kind)
{
    if (slot < 1 || slot > REG_MAX || !reg[slot - 1].used || reg[slot - 1].pid != pid ||
        reg[slot - 1].kind != kind)
        return NULL;
    return &reg[slot - 1];
}

void harness_stop_all(void)
{
    for (int i = REG_MAX - 1; i >= 0; i--)
        reg_stop(&reg[i]);
}

/*
 * Runs at exit() in every process of the tree (forked children inherit the registration).
 * A failed ck_assert ends a forked test with _exit(), which skips this: the servers that
 * test started stop through their parent-death signal, and the process that registered
 * the handler (normally the runner) sweeps their directories when it finishes.
 */
static void on_exit_stop_all(void)
{
    harness_stop_all();
    if (atexit_pid == getpid() && !env_flag("SLUICE_HARNESS_KEEP"))
        harness_sweep_stale();
}

static void register_on_exit(void)
{
    if (!atexit_pid) {
        atexit(on_exit_stop_all);
        atexit_pid = getpid();
    }
}

/* At load, so that the runner sweeps at exit even if only its forked tests started
 * servers (and one of them failed, leaving its directories behind). */
__attribute__((constructor)) static void harness_at_load(void)
{
    register_on_exit();
}

static void harness_init(void)
{
    if (initialized_pid == getpid())
        return;
    initialized_pid = getpid();
    register_on_exit();
    harness_sweep_stale();
}

/* Removes the stale directories in root; returns how many. */
static int sweep_root(const char *root)
{
    DIR *d = opendir(root);
    if (!d)
        return 0;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, DIR_PREFIX, strlen(DIR_PREFIX)) != 0)
            continue;
        char *end;
        long pid = strtol(de->d_name + strlen(DIR_PREFIX), &end, 10);
        if (pid <= 0 || *end != '.' || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* its owner lives (or belongs to someone else) */
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode) ||
            st.st_uid != geteuid())
            continue;
        remove_at(dirfd(d), de->d_name);
        removed++;
    }
    closedir(d);
    return removed;
}

int harness_sweep_stale(void)
{
    /* Every place harness_root() may have picked, in this run or an earlier one. */
    const char *roots[] = {harness_root(), SHM_DIR, tmp_dir()};
    int removed = 0;
    for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
        int seen = 0;
        for (size_t j = 0; j < i; j++)
            seen |= !strcmp(roots[i], roots[j]);
        if (!seen)
            removed += sweep_root(roots[i]);
    }
    return removed;
}

/* Creates <harness_root()>/sluice-harness.<pid>.<kind>.XXXXXX (mode 0755, so a server running as
 * another user can reach its subdirectories) and registers it. */
static int make_private_dir(char **out_dir, int *out_slot, enum reg_kind reg_kind, const char *kind)
{
    char *dir = xasprintf("%s/" DIR_PREFIX "%ld.%s.XXXXXX", harness_root(), (long)getpid(), kind);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "harness: cannot create \"%s\": %s\n", dir, strerror(errno));
        free(dir);
        return SL_EIO;
    }
    int slot = reg_add(reg_kind, dir);
    if (!slot || chmod(dir, 0755) < 0) {
        remove_tree(dir);
        if (slot)
            reg[slot - 1].used = 0;
        free(dir);
        return SL_EIO;
    }
    *out_dir = dir;
    *out_slot = slot;
    return 0;
}

/* Undoes make_private_dir() after a failed start (keeping the dir if asked to). */
static void discard_private_dir(int slot)
{
    if (slot)
        reg_stop(&reg[slot - 1]);
}

/* --- spawning --------------------------------------------------------------------------- */

struct spawn {
    char *const *argv;      /* argv[0] a full path */
    const char *const *env; /* "NAME=value" to set, "NAME" to unset; NULL-terminated */
    const char *cwd;        /* NULL: inherit */
    const char *stdin_path; /* NULL: /dev/null */
    int out_fd;             /* the child's stdout and stderr; 0: /dev/null */
    int err_fd;
    int as_server_user; /* drop root to server_user() */
    int pdeath_signal;  /* sent to the child when this thread dies; 0: none */
    int new_session;    /* the child leads a new session and process group */
};

static const char *const server_env[] = {"LC_ALL=C", "NOTIFY_SOCKET", "PGDATA", NULL};

static const char *const git_env[] = {
    "LC_ALL=C",
    "GIT_CONFIG_NOSYSTEM=1",
    "GIT_CONFIG_GLOBAL=/dev/null",
    "GIT_CONFIG_COUNT=3",
    "GIT_CONFIG_KEY_0=init.defaultBranch",
    "GIT_CONFIG_VALUE_0=main",
    "GIT_CONFIG_KEY_1=advice.detachedHead",
    "GIT_CONFIG_VALUE_1=false",
    "GIT_CONFIG_KEY_2=commit.gpgSign",
    "GIT_CONFIG_VALUE_2=false",
    "GIT_AUTHOR_NAME=sluice test",
    "GIT_AUTHOR_EMAIL=test@sluice.invalid",
    "GIT_COMMITTER_NAME=sluice test",
    "GIT_COMMITTER_EMAIL=test@sluice.invalid",
    "GIT_TERMINAL_PROMPT=0",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    NULL,
};

static int env_name_eq(const char *a, const char *b)
{
    size_t la = strcspn(a, "="), lb = strcspn(b, "=");
    return la == lb && !memcmp(a, b, la);
}

/* environ with the overrides applied; the array is newly allocated, the strings are not. */
static char **build_env(const char *const *overrides)
{
    size_t n = 0, m = 0, k = 0;
    while (environ[n])
        n++;
    while (overrides && overrides[m])
        m++;
    char **envp = xcalloc(n + m + 1, sizeof(*envp));
    for (size_t i = 0; i < n; i++) {
        int overridden = 0;
        for (size_t j = 0; j < m && !overridden; j++)
            overridden = env_name_eq(environ[i], overrides[j]);
        if (!overridden)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < m; j++) {
        if (strchr(overrides[j], '='))
            envp[k++] = (char *)overrides[j];
    }
    envp[k] = NULL;
    return envp;
}

static void child_fail(const char *what, const char *arg)
{
    /* Only async-signal-safe calls between fork() and exec(). */
    const char *msg[] = {"harness: ", what, " \"", arg, "\": ", strerror(errno), "\n"};
    for (size_t i = 0; i < sizeof(msg) / sizeof(msg[0]); i++) {
        if (write(2, msg[i], strlen(msg[i])) < 0)
            break;
    }
    _exit(127);
}

static int spawn(pid_t *out_pid, const struct spawn *sp)
{
    struct run_as ru = server_user();
    char **envp = build_env(sp->env);
    pid_t parent = getpid();
    int max_fd = (int)sysconf(_SC_OPEN_MAX);
    if (max_fd < 0 || max_fd > 65536)
        max_fd = 65536;

    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        free(envp);
        return SL_EIO;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (sp->new_session && setsid() < 0)
            child_fail("setsid for", sp->argv[0]);
        const char *in = sp->stdin_path ? sp->stdin_path : "/dev/null";
        int in_fd = open(in, O_RDONLY), null_fd = open("/dev/null", O_WRONLY);
        if (in_fd < 0 || null_fd < 0)
            child_fail("cannot open", in);
        dup2(in_fd, 0);
        dup2(sp->out_fd > 0 ? sp->out_fd : null_fd, 1);
        dup2(sp->err_fd > 0 ? sp->err_fd : null_fd, 2);
        for (int fd = 3; fd < max_fd; fd++)
            close(fd);
        if (sp->cwd && chdir(sp->cwd) < 0)
            child_fail("cannot chdir to", sp->cwd);
        if (sp->as_server_user && ru.drop) {
            if (setgroups(0, NULL) < 0 || setgid(ru.gid) < 0 || setuid(ru.uid) < 0)
                child_fail("cannot drop privileges for", sp->argv[0]);
        }
        /* After the uid change, which clears the parent-death signal. */
        if (sp->pdeath_signal) {
            prctl(PR_SET_PDEATHSIG, sp->pdeath_signal);
            if (getppid() != parent)
                _exit(1); /* the owner died before we got here */
        }
        execve(sp->argv[0], sp->argv, envp);
        child_fail("cannot execute", sp->argv[0]);
    }
    free(envp);
    *out_pid = pid;
    return 0;
}

/*
 * Short-lived helpers (initdb, postgres --single, cp, git) get their own session, so that
 * Check's SIGINT handler, which SIGKILLs the runner's process group, does not reach them,
 * and SIGTERM when their parent dies, which every one of them handles by cleaning up
 * (a single-user postgres killed with SIGKILL would leak its System V segment).
 */
static void helper_defaults(struct spawn *sp)
{
    sp->new_session = 1;
    if (!sp->pdeath_signal)
        sp->pdeath_signal = SIGTERM;
}

/*
 * Runs sp to completion, capturing stdout and stderr (either may be NULL) into newly
 * allocated strings. Returns the exit status, or -1 if the child did not exit normally.
 */
static int run_capture(const struct spawn *sp_in, char **out, char **err)
{
    int po[2], pe[2];
    if (pipe(po) < 0)
        return -1;
    if (pipe(pe) < 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    struct spawn sp = *sp_in;
    sp.out_fd = po[1];
    sp.err_fd = pe[1];
    helper_defaults(&sp);
    pid_t pid;
    int rc = spawn(&pid, &sp);
    close(po[1]);
    close(pe[1]);
    struct strbuf bufs[2] = {STRBUF_INIT, STRBUF_INIT};
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = rc == 0 ? 2 : 0;
    while (open_fds > 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[8192];
            ssize_t n = read(fds[i].fd, buf, sizeof(buf));
            if (n > 0) {
                strbuf_add(&bufs[i], buf, (size_t)n);
            } else if (n == 0 || errno != EINTR) {
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    close(po[0]);
    close(pe[0]);
    int status = -1, result = -1;
    if (rc == 0) {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        result = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    if (out)
        *out = strbuf_detach(&bufs[0], NULL);
    if (err)
        *err = strbuf_detach(&bufs[1], NULL);
    strbuf_release(&bufs[0]);
    strbuf_release(&bufs[1]);
    return result;
}

/* Runs sp with stdout and stderr appended to log_path; returns the exit status or -1. */
static int run_logged(const struct spawn *sp_in, const char *log_path)
{
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    struct spawn sp = *sp_in;
    sp.out_fd = sp.err_fd = fd;
    helper_defaults(&sp);
    pid_t pid;
    int status = -1, rc = spawn(&pid, &sp);
    close(fd);
    if (rc < 0)
        return -1;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* --- starting servers ------------------------------------------------------------------ */

static int pick_port(int *out_port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return SL_EIO;
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    int result = SL_EIO;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0) {
        *out_port = ntohs(sa.sin_port);
        result = 0;
    } else {
        fprintf(stderr, "harness: cannot find a free port: %s\n", strerror(errno));
    }
    close(fd);
    return result;
}

enum wait_result { WAIT_READY, WAIT_EXITED, WAIT_TIMEOUT };

/* Polls is_ready(ctx) until it returns true, the child exits or the deadline passes. */
static enum wait_result wait_ready(pid_t pid, int (*is_ready)(const void *ctx), const void *ctx)
{
    long long deadline = now_ms() + HARNESS_START_TIMEOUT_MS;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD))
            return WAIT_EXITED;
        if (is_ready(ctx))
            return WAIT_READY;
        if (now_ms() > deadline)
            return WAIT_TIMEOUT;
        sleep_ms(POLL_INTERVAL_MS);
    }
}

/* What differs between the three servers' start-ups. */
struct server_def {
    const char *what;                          /* "postgres", for messages */
    enum reg_kind kind;                        /* registry kind */
    int stop_signal;                           /* polite shutdown; also the parent-death signal */
    int as_server_user;                        /* run as server_user() */
    char **(*build_argv)(void *ctx, int port); /* newly allocated, freed with free_argv() */
    int (*is_ready)(const void *ctx);
    void *ctx;
    const char *const *env;
    const char *cwd;
    const char *log_path;
};

static void free_argv(char **argv)
{
    for (char **a = argv; a && *a; a++)
        free(*a);
    free(argv);
}

/*
 * Spawns the server until it is ready and sets the registry entry's pid. With fixed_port 0
 * it picks a fresh port each attempt, retrying when the port turned out to be taken; with
 * a fixed port (a restart) it makes one attempt and returns SL_EEXIST if the port is
 * taken. *out_pid and *out_port are fields of the struct that def->ctx points to, set
 * during each attempt because is_ready() reads them; after a failure *out_pid is 0.
 */
static int start_server(pid_t *out_pid, int *out_port, int slot, const struct server_def *def,
                        int fixed_port)
{
    long long t0 = now_ms();
    for (int attempt = 1;; attempt++) {
        int port = fixed_port, result = fixed_port ? 0 : pick_port(&port);
        if (result < 0)
            return result;
        int log_fd = open(def->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        struct stat st;
        size_t log_start = log_fd >= 0 && fstat(log_fd, &st) == 0 ? (size_t)st.st_size : 0;
        if (log_fd < 0) {
            fprintf(stderr, "harness: cannot open \"%s\": %s\n", def->log_path, strerror(errno));
            return SL_EIO;
        }
        char **argv = def->build_argv(def->ctx, port);
        struct spawn sp = {.argv = argv,
                           .env = def->env,
                           .cwd = def->cwd,
                           .out_fd = log_fd,
                           .err_fd = log_fd,
                           .as_server_user = def->as_server_user,
                           .pdeath_signal = def->stop_signal,
                           .new_session = 1};
        pid_t pid;
        result = spawn(&pid, &sp);
        close(log_fd);
        free_argv(argv);
        if (result < 0)
            return result;
        struct reg_entry *e = &reg[slot - 1];
        e->pid = pid;
        e->stop_signal = def->stop_signal;
        *out_pid = pid; /* is_ready() may look at both */
        *out_port = port;
        enum wait_result w = wait_ready(pid, def->is_ready, def->ctx);
        if (w == WAIT_READY) {
            if (env_flag("SLUICE_HARNESS_VERBOSE"))
                fprintf(stderr, "harness: %s ready in %lld ms: pid=%ld port=%d dir=\"%s\"\n",
                        def->what, now_ms() - t0, (long)pid, port, e->dir);
            return 0;
        }
        e->pid = *out_pid = 0;
        if (w == WAIT_EXITED) { /* and reaped by wait_ready() */
            int in_use = file_contains(def->log_path, log_start, "in use");
            if (fixed_port && in_use) {
                fprintf(stderr, "harness: %s: port %d is taken by another process\n", def->what,
                        port);
                return SL_EEXIST;
            }
            if (!fixed_port && attempt < PORT_ATTEMPTS && in_use) {
                fprintf(stderr, "harness: %s: port %d taken, retrying\n", def->what, port);
                continue;
            }
            fprintf(stderr, "harness: %s exited during start-up\n", def->what);
            print_log(def->what, def->log_path);
            return SL_EIO;
        }
        fprintf(stderr, "harness: %s not ready after %d ms\n", def->what, HARNESS_START_TIMEOUT_MS);
        e->pid = pid;
        kill_and_reap(e);
        print_log(def->what, def->log_path);
        return SL_ETIMEDOUT;
    }
}

/* --- PostgreSQL ------------------------------------------------------------------------ */

/*
 * Appended to the template's postgresql.conf: fast and disposable, never durable across a
 * machine crash. synchronous_commit stays on: with fsync off it costs one write(2) of the
 * WAL per commit, and it is what makes every committed transaction survive the crash of
 * the server's processes (harness_pg_kill() with HARNESS_PG_RESTART_CRASH), as in
 * production; off, the last commits could still sit in shared memory and die with it.
 */
static const char pg_conf[] = "\n# --- tests/harness: fast, disposable, not crash-safe ---\n"
                              "fsync = off\n"
                              "full_page_writes = off\n"
                              "wal_level = minimal\n"
                              "max_wal_senders = 0\n"
                              "max_connections = 200\n"
                              "shared_buffers = 32MB\n"
                              "huge_pages = off\n"
                              "dynamic_shared_memory_type = mmap\n"
                              "autovacuum = off\n"
                              "jit = off\n"
                              "timezone = 'UTC'\n"
                              "log_timezone = 'UTC'\n"
                              "unix_socket_permissions = 0777\n"
                              "listen_addresses = ''\n";

static char pg_bindir_buf[PATH_MAX];
static char pg_template_dir[REG_DIR_MAX]; /* the template cluster's private dir, or "" */

const char *harness_pg_bindir(void)
{
    if (pg_bindir_buf[0])
        return pg_bindir_buf;
    const char *env = getenv("SLUICE_PG_BINDIR");
    if (env && *env) {
        snprintf(pg_bindir_buf, sizeof(pg_bindir_buf), "%s", env);
        return pg_bindir_buf;
    }
    /* Debian keeps each major version in /usr/lib/postgresql/<N>/bin: take the newest. */
    DIR *d = opendir("/usr/lib/postgresql");
    long best = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        char *end;
        long v = strtol(de->d_name, &end, 10);
        if (v <= best || *end)
            continue;
        char *postgres = xasprintf("/usr/lib/postgresql/%ld/bin/postgres", v);
        if (access(postgres, X_OK) == 0)
            best = v;
        free(postgres);
    }
    if (d)
        closedir(d);
    if (best) {
        snprintf(pg_bindir_buf, sizeof(pg_bindir_buf), "/usr/lib/postgresql/%ld/bin", best);
        return pg_bindir_buf;
    }
    char *postgres = harness_which("postgres");
    if (postgres) {
        *strrchr(postgres, '/') = '\0';
        snprintf(pg_bindir_buf, sizeof(pg_bindir_buf), "%s", postgres);
        free(postgres);
        return pg_bindir_buf;
    }
    return NULL;
}

/* Builds the template cluster in pg_template_dir unless one (perhaps a parent's) exists. */
static int pg_template(void)
{
    struct stat st;
    if (pg_template_dir[0] && stat(pg_template_dir, &st) == 0)
        return 0;
    pg_template_dir[0] = '\0';

    const char *bindir = harness_pg_bindir();
    char *dir = NULL, *data = NULL, *initdb = NULL, *postgres = NULL, *log = NULL;
    char *conf = NULL, *sql = NULL;
    int slot = 0, result = make_private_dir(&dir, &slot, REG_DIR, "pgtemplate");
    if (result < 0)
        goto cleanup;
    data = xasprintf("%s/data", dir);
    initdb = xasprintf("%s/initdb", bindir);
    postgres = xasprintf("%s/postgres", bindir);
    log = xasprintf("%s/initdb.log", dir);
    conf = xasprintf("%s/postgresql.conf", data);
    sql = xasprintf("%s/create.sql", dir);
    result = SL_EIO;
    if (mkdir(data, 0700) < 0 || chown_to_server(data) < 0)
        goto cleanup;

    char *initdb_argv[] = {initdb,
                           "-D",
                           data,
                           "-U",
                           HARNESS_PG_USER,
                           "-A",
                           "trust",
                           "-E",
                           "UTF8",
                           "--no-locale",
                           "-N",
                           "--no-instructions",
                           "--wal-segsize=1",
                           NULL};
    struct spawn sp = {.argv = initdb_argv, .env = server_env, .cwd = dir, .as_server_user = 1};
    if (run_logged(&sp, log) != 0) {
        fprintf(stderr, "harness: initdb failed\n");
        print_log("initdb", log);
        goto cleanup;
    }
    if (write_file(conf, pg_conf, O_APPEND) < 0)
        goto cleanup;
    /* Single-user mode makes the database without starting (and stopping) a server. */
    if (write_file(sql, "CREATE DATABASE " HARNESS_PG_DBNAME ";\n", O_TRUNC) < 0)
        goto cleanup;
    char *single_argv[] = {postgres, "--single", "-D", data, "postgres", NULL};
    struct spawn single = {
        .argv = single_argv, .env = server_env, .cwd = dir, .stdin_path = sql, .as_server_user = 1};
    if (run_logged(&single, log) != 0 || file_contains(log, 0, "ERROR:")) {
        fprintf(stderr, "harness: cannot create database \"%s\"\n", HARNESS_PG_DBNAME);
        print_log("postgres --single", log);
        goto cleanup;
    }
    memcpy(pg_template_dir, dir, strlen(dir) + 1);
    slot = 0; /* kept until this process exits */
    result = 0;
cleanup:
    discard_private_dir(slot);
    free(dir);
    free(data);
    free(initdb);
    free(postgres);
    free(log);
    free(conf);
    free(sql);
    return result;
}

static char **pg_build_argv(void *ctx, int port)
{
    const struct harness_pg *pg = ctx;
    char **argv = xcalloc(12, sizeof(*argv));
    int i = 0;
    argv[i++] = xasprintf("%s/postgres", harness_pg_bindir());
    argv[i++] = xstrdup("-D");
    argv[i++] = xstrdup(pg->data_dir);
    argv[i++] = xstrdup("-k");
    argv[i++] = xstrdup(pg->socket_dir);
    argv[i++] = xstrdup("-p");
    argv[i++] = xasprintf("%d", port);
    argv[i++] = xstrdup("-c");
    argv[i++] = xstrdup("listen_addresses=" HARNESS_LOOPBACK);
    return argv;
}

/*
 * Ready when postmaster.pid's status line (line 8) says so, as pg_ctl -w checks, and its
 * first line is this postmaster's pid: after a crash the file of the dead one, which said
 * "ready" too, stays until the new postmaster replaces it.
 */
static int pg_is_ready(const void *ctx)
{
    const struct harness_pg *pg = ctx;
    char *pidfile = xasprintf("%s/postmaster.pid", pg->data_dir);
    struct strbuf sb = STRBUF_INIT;
    int ready = 0;
    if (strbuf_read_file(&sb, pidfile, 1 << 16) == 0 && strtol(sb.buf, NULL, 10) == pg->pid) {
        const char *line = sb.buf;
        for (int i = 1; i < 8 && line; i++) {
            line = strchr(line, '\n');
            line = line ? line + 1 : NULL;
        }
        ready = line && !strncmp(line, "ready", 5);
    }
    strbuf_release(&sb);
    free(pidfile);
    return ready;
}

static void pg_free(struct harness_pg *pg)
{
    free(pg->dir);
    free(pg->data_dir);
    free(pg->socket_dir);
    free(pg->log_path);
    free(pg->url);
    free(pg->tcp_url);
    memset(pg, 0, sizeof(*pg));
}

static struct server_def pg_server_def(struct harness_pg *pg)
{
    struct server_def def = {.what = "postgres",
                             .kind = REG_PG,
                             .stop_signal = SIGQUIT,
                             .as_server_user = 1,
                             .build_argv = pg_build_argv,
                             .is_ready = pg_is_ready,
                             .ctx = pg,
                             .env = server_env,
                             .cwd = pg->dir,
                             .log_path = pg->log_path};
    return def;
}

int harness_pg_start(struct harness_pg *pg)
{
    struct harness_pg p = {0};
    const char *bindir = harness_pg_bindir();
    char *postgres = bindir ? xasprintf("%s/postgres", bindir) : NULL;
    int found = postgres && access(postgres, X_OK) == 0;
    free(postgres);
    if (!found) {
        fprintf(stderr, "harness: no PostgreSQL server in \"%s\" (set SLUICE_PG_BINDIR)\n",
                bindir ? bindir : "/usr/lib/postgresql/*/bin");
        memset(pg, 0, sizeof(*pg));
        return SL_ENOENT;
    }
    harness_init();
    long long t0 = now_ms();
    int result = pg_template();
    if (result < 0)
        goto cleanup;
    long long t_template = now_ms();
    result = make_private_dir(&p.dir, &p.slot, REG_PG, "pg");
    if (result < 0)
        goto cleanup;
    p.data_dir = xasprintf("%s/data", p.dir);
    p.socket_dir = xasprintf("%s/run", p.dir);
    p.log_path = xasprintf("%s/postgres.log", p.dir);
    result = SL_EIO;
    if (strlen(p.socket_dir) + sizeof("/.s.PGSQL.65535.lock") >
        sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "harness: socket directory path too long: \"%s\"\n", p.socket_dir);
        goto cleanup;
    }
    if (mkdir(p.socket_dir, 0755) < 0 || chown_to_server(p.socket_dir) < 0)
        goto cleanup;

    /* cp -a keeps the server user's ownership and the data directory's mode 0700. */
    char *cp = harness_which("cp");
    char *template_data = xasprintf("%s/data", pg_template_dir);
    char *cp_argv[] = {cp ? cp : "/bin/cp", "-a",       "--reflink=auto",
                       template_data,       p.data_dir, NULL};
    struct spawn sp = {.argv = cp_argv, .env = server_env};
    char *err = NULL;
    int status = run_capture(&sp, NULL, &err);
    if (status != 0)
        fprintf(stderr, "harness: cannot copy the template cluster: %s\n", err);
    free(err);
    free(cp);
    free(template_data);
    if (status != 0)
        goto cleanup;
    long long t_copy = now_ms();

    struct server_def def = pg_server_def(&p);
    result = start_server(&p.pid, &p.port, p.slot, &def, 0);
    if (result < 0)
        goto cleanup;
    p.url = xasprintf("postgresql:///%s?host=%s&port=%d&user=%s", HARNESS_PG_DBNAME, p.socket_dir,
                      p.port, HARNESS_PG_USER);
    p.tcp_url = xasprintf("postgresql://%s@%s:%d/%s", HARNESS_PG_USER, HARNESS_LOOPBACK, p.port,
                          HARNESS_PG_DBNAME);
    if (env_flag("SLUICE_HARNESS_VERBOSE"))
        fprintf(stderr, "harness: postgres total %lld ms (template %lld, copy %lld): %s\n",
                now_ms() - t0, t_template - t0, t_copy - t_template, p.url);
    *pg = p;
    return 0;
cleanup:
    discard_private_dir(p.slot);
    p.slot = 0;
    pg_free(&p);
    memset(pg, 0, sizeof(*pg));
    return result;
}

/* The registry entry for a struct about to be stopped, or an error if not ours. */
static int stop_entry(const char *what, enum reg_kind kind, int slot, pid_t pid)
{
    if (!slot)
        return 0;
    struct reg_entry *e = reg_get(slot, pid, kind);
    if (!e)
        return 0; /* already stopped by harness_stop_all() */
    if (e->owner != getpid()) {
        fprintf(stderr, "harness: %s pid=%ld belongs to process %ld, not %ld\n", what, (long)pid,
                (long)e->owner, (long)getpid());
        return SL_EINVAL;
    }
    reg_stop(e);
    return 0;
}

int harness_pg_stop(struct harness_pg *pg)
{
    int result = stop_entry("postgres", REG_PG, pg->slot, pg->pid);
    if (result == 0)
        pg_free(pg);
    return result;
}

/* --- Redis ------------------------------------------------------------------------------ */

static int redis_connect(int *out_fd, const char *socket_path)
{
    struct sockaddr_un sa = {0};
    sa.sun_family = AF_UNIX;
    if (strlen(socket_path) >= sizeof(sa.sun_path))
        return SL_EINVAL;
    memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return SL_EIO;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return SL_ECONN;
    }
    *out_fd = fd;
    return 0;
}

/*
 * Whether buf[*pos..len) holds one complete RESP2 reply; advances *pos past it. Returns 1
 * (complete), 0 (need more bytes) or -1 (malformed).
 */
static int resp_complete(const char *buf, size_t len, size_t *pos)
{
    if (*pos >= len)
        return 0;
    const char *start = buf + *pos, *crlf = NULL;
    for (const char *c = start; c + 1 < buf + len; c++) {
        if (c[0] == '\r' && c[1] == '\n') {
            crlf = c;
            break;
        }
    }
    if (!crlf)
        return 0;
    char type = start[0];
    long n = strtol(start + 1, NULL, 10);
    *pos = (size_t)(crlf + 2 - buf);
    switch (type) {
    case '+':
    case '-':
    case ':':
        return 1;
    case '$':
        if (n < 0)
            return 1;
        if (len - *pos < (size_t)n + 2)
            return 0;
        *pos += (size_t)n + 2;
        return 1;
    case '*':
        for (long i = 0; i < n; i++) {
            int r = resp_complete(buf, len, pos);
            if (r <= 0)
                return r;
        }
        return 1;
    default:
        return -1;
    }
}

static int redis_commandv(char **out_reply, const char *socket_path, long timeout_ms,
                          const char *const *args, int argc)
{
    struct strbuf req = STRBUF_INIT, reply = STRBUF_INIT;
    strbuf_addf(&req, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        strbuf_addf(&req, "$%zu\r\n%s\r\n", strlen(args[i]), args[i]);
    int fd = -1, result = redis_connect(&fd, socket_path);
    if (result < 0)
        goto cleanup;
    result = SL_EIO;
    for (size_t done = 0; done < req.len;) {
        ssize_t n = send(fd, req.buf + done, req.len - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto cleanup;
        done += (size_t)n;
    }
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        size_t pos = 0;
        int r = resp_complete(reply.buf, reply.len, &pos);
        if (r < 0)
            goto cleanup;
        if (r > 0)
            break;
        long long left = deadline - now_ms();
        struct pollfd pfd = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
            result = SL_ETIMEDOUT;
            goto cleanup;
        }
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto cleanup;
        strbuf_add(&reply, buf, (size_t)n);
    }
    *out_reply = strbuf_detach(&reply, NULL);
    result = 0;
cleanup:
    if (fd >= 0)
        close(fd);
    strbuf_release(&req);
    strbuf_release(&reply);
    return result;
}

int harness_redis_command(char **out_reply, const struct harness_redis *r, const char *arg, ...)
{
    const char **args = NULL;
    size_t alloc = 0;
    int argc = 0;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a; a = va_arg(ap, const char *)) {
        XGROW(args, alloc, (size_t)argc + 1);
        args[argc++] = a;
    }
    va_end(ap);
    int result = redis_commandv(out_reply, r->socket_path, REDIS_TIMEOUT_MS, args, argc);
    free(args);
    return result;
}

static char **redis_build_argv(void *ctx, int port)
{
    const struct harness_redis *r = ctx;
    char *bin = harness_which("redis-server");
    const char *fixed[] = {"--bind",
                           HARNESS_LOOPBACK,
                           "--unixsocketperm",
                           "700",
                           "--save",
                           "",
                           "--appendonly",
                           "no",
                           "--daemonize",
                           "no",
                           "--logfile",
                           "",
                           "--enable-debug-command",
                           "local"};
    size_t nfixed = sizeof(fixed) / sizeof(fixed[0]);
    char **argv = xcalloc(nfixed + 8, sizeof(*argv));
    int i = 0;
    argv[i++] = bin ? bin : xstrdup("/usr/bin/redis-server");
    argv[i++] = xstrdup("--port");
    argv[i++] = xasprintf("%d", port);
    argv[i++] = xstrdup("--unixsocket");
    argv[i++] = xstrdup(r->socket_path);
    argv[i++] = xstrdup("--dir");
    argv[i++] = xstrdup(r->dir);
    for (size_t j = 0; j < nfixed; j++)
        argv[i++] = xstrdup(fixed[j]);
    return argv;
}

static int redis_is_ready(const void *ctx)
{
    const struct harness_redis *r = ctx;
    const char *ping[] = {"PING"};
    char *reply = NULL;
    int ready =
        redis_commandv(&reply, r->socket_path, 1000, ping, 1) == 0 && !strcmp(reply, "+PONG\r\n");
    free(reply);
    return ready;
}

static void redis_free(struct harness_redis *r)
{
    free(r->dir);
    free(r->socket_path);
    free(r->log_path);
    memset(r, 0, sizeof(*r));
}

static struct server_def redis_server_def(struct harness_redis *r)
{
    struct server_def def = {.what = "redis",
                             .kind = REG_REDIS,
                             .stop_signal = SIGTERM,
                             .build_argv = redis_build_argv,
                             .is_ready = redis_is_ready,
                             .ctx = r,
                             .env = server_env,
                             .cwd = r->dir,
                             .log_path = r->log_path};
    return def;
}

int harness_redis_start(struct harness_redis *r)
{
    struct harness_redis s = {0};
    char *bin = harness_which("redis-server");
    int found = bin != NULL;
    free(bin);
    if (!found) {
        fprintf(stderr, "harness: \"redis-server\" not found on PATH\n");
        memset(r, 0, sizeof(*r));
        return SL_ENOENT;
    }
    harness_init();
    int result = make_private_dir(&s.dir, &s.slot, REG_REDIS, "redis");
    if (result < 0)
        goto cleanup;
    s.socket_path = xasprintf("%s/redis.sock", s.dir);
    s.log_path = xasprintf("%s/redis.log", s.dir);
    struct server_def def = redis_server_def(&s);
    result = start_server(&s.pid, &s.port, s.slot, &def, 0);
    if (result < 0)
        goto cleanup;
    *r = s;
    return 0;
cleanup:
    discard_private_dir(s.slot);
    redis_free(&s);
    memset(r, 0, sizeof(*r));
    return result;
}

int harness_redis_stop(struct harness_redis *r)
{
    int result = stop_entry("redis", REG_REDIS, r->slot, r->pid);
    if (result == 0)
        redis_free(r);
    return result;
}

/* --- Restarts ---------------------------------------------------------------------------- */

/*
 * Whether a process of group pgid is still alive. A zombie does not count: it has already
 * let go of its memory (and so of PostgreSQL's shared memory), its sockets and its files.
 * The postmaster's backends are not our children: once it is gone they are re-parented,
 * and may linger as zombies of an init that does not reap.
 */
static int group_alive(pid_t pgid)
{
    DIR *d = opendir("/proc");
    if (!d)
        return kill(-pgid, 0) == 0;
    int alive = 0;
    struct dirent *de;
    while (!alive && (de = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (pid <= 0 || *end)
            continue;
        char path[64];
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
        struct strbuf sb = STRBUF_INIT;
        if (strbuf_read_file(&sb, path, 1 << 16) == 0) {
            /* "pid (comm) state ppid pgrp ...": comm may hold anything, even ")". */
            const char *rp = strrchr(sb.buf, ')');
            if (rp && rp[1] == ' ' && rp[2] && rp[3] == ' ') {
                char state = rp[2], *after_ppid;
                (void)strtol(rp + 4, &after_ppid, 10); /* ppid, not needed */
                long pgrp = strtol(after_ppid, NULL, 10);
                alive = pgrp == (long)pgid && state != 'Z' && state != 'X';
            }
        }
        strbuf_release(&sb);
    }
    closedir(d);
    return alive;
}

/* Waits until group_alive(pgid) is false; SL_ETIMEDOUT after STOP_TIMEOUT_MS. */
static int wait_group_gone(const char *what, pid_t pgid)
{
    long long deadline = now_ms() + STOP_TIMEOUT_MS;
    while (group_alive(pgid)) {
        if (now_ms() > deadline) {
            fprintf(stderr, "harness: %s group %ld still alive after SIGKILL\n", what, (long)pgid);
            return SL_ETIMEDOUT;
        }
        sleep_ms(2);
    }
    return 0;
}

/*
 * The registry entry of a server the caller may kill or start again: started by this
 * process, and (want_running) running or (!want_running) killed. Prints why not.
 */
static int restart_entry(struct reg_entry **out, const char *what, enum reg_kind kind, int slot,
                         pid_t pid, int want_running)
{
    struct reg_entry *e = reg_get(slot, pid, kind);
    if (!e) {
        fprintf(stderr, "harness: %s was never started, or was stopped\n", what);
        return SL_EINVAL;
    }
    if (e->owner != getpid()) {
        fprintf(stderr, "harness: %s pid=%ld belongs to process %ld, not %ld\n", what, (long)pid,
                (long)e->owner, (long)getpid());
        return SL_EINVAL;
    }
    if (want_running != (pid > 0)) {
        fprintf(stderr, "harness: %s is %s\n", what,
                pid > 0 ? "running: kill it before starting it again" : "not running");
        return SL_EINVAL;
    }
    *out = e;
    return 0;
}

/* SIGKILLs the whole group of e's server, reaps the leader, and waits for the rest. */
static int crash_entry(struct reg_entry *e, const char *what)
{
    pid_t pid = e->pid;
    int status;
    kill(-pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    e->pid = 0;
    return wait_group_gone(what, pid);
}

int harness_pg_kill(struct harness_pg *pg, int mode)
{
    struct reg_entry *e;
    int result = restart_entry(&e, "postgres", REG_PG, pg->slot, pg->pid, 1);
    if (result < 0)
        return result;
    pid_t pid = pg->pid;
    if (mode == HARNESS_PG_RESTART_FAST) {
        /* What pg_ctl stop -m fast sends: backends end, a checkpoint, a clean exit. */
        e->stop_signal = SIGINT;
        kill_and_reap(e);
        e->stop_signal = SIGQUIT;
        result = wait_group_gone("postgres", pid);
    } else if (mode == HARNESS_PG_RESTART_CRASH) {
        result = crash_entry(e, "postgres");
        /* The System V interlock segment outlives a SIGKILL. The next postmaster would
         * remove it itself (nobody is attached), but a test may stop here for good. */
        pg_remove_sysv_shm(e->dir);
    } else {
        fprintf(stderr, "harness: unknown restart mode %d\n", mode);
        return SL_EINVAL;
    }
    pg->pid = 0;
    return result;
}

int harness_pg_start_again(struct harness_pg *pg)
{
    struct reg_entry *e;
    int result = restart_entry(&e, "postgres", REG_PG, pg->slot, pg->pid, 0);
    if (result < 0)
        return result;
    struct server_def def = pg_server_def(pg);
    int port = pg->port;
    result = start_server(&pg->pid, &pg->port, pg->slot, &def, port);
    pg->port = port; /* unchanged, whatever happened */
    return result;
}

int harness_pg_restart(struct harness_pg *pg, int mode)
{
    int result = harness_pg_kill(pg, mode);
    return result < 0 ? result : harness_pg_start_again(pg);
}

int harness_redis_kill(struct harness_redis *r, int keep_data)
{
    struct reg_entry *e;
    int result = restart_entry(&e, "redis", REG_REDIS, r->slot, r->pid, 1);
    if (result < 0)
        return result;
    char *dump = xasprintf("%s/dump.rdb", r->dir);
    if (keep_data) {
        /* Redis runs without persistence: write a snapshot for the next start to load. */
        const char *save[] = {"SAVE"};
        char *reply = NULL;
        result = redis_commandv(&reply, r->socket_path, REDIS_TIMEOUT_MS, save, 1);
        if (result == 0 && strcmp(reply, "+OK\r\n") != 0) {
            fprintf(stderr, "harness: redis SAVE answered %s", reply);
            result = SL_EIO;
        }
        free(reply);
    }
    if (result == 0)
        result = crash_entry(e, "redis");
    if (result == 0 && !keep_data && unlink(dump) < 0 && errno != ENOENT)
        result = SL_EIO;
    if (e->pid == 0)
        r->pid = 0;
    free(dump);
    return result;
}

int harness_redis_start_again(struct harness_redis *r)
{
    struct reg_entry *e;
    int result = restart_entry(&e, "redis", REG_REDIS, r->slot, r->pid, 0);
    if (result < 0)
        return result;
    unlink(r->socket_path); /* the dead server's; Redis would replace it too */
    struct server_def def = redis_server_def(r);
    int port = r->port;
    result = start_server(&r->pid, &r->port, r->slot, &def, port);
    r->port = port;
    return result;
}

int harness_redis_restart(struct harness_redis *r, int keep_data)
{
    int result = harness_redis_kill(r, keep_data);
    return result < 0 ? result : harness_redis_start_again(r);
}

/* --- Git ------------------------------------------------------------------------------- */

static char git_bin[PATH_MAX];
static char git_exec_path[PATH_MAX];

static const char *git_path(void)
{
    if (!git_bin[0]) {
        char *g = harness_which("git");
        if (g && strlen(g) < sizeof(git_bin))
            memcpy(git_bin, g, strlen(g) + 1);
        free(g);
    }
    return git_bin[0] ? git_bin : NULL;
}

/* Runs git with argv (argv[0] ignored) in the harness's environment. */
static int git_runv(char **out, char **argv)
{
    const char *git = git_path();
    if (!git) {
        fprintf(stderr, "harness: \"git\" not found on PATH\n");
        return SL_ENOENT;
    }
    argv[0] = (char *)git;
    struct spawn sp = {.argv = argv, .env = git_env};
    char *o = NULL, *err = NULL;
    int status = run_capture(&sp, &o, &err);
    if (status != 0) {
        struct strbuf cmd = STRBUF_INIT;
        for (char **a = argv + 1; *a; a++)
            strbuf_addf(&cmd, "%s%s", a == argv + 1 ? "" : " ", *a);
        fprintf(stderr, "harness: \"git %s\" failed (status %d): %s", cmd.buf, status, err);
        strbuf_release(&cmd);
        free(o);
        free(err);
        return SL_EIO;
    }
    free(err);
    if (out)
        *out = o;
    else
        free(o);
    return 0;
}

int harness_git_run(char **out, const char *worktree, const char *arg, ...)
{
    char **argv = NULL;
    size_t alloc = 0, n = 0;
    XGROW(argv, alloc, 4);
    argv[n++] = NULL; /* git itself, filled in by git_runv() */
    if (worktree) {
        argv[n++] = (char *)"-C";
        argv[n++] = (char *)worktree;
    }
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a; a = va_arg(ap, const char *)) {
        XGROW(argv, alloc, n + 2);
        argv[n++] = (char *)a;
    }
    va_end(ap);
    argv[n] = NULL;
    int result = git_runv(out, argv);
    free(argv);
    return result;
}

static const char *git_daemon_path(void)
{
    if (git_exec_path[0])
        return git_exec_path;
    char *out = NULL;
    if (harness_git_run(&out, NULL, "--exec-path", NULL) == 0) {
        out[strcspn(out, "\n")] = '\0';
        snprintf(git_exec_path, sizeof(git_exec_path), "%s/git-daemon", out);
    }
    free(out);
    return git_exec_path[0] ? git_exec_path : NULL;
}

static char **git_build_argv(void *ctx, int port)
{
    const struct harness_git *g = ctx;
    char **argv = xcalloc(12, sizeof(*argv));
    int i = 0;
    /* git-daemon itself rather than `git daemon`, which would sit in between as a parent. */
    argv[i++] = xstrdup(git_daemon_path());
    argv[i++] = xstrdup("--verbose");
    argv[i++] = xstrdup("--reuseaddr");
    argv[i++] = xstrdup("--informative-errors");
    argv[i++] = xstrdup("--export-all");
    argv[i++] = xstrdup("--enable=receive-pack");
    argv[i++] = xstrdup("--listen=" HARNESS_LOOPBACK);
    argv[i++] = xasprintf("--port=%d", port);
    argv[i++] = xasprintf("--base-path=%s", g->repos_dir);
    return argv;
}

/*
 * Ready once the daemon logs that it listens. Connecting to the port would not do: when
 * another process holds the port, the connection reaches it while our daemon exits.
 */
static int git_is_ready(const void *ctx)
{
    const struct harness_git *g = ctx;
    char needle[64];
    snprintf(needle, sizeof(needle), "[%ld] Ready to rumble", (long)g->pid);
    return file_contains(g->log_path, 0, needle);
}

static void git_free(struct harness_git *g)
{
    free(g->dir);
    free(g->repos_dir);
    free(g->log_path);
    memset(g, 0, sizeof(*g));
}

int harness_git_start(struct harness_git *g)
{
    struct harness_git s = {0};
    if (!git_path() || !git_daemon_path()) {
        fprintf(stderr, "harness: \"git\" or \"git-daemon\" not found\n");
        memset(g, 0, sizeof(*g));
        return SL_ENOENT;
    }
    harness_init();
    int result = make_private_dir(&s.dir, &s.slot, REG_GIT, "git");
    if (result < 0)
        goto cleanup;
    s.repos_dir = xasprintf("%s/repos", s.dir);
    s.log_path = xasprintf("%s/git-daemon.log", s.dir);
    result = SL_EIO;
    if (mkdir(s.repos_dir, 0755) < 0)
        goto cleanup;
    /* git_is_ready() reads s.pid and s.log_path; start_server() sets the pid first. */
    struct server_def def = {.what = "git-daemon",
                             .kind = REG_GIT,
                             .stop_signal = SIGTERM,
                             .build_argv = git_build_argv,
                             .is_ready = git_is_ready,
                             .ctx = &s,
                             .env = git_env,
                             .cwd = s.dir,
                             .log_path = s.log_path};
    result = start_server(&s.pid, &s.port, s.slot, &def, 0);
    if (result < 0)
        goto cleanup;
    *g = s;
    return 0;
cleanup:
    discard_private_dir(s.slot);
    git_free(&s);
    memset(g, 0, sizeof(*g));
    return result;
}

int harness_git_stop(struct harness_git *g)
{
    int result = stop_entry("git-daemon", REG_GIT, g->slot, g->pid);
    if (result == 0)
        git_free(g);
    return result;
}

char *harness_git_url(const struct harness_git *g, const char *name)
{
    return xasprintf("git://%s:%d/%s", HARNESS_LOOPBACK, g->port, name);
}

char *harness_git_repo_path(const struct harness_git *g, const char *name)
{
    return xasprintf("%s/%s", g->repos_dir, name);
}

int harness_git_init_bare(const struct harness_git *g, const char *name)
{
    char *path = harness_git_repo_path(g, name);
    struct stat st;
    int result = SL_EEXIST;
    if (stat(path, &st) == 0) {
        fprintf(stderr, "harness: repository \"%s\" already exists\n", path);
        goto cleanup;
    }
    result = harness_git_run(NULL, NULL, "init", "-q", "--bare", path, NULL);
cleanup:
    free(path);
    return result;
}

int harness_git_clone(char **out_dir, struct harness_git *g, const char *name)
{
    char *base = xstrdup(name);
    for (char *c = base; *c; c++) {
        if (*c == '/')
            *c = '_';
    }
    char *dir = xasprintf("%s/work/%s.%u", g->dir, base, ++g->n_worktrees);
    char *url = harness_git_url(g, name);
    int result = mkdir_parents(dir);
    if (result == 0)
        result = harness_git_run(NULL, NULL, "clone", "-q", url, dir, NULL);
    free(base);
    free(url);
    if (result < 0) {
        free(dir);
        return result;
    }
    *out_dir = dir;
    return 0;
}

int harness_git_write_file(const char *worktree, const char *rel_path, const char *content)
{
    char *path = xasprintf("%s/%s", worktree, rel_path);
    int result = mkdir_parents(path);
    if (result == 0)
        result = write_file(path, content, O_TRUNC);
    free(path);
    return result;
}

int harness_git_remove_file(const char *worktree, const char *rel_path)
{
    char *path = xasprintf("%s/%s", worktree, rel_path);
    int result = 0;
    if (unlink(path) < 0) {
        fprintf(stderr, "harness: cannot remove \"%s\": %s\n", path, strerror(errno));
        result = errno == ENOENT ? SL_ENOENT : SL_EIO;
    }
    free(path);
    return result;
}

int harness_git_commit(char **out_sha, const char *worktree, const char *message)
{
    int result = harness_git_run(NULL, worktree, "add", "-A", NULL);
    if (result == 0)
        result = harness_git_run(NULL, worktree, "commit", "-q", "-m", message, NULL);
    if (result == 0 && out_sha) {
        char *sha = NULL;
        result = harness_git_run(&sha, worktree, "rev-parse", "HEAD", NULL);
        if (result == 0) {
            sha[strcspn(sha, "\n")] = '\0';
            *out_sha = sha;
        }
    }
    return result;
}

int harness_git_push(const char *worktree, int force)
{
    return harness_git_run(NULL, worktree, "push", "-q", force ? "--force" : "--no-force", "origin",
                           "HEAD:refs/heads/main", NULL);
}

/* --- S3 (s3rver) ------------------------------------------------------------------------- */

static int s3_is_ready(const void *ctx)
{
    const struct harness_s3 *s = ctx;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)s->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static char **s3_build_argv(void *ctx, int port)
{
    const struct harness_s3 *s = ctx;
    char *bin = harness_which("s3rver");
    char **argv = xcalloc(16, sizeof(*argv));
    int i = 0;
    argv[i++] = bin ? bin : xstrdup("/usr/bin/s3rver");
    argv[i++] = xstrdup("--directory");
    argv[i++] = xstrdup(s->data_dir);
    argv[i++] = xstrdup("--address");
    argv[i++] = xstrdup(HARNESS_LOOPBACK);
    argv[i++] = xstrdup("--port");
    argv[i++] = xasprintf("%d", port);
    argv[i++] = xstrdup("--no-vhost-buckets");
    argv[i++] = xstrdup("--configure-bucket");
    argv[i++] = xstrdup(s->bucket);
    return argv;
}

static void s3_free(struct harness_s3 *s)
{
    free(s->dir);
    free(s->data_dir);
    free(s->log_path);
    free(s->endpoint);
    free(s->bucket);
    memset(s, 0, sizeof(*s));
}

int harness_s3_start(struct harness_s3 *s, const char *bucket)
{
    struct harness_s3 t = {0};
    char *bin = harness_which("s3rver");
    int found = bin != NULL;
    free(bin);
    if (!found) {
        fprintf(stderr, "harness: \"s3rver\" not found on PATH (make deps installs it)\n");
        memset(s, 0, sizeof(*s));
        return SL_ENOENT;
    }
    harness_init();
    int result = make_private_dir(&t.dir, &t.slot, REG_S3, "s3");
    if (result < 0)
        goto cleanup;
    t.data_dir = xasprintf("%s/data", t.dir);
    t.log_path = xasprintf("%s/s3rver.log", t.dir);
    t.bucket = xstrdup(bucket && *bucket ? bucket : HARNESS_S3_BUCKET);
    if (mkdir(t.data_dir, 0755) < 0) {
        result = SL_EIO;
        goto cleanup;
    }
    struct server_def def = {.what = "s3rver",
                             .kind = REG_S3,
                             .stop_signal = SIGTERM,
                             .build_argv = s3_build_argv,
                             .is_ready = s3_is_ready,
                             .ctx = &t,
                             .env = server_env,
                             .cwd = t.dir,
                             .log_path = t.log_path};
    result = start_server(&t.pid, &t.port, t.slot, &def, 0);
    if (result < 0)
        goto cleanup;
    t.endpoint = xasprintf("http://" HARNESS_LOOPBACK ":%d", t.port);
    *s = t;
    return 0;
cleanup:
    discard_private_dir(t.slot);
    s3_free(&t);
    memset(s, 0, sizeof(*s));
    return result;
}

int harness_s3_stop(struct harness_s3 *s)
{
    int result = stop_entry("s3rver", REG_S3, s->slot, s->pid);
    if (result == 0)
        s3_free(s);
    return result;
}
