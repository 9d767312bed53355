/*
 * cli/cmd_api.c - sluice api: the REST API server in the foreground; and the API thread
 * that `sluice standalone` runs.
 *
 *   sluice api [--config FILE] [--listen HOST:PORT] [--database-url URL] [--redis-url URL]
 *
 * Settings come from sluice.yaml and SLUICE_* variables (the api.* keys of
 * docs/configuration.md); the flags win. At start the schema is migrated (safe from many
 * processes at once) and, when the database has no token at all, an admin token named
 * "bootstrap" is made and printed once on stderr. SIGINT or SIGTERM stops the server
 * gracefully (requests in flight finish, within api.shutdown_grace); a second one exits
 * at once. Exits 0 after a stop, 1 when it cannot start, 2 on a usage error.
 */
#include "api/api.h"
#include "cli/cli.h"
#include "worker/artifacts.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "store/store.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
/*
 * h2o keeps up to 16 freed memory-pool chunks per thread for reuse, in a thread-local list
 * that nothing can empty (libh2o 2.2 exports no call for it). When the thread that ran
 * the server ends, LeakSanitizer sees those chunks as lost: they are a cache, not a leak,
 * so they are suppressed here - and only they (allocations made by h2o's recycling
 * allocator).
 */
const char *__lsan_default_suppressions(void); // NOLINT(bugprone-reserved-identifier)
const char *__lsan_default_suppressions(void)  // NOLINT(bugprone-reserved-identifier)
{
    return "leak:h2o_mem_alloc_recycle\n";
}
const char *__lsan_default_options(void); // NOLINT(bugprone-reserved-identifier)
const char *__lsan_default_options(void)  // NOLINT(bugprone-reserved-identifier)
{
    return "print_suppressions=0";
}
#endif

static struct api_server *serving;

static void on_signal(int sig)
{
    static volatile sig_atomic_t seen;
    if (seen++)
        _exit(128 + sig);
    if (serving)
        api_server_request_stop(serving);
}

/* Migrates and, on a database without tokens, makes and prints the bootstrap token. */
static int prepare_database(const char *db_url)
{
    struct store *st = NULL;
    struct strbuf err = STRBUF_INIT;
    int rc = store_open(&st, db_url, NULL, &err);
    if (rc < 0) {
        fprintf(stderr, "error: cannot connect to the database: %s\n", err.buf);
        strbuf_release(&err);
        return rc;
    }
    strbuf_release(&err);
    rc = store_migrate(st, NULL, NULL);
    if (rc < 0) {
        fprintf(stderr, "error: %s\n", store_errmsg(st));
        store_close(st);
        return rc;
    }
    bool created = false;
    char token[API_TOKEN_BUFSZ];
    rc = api_token_bootstrap(&created, token, st);
    store_close(st);
    if (rc < 0) {
        fprintf(stderr, "error: cannot create the first admin token\n");
        return rc;
    }
    if (created) {
        fprintf(stderr,
                "\nFirst start: an admin token was created (it is shown only this once):\n\n"
                "    export SLUICE_TOKEN=%s\n\n"
                "Make tokens for people and programs with `sluice token create --role "
                "viewer|operator|admin`,\nthen revoke this one (`sluice token revoke ID`).\n\n",
                token);
        memset(token, 0, sizeof(token));
    }
    return 0;
}

static void api_options_from(struct api_options *o, const struct sl_config *c, const char *db,
                             const char *redis, struct artifacts_repo *artifacts)
{
    memset(o, 0, sizeof(*o));
    o->artifacts = artifacts;
    o->database_url = db;
    o->redis_url = redis;
    o->listen = c->api.listen;
    o->log_root = c->log_root;
    o->webhook_secret = c->api.webhook_secret;
    o->threads = (size_t)c->api.threads;
    o->max_body_bytes = (size_t)c->api.max_body_bytes;
    o->request_timeout_ms = c->api.request_timeout_ms;
    o->shutdown_grace_ms = c->api.shutdown_grace_ms;
    o->token_cache_ttl_ms = c->api.token_cache_ttl_ms;
}

/* --- the API as a thread of `sluice standalone` -------------------------------------- */

