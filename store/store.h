/*
 * store/store.h - PostgreSQL, the source of truth: DAG versions, runs, step instances.
 *
 * This header is the contract of store/ for every other module; store/README.md draws the
 * schema and explains the invariants, the reconnect logic and which index serves which
 * query. store/ is the only module that links libpq, and every statement it sends is
 * parameterized (PQexecParams, or PQprepare + PQexecPrepared): no SQL text is ever built
 * from a value.
 *
 * Threads: a struct store is one database session used synchronously by one thread. Every
 * call blocks until PostgreSQL answers (bounded by the statement timeout). A thread that
 * needs the database opens its own struct store; two threads never share one.
 *
 * Errors: every function that can fail returns 0 or a negative code from common/error.h,
 * sets its output parameters only on success, and leaves a lower-case message with its
 * context in store_errmsg(). The codes mean the same everywhere:
 *
 *   SL_EINVAL     an argument is malformed (a bad run_id, params that are not a JSON
 *                 object), a CHECK constraint refused a value, or a transaction misuse
 *   SL_ENOENT     the named DAG, version or run does not exist
 *   SL_EEXIST     a unique key is taken by something different (see store_run_create)
 *   SL_ETOOBIG    a value is over its size limit
 *   SL_ECONFLICT  a concurrent change conflicts (serialization failure, deadlock, a DAG
 *                 name defined by two files): retrying the whole operation may succeed
 *   SL_ETIMEDOUT  the statement timeout (or lock timeout) cancelled a statement
 *   SL_ECONN      the database cannot be reached within the reconnect budget, or the
 *                 connection was lost inside a transaction (which the server rolled back)
 *   SL_ERANGE     the database schema is newer than this binary (store_migrate)
 *   STORE_EUNKNOWN  the outcome of a COMMIT is unknown (below); only store_commit()
 *   SL_EINTERNAL  anything else PostgreSQL refused: a bug in store/ or a broken database
 *
 * Lost connections. Outside a transaction, every call survives a lost connection: the
 * store reconnects with exponential backoff (bounded by store_options.reconnect_wait_ms),
 * prepares its statements again, and repeats the statement. That is safe because every
 * operation here is idempotent (an upsert, an INSERT ... ON CONFLICT DO NOTHING followed
 * by a SELECT, a keyed UPDATE), and multi-statement operations run in their own
 * transaction that is repeated whole. Inside a transaction opened by store_begin(), a lost
 * connection cannot be hidden: the server has rolled the transaction back, so the call
 * returns SL_ECONN and every later call fails the same way until store_rollback().
 *
 * Unknown commits. If the connection drops after COMMIT was sent and before its answer
 * arrived, nobody can tell whether the transaction committed. store_commit() then returns
 * STORE_EUNKNOWN: the caller must re-read the state it wrote (from the next call on, the
 * store reconnects) and must not assume either outcome. Operations the store runs in its
 * own transactions resolve this themselves by repeating the idempotent operation.
 *
 * Timestamps cross this API as int64_t unix milliseconds (UTC); STORE_NO_TIME stands for
 * SQL NULL. JSON crosses it as text: what the store returns is PostgreSQL's canonical
 * jsonb text (keys sorted, numbers exact), equal as JSON to what was stored.
 *
 * Memory: results (strings, arrays) are allocated in the caller's arena, passed as mem,
 * and live until the caller releases it. The store owns nothing the caller must free
 * except itself (store_close()).
 */
#ifndef SLUICE_STORE_STORE_H
#define SLUICE_STORE_STORE_H

#include "common/arena.h"
#include "common/error.h"
#include "common/strbuf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The outcome of a transaction is unknown: the connection was lost while COMMIT was in
 * flight. Only store_commit() returns it, and no other store function ever returns
 * SL_EIO, so the value is unambiguous. The caller must re-read what it wrote.
 */
#define STORE_EUNKNOWN SL_EIO

/* A NULL timestamp. */
#define STORE_NO_TIME INT64_MIN

/* The largest params (or conf) document store_run_create() accepts, in bytes of JSON. */
#define STORE_PARAMS_MAX_BYTES ((size_t)1 << 20)
/* The largest output_params document of a step instance or attempt (enforced by CHECK). */
#define STORE_OUTPUT_PARAMS_MAX_BYTES 65536

/* Advisory lock keys (pg_advisory_lock) of sluice, "sluice" in ASCII then a number. */
#define STORE_LOCK_MIGRATE INT64_C(0x736c756963650001) /* held by store_migrate() */
#define STORE_LOCK_LEADER                                                                          \
    INT64_C(0x736c756963650002) /* the scheduler's leader (store_leader_try) */

struct store;

/* --- connection ----------------------------------------------------------------------- */

