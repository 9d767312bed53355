/*
 * worker/worker_redis.c - the worker's three Redis threads.
 *
 * queue/ is blocking (hiredis' blocking API), and the loop thread must never block: a
 * step's timeout, a child's exit or a cancel cannot wait for a Redis that takes seconds
 * to answer, or does not answer at all. So each kind of Redis traffic has a thread and a
 * connection of its own, and talks to the loop thread only through the shared vectors of
 * struct worker (under w->lock) and the wake-up async:
 *
 *   reader      waits until the worker has a free slot, then XREADGROUP (up to the free
 *               slots, blocking WORKER_READ_BLOCK_MS) - or, every takeover interval,
 *               XAUTOCLAIM of messages idle past the visibility timeout. Steps go to
 *               w->intake (and w->held goes up at once, so a slot is never promised twice);
 *               malformed entries are logged and acknowledged here.
 *   cancels     XREAD of the cancel stream (blocking), into w->cancels.
 *   publisher   drains w->outbox in order: a batch of events in one script call
 *               (queue_publish_events), then one ack call for the final events among them
 *               (queue_ack_steps), then tells the loop thread which jobs are done. Also
 *               the latest refresh and heartbeat asked for. Nothing is dropped when Redis
 *               is away: a failed batch stays at the head of the outbox and is tried again
 *               (the queue's reconnect backoff paces the retries) - until w->abandon_at_ms,
 *               the end of a stop.
 *
 * Ordering: a step's running event is staged before its final one, the outbox is FIFO and
 * one thread publishes it, so the two reach the stream in that order.
 */
#include "worker/worker_int.h"
#include "common/error.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "common/xalloc.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t worker_mono_ms(void)
{
    return (int64_t)(uv_hrtime() / 1000000);
}

int64_t worker_wall_ms(void)
{
    return sl_wall_ms();
}

/* Waits on cond for up to ms (lock held). */
static void timed_wait(uv_cond_t *cond, uv_mutex_t *lock, int64_t ms)
{
    (void)uv_cond_timedwait(cond, lock, (uint64_t)ms * 1000000);
}

/* --- Reader ----------------------------------------------------------------------- */

/* Hands the steps of b to the loop thread; acks and logs the malformed entries. */
static void reader_deliver(struct worker *w, struct queue_batch *b, bool taken_over)
{
    size_t n_steps = 0;
    for (size_t i = 0; i < b->n; i++) {
        struct queue_entry *e = &b->entries[i];
        if (e->step) {
            n_steps++;
            continue;
        }
        sl_warn(WORKER_LOG, "malformed message %s on queue \"%s\"%s: %s; acknowledged", e->id.s,
                w->queue, taken_over ? " (taken over)" : "", e->error ? e->error : "no step");
        int rc = queue_ack_step(w->q_read, w->queue, &e->id);
        if (rc < 0) /* it comes back by takeover, and is acked then */
            sl_warn(WORKER_LOG, "cannot acknowledge malformed message %s: %s", e->id.s,
                    sl_strerror(rc));
    }
    if (n_steps == 0)
        return;
    uv_mutex_lock(&w->lock);
    XGROW(w->intake, w->alloc_intake, w->n_intake + n_steps);
    for (size_t i = 0; i < b->n; i++) {
        struct queue_entry *e = &b->entries[i];
        if (!e->step)
            continue;
        w->intake[w->n_intake].id = e->id;
        w->intake[w->n_intake].msg = e->step;
        w->intake[w->n_intake].taken_over = taken_over;
        w->n_intake++;
        e->step = NULL;
    }
    w->held += n_steps;
    uv_async_send(&w->wake);
    uv_mutex_unlock(&w->lock);
}

