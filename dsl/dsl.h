/*
 * dsl/dsl.h - the DAG language: a YAML file in, a validated DAG model out.
 *
 * This header is the contract of dsl/ for every other module. The language is
 * documented for users in docs/dsl.md; this file says how code uses it.
 *
 * Parsing is pure: the only I/O is reading the file it is given (and, through
 * common/tz, the system's time zone database to check `timezone`). A parse
 * either yields a complete, valid model or no model and a list of diagnostics,
 * every problem in the file at once, each as file:line:column: message.
 *
 * Memory: a struct dsl_dag owns one arena; every string and array reachable
 * from it lives there and dies with dsl_dag_free(). Nothing in the model is
 * ever modified after the parse, so a model may be read from any thread.
 *
 * The normalized model (dsl_dag_to_json) uses the language's own keys with
 * every default filled in and `defaults:` merged into the steps. Since JSON is
 * YAML, parsing that JSON yields the same model: it is what a DAG version
 * stores, and what a run pinned to that version is executed from.
 */
#ifndef SLUICE_DSL_DSL_H
#define SLUICE_DSL_DSL_H

#include "common/arena.h"
#include "common/strbuf.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define DSL_DEFAULT_MAX_BYTES ((size_t)1 << 20) /* 1 MiB */
#define DSL_MAX_DIAGS         100               /* errors reported per file */
#define DSL_NAME_MAX          63                /* DNS-1123 label length */

/* --- diagnostics ------------------------------------------------------------------ */

struct dsl_diag {
    const char *file; /* as given to the parser */
    int line;         /* 1-based; 0 when the problem is the file as a whole */
    int col;          /* 1-based; 0 when unknown */
    const char *msg;  /* lower-case, no final period */
};

/* A list of diagnostics; owns its strings. Sorted by position once the parse ends. */
struct dsl_diags {
    struct dsl_diag *items;
    size_t n;
    size_t alloc;     /* private */
    size_t dropped;   /* errors past DSL_MAX_DIAGS, counted but not kept */
    struct arena mem; /* private: the strings */
};

