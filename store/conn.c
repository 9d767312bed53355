/*
 * store/conn.c - the database session: connecting, reconnecting, running statements,
 * transactions.
 *
 * A struct store wraps one libpq connection used synchronously by one thread. Every
 * statement goes through exec_common(), which is where lost connections are handled:
 *
 *   - outside a transaction, a statement whose connection was lost is repeated on a new
 *     connection (store_int.h states the idempotency rule that makes this safe);
 *   - inside one, the loss is reported (SL_ECONN) and the transaction is marked lost: the
 *     server has already rolled it back;
 *   - a lost COMMIT is reported as STORE_EUNKNOWN, since it may have committed.
 *
 * The transaction states (st->tx) and what moves between them:
 *
 *     NONE --store_begin--> OPEN --statement fails--> FAILED --rollback/commit--> NONE
 *                            |  \--connection lost--> LOST ----rollback/commit--> NONE
 *                            \--commit/rollback--> NONE
 *
 * Reconnecting: attempts are spaced by a doubling delay (reconnect_delay_ms up to
 * reconnect_max_delay_ms, with +-25% jitter so a fleet does not reconnect in step), and
 * one call gives up when reconnect_wait_ms have passed since its first attempt (an attempt
 * in progress may overrun that by up to connect_timeout_s). A new connection gets the
 * session settings (statement_timeout, lock_timeout, TimeZone=UTC) and an empty list of
 * prepared statements: they are prepared again on first use.
 *
 * Secrets: the URL is kept only to connect. Messages name the database by store_target()
 * (host, port, dbname, user) and every message taken from libpq has the password scrubbed
 * out, in case a future libpq ever echoes it.
 */
#include "store/store.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "store/store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How often one call repeats a statement whose connection was lost. */
#define STORE_MAX_REPEATS 3

/* --- messages --------------------------------------------------------------------------- */

/* Replaces every occurrence of the password in sb by "***". Passwords shorter than 4
 * bytes are left alone: scrubbing them would garble messages and hide nothing. */
static void scrub(const struct store *st, struct strbuf *sb)
{
    if (!st->password || strlen(st->password) < 4)
        return;
    size_t plen = strlen(st->password);
    char *hit;
    while ((hit = strstr(sb->buf, st->password))) {
        struct strbuf out = STRBUF_INIT;
        strbuf_add(&out, sb->buf, (size_t)(hit - sb->buf));
        strbuf_addstr(&out, "***");
        strbuf_addstr(&out, hit + plen);
        strbuf_release(sb);
        *sb = out;
    }
}

/* Appends a libpq message on one line: newlines and tabs become spaces, the trailing
 * newline goes. */
static void add_oneline(struct strbuf *sb, const char *msg)
{
    size_t start = sb->len;
    for (const char *p = msg ? msg : ""; *p; p++) {
        char c = (*p == '\n' || *p == '\t' || *p == '\r') ? ' ' : *p;
        if (c == ' ' && (sb->len == start || sb->buf[sb->len - 1] == ' '))
            continue;
        strbuf_addch(sb, c);
    }
    while (sb->len > start && sb->buf[sb->len - 1] == ' ')
        sb->buf[--sb->len] = '\0';
}

int store_fail(struct store *st, int code, const char *fmt, ...)
{
    strbuf_reset(&st->err);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        strbuf_vaddf(&st->err, fmt, ap);
        va_end(ap);
        scrub(st, &st->err);
    }
    return code;
}

const char *store_errmsg(const struct store *st)
{
    return st->err.buf;
}

const char *store_target(const struct store *st)
{
    return st->target;
}

int store_backend_pid(const struct store *st)
{
    return st->conn && PQstatus(st->conn) == CONNECTION_OK ? PQbackendPID(st->conn) : 0;
}

uint64_t store_generation(const struct store *st)
{
    return st->generation;
}

void store_session_bind(struct store *st)
{
    st->bound = true;
}

void store_session_unbind(struct store *st)
{
    st->bound = false;
}

bool store_session_lost(const struct store *st)
{
    return st->bound && (!st->conn || PQstatus(st->conn) != CONNECTION_OK);
}

/* --- time and randomness -------------------------------------------------------------- */

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

