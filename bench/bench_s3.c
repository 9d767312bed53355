/*
 * bench/bench_s3.c - the S3 client (worker/s3.c) moving 1 GiB up and down on loopback,
 * next to curl against the same server.
 *
 * `make bench` builds this optimized and runs it from the repository root. It starts
 * s3rver (the npm package `make deps` installs) on 127.0.0.1 with its data in a fresh
 * directory under /dev/shm (else $TMPDIR or /tmp), so that the disk is not what is
 * measured, writes a 1 GiB file of pseudo-random bytes there, and for each of RUNS rounds:
 *
 *   1. curl up      curl -T FILE --aws-sigv4 (one PUT, x-amz-content-sha256 UNSIGNED-PAYLOAD)
 *   2. curl up/mp   curl driving the multipart upload sluice does by default: POST ?uploads,
 *                   the 16 MiB parts 4 at a time (`curl -Z --parallel-max 4`, from part files
 *                   cut before the rounds, ETags computed before the rounds: curl hashes
 *                   nothing), POST ?uploadId; each phase timed, so s3rver's
 *                   CompleteMultipartUpload (it concatenates the parts into the object and
 *                   hashes it again) shows on its own
 *   3. sluice up    s3_put_file() as configured by default: multipart, 16 MiB parts, 4 in
 *                   flight, each part's MD5 (hashed beside the transfer) checked against its
 *                   ETag
 *   4. sluice up/1  the same as one PUT (threshold above the size), curl's own shape
 *   5. curl down    curl -o OUT of the object curl stored
 *   6. sluice down  s3_get_file() of the object sluice stored (GET, MD5 checked, rename)
 *
 * Each transfer runs in a child process of its own (fork/exec for curl, fork for sluice),
 * so wall time, CPU time and peak RSS (wait4's rusage) are that transfer's alone. Printed:
 * MB/s and CPU seconds of each, the best of the rounds, sluice's throughput as a fraction of curl's
 * in the same round (the median over rounds; target >= 0.8) and sluice's peak RSS. Nothing is
 * asserted; the exit status is non-zero only if the server does not start or a transfer
 * fails. `bench_s3 [ROUNDS [MIB]]` changes the number of rounds (3) and the size (1024).
 */
#define _DEFAULT_SOURCE /* wait4() */
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "worker/s3.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
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

#define BUCKET    "bench"
#define PART_SIZE S3_DEFAULT_PART_SIZE /* curl's multipart: sluice's default shape */
#define PARALLEL  S3_DEFAULT_PARALLEL

static uint64_t size = 1024ull * 1024 * 1024;
static int runs = 3;

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
    double cpu_s; /* user + system of the transfer's process */
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
    r.cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
              (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
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

/* The part files and the CompleteMultipartUpload body of curl's multipart upload. */
struct curl_parts {
    unsigned n;
    char **files;
    char *complete_xml; /* a file */
};

/* Cuts file into PART_SIZE part files under dir and writes the completion body with each
 * part's MD5 as its ETag (what S3 answers for a part), before any round: curl hashes
 * nothing while it is timed. */
static int curl_parts_make(struct curl_parts *cp, const char *file)
{
    cp->n = (unsigned)((size + PART_SIZE - 1) / PART_SIZE);
    cp->files = xcalloc(cp->n, sizeof(*cp->files));
    cp->complete_xml = xasprintf("%s/complete.xml", dir);
    int in = open(file, O_RDONLY);
    FILE *xml = fopen(cp->complete_xml, "w");
    unsigned char *buf = xmalloc(PART_SIZE);
    int rc = in >= 0 && xml ? 0 : -1;
    if (xml)
        fputs("<CompleteMultipartUpload>", xml);
    for (unsigned i = 0; i < cp->n && rc == 0; i++) {
        size_t len = (size_t)(i + 1 < cp->n ? PART_SIZE : size - (uint64_t)i * PART_SIZE);
        cp->files[i] = xasprintf("%s/part.%u", dir, i + 1);
        int out = open(cp->files[i], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (out < 0 || pread(in, buf, len, (off_t)((uint64_t)i * PART_SIZE)) != (ssize_t)len ||
            write(out, buf, len) != (ssize_t)len)
            rc = -1;
        if (out >= 0)
            close(out);
        unsigned char md[16];
        unsigned int mdlen = 16;
        EVP_Digest(buf, len, md, &mdlen, EVP_md5(), NULL);
        fprintf(xml, "<Part><PartNumber>%u</PartNumber><ETag>\"", i + 1);
        for (int j = 0; j < 16; j++)
            fprintf(xml, "%02x", md[j]);
        fputs("\"</ETag></Part>", xml);
    }
    if (xml) {
        fputs("</CompleteMultipartUpload>", xml);
        if (fclose(xml) != 0)
            rc = -1;
    }
    if (in >= 0)
        close(in);
    free(buf);
    return rc;
}

/* Runs curl with argv (NULL-terminated), stdout to out_path (NULL: /dev/null). */
static struct result run_curl_argv(char **argv, const char *out_path)
{
    double t0 = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        int fd = out_path ? open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644)
                          : open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        execvp("curl", argv);
        _exit(127);
    }
    return wait_child(pid, t0);
}

