/*
 * tests/integration/check_s3.c - worker/s3.c against a real S3-compatible server.
 *
 * s3rver (tests/harness) on loopback checks every request's Signature V4 against its
 * fixed credentials, so a round trip also proves the signing of real requests. Faults
 * come from a small TCP proxy in this file, put between the client and s3rver: it answers
 * 503 SlowDown, cuts a connection after a number of bytes in either direction, damages
 * request bytes, hides a Range header, or rewrites the ETag S3 answers, per connection as
 * scripted, and records each request line so a test can see the retries (a resumed
 * download's Range header, say).
 */
#define _DEFAULT_SOURCE /* wait4(), for a child's peak RSS */
#include "worker/s3.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "tests/harness/harness.h"
#include "tests/testutil.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static struct harness_s3 srv;
static char *tmpdir;

static void setup(void)
{
    ck_assert_int_eq(harness_s3_start(&srv, "art"), 0);
    char tmpl[] = "/tmp/sluice-s3test.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    tmpdir = xstrdup(tmpl);
}

static void teardown(void)
{
    harness_s3_stop(&srv);
    if (tmpdir) {
        char *argv[] = {"/bin/rm", "-rf", tmpdir, NULL};
        test_run(argv, NULL, NULL);
        free(tmpdir);
        tmpdir = NULL;
    }
}

/* --- helpers ------------------------------------------------------------------------- */

static struct s3_client *client_for(const char *endpoint, const char *secret, uint64_t threshold)
{
    struct s3_config cfg = {.endpoint = endpoint,
                            .region = HARNESS_S3_REGION,
                            .bucket = "art",
                            .path_style = true,
                            .access_key_id = HARNESS_S3_ACCESS_KEY,
                            .secret_access_key = secret ? secret : HARNESS_S3_SECRET_KEY,
                            .multipart_threshold = threshold,
                            .part_size = S3_MIN_PART_SIZE,
                            .max_attempts = 4,
                            .retry_base_ms = 20};
    struct s3_client *c = NULL;
    struct strbuf err = STRBUF_INIT;
    int rc = s3_client_new(&c, &cfg, &err);
    ck_assert_msg(rc == 0, "s3_client_new: %s", err.buf);
    strbuf_release(&err);
    return c;
}

/* Writes len pseudo-random bytes (seeded) to a new file in tmpdir; returns its path. */
static char *random_file(const char *name, uint64_t len, uint32_t seed)
{
    char *path = xasprintf("%s/%s", tmpdir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    size_t bufsz = 1 << 20;
    uint32_t *buf = xmalloc(bufsz);
    uint32_t x = seed | 1;
    while (len > 0) {
        for (size_t i = 0; i < bufsz / 4; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            buf[i] = x;
        }
        size_t n = len < bufsz ? (size_t)len : bufsz;
        ck_assert_int_eq(write(fd, buf, n), (ssize_t)n);
        len -= n;
    }
    free(buf);
    close(fd);
    return path;
}

static void assert_same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    ck_assert_msg(fa && fb, "cannot open %s or %s", a, b);
    static char ba[1 << 16], bb[1 << 16];
    uint64_t off = 0;
    for (;;) {
        size_t na = fread(ba, 1, sizeof(ba), fa), nb = fread(bb, 1, sizeof(bb), fb);
        ck_assert_msg(na == nb && !memcmp(ba, bb, na), "%s and %s differ near byte %llu", a, b,
                      (unsigned long long)off);
        if (na == 0)
            break;
        off += na;
    }
    fclose(fa);
    fclose(fb);
}

/* --- the fault proxy -------------------------------------------------------------------- */

enum fault {
    F_FORWARD,
    F_SLOWDOWN,
    F_FORBIDDEN,
    F_CUT_RESPONSE,
    F_CUT_REQUEST,
    F_CORRUPT_REQUEST,  /* one byte at cut_after, once per connection */
    F_CORRUPT_REQUESTS, /* one byte every cut_after bytes: every request on it */
    F_STRIP_RANGE,      /* "Range:" becomes "Xange:": the server sends the whole object */
};

struct proxy {
    int listen_fd;
    int port;
    int upstream_port;
    pthread_t thread;
    pthread_mutex_t mu;
    enum fault script[16]; /* per connection, in order; later ones forward */
    size_t n_script;
    uint64_t cut_after; /* bytes, for the F_CUT_* faults */
    bool fault_forever; /* every connection gets script[0] */
    char etag[80];      /* not "": every response's ETag value becomes this */
    int connections;
    int faults;
    struct strbuf requests; /* every request line seen, one per line */
    volatile bool stop;
    pthread_t conns[64]; /* one thread per connection, joined at stop */
    size_t n_conns;
};

struct conn {
    struct proxy *p;
    int client;
    enum fault f;
};