struct store_options {
    int connect_timeout_s;        /* per connection attempt (libpq connect_timeout); def. 5 */
    int statement_timeout_ms;     /* per statement; 0 = none; default 30000 */
    int lock_timeout_ms;          /* waiting for a row or table lock; 0 = none (default) */
    int reconnect_wait_ms;        /* total time one call may spend reconnecting; def. 30000;
                                     0 = a single attempt */
    int reconnect_delay_ms;       /* first pause between attempts, doubling; default 50 */
    int reconnect_max_delay_ms;   /* longest pause between attempts; default 2000 */
    const char *application_name; /* pg_stat_activity.application_name; default "sluice" */
};

/* The defaults above: struct store_options o = STORE_OPTIONS_INIT; */
#define STORE_OPTIONS_INIT                                                                         \
    {                                                                                              \
        5, 30000, 0, 30000, 50, 2000, "sluice"                                                     \
    }

/*
 * Connects to the database at url, a libpq URL or key=value string
 * ("postgresql://user:secret@host:5432/sluice?sslmode=require"). Parameters in the URL win
 * over the options (e.g. ?connect_timeout=2&application_name=x). The first connection is
 * retried with backoff like a reconnect, so a daemon may start before its database.
 * opts may be NULL (the defaults); the strings in it are copied.
 *
 * On success sets *out (free with store_close()) and returns 0. Otherwise returns SL_EINVAL
 * (the URL cannot be parsed) or SL_ECONN, and, if err is not NULL, appends the reason to
 * it. The URL's password never appears in a message or a log line.
 */
int store_open(struct store **out, const char *url, const struct store_options *opts,
               struct strbuf *err);
/* Closes the connection (rolling back an open transaction) and frees st. NULL is fine. */
void store_close(struct store *st);

/* The message of the last failed call on st: lower-case, with context, never a secret.
 * Owned by st, valid until the next call. "" when the last call succeeded. */
const char *store_errmsg(const struct store *st);
/* A printable description of the database, "host=... port=... dbname=... user=...",
 * without the password; owned by st. */
const char *store_target(const struct store *st);
/* The server process of the current connection (pg_backend_pid()), 0 when disconnected. */
int store_backend_pid(const struct store *st);
/* Counts connections made: 1 after store_open(), +1 per reconnect. Session state
 * (advisory locks, SET) lives in one generation; a change means it is gone. */
uint64_t store_generation(const struct store *st);

/*
 * Session binding, for work that lives in the session rather than in rows: advisory
 * locks, above all the scheduler's leader lock (DESIGN.md: a scheduler that lost its
 * session must not commit). While bound, a lost connection is not replaced: every call
 * fails with SL_ECONN ("session lost") until store_session_unbind(), after which the next
 * call reconnects. The leader code binds after taking its lock, and on SL_ECONN with
 * store_session_lost() unbinds, reconnects and competes for the lock again.
 */
void store_session_bind(struct store *st);
void store_session_unbind(struct store *st);
/* true if st is bound and its connection was lost. */
bool store_session_lost(const struct store *st);

/* --- transactions --------------------------------------------------------------------- */

/*
 * Opens a transaction (READ COMMITTED). Every store call until store_commit() or
 * store_rollback() runs inside it, without the automatic repeat on a lost connection.
 * Returns 0, SL_EINVAL (one is already open), or SL_ECONN.
 *
 * When a statement fails inside the transaction, PostgreSQL aborts it: from then on the
 * store refuses statements (SL_EINVAL) and store_commit() rolls back and returns
 * SL_EINVAL, so only store_rollback() is useful. Answers the store decides itself leave
 * the transaction usable: argument checks, SL_ENOENT of lookups and keyed updates,
 * SL_EEXIST of store_run_create(), SL_ECONFLICT of store_dag_put_version().
 */
int store_begin(struct store *st);
/*
 * Commits. Returns 0 (committed); SL_EINVAL (no transaction, or it had been aborted by an
 * earlier error and is now rolled back); SL_ECONN (the connection was lost before COMMIT:
 * the server rolled the transaction back); STORE_EUNKNOWN (lost while COMMIT was in
 * flight: it may or may not have committed; re-read, do not assume); SL_ECONFLICT
 * (serialization failure or deadlock at commit: rolled back, retry it); SL_ETIMEDOUT.
 * In every case no transaction is open afterwards.
 */
int store_commit(struct store *st);
/* Rolls back; a lost connection has already done so and is not an error. Returns 0 or
 * SL_EINVAL (no transaction is open). */
int store_rollback(struct store *st);

/* --- schema --------------------------------------------------------------------------- */

