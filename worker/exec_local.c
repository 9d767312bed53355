/*
 * worker/exec_local.c - the `local` executor (see exec_local.h for the contract and
 * worker/README.md for the design note).
 *
 * One struct exec_local per attempt, with its libuv handles embedded: a uv_process_t for
 * the child, a uv_timer_t for the timeout and then the kill grace period, and one
 * uv_work_t reused for the two threadpool phases (prepare: log file, header, secrets;
 * finish: output params, trailer). Everything the threadpool touches is owned by the
 * executor and not touched by the loop thread while the work is queued, so no locks.
 *
 * States, and the only legal transitions (exec_set_state() asserts them):
 *
 *   PREPARING --spawned--> RUNNING --timeout/cancel: SIGTERM--> STOPPING
 *       |                     |                                   |
 *       | spec error,         | child exited                      | child exited
 *       | cannot start,       |                                   | (SIGKILL after the grace
 *       | cancelled           |                                   |  period if it lingers)
 *       v                     v                                   v
 *   FINISHING <---------------+-----------------------------------+
 *       | outputs read, trailer written: on_done()
 *       v
 *   CLOSING --last close callback--> freed
 *
 *   PREPARING  the prepare work is queued; no child; timer idle
 *   RUNNING    child alive; timer armed with the timeout, if any
 *   STOPPING   SIGTERM sent to the group; timer armed with the kill grace period
 *   FINISHING  child gone (or never started); the finish work is queued; timer idle
 *   CLOSING    on_done returned; handles are closing; the struct is freed by the last
 *              close callback
 */
#include "worker/exec_local.h"
#include "worker/artifacts.h"
#include "worker/expand.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/timeutil.h"
#include "common/xalloc.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum exec_state {
    EXEC_PREPARING,
    EXEC_RUNNING,
    EXEC_STOPPING,
    EXEC_FINISHING,
    EXEC_CLOSING,
};

enum exec_stop {
    EXEC_STOP_NONE,
    EXEC_STOP_TIMEOUT,
    EXEC_STOP_CANCEL,
};

struct exec_env {
    char *name;
    char *value;       /* NULL for a secret */
    char *secret_name; /* with secret_key, when value is NULL */
    char *secret_key;
};

struct exec_param {
    char *name;
    char *path; /* as in the spec */
};

struct exec_local {
    enum exec_state state;
    enum exec_stop stop; /* the first stop asked for wins */
    uv_loop_t *loop;
    uv_process_t process; /* initialized once uv_spawn() was called */
    uv_timer_t timer;     /* the timeout, then the kill grace period */
    uv_work_t work;       /* prepare, then finish */
    bool process_inited;
    int open_handles; /* handles still to be closed; freed at 0 in CLOSING */
    exec_local_done_cb on_done;
    void *data;

    /* copied from the spec and options in exec_local_start() */
    char *attempt_id;
    char **argv; /* NULL-terminated */
    struct exec_env *env;
    size_t n_env;
    char **base_env; /* "NAME=value" from the worker's environment */
    size_t n_base_env;
    char *cwd; /* NULL: the worker's */
    char *log_path;
    char *secrets_dir;
    char *gpus; /* "0,2" or "" */
    uint64_t timeout_ms;
    uint64_t kill_grace_ms;
    struct exec_param *params;
    size_t n_params;
    struct artifacts_repo *artifacts; /* borrowed; NULL: none */
    cJSON *artifact_spec;             /* {inputs, outputs, ids} when the spec has artifacts */
    atomic_int stage_cancel;          /* set by exec_local_cancel(); read by staging */

    /* set by the prepare work */
    int log_fd; /* -1 if not open */
    char **envp;
    bool *envp_secret; /* per envp entry: its value came from (or through) a secret */
    size_t n_envp;

    /* the result */
    int pid;
    int exit_code;
    int term_signal;
    char *reason;
    enum exec_failure failure;
    int64_t started_ms;
    int64_t finished_ms;
    uint64_t started_hr;
    uint64_t finished_hr;
    cJSON *outputs;
};

const char *exec_failure_name(enum exec_failure failure)
{
    switch (failure) {
    case EXEC_FAIL_NONE:
        return "none";
    case EXEC_FAIL_STEP:
        return "step";
    case EXEC_FAIL_ERROR:
        return "error";
    case EXEC_FAIL_TRANSIENT:
        return "transient";
    case EXEC_FAIL_CANCELLED:
        return "cancelled";
    }
    return "unknown";
}

