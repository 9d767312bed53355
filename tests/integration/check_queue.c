/*
 * tests/integration/check_queue.c - queue/ against a real Redis from tests/harness.
 *
 * The "shared" case starts one Redis in an unchecked fixture (in the runner, which
 * owns it) and gives every test a key prefix of its own, so tests do not see each
 * other's keys. Tests that need two consumers, a scheduler and a worker, or a crash
 * simply open several struct queue. The "restart" case starts and stops servers of its
 * own inside the test.
 *
 * Raw commands (junk messages, CLIENT KILL, FLUSHALL, DEBUG SLEEP) go through
 * harness_redis_command(), which does not use hiredis, the library under test.
 */
#include "queue/queue.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "tests/harness/harness.h"
#include "tests/testutil.h"

#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct harness_redis redis;

static void redis_setup(void)
{
    ck_assert_int_eq(harness_redis_start(&redis), 0);
}

static void redis_teardown(void)
{
    ck_assert_int_eq(harness_redis_stop(&redis), 0);
}

/* --- Helpers ------------------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static char *unix_url(const struct harness_redis *r)
{
    return xasprintf("unix://%s", r->socket_path);
}

/* Opens a queue on r with prefix and short timeouts, so failures show quickly. */
static struct queue *open_on(const struct harness_redis *r, const char *prefix)
{
    char *url = unix_url(r);
    struct queue_options opts = {.prefix = prefix,
                                 .connect_timeout_ms = 500,
                                 .command_timeout_ms = 2000,
                                 .backoff_min_ms = 20,
                                 .backoff_max_ms = 200};
    struct queue *q = NULL;
    int rc = queue_open(&q, url, &opts);
    ck_assert_msg(rc == 0, "queue_open(\"%s\"): %s", url, sl_strerror(rc));
    free(url);
    return q;
}

static struct queue *open_q(const char *prefix)
{
    return open_on(&redis, prefix);
}

/* Sends a raw command; returns its RESP reply (caller frees). */
#define RAW(...) raw_command(&redis, __VA_ARGS__, NULL)
static char *raw_command(const struct harness_redis *r, const char *arg, ...)
    __attribute__((sentinel));
static char *raw_command(const struct harness_redis *r, const char *arg, ...)
{
    const char *argv[16];
    int argc = 0;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a && argc < 15; a = va_arg(ap, const char *))
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    char *reply = NULL;
    int rc;
    /* harness_redis_command takes varargs; spell out the counts used here. */
    switch (argc) {
    case 1:
        rc = harness_redis_command(&reply, r, argv[0], NULL);
        break;
    case 2:
        rc = harness_redis_command(&reply, r, argv[0], argv[1], NULL);
        break;
    case 3:
        rc = harness_redis_command(&reply, r, argv[0], argv[1], argv[2], NULL);
        break;
    case 4:
        rc = harness_redis_command(&reply, r, argv[0], argv[1], argv[2], argv[3], NULL);
        break;
    case 5:
        rc = harness_redis_command(&reply, r, argv[0], argv[1], argv[2], argv[3], argv[4], NULL);
        break;
    case 6:
        rc = harness_redis_command(&reply, r, argv[0], argv[1], argv[2], argv[3], argv[4], argv[5],
                                   NULL);
        break;
    case 7:
        rc = harness_redis_command(&reply, r, argv[0], argv[1], argv[2], argv[3], argv[4], argv[5],
                                   argv[6], NULL);
        break;
    default:
        rc = SL_EINVAL;
        break;
    }
    ck_assert_msg(rc == 0, "raw %s: %s", argv[0], sl_strerror(rc));
    return reply;
}

static void raw_expect(const char *want, char *reply)
{
    ck_assert_str_eq(reply, want);
    free(reply);
}

/* A step message; spec carries the attempt id too, to check it travels intact. */
static struct queue_step_msg make_step(const char *attempt_id, cJSON **spec)
{
    *spec = cJSON_CreateObject();
    cJSON_AddStringToObject(*spec, "image", "busybox");
    cJSON_AddStringToObject(*spec, "for", attempt_id);
    struct queue_step_msg m = {.attempt_id = (char *)attempt_id,
                               .dag_id = "etl",
                               .run_id = "run-1",
                               .step = "extract",
                               .map_index = -1,
                               .attempt = 1,
                               .spec = *spec};
    return m;
}

static int dispatch(struct queue_id *out_id, struct queue *q, const char *queue_name,
                    const char *attempt_id)
{
    cJSON *spec;
    struct queue_step_msg m = make_step(attempt_id, &spec);
    int rc = queue_dispatch(out_id, q, queue_name, &m);
    cJSON_Delete(spec);
    return rc;
}

static int publish(struct queue_id *out_id, struct queue *q, const char *attempt_id,
                   enum queue_event_kind kind, int64_t seq)
{
    struct queue_event_msg ev = {.attempt_id = (char *)attempt_id,
                                 .kind = kind,
                                 .worker_id = "w1",
                                 .seq = seq,
                                 .time_ms = 1000 + seq,
                                 .started_ms = 1000,
                                 .finished_ms = kind == QUEUE_EVENT_RUNNING ? 0 : 2000,
                                 .has_exit_code = kind != QUEUE_EVENT_RUNNING,
                                 .exit_code = kind == QUEUE_EVENT_FAILED ? 1 : 0};
    return queue_publish_event(out_id, q, &ev);
}

static bool has_message(struct queue *q, const char *queue_name, const char *attempt_id)
{
    bool has = false;
    ck_assert_int_eq(queue_has_message(&has, q, queue_name, attempt_id), 0);
    return has;
}

/* --- Step queues --------------------------------------------------------------------- */

