/*
 * worker/artifacts.c - the artifact repository and staging (see artifacts.h).
 *
 * Three layers: paths (removing a tree without following links, making parents, moving
 * a thing into place), the repository's put/get for each kind, and staging, which walks a
 * dispatch spec's inputs.artifacts / outputs.artifacts and calls put/get for each.
 */
#include "worker/artifacts.h"

#include "common/error.h"
#include "common/gitauth.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "worker/archive.h"
#include "worker/s3.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <limits.h>
#include <stdarg.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOG_COMPONENT "artifacts"

struct artifacts_repo {
    enum artifacts_kind kind;
    char *prefix; /* "" or "a/b" without slashes at either end */
    char *root;   /* fs: absolute */
    struct s3_client *s3;
    struct s3_config s3cfg; /* strings owned below, for clients of other buckets */
    char *endpoint, *region, *bucket, *access_key, *secret_key, *token;
    bool gzip;
    bool archive_logs;
    char *describe;
    char *base; /* artifacts_base() */
    /* `from: git`: the git.* credentials, copied for each fetch (common/gitauth.h) */
    struct gitauth git;
    char *git_ca_file, *git_password_file;
};

/* --- paths ----------------------------------------------------------------------------- */

/* Removes the entry name in dirfd: a file, a link, or a directory tree (links inside are
 * removed, never followed). Returns 0 (also when it does not exist) or -errno. */
static int remove_at(int parent, const char *name)
{
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISDIR(st.st_mode))
        return unlinkat(parent, name, 0) < 0 && errno != ENOENT ? -errno : 0;
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int en = errno;
        close(fd);
        return -en;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        rc = remove_at(dirfd(d), de->d_name);
    }
    closedir(d);
    if (rc == 0 && unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        rc = -errno;
    return rc;
}

/* Removes whatever is at path. Returns 0 or -errno. */
static int remove_path(const char *path)
{
    return remove_at(AT_FDCWD, path);
}

/* mkdir -p of path's directory part. Returns 0 or -errno. */
static int make_parents(const char *path)
{
    char *dir = xstrdup(path);
    int rc = 0;
    for (char *p = dir + 1; *p && rc == 0; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
            rc = -errno;
        *p = '/';
    }
    free(dir);
    return rc;
}

/* Replaces what is at dest with src (renamed). Returns 0 or -errno. */
static int move_into_place(const char *src, const char *dest)
{
    int rc = make_parents(dest);
    if (rc == 0)
        rc = remove_path(dest);
    if (rc == 0 && rename(src, dest) < 0)
        rc = -errno;
    return rc;
}

static char *absolute(const char *p)
{
    if (p[0] == '/')
        return xstrdup(p);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd)))
        return xstrdup(p);
    return xasprintf("%s/%s", cwd, p);
}

/* Copies the regular file src to dest (created 0644 or truncated). Returns 0 or -errno. */
static int copy_file(const char *src, const char *dest)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -errno;
    struct stat st;
    int out = fstat(in, &st) == 0
                  ? open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, st.st_mode & 0777)
                  : -1;
    if (out < 0) {
        int en = errno;
        close(in);
        return -en;
    }
    size_t bufsz = 1 << 20;
    char *buf = xmalloc(bufsz);
    int rc = 0;
    for (;;) {
        ssize_t n = read(in, buf, bufsz);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                rc = w < 0 ? -errno : -EIO;
                break;
            }
            off += w;
        }
        if (rc)
            break;
    }
    free(buf);
    close(in);
    if (close(out) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

/* --- keys ------------------------------------------------------------------------------ */

/* A key safe to use as a path below a root: components not empty, '.' or '..'. */
static bool valid_key(const char *key)
{
    if (!key || !*key || key[0] == '/')
        return false;
    const char *p = key;
    while (*p) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        p += len;
        if (*p == '/' && !p[1])
            return false;
        if (*p == '/')
            p++;
    }
    return true;
}

static char *full_key(const struct artifacts_repo *r, const char *key)
{
    return *r->prefix ? xasprintf("%s/%s", r->prefix, key) : xstrdup(key);
}

/* A source as the scheduler renders an upstream output: the key after the reference to
 * the worker's repository (header: "Locations in templates"). */
static const char *strip_base_ref(const char *source)
{
    static const char ref[] = "$(" ARTIFACTS_BASE_VAR ")";
    return strncmp(source, ref, sizeof(ref) - 1) ? source : source + sizeof(ref) - 1;
}

/* --- opening ------------------------------------------------------------------------------ */

/* Reads dir/name (one trailing newline removed), or NULL if it does not exist. */
static char *read_secret(const char *dir, const char *name, struct strbuf *err, int *rc)
{
    char *path = xasprintf("%s/%s", dir, name);
    struct strbuf sb = STRBUF_INIT;
    int r = strbuf_read_file(&sb, path, 64 * 1024);
    char *v = NULL;
    if (r == 0) {
        while (sb.len && (sb.buf[sb.len - 1] == '\n' || sb.buf[sb.len - 1] == '\r'))
            sb.buf[--sb.len] = '\0';
        v = strbuf_detach(&sb, NULL);
    } else if (r != SL_ENOENT) {
        strbuf_addf(err, "artifacts: cannot read credentials file '%s': %s\n", path,
                    sl_strerror(r));
        *rc = SL_EINVAL;
    }
    strbuf_release(&sb);
    free(path);
    return v;
}

static void free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* The credentials `from: git` inputs fetch with: git.username, git.password,
 * git.ssh_key_file, git.known_hosts_file, git.ca_file; git.password_file is read when a
 * fetch needs it (a process that never fetches, the API say, need not have it). */
