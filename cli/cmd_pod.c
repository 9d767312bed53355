/*
 * cli/cmd_pod.c - sluice pod: the pod-side helper of the kubernetes executor.
 *
 *   sluice pod install DEST
 *       copies this binary to DEST (mode 0755), and beside it the dynamic loader and every
 *       shared library it runs with (as /proc/self/maps lists them) as <dir>/ld.so and
 *       <dir>/lib/: the init container of a step pod runs it from the sluice image into an
 *       emptyDir, and the main container starts the helper as
 *       <dir>/ld.so --library-path <dir>/lib DEST ..., so it needs nothing from the step's
 *       image (any x86-64 Linux image: distroless, Alpine, another glibc)
 *   sluice pod exec [--message-file F] [--mkdir DIR]... [--param NAME=PATH]...
 *                   [--artifacts VAR] [--handshake DIR] -- ARGV...
 *       runs ARGV as the step (its own process group; SIGTERM, SIGINT and SIGHUP are
 *       passed on to it), then, if it exited 0, reads each output param from PATH
 *       (relative to the working directory; one trailing newline trimmed), checks that
 *       the declared output artifacts of the spec in the variable VAR exist (the
 *       repository the SLUICE_ARTIFACTS_* variables describe is "none" there: with a
 *       repository, the stage-out sidecar stores them), and writes {"outputs": {NAME:
 *       value, ...}} to F, the container's terminationMessagePath. With --handshake it
 *       touches DIR/step.alive while the step runs (every KUBE_HEARTBEAT_MS) and, once
 *       all that is done, writes DIR/step.done ({"succeeded": bool, "exit_code": N}; a
 *       write and a rename, so it is never seen half written) for the sidecar
 *   sluice pod stage-out --handshake DIR --spec-env VAR --workdir WD [--message-file F]
 *                        [--heartbeat-timeout S] [--start-timeout S]
 *       the sidecar: waits for DIR/step.done; when the step succeeded, stores the
 *       declared output artifacts of the spec in VAR from WD into the repository of the
 *       SLUICE_ARTIFACTS_* variables (no sluice.yaml is read; progress lines on stderr,
 *       the container's log); when it did not, stores nothing. It gives up when
 *       DIR/step.alive stops changing for S seconds (default 60: the main container died
 *       without a word - OOMKilled, killed) or never appears within its start timeout
 *       (default 3600 s), so a pod never waits forever for it
 *
 * Exit status of exec: the step's (128 + N when killed by signal N). When the step
 * succeeded but an output param is missing, has a '..' component, or the outputs do not
 * fit in a termination message (4096 bytes of JSON), or an output artifact is missing,
 * F gets {"error": "...", "kind": "step" | "error" | "transient"} (kind: who is to blame,
 * as worker/artifacts.h's blame) and the exit status is 1; the worker reports that error
 * as the reason with that failure kind. 2: a usage error.
 * Exit status of stage-out: 0 stored (or nothing to store: the step failed); 1 an output
 * missing or not stored, or the wait given up, with {"error", "kind"} in F; 2 usage.
 * docs/kubernetes.md ("Output params", "Artifacts") is the contract with
 * worker/kube_exec.c.
 */
/* dl_iterate_phdr() is a GNU extension: the loaded objects, by the names they were loaded by */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "common/config.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "worker/artifacts.h"
#include "worker/kube.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_HEARTBEAT_TIMEOUT_S 60
#define DEFAULT_START_TIMEOUT_S     3600

static void pod_usage(FILE *out)
{
    fprintf(out, "usage: sluice pod install DEST\n"
                 "       sluice pod exec [--message-file F] [--mkdir DIR]... "
                 "[--param NAME=PATH]... [--artifacts VAR] [--handshake DIR] -- ARGV...\n"
                 "       sluice pod stage-out --handshake DIR --spec-env VAR --workdir WD "
                 "[--message-file F]\n"
                 "                            [--heartbeat-timeout SECONDS] "
                 "[--start-timeout SECONDS]\n");
}

