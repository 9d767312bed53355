/*
 * worker/worker.h - the worker daemon: takes steps off one Redis queue, runs each through
 * an executor, reports running and the final outcome, hands unfinished work back on stop.
 *
 * One struct worker is one consumer (its id) of one step queue (DESIGN.md, data flow 5):
 *
 *   - it reads up to its free slots of step messages (XREADGROUP), and periodically takes
 *     over messages whose worker died (XAUTOCLAIM after the visibility timeout);
 *   - for each step it publishes a `running` event, runs the step, publishes the final
 *     `succeeded` / `failed` event (exit code, reason, failure kind, outputs, timings, log
 *     path) and only then acknowledges the message, so a worker that dies in between leaves
 *     the message to be taken over and the step reported again;
 *   - while a step runs it keeps the message fresh (every third of the visibility timeout)
 *     and heartbeats (info: queue, slots, busy, executor, pid, host, gpus);
 *   - it obeys cancels (sluice:cancel), and gives up a step another worker took over;
 *   - a malformed message is logged and acknowledged, never run;
 *   - when Redis is unreachable, steps keep running and every event waits in memory until
 *     it can be published (a repeated event is harmless to the scheduler).
 *
 * Executors: "local" (worker/exec_local.h: a child process per step, with a per-run and a
 * per-attempt directory under work_root and a log file under log_root, GPUs handed out
 * from the worker's list), "noop" (for tests and benchmarks: every step succeeds at
 * once with no outputs; nothing runs and no file is written) and "kubernetes"
 * (worker/kube.h: a Pod per step, its log streamed to log_root; GPUs are the cluster's,
 * the worker's list is not used; a step handed back leaves its pod running for the
 * worker that takes it over, which adopts it). worker/README.md has the
 * design: threads, job states, directories, stop and takeover.
 *
 * Threads: worker_start() starts the worker's threads and returns; the worker runs until
 * worker_stop(); worker_join() waits for the end and frees it. worker_stop() is
 * thread-safe (any thread, any number of times, until worker_join() returned) but not
 * async-signal-safe: a daemon blocks SIGINT/SIGTERM and sigwait()s for them in a thread
 * of its own (cli/cmd_worker.c does), which also lets `sluice standalone` run a worker in
 * a thread of the scheduler's process. Several workers may run in one process.
 *
 * Stop (warm shutdown, then hand-back): the first worker_stop() stops reading new steps;
 * running steps get stop_grace_ms to finish and report as usual. Steps still running
 * after that (or at once, on a second worker_stop()) are stopped (SIGTERM to the process
 * group, SIGKILL after kill_grace_ms) and handed back: no final event is published and
 * the message is not acknowledged, so another worker takes it over after the visibility
 * timeout, as if this one had died. Steps waiting for GPUs are handed back at once. Final
 * events not yet published get 10 s more; then they are dropped with an error log (their
 * messages stay pending and are taken over, so the step runs again). Finally the worker
 * removes its heartbeat record (queue_forget_worker()).
 *
 * Errors: functions returning int return 0 or a negative code from common/error.h, and
 * log what went wrong (component "worker").
 *
 * Ownership: worker_start() copies everything it needs from the options; the caller may
 * free them once it returns. The struct worker belongs to the worker until worker_join()
 * frees it.
 */
#ifndef SLUICE_WORKER_WORKER_H
#define SLUICE_WORKER_WORKER_H

#include <stddef.h>
#include <stdint.h>

enum worker_executor {
    WORKER_EXEC_LOCAL,      /* a child process per step (worker/exec_local.h) */
    WORKER_EXEC_NOOP,       /* succeed at once, run nothing: tests and benchmarks */
    WORKER_EXEC_KUBERNETES, /* a Pod per step (worker/kube.h) */
};

struct kube_options;

#define WORKER_DEFAULT_QUEUE         "default"
#define WORKER_DEFAULT_SLOTS         4
#define WORKER_DEFAULT_NOOP_SLOTS    1000
#define WORKER_DEFAULT_VISIBILITY_MS 60000
#define WORKER_DEFAULT_HEARTBEAT_MS  5000
#define WORKER_DEFAULT_STOP_GRACE_MS 30000
#define WORKER_DEFAULT_RETENTION_MS  (7LL * 24 * 3600 * 1000)
#define WORKER_MAX_SLOTS             100000
#define WORKER_MAX_GPUS              1024