START_TEST(test_step_round_trip)
{
    struct queue *sched = open_q("t_round:"), *worker = open_q("t_round:");
    ck_assert(queue_is_connected(sched));
    ck_assert_int_eq(queue_ping(sched), 0);
    ck_assert_int_eq(queue_ensure_step_group(worker, "cpu"), 0);
    ck_assert_int_eq(queue_ensure_step_group(worker, "cpu"), 0); /* BUSYGROUP is fine */

    struct queue_id id1, id2, again;
    ck_assert_int_eq(dispatch(&id1, sched, "cpu", "att-1"), 0);
    ck_assert_int_eq(dispatch(&id2, sched, "cpu", "att-2"), 0);
    ck_assert_str_ne(id1.s, id2.s);
    /* Idempotent per attempt: no second message, the first one's id. */
    ck_assert_int_eq(dispatch(&again, sched, "cpu", "att-1"), SL_EEXIST);
    ck_assert_str_eq(again.s, id1.s);
    ck_assert(has_message(sched, "cpu", "att-1"));
    ck_assert(!has_message(sched, "cpu", "att-9"));

    struct queue_stats st;
    ck_assert_int_eq(queue_step_stats(&st, sched, "cpu"), 0);
    ck_assert_int_eq(st.length, 2);
    ck_assert_int_eq(st.pending, 0);
    ck_assert_int_eq(st.waiting, 2);
    ck_assert_int_eq(st.oldest_waiting_ms, strtoll(id1.s, NULL, 10));

    struct queue_batch b;
    ck_assert_int_eq(queue_read_steps(&b, worker, "cpu", "w1", 10, 0), 0);
    ck_assert_uint_eq(b.n, 2);
    ck_assert_str_eq(b.entries[0].id.s, id1.s);
    ck_assert_ptr_null(b.entries[0].error);
    struct queue_step_msg *m = b.entries[0].step;
    ck_assert_str_eq(m->attempt_id, "att-1");
    ck_assert_str_eq(m->dag_id, "etl");
    ck_assert_str_eq(m->run_id, "run-1");
    ck_assert_str_eq(m->step, "extract");
    ck_assert_int_eq(m->map_index, -1);
    ck_assert_int_eq(m->attempt, 1);
    ck_assert_str_eq(cJSON_GetObjectItem(m->spec, "for")->valuestring, "att-1");
    ck_assert_str_eq(b.entries[1].step->attempt_id, "att-2");
    /* A message can be kept beyond its batch. */
    struct queue_step_msg *kept = b.entries[1].step;
    b.entries[1].step = NULL;
    queue_batch_release(&b);
    ck_assert_str_eq(kept->attempt_id, "att-2");
    queue_step_msg_free(kept);

    ck_assert_int_eq(queue_step_stats(&st, sched, "cpu"), 0);
    ck_assert_int_eq(st.pending, 2);
    ck_assert_int_eq(st.waiting, 0);
    ck_assert_int_eq(st.oldest_waiting_ms, 0);

    /* Nothing new: a non-blocking read returns at once, a blocking one after block_ms. */
    ck_assert_int_eq(queue_read_steps(&b, worker, "cpu", "w1", 10, 0), 0);
    ck_assert_uint_eq(b.n, 0);
    int64_t t0 = now_ms();
    ck_assert_int_eq(queue_read_steps(&b, worker, "cpu", "w1", 10, 150), 0);
    int64_t waited = now_ms() - t0;
    ck_assert_uint_eq(b.n, 0);
    ck_assert_msg(waited >= 140 && waited < 1500, "blocked %lld ms", (long long)waited);

    struct queue_id ids[2] = {id1, id2};
    enum queue_owner owner[2] = {QUEUE_OWNER_NONE, QUEUE_OWNER_NONE};
    ck_assert_int_eq(queue_refresh(owner, worker, "cpu", "w1", ids, 2), 0);
    ck_assert(owner[0] == QUEUE_OWNER_SELF && owner[1] == QUEUE_OWNER_SELF);
    ck_assert_int_eq(queue_refresh(owner, worker, "cpu", "w2", ids, 2), 0);
    ck_assert(owner[0] == QUEUE_OWNER_OTHER && owner[1] == QUEUE_OWNER_OTHER); /* not stolen */
    ck_assert_int_eq(queue_refresh(NULL, worker, "cpu", "w1", ids, 0), 0);

    ck_assert_int_eq(queue_ack_step(worker, "cpu", &id1), 0);
    ck_assert_int_eq(queue_ack_step(worker, "cpu", &id1), 0); /* idempotent */
    ck_assert(!has_message(sched, "cpu", "att-1"));
    ck_assert(has_message(sched, "cpu", "att-2"));
    ck_assert_int_eq(queue_refresh(owner, worker, "cpu", "w1", ids, 2), 0);
    ck_assert(owner[0] == QUEUE_OWNER_NONE && owner[1] == QUEUE_OWNER_SELF); /* 0 was acked */
    ck_assert_int_eq(queue_ack_step(worker, "cpu", &id2), 0);
    ck_assert_int_eq(queue_step_stats(&st, sched, "cpu"), 0);
    ck_assert_int_eq(st.length, 0);
    ck_assert_int_eq(st.pending, 0);

    /* Once acked, the attempt can be dispatched again (a retry of the same attempt id). */
    ck_assert_int_eq(dispatch(&again, sched, "cpu", "att-1"), 0);
    ck_assert_str_ne(again.s, id1.s);

    /* Bad arguments. */
    ck_assert_int_eq(queue_read_steps(&b, worker, "cpu q", "w1", 1, 0), SL_EINVAL);
    ck_assert_int_eq(queue_read_steps(&b, worker, "cpu", "", 1, 0), SL_EINVAL);
    ck_assert_int_eq(queue_read_steps(&b, worker, "cpu", "w1", 0, 0), SL_EINVAL);
    ck_assert_int_eq(queue_read_steps(&b, worker, "cpu", "w1", 1, -1), SL_EINVAL);
    struct queue_id bad = {"1-x"};
    ck_assert_int_eq(queue_ack_step(worker, "cpu", &bad), SL_EINVAL);
    ck_assert_int_eq(dispatch(NULL, sched, "", "att-1"), SL_EINVAL);
    queue_close(sched);
    queue_close(worker);
}
END_TEST