void worker_reader_main(void *arg)
{
    struct worker *w = arg;
    int64_t next_takeover = 0; /* at once: messages a dead predecessor left */

    uv_mutex_lock(&w->lock);
    while (!w->reader_stop) {
        size_t free_slots = w->slots > w->held ? w->slots - w->held : 0;
        if (free_slots == 0) {
            uv_cond_wait(&w->reader_cond, &w->lock);
            continue;
        }
        uv_mutex_unlock(&w->lock);

        size_t max = free_slots < QUEUE_READ_MAX ? free_slots : QUEUE_READ_MAX;
        struct queue_batch b = QUEUE_BATCH_INIT;
        bool taken_over = false;
        int rc = 0;
        if (worker_mono_ms() >= next_takeover) {
            rc = queue_takeover(&b, w->q_read, w->queue, w->id, w->visibility_ms, max);
            next_takeover = worker_mono_ms() + w->takeover_ms;
            taken_over = true;
        }
        if (rc == 0 && b.n == 0) {
            queue_batch_release(&b);
            taken_over = false;
            rc = queue_read_steps(&b, w->q_read, w->queue, w->id, max, WORKER_READ_BLOCK_MS);
        }
        if (rc == 0)
            reader_deliver(w, &b, taken_over);
        queue_batch_release(&b);

        uv_mutex_lock(&w->lock);
        /* SL_ECONN is paced by the queue's backoff; anything else is paced here */
        if (rc < 0 && rc != SL_ECONN && !w->reader_stop)
            timed_wait(&w->reader_cond, &w->lock, WORKER_RETRY_PAUSE_MS);
    }
    uv_mutex_unlock(&w->lock);
}

/* --- Cancels ---------------------------------------------------------------------- */

void worker_cancel_main(void *arg)
{
    struct worker *w = arg;

    uv_mutex_lock(&w->lock);
    while (!w->cancel_stop) {
        uv_mutex_unlock(&w->lock);
        struct queue_batch b = QUEUE_BATCH_INIT;
        int rc = queue_read_cancels(&b, w->q_cancel, &w->cancel_after, 100, WORKER_READ_BLOCK_MS);
        uv_mutex_lock(&w->lock);
        for (size_t i = 0; rc == 0 && i < b.n; i++) {
            struct queue_entry *e = &b.entries[i];
            if (!e->cancel) {
                sl_warn(WORKER_LOG, "malformed cancel %s ignored: %s", e->id.s,
                        e->error ? e->error : "no cancel");
                continue;
            }
            XGROW(w->cancels, w->alloc_cancels, w->n_cancels + 1);
            w->cancels[w->n_cancels].id = e->id;
            w->cancels[w->n_cancels].msg = e->cancel;
            w->n_cancels++;
            e->cancel = NULL;
        }
        if (rc == 0 && b.n > 0)
            uv_async_send(&w->wake);
        queue_batch_release(&b);
        if (rc < 0 && rc != SL_ECONN && !w->cancel_stop)
            timed_wait(&w->reader_cond, &w->lock, WORKER_RETRY_PAUSE_MS);
    }
    uv_mutex_unlock(&w->lock);
}

/* --- Publisher -------------------------------------------------------------------- */

/* A final event that went out, whose message is still to be acknowledged. */
struct pending_ack {
    struct queue_id entry;
    struct worker_job *job;
};

/* The publisher's own state. */
struct publisher {
    struct worker *w;
    struct pending_ack *acks;
    size_t n_acks, alloc_acks;
};

/* Tells the loop thread that job is done (lock held). */
static void post_done(struct worker *w, struct worker_job *job, bool published)
{
    XGROW(w->done, w->alloc_done, w->n_done + 1);
    w->done[w->n_done].job = job;
    w->done[w->n_done].published = published;
    w->n_done++;
    uv_async_send(&w->wake);
}