/* Everything but redis_url may be left zero (NULL) for its default. */
struct worker_options {
    const char *redis_url;  /* required: redis://... or unix://... (queue_open()) */
    const char *key_prefix; /* Redis key prefix; NULL: QUEUE_DEFAULT_PREFIX */
    const char *queue;      /* the step queue served; NULL: WORKER_DEFAULT_QUEUE */
    const char *id;         /* consumer name, [A-Za-z0-9._:@-]; NULL: "<hostname>-<pid>" */
    size_t slots;           /* steps held at once, 1..WORKER_MAX_SLOTS; 0: 4, or 1000 for
                             * the noop executor */
    enum worker_executor executor;
    const int *gpus;         /* device ids this worker hands out (CUDA_VISIBLE_DEVICES), n_gpus */
    size_t n_gpus;           /* of them, distinct, >= 0; 0: steps asking for GPUs fail */
    const char *log_root;    /* step logs (local); NULL: ".sluice/logs/steps". Relative paths
                              * here and below are made absolute against the cwd */
    const char *work_root;   /* per-run and per-attempt directories (local); NULL:
                              * ".sluice/work" */
    const char *secrets_dir; /* <dir>/<secret_name>/<secret_key>; NULL: no secrets */
    int64_t kill_grace_ms;   /* SIGTERM -> SIGKILL when a step is stopped; 0: 10 s */
    int64_t visibility_timeout_ms;   /* a message unrefreshed this long is taken over; 0: 60 s;
                                      * the worker refreshes its own every third of it */
    int64_t heartbeat_interval_ms;   /* 0: 5 s; the heartbeat lives 3 intervals */
    int64_t stop_grace_ms;           /* time running steps get on stop; 0: 30 s */
    int64_t retention_ms;            /* run directories unchanged this long are removed; 0: 7 d */
    int64_t sweep_interval_ms;       /* how often they are looked for; 0: retention / 4, at most
                                      * 1 h */
    const struct kube_options *kube; /* the kubernetes executor's settings (required for it;
                                      * copied by worker_start()) */

    /* local: the artifact repository (worker/artifacts.h); borrowed, it must outlive
     * worker_join(); NULL: none */
    struct artifacts_repo *artifacts;
};

struct worker;
struct artifacts_repo;

/*
 * Validates o, connects to Redis (three connections: reading steps, reading cancels,
 * publishing), creates the step queue's consumer group and the local executor's roots,
 * and starts the worker's threads. Blocks until then (up to the queue's connect and
 * command timeouts). Returns 0 and sets *out, SL_EINVAL for bad options (logged; for the
 * kubernetes executor also credentials that do not load or settings that build no Pod,
 * checked before Redis is touched), SL_ECONN if Redis cannot be reached now (later outages
 * are ridden out), SL_EIO if a root directory cannot be created.
 */
int worker_start(struct worker **out, const struct worker_options *o);

/* Asks w to stop, as described above; a second call cuts the grace period short. Returns
 * at once. Thread-safe, not async-signal-safe. */
void worker_stop(struct worker *w);

/* Waits up to timeout_ms (0: just looks; < 0: forever) for w to have stopped. Returns 0
 * once it has (worker_join() then returns at once), else SL_ETIMEDOUT. Thread-safe. */
int worker_wait(struct worker *w, int64_t timeout_ms);

/* Waits until w has stopped (after worker_stop()), then frees it. Returns 0, or a negative
 * code if the worker had to end on an error. Call exactly once, from any thread but w's. */
int worker_join(struct worker *w);

/* The worker's id (its consumer name); valid until worker_join(). */
const char *worker_id(const struct worker *w);

/* "local" -> WORKER_EXEC_LOCAL, "noop" -> WORKER_EXEC_NOOP, "kubernetes" ->
 * WORKER_EXEC_KUBERNETES; 0 or SL_EINVAL. */
int worker_executor_parse(enum worker_executor *out, const char *name);
/* "local", "noop" or "kubernetes"; static. */
const char *worker_executor_name(enum worker_executor e);

/*
 * Parses a GPU list: "" (none) or comma-separated distinct device ids 0..65535, like
 * "0,1,3". Returns 0 and sets *out (newly allocated, caller frees; NULL when none) and
 * *n, or SL_EINVAL.
 */
int worker_parse_gpus(int **out, size_t *n, const char *s);

#endif