START_TEST(test_blocking_read_wakes)
{
    /* A worker blocked in a read gets a message dispatched meanwhile at once. */
    struct queue *worker = open_q("t_wake:");
    ck_assert_int_eq(queue_ensure_step_group(worker, "gpu"), 0);
    fflush(NULL);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        sleep_ms(150);
        struct queue *sched = open_q("t_wake:");
        int rc = dispatch(NULL, sched, "gpu", "late");
        queue_close(sched);
        _exit(rc == 0 ? 0 : 1);
    }
    int64_t t0 = now_ms();
    struct queue_batch b;
    ck_assert_int_eq(queue_read_steps(&b, worker, "gpu", "w1", 4, 5000), 0);
    int64_t waited = now_ms() - t0;
    ck_assert_uint_eq(b.n, 1);
    ck_assert_str_eq(b.entries[0].step->attempt_id, "late");
    ck_assert_msg(waited >= 100 && waited < 3000, "woke after %lld ms", (long long)waited);
    queue_batch_release(&b);
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    queue_close(worker);
}
END_TEST

START_TEST(test_takeover)
{
    struct queue *sched = open_q("t_take:"), *w1 = open_q("t_take:"), *w2 = open_q("t_take:");
    struct queue_id id, gone;
    ck_assert_int_eq(dispatch(&id, sched, "cpu", "att-1"), 0);
    ck_assert_int_eq(dispatch(&gone, sched, "cpu", "att-2"), 0);
    struct queue_batch b;
    ck_assert_int_eq(queue_read_steps(&b, w1, "cpu", "w1", 10, 0), 0);
    ck_assert_uint_eq(b.n, 2);
    queue_batch_release(&b);

    /* Not idle long enough yet: nothing to take. */
    ck_assert_int_eq(queue_takeover(&b, w2, "cpu", "w2", 60000, 10), 0);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_uint_eq(b.n_deleted, 0);

    /* w1 stalls; meanwhile att-2's entry is deleted behind the group's back. */
    char *del = xasprintf("t_take:q:cpu");
    raw_expect(":1\r\n", RAW("XDEL", del, gone.s));
    free(del);
    sleep_ms(80);
    ck_assert_int_eq(queue_takeover(&b, w2, "cpu", "w2", 50, 10), 0);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_str_eq(b.entries[0].id.s, id.s);
    ck_assert_str_eq(b.entries[0].step->attempt_id, "att-1");
    ck_assert_uint_eq(b.n_deleted, 1); /* Redis 7 reports the deleted pending entry */
    queue_batch_release(&b);

    /* w1 wakes up: its refresh does not steal the message back. */
    enum queue_owner owner = QUEUE_OWNER_NONE;
    ck_assert_int_eq(queue_refresh(&owner, w1, "cpu", "w1", &id, 1), 0);
    ck_assert_int_eq(owner, QUEUE_OWNER_OTHER);
    ck_assert_int_eq(queue_refresh(&owner, w2, "cpu", "w2", &id, 1), 0);
    ck_assert_int_eq(owner, QUEUE_OWNER_SELF);
    /* Refreshed: not idle, so not taken over again. */
    ck_assert_int_eq(queue_takeover(&b, w1, "cpu", "w1", 50, 10), 0);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_uint_eq(b.n_deleted, 0);

    /* A takeover on a queue that never existed is empty, not an error. */
    ck_assert_int_eq(queue_takeover(&b, w1, "nosuch", "w1", 0, 10), 0);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_int_eq(queue_refresh(&owner, w1, "nosuch", "w1", &id, 1), 0);
    ck_assert_int_eq(owner, QUEUE_OWNER_NONE);

    ck_assert_int_eq(queue_ack_step(w2, "cpu", &id), 0);
    ck_assert(!has_message(sched, "cpu", "att-1"));
    queue_close(sched);
    queue_close(w1);
    queue_close(w2);
}
END_TEST

START_TEST(test_msg_index)
{
    struct queue *q = open_q("t_index:");
    struct queue_id id;
    bool removed = false;

    /* withdraw: a waiting message disappears, with its index record. */
    ck_assert_int_eq(dispatch(&id, q, "cpu", "att-1"), 0);
    ck_assert_int_eq(queue_withdraw(&removed, q, "cpu", "att-1"), 0);
    ck_assert(removed);
    ck_assert(!has_message(q, "cpu", "att-1"));
    ck_assert_int_eq(queue_withdraw(&removed, q, "cpu", "att-1"), 0);
    ck_assert(!removed);
    struct queue_batch b;
    ck_assert_int_eq(queue_read_steps(&b, q, "cpu", "w1", 10, 0), 0);
    ck_assert_uint_eq(b.n, 0);

    /* withdraw of a message a worker holds: the worker's refresh says it is gone. */
    ck_assert_int_eq(dispatch(&id, q, "cpu", "att-2"), 0);
    ck_assert_int_eq(queue_read_steps(&b, q, "cpu", "w1", 10, 0), 0);
    ck_assert_uint_eq(b.n, 1);
    queue_batch_release(&b);
    ck_assert_int_eq(queue_withdraw(&removed, q, "cpu", "att-2"), 0);
    ck_assert(removed);
    enum queue_owner owner = QUEUE_OWNER_SELF;
    ck_assert_int_eq(queue_refresh(&owner, q, "cpu", "w1", &id, 1), 0);
    ck_assert_int_eq(owner, QUEUE_OWNER_NONE);

    /* A stale record (entry deleted outside the API) is repaired by has_message, and
     * does not block a new dispatch. */
    ck_assert_int_eq(dispatch(&id, q, "cpu", "att-3"), 0);
    raw_expect(":1\r\n", RAW("XDEL", "t_index:q:cpu", id.s));
    raw_expect(":1\r\n", RAW("HEXISTS", "t_index:msg", "att-3"));
    ck_assert(!has_message(q, "cpu", "att-3"));
    raw_expect(":0\r\n", RAW("HEXISTS", "t_index:msg", "att-3"));
    raw_expect("+OK\r\n", RAW("HMSET", "t_index:msg", "att-4", "1-1 cpu"));
    struct queue_id fresh;
    ck_assert_int_eq(dispatch(&fresh, q, "cpu", "att-4"), 0);
    ck_assert_str_ne(fresh.s, "1-1");
    ck_assert(has_message(q, "cpu", "att-4"));

    /* The index holds exactly the live messages: att-4 only. */
    raw_expect(":1\r\n", RAW("HLEN", "t_index:msg"));
    ck_assert_int_eq(queue_read_steps(&b, q, "cpu", "w1", 10, 0), 0);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_int_eq(queue_ack_step(q, "cpu", &b.entries[0].id), 0);
    queue_batch_release(&b);
    raw_expect(":0\r\n", RAW("HLEN", "t_index:msg"));

    /* Acking an old entry of an attempt that was dispatched again keeps the new record. */
    struct queue_id first, second;
    ck_assert_int_eq(dispatch(&first, q, "cpu", "att-5"), 0);
    ck_assert_int_eq(queue_read_steps(&b, q, "cpu", "w1", 10, 0), 0);
    queue_batch_release(&b);
    raw_expect(":1\r\n", RAW("HDEL", "t_index:msg", "att-5")); /* lost record */
    ck_assert_int_eq(dispatch(&second, q, "cpu", "att-5"), 0);
    ck_assert_int_eq(queue_ack_step(q, "cpu", &first), 0);
    ck_assert(has_message(q, "cpu", "att-5"));
    ck_assert_int_eq(queue_ack_step(q, "cpu", &second), 0);
    ck_assert(!has_message(q, "cpu", "att-5"));
    raw_expect(":0\r\n", RAW("HLEN", "t_index:msg"));
    queue_close(q);
}
END_TEST

