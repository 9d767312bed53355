/*
 * tests/unit/queue/check_msg.c - the queue's JSON messages: round trips, and a table of
 * malformed messages that must decode to an error with a clear reason.
 */
#include "queue/queue.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/xalloc.h"
#include "tests/testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct queue_step_msg sample_step(cJSON *spec)
{
    struct queue_step_msg m = {.attempt_id = "a-1",
                               .dag_id = "etl",
                               .run_id = "run \"42\"",
                               .step = "extract",
                               .map_index = 3,
                               .attempt = 2,
                               .spec = spec};
    return m;
}

START_TEST(test_step_round_trip)
{
    cJSON *spec =
        cJSON_Parse("{\"image\":\"python:3.12\",\"argv\":[\"python\",\"-c\",\"print(1)\"],"
                    "\"env\":{\"A\":\"\\u00e9\\n\"},\"timeout_ms\":60000}");
    struct queue_step_msg in = sample_step(spec);
    struct strbuf sb = STRBUF_INIT;
    ck_assert_int_eq(queue_step_msg_encode(&sb, &in), 0);
    ck_assert_msg(!strncmp(sb.buf, "{\"v\":1,\"attempt_id\":\"a-1\",", 25), "%s", sb.buf);
    ck_assert(strstr(sb.buf, "\"map_index\":3,\"attempt\":2,") != NULL);

    struct queue_step_msg *out = NULL;
    char reason[QUEUE_REASON_BUFSZ] = "";
    ck_assert_int_eq(queue_step_msg_decode(&out, sb.buf, sb.len, reason, sizeof(reason)), 0);
    ck_assert_str_eq(out->attempt_id, "a-1");
    ck_assert_str_eq(out->dag_id, "etl");
    ck_assert_str_eq(out->run_id, "run \"42\"");
    ck_assert_str_eq(out->step, "extract");
    ck_assert_int_eq(out->map_index, 3);
    ck_assert_int_eq(out->attempt, 2);
    ck_assert(cJSON_Compare(out->spec, spec, 1));
    queue_step_msg_free(out);

    /* A plain step, and encoding appends. */
    in.map_index = -1;
    strbuf_addstr(&sb, "|");
    size_t mark = sb.len;
    ck_assert_int_eq(queue_step_msg_encode(&sb, &in), 0);
    ck_assert_int_eq(queue_step_msg_decode(&out, sb.buf + mark, sb.len - mark, NULL, 0), 0);
    ck_assert_int_eq(out->map_index, -1);
    queue_step_msg_free(out);
    strbuf_release(&sb);
    cJSON_Delete(spec);
}
END_TEST