static void exec_set_state(struct exec_local *e, enum exec_state to)
{
    bool legal = false;
    switch (e->state) {
    case EXEC_PREPARING:
        legal = to == EXEC_RUNNING || to == EXEC_FINISHING;
        break;
    case EXEC_RUNNING:
        legal = to == EXEC_STOPPING || to == EXEC_FINISHING;
        break;
    case EXEC_STOPPING:
        legal = to == EXEC_FINISHING;
        break;
    case EXEC_FINISHING:
        legal = to == EXEC_CLOSING;
        break;
    case EXEC_CLOSING:
        break;
    }
    assert(legal);
    (void)legal;
    e->state = to;
}

/* Records the failure; the first one wins. Takes ownership of reason. */
static void exec_fail(struct exec_local *e, enum exec_failure failure, char *reason)
{
    if (e->reason) {
        free(reason);
        return;
    }
    e->reason = reason;
    e->failure = failure;
}

/* --- Copying the spec (loop thread, memory only) ---------------------------------- */

/* A name that may be one path component: no '/', not "", "." or "..". */
static bool is_plain_component(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* True if path has a ".." component. */
static bool has_dotdot(const char *path)
{
    const char *p = path;
    while (*p) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return true;
        p += len;
        while (*p == '/')
            p++;
    }
    return false;
}

static int copy_argv(struct exec_local *e, const cJSON *spec)
{
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(spec, "command");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(spec, "args");
    size_t n = 0;

    if (!cJSON_IsArray(cmd) || cJSON_GetArraySize(cmd) == 0)
        return -1;
    if (args && !cJSON_IsNull(args) && !cJSON_IsArray(args))
        return -1;
    e->argv = xcalloc((size_t)cJSON_GetArraySize(cmd) +
                          (size_t)(cJSON_IsArray(args) ? cJSON_GetArraySize(args) : 0) + 1,
                      sizeof(char *));
    const cJSON *lists[2] = {cmd, cJSON_IsArray(args) ? args : NULL};
    for (size_t l = 0; l < 2; l++) {
        const cJSON *it;
        cJSON_ArrayForEach(it, lists[l])
        {
            if (!cJSON_IsString(it))
                return -1;
            e->argv[n++] = xstrdup(it->valuestring);
        }
    }
    return 0;
}

/* Returns NULL, or a reason (caller frees) why spec.env is malformed. */
static char *copy_env(struct exec_local *e, const cJSON *spec)
{
    const cJSON *env = cJSON_GetObjectItemCaseSensitive(spec, "env");
    const cJSON *it;

    if (!env || cJSON_IsNull(env))
        return NULL;
    if (!cJSON_IsObject(env))
        return xstrdup("malformed spec: 'env' is not an object");
    e->env = xcalloc((size_t)cJSON_GetArraySize(env), sizeof(*e->env));
    cJSON_ArrayForEach(it, env)
    {
        struct exec_env *v = &e->env[e->n_env];
        if (!*it->string || strchr(it->string, '='))
            return xasprintf("malformed spec: bad env name '%s'", it->string);
        if (cJSON_IsString(it)) {
            v->value = xstrdup(it->valuestring);
        } else {
            const cJSON *sn = cJSON_GetObjectItemCaseSensitive(it, "secret_name");
            const cJSON *sk = cJSON_GetObjectItemCaseSensitive(it, "secret_key");
            if (!cJSON_IsString(sn) || !cJSON_IsString(sk))
                return xasprintf("malformed spec: env '%s' is neither a string nor a secret",
                                 it->string);
            if (!is_plain_component(sn->valuestring) || !is_plain_component(sk->valuestring))
                return xasprintf("malformed spec: env '%s' names a bad secret", it->string);
            v->secret_name = xstrdup(sn->valuestring);
            v->secret_key = xstrdup(sk->valuestring);
        }
        v->name = xstrdup(it->string);
        e->n_env++;
    }
    return NULL;
}

