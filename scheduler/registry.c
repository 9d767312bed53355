/*
 * scheduler/registry.c - syncing DAG files into the store.
 *
 * One sync: read a snapshot of the source; parse every file; find names
 * declared by two files; deactivate the DAGs whose file is gone (so that a
 * renamed file is not a conflict); record each valid file's version and clear
 * its import error; record the invalid files' errors; deactivate DAGs whose
 * file is valid but no longer declares them. Reading happens before any write,
 * so a source that fails changes nothing.
 */
#include "scheduler/registry.h"
#include "common/error.h"
#include "common/log.h"
#include "common/xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* --- the directory source --------------------------------------------------------- */

static bool is_dag_file(const char *name)
{
    size_t n = strlen(name);
    return (n > 5 && !strcmp(name + n - 5, ".yaml")) || (n > 4 && !strcmp(name + n - 4, ".yml"));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct path_list {
    char **v;
    size_t n, alloc;
};

static void path_list_add(struct path_list *l, char *path)
{
    XGROW(l->v, l->alloc, l->n + 1);
    l->v[l->n++] = path;
}

static int collect(struct path_list *out, const char *dir, int depth, struct strbuf *err)
{
    if (depth > 32) {
        strbuf_addf(err, "'%s': directories nested too deep", dir);
        return SL_EINVAL;
    }
    DIR *d = opendir(dir);
    if (!d) {
        strbuf_addf(err, "cannot open directory '%s': %s", dir, strerror(errno));
        return errno == ENOENT ? SL_ENOENT : SL_EIO;
    }
    struct path_list here = {0};
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] != '.')
            path_list_add(&here, xasprintf("%s/%s", dir, de->d_name));
    }
    closedir(d);
    if (here.n)
        qsort(here.v, here.n, sizeof(*here.v), cmp_str);
    int result = 0;
    for (size_t i = 0; i < here.n; i++) {
        struct stat st;
        if (result == 0 && lstat(here.v[i], &st) == 0) {
            if (S_ISDIR(st.st_mode)) {
                result = collect(out, here.v[i], depth + 1, err);
            } else if (S_ISREG(st.st_mode) && is_dag_file(here.v[i])) {
                path_list_add(out, here.v[i]);
                continue;
            }
        }
        free(here.v[i]);
    }
    free(here.v);
    return result;
}

int registry_list_dir(char ***out, size_t *out_n, const char *dir, struct strbuf *err)
{
    struct path_list l = {0};
    size_t len = strlen(dir);
    char *root = xstrdup(dir);
    while (len > 1 && root[len - 1] == '/')
        root[--len] = '\0';
    int rc = collect(&l, root, 0, err);
    free(root);
    if (rc < 0) {
        for (size_t i = 0; i < l.n; i++)
            free(l.v[i]);
        free(l.v);
        return rc;
    }
    *out = l.v;
    *out_n = l.n;
    return 0;
}

struct dir_source {
    struct registry_source base;
    char *root;
};

static int dir_read(struct registry_source *src, struct registry_snapshot *snap, size_t max_bytes,
                    struct strbuf *err)
{
    struct dir_source *ds = (struct dir_source *)src;
    char **paths;
    size_t n;
    int rc = registry_list_dir(&paths, &n, ds->root, err);
    if (rc < 0)
        return rc;
    size_t skip = strlen(ds->root);
    while (skip > 1 && ds->root[skip - 1] == '/')
        skip--;
    snap->files = arena_calloc(&snap->mem, n + 1, sizeof(*snap->files));
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct registry_file *f = &snap->files[snap->n_files];
        struct strbuf sb = STRBUF_INIT;
        f->path = arena_strdup(&snap->mem, paths[i] + skip + 1);
        int r = strbuf_read_file(&sb, paths[i], max_bytes);
        if (r == SL_ETOOBIG) {
            f->too_big = true;
            snap->n_files++;
        } else if (r == SL_ENOENT) {
            /* removed while we read: as if it was never there */
        } else if (r < 0) {
            strbuf_addf(err, "cannot read '%s'", paths[i]);
            rc = r;
        } else {
            char *content = arena_alloc(&snap->mem, sb.len + 1);
            memcpy(content, sb.buf, sb.len + 1);
            f->content = content;
            f->len = sb.len;
            snap->n_files++;
        }
        strbuf_release(&sb);
    }
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    return rc;
}

