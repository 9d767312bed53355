/*
 * common/config.c - sluice.yaml and SLUICE_* variables into struct sl_config.
 *
 * The file is read with libyaml's event API into flat "section.key" = scalar pairs;
 * every pair and every SLUICE_* variable that names a key is then converted through
 * one table, so the file and the environment accept exactly the same keys and values.
 */
#include "common/config.h"

#include "common/duration.h"
#include "common/error.h"
#include "common/xalloc.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

enum kind { K_STR, K_INT, K_DURATION, K_BOOL };

struct key {
    const char *path;
    enum kind kind;
    size_t offset;
    const char *def; /* default, as text; NULL: none */
};

#define KEY(path, kind, field, def)                                                                \
    {                                                                                              \
        path, kind, offsetof(struct sl_config, field), def                                         \
    }

static const struct key keys[] = {
    KEY("database_url", K_STR, database_url, NULL),
    KEY("redis_url", K_STR, redis_url, NULL),
    KEY("data_dir", K_STR, data_dir, ".sluice"),
    KEY("log_root", K_STR, log_root, NULL),
    KEY("work_root", K_STR, work_root, NULL),
    KEY("secrets_dir", K_STR, secrets_dir, NULL),
    KEY("log_level", K_STR, log_level, "info"),
    KEY("dags.dir", K_STR, dags_dir, "dags"),
    KEY("dags.interval", K_DURATION, dags_interval_ms, "30s"),
    KEY("git.url", K_STR, git.url, NULL),
    KEY("git.ref", K_STR, git.ref, "main"),
    KEY("git.path", K_STR, git.path, ""),
    KEY("git.interval", K_DURATION, git.interval_ms, "30s"),
    KEY("git.timeout", K_DURATION, git.timeout_ms, "5m"),
    KEY("git.username", K_STR, git.username, NULL),
    KEY("git.password", K_STR, git.password, NULL),
    KEY("git.password_file", K_STR, git.password_file, NULL),
    KEY("git.ssh_key_file", K_STR, git.ssh_key_file, NULL),
    KEY("git.known_hosts_file", K_STR, git.known_hosts_file, NULL),
    KEY("git.ca_file", K_STR, git.ca_file, NULL),
    KEY("scheduler.id", K_STR, scheduler.id, NULL),
    KEY("scheduler.batch_size", K_INT, scheduler.batch_size, "1000"),
    KEY("scheduler.reconcile_interval", K_DURATION, scheduler.reconcile_interval_ms, "5s"),
    KEY("scheduler.worker_timeout", K_DURATION, scheduler.worker_timeout_ms, "30s"),
    KEY("scheduler.requeue_after", K_DURATION, scheduler.requeue_after_ms, "10s"),
    KEY("scheduler.poll_interval", K_DURATION, scheduler.poll_interval_ms, "500ms"),
    KEY("scheduler.api_url", K_STR, scheduler.api_url, NULL),
    KEY("worker.id", K_STR, worker.id, NULL),
    KEY("worker.queue", K_STR, worker.queue, "default"),
    KEY("worker.slots", K_INT, worker.slots, "4"),
    KEY("worker.executor", K_STR, worker.executor, "local"),
    KEY("worker.gpus", K_STR, worker.gpus, ""),
    KEY("worker.visibility_timeout", K_DURATION, worker.visibility_timeout_ms, "60s"),
    KEY("worker.heartbeat_interval", K_DURATION, worker.heartbeat_interval_ms, "5s"),
    KEY("worker.kill_grace", K_DURATION, worker.kill_grace_ms, "10s"),
    KEY("worker.stop_grace", K_DURATION, worker.stop_grace_ms, "30s"),
    KEY("worker.retention", K_DURATION, worker.retention_ms, "7d"),
    KEY("api.listen", K_STR, api.listen, "127.0.0.1:8080"),
    KEY("api.threads", K_INT, api.threads, "8"),
    KEY("api.max_body_bytes", K_INT, api.max_body_bytes, "1048576"),
    KEY("api.request_timeout", K_DURATION, api.request_timeout_ms, "30s"),
    KEY("api.shutdown_grace", K_DURATION, api.shutdown_grace_ms, "10s"),
    KEY("api.token_cache_ttl", K_DURATION, api.token_cache_ttl_ms, "5s"),
    KEY("api.webhook_secret", K_STR, api.webhook_secret, NULL),
    KEY("artifacts.repository", K_STR, artifacts.repository, "none"),
    KEY("artifacts.prefix", K_STR, artifacts.prefix, ""),
    KEY("artifacts.root", K_STR, artifacts.root, NULL),
    KEY("artifacts.endpoint", K_STR, artifacts.endpoint, NULL),
    KEY("artifacts.region", K_STR, artifacts.region, "us-east-1"),
    KEY("artifacts.bucket", K_STR, artifacts.bucket, NULL),
    KEY("artifacts.path_style", K_BOOL, artifacts.path_style, "false"),
    KEY("artifacts.credentials_dir", K_STR, artifacts.credentials_dir, NULL),
    KEY("artifacts.compression", K_STR, artifacts.compression, "gzip"),
    KEY("artifacts.part_size_mb", K_INT, artifacts.part_size_mb, "16"),
    KEY("artifacts.multipart_threshold_mb", K_INT, artifacts.multipart_threshold_mb, "64"),
    KEY("artifacts.parallel_parts", K_INT, artifacts.parallel_parts, "4"),
    KEY("artifacts.archive_logs", K_BOOL, artifacts.archive_logs, "false"),
    /* the kubernetes executor (docs/kubernetes.md) */
    KEY("kubernetes.kubeconfig", K_STR, kubernetes.kubeconfig, ""),
    KEY("kubernetes.context", K_STR, kubernetes.context, ""),
    KEY("kubernetes.namespace", K_STR, kubernetes.namespace_, ""),
    KEY("kubernetes.qps", K_INT, kubernetes.qps, "50"),
    KEY("kubernetes.burst", K_INT, kubernetes.burst, "100"),
    KEY("kubernetes.default_image", K_STR, kubernetes.default_image, ""),
    KEY("kubernetes.image_pull_policy", K_STR, kubernetes.image_pull_policy, ""),
    KEY("kubernetes.service_account", K_STR, kubernetes.service_account, ""),
    KEY("kubernetes.image_pull_secrets", K_STR, kubernetes.image_pull_secrets, ""),
    KEY("kubernetes.gpu_resource", K_STR, kubernetes.gpu_resource, "nvidia.com/gpu"),
    KEY("kubernetes.node_selector", K_STR, kubernetes.node_selector, ""),
    KEY("kubernetes.tolerations", K_STR, kubernetes.tolerations, ""),
    KEY("kubernetes.run_as_non_root", K_BOOL, kubernetes.run_as_non_root, "true"),
    KEY("kubernetes.run_as_user", K_INT, kubernetes.run_as_user, "1000"),
    KEY("kubernetes.helper", K_STR, kubernetes.helper, "init"),
    KEY("kubernetes.sluice_image", K_STR, kubernetes.sluice_image,
        "ghcr.io/sluice-dev/sluice:latest"),
    KEY("kubernetes.sluice_path", K_STR, kubernetes.sluice_path, "/usr/local/bin/sluice"),
    KEY("kubernetes.work_claim", K_STR, kubernetes.work_claim, ""),
    KEY("kubernetes.work_mount", K_STR, kubernetes.work_mount, "/sluice/work"),
    KEY("kubernetes.dags_claim", K_STR, kubernetes.dags_claim, ""),
    KEY("kubernetes.dags_mount", K_STR, kubernetes.dags_mount, "/sluice/dags"),
    KEY("kubernetes.pending_timeout", K_DURATION, kubernetes.pending_timeout_ms, "15m"),
    KEY("kubernetes.image_pull_grace", K_DURATION, kubernetes.image_pull_grace_ms, "2m"),
    KEY("kubernetes.keep_failed", K_DURATION, kubernetes.keep_failed_ms, "0s"),
    KEY("kubernetes.delete_grace", K_DURATION, kubernetes.delete_grace_ms, "10s"),
    /* artifacts in step pods */
    KEY("kubernetes.artifacts_credentials", K_STR, kubernetes.artifacts_credentials, ""),
    KEY("kubernetes.artifacts_claim", K_STR, kubernetes.artifacts_claim, ""),
    KEY("kubernetes.artifacts_credentials_keys", K_STR, kubernetes.artifacts_credentials_keys,
        "access_key_id,secret_access_key,session_token"),
    /* from: git inputs in step pods */
    KEY("kubernetes.git_credentials", K_STR, kubernetes.git_credentials, ""),
    KEY("kubernetes.git_credentials_keys", K_STR, kubernetes.git_credentials_keys,
        "password,ssh_key,known_hosts"),
};
#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

