/*
 * common/gitauth.c - Git credentials, ssh host keys and CA certificates for libgit2
 * remotes (gitauth.h).
 */
#include "common/gitauth.h"

#include "common/error.h"
#include "common/xalloc.h"

#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt" /* Debian's ca-certificates */

static char *dup_or_null(const char *s)
{
    return s && *s ? xstrdup(s) : NULL;
}

void gitauth_init(struct gitauth *a, const char *username, const char *password,
                  const char *ssh_key_file, const char *known_hosts_file)
{
    memset(a, 0, sizeof(*a));
    a->username = dup_or_null(username);
    a->password = dup_or_null(password);
    a->ssh_key_file = dup_or_null(ssh_key_file);
    a->known_hosts_file = dup_or_null(known_hosts_file);
}

void gitauth_release(struct gitauth *a)
{
    free(a->username);
    if (a->password)
        memset(a->password, 0, strlen(a->password));
    free(a->password);
    free(a->ssh_key_file);
    free(a->known_hosts_file);
    free(a->cert_error);
    memset(a, 0, sizeof(*a));
}

void gitauth_begin(struct gitauth *a)
{
    a->cred_calls = 0;
    free(a->cert_error);
    a->cert_error = NULL;
}

static pthread_mutex_t ca_lock = PTHREAD_MUTEX_INITIALIZER;
static char *ca_in_use; /* what libgit2 was pointed at; NULL: nothing yet */

int gitauth_use_ca(const char *ca_file, struct strbuf *err)
{
    const char *ca = ca_file && *ca_file ? ca_file : SYSTEM_CA_BUNDLE;
    if (ca_file && *ca_file && access(ca, R_OK) < 0) {
        strbuf_addf(err, "cannot read git.ca_file '%s': %s", ca, strerror(errno));
        return SL_EINVAL;
    }
    if (access(ca, R_OK) < 0)
        return 0; /* no system bundle: libgit2's own defaults */
    int rc = 0;
    pthread_mutex_lock(&ca_lock);
    if (!ca_in_use || strcmp(ca_in_use, ca) != 0) {
        if (!ca_in_use)
            git_libgit2_init(); /* kept: the setting lives as long as libgit2's globals */
        if (git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, ca, NULL) < 0) {
            const git_error *e = git_error_last();
            strbuf_addf(err, "cannot use the CA certificates in '%s': %s", ca,
                        e && e->message ? e->message : "unknown libgit2 error");
            rc = SL_EINVAL;
        } else {
            free(ca_in_use);
            ca_in_use = xstrdup(ca);
        }
    }
    pthread_mutex_unlock(&ca_lock);
    return rc;
}

/* Where url's authority starts (after "://", or at the start of an scp-like URL) and its
 * last '@' before the path, or NULL: no user information. */
static const char *user_info_end(const char *url, const char **host)
{
    const char *scheme = strstr(url, "://");
    *host = scheme ? scheme + 3 : url;
    const char *end = *host + strcspn(*host, "/");
    const char *at = NULL;
    for (const char *p = *host; p < end; p++)
        if (*p == '@')
            at = p;
    return at;
}

char *gitauth_redact_url(const char *url)
{
    const char *host, *at = user_info_end(url, &host);
    return at ? xasprintf("%.*s%s", (int)(host - url), url, at + 1) : xstrdup(url);
}

char *gitauth_shareable_url(const char *url)
{
    if (!strstr(url, "://"))
        return xstrdup(url); /* scp-like user@host:path: no password can be written */
    const char *host, *at = user_info_end(url, &host);
    if (!at)
        return xstrdup(url);
    bool http = !strncmp(url, "http://", 7) || !strncmp(url, "https://", 8);
    const char *colon = memchr(host, ':', (size_t)(at - host));
    if (http || !colon)
        return http ? xasprintf("%.*s%s", (int)(host - url), url, at + 1) : xstrdup(url);
    return xasprintf("%.*s%s", (int)(colon - url), url, at);
}

/* --- known_hosts ---------------------------------------------------------------------- */

/* Decodes base64 text of length n into a new buffer; NULL if it is not base64. */
static unsigned char *b64_decode(const char *text, size_t n, size_t *out_len)
{
    if (n == 0 || n % 4 || n > 65536)
        return NULL;
    unsigned char *buf = xmalloc(n);
    int len = EVP_DecodeBlock(buf, (const unsigned char *)text, (int)n);
    if (len < 0) {
        free(buf);
        return NULL;
    }
    size_t pad = (text[n - 1] == '=') + (text[n - 2] == '=');
    *out_len = (size_t)len - pad;
    return buf;
}

/* "|1|<salt>|<hmac-sha1 of host>" */
static bool hashed_host_matches(const char *pat, size_t n, const char *host)
{
    const char *salt = pat + 3, *bar = memchr(salt, '|', n - 3);
    if (!bar)
        return false;
    size_t salt_len, mac_len;
    unsigned char *s = b64_decode(salt, (size_t)(bar - salt), &salt_len);
    unsigned char *m = b64_decode(bar + 1, n - (size_t)(bar + 1 - pat), &mac_len);
    bool ok = false;
    if (s && m && mac_len == 20) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        if (HMAC(EVP_sha1(), s, (int)salt_len, (const unsigned char *)host, strlen(host), mac,
                 &len) &&
            len == 20)
            ok = CRYPTO_memcmp(mac, m, 20) == 0;
    }
    free(s);
    free(m);
    return ok;
}

/* 1 if one pattern of the comma-separated list matches host, -1 if a negated one does,
 * else 0. */
