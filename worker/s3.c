/*
 * worker/s3.c - the S3 client (see s3.h for the contract).
 *
 * One request is one struct xfer: a curl easy handle, the signed headers, the body source
 * (a file range read with pread(), or a small buffer), and what came back (status, the
 * headers we care about, an error body, or the object's bytes into a file). xfer_run()
 * performs one with retries; the multipart upload drives up to parallel_parts xfers
 * through one curl multi handle, each part retried on its own with a backoff deadline.
 *
 *   s3_put_file: size <= threshold  -> PUT (MD5 of the file's bytes == ETag)
 *                size >  threshold  -> POST ?uploads -> PUT ?partNumber&uploadId (parallel)
 *                                      -> POST ?uploadId (complete) | DELETE ?uploadId (abort)
 *   s3_get_file: GET -> <path>.sluice-part, resumed with Range/If-Match on retries,
 *                MD5 (or multipart ETag) of the file checked, renamed over path
 *
 * Every request is signed afresh (the date changes between retries). The payload is sent
 * as UNSIGNED-PAYLOAD when it is a file (hashing 1 GiB for the signature would read it one
 * more time, before the first byte could go) and its integrity rides on the MD5 that a
 * hasher (below) computes beside the transfer, compared with the ETag; small XML bodies
 * are signed.
 *
 * Speed: the thread that drives libcurl only moves bytes (pread() into curl's 1 MiB upload
 * buffer; what arrives gathered into 512 KiB buffers, one write() each, rather than one
 * per 16 KiB that curl hands over); MD5 runs on hasher threads, one per request in
 * flight. bench/bench_s3.c measures it next to curl (bench/README.md).
 */
#include "worker/s3.h"

#include "common/error.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "worker/sigv4.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_ERROR_BODY (64 * 1024)

struct s3_client {
    char *scheme;    /* "http" or "https" */
    char *authority; /* "host[:port]" */
    char *base_path; /* "" or "/prefix" without a trailing '/' */
    char *bucket;
    char *region;
    bool path_style;
    char *access_key_id;
    char *secret_access_key;
    char *session_token;
    uint64_t threshold;
    uint64_t part_size;
    int parallel;
    int max_attempts;
    int64_t retry_base_ms;
    int64_t connect_timeout_ms;
    int64_t stall_timeout_ms;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
}

/* --- configuration --------------------------------------------------------------------- */

static char *dup_or(const char *s, const char *def)
{
    return xstrdup(s && *s ? s : def);
}

/* A bucket name that can be a DNS label for virtual-host addressing. */
static bool dns_bucket(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = b[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
            return false;
    }
    return b[0] != '-' && b[n - 1] != '-';
}

int s3_client_new(struct s3_client **out, const struct s3_config *cfg, struct strbuf *err)
{
    const char *ep = cfg ? cfg->endpoint : NULL;
    const char *rest;

    pthread_once(&curl_once, curl_init_once);
    if (!ep || !*ep) {
        strbuf_addstr(err, "s3: no endpoint");
        return SL_EINVAL;
    }
    bool https = !strncasecmp(ep, "https://", 8);
    if (!https && strncasecmp(ep, "http://", 7) != 0) {
        strbuf_addf(err, "s3: endpoint '%s' is not an http:// or https:// URL", ep);
        return SL_EINVAL;
    }
    rest = ep + (https ? 8 : 7);
    size_t alen = strcspn(rest, "/?#");
    if (alen == 0 || rest[alen] == '?' || rest[alen] == '#' || memchr(rest, '@', alen)) {
        strbuf_addf(err, "s3: endpoint '%s' must be scheme://host[:port][/path]", ep);
        return SL_EINVAL;
    }
    if (!cfg->bucket || !*cfg->bucket || strchr(cfg->bucket, '/')) {
        strbuf_addstr(err, "s3: no bucket, or a bucket name with '/'");
        return SL_EINVAL;
    }
    if (!cfg->path_style && !dns_bucket(cfg->bucket)) {
        strbuf_addf(err,
                    "s3: bucket '%s' cannot be a host name (virtual-host style): set path-style "
                    "addressing",
                    cfg->bucket);
        return SL_EINVAL;
    }
    if ((cfg->access_key_id && *cfg->access_key_id) !=
        (cfg->secret_access_key && *cfg->secret_access_key)) {
        strbuf_addstr(err, "s3: an access key id needs a secret access key, and the other way "
                           "round");
        return SL_EINVAL;
    }
    if (cfg->part_size && cfg->part_size < S3_MIN_PART_SIZE) {
        strbuf_addstr(err, "s3: the part size must be at least 5 MiB");
        return SL_EINVAL;
    }

    struct s3_client *c = xcalloc(1, sizeof(*c));
    c->scheme = xstrdup(https ? "https" : "http");
    c->authority = xstrndup(rest, alen);
    for (char *p = c->authority; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    c->base_path = xstrdup(rest + alen);
    size_t bl = strlen(c->base_path);
    while (bl > 0 && c->base_path[bl - 1] == '/')
        c->base_path[--bl] = '\0';
    c->bucket = xstrdup(cfg->bucket);
    c->region = dup_or(cfg->region, "us-east-1");
    c->path_style = cfg->path_style;
    if (cfg->access_key_id && *cfg->access_key_id) {
        c->access_key_id = xstrdup(cfg->access_key_id);
        c->secret_access_key = xstrdup(cfg->secret_access_key);
    }
    if (cfg->session_token && *cfg->session_token)
        c->session_token = xstrdup(cfg->session_token);
    c->threshold = cfg->multipart_threshold ? cfg->multipart_threshold : S3_DEFAULT_THRESHOLD;
    c->part_size = cfg->part_size ? cfg->part_size : S3_DEFAULT_PART_SIZE;
    c->parallel = cfg->parallel_parts > 0 ? cfg->parallel_parts : S3_DEFAULT_PARALLEL;
    c->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : S3_DEFAULT_MAX_ATTEMPTS;
    c->retry_base_ms = cfg->retry_base_ms > 0 ? cfg->retry_base_ms : S3_DEFAULT_RETRY_BASE_MS;
    c->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 10000;
    c->stall_timeout_ms = cfg->stall_timeout_ms > 0 ? cfg->stall_timeout_ms : 60000;
    *out = c;
    return 0;
}

static void free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

void s3_client_free(struct s3_client *c)
{
    if (!c)
        return;
    free(c->scheme);
    free(c->authority);
    free(c->base_path);
    free(c->bucket);
    free(c->region);
    free(c->access_key_id);
    free_secret(c->secret_access_key);
    free_secret(c->session_token);
    free(c);
}

char *s3_url(const struct s3_client *c, const char *key)
{
    return xasprintf("s3://%s/%s", c->bucket, key ? key : "");
}

/* --- hashing helpers ------------------------------------------------------------------- */

static void hex(char *out, const unsigned char *in, size_t n)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/*
 * A hasher is one thread computing the MD5 of a transfer's bytes while the transfer moves
 * them, so that hashing (about 650 MB/s a core) runs beside the network instead of in the
 * thread that drives libcurl, and the parts of a multipart upload hash on as many cores
 * as there are parts in flight. Two ways to get the bytes:
 *
 * - from the file (uploads): the thread reads the request's range of the file with
 *   pread() into a buffer of its own. The bytes are in the page cache (curl is reading
 *   the same range), so that is a memory copy, not a second disk read; and it does not
 *   care how often curl rewinds. What it proves is what the upload promises: the object
 *   S3 stored (its ETag) is the file's bytes.
 * - from buffers passed along (downloads): the transfer gathers what arrives in one of
 *   HASH_NBUF buffers of HASH_BUF_SIZE, writes a full buffer to the file (one write()
 *   per buffer instead of one per 16 KiB callback), then hands it to the hasher, which
 *   gives it back once hashed; the transfer waits for a free buffer only when the hasher
 *   is HASH_NBUF buffers behind. What it proves: the bytes written to the file are the
 *   object's.
 *
 * The thread owns the digest state until hasher_finish() (or hasher_stop()) has joined it.
 *
 *   hasher_start ──> running ──hasher_finish──> joined, checksum out
 *                       │
 *                       └──hasher_stop──> joined, nothing (the attempt failed)
 *
 * If no thread can be made, the bytes are hashed in the caller's thread instead (at
 * hasher_finish for a file range, at hasher_submit for buffers): slower, as correct.
 */
#define HASH_BUF_SIZE (512 * 1024)
#define HASH_NBUF     4

struct hasher {
    pthread_t thread;
    bool running;         /* started and not joined yet */
    bool threaded;        /* with a thread of its own */
    bool from_file;       /* true: [off, off + len) of fd; false: buffers passed along */
    pthread_mutex_t mu;   /* guards the queue, the free list, final */
    pthread_cond_t work;  /* the hasher waits on it for a buffer (or final, stop) */
    pthread_cond_t space; /* the transfer waits on it for a free buffer */
    bool final;           /* nothing more will be submitted */
    atomic_bool stop;     /* abandon as soon as possible */
    int fd;               /* from_file: not owned */
    uint64_t off, len;
    unsigned char *pool[HASH_NBUF]; /* buffers, allocated at the first buffered start */
    size_t fill[HASH_NBUF];         /* bytes in each queued buffer */
    int queue[HASH_NBUF];           /* queued buffers, oldest at q_head */
    unsigned q_head, q_count;
    int free_list[HASH_NBUF];
    unsigned n_free;
    uint64_t part_size; /* 0: one MD5 of everything; else S3's multipart ETag */
    /* owned by the thread while it runs */
    uint64_t hashed;      /* bytes hashed */
    int read_errno;       /* a failed read (EIO for a file that shrank), or 0 */
    EVP_MD_CTX *md5;      /* everything, or the current part */
    EVP_MD_CTX *of_parts; /* the parts' MD5s, in part_size mode */
    uint64_t part_filled; /* bytes of the current part */
    unsigned n_parts;     /* parts finished */
};

static void hasher_feed(struct hasher *h, const unsigned char *p, size_t len)
{
    h->hashed += len;
    if (!h->part_size) {
        EVP_DigestUpdate(h->md5, p, len);
        return;
    }
    while (len > 0) {
        uint64_t room = h->part_size - h->part_filled;
        size_t take = len < room ? len : (size_t)room;
        EVP_DigestUpdate(h->md5, p, take);
        h->part_filled += take;
        p += take;
        len -= take;
        if (h->part_filled == h->part_size) {
            unsigned char md[16];
            unsigned int mdlen = 16;
            EVP_DigestFinal_ex(h->md5, md, &mdlen);
            EVP_DigestUpdate(h->of_parts, md, 16);
            EVP_DigestInit_ex(h->md5, EVP_md5(), NULL);
            h->part_filled = 0;
            h->n_parts++;
        }
    }
}

/* Hashes the file range, in whichever thread calls it. */
static void hasher_hash_file(struct hasher *h)
{
    unsigned char *buf = xmalloc(HASH_BUF_SIZE);
    while (h->hashed < h->len && !atomic_load(&h->stop)) {
        uint64_t left = h->len - h->hashed;
        size_t want = left < HASH_BUF_SIZE ? (size_t)left : HASH_BUF_SIZE;
        ssize_t r = pread(h->fd, buf, want, (off_t)(h->off + h->hashed));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            h->read_errno = r < 0 ? errno : EIO; /* EIO: the file shrank */
            break;
        }
        hasher_feed(h, buf, (size_t)r);
    }
    free(buf);
}