unsigned store_random(struct store *st)
{
    /* xorshift32: enough for jitter and for telling generated run_ids apart */
    unsigned x = st->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    st->rng = x;
    return x;
}

static unsigned random_seed(void)
{
    unsigned seed = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &seed, sizeof(seed)) != (ssize_t)sizeof(seed))
            seed = 0;
        close(fd);
    }
    if (!seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (unsigned)ts.tv_nsec ^ ((unsigned)getpid() << 16) ^ (unsigned)ts.tv_sec;
    }
    return seed ? seed : 0x9e3779b9u;
}

/* --- connecting ----------------------------------------------------------------------- */

static void on_notice(void *arg, const char *message)
{
    (void)arg;
    struct strbuf sb = STRBUF_INIT;
    add_oneline(&sb, message);
    sl_debug("store", "server notice: %s", sb.buf);
    strbuf_release(&sb);
}

/* Applies the session settings to a new connection. Returns 0 or SL_ECONN, message in
 * why. */
static int setup_session(struct store *st, PGconn *conn, struct strbuf *why)
{
    char stmt_timeout[32], lock_timeout[32];
    snprintf(stmt_timeout, sizeof(stmt_timeout), "%d", st->opts.statement_timeout_ms);
    snprintf(lock_timeout, sizeof(lock_timeout), "%d", st->opts.lock_timeout_ms);
    const char *params[] = {stmt_timeout, lock_timeout};
    PQsetNoticeProcessor(conn, on_notice, NULL);
    PGresult *res = PQexecParams(conn,
                                 "SELECT set_config('statement_timeout', $1, false), "
                                 "set_config('lock_timeout', $2, false), "
                                 "set_config('TimeZone', 'UTC', false)",
                                 2, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        add_oneline(why, PQerrorMessage(conn));
        rc = SL_ECONN;
    }
    PQclear(res);
    return rc;
}

static PGconn *connect_once(const struct store *st)
{
    char timeout[16];
    snprintf(timeout, sizeof(timeout), "%d", st->opts.connect_timeout_s);
    /* Keywords are applied in order and dbname (the URL) is expanded last, so the URL's
     * own parameters win over these defaults. Keepalives notice a dead peer on TCP. */
    const char *const keys[] = {
        "connect_timeout",     "application_name", "keepalives", "keepalives_idle",
        "keepalives_interval", "keepalives_count", "dbname",     NULL};
    const char *const vals[] = {timeout, st->opts.application_name, "1", "30", "10", "3", st->url,
                                NULL};
    return PQconnectdbParams(keys, vals, 1);
}

static void drop_connection(struct store *st)
{
    if (st->conn)
        PQfinish(st->conn);
    st->conn = NULL;
    st->n_prepared = 0;
}

/*
 * Connects, retrying with backoff within the reconnect budget. Returns 0 or SL_ECONN
 * (message set).
 */
static int reconnect(struct store *st)
{
    drop_connection(st);
    int64_t start = monotonic_ms(), elapsed = 0;
    int64_t delay = st->opts.reconnect_delay_ms;
    unsigned attempts = 0;
    struct strbuf why = STRBUF_INIT;
    for (;;) {
        attempts++;
        strbuf_reset(&why);
        PGconn *conn = connect_once(st);
        if (!conn) {
            strbuf_addstr(&why, "out of memory");
        } else if (PQstatus(conn) != CONNECTION_OK) {
            add_oneline(&why, PQerrorMessage(conn));
        } else if (setup_session(st, conn, &why) == 0) {
            st->conn = conn;
            st->generation++;
            if (st->generation > 1)
                sl_info("store", "reconnected to the database (%s) after %u attempt%s in %lld ms",
                        st->target, attempts, attempts == 1 ? "" : "s", (long long)elapsed);
            strbuf_release(&why);
            return 0;
        }
        if (conn)
            PQfinish(conn);
        elapsed = monotonic_ms() - start;
        if (elapsed >= st->opts.reconnect_wait_ms)
            break;
        if (attempts == 1)
            sl_warn("store", "cannot connect to the database (%s), retrying for up to %d ms: %s",
                    st->target, st->opts.reconnect_wait_ms, why.buf);
        /* jitter: 75% to 125% of the delay */
        int64_t pause = delay * 3 / 4 + (int64_t)(store_random(st) % (unsigned)(delay / 2 + 1));
        if (pause > st->opts.reconnect_wait_ms - elapsed)
            pause = st->opts.reconnect_wait_ms - elapsed;
        sleep_ms(pause);
        delay = delay * 2 > st->opts.reconnect_max_delay_ms ? st->opts.reconnect_max_delay_ms
                                                            : delay * 2;
    }
    scrub(st, &why);
    store_fail(st, SL_ECONN,
               "cannot connect to the database (%s) after %u attempt%s in %lld ms: %s", st->target,
               attempts, attempts == 1 ? "" : "s", (long long)elapsed, why.buf);
    strbuf_release(&why);
    return SL_ECONN;
}

