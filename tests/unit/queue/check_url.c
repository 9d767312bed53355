/*
 * tests/unit/queue/check_url.c - Redis URLs: what parses to what, what is refused.
 */
#include "queue/queue_int.h"
#include "common/error.h"
#include "tests/testutil.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_url_valid)
{
    static const struct {
        const char *url;
        const char *host, *unix_path, *user, *password;
        int port, db;
        const char *described;
    } cases[] = {
        {"redis://localhost", "localhost", NULL, NULL, NULL, 6379, 0, "redis://localhost:6379/0"},
        {"redis://127.0.0.1:7000/", "127.0.0.1", NULL, NULL, NULL, 7000, 0,
         "redis://127.0.0.1:7000/0"},
        {"redis://redis.svc:6380/3", "redis.svc", NULL, NULL, NULL, 6380, 3,
         "redis://redis.svc:6380/3"},
        {"redis://:s3cret@h:1/2", "h", NULL, NULL, "s3cret", 1, 2, "redis://h:1/2"},
        {"redis://alice:p%40ss%2Fw%3Ard@h", "h", NULL, "alice", "p@ss/w:rd", 6379, 0,
         "redis://h:6379/0"},
        {"redis://:a@b@h:2", "h", NULL, NULL, "a@b", 2, 0, "redis://h:2/0"}, /* last @ */
        {"redis://:@h", "h", NULL, NULL, "", 6379, 0, "redis://h:6379/0"},
        {"redis://[::1]:6390/1", "::1", NULL, NULL, NULL, 6390, 1, "redis://[::1]:6390/1"},
        {"redis://[fe80::1]", "fe80::1", NULL, NULL, NULL, 6379, 0, "redis://[fe80::1]:6379/0"},
        {"unix:///run/redis.sock", NULL, "/run/redis.sock", NULL, NULL, 0, 0,
         "unix:///run/redis.sock?db=0"},
        {"unix:///tmp/r.sock?db=5", NULL, "/tmp/r.sock", NULL, NULL, 0, 5,
         "unix:///tmp/r.sock?db=5"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct queue_url u;
        char reason[128] = "";
        int rc = queue_url_parse(&u, cases[i].url, reason, sizeof(reason));
        ck_assert_msg(rc == 0, "\"%s\": %s", cases[i].url, reason);
#define STR_EQ(a, b) ((a) == NULL ? (b) == NULL : (b) != NULL && !strcmp((a), (b)))
        ck_assert_msg(STR_EQ(u.host, cases[i].host), "\"%s\": host \"%s\"", cases[i].url,
                      u.host ? u.host : "(null)");
        ck_assert_msg(STR_EQ(u.unix_path, cases[i].unix_path), "\"%s\": path", cases[i].url);
        ck_assert_msg(STR_EQ(u.user, cases[i].user), "\"%s\": user", cases[i].url);
        ck_assert_msg(STR_EQ(u.password, cases[i].password), "\"%s\": password", cases[i].url);
#undef STR_EQ
        if (cases[i].host)
            ck_assert_int_eq(u.port, cases[i].port);
        ck_assert_int_eq(u.db, cases[i].db);
        char *described = queue_url_describe(&u);
        ck_assert_str_eq(described, cases[i].described);
        ck_assert(!cases[i].password || !strstr(described, cases[i].password) ||
                  !*cases[i].password);
        free(described);
        queue_url_release(&u);
    }
}
END_TEST

START_TEST(test_url_invalid)
{
    static const struct {
        const char *url;
        const char *reason;
    } cases[] = {
        {"", "must start with redis:// or unix://"},
        {"http://h", "must start with redis:// or unix://"},
        {"rediss://h", "TLS (rediss://) is not supported"},
        {"redis://", "missing host"},
        {"redis://:6379", "missing host"},
        {"redis://h:0", "port must be 1-65535"},
        {"redis://h:65536", "port must be 1-65535"},
        {"redis://h:x", "port must be 1-65535"},
        {"redis://h:", "port must be 1-65535"},
        {"redis://h/x", "database must be a number"},
        {"redis://h/1/2", "database must be a number"},
        {"redis://h?db=1", "unexpected query or fragment"},
        {"redis://secret@h", "credentials must read"},
        {"redis://:%zz@h", "bad %-escape in the password"},
        {"redis://:%00@h", "bad %-escape in the password"},
        {"redis://:%4@h", "bad %-escape in the password"},
        {"redis://u%@h", "credentials must read"},
        {"redis://u%g1:p@h", "bad %-escape in the user name"},
        {"redis://[::1", "unterminated"},
        {"redis://[::1]x", "unexpected text after"},
        {"redis://[]:1", "unterminated"},
        {"unix://", "absolute socket path"},
        {"unix://relative.sock", "absolute socket path"},
        {"unix:///s.sock?password=x", "accepts only"},
        {"unix:///s.sock?db=x", "accepts only"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct queue_url u = {0};
        char reason[128] = "";
        int rc = queue_url_parse(&u, cases[i].url, reason, sizeof(reason));
        ck_assert_msg(rc == SL_EINVAL, "\"%s\": accepted", cases[i].url);
        ck_assert_msg(strstr(reason, cases[i].reason) != NULL, "\"%s\": reason \"%s\"",
                      cases[i].url, reason);
        ck_assert_ptr_null(u.host); /* untouched on failure */
    }
    struct queue_url u;
    ck_assert_int_eq(queue_url_parse(&u, NULL, NULL, 0), SL_EINVAL);
}
END_TEST

Suite *suite_queue_url(void)
{
    Suite *s = suite_create("queue_url");
    TCase *tc = tcase_create("url");
    tcase_add_test(tc, test_url_valid);
    tcase_add_test(tc, test_url_invalid);
    suite_add_tcase(s, tc);
    return s;
}