/* Returns NULL, or a reason and sets *failure. */
static char *copy_params(struct exec_local *e, const cJSON *spec, enum exec_failure *failure)
{
    const cJSON *outs = cJSON_GetObjectItemCaseSensitive(spec, "outputs");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(outs, "params");
    const cJSON *it;

    *failure = EXEC_FAIL_ERROR;
    if (!params || cJSON_IsNull(params))
        return NULL;
    if (!cJSON_IsObject(params))
        return xstrdup("malformed spec: 'outputs.params' is not an object");
    e->params = xcalloc((size_t)cJSON_GetArraySize(params), sizeof(*e->params));
    cJSON_ArrayForEach(it, params)
    {
        if (!cJSON_IsString(it) || !*it->valuestring)
            return xasprintf("malformed spec: output param '%s' has no path", it->string);
        if (has_dotdot(it->valuestring)) {
            /* defense in depth: the DSL should refuse these already */
            *failure = EXEC_FAIL_STEP;
            return xasprintf("output param '%s' path '%s' has a '..' component", it->string,
                             it->valuestring);
        }
        e->params[e->n_params].name = xstrdup(it->string);
        e->params[e->n_params].path = xstrdup(it->valuestring);
        e->n_params++;
    }
    return NULL;
}

static void copy_spec(struct exec_local *e, const cJSON *spec)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(spec, "attempt_id");
    const cJSON *wd = cJSON_GetObjectItemCaseSensitive(spec, "workdir");
    const cJSON *dd = cJSON_GetObjectItemCaseSensitive(spec, "dag_dir");
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(spec, "timeout_ms");
    enum exec_failure failure = EXEC_FAIL_ERROR;
    char *reason = NULL;

    e->attempt_id = xstrdup(cJSON_IsString(id) ? id->valuestring : "");
    /* cwd: workdir, else the directory the DAG came from, else the worker's default */
    if (cJSON_IsString(wd) && *wd->valuestring) {
        free(e->cwd);
        e->cwd = xstrdup(wd->valuestring);
    } else if (cJSON_IsString(dd) && dd->valuestring[0] == '/') {
        free(e->cwd);
        e->cwd = xstrdup(dd->valuestring);
    }
    if (!cJSON_IsObject(spec)) {
        reason = xstrdup("malformed spec: not an object");
    } else if (dd && !cJSON_IsNull(dd) &&
               (!cJSON_IsString(dd) || (*dd->valuestring && dd->valuestring[0] != '/'))) {
        reason = xstrdup("malformed spec: 'dag_dir' must be an absolute path");
    } else if (copy_argv(e, spec) < 0) {
        reason = xstrdup("malformed spec: 'command' must be a non-empty list of strings");
    } else if (to && (!cJSON_IsNumber(to) || to->valuedouble < 0)) {
        reason = xstrdup("malformed spec: 'timeout_ms' must be a number >= 0");
    } else if (!(reason = copy_env(e, spec))) {
        reason = copy_params(e, spec, &failure);
    }
    if (to && cJSON_IsNumber(to) && to->valuedouble > 0)
        e->timeout_ms = (uint64_t)to->valuedouble;
    if (reason)
        exec_fail(e, failure, reason);
    /* what staging needs, copied for the threadpool: inputs, outputs and the ids */
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(spec, "inputs");
    const cJSON *outs = cJSON_GetObjectItemCaseSensitive(spec, "outputs");
    if (!e->reason && (cJSON_GetObjectItemCaseSensitive(ins, "artifacts") ||
                       cJSON_GetObjectItemCaseSensitive(outs, "artifacts") || e->artifacts)) {
        static const char *const keep[] = {"inputs", "outputs",   "dag",     "run_id",
                                           "step",   "map_index", "attempt", "repo"};
        e->artifact_spec = cJSON_CreateObject();
        for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, keep[i]);
            if (v)
                cJSON_AddItemToObject(e->artifact_spec, keep[i], cJSON_Duplicate(v, true));
        }
    }
}

static void copy_options(struct exec_local *e, const struct exec_local_options *opts)
{
    static const char *const inherited[] = {"PATH", "HOME", "LANG", "TZ"};
    struct strbuf gpus = STRBUF_INIT;

    e->log_path = xstrdup(opts->log_path);
    e->artifacts = opts->artifacts;
    e->secrets_dir = opts->secrets_dir ? xstrdup(opts->secrets_dir) : NULL;
    e->cwd = opts->default_workdir ? xstrdup(opts->default_workdir) : NULL;
    e->kill_grace_ms = opts->kill_grace_ms ? opts->kill_grace_ms : EXEC_LOCAL_DEFAULT_KILL_GRACE_MS;
    for (size_t i = 0; i < opts->n_gpus; i++)
        strbuf_addf(&gpus, "%s%d", i ? "," : "", opts->gpus[i]);
    e->gpus = strbuf_detach(&gpus, NULL);
    e->base_env =
        xcalloc(sizeof(inherited) / sizeof(inherited[0]) + opts->n_extra_env, sizeof(char *));
    for (size_t i = 0; i < sizeof(inherited) / sizeof(inherited[0]); i++) {
        const char *v = getenv(inherited[i]);
        if (v)
            e->base_env[e->n_base_env++] = xasprintf("%s=%s", inherited[i], v);
    }
    for (size_t i = 0; i < opts->n_extra_env; i++)
        if (opts->extra_env[i] && strchr(opts->extra_env[i], '=') > opts->extra_env[i])
            e->base_env[e->n_base_env++] = xstrdup(opts->extra_env[i]);
}

