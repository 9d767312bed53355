/*
 * scheduler/engine.h - the run engine: a pure state machine over one run's steps.
 *
 * The engine decides what a run does next. It is given the DAG model, the run's
 * current state and one event (the run starts, an attempt is running, succeeded
 * or failed, time passed, the run is cancelled) and it returns the transitions
 * that follow and the actions to take (dispatch an attempt, stop one, end the
 * run). It does no I/O and reads no clock: `now_ms` comes with every event. So
 * it is tested exhaustively without servers, and the scheduler around it only
 * persists the transitions in one transaction, then performs the actions.
 *
 * Step instance states (DESIGN.md):
 *
 *   pending --> queued --> running --> succeeded
 *      |          |           |------> failed
 *      |          |           '------> up_for_retry --(backoff)--> queued (attempt + 1)
 *      |          '--> failed (pending_timeout) / cancelled
 *      |--> skipped          (when: false, trigger rule, empty fan-out)
 *      |--> upstream_failed  (trigger rule)
 *      '--> cancelled        (run cancelled before it started)
 *
 * A step with `for_each` has one instance per item (map_index 0..n-1) once its
 * trigger rule lets it run; before that it is one placeholder instance with
 * map_index -1 that carries the step's own state (pending, skipped,
 * upstream_failed, cancelled, or failed when its items could not be computed).
 *
 * Trigger rules, skip propagation, retries and on_exit follow docs/dsl.md; the
 * run's outcome follows docs/engine.md.
 *
 * Memory: an engine_run is created from a model and owned by the caller
 * (engine_run_free). Actions are appended to a struct engine_actions the
 * caller owns and clears; dispatch actions carry a cJSON spec the actions list
 * owns. Not thread-safe: one run is driven by one thread at a time.
 */
#ifndef SLUICE_SCHEDULER_ENGINE_H
#define SLUICE_SCHEDULER_ENGINE_H

#include "dsl/dsl.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum engine_state {
    ENGINE_PENDING,
    ENGINE_QUEUED,
    ENGINE_RUNNING,
    ENGINE_SUCCEEDED,
    ENGINE_FAILED,
    ENGINE_UP_FOR_RETRY,
    ENGINE_CANCELLED,
    ENGINE_SKIPPED,
    ENGINE_UPSTREAM_FAILED,
};

enum engine_run_state {
    ENGINE_RUN_QUEUED,
    ENGINE_RUN_RUNNING,
    ENGINE_RUN_SUCCEEDED,
    ENGINE_RUN_FAILED,
    ENGINE_RUN_CANCELLING,
    ENGINE_RUN_CANCELLED,
};

/* Why an attempt failed, which decides whether the retry policy retries it. */
enum engine_failure {
    ENGINE_FAIL_STEP,      /* the step's own doing: exit code, timeout, OOM, missing output */
    ENGINE_FAIL_ERROR,     /* infrastructure, not transient: image pull, pending timeout */
    ENGINE_FAIL_TRANSIENT, /* infrastructure, transient: lost worker, eviction, API error */
    ENGINE_FAIL_CANCELLED, /* stopped because the run was cancelled: never retried */
};

struct engine_instance {
    size_t step;   /* index into engine_run.steps */
    int map_index; /* -1, or the fan-out item's index */
    enum engine_state state;
    int attempt; /* 0 before the first dispatch, then 1, 2, ... */
    int64_t queued_at_ms;
    int64_t started_at_ms;
    int64_t ended_at_ms;
    int64_t next_try_at_ms; /* when up_for_retry: when to queue the next attempt */
    bool stop_sent;         /* a stop action was issued for the current attempt */
    bool in_ready;          /* private: waiting in run->ready for a slot */
    int exit_code;          /* of the last attempt; -1 when none */
    char *reason;           /* of the last failure or skip, or NULL; owned */
    cJSON *outputs;         /* output params {name: string} once succeeded; owned */
    cJSON *item;            /* the fan-out item, or NULL; owned */
};

