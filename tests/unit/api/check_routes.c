/*
 * tests/unit/api/check_routes.c - the API's pure parts: routing, query strings, tokens,
 * roles and the webhook signature, without a server.
 */
#include "api/api.h"
#include "api/api_int.h"
#include "common/arena.h"
#include "common/error.h"
#include "tests/testutil.h"

#include <check.h>
#include <string.h>

static const struct api_route *route(struct api_req *rq, enum api_method m, const char *path,
                                     int *status)
{
    memset(rq, 0, sizeof(*rq));
    arena_init(&rq->mem);
    rq->method = m;
    rq->path = arena_strdup(&rq->mem, path);
    rq->query = "";
    char msg[128];
    *status = 0;
    return api_route_match(rq, status, msg, sizeof(msg));
}

START_TEST(test_match)
{
    struct api_req rq;
    int status;
    const struct api_route *r = route(&rq, API_GET, "/api/v1/dags/iris/runs/a%3Ab+c", &status);
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r->pattern, "/api/v1/dags/{dag_id}/runs/{run_id}");
    ck_assert_int_eq(rq.n_params, 2);
    ck_assert_str_eq(rq.params[0], "iris");
    ck_assert_str_eq(rq.params[1], "a:b+c"); /* '+' is literal in a path */
    arena_release(&rq.mem);

    r = route(&rq, API_GET, "/api/v1/dags/", &status); /* a trailing slash is the same */
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r->pattern, "/api/v1/dags");
    arena_release(&rq.mem);

    ck_assert_ptr_null(route(&rq, API_DELETE, "/api/v1/dags/iris", &status));
    ck_assert_int_eq(status, 405);
    arena_release(&rq.mem);
    ck_assert_ptr_null(route(&rq, API_GET, "/api/v1/nothing", &status));
    ck_assert_int_eq(status, 404);
    arena_release(&rq.mem);
    /* an encoded slash never splits a name, and never matches */
    ck_assert_ptr_null(route(&rq, API_GET, "/api/v1/dags/a%2Fb/runs", &status));
    ck_assert_int_eq(status, 404);
    arena_release(&rq.mem);
    /* a NUL byte or a broken escape matches nothing */
    ck_assert_ptr_null(route(&rq, API_GET, "/api/v1/dags/a%00", &status));
    arena_release(&rq.mem);
    ck_assert_ptr_null(route(&rq, API_GET, "/api/v1/dags/a%4", &status));
    arena_release(&rq.mem);
    ck_assert_ptr_null(route(&rq, API_GET, "/api/v1//dags", &status));
    arena_release(&rq.mem);
    ck_assert_ptr_null(route(&rq, API_GET, "api/v1/dags", &status));
    arena_release(&rq.mem);
    /* every pattern of the table is matched by itself with parameters filled in */
    for (const struct api_route *t = api_routes; t->pattern; t++) {
        char path[256];
        size_t o = 0;
        for (const char *p = t->pattern; *p && o < sizeof(path) - 2; p++) {
            if (*p == '{') {
                path[o++] = 'x';
                p = strchr(p, '}');
            } else {
                path[o++] = *p;
            }
        }
        path[o] = '\0';
        const struct api_route *m = route(&rq, t->method, path, &status);
        ck_assert_msg(m == t, "%s does not route to itself", t->pattern);
        arena_release(&rq.mem);
    }
}
END_TEST

START_TEST(test_query)
{
    struct api_req rq;
    memset(&rq, 0, sizeof(rq));
    arena_init(&rq.mem);
    rq.query = "a=1&b=x+y%21&a=2&&flag&empty=";
    ck_assert_int_eq(api_query_parse(&rq), 0);
    ck_assert_str_eq(api_query(&rq, "a"), "2"); /* the last wins */
    ck_assert_str_eq(api_query(&rq, "b"), "x y!");
    ck_assert_str_eq(api_query(&rq, "flag"), "");
    ck_assert_str_eq(api_query(&rq, "empty"), "");
    ck_assert_ptr_null(api_query(&rq, "c"));
    rq.query = "a=%zz";
    ck_assert_int_eq(api_query_parse(&rq), SL_EINVAL);
    rq.query = "a=%00";
    ck_assert_int_eq(api_query_parse(&rq), SL_EINVAL);
    arena_release(&rq.mem);
}
END_TEST

START_TEST(test_tokens_and_roles)
{
    char a[API_TOKEN_BUFSZ], b[API_TOKEN_BUFSZ];
    ck_assert_int_eq(api_token_generate(a), 0);
    ck_assert_int_eq(api_token_generate(b), 0);
    ck_assert_int_eq(strlen(a), 4 + 43);
    ck_assert(!strncmp(a, "slc_", 4));
    ck_assert_str_ne(a, b);
    for (const char *p = a + 4; *p; p++)
        ck_assert(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", *p));
    unsigned char h1[API_TOKEN_HASH_SZ], h2[API_TOKEN_HASH_SZ];
    api_token_hash(h1, "abc");
    /* SHA-256("abc"), FIPS 180-2 */
    static const unsigned char want[] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                                         0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                                         0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
                                         0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    ck_assert_mem_eq(h1, want, 32);
    api_token_hash(h2, "abd");
    ck_assert(memcmp(h1, h2, 32) != 0);
    enum api_role r;
    ck_assert_int_eq(api_role_parse(&r, "operator"), 0);
    ck_assert_int_eq(r, API_ROLE_OPERATOR);
    ck_assert_int_eq(api_role_parse(&r, "none"), SL_EINVAL);
    ck_assert_int_eq(api_role_parse(&r, "Admin"), SL_EINVAL);
    ck_assert(API_ROLE_VIEWER < API_ROLE_OPERATOR && API_ROLE_OPERATOR < API_ROLE_ADMIN);
}
END_TEST

START_TEST(test_webhook)
{
    const char *secret = "It's a Secret to Everybody", *body = "Hello, World!";
    const char *good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    ck_assert(api_webhook_github_valid(secret, body, strlen(body), good));
    ck_assert(!api_webhook_github_valid(secret, body, strlen(body) - 1, good));
    ck_assert(!api_webhook_github_valid(NULL, body, strlen(body), good));
    ck_assert(!api_webhook_github_valid(secret, body, strlen(body), "sha256="));
    ck_assert(!api_webhook_github_valid(
        secret, body, strlen(body),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1g"));
    ck_assert(!api_webhook_github_valid(
        secret, body, strlen(body),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1700"));
}
END_TEST

Suite *suite_api_routes(void)
{
    Suite *s = suite_create("api_routes");
    TCase *tc = tcase_create("routes");
    tcase_add_test(tc, test_match);
    tcase_add_test(tc, test_query);
    tcase_add_test(tc, test_tokens_and_roles);
    tcase_add_test(tc, test_webhook);
    suite_add_tcase(s, tc);
    return s;
}
