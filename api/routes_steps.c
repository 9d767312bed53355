/*
 * api/routes_steps.c - a run's steps, one step with its attempts, and step logs.
 *
 * Logs are files written by workers at <log_root>/<dag>/<run>/<step>/<attempt>.log
 * (<map_index>.<attempt>.log for a fan-out item). The API builds that path itself from
 * the names in the URL, after checking each against its grammar (DNS labels for DAG and
 * step, the run_id alphabet for runs, which has no '/'), and only for an attempt that the
 * database knows: a name can never walk out of log_root, and a DAG never reads another
 * DAG's files. The path rule must stay the worker's (worker/workdir.c,
 * worker_path_component): a component that is "." or ".." gets a "_" prefix, and one
 * longer than 200 bytes is cut to 183 and given "~" and a hash (no valid name is that
 * long, so only the first rule can apply to a run_id).
 *
 *   ?offset=N&length=M   a byte range (length at most 8 MiB; default: to the end, 8 MiB)
 *   ?tail=N              the last N lines
 *   ?follow=true         keep the response open and send bytes as they are written, until
 *                        the attempt ends (chunked transfer; server.c streams it)
 * X-Log-Size and X-Next-Offset tell a client where to continue.
 */
#include "api/api_int.h"
#include "worker/artifacts.h"

#include "common/error.h"
#include "common/xalloc.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOG_CHUNK_MAX ((int64_t)8 << 20)

static cJSON *instance_json(const struct store_step_instance *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "step", s->step);
    cJSON_AddNumberToObject(o, "map_index", s->map_index);
    cJSON_AddStringToObject(o, "state", store_step_state_name(s->state));
    cJSON_AddNumberToObject(o, "attempt", s->attempt);
    api_add_time(o, "queued_at", s->queued_at_ms);
    api_add_time(o, "started_at", s->started_at_ms);
    api_add_time(o, "ended_at", s->ended_at_ms);
    api_add_time(o, "next_try_at", s->next_try_at_ms);
    api_add_str(o, "worker", s->worker);
    if (s->exit_code == STORE_NO_EXIT_CODE)
        cJSON_AddNullToObject(o, "exit_code");
    else
        cJSON_AddNumberToObject(o, "exit_code", s->exit_code);
    api_add_str(o, "reason", s->reason);
    api_add_raw_json(o, "outputs", s->output_params_json);
    api_add_raw_json(o, "item", s->item_json);
    return o;
}

static cJSON *attempt_json(const struct store_attempt *a)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "attempt_id", a->attempt_id);
    cJSON_AddNumberToObject(o, "map_index", a->map_index);
    cJSON_AddNumberToObject(o, "attempt", a->attempt);
    cJSON_AddStringToObject(o, "state", a->state);
    api_add_str(o, "worker", a->worker);
    api_add_time(o, "queued_at", a->queued_at_ms);
    api_add_time(o, "started_at", a->started_at_ms);
    api_add_time(o, "ended_at", a->ended_at_ms);
    if (a->exit_code == STORE_NO_EXIT_CODE)
        cJSON_AddNullToObject(o, "exit_code");
    else
        cJSON_AddNumberToObject(o, "exit_code", a->exit_code);
    api_add_str(o, "reason", a->reason);
    api_add_raw_json(o, "outputs", a->output_params_json);
    return o;
}

/* Loads the run of the path, or answers. */
static int load_run(struct api_ctx *c, struct api_req *rq, struct api_resp *rs,
                    struct store_run *out)
{
    const char *dag_id = rq->params[0], *run_id = rq->params[1];
    if (!api_check_dag_id(dag_id, rs) || !api_check_run_id(run_id, rs))
        return SL_EINVAL;
    int rc = store_run_get(c->st, out, dag_id, run_id, &rq->mem);
    if (rc < 0) {
        if (rc == SL_ENOENT)
            api_error(rs, 404, "not_found", NULL, "DAG '%s' has no run '%s'", dag_id, run_id);
        else
            api_store_error(rs, c->st, rc);
    }
    return rc;
}

