/* libFuzzer target for the HTTP request-head parser (http/parser.h) and the
 * WebSocket handshake check that reads its headers (ws/handshake.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"
#include "http/server.h"
#include "ws/handshake.h"

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static int inside(const uint8_t *base, size_t len, const uint8_t *p, size_t n)
{
    return p >= base && n <= len && (size_t)(p - base) <= len - n;
}

static void check_value_tokens(const struct http_header *h)
{
    http_value_has_token(h->value, h->value_len, "close");
    http_value_has_token(h->value, h->value_len, "upgrade");
    http_value_has_token(h->value, h->value_len, "");
    /* A one-element value (no comma) always contains itself as a token. */
    char token[256];
    if (h->value_len > 0 && h->value_len < sizeof(token) &&
        memchr(h->value, ',', h->value_len) == NULL) {
        memcpy(token, h->value, h->value_len);
        token[h->value_len] = '\0';
        REQUIRE(http_value_has_token(h->value, h->value_len, token));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct http_limits lim = {4096, 32};
    struct http_request req;
    int r = http_parse_request(data, size, &lim, &req);
    REQUIRE(r == 0 || r == -400 || r == -431 || r == -505 || r > 0);
    if (r == 0)
        REQUIRE(size <= lim.max_head);
    if (r <= 0)
        return 0;

    size_t head = (size_t)r;
    REQUIRE(head <= size && head <= lim.max_head);
    REQUIRE(req.num_headers <= lim.max_headers);
    REQUIRE(req.method_len > 0 && inside(data, head, req.method_str, req.method_len));
    REQUIRE(req.path_len > 0 && inside(data, head, req.path, req.path_len));
    REQUIRE(req.path[0] == '/');
    if (req.query != NULL)
        REQUIRE(inside(data, head, req.query, req.query_len));
    REQUIRE(req.minor_version == 0 || req.minor_version == 1);
    REQUIRE(req.content_length >= -1);
    REQUIRE(!(req.content_length >= 0 && req.has_transfer_encoding));
    REQUIRE(!req.transfer_chunked || req.has_transfer_encoding);
    for (size_t i = 0; i < req.num_headers; i++) {
        const struct http_header *h = &req.headers[i];
        REQUIRE(h->name_len > 0 && inside(data, head, h->name, h->name_len));
        REQUIRE(inside(data, head, h->value, h->value_len));
        if (h->value_len > 0) {
            uint8_t first = h->value[0], last = h->value[h->value_len - 1];
            REQUIRE(first != ' ' && first != '\t' && last != ' ' && last != '\t');
            REQUIRE(memchr(h->value, '\r', h->value_len) == NULL);
            REQUIRE(memchr(h->value, '\n', h->value_len) == NULL);
        }
        check_value_tokens(h);
    }
    REQUIRE(http_find_header(&req, "Host") != NULL || req.minor_version == 0);

    char accept[29];
    if (http_ws_check(&req, accept) == 0)
        REQUIRE(strlen(accept) == 28);

    /* The head does not depend on what follows it, and any shorter prefix of it is
     * incomplete: split delivery gives 0, 0, ..., then the same length. */
    struct http_request again;
    REQUIRE(http_parse_request(data, head, &lim, &again) == r);
    REQUIRE(again.num_headers == req.num_headers);
    REQUIRE(http_parse_request(data, head - 1, &lim, &again) == 0);
    REQUIRE(http_parse_request(data, head / 2, &lim, &again) == 0);

    /* One byte less of allowed head is a 431, complete or not. */
    struct http_limits tight = {head - 1, lim.max_headers};
    REQUIRE(http_parse_request(data, size, &tight, &again) == -431);
    return 0;
}
