/*
 * queue/queue.h - the Redis protocol between the scheduler and the workers: step
 * queues, events, cancels and heartbeats. queue/ is the only module that talks to
 * Redis; queue/README.md describes the keys, the message formats and who acks what.
 *
 * The API is synchronous and blocking. A struct queue is one Redis connection and is
 * used by one thread at a time (not thread-safe): the scheduler's and the workers'
 * loops each own one and call it with timeouts. Every call that talks to Redis:
 *
 *   - returns 0 or a negative code from common/error.h, and logs what went wrong;
 *   - never blocks longer than the reconnect backoff (backoff_max_ms, plus jitter) +
 *     connect_timeout_ms + command_timeout_ms (+ block_ms for reads), the last three
 *     twice when a dead connection is replaced mid-call (below). A call made while
 *     disconnected waits out the backoff and tries once to reconnect, so a loop that
 *     simply retries on SL_ECONN is paced, never a busy loop;
 *   - returns SL_ECONN when it could not complete: Redis unreachable, the connection
 *     lost or a reply overdue. Every operation here is safe to repeat (dispatch is
 *     idempotent per attempt id, acks and refreshes are idempotent, a repeated event
 *     or cancel is harmless by design), so when a connection that was already open
 *     turns out dead the call reconnects at once and runs again, once;
 *   - returns SL_EIO for an error reply from Redis (logged with its text), SL_EINVAL
 *     for a bad argument (a name outside the allowed characters, a count of zero).
 *
 * Consumer groups are created on demand (XGROUP CREATE ... 0 MKSTREAM): a read that
 * finds its group missing, as after a Redis restart without persistence, creates it
 * and reads again.
 *
 * Names used in keys - queue names, worker ids, consumer names - are 1 to
 * QUEUE_NAME_MAX bytes of [A-Za-z0-9._:@-]. Ids inside messages (attempt, run, dag,
 * step) are any 1 to QUEUE_NAME_MAX bytes without control characters.
 *
 * Ownership: decoded messages (struct queue_step_msg, queue_event_msg,
 * queue_cancel_msg) belong to whoever holds the pointer and are freed with their
 * *_free() function; a struct queue_batch owns every message still in it and
 * queue_batch_release() frees them all - take one out by copying its pointer and
 * setting the entry's field to NULL. Arguments are never retained after a call.
 */
#ifndef SLUICE_QUEUE_QUEUE_H
#define SLUICE_QUEUE_QUEUE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QUEUE_DEFAULT_PREFIX "sluice:"
#define QUEUE_STEP_GROUP     "workers"     /* the consumer group on every step queue */
#define QUEUE_EVENT_GROUP    "scheduler"   /* the consumer group on the events stream */
#define QUEUE_MSG_MAX_BYTES  (1024 * 1024) /* the largest encoded message, in bytes */
#define QUEUE_NAME_MAX       512           /* the longest name or id, in bytes */
#define QUEUE_READ_MAX       1000          /* the largest max_count of one read */
#define QUEUE_CANCEL_MAXLEN  10000         /* cancels retained (approximately: MAXLEN ~) */
#define QUEUE_REASON_BUFSZ   256           /* enough for any decode error reason */

/* A Redis stream entry id, "<ms>-<seq>", NUL-terminated. Plain data: copy freely. */
#define QUEUE_ID_BUFSZ 48
struct queue_id {
    char s[QUEUE_ID_BUFSZ];
};

struct queue;
struct strbuf;

/* --- Messages ------------------------------------------------------------------------ */

/* A step to run: one message on a step queue. */
struct queue_step_msg {
    char *attempt_id; /* unique per attempt; the message index and pod names use it */
    char *dag_id;
    char *run_id;
    char *step;
    int64_t map_index; /* index in a fanned-out (mapped) step, -1 for a plain step */
    int64_t attempt;   /* 1 for the first try, + 1 per retry */
    cJSON *spec;       /* the rendered step (image, argv, env, resources, ...): an object,
                        * opaque to queue/ */
};

enum queue_event_kind {
    QUEUE_EVENT_RUNNING,
    QUEUE_EVENT_SUCCEEDED,
    QUEUE_EVENT_FAILED,
};