/*
 * Brings the schema up to the newest version this binary knows. Holds the advisory lock
 * STORE_LOCK_MIGRATE on its session meanwhile, so concurrent callers (several schedulers
 * and API servers starting at once) wait for each other and apply each version once.
 * Creates schema_migrations if needed, then applies every missing version in order, each
 * in its own transaction together with its schema_migrations row. Statement timeouts are
 * off while it runs.
 *
 * Sets *out_version (may be NULL) to the schema version afterwards and *out_applied (may be NULL)
 * to the number of versions applied now. Returns 0; SL_ERANGE if the database is at a version newer
 * than this binary knows ("database schema is at version N but this sluice knows versions up to M;
 * upgrade sluice"); SL_ECONFLICT if an applied version's recorded checksum differs from this
 * binary's definition of it; SL_EINVAL inside a transaction; SL_ECONN; or the code of the failed
 * migration. A failed migration leaves the schema at the previous version.
 */
int store_migrate(struct store *st, int *out_version, int *out_applied);
/* Sets *out to the database's schema version: 0 when it has never been migrated. */
int store_schema_version(struct store *st, int *out);
/* The newest schema version this binary knows. */
int store_schema_latest(void);
/* Returns 0 if the schema is exactly store_schema_latest(), else SL_ERANGE with a message
 * telling to run `sluice db migrate` or to upgrade sluice. For daemons at start-up. */
int store_schema_check(struct store *st);

/* --- DAG registry --------------------------------------------------------------------- */

struct store_dag {
    const char *dag_id;
    bool is_paused;
    bool is_active;             /* false once its file is gone; never deleted */
    int64_t current_version_id; /* 0 until a version was put */
    const char *file_path;      /* the file that last defined it */
    int64_t created_at_ms;
    int64_t updated_at_ms;
    int64_t last_parsed_at_ms; /* or STORE_NO_TIME */
    int64_t last_scheduled_ms; /* logical time of its newest scheduled run, or STORE_NO_TIME */
};

struct store_dag_version {
    int64_t id;
    const char *dag_id;
    const char *content_hash; /* hex SHA-256 of the model's canonical jsonb text */
    const char *model_json;   /* the normalized model (dsl_dag_to_json) */
    const char *source;       /* the file's text when this version was first seen */
    const char *commit_sha;   /* or NULL */
    const char *file_path;
    int64_t created_at_ms;
};

struct store_dag_put {
    const char *dag_id;     /* the DAG's name, a DNS-1123 label */
    const char *file_path;  /* relative to the repository, e.g. "dags/iris.yaml" */
    const char *model_json; /* dsl_dag_to_json(); a JSON object */
    const char *source;     /* the file's text */
    const char *commit_sha; /* 40 or 64 hex digits, or NULL */
};

/*
 * Records a successfully parsed DAG file, in one transaction: creates the DAG (or marks it
 * active again and updates its file and last_parsed_at), inserts a version if no version of
 * this DAG has the same content hash, and makes that version current. The hash is SHA-256
 * of the model's canonical jsonb text, so a change of formatting or comments in the file
 * (or of the commit alone) makes no new version; a file reverted to an earlier content
 * makes that earlier version current again.
 *
 * Sets *out_version_id and *out_changed (true if the DAG's current version is different
 * now, including a DAG seen for the first time). Returns 0; SL_ECONFLICT if an active DAG
 * of that name is defined by another file (call store_dag_deactivate_missing() first, so
 * that a renamed file is not a conflict); SL_EINVAL (a bad name, model or commit); SL_ECONN.
 */
int store_dag_put_version(struct store *st, int64_t *out_version_id, bool *out_changed,
                          const struct store_dag_put *in);

/*
 * Deactivates every active DAG whose file_path is not among files[0..n_files), and deletes
 * the import errors of files not among them (their files are gone). Never deletes a DAG.
 * Sets *out_deactivated (may be NULL) to the number of DAGs deactivated now.
 */
int store_dag_deactivate_missing(struct store *st, size_t *out_deactivated,
                                 const char *const *files, size_t n_files);

/* Deactivates one DAG (its file no longer defines it). Sets *out_deactivated (may be NULL)
 * to whether it was active. Returns 0 or SL_ECONN. Never deletes a DAG. */
int store_dag_deactivate(struct store *st, bool *out_deactivated, const char *dag_id);
/* Pins the named DAGs' new runs to commit_sha (the Git sync, after each commit synced). */
int store_dags_set_commit(struct store *st, const char *commit_sha, const char *const *dag_ids,
                          size_t n);

/* Pauses or unpauses a DAG. Returns 0 or SL_ENOENT. */
int store_dag_set_paused(struct store *st, const char *dag_id, bool paused);
/* Every DAG (active or not), ordered by dag_id, into mem. */
int store_dag_list(struct store *st, struct store_dag **out, size_t *out_n, struct arena *mem);
/* One DAG. Returns 0 or SL_ENOENT. */
int store_dag_get(struct store *st, struct store_dag *out, const char *dag_id, struct arena *mem);
/* One version (a run is executed from its pinned version). Returns 0 or SL_ENOENT. */
int store_dag_version_get(struct store *st, struct store_dag_version *out, int64_t version_id,
                          struct arena *mem);

