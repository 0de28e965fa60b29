/* The HTTP/1.1 side of a connection: parses request heads and bodies, routes
 * (/health, /, /connection/websocket, /api/<method>), answers errors, upgrades to
 * WebSocket. Not the API handlers (http/api.h). */
#ifndef HERALD_HTTP_SERVER_H
#define HERALD_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct conn;
struct buf;

/* Head size and header count limits (431 beyond them). */
#define HTTP_MAX_HEAD (16 * 1024)

/* Handle bytes p[0..len) (modifiable) of a connection in CONN_HTTP. Returns the
 * bytes consumed (complete requests; the tail of an incomplete one is kept by the
 * caller). After an upgrade the connection is in CONN_WS and the caller feeds the
 * rest to the WebSocket reader. */
size_t http_serve(struct conn *c, uint8_t *p, size_t len);

/* Queue a complete response with a body on c (Content-Length, keep-alive or close). */
void http_respond(struct conn *c, int status, const char *content_type, const uint8_t *body,
                  size_t body_len, int keep_alive);

#endif
