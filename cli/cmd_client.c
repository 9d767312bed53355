/*
 * cli/cmd_client.c - the sluice subcommands that talk to the REST API (libcurl).
 *
 *   sluice dags [--tag T] [--paused|--unpaused] [--search S] [--json]
 *   sluice dags sync
 *   sluice pause DAG | sluice unpause DAG
 *   sluice trigger DAG [-p NAME=VALUE ...] [--run-id ID] [--logical-time T] [--wait] [--json]
 *   sluice runs [DAG] [--state S[,S]] [--limit N] [--json]
 *   sluice run DAG RUN [--json]
 *   sluice logs DAG RUN STEP [--attempt N] [--map-index I] [--tail N] [-f]
 *   sluice cancel DAG RUN
 *   sluice retry DAG RUN [--from STEP] [-p NAME=VALUE ...] [--wait]
 *   sluice backfill DAG --start T --end T [--reprocess none|failed|all] [--max-active N]
 *                   [--dry-run] | sluice backfill status ID | sluice backfill cancel ID
 *   sluice import-errors [--json]
 *   sluice token create --role viewer|operator|admin [--name N] | list | revoke ID
 *
 * Every command reads SLUICE_API_URL (default http://127.0.0.1:8080) and SLUICE_TOKEN, or
 * --url and --token. Output is a table for people, or the API's JSON with --json. Errors
 * print the API's message and what to do about it. Exit status: 0 done, 1 the API refused
 * or the run did not succeed (trigger --wait), 2 a usage error or the API cannot be
 * reached.
 */
#include "cli/cli.h"
#include "common/strbuf.h"
#include "common/timeutil.h"
#include "common/xalloc.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct client {
    const char *url;   /* without a final '/' */
    const char *token; /* or NULL */
    bool json;
};

struct answer {
    long status; /* 0: no answer (connection failed) */
    struct strbuf body;
    cJSON *doc;
    char curl_err[CURL_ERROR_SIZE];
};

static size_t on_data(char *p, size_t sz, size_t n, void *arg)
{
    strbuf_add(arg, p, sz * n);
    return sz * n;
}

/* Percent-encodes s for one path segment (into a new string). */
static char *seg(const char *s)
{
    struct strbuf sb = STRBUF_INIT;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p))
            strbuf_addch(&sb, *p);
        else
            strbuf_addf(&sb, "%%%02X", *p);
    }
    return strbuf_detach(&sb, NULL);
}

/* Sends a request; *a gets the answer (release with answer_release). */
static void call(struct answer *a, const struct client *c, const char *method, const char *path,
                 const char *body)
{
    memset(a, 0, sizeof(*a));
    strbuf_init(&a->body, 0);
    CURL *h = curl_easy_init();
    char *url = xasprintf("%s%s", c->url, path);
    struct curl_slist *hl = NULL;
    char *auth = NULL;
    if (c->token) {
        auth = xasprintf("Authorization: Bearer %s", c->token);
        hl = curl_slist_append(hl, auth);
    }
    hl = curl_slist_append(hl, "Content-Type: application/json");
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &a->body);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, a->curl_err);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "sluice-cli");
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a->status);
    a->doc = cJSON_Parse(a->body.buf);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    if (auth) {
        memset(auth, 0, strlen(auth));
        free(auth);
    }
    free(url);
}