struct store_import_error_item {
    int line;            /* 1-based; 0 for the file as a whole */
    int col;             /* 1-based; 0 when unknown */
    const char *message; /* lower-case, no final period */
};

struct store_import_error {
    const char *file_path;
    const char *commit_sha;  /* or NULL */
    const char *errors_json; /* [{"line": 3, "col": 7, "message": "..."}, ...] */
    int64_t first_seen_ms;   /* since the file became invalid */
    int64_t last_seen_ms;
};

/* Records that file_path (at commit_sha, may be NULL) failed to parse with items[0..n).
 * Replaces the file's previous errors; keeps first_seen. The DAG's last good version stays
 * current. */
int store_import_error_set(struct store *st, const char *file_path, const char *commit_sha,
                           const struct store_import_error_item *items, size_t n);
/* Forgets the import error of file_path, if any (the file parses now). */
int store_import_error_clear(struct store *st, const char *file_path);
/* Every import error, ordered by file_path, into mem. */
int store_import_errors_list(struct store *st, struct store_import_error **out, size_t *out_n,
                             struct arena *mem);

/* --- runs ------------------------------------------------------------------------------ */

enum store_run_state {
    STORE_RUN_QUEUED,
    STORE_RUN_RUNNING,
    STORE_RUN_SUCCEEDED,
    STORE_RUN_FAILED,
    STORE_RUN_CANCELLING,
    STORE_RUN_CANCELLED,
};

enum store_trigger {
    STORE_TRIGGER_SCHEDULED, /* the cron ticker; unique per (dag_id, logical_time) */
    STORE_TRIGGER_MANUAL,    /* the API or `sluice trigger` */
    STORE_TRIGGER_BACKFILL,
    STORE_TRIGGER_RETRY,
};

struct store_run {
    int64_t id; /* run_pk: the key step instances, attempts and events refer to */
    const char *dag_id;
    const char *run_id; /* user-visible, unique per DAG */
    int64_t version_id; /* the DAG version the run is pinned to */
    enum store_run_state state;
    enum store_trigger trigger;
    int64_t logical_time_ms;
    const char *params_json;     /* a JSON object */
    const char *idempotency_key; /* or NULL */
    const char *conf_json;       /* or NULL */
    int64_t created_at_ms;
    int64_t started_at_ms;  /* or STORE_NO_TIME */
    int64_t ended_at_ms;    /* or STORE_NO_TIME; set exactly in the final states */
    const char *commit_sha; /* the commit the run is pinned to, or NULL (directory source) */
};

struct store_run_new {
    const char *dag_id;
    enum store_trigger trigger;
    int64_t logical_time_ms;     /* STORE_NO_TIME: now (not for scheduled runs) */
    const char *run_id;          /* NULL: generated (see store_run_create) */
    const char *idempotency_key; /* or NULL; at most 250 bytes */
    const char *params_json;     /* a JSON object, or NULL for {} */
    const char *conf_json;       /* any JSON, or NULL */
    int64_t version_id;          /* 0: the DAG's current version */
    const char *commit_sha;      /* NULL: the DAG's commit (store_dags_set_commit) */
};

/*
 * Creates a run in state queued, pinned to a version of its DAG, or finds the run this
 * request repeats. Race-free: INSERT ... ON CONFLICT DO NOTHING, then a SELECT of the row
 * that was in the way, so concurrent identical requests yield one run.
 *
 * A request repeats an existing run, which is then returned with *out_existed = true, if:
 *   - scheduled: a scheduled run of the DAG has the same logical time (a scheduler that
 *     restarts, or two that overlap, never double a run; params are not compared);
 *   - otherwise: the run has the same trigger and equal params (as JSON), and the same
 *     run_id if one was given, the same idempotency key if one was given, and the same
 *     logical time if one was given.
 * A request that collides with a run it does not repeat (same key or run_id, different
 * params) returns SL_EEXIST.
 *
 * run_id, when NULL, is generated: "scheduled__<logical time>" and
 * "backfill__<logical time>" (RFC 3339, UTC), "manual__<now>_<8 hex>" and
 * "retry__<now>_<8 hex>". A given run_id must match [A-Za-z0-9_.~:+-]{1,250} and only
 * scheduled runs may start with "scheduled__". If the connection is lost after the row was
 * inserted, the repeated statement finds it: *out_existed is then true for a run this call
 * created, unless the run_id was generated.
 *
 * Returns 0; SL_EEXIST; SL_ENOENT (no such DAG, the DAG has no version, or version_id is
 * not one of its versions); SL_EINVAL (bad run_id or key, params not an object, scheduled
 * without a logical time); SL_ETOOBIG (params or conf over STORE_PARAMS_MAX_BYTES); SL_ECONN.
 */
int store_run_create(struct store *st, struct store_run *out, bool *out_existed,
                     const struct store_run_new *in, struct arena *mem);
