/*
 * tests/testutil.h - small helpers shared by the test suites.
 */
#ifndef SLUICE_TESTS_TESTUTIL_H
#define SLUICE_TESTS_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <sys/types.h>

/* Every suite's constructor, from the generated list (see the Makefile). */
#define SUITE(name) Suite *suite_##name(void);
#include "suites.inc"
#undef SUITE

/* The source tree's root ($SLUICE_SRC, else "."), for test data paths. */
const char *test_src_dir(void);
/* Returns a newly allocated path: test_src_dir() + "/" + rel. Caller frees. */
char *test_path(const char *rel);
/* Reads a whole file into a newly allocated NUL-terminated string (caller frees);
 * fails the current test if it cannot. */
char *test_read_file(const char *path, size_t *len);
/* Runs argv (argv[0] a path), capturing stdout and stderr into newly allocated
 * strings (either out pointer may be NULL). Returns the exit status, or -1 if the
 * child did not exit normally. stdin is /dev/null. */
int test_run(char *const argv[], char **out, char **err);
/* The sluice binary under test ($SLUICE_BIN, else build/asan/bin/sluice). */
const char *test_sluice_bin(void);

/*
 * A Git server over https, as GitHub or GitLab serve private repositories: smart HTTP
 * (tests/data/git/https_server.py in front of `git http-backend`) behind TLS with a
 * certificate for "localhost" signed by a private CA, basic auth required. It serves the
 * bare repositories under repos_dir (a harness_git's). The server dies with the test
 * process (parent-death signal) if test_git_https_stop() is never reached.
 */
struct test_git_https {
    char *dir;      /* the CA, the server's key and certificate */
    char *ca;       /* the private CA's certificate (PEM) */
    char *url_base; /* "https://localhost:<port>" (mbedTLS matches names only) */
    pid_t pid;
};
void test_git_https_start(struct test_git_https *h, const char *repos_dir, const char *user,
                          const char *password);
void test_git_https_stop(struct test_git_https *h);

#endif
