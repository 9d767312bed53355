/*
 * tests/integration/check_scheduler.c - the scheduler daemon against real PostgreSQL and
 * Redis, driven by a scripted worker.
 *
 * The scheduler runs in a thread of the test (scheduler_run); the test itself plays the
 * worker through queue/ - reading step messages and publishing the events a script
 * decides - so every outcome (failures, lost workers, cancels) is exact and repeatable.
 * The real worker daemon has its own suite, and `sluice dag test` runs both together.
 */
#include "common/error.h"
#include "common/xalloc.h"
#include "queue/queue.h"
#include "scheduler/scheduler.h"
#include "store/store.h"
#include "tests/harness/harness.h"
#include "worker/worker.h"
#include "tests/harness/pgtest.h"
#include "tests/testutil.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct harness_redis redis;

static void redis_setup(void)
{
    ck_assert_int_eq(harness_redis_start(&redis), 0);
}

static void redis_teardown(void)
{
    harness_redis_stop(&redis);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- fixture: a database, Redis flushed, a DAG directory, a scheduler thread -------- */

struct fx {
    char *db_url;
    char *redis_url;
    char dags[64];
    struct store *st;
    struct queue *q;
    struct scheduler *sched[2];
    pthread_t thread[2];
    bool running[2];
    struct arena mem;
};

static void *sched_main(void *arg)
{
    scheduler_run(arg);
    return NULL;
}

static void write_dag(struct fx *f, const char *name, const char *yaml)
{
    char *path = xasprintf("%s/%s.yaml", f->dags, name);
    FILE *fp = fopen(path, "w");
    ck_assert_ptr_nonnull(fp);
    fputs(yaml, fp);
    fclose(fp);
    free(path);
}

static void start_scheduler(struct fx *f, int k, const char *id)
{
    struct scheduler_options o = {.database_url = f->db_url,
                                  .redis_url = f->redis_url,
                                  .id = id,
                                  .dags_dir = f->dags,
                                  .dags_interval_ms = 200,
                                  .reconcile_interval_ms = 200,
                                  .worker_timeout_ms = 1000,
                                  .requeue_after_ms = 500,
                                  .poll_interval_ms = 50};
    ck_assert_int_eq(scheduler_new(&f->sched[k], &o), 0);
    ck_assert_int_eq(pthread_create(&f->thread[k], NULL, sched_main, f->sched[k]), 0);
    f->running[k] = true;
}

static void stop_scheduler(struct fx *f, int k)
{
    if (!f->running[k])
        return;
    scheduler_request_stop(f->sched[k]);
    pthread_join(f->thread[k], NULL);
    scheduler_free(f->sched[k]);
    f->sched[k] = NULL;
    f->running[k] = false;
}

static void fx_init(struct fx *f, const char *db)
{
    memset(f, 0, sizeof(*f));
    arena_init(&f->mem);
    f->db_url = pgtest_fresh_db(db);
    f->redis_url = xasprintf("unix://%s", redis.socket_path);
    char *reply = NULL;
    ck_assert_int_eq(harness_redis_command(&reply, &redis, "FLUSHALL", NULL), 0);
    free(reply);
    snprintf(f->dags, sizeof(f->dags), "/tmp/sluice-sched-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(f->dags));
    struct strbuf err = STRBUF_INIT;
    ck_assert_int_eq(store_open(&f->st, f->db_url, NULL, &err), 0);
    strbuf_release(&err);
    ck_assert_int_eq(store_migrate(f->st, NULL, NULL), 0);
    ck_assert_int_eq(queue_open(&f->q, f->redis_url, NULL), 0);
}

static void fx_done(struct fx *f)
{
    stop_scheduler(f, 0);
    stop_scheduler(f, 1);
    store_close(f->st);
    queue_close(f->q);
    char *cmd = xasprintf("rm -rf '%s'", f->dags);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);
    free(f->db_url);
    free(f->redis_url);
    arena_release(&f->mem);
}

/* Waits until the DAG has a current version (the scheduler synced the directory). */
static void wait_dag(struct fx *f, const char *dag_id)
{
    int64_t deadline = now_ms() + 15000;
    for (;;) {
        struct store_dag d;
        if (store_dag_get(f->st, &d, dag_id, &f->mem) == 0 && d.current_version_id)
            return;
        ck_assert_msg(now_ms() < deadline, "DAG %s never synced", dag_id);
        nap(20);
    }
}

static struct store_run trigger(struct fx *f, const char *dag_id, const char *params)
{
    wait_dag(f, dag_id);
    struct store_run_new rn = {
        .dag_id = dag_id, .trigger = STORE_TRIGGER_MANUAL, .params_json = params};
    struct store_run r;
    bool existed;
    CK_STORE_OK(f->st, store_run_create(f->st, &r, &existed, &rn, &f->mem));
    return r;
}

static enum store_run_state run_state(struct fx *f, const struct store_run *r)
{
    struct store_run now;
    CK_STORE_OK(f->st, store_run_get_by_pk(f->st, &now, r->id, &f->mem));
    return now.state;
}

/* --- the scripted worker ---------------------------------------------------------- */

/* What the worker does with one attempt. */
struct outcome {
    bool ignore; /* take the message and never answer (a worker that died) */
    bool succeed;
    const char *outputs; /* JSON object, or NULL */
    const char *failure; /* "step", "transient", ... */
    int exit_code;
    bool hold; /* report running, then wait for a cancel */
};

typedef struct outcome (*script_fn)(const struct queue_step_msg *m, void *arg);

struct seen {
    char *attempt_ids[256];
    cJSON *specs[256];
    size_t n;
};

static void seen_release(struct seen *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->attempt_ids[i]);
        cJSON_Delete(s->specs[i]);
    }
    s->n = 0;
}

