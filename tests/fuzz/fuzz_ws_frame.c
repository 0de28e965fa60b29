/* libFuzzer target for ws_reader_feed, both sides. The stream is read twice: in one
 * go, and in random-sized chunks keeping the unconsumed tail as the server's read loop
 * does; both must deliver the same messages and end the same way, and every delivered
 * message must obey the rules the reader promises (utf8, close payload, limits).
 * Input: byte 0 picks side, limits and callback stops; byte 1 seeds the chunk sizes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws/frame.h"
#include "ws/utf8.h"

#define MAX_EVENTS 256

struct run {
    int count;
    int stop_every;
    const struct ws_limits *lim;
    struct {
        int op;
        size_t len;
        uint64_t hash;
    } ev[MAX_EVENTS];
};

static const struct ws_limits limits[4] = {
    {125, 125},
    {1000, 4000},
    {65536, 1 << 20},
    {UINT64_MAX, UINT64_MAX},
};

static uint64_t hash_bytes(const uint8_t *p, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int on_message(void *ud, int op, uint8_t *p, size_t len)
{
    struct run *r = ud;
    if (p == NULL)
        abort();
    switch (op) {
    case WS_OP_TEXT:
        if (!ws_utf8_valid(p, len))
            abort();
        /* fall through */
    case WS_OP_BINARY:
        if (len > r->lim->max_message)
            abort();
        break;
    case WS_OP_CLOSE:
        if (len == 1 || (len >= 2 && !ws_close_code_valid((unsigned)(p[0] << 8 | p[1]))))
            abort();
        if (len >= 2 && !ws_utf8_valid(p + 2, len - 2))
            abort();
        /* fall through */
    case WS_OP_PING:
    case WS_OP_PONG:
        if (len > 125)
            abort();
        break;
    default:
        abort();
    }
    if (len)
        memset(p, 0xA5, len); /* the callee may modify the payload */
    if (r->count < MAX_EVENTS) {
        r->ev[r->count].op = op;
        r->ev[r->count].len = len;
        r->ev[r->count].hash = 0;
    }
    r->count++;
    return r->stop_every && r->count % r->stop_every == 0;
}

/* The hash is taken before the callee scribbles on the payload: wrap the callback. */
static int on_message_hashed(void *ud, int op, uint8_t *p, size_t len)
{
    struct run *r = ud;
    uint64_t h = hash_bytes(p, len);
    int n = r->count;
    int stop = on_message(ud, op, p, len);
    if (n < MAX_EVENTS)
        r->ev[n].hash = h;
    return stop;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int client = data[0] & 1;
    const struct ws_limits *lim = &limits[(data[0] >> 1) & 3];
    int stop_every = (data[0] >> 3) & 3; /* 0: never stop */
    uint32_t seed = data[1] * 2654435761u + 1;
    const uint8_t *stream = data + 2;
    size_t len = size - 2;

    static struct run whole, chunked;
    memset(&whole, 0, sizeof(whole));
    memset(&chunked, 0, sizeof(chunked));
    whole.stop_every = chunked.stop_every = stop_every;
    whole.lim = chunked.lim = lim;

    /* In one go (feeding again after each callback stop). */
    uint8_t *buf = malloc(len ? len : 1);
    memcpy(buf, stream, len);
    struct ws_reader r;
    ws_reader_init(&r, client);
    size_t off = 0;
    ssize_t err_whole = 0;
    for (;;) {
        ssize_t rc = ws_reader_feed(&r, buf + off, len - off, lim, on_message_hashed, &whole);
        if (rc < 0) {
            err_whole = rc;
            break;
        }
        if ((size_t)rc > len - off)
            abort();
        if (rc == 0)
            break;
        off += (size_t)rc;
    }
    ws_reader_free(&r);
    free(buf);

    /* In chunks, the unconsumed tail kept in a pending buffer. */
    uint8_t *pending = malloc(len ? len : 1);
    size_t have = 0, pos = 0;
    ssize_t err_chunked = 0;
    ws_reader_init(&r, client);
    while (pos < len && err_chunked == 0) {
        seed = seed * 1103515245u + 12345u;
        size_t chunk = 1 + (seed >> 16) % ((seed & 1) ? 7 : 300);
        if (chunk > len - pos)
            chunk = len - pos;
        memcpy(pending + have, stream + pos, chunk);
        have += chunk, pos += chunk;
        for (;;) {
            ssize_t rc = ws_reader_feed(&r, pending, have, lim, on_message_hashed, &chunked);
            if (rc < 0) {
                err_chunked = rc;
                break;
            }
            if ((size_t)rc > have)
                abort();
            memmove(pending, pending + rc, have - (size_t)rc);
            have -= (size_t)rc;
            if (rc == 0)
                break;
        }
    }
    ws_reader_free(&r);
    free(pending);

    if (err_whole != err_chunked || whole.count != chunked.count)
        abort();
    if (err_whole == 0 && len - off != have)
        abort();
    if (err_whole != 0 && err_whole != -1002 && err_whole != -1007 && err_whole != -1009)
        abort();
    for (int i = 0; i < whole.count && i < MAX_EVENTS; i++) {
        if (whole.ev[i].op != chunked.ev[i].op || whole.ev[i].len != chunked.ev[i].len ||
            whole.ev[i].hash != chunked.ev[i].hash)
            abort();
    }
    return 0;
}
