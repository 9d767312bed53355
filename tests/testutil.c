/*
 * tests/testutil.c - helpers shared by the test suites.
 */
#include "tests/testutil.h"
#include "common/strbuf.h"
#include "common/xalloc.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *test_src_dir(void)
{
    const char *s = getenv("SLUICE_SRC");
    return s && *s ? s : ".";
}

char *test_path(const char *rel)
{
    return xasprintf("%s/%s", test_src_dir(), rel);
}

char *test_read_file(const char *path, size_t *len)
{
    struct strbuf sb = STRBUF_INIT;
    int rc = strbuf_read_file(&sb, path, (size_t)1 << 30);
    ck_assert_msg(rc == 0, "cannot read \"%s\"", path);
    return strbuf_detach(&sb, len);
}

const char *test_sluice_bin(void)
{
    const char *s = getenv("SLUICE_BIN");
    return s && *s ? s : "build/asan/bin/sluice";
}

int test_run(char *const argv[], char **out, char **err)
{
    int po[2], pe[2];
    ck_assert(pipe(po) == 0 && pipe(pe) == 0);
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    struct strbuf bo = STRBUF_INIT, be = STRBUF_INIT;
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
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
                strbuf_add(i == 0 ? &bo : &be, buf, (size_t)n);
            } else {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (out)
        *out = strbuf_detach(&bo, NULL);
    if (err)
        *err = strbuf_detach(&be, NULL);
    strbuf_release(&bo);
    strbuf_release(&be);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* --- a Git server over https ---------------------------------------------------------------- */

void test_git_https_start(struct test_git_https *h, const char *repos_dir, const char *user,
                          const char *password)
{
    memset(h, 0, sizeof(*h));
    h->dir = xstrdup("/tmp/sluice-githttps-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(h->dir));
    char *cmd =
        xasprintf("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem "
                  "-days 2 -subj /CN=sluice-test-ca 2>/dev/null && "
                  "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
                  "-subj /CN=localhost 2>/dev/null && "
                  "printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext && "
                  "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                  "-out server.pem -days 2 -extfile ext 2>/dev/null",
                  h->dir);
    char *sh[] = {"/bin/sh", "-c", cmd, NULL};
    char *err = NULL;
    ck_assert_msg(test_run(sh, NULL, &err) == 0, "certificates: %s", err);
    free(err);
    free(cmd);
    h->ca = xasprintf("%s/ca.pem", h->dir);
    char *script = test_path("tests/data/git/https_server.py");
    char *cert = xasprintf("%s/server.pem", h->dir), *key = xasprintf("%s/server.key", h->dir);
    char *port_file = xasprintf("%s/port", h->dir);
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        execl("/usr/bin/python3", "python3", script, repos_dir, cert, key, user, password,
              port_file, (char *)NULL);
        _exit(127);
    }
    h->pid = pid;
    int port = 0;
    for (int i = 0; i < 400 && port <= 0; i++) {
        FILE *f = fopen(port_file, "r");
        if (!f || fscanf(f, "%d", &port) != 1) { // NOLINT(cert-err34-c)
            port = 0;
            struct timespec ts = {0, 25000000};
            nanosleep(&ts, NULL);
        }
        if (f)
            fclose(f);
    }
    ck_assert_msg(port > 0, "the https Git server did not start");
    h->url_base = xasprintf("https://localhost:%d", port);
    free(script);
    free(cert);
    free(key);
    free(port_file);
}

void test_git_https_stop(struct test_git_https *h)
{
    if (h->pid > 0) {
        kill(h->pid, SIGTERM);
        waitpid(h->pid, NULL, 0);
    }
    if (h->dir) {
        char *rm[] = {"/bin/rm", "-rf", h->dir, NULL};
        test_run(rm, NULL, NULL);
    }
    free(h->dir);
    free(h->ca);
    free(h->url_base);
    memset(h, 0, sizeof(*h));
}
