/* Growable byte buffer: the one every module uses for replies, requests, JSON, a
 * connection's pending input and a WebSocket message being reassembled. 16 bytes, so
 * that it can sit in every connection; at most 2 GiB. Not shared between threads and
 * not refcounted (see core/frame.h for that). */
#ifndef HERALD_CORE_BUF_H
#define HERALD_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *p;
    uint32_t len;
    uint32_t cap : 31;
    uint32_t oom : 1; /* set once an append failed; later appends are no-ops */
};

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }

/* Make room for n more bytes; returns 0 or -1 (and sets oom). */
int buf_reserve(struct buf *b, size_t n);
/* Likewise, but never beyond max bytes in all (room grows by doubling, capped at max):
 * -1 without setting oom when len + n > max. */
int buf_reserve_max(struct buf *b, size_t n, size_t max);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_append_str(struct buf *b, const char *s);
void buf_append_char(struct buf *b, char c);
void buf_append_u64(struct buf *b, uint64_t v);
void buf_append_i64(struct buf *b, int64_t v);
/* Append p[0..n) as a JSON string literal, quotes included, escaping as RFC 8259 requires. */
void buf_append_json_str(struct buf *b, const uint8_t *p, size_t n);
/* How many leading bytes of p[0..n) a JSON string holds as they are (no quote, backslash
 * or control character): n when p needs no escaping at all. */
size_t buf_json_plain(const uint8_t *p, size_t n);
void buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_reset(struct buf *b); /* len = 0, keeps memory */
/* Give the memory back when more than keep bytes are held (a scratch buffer that one
 * large reply grew should not stay large for the life of the loop). len = 0. */
void buf_shrink(struct buf *b, size_t keep);
void buf_free(struct buf *b);

#endif
