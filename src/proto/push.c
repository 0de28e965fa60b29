/* Push encoding (see push.h). Publications are framed here, once per publication,
 * straight into the frame that every subscriber shares: one allocation, one copy of
 * the data. */
#include "proto/push.h"

#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "core/frame.h"
#include "engine/engine.h"
#include "proto/codes.h"
#include "proto/reply.h"
#include "ws/frame.h"

/* A frame of b's bytes with tail spare bytes, or NULL. */
static struct frame *text_frame(const struct buf *b, size_t tail)
{
    if (b->oom)
        return NULL;
    struct frame *f = frame_new(WS_FRAME_HEAD_MAX + b->len + tail);
    if (f == NULL)
        return NULL;
    size_t h = ws_frame_head_encode(f->data, WS_OP_TEXT, b->len);
    memcpy(f->data + h, b->p, b->len);
    f->len = (uint32_t)(h + b->len);
    return f;
}

struct frame *proto_push_publication(const uint8_t *ch, size_t len, const struct engine_pub *pub,
                                     size_t tail)
{
    /* Sized first, then written in place: the payload length goes in the frame head. A
     * name with nothing to escape (nearly all) is quoted as it is; only the others are
     * escaped into a buffer first, which costs an allocation each. */
    struct buf esc = BUF_INIT;
    size_t plain = buf_json_plain(ch, len);
    if (plain < len) {
        buf_append_json_str(&esc, ch, len);
        if (esc.oom)
            return NULL;
    }
    size_t esc_len = plain < len ? esc.len : len + 2;
    char off[32] = "";
    int off_len = pub->offset ? snprintf(off, sizeof(off), ",\"offset\":%llu",
                                         (unsigned long long)pub->offset)
                              : 0;
    static const char p1[] = "{\"push\":{\"channel\":";
    static const char p2[] = ",\"pub\":{\"data\":";
    static const char p3[] = ",\"info\":";
    size_t payload = sizeof(p1) - 1 + esc_len + sizeof(p2) - 1 + pub->data_len +
                     (pub->info ? sizeof(p3) - 1 + pub->info_len : 0) + (size_t)off_len + 3;
    struct frame *f = frame_new(WS_FRAME_HEAD_MAX + payload + tail);
    if (f == NULL) {
        buf_free(&esc);
        return NULL;
    }
    uint8_t *w = f->data;
    w += ws_frame_head_encode(w, WS_OP_TEXT, payload);
#define PUT(src, n) (memcpy(w, (src), (n)), w += (n))
    PUT(p1, sizeof(p1) - 1);
    if (plain < len) {
        PUT(esc.p, esc.len);
    } else {
        *w++ = '"';
        PUT(ch, len);
        *w++ = '"';
    }
    PUT(p2, sizeof(p2) - 1);
    /* Raw newlines can only be insignificant whitespace in valid JSON (inside strings
     * they must be escaped); frames hold newline-delimited messages, so they become
     * spaces: same length, same value. */
    uint8_t *d = w;
    PUT(pub->data, pub->data_len);
    for (uint8_t *nl = memchr(d, '\n', pub->data_len); nl; nl = memchr(nl, '\n', (size_t)(w - nl)))
        *nl = ' ';
    if (pub->info) {
        PUT(p3, sizeof(p3) - 1);
        d = w;
        PUT(pub->info, pub->info_len);
        for (uint8_t *nl = memchr(d, '\n', pub->info_len); nl;
             nl = memchr(nl, '\n', (size_t)(w - nl)))
            *nl = ' ';
    }
    PUT(off, (size_t)off_len);
    PUT("}}}", 3);
#undef PUT
    f->len = (uint32_t)(w - f->data);
    buf_free(&esc);
    return f;
}

struct frame *proto_push_join_leave(const uint8_t *ch, size_t len, int join, const uint8_t *info,
                                    size_t info_len, size_t tail)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "{\"push\":{\"channel\":");
    buf_append_json_str(&b, ch, len);
    buf_append_str(&b, join ? ",\"join\":{\"info\":" : ",\"leave\":{\"info\":");
    buf_append(&b, info, info_len);
    buf_append_str(&b, "}}}");
    struct frame *f = text_frame(&b, tail);
    buf_free(&b);
    return f;
}

void proto_push_unsubscribe(struct buf *out, const uint8_t *ch, size_t len)
{
    buf_append_str(out, "{\"push\":{\"channel\":");
    buf_append_json_str(out, ch, len);
    buf_appendf(out, ",\"unsubscribe\":{\"code\":%d,\"reason\":\"server unsubscribe\"}}}",
                PROTO_UNSUBSCRIBE_SERVER);
}

void proto_push_insufficient_state(struct buf *out, const uint8_t *ch, size_t len)
{
    buf_append_str(out, "{\"push\":{\"channel\":");
    buf_append_json_str(out, ch, len);
    buf_appendf(out, ",\"unsubscribe\":{\"code\":%d,\"reason\":\"insufficient state\"}}}",
                PROTO_UNSUBSCRIBE_INSUFFICIENT_STATE);
}

void proto_push_subscribe_begin(struct buf *out, const uint8_t *ch, size_t len)
{
    buf_append_str(out, "{\"push\":{\"channel\":");
    buf_append_json_str(out, ch, len);
    buf_append_str(out, ",\"subscribe\":{");
}

void proto_push_end(struct buf *out)
{
    buf_append_str(out, "}}}");
}