static void record_requests(struct proxy *p, const char *buf, size_t len)
{
    /* request lines: "METHOD /path HTTP/1.1" at the start of a chunk or after a blank line;
     * good enough for the tests, which look for Range headers and methods */
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i + 5 < len; i++) {
        bool at_start = i == 0 || (i >= 2 && buf[i - 1] == '\n' && buf[i - 2] == '\r');
        if (!at_start)
            continue;
        const char *line = buf + i;
        const char *eol = memchr(line, '\r', len - i);
        if (!eol)
            break;
        if (!strncmp(line, "GET ", 4) || !strncmp(line, "PUT ", 4) || !strncmp(line, "POST ", 5) ||
            !strncmp(line, "HEAD ", 5) || !strncmp(line, "DELETE ", 7) ||
            !strncasecmp(line, "range:", 6))
            strbuf_addf(&p->requests, "%.*s\n", (int)(eol - line), line);
    }
    pthread_mutex_unlock(&p->mu);
}

/* Writes buf to client with its ETag header's value replaced by p->etag; false if buf has
 * no ETag header (a header block arrives in one read: good enough for the tests). */
static bool rewrite_etag(struct proxy *p, int client, const char *buf, size_t n)
{
    const char *h = NULL;
    for (size_t i = 0; !h && i + 9 <= n; i++)
        if (!memcmp(buf + i, "\r\nETag: \"", 9))
            h = buf + i;
    const char *end = h ? memchr(h + 9, '"', n - (size_t)(h + 9 - buf)) : NULL;
    if (!end)
        return false;
    struct strbuf out = STRBUF_INIT;
    strbuf_add(&out, buf, (size_t)(h + 9 - buf));
    strbuf_addstr(&out, p->etag);
    strbuf_add(&out, end, n - (size_t)(end - buf));
    (void)!write(client, out.buf, out.len);
    strbuf_release(&out);
    return true;
}

static void pump(struct proxy *p, int client, enum fault f)
{
    int up = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)p->upstream_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(up, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(up);
        return;
    }
    uint64_t to_up = 0, to_client = 0;
    static __thread char buf[1 << 16];
    struct pollfd pfd[2] = {{client, POLLIN, 0}, {up, POLLIN, 0}};
    for (;;) {
        if (poll(pfd, 2, 200) < 0)
            break;
        if (p->stop)
            break;
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(client, buf, sizeof(buf));
            if (n <= 0)
                break;
            record_requests(p, buf, (size_t)n);
            if (f == F_CORRUPT_REQUEST && to_up <= p->cut_after &&
                to_up + (uint64_t)n > p->cut_after)
                buf[p->cut_after - to_up] ^= 0x5a; /* one byte of the body, once */
            if (f == F_CORRUPT_REQUESTS)
                for (uint64_t at = (to_up / p->cut_after + 1) * p->cut_after;
                     at < to_up + (uint64_t)n; at += p->cut_after)
                    buf[at - to_up] ^= 0x5a;
            if (f == F_STRIP_RANGE)
                for (ssize_t i = 0; i + 8 <= n; i++)
                    if (!memcmp(buf + i, "\r\nRange:", 8))
                        buf[i + 2] = 'X';
            if (f == F_CUT_REQUEST && to_up + (uint64_t)n > p->cut_after) {
                (void)!write(up, buf, (size_t)(p->cut_after - to_up));
                break;
            }
            if (write(up, buf, (size_t)n) != n)
                break;
            to_up += (uint64_t)n;
        }
        if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(up, buf, sizeof(buf));
            if (n <= 0)
                break;
            if (f == F_CUT_RESPONSE && to_client + (uint64_t)n > p->cut_after) {
                (void)!write(client, buf, (size_t)(p->cut_after - to_client));
                break;
            }
            if (p->etag[0] && rewrite_etag(p, client, buf, (size_t)n)) {
                to_client += (uint64_t)n;
                continue;
            }
            if (write(client, buf, (size_t)n) != n)
                break;
            to_client += (uint64_t)n;
        }
    }
    close(up);
}