START_TEST(test_event_round_trip)
{
    cJSON *outputs = cJSON_Parse("{\"accuracy\":\"0.97\",\"rows\":12}");
    struct queue_event_msg in = {.attempt_id = "a-1",
                                 .kind = QUEUE_EVENT_FAILED,
                                 .worker_id = "w-1",
                                 .seq = 2,
                                 .time_ms = 1700000000123,
                                 .started_ms = 1700000000000,
                                 .finished_ms = 1700000000100,
                                 .has_exit_code = true,
                                 .exit_code = 137,
                                 .reason = "OOMKilled",
                                 .outputs = outputs,
                                 .failure = "step",
                                 .log_path = "/logs/etl/r1/train/1.log"};
    struct strbuf sb = STRBUF_INIT;
    ck_assert_int_eq(queue_event_msg_encode(&sb, &in), 0);
    ck_assert_msg(strstr(sb.buf, "\"time_ms\":1700000000123") != NULL, "%s", sb.buf);
    ck_assert_msg(strstr(sb.buf, "\"failure\":\"step\"") != NULL, "%s", sb.buf);
    struct queue_event_msg *out = NULL;
    ck_assert_int_eq(queue_event_msg_decode(&out, sb.buf, sb.len, NULL, 0), 0);
    ck_assert_str_eq(out->attempt_id, "a-1");
    ck_assert_int_eq(out->kind, QUEUE_EVENT_FAILED);
    ck_assert_str_eq(out->worker_id, "w-1");
    ck_assert_int_eq(out->seq, 2);
    ck_assert_int_eq(out->time_ms, 1700000000123);
    ck_assert_int_eq(out->started_ms, 1700000000000);
    ck_assert_int_eq(out->finished_ms, 1700000000100);
    ck_assert(out->has_exit_code);
    ck_assert_int_eq(out->exit_code, 137);
    ck_assert_str_eq(out->reason, "OOMKilled");
    ck_assert_str_eq(out->failure, "step");
    ck_assert_str_eq(out->log_path, "/logs/etl/r1/train/1.log");
    ck_assert(cJSON_Compare(out->outputs, outputs, 1));
    queue_event_msg_free(out);
    strbuf_release(&sb);

    /* running: no exit code, no reason, no outputs; decoding gives an empty object. */
    struct queue_event_msg running = {.attempt_id = "a-1",
                                      .kind = QUEUE_EVENT_RUNNING,
                                      .worker_id = "w-1",
                                      .seq = 1,
                                      .time_ms = 5};
    ck_assert_int_eq(queue_event_msg_encode(&sb, &running), 0);
    ck_assert_int_eq(queue_event_msg_decode(&out, sb.buf, sb.len, NULL, 0), 0);
    ck_assert_int_eq(out->kind, QUEUE_EVENT_RUNNING);
    ck_assert(!out->has_exit_code);
    ck_assert_ptr_null(out->reason);
    ck_assert_ptr_null(out->failure); /* absent: not written, decoded as NULL */
    ck_assert_ptr_null(out->log_path);
    ck_assert_ptr_null(strstr(sb.buf, "failure"));
    ck_assert(cJSON_IsObject(out->outputs) && out->outputs->child == NULL);
    queue_event_msg_free(out);
    strbuf_release(&sb);
    cJSON_Delete(outputs);
}
END_TEST

START_TEST(test_cancel_round_trip)
{
    struct queue_cancel_msg in = {
        .run_id = "r-1", .attempt_id = NULL, .reason = "by alice", .time_ms = 9};
    struct strbuf sb = STRBUF_INIT;
    ck_assert_int_eq(queue_cancel_msg_encode(&sb, &in), 0);
    struct queue_cancel_msg *out = NULL;
    ck_assert_int_eq(queue_cancel_msg_decode(&out, sb.buf, sb.len, NULL, 0), 0);
    ck_assert_str_eq(out->run_id, "r-1");
    ck_assert_ptr_null(out->attempt_id);
    ck_assert_str_eq(out->reason, "by alice");
    ck_assert_int_eq(out->time_ms, 9);
    queue_cancel_msg_free(out);
    strbuf_release(&sb);

    in.attempt_id = "a-7";
    in.reason = NULL;
    ck_assert_int_eq(queue_cancel_msg_encode(&sb, &in), 0);
    ck_assert_int_eq(queue_cancel_msg_decode(&out, sb.buf, sb.len, NULL, 0), 0);
    ck_assert_str_eq(out->attempt_id, "a-7");
    ck_assert_ptr_null(out->reason);
    queue_cancel_msg_free(out);
    strbuf_release(&sb);
}
END_TEST

enum kind { STEP, EVENT, CANCEL };

#define STEP_OK                                                                                    \
    "\"attempt_id\":\"a\",\"dag_id\":\"d\",\"run_id\":\"r\",\"step\":\"s\",\"map_index\":-1,"      \
    "\"attempt\":1"
#define EVENT_OK                                                                                   \
    "\"attempt_id\":\"a\",\"kind\":\"running\",\"worker_id\":\"w\",\"seq\":0,\"time_ms\":1"

