/*
 * tests/integration/check_api.c - the REST API over real HTTP, against real PostgreSQL
 * and Redis.
 *
 * Each test makes a database of its own, starts the API server in a thread of the test
 * process on a free port, and talks to it with libcurl. Every answer the tests receive
 * goes through check_contract(): its status must be documented for that path and method
 * in api/openapi.json, and a JSON body must match the documented schema (a small
 * validator below: $ref, type, nullable, required, properties, additionalProperties,
 * items, enum). So the document is the contract, and these tests hold the server to it.
 */
#include "api/api.h"
#include "common/config.h"
#include "worker/artifacts.h"
#include "common/error.h"
#include "common/timeutil.h"
#include "common/xalloc.h"
#include "dsl/dsl.h"
#include "queue/queue.h"
#include "scheduler/scheduler.h"
#include "store/store.h"
#include "tests/harness/harness.h"
#include "tests/harness/pgtest.h"
#include "tests/testutil.h"
#include "worker/worker.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
/*
 * h2o keeps up to 16 freed memory-pool chunks per thread for reuse, in a thread-local list
 * that nothing can empty (libh2o 2.2 exports no call for it). When the thread that ran
 * the server ends, LeakSanitizer sees those chunks as lost: they are a cache, not a leak,
 * so they are suppressed here - and only they (allocations made by h2o's recycling
 * allocator).
 */
const char *__lsan_default_suppressions(void); // NOLINT(bugprone-reserved-identifier)
const char *__lsan_default_suppressions(void)  // NOLINT(bugprone-reserved-identifier)
{
    return "leak:h2o_mem_alloc_recycle\n";
}
const char *__lsan_default_options(void); // NOLINT(bugprone-reserved-identifier)
const char *__lsan_default_options(void)  // NOLINT(bugprone-reserved-identifier)
{
    return "print_suppressions=0";
}
#endif

static struct harness_redis redis;

static void redis_setup(void)
{
    ck_assert_int_eq(harness_redis_start(&redis), 0);
}

static void redis_teardown(void)
{
    harness_redis_stop(&redis);
}

static void nap(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- the contract: api/openapi.json ------------------------------------------------------ */

static cJSON *openapi;

static cJSON *load_openapi(void)
{
    if (!openapi) {
        char *path = test_path("api/openapi.json");
        char *text = test_read_file(path, NULL);
        openapi = cJSON_Parse(text);
        ck_assert_msg(openapi != NULL, "api/openapi.json is not valid JSON");
        free(text);
        free(path);
    }
    return openapi;
}

static const cJSON *resolve(const cJSON *schema)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(schema, "$ref");
    if (!cJSON_IsString(r))
        return schema;
    const char *prefix = "#/components/schemas/";
    ck_assert_msg(!strncmp(r->valuestring, prefix, strlen(prefix)), "unknown $ref %s",
                  r->valuestring);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(load_openapi(), "components"), "schemas"),
        r->valuestring + strlen(prefix));
    ck_assert_msg(s != NULL, "dangling $ref %s", r->valuestring);
    return s;
}

/* Validates v against schema; appends problems to err with their JSON path. */
static void validate(const cJSON *v, const cJSON *schema, const char *at, struct strbuf *err)
{
    schema = resolve(schema);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(schema, "type");
    bool nullable = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(schema, "nullable"));
    if (cJSON_IsNull(v)) {
        if (!nullable && type)
            strbuf_addf(err, "%s: null where %s is required\n", at, type->valuestring);
        return;
    }
    if (cJSON_IsString(type)) {
        const char *t = type->valuestring;
        bool ok = (!strcmp(t, "object") && cJSON_IsObject(v)) ||
                  (!strcmp(t, "array") && cJSON_IsArray(v)) ||
                  (!strcmp(t, "string") && cJSON_IsString(v)) ||
                  (!strcmp(t, "boolean") && cJSON_IsBool(v)) ||
                  (!strcmp(t, "number") && cJSON_IsNumber(v)) ||
                  (!strcmp(t, "integer") && cJSON_IsNumber(v) &&
                   v->valuedouble == (double)(long long)v->valuedouble);
        if (!ok) {
            strbuf_addf(err, "%s: not of type %s\n", at, t);
            return;
        }
    }
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(schema, "enum");
    if (en && cJSON_IsString(v)) {
        bool found = false;
        const cJSON *e;
        cJSON_ArrayForEach(e, en) found |=
            cJSON_IsString(e) && !strcmp(e->valuestring, v->valuestring);
        if (!found)
            strbuf_addf(err, "%s: '%s' is not one of the enum\n", at, v->valuestring);
    }
    if (cJSON_IsObject(v)) {
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(schema, "properties");
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(schema, "required");
        const cJSON *r;
        cJSON_ArrayForEach(r, req)
        {
            if (!cJSON_GetObjectItemCaseSensitive(v, r->valuestring))
                strbuf_addf(err, "%s: required '%s' is missing\n", at, r->valuestring);
        }
        const cJSON *addl = cJSON_GetObjectItemCaseSensitive(schema, "additionalProperties");
        const cJSON *m;
        cJSON_ArrayForEach(m, v)
        {
            char sub[512];
            snprintf(sub, sizeof(sub), "%s.%s", at, m->string);
            const cJSON *ps = props ? cJSON_GetObjectItemCaseSensitive(props, m->string) : NULL;
            if (ps)
                validate(m, ps, sub, err);
            else if (props && cJSON_IsFalse(addl))
                strbuf_addf(err, "%s: not in the schema\n", sub);
        }
    }
    if (cJSON_IsArray(v)) {
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(schema, "items");
        int i = 0;
        const cJSON *m;
        cJSON_ArrayForEach(m, v)
        {
            char sub[512];
            snprintf(sub, sizeof(sub), "%s[%d]", at, i++);
            if (items)
                validate(m, items, sub, err);
        }
    }
}

/* The documented operation for method and a concrete path, or NULL. */
static const cJSON *find_operation(const char *method, const char *path)
{
    const cJSON *paths = cJSON_GetObjectItemCaseSensitive(load_openapi(), "paths");
    const cJSON *p;
    cJSON_ArrayForEach(p, paths)
    {
        const char *t = p->string, *c = path;
        bool ok = true;
        while (ok && *t && *c) {
            if (*t == '{') {
                t = strchr(t, '}') + 1;
                while (*c && *c != '/')
                    c++;
            } else if (*t == *c) {
                t++;
                c++;
            } else {
                ok = false;
            }
        }
        if (ok && !*t && !*c)
            return cJSON_GetObjectItemCaseSensitive(p, method);
    }
    return NULL;
}

/* --- an HTTP client ------------------------------------------------------------------------ */

struct reply {
    long status;
    char *body;
    size_t len;
    char *content_type;
    char *headers;
    cJSON *json; /* parsed body when JSON */
};

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    struct strbuf *sb = arg;
    strbuf_add(sb, p, sz * n);
    return sz * n;
}

static void reply_free(struct reply *r)
{
    free(r->body);
    free(r->content_type);
    free(r->headers);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof(*r));
}

static int port;
static bool contract_off; /* for the one answer h2o gives itself (413, plain text) */

/* Checks r against the contract for method and path. */
static void check_contract(const char *method, const char *path, const struct reply *r)
{
    char m[16];
    size_t i = 0;
    for (; method[i] && i < sizeof(m) - 1; i++)
        m[i] = (char)(method[i] - 'A' + 'a');
    m[i] = '\0';
    char clean[1024];
    snprintf(clean, sizeof(clean), "%s", path);
    char *qm = strchr(clean, '?');
    if (qm)
        *qm = '\0';
    const cJSON *op = find_operation(m, clean);
    if (!op)
        return; /* undocumented paths are 404s, checked by the tests themselves */
    char code[16];
    snprintf(code, sizeof(code), "%ld", r->status);
    const cJSON *resp =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(op, "responses"), code);
    ck_assert_msg(resp != NULL, "%s %s answered %ld, which openapi.json does not document", method,
                  path, r->status);
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(resp, "content");
    const cJSON *json = cJSON_GetObjectItemCaseSensitive(content, "application/json");
    if (!json)
        return;
    ck_assert_msg(r->json != NULL, "%s %s: %ld with a body that is not JSON: %.200s", method, path,
                  r->status, r->body);
    struct strbuf err = STRBUF_INIT;
    validate(r->json, cJSON_GetObjectItemCaseSensitive(json, "schema"), "$", &err);
    ck_assert_msg(err.len == 0, "%s %s: %ld does not match openapi.json:\n%s\nbody: %.500s", method,
                  path, r->status, err.buf, r->body);
    strbuf_release(&err);
}

/* Sends method path with body (may be NULL) and token (NULL: no header; "": an empty
 * bearer). extra is one more header line or NULL. */
static struct reply http_ex(const char *method, const char *path, const char *body, size_t body_len,
                            const char *token, const char *extra, const char *extra2)
{
    CURL *h = curl_easy_init();
    char url[2048];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    struct strbuf b = STRBUF_INIT, hd = STRBUF_INIT;
    struct curl_slist *hl = NULL;
    char auth[256];
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        hl = curl_slist_append(hl, auth);
    }
    if (extra)
        hl = curl_slist_append(hl, extra);
    if (extra2)
        hl = curl_slist_append(hl, extra2);
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &hd);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)body_len);
    }
    CURLcode cc = curl_easy_perform(h);
    ck_assert_msg(cc == CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(cc));
    struct reply r = {0};
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
    char *ct = NULL;
    curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
    r.content_type = ct ? xstrdup(ct) : NULL;
    r.len = b.len;
    r.body = strbuf_detach(&b, NULL);
    r.headers = strbuf_detach(&hd, NULL);
    if (r.content_type && !strncmp(r.content_type, "application/json", 16))
        r.json = cJSON_Parse(r.body);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    if (!contract_off)
        check_contract(method, path, &r);
    return r;
}

static struct reply http(const char *method, const char *path, const char *body, const char *token)
{
    return http_ex(method, path, body, body ? strlen(body) : 0, token, NULL, NULL);
}

static const char *jstr(const cJSON *o, const char *path)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, path);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const char *err_code(const struct reply *r)
{
    return jstr(cJSON_GetObjectItemCaseSensitive(r->json, "error"), "code");
}

#define CK_STATUS(r, want)                                                                         \
    ck_assert_msg((r).status == (want), "status %ld, want %d: %.400s", (r).status, (want), (r).body)

/* --- fixture: a database, DAGs, tokens, the server in a thread ------------------------------ */

struct fx {
    char *db_url;
    char *redis_url;
    char log_root[64];
    char archive[64];                 /* the fs artifact repository's root */
    struct artifacts_repo *artifacts; /* archived step logs */
    struct store *st;
    struct api_server *srv;
    pthread_t thread;
    char viewer[API_TOKEN_BUFSZ], operator[API_TOKEN_BUFSZ], admin[API_TOKEN_BUFSZ];
    struct arena mem;
};