/* Acks what is pending. Returns 0 or the queue's error (the acks stay pending). */
static int publisher_ack(struct publisher *p)
{
    struct worker *w = p->w;
    if (p->n_acks == 0)
        return 0;
    struct queue_id *ids = xcalloc(p->n_acks, sizeof(*ids));
    for (size_t i = 0; i < p->n_acks; i++)
        ids[i] = p->acks[i].entry;
    int rc = queue_ack_steps(w->q_pub, w->queue, ids, p->n_acks);
    free(ids);
    if (rc == SL_EIO || rc == SL_EINVAL) {
        /* Redis refused, and will again: the messages are taken over and run again. */
        sl_error(WORKER_LOG, "cannot acknowledge %zu message(s) of queue \"%s\": %s", p->n_acks,
                 w->queue, sl_strerror(rc));
        rc = 0;
    }
    if (rc == 0) {
        uv_mutex_lock(&w->lock);
        for (size_t i = 0; i < p->n_acks; i++)
            post_done(w, p->acks[i].job, true);
        uv_mutex_unlock(&w->lock);
        p->n_acks = 0;
    }
    return rc;
}

/* Publishes items (copied out of the outbox); on success queues the acks of the final
 * events among them. Returns 0 or the queue's error. */
static int publisher_send(struct publisher *p, struct worker_outbox_item *items, size_t n)
{
    struct worker *w = p->w;
    /* shallow copies: the strings and outputs stay the outbox's */
    struct queue_event_msg *evs = xcalloc(n, sizeof(*evs));
    for (size_t i = 0; i < n; i++)
        evs[i] = *items[i].ev;
    size_t bad = 0, k = n;
    int rc = queue_publish_events(NULL, &bad, w->q_pub, evs, k);
    while ((rc == SL_EINVAL || rc == SL_ETOOBIG) && bad < k) {
        /* Cannot happen with what the loop thread builds; never block the outbox on it. */
        sl_error(WORKER_LOG, "dropping an event of attempt \"%s\" that cannot be encoded: %s",
                 evs[bad].attempt_id, sl_strerror(rc));
        memmove(evs + bad, evs + bad + 1, (k - bad - 1) * sizeof(*evs));
        k--;
        rc = k ? queue_publish_events(NULL, &bad, w->q_pub, evs, k) : 0;
    }
    free(evs);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].job)
            continue;
        XGROW(p->acks, p->alloc_acks, p->n_acks + 1);
        p->acks[p->n_acks].entry = items[i].entry;
        p->acks[p->n_acks].job = items[i].job;
        p->n_acks++;
    }
    return 0;
}

/* Drops everything still unpublished at the end of a stop (lock held). */
static void publisher_abandon(struct publisher *p)
{
    struct worker *w = p->w;
    for (size_t i = w->outbox_head; i < w->n_outbox; i++) {
        struct worker_outbox_item *it = &w->outbox[i];
        if (it->job) {
            sl_error(WORKER_LOG,
                     "dropping the %s event of attempt \"%s\": Redis unreachable at stop; its "
                     "message stays pending and will be taken over",
                     queue_event_kind_name(it->ev->kind), it->ev->attempt_id);
            post_done(w, it->job, false);
        }
        queue_event_msg_free(it->ev);
    }
    w->outbox_head = w->n_outbox = 0;
    if (p->n_acks) {
        sl_error(WORKER_LOG,
                 "%zu message(s) left unacknowledged at stop: they will be taken over and run "
                 "again",
                 p->n_acks);
        for (size_t i = 0; i < p->n_acks; i++)
            post_done(w, p->acks[i].job, true);
        p->n_acks = 0;
    }
}

static void publisher_refresh(struct worker *w, struct queue_id *ids, uint64_t *serials, size_t n)
{
    enum queue_owner *owner = xcalloc(n ? n : 1, sizeof(*owner));
    int rc = queue_refresh(owner, w->q_pub, w->queue, w->id, ids, n);
    if (rc == 0) {
        uv_mutex_lock(&w->lock);
        bool any = false;
        for (size_t i = 0; i < n; i++) {
            if (owner[i] != QUEUE_OWNER_OTHER)
                continue;
            XGROW(w->lost, w->alloc_lost, w->n_lost + 1);
            w->lost[w->n_lost++] = serials[i];
            any = true;
        }
        if (any)
            uv_async_send(&w->wake);
        uv_mutex_unlock(&w->lock);
    }
    free(owner);
}