static void open_git_auth(struct artifacts_repo *r, const struct sl_config *c)
{
    gitauth_init(&r->git, c->git.username, c->git.password, c->git.ssh_key_file,
                 c->git.known_hosts_file);
    r->git_ca_file = c->git.ca_file && *c->git.ca_file ? xstrdup(c->git.ca_file) : NULL;
    r->git_password_file =
        c->git.password_file && *c->git.password_file ? xstrdup(c->git.password_file) : NULL;
}

int artifacts_open(struct artifacts_repo **out, const struct sl_config *c, struct strbuf *err)
{
    struct artifacts_repo *r = xcalloc(1, sizeof(*r));
    const char *kind = c->artifacts.repository ? c->artifacts.repository : "none";
    int rc = 0;

    r->archive_logs = c->artifacts.archive_logs;
    /* the prefix without slashes at its ends */
    const char *pre = c->artifacts.prefix ? c->artifacts.prefix : "";
    while (*pre == '/')
        pre++;
    r->prefix = xstrdup(pre);
    size_t pl = strlen(r->prefix);
    while (pl && r->prefix[pl - 1] == '/')
        r->prefix[--pl] = '\0';
    if (*r->prefix && !valid_key(r->prefix)) {
        strbuf_addf(err, "artifacts.prefix '%s' has an empty, '.' or '..' component\n",
                    c->artifacts.prefix);
        rc = SL_EINVAL;
    }
    const char *comp = c->artifacts.compression ? c->artifacts.compression : "gzip";
    if (!strcmp(comp, "gzip")) {
        r->gzip = true;
    } else if (strcmp(comp, "none") != 0) {
        strbuf_addf(err, "artifacts.compression must be gzip or none, not '%s'\n", comp);
        rc = SL_EINVAL;
    }

    open_git_auth(r, c);

    if (!strcmp(kind, "none") || !*kind) {
        r->kind = ARTIFACTS_NONE;
        r->describe = xstrdup("none");
    } else if (!strcmp(kind, "fs")) {
        r->kind = ARTIFACTS_FS;
        struct stat st;
        if (!c->artifacts.root || !*c->artifacts.root) {
            strbuf_addstr(err, "artifacts.root is required with artifacts.repository fs\n");
            rc = SL_EINVAL;
        } else if (stat(c->artifacts.root, &st) < 0 || !S_ISDIR(st.st_mode)) {
            strbuf_addf(err, "artifacts.root '%s' is not a directory\n", c->artifacts.root);
            rc = SL_EINVAL;
        } else {
            r->root = absolute(c->artifacts.root);
            size_t rl = strlen(r->root);
            while (rl > 1 && r->root[rl - 1] == '/')
                r->root[--rl] = '\0';
            r->describe = xasprintf("fs:%s%s%s", r->root, *r->prefix ? "/" : "", r->prefix);
            r->base = artifacts_base_for("fs", r->root, NULL, r->prefix);
        }
    } else if (!strcmp(kind, "s3")) {
        r->kind = ARTIFACTS_S3;
        if (!c->artifacts.endpoint || !c->artifacts.bucket) {
            strbuf_addstr(err, "artifacts.endpoint and artifacts.bucket are required with "
                               "artifacts.repository s3\n");
            rc = SL_EINVAL;
        }
        if (c->artifacts.credentials_dir && *c->artifacts.credentials_dir) {
            r->access_key = read_secret(c->artifacts.credentials_dir, "access_key_id", err, &rc);
            r->secret_key =
                read_secret(c->artifacts.credentials_dir, "secret_access_key", err, &rc);
            r->token = read_secret(c->artifacts.credentials_dir, "session_token", err, &rc);
        } else {
            const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY"),
                       *tk = getenv("AWS_SESSION_TOKEN");
            r->access_key = ak && *ak ? xstrdup(ak) : NULL;
            r->secret_key = sk && *sk ? xstrdup(sk) : NULL;
            r->token = tk && *tk ? xstrdup(tk) : NULL;
        }
        int64_t part_mb = c->artifacts.part_size_mb, thr_mb = c->artifacts.multipart_threshold_mb;
        if (part_mb && part_mb < 5) {
            strbuf_addstr(err, "artifacts.part_size_mb must be at least 5\n");
            rc = SL_EINVAL;
        }
        if (rc == 0) {
            r->endpoint = xstrdup(c->artifacts.endpoint);
            r->bucket = xstrdup(c->artifacts.bucket);
            r->region = xstrdup(c->artifacts.region ? c->artifacts.region : "us-east-1");
            r->s3cfg = (struct s3_config){
                .endpoint = r->endpoint,
                .region = r->region,
                .bucket = r->bucket,
                .path_style = c->artifacts.path_style,
                .access_key_id = r->access_key,
                .secret_access_key = r->secret_key,
                .session_token = r->token,
                .multipart_threshold = (uint64_t)thr_mb << 20,
                .part_size = (uint64_t)part_mb << 20,
                .parallel_parts = (int)c->artifacts.parallel_parts,
            };
            struct strbuf e = STRBUF_INIT;
            if (s3_client_new(&r->s3, &r->s3cfg, &e) < 0) {
                strbuf_addf(err, "artifacts: %s\n", e.buf);
                rc = SL_EINVAL;
            }
            strbuf_release(&e);
            r->describe = xasprintf("s3://%s%s%s", r->bucket, *r->prefix ? "/" : "", r->prefix);
            r->base = artifacts_base_for("s3", NULL, r->bucket, r->prefix);
        }
    } else {
        strbuf_addf(err, "artifacts.repository must be none, s3 or fs, not '%s'\n", kind);
        rc = SL_EINVAL;
    }
    if (rc < 0) {
        artifacts_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

void artifacts_close(struct artifacts_repo *r)
{
    if (!r)
        return;
    s3_client_free(r->s3);
    free(r->prefix);
    free(r->root);
    free(r->endpoint);
    free(r->region);
    free(r->bucket);
    free(r->access_key);
    free_secret(r->secret_key);
    free_secret(r->token);
    free(r->describe);
    free(r->base);
    gitauth_release(&r->git);
    free(r->git_ca_file);
    free(r->git_password_file);
    free(r);
}

enum artifacts_kind artifacts_kind(const struct artifacts_repo *r)
{
    return r ? r->kind : ARTIFACTS_NONE;
}

bool artifacts_archive_logs(const struct artifacts_repo *r)
{
    return r && r->kind != ARTIFACTS_NONE && r->archive_logs;
}

const char *artifacts_describe(const struct artifacts_repo *r)
{
    return r && r->describe ? r->describe : "none";
}

const char *artifacts_base(const struct artifacts_repo *r)
{
    return r && r->base ? r->base : "";
}

char *artifacts_base_for(const char *repository, const char *root, const char *bucket,
                         const char *prefix)
{
    bool fs = repository && !strcmp(repository, "fs"), s3 = repository && !strcmp(repository, "s3");
    if (!(fs && root && *root) && !(s3 && bucket && *bucket))
        return xstrdup("");
    struct strbuf sb = STRBUF_INIT;
    if (fs) {
        strbuf_addstr(&sb, root);
        while (sb.len > 1 && sb.buf[sb.len - 1] == '/')
            sb.buf[--sb.len] = '\0';
    } else {
        strbuf_addf(&sb, "s3://%s", bucket);
    }
    const char *pre = prefix ? prefix : "";
    while (*pre == '/')
        pre++;
    size_t pl = strlen(pre);
    while (pl && pre[pl - 1] == '/')
        pl--;
    if (sb.buf[sb.len - 1] != '/')
        strbuf_addch(&sb, '/');
    if (pl)
        strbuf_addf(&sb, "%.*s/", (int)pl, pre);
    return strbuf_detach(&sb, NULL);
}

/* --- put ----------------------------------------------------------------------------------- */

static int put_s3(struct artifacts_repo *r, const char *fkey, const char *path, bool is_dir,
                  const atomic_int *cancel, struct strbuf *err)
{
    if (!is_dir) {
        const char *meta[] = {"sluice-kind=file", NULL};
        return s3_put_file(r->s3, fkey, path, meta, cancel, NULL, err);
    }
    /* a directory: archived next to itself first (Argo does the same), then uploaded */
    char *tmp = xasprintf("%s.sluice-tar.%ld", path, (long)getpid());
    int rc = archive_write_dir(path, tmp, r->gzip, err);
    if (rc == 0) {
        const char *meta[] = {"sluice-kind=dir",
                              r->gzip ? "sluice-archive=tar+gzip" : "sluice-archive=tar", NULL};
        rc = s3_put_file(r->s3, fkey, tmp, meta, cancel, NULL, err);
    }
    unlink(tmp);
    free(tmp);
    return rc;
}

/* fs: moves path into the repository and leaves a link to it; copies across filesystems. */
static int put_fs(struct artifacts_repo *r, const char *fkey, const char *path, bool is_dir,
                  struct strbuf *err)
{
    char *dest = xasprintf("%s/%s", r->root, fkey);
    int rc = make_parents(dest);
    if (rc == 0)
        rc = remove_path(dest);
    if (rc == 0 && rename(path, dest) == 0) {
        /* leave the step's view as it was: a link to where it went */
        if (symlink(dest, path) < 0)
            sl_warn(LOG_COMPONENT, "cannot link '%s' to '%s': %s", path, dest, strerror(errno));
    } else if (rc == 0 && errno == EXDEV) {
        /* another filesystem (a pod's emptyDir, say): a copy */
        if (!is_dir) {
            char *tmp = xasprintf("%s.sluice-copy.%ld", dest, (long)getpid());
            rc = copy_file(path, tmp);
            if (rc == 0 && rename(tmp, dest) < 0)
                rc = -errno;
            if (rc < 0)
                unlink(tmp);
            free(tmp);
        } else {
            char *tar = xasprintf("%s.sluice-tar.%ld", dest, (long)getpid());
            char *tmpdir = xasprintf("%s.sluice-dir.%ld", dest, (long)getpid());
            int arc = archive_write_dir(path, tar, false, err);
            if (arc == 0 && mkdir(tmpdir, 0755) < 0)
                arc = SL_EIO;
            if (arc == 0)
                arc = archive_extract(tar, tmpdir, err);
            if (arc == 0 && rename(tmpdir, dest) < 0)
                arc = SL_EIO;
            if (arc < 0)
                remove_path(tmpdir);
            unlink(tar);
            free(tar);
            free(tmpdir);
            if (arc < 0) {
                strbuf_addf(err, "%scannot copy '%s' to '%s'", err->len ? ": " : "", path, dest);
                free(dest);
                return arc == SL_EINVAL ? SL_EINVAL : SL_EIO;
            }
        }
    } else if (rc == 0) {
        rc = -errno;
    }
    if (rc < 0)
        strbuf_addf(err, "cannot store '%s' as '%s': %s", path, dest, strerror(-rc));
    free(dest);
    return rc < 0 ? SL_EIO : 0;
}

int artifacts_put(struct artifacts_repo *r, const char *key, const char *path,
                  const atomic_int *cancel, struct strbuf *err)
{
    if (!r || r->kind == ARTIFACTS_NONE) {
        strbuf_addstr(err, "no artifact repository is configured (artifacts.repository)");
        return SL_EINVAL;
    }
    if (!valid_key(key)) {
        strbuf_addf(err, "invalid artifact key '%s'", key ? key : "");
        return SL_EINVAL;
    }
    struct stat st;
    if (stat(path, &st) < 0) {
        strbuf_addf(err, "cannot store '%s': %s", path, strerror(errno));
        return errno == ENOENT ? SL_ENOENT : SL_EIO;
    }
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
        strbuf_addf(err, "cannot store '%s': not a file or a directory", path);
        return SL_EINVAL;
    }
    char *fkey = full_key(r, key);
    int rc = r->kind == ARTIFACTS_S3 ? put_s3(r, fkey, path, S_ISDIR(st.st_mode), cancel, err)
                                     : put_fs(r, fkey, path, S_ISDIR(st.st_mode), err);
    free(fkey);
    return rc;
}

/* --- get ------------------------------------------------------------------------------------- */

/* Downloads (client, key) and places it at path, extracting a directory archive. */
static int get_s3(struct s3_client *client, const char *fkey, const char *path,
                  const atomic_int *cancel, struct strbuf *err)
{
    char *tmp = xasprintf("%s.sluice-dl.%ld", path, (long)getpid());
    struct s3_object_info info;
    int rc = make_parents(path);
    if (rc < 0) {
        strbuf_addf(err, "cannot create the directory of '%s': %s", path, strerror(-rc));
        free(tmp);
        return SL_EIO;
    }
    rc = s3_get_file(client, fkey, tmp, cancel, &info, err);
    if (rc == 0 && !strcmp(info.kind, "dir")) {
        char *dir = xasprintf("%s.sluice-dir.%ld", path, (long)getpid());
        remove_path(dir);
        if (mkdir(dir, 0755) < 0) {
            strbuf_addf(err, "cannot create '%s': %s", dir, strerror(errno));
            rc = SL_EIO;
        }
        if (rc == 0)
            rc = archive_extract(tmp, dir, err);
        if (rc == 0 && (rc = move_into_place(dir, path)) < 0) {
            strbuf_addf(err, "cannot place '%s': %s", path, strerror(-rc));
            rc = SL_EIO;
        }
        if (rc < 0)
            remove_path(dir);
        free(dir);
        unlink(tmp);
    } else if (rc == 0 && (rc = move_into_place(tmp, path)) < 0) {
        strbuf_addf(err, "cannot place '%s': %s", path, strerror(-rc));
        unlink(tmp);
        rc = SL_EIO;
    }
    free(tmp);
    return rc;
}

/* Places a link at path to the existing target. */
static int link_into_place(const char *target, const char *path, struct strbuf *err)
{
    struct stat st;
    if (lstat(target, &st) < 0) {
        strbuf_addf(err, "no artifact at '%s'", target);
        return SL_ENOENT;
    }
    char *tmp = xasprintf("%s.sluice-ln.%ld", path, (long)getpid());
    int rc = make_parents(path);
    unlink(tmp);
    if (rc == 0 && symlink(target, tmp) < 0)
        rc = -errno;
    if (rc == 0)
        rc = move_into_place(tmp, path);
    if (rc < 0) {
        strbuf_addf(err, "cannot link '%s' to '%s': %s", path, target, strerror(-rc));
        unlink(tmp);
    }
    free(tmp);
    return rc < 0 ? SL_EIO : 0;
}

static size_t on_http_write(char *buf, size_t size, size_t n, void *data)
{
    FILE *f = data;
    return fwrite(buf, size, n, f);
}

/* An http(s):// source: GET into a file at path. Redirects only to http(s), at most 5. */
static int get_http(const char *url, const char *path, struct strbuf *err)
{
    char *tmp = xasprintf("%s.sluice-dl.%ld", path, (long)getpid());
    int rc = make_parents(path);
    FILE *f = rc == 0 ? fopen(tmp, "wb") : NULL;
    if (!f) {
        strbuf_addf(err, "cannot create '%s': %s", tmp, strerror(errno));
        free(tmp);
        return SL_EIO;
    }
    char cerr[CURL_ERROR_SIZE] = "";
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(e, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_http_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, cerr);
    CURLcode cc = curl_easy_perform(e);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    if (fclose(f) != 0 && cc == CURLE_OK)
        cc = CURLE_WRITE_ERROR;
    if (cc != CURLE_OK) {
        strbuf_addf(err, "GET %s: %s", url, cerr[0] ? cerr : curl_easy_strerror(cc));
        rc = status == 404 || status == 410     ? SL_ENOENT
             : cc == CURLE_UNSUPPORTED_PROTOCOL ? SL_EINVAL
                                                : SL_ECONN;
    } else if ((rc = move_into_place(tmp, path)) < 0) {
        strbuf_addf(err, "cannot place '%s': %s", path, strerror(-rc));
        rc = SL_EIO;
    }
    if (rc < 0)
        unlink(tmp);
    free(tmp);
    return rc;
}

static int get_one(struct artifacts_repo *r, const char *source, const char *path,
                   const atomic_int *cancel, struct strbuf *err)
{
    source = strip_base_ref(source);
    if (!strncmp(source, "http://", 7) || !strncmp(source, "https://", 8))
        return get_http(source, path, err);
    if (!strncmp(source, "file://", 7)) {
        const char *p = source + 7;
        if (p[0] != '/') {
            strbuf_addf(err, "'%s' is not a file:/// URI with an absolute path", source);
            return SL_EINVAL;
        }
        return link_into_place(p, path, err);
    }
    if (!strncmp(source, "s3://", 5)) {
        const char *bucket = source + 5, *slash = strchr(bucket, '/');
        if (!slash || slash == bucket || !valid_key(slash + 1)) {
            strbuf_addf(err, "'%s' is not an s3://bucket/key URI", source);
            return SL_EINVAL;
        }
        if (!r || r->kind != ARTIFACTS_S3) {
            strbuf_addf(err, "'%s' needs an s3 artifact repository (artifacts.repository: s3)",
                        source);
            return SL_EINVAL;
        }
        char *b = xstrndup(bucket, (size_t)(slash - bucket));
        struct s3_config cfg = r->s3cfg;
        cfg.bucket = b;
        struct s3_client *client = NULL;
        int rc = s3_client_new(&client, &cfg, err);
        if (rc == 0)
            rc = get_s3(client, slash + 1, path, cancel, err);
        s3_client_free(client);
        free(b);
        return rc;
    }
    if (!r || r->kind == ARTIFACTS_NONE) {
        strbuf_addf(err, "'%s' needs an artifact repository (artifacts.repository is none)",
                    source);
        return SL_EINVAL;
    }
    if (!valid_key(source)) {
        strbuf_addf(err, "invalid artifact key '%s'", source);
        return SL_EINVAL;
    }
    char *fkey = full_key(r, source);
    int rc;
    if (r->kind == ARTIFACTS_S3) {
        rc = get_s3(r->s3, fkey, path, cancel, err);
    } else {
        char *target = xasprintf("%s/%s", r->root, fkey);
        rc = link_into_place(target, path, err);
        free(target);
    }
    free(fkey);
    return rc;
}

int artifacts_get(struct artifacts_repo *r, const char *source, const char *path,
                  const atomic_int *cancel, struct strbuf *err)
{
    if (!source || !*source || !path || !*path) {
        strbuf_addstr(err, "no source or destination");
        return SL_EINVAL;
    }
    if (source[0] != '[')
        return get_one(r, source, path, cancel, err);
    /* a fan-in: a JSON list of keys, each placed at path/<index> */
    cJSON *list = cJSON_Parse(source);
    if (!cJSON_IsArray(list)) {
        cJSON_Delete(list);
        strbuf_addf(err, "'%s' is neither a key, a URI nor a JSON list of them", source);
        return SL_EINVAL;
    }
    int rc = remove_path(path) < 0 ? SL_EIO : 0;
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, list)
    {
        if (rc < 0)
            break;
        if (!cJSON_IsString(it)) {
            strbuf_addf(err, "item %d of the list is not a string", i);
            rc = SL_EINVAL;
            break;
        }
        char *sub = xasprintf("%s/%d", path, i++);
        rc = get_one(r, it->valuestring, sub, cancel, err);
        free(sub);
    }
    cJSON_Delete(list);
    return rc;
}

