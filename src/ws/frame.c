/* RFC 6455 §5 framing: the incremental frame reader and message reassembler, the
 * frame-head encoder and masking. Not the handshake (handshake.c), not compression. */
#include "ws/frame.h"

#include <stdlib.h>
#include <string.h>

#include "ws/utf8.h"

/* Where a fragmented message with no payload is delivered from: never NULL, even for 0 bytes. */
static uint8_t empty_message[1];

void ws_reader_init(struct ws_reader *r, int client_side)
{
    memset(r, 0, sizeof(*r));
    r->client = client_side ? 1 : 0;
}

static void message_reset(struct ws_reader *r)
{
    buf_free(&r->msg);
    r->msg_opcode = 0;
    r->utf8 = WS_UTF8_ACCEPT;
}

void ws_reader_free(struct ws_reader *r)
{
    message_reset(r);
}

static int opcode_reserved(unsigned op)
{
    return (op >= 0x3 && op <= 0x7) || op >= 0xB;
}

static uint64_t read_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* §5.5.1: a close body is empty, or a 2-byte code followed by a UTF-8 reason. */
static int close_payload_check(const uint8_t *p, size_t len)
{
    if (len == 0)
        return 0;
    if (len == 1)
        return -WS_CLOSE_PROTOCOL;
    if (!ws_close_code_valid((unsigned)(p[0] << 8 | p[1])))
        return -WS_CLOSE_PROTOCOL;
    if (!ws_utf8_valid(p + 2, len - 2))
        return -WS_CLOSE_INVALID_DATA;
    return 0;
}

/* Append one fragment to the message being reassembled. The caller checked that
 * msg.len + len <= limit. The buffer doubles, capped at the limit, so a message of n
 * bytes costs O(log n) reallocations and never more than the limit. */
static int message_append(struct ws_reader *r, const uint8_t *p, size_t len, uint64_t limit)
{
    if (len == 0)
        return 0;
    if (buf_reserve_max(&r->msg, len, (size_t)limit) != 0)
        return -WS_CLOSE_INTERNAL;
    memcpy(r->msg.p + r->msg.len, p, len);
    r->msg.len += (uint32_t)len;
    return 0;
}