void worker_publisher_main(void *arg)
{
    struct publisher p = {.w = arg};
    struct worker *w = p.w;
    bool failed = false;

    uv_mutex_lock(&w->lock);
    for (;;) {
        bool events = w->outbox_head < w->n_outbox;
        bool work = events || w->refresh_pending || w->heartbeat || p.n_acks;
        if (w->abandon_at_ms && worker_mono_ms() >= w->abandon_at_ms && (events || p.n_acks)) {
            publisher_abandon(&p);
            continue;
        }
        if (!work && w->pub_stop)
            break;
        if (!work || failed) {
            /* after a failure, wait a little (or for new work) before trying again */
            if (failed)
                timed_wait(&w->pub_cond, &w->lock, WORKER_RETRY_PAUSE_MS);
            else
                uv_cond_wait(&w->pub_cond, &w->lock);
            failed = false;
            continue;
        }

        /* Take what there is to do; the outbox items stay in place until published. */
        struct queue_id *ids = NULL;
        uint64_t *serials = NULL;
        size_t n_ids = 0;
        if (w->refresh_pending) {
            ids = w->refresh_ids;
            serials = w->refresh_serials;
            n_ids = w->n_refresh;
            w->refresh_ids = NULL;
            w->refresh_serials = NULL;
            w->n_refresh = 0;
            w->refresh_pending = false;
        }
        cJSON *beat = w->heartbeat;
        w->heartbeat = NULL;
        size_t n = w->n_outbox - w->outbox_head;
        if (n > WORKER_PUBLISH_BATCH)
            n = WORKER_PUBLISH_BATCH;
        struct worker_outbox_item *items = NULL;
        if (n) {
            items = xcalloc(n, sizeof(*items));
            memcpy(items, w->outbox + w->outbox_head, n * sizeof(*items));
        }
        uv_mutex_unlock(&w->lock);

        /* Refreshes first: they keep the messages of running steps ours. */
        if (n_ids)
            publisher_refresh(w, ids, serials, n_ids);
        free(ids);
        free(serials);
        if (beat) {
            int rc = queue_heartbeat(NULL, w->q_pub, w->id, 3 * w->heartbeat_ms, beat);
            if (rc < 0)
                sl_debug(WORKER_LOG, "heartbeat failed: %s", sl_strerror(rc));
            cJSON_Delete(beat);
        }
        int rc = publisher_ack(&p);
        int sent = n ? publisher_send(&p, items, n) : 0;
        if (sent == 0 && n)
            rc = publisher_ack(&p);
        free(items);

        uv_mutex_lock(&w->lock);
        if (sent == 0 && n) {
            /* the loop thread only appends: the first n are still the ones sent */
            for (size_t i = 0; i < n; i++)
                queue_event_msg_free(w->outbox[w->outbox_head + i].ev);
            w->outbox_head += n;
            if (w->outbox_head == w->n_outbox) {
                w->outbox_head = w->n_outbox = 0;
            } else if (w->outbox_head > w->n_outbox / 2) {
                memmove(w->outbox, w->outbox + w->outbox_head,
                        (w->n_outbox - w->outbox_head) * sizeof(*w->outbox));
                w->n_outbox -= w->outbox_head;
                w->outbox_head = 0;
            }
        }
        failed = sent < 0 || rc < 0;
    }
    uv_mutex_unlock(&w->lock);

    int rc = queue_forget_worker(w->q_pub, w->id);
    if (rc < 0)
        sl_warn(WORKER_LOG, "cannot remove the heartbeat of worker \"%s\": %s", w->id,
                sl_strerror(rc));
    free(p.acks);
}
