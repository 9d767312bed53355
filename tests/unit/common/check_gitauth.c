/*
 * tests/unit/common/check_gitauth.c - common/gitauth.c without a server: known_hosts
 * matching, the URL a dispatch may carry, and the credentials callback's answers.
 */
#include "common/gitauth.h"
#include "common/xalloc.h"
#include "tests/testutil.h"

#include <check.h>
#include <git2.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

static char *b64(const unsigned char *p, size_t n)
{
    char *out = xmalloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    return out;
}

START_TEST(test_known_hosts)
{
    unsigned char key[51], other[51], salt[20], mac[20];
    for (size_t i = 0; i < sizeof(key); i++) {
        key[i] = (unsigned char)(i * 7 + 1);
        other[i] = (unsigned char)(i * 7 + 2);
    }
    for (size_t i = 0; i < sizeof(salt); i++)
        salt[i] = (unsigned char)(i + 100);
    unsigned int len = 0;
    HMAC(EVP_sha1(), salt, sizeof(salt), (const unsigned char *)"hashed.example", 14, mac, &len);
    char *k = b64(key, sizeof(key)), *o = b64(other, sizeof(other));
    char *s = b64(salt, sizeof(salt)), *m = b64(mac, sizeof(mac));
    char *text = xasprintf("# comment\n\n"
                           "git.example,alias.example ssh-ed25519 %s\n"
                           "[ported.example]:2222 ssh-ed25519 %s\n"
                           "|1|%s|%s ssh-ed25519 %s\n"
                           "*.wild.example,!bad.wild.example ssh-ed25519 %s\n"
                           "wrongkey.example ssh-ed25519 %s\n"
                           "revoked.example ssh-ed25519 %s\n"
                           "@revoked revoked.example ssh-ed25519 %s\n"
                           "@cert-authority ca.example ssh-ed25519 %s\n"
                           "garbage line\n",
                           k, k, s, m, k, k, o, k, k, k);
    ck_assert(gitauth_known_host(text, "git.example", key, sizeof(key)));
    ck_assert(gitauth_known_host(text, "alias.example", key, sizeof(key)));
    ck_assert(!gitauth_known_host(text, "git.example", other, sizeof(other)));
    ck_assert(gitauth_known_host(text, "ported.example", key, sizeof(key)));
    ck_assert(gitauth_known_host(text, "hashed.example", key, sizeof(key)));
    ck_assert(!gitauth_known_host(text, "hashed2.example", key, sizeof(key)));
    ck_assert(gitauth_known_host(text, "a.wild.example", key, sizeof(key)));
    ck_assert(!gitauth_known_host(text, "bad.wild.example", key, sizeof(key)));
    ck_assert(!gitauth_known_host(text, "wrongkey.example", key, sizeof(key)));
    ck_assert(!gitauth_known_host(text, "revoked.example", key, sizeof(key)));
    ck_assert(!gitauth_known_host(text, "ca.example", key, sizeof(key)));
    ck_assert(!gitauth_known_host(text, "unknown.example", key, sizeof(key)));
    ck_assert(!gitauth_known_host("", "git.example", key, sizeof(key)));
    free(text);
    free(k);
    free(o);
    free(s);
    free(m);
}
END_TEST

START_TEST(test_redact_url)
{
    const char *cases[][2] = {
        {"https://user:token@github.com/org/dags.git", "https://github.com/org/dags.git"},
        {"https://github.com/org/dags.git", "https://github.com/org/dags.git"},
        {"ssh://git@host:2222/x.git", "ssh://host:2222/x.git"},
        {"git@github.com:org/dags.git", "github.com:org/dags.git"},
        {"file:///srv/dags.git", "file:///srv/dags.git"},
        {"https://host/path@v1", "https://host/path@v1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *r = gitauth_redact_url(cases[i][0]);
        ck_assert_str_eq(r, cases[i][1]);
        free(r);
    }
}
END_TEST

/* http(s) lose the whole user information (a token may be the user), ssh only a password. */
START_TEST(test_shareable_url)
{
    const char *cases[][2] = {
        {"https://user:token@github.com/org/dags.git", "https://github.com/org/dags.git"},
        {"https://ghp_token@github.com/org/dags.git", "https://github.com/org/dags.git"},
        {"https://github.com/org/dags.git", "https://github.com/org/dags.git"},
        {"ssh://git@host:2222/x.git", "ssh://git@host:2222/x.git"},
        {"ssh://deploy:pw@host/x.git", "ssh://deploy@host/x.git"},
        {"git@github.com:org/dags.git", "git@github.com:org/dags.git"},
        {"file:///srv/dags.git", "file:///srv/dags.git"},
        {"https://host/path@v1", "https://host/path@v1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *r = gitauth_shareable_url(cases[i][0]);
        ck_assert_str_eq(r, cases[i][1]);
        free(r);
    }
}
END_TEST

/* The user name alone is always answered (ssh asks it first when the URL names none);
 * the credentials only once per connection. */
START_TEST(test_credentials_answers)
{
    git_libgit2_init();
    struct gitauth a;
    gitauth_init(&a, "deploy", "t0ken", NULL, NULL);
    gitauth_begin(&a);
    git_credential *c = NULL;
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(gitauth_credentials(&c, &a, NULL, GIT_CREDENTIAL_USERNAME), 0);
        ck_assert_int_eq(git_credential_has_username(c), 1);
        ck_assert_str_eq(git_credential_get_username(c), "deploy");
        git_credential_free(c);
    }
    ck_assert_int_eq(gitauth_credentials(&c, &a, "other", GIT_CREDENTIAL_USERPASS_PLAINTEXT), 0);
    ck_assert_str_eq(git_credential_get_username(c), "deploy");
    git_credential_free(c);
    ck_assert_int_eq(gitauth_credentials(&c, &a, NULL, GIT_CREDENTIAL_USERPASS_PLAINTEXT),
                     GIT_EAUTH);
    gitauth_begin(&a); /* a new connection */
    ck_assert_int_eq(gitauth_credentials(&c, &a, NULL, GIT_CREDENTIAL_USERPASS_PLAINTEXT), 0);
    git_credential_free(c);
    gitauth_release(&a);
    /* nothing configured for what the server allows: says what to configure */
    gitauth_init(&a, NULL, NULL, NULL, NULL);
    ck_assert_int_eq(gitauth_credentials(&c, &a, NULL, GIT_CREDENTIAL_USERPASS_PLAINTEXT),
                     GIT_EAUTH);
    ck_assert_ptr_nonnull(strstr(git_error_last()->message, "none are configured"));
    gitauth_release(&a);
    git_libgit2_shutdown();
}
END_TEST

Suite *suite_common_gitauth(void)
{
    Suite *s = suite_create("common_gitauth");
    TCase *tc = tcase_create("gitauth");
    tcase_add_test(tc, test_known_hosts);
    tcase_add_test(tc, test_redact_url);
    tcase_add_test(tc, test_shareable_url);
    tcase_add_test(tc, test_credentials_answers);
    suite_add_tcase(s, tc);
    return s;
}