/* Times of curl's multipart upload: the whole, and its parts and completion phases. */
struct mp_result {
    struct result all;
    double parts_s, complete_s;
};

static struct mp_result run_curl_multipart(const struct curl_parts *cp, const char *key)
{
    struct mp_result r = {0};
    char base[256], *idfile = xasprintf("%s/uploads.xml", dir);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/%s/%s", port, BUCKET, key);
    char *common[] = {"curl",
                      "-sS",
                      "--fail",
                      "--aws-sigv4",
                      "aws:amz:us-east-1:s3",
                      "--user",
                      "S3RVER:S3RVER",
                      "-H",
                      "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                      "-H",
                      "Expect:"};
    size_t nc = sizeof(common) / sizeof(common[0]);
    char **argv = xcalloc(nc + 9 + 5 * (size_t)cp->n, sizeof(*argv));
    char *url = xasprintf("%s?uploads=", base);
    size_t a = nc;
    memcpy(argv, common, sizeof(common));
    argv[a++] = "-X";
    argv[a++] = "POST";
    argv[a++] = url;
    argv[a] = NULL;
    double t0 = now_s();
    struct result init = run_curl_argv(argv, idfile);
    free(url);
    char id[512] = "";
    FILE *f = fopen(idfile, "r");
    if (f) {
        char xml[4096];
        size_t n = fread(xml, 1, sizeof(xml) - 1, f);
        xml[n] = '\0';
        const char *s = strstr(xml, "<UploadId>"), *e = s ? strstr(s, "</UploadId>") : NULL;
        if (e && (size_t)(e - s - 10) < sizeof(id))
            snprintf(id, sizeof(id), "%.*s", (int)(e - s - 10), s + 10);
        fclose(f);
    }
    if (!init.ok || !id[0])
        goto out;

    /* the parts, PARALLEL at a time over reused connections */
    char par[16];
    snprintf(par, sizeof(par), "%d", PARALLEL);
    char **urls = xcalloc(cp->n, sizeof(*urls));
    a = nc;
    argv[a++] = "--no-progress-meter";
    argv[a++] = "-Z";
    argv[a++] = "--parallel-max";
    argv[a++] = par;
    for (unsigned i = 0; i < cp->n; i++) {
        urls[i] = xasprintf("%s?partNumber=%u&uploadId=%s", base, i + 1, id);
        argv[a++] = "-T";
        argv[a++] = cp->files[i];
        argv[a++] = "-o";
        argv[a++] = "/dev/null";
        argv[a++] = urls[i];
    }
    argv[a] = NULL;
    double t1 = now_s();
    struct result parts = run_curl_argv(argv, NULL);
    for (unsigned i = 0; i < cp->n; i++)
        free(urls[i]);
    free(urls);
    if (!parts.ok)
        goto out;