void sl_config_set(char **field, const char *v)
{
    free(*field);
    *field = v ? xstrdup(v) : NULL;
}

/* Converts text for key k into c. where names the source for messages. */
static int assign(struct sl_config *c, const struct key *k, const char *text, const char *where,
                  struct strbuf *err)
{
    char *base = (char *)c + k->offset;
    switch (k->kind) {
    case K_STR:
        sl_config_set((char **)(void *)base, text);
        return 0;
    case K_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (!*text || *end || errno || v < 0 || v > INT_MAX) {
            strbuf_addf(err, "%s: %s must be a whole number from 0 to %d, not '%s'\n", where,
                        k->path, INT_MAX, text);
            return SL_EINVAL;
        }
        *(int64_t *)(void *)base = v;
        return 0;
    }
    case K_DURATION: {
        int64_t ms;
        if (sl_duration_parse(&ms, text) < 0) {
            strbuf_addf(err, "%s: %s must be a duration such as 30s, 5m or 1h30m, not '%s'\n",
                        where, k->path, text);
            return SL_EINVAL;
        }
        *(int64_t *)(void *)base = ms;
        return 0;
    }
    case K_BOOL:
        if (!strcmp(text, "true") || !strcmp(text, "1")) {
            *(bool *)(void *)base = true;
            return 0;
        }
        if (!strcmp(text, "false") || !strcmp(text, "0")) {
            *(bool *)(void *)base = false;
            return 0;
        }
        strbuf_addf(err, "%s: %s must be true or false, not '%s'\n", where, k->path, text);
        return SL_EINVAL;
    }
    return SL_EINVAL;
}