static const cJSON *seen_spec(const struct seen *s, const char *step, int attempt)
{
    for (size_t i = 0; i < s->n; i++) {
        const cJSON *st = cJSON_GetObjectItem(s->specs[i], "step");
        const cJSON *at = cJSON_GetObjectItem(s->specs[i], "attempt");
        if (!strcmp(st->valuestring, step) && at->valueint == attempt)
            return s->specs[i];
    }
    return NULL;
}

static void publish(struct fx *f, const char *attempt_id, enum queue_event_kind kind,
                    const char *worker, const struct outcome *o)
{
    cJSON *outputs = o && o->outputs ? cJSON_Parse(o->outputs) : NULL;
    struct queue_event_msg ev = {.attempt_id = (char *)attempt_id,
                                 .kind = kind,
                                 .worker_id = (char *)worker,
                                 .seq = kind == QUEUE_EVENT_RUNNING ? 1 : 2,
                                 .time_ms = now_ms(),
                                 .started_ms = now_ms(),
                                 .finished_ms = kind == QUEUE_EVENT_RUNNING ? 0 : now_ms(),
                                 .has_exit_code = kind == QUEUE_EVENT_FAILED,
                                 .exit_code = o ? o->exit_code : 0,
                                 .reason = kind == QUEUE_EVENT_FAILED ? "scripted failure" : NULL,
                                 .failure =
                                     kind == QUEUE_EVENT_FAILED && o ? (char *)o->failure : NULL,
                                 .outputs = outputs};
    ck_assert_int_eq(queue_publish_event(NULL, f->q, &ev), 0);
    cJSON_Delete(outputs);
}

/* Reports every step message of b as run and succeeded by "tw", acks it, and empties b.
 * Returns how many there were. */
static size_t succeed_all(struct fx *f, struct queue_batch *b)
{
    struct outcome ok = {.succeed = true};
    size_t n = b->n;
    for (size_t i = 0; i < b->n; i++) {
        publish(f, b->entries[i].step->attempt_id, QUEUE_EVENT_RUNNING, "tw", NULL);
        publish(f, b->entries[i].step->attempt_id, QUEUE_EVENT_SUCCEEDED, "tw", &ok);
        queue_ack_step(f->q, "default", &b->entries[i].id);
    }
    queue_batch_release(b);
    return n;
}

/*
 * Plays the worker "tw" until the run ends or the deadline passes: every message read is
 * answered as the script says. Held attempts are failed as cancelled when a cancel for
 * them arrives. Returns the run's final state.
 */
static enum store_run_state work_until_done(struct fx *f, const struct store_run *run,
                                            script_fn script, void *arg, struct seen *seen,
                                            int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    struct queue_id cancel_pos = {""};
    char *held[64];
    size_t n_held = 0;
    struct queue_batch cb = QUEUE_BATCH_INIT;
    ck_assert_int_eq(queue_read_cancels(&cb, f->q, &cancel_pos, 10, 0), 0);
    queue_batch_release(&cb);
    for (;;) {
        enum store_run_state st = run_state(f, run);
        if (st == STORE_RUN_SUCCEEDED || st == STORE_RUN_FAILED || st == STORE_RUN_CANCELLED) {
            for (size_t h = 0; h < n_held; h++)
                free(held[h]);
            return st;
        }
        ck_assert_msg(now_ms() < deadline, "run %s still %s", run->run_id,
                      store_run_state_name(st));
        struct queue_batch b = QUEUE_BATCH_INIT;
        ck_assert_int_eq(queue_read_steps(&b, f->q, "default", "tw", 100, 30), 0);
        for (size_t i = 0; i < b.n; i++) {
            const struct queue_step_msg *m = b.entries[i].step;
            ck_assert_ptr_nonnull(m);
            if (seen && seen->n < 256) {
                seen->attempt_ids[seen->n] = xstrdup(m->attempt_id);
                seen->specs[seen->n++] = cJSON_Duplicate(m->spec, true);
            }
            struct outcome o = script(m, arg);
            if (o.ignore)
                continue;
            publish(f, m->attempt_id, QUEUE_EVENT_RUNNING, "tw", NULL);
            if (o.hold) {
                held[n_held++] = xstrdup(m->attempt_id);
            } else {
                publish(f, m->attempt_id, o.succeed ? QUEUE_EVENT_SUCCEEDED : QUEUE_EVENT_FAILED,
                        "tw", &o);
            }
            queue_ack_step(f->q, "default", &b.entries[i].id);
        }
        queue_batch_release(&b);
        ck_assert_int_eq(queue_read_cancels(&cb, f->q, &cancel_pos, 100, 0), 0);
        for (size_t i = 0; i < cb.n; i++) {
            const struct queue_cancel_msg *c = cb.entries[i].cancel;
            for (size_t h = 0; c && h < n_held; h++) {
                if (held[h] && c->attempt_id && !strcmp(held[h], c->attempt_id)) {
                    struct outcome o = {.failure = "cancelled", .exit_code = 143};
                    publish(f, held[h], QUEUE_EVENT_FAILED, "tw", &o);
                    free(held[h]);
                    held[h] = NULL;
                }
            }
        }
        queue_batch_release(&cb);
        queue_heartbeat(NULL, f->q, "tw", 5000, NULL);
    }
}

