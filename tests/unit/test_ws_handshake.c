/* Unit tests for the WebSocket opening handshake (ws/handshake.h). */
#include <stdint.h>

#include "http/parser.h"
#include "http/server.h"
#include "test.h"
#include "ws/handshake.h"

static const struct http_limits limits = {8192, HTTP_MAX_HEADERS};

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* Parse a head (it must be valid HTTP) and run the handshake check on it. */
static int check(const char *head, char accept[29])
{
    struct http_request req;
    int r = http_parse_request((const uint8_t *)head, strlen(head), &limits, &req);
    if (r != (int)strlen(head)) {
        fprintf(stderr, "  test head did not parse: %d\n", r);
        return -1;
    }
    return http_ws_check(&req, accept);
}

static int check_headers(const char *headers)
{
    char head[1024], accept[29];
    snprintf(head, sizeof(head), "GET /connection/websocket HTTP/1.1\r\nHost: h\r\n%s\r\n",
             headers);
    return check(head, accept);
}

TEST(test_ws_accept_key_matches_rfc6455_example)
{
    char out[29];
    memset(out, 'x', sizeof(out));
    ws_accept_key((const uint8_t *)KEY, strlen(KEY), out);
    CHECK(strcmp(out, ACCEPT) == 0);
}

TEST(test_ws_accept_key_hashes_empty_and_long_keys)
{
    char out[29], key[200];
    ws_accept_key((const uint8_t *)"", 0, out);
    CHECK(strcmp(out, "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w=") == 0);
    memset(key, 'x', 92); /* the longest key hashed from the stack buffer */
    ws_accept_key((const uint8_t *)key, 92, out);
    CHECK(strcmp(out, "N6jQH9SY1VrfN6p4qvkUdTUUhwQ=") == 0);
    memset(key, 'k', 200); /* through the digest context */
    ws_accept_key((const uint8_t *)key, 200, out);
    CHECK(strcmp(out, "HXr7Nbki1tHdEVpq+a7G7IV4VJU=") == 0);
}

TEST(test_ws_handshake_accepts_rfc6455_request_and_writes_accept)
{
    char accept[29];
    memset(accept, 0, sizeof(accept));
    CHECK_EQ(check("GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n"
                   "Origin: http://example.com\r\nSec-WebSocket-Version: 13\r\n\r\n",
                   accept),
             0);
    CHECK(strcmp(accept, ACCEPT) == 0);
}

