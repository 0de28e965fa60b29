/* WebSocket opening handshake, server side (RFC 6455 §4.2): validates the upgrade
 * request and computes Sec-WebSocket-Accept. Not framing (ws/frame.h). */
#ifndef HERALD_WS_HANDSHAKE_H
#define HERALD_WS_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

/* One request header as the HTTP side parsed it (borrowed bytes, value trimmed). */
struct ws_header {
    const uint8_t *name;
    size_t name_len;
    const uint8_t *value;
    size_t value_len;
};

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID)), 28
 * characters and a NUL written to out. */
void ws_accept_key(const uint8_t *key, size_t key_len, char out[29]);

/* Check an upgrade request (method GET, HTTP/1.http_minor, its headers[0..n)).
 * Returns 0 if it is a valid RFC 6455 handshake and writes the accept value into
 * accept; else the HTTP status to answer: 400 (no "Upgrade: websocket", no "upgrade"
 * token in Connection, missing or malformed Sec-WebSocket-Key: must be base64 of 16
 * bytes, HTTP/1.0), 426 (a Sec-WebSocket-Version other than 13: answer with
 * "Sec-WebSocket-Version: 13"). */
int ws_handshake_check(int http_minor, const struct ws_header *headers, size_t n,
                       char accept[29]);

#endif