static struct outcome all_succeed(const struct queue_step_msg *m, void *arg)
{
    (void)m;
    (void)arg;
    return (struct outcome){.succeed = true, .outputs = "{\"v\": \"42\"}"};
}

/* Finds the instance row of step (map_index) in a run. */
static const struct store_step_instance *step_row(struct fx *f, const struct store_run *r,
                                                  const char *step, int map_index,
                                                  struct store_step_instance **rows, size_t *n)
{
    CK_STORE_OK(f->st, store_steps_of_run(f->st, rows, n, r->id, 0, &f->mem));
    for (size_t i = 0; i < *n; i++)
        if (!strcmp((*rows)[i].step, step) && (*rows)[i].map_index == map_index)
            return &(*rows)[i];
    return NULL;
}

static const char *state_of(struct fx *f, const struct store_run *r, const char *step, int map)
{
    struct store_step_instance *rows;
    size_t n;
    const struct store_step_instance *row = step_row(f, r, step, map, &rows, &n);
    return row ? store_step_state_name(row->state) : "(none)";
}

/* --- tests --------------------------------------------------------------------------- */

START_TEST(test_chain_outputs_when_and_rules)
{
    struct fx f;
    fx_init(&f, "sched_chain");
    write_dag(&f, "chain",
              "name: chain\n"
              "params: {n: {type: integer, default: 3}}\n"
              "steps:\n"
              "  - name: a\n"
              "    command: [echo, \"{{ params.n }}\"]\n"
              "    outputs: {params: {v: v.txt}}\n"
              "  - name: b\n"
              "    depends_on: [a]\n"
              "    command: [echo, \"{{ steps.a.outputs.params.v }}\", \"{{ run.id }}\"]\n"
              "  - name: skipped\n"
              "    depends_on: [a]\n"
              "    when: steps.a.outputs.params.v < 10\n"
              "    command: [echo, never]\n"
              "  - name: after-skip\n"
              "    depends_on: [skipped]\n"
              "    command: [echo, never]\n"
              "  - name: always\n"
              "    depends_on: [skipped, b]\n"
              "    trigger_rule: all_done\n"
              "    command: [echo, done]\n");
    start_scheduler(&f, 0, "s0");
    struct store_run r = trigger(&f, "chain", "{\"n\": 7}");
    struct seen seen = {0};
    ck_assert_int_eq(work_until_done(&f, &r, all_succeed, NULL, &seen, 20000), STORE_RUN_SUCCEEDED);
    const cJSON *a = seen_spec(&seen, "a", 1);
    ck_assert_ptr_nonnull(a);
    ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(a, "command"), 1)->valuestring, "7");
    const cJSON *b = seen_spec(&seen, "b", 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(b, "command"), 1)->valuestring, "42");
    ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(b, "command"), 2)->valuestring,
                     r.run_id);
    ck_assert_str_eq(cJSON_GetObjectItem(b, "attempt_id")->valuestring,
                     arena_sprintf(&f.mem, "chain.%s.b.-1.1", r.run_id));
    ck_assert_ptr_null(seen_spec(&seen, "skipped", 1));
    ck_assert_str_eq(state_of(&f, &r, "a", -1), "succeeded");
    ck_assert_str_eq(state_of(&f, &r, "skipped", -1), "skipped");
    ck_assert_str_eq(state_of(&f, &r, "after-skip", -1), "skipped");
    ck_assert_str_eq(state_of(&f, &r, "always", -1), "succeeded");
    seen_release(&seen);
    fx_done(&f);
}
END_TEST

/* a fails for the step's own reason on attempt 1, succeeds on 2; c fails for good. */
static struct outcome flaky(const struct queue_step_msg *m, void *arg)
{
    (void)arg;
    if (!strcmp(m->step, "a") && m->attempt == 1)
        return (struct outcome){.failure = "step", .exit_code = 3};
    if (!strcmp(m->step, "c"))
        return (struct outcome){.failure = "step", .exit_code = 1};
    return (struct outcome){.succeed = true};
}

START_TEST(test_retries_failures_and_on_exit)
{
    struct fx f;
    fx_init(&f, "sched_retry");
    write_dag(&f, "retry",
              "name: retry\n"
              "steps:\n"
              "  - name: a\n"
              "    command: [x]\n"
              "    retries: {limit: 2, backoff: {initial: 0s}}\n"
              "  - name: c\n"
              "    depends_on: [a]\n"
              "    command: [x]\n"
              "  - name: d\n"
              "    depends_on: [c]\n"
              "    command: [x]\n"
              "on_exit:\n"
              "  - name: report\n"
              "    command: [echo, \"{{ run.state }}\"]\n");
    start_scheduler(&f, 0, "s0");
    struct store_run r = trigger(&f, "retry", NULL);
    struct seen seen = {0};
    ck_assert_int_eq(work_until_done(&f, &r, flaky, NULL, &seen, 20000), STORE_RUN_FAILED);
    ck_assert_ptr_nonnull(seen_spec(&seen, "a", 2));
    ck_assert_ptr_null(seen_spec(&seen, "a", 3));
    struct store_step_instance *rows;
    size_t n;
    const struct store_step_instance *a = step_row(&f, &r, "a", -1, &rows, &n);
    ck_assert_int_eq(a->attempt, 2);
    ck_assert_str_eq(store_step_state_name(a->state), "succeeded");
    const struct store_step_instance *c = step_row(&f, &r, "c", -1, &rows, &n);
    ck_assert_str_eq(store_step_state_name(c->state), "failed");
    ck_assert_int_eq(c->exit_code, 1);
    ck_assert_str_eq(state_of(&f, &r, "d", -1), "upstream_failed");
    const cJSON *rep = seen_spec(&seen, "report", 1);
    ck_assert_ptr_nonnull(rep);
    ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(rep, "command"), 1)->valuestring,
                     "failed");
    seen_release(&seen);
    fx_done(&f);
}
END_TEST

