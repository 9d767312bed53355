/*
 * worker/sigv4.c - AWS Signature Version 4 (see sigv4.h for the contract).
 *
 * The four steps of the specification, each a function:
 *
 *   canonical request  method \n uri \n query \n headers \n\n signed-headers \n payload-hash
 *   string to sign     AWS4-HMAC-SHA256 \n date \n scope \n hex(sha256(canonical request))
 *   signing key        HMAC chain over "AWS4"+secret, date, region, service, "aws4_request"
 *   signature          hex(HMAC(signing key, string to sign))
 *
 * Canonicalization is done on copies in a strbuf; nothing here keeps state between
 * calls. OpenSSL's one-shot SHA256() and HMAC() do the cryptography.
 */
#include "worker/sigv4.h"

#include "common/error.h"
#include "common/strbuf.h"
#include "common/timeutil.h"
#include "common/xalloc.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char hexdigits[] = "0123456789abcdef";

static void to_hex(char *out, const unsigned char *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdigits[in[i] >> 4];
        out[2 * i + 1] = hexdigits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void sigv4_sha256_hex(char hex[65], const void *data, size_t len)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data, len, md);
    to_hex(hex, md, sizeof(md));
}

void sigv4_amz_date(char buf[17], int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

void sigv4_uri_encode(struct strbuf *sb, const char *s, size_t len, bool keep_slash)
{
    static const char upper[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c) || (keep_slash && c == '/')) {
            strbuf_addch(sb, c);
        } else {
            char esc[3] = {'%', upper[c >> 4], upper[c & 15]};
            strbuf_add(sb, esc, 3);
        }
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Appends s[0..len) percent-decoded. Returns 0, or SL_EINVAL for a broken escape. */
static int uri_decode(struct strbuf *sb, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            strbuf_addch(sb, s[i]);
            continue;
        }
        if (i + 2 >= len)
            return SL_EINVAL;
        int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
        if (hi < 0 || lo < 0)
            return SL_EINVAL;
        strbuf_addch(sb, hi * 16 + lo);
        i += 2;
    }
    return 0;
}

/* --- canonical URI ------------------------------------------------------------------- */

/* Resolves '.' and '..' segments and drops empty ones, keeping a trailing '/'. */
static void normalize_path(struct strbuf *out, const char *path)
{
    size_t n = strlen(path);
    /* segment start offsets in out, to pop on '..' */
    size_t *stack = xcalloc(n + 1, sizeof(*stack));
    size_t depth = 0;
    bool trailing = n > 1 && path[n - 1] == '/';
    const char *p = path;

    strbuf_reset(out);
    while (*p) {
        while (*p == '/')
            p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0)
            break;
        if (len == 1 && p[0] == '.') {
            /* nothing */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            if (depth > 0) {
                depth--;
                out->len = stack[depth];
                out->buf[out->len] = '\0';
            }
        } else {
            stack[depth++] = out->len;
            strbuf_addch(out, '/');
            strbuf_add(out, p, len);
        }
        p += len;
    }
    if (out->len == 0 || trailing)
        strbuf_addch(out, '/');
    /* "/.." style inputs that end on a dot segment keep their trailing slash only if
     * something remains; a lone "/" is already there */
    if (out->len > 1 && trailing && out->buf[out->len - 2] == '/')
        out->buf[--out->len] = '\0';
    free(stack);
}

static void canonical_uri(struct strbuf *sb, const char *path, bool normalize)
{
    if (!normalize) {
        sigv4_uri_encode(sb, path, strlen(path), true);
        return;
    }
    struct strbuf norm = STRBUF_INIT;
    normalize_path(&norm, path);
    sigv4_uri_encode(sb, norm.buf, norm.len, true);
    strbuf_release(&norm);
}

/* --- canonical query ------------------------------------------------------------------ */

struct qparam {
    char *name; /* canonically encoded */
    char *value;
};

static int qparam_cmp(const void *a, const void *b)
{
    const struct qparam *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static void qparams_free(struct qparam *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(q[i].name);
        free(q[i].value);
    }
    free(q);
}

