/*
 * api/resp.c - building answers: JSON bodies, the one error shape, and the small parsers
 * handlers share (body, paging, times, names).
 *
 * Every error is {"error": {"code": "...", "message": "...", "detail": ...}}: code is a
 * stable word for programs (bad_request, unauthenticated, forbidden, not_found,
 * method_not_allowed, conflict, payload_too_large, invalid_params, unavailable, internal),
 * message a sentence for people, detail null or a structure (the list of invalid params).
 */
#include "api/api_int.h"

#include "common/error.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "dsl/dsl.h"
#include "store/store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void api_json(struct api_resp *rs, int status, cJSON *doc)
{
    char *text = cJSON_PrintUnformatted(doc);
    strbuf_reset(&rs->body);
    strbuf_addstr(&rs->body, text);
    strbuf_addch(&rs->body, '\n');
    free(text);
    cJSON_Delete(doc);
    rs->status = status;
    rs->content_type = NULL;
}

void api_error(struct api_resp *rs, int status, const char *code, cJSON *detail, const char *fmt,
               ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cJSON *doc = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(doc, "error");
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddItemToObject(e, "detail", detail ? detail : cJSON_CreateNull());
    if (rs->follow) {
        free(rs->follow->path);
        free(rs->follow->step);
        free(rs->follow);
        rs->follow = NULL;
    }
    api_json(rs, status, doc);
}

void api_store_error(struct api_resp *rs, struct store *st, int rc)
{
    const char *msg = store_errmsg(st);
    switch (rc) {
    case SL_ENOENT:
        api_error(rs, 404, "not_found", NULL, "%s", msg);
        return;
    case SL_EEXIST:
    case SL_ECONFLICT:
        api_error(rs, 409, "conflict", NULL, "%s", msg);
        return;
    case SL_EINVAL:
        api_error(rs, 400, "bad_request", NULL, "%s", msg);
        return;
    case SL_ETOOBIG:
        api_error(rs, 413, "payload_too_large", NULL, "%s", msg);
        return;
    case SL_ECONN:
    case SL_ETIMEDOUT:
        api_error(rs, 503, "unavailable", NULL, "the database is unavailable: %s", msg);
        return;
    default:
        api_error(rs, 500, "internal", NULL, "%s", msg);
    }
}

void api_header(struct api_resp *rs, const char *name, const char *value)
{
    if (rs->n_hdr == API_MAX_HEADERS)
        return;
    rs->hdr_name[rs->n_hdr] = name;
    rs->hdr_value[rs->n_hdr] = xstrdup(value);
    rs->n_hdr++;
}

int api_body_object(cJSON **out, struct api_req *rq, struct api_resp *rs, bool empty_ok)
{
    size_t i = 0;
    while (i < rq->body_len && strchr(" \t\r\n", rq->body[i]))
        i++;
    if (i == rq->body_len) {
        if (empty_ok) {
            *out = cJSON_CreateObject();
            return 0;
        }
        api_error(rs, 400, "bad_request", NULL, "the request needs a JSON object as its body");
        return SL_EINVAL;
    }
    if (strlen(rq->body) != rq->body_len) {
        api_error(rs, 400, "bad_request", NULL, "the body holds a NUL byte");
        return SL_EINVAL;
    }
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithOpts(rq->body, &end, 1);
    if (!doc) {
        size_t at = end ? (size_t)(end - rq->body) : 0;
        api_error(rs, 400, "bad_request", NULL, "the body is not valid JSON (at byte %zu)", at);
        return SL_EINVAL;
    }
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        api_error(rs, 400, "bad_request", NULL, "the body must be a JSON object");
        return SL_EINVAL;
    }
    *out = doc;
    return 0;
}

static int parse_count(int64_t *out, const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < 0)
        return SL_EINVAL;
    *out = v;
    return 0;
}

int api_paging(int64_t *limit, int64_t *offset, const struct api_req *rq, struct api_resp *rs)
{
    const char *l = api_query(rq, "limit"), *o = api_query(rq, "offset");
    *limit = API_LIST_DEFAULT;
    *offset = 0;
    if (l && (parse_count(limit, l) < 0 || *limit < 1 || *limit > API_LIST_MAX)) {
        api_error(rs, 400, "bad_request", NULL, "limit must be a whole number from 1 to %d",
                  API_LIST_MAX);
        return SL_EINVAL;
    }
    if (o && parse_count(offset, o) < 0) {
        api_error(rs, 400, "bad_request", NULL, "offset must be a whole number of 0 or more");
        return SL_EINVAL;
    }
    return 0;
}

int api_query_time(int64_t *out_ms, const struct api_req *rq, struct api_resp *rs, const char *name)
{
    const char *v = api_query(rq, name);
    *out_ms = STORE_NO_TIME;
    if (!v)
        return 0;
    int64_t secs;
    if (sl_time_parse(&secs, v, NULL) < 0 || secs > INT64_C(100000000000) ||
        secs < -INT64_C(100000000000)) {
        api_error(rs, 400, "bad_request", NULL,
                  "%s must be an RFC 3339 time such as 2026-01-02T03:04:05Z", name);
        return SL_EINVAL;
    }
    *out_ms = secs * 1000;
    return 0;
}

void api_add_time(cJSON *obj, const char *name, int64_t ms)
{
    if (ms == STORE_NO_TIME) {
        cJSON_AddNullToObject(obj, name);
        return;
    }
    char secs[32], buf[48];
    int64_t s = sl_floor_div(ms, 1000), frac = ms - s * 1000;
    sl_time_format_utc(secs, s);
    if (frac) {
        secs[strlen(secs) - 1] = '\0';
        snprintf(buf, sizeof(buf), "%s.%03dZ", secs, (int)frac);
    } else {
        snprintf(buf, sizeof(buf), "%s", secs);
    }
    cJSON_AddStringToObject(obj, name, buf);
}

void api_add_raw_json(cJSON *obj, const char *name, const char *json)
{
    cJSON *v = json ? cJSON_Parse(json) : NULL;
    cJSON_AddItemToObject(obj, name, v ? v : cJSON_CreateNull());
}

void api_add_str(cJSON *obj, const char *name, const char *s)
{
    if (s)
        cJSON_AddStringToObject(obj, name, s);
    else
        cJSON_AddNullToObject(obj, name);
}

static bool run_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("_.~:+-", c));
}

bool api_check_dag_id(const char *s, struct api_resp *rs)
{
    if (dsl_is_dns_label(s))
        return true;
    api_error(rs, 400, "bad_request", NULL,
              "invalid dag_id: a DAG name is a DNS label (a-z, 0-9, '-', at most 63)");
    return false;
}

bool api_check_run_id(const char *s, struct api_resp *rs)
{
    size_t n = strlen(s);
    bool ok = n >= 1 && n <= 250 && strcmp(s, ".") && strcmp(s, "..");
    for (const char *p = s; ok && *p; p++)
        ok = run_id_char(*p);
    if (ok)
        return true;
    api_error(rs, 400, "bad_request", NULL, "invalid run_id: 1 to 250 of A-Z a-z 0-9 _ . ~ : + -");
    return false;
}

bool api_check_step(const char *s, struct api_resp *rs)
{
    if (dsl_is_dns_label(s))
        return true;
    api_error(rs, 400, "bad_request", NULL,
              "invalid step name: a step name is a DNS label (a-z, 0-9, '-', at most 63)");
    return false;
}
