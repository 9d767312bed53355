/*
 * worker/artifacts.h - the artifact repository (s3, fs, or none) and staging of a step's
 * artifacts around the local executor; also what `sluice artifact get|put` runs in pods.
 *
 * Keys. The scheduler renders every output artifact's key as
 * <dag>/<run>/<step>[/<map_index>]/<attempt>/<artifact> (scheduler/engine.c); the
 * repository stores it under <prefix>/<key>. The log of an attempt goes next to its
 * artifacts as <...>/<attempt>/sluice.log ('.' cannot appear in an artifact name).
 * Keys with an empty, '.' or '..' component, or a leading '/', are refused: a key comes
 * from a Redis message, which anyone who can write to Redis can forge.
 *
 * Repositories (docs/artifacts.md has the configuration):
 *   none  the default: nothing is staged; steps of one run on one worker share the run
 *         directory (as before artifacts existed). Inputs from http(s):// and file:// URIs
 *         are still fetched.
 *   s3    objects in a bucket (worker/s3.h): a file as itself, a directory as a tar
 *         (gzip'd unless artifacts.compression is none) marked x-amz-meta-sluice-kind: dir
 *         and extracted on the way in with worker/archive.h's rules.
 *   fs    a shared volume mounted at the same path everywhere (an NFS ReadWriteMany PVC):
 *         <root>/<prefix>/<key> is the artifact itself, file or directory. Nothing is
 *         copied: an output is renamed into the repository and a symbolic link to it left
 *         in its place (copied only when the volume is another filesystem), an input is a
 *         symbolic link to it.
 *
 * Locations in templates. `{{ steps.<s>.outputs.artifacts.<a> }}` renders as
 * "$(SLUICE_ARTIFACT_BASE)<key>"; the executor defines ARTIFACTS_BASE_VAR as the
 * repository's artifacts_base(), so a command gets the artifact's own location: the shared
 * path for fs (nothing staged, nothing copied), s3://bucket/prefix/key for s3, the bare
 * key for none. An input's `from` carries the bare key (the scheduler drops the reference
 * there, for workers of earlier versions); staging also drops one it finds.
 *
 * Sources an input may name (spec inputs.artifacts.<name>.from): a key as above; a JSON
 * list of keys (the fan-in of a fanned-out step), staged as <path>/<index>; s3://bucket/key
 * (an s3 repository's endpoint and credentials); file:///abs/path (linked); http:// and
 * https:// URLs (downloaded; no other scheme is ever followed).
 *
 * Placing something at a path first removes what is there (a file, a link, or a whole
 * directory tree, never following links), then moves the new thing in with rename(), so a
 * reader never sees half an input.
 *
 * Secrets: credentials come from artifacts.credentials_dir files or the AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN variables; for `from: git` inputs, from the
 * git.* settings (git.password_file read at each fetch that needs it). They are never
 * logged and are wiped when the repository is closed.
 *
 * Threads and blocking: every function blocks on disk and network; the local executor
 * calls them on libuv's threadpool. A repository is read-only after artifacts_open(), so
 * threads may share it. Errors: 0 or a negative code from common/error.h, detail in err.
 */
#ifndef SLUICE_WORKER_ARTIFACTS_H
#define SLUICE_WORKER_ARTIFACTS_H

#include "common/config.h"
#include "common/strbuf.h"

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdbool.h>

enum artifacts_kind {
    ARTIFACTS_NONE,
    ARTIFACTS_S3,
    ARTIFACTS_FS,
};

/* Who is to blame when staging fails; the local executor maps it onto its failure kinds. */
enum artifacts_blame {
    ARTIFACTS_BLAME_STEP,      /* a declared output is missing, or is not a file/directory */
    ARTIFACTS_BLAME_ERROR,     /* a missing input object, a refused archive or source, bad
                                * configuration: retrying the same spec cannot help */
    ARTIFACTS_BLAME_TRANSIENT, /* the network or the repository: a retry may succeed */
};

#define ARTIFACTS_LOG_NAME "sluice.log"

/* The variable a step's environment gets with artifacts_base() (see above). */
#define ARTIFACTS_BASE_VAR "SLUICE_ARTIFACT_BASE"

struct artifacts_repo;

/*
 * Opens the repository that c->artifacts describes, reading credentials (see above) and
 * keeping a copy of the git.* credentials for `from: git` inputs.
 * Returns 0 and sets *out (never NULL, even for "none"), or SL_EINVAL with every problem
 * in err (an unknown repository kind, s3 without endpoint or bucket, fs without root or
 * with a root that is not a directory, a bad compression).
 */
int artifacts_open(struct artifacts_repo **out, const struct sl_config *c, struct strbuf *err);

