/*
 * worker/kube.h - the `kubernetes` executor: each step attempt becomes a Pod.
 *
 * Three layers, each usable alone:
 *
 *   kube_pod_build()   pure: a dispatch spec (scheduler/engine.c's build_spec()) and the
 *                      worker's options -> the Pod object a real cluster gets (name from
 *                      the attempt id, labels, image, command through the pod-side helper,
 *                      env and secretKeyRef, requests/limits and GPUs, placement, security
 *                      context, activeDeadlineSeconds, volumes, termination message path)
 *   struct kube_ctx    one per worker: the API client (worker/kube_client.h: libcurl's
 *                      multi-socket API on the worker's libuv loop, rate limited, with
 *                      retries) and one shared watch of the worker's pods, feeding every
 *                      executor (an informer: list, then watch from its resourceVersion,
 *                      bookmarks, a fresh list on 410)
 *   struct kube_exec   one per attempt: create (409 -> adopt the pod this attempt already
 *                      has), follow its status, stream its log to the log file, read output
 *                      params from the termination message (and the stage-out sidecar's
 *                      outcome and log), map the failure reason, delete the pod; cancel
 *                      deletes it with a grace period; release stops following and leaves
 *                      the pod to the worker that takes the attempt over
 *
 * docs/kubernetes.md is the user's guide (configuration, the Pod, outputs, failures) and
 * worker/README.md ("The kubernetes executor") the design: states, threads, ownership.
 *
 * Threading: everything runs on the loop thread of the loop given to kube_ctx_new();
 * callbacks are called there. File writes (the log) go through libuv's threadpool
 * (uv_fs_*), so nothing blocks on a slow log volume. The one exception: a service
 * account token file is re-read on the loop thread when it changed (a small file on a
 * local projected volume, checked at most every 10 s).
 *
 * Ownership: kube_ctx_new() copies the options. The ctx owns its executors' shared
 * state; each struct kube_exec owns itself, valid until its on_done returns, after which
 * the caller must forget it (as exec_local). kube_ctx_close() must be called after every
 * executor finished; its callback fires once every handle is closed.
 */
#ifndef SLUICE_WORKER_KUBE_H
#define SLUICE_WORKER_KUBE_H

#include "worker/exec_local.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct strbuf;

#define KUBE_MAIN_CONTAINER "main"
#define KUBE_INIT_CONTAINER "sluice-init"
/* The init container that stages a step's input artifacts (docs/kubernetes.md, "Artifacts") */
#define KUBE_STAGE_IN_CONTAINER "sluice-stage-in"
/* The sidecar that stores a step's declared output artifacts after the main container's
 * helper reported the step's end through the handshake files below (`sluice pod
 * stage-out`); only pods of steps with output artifacts and an s3 or fs repository */
#define KUBE_STAGE_OUT_CONTAINER "sluice-stage-out"
/* The environment variable carrying a step's artifact bindings (inputs, outputs and the
 * ids that make keys, as JSON) to `sluice artifact get --spec-env`, `sluice pod stage-out
 * --spec-env` and `sluice pod exec --artifacts` */
#define KUBE_ENV_ARTIFACT_SPEC "SLUICE_ARTIFACT_SPEC"
#define KUBE_HELPER_DIR        "/var/run/sluice"
#define KUBE_HELPER_BIN        "/var/run/sluice/sluice"
/* The handshake between the helper and the stage-out sidecar, in KUBE_HELPER_DIR (an
 * emptyDir both mount): the helper touches KUBE_HANDSHAKE_ALIVE every
 * KUBE_HEARTBEAT_MS while the step runs, then writes KUBE_HANDSHAKE_DONE
 * ({"succeeded": bool, "exit_code": N}, by write and rename) when it has ended. */
#define KUBE_HANDSHAKE_ALIVE "step.alive"
#define KUBE_HANDSHAKE_DONE  "step.done"
#define KUBE_HEARTBEAT_MS    5000
/* The helper brings its own dynamic loader and shared libraries (sluice pod install), so
 * it runs in any x86-64 Linux image: distroless, Alpine (musl) or another glibc. */
#define KUBE_HELPER_LOADER        "/var/run/sluice/ld.so"
#define KUBE_HELPER_LIBS          "/var/run/sluice/lib"
#define KUBE_TERMINATION_PATH     "/dev/termination-log"
#define KUBE_TERMINATION_MAX      4096 /* bytes of a termination message (the kubelet's cap) */
#define KUBE_POD_NAME_MAX         63
#define KUBE_LABEL_VALUE_MAX      63
#define KUBE_ANNOTATION_ATTEMPT   "sluice.io/attempt-id"
#define KUBE_LABEL_MANAGED_BY     "app.kubernetes.io/managed-by"
#define KUBE_MANAGED_BY           "sluice"
#define KUBE_DEFAULT_GPU_RESOURCE "nvidia.com/gpu"

