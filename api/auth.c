/*
 * api/auth.c - bearer tokens: making them, hashing them, checking them, caching roles.
 *
 * A token is "slc_" + 43 base64url characters (32 random bytes). The database keeps only
 * its SHA-256 (api_tokens.token_hash), so a leaked database does not leak tokens; a
 * token of 256 random bits needs no slow hash. A request's token is hashed and looked up;
 * the answer (role, or "no such token") is cached for token_cache_ttl_ms, so a busy
 * client costs one lookup per TTL rather than one per request, and a revoked token stops
 * working within the TTL on every API replica (at once on the replica that revoked it).
 *
 * The cache is a fixed table of 1024 slots indexed by the hash's first bytes, under one
 * mutex; a collision just evicts. Thread-safe: the worker threads share it.
 */
#include "api/api_int.h"

#include "common/error.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "store/store.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CACHE_SLOTS 1024

const char *api_role_name(enum api_role r)
{
    switch (r) {
    case API_ROLE_VIEWER:
        return "viewer";
    case API_ROLE_OPERATOR:
        return "operator";
    case API_ROLE_ADMIN:
        return "admin";
    case API_ROLE_NONE:
        break;
    }
    return "none";
}

int api_role_parse(enum api_role *out, const char *name)
{
    static const enum api_role roles[] = {API_ROLE_VIEWER, API_ROLE_OPERATOR, API_ROLE_ADMIN};
    for (size_t i = 0; name && i < sizeof(roles) / sizeof(roles[0]); i++) {
        if (!strcmp(name, api_role_name(roles[i]))) {
            *out = roles[i];
            return 0;
        }
    }
    return SL_EINVAL;
}

int api_token_generate(char buf[API_TOKEN_BUFSZ])
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char raw[33];
    if (RAND_bytes(raw, 32) != 1)
        return SL_EIO;
    raw[32] = 0;
    size_t o = strlen(API_TOKEN_PREFIX);
    memcpy(buf, API_TOKEN_PREFIX, o);
    /* 32 bytes = 256 bits = 42 full sextets + 4 bits: 43 characters */
    for (size_t bit = 0; bit < 256; bit += 6) {
        size_t byte = bit / 8, shift = bit % 8;
        unsigned v = ((unsigned)raw[byte] << 8 | raw[byte + 1]) >> (10 - shift);
        buf[o++] = b64[v & 63];
    }
    buf[o] = '\0';
    OPENSSL_cleanse(raw, sizeof(raw));
    return 0;
}

void api_token_hash(unsigned char out[API_TOKEN_HASH_SZ], const char *token)
{
    unsigned int len = 0;
    EVP_Digest(token, strlen(token), out, &len, EVP_sha256(), NULL);
}

int api_token_bootstrap(bool *out_created, char buf[API_TOKEN_BUFSZ], struct store *st)
{
    int64_t n = 0;
    int rc = store_tokens_count(st, &n);
    if (rc < 0)
        return rc;
    if (n > 0) {
        *out_created = false;
        return 0;
    }
    char token[API_TOKEN_BUFSZ];
    if (api_token_generate(token) < 0)
        return SL_EIO;
    unsigned char hash[API_TOKEN_HASH_SZ];
    api_token_hash(hash, token);
    struct arena mem = ARENA_INIT;
    struct store_token t;
    rc = store_token_create(st, &t, "bootstrap", "admin", hash, sizeof(hash), &mem);
    arena_release(&mem);
    if (rc == SL_EEXIST) { /* another process bootstrapped at the same time */
        *out_created = false;
        return 0;
    }
    if (rc < 0)
        return rc;
    memcpy(buf, token, API_TOKEN_BUFSZ);
    OPENSSL_cleanse(token, sizeof(token));
    *out_created = true;
    return 0;
}

/* --- the cache ------------------------------------------------------------------------------ */

struct slot {
    unsigned char hash[API_TOKEN_HASH_SZ];
    bool used;
    enum api_role role; /* API_ROLE_NONE: known not to be a live token */
    int64_t token_id;
    int64_t expires_ms;
};

struct api_token_cache {
    pthread_mutex_t mu;
    int64_t ttl_ms;
    struct slot slots[CACHE_SLOTS];
};

struct api_token_cache *api_token_cache_new(int64_t ttl_ms)
{
    struct api_token_cache *tc = xcalloc(1, sizeof(*tc));
    pthread_mutex_init(&tc->mu, NULL);
    tc->ttl_ms = ttl_ms;
    return tc;
}

