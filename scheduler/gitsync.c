/*
 * scheduler/gitsync.c - the DAG repository through libgit2.
 *
 * A fetch is: connect, list the remote's refs, download only if the ref's commit is not
 * in the clone yet, point refs/sluice/head at it, then read the DAG files straight from
 * the commit's tree. Reading objects that should be there and are not (or are damaged)
 * means the clone is corrupt: it is removed, created again, and the fetch repeated once.
 */
#include "scheduler/gitsync.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "common/gitauth.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "common/xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define COMP               "git"
#define HEAD_REF           "refs/sluice/head"
#define FETCH_REF          "refs/sluice/fetch"
#define MAX_DEPTH          32
#define DEFAULT_TIMEOUT_MS (5 * 60 * 1000)

struct gitsync {
    pthread_mutex_t lock;
    char *url, *ref, *path, *dir;
    struct gitauth auth;
    int64_t timeout_ms;
    char *name;
    char *repo_dir;      /* <dir>/repo.git */
    char *checkouts_dir; /* <dir>/checkouts */
    int lock_fd;
    git_repository *repo;
    /* per fetch */
    int64_t deadline_ms;
    bool timed_out;
    char *last_checkout; /* the commit of the last checkout made, a base for the next */
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static atomic_uint tmp_counter;

static void init_libgit2(void)
{
    git_libgit2_init();
}

static const char *git_msg(void)
{
    const git_error *e = git_error_last();
    return e && e->message ? e->message : "unknown libgit2 error";
}

static bool is_ssh_url(const char *url)
{
    if (!strncmp(url, "ssh://", 6) || !strncmp(url, "git+ssh://", 10) ||
        !strncmp(url, "ssh+git://", 10))
        return true;
    if (strstr(url, "://") || url[0] == '/' || url[0] == '.')
        return false;
    /* scp-like: [user@]host:path, with the colon before any slash */
    const char *colon = strchr(url, ':');
    const char *slash = strchr(url, '/');
    return colon && (!slash || colon < slash);
}

/* A relative path without "." or ".." components, or "". */
static bool valid_sub_path(const char *p)
{
    if (p[0] == '/')
        return false;
    for (const char *c = p; *c;) {
        size_t n = strcspn(c, "/");
        if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return false;
        c += n;
        while (*c == '/')
            c++;
    }
    return true;
}

/* --- cleaning what a killed process left ----------------------------------------- */

/* Removes lock files and libgit2's temporary pack files under dir, recursively. */
static void remove_stale(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d || depth > MAX_DEPTH) {
        if (d)
            closedir(d);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *p = xasprintf("%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0) {
            size_t n = strlen(de->d_name);
            if (S_ISDIR(st.st_mode)) {
                remove_stale(p, depth + 1);
            } else if ((n > 5 && !strcmp(de->d_name + n - 5, ".lock")) ||
                       !strncmp(de->d_name, "pack_git2_", 10) || !strncmp(de->d_name, "tmp_", 4)) {
                sl_info(COMP, "removing %s, left by an interrupted sync", p);
                unlink(p);
            }
        }
        free(p);
    }
    closedir(d);
}

static void remove_tmp_checkouts(const char *checkouts)
{
    DIR *d = opendir(checkouts);
    if (!d)
        return;
    int fd = dirfd(d);
    struct dirent *de;
    while ((de = readdir(d)))
        if (!strncmp(de->d_name, ".tmp-", 5))
            sl_remove_tree(fd, de->d_name);
    closedir(d);
}

/* --- the clone ----------------------------------------------------------------------- */

static int open_repo(struct gitsync *g, struct strbuf *err)
{
    struct stat st;
    if (stat(g->repo_dir, &st) == 0) {
        if (git_repository_open_bare(&g->repo, g->repo_dir) == 0)
            return 0;
        sl_warn(COMP, "the clone in %s cannot be opened (%s): cloning again", g->repo_dir,
                git_msg());
        int rc = sl_remove_tree(AT_FDCWD, g->repo_dir);
        if (rc < 0) {
            strbuf_addf(err, "cannot remove the damaged clone %s: %s", g->repo_dir, strerror(-rc));
            return SL_EIO;
        }
    }
    if (git_repository_init(&g->repo, g->repo_dir, 1) < 0) {
        strbuf_addf(err, "cannot create a clone in %s: %s", g->repo_dir, git_msg());
        return SL_EIO;
    }
    return 0;
}