static void dir_free(struct registry_source *src)
{
    struct dir_source *ds = (struct dir_source *)src;
    free(ds->root);
    free((char *)ds->base.name);
    free(ds);
}

int registry_dir_source(struct registry_source **out, const char *root)
{
    struct stat st;
    if (stat(root, &st) < 0 || !S_ISDIR(st.st_mode))
        return SL_ENOENT;
    struct dir_source *ds = xcalloc(1, sizeof(*ds));
    ds->root = xstrdup(root);
    ds->base.name = xasprintf("dir:%s", root);
    ds->base.read = dir_read;
    ds->base.free = dir_free;
    *out = &ds->base;
    return 0;
}

void registry_snapshot_init(struct registry_snapshot *snap)
{
    memset(snap, 0, sizeof(*snap));
    arena_init(&snap->mem);
}

void registry_snapshot_release(struct registry_snapshot *snap)
{
    arena_release(&snap->mem);
    registry_snapshot_init(snap);
}

/* --- the cache of the last sync ---------------------------------------------------- */

struct registry_cache_entry {
    char *path;
    uint64_t hash; /* FNV-1a 64 of the content */
    size_t len;
    char *dag_name; /* the DAG it declares; NULL: the file is invalid on its own */
};

static uint64_t content_hash(const char *p, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * UINT64_C(0x100000001b3);
    return h;
}

void registry_cache_init(struct registry_cache *c)
{
    memset(c, 0, sizeof(*c));
}

void registry_cache_clear(struct registry_cache *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].path);
        free(c->v[i].dag_name);
    }
    c->n = 0;
}

void registry_cache_release(struct registry_cache *c)
{
    registry_cache_clear(c);
    free(c->v);
    registry_cache_init(c);
}

static int cmp_entry(const void *key, const void *e)
{
    return strcmp(key, ((const struct registry_cache_entry *)e)->path);
}

/* The entry for path if the file's content is the one the cache saw. The cache is sorted
 * by path (it is built from a snapshot, which is). */
static const struct registry_cache_entry *cache_hit(const struct registry_cache *c,
                                                    const struct registry_file *f, uint64_t hash)
{
    if (!c || !c->n || f->too_big)
        return NULL;
    const struct registry_cache_entry *e = bsearch(f->path, c->v, c->n, sizeof(*c->v), cmp_entry);
    return e && e->hash == hash && e->len == f->len ? e : NULL;
}

/* --- sync --------------------------------------------------------------------------- */

struct parsed {
    struct dsl_dag *dag; /* parsed now; NULL when invalid or unchanged */
    const char *name;    /* the DAG it declares (parsed or cached), or NULL when invalid */
    struct dsl_diags diags;
    uint64_t hash;
    bool unchanged; /* the cache saw this content: not parsed, not written again */
    bool duplicate; /* its name is declared by another file too */
};

static int record_errors(struct store *st, const char *file, const char *commit,
                         const struct dsl_diags *d)
{
    struct store_import_error_item *items = xcalloc(d->n + 2, sizeof(*items));
    size_t n = 0;
    for (size_t i = 0; i < d->n; i++) {
        items[n].line = d->items[i].line;
        items[n].col = d->items[i].col;
        items[n].message = d->items[i].msg;
        n++;
    }
    char *more = NULL;
    if (d->dropped) {
        more = xasprintf("%zu more errors not shown", d->dropped);
        items[n++] = (struct store_import_error_item){0, 0, more};
    }
    int rc = store_import_error_set(st, file, commit, items, n);
    free(more);
    free(items);
    return rc;
}