/* How output params come back (docs/kubernetes.md, "Output params"). */
enum kube_helper {
    KUBE_HELPER_INIT,  /* an init container from sluice_image copies the binary into an
                        * emptyDir; the main container runs `sluice pod exec -- argv` */
    KUBE_HELPER_IMAGE, /* the step's image has sluice at sluice_path: no init container */
    KUBE_HELPER_NONE,  /* argv runs as is; a step with output params fails at once */
};

/* The worker's kubernetes.* settings (docs/configuration.md). Strings may be NULL or "". */
struct kube_options {
    /* --- the API ------------------------------------------------------------------ */
    const char *kubeconfig; /* a kubeconfig file; NULL: in-cluster when
                             * KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG, else
                             * ~/.kube/config */
    const char *context;    /* a kubeconfig context; NULL: its current-context */
    const char *sa_dir;     /* in-cluster credentials' directory; NULL: the standard
                             * /var/run/secrets/kubernetes.io/serviceaccount */
    const char *namespace_; /* NULL: the context's or the service account's, else default */
    double qps;             /* client-side rate limit; 0: 50 */
    int burst;              /* 0: 100 */
    int max_retries;        /* per request, on 429, 5xx and connection errors; 0: 10 */

    /* --- the Pod ------------------------------------------------------------------ */
    const char *queue;              /* the worker's queue: a label, for the pod watch */
    const char *default_image;      /* for steps without an image */
    const char *image_pull_policy;  /* Always, IfNotPresent, Never; NULL: the cluster's */
    const char *service_account;    /* serviceAccountName; NULL: none, and no token mounted */
    const char *image_pull_secrets; /* comma-separated Secret names */
    const char *gpu_resource;       /* the extended resource of resources.gpu; NULL:
                                     * nvidia.com/gpu */
    const char *node_selector;      /* the queue's, "k=v,k2=v2"; a step's wins per key */
    const char *tolerations;        /* the queue's, a JSON array of Kubernetes tolerations */
    bool run_as_non_root;           /* runAsNonRoot with run_as_user */
    int64_t run_as_user;            /* used when run_as_non_root; 0: 1000 */
    enum kube_helper helper;
    const char *sluice_image; /* the image of the init container */
    const char *sluice_path;  /* sluice's path in sluice_image (or in the step image) */
    const char *work_claim;   /* PVC of the shared work volume (run and attempt dirs,
                               * fs artifacts); NULL: an emptyDir per pod */
    const char *work_mount;   /* its mountPath; NULL: /sluice/work */
    const char *dags_claim;   /* PVC holding the DAG checkout, mounted read-only; NULL: none */
    const char *dags_mount;   /* its mountPath (the scheduler's DAG root); NULL: /sluice/dags */

    /* --- artifacts: the repository the pods stage from and to (artifacts.*) ----------- */
    const char *artifacts_repository; /* none, s3 or fs; NULL: none */
    const char *artifacts_prefix;     /* the settings the staging containers get, as */
    const char *artifacts_root;       /* SLUICE_ARTIFACTS_<KEY> variables; NULL or "": */
    const char *artifacts_endpoint;   /* not passed (the loader's default applies) */
    const char *artifacts_region;
    const char *artifacts_bucket;
    const char *artifacts_compression;
    bool artifacts_path_style;
    int64_t artifacts_part_size_mb;           /* 0: not passed */
    int64_t artifacts_multipart_threshold_mb; /* 0: not passed */
    int64_t artifacts_parallel_parts;         /* 0: not passed */
    const char *artifacts_credentials;        /* s3: the Secret with the credentials, given as
                                               * secretKeyRefs; NULL: none (unsigned requests) */
    const char *artifacts_credentials_keys;   /* its keys "id,secret[,token]" (the token's is
                                               * optional in the Secret); NULL: access_key_id,
                                               * secret_access_key,session_token */
    const char *artifacts_claim; /* fs: the repository's PVC (ReadWriteMany), mounted at
                                  * artifacts_root; NULL: artifacts_root is on a volume
                                  * the pod has anyway (under work_mount) */
    /* from: git inputs, fetched by the stage-in container (docs/kubernetes.md) */
    const char *git_username;         /* git.username; NULL: the URL's */
    const char *git_credentials;      /* the Secret with the credentials; NULL: none */
    const char *git_credentials_keys; /* its keys "password,ssh_key,known_hosts[,ca]" (an
                                       * empty one: not used); NULL: the first three names */

    /* --- the lifecycle ------------------------------------------------------------ */
    int64_t pending_timeout_ms;  /* unschedulable this long fails the attempt (error) unless
                                  * the step says otherwise; 0: 15 min */
    int64_t image_pull_grace_ms; /* ErrImagePull / ImagePullBackOff this long fails it; 0: 2 min */
    int64_t keep_failed_ms;      /* failed pods stay this long before deletion; 0: delete */
    int64_t delete_grace_ms;     /* cancel's grace period; 0: 10 s */
    int64_t gc_interval_ms;      /* how often finished pods nobody follows are looked for;
                                  * 0: 60 s */
    int64_t gc_min_age_ms;       /* ... and how long after they ended they go (failed ones:
                                  * at least keep_failed_ms); 0: 10 min, time for a worker
                                  * taking a dead one's message over to adopt them first */
};