/* The run (dag_id, run_id). Returns 0 or SL_ENOENT. */
int store_run_get(struct store *st, struct store_run *out, const char *dag_id, const char *run_id,
                  struct arena *mem);
/* The run with primary key id. Returns 0 or SL_ENOENT. */
int store_run_get_by_pk(struct store *st, struct store_run *out, int64_t id, struct arena *mem);
/* The DAG's active runs (queued, running, cancelling), oldest first, into mem. */
int store_runs_active(struct store *st, struct store_run **out, size_t *out_n, const char *dag_id,
                      struct arena *mem);
/* Every active run (queued, running, cancelling) of every DAG, oldest first, into mem:
 * what a new leader restores, and how it learns of runs created or cancelled elsewhere. */
int store_runs_active_all(struct store *st, struct store_run **out, size_t *out_n,
                          struct arena *mem);
/*
 * Asks for the run to be cancelled: a queued or running run becomes cancelling (the
 * scheduler stops its steps and ends it cancelled). *out_changed (may be NULL) tells
 * whether it changed; a run already cancelling or ended is left as it is. Returns 0 or
 * SL_ENOENT (no such run).
 */
int store_run_request_cancel(struct store *st, bool *out_changed, const char *dag_id,
                             const char *run_id);

/*
 * Tries to become the scheduler's leader: pg_try_advisory_lock(STORE_LOCK_LEADER) on this
 * session, without waiting. When it is granted the session is bound (store_session_bind):
 * the lock lives exactly as long as the connection, and once that is lost every call
 * fails with SL_ECONN, so a scheduler that lost its lock cannot commit. Sets *out_leader.
 * Returns 0, SL_EINVAL inside a transaction, or SL_ECONN.
 */
int store_leader_try(struct store *st, bool *out_leader);

/* How many active runs the DAG has (max_active_runs). */
int store_runs_active_count(struct store *st, int64_t *out, const char *dag_id);

struct store_dag_count {
    const char *dag_id;
    int64_t n;
};
/* Active runs per DAG, for every DAG that has some, ordered by dag_id, into mem. */
int store_runs_active_counts(struct store *st, struct store_dag_count **out, size_t *out_n,
                             struct arena *mem);
/* The logical time of the DAG's newest scheduled run, or STORE_NO_TIME; the cron ticker's
 * starting point after a restart. */
int store_dag_last_scheduled(struct store *st, int64_t *out_ms, const char *dag_id);

/* The commits whose checkouts are still needed: every DAG's commit and every active
 * run's, into mem. */
int store_commits_in_use(struct store *st, const char ***out, size_t *out_n, struct arena *mem);

/* --- shared state (scheduler_state) ---------------------------------------------------------- */

/*
 * Named JSON documents that one process publishes and others read, one row per key,
 * replaced whole. The keys in use:
 *   "dags_sync"          the scheduler's last DAG sync: {"ok", "source", "commit" (the last
 *                        synced), "at_ms", "duration_ms", "failures" (in a row), "error",
 *                        "last_ok_ms", "invalid" (import errors then), "files", "parsed",
 *                        "next_ms"} (docs/git.md)
 *   "dags_sync_request"  a request to sync now (API push webhook, `sluice dags sync`):
 *                        {"by": "..."}; the scheduler syncs when its updated_at is newer
 *                        than its last sync's start
 *   "scheduler"          the leader's heartbeat: {"id", "at_ms", "runs", "loop_ms" (the last
 *                        loop iteration), "loop_max_ms" (the longest since the last beat)}
 */
int store_state_put(struct store *st, const char *key, const char *json);
/* Sets *out_json (in mem) and *out_updated_ms (may be NULL); SL_ENOENT if the key has no
 * row. */
int store_state_get(struct store *st, const char **out_json, int64_t *out_updated_ms,
                    const char *key, struct arena *mem);

/* --- step instances (reads) ----------------------------------------------------------------- */

enum store_step_state {
    STORE_STEP_PENDING,
    STORE_STEP_QUEUED,
    STORE_STEP_RUNNING,
    STORE_STEP_SUCCEEDED,
    STORE_STEP_FAILED,
    STORE_STEP_UP_FOR_RETRY,
    STORE_STEP_CANCELLED,
    STORE_STEP_SKIPPED,
    STORE_STEP_UPSTREAM_FAILED,
};
#define STORE_STEP_STATE_COUNT 9
/* A set of states for filters: STORE_STEP_MASK(STORE_STEP_QUEUED) | ...; 0 = every state. */
#define STORE_STEP_MASK(s) (1u << (s))

#define STORE_NO_EXIT_CODE INT32_MIN