START_TEST(test_malformed_steps)
{
    struct queue *q = open_q("t_junk:");
    ck_assert_int_eq(queue_ensure_step_group(q, "cpu"), 0);
    const char *key = "t_junk:q:cpu";
    free(RAW("XADD", key, "*", "m", "not json"));
    free(RAW("XADD", key, "*", "m", "{\"v\":2}"));
    free(RAW("XADD", key, "*", "m", "{\"v\":1,\"attempt_id\":\"a\"}"));
    free(RAW("XADD", key, "*", "other", "x"));
    size_t big_len = QUEUE_MSG_MAX_BYTES + 512 * 1024;
    char *big = xmalloc(big_len + 1);
    memset(big, '[', big_len);
    big[big_len] = '\0';
    free(RAW("XADD", key, "*", "m", big));
    free(big);
    struct queue_id good;
    ck_assert_int_eq(dispatch(&good, q, "cpu", "att-ok"), 0);

    static const char *const want[] = {
        "message is not JSON (syntax error at byte 0)",
        "version 2 is not supported (want 1)",
        "field \"dag_id\" is missing",
        "entry has no field \"m\"",
        "message is 1572864 bytes, over the limit of 1048576",
    };
    struct queue_batch b;
    ck_assert_int_eq(queue_read_steps(&b, q, "cpu", "w1", 100, 0), 0);
    ck_assert_uint_eq(b.n, 6);
    for (size_t i = 0; i < 5; i++) {
        ck_assert_ptr_null(b.entries[i].step);
        ck_assert_ptr_nonnull(b.entries[i].error);
        ck_assert_str_eq(b.entries[i].error, want[i]);
    }
    ck_assert_ptr_null(b.entries[5].error);
    ck_assert_str_eq(b.entries[5].step->attempt_id, "att-ok");
    /* Malformed entries are acked like any other and do not come back. */
    for (size_t i = 0; i < b.n; i++)
        ck_assert_int_eq(queue_ack_step(q, "cpu", &b.entries[i].id), 0);
    queue_batch_release(&b);
    struct queue_stats st;
    ck_assert_int_eq(queue_step_stats(&st, q, "cpu"), 0);
    ck_assert_int_eq(st.length, 0);
    ck_assert_int_eq(st.pending, 0);
    raw_expect(":0\r\n", RAW("HLEN", "t_junk:msg"));

    /* An oversized message is refused before it is sent. */
    cJSON *spec = cJSON_CreateObject();
    char *blob = xmalloc(QUEUE_MSG_MAX_BYTES + 1);
    memset(blob, 'x', QUEUE_MSG_MAX_BYTES);
    blob[QUEUE_MSG_MAX_BYTES] = '\0';
    cJSON_AddStringToObject(spec, "blob", blob);
    free(blob);
    struct queue_step_msg m = {.attempt_id = "huge",
                               .dag_id = "d",
                               .run_id = "r",
                               .step = "s",
                               .map_index = -1,
                               .attempt = 1,
                               .spec = spec};
    ck_assert_int_eq(queue_dispatch(NULL, q, "cpu", &m), SL_ETOOBIG);
    cJSON_Delete(spec);
    ck_assert(!has_message(q, "cpu", "huge"));
    queue_close(q);
}
END_TEST

/* --- Events -------------------------------------------------------------------------- */