/* Answers the request with an S3 error: 503 SlowDown or 403 AccessDenied. */
static void answer_error(struct proxy *p, int client, enum fault f)
{
    char buf[8192];
    ssize_t n = read(client, buf, sizeof(buf)); /* the request head, at least its start */
    if (n > 0)
        record_requests(p, buf, (size_t)n);
    const char *body = f == F_SLOWDOWN
                           ? "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown"
                             "</Code><Message>Please reduce your request rate.</Message></Error>"
                           : "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied"
                             "</Code><Message>Access Denied</Message></Error>";
    char resp[512];
    int len = snprintf(resp, sizeof(resp),
                       "HTTP/1.1 %s\r\nContent-Type: application/xml\r\n"
                       "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                       f == F_SLOWDOWN ? "503 Slow Down" : "403 Forbidden", strlen(body), body);
    (void)!write(client, resp, (size_t)len);
}

static void *conn_main(void *data)
{
    struct conn *cn = data;
    if (cn->f == F_SLOWDOWN || cn->f == F_FORBIDDEN)
        answer_error(cn->p, cn->client, cn->f);
    else
        pump(cn->p, cn->client, cn->f);
    shutdown(cn->client, SHUT_RDWR);
    close(cn->client);
    free(cn);
    return NULL;
}

static void *proxy_main(void *data)
{
    struct proxy *p = data;
    for (;;) {
        struct pollfd pfd = {p->listen_fd, POLLIN, 0};
        if (poll(&pfd, 1, 100) <= 0) {
            if (p->stop)
                return NULL;
            continue;
        }
        int client = accept(p->listen_fd, NULL, NULL);
        if (client < 0)
            continue;
        pthread_mutex_lock(&p->mu);
        int idx = p->connections++;
        enum fault f = p->fault_forever            ? p->script[0]
                       : (size_t)idx < p->n_script ? p->script[idx]
                                                   : F_FORWARD;
        if (f != F_FORWARD)
            p->faults++;
        pthread_mutex_unlock(&p->mu);
        struct conn *cn = xmalloc(sizeof(*cn));
        *cn = (struct conn){p, client, f};
        if (p->n_conns < 64 && pthread_create(&p->conns[p->n_conns], NULL, conn_main, cn) == 0) {
            p->n_conns++;
        } else {
            close(client);
            free(cn);
        }
    }
}

static void proxy_start(struct proxy *p, const enum fault *script, size_t n, uint64_t cut_after)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    strbuf_init(&p->requests, 0);
    if (n)
        memcpy(p->script, script, n * sizeof(*script));
    p->n_script = n;
    p->cut_after = cut_after;
    p->upstream_port = srv.port;
    p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    ck_assert_int_eq(bind(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(p->listen_fd, 16), 0);
    ck_assert_int_eq(getsockname(p->listen_fd, (struct sockaddr *)&sa, &len), 0);
    p->port = ntohs(sa.sin_port);
    ck_assert_int_eq(pthread_create(&p->thread, NULL, proxy_main, p), 0);
}

static void proxy_stop(struct proxy *p)
{
    p->stop = true;
    pthread_join(p->thread, NULL);
    for (size_t i = 0; i < p->n_conns; i++)
        pthread_join(p->conns[i], NULL);
    close(p->listen_fd);
    strbuf_release(&p->requests);
    pthread_mutex_destroy(&p->mu);
}

/* How many requests through p start with line (e.g. "PUT /art/key?partNumber="). */
static int requests_of(const struct proxy *p, const char *line)
{
    int n = 0;
    for (const char *q = p->requests.buf; (q = strstr(q, line)); q++)
        n++;
    return n;
}

static char *proxy_endpoint(const struct proxy *p)
{
    return xasprintf("http://127.0.0.1:%d", p->port);
}

/* --- round trips ------------------------------------------------------------------------ */

START_TEST(test_s3_round_trip_single)
{
    struct s3_client *c = client_for(srv.endpoint, NULL, 0);
    char *src = random_file("small.bin", 300 * 1000 + 7, 1);
    char *dst = xasprintf("%s/small.out", tmpdir);
    struct strbuf err = STRBUF_INIT;
    struct s3_object_info up, down, head;
    /* a key with characters that need escaping in the URL and in the signature */
    const char *key = "dags/iris/run 1/train+x/1/model~v1.pkl";

    int rc = s3_put_file(c, key, src, NULL, NULL, &up, &err);
    ck_assert_msg(rc == 0, "put: %s", err.buf);
    ck_assert_uint_eq(up.size, 300 * 1000 + 7);
    ck_assert_uint_eq(strlen(up.etag), 32); /* a single PUT's ETag is the MD5 */
    ck_assert_int_eq(s3_head(c, key, &head, &err), 0);
    ck_assert_uint_eq(head.size, up.size);
    ck_assert_str_eq(head.etag, up.etag);
    rc = s3_get_file(c, key, dst, NULL, &down, &err);
    ck_assert_msg(rc == 0, "get: %s", err.buf);
    ck_assert_str_eq(down.etag, up.etag);
    assert_same_file(src, dst);
    /* an empty object */
    char *empty = random_file("empty.bin", 0, 2);
    ck_assert_int_eq(s3_put_file(c, "empty", empty, NULL, NULL, NULL, &err), 0);
    ck_assert_int_eq(s3_get_file(c, "empty", dst, NULL, NULL, &err), 0);
    assert_same_file(empty, dst);
    /* delete, then it is gone */
    ck_assert_int_eq(s3_delete(c, key, &err), 0);
    strbuf_reset(&err);
    ck_assert_int_eq(s3_head(c, key, &head, &err), SL_ENOENT);
    free(empty);
    free(src);
    free(dst);
    strbuf_release(&err);
    s3_client_free(c);
}
END_TEST

START_TEST(test_s3_round_trip_multipart)
{
    /* threshold 5 MiB: 23 MiB + 5 bytes is 5 parts of 5 MiB, the last one short; through a
     * proxy that only forwards, to count the requests */
    struct proxy p;
    proxy_start(&p, NULL, 0, 0);
    char *ep = proxy_endpoint(&p);
    struct s3_client *c = client_for(ep, NULL, S3_MIN_PART_SIZE);
    uint64_t size = 23ull * 1024 * 1024 + 5;
    char *src = random_file("big.bin", size, 3);
    char *dst = xasprintf("%s/big.out", tmpdir);
    struct strbuf err = STRBUF_INIT;
    struct s3_object_info up, down;
    const char *meta[] = {"attempt=iris.r1.train.-1.1", NULL};

    int rc = s3_put_file(c, "multi/big.bin", src, meta, NULL, &up, &err);
    ck_assert_msg(rc == 0, "put: %s", err.buf);
    ck_assert_int_eq(requests_of(&p, "PUT /art/multi/big.bin?partNumber="), 5);
    ck_assert_ptr_nonnull(strstr(p.requests.buf, "POST /art/multi/big.bin?uploads"));
    rc = s3_get_file(c, "multi/big.bin", dst, NULL, &down, &err);
    ck_assert_msg(rc == 0, "get: %s", err.buf);
    ck_assert_str_eq(down.etag, up.etag);
    ck_assert_uint_eq(down.size, size);
    assert_same_file(src, dst);
    free(src);
    free(dst);
    free(ep);
    strbuf_release(&err);
    s3_client_free(c);
    proxy_stop(&p);
}
END_TEST

/* --- clear errors --------------------------------------------------------------------------- */

START_TEST(test_s3_errors_are_clear)
{
    struct s3_client *c = client_for(srv.endpoint, NULL, 0);
    struct strbuf err = STRBUF_INIT;
    char *dst = xasprintf("%s/missing.out", tmpdir);

    /* a missing key: SL_ENOENT, nothing left behind */
    int rc = s3_get_file(c, "no/such/key", dst, NULL, NULL, &err);
    ck_assert_int_eq(rc, SL_ENOENT);
    ck_assert_msg(strstr(err.buf, "s3://art/no/such/key") && strstr(err.buf, "404"), "%s", err.buf);
    ck_assert_int_ne(access(dst, F_OK), 0);
    char *part = xasprintf("%s.sluice-part", dst);
    ck_assert_int_ne(access(part, F_OK), 0);
    free(part);

    /* 403 (s3rver does not check signatures: the proxy plays S3 refusing us), not retried */
    struct proxy p;
    enum fault forbid[] = {F_FORBIDDEN};
    proxy_start(&p, forbid, 1, 0);
    p.fault_forever = true;
    char *ep = proxy_endpoint(&p);
    struct s3_client *bad = client_for(ep, NULL, 0);
    char *src = random_file("x.bin", 1000, 4);
    strbuf_reset(&err);
    rc = s3_put_file(bad, "x", src, NULL, NULL, NULL, &err);
    ck_assert_int_eq(rc, SL_EIO);
    ck_assert_msg(strstr(err.buf, "s3 PUT s3://art/x: 403 AccessDenied: Access Denied"), "%s",
                  err.buf);
    ck_assert_int_eq(p.connections, 1);
    s3_client_free(bad);
    free(ep);
    proxy_stop(&p);

    /* a missing bucket */
    struct s3_config cfg = {.endpoint = srv.endpoint,
                            .bucket = "no-such-bucket",
                            .path_style = true,
                            .access_key_id = HARNESS_S3_ACCESS_KEY,
                            .secret_access_key = HARNESS_S3_SECRET_KEY};
    struct s3_client *nb = NULL;
    ck_assert_int_eq(s3_client_new(&nb, &cfg, &err), 0);
    strbuf_reset(&err);
    rc = s3_put_file(nb, "x", src, NULL, NULL, NULL, &err);
    ck_assert_int_eq(rc, SL_ENOENT);
    ck_assert_msg(strstr(err.buf, "NoSuchBucket"), "%s", err.buf);
    s3_client_free(nb);

    /* a local file that is not there, or a directory */
    strbuf_reset(&err);
    ck_assert_int_eq(s3_put_file(c, "x", "/nonexistent/file", NULL, NULL, NULL, &err), SL_ENOENT);
    strbuf_reset(&err);
    ck_assert_int_eq(s3_put_file(c, "x", tmpdir, NULL, NULL, NULL, &err), SL_EIO);

    /* only http and https endpoints; a user in the URL is refused */
    const char *bad_eps[] = {"ftp://127.0.0.1/", "file:///etc/passwd",          "gopher://x",
                             "http://",          "http://user:pw@127.0.0.1:9/", "127.0.0.1:9000"};
    for (size_t i = 0; i < sizeof(bad_eps) / sizeof(bad_eps[0]); i++) {
        cfg.endpoint = bad_eps[i];
        cfg.bucket = "art";
        strbuf_reset(&err);
        ck_assert_msg(s3_client_new(&nb, &cfg, &err) == SL_EINVAL, "%s accepted", bad_eps[i]);
        ck_assert_uint_gt(err.len, 0);
    }
    /* virtual-host style needs a DNS-compatible bucket */
    cfg.endpoint = srv.endpoint;
    cfg.bucket = "Not_DNS";
    cfg.path_style = false;
    strbuf_reset(&err);
    ck_assert_int_eq(s3_client_new(&nb, &cfg, &err), SL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.buf, "path-style"));

    free(src);
    free(dst);
    strbuf_release(&err);
    s3_client_free(c);
}
END_TEST

