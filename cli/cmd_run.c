/*
 * cli/cmd_run.c - one machine, one command: sluice standalone and sluice dag test.
 *
 *   sluice standalone [--config FILE] [--dags DIR]
 *   sluice dag test FILE [-p NAME=VALUE ...] [--config FILE] [--verbose]
 *
 * Both run the whole system in one process tree: the servers (PostgreSQL and Redis from
 * the system's binaries under data_dir, when database_url and redis_url are not
 * configured), the scheduler in a thread and a worker in a thread. standalone runs until
 * SIGINT or SIGTERM, then stops the worker (its running steps get the stop grace), the
 * scheduler, and last the servers. dag test records FILE as a DAG version, starts one
 * manual run of it, prints each step's transitions as they happen and then the step
 * table, and exits 0 only if the run succeeded (1 if it did not, 2 for bad arguments or
 * an invalid DAG). docs/standalone.md describes both.
 */
#include "cli/cli.h"
#include "cli/embed.h"
#include "common/config.h"
#include "common/error.h"
#include "common/gitauth.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "dsl/dsl.h"
#include "scheduler/engine.h"
#include "scheduler/scheduler.h"
#include "store/store.h"
#include "worker/artifacts.h"
#include "worker/kube.h"
#include "worker/worker.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    if (interrupted++)
        _exit(128 + sig);
}

static void install_signals(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- the stack: servers, scheduler, worker ------------------------------------------- */

struct stack {
    struct sl_config *c;
    struct embed *embed;
    const char *db_url, *redis_url;
    struct scheduler *sched;
    pthread_t sched_thread;
    bool sched_running;
    struct worker *worker;
    int *gpus;
    size_t n_gpus;
    struct artifacts_repo *artifacts; /* artifacts.*; closed after the worker */
};

static void *sched_main(void *arg)
{
    scheduler_run(arg);
    return NULL;
}

static char *absolute(const char *path)
{
    if (path[0] == '/')
        return xstrdup(path);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd)))
        return xstrdup(path);
    return xasprintf("%s/%s", cwd, path);
}

static void stack_stop(struct stack *k)
{
    if (k->worker) {
        worker_stop(k->worker);
        worker_join(k->worker);
        k->worker = NULL;
    }
    artifacts_close(k->artifacts);
    k->artifacts = NULL;
    if (k->sched_running) {
        scheduler_request_stop(k->sched);
        pthread_join(k->sched_thread, NULL);
        k->sched_running = false;
    }
    scheduler_free(k->sched);
    k->sched = NULL;
    if (k->embed) {
        embed_stop(k->embed);
        k->embed = NULL;
    }
    free(k->gpus);
    k->gpus = NULL;
}

/* Starts the servers if none are configured, then the scheduler and the worker.
 * dags_dir roots {{ dag.dir }}; sync says whether the scheduler reads it. */
