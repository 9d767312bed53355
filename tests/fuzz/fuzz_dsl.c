/*
 * tests/fuzz/fuzz_dsl.c - libFuzzer target for the DAG language (dsl/dsl.h).
 *
 * Each input is a DAG file. Whatever the bytes, dsl_parse_buffer() must return
 * without crashing, leaking or tripping a sanitizer. When a file parses, the
 * target also checks the property docs/dsl.md promises for the normalized
 * model: its JSON (pretty and compact alike; JSON is YAML) parses back into a
 * model that prints as the same bytes. A broken round trip calls abort(), so
 * libFuzzer saves the input as a crash. The graph renderers run on every model
 * too, since they walk the same arrays from a different angle.
 *
 * Byte-level mutations of YAML seldom stay valid DAGs (about one input in a
 * thousand), which starves the round-trip check. So an input that starts with
 * a NUL byte - never a valid DAG file, the parser refuses NUL - is not parsed
 * as it is: its bytes drive a generator (gen_dag) that writes a DAG which is
 * well-formed by construction but full of awkward values: strings that look
 * like numbers, booleans or null, escapes, control characters, non-ASCII,
 * YAML-special characters, extreme quantities and durations, nested fan-out
 * items. Those are exactly the values a JSON -> YAML round trip can get wrong.
 * Both kinds of input are checked the same way.
 *
 * Built and run by `make fuzz` (tests/fuzz/corpus/fuzz_dsl/ seeds it,
 * tests/fuzz/dsl.dict teaches it the language's keys).
 */
#include "dsl/dsl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The normalized JSON of a model can be much larger than its YAML (every
 * default written out, aliases expanded), so the re-parse gets room enough. */
#define REPARSE_MAX_BYTES ((size_t)64 << 20)

static void fail(const char *what, const struct strbuf *json, const struct dsl_diags *diags)
{
    fprintf(stderr, "fuzz_dsl: property broken: %s\n", what);
    if (json)
        fprintf(stderr, "--- normalized JSON ---\n%s\n", json->buf);
    if (diags && diags->n > 0) {
        fprintf(stderr, "--- diagnostics of the re-parse ---\n");
        dsl_diags_print(diags, stderr);
    }
    abort();
}

/* Parses json (the output of dsl_dag_to_json) and checks that the new model
 * prints, in the same style, as exactly json. */
static void check_round_trip(const struct strbuf *json, bool pretty)
{
    const struct dsl_options opts = {.max_bytes = REPARSE_MAX_BYTES};
    struct dsl_diags diags;
    struct dsl_dag *again = NULL;
    struct strbuf json2 = STRBUF_INIT;

    dsl_diags_init(&diags);
    if (dsl_parse_buffer(&again, "normalized.json", json->buf, json->len, &opts, &diags) != 0)
        fail(pretty ? "pretty JSON does not parse" : "compact JSON does not parse", json, &diags);
    dsl_dag_to_json(&json2, again, pretty);
    if (json2.len != json->len || memcmp(json2.buf, json->buf, json->len) != 0) {
        fprintf(stderr, "--- JSON of the re-parse ---\n%s\n", json2.buf);
        fail("the re-parse gives different JSON", json, NULL);
    }
    strbuf_release(&json2);
    dsl_dag_free(again);
    dsl_diags_release(&diags);
}

/* --- the generator mode ----------------------------------------------------------- */

/* The input, read as a stream of choices; reads past its end give 0. */
struct choices {
    const uint8_t *p;
    size_t n;
};

#define LEN(a) ((unsigned)(sizeof(a) / sizeof((a)[0])))

static unsigned pick(struct choices *c, unsigned n)
{
    if (c->n == 0 || n == 0)
        return 0;
    c->n--;
    return *c->p++ % n;
}

/* Scalars the YAML 1.2 core schema reads in surprising ways: plain_ok ones are
 * scalars wherever a value may stand, so they are also written unquoted.
 * (Unformatted: clang-format would put one entry per line.) */