/* What a worker reports about an attempt: one message on the events stream. */
struct queue_event_msg {
    char *attempt_id;
    enum queue_event_kind kind;
    char *worker_id;
    int64_t seq;         /* increases with every event the worker sends for the attempt */
    int64_t time_ms;     /* when the worker sent it, unix ms */
    int64_t started_ms;  /* when the step started, unix ms; 0 if unknown */
    int64_t finished_ms; /* when it ended (succeeded|failed), unix ms; 0 if not ended */
    bool has_exit_code;  /* false: no exit code (running, or the step never exited) */
    int exit_code;       /* meaningful only if has_exit_code */
    char *reason;        /* why it failed ("OOMKilled", "timeout", ...), or NULL */
    cJSON *outputs;      /* output parameters: an object. Encoding: NULL is omitted.
                          * Decoding: always an object, empty if the message had none */
    char *failure;       /* "step", "error", "transient" or "cancelled" (enum engine_failure)
                          * for failed events, or NULL (decoders: absent -> NULL) */
    char *log_path;      /* the attempt's log file on the worker's log volume, or NULL */
};

/* A request to stop running steps: one message on the cancel stream. */
struct queue_cancel_msg {
    char *run_id;     /* the run whose attempts are to stop */
    char *attempt_id; /* just this attempt, or NULL for every attempt of the run */
    char *reason;     /* free text for logs, or NULL */
    int64_t time_ms;  /* when it was sent, unix ms */
};

/*
 * Encoders append the message as compact JSON ({"v":1,...}, the formats are in
 * queue/README.md) to out. They do not take ownership of msg. Return 0, SL_EINVAL if
 * a field is invalid (a required id NULL, empty, too long or with control characters;
 * a negative time; spec or outputs not an object) or SL_ETOOBIG if the result would
 * exceed QUEUE_MSG_MAX_BYTES; on error out is unchanged.
 *
 * Decoders parse len bytes of data (which need not be NUL-terminated) strictly: JSON
 * with nothing after it, an object, "v" equal to 1, every required field present with
 * its type and range (unknown fields are ignored, so optional fields can be added
 * without a new version). They return 0 and set *out (the caller frees it with the
 * matching *_free()), or SL_ETOOBIG (over QUEUE_MSG_MAX_BYTES), SL_EPARSE (not JSON)
 * or SL_EINVALID (wrong shape) and, if reason is not NULL, write a one-line reason
 * there (truncated to reason_len bytes, QUEUE_REASON_BUFSZ suffice). Pure: no I/O,
 * any thread.
 */
int queue_step_msg_encode(struct strbuf *out, const struct queue_step_msg *msg);
int queue_step_msg_decode(struct queue_step_msg **out, const char *data, size_t len, char *reason,
                          size_t reason_len);
/* Frees msg and everything it points to; NULL is allowed. */
void queue_step_msg_free(struct queue_step_msg *msg);

int queue_event_msg_encode(struct strbuf *out, const struct queue_event_msg *msg);
int queue_event_msg_decode(struct queue_event_msg **out, const char *data, size_t len, char *reason,
                           size_t reason_len);
void queue_event_msg_free(struct queue_event_msg *msg);

int queue_cancel_msg_encode(struct strbuf *out, const struct queue_cancel_msg *msg);
int queue_cancel_msg_decode(struct queue_cancel_msg **out, const char *data, size_t len,
                            char *reason, size_t reason_len);
void queue_cancel_msg_free(struct queue_cancel_msg *msg);

/* "running", "succeeded", "failed"; static. */
const char *queue_event_kind_name(enum queue_event_kind kind);
/* The inverse; returns 0 or SL_EINVAL. */
int queue_event_kind_parse(enum queue_event_kind *out, const char *name);
/* Whether name is a valid queue_event_msg.failure: "step", "error", "transient" or
 * "cancelled". */
bool queue_event_failure_valid(const char *name);

/* --- Batches of received entries --------------------------------------------------- */

/*
 * One stream entry as read. Exactly one of the message pointers (the one matching the
 * read: step, event or cancel) or error is set. error means the entry was malformed
 * (not JSON, a wrong version, a missing field, oversized, no "m" field, deleted): the
 * caller logs it and acknowledges it like any other entry, so it does not come back.
 */
struct queue_entry {
    struct queue_id id;
    struct queue_step_msg *step;
    struct queue_event_msg *event;
    struct queue_cancel_msg *cancel;
    char *error; /* why the entry could not be decoded, or NULL */
};

struct queue_batch {
    struct queue_entry *entries; /* public: n of them, in stream order */
    size_t n;                    /* public */
    size_t n_deleted;            /* public, queue_takeover() only: pending entries that had
                                  * been deleted; Redis dropped them from the pending list */
    size_t alloc;                /* private */
};