/* A download whose bytes do not match the stored ETag fails and leaves nothing. */
START_TEST(test_s3_download_checksum_mismatch)
{
    struct s3_client *c = client_for(srv.endpoint, NULL, 0);
    struct strbuf err = STRBUF_INIT;
    char *src = random_file("ck.bin", 4096, 5);
    ck_assert_int_eq(s3_put_file(c, "ck/obj", src, NULL, NULL, NULL, &err), 0);
    /* flip bytes of the stored object behind s3rver's back (same length; s3rver keeps the
     * MD5 it computed at upload in a file of its own, so the ETag stays) */
    char *stored = xasprintf("%s/art/ck/obj._S3rver_object", srv.data_dir);
    int fd = open(stored, O_WRONLY);
    ck_assert_msg(fd >= 0, "s3rver's layout changed: no %s", stored);
    ck_assert_int_eq(pwrite(fd, "XXXX", 4, 100), 4);
    close(fd);
    free(stored);
    char *dst = xasprintf("%s/ck.out", tmpdir);
    strbuf_reset(&err);
    int rc = s3_get_file(c, "ck/obj", dst, NULL, NULL, &err);
    ck_assert_int_eq(rc, SL_EIO);
    ck_assert_msg(strstr(err.buf, "checksum mismatch"), "%s", err.buf);
    ck_assert_int_ne(access(dst, F_OK), 0);
    free(src);
    free(dst);
    strbuf_release(&err);
    s3_client_free(c);
}
END_TEST

