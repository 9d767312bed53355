/*
 * tests/harness/pgtest.h - what suites testing against PostgreSQL share.
 *
 * One server per suite, started in an unchecked fixture (pgtest_setup and
 * pgtest_teardown, run in the runner before Check forks each test), and a plain
 * libpq "admin" connection for playing the other actors (creating databases,
 * killing backends, inspecting rows). Every failure fails the current test.
 */
#ifndef SLUICE_TESTS_HARNESS_PGTEST_H
#define SLUICE_TESTS_HARNESS_PGTEST_H

#include "common/error.h"
#include "store/store.h"
#include "tests/harness/harness.h"

#include <check.h>
#include <libpq-fe.h>

/* The suite's server, valid between pgtest_setup() and pgtest_teardown(). */
extern struct harness_pg pgtest_pg;

void pgtest_setup(void);
void pgtest_teardown(void);

/* A connection to url (NULL: the harness database), notices silenced. */
PGconn *pgtest_admin_connect(const char *url);
/* Runs sql with n text parameters; returns the first value of the first row, newly
 * allocated ("" if none). */
char *pgtest_admin_query(PGconn *c, const char *sql, int n, const char *const *params);
/* As pgtest_admin_query() without parameters. */
char *pgtest_admin_value(PGconn *c, const char *sql);
void pgtest_admin_exec(PGconn *c, const char *sql);
/* Creates an empty database called name (dropping any old one); returns its URL
 * (caller frees). */
char *pgtest_fresh_db(const char *name);

/* Asserts that a store call returned 0, printing the store's message if not. */
#define CK_STORE_OK(st, call)                                                                      \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        ck_assert_msg(rc_ == 0, "%s = %d (%s): %s", #call, rc_, sl_strerror(rc_),                  \
                      store_errmsg(st));                                                           \
    } while (0)

#endif