/* --- Threadpool work: prepare ----------------------------------------------------- */

/* mkdir -p of the directory part of path. Returns 0 or -errno. */
static int mkdir_parents(const char *path)
{
    char *dir = xstrdup(path);
    int rc = 0;
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
            rc = -errno;
            free(dir);
            return rc;
        }
        *p = '/';
    }
    free(dir);
    return rc;
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* a log we cannot write to does not fail the step */
        buf += n;
        len -= (size_t)n;
    }
}

static void write_header(struct exec_local *e)
{
    struct strbuf sb = STRBUF_INIT;
    char when[32];
    int64_t now = sl_wall_ms();

    sl_time_format_utc(when, sl_floor_div(now, 1000));
    strbuf_addf(&sb, "=== sluice: attempt %s started at %s, argv [", e->attempt_id, when);
    for (size_t i = 0; e->argv && e->argv[i]; i++) {
        if (i)
            strbuf_addstr(&sb, ", ");
        strbuf_add_json_string(&sb, e->argv[i]);
    }
    strbuf_addf(&sb, "], cwd %s\n", e->cwd ? e->cwd : ".");
    write_all(e->log_fd, sb.buf, sb.len);
    strbuf_release(&sb);
}

/* Sets NAME=value in e->envp, replacing an earlier NAME. Takes ownership of entry.
 * secret: the value came from a secret, or from a reference to one. */
static void envp_set(struct exec_local *e, char *entry, bool secret)
{
    size_t name_len = (size_t)(strchr(entry, '=') - entry) + 1;
    for (size_t i = 0; i < e->n_envp; i++) {
        if (!strncmp(e->envp[i], entry, name_len)) {
            memset(e->envp[i], 0, strlen(e->envp[i]));
            free(e->envp[i]);
            e->envp[i] = entry;
            e->envp_secret[i] = secret;
            return;
        }
    }
    e->envp_secret[e->n_envp] = secret;
    e->envp[e->n_envp++] = entry;
}

/* The lookup of $(NAME) references in e->envp (worker/expand.h). */
struct env_lookup {
    const struct exec_local *e;
    bool allow_secret; /* false: a secret's variable counts as undefined */
    bool used_secret;  /* set when a secret's value was substituted */
};

static const char *lookup_envp(void *data, const char *name, size_t len)
{
    struct env_lookup *l = data;
    for (size_t i = 0; i < l->e->n_envp; i++) {
        const char *entry = l->e->envp[i];
        if (strncmp(entry, name, len) != 0 || entry[len] != '=')
            continue;
        if (l->e->envp_secret[i] && !l->allow_secret)
            return NULL;
        l->used_secret |= l->e->envp_secret[i];
        return entry + len + 1;
    }
    return NULL;
}

/* Replaces *s by its expansion against e->envp, without secrets. */
static void expand_in_place(struct exec_local *e, char **s)
{
    if (!strchr(*s, '$'))
        return;
    struct env_lookup l = {e, false, false};
    struct strbuf sb = STRBUF_INIT;
    worker_expand(&sb, *s, lookup_envp, &l);
    free(*s);
    *s = strbuf_detach(&sb, NULL);
}

/* Expands $(NAME) in argv, cwd and output param paths, once e->envp is complete. */
static void expand_spec(struct exec_local *e)
{
    for (size_t i = 0; e->argv && e->argv[i]; i++)
        expand_in_place(e, &e->argv[i]);
    if (e->cwd)
        expand_in_place(e, &e->cwd);
    for (size_t i = 0; i < e->n_params; i++)
        expand_in_place(e, &e->params[i].path);
}