static int stack_start(struct stack *k, struct sl_config *c, const char *dags_dir, bool sync)
{
    memset(k, 0, sizeof(*k));
    k->c = c;
    k->db_url = c->database_url;
    k->redis_url = c->redis_url;
    if (!k->db_url || !k->redis_url) {
        struct embed_options eo = {.data_dir = c->data_dir};
        struct strbuf err = STRBUF_INIT;
        fprintf(stderr, "starting PostgreSQL and Redis under %s ...\n", c->data_dir);
        if (embed_start(&k->embed, &eo, &err) < 0) {
            fprintf(stderr, "error: cannot start the embedded servers: %s\n", err.buf);
            strbuf_release(&err);
            return SL_EIO;
        }
        strbuf_release(&err);
        if (!k->db_url)
            k->db_url = embed_database_url(k->embed);
        if (!k->redis_url)
            k->redis_url = embed_redis_url(k->embed);
    }
    struct cli_git git = {0};
    if (sync && cli_git_options(&git, c) != 0) {
        stack_stop(k);
        return SL_EINVAL;
    }
    struct scheduler_options so = {
        .database_url = k->db_url,
        .redis_url = k->redis_url,
        .id = c->scheduler.id,
        .dags_dir = dags_dir,
        .git = git.o,
        .no_sync = !sync,
        .dags_interval_ms = git.o.url ? c->git.interval_ms : c->dags_interval_ms,
        .batch_size = (size_t)c->scheduler.batch_size,
        .reconcile_interval_ms = c->scheduler.reconcile_interval_ms,
        .worker_timeout_ms = c->scheduler.worker_timeout_ms,
        .requeue_after_ms = c->scheduler.requeue_after_ms,
        .poll_interval_ms = c->scheduler.poll_interval_ms,
        .api_url = c->scheduler.api_url,
    };
    int made = scheduler_new(&k->sched, &so);
    cli_git_options_release(&git);
    if (made < 0 || pthread_create(&k->sched_thread, NULL, sched_main, k->sched) != 0) {
        stack_stop(k);
        return SL_EINVAL;
    }
    k->sched_running = true;
    enum worker_executor ex = WORKER_EXEC_LOCAL;
    if (worker_executor_parse(&ex, c->worker.executor) < 0 ||
        worker_parse_gpus(&k->gpus, &k->n_gpus, c->worker.gpus) < 0) {
        fprintf(stderr, "error: worker.executor or worker.gpus is not valid\n");
        stack_stop(k);
        return SL_EINVAL;
    }
    struct worker_options wo = {
        .redis_url = k->redis_url,
        .queue = c->worker.queue,
        .id = c->worker.id,
        .slots = (size_t)c->worker.slots,
        .executor = ex,
        .gpus = k->gpus,
        .n_gpus = k->n_gpus,
        .log_root = c->log_root,
        .work_root = c->work_root,
        .secrets_dir = c->secrets_dir,
        .kill_grace_ms = c->worker.kill_grace_ms,
        .visibility_timeout_ms = c->worker.visibility_timeout_ms,
        .heartbeat_interval_ms = c->worker.heartbeat_interval_ms,
        .stop_grace_ms = c->worker.stop_grace_ms,
        .retention_ms = c->worker.retention_ms,
    };
    struct strbuf aerr = STRBUF_INIT;
    if (artifacts_open(&k->artifacts, c, &aerr) < 0) {
        fprintf(stderr, "error: configuration:\n%s", aerr.buf);
        strbuf_release(&aerr);
        k->artifacts = NULL;
        stack_stop(k);
        return SL_EINVAL;
    }
    strbuf_release(&aerr);
    wo.artifacts = k->artifacts;
    struct kube_options ko;
    if (ex == WORKER_EXEC_KUBERNETES) {
        if (cli_kube_options(&ko, c) != 0) {
            stack_stop(k);
            return SL_EINVAL;
        }
        wo.kube = &ko;
    }
    if (worker_start(&k->worker, &wo) < 0) {
        fprintf(stderr, "error: the worker cannot start\n");
        k->worker = NULL;
        stack_stop(k);
        return SL_EINVAL;
    }
    return 0;
}

static int load_config(struct sl_config *c, const char *path)
{
    struct strbuf err = STRBUF_INIT;
    int rc = sl_config_load(c, path, &err);
    if (rc < 0)
        fprintf(stderr, "error: configuration:\n%s", err.buf);
    strbuf_release(&err);
    enum sl_log_level level;
    if (rc == 0 && sl_log_parse_level(&level, c->log_level) == 0)
        sl_log_set_level(level);
    return rc;
}

/* --- sluice standalone ------------------------------------------------------------- */