/* Copies src to dest (via dest.tmp and a rename) with mode. Returns 0 or 1 (reported). */
static int copy_file(const char *src, const char *dest, mode_t mode)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    char *tmp = xasprintf("%s.tmp", dest);
    int out = -1, rc = 1;
    if (in >= 0)
        out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (in < 0 || out < 0) {
        fprintf(stderr, "sluice pod install: cannot copy '%s' to '%s': %s\n", src, dest,
                strerror(errno));
        goto cleanup;
    }
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof(buf))) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0) {
                fprintf(stderr, "sluice pod install: write '%s': %s\n", tmp, strerror(errno));
                goto cleanup;
            }
            off += w;
        }
    }
    if (n < 0 || fchmod(out, mode) < 0 || close(out) < 0) {
        out = -1;
        fprintf(stderr, "sluice pod install: '%s': %s\n", tmp, strerror(errno));
        goto cleanup;
    }
    out = -1;
    if (rename(tmp, dest) < 0) {
        fprintf(stderr, "sluice pod install: rename to '%s': %s\n", dest, strerror(errno));
        goto cleanup;
    }
    rc = 0;
cleanup:
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

struct lib_walk {
    const char *libdir, *dir;
    int rc;
    bool have_loader;
};

/* One loaded object: copied to <libdir>/<the name it was loaded by> (its SONAME, e.g.
 * libcurl.so.4, which is what the loader looks for), and the loader also to <dir>/ld.so. */
static int copy_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct lib_walk *w = arg;
    const char *path = info->dlpi_name;
    if (w->rc || !path || path[0] != '/')
        return 0; /* the executable itself, or the vDSO */
    const char *base = strrchr(path, '/') + 1;
    char *dest = xasprintf("%s/%s", w->libdir, base);
    struct stat st;
    if (stat(dest, &st) < 0)
        w->rc = copy_file(path, dest, 0755);
    free(dest);
    if (w->rc == 0 && !strncmp(base, "ld-linux", 8)) {
        char *loader = xasprintf("%s/ld.so", w->dir);
        w->rc = copy_file(path, loader, 0755);
        free(loader);
        w->have_loader = true;
    }
    return 0;
}

/* Copies the shared objects this process runs with into <dir>/lib, and the dynamic loader
 * also as <dir>/ld.so. */
static int install_libraries(const char *dir)
{
    char *libdir = xasprintf("%s/lib", dir);
    struct lib_walk w = {libdir, dir, sl_mkdir_p(libdir) < 0 ? 1 : 0, false};
    if (w.rc == 0)
        dl_iterate_phdr(copy_object, &w);
    if (w.rc == 0 && !w.have_loader) {
        fprintf(stderr, "sluice pod install: no dynamic loader among this process's objects\n");
        w.rc = 1;
    }
    free(libdir);
    return w.rc;
}

/* sluice pod install DEST */
static int pod_install(const char *dest)
{
    char *slash = strrchr(dest, '/');
    char *dir = slash && slash != dest ? xstrndup(dest, (size_t)(slash - dest)) : xstrdup(".");
    (void)sl_mkdir_p(dir);
    int rc = copy_file("/proc/self/exe", dest, 0755);
    if (rc == 0)
        rc = install_libraries(dir);
    free(dir);
    return rc;
}

static bool has_dotdot(const char *path)
{
    for (const char *p = path; (p = strstr(p, "..")); p += 2)
        if ((p == path || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
            return true;
    return false;
}

/* Reads the params (NAME=PATH) into a JSON object text; on failure *error is set. */
static char *read_params(char **error, char **params, size_t n)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *outs = cJSON_AddObjectToObject(root, "outputs");
    char *text = NULL;
    for (size_t i = 0; i < n; i++) {
        char *eq = strchr(params[i], '=');
        char *name = xstrndup(params[i], (size_t)(eq - params[i]));
        const char *path = eq + 1;
        struct strbuf sb = STRBUF_INIT;
        int rc = has_dotdot(path) ? 0 : strbuf_read_file(&sb, path, KUBE_TERMINATION_MAX);
        if (has_dotdot(path)) {
            *error = xasprintf("output param '%s' path '%s' has a '..' component", name, path);
        } else if (rc == SL_ETOOBIG) {
            *error = xasprintf("output param '%s' (%s) is over the %d bytes of a Kubernetes "
                               "termination message: use an output artifact for large values",
                               name, path, KUBE_TERMINATION_MAX);
        } else if (rc < 0) {
            *error = xasprintf("missing output param '%s' (%s)", name, path);
        } else {
            if (sb.len && sb.buf[sb.len - 1] == '\n')
                sb.buf[--sb.len] = '\0';
            cJSON_AddStringToObject(outs, name, sb.buf);
        }
        strbuf_release(&sb);
        free(name);
        if (*error)
            goto cleanup;
    }
    text = cJSON_PrintUnformatted(root);
    if (strlen(text) > KUBE_TERMINATION_MAX) {
        *error = xasprintf("output params take %zu bytes, over the %d bytes of a Kubernetes "
                           "termination message: use an output artifact for large values",
                           strlen(text), KUBE_TERMINATION_MAX);
        free(text);
        text = NULL;
    }
cleanup:
    cJSON_Delete(root);
    return text;
}

static void write_message(const char *path, const char *text)
{
    if (!path)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "sluice pod: cannot write '%s': %s\n", path, strerror(errno));
        return;
    }
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        fprintf(stderr, "sluice pod: cannot write '%s': %s\n", path, strerror(errno));
    close(fd);
}