/* Makes sure st has a working connection, if it may get a new one. */
static int ensure_connected(struct store *st)
{
    if (st->conn && PQstatus(st->conn) == CONNECTION_OK)
        return 0;
    if (st->tx != STORE_TX_NONE) {
        st->tx = STORE_TX_LOST;
        return store_fail(st, SL_ECONN,
                          "the connection was lost inside a transaction, which the server "
                          "rolled back");
    }
    if (st->bound && st->generation > 0)
        return store_fail(st, SL_ECONN,
                          "the database session (%s) was lost while bound: its advisory locks "
                          "are gone; unbind to reconnect",
                          st->target);
    if (st->generation > 0)
        sl_warn("store", "lost the connection to the database (%s); reconnecting", st->target);
    return reconnect(st);
}

/* Builds "host=... port=... dbname=... user=..." from the URL's parsed options and keeps
 * the password for scrubbing. Returns 0 or SL_EINVAL. */
static int describe_target(struct store *st)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(st->url, &errmsg);
    if (!opts) {
        /* libpq's message may quote the URL, password included: not shown */
        PQfreemem(errmsg);
        return SL_EINVAL;
    }
    struct strbuf sb = STRBUF_INIT;
    static const char *const shown[] = {"host", "hostaddr", "port", "dbname", "user"};
    for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++) {
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (o->val && *o->val && !strcmp(o->keyword, shown[i]))
                strbuf_addf(&sb, "%s%s=%s", sb.len ? " " : "", o->keyword, o->val);
        }
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val && *o->val && !strcmp(o->keyword, "password"))
            st->password = xstrdup(o->val);
    }
    PQconninfoFree(opts);
    if (!sb.len)
        strbuf_addstr(&sb, "libpq defaults");
    st->target = strbuf_detach(&sb, NULL);
    return 0;
}

static void options_fill(struct store_options *o, const struct store_options *in)
{
    static const struct store_options defaults = STORE_OPTIONS_INIT;
    *o = in ? *in : defaults;
    if (o->connect_timeout_s <= 0)
        o->connect_timeout_s = defaults.connect_timeout_s;
    if (o->statement_timeout_ms < 0)
        o->statement_timeout_ms = 0;
    if (o->lock_timeout_ms < 0)
        o->lock_timeout_ms = 0;
    if (o->reconnect_wait_ms < 0)
        o->reconnect_wait_ms = 0;
    if (o->reconnect_delay_ms <= 0)
        o->reconnect_delay_ms = defaults.reconnect_delay_ms;
    if (o->reconnect_max_delay_ms < o->reconnect_delay_ms)
        o->reconnect_max_delay_ms = o->reconnect_delay_ms;
    if (!o->application_name || !*o->application_name)
        o->application_name = defaults.application_name;
}

int store_open(struct store **out, const char *url, const struct store_options *opts,
               struct strbuf *err)
{
    struct store *st = xcalloc(1, sizeof(*st));
    strbuf_init(&st->err, 0);
    st->url = xstrdup(url ? url : "");
    options_fill(&st->opts, opts);
    st->application_name = xstrdup(st->opts.application_name);
    st->opts.application_name = st->application_name;
    st->rng = random_seed();

    int rc = describe_target(st);
    if (rc < 0) {
        store_fail(st, rc, "cannot parse the database URL (not shown: it may hold a password)");
    } else {
        rc = reconnect(st);
    }
    if (rc < 0) {
        if (err)
            strbuf_addstr(err, st->err.buf);
        store_close(st);
        return rc;
    }
    store_fail(st, 0, NULL);
    *out = st;
    return 0;
}

