/*
 * queue/queue_int.h - what the files of queue/ share: the connection (conn.c), the
 * Lua scripts (scripts.c) and the command builder. Not for other modules.
 */
#ifndef SLUICE_QUEUE_QUEUE_INT_H
#define SLUICE_QUEUE_QUEUE_INT_H

#include "queue/queue.h"
#include "common/arena.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>

#define QUEUE_LOG "queue" /* the log component */

/* --- URLs (conn.c) ------------------------------------------------------------------- */

struct queue_url {
    char *host;      /* TCP host name or address (IPv6 without brackets), or NULL */
    int port;        /* TCP port */
    char *unix_path; /* unix socket path, or NULL for TCP */
    char *user;      /* ACL user name, or NULL */
    char *password;  /* or NULL; never logged */
    int db;          /* SELECT this database unless 0 */
};

/* Parses url (see queue_open()). Returns 0 and fills *out (free with queue_url_release())
 * or SL_EINVAL, with the reason written to reason (reason_len bytes). */
int queue_url_parse(struct queue_url *out, const char *url, char *reason, size_t reason_len);
void queue_url_release(struct queue_url *u);
/* The URL without credentials, for log lines; newly allocated, caller frees. */
char *queue_url_describe(const struct queue_url *u);

/* --- Scripts (scripts.c) -------------------------------------------------------------- */

enum queue_script {
    QUEUE_SCRIPT_DISPATCH,
    QUEUE_SCRIPT_HAS_MESSAGE,
    QUEUE_SCRIPT_WITHDRAW,
    QUEUE_SCRIPT_ACK_STEP,
    QUEUE_SCRIPT_REFRESH,
    QUEUE_SCRIPT_ACK_EVENTS,
    QUEUE_SCRIPT_HEARTBEAT,
    QUEUE_SCRIPT_LIST_WORKERS,
    QUEUE_SCRIPT_FORGET_WORKER,
    QUEUE_SCRIPT_STATS,
    QUEUE_SCRIPT_PUBLISH_EVENTS,
    QUEUE_SCRIPT_ACK_STEPS,
    QUEUE_SCRIPT_DISPATCH_MANY,
    QUEUE_NSCRIPTS
};

/* The Lua source of each script; static. */
extern const char *const queue_script_source[QUEUE_NSCRIPTS];

/* --- The connection ------------------------------------------------------------------ */

/*
 * States of struct queue (queue_set_state() asserts the transitions):
 *
 *   DISCONNECTED --connect ok--> CONNECTED --I/O error, timeout, close--> DISCONNECTED
 *
 *   DISCONNECTED: ctx is NULL. next_connect_ms is the earliest (monotonic) time of the
 *                 next attempt; a call waits for it, then tries once.
 *   CONNECTED:    ctx is an authenticated connection to the right database, with every
 *                 script loaded (shas[] valid); generation counts such connections.
 */
enum queue_state {
    QUEUE_DISCONNECTED,
    QUEUE_CONNECTED,
};

struct queue {
    enum queue_state state;
    redisContext *ctx; /* non-NULL iff CONNECTED */
    struct queue_url url;
    char *where; /* the URL without credentials, for logs */
    int connect_timeout_ms;
    int command_timeout_ms;
    int backoff_min_ms;
    int backoff_max_ms;
    int backoff_ms;          /* the next wait after a failed attempt */
    int64_t next_connect_ms; /* monotonic: no attempt before this */
    bool down_logged;        /* the outage was logged; quiet until reconnected */
    int socket_timeout_ms;   /* what is set on ctx now */
    uint64_t generation;     /* connections made so far; readers notice reconnects */
    uint64_t rng;            /* xorshift state for the backoff jitter */
    char shas[QUEUE_NSCRIPTS][41];

    char *prefix;      /* key prefix, e.g. "sluice:" */
    char *key_events;  /* <prefix>events */
    char *key_cancel;  /* <prefix>cancel */
    char *key_workers; /* <prefix>workers: sorted set of last-seen times */
    char *key_msg;     /* <prefix>msg: hash attempt id -> "<entry id> <queue>" */

    /* queue_read_events(): replay of pending entries */
    char *ev_consumer;        /* the consumer of the last read, or NULL */
    uint64_t ev_generation;   /* the connection the replay state belongs to */
    bool ev_replaying;        /* reading pending entries (history), not new ones */
    bool ev_adopted;          /* the group's pending entries were claimed */
    struct queue_id ev_after; /* the replay continues after this id */
};

/* Connects if disconnected (waiting out the backoff unless now is true). Returns 0,
 * SL_ECONN, or SL_EINVAL if Redis refused AUTH or SELECT. */
int queue_connect(struct queue *q, bool now);
/* Drops the connection (if any), logging why; the next call reconnects. */
void queue_disconnect(struct queue *q, const char *why);

/* --- Commands ------------------------------------------------------------------------ */

/* An argument vector under construction; formatted arguments live in its arena. */
struct queue_cmd {
    int argc;
    size_t alloc;
    const char **argv;
    size_t *lens;
    struct arena mem;
};

void queue_cmd_init(struct queue_cmd *c);
void queue_cmd_release(struct queue_cmd *c);
/* Adds s (not copied: it must outlive the command). */
void queue_cmd_add(struct queue_cmd *c, const char *s);
void queue_cmd_addb(struct queue_cmd *c, const void *data, size_t len);
/* Adds a formatted argument (copied into the command's arena). */
void queue_cmd_addf(struct queue_cmd *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Starts an EVALSHA of script with nkeys keys; add the keys, then the arguments. */
void queue_cmd_init_script(struct queue_cmd *c, enum queue_script script, int nkeys);

/*
 * Runs cmd and returns its reply in *out (freeReplyObject() it), which may be an error
 * reply. Connects first if needed. A connection already open that turns out dead is
 * replaced at once and the command sent again, once. A script whose sha Redis does not
 * know (NOSCRIPT, after SCRIPT FLUSH) is sent again as EVAL. block_ms is added to the
 * command timeout for blocking reads. Returns 0 or SL_ECONN (whatever made connecting
 * fail: the log says what).
 */
int queue_run(redisReply **out, struct queue *q, struct queue_cmd *cmd, int block_ms);

/* Whether r is an error reply whose code is code ("NOGROUP", "BUSYGROUP", ...). */
bool queue_reply_is(const redisReply *r, const char *code);
/* Logs an unexpected reply (an error or a wrong shape) to what, frees it and returns
 * SL_EIO. */
int queue_reply_fail(struct queue *q, redisReply *r, const char *what);

#endif
