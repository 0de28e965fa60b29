/* Unit tests for the HTTP/1.1 request-head parser (http/parser.h). */
#include <stdint.h>
#include <stdlib.h>

#include "http/parser.h"
#include "test.h"

static const struct http_limits limits = {8192, HTTP_MAX_HEADERS};

/* Parse s from an exact-size heap copy, so ASan catches any read past len. */
static int parse_with(const char *s, size_t len, const struct http_limits *lim,
                      struct http_request *req)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, s, len);
    int r = http_parse_request(copy, len, lim, req);
    free(copy);
    return r;
}

static int parse(const char *s, struct http_request *req)
{
    return parse_with(s, strlen(s), &limits, req);
}

/* Same, but the request stays alive in buf (for tests that read spans). */
static int parse_keep(const char *s, struct http_request *req)
{
    return http_parse_request((const uint8_t *)s, strlen(s), &limits, req);
}

#define REQ_ST(s) parse(s, &(struct http_request){0})

TEST(test_http_parse_simple_get_fills_method_path_and_version)
{
    const char *s = "GET /connection/websocket HTTP/1.1\r\nHost: example.com\r\n\r\n";
    struct http_request req;
    CHECK_EQ(parse_keep(s, &req), strlen(s));
    CHECK_EQ(req.method, HTTP_GET);
    CHECK_MEM(req.method_str, req.method_len, "GET");
    CHECK_MEM(req.path, req.path_len, "/connection/websocket");
    CHECK(req.query == NULL);
    CHECK_EQ(req.minor_version, 1);
    CHECK_EQ(req.num_headers, 1);
    CHECK_MEM(req.headers[0].name, req.headers[0].name_len, "Host");
    CHECK_MEM(req.headers[0].value, req.headers[0].value_len, "example.com");
    CHECK_EQ(req.content_length, -1);
    CHECK_EQ(req.has_transfer_encoding, 0);
    CHECK_EQ(req.keep_alive, 1);
}

TEST(test_http_parse_splits_query_from_path)
{
    struct http_request req;
    CHECK(parse_keep("GET /api/info?a=1&b=%20?c HTTP/1.1\r\nHost: h\r\n\r\n", &req) > 0);
    CHECK_MEM(req.path, req.path_len, "/api/info");
    CHECK_MEM(req.query, req.query_len, "a=1&b=%20?c");
    CHECK(parse_keep("GET /x? HTTP/1.1\r\nHost: h\r\n\r\n", &req) > 0);
    CHECK_MEM(req.path, req.path_len, "/x");
    CHECK(req.query != NULL);
    CHECK_EQ(req.query_len, 0);
}

TEST(test_http_parse_maps_methods_to_enum)
{
    static const struct {
        const char *name;
        enum http_method method;
    } cases[] = {
        {"GET", HTTP_GET},         {"HEAD", HTTP_HEAD},     {"POST", HTTP_POST},
        {"PUT", HTTP_PUT},         {"DELETE", HTTP_DELETE}, {"OPTIONS", HTTP_OPTIONS},
        {"PATCH", HTTP_OTHER},     {"get", HTTP_OTHER},     {"GETS", HTTP_OTHER},
        {"X-CUSTOM!", HTTP_OTHER},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "%s / HTTP/1.1\r\nHost: h\r\n\r\n", cases[i].name);
        struct http_request req;
        CHECK_EQ(parse_keep(buf, &req), strlen(buf));
        CHECK_EQ(req.method, cases[i].method);
        CHECK_MEM(req.method_str, req.method_len, cases[i].name);
    }
}

TEST(test_http_parse_returns_zero_until_complete_when_fed_one_byte_at_a_time)
{
    const char *s = "POST /api/publish?x=1 HTTP/1.1\r\nHost: localhost:8000\r\n"
                    "Content-Type: application/json\r\nContent-Length: 2\r\n"
                    "Connection: keep-alive, Upgrade\r\n\r\n";
    size_t n = strlen(s);
    struct http_request req;
    for (size_t len = 0; len < n; len++)
        CHECK_EQ(parse_with(s, len, &limits, &req), 0);
    CHECK_EQ(parse_with(s, n, &limits, &req), n);
}