/* Each case: what to decode, the code and a part of the reason expected. */
static const struct {
    enum kind kind;
    int code;
    const char *json;
    const char *reason;
} decode_cases[] = {
    /* accepted */
    {STEP, 0, "{\"v\":1," STEP_OK ",\"spec\":{}}", ""},
    {STEP, 0, " {\"v\":1," STEP_OK ",\"spec\":{},\"future\":[1]}\n", ""}, /* unknown field */
    {STEP, 0, "{\"v\":1.0," STEP_OK ",\"spec\":{}}", ""},
    {EVENT, 0, "{\"v\":1," EVENT_OK "}", ""},
    {EVENT, 0, "{\"v\":1," EVENT_OK ",\"exit_code\":null,\"reason\":null,\"outputs\":null}", ""},
    {EVENT, 0, "{\"v\":1," EVENT_OK ",\"exit_code\":-9}", ""},
    {EVENT, 0, "{\"v\":1," EVENT_OK ",\"failure\":\"cancelled\",\"log_path\":\"/l\"}", ""},
    {EVENT, 0, "{\"v\":1," EVENT_OK ",\"failure\":null,\"log_path\":null}", ""},
    {CANCEL, 0, "{\"v\":1,\"run_id\":\"r\",\"time_ms\":0}", ""},
    /* not JSON */
    {STEP, SL_EPARSE, "", "empty"},
    {STEP, SL_EPARSE, "not json", "not JSON (syntax error at byte 0)"},
    {STEP, SL_EPARSE, "{\"v\":1,", "not JSON"},
    {STEP, SL_EPARSE, "{\"v\":1," STEP_OK ",\"spec\":{}} {}", "unexpected data after"},
    {EVENT, SL_EPARSE, "{\"v\":1}x", "unexpected data after the JSON value at byte 7"},
    /* not an object, wrong version */
    {STEP, SL_EINVALID, "[1,2]", "not a JSON object"},
    {STEP, SL_EINVALID, "\"v\"", "not a JSON object"},
    {STEP, SL_EINVALID, "{}", "field \"v\" (the version) is missing"},
    {STEP, SL_EINVALID, "{\"v\":2," STEP_OK ",\"spec\":{}}", "version 2 is not supported"},
    {EVENT, SL_EINVALID, "{\"v\":0}", "version 0 is not supported"},
    {CANCEL, SL_EINVALID, "{\"v\":\"1\"}", "field \"v\" must be the number 1"},
    {CANCEL, SL_EINVALID, "{\"v\":1e300}", "field \"v\" must be the number 1"},
    /* missing and mistyped fields */
    {STEP, SL_EINVALID, "{\"v\":1,\"attempt_id\":\"a\"}", "field \"dag_id\" is missing"},
    {STEP, SL_EINVALID, "{\"v\":1," STEP_OK "}", "field \"spec\" is missing"},
    {STEP, SL_EINVALID, "{\"v\":1," STEP_OK ",\"spec\":[]}", "field \"spec\" must be an object"},
    {STEP, SL_EINVALID, "{\"v\":1," STEP_OK ",\"spec\":null}", "field \"spec\" is missing"},
    {STEP, SL_EINVALID, "{\"v\":1,\"attempt_id\":7}", "field \"attempt_id\" must be a string"},
    {STEP, SL_EINVALID, "{\"v\":1,\"attempt_id\":\"\"}",
     "field \"attempt_id\" must be 1-512 bytes without control characters"},
    {STEP, SL_EINVALID, "{\"v\":1,\"attempt_id\":\"a\\u0001\"}", "without control characters"},
    {STEP, SL_EINVALID,
     "{\"v\":1,\"attempt_id\":\"a\",\"dag_id\":\"d\",\"run_id\":\"r\",\"step\":\"s\","
     "\"map_index\":-2,\"attempt\":1,\"spec\":{}}",
     "field \"map_index\" must be an integer from -1 to 2147483647"},
    {STEP, SL_EINVALID,
     "{\"v\":1,\"attempt_id\":\"a\",\"dag_id\":\"d\",\"run_id\":\"r\",\"step\":\"s\","
     "\"map_index\":-1,\"attempt\":0,\"spec\":{}}",
     "field \"attempt\" must be an integer from 1"},
    {STEP, SL_EINVALID,
     "{\"v\":1,\"attempt_id\":\"a\",\"dag_id\":\"d\",\"run_id\":\"r\",\"step\":\"s\","
     "\"map_index\":-1,\"attempt\":1.5,\"spec\":{}}",
     "field \"attempt\" must be an integer"},
    {STEP, SL_EINVALID,
     "{\"v\":1,\"attempt_id\":\"a\",\"dag_id\":\"d\",\"run_id\":\"r\",\"step\":\"s\","
     "\"map_index\":\"1\",\"attempt\":1,\"spec\":{}}",
     "field \"map_index\" must be an integer"},
    {EVENT, SL_EINVALID, "{\"v\":1,\"attempt_id\":\"a\",\"kind\":\"done\"}",
     "field \"kind\" must be \"running\", \"succeeded\" or \"failed\""},
    {EVENT, SL_EINVALID, "{\"v\":1,\"attempt_id\":\"a\",\"kind\":1}",
     "field \"kind\" must be a string"},
    {EVENT, SL_EINVALID, "{\"v\":1,\"attempt_id\":\"a\",\"kind\":\"failed\",\"worker_id\":\"w\"}",
     "field \"seq\" is missing"},
    {EVENT, SL_EINVALID, "{\"v\":1," EVENT_OK ",\"exit_code\":4294967296}",
     "field \"exit_code\" must be an integer"},
    {EVENT, SL_EINVALID, "{\"v\":1," EVENT_OK ",\"outputs\":[]}",
     "field \"outputs\" must be an object"},
    {EVENT, SL_EINVALID, "{\"v\":1," EVENT_OK ",\"reason\":{}}",
     "field \"reason\" must be a string"},
    {EVENT, SL_EINVALID, "{\"v\":1," EVENT_OK ",\"failure\":\"oom\"}",
     "field \"failure\" must be \"step\", \"error\", \"transient\" or \"cancelled\""},
    {EVENT, SL_EINVALID, "{\"v\":1," EVENT_OK ",\"failure\":3}",
     "field \"failure\" must be a string"},
    {EVENT, SL_EINVALID, "{\"v\":1," EVENT_OK ",\"log_path\":[]}",
     "field \"log_path\" must be a string"},
    {EVENT, SL_EINVALID,
     "{\"v\":1,\"attempt_id\":\"a\",\"kind\":\"running\",\"worker_id\":\"w\",\"seq\":-1,"
     "\"time_ms\":1}",
     "field \"seq\" must be an integer from 0"},
    {EVENT, SL_EINVALID,
     "{\"v\":1,\"attempt_id\":\"a\",\"kind\":\"running\",\"worker_id\":\"w\",\"seq\":0,"
     "\"time_ms\":1e17}",
     "field \"time_ms\" must be an integer from 0 to 9007199254740992"},
    {CANCEL, SL_EINVALID, "{\"v\":1,\"time_ms\":0}", "field \"run_id\" is missing"},
    {CANCEL, SL_EINVALID, "{\"v\":1,\"run_id\":\"r\",\"attempt_id\":5,\"time_ms\":0}",
     "field \"attempt_id\" must be a string"},
    {CANCEL, SL_EINVALID, "{\"v\":1,\"run_id\":\"r\"}", "field \"time_ms\" is missing"},
};