static const struct key *find_key(const char *path)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (!strcmp(keys[i].path, path))
            return &keys[i];
    return NULL;
}

/* SLUICE_SCHEDULER_BATCH_SIZE for scheduler.batch_size. */
static void env_name(char *buf, size_t len, const char *path)
{
    size_t n = (size_t)snprintf(buf, len, "SLUICE_");
    for (const char *p = path; *p && n + 1 < len; p++)
        buf[n++] = *p == '.' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
    buf[n] = '\0';
}

struct parser {
    yaml_parser_t p;
    yaml_event_t ev;
    const char *file;
    struct strbuf *err;
    struct sl_config *c;
    int rc;
};

static void perror_at(struct parser *ps, const yaml_mark_t *m, const char *msg, const char *arg)
{
    strbuf_addf(ps->err, "%s:%zu:%zu: ", ps->file, m->line + 1, m->column + 1);
    strbuf_addf(ps->err, msg, arg);
    strbuf_addch(ps->err, '\n');
    ps->rc = SL_EINVAL;
}

static bool next(struct parser *ps)
{
    yaml_event_delete(&ps->ev);
    if (!yaml_parser_parse(&ps->p, &ps->ev)) {
        strbuf_addf(ps->err, "%s:%zu:%zu: %s\n", ps->file, ps->p.problem_mark.line + 1,
                    ps->p.problem_mark.column + 1, ps->p.problem ? ps->p.problem : "bad YAML");
        ps->rc = SL_EINVAL;
        return false;
    }
    return true;
}

/* Skips the node whose start event is current (after an error). */
static bool skip_node(struct parser *ps)
{
    int depth = 0;
    do {
        switch (ps->ev.type) {
        case YAML_MAPPING_START_EVENT:
        case YAML_SEQUENCE_START_EVENT:
            depth++;
            break;
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT:
            depth--;
            break;
        default:
            break;
        }
        if (depth == 0)
            return true;
    } while (next(ps));
    return false;
}

