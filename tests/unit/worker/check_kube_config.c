/*
 * tests/unit/worker/check_kube_config.c - credentials (worker/kube_config.c): kubeconfig
 * contexts, clusters and users in each form, what is refused, and in-cluster discovery.
 * The network side (TLS, client certificates, a rotated token) is in
 * tests/integration/check_kube_exec.c.
 */
#include "worker/kube_int.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "tests/testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/sluice-kcfg-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char *argv[] = {"/bin/rm", "-rf", dir, NULL};
    test_run(argv, NULL, NULL);
}

static char *put_file(const char *name, const char *text)
{
    char *path = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* "hello\n" and "key\n" in base64 */
#define B64_HELLO "aGVsbG8K"
#define B64_KEY   "a2V5Cg=="

static const char *const config =
    "apiVersion: v1\n"
    "kind: Config\n"
    "current-context: prod\n"
    "clusters:\n"
    "- name: prod-cluster\n"
    "  cluster:\n"
    "    server: https://prod.example.com:6443\n"
    "    certificate-authority-data: " B64_HELLO "\n"
    "- name: dev-cluster\n"
    "  cluster:\n"
    "    server: https://10.0.0.1\n"
    "    certificate-authority: certs/ca.pem\n"
    "- name: lab\n"
    "  cluster:\n"
    "    server: https://lab:443\n"
    "    insecure-skip-tls-verify: true\n"
    "users:\n"
    "- name: token-user\n"
    "  user:\n"
    "    token: abc.def\n"
    "- name: file-user\n"
    "  user:\n"
    "    tokenFile: secrets/token\n"
    "- name: cert-user\n"
    "  user:\n"
    "    client-certificate-data: " B64_HELLO "\n"
    "    client-key-data: " B64_KEY "\n"
    "- name: cert-files\n"
    "  user:\n"
    "    client-certificate: /abs/cert.pem\n"
    "    client-key: key.pem\n"
    "- name: exec-user\n"
    "  user:\n"
    "    exec:\n"
    "      command: aws\n"
    "- name: half-cert\n"
    "  user:\n"
    "    client-certificate: c.pem\n"
    "contexts:\n"
    "- name: prod\n"
    "  context: {cluster: prod-cluster, user: token-user, namespace: pipelines}\n"
    "- name: dev\n"
    "  context: {cluster: dev-cluster, user: file-user}\n"
    "- name: lab-certs\n"
    "  context: {cluster: lab, user: cert-user}\n"
    "- name: lab-files\n"
    "  context: {cluster: lab, user: cert-files}\n"
    "- name: aws\n"
    "  context: {cluster: prod-cluster, user: exec-user}\n"
    "- name: half\n"
    "  context: {cluster: prod-cluster, user: half-cert}\n"
    "- name: nowhere\n"
    "  context: {cluster: missing, user: token-user}\n";

START_TEST(test_current_context_token_and_ca_data)
{
    char *path = put_file("config", config);
    struct kube_creds c;
    struct strbuf err = STRBUF_INIT;
    ck_assert_int_eq(kube_creds_from_kubeconfig(&c, path, NULL, &err), 0);
    ck_assert_str_eq(c.server, "https://prod.example.com:6443");
    ck_assert_str_eq(c.token, "abc.def");
    ck_assert_str_eq(c.namespace_, "pipelines");
    ck_assert_uint_eq(c.ca_pem_len, 6);
    ck_assert_str_eq(c.ca_pem, "hello\n");
    ck_assert(!c.insecure);
    ck_assert_ptr_null(c.ca_file);
    kube_creds_release(&c);
    strbuf_release(&err);
    free(path);
}
END_TEST

START_TEST(test_named_contexts_files_and_certificates)
{
    char *path = put_file("config", config);
    struct kube_creds c;
    struct strbuf err = STRBUF_INIT;
    ck_assert_int_eq(kube_creds_from_kubeconfig(&c, path, "dev", &err), 0);
    char *ca = xasprintf("%s/certs/ca.pem", dir), *tok = xasprintf("%s/secrets/token", dir);
    ck_assert_str_eq(c.ca_file, ca); /* relative to the kubeconfig's directory */
    ck_assert_str_eq(c.token_file, tok);
    ck_assert_ptr_null(c.token);
    ck_assert_ptr_null(c.namespace_);
    kube_creds_release(&c);
    free(ca);
    free(tok);

    ck_assert_int_eq(kube_creds_from_kubeconfig(&c, path, "lab-certs", &err), 0);
    ck_assert(c.insecure); /* only because the file says so */
    ck_assert_str_eq(c.cert_pem, "hello\n");
    ck_assert_str_eq(c.key_pem, "key\n");
    kube_creds_release(&c);

    ck_assert_int_eq(kube_creds_from_kubeconfig(&c, path, "lab-files", &err), 0);
    ck_assert_str_eq(c.cert_file, "/abs/cert.pem");
    char *key = xasprintf("%s/key.pem", dir);
    ck_assert_str_eq(c.key_file, key);
    free(key);
    kube_creds_release(&c);
    strbuf_release(&err);
    free(path);
}
END_TEST

static void refused(const char *path, const char *context, int want, const char *part)
{
    struct kube_creds c;
    struct strbuf err = STRBUF_INIT;
    ck_assert_int_eq(kube_creds_from_kubeconfig(&c, path, context, &err), want);
    ck_assert_msg(strstr(err.buf, part), "error \"%s\", want \"%s\"", err.buf, part);
    strbuf_release(&err);
}

START_TEST(test_what_is_refused)
{
    char *path = put_file("config", config);
    refused(path, "aws", SL_EINVAL, "exec plugin");
    refused(path, "half", SL_EINVAL, "without a key");
    refused(path, "nowhere", SL_EINVAL, "no known cluster");
    refused(path, "staging", SL_EINVAL, "no such context 'staging'");
    char *missing = xasprintf("%s/none", dir);
    refused(missing, NULL, SL_ENOENT, "cannot open kubeconfig");
    char *bad = put_file("bad", "clusters: [unclosed\n");
    refused(bad, NULL, SL_EINVAL, "kubeconfig");
    char *nocur = put_file("nocur", "apiVersion: v1\nclusters: []\n");
    refused(nocur, NULL, SL_EINVAL, "no current-context");
    char *b64 =
        put_file("b64", "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\n"
                        "clusters:\n- name: c\n  cluster: {server: https://a, "
                        "certificate-authority-data: \"not*base64\"}\n");
    refused(b64, NULL, SL_EINVAL, "not valid base64");
    free(path);
    free(missing);
    free(bad);
    free(nocur);
    free(b64);
}
END_TEST

START_TEST(test_in_cluster)
{
    struct kube_creds c;
    struct strbuf err = STRBUF_INIT;
    unsetenv("KUBERNETES_SERVICE_HOST");
    ck_assert_int_eq(kube_creds_in_cluster(&c, dir, &err), SL_ENOENT);
    ck_assert_ptr_nonnull(strstr(err.buf, "not in a cluster"));
    strbuf_reset(&err);
    setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    ck_assert_int_eq(kube_creds_in_cluster(&c, dir, &err), SL_ENOENT); /* no token file */
    ck_assert_ptr_nonnull(strstr(err.buf, "service account token"));
    free(put_file("token", "t1\n"));
    free(put_file("ca.crt", "-----BEGIN CERTIFICATE-----\n"));
    free(put_file("namespace", "pipelines\n"));
    ck_assert_int_eq(kube_creds_in_cluster(&c, dir, &err), 0);
    ck_assert_str_eq(c.server, "https://10.96.0.1:443");
    ck_assert_str_eq(c.namespace_, "pipelines");
    char *tok = xasprintf("%s/token", dir), *ca = xasprintf("%s/ca.crt", dir);
    ck_assert_str_eq(c.token_file, tok); /* kept as a file: re-read when rotated */
    ck_assert_str_eq(c.ca_file, ca);
    kube_creds_release(&c);
    setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
    ck_assert_int_eq(kube_creds_in_cluster(&c, dir, &err), 0);
    ck_assert_str_eq(c.server, "https://[fd00::1]:443");
    kube_creds_release(&c);
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    free(tok);
    free(ca);
    strbuf_release(&err);
}
END_TEST

START_TEST(test_base64)
{
    char *out = NULL;
    size_t n = 0;
    ck_assert_int_eq(kube_base64_decode(&out, &n, "aGVs\nbG8K"), 0);
    ck_assert_uint_eq(n, 6);
    ck_assert_str_eq(out, "hello\n");
    free(out);
    ck_assert_int_eq(kube_base64_decode(&out, &n, "a2V5Cg=="), 0);
    ck_assert_str_eq(out, "key\n");
    free(out);
    ck_assert_int_eq(kube_base64_decode(&out, &n, "ab=c"), SL_EINVAL);
    ck_assert_int_eq(kube_base64_decode(&out, &n, "a-b"), SL_EINVAL);
}
END_TEST

Suite *suite_worker_kube_config(void)
{
    Suite *s = suite_create("worker_kube_config");
    TCase *tc = tcase_create("credentials");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_current_context_token_and_ca_data);
    tcase_add_test(tc, test_named_contexts_files_and_certificates);
    tcase_add_test(tc, test_what_is_refused);
    tcase_add_test(tc, test_in_cluster);
    tcase_add_test(tc, test_base64);
    suite_add_tcase(s, tc);
    return s;
}
