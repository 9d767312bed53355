/*
 * tests/harness/pgtest.c - the PostgreSQL fixture and admin connection suites share.
 */
#include "tests/harness/pgtest.h"
#include "common/xalloc.h"

#include <stdlib.h>
#include <string.h>

struct harness_pg pgtest_pg;

void pgtest_setup(void)
{
    ck_assert_int_eq(harness_pg_start(&pgtest_pg), 0);
}

void pgtest_teardown(void)
{
    ck_assert_int_eq(harness_pg_stop(&pgtest_pg), 0);
}

static void on_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* "database ... does not exist, skipping" and the like */
}

PGconn *pgtest_admin_connect(const char *url)
{
    PGconn *c = PQconnectdb(url ? url : pgtest_pg.url);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "admin connection: %s", PQerrorMessage(c));
    PQsetNoticeProcessor(c, on_notice, NULL);
    return c;
}

char *pgtest_admin_query(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *res = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(res);
    ck_assert_msg(s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
    char *v = xstrdup(PQntuples(res) > 0 && PQnfields(res) > 0 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return v;
}

char *pgtest_admin_value(PGconn *c, const char *sql)
{
    return pgtest_admin_query(c, sql, 0, NULL);
}

void pgtest_admin_exec(PGconn *c, const char *sql)
{
    free(pgtest_admin_query(c, sql, 0, NULL));
}

char *pgtest_fresh_db(const char *name)
{
    PGconn *c = pgtest_admin_connect(NULL);
    char *drop = xasprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    char *create = xasprintf("CREATE DATABASE %s", name);
    pgtest_admin_exec(c, drop);
    pgtest_admin_exec(c, create);
    free(drop);
    free(create);
    PQfinish(c);
    const char *q = strchr(pgtest_pg.url + strlen("postgresql:///"), '?');
    ck_assert_ptr_nonnull(q);
    return xasprintf("postgresql:///%s%s", name, q);
}