void dsl_diags_init(struct dsl_diags *d);
void dsl_diags_release(struct dsl_diags *d);
void dsl_diags_add(struct dsl_diags *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Writes one "file:line:column: message" line per diagnostic. */
void dsl_diags_print(const struct dsl_diags *d, FILE *out);

/* --- the model -------------------------------------------------------------------- */

enum dsl_trigger_rule {
    DSL_TRIGGER_ALL_SUCCESS, /* the default */
    DSL_TRIGGER_ALL_DONE,
    DSL_TRIGGER_ALL_FAILED,
    DSL_TRIGGER_ONE_SUCCESS,
    DSL_TRIGGER_ONE_FAILED,
    DSL_TRIGGER_NONE_FAILED,
    DSL_TRIGGER_NONE_FAILED_MIN_ONE_SUCCESS,
    DSL_TRIGGER_ALWAYS,
};

enum dsl_retry_policy {
    DSL_RETRY_ALWAYS,       /* the default: any failure or error */
    DSL_RETRY_ON_FAILURE,   /* the step's own failure: non-zero exit, timeout, OOM */
    DSL_RETRY_ON_ERROR,     /* infrastructure errors: lost worker, eviction, image pull */
    DSL_RETRY_ON_TRANSIENT, /* transient errors only: lost worker, eviction, API errors */
};

enum dsl_catchup { DSL_CATCHUP_NONE, DSL_CATCHUP_LATEST, DSL_CATCHUP_ALL };
enum dsl_overlap { DSL_OVERLAP_ALLOW, DSL_OVERLAP_FORBID, DSL_OVERLAP_REPLACE };

enum dsl_param_type {
    DSL_PARAM_STRING,
    DSL_PARAM_INTEGER,
    DSL_PARAM_NUMBER,
    DSL_PARAM_BOOLEAN,
    DSL_PARAM_ARRAY,
    DSL_PARAM_OBJECT,
};

struct dsl_pos {
    int line; /* 1-based */
    int col;  /* 1-based */
};

struct dsl_kv {
    const char *key;
    const char *value;
};

struct dsl_param {
    const char *name;
    enum dsl_param_type type;
    const char *default_json; /* compact JSON of the default, or NULL */
    const char *enum_json;    /* compact JSON array of allowed values, or NULL */
    bool required;            /* a run must give it (only without a default) */
    const char *description;  /* or NULL */
};

struct dsl_env {
    const char *name;
    const char *value;       /* a template; NULL when from a secret */
    const char *secret_name; /* from_secret.name, or NULL */
    const char *secret_key;  /* from_secret.key, or NULL */
};

struct dsl_resources {
    const char *cpu;      /* as written ("500m", "2"), or NULL */
    int64_t cpu_millis;   /* 0 when unset */
    const char *memory;   /* as written ("2Gi"), or NULL */
    int64_t memory_bytes; /* 0 when unset */
    int64_t gpu;          /* whole devices; 0 when unset */
};

struct dsl_toleration {
    const char *key;    /* or NULL (matches every key, with operator Exists) */
    const char *op;     /* "Equal" or "Exists" */
    const char *value;  /* or NULL */
    const char *effect; /* "NoSchedule", "PreferNoSchedule", "NoExecute", or NULL */
    int64_t seconds;    /* tolerationSeconds; -1 when unset */
};

struct dsl_retry {
    int64_t limit; /* retries after the first attempt; 0 = none */
    enum dsl_retry_policy policy;
    int64_t backoff_initial_ms;
    double backoff_factor;
    int64_t backoff_max_ms;
};

struct dsl_output {
    const char *name;
    const char *path; /* relative to the step's working directory, or absolute */
};

struct dsl_input_artifact {
    const char *name;
    const char *from; /* a template naming an upstream artifact, or a URI (s3://, file://) */
    const char *path; /* where the step finds it */
};

struct dsl_step {
    const char *name;
    struct dsl_pos pos; /* of the step's mapping */
    bool on_exit;       /* declared under on_exit: */

    const char **depends_on; /* step names, as written */
    size_t n_depends_on;
    size_t *deps; /* indices into dag->steps (on_exit steps: into dag->on_exit) */

    enum dsl_trigger_rule trigger_rule;
    const char *when; /* an expression, or NULL */

    const char *image;    /* or NULL (the local executor runs on the worker's host) */
    const char **command; /* argv templates; may be empty when image sets an entrypoint */
    size_t n_command;
    const char **args;
    size_t n_args;
    struct dsl_env *env;
    size_t n_env;
    const char *workdir; /* or NULL */

    struct dsl_resources resources;
    const char *queue; /* never NULL: "default" unless set */
    struct dsl_kv *node_selector;
    size_t n_node_selector;
    struct dsl_toleration *tolerations;
    size_t n_tolerations;

    struct dsl_retry retries;
    int64_t timeout_ms;         /* 0 = none */
    int64_t pending_timeout_ms; /* 0 = none */

    const char *for_each_json; /* literal fan-out list as compact JSON, or NULL */
    const char *for_each_expr; /* "{{ expr }}" yielding a list at run time, or NULL */
    int64_t max_parallel;      /* fan-out instances at once; 0 = unlimited */

    struct dsl_output *output_params;
    size_t n_output_params;
    struct dsl_output *output_artifacts;
    size_t n_output_artifacts;
    struct dsl_input_artifact *input_artifacts;
    size_t n_input_artifacts;

    struct dsl_kv *labels;
    size_t n_labels;
    struct dsl_kv *annotations;
    size_t n_annotations;
};

struct dsl_dag {
    struct arena mem; /* private: owns everything below */
    const char *file;

    const char *name;
    const char *description; /* or NULL */
    const char **tags;
    size_t n_tags;

    const char *schedule;   /* as written, or NULL for manual-only DAGs */
    const char *timezone;   /* IANA name; "UTC" unless set */
    const char *start_date; /* normalized RFC 3339 UTC, or NULL */
    const char *end_date;   /* normalized RFC 3339 UTC, or NULL */
    int64_t start_unix;     /* valid when start_date != NULL */
    int64_t end_unix;       /* valid when end_date != NULL */
    enum dsl_catchup catchup;
    enum dsl_overlap overlap;
    int64_t max_active_runs;    /* default 1 */
    int64_t max_parallel_steps; /* 0 = unlimited */

    struct dsl_param *params;
    size_t n_params;

    struct dsl_step *steps; /* in file order */
    size_t n_steps;
    size_t *topo; /* indices into steps, every step after its dependencies */
    struct dsl_step *on_exit;
    size_t n_on_exit;

    const char **notify_on_success; /* webhook URLs */
    size_t n_notify_on_success;
    const char **notify_on_failure;
    size_t n_notify_on_failure;
};

/* --- parsing ---------------------------------------------------------------------- */

struct dsl_options {
    size_t max_bytes; /* files larger are refused; 0 means DSL_DEFAULT_MAX_BYTES */
};

/*
 * Reads and validates the DAG file at path. On success sets *out to a new model
 * (free with dsl_dag_free) and returns 0. Otherwise returns SL_ENOENT, SL_EIO,
 * SL_ETOOBIG, SL_EPARSE (YAML syntax) or SL_EINVALID (the DAG is wrong), *out is
 * untouched, and every problem found has been added to diags. opts may be NULL.
 */
int dsl_parse_file(struct dsl_dag **out, const char *path, const struct dsl_options *opts,
                   struct dsl_diags *diags);

/* As dsl_parse_file, for len bytes at buf; file names the source in diagnostics. */
int dsl_parse_buffer(struct dsl_dag **out, const char *file, const char *buf, size_t len,
                     const struct dsl_options *opts, struct dsl_diags *diags);

void dsl_dag_free(struct dsl_dag *dag);

/* Returns the step (main or on_exit) of that name, or NULL. */
const struct dsl_step *dsl_dag_find_step(const struct dsl_dag *dag, const char *name);

/* Appends the normalized model as JSON to sb: indented when pretty, else compact.
 * Deterministic: the same model always gives the same bytes. */
void dsl_dag_to_json(struct strbuf *sb, const struct dsl_dag *dag, bool pretty);

enum dsl_graph_format { DSL_GRAPH_DOT, DSL_GRAPH_MERMAID };

/* Appends the DAG's graph in Graphviz dot or Mermaid flowchart syntax to sb. */
void dsl_dag_graph(struct strbuf *sb, const struct dsl_dag *dag, enum dsl_graph_format format);

/*
 * Checks value against a declared parameter's type and enum. Returns 0, or
 * SL_ETYPE / SL_EINVAL with a lower-case reason in err (e.g. "expected integer,
 * got string"). Used at load time for defaults and by the engine for run params.
 */
int dsl_param_check(const struct dsl_param *p, const cJSON *value, char *err, size_t errlen);

/* The names used in the language, e.g. "all_success", "on_transient", "integer". */
const char *dsl_trigger_rule_name(enum dsl_trigger_rule r);
const char *dsl_retry_policy_name(enum dsl_retry_policy p);
const char *dsl_param_type_name(enum dsl_param_type t);
const char *dsl_catchup_name(enum dsl_catchup c);
const char *dsl_overlap_name(enum dsl_overlap o);

/* --- building blocks, shared with the engine and the executors -------------------- */

/* true if s is a DNS-1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 bytes. */
bool dsl_is_dns_label(const char *s);

/* Parses a Kubernetes quantity ("500m", "2", "1.5", "2Gi", "1e3", "128974848").
 * Sets *out_milli to the value in thousandths, rounded up (cpu: millicores;
 * memory: thousandths of a byte, so divide by 1000). Returns 0, SL_EINVAL or
 * SL_ERANGE. */
int dsl_quantity_parse(int64_t *out_milli, const char *s);

#endif