/* --- git ----------------------------------------------------------------------------------------
 */

static int git_fail(struct strbuf *err, const char *what, const char *url)
{
    const git_error *ge = git_error_last();
    strbuf_addf(err, "git %s '%s': %s", what, url, ge && ge->message ? ge->message : "failed");
    return SL_EIO;
}

int artifacts_get_git(const struct artifacts_repo *r, const char *url, const char *commit,
                      const char *path, struct strbuf *err)
{
    if (!url || !*url || !commit || !*commit || !path || !*path) {
        strbuf_addstr(err, "git: a URL, a commit and a destination are needed");
        return SL_EINVAL;
    }
    /* the password, else the first line of git.password_file */
    struct strbuf pw = STRBUF_INIT;
    if (r && !r->git.password && r->git_password_file) {
        int frc = strbuf_read_file(&pw, r->git_password_file, 64 * 1024);
        if (frc < 0) {
            strbuf_addf(err, "cannot read git.password_file '%s': %s", r->git_password_file,
                        sl_strerror(frc));
            strbuf_release(&pw);
            return SL_EINVAL;
        }
        while (pw.len && (pw.buf[pw.len - 1] == '\n' || pw.buf[pw.len - 1] == '\r'))
            pw.buf[--pw.len] = '\0';
    }
    git_libgit2_init();
    /* a copy of the credentials: fetches run on several threads at once */
    struct gitauth auth;
    gitauth_init(&auth, r ? r->git.username : NULL,
                 pw.len ? pw.buf
                 : r    ? r->git.password
                        : NULL,
                 r ? r->git.ssh_key_file : NULL, r ? r->git.known_hosts_file : NULL);
    if (pw.alloc)
        memset(pw.buf, 0, pw.alloc);
    strbuf_release(&pw);
    if (gitauth_use_ca(r ? r->git_ca_file : NULL, err) < 0) {
        gitauth_release(&auth);
        git_libgit2_shutdown();
        return SL_EINVAL;
    }
    char *tmp = xasprintf("%s.sluice-git.%ld", path, (long)getpid());
    git_repository *repo = NULL;
    git_object *obj = NULL;
    git_remote *remote = NULL;
    int rc = make_parents(path) < 0 ? SL_EIO : 0;
    remove_path(tmp);
    /* init, an anonymous remote and a download rather than git_clone(): no insteadOf
     * rewriting of the URL (whose lookup leaks in Debian's libgit2 1.5), and nothing of
     * the clone's configuration needed */
    if (rc == 0 && git_repository_init(&repo, tmp, 0) < 0)
        rc = git_fail(err, "init", url);
    if (rc == 0) {
        git_remote_create_options ro;
        git_remote_create_options_init(&ro, GIT_REMOTE_CREATE_OPTIONS_VERSION);
        ro.repository = repo;
        ro.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
        char *specs[] = {"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"};
        git_strarray refspecs = {specs, 2};
        git_fetch_options fo;
        git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION);
        fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
        gitauth_callbacks(&fo.callbacks, &auth);
        int grc = 0;
        if (git_remote_create_with_opts(&remote, url, &ro) < 0 ||
            (grc = git_remote_download(remote, &refspecs, &fo)) < 0 ||
            git_remote_update_tips(remote, NULL, 0, GIT_REMOTE_DOWNLOAD_TAGS_NONE, NULL) < 0) {
            if (auth.cert_error) {
                strbuf_addf(err, "git fetch '%s': %s", url, auth.cert_error);
                rc = SL_EINVAL;
            } else {
                rc = git_fail(err, "fetch", url);
            }
            /* refused credentials or host key: no retry can help */
            if (grc == GIT_EAUTH || grc == GIT_ECERTIFICATE)
                rc = SL_EINVAL;
        }
    }
    if (rc == 0 && git_revparse_single(&obj, repo, commit) < 0) {
        char *branch = xasprintf("origin/%s", commit); /* a branch name */
        if (git_revparse_single(&obj, repo, branch) < 0) {
            strbuf_addf(err, "git: no commit '%s' in '%s'", commit, url);
            rc = SL_ENOENT;
        }
        free(branch);
    }
    if (rc == 0) {
        git_checkout_options co;
        git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
        co.checkout_strategy = GIT_CHECKOUT_FORCE;
        if (git_checkout_tree(repo, obj, &co) < 0 ||
            git_repository_set_head_detached(repo, git_object_id(obj)) < 0)
            rc = git_fail(err, "checkout", url);
    }
    git_object_free(obj);
    git_remote_free(remote);
    git_repository_free(repo);
    if (rc == 0) {
        char *dotgit = xasprintf("%s/.git", tmp);
        remove_path(dotgit);
        free(dotgit);
        int mrc = move_into_place(tmp, path);
        if (mrc < 0) {
            strbuf_addf(err, "cannot place '%s': %s", path, strerror(-mrc));
            rc = SL_EIO;
        }
    }
    if (rc < 0)
        remove_path(tmp);
    free(tmp);
    gitauth_release(&auth);
    git_libgit2_shutdown();
    return rc;
}