/* --- retries ------------------------------------------------------------------------------------
 */

START_TEST(test_s3_retries_slowdown)
{
    struct proxy p;
    enum fault script[] = {F_SLOWDOWN, F_SLOWDOWN};
    proxy_start(&p, script, 2, 0);
    char *ep = proxy_endpoint(&p);
    struct s3_client *c = client_for(ep, NULL, 0);
    struct strbuf err = STRBUF_INIT;
    char *src = random_file("sd.bin", 10000, 6);
    int rc = s3_put_file(c, "sd/obj", src, NULL, NULL, NULL, &err);
    ck_assert_msg(rc == 0, "put through two SlowDowns: %s", err.buf);
    ck_assert_int_eq(p.faults, 2);
    ck_assert_int_eq(p.connections, 3);
    /* and it is really there */
    char *dst = xasprintf("%s/sd.out", tmpdir);
    ck_assert_int_eq(s3_get_file(c, "sd/obj", dst, NULL, NULL, &err), 0);
    assert_same_file(src, dst);
    free(src);
    free(dst);
    free(ep);
    strbuf_release(&err);
    s3_client_free(c);
    proxy_stop(&p);
}
END_TEST

/* A byte damaged on the way up: s3rver stores it, its ETag gives it away, the PUT is sent
 * again and the object ends up right. */
START_TEST(test_s3_upload_corruption_detected)
{
    struct proxy p;
    enum fault script[] = {F_CORRUPT_REQUEST};
    proxy_start(&p, script, 1, 200 * 1000);
    char *ep = proxy_endpoint(&p);
    struct s3_client *c = client_for(ep, NULL, 0);
    struct strbuf err = STRBUF_INIT;
    char *src = random_file("cr.bin", 1000 * 1000, 11);
    int rc = s3_put_file(c, "cr/obj", src, NULL, NULL, NULL, &err);
    ck_assert_msg(rc == 0, "put through a corrupting proxy: %s", err.buf);
    ck_assert_int_eq(p.faults, 1);
    ck_assert_int_eq(requests_of(&p, "PUT /art/cr/obj"), 2);
    struct s3_client *direct = client_for(srv.endpoint, NULL, 0);
    char *dst = xasprintf("%s/cr.out", tmpdir);
    ck_assert_int_eq(s3_get_file(direct, "cr/obj", dst, NULL, NULL, &err), 0);
    assert_same_file(src, dst);
    free(src);
    free(dst);
    free(ep);
    strbuf_release(&err);
    s3_client_free(c);
    s3_client_free(direct);
    proxy_stop(&p);
}
END_TEST

START_TEST(test_s3_download_resumes_after_reset)
{
    struct s3_client *direct = client_for(srv.endpoint, NULL, 0);
    struct strbuf err = STRBUF_INIT;
    char *src = random_file("rs.bin", 3 * 1024 * 1024 + 11, 7);
    ck_assert_int_eq(s3_put_file(direct, "rs/obj", src, NULL, NULL, NULL, &err), 0);

    /* connection 0 is the GET (no HEAD before it), cut after 1 MiB of its response */
    struct proxy p;
    enum fault script[] = {F_CUT_RESPONSE};
    proxy_start(&p, script, 1, 1024 * 1024);
    char *ep = proxy_endpoint(&p);
    struct s3_client *c = client_for(ep, NULL, 0);
    char *dst = xasprintf("%s/rs.out", tmpdir);
    int rc = s3_get_file(c, "rs/obj", dst, NULL, NULL, &err);
    ck_assert_msg(rc == 0, "get through a reset: %s", err.buf);
    assert_same_file(src, dst);
    ck_assert_int_eq(p.faults, 1);
    /* the second GET asked for the rest only */
    ck_assert_msg(strstr(p.requests.buf, "Range: bytes=") != NULL, "no ranged GET in:\n%s",
                  p.requests.buf);
    ck_assert_msg(strstr(p.requests.buf, "HEAD ") == NULL, "a HEAD before the GET:\n%s",
                  p.requests.buf);
    free(src);
    free(dst);
    free(ep);
    strbuf_release(&err);
    s3_client_free(c);
    s3_client_free(direct);
    proxy_stop(&p);
}
END_TEST