static void *hasher_main(void *data)
{
    struct hasher *h = data;
    if (h->from_file) {
        hasher_hash_file(h);
        return NULL;
    }
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (!atomic_load(&h->stop) && h->q_count == 0 && !h->final)
            pthread_cond_wait(&h->work, &h->mu);
        if (atomic_load(&h->stop) || h->q_count == 0)
            break;
        int i = h->queue[h->q_head];
        pthread_mutex_unlock(&h->mu);
        hasher_feed(h, h->pool[i], h->fill[i]);
        pthread_mutex_lock(&h->mu);
        h->q_head = (h->q_head + 1) % HASH_NBUF;
        h->q_count--;
        h->free_list[h->n_free++] = i;
        pthread_cond_signal(&h->space);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* An MD5 context; out of memory aborts, as the xmalloc family does. */
static EVP_MD_CTX *md5_ctx_new(void)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c) {
        fprintf(stderr, "fatal: out of memory allocating an MD5 context\n");
        abort();
    }
    return c;
}

static void hasher_reset(struct hasher *h, uint64_t part_size)
{
    if (!h->md5) {
        h->md5 = md5_ctx_new();
        h->of_parts = md5_ctx_new();
        pthread_mutex_init(&h->mu, NULL);
        pthread_cond_init(&h->work, NULL);
        pthread_cond_init(&h->space, NULL);
    }
    EVP_DigestInit_ex(h->md5, EVP_md5(), NULL);
    EVP_DigestInit_ex(h->of_parts, EVP_md5(), NULL);
    h->final = false;
    atomic_store(&h->stop, false);
    h->part_size = part_size;
    h->hashed = 0;
    h->read_errno = 0;
    h->part_filled = 0;
    h->n_parts = 0;
    h->q_head = h->q_count = 0;
    h->n_free = 0;
    for (int i = 0; i < HASH_NBUF && !h->from_file; i++) {
        if (!h->pool[i])
            h->pool[i] = xmalloc(HASH_BUF_SIZE);
        h->free_list[h->n_free++] = i;
    }
}

static void hasher_spawn(struct hasher *h)
{
    h->threaded = pthread_create(&h->thread, NULL, hasher_main, h) == 0;
    h->running = true;
}

/* Starts hashing [off, off + len) of fd (an upload's range). h: zeroed, or stopped or
 * finished before. */
static void hasher_start_file(struct hasher *h, int fd, uint64_t off, uint64_t len)
{
    h->from_file = true;
    hasher_reset(h, 0);
    h->fd = fd;
    h->off = off;
    h->len = len;
    hasher_spawn(h);
}

/* Starts hashing buffers passed with hasher_get() / hasher_submit() (a download).
 * part_size 0: one MD5; else the multipart ETag's parts of that size. */
static void hasher_start_buffers(struct hasher *h, uint64_t part_size)
{
    h->from_file = false;
    hasher_reset(h, part_size);
    hasher_spawn(h);
}

/* A free buffer of HASH_BUF_SIZE to fill, waiting while the hasher is behind. */
static int hasher_get(struct hasher *h)
{
    pthread_mutex_lock(&h->mu);
    while (h->n_free == 0)
        pthread_cond_wait(&h->space, &h->mu);
    int i = h->free_list[--h->n_free];
    pthread_mutex_unlock(&h->mu);
    return i;
}

/* Hands buffer i, holding len bytes that follow every buffer submitted before, to the
 * hasher; the buffer is the hasher's until hasher_get() returns it again. */
static void hasher_submit(struct hasher *h, int i, size_t len)
{
    if (!h->threaded) {
        hasher_feed(h, h->pool[i], len);
        pthread_mutex_lock(&h->mu);
        h->free_list[h->n_free++] = i;
        pthread_mutex_unlock(&h->mu);
        return;
    }
    pthread_mutex_lock(&h->mu);
    h->fill[i] = len;
    h->queue[(h->q_head + h->q_count) % HASH_NBUF] = i;
    h->q_count++;
    pthread_cond_signal(&h->work);
    pthread_mutex_unlock(&h->mu);
}

