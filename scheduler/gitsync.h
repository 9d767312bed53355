/*
 * scheduler/gitsync.h - the DAG repository: fetch with libgit2, read a commit's DAG
 * files, and materialize read-only checkouts of commits.
 *
 * Everything lives under one directory of ours (<data_dir>/git):
 *
 *     lock                   flock()ed by the process that uses the directory
 *     repo.git/              a bare clone; refs/sluice/head names the last fetched commit
 *     checkouts/<sha>/       a commit's files, read-only, for the steps of runs pinned to it
 *     checkouts/.tmp-*       checkouts being written (renamed into place when complete)
 *
 * A fetch asks the remote for its refs, downloads only when the ref moved, and reads the
 * DAG files from the commit's tree: never from a working tree that may be half updated.
 * A force-push or a rewritten history is followed like any other move. A clone that
 * libgit2 finds corrupt (or cannot open) is removed and cloned again. A process killed
 * mid-fetch leaves stale lock files and temporary checkouts: gitsync_open(), which holds
 * the directory's lock, removes them.
 *
 * Credentials never appear in messages: URLs are shown without their user information.
 *
 * Thread-safety: a gitsync may be used from several threads; its calls are serialized
 * by a mutex (libgit2 objects of one repository are not thread-safe), so a checkout asked
 * for while a fetch runs waits for it. gitsync_gc() touches only the file system.
 */
#ifndef SLUICE_SCHEDULER_GITSYNC_H
#define SLUICE_SCHEDULER_GITSYNC_H

#include "common/strbuf.h"
#include "scheduler/registry.h"

#include <stddef.h>
#include <stdint.h>

struct gitsync_options {
    const char *url;      /* https://, ssh://, user@host:path, git://, file:// or a local path */
    const char *ref;      /* a branch or a tag; NULL: "main" */
    const char *path;     /* sub-directory holding the DAG files; NULL or "": the root */
    const char *dir;      /* ours: the clone and the checkouts (created if missing) */
    const char *username; /* https or ssh user; NULL: the URL's, else "git" */
    const char *password; /* https password or token; NULL: none */
    const char *ssh_key_file;     /* private key for ssh; NULL: none */
    const char *known_hosts_file; /* required for ssh: the server's key must be listed */
    const char *ca_file;          /* https: CA certificates (PEM); NULL: the system's bundle.
                                   * Process-wide in libgit2: the last gitsync_open() wins */
    int64_t timeout_ms;           /* a fetch running longer is abandoned; 0: 5 minutes */
};

struct gitsync;

/* Checks the options without touching anything: the URL and directory are set, the ref
 * is a valid name, the sub-path is relative without "..", and ssh has known_hosts.
 * Returns 0 or SL_EINVAL with the reason in err. */
int gitsync_check_options(const struct gitsync_options *o, struct strbuf *err);

/*
 * Checks the options, creates dir, takes its lock, cleans what a killed process left
 * and opens (or creates) the clone. Returns 0, SL_EINVAL (bad options), SL_EEXIST
 * (another process holds the directory) or SL_EIO, with a message in err.
 */
int gitsync_open(struct gitsync **out, const struct gitsync_options *o, struct strbuf *err);
void gitsync_close(struct gitsync *g);

/* "git:<url without credentials>#<ref>", for logs and the sync status. */
const char *gitsync_name(const struct gitsync *g);

/*
 * Fetches the ref, then reads every DAG file (*.yaml, *.yml; hidden entries, symbolic
 * links and submodules skipped) under the sub-path of its commit into snap, which the
 * caller initialized: paths are relative to the sub-path, and snap->commit_sha is set.
 * Files over max_bytes are listed with too_big. Also makes the commit's checkout, so
 * that runs pinned to it can start at once. Returns 0, or SL_EIO / SL_ENOENT (the ref
 * or the sub-path does not exist) / SL_ETIMEDOUT with the reason in err; snap is then
 * left empty and nothing changed.
 */
int gitsync_fetch(struct gitsync *g, struct registry_snapshot *snap, size_t max_bytes,
                  struct strbuf *err);

/*
 * The read-only checkout of commit_sha (40 hex): its directory, newly allocated, made
 * first if missing (written under a temporary name and renamed into place, so it is never
 * seen half written). Returns 0, SL_EINVAL (not a commit id), SL_ENOENT (the clone does
 * not have that commit) or SL_EIO.
 */
int gitsync_checkout(struct gitsync *g, char **out_dir, const char *commit_sha, struct strbuf *err);

/*
 * Removes the checkouts of commits not in keep[] that are older than min_age_ms (so a
 * checkout made for a sync that the caller has not seen yet survives). Sets *out_removed
 * (may be NULL). Returns 0 or the first -errno.
 */
int gitsync_gc(struct gitsync *g, const char *const *keep, size_t n_keep, int64_t min_age_ms,
               size_t *out_removed);

/* The directory of checkouts: <dir>/checkouts. */
const char *gitsync_checkouts_dir(const struct gitsync *g);

#endif