static struct outcome fan(const struct queue_step_msg *m, void *arg)
{
    (void)arg;
    if (!strcmp(m->step, "split"))
        return (struct outcome){.succeed = true,
                                .outputs = "{\"shards\": \"[\\\"x\\\", \\\"y\\\", \\\"z\\\"]\"}"};
    if (!strcmp(m->step, "work")) {
        static char out[64];
        snprintf(out, sizeof(out), "{\"n\": \"%d\"}", (int)m->map_index * 10);
        return (struct outcome){.succeed = true, .outputs = out};
    }
    return (struct outcome){.succeed = true};
}

START_TEST(test_fan_out_and_in)
{
    struct fx f;
    fx_init(&f, "sched_fan");
    write_dag(&f, "fan",
              "name: fan\n"
              "steps:\n"
              "  - name: split\n"
              "    command: [x]\n"
              "    outputs: {params: {shards: s.json}}\n"
              "  - name: work\n"
              "    depends_on: [split]\n"
              "    for_each: \"{{ steps.split.outputs.params.shards }}\"\n"
              "    command: [w, \"{{ item }}\"]\n"
              "    outputs: {params: {n: n.txt}}\n"
              "  - name: join\n"
              "    depends_on: [work]\n"
              "    command: [j, \"{{ steps.work.outputs.params.n }}\"]\n");
    start_scheduler(&f, 0, "s0");
    struct store_run r = trigger(&f, "fan", NULL);
    struct seen seen = {0};
    ck_assert_int_eq(work_until_done(&f, &r, fan, NULL, &seen, 20000), STORE_RUN_SUCCEEDED);
    ck_assert_str_eq(state_of(&f, &r, "work", 2), "succeeded");
    const cJSON *j = seen_spec(&seen, "join", 1);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "command"), 1)->valuestring,
                     "[\"0\",\"10\",\"20\"]");
    seen_release(&seen);
    fx_done(&f);
}
END_TEST

static struct outcome hold_b(const struct queue_step_msg *m, void *arg)
{
    bool *cancelled_sent = arg;
    (void)cancelled_sent;
    if (!strcmp(m->step, "b"))
        return (struct outcome){.hold = true};
    return (struct outcome){.succeed = true};
}

struct cancel_arg {
    struct fx *f;
    const struct store_run *r;
};

static void *cancel_later(void *p)
{
    struct cancel_arg *ca = p;
    struct store *st;
    struct strbuf err = STRBUF_INIT;
    if (store_open(&st, ca->f->db_url, NULL, &err) == 0) {
        /* once b runs */
        struct arena mem = ARENA_INIT;
        for (int i = 0; i < 500; i++) {
            struct store_step_instance *rows;
            size_t n;
            bool running = false;
            if (store_steps_of_run(st, &rows, &n, ca->r->id, STORE_STEP_MASK(STORE_STEP_RUNNING),
                                   &mem) == 0)
                for (size_t k = 0; k < n; k++)
                    running |= !strcmp(rows[k].step, "b");
            if (running)
                break;
            nap(20);
        }
        store_run_request_cancel(st, NULL, ca->r->dag_id, ca->r->run_id);
        arena_release(&mem);
        store_close(st);
    }
    strbuf_release(&err);
    return NULL;
}

START_TEST(test_cancel_stops_running_steps)
{
    struct fx f;
    fx_init(&f, "sched_cancel");
    write_dag(&f, "cancel",
              "name: cancel\n"
              "steps:\n"
              "  - {name: a, command: [x]}\n"
              "  - {name: b, depends_on: [a], command: [x]}\n"
              "  - {name: c, depends_on: [b], command: [x]}\n");
    start_scheduler(&f, 0, "s0");
    struct store_run r = trigger(&f, "cancel", NULL);
    struct cancel_arg ca = {&f, &r};
    pthread_t t;
    pthread_create(&t, NULL, cancel_later, &ca);
    ck_assert_int_eq(work_until_done(&f, &r, hold_b, NULL, NULL, 20000), STORE_RUN_CANCELLED);
    pthread_join(t, NULL);
    ck_assert_str_eq(state_of(&f, &r, "a", -1), "succeeded");
    ck_assert_str_eq(state_of(&f, &r, "b", -1), "cancelled");
    ck_assert_str_eq(state_of(&f, &r, "c", -1), "cancelled");
    fx_done(&f);
}
END_TEST

START_TEST(test_max_active_runs)
{
    struct fx f;
    fx_init(&f, "sched_max_active");
    write_dag(&f, "one",
              "name: one\nmax_active_runs: 1\n"
              "steps:\n  - {name: a, command: [x]}\n");
    start_scheduler(&f, 0, "s0");
    struct store_run r1 = trigger(&f, "one", "{}");
    struct store_run_new rn = {
        .dag_id = "one", .trigger = STORE_TRIGGER_MANUAL, .run_id = "second"};
    struct store_run r2;
    bool existed;
    CK_STORE_OK(f.st, store_run_create(f.st, &r2, &existed, &rn, &f.mem));
    /* take r1's message and sit on it: r2 must stay queued meanwhile */
    struct queue_batch b = QUEUE_BATCH_INIT;
    int64_t deadline = now_ms() + 10000;
    while (b.n == 0) {
        queue_batch_release(&b);
        ck_assert(now_ms() < deadline);
        ck_assert_int_eq(queue_read_steps(&b, f.q, "default", "tw", 10, 50), 0);
    }
    ck_assert_int_eq((int)b.n, 1);
    nap(500);
    ck_assert_int_eq(run_state(&f, &r2), STORE_RUN_QUEUED);
    ck_assert_int_eq(run_state(&f, &r1), STORE_RUN_RUNNING);
    succeed_all(&f, &b);
    ck_assert_int_eq(work_until_done(&f, &r2, all_succeed, NULL, NULL, 20000), STORE_RUN_SUCCEEDED);
    ck_assert_int_eq(run_state(&f, &r1), STORE_RUN_SUCCEEDED);
    fx_done(&f);
}
END_TEST