static void answer_release(struct answer *a)
{
    strbuf_release(&a->body);
    cJSON_Delete(a->doc);
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const char *or_dash(const char *s)
{
    return s && *s ? s : "-";
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* Says what went wrong and what to do. Returns the exit status (1, or 2 when the API
 * could not be reached). */
static int report(const struct client *c, const struct answer *a)
{
    if (!a->status) {
        fprintf(stderr,
                "error: cannot reach the API at %s: %s\n"
                "hint: is `sluice api` or `sluice standalone` running? Set SLUICE_API_URL or "
                "--url to its address.\n",
                c->url, a->curl_err[0] ? a->curl_err : "no answer");
        return 2;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(a->doc, "error");
    const char *msg = str(e, "message");
    fprintf(stderr, "error: %s (HTTP %ld)\n", msg ? msg : "the API refused the request", a->status);
    const cJSON *detail = cJSON_GetObjectItemCaseSensitive(e, "detail");
    const cJSON *d, *list = cJSON_IsArray(detail) ? detail : NULL;
    cJSON_ArrayForEach(d, list)
    {
        const char *m = str(d, "message");
        if (m)
            fprintf(stderr, "  %s\n", m);
    }
    if (a->status == 401)
        fprintf(stderr, "hint: set SLUICE_TOKEN (or --token) to a valid token; an admin makes "
                        "one with `sluice token create --role operator`.\n");
    else if (a->status == 403)
        fprintf(stderr, "hint: your token's role cannot do this; ask an admin for a token with a "
                        "higher role.\n");
    return 1;
}

/* Prints the answer's JSON (for --json). */
static void print_json(const struct answer *a)
{
    char *t = a->doc ? cJSON_Print(a->doc) : NULL;
    printf("%s\n", t ? t : a->body.buf);
    free(t);
}

/* --- argument helpers --------------------------------------------------------------------- */

struct args {
    const char *pos[8];
    size_t n_pos;
    const char **params; /* -p values */
    size_t n_params;
};

/* The API's address and token from the environment. */
static void client_init(struct client *c)
{
    const char *url = getenv("SLUICE_API_URL");
    c->url = url && *url ? url : "http://127.0.0.1:8080";
    const char *tok = getenv("SLUICE_TOKEN");
    c->token = tok && *tok ? tok : NULL;
    c->json = false;
}

static bool common_flag(struct client *c, int argc, char **argv, int *i)
{
    const char *v;
    if (!strcmp(argv[*i], "--json")) {
        c->json = true;
        return true;
    }
    if ((v = cli_flag_value(argc, argv, i, "--url"))) {
        c->url = v;
        return true;
    }
    if ((v = cli_flag_value(argc, argv, i, "--token"))) {
        c->token = v;
        return true;
    }
    return false;
}

static char *trim_url(const char *url)
{
    char *u = xstrdup(url);
    size_t n = strlen(u);
    while (n && u[n - 1] == '/')
        u[--n] = '\0';
    return u;
}

/* Converts -p NAME=VALUE by the DAG's declared param types (params_decl: the DAG's
 * "params" object): JSON for non-string types, the text itself for strings and unknown
 * names (the API then reports unknown names). */
static int build_params(cJSON **out, const char **pv, size_t n, const cJSON *params_decl)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(pv[i], '=');
        if (!eq || eq == pv[i]) {
            fprintf(stderr, "error: -p %s: expected NAME=VALUE\n", pv[i]);
            cJSON_Delete(o);
            return -1;
        }
        char *name = xstrndup(pv[i], (size_t)(eq - pv[i]));
        const cJSON *decl = cJSON_GetObjectItemCaseSensitive(params_decl, name);
        const char *type = str(decl, "type");
        cJSON *v = NULL;
        if (type && strcmp(type, "string"))
            v = cJSON_Parse(eq + 1);
        if (!v)
            v = cJSON_CreateString(eq + 1);
        cJSON_DeleteItemFromObjectCaseSensitive(o, name);
        cJSON_AddItemToObject(o, name, v);
        free(name);
    }
    *out = o;
    return 0;
}

static int usage_error(const char *usage)
{
    fprintf(stderr, "usage: %s\n", usage);
    return 2;
}

/* Parses argv after the command name into positional args and -p values; common flags
 * and the flags in names[] (each taking a value, stored into vals[]) are recognized.
 * bool flags in bnames[] set bvals[]. Returns 0 or 2 (usage). */
static int parse_args(struct client *c, struct args *a, int argc, char **argv,
                      const char *const *names, const char **vals, const char *const *bnames,
                      bool *bvals)
{
    memset(a, 0, sizeof(*a));
    a->params = xcalloc((size_t)argc + 1, sizeof(*a->params));
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (common_flag(c, argc, argv, &i))
            continue;
        if ((v = cli_flag_value(argc, argv, &i, "-p")) ||
            (v = cli_flag_value(argc, argv, &i, "--param"))) {
            a->params[a->n_params++] = v;
            continue;
        }
        bool done = false;
        for (size_t k = 0; names && names[k] && !done; k++) {
            if ((v = cli_flag_value(argc, argv, &i, names[k]))) {
                vals[k] = v;
                done = true;
            }
        }
        for (size_t k = 0; bnames && bnames[k] && !done; k++) {
            if (!strcmp(argv[i], bnames[k])) {
                bvals[k] = true;
                done = true;
            }
        }
        if (done)
            continue;
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "error: unknown or incomplete option '%s'\n", argv[i]);
            return 2;
        }
        if (a->n_pos == sizeof(a->pos) / sizeof(a->pos[0])) {
            fprintf(stderr, "error: too many arguments\n");
            return 2;
        }
        a->pos[a->n_pos++] = argv[i];
    }
    return 0;
}

static void args_release(struct args *a)
{
    free(a->params);
}

/* --- dags, pause, unpause, import-errors ------------------------------------------------------ */

static int dags_sync(struct client *c)
{
    struct answer a;
    call(&a, c, "POST", "/api/v1/sync", NULL);
    int rc = 0;
    if (a.status != 202)
        rc = report(c, &a);
    else if (c->json)
        print_json(&a);
    else
        printf("sync requested: the scheduler reads the DAG repository now\n");
    answer_release(&a);
    return rc;
}