/* GET /api/v1/dags/{dag_id}/runs/{run_id}/steps?state=a,b */
void api_h_steps_list(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct store_run run;
    if (load_run(c, rq, rs, &run) < 0)
        return;
    unsigned mask = 0;
    const char *states = api_query(rq, "state");
    if (states) {
        char *copy = arena_strdup(&rq->mem, states), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            enum store_step_state s;
            if (store_step_state_parse(&s, t) < 0) {
                api_error(rs, 400, "bad_request", NULL, "unknown step state '%.60s'", t);
                return;
            }
            mask |= STORE_STEP_MASK(s);
        }
    }
    struct store_step_instance *v = NULL;
    size_t n = 0;
    int rc = store_steps_of_run(c->st, &v, &n, run.id, mask, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "run_state", store_run_state_name(run.state));
    cJSON *arr = cJSON_AddArrayToObject(doc, "steps");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, instance_json(&v[i]));
    cJSON_AddNumberToObject(doc, "total_entries", (double)n);
    api_json(rs, 200, doc);
}

/* GET /api/v1/dags/{dag_id}/runs/{run_id}/steps/{step} */
void api_h_step_get(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct store_run run;
    const char *step = rq->params[2];
    if (load_run(c, rq, rs, &run) < 0 || !api_check_step(step, rs))
        return;
    struct store_step_instance *v = NULL;
    size_t n = 0;
    int rc = store_steps_of_run(c->st, &v, &n, run.id, 0, &rq->mem);
    struct store_attempt *a = NULL;
    size_t n_a = 0;
    if (rc == 0)
        rc = store_attempts_of_run(c->st, &a, &n_a, run.id, step, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "step", step);
    cJSON *inst = cJSON_AddArrayToObject(doc, "instances");
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].step, step))
            continue;
        found++;
        if (v[i].map_index < 0)
            cJSON_AddStringToObject(doc, "state", store_step_state_name(v[i].state));
        cJSON_AddItemToArray(inst, instance_json(&v[i]));
    }
    if (!found) {
        cJSON_Delete(doc);
        api_error(rs, 404, "not_found", NULL, "run '%s' has no step '%s'", run.run_id, step);
        return;
    }
    if (!cJSON_GetObjectItemCaseSensitive(doc, "state"))
        cJSON_AddNullToObject(doc, "state");
    cJSON *att = cJSON_AddArrayToObject(doc, "attempts");
    for (size_t i = 0; i < n_a; i++)
        cJSON_AddItemToArray(att, attempt_json(&a[i]));
    api_json(rs, 200, doc);
}

/* The worker's rule for one path component (see the file's comment). */
static void add_component(struct strbuf *sb, const char *s)
{
    strbuf_addch(sb, '/');
    if (!strcmp(s, ".") || !strcmp(s, ".."))
        strbuf_addch(sb, '_');
    strbuf_addstr(sb, s);
}

static char *log_path(const char *root, const char *dag, const char *run, const char *step,
                      int map_index, int attempt)
{
    struct strbuf sb = STRBUF_INIT;
    strbuf_addstr(&sb, root);
    add_component(&sb, dag);
    add_component(&sb, run);
    add_component(&sb, step);
    if (map_index >= 0)
        strbuf_addf(&sb, "/%d.%d.log", map_index, attempt);
    else
        strbuf_addf(&sb, "/%d.log", attempt);
    return strbuf_detach(&sb, NULL);
}

static bool attempt_active(const char *state)
{
    return state && (!strcmp(state, "queued") || !strcmp(state, "running"));
}

/* Reads up to max bytes at offset; returns bytes read or -errno. */
static ssize_t read_at(const char *path, int64_t offset, size_t max, struct strbuf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    strbuf_grow(out, max);
    ssize_t got = pread(fd, out->buf + out->len, max, (off_t)offset);
    int err = errno;
    close(fd);
    if (got < 0)
        return -err;
    out->len += (size_t)got;
    out->buf[out->len] = '\0';
    return got;
}