/* Parses the files the cache has not seen; takes the others' names from it. */
static void parse_all(struct parsed *p, const struct registry_snapshot *snap,
                      const struct dsl_options *opts, size_t max_bytes,
                      const struct registry_cache *cache, size_t *parsed)
{
    for (size_t i = 0; i < snap->n_files; i++) {
        const struct registry_file *f = &snap->files[i];
        dsl_diags_init(&p[i].diags);
        if (f->too_big) {
            dsl_diags_add(&p[i].diags, f->path, 0, 0, "file is over the limit of %zu bytes",
                          max_bytes);
            continue;
        }
        p[i].hash = content_hash(f->content, f->len);
        const struct registry_cache_entry *e = cache_hit(cache, f, p[i].hash);
        if (e) {
            p[i].unchanged = true;
            p[i].name = e->dag_name;
            continue;
        }
        (*parsed)++;
        if (dsl_parse_buffer(&p[i].dag, f->path, f->content, f->len, opts, &p[i].diags) == 0)
            p[i].name = p[i].dag->name;
    }
    for (size_t i = 0; i < snap->n_files; i++) {
        for (size_t j = i + 1; p[i].name && j < snap->n_files; j++) {
            if (p[j].name && !strcmp(p[i].name, p[j].name)) {
                p[i].duplicate = p[j].duplicate = true;
                dsl_diags_add(&p[j].diags, snap->files[j].path, 0, 0,
                              "DAG name '%s' is already declared by '%s'", p[j].name,
                              snap->files[i].path);
                if (p[i].diags.n == 0)
                    dsl_diags_add(&p[i].diags, snap->files[i].path, 0, 0,
                                  "DAG name '%s' is also declared by '%s'", p[i].name,
                                  snap->files[j].path);
            }
        }
    }
}

/* Records one file: its version when valid, else its errors. Sets *valid. */
static int record_file(struct store *st, const struct registry_file *f, struct parsed *pi,
                       const char *commit, struct registry_report *rep, struct strbuf *err)
{
    if (pi->name && !pi->duplicate) {
        if (pi->unchanged) {
            rep->valid++;
            return 0;
        }
        struct strbuf json = STRBUF_INIT;
        dsl_dag_to_json(&json, pi->dag, false);
        struct store_dag_put put = {.dag_id = pi->dag->name,
                                    .file_path = f->path,
                                    .model_json = json.buf,
                                    .source = f->content,
                                    .commit_sha = commit};
        int64_t version;
        bool changed = false;
        int rc = store_dag_put_version(st, &version, &changed, &put);
        strbuf_release(&json);
        if (rc == 0) {
            rep->valid++;
            rep->changed += changed;
            return store_import_error_clear(st, f->path);
        }
        if (rc != SL_ECONFLICT) {
            strbuf_addf(err, "cannot record '%s': %s", f->path, store_errmsg(st));
            return rc;
        }
        /* another file, still present but now invalid, declared this DAG */
        dsl_diags_add(&pi->diags, f->path, 0, 0,
                      "DAG name '%s' is declared by another file that still exists", pi->name);
        pi->name = NULL;
        pi->unchanged = false;
    }
    rep->invalid++;
    if (pi->unchanged && !pi->duplicate)
        return 0; /* the same content, the same errors: recorded already */
    int rc = record_errors(st, f->path, commit, &pi->diags);
    if (rc < 0)
        strbuf_addf(err, "cannot record the errors of '%s': %s", f->path, store_errmsg(st));
    return rc;
}

/* Deactivates the DAGs whose file is valid but no longer declares them. */
static int deactivate_renamed(struct store *st, const struct registry_snapshot *snap,
                              const struct parsed *p, size_t *deactivated, struct strbuf *err)
{
    struct arena mem = ARENA_INIT;
    struct store_dag *dags;
    size_t n_dags;
    int rc = store_dag_list(st, &dags, &n_dags, &mem);
    for (size_t d = 0; rc == 0 && d < n_dags; d++) {
        if (!dags[d].is_active)
            continue;
        for (size_t i = 0; i < snap->n_files; i++) {
            if (strcmp(snap->files[i].path, dags[d].file_path) || !p[i].name || p[i].duplicate)
                continue;
            if (strcmp(p[i].name, dags[d].dag_id)) {
                bool was = false;
                rc = store_dag_deactivate(st, &was, dags[d].dag_id);
                *deactivated += was;
            }
            break;
        }
    }
    if (rc < 0)
        strbuf_addf(err, "cannot list DAGs: %s", store_errmsg(st));
    arena_release(&mem);
    return rc;
}

/* The cache after a successful sync: every file that is valid, or invalid on its own. A
 * file that is an error only because of another file is left out, so that it is parsed
 * again when the other file changes. */