/* --- staging
 * -------------------------------------------------------------------------------------- */

static void log_line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void log_line(int fd, const char *fmt, ...)
{
    if (fd < 0)
        return;
    struct strbuf sb = STRBUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    strbuf_addstr(&sb, "=== sluice: ");
    strbuf_vaddf(&sb, fmt, ap);
    va_end(ap);
    strbuf_addch(&sb, '\n');
    for (size_t off = 0; off < sb.len;) {
        ssize_t w = write(fd, sb.buf + off, sb.len - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    strbuf_release(&sb);
}

static char *resolve(const char *cwd, const char *path)
{
    return path[0] == '/' || !cwd || !*cwd ? xstrdup(path) : xasprintf("%s/%s", cwd, path);
}

static bool has_dotdot(const char *path)
{
    for (const char *p = path; *p;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return true;
        p += len;
        while (*p == '/')
            p++;
    }
    return false;
}

static enum artifacts_blame blame_of(int rc)
{
    return rc == SL_ECONN || rc == SL_ETIMEDOUT || rc == SL_EIO ? ARTIFACTS_BLAME_TRANSIENT
                                                                : ARTIFACTS_BLAME_ERROR;
}

/* An input's place: its path (default inputs/<name>), refused with a '..' component.
 * Sets *out_rel and *out_dest (the path under cwd; caller frees both). */
static int input_place(const cJSON *in, const char *cwd, char **out_rel, char **out_dest,
                       enum artifacts_blame *blame, struct strbuf *err)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(in, "path");
    const char *given = cJSON_IsString(p) ? p->valuestring : NULL;
    char *rel = given && *given ? xstrdup(given) : xasprintf("inputs/%s", in->string);
    if (has_dotdot(rel)) {
        *blame = ARTIFACTS_BLAME_ERROR;
        strbuf_addf(err, "input artifact '%s' path '%s' has a '..' component", in->string, rel);
        free(rel);
        return SL_EINVAL;
    }
    *out_rel = rel;
    *out_dest = resolve(cwd, rel);
    return 0;
}

/* An input "from: git": the repository and commit the scheduler put in the spec ("repo"),
 * checked out at the input's path. Needs no artifact repository. */
static int stage_in_git(const struct artifacts_repo *r, const cJSON *spec, const cJSON *in,
                        const char *cwd, int log_fd, enum artifacts_blame *blame,
                        struct strbuf *err)
{
    const cJSON *repo = cJSON_GetObjectItemCaseSensitive(spec, "repo");
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(repo, "url");
    const cJSON *commit = cJSON_GetObjectItemCaseSensitive(repo, "commit");
    if (!cJSON_IsString(url) || !cJSON_IsString(commit)) {
        *blame = ARTIFACTS_BLAME_ERROR;
        strbuf_addf(err,
                    "input artifact '%s' asks for the DAG repository, but the run has no "
                    "commit (its DAGs come from a directory, not from git.url)",
                    in->string);
        return SL_EINVAL;
    }
    char *rel, *dest;
    if (input_place(in, cwd, &rel, &dest, blame, err) < 0)
        return SL_EINVAL;
    struct strbuf e = STRBUF_INIT;
    int64_t t0 = sl_wall_ms();
    int rc = artifacts_get_git(r, url->valuestring, commit->valuestring, dest, &e);
    if (rc < 0) {
        *blame = rc == SL_EIO ? ARTIFACTS_BLAME_TRANSIENT : ARTIFACTS_BLAME_ERROR;
        strbuf_addf(err, "input artifact '%s' from the repository at %.12s: %s", in->string,
                    commit->valuestring, e.buf);
        log_line(log_fd, "input artifact '%s' failed: %s", in->string, e.buf);
    } else {
        log_line(log_fd, "input artifact '%s': %s at %.12s checked out at %s (%lld ms)", in->string,
                 url->valuestring, commit->valuestring, rel, (long long)(sl_wall_ms() - t0));
    }
    strbuf_release(&e);
    free(dest);
    free(rel);
    return rc;
}

int artifacts_stage_in(struct artifacts_repo *r, const cJSON *spec, const char *cwd, int log_fd,
                       const atomic_int *cancel, enum artifacts_blame *blame, struct strbuf *err)
{
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(spec, "inputs"), "artifacts");
    const cJSON *in;
    if (!ins || cJSON_IsNull(ins))
        return 0;
    if (!cJSON_IsObject(ins)) {
        *blame = ARTIFACTS_BLAME_ERROR;
        strbuf_addstr(err, "malformed spec: 'inputs.artifacts' is not an object");
        return SL_EINVAL;
    }
    cJSON_ArrayForEach(in, ins)
    {
        const cJSON *from = cJSON_GetObjectItemCaseSensitive(in, "from");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(in, "path");
        if (!cJSON_IsString(from) || (p && !cJSON_IsNull(p) && !cJSON_IsString(p))) {
            *blame = ARTIFACTS_BLAME_ERROR;
            strbuf_addf(err, "malformed spec: input artifact '%s'", in->string);
            return SL_EINVAL;
        }
        const char *src = strip_base_ref(from->valuestring);
        if (!strcmp(src, "git")) { /* the DAG's repository at the run's commit */
            int rc = stage_in_git(r, spec, in, cwd, log_fd, blame, err);
            if (rc < 0)
                return rc;
            continue;
        }
        bool is_key = strncmp(src, "http://", 7) && strncmp(src, "https://", 8) &&
                      strncmp(src, "file://", 7) && strncmp(src, "s3://", 5);
        /* without a repository, upstream outputs are where the upstream step left them */
        if (artifacts_kind(r) == ARTIFACTS_NONE && is_key)
            continue;
        char *rel, *dest;
        if (input_place(in, cwd, &rel, &dest, blame, err) < 0)
            return SL_EINVAL;
        struct strbuf e = STRBUF_INIT;
        int64_t t0 = sl_wall_ms();
        int rc = artifacts_get(r, src, dest, cancel, &e);
        if (rc < 0) {
            *blame = cancel && atomic_load(cancel) ? ARTIFACTS_BLAME_TRANSIENT : blame_of(rc);
            if (rc == SL_ENOENT)
                *blame = ARTIFACTS_BLAME_ERROR;
            strbuf_addf(err, "input artifact '%s' from '%s': %s", in->string, src, e.buf);
            log_line(log_fd, "input artifact '%s' failed: %s", in->string, e.buf);
        } else {
            log_line(log_fd, "input artifact '%s' from %s%s%s at %s (%lld ms)", in->string,
                     is_key ? artifacts_describe(r) : "", is_key ? "/" : "", src, rel,
                     (long long)(sl_wall_ms() - t0));
        }
        strbuf_release(&e);
        free(dest);
        free(rel);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int artifacts_stage_out(struct artifacts_repo *r, const cJSON *spec, const char *cwd, int log_fd,
                        const atomic_int *cancel, enum artifacts_blame *blame, struct strbuf *err)
{
    const cJSON *outs = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(spec, "outputs"), "artifacts");
    const cJSON *o;
    if (!outs || cJSON_IsNull(outs))
        return 0;
    if (!cJSON_IsObject(outs)) {
        *blame = ARTIFACTS_BLAME_ERROR;
        strbuf_addstr(err, "malformed spec: 'outputs.artifacts' is not an object");
        return SL_EINVAL;
    }
    /* every declared output must exist before any is stored */
    cJSON_ArrayForEach(o, outs)
    {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "path");
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, "key");
        if (!cJSON_IsString(p) || !*p->valuestring || (k && !cJSON_IsString(k))) {
            *blame = ARTIFACTS_BLAME_ERROR;
            strbuf_addf(err, "malformed spec: output artifact '%s'", o->string);
            return SL_EINVAL;
        }
        if (has_dotdot(p->valuestring)) {
            *blame = ARTIFACTS_BLAME_STEP;
            strbuf_addf(err, "output artifact '%s' path '%s' has a '..' component", o->string,
                        p->valuestring);
            return SL_EINVAL;
        }
        char *src = resolve(cwd, p->valuestring);
        struct stat st;
        int sr = stat(src, &st);
        free(src);
        if (sr < 0 || (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))) {
            *blame = ARTIFACTS_BLAME_STEP;
            strbuf_addf(err,
                        sr < 0 ? "missing output artifact '%s' (%s)"
                               : "output artifact '%s' (%s) is not a file or a directory",
                        o->string, p->valuestring);
            return SL_ENOENT;
        }
    }
    if (artifacts_kind(r) == ARTIFACTS_NONE)
        return 0;
    cJSON_ArrayForEach(o, outs)
    {
        const char *path = cJSON_GetObjectItemCaseSensitive(o, "path")->valuestring;
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, "key");
        if (!cJSON_IsString(k)) {
            *blame = ARTIFACTS_BLAME_ERROR;
            strbuf_addf(err, "malformed spec: output artifact '%s' has no key", o->string);
            return SL_EINVAL;
        }
        char *src = resolve(cwd, path);
        struct strbuf e = STRBUF_INIT;
        int64_t t0 = sl_wall_ms();
        int rc = artifacts_put(r, k->valuestring, src, cancel, &e);
        if (rc < 0) {
            *blame = blame_of(rc);
            strbuf_addf(err, "output artifact '%s' (%s): %s", o->string, path, e.buf);
            log_line(log_fd, "output artifact '%s' failed: %s", o->string, e.buf);
        } else {
            log_line(log_fd, "output artifact '%s' (%s) stored as %s/%s (%lld ms)", o->string, path,
                     artifacts_describe(r), k->valuestring, (long long)(sl_wall_ms() - t0));
        }
        strbuf_release(&e);
        free(src);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* --- logs
 * ------------------------------------------------------------------------------------------ */

