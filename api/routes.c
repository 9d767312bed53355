/*
 * api/routes.c - the route table, path matching and the query string.
 *
 * One table lists every route: method, pattern, the least role it needs, handler. The
 * table is the truth for the router, for the per-route metrics labels, and for the
 * contract test that checks the OpenAPI document names every route (and nothing else).
 * Patterns are literal segments and {name} parameters; matching is segment by segment on
 * the percent-decoded path, so "/api/v1/dags/a%2Fb" has one segment "a/b" that no
 * parameter accepts (a '/' or NUL inside a decoded segment matches nothing). A path that
 * matches a pattern under another method is 405, anything else 404.
 */
#include "api/api_int.h"

#include "common/error.h"

#include <stdio.h>
#include <string.h>

const struct api_route api_routes[] = {
    {API_GET, API_PREFIX "/health", API_ROLE_NONE, api_h_health},
    {API_GET, API_PREFIX "/metrics", API_ROLE_NONE, api_h_metrics},
    {API_GET, API_PREFIX "/openapi.json", API_ROLE_NONE, api_h_openapi},
    {API_POST, API_PREFIX "/hooks/git", API_ROLE_NONE, api_h_hook_git},
    {API_GET, API_PREFIX "/import-errors", API_ROLE_VIEWER, api_h_import_errors},
    {API_POST, API_PREFIX "/sync", API_ROLE_OPERATOR, api_h_dags_sync},
    {API_GET, API_PREFIX "/dags", API_ROLE_VIEWER, api_h_dags_list},
    {API_GET, API_PREFIX "/dags/{dag_id}", API_ROLE_VIEWER, api_h_dag_get},
    {API_PATCH, API_PREFIX "/dags/{dag_id}", API_ROLE_OPERATOR, api_h_dag_patch},
    {API_GET, API_PREFIX "/dags/{dag_id}/versions", API_ROLE_VIEWER, api_h_dag_versions},
    {API_GET, API_PREFIX "/dags/{dag_id}/source", API_ROLE_VIEWER, api_h_dag_source},
    {API_GET, API_PREFIX "/runs", API_ROLE_VIEWER, api_h_runs_list},
    {API_POST, API_PREFIX "/dags/{dag_id}/runs", API_ROLE_OPERATOR, api_h_runs_create},
    {API_GET, API_PREFIX "/dags/{dag_id}/runs", API_ROLE_VIEWER, api_h_runs_list},
    {API_GET, API_PREFIX "/dags/{dag_id}/runs/{run_id}", API_ROLE_VIEWER, api_h_run_get},
    {API_POST, API_PREFIX "/dags/{dag_id}/runs/{run_id}/cancel", API_ROLE_OPERATOR,
     api_h_run_cancel},
    {API_POST, API_PREFIX "/dags/{dag_id}/runs/{run_id}/retry", API_ROLE_OPERATOR, api_h_run_retry},
    {API_GET, API_PREFIX "/dags/{dag_id}/runs/{run_id}/steps", API_ROLE_VIEWER, api_h_steps_list},
    {API_GET, API_PREFIX "/dags/{dag_id}/runs/{run_id}/steps/{step}", API_ROLE_VIEWER,
     api_h_step_get},
    {API_GET, API_PREFIX "/dags/{dag_id}/runs/{run_id}/steps/{step}/logs/{attempt}",
     API_ROLE_VIEWER, api_h_step_log},
    {API_GET, API_PREFIX "/tokens", API_ROLE_ADMIN, api_h_tokens_list},
    {API_POST, API_PREFIX "/tokens", API_ROLE_ADMIN, api_h_tokens_create},
    {API_DELETE, API_PREFIX "/tokens/{token_id}", API_ROLE_ADMIN, api_h_token_revoke},
    {API_POST, API_PREFIX "/backfills", API_ROLE_OPERATOR, api_h_backfills_create},
    {API_GET, API_PREFIX "/backfills/{backfill_id}", API_ROLE_VIEWER, api_h_backfill_get},
    {API_POST, API_PREFIX "/backfills/{backfill_id}/cancel", API_ROLE_OPERATOR,
     api_h_backfill_cancel},
    {API_OTHER, NULL, API_ROLE_NONE, NULL},
};

