/*
 * cli/cmd_worker.c - sluice worker: the worker daemon in the foreground.
 *
 *   sluice worker [--config FILE] [--queue Q] [--slots N] [--executor local|noop|kubernetes]
 *                 [--redis-url URL] [--log-root DIR] [--work-root DIR] [--secrets-dir DIR]
 *                 [--gpus 0,1] [--id ID] [--visibility-timeout D] [--stop-grace D]
 *                 [--kill-grace D] [--heartbeat-interval D] [--retention D]
 *
 * Settings come from sluice.yaml and SLUICE_* variables (docs/configuration.md: worker.*,
 * redis_url, log_root, work_root, secrets_dir, so SLUICE_REDIS_URL, SLUICE_WORKER_QUEUE,
 * SLUICE_WORKER_SLOTS, SLUICE_LOG_ROOT, SLUICE_WORK_ROOT, ...); the flags win over both.
 * D is a duration such as 30s. With --executor noop and no slot count given by a flag or
 * SLUICE_WORKER_SLOTS (or a worker.slots other than the default 4), the worker takes 1000
 * slots: noop steps cost nothing.
 *
 * SIGINT or SIGTERM stops the worker gracefully: no new steps, running steps get the stop
 * grace period (worker.stop_grace) to finish, then are handed back to the queue. A second
 * signal hands them back at once. Exits 0 after a stop, 1 when it cannot start (Redis
 * unreachable, a directory it cannot create), 2 on a usage error.
 *
 * Signals are blocked in every thread (the worker's threads inherit the mask) and taken
 * with sigtimedwait() here, so nothing runs in a signal handler. Steps do not inherit
 * the mask: libuv resets it in the child before exec.
 */
#include "cli/cli.h"
#include "common/config.h"
#include "common/duration.h"
#include "common/error.h"
#include "common/log.h"
#include "worker/artifacts.h"
#include "worker/kube.h"
#include "worker/worker.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void worker_usage(FILE *out)
{
    fprintf(out,
            "usage: sluice worker [--config FILE] [--queue Q] [--slots N] "
            "[--executor local|noop|kubernetes]\n"
            "                     [--redis-url URL] [--log-root DIR] [--work-root DIR]\n"
            "                     [--secrets-dir DIR] [--gpus 0,1] [--id ID]\n"
            "                     [--visibility-timeout D] [--stop-grace D] [--kill-grace D]\n"
            "                     [--heartbeat-interval D] [--retention D]\n"
            "\n"
            "Settings also come from sluice.yaml and SLUICE_* variables (SLUICE_REDIS_URL,\n"
            "SLUICE_WORKER_QUEUE, SLUICE_WORKER_SLOTS, SLUICE_LOG_ROOT, SLUICE_WORK_ROOT, ...);\n"
            "flags win. D is a duration like 30s.\n");
}

/* The flags, as given (NULL: not given). */
struct worker_flags {
    const char *config, *queue, *slots, *executor, *redis_url, *log_root, *work_root, *secrets_dir,
        *gpus, *id, *visibility, *stop_grace, *kill_grace, *heartbeat, *retention;
};

/* Returns 0, 1 after --help, or 2 after printing what is wrong. */
static int parse_flags(struct worker_flags *f, int argc, char **argv)
{
    static const struct {
        const char *name;
        size_t offset;
    } table[] = {
#define FLAG(name, field) {name, offsetof(struct worker_flags, field)}
        FLAG("--config", config),
        FLAG("--queue", queue),
        FLAG("--slots", slots),
        FLAG("--executor", executor),
        FLAG("--redis-url", redis_url),
        FLAG("--log-root", log_root),
        FLAG("--work-root", work_root),
        FLAG("--secrets-dir", secrets_dir),
        FLAG("--gpus", gpus),
        FLAG("--id", id),
        FLAG("--visibility-timeout", visibility),
        FLAG("--stop-grace", stop_grace),
        FLAG("--kill-grace", kill_grace),
        FLAG("--heartbeat-interval", heartbeat),
        FLAG("--retention", retention),
#undef FLAG
    };
    memset(f, 0, sizeof(*f));
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            worker_usage(stdout);
            return 1;
        }
        size_t k = 0;
        const char *v = NULL;
        for (; k < sizeof(table) / sizeof(table[0]); k++) {
            size_t n = strlen(table[k].name);
            if (!strncmp(argv[i], table[k].name, n) && (argv[i][n] == '\0' || argv[i][n] == '='))
                break;
        }
        if (k == sizeof(table) / sizeof(table[0]) ||
            !(v = cli_flag_value(argc, argv, &i, table[k].name))) {
            fprintf(stderr, "error: unknown or incomplete argument '%s'\n", argv[i]);
            worker_usage(stderr);
            return 2;
        }
        *(const char **)(void *)((char *)f + table[k].offset) = v;
    }
    return 0;
}