/* Reads a mapping whose start event is current; prefix is "" or "section." */
static bool read_mapping(struct parser *ps, const char *prefix)
{
    for (;;) {
        if (!next(ps))
            return false;
        if (ps->ev.type == YAML_MAPPING_END_EVENT)
            return true;
        if (ps->ev.type != YAML_SCALAR_EVENT) {
            perror_at(ps, &ps->ev.start_mark, "%skeys must be strings", "");
            return false;
        }
        char path[128];
        snprintf(path, sizeof(path), "%s%s", prefix, (const char *)ps->ev.data.scalar.value);
        yaml_mark_t key_mark = ps->ev.start_mark;
        if (!next(ps))
            return false;
        if (ps->ev.type == YAML_MAPPING_START_EVENT && !*prefix) {
            char sub[130];
            snprintf(sub, sizeof(sub), "%s.", path);
            bool known = false;
            for (size_t i = 0; i < N_KEYS; i++)
                known |= !strncmp(keys[i].path, sub, strlen(sub));
            if (!known) {
                perror_at(ps, &key_mark, "unknown section '%s'", path);
                if (!skip_node(ps))
                    return false;
                continue;
            }
            if (!read_mapping(ps, sub))
                return false;
            continue;
        }
        const struct key *k = find_key(path);
        if (!k) {
            perror_at(ps, &key_mark, "unknown key '%s'", path);
            if (!skip_node(ps))
                return false;
            continue;
        }
        if (ps->ev.type != YAML_SCALAR_EVENT) {
            perror_at(ps, &ps->ev.start_mark, "%s must be a single value", path);
            if (!skip_node(ps))
                return false;
            continue;
        }
        const char *v = (const char *)ps->ev.data.scalar.value;
        bool is_null = ps->ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                       (!strcmp(v, "") || !strcmp(v, "~") || !strcmp(v, "null"));
        char where[300];
        snprintf(where, sizeof(where), "%s:%zu:%zu", ps->file, ps->ev.start_mark.line + 1,
                 ps->ev.start_mark.column + 1);
        if (is_null && k->kind == K_STR)
            sl_config_set((char **)(void *)((char *)ps->c + k->offset), NULL);
        else if (assign(ps->c, k, v, where, ps->err) < 0)
            ps->rc = SL_EINVAL;
    }
}

static int read_file(struct sl_config *c, const char *path, struct strbuf *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        strbuf_addf(err, "%s: %s\n", path, strerror(errno));
        return SL_ENOENT;
    }
    struct parser ps = {.file = path, .err = err, .c = c};
    yaml_parser_initialize(&ps.p);
    yaml_parser_set_input_file(&ps.p, f);
    memset(&ps.ev, 0, sizeof(ps.ev));
    /* stream start, document start (or stream end: an empty file), root mapping */
    bool ok = next(&ps);  /* stream start */
    ok = ok && next(&ps); /* document start */
    if (ok && ps.ev.type == YAML_DOCUMENT_START_EVENT && next(&ps)) {
        if (ps.ev.type == YAML_MAPPING_START_EVENT)
            read_mapping(&ps, "");
        else if (!(ps.ev.type == YAML_SCALAR_EVENT && !ps.ev.data.scalar.length))
            perror_at(&ps, &ps.ev.start_mark, "%sthe configuration must be a mapping", "");
    }
    yaml_event_delete(&ps.ev);
    yaml_parser_delete(&ps.p);
    fclose(f);
    return ps.rc;
}

int sl_config_load(struct sl_config *c, const char *path, struct strbuf *err)
{
    memset(c, 0, sizeof(*c));
    int rc = 0;
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].def && assign(c, &keys[i], keys[i].def, "default", err) < 0)
            rc = SL_EINTERNAL;
    if (!path || !*path)
        path = getenv("SLUICE_CONFIG");
    if (path && *path) {
        c->path = xstrdup(path);
    } else if (access("sluice.yaml", R_OK) == 0) {
        c->path = xstrdup("sluice.yaml");
    }
    if (c->path) {
        int frc = read_file(c, c->path, err);
        if (frc < 0 && rc == 0)
            rc = frc;
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        char name[128];
        env_name(name, sizeof(name), keys[i].path);
        const char *v = getenv(name);
        if (v && assign(c, &keys[i], v, name, err) < 0 && rc == 0)
            rc = SL_EINVAL;
    }
    if (!c->log_root)
        c->log_root = xasprintf("%s/logs/steps", c->data_dir);
    if (!c->work_root)
        c->work_root = xasprintf("%s/work", c->data_dir);
    return rc;
}

void sl_config_release(struct sl_config *c)
{
    free(c->path);
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].kind == K_STR)
            sl_config_set((char **)(void *)((char *)c + keys[i].offset), NULL);
    memset(c, 0, sizeof(*c));
}