#define QUEUE_BATCH_INIT                                                                           \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }

/* Frees every message and error still in b and leaves it empty (QUEUE_BATCH_INIT). */
void queue_batch_release(struct queue_batch *b);

/* --- Connection ---------------------------------------------------------------------- */

struct queue_options {
    const char *prefix;     /* prepended to every key; NULL: QUEUE_DEFAULT_PREFIX */
    int connect_timeout_ms; /* one connection attempt; 0: 2000 */
    int command_timeout_ms; /* one reply, on top of block_ms for reads; 0: 5000 */
    int backoff_min_ms;     /* first wait between reconnection attempts; 0: 100 */
    int backoff_max_ms;     /* the wait doubles up to this (then +-25% jitter); 0: 2000 */
};

/*
 * Connects to url, one of
 *   redis://[[user]:password@]host[:port][/db]   (port 6379, db 0 by default;
 *                                                 user and password %-encoded)
 *   unix:///path/to/redis.sock[?db=N]
 * authenticates, selects the database and loads the Lua scripts. opts may be NULL
 * (defaults); it is copied. Blocks up to connect_timeout_ms + command_timeout_ms.
 *
 * Returns 0 and sets *out (close it with queue_close()), SL_EINVAL for a malformed URL
 * or options or if Redis refused AUTH or SELECT, SL_ECONN if Redis could not be
 * reached. The password is never logged.
 */
int queue_open(struct queue **out, const char *url, const struct queue_options *opts);
/* Closes the connection and frees q; NULL is allowed. */
void queue_close(struct queue *q);
/* Whether q currently holds an open connection (it may still turn out dead). No I/O. */
bool queue_is_connected(const struct queue *q);
/* PING; reconnects if needed. Returns 0 or SL_ECONN. */
int queue_ping(struct queue *q);

/* --- Step queues (scheduler: dispatch; workers: everything else) --------------------- */

/*
 * Creates the consumer group QUEUE_STEP_GROUP on queue_name's stream (and the stream
 * itself) if missing, reading from the start of the stream. Idempotent. Reads create
 * groups on demand, so calling this is optional (a worker may at start-up, to fail
 * early).
 */
int queue_ensure_step_group(struct queue *q, const char *queue_name);

/*
 * Sends msg to queue_name (XADD) and records attempt id -> entry in the message index,
 * atomically. Idempotent per attempt id: if the index already holds a message for
 * msg->attempt_id that still exists, nothing is sent and SL_EEXIST is returned. Either
 * way *out_id (may be NULL) gets the message's entry id. Also SL_EINVAL or SL_ETOOBIG
 * as queue_step_msg_encode(). An attempt is sent to one queue only.
 */
int queue_dispatch(struct queue_id *out_id, struct queue *q, const char *queue_name,
                   const struct queue_step_msg *msg);

/*
 * queue_dispatch() for n messages to one queue, in one round trip per
 * QUEUE_READ_MAX messages (a Lua script does each dispatch). results[i] (may be NULL)
 * gets 0 (sent) or SL_EEXIST (its attempt already had a message). Returns 0; SL_EINVAL or
 * SL_ETOOBIG if a message cannot be encoded (then nothing is sent); SL_ECONN or SL_EIO,
 * after which some chunks may have been sent - repeating the call is harmless.
 */
int queue_dispatch_many(int *results, struct queue *q, const char *queue_name,
                        const struct queue_step_msg *msgs, size_t n);

/*
 * Whether queue_name holds a message for attempt_id (queued or being run), in O(1)
 * through the message index. An index record whose entry no longer exists is removed
 * and reported as false. For the reconciler: a `queued` step with no message is re-sent.
 */
int queue_has_message(bool *out, struct queue *q, const char *queue_name, const char *attempt_id);

/*
 * Removes attempt_id's message from queue_name, whether it waits or a worker has it
 * (acknowledged and deleted, index record removed). *out_removed (may be NULL) tells
 * whether there was one. For cancelling queued steps; a worker that already started
 * the step is stopped by the cancel (queue_publish_cancel()), and its queue_refresh()
 * sees QUEUE_OWNER_NONE.
 */
int queue_withdraw(bool *out_removed, struct queue *q, const char *queue_name,
                   const char *attempt_id);

