/*
 * common/config.h - sluice.yaml, every key overridable by an environment variable.
 *
 * One file configures every role (scheduler, worker, api, standalone); each reads the
 * keys it needs. A key's environment variable is SLUICE_ followed by its path in upper
 * case with '.' replaced by '_': scheduler.batch_size is SLUICE_SCHEDULER_BATCH_SIZE.
 * The environment wins over the file, and command-line flags (applied by the caller)
 * win over both. The keys, their types and defaults are the table in config.c and in
 * docs/configuration.md.
 *
 * The file is found at the path given, else $SLUICE_CONFIG, else ./sluice.yaml if it
 * exists; no file at all is fine (defaults and environment). Unknown keys, wrong types
 * and bad durations are errors with file:line:column (or the variable's name), all
 * reported at once, so a typo never silently falls back to a default.
 *
 * Secrets (URLs with passwords) may come from the file or the environment; they are
 * never logged by this module. Thread-safety: load once at start-up; the struct is
 * then read-only. Memory: sl_config_release() frees the strings.
 */
#ifndef SLUICE_COMMON_CONFIG_H
#define SLUICE_COMMON_CONFIG_H

#include "common/strbuf.h"

#include <stdbool.h>
#include <stdint.h>

struct sl_config {
    char *path;         /* the file read, or NULL */
    char *database_url; /* NULL: none configured (standalone embeds one) */
    char *redis_url;    /* NULL: none configured */
    char *data_dir;     /* ".sluice": embedded servers, default roots below */
    char *log_root;     /* step logs; default <data_dir>/logs/steps */
    char *work_root;    /* per-run and per-attempt directories; default <data_dir>/work */
    char *secrets_dir;  /* <dir>/<name>/<key>; default NULL */
    char *log_level;    /* "info" */

    char *dags_dir;           /* dags.dir: the directory source; "dags" */
    int64_t dags_interval_ms; /* dags.interval: rescan period; 30 s */

    struct {
        char *url;              /* git.url: the DAG repository; NULL: the directory source */
        char *ref;              /* branch or tag; "main" */
        char *path;             /* sub-directory of the DAG files; "" */
        int64_t interval_ms;    /* between fetches; 30 s */
        int64_t timeout_ms;     /* a fetch running longer is abandoned; 5 min */
        char *username;         /* https or ssh user; NULL: from the URL */
        char *password;         /* https password or token (secret); NULL */
        char *password_file;    /* or read from this file (a mounted secret); NULL */
        char *ssh_key_file;     /* NULL */
        char *known_hosts_file; /* required for ssh; NULL */
        char *ca_file;          /* https CA bundle; NULL: the system's */
    } git;

    struct {
        char *id;                      /* default <hostname>-<pid> */
        int64_t batch_size;            /* events applied per transaction; 1000 */
        int64_t reconcile_interval_ms; /* 5 s */
        int64_t worker_timeout_ms;     /* heartbeat silence that makes a worker dead; 30 s */
        int64_t requeue_after_ms;      /* a queued step with no message is re-sent after; 10 s */
        int64_t poll_interval_ms;      /* new runs and cancels from other processes; 500 ms */
        char *api_url;                 /* base URL for links in notifications; NULL */
    } scheduler;

    struct {
        char *id;                      /* default <hostname>-<pid> */
        char *queue;                   /* "default" */
        int64_t slots;                 /* 4 */
        char *executor;                /* "local" or "noop" */
        char *gpus;                    /* "0,1": device ids; "" none */
        int64_t visibility_timeout_ms; /* 60 s */
        int64_t heartbeat_interval_ms; /* 5 s */
        int64_t kill_grace_ms;         /* 10 s */
        int64_t stop_grace_ms;         /* 30 s */
        int64_t retention_ms;          /* run directories kept; 7 days */
    } worker;