void artifacts_log_key(struct strbuf *out, const char *dag, const char *run, const char *step,
                       int map_index, int attempt)
{
    strbuf_addf(out, "%s/%s/%s", dag, run, step);
    if (map_index >= 0)
        strbuf_addf(out, "/%d", map_index);
    strbuf_addf(out, "/%d/" ARTIFACTS_LOG_NAME, attempt);
}

int artifacts_put_log(struct artifacts_repo *r, const cJSON *spec, const char *log_path,
                      struct strbuf *err)
{
    const cJSON *dag = cJSON_GetObjectItemCaseSensitive(spec, "dag");
    const cJSON *run = cJSON_GetObjectItemCaseSensitive(spec, "run_id");
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(spec, "step");
    const cJSON *mi = cJSON_GetObjectItemCaseSensitive(spec, "map_index");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(spec, "attempt");
    if (!cJSON_IsString(dag) || !cJSON_IsString(run) || !cJSON_IsString(step) ||
        !cJSON_IsNumber(at)) {
        strbuf_addstr(err, "malformed spec: no dag, run_id, step or attempt");
        return SL_EINVAL;
    }
    struct strbuf key = STRBUF_INIT;
    artifacts_log_key(&key, dag->valuestring, run->valuestring, step->valuestring,
                      cJSON_IsNumber(mi) ? (int)mi->valuedouble : -1, (int)at->valuedouble);
    int rc;
    if (r && r->kind == ARTIFACTS_FS) {
        /* a copy: the log volume keeps its own */
        if (!valid_key(key.buf)) {
            strbuf_addf(err, "invalid log key '%s'", key.buf);
            rc = SL_EINVAL;
        } else {
            char *fkey = full_key(r, key.buf);
            char *dest = xasprintf("%s/%s", r->root, fkey);
            rc = make_parents(dest);
            if (rc == 0)
                rc = copy_file(log_path, dest);
            if (rc < 0)
                strbuf_addf(err, "cannot copy the log to '%s': %s", dest, strerror(-rc));
            rc = rc < 0 ? SL_EIO : 0;
            free(dest);
            free(fkey);
        }
    } else {
        rc = artifacts_put(r, key.buf, log_path, NULL, err);
    }
    strbuf_release(&key);
    return rc;
}

