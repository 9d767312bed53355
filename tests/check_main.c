/*
 * tests/check_main.c - the one test runner: every unit and integration suite.
 *
 * Suites are discovered by file name (see the Makefile): each
 * tests/<kind>/<dir>/check_<name>.c defines Suite *suite_<dir>_<name>(void).
 * Check's own environment variables select a subset: CK_RUN_SUITE, CK_RUN_CASE.
 * The run ends with Check's summary line; the exit status is 0 only if every
 * test passed.
 */
#include "tests/testutil.h"

#include <check.h>
#include <stdlib.h>

int main(void)
{
    SRunner *sr = srunner_create(NULL);
#define SUITE(name) srunner_add_suite(sr, suite_##name());
#include "suites.inc"
#undef SUITE
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