START_TEST(test_events_redelivery)
{
    struct queue *worker = open_q("t_events:");
    struct queue_id e[4];
    ck_assert_int_eq(publish(&e[0], worker, "att-1", QUEUE_EVENT_RUNNING, 1), 0);
    ck_assert_int_eq(publish(&e[1], worker, "att-1", QUEUE_EVENT_SUCCEEDED, 2), 0);
    ck_assert_int_eq(publish(&e[2], worker, "att-2", QUEUE_EVENT_RUNNING, 1), 0);
    free(RAW("XADD", "t_events:events", "*", "m", "{\"v\":1,\"kind\":\"exploded\"}"));

    /* A scheduler reads two events and crashes before acknowledging them. */
    struct queue *s1 = open_q("t_events:");
    struct queue_batch b;
    ck_assert_int_eq(queue_read_events(&b, s1, "sched-a", 2, 0), 0);
    ck_assert_uint_eq(b.n, 2);
    ck_assert_str_eq(b.entries[0].id.s, e[0].s);
    struct queue_event_msg *ev = b.entries[1].event;
    ck_assert_str_eq(ev->attempt_id, "att-1");
    ck_assert_int_eq(ev->kind, QUEUE_EVENT_SUCCEEDED);
    ck_assert_str_eq(ev->worker_id, "w1");
    ck_assert_int_eq(ev->seq, 2);
    ck_assert_int_eq(ev->finished_ms, 2000);
    ck_assert(ev->has_exit_code && ev->exit_code == 0);
    queue_batch_release(&b);
    queue_close(s1);

    struct queue_stats st;
    ck_assert_int_eq(queue_event_stats(&st, worker), 0);
    ck_assert_int_eq(st.length, 4);
    ck_assert_int_eq(st.pending, 2);
    ck_assert_int_eq(st.waiting, 2);

    /* The next scheduler (another consumer name: a new leader) sees those first. */
    struct queue *s2 = open_q("t_events:");
    ck_assert_int_eq(queue_read_events(&b, s2, "sched-b", 10, 0), 0);
    ck_assert_uint_eq(b.n, 2);
    ck_assert_str_eq(b.entries[0].id.s, e[0].s);
    ck_assert_str_eq(b.entries[1].id.s, e[1].s);
    queue_batch_release(&b);
    /* Its transaction failed: rewind, and the same two come again. */
    queue_rewind_events(s2);
    ck_assert_int_eq(queue_read_events(&b, s2, "sched-b", 1, 0), 0);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_str_eq(b.entries[0].id.s, e[0].s);
    queue_batch_release(&b);
    ck_assert_int_eq(queue_read_events(&b, s2, "sched-b", 10, 0), 0);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_str_eq(b.entries[0].id.s, e[1].s);
    queue_batch_release(&b);
    ck_assert_int_eq(queue_ack_events(s2, e, 2), 0);

    /* Then the new ones, the malformed one included. */
    ck_assert_int_eq(queue_read_events(&b, s2, "sched-b", 10, 100), 0);
    ck_assert_uint_eq(b.n, 2);
    ck_assert_str_eq(b.entries[0].id.s, e[2].s);
    ck_assert_str_eq(b.entries[0].event->attempt_id, "att-2");
    ck_assert_ptr_null(b.entries[1].event);
    ck_assert_str_eq(b.entries[1].error, "field \"attempt_id\" is missing");
    struct queue_id rest[2] = {b.entries[0].id, b.entries[1].id};
    queue_batch_release(&b);
    ck_assert_int_eq(queue_ack_events(s2, rest, 2), 0);
    ck_assert_int_eq(queue_ack_events(s2, rest, 2), 0); /* idempotent */
    ck_assert_int_eq(queue_ack_events(s2, rest, 0), 0);
    queue_close(s2);

    /* All acked: a restarted scheduler finds nothing, and the stream is empty. */
    struct queue *s3 = open_q("t_events:");
    ck_assert_int_eq(queue_read_events(&b, s3, "sched-b", 10, 0), 0);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_int_eq(queue_event_stats(&st, s3), 0);
    ck_assert_int_eq(st.length, 0);
    ck_assert_int_eq(st.pending, 0);
    queue_close(s3);
    queue_close(worker);
}
END_TEST

START_TEST(test_events_adopt_many)
{
    /* More pending entries than one claim takes: a new leader adopts all of them. */
    enum { N = QUEUE_READ_MAX + 150 };
    struct queue *worker = open_q("t_adopt:"), *s1 = open_q("t_adopt:");
    ck_assert_int_eq(queue_ensure_event_group(s1), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(publish(NULL, worker, "att", QUEUE_EVENT_RUNNING, i), 0);
    struct queue_batch b;
    size_t got = 0;
    while (got < N) {
        ck_assert_int_eq(queue_read_events(&b, s1, "old-leader", QUEUE_READ_MAX, 0), 0);
        ck_assert_uint_gt(b.n, 0);
        got += b.n;
        queue_batch_release(&b);
    }
    queue_close(s1);

    struct queue *s2 = open_q("t_adopt:");
    struct queue_id *ids = xcalloc(N, sizeof(*ids));
    got = 0;
    for (;;) {
        ck_assert_int_eq(queue_read_events(&b, s2, "new-leader", QUEUE_READ_MAX, 0), 0);
        if (b.n == 0)
            break;
        for (size_t i = 0; i < b.n; i++) {
            ck_assert_int_eq(b.entries[i].event->seq, (int64_t)(got + i)); /* in order */
            ids[got + i] = b.entries[i].id;
        }
        got += b.n;
        queue_batch_release(&b);
        ck_assert_uint_le(got, N);
    }
    ck_assert_uint_eq(got, N);
    ck_assert_int_eq(queue_ack_events(s2, ids, N), 0); /* in two script calls */
    struct queue_stats st;
    ck_assert_int_eq(queue_event_stats(&st, s2), 0);
    ck_assert_int_eq(st.length, 0);
    ck_assert_int_eq(st.pending, 0);

    /* Refresh takes any number of ids too; none of these is pending. */
    enum queue_owner *owner = xcalloc(N, sizeof(*owner));
    for (int i = 0; i < N; i++)
        snprintf(ids[i].s, sizeof(ids[i].s), "1-%d", i);
    ck_assert_int_eq(dispatch(NULL, s2, "cpu", "att-1"), 0);
    ck_assert_int_eq(queue_read_steps(&b, s2, "cpu", "w1", 1, 0), 0);
    ids[N - 1] = b.entries[0].id;
    queue_batch_release(&b);
    ck_assert_int_eq(queue_refresh(owner, s2, "cpu", "w1", ids, N), 0);
    for (int i = 0; i < N - 1; i++)
        ck_assert_int_eq(owner[i], QUEUE_OWNER_NONE);
    ck_assert_int_eq(owner[N - 1], QUEUE_OWNER_SELF);
    free(owner);
    free(ids);
    queue_close(s2);
    queue_close(worker);
}
END_TEST

/* --- Cancels ------------------------------------------------------------------------- */

static struct queue_cancel_msg cancel_of(const char *run_id, const char *attempt_id)
{
    struct queue_cancel_msg c = {.run_id = (char *)run_id,
                                 .attempt_id = (char *)attempt_id,
                                 .reason = "user request",
                                 .time_ms = 42};
    return c;
}

START_TEST(test_cancels_survive_reconnect)
{
    struct queue *sched = open_q("t_cancel:"), *worker = open_q("t_cancel:");
    struct queue_cancel_msg old = cancel_of("run-0", NULL);
    ck_assert_int_eq(queue_publish_cancel(NULL, sched, &old), 0);

    /* Starting from "" skips what was there before the worker started. */
    struct queue_id last = {""};
    struct queue_batch b;
    ck_assert_int_eq(queue_read_cancels(&b, worker, &last, 10, 0), 0);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_str_ne(last.s, "");

    struct queue_cancel_msg c1 = cancel_of("run-1", NULL), c2 = cancel_of("run-2", "att-9");
    ck_assert_int_eq(queue_publish_cancel(NULL, sched, &c1), 0);
    /* Every client connection is killed: the worker's read reconnects on its own. */
    free(RAW("CLIENT", "KILL", "TYPE", "normal"));
    ck_assert_int_eq(queue_read_cancels(&b, worker, &last, 10, 0), 0);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_str_eq(b.entries[0].cancel->run_id, "run-1");
    ck_assert_ptr_null(b.entries[0].cancel->attempt_id);
    ck_assert_str_eq(b.entries[0].cancel->reason, "user request");
    ck_assert_str_eq(last.s, b.entries[0].id.s);
    queue_batch_release(&b);

    /* The worker is gone for a while; the cancel sent meanwhile waits for it. */
    queue_close(worker);
    ck_assert_int_eq(queue_publish_cancel(NULL, sched, &c2), 0);
    free(RAW("XADD", "t_cancel:cancel", "*", "m", "[]"));
    worker = open_q("t_cancel:");
    ck_assert_int_eq(queue_read_cancels(&b, worker, &last, 10, 1000), 0);
    ck_assert_uint_eq(b.n, 2);
    ck_assert_str_eq(b.entries[0].cancel->run_id, "run-2");
    ck_assert_str_eq(b.entries[0].cancel->attempt_id, "att-9");
    ck_assert_str_eq(b.entries[1].error, "message is not a JSON object");
    queue_batch_release(&b);

    /* Caught up: a blocking read waits, then returns nothing and keeps last_id. */
    struct queue_id before = last;
    ck_assert_int_eq(queue_read_cancels(&b, worker, &last, 10, 100), 0);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_str_eq(last.s, before.s);

    /* "0-0" reads everything retained. */
    struct queue_id all = {"0-0"};
    ck_assert_int_eq(queue_read_cancels(&b, worker, &all, 10, 0), 0);
    ck_assert_uint_eq(b.n, 4);
    queue_batch_release(&b);
    struct queue_id bad = {"nope"};
    ck_assert_int_eq(queue_read_cancels(&b, worker, &bad, 10, 0), SL_EINVAL);
    queue_close(sched);
    queue_close(worker);
}
END_TEST

/* --- Heartbeats ---------------------------------------------------------------------- */

static const struct queue_worker *find_worker(const struct queue_workers *w, const char *id)
{
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->items[i].id, id))
            return &w->items[i];
    return NULL;
}

