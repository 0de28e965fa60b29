/* Event-loop threads: one libuv loop per thread, each with its own SO_REUSEPORT
 * listener, owning the connections it accepted; typed messages between threads
 * (a mutex-guarded inbox and a uv_async wake-up per loop); a per-iteration flush of
 * every connection with pending output; a coarse one-second timer wheel that any
 * module can put its own entries on. A foundation: it knows no protocol, no channel,
 * no HTTP; what runs on a connection is a handler table installed by whoever accepts
 * it (net/conn.h). The struct is private to net. */
#ifndef HERALD_NET_LOOP_H
#define HERALD_NET_LOOP_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct conn;
struct loop;
struct net;
struct tls_ctx;

#define LOOP_MAX 64
#define LOOP_READ_BUF (64 * 1024)
/* Scratch buffers grown past this by one large reply are given back afterwards. */
#define LOOP_REPLY_KEEP (256 * 1024)

/* A message to a loop: handle runs on that loop's thread. Consecutive messages of one
 * batch with the same handle are passed together (msgs[0..n)), so a handler can treat
 * a run at once (the hub concatenates a channel's publications). The fields are the
 * sender's and the handler's to agree on; ptr and what it owns pass to the handler. */
struct loop_msg;
typedef void (*loop_msg_fn)(struct loop *loop, struct loop_msg *msgs, size_t n);
struct loop_msg {
    loop_msg_fn handle;
    void *ptr;
    uint64_t u64;
    uint32_t u32;
};

/* Append a message to loop's inbox and wake it. Any thread. Returns 0, or -1 out of
 * memory (the message and what it owns stay with the caller). */
int loop_post(struct loop *loop, const struct loop_msg *msg);

/* A timer-wheel entry, embedded in whatever it times (a connection, a rate limit, a
 * reconnect backoff). Second resolution. Zero-initialised means "not set". */
struct loop_timer {
    struct loop_timer *next, *prev;
    uint32_t at; /* loop second it fires at, 0 = not set */
    void (*fire)(struct loop_timer *t);
};

/* Loop thread: fire t->fire seconds from now (from the clock, not from the wheel's
 * position, which lags after a stall). Replaces an earlier setting. */
void loop_timer_set(struct loop *loop, struct loop_timer *t, uint32_t seconds);
void loop_timer_clear(struct loop *loop, struct loop_timer *t);
/* Seconds since the server started, from the clock (1 at start). */
uint32_t loop_now_sec(const struct loop *loop);
/* The loop's clock in milliseconds, as of the start of this loop turn (libuv's uv_now:
 * no system call), for rate limits. */
uint64_t loop_now_ms(const struct loop *loop);
/* CLOCK_MONOTONIC milliseconds. */
uint64_t loop_clock_ms(void);

unsigned loop_id(const struct loop *loop);
/* The loop whose thread calls, or NULL off the loops' threads. */
struct loop *loop_self(void);
/* Loop thread: one frame was just queued to width connections (a channel's fan-out).
 * The flush holds back for more (write coalescing) only after a wide fan-out: when every
 * connection got its own frame (per-user channels) waiting shares no write. */
void loop_fanout_queued(struct loop *loop, unsigned width);
/* The loop's uv_loop_t, for a module that runs libuv handles of its own on it (set up
 * before the loops run, or from the loop's thread). */
void *loop_uv(struct loop *loop);
/* Loop thread: fn for every connection of the loop (fn may close or abort the one it is
 * given, no other). */
void loop_each_conn(struct loop *loop, void (*fn)(struct conn *c, void *ud), void *ud);
/* This loop's scratch buffer for building replies (loop thread only; give it back
 * with buf_shrink(b, LOOP_REPLY_KEEP) after a large one). */
struct buf *loop_reply_buf(struct loop *loop);

/* The loops of a server. */
struct net_config {
    const char *host; /* IPv4 address to listen on */
    uint16_t port;
    unsigned nloops;           /* 1 to LOOP_MAX */
    uint64_t client_queue_max; /* output a connection may queue: past it, back-pressure */
    /* Input a connection may keep unconsumed: at least the largest request or message its
     * handlers wait to complete. Past it the connection is not read until the handler
     * takes some (conn_continue). 0: 1 MiB. */
    uint64_t input_max;
    /* Output all connections of every loop may queue together; past it the heaviest are
     * disconnected (conn_handler.over_budget) until the total is under it again. 0: none. */
    uint64_t client_queue_total_max;
    /* A connection was accepted: install its handler (net/conn.h). */
    void (*accept)(struct conn *c, void *ud);
    /* About once a second on every loop thread (housekeeping). May be NULL. */
    void (*tick)(struct loop *loop, void *ud);
    /* On each loop thread as it starts (per-thread state). May be NULL. */
    void (*loop_start)(struct loop *loop, void *ud);
    /* On each loop thread just before it ends (free per-thread state). May be NULL. */
    void (*loop_exit)(struct loop *loop, void *ud);
    void *ud;
    /* TLS on the listener (net/tls.h; borrowed: each loop takes a reference), or NULL. */
    struct tls_ctx *tls;
    unsigned tls_handshake_timeout; /* seconds a TLS handshake may take */
    /* A listener of its own on loop 0 (metrics_listen; plaintext), port 0: none; its
     * connections start with metrics_accept (same ud). */
    const char *metrics_host;
    uint16_t metrics_port;
    void (*metrics_accept)(struct conn *c, void *ud);
};

/* Create the listeners and loops (not running yet). NULL with a message logged. */
struct net *net_create(const struct net_config *cfg);
unsigned net_nloops(const struct net *net);
struct loop *net_loop(const struct net *net, unsigned i);
/* Start a thread per loop. 0 or -1. */
int net_run(struct net *net);
/* Any thread: stop accepting, ask every connection to close (its handler's shutdown),
 * and end each loop once its connections are gone or after a few seconds. */
void net_stop(struct net *net);
/* Wait for every loop thread to end. */
void net_join(struct net *net);
/* Free everything (after net_join): messages still in the inboxes are run first, on the
 * calling thread, so that what they own is released. */
void net_free(struct net *net);
/* Both. */
void net_join_and_free(struct net *net);

#endif
