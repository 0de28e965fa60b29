/* Encoding of the client protocol's replies, and of what they share with the server
 * API: publications, presence members and stream positions rendered as JSON. Appends
 * to a struct buf; never fails (the buffer records out of memory). Not decoding
 * (proto/command.h), not pushes (proto/push.h). */
#ifndef HERALD_PROTO_REPLY_H
#define HERALD_PROTO_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "proto/codes.h"

struct buf;
struct engine_pos;
struct engine_presence;
struct engine_pub;

/* {"id":ID,"METHOD":{ ... proto_reply_end: }} (a '\n' first when out is not empty). */
void proto_reply_begin(struct buf *out, uint32_t id, const char *method);
void proto_reply_end(struct buf *out);
/* {"id":ID,"error":{"code":CODE,"message":"..."[,"temporary":true]}} */
void proto_reply_error(struct buf *out, uint32_t id, int code, int temporary);

/* One publication as a JSON object {"data":D[,"info":I][,"offset":N]}. Raw newlines,
 * which valid JSON can hold only as insignificant whitespace, become spaces: frames
 * hold newline-separated replies. */
void proto_render_publication(struct buf *out, const struct engine_pub *pub);
/* pubs[0..n) as JSON array elements (comma-separated, no brackets). */
void proto_render_publications(struct buf *out, const struct engine_pub *pubs, size_t n);
/* members[0..n) as object members "client":ClientInfo (comma-separated, no braces). */
void proto_render_presence(struct buf *out, const struct engine_presence *members, size_t n);
/* "epoch":"E","offset":N */
void proto_render_position(struct buf *out, const struct engine_pos *pos);

#endif