static void hasher_join(struct hasher *h)
{
    if (h->threaded) {
        pthread_mutex_lock(&h->mu);
        pthread_cond_signal(&h->work);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->thread, NULL);
    } else if (h->from_file && !atomic_load(&h->stop)) {
        hasher_hash_file(h);
    }
    h->running = false;
}

/* Abandons a running hasher (the attempt failed, or the download starts over). */
static void hasher_stop(struct hasher *h)
{
    if (!h->running)
        return;
    atomic_store(&h->stop, true);
    hasher_join(h);
}

/*
 * Waits for every byte to be hashed and joins the thread. Returns 0 with the checksum in
 * out as S3 writes ETags ("<md5 hex>" or "<md5 hex>-<parts>") and the raw MD5 in md (may
 * be NULL); or -errno of a failed read.
 */
static int hasher_finish(struct hasher *h, char out[48], unsigned char md[16])
{
    if (!h->running)
        return -EINVAL;
    pthread_mutex_lock(&h->mu);
    h->final = true;
    pthread_mutex_unlock(&h->mu);
    hasher_join(h);
    if (h->read_errno)
        return -h->read_errno;
    unsigned char d[16];
    unsigned int mdlen = 16;
    if (h->part_size) {
        if (h->part_filled > 0 || h->n_parts == 0) {
            EVP_DigestFinal_ex(h->md5, d, &mdlen);
            EVP_DigestUpdate(h->of_parts, d, 16);
            h->n_parts++;
        }
        EVP_DigestFinal_ex(h->of_parts, d, &mdlen);
        hex(out, d, 16);
        snprintf(out + 32, 48 - 32, "-%u", h->n_parts);
    } else {
        EVP_DigestFinal_ex(h->md5, d, &mdlen);
        hex(out, d, 16);
    }
    if (md)
        memcpy(md, d, 16);
    return 0;
}

/* Stops the thread if it runs and frees what the hasher holds. */
static void hasher_release(struct hasher *h)
{
    hasher_stop(h);
    if (h->md5) {
        EVP_MD_CTX_free(h->md5);
        EVP_MD_CTX_free(h->of_parts);
        pthread_mutex_destroy(&h->mu);
        pthread_cond_destroy(&h->work);
        pthread_cond_destroy(&h->space);
    }
    for (int i = 0; i < HASH_NBUF; i++)
        free(h->pool[i]);
    memset(h, 0, sizeof(*h));
}

/* --- one request ---------------------------------------------------------------------------- */

struct xfer {
    struct s3_client *c;
    CURL *easy;
    struct curl_slist *headers;
    char *url;
    char *what; /* "PUT s3://b/k", for messages */
    const atomic_int *cancel;

    /* the request */
    const char *method;
    const char *key;   /* NULL: the bucket */
    const char *query; /* NULL: none */
    int in_fd;         /* >= 0: the body is [in_off, in_off + in_len) of this file */
    uint64_t in_off, in_len, in_pos;
    const char *in_mem; /* else this buffer, if not NULL */
    size_t in_mem_len;
    struct hasher hash;        /* upload: MD5 of the file range; download: of the file */
    unsigned char sent_md[16]; /* an upload's MD5, once checked */
    const char *const *metadata;
    char range_from[32]; /* "" or "bytes=N-" */
    char if_match[84];   /* "" or "\"etag\"" */
    char part_size_meta[24];

    /* a download */
    int out_fd;                /* >= 0: a 200/206 body goes here */
    int wbuf;                  /* the hasher's buffer being filled, or -1 */
    uint64_t out_written;      /* bytes of this try's body */
    uint64_t total_written;    /* over every try; in the file once flushed (after a try) */
    unsigned char *own_buf;    /* the buffer being filled when nothing is hashed */
    size_t wfill;              /* bytes in it */
    struct s3_object_info obj; /* what a 200 told (have_obj): size, ETag, kind */
    uint64_t obj_part_size;    /* its x-amz-meta-sluice-part-size, 0 if none */
    bool have_obj;
    bool obj_sized;         /* it had a Content-Length (else the size is what came) */
    bool hashing;           /* its bytes are being hashed (the ETag is an MD5) */
    char range_error[256];  /* why on_write refused a body, or "" */
    char content_range[80]; /* the response's Content-Range */

    /* the response */
    long status;
    struct strbuf body; /* an error's XML, or a small answer's */
    char etag[80];
    char resp_part_size[24];
    char resp_kind[16];
    char bucket_region[64];
    uint64_t content_length;
    bool have_length;
    CURLcode cc;
    char curl_err[CURL_ERROR_SIZE];
};

static void xfer_reset_response(struct xfer *x)
{
    x->status = 0;
    strbuf_reset(&x->body);
    x->etag[0] = x->resp_part_size[0] = x->bucket_region[0] = x->resp_kind[0] = '\0';
    x->content_length = 0;
    x->have_length = false;
    x->cc = CURLE_OK;
    x->curl_err[0] = '\0';
    x->out_written = 0;
    x->in_pos = 0;
    x->range_error[0] = x->content_range[0] = '\0';
}

static void xfer_init(struct xfer *x, struct s3_client *c, const char *method, const char *key,
                      const char *query, const atomic_int *cancel)
{
    memset(x, 0, sizeof(*x));
    x->c = c;
    x->method = method;
    x->key = key;
    x->query = query;
    x->cancel = cancel;
    x->in_fd = -1;
    x->out_fd = -1;
    x->wbuf = -1;
    strbuf_init(&x->body, 0);
    char *u = s3_url(c, key);
    x->what = xasprintf("%s %s", method, u);
    free(u);
}

static void xfer_release(struct xfer *x)
{
    if (x->easy)
        curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    free(x->url);
    free(x->what);
    strbuf_release(&x->body);
    hasher_release(&x->hash);
    free(x->own_buf);
    memset(x, 0, sizeof(*x));
}

static bool header_is(const char *name, size_t len, const char *want)
{
    return len == strlen(want) && !strncasecmp(name, want, len);
}

