/* Unit tests for ws/frame.c: every RFC 6455 §5 rule the reader enforces, the limits,
 * reassembly, zero copy, and the encoder round trip through the client-side reader. */
#include "ws/frame.h"

#include <stdlib.h>

#include "test.h"

#define FIN 0x80
#define RSV1 0x40
#define RSV2 0x20
#define RSV3 0x10

static const uint8_t key[4] = {0x37, 0xFA, 0x21, 0x3D};
static const struct ws_limits big = {1 << 20, 1 << 22};

/* What the callback saw. */
struct sink {
    int n;
    int stop_at; /* return 1 from the callback for message number stop_at (1-based), 0: never */
    struct {
        int op;
        size_t len;
        const uint8_t *at; /* where the payload was delivered from */
        uint8_t *data;     /* a copy */
    } m[64];
};

static int on_message(void *ud, int op, uint8_t *p, size_t len)
{
    struct sink *s = ud;
    if (s->n < 64) {
        s->m[s->n].op = op;
        s->m[s->n].len = len;
        s->m[s->n].at = p;
        s->m[s->n].data = malloc(len ? len : 1);
        memcpy(s->m[s->n].data, p, len);
    }
    s->n++;
    return s->stop_at == s->n;
}

static void sink_free(struct sink *s)
{
    for (int i = 0; i < s->n && i < 64; i++)
        free(s->m[i].data);
    memset(s, 0, sizeof(*s));
}

/* Append one frame to out: b0 is FIN|RSV|opcode as sent; the length is encoded
 * minimally (2, 4 or 10 byte head); masked with key when masked != 0. */
static size_t frame(uint8_t *out, unsigned b0, const void *payload, size_t len, int masked)
{
    size_t h = ws_frame_head_encode(out, 0, len);
    out[0] = (uint8_t)b0;
    if (masked) {
        out[1] |= 0x80;
        memcpy(out + h, key, 4);
        h += 4;
    }
    if (len)
        memcpy(out + h, payload, len);
    if (masked)
        ws_mask(out + h, len, key, 0);
    return h + len;
}

/* A client frame as the server receives it (masked). */
static size_t cframe(uint8_t *out, unsigned b0, const char *payload)
{
    return frame(out, b0, payload, strlen(payload), 1);
}

static ssize_t feed(struct ws_reader *r, uint8_t *p, size_t len, const struct ws_limits *lim,
                    struct sink *s)
{
    return ws_reader_feed(r, p, len, lim, on_message, s);
}

/* One server-side reader fed buf in one go; returns the feed result. */
static ssize_t server_feed(uint8_t *buf, size_t len, struct sink *s)
{
    struct ws_reader r;
    ws_reader_init(&r, 0);
    ssize_t rc = feed(&r, buf, len, &big, s);
    ws_reader_free(&r);
    return rc;
}

/* ---- encoder and mask ---- */

