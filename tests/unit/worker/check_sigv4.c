/*
 * tests/unit/worker/check_sigv4.c - AWS Signature Version 4 against AWS's own test vectors
 * and against curl's signer.
 *
 *   1. ../shared/vectors/sigv4/aws-c-auth-v4: all 38 cases, both forms (Authorization
 *      header and presigned query), each compared byte for byte: canonical request, string
 *      to sign, signature, and the Authorization header or the signed query.
 *   2. ../shared/vectors/sigv4/aws-sig-v4-test-suite: the classic suite, every case but
 *      three documented below, compared the same way (.creq, .sts, .authz).
 *   3. curl --aws-sigv4 (the command-line tool, libcurl's own signer) signs a request to a
 *      one-shot listener of this test; the headers it sent are signed again here and the
 *      Authorization headers must be equal.
 *   4. Bad requests are refused with SL_EINVAL.
 */
#include "worker/sigv4.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "tests/testutil.h"

#include <arpa/inet.h>
#include <check.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define VEC_DIR "../shared/vectors/sigv4/"

/* --- a parsed request.txt / .req ----------------------------------------------------- */

struct vreq {
    char *method;
    char *path;  /* decoded (as the file has it) */
    char *query; /* as sent, or NULL */
    struct sigv4_header h[32];
    size_t n;
    char *body;
    size_t body_len;
};

static void vreq_free(struct vreq *r)
{
    free(r->method);
    free(r->path);
    free(r->query);
    for (size_t i = 0; i < r->n; i++) {
        free((char *)r->h[i].name);
        free((char *)r->h[i].value);
    }
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* Parses "METHOD target HTTP/1.1\nName:value\n..." with obs-fold continuation lines
 * (RFC 7230 3.2.4: replaced by a space). */
static void vreq_parse(struct vreq *r, const char *text)
{
    memset(r, 0, sizeof(*r));
    const char *eol = strchr(text, '\n');
    size_t line_len = eol ? (size_t)(eol - text) : strlen(text);
    const char *sp = memchr(text, ' ', line_len);
    ck_assert_ptr_nonnull(sp);
    const char *http = NULL;
    for (const char *p = text; p + 5 <= text + line_len; p++)
        if (!strncmp(p, " HTTP/", 6))
            http = p;
    ck_assert_ptr_nonnull(http);
    r->method = xstrndup(text, (size_t)(sp - text));
    char *target = xstrndup(sp + 1, (size_t)(http - sp - 1));
    char *q = strchr(target, '?');
    if (q) {
        r->query = xstrdup(q + 1);
        *q = '\0';
    }
    r->path = target;
    const char *p = eol ? eol + 1 : text + line_len;
    while (*p && *p != '\n') {
        eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if ((*p == ' ' || *p == '\t') && r->n > 0) {
            char *v = xasprintf("%s %.*s", r->h[r->n - 1].value, (int)len, p);
            free((char *)r->h[r->n - 1].value);
            r->h[r->n - 1].value = v;
        } else {
            const char *colon = memchr(p, ':', len);
            ck_assert_msg(colon != NULL, "header line without ':' in \"%s\"", text);
            ck_assert_uint_lt(r->n, 30);
            r->h[r->n].name = xstrndup(p, (size_t)(colon - p));
            r->h[r->n].value = xstrndup(colon + 1, len - (size_t)(colon - p) - 1);
            r->n++;
        }
        p = eol ? eol + 1 : p + len;
    }
    if (*p == '\n') {
        r->body = xstrdup(p + 1);
        r->body_len = strlen(p + 1);
    } else {
        r->body = xstrdup("");
    }
}

static void vreq_add(struct vreq *r, const char *name, const char *value)
{
    r->h[r->n].name = xstrdup(name);
    r->h[r->n].value = xstrdup(value);
    r->n++;
}

/* A file's content with one trailing newline removed, or NULL if it does not exist. */
static char *read_opt(const char *dir, const char *name)
{
    char *path = xasprintf("%s/%s", dir, name);
    struct stat st;
    char *s = NULL;
    if (stat(path, &st) == 0) {
        size_t len;
        s = test_read_file(path, &len);
    }
    free(path);
    return s;
}

static void assert_text_eq(const char *what, const char *name, const char *got, const char *want)
{
    ck_assert_msg(!strcmp(got, want), "%s: %s differs\n--- got:\n%s\n--- want:\n%s", name, what,
                  got, want);
}

/* The value of header "name" in a signed request's text (one per line), or NULL. */
static char *header_of(const char *text, const char *name)
{
    size_t nlen = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (!strncasecmp(p, name, nlen) && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (*v == ' ')
                v++;
            const char *e = strchr(v, '\n');
            return xstrndup(v, e ? (size_t)(e - v) : strlen(v));
        }
    }
    return NULL;
}