/* A server that ignores Range on the resumed GET sends the whole object again (200): the
 * download starts over from it instead of appending it to what it had. */
START_TEST(test_s3_download_range_ignored_restarts)
{
    struct s3_client *direct = client_for(srv.endpoint, NULL, 0);
    struct strbuf err = STRBUF_INIT;
    char *src = random_file("ri.bin", 3 * 1024 * 1024 + 5, 12);
    ck_assert_int_eq(s3_put_file(direct, "ri/obj", src, NULL, NULL, NULL, &err), 0);
    struct proxy p;
    enum fault script[] = {F_CUT_RESPONSE, F_STRIP_RANGE};
    proxy_start(&p, script, 2, 1024 * 1024);
    char *ep = proxy_endpoint(&p);
    struct s3_client *c = client_for(ep, NULL, 0);
    char *dst = xasprintf("%s/ri.out", tmpdir);
    struct s3_object_info info;
    int rc = s3_get_file(c, "ri/obj", dst, NULL, &info, &err);
    ck_assert_msg(rc == 0, "get through a reset and an ignored Range: %s", err.buf);
    assert_same_file(src, dst);
    ck_assert_uint_eq(info.size, 3 * 1024 * 1024 + 5);
    ck_assert_int_eq(p.faults, 2);
    ck_assert_int_eq(requests_of(&p, "GET /art/ri/obj"), 2);
    free(src);
    free(dst);
    free(ep);
    strbuf_release(&err);
    s3_client_free(c);
    s3_client_free(direct);
    proxy_stop(&p);
}
END_TEST

/* S3's multipart ETag of a file cut in parts of part_size: MD5 of the parts' MD5s, "-N";
 * computed here independently of worker/s3.c. */
static void multipart_etag(char out[48], const char *path, uint64_t part_size)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    unsigned char *buf = xmalloc(part_size), md[16], all[16];
    unsigned int len = 16;
    EVP_MD_CTX *of_parts = EVP_MD_CTX_new(), *part = EVP_MD_CTX_new();
    EVP_DigestInit_ex(of_parts, EVP_md5(), NULL);
    unsigned n = 0;
    size_t got;
    while ((got = fread(buf, 1, part_size, f)) > 0) {
        EVP_DigestInit_ex(part, EVP_md5(), NULL);
        EVP_DigestUpdate(part, buf, got);
        EVP_DigestFinal_ex(part, md, &len);
        EVP_DigestUpdate(of_parts, md, 16);
        n++;
    }
    EVP_DigestFinal_ex(of_parts, all, &len);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", all[i]);
    snprintf(out + 32, 16, "-%u", n);
    EVP_MD_CTX_free(of_parts);
    EVP_MD_CTX_free(part);
    fclose(f);
    free(buf);
}

/* s3rver gives a multipart object the MD5 of its bytes as ETag; AWS, MinIO and Ceph give
 * "<MD5 of the parts' MD5s>-<parts>". The proxy plays the latter: a download recomputes it
 * part by part (x-amz-meta-sluice-part-size) and accepts the right one, refuses a wrong one
 * and leaves nothing behind. */
START_TEST(test_s3_download_checks_multipart_etag)
{
    struct s3_client *direct = client_for(srv.endpoint, NULL, S3_MIN_PART_SIZE);
    struct strbuf err = STRBUF_INIT;
    uint64_t size = 12ull * 1024 * 1024 + 3; /* parts of 5, 5 and 2 MiB + 3 bytes */
    char *src = random_file("me.bin", size, 13);
    ck_assert_int_eq(s3_put_file(direct, "me/obj", src, NULL, NULL, NULL, &err), 0);
    char want[48];
    multipart_etag(want, src, S3_MIN_PART_SIZE);
    ck_assert_msg(strstr(want, "-3") != NULL, "%s", want);

    struct proxy p;
    proxy_start(&p, NULL, 0, 0);
    snprintf(p.etag, sizeof(p.etag), "%s", want);
    char *ep = proxy_endpoint(&p);
    struct s3_client *c = client_for(ep, NULL, 0);
    char *dst = xasprintf("%s/me.out", tmpdir);
    struct s3_object_info info;
    int rc = s3_get_file(c, "me/obj", dst, NULL, &info, &err);
    ck_assert_msg(rc == 0, "get with the multipart ETag %s: %s", want, err.buf);
    ck_assert_str_eq(info.etag, want);
    assert_same_file(src, dst);
    unlink(dst);

    /* the same bytes with another multipart ETag: refused */
    p.etag[0] = p.etag[0] == '0' ? '1' : '0';
    strbuf_reset(&err);
    rc = s3_get_file(c, "me/obj", dst, NULL, NULL, &err);
    ck_assert_int_eq(rc, SL_EIO);
    ck_assert_msg(strstr(err.buf, "checksum mismatch") && strstr(err.buf, want), "%s", err.buf);
    ck_assert_int_ne(access(dst, F_OK), 0);
    char *part = xasprintf("%s.sluice-part", dst);
    ck_assert_int_ne(access(part, F_OK), 0);
    free(part);
    free(src);
    free(dst);
    free(ep);
    strbuf_release(&err);
    s3_client_free(c);
    s3_client_free(direct);
    proxy_stop(&p);
}
END_TEST