static int decode(enum kind kind, const char *data, size_t len, char *reason, size_t reason_len)
{
    int rc;
    if (kind == STEP) {
        struct queue_step_msg *m = NULL;
        rc = queue_step_msg_decode(&m, data, len, reason, reason_len);
        ck_assert(rc == 0 ? m != NULL : m == NULL);
        queue_step_msg_free(m);
    } else if (kind == EVENT) {
        struct queue_event_msg *m = NULL;
        rc = queue_event_msg_decode(&m, data, len, reason, reason_len);
        ck_assert(rc == 0 ? m != NULL : m == NULL);
        queue_event_msg_free(m);
    } else {
        struct queue_cancel_msg *m = NULL;
        rc = queue_cancel_msg_decode(&m, data, len, reason, reason_len);
        ck_assert(rc == 0 ? m != NULL : m == NULL);
        queue_cancel_msg_free(m);
    }
    return rc;
}

START_TEST(test_decode_table)
{
    for (size_t i = 0; i < sizeof(decode_cases) / sizeof(decode_cases[0]); i++) {
        char reason[QUEUE_REASON_BUFSZ] = "";
        const char *json = decode_cases[i].json;
        int rc = decode(decode_cases[i].kind, json, strlen(json), reason, sizeof(reason));
        ck_assert_msg(rc == decode_cases[i].code, "case %zu '%s': got %d (%s), want %d", i, json,
                      rc, reason, decode_cases[i].code);
        ck_assert_msg(strstr(reason, decode_cases[i].reason) != NULL,
                      "case %zu '%s': reason \"%s\" lacks \"%s\"", i, json, reason,
                      decode_cases[i].reason);
    }
}
END_TEST