    char *data = xasprintf("@%s", cp->complete_xml);
    url = xasprintf("%s?uploadId=%s", base, id);
    a = nc;
    argv[a++] = "-X";
    argv[a++] = "POST";
    argv[a++] = "--data-binary";
    argv[a++] = data;
    argv[a++] = url;
    argv[a] = NULL;
    double t2 = now_s();
    struct result done = run_curl_argv(argv, NULL);
    free(url);
    free(data);
    if (!done.ok)
        goto out;
    r.all.ok = 1;
    r.all.seconds = now_s() - t0;
    r.parts_s = t2 - t1;
    r.complete_s = done.seconds;
    r.all.cpu_s = init.cpu_s + parts.cpu_s + done.cpu_s;
    r.all.rss_kib = init.rss_kib;
    if (parts.rss_kib > r.all.rss_kib)
        r.all.rss_kib = parts.rss_kib;
    if (done.rss_kib > r.all.rss_kib)
        r.all.rss_kib = done.rss_kib;
out:
    free(argv);
    free(idfile);
    return r;
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
                                .multipart_threshold = single ? 2 * size : 0};
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
    for (uint64_t done = 0; done < size; done += bufsz) {
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
    return s > 0 ? (double)size / 1e6 / s : 0;
}

enum { T_CURL_UP, T_CURL_MP, T_SLUICE_UP, T_SLUICE_UP1, T_CURL_DOWN, T_SLUICE_DOWN, N_T };