/* A part damaged on the way: its hasher (beside the transfer) gives a different MD5 than
 * the part's ETag, the part alone is sent again, hashed afresh, and the object is right. */
START_TEST(test_s3_multipart_corrupt_part_resent)
{
    /* connection 0 creates the upload, 1 carries the first part, damaged 1 MiB into it */
    struct proxy p;
    enum fault script[] = {F_FORWARD, F_CORRUPT_REQUEST};
    proxy_start(&p, script, 2, 1024 * 1024);
    char *ep = proxy_endpoint(&p);
    struct s3_client *c = client_for(ep, NULL, S3_MIN_PART_SIZE);
    struct strbuf err = STRBUF_INIT;
    char *src = random_file("mc.bin", 12 * 1024 * 1024, 14);
    int rc = s3_put_file(c, "mc/obj", src, NULL, NULL, NULL, &err);
    ck_assert_msg(rc == 0, "multipart through a corrupting proxy: %s", err.buf);
    ck_assert_int_eq(p.faults, 1);
    ck_assert_int_eq(requests_of(&p, "PUT /art/mc/obj?partNumber="),
                     4); /* three parts, the damaged one twice */
    struct s3_client *direct = client_for(srv.endpoint, NULL, 0);
    char *dst = xasprintf("%s/mc.out", tmpdir);
    ck_assert_int_eq(s3_get_file(direct, "mc/obj", dst, NULL, NULL, &err), 0);
    assert_same_file(src, dst);
    free(src);
    free(dst);
    free(ep);
    strbuf_release(&err);
    s3_client_free(c);
    s3_client_free(direct);
    proxy_stop(&p);
}
END_TEST

/* Every attempt damaged: each one's check fails, and after max_attempts the upload fails
 * with the reason instead of leaving a bad object reported as stored. */
START_TEST(test_s3_upload_always_corrupted_fails)
{
    struct proxy p;
    enum fault script[] = {F_CORRUPT_REQUESTS};
    proxy_start(&p, script, 1, 200 * 1000);
    p.fault_forever = true;
    char *ep = proxy_endpoint(&p);
    struct s3_client *c = client_for(ep, NULL, 0); /* 4 attempts */
    struct strbuf err = STRBUF_INIT;
    char *src = random_file("ac.bin", 1000 * 1000, 15);
    int rc = s3_put_file(c, "ac/obj", src, NULL, NULL, NULL, &err);
    ck_assert_int_eq(rc, SL_EIO);
    ck_assert_msg(strstr(err.buf, "is not the MD5 of the file's bytes"), "%s", err.buf);
    ck_assert_int_eq(requests_of(&p, "PUT /art/ac/obj"), 4);
    free(src);
    free(ep);
    strbuf_release(&err);
    s3_client_free(c);
    proxy_stop(&p);
}
END_TEST

START_TEST(test_s3_multipart_part_retried_after_reset)
{
    /* connection 0 creates the upload, 1 carries a part and is cut 1 MiB into it */
    struct proxy p;
    enum fault script[] = {F_FORWARD, F_CUT_REQUEST};
    proxy_start(&p, script, 2, 1024 * 1024);
    char *ep = proxy_endpoint(&p);
    struct s3_client *c = client_for(ep, NULL, S3_MIN_PART_SIZE);
    struct strbuf err = STRBUF_INIT;
    char *src = random_file("mp.bin", 12 * 1024 * 1024, 8);
    struct s3_object_info up;
    int rc = s3_put_file(c, "mp/obj", src, NULL, NULL, &up, &err);
    ck_assert_msg(rc == 0, "multipart through a reset: %s", err.buf);
    ck_assert_int_eq(p.faults, 1);
    ck_assert_int_eq(requests_of(&p, "PUT /art/mp/obj?partNumber="),
                     4); /* three parts, one of them twice */
    char *dst = xasprintf("%s/mp.out", tmpdir);
    ck_assert_int_eq(s3_get_file(c, "mp/obj", dst, NULL, NULL, &err), 0);
    assert_same_file(src, dst);
    free(src);
    free(dst);
    free(ep);
    strbuf_release(&err);
    s3_client_free(c);
    proxy_stop(&p);
}
END_TEST

