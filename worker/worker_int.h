/*
 * worker/worker_int.h - what the files of the worker daemon share: struct worker, the
 * hand-offs between its threads, and the directory helpers. Not for other modules.
 *
 *   worker.c         the API, the loop thread: jobs, executors, timers, stop
 *   worker_redis.c   the three Redis threads: reader, cancels, publisher
 *   workdir.c        log paths, run and attempt directories, the retention sweep
 *
 * Threads and what they own (worker/README.md has the picture):
 *
 *   loop thread      uv loop, jobs, executors, GPUs, timers; q == none: it never blocks
 *   reader thread    q_read: XREADGROUP up to the free slots, XAUTOCLAIM, acks of
 *                    malformed entries
 *   cancel thread    q_cancel: XREAD of the cancel stream
 *   publisher thread q_pub: events, acks, refreshes, heartbeats, forget at the end
 *
 * Everything under "shared" is read and written with lock held. The other threads hand
 * things to the loop thread by appending to a shared vector and calling
 * uv_async_send(&w->wake); the loop thread hands work to the publisher through the
 * outbox and pub_cond, and frees slots for the reader through held and reader_cond.
 */
#ifndef SLUICE_WORKER_WORKER_INT_H
#define SLUICE_WORKER_WORKER_INT_H

#include "worker/worker.h"
#include "queue/queue.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define WORKER_LOG           "worker" /* the log component */
#define WORKER_READ_BLOCK_MS 1000     /* one blocking read; bounds how long a stop waits */
#define WORKER_FLUSH_MS                                                                            \
    10000                          /* final events may still be published this long                \
                                    * after the grace period */
#define WORKER_PUBLISH_BATCH  4000 /* events taken by the publisher at once */
#define WORKER_RETRY_PAUSE_MS 500  /* after a failed Redis call that was not paced */

struct worker_job;
struct kube_ctx;

/* A step message, from the reader to the loop thread. */
struct worker_intake {
    struct queue_id id;
    struct queue_step_msg *msg; /* owned */
    bool taken_over;            /* by XAUTOCLAIM: may be a message this worker runs already */
};

/* A cancel, from the cancel thread to the loop thread. */
struct worker_cancel_in {
    struct queue_id id;
    struct queue_cancel_msg *msg; /* owned */
};

/* An event waiting to be published, from the loop thread to the publisher. */
struct worker_outbox_item {
    struct queue_event_msg *ev; /* owned by the outbox */
    struct worker_job *job;     /* final events: the job to complete, an opaque token that
                                 * the publisher never dereferences; else NULL */
    struct queue_id entry;      /* with job: its step entry, acked once ev is out */
};

/* A final event's fate, from the publisher to the loop thread. */
struct worker_done {
    struct worker_job *job;
    bool published; /* false: dropped at the end of a stop (logged) */
};

enum worker_state {
    WORKER_RUNNING,  /* reading and running steps */
    WORKER_DRAINING, /* stop asked: no new steps; running ones finish or are handed back */
    WORKER_CLOSING,  /* no job left: threads joined, handles closing */
};

struct worker {
    /* --- configuration: set by worker_start(), then read-only -------------------- */
    char *redis_url;
    char *key_prefix; /* or NULL */
    char *queue;
    char *id;
    char *host;
    size_t slots;
    enum worker_executor executor;
    int *gpus;
    size_t n_gpus;
    char *log_root, *work_root, *secrets_dir; /* absolute */
    int64_t kill_grace_ms, visibility_ms, heartbeat_ms, stop_grace_ms, retention_ms, sweep_ms,
        takeover_ms;
    struct artifacts_repo *artifacts; /* borrowed from the options; NULL: none */

    /* --- threads and their connections --------------------------------------------- */
    uv_thread_t loop_thread, reader_thread, cancel_thread, publisher_thread;
    bool loop_started, reader_started, cancel_started, publisher_started;
    struct queue *q_read, *q_cancel, *q_pub; /* each used by its thread only */
    struct queue_id cancel_after;            /* the cancel thread's position */

    /* --- shared, under lock ---------------------------------------------------------- */
    uv_mutex_t lock;
    uv_cond_t reader_cond; /* held went down, or reader_stop */
    uv_cond_t pub_cond;    /* outbox, refresh or heartbeat has work, or pub_stop */
    size_t held;           /* steps handed to the loop thread and not released yet */
    bool reader_stop, cancel_stop, pub_stop;
    int stop_requests;     /* worker_stop() calls */
    bool wake_closed;      /* w->wake is closed: worker_stop() must not touch it */
    int64_t abandon_at_ms; /* monotonic: final events still unpublished then are
                            * dropped; 0: never */
    struct worker_intake *intake;
    size_t n_intake, alloc_intake;
    struct worker_cancel_in *cancels;
    size_t n_cancels, alloc_cancels;
    struct worker_outbox_item *outbox; /* [outbox_head, n_outbox) wait, in order */
    size_t outbox_head, n_outbox, alloc_outbox;
    struct worker_done *done;
    size_t n_done, alloc_done;
    struct queue_id *refresh_ids; /* a refresh to make (the latest one wins) */
    uint64_t *refresh_serials;    /* the jobs they belong to */
    size_t n_refresh;
    bool refresh_pending;
    cJSON *heartbeat; /* info of a heartbeat to send (the latest wins), or NULL */
    uint64_t *lost;   /* serials of jobs another consumer took over */
    size_t n_lost, alloc_lost;
    int result;           /* the first fatal error, or 0 */
    bool ended;           /* the loop thread is done */
    uv_cond_t ended_cond; /* signalled when ended is set */