/* Encodes the decoded text s canonically, as a new string. */
static char *encode_dup(const char *s, size_t len)
{
    struct strbuf sb = STRBUF_INIT;
    sigv4_uri_encode(&sb, s, len, false);
    return strbuf_detach(&sb, NULL);
}

/* Splits query ("a=b&c") into canonically re-encoded pairs, appending to *q. */
static int parse_query(struct qparam **q, size_t *n, size_t *alloc, const char *query)
{
    struct strbuf dec = STRBUF_INIT;
    const char *p = query;
    int rc = 0;

    while (p && *p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > 0) {
            const char *eq = memchr(p, '=', len);
            size_t nlen = eq ? (size_t)(eq - p) : len;
            XGROW(*q, *alloc, *n + 1); // NOLINT(bugprone-sizeof-expression)
            strbuf_reset(&dec);
            if ((rc = uri_decode(&dec, p, nlen)) < 0)
                break;
            (*q)[*n].name = encode_dup(dec.buf, dec.len);
            strbuf_reset(&dec);
            if (eq && (rc = uri_decode(&dec, eq + 1, len - nlen - 1)) < 0) {
                free((*q)[*n].name);
                break;
            }
            (*q)[*n].value = encode_dup(dec.buf, dec.len);
            (*n)++;
        }
        p = amp ? amp + 1 : NULL;
    }
    strbuf_release(&dec);
    return rc;
}

static void add_qparam(struct qparam **q, size_t *n, size_t *alloc, const char *name,
                       const char *value)
{
    XGROW(*q, *alloc, *n + 1); // NOLINT(bugprone-sizeof-expression)
    (*q)[*n].name = encode_dup(name, strlen(name));
    (*q)[*n].value = encode_dup(value, strlen(value));
    (*n)++;
}

static void join_query(struct strbuf *sb, struct qparam *q, size_t n)
{
    if (n > 1)
        qsort(q, n, sizeof(*q), qparam_cmp);
    for (size_t i = 0; i < n; i++)
        strbuf_addf(sb, "%s%s=%s", i ? "&" : "", q[i].name, q[i].value);
}

/* --- canonical headers ------------------------------------------------------------------ */

struct cheader {
    char *name;  /* lower case */
    char *value; /* trimmed, spaces collapsed; repeated names joined with ',' */
    size_t order;
};

static int cheader_cmp(const void *a, const void *b)
{
    const struct cheader *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Trims value and collapses runs of spaces and tabs into one space. */
static char *trim_value(const char *v)
{
    struct strbuf sb = STRBUF_INIT;
    while (*v == ' ' || *v == '\t')
        v++;
    bool space = false;
    for (; *v; v++) {
        if (*v == ' ' || *v == '\t') {
            space = true;
            continue;
        }
        if (space && sb.len)
            strbuf_addch(&sb, ' ');
        space = false;
        strbuf_addch(&sb, *v);
    }
    return strbuf_detach(&sb, NULL);
}

static bool valid_header_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s == ' ' || *s == ':' || *s == '\t' || *s == '\r' || *s == '\n')
            return false;
    return true;
}

/*
 * Builds the canonical headers block (each "name:value\n") and the signed headers list
 * from req's headers plus extra (NULL or one more). Returns 0 or SL_EINVAL.
 */