static size_t on_header(char *buf, size_t size, size_t n, void *data)
{
    struct xfer *x = data;
    size_t len = size * n;
    if (len >= 5 && !strncmp(buf, "HTTP/", 5)) {
        /* a new response (after 100 Continue): forget the previous one's headers */
        x->etag[0] = x->resp_part_size[0] = x->bucket_region[0] = x->resp_kind[0] = '\0';
        x->content_range[0] = '\0';
        x->have_length = false;
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (!colon)
        return len;
    size_t nlen = (size_t)(colon - buf);
    const char *v = colon + 1;
    const char *end = buf + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t vlen = (size_t)(end - v);
    char *dst = NULL;
    size_t cap = 0;
    if (header_is(buf, nlen, "etag")) {
        if (vlen >= 2 && v[0] == '"' && end[-1] == '"') {
            v++;
            vlen -= 2;
        }
        dst = x->etag;
        cap = sizeof(x->etag);
    } else if (header_is(buf, nlen, "x-amz-meta-sluice-part-size")) {
        dst = x->resp_part_size;
        cap = sizeof(x->resp_part_size);
    } else if (header_is(buf, nlen, "x-amz-meta-sluice-kind")) {
        dst = x->resp_kind;
        cap = sizeof(x->resp_kind);
    } else if (header_is(buf, nlen, "content-range")) {
        dst = x->content_range;
        cap = sizeof(x->content_range);
    } else if (header_is(buf, nlen, "x-amz-bucket-region")) {
        dst = x->bucket_region;
        cap = sizeof(x->bucket_region);
    } else if (header_is(buf, nlen, "content-length")) {
        char tmp[32];
        if (vlen < sizeof(tmp)) {
            memcpy(tmp, v, vlen);
            tmp[vlen] = '\0';
            char *e;
            unsigned long long l = strtoull(tmp, &e, 10);
            if (!*e && vlen) {
                x->content_length = l;
                x->have_length = true;
            }
        }
    }
    if (dst) {
        if (vlen >= cap)
            vlen = cap - 1;
        memcpy(dst, v, vlen);
        dst[vlen] = '\0';
    }
    return len;
}

/* The buffer that received bytes go into: the hasher's when hashing, else our own. */
static unsigned char *download_buffer(struct xfer *x)
{
    if (!x->hashing) {
        if (!x->own_buf)
            x->own_buf = xmalloc(HASH_BUF_SIZE);
        return x->own_buf;
    }
    if (x->wbuf < 0)
        x->wbuf = hasher_get(&x->hash);
    return x->hash.pool[x->wbuf];
}

/* Writes the bytes gathered so far to the file and hands them to the hasher. Returns 0,
 * or -1 with errno set. */
static int download_flush(struct xfer *x)
{
    if (x->wfill == 0)
        return 0;
    const unsigned char *b = x->hashing ? x->hash.pool[x->wbuf] : x->own_buf;
    for (size_t done = 0; done < x->wfill;) {
        ssize_t w = write(x->out_fd, b + done, x->wfill - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        done += (size_t)w;
    }
    if (x->hashing) {
        hasher_submit(&x->hash, x->wbuf, x->wfill);
        x->wbuf = -1;
    }
    x->wfill = 0;
    return 0;
}

/* Truncates a download's file and forgets its bytes: the next body starts from zero. */
static int download_restart(struct xfer *x)
{
    hasher_stop(&x->hash);
    x->hashing = false;
    x->wbuf = -1;
    x->wfill = 0;
    x->total_written = 0;
    if (ftruncate(x->out_fd, 0) < 0 || lseek(x->out_fd, 0, SEEK_SET) < 0)
        return -1;
    return 0;
}

/*
 * At the first body byte of a 200 or 206: a 200 is the whole object, and its headers say
 * what the object is (size, ETag, part size, kind), which decides the check; a 206 must
 * continue the same object exactly where the file ends. Returns false (the transfer fails,
 * range_error says why) when it cannot be used.
 */
static bool download_begin(struct xfer *x, long status)
{
    if (status == 200) {
        /* a first answer, or a server that ignored Range (If-Match held, so the same
         * object): either way the body is the object from its first byte */
        if ((x->total_written > 0 || x->hash.running) && download_restart(x) < 0) {
            snprintf(x->range_error, sizeof(x->range_error), "cannot truncate: %s",
                     strerror(errno));
            return false;
        }
        memset(&x->obj, 0, sizeof(x->obj));
        x->obj_sized = x->have_length;
        x->obj.size = x->content_length;
        snprintf(x->obj.etag, sizeof(x->obj.etag), "%s", x->etag);
        snprintf(x->obj.kind, sizeof(x->obj.kind), "%s", x->resp_kind);
        x->obj_part_size = strtoull(x->resp_part_size[0] ? x->resp_part_size : "0", NULL, 10);
        x->have_obj = true;
        const char *etag = x->obj.etag;
        const char *dash = strchr(etag, '-');
        bool plain = strlen(etag) == 32 && strspn(etag, "0123456789abcdef") == 32;
        bool multi = dash && dash - etag == 32 && strspn(etag, "0123456789abcdef") == 32 &&
                     x->obj_part_size > 0;
        x->hashing = plain || multi;
        if (x->hashing)
            hasher_start_buffers(&x->hash, plain ? 0 : x->obj_part_size);
        else
            sl_debug("s3", "s3 GET %s: ETag %s is not an MD5: checking the length only", x->key,
                     etag);
        return true;
    }
    /* 206: "bytes START-END/TOTAL" must start where the file ends */
    unsigned long long from = 0, to = 0, total = 0;
    const char *cr = x->content_range;
    char *e = NULL;
    bool ok = !strncasecmp(cr, "bytes ", 6);
    if (ok) {
        from = strtoull(cr + 6, &e, 10);
        ok = *e == '-';
    }
    if (ok) {
        to = strtoull(e + 1, &e, 10);
        ok = *e == '/';
    }
    if (ok)
        total = strtoull(e + 1, &e, 10);
    if (!ok || !x->have_obj || from != x->total_written || to < from ||
        (x->obj_sized && total != x->obj.size)) {
        snprintf(x->range_error, sizeof(x->range_error),
                 "a partial answer (Content-Range '%s') that does not continue the %llu bytes "
                 "received",
                 cr, (unsigned long long)x->total_written);
        return false;
    }
    return true;
}

static size_t on_write(char *buf, size_t size, size_t n, void *data)
{
    struct xfer *x = data;
    size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (x->out_fd >= 0 && (status == 200 || status == 206)) {
        if (x->out_written == 0 && !download_begin(x, status))
            return 0; /* CURLE_WRITE_ERROR */
        for (size_t done = 0; done < len;) {
            unsigned char *b = download_buffer(x);
            size_t take =
                len - done < HASH_BUF_SIZE - x->wfill ? len - done : HASH_BUF_SIZE - x->wfill;
            memcpy(b + x->wfill, buf + done, take);
            x->wfill += take;
            done += take;
            if (x->wfill == HASH_BUF_SIZE && download_flush(x) < 0)
                return 0; /* CURLE_WRITE_ERROR */
        }
        x->out_written += len;
        x->total_written += len;
        return len;
    }
    if (x->body.len + len > MAX_ERROR_BODY)
        return len; /* keep the start; an error's XML is small */
    strbuf_add(&x->body, buf, len);
    return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *data)
{
    struct xfer *x = data;
    size_t want = size * n;
    if (x->in_fd >= 0) {
        uint64_t left = x->in_len - x->in_pos;
        if (want > left)
            want = (size_t)left;
        if (want == 0)
            return 0;
        for (;;) {
            ssize_t r = pread(x->in_fd, buf, want, (off_t)(x->in_off + x->in_pos));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return CURL_READFUNC_ABORT; /* the file shrank or cannot be read */
            x->in_pos += (uint64_t)r;
            return (size_t)r;
        }
    }
    size_t left = x->in_mem_len - (size_t)x->in_pos;
    if (want > left)
        want = left;
    memcpy(buf, x->in_mem + x->in_pos, want);
    x->in_pos += want;
    return want;
}

static int on_seek(void *data, curl_off_t offset, int origin)
{
    struct xfer *x = data;
    uint64_t len = x->in_fd >= 0 ? x->in_len : x->in_mem_len;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > len)
        return CURL_SEEKFUNC_CANTSEEK;
    x->in_pos = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static int on_progress(void *data, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct xfer *x = data;
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return x->cancel && atomic_load(x->cancel) ? 1 : 0;
}

/* Builds (or rebuilds, for a retry) the easy handle: URL, signed headers, body. */
static void xfer_prepare(struct xfer *x)
{
    struct s3_client *c = x->c;
    struct strbuf path = STRBUF_INIT, url = STRBUF_INIT, host = STRBUF_INIT;

    /* the decoded path to sign, and the same path encoded for the URL */
    strbuf_addstr(&path, c->base_path);
    if (c->path_style) {
        strbuf_addf(&path, "/%s", c->bucket);
        strbuf_addf(&host, "%s", c->authority);
    } else {
        strbuf_addf(&host, "%s.%s", c->bucket, c->authority);
    }
    strbuf_addch(&path, '/');
    if (x->key)
        strbuf_addstr(&path, x->key);
    strbuf_addf(&url, "%s://%s", c->scheme, host.buf);
    sigv4_uri_encode(&url, path.buf, path.len, true);
    if (x->query && *x->query)
        strbuf_addf(&url, "?%s", x->query);
    free(x->url);
    x->url = strbuf_detach(&url, NULL);

    char date[17];
    sigv4_amz_date(date, sl_wall_ms() / 1000);
    char body_hash[65];
    if (x->in_fd >= 0)
        snprintf(body_hash, sizeof(body_hash), "%s", SIGV4_UNSIGNED_PAYLOAD);
    else
        sigv4_sha256_hex(body_hash, x->in_mem ? x->in_mem : "", x->in_mem ? x->in_mem_len : 0);

    struct sigv4_header h[48];
    char *owned[48];
    size_t n = 0, n_owned = 0;
    h[n++] = (struct sigv4_header){"Host", host.buf};
    h[n++] = (struct sigv4_header){"X-Amz-Date", date};
    h[n++] = (struct sigv4_header){"X-Amz-Content-Sha256", body_hash};
    if (c->session_token)
        h[n++] = (struct sigv4_header){"X-Amz-Security-Token", c->session_token};
    if (x->range_from[0])
        h[n++] = (struct sigv4_header){"Range", x->range_from};
    if (x->if_match[0])
        h[n++] = (struct sigv4_header){"If-Match", x->if_match};
    if (x->part_size_meta[0])
        h[n++] = (struct sigv4_header){"X-Amz-Meta-Sluice-Part-Size", x->part_size_meta};
    for (size_t i = 0; x->metadata && x->metadata[i] && n < 40; i++) {
        const char *eq = strchr(x->metadata[i], '=');
        if (!eq || eq == x->metadata[i])
            continue;
        char *name = xasprintf("X-Amz-Meta-%.*s", (int)(eq - x->metadata[i]), x->metadata[i]);
        owned[n_owned++] = name;
        h[n++] = (struct sigv4_header){name, eq + 1};
    }

    curl_slist_free_all(x->headers);
    x->headers = NULL;
    for (size_t i = 0; i < n; i++) {
        char *line = xasprintf("%s: %s", h[i].name, h[i].value);
        x->headers = curl_slist_append(x->headers, line);
        OPENSSL_cleanse(line, strlen(line));
        free(line);
    }
    if (c->access_key_id) {
        struct sigv4_request sr = {.method = x->method,
                                   .path = path.buf,
                                   .query = x->query,
                                   .headers = h,
                                   .n_headers = n,
                                   .payload_hash = body_hash,
                                   .access_key_id = c->access_key_id,
                                   .secret_access_key = c->secret_access_key,
                                   .region = c->region,
                                   .service = "s3"};
        struct sigv4_result res;
        if (sigv4_sign(&res, &sr) == 0) {
            char *line = xasprintf("Authorization: %s", res.authorization);
            x->headers = curl_slist_append(x->headers, line);
            free(line);
            sigv4_result_release(&res);
        }
    }
    x->headers = curl_slist_append(x->headers, "Expect:");
    x->headers = curl_slist_append(x->headers, "Accept:");
    for (size_t i = 0; i < n_owned; i++)
        free(owned[i]);

    if (x->in_fd >= 0) {
        /* every attempt hashes the range afresh, beside the transfer */
        hasher_stop(&x->hash);
        hasher_start_file(&x->hash, x->in_fd, x->in_off, x->in_len);
    }
    if (!x->easy)
        x->easy = curl_easy_init();
    else
        curl_easy_reset(x->easy);
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)((c->stall_timeout_ms + 999) / 1000));
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->curl_err);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "sluice");
    /* large socket buffers matter for loopback and long fat networks alike */
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 1024L * 1024L);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 512L * 1024L);
    if (!strcmp(x->method, "PUT")) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, x);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE,
                         (curl_off_t)(x->in_fd >= 0 ? x->in_len : x->in_mem_len));
    } else if (!strcmp(x->method, "POST")) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->in_mem ? x->in_mem : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->in_mem_len);
    } else if (!strcmp(x->method, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(x->method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, x->method);
    }
    xfer_reset_response(x);
    strbuf_release(&path);
    strbuf_release(&host);
}

