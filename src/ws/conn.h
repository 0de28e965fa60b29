/* The WebSocket phase of a connection (RFC 6455 after the opening handshake): frames
 * in, reassembled and validated messages out to the owner's handler, control frames
 * answered, text frames and the close sequence on the way out. The owner (the client
 * protocol session) embeds struct ws_conn and is called back with it. Not the
 * handshake (ws/handshake.h), not the client protocol. */
#ifndef HERALD_WS_CONN_H
#define HERALD_WS_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "ws/frame.h"

struct conn;
struct frame;
struct ws_conn;

/* Every callback runs on the connection's loop thread. */
struct ws_conn_handler {
    /* One text message p[0..len), UTF-8 validated (modifiable, borrowed for the call). */
    void (*text)(struct ws_conn *w, uint8_t *p, size_t len);
    /* The connection's timer (conn_timer_set on w->conn) fired. */
    void (*timer)(struct ws_conn *w);
    /* Server shutdown: close (ws_conn_close with the protocol's code). */
    void (*shutdown)(struct ws_conn *w);
    /* The connection is being aborted: free the owner's state (w included). */
    void (*gone)(struct ws_conn *w);
    /* The node's output budget is exceeded and this connection holds the most (its
     * unsent output is already dropped): close it with the protocol's code. NULL: it is
     * closed with 1008 (policy violation). */
    void (*slow)(struct ws_conn *w);
};

struct ws_conn {
    struct ws_reader reader;
    struct conn *conn;
    const struct ws_conn_handler *h;
    uint32_t max_message; /* payload bytes of one message or frame */
    uint16_t close_code;  /* of the close frame sent (ours, or the peer's echoed); 0: none */
};

/* Switch c (its 101 queued) to the WebSocket phase with owner handler h; w is the
 * owner's (borrowed until h->gone). */
void ws_conn_start(struct ws_conn *w, struct conn *c, const struct ws_conn_handler *h,
                   uint32_t max_message);

/* The WebSocket phase running on c, or NULL (c is still HTTP, or something else). */
struct ws_conn *ws_conn_of(struct conn *c);

/* A text frame holding p[0..len) (one reference for the caller), or NULL. */
struct frame *ws_text_frame(const void *p, size_t len);

/* A push the peer did not ask for: -1 when its queue is over client_queue_max (the
 * caller disconnects it as slow) or out of memory, 1 closing, 0 queued. */
int ws_conn_send_text(struct ws_conn *w, const void *p, size_t len);
/* Replies to the peer's own messages: always queued (back-pressure bounds them). 0,
 * or non-zero when the connection is closing or out of memory. */
int ws_conn_reply_text(struct ws_conn *w, const void *p, size_t len);

/* Close: a close frame with code and reason (<= 123 bytes, cut there), then the
 * connection's close sequence (flush, shut down writing, drain input). Safe to call
 * more than once. */
void ws_conn_close(struct ws_conn *w, unsigned code, const char *reason);

#endif