void store_close(struct store *st)
{
    if (!st)
        return;
    drop_connection(st);
    free(st->prepared);
    if (st->url) /* the secret does not linger in freed memory */
        memset(st->url, 0, strlen(st->url));
    if (st->password)
        memset(st->password, 0, strlen(st->password));
    free(st->url);
    free(st->password);
    free(st->target);
    free(st->application_name);
    strbuf_release(&st->err);
    free(st);
}

/* --- statements ----------------------------------------------------------------------- */

static bool is_prepared(const struct store *st, const struct store_stmt *stmt)
{
    for (size_t i = 0; i < st->n_prepared; i++) {
        if (st->prepared[i].stmt == stmt)
            return true;
    }
    return false;
}

static bool is_connection_loss(const struct store *st, const PGresult *res)
{
    if (!st->conn || PQstatus(st->conn) != CONNECTION_OK)
        return true;
    /* No result, or an error without a SQLSTATE, comes from libpq itself: a write to a
     * closed socket ("server closed the connection unexpectedly") fails that way before
     * libpq has read the EOF that makes the status CONNECTION_BAD. Nothing else this
     * module can provoke fails that way, so the connection is treated as gone. */
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!state)
        return true;
    /* class 08: connection exception; 57P01-03: admin shutdown, crash, cannot connect */
    return !strncmp(state, "08", 2) || !strcmp(state, "57P01") || !strcmp(state, "57P02") ||
           !strcmp(state, "57P03");
}

/* The sl_error code for a SQLSTATE. */
static int map_sqlstate(const char *s)
{
    if (!s)
        return SL_EINTERNAL;
    if (!strcmp(s, "23505") || !strcmp(s, "23P01"))
        return SL_EEXIST; /* unique or exclusion violation */
    if (!strcmp(s, "23503"))
        return SL_ENOENT; /* foreign key: the referenced row does not exist */
    if (!strncmp(s, "23", 2))
        return SL_EINVAL; /* check, not null */
    if (!strcmp(s, "22001") || !strncmp(s, "54", 2))
        return SL_ETOOBIG; /* string too long, program limit exceeded */
    if (!strncmp(s, "22", 2))
        return SL_EINVAL; /* data exception: bad JSON, bad number */
    if (!strcmp(s, "57014") || !strcmp(s, "55P03"))
        return SL_ETIMEDOUT; /* statement timeout (query canceled), lock timeout */
    if (!strcmp(s, "40001") || !strcmp(s, "40P01"))
        return SL_ECONFLICT; /* serialization failure, deadlock */
    return SL_EINTERNAL;
}

/* "what" of an unprepared statement, for messages: its first line, at most 40 bytes. */
static void sql_label(char *buf, size_t len, const char *sql)
{
    size_t n = strcspn(sql, "\n");
    if (n >= len)
        n = len - 1;
    memcpy(buf, sql, n);
    buf[n] = '\0';
}

/*
 * Runs stmt (prepared) or sql (not). tx_control is set for ROLLBACK, which must go
 * through in a failed transaction.
 */