static void *serve(void *arg)
{
    api_server_run(arg);
    return NULL;
}

static void make_token(struct fx *f, char *out, const char *name, const char *role)
{
    ck_assert_int_eq(api_token_generate(out), 0);
    unsigned char hash[API_TOKEN_HASH_SZ];
    api_token_hash(hash, out);
    struct store_token t;
    CK_STORE_OK(f->st, store_token_create(f->st, &t, name, role, hash, sizeof(hash), &f->mem));
}

/* Records a DAG version from YAML text; returns its version id. */
static int64_t put_dag(struct fx *f, const char *file, const char *yaml)
{
    struct dsl_diags diags;
    dsl_diags_init(&diags);
    struct dsl_dag *dag = NULL;
    int rc = dsl_parse_buffer(&dag, file, yaml, strlen(yaml), NULL, &diags);
    if (rc < 0)
        dsl_diags_print(&diags, stderr);
    ck_assert_int_eq(rc, 0);
    dsl_diags_release(&diags);
    struct strbuf model = STRBUF_INIT;
    dsl_dag_to_json(&model, dag, false);
    struct store_dag_put put = {
        .dag_id = dag->name, .file_path = file, .model_json = model.buf, .source = yaml};
    int64_t version = 0;
    bool changed = false;
    CK_STORE_OK(f->st, store_dag_put_version(f->st, &version, &changed, &put));
    strbuf_release(&model);
    dsl_dag_free(dag);
    return version;
}

static const char *dag_iris = "name: iris\n"
                              "description: Train and check the iris model\n"
                              "tags: [ml, daily]\n"
                              "schedule: \"0 2 * * *\"\n"
                              "params:\n"
                              "  epochs: {type: integer, default: 3}\n"
                              "  label: {type: string, default: x}\n"
                              "steps:\n"
                              "  - name: prep\n"
                              "    command: [/bin/true]\n"
                              "  - name: train\n"
                              "    depends_on: [prep]\n"
                              "    command: [/bin/true]\n"
                              "  - name: deploy\n"
                              "    depends_on: [train]\n"
                              "    command: [/bin/true]\n";

static const char *dag_iris2 = "name: iris2\n"
                               "steps:\n"
                               "  - name: prep\n"
                               "    command: [/bin/true]\n";

static int64_t fx_request_timeout_ms; /* 0: the server's default */

static void fx_start_opts(struct fx *f, const char *db, const char *secret, size_t max_body)
{
    memset(f, 0, sizeof(*f));
    arena_init(&f->mem);
    f->db_url = pgtest_fresh_db(db);
    f->redis_url = xasprintf("unix://%s", redis.socket_path);
    snprintf(f->log_root, sizeof(f->log_root), "/tmp/sluice-api-logs-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(f->log_root));
    snprintf(f->archive, sizeof(f->archive), "/tmp/sluice-api-archive-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(f->archive));
    struct strbuf err = STRBUF_INIT;
    struct sl_config ac = {0};
    ac.artifacts.repository = "fs";
    ac.artifacts.root = f->archive;
    ac.artifacts.prefix = "";
    ac.artifacts.compression = "gzip";
    ck_assert_msg(artifacts_open(&f->artifacts, &ac, &err) == 0, "%s", err.buf);
    ck_assert_int_eq(store_open(&f->st, f->db_url, NULL, &err), 0);
    strbuf_release(&err);
    CK_STORE_OK(f->st, store_migrate(f->st, NULL, NULL));
    make_token(f, f->viewer, "v", "viewer");
    make_token(f, f->operator, "o", "operator");
    make_token(f, f->admin, "a", "admin");
    put_dag(f, "iris.yaml", dag_iris);
    put_dag(f, "iris2.yaml", dag_iris2);
    struct api_options o = {.database_url = f->db_url,
                            .redis_url = f->redis_url,
                            .listen = "127.0.0.1:0",
                            .log_root = f->log_root,
                            .webhook_secret = secret,
                            .threads = 2,
                            .max_body_bytes = max_body,
                            .follow_poll_ms = 50,
                            .token_cache_ttl_ms = 60000,
                            .request_timeout_ms = fx_request_timeout_ms,
                            .backfill_interval_ms = 50,
                            .artifacts = f->artifacts};
    ck_assert_int_eq(api_server_new(&f->srv, &o, &err), 0);
    strbuf_release(&err);
    port = api_server_port(f->srv);
    ck_assert_int_gt(port, 0);
    ck_assert_int_eq(pthread_create(&f->thread, NULL, serve, f->srv), 0);
}

static void fx_start(struct fx *f, const char *db)
{
    fx_start_opts(f, db, "It's a Secret to Everybody", 64 * 1024);
}

static void fx_stop(struct fx *f)
{
    if (f->srv) {
        api_server_request_stop(f->srv);
        pthread_join(f->thread, NULL);
        api_server_free(f->srv);
        f->srv = NULL;
    }
    store_close(f->st);
    artifacts_close(f->artifacts);
    f->artifacts = NULL;
    char *cmd = xasprintf("rm -rf '%s' '%s'", f->log_root, f->archive);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);
    free(f->db_url);
    free(f->redis_url);
    arena_release(&f->mem);
}

/* --- tests ---------------------------------------------------------------------------------- */

START_TEST(test_health_and_errors)
{
    struct fx f;
    fx_start(&f, "api_health");
    struct reply r = http("GET", "/api/v1/health", NULL, NULL);
    CK_STATUS(r, 200);
    ck_assert_str_eq(jstr(r.json, "status"), "ok");
    ck_assert_str_eq(jstr(cJSON_GetObjectItemCaseSensitive(r.json, "redis"), "status"), "ok");
    /* the scheduler has written nothing yet: unknown, not an error */
    ck_assert_str_eq(jstr(cJSON_GetObjectItemCaseSensitive(r.json, "scheduler"), "status"),
                     "unknown");
    ck_assert_str_eq(jstr(cJSON_GetObjectItemCaseSensitive(r.json, "dags_sync"), "status"),
                     "unknown");
    reply_free(&r);
    /* the scheduler's documents, once written, are reported */
    char beat[128];
    snprintf(beat, sizeof(beat), "{\"id\":\"s1\",\"at_ms\":%lld}", (long long)sl_wall_ms());
    CK_STORE_OK(f.st, store_state_put(f.st, "scheduler", beat));
    CK_STORE_OK(f.st, store_state_put(f.st, "dags_sync", "{\"ok\":false,\"error\":\"boom\"}"));
    r = http("GET", "/api/v1/health", NULL, NULL);
    CK_STATUS(r, 200);
    ck_assert_str_eq(jstr(cJSON_GetObjectItemCaseSensitive(r.json, "scheduler"), "status"), "ok");
    ck_assert_str_eq(jstr(cJSON_GetObjectItemCaseSensitive(r.json, "scheduler"), "id"), "s1");
    ck_assert_str_eq(jstr(cJSON_GetObjectItemCaseSensitive(r.json, "dags_sync"), "status"),
                     "error");
    reply_free(&r);
    CK_STORE_OK(f.st, store_state_put(f.st, "scheduler", "{\"id\":\"s1\",\"at_ms\":1000}"));
    r = http("GET", "/api/v1/health", NULL, NULL);
    ck_assert_str_eq(jstr(cJSON_GetObjectItemCaseSensitive(r.json, "scheduler"), "status"),
                     "stale");
    reply_free(&r);

    /* unknown paths and methods, in the one error shape */
    r = http("GET", "/api/v1/nope", NULL, f.admin);
    CK_STATUS(r, 404);
    ck_assert_str_eq(err_code(&r), "not_found");
    reply_free(&r);
    r = http("DELETE", "/api/v1/dags/iris", NULL, f.admin);
    CK_STATUS(r, 405);
    ck_assert_str_eq(err_code(&r), "method_not_allowed");
    reply_free(&r);
    r = http("PUT", "/api/v1/dags", "{}", f.admin);
    CK_STATUS(r, 405);
    reply_free(&r);
    fx_stop(&f);
}
END_TEST

/* Every route with no token, an empty token, a junk token and each role. */
START_TEST(test_auth_every_route)
{
    struct fx f;
    fx_start(&f, "api_auth");
    static const struct {
        const char *method, *path, *body;
        int min; /* 0 public, 1 viewer, 2 operator, 3 admin */
    } routes[] = {
        {"GET", "/api/v1/health", NULL, 0},
        {"GET", "/api/v1/metrics", NULL, 0},
        {"GET", "/api/v1/openapi.json", NULL, 0},
        {"GET", "/api/v1/import-errors", NULL, 1},
        {"POST", "/api/v1/sync", NULL, 2},
        {"GET", "/api/v1/dags", NULL, 1},
        {"GET", "/api/v1/dags/iris", NULL, 1},
        {"PATCH", "/api/v1/dags/iris", "{\"is_paused\":false}", 2},
        {"GET", "/api/v1/dags/iris/versions", NULL, 1},
        {"GET", "/api/v1/dags/iris/source", NULL, 1},
        {"GET", "/api/v1/runs", NULL, 1},
        {"POST", "/api/v1/dags/iris/runs", "{\"run_id\":\"auth-run\"}", 2},
        {"GET", "/api/v1/dags/iris/runs", NULL, 1},
        {"GET", "/api/v1/dags/iris/runs/auth-run", NULL, 1},
        {"POST", "/api/v1/dags/iris/runs/auth-run/cancel", NULL, 2},
        {"POST", "/api/v1/dags/iris/runs/auth-run/retry", NULL, 2},
        {"GET", "/api/v1/dags/iris/runs/auth-run/steps", NULL, 1},
        {"GET", "/api/v1/dags/iris/runs/auth-run/steps/prep", NULL, 1},
        {"GET", "/api/v1/dags/iris/runs/auth-run/steps/prep/logs/1", NULL, 1},
        {"GET", "/api/v1/tokens", NULL, 3},
        {"POST", "/api/v1/tokens", "{\"role\":\"viewer\"}", 3},
        {"DELETE", "/api/v1/tokens/999999", NULL, 3},
        {"POST", "/api/v1/backfills", "{}", 2},
        {"GET", "/api/v1/backfills/1", NULL, 1},
        {"POST", "/api/v1/backfills/1/cancel", NULL, 2},
    };
    const char *tokens[] = {f.viewer, f.operator, f.admin };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const char *m = routes[i].method, *p = routes[i].path, *b = routes[i].body;
        const char *bad[] = {NULL, "", "slc_junkjunkjunk", "not even a token"};
        for (size_t k = 0; k < 4; k++) {
            struct reply r = http(m, p, b, bad[k]);
            if (routes[i].min == 0) {
                ck_assert_msg(r.status != 401 && r.status != 403, "%s %s public, got %ld", m, p,
                              r.status);
            } else {
                ck_assert_msg(r.status == 401, "%s %s with token #%zu: %ld, want 401", m, p, k,
                              r.status);
                ck_assert_str_eq(err_code(&r), "unauthenticated");
            }
            reply_free(&r);
        }
        for (int role = 1; role <= 3; role++) {
            struct reply r = http(m, p, b, tokens[role - 1]);
            if (role < routes[i].min) {
                ck_assert_msg(r.status == 403, "%s %s as role %d: %ld, want 403: %s", m, p, role,
                              r.status, r.body);
                ck_assert_str_eq(err_code(&r), "forbidden");
            } else {
                ck_assert_msg(r.status != 401 && r.status != 403, "%s %s as role %d: %ld: %s", m, p,
                              role, r.status, r.body);
            }
            reply_free(&r);
        }
    }
    /* a revoked token stops working at once on the server that revoked it */
    struct reply r =
        http("POST", "/api/v1/tokens", "{\"role\":\"viewer\",\"name\":\"temp\"}", f.admin);
    CK_STATUS(r, 201);
    char *tok = xstrdup(jstr(r.json, "token"));
    int id = (int)cJSON_GetObjectItemCaseSensitive(r.json, "id")->valuedouble;
    ck_assert(!strncmp(tok, "slc_", 4));
    reply_free(&r);
    r = http("GET", "/api/v1/dags", NULL, tok);
    CK_STATUS(r, 200);
    reply_free(&r);
    /* the same live name twice is a conflict */
    r = http("POST", "/api/v1/tokens", "{\"role\":\"viewer\",\"name\":\"temp\"}", f.admin);
    CK_STATUS(r, 409);
    reply_free(&r);
    char path[64];
    snprintf(path, sizeof(path), "/api/v1/tokens/%d", id);
    r = http("DELETE", path, NULL, f.admin);
    CK_STATUS(r, 200);
    ck_assert(!cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r.json, "revoked_at")));
    reply_free(&r);
    r = http("GET", "/api/v1/dags", NULL, tok);
    CK_STATUS(r, 401);
    reply_free(&r);
    /* the token list never shows a token's text or hash */
    r = http("GET", "/api/v1/tokens", NULL, f.admin);
    CK_STATUS(r, 200);
    ck_assert_ptr_null(strstr(r.body, tok));
    ck_assert_ptr_null(strstr(r.body, "hash"));
    reply_free(&r);
    free(tok);
    fx_stop(&f);
}
END_TEST