static int canonical_headers(struct strbuf *block, struct strbuf *signed_list,
                             const struct sigv4_request *req, bool *has_date)
{
    struct cheader *h = xcalloc(req->n_headers + 1, sizeof(*h));
    size_t n = 0;
    int rc = 0;

    *has_date = false;
    for (size_t i = 0; i < req->n_headers; i++) {
        if (!req->headers[i].name || !req->headers[i].value ||
            !valid_header_name(req->headers[i].name)) {
            rc = SL_EINVAL;
            goto cleanup;
        }
        char *name = xstrdup(req->headers[i].name);
        for (char *c = name; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        if (!strcmp(name, "x-amz-date"))
            *has_date = true;
        h[n++] = (struct cheader){name, trim_value(req->headers[i].value), i};
    }
    if (n > 1)
        qsort(h, n, sizeof(*h), cheader_cmp);
    for (size_t i = 0; i < n; i++) {
        bool same = i > 0 && !strcmp(h[i].name, h[i - 1].name);
        if (same) {
            strbuf_addf(block, ",%s", h[i].value);
            continue;
        }
        if (i > 0)
            strbuf_addch(block, '\n');
        strbuf_addf(block, "%s:%s", h[i].name, h[i].value);
        strbuf_addf(signed_list, "%s%s", signed_list->len ? ";" : "", h[i].name);
    }
    if (n)
        strbuf_addch(block, '\n');
cleanup:
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
    return rc;
}

/* The x-amz-date value among req's headers, or NULL. */
static const char *find_date(const struct sigv4_request *req)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (req->headers[i].name && !strcasecmp(req->headers[i].name, "x-amz-date"))
            return req->headers[i].value;
    return NULL;
}

static bool valid_amz_date(const char *d)
{
    if (!d || strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z')
        return false;
    for (int i = 0; i < 15; i++)
        if (i != 8 && !(d[i] >= '0' && d[i] <= '9'))
            return false;
    return true;
}

/* --- the signature ------------------------------------------------------------------------ */

static void hmac(unsigned char out[32], const void *key, size_t key_len, const char *msg)
{
    unsigned int len = 32;
    HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, strlen(msg), out, &len);
}

/* The signature of sts, hex, into out[65]. */
static void sign_sts(char out[65], const struct sigv4_request *req, const char *date8,
                     const char *sts)
{
    char *k = xasprintf("AWS4%s", req->secret_access_key);
    unsigned char a[32], b[32];

    hmac(a, k, strlen(k), date8);
    OPENSSL_cleanse(k, strlen(k));
    free(k);
    hmac(b, a, 32, req->region);
    hmac(a, b, 32, req->service);
    hmac(b, a, 32, "aws4_request");
    hmac(a, b, 32, sts);
    to_hex(out, a, 32);
    OPENSSL_cleanse(a, sizeof(a));
    OPENSSL_cleanse(b, sizeof(b));
}

static bool valid_common(const struct sigv4_request *req)
{
    return req && req->method && *req->method && req->path && req->path[0] == '/' &&
           req->payload_hash && *req->payload_hash && req->access_key_id && *req->access_key_id &&
           req->secret_access_key && req->region && *req->region && req->service && *req->service;
}

/*
 * The common part: canonical request, string to sign and signature, for the query
 * params q (sorted here; presign adds its X-Amz-* ones first). Fills out but for
 * authorization and query; cquery gets the canonical query string.
 */
static int sign_common(struct sigv4_result *out, const struct sigv4_request *req,
                       const char *amz_date, struct qparam *q, size_t nq, struct strbuf *cquery)
{
    struct strbuf creq = STRBUF_INIT, hblock = STRBUF_INIT, slist = STRBUF_INIT;
    struct strbuf sts = STRBUF_INIT;
    char date8[9], hash[65];
    bool has_date;
    int rc = canonical_headers(&hblock, &slist, req, &has_date);

    if (rc < 0)
        goto cleanup;
    strbuf_addf(&creq, "%s\n", req->method);
    canonical_uri(&creq, req->path, req->normalize_path);
    strbuf_addch(&creq, '\n');
    join_query(cquery, q, nq);
    strbuf_addf(&creq, "%s\n%s\n%s\n%s", cquery->buf, hblock.buf, slist.buf, req->payload_hash);

    memcpy(date8, amz_date, 8);
    date8[8] = '\0';
    sigv4_sha256_hex(hash, creq.buf, creq.len);
    strbuf_addf(&sts, SIGV4_ALGORITHM "\n%s\n%s/%s/%s/aws4_request\n%s", amz_date, date8,
                req->region, req->service, hash);
    sign_sts(out->signature, req, date8, sts.buf);
    out->canonical_request = strbuf_detach(&creq, NULL);
    out->string_to_sign = strbuf_detach(&sts, NULL);
    out->signed_headers = strbuf_detach(&slist, NULL);
cleanup:
    strbuf_release(&creq);
    strbuf_release(&hblock);
    strbuf_release(&slist);
    strbuf_release(&sts);
    return rc;
}