struct store_step_instance {
    int64_t run_pk;
    const char *step;
    int map_index; /* -1 for a step without fan-out */
    enum store_step_state state;
    int attempt; /* 0 before the first attempt is queued */
    int64_t queued_at_ms;
    int64_t started_at_ms;
    int64_t ended_at_ms;
    int64_t next_try_at_ms;
    const char *worker;             /* or NULL */
    int exit_code;                  /* or STORE_NO_EXIT_CODE */
    const char *reason;             /* or NULL */
    const char *output_params_json; /* or NULL */
    const char *item_json;          /* the fan-out item (any JSON), or NULL */
};

/* The run's step instances whose state is in states (0 = all), by step and map_index: with
 * their items, everything a restarted scheduler needs to rebuild the run's engine state. */
int store_steps_of_run(struct store *st, struct store_step_instance **out, size_t *out_n,
                       int64_t run_pk, unsigned states, struct arena *mem);
/* Step instances queued before before_ms (the reconciler re-sends their messages), oldest
 * first, at most limit of them. */
int store_steps_queued_before(struct store *st, struct store_step_instance **out, size_t *out_n,
                              int64_t before_ms, size_t limit, struct arena *mem);

/* --- the run engine's writes (steps.c) ------------------------------------------------------ */

/*
 * One step instance after a transition: its full new row, the transition to record in
 * events, and its current attempt. Strings are borrowed for the call.
 */
struct store_step_write {
    /* the new step_instances row, keyed by (run_pk, step, map_index) */
    const char *step;
    int map_index; /* -1 for a step without fan-out */
    enum store_step_state state;
    int attempt;                    /* 0 before the first attempt is queued */
    int64_t queued_at_ms;           /* or STORE_NO_TIME; required when queued */
    int64_t started_at_ms;          /* or STORE_NO_TIME */
    int64_t ended_at_ms;            /* or STORE_NO_TIME */
    int64_t next_try_at_ms;         /* or STORE_NO_TIME; required when up_for_retry */
    const char *worker;             /* or NULL */
    int exit_code;                  /* or STORE_NO_EXIT_CODE */
    const char *reason;             /* or NULL */
    const char *output_params_json; /* a JSON object, or NULL */
    const char *item_json;          /* the fan-out item (any JSON), or NULL */
    /* the events row; from_state == to_state records none */
    enum store_step_state from_state;
    enum store_step_state to_state; /* usually state (a batch may hold several steps of one
                                       instance: each its own write, the last row wins) */
    const char *event_reason;       /* or NULL */
    int64_t event_at_ms;            /* or STORE_NO_TIME for the transaction's now() */
    /* the attempts row of attempt number `attempt`, when attempt > 0 (see below) */
    const char *attempt_id; /* required when attempt > 0 (engine_attempt_id) */
    const char *log_path;   /* or NULL (an earlier one is kept) */
};

/*
 * Persists w[0..n) for the run run_pk in three statements whatever n is (one per table,
 * the batch passed as one jsonb array), meant to run inside the caller's transaction
 * (store_begin ... store_commit) together with the rest of a tick's writes; called outside
 * one, it runs in a transaction of its own (store_tx_op). For each write:
 *
 *   - step_instances: the row is upserted with exactly the given values (every column is
 *     replaced). When a batch holds several writes of one instance, the last one wins;
 *   - attempts: when attempt > 0, the row attempt_id is upserted with the same state
 *     (up_for_retry is recorded as failed), worker, times (queued_at defaults to now()),
 *     exit code, reason and outputs. Not written when the state has no attempt state
 *     (pending, skipped, upstream_failed), nor when from_state is up_for_retry and state
 *     is not queued: that attempt had already ended (a run cancelled while waiting for a
 *     retry must not turn its failed attempt into a cancelled one);
 *   - events: when from_state != to_state, a row (run_pk, step, map_index, attempt,
 *     from_state, to_state, event_reason, event_at) is inserted unless the same
 *     (run_pk, step, map_index, attempt, to_state) is already there (unique index
 *     events_step_transition_key, ON CONFLICT DO NOTHING).
 *
 * Every statement is idempotent: writing the same batch again (after STORE_EUNKNOWN from
 * store_commit) leaves the same rows and no duplicate events. A batch is a set of final
 * rows, so writing an older batch after a newer one sets the rows back: re-read first.
 *
 * Returns 0; SL_EINVAL (a bad argument, attempt > 0 without attempt_id, or a CHECK refused
 * a row: queued without queued_at, up_for_retry without next_try_at, outputs that are not
 * an object; the caller's transaction is then aborted, store_rollback() it); SL_ETOOBIG
 * (outputs over STORE_OUTPUT_PARAMS_MAX_BYTES); SL_ENOENT (no such run); SL_EEXIST
 * (another attempt_id holds this attempt number); SL_ECONN.
 */
int store_steps_write(struct store *st, int64_t run_pk, const struct store_step_write *w, size_t n);