static int exec_common(struct store *st, PGresult **out, const struct store_stmt *stmt,
                       const char *sql, int nparams, const char *const *params, bool tx_control)
{
    char what[48], name[96];
    if (stmt) {
        snprintf(what, sizeof(what), "%s", stmt->name);
        snprintf(name, sizeof(name), "sluice_%s", stmt->name);
    } else {
        sql_label(what, sizeof(what), sql);
    }
    st->lost_last = false;
    if (st->tx == STORE_TX_LOST)
        return store_fail(st, SL_ECONN,
                          "%s: the connection was lost inside this transaction, which the "
                          "server rolled back; roll it back",
                          what);
    if (st->tx == STORE_TX_FAILED && !tx_control)
        return store_fail(st, SL_EINVAL,
                          "%s: the transaction was aborted by an earlier error; roll it back",
                          what);

    bool reprepared = false;
    for (int tries = 0;; tries++) {
        int rc = ensure_connected(st);
        if (rc < 0)
            return rc;
        PGresult *res = NULL;
        bool ok = true;
        if (stmt && !is_prepared(st, stmt)) {
            res = PQprepare(st->conn, name, stmt->sql, 0, NULL);
            ok = PQresultStatus(res) == PGRES_COMMAND_OK;
            const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
            if (!ok && state && !strcmp(state, "42P05") && st->tx == STORE_TX_NONE)
                ok = true; /* already there: the server kept it when we forgot it (26000) */
            if (ok) {
                PQclear(res);
                res = NULL;
                XGROW(st->prepared, st->alloc_prepared, st->n_prepared + 1);
                st->prepared[st->n_prepared++].stmt = stmt;
            }
        }
        if (ok) {
            res = stmt ? PQexecPrepared(st->conn, name, nparams, params, NULL, NULL, 0)
                       : PQexecParams(st->conn, sql, nparams, NULL, params, NULL, NULL, 0);
            ExecStatusType status = PQresultStatus(res);
            if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
                *out = res;
                store_fail(st, 0, NULL);
                return 0;
            }
        }

        if (is_connection_loss(st, res)) {
            PQclear(res);
            drop_connection(st);
            st->lost_last = true;
            if (st->tx != STORE_TX_NONE) {
                st->tx = STORE_TX_LOST;
                return store_fail(st, SL_ECONN,
                                  "%s: the connection was lost inside a transaction, which "
                                  "the server rolled back",
                                  what);
            }
            if (st->bound || tries + 1 >= STORE_MAX_REPEATS)
                return store_fail(st, SL_ECONN, "%s: the connection to the database (%s) was lost",
                                  what, st->target);
            continue; /* ensure_connected() reconnects, then the statement is repeated */
        }

        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (stmt && state && !strcmp(state, "26000") && st->tx == STORE_TX_NONE && !reprepared) {
            /* our prepared statements vanished (DISCARD ALL, a pooler): prepare again */
            PQclear(res);
            st->n_prepared = 0;
            reprepared = true;
            continue;
        }
        if (st->tx == STORE_TX_OPEN)
            st->tx = STORE_TX_FAILED;
        int code = map_sqlstate(state);
        struct strbuf msg = STRBUF_INIT;
        const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        add_oneline(&msg, primary ? primary : PQerrorMessage(st->conn));
        store_fail(st, code, "%s: %s%s%s%s", what, msg.buf, state ? " (SQLSTATE " : "",
                   state ? state : "", state ? ")" : "");
        strbuf_release(&msg);
        PQclear(res);
        return code;
    }
}

int store_exec(struct store *st, PGresult **out, const struct store_stmt *stmt, int nparams,
               const char *const *params)
{
    return exec_common(st, out, stmt, NULL, nparams, params, false);
}

int store_exec_sql(struct store *st, PGresult **out, const char *sql, int nparams,
                   const char *const *params)
{
    return exec_common(st, out, NULL, sql, nparams, params, false);
}

/* Runs a statement whose result is of no interest. */
static int exec_void(struct store *st, const char *sql, bool tx_control)
{
    PGresult *res = NULL;
    int rc = exec_common(st, &res, NULL, sql, 0, NULL, tx_control);
    PQclear(res);
    return rc;
}

int store_explain(struct store *st, char **out_json, const struct store_stmt *stmt, int nparams,
                  const char *const *params)
{
    char *sql = xasprintf("EXPLAIN (FORMAT JSON) %s", stmt->sql);
    PGresult *res = NULL;
    int rc = store_exec_sql(st, &res, sql, nparams, params);
    free(sql);
    if (rc < 0)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return store_fail(st, SL_EINTERNAL, "EXPLAIN returned %d rows", PQntuples(res));
    }
    *out_json = xstrdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

/* --- transactions ----------------------------------------------------------------------- */

static int tx_begin(struct store *st, bool internal)
{
    if (st->tx != STORE_TX_NONE)
        return store_fail(st, SL_EINVAL, "a transaction is already open");
    int rc = exec_void(st, "BEGIN", false);
    if (rc < 0)
        return rc;
    st->tx = STORE_TX_OPEN;
    st->tx_internal = internal;
    return 0;
}

int store_begin(struct store *st)
{
    return tx_begin(st, false);
}

