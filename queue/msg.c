/*
 * queue/msg.c - the JSON messages: step dispatches, events and cancels.
 *
 * Messages cross a process boundary and may come from a worker of another version, a
 * person with redis-cli, or a bug, so decoding trusts nothing: the size is checked
 * before parsing, the JSON must be exactly one object, "v" must be 1, and every field
 * is checked for type and range. A message that fails gets a one-line reason and an
 * error code, never a crash; the reader logs it and acknowledges it. Unknown fields
 * are ignored, so version 1 can grow optional fields.
 *
 * Encoding writes the scalar fields itself (integers as integers, never in exponent
 * form) and lets cJSON print the opaque objects (spec, outputs). Pure code: no I/O, no
 * shared state, any thread.
 */
#include "queue/queue.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SAFE_INT 9007199254740992LL /* 2^53: every integer up to it is exact in JSON */

static const char *const kind_names[] = {"running", "succeeded", "failed"};

const char *queue_event_kind_name(enum queue_event_kind kind)
{
    return (unsigned)kind < 3 ? kind_names[kind] : "unknown";
}

int queue_event_kind_parse(enum queue_event_kind *out, const char *name)
{
    for (int i = 0; i < 3; i++) {
        if (name && !strcmp(name, kind_names[i])) {
            *out = (enum queue_event_kind)i;
            return 0;
        }
    }
    return SL_EINVAL;
}

/* enum engine_failure's names (scheduler/engine.h), as exec_failure_name() writes them */
static const char *const failure_names[] = {"step", "error", "transient", "cancelled"};

bool queue_event_failure_valid(const char *name)
{
    for (size_t i = 0; name && i < sizeof(failure_names) / sizeof(failure_names[0]); i++)
        if (!strcmp(name, failure_names[i]))
            return true;
    return false;
}

/* An id: 1..QUEUE_NAME_MAX bytes, no control characters. */
static bool valid_id(const char *s)
{
    if (!s || !*s)
        return false;
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++)
        if (*p < 0x20 || *p == 0x7f || n >= QUEUE_NAME_MAX)
            return false;
    return true;
}

/* --- Encoding ------------------------------------------------------------------------ */

static void add_key(struct strbuf *sb, const char *key)
{
    strbuf_addch(sb, ',');
    strbuf_add_json_string(sb, key);
    strbuf_addch(sb, ':');
}

static void add_str(struct strbuf *sb, const char *key, const char *value)
{
    add_key(sb, key);
    if (value)
        strbuf_add_json_string(sb, value);
    else
        strbuf_addstr(sb, "null");
}

static void add_int(struct strbuf *sb, const char *key, int64_t value)
{
    add_key(sb, key);
    strbuf_addf(sb, "%lld", (long long)value);
}

/* Prints obj (which must be a JSON object) after key. */
static int add_object(struct strbuf *sb, const char *key, const cJSON *obj)
{
    if (!cJSON_IsObject(obj))
        return SL_EINVAL;
    char *text = cJSON_PrintUnformatted(obj);
    if (!text)
        return SL_ETOOBIG; /* cJSON could not allocate: far too big */
    add_key(sb, key);
    strbuf_addstr(sb, text);
    cJSON_free(text);
    return 0;
}

/* Appends the finished message in tmp to out, or refuses it if too large. */
static int finish(struct strbuf *out, struct strbuf *tmp, int result)
{
    if (result == 0 && tmp->len > QUEUE_MSG_MAX_BYTES)
        result = SL_ETOOBIG;
    if (result == 0)
        strbuf_add(out, tmp->buf, tmp->len);
    strbuf_release(tmp);
    return result;
}

static bool valid_time(int64_t ms)
{
    return ms >= 0 && ms <= MAX_SAFE_INT;
}

int queue_step_msg_encode(struct strbuf *out, const struct queue_step_msg *msg)
{
    if (!valid_id(msg->attempt_id) || !valid_id(msg->dag_id) || !valid_id(msg->run_id) ||
        !valid_id(msg->step) || msg->map_index < -1 || msg->map_index > INT32_MAX ||
        msg->attempt < 1 || msg->attempt > INT32_MAX)
        return SL_EINVAL;
    struct strbuf sb = STRBUF_INIT;
    strbuf_addstr(&sb, "{\"v\":1");
    add_str(&sb, "attempt_id", msg->attempt_id);
    add_str(&sb, "dag_id", msg->dag_id);
    add_str(&sb, "run_id", msg->run_id);
    add_str(&sb, "step", msg->step);
    add_int(&sb, "map_index", msg->map_index);
    add_int(&sb, "attempt", msg->attempt);
    int result = add_object(&sb, "spec", msg->spec);
    strbuf_addch(&sb, '}');
    return finish(out, &sb, result);
}

