/* The HTTP/1.1 side of a connection: parses request heads and bodies, routes
 * (/health, /ready, /metrics, /, /connection/websocket, /api/<method>), answers errors, upgrades to
 * WebSocket and hands the connection to whoever runs the WebSocket side. Not the API
 * handlers (http/api.h). */
#ifndef HERALD_HTTP_SERVER_H
#define HERALD_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct config;
struct conn;
struct http_request;
struct limit_client;

struct http_server_config {
    const struct config *config; /* borrowed for the life of the process */
    /* The upgrade was accepted and its 101 queued: start the WebSocket side on c
     * (install its handler), which takes over what lc holds of the limits (copied;
     * released when the connection ends). query_token (len 0: none) is the connection
     * token of the URL query, allowed by allow_query_token; borrowed for the call. 0, or -1
     * (nothing taken: the caller releases lc and aborts c). */
    int (*websocket)(struct conn *c, const struct limit_client *lc, const uint8_t *query_token,
                     size_t len, void *ud);
    /* /ready: 1 when every store herald needs answers, else 0 with the JSON body that
     * names each one that does not appended to out. NULL: always ready. */
    int (*ready)(struct buf *out);
    void *ud;
};

/* Once, before the loops run (the config is copied). */
void http_init(const struct http_server_config *cfg);

/* The loops' accept callback: c starts with the HTTP handler. */
void http_accept(struct conn *c, void *ud);
/* The accept callback of metrics_listen: /metrics only. */
void http_metrics_accept(struct conn *c, void *ud);

/* The WebSocket opening handshake checked on a parsed request head (ws/handshake.h):
 * 0 and accept filled, or the HTTP status to refuse with. */
int http_ws_check(const struct http_request *r, char accept[29]);

#endif
