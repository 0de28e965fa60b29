/* What net's own files share: the loop and connection structs, opaque to every other
 * module. Not an interface: include only from src/net/. */
#ifndef HERALD_NET_INTERNAL_H
#define HERALD_NET_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "core/pool.h"
#include "net/conn.h"
#include "net/loop.h"

#define WHEEL_SLOTS 256 /* seconds; entries further out wait in their slot and are re-checked */
/* The node-wide output budget (client_queue_total_max) chooses whom to disconnect among
 * the connections with at least 2^HEAVY_MIN_SHIFT bytes queued, kept per loop in one list
 * per power of two of their queue (conn.c): the one with the most is found in O(1). */
#define HEAVY_MIN_SHIFT 14
#define HEAVY_BUCKETS 64

struct outq;
struct tls_conn;
struct tls_ctx;
struct tls_loop;

/* Laid out for size: an idle connection costs its loop this struct (from the loop's
 * slab, no allocator header) and nothing else of net's. */
struct conn {
    struct loop *loop;
    const struct conn_handler *h;
    void *ud;
    struct tls_conn *tls; /* the TLS session (net/tls.c, its I/O tls_conn_io), or NULL */
    struct outq *out;     /* pending output or NULL (it links the heavy ones, conn.c) */
    struct conn *dirty_next;
    struct buf *in; /* unconsumed input (partial frame or request), NULL when none */
    struct loop_timer timer;
    int fd;
    uint8_t heavy;           /* on loop->heavy[heavy] (log2 of its queued bytes), 0: on none */
    uint8_t events;          /* CONN_IN | CONN_OUT in the loop's epoll set; 0: not in it */
    unsigned dirty : 1;       /* on loop->dirty */
    unsigned want_write : 1;  /* CONN_OUT requested */
    unsigned close_after : 1; /* shutdown(SHUT_WR) once the queue drains */
    unsigned closed : 1;      /* aborted: waits on loop->dead for the turn's end */
    unsigned closing : 1;     /* closing: no more output taken, input drained and discarded */
    unsigned peer_closed : 1; /* read EOF */
    unsigned paused : 1;      /* output over client_queue_max: input not read (back-pressure) */
    unsigned held : 1;        /* the handler left over input_max unconsumed: input not read */
    unsigned metered : 1;     /* its bytes count in herald_bytes_*_total (a WebSocket) */
    unsigned shed : 1;        /* disconnected for the output budget: never chosen again */
};

/* What a connection waits for, as it is registered in its loop's epoll set. */
#define CONN_IN 1
#define CONN_OUT 2

struct loop {
    uv_loop_t uv;
    unsigned id;
    struct net *net;
    pthread_t thread;
    int listen_fd;
    uv_poll_t listen_poll;
    int metrics_fd; /* loop 0 with metrics_listen: its listener, plaintext; else -1 */
    uv_poll_t metrics_poll;
    /* Every connection's socket is in this epoll set (level-triggered, data.ptr = the
     * conn), itself watched by libuv through one handle: no libuv handle per connection. */
    int epoll_fd;
    uv_poll_t epoll_poll;
    /* Aborted connections: their structs go back to the slab once the turn's callbacks
     * have run (an event already fetched for one, or a caller still holding it, sees it
     * closed). */
    struct conn *dead;
    uv_check_t reap;
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

    uint8_t *read_buf; /* shared by every connection of this loop */
    struct buf reply;  /* scratch for building replies */
    /* Connections with output to flush this iteration, in the order their output became
     * pending (a reply to input read this turn goes before the fan-out it caused). */
    struct conn *dirty, *dirty_last;
    uint32_t ndirty;
    uint32_t fanout_width;  /* the widest fan-out queued since the last flush */
    uint64_t last_flush_ns;   /* uv_hrtime() at the end of the last flush */
    uv_timer_t flush_timer; /* a deferred (coalesced) flush */
    uint32_t nconns;        /* connections in conn_pool, the dead ones included */
    struct loop_timer *wheel[WHEEL_SLOTS];
    struct pool conn_pool; /* every connection struct of the loop (walked at shutdown) */
    struct pool outq_pool; /* small outbound queues */
    int shutting_down;
    int joined;           /* its thread ran and was joined */
    int accept_paused;    /* out of descriptors: accepting again at the next tick */
    struct tls_loop *tls; /* NULL: the listener is plaintext */

    /* The output budget. queued is this loop's own (plain adds on the delivery path);
     * what it adds to net->queued_total is settled after each flush. */
    uint64_t queued;        /* bytes queued on this loop's connections */
    uint64_t queued_shared; /* the part of queued counted in net->queued_total */
    struct {
        struct conn *first, *last;
    } heavy[HEAVY_BUCKETS];
    uint64_t heavy_mask;        /* bit b: heavy[b] is not empty */
    _Atomic uint32_t heavy_top; /* highest non-empty bucket as of the last settling, for
                                   the other loops to compare with theirs */
    _Atomic int shed_asked;     /* another loop asked this one to shed (a message is on
                                   its way) */
};

struct net {
    struct net_config cfg;
    unsigned nloops;
    struct loop *loops[LOOP_MAX];
    uint64_t start_ms;
    _Atomic uint64_t queued_total; /* bytes queued to clients on every loop (settled) */
};

/* conn.c, for loop.c */
struct conn *conn_new(struct loop *loop, int fd);
/* The loop's epoll set has events: dispatch them to their connections. */
void conn_poll_events(uv_poll_t *h, int status, int events);
/* Give the structs of the connections aborted this turn back to the slab. */
void conn_reap(struct loop *loop);
void conn_flush(struct conn *c);
void conn_shutdown(struct conn *c); /* server shutdown: the handler's, or abort */
void conn_pools_init(struct loop *loop);
void conn_pools_free(struct loop *loop);
/* tls.c, for loop.c and conn.c: a loop's TLS state, from ctx (the loop takes a
 * reference); the session of a connection just accepted and given its handler (0, or -1
 * and c aborted); its end, from conn_abort. */
int tls_loop_init(struct loop *loop, struct tls_ctx *ctx, unsigned handshake_timeout);
void tls_loop_close(struct loop *loop); /* its handle, as the loop ends */
void tls_loop_free(struct loop *loop);
int tls_conn_start(struct conn *c);
void tls_conn_free(struct conn *c);
extern const struct conn_io tls_conn_io;
/* Count this loop's queued output in the node's total and, past client_queue_total_max,
 * disconnect the heaviest consumers (here, or by asking the loop that holds them). After
 * each flush, and every tick. */
void conn_budget_settle(struct loop *loop);
/* The node is over budget and this loop was named as holding the heaviest consumer. */
void conn_budget_enforce(struct loop *loop);
/* loop.c, for conn.c */
void loop_conn_gone(struct loop *loop);

#endif