/* Removes the clone and starts an empty one: the next fetch downloads everything. */
static int reclone(struct gitsync *g, struct strbuf *err)
{
    git_repository_free(g->repo);
    g->repo = NULL;
    int rc = sl_remove_tree(AT_FDCWD, g->repo_dir);
    if (rc < 0) {
        strbuf_addf(err, "cannot remove the damaged clone %s: %s", g->repo_dir, strerror(-rc));
        return SL_EIO;
    }
    return open_repo(g, err);
}

int gitsync_check_options(const struct gitsync_options *o, struct strbuf *err)
{
    pthread_once(&init_once, init_libgit2);
    if (!o->url || !*o->url || !o->dir || !*o->dir) {
        strbuf_addf(err, "git: a repository URL and a directory are required");
        return SL_EINVAL;
    }
    const char *ref = o->ref && *o->ref ? o->ref : "main";
    char *full = xasprintf("refs/heads/%s", ref);
    int valid = 0;
    if (git_reference_name_is_valid(&valid, full) < 0 || !valid || strstr(ref, "..")) {
        strbuf_addf(err, "git.ref '%s' is not a valid branch or tag name", ref);
        free(full);
        return SL_EINVAL;
    }
    free(full);
    if (!valid_sub_path(o->path ? o->path : "")) {
        strbuf_addf(err, "git.path '%s' must be a relative path without '.' or '..'", o->path);
        return SL_EINVAL;
    }
    if (is_ssh_url(o->url) && !(o->known_hosts_file && *o->known_hosts_file)) {
        strbuf_addf(err, "git: an ssh repository needs git.known_hosts_file, so that the "
                         "server's key can be checked");
        return SL_EINVAL;
    }
    return 0;
}