int cmd_client_dags(int argc, char **argv)
{
    static const char usage[] =
        "sluice dags [--tag T] [--paused|--unpaused] [--search S] [--json] | sluice dags sync";
    struct client c;
    client_init(&c);
    struct args a;
    static const char *const names[] = {"--tag", "--search", NULL};
    static const char *const bnames[] = {"--paused", "--unpaused", "-h", "--help", NULL};
    const char *vals[2] = {NULL, NULL};
    bool bvals[4] = {false, false, false, false};
    if (parse_args(&c, &a, argc, argv, names, vals, bnames, bvals)) {
        args_release(&a);
        return usage_error(usage);
    }
    if (bvals[2] || bvals[3]) {
        args_release(&a);
        printf("usage: %s\n", usage);
        return 0;
    }
    char *url = trim_url(c.url);
    c.url = url;
    int rc = 0;
    if (a.n_pos == 1 && !strcmp(a.pos[0], "sync")) {
        rc = dags_sync(&c);
        goto out;
    }
    if (a.n_pos) {
        rc = usage_error(usage);
        goto out;
    }
    struct strbuf path = STRBUF_INIT;
    strbuf_addstr(&path, "/api/v1/dags?limit=1000");
    if (vals[0]) {
        char *t = seg(vals[0]);
        strbuf_addf(&path, "&tag=%s", t);
        free(t);
    }
    if (vals[1]) {
        char *t = seg(vals[1]);
        strbuf_addf(&path, "&search=%s", t);
        free(t);
    }
    if (bvals[0] || bvals[1])
        strbuf_addf(&path, "&paused=%s", bvals[0] ? "true" : "false");
    struct answer ans;
    call(&ans, &c, "GET", path.buf, NULL);
    strbuf_release(&path);
    if (ans.status != 200) {
        rc = report(&c, &ans);
    } else if (c.json) {
        print_json(&ans);
    } else {
        printf("%-24s %-7s %-16s %-34s %-10s %s\n", "DAG", "PAUSED", "SCHEDULE", "LAST RUN",
               "STATE", "ACTIVE");
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(ans.doc, "dags"))
        {
            const cJSON *lr = cJSON_GetObjectItemCaseSensitive(d, "last_run");
            printf("%-24s %-7s %-16s %-34s %-10s %d\n", str(d, "dag_id"),
                   cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "is_paused")) ? "yes" : "no",
                   or_dash(str(d, "schedule")), or_dash(str(lr, "run_id")),
                   or_dash(str(lr, "state")), (int)num(d, "active_runs"));
        }
    }
    answer_release(&ans);
out:
    args_release(&a);
    free(url);
    return rc;
}

static int set_paused(int argc, char **argv, bool paused)
{
    struct client c;
    client_init(&c);
    struct args a;
    if (parse_args(&c, &a, argc, argv, NULL, NULL, NULL, NULL) || a.n_pos != 1) {
        args_release(&a);
        return usage_error(paused ? "sluice pause DAG" : "sluice unpause DAG");
    }
    char *url = trim_url(c.url);
    c.url = url;
    char *d = seg(a.pos[0]);
    char *path = xasprintf("/api/v1/dags/%s", d);
    struct answer ans;
    call(&ans, &c, "PATCH", path, paused ? "{\"is_paused\":true}" : "{\"is_paused\":false}");
    int rc = 0;
    if (ans.status != 200)
        rc = report(&c, &ans);
    else if (c.json)
        print_json(&ans);
    else
        printf("%s is %s\n", a.pos[0], paused ? "paused" : "unpaused");
    answer_release(&ans);
    free(path);
    free(d);
    free(url);
    args_release(&a);
    return rc;
}

int cmd_client_pause(int argc, char **argv)
{
    return set_paused(argc, argv, true);
}

int cmd_client_unpause(int argc, char **argv)
{
    return set_paused(argc, argv, false);
}

int cmd_client_import_errors(int argc, char **argv)
{
    struct client c;
    client_init(&c);
    struct args a;
    if (parse_args(&c, &a, argc, argv, NULL, NULL, NULL, NULL) || a.n_pos) {
        args_release(&a);
        return usage_error("sluice import-errors [--json]");
    }
    char *url = trim_url(c.url);
    c.url = url;
    struct answer ans;
    call(&ans, &c, "GET", "/api/v1/import-errors", NULL);
    int rc = 0;
    if (ans.status != 200) {
        rc = report(&c, &ans);
    } else if (c.json) {
        print_json(&ans);
    } else {
        const cJSON *ie;
        int n = 0;
        cJSON_ArrayForEach(ie, cJSON_GetObjectItemCaseSensitive(ans.doc, "import_errors"))
        {
            const cJSON *e;
            cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(ie, "errors"))
            {
                printf("%s:%d:%d: %s\n", str(ie, "file_path"), (int)num(e, "line"),
                       (int)num(e, "col"), or_dash(str(e, "message")));
                n++;
            }
        }
        if (!n)
            printf("no import errors\n");
    }
    answer_release(&ans);
    free(url);
    args_release(&a);
    return rc;
}

/* --- runs ------------------------------------------------------------------------------------ */

static void print_run_row(const cJSON *r)
{
    const cJSON *dur = cJSON_GetObjectItemCaseSensitive(r, "duration_s");
    char d[32] = "-";
    if (cJSON_IsNumber(dur))
        snprintf(d, sizeof(d), "%.1fs", dur->valuedouble);
    printf("%-20s %-40s %-10s %-9s %-22s %s\n", str(r, "dag_id"), str(r, "run_id"), str(r, "state"),
           str(r, "trigger"), or_dash(str(r, "logical_time")), d);
}

