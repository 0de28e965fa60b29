/* Reply encoding (see reply.h). */
#include "proto/reply.h"

#include <string.h>

#include "core/buf.h"
#include "engine/engine.h"

const char *proto_error_message(int code)
{
    switch (code) {
    case PROTO_ERR_UNAUTHORIZED:
        return "unauthorized";
    case PROTO_ERR_UNKNOWN_CHANNEL:
        return "unknown channel";
    case PROTO_ERR_PERMISSION_DENIED:
        return "permission denied";
    case PROTO_ERR_METHOD_NOT_FOUND:
        return "method not found";
    case PROTO_ERR_ALREADY_SUBSCRIBED:
        return "already subscribed";
    case PROTO_ERR_LIMIT_EXCEEDED:
        return "limit exceeded";
    case PROTO_ERR_BAD_REQUEST:
        return "bad request";
    case PROTO_ERR_NOT_AVAILABLE:
        return "not available";
    case PROTO_ERR_TOKEN_EXPIRED:
        return "token expired";
    case PROTO_ERR_EXPIRED:
        return "expired";
    case PROTO_ERR_TOO_MANY_REQUESTS:
        return "too many requests";
    case PROTO_ERR_UNRECOVERABLE_POSITION:
        return "unrecoverable position";
    default:
        return "internal server error";
    }
}

void proto_reply_begin(struct buf *out, uint32_t id, const char *method)
{
    if (out->len)
        buf_append_char(out, '\n');
    buf_append_str(out, "{\"id\":");
    buf_append_u64(out, id);
    buf_append_str(out, ",\"");
    buf_append_str(out, method);
    buf_append_str(out, "\":{");
}

void proto_reply_end(struct buf *out)
{
    buf_append_str(out, "}}");
}

void proto_reply_error(struct buf *out, uint32_t id, int code, int temporary)
{
    if (out->len)
        buf_append_char(out, '\n');
    buf_appendf(out, "{\"id\":%u,\"error\":{\"code\":%d,\"message\":\"%s\"%s}}", id, code,
                proto_error_message(code), temporary ? ",\"temporary\":true" : "");
}

/* Append raw JSON with its raw newlines as spaces (same length, same value). */
static void append_raw_json(struct buf *out, const uint8_t *p, size_t len)
{
    size_t start = out->len;
    buf_append(out, p, len);
    if (out->oom)
        return;
    uint8_t *d = out->p + start;
    for (uint8_t *nl = memchr(d, '\n', len); nl; nl = memchr(nl, '\n', (size_t)(d + len - nl)))
        *nl = ' ';
}

void proto_render_publication(struct buf *out, const struct engine_pub *pub)
{
    buf_append_str(out, "{\"data\":");
    append_raw_json(out, pub->data, pub->data_len);
    if (pub->info) {
        buf_append_str(out, ",\"info\":");
        append_raw_json(out, pub->info, pub->info_len);
    }
    if (pub->offset) {
        buf_append_str(out, ",\"offset\":");
        buf_append_u64(out, pub->offset);
    }
    buf_append_char(out, '}');
}

void proto_render_publications(struct buf *out, const struct engine_pub *pubs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_append_char(out, ',');
        proto_render_publication(out, &pubs[i]);
    }
}

void proto_render_presence(struct buf *out, const struct engine_presence *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_append_char(out, ',');
        buf_append_char(out, '"');
        buf_append_str(out, m[i].client);
        buf_append_str(out, "\":");
        append_raw_json(out, m[i].info, m[i].info_len);
    }
}

void proto_render_position(struct buf *out, const struct engine_pos *pos)
{
    buf_append_str(out, "\"epoch\":\"");
    buf_append_str(out, pos->epoch);
    buf_append_str(out, "\",\"offset\":");
    buf_append_u64(out, pos->offset);
}
