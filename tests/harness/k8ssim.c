/*
 * tests/harness/k8ssim.c - start, stop and poke the Kubernetes API simulator.
 *
 * The simulator is /usr/bin/python3 tests/k8s/sim.py in a session of its own, writing its
 * port to a file once it listens; its stdout and stderr go to sim.log in its private
 * directory. With TLS, a private CA, a server certificate for 127.0.0.1 and a client pair
 * are made with the openssl command first. Control requests are one HTTP/1.1 request per
 * connection ("Connection: close"), read to EOF: no client library involved.
 */
#include "tests/harness/k8ssim.h"
#include "tests/harness/harness.h"
#include "tests/testutil.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PYTHON        "/usr/bin/python3"
#define START_TIMEOUT 30000
#define MAX_OWNED     16

static struct {
    pid_t owner, pid;
    char dir[512];
} owned[MAX_OWNED];
static bool atexit_done;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

const char *harness_k8s_schema_path(void)
{
    static char buf[4096];
    const char *env = getenv("SLUICE_K8S_SCHEMA");
    if (env && *env)
        return env;
    if (!buf[0])
        snprintf(buf, sizeof(buf), "%s/../shared/vectors/kubernetes/api__v1_openapi.json",
                 test_src_dir());
    return buf;
}

static const char *root_dir(void)
{
    const char *env = getenv("SLUICE_HARNESS_TMPDIR");
    if (env && *env == '/')
        return env;
    if (access("/dev/shm", W_OK | X_OK) == 0)
        return "/dev/shm";
    const char *t = getenv("TMPDIR");
    return t && *t == '/' ? t : "/tmp";
}

static void remove_tree(const char *dir)
{
    if (!dir || !*dir || getenv("SLUICE_HARNESS_KEEP"))
        return;
    char *argv[] = {"/bin/rm", "-rf", (char *)dir, NULL};
    test_run(argv, NULL, NULL);
}

/* Stops a simulator process group: SIGTERM, then SIGKILL after 10 s; reaps the leader. */
static void kill_group(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(-pid, SIGTERM);
    long long end = now_ms() + 10000;
    int status;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (now_ms() > end) {
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        sleep_ms(10);
    }
    kill(-pid, SIGKILL); /* anything the simulator left in its group */
}

static void on_exit_stop(void)
{
    for (int i = 0; i < MAX_OWNED; i++) {
        if (owned[i].owner != getpid() || !owned[i].pid)
            continue;
        kill_group(owned[i].pid);
        remove_tree(owned[i].dir);
        owned[i].pid = 0;
    }
}

static int run_quiet(char *const argv[])
{
    char *out = NULL, *err = NULL;
    int rc = test_run(argv, &out, &err);
    if (rc != 0)
        fprintf(stderr, "harness: k8ssim: %s failed (%d): %s", argv[0], rc, err ? err : "");
    free(out);
    free(err);
    return rc == 0 ? 0 : SL_EIO;
}

