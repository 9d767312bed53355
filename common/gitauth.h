/*
 * common/gitauth.h - how sluice authenticates to a Git server, for every libgit2 remote it
 * opens: the DAG sync (scheduler/gitsync.c) and `from: git` inputs (worker/artifacts.c).
 *
 * One policy for both, from the git.* settings: an https password or token, an ssh key
 * (with the server's host key checked against a known_hosts file, never accepted blindly),
 * and the CA certificates for https. The credentials are offered once per connection: a
 * server that refuses them gets an authentication error, not a loop.
 *
 * Ownership: a struct gitauth owns copies of its strings; gitauth_release() wipes the
 * password. Threads: a struct gitauth serves one connection at a time (its per-connection
 * fields are not locked); gitauth_use_ca() is serialized and changes a process-wide
 * libgit2 setting.
 *
 * Why in common/: the sync (scheduler/) and the `from: git` inputs (worker/) must
 * authenticate the same way, and neither module may depend on the other; this is the one
 * part of common/ that speaks to an external library (libgit2, and OpenSSL for hashed
 * known_hosts entries).
 */
#ifndef SLUICE_COMMON_GITAUTH_H
#define SLUICE_COMMON_GITAUTH_H

#include "common/strbuf.h"

#include <git2.h>
#include <stdbool.h>
#include <stddef.h>

struct gitauth {
    char *username;         /* NULL: the URL's user, else "git" */
    char *password;         /* https password or token; NULL: none */
    char *ssh_key_file;     /* ssh private key; NULL: none */
    char *known_hosts_file; /* required for ssh host keys to be accepted */
    /* per connection (gitauth_begin()) */
    int cred_calls;
    char *cert_error; /* why a host key was refused, for the error message */
};

/* Fills a with copies of the strings (NULL or "" stays NULL). */
void gitauth_init(struct gitauth *a, const char *username, const char *password,
                  const char *ssh_key_file, const char *known_hosts_file);

/* Frees a's strings (the password wiped first). */
void gitauth_release(struct gitauth *a);

/* Resets the per-connection state before a connect. */
void gitauth_begin(struct gitauth *a);

/*
 * Sets cb's credentials and certificate_check callbacks, with payload a. A caller that
 * needs the payload for callbacks of its own (transfer progress) calls gitauth_credentials()
 * and gitauth_certificate() from its own callbacks instead.
 */
void gitauth_callbacks(git_remote_callbacks *cb, struct gitauth *a);

/*
 * The credentials callback's body (libgit2's signature, a in place of the payload). A
 * request for the user name alone (ssh asks it first when the URL names none) is
 * answered at once; the credentials themselves are offered once per connection, a second
 * request returns GIT_EAUTH ("authentication failed"), and none configured for what the
 * server allows returns GIT_EAUTH with what to configure. Returns 0 and sets *out, or a
 * libgit2 error code with the message set (git_error_set_str).
 */
int gitauth_credentials(git_credential **out, struct gitauth *a, const char *user_from_url,
                        unsigned int allowed);

/*
 * The certificate callback's body: TLS certificates are left to libgit2 (0 if valid, else
 * GIT_PASSTHROUGH); an ssh host key must be listed in a->known_hosts_file, else
 * GIT_ECERTIFICATE with the reason in a->cert_error (for the caller's message).
 */
int gitauth_certificate(struct gitauth *a, git_cert *cert, int valid, const char *host);

/*
 * Points libgit2 (process-wide) at the CA certificates for https: ca_file, else the
 * system's bundle when it exists (Debian's libgit2 is built with mbedTLS, which knows no
 * store of its own). Calls are serialized; asking again for the certificates already set
 * changes nothing (libgit2 would free the chain that open connections use), and the
 * first call takes a libgit2 reference for the life of the process, so that the setting
 * survives every caller's git_libgit2_shutdown(). Callers of one process are expected to
 * ask for the same file (git.ca_file). Returns 0, or SL_EINVAL with the reason in err
 * (ca_file unreadable or not PEM).
 */
int gitauth_use_ca(const char *ca_file, struct strbuf *err);

/* url without its user information ("https://host/x", "ssh://host/x"), for names and
 * messages. Newly allocated. */
char *gitauth_redact_url(const char *url);

/*
 * url without what must not travel (the scheduler puts the DAG repository's URL in step
 * dispatches): http(s) URLs lose their user information (a token may be the user name),
 * ssh URLs keep their user (the login, which the server needs) and lose a password.
 * Newly allocated.
 */
char *gitauth_shareable_url(const char *url);

/*
 * Whether an OpenSSH known_hosts file lists host with exactly this key (the key blob in
 * SSH wire format, as libssh2 gives it). Plain, "[host]:port" and hashed ("|1|salt|mac")
 * host patterns are understood, as are comma-separated lists; "@revoked" lines refuse
 * the key; "@cert-authority" lines are ignored.
 */
bool gitauth_known_host(const char *known_hosts_text, const char *host, const unsigned char *key,
                        size_t key_len);

#endif