START_TEST(test_heartbeats)
{
    struct queue *q = open_q("t_hb:");
    cJSON *info = cJSON_Parse("{\"slots\":4,\"gpus\":[0,1]}");
    int64_t t1 = 0, t2 = 0;
    ck_assert_int_eq(queue_heartbeat(&t1, q, "w-short", 100, NULL), 0);
    sleep_ms(3); /* distinct last-seen times, so the order below is fixed */
    ck_assert_int_eq(queue_heartbeat(&t2, q, "w-long", 60000, info), 0);
    ck_assert_int_gt(t1, 1600000000000LL); /* server time, unix ms */
    ck_assert_int_ge(t2, t1);

    struct queue_workers w;
    ck_assert_int_eq(queue_list_workers(&w, q), 0);
    ck_assert_uint_eq(w.n, 2);
    ck_assert_int_ge(w.now_ms, t2);
    const struct queue_worker *s = find_worker(&w, "w-short"), *l = find_worker(&w, "w-long");
    ck_assert(s && l);
    ck_assert(s->alive && l->alive);
    ck_assert_int_eq(s->last_seen_ms, t1);
    ck_assert_int_eq(l->last_seen_ms, t2);
    ck_assert(cJSON_Compare(l->info, info, 1));
    ck_assert(cJSON_IsObject(s->info) && s->info->child == NULL);
    queue_workers_release(&w);

    /* w-short stops heartbeating: its key expires, the reconciler sees it dead. */
    sleep_ms(200);
    ck_assert_int_eq(queue_list_workers(&w, q), 0);
    ck_assert_uint_eq(w.n, 2);
    ck_assert_str_eq(w.items[0].id, "w-short"); /* oldest first */
    s = find_worker(&w, "w-short");
    l = find_worker(&w, "w-long");
    ck_assert(!s->alive && s->info == NULL);
    ck_assert(l->alive);
    ck_assert_int_ge(w.now_ms - s->last_seen_ms, 200);
    queue_workers_release(&w);

    /* It comes back; then it is forgotten. */
    ck_assert_int_eq(queue_heartbeat(NULL, q, "w-short", 60000, NULL), 0);
    ck_assert_int_eq(queue_list_workers(&w, q), 0);
    ck_assert(find_worker(&w, "w-short")->alive);
    ck_assert_str_eq(w.items[1].id, "w-short"); /* newest last */
    queue_workers_release(&w);
    ck_assert_int_eq(queue_forget_worker(q, "w-short"), 0);
    ck_assert_int_eq(queue_forget_worker(q, "w-short"), 0);
    ck_assert_int_eq(queue_list_workers(&w, q), 0);
    ck_assert_uint_eq(w.n, 1);
    ck_assert_str_eq(w.items[0].id, "w-long");
    queue_workers_release(&w);
    raw_expect(":0\r\n", RAW("EXISTS", "t_hb:worker:w-short"));

    ck_assert_int_eq(queue_heartbeat(NULL, q, "bad id", 1000, NULL), SL_EINVAL);
    ck_assert_int_eq(queue_heartbeat(NULL, q, "w", 0, NULL), SL_EINVAL);
    cJSON *arr = cJSON_CreateArray();
    ck_assert_int_eq(queue_heartbeat(NULL, q, "w", 1000, arr), SL_EINVAL);
    cJSON_Delete(arr);
    cJSON_Delete(info);

    /* An empty list. */
    struct queue *other = open_q("t_hb_none:");
    ck_assert_int_eq(queue_list_workers(&w, other), 0);
    ck_assert_uint_eq(w.n, 0);
    queue_workers_release(&w);
    queue_close(other);
    queue_close(q);
}
END_TEST