/* A CA, a server certificate for 127.0.0.1 and a client pair under dir. */
static int make_certs(const char *dir)
{
    char *ca_key = xasprintf("%s/ca.key", dir), *ca = xasprintf("%s/ca.crt", dir);
    char *key = xasprintf("%s/server.key", dir), *csr = xasprintf("%s/server.csr", dir);
    char *crt = xasprintf("%s/server.crt", dir), *ext = xasprintf("%s/san.ext", dir);
    char *ckey = xasprintf("%s/client.key", dir), *ccsr = xasprintf("%s/client.csr", dir);
    char *ccrt = xasprintf("%s/client.crt", dir);
    FILE *f = fopen(ext, "w");
    int rc = f ? 0 : SL_EIO;
    if (f) {
        fputs("subjectAltName=IP:127.0.0.1,DNS:localhost\n", f);
        fclose(f);
    }
    char *a1[] = {"/usr/bin/openssl",
                  "req",
                  "-x509",
                  "-newkey",
                  "rsa:2048",
                  "-nodes",
                  "-keyout",
                  ca_key,
                  "-out",
                  ca,
                  "-days",
                  "2",
                  "-subj",
                  "/CN=sluice-test-ca",
                  NULL};
    char *a2[] = {"/usr/bin/openssl", "req", "-newkey", "rsa:2048", "-nodes",
                  "-keyout",          key,   "-out",    csr,        "-subj",
                  "/CN=127.0.0.1",    NULL};
    char *a3[] = {
        "/usr/bin/openssl", "x509", "-req", "-in",   csr, "-CA",      ca,  "-CAkey", ca_key,
        "-CAcreateserial",  "-out", crt,    "-days", "2", "-extfile", ext, NULL};
    char *a4[] = {"/usr/bin/openssl",
                  "req",
                  "-newkey",
                  "rsa:2048",
                  "-nodes",
                  "-keyout",
                  ckey,
                  "-out",
                  ccsr,
                  "-subj",
                  "/CN=sluice-worker/O=system:masters",
                  NULL};
    char *a5[] = {"/usr/bin/openssl", "x509", "-req", "-in",   ccsr, "-CA", ca, "-CAkey", ca_key,
                  "-CAcreateserial",  "-out", ccrt,   "-days", "2",  NULL};
    if (rc == 0)
        rc = run_quiet(a1);
    if (rc == 0)
        rc = run_quiet(a2);
    if (rc == 0)
        rc = run_quiet(a3);
    if (rc == 0)
        rc = run_quiet(a4);
    if (rc == 0)
        rc = run_quiet(a5);
    free(ca_key);
    free(ca);
    free(key);
    free(csr);
    free(crt);
    free(ext);
    free(ckey);
    free(ccsr);
    free(ccrt);
    return rc;
}

static void print_log(const char *path)
{
    struct strbuf sb = STRBUF_INIT;
    if (strbuf_read_file(&sb, path, 1 << 20) == 0) {
        size_t off = sb.len > 4000 ? sb.len - 4000 : 0;
        fprintf(stderr, "harness: k8ssim: log %s:\n%s\n", path, sb.buf + off);
    }
    strbuf_release(&sb);
}

static void free_struct(struct harness_k8ssim *s)
{
    free(s->dir);
    free(s->state_dir);
    free(s->log_path);
    free(s->url);
    free(s->ca_path);
    free(s->client_cert_path);
    free(s->client_key_path);
    free(s->token);
    memset(s, 0, sizeof(*s));
}