/* The text of <tag>...</tag> in xml, or "" (static buffer per call site: out). */
static void xml_value(char *out, size_t cap, const char *xml, const char *tag)
{
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    out[0] = '\0';
    const char *s = xml ? strstr(xml, open) : NULL;
    const char *e = s ? strstr(s, close) : NULL;
    if (!s || !e)
        return;
    s += strlen(open);
    size_t len = (size_t)(e - s);
    if (len >= cap)
        len = cap - 1;
    memcpy(out, s, len);
    out[len] = '\0';
}

enum verdict { V_OK, V_RETRY, V_FAIL };

/*
 * Judges a finished request. On V_FAIL (or V_RETRY, for the last try's message) sets
 * *rc and replaces err's content with the reason.
 */
static enum verdict xfer_judge(struct xfer *x, int *rc, struct strbuf *err)
{
    strbuf_reset(err);
    if (x->cc == CURLE_ABORTED_BY_CALLBACK && x->cancel && atomic_load(x->cancel)) {
        strbuf_addf(err, "s3 %s: cancelled", x->what);
        *rc = SL_EIO;
        return V_FAIL;
    }
    if (x->cc != CURLE_OK) {
        strbuf_addf(err, "s3 %s: %s", x->what,
                    x->curl_err[0] ? x->curl_err : curl_easy_strerror(x->cc));
        switch (x->cc) {
        case CURLE_WRITE_ERROR:
        case CURLE_READ_ERROR:
        case CURLE_ABORTED_BY_CALLBACK:
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_URL_MALFORMAT:
        case CURLE_OUT_OF_MEMORY:
            *rc = x->cc == CURLE_URL_MALFORMAT || x->cc == CURLE_UNSUPPORTED_PROTOCOL ? SL_EINVAL
                                                                                      : SL_EIO;
            return V_FAIL;
        case CURLE_OPERATION_TIMEDOUT:
            *rc = SL_ETIMEDOUT;
            return V_RETRY;
        default:
            *rc = SL_ECONN;
            return V_RETRY;
        }
    }
    x->status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->status >= 200 && x->status < 300) {
        /* CompleteMultipartUpload may answer 200 with an error in the body */
        if (!strcmp(x->method, "POST") && strstr(x->body.buf, "<Error>")) {
            char code[64], msg[256];
            xml_value(code, sizeof(code), x->body.buf, "Code");
            xml_value(msg, sizeof(msg), x->body.buf, "Message");
            strbuf_addf(err, "s3 %s: %s: %s", x->what, code, msg);
            *rc = SL_EIO;
            return !strcmp(code, "InternalError") || !strcmp(code, "SlowDown") ? V_RETRY : V_FAIL;
        }
        return V_OK;
    }
    char code[64], msg[256];
    xml_value(code, sizeof(code), x->body.buf, "Code");
    xml_value(msg, sizeof(msg), x->body.buf, "Message");
    strbuf_addf(err, "s3 %s: %ld", x->what, x->status);
    if (code[0])
        strbuf_addf(err, " %s", code);
    if (msg[0])
        strbuf_addf(err, ": %s", msg);
    switch (x->status) {
    case 500:
    case 502:
    case 503:
    case 504:
    case 429:
        *rc = SL_EIO;
        return V_RETRY;
    case 404:
        if (!code[0])
            strbuf_addstr(err, !strcmp(x->method, "HEAD") ? " NoSuchKey (or NoSuchBucket)"
                                                          : " Not Found");
        *rc = SL_ENOENT;
        return V_FAIL;
    case 301:
    case 307:
    case 400:
        if (x->bucket_region[0] && strcmp(x->bucket_region, x->c->region) != 0)
            strbuf_addf(err, " (the bucket is in region %s, not %s)", x->bucket_region,
                        x->c->region);
        *rc = SL_EIO;
        return V_FAIL;
    case 412:
        *rc = SL_ECONFLICT;
        return V_FAIL;
    default:
        *rc = SL_EIO;
        return V_FAIL;
    }
}

