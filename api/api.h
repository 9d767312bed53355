/*
 * api/api.h - the REST API server: HTTP on libuv (h2o), bearer tokens and roles, the
 * resources of docs/api.md, the OpenAPI document, Prometheus metrics, live logs and the
 * Git push webhook.
 *
 * Design (api/README.md has the long form). One thread runs a libuv loop with h2o on it:
 * it accepts connections, parses HTTP (h2o: keep-alive, HTTP/1.1 and h2c, request size
 * limit, timeouts), matches the route and sends responses. Everything that may block -
 * PostgreSQL, Redis, reading a log file - runs on a small pool of worker threads, each
 * with its own struct store and struct queue (store/ and queue/ sessions are one per
 * thread). A request is copied into a job, handed to the pool, and its response comes
 * back to the loop through a uv_async_t. The loop never blocks.
 *
 * Lifecycle:
 *
 *   api_server_new()  binds the listening socket (so the port is known at once, even for
 *                     port 0) and checks the options; opens no database yet
 *   api_server_run()  connects the pool's sessions, then serves until a stop is requested;
 *                     blocks the calling thread, which becomes the loop thread
 *   api_server_request_stop()  from any thread or a signal handler: stop accepting,
 *                     finish the requests in flight (live log streams end), close idle
 *                     keep-alive connections; after shutdown_grace_ms whatever remains is
 *                     cut. Then api_server_run() returns
 *   api_server_free() after api_server_run() returned (or instead of it)
 *
 * Thread-safety: api_server_request_stop() and api_server_port() may be called from any
 * thread; everything else from the thread that owns the server.
 *
 * Memory: the server copies every string of its options; api_server_free() frees all.
 */
#ifndef SLUICE_API_API_H
#define SLUICE_API_API_H

#include "common/strbuf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct api_server;
struct store;

struct api_options {
    const char *database_url;     /* required */
    const char *redis_url;        /* required (queue depth in /metrics, health) */
    const char *listen;           /* "host:port"; port 0 picks a free one; default
                                     "127.0.0.1:8080" */
    const char *log_root;         /* step logs: <log_root>/<dag>/<run>/<step>/<n>.log */
    const char *webhook_secret;   /* POST /hooks/git; NULL: the hook answers 404 */
    size_t threads;               /* worker threads (database sessions); 0: 8 */
    size_t max_body_bytes;        /* larger request bodies get 413; 0: 1 MiB */
    int64_t request_timeout_ms;   /* a request must arrive within it; 0: 30 s */
    int64_t shutdown_grace_ms;    /* in-flight requests get this long at a stop; 0: 10 s */
    int64_t token_cache_ttl_ms;   /* a token's role is cached this long; 0: 5 s */
    int64_t follow_poll_ms;       /* live logs look for new bytes this often; 0: 250 ms */
    int64_t scheduler_stale_ms;   /* /health: a heartbeat older is "stale"; 0: 60 s */
    int64_t backfill_interval_ms; /* how often backfills are moved on; 0: 1 s */
    /* the artifact repository (worker/artifacts.h), borrowed: a finished attempt's log
     * that log_root no longer has is served from its archive (artifacts.archive_logs);
     * NULL: none. It must outlive api_server_free(). */
    struct artifacts_repo *artifacts;
};

/*
 * Checks o, copies it and binds the listener. Returns 0 and sets *out; SL_EINVAL (a bad
 * option, with the reason appended to err) or SL_EIO (the address cannot be bound).
 */
int api_server_new(struct api_server **out, const struct api_options *o, struct strbuf *err);
/* The port the server listens on (useful with port 0). */
int api_server_port(const struct api_server *s);
/*
 * Serves until api_server_request_stop(). Opens a database session per worker thread
 * first (returns SL_ECONN if the database cannot be reached, SL_ERANGE if its schema is
 * not the one this binary knows). Returns 0 after a stop.
 */
int api_server_run(struct api_server *s);
/* Asks the server to stop gracefully. Async-signal-safe; callable from any thread. */
void api_server_request_stop(struct api_server *s);
/* Frees the server; NULL is fine. Not while api_server_run() runs. */
void api_server_free(struct api_server *s);

/* --- tokens (also used by `sluice standalone` and `sluice api` at first start) ------ */

enum api_role {
    API_ROLE_NONE,     /* no valid token: public routes only */
    API_ROLE_VIEWER,   /* reads */
    API_ROLE_OPERATOR, /* + trigger, cancel, retry, pause, backfill, sync */
    API_ROLE_ADMIN,    /* + tokens */
};

/* "viewer", "operator", "admin" ("none" for API_ROLE_NONE). */
const char *api_role_name(enum api_role r);
/* Parses a role name (not "none"). Returns 0 or SL_EINVAL. */
int api_role_parse(enum api_role *out, const char *name);

#define API_TOKEN_PREFIX  "slc_"
#define API_TOKEN_BUFSZ   64 /* "slc_" + 43 base64url characters + NUL fits */
#define API_TOKEN_HASH_SZ 32 /* SHA-256 */

/* Makes a new random token (32 bytes from the kernel, base64url) into buf. Returns 0 or
 * SL_EIO if no randomness could be had. */
int api_token_generate(char buf[API_TOKEN_BUFSZ]);
/* SHA-256 of the token's text: what the database stores. */
void api_token_hash(unsigned char out[API_TOKEN_HASH_SZ], const char *token);

/*
 * First start: if the database has no token at all, creates an admin token named
 * "bootstrap", puts its text in buf and sets *out_created. Otherwise leaves buf alone.
 * Returns 0 or a store error code.
 */
int api_token_bootstrap(bool *out_created, char buf[API_TOKEN_BUFSZ], struct store *st);

/* --- the push webhook's signature check (pure, for tests and the route) ----------------- */

/*
 * Whether header (GitHub's X-Hub-Signature-256, "sha256=<64 hex>") is the HMAC-SHA256 of
 * body[0..len) under secret. Hex digits are accepted in either case (they are decoded,
 * then the 32 bytes are compared in constant time). A missing or malformed header, or the
 * SHA-1 form "sha1=...", is false.
 */
bool api_webhook_github_valid(const char *secret, const void *body, size_t len, const char *header);
/* Whether header (GitLab's X-Gitlab-Token) equals secret, compared in constant time. */
bool api_webhook_gitlab_valid(const char *secret, const char *header);

#endif