static bool sscanf_hex(const char *c, unsigned *v)
{
    const char *digits = "0123456789ABCDEF", *lower = "0123456789abcdef";
    const char *p = strchr(digits, *c);
    const char *q = strchr(lower, *c);
    if (*c && p) {
        *v = (unsigned)(p - digits);
        return true;
    }
    if (*c && q) {
        *v = (unsigned)(q - lower);
        return true;
    }
    return false;
}

/* The query params of a query string, sorted, joined with '\n' (order-free compare). */
static char *sorted_params(const char *query)
{
    char *copy = xstrdup(query);
    char *parts[64];
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(copy, "&", &save); t && n < 64;
         t = strtok_r(NULL, "&", &save)) {
        /* decoded in place: one vector writes a UTF-8 name raw, another escaped */
        char *w = t;
        for (char *r = t; *r; r++) {
            unsigned hi, lo;
            if (r[0] == '%' && r[1] && r[2] && sscanf_hex(r + 1, &hi) && sscanf_hex(r + 2, &lo)) {
                *w++ = (char)(hi * 16 + lo);
                r += 2;
            } else {
                *w++ = *r;
            }
        }
        *w = '\0';
        parts[n++] = t;
    }
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(parts[j - 1], parts[j]) > 0; j--) {
            char *t = parts[j];
            parts[j] = parts[j - 1];
            parts[j - 1] = t;
        }
    struct strbuf sb = STRBUF_INIT;
    for (size_t i = 0; i < n; i++)
        strbuf_addf(&sb, "%s\n", parts[i]);
    free(copy);
    return strbuf_detach(&sb, NULL);
}

/* --- 1. aws-c-auth ------------------------------------------------------------------- */

