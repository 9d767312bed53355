/*
 * queue/queue.c - the operations of queue.h over the connection of conn.c.
 *
 * Each function validates its arguments, builds one command (an argument vector: no
 * user text is ever pasted into a command string), runs it and turns the reply into
 * results, checking the reply's shape at every step: a reply that is not what Redis
 * documents is logged and becomes SL_EIO, never a crash. Multi-key changes run as the
 * Lua scripts of scripts.c.
 *
 * Keys (queue/README.md has the full picture), with <p> the prefix:
 *
 *   <p>q:<queue>       stream of step messages, group "workers"
 *   <p>events          stream of events, group "scheduler"
 *   <p>cancel          stream of cancels, capped, read without a group
 *   <p>msg             hash: attempt id -> "<entry id> <queue>" (the message index)
 *   <p>worker:<id>     string with a TTL: the worker's last heartbeat info
 *   <p>workers         sorted set: worker id scored by last-seen server time (ms)
 */
#include "queue/queue_int.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/xalloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TAKEOVER_ROUNDS  100  /* XAUTOCLAIM calls per queue_takeover() at most */
#define ADOPT_ROUNDS     1000 /* XAUTOCLAIM calls when adopting pending events at most */
#define IDS_PER_SCRIPT   1000 /* ids passed to one script call */
#define BYTES_PER_SCRIPT (8 * 1024 * 1024) /* messages passed to one script call, about */
#define PREFIX_MAX       64

/* --- Validation ---------------------------------------------------------------------- */

/* A name used in a key: 1..QUEUE_NAME_MAX bytes of [A-Za-z0-9._:@-]. */
static bool valid_name(const char *s)
{
    if (!s || !*s)
        return false;
    size_t n = 0;
    for (const char *p = s; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr("._:@-", c) != NULL;
        if (!ok || n >= QUEUE_NAME_MAX)
            return false;
    }
    return true;
}

/* "<digits>-<digits>", as Redis writes stream ids. */
static bool valid_entry_id(const char *s)
{
    const char *p = s;
    size_t digits = 0;
    while (*p >= '0' && *p <= '9')
        p++, digits++;
    if (digits == 0 || digits > 20 || *p++ != '-')
        return false;
    digits = 0;
    while (*p >= '0' && *p <= '9')
        p++, digits++;
    return digits > 0 && digits <= 20 && *p == '\0';
}

static bool valid_count(size_t n)
{
    return n >= 1 && n <= QUEUE_READ_MAX;
}

/* --- Keys ---------------------------------------------------------------------------- */

static const char *step_key(struct queue_cmd *c, const struct queue *q, const char *queue_name)
{
    return arena_sprintf(&c->mem, "%sq:%s", q->prefix, queue_name);
}

static const char *worker_key(struct queue_cmd *c, const struct queue *q, const char *worker_id)
{
    return arena_sprintf(&c->mem, "%sworker:%s", q->prefix, worker_id);
}

/* --- Replies ------------------------------------------------------------------------- */

static bool is_string(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static bool is_array(const redisReply *r, size_t min_elements)
{
    return r && r->type == REDIS_REPLY_ARRAY && r->elements >= min_elements;
}

/* Copies a reply string into an id; false if it is not one. */
static bool copy_id(struct queue_id *out, const redisReply *r)
{
    if (!is_string(r) || r->len >= QUEUE_ID_BUFSZ)
        return false;
    memcpy(out->s, r->str, r->len);
    out->s[r->len] = '\0';
    return valid_entry_id(out->s);
}

/* An integer reply, or a string holding one (Lua numbers and scores come as either). */
static bool reply_int(int64_t *out, const redisReply *r)
{
    if (r && r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
        return true;
    }
    if (!is_string(r) || r->len == 0 || r->len > 24)
        return false;
    char *end;
    double d = strtod(r->str, &end);
    if (end != r->str + r->len || d < -9.2e18 || d > 9.2e18)
        return false;
    *out = (int64_t)d;
    return true;
}

/* --- Batches ------------------------------------------------------------------------- */

enum entry_kind { ENTRY_STEP, ENTRY_EVENT, ENTRY_CANCEL };

void queue_batch_release(struct queue_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        struct queue_entry *e = &b->entries[i];
        queue_step_msg_free(e->step);
        queue_event_msg_free(e->event);
        queue_cancel_msg_free(e->cancel);
        free(e->error);
    }
    free(b->entries);
    memset(b, 0, sizeof(*b));
}

static struct queue_entry *batch_push(struct queue_batch *b)
{
    XGROW(b->entries, b->alloc, b->n + 1);
    struct queue_entry *e = &b->entries[b->n++];
    memset(e, 0, sizeof(*e));
    return e;
}

/* Decodes the "m" field of fields (a flat field/value array) into e. */
static void decode_entry(struct queue_entry *e, const redisReply *fields, enum entry_kind kind)
{
    const redisReply *m = NULL;
    if (fields->type == REDIS_REPLY_NIL) {
        e->error = xstrdup("entry was deleted");
        return;
    }
    for (size_t i = 0; is_array(fields, 0) && i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i];
        if (is_string(k) && k->len == 1 && k->str[0] == 'm' && is_string(fields->element[i + 1]))
            m = fields->element[i + 1];
    }
    if (!m) {
        e->error = xstrdup("entry has no field \"m\"");
        return;
    }
    char reason[QUEUE_REASON_BUFSZ];
    int result;
    if (kind == ENTRY_STEP)
        result = queue_step_msg_decode(&e->step, m->str, m->len, reason, sizeof(reason));
    else if (kind == ENTRY_EVENT)
        result = queue_event_msg_decode(&e->event, m->str, m->len, reason, sizeof(reason));
    else
        result = queue_cancel_msg_decode(&e->cancel, m->str, m->len, reason, sizeof(reason));
    if (result < 0)
        e->error = xstrdup(reason);
}