/* {"error": error, "kind": kind} into the message file F, and the error on stderr. */
static void write_error(const char *path, const char *who, const char *error, const char *kind)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "error", error);
    cJSON_AddStringToObject(e, "kind", kind);
    char *etext = cJSON_PrintUnformatted(e);
    fprintf(stderr, "sluice pod %s: %s\n", who, error);
    write_message(path, etext);
    free(etext);
    cJSON_Delete(e);
}

/* --- the handshake with the stage-out sidecar (worker/kube.h) ----------------------------- */

/* The helper is alive: DIR/step.alive created, or its times set to now. */
static void handshake_beat(const char *dir)
{
    char *path = xasprintf("%s/" KUBE_HANDSHAKE_ALIVE, dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || futimens(fd, NULL) < 0)
        fprintf(stderr, "sluice pod exec: cannot touch '%s': %s\n", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(path);
}

/* The step has ended and the helper has done its part: DIR/step.done, atomically. */
static void handshake_done(const char *dir, bool succeeded, int exit_code)
{
    char *path = xasprintf("%s/" KUBE_HANDSHAKE_DONE, dir);
    char *tmp = xasprintf("%s.tmp", path);
    char text[64];
    int len = snprintf(text, sizeof(text), "{\"succeeded\": %s, \"exit_code\": %d}\n",
                       succeeded ? "true" : "false", exit_code);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = fd >= 0 && write(fd, text, (size_t)len) == len;
    if (fd >= 0 && close(fd) < 0)
        ok = false;
    if (!ok || rename(tmp, path) < 0) {
        fprintf(stderr, "sluice pod exec: cannot write '%s': %s\n", path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    free(path);
}

static const char *blame_kind(enum artifacts_blame blame)
{
    switch (blame) {
    case ARTIFACTS_BLAME_STEP:
        return "step";
    case ARTIFACTS_BLAME_TRANSIENT:
        return "transient";
    case ARTIFACTS_BLAME_ERROR:
        break;
    }
    return "error";
}

/* Stores the declared output artifacts of the spec in the variable var from the working
 * directory (progress lines on stderr, the container's log). Returns NULL, or the error
 * (newly allocated) with *kind set to who is to blame. */
static char *store_outputs(const char *var, const char **kind)
{
    struct strbuf err = STRBUF_INIT;
    struct sl_config c;
    struct artifacts_repo *repo = NULL;
    cJSON *spec = NULL;
    char cwd[4096];
    *kind = "error";
    const char *text = getenv(var);
    if (!text || !cJSON_IsObject(spec = cJSON_Parse(text))) {
        strbuf_addf(&err, "output artifacts: the variable '%s' holds no spec", var);
        goto cleanup;
    }
    /* the repository from SLUICE_ARTIFACTS_* only: never a sluice.yaml of the image */
    struct strbuf cerr = STRBUF_INIT;
    int rc = sl_config_load(&c, "/dev/null", &cerr);
    if (rc == 0)
        rc = artifacts_open(&repo, &c, &cerr);
    sl_config_release(&c);
    if (rc < 0) {
        while (cerr.len && cerr.buf[cerr.len - 1] == '\n')
            cerr.buf[--cerr.len] = '\0';
        strbuf_addf(&err, "output artifacts: the repository's settings: %s", cerr.buf);
        strbuf_release(&cerr);
        goto cleanup;
    }
    strbuf_release(&cerr);
    if (!getcwd(cwd, sizeof(cwd))) {
        strbuf_addf(&err, "output artifacts: getcwd: %s", strerror(errno));
        goto cleanup;
    }
    enum artifacts_blame blame = ARTIFACTS_BLAME_ERROR;
    if (artifacts_stage_out(repo, spec, cwd, 2, NULL, &blame, &err) < 0)
        *kind = blame_kind(blame);
cleanup:
    artifacts_close(repo);
    cJSON_Delete(spec);
    if (err.len == 0) {
        strbuf_release(&err);
        return NULL;
    }
    return strbuf_detach(&err, NULL);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* sluice pod exec ... -- ARGV */
static int pod_exec(int argc, char **argv)
{
    const char *message_file = NULL, *artifacts_var = NULL, *handshake = NULL;
    char **params = xcalloc((size_t)argc, sizeof(char *));
    size_t n_params = 0;
    int i = 1, rc = 2;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *v;
        if ((v = cli_flag_value(argc, argv, &i, "--message-file"))) {
            message_file = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--artifacts"))) {
            artifacts_var = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--handshake"))) {
            handshake = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--mkdir"))) {
            int e = sl_mkdir_p(v);
            if (e < 0)
                fprintf(stderr, "sluice pod exec: cannot create '%s': %s\n", v, strerror(-e));
        } else if ((v = cli_flag_value(argc, argv, &i, "--param")) && strchr(v, '=') &&
                   v[0] != '=') {
            params[n_params++] = (char *)v;
        } else {
            fprintf(stderr, "sluice pod exec: unknown or incomplete argument '%s'\n", argv[i]);
            pod_usage(stderr);
            goto cleanup;
        }
    }
    if (i + 1 >= argc) {
        pod_usage(stderr);
        goto cleanup;
    }
    char **child_argv = argv + i + 1;

    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, &old);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "sluice pod exec: fork: %s\n", strerror(errno));
        rc = 1;
        goto cleanup;
    }
    if (pid == 0) {
        setpgid(0, 0);
        sigprocmask(SIG_SETMASK, &old, NULL);
        execvp(child_argv[0], child_argv);
        fprintf(stderr, "sluice pod exec: cannot run '%s': %s\n", child_argv[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    setpgid(pid, pid);
    int status = 0;
    int64_t beaten = 0;
    for (;;) {
        /* with a sidecar waiting, the step's life shows as a heartbeat */
        if (handshake && mono_ms() - beaten >= KUBE_HEARTBEAT_MS) {
            handshake_beat(handshake);
            beaten = mono_ms();
        }
        struct timespec beat = {KUBE_HEARTBEAT_MS / 1000, (KUBE_HEARTBEAT_MS % 1000) * 1000000L};
        int sig = handshake ? sigtimedwait(&set, NULL, &beat) : sigwaitinfo(&set, NULL);
        if (sig == SIGCHLD) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid)
                break;
            continue;
        }
        if (sig > 0)
            kill(-pid, sig); /* pass it on to the step's process group */
    }
    kill(-pid, SIGKILL); /* nothing the step started outlives it */
    if (WIFSIGNALED(status)) {
        rc = 128 + WTERMSIG(status);
        goto cleanup;
    }
    rc = WEXITSTATUS(status);
    if (rc != 0)
        goto cleanup;
    sigprocmask(SIG_SETMASK, &old, NULL); /* the step is gone: a stop now stops the helper */
    char *error = NULL;
    const char *kind = "step";
    char *text = read_params(&error, params, n_params);
    if (!error && artifacts_var)
        error = store_outputs(artifacts_var, &kind);
    if (error) {
        write_error(message_file, "exec", error, kind);
        free(error);
        rc = 1;
    } else {
        write_message(message_file, text);
    }
    free(text);
cleanup:
    if (handshake) /* last: the sidecar may store the outputs now, or give up at once */
        handshake_done(handshake, rc == 0, rc);
    free(params);
    return rc;
}

/*
 * Waits for the helper's DIR/step.done and sets *succeeded from it. Returns NULL, or why
 * the wait was given up (newly allocated): DIR/step.alive unchanged for beat_timeout_ms
 * after it was first seen, or never seen within start_timeout_ms. The directory is
 * watched with inotify where it can be, and looked at every second anyway (a kernel
 * without inotify, an event missed).
 */
static char *wait_for_step(bool *succeeded, const char *dir, int64_t beat_timeout_ms,
                           int64_t start_timeout_ms)
{
    char *done = xasprintf("%s/" KUBE_HANDSHAKE_DONE, dir);
    char *alive = xasprintf("%s/" KUBE_HANDSHAKE_ALIVE, dir);
    char *error = NULL;
    int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (in >= 0 && inotify_add_watch(in, dir, IN_CREATE | IN_MOVED_TO | IN_ATTRIB) < 0) {
        close(in);
        in = -1;
    }
    int64_t start = mono_ms(), changed = 0;
    struct timespec last = {0, 0};
    for (;;) {
        struct strbuf sb = STRBUF_INIT;
        if (strbuf_read_file(&sb, done, 4096) == 0) {
            cJSON *m = cJSON_Parse(sb.buf);
            *succeeded = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "succeeded"));
            cJSON_Delete(m);
            strbuf_release(&sb);
            break;
        }
        strbuf_release(&sb);
        int64_t now = mono_ms();
        struct stat st;
        if (stat(alive, &st) == 0 &&
            (st.st_mtim.tv_sec != last.tv_sec || st.st_mtim.tv_nsec != last.tv_nsec)) {
            last = st.st_mtim;
            changed = now;
        }
        if (changed && now - changed >= beat_timeout_ms) {
            error = xasprintf("the main container stopped without saying how the step ended "
                              "(no heartbeat in %s for %lld s): no output artifact stored",
                              dir, (long long)(beat_timeout_ms / 1000));
            break;
        }
        if (!changed && now - start >= start_timeout_ms) {
            error = xasprintf("the step never started (no heartbeat in %s within %lld s): no "
                              "output artifact stored",
                              dir, (long long)(start_timeout_ms / 1000));
            break;
        }
        if (in >= 0) {
            struct pollfd pfd = {in, POLLIN, 0};
            if (poll(&pfd, 1, 1000) > 0) {
                char buf[4096];
                while (read(in, buf, sizeof(buf)) > 0)
                    ; /* what changed is read from the files themselves */
            }
        } else {
            nanosleep(&(struct timespec){0, 200000000L}, NULL);
        }
    }
    if (in >= 0)
        close(in);
    free(done);
    free(alive);
    return error;
}