/*
 * Reads up to max_count (1..QUEUE_READ_MAX) new messages for consumer (the worker id)
 * from queue_name (XREADGROUP ... >), waiting up to block_ms (0: do not wait) for the
 * first. Each becomes pending for consumer until queue_ack_step(). Only new messages
 * are read: messages pending for a consumer that died (or a reply lost with the
 * connection) come back through queue_takeover() once idle.
 *
 * On success *out holds the entries, possibly none, with .step or .error set (see
 * struct queue_entry). *out is overwritten, not released: pass an empty or released
 * batch. On failure *out is empty.
 */
int queue_read_steps(struct queue_batch *out, struct queue *q, const char *queue_name,
                     const char *consumer, size_t max_count, int block_ms);

/*
 * Acknowledges and deletes the entry id from queue_name (XACK + XDEL) and removes its
 * message index record, atomically. For a worker after it published the final event,
 * and for malformed entries. Idempotent: an unknown id is not an error.
 */
int queue_ack_step(struct queue *q, const char *queue_name, const struct queue_id *id);
/* queue_ack_step() for the n_ids entries ids[0..n_ids) of queue_name, with one script call
 * per QUEUE_READ_MAX ids. Idempotent. */
int queue_ack_steps(struct queue *q, const char *queue_name, const struct queue_id *ids,
                    size_t n_ids);

/* Who holds a step entry, as queue_refresh() found it. */
enum queue_owner {
    QUEUE_OWNER_NONE,  /* pending for nobody: acked, withdrawn, deleted, or lost with Redis's
                        * data. Keep running the step and report it as usual */
    QUEUE_OWNER_SELF,  /* pending for this consumer: refreshed */
    QUEUE_OWNER_OTHER, /* pending for another consumer, which took it over after this one
                        * stalled past the visibility timeout: that one runs the attempt now */
};

/*
 * Resets the idle time of the n_ids entries that consumer is running (XCLAIM ... 0
 * JUSTID), so no one takes them over; call it well within the visibility timeout (e.g.
 * every third of it). Never steals: an entry pending for another consumer is left alone.
 * If out_owner is not NULL it receives one enum queue_owner per id.
 */
int queue_refresh(enum queue_owner *out_owner, struct queue *q, const char *queue_name,
                  const char *consumer, const struct queue_id *ids, size_t n_ids);

/*
 * Claims for consumer up to max_count (1..QUEUE_READ_MAX) messages of queue_name that
 * have been pending, unrefreshed, for at least min_idle_ms (the visibility timeout)
 * - their worker died or stalled (XAUTOCLAIM). On success *out holds them like
 * queue_read_steps() would; out->n_deleted counts pending entries that had been
 * deleted meanwhile (Redis 7 drops them from the pending list and reports them). Each
 * claim counts as a delivery: the attempt may already have a pod or process, which the
 * worker adopts.
 */
int queue_takeover(struct queue_batch *out, struct queue *q, const char *queue_name,
                   const char *consumer, int64_t min_idle_ms, size_t max_count);

/* --- Events (workers: publish; scheduler: read and ack) ------------------------------ */

/* Creates the consumer group QUEUE_EVENT_GROUP on the events stream if missing. */
int queue_ensure_event_group(struct queue *q);

/* Appends ev to the events stream (XADD, never trimmed: events are deleted once acked).
 * *out_id (may be NULL) gets its entry id. SL_EINVAL or SL_ETOOBIG as the encoder. */
int queue_publish_event(struct queue_id *out_id, struct queue *q, const struct queue_event_msg *ev);

/*
 * Appends the n events evs[0..n) (an array of structs, read only) to the events stream,
 * in order, with one script call per QUEUE_READ_MAX events (or per 8 MiB of messages): for
 * a worker that reports many steps at once. out_ids (may be NULL) gets n entry ids. Every
 * event is encoded first: if one is invalid, nothing is sent, the result is SL_EINVAL or
 * SL_ETOOBIG as the encoder's and *out_bad (may be NULL) is its index. A failure after the
 * first call may leave the events of the earlier calls published; sending them again is
 * harmless (a repeated event is ignored by the run engine).
 */
int queue_publish_events(struct queue_id *out_ids, size_t *out_bad, struct queue *q,
                         const struct queue_event_msg *evs, size_t n);

