/* One client connection: socket readiness and I/O (through a replaceable seam, so TLS
 * can slot in), input buffering, the outbound queue of refcounted frames (allocated
 * only while output is pending), back-pressure, its timer and the close sequence.
 * What the bytes mean is the business of the handler table installed on it (HTTP
 * first, then the WebSocket phase). Owned by its loop thread; the struct is private
 * to net. */
#ifndef HERALD_NET_CONN_H
#define HERALD_NET_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct conn;
struct frame;
struct loop;

/* What runs on a connection. Every callback runs on the connection's loop thread. */
struct conn_handler {
    /* Input p[0..len) (modifiable, borrowed for the call): returns the bytes consumed;
     * the rest is kept and presented again, followed by what arrives next. Not called
     * while the output is over client_queue_max (back-pressure) nor once closing. */
    size_t (*data)(struct conn *c, uint8_t *p, size_t len);
    /* The connection's timer (conn_timer_set) fired. */
    void (*timer)(struct conn *c);
    /* The server is shutting down: close gracefully (or conn_abort). */
    void (*shutdown)(struct conn *c);
    /* The connection is being aborted: free the handler's state. c is still valid
     * during the call, but nothing may be sent on it. May be NULL. */
    void (*gone)(struct conn *c);
    /* The node's queued output is over client_queue_total_max and this connection is
     * among those holding the most: what it had queued and not begun to write is
     * already dropped (and off the budget). Close it with the protocol's code (the
     * close goes out after the frame being written, if any). Not called during the
     * handler's own callbacks. May be NULL: the connection is aborted. */
    void (*over_budget)(struct conn *c);
};

/* Socket I/O: plain, or the TLS session's (net/tls.c) on a connection that has one. */
struct conn_io {
    ssize_t (*read)(struct conn *c, void *buf, size_t len);
    ssize_t (*writev)(struct conn *c, const struct iovec *iov, int n);
    int (*shutdown)(struct conn *c); /* shut the write side */
};

/* Install h with its state ud (borrowed: the handler frees it in gone). The loop's
 * accept callback installs the first handler; a handler may install the next one
 * (the HTTP handler installs the WebSocket phase on upgrade). */
void conn_set_handler(struct conn *c, const struct conn_handler *h, void *ud);
void *conn_ud(const struct conn *c);
const struct conn_handler *conn_handler_of(const struct conn *c);
/* Count this connection's bytes read and written in the metrics (the WebSocket phase). */
void conn_set_metered(struct conn *c);
int conn_fd(const struct conn *c);
struct loop *conn_loop(const struct conn *c);

/* Aborted, or closing (conn_close_after_flush): no more output is taken. */
int conn_closing(const struct conn *c);

/* Run the handler's timer seconds from now (one timer per connection). */
void conn_timer_set(struct conn *c, uint32_t seconds);

/* Queue a frame for a delivery the peer did not ask for (a publication, a push).
 * conn_send_frame takes a new reference (the caller keeps its own); the owned
 * variant takes over one the caller already holds (see frame_ref_n). Returns 0 when
 * queued; -1 when the queue is over client_queue_max (the caller disconnects the
 * peer as slow) or out of memory; 1 when the connection is closing. On -1 and 1 the
 * owned variant leaves the reference with the caller. */
int conn_send_frame(struct conn *c, struct frame *f);
int conn_send_frame_owned(struct conn *c, struct frame *f);
/* Queue a reply to the peer's own input, taking over the caller's reference: always
 * queued, whatever its size, so that it goes out whole. It counts against
 * client_queue_max, and a connection over it is not read until the peer has read
 * half of it. 0, or 1 closing (the reference is dropped then). */
int conn_reply_frame(struct conn *c, struct frame *f);
/* conn_reply_frame of a copy of p[0..len). 0, 1 closing, -1 out of memory. */
int conn_send_bytes(struct conn *c, const void *p, size_t len);

/* Is the output at or over client_queue_max? Input processing stops there. */
int conn_output_full(const struct conn *c);
uint64_t conn_queued_bytes(const struct conn *c);
/* Read and process what the peer has already sent, now (before judging it on input
 * it may have sent while the loop was busy). The connection may be aborted after. */
void conn_read_now(struct conn *c);

/* Process the input kept in c->in now: for a handler that stopped consuming (an
 * answer it waited for has come). */
void conn_continue(struct conn *c);

/* Finish: take no more output, flush what is queued, shut down the write side, then
 * drain and discard input until the peer closes (closing at once could turn into a
 * reset that destroys the last bytes before the peer reads them) or until seconds
 * have passed. Safe to call more than once. */
void conn_close_after_flush(struct conn *c, uint32_t seconds);
/* Close now, discarding pending output (I/O error, timeout). Calls the handler's
 * gone. Safe to call more than once; the struct lives until the loop's next turn. */
void conn_abort(struct conn *c);

#endif
