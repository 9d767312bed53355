/*
 * worker/kube_config.c - where the Kubernetes API is and who we are: in-cluster
 * credentials, or a kubeconfig file.
 *
 * In a pod, client-go's rules: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT name
 * the API server; the service account's token, CA and namespace are files under
 * /var/run/secrets/kubernetes.io/serviceaccount. The token is projected and rotated by the
 * kubelet, so the client keeps its path and re-reads it when it changes.
 *
 * A kubeconfig is read with libyaml's document API: the context (named, else the
 * current-context) picks a cluster (server, CA as a file or inline data,
 * insecure-skip-tls-verify) and a user (a token inline or in a file, a client certificate
 * and key as files or inline data). What we cannot do safely or at all - exec credential
 * plugins, auth providers, username/password - is refused with a clear error rather than
 * half-supported. Blocking file I/O: start-up only.
 */
#include "worker/kube_int.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

void kube_wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

void kube_creds_release(struct kube_creds *c)
{
    free(c->server);
    if (c->token)
        kube_wipe(c->token, strlen(c->token));
    free(c->token);
    free(c->token_file);
    free(c->ca_file);
    free(c->ca_pem);
    free(c->cert_file);
    free(c->key_file);
    free(c->cert_pem);
    if (c->key_pem)
        kube_wipe(c->key_pem, c->key_pem_len);
    free(c->key_pem);
    free(c->namespace_);
    free(c->source);
    memset(c, 0, sizeof(*c));
}

static int b64_value(int ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

int kube_base64_decode(char **out, size_t *out_len, const char *in)
{
    size_t n = strlen(in);
    char *buf = xmalloc(n / 4 * 3 + 4);
    size_t len = 0;
    unsigned acc = 0;
    int bits = 0, pad = 0;
    for (const char *p = in; *p; p++) {
        if (isspace((unsigned char)*p))
            continue;
        if (*p == '=') {
            pad++;
            continue;
        }
        int v = b64_value((unsigned char)*p);
        if (v < 0 || pad) {
            free(buf);
            return SL_EINVAL;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[len++] = (char)((acc >> bits) & 0xff);
        }
    }
    if (pad > 2) {
        free(buf);
        return SL_EINVAL;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return 0;
}

/* --- in-cluster ------------------------------------------------------------------------- */

int kube_creds_in_cluster(struct kube_creds *out, const char *sa_dir, struct strbuf *err)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    if (!host || !*host || !port || !*port) {
        strbuf_addstr(err, "not in a cluster: KUBERNETES_SERVICE_HOST and "
                           "KUBERNETES_SERVICE_PORT are not set");
        return SL_ENOENT;
    }
    const char *dir = sa_dir && *sa_dir ? sa_dir : KUBE_SA_DIR;
    struct kube_creds c = {0};
    /* an IPv6 address needs brackets in a URL */
    c.server = xasprintf(strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host, port);
    c.token_file = xasprintf("%s/token", dir);
    if (access(c.token_file, R_OK) != 0) {
        strbuf_addf(err, "in-cluster: cannot read the service account token '%s': %s", c.token_file,
                    strerror(errno));
        kube_creds_release(&c);
        return SL_ENOENT;
    }
    char *ca = xasprintf("%s/ca.crt", dir);
    if (access(ca, R_OK) == 0)
        c.ca_file = ca;
    else
        free(ca);
    char *ns_path = xasprintf("%s/namespace", dir);
    struct strbuf ns = STRBUF_INIT;
    if (strbuf_read_file(&ns, ns_path, 1024) == 0) {
        while (ns.len && isspace((unsigned char)ns.buf[ns.len - 1]))
            ns.buf[--ns.len] = '\0';
        if (ns.len)
            c.namespace_ = strbuf_detach(&ns, NULL);
    }
    strbuf_release(&ns);
    free(ns_path);
    c.source = xstrdup("in-cluster service account");
    *out = c;
    return 0;
}

/* --- kubeconfig ------------------------------------------------------------------------- */

static yaml_node_t *map_get(yaml_document_t *d, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(d, p->key);
        if (k && k->type == YAML_SCALAR_NODE && !strcmp((const char *)k->data.scalar.value, key))
            return yaml_document_get_node(d, p->value);
    }
    return NULL;
}