static int parse_int(int64_t *out, const char *s, int64_t min)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < min)
        return SL_EINVAL;
    *out = v;
    return 0;
}

/* GET /api/v1/dags/{dag_id}/runs/{run_id}/steps/{step}/logs/{attempt}
 *   ?map_index=&offset=&length=&tail=&follow=  ({attempt} may be "latest") */
void api_h_step_log(struct api_ctx *c, struct api_req *rq, struct api_resp *rs)
{
    struct store_run run;
    const char *step = rq->params[2], *att = rq->params[3];
    if (load_run(c, rq, rs, &run) < 0 || !api_check_step(step, rs))
        return;
    int64_t attempt = 0, map_index = -1, offset = -1, length = -1, tail = -1;
    bool latest = !strcmp(att, "latest");
    if (!latest && (parse_int(&attempt, att, 1) < 0 || attempt > 1000000)) {
        api_error(rs, 400, "bad_request", NULL, "the attempt must be a number from 1, or latest");
        return;
    }
    const char *q;
    if ((q = api_query(rq, "map_index")) &&
        (parse_int(&map_index, q, -1) < 0 || map_index > 1000000)) {
        api_error(rs, 400, "bad_request", NULL, "map_index must be a number of -1 or more");
        return;
    }
    if ((q = api_query(rq, "offset")) && parse_int(&offset, q, 0) < 0) {
        api_error(rs, 400, "bad_request", NULL, "offset must be a number of bytes, 0 or more");
        return;
    }
    if ((q = api_query(rq, "length")) && parse_int(&length, q, 0) < 0) {
        api_error(rs, 400, "bad_request", NULL, "length must be a number of bytes, 0 or more");
        return;
    }
    if ((q = api_query(rq, "tail")) && (parse_int(&tail, q, 0) < 0 || tail > 1000000)) {
        api_error(rs, 400, "bad_request", NULL, "tail must be a number of lines, 0 or more");
        return;
    }
    bool follow = false;
    if ((q = api_query(rq, "follow"))) {
        if (strcmp(q, "true") && strcmp(q, "false") && strcmp(q, "1") && strcmp(q, "0")) {
            api_error(rs, 400, "bad_request", NULL, "follow must be true or false");
            return;
        }
        follow = !strcmp(q, "true") || !strcmp(q, "1");
    }
    if (tail >= 0 && offset >= 0) {
        api_error(rs, 400, "bad_request", NULL, "give either offset or tail, not both");
        return;
    }
    struct store_attempt *a = NULL;
    size_t n_a = 0;
    int rc = store_attempts_of_run(c->st, &a, &n_a, run.id, step, &rq->mem);
    if (rc < 0) {
        api_store_error(rs, c->st, rc);
        return;
    }
    const struct store_attempt *found = NULL;
    for (size_t i = 0; i < n_a; i++)
        if (a[i].map_index == map_index && (latest || a[i].attempt == attempt))
            found = &a[i]; /* ordered by attempt: the last is the latest */
    if (!found) {
        if (latest)
            api_error(rs, 404, "not_found", NULL, "step '%s' of run '%s' has no attempt yet%s",
                      step, run.run_id, map_index >= 0 ? " for this map_index" : "");
        else
            api_error(rs, 404, "not_found", NULL, "step '%s' of run '%s' has no attempt %lld", step,
                      run.run_id, (long long)attempt);
        return;
    }
    char *path = log_path(api_server_log_root(c->srv), run.dag_id, run.run_id, step,
                          found->map_index, found->attempt);
    struct stat sb;
    int64_t size = stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
    bool active = attempt_active(found->state);
    int archived = -1; /* the archived copy, when the log volume no longer has the log */
    if (size < 0 && !active && api_server_artifacts(c->srv)) {
        struct strbuf why = STRBUF_INIT;
        if (artifacts_open_log(api_server_artifacts(c->srv), run.dag_id, run.run_id, step,
                               found->map_index, found->attempt, NULL, &archived, &why) == 0 &&
            fstat(archived, &sb) == 0) {
            free(path);
            path = xasprintf("/proc/self/fd/%d", archived); /* read_at() reads it by name */
            size = (int64_t)sb.st_size;
            follow = false; /* the attempt is over: nothing more will come */
            api_header(rs, "x-log-source", "archive");
        }
        strbuf_release(&why);
    }
    if (size < 0 && !active && !follow) {
        api_error(rs, 404, "not_found", NULL,
                  "attempt %d of step '%s' wrote no log (it may not have started)", found->attempt,
                  step);
        free(path);
        return;
    }
    if (size < 0)
        size = 0;
    int64_t start = offset >= 0 ? offset : 0;
    if (tail >= 0) {
        /* walk back from the end, 64 KiB at a time, counting newlines */
        int64_t pos = size, lines = 0;
        bool last_is_nl = false;
        struct strbuf chunk = STRBUF_INIT;
        start = 0;
        while (pos > 0) {
            int64_t from = pos > 65536 ? pos - 65536 : 0;
            strbuf_reset(&chunk);
            if (read_at(path, from, (size_t)(pos - from), &chunk) < 0)
                break;
            bool done = false;
            for (int64_t i = (int64_t)chunk.len - 1; i >= 0; i--) {
                if (chunk.buf[i] != '\n')
                    continue;
                if (from + i == size - 1) { /* the file's final newline ends the last line */
                    last_is_nl = true;
                    continue;
                }
                if (++lines == tail) {
                    start = from + i + 1;
                    done = true;
                    break;
                }
            }
            if (done)
                break;
            pos = from;
        }
        (void)last_is_nl;
        if (tail == 0)
            start = size;
        strbuf_release(&chunk);
    }
    if (start > size)
        start = size;
    int64_t want = length >= 0 ? length : size - start;
    if (want > LOG_CHUNK_MAX)
        want = LOG_CHUNK_MAX;
    if (start + want > size)
        want = size - start;
    strbuf_reset(&rs->body);
    if (want > 0 && read_at(path, start, (size_t)want, &rs->body) < 0) {
        api_error(rs, 500, "internal", NULL, "cannot read the log of attempt %d of step '%s'",
                  found->attempt, step);
        free(path);
        if (archived >= 0)
            close(archived);
        return;
    }
    if (archived >= 0)
        close(archived);
    rs->status = 200;
    rs->content_type = "text/plain; charset=utf-8";
    char num[32];
    snprintf(num, sizeof(num), "%lld", (long long)size);
    api_header(rs, "x-log-size", num);
    snprintf(num, sizeof(num), "%lld", (long long)start + (long long)rs->body.len);
    api_header(rs, "x-next-offset", num);
    snprintf(num, sizeof(num), "%d", found->attempt);
    api_header(rs, "x-attempt", num);
    if (follow && length < 0) {
        struct api_follow *f = xcalloc(1, sizeof(*f));
        f->path = path;
        f->offset = start + (int64_t)rs->body.len;
        f->run_pk = run.id;
        f->step = xstrdup(step);
        f->map_index = found->map_index;
        f->attempt = found->attempt;
        rs->follow = f;
        return;
    }
    free(path);
}

void api_follow_poll(struct api_ctx *c, const struct api_follow *f, struct strbuf *out, size_t max,
                     bool *out_ended)
{
    struct arena mem = ARENA_INIT;
    struct store_attempt *a = NULL;
    size_t n_a = 0;
    bool ended = false;
    if (store_attempts_of_run(c->st, &a, &n_a, f->run_pk, f->step, &mem) == 0) {
        ended = true; /* an attempt that vanished is over too */
        for (size_t i = 0; i < n_a; i++)
            if (a[i].map_index == f->map_index && a[i].attempt == f->attempt)
                ended = !attempt_active(a[i].state);
    }
    arena_release(&mem);
    /* checked before reading: bytes written before the end are in this read or a later */
    read_at(f->path, f->offset, max, out);
    *out_ended = ended;
}