ssize_t ws_reader_feed(struct ws_reader *r, uint8_t *p, size_t len, const struct ws_limits *lim,
                       ws_message_cb cb, void *ud)
{
    uint64_t max_frame = lim ? lim->max_frame : UINT64_MAX;
    uint64_t max_message = lim ? lim->max_message : UINT64_MAX;
    /* A reassembled message lives in a struct buf: at most 2 GiB whatever the limit. */
    uint64_t max_reassembled = max_message < 0x7fffffff ? max_message : 0x7fffffff;
    size_t off = 0;

    while (len - off >= 2) {
        uint8_t *f = p + off;
        size_t avail = len - off;
        unsigned fin = f[0] & 0x80, op = f[0] & 0x0F, masked = f[1] & 0x80;
        uint64_t plen = f[1] & 0x7F;
        int control = (op & 0x8) != 0;

        /* Everything decidable from the first two bytes fails now, not after the payload. */
        if (f[0] & 0x70) /* §5.2: RSV1-3 without a negotiated extension */
            return -WS_CLOSE_PROTOCOL;
        if (opcode_reserved(op))
            return -WS_CLOSE_PROTOCOL;
        if (!masked != !!r->client) /* §5.1: clients mask, servers do not */
            return -WS_CLOSE_PROTOCOL;
        if (control) {
            if (!fin || plen > 125) /* §5.5 */
                return -WS_CLOSE_PROTOCOL;
        } else if (op == WS_OP_CONT) {
            if (r->msg_opcode == 0) /* §5.4: nothing to continue */
                return -WS_CLOSE_PROTOCOL;
        } else if (r->msg_opcode != 0) { /* §5.4: fragments of two messages interleaved */
            return -WS_CLOSE_PROTOCOL;
        }

        int ext = plen == 126 ? 2 : plen == 127 ? 8 : 0;
        size_t head = 2 + (size_t)ext + (masked ? 4 : 0);
        if (avail < head)
            break;
        if (ext) {
            plen = read_be(f + 2, ext);
            if (plen >> 63) /* §5.2: the most significant bit MUST be 0 */
                return -WS_CLOSE_PROTOCOL;
        }

        /* Limits are checked from the head: a peer announcing a huge frame is refused
         * before we buffer any of it. Control frames are bounded at 125 by §5.5. */
        int fragmented = op == WS_OP_CONT || !fin;
        if (!control) {
            uint64_t total = (op == WS_OP_CONT ? r->msg.len : 0) + plen;
            if (plen > max_frame || total > max_message)
                return -WS_CLOSE_TOO_BIG;
            if (fragmented && total > max_reassembled)
                return -WS_CLOSE_TOO_BIG;
        }
        if (avail - head < plen)
            break;

        uint8_t *payload = f + head;
        size_t n = (size_t)plen;
        if (masked)
            ws_mask(payload, n, f + head - 4, 0);
        off += head + n;

        int stop;
        if (control) {
            if (op == WS_OP_CLOSE) {
                int rc = close_payload_check(payload, n);
                if (rc < 0)
                    return rc;
            }
            stop = cb(ud, (int)op, payload, n);
        } else if (!fragmented) {
            /* The common case: a whole message in one frame, delivered in place. */
            if (op == WS_OP_TEXT && !ws_utf8_valid(payload, n))
                return -WS_CLOSE_INVALID_DATA;
            stop = cb(ud, (int)op, payload, n);
        } else {
            if (op != WS_OP_CONT) {
                r->msg_opcode = (uint8_t)op;
                r->utf8 = WS_UTF8_ACCEPT;
            }
            /* Validate each fragment as it arrives: bad text fails without waiting for
             * the rest of the message (Autobahn 6.4 "fail fast"). */
            if (r->msg_opcode == WS_OP_TEXT && ws_utf8_feed(&r->utf8, payload, n) != 0)
                return -WS_CLOSE_INVALID_DATA;
            int rc = message_append(r, payload, n, max_reassembled);
            if (rc < 0)
                return rc;
            if (!fin)
                continue;
            if (r->msg_opcode == WS_OP_TEXT && r->utf8 != WS_UTF8_ACCEPT)
                return -WS_CLOSE_INVALID_DATA; /* ends inside a character */
            uint8_t *msg = r->msg.p ? r->msg.p : empty_message;
            stop = cb(ud, r->msg_opcode, msg, r->msg.len);
            message_reset(r);
        }
        if (stop)
            break;
    }
    return (ssize_t)off;
}

size_t ws_frame_head_encode(uint8_t *out, int opcode, uint64_t len)
{
    out[0] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

size_t ws_frame_head_encode_masked(uint8_t *out, int opcode, uint64_t len, const uint8_t mask[4])
{
    size_t n = ws_frame_head_encode(out, opcode, len);
    out[1] |= 0x80;
    memcpy(out + n, mask, 4);
    return n + 4;
}

void ws_mask(uint8_t *p, size_t len, const uint8_t mask[4], size_t offset)
{
    /* The key repeated over 8 bytes, rotated to start at offset: since 8 is a multiple
     * of 4 the same word lines up with every following 8-byte block. Built byte by
     * byte and loaded with memcpy, so it is right on either byte order. */
    uint8_t key[8];
    for (int i = 0; i < 8; i++)
        key[i] = mask[(offset + (size_t)i) & 3];
    uint64_t k;
    memcpy(&k, key, 8);

    size_t i = 0;
    for (; len - i >= 32; i += 32) {
        uint64_t w[4];
        memcpy(w, p + i, 32);
        w[0] ^= k, w[1] ^= k, w[2] ^= k, w[3] ^= k;
        memcpy(p + i, w, 32);
    }
    for (; len - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= k;
        memcpy(p + i, &w, 8);
    }
    for (size_t j = 0; i < len; i++, j++)
        p[i] ^= key[j];
}

int ws_close_code_valid(unsigned code)
{
    if (code >= 1000 && code <= 1003)
        return 1;
    if (code >= 1007 && code <= 1011)
        return 1;
    return code >= 3000 && code <= 4999;
}