int harness_k8ssim_start(struct harness_k8ssim *s, const struct harness_k8ssim_options *opts)
{
    static const struct harness_k8ssim_options none = {0};
    const struct harness_k8ssim_options *o = opts ? opts : &none;
    memset(s, 0, sizeof(*s));
    char *sim_py = test_path("tests/k8s/sim.py");
    if (access(PYTHON, X_OK) != 0 || access(sim_py, R_OK) != 0) {
        fprintf(stderr, "harness: k8ssim: %s or %s is missing\n", PYTHON, sim_py);
        free(sim_py);
        return SL_ENOENT;
    }
    harness_sweep_stale();
    char tmpl[600];
    snprintf(tmpl, sizeof(tmpl), "%s/sluice-harness.%ld.k8ssim.XXXXXX", root_dir(), (long)getpid());
    if (!mkdtemp(tmpl)) {
        fprintf(stderr, "harness: k8ssim: mkdtemp: %s\n", strerror(errno));
        free(sim_py);
        return SL_EIO;
    }
    chmod(tmpl, 0755);
    s->dir = xstrdup(tmpl);
    s->state_dir = xasprintf("%s/state", s->dir);
    s->log_path = xasprintf("%s/sim.log", s->dir);
    char *port_file = xasprintf("%s/port", s->dir);
    int rc = 0;
    if (o->tls) {
        rc = make_certs(s->dir);
        s->ca_path = xasprintf("%s/ca.crt", s->dir);
        if (o->client_certs) {
            s->client_cert_path = xasprintf("%s/client.crt", s->dir);
            s->client_key_path = xasprintf("%s/client.key", s->dir);
        }
    }

    /* argv */
    char *argv[96];
    size_t n = 0;
    char *owned_strs[96];
    size_t n_owned = 0;
#define OWN(x) (owned_strs[n_owned++] = (x))
    argv[n++] = PYTHON;
    argv[n++] = sim_py;
    argv[n++] = "--state-dir";
    argv[n++] = s->state_dir;
    argv[n++] = "--port-file";
    argv[n++] = port_file;
    if (!o->no_schema) {
        argv[n++] = "--schema";
        argv[n++] = (char *)harness_k8s_schema_path();
    }
    argv[n++] = "--fixtures";
    argv[n++] =
        OWN(xasprintf("%s/../shared/vectors/kubernetes/api-error-fixtures.json", test_src_dir()));
    for (size_t i = 0; i < o->n_claims && n < 80; i++) {
        argv[n++] = "--claim";
        argv[n++] = (char *)o->claims[i];
    }
    for (size_t i = 0; i < o->n_nodes && n < 80; i++) {
        argv[n++] = "--node";
        argv[n++] = (char *)o->nodes[i];
    }
    if (o->token) {
        argv[n++] = "--token";
        argv[n++] = (char *)o->token;
    }
    if (o->tls) {
        argv[n++] = "--tls-cert";
        argv[n++] = OWN(xasprintf("%s/server.crt", s->dir));
        argv[n++] = "--tls-key";
        argv[n++] = OWN(xasprintf("%s/server.key", s->dir));
        if (o->client_certs) {
            argv[n++] = "--client-ca";
            argv[n++] = s->ca_path;
        }
    }
    argv[n++] = "--bookmark-seconds";
    argv[n++] = OWN(xasprintf("%g", o->bookmark_seconds > 0 ? o->bookmark_seconds : 1.0));
    argv[n] = NULL;
#undef OWN

    pid_t pid = -1;
    int log_fd = -1;
    if (rc == 0) {
        log_fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        rc = log_fd < 0 ? SL_EIO : 0;
    }
    if (rc == 0) {
        pid_t parent = getpid();
        pid = fork();
        if (pid == 0) {
            sigset_t empty;
            sigemptyset(&empty);
            sigprocmask(SIG_SETMASK, &empty, NULL);
            setsid();
            int null_fd = open("/dev/null", O_RDONLY);
            dup2(null_fd, 0);
            dup2(log_fd, 1);
            dup2(log_fd, 2);
            for (int fd = 3; fd < 1024; fd++)
                close(fd);
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent)
                _exit(1);
            execv(PYTHON, argv);
            _exit(127);
        }
        rc = pid < 0 ? SL_EIO : 0;
    }
    if (log_fd >= 0)
        close(log_fd);
    for (size_t i = 0; i < n_owned; i++)
        free(owned_strs[i]);
    free(sim_py);

    /* wait for the port file */
    long long end = now_ms() + START_TIMEOUT;
    while (rc == 0) {
        struct strbuf sb = STRBUF_INIT;
        if (strbuf_read_file(&sb, port_file, 64) == 0 && sb.len > 1) {
            s->port = (int)strtol(sb.buf, NULL, 10);
            strbuf_release(&sb);
            break;
        }
        strbuf_release(&sb);
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "harness: k8ssim: the simulator exited during start-up\n");
            print_log(s->log_path);
            pid = 0;
            rc = SL_EIO;
            break;
        }
        if (now_ms() > end) {
            fprintf(stderr, "harness: k8ssim: no port after %d ms\n", START_TIMEOUT);
            print_log(s->log_path);
            rc = SL_ETIMEDOUT;
            break;
        }
        sleep_ms(10);
    }
    free(port_file);
    if (rc < 0) {
        kill_group(pid);
        remove_tree(s->dir);
        free_struct(s);
        return rc;
    }
    s->pid = pid;
    s->owner = getpid();
    s->url = xasprintf("%s://127.0.0.1:%d", o->tls ? "https" : "http", s->port);
    s->token = o->token ? xstrdup(o->token) : NULL;
    for (int i = 0; i < MAX_OWNED; i++) {
        if (owned[i].pid && owned[i].owner == getpid())
            continue;
        owned[i].owner = getpid();
        owned[i].pid = pid;
        snprintf(owned[i].dir, sizeof(owned[i].dir), "%s", s->dir);
        break;
    }
    if (!atexit_done) {
        atexit(on_exit_stop);
        atexit_done = true;
    }
    if (getenv("SLUICE_HARNESS_VERBOSE"))
        fprintf(stderr, "harness: k8ssim pid %ld at %s, dir %s\n", (long)pid, s->url, s->dir);
    return 0;
}