int sigv4_sign(struct sigv4_result *out, const struct sigv4_request *req)
{
    if (!out || !valid_common(req))
        return SL_EINVAL;
    const char *date = find_date(req);
    if (!valid_amz_date(date))
        return SL_EINVAL;

    struct sigv4_result r = {0};
    struct qparam *q = NULL;
    size_t nq = 0, qalloc = 0;
    struct strbuf cquery = STRBUF_INIT;
    int rc = parse_query(&q, &nq, &qalloc, req->query);
    if (rc == 0)
        rc = sign_common(&r, req, date, q, nq, &cquery);
    if (rc == 0) {
        char date8[9];
        memcpy(date8, date, 8);
        date8[8] = '\0';
        r.authorization = xasprintf(SIGV4_ALGORITHM " Credential=%s/%s/%s/%s/aws4_request, "
                                                    "SignedHeaders=%s, Signature=%s",
                                    req->access_key_id, date8, req->region, req->service,
                                    r.signed_headers, r.signature);
        *out = r;
    } else {
        sigv4_result_release(&r);
    }
    qparams_free(q, nq);
    strbuf_release(&cquery);
    return rc;
}

int sigv4_presign(struct sigv4_result *out, const struct sigv4_request *req)
{
    if (!out || !valid_common(req) || !valid_amz_date(req->amz_date) || find_date(req) ||
        req->expires_s < 1 || req->expires_s > 604800)
        return SL_EINVAL;

    struct sigv4_result r = {0};
    struct qparam *q = NULL;
    size_t nq = 0, qalloc = 0;
    struct strbuf cquery = STRBUF_INIT, hblock = STRBUF_INIT, slist = STRBUF_INIT;
    bool has_date;
    int rc = parse_query(&q, &nq, &qalloc, req->query);
    if (rc == 0)
        rc = canonical_headers(&hblock, &slist, req, &has_date);
    if (rc == 0) {
        char date8[9], expires[24];
        memcpy(date8, req->amz_date, 8);
        date8[8] = '\0';
        char *cred = xasprintf("%s/%s/%s/%s/aws4_request", req->access_key_id, date8, req->region,
                               req->service);
        snprintf(expires, sizeof(expires), "%lld", (long long)req->expires_s);
        add_qparam(&q, &nq, &qalloc, "X-Amz-Algorithm", SIGV4_ALGORITHM);
        add_qparam(&q, &nq, &qalloc, "X-Amz-Credential", cred);
        add_qparam(&q, &nq, &qalloc, "X-Amz-Date", req->amz_date);
        add_qparam(&q, &nq, &qalloc, "X-Amz-Expires", expires);
        if (req->session_token && *req->session_token)
            add_qparam(&q, &nq, &qalloc, "X-Amz-Security-Token", req->session_token);
        add_qparam(&q, &nq, &qalloc, "X-Amz-SignedHeaders", slist.buf);
        free(cred);
        rc = sign_common(&r, req, req->amz_date, q, nq, &cquery);
    }
    if (rc == 0) {
        r.query = xasprintf("%s&X-Amz-Signature=%s", cquery.buf, r.signature);
        *out = r;
    } else {
        sigv4_result_release(&r);
    }
    qparams_free(q, nq);
    strbuf_release(&cquery);
    strbuf_release(&hblock);
    strbuf_release(&slist);
    return rc;
}

void sigv4_result_release(struct sigv4_result *r)
{
    free(r->canonical_request);
    free(r->string_to_sign);
    free(r->signed_headers);
    free(r->authorization);
    free(r->query);
    memset(r, 0, sizeof(*r));
}