/*
 * Sets the state of run run_pk at at_ms (STORE_NO_TIME: now()): started_at is set when it
 * first becomes running, ended_at when it becomes final (succeeded, failed, cancelled) and
 * cleared otherwise, as the schema requires. A change of state is recorded in events (step
 * NULL; at most one row per run and state, events_run_transition_key); setting the state
 * the run already has changes nothing. Idempotent; runs in the caller's transaction like
 * store_steps_write(). Returns 0, SL_ENOENT (no such run), SL_EINVAL, SL_ECONN.
 */
int store_run_set_state(struct store *st, int64_t run_pk, enum store_run_state state,
                        int64_t at_ms);

/* --- the REST API's reads and writes (store/api.c) ------------------------------------------ */

/* An API token; the token's text is never stored, only its SHA-256. */
struct store_token {
    int64_t id;
    const char *name;
    const char *role; /* "viewer", "operator" or "admin" */
    int64_t created_at_ms;
    int64_t revoked_at_ms;   /* or STORE_NO_TIME */
    int64_t last_used_at_ms; /* or STORE_NO_TIME; updated at most once a minute */
};

/* Records a token by its hash. Returns 0 and sets *out; SL_EEXIST when a live token has
 * that name (api_tokens_live_name_key); SL_EINVAL for a bad role, empty name or a hash
 * that is not 32 bytes. */
int store_token_create(struct store *st, struct store_token *out, const char *name,
                       const char *role, const unsigned char *hash, size_t hash_len,
                       struct arena *mem);
/* The live (unrevoked) token with this hash, and marks it used (at most one write a
 * minute). Returns 0 or SL_ENOENT. */
int store_token_find(struct store *st, struct store_token *out, const unsigned char *hash,
                     size_t hash_len, struct arena *mem);
/* Every token, revoked ones included, by id. */
int store_tokens_list(struct store *st, struct store_token **out, size_t *out_n, struct arena *mem);
/* Revokes token id; *out_changed (may be NULL) is false if it was revoked already.
 * Returns 0 or SL_ENOENT. */
int store_token_revoke(struct store *st, bool *out_changed, int64_t id);
/* How many tokens exist at all, revoked ones included (first-start bootstrap). */
int store_tokens_count(struct store *st, int64_t *out);

/* A DAG as the API lists it: the row, its current version's facts, its last run. */
struct store_dag_info {
    struct store_dag dag;
    const char *content_hash; /* of the current version, or NULL */
    const char *commit_sha;   /* or NULL */
    const char *schedule;     /* or NULL (manual only) */
    const char *description;  /* or NULL */
    const char *tags_json;    /* JSON array of strings */
    const char *params_json;  /* the model's params (JSON array), or NULL */
    const char *last_run_id;  /* the newest run, or NULL */
    const char *last_run_state;
    int64_t last_run_logical_ms;
    int64_t active_runs;
};

struct store_dag_filter {
    const char *dag_id; /* one DAG, or NULL */
    const char *tag;    /* only DAGs whose current version has this tag, or NULL */
    int paused;         /* -1 any, 0 unpaused only, 1 paused only */
    const char *search; /* substring of the dag_id or description (case-insensitive), or NULL */
    bool include_inactive;
    int64_t limit, offset;
};

/* DAGs matching f, by dag_id, with *out_total the count of all matches (paging). */
int store_dags_query(struct store *st, struct store_dag_info **out, size_t *out_n,
                     int64_t *out_total, const struct store_dag_filter *f, struct arena *mem);
/* The versions of a DAG, newest first (model_json and source are left NULL). */
int store_dag_versions_list(struct store *st, struct store_dag_version **out, size_t *out_n,
                            int64_t *out_total, const char *dag_id, int64_t limit, int64_t offset,
                            struct arena *mem);

enum store_run_order {
    STORE_RUN_ORDER_ID_DESC, /* newest first (default) */
    STORE_RUN_ORDER_ID,
    STORE_RUN_ORDER_LOGICAL_DESC,
    STORE_RUN_ORDER_LOGICAL,
    STORE_RUN_ORDER_START_DESC,
    STORE_RUN_ORDER_START,
};

struct store_run_filter {
    const char *dag_id; /* or NULL for every DAG */
    unsigned states;    /* bit (1u << enum store_run_state) per state; 0 = all */
    int64_t logical_gte, logical_lte, start_gte, start_lte, end_gte, end_lte; /* STORE_NO_TIME:
                                                                                 no bound */
    enum store_run_order order;
    int64_t limit, offset;
};

/* Runs matching f, with *out_total the count of all matches. */
int store_runs_query(struct store *st, struct store_run **out, size_t *out_n, int64_t *out_total,
                     const struct store_run_filter *f, struct arena *mem);

struct store_attempt {
    const char *attempt_id;
    const char *step;
    int map_index;
    int attempt;
    const char *state; /* queued, running, succeeded, failed, cancelled */
    const char *worker;
    int64_t queued_at_ms, started_at_ms, ended_at_ms;
    int exit_code; /* or STORE_NO_EXIT_CODE */
    const char *reason;
    const char *output_params_json;
    const char *log_path;
};

