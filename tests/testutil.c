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
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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
