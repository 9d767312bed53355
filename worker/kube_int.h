/*
 * worker/kube_int.h - what the kubernetes executor's files share: credentials and the
 * HTTP client. Not for other modules (worker/kube.h is the contract); the tests use it.
 *
 *   kube_config.c   credentials: in-cluster (service account) or a kubeconfig file
 *   kube_client.c   the API client: libcurl multi-socket on a libuv loop, a client-side
 *                   rate limiter (QPS and burst, a token bucket as client-go's), retries
 *   kube_pod.c      the Pod builder (pure)
 *   kube_exec.c     the context (pod watch, garbage collection) and the executor
 *
 * Threading: every function here runs on the loop's thread (kube_creds_* at start-up:
 * they read files). Callbacks run on that thread.
 */
#ifndef SLUICE_WORKER_KUBE_INT_H
#define SLUICE_WORKER_KUBE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct strbuf;

#define KUBE_LOG                 "kube"
#define KUBE_SA_DIR              "/var/run/secrets/kubernetes.io/serviceaccount"
#define KUBE_DEFAULT_QPS         50.0
#define KUBE_DEFAULT_BURST       100
#define KUBE_DEFAULT_MAX_RETRIES 10
#define KUBE_MAX_BODY_BYTES      (256u * 1024 * 1024) /* the largest response kept whole */
#define KUBE_TOKEN_CHECK_MS      10000                /* token file: changed? at most this often */

/* --- credentials (kube_config.c) ------------------------------------------------------ */

/* Where the API is and how to prove who we are. Every field may be NULL but server. */
struct kube_creds {
    char *server;     /* "https://10.0.0.1:443" (no trailing slash) */
    char *token;      /* a bearer token given inline */
    char *token_file; /* a bearer token read from this file (and re-read when it changes) */
    char *ca_file;    /* CA bundle to verify the server */
    char *ca_pem;     /* ... or inline PEM (certificate-authority-data, decoded) */
    size_t ca_pem_len;
    char *cert_file, *key_file; /* client certificate and key */
    char *cert_pem, *key_pem;   /* ... or inline PEM (client-*-data, decoded) */
    size_t cert_pem_len, key_pem_len;
    bool insecure;    /* insecure-skip-tls-verify: only when the kubeconfig says so */
    char *namespace_; /* the context's (or the service account's) namespace, or NULL */
    char *source;     /* "in-cluster" or "kubeconfig <path> context <name>", for logs */
};

/*
 * In-cluster credentials: KUBERNETES_SERVICE_HOST and _PORT, and sa_dir (NULL: KUBE_SA_DIR)
 * /token (as token_file: re-read when rotated), /ca.crt and /namespace. Returns 0, or
 * SL_ENOENT with the reason appended to err (not in a cluster).
 */
int kube_creds_in_cluster(struct kube_creds *out, const char *sa_dir, struct strbuf *err);

/*
 * Credentials from a kubeconfig: context (NULL: current-context) -> its cluster (server,
 * certificate-authority[-data], insecure-skip-tls-verify) and user (token, tokenFile,
 * client-certificate[-data], client-key[-data]). Relative file names are relative to
 * the kubeconfig's directory. exec plugins, auth providers and basic auth are refused.
 * Returns 0, SL_ENOENT (no such file) or SL_EINVAL, with the reason appended to err.
 */
int kube_creds_from_kubeconfig(struct kube_creds *out, const char *path, const char *context,
                               struct strbuf *err);

void kube_creds_release(struct kube_creds *c);

/* Zeroes n bytes at p in a way the compiler cannot drop (secrets in memory). */
void kube_wipe(void *p, size_t n);

/* Decodes standard base64 (whitespace ignored). Returns 0 and a new buffer (NUL-terminated
 * for convenience), or SL_EINVAL. */
int kube_base64_decode(char **out, size_t *out_len, const char *in);

/* --- the client (kube_client.c) ------------------------------------------------------- */

struct kube_client;
struct kube_call;

struct kube_client_limits {
    double qps;                 /* 0: KUBE_DEFAULT_QPS */
    int burst;                  /* 0: KUBE_DEFAULT_BURST */
    int max_retries;            /* 0: KUBE_DEFAULT_MAX_RETRIES */
    int64_t request_timeout_ms; /* non-streaming requests; 0: 30 s */
};

/* The outcome of a call. Valid during the callback only. */
struct kube_response {
    long status;      /* the HTTP status, or 0 when no response came (a transport error) */
    const char *body; /* the body (for a stream: only when status is not 2xx) */
    size_t len;
    const char *error; /* status 0: libcurl's description; else NULL */
    bool unsent;       /* status 0 and the request surely never reached the server */
    int attempts;      /* how many times it was sent */
};

/* A stream's body bytes (status 2xx only), as they arrive. */
typedef void (*kube_data_cb)(void *data, const char *buf, size_t len);
/* The end of a call: once, unless the call was cancelled. */
typedef void (*kube_done_cb)(void *data, const struct kube_response *r);

enum kube_method { KUBE_GET, KUBE_POST, KUBE_DELETE };

/* Retries, as decided by the client (kube_client.c has the table):
 *   GET and DELETE  429 and 5xx (waiting max(Retry-After, backoff)), connection errors
 *                   (backoff), up to max_retries
 *   POST            429, and 5xx that carry Retry-After (the server asks for it), and
 *                   connection errors before anything was sent; any other failure goes
 *                   back to the caller, which must find out whether it was applied
 *   streams         as GET until a 2xx response starts; after that, a drop ends the call
 */

/* Creates a client for creds on loop. Copies what it needs. Returns 0 or SL_EINVAL. */
int kube_client_new(struct kube_client **out, uv_loop_t *loop, const struct kube_creds *creds,
                    const struct kube_client_limits *limits);

/*
 * Starts a call: method on path (with its query, e.g. "/api/v1/namespaces/x/pods?watch=1"),
 * body (JSON, POST only; copied). stream: body bytes go to on_data as they come, no
 * overall timeout. The call waits for the rate limiter first; nothing happens inside this
 * function (callbacks always come later). Returns the call, valid until on_done returns
 * or kube_call_cancel().
 */
struct kube_call *kube_call_start(struct kube_client *c, enum kube_method method, const char *path,
                                  const char *body, bool stream, kube_data_cb on_data,
                                  kube_done_cb on_done, void *data);

/* Cancels a call: no callback comes after this. Safe inside any callback, also the call's
 * own on_data. */
void kube_call_cancel(struct kube_call *call);

/* Requests sent (every retry counts). */
uint64_t kube_client_requests(const struct kube_client *c);

/* Ends every open call (on_done with status 0, "the client is closing", so owners can free
 * their data; they must not start calls then) and closes the client's handles;
 * on_closed(data) when done. */
void kube_client_close(struct kube_client *c, void (*on_closed)(void *data), void *data);

#endif