TEST(test_ws_handshake_accepts_tokens_in_lists_and_any_case)
{
    CHECK_EQ(check_headers("Upgrade: WebSocket\r\nConnection: keep-alive, UPGRADE\r\n"
                           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " KEY "\r\n"),
             0);
    CHECK_EQ(check_headers("upgrade: h2c, websocket\r\nconnection: upgrade\r\n"
                           "sec-websocket-version: 13\r\nsec-websocket-key: " KEY "\r\n"),
             0);
}

TEST(test_ws_handshake_accepts_connection_upgrade_on_a_second_header_line)
{
    CHECK_EQ(check_headers("Upgrade: websocket\r\nConnection: keep-alive\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " KEY "\r\n"),
             0);
}

TEST(test_ws_handshake_rejects_http_1_0)
{
    char accept[29];
    CHECK_EQ(check("GET / HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " KEY "\r\n\r\n",
                   accept),
             400);
}

TEST(test_ws_handshake_rejects_missing_or_other_upgrade)
{
    CHECK_EQ(check_headers("Connection: Upgrade\r\n"
                           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " KEY "\r\n"),
             400);
    CHECK_EQ(check_headers("Upgrade: h2c\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " KEY "\r\n"),
             400);
    CHECK_EQ(check_headers("Upgrade: websockets\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " KEY "\r\n"),
             400);
}

TEST(test_ws_handshake_rejects_connection_without_upgrade_token)
{
    CHECK_EQ(check_headers("Upgrade: websocket\r\n"
                           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " KEY "\r\n"),
             400);
    CHECK_EQ(check_headers("Upgrade: websocket\r\nConnection: keep-alive\r\n"
                           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " KEY "\r\n"),
             400);
    CHECK_EQ(check_headers("Upgrade: websocket\r\nConnection: upgraded\r\n"
                           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " KEY "\r\n"),
             400);
}

TEST(test_ws_handshake_answers_426_for_missing_version)
{
    CHECK_EQ(check_headers("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: " KEY "\r\n"),
             426);
}

TEST(test_ws_handshake_answers_426_for_version_other_than_13)
{
    static const char *versions[] = {"8", "7, 13", "130", "1 3", "", "13a"};
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        char headers[256];
        snprintf(headers, sizeof(headers),
                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Version: %s\r\nSec-WebSocket-Key: " KEY "\r\n",
                 versions[i]);
        CHECK_EQ(check_headers(headers), 426);
    }
}

TEST(test_ws_handshake_answers_426_before_checking_key_of_old_draft_client)
{
    CHECK_EQ(check_headers("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Version: 8\r\n"),
             426);
}

TEST(test_ws_handshake_rejects_duplicate_version)
{
    CHECK_EQ(check_headers("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n"
                           "Sec-WebSocket-Key: " KEY "\r\n"),
             400);
}

TEST(test_ws_handshake_rejects_missing_key)
{
    CHECK_EQ(check_headers("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Version: 13\r\n"),
             400);
}

TEST(test_ws_handshake_rejects_key_not_base64_of_16_bytes)
{
    static const char *keys[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ",    /* no padding */
        "dGhlIHNhbXBsZSBub25jZQ=",   /* short padding */
        "dGhlIHNhbXBsZSBub25jZQ===", /* 25 characters */
        "dGhlIHNhbXBsZSBub25jZQA=",  /* 17 bytes */
        "dGhlIHNhbXBsZSBub25jZ===",  /* 15 bytes and junk padding */
        "dGhlIHNhbXBsZSBub25j*Q==",  /* not base64 */
        "dGhlIHNhbXBsZSBub25jZQ-_",  /* base64url */
        "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char headers[256];
        snprintf(headers, sizeof(headers),
                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n",
                 keys[i]);
        CHECK_EQ(check_headers(headers), 400);
    }
}

TEST(test_ws_handshake_rejects_duplicate_key)
{
    CHECK_EQ(check_headers("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " KEY "\r\n"
                           "Sec-WebSocket-Key: " KEY "\r\n"),
             400);
}

TEST(test_ws_handshake_accepts_key_with_surrounding_whitespace)
{
    char accept[29];
    CHECK_EQ(check("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Version:13\r\nSec-WebSocket-Key: \t" KEY " \r\n\r\n",
                   accept),
             0);
    CHECK(strcmp(accept, ACCEPT) == 0);
}

int main(void)
{
    RUN(test_ws_accept_key_matches_rfc6455_example);
    RUN(test_ws_accept_key_hashes_empty_and_long_keys);
    RUN(test_ws_handshake_accepts_rfc6455_request_and_writes_accept);
    RUN(test_ws_handshake_accepts_tokens_in_lists_and_any_case);
    RUN(test_ws_handshake_accepts_connection_upgrade_on_a_second_header_line);
    RUN(test_ws_handshake_rejects_http_1_0);
    RUN(test_ws_handshake_rejects_missing_or_other_upgrade);
    RUN(test_ws_handshake_rejects_connection_without_upgrade_token);
    RUN(test_ws_handshake_answers_426_for_missing_version);
    RUN(test_ws_handshake_answers_426_for_version_other_than_13);
    RUN(test_ws_handshake_answers_426_before_checking_key_of_old_draft_client);
    RUN(test_ws_handshake_rejects_duplicate_version);
    RUN(test_ws_handshake_rejects_missing_key);
    RUN(test_ws_handshake_rejects_key_not_base64_of_16_bytes);
    RUN(test_ws_handshake_rejects_duplicate_key);
    RUN(test_ws_handshake_accepts_key_with_surrounding_whitespace);
    return test_summary("ws_handshake");
}