START_TEST(test_dags)
{
    struct fx f;
    fx_start(&f, "api_dags");
    struct reply r = http("GET", "/api/v1/dags", NULL, f.viewer);
    CK_STATUS(r, 200);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(r.json, "total_entries")->valuedouble,
                     2);
    reply_free(&r);
    r = http("GET", "/api/v1/dags?tag=ml", NULL, f.viewer);
    CK_STATUS(r, 200);
    cJSON *dags = cJSON_GetObjectItemCaseSensitive(r.json, "dags");
    ck_assert_int_eq(cJSON_GetArraySize(dags), 1);
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(dags, 0), "dag_id"), "iris");
    reply_free(&r);
    r = http("GET", "/api/v1/dags?search=IRIS2", NULL, f.viewer);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "dags")), 1);
    reply_free(&r);
    /* paging: one per page, the total stays */
    r = http("GET", "/api/v1/dags?limit=1&offset=1", NULL, f.viewer);
    dags = cJSON_GetObjectItemCaseSensitive(r.json, "dags");
    ck_assert_int_eq(cJSON_GetArraySize(dags), 1);
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(dags, 0), "dag_id"), "iris2");
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(r.json, "total_entries")->valuedouble,
                     2);
    reply_free(&r);
    r = http("GET", "/api/v1/dags?limit=5&offset=10", NULL, f.viewer);
    CK_STATUS(r, 200);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "dags")), 0);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(r.json, "total_entries")->valuedouble,
                     2);
    reply_free(&r);
    /* one DAG: schedule, next run time, params */
    r = http("GET", "/api/v1/dags/iris", NULL, f.viewer);
    CK_STATUS(r, 200);
    ck_assert_str_eq(jstr(r.json, "schedule"), "0 2 * * *");
    const char *next = jstr(r.json, "next_run_time");
    ck_assert_ptr_nonnull(next);
    ck_assert_ptr_nonnull(strstr(next, "T02:00:00Z"));
    ck_assert_ptr_nonnull(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(r.json, "params"), "epochs"));
    reply_free(&r);
    /* pause: next_run_time becomes null */
    r = http("PATCH", "/api/v1/dags/iris", "{\"is_paused\": true}", f.operator);
    CK_STATUS(r, 200);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r.json, "is_paused")));
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris", NULL, f.viewer);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r.json, "next_run_time")));
    reply_free(&r);
    r = http("GET", "/api/v1/dags?paused=true", NULL, f.viewer);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "dags")), 1);
    reply_free(&r);
    /* versions and source */
    put_dag(&f, "iris.yaml", "name: iris\nsteps:\n  - name: prep\n    command: [/bin/false]\n");
    r = http("GET", "/api/v1/dags/iris/versions", NULL, f.viewer);
    CK_STATUS(r, 200);
    cJSON *vs = cJSON_GetObjectItemCaseSensitive(r.json, "versions");
    ck_assert_int_eq(cJSON_GetArraySize(vs), 2);
    ck_assert(
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(vs, 0), "is_current")));
    int old_version =
        (int)cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(vs, 1), "id")->valuedouble;
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/source", NULL, f.viewer);
    CK_STATUS(r, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "/bin/false"));
    reply_free(&r);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/dags/iris/source?version_id=%d", old_version);
    r = http("GET", path, NULL, f.viewer);
    CK_STATUS(r, 200);
    ck_assert_str_eq(r.body, dag_iris);
    reply_free(&r);
    /* a version of another DAG is never shown through this one */
    snprintf(path, sizeof(path), "/api/v1/dags/iris2/source?version_id=%d", old_version);
    r = http("GET", path, NULL, f.viewer);
    CK_STATUS(r, 404);
    reply_free(&r);
    fx_stop(&f);
}
END_TEST

/* Bad input on the DAG and run routes: each a clear error, nothing changed. */
START_TEST(test_bad_input)
{
    struct fx f;
    fx_start(&f, "api_bad");
    static const struct {
        const char *method, *path, *body;
        int status;
    } cases[] = {
        {"GET", "/api/v1/dags/nope", NULL, 404},
        {"GET", "/api/v1/dags/..%2F..%2Fetc", NULL, 404},
        {"GET", "/api/v1/dags/%2E%2E", NULL, 400},
        {"GET", "/api/v1/dags/Iris", NULL, 400},
        {"GET", "/api/v1/dags/iris'%3BDROP%20TABLE%20runs%3B--", NULL, 400},
        {"GET", "/api/v1/dags/iris/runs/x'%20OR%20'1'%3D'1", NULL, 400},
        {"GET", "/api/v1/dags/iris/runs/..", NULL, 400},
        {"GET", "/api/v1/dags/iris/runs/%2E%2E/steps", NULL, 400},
        {"GET", "/api/v1/dags/iris/runs/nope", NULL, 404},
        {"GET", "/api/v1/dags/iris/runs/a%00b", NULL, 404},
        {"GET", "/api/v1/dags/iris/runs?limit=0", NULL, 400},
        {"GET", "/api/v1/dags/iris/runs?limit=abc", NULL, 400},
        {"GET", "/api/v1/dags/iris/runs?offset=-1", NULL, 400},
        {"GET", "/api/v1/dags/iris/runs?state=bogus", NULL, 400},
        {"GET", "/api/v1/dags/iris/runs?order_by=dag_id;DROP", NULL, 400},
        {"GET", "/api/v1/dags/iris/runs?logical_time_gte=yesterday", NULL, 400},
        {"GET", "/api/v1/dags/iris/runs?x=%zz", NULL, 400},
        {"GET", "/api/v1/dags/nope/runs", NULL, 404},
        {"GET", "/api/v1/dags?paused=maybe", NULL, 400},
        {"PATCH", "/api/v1/dags/iris", "{\"is_paused\": \"yes\"}", 400},
        {"PATCH", "/api/v1/dags/iris", "{\"is_paused\": true, \"owner\": 1}", 400},
        {"PATCH", "/api/v1/dags/iris", "{\"is_paused\": tru", 400},
        {"PATCH", "/api/v1/dags/iris", "[true]", 400},
        {"PATCH", "/api/v1/dags/nope", "{\"is_paused\": true}", 404},
        {"POST", "/api/v1/dags/iris/runs", "{not json", 400},
        {"POST", "/api/v1/dags/iris/runs", "\"a string\"", 400},
        {"POST", "/api/v1/dags/iris/runs", "{\"params\": [1,2]}", 400},
        {"POST", "/api/v1/dags/iris/runs", "{\"run_id\": 5}", 400},
        {"POST", "/api/v1/dags/iris/runs", "{\"run_id\": \"../../etc\"}", 400},
        {"POST", "/api/v1/dags/iris/runs", "{\"run_id\": \"a b\"}", 400},
        {"POST", "/api/v1/dags/iris/runs", "{\"run_id\": \"scheduled__x\"}", 400},
        {"POST", "/api/v1/dags/iris/runs", "{\"logical_time\": \"soon\"}", 400},
        {"POST", "/api/v1/dags/iris/runs", "{\"color\": \"red\"}", 400},
        {"POST", "/api/v1/dags/nope/runs", "{}", 404},
        {"POST", "/api/v1/dags/iris/runs", "{\"params\": {\"epochs\": \"many\"}}", 422},
        {"POST", "/api/v1/dags/iris/runs/nope/cancel", NULL, 404},
        {"POST", "/api/v1/dags/iris/runs/nope/retry", NULL, 404},
        {"GET", "/api/v1/dags/iris/runs/nope/steps/prep/logs/1", NULL, 404},
        {"POST", "/api/v1/tokens", "{\"role\": \"root\"}", 400},
        {"POST", "/api/v1/tokens", "{\"role\": \"viewer\", \"name\": 7}", 400},
        {"DELETE", "/api/v1/tokens/abc", NULL, 400},
        {"DELETE", "/api/v1/tokens/424242", NULL, 404},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct reply r = http(cases[i].method, cases[i].path, cases[i].body, f.admin);
        ck_assert_msg(r.status == cases[i].status, "%s %s %s: %ld, want %d: %s", cases[i].method,
                      cases[i].path, cases[i].body ? cases[i].body : "", r.status, cases[i].status,
                      r.body);
        ck_assert_msg(r.json && err_code(&r), "%s %s: not the error shape: %s", cases[i].method,
                      cases[i].path, r.body);
        ck_assert_ptr_nonnull(jstr(cJSON_GetObjectItemCaseSensitive(r.json, "error"), "message"));
        reply_free(&r);
    }
    /* every param error at once, each named */
    struct reply r =
        http("POST", "/api/v1/dags/iris/runs",
             "{\"params\": {\"epochs\": \"many\", \"label\": 3, \"extra\": 1}}", f.operator);
    CK_STATUS(r, 422);
    ck_assert_str_eq(err_code(&r), "invalid_params");
    cJSON *detail = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(r.json, "error"), "detail");
    ck_assert_int_eq(cJSON_GetArraySize(detail), 3);
    reply_free(&r);
    /* nothing was created by any of it */
    r = http("GET", "/api/v1/runs", NULL, f.viewer);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(r.json, "total_entries")->valuedouble,
                     0);
    reply_free(&r);
    r = http("GET", "/api/v1/dags?paused=true", NULL, f.viewer);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "dags")), 0);
    reply_free(&r);
    fx_stop(&f);
}
END_TEST