int cmd_client_runs(int argc, char **argv)
{
    static const char usage[] = "sluice runs [DAG] [--state S[,S]] [--limit N] [--json]";
    struct client c;
    client_init(&c);
    struct args a;
    static const char *const names[] = {"--state", "--limit", NULL};
    const char *vals[2] = {NULL, NULL};
    if (parse_args(&c, &a, argc, argv, names, vals, NULL, NULL) || a.n_pos > 1) {
        args_release(&a);
        return usage_error(usage);
    }
    char *url = trim_url(c.url);
    c.url = url;
    struct strbuf path = STRBUF_INIT;
    if (a.n_pos) {
        char *d = seg(a.pos[0]);
        strbuf_addf(&path, "/api/v1/dags/%s/runs?limit=%s", d, vals[1] ? vals[1] : "50");
        free(d);
    } else {
        strbuf_addf(&path, "/api/v1/runs?limit=%s", vals[1] ? vals[1] : "50");
    }
    if (vals[0]) {
        char *s = seg(vals[0]);
        strbuf_addf(&path, "&state=%s", s);
        free(s);
    }
    struct answer ans;
    call(&ans, &c, "GET", path.buf, NULL);
    strbuf_release(&path);
    int rc = 0;
    if (ans.status != 200) {
        rc = report(&c, &ans);
    } else if (c.json) {
        print_json(&ans);
    } else {
        printf("%-20s %-40s %-10s %-9s %-22s %s\n", "DAG", "RUN", "STATE", "TRIGGER",
               "LOGICAL TIME", "DURATION");
        const cJSON *r;
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(ans.doc, "runs")) print_run_row(r);
        printf("(%d of %d)\n",
               cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(ans.doc, "runs")),
               (int)num(ans.doc, "total_entries"));
    }
    answer_release(&ans);
    free(url);
    args_release(&a);
    return rc;
}

static void print_steps(const cJSON *steps)
{
    printf("%-24s %-16s %8s %9s  %s\n", "STEP", "STATE", "ATTEMPTS", "DURATION",
           "OUTPUTS / REASON");
    const cJSON *s;
    cJSON_ArrayForEach(s, steps)
    {
        char name[128], dur[32] = "-";
        int mi = (int)num(s, "map_index");
        if (mi >= 0)
            snprintf(name, sizeof(name), "%s[%d]", str(s, "step"), mi);
        else
            snprintf(name, sizeof(name), "%s", str(s, "step"));
        int64_t a = 0, b = 0;
        const char *st = str(s, "started_at"), *en = str(s, "ended_at");
        if (st && en && sl_time_parse(&a, st, NULL) == 0 && sl_time_parse(&b, en, NULL) == 0)
            snprintf(dur, sizeof(dur), "%llds", (long long)(b - a));
        const cJSON *out = cJSON_GetObjectItemCaseSensitive(s, "outputs");
        char *outs =
            cJSON_IsObject(out) && cJSON_GetArraySize(out) ? cJSON_PrintUnformatted(out) : NULL;
        printf("%-24s %-16s %8d %9s  %s\n", name, str(s, "state"), (int)num(s, "attempt"), dur,
               outs ? outs : or_dash(str(s, "reason")));
        free(outs);
    }
}

/* GETs a run and its steps and prints them (a table, or JSON with --json). */
static int show_run(struct client *c, const char *dag, const char *run, bool print)
{
    char *d = seg(dag), *r = seg(run);
    char *p1 = xasprintf("/api/v1/dags/%s/runs/%s", d, r);
    char *p2 = xasprintf("/api/v1/dags/%s/runs/%s/steps", d, r);
    struct answer a1, a2;
    call(&a1, c, "GET", p1, NULL);
    int rc = 0;
    if (a1.status != 200) {
        rc = report(c, &a1);
    } else {
        call(&a2, c, "GET", p2, NULL);
        if (a2.status != 200) {
            rc = report(c, &a2);
        } else if (print && c->json) {
            cJSON_AddItemToObject(
                a1.doc, "steps",
                cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(a2.doc, "steps"), 1));
            print_json(&a1);
        } else if (print) {
            printf("run %s of %s: %s (%s, logical time %s)\n\n", str(a1.doc, "run_id"),
                   str(a1.doc, "dag_id"), str(a1.doc, "state"), str(a1.doc, "trigger"),
                   or_dash(str(a1.doc, "logical_time")));
            print_steps(cJSON_GetObjectItemCaseSensitive(a2.doc, "steps"));
        }
        answer_release(&a2);
    }
    answer_release(&a1);
    free(p1);
    free(p2);
    free(d);
    free(r);
    return rc;
}

int cmd_client_run(int argc, char **argv)
{
    struct client c;
    client_init(&c);
    struct args a;
    if (parse_args(&c, &a, argc, argv, NULL, NULL, NULL, NULL) || a.n_pos != 2) {
        args_release(&a);
        return usage_error("sluice run DAG RUN [--json]");
    }
    char *url = trim_url(c.url);
    c.url = url;
    int rc = show_run(&c, a.pos[0], a.pos[1], true);
    free(url);
    args_release(&a);
    return rc;
}

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Follows a run until it ends, one line per step transition. Returns 0 if it succeeded,
 * 1 otherwise (2 if the API went away). */