static int run_c_auth_case(const char *dir, const char *name)
{
    char *ctx_text = read_opt(dir, "context.json");
    char *req_text = read_opt(dir, "request.txt");
    if (!ctx_text || !req_text) {
        free(ctx_text);
        free(req_text);
        return 0;
    }
    cJSON *ctx = cJSON_Parse(ctx_text);
    ck_assert_ptr_nonnull(ctx);
    const cJSON *cred = cJSON_GetObjectItem(ctx, "credentials");
    const char *ak = cJSON_GetStringValue(cJSON_GetObjectItem(cred, "access_key_id"));
    const char *sk = cJSON_GetStringValue(cJSON_GetObjectItem(cred, "secret_access_key"));
    const char *token = cJSON_GetStringValue(cJSON_GetObjectItem(cred, "token"));
    bool normalize = cJSON_IsTrue(cJSON_GetObjectItem(ctx, "normalize"));
    bool sign_body = cJSON_IsTrue(cJSON_GetObjectItem(ctx, "sign_body"));
    bool omit_token = cJSON_IsTrue(cJSON_GetObjectItem(ctx, "omit_session_token"));
    const char *ts = cJSON_GetStringValue(cJSON_GetObjectItem(ctx, "timestamp"));
    int64_t expires =
        (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(ctx, "expiration_in_seconds"));
    /* "2015-08-30T12:36:00Z" -> "20150830T123600Z" */
    char date[17];
    snprintf(date, sizeof(date), "%.4s%.2s%.2sT%.2s%.2s%.2sZ", ts, ts + 5, ts + 8, ts + 11, ts + 14,
             ts + 17);
    int checked = 0;

    for (int mode = 0; mode < 2; mode++) {
        const char *prefix = mode == 0 ? "header" : "query";
        char *fname = xasprintf("%s-canonical-request.txt", prefix);
        char *want_creq = read_opt(dir, fname);
        free(fname);
        fname = xasprintf("%s-string-to-sign.txt", prefix);
        char *want_sts = read_opt(dir, fname);
        free(fname);
        fname = xasprintf("%s-signature.txt", prefix);
        char *want_sig = read_opt(dir, fname);
        free(fname);
        fname = xasprintf("%s-signed-request.txt", prefix);
        char *want_sreq = read_opt(dir, fname);
        free(fname);
        if (!want_creq || !want_sts || !want_sig || !want_sreq) {
            free(want_creq);
            free(want_sts);
            free(want_sig);
            free(want_sreq);
            continue;
        }
        struct vreq r;
        vreq_parse(&r, req_text);
        char body_hash[65];
        sigv4_sha256_hex(body_hash, r.body, r.body_len);
        if (mode == 0) {
            vreq_add(&r, "X-Amz-Date", date);
            if (token && !omit_token)
                vreq_add(&r, "X-Amz-Security-Token", token);
            if (sign_body)
                vreq_add(&r, "X-Amz-Content-Sha256", body_hash);
        }
        struct sigv4_request sr = {
            .method = r.method,
            .path = r.path,
            .query = r.query,
            .headers = r.h,
            .n_headers = r.n,
            .payload_hash = body_hash,
            .normalize_path = normalize,
            .access_key_id = ak,
            .secret_access_key = sk,
            .session_token = omit_token ? NULL : token,
            .region = cJSON_GetStringValue(cJSON_GetObjectItem(ctx, "region")),
            .service = cJSON_GetStringValue(cJSON_GetObjectItem(ctx, "service")),
            .amz_date = date,
            .expires_s = expires};
        struct sigv4_result res;
        int rc = mode == 0 ? sigv4_sign(&res, &sr) : sigv4_presign(&res, &sr);
        ck_assert_msg(rc == 0, "%s (%s): sign failed: %s", name, prefix, sl_strerror(rc));
        char *what = xasprintf("%s (%s)", name, prefix);
        assert_text_eq("canonical request", what, res.canonical_request, want_creq);
        assert_text_eq("string to sign", what, res.string_to_sign, want_sts);
        assert_text_eq("signature", what, res.signature, want_sig);
        if (mode == 0) {
            char *authz = header_of(want_sreq, "Authorization");
            ck_assert_ptr_nonnull(authz);
            assert_text_eq("authorization", what, res.authorization, authz);
            free(authz);
        } else {
            /* the signed request's target, in whatever order the suite wrote it */
            const char *q = strchr(want_sreq, '?');
            const char *e = strstr(want_sreq, " HTTP/");
            ck_assert(q && e && q < e);
            char *want_q = xstrndup(q + 1, (size_t)(e - q - 1));
            /* post-sts-header-after: the token joins after signing, unsigned */
            struct strbuf mine = STRBUF_INIT;
            strbuf_addstr(&mine, res.query);
            if (token && omit_token) {
                strbuf_addstr(&mine, "&X-Amz-Security-Token=");
                sigv4_uri_encode(&mine, token, strlen(token), false);
            }
            char *a = sorted_params(mine.buf), *b = sorted_params(want_q);
            strbuf_release(&mine);
            assert_text_eq("signed query", what, a, b);
            free(a);
            free(b);
            free(want_q);
        }
        free(what);
        sigv4_result_release(&res);
        vreq_free(&r);
        free(want_creq);
        free(want_sts);
        free(want_sig);
        free(want_sreq);
        checked++;
    }
    cJSON_Delete(ctx);
    free(ctx_text);
    free(req_text);
    return checked;
}

START_TEST(test_sigv4_c_auth_vectors)
{
    char *root = test_path(VEC_DIR "aws-c-auth-v4");
    DIR *d = opendir(root);
    ck_assert_msg(d != NULL, "cannot open %s", root);
    int cases = 0, forms = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char *dir = xasprintf("%s/%s", root, de->d_name);
        struct stat st;
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
            int n = run_c_auth_case(dir, de->d_name);
            forms += n;
            cases += n > 0;
        }
        free(dir);
    }
    closedir(d);
    free(root);
    /* 38 cases, each shipping both forms */
    ck_assert_int_eq(cases, 38);
    ck_assert_int_eq(forms, 76);
}
END_TEST