START_TEST(test_body_limit)
{
    struct fx f;
    fx_start_opts(&f, "api_limit", NULL, 4096);
    char *big = xmalloc(8192 + 1);
    memset(big, ' ', 8192);
    memcpy(big, "{\"params\":{}}", 13);
    big[8192] = '\0';
    struct reply r = http("POST", "/api/v1/dags/iris/runs", big, f.operator);
    CK_STATUS(r, 413);
    reply_free(&r);
    /* far over the limit, h2o refuses it before the API sees it (plain text) */
    char *huge = xmalloc(64 * 1024 + 1);
    memset(huge, ' ', 64 * 1024);
    huge[64 * 1024] = '\0';
    contract_off = true;
    r = http("POST", "/api/v1/dags/iris/runs", huge, f.operator);
    contract_off = false;
    CK_STATUS(r, 413);
    reply_free(&r);
    free(huge);
    /* neither hurt the server */
    r = http("POST", "/api/v1/dags/iris/runs", "{\"run_id\":\"small\"}", f.operator);
    CK_STATUS(r, 201);
    reply_free(&r);
    free(big);
    fx_stop(&f);
}
END_TEST

START_TEST(test_trigger_idempotent_and_params)
{
    struct fx f;
    fx_start(&f, "api_trigger");
    /* params reach the run verbatim, whatever they hold: they are data, never code */
    const char *body = "{\"run_id\":\"r1\",\"params\":{\"epochs\":5,"
                       "\"label\":\"$(rm -rf /); `id` {{ dag.dir }} ' OR 1=1 --\"}}";
    struct reply r = http("POST", "/api/v1/dags/iris/runs", body, f.operator);
    CK_STATUS(r, 201);
    ck_assert_str_eq(jstr(r.json, "state"), "queued");
    ck_assert_str_eq(jstr(r.json, "trigger"), "manual");
    ck_assert_str_eq(jstr(cJSON_GetObjectItemCaseSensitive(r.json, "params"), "label"),
                     "$(rm -rf /); `id` {{ dag.dir }} ' OR 1=1 --");
    ck_assert_ptr_nonnull(strstr(r.headers, "/api/v1/dags/iris/runs/r1"));
    reply_free(&r);
    /* a repeat returns the same run; a conflicting one is 409 */
    r = http("POST", "/api/v1/dags/iris/runs", body, f.operator);
    CK_STATUS(r, 200);
    ck_assert_str_eq(jstr(r.json, "run_id"), "r1");
    reply_free(&r);
    r = http("POST", "/api/v1/dags/iris/runs", "{\"run_id\":\"r1\",\"params\":{\"epochs\":6}}",
             f.operator);
    CK_STATUS(r, 409);
    ck_assert_str_eq(err_code(&r), "conflict");
    reply_free(&r);
    /* an explicit logical time */
    r = http("POST", "/api/v1/dags/iris/runs",
             "{\"run_id\":\"r2\",\"logical_time\":\"2026-01-02T03:04:05Z\"}", f.operator);
    CK_STATUS(r, 201);
    ck_assert_str_eq(jstr(r.json, "logical_time"), "2026-01-02T03:04:05Z");
    reply_free(&r);
    /* generated run ids */
    r = http("POST", "/api/v1/dags/iris/runs", NULL, f.operator);
    CK_STATUS(r, 201);
    ck_assert(!strncmp(jstr(r.json, "run_id"), "manual__", 8));
    reply_free(&r);
    /* the run is there, as stored */
    r = http("GET", "/api/v1/dags/iris/runs/r1", NULL, f.viewer);
    CK_STATUS(r, 200);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(
                         cJSON_GetObjectItemCaseSensitive(r.json, "params"), "epochs")
                         ->valuedouble,
                     5);
    reply_free(&r);
    /* an inactive DAG takes no runs */
    bool deact = false;
    CK_STORE_OK(f.st, store_dag_deactivate(f.st, &deact, "iris2"));
    r = http("POST", "/api/v1/dags/iris2/runs", NULL, f.operator);
    CK_STATUS(r, 409);
    reply_free(&r);
    fx_stop(&f);
}
END_TEST

START_TEST(test_runs_list_and_prefix)
{
    struct fx f;
    fx_start(&f, "api_runs");
    /* "iris" and "iris2" share a prefix: neither sees the other's runs */
    put_dag(&f, "iris-x.yaml", "name: iris-x\nsteps:\n  - name: prep\n    command: [/bin/true]\n");
    const char *times[] = {"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"};
    for (int i = 0; i < 3; i++) {
        char body[160];
        snprintf(body, sizeof(body), "{\"run_id\":\"run-%d\",\"logical_time\":\"%s\"}", i,
                 times[i]);
        struct reply r = http("POST", "/api/v1/dags/iris/runs", body, f.operator);
        CK_STATUS(r, 201);
        reply_free(&r);
    }
    struct reply r = http("POST", "/api/v1/dags/iris2/runs", "{\"run_id\":\"run-0\"}", f.operator);
    CK_STATUS(r, 201);
    reply_free(&r);
    r = http("POST", "/api/v1/dags/iris-x/runs", "{\"run_id\":\"other\"}", f.operator);
    CK_STATUS(r, 201);
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/runs", NULL, f.viewer);
    CK_STATUS(r, 200);
    cJSON *runs = cJSON_GetObjectItemCaseSensitive(r.json, "runs");
    ck_assert_int_eq(cJSON_GetArraySize(runs), 3);
    cJSON *it;
    cJSON_ArrayForEach(it, runs) ck_assert_str_eq(jstr(it, "dag_id"), "iris");
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(runs, 0), "run_id"), "run-2"); /* newest first */
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris2/runs/run-0", NULL, f.viewer);
    CK_STATUS(r, 200);
    ck_assert_str_eq(jstr(r.json, "dag_id"), "iris2");
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris-x/runs/run-0", NULL, f.viewer);
    CK_STATUS(r, 404);
    reply_free(&r);
    r = http("GET",
             "/api/v1/dags/iris/runs?logical_time_gte=2026-01-02T00:00:00Z&order_by=logical_time",
             NULL, f.viewer);
    runs = cJSON_GetObjectItemCaseSensitive(r.json, "runs");
    ck_assert_int_eq(cJSON_GetArraySize(runs), 2);
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(runs, 0), "run_id"), "run-1");
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/runs?logical_time_lte=2026-01-01T12:00:00Z", NULL, f.viewer);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "runs")), 1);
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/runs?limit=2&offset=2", NULL, f.viewer);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "runs")), 1);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(r.json, "total_entries")->valuedouble,
                     3);
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/runs?state=running,failed", NULL, f.viewer);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "runs")), 0);
    reply_free(&r);
    r = http("GET", "/api/v1/runs?state=queued", NULL, f.viewer);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(r.json, "total_entries")->valuedouble,
                     5);
    reply_free(&r);
    /* cancel: queued becomes cancelling; twice is fine; an ended run is 409 */
    r = http("POST", "/api/v1/dags/iris/runs/run-0/cancel", NULL, f.operator);
    CK_STATUS(r, 202);
    ck_assert_str_eq(jstr(r.json, "state"), "cancelling");
    reply_free(&r);
    r = http("POST", "/api/v1/dags/iris/runs/run-0/cancel", NULL, f.operator);
    CK_STATUS(r, 202);
    reply_free(&r);
    struct store_run run;
    CK_STORE_OK(f.st, store_run_get(f.st, &run, "iris", "run-1", &f.mem));
    CK_STORE_OK(f.st, store_run_set_state(f.st, run.id, STORE_RUN_SUCCEEDED, STORE_NO_TIME));
    r = http("POST", "/api/v1/dags/iris/runs/run-1/cancel", NULL, f.operator);
    CK_STATUS(r, 409);
    reply_free(&r);
    /* the prefix-sharing DAG's run was not touched */
    r = http("GET", "/api/v1/dags/iris2/runs/run-0", NULL, f.viewer);
    ck_assert_str_eq(jstr(r.json, "state"), "queued");
    reply_free(&r);
    fx_stop(&f);
}
END_TEST

/* Writes a finished instance (and its attempt) of run_pk. */
static void write_step(struct fx *f, int64_t run_pk, const char *run_id, const char *step,
                       enum store_step_state state, const char *outputs)
{
    int64_t now = sl_wall_ms();
    char attempt_id[256];
    snprintf(attempt_id, sizeof(attempt_id), "iris.%s.%s.-1.1", run_id, step);
    struct store_step_write w = {.step = step,
                                 .map_index = -1,
                                 .state = state,
                                 .attempt = 1,
                                 .queued_at_ms = now - 2000,
                                 .started_at_ms = now - 1500,
                                 .ended_at_ms = now - 1000,
                                 .next_try_at_ms = STORE_NO_TIME,
                                 .worker = "w1",
                                 .exit_code = state == STORE_STEP_SUCCEEDED ? 0 : 3,
                                 .reason = state == STORE_STEP_SUCCEEDED ? NULL : "exit code 3",
                                 .output_params_json = outputs,
                                 .from_state = STORE_STEP_RUNNING,
                                 .to_state = state,
                                 .event_at_ms = STORE_NO_TIME,
                                 .attempt_id = attempt_id};
    CK_STORE_OK(f->st, store_steps_write(f->st, run_pk, &w, 1));
}