static int wait_for(struct client *c, const char *dag, const char *run)
{
    char *d = seg(dag), *r = seg(run);
    char *p1 = xasprintf("/api/v1/dags/%s/runs/%s", d, r);
    char *p2 = xasprintf("/api/v1/dags/%s/runs/%s/steps", d, r);
    free(d);
    free(r);
    cJSON *seen = cJSON_CreateObject();
    int64_t t0 = sl_wall_ms();
    int rc = 1;
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    for (;;) {
        struct answer a1, a2;
        call(&a2, c, "GET", p2, NULL);
        const cJSON *s;
        const cJSON *steps =
            a2.status == 200 ? cJSON_GetObjectItemCaseSensitive(a2.doc, "steps") : NULL;
        cJSON_ArrayForEach(s, steps)
        {
            char key[160], val[64];
            snprintf(key, sizeof(key), "%s[%d]", str(s, "step"), (int)num(s, "map_index"));
            snprintf(val, sizeof(val), "%s#%d", str(s, "state"), (int)num(s, "attempt"));
            const char *old = str(seen, key);
            if (!strcmp(str(s, "state"), "pending") || (old && !strcmp(old, val)))
                continue;
            cJSON_DeleteItemFromObjectCaseSensitive(seen, key);
            cJSON_AddStringToObject(seen, key, val);
            const char *reason = str(s, "reason");
            printf("  %7.1fs  %-28s %s%s%s\n", (double)(sl_wall_ms() - t0) / 1000.0,
                   (int)num(s, "map_index") >= 0 ? key : str(s, "step"), str(s, "state"),
                   reason ? ": " : "", reason ? reason : "");
            fflush(stdout);
        }
        answer_release(&a2);
        call(&a1, c, "GET", p1, NULL);
        if (a1.status != 200) {
            rc = report(c, &a1);
            answer_release(&a1);
            break;
        }
        const char *st = str(a1.doc, "state");
        if (st && (!strcmp(st, "succeeded") || !strcmp(st, "failed") || !strcmp(st, "cancelled"))) {
            printf("run %s %s in %.1fs\n", run, st, (double)(sl_wall_ms() - t0) / 1000.0);
            rc = !strcmp(st, "succeeded") ? 0 : 1;
            answer_release(&a1);
            break;
        }
        answer_release(&a1);
        if (interrupted) {
            fprintf(stderr,
                    "stopped waiting; the run goes on (cancel it with `sluice cancel "
                    "%s %s`)\n",
                    dag, run);
            rc = 1;
            break;
        }
        nap_ms(500);
    }
    cJSON_Delete(seen);
    free(p1);
    free(p2);
    return rc;
}

/* The DAG's declared params, for typing -p values; NULL (and a report) on failure. */
static cJSON *dag_params(struct client *c, const char *dag, int *rc)
{
    char *d = seg(dag);
    char *p = xasprintf("/api/v1/dags/%s", d);
    struct answer a;
    call(&a, c, "GET", p, NULL);
    free(p);
    free(d);
    cJSON *out = NULL;
    if (a.status != 200)
        *rc = report(c, &a);
    else
        out = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(a.doc, "params"), 1);
    answer_release(&a);
    return out ? out : NULL;
}

int cmd_client_trigger(int argc, char **argv)
{
    static const char usage[] = "sluice trigger DAG [-p NAME=VALUE ...] [--run-id ID] "
                                "[--logical-time T] [--wait] [--json]";
    struct client c;
    client_init(&c);
    struct args a;
    static const char *const names[] = {"--run-id", "--logical-time", NULL};
    static const char *const bnames[] = {"--wait", NULL};
    const char *vals[2] = {NULL, NULL};
    bool wait = false;
    if (parse_args(&c, &a, argc, argv, names, vals, bnames, &wait) || a.n_pos != 1) {
        args_release(&a);
        return usage_error(usage);
    }
    char *url = trim_url(c.url);
    c.url = url;
    int rc = 0;
    cJSON *decl = dag_params(&c, a.pos[0], &rc);
    cJSON *params = NULL;
    if (!decl || build_params(&params, a.params, a.n_params, decl) < 0) {
        cJSON_Delete(decl);
        free(url);
        args_release(&a);
        return rc ? rc : 2;
    }
    cJSON_Delete(decl);
    cJSON *body = cJSON_CreateObject();
    cJSON_AddItemToObject(body, "params", params);
    if (vals[0])
        cJSON_AddStringToObject(body, "run_id", vals[0]);
    if (vals[1])
        cJSON_AddStringToObject(body, "logical_time", vals[1]);
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    char *d = seg(a.pos[0]);
    char *path = xasprintf("/api/v1/dags/%s/runs", d);
    struct answer ans;
    call(&ans, &c, "POST", path, text);
    free(text);
    free(path);
    free(d);
    if (ans.status != 201 && ans.status != 200) {
        rc = report(&c, &ans);
    } else {
        if (c.json)
            print_json(&ans);
        else
            printf("run %s of %s %s\n", str(ans.doc, "run_id"), a.pos[0],
                   ans.status == 201 ? "queued" : "exists already (same request)");
        fflush(stdout);
        if (wait) {
            char *run = xstrdup(str(ans.doc, "run_id"));
            rc = wait_for(&c, a.pos[0], run);
            free(run);
        }
    }
    answer_release(&ans);
    free(url);
    args_release(&a);
    return rc;
}