START_TEST(test_decode_not_nul_terminated)
{
    /* Only len bytes are read: the valid prefix decodes, a cut message does not. */
    const char *json = "{\"v\":1,\"run_id\":\"r\",\"time_ms\":3}GARBAGE";
    size_t len = strlen(json) - strlen("GARBAGE");
    char *copy = xmalloc(len);
    /* No NUL after it: ASan catches any over-read. */
    memcpy(copy, json, len); // NOLINT(bugprone-not-null-terminated-result)
    ck_assert_int_eq(decode(CANCEL, copy, len, NULL, 0), 0);
    ck_assert_int_eq(decode(CANCEL, copy, len - 1, NULL, 0), SL_EPARSE);
    free(copy);
    /* A NUL byte inside is not JSON. */
    ck_assert_int_eq(decode(CANCEL, "{\"v\":1}\0{}", 10, NULL, 0), SL_EPARSE);
}
END_TEST

START_TEST(test_size_limits)
{
    /* Decoding refuses oversized input before parsing it. */
    size_t big = QUEUE_MSG_MAX_BYTES + 1;
    char *data = xmalloc(big);
    memset(data, ' ', big);
    char reason[QUEUE_REASON_BUFSZ];
    ck_assert_int_eq(decode(STEP, data, big, reason, sizeof(reason)), SL_ETOOBIG);
    ck_assert_str_eq(reason, "message is 1048577 bytes, over the limit of 1048576");
    free(data);

    /* Encoding refuses a message that would be too large, and leaves out unchanged. */
    char *blob = xmalloc(QUEUE_MSG_MAX_BYTES);
    memset(blob, 'x', QUEUE_MSG_MAX_BYTES - 1);
    blob[QUEUE_MSG_MAX_BYTES - 1] = '\0';
    cJSON *spec = cJSON_CreateObject();
    cJSON_AddStringToObject(spec, "blob", blob);
    struct queue_step_msg m = sample_step(spec);
    struct strbuf sb = STRBUF_INIT;
    strbuf_addstr(&sb, "keep");
    ck_assert_int_eq(queue_step_msg_encode(&sb, &m), SL_ETOOBIG);
    ck_assert_str_eq(sb.buf, "keep");
    strbuf_release(&sb);
    cJSON_Delete(spec);
    free(blob);

    /* Ids are limited too: QUEUE_NAME_MAX bytes pass, one more does not. */
    char id[QUEUE_NAME_MAX + 2];
    memset(id, 'i', sizeof(id) - 1);
    id[QUEUE_NAME_MAX] = '\0';
    cJSON *empty = cJSON_CreateObject();
    m = sample_step(empty);
    m.attempt_id = id;
    ck_assert_int_eq(queue_step_msg_encode(&sb, &m), 0);
    strbuf_reset(&sb);
    id[QUEUE_NAME_MAX] = 'i';
    id[QUEUE_NAME_MAX + 1] = '\0';
    ck_assert_int_eq(queue_step_msg_encode(&sb, &m), SL_EINVAL);
    strbuf_release(&sb);
    cJSON_Delete(empty);
}
END_TEST