START_TEST(test_steps_logs_retry)
{
    struct fx f;
    fx_start(&f, "api_steps");
    struct reply r = http("POST", "/api/v1/dags/iris/runs", "{\"run_id\":\"r1\"}", f.operator);
    CK_STATUS(r, 201);
    reply_free(&r);
    struct store_run run;
    CK_STORE_OK(f.st, store_run_get(f.st, &run, "iris", "r1", &f.mem));
    CK_STORE_OK(f.st, store_run_set_state(f.st, run.id, STORE_RUN_RUNNING, STORE_NO_TIME));
    write_step(&f, run.id, "r1", "prep", STORE_STEP_SUCCEEDED, "{\"rows\":\"150\"}");
    write_step(&f, run.id, "r1", "train", STORE_STEP_FAILED, NULL);
    struct store_step_write up = {.step = "deploy",
                                  .map_index = -1,
                                  .state = STORE_STEP_UPSTREAM_FAILED,
                                  .attempt = 0,
                                  .queued_at_ms = STORE_NO_TIME,
                                  .started_at_ms = STORE_NO_TIME,
                                  .ended_at_ms = sl_wall_ms(),
                                  .next_try_at_ms = STORE_NO_TIME,
                                  .exit_code = STORE_NO_EXIT_CODE,
                                  .from_state = STORE_STEP_PENDING,
                                  .to_state = STORE_STEP_UPSTREAM_FAILED,
                                  .event_at_ms = STORE_NO_TIME};
    CK_STORE_OK(f.st, store_steps_write(f.st, run.id, &up, 1));
    /* a log file where the worker writes it */
    char *dir = xasprintf("%s/iris/r1/train", f.log_root);
    char *cmd = xasprintf("mkdir -p '%s' && printf 'one\\ntwo\\nthree\\n' > '%s/1.log'", dir, dir);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);

    r = http("GET", "/api/v1/dags/iris/runs/r1/steps", NULL, f.viewer);
    CK_STATUS(r, 200);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "steps")), 3);
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/runs/r1/steps?state=failed", NULL, f.viewer);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "steps")), 1);
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/runs/r1/steps/train", NULL, f.viewer);
    CK_STATUS(r, 200);
    ck_assert_str_eq(jstr(r.json, "state"), "failed");
    cJSON *att = cJSON_GetObjectItemCaseSensitive(r.json, "attempts");
    ck_assert_int_eq(cJSON_GetArraySize(att), 1);
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(att, 0), "reason"), "exit code 3");
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/runs/r1/steps/nope", NULL, f.viewer);
    CK_STATUS(r, 404);
    reply_free(&r);
    /* logs: whole, range, tail, latest; no attempt, no log */
    r = http("GET", "/api/v1/dags/iris/runs/r1/steps/train/logs/1", NULL, f.viewer);
    CK_STATUS(r, 200);
    ck_assert_str_eq(r.body, "one\ntwo\nthree\n");
    ck_assert_ptr_nonnull(strstr(r.headers, "x-log-size: 14"));
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/runs/r1/steps/train/logs/1?offset=4&length=3", NULL,
             f.viewer);
    ck_assert_str_eq(r.body, "two");
    ck_assert_ptr_nonnull(strstr(r.headers, "x-next-offset: 7"));
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/runs/r1/steps/train/logs/latest?tail=2", NULL, f.viewer);
    CK_STATUS(r, 200);
    ck_assert_str_eq(r.body, "two\nthree\n");
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/runs/r1/steps/train/logs/2", NULL, f.viewer);
    CK_STATUS(r, 404);
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/runs/r1/steps/prep/logs/1", NULL, f.viewer);
    CK_STATUS(r, 404); /* the attempt exists, its file does not */
    reply_free(&r);
    /* ... until its archived copy is in the artifact repository: served from there */
    struct strbuf key = STRBUF_INIT;
    artifacts_log_key(&key, "iris", "r1", "prep", -1, 1);
    char *archived = xasprintf("%s/%s", f.archive, key.buf);
    char *mk = xasprintf("mkdir -p \"$(dirname '%s')\" && printf 'kept\\nsafe\\n' > '%s'", archived,
                         archived);
    ck_assert_int_eq(system(mk), 0);
    r = http("GET", "/api/v1/dags/iris/runs/r1/steps/prep/logs/1?tail=1", NULL, f.viewer);
    CK_STATUS(r, 200);
    ck_assert_str_eq(r.body, "safe\n");
    ck_assert_ptr_nonnull(strstr(r.headers, "x-log-source: archive"));
    ck_assert_ptr_nonnull(strstr(r.headers, "x-log-size: 10"));
    reply_free(&r);
    free(mk);
    free(archived);
    strbuf_release(&key);
    r = http("GET", "/api/v1/dags/iris/runs/r1/steps/train/logs/1?tail=x", NULL, f.viewer);
    CK_STATUS(r, 400);
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/runs/r1/steps/train/logs/..", NULL, f.viewer);
    CK_STATUS(r, 400);
    reply_free(&r);
    /* iris2 has a run r1 too, but not this log */
    r = http("POST", "/api/v1/dags/iris2/runs", "{\"run_id\":\"r1\"}", f.operator);
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris2/runs/r1/steps/train/logs/1", NULL, f.viewer);
    CK_STATUS(r, 404);
    reply_free(&r);

    /* retry of a running run is refused */
    r = http("POST", "/api/v1/dags/iris/runs/r1/retry", NULL, f.operator);
    CK_STATUS(r, 409);
    reply_free(&r);
    CK_STORE_OK(f.st, store_run_set_state(f.st, run.id, STORE_RUN_FAILED, STORE_NO_TIME));
    r = http("POST", "/api/v1/dags/iris/runs/r1/retry", "{\"params\":{\"epochs\":\"x\"}}",
             f.operator);
    CK_STATUS(r, 422);
    reply_free(&r);
    r = http("POST", "/api/v1/dags/iris/runs/r1/retry", "{\"from\":\"nope\"}", f.operator);
    CK_STATUS(r, 400);
    reply_free(&r);
    r = http("POST", "/api/v1/dags/iris/runs/r1/retry", "{\"run_id\":\"x\"}", f.operator);
    CK_STATUS(r, 400); /* a retry keeps its run: no run_id */
    reply_free(&r);
    r = http("POST", "/api/v1/dags/iris/runs/r1/retry", "{\"params\":{\"epochs\":9}}", f.operator);
    CK_STATUS(r, 202);
    ck_assert_str_eq(jstr(r.json, "run_id"), "r1");
    ck_assert_str_eq(jstr(r.json, "state"), "queued");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r.json, "ended_at")));
    cJSON *params = cJSON_GetObjectItemCaseSensitive(r.json, "params");
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(params, "epochs")->valuedouble, 9);
    cJSON *reused = cJSON_GetObjectItemCaseSensitive(r.json, "reused_steps");
    ck_assert_int_eq(cJSON_GetArraySize(reused), 1);
    ck_assert_str_eq(cJSON_GetArrayItem(reused, 0)->valuestring, "prep");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "rerun_steps")),
                     2);
    reply_free(&r);
    /* prep kept its outputs; train and deploy wait, train's attempts go on from 1 */
    struct store_step_instance *rows = NULL;
    size_t n = 0;
    CK_STORE_OK(f.st, store_steps_of_run(f.st, &rows, &n, run.id, 0, &f.mem));
    ck_assert_int_eq(n, 3);
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(rows[i].step, "prep")) {
            ck_assert_int_eq(rows[i].state, STORE_STEP_SUCCEEDED);
            ck_assert_str_eq(rows[i].output_params_json, "{\"rows\": \"150\"}");
        } else {
            ck_assert_int_eq(rows[i].state, STORE_STEP_PENDING);
        }
        if (!strcmp(rows[i].step, "train"))
            ck_assert_int_eq(rows[i].attempt, 1);
    }
    /* a second retry while this one is queued is refused */
    r = http("POST", "/api/v1/dags/iris/runs/r1/retry", NULL, f.operator);
    CK_STATUS(r, 409);
    reply_free(&r);
    /* from a named step, on a succeeded run: that step and what follows */
    CK_STORE_OK(f.st, store_run_set_state(f.st, run.id, STORE_RUN_RUNNING, STORE_NO_TIME));
    write_step(&f, run.id, "r1", "train", STORE_STEP_SUCCEEDED, NULL);
    write_step(&f, run.id, "r1", "deploy", STORE_STEP_SUCCEEDED, NULL);
    CK_STORE_OK(f.st, store_run_set_state(f.st, run.id, STORE_RUN_SUCCEEDED, STORE_NO_TIME));
    r = http("POST", "/api/v1/dags/iris/runs/r1/retry", NULL, f.operator);
    CK_STATUS(r, 409); /* nothing failed and no step named */
    reply_free(&r);
    r = http("POST", "/api/v1/dags/iris/runs/r1/retry", "{\"from\":\"train\"}", f.operator);
    CK_STATUS(r, 202);
    reused = cJSON_GetObjectItemCaseSensitive(r.json, "reused_steps");
    ck_assert_int_eq(cJSON_GetArraySize(reused), 1);
    ck_assert_str_eq(cJSON_GetArrayItem(reused, 0)->valuestring, "prep");
    reply_free(&r);
    free(dir);
    fx_stop(&f);
}
END_TEST