/* The attempts of a run (of one step when step is not NULL), by step, map_index, attempt. */
int store_attempts_of_run(struct store *st, struct store_attempt **out, size_t *out_n,
                          int64_t run_pk, const char *step, struct arena *mem);

/*
 * Retries a finished run in place (the API's POST .../retry): in one transaction, checks
 * that the run is succeeded, failed or cancelled (else SL_ECONFLICT: it is still active, or
 * another retry came first), replaces its params when params_json is not NULL, writes the
 * step instances to run again (w[0..n), normally reset to pending with their attempt
 * number kept, so the next attempt continues the numbering) and sets the run queued
 * again, which the scheduler's poll picks up like a new run. The run keeps its run_id,
 * its version and its run directory. Returns 0, SL_ENOENT, SL_ECONFLICT, SL_EINVAL
 * (params not an object), SL_ECONN.
 */
int store_run_retry(struct store *st, int64_t run_pk, const char *params_json,
                    const struct store_step_write *w, size_t n);

/* A backfill (schema version 4): runs of a DAG over past logical times, created a few at a
 * time by store_backfills_advance(). */
struct store_backfill {
    int64_t id;
    const char *dag_id;
    int64_t start_ms, end_ms;
    const char *reprocess; /* "none", "failed", "all" */
    int64_t max_active_runs;
    const char *params_json;
    int64_t *logical_ms; /* the ticks, ascending */
    size_t n_logical;
    int64_t next_index; /* ticks handled so far */
    int64_t n_skipped;  /* ticks skipped by the reprocess rule */
    const char *state;  /* "running", "completed", "cancelled" */
    int64_t created_at_ms;
    const char *runs_by_state_json; /* {"queued": 1, "succeeded": 3, ...} of its runs */
};

/* Records a backfill of dag_id over logical_ms[0..n) (ascending). Sets *out_id. Returns 0,
 * SL_ENOENT (no such DAG), SL_EINVAL. */
int store_backfill_create(struct store *st, int64_t *out_id, const char *dag_id, int64_t start_ms,
                          int64_t end_ms, const char *reprocess, int64_t max_active_runs,
                          const char *params_json, const int64_t *logical_ms, size_t n);
/* One backfill with the counts of its runs by state. Returns 0 or SL_ENOENT. */
int store_backfill_get(struct store *st, struct store_backfill *out, int64_t id, struct arena *mem);
/* Cancels a running backfill: no new runs, its queued and running runs are asked to cancel
 * (cancelling). *out_changed is false when it had already ended. Returns 0 or SL_ENOENT. */
int store_backfill_cancel(struct store *st, bool *out_changed, int64_t id);
/*
 * Moves every running backfill on, each in a transaction of its own that locks it (FOR
 * UPDATE SKIP LOCKED, so API replicas share the work and never double a run): while it
 * has fewer than max_active_runs active runs, takes its next tick and creates a run of
 * the DAG's current version at that logical time (trigger backfill, run_id
 * "backfill__<time>__<id>") unless the reprocess rule skips it - none: any run of the DAG
 * exists at that logical time; failed: one exists that did not fail or get cancelled;
 * all: never skipped. A backfill whose ticks are all handled and whose runs all ended is
 * completed. Sets *out_created (may be NULL) to the runs created. Idempotent.
 */
int store_backfills_advance(struct store *st, size_t *out_created);

/* (label, state, count) rows for /metrics. */
struct store_state_count {
    const char *label; /* the DAG for runs, "" for steps */
    const char *state;
    int64_t n;
};
/* Runs by DAG and state. */
int store_run_state_counts(struct store *st, struct store_state_count **out, size_t *out_n,
                           struct arena *mem);
/* Step instances by state. */
int store_step_state_counts(struct store *st, struct store_state_count **out, size_t *out_n,
                            struct arena *mem);
/* The dispatch latency (started_at - queued_at) of every attempt that started, as
 * cumulative counts per bound (seconds, ascending): out_counts[0..n_bounds] (the last is
 * +Inf, the total), and their sum in seconds. */
int store_dispatch_latency(struct store *st, uint64_t *out_counts, double *out_sum_s,
                           const double *bounds_s, size_t n_bounds);

/* --- names ---------------------------------------------------------------------------- */

/* The names used in the database and the API ("queued", "up_for_retry", "manual"). */
const char *store_run_state_name(enum store_run_state s);
const char *store_trigger_name(enum store_trigger t);
const char *store_step_state_name(enum store_step_state s);
/* Parse those names; return 0 or SL_EINVAL. */
int store_run_state_parse(enum store_run_state *out, const char *name);
int store_trigger_parse(enum store_trigger *out, const char *name);
int store_step_state_parse(enum store_step_state *out, const char *name);

#endif
