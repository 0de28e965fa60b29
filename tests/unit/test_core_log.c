/* Unit tests for core/log: the JSON line (fields, escaping, cut to fit and still an object),
 * the text line, and the rate limit of log_client with its summary. */
#include "core/log.h"

#include "core/json.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

/* 2026-12-01T17:20:23.869Z */
static const struct timespec T0 = {1796145623, 869000000};

static size_t line(char *out, size_t cap, enum log_format f, const char *event,
                   const struct log_who *who, uint64_t suppressed, const char *msg)
{
    size_t n = log_format_line(out, cap, f, LOG_WARN, event, who, suppressed, msg, &T0);
    if (n < cap)
        out[n] = 0; /* for strstr: nothing of an earlier line after it */
    return n;
}

TEST(test_log_json_line_has_time_level_event_node_and_whom)
{
    log_set_node("n-1");
    char out[512];
    struct log_who who = {"c-9", "ann", "10.0.0.1", 3501};
    size_t n = line(out, sizeof(out), LOG_JSON, "client_disconnected", &who, 0, "bad request");
    CHECK_MEM(out, n,
              "{\"time\":\"2026-12-01T17:20:23.869Z\",\"level\":\"warn\",\"event\":"
              "\"client_disconnected\",\"node\":\"n-1\",\"client\":\"c-9\",\"user\":\"ann\","
              "\"addr\":\"10.0.0.1\",\"code\":3501,\"msg\":\"bad request\"}\n");
}

TEST(test_log_json_leaves_out_what_does_not_apply)
{
    log_set_node("n-1");
    char out[512];
    size_t n = line(out, sizeof(out), LOG_JSON, "listening", NULL, 0, "up");
    CHECK_MEM(out, n,
              "{\"time\":\"2026-12-01T17:20:23.869Z\",\"level\":\"warn\",\"event\":\"listening\","
              "\"node\":\"n-1\",\"msg\":\"up\"}\n");
    /* An anonymous user is "" (it applies), an unknown client is left out. */
    struct log_who who = {"", "", NULL, 0};
    n = line(out, sizeof(out), LOG_JSON, "x", &who, 0, "m");
    CHECK(strstr(out, "\"user\":\"\"") != NULL);
    CHECK(strstr(out, "\"client\"") == NULL && strstr(out, "\"addr\"") == NULL);
    CHECK(strstr(out, "\"code\"") == NULL);
    CHECK(n > 0 && out[n - 1] == '\n');
}

TEST(test_log_json_escapes_quotes_controls_and_bad_utf8)
{
    log_set_node("n\"1");
    char out[512];
    struct log_who who = {NULL, "u\\\x01", NULL, 0};
    size_t n = line(out, sizeof(out), LOG_JSON, "e", &who, 0, "a\"b\nc\td\xff\xc3\xa9\x7f");
    CHECK_MEM(out, n,
              "{\"time\":\"2026-12-01T17:20:23.869Z\",\"level\":\"warn\",\"event\":\"e\","
              "\"node\":\"n\\\"1\",\"user\":\"u\\\\\\u0001\","
              "\"msg\":\"a\\\"b\\nc\\td\\ufffd\xc3\xa9\\u007f\"}\n");
    /* A truncated UTF-8 sequence and a surrogate are not UTF-8 either. */
    n = line(out, sizeof(out), LOG_JSON, "e", NULL, 0, "\xe2\x82|\xed\xa0\x80");
    CHECK(strstr(out, "\"msg\":\"\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd\"}\n") != NULL);
    log_set_node("n-1");
}

TEST(test_log_json_cut_to_fit_is_still_one_object)
{
    log_set_node("n-1");
    char msg[600];
    for (size_t i = 0; i < sizeof(msg) - 1; i++)
        msg[i] = i % 7 == 0 ? '"' : 'x'; /* escapes must not be cut in half */
    msg[sizeof(msg) - 1] = 0;
    for (size_t cap = 64; cap < 400; cap += 37) {
        char out[400];
        size_t n = line(out, cap, LOG_JSON, "e", NULL, 0, msg);
        CHECK(n <= cap);
        CHECK(n >= 3 && out[n - 1] == '\n' && out[n - 2] == '}');
        /* The msg string closes: an even count of unescaped quotes. */
        unsigned quotes = 0;
        for (size_t i = 0; i < n; i++)
            if (out[i] == '"' && (i == 0 || out[i - 1] != '\\'))
                quotes++;
        CHECK(quotes % 2 == 0);
    }
}

/* Whatever is long (a user id, the message), a line cut to fit parses as one object
 * and keeps its time, level and event. */