START_TEST(test_webhook_vectors)
{
    /* the pure check against ../shared/vectors/webhook */
    char *path = test_path("../shared/vectors/webhook/github_hmac_sha256.json");
    if (access(path, R_OK) != 0) {
        free(path);
        path = xstrdup("/work/wt/shared/vectors/webhook/github_hmac_sha256.json");
    }
    char *text = test_read_file(path, NULL);
    cJSON *doc = cJSON_Parse(text);
    ck_assert_ptr_nonnull(doc);
    int checked = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(doc, "cases"))
    {
        const char *secret = jstr(c, "secret"), *body = jstr(c, "body"), *hdr = jstr(c, "header");
        const cJSON *valid = cJSON_GetObjectItemCaseSensitive(c, "valid");
        bool got = api_webhook_github_valid(secret, body, strlen(body), hdr);
        if (cJSON_IsBool(valid))
            ck_assert_msg(got == (bool)cJSON_IsTrue(valid), "case %s: got %d", jstr(c, "name"),
                          got);
        else /* implementation-defined: uppercase hex is decoded, so accepted */
            ck_assert_msg(got, "case %s: uppercase hex is accepted", jstr(c, "name"));
        checked++;
    }
    ck_assert_int_ge(checked, 10);
    ck_assert(!api_webhook_github_valid("s", "b", 1, NULL));
    ck_assert(api_webhook_gitlab_valid("tok", "tok"));
    ck_assert(!api_webhook_gitlab_valid("tok", "tok2"));
    ck_assert(!api_webhook_gitlab_valid("tok", ""));

    /* over HTTP: the raw body is what is signed */
    struct fx f;
    fx_start(&f, "api_hook");
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "cases"), 0);
    char sig[128];
    snprintf(sig, sizeof(sig), "X-Hub-Signature-256: %s", jstr(first, "header"));
    const char *body = jstr(first, "body");
    struct reply r =
        http_ex("POST", "/api/v1/hooks/git", body, strlen(body), NULL, sig, "X-GitHub-Event: push");
    CK_STATUS(r, 202);
    reply_free(&r);
    const char *json = NULL;
    CK_STORE_OK(f.st, store_state_get(f.st, &json, NULL, "dags_sync_request", &f.mem));
    ck_assert_ptr_nonnull(strstr(json, "webhook:github"));
    r = http_ex("POST", "/api/v1/hooks/git", "Hello, World!\n", 14, NULL, sig, NULL);
    CK_STATUS(r, 401);
    reply_free(&r);
    r = http_ex("POST", "/api/v1/hooks/git", body, strlen(body), NULL, sig, "X-GitHub-Event: ping");
    CK_STATUS(r, 200);
    reply_free(&r);
    r = http_ex("POST", "/api/v1/hooks/git", "{}", 2, NULL,
                "X-Gitlab-Token: It's a Secret to Everybody", "X-Gitlab-Event: Push Hook");
    CK_STATUS(r, 202);
    reply_free(&r);
    r = http_ex("POST", "/api/v1/hooks/git", "{}", 2, NULL, "X-Gitlab-Token: guess", NULL);
    CK_STATUS(r, 401);
    reply_free(&r);
    r = http("POST", "/api/v1/hooks/git", "{}", NULL);
    CK_STATUS(r, 401);
    reply_free(&r);
    /* sluice dags sync: the same request, by an operator */
    r = http("POST", "/api/v1/sync", NULL, f.operator);
    CK_STATUS(r, 202);
    reply_free(&r);
    fx_stop(&f);
    /* no secret configured: the hook is off */
    fx_start_opts(&f, "api_hook_off", NULL, 65536);
    r = http_ex("POST", "/api/v1/hooks/git", body, strlen(body), NULL, sig, NULL);
    CK_STATUS(r, 404);
    reply_free(&r);
    fx_stop(&f);
    cJSON_Delete(doc);
    free(text);
    free(path);
}
END_TEST

START_TEST(test_metrics_and_openapi)
{
    struct fx f;
    fx_start(&f, "api_metrics");
    struct reply r = http("POST", "/api/v1/dags/iris/runs", "{\"run_id\":\"m1\"}", f.operator);
    reply_free(&r);
    r = http("GET", "/api/v1/dags/iris/runs/m1", NULL, f.viewer);
    reply_free(&r);
    /* the scheduler's last DAG sync failed twice in a row after a good one */
    CK_STORE_OK(f.st, store_state_put(f.st, "dags_sync",
                                      "{\"ok\": false, \"failures\": 2, \"duration_ms\": 1500, "
                                      "\"last_ok_ms\": 1795000000000, \"invalid\": 3}"));
    r = http("GET", "/api/v1/metrics", NULL, NULL);
    CK_STATUS(r, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "sluice_dags_sync_ok 0\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "sluice_dags_sync_failures 2\n"));
    ck_assert_ptr_nonnull(
        strstr(r.body, "sluice_dags_sync_last_success_timestamp_seconds 1795000000.000\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "sluice_dags_sync_duration_seconds 1.500\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "sluice_dags_import_errors 3\n"));
    ck_assert_ptr_nonnull(strstr(r.content_type, "text/plain"));
    ck_assert_ptr_nonnull(strstr(r.body, "sluice_runs{dag=\"iris\",state=\"queued\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "sluice_queue_depth{queue=\"default\"}"));
    ck_assert_ptr_nonnull(strstr(r.body, "sluice_dispatch_latency_seconds_count 0"));
    ck_assert_ptr_nonnull(strstr(
        r.body, "sluice_api_requests_total{method=\"GET\",route=\"/api/v1/dags/{dag_id}/runs/"
                "{run_id}\",status=\"200\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(r.body,
                                 "sluice_api_request_duration_seconds_bucket{method="
                                 "\"POST\",route=\"/api/v1/dags/{dag_id}/runs\",le=\"+Inf\"} 1"));
    reply_free(&r);
    /* the served document is the file, and it names every route (and nothing else) */
    r = http("GET", "/api/v1/openapi.json", NULL, NULL);
    CK_STATUS(r, 200);
    ck_assert_ptr_nonnull(r.json);
    ck_assert(cJSON_Compare(r.json, load_openapi(), 1));
    reply_free(&r);
    /* route table vs document, both ways */
    const cJSON *paths = cJSON_GetObjectItemCaseSensitive(load_openapi(), "paths");
    static const char *const table[][2] = {
        {"get", "/api/v1/health"},
        {"get", "/api/v1/metrics"},
        {"get", "/api/v1/openapi.json"},
        {"post", "/api/v1/hooks/git"},
        {"get", "/api/v1/import-errors"},
        {"post", "/api/v1/sync"},
        {"get", "/api/v1/dags"},
        {"get", "/api/v1/dags/{dag_id}"},
        {"patch", "/api/v1/dags/{dag_id}"},
        {"get", "/api/v1/dags/{dag_id}/versions"},
        {"get", "/api/v1/dags/{dag_id}/source"},
        {"get", "/api/v1/runs"},
        {"post", "/api/v1/dags/{dag_id}/runs"},
        {"get", "/api/v1/dags/{dag_id}/runs"},
        {"get", "/api/v1/dags/{dag_id}/runs/{run_id}"},
        {"post", "/api/v1/dags/{dag_id}/runs/{run_id}/cancel"},
        {"post", "/api/v1/dags/{dag_id}/runs/{run_id}/retry"},
        {"get", "/api/v1/dags/{dag_id}/runs/{run_id}/steps"},
        {"get", "/api/v1/dags/{dag_id}/runs/{run_id}/steps/{step}"},
        {"get", "/api/v1/dags/{dag_id}/runs/{run_id}/steps/{step}/logs/{attempt}"},
        {"get", "/api/v1/tokens"},
        {"post", "/api/v1/tokens"},
        {"delete", "/api/v1/tokens/{token_id}"},
        {"post", "/api/v1/backfills"},
        {"get", "/api/v1/backfills/{backfill_id}"},
        {"post", "/api/v1/backfills/{backfill_id}/cancel"},
    };
    size_t n_table = sizeof(table) / sizeof(table[0]), n_doc = 0;
    for (size_t i = 0; i < n_table; i++) {
        const cJSON *op = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(paths, table[i][1]), table[i][0]);
        ck_assert_msg(op != NULL, "openapi.json lacks %s %s", table[i][0], table[i][1]);
    }
    const cJSON *p;
    cJSON_ArrayForEach(p, paths)
    {
        const cJSON *m;
        cJSON_ArrayForEach(m, p) n_doc++;
    }
    ck_assert_int_eq(n_doc, n_table);
    fx_stop(&f);
}
END_TEST

/* --- the whole system: a scheduler and a worker, the API in front --------------------------- */

struct e2e {
    struct scheduler *sched;
    pthread_t sched_thread;
    struct worker *worker;
    char dags[64], work[64];
};

static void *sched_main(void *arg)
{
    scheduler_run(arg);
    return NULL;
}

static void e2e_start(struct e2e *e, struct fx *f)
{
    snprintf(e->dags, sizeof(e->dags), "/tmp/sluice-api-dags-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(e->dags));
    snprintf(e->work, sizeof(e->work), "/tmp/sluice-api-work-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(e->work));
    struct scheduler_options so = {.database_url = f->db_url,
                                   .redis_url = f->redis_url,
                                   .id = "s-api",
                                   .dags_dir = e->dags,
                                   .no_sync = true,
                                   .dags_interval_ms = 200,
                                   .reconcile_interval_ms = 200,
                                   .worker_timeout_ms = 5000,
                                   .requeue_after_ms = 2000,
                                   .poll_interval_ms = 50};
    ck_assert_int_eq(scheduler_new(&e->sched, &so), 0);
    ck_assert_int_eq(pthread_create(&e->sched_thread, NULL, sched_main, e->sched), 0);
    struct worker_options wo = {.redis_url = f->redis_url,
                                .queue = "default",
                                .id = "w-api",
                                .slots = 2,
                                .executor = WORKER_EXEC_LOCAL,
                                .log_root = f->log_root,
                                .work_root = e->work,
                                .kill_grace_ms = 1000,
                                .visibility_timeout_ms = 30000,
                                .heartbeat_interval_ms = 500,
                                .stop_grace_ms = 1000,
                                .retention_ms = 3600000};
    ck_assert_int_eq(worker_start(&e->worker, &wo), 0);
}

static void e2e_stop(struct e2e *e)
{
    worker_stop(e->worker);
    worker_join(e->worker);
    scheduler_request_stop(e->sched);
    pthread_join(e->sched_thread, NULL);
    scheduler_free(e->sched);
    char *cmd = xasprintf("rm -rf '%s' '%s'", e->dags, e->work);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);
}

/* Waits (bounded) until the run is in a final state; returns it. */
static char *wait_run(const char *path, const char *token)
{
    for (int i = 0; i < 600; i++) {
        struct reply r = http("GET", path, NULL, token);
        const char *s = jstr(r.json, "state");
        if (s && (!strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled"))) {
            char *out = xstrdup(s);
            reply_free(&r);
            return out;
        }
        reply_free(&r);
        nap(50);
    }
    ck_abort_msg("run %s did not end", path);
    return NULL;
}

START_TEST(test_end_to_end_follow_and_retry)
{
    struct fx f;
    fx_start(&f, "api_e2e");
    /* a step that writes slowly, so follow sees bytes arrive; and one that fails once */
    put_dag(&f, "slow.yaml",
            "name: slow\n"
            "params:\n"
            "  word: {type: string, default: hi}\n"
            "  fail: {type: boolean, default: true}\n"
            "steps:\n"
            "  - name: talk\n"
            "    command: [/bin/sh, -c, 'for i in 1 2 3; do echo \"$0 $i\"; sleep 0.3; done', "
            "\"{{ params.word }}\"]\n"
            "  - name: maybe\n"
            "    depends_on: [talk]\n"
            "    command: [/bin/sh, -c, 'test \"$0\" = false', \"{{ params.fail }}\"]\n");
    struct e2e e;
    e2e_start(&e, &f);
    /* shell metacharacters in a param are one argv value, never run */
    struct reply r =
        http("POST", "/api/v1/dags/slow/runs",
             "{\"run_id\":\"e1\",\"params\":{\"word\":\"$(echo pwned);`id`\"}}", f.operator);
    CK_STATUS(r, 201);
    reply_free(&r);
    /* follow the log of talk's first attempt while it runs: it ends when the step does */
    char *state = NULL;
    for (int i = 0; i < 400; i++) {
        r = http("GET", "/api/v1/dags/slow/runs/e1/steps/talk/logs/1?follow=true", NULL, f.viewer);
        if (r.status == 200)
            break;
        ck_assert_int_eq(r.status, 404); /* not queued yet */
        reply_free(&r);
        nap(25);
    }
    CK_STATUS(r, 200);
    /* the argument arrived as one literal word; the stream lasted until the step ended,
     * so it holds the worker's closing line too */
    ck_assert_ptr_nonnull(
        strstr(r.body, "$(echo pwned);`id` 1\n$(echo pwned);`id` 2\n$(echo pwned);`id` 3\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "succeeded: exit code 0"));
    ck_assert_ptr_null(strstr(r.body, "pwned 1"));
    reply_free(&r);
    state = wait_run("/api/v1/dags/slow/runs/e1", f.viewer);
    ck_assert_str_eq(state, "failed");
    free(state);
    r = http("GET", "/api/v1/dags/slow/runs/e1/steps/maybe", NULL, f.viewer);
    ck_assert_str_eq(jstr(r.json, "state"), "failed");
    reply_free(&r);
    /* retry in place with a new param: talk keeps its result (not run again), maybe runs
     * its second attempt and succeeds */
    r = http("POST", "/api/v1/dags/slow/runs/e1/retry", "{\"params\":{\"fail\":false}}",
             f.operator);
    CK_STATUS(r, 202);
    reply_free(&r);
    state = wait_run("/api/v1/dags/slow/runs/e1", f.viewer);
    ck_assert_str_eq(state, "succeeded");
    free(state);
    r = http("GET", "/api/v1/dags/slow/runs/e1/steps/talk", NULL, f.viewer);
    ck_assert_str_eq(jstr(r.json, "state"), "succeeded");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "attempts")), 1);
    reply_free(&r);
    r = http("GET", "/api/v1/dags/slow/runs/e1/steps/maybe", NULL, f.viewer);
    ck_assert_str_eq(jstr(r.json, "state"), "succeeded");
    cJSON *atts = cJSON_GetObjectItemCaseSensitive(r.json, "attempts");
    ck_assert_int_eq(cJSON_GetArraySize(atts), 2);
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(atts, 0), "state"), "failed");
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(atts, 1), "state"), "succeeded");
    reply_free(&r);
    r = http("GET", "/api/v1/dags/slow/runs/e1/steps/maybe/logs/latest", NULL, f.viewer);
    CK_STATUS(r, 200);
    ck_assert_ptr_nonnull(strstr(r.headers, "x-attempt: 2"));
    reply_free(&r);
    /* cancel a running run through the API: the scheduler ends it cancelled */
    r = http("POST", "/api/v1/dags/slow/runs", "{\"run_id\":\"e2\"}", f.operator);
    CK_STATUS(r, 201);
    reply_free(&r);
    for (int i = 0; i < 400; i++) {
        r = http("GET", "/api/v1/dags/slow/runs/e2", NULL, f.viewer);
        bool running = !strcmp(jstr(r.json, "state"), "running");
        reply_free(&r);
        if (running)
            break;
        nap(25);
    }
    r = http("POST", "/api/v1/dags/slow/runs/e2/cancel", NULL, f.operator);
    CK_STATUS(r, 202);
    reply_free(&r);
    state = wait_run("/api/v1/dags/slow/runs/e2", f.viewer);
    ck_assert_str_eq(state, "cancelled");
    free(state);
    e2e_stop(&e);
    fx_stop(&f);
}
END_TEST