/* Builds e->envp. Returns NULL or a reason (the failure is EXEC_FAIL_ERROR). */
static char *build_envp(struct exec_local *e)
{
    struct strbuf val = STRBUF_INIT;
    char *reason = NULL;

    e->envp = xcalloc(e->n_base_env + e->n_env + 2, sizeof(char *));
    e->envp_secret = xcalloc(e->n_base_env + e->n_env + 2, sizeof(bool));
    for (size_t i = 0; i < e->n_base_env; i++)
        envp_set(e, xstrdup(e->base_env[i]), false);
    for (size_t i = 0; i < e->n_env; i++) {
        const struct exec_env *v = &e->env[i];
        if (v->value) {
            /* Kubernetes' rule: references to the variables defined so far */
            struct env_lookup l = {e, true, false};
            struct strbuf sb = STRBUF_INIT;
            strbuf_addf(&sb, "%s=", v->name);
            worker_expand(&sb, v->value, lookup_envp, &l);
            envp_set(e, strbuf_detach(&sb, NULL), l.used_secret);
            continue;
        }
        if (!e->secrets_dir) {
            reason = xasprintf("secret '%s/%s' for env '%s' not found: no secrets directory",
                               v->secret_name, v->secret_key, v->name);
            break;
        }
        char *path = xasprintf("%s/%s/%s", e->secrets_dir, v->secret_name, v->secret_key);
        strbuf_reset(&val);
        int rc = strbuf_read_file(&val, path, EXEC_LOCAL_MAX_SECRET_BYTES);
        free(path);
        if (rc == 0 && strlen(val.buf) != val.len)
            rc = SL_EINVAL; /* a NUL byte cannot go through the environment */
        if (rc < 0) {
            reason = xasprintf("secret '%s/%s' for env '%s' %s", v->secret_name, v->secret_key,
                               v->name, rc == SL_ENOENT ? "not found" : sl_strerror(rc));
            break;
        }
        /* the value as is, trailing newline included, as Kubernetes mounts it */
        envp_set(e, xasprintf("%s=%s", v->name, val.buf), true);
    }
    envp_set(e, xasprintf("CUDA_VISIBLE_DEVICES=%s", e->gpus), false);
    /* the secret's bytes are not left behind in freed memory */
    if (val.alloc)
        memset(val.buf, 0, val.alloc);
    strbuf_release(&val);
    return reason;
}

/* The failure kind of a staging failure. */
static enum exec_failure staging_failure(enum artifacts_blame blame)
{
    switch (blame) {
    case ARTIFACTS_BLAME_STEP:
        return EXEC_FAIL_STEP;
    case ARTIFACTS_BLAME_TRANSIENT:
        return EXEC_FAIL_TRANSIENT;
    case ARTIFACTS_BLAME_ERROR:
        break;
    }
    return EXEC_FAIL_ERROR;
}

/* Inputs into the working directory, before the spawn (threadpool). */
static void stage_inputs(struct exec_local *e)
{
    if (!e->artifact_spec)
        return;
    struct strbuf err = STRBUF_INIT;
    enum artifacts_blame blame = ARTIFACTS_BLAME_ERROR;
    if (artifacts_stage_in(e->artifacts, e->artifact_spec, e->cwd, e->log_fd, &e->stage_cancel,
                           &blame, &err) < 0)
        exec_fail(e, atomic_load(&e->stage_cancel) ? EXEC_FAIL_CANCELLED : staging_failure(blame),
                  atomic_load(&e->stage_cancel) ? xstrdup("cancelled") : xstrdup(err.buf));
    strbuf_release(&err);
}

/* Declared outputs into the repository, after exit 0 (threadpool). */
static void stage_outputs(struct exec_local *e)
{
    if (!e->artifact_spec)
        return;
    struct strbuf err = STRBUF_INIT;
    enum artifacts_blame blame = ARTIFACTS_BLAME_ERROR;
    if (artifacts_stage_out(e->artifacts, e->artifact_spec, e->cwd, e->log_fd, NULL, &blame, &err) <
        0)
        exec_fail(e, staging_failure(blame), xstrdup(err.buf));
    strbuf_release(&err);
}