int queue_event_msg_encode(struct strbuf *out, const struct queue_event_msg *msg)
{
    if (!valid_id(msg->attempt_id) || !valid_id(msg->worker_id) || (unsigned)msg->kind > 2 ||
        !valid_time(msg->seq) || !valid_time(msg->time_ms) || !valid_time(msg->started_ms) ||
        !valid_time(msg->finished_ms) || (msg->failure && !queue_event_failure_valid(msg->failure)))
        return SL_EINVAL;
    struct strbuf sb = STRBUF_INIT;
    strbuf_addstr(&sb, "{\"v\":1");
    add_str(&sb, "attempt_id", msg->attempt_id);
    add_str(&sb, "kind", kind_names[msg->kind]);
    add_str(&sb, "worker_id", msg->worker_id);
    add_int(&sb, "seq", msg->seq);
    add_int(&sb, "time_ms", msg->time_ms);
    add_int(&sb, "started_ms", msg->started_ms);
    add_int(&sb, "finished_ms", msg->finished_ms);
    if (msg->has_exit_code)
        add_int(&sb, "exit_code", msg->exit_code);
    else
        add_str(&sb, "exit_code", NULL);
    add_str(&sb, "reason", msg->reason);
    if (msg->failure)
        add_str(&sb, "failure", msg->failure);
    if (msg->log_path)
        add_str(&sb, "log_path", msg->log_path);
    int result = msg->outputs ? add_object(&sb, "outputs", msg->outputs) : 0;
    strbuf_addch(&sb, '}');
    return finish(out, &sb, result);
}

int queue_cancel_msg_encode(struct strbuf *out, const struct queue_cancel_msg *msg)
{
    if (!valid_id(msg->run_id) || (msg->attempt_id && !valid_id(msg->attempt_id)) ||
        !valid_time(msg->time_ms))
        return SL_EINVAL;
    struct strbuf sb = STRBUF_INIT;
    strbuf_addstr(&sb, "{\"v\":1");
    add_str(&sb, "run_id", msg->run_id);
    add_str(&sb, "attempt_id", msg->attempt_id);
    add_str(&sb, "reason", msg->reason);
    add_int(&sb, "time_ms", msg->time_ms);
    strbuf_addch(&sb, '}');
    return finish(out, &sb, 0);
}

/* --- Decoding ------------------------------------------------------------------------ */

struct decoder {
    cJSON *root;
    char *reason;
    size_t reason_len;
    int result; /* the first error, or 0 */
};

static bool fail(struct decoder *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool fail(struct decoder *d, int code, const char *fmt, ...)
{
    if (d->result == 0) {
        d->result = code;
        if (d->reason && d->reason_len) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(d->reason, d->reason_len, fmt, ap);
            va_end(ap);
        }
    }
    return false;
}

/* Parses data as one JSON object with "v": 1; sets d->root or fails. */
static bool parse_envelope(struct decoder *d, const char *data, size_t len)
{
    if (len > QUEUE_MSG_MAX_BYTES)
        return fail(d, SL_ETOOBIG, "message is %zu bytes, over the limit of %d", len,
                    QUEUE_MSG_MAX_BYTES);
    if (!data || len == 0)
        return fail(d, SL_EPARSE, "message is empty");
    const char *end = NULL;
    d->root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (!d->root) {
        size_t at = end && end >= data && end <= data + len ? (size_t)(end - data) : 0;
        return fail(d, SL_EPARSE, "message is not JSON (syntax error at byte %zu)", at);
    }
    size_t at = (size_t)(end - data);
    while (at < len && strchr(" \t\r\n", data[at]) && data[at])
        at++;
    if (at < len)
        return fail(d, SL_EPARSE, "unexpected data after the JSON value at byte %zu", at);
    if (!cJSON_IsObject(d->root))
        return fail(d, SL_EINVALID, "message is not a JSON object");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(d->root, "v");
    if (!v)
        return fail(d, SL_EINVALID, "field \"v\" (the version) is missing");
    if (!cJSON_IsNumber(v) || v->valuedouble != 1.0) {
        if (cJSON_IsNumber(v) && fabs(v->valuedouble) < 1e9)
            return fail(d, SL_EINVALID, "version %g is not supported (want 1)", v->valuedouble);
        return fail(d, SL_EINVALID, "field \"v\" must be the number 1");
    }
    return true;
}

