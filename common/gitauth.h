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
 * fields are not locked). gitauth_use_ca() changes a process-wide libgit2 setting.
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

/* The bodies of the two callbacks (libgit2's signatures, a in place of the payload). */
int gitauth_credentials(git_credential **out, struct gitauth *a, const char *user_from_url,
                        unsigned int allowed);
int gitauth_certificate(struct gitauth *a, git_cert *cert, int valid, const char *host);

/*
 * Points libgit2 (process-wide) at the CA certificates for https: ca_file, else the
 * system's bundle when it exists (Debian's libgit2 is built with mbedTLS, which knows no
 * store of its own). Returns 0, or SL_EINVAL with the reason in err (ca_file unreadable
 * or not PEM).
 */
int gitauth_use_ca(const char *ca_file, struct strbuf *err);

/*
 * Whether an OpenSSH known_hosts file lists host with exactly this key (the key blob in
 * SSH wire format, as libssh2 gives it). Plain, "[host]:port" and hashed ("|1|salt|mac")
 * host patterns are understood, as are comma-separated lists; "@revoked" lines refuse
 * the key; "@cert-authority" lines are ignored.
 */
bool gitauth_known_host(const char *known_hosts_text, const char *host, const unsigned char *key,
                        size_t key_len);

#endif