static void cache_rebuild(struct registry_cache *old, const struct registry_snapshot *snap,
                          const struct parsed *p)
{
    struct registry_cache fresh, *c = &fresh; /* p[] points into the old one */
    registry_cache_init(c);
    for (size_t i = 0; i < snap->n_files; i++) {
        if (snap->files[i].too_big || p[i].duplicate)
            continue;
        XGROW(c->v, c->alloc, c->n + 1);
        struct registry_cache_entry *e = &c->v[c->n++];
        e->path = xstrdup(snap->files[i].path);
        e->hash = p[i].hash;
        e->len = snap->files[i].len;
        e->dag_name = p[i].name ? xstrdup(p[i].name) : NULL;
    }
    registry_cache_release(old);
    *old = fresh;
}

int registry_apply(struct store *st, const struct registry_snapshot *snap, const char *source_name,
                   const struct dsl_options *opts, struct registry_cache *cache,
                   struct registry_report *report, struct strbuf *err)
{
    struct registry_report rep = {.files = snap->n_files};
    size_t max_bytes = opts && opts->max_bytes ? opts->max_bytes : DSL_DEFAULT_MAX_BYTES;
    struct parsed *p = xcalloc(snap->n_files + 1, sizeof(*p));
    const char **files = xcalloc(snap->n_files + 1, sizeof(*files));
    const char **current = xcalloc(snap->n_files + 1, sizeof(*current));
    size_t n_current = 0;
    int rc;

    parse_all(p, snap, opts, max_bytes, cache, &rep.parsed);
    for (size_t i = 0; i < snap->n_files; i++)
        files[i] = snap->files[i].path;
    rc = store_dag_deactivate_missing(st, &rep.deactivated, files, snap->n_files);
    if (rc < 0)
        strbuf_addf(err, "cannot deactivate DAGs of removed files: %s", store_errmsg(st));
    for (size_t i = 0; i < snap->n_files && rc == 0; i++)
        rc = record_file(st, &snap->files[i], &p[i], snap->commit_sha, &rep, err);
    if (rc == 0)
        rc = deactivate_renamed(st, snap, p, &rep.deactivated, err);
    if (rc == 0 && snap->commit_sha) {
        /* every DAG valid in this commit now runs from it; a DAG whose file broke keeps
         * the commit of its last good version */
        for (size_t i = 0; i < snap->n_files; i++)
            if (p[i].name && !p[i].duplicate)
                current[n_current++] = p[i].name;
        rc = store_dags_set_commit(st, snap->commit_sha, current, n_current);
        if (rc < 0)
            strbuf_addf(err, "cannot record the DAGs' commit: %s", store_errmsg(st));
    }

    if (cache) {
        if (rc == 0)
            cache_rebuild(cache, snap, p);
        else
            registry_cache_clear(cache); /* what the store holds is unknown now */
    }
    for (size_t i = 0; i < snap->n_files; i++) {
        dsl_dag_free(p[i].dag);
        dsl_diags_release(&p[i].diags);
    }
    free(p);
    free(files);
    free(current);
    if (rc == 0) {
        /* a sync that changed nothing is routine: only worth a debug line */
        sl_log(rep.changed || rep.invalid || rep.deactivated ? SL_LOG_INFO : SL_LOG_DEBUG,
               "registry",
               "synced source=%s%s%.12s files=%zu parsed=%zu valid=%zu changed=%zu "
               "invalid=%zu deactivated=%zu",
               source_name, snap->commit_sha ? "@" : "", snap->commit_sha ? snap->commit_sha : "",
               rep.files, rep.parsed, rep.valid, rep.changed, rep.invalid, rep.deactivated);
        if (report)
            *report = rep;
    }
    return rc;
}

int registry_sync(struct store *st, struct registry_source *src, const struct dsl_options *opts,
                  struct registry_cache *cache, struct registry_report *report, struct strbuf *err)
{
    struct registry_snapshot snap;
    size_t max_bytes = opts && opts->max_bytes ? opts->max_bytes : DSL_DEFAULT_MAX_BYTES;
    registry_snapshot_init(&snap);
    int rc = src->read(src, &snap, max_bytes, err);
    if (rc == 0)
        rc = registry_apply(st, &snap, src->name, opts, cache, report, err);
    registry_snapshot_release(&snap);
    return rc;
}