int cmd_standalone(int argc, char **argv)
{
    const char *config = NULL, *dags = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: sluice standalone [--config FILE] [--dags DIR]\n");
            return 0;
        } else if ((v = cli_flag_value(argc, argv, &i, "--config"))) {
            config = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "--dags"))) {
            dags = v;
        } else {
            fprintf(stderr, "error: unknown or incomplete argument '%s'\n", argv[i]);
            return 2;
        }
    }
    struct sl_config c;
    if (load_config(&c, config) < 0) {
        sl_config_release(&c);
        return 2;
    }
    if (dags)
        sl_config_set(&c.dags_dir, dags);
    install_signals();
    struct stack k;
    char *root = absolute(c.dags_dir);
    int rc = stack_start(&k, &c, root, true);
    free(root);
    if (rc < 0) {
        sl_config_release(&c);
        return 1;
    }
    /* the REST API, in a thread of its own (prints an admin token on the first start) */
    struct cli_api *api = NULL;
    if (cli_api_start(&api, &c, k.db_url, k.redis_url, k.artifacts) < 0) {
        stack_stop(&k);
        sl_config_release(&c);
        return 1;
    }
    fprintf(stderr, "  API:      http://%s/api/v1 (port %d)\n", c.api.listen, cli_api_port(api));
    char *source = c.git.url ? gitauth_redact_url(c.git.url) : xstrdup(c.dags_dir);
    fprintf(stderr,
            "sluice standalone is running: DAGs from %s, step logs in %s\n"
            "  database: %s\n  redis:    %s\n"
            "Press Ctrl-C to stop.\n",
            source, c.log_root, k.embed ? "embedded" : "configured",
            k.embed ? "embedded" : "configured");
    free(source);
    int status = 0;
    while (!interrupted) {
        nap_ms(500);
        struct strbuf why = STRBUF_INIT;
        if (k.embed && embed_check(k.embed, &why) < 0) {
            fprintf(stderr, "error: an embedded server stopped: %s\n", why.buf);
            strbuf_release(&why);
            status = 1;
            break;
        }
        strbuf_release(&why);
    }
    fprintf(stderr, "stopping ...\n");
    cli_api_stop(api);
    stack_stop(&k);
    sl_config_release(&c);
    return status;
}

/* --- sluice dag test ---------------------------------------------------------------- */

/* Converts -p name=value to JSON by the parameter's declared type. */
static int add_param(cJSON *params, const struct dsl_dag *dag, const char *arg,
                     struct strbuf *errors)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        strbuf_addf(errors, "-p %s: expected NAME=VALUE\n", arg);
        return SL_EINVAL;
    }
    char *name = xstrndup(arg, (size_t)(eq - arg));
    const char *text = eq + 1;
    const struct dsl_param *p = NULL;
    for (size_t i = 0; i < dag->n_params; i++)
        if (!strcmp(dag->params[i].name, name))
            p = &dag->params[i];
    cJSON *v = NULL;
    if (p && p->type != DSL_PARAM_STRING)
        v = cJSON_Parse(text);
    if (!v)
        v = cJSON_CreateString(text);
    cJSON_DeleteItemFromObjectCaseSensitive(params, name);
    cJSON_AddItemToObject(params, name, v);
    free(name);
    return 0;
}

static const char *store_step_name(const struct store_step_instance *s, char *buf, size_t len)
{
    if (s->map_index < 0)
        return s->step;
    snprintf(buf, len, "%s[%d]", s->step, s->map_index);
    return buf;
}

/* The position of a step in the DAG file (main steps, then on_exit), for ordering. */
static size_t step_order(const struct dsl_dag *dag, const char *step)
{
    for (size_t i = 0; i < dag->n_steps; i++)
        if (!strcmp(dag->steps[i].name, step))
            return i;
    for (size_t i = 0; i < dag->n_on_exit; i++)
        if (!strcmp(dag->on_exit[i].name, step))
            return dag->n_steps + i;
    return SIZE_MAX;
}

static const struct dsl_dag *sort_dag;

static int by_dag_order(const void *a, const void *b)
{
    const struct store_step_instance *x = a, *y = b;
    size_t ox = step_order(sort_dag, x->step), oy = step_order(sort_dag, y->step);
    if (ox != oy)
        return ox < oy ? -1 : 1;
    return (x->map_index > y->map_index) - (x->map_index < y->map_index);
}

static void print_table(const struct sl_config *c, const struct dsl_dag *dag,
                        const struct store_run *run, struct store_step_instance *rows, size_t n)
{
    sort_dag = dag;
    qsort(rows, n, sizeof(*rows), by_dag_order);
    printf("\n%-20s %-16s %8s %9s  %-28s %s\n", "STEP", "STATE", "ATTEMPTS", "DURATION", "LOG",
           "OUTPUTS / REASON");
    for (size_t i = 0; i < n; i++) {
        const struct store_step_instance *s = &rows[i];
        char name[300], dur[32] = "-", log[300] = "-";
        if (s->started_at_ms != STORE_NO_TIME && s->ended_at_ms != STORE_NO_TIME)
            snprintf(dur, sizeof(dur), "%.2fs",
                     (double)(s->ended_at_ms - s->started_at_ms) / 1000.0);
        if (s->attempt > 0 && s->started_at_ms != STORE_NO_TIME) {
            if (s->map_index >= 0)
                snprintf(log, sizeof(log), "%s/%d.%d.log", s->step, s->map_index, s->attempt);
            else
                snprintf(log, sizeof(log), "%s/%d.log", s->step, s->attempt);
        }
        const char *detail = s->output_params_json && strcmp(s->output_params_json, "{}")
                                 ? s->output_params_json
                                 : (s->reason ? s->reason : "");
        printf("%-20s %-16s %8d %9s  %-28s %s\n", store_step_name(s, name, sizeof(name)),
               store_step_state_name(s->state), s->attempt, dur, log, detail);
    }
    printf("\nlogs under %s/%s/%s/\n", c->log_root, run->dag_id, run->run_id);
}