/* Applies a duration flag. Returns 0 or 2 (printed). */
static int duration_flag(int64_t *out, const char *name, const char *v)
{
    if (!v)
        return 0;
    int64_t ms;
    if (sl_duration_parse(&ms, v) < 0 || ms <= 0) {
        fprintf(stderr, "error: %s needs a duration above zero, like 30s, not '%s'\n", name, v);
        return 2;
    }
    *out = ms;
    return 0;
}

int cli_kube_options(struct kube_options *ko, const struct sl_config *c)
{
    memset(ko, 0, sizeof(*ko));
    ko->kubeconfig = c->kubernetes.kubeconfig;
    ko->context = c->kubernetes.context;
    ko->namespace_ = c->kubernetes.namespace_;
    ko->qps = (double)c->kubernetes.qps;
    ko->burst = (int)c->kubernetes.burst;
    ko->default_image = c->kubernetes.default_image;
    ko->image_pull_policy = c->kubernetes.image_pull_policy;
    ko->service_account = c->kubernetes.service_account;
    ko->image_pull_secrets = c->kubernetes.image_pull_secrets;
    ko->gpu_resource = c->kubernetes.gpu_resource;
    ko->node_selector = c->kubernetes.node_selector;
    ko->tolerations = c->kubernetes.tolerations;
    ko->run_as_non_root = c->kubernetes.run_as_non_root;
    ko->run_as_user = c->kubernetes.run_as_user;
    ko->sluice_image = c->kubernetes.sluice_image;
    ko->sluice_path = c->kubernetes.sluice_path;
    ko->work_claim = c->kubernetes.work_claim;
    ko->work_mount = c->kubernetes.work_mount;
    ko->dags_claim = c->kubernetes.dags_claim;
    ko->dags_mount = c->kubernetes.dags_mount;
    ko->pending_timeout_ms = c->kubernetes.pending_timeout_ms;
    ko->image_pull_grace_ms = c->kubernetes.image_pull_grace_ms;
    ko->keep_failed_ms = c->kubernetes.keep_failed_ms;
    ko->delete_grace_ms = c->kubernetes.delete_grace_ms;
    /* the artifact repository, as the pods' staging gets it (docs/kubernetes.md) */
    ko->artifacts_repository = c->artifacts.repository;
    ko->artifacts_prefix = c->artifacts.prefix;
    ko->artifacts_root = c->artifacts.root;
    ko->artifacts_endpoint = c->artifacts.endpoint;
    ko->artifacts_region = c->artifacts.region;
    ko->artifacts_bucket = c->artifacts.bucket;
    ko->artifacts_compression = c->artifacts.compression;
    ko->artifacts_path_style = c->artifacts.path_style;
    ko->artifacts_part_size_mb = c->artifacts.part_size_mb;
    ko->artifacts_multipart_threshold_mb = c->artifacts.multipart_threshold_mb;
    ko->artifacts_parallel_parts = c->artifacts.parallel_parts;
    ko->artifacts_credentials = c->kubernetes.artifacts_credentials;
    ko->artifacts_claim = c->kubernetes.artifacts_claim;
    ko->artifacts_credentials_keys = c->kubernetes.artifacts_credentials_keys;
    ko->git_username = c->git.username;
    ko->git_credentials = c->kubernetes.git_credentials;
    ko->git_credentials_keys = c->kubernetes.git_credentials_keys;
    const char *h = c->kubernetes.helper ? c->kubernetes.helper : "init";
    if (!strcmp(h, "init")) {
        ko->helper = KUBE_HELPER_INIT;
    } else if (!strcmp(h, "image")) {
        ko->helper = KUBE_HELPER_IMAGE;
    } else if (!strcmp(h, "none")) {
        ko->helper = KUBE_HELPER_NONE;
    } else {
        fprintf(stderr, "error: kubernetes.helper must be init, image or none, not '%s'\n", h);
        return 2;
    }
    if (c->kubernetes.qps < 1 || c->kubernetes.burst < 1) {
        fprintf(stderr, "error: kubernetes.qps and kubernetes.burst must be at least 1\n");
        return 2;
    }
    return 0;
}