START_TEST(test_encode_invalid)
{
    cJSON *obj = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    struct strbuf sb = STRBUF_INIT;
    struct queue_step_msg s = sample_step(obj);
    s.attempt_id = NULL;
    ck_assert_int_eq(queue_step_msg_encode(&sb, &s), SL_EINVAL);
    s = sample_step(obj);
    s.step = "";
    ck_assert_int_eq(queue_step_msg_encode(&sb, &s), SL_EINVAL);
    s = sample_step(obj);
    s.run_id = "a\nb";
    ck_assert_int_eq(queue_step_msg_encode(&sb, &s), SL_EINVAL);
    s = sample_step(obj);
    s.attempt = 0;
    ck_assert_int_eq(queue_step_msg_encode(&sb, &s), SL_EINVAL);
    s = sample_step(obj);
    s.map_index = -2;
    ck_assert_int_eq(queue_step_msg_encode(&sb, &s), SL_EINVAL);
    s = sample_step(NULL);
    ck_assert_int_eq(queue_step_msg_encode(&sb, &s), SL_EINVAL);
    s = sample_step(arr);
    ck_assert_int_eq(queue_step_msg_encode(&sb, &s), SL_EINVAL);

    struct queue_event_msg e = {.attempt_id = "a", .kind = 3, .worker_id = "w"};
    ck_assert_int_eq(queue_event_msg_encode(&sb, &e), SL_EINVAL);
    e.kind = QUEUE_EVENT_SUCCEEDED;
    e.time_ms = -1;
    ck_assert_int_eq(queue_event_msg_encode(&sb, &e), SL_EINVAL);
    e.time_ms = 0;
    e.outputs = arr;
    ck_assert_int_eq(queue_event_msg_encode(&sb, &e), SL_EINVAL);
    e.outputs = NULL;
    e.failure = "lost"; /* not one of the four */
    ck_assert_int_eq(queue_event_msg_encode(&sb, &e), SL_EINVAL);
    e.failure = NULL;
    e.worker_id = NULL;
    ck_assert_int_eq(queue_event_msg_encode(&sb, &e), SL_EINVAL);

    struct queue_cancel_msg c = {.run_id = NULL};
    ck_assert_int_eq(queue_cancel_msg_encode(&sb, &c), SL_EINVAL);
    c.run_id = "r";
    c.attempt_id = "";
    ck_assert_int_eq(queue_cancel_msg_encode(&sb, &c), SL_EINVAL);
    ck_assert_uint_eq(sb.len, 0);
    strbuf_release(&sb);
    cJSON_Delete(obj);
    cJSON_Delete(arr);
}
END_TEST

START_TEST(test_kind_names)
{
    enum queue_event_kind k;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(queue_event_kind_parse(&k, queue_event_kind_name(i)), 0);
        ck_assert_int_eq(k, i);
    }
    ck_assert_str_eq(queue_event_kind_name(QUEUE_EVENT_SUCCEEDED), "succeeded");
    ck_assert_int_eq(queue_event_kind_parse(&k, "Running"), SL_EINVAL);
    ck_assert_int_eq(queue_event_kind_parse(&k, NULL), SL_EINVAL);
    static const char *const failures[] = {"step", "error", "transient", "cancelled"};
    for (size_t i = 0; i < 4; i++)
        ck_assert(queue_event_failure_valid(failures[i]));
    ck_assert(!queue_event_failure_valid("Step"));
    ck_assert(!queue_event_failure_valid(""));
    ck_assert(!queue_event_failure_valid(NULL));
}
END_TEST

Suite *suite_queue_msg(void)
{
    Suite *s = suite_create("queue_msg");
    TCase *tc = tcase_create("msg");
    tcase_add_test(tc, test_step_round_trip);
    tcase_add_test(tc, test_event_round_trip);
    tcase_add_test(tc, test_cancel_round_trip);
    tcase_add_test(tc, test_decode_table);
    tcase_add_test(tc, test_decode_not_nul_terminated);
    tcase_add_test(tc, test_size_limits);
    tcase_add_test(tc, test_encode_invalid);
    tcase_add_test(tc, test_kind_names);
    suite_add_tcase(s, tc);
    return s;
}