/*
 * After a successful upload: the ETag S3 returns is the MD5 of what it stored (but for
 * SSE-KMS and SSE-C objects); it must be the MD5 of the file's bytes, which the attempt's
 * hasher computed beside the transfer. A mismatch (bytes damaged on the way, or the file
 * changing under us) is retried: the key is overwritten, or the part sent again before
 * the upload is completed. A file that can no longer be read fails at once.
 */
static enum verdict check_sent(struct xfer *x, int *rc, struct strbuf *err)
{
    if (x->in_fd < 0)
        return V_OK;
    char got[48];
    int er = hasher_finish(&x->hash, got, x->sent_md);
    if (er < 0) {
        strbuf_reset(err);
        strbuf_addf(err, "s3 %s: cannot read the file to check it: %s", x->what,
                    er == -EIO ? "it shrank during the upload" : strerror(-er));
        *rc = SL_EIO;
        return V_FAIL;
    }
    if (x->in_pos != x->in_len) {
        strbuf_reset(err);
        strbuf_addf(err, "s3 %s: the server answered after %llu of %llu bytes", x->what,
                    (unsigned long long)x->in_pos, (unsigned long long)x->in_len);
        *rc = SL_EIO;
        return V_RETRY;
    }
    bool plain = strlen(x->etag) == 32 && strspn(x->etag, "0123456789abcdef") == 32;
    if (plain && strcmp(x->etag, got) != 0) {
        strbuf_reset(err);
        strbuf_addf(err, "s3 %s: the stored ETag %s is not the MD5 of the file's bytes (%s)",
                    x->what, x->etag, got);
        *rc = SL_EIO;
        return V_RETRY;
    }
    return V_OK;
}

/* Sleeps ms in slices, returning early (false) if cancelled. */
static bool sleep_cancellable(int64_t ms, const atomic_int *cancel)
{
    while (ms > 0) {
        if (cancel && atomic_load(cancel))
            return false;
        int64_t slice = ms < 100 ? ms : 100;
        struct timespec ts = {0, (long)slice * 1000000L};
        nanosleep(&ts, NULL);
        ms -= slice;
    }
    return !(cancel && atomic_load(cancel));
}

/* Full jitter: a random delay in [0, min(cap, base * 2^try)], at least 10 ms. */
static int64_t backoff_ms(const struct s3_client *c, int attempt)
{
    int64_t cap = c->retry_base_ms << (attempt < 10 ? attempt : 10);
    if (cap > 20000)
        cap = 20000;
    unsigned seed = (unsigned)(sl_wall_ms() ^ (int64_t)getpid() ^ attempt);
    int64_t d = (int64_t)(rand_r(&seed) % (cap + 1));
    return d < 10 ? 10 : d;
}

/* Runs a request that has no resumable body, with retries. */
static int xfer_run(struct xfer *x, struct strbuf *err)
{
    int rc = 0;
    for (int attempt = 1;; attempt++) {
        xfer_prepare(x);
        x->cc = curl_easy_perform(x->easy);
        enum verdict v = xfer_judge(x, &rc, err);
        if (v == V_OK)
            v = check_sent(x, &rc, err);
        if (v == V_OK)
            return 0;
        hasher_stop(&x->hash); /* the attempt failed: its hash is of no use */
        if (v == V_FAIL || attempt >= x->c->max_attempts)
            return rc;
        sl_debug("s3", "%s, retrying (attempt %d of %d)", err->buf, attempt + 1,
                 x->c->max_attempts);
        if (!sleep_cancellable(backoff_ms(x->c, attempt), x->cancel)) {
            strbuf_reset(err);
            strbuf_addf(err, "s3 %s: cancelled", x->what);
            return SL_EIO;
        }
    }
}

/* --- HEAD, DELETE ------------------------------------------------------------------------- */

int s3_head(struct s3_client *c, const char *key, struct s3_object_info *info, struct strbuf *err)
{
    struct xfer x;
    struct strbuf e = STRBUF_INIT;
    xfer_init(&x, c, "HEAD", key, NULL, NULL);
    int rc = xfer_run(&x, &e);
    if (rc == 0 && info) {
        info->size = x.content_length;
        snprintf(info->etag, sizeof(info->etag), "%s", x.etag);
        snprintf(info->kind, sizeof(info->kind), "%s", x.resp_kind);
    }
    if (rc < 0)
        strbuf_add(err, e.buf, e.len);
    xfer_release(&x);
    strbuf_release(&e);
    return rc;
}

int s3_delete(struct s3_client *c, const char *key, struct strbuf *err)
{
    struct xfer x;
    struct strbuf e = STRBUF_INIT;
    xfer_init(&x, c, "DELETE", key, NULL, NULL);
    int rc = xfer_run(&x, &e);
    if (rc < 0)
        strbuf_add(err, e.buf, e.len);
    xfer_release(&x);
    strbuf_release(&e);
    return rc;
}

/* --- uploads ------------------------------------------------------------------------------- */

static int put_single(struct s3_client *c, const char *key, int fd, uint64_t size,
                      const char *const *metadata, const atomic_int *cancel,
                      struct s3_object_info *info, struct strbuf *err)
{
    struct xfer x;
    struct strbuf e = STRBUF_INIT;
    xfer_init(&x, c, "PUT", key, NULL, cancel);
    x.in_fd = fd;
    x.in_len = size;
    x.metadata = metadata;
    int rc = xfer_run(&x, &e);
    if (rc == 0 && info) {
        memset(info, 0, sizeof(*info));
        info->size = size;
        snprintf(info->etag, sizeof(info->etag), "%s", x.etag);
    }
    if (rc < 0)
        strbuf_add(err, e.buf, e.len);
    xfer_release(&x);
    strbuf_release(&e);
    return rc;
}

struct part {
    struct xfer x;
    unsigned number; /* 1-based */
    uint64_t off, len;
    unsigned char md[16];
    char etag[80];
    int attempts;
    int64_t not_before_ms;
    enum { PART_WAITING, PART_RUNNING, PART_DONE } state;
};

static int abort_upload(struct s3_client *c, const char *key, const char *upload_id)
{
    struct strbuf q = STRBUF_INIT, e = STRBUF_INIT;
    strbuf_addstr(&q, "uploadId=");
    sigv4_uri_encode(&q, upload_id, strlen(upload_id), false);
    struct xfer x;
    xfer_init(&x, c, "DELETE", key, q.buf, NULL);
    int rc = xfer_run(&x, &e);
    if (rc < 0)
        sl_warn("s3", "%s (the upload's parts stay until a lifecycle rule removes them)", e.buf);
    xfer_release(&x);
    strbuf_release(&q);
    strbuf_release(&e);
    return rc;
}