int cmd_client_cancel(int argc, char **argv)
{
    struct client c;
    client_init(&c);
    struct args a;
    if (parse_args(&c, &a, argc, argv, NULL, NULL, NULL, NULL) || a.n_pos != 2) {
        args_release(&a);
        return usage_error("sluice cancel DAG RUN");
    }
    char *url = trim_url(c.url);
    c.url = url;
    char *d = seg(a.pos[0]), *r = seg(a.pos[1]);
    char *path = xasprintf("/api/v1/dags/%s/runs/%s/cancel", d, r);
    struct answer ans;
    call(&ans, &c, "POST", path, NULL);
    int rc = 0;
    if (ans.status != 202)
        rc = report(&c, &ans);
    else if (c.json)
        print_json(&ans);
    else
        printf("run %s of %s is cancelling: its steps are being stopped\n", a.pos[1], a.pos[0]);
    answer_release(&ans);
    free(path);
    free(d);
    free(r);
    free(url);
    args_release(&a);
    return rc;
}

int cmd_client_retry(int argc, char **argv)
{
    static const char usage[] =
        "sluice retry DAG RUN [--from STEP] [-p NAME=VALUE ...] [--run-id ID] [--wait]";
    struct client c;
    client_init(&c);
    struct args a;
    static const char *const names[] = {"--from", "--run-id", NULL};
    static const char *const bnames[] = {"--wait", NULL};
    const char *vals[2] = {NULL, NULL};
    bool wait = false;
    if (parse_args(&c, &a, argc, argv, names, vals, bnames, &wait) || a.n_pos != 2) {
        args_release(&a);
        return usage_error(usage);
    }
    char *url = trim_url(c.url);
    c.url = url;
    int rc = 0;
    cJSON *body = cJSON_CreateObject();
    if (a.n_params) {
        cJSON *decl = dag_params(&c, a.pos[0], &rc), *params = NULL;
        if (!decl || build_params(&params, a.params, a.n_params, decl) < 0) {
            cJSON_Delete(decl);
            cJSON_Delete(body);
            free(url);
            args_release(&a);
            return rc ? rc : 2;
        }
        cJSON_Delete(decl);
        cJSON_AddItemToObject(body, "params", params);
    }
    if (vals[0])
        cJSON_AddStringToObject(body, "from", vals[0]);
    if (vals[1])
        cJSON_AddStringToObject(body, "run_id", vals[1]);
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    char *d = seg(a.pos[0]), *r = seg(a.pos[1]);
    char *path = xasprintf("/api/v1/dags/%s/runs/%s/retry", d, r);
    struct answer ans;
    call(&ans, &c, "POST", path, text);
    if (ans.status != 201 && ans.status != 200) {
        rc = report(&c, &ans);
    } else {
        if (c.json) {
            print_json(&ans);
        } else {
            printf("run %s retries %s:", str(ans.doc, "run_id"), a.pos[1]);
            const cJSON *s;
            cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(ans.doc, "rerun_steps"))
                printf(" %s", s->valuestring);
            printf(" run again");
            if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(ans.doc, "reused_steps"))) {
                printf("; reused:");
                cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(ans.doc, "reused_steps"))
                    printf(" %s", s->valuestring);
            }
            printf("\n");
        }
        fflush(stdout);
        if (wait) {
            char *run = xstrdup(str(ans.doc, "run_id"));
            rc = wait_for(&c, a.pos[0], run);
            free(run);
        }
    }
    answer_release(&ans);
    free(text);
    free(path);
    free(d);
    free(r);
    free(url);
    args_release(&a);
    return rc;
}

/* --- logs ------------------------------------------------------------------------------------ */

struct log_stream {
    CURL *h;
    bool ok; /* the answer is 200: stream it out */
    struct strbuf err;
};

static size_t on_log_data(char *p, size_t sz, size_t n, void *arg)
{
    struct log_stream *ls = arg;
    long code = 0;
    curl_easy_getinfo(ls->h, CURLINFO_RESPONSE_CODE, &code);
    if (code == 200) {
        ls->ok = true;
        fwrite(p, sz, n, stdout);
        fflush(stdout);
        return sz * n;
    }
    strbuf_add(&ls->err, p, sz * n);
    return sz * n;
}