    struct {
        char *listen;               /* "host:port"; "127.0.0.1:8080" */
        int64_t threads;            /* worker threads, each a database session; 8 */
        int64_t max_body_bytes;     /* larger request bodies get 413; 1 MiB */
        int64_t request_timeout_ms; /* a request must arrive within; 30 s */
        int64_t shutdown_grace_ms;  /* in-flight requests get this at a stop; 10 s */
        int64_t token_cache_ttl_ms; /* a token's role is cached this long; 5 s */
        char *webhook_secret;       /* secret of POST /hooks/git; NULL: hook off */
    } api;

    /* artifacts.*: where step artifacts live (worker/artifacts.h, docs/artifacts.md) */
    struct {
        char *repository;               /* "none", "s3" or "fs" */
        char *prefix;                   /* key prefix; "" */
        char *root;                     /* fs: the shared volume's mount path */
        char *endpoint;                 /* s3: http(s)://host[:port] */
        char *region;                   /* s3: "us-east-1" */
        char *bucket;                   /* s3 */
        bool path_style;                /* s3: endpoint/bucket/key; false: bucket.endpoint */
        char *credentials_dir;          /* s3: access_key_id, secret_access_key, session_token
                                         * files; NULL: AWS_* environment variables */
        char *compression;              /* directory archives: "gzip" or "none" */
        int64_t part_size_mb;           /* multipart part size; 16 */
        int64_t multipart_threshold_mb; /* objects above it go multipart; 64 */
        int64_t parallel_parts;         /* parts in flight; 4 */
        bool archive_logs;              /* upload each finished step's log; false */
    } artifacts;

    /* kubernetes.*: the kubernetes executor (docs/kubernetes.md); "" means unset */
    struct {
        char *kubeconfig;              /* a kubeconfig file; "": in-cluster, $KUBECONFIG, ~/.kube */
        char *context;                 /* "": the current context */
        char *namespace_;              /* "": the context's or service account's, else default */
        int64_t qps, burst;            /* client-side rate limit: 50, 100 */
        char *default_image;           /* for steps without an image */
        char *image_pull_policy;       /* "": the cluster's default */
        char *service_account;         /* "": none (no token mounted) */
        char *image_pull_secrets;      /* comma-separated */
        char *gpu_resource;            /* "nvidia.com/gpu" */
        char *node_selector;           /* the queue's, "k=v,k2=v2" */
        char *tolerations;             /* the queue's, a JSON array */
        bool run_as_non_root;          /* true */
        int64_t run_as_user;           /* 1000 */
        char *helper;                  /* init, image or none */
        char *sluice_image;            /* the init container's image */
        char *sluice_path;             /* /usr/local/bin/sluice */
        char *work_claim, *work_mount; /* the shared work volume: PVC, mountPath */
        char *dags_claim, *dags_mount; /* the DAG checkout: PVC, mountPath */
        int64_t pending_timeout_ms;    /* 15 min */
        int64_t image_pull_grace_ms;   /* 2 min */
        int64_t keep_failed_ms;        /* 0: failed pods are deleted at once */
        int64_t delete_grace_ms;       /* cancel's grace period: 10 s */
        /* artifacts in step pods (docs/kubernetes.md, "Artifacts") */
        char *artifacts_credentials; /* s3: Secret with access_key_id, secret_access_key; "" none */
        char *artifacts_claim;       /* fs: the repository's PVC, mounted at artifacts.root; "" */
        char *artifacts_credentials_keys; /* its keys: "id,secret[,token]" */
        char *git_credentials;      /* from: git: Secret with the git.* credentials; "" none */
        char *git_credentials_keys; /* its keys: "password,ssh_key,known_hosts[,ca]" */
    } kubernetes;
};

/*
 * Loads the configuration: defaults, then the file (path, $SLUICE_CONFIG or
 * ./sluice.yaml), then the environment. Returns 0, or SL_EINVAL / SL_ENOENT (an
 * explicitly named file is missing) with every problem, one per line, appended to err.
 * *c is filled (and must be released) in both cases.
 */
int sl_config_load(struct sl_config *c, const char *path, struct strbuf *err);
void sl_config_release(struct sl_config *c);

/* Replaces a string setting (a flag given on the command line): frees *field, copies v. */
void sl_config_set(char **field, const char *v);

#endif
