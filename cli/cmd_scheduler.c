/*
 * cli/cmd_scheduler.c - sluice scheduler: the scheduler daemon in the foreground.
 *
 *   sluice scheduler [--config FILE] [--database-url URL] [--redis-url URL]
 *                    [--dags DIR] [--id NAME]
 *
 * Settings come from sluice.yaml and SLUICE_* variables (docs/configuration.md); the flags
 * win over both. SIGINT or SIGTERM stops it after its current batch (a second one exits
 * at once: nothing is lost either way, a new leader rebuilds from PostgreSQL). Exits 0
 * after a stop, 1 when it cannot start (no database, a schema newer than this binary),
 * 2 on a usage error.
 */
#include "cli/cli.h"
#include "common/config.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "scheduler/scheduler.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct scheduler *running;

static void on_signal(int sig)
{
    static volatile sig_atomic_t seen;
    if (seen++)
        _exit(128 + sig);
    if (running)
        scheduler_request_stop(running);
}

static void scheduler_usage(FILE *out)
{
    fprintf(out, "usage: sluice scheduler [--config FILE] [--database-url URL] [--redis-url URL]\n"
                 "                        [--dags DIR] [--id NAME]\n");
}

/* Reads "--name VALUE" or "--name=VALUE" at argv[*i]; returns the value or NULL. */
const char *cli_flag_value(int argc, char **argv, int *i, const char *name)
{
    const char *arg = argv[*i];
    if (!arg)
        return NULL;
    size_t n = strlen(name);
    if (strncmp(arg, name, n))
        return NULL;
    if (arg[n] == '=')
        return arg + n + 1;
    if (arg[n] == '\0' && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

int cmd_scheduler(int argc, char **argv)
{
    const char *config = NULL, *db = NULL, *redis = NULL, *dags = NULL, *id = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            scheduler_usage(stdout);
            return 0;
        } else if ((v = cli_flag_value(argc, argv, &i, "--config"))) {
            config = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--database-url"))) {
            db = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--redis-url"))) {
            redis = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--dags"))) {
            dags = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--id"))) {
            id = v;
        } else {
            fprintf(stderr, "error: unknown or incomplete argument '%s'\n", argv[i]);
            scheduler_usage(stderr);
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
    if (db)
        sl_config_set(&c.database_url, db);
    if (redis)
        sl_config_set(&c.redis_url, redis);
    if (dags)
        sl_config_set(&c.dags_dir, dags);
    if (id)
        sl_config_set(&c.scheduler.id, id);
    enum sl_log_level level;
    if (sl_log_parse_level(&level, c.log_level) == 0)
        sl_log_set_level(level);
    if (!c.database_url || !c.redis_url) {
        fprintf(stderr, "error: the scheduler needs database_url and redis_url "
                        "(or run `sluice standalone`)\n");
        sl_config_release(&c);
        return 2;
    }
    struct cli_git git;
    if (cli_git_options(&git, &c) != 0) {
        sl_config_release(&c);
        return 2;
    }
    struct scheduler_options o = {
        .database_url = c.database_url,
        .redis_url = c.redis_url,
        .id = c.scheduler.id,
        .dags_dir = c.dags_dir,
        .git = git.o,
        .dags_interval_ms = git.o.url ? c.git.interval_ms : c.dags_interval_ms,
        .batch_size = (size_t)c.scheduler.batch_size,
        .reconcile_interval_ms = c.scheduler.reconcile_interval_ms,
        .worker_timeout_ms = c.scheduler.worker_timeout_ms,
        .requeue_after_ms = c.scheduler.requeue_after_ms,
        .poll_interval_ms = c.scheduler.poll_interval_ms,
        .api_url = c.scheduler.api_url,
    };
    struct scheduler *s;
    int rc = scheduler_new(&s, &o);
    cli_git_options_release(&git);
    sl_config_release(&c);
    if (rc < 0)
        return 2;
    running = s;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = scheduler_run(s);
    running = NULL;
    scheduler_free(s);
    return rc < 0 ? 1 : 0;
}

int cli_git_options(struct cli_git *g, const struct sl_config *c)
{
    memset(g, 0, sizeof(*g));
    if (!c->git.url || !*c->git.url)
        return 0;
    struct strbuf err = STRBUF_INIT;
    const char *password = c->git.password;
    if (!password && c->git.password_file) {
        struct strbuf text = STRBUF_INIT;
        if (strbuf_read_file(&text, c->git.password_file, 64 * 1024) < 0) {
            fprintf(stderr, "error: cannot read git.password_file %s\n", c->git.password_file);
            strbuf_release(&text);
            return 2;
        }
        while (text.len && (text.buf[text.len - 1] == '\n' || text.buf[text.len - 1] == '\r'))
            text.buf[--text.len] = '\0';
        g->password = strbuf_detach(&text, NULL);
        password = g->password;
    }
    char cwd[PATH_MAX];
    if (c->data_dir[0] == '/' || !getcwd(cwd, sizeof(cwd)))
        g->dir = xasprintf("%s/git", c->data_dir);
    else
        g->dir = xasprintf("%s/%s/git", cwd, c->data_dir);
    g->o = (struct gitsync_options){
        .url = c->git.url,
        .ref = c->git.ref,
        .path = c->git.path,
        .dir = g->dir,
        .username = c->git.username,
        .password = password,
        .ssh_key_file = c->git.ssh_key_file,
        .known_hosts_file = c->git.known_hosts_file,
        .ca_file = c->git.ca_file,
        .timeout_ms = c->git.timeout_ms,
    };
    if (gitsync_check_options(&g->o, &err) < 0) {
        fprintf(stderr, "error: configuration: %s\n", err.buf);
        strbuf_release(&err);
        cli_git_options_release(g);
        return 2;
    }
    strbuf_release(&err);
    return 0;
}

void cli_git_options_release(struct cli_git *g)
{
    free(g->dir);
    if (g->password)
        memset(g->password, 0, strlen(g->password));
    free(g->password);
    memset(g, 0, sizeof(*g));
}
