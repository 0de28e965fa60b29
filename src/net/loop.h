/* Event-loop threads: one libuv loop per thread, each with its own SO_REUSEPORT
 * listener, owning the connections it accepted; a mutex-guarded inbox with a
 * uv_async wake-up for messages from other threads; a per-iteration flush of every
 * connection with pending output; a coarse one-second timer wheel. Not the
 * connection protocol logic (net/conn.h). */
#ifndef HERALD_NET_LOOP_H
#define HERALD_NET_LOOP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"

struct conn;
struct frame;
struct hub_local;
struct server;

#define LOOP_MAX 64
#define LOOP_READ_BUF (64 * 1024)
/* Scratch buffers grown past this by one large reply are given back afterwards. */
#define LOOP_REPLY_KEEP (256 * 1024)
#define WHEEL_SLOTS 256 /* seconds; timers further out wait in the slot and are re-checked */

/* Messages between threads. Publications dominate; the rest are rare controls. */
enum loop_msg_type {
    LOOP_MSG_PUBLICATION, /* frame: a framed push for channel (name stored after f->len) */
    LOOP_MSG_DISCONNECT,  /* disconnect user's connections: code, reason */
    LOOP_MSG_SUBSCRIBE,   /* server-side subscribe user to channel */
    LOOP_MSG_UNSUBSCRIBE, /* server-side unsubscribe user from channel */
    LOOP_MSG_SHUTDOWN,
};

struct loop_msg {
    enum loop_msg_type type;
    uint32_t arg;        /* publication: name length; disconnect: code */
    uint64_t offset;     /* publication offset (0 without history) */
    struct frame *frame; /* publication: refcounted (the message holds one reference);
                            controls: malloc'd payload (user \0 channel \0 reason) */
};

/* Per-loop counters: written by the loop thread only, read by any (relaxed). */
struct loop_stats {
    atomic_uint_fast64_t connections;   /* current connections (any state) */
    atomic_uint_fast64_t clients;       /* current connected clients (after connect) */
    atomic_uint_fast64_t subscriptions; /* current subscriptions */
    atomic_uint_fast64_t messages_out;  /* frames queued to clients */
    atomic_uint_fast64_t publications;  /* publications received for local delivery */
};

struct loop {
    uv_loop_t uv;
    unsigned id;
    struct server *server;
    pthread_t thread;
    int listen_fd;
    uv_poll_t listen_poll;
    uv_async_t wake;
    uv_prepare_t flush;
    uv_timer_t tick;
    uint32_t now_sec; /* the timer wheel's position: the last second it has run */

    /* inbox: other threads append under lock; the loop swaps it out */
    pthread_mutex_t inbox_lock;
    struct loop_msg *inbox;
    size_t inbox_len, inbox_cap;
    struct loop_msg *work; /* the swapped-out batch being processed */
    size_t work_cap;

    uint8_t *read_buf;  /* shared by every connection of this loop */
    struct buf reply;   /* scratch for building replies */
    struct conn *dirty; /* connections with output to flush this iteration */
    uint32_t ndirty;
    uint64_t last_flush_ns; /* uv_hrtime() of the last flush */
    uv_timer_t flush_timer; /* a deferred (coalesced) flush */
    struct conn *conns;     /* every connection, for shutdown and stats */
    struct conn *wheel[WHEEL_SLOTS];
    struct hub_local *hub; /* this loop's channel table */
    void *outq_free;       /* free list of small outbound queues */
    int shutting_down;
    int accept_paused; /* out of descriptors: accepting again at the next tick */
    struct loop_stats stats;
};

struct config;

struct server {
    const struct config *config;
    unsigned nloops;
    struct loop *loops[LOOP_MAX];
    uint64_t start_ms;
    char node_uid[37];
    atomic_int stopping;
};

/* Create the listeners and loops, run them in threads, and block until SIGTERM or
 * SIGINT; then every client gets close code 3001, output is flushed, and the
 * function returns 0 (or -1 if the server could not start: message logged). */
int server_run(const struct config *config);

/* Append a message to loop's inbox and wake it. Any thread. The loop takes over the
 * message's frame reference. Returns 0 or -1 (out of memory: the caller keeps it). */
int loop_post(struct loop *loop, const struct loop_msg *msg);

/* Seconds since server start, from the clock (1 at start): what deadlines count from. */
uint32_t loop_now_sec(const struct loop *loop);
/* Put c on the wheel to be woken (conn_on_timer) seconds from now (by the clock, not
 * the wheel's position, which lags after a stall). No-op on an aborted connection. */
void loop_timer_set(struct loop *loop, struct conn *c, uint32_t seconds);
void loop_timer_clear(struct loop *loop, struct conn *c);

/* conn.c tells the loop a connection was freed (ends a shutting-down loop). */
void loop_conn_gone(struct loop *loop);

/* The loop thread of the calling code (NULL on other threads). */
struct loop *loop_current(void);

uint64_t server_now_ms(void); /* CLOCK_MONOTONIC milliseconds */

#endif