struct engine_step {
    const struct dsl_step *def;
    bool on_exit;
    size_t self;   /* its own instance (map_index -1): the step's state as others see it */
    bool expanded; /* for_each evaluated: the items are run->inst[first .. first + count) */
    size_t first;
    size_t count;
    size_t *dependents; /* steps whose depends_on names this one (private) */
    size_t n_dependents;
};

struct engine_run {
    const struct dsl_dag *dag; /* not owned; must outlive the run */
    enum engine_run_state state;
    char *run_id;
    char *logical_time;        /* RFC 3339 UTC */
    char *dag_dir;             /* for {{ dag.dir }} */
    char *repo_url, *commit;   /* the DAG repository and the run's commit, for inputs
                                * "from: git" (engine_run_set_repo); NULL: none */
    cJSON *params;             /* the run's values, defaults filled in; owned */
    struct engine_step *steps; /* dag->steps then dag->on_exit */
    size_t n_steps;
    size_t n_main;
    struct engine_instance *inst; /* grows when a step fans out */
    size_t n_inst;
    size_t alloc_inst; /* private */
    /* private: */
    cJSON *ctx;    /* expression context, updated as steps finish */
    size_t *ready; /* instances cleared to run, waiting for a slot, in order */
    size_t n_ready, alloc_ready;
    size_t active;      /* instances queued or running */
    bool exit_started;  /* on_exit steps have been released */
    char *main_outcome; /* run.state as on_exit steps see it */
};

enum engine_event_kind {
    ENGINE_EV_START,     /* the run was admitted: queued -> running */
    ENGINE_EV_RUNNING,   /* an attempt started on a worker */
    ENGINE_EV_SUCCEEDED, /* an attempt ended with exit 0 and its outputs */
    ENGINE_EV_FAILED,    /* an attempt ended otherwise */
    ENGINE_EV_TICK,      /* time passed: retries, timeouts */
    ENGINE_EV_CANCEL,    /* the user cancelled the run */
};

struct engine_event {
    enum engine_event_kind kind;
    int64_t now_ms;
    /* for RUNNING, SUCCEEDED, FAILED: which attempt */
    const char *step;
    int map_index;
    int attempt;
    /* SUCCEEDED: output params {name: string} (borrowed; copied) */
    const cJSON *outputs;
    /* FAILED */
    enum engine_failure failure;
    int exit_code;
    const char *reason; /* "exit code 3", "timeout", "lost", "OOMKilled", ... */
};

enum engine_action_kind {
    ENGINE_ACT_TRANSITION, /* persist: instance from -> to (an events row) */
    ENGINE_ACT_DISPATCH,   /* send attempt to the queue (after commit) */
    ENGINE_ACT_STOP,       /* stop the running or queued attempt (cancel, timeout) */
    ENGINE_ACT_RUN_STATE,  /* the run moved to run_state */
};

struct engine_action {
    enum engine_action_kind kind;
    size_t inst; /* index into run->inst (TRANSITION, DISPATCH, STOP) */
    int attempt;
    enum engine_state from, to;      /* TRANSITION */
    enum engine_run_state run_state; /* RUN_STATE */
    cJSON *spec;                     /* DISPATCH: the rendered step; owned by the list */
    const char *reason;              /* TRANSITION, STOP: static or owned by the instance */
};

struct engine_actions {
    struct engine_action *v;
    size_t n;
    size_t alloc; /* private */
};

void engine_actions_init(struct engine_actions *a);
/* Frees the specs and empties the list (keeps it usable). */
void engine_actions_clear(struct engine_actions *a);
void engine_actions_release(struct engine_actions *a);

/*
 * Creates the in-memory state of a new run of dag: every step pending, the run
 * queued. params are the run's given values (NULL for none): defaults are
 * filled in here; they must already be valid (see engine_check_params). Strings
 * are copied. Returns 0 or SL_EINVAL.
 */
int engine_run_new(struct engine_run **out, const struct dsl_dag *dag, const char *run_id,
                   const char *logical_time, const char *dag_dir, const cJSON *params);
/* The DAG's repository (a URL without credentials) and the commit the run is pinned to:
 * dispatch specs of steps with an input "from: git" carry them as "repo" {url, commit}.
 * Copies both; NULLs clear them. */