int cmd_client_logs(int argc, char **argv)
{
    static const char usage[] = "sluice logs DAG RUN STEP [--attempt N] [--map-index I] "
                                "[--tail N] [-f|--follow]";
    struct client c;
    client_init(&c);
    struct args a;
    static const char *const names[] = {"--attempt", "--map-index", "--tail", NULL};
    static const char *const bnames[] = {"-f", "--follow", NULL};
    const char *vals[3] = {NULL, NULL, NULL};
    bool f[2] = {false, false};
    if (parse_args(&c, &a, argc, argv, names, vals, bnames, f) || a.n_pos != 3) {
        args_release(&a);
        return usage_error(usage);
    }
    char *url = trim_url(c.url);
    c.url = url;
    char *d = seg(a.pos[0]), *r = seg(a.pos[1]), *s = seg(a.pos[2]);
    char *att = seg(vals[0] ? vals[0] : "latest");
    struct strbuf path = STRBUF_INIT;
    strbuf_addf(&path, "%s/api/v1/dags/%s/runs/%s/steps/%s/logs/%s?follow=%s", c.url, d, r, s, att,
                f[0] || f[1] ? "true" : "false");
    if (vals[1])
        strbuf_addf(&path, "&map_index=%s", vals[1]);
    if (vals[2])
        strbuf_addf(&path, "&tail=%s", vals[2]);
    struct log_stream ls = {.h = curl_easy_init(), .ok = false, .err = STRBUF_INIT};
    struct curl_slist *hl = NULL;
    char *auth = c.token ? xasprintf("Authorization: Bearer %s", c.token) : NULL;
    if (auth)
        hl = curl_slist_append(hl, auth);
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(ls.h, CURLOPT_URL, path.buf);
    curl_easy_setopt(ls.h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(ls.h, CURLOPT_WRITEFUNCTION, on_log_data);
    curl_easy_setopt(ls.h, CURLOPT_WRITEDATA, &ls);
    curl_easy_setopt(ls.h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(ls.h, CURLOPT_CONNECTTIMEOUT, 10L);
    CURLcode cc = curl_easy_perform(ls.h);
    int rc = 0;
    struct answer ans = {0};
    strbuf_init(&ans.body, 0);
    curl_easy_getinfo(ls.h, CURLINFO_RESPONSE_CODE, &ans.status);
    if (cc != CURLE_OK && !ls.ok) {
        ans.status = 0;
        snprintf(ans.curl_err, sizeof(ans.curl_err), "%s", errbuf);
        rc = report(&c, &ans);
    } else if (ans.status != 200) {
        ans.doc = cJSON_Parse(ls.err.buf);
        rc = report(&c, &ans);
    }
    answer_release(&ans);
    strbuf_release(&ls.err);
    curl_slist_free_all(hl);
    curl_easy_cleanup(ls.h);
    free(auth);
    strbuf_release(&path);
    free(att);
    free(d);
    free(r);
    free(s);
    free(url);
    args_release(&a);
    return rc;
}

/* --- tokens ---------------------------------------------------------------------------------- */

int cmd_client_token(int argc, char **argv)
{
    static const char usage[] = "sluice token create --role viewer|operator|admin [--name N] | "
                                "sluice token list | sluice token revoke ID";
    struct client c;
    client_init(&c);
    struct args a;
    static const char *const names[] = {"--role", "--name", NULL};
    const char *vals[2] = {NULL, NULL};
    if (parse_args(&c, &a, argc, argv, names, vals, NULL, NULL) || a.n_pos < 1) {
        args_release(&a);
        return usage_error(usage);
    }
    char *url = trim_url(c.url);
    c.url = url;
    int rc = 0;
    struct answer ans;
    memset(&ans, 0, sizeof(ans));
    strbuf_init(&ans.body, 0);
    if (!strcmp(a.pos[0], "create") && a.n_pos == 1 && vals[0]) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "role", vals[0]);
        if (vals[1])
            cJSON_AddStringToObject(b, "name", vals[1]);
        char *text = cJSON_PrintUnformatted(b);
        cJSON_Delete(b);
        answer_release(&ans);
        call(&ans, &c, "POST", "/api/v1/tokens", text);
        free(text);
        if (ans.status != 201)
            rc = report(&c, &ans);
        else if (c.json)
            print_json(&ans);
        else
            printf("token %d (%s, role %s) - shown only now, keep it secret:\n%s\n",
                   (int)num(ans.doc, "id"), str(ans.doc, "name"), str(ans.doc, "role"),
                   str(ans.doc, "token"));
    } else if (!strcmp(a.pos[0], "list") && a.n_pos == 1) {
        answer_release(&ans);
        call(&ans, &c, "GET", "/api/v1/tokens", NULL);
        if (ans.status != 200) {
            rc = report(&c, &ans);
        } else if (c.json) {
            print_json(&ans);
        } else {
            printf("%-6s %-24s %-9s %-22s %-22s %s\n", "ID", "NAME", "ROLE", "CREATED", "LAST USED",
                   "REVOKED");
            const cJSON *t;
            cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(ans.doc, "tokens"))
                printf("%-6d %-24s %-9s %-22s %-22s %s\n", (int)num(t, "id"), str(t, "name"),
                       str(t, "role"), or_dash(str(t, "created_at")),
                       or_dash(str(t, "last_used_at")), or_dash(str(t, "revoked_at")));
        }
    } else if (!strcmp(a.pos[0], "revoke") && a.n_pos == 2) {
        char *id = seg(a.pos[1]);
        char *path = xasprintf("/api/v1/tokens/%s", id);
        answer_release(&ans);
        call(&ans, &c, "DELETE", path, NULL);
        free(path);
        free(id);
        if (ans.status != 200)
            rc = report(&c, &ans);
        else if (c.json)
            print_json(&ans);
        else
            printf("token %s (%s) is revoked\n", a.pos[1], str(ans.doc, "name"));
    } else {
        rc = usage_error(usage);
    }
    answer_release(&ans);
    free(url);
    args_release(&a);
    return rc;
}