/* clang-format off */
static const char *const tricky_plain_ok[] = {
    "yes", "no", "on", "off", "y", "n", "true", "True", "FALSE", "null", "Null", "~", "", "0",
    "-0", "+1", "007", "0x1F", "0o17", "0b101", "1_000", "1e3", "1E-3", ".5", "5.", ".inf",
    "-.Inf", ".nan", "NaN", "12:30", "2026-01-01", "1.0", "9007199254740993",
    "-9223372036854775808", "1e400", "0.1", "3.14159265358979323846"};
/* clang-format on */
static const char *const tricky_quoted[] = {
    "a: b", "- x",  "#x",  "x #y", "&a", "*a", "!t", "%x", "@x",   "`x",       "{{ params.p0 }}",
    "{{",   "}}",   "{x}", "[x]",  "'",  "\"", "\\", "..", "../x", "s3://b/k", "https://h/p",
    "é",    "日本", "😀"};
#define N_PLAIN_OK LEN(tricky_plain_ok)
#define N_QUOTED   LEN(tricky_quoted)

/* Characters for generated strings besides ASCII: multi-byte UTF-8, written
 * raw or (in double quotes) as \u escapes. U+2028 is last: YAML reads it raw
 * as a line break, which a quoted scalar inside a flow collection cannot hold
 * at that indentation, so it is only ever written escaped. */
static const char *const wide_chars[] = {"é",        "日",           "😀",
                                         "\xc2\xa0", "\xef\xbb\xbf", "\xe2\x80\xa8"};
static const char *const wide_escapes[] = {"\\u00e9", "\\u65e5", "\\U0001F600",
                                           "\\u00a0", "\\ufeff", "\\u2028"};
#define N_WIDE LEN(wide_chars)

/* Appends a generated string as a YAML scalar: plain from the tricky list,
 * single-quoted, or double-quoted with escapes. */
static void gen_string(struct strbuf *sb, struct choices *c)
{
    unsigned style = pick(c, 4);
    if (style == 0) {
        unsigned i = pick(c, N_PLAIN_OK + N_QUOTED);
        const char *t = i < N_PLAIN_OK ? tricky_plain_ok[i] : tricky_quoted[i - N_PLAIN_OK];
        strbuf_addch(sb, '"');
        for (; *t; t++) {
            if (*t == '"' || *t == '\\')
                strbuf_addch(sb, '\\');
            strbuf_addch(sb, *t);
        }
        strbuf_addch(sb, '"');
        return;
    }
    if (style == 1) {
        const char *t = tricky_plain_ok[pick(c, N_PLAIN_OK)];
        strbuf_addstr(sb, *t ? t : "''");
        return;
    }
    bool dq = style == 3;
    unsigned len = pick(c, 24);
    strbuf_addch(sb, dq ? '"' : '\'');
    for (unsigned i = 0; i < len; i++) {
        unsigned b = pick(c, 256);
        if (b >= 0x80) {
            unsigned w = b % N_WIDE;
            if (dq && ((b & 1) || w == N_WIDE - 1))
                strbuf_addstr(sb, wide_escapes[w]);
            else if (w != N_WIDE - 1)
                strbuf_addstr(sb, wide_chars[w]);
        } else if (b < 0x20 || b == 0x7f) {
            if (dq)
                strbuf_addf(sb, b == '\n' ? "\\n" : b == '\t' ? "\\t" : "\\x%02x", b);
            else
                strbuf_addch(sb, ' ');
        } else if (dq && (b == '"' || b == '\\')) {
            strbuf_addch(sb, '\\');
            strbuf_addch(sb, (int)b);
        } else if (!dq && b == '\'') {
            strbuf_addstr(sb, "''");
        } else {
            strbuf_addch(sb, (int)b);
        }
    }
    strbuf_addch(sb, dq ? '"' : '\'');
}

