/*
 * worker/workdir.c - where a local step's files go: its log path, its run and attempt
 * directories, and the sweep that removes run directories after the retention period.
 *
 * Layout (worker/README.md):
 *
 *   <log_root>/<dag>/<run>/<step>/<attempt>.log             a plain step
 *   <log_root>/<dag>/<run>/<step>/<map_index>.<attempt>.log  an item of a fanned-out step
 *   <work_root>/<dag>/<run>/                                 $SLUICE_RUN_DIR, shared
 *   <work_root>/<dag>/<run>/.attempts/<step>/<attempt>/      $SLUICE_ATTEMPT_DIR
 *   <work_root>/<dag>/<run>/.attempts/<step>/<map_index>.<attempt>/
 *
 * The ids come from a message, which anyone with access to Redis can write, so each one
 * becomes exactly one safe path component (worker_path_component()). The sweep trusts
 * nothing it finds under work_root either: it opens every directory relative to its
 * parent with O_NOFOLLOW and removes symbolic links instead of following them, so a link
 * planted by a step cannot make it delete anything outside work_root.
 */
#include "worker/worker_int.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COMPONENT_MAX  200 /* bytes of a component; NAME_MAX is 255 */
#define COMPONENT_KEEP 183 /* bytes kept of a longer name, before '~' and the hash */

char *worker_path_component(const char *s)
{
    struct strbuf sb = STRBUF_INIT;
    size_t len = strlen(s);

    if (len == 0 || !strcmp(s, ".") || !strcmp(s, ".."))
        strbuf_addch(&sb, '_');
    if (len > COMPONENT_MAX) {
        uint64_t h = 14695981039346656037ULL; /* FNV-1a, 64 bits */
        for (size_t i = 0; i < len; i++) {
            h ^= (unsigned char)s[i];
            h *= 1099511628211ULL;
        }
        strbuf_add(&sb, s, COMPONENT_KEEP);
        strbuf_addf(&sb, "~%016" PRIx64, h);
    } else {
        strbuf_addstr(&sb, s);
    }
    for (size_t i = 0; i < sb.len; i++)
        if (sb.buf[i] == '/')
            sb.buf[i] = '_';
    return strbuf_detach(&sb, NULL);
}

/* Appends "/" + the component made of s. */
static void add_component(struct strbuf *sb, const char *s)
{
    char *c = worker_path_component(s);
    strbuf_addch(sb, '/');
    strbuf_addstr(sb, c);
    free(c);
}

/* Appends "/<attempt>" or "/<map_index>.<attempt>", plus suffix. */
static void add_attempt(struct strbuf *sb, const struct queue_step_msg *m, const char *suffix)
{
    if (m->map_index >= 0)
        strbuf_addf(sb, "/%lld.%lld%s", (long long)m->map_index, (long long)m->attempt, suffix);
    else
        strbuf_addf(sb, "/%lld%s", (long long)m->attempt, suffix);
}

char *worker_log_path(const char *log_root, const struct queue_step_msg *m)
{
    struct strbuf sb = STRBUF_INIT;
    strbuf_addstr(&sb, log_root);
    add_component(&sb, m->dag_id);
    add_component(&sb, m->run_id);
    add_component(&sb, m->step);
    add_attempt(&sb, m, ".log");
    return strbuf_detach(&sb, NULL);
}

char *worker_run_dir(const char *work_root, const struct queue_step_msg *m)
{
    struct strbuf sb = STRBUF_INIT;
    strbuf_addstr(&sb, work_root);
    add_component(&sb, m->dag_id);
    add_component(&sb, m->run_id);
    return strbuf_detach(&sb, NULL);
}

char *worker_attempt_dir(const char *run_dir, const struct queue_step_msg *m)
{
    struct strbuf sb = STRBUF_INIT;
    strbuf_addf(&sb, "%s/.attempts", run_dir);
    add_component(&sb, m->step);
    add_attempt(&sb, m, "");
    return strbuf_detach(&sb, NULL);
}

int worker_mkdir_p(const char *path)
{
    return sl_mkdir_p(path);
}

int worker_dirs_prepare(const char *run_dir, const char *attempt_dir)
{
    int rc = worker_mkdir_p(attempt_dir); /* the run directory is one of its parents */
    struct stat st;
    if (rc == 0 && stat(run_dir, &st) == 0 && !S_ISDIR(st.st_mode))
        rc = -ENOTDIR;
    if (rc == 0 && utimensat(AT_FDCWD, run_dir, NULL, 0) < 0)
        rc = -errno;
    return rc;
}

/* --- The sweep -------------------------------------------------------------------- */

static bool is_kept(const char *path, const char *const *keep, size_t n_keep)
{
    for (size_t i = 0; i < n_keep; i++)
        if (!strcmp(keep[i], path))
            return true;
    return false;
}

/* The run directories of one <dag> directory. */
static void sweep_dag(struct worker_sweep_stats *out, const char *work_root, int root,
                      const char *dag, int64_t cutoff_s, const char *const *keep, size_t n_keep,
                      uv_mutex_t *lock, atomic_int *stop)
{
    int fd = openat(root, dag, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return; /* not a real directory, or gone */
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct strbuf path = STRBUF_INIT;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && !atomic_load(stop)) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode) ||
            st.st_mtim.tv_sec >= cutoff_s)
            continue;
        strbuf_reset(&path);
        strbuf_addf(&path, "%s/%s/%s", work_root, dag, de->d_name);
        if (is_kept(path.buf, keep, n_keep)) {
            out->kept++;
            continue;
        }
        /* Under the lock, and checked again: a step may just have started in it. */
        uv_mutex_lock(lock);
        int rc = 1;
        if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
            st.st_mtim.tv_sec < cutoff_s)
            rc = sl_remove_tree(fd, de->d_name);
        uv_mutex_unlock(lock);
        if (rc == 0) {
            out->removed++;
            sl_debug(WORKER_LOG, "removed run directory \"%s\" (retention)", path.buf);
        } else if (rc < 0) {
            out->errors++;
            sl_warn(WORKER_LOG, "cannot remove run directory \"%s\": %s", path.buf, strerror(-rc));
        }
    }
    closedir(d);
    strbuf_release(&path);
    /* The DAG's directory, if that emptied it; a step starting there holds the lock. */
    uv_mutex_lock(lock);
    if (unlinkat(root, dag, AT_REMOVEDIR) == 0)
        sl_debug(WORKER_LOG, "removed empty directory \"%s/%s\"", work_root, dag);
    uv_mutex_unlock(lock);
}

void worker_dirs_sweep(struct worker_sweep_stats *out, const char *work_root, int64_t cutoff_s,
                       const char *const *keep, size_t n_keep, uv_mutex_t *lock, atomic_int *stop)
{
    memset(out, 0, sizeof(*out));
    int root = open(work_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
        if (errno != ENOENT)
            sl_warn(WORKER_LOG, "cannot read work root \"%s\": %s", work_root, strerror(errno));
        return;
    }
    /* Names first, then the work: removing entries while reading root is avoided. */
    char **names = NULL;
    size_t n = 0, alloc = 0;
    int dup_fd = dup(root);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) {
        if (dup_fd >= 0)
            close(dup_fd);
        close(root);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            fstatat(root, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
            continue;
        XGROW(names, alloc, n + 1);
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        if (!atomic_load(stop))
            sweep_dag(out, work_root, root, names[i], cutoff_s, keep, n_keep, lock, stop);
        free(names[i]);
    }
    free(names);
    close(root);
}