/* Sends every part, parallel_parts at a time. Returns 0 or an error (err set). */
static int send_parts(struct s3_client *c, struct part *parts, unsigned n, const atomic_int *cancel,
                      struct strbuf *err)
{
    CURLM *multi = curl_multi_init();
    unsigned next = 0, done = 0, running = 0;
    int rc = 0;
    /* parallel_parts easy handles serve every part, and a part's hasher is freed when the
     * part is done, so memory does not grow with the number of parts */
    CURL **pool = xcalloc((size_t)c->parallel, sizeof(*pool));
    size_t n_pool = 0;

    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)c->parallel);
    while (done < n && rc == 0) {
        int64_t now = sl_wall_ms(), wait_ms = 1000;
        /* start parts while there are free slots: first retries that are due, then new */
        for (unsigned i = 0; i < n && running < (unsigned)c->parallel; i++) {
            struct part *p = &parts[i];
            if (p->state == PART_WAITING && p->attempts > 0) {
                if (p->not_before_ms > now) {
                    if (p->not_before_ms - now < wait_ms)
                        wait_ms = p->not_before_ms - now;
                    continue;
                }
                p->x.easy = n_pool ? pool[--n_pool] : NULL;
                xfer_prepare(&p->x);
                curl_multi_add_handle(multi, p->x.easy);
                p->state = PART_RUNNING;
                p->attempts++;
                running++;
            }
        }
        while (next < n && running < (unsigned)c->parallel) {
            struct part *p = &parts[next++];
            p->x.easy = n_pool ? pool[--n_pool] : NULL;
            xfer_prepare(&p->x);
            curl_multi_add_handle(multi, p->x.easy);
            p->state = PART_RUNNING;
            p->attempts = 1;
            running++;
        }
        if (rc < 0)
            break;
        int still = 0;
        curl_multi_perform(multi, &still);
        CURLMsg *m;
        int left;
        bool freed = false; /* a slot came free: fill it before waiting */
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct xfer *x = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            struct part *p = (struct part *)(void *)x; /* x is the first member */
            p->x.cc = m->data.result;
            curl_multi_remove_handle(multi, m->easy_handle);
            running--;
            freed = true;
            int prc = 0;
            struct strbuf e = STRBUF_INIT;
            enum verdict v = xfer_judge(&p->x, &prc, &e);
            if (v == V_OK)
                v = check_sent(&p->x, &prc, &e);
            if (v == V_OK) {
                memcpy(p->md, p->x.sent_md, 16);
                hasher_release(&p->x.hash);
            } else {
                hasher_stop(&p->x.hash);
            }
            /* the handle goes back to the pool; the part keeps what it needs */
            pool[n_pool++] = p->x.easy;
            p->x.easy = NULL;
            if (v == V_OK) {
                snprintf(p->etag, sizeof(p->etag), "%s", p->x.etag);
                p->state = PART_DONE;
                done++;
            } else if (v == V_RETRY && p->attempts < c->max_attempts) {
                sl_debug("s3", "%s, retrying part %u", e.buf, p->number);
                p->state = PART_WAITING;
                p->not_before_ms = sl_wall_ms() + backoff_ms(c, p->attempts);
            } else {
                strbuf_addf(err, "%s (part %u)", e.buf, p->number);
                rc = prc ? prc : SL_EIO;
            }
            strbuf_release(&e);
        }
        if (rc == 0 && done < n) {
            if (cancel && atomic_load(cancel)) {
                strbuf_addf(err, "s3 PUT: cancelled");
                rc = SL_EIO;
                break;
            }
            if (freed)
                continue;
            curl_multi_poll(multi, NULL, 0,
                            (int)(running ? (wait_ms < 200 ? wait_ms : 200) : wait_ms), NULL);
        }
    }
    for (unsigned i = 0; i < n; i++)
        if (parts[i].state == PART_RUNNING)
            curl_multi_remove_handle(multi, parts[i].x.easy);
    curl_multi_cleanup(multi);
    for (size_t i = 0; i < n_pool; i++)
        curl_easy_cleanup(pool[i]);
    free(pool);
    return rc;
}

static int put_multipart(struct s3_client *c, const char *key, int fd, uint64_t size,
                         const char *const *metadata, const atomic_int *cancel,
                         struct s3_object_info *info, struct strbuf *err)
{
    uint64_t part_size = c->part_size;
    /* at most 10000 parts: grow the part size, in whole MiB */
    if ((size + part_size - 1) / part_size > S3_MAX_PARTS) {
        part_size = (size + S3_MAX_PARTS - 1) / S3_MAX_PARTS;
        part_size = (part_size + (1 << 20) - 1) & ~(uint64_t)((1 << 20) - 1);
    }
    unsigned n = (unsigned)((size + part_size - 1) / part_size);
    struct strbuf e = STRBUF_INIT, q = STRBUF_INIT, body = STRBUF_INIT;
    struct part *parts = NULL;
    char upload_id[1024] = "";
    int rc;

    /* 1. create */
    struct xfer cx;
    xfer_init(&cx, c, "POST", key, "uploads=", cancel);
    cx.metadata = metadata;
    snprintf(cx.part_size_meta, sizeof(cx.part_size_meta), "%llu", (unsigned long long)part_size);
    rc = xfer_run(&cx, &e);
    if (rc == 0) {
        xml_value(upload_id, sizeof(upload_id), cx.body.buf, "UploadId");
        if (!upload_id[0]) {
            strbuf_addf(&e, "s3 %s: no UploadId in the answer", cx.what);
            rc = SL_EIO;
        }
    }
    xfer_release(&cx);
    if (rc < 0)
        goto cleanup;

    /* 2. parts */
    parts = xcalloc(n, sizeof(*parts));
    char **queries = xcalloc(n, sizeof(*queries));
    for (unsigned i = 0; i < n; i++) {
        struct part *p = &parts[i];
        strbuf_reset(&q);
        strbuf_addf(&q, "partNumber=%u&uploadId=", i + 1);
        sigv4_uri_encode(&q, upload_id, strlen(upload_id), false);
        queries[i] = strbuf_detach(&q, NULL);
        xfer_init(&p->x, c, "PUT", key, queries[i], cancel);
        p->number = i + 1;
        p->off = (uint64_t)i * part_size;
        p->len = i + 1 < n ? part_size : size - p->off;
        p->x.in_fd = fd;
        p->x.in_off = p->off;
        p->x.in_len = p->len;
    }
    int64_t t_parts = sl_wall_ms();
    rc = send_parts(c, parts, n, cancel, &e);
    int64_t t_complete = sl_wall_ms();

    /* 3. complete (or abort) */
    if (rc == 0) {
        strbuf_addstr(&body, "<CompleteMultipartUpload>");
        for (unsigned i = 0; i < n; i++)
            strbuf_addf(&body, "<Part><PartNumber>%u</PartNumber><ETag>\"%s\"</ETag></Part>", i + 1,
                        parts[i].etag);
        strbuf_addstr(&body, "</CompleteMultipartUpload>");
        strbuf_reset(&q);
        strbuf_addstr(&q, "uploadId=");
        sigv4_uri_encode(&q, upload_id, strlen(upload_id), false);
        struct xfer fx;
        xfer_init(&fx, c, "POST", key, q.buf, cancel);
        fx.in_mem = body.buf;
        fx.in_mem_len = body.len;
        rc = xfer_run(&fx, &e);
        sl_debug("s3", "%s: %u parts sent in %lld ms, completed in %lld ms", fx.what, n,
                 (long long)(t_complete - t_parts), (long long)(sl_wall_ms() - t_complete));
        if (rc == 0) {
            /* the multipart ETag: MD5 of the parts' MD5s, "-N" */
            EVP_MD_CTX *ctx = EVP_MD_CTX_new();
            unsigned char md[16];
            unsigned int mdlen = 16;
            char want[48], got[80];
            EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
            for (unsigned i = 0; i < n; i++)
                EVP_DigestUpdate(ctx, parts[i].md, 16);
            EVP_DigestFinal_ex(ctx, md, &mdlen);
            EVP_MD_CTX_free(ctx);
            hex(want, md, 16);
            snprintf(want + 32, sizeof(want) - 32, "-%u", n);
            xml_value(got, sizeof(got), fx.body.buf, "ETag");
            /* "&quot;abc-2&quot;" or "\"abc-2\"" */
            char *g = got;
            if (!strncmp(g, "&quot;", 6))
                g += 6;
            else if (*g == '"')
                g++;
            size_t gl = strcspn(g, "&\"");
            g[gl] = '\0';
            if (gl == strlen(want) && strchr(g, '-') && strcmp(g, want) != 0) {
                strbuf_reset(&e);
                strbuf_addf(&e, "s3 %s: the stored object's ETag %s is not the parts' (%s)",
                            fx.what, g, want);
                rc = SL_EIO;
            }
            if (rc == 0 && info) {
                memset(info, 0, sizeof(*info));
                info->size = size;
                snprintf(info->etag, sizeof(info->etag), "%s", gl ? g : want);
            }
        }
        xfer_release(&fx);
    }
    if (rc < 0)
        abort_upload(c, key, upload_id);
    for (unsigned i = 0; i < n; i++) {
        xfer_release(&parts[i].x);
        free(queries[i]);
    }
    free(queries);
cleanup:
    if (rc < 0)
        strbuf_add(err, e.buf, e.len);
    free(parts);
    strbuf_release(&e);
    strbuf_release(&q);
    strbuf_release(&body);
    return rc;
}

