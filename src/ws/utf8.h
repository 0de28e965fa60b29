/* Incremental UTF-8 validation (RFC 3629: no overlongs, no surrogates, <= U+10FFFF),
 * carried across WebSocket fragments. Hand-written: it runs on every text byte. */
#ifndef HERALD_WS_UTF8_H
#define HERALD_WS_UTF8_H

#include <stddef.h>
#include <stdint.h>

#define WS_UTF8_ACCEPT 0u

/* Validate p[0..len) continuing from *state (start with WS_UTF8_ACCEPT). Returns 0
 * if the bytes so far are a valid prefix (the message is complete and valid when
 * *state == WS_UTF8_ACCEPT afterwards), -1 as soon as they cannot be. */
int ws_utf8_feed(uint32_t *state, const uint8_t *p, size_t len);

/* Whole-buffer check: 1 if p[0..len) is complete valid UTF-8, else 0. */
int ws_utf8_valid(const uint8_t *p, size_t len);

#endif