/* A stop while a live log is streaming and requests are in flight: everything ends. */
START_TEST(test_graceful_shutdown)
{
    struct fx f;
    fx_start(&f, "api_stop");
    struct reply r = http("POST", "/api/v1/dags/iris/runs", "{\"run_id\":\"s1\"}", f.operator);
    reply_free(&r);
    struct store_run run;
    CK_STORE_OK(f.st, store_run_get(f.st, &run, "iris", "s1", &f.mem));
    CK_STORE_OK(f.st, store_run_set_state(f.st, run.id, STORE_RUN_RUNNING, STORE_NO_TIME));
    int64_t now = sl_wall_ms();
    struct store_step_write w = {.step = "prep",
                                 .map_index = -1,
                                 .state = STORE_STEP_RUNNING,
                                 .attempt = 1,
                                 .queued_at_ms = now,
                                 .started_at_ms = now,
                                 .ended_at_ms = STORE_NO_TIME,
                                 .next_try_at_ms = STORE_NO_TIME,
                                 .worker = "w",
                                 .exit_code = STORE_NO_EXIT_CODE,
                                 .from_state = STORE_STEP_QUEUED,
                                 .to_state = STORE_STEP_RUNNING,
                                 .event_at_ms = STORE_NO_TIME,
                                 .attempt_id = "iris.s1.prep.-1.1"};
    CK_STORE_OK(f.st, store_steps_write(f.st, run.id, &w, 1));
    char *cmd = xasprintf("mkdir -p '%s/iris/s1/prep' && echo started > '%s/iris/s1/prep/1.log'",
                          f.log_root, f.log_root);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);
    /* a follower in a child process; the stop must end its stream */
    pid_t pid = fork();
    if (pid == 0) {
        struct reply c =
            http("GET", "/api/v1/dags/iris/runs/s1/steps/prep/logs/1?follow=true", NULL, f.viewer);
        _exit(c.status == 200 && !strcmp(c.body, "started\n") ? 0 : 1);
    }
    nap(300);
    int64_t t0 = sl_wall_ms();
    api_server_request_stop(f.srv);
    pthread_join(f.thread, NULL);
    int64_t took = sl_wall_ms() - t0;
    api_server_free(f.srv);
    f.srv = NULL;
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the follower saw a bad stream");
    ck_assert_msg(took < 5000, "stopping took %lld ms", (long long)took);
    fx_stop(&f);
}
END_TEST

START_TEST(test_backfills)
{
    struct fx f;
    fx_start(&f, "api_backfill");
    /* iris runs at 02:00 every day */
    const char *body = "{\"dag_id\":\"iris\",\"start\":\"2026-01-01T00:00:00Z\","
                       "\"end\":\"2026-01-04T02:00:00Z\",\"max_active_runs\":1,"
                       "\"params\":{\"epochs\":7}%s}";
    char buf[512];
    snprintf(buf, sizeof(buf), body, ",\"dry_run\":true");
    struct reply r = http("POST", "/api/v1/backfills", buf, f.operator);
    CK_STATUS(r, 200);
    ck_assert_str_eq(jstr(r.json, "state"), "dry_run");
    cJSON *lt = cJSON_GetObjectItemCaseSensitive(r.json, "logical_times");
    ck_assert_int_eq(cJSON_GetArraySize(lt), 4);
    ck_assert_str_eq(cJSON_GetArrayItem(lt, 0)->valuestring, "2026-01-01T02:00:00Z");
    ck_assert_str_eq(cJSON_GetArrayItem(lt, 3)->valuestring, "2026-01-04T02:00:00Z");
    reply_free(&r);
    r = http("GET", "/api/v1/runs", NULL, f.viewer); /* a dry run made nothing */
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(r.json, "total_entries")->valuedouble,
                     0);
    reply_free(&r);
    /* a run already exists at Jan 2: reprocess none skips it */
    r = http("POST", "/api/v1/dags/iris/runs",
             "{\"run_id\":\"jan2\",\"logical_time\":\"2026-01-02T02:00:00Z\"}", f.operator);
    CK_STATUS(r, 201);
    reply_free(&r);
    snprintf(buf, sizeof(buf), body, "");
    r = http("POST", "/api/v1/backfills", buf, f.operator);
    CK_STATUS(r, 201);
    int id = (int)cJSON_GetObjectItemCaseSensitive(r.json, "id")->valuedouble;
    ck_assert_str_eq(jstr(r.json, "state"), "running");
    reply_free(&r);
    char path[64];
    snprintf(path, sizeof(path), "/api/v1/backfills/%d", id);
    /* one run at a time: wait for the first, end it, and the next comes */
    struct store_run *runs = NULL;
    size_t n = 0, ended = 0;
    for (int round = 0; round < 3; round++) {
        int64_t total = 0;
        struct store_run_filter flt = {.dag_id = "iris",
                                       .states = 1u << STORE_RUN_QUEUED,
                                       .logical_gte = STORE_NO_TIME,
                                       .logical_lte = STORE_NO_TIME,
                                       .start_gte = STORE_NO_TIME,
                                       .start_lte = STORE_NO_TIME,
                                       .end_gte = STORE_NO_TIME,
                                       .end_lte = STORE_NO_TIME,
                                       .order = STORE_RUN_ORDER_ID,
                                       .limit = 100};
        for (int i = 0; i < 200; i++) {
            CK_STORE_OK(f.st, store_runs_query(f.st, &runs, &n, &total, &flt, &f.mem));
            size_t mine = 0;
            for (size_t k = 0; k < n; k++)
                mine += runs[k].trigger == STORE_TRIGGER_BACKFILL;
            if (mine)
                break;
            nap(25);
        }
        size_t mine = 0;
        struct store_run *one = NULL;
        for (size_t k = 0; k < n; k++)
            if (runs[k].trigger == STORE_TRIGGER_BACKFILL) {
                mine++;
                one = &runs[k];
            }
        ck_assert_msg(mine == 1, "round %d: %zu backfill runs active, want 1", round, mine);
        ck_assert_ptr_nonnull(strstr(one->params_json, "\"epochs\": 7"));
        ck_assert(strstr(one->run_id, "2026-01-02") == NULL); /* Jan 2 was skipped */
        CK_STORE_OK(f.st, store_run_set_state(f.st, one->id, STORE_RUN_SUCCEEDED, STORE_NO_TIME));
        ended++;
    }
    /* every time handled, every run ended: completed */
    char *state = NULL;
    for (int i = 0; i < 200; i++) {
        r = http("GET", path, NULL, f.viewer);
        CK_STATUS(r, 200);
        free(state);
        state = xstrdup(jstr(r.json, "state"));
        if (!strcmp(state, "completed")) {
            ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(r.json, "skipped")->valuedouble,
                             1);
            ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(
                                 cJSON_GetObjectItemCaseSensitive(r.json, "runs"), "succeeded")
                                 ->valuedouble,
                             3);
        }
        reply_free(&r);
        if (!strcmp(state, "completed"))
            break;
        nap(25);
    }
    ck_assert_str_eq(state, "completed");
    free(state);
    ck_assert_int_eq(ended, 3);
    r = http("POST", "/api/v1/backfills/999/cancel", NULL, f.operator);
    CK_STATUS(r, 404);
    reply_free(&r);
    snprintf(path, sizeof(path), "/api/v1/backfills/%d/cancel", id);
    r = http("POST", path, NULL, f.operator);
    CK_STATUS(r, 409); /* completed already */
    reply_free(&r);
    /* reprocess all with two at once, then cancel: its active runs are cancelling */
    r = http("POST", "/api/v1/backfills",
             "{\"dag_id\":\"iris\",\"start\":\"2026-01-01T00:00:00Z\","
             "\"end\":\"2026-01-04T02:00:00Z\",\"reprocess\":\"all\",\"max_active_runs\":2}",
             f.operator);
    CK_STATUS(r, 201);
    id = (int)cJSON_GetObjectItemCaseSensitive(r.json, "id")->valuedouble;
    reply_free(&r);
    snprintf(path, sizeof(path), "/api/v1/backfills/%d", id);
    for (int i = 0; i < 200; i++) {
        r = http("GET", path, NULL, f.viewer);
        int handled = (int)cJSON_GetObjectItemCaseSensitive(r.json, "handled")->valuedouble;
        reply_free(&r);
        if (handled == 2)
            break;
        ck_assert_int_lt(handled, 3);
        nap(25);
    }
    snprintf(path, sizeof(path), "/api/v1/backfills/%d/cancel", id);
    r = http("POST", path, NULL, f.operator);
    CK_STATUS(r, 202);
    ck_assert_str_eq(jstr(r.json, "state"), "cancelled");
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(
                         cJSON_GetObjectItemCaseSensitive(r.json, "runs"), "cancelling")
                         ->valuedouble,
                     2);
    reply_free(&r);
    /* bad input */
    static const char *const bad[] = {
        "{\"dag_id\":\"iris\",\"start\":\"x\",\"end\":\"2026-01-04T00:00:00Z\"}",
        "{\"dag_id\":\"iris\",\"start\":\"2026-01-05T00:00:00Z\",\"end\":\"2026-01-04T00:00:00Z\"}",
        "{\"dag_id\":\"iris\",\"start\":\"2026-01-01T00:00:00Z\",\"end\":\"2026-01-04T00:00:00Z\","
        "\"reprocess\":\"some\"}",
        "{\"dag_id\":\"iris\",\"start\":\"2026-01-01T00:00:00Z\",\"end\":\"2026-01-04T00:00:00Z\","
        "\"max_active_runs\":0}",
        "{\"dag_id\":\"../x\",\"start\":\"2026-01-01T00:00:00Z\",\"end\":\"2026-01-04T00:00:00Z\"}",
        "{\"dag_id\":5}",
        "{\"dag_id\":\"iris\",\"start\":\"2026-01-01T00:00:00Z\",\"end\":\"2026-01-04T00:00:00Z\","
        "\"x\":1}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = http("POST", "/api/v1/backfills", bad[i], f.operator);
        ck_assert_msg(r.status == 400, "%s: %ld", bad[i], r.status);
        reply_free(&r);
    }
    r = http("POST", "/api/v1/backfills",
             "{\"dag_id\":\"iris2\",\"start\":\"2026-01-01T00:00:00Z\",\"end\":\"2026-01-04T00:00:"
             "00Z\"}",
             f.operator);
    CK_STATUS(r, 422); /* no schedule */
    reply_free(&r);
    r = http(
        "POST", "/api/v1/backfills",
        "{\"dag_id\":\"iris\",\"start\":\"2026-01-01T03:00:00Z\",\"end\":\"2026-01-01T04:00:00Z\"}",
        f.operator);
    CK_STATUS(r, 422); /* no tick in the range */
    reply_free(&r);
    r = http(
        "POST", "/api/v1/backfills",
        "{\"dag_id\":\"nope\",\"start\":\"2026-01-01T03:00:00Z\",\"end\":\"2026-01-01T04:00:00Z\"}",
        f.operator);
    CK_STATUS(r, 404);
    reply_free(&r);
    fx_stop(&f);
}
END_TEST