/* The first attempt of b goes to a "worker" that never answers nor heartbeats. */
static struct outcome b_lost_once(const struct queue_step_msg *m, void *arg)
{
    struct fx *f = arg;
    if (!strcmp(m->step, "b") && m->attempt == 1) {
        publish(f, m->attempt_id, QUEUE_EVENT_RUNNING, "ghost", NULL);
        return (struct outcome){.ignore = true};
    }
    return (struct outcome){.succeed = true};
}

START_TEST(test_dead_worker_step_is_lost_and_retried)
{
    struct fx f;
    fx_init(&f, "sched_lost");
    write_dag(&f, "lost",
              "name: lost\n"
              "steps:\n"
              "  - {name: a, command: [x]}\n"
              "  - name: b\n    depends_on: [a]\n    command: [x]\n"
              "    retries: {limit: 1, policy: on_transient, backoff: {initial: 0s}}\n");
    start_scheduler(&f, 0, "s0");
    struct store_run r = trigger(&f, "lost", NULL);
    ck_assert_int_eq(work_until_done(&f, &r, b_lost_once, &f, NULL, 20000), STORE_RUN_SUCCEEDED);
    struct store_step_instance *rows;
    size_t n;
    const struct store_step_instance *b = step_row(&f, &r, "b", -1, &rows, &n);
    ck_assert_int_eq(b->attempt, 2);
    /* the first attempt's record keeps why it ended */
    PGconn *c = pgtest_admin_connect(f.db_url);
    char *reason =
        pgtest_admin_value(c, "SELECT reason FROM attempts WHERE attempt_id LIKE 'lost.%.b.-1.1'");
    ck_assert_msg(reason && strstr(reason, "lost: worker ghost"), "reason: %s",
                  reason ? reason : "(null)");
    free(reason);
    PQfinish(c);
    fx_done(&f);
}
END_TEST

/* Redis loses the message of a queued step: the reconciler sends it again. */
static struct outcome drop_first_b(const struct queue_step_msg *m, void *arg)
{
    struct fx *f = arg;
    (void)f;
    if (!strcmp(m->step, "b") && m->attempt == 1) {
        static bool dropped;
        if (!dropped) {
            dropped = true;
            char *reply = NULL;
            /* the stream entry disappears as in a Redis restart without persistence */
            harness_redis_command(&reply, &redis, "DEL", "sluice:q:default", NULL);
            free(reply);
            return (struct outcome){.ignore = true};
        }
    }
    return (struct outcome){.succeed = true};
}

START_TEST(test_lost_message_is_resent)
{
    struct fx f;
    fx_init(&f, "sched_resend");
    write_dag(&f, "resend",
              "name: resend\nsteps:\n  - {name: a, command: [x]}\n"
              "  - {name: b, depends_on: [a], command: [x]}\n");
    start_scheduler(&f, 0, "s0");
    struct store_run r = trigger(&f, "resend", NULL);
    ck_assert_int_eq(work_until_done(&f, &r, drop_first_b, &f, NULL, 20000), STORE_RUN_SUCCEEDED);
    struct scheduler_stats stats;
    scheduler_get_stats(f.sched[0], &stats);
    ck_assert_uint_ge(stats.redispatched, 1);
    fx_done(&f);
}
END_TEST

START_TEST(test_malformed_events_are_dropped)
{
    struct fx f;
    fx_init(&f, "sched_malformed");
    write_dag(&f, "m", "name: m\nsteps:\n  - {name: a, command: [x]}\n");
    start_scheduler(&f, 0, "s0");
    char *reply = NULL;
    static const char *const junk[] = {"not json", "{\"v\":1}", "{\"v\":99,\"attempt_id\":\"x\"}",
                                       "{\"v\":1,\"attempt_id\":\"no-dots\",\"kind\":\"running\","
                                       "\"worker_id\":\"w\",\"seq\":1,\"time_ms\":1}"};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(
            harness_redis_command(&reply, &redis, "XADD", "sluice:events", "*", "m", junk[i], NULL),
            0);
        free(reply);
    }
    struct store_run r = trigger(&f, "m", NULL);
    ck_assert_int_eq(work_until_done(&f, &r, all_succeed, NULL, NULL, 20000), STORE_RUN_SUCCEEDED);
    ck_assert_int_eq(harness_redis_command(&reply, &redis, "XLEN", "sluice:events", NULL), 0);
    ck_assert_str_eq(reply, ":0\r\n"); /* acknowledged and deleted, junk included */
    free(reply);
    fx_done(&f);
}
END_TEST