int artifacts_open_log(struct artifacts_repo *r, const char *dag, const char *run, const char *step,
                       int map_index, int attempt, const char *tmp_dir, int *out_fd,
                       struct strbuf *err)
{
    if (!r || r->kind == ARTIFACTS_NONE) {
        strbuf_addstr(err, "no artifact repository is configured (artifacts.repository)");
        return SL_EINVAL;
    }
    if (!dag || !run || !step) {
        strbuf_addstr(err, "no dag, run or step");
        return SL_EINVAL;
    }
    struct strbuf key = STRBUF_INIT;
    artifacts_log_key(&key, dag, run, step, map_index, attempt);
    if (!valid_key(key.buf)) {
        strbuf_addf(err, "invalid log key '%s'", key.buf);
        strbuf_release(&key);
        return SL_EINVAL;
    }
    char *fkey = full_key(r, key.buf);
    int rc = 0, fd = -1;
    if (r->kind == ARTIFACTS_FS) {
        char *path = xasprintf("%s/%s", r->root, fkey);
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            rc = errno == ENOENT ? SL_ENOENT : SL_EIO;
            strbuf_addf(err, "no archived log at '%s'", path);
        }
        free(path);
    } else {
        const char *dir = tmp_dir ? tmp_dir : getenv("TMPDIR");
        char *tmp = xasprintf("%s/sluice-log.XXXXXX", dir && *dir ? dir : "/tmp");
        int tfd = mkstemp(tmp);
        if (tfd < 0) {
            strbuf_addf(err, "cannot create a temporary file in '%s': %s", dir ? dir : "/tmp",
                        strerror(errno));
            rc = SL_EIO;
        } else {
            close(tfd);
            rc = s3_get_file(r->s3, fkey, tmp, NULL, NULL, err);
            if (rc == 0 && (fd = open(tmp, O_RDONLY | O_CLOEXEC)) < 0)
                rc = SL_EIO;
            unlink(tmp);
        }
        free(tmp);
    }
    free(fkey);
    strbuf_release(&key);
    if (rc == 0)
        *out_fd = fd;
    return rc;
}
