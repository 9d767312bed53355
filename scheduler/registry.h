/*
 * scheduler/registry.h - DAG files in, DAG versions and import errors out.
 *
 * The registry reads every DAG file from a source, parses each with dsl/, and
 * records the result in the store: a valid file becomes (or stays) its DAG's
 * current version; an invalid one becomes an import error with every
 * file:line:column message, and the DAG's previous good version stays current.
 * DAGs whose file disappeared, or whose file now declares another name, are
 * deactivated, never deleted. Two files declaring one DAG name are both errors.
 *
 * The source is an interface so that the Git source (its own issue) replaces
 * the directory source in one line: a source lists its files with their
 * content, all from one consistent snapshot, and names the commit they come
 * from (NULL for a directory).
 *
 * Blocking: registry_sync() runs store statements; call it from the thread
 * that owns the store.
 */
#ifndef SLUICE_SCHEDULER_REGISTRY_H
#define SLUICE_SCHEDULER_REGISTRY_H

#include "common/arena.h"
#include "dsl/dsl.h"
#include "store/store.h"

#include <stddef.h>

struct registry_file {
    const char *path;    /* relative to the source's root, '/'-separated, e.g. "ml/iris.yaml" */
    const char *content; /* the file's bytes (NUL-terminated for convenience) */
    size_t len;
    bool too_big; /* over the size limit: content is NULL */
};

struct registry_snapshot {
    struct registry_file *files; /* sorted by path */
    size_t n_files;
    const char *commit_sha; /* or NULL */
    struct arena mem;       /* owns everything above */
};

struct registry_source {
    const char *name; /* for logs, e.g. "dir:dags" */
    /* Reads every *.yaml and *.yml file into snap (initialized by the caller); files
     * over max_bytes are listed with too_big set. Returns 0, or a negative code with a
     * message in err. */
    int (*read)(struct registry_source *src, struct registry_snapshot *snap, size_t max_bytes,
                struct strbuf *err);
    void (*free)(struct registry_source *src);
};

/* A source reading the directory tree at root (hidden entries skipped, symbolic
 * links not followed). Returns 0 or SL_ENOENT. Free with src->free(src). */
int registry_dir_source(struct registry_source **out, const char *root);

/* Lists the DAG files under dir, recursively, sorted; paths are dir-prefixed and
 * newly allocated (free each and the array). Used by the source and by the CLI. */
int registry_list_dir(char ***out, size_t *out_n, const char *dir, struct strbuf *err);

void registry_snapshot_init(struct registry_snapshot *snap);
void registry_snapshot_release(struct registry_snapshot *snap);

struct registry_report {
    size_t files;       /* DAG files read */
    size_t parsed;      /* of which parsed (the others' content was unchanged) */
    size_t valid;       /* parsed and recorded */
    size_t changed;     /* DAGs whose current version changed (new DAGs included) */
    size_t invalid;     /* recorded as import errors */
    size_t deactivated; /* DAGs deactivated by this sync */
};

/*
 * What the last successful sync saw of each file (a hash of its content, and the DAG it
 * declared or that it was invalid), so that the next sync parses and writes only files
 * whose content changed. Valid only with the store it was built against: clear it when
 * another process may have synced (a new leadership). Not thread-safe; owned by the
 * caller of registry_apply().
 */
struct registry_cache_entry;
struct registry_cache {
    struct registry_cache_entry *v; /* sorted by path */
    size_t n, alloc;
};
void registry_cache_init(struct registry_cache *c);
void registry_cache_clear(struct registry_cache *c);
void registry_cache_release(struct registry_cache *c);

/*
 * Syncs the store with a snapshot of the source's files. opts may be NULL (dsl
 * defaults); cache may be NULL (every file parsed and written). With a commit, the DAGs
 * valid in the snapshot are pinned to it for the runs created from now on
 * (store_dags_set_commit). Returns 0 (problems in DAG files are import errors, not
 * failures), or a negative code when the store failed: the cache is then cleared, and
 * nothing was deactivated unless its file is gone.
 */
int registry_apply(struct store *st, const struct registry_snapshot *snap, const char *source_name,
                   const struct dsl_options *opts, struct registry_cache *cache,
                   struct registry_report *report, struct strbuf *err);

/* Reads a snapshot from src, then registry_apply(). A source that fails changes nothing:
 * a failed sync never hides DAGs. */
int registry_sync(struct store *st, struct registry_source *src, const struct dsl_options *opts,
                  struct registry_cache *cache, struct registry_report *report, struct strbuf *err);

#endif