START_TEST(test_restart_and_standby_takeover)
{
    struct fx f;
    fx_init(&f, "sched_takeover");
    write_dag(&f, "long",
              "name: long\nsteps:\n"
              "  - {name: s1, command: [x]}\n"
              "  - {name: s2, depends_on: [s1], command: [x]}\n"
              "  - {name: s3, depends_on: [s2], command: [x]}\n"
              "  - {name: s4, depends_on: [s3], command: [x]}\n");
    start_scheduler(&f, 0, "leader");
    wait_dag(&f, "long");
    start_scheduler(&f, 1, "standby");
    struct store_run r = trigger(&f, "long", NULL);
    /* run s1 and s2 under the first leader */
    struct queue_batch b = QUEUE_BATCH_INIT;
    for (int done = 0; done < 2;) {
        ck_assert_int_eq(queue_read_steps(&b, f.q, "default", "tw", 10, 100), 0);
        done += (int)succeed_all(&f, &b);
    }
    struct scheduler_stats s0, s1;
    scheduler_get_stats(f.sched[1], &s1);
    ck_assert_uint_eq(s1.leader_elections, 0);
    /* the leader goes away; the standby takes over and finishes the run */
    stop_scheduler(&f, 0);
    ck_assert_int_eq(work_until_done(&f, &r, all_succeed, NULL, NULL, 20000), STORE_RUN_SUCCEEDED);
    scheduler_get_stats(f.sched[1], &s1);
    ck_assert_uint_eq(s1.leader_elections, 1);
    (void)s0;
    /* every step ran exactly once: one attempt each */
    PGconn *c = pgtest_admin_connect(f.db_url);
    char *v = pgtest_admin_value(c, "SELECT count(*) || '/' || max(attempt) FROM attempts");
    ck_assert_str_eq(v, "4/1");
    free(v);
    PQfinish(c);
    fx_done(&f);
}
END_TEST

START_TEST(test_cron_creates_scheduled_runs)
{
    struct fx f;
    fx_init(&f, "sched_cron");
    write_dag(&f, "tick",
              "name: tick\nschedule: \"@every 1s\"\nstart_date: 2026-01-01\ncatchup: latest\n"
              "max_active_runs: 5\nsteps:\n  - {name: a, command: [x]}\n");
    start_scheduler(&f, 0, "s0");
    wait_dag(&f, "tick");
    int64_t deadline = now_ms() + 15000;
    struct store_run *runs = NULL;
    size_t n = 0;
    PGconn *c = pgtest_admin_connect(f.db_url);
    for (;;) {
        char *v = pgtest_admin_value(
            c, "SELECT count(*) FROM runs WHERE dag_id = 'tick' AND trigger = 'scheduled'");
        int count = (int)strtol(v, NULL, 10);
        free(v);
        if (count >= 2)
            break;
        ck_assert_msg(now_ms() < deadline, "only %d scheduled runs", count);
        /* keep them finishing so they do not pile up */
        struct queue_batch b = QUEUE_BATCH_INIT;
        queue_read_steps(&b, f.q, "default", "tw", 10, 50);
        succeed_all(&f, &b);
    }
    /* catchup latest: the backlog since 2026-01-01 was not run */
    char *v = pgtest_admin_value(c, "SELECT count(*) < 100 FROM runs WHERE dag_id = 'tick'");
    ck_assert_str_eq(v, "t");
    free(v);
    PQfinish(c);
    (void)runs;
    (void)n;
    fx_done(&f);
}
END_TEST

/* Every trigger rule, every retry policy and a pending timeout in one run. */
static struct outcome rules_script(const struct queue_step_msg *m, void *arg)
{
    (void)arg;
    static const struct {
        const char *step;
        const char *first_failure; /* the first attempt fails so; the next succeeds */
    } first[] = {
        {"pol-always", "error"},
        {"pol-on-failure", "error"},
        {"pol-on-error", "error"},
        {"pol-on-transient", "step"},
        {"pol-on-transient-2", "transient"},
    };
    if (!strcmp(m->step, "bad"))
        return (struct outcome){.failure = "step", .exit_code = 2};
    if (!strcmp(m->step, "pending"))
        return (struct outcome){.ignore = true};
    for (size_t i = 0; i < sizeof(first) / sizeof(first[0]); i++)
        if (!strcmp(m->step, first[i].step) && m->attempt == 1)
            return (struct outcome){.failure = first[i].first_failure, .exit_code = 1};
    return (struct outcome){.succeed = true};
}