struct cli_api {
    struct api_server *srv;
    pthread_t thread;
};

static void *api_main(void *arg)
{
    api_server_run(arg);
    return NULL;
}

int cli_api_start(struct cli_api **out, const struct sl_config *c, const char *db_url,
                  const char *redis_url, struct artifacts_repo *artifacts)
{
    if (prepare_database(db_url) < 0)
        return -1;
    struct api_options o;
    api_options_from(&o, c, db_url, redis_url, artifacts);
    struct strbuf err = STRBUF_INIT;
    struct cli_api *a = xcalloc(1, sizeof(*a));
    if (api_server_new(&a->srv, &o, &err) < 0) {
        fprintf(stderr, "error: the API cannot start: %s\n", err.buf);
        strbuf_release(&err);
        free(a);
        return -1;
    }
    strbuf_release(&err);
    if (pthread_create(&a->thread, NULL, api_main, a->srv) != 0) {
        api_server_free(a->srv);
        free(a);
        return -1;
    }
    *out = a;
    return 0;
}

int cli_api_port(const struct cli_api *a)
{
    return api_server_port(a->srv);
}

void cli_api_stop(struct cli_api *a)
{
    if (!a)
        return;
    api_server_request_stop(a->srv);
    pthread_join(a->thread, NULL);
    api_server_free(a->srv);
    free(a);
}

/* --- sluice api ------------------------------------------------------------------------ */

static void api_usage(FILE *out)
{
    fprintf(out, "usage: sluice api [--config FILE] [--listen HOST:PORT] [--database-url URL]\n"
                 "                  [--redis-url URL]\n");
}

int cmd_api(int argc, char **argv)
{
    const char *config = NULL, *listen = NULL, *db = NULL, *redis = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            api_usage(stdout);
            return 0;
        } else if ((v = cli_flag_value(argc, argv, &i, "--config"))) {
            config = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--listen"))) {
            listen = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--database-url"))) {
            db = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--redis-url"))) {
            redis = v;
        } else {
            fprintf(stderr, "error: unknown or incomplete argument '%s'\n", argv[i]);
            api_usage(stderr);
            return 2;
        }
    }
    struct sl_config c;
    struct strbuf err = STRBUF_INIT;
    if (sl_config_load(&c, config, &err) < 0) {
        fprintf(stderr, "error: configuration:\n%s", err.buf);
        strbuf_release(&err);
        sl_config_release(&c);
        return 2;
    }
    strbuf_release(&err);
    if (listen)
        sl_config_set(&c.api.listen, listen);
    if (db)
        sl_config_set(&c.database_url, db);
    if (redis)
        sl_config_set(&c.redis_url, redis);
    enum sl_log_level level;
    if (sl_log_parse_level(&level, c.log_level) == 0)
        sl_log_set_level(level);
    if (!c.database_url || !c.redis_url) {
        fprintf(stderr, "error: the API needs database_url and redis_url "
                        "(or run `sluice standalone`, which includes it)\n");
        sl_config_release(&c);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (prepare_database(c.database_url) < 0) {
        sl_config_release(&c);
        return 1;
    }
    /* archived step logs are served from the artifact repository (artifacts.*) */
    struct artifacts_repo *artifacts = NULL;
    if (artifacts_open(&artifacts, &c, &err) < 0) {
        fprintf(stderr, "error: configuration:\n%s", err.buf);
        strbuf_release(&err);
        sl_config_release(&c);
        return 2;
    }
    struct api_options o;
    api_options_from(&o, &c, c.database_url, c.redis_url, artifacts);
    struct api_server *s = NULL;
    int rc = api_server_new(&s, &o, &err);
    sl_config_release(&c);
    if (rc < 0) {
        fprintf(stderr, "error: %s\n", err.buf);
        strbuf_release(&err);
        artifacts_close(artifacts);
        return rc == SL_EINVAL ? 2 : 1;
    }
    strbuf_release(&err);
    serving = s;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rc = api_server_run(s);
    serving = NULL;
    api_server_free(s);
    artifacts_close(artifacts);
    return rc < 0 ? 1 : 0;
}
