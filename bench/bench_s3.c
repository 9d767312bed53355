/*
 * bench/bench_s3.c - the S3 client (worker/s3.c) moving 1 GiB up and down on loopback,
 * next to curl against the same server.
 *
 * `make bench` builds this optimized and runs it from the repository root. It starts
 * s3rver (the npm package `make deps` installs) on 127.0.0.1 with its data in a fresh
 * directory under /dev/shm (else $TMPDIR or /tmp), so that the disk is not what is
 * measured, writes a 1 GiB file of pseudo-random bytes there, and for each of RUNS rounds:
 *
 *   1. curl up     curl -T FILE --aws-sigv4 (one PUT, x-amz-content-sha256 UNSIGNED-PAYLOAD)
 *   2. sluice up   s3_put_file() as configured by default: multipart, 16 MiB parts, 4 in
 *                  flight, each part's MD5 checked against its ETag
 *   2b. sluice up/1 the same as one PUT (threshold above the size), curl's own shape
 *   3. curl down   curl -o OUT of the object curl stored
 *   4. sluice down s3_get_file() of the object sluice stored (HEAD, GET, MD5 checked)
 *
 * Each transfer runs in a child process of its own (fork/exec for curl, fork for sluice),
 * so wall time and peak RSS (wait4's ru_maxrss) are that transfer's alone. Printed: MB/s
 * of each, the best of the rounds, sluice's throughput as a fraction of curl's in the same
 * round (the median over rounds; target >= 0.8) and sluice's peak RSS. Nothing is asserted; the
 * exit status is non-zero only if the server does not start or a transfer fails.
 */
#define _DEFAULT_SOURCE /* wait4() */
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "worker/s3.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SIZE   (1024ull * 1024 * 1024)
#define RUNS   3
#define BUCKET "bench"

static char *dir;
static int port;
static pid_t server;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

static int port_open(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static void stop_server(void)
{
    if (server > 0) {
        kill(server, SIGTERM);
        waitpid(server, NULL, 0);
        server = 0;
    }
    if (dir) {
        char *cmd = xasprintf("rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_s3: cannot remove %s\n", dir);
        free(cmd);
    }
}

static int start_server(void)
{
    struct stat st;
    const char *root = stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0 ? "/dev/shm"
                       : getenv("TMPDIR") ? getenv("TMPDIR")
                                          : "/tmp";
    dir = xasprintf("%s/sluice-bench-s3.XXXXXX", root);
    if (!mkdtemp(dir))
        return -1;
    char *data = xasprintf("%s/data", dir), *log = xasprintf("%s/s3rver.log", dir);
    mkdir(data, 0755);
    port = free_port();
    char portbuf[16];
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    server = fork();
    if (server == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execlp("s3rver", "s3rver", "--directory", data, "--address", "127.0.0.1", "--port", portbuf,
               "--no-vhost-buckets", "--silent", "--configure-bucket", BUCKET, (char *)NULL);
        _exit(127);
    }
    free(data);
    free(log);
    for (int i = 0; i < 300; i++) {
        if (port_open())
            return 0;
        int status;
        if (waitpid(server, &status, WNOHANG) == server) {
            server = 0;
            return -1;
        }
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return -1;
}

struct result {
    double seconds;
    long rss_kib;
    int ok;
};

static struct result wait_child(pid_t pid, double t0)
{
    struct result r = {0};
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid)
        return r;
    r.seconds = now_s() - t0;
    r.rss_kib = ru.ru_maxrss;
    r.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    return r;
}

static struct result run_curl(bool up, const char *file, const char *key)
{
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/%s/%s", port, BUCKET, key);
    double t0 = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        if (up)
            execlp("curl", "curl", "-sS", "--fail", "-T", file, "--aws-sigv4",
                   "aws:amz:us-east-1:s3", "--user", "S3RVER:S3RVER", "-H",
                   "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-H", "Expect:", "-o", "/dev/null",
                   url, (char *)NULL);
        else
            execlp("curl", "curl", "-sS", "--fail", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user",
                   "S3RVER:S3RVER", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-o", file, url,
                   (char *)NULL);
        _exit(127);
    }
    return wait_child(pid, t0);
}

static struct result run_sluice(bool up, bool single, const char *file, const char *key)
{
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", port);
    double t0 = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        struct s3_config cfg = {.endpoint = endpoint,
                                .bucket = BUCKET,
                                .path_style = true,
                                .access_key_id = "S3RVER",
                                .secret_access_key = "S3RVER",
                                .multipart_threshold = single ? 2 * SIZE : 0};
        struct s3_client *c = NULL;
        struct strbuf err = STRBUF_INIT;
        int rc = s3_client_new(&c, &cfg, &err);
        if (rc == 0)
            rc = up ? s3_put_file(c, key, file, NULL, NULL, NULL, &err)
                    : s3_get_file(c, key, file, NULL, NULL, &err);
        if (rc < 0)
            fprintf(stderr, "bench_s3: %s\n", err.buf);
        s3_client_free(c);
        strbuf_release(&err);
        _exit(rc < 0 ? 1 : 0);
    }
    return wait_child(pid, t0);
}