int gitsync_open(struct gitsync **out, const struct gitsync_options *o, struct strbuf *err)
{
    int rc = gitsync_check_options(o, err);
    if (rc < 0)
        return rc;
    const char *ref = o->ref && *o->ref ? o->ref : "main";
    const char *path = o->path ? o->path : "";
    struct gitsync *g = xcalloc(1, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    g->lock_fd = -1;
    g->url = xstrdup(o->url);
    g->ref = xstrdup(ref);
    g->path = xstrdup(path);
    while (*g->path && g->path[strlen(g->path) - 1] == '/')
        g->path[strlen(g->path) - 1] = '\0';
    g->dir = xstrdup(o->dir);
    gitauth_init(&g->auth, o->username, o->password, o->ssh_key_file, o->known_hosts_file);
    g->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
    char *shown = gitauth_redact_url(g->url);
    g->name = xasprintf("git:%s#%s", shown, g->ref);
    free(shown);
    g->repo_dir = xasprintf("%s/repo.git", g->dir);
    g->checkouts_dir = xasprintf("%s/checkouts", g->dir);

    rc = sl_mkdir_p(g->checkouts_dir);
    if (rc < 0) {
        strbuf_addf(err, "cannot create %s: %s", g->checkouts_dir, strerror(-rc));
        gitsync_close(g);
        return SL_EIO;
    }
    char *lock_path = xasprintf("%s/lock", g->dir);
    g->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (g->lock_fd < 0 || flock(g->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        bool busy = g->lock_fd >= 0 && errno == EWOULDBLOCK;
        strbuf_addf(err, busy ? "%s is in use by another process" : "cannot lock %s: %s", lock_path,
                    strerror(errno));
        free(lock_path);
        gitsync_close(g);
        return busy ? SL_EEXIST : SL_EIO;
    }
    free(lock_path);
    if (gitauth_use_ca(o->ca_file, err) < 0) {
        gitsync_close(g);
        return SL_EINVAL;
    }
    remove_stale(g->repo_dir, 0);
    remove_tmp_checkouts(g->checkouts_dir);
    rc = open_repo(g, err);
    if (rc < 0) {
        gitsync_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

void gitsync_close(struct gitsync *g)
{
    if (!g)
        return;
    git_repository_free(g->repo);
    if (g->lock_fd >= 0)
        close(g->lock_fd);
    free(g->url);
    free(g->ref);
    free(g->path);
    free(g->dir);
    gitauth_release(&g->auth);
    free(g->name);
    free(g->repo_dir);
    free(g->checkouts_dir);
    free(g->last_checkout);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

const char *gitsync_name(const struct gitsync *g)
{
    return g->name;
}

const char *gitsync_checkouts_dir(const struct gitsync *g)
{
    return g->checkouts_dir;
}

static int on_credentials(git_credential **out, const char *url, const char *user_from_url,
                          unsigned int allowed, void *payload)
{
    (void)url;
    struct gitsync *g = payload;
    return gitauth_credentials(out, &g->auth, user_from_url, allowed);
}

static int on_certificate(git_cert *cert, int valid, const char *host, void *payload)
{
    struct gitsync *g = payload;
    return gitauth_certificate(&g->auth, cert, valid, host);
}

static int on_transfer(const git_indexer_progress *stats, void *payload)
{
    (void)stats;
    struct gitsync *g = payload;
    if (sl_wall_ms() > g->deadline_ms) {
        g->timed_out = true;
        git_error_set_str(GIT_ERROR_NET, "the fetch took too long");
        return -1;
    }
    return 0;
}

static void set_callbacks(git_remote_callbacks *cb, struct gitsync *g)
{
    cb->credentials = on_credentials;
    cb->certificate_check = on_certificate;
    cb->transfer_progress = on_transfer;
    cb->payload = g;
}

/* --- reading a commit ----------------------------------------------------------------- */

static bool is_dag_name(const char *name)
{
    size_t n = strlen(name);
    return (n > 5 && !strcmp(name + n - 5, ".yaml")) || (n > 4 && !strcmp(name + n - 4, ".yml"));
}

struct reader {
    git_repository *repo;
    struct registry_snapshot *snap;
    size_t max_bytes;
    size_t n, alloc;
    struct registry_file *files; /* grown with realloc, copied into snap's arena at the end */
};

static int read_tree(struct reader *r, const git_tree *tree, const char *prefix, int depth)
{
    if (depth > MAX_DEPTH)
        return 0;
    size_t n = git_tree_entrycount(tree);
    for (size_t i = 0; i < n; i++) {
        const git_tree_entry *e = git_tree_entry_byindex(tree, i);
        const char *name = git_tree_entry_name(e);
        if (name[0] == '.')
            continue;
        char *path = *prefix ? xasprintf("%s/%s", prefix, name) : xstrdup(name);
        git_filemode_t mode = git_tree_entry_filemode(e);
        int rc = 0;
        if (mode == GIT_FILEMODE_TREE) {
            git_tree *sub = NULL;
            rc = git_tree_lookup(&sub, r->repo, git_tree_entry_id(e));
            if (rc == 0)
                rc = read_tree(r, sub, path, depth + 1);
            git_tree_free(sub);
        } else if ((mode == GIT_FILEMODE_BLOB || mode == GIT_FILEMODE_BLOB_EXECUTABLE) &&
                   is_dag_name(name)) {
            git_blob *blob = NULL;
            rc = git_blob_lookup(&blob, r->repo, git_tree_entry_id(e));
            if (rc == 0) {
                XGROW(r->files, r->alloc, r->n + 1);
                struct registry_file *f = &r->files[r->n++];
                memset(f, 0, sizeof(*f));
                f->path = arena_strdup(&r->snap->mem, path);
                git_object_size_t size = git_blob_rawsize(blob);
                if (size > r->max_bytes) {
                    f->too_big = true;
                } else {
                    char *c = arena_alloc(&r->snap->mem, (size_t)size + 1);
                    memcpy(c, git_blob_rawcontent(blob), (size_t)size);
                    c[size] = '\0';
                    f->content = c;
                    f->len = (size_t)size;
                }
            }
            git_blob_free(blob);
        }
        free(path);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const struct registry_file *)a)->path, ((const struct registry_file *)b)->path);
}

/* The DAG files of commit under g->path into snap. Returns 0, SL_ENOENT (no such
 * sub-path) or a libgit2 error (< 0, objects unreadable). */
static int read_commit(struct gitsync *g, const git_commit *commit, struct registry_snapshot *snap,
                       size_t max_bytes, struct strbuf *err)
{
    git_tree *root = NULL, *tree = NULL;
    git_tree_entry *entry = NULL;
    int rc = git_commit_tree(&root, commit);
    if (rc == 0 && *g->path) {
        rc = git_tree_entry_bypath(&entry, root, g->path);
        if (rc == GIT_ENOTFOUND || (rc == 0 && git_tree_entry_type(entry) != GIT_OBJECT_TREE)) {
            strbuf_addf(err, "git.path '%s' is not a directory in commit %.12s", g->path,
                        git_oid_tostr_s(git_commit_id(commit)));
            git_tree_entry_free(entry);
            git_tree_free(root);
            return SL_ENOENT;
        }
        if (rc == 0)
            rc = git_tree_lookup(&tree, g->repo, git_tree_entry_id(entry));
    }
    struct reader r = {.repo = g->repo, .snap = snap, .max_bytes = max_bytes};
    if (rc == 0)
        rc = read_tree(&r, tree ? tree : root, "", 0);
    if (rc == 0) {
        if (r.n)
            qsort(r.files, r.n, sizeof(*r.files), cmp_file);
        snap->files = arena_calloc(&snap->mem, r.n + 1, sizeof(*snap->files));
        if (r.n)
            memcpy(snap->files, r.files, r.n * sizeof(*r.files));
        snap->n_files = r.n;
        snap->commit_sha = arena_strdup(&snap->mem, git_oid_tostr_s(git_commit_id(commit)));
    }
    free(r.files);
    git_tree_entry_free(entry);
    git_tree_free(tree);
    git_tree_free(root);
    return rc;
}

/* --- checkouts ------------------------------------------------------------------------- */

/* The previous checkout, whose files a new one shares when their blob is the same: a
 * commit that changed one file of a thousand writes one file and links the rest (files
 * are read-only, so sharing their inodes is safe; creating files is what costs). */
struct base {
    const git_tree *tree; /* the same directory in the previous commit, or NULL */
    int fd;               /* that directory in the previous checkout, or -1 */
};

/* Writes tree into the directory open as dirfd (made by the caller), then makes the
 * directory read-only. Returns 0, a libgit2 error or -errno. */
static int write_tree(git_repository *repo, const git_tree *tree, int dirfd, struct base base,
                      int depth)
{
    if (depth > MAX_DEPTH)
        return -ELOOP;
    int rc = 0;
    size_t n = git_tree_entrycount(tree);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const git_tree_entry *e = git_tree_entry_byindex(tree, i);
        const char *name = git_tree_entry_name(e);
        git_filemode_t mode = git_tree_entry_filemode(e);
        if (!strcmp(name, ".git"))
            continue;
        const git_tree_entry *was = base.tree ? git_tree_entry_byname(base.tree, name) : NULL;
        if (mode == GIT_FILEMODE_TREE || mode == GIT_FILEMODE_COMMIT) {
            if (mkdirat(dirfd, name, 0755) < 0) {
                rc = -errno;
                break;
            }
            if (mode == GIT_FILEMODE_COMMIT) /* a submodule: an empty directory, as git does */
                continue;
            int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            git_tree *t = NULL, *bt = NULL;
            struct base sub_base = {NULL, -1};
            if (was && git_tree_entry_filemode(was) == GIT_FILEMODE_TREE && base.fd >= 0 &&
                git_tree_lookup(&bt, repo, git_tree_entry_id(was)) == 0) {
                sub_base.fd =
                    openat(base.fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                sub_base.tree = sub_base.fd >= 0 ? bt : NULL;
            }
            rc = sub < 0 ? -errno : git_tree_lookup(&t, repo, git_tree_entry_id(e));
            if (rc == 0)
                rc = write_tree(repo, t, sub, sub_base, depth + 1);
            git_tree_free(t);
            git_tree_free(bt);
            if (sub_base.fd >= 0)
                close(sub_base.fd);
            if (sub >= 0)
                close(sub);
            continue;
        }
        if (mode != GIT_FILEMODE_LINK && was && base.fd >= 0 &&
            git_tree_entry_filemode(was) == mode &&
            git_oid_equal(git_tree_entry_id(was), git_tree_entry_id(e)) &&
            linkat(base.fd, name, dirfd, name, 0) == 0)
            continue; /* the same file as before: shared */
        git_blob *blob = NULL;
        rc = git_blob_lookup(&blob, repo, git_tree_entry_id(e));
        if (rc < 0)
            break;
        const char *data = git_blob_rawcontent(blob);
        size_t size = (size_t)git_blob_rawsize(blob);
        if (mode == GIT_FILEMODE_LINK) {
            char *target = xasprintf("%.*s", (int)size, data);
            if (symlinkat(target, dirfd, name) < 0)
                rc = -errno;
            free(target);
        } else {
            mode_t m = mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0555 : 0444;
            int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, m);
            if (fd < 0) {
                rc = -errno;
            } else {
                for (size_t off = 0; off < size && rc == 0;) {
                    ssize_t w = write(fd, data + off, size - off);
                    if (w < 0 && errno != EINTR)
                        rc = -errno;
                    off += w > 0 ? (size_t)w : 0;
                }
                if (close(fd) < 0 && rc == 0)
                    rc = -errno;
            }
        }
        git_blob_free(blob);
    }
    if (rc == 0 && fchmod(dirfd, 0555) < 0)
        rc = -errno;
    return rc;
}

static bool is_sha(const char *s)
{
    size_t n = strspn(s, "0123456789abcdef");
    return (n == 40 || n == 64) && s[n] == '\0';
}

/* Makes checkouts/<sha> if missing. Called with the lock held. */
static int materialize(struct gitsync *g, const git_commit *commit, const char *sha,
                       struct strbuf *err)
{
    char *final = xasprintf("%s/%s", g->checkouts_dir, sha);
    struct stat st;
    if (stat(final, &st) == 0 && S_ISDIR(st.st_mode)) {
        free(final);
        return 0;
    }
    char *tmp = xasprintf("%s/.tmp-%s-%ld-%u", g->checkouts_dir, sha, (long)getpid(),
                          atomic_fetch_add(&tmp_counter, 1));
    int64_t t0 = sl_wall_ms();
    git_tree *tree = NULL;
    int rc = git_commit_tree(&tree, commit);
    int fd = -1;
    if (rc == 0 && mkdir(tmp, 0755) < 0)
        rc = -errno;
    if (rc == 0 && (fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        rc = -errno;
    /* the previous checkout made, to share its unchanged files */
    struct base base = {NULL, -1};
    git_commit *prev = NULL;
    git_tree *prev_tree = NULL;
    if (rc == 0 && g->last_checkout && strcmp(g->last_checkout, sha)) {
        git_oid poid;
        char *pdir = xasprintf("%s/%s", g->checkouts_dir, g->last_checkout);
        if (git_oid_fromstr(&poid, g->last_checkout) == 0 &&
            git_commit_lookup(&prev, g->repo, &poid) == 0 &&
            git_commit_tree(&prev_tree, prev) == 0 &&
            (base.fd = open(pdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0)
            base.tree = prev_tree;
        free(pdir);
    }
    if (rc == 0)
        rc = write_tree(g->repo, tree, fd, base, 0);
    if (base.fd >= 0)
        close(base.fd);
    git_tree_free(prev_tree);
    git_commit_free(prev);
    if (fd >= 0)
        close(fd);
    git_tree_free(tree);
    if (rc == 0 && rename(tmp, final) < 0) {
        if (errno == EEXIST || errno == ENOTEMPTY) /* made meanwhile: as good as ours */
            sl_remove_tree(AT_FDCWD, tmp);
        else
            rc = -errno;
    }
    if (rc < 0) {
        strbuf_addf(err, "cannot write the checkout of %.12s: %s", sha,
                    rc == -1 || rc < -200 ? git_msg() : strerror(-rc));
        sl_remove_tree(AT_FDCWD, tmp);
    } else {
        sl_debug(COMP, "checkout of %.12s made in %lld ms", sha, (long long)(sl_wall_ms() - t0));
        free(g->last_checkout);
        g->last_checkout = xstrdup(sha);
    }
    free(tmp);
    free(final);
    return rc < 0 ? SL_EIO : 0;
}

int gitsync_checkout(struct gitsync *g, char **out_dir, const char *sha, struct strbuf *err)
{
    if (!sha || !is_sha(sha)) {
        strbuf_addf(err, "'%s' is not a commit id", sha ? sha : "(null)");
        return SL_EINVAL;
    }
    char *final = xasprintf("%s/%s", g->checkouts_dir, sha);
    struct stat st;
    if (stat(final, &st) == 0 && S_ISDIR(st.st_mode)) {
        *out_dir = final;
        return 0;
    }
    pthread_mutex_lock(&g->lock);
    git_oid oid;
    git_commit *commit = NULL;
    int rc = 0;
    if (git_oid_fromstr(&oid, sha) < 0 || git_commit_lookup(&commit, g->repo, &oid) < 0) {
        strbuf_addf(err, "commit %.12s is not in the clone of %s", sha, g->name);
        rc = SL_ENOENT;
    } else {
        rc = materialize(g, commit, sha, err);
    }
    git_commit_free(commit);
    pthread_mutex_unlock(&g->lock);
    if (rc < 0) {
        free(final);
        return rc;
    }
    *out_dir = final;
    return 0;
}

int gitsync_gc(struct gitsync *g, const char *const *keep, size_t n_keep, int64_t min_age_ms,
               size_t *out_removed)
{
    DIR *d = opendir(g->checkouts_dir);
    size_t removed = 0;
    int rc = 0;
    if (!d)
        return -errno;
    int fd = dirfd(d);
    int64_t now = sl_wall_ms();
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || !is_sha(de->d_name))
            continue;
        bool kept = false;
        for (size_t i = 0; i < n_keep && !kept; i++)
            kept = keep[i] && !strcmp(keep[i], de->d_name);
        struct stat st;
        if (kept || fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        int64_t mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
        if (now - mtime_ms < min_age_ms)
            continue;
        int r = sl_remove_tree(fd, de->d_name);
        if (r < 0 && rc == 0)
            rc = r;
        removed += r == 0;
        if (r == 0)
            sl_info(COMP, "removed the checkout of %.12s: no active run uses it", de->d_name);
    }
    closedir(d);
    if (out_removed)
        *out_removed = removed;
    return rc;
}

/* --- fetch ------------------------------------------------------------------------------- */

/* Finds the ref among the remote's heads: a branch first, then a tag. */
static const git_remote_head *find_head(const git_remote_head **heads, size_t n, const char *ref,
                                        char **out_name)
{
    char *branch = xasprintf("refs/heads/%s", ref), *tag = xasprintf("refs/tags/%s", ref);
    const git_remote_head *found = NULL;
    for (size_t i = 0; i < n && !found; i++)
        if (!strcmp(heads[i]->name, branch))
            found = heads[i];
    for (size_t i = 0; i < n && !found; i++)
        if (!strcmp(heads[i]->name, tag))
            found = heads[i];
    *out_name = found ? xstrdup(found->name) : NULL;
    free(branch);
    free(tag);
    return found;
}

enum attempt_result { FETCH_OK, FETCH_FAILED, FETCH_CORRUPT };

/* Errors of the connection or the server, as opposed to the clone's own. */
static bool is_network_error(int klass)
{
    return klass == GIT_ERROR_NET || klass == GIT_ERROR_SSL || klass == GIT_ERROR_SSH ||
           klass == GIT_ERROR_HTTP || klass == GIT_ERROR_CALLBACK || klass == GIT_ERROR_NONE;
}

static enum attempt_result fetch_once(struct gitsync *g, struct registry_snapshot *snap,
                                      size_t max_bytes, int *out_rc, struct strbuf *err)
{
    git_remote *remote = NULL;
    git_remote_callbacks cb;
    git_remote_init_callbacks(&cb, GIT_REMOTE_CALLBACKS_VERSION);
    set_callbacks(&cb, g);
    gitauth_begin(&g->auth);
    g->timed_out = false;
    g->deadline_ms = sl_wall_ms() + g->timeout_ms;
    *out_rc = SL_EIO;

    /* No insteadOf rewriting: the URL is the configured one (and libgit2 1.5 leaks the
     * regular expression match data of that lookup). */
    git_remote_create_options ro;
    git_remote_create_options_init(&ro, GIT_REMOTE_CREATE_OPTIONS_VERSION);
    ro.repository = g->repo;
    ro.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
    if (git_remote_create_with_opts(&remote, g->url, &ro) < 0) {
        strbuf_addf(err, "bad repository URL: %s", git_msg());
        *out_rc = SL_EINVAL;
        return FETCH_FAILED;
    }
    enum attempt_result result = FETCH_FAILED;
    const git_remote_head **heads = NULL;
    size_t n_heads = 0;
    char *ref_name = NULL;
    git_object *obj = NULL, *peeled = NULL;
    git_reference *head_ref = NULL;
    if (git_remote_connect(remote, GIT_DIRECTION_FETCH, &cb, NULL, NULL) < 0 ||
        git_remote_ls(&heads, &n_heads, remote) < 0) {
        strbuf_addf(err, "cannot reach %s: %s", g->name + 4,
                    g->auth.cert_error ? g->auth.cert_error : git_msg());
        goto out;
    }
    const git_remote_head *h = find_head(heads, n_heads, g->ref, &ref_name);
    if (!h) {
        strbuf_addf(err, "the repository %s has no branch or tag '%s'", g->name + 4, g->ref);
        *out_rc = SL_ENOENT;
        goto out;
    }
    git_oid oid = h->oid;
    git_odb *odb = NULL;
    bool have = git_repository_odb(&odb, g->repo) == 0 && git_odb_exists(odb, &oid);
    git_odb_free(odb);
    if (!have) {
        char *spec = xasprintf("+%s:" FETCH_REF, ref_name);
        char *specs[] = {spec};
        git_strarray refspecs = {specs, 1};
        git_fetch_options fo;
        git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION);
        fo.callbacks = cb;
        fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
        int rc = git_remote_download(remote, &refspecs, &fo);
        free(spec);
        if (rc < 0) {
            const git_error *e = git_error_last();
            strbuf_addf(err, "cannot fetch %s from %s: %s", g->ref, g->name + 4,
                        g->timed_out ? "timed out" : git_msg());
            if (g->timed_out)
                *out_rc = SL_ETIMEDOUT;
            else if (e && !is_network_error(e->klass))
                result = FETCH_CORRUPT; /* the clone failed us, not the server */
            goto out;
        }
    }
    git_remote_disconnect(remote);
    /* Everything below reads objects the clone must have now: failing is corruption. */
    result = FETCH_CORRUPT;
    if (git_object_lookup(&obj, g->repo, &oid, GIT_OBJECT_ANY) < 0 ||
        git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT) < 0) {
        strbuf_addf(err, "%s at %s does not lead to a readable commit: %s", g->ref,
                    git_oid_tostr_s(&oid), git_msg());
        goto out;
    }
    if (git_reference_create(&head_ref, g->repo, HEAD_REF, git_object_id(peeled), 1,
                             "sluice sync") < 0) {
        strbuf_addf(err, "cannot record the fetched commit: %s", git_msg());
        result = FETCH_FAILED;
        goto out;
    }
    const git_commit *commit = (const git_commit *)peeled;
    int rc = read_commit(g, commit, snap, max_bytes, err);
    if (rc == SL_ENOENT) {
        *out_rc = SL_ENOENT;
        result = FETCH_FAILED;
        goto out;
    }
    if (rc < 0) {
        strbuf_addf(err, "cannot read commit %s: %s", git_oid_tostr_s(git_commit_id(commit)),
                    git_msg());
        goto out;
    }
    char sha[GIT_OID_HEXSZ + 1];
    git_oid_tostr(sha, sizeof(sha), git_commit_id(commit));
    rc = materialize(g, commit, sha, err);
    if (rc < 0) {
        result = FETCH_FAILED;
        goto out;
    }
    result = FETCH_OK;
    *out_rc = 0;
out:
    if (result != FETCH_OK) {
        registry_snapshot_release(snap);
        registry_snapshot_init(snap);
    }
    git_reference_free(head_ref);
    git_object_free(peeled);
    git_object_free(obj);
    free(ref_name);
    git_remote_free(remote);
    return result;
}

int gitsync_fetch(struct gitsync *g, struct registry_snapshot *snap, size_t max_bytes,
                  struct strbuf *err)
{
    pthread_mutex_lock(&g->lock);
    int rc = SL_EIO;
    size_t mark = err->len;
    enum attempt_result r = fetch_once(g, snap, max_bytes, &rc, err);
    if (r == FETCH_CORRUPT) {
        sl_warn(COMP, "the clone of %s is damaged (%s): cloning again", g->name, err->buf + mark);
        err->len = mark;
        err->buf[mark] = '\0';
        rc = reclone(g, err);
        if (rc == 0)
            r = fetch_once(g, snap, max_bytes, &rc, err);
        if (r == FETCH_CORRUPT) {
            rc = SL_EIO;
            reclone(g, err); /* start clean next time */
        }
    }
    pthread_mutex_unlock(&g->lock);
    return rc;
}