/*
 * Reads up to max_count (1..QUEUE_READ_MAX) events for consumer through the group
 * QUEUE_EVENT_GROUP, waiting up to block_ms (0: do not wait). Entries read but not
 * acknowledged come back first: the first read after queue_open(), after a reconnect,
 * after a change of consumer name or after queue_rewind_events() takes over every
 * entry pending in the group (whatever consumer read it: only the elected scheduler
 * reads events, so a new leader inherits what the old one left), returns those
 * (oldest first, without waiting) until none are left, and only then reads new
 * entries. So a scheduler that crashes between reading and acknowledging sees the
 * same events again. *out as in queue_read_steps(), with .event or .error set.
 */
int queue_read_events(struct queue_batch *out, struct queue *q, const char *consumer,
                      size_t max_count, int block_ms);

/* Makes the next queue_read_events() start again from the pending entries: for a
 * scheduler whose transaction failed after reading a batch. No I/O. */
void queue_rewind_events(struct queue *q);

/* Acknowledges and deletes the n_ids events (XACK + XDEL, atomically). Idempotent. */
int queue_ack_events(struct queue *q, const struct queue_id *ids, size_t n_ids);

/* --- Cancels (scheduler: publish; workers: read) ------------------------------------- */

/*
 * Appends c to the cancel stream, capped at about QUEUE_CANCEL_MAXLEN entries
 * (XADD MAXLEN ~). *out_id may be NULL. SL_EINVAL or SL_ETOOBIG as the encoder.
 */
int queue_publish_cancel(struct queue_id *out_id, struct queue *q,
                         const struct queue_cancel_msg *c);

/*
 * Reads up to max_count (1..QUEUE_READ_MAX) cancels that follow *last_id (XREAD, no
 * group: every worker sees every cancel), waiting up to block_ms (0: do not wait), and
 * advances *last_id past them. Start with last_id->s empty ("") to begin at the
 * stream's current end, or "0-0" for everything retained. Keeping last_id across
 * calls, reconnects and queue_close()/queue_open() means no cancel is missed while a
 * worker is disconnected, unless more than QUEUE_CANCEL_MAXLEN arrive meanwhile.
 * *out as in queue_read_steps(), with .cancel or .error set; *last_id changes only
 * on success.
 */
int queue_read_cancels(struct queue_batch *out, struct queue *q, struct queue_id *last_id,
                       size_t max_count, int block_ms);

/* --- Worker heartbeats ----------------------------------------------------------------- */

struct queue_worker {
    char *id;
    int64_t last_seen_ms; /* Redis server time of its last heartbeat, unix ms */
    bool alive;           /* its heartbeat key has not expired */
    cJSON *info;          /* what its last heartbeat carried, or NULL if !alive */
};

struct queue_workers {
    struct queue_worker *items; /* public: n of them, sorted by last_seen_ms */
    size_t n;                   /* public */
    int64_t now_ms;             /* public: Redis server time when listed, unix ms */
};

/*
 * Records that worker_id is alive: sets its key with info (an object, NULL for {}) to
 * expire after ttl_ms (> 0), and its last-seen time in the workers set, atomically.
 * Times come from the Redis server's clock, so workers' clock skew does not matter;
 * *out_now_ms (may be NULL) gets it.
 */
int queue_heartbeat(int64_t *out_now_ms, struct queue *q, const char *worker_id, int64_t ttl_ms,
                    const cJSON *info);

/*
 * Lists every worker that ever heartbeated and was not forgotten, with whether its key
 * still lives: a worker that is !alive, or whose now_ms - last_seen_ms exceeds the
 * heartbeat timeout, is dead. *out is overwritten; free it with queue_workers_release().
 */
int queue_list_workers(struct queue_workers *out, struct queue *q);
void queue_workers_release(struct queue_workers *w);
/* Removes worker_id's key and last-seen record (a dead worker, once handled). */
int queue_forget_worker(struct queue *q, const char *worker_id);

/* --- Metrics ------------------------------------------------------------------------- */

struct queue_stats {
    int64_t length;            /* entries in the stream (XLEN) */
    int64_t pending;           /* delivered to the group's consumers, not acknowledged */
    int64_t waiting;           /* not yet delivered: length - pending */
    int64_t oldest_waiting_ms; /* when the oldest undelivered entry was added (server
                                * clock, unix ms), 0 if none waits */
};

/* Stats of queue_name's stream and group QUEUE_STEP_GROUP. */
int queue_step_stats(struct queue_stats *out, struct queue *q, const char *queue_name);
/* Stats of the events stream and group QUEUE_EVENT_GROUP. */
int queue_event_stats(struct queue_stats *out, struct queue *q);

#endif