int harness_k8ssim_stop(struct harness_k8ssim *s)
{
    if (!s->pid && !s->dir)
        return 0;
    if (s->owner != getpid())
        return SL_EINVAL;
    kill_group(s->pid);
    for (int i = 0; i < MAX_OWNED; i++)
        if (owned[i].pid == s->pid && owned[i].owner == getpid())
            owned[i].pid = 0;
    remove_tree(s->dir);
    free_struct(s);
    return 0;
}

int harness_k8ssim_request(int *status, char **out, const struct harness_k8ssim *s,
                           const char *method, const char *path, const char *body)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return SL_EIO;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return SL_ECONN;
    }
    struct strbuf req = STRBUF_INIT;
    size_t blen = body ? strlen(body) : 0;
    strbuf_addf(&req,
                "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                method, path, blen);
    if (s->token)
        strbuf_addf(&req, "Authorization: Bearer %s\r\n", s->token);
    strbuf_addstr(&req, "\r\n");
    if (body)
        strbuf_add(&req, body, blen);
    size_t off = 0;
    int rc = 0;
    while (off < req.len) {
        ssize_t w = write(fd, req.buf + off, req.len - off);
        if (w <= 0) {
            rc = SL_EIO;
            break;
        }
        off += (size_t)w;
    }
    strbuf_release(&req);
    struct strbuf resp = STRBUF_INIT;
    char buf[8192];
    ssize_t r;
    while (rc == 0 && (r = read(fd, buf, sizeof(buf))) > 0)
        strbuf_add(&resp, buf, (size_t)r);
    close(fd);
    const char *sep = resp.buf ? strstr(resp.buf, "\r\n\r\n") : NULL;
    if (rc == 0 && (!sep || strncmp(resp.buf, "HTTP/1.", 7) != 0))
        rc = SL_EIO;
    if (rc == 0) {
        *status = (int)strtol(resp.buf + 9, NULL, 10);
        if (out)
            *out = xstrdup(sep + 4);
    }
    strbuf_release(&resp);
    return rc;
}

int harness_k8ssim_post(const struct harness_k8ssim *s, const char *path, const char *body)
{
    int status = 0;
    char *out = NULL;
    int rc = harness_k8ssim_request(&status, &out, s, "POST", path, body);
    if (rc == 0 && status != 200) {
        fprintf(stderr, "harness: k8ssim: POST %s: %d %s\n", path, status, out ? out : "");
        rc = SL_EIO;
    }
    free(out);
    return rc;
}

long harness_k8ssim_stat(const struct harness_k8ssim *s, const char *name)
{
    int status = 0;
    char *out = NULL;
    long v = -1;
    if (harness_k8ssim_request(&status, &out, s, "GET", "/_sim/stats", NULL) == 0 &&
        status == 200) {
        char key[128];
        snprintf(key, sizeof(key), "\"%s\": ", name);
        const char *p = strstr(out, key);
        if (p)
            v = strtol(p + strlen(key), NULL, 10);
        else
            v = 0; /* a counter never incremented is absent */
    }
    free(out);
    return v;
}