/* --- 2. the classic suite ------------------------------------------------------------ */

/*
 * Left out, with the reason:
 *  - post-x-www-form-urlencoded, post-x-www-form-urlencoded-parameters: the .sts hash is
 *    not SHA-256 of the shipped .creq (the vectors' README); the aws-c-auth copies, which
 *    are consistent, are checked above.
 *  - get-header-value-multiline: its .creq joins the folded lines with ',' where RFC 7230
 *    (obs-fold) and the aws-c-auth copy of the same case use a space; checked above.
 */
static const char *const classic_skip[] = {"post-x-www-form-urlencoded",
                                           "post-x-www-form-urlencoded-parameters",
                                           "get-header-value-multiline"};

static bool classic_skipped(const char *name)
{
    for (size_t i = 0; i < sizeof(classic_skip) / sizeof(classic_skip[0]); i++)
        if (!strcmp(name, classic_skip[i]))
            return true;
    return false;
}

/* Runs the case in dir/name/name.* if there is one; returns 1 if it ran. */
static int run_classic_case(const char *dir, const char *name)
{
    char *base = xasprintf("%s/%s", dir, name);
    char *req_name = xasprintf("%s.req", name);
    char *req_text = read_opt(base, req_name);
    free(req_name);
    if (!req_text) {
        free(base);
        return 0;
    }
    char *f = xasprintf("%s.creq", name);
    char *want_creq = read_opt(base, f);
    free(f);
    f = xasprintf("%s.sts", name);
    char *want_sts = read_opt(base, f);
    free(f);
    f = xasprintf("%s.authz", name);
    char *want_authz = read_opt(base, f);
    free(f);
    ck_assert_msg(want_creq && want_sts && want_authz, "%s: incomplete case", name);

    struct vreq r;
    vreq_parse(&r, req_text);
    char body_hash[65];
    sigv4_sha256_hex(body_hash, r.body, r.body_len);
    struct sigv4_request sr = {.method = r.method,
                               .path = r.path,
                               .query = r.query,
                               .headers = r.h,
                               .n_headers = r.n,
                               .payload_hash = body_hash,
                               .normalize_path = true,
                               .access_key_id = "AKIDEXAMPLE",
                               .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                               .region = "us-east-1",
                               .service = "service"};
    struct sigv4_result res;
    int rc = sigv4_sign(&res, &sr);
    ck_assert_msg(rc == 0, "%s: sign failed: %s", name, sl_strerror(rc));
    assert_text_eq("canonical request", name, res.canonical_request, want_creq);
    assert_text_eq("string to sign", name, res.string_to_sign, want_sts);
    assert_text_eq("authorization", name, res.authorization, want_authz);
    sigv4_result_release(&res);
    vreq_free(&r);
    free(want_creq);
    free(want_sts);
    free(want_authz);
    free(req_text);
    free(base);
    return 1;
}

static int run_classic_dir(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot open %s", dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || classic_skipped(de->d_name))
            continue;
        char *sub = xasprintf("%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode)) {
            int ran = run_classic_case(dir, de->d_name);
            n += ran ? ran : run_classic_dir(sub); /* normalize-path/, post-sts-token/ */
        }
        free(sub);
    }
    closedir(d);
    return n;
}

START_TEST(test_sigv4_classic_vectors)
{
    char *root = test_path(VEC_DIR "aws-sig-v4-test-suite");
    int n = run_classic_dir(root);
    free(root);
    /* 31 cases, 3 left out */
    ck_assert_int_eq(n, 28);
}
END_TEST

/* --- 3. curl --aws-sigv4 ---------------------------------------------------------------- */

/* Accepts one connection on fd, reads the request head, answers 200, and writes the
 * head to out_fd. Runs in a child. */