/* A string field. required: absent (or null) is an error; else *out stays NULL. id: it
 * must be an id (valid_id). */
static bool get_str(struct decoder *d, const char *key, bool required, bool id, const char **out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(d->root, key);
    *out = NULL;
    if (!item || cJSON_IsNull(item)) {
        if (required)
            return fail(d, SL_EINVALID, "field \"%s\" is missing", key);
        return true;
    }
    if (!cJSON_IsString(item) || !item->valuestring)
        return fail(d, SL_EINVALID, "field \"%s\" must be a string", key);
    if (id && !valid_id(item->valuestring))
        return fail(d, SL_EINVALID, "field \"%s\" must be 1-%d bytes without control characters",
                    key, QUEUE_NAME_MAX);
    *out = item->valuestring;
    return true;
}

/* An integer field in [min, max]; absent (or null) gives def unless required. */
static bool get_int(struct decoder *d, const char *key, bool required, int64_t min, int64_t max,
                    int64_t def, int64_t *out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(d->root, key);
    *out = def;
    if (!item || cJSON_IsNull(item)) {
        if (required)
            return fail(d, SL_EINVALID, "field \"%s\" is missing", key);
        return true;
    }
    double x = item->valuedouble;
    if (!cJSON_IsNumber(item) || x != floor(x) || x < (double)min || x > (double)max)
        return fail(d, SL_EINVALID, "field \"%s\" must be an integer from %lld to %lld", key,
                    (long long)min, (long long)max);
    *out = (int64_t)x;
    return true;
}