TEST(test_log_json_cut_anywhere_still_parses)
{
    log_set_node("n-1");
    static char user[3000], msg[3000];
    for (size_t i = 0; i < sizeof(user) - 1; i++)
        user[i] = "ab\"\\\n\xc3\xa9"[i % 7];
    for (size_t i = 0; i < sizeof(msg) - 1; i++)
        msg[i] = "x\"\x01"[i % 3];
    struct log_who who = {"c-1", user, "::1", 3501};
    static char out[4000];
    for (size_t cap = 64; cap <= sizeof(out); cap += 13) {
        size_t n =
            log_format_line(out, cap, LOG_JSON, LOG_INFO, "client_disconnected", &who, 7, msg, &T0);
        CHECK(n <= cap && n > 2 && out[n - 1] == '\n');
        jsmntok_t t[64];
        int ntok = json_tokenize((const uint8_t *)out, n - 1, t, 64);
        CHECK(ntok > 0 && t[0].type == JSMN_OBJECT && (size_t)t[0].end == n - 1);
        if (ntok <= 0)
            fprintf(stderr, "  cap %zu: %.*s\n", cap, (int)n, out);
        CHECK(ntok > 0 && json_obj_get((const uint8_t *)out, t, ntok, 0, "event") > 0);
    }
}

TEST(test_log_summary_line_counts_with_thousands_grouped)
{
    log_set_node("n-1");
    char out[512];
    size_t n = line(out, sizeof(out), LOG_JSON, "handshake_refused", NULL, 1204,
                    "1,204 similar lines suppressed");
    CHECK(strstr(out, "\"event\":\"handshake_refused\"") != NULL);
    CHECK(strstr(out, "\"suppressed\":1204,\"msg\":\"1,204 similar lines suppressed\"}\n") != NULL);
    n = line(out, sizeof(out), LOG_TEXT, "handshake_refused", NULL, 1204,
             "1,204 similar lines suppressed");
    CHECK_MEM(out, n,
              "2026-12-01T17:20:23.869Z warn handshake_refused: 1,204 similar lines "
              "suppressed\n");
}

TEST(test_log_text_line_is_the_old_line_with_whom_after_it)
{
    char out[512];
    struct log_who who = {"c-9", "ann", "::1", 4500};
    size_t n = line(out, sizeof(out), LOG_TEXT, "client_disconnected", &who, 0, "go\naway");
    CHECK_MEM(out, n,
              "2026-12-01T17:20:23.869Z warn go away client=c-9 user=ann addr=::1 code=4500\n");
}

TEST(test_log_redact_url_hides_the_password)
{
    char out[128];
    CHECK(strcmp(log_redact_url("redis://user:s3cret@h:6379/2", out, sizeof(out)),
                 "redis://user:***@h:6379/2") == 0);
    CHECK(strcmp(log_redact_url("rediss://:p@ss:w@rd@h:1", out, sizeof(out)),
                 "rediss://:***@h:1") == 0);
    CHECK(strcmp(log_redact_url("redis://s3cret@h:1", out, sizeof(out)), "redis://***@h:1") == 0);
    CHECK(strcmp(log_redact_url("redis://h:1", out, sizeof(out)), "redis://h:1") == 0);
}

/* log_client on a pipe: RATE lines of the event pass in one second, the rest are
 * counted and summarised by log_tick once the second is over; another event has its
 * own count. */
TEST(test_log_client_rate_limits_and_summarises)
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    int old_format = log_format;
    log_format = LOG_JSON;
    /* At the start of a second, so that the burst stays within it. */
    struct timespec ts;
    do
        clock_gettime(CLOCK_REALTIME, &ts);
    while (ts.tv_nsec > 500000000);
    for (int i = 0; i < 250; i++)
        log_client(LOG_INFO, "bad_thing", NULL, "bad %d", i);
    log_client(LOG_INFO, "other_thing", NULL, "other");
    log_tick(); /* the second is not over: no summary yet */
    char buf[65536];
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = 0;
    unsigned lines = 0, others = 0;
    for (char *p = buf; (p = strstr(p, "\"event\":\"bad_thing\"")); p++)
        lines++;
    for (char *p = buf; (p = strstr(p, "\"event\":\"other_thing\"")); p++)
        others++;
    CHECK_EQ(lines, LOG_CLIENT_RATE);
    CHECK_EQ(others, 1);
    CHECK(strstr(buf, "suppressed") == NULL);
    sleep(1);
    log_tick();
    n = read(fds[0], buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = 0;
    CHECK(strstr(buf, "\"event\":\"bad_thing\"") != NULL);
    CHECK(strstr(buf, "\"suppressed\":240,\"msg\":\"240 similar lines suppressed\"") != NULL);
    /* Summarised once. */
    log_tick();
    CHECK(read(fds[0], buf, sizeof(buf)) < 0);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[0]);
    close(fds[1]);
    log_format = old_format;
}

int main(void)
{
    RUN(test_log_json_line_has_time_level_event_node_and_whom);
    RUN(test_log_json_leaves_out_what_does_not_apply);
    RUN(test_log_json_escapes_quotes_controls_and_bad_utf8);
    RUN(test_log_json_cut_to_fit_is_still_one_object);
    RUN(test_log_json_cut_anywhere_still_parses);
    RUN(test_log_summary_line_counts_with_thousands_grouped);
    RUN(test_log_text_line_is_the_old_line_with_whom_after_it);
    RUN(test_log_redact_url_hides_the_password);
    RUN(test_log_client_rate_limits_and_summarises);
    return test_summary("core_log");
}