int main(int argc, char **argv)
{
    if (argc > 1)
        runs = (int)strtol(argv[1], NULL, 10);
    if (argc > 2)
        size = (uint64_t)strtoull(argv[2], NULL, 10) << 20;
    if (runs < 1 || runs > 99 || size < PART_SIZE) {
        fprintf(stderr, "usage: bench_s3 [ROUNDS (1-99) [MIB (>= 16)]]\n");
        return 2;
    }
    if (start_server() < 0) {
        fprintf(stderr, "bench_s3: s3rver does not start (make deps installs it)\n");
        stop_server();
        return 1;
    }
    char *file = xasprintf("%s/file.bin", dir), *out = xasprintf("%s/out.bin", dir);
    struct curl_parts cp = {0};
    if (write_file(file) < 0 || curl_parts_make(&cp, file) < 0) {
        fprintf(stderr, "bench_s3: cannot write %s or its parts\n", file);
        stop_server();
        return 1;
    }
    printf("bench_s3: %llu MiB up and down, s3rver %s on 127.0.0.1, data in %s\n",
           (unsigned long long)(size >> 20), "3.x", dir);
    printf("%-12s %5s %9s %8s %9s %9s   %s\n", "", "round", "seconds", "MB/s", "CPU s", "peak RSS",
           "phases");
    const char *names[N_T] = {"curl up",     "curl up/mp", "sluice up",
                              "sluice up/1", "curl down",  "sluice down"};
    struct result best[N_T];
    memset(best, 0, sizeof(best));
    /* per round, sluice's throughput over curl's in that round (the machine is shared:
     * rounds differ, transfers within one round are seconds apart) */
    enum { R_UP, R_UP_MP, R_UP1, R_DOWN, N_R };
    double *ratio[N_R], *complete_s = xcalloc((size_t)runs, sizeof(double));
    for (int i = 0; i < N_R; i++)
        ratio[i] = xcalloc((size_t)runs, sizeof(double));
    int failed = 0;
    for (int run = 1; run <= runs && !failed; run++) {
        struct result r[N_T];
        r[T_CURL_UP] = run_curl(true, file, "curl.bin");
        struct mp_result mp = run_curl_multipart(&cp, "curl-mp.bin");
        r[T_CURL_MP] = mp.all;
        r[T_SLUICE_UP] = run_sluice(true, false, file, "sluice.bin");
        r[T_SLUICE_UP1] = run_sluice(true, true, file, "sluice-single.bin");
        r[T_CURL_DOWN] = run_curl(false, out, "curl.bin");
        unlink(out);
        r[T_SLUICE_DOWN] = run_sluice(false, false, out, "sluice.bin");
        unlink(out);
        for (int i = 0; i < N_T; i++) {
            if (!r[i].ok) {
                fprintf(stderr, "bench_s3: %s failed\n", names[i]);
                failed = 1;
                continue;
            }
            printf("%-12s %5d %9.2f %8.0f %9.2f %5ld MiB", names[i], run, r[i].seconds,
                   mbps(r[i].seconds), r[i].cpu_s, r[i].rss_kib / 1024);
            if (i == T_CURL_MP)
                printf("   parts %.2f s, CompleteMultipartUpload %.2f s", mp.parts_s,
                       mp.complete_s);
            printf("\n");
            fflush(stdout);
            if (!best[i].ok || r[i].seconds < best[i].seconds)
                best[i] = r[i];
        }
        if (!failed) {
            ratio[R_UP][run - 1] = r[T_CURL_UP].seconds / r[T_SLUICE_UP].seconds;
            ratio[R_UP_MP][run - 1] = r[T_CURL_MP].seconds / r[T_SLUICE_UP].seconds;
            ratio[R_UP1][run - 1] = r[T_CURL_UP].seconds / r[T_SLUICE_UP1].seconds;
            ratio[R_DOWN][run - 1] = r[T_CURL_DOWN].seconds / r[T_SLUICE_DOWN].seconds;
            complete_s[run - 1] = mp.complete_s;
        }
    }
    if (!failed) {
        double up = median(ratio[R_UP], runs), up_mp = median(ratio[R_UP_MP], runs);
        double up1 = median(ratio[R_UP1], runs), down = median(ratio[R_DOWN], runs);
        double cmp = median(complete_s, runs);
        printf("\nbest of %d: upload   sluice %.0f MB/s, curl %.0f MB/s; median ratio %.2f of "
               "curl (target >= 0.8: %s), sluice peak RSS %ld MiB (curl %ld MiB)\n",
               runs, mbps(best[T_SLUICE_UP].seconds), mbps(best[T_CURL_UP].seconds), up,
               up >= 0.8 ? "PASS" : "MISS", best[T_SLUICE_UP].rss_kib / 1024,
               best[T_CURL_UP].rss_kib / 1024);
        printf("best of %d: upload, both multipart: curl %.0f MB/s; median ratio %.2f of curl "
               "(%s); s3rver's CompleteMultipartUpload alone %.2f s (median)\n",
               runs, mbps(best[T_CURL_MP].seconds), up_mp, up_mp >= 0.8 ? "PASS" : "MISS", cmp);
        printf("best of %d: upload as one PUT (like curl) sluice %.0f MB/s; median ratio %.2f of "
               "curl (%s), peak RSS %ld MiB\n",
               runs, mbps(best[T_SLUICE_UP1].seconds), up1, up1 >= 0.8 ? "PASS" : "MISS",
               best[T_SLUICE_UP1].rss_kib / 1024);
        printf("best of %d: download sluice %.0f MB/s, curl %.0f MB/s; median ratio %.2f of "
               "curl (target >= 0.8: %s), sluice peak RSS %ld MiB (curl %ld MiB)\n",
               runs, mbps(best[T_SLUICE_DOWN].seconds), mbps(best[T_CURL_DOWN].seconds), down,
               down >= 0.8 ? "PASS" : "MISS", best[T_SLUICE_DOWN].rss_kib / 1024,
               best[T_CURL_DOWN].rss_kib / 1024);
    }
    for (int i = 0; i < N_R; i++)
        free(ratio[i]);
    free(complete_s);
    for (unsigned i = 0; i < cp.n; i++)
        free(cp.files[i]);
    free(cp.files);
    free(cp.complete_xml);
    free(file);
    free(out);
    stop_server();
    return failed;
}