static void serve_once(int fd, int out_fd)
{
    int c = accept(fd, NULL, NULL);
    if (c < 0)
        _exit(1);
    char buf[16384];
    size_t len = 0;
    while (len < sizeof(buf) - 1) {
        ssize_t n = read(c, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            break;
    }
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    if (write(c, resp, sizeof(resp) - 1) < 0 || write(out_fd, buf, len) < 0)
        _exit(1);
    close(c);
    _exit(0);
}

START_TEST(test_sigv4_matches_curl)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof(sa);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(fd, 1), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &slen), 0);
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(pfd[0]);
        serve_once(fd, pfd[1]);
    }
    close(pfd[1]);
    close(fd);

    /* a key with characters S3 clients must escape, a query, a session token. The query
     * is in canonical order already: curl 7.88 signs it as written (later curls sort) */
    char *url = xasprintf("http://127.0.0.1:%d/bucket/dir/a%%20b%%2Bc~.txt?partNumber=2&uploads=",
                          ntohs(sa.sin_port));
    char *argv[] = {"/usr/bin/curl",
                    "-sS",
                    "-X",
                    "PUT",
                    "--aws-sigv4",
                    "aws:amz:eu-west-3:s3",
                    "--user",
                    "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                    "-H",
                    "x-amz-security-token: tok/en+1",
                    "-H",
                    "x-amz-meta-sluice: attempt 1",
                    "-o",
                    "/dev/null",
                    url,
                    NULL};
    char *err = NULL;
    int status = test_run(argv, NULL, &err);
    ck_assert_msg(status == 0, "curl failed: %s", err);
    free(err);
    char head[16384];
    size_t hlen = 0;
    ssize_t n;
    while ((n = read(pfd[0], head + hlen, sizeof(head) - 1 - hlen)) > 0)
        hlen += (size_t)n;
    head[hlen] = '\0';
    close(pfd[0]);
    int wstatus;
    ck_assert_int_eq(waitpid(pid, &wstatus, 0), pid);
    ck_assert(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);

    /* parse the head: request line, then headers (CRLF) */
    char *save = NULL;
    char *line = strtok_r(head, "\r\n", &save);
    ck_assert_ptr_nonnull(line);
    ck_assert(!strncmp(line, "PUT /bucket/dir/a%20b%2Bc~.txt?partNumber=2&uploads= HTTP/1.1",
                       strlen(line)));
    struct sigv4_header h[32];
    size_t nh = 0;
    const char *authz = NULL, *hash = SIGV4_EMPTY_SHA256;
    while ((line = strtok_r(NULL, "\r\n", &save)) && nh < 32) {
        char *colon = strchr(line, ':');
        ck_assert_ptr_nonnull(colon);
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ')
            v++;
        if (!strcasecmp(line, "authorization")) {
            authz = v;
            continue;
        }
        if (!strcasecmp(line, "x-amz-content-sha256"))
            hash = v;
        h[nh++] = (struct sigv4_header){line, v};
    }
    ck_assert_ptr_nonnull(authz);
    /* sign what curl signed: the headers its SignedHeaders names */
    const char *sh = strstr(authz, "SignedHeaders=");
    ck_assert_ptr_nonnull(sh);
    sh += strlen("SignedHeaders=");
    char *signed_list = xasprintf(";%.*s;", (int)strcspn(sh, ","), sh);
    struct sigv4_header chosen[32];
    size_t nc = 0;
    for (size_t i = 0; i < nh; i++) {
        char *needle = xasprintf(";%s;", h[i].name);
        for (char *c = needle; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
        if (strstr(signed_list, needle))
            chosen[nc++] = h[i];
        free(needle);
    }
    free(signed_list);
    ck_assert_uint_ge(nc, 3); /* host, x-amz-date, and the token at least */
    struct sigv4_request sr = {.method = "PUT",
                               .path = "/bucket/dir/a b+c~.txt",
                               .query = "partNumber=2&uploads=",
                               .headers = chosen,
                               .n_headers = nc,
                               .payload_hash = hash,
                               .access_key_id = "AKIDEXAMPLE",
                               .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                               .region = "eu-west-3",
                               .service = "s3"};
    struct sigv4_result res;
    ck_assert_int_eq(sigv4_sign(&res, &sr), 0);
    ck_assert_str_eq(res.authorization, authz);
    sigv4_result_release(&res);
    free(url);
}
END_TEST

