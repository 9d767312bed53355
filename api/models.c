/*
 * api/models.c - parsed DAG versions, kept per worker thread.
 *
 * Triggering a run checks its params against the DAG's typed params, and a backfill needs
 * the schedule: both need the version's model parsed. A version never changes once
 * recorded, so each worker thread keeps the last MODELS_MAX it parsed (no locking: the
 * cache is the thread's own); the oldest is dropped first.
 */
#include "api/api_int.h"

#include "common/error.h"
#include "common/xalloc.h"
#include "dsl/dsl.h"
#include "store/store.h"

#include <stdlib.h>
#include <string.h>

#define MODELS_MAX 64

struct entry {
    int64_t version_id;
    struct dsl_dag *dag;
};

struct api_model_cache {
    struct entry v[MODELS_MAX];
    size_t n;
};

struct api_model_cache *api_model_cache_new(void)
{
    return xcalloc(1, sizeof(struct api_model_cache));
}

void api_model_cache_free(struct api_model_cache *mc)
{
    if (!mc)
        return;
    for (size_t i = 0; i < mc->n; i++)
        dsl_dag_free(mc->v[i].dag);
    free(mc);
}

const struct dsl_dag *api_model_get(struct api_ctx *c, int64_t version_id, struct api_resp *rs)
{
    struct api_model_cache *mc = c->models;
    for (size_t i = 0; i < mc->n; i++)
        if (mc->v[i].version_id == version_id)
            return mc->v[i].dag;
    struct arena mem = ARENA_INIT;
    struct store_dag_version v;
    int rc = store_dag_version_get(c->st, &v, version_id, &mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        arena_release(&mem);
        return NULL;
    }
    struct dsl_diags diags;
    dsl_diags_init(&diags);
    struct dsl_dag *dag = NULL;
    struct dsl_options o = {.max_bytes = strlen(v.model_json) + 1};
    rc = dsl_parse_buffer(&dag, v.file_path ? v.file_path : v.dag_id, v.model_json,
                          strlen(v.model_json), &o, &diags);
    dsl_diags_release(&diags);
    arena_release(&mem);
    if (rc < 0) {
        api_error(rs, 500, "internal", NULL, "DAG version %lld does not parse",
                  (long long)version_id);
        return NULL;
    }
    if (mc->n == MODELS_MAX) {
        dsl_dag_free(mc->v[0].dag);
        memmove(&mc->v[0], &mc->v[1], (MODELS_MAX - 1) * sizeof(mc->v[0]));
        mc->n--;
    }
    mc->v[mc->n].version_id = version_id;
    mc->v[mc->n].dag = dag;
    mc->n++;
    return dag;
}
