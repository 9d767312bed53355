/*
 * cli/cmd_db.c - sluice db migrate|version: the database schema from the shell.
 *
 *   sluice db migrate [--database-url URL] [--wait DURATION]
 *   sluice db version [--database-url URL] [--wait DURATION]
 *
 * The URL comes from --database-url, else from $SLUICE_DATABASE_URL (preferred: a command
 * line is visible to every user of the machine in ps). --wait bounds how long to keep
 * trying to reach the database (Go duration, default 10s; 0 tries once).
 *
 * migrate applies the missing migrations (store_migrate: safe to run from many processes
 * at once) and prints "schema version N"; version prints the same line without changing
 * anything. Both exit 1 with the reason on stderr when the database cannot be reached or
 * refuses, and 2 on a usage error. The password in the URL is never printed.
 */
#include "cli/cli.h"
#include "common/duration.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DB_DEFAULT_WAIT_MS 10000

static void db_usage(FILE *out)
{
    fprintf(out, "usage: sluice db migrate [--database-url URL] [--wait DURATION]\n"
                 "       sluice db version [--database-url URL] [--wait DURATION]\n"
                 "\n"
                 "The URL may also come from $SLUICE_DATABASE_URL.\n");
}

struct db_args {
    const char *url;
    int64_t wait_ms;
};

/* Parses the options after the subcommand. Returns 0; 1 after printing the usage for
 * --help; or 2 after printing why the arguments are wrong. */
static int parse_args(struct db_args *a, int argc, char **argv)
{
    a->url = NULL;
    a->wait_ms = DB_DEFAULT_WAIT_MS;
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i], *value = NULL;
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            db_usage(stdout);
            return 1;
        }
        size_t n = strcspn(arg, "=");
        if (!strncmp(arg, "--database-url", n) && n == strlen("--database-url")) {
            value = arg[n] ? arg + n + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!value) {
                fprintf(stderr, "error: --database-url needs a value\n");
                return 2;
            }
            a->url = value;
        } else if (!strncmp(arg, "--wait", n) && n == strlen("--wait")) {
            value = arg[n] ? arg + n + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!value || sl_duration_parse(&a->wait_ms, value) < 0 || a->wait_ms > 3600000) {
                fprintf(stderr, "error: --wait needs a duration up to 1h, like 30s\n");
                return 2;
            }
        } else {
            fprintf(stderr, "error: unknown argument '%s'\n", arg);
            db_usage(stderr);
            return 2;
        }
    }
    if (!a->url) {
        const char *env = getenv("SLUICE_DATABASE_URL");
        if (env && *env)
            a->url = env;
    }
    if (!a->url) {
        fprintf(stderr, "error: no database: pass --database-url or set SLUICE_DATABASE_URL\n");
        return 2;
    }
    return 0;
}

static int db_connect(struct store **out, const struct db_args *a)
{
    struct store_options opts = STORE_OPTIONS_INIT;
    opts.reconnect_wait_ms = (int)a->wait_ms;
    opts.statement_timeout_ms = 0; /* migrations may build indexes for a long time */
    opts.application_name = "sluice db";
    struct strbuf err = STRBUF_INIT;
    int rc = store_open(out, a->url, &opts, &err);
    if (rc < 0)
        fprintf(stderr, "error: %s\n", err.buf);
    strbuf_release(&err);
    return rc;
}

/* sluice db migrate [--database-url URL] [--wait DURATION] */
static int db_migrate(const struct db_args *a)
{
    struct store *st;
    if (db_connect(&st, a) < 0)
        return 1;
    int version = 0, applied = 0;
    int rc = store_migrate(st, &version, &applied);
    if (rc < 0) {
        fprintf(stderr, "error: %s\n", store_errmsg(st));
    } else {
        printf("schema version %d", version);
        if (applied)
            printf(" (%d migration%s applied)\n", applied, applied == 1 ? "" : "s");
        else
            printf(" (up to date)\n");
    }
    store_close(st);
    return rc < 0 ? 1 : 0;
}

/* sluice db version [--database-url URL] [--wait DURATION] */
static int db_version(const struct db_args *a)
{
    struct store *st;
    if (db_connect(&st, a) < 0)
        return 1;
    int version = 0;
    int rc = store_schema_version(st, &version);
    if (rc < 0) {
        fprintf(stderr, "error: %s\n", store_errmsg(st));
    } else {
        printf("schema version %d\n", version);
        int latest = store_schema_latest();
        if (version < latest)
            fprintf(stderr, "note: this sluice knows versions up to %d; run 'sluice db migrate'\n",
                    latest);
        else if (version > latest)
            fprintf(stderr, "note: this sluice knows versions up to %d; upgrade sluice\n", latest);
    }
    store_close(st);
    return rc < 0 ? 1 : 0;
}

int cmd_db(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        db_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    struct db_args a;
    bool is_migrate = !strcmp(argv[1], "migrate"), is_version = !strcmp(argv[1], "version");
    if (!is_migrate && !is_version) {
        fprintf(stderr, "error: unknown db command '%s'\n", argv[1]);
        db_usage(stderr);
        return 2;
    }
    int rc = parse_args(&a, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    return is_migrate ? db_migrate(&a) : db_version(&a);
}