static void on_prepare_work(uv_work_t *req)
{
    struct exec_local *e = req->data;
    int rc = mkdir_parents(e->log_path);

    if (rc == 0) {
        e->log_fd = open(e->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (e->log_fd < 0)
            rc = -errno;
    }
    if (rc < 0) {
        exec_fail(e, EXEC_FAIL_TRANSIENT,
                  xasprintf("cannot open log file '%s': %s", e->log_path, strerror(-rc)));
        return;
    }
    if (!e->reason) {
        char *reason = build_envp(e);
        if (reason)
            exec_fail(e, EXEC_FAIL_ERROR, reason);
        else
            expand_spec(e); /* so the header shows the argv and cwd the child gets */
    }
    write_header(e);
    if (!e->reason)
        stage_inputs(e);
}

/* --- Threadpool work: finish ------------------------------------------------------ */

static void read_outputs(struct exec_local *e)
{
    struct strbuf sb = STRBUF_INIT;
    size_t total = 0;

    for (size_t i = 0; i < e->n_params && !e->reason; i++) {
        const struct exec_param *p = &e->params[i];
        char *path =
            p->path[0] == '/' || !e->cwd ? xstrdup(p->path) : xasprintf("%s/%s", e->cwd, p->path);
        strbuf_reset(&sb);
        int rc = strbuf_read_file(&sb, path, EXEC_LOCAL_MAX_OUTPUT_BYTES + 1);
        free(path);
        if (rc == 0 && sb.len > 0 && sb.buf[sb.len - 1] == '\n')
            sb.buf[--sb.len] = '\0';
        if (rc == SL_ENOENT)
            exec_fail(e, EXEC_FAIL_STEP,
                      xasprintf("missing output param '%s' (%s)", p->name, p->path));
        else if (rc == SL_ETOOBIG || (rc == 0 && sb.len > EXEC_LOCAL_MAX_OUTPUT_BYTES))
            exec_fail(e, EXEC_FAIL_STEP,
                      xasprintf("output param '%s' is larger than 64 KiB", p->name));
        else if (rc < 0)
            exec_fail(e, EXEC_FAIL_STEP,
                      xasprintf("cannot read output param '%s' (%s): %s", p->name, p->path,
                                sl_strerror(rc)));
        else if ((total += sb.len) > EXEC_LOCAL_MAX_OUTPUT_BYTES)
            exec_fail(
                e, EXEC_FAIL_STEP,
                xasprintf("output params are larger than 64 KiB in total (at '%s')", p->name));
        else
            cJSON_AddStringToObject(e->outputs, p->name, sb.buf);
    }
    strbuf_release(&sb);
    if (e->reason) {
        /* all or nothing: a failed attempt reports no outputs */
        cJSON_Delete(e->outputs);
        e->outputs = cJSON_CreateObject();
    }
}

static void write_trailer(struct exec_local *e)
{
    struct strbuf sb = STRBUF_INIT;
    uint64_t ms = e->started_hr ? (e->finished_hr - e->started_hr) / 1000000 : 0;

    strbuf_addf(&sb, "=== sluice: attempt %s ", e->attempt_id);
    if (e->reason)
        strbuf_addf(&sb, "failed (%s): ", e->reason);
    else
        strbuf_addstr(&sb, "succeeded: ");
    if (e->exit_code >= 0)
        strbuf_addf(&sb, "exit code %d", e->exit_code);
    else if (e->term_signal)
        strbuf_addf(&sb, "killed by signal %d", e->term_signal);
    else
        strbuf_addstr(&sb, "not started");
    strbuf_addf(&sb, ", duration %llu ms\n", (unsigned long long)ms);
    write_all(e->log_fd, sb.buf, sb.len);
    strbuf_release(&sb);
}

static void on_finish_work(uv_work_t *req)
{
    struct exec_local *e = req->data;

    if (!e->reason)
        read_outputs(e);
    if (!e->reason) {
        stage_outputs(e);
        if (e->reason) {
            /* all or nothing, as for output params */
            cJSON_Delete(e->outputs);
            e->outputs = cJSON_CreateObject();
        }
    }
    if (e->log_fd >= 0) {
        write_trailer(e);
        close(e->log_fd);
        e->log_fd = -1;
        /* the finished log next to the artifacts, when configured; a failure here does
         * not change the step's outcome */
        if (e->artifact_spec && artifacts_archive_logs(e->artifacts)) {
            struct strbuf err = STRBUF_INIT;
            if (artifacts_put_log(e->artifacts, e->artifact_spec, e->log_path, &err) < 0)
                sl_warn("exec_local", "attempt \"%s\": cannot archive the log: %s", e->attempt_id,
                        err.buf);
            strbuf_release(&err);
        }
    }
}

/* --- Loop thread ------------------------------------------------------------------ */

static void free_strv(char **v, size_t n, bool scrub)
{
    for (size_t i = 0; v && i < n; i++) {
        if (scrub)
            memset(v[i], 0, strlen(v[i]));
        free(v[i]);
    }
    free(v);
}

static void exec_free(struct exec_local *e)
{
    free(e->attempt_id);
    for (size_t i = 0; e->argv && e->argv[i]; i++)
        free(e->argv[i]);
    free(e->argv);
    for (size_t i = 0; i < e->n_env; i++) {
        free(e->env[i].name);
        free(e->env[i].value);
        free(e->env[i].secret_name);
        free(e->env[i].secret_key);
    }
    free(e->env);
    free_strv(e->base_env, e->n_base_env, false);
    free_strv(e->envp, e->n_envp, true);
    free(e->envp_secret);
    for (size_t i = 0; i < e->n_params; i++) {
        free(e->params[i].name);
        free(e->params[i].path);
    }
    free(e->params);
    free(e->cwd);
    free(e->log_path);
    free(e->secrets_dir);
    free(e->gpus);
    free(e->reason);
    cJSON_Delete(e->outputs);
    cJSON_Delete(e->artifact_spec);
    free(e);
}

static void on_close(uv_handle_t *handle)
{
    struct exec_local *e = handle->data;
    if (--e->open_handles == 0)
        exec_free(e);
}

static void on_finish_done(uv_work_t *req, int status)
{
    struct exec_local *e = req->data;
    (void)status; /* never cancelled: uv_cancel() is not used */

    struct exec_local_result result = {
        .attempt_id = e->attempt_id,
        .exit_code = e->exit_code,
        .term_signal = e->term_signal,
        .reason = e->reason,
        .failure = e->reason ? e->failure : EXEC_FAIL_NONE,
        .started_ms = e->started_ms,
        .finished_ms = e->finished_ms,
        .outputs = e->outputs,
    };
    e->on_done(&result, e->data);
    e->outputs = result.outputs; /* NULL if the callback took it */
    exec_set_state(e, EXEC_CLOSING);
    uv_close((uv_handle_t *)&e->timer, on_close);
    if (e->process_inited)
        uv_close((uv_handle_t *)&e->process, on_close);
}

static void exec_finish(struct exec_local *e)
{
    exec_set_state(e, EXEC_FINISHING);
    uv_timer_stop(&e->timer);
    if (!e->finished_ms) {
        e->finished_ms = sl_wall_ms();
        e->finished_hr = uv_hrtime();
    }
    int rc = uv_queue_work(e->loop, &e->work, on_finish_work, on_finish_done);
    assert(rc == 0); /* fails only for a NULL work_cb */
    (void)rc;
}

static void on_timer(uv_timer_t *timer)
{
    struct exec_local *e = timer->data;

    if (e->state == EXEC_RUNNING) {
        /* the timeout: TERM now, KILL after the grace period */
        if (e->stop == EXEC_STOP_NONE)
            e->stop = EXEC_STOP_TIMEOUT;
        kill(-e->pid, SIGTERM);
        exec_set_state(e, EXEC_STOPPING);
        uv_timer_start(&e->timer, on_timer, e->kill_grace_ms, 0);
    } else if (e->state == EXEC_STOPPING) {
        kill(-e->pid, SIGKILL);
    }
}

static void on_child_exit(uv_process_t *process, int64_t exit_status, int term_signal)
{
    struct exec_local *e = process->data;

    e->finished_ms = sl_wall_ms();
    e->finished_hr = uv_hrtime();
    /* Nothing outlives its step: whatever the leader left behind in its group is killed
     * now (the group exists as long as a member does, so its id cannot be reused). */
    kill(-e->pid, SIGKILL);
    e->term_signal = term_signal;
    e->exit_code = term_signal ? -1 : (int)exit_status;
    if (e->stop == EXEC_STOP_TIMEOUT)
        exec_fail(e, EXEC_FAIL_STEP, xstrdup("timeout"));
    else if (e->stop == EXEC_STOP_CANCEL)
        exec_fail(e, EXEC_FAIL_CANCELLED, xstrdup("cancelled"));
    else if (term_signal)
        exec_fail(e, EXEC_FAIL_STEP, xasprintf("killed by signal %d", term_signal));
    else if (exit_status != 0)
        exec_fail(e, EXEC_FAIL_STEP, xasprintf("exit code %d", (int)exit_status));
    exec_finish(e);
}

/* The failure kind of a uv_spawn() error: see the mapping in exec_local.h. */
static enum exec_failure spawn_failure(int rc)
{
    switch (rc) {
    case UV_EAGAIN:
    case UV_ENOMEM:
    case UV_EMFILE:
    case UV_ENFILE:
        return EXEC_FAIL_TRANSIENT;
    case UV_EINVAL:
        return EXEC_FAIL_ERROR;
    default:
        return EXEC_FAIL_STEP; /* ENOENT, EACCES, ENOTDIR, ENOEXEC, ELOOP, ... */
    }
}

static void spawn(struct exec_local *e)
{
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = e->log_fd},
        {.flags = UV_INHERIT_FD, .data.fd = e->log_fd},
    };
    uv_process_options_t o = {
        .exit_cb = on_child_exit,
        .file = e->argv[0],
        .args = e->argv,
        .env = e->envp,
        .cwd = e->cwd,
        /* setsid() in the child: its own session and process group, whose id is its
         * pid, so kill(-pid) reaches everything it starts (and a ^C at the worker's
         * terminal does not) */
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3,
        .stdio = stdio,
    };

    e->process.data = e;
    int rc = uv_spawn(e->loop, &e->process, &o);
    e->process_inited = true; /* even a failed spawn leaves a handle to close */
    e->open_handles++;
    /* the environment may hold secrets: gone as soon as the child has its copy */
    free_strv(e->envp, e->n_envp, true);
    e->envp = NULL;
    free(e->envp_secret);
    e->envp_secret = NULL;
    e->n_envp = 0;
    if (rc < 0) {
        exec_fail(e, spawn_failure(rc), xasprintf("cannot start: %s", uv_strerror(rc)));
        exec_finish(e);
        return;
    }
    e->pid = e->process.pid;
    e->started_ms = sl_wall_ms();
    e->started_hr = uv_hrtime();
    exec_set_state(e, EXEC_RUNNING);
    if (e->timeout_ms > 0)
        uv_timer_start(&e->timer, on_timer, e->timeout_ms, 0);
}