static int dag_test_usage(FILE *out)
{
    fprintf(out, "usage: sluice dag test FILE [-p NAME=VALUE ...] [--config FILE] [--verbose]\n");
    return 2;
}

int cmd_dag_test(int argc, char **argv)
{
    const char *config = NULL, *file = NULL;
    bool verbose = false;
    const char **pv = xcalloc((size_t)argc + 1, sizeof(*pv));
    size_t n_pv = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            free(pv);
            dag_test_usage(stdout);
            return 0;
        } else if ((v = cli_flag_value(argc, argv, &i, "--config"))) {
            config = v;
        } else if ((v = cli_flag_value(argc, argv, &i, "-p")) ||
                   (v = cli_flag_value(argc, argv, &i, "--param"))) {
            pv[n_pv++] = v;
        } else if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) {
            verbose = true;
        } else if (argv[i][0] != '-' && !file) {
            file = argv[i];
        } else {
            fprintf(stderr, "error: unknown or incomplete argument '%s'\n", argv[i]);
            free(pv);
            return dag_test_usage(stderr);
        }
    }
    if (!file) {
        free(pv);
        return dag_test_usage(stderr);
    }
    struct dsl_diags diags;
    dsl_diags_init(&diags);
    struct dsl_dag *dag = NULL;
    if (dsl_parse_file(&dag, file, NULL, &diags) < 0) {
        dsl_diags_print(&diags, stderr);
        dsl_diags_release(&diags);
        free(pv);
        return 2;
    }
    dsl_diags_release(&diags);
    cJSON *params = cJSON_CreateObject();
    struct strbuf errors = STRBUF_INIT;
    for (size_t i = 0; i < n_pv; i++)
        add_param(params, dag, pv[i], &errors);
    free(pv);
    if (!errors.len)
        engine_check_params(dag, params, &errors);
    if (errors.len) {
        fprintf(stderr, "error: invalid params for DAG %s:\n%s", dag->name, errors.buf);
        if (errors.buf[errors.len - 1] != '\n')
            fputc('\n', stderr);
        strbuf_release(&errors);
        cJSON_Delete(params);
        dsl_dag_free(dag);
        return 2;
    }
    strbuf_release(&errors);

    struct sl_config c;
    if (load_config(&c, config) < 0) {
        sl_config_release(&c);
        cJSON_Delete(params);
        dsl_dag_free(dag);
        return 2;
    }
    if (!verbose) /* the progress lines say it all; --verbose adds the daemons' logs */
        sl_log_set_level(SL_LOG_WARN);
    install_signals();

    /* the DAG's directory roots {{ dag.dir }}; the file is its only DAG here */
    char *abs = absolute(file);
    char *slash = strrchr(abs, '/');
    *slash = '\0';
    const char *base = slash + 1;
    struct stack k;
    int rc = stack_start(&k, &c, abs, false);
    int status = 1;
    struct store *st = NULL;
    struct arena mem = ARENA_INIT;
    if (rc < 0)
        goto out;
    struct strbuf err = STRBUF_INIT;
    if (store_open(&st, k.db_url, NULL, &err) < 0 || store_migrate(st, NULL, NULL) < 0) {
        fprintf(stderr, "error: database: %s%s\n", err.buf, st ? store_errmsg(st) : "");
        strbuf_release(&err);
        goto out;
    }
    strbuf_release(&err);
    struct strbuf model = STRBUF_INIT, source = STRBUF_INIT;
    dsl_dag_to_json(&model, dag, false);
    FILE *fp = fopen(file, "rb");
    char chunk[4096];
    size_t got;
    while (fp && (got = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        strbuf_add(&source, chunk, got);
    if (fp)
        fclose(fp);
    struct store_dag_put put = {
        .dag_id = dag->name, .file_path = base, .model_json = model.buf, .source = source.buf};
    int64_t version = 0;
    bool changed = false;
    rc = store_dag_put_version(st, &version, &changed, &put);
    strbuf_release(&model);
    strbuf_release(&source);
    if (rc < 0) {
        fprintf(stderr, "error: cannot record the DAG: %s\n", store_errmsg(st));
        goto out;
    }
    char *pjson = cJSON_PrintUnformatted(params);
    struct store_run_new rn = {.dag_id = dag->name,
                               .trigger = STORE_TRIGGER_MANUAL,
                               .params_json = pjson,
                               .version_id = version};
    struct store_run run;
    bool existed;
    rc = store_run_create(st, &run, &existed, &rn, &mem);
    free(pjson);
    if (rc < 0) {
        fprintf(stderr, "error: cannot create the run: %s\n", store_errmsg(st));
        goto out;
    }
    printf("dag %s, run %s\n", run.dag_id, run.run_id);
    fflush(stdout);

    /* follow the run: one line per step transition */
    struct seen_state {
        char *step;
        int map_index;
        char *key;
    } *seen = NULL;
    size_t n_seen = 0, alloc_seen = 0;
    int64_t started = sl_wall_ms();
    struct store_step_instance *rows = NULL;
    size_t n = 0;
    for (;;) {
        struct arena tick = ARENA_INIT;
        struct store_run now;
        if (store_run_get_by_pk(st, &now, run.id, &tick) == 0 &&
            store_steps_of_run(st, &rows, &n, run.id, 0, &tick) == 0) {
            for (size_t i = 0; i < n; i++) {
                char key[64], name[300];
                snprintf(key, sizeof(key), "%s#%d", store_step_state_name(rows[i].state),
                         rows[i].attempt);
                if (rows[i].state == STORE_STEP_PENDING)
                    continue;
                struct seen_state *ss = NULL;
                for (size_t k2 = 0; k2 < n_seen && !ss; k2++)
                    if (seen[k2].map_index == rows[i].map_index &&
                        !strcmp(seen[k2].step, rows[i].step))
                        ss = &seen[k2];
                if (!ss) {
                    XGROW(seen, alloc_seen, n_seen + 1);
                    ss = &seen[n_seen++];
                    ss->step = xstrdup(rows[i].step);
                    ss->map_index = rows[i].map_index;
                    ss->key = NULL;
                }
                if (ss->key && !strcmp(ss->key, key))
                    continue;
                free(ss->key);
                ss->key = xstrdup(key);
                printf("  %7.2fs  %-24s %s%s%s\n", (double)(sl_wall_ms() - started) / 1000.0,
                       store_step_name(&rows[i], name, sizeof(name)),
                       store_step_state_name(rows[i].state), rows[i].reason ? ": " : "",
                       rows[i].reason ? rows[i].reason : "");
                fflush(stdout);
            }
            if (now.state == STORE_RUN_SUCCEEDED || now.state == STORE_RUN_FAILED ||
                now.state == STORE_RUN_CANCELLED) {
                print_table(&c, dag, &run, rows, n);
                printf("\nrun %s %s in %.1fs\n", run.run_id, store_run_state_name(now.state),
                       (double)(sl_wall_ms() - started) / 1000.0);
                status = now.state == STORE_RUN_SUCCEEDED ? 0 : 1;
                arena_release(&tick);
                break;
            }
        }
        arena_release(&tick);
        if (interrupted == 1) {
            fprintf(stderr, "interrupted: cancelling the run\n");
            store_run_request_cancel(st, NULL, run.dag_id, run.run_id);
            interrupted = 2;
        }
        nap_ms(100);
    }
    for (size_t i = 0; i < n_seen; i++) {
        free(seen[i].step);
        free(seen[i].key);
    }
    free(seen);
out:
    store_close(st);
    arena_release(&mem);
    stack_stop(&k);
    free(abs);
    sl_config_release(&c);
    cJSON_Delete(params);
    dsl_dag_free(dag);
    return status;
}