static int hosts_match(const char *list, size_t n, const char *host)
{
    int result = 0;
    for (size_t i = 0; i < n;) {
        size_t len = 0;
        while (i + len < n && list[i + len] != ',')
            len++;
        char *pat = xasprintf("%.*s", (int)len, list + i);
        bool neg = pat[0] == '!';
        const char *p = pat + neg;
        bool hit;
        if (!strncmp(p, "|1|", 3)) {
            hit = hashed_host_matches(p, strlen(p), host);
        } else {
            char *h = NULL;
            if (p[0] == '[') { /* [host]:port - libgit2 does not tell us the port */
                const char *close = strchr(p, ']');
                h = close ? xasprintf("%.*s", (int)(close - p - 1), p + 1) : NULL;
            }
            hit = fnmatch(h ? h : p, host, 0) == 0; /* both lower case, as ssh writes them */
            free(h);
        }
        free(pat);
        if (hit && neg)
            return -1;
        if (hit)
            result = 1;
        i += len + 1;
    }
    return result;
}

bool gitauth_known_host(const char *text, const char *host, const unsigned char *key,
                        size_t key_len)
{
    bool accepted = false;
    for (const char *line = text; line && *line;) {
        const char *eol = strchr(line, '\n');
        size_t n = eol ? (size_t)(eol - line) : strlen(line);
        char *l = xasprintf("%.*s", (int)n, line);
        line = eol ? eol + 1 : NULL;
        char *f[4] = {0};
        size_t nf = 0;
        for (char *save = NULL, *t = strtok_r(l, " \t\r", &save); t && nf < 4;
             t = strtok_r(NULL, " \t\r", &save))
            f[nf++] = t;
        bool revoked = false, skip = nf == 0 || f[0][0] == '#';
        if (!skip && f[0][0] == '@') {
            revoked = !strcmp(f[0], "@revoked");
            skip = !revoked; /* @cert-authority: not for plain host keys */
            memmove(f, f + 1, 3 * sizeof(*f));
            nf--;
        }
        if (!skip && nf >= 3) {
            size_t blob_len;
            unsigned char *blob = b64_decode(f[2], strlen(f[2]), &blob_len);
            int m = hosts_match(f[0], strlen(f[0]), host);
            bool same = blob && blob_len == key_len && CRYPTO_memcmp(blob, key, key_len) == 0;
            free(blob);
            if (same && ((revoked && m > 0) || m < 0)) {
                free(l);
                return false;
            }
            if (same && m > 0)
                accepted = true;
        }
        free(l);
    }
    return accepted;
}

/* --- callbacks ------------------------------------------------------------------------ */

int gitauth_credentials(git_credential **out, struct gitauth *a, const char *user_from_url,
                        unsigned int allowed)
{
    const char *name = a->username ? a->username : user_from_url ? user_from_url : "git";
    if (allowed == GIT_CREDENTIAL_USERNAME) /* ssh's first question, when the URL has none */
        return git_credential_username_new(out, name);
    if (a->cred_calls++ > 0) {
        git_error_set_str(GIT_ERROR_NET, "authentication failed: the server refused the "
                                         "configured credentials");
        return GIT_EAUTH;
    }
    const char *user = a->username ? a->username : user_from_url ? user_from_url : "git";
    if ((allowed & GIT_CREDENTIAL_SSH_KEY) && a->ssh_key_file)
        return git_credential_ssh_key_new(out, user, NULL, a->ssh_key_file, NULL);
    if ((allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT) && a->password)
        return git_credential_userpass_plaintext_new(out, user, a->password);
    if (allowed & GIT_CREDENTIAL_USERNAME)
        return git_credential_username_new(out, user);
    git_error_set_str(GIT_ERROR_NET, "the server asks for credentials and none are configured "
                                     "(git.password, or git.ssh_key_file for ssh)");
    return GIT_EAUTH;
}

int gitauth_certificate(struct gitauth *a, git_cert *cert, int valid, const char *host)
{
    if (cert->cert_type != GIT_CERT_HOSTKEY_LIBSSH2)
        return valid ? 0 : GIT_PASSTHROUGH; /* TLS: libgit2 verifies against the CA store */
    const git_cert_hostkey *hk = (const git_cert_hostkey *)cert;
    struct strbuf text = STRBUF_INIT;
    bool ok = false;
    free(a->cert_error);
    a->cert_error = NULL;
    if (!(hk->type & GIT_CERT_SSH_RAW)) {
        a->cert_error = xasprintf("the ssh host key of %s cannot be checked", host);
    } else if (!a->known_hosts_file || strbuf_read_file(&text, a->known_hosts_file, 1 << 20) < 0) {
        a->cert_error = xasprintf("cannot read git.known_hosts_file '%s'",
                                  a->known_hosts_file ? a->known_hosts_file : "(unset)");
    } else {
        ok =
            gitauth_known_host(text.buf, host, (const unsigned char *)hk->hostkey, hk->hostkey_len);
        if (!ok)
            a->cert_error =
                xasprintf("the ssh host key of %s is not in '%s'", host, a->known_hosts_file);
    }
    strbuf_release(&text);
    return ok ? 0 : GIT_ECERTIFICATE;
}

static int on_credentials(git_credential **out, const char *url, const char *user_from_url,
                          unsigned int allowed, void *payload)
{
    (void)url;
    return gitauth_credentials(out, payload, user_from_url, allowed);
}

static int on_certificate(git_cert *cert, int valid, const char *host, void *payload)
{
    return gitauth_certificate(payload, cert, valid, host);
}

void gitauth_callbacks(git_remote_callbacks *cb, struct gitauth *a)
{
    cb->credentials = on_credentials;
    cb->certificate_check = on_certificate;
    cb->payload = a;
}
