/*
 * worker/exec_local.h - the `local` executor: one step attempt as a child process.
 *
 * A worker hands exec_local_start() the dispatch spec of an attempt (the JSON that
 * scheduler/engine.c's build_spec() renders: command, args, env, workdir, timeout_ms,
 * outputs.params, ...) and gets exactly one on_done callback with the result. The child
 * runs on the caller's libuv loop, in a process group of its own; its stdout and stderr
 * go straight to the attempt's log file. Design, kill policy and state diagram are in
 * worker/README.md.
 *
 * Threading: every function here is called on the loop's thread, and on_done runs there
 * too. File I/O (log file, secrets, output params) runs on libuv's threadpool through
 * uv_queue_work, so no callback blocks on a slow (say NFS) volume.
 *
 * Ownership: struct exec_local belongs to this module. The pointer stored by
 * exec_local_start() is valid until on_done returns; after that the executor closes its
 * handles and frees itself, so the caller must forget the pointer inside on_done. The
 * loop must keep running until then: uv_loop_close() returns UV_EBUSY while an executor
 * is alive. To shut down, exec_local_cancel() each one and run the loop.
 */
#ifndef SLUICE_WORKER_EXEC_LOCAL_H
#define SLUICE_WORKER_EXEC_LOCAL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Total size cap of an attempt's output parameters, and so of each one. */
#define EXEC_LOCAL_MAX_OUTPUT_BYTES (64 * 1024)
/* Used when exec_local_options.kill_grace_ms is 0. */
#define EXEC_LOCAL_DEFAULT_KILL_GRACE_MS 10000
/* Secrets larger than this are refused. */
#define EXEC_LOCAL_MAX_SECRET_BYTES (1024 * 1024)

/*
 * Why an attempt failed. Mirrors enum engine_failure (scheduler/engine.h), to which the
 * worker maps it one to one when it publishes the event:
 *
 *   EXEC_FAIL_STEP      -> ENGINE_FAIL_STEP: non-zero exit, killed by a signal, timeout,
 *                          missing / oversized / '..' output param, and a spawn that fails
 *                          because of the step's own definition (the binary or workdir
 *                          does not exist or is not executable: ENOENT, EACCES, ENOTDIR,
 *                          ENOEXEC, ...) - retrying the same spec cannot help, as with a
 *                          container whose command is not found
 *   EXEC_FAIL_ERROR     -> ENGINE_FAIL_ERROR: not the step's code but not transient either:
 *                          a malformed spec, a missing or unreadable secret (Kubernetes'
 *                          CreateContainerConfigError)
 *   EXEC_FAIL_TRANSIENT -> ENGINE_FAIL_TRANSIENT: the worker's own resources: the log file
 *                          cannot be opened, spawn fails with EAGAIN, ENOMEM, EMFILE, ENFILE
 *   EXEC_FAIL_CANCELLED -> ENGINE_FAIL_CANCELLED: exec_local_cancel() was called
 */
enum exec_failure {
    EXEC_FAIL_NONE, /* the attempt succeeded */
    EXEC_FAIL_STEP,
    EXEC_FAIL_ERROR,
    EXEC_FAIL_TRANSIENT,
    EXEC_FAIL_CANCELLED,
};

/* Returns "none", "step", "error", "transient" or "cancelled". */
const char *exec_failure_name(enum exec_failure failure);

struct exec_local_options {
    const char *log_path;         /* required; parent directories are created; appended to */
    const char *secrets_dir;      /* <dir>/<secret_name>/<secret_key>; NULL: no secrets */
    const char *default_workdir;  /* cwd when the spec has neither workdir nor dag_dir; NULL:
                                   * the worker's */
    const int *gpus;              /* device ids assigned by the caller, n_gpus of them */
    size_t n_gpus;                /* 0: CUDA_VISIBLE_DEVICES is set to "" */
    uint64_t kill_grace_ms;       /* SIGTERM -> SIGKILL delay; 0: the default above */
    const char *const *extra_env; /* "NAME=value" from the worker (SLUICE_RUN_DIR, ...), set
                                   * after PATH, HOME, LANG, TZ and before spec.env */
    size_t n_extra_env;
    struct artifacts_repo *artifacts; /* borrowed, outlives the attempt; NULL: none. Inputs
                                       * are staged before the spawn, declared outputs
                                       * stored after exit 0 (worker/artifacts.h) */
};

struct exec_local_result {
    const char *attempt_id;    /* from the spec ("" if it had none) */
    int exit_code;             /* the exit status, or -1 if it did not exit normally */
    int term_signal;           /* the signal that killed it, or 0 */
    const char *reason;        /* NULL on success, else a short lower-case phrase */
    enum exec_failure failure; /* EXEC_FAIL_NONE exactly when reason is NULL */
    int64_t started_ms;        /* unix ms when the child was spawned; 0 if it was not */
    int64_t finished_ms;       /* unix ms when it ended (or failed to start) */
    cJSON *outputs;            /* object name -> string; filled on success, else empty */
};

struct exec_local;
struct artifacts_repo;

/* Called once per started executor, on the loop thread. result and everything it
 * points to is freed when the callback returns, except that the callback may take
 * result->outputs by setting the field to NULL (it then cJSON_Delete()s it). */
typedef void (*exec_local_done_cb)(struct exec_local_result *result, void *data);

/*
 * Starts one attempt: argv = spec.command ++ spec.args, env = PATH, HOME, LANG and TZ
 * from the worker's own environment, then opts->extra_env, then spec.env (plain strings,
 * or {secret_name, secret_key} objects read from opts->secrets_dir), then
 * CUDA_VISIBLE_DEVICES from opts->gpus. cwd = spec.workdir, else spec.dag_dir (absolute)
 * if it is not empty, else opts->default_workdir. spec.timeout_ms > 0 stops it after that
 * long (reason "timeout").
 *
 * $(NAME) references are expanded with Kubernetes' rules (worker/expand.h): in each
 * plain spec.env value against the variables defined before it (so extra_env's, and the
 * earlier spec.env entries), and in command, args, workdir and output param paths against
 * the whole environment - except variables whose value comes from a secret, which stay
 * as written there, so that no secret ends up in an argv (visible in ps) or a log line.
 *
 * spec and opts are read during the call only (strings are copied). Returns 0 and sets
 * *out, after which on_done is called exactly once, never from inside this call: every
 * failure, including a malformed spec or a binary that does not exist, is reported
 * through it. Returns SL_EINVAL, and calls nothing, only if out, loop, spec, opts,
 * opts->log_path or on_done is NULL.
 */
int exec_local_start(struct exec_local **out, uv_loop_t *loop, const cJSON *spec,
                     const struct exec_local_options *opts, exec_local_done_cb on_done, void *data);

/*
 * Stops the attempt: SIGTERM to its process group, SIGKILL kill_grace_ms later if it is
 * still there; the result's reason is "cancelled" (unless a timeout stop was already
 * under way, which keeps "timeout"). Before the child was spawned, it is never spawned.
 * After the child exited (its outputs are being read), does nothing. Must not be called
 * after on_done returned.
 */
void exec_local_cancel(struct exec_local *e);

#endif