/* --- Connection loss ----------------------------------------------------------------- */

START_TEST(test_reconnect_and_lost_data)
{
    /* Over TCP this time. */
    char *url = xasprintf("redis://" HARNESS_LOOPBACK ":%d", redis.port);
    struct queue_options opts = {.prefix = "t_lost:", .backoff_min_ms = 10, .backoff_max_ms = 50};
    struct queue *sched, *worker;
    ck_assert_int_eq(queue_open(&sched, url, &opts), 0);
    ck_assert_int_eq(queue_open(&worker, url, &opts), 0);
    free(url);
    struct queue_id id;
    ck_assert_int_eq(dispatch(&id, sched, "cpu", "att-1"), 0);
    struct queue_batch b;
    ck_assert_int_eq(queue_read_steps(&b, worker, "cpu", "w1", 10, 0), 0);
    ck_assert_uint_eq(b.n, 1);
    queue_batch_release(&b);

    /* Connections killed: every call reconnects transparently. */
    free(RAW("CLIENT", "KILL", "TYPE", "normal"));
    ck_assert_int_eq(queue_ping(sched), 0);
    ck_assert_int_eq(queue_ack_step(worker, "cpu", &id), 0);
    ck_assert(!has_message(sched, "cpu", "att-1"));

    /* A Redis that lost its data (restart without persistence): scripts and groups
     * are gone; reads create the groups again and deliver what was sent since. */
    struct queue_id running;
    ck_assert_int_eq(dispatch(&running, sched, "cpu", "att-run"), 0);
    ck_assert_int_eq(queue_read_steps(&b, worker, "cpu", "w1", 10, 0), 0);
    ck_assert_uint_eq(b.n, 1);
    queue_batch_release(&b);
    free(RAW("SCRIPT", "FLUSH"));
    free(RAW("FLUSHALL"));
    /* The step being run lost its entry: nobody holds it, which is no reason to stop. */
    enum queue_owner owner = QUEUE_OWNER_SELF;
    ck_assert_int_eq(queue_refresh(&owner, worker, "cpu", "w1", &running, 1), 0);
    ck_assert_int_eq(owner, QUEUE_OWNER_NONE);
    ck_assert_int_eq(dispatch(&id, sched, "cpu", "att-2"), 0);
    ck_assert_int_eq(publish(NULL, worker, "att-2", QUEUE_EVENT_RUNNING, 1), 0);
    ck_assert_int_eq(queue_read_steps(&b, worker, "cpu", "w1", 10, 0), 0);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_str_eq(b.entries[0].step->attempt_id, "att-2");
    queue_batch_release(&b);
    ck_assert_int_eq(queue_read_events(&b, sched, "sched", 10, 0), 0);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_str_eq(b.entries[0].event->attempt_id, "att-2");
    queue_batch_release(&b);
    queue_close(sched);
    queue_close(worker);
}
END_TEST

START_TEST(test_command_timeout)
{
    /* A Redis that stops answering: the call gives up after its timeout. */
    char *url = unix_url(&redis);
    struct queue_options opts = {
        .prefix = "t_slow:", .command_timeout_ms = 200, .backoff_min_ms = 10, .backoff_max_ms = 50};
    struct queue *q;
    ck_assert_int_eq(queue_open(&q, url, &opts), 0);
    free(url);
    fflush(NULL);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        char *reply = NULL;
        _exit(harness_redis_command(&reply, &redis, "DEBUG", "SLEEP", "1", NULL) == 0 ? 0 : 1);
    }
    sleep_ms(100); /* the server is asleep now */
    int64_t t0 = now_ms();
    ck_assert_int_eq(queue_ping(q), SL_ECONN);
    int64_t took = now_ms() - t0;
    ck_assert_msg(took >= 150 && took < 700, "gave up after %lld ms", (long long)took);
    ck_assert(!queue_is_connected(q));
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_int_eq(queue_ping(q), 0); /* back */
    ck_assert(queue_is_connected(q));
    queue_close(q);
}
END_TEST

START_TEST(test_open_errors)
{
    struct queue *q = NULL;
    ck_assert_int_eq(queue_open(&q, "http://nope", NULL), SL_EINVAL);
    struct queue_options bad_prefix = {.prefix = "has space"};
    char *url = unix_url(&redis);
    ck_assert_int_eq(queue_open(&q, url, &bad_prefix), SL_EINVAL);
    struct queue_options bad_backoff = {.backoff_min_ms = 500, .backoff_max_ms = 100};
    ck_assert_int_eq(queue_open(&q, url, &bad_backoff), SL_EINVAL);
    free(url);
    ck_assert_ptr_null(q);
    /* Nothing listens there: SL_ECONN, quickly. */
    struct queue_options fast = {.connect_timeout_ms = 300};
    int64_t t0 = now_ms();
    ck_assert_int_eq(queue_open(&q, "unix:///nonexistent/redis.sock", &fast), SL_ECONN);
    ck_assert_int_eq(queue_open(&q, "redis://127.0.0.1:1", &fast), SL_ECONN);
    ck_assert_int_lt(now_ms() - t0, 1000);
    ck_assert_ptr_null(q);
    queue_close(NULL);
}
END_TEST

/* --- A server of its own: AUTH and SELECT, then stopped and replaced ---------------- */