/* Runs `sluice ARGS...` with SLUICE_API_URL and token; returns the exit status. */
static int cli(char **out, char **err, const char *token, ...)
{
    const char *argv[24];
    size_t n = 0;
    argv[n++] = test_sluice_bin();
    va_list ap;
    va_start(ap, token);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 23)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    setenv("SLUICE_API_URL", url, 1);
    if (token)
        setenv("SLUICE_TOKEN", token, 1);
    else
        unsetenv("SLUICE_TOKEN");
    return test_run((char *const *)argv, out, err);
}

START_TEST(test_cli_client)
{
    struct fx f;
    fx_start(&f, "api_cli");
    char *out = NULL, *err = NULL;
    ck_assert_int_eq(cli(&out, &err, f.viewer, "dags", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "iris "));
    ck_assert_ptr_nonnull(strstr(out, "0 2 * * *"));
    free(out);
    free(err);
    /* -p is typed by the DAG's params: epochs is an integer, label a string */
    ck_assert_int_eq(cli(&out, &err, f.operator, "trigger", "iris", "-p", "epochs=5", "-p",
                         "label=7", "--run-id", "c1", "--json", NULL),
                     0);
    cJSON *doc = cJSON_Parse(out);
    ck_assert_ptr_nonnull(doc);
    cJSON *params = cJSON_GetObjectItemCaseSensitive(doc, "params");
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(params, "epochs")));
    ck_assert_str_eq(jstr(params, "label"), "7");
    cJSON_Delete(doc);
    free(out);
    free(err);
    ck_assert_int_eq(cli(&out, &err, f.viewer, "runs", "iris", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "c1"));
    free(out);
    free(err);
    ck_assert_int_eq(cli(&out, &err, f.viewer, "run", "iris", "c1", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "run c1 of iris: queued"));
    free(out);
    free(err);
    /* bad params: every problem, exit 1 */
    ck_assert_int_eq(cli(&out, &err, f.operator, "trigger", "iris", "-p", "epochs=x", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err, "param 'epochs'"));
    free(out);
    free(err);
    /* errors say what to do */
    ck_assert_int_eq(cli(&out, &err, "slc_junk", "dags", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err, "hint: set SLUICE_TOKEN"));
    free(out);
    free(err);
    ck_assert_int_eq(cli(&out, &err, f.viewer, "pause", "iris", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err, "role"));
    free(out);
    free(err);
    ck_assert_int_eq(cli(&out, &err, f.operator, "pause", "iris", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "iris is paused"));
    free(out);
    free(err);
    ck_assert_int_eq(cli(&out, &err, f.viewer, "dags", "--paused", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "iris "));
    ck_assert_ptr_null(strstr(out, "iris2"));
    free(out);
    free(err);
    ck_assert_int_eq(cli(&out, &err, f.viewer, "logs", "iris", "c1", "prep", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err, "no attempt"));
    free(out);
    free(err);
    ck_assert_int_eq(cli(&out, &err, f.operator, "cancel", "iris", "c1", NULL), 0);
    free(out);
    free(err);
    ck_assert_int_eq(
        cli(&out, &err, f.admin, "token", "create", "--role", "viewer", "--name", "bob", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "slc_"));
    free(out);
    free(err);
    ck_assert_int_eq(cli(&out, &err, f.admin, "token", "list", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "bob"));
    free(out);
    free(err);
    ck_assert_int_eq(cli(&out, &err, f.operator, "backfill", "iris", "--start",
                         "2026-01-01T00:00:00Z", "--end", "2026-01-02T23:00:00Z", "--dry-run",
                         NULL),
                     0);
    ck_assert_ptr_nonnull(strstr(out, "2026-01-02T02:00:00Z"));
    free(out);
    free(err);
    ck_assert_int_eq(cli(&out, &err, f.viewer, "import-errors", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "no import errors"));
    free(out);
    free(err);
    ck_assert_int_eq(cli(&out, &err, f.operator, "dags", "sync", NULL), 0);
    free(out);
    free(err);
    /* usage errors and an API that is not there: 2 */
    ck_assert_int_eq(cli(&out, &err, f.operator, "trigger", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "usage:"));
    free(out);
    free(err);
    ck_assert_int_eq(cli(&out, &err, f.viewer, "runs", "--bogus", NULL), 2);
    free(out);
    free(err);
    ck_assert_int_eq(cli(&out, &err, f.viewer, "dags", "--url", "http://127.0.0.1:1", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "cannot reach the API"));
    free(out);
    free(err);
    fx_stop(&f);
}
END_TEST

/* A client that sends half a request and stalls is cut off after api.request_timeout; a
 * keep-alive connection stays usable until then. */
START_TEST(test_request_timeout)
{
    struct fx f;
    fx_request_timeout_ms = 400;
    fx_start(&f, "api_timeout");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    /* a whole request first: answered, and the connection stays open (keep-alive) */
    const char *req = "GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    char buf[4096];
    ssize_t got = read(fd, buf, sizeof(buf) - 1);
    ck_assert_int_gt(got, 0);
    buf[got] = '\0';
    ck_assert_ptr_nonnull(strstr(buf, "HTTP/1.1 200"));
    ck_assert_ptr_null(strstr(buf, "Connection: close"));
    while (got > 0) { /* drain the body until the server goes quiet or closes */
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            break;
        got = read(fd, buf, sizeof(buf));
    }
    close(fd);
    /* a new connection with half a request, and silence: the timeout runs from the
     * connection's start, just before t0 */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    int64_t t0 = sl_wall_ms();
    const char *half = "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n";
    ck_assert_int_eq(write(fd, half, strlen(half)), (ssize_t)strlen(half));
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 10000), 1);
    got = read(fd, buf, sizeof(buf));
    int64_t waited = sl_wall_ms() - t0;
    ck_assert_msg(got <= 0 || strstr(buf, "HTTP/1.1 4"), "the server answered a half request");
    ck_assert_msg(waited >= 200, "closed after %lld ms, well before the 400 ms timeout",
                  (long long)waited);
    close(fd);
    fx_request_timeout_ms = 0;
    fx_stop(&f);
}
END_TEST

Suite *suite_integration_api(void)
{
    Suite *s = suite_create("integration_api");
    TCase *tc = tcase_create("api");
    tcase_add_unchecked_fixture(tc, pgtest_setup, pgtest_teardown);
    tcase_add_unchecked_fixture(tc, redis_setup, redis_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_health_and_errors);
    tcase_add_test(tc, test_auth_every_route);
    tcase_add_test(tc, test_dags);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_body_limit);
    tcase_add_test(tc, test_trigger_idempotent_and_params);
    tcase_add_test(tc, test_runs_list_and_prefix);
    tcase_add_test(tc, test_steps_logs_retry);
    tcase_add_test(tc, test_webhook_vectors);
    tcase_add_test(tc, test_metrics_and_openapi);
    tcase_add_test(tc, test_end_to_end_follow_and_retry);
    tcase_add_test(tc, test_graceful_shutdown);
    tcase_add_test(tc, test_backfills);
    tcase_add_test(tc, test_cli_client);
    tcase_add_test(tc, test_request_timeout);
    suite_add_tcase(s, tc);
    return s;
}
