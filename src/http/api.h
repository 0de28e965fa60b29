/* Server API handlers: POST /api/<method> with a JSON body, as Centrifugo's HTTP
 * API (publish, broadcast, info, channels, ...). Not the HTTP transport (server.h). */
#ifndef HERALD_HTTP_API_H
#define HERALD_HTTP_API_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct loop;

/* Is method[0..len) one of the server API's methods? */
int api_method_known(const uint8_t *method, size_t len);

/* Run method on body (modifiable, borrowed) and append the JSON reply to out.
 * Returns the HTTP status (200, or 404 for an unknown method). */
int api_handle(struct loop *loop, const uint8_t *method, size_t method_len, uint8_t *body,
               size_t body_len, struct buf *out);

#endif