START_TEST(test_every_trigger_rule_and_retry_policy)
{
    struct fx f;
    fx_init(&f, "sched_rules");
    write_dag(&f, "rules",
              "name: rules\n"
              "params: {go: {type: string, default: \"no\"}}\n"
              "defaults: {retries: {limit: 0}}\n"
              "steps:\n"
              "  - {name: ok, command: [x]}\n"
              "  - {name: bad, command: [x]}\n"
              "  - {name: skip, command: [x], when: \"params.go == 'yes'\"}\n"
              "  - {name: r-all-success, depends_on: [ok, bad], command: [x]}\n"
              "  - {name: r-all-success-skip, depends_on: [ok, skip], command: [x]}\n"
              "  - {name: r-all-done, depends_on: [ok, bad], trigger_rule: all_done, "
              "command: [x]}\n"
              "  - {name: r-all-failed, depends_on: [bad], trigger_rule: all_failed, "
              "command: [x]}\n"
              "  - {name: r-all-failed-mixed, depends_on: [ok, bad], trigger_rule: all_failed, "
              "command: [x]}\n"
              "  - {name: r-one-success, depends_on: [ok, bad], trigger_rule: one_success, "
              "command: [x]}\n"
              "  - {name: r-one-failed, depends_on: [ok, bad], trigger_rule: one_failed, "
              "command: [x]}\n"
              "  - {name: r-one-failed-none, depends_on: [ok], trigger_rule: one_failed, "
              "command: [x]}\n"
              "  - {name: r-none-failed, depends_on: [ok, skip], trigger_rule: none_failed, "
              "command: [x]}\n"
              "  - {name: r-none-failed-bad, depends_on: [ok, bad], trigger_rule: none_failed, "
              "command: [x]}\n"
              "  - {name: r-nfmos, depends_on: [skip], trigger_rule: "
              "none_failed_min_one_success, command: [x]}\n"
              "  - {name: r-nfmos-ok, depends_on: [ok, skip], trigger_rule: "
              "none_failed_min_one_success, command: [x]}\n"
              "  - {name: r-always, depends_on: [bad], trigger_rule: always, command: [x]}\n"
              "  - {name: pol-always, command: [x], retries: {limit: 1, policy: always, "
              "backoff: {initial: 0s}}}\n"
              "  - {name: pol-on-failure, command: [x], retries: {limit: 1, policy: on_failure, "
              "backoff: {initial: 0s}}}\n"
              "  - {name: pol-on-error, command: [x], retries: {limit: 1, policy: on_error, "
              "backoff: {initial: 0s}}}\n"
              "  - {name: pol-on-transient, command: [x], retries: {limit: 1, policy: "
              "on_transient, backoff: {initial: 0s}}}\n"
              "  - {name: pol-on-transient-2, command: [x], retries: {limit: 1, policy: "
              "on_transient, backoff: {initial: 0s}}}\n"
              "  - {name: pending, command: [x], pending_timeout: 1s}\n");
    start_scheduler(&f, 0, "s0");
    struct store_run r = trigger(&f, "rules", NULL);
    ck_assert_int_eq(work_until_done(&f, &r, rules_script, NULL, NULL, 30000), STORE_RUN_FAILED);
    static const struct {
        const char *step, *state;
        int attempt;
    } want[] = {
        {"ok", "succeeded", 1},
        {"bad", "failed", 1},
        {"skip", "skipped", 0},
        {"r-all-success", "upstream_failed", 0},
        {"r-all-success-skip", "skipped", 0},
        {"r-all-done", "succeeded", 1},
        {"r-all-failed", "succeeded", 1},
        {"r-all-failed-mixed", "skipped", 0},
        {"r-one-success", "succeeded", 1},
        {"r-one-failed", "succeeded", 1},
        {"r-one-failed-none", "skipped", 0},
        {"r-none-failed", "succeeded", 1},
        {"r-none-failed-bad", "upstream_failed", 0},
        {"r-nfmos", "skipped", 0},
        {"r-nfmos-ok", "succeeded", 1},
        {"r-always", "succeeded", 1},
        {"pol-always", "succeeded", 2},
        {"pol-on-failure", "failed", 1},
        {"pol-on-error", "succeeded", 2},
        {"pol-on-transient", "failed", 1},
        {"pol-on-transient-2", "succeeded", 2},
        {"pending", "failed", 1},
    };
    struct store_step_instance *rows;
    size_t n;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const struct store_step_instance *row = step_row(&f, &r, want[i].step, -1, &rows, &n);
        ck_assert_msg(row != NULL, "no row for %s", want[i].step);
        ck_assert_msg(!strcmp(store_step_state_name(row->state), want[i].state) &&
                          row->attempt == want[i].attempt,
                      "%s: %s attempt %d, expected %s attempt %d", want[i].step,
                      store_step_state_name(row->state), row->attempt, want[i].state,
                      want[i].attempt);
    }
    const struct store_step_instance *p = step_row(&f, &r, "pending", -1, &rows, &n);
    ck_assert_msg(p->reason && strstr(p->reason, "pending_timeout"), "reason %s",
                  p->reason ? p->reason : "(null)");
    fx_done(&f);
}
END_TEST