/* --- The Pod: pure ------------------------------------------------------------------ */

/* The pod name of an attempt: a DNS-1123 label of at most 63 characters, "<dag>-<step>-
 * <map>-<attempt>" made valid and cut, then "-" and 16 hex digits of a 64-bit hash of the
 * whole id, so distinct attempts get distinct names. Newly allocated. */
char *kube_pod_name(const char *attempt_id);

/* s as a valid label value (<= 63 of [A-Za-z0-9._-], alphanumeric at both ends); a value
 * that had to change gets a hash suffix. Newly allocated. */
char *kube_label_value(const char *s);

/*
 * Builds the Pod of the attempt described by spec. Returns 0 and sets *out (a new cJSON
 * object; caller cJSON_Delete()s it), or SL_EINVAL with the reason appended to err: a
 * malformed spec, no image, no command while a helper is used, output params without a
 * helper, a queue node_selector or tolerations that do not parse, artifacts to stage
 * with an s3 or fs repository but no helper, or inputs to stage into a working
 * directory that is not on the work volume. Pure: no I/O.
 *
 * Artifacts (with the helper): input artifacts to fetch add the init container
 * KUBE_STAGE_IN_CONTAINER (`sluice artifact get --spec-env`); declared output artifacts
 * with an s3 or fs repository add the container KUBE_STAGE_OUT_CONTAINER (`sluice pod
 * stage-out`), which stores them once the helper (`sluice pod exec --handshake`) reported
 * that the step succeeded. Those two get the bindings in KUBE_ENV_ARTIFACT_SPEC, the
 * repository's settings as SLUICE_ARTIFACTS_* variables and the credentials as
 * secretKeyRefs; the main container gets none of them. Without a repository the helper
 * only checks that declared outputs exist (`sluice pod exec --artifacts`). Both staging
 * containers need the working directory on the work volume.
 */
int kube_pod_build(cJSON **out, const cJSON *spec, const struct kube_options *o,
                   struct strbuf *err);

/* --- The context: one per worker --------------------------------------------------- */

struct kube_ctx;

/* What kube_ctx_new() checks first, without starting anything: the credentials load and
 * the options build a Pod. Blocking file reads. Returns 0, or SL_EINVAL / SL_ENOENT with
 * the reason logged. */
int kube_options_check(const struct kube_options *o);

/*
 * Loads the credentials (kubeconfig or in-cluster), checks the options and starts the
 * client and the pod watch on loop. Blocking file reads (kubeconfig, certificates):
 * call at start-up. Returns 0 and sets *out, or SL_EINVAL / SL_ENOENT with the reason
 * logged (component "kube").
 */
int kube_ctx_new(struct kube_ctx **out, uv_loop_t *loop, const struct kube_options *o);

/* Stops the watch and the client; on_closed(data) once every handle is closed. No
 * executor may be alive. */
void kube_ctx_close(struct kube_ctx *k, void (*on_closed)(void *data), void *data);

/* API requests sent so far (each retry counts), for the benchmark. */
uint64_t kube_ctx_requests(const struct kube_ctx *k);

/* Deletes the pods of run_id (of one attempt when attempt_id is not NULL) that no
 * executor of this worker follows: a cancel for a run whose worker died. Asynchronous;
 * failures are logged. */
void kube_ctx_cancel_orphans(struct kube_ctx *k, const char *run_id, const char *attempt_id);

/* --- The executor: one per attempt ------------------------------------------------- */

struct kube_exec;

struct artifacts_repo;
struct kube_exec_options {
    const char *log_path;  /* required; parent directories are created; appended to */
    const char *worker_id; /* named in the log's lines about creating and adopting; may be
                            * NULL */
    /* the worker's artifact repository, borrowed: when it archives logs
     * (artifacts.archive_logs), the finished log is stored there before the result is
     * reported, on the loop's threadpool; NULL: none */
    struct artifacts_repo *artifacts;
};

/*
 * Starts one attempt as a pod (or adopts the pod it already has). Result through
 * on_done, exactly once, never from inside this call; the result's reason, failure kind,
 * exit code and outputs follow docs/kubernetes.md's table. Returns SL_EINVAL (nothing
 * called) only if an argument is NULL.
 */
int kube_exec_start(struct kube_exec **out, struct kube_ctx *k, const cJSON *spec,
                    const struct kube_exec_options *opts, exec_local_done_cb on_done, void *data);

/* Cancels the attempt: the pod is deleted with the grace period; the result is
 * "cancelled". Must not be called after on_done returned. */
void kube_exec_cancel(struct kube_exec *e);

/* Stops following the attempt and leaves its pod as it is, for the worker that takes the
 * attempt over (stop after the grace period, or another consumer took the message): the
 * result is "released" with failure EXEC_FAIL_TRANSIENT, and must not be published. */
void kube_exec_release(struct kube_exec *e);

#endif