/* --- 4. bad input --------------------------------------------------------------------- */

START_TEST(test_sigv4_refuses_bad_requests)
{
    struct sigv4_header ok[] = {{"Host", "h"}, {"X-Amz-Date", "20150830T123600Z"}};
    struct sigv4_request base = {.method = "GET",
                                 .path = "/",
                                 .headers = ok,
                                 .n_headers = 2,
                                 .payload_hash = SIGV4_EMPTY_SHA256,
                                 .access_key_id = "AK",
                                 .secret_access_key = "SK",
                                 .region = "us-east-1",
                                 .service = "s3",
                                 .amz_date = "20150830T123600Z",
                                 .expires_s = 60};
    struct sigv4_result res;
    ck_assert_int_eq(sigv4_sign(&res, &base), 0);
    sigv4_result_release(&res);

    struct sigv4_request r = base;
    r.path = "relative";
    ck_assert_int_eq(sigv4_sign(&res, &r), SL_EINVAL);
    r = base;
    r.query = "a=%G1";
    ck_assert_int_eq(sigv4_sign(&res, &r), SL_EINVAL);
    r.query = "a=%4";
    ck_assert_int_eq(sigv4_sign(&res, &r), SL_EINVAL);
    r = base;
    r.n_headers = 1; /* no x-amz-date */
    ck_assert_int_eq(sigv4_sign(&res, &r), SL_EINVAL);
    struct sigv4_header bad_date[] = {{"Host", "h"}, {"X-Amz-Date", "2015-08-30T12:36:00Z"}};
    r.headers = bad_date;
    r.n_headers = 2;
    ck_assert_int_eq(sigv4_sign(&res, &r), SL_EINVAL);
    struct sigv4_header bad_name[] = {{"Ho st", "h"}, {"X-Amz-Date", "20150830T123600Z"}};
    r.headers = bad_name;
    ck_assert_int_eq(sigv4_sign(&res, &r), SL_EINVAL);
    r = base;
    r.secret_access_key = NULL;
    ck_assert_int_eq(sigv4_sign(&res, &r), SL_EINVAL);
    r = base;
    r.region = "";
    ck_assert_int_eq(sigv4_sign(&res, &r), SL_EINVAL);
    /* presign: no x-amz-date header, an expiry in range */
    r = base;
    ck_assert_int_eq(sigv4_presign(&res, &r), SL_EINVAL);
    r.n_headers = 1;
    ck_assert_int_eq(sigv4_presign(&res, &r), 0);
    sigv4_result_release(&res);
    r.expires_s = 604801;
    ck_assert_int_eq(sigv4_presign(&res, &r), SL_EINVAL);
}
END_TEST

START_TEST(test_sigv4_uri_encode)
{
    struct strbuf sb = STRBUF_INIT;
    const char in[] = "a b/c+d~e%\xe1\x88\xb4";
    sigv4_uri_encode(&sb, in, sizeof(in) - 1, true);
    ck_assert_str_eq(sb.buf, "a%20b/c%2Bd~e%25%E1%88%B4");
    strbuf_reset(&sb);
    sigv4_uri_encode(&sb, in, sizeof(in) - 1, false);
    ck_assert_str_eq(sb.buf, "a%20b%2Fc%2Bd~e%25%E1%88%B4");
    strbuf_release(&sb);
    char d[17];
    sigv4_amz_date(d, 1440938160);
    ck_assert_str_eq(d, "20150830T123600Z");
}
END_TEST

Suite *suite_worker_sigv4(void)
{
    Suite *s = suite_create("worker_sigv4");
    TCase *tc = tcase_create("sigv4");
    tcase_add_test(tc, test_sigv4_c_auth_vectors);
    tcase_add_test(tc, test_sigv4_classic_vectors);
    tcase_add_test(tc, test_sigv4_matches_curl);
    tcase_add_test(tc, test_sigv4_refuses_bad_requests);
    tcase_add_test(tc, test_sigv4_uri_encode);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    return s;
}