/* A flow value for params defaults and fan-out items: scalars, lists, maps. */
static void gen_value(struct strbuf *sb, struct choices *c, int depth)
{
    unsigned k = depth > 3 ? 0 : pick(c, 6);
    if (k == 4) {
        unsigned n = pick(c, 4);
        strbuf_addch(sb, '[');
        for (unsigned i = 0; i < n; i++) {
            if (i)
                strbuf_addstr(sb, ", ");
            gen_value(sb, c, depth + 1);
        }
        strbuf_addch(sb, ']');
    } else if (k == 5) {
        unsigned n = pick(c, 4);
        strbuf_addch(sb, '{');
        for (unsigned i = 0; i < n; i++) {
            strbuf_addf(sb, "%sk%u: ", i ? ", " : "", i);
            gen_value(sb, c, depth + 1);
        }
        strbuf_addch(sb, '}');
    } else {
        gen_string(sb, c);
    }
}

/* A default for a parameter of types[type]: mostly of that type, sometimes not. */
static void gen_default(struct strbuf *sb, struct choices *c, unsigned type)
{
    static const char *const ints[] = {"0",   "-5", "0x2A", "0o17", "9007199254740992",
                                       "1e3", "-0", "42.0"};
    static const char *const nums[] = {
        "0.5", "1e-7", "-0.0", "1e21", "3", ".5", "1.7976931348623157e308", "5e-324"};
    if (pick(c, 8) == 0) {
        gen_value(sb, c, 0);
        return;
    }
    switch (type) {
    case 1:
        strbuf_addstr(sb, ints[pick(c, LEN(ints))]);
        break;
    case 2:
        strbuf_addstr(sb, nums[pick(c, LEN(nums))]);
        break;
    case 3:
        strbuf_addstr(sb, pick(c, 2) ? "true" : "False");
        break;
    case 4:
        strbuf_addch(sb, '[');
        for (unsigned i = 0, n = pick(c, 4); i < n; i++) {
            strbuf_addstr(sb, i ? ", " : "");
            gen_value(sb, c, 1);
        }
        strbuf_addch(sb, ']');
        break;
    case 5:
        strbuf_addstr(sb, "{a: ");
        gen_value(sb, c, 1);
        strbuf_addstr(sb, ", \"b c\": ");
        gen_value(sb, c, 1);
        strbuf_addch(sb, '}');
        break;
    default:
        gen_string(sb, c);
    }
}

/* Valid ones first: most picks take one of the first N_GOOD_QUANTITIES. */
#define N_GOOD_QUANTITIES 10
static const char *const quantities[] = {"1",
                                         "500m",
                                         "0.5",
                                         "2Gi",
                                         "1e3",
                                         "1Ki",
                                         "0.001",
                                         "1.5",
                                         "128974848",
                                         "100M",
                                         "9223372036854775807",
                                         "1E",
                                         "3m",
                                         "0"};
static const char *const durations[] = {"1s", "500ms",  "1h30m", "2d",     "0",
                                        "0s", "59m59s", "1ms",   "99999h", "1d1h1m1s1ms"};
static const char *const schedules[] = {"\"@daily\"",      "\"@every 90s\"", "\"*/5 * * * *\"",
                                        "\"0 2 * * 1-5\"", "\"@yearly\"",    "\"30 6 1 * *\""};
static const char *const zones[] = {"UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata",
                                    "Australia/Lord_Howe"};
static const char *const dates[] = {"2026-01-01", "2026-03-29T02:30", "2026-01-01T06:00:00Z",
                                    "2026-06-01T12:00:00+02:00", "1970-01-01"};
/* Written inside double quotes, so no '"' or '\\' in them. */
static const char *const templates[] = {"{{ params.p0 }}",
                                        "{{ run.id }}",
                                        "{{ dag.dir }}/x",
                                        "{{ dag.name }}",
                                        "{{ run.logical_time }}",
                                        "{{'{{'}} lit {{'}}'}}",
                                        "a {{ params.p0 }} b {{ run.id }}",
                                        "{{ 'x' }}",
                                        "{{ [1, 'a'] }}",
                                        "{{ params.p0 == 1 and not false }}"};