int store_commit(struct store *st)
{
    switch (st->tx) {
    case STORE_TX_NONE:
        return store_fail(st, SL_EINVAL, "no transaction is open");
    case STORE_TX_LOST:
        st->tx = STORE_TX_NONE;
        return store_fail(st, SL_ECONN,
                          "the connection was lost inside the transaction, which the server "
                          "rolled back");
    case STORE_TX_FAILED: {
        struct strbuf earlier = STRBUF_INIT;
        strbuf_addstr(&earlier, st->err.buf);
        (void)exec_void(st, "ROLLBACK", true);
        st->tx = STORE_TX_NONE;
        store_fail(st, SL_EINVAL,
                   "the transaction was aborted by an earlier error and has been rolled back%s%s",
                   earlier.len ? ": " : "", earlier.buf);
        strbuf_release(&earlier);
        return SL_EINVAL;
    }
    case STORE_TX_OPEN:
        break;
    }
    PGresult *res = NULL;
    int rc = exec_common(st, &res, NULL, "COMMIT", 0, NULL, false);
    st->tx = STORE_TX_NONE;
    if (rc == 0 && strcmp(PQcmdStatus(res), "COMMIT") != 0)
        rc = store_fail(st, SL_EINVAL, "COMMIT: the server rolled the transaction back");
    PQclear(res);
    if (rc == SL_ECONN && st->lost_last)
        return store_fail(st, STORE_EUNKNOWN,
                          "the connection to the database (%s) was lost while COMMIT was in "
                          "flight: the transaction may or may not have committed; re-read "
                          "its effects",
                          st->target);
    return rc;
}

int store_rollback(struct store *st)
{
    if (st->tx == STORE_TX_NONE)
        return store_fail(st, SL_EINVAL, "no transaction is open");
    if (st->tx != STORE_TX_LOST) {
        /* A connection lost now rolls back just as well: not an error. */
        (void)exec_void(st, "ROLLBACK", true);
    }
    st->tx = STORE_TX_NONE;
    return store_fail(st, 0, NULL);
}

int store_tx_op(struct store *st, int (*op)(struct store *st, void *arg), void *arg)
{
    if (st->tx != STORE_TX_NONE)
        return op(st, arg);
    for (int tries = 1;; tries++) {
        int rc = tx_begin(st, true);
        if (rc < 0)
            return rc;
        bool repeat;
        rc = op(st, arg);
        if (rc == 0) {
            rc = store_commit(st);
            repeat = rc == STORE_EUNKNOWN || rc == SL_ECONN;
        } else {
            bool lost = st->tx == STORE_TX_LOST;
            struct strbuf msg = STRBUF_INIT;
            strbuf_addstr(&msg, st->err.buf);
            store_rollback(st);
            store_fail(st, rc, "%s", msg.buf);
            strbuf_release(&msg);
            repeat = lost && rc == SL_ECONN;
        }
        if (!repeat || st->bound || tries >= STORE_MAX_REPEATS)
            /* op is idempotent: to the caller an unknown outcome is a lost connection,
             * answered by trying again later (STORE_EUNKNOWN stays store_commit()'s) */
            return rc == STORE_EUNKNOWN ? SL_ECONN : rc;
        sl_warn("store", "connection lost during a transaction (%s); repeating it", st->err.buf);
    }
}

/* --- results -------------------------------------------------------------------------- */

const char *store_col_str(const PGresult *res, int r, int c, struct arena *mem)
{
    if (PQgetisnull(res, r, c))
        return NULL;
    return arena_strndup(mem, PQgetvalue(res, r, c), (size_t)PQgetlength(res, r, c));
}

int64_t store_col_i64(const PGresult *res, int r, int c)
{
    if (PQgetisnull(res, r, c))
        return 0;
    return strtoll(PQgetvalue(res, r, c), NULL, 10);
}

int64_t store_col_time(const PGresult *res, int r, int c)
{
    if (PQgetisnull(res, r, c))
        return STORE_NO_TIME;
    return strtoll(PQgetvalue(res, r, c), NULL, 10);
}

bool store_col_bool(const PGresult *res, int r, int c)
{
    return !PQgetisnull(res, r, c) && PQgetvalue(res, r, c)[0] == 't';
}