static const char *scalar(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* The entry of a named list (clusters, users, contexts) called name: its inner mapping
 * under field (cluster, user, context). */
static yaml_node_t *named(yaml_document_t *d, yaml_node_t *root, const char *list,
                          const char *field, const char *name)
{
    yaml_node_t *seq = map_get(d, root, list);
    if (!seq || seq->type != YAML_SEQUENCE_NODE)
        return NULL;
    for (yaml_node_item_t *i = seq->data.sequence.items.start; i < seq->data.sequence.items.top;
         i++) {
        yaml_node_t *e = yaml_document_get_node(d, *i);
        const char *n = scalar(map_get(d, e, "name"));
        if (n && !strcmp(n, name)) {
            yaml_node_t *inner = map_get(d, e, field);
            return inner ? inner : e;
        }
    }
    return NULL;
}

/* path relative to the kubeconfig's directory. Newly allocated. */
static char *relative_to(const char *kubeconfig, const char *path)
{
    if (path[0] == '/')
        return xstrdup(path);
    const char *slash = strrchr(kubeconfig, '/');
    if (!slash)
        return xstrdup(path);
    return xasprintf("%.*s/%s", (int)(slash - kubeconfig), kubeconfig, path);
}

static int decode_field(char **out, size_t *len, const char *value, const char *what,
                        struct strbuf *err)
{
    if (kube_base64_decode(out, len, value) < 0) {
        strbuf_addf(err, "kubeconfig: %s is not valid base64", what);
        return SL_EINVAL;
    }
    return 0;
}

int kube_creds_from_kubeconfig(struct kube_creds *out, const char *path, const char *context,
                               struct strbuf *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        strbuf_addf(err, "cannot open kubeconfig '%s': %s", path, strerror(errno));
        return SL_ENOENT;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    struct kube_creds c = {0};
    int rc = SL_EINVAL;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        strbuf_addf(err, "kubeconfig '%s': %zu:%zu: %s", path, parser.problem_mark.line + 1,
                    parser.problem_mark.column + 1, parser.problem ? parser.problem : "bad YAML");
        yaml_parser_delete(&parser);
        fclose(f);
        return SL_EINVAL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    const char *ctx_name =
        context && *context ? context : scalar(map_get(&doc, root, "current-context"));
    yaml_node_t *ctx = ctx_name ? named(&doc, root, "contexts", "context", ctx_name) : NULL;
    if (!ctx) {
        strbuf_addf(err, "kubeconfig '%s': %s", path,
                    ctx_name ? "no such context" : "no context given and no current-context");
        if (ctx_name)
            strbuf_addf(err, " '%s'", ctx_name);
        goto cleanup;
    }
    const char *cluster_name = scalar(map_get(&doc, ctx, "cluster"));
    const char *user_name = scalar(map_get(&doc, ctx, "user"));
    const char *ns = scalar(map_get(&doc, ctx, "namespace"));
    yaml_node_t *cluster =
        cluster_name ? named(&doc, root, "clusters", "cluster", cluster_name) : NULL;
    if (!cluster) {
        strbuf_addf(err, "kubeconfig '%s': context '%s' names no known cluster", path, ctx_name);
        goto cleanup;
    }
    const char *server = scalar(map_get(&doc, cluster, "server"));
    if (!server || !*server) {
        strbuf_addf(err, "kubeconfig '%s': cluster '%s' has no server", path, cluster_name);
        goto cleanup;
    }
    c.server = xstrdup(server);
    const char *v;
    if ((v = scalar(map_get(&doc, cluster, "certificate-authority-data"))) &&
        decode_field(&c.ca_pem, &c.ca_pem_len, v, "certificate-authority-data", err) < 0)
        goto cleanup;
    if (!c.ca_pem && (v = scalar(map_get(&doc, cluster, "certificate-authority"))))
        c.ca_file = relative_to(path, v);
    v = scalar(map_get(&doc, cluster, "insecure-skip-tls-verify"));
    c.insecure = v && !strcmp(v, "true");
    if (ns && *ns)
        c.namespace_ = xstrdup(ns);

    yaml_node_t *user = user_name ? named(&doc, root, "users", "user", user_name) : NULL;
    if (user_name && !user) {
        strbuf_addf(err, "kubeconfig '%s': context '%s' names no known user '%s'", path, ctx_name,
                    user_name);
        goto cleanup;
    }
    if (map_get(&doc, user, "exec") || map_get(&doc, user, "auth-provider") ||
        map_get(&doc, user, "username")) {
        strbuf_addf(err,
                    "kubeconfig '%s': user '%s' uses an exec plugin, an auth provider or a "
                    "password, which sluice does not support: use a token, a token file or a "
                    "client certificate",
                    path, user_name);
        goto cleanup;
    }
    if ((v = scalar(map_get(&doc, user, "token"))) && *v)
        c.token = xstrdup(v);
    else if ((v = scalar(map_get(&doc, user, "tokenFile"))) && *v)
        c.token_file = relative_to(path, v);
    if ((v = scalar(map_get(&doc, user, "client-certificate-data"))) &&
        decode_field(&c.cert_pem, &c.cert_pem_len, v, "client-certificate-data", err) < 0)
        goto cleanup;
    if (!c.cert_pem && (v = scalar(map_get(&doc, user, "client-certificate"))))
        c.cert_file = relative_to(path, v);
    if ((v = scalar(map_get(&doc, user, "client-key-data"))) &&
        decode_field(&c.key_pem, &c.key_pem_len, v, "client-key-data", err) < 0)
        goto cleanup;
    if (!c.key_pem && (v = scalar(map_get(&doc, user, "client-key"))))
        c.key_file = relative_to(path, v);
    if ((c.cert_pem || c.cert_file) != (c.key_pem || c.key_file)) {
        strbuf_addf(err,
                    "kubeconfig '%s': user '%s' has a client certificate without a key or "
                    "a key without a certificate",
                    path, user_name);
        goto cleanup;
    }
    c.source = xasprintf("kubeconfig %s, context %s", path, ctx_name);
    rc = 0;
cleanup:
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    if (rc < 0) {
        kube_creds_release(&c);
        return rc;
    }
    *out = c;
    return 0;
}