/* A whole number of seconds > 0, or -1. */
static int64_t parse_seconds(const char *s)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v <= 0 || v > 365LL * 86400)
        return -1;
    return (int64_t)v;
}

/* sluice pod stage-out --handshake DIR --spec-env VAR --workdir WD [--message-file F]
 *                      [--heartbeat-timeout S] [--start-timeout S] */
static int pod_stage_out(int argc, char **argv)
{
    const char *message_file = NULL, *handshake = NULL, *var = NULL, *workdir = NULL;
    int64_t beat_s = DEFAULT_HEARTBEAT_TIMEOUT_S, start_s = DEFAULT_START_TIMEOUT_S;
    for (int i = 1; i < argc; i++) {
        const char *v, *arg = argv[i];
        if ((v = cli_flag_value(argc, argv, &i, "--message-file"))) {
            message_file = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--handshake"))) {
            handshake = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--spec-env"))) {
            var = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--workdir"))) {
            workdir = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--heartbeat-timeout")) &&
                   (beat_s = parse_seconds(v)) > 0) {
            continue;
        } else if ((v = cli_flag_value(argc, argv, &i, "--start-timeout")) &&
                   (start_s = parse_seconds(v)) > 0) {
            continue;
        } else {
            fprintf(stderr, "sluice pod stage-out: unknown, incomplete or bad argument '%s'\n",
                    arg);
            pod_usage(stderr);
            return 2;
        }
    }
    if (!handshake || !var || !workdir) {
        fprintf(stderr, "sluice pod stage-out: --handshake, --spec-env and --workdir are "
                        "required\n");
        pod_usage(stderr);
        return 2;
    }
    bool succeeded = false;
    char *error = wait_for_step(&succeeded, handshake, beat_s * 1000, start_s * 1000);
    const char *kind = "transient";
    if (!error && !succeeded) {
        fprintf(stderr, "sluice pod stage-out: the step did not succeed: no output artifact "
                        "stored\n");
        return 0;
    }
    if (!error && chdir(workdir) < 0) {
        error = xasprintf("output artifacts: cannot enter the working directory '%s': %s", workdir,
                          strerror(errno));
        kind = "error";
    }
    if (!error)
        error = store_outputs(var, &kind);
    if (!error)
        return 0;
    write_error(message_file, "stage-out", error, kind);
    free(error);
    return 1;
}

int cmd_pod(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        pod_usage(stdout);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "install"))
        return pod_install(argv[2]);
    if (argc >= 2 && !strcmp(argv[1], "exec"))
        return pod_exec(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "stage-out"))
        return pod_stage_out(argc - 1, argv + 1);
    pod_usage(stderr);
    return 2;
}