static void on_prepare_done(uv_work_t *req, int status)
{
    struct exec_local *e = req->data;
    (void)status;

    if (e->stop == EXEC_STOP_CANCEL)
        exec_fail(e, EXEC_FAIL_CANCELLED, xstrdup("cancelled"));
    if (e->reason)
        exec_finish(e);
    else
        spawn(e);
}

int exec_local_start(struct exec_local **out, uv_loop_t *loop, const cJSON *spec,
                     const struct exec_local_options *opts, exec_local_done_cb on_done, void *data)
{
    if (!out || !loop || !spec || !opts || !opts->log_path || !on_done)
        return SL_EINVAL;

    struct exec_local *e = xcalloc(1, sizeof(*e));
    e->state = EXEC_PREPARING;
    e->loop = loop;
    e->on_done = on_done;
    e->data = data;
    e->log_fd = -1;
    e->exit_code = -1;
    e->outputs = cJSON_CreateObject();
    copy_options(e, opts);
    copy_spec(e, spec);
    uv_timer_init(loop, &e->timer);
    e->timer.data = e;
    e->open_handles = 1;
    e->work.data = e;
    int rc = uv_queue_work(loop, &e->work, on_prepare_work, on_prepare_done);
    assert(rc == 0);
    (void)rc;
    *out = e;
    return 0;
}

void exec_local_cancel(struct exec_local *e)
{
    switch (e->state) {
    case EXEC_PREPARING:
        e->stop = EXEC_STOP_CANCEL;        /* on_prepare_done() will not spawn */
        atomic_store(&e->stage_cancel, 1); /* and an input transfer stops */
        break;
    case EXEC_RUNNING:
        e->stop = EXEC_STOP_CANCEL;
        kill(-e->pid, SIGTERM);
        exec_set_state(e, EXEC_STOPPING);
        uv_timer_start(&e->timer, on_timer, e->kill_grace_ms, 0);
        break;
    case EXEC_STOPPING:  /* already stopping: the first reason stands */
    case EXEC_FINISHING: /* already exited: the result stands */
    case EXEC_CLOSING:
        break;
    }
}