START_TEST(test_catchup_all_fills_the_day)
{
    struct fx f;
    fx_init(&f, "sched_catchup");
    /* hourly since midnight UTC today: catchup all creates every tick up to now */
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    char yaml[512];
    snprintf(yaml, sizeof(yaml),
             "name: hourly\nschedule: \"0 * * * *\"\nstart_date: %04d-%02d-%02d\n"
             "catchup: all\nmax_active_runs: 50\nsteps:\n  - {name: a, command: [x]}\n",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    write_dag(&f, "hourly", yaml);
    int hour = tm.tm_hour;
    start_scheduler(&f, 0, "s0");
    wait_dag(&f, "hourly");
    PGconn *c = pgtest_admin_connect(f.db_url);
    int64_t deadline = now_ms() + 30000;
    for (;;) {
        char *v = pgtest_admin_value(c, "SELECT count(*) FILTER (WHERE state = 'succeeded') "
                                        "|| ' ' || count(*) FROM runs");
        int done = 0, all = 0;
        ck_assert_int_eq(sscanf(v, "%d %d", &done, &all), 2); // NOLINT(cert-err34-c)
        free(v);
        if (done >= hour + 1 && done == all)
            break;
        ck_assert_msg(now_ms() < deadline, "%d of %d runs done, %d expected", done, all, hour + 1);
        struct queue_batch b = QUEUE_BATCH_INIT;
        queue_read_steps(&b, f.q, "default", "tw", 100, 50);
        succeed_all(&f, &b);
    }
    /* one run per tick, the tick is the logical time, none twice */
    char *v = pgtest_admin_value(
        c, "SELECT count(DISTINCT logical_time) = count(*) AND "
           "bool_and(extract(minute FROM logical_time) = 0) AND "
           "min(logical_time) = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' "
           "FROM runs");
    ck_assert_str_eq(v, "t");
    free(v);
    PQfinish(c);
    fx_done(&f);
}
END_TEST

START_TEST(test_overlap_forbid_waits_for_the_active_run)
{
    struct fx f;
    fx_init(&f, "sched_overlap");
    write_dag(&f, "ov",
              "name: ov\nschedule: \"@every 1s\"\nstart_date: 2026-01-01\ncatchup: latest\n"
              "overlap: forbid\nmax_active_runs: 5\nsteps:\n  - {name: a, command: [x]}\n");
    start_scheduler(&f, 0, "s0");
    wait_dag(&f, "ov");
    PGconn *c = pgtest_admin_connect(f.db_url);
    /* take the first run's step and sit on it for 3 s: ticks keep coming, none may start
     * a run while that one is active */
    struct queue_batch b = QUEUE_BATCH_INIT;
    int64_t deadline = now_ms() + 10000;
    while (b.n == 0) {
        queue_batch_release(&b);
        ck_assert(now_ms() < deadline);
        ck_assert_int_eq(queue_read_steps(&b, f.q, "default", "tw", 10, 50), 0);
    }
    nap(3000);
    char *v = pgtest_admin_value(c, "SELECT count(*) FROM runs");
    ck_assert_str_eq(v, "1");
    free(v);
    succeed_all(&f, &b);
    /* once it ended, the next tick gets a run */
    deadline = now_ms() + 10000;
    for (;;) {
        v = pgtest_admin_value(c, "SELECT count(*) FROM runs");
        bool two = strcmp(v, "1") != 0;
        free(v);
        if (two)
            break;
        ck_assert_msg(now_ms() < deadline, "no second run after the first ended");
        nap(50);
    }
    PQfinish(c);
    fx_done(&f);
}
END_TEST

START_TEST(test_step_timeout_with_the_real_worker)
{
    struct fx f;
    fx_init(&f, "sched_timeout");
    write_dag(&f, "slow",
              "name: slow\nsteps:\n"
              "  - {name: nap, command: [/bin/sleep, \"30\"], timeout: 1s, retries: 0}\n"
              "  - {name: after, depends_on: [nap], trigger_rule: all_done, "
              "command: [/bin/true]}\n");
    start_scheduler(&f, 0, "s0");
    char logs[96], work[96];
    snprintf(logs, sizeof(logs), "%s/logs", f.dags);
    snprintf(work, sizeof(work), "%s/work", f.dags);
    struct worker_options wo = {.redis_url = f.redis_url,
                                .id = "real",
                                .slots = 2,
                                .executor = WORKER_EXEC_LOCAL,
                                .log_root = logs,
                                .work_root = work,
                                .kill_grace_ms = 500,
                                /* the fixture's scheduler counts a worker lost after 1 s
                                 * without a heartbeat (worker_timeout_ms): a slow timeout
                                 * on a loaded machine must not look like a lost worker */
                                .heartbeat_interval_ms = 200};
    struct worker *w;
    ck_assert_int_eq(worker_start(&w, &wo), 0);
    struct store_run r = trigger(&f, "slow", NULL);
    int64_t t0 = now_ms();
    int64_t deadline = t0 + 20000;
    while (run_state(&f, &r) != STORE_RUN_SUCCEEDED && run_state(&f, &r) != STORE_RUN_FAILED) {
        ck_assert_msg(now_ms() < deadline, "run still %s", store_run_state_name(run_state(&f, &r)));
        nap(50);
    }
    ck_assert_int_lt(now_ms() - t0, 15000); /* stopped, not slept out */
    struct store_step_instance *rows;
    size_t n;
    const struct store_step_instance *nap_row = step_row(&f, &r, "nap", -1, &rows, &n);
    ck_assert_str_eq(store_step_state_name(nap_row->state), "failed");
    ck_assert_msg(nap_row->reason && strstr(nap_row->reason, "timeout"), "reason %s",
                  nap_row->reason ? nap_row->reason : "(null)");
    ck_assert_str_eq(state_of(&f, &r, "after", -1), "succeeded");
    worker_stop(w);
    worker_join(w);
    fx_done(&f);
}
END_TEST

Suite *suite_integration_scheduler(void)
{
    Suite *s = suite_create("integration_scheduler");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, pgtest_setup, pgtest_teardown);
    tcase_add_unchecked_fixture(tc, redis_setup, redis_teardown);
    tcase_add_test(tc, test_chain_outputs_when_and_rules);
    tcase_add_test(tc, test_retries_failures_and_on_exit);
    tcase_add_test(tc, test_every_trigger_rule_and_retry_policy);
    tcase_add_test(tc, test_fan_out_and_in);
    tcase_add_test(tc, test_cancel_stops_running_steps);
    tcase_add_test(tc, test_max_active_runs);
    tcase_add_test(tc, test_dead_worker_step_is_lost_and_retried);
    tcase_add_test(tc, test_lost_message_is_resent);
    tcase_add_test(tc, test_malformed_events_are_dropped);
    tcase_add_test(tc, test_restart_and_standby_takeover);
    tcase_add_test(tc, test_cron_creates_scheduled_runs);
    tcase_add_test(tc, test_catchup_all_fills_the_day);
    tcase_add_test(tc, test_overlap_forbid_waits_for_the_active_run);
    tcase_add_test(tc, test_step_timeout_with_the_real_worker);
    suite_add_tcase(s, tc);
    return s;
}