/* Waits for SIGINT/SIGTERM (blocked) while the worker runs; stops it on each. */
static void serve(struct worker *w, const sigset_t *set)
{
    while (worker_wait(w, 0) == SL_ETIMEDOUT) {
        struct timespec ts = {0, 250 * 1000000};
        int sig = sigtimedwait(set, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            sl_info("worker", "%s received: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
            worker_stop(w);
        }
    }
}

int cmd_worker(int argc, char **argv)
{
    struct worker_flags f;
    int rc = parse_flags(&f, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;

    struct sl_config c;
    struct strbuf err = STRBUF_INIT;
    if (sl_config_load(&c, f.config, &err) < 0) {
        fprintf(stderr, "error: configuration:\n%s", err.buf);
        strbuf_release(&err);
        sl_config_release(&c);
        return 2;
    }
    strbuf_release(&err);
    const char *const *str_flags[] = {&f.redis_url, &f.log_root, &f.work_root, &f.secrets_dir,
                                      &f.queue,     &f.id,       &f.executor,  &f.gpus};
    char **str_fields[] = {&c.redis_url,    &c.log_root,  &c.work_root,       &c.secrets_dir,
                           &c.worker.queue, &c.worker.id, &c.worker.executor, &c.worker.gpus};
    for (size_t i = 0; i < sizeof(str_flags) / sizeof(str_flags[0]); i++)
        if (*str_flags[i])
            sl_config_set(str_fields[i], *str_flags[i]);
    enum sl_log_level level;
    if (sl_log_parse_level(&level, c.log_level) == 0)
        sl_log_set_level(level);

    struct worker_options o = {0};
    int *gpus = NULL;
    size_t n_gpus = 0;
    rc = 0;
    if (!c.redis_url) {
        fprintf(stderr, "error: no Redis: pass --redis-url or set SLUICE_REDIS_URL\n");
        rc = 2;
    } else if (worker_executor_parse(&o.executor, c.worker.executor) < 0) {
        fprintf(stderr, "error: the executor must be 'local', 'noop' or 'kubernetes', not '%s'\n",
                c.worker.executor);
        rc = 2;
    } else if (worker_parse_gpus(&gpus, &n_gpus, c.worker.gpus) < 0) {
        fprintf(stderr, "error: --gpus wants distinct device ids like 0,1 - not '%s'\n",
                c.worker.gpus);
        rc = 2;
    }
    int64_t slots = c.worker.slots;
    if (rc == 0 && f.slots) {
        char *end;
        errno = 0;
        long long v = strtoll(f.slots, &end, 10);
        if (!*f.slots || *end || errno || v < 1 || v > WORKER_MAX_SLOTS) {
            fprintf(stderr, "error: --slots must be a number from 1 to %d\n", WORKER_MAX_SLOTS);
            rc = 2;
        }
        slots = v;
    } else if (rc == 0 && o.executor == WORKER_EXEC_NOOP && !getenv("SLUICE_WORKER_SLOTS") &&
               slots == WORKER_DEFAULT_SLOTS) {
        slots = 0; /* the noop executor's own default */
    }
    if (rc == 0 && (slots < 0 || slots > WORKER_MAX_SLOTS || (slots == 0 && f.slots))) {
        fprintf(stderr, "error: worker.slots must be from 1 to %d\n", WORKER_MAX_SLOTS);
        rc = 2;
    }
    o.visibility_timeout_ms = c.worker.visibility_timeout_ms;
    o.stop_grace_ms = c.worker.stop_grace_ms;
    o.kill_grace_ms = c.worker.kill_grace_ms;
    o.heartbeat_interval_ms = c.worker.heartbeat_interval_ms;
    o.retention_ms = c.worker.retention_ms;
    if (rc == 0)
        rc = duration_flag(&o.visibility_timeout_ms, "--visibility-timeout", f.visibility);
    if (rc == 0)
        rc = duration_flag(&o.stop_grace_ms, "--stop-grace", f.stop_grace);
    if (rc == 0)
        rc = duration_flag(&o.kill_grace_ms, "--kill-grace", f.kill_grace);
    if (rc == 0)
        rc = duration_flag(&o.heartbeat_interval_ms, "--heartbeat-interval", f.heartbeat);
    if (rc == 0)
        rc = duration_flag(&o.retention_ms, "--retention", f.retention);
    /* the artifact repository (artifacts.*), open for the worker's whole life */
    struct artifacts_repo *artifacts = NULL;
    if (rc == 0) {
        struct strbuf aerr = STRBUF_INIT;
        if (artifacts_open(&artifacts, &c, &aerr) < 0) {
            fprintf(stderr, "error: configuration:\n%s", aerr.buf);
            rc = 2;
        }
        strbuf_release(&aerr);
        o.artifacts = artifacts;
    }
    if (rc) {
        free(gpus);
        sl_config_release(&c);
        return rc;
    }
    o.redis_url = c.redis_url;
    o.queue = c.worker.queue;
    o.id = c.worker.id;
    o.slots = (size_t)slots;
    o.gpus = gpus;
    o.n_gpus = n_gpus;
    o.log_root = c.log_root;
    o.work_root = c.work_root;
    o.secrets_dir = c.secrets_dir;
    struct kube_options ko;
    if (o.executor == WORKER_EXEC_KUBERNETES) {
        rc = cli_kube_options(&ko, &c);
        if (rc) {
            artifacts_close(artifacts);
            free(gpus);
            sl_config_release(&c);
            return rc;
        }
        o.kube = &ko;
    }

    /* Blocked before the worker's threads exist, so they inherit the mask and the signals
     * wait for sigtimedwait() in this thread. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    struct worker *w = NULL;
    rc = worker_start(&w, &o);
    free(gpus);
    sl_config_release(&c);
    if (rc < 0) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        artifacts_close(artifacts);
        fprintf(stderr, "error: the worker cannot start: %s\n", sl_strerror(rc));
        return rc == SL_EINVAL ? 2 : 1;
    }
    serve(w, &set);
    rc = worker_join(w);
    artifacts_close(artifacts);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc < 0 ? 1 : 0;
}