    /* --- the directories: held by the threadpool while creating or sweeping ---------- */
    uv_mutex_t dirs_lock;
    atomic_int sweep_stop; /* set on stop: a sweep in progress ends early */

    /* --- loop thread only ---------------------------------------------------------- */
    uv_loop_t loop;
    struct kube_ctx *kube; /* the kubernetes executor's context, or NULL */
    uv_async_t wake;
    uv_check_t flush;   /* end of each loop iteration: staged events to the outbox */
    uv_timer_t t_beat;  /* heartbeat */
    uv_timer_t t_fresh; /* refresh of held messages */
    uv_timer_t t_sweep; /* retention sweep */
    uv_timer_t t_grace; /* the stop's grace period */
    enum worker_state state;
    struct worker_job *jobs; /* every job, a doubly linked list */
    size_t n_jobs;
    uint64_t next_serial;
    bool *gpu_busy;                         /* per w->gpus entry */
    struct worker_job *gpu_head, *gpu_tail; /* jobs waiting for GPUs, in arrival order */
    struct worker_outbox_item *staged;      /* events made in this loop iteration */
    size_t n_staged, alloc_staged;
    struct worker_recent_cancel *recent; /* ring of the last WORKER_RECENT_CANCELS */
    size_t n_recent, recent_next;
    bool sweeping;
    bool handed_back_all; /* the grace period is over */
};

/* --- worker_redis.c ------------------------------------------------------------------- */

void worker_reader_main(void *arg);
void worker_cancel_main(void *arg);
void worker_publisher_main(void *arg);

/* Monotonic milliseconds (for deadlines across threads). */
int64_t worker_mono_ms(void);
/* Wall-clock unix milliseconds (for events). */
int64_t worker_wall_ms(void);

/* --- workdir.c ------------------------------------------------------------------------ */

/*
 * s made safe as one path component: '/' becomes '_', "", "." and ".." get a leading '_',
 * and a name over 200 bytes is cut to 183 bytes + '~' + 16 hex digits of its FNV-1a
 * hash, so distinct names stay distinct. Newly allocated.
 */
char *worker_path_component(const char *s);
/* <log_root>/<dag>/<run>/<step>/<attempt>.log, or .../<step>/<map_index>.<attempt>.log
 * for a fanned-out step; newly allocated. */
char *worker_log_path(const char *log_root, const struct queue_step_msg *m);
/* <work_root>/<dag>/<run>; newly allocated. */
char *worker_run_dir(const char *work_root, const struct queue_step_msg *m);
/* <run_dir>/.attempts/<step>/<attempt> (or <map_index>.<attempt>); newly allocated. */
char *worker_attempt_dir(const char *run_dir, const struct queue_step_msg *m);
/* mkdir -p of both, and the run directory's mtime set to now (its retention restarts).
 * Blocking file I/O: threadpool only. Returns 0 or -errno. */
int worker_dirs_prepare(const char *run_dir, const char *attempt_dir);
/* mkdir -p path (mode 0755). Returns 0 or -errno. */
int worker_mkdir_p(const char *path);

struct worker_sweep_stats {
    size_t removed; /* run directories removed */
    size_t kept;    /* old enough but in use */
    size_t errors;  /* that could not be removed (logged) */
};

/*
 * Removes every run directory <work_root>/<dag>/<run> whose mtime is before cutoff_s (unix
 * seconds), except the n_keep paths of keep (as worker_run_dir() writes them), then the
 * <dag> directories left empty. Only real directories are considered and entered:
 * symbolic links are removed, never followed, and every directory is opened relative to
 * its parent with O_NOFOLLOW, so nothing outside work_root is touched. Each run directory
 * is checked and removed with lock held (worker_dirs_prepare() runs under it too). Stops
 * early when *stop becomes non-zero. Blocking file I/O: threadpool only.
 */
void worker_dirs_sweep(struct worker_sweep_stats *out, const char *work_root, int64_t cutoff_s,
                       const char *const *keep, size_t n_keep, uv_mutex_t *lock, atomic_int *stop);

#endif