void engine_run_set_repo(struct engine_run *run, const char *url, const char *commit);
void engine_run_free(struct engine_run *run);

/* One persisted step instance, as the store returns it after a restart. */
struct engine_row {
    const char *step;
    int map_index;
    enum engine_state state;
    int attempt;
    int64_t queued_at_ms, started_at_ms, ended_at_ms, next_try_at_ms; /* 0 when unset */
    int exit_code;
    const char *reason;   /* or NULL */
    const cJSON *outputs; /* or NULL (borrowed; copied) */
    const cJSON *item;    /* fan-out item, or NULL (borrowed; copied) */
};

/*
 * Rebuilds a run from its persisted rows (a scheduler restarted, or a new leader
 * took over): like engine_run_new(), then every row's state, then the run state.
 * A running or cancelling run is then advanced at now_ms exactly as after an
 * event, so that steps left undecided by a crash between two writes are decided
 * now; what follows is appended to out (usually nothing, or the dispatches a
 * crash interrupted). Rows naming unknown steps are an error (SL_EINVAL): the
 * run's pinned version must be the model given.
 */
int engine_run_restore(struct engine_run **out, const struct dsl_dag *dag, const char *run_id,
                       const char *logical_time, const char *dag_dir, const cJSON *params,
                       enum engine_run_state state, const struct engine_row *rows, size_t n_rows,
                       int64_t now_ms, struct engine_actions *actions);

/*
 * Checks a run's parameters against the DAG: unknown names, wrong types,
 * values outside enums, required parameters missing. Returns 0, or SL_EINVAL
 * with one line per problem appended to errors ("param 'n': expected integer,
 * got string"). Pure.
 */
int engine_check_params(const struct dsl_dag *dag, const cJSON *params, struct strbuf *errors);

/*
 * Applies one event and appends what follows to out. Events that do not match
 * the current attempt and state (a redelivered or stale message) change
 * nothing and return 0: redelivery is harmless. Returns SL_EINVAL for an event
 * naming an unknown step. Deterministic: same run, same event, same actions.
 */
int engine_apply(struct engine_run *run, const struct engine_event *ev, struct engine_actions *out);

/*
 * Renders the dispatch spec of instance i's current attempt again, exactly as its
 * DISPATCH action carried it: for the reconciler, which re-sends a queued attempt whose
 * message was lost. Returns the spec (caller cJSON_Delete()s it), or NULL with the
 * reason in err. Changes nothing in the run.
 */
cJSON *engine_render_spec(struct engine_run *run, size_t i, char *err, size_t errlen);

/* The earliest time a TICK could change something (a retry due, a timeout), or
 * INT64_MAX when nothing is waiting on time. */
int64_t engine_next_wakeup(const struct engine_run *run);

/* True once the run is succeeded, failed or cancelled. */
bool engine_run_done(const struct engine_run *run);

const char *engine_state_name(enum engine_state s);
const char *engine_run_state_name(enum engine_run_state s);
/* Parses a state name; returns 0 or SL_EINVAL. */
int engine_state_parse(enum engine_state *out, const char *name);
bool engine_state_is_done(
    enum engine_state s); /* succeeded, failed, cancelled, skipped, upstream_failed */

/* The attempt id of instance i's current attempt: "<dag>.<run_id>.<step>.<map>.<attempt>",
 * written into buf (at least ENGINE_ATTEMPT_ID_MAX bytes). Unique across DAGs (run ids
 * are unique per DAG only). DAG and step names have no '.', so it splits unambiguously
 * (engine_attempt_id_split). */
#define ENGINE_ATTEMPT_ID_MAX 512
void engine_attempt_id(const struct engine_run *run, size_t i, char *buf, size_t len);

/* The parts of an attempt id, pointing into the id (not NUL-terminated: lengths given). */
struct engine_attempt_ref {
    const char *dag, *run_id, *step;
    size_t dag_len, run_id_len, step_len;
    int map_index;
    int attempt;
};
/* Splits an attempt id made by engine_attempt_id(). Returns 0 or SL_EINVAL. Pure. */
int engine_attempt_id_split(struct engine_attempt_ref *out, const char *id);

#endif