static const char *const rules[] = {"all_success",
                                    "all_done",
                                    "all_failed",
                                    "one_success",
                                    "one_failed",
                                    "none_failed",
                                    "none_failed_min_one_success",
                                    "always"};
static const char *const types[] = {"string", "integer", "number", "boolean", "array", "object"};

/* Writes a DAG driven by the choices. Every reference it writes resolves, so
 * most generated DAGs are valid; values that break a rule (a default of the
 * wrong type, an out-of-range quantity) make some invalid, which is fine. */
static void gen_dag(struct strbuf *sb, struct choices *c)
{
    unsigned n_params = 1 + pick(c, 3), n_steps = 1 + pick(c, 6);

    strbuf_addstr(sb, "name: fuzz-gen\ndescription: ");
    gen_string(sb, c);
    strbuf_addstr(sb, "\ntags: [");
    for (unsigned i = 0, n = pick(c, 3); i < n; i++) {
        strbuf_addstr(sb, i ? ", " : "");
        gen_string(sb, c);
    }
    strbuf_addstr(sb, "]\n");
    if (pick(c, 2))
        strbuf_addf(sb, "schedule: %s\ntimezone: %s\nstart_date: %s\ncatchup: %s\n",
                    schedules[pick(c, LEN(schedules))], zones[pick(c, LEN(zones))],
                    dates[pick(c, LEN(dates))], pick(c, 2) ? "all" : "latest");
    if (pick(c, 2))
        strbuf_addf(sb, "max_active_runs: %u\nmax_parallel_steps: %u\n", 1 + pick(c, 200),
                    1 + pick(c, 255));
    strbuf_addstr(sb, "params:\n");
    for (unsigned i = 0; i < n_params; i++) {
        unsigned type = pick(c, LEN(types));
        strbuf_addf(sb, "  p%u: {type: %s", i, types[type]);
        if (pick(c, 3)) {
            strbuf_addstr(sb, ", default: ");
            gen_default(sb, c, type);
        }
        if (pick(c, 4) == 0) {
            strbuf_addstr(sb, ", description: ");
            gen_string(sb, c);
        }
        strbuf_addstr(sb, "}\n");
    }
    if (pick(c, 2)) {
        strbuf_addstr(sb, "defaults:\n  env: {DEF: ");
        gen_string(sb, c);
        strbuf_addf(sb,
                    "}\n  labels: {team: data}\n  retries: {limit: %u, backoff: {initial: %s}}\n",
                    pick(c, 10), durations[pick(c, 2)]);
    }
    strbuf_addstr(sb, "steps:\n");
    for (unsigned i = 0; i < n_steps; i++) {
        strbuf_addf(sb, "  - name: s%u\n", i);
        if (i > 0 && pick(c, 3)) {
            unsigned d = pick(c, i);
            strbuf_addf(sb, "    depends_on: [s%u]\n    trigger_rule: %s\n", d,
                        rules[pick(c, LEN(rules))]);
            if (pick(c, 3) == 0)
                strbuf_addf(sb,
                            "    when: steps.s%u.outputs.params.out >= %d or steps.s%u.state "
                            "== 'succeeded'\n",
                            d, (int)pick(c, 200) - 100, d);
        }
        bool fan = pick(c, 4) == 0;
        if (fan) {
            strbuf_addstr(sb, "    for_each: [");
            for (unsigned k = 0, n = 1 + pick(c, 4); k < n; k++) {
                strbuf_addstr(sb, k ? ", " : "");
                gen_value(sb, c, 0);
            }
            strbuf_addf(sb, "]\n    max_parallel: %u\n", 1 + pick(c, 8));
        }
        strbuf_addf(sb, "    command: [run, \"%s\"", templates[pick(c, LEN(templates))]);
        for (unsigned k = 0, n = pick(c, 3); k < n; k++) {
            strbuf_addstr(sb, ", ");
            gen_string(sb, c);
        }
        strbuf_addstr(sb, fan ? ", \"{{ item }}\"]\n" : "]\n");
        if (pick(c, 2)) {
            strbuf_addstr(sb, "    env:\n      A: ");
            gen_string(sb, c);
            strbuf_addstr(sb, "\n");
            if (pick(c, 2))
                strbuf_addstr(sb, "      S: {from_secret: {name: tok, key: k}}\n");
        }
        if (pick(c, 2)) {
            unsigned nq = pick(c, 8) ? N_GOOD_QUANTITIES : LEN(quantities);
            strbuf_addf(sb, "    resources: {cpu: \"%s\", memory: \"%s\", gpu: %u}\n",
                        quantities[pick(c, nq)], quantities[pick(c, nq)], pick(c, 3));
        }
        if (pick(c, 2))
            strbuf_addf(sb,
                        "    retries: {limit: %u, policy: on_failure, backoff: {initial: %s, "
                        "factor: %u.%u, max: %s}}\n",
                        pick(c, 100), durations[pick(c, LEN(durations))], 1 + pick(c, 9),
                        pick(c, 10), pick(c, 8) ? "99999h" : durations[pick(c, LEN(durations))]);
        if (pick(c, 2))
            strbuf_addf(sb, "    timeout: %s\n    pending_timeout: %s\n",
                        durations[pick(c, LEN(durations))], durations[pick(c, LEN(durations))]);
        if (pick(c, 3) == 0) {
            strbuf_addstr(sb, "    labels: {app: web, tier: \"1\"}\n    annotations: {note: ");
            gen_string(sb, c);
            strbuf_addstr(sb,
                          "}\n    node_selector: {pool: a100}\n"
                          "    tolerations: [{key: gpu, operator: Exists, effect: NoSchedule}]\n");
        }
        if (pick(c, 3) == 0)
            strbuf_addf(sb,
                        "    queue: q%u\n    workdir: \"/w/{{ run.id }}\"\n    image: \"i:%u\"\n",
                        pick(c, 9), pick(c, 9));
        strbuf_addstr(sb, "    outputs: {params: {out: out.txt}, artifacts: {data: data/}}\n");
    }
    if (pick(c, 3) == 0)
        strbuf_addstr(sb, "on_exit:\n  - name: fin\n    command: [echo, \"{{ run.state }}\"]\n");
    if (pick(c, 3) == 0)
        strbuf_addstr(sb, "notify:\n  on_failure: [https://hooks.example.com/x]\n");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dsl_diags diags;
    struct dsl_dag *dag = NULL;
    struct strbuf sb = STRBUF_INIT;

    struct strbuf gen = STRBUF_INIT;
    const char *text = (const char *)data;
    size_t len = size;
    if (size > 0 && data[0] == 0) {
        struct choices c = {data + 1, size - 1};
        gen_dag(&gen, &c);
        text = gen.buf;
        len = gen.len;
    }

    dsl_diags_init(&diags);
    if (dsl_parse_buffer(&dag, "fuzz.yaml", text, len, NULL, &diags) != 0) {
        /* A refused file must say why. */
        if (diags.n == 0)
            fail("parse failed without a diagnostic", NULL, NULL);
        goto cleanup;
    }

    dsl_dag_to_json(&sb, dag, true);
    check_round_trip(&sb, true);
    strbuf_reset(&sb);
    dsl_dag_to_json(&sb, dag, false);
    check_round_trip(&sb, false);

    strbuf_reset(&sb);
    dsl_dag_graph(&sb, dag, DSL_GRAPH_DOT);
    strbuf_reset(&sb);
    dsl_dag_graph(&sb, dag, DSL_GRAPH_MERMAID);

    for (size_t i = 0; i < dag->n_steps; i++)
        if (dsl_dag_find_step(dag, dag->steps[i].name) == NULL)
            fail("a step cannot be found by its name", NULL, NULL);

cleanup:
    strbuf_release(&gen);
    strbuf_release(&sb);
    dsl_dag_free(dag);
    dsl_diags_release(&diags);
    return 0;
}
