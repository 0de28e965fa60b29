/* RFC 6455 framing: an incremental reader that assembles messages from frames
 * (both sides: the server reads masked client frames, herald-bench reads unmasked
 * server frames), and the frame-head encoder. Not the handshake (ws/handshake.h). */
#ifndef HERALD_WS_FRAME_H
#define HERALD_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/buf.h"

enum ws_opcode {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* Close codes (RFC 6455 §7.4.1) the reader returns, negated, on bad input. */
enum ws_close_code {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005,
    WS_CLOSE_INVALID_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
};

/* Largest frame head: 2 + 8 (length) + 4 (mask). */
#define WS_FRAME_HEAD_MAX 14

struct ws_limits {
    uint64_t max_frame;   /* payload bytes of one frame */
    uint64_t max_message; /* payload bytes of one (possibly fragmented) message */
};

/* Called once per complete data message (opcode WS_OP_TEXT or WS_OP_BINARY, already
 * reassembled, unmasked and, for text, UTF-8 validated) and once per control frame
 * (WS_OP_PING, WS_OP_PONG, WS_OP_CLOSE; for close, the payload was validated: empty,
 * or a valid code followed by UTF-8). payload is borrowed for the duration of the
 * call and may be modified by the callee. Return 0 to go on, non-zero to stop
 * reading (ws_reader_feed then returns the bytes consumed so far, that frame included). */
typedef int (*ws_message_cb)(void *ud, int opcode, uint8_t *payload, size_t len);

/* Per-connection reassembly state. Small while no fragmented message is pending:
 * the payload of a fragmented message is kept in msg (malloc'd), freed when the
 * message completes or by ws_reader_free. */
struct ws_reader {
    struct buf msg; /* fragments of the current message, empty when none */
    uint32_t utf8;      /* UTF-8 validator state across fragments (ws/utf8.h) */
    uint8_t msg_opcode; /* opcode of the fragmented message in progress, 0 if none */
    uint8_t client;     /* 1: we are the client, frames must be unmasked; 0: server, frames must be
                           masked */
};

void ws_reader_init(struct ws_reader *r, int client_side);
void ws_reader_free(struct ws_reader *r);

/* Parse as many complete frames from p[0..len) as there are, unmasking in place
 * (p is modified). Returns the number of bytes consumed (>= 0): the caller keeps
 * the unconsumed tail (an incomplete frame) and presents it again, followed by more
 * bytes. Returns a negated close code on a protocol violation: -1002 (unmasked
 * client frame, masked server frame, RSV bits set, reserved opcode, fragmented or
 * oversized (>125) control frame, continuation without a message, new message
 * while one is fragmented, invalid close payload or code), -1007 (invalid UTF-8 in
 * a text message or a close reason), -1009 (frame or message over the limits). */
ssize_t ws_reader_feed(struct ws_reader *r, uint8_t *p, size_t len, const struct ws_limits *lim,
                       ws_message_cb cb, void *ud);

/* Write an unmasked frame head with FIN set for a payload of len bytes into out
 * (WS_FRAME_HEAD_MAX bytes of room). Returns the head length (2, 4 or 10). */
size_t ws_frame_head_encode(uint8_t *out, int opcode, uint64_t len);

/* Client side (herald-bench, tests): a masked frame head with FIN set; returns 6, 8 or 14. */
size_t ws_frame_head_encode_masked(uint8_t *out, int opcode, uint64_t len, const uint8_t mask[4]);

/* XOR p[0..len) with mask, starting at mask index (offset & 3). */
void ws_mask(uint8_t *p, size_t len, const uint8_t mask[4], size_t offset);

/* Is code valid in a close frame sent by a peer (RFC 6455 §7.4)? 1000-1003, 1007-1011,
 * 3000-4999 are; 1004-1006, 1015, 1012-1014 (not registered for peers), <1000 and >=5000 are not.
 */
int ws_close_code_valid(unsigned code);

#endif