/* Appends the entries of arr ([[id, [field, value, ...]], ...]) to b. A nil in place of
 * an entry (XAUTOCLAIM of Redis 6.2 for a deleted one) counts as deleted. */
static bool parse_entries(struct queue_batch *b, const redisReply *arr, enum entry_kind kind)
{
    if (!is_array(arr, 0))
        return false;
    for (size_t i = 0; i < arr->elements; i++) {
        const redisReply *item = arr->element[i];
        if (item->type == REDIS_REPLY_NIL) {
            b->n_deleted++;
            continue;
        }
        struct queue_id id;
        if (!is_array(item, 2) || !copy_id(&id, item->element[0]))
            return false;
        struct queue_entry *e = batch_push(b);
        e->id = id;
        decode_entry(e, item->element[1], kind);
    }
    return true;
}

/* The entries of an XREAD/XREADGROUP reply on one stream: nil (nothing came) or
 * [[key, entries]]. */
static bool parse_read_reply(struct queue_batch *b, const redisReply *r, enum entry_kind kind)
{
    if (r->type == REDIS_REPLY_NIL)
        return true;
    if (!is_array(r, 1) || !is_array(r->element[0], 2))
        return false;
    return parse_entries(b, r->element[0]->element[1], kind);
}

/* --- Groups -------------------------------------------------------------------------- */

/* XGROUP CREATE <key> <group> 0 MKSTREAM. From 0, not $: a group created after
 * messages were sent (after a Redis restart, say) must still deliver them. */
static int ensure_group(struct queue *q, const char *key, const char *group)
{
    struct queue_cmd cmd;
    queue_cmd_init(&cmd);
    queue_cmd_add(&cmd, "XGROUP");
    queue_cmd_add(&cmd, "CREATE");
    queue_cmd_add(&cmd, key);
    queue_cmd_add(&cmd, group);
    queue_cmd_add(&cmd, "0");
    queue_cmd_add(&cmd, "MKSTREAM");
    redisReply *r = NULL;
    int result = queue_run(&r, q, &cmd, 0);
    if (result == 0) {
        if (r->type == REDIS_REPLY_ERROR && !queue_reply_is(r, "BUSYGROUP")) {
            result = queue_reply_fail(q, r, "XGROUP CREATE");
        } else {
            if (r->type != REDIS_REPLY_ERROR)
                sl_debug(QUEUE_LOG, "created group \"%s\" on \"%s\"", group, key);
            freeReplyObject(r);
        }
    }
    queue_cmd_release(&cmd);
    return result;
}

/* Runs cmd; if the group is missing, creates it (and the stream) and runs cmd again. */
static int run_grouped(redisReply **out, struct queue *q, struct queue_cmd *cmd, int block_ms,
                       const char *key, const char *group)
{
    redisReply *r = NULL;
    int result = queue_run(&r, q, cmd, block_ms);
    if (result == 0 && queue_reply_is(r, "NOGROUP")) {
        freeReplyObject(r);
        r = NULL;
        result = ensure_group(q, key, group);
        if (result == 0)
            result = queue_run(&r, q, cmd, block_ms);
    }
    if (result == 0)
        *out = r;
    return result;
}

int queue_ensure_step_group(struct queue *q, const char *queue_name)
{
    if (!valid_name(queue_name))
        return SL_EINVAL;
    char *key = xasprintf("%sq:%s", q->prefix, queue_name);
    int result = ensure_group(q, key, QUEUE_STEP_GROUP);
    free(key);
    return result;
}

int queue_ensure_event_group(struct queue *q)
{
    return ensure_group(q, q->key_events, QUEUE_EVENT_GROUP);
}

/* --- Opening and closing ------------------------------------------------------------- */

