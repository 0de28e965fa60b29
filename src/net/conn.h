/* One client connection: socket readiness, input buffering, the HTTP/1.1 phase,
 * the WebSocket phase, the outbound queue of refcounted frames (allocated only
 * while output is pending) and the close sequence. Owned by its loop thread. */
#ifndef HERALD_NET_CONN_H
#define HERALD_NET_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "ws/frame.h"

struct loop;
struct frame;
struct session;
struct outq;

enum conn_state {
    CONN_HTTP,    /* reading request heads (keep-alive) */
    CONN_WS,      /* WebSocket open */
    CONN_CLOSING, /* close frame sent or HTTP answered with close: flushing, then draining input */
};

struct conn {
    uv_poll_t poll; /* poll.data == this */
    int fd;
    uint8_t state;
    uint8_t dirty;       /* on loop->dirty */
    uint8_t want_write;  /* UV_WRITABLE requested */
    uint8_t close_after; /* shutdown(SHUT_WR) once the queue drains */
    uint8_t closed;      /* uv_close called */
    uint8_t close_sent;  /* WebSocket close frame queued */
    uint8_t peer_closed; /* read EOF */
    uint8_t paused;      /* output over client_queue_max: input not read (back-pressure) */
    uint8_t events;      /* UV_READABLE | UV_WRITABLE being polled */
    uint64_t skip_body;  /* HTTP: bytes of a request body still to discard unread */
    uint32_t timer_at;   /* wheel deadline (loop->now_sec), 0 = none */
    struct conn *timer_next, *timer_prev;
    struct conn *dirty_next;
    struct conn *next, *prev; /* loop->conns */
    struct loop *loop;
    uint8_t *in; /* unconsumed input (partial frame or request), malloc'd, or NULL */
    uint32_t in_len, in_cap;
    struct outq *out;        /* pending output or NULL */
    struct session *session; /* client protocol state, after the WebSocket upgrade */
    struct ws_reader ws;
};

/* Take over an accepted, nonblocking socket. Returns NULL (and closes fd) on failure. */
struct conn *conn_new(struct loop *loop, int fd);

/* Queue a frame (the queue takes a new reference; the caller keeps its own). Returns
 * 0, or -1 when the client's queue is over client_queue_max (the caller disconnects
 * it with 3008). */
int conn_send_frame(struct conn *c, struct frame *f);
/* Hot path: queue a frame, taking over one reference the caller already holds (see
 * frame_ref_n). Returns 0 when queued; -1 over client_queue_max and 1 when the
 * connection is closing: then the reference stays with the caller. */
int conn_send_frame_owned(struct conn *c, struct frame *f);
/* Queue a copy of p[0..len) (bytes already framed): a reply to the peer's own input
 * (HTTP response, 101, ping). Always queued, whatever its size (it goes out whole):
 * it counts against client_queue_max, and a connection over it is not read until the
 * peer has read (back-pressure). 0, or -1 out of memory. */
int conn_send_bytes(struct conn *c, const void *p, size_t len);
/* Queue one WebSocket text frame holding p[0..len), a push the peer did not ask for:
 * -1 over client_queue_max (the caller disconnects with 3008), as conn_send_frame. */
int conn_send_text(struct conn *c, const void *p, size_t len);
/* Queue one WebSocket text frame of replies to the peer's commands: always queued, as
 * conn_send_bytes. 0, or -1 out of memory. */
int conn_reply_text(struct conn *c, const void *p, size_t len);
/* Is the output at or over client_queue_max? Input processing stops there. */
int conn_output_full(const struct conn *c);
/* Read and process what the peer has already sent, now (before judging it on input
 * it may have sent while the loop was busy). The connection may be closed after. */
void conn_read_now(struct conn *c);

/* Start the close sequence: WebSocket close frame with code and reason (reason <= 123
 * bytes), flush, shutdown the write side, drain input until EOF or a timeout.
 * Safe to call more than once; later calls do nothing. */
void conn_close_ws(struct conn *c, unsigned code, const char *reason);
/* Close now, discarding pending output (I/O error, timeout). */
void conn_abort(struct conn *c);
/* Flush pending output (called by the loop once per iteration for dirty connections). */
void conn_flush(struct conn *c);
/* Wheel timer fired (ping, pong timeout, token expiry, close timeout, idle HTTP). */
void conn_on_timer(struct conn *c);

/* Free the loop's pool of recycled outbound queues (at loop teardown). */
void conn_pool_free(struct loop *loop);

/* Queued bytes, for the 3008 check and stats. */
uint64_t conn_queued_bytes(const struct conn *c);

#endif