TEST(test_ws_frame_head_encode_picks_minimal_length_form)
{
    uint8_t h[WS_FRAME_HEAD_MAX];
    CHECK_EQ(ws_frame_head_encode(h, WS_OP_TEXT, 0), 2);
    CHECK_EQ(h[0], 0x81);
    CHECK_EQ(h[1], 0);
    CHECK_EQ(ws_frame_head_encode(h, WS_OP_BINARY, 125), 2);
    CHECK_EQ(h[0], 0x82);
    CHECK_EQ(h[1], 125);
    CHECK_EQ(ws_frame_head_encode(h, WS_OP_TEXT, 126), 4);
    CHECK_EQ(h[1], 126);
    CHECK_EQ(h[2], 0);
    CHECK_EQ(h[3], 126);
    CHECK_EQ(ws_frame_head_encode(h, WS_OP_TEXT, 65535), 4);
    CHECK_EQ(h[2], 0xFF);
    CHECK_EQ(h[3], 0xFF);
    CHECK_EQ(ws_frame_head_encode(h, WS_OP_TEXT, 65536), 10);
    CHECK_EQ(h[1], 127);
    static const uint8_t l65536[8] = {0, 0, 0, 0, 0, 1, 0, 0};
    CHECK(memcmp(h + 2, l65536, 8) == 0);
    CHECK_EQ(ws_frame_head_encode(h, WS_OP_CLOSE, 0x0102030405060708ull), 10);
    CHECK_EQ(h[0], 0x88);
    static const uint8_t lbig[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK(memcmp(h + 2, lbig, 8) == 0);
}

TEST(test_ws_frame_head_encode_masked_sets_mask_bit_and_key)
{
    uint8_t h[WS_FRAME_HEAD_MAX];
    CHECK_EQ(ws_frame_head_encode_masked(h, WS_OP_TEXT, 5, key), 6);
    CHECK_EQ(h[1], 0x85);
    CHECK(memcmp(h + 2, key, 4) == 0);
    CHECK_EQ(ws_frame_head_encode_masked(h, WS_OP_TEXT, 300, key), 8);
    CHECK_EQ(h[1], 0xFE);
    CHECK(memcmp(h + 4, key, 4) == 0);
    CHECK_EQ(ws_frame_head_encode_masked(h, WS_OP_PING, 70000, key), 14);
    CHECK_EQ(h[0], 0x89);
    CHECK_EQ(h[1], 0xFF);
    CHECK(memcmp(h + 10, key, 4) == 0);
}

TEST(test_ws_mask_matches_bytewise_xor_at_every_offset_length_and_alignment)
{
    uint8_t ref[80], buf[88];
    for (size_t align = 0; align < 8; align++) {
        for (size_t off = 0; off < 8; off++) {
            for (size_t len = 0; len <= 80; len++) {
                for (size_t i = 0; i < len; i++)
                    ref[i] = buf[align + i] = (uint8_t)(i * 7 + len);
                for (size_t i = 0; i < len; i++)
                    ref[i] ^= key[(off + i) & 3];
                ws_mask(buf + align, len, key, off);
                CHECK(memcmp(buf + align, ref, len) == 0);
            }
        }
    }
}

TEST(test_ws_mask_in_pieces_equals_mask_in_one_go)
{
    uint8_t a[100], b[100];
    for (size_t i = 0; i < 100; i++)
        a[i] = b[i] = (uint8_t)i;
    ws_mask(a, 100, key, 0);
    ws_mask(b, 13, key, 0);
    ws_mask(b + 13, 50, key, 13);
    ws_mask(b + 63, 37, key, 63);
    CHECK(memcmp(a, b, 100) == 0);
    ws_mask(a, 100, key, 0);
    for (size_t i = 0; i < 100; i++)
        CHECK_EQ(a[i], i);
}

TEST(test_ws_close_code_valid_follows_rfc6455_7_4)
{
    static const unsigned ok[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                  1010, 1011, 3000, 3999, 4000, 4999};
    static const unsigned bad[] = {0,    999,  1004, 1005, 1006, 1012, 1013, 1014,
                                   1015, 1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        CHECK(ws_close_code_valid(ok[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(!ws_close_code_valid(bad[i]));
}

/* ---- round trip through the reader ---- */

TEST(test_ws_frame_encoder_round_trips_through_client_reader)
{
    static const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 70000};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t n = sizes[k];
        uint8_t *buf = malloc(WS_FRAME_HEAD_MAX + n);
        size_t h = ws_frame_head_encode(buf, WS_OP_BINARY, n);
        for (size_t i = 0; i < n; i++)
            buf[h + i] = (uint8_t)(i * 31);
        struct ws_reader r;
        ws_reader_init(&r, 1);
        struct sink s = {0};
        CHECK_EQ(feed(&r, buf, h + n, &big, &s), h + n);
        CHECK_EQ(s.n, 1);
        CHECK_EQ(s.m[0].op, WS_OP_BINARY);
        CHECK_EQ(s.m[0].len, n);
        int same = 1;
        for (size_t i = 0; i < n; i++)
            same &= s.m[0].data[i] == (uint8_t)(i * 31);
        CHECK(same);
        sink_free(&s);
        ws_reader_free(&r);
        free(buf);
    }
}

TEST(test_ws_frame_masked_encoder_round_trips_through_server_reader)
{
    static const size_t sizes[] = {0, 3, 125, 126, 65535, 65536, 100001};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t n = sizes[k];
        uint8_t *buf = malloc(WS_FRAME_HEAD_MAX + n);
        size_t h = ws_frame_head_encode_masked(buf, WS_OP_TEXT, n, key);
        for (size_t i = 0; i < n; i++)
            buf[h + i] = (uint8_t)('a' + i % 26);
        ws_mask(buf + h, n, key, 0);
        struct sink s = {0};
        CHECK_EQ(server_feed(buf, h + n, &s), h + n);
        CHECK_EQ(s.n, 1);
        CHECK_EQ(s.m[0].op, WS_OP_TEXT);
        CHECK_EQ(s.m[0].len, n);
        int same = 1;
        for (size_t i = 0; i < n; i++)
            same &= s.m[0].data[i] == (uint8_t)('a' + i % 26);
        CHECK(same);
        sink_free(&s);
        free(buf);
    }
}

TEST(test_ws_frame_unmasks_in_place_and_delivers_unfragmented_message_zero_copy)
{
    uint8_t buf[64];
    size_t n = cframe(buf, FIN | WS_OP_TEXT, "hello");
    struct sink s = {0};
    CHECK_EQ(server_feed(buf, n, &s), n);
    CHECK_EQ(s.n, 1);
    CHECK(s.m[0].at == buf + 6);
    CHECK_MEM(buf + 6, 5, "hello");
    sink_free(&s);
}

/* ---- incremental feeding ---- */

TEST(test_ws_frame_leaves_partial_frame_unconsumed)
{
    uint8_t buf[256];
    size_t a = cframe(buf, FIN | WS_OP_TEXT, "first");
    size_t b = cframe(buf + a, FIN | WS_OP_BINARY, "second");
    struct ws_reader r;
    ws_reader_init(&r, 0);
    struct sink s = {0};
    /* Every prefix that ends inside the second frame consumes exactly the first. */
    for (size_t cut = 0; cut < a + b; cut++) {
        uint8_t copy[256];
        memcpy(copy, buf, a + b);
        sink_free(&s);
        ssize_t rc = feed(&r, copy, cut, &big, &s);
        CHECK_EQ(rc, cut < a ? 0 : (ssize_t)a);
        CHECK_EQ(s.n, cut < a ? 0 : 1);
    }
    sink_free(&s);
    CHECK_EQ(feed(&r, buf, a + b, &big, &s), a + b);
    CHECK_EQ(s.n, 2);
    CHECK_MEM(s.m[0].data, s.m[0].len, "first");
    CHECK_MEM(s.m[1].data, s.m[1].len, "second");
    sink_free(&s);
    ws_reader_free(&r);
}

TEST(test_ws_frame_chunked_feeding_with_kept_tail_yields_same_messages)
{
    /* The server's read loop: append what arrives, feed, keep the unconsumed tail. */
    uint8_t stream[4096];
    size_t len = 0;
    char text[300];
    for (int i = 0; i < 20; i++) {
        size_t tl = (size_t)(i * 13) % 290;
        memset(text, 'a' + i, tl);
        text[tl] = 0;
        if (i % 3 == 0) {
            len += cframe(stream + len, WS_OP_TEXT, "part-");
            len += cframe(stream + len, FIN | WS_OP_PING, "p");
            len += cframe(stream + len, FIN | WS_OP_CONT, text);
        } else {
            len += cframe(stream + len, FIN | (i % 2 ? WS_OP_TEXT : WS_OP_BINARY), text);
        }
    }
    uint32_t seed = 7;
    for (int round = 0; round < 50; round++) {
        uint8_t copy[4096], pending[4096];
        memcpy(copy, stream, len);
        size_t have = 0, pos = 0;
        struct ws_reader r;
        ws_reader_init(&r, 0);
        struct sink s = {0};
        while (pos < len) {
            seed = seed * 1103515245u + 12345u;
            size_t chunk = 1 + (seed >> 16) % (round < 10 ? 3 : 400);
            if (chunk > len - pos)
                chunk = len - pos;
            memcpy(pending + have, copy + pos, chunk);
            have += chunk, pos += chunk;
            ssize_t rc = feed(&r, pending, have, &big, &s);
            CHECK(rc >= 0);
            if (rc < 0)
                break;
            memmove(pending, pending + rc, have - (size_t)rc);
            have -= (size_t)rc;
        }
        CHECK_EQ(have, 0);
        CHECK_EQ(s.n, 20 + 7);
        int k = 0;
        for (int i = 0; i < 20 && k + 1 < s.n; i++) {
            size_t tl = (size_t)(i * 13) % 290;
            if (i % 3 == 0) {
                CHECK_EQ(s.m[k].op, WS_OP_PING);
                k++;
                CHECK_EQ(s.m[k].len, 5 + tl);
                CHECK(memcmp(s.m[k].data, "part-", 5) == 0);
            } else {
                CHECK_EQ(s.m[k].len, tl);
            }
            CHECK(tl == 0 || s.m[k].data[s.m[k].len - 1] == 'a' + i);
            k++;
        }
        CHECK(r.msg.p == NULL);
        sink_free(&s);
        ws_reader_free(&r);
    }
}

TEST(test_ws_frame_callback_stop_returns_bytes_through_that_frame)
{
    uint8_t buf[256];
    size_t a = cframe(buf, FIN | WS_OP_TEXT, "one");
    size_t b = cframe(buf + a, FIN | WS_OP_TEXT, "two");
    size_t c = cframe(buf + a + b, FIN | WS_OP_TEXT, "three");
    struct ws_reader r;
    ws_reader_init(&r, 0);
    struct sink s = {0};
    s.stop_at = 2;
    CHECK_EQ(feed(&r, buf, a + b + c, &big, &s), a + b);
    CHECK_EQ(s.n, 2);
    CHECK_EQ(feed(&r, buf + a + b, c, &big, &s), c);
    CHECK_EQ(s.n, 3);
    CHECK_MEM(s.m[2].data, s.m[2].len, "three");
    sink_free(&s);
    ws_reader_free(&r);
}

TEST(test_ws_frame_callback_stop_on_fragmented_message_resets_reassembly)
{
    uint8_t buf[256];
    size_t n = cframe(buf, WS_OP_TEXT, "ab");
    n += cframe(buf + n, FIN | WS_OP_CONT, "cd");
    size_t m = cframe(buf + n, FIN | WS_OP_TEXT, "next");
    struct ws_reader r;
    ws_reader_init(&r, 0);
    struct sink s = {0};
    s.stop_at = 1;
    CHECK_EQ(feed(&r, buf, n + m, &big, &s), n);
    CHECK(r.msg.p == NULL);
    CHECK_EQ(r.msg_opcode, 0);
    CHECK_EQ(feed(&r, buf + n, m, &big, &s), m); /* a new TEXT is legal now */
    CHECK_EQ(s.n, 2);
    sink_free(&s);
    ws_reader_free(&r);
}

/* ---- header rules (1002) ---- */

TEST(test_ws_frame_rejects_unmasked_client_frame)
{
    uint8_t buf[32];
    size_t n = frame(buf, FIN | WS_OP_TEXT, "hi", 2, 0);
    struct sink s = {0};
    CHECK_EQ(server_feed(buf, n, &s), -1002);
    CHECK_EQ(server_feed(buf, 2, &s), -1002); /* known from the first two bytes */
    CHECK_EQ(s.n, 0);
}

TEST(test_ws_frame_client_side_rejects_masked_server_frame)
{
    uint8_t buf[32];
    size_t n = frame(buf, FIN | WS_OP_TEXT, "hi", 2, 1);
    struct ws_reader r;
    ws_reader_init(&r, 1);
    struct sink s = {0};
    CHECK_EQ(feed(&r, buf, n, &big, &s), -1002);
    CHECK_EQ(s.n, 0);
    ws_reader_free(&r);
}

TEST(test_ws_frame_rejects_rsv_bits)
{
    static const unsigned rsv[] = {RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3};
    for (size_t i = 0; i < 4; i++) {
        uint8_t buf[32];
        size_t n = cframe(buf, FIN | rsv[i] | WS_OP_TEXT, "x");
        struct sink s = {0};
        CHECK_EQ(server_feed(buf, n, &s), -1002);
        n = cframe(buf, FIN | rsv[i] | WS_OP_PING, "");
        CHECK_EQ(server_feed(buf, n, &s), -1002);
        CHECK_EQ(s.n, 0);
    }
}

TEST(test_ws_frame_rejects_reserved_opcodes)
{
    static const unsigned ops[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        uint8_t buf[32];
        size_t n = cframe(buf, FIN | ops[i], "");
        struct sink s = {0};
        CHECK_EQ(server_feed(buf, n, &s), -1002);
        CHECK_EQ(s.n, 0);
    }
}

TEST(test_ws_frame_rejects_fragmented_control_frame)
{
    static const unsigned ops[] = {WS_OP_PING, WS_OP_PONG, WS_OP_CLOSE};
    for (size_t i = 0; i < 3; i++) {
        uint8_t buf[32];
        size_t n = cframe(buf, ops[i], "");
        struct sink s = {0};
        CHECK_EQ(server_feed(buf, n, &s), -1002);
        CHECK_EQ(s.n, 0);
    }
}

TEST(test_ws_frame_rejects_control_frame_over_125_bytes)
{
    uint8_t payload[126], buf[256];
    memset(payload, 'p', sizeof(payload));
    struct sink s = {0};
    size_t n = frame(buf, FIN | WS_OP_PING, payload, 125, 1);
    CHECK_EQ(server_feed(buf, n, &s), n);
    CHECK_EQ(s.n, 1);
    CHECK_EQ(s.m[0].op, WS_OP_PING);
    CHECK_EQ(s.m[0].len, 125);
    sink_free(&s);
    n = frame(buf, FIN | WS_OP_PING, payload, 126, 1);
    CHECK_EQ(server_feed(buf, 2, &s), -1002); /* the 7-bit length alone says it */
    CHECK_EQ(server_feed(buf, n, &s), -1002);
    n = frame(buf, FIN | WS_OP_PONG, payload, 126, 1);
    CHECK_EQ(server_feed(buf, n, &s), -1002);
    CHECK_EQ(s.n, 0);
}

TEST(test_ws_frame_rejects_64_bit_length_with_msb_set)
{
    uint8_t buf[32] = {FIN | WS_OP_BINARY, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1};
    memcpy(buf + 10, key, 4);
    struct ws_reader r;
    ws_reader_init(&r, 0);
    struct sink s = {0};
    struct ws_limits none = {UINT64_MAX, UINT64_MAX};
    CHECK_EQ(feed(&r, buf, 14, &none, &s), -1002);
    ws_reader_free(&r);
}

TEST(test_ws_frame_accepts_non_minimal_length_encoding)
{
    uint8_t buf[64] = {FIN | WS_OP_TEXT, 0x80 | 126, 0, 3};
    memcpy(buf + 4, key, 4);
    memcpy(buf + 8, "abc", 3);
    ws_mask(buf + 8, 3, key, 0);
    struct sink s = {0};
    CHECK_EQ(server_feed(buf, 11, &s), 11);
    CHECK_EQ(s.n, 1);
    CHECK_MEM(s.m[0].data, s.m[0].len, "abc");
    sink_free(&s);

    uint8_t b64[32] = {FIN | WS_OP_TEXT, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 2};
    memcpy(b64 + 10, key, 4);
    memcpy(b64 + 14, "ok", 2);
    ws_mask(b64 + 14, 2, key, 0);
    CHECK_EQ(server_feed(b64, 16, &s), 16);
    CHECK_EQ(s.n, 1);
    CHECK_MEM(s.m[0].data, s.m[0].len, "ok");
    sink_free(&s);
}

/* ---- fragmentation (1002) ---- */

TEST(test_ws_frame_rejects_continuation_without_message)
{
    uint8_t buf[32];
    size_t n = cframe(buf, FIN | WS_OP_CONT, "x");
    struct sink s = {0};
    CHECK_EQ(server_feed(buf, n, &s), -1002);
    n = cframe(buf, WS_OP_CONT, "x");
    CHECK_EQ(server_feed(buf, n, &s), -1002);
    CHECK_EQ(s.n, 0);
}

TEST(test_ws_frame_rejects_new_message_while_fragmented_one_is_in_progress)
{
    static const unsigned second[] = {WS_OP_TEXT, WS_OP_BINARY, FIN | WS_OP_TEXT,
                                      FIN | WS_OP_BINARY};
    for (size_t i = 0; i < 4; i++) {
        uint8_t buf[64];
        size_t n = cframe(buf, WS_OP_TEXT, "frag");
        n += cframe(buf + n, second[i], "x");
        struct sink s = {0};
        CHECK_EQ(server_feed(buf, n, &s), -1002);
        CHECK_EQ(s.n, 0);
    }
}

TEST(test_ws_frame_reassembles_fragmented_text_with_ping_interleaved)
{
    /* Autobahn 5.6-5.9 style: a ping between fragments is answered at once. */
    uint8_t buf[128];
    size_t n = cframe(buf, WS_OP_TEXT, "frag");
    n += cframe(buf + n, FIN | WS_OP_PING, "ping!");
    n += cframe(buf + n, WS_OP_CONT, "men");
    n += cframe(buf + n, FIN | WS_OP_PONG, "");
    n += cframe(buf + n, FIN | WS_OP_CONT, "ted");
    struct ws_reader r;
    ws_reader_init(&r, 0);
    struct sink s = {0};
    CHECK_EQ(feed(&r, buf, n, &big, &s), n);
    CHECK_EQ(s.n, 3);
    CHECK_EQ(s.m[0].op, WS_OP_PING);
    CHECK_MEM(s.m[0].data, s.m[0].len, "ping!");
    CHECK_EQ(s.m[1].op, WS_OP_PONG);
    CHECK_EQ(s.m[1].len, 0);
    CHECK_EQ(s.m[2].op, WS_OP_TEXT);
    CHECK_MEM(s.m[2].data, s.m[2].len, "fragmented");
    /* Reassembled into the reader's buffer, not the input, then freed. */
    CHECK(s.m[2].at < buf || s.m[2].at >= buf + sizeof(buf));
    CHECK(r.msg.p == NULL);
    CHECK_EQ(r.msg_opcode, 0);
    sink_free(&s);
    ws_reader_free(&r);
}

TEST(test_ws_frame_delivers_ping_between_fragments_fed_separately)
{
    uint8_t buf[128];
    size_t a = cframe(buf, WS_OP_BINARY, "12");
    size_t b = cframe(buf + a, FIN | WS_OP_PING, "");
    size_t c = cframe(buf + a + b, FIN | WS_OP_CONT, "34");
    struct ws_reader r;
    ws_reader_init(&r, 0);
    struct sink s = {0};
    CHECK_EQ(feed(&r, buf, a, &big, &s), a);
    CHECK_EQ(s.n, 0);
    CHECK_EQ(feed(&r, buf + a, b, &big, &s), b);
    CHECK_EQ(s.n, 1);
    CHECK_EQ(s.m[0].op, WS_OP_PING);
    CHECK_EQ(feed(&r, buf + a + b, c, &big, &s), c);
    CHECK_EQ(s.n, 2);
    CHECK_EQ(s.m[1].op, WS_OP_BINARY);
    CHECK_MEM(s.m[1].data, s.m[1].len, "1234");
    sink_free(&s);
    ws_reader_free(&r);
}

TEST(test_ws_frame_delivers_empty_fragmented_message)
{
    uint8_t buf[64];
    size_t n = cframe(buf, WS_OP_TEXT, "");
    n += cframe(buf + n, WS_OP_CONT, "");
    n += cframe(buf + n, FIN | WS_OP_CONT, "");
    struct sink s = {0};
    CHECK_EQ(server_feed(buf, n, &s), n);
    CHECK_EQ(s.n, 1);
    CHECK_EQ(s.m[0].op, WS_OP_TEXT);
    CHECK_EQ(s.m[0].len, 0);
    CHECK(s.m[0].at != NULL);
    sink_free(&s);
}

TEST(test_ws_frame_reassembles_many_fragments_growing_buffer)
{
    /* 1000 fragments of 100 bytes: the buffer grows geometrically, content intact. */
    size_t cap = 1000 * (100 + 6);
    uint8_t *buf = malloc(cap), frag[100];
    size_t n = 0;
    for (int i = 0; i < 1000; i++) {
        memset(frag, '0' + i % 10, sizeof(frag));
        unsigned b0 = (i == 0 ? WS_OP_BINARY : WS_OP_CONT) | (i == 999 ? FIN : 0);
        n += frame(buf + n, b0, frag, sizeof(frag), 1);
    }
    struct ws_reader r;
    ws_reader_init(&r, 0);
    struct sink s = {0};
    struct ws_limits lim = {100, 100000};
    CHECK_EQ(feed(&r, buf, n, &lim, &s), n);
    CHECK_EQ(s.n, 1);
    CHECK_EQ(s.m[0].len, 100000);
    int same = 1;
    for (size_t i = 0; i < 100000; i++)
        same &= s.m[0].data[i] == '0' + (i / 100) % 10;
    CHECK(same);
    CHECK(r.msg.p == NULL);
    sink_free(&s);
    ws_reader_free(&r);
    free(buf);
}

/* ---- limits (1009) ---- */

TEST(test_ws_frame_rejects_oversized_frame_from_header_before_payload)
{
    /* Autobahn 9.x style: only the head of a 16 MiB frame has arrived. */
    uint8_t head[WS_FRAME_HEAD_MAX];
    size_t h = ws_frame_head_encode_masked(head, WS_OP_BINARY, 16u << 20, key);
    struct sink s = {0};
    CHECK_EQ(server_feed(head, h, &s), -1009);
    /* And a 16-bit length just over a small limit. */
    h = ws_frame_head_encode_masked(head, WS_OP_TEXT, 1001, key);
    struct ws_reader r;
    ws_reader_init(&r, 0);
    struct ws_limits lim = {1000, 5000};
    CHECK_EQ(feed(&r, head, h, &lim, &s), -1009);
    ws_reader_free(&r);
    ws_reader_init(&r, 0);
    h = ws_frame_head_encode_masked(head, WS_OP_TEXT, 1000, key);
    CHECK_EQ(feed(&r, head, h, &lim, &s), 0); /* at the limit: wait for the payload */
    ws_reader_free(&r);
    CHECK_EQ(s.n, 0);
}

TEST(test_ws_frame_rejects_unfragmented_message_over_max_message)
{
    uint8_t head[WS_FRAME_HEAD_MAX];
    struct ws_limits lim = {1000, 500};
    size_t h = ws_frame_head_encode_masked(head, WS_OP_BINARY, 501, key);
    struct ws_reader r;
    ws_reader_init(&r, 0);
    struct sink s = {0};
    CHECK_EQ(feed(&r, head, h, &lim, &s), -1009);
    ws_reader_free(&r);
}

TEST(test_ws_frame_rejects_fragmented_message_over_max_message_at_fragment_header)
{
    struct ws_limits lim = {100, 250};
    uint8_t frag[100], buf[512];
    memset(frag, 'z', sizeof(frag));
    size_t n = frame(buf, WS_OP_TEXT, frag, 100, 1);
    n += frame(buf + n, WS_OP_CONT, frag, 100, 1);
    size_t ok = n;
    n += ws_frame_head_encode_masked(buf + n, WS_OP_CONT, 51, key); /* 251 in all */
    struct ws_reader r;
    ws_reader_init(&r, 0);
    struct sink s = {0};
    CHECK_EQ(feed(&r, buf, ok, &lim, &s), ok);
    CHECK_EQ(feed(&r, buf + ok, n - ok, &lim, &s), -1009);
    CHECK_EQ(s.n, 0);
    ws_reader_free(&r);

    /* Exactly the limit is accepted, and the buffer never grew past it. */
    n = frame(buf, WS_OP_TEXT, frag, 100, 1);
    n += frame(buf + n, WS_OP_CONT, frag, 100, 1);
    n += frame(buf + n, FIN | WS_OP_CONT, frag, 50, 1);
    ws_reader_init(&r, 0);
    CHECK_EQ(feed(&r, buf, ok, &lim, &s), ok);
    CHECK(r.msg.cap <= 250);
    CHECK_EQ(feed(&r, buf + ok, n - ok, &lim, &s), n - ok);
    CHECK_EQ(s.n, 1);
    CHECK_EQ(s.m[0].len, 250);
    sink_free(&s);
    ws_reader_free(&r);
}

TEST(test_ws_frame_rejects_fragment_over_max_frame)
{
    struct ws_limits lim = {100, 1000};
    uint8_t buf[512], frag[101];
    memset(frag, 'q', sizeof(frag));
    size_t n = frame(buf, WS_OP_BINARY, frag, 100, 1);
    n += frame(buf + n, FIN | WS_OP_CONT, frag, 101, 1);
    struct ws_reader r;
    ws_reader_init(&r, 0);
    struct sink s = {0};
    CHECK_EQ(feed(&r, buf, n, &lim, &s), -1009);
    CHECK_EQ(s.n, 0);
    ws_reader_free(&r);
}

/* ---- UTF-8 (1007) ---- */

TEST(test_ws_frame_rejects_invalid_utf8_text)
{
    uint8_t buf[64];
    size_t n = cframe(buf, FIN | WS_OP_TEXT, "bad \xC0\xAF");
    struct sink s = {0};
    CHECK_EQ(server_feed(buf, n, &s), -1007);
    n = cframe(buf, FIN | WS_OP_TEXT, "\xED\xA0\x80");
    CHECK_EQ(server_feed(buf, n, &s), -1007);
    n = cframe(buf, FIN | WS_OP_TEXT, "cut \xE2\x82");
    CHECK_EQ(server_feed(buf, n, &s), -1007);
    CHECK_EQ(s.n, 0);
}

TEST(test_ws_frame_does_not_validate_binary)
{
    uint8_t buf[64];
    size_t n = cframe(buf, FIN | WS_OP_BINARY, "\xFF\xFE\xC0");
    struct sink s = {0};
    CHECK_EQ(server_feed(buf, n, &s), n);
    CHECK_EQ(s.n, 1);
    sink_free(&s);
    n = cframe(buf, WS_OP_BINARY, "\xF0\x9F");
    n += cframe(buf + n, FIN | WS_OP_CONT, "\xFF");
    CHECK_EQ(server_feed(buf, n, &s), n);
    CHECK_EQ(s.n, 1);
    sink_free(&s);
}

TEST(test_ws_frame_accepts_utf8_split_across_fragments_at_every_byte_position)
{
    /* Autobahn 6.2.x: a valid text cut into two or three fragments anywhere, even in
     * the middle of a code point. */
    static const char text[] = "Hello-\xC2\xB5@\xC3\x9F\xC3\xB6\xE2\x82\xAC"
                               "\xF0\x9F\x98\x80-UTF-8!!";
    size_t tl = sizeof(text) - 1;
    for (size_t cut = 0; cut <= tl; cut++) {
        for (size_t cut2 = cut; cut2 <= tl; cut2++) {
            uint8_t buf[256];
            size_t n = frame(buf, WS_OP_TEXT, text, cut, 1);
            n += frame(buf + n, WS_OP_CONT, text + cut, cut2 - cut, 1);
            n += frame(buf + n, FIN | WS_OP_CONT, text + cut2, tl - cut2, 1);
            struct sink s = {0};
            CHECK_EQ(server_feed(buf, n, &s), n);
            CHECK_EQ(s.n, 1);
            CHECK(s.n == 1 && s.m[0].len == tl && memcmp(s.m[0].data, text, tl) == 0);
            sink_free(&s);
        }
    }
}

TEST(test_ws_frame_rejects_invalid_utf8_split_across_fragments_at_every_byte_position)
{
    /* A surrogate in the middle: wherever the cut, the message is refused. */
    static const char text[] = "ab\xED\xA0\x80"
                               "cd";
    size_t tl = sizeof(text) - 1;
    for (size_t cut = 0; cut <= tl; cut++) {
        uint8_t buf[64];
        size_t n = frame(buf, WS_OP_TEXT, text, cut, 1);
        n += frame(buf + n, FIN | WS_OP_CONT, text + cut, tl - cut, 1);
        struct sink s = {0};
        CHECK_EQ(server_feed(buf, n, &s), -1007);
        CHECK_EQ(s.n, 0);
    }
}

TEST(test_ws_frame_fails_fast_on_invalid_utf8_before_message_completes)
{
    /* Autobahn 6.4.1/6.4.2: the first fragment is already invalid; the rest never comes. */
    uint8_t buf[64];
    size_t a = cframe(buf, WS_OP_TEXT, "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5");
    size_t b = cframe(buf + a, WS_OP_CONT, "\xF4\x90\x80\x80");
    struct ws_reader r;
    ws_reader_init(&r, 0);
    struct sink s = {0};
    CHECK_EQ(feed(&r, buf, a, &big, &s), a);
    CHECK_EQ(feed(&r, buf + a, b, &big, &s), -1007);
    ws_reader_free(&r);

    /* Invalid at the start of a first fragment (not FIN), with a partial next frame. */
    a = cframe(buf, WS_OP_TEXT, "\xFF");
    ws_reader_init(&r, 0);
    CHECK_EQ(feed(&r, buf, a + 1, &big, &s), -1007);
    CHECK_EQ(s.n, 0);
    ws_reader_free(&r);
}

TEST(test_ws_frame_rejects_text_ending_inside_a_character_at_final_fragment)
{
    uint8_t buf[64];
    size_t n = cframe(buf, WS_OP_TEXT, "ok\xF0\x9F");
    n += cframe(buf + n, FIN | WS_OP_CONT, "\x98");
    struct sink s = {0};
    CHECK_EQ(server_feed(buf, n, &s), -1007);
    CHECK_EQ(s.n, 0);
}

/* ---- close frames ---- */

static ssize_t close_with(const uint8_t *body, size_t len, struct sink *s)
{
    uint8_t buf[256];
    size_t n = frame(buf, FIN | WS_OP_CLOSE, body, len, 1);
    return server_feed(buf, n, s);
}

TEST(test_ws_frame_accepts_valid_close_payloads)
{
    struct sink s = {0};
    CHECK_EQ(close_with(NULL, 0, &s), 6);
    CHECK_EQ(close_with((const uint8_t *)"\x03\xE8", 2, &s), 8); /* 1000 */
    CHECK_EQ(close_with((const uint8_t *)"\x03\xE8"
                                         "bye",
                        5, &s),
             11);                                                         /* + reason */
    CHECK_EQ(close_with((const uint8_t *)"\x0B\xB8", 2, &s), 8);          /* 3000 */
    CHECK_EQ(close_with((const uint8_t *)"\x13\x87", 2, &s), 8);          /* 4999 */
    CHECK_EQ(close_with((const uint8_t *)"\x03\xF1\xC3\xA9", 4, &s), 10); /* 1009 + é */
    CHECK_EQ(s.n, 6);
    CHECK_EQ(s.m[2].op, WS_OP_CLOSE);
    CHECK_MEM(s.m[2].data, s.m[2].len,
              "\x03\xE8"
              "bye");
    sink_free(&s);
}

TEST(test_ws_frame_rejects_close_with_one_byte_payload)
{
    struct sink s = {0};
    CHECK_EQ(close_with((const uint8_t *)"\x03", 1, &s), -1002);
    CHECK_EQ(s.n, 0);
}

TEST(test_ws_frame_rejects_close_with_invalid_code)
{
    static const unsigned bad[] = {0,    999,  1004, 1005, 1006, 1012,
                                   1015, 1016, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t body[2] = {(uint8_t)(bad[i] >> 8), (uint8_t)bad[i]};
        struct sink s = {0};
        CHECK_EQ(close_with(body, 2, &s), -1002);
        CHECK_EQ(s.n, 0);
    }
}

TEST(test_ws_frame_rejects_close_with_invalid_utf8_reason)
{
    struct sink s = {0};
    CHECK_EQ(close_with((const uint8_t *)"\x03\xE8\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5"
                                         "\xED\xA0\x80"
                                         "edited",
                        2 + 11 + 3 + 6, &s),
             -1007);
    CHECK_EQ(close_with((const uint8_t *)"\x03\xE8\xC3", 3, &s), -1007);
    CHECK_EQ(s.n, 0);
}

TEST(test_ws_frame_delivers_close_between_fragments)
{
    uint8_t buf[64];
    size_t n = cframe(buf, WS_OP_TEXT, "half");
    n += cframe(buf + n, FIN | WS_OP_CLOSE, "\x03\xE8");
    struct ws_reader r;
    ws_reader_init(&r, 0);
    struct sink s = {0};
    CHECK_EQ(feed(&r, buf, n, &big, &s), n);
    CHECK_EQ(s.n, 1);
    CHECK_EQ(s.m[0].op, WS_OP_CLOSE);
    CHECK(r.msg.p != NULL); /* still pending; freed by ws_reader_free (ASan checks) */
    sink_free(&s);
    ws_reader_free(&r);
    CHECK(r.msg.p == NULL);
}

int main(void)
{
    RUN(test_ws_frame_head_encode_picks_minimal_length_form);
    RUN(test_ws_frame_head_encode_masked_sets_mask_bit_and_key);
    RUN(test_ws_mask_matches_bytewise_xor_at_every_offset_length_and_alignment);
    RUN(test_ws_mask_in_pieces_equals_mask_in_one_go);
    RUN(test_ws_close_code_valid_follows_rfc6455_7_4);
    RUN(test_ws_frame_encoder_round_trips_through_client_reader);
    RUN(test_ws_frame_masked_encoder_round_trips_through_server_reader);
    RUN(test_ws_frame_unmasks_in_place_and_delivers_unfragmented_message_zero_copy);
    RUN(test_ws_frame_leaves_partial_frame_unconsumed);
    RUN(test_ws_frame_chunked_feeding_with_kept_tail_yields_same_messages);
    RUN(test_ws_frame_callback_stop_returns_bytes_through_that_frame);
    RUN(test_ws_frame_callback_stop_on_fragmented_message_resets_reassembly);
    RUN(test_ws_frame_rejects_unmasked_client_frame);
    RUN(test_ws_frame_client_side_rejects_masked_server_frame);
    RUN(test_ws_frame_rejects_rsv_bits);
    RUN(test_ws_frame_rejects_reserved_opcodes);
    RUN(test_ws_frame_rejects_fragmented_control_frame);
    RUN(test_ws_frame_rejects_control_frame_over_125_bytes);
    RUN(test_ws_frame_rejects_64_bit_length_with_msb_set);
    RUN(test_ws_frame_accepts_non_minimal_length_encoding);
    RUN(test_ws_frame_rejects_continuation_without_message);
    RUN(test_ws_frame_rejects_new_message_while_fragmented_one_is_in_progress);
    RUN(test_ws_frame_reassembles_fragmented_text_with_ping_interleaved);
    RUN(test_ws_frame_delivers_ping_between_fragments_fed_separately);
    RUN(test_ws_frame_delivers_empty_fragmented_message);
    RUN(test_ws_frame_reassembles_many_fragments_growing_buffer);
    RUN(test_ws_frame_rejects_oversized_frame_from_header_before_payload);
    RUN(test_ws_frame_rejects_unfragmented_message_over_max_message);
    RUN(test_ws_frame_rejects_fragmented_message_over_max_message_at_fragment_header);
    RUN(test_ws_frame_rejects_fragment_over_max_frame);
    RUN(test_ws_frame_rejects_invalid_utf8_text);
    RUN(test_ws_frame_does_not_validate_binary);
    RUN(test_ws_frame_accepts_utf8_split_across_fragments_at_every_byte_position);
    RUN(test_ws_frame_rejects_invalid_utf8_split_across_fragments_at_every_byte_position);
    RUN(test_ws_frame_fails_fast_on_invalid_utf8_before_message_completes);
    RUN(test_ws_frame_rejects_text_ending_inside_a_character_at_final_fragment);
    RUN(test_ws_frame_accepts_valid_close_payloads);
    RUN(test_ws_frame_rejects_close_with_one_byte_payload);
    RUN(test_ws_frame_rejects_close_with_invalid_code);
    RUN(test_ws_frame_rejects_close_with_invalid_utf8_reason);
    RUN(test_ws_frame_delivers_close_between_fragments);
    return test_summary("ws_frame");
}
