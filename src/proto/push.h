/* Encoding of the client protocol's pushes, what the server sends unasked:
 * publications and join/leave as whole WebSocket frames (built once, shared by every
 * subscriber through the hub), and the subscribe/unsubscribe pushes of server-side
 * subscriptions. Not replies (proto/reply.h). */
#ifndef HERALD_PROTO_PUSH_H
#define HERALD_PROTO_PUSH_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct engine_pub;
struct frame;

/* A text frame {"push":{"channel":CH,"pub":{...}}} with tail spare bytes after f->len;
 * one reference for the caller, or NULL. The hub's encode_publication. */
struct frame *proto_push_publication(const uint8_t *ch, size_t len, const struct engine_pub *pub,
                                     size_t tail);
/* A text frame {"push":{"channel":CH,"join"|"leave":{"info":INFO}}}, likewise. */
struct frame *proto_push_join_leave(const uint8_t *ch, size_t len, int join, const uint8_t *info,
                                    size_t info_len, size_t tail);
/* {"push":{"channel":CH,"unsubscribe":{"code":2000,"reason":"server unsubscribe"}}} */
void proto_push_unsubscribe(struct buf *out, const uint8_t *ch, size_t len);
/* The same with code 2500, "insufficient state": the SDK resubscribes. */
void proto_push_insufficient_state(struct buf *out, const uint8_t *ch, size_t len);
/* {"push":{"channel":CH,"subscribe":{ ... proto_push_end closes it: }}} */
void proto_push_subscribe_begin(struct buf *out, const uint8_t *ch, size_t len);
void proto_push_end(struct buf *out);

#endif
