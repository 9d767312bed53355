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

/* --- sync --------------------------------------------------------------------------- */

struct parsed {
    struct dsl_dag *dag; /* NULL when invalid */
    struct dsl_diags diags;
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

int registry_sync(struct store *st, struct registry_source *src, const struct dsl_options *opts,
                  struct registry_report *report, struct strbuf *err)
{
    struct registry_snapshot snap;
    struct registry_report rep = {0};
    size_t max_bytes = opts && opts->max_bytes ? opts->max_bytes : DSL_DEFAULT_MAX_BYTES;
    struct parsed *p = NULL;
    const char **files = NULL;
    int rc;

    registry_snapshot_init(&snap);
    rc = src->read(src, &snap, max_bytes, err);
    if (rc < 0)
        goto cleanup;
    rep.files = snap.n_files;
    p = xcalloc(snap.n_files + 1, sizeof(*p));
    files = xcalloc(snap.n_files + 1, sizeof(*files));
    for (size_t i = 0; i < snap.n_files; i++) {
        const struct registry_file *f = &snap.files[i];
        files[i] = f->path;
        dsl_diags_init(&p[i].diags);
        if (f->too_big)
            dsl_diags_add(&p[i].diags, f->path, 0, 0, "file is over the limit of %zu bytes",
                          max_bytes);
        else
            dsl_parse_buffer(&p[i].dag, f->path, f->content, f->len, opts, &p[i].diags);
    }
    for (size_t i = 0; i < snap.n_files; i++) {
        for (size_t j = i + 1; p[i].dag && j < snap.n_files; j++) {
            if (p[j].dag && !strcmp(p[i].dag->name, p[j].dag->name)) {
                p[i].duplicate = p[j].duplicate = true;
                dsl_diags_add(&p[j].diags, snap.files[j].path, 0, 0,
                              "DAG name '%s' is already declared by '%s'", p[j].dag->name,
                              snap.files[i].path);
                if (p[i].diags.n == 0)
                    dsl_diags_add(&p[i].diags, snap.files[i].path, 0, 0,
                                  "DAG name '%s' is also declared by '%s'", p[i].dag->name,
                                  snap.files[j].path);
            }
        }
    }

    rc = store_dag_deactivate_missing(st, &rep.deactivated, files, snap.n_files);
    if (rc < 0) {
        strbuf_addf(err, "cannot deactivate DAGs of removed files: %s", store_errmsg(st));
        goto cleanup;
    }
    for (size_t i = 0; i < snap.n_files && rc == 0; i++) {
        const struct registry_file *f = &snap.files[i];
        if (p[i].dag && !p[i].duplicate) {
            struct strbuf json = STRBUF_INIT;
            dsl_dag_to_json(&json, p[i].dag, false);
            struct store_dag_put put = {.dag_id = p[i].dag->name,
                                        .file_path = f->path,
                                        .model_json = json.buf,
                                        .source = f->content,
                                        .commit_sha = snap.commit_sha};
            int64_t version;
            bool changed = false;
            rc = store_dag_put_version(st, &version, &changed, &put);
            strbuf_release(&json);
            if (rc == SL_ECONFLICT) {
                /* another file, still present but now invalid, declared this DAG */
                dsl_diags_add(&p[i].diags, f->path, 0, 0,
                              "DAG name '%s' is declared by another file that still exists",
                              p[i].dag->name);
                dsl_dag_free(p[i].dag);
                p[i].dag = NULL; /* and on to record_errors() below */
            } else if (rc == 0) {
                rep.valid++;
                rep.changed += changed;
                rc = store_import_error_clear(st, f->path);
                continue;
            } else {
                strbuf_addf(err, "cannot record '%s': %s", f->path, store_errmsg(st));
                break;
            }
        }
        rep.invalid++;
        rc = record_errors(st, f->path, snap.commit_sha, &p[i].diags);
        if (rc < 0)
            strbuf_addf(err, "cannot record the errors of '%s': %s", f->path, store_errmsg(st));
    }
    if (rc < 0)
        goto cleanup;

    /* a valid file that stopped declaring a DAG: deactivate that DAG */
    struct arena mem = ARENA_INIT;
    struct store_dag *dags;
    size_t n_dags;
    rc = store_dag_list(st, &dags, &n_dags, &mem);
    for (size_t d = 0; rc == 0 && d < n_dags; d++) {
        if (!dags[d].is_active)
            continue;
        for (size_t i = 0; i < snap.n_files; i++) {
            if (strcmp(snap.files[i].path, dags[d].file_path) || !p[i].dag || p[i].duplicate)
                continue;
            if (strcmp(p[i].dag->name, dags[d].dag_id)) {
                bool was = false;
                rc = store_dag_deactivate(st, &was, dags[d].dag_id);
                rep.deactivated += was;
            }
            break;
        }
    }
    if (rc < 0)
        strbuf_addf(err, "cannot list DAGs: %s", store_errmsg(st));
    arena_release(&mem);

cleanup:
    for (size_t i = 0; p && i < snap.n_files; i++) {
        dsl_dag_free(p[i].dag);
        dsl_diags_release(&p[i].diags);
    }
    free(p);
    free(files);
    if (rc == 0) {
        /* a sync that changed nothing is routine: only worth a debug line */
        sl_log(rep.changed || rep.invalid || rep.deactivated ? SL_LOG_INFO : SL_LOG_DEBUG,
               "registry",
               "synced source=%s files=%zu valid=%zu changed=%zu invalid=%zu deactivated=%zu",
               src->name, rep.files, rep.valid, rep.changed, rep.invalid, rep.deactivated);
        if (report)
            *report = rep;
    }
    registry_snapshot_release(&snap);
    return rc;
}