TEST(test_http_parse_returns_zero_until_complete_with_bare_lf_one_byte_at_a_time)
{
    const char *s = "GET / HTTP/1.1\nHost: h\n\n";
    size_t n = strlen(s);
    struct http_request req;
    for (size_t len = 0; len < n; len++)
        CHECK_EQ(parse_with(s, len, &limits, &req), 0);
    CHECK_EQ(parse_with(s, n, &limits, &req), n);
}

TEST(test_http_parse_pipelined_head_length_excludes_body_and_next_request)
{
    const char *first = "POST /api HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
    const char *all = "POST /api HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"
                      "hello"
                      "GET /health HTTP/1.1\r\nHost: h\r\n\r\n"
                      "GET /next";
    struct http_request req;
    int r = parse_keep(all, &req);
    CHECK_EQ(r, strlen(first));
    CHECK_EQ(req.content_length, 5);
    const char *second = all + r + 5;
    r = parse_keep(second, &req);
    CHECK_EQ(r, strlen("GET /health HTTP/1.1\r\nHost: h\r\n\r\n"));
    CHECK_MEM(req.path, req.path_len, "/health");
    CHECK_EQ(parse_keep(second + r, &req), 0);
}

TEST(test_http_parse_accepts_bare_lf_and_mixed_line_ends)
{
    struct http_request req;
    CHECK_EQ(parse_keep("GET / HTTP/1.1\nHost: h\n\n", &req), 24);
    CHECK_MEM(req.headers[0].value, req.headers[0].value_len, "h");
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: h\n\r\n"), 26);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\nHost: h\r\n\n"), 25);
}

TEST(test_http_parse_rejects_bare_cr)
{
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\rHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: h\r\n\rX"), -400);
    CHECK_EQ(REQ_ST("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    /* A CR at the very end may still be followed by its LF. */
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: h\r"), 0);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: h\r\n\r"), 0);
}