void api_token_cache_free(struct api_token_cache *tc)
{
    if (!tc)
        return;
    pthread_mutex_destroy(&tc->mu);
    free(tc);
}

void api_token_cache_clear(struct api_token_cache *tc)
{
    pthread_mutex_lock(&tc->mu);
    memset(tc->slots, 0, sizeof(tc->slots));
    pthread_mutex_unlock(&tc->mu);
}

static size_t slot_of(const unsigned char *hash)
{
    return ((size_t)hash[0] << 8 | hash[1]) % CACHE_SLOTS;
}

static bool cache_get(struct api_token_cache *tc, const unsigned char *hash, enum api_role *role,
                      int64_t *id, int64_t now)
{
    bool hit = false;
    pthread_mutex_lock(&tc->mu);
    struct slot *s = &tc->slots[slot_of(hash)];
    if (s->used && s->expires_ms > now && !memcmp(s->hash, hash, API_TOKEN_HASH_SZ)) {
        *role = s->role;
        *id = s->token_id;
        hit = true;
    }
    pthread_mutex_unlock(&tc->mu);
    return hit;
}

static void cache_put(struct api_token_cache *tc, const unsigned char *hash, enum api_role role,
                      int64_t id, int64_t now)
{
    pthread_mutex_lock(&tc->mu);
    struct slot *s = &tc->slots[slot_of(hash)];
    memcpy(s->hash, hash, API_TOKEN_HASH_SZ);
    s->used = true;
    s->role = role;
    s->token_id = id;
    s->expires_ms = now + tc->ttl_ms;
    pthread_mutex_unlock(&tc->mu);
}

/* --- requests ------------------------------------------------------------------------------- */

bool api_authenticate(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    const char *h = rq->authorization;
    if (!h) {
        api_error(rs, 401, "unauthenticated", NULL,
                  "this needs a token: send 'Authorization: Bearer <token>' "
                  "(create one with `sluice token create`)");
        return false;
    }
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        api_error(rs, 401, "unauthenticated", NULL,
                  "the Authorization header must be 'Bearer <token>'");
        return false;
    }
    const char *token = h + 7;
    while (*token == ' ')
        token++;
    if (!*token) {
        api_error(rs, 401, "unauthenticated", NULL, "the bearer token is empty");
        return false;
    }
    unsigned char hash[API_TOKEN_HASH_SZ];
    api_token_hash(hash, token);
    int64_t now = sl_wall_ms(), id = 0;
    enum api_role role = API_ROLE_NONE;
    struct api_token_cache *tc = api_server_token_cache(c->srv);
    if (!cache_get(tc, hash, &role, &id, now)) {
        struct arena mem = ARENA_INIT;
        struct store_token t;
        int rc = store_token_find(c->st, &t, hash, sizeof(hash), &mem);
        if (rc == 0) {
            if (api_role_parse(&role, t.role) < 0)
                role = API_ROLE_NONE;
            id = t.id;
        } else if (rc != SL_ENOENT) {
            arena_release(&mem);
            api_store_error(rs, c->st, rc);
            return false;
        }
        arena_release(&mem);
        cache_put(tc, hash, role, id, now);
    }
    if (role == API_ROLE_NONE) {
        api_error(rs, 401, "unauthenticated", NULL, "the token is unknown or revoked");
        return false;
    }
    rq->role = role;
    rq->token_id = id;
    return true;
}

/* --- the push webhook ------------------------------------------------------------------------ */

bool api_webhook_github_valid(const char *secret, const void *body, size_t len, const char *header)
{
    if (!secret || !header || strncmp(header, "sha256=", 7) != 0 || strlen(header) != 7 + 64)
        return false;
    unsigned char given[32];
    for (size_t i = 0; i < 32; i++) {
        int v = 0;
        for (size_t k = 0; k < 2; k++) {
            char ch = header[7 + 2 * i + k];
            int d = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (d < 0)
                return false;
            v = v * 16 + d;
        }
        given[i] = (unsigned char)v;
    }
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    static const unsigned char empty[1] = {0};
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), len ? body : empty, len, mac, &mac_len) ||
        mac_len != 32)
        return false;
    return CRYPTO_memcmp(mac, given, 32) == 0;
}

bool api_webhook_gitlab_valid(const char *secret, const char *header)
{
    if (!secret || !header)
        return false;
    /* compare hashes, so the comparison takes the same time whatever the lengths */
    unsigned char a[API_TOKEN_HASH_SZ], b[API_TOKEN_HASH_SZ];
    api_token_hash(a, secret);
    api_token_hash(b, header);
    return CRYPTO_memcmp(a, b, sizeof(a)) == 0;
}
