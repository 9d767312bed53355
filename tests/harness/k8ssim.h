/*
 * tests/harness/k8ssim.h - the Kubernetes API simulator (tests/k8s/sim.py), started
 * privately for integration tests, the way harness.h starts PostgreSQL and Redis.
 *
 * The simulator is an independent Python program (tests/k8s/README.md): it speaks the
 * API's wire format on 127.0.0.1 (plain HTTP, or TLS with a private CA) and runs each
 * pod's containers as local processes. This file starts and stops it, and talks to its
 * control endpoints (/_sim/...) with a few lines of plain HTTP over a socket - never with
 * libcurl, which is what the code under test uses.
 *
 * Who may call what: test code only, not thread-safe. A simulator belongs to the process
 * that started it; only the owner stops it (a forked Check test calling stop on an
 * inherited struct gets SL_EINVAL and nothing happens). Cleanup follows harness.h: stop,
 * then an atexit handler in the owner, then the parent-death signal (SIGTERM, on which
 * the simulator kills every pod process and exits); its directory is named
 * sluice-harness.<owner pid>.k8ssim.XXXXXX so harness_sweep_stale() removes leftovers.
 *
 * Errors: 0 or a negative code from common/error.h, with a one-line reason on stderr
 * (and the simulator's log if it failed to start). Memory: strings in the struct belong
 * to it until harness_k8ssim_stop(); *_control() results are newly allocated.
 */
#ifndef SLUICE_TESTS_HARNESS_K8SSIM_H
#define SLUICE_TESTS_HARNESS_K8SSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct harness_k8ssim_options {
    const char *const *claims; /* "NAME=HOSTDIR": PersistentVolumeClaims the pods may mount */
    size_t n_claims;
    const char *const *nodes; /* JSON node definitions ({"name","labels","taints","gpus"});
                               * none: one plain node */
    size_t n_nodes;
    const char *token;       /* require "Authorization: Bearer <token>"; NULL: no auth */
    bool tls;                /* serve HTTPS with a private CA (ca_path in the struct) */
    bool client_certs;       /* with tls: accept client certificates signed by the CA
                              * instead of the token */
    bool no_schema;          /* do not validate created pods against the official schema */
    double bookmark_seconds; /* 0: 1 s */
};

struct harness_k8ssim {
    char *dir;       /* public: private temp dir */
    char *state_dir; /* public: per-pod host directories (pods/<uid>/...) */
    char *log_path;  /* public: the simulator's stderr */
    char *url;       /* public: "http://127.0.0.1:N" or "https://127.0.0.1:N" */
    char *ca_path;   /* public: with tls, the CA certificate (PEM); else NULL */
    char *client_cert_path, *client_key_path; /* public: with client_certs, a client pair */
    char *token; /* public: the token required, or NULL (sent by *_request()) */
    int port;    /* public */
    pid_t pid;   /* public: the simulator, leader of its process group; 0 if stopped */
    pid_t owner; /* private */
};

/* The official schema, $SLUICE_K8S_SCHEMA else <src>/../shared/vectors/kubernetes/
 * api__v1_openapi.json. Static storage. */
const char *harness_k8s_schema_path(void);

/* Starts the simulator (opts may be NULL). Blocks until it listens. Returns 0, SL_ENOENT
 * (python3 or sim.py missing), SL_EIO or SL_ETIMEDOUT; on failure *s stays zeroed. */
int harness_k8ssim_start(struct harness_k8ssim *s, const struct harness_k8ssim_options *opts);

/* SIGTERM (the simulator kills its pods' processes), SIGKILL of the group after 10 s,
 * removes s->dir, zeroes *s. A no-op on a zeroed struct; SL_EINVAL if not the owner. */
int harness_k8ssim_stop(struct harness_k8ssim *s);

/*
 * One HTTP request to the simulator (control endpoints, or the API itself as a plain
 * client would, with the token when one is required): method, path (with query), body (JSON or
 * NULL). *status gets the HTTP status; *out (may be NULL) the body, newly allocated. Returns 0,
 * SL_ECONN or SL_EIO. Plain HTTP only: with tls, the control endpoints are not reachable (tests
 * that need both use two simulators).
 */
int harness_k8ssim_request(int *status, char **out, const struct harness_k8ssim *s,
                           const char *method, const char *path, const char *body);

/* POST path with body, expecting 200; returns 0 or SL_EIO. */
int harness_k8ssim_post(const struct harness_k8ssim *s, const char *path, const char *body);

/* The value of the integer field name in GET /_sim/stats, or -1. */
long harness_k8ssim_stat(const struct harness_k8ssim *s, const char *name);

#endif