/* RFC 9112 §3.2.2: a server must accept the absolute-form; its path is the target. */
TEST(test_http_parse_accepts_absolute_form_targets)
{
    struct http_request req;
    const char *s = "GET http://example.com:8000/api/info?x=1 HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_EQ(parse_keep(s, &req), strlen(s));
    CHECK_MEM(req.path, req.path_len, "/api/info");
    CHECK_MEM(req.query, req.query_len, "x=1");
    s = "POST HTTPS://Example.com/api HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
    CHECK_EQ(parse_keep(s, &req), strlen(s));
    CHECK_MEM(req.path, req.path_len, "/api");
    CHECK(req.query == NULL);
    /* An empty path is "/" (RFC 9112 §3.2.4), with or without a query. */
    s = "GET http://example.com HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_EQ(parse_keep(s, &req), strlen(s));
    CHECK_MEM(req.path, req.path_len, "/");
    s = "GET http://example.com?a HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_EQ(parse_keep(s, &req), strlen(s));
    CHECK_MEM(req.path, req.path_len, "/");
    CHECK_MEM(req.query, req.query_len, "a");
    /* No host, user info, other schemes, a cut scheme: refused. */
    CHECK_EQ(REQ_ST("GET http:///api HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET http://u:p@h/api HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET ftp://h/api HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET http:/h/api HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET httpx://h/ HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET http:// HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    /* Not complete yet: more is awaited, not refused. */
    CHECK_EQ(REQ_ST("GET http://exam"), 0);
}

TEST(test_http_parse_rejects_non_origin_form_targets)
{
    CHECK_EQ(REQ_ST("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("CONNECT example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET api HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
}

TEST(test_http_parse_rejects_control_and_non_ascii_bytes_in_target)
{
    CHECK_EQ(REQ_ST("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET /a\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(
        parse_with("GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n", 30, &limits, &(struct http_request){0}),
        -400);
}

TEST(test_http_parse_rejects_extra_spaces_in_request_line)
{
    CHECK_EQ(REQ_ST("GET  / HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET /  HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1 \r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST(" GET / HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
}

TEST(test_http_parse_rejects_empty_or_non_token_method)
{
    CHECK_EQ(REQ_ST(" / HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("G(T / HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GE\xc3\x89T / HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
}

TEST(test_http_parse_rejects_garbage_before_the_head_is_complete)
{
    /* A TLS ClientHello on the plain port: refused at once, not after max_head. */
    CHECK_EQ(REQ_ST("\x16\x03\x01\x02"), -400);
    CHECK_EQ(REQ_ST("GET / HTTX"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nBad Name"), -400);
}

TEST(test_http_parse_answers_505_for_other_well_formed_versions)
{
    CHECK_EQ(REQ_ST("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), -505);
    CHECK_EQ(REQ_ST("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), -505);
    CHECK_EQ(REQ_ST("GET / HTTP/0.9\r\nHost: h\r\n\r\n"), -505);
    CHECK_EQ(REQ_ST("GET / HTTP/3.1\r\n"), -505);
}

TEST(test_http_parse_rejects_malformed_versions_with_400)
{
    CHECK_EQ(REQ_ST("GET / HTTP/1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / http/1.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1x\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/11.1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.10\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1,1\r\nHost: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET /\r\n\r\n"), -400);
}

TEST(test_http_parse_accepts_http_1_0)
{
    struct http_request req;
    CHECK(parse_keep("GET / HTTP/1.0\r\n\r\n", &req) == 18);
    CHECK_EQ(req.minor_version, 0);
    CHECK_EQ(req.num_headers, 0);
}

TEST(test_http_parse_rejects_space_before_colon)
{
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost\t: h\r\n\r\n"), -400);
}

TEST(test_http_parse_rejects_empty_or_non_token_header_name)
{
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\n: h\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: h\r\nX(y): z\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: h\r\nno colon\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: h\r\nnocolon\r\n\r\n"), -400);
}

TEST(test_http_parse_trims_spaces_and_tabs_around_values)
{
    struct http_request req;
    const char *s = "GET / HTTP/1.1\r\nHost:h\r\nX-A: \t a b \t \r\nX-B:\r\nX-C:   \r\n\r\n";
    CHECK_EQ(parse_keep(s, &req), strlen(s));
    CHECK_EQ(req.num_headers, 4);
    CHECK_MEM(req.headers[0].value, req.headers[0].value_len, "h");
    CHECK_MEM(req.headers[1].value, req.headers[1].value_len, "a b");
    CHECK_EQ(req.headers[2].value_len, 0);
    CHECK_EQ(req.headers[3].value_len, 0);
}

TEST(test_http_parse_rejects_obs_fold)
{
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n"), -400);
}

TEST(test_http_parse_rejects_whitespace_before_first_header)
{
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\n Host: h\r\n\r\n"), -400);
}

TEST(test_http_parse_rejects_control_characters_in_values)
{
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: h\r\nX: a\x1b[0m\r\n\r\n"), -400);
    CHECK_EQ(parse_with("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 33, &limits,
                        &(struct http_request){0}),
             -400);
}

TEST(test_http_parse_allows_tab_and_high_bytes_in_values)
{
    struct http_request req;
    CHECK(parse_keep("GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\ta\xff\r\n\r\n", &req) > 0);
    CHECK_MEM(req.headers[1].value, req.headers[1].value_len, "caf\xc3\xa9\ta\xff");
}

TEST(test_http_parse_reads_content_length_case_insensitively)
{
    struct http_request req;
    CHECK(parse_keep("POST / HTTP/1.1\r\nHost: h\r\ncontent-LENGTH: 0042\r\n\r\n", &req) > 0);
    CHECK_EQ(req.content_length, 42);
    CHECK(parse_keep("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", &req) > 0);
    CHECK_EQ(req.content_length, 0);
}

TEST(test_http_parse_accepts_content_length_up_to_int64_max)
{
    struct http_request req;
    CHECK(parse_keep("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n",
                     &req) > 0);
    CHECK_EQ(req.content_length, INT64_MAX);
}

TEST(test_http_parse_rejects_invalid_content_length)
{
    CHECK_EQ(REQ_ST("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n"),
             -400);
    CHECK_EQ(
        REQ_ST("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
        -400);
}

TEST(test_http_parse_accepts_identical_duplicate_content_length)
{
    struct http_request req;
    CHECK(parse_keep("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
                     &req) > 0);
    CHECK_EQ(req.content_length, 7);
}

TEST(test_http_parse_rejects_differing_duplicate_content_length)
{
    CHECK_EQ(REQ_ST("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n"),
             -400);
    CHECK_EQ(REQ_ST("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n"),
             -400);
}

TEST(test_http_parse_rejects_content_length_with_transfer_encoding)
{
    CHECK_EQ(REQ_ST("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"),
             -400);
    CHECK_EQ(REQ_ST("POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\n"
                    "Content-Length: 3\r\n\r\n"),
             -400);
}

TEST(test_http_parse_records_transfer_encoding)
{
    struct http_request req;
    CHECK(parse_keep("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", &req) > 0);
    CHECK_EQ(req.has_transfer_encoding, 1);
    CHECK_EQ(req.content_length, -1);
}

/* The Transfer-Encoding lines of a request, joined: is chunked final and alone? */
static int te_chunked(const char *lines)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: h\r\n%s\r\n", lines);
    struct http_request req;
    if (parse_keep(buf, &req) <= 0 || !req.has_transfer_encoding)
        return -1;
    return req.transfer_chunked;
}

TEST(test_http_parse_records_whether_chunked_is_the_final_transfer_coding)
{
    /* RFC 9112 §6.1, §6.3: chunked must be the final coding, applied once. */
    CHECK_EQ(te_chunked("Transfer-Encoding: chunked\r\n"), 1);
    CHECK_EQ(te_chunked("Transfer-Encoding: CHUNKED\r\n"), 1);
    CHECK_EQ(te_chunked("Transfer-Encoding: gzip, chunked\r\n"), 1);
    CHECK_EQ(te_chunked("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"), 1);
    CHECK_EQ(te_chunked("Transfer-Encoding: ,\t chunked ,\r\n"), 1);
    CHECK_EQ(te_chunked("Transfer-Encoding: chunked, identity\r\n"), 0);
    CHECK_EQ(te_chunked("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"), 0);
    CHECK_EQ(te_chunked("Transfer-Encoding: chunked, chunked\r\n"), 0);
    CHECK_EQ(te_chunked("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), 0);
    CHECK_EQ(te_chunked("Transfer-Encoding: identity\r\n"), 0);
    CHECK_EQ(te_chunked("Transfer-Encoding: xchunked\r\n"), 0);
    CHECK_EQ(te_chunked("Transfer-Encoding: chunked;q=1\r\n"), 0);
    CHECK_EQ(te_chunked("Transfer-Encoding:\r\n"), 0);
    CHECK_EQ(te_chunked("Transfer-Encoding: ,\r\n"), 0);
}

TEST(test_http_parse_keep_alive_defaults_on_for_1_1)
{
    struct http_request req;
    CHECK(parse_keep("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n\r\n", &req) > 0);
    CHECK_EQ(req.keep_alive, 1);
}

TEST(test_http_parse_connection_close_turns_keep_alive_off_on_1_1)
{
    struct http_request req;
    CHECK(parse_keep("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &req) > 0);
    CHECK_EQ(req.keep_alive, 0);
    CHECK(parse_keep("GET / HTTP/1.1\r\nHost: h\r\nconnection: Upgrade, CLOSE\r\n\r\n", &req) > 0);
    CHECK_EQ(req.keep_alive, 0);
    CHECK(parse_keep("GET / HTTP/1.1\r\nHost: h\r\nConnection: te\r\nConnection: close\r\n\r\n",
                     &req) > 0);
    CHECK_EQ(req.keep_alive, 0);
    CHECK(parse_keep("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n", &req) > 0);
    CHECK_EQ(req.keep_alive, 1);
}

TEST(test_http_parse_keep_alive_defaults_off_for_1_0)
{
    struct http_request req;
    CHECK(parse_keep("GET / HTTP/1.0\r\n\r\n", &req) > 0);
    CHECK_EQ(req.keep_alive, 0);
    CHECK(parse_keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req) > 0);
    CHECK_EQ(req.keep_alive, 1);
    CHECK(parse_keep("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &req) > 0);
    CHECK_EQ(req.keep_alive, 0);
}

TEST(test_http_parse_rejects_1_1_without_host)
{
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\n\r\n"), -400);
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHostname: h\r\n\r\n"), -400);
}

TEST(test_http_parse_accepts_1_0_without_host)
{
    CHECK_EQ(REQ_ST("GET / HTTP/1.0\r\nX: y\r\n\r\n"), 24);
}

TEST(test_http_parse_rejects_more_than_one_host)
{
    CHECK_EQ(REQ_ST("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), -400);
}

static int head_with_headers(char *buf, size_t cap, int count)
{
    int n = snprintf(buf, cap, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 1; i < count; i++)
        n += snprintf(buf + n, cap - (size_t)n, "X-%d: v\r\n", i);
    n += snprintf(buf + n, cap - (size_t)n, "\r\n");
    return n;
}

TEST(test_http_parse_accepts_exactly_max_headers)
{
    char buf[4096];
    struct http_limits lim = {8192, 10};
    int n = head_with_headers(buf, sizeof(buf), 10);
    CHECK_EQ(parse_with(buf, (size_t)n, &lim, &(struct http_request){0}), n);
    n = head_with_headers(buf, sizeof(buf), HTTP_MAX_HEADERS);
    CHECK_EQ(parse_with(buf, (size_t)n, &limits, &(struct http_request){0}), n);
}

TEST(test_http_parse_rejects_more_than_max_headers_with_431)
{
    char buf[4096];
    struct http_limits lim = {8192, 10};
    int n = head_with_headers(buf, sizeof(buf), 11);
    CHECK_EQ(parse_with(buf, (size_t)n, &lim, &(struct http_request){0}), -431);
    n = head_with_headers(buf, sizeof(buf), HTTP_MAX_HEADERS + 1);
    CHECK_EQ(parse_with(buf, (size_t)n, &limits, &(struct http_request){0}), -431);
    /* A limit above the array size is capped to it rather than overflowing. */
    struct http_limits too_big = {8192, HTTP_MAX_HEADERS + 100};
    CHECK_EQ(parse_with(buf, (size_t)n, &too_big, &(struct http_request){0}), -431);
}

TEST(test_http_parse_accepts_head_of_exactly_max_head)
{
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t n = strlen(s);
    struct http_limits lim = {n, 8};
    CHECK_EQ(parse_with(s, n, &lim, &(struct http_request){0}), n);
}

TEST(test_http_parse_rejects_complete_head_over_max_head_with_431)
{
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t n = strlen(s);
    struct http_limits lim = {n - 1, 8};
    CHECK_EQ(parse_with(s, n, &lim, &(struct http_request){0}), -431);
    lim.max_head = n - 2; /* cut between the final CR and LF */
    CHECK_EQ(parse_with(s, n, &lim, &(struct http_request){0}), -431);
}

TEST(test_http_parse_rejects_incomplete_head_longer_than_max_head_with_431)
{
    const char *s = "GET /a-long-path HTTP/1.1\r\nHost: h\r\nX-Big: aaaaaaaaaaaaaaaaaaaa";
    size_t n = strlen(s);
    struct http_limits lim = {40, 8};
    CHECK_EQ(parse_with(s, 40, &lim, &(struct http_request){0}), 0);
    CHECK_EQ(parse_with(s, 41, &lim, &(struct http_request){0}), -431);
    CHECK_EQ(parse_with(s, n, &lim, &(struct http_request){0}), -431);
}

TEST(test_http_parse_head_within_max_head_ignores_longer_pipelined_data)
{
    char buf[256];
    const char *head = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t n = strlen(head);
    memset(buf, 'x', sizeof(buf));
    memcpy(buf, head, n);
    struct http_limits lim = {n, 8};
    CHECK_EQ(parse_with(buf, sizeof(buf), &lim, &(struct http_request){0}), n);
}

TEST(test_http_parse_skips_empty_lines_before_request_line)
{
    struct http_request req;
    const char *s = "\r\n\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_EQ(parse_keep(s, &req), strlen(s));
    CHECK_MEM(req.path, req.path_len, "/x");
    CHECK_EQ(REQ_ST("\r\n"), 0);
}

TEST(test_http_parse_with_null_limits_uses_defaults)
{
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_EQ(parse_with(s, strlen(s), NULL, &(struct http_request){0}), strlen(s));
}

TEST(test_http_parse_returns_zero_for_empty_input)
{
    CHECK_EQ(parse_with("", 0, &limits, &(struct http_request){0}), 0);
}

TEST(test_http_find_header_is_case_insensitive_and_returns_first)
{
    struct http_request req;
    CHECK(parse_keep("GET / HTTP/1.1\r\nHost: h\r\nX-Tag: one\r\nx-tag: two\r\n\r\n", &req) > 0);
    const struct http_header *h = http_find_header(&req, "X-TAG");
    CHECK(h != NULL);
    if (h)
        CHECK_MEM(h->value, h->value_len, "one");
    CHECK(http_find_header(&req, "host") == &req.headers[0]);
    CHECK(http_find_header(&req, "X-Ta") == NULL);
    CHECK(http_find_header(&req, "Missing") == NULL);
}

static int has_token(const char *value, const char *token)
{
    return http_value_has_token((const uint8_t *)value, strlen(value), token);
}

TEST(test_http_value_has_token_matches_list_elements_case_insensitively)
{
    CHECK(has_token("Upgrade", "upgrade"));
    CHECK(has_token("keep-alive, Upgrade", "upgrade"));
    CHECK(has_token("keep-alive,Upgrade", "upgrade"));
    CHECK(has_token(" \tUPGRADE\t , close", "upgrade"));
    CHECK(has_token("a,,upgrade,", "upgrade"));
}

TEST(test_http_value_has_token_rejects_partial_words_and_empty_values)
{
    CHECK(!has_token("upgraded", "upgrade"));
    CHECK(!has_token("websocket2", "websocket"));
    CHECK(!has_token("up grade", "upgrade"));
    CHECK(!has_token("", "upgrade"));
    CHECK(!has_token(",,, ", "upgrade"));
    CHECK(!http_value_has_token(NULL, 0, "close"));
}

TEST(test_http_status_reason_knows_common_codes)
{
    CHECK(strcmp(http_status_reason(101), "Switching Protocols") == 0);
    CHECK(strcmp(http_status_reason(200), "OK") == 0);
    CHECK(strcmp(http_status_reason(204), "No Content") == 0);
    CHECK(strcmp(http_status_reason(400), "Bad Request") == 0);
    CHECK(strcmp(http_status_reason(401), "Unauthorized") == 0);
    CHECK(strcmp(http_status_reason(403), "Forbidden") == 0);
    CHECK(strcmp(http_status_reason(404), "Not Found") == 0);
    CHECK(strcmp(http_status_reason(405), "Method Not Allowed") == 0);
    CHECK(strcmp(http_status_reason(411), "Length Required") == 0);
    CHECK(strcmp(http_status_reason(413), "Content Too Large") == 0);
    CHECK(strcmp(http_status_reason(426), "Upgrade Required") == 0);
    CHECK(strcmp(http_status_reason(431), "Request Header Fields Too Large") == 0);
    CHECK(strcmp(http_status_reason(500), "Internal Server Error") == 0);
    CHECK(strcmp(http_status_reason(501), "Not Implemented") == 0);
    CHECK(strcmp(http_status_reason(503), "Service Unavailable") == 0);
    CHECK(strcmp(http_status_reason(505), "HTTP Version Not Supported") == 0);
}

TEST(test_http_status_reason_says_unknown_for_other_codes)
{
    CHECK(strcmp(http_status_reason(299), "Unknown") == 0);
    CHECK(strcmp(http_status_reason(-1), "Unknown") == 0);
}

int main(void)
{
    RUN(test_http_parse_simple_get_fills_method_path_and_version);
    RUN(test_http_parse_splits_query_from_path);
    RUN(test_http_parse_maps_methods_to_enum);
    RUN(test_http_parse_returns_zero_until_complete_when_fed_one_byte_at_a_time);
    RUN(test_http_parse_returns_zero_until_complete_with_bare_lf_one_byte_at_a_time);
    RUN(test_http_parse_pipelined_head_length_excludes_body_and_next_request);
    RUN(test_http_parse_accepts_bare_lf_and_mixed_line_ends);
    RUN(test_http_parse_rejects_bare_cr);
    RUN(test_http_parse_accepts_absolute_form_targets);
    RUN(test_http_parse_rejects_non_origin_form_targets);
    RUN(test_http_parse_rejects_control_and_non_ascii_bytes_in_target);
    RUN(test_http_parse_rejects_extra_spaces_in_request_line);
    RUN(test_http_parse_rejects_empty_or_non_token_method);
    RUN(test_http_parse_rejects_garbage_before_the_head_is_complete);
    RUN(test_http_parse_answers_505_for_other_well_formed_versions);
    RUN(test_http_parse_rejects_malformed_versions_with_400);
    RUN(test_http_parse_accepts_http_1_0);
    RUN(test_http_parse_rejects_space_before_colon);
    RUN(test_http_parse_rejects_empty_or_non_token_header_name);
    RUN(test_http_parse_trims_spaces_and_tabs_around_values);
    RUN(test_http_parse_rejects_obs_fold);
    RUN(test_http_parse_rejects_whitespace_before_first_header);
    RUN(test_http_parse_rejects_control_characters_in_values);
    RUN(test_http_parse_allows_tab_and_high_bytes_in_values);
    RUN(test_http_parse_reads_content_length_case_insensitively);
    RUN(test_http_parse_accepts_content_length_up_to_int64_max);
    RUN(test_http_parse_rejects_invalid_content_length);
    RUN(test_http_parse_accepts_identical_duplicate_content_length);
    RUN(test_http_parse_rejects_differing_duplicate_content_length);
    RUN(test_http_parse_rejects_content_length_with_transfer_encoding);
    RUN(test_http_parse_records_transfer_encoding);
    RUN(test_http_parse_records_whether_chunked_is_the_final_transfer_coding);
    RUN(test_http_parse_keep_alive_defaults_on_for_1_1);
    RUN(test_http_parse_connection_close_turns_keep_alive_off_on_1_1);
    RUN(test_http_parse_keep_alive_defaults_off_for_1_0);
    RUN(test_http_parse_rejects_1_1_without_host);
    RUN(test_http_parse_accepts_1_0_without_host);
    RUN(test_http_parse_rejects_more_than_one_host);
    RUN(test_http_parse_accepts_exactly_max_headers);
    RUN(test_http_parse_rejects_more_than_max_headers_with_431);
    RUN(test_http_parse_accepts_head_of_exactly_max_head);
    RUN(test_http_parse_rejects_complete_head_over_max_head_with_431);
    RUN(test_http_parse_rejects_incomplete_head_longer_than_max_head_with_431);
    RUN(test_http_parse_head_within_max_head_ignores_longer_pipelined_data);
    RUN(test_http_parse_skips_empty_lines_before_request_line);
    RUN(test_http_parse_with_null_limits_uses_defaults);
    RUN(test_http_parse_returns_zero_for_empty_input);
    RUN(test_http_find_header_is_case_insensitive_and_returns_first);
    RUN(test_http_value_has_token_matches_list_elements_case_insensitively);
    RUN(test_http_value_has_token_rejects_partial_words_and_empty_values);
    RUN(test_http_status_reason_knows_common_codes);
    RUN(test_http_status_reason_says_unknown_for_other_codes);
    return test_summary("http_parser");
}