START_TEST(test_server_restart)
{
    struct harness_redis own = {0};
    ck_assert_int_eq(harness_redis_start(&own), 0);

    struct queue_options opts = {.prefix = "t_restart:",
                                 .connect_timeout_ms = 300,
                                 .command_timeout_ms = 1000,
                                 .backoff_min_ms = 20,
                                 .backoff_max_ms = 200};
    /* A database other than 0: SELECTed on connect. */
    char *url = xasprintf("redis://" HARNESS_LOOPBACK ":%d/2", own.port);
    struct queue *q = NULL;
    ck_assert_int_eq(queue_open(&q, url, &opts), 0);
    free(url);
    struct queue_id id;
    ck_assert_int_eq(dispatch(&id, q, "cpu", "att-1"), 0);
    ck_assert(has_message(q, "cpu", "att-1"));
    queue_close(q);
    raw_expect(":0\r\n", raw_command(&own, "HLEN", "t_restart:msg", NULL));
    raw_expect(":1\r\n", raw_command(&own, "EVAL",
                                     "redis.call('SELECT', 2) return redis.call('HLEN', KEYS[1])",
                                     "1", "t_restart:msg", NULL));

    /* A password: %-encoded in the URL, refused when wrong. */
    raw_expect("+OK\r\n", raw_command(&own, "CONFIG", "SET", "requirepass", "p@ss/w:rd", NULL));
    char *bad = xasprintf("redis://:wrong@" HARNESS_LOOPBACK ":%d/2", own.port);
    char *good = xasprintf("redis://:p%%40ss%%2Fw%%3Ard@" HARNESS_LOOPBACK ":%d/2", own.port);
    ck_assert_int_eq(queue_open(&q, bad, &opts), SL_EINVAL);
    ck_assert_int_eq(queue_open(&q, good, &opts), 0);
    free(bad);
    free(good);
    ck_assert(has_message(q, "cpu", "att-1"));

    /* The server goes away: every call returns SL_ECONN promptly, none hangs. */
    ck_assert_int_eq(harness_redis_stop(&own), 0);
    struct queue_batch b;
    bool has;
    for (int i = 0; i < 3; i++) {
        int64_t t0 = now_ms();
        ck_assert_int_eq(queue_ping(q), SL_ECONN);
        ck_assert_int_eq(dispatch(NULL, q, "cpu", "att-2"), SL_ECONN);
        ck_assert_int_eq(queue_read_steps(&b, q, "cpu", "w1", 1, 100), SL_ECONN);
        ck_assert_uint_eq(b.n, 0);
        ck_assert_int_eq(queue_has_message(&has, q, "cpu", "att-1"), SL_ECONN);
        int64_t took = now_ms() - t0;
        /* four calls, each at most one backoff (<= 250 ms) plus a refused connect */
        ck_assert_msg(took < 1500, "four calls took %lld ms", (long long)took);
    }
    ck_assert(!queue_is_connected(q));
    queue_close(q);

    /* A new server (a new address: the harness cannot reuse one): a new queue works,
     * creating its groups on demand. */
    ck_assert_int_eq(harness_redis_start(&own), 0);
    q = open_on(&own, "t_restart:");
    ck_assert(!has_message(q, "cpu", "att-1"));
    ck_assert_int_eq(dispatch(&id, q, "cpu", "att-1"), 0);
    ck_assert_int_eq(queue_read_steps(&b, q, "cpu", "w1", 10, 0), 0);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_int_eq(queue_ack_step(q, "cpu", &b.entries[0].id), 0);
    queue_batch_release(&b);
    ck_assert_int_eq(queue_read_events(&b, q, "sched", 10, 0), 0);
    ck_assert_uint_eq(b.n, 0);
    struct queue_stats st;
    ck_assert_int_eq(queue_event_stats(&st, q), 0);
    ck_assert_int_eq(st.length, 0);
    queue_close(q);
    ck_assert_int_eq(harness_redis_stop(&own), 0);
}
END_TEST

START_TEST(test_dispatch_many)
{
    struct queue *q = open_q("dm:");
    ck_assert_int_eq(dispatch(NULL, q, "default", "a.r.s.-1.1"), 0);
    cJSON *specs[3];
    struct queue_step_msg m[3] = {make_step("a.r.s.-1.1", &specs[0]),
                                  make_step("a.r.t.-1.1", &specs[1]),
                                  make_step("a.r.u.-1.1", &specs[2])};
    int results[3] = {99, 99, 99};
    ck_assert_int_eq(queue_dispatch_many(results, q, "default", m, 3), 0);
    ck_assert_int_eq(results[0], SL_EEXIST); /* sent before: idempotent per attempt */
    ck_assert_int_eq(results[1], 0);
    ck_assert_int_eq(results[2], 0);
    ck_assert_int_eq(queue_dispatch_many(results, q, "default", m, 3), 0);
    ck_assert_int_eq(results[1], SL_EEXIST);
    bool has = false;
    ck_assert_int_eq(queue_has_message(&has, q, "default", "a.r.u.-1.1"), 0);
    ck_assert(has);
    /* read back in order, each once */
    struct queue_batch b = QUEUE_BATCH_INIT;
    ck_assert_int_eq(queue_read_steps(&b, q, "default", "c1", 10, 0), 0);
    ck_assert_uint_eq(b.n, 3);
    ck_assert_str_eq(b.entries[1].step->attempt_id, "a.r.t.-1.1");
    ck_assert_str_eq(cJSON_GetObjectItem(b.entries[2].step->spec, "for")->valuestring,
                     "a.r.u.-1.1");
    queue_batch_release(&b);
    /* an invalid message sends nothing */
    m[1].attempt_id = "";
    ck_assert_int_eq(queue_dispatch_many(NULL, q, "other", m, 3), SL_EINVAL);
    struct queue_stats st;
    ck_assert_int_eq(queue_step_stats(&st, q, "other"), 0);
    ck_assert_int_eq(st.length, 0);
    for (int i = 0; i < 3; i++)
        cJSON_Delete(specs[i]);
    queue_close(q);
}
END_TEST

Suite *suite_integration_queue(void)
{
    Suite *s = suite_create("integration_queue");

    TCase *tc = tcase_create("shared");
    tcase_add_unchecked_fixture(tc, redis_setup, redis_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_dispatch_many);
    tcase_add_test(tc, test_step_round_trip);
    tcase_add_test(tc, test_blocking_read_wakes);
    tcase_add_test(tc, test_takeover);
    tcase_add_test(tc, test_msg_index);
    tcase_add_test(tc, test_malformed_steps);
    tcase_add_test(tc, test_events_redelivery);
    tcase_add_test(tc, test_events_adopt_many);
    tcase_add_test(tc, test_cancels_survive_reconnect);
    tcase_add_test(tc, test_heartbeats);
    tcase_add_test(tc, test_reconnect_and_lost_data);
    tcase_add_test(tc, test_command_timeout);
    tcase_add_test(tc, test_open_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("restart");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_server_restart);
    suite_add_tcase(s, tc);
    return s;
}