/* Closes r (credentials wiped). NULL is fine. */
void artifacts_close(struct artifacts_repo *r);

enum artifacts_kind artifacts_kind(const struct artifacts_repo *r);

/* Whether finished steps' logs are uploaded (artifacts.archive_logs, and a repository). */
bool artifacts_archive_logs(const struct artifacts_repo *r);

/* "s3://bucket/prefix", "fs:/mnt/artifacts/prefix" or "none", for messages; static to r. */
const char *artifacts_describe(const struct artifacts_repo *r);

/*
 * What comes before a key to name the stored artifact: "<root>/<prefix>/" for fs,
 * "s3://<bucket>/<prefix>/" for s3, "" for none. Static to r.
 */
const char *artifacts_base(const struct artifacts_repo *r);

/*
 * The same from settings, for a worker that only renders them into a Pod: repository is
 * "fs", "s3" or anything else (none); root, bucket and prefix as in artifacts.* (slashes
 * at the prefix's ends and the root's end are dropped). Caller frees.
 */
char *artifacts_base_for(const char *repository, const char *root, const char *bucket,
                         const char *prefix);

/*
 * Stores the file or directory at path under key. Returns 0, SL_ENOENT (path missing),
 * SL_EINVAL (a bad key, path neither a file nor a directory, no repository), or an
 * error from the repository.
 */
int artifacts_put(struct artifacts_repo *r, const char *key, const char *path,
                  const atomic_int *cancel, struct strbuf *err);

/*
 * Places the artifact named by source (a key or a URI, see above) at path, replacing what
 * is there. Returns 0, SL_ENOENT (no such object), SL_EINVAL (a bad source, an unsafe
 * archive), or another error.
 */
int artifacts_get(struct artifacts_repo *r, const char *source, const char *path,
                  const atomic_int *cancel, struct strbuf *err);

/*
 * Places a checkout of the Git repository at url (anything libgit2 clones: a path,
 * file://, git://, http(s)://, ssh://) at commit (a full or abbreviated SHA, or a ref) at
 * path, replacing what is there; path gets the work tree without .git. Authenticates with
 * r's git.* settings (common/gitauth.h: password or token, ssh key with the host key
 * checked against git.known_hosts_file, git.ca_file); r NULL: none. Returns 0, SL_ENOENT
 * (no such commit), SL_EINVAL (credentials or host key refused, bad settings: a retry
 * cannot help), or SL_EIO with libgit2's message.
 */
int artifacts_get_git(const struct artifacts_repo *r, const char *url, const char *commit,
                      const char *path, struct strbuf *err);

/*
 * Stages spec's inputs.artifacts into cwd (relative paths resolve against it), before
 * the step starts. log_fd >= 0 gets one line per input. Returns 0, or an error with the
 * reason in err (naming the artifact) and *blame set.
 */
int artifacts_stage_in(struct artifacts_repo *r, const cJSON *spec, const char *cwd, int log_fd,
                       const atomic_int *cancel, enum artifacts_blame *blame, struct strbuf *err);

/*
 * Stores spec's outputs.artifacts (path -> key) from cwd, after the step succeeded. A
 * missing output is "missing output artifact 'name' (path)", blamed on the step. With no
 * repository, checks only that each declared output exists.
 */
int artifacts_stage_out(struct artifacts_repo *r, const cJSON *spec, const char *cwd, int log_fd,
                        const atomic_int *cancel, enum artifacts_blame *blame, struct strbuf *err);

/*
 * The key of an attempt's log: <dag>/<run>/<step>[/<map_index>]/<attempt>/sluice.log
 * (map_index < 0: none), without the prefix, appended to out.
 */
void artifacts_log_key(struct strbuf *out, const char *dag, const char *run, const char *step,
                       int map_index, int attempt);

/* Uploads the finished attempt's log (spec names the attempt). 0 or an error. */
int artifacts_put_log(struct artifacts_repo *r, const cJSON *spec, const char *log_path,
                      struct strbuf *err);

/*
 * Opens an attempt's archived log for reading, for the API to serve once the log volume
 * no longer has it. s3: downloaded into tmp_dir (NULL: $TMPDIR or /tmp) and unlinked, so
 * the returned descriptor is the only reference; fs: the file itself. Returns 0 and sets
 * *out_fd (the caller closes it), SL_ENOENT (no such log), SL_EINVAL (no repository, or
 * ids that cannot form a key), or another error.
 */
int artifacts_open_log(struct artifacts_repo *r, const char *dag, const char *run, const char *step,
                       int map_index, int attempt, const char *tmp_dir, int *out_fd,
                       struct strbuf *err);

#endif