size_t api_routes_count(void)
{
    size_t n = 0;
    while (api_routes[n].pattern)
        n++;
    return n;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..len) into the arena; plus_space for queries. NULL when malformed
 * or when it decodes to a NUL byte. */
static char *decode(struct arena *mem, const char *s, size_t len, bool plus_space)
{
    char *out = arena_alloc(mem, len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '%') {
            if (i + 2 >= len)
                return NULL;
            int a = hexval((unsigned char)s[i + 1]), b = hexval((unsigned char)s[i + 2]);
            if (a < 0 || b < 0)
                return NULL;
            ch = (char)(a * 16 + b);
            if (!ch)
                return NULL;
            i += 2;
        } else if (plus_space && ch == '+') {
            ch = ' ';
        }
        out[o++] = ch;
    }
    out[o] = '\0';
    return out;
}

const struct api_route *api_route_match(struct api_req *rq, int *out_status, char *msg,
                                        size_t msglen)
{
    /* split the path */
    const char *segs[API_MAX_SEGS + 1];
    size_t n = 0;
    const char *p = rq->path;
    if (*p != '/') {
        *out_status = 404;
        snprintf(msg, msglen, "no such resource");
        return NULL;
    }
    while (*p == '/') {
        p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 && !end)
            break; /* a trailing slash */
        if (n == API_MAX_SEGS + 1 || len == 0) {
            *out_status = 404;
            snprintf(msg, msglen, "no such resource");
            return NULL;
        }
        char *d = decode(&rq->mem, p, len, false);
        segs[n++] = d ? d : "\x01"; /* undecodable: matches no literal; params refuse it */
        p += len;
    }
    bool path_matched = false;
    for (const struct api_route *r = api_routes; r->pattern; r++) {
        const char *q = r->pattern;
        size_t k = 0, np = 0;
        bool ok = true;
        const char *params[API_MAX_SEGS];
        while (*q == '/' && ok) {
            q++;
            const char *end = strchr(q, '/');
            size_t len = end ? (size_t)(end - q) : strlen(q);
            if (k >= n) {
                ok = false;
                break;
            }
            if (q[0] == '{') {
                if (strchr(segs[k], '/') || segs[k][0] == '\x01')
                    ok = false;
                else
                    params[np++] = segs[k];
            } else if (strlen(segs[k]) != len || strncmp(segs[k], q, len)) {
                ok = false;
            }
            k++;
            q += len;
        }
        if (!ok || k != n)
            continue;
        path_matched = true;
        if (r->method != rq->method)
            continue;
        memcpy(rq->params, params, np * sizeof(params[0]));
        rq->n_params = np;
        return r;
    }
    *out_status = path_matched ? 405 : 404;
    snprintf(msg, msglen, path_matched ? "this method is not allowed here" : "no such resource");
    return NULL;
}

int api_query_parse(struct api_req *rq)
{
    size_t cap = 1;
    for (const char *p = rq->query; *p; p++)
        cap += *p == '&';
    rq->qname = arena_calloc(&rq->mem, cap, sizeof(*rq->qname));
    rq->qvalue = arena_calloc(&rq->mem, cap, sizeof(*rq->qvalue));
    rq->n_query = 0;
    const char *p = rq->query;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len) {
            const char *eq = memchr(p, '=', len);
            size_t nl = eq ? (size_t)(eq - p) : len;
            char *name = decode(&rq->mem, p, nl, true);
            char *value = eq ? decode(&rq->mem, eq + 1, len - nl - 1, true) : "";
            if (!name || !value)
                return SL_EINVAL;
            rq->qname[rq->n_query] = name;
            rq->qvalue[rq->n_query] = value;
            rq->n_query++;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return 0;
}

const char *api_query(const struct api_req *rq, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < rq->n_query; i++)
        if (!strcmp(rq->qname[i], name))
            v = rq->qvalue[i];
    return v;
}