static int write_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    size_t bufsz = 1 << 20;
    uint64_t *buf = xmalloc(bufsz);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (uint64_t done = 0; done < SIZE; done += bufsz) {
        for (size_t i = 0; i < bufsz / 8; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = x;
        }
        if (write(fd, buf, bufsz) != (ssize_t)bufsz) {
            close(fd);
            free(buf);
            return -1;
        }
    }
    free(buf);
    return close(fd);
}

static double median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double mbps(double s)
{
    return s > 0 ? (double)SIZE / 1e6 / s : 0;
}

int main(void)
{
    if (start_server() < 0) {
        fprintf(stderr, "bench_s3: s3rver does not start (make deps installs it)\n");
        stop_server();
        return 1;
    }
    char *file = xasprintf("%s/file.bin", dir), *out = xasprintf("%s/out.bin", dir);
    if (write_file(file) < 0) {
        fprintf(stderr, "bench_s3: cannot write %s\n", file);
        stop_server();
        return 1;
    }
    printf("bench_s3: 1 GiB up and down, s3rver %s on 127.0.0.1, data in %s\n", "3.x", dir);
    printf("%-12s %10s %10s %10s %10s\n", "", "run", "seconds", "MB/s", "peak RSS");
    const char *names[] = {"curl up", "sluice up", "curl down", "sluice down", "sluice up/1"};
    struct result best[5];
    memset(best, 0, sizeof(best));
    /* per round, sluice's throughput over curl's in that round (the machine is shared:
     * rounds differ, transfers within one round are seconds apart) */
    double ratio[3][RUNS];
    int failed = 0;
    for (int run = 1; run <= RUNS && !failed; run++) {
        struct result r[5];
        r[0] = run_curl(true, file, "curl.bin");
        r[1] = run_sluice(true, false, file, "sluice.bin");
        r[4] = run_sluice(true, true, file, "sluice-single.bin");
        r[2] = run_curl(false, out, "curl.bin");
        unlink(out);
        r[3] = run_sluice(false, false, out, "sluice.bin");
        unlink(out);
        for (int i = 0; i < 5; i++) {
            if (!r[i].ok) {
                fprintf(stderr, "bench_s3: %s failed\n", names[i]);
                failed = 1;
                continue;
            }
            printf("%-12s %10d %10.2f %10.0f %7ld MiB\n", names[i], run, r[i].seconds,
                   mbps(r[i].seconds), r[i].rss_kib / 1024);
            fflush(stdout);
            if (!best[i].ok || r[i].seconds < best[i].seconds)
                best[i] = r[i];
        }
        if (!failed) {
            ratio[0][run - 1] = r[0].seconds / r[1].seconds;
            ratio[1][run - 1] = r[2].seconds / r[3].seconds;
            ratio[2][run - 1] = r[0].seconds / r[4].seconds;
        }
    }
    if (!failed) {
        double up = median(ratio[0], RUNS), down = median(ratio[1], RUNS);
        double up1 = median(ratio[2], RUNS);
        printf("\nbest of %d: upload   sluice %.0f MB/s, curl %.0f MB/s; median ratio %.2f of "
               "curl (target >= 0.8: %s), sluice peak RSS %ld MiB (curl %ld MiB)\n",
               RUNS, mbps(best[1].seconds), mbps(best[0].seconds), up, up >= 0.8 ? "PASS" : "MISS",
               best[1].rss_kib / 1024, best[0].rss_kib / 1024);
        printf("best of %d: download sluice %.0f MB/s, curl %.0f MB/s; median ratio %.2f of "
               "curl (target >= 0.8: %s), sluice peak RSS %ld MiB (curl %ld MiB)\n",
               RUNS, mbps(best[3].seconds), mbps(best[2].seconds), down,
               down >= 0.8 ? "PASS" : "MISS", best[3].rss_kib / 1024, best[2].rss_kib / 1024);
        printf("best of %d: upload as one PUT (like curl) sluice %.0f MB/s; median ratio %.2f of "
               "curl (%s), peak RSS %ld MiB\n",
               RUNS, mbps(best[4].seconds), up1, up1 >= 0.8 ? "PASS" : "MISS",
               best[4].rss_kib / 1024);
    }
    free(file);
    free(out);
    stop_server();
    return failed;
}
