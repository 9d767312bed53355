/*
 * store/store_int.h - what the files of store/ share, and nothing any other module may use
 * (tests of store/ excepted).
 *
 * conn.c owns the connection: store_exec() runs one statement, reconnecting and repeating
 * it when the connection was lost outside a transaction, and store_tx_op() runs a
 * multi-statement operation in its own transaction, repeating it whole when the connection
 * was lost. Both rely on the rule every statement of store/ follows:
 *
 *   A statement run outside a transaction may be executed twice (the first time its
 *   answer was lost with the connection), so it must be idempotent; an operation passed
 *   to store_tx_op() must be idempotent as a whole, and must set its outputs afresh on
 *   every run.
 */
#ifndef SLUICE_STORE_STORE_INT_H
#define SLUICE_STORE_STORE_INT_H

#include "store/store.h"

#include <libpq-fe.h>

/*
 * A statement of store/, prepared on first use on each connection as "sluice_<name>".
 * Parameters are passed in text format; cast them in the SQL ($1::bigint) so the server
 * infers their types.
 */
struct store_stmt {
    const char *name; /* unique across store/ */
    const char *sql;
};

/* One statement prepared on the current connection. */
struct store_prepared {
    const struct store_stmt *stmt;
};

/* SQL fragments for the API's time representation (int64 unix milliseconds). */
#define STORE_SQL_MS(col)   "floor(extract(epoch FROM " col ") * 1000)::bigint"
#define STORE_SQL_TS(param) "('epoch'::timestamptz + " param "::bigint * interval '1 millisecond')"

/* Where the transaction stands. */
enum store_tx {
    STORE_TX_NONE,   /* autocommit: statements are repeated after a reconnect */
    STORE_TX_OPEN,   /* BEGIN was sent and nothing has gone wrong */
    STORE_TX_FAILED, /* a statement failed: PostgreSQL aborted the transaction */
    STORE_TX_LOST,   /* the connection was lost: the server rolled the transaction back */
};

struct store {
    PGconn *conn;                      /* private: NULL or a connection, maybe broken */
    char *url;                         /* private, secret: never logged, never in a message */
    char *password;                    /* private, secret: scrubbed from every message */
    char *target;                      /* public via store_target(): host, port, dbname, user */
    char *application_name;            /* private: owned copy of opts.application_name */
    struct store_options opts;         /* private: application_name points at the copy above */
    struct strbuf err;                 /* private: store_errmsg() */
    struct store_prepared *prepared;   /* private: statements prepared on this connection */
    size_t n_prepared, alloc_prepared; /* private */
    uint64_t generation;               /* private: connections made so far */
    enum store_tx tx;                  /* private */
    bool tx_internal;                  /* private: the open transaction is store_tx_op()'s */
    bool bound;                        /* private: store_session_bind() */
    bool lost_last;                    /* private: the last store_exec() lost the connection */
    unsigned rng;                      /* private: jitter and generated run_ids */
};

/* Clears st's message and, when fmt is not NULL, sets it. Returns code, for
 * "return store_fail(st, SL_EINVAL, ...)". */
int store_fail(struct store *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Runs stmt with params[0..nparams) (text; NULL is SQL NULL). On success sets *out to a
 * result with status PGRES_TUPLES_OK or PGRES_COMMAND_OK (the caller PQclear()s it) and
 * returns 0. On failure returns a code (SL_EEXIST for a unique violation, SL_ENOENT for a
 * foreign key, SL_EINVAL for a check or a malformed value, SL_ETIMEDOUT, SL_ECONFLICT,
 * SL_ECONN, SL_EINTERNAL) and sets the message to what context says and PostgreSQL said.
 */
int store_exec(struct store *st, PGresult **out, const struct store_stmt *stmt, int nparams,
               const char *const *params);
/* As store_exec(), for SQL that is not prepared (DDL of migrations, BEGIN, EXPLAIN). */
int store_exec_sql(struct store *st, PGresult **out, const char *sql, int nparams,
                   const char *const *params);

/*
 * Runs op(st, arg) in a transaction of its own, committed when op returns 0 and rolled
 * back otherwise. If the connection is lost anywhere (COMMIT included: op is idempotent,
 * so repeating it settles an unknown outcome), reconnects and runs op again, a few times
 * at most. Inside the caller's transaction, just calls op. Returns op's code.
 */
int store_tx_op(struct store *st, int (*op)(struct store *st, void *arg), void *arg);

/* Result accessors; row r, column c. */
const char *store_col_str(const PGresult *res, int r, int c, struct arena *mem); /* or NULL */
int64_t store_col_i64(const PGresult *res, int r, int c);                        /* 0 for NULL */
int64_t store_col_time(const PGresult *res, int r, int c); /* STORE_NO_TIME for NULL */
bool store_col_bool(const PGresult *res, int r, int c);

/* A pseudo-random 32-bit number (not for secrets). */
unsigned store_random(struct store *st);

/* Runs EXPLAIN (FORMAT JSON) of stmt with params; *out_json gets the plan, newly
 * allocated, caller frees. For the tests that check which index a hot query uses. */
int store_explain(struct store *st, char **out_json, const struct store_stmt *stmt, int nparams,
                  const char *const *params);

/* The hot statements, for store_explain() in tests (README.md: "Indexes"). */
extern const struct store_stmt store_stmt_run_get;
extern const struct store_stmt store_stmt_runs_active;
extern const struct store_stmt store_stmt_runs_active_all;
extern const struct store_stmt store_stmt_runs_active_count;
extern const struct store_stmt store_stmt_runs_active_counts;
extern const struct store_stmt store_stmt_dag_last_scheduled;
extern const struct store_stmt store_stmt_dag_list;
extern const struct store_stmt store_stmt_steps_of_run;
extern const struct store_stmt store_stmt_steps_queued_before;

#endif