int s3_put_file(struct s3_client *c, const char *key, const char *path, const char *const *metadata,
                const atomic_int *cancel, struct s3_object_info *info, struct strbuf *err)
{
    if (!c || !key || !*key || !path) {
        strbuf_addstr(err, "s3 PUT: no key or file");
        return SL_EINVAL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int en = fd < 0 ? errno : EISDIR;
        strbuf_addf(err, "s3 PUT: cannot read '%s': %s", path, strerror(en));
        if (fd >= 0)
            close(fd);
        return en == ENOENT ? SL_ENOENT : SL_EIO;
    }
    uint64_t size = (uint64_t)st.st_size;
    /* above 5 GiB S3 refuses a single PUT, whatever the threshold says */
    bool multipart = size > c->threshold || size > S3_MAX_PUT_SIZE;
    int rc = multipart ? put_multipart(c, key, fd, size, metadata, cancel, info, err)
                       : put_single(c, key, fd, size, metadata, cancel, info, err);
    close(fd);
    return rc;
}

/* --- downloads ------------------------------------------------------------------------------ */

/* After a complete download: 0 if the bytes match the ETag (when it is checkable). */
static int verify_download(struct xfer *x, struct strbuf *err)
{
    if (!x->obj_sized)
        x->obj.size = x->total_written;
    if (x->total_written != x->obj.size) {
        strbuf_addf(err, "s3 %s: got %llu bytes, the object has %llu", x->what,
                    (unsigned long long)x->total_written, (unsigned long long)x->obj.size);
        return SL_EIO;
    }
    if (!x->hashing)
        return 0;
    char got[48];
    int er = hasher_finish(&x->hash, got, NULL);
    if (er < 0) {
        strbuf_addf(err, "s3 %s: cannot read the download back to check it: %s", x->what,
                    strerror(-er));
        return SL_EIO;
    }
    if (strcmp(got, x->obj.etag) != 0) {
        strbuf_addf(err, "s3 %s: checksum mismatch: the bytes received hash to %s, the ETag is %s",
                    x->what, got, x->obj.etag);
        return SL_EIO;
    }
    return 0;
}

int s3_get_file(struct s3_client *c, const char *key, const char *path, const atomic_int *cancel,
                struct s3_object_info *info, struct strbuf *err)
{
    if (!c || !key || !*key || !path) {
        strbuf_addstr(err, "s3 GET: no key or file");
        return SL_EINVAL;
    }
    struct strbuf e = STRBUF_INIT;
    struct xfer x;
    char *tmp = xasprintf("%s.sluice-part", path);
    int fd = -1, rc;

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        strbuf_addf(&e, "s3 GET: cannot create '%s': %s", tmp, strerror(errno));
        rc = errno == ENOENT ? SL_ENOENT : SL_EIO;
        goto cleanup;
    }
    /* No HEAD first: the GET's own headers (size, ETag, part size, kind) set up the check
     * at its first body byte (download_begin), which saves a round trip per object. */
    xfer_init(&x, c, "GET", key, NULL, cancel);
    x.out_fd = fd;
    for (int attempt = 1;; attempt++) {
        x.range_from[0] = x.if_match[0] = '\0';
        if (x.total_written > 0 && x.have_obj && x.obj_sized) {
            /* resume; If-Match: a changed object answers 412 rather than mixing versions */
            snprintf(x.range_from, sizeof(x.range_from), "bytes=%llu-",
                     (unsigned long long)x.total_written);
            if (x.obj.etag[0])
                snprintf(x.if_match, sizeof(x.if_match), "\"%s\"", x.obj.etag);
        } else if (x.total_written > 0 && download_restart(&x) < 0) {
            strbuf_reset(&e);
            strbuf_addf(&e, "s3 GET: cannot truncate '%s': %s", tmp, strerror(errno));
            rc = SL_EIO;
            break;
        }
        xfer_prepare(&x);
        x.cc = curl_easy_perform(x.easy);
        if (download_flush(&x) < 0) {
            strbuf_reset(&e);
            strbuf_addf(&e, "s3 GET: cannot write '%s': %s", tmp, strerror(errno));
            rc = SL_EIO;
            break;
        }
        if (x.range_error[0]) {
            strbuf_reset(&e);
            strbuf_addf(&e, "s3 %s: %s", x.what, x.range_error);
            rc = SL_EIO;
            break;
        }
        enum verdict v = xfer_judge(&x, &rc, &e);
        if (v == V_OK && x.status == 200 && x.out_written == 0 && !download_begin(&x, 200)) {
            /* an empty object: no body byte called download_begin */
            strbuf_reset(&e);
            strbuf_addf(&e, "s3 %s: %s", x.what, x.range_error);
            rc = SL_EIO;
            break;
        }
        if (v == V_OK) {
            if (x.obj_sized && x.total_written < x.obj.size) {
                /* a connection closed early without an error: resume */
                v = V_RETRY;
                rc = SL_ECONN;
                strbuf_reset(&e);
                strbuf_addf(&e, "s3 %s: the connection ended after %llu of %llu bytes", x.what,
                            (unsigned long long)x.total_written, (unsigned long long)x.obj.size);
            } else {
                rc = verify_download(&x, &e);
                break;
            }
        }
        if (rc == SL_ECONFLICT) {
            /* If-Match failed: the object changed under us */
            strbuf_addf(&e, " (the object changed during the download)");
            break;
        }
        if (v == V_FAIL || attempt >= c->max_attempts)
            break;
        sl_debug("s3", "%s, resuming at byte %llu (attempt %d of %d)", e.buf,
                 (unsigned long long)x.total_written, attempt + 1, c->max_attempts);
        if (!sleep_cancellable(backoff_ms(c, attempt), cancel)) {
            strbuf_reset(&e);
            strbuf_addf(&e, "s3 %s: cancelled", x.what);
            rc = SL_EIO;
            break;
        }
    }
    if (rc == 0 && info)
        *info = x.obj;
    xfer_release(&x);
    /* no fsync: a staged input lost in a machine crash is staged again by the retry */
    if (close(fd) < 0 && rc == 0) {
        strbuf_addf(&e, "s3 GET: cannot write '%s': %s", tmp, strerror(errno));
        rc = SL_EIO;
    }
    fd = -1;
    if (rc == 0 && rename(tmp, path) < 0) {
        strbuf_addf(&e, "s3 GET: cannot rename '%s': %s", tmp, strerror(errno));
        rc = SL_EIO;
    }
cleanup:
    if (fd >= 0)
        close(fd);
    if (rc < 0) {
        unlink(tmp);
        strbuf_add(err, e.buf, e.len);
    }
    free(tmp);
    strbuf_release(&e);
    return rc;
}