/* An object field: detached from the root and handed over in *out (NULL if absent). */
static bool take_object(struct decoder *d, const char *key, bool required, cJSON **out)
{
    cJSON *item = cJSON_GetObjectItemCaseSensitive(d->root, key);
    *out = NULL;
    if (!item || cJSON_IsNull(item)) {
        if (required)
            return fail(d, SL_EINVALID, "field \"%s\" is missing", key);
        return true;
    }
    if (!cJSON_IsObject(item))
        return fail(d, SL_EINVALID, "field \"%s\" must be an object", key);
    *out = cJSON_DetachItemViaPointer(d->root, item);
    return true;
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

void queue_step_msg_free(struct queue_step_msg *msg)
{
    if (!msg)
        return;
    free(msg->attempt_id);
    free(msg->dag_id);
    free(msg->run_id);
    free(msg->step);
    cJSON_Delete(msg->spec);
    free(msg);
}

int queue_step_msg_decode(struct queue_step_msg **out, const char *data, size_t len, char *reason,
                          size_t reason_len)
{
    struct decoder d = {NULL, reason, reason_len, 0};
    const char *attempt_id, *dag_id, *run_id, *step;
    int64_t map_index, attempt;
    cJSON *spec = NULL;
    if (parse_envelope(&d, data, len) && get_str(&d, "attempt_id", true, true, &attempt_id) &&
        get_str(&d, "dag_id", true, true, &dag_id) && get_str(&d, "run_id", true, true, &run_id) &&
        get_str(&d, "step", true, true, &step) &&
        get_int(&d, "map_index", true, -1, INT32_MAX, -1, &map_index) &&
        get_int(&d, "attempt", true, 1, INT32_MAX, 1, &attempt) &&
        take_object(&d, "spec", true, &spec)) {
        struct queue_step_msg *m = xcalloc(1, sizeof(*m));
        m->attempt_id = xstrdup(attempt_id);
        m->dag_id = xstrdup(dag_id);
        m->run_id = xstrdup(run_id);
        m->step = xstrdup(step);
        m->map_index = map_index;
        m->attempt = attempt;
        m->spec = spec;
        *out = m;
    }
    cJSON_Delete(d.root);
    return d.result;
}

void queue_event_msg_free(struct queue_event_msg *msg)
{
    if (!msg)
        return;
    free(msg->attempt_id);
    free(msg->worker_id);
    free(msg->reason);
    cJSON_Delete(msg->outputs);
    free(msg->failure);
    free(msg->log_path);
    free(msg);
}

int queue_event_msg_decode(struct queue_event_msg **out, const char *data, size_t len, char *reason,
                           size_t reason_len)
{
    struct decoder d = {NULL, reason, reason_len, 0};
    const char *attempt_id, *kind_name, *worker_id, *why, *failure, *log_path;
    enum queue_event_kind kind = QUEUE_EVENT_RUNNING;
    int64_t seq, time_ms, started_ms, finished_ms, exit_code;
    cJSON *outputs = NULL;
    if (parse_envelope(&d, data, len) && get_str(&d, "attempt_id", true, true, &attempt_id) &&
        get_str(&d, "kind", true, false, &kind_name) &&
        (queue_event_kind_parse(&kind, kind_name) == 0 ||
         fail(&d, SL_EINVALID,
              "field \"kind\" must be \"running\", \"succeeded\" or \"failed\"")) &&
        get_str(&d, "worker_id", true, true, &worker_id) &&
        get_int(&d, "seq", true, 0, MAX_SAFE_INT, 0, &seq) &&
        get_int(&d, "time_ms", true, 0, MAX_SAFE_INT, 0, &time_ms) &&
        get_int(&d, "started_ms", false, 0, MAX_SAFE_INT, 0, &started_ms) &&
        get_int(&d, "finished_ms", false, 0, MAX_SAFE_INT, 0, &finished_ms) &&
        get_int(&d, "exit_code", false, INT32_MIN, INT32_MAX, INT64_MIN, &exit_code) &&
        get_str(&d, "reason", false, false, &why) &&
        get_str(&d, "failure", false, false, &failure) &&
        (!failure || queue_event_failure_valid(failure) ||
         fail(&d, SL_EINVALID,
              "field \"failure\" must be \"step\", \"error\", \"transient\" or "
              "\"cancelled\"")) &&
        get_str(&d, "log_path", false, false, &log_path) &&
        take_object(&d, "outputs", false, &outputs)) {
        struct queue_event_msg *m = xcalloc(1, sizeof(*m));
        m->attempt_id = xstrdup(attempt_id);
        m->kind = kind;
        m->worker_id = xstrdup(worker_id);
        m->seq = seq;
        m->time_ms = time_ms;
        m->started_ms = started_ms;
        m->finished_ms = finished_ms;
        m->has_exit_code = exit_code != INT64_MIN;
        m->exit_code = m->has_exit_code ? (int)exit_code : 0;
        m->reason = dup_or_null(why);
        m->failure = dup_or_null(failure);
        m->log_path = dup_or_null(log_path);
        m->outputs = outputs ? outputs : cJSON_CreateObject();
        *out = m;
    }
    cJSON_Delete(d.root);
    return d.result;
}

void queue_cancel_msg_free(struct queue_cancel_msg *msg)
{
    if (!msg)
        return;
    free(msg->run_id);
    free(msg->attempt_id);
    free(msg->reason);
    free(msg);
}

int queue_cancel_msg_decode(struct queue_cancel_msg **out, const char *data, size_t len,
                            char *reason, size_t reason_len)
{
    struct decoder d = {NULL, reason, reason_len, 0};
    const char *run_id, *attempt_id, *why;
    int64_t time_ms;
    if (parse_envelope(&d, data, len) && get_str(&d, "run_id", true, true, &run_id) &&
        get_str(&d, "attempt_id", false, true, &attempt_id) &&
        get_str(&d, "reason", false, false, &why) &&
        get_int(&d, "time_ms", true, 0, MAX_SAFE_INT, 0, &time_ms)) {
        struct queue_cancel_msg *m = xcalloc(1, sizeof(*m));
        m->run_id = xstrdup(run_id);
        m->attempt_id = dup_or_null(attempt_id);
        m->reason = dup_or_null(why);
        m->time_ms = time_ms;
        *out = m;
    }
    cJSON_Delete(d.root);
    return d.result;
}