static bool valid_prefix(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > PREFIX_MAX)
        return false;
    for (; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

int queue_open(struct queue **out, const char *url, const struct queue_options *opts)
{
    struct queue_options o = {0};
    if (opts)
        o = *opts;
    if (!o.prefix)
        o.prefix = QUEUE_DEFAULT_PREFIX;
    o.connect_timeout_ms = o.connect_timeout_ms ? o.connect_timeout_ms : 2000;
    o.command_timeout_ms = o.command_timeout_ms ? o.command_timeout_ms : 5000;
    o.backoff_min_ms = o.backoff_min_ms ? o.backoff_min_ms : 100;
    o.backoff_max_ms = o.backoff_max_ms ? o.backoff_max_ms : 2000;
    if (!valid_prefix(o.prefix)) {
        sl_error(QUEUE_LOG, "invalid key prefix \"%s\": want 1-%d bytes without spaces", o.prefix,
                 PREFIX_MAX);
        return SL_EINVAL;
    }
    if (o.connect_timeout_ms < 0 || o.command_timeout_ms < 0 || o.backoff_min_ms < 0 ||
        o.backoff_max_ms < o.backoff_min_ms || o.backoff_max_ms > 10 * 60 * 1000) {
        sl_error(QUEUE_LOG, "invalid queue options: timeouts must be positive and backoff_min_ms "
                            "<= backoff_max_ms <= 600000");
        return SL_EINVAL;
    }

    struct queue_url u;
    char reason[128];
    if (queue_url_parse(&u, url, reason, sizeof(reason)) < 0) {
        /* Not the URL itself: it may hold a password. */
        sl_error(QUEUE_LOG, "invalid Redis URL: %s", reason);
        return SL_EINVAL;
    }
    struct queue *q = xcalloc(1, sizeof(*q));
    q->state = QUEUE_DISCONNECTED;
    q->url = u;
    q->where = queue_url_describe(&u);
    q->connect_timeout_ms = o.connect_timeout_ms;
    q->command_timeout_ms = o.command_timeout_ms;
    q->backoff_min_ms = o.backoff_min_ms;
    q->backoff_max_ms = o.backoff_max_ms;
    q->backoff_ms = o.backoff_min_ms;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    q->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
             (uint64_t)(uintptr_t)q;
    q->rng |= 1;
    q->prefix = xstrdup(o.prefix);
    q->key_events = xasprintf("%sevents", o.prefix);
    q->key_cancel = xasprintf("%scancel", o.prefix);
    q->key_workers = xasprintf("%sworkers", o.prefix);
    q->key_msg = xasprintf("%smsg", o.prefix);

    int result = queue_connect(q, true);
    if (result < 0) {
        queue_close(q);
        return result;
    }
    *out = q;
    return 0;
}

void queue_close(struct queue *q)
{
    if (!q)
        return;
    queue_disconnect(q, NULL);
    queue_url_release(&q->url);
    free(q->where);
    free(q->prefix);
    free(q->key_events);
    free(q->key_cancel);
    free(q->key_workers);
    free(q->key_msg);
    free(q->ev_consumer);
    free(q);
}

bool queue_is_connected(const struct queue *q)
{
    return q->state == QUEUE_CONNECTED;
}

int queue_ping(struct queue *q)
{
    struct queue_cmd cmd;
    queue_cmd_init(&cmd);
    queue_cmd_add(&cmd, "PING");
    redisReply *r = NULL;
    int result = queue_run(&r, q, &cmd, 0);
    if (result == 0) {
        if (is_string(r) && !strcmp(r->str, "PONG"))
            freeReplyObject(r);
        else
            result = queue_reply_fail(q, r, "PING");
    }
    queue_cmd_release(&cmd);
    return result;
}

/* --- Step queues --------------------------------------------------------------------- */

/* DISPATCH script: {created, id}. */
int queue_dispatch(struct queue_id *out_id, struct queue *q, const char *queue_name,
                   const struct queue_step_msg *msg)
{
    if (!valid_name(queue_name))
        return SL_EINVAL;
    struct strbuf payload = STRBUF_INIT;
    int result = queue_step_msg_encode(&payload, msg);
    if (result < 0)
        return result;
    struct queue_cmd cmd;
    queue_cmd_init_script(&cmd, QUEUE_SCRIPT_DISPATCH, 2);
    queue_cmd_add(&cmd, step_key(&cmd, q, queue_name));
    queue_cmd_add(&cmd, q->key_msg);
    queue_cmd_add(&cmd, msg->attempt_id);
    queue_cmd_addb(&cmd, payload.buf, payload.len);
    queue_cmd_add(&cmd, queue_name);
    redisReply *r = NULL;
    result = queue_run(&r, q, &cmd, 0);
    if (result == 0) {
        struct queue_id id;
        int64_t created;
        if (is_array(r, 2) && reply_int(&created, r->element[0]) && copy_id(&id, r->element[1])) {
            if (out_id)
                *out_id = id;
            result = created ? 0 : SL_EEXIST;
            freeReplyObject(r);
        } else {
            result = queue_reply_fail(q, r, "dispatch");
        }
    }
    queue_cmd_release(&cmd);
    strbuf_release(&payload);
    return result;
}

/*
 * Messages encoded one after another end at ends[0..n): how many, from done on, go into
 * one script call - at most IDS_PER_SCRIPT, and about BYTES_PER_SCRIPT (at least one).
 */
static size_t chunk_len(const size_t *ends, size_t done, size_t n)
{
    size_t start = done ? ends[done - 1] : 0, k = 0;
    while (done + k < n && k < IDS_PER_SCRIPT &&
           (k == 0 || ends[done + k] - start <= BYTES_PER_SCRIPT))
        k++;
    return k;
}

int queue_dispatch_many(int *results, struct queue *q, const char *queue_name,
                        const struct queue_step_msg *msgs, size_t n)
{
    if (!valid_name(queue_name))
        return SL_EINVAL;
    /* Encode everything first: an invalid message sends nothing. */
    struct strbuf all = STRBUF_INIT;
    size_t *ends = xcalloc(n ? n : 1, sizeof(*ends));
    int result = 0;
    for (size_t i = 0; i < n && result == 0; i++) {
        result = queue_step_msg_encode(&all, &msgs[i]);
        ends[i] = all.len;
    }
    for (size_t done = 0; done < n && result == 0;) {
        size_t k = chunk_len(ends, done, n);
        struct queue_cmd cmd;
        queue_cmd_init_script(&cmd, QUEUE_SCRIPT_DISPATCH_MANY, 2);
        queue_cmd_add(&cmd, step_key(&cmd, q, queue_name));
        queue_cmd_add(&cmd, q->key_msg);
        queue_cmd_add(&cmd, queue_name);
        for (size_t i = done; i < done + k; i++) {
            size_t from = i ? ends[i - 1] : 0;
            queue_cmd_add(&cmd, msgs[i].attempt_id);
            queue_cmd_addb(&cmd, all.buf + from, ends[i] - from);
        }
        redisReply *r = NULL;
        result = queue_run(&r, q, &cmd, 0);
        queue_cmd_release(&cmd);
        if (result == 0) {
            bool ok = is_array(r, 2 * k) && r->elements == 2 * k;
            for (size_t i = 0; ok && i < k; i++) {
                int64_t created;
                struct queue_id id;
                ok = reply_int(&created, r->element[2 * i]) && copy_id(&id, r->element[2 * i + 1]);
                if (ok && results)
                    results[done + i] = created ? 0 : SL_EEXIST;
            }
            if (ok)
                freeReplyObject(r);
            else
                result = queue_reply_fail(q, r, "dispatch");
        }
        done += k;
    }
    free(ends);
    strbuf_release(&all);
    return result;
}

/* Runs an XADD; stores the new entry's id in *out_id (may be NULL). */
static int run_xadd(struct queue_id *out_id, struct queue *q, struct queue_cmd *cmd,
                    const char *what)
{
    redisReply *r = NULL;
    int result = queue_run(&r, q, cmd, 0);
    if (result < 0)
        return result;
    struct queue_id id;
    if (!copy_id(&id, r))
        return queue_reply_fail(q, r, what);
    if (out_id)
        *out_id = id;
    freeReplyObject(r);
    return 0;
}

/* Runs cmd, whose reply must be an integer; stores it in *out (may be NULL). */
static int run_integer(int64_t *out, struct queue *q, struct queue_cmd *cmd, const char *what)
{
    redisReply *r = NULL;
    int result = queue_run(&r, q, cmd, 0);
    if (result < 0)
        return result;
    if (r->type != REDIS_REPLY_INTEGER)
        return queue_reply_fail(q, r, what);
    if (out)
        *out = r->integer;
    freeReplyObject(r);
    return 0;
}

/* Runs one of the scripts that take (stream, index) and return an integer. */
static int run_index_script(int64_t *out, struct queue *q, enum queue_script script,
                            const char *what, const char *queue_name, const char *attempt_id)
{
    if (!valid_name(queue_name) || !attempt_id || !*attempt_id ||
        strlen(attempt_id) > QUEUE_NAME_MAX)
        return SL_EINVAL;
    struct queue_cmd cmd;
    queue_cmd_init_script(&cmd, script, 2);
    queue_cmd_add(&cmd, step_key(&cmd, q, queue_name));
    queue_cmd_add(&cmd, q->key_msg);
    if (script == QUEUE_SCRIPT_WITHDRAW)
        queue_cmd_add(&cmd, QUEUE_STEP_GROUP);
    queue_cmd_add(&cmd, attempt_id);
    queue_cmd_add(&cmd, queue_name);
    int result = run_integer(out, q, &cmd, what);
    queue_cmd_release(&cmd);
    return result;
}

int queue_has_message(bool *out, struct queue *q, const char *queue_name, const char *attempt_id)
{
    int64_t n = 0;
    int result =
        run_index_script(&n, q, QUEUE_SCRIPT_HAS_MESSAGE, "has_message", queue_name, attempt_id);
    if (result == 0)
        *out = n != 0;
    return result;
}

int queue_withdraw(bool *out_removed, struct queue *q, const char *queue_name,
                   const char *attempt_id)
{
    int64_t n = 0;
    int result = run_index_script(&n, q, QUEUE_SCRIPT_WITHDRAW, "withdraw", queue_name, attempt_id);
    if (result == 0 && out_removed)
        *out_removed = n != 0;
    return result;
}

/* XREADGROUP GROUP <group> <consumer> COUNT <n> [BLOCK <ms>] STREAMS <key> <id> */
static int read_group(struct queue_batch *out, struct queue *q, const char *key, const char *group,
                      const char *consumer, size_t max_count, int block_ms, const char *from,
                      enum entry_kind kind)
{
    struct queue_cmd cmd;
    queue_cmd_init(&cmd);
    queue_cmd_add(&cmd, "XREADGROUP");
    queue_cmd_add(&cmd, "GROUP");
    queue_cmd_add(&cmd, group);
    queue_cmd_add(&cmd, consumer);
    queue_cmd_add(&cmd, "COUNT");
    queue_cmd_addf(&cmd, "%zu", max_count);
    if (block_ms > 0) {
        queue_cmd_add(&cmd, "BLOCK");
        queue_cmd_addf(&cmd, "%d", block_ms);
    }
    queue_cmd_add(&cmd, "STREAMS");
    queue_cmd_add(&cmd, key);
    queue_cmd_add(&cmd, from);
    redisReply *r = NULL;
    struct queue_batch b = QUEUE_BATCH_INIT;
    int result = run_grouped(&r, q, &cmd, block_ms, key, group);
    if (result == 0) {
        if (r->type != REDIS_REPLY_ERROR && parse_read_reply(&b, r, kind)) {
            freeReplyObject(r);
        } else {
            result = queue_reply_fail(q, r, "XREADGROUP");
            queue_batch_release(&b);
        }
    }
    queue_cmd_release(&cmd);
    *out = b;
    return result;
}

int queue_read_steps(struct queue_batch *out, struct queue *q, const char *queue_name,
                     const char *consumer, size_t max_count, int block_ms)
{
    struct queue_batch empty = QUEUE_BATCH_INIT;
    *out = empty;
    if (!valid_name(queue_name) || !valid_name(consumer) || !valid_count(max_count) || block_ms < 0)
        return SL_EINVAL;
    char *key = xasprintf("%sq:%s", q->prefix, queue_name);
    int result =
        read_group(out, q, key, QUEUE_STEP_GROUP, consumer, max_count, block_ms, ">", ENTRY_STEP);
    free(key);
    return result;
}

int queue_ack_step(struct queue *q, const char *queue_name, const struct queue_id *id)
{
    if (!valid_name(queue_name) || !valid_entry_id(id->s))
        return SL_EINVAL;
    struct queue_cmd cmd;
    queue_cmd_init_script(&cmd, QUEUE_SCRIPT_ACK_STEP, 2);
    queue_cmd_add(&cmd, step_key(&cmd, q, queue_name));
    queue_cmd_add(&cmd, q->key_msg);
    queue_cmd_add(&cmd, QUEUE_STEP_GROUP);
    queue_cmd_add(&cmd, id->s);
    queue_cmd_add(&cmd, queue_name);
    int result = run_integer(NULL, q, &cmd, "ack");
    queue_cmd_release(&cmd);
    return result;
}

int queue_ack_steps(struct queue *q, const char *queue_name, const struct queue_id *ids,
                    size_t n_ids)
{
    if (!valid_name(queue_name))
        return SL_EINVAL;
    for (size_t i = 0; i < n_ids; i++)
        if (!valid_entry_id(ids[i].s))
            return SL_EINVAL;
    int result = 0;
    for (size_t done = 0; done < n_ids && result == 0;) {
        size_t n = n_ids - done < IDS_PER_SCRIPT ? n_ids - done : IDS_PER_SCRIPT;
        struct queue_cmd cmd;
        queue_cmd_init_script(&cmd, QUEUE_SCRIPT_ACK_STEPS, 2);
        queue_cmd_add(&cmd, step_key(&cmd, q, queue_name));
        queue_cmd_add(&cmd, q->key_msg);
        queue_cmd_add(&cmd, QUEUE_STEP_GROUP);
        queue_cmd_add(&cmd, queue_name);
        for (size_t i = 0; i < n; i++)
            queue_cmd_add(&cmd, ids[done + i].s);
        result = run_integer(NULL, q, &cmd, "ack steps");
        queue_cmd_release(&cmd);
        done += n;
    }
    return result;
}

/* One REFRESH script call for at most IDS_PER_SCRIPT ids. */
static int refresh_chunk(enum queue_owner *out_owner, struct queue *q, const char *queue_name,
                         const char *consumer, const struct queue_id *ids, size_t n_ids)
{
    struct queue_cmd cmd;
    queue_cmd_init_script(&cmd, QUEUE_SCRIPT_REFRESH, 1);
    queue_cmd_add(&cmd, step_key(&cmd, q, queue_name));
    queue_cmd_add(&cmd, QUEUE_STEP_GROUP);
    queue_cmd_add(&cmd, consumer);
    for (size_t i = 0; i < n_ids; i++)
        queue_cmd_add(&cmd, ids[i].s);
    redisReply *r = NULL;
    int result = queue_run(&r, q, &cmd, 0);
    if (result == 0) {
        if (queue_reply_is(r, "NOGROUP")) {
            /* No group, so nothing is pending for anyone. */
            for (size_t i = 0; out_owner && i < n_ids; i++)
                out_owner[i] = QUEUE_OWNER_NONE;
            freeReplyObject(r);
        } else if (is_array(r, n_ids) && r->elements == n_ids) {
            for (size_t i = 0; out_owner && i < n_ids; i++) {
                const redisReply *e = r->element[i];
                long long v = e->type == REDIS_REPLY_INTEGER ? e->integer : 0;
                out_owner[i] = v == 1   ? QUEUE_OWNER_SELF
                               : v == 2 ? QUEUE_OWNER_OTHER
                                        : QUEUE_OWNER_NONE;
            }
            freeReplyObject(r);
        } else {
            result = queue_reply_fail(q, r, "refresh");
        }
    }
    queue_cmd_release(&cmd);
    return result;
}

int queue_refresh(enum queue_owner *out_owner, struct queue *q, const char *queue_name,
                  const char *consumer, const struct queue_id *ids, size_t n_ids)
{
    if (!valid_name(queue_name) || !valid_name(consumer))
        return SL_EINVAL;
    for (size_t i = 0; i < n_ids; i++)
        if (!valid_entry_id(ids[i].s))
            return SL_EINVAL;
    int result = 0;
    for (size_t done = 0; done < n_ids && result == 0;) {
        size_t n = n_ids - done < IDS_PER_SCRIPT ? n_ids - done : IDS_PER_SCRIPT;
        result = refresh_chunk(out_owner ? out_owner + done : NULL, q, queue_name, consumer,
                               ids + done, n);
        done += n;
    }
    return result;
}

/*
 * XAUTOCLAIM <key> <group> <consumer> <min-idle> <cursor> COUNT <n> [JUSTID], repeated
 * from cursor 0-0 until the whole pending list was scanned, max_count entries came or
 * rounds calls were made. Redis 7 replies [next cursor, entries, deleted ids]; 6.2
 * has no third element and puts nil for a deleted entry. With batch NULL (JUSTID) the
 * claimed ids are only counted. NOGROUP means nothing is pending: success, empty.
 */
static int autoclaim(struct queue_batch *batch, size_t *out_claimed, struct queue *q,
                     const char *key, const char *group, const char *consumer, int64_t min_idle_ms,
                     size_t max_count, int rounds)
{
    struct queue_id cursor = {"0-0"};
    size_t claimed = 0;
    int result = 0;
    for (int round = 0; round < rounds && claimed < max_count; round++) {
        struct queue_cmd cmd;
        queue_cmd_init(&cmd);
        queue_cmd_add(&cmd, "XAUTOCLAIM");
        queue_cmd_add(&cmd, key);
        queue_cmd_add(&cmd, group);
        queue_cmd_add(&cmd, consumer);
        queue_cmd_addf(&cmd, "%lld", (long long)min_idle_ms);
        queue_cmd_add(&cmd, cursor.s);
        size_t want = max_count - claimed < QUEUE_READ_MAX ? max_count - claimed : QUEUE_READ_MAX;
        queue_cmd_add(&cmd, "COUNT");
        queue_cmd_addf(&cmd, "%zu", want);
        if (!batch)
            queue_cmd_add(&cmd, "JUSTID");
        redisReply *r = NULL;
        result = queue_run(&r, q, &cmd, 0);
        queue_cmd_release(&cmd);
        if (result < 0)
            break;
        if (queue_reply_is(r, "NOGROUP")) {
            freeReplyObject(r);
            break;
        }
        size_t before = batch ? batch->n : 0;
        bool ok = is_array(r, 2) && copy_id(&cursor, r->element[0]) && is_array(r->element[1], 0);
        if (ok && batch)
            ok = parse_entries(batch, r->element[1], ENTRY_STEP);
        if (!ok) {
            result = queue_reply_fail(q, r, "XAUTOCLAIM");
            break;
        }
        claimed += batch ? batch->n - before : r->element[1]->elements;
        if (batch && r->elements >= 3 && is_array(r->element[2], 0))
            batch->n_deleted += r->element[2]->elements;
        freeReplyObject(r);
        if (!strcmp(cursor.s, "0-0"))
            break;
    }
    if (result == 0 && out_claimed)
        *out_claimed = claimed;
    return result;
}

int queue_takeover(struct queue_batch *out, struct queue *q, const char *queue_name,
                   const char *consumer, int64_t min_idle_ms, size_t max_count)
{
    struct queue_batch b = QUEUE_BATCH_INIT;
    *out = b;
    if (!valid_name(queue_name) || !valid_name(consumer) || !valid_count(max_count) ||
        min_idle_ms < 0)
        return SL_EINVAL;
    char *key = xasprintf("%sq:%s", q->prefix, queue_name);
    int result = autoclaim(&b, NULL, q, key, QUEUE_STEP_GROUP, consumer, min_idle_ms, max_count,
                           TAKEOVER_ROUNDS);
    free(key);
    if (result < 0)
        queue_batch_release(&b);
    else if (b.n || b.n_deleted)
        sl_info(QUEUE_LOG, "took over %zu message(s) of queue \"%s\" for \"%s\"%s", b.n, queue_name,
                consumer, b.n_deleted ? " (some pending entries were deleted)" : "");
    *out = b;
    return result;
}

/* --- Events -------------------------------------------------------------------------- */

int queue_publish_event(struct queue_id *out_id, struct queue *q, const struct queue_event_msg *ev)
{
    struct strbuf payload = STRBUF_INIT;
    int result = queue_event_msg_encode(&payload, ev);
    if (result < 0)
        return result;
    struct queue_cmd cmd;
    queue_cmd_init(&cmd);
    queue_cmd_add(&cmd, "XADD");
    queue_cmd_add(&cmd, q->key_events);
    queue_cmd_add(&cmd, "*");
    queue_cmd_add(&cmd, "m");
    queue_cmd_addb(&cmd, payload.buf, payload.len);
    result = run_xadd(out_id, q, &cmd, "XADD event");
    queue_cmd_release(&cmd);
    strbuf_release(&payload);
    return result;
}

int queue_publish_events(struct queue_id *out_ids, size_t *out_bad, struct queue *q,
                         const struct queue_event_msg *evs, size_t n)
{
    /* Encode everything first: an invalid event sends nothing. */
    struct strbuf all = STRBUF_INIT;
    size_t *ends = xcalloc(n ? n : 1, sizeof(*ends));
    int result = 0;
    for (size_t i = 0; i < n && result == 0; i++) {
        result = queue_event_msg_encode(&all, &evs[i]);
        ends[i] = all.len;
        if (result < 0 && out_bad)
            *out_bad = i;
    }
    for (size_t done = 0; done < n && result == 0;) {
        size_t k = chunk_len(ends, done, n);
        struct queue_cmd cmd;
        queue_cmd_init_script(&cmd, QUEUE_SCRIPT_PUBLISH_EVENTS, 1);
        queue_cmd_add(&cmd, q->key_events);
        for (size_t i = done; i < done + k; i++) {
            size_t from = i ? ends[i - 1] : 0;
            queue_cmd_addb(&cmd, all.buf + from, ends[i] - from);
        }
        redisReply *r = NULL;
        result = queue_run(&r, q, &cmd, 0);
        queue_cmd_release(&cmd);
        if (result == 0) {
            bool ok = is_array(r, k) && r->elements == k;
            for (size_t i = 0; ok && i < k; i++) {
                struct queue_id id;
                ok = copy_id(&id, r->element[i]);
                if (ok && out_ids)
                    out_ids[done + i] = id;
            }
            if (ok)
                freeReplyObject(r);
            else
                result = queue_reply_fail(q, r, "publish events");
        }
        done += k;
    }
    free(ends);
    strbuf_release(&all);
    return result;
}

/* Replays this consumer's pending entries from the start on the next read; adopt: first
 * claim every entry pending in the group (new consumer name, new connection). */
static void rewind_events(struct queue *q, bool adopt)
{
    q->ev_replaying = true;
    if (adopt)
        q->ev_adopted = false;
    snprintf(q->ev_after.s, sizeof(q->ev_after.s), "0-0");
    q->ev_generation = q->generation;
}

void queue_rewind_events(struct queue *q)
{
    rewind_events(q, false);
}

int queue_read_events(struct queue_batch *out, struct queue *q, const char *consumer,
                      size_t max_count, int block_ms)
{
    struct queue_batch empty = QUEUE_BATCH_INIT;
    *out = empty;
    if (!valid_name(consumer) || !valid_count(max_count) || block_ms < 0)
        return SL_EINVAL;
    if (!q->ev_consumer || strcmp(q->ev_consumer, consumer) != 0) {
        free(q->ev_consumer);
        q->ev_consumer = xstrdup(consumer);
        rewind_events(q, true);
    }
    if (q->ev_generation != q->generation)
        rewind_events(q, true); /* reconnected: a lost reply may have left entries pending */

    int result = 0;
    if (q->ev_replaying && !q->ev_adopted) {
        /* Make every entry pending in the group ours, whoever read it before. */
        size_t claimed = 0;
        result = autoclaim(NULL, &claimed, q, q->key_events, QUEUE_EVENT_GROUP, consumer, 0,
                           SIZE_MAX, ADOPT_ROUNDS);
        if (result < 0)
            return result;
        if (claimed)
            sl_info(QUEUE_LOG, "consumer \"%s\" adopted %zu pending event(s)", consumer, claimed);
        q->ev_adopted = true;
    }
    if (q->ev_replaying) {
        result = read_group(out, q, q->key_events, QUEUE_EVENT_GROUP, consumer, max_count, 0,
                            q->ev_after.s, ENTRY_EVENT);
        if (result < 0 || out->n > 0) {
            if (result == 0)
                q->ev_after = out->entries[out->n - 1].id;
            return result;
        }
        q->ev_replaying = false; /* history done: from now on, new entries */
    }
    return read_group(out, q, q->key_events, QUEUE_EVENT_GROUP, consumer, max_count, block_ms, ">",
                      ENTRY_EVENT);
}

int queue_ack_events(struct queue *q, const struct queue_id *ids, size_t n_ids)
{
    for (size_t i = 0; i < n_ids; i++)
        if (!valid_entry_id(ids[i].s))
            return SL_EINVAL;
    int result = 0;
    for (size_t done = 0; done < n_ids && result == 0;) {
        size_t n = n_ids - done < IDS_PER_SCRIPT ? n_ids - done : IDS_PER_SCRIPT;
        struct queue_cmd cmd;
        queue_cmd_init_script(&cmd, QUEUE_SCRIPT_ACK_EVENTS, 1);
        queue_cmd_add(&cmd, q->key_events);
        queue_cmd_add(&cmd, QUEUE_EVENT_GROUP);
        for (size_t i = 0; i < n; i++)
            queue_cmd_add(&cmd, ids[done + i].s);
        result = run_integer(NULL, q, &cmd, "ack events");
        queue_cmd_release(&cmd);
        done += n;
    }
    return result;
}

/* --- Cancels ------------------------------------------------------------------------- */

int queue_publish_cancel(struct queue_id *out_id, struct queue *q, const struct queue_cancel_msg *c)
{
    struct strbuf payload = STRBUF_INIT;
    int result = queue_cancel_msg_encode(&payload, c);
    if (result < 0)
        return result;
    struct queue_cmd cmd;
    queue_cmd_init(&cmd);
    queue_cmd_add(&cmd, "XADD");
    queue_cmd_add(&cmd, q->key_cancel);
    queue_cmd_add(&cmd, "MAXLEN");
    queue_cmd_add(&cmd, "~");
    queue_cmd_addf(&cmd, "%d", QUEUE_CANCEL_MAXLEN);
    queue_cmd_add(&cmd, "*");
    queue_cmd_add(&cmd, "m");
    queue_cmd_addb(&cmd, payload.buf, payload.len);
    result = run_xadd(out_id, q, &cmd, "XADD cancel");
    queue_cmd_release(&cmd);
    strbuf_release(&payload);
    return result;
}

/* The id of the newest cancel, or 0-0 if there is none (XREVRANGE + - COUNT 1). */
static int cancel_stream_end(struct queue_id *out, struct queue *q)
{
    struct queue_cmd cmd;
    queue_cmd_init(&cmd);
    queue_cmd_add(&cmd, "XREVRANGE");
    queue_cmd_add(&cmd, q->key_cancel);
    queue_cmd_add(&cmd, "+");
    queue_cmd_add(&cmd, "-");
    queue_cmd_add(&cmd, "COUNT");
    queue_cmd_add(&cmd, "1");
    redisReply *r = NULL;
    int result = queue_run(&r, q, &cmd, 0);
    if (result == 0) {
        struct queue_id id = {"0-0"};
        if (is_array(r, 0) && (r->elements == 0 || (is_array(r->element[0], 1) &&
                                                    copy_id(&id, r->element[0]->element[0])))) {
            *out = id;
            freeReplyObject(r);
        } else {
            result = queue_reply_fail(q, r, "XREVRANGE");
        }
    }
    queue_cmd_release(&cmd);
    return result;
}

int queue_read_cancels(struct queue_batch *out, struct queue *q, struct queue_id *last_id,
                       size_t max_count, int block_ms)
{
    struct queue_batch b = QUEUE_BATCH_INIT;
    *out = b;
    if (!valid_count(max_count) || block_ms < 0 || (last_id->s[0] && !valid_entry_id(last_id->s)))
        return SL_EINVAL;
    struct queue_id after = *last_id;
    int result = after.s[0] ? 0 : cancel_stream_end(&after, q);
    if (result < 0)
        return result;

    struct queue_cmd cmd;
    queue_cmd_init(&cmd);
    queue_cmd_add(&cmd, "XREAD");
    queue_cmd_add(&cmd, "COUNT");
    queue_cmd_addf(&cmd, "%zu", max_count);
    if (block_ms > 0) {
        queue_cmd_add(&cmd, "BLOCK");
        queue_cmd_addf(&cmd, "%d", block_ms);
    }
    queue_cmd_add(&cmd, "STREAMS");
    queue_cmd_add(&cmd, q->key_cancel);
    queue_cmd_add(&cmd, after.s);
    redisReply *r = NULL;
    result = queue_run(&r, q, &cmd, block_ms);
    if (result == 0) {
        if (r->type != REDIS_REPLY_ERROR && parse_read_reply(&b, r, ENTRY_CANCEL)) {
            freeReplyObject(r);
            *last_id = b.n ? b.entries[b.n - 1].id : after;
        } else {
            result = queue_reply_fail(q, r, "XREAD");
            queue_batch_release(&b);
        }
    }
    queue_cmd_release(&cmd);
    *out = b;
    return result;
}

/* --- Heartbeats ---------------------------------------------------------------------- */

int queue_heartbeat(int64_t *out_now_ms, struct queue *q, const char *worker_id, int64_t ttl_ms,
                    const cJSON *info)
{
    if (!valid_name(worker_id) || ttl_ms <= 0 || (info && !cJSON_IsObject(info)))
        return SL_EINVAL;
    char *text = info ? cJSON_PrintUnformatted(info) : NULL;
    if (text && strlen(text) > QUEUE_MSG_MAX_BYTES) {
        cJSON_free(text);
        return SL_ETOOBIG;
    }
    struct queue_cmd cmd;
    queue_cmd_init_script(&cmd, QUEUE_SCRIPT_HEARTBEAT, 2);
    queue_cmd_add(&cmd, worker_key(&cmd, q, worker_id));
    queue_cmd_add(&cmd, q->key_workers);
    queue_cmd_addf(&cmd, "%lld", (long long)ttl_ms);
    queue_cmd_add(&cmd, text ? text : "{}");
    queue_cmd_add(&cmd, worker_id);
    redisReply *r = NULL;
    int result = queue_run(&r, q, &cmd, 0);
    if (result == 0) {
        if (r->type == REDIS_REPLY_INTEGER) {
            if (out_now_ms)
                *out_now_ms = r->integer;
            freeReplyObject(r);
        } else {
            result = queue_reply_fail(q, r, "heartbeat");
        }
    }
    queue_cmd_release(&cmd);
    if (text)
        cJSON_free(text);
    return result;
}

void queue_workers_release(struct queue_workers *w)
{
    for (size_t i = 0; i < w->n; i++) {
        free(w->items[i].id);
        cJSON_Delete(w->items[i].info);
    }
    free(w->items);
    memset(w, 0, sizeof(*w));
}

/* MGET of every listed worker's key: fills alive and info. */
static int fetch_worker_keys(struct queue_workers *w, struct queue *q)
{
    struct queue_cmd cmd;
    queue_cmd_init(&cmd);
    queue_cmd_add(&cmd, "MGET");
    for (size_t i = 0; i < w->n; i++)
        queue_cmd_add(&cmd, worker_key(&cmd, q, w->items[i].id));
    redisReply *r = NULL;
    int result = queue_run(&r, q, &cmd, 0);
    if (result == 0) {
        if (is_array(r, w->n) && r->elements == w->n) {
            for (size_t i = 0; i < w->n; i++) {
                const redisReply *v = r->element[i];
                w->items[i].alive = is_string(v);
                if (is_string(v))
                    w->items[i].info = cJSON_ParseWithLength(v->str, v->len);
            }
            freeReplyObject(r);
        } else {
            result = queue_reply_fail(q, r, "MGET workers");
        }
    }
    queue_cmd_release(&cmd);
    return result;
}

int queue_list_workers(struct queue_workers *out, struct queue *q)
{
    struct queue_workers w = {NULL, 0, 0};
    struct queue_cmd cmd;
    queue_cmd_init_script(&cmd, QUEUE_SCRIPT_LIST_WORKERS, 1);
    queue_cmd_add(&cmd, q->key_workers);
    redisReply *r = NULL;
    int result = queue_run(&r, q, &cmd, 0);
    queue_cmd_release(&cmd);
    if (result < 0)
        return result;
    const redisReply *list = is_array(r, 2) ? r->element[1] : NULL;
    bool ok =
        list && reply_int(&w.now_ms, r->element[0]) && is_array(list, 0) && list->elements % 2 == 0;
    if (ok && list->elements) {
        w.items = xcalloc(list->elements / 2, sizeof(*w.items));
        for (size_t i = 0; ok && i < list->elements; i += 2) {
            struct queue_worker *item = &w.items[w.n];
            ok =
                is_string(list->element[i]) && reply_int(&item->last_seen_ms, list->element[i + 1]);
            if (ok) {
                item->id = xstrndup(list->element[i]->str, list->element[i]->len);
                w.n++;
            }
        }
    }
    if (!ok) {
        queue_workers_release(&w);
        return queue_reply_fail(q, r, "list workers");
    }
    freeReplyObject(r);
    result = w.n ? fetch_worker_keys(&w, q) : 0;
    if (result < 0) {
        queue_workers_release(&w);
        return result;
    }
    *out = w;
    return 0;
}

int queue_forget_worker(struct queue *q, const char *worker_id)
{
    if (!valid_name(worker_id))
        return SL_EINVAL;
    struct queue_cmd cmd;
    queue_cmd_init_script(&cmd, QUEUE_SCRIPT_FORGET_WORKER, 2);
    queue_cmd_add(&cmd, worker_key(&cmd, q, worker_id));
    queue_cmd_add(&cmd, q->key_workers);
    queue_cmd_add(&cmd, worker_id);
    int result = run_integer(NULL, q, &cmd, "forget worker");
    queue_cmd_release(&cmd);
    return result;
}

/* --- Metrics ------------------------------------------------------------------------- */

static int stats(struct queue_stats *out, struct queue *q, const char *key, const char *group)
{
    struct queue_cmd cmd;
    queue_cmd_init_script(&cmd, QUEUE_SCRIPT_STATS, 1);
    queue_cmd_add(&cmd, key);
    queue_cmd_add(&cmd, group);
    redisReply *r = NULL;
    int result = queue_run(&r, q, &cmd, 0);
    if (result == 0) {
        struct queue_stats s = {0};
        struct queue_id first = {""};
        bool ok = is_array(r, 3) && reply_int(&s.length, r->element[0]) &&
                  reply_int(&s.pending, r->element[1]) && is_string(r->element[2]) &&
                  (r->element[2]->len == 0 || copy_id(&first, r->element[2]));
        if (ok) {
            s.waiting = s.length > s.pending ? s.length - s.pending : 0;
            s.oldest_waiting_ms = first.s[0] ? strtoll(first.s, NULL, 10) : 0;
            *out = s;
            freeReplyObject(r);
        } else {
            result = queue_reply_fail(q, r, "stats");
        }
    }
    queue_cmd_release(&cmd);
    return result;
}

int queue_step_stats(struct queue_stats *out, struct queue *q, const char *queue_name)
{
    if (!valid_name(queue_name))
        return SL_EINVAL;
    char *key = xasprintf("%sq:%s", q->prefix, queue_name);
    int result = stats(out, q, key, QUEUE_STEP_GROUP);
    free(key);
    return result;
}

int queue_event_stats(struct queue_stats *out, struct queue *q)
{
    return stats(out, q, q->key_events, QUEUE_EVENT_GROUP);
}