START_TEST(test_s3_gives_up_after_max_attempts)
{
    struct proxy p;
    enum fault script[] = {F_SLOWDOWN};
    proxy_start(&p, script, 1, 0);
    p.fault_forever = true;
    char *ep = proxy_endpoint(&p);
    struct s3_client *c = client_for(ep, NULL, 0); /* 4 attempts */
    struct strbuf err = STRBUF_INIT;
    char *src = random_file("gu.bin", 1000, 9);
    int rc = s3_put_file(c, "gu/obj", src, NULL, NULL, NULL, &err);
    ck_assert_int_eq(rc, SL_EIO);
    ck_assert_msg(strstr(err.buf, "503 SlowDown"), "%s", err.buf);
    ck_assert_int_eq(p.connections, 4);
    free(src);
    free(ep);
    strbuf_release(&err);
    s3_client_free(c);
    proxy_stop(&p);
}
END_TEST

/* --- a large file in constant memory -------------------------------------------------------- */

/* Runs `sluice artifact <verb> a b` and returns its peak RSS in KiB (wait4's rusage). */
static long cli_peak_rss_kib(const char *verb, const char *a, const char *b)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* ASan keeps freed blocks in a quarantine (256 MiB by default) that would grow
         * with the number of requests, not with the client's own memory */
        setenv("ASAN_OPTIONS", "quarantine_size_mb=0:detect_leaks=1", 1);
        setenv("SLUICE_ARTIFACTS_REPOSITORY", "s3", 1);
        setenv("SLUICE_ARTIFACTS_ENDPOINT", srv.endpoint, 1);
        setenv("SLUICE_ARTIFACTS_BUCKET", "art", 1);
        setenv("SLUICE_ARTIFACTS_PATH_STYLE", "true", 1);
        setenv("AWS_ACCESS_KEY_ID", HARNESS_S3_ACCESS_KEY, 1);
        setenv("AWS_SECRET_ACCESS_KEY", HARNESS_S3_SECRET_KEY, 1);
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        execl(test_sluice_bin(), "sluice", "artifact", verb, a, b, (char *)NULL);
        _exit(127);
    }
    int status;
    struct rusage ru;
    ck_assert_int_eq(wait4(pid, &status, 0, &ru), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "sluice artifact %s %s %s: %d",
                  verb, a, b, status);
    return ru.ru_maxrss;
}

/* Up and down through the CLI; returns the larger of the two peaks. */
static long round_trip_peak_rss_kib(uint64_t size, const char *name)
{
    char *src = random_file(name, size, (uint32_t)size);
    char *dst = xasprintf("%s.out", src);
    long up = cli_peak_rss_kib("put", name, src);
    long down = cli_peak_rss_kib("get", name, dst);
    assert_same_file(src, dst);
    unlink(src);
    unlink(dst);
    free(src);
    free(dst);
    return up > down ? up : down;
}

START_TEST(test_s3_large_file_constant_memory)
{
    /* multipart both (16 MiB parts, 4 in flight): 1 GiB may not cost more memory than
     * 128 MiB does - a client that buffered objects would need 896 MiB more */
    long small = round_trip_peak_rss_kib(128ull << 20, "rss-128m");
    long large = round_trip_peak_rss_kib(1024ull << 20, "rss-1g");
    ck_assert_msg(large - small < 16 * 1024,
                  "peak RSS %ld MiB for 1 GiB against %ld MiB for 128 MiB", large / 1024,
                  small / 1024);
    ck_assert_msg(large < 200 * 1024, "peak RSS %ld MiB for 1 GiB", large / 1024);
}
END_TEST

Suite *suite_integration_s3(void)
{
    Suite *s = suite_create("integration_s3");
    TCase *tc = tcase_create("s3");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_s3_round_trip_single);
    tcase_add_test(tc, test_s3_round_trip_multipart);
    tcase_add_test(tc, test_s3_errors_are_clear);
    tcase_add_test(tc, test_s3_download_checksum_mismatch);
    tcase_add_test(tc, test_s3_retries_slowdown);
    tcase_add_test(tc, test_s3_upload_corruption_detected);
    tcase_add_test(tc, test_s3_download_resumes_after_reset);
    tcase_add_test(tc, test_s3_multipart_part_retried_after_reset);
    tcase_add_test(tc, test_s3_gives_up_after_max_attempts);
    tcase_add_test(tc, test_s3_download_range_ignored_restarts);
    tcase_add_test(tc, test_s3_download_checks_multipart_etag);
    tcase_add_test(tc, test_s3_multipart_corrupt_part_resent);
    tcase_add_test(tc, test_s3_upload_always_corrupted_fails);
    suite_add_tcase(s, tc);
    TCase *large = tcase_create("s3_large");
    tcase_add_unchecked_fixture(large, setup, teardown);
    tcase_set_timeout(large, 600);
    tcase_add_test(large, test_s3_large_file_constant_memory);
    suite_add_tcase(s, large);
    return s;
}