/* --- backfills ------------------------------------------------------------------------------ */

static void print_backfill(const cJSON *b)
{
    printf("backfill %d of %s: %s, %s .. %s, reprocess %s, at most %d at once\n", (int)num(b, "id"),
           str(b, "dag_id"), str(b, "state"), str(b, "start"), str(b, "end"), str(b, "reprocess"),
           (int)num(b, "max_active_runs"));
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(b, "logical_times");
    printf("%d logical times", cJSON_GetArraySize(lt));
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(b, "runs");
    const cJSON *r;
    bool first = true;
    cJSON_ArrayForEach(r, runs)
    {
        printf("%s %s %d", first ? ";" : ",", r->string, (int)r->valuedouble);
        first = false;
    }
    printf("\n");
    if (!strcmp(or_dash(str(b, "state")), "dry_run")) {
        const cJSON *t;
        cJSON_ArrayForEach(t, lt) printf("  %s\n", t->valuestring);
    }
}

int cmd_client_backfill(int argc, char **argv)
{
    static const char usage[] =
        "sluice backfill DAG --start T --end T [--reprocess none|failed|all] [--max-active N] "
        "[-p NAME=VALUE ...] [--dry-run] | sluice backfill status ID | sluice backfill cancel ID";
    struct client c;
    client_init(&c);
    struct args a;
    static const char *const names[] = {"--start", "--end", "--reprocess", "--max-active", NULL};
    static const char *const bnames[] = {"--dry-run", NULL};
    const char *vals[4] = {NULL, NULL, NULL, NULL};
    bool dry = false;
    if (parse_args(&c, &a, argc, argv, names, vals, bnames, &dry) || a.n_pos < 1) {
        args_release(&a);
        return usage_error(usage);
    }
    char *url = trim_url(c.url);
    c.url = url;
    int rc = 0;
    struct answer ans;
    memset(&ans, 0, sizeof(ans));
    strbuf_init(&ans.body, 0);
    bool status = !strcmp(a.pos[0], "status"), cancel = !strcmp(a.pos[0], "cancel");
    if ((status || cancel) && a.n_pos == 2) {
        char *id = seg(a.pos[1]);
        char *path = xasprintf("/api/v1/backfills/%s%s", id, cancel ? "/cancel" : "");
        answer_release(&ans);
        call(&ans, &c, cancel ? "POST" : "GET", path, NULL);
        free(path);
        free(id);
        if (ans.status != 200 && ans.status != 202)
            rc = report(&c, &ans);
        else if (c.json)
            print_json(&ans);
        else
            print_backfill(ans.doc);
    } else if (a.n_pos == 1 && vals[0] && vals[1]) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "dag_id", a.pos[0]);
        cJSON_AddStringToObject(b, "start", vals[0]);
        cJSON_AddStringToObject(b, "end", vals[1]);
        if (vals[2])
            cJSON_AddStringToObject(b, "reprocess", vals[2]);
        if (vals[3]) {
            char *end;
            long n = strtol(vals[3], &end, 10);
            if (*end || n < 1) {
                cJSON_Delete(b);
                answer_release(&ans);
                free(url);
                args_release(&a);
                fprintf(stderr, "error: --max-active must be a number from 1\n");
                return 2;
            }
            cJSON_AddNumberToObject(b, "max_active_runs", (double)n);
        }
        if (dry)
            cJSON_AddBoolToObject(b, "dry_run", true);
        if (a.n_params) {
            cJSON *decl = dag_params(&c, a.pos[0], &rc), *params = NULL;
            if (!decl || build_params(&params, a.params, a.n_params, decl) < 0) {
                cJSON_Delete(decl);
                cJSON_Delete(b);
                answer_release(&ans);
                free(url);
                args_release(&a);
                return rc ? rc : 2;
            }
            cJSON_Delete(decl);
            cJSON_AddItemToObject(b, "params", params);
        }
        char *text = cJSON_PrintUnformatted(b);
        cJSON_Delete(b);
        answer_release(&ans);
        call(&ans, &c, "POST", "/api/v1/backfills", text);
        free(text);
        if (ans.status != 201 && ans.status != 200)
            rc = report(&c, &ans);
        else if (c.json)
            print_json(&ans);
        else
            print_backfill(ans.doc);
    } else {
        rc = usage_error(usage);
    }
    answer_release(&ans);
    free(url);
    args_release(&a);
    return rc;
}
