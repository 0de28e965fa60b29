/* Connection lifecycle, input buffering, back-pressure and the outbound queue (see
 * conn.h). Hot path: conn_send_frame_owned (one pointer and one reference per
 * delivery, no copy) and conn_flush (one sendmsg per connection per loop iteration). */
#include "net/conn.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/frame.h"
#include "core/log.h"
#include "metrics/metrics.h"
#include "net/internal.h"

/* Outbound queue: a ring of frame references. Exists only while output is pending;
 * small ones come from a per-loop slab. */
#define OUTQ_SMALL 16
#define CLOSE_GRACE_SEC 2
#define HTTP_IDLE_SEC 30

struct outq {
    uint32_t head, count, cap;
    uint32_t off;   /* bytes of the head frame already written */
    uint64_t bytes; /* bytes queued, minus off */
    /* loop->heavy[c->heavy], oldest first: only a connection with this much queued is on
     * one, so the links live here rather than in every connection */
    struct conn *heavy_next, *heavy_prev;
    struct frame *items[];
};

/* The first write of a publication's frame: how long since it was published (once per
 * frame, whichever connection and loop writes it first). */
static __attribute__((noinline)) void frame_written(struct frame *f)
{
    uint32_t at = atomic_exchange_explicit(&f->stamp, 0, memory_order_relaxed);
    if (at)
        metrics_observe(METRIC_H_PUBLISH_TO_WRITE, (uint32_t)(metrics_stamp_us() - at));
}

/* ---- plain socket I/O ---- */

static ssize_t plain_read(struct conn *c, void *buf, size_t len)
{
    return read(c->fd, buf, len);
}

static ssize_t plain_writev(struct conn *c, const struct iovec *iov, int n)
{
    /* sendmsg rather than writev: the socket path skips the VFS layer (file position
     * lock, iovec import through vfs_writev), a few percent per call. One buffer (a fan-out's
     * run of publications, most writes) goes through send(): no iovec array to import. */
    if (n == 1)
        return send(c->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
    return sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static int plain_shutdown(struct conn *c)
{
    return shutdown(c->fd, SHUT_WR);
}

static const struct conn_io plain_io = {plain_read, plain_writev, plain_shutdown};

static const struct conn_io *io_of(const struct conn *c)
{
    return c->tls ? &tls_conn_io : &plain_io;
}

/* ---- pools ---- */

void conn_pools_init(struct loop *l)
{
    pool_init(&l->conn_pool, sizeof(struct conn));
    pool_init(&l->outq_pool, sizeof(struct outq) + OUTQ_SMALL * sizeof(struct frame *));
}

void conn_pools_free(struct loop *l)
{
    pool_drain(&l->conn_pool);
    pool_drain(&l->outq_pool);
}

static struct outq *outq_get(struct loop *l)
{
    struct outq *q = pool_get(&l->outq_pool);
    if (q == NULL)
        return NULL;
    q->cap = OUTQ_SMALL;
    q->head = q->count = q->off = 0;
    q->bytes = 0;
    q->heavy_next = q->heavy_prev = NULL;
    return q;
}

static void outq_put(struct loop *l, struct outq *q)
{
    if (q->cap == OUTQ_SMALL)
        pool_put(&l->outq_pool, q);
    else
        free(q);
}

/* ---- accessors ---- */

void conn_set_handler(struct conn *c, const struct conn_handler *h, void *ud)
{
    c->h = h;
    c->ud = ud;
}

void *conn_ud(const struct conn *c)
{
    return c->ud;
}

const struct conn_handler *conn_handler_of(const struct conn *c)
{
    return c->h;
}

void conn_set_metered(struct conn *c)
{
    c->metered = 1;
}

int conn_fd(const struct conn *c)
{
    return c->fd;
}

struct loop *conn_loop(const struct conn *c)
{
    return c->loop;
}

int conn_closing(const struct conn *c)
{
    return c->closed || c->closing;
}

static void on_timer(struct loop_timer *t)
{
    struct conn *c = (struct conn *)((char *)t - offsetof(struct conn, timer));
    if (c->closing || c->h == NULL || c->h->timer == NULL)
        conn_abort(c); /* the close grace, or an idle connection, is over */
    else
        c->h->timer(c);
}

void conn_timer_set(struct conn *c, uint32_t seconds)
{
    /* An aborted connection is recycled at the end of the loop turn (conn_reap): never link it anywhere. */
    if (!c->closed)
        loop_timer_set(c->loop, &c->timer, seconds);
}

/* ---- output ---- */

static uint64_t queue_bound(const struct conn *c)
{
    return c->loop->net->cfg.client_queue_max;
}

uint64_t conn_queued_bytes(const struct conn *c)
{
    return c->out ? c->out->bytes : 0;
}

int conn_output_full(const struct conn *c)
{
    return c->out && c->out->bytes >= queue_bound(c);
}

/* ---- the heaviest consumers ---- */

static void heavy_unlink(struct conn *c)
{
    struct loop *l = c->loop;
    unsigned b = c->heavy;
    struct outq *q = c->out; /* a heavy connection has a queue */
    if (q->heavy_prev)
        q->heavy_prev->out->heavy_next = q->heavy_next;
    else
        l->heavy[b].first = q->heavy_next;
    if (q->heavy_next)
        q->heavy_next->out->heavy_prev = q->heavy_prev;
    else
        l->heavy[b].last = q->heavy_prev;
    if (l->heavy[b].first == NULL)
        l->heavy_mask &= ~(1ull << b);
    q->heavy_next = q->heavy_prev = NULL;
    c->heavy = 0;
}

/* Move c to the list of its queue's power of two (appended: within a list, the one that
 * got there first leads), or off the lists below HEAVY_MIN_SHIFT. Only when the power
 * changes: a few times per queue's growth, not per frame. */
static void heavy_relink(struct conn *c, uint64_t bytes)
{
    unsigned b = bytes >> HEAVY_MIN_SHIFT ? 63u - (unsigned)__builtin_clzll(bytes) : 0;
    if (b == c->heavy || c->shed)
        return;
    if (c->heavy)
        heavy_unlink(c);
    if (b == 0)
        return;
    struct loop *l = c->loop;
    struct outq *q = c->out;
    c->heavy = (uint8_t)b;
    q->heavy_prev = l->heavy[b].last;
    q->heavy_next = NULL;
    if (l->heavy[b].last)
        l->heavy[b].last->out->heavy_next = c;
    else
        l->heavy[b].first = c;
    l->heavy[b].last = c;
    l->heavy_mask |= 1ull << b;
}

static unsigned heavy_top(const struct loop *l)
{
    return l->heavy_mask ? 63u - (unsigned)__builtin_clzll(l->heavy_mask) : 0;
}

static void mark_dirty(struct conn *c)
{
    if (c->dirty || c->closed)
        return;
    struct loop *l = c->loop;
    c->dirty = 1;
    c->dirty_next = NULL;
    if (l->dirty_last)
        l->dirty_last->dirty_next = c;
    else
        l->dirty = c;
    l->dirty_last = c;
    l->ndirty++;
}

/* Queue f, taking over one reference. check: refuse past client_queue_max. */
static int outq_push(struct conn *c, struct frame *f, int check)
{
    struct outq *q = c->out;
    if (q == NULL) {
        q = c->out = outq_get(c->loop);
        if (q == NULL)
            return -1;
    }
    if (check && q->bytes + f->len > queue_bound(c))
        return -1;
    if (q->count == q->cap) {
        /* Grow the ring, unwrapping it. */
        uint32_t cap = q->cap * 2;
        struct outq *nq = malloc(sizeof(*nq) + cap * sizeof(struct frame *));
        if (nq == NULL)
            return -1;
        *nq = *q;
        for (uint32_t i = 0; i < q->count; i++)
            nq->items[i] = q->items[(q->head + i) % q->cap];
        nq->head = 0;
        nq->cap = cap;
        outq_put(c->loop, q);
        q = c->out = nq;
    }
    q->items[(q->head + q->count) % q->cap] = f;
    q->count++;
    q->bytes += f->len;
    c->loop->queued += f->len;
    if (q->bytes >> HEAVY_MIN_SHIFT)
        heavy_relink(c, q->bytes);
    mark_dirty(c);
    return 0;
}

int conn_send_frame(struct conn *c, struct frame *f)
{
    if (c->closed || c->closing)
        return 1;
    frame_ref(f);
    if (outq_push(c, f, 1) != 0) {
        frame_unref(f);
        return -1;
    }
    return 0;
}

int conn_send_frame_owned(struct conn *c, struct frame *f)
{
    if (c->closed || c->closing)
        return 1;
    return outq_push(c, f, 1);
}

int conn_reply_frame(struct conn *c, struct frame *f)
{
    if (c->closed || c->closing) {
        frame_unref(f);
        return 1;
    }
    if (outq_push(c, f, 0) != 0) {
        frame_unref(f);
        conn_abort(c); /* out of memory: a reply cannot be half-sent */
        return -1;
    }
    return 0;
}

int conn_send_bytes(struct conn *c, const void *p, size_t len)
{
    if (c->closed || c->closing)
        return 1;
    struct frame *f = frame_from(p, len);
    if (f == NULL)
        return -1;
    return conn_reply_frame(c, f);
}

/* ---- the input kept ---- */

static void drop_input(struct conn *c)
{
    if (c->in == NULL)
        return;
    buf_free(c->in);
    free(c->in);
    c->in = NULL;
}

static size_t input_len(const struct conn *c)
{
    return c->in ? c->in->len : 0;
}

/* ---- closing ---- */

static void on_reap(uv_check_t *h)
{
    conn_reap(h->data);
}

void conn_reap(struct loop *l)
{
    if (l->dead == NULL)
        return;
    while (l->dead) {
        struct conn *c = l->dead;
        l->dead = c->dirty_next;
        pool_put(&l->conn_pool, c);
        l->nconns--;
    }
    uv_check_stop(&l->reap);
    loop_conn_gone(l);
}

void conn_abort(struct conn *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    struct loop *l = c->loop;
    loop_timer_clear(l, &c->timer);
    if (c->h && c->h->gone)
        c->h->gone(c);
    c->h = NULL;
    if (c->heavy)
        heavy_unlink(c);
    if (c->out) {
        struct outq *q = c->out;
        l->queued -= q->bytes;
        for (uint32_t i = 0; i < q->count; i++)
            frame_unref(q->items[(q->head + i) % q->cap]);
        c->out = NULL;
        outq_put(l, q);
    }
    drop_input(c);
    if (c->tls)
        tls_conn_free(c);
    /* Unlink from the loop's lists; the dirty list is singly linked, so walk it
     * (rare: only connections aborted with output pending are on it). */
    if (c->dirty) {
        for (struct conn **pp = &l->dirty, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->dirty_next) {
            if (*pp == c) {
                *pp = c->dirty_next;
                if (l->dirty_last == c)
                    l->dirty_last = prev;
                l->ndirty--;
                break;
            }
        }
        c->dirty = 0;
    }
    metrics_add(l->id, METRIC_CONNECTIONS, -1);
    /* Out of the epoll set before the descriptor is closed: once closed, its number may
     * be another loop's next accept. */
    if (c->events)
        epoll_ctl(l->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    c->events = 0;
    close(c->fd);
    /* The struct stays until the end of the turn (off the dirty list, dirty_next is free
     * to link it on loop->dead). */
    c->dirty_next = l->dead;
    if (l->dead == NULL)
        uv_check_start(&l->reap, on_reap);
    l->dead = c;
}

/* Register c for events (CONN_IN | CONN_OUT) in its loop's epoll set, level-triggered as
 * libuv's own; none: out of the set, since epoll reports a hang-up or an error whatever
 * was asked, and a paused connection would be woken for it at every turn. */
static int poll_set(struct conn *c, uint8_t events)
{
    struct epoll_event ev = {.events = (events & CONN_IN ? EPOLLIN : 0u) |
                                       (events & CONN_OUT ? EPOLLOUT : 0u),
                             .data.ptr = c};
    int op = events == 0 ? EPOLL_CTL_DEL : c->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(c->loop->epoll_fd, op, c->fd, &ev) != 0 && op != EPOLL_CTL_DEL)
        return -1; /* out of kernel memory for the registration */
    c->events = events;
    return 0;
}

/* Poll for what the connection waits for: input unless paused, output while the
 * socket is full. */
static void update_poll(struct conn *c, int want_write)
{
    if (c->closed)
        return;
    c->want_write = want_write != 0;
    uint8_t events = (uint8_t)((c->paused || c->held ? 0 : CONN_IN) | (want_write ? CONN_OUT : 0));
    if (events != c->events && poll_set(c, events) != 0)
        conn_abort(c);
}

void conn_close_after_flush(struct conn *c, uint32_t seconds)
{
    if (c->closed || c->closing)
        return;
    c->closing = 1;
    c->close_after = 1;
    /* Closing: input is read again, and discarded, until the peer closes. */
    if (c->paused || c->held) {
        c->paused = c->held = 0;
        update_poll(c, c->want_write);
    }
    mark_dirty(c);
    conn_timer_set(c, seconds);
}

void conn_shutdown(struct conn *c)
{
    if (c->closing)
        return;
    if (c->h && c->h->shutdown)
        c->h->shutdown(c);
    else
        conn_abort(c);
}

/* ---- input ---- */

static void consume(struct conn *c, uint8_t *p, size_t len);

/* Back-pressure: a connection whose output is over client_queue_max is not read
 * (its replies count against the bound like everything else) until the peer has
 * read half of it; what it had already sent waits in c->in. */
static void pause_input(struct conn *c)
{
    if (c->paused || c->closing)
        return;
    c->paused = 1;
    update_poll(c, c->want_write);
}

static void resume_input(struct conn *c)
{
    if (!c->paused || conn_queued_bytes(c) >= queue_bound(c) / 2)
        return;
    c->paused = 0;
    update_poll(c, c->want_write);
    if (c->in)
        consume(c, c->in->p, c->in->len);
}

void conn_flush(struct conn *c)
{
    if (c->closed)
        return;
    struct outq *q = c->out;
    while (q && q->count) {
        struct iovec iov[64];
        int n = 0;
        size_t total = 0;
        for (uint32_t i = 0; i < q->count && n < 64; i++) {
            struct frame *f = q->items[(q->head + i) % q->cap];
            size_t skip = i == 0 ? q->off : 0;
            iov[n].iov_base = f->data + skip;
            iov[n].iov_len = f->len - skip;
            total += iov[n].iov_len;
            n++;
        }
        ssize_t w = io_of(c)->writev(c, iov, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                update_poll(c, 1);
                resume_input(c);
                return;
            }
            if (errno == EINTR)
                continue;
            conn_abort(c);
            return;
        }
        size_t left = (size_t)w;
        if (c->metered)
            metrics_add(c->loop->id, METRIC_BYTES_OUT, (int64_t)w);
        q->bytes -= left;
        c->loop->queued -= left;
        if (c->heavy)
            heavy_relink(c, q->bytes);
        while (left > 0) {
            struct frame *f = q->items[q->head];
            size_t rest = f->len - q->off;
            if (left < rest) {
                q->off += (uint32_t)left;
                break;
            }
            left -= rest;
            q->off = 0;
            q->head = (q->head + 1) % q->cap;
            q->count--;
            if (atomic_load_explicit(&f->stamp, memory_order_relaxed))
                frame_written(f);
            frame_unref(f);
        }
        if ((size_t)w < total) {
            /* Partial write: the socket is full. */
            update_poll(c, 1);
            resume_input(c);
            return;
        }
    }
    if (q) {
        c->out = NULL;
        outq_put(c->loop, q);
    }
    update_poll(c, 0);
    resume_input(c);
    if (c->closed)
        return;
    if (c->out == NULL && c->close_after) {
        c->close_after = 0;
        io_of(c)->shutdown(c);
        if (c->peer_closed)
            conn_abort(c);
        else
            conn_timer_set(c, CLOSE_GRACE_SEC);
    }
}

/* Hand input to the handler; returns bytes consumed. Closing: drained and discarded. */
static size_t process(struct conn *c, uint8_t *p, size_t len)
{
    if (c->closing || c->h == NULL)
        return len;
    size_t used = 0;
    while (used < len && !c->closed && !c->closing && !conn_output_full(c)) {
        const struct conn_handler *h = c->h;
        size_t n = h->data(c, p + used, len - used);
        used += n;
        /* A handler that installed the next one (an upgrade) hands it the rest. */
        if (c->h == h || n == 0)
            break;
    }
    return c->closing ? len : used;
}

/* Process p[0..len) (c->in or the loop's read buffer) and keep the unconsumed tail
 * in c->in: an incomplete request or frame (the parsers' limits bound it), or, when
 * processing stopped because the output is full, the messages not yet processed. */
static void consume(struct conn *c, uint8_t *p, size_t len)
{
    size_t used = process(c, p, len);
    if (c->closed)
        return;
    size_t rest = len - used;
    if (rest == 0) {
        drop_input(c); /* an idle connection holds no input buffer */
    } else if (c->in && p == c->in->p) {
        memmove(c->in->p, c->in->p + used, rest);
        c->in->len = (uint32_t)rest;
    } else {
        if (c->in == NULL && (c->in = calloc(1, sizeof(*c->in))) == NULL) {
            conn_abort(c);
            return;
        }
        buf_reset(c->in);
        buf_append(c->in, p + used, rest);
        if (c->in->oom) {
            conn_abort(c);
            return;
        }
    }
    if (conn_output_full(c))
        pause_input(c);
    else if (input_len(c) > c->loop->net->cfg.input_max && !c->held && !c->closing) {
        /* More is kept than any request or message the handler may wait to complete: it
         * holds complete ones back (API calls waiting for a slow engine, a connect waiting
         * for keys). Reading on would buffer whatever the peer sends, without bound. */
        c->held = 1;
        update_poll(c, c->want_write);
    }
}

static void conn_read(struct conn *c)
{
    struct loop *l = c->loop;
    uint8_t *dst;
    size_t room;
    size_t kept = 0; /* bytes of c->in copied to the front of read_buf */
    int into_in = 0; /* reading into c->in's room */
    if (c->paused || c->held || c->closed)
        return;
    if (c->in && c->in->len <= LOOP_READ_BUF / 2) {
        /* A partial request or frame is kept: read after a copy of it in the loop's buffer,
         * so that a pipelining peer's next requests come in one large read rather than in
         * the few KB left in c->in (the ceiling program reads so too). c->in is emptied
         * first: nothing may consume the old copy meanwhile. */
        kept = c->in->len;
        memcpy(l->read_buf, c->in->p, kept);
        c->in->len = 0;
        dst = l->read_buf + kept;
        room = LOOP_READ_BUF - kept;
    } else if (c->in) {
        /* The parsers' limits and input_max bound what is kept; read at least 4 KB more
         * at a time. */
        if (buf_reserve(c->in, 4096) != 0) {
            conn_abort(c);
            return;
        }
        dst = c->in->p + c->in->len;
        room = c->in->cap - c->in->len;
        into_in = 1;
    } else {
        dst = l->read_buf;
        room = LOOP_READ_BUF;
    }
    ssize_t n = io_of(c)->read(c, dst, room);
    if (n <= 0) {
        if (kept && c->in)
            c->in->len = (uint32_t)kept; /* still in c->in->p */
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        c->peer_closed = 1;
        conn_abort(c);
        return;
    }
    if (c->metered)
        metrics_add(l->id, METRIC_BYTES_IN, n);
    if (into_in) {
        c->in->len += (uint32_t)n;
        consume(c, c->in->p, c->in->len);
    } else {
        consume(c, l->read_buf, kept + (size_t)n);
    }
}

void conn_read_now(struct conn *c)
{
    conn_read(c);
}

void conn_continue(struct conn *c)
{
    if (!c->closed && !c->paused && c->in)
        consume(c, c->in->p, c->in->len);
    if (!c->closed && c->held && input_len(c) <= c->loop->net->cfg.input_max) {
        c->held = 0;
        update_poll(c, c->want_write);
    }
}

static void conn_on_io(struct conn *c, uint32_t events)
{
    /* A hang-up or an error: the read or the write that was asked for meets it (as libuv
     * reports them on a poll handle). */
    if (events & (EPOLLERR | EPOLLHUP))
        events |= (c->events & CONN_IN ? EPOLLIN : 0u) | (c->events & CONN_OUT ? EPOLLOUT : 0u);
    if ((events & EPOLLOUT) && (c->events & CONN_OUT))
        conn_flush(c);
    if (!c->closed && (events & EPOLLIN) && (c->events & CONN_IN))
        conn_read(c);
}

#define EPOLL_BATCH 256

void conn_poll_events(uv_poll_t *h, int status, int events)
{
    struct loop *l = h->data;
    struct epoll_event ev[EPOLL_BATCH];
    /* A few batches per turn: the set stays readable while more are ready, so what is
     * left waits for the next turn rather than starving the loop's other work. */
    for (int round = 0; round < 4; round++) {
        int n = epoll_wait(l->epoll_fd, ev, EPOLL_BATCH, 0);
        for (int i = 0; i < n; i++) {
            struct conn *c = ev[i].data.ptr;
            /* One aborted by an earlier event of the batch is still valid (on l->dead). */
            if (!c->closed)
                conn_on_io(c, ev[i].events);
        }
        if (n < EPOLL_BATCH)
            break;
    }
}

struct conn *conn_new(struct loop *l, int fd)
{
    struct conn *c = pool_get(&l->conn_pool);
    if (c == NULL) {
        close(fd);
        return NULL;
    }
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->loop = l;
    c->timer.fire = on_timer;
    if (poll_set(c, CONN_IN) != 0) { /* nothing else holds it yet */
        pool_put(&l->conn_pool, c);
        close(fd);
        return NULL;
    }
    l->nconns++;
    metrics_add(l->id, METRIC_CONNECTIONS, 1);
    metrics_add(l->id, METRIC_ACCEPTED, 1);
    /* Until its handler says otherwise, an idle connection is closed after a while. */
    conn_timer_set(c, HTTP_IDLE_SEC);
    return c;
}

/* ---- the node-wide output budget (client_queue_total_max) ----
 *
 * Every loop counts what its connections have queued in loop->queued (a plain add per
 * queued frame, a subtraction per write) and settles the difference into the node's
 * atomic total after each flush, so that it judges what the writes left behind: no lock,
 * nothing shared touched per delivery. A frame shared by n connections counts n times
 * (each would keep it alive alone), so the total bounds the memory from above. Past the
 * cap, the loop that holds the heaviest consumer, by its queue's power of two (and, among
 * those, the one that got there first), disconnects it, then the next, until the total is
 * under the cap: one victim at a time, never a walk over the connections. A loop over the
 * cap that does not hold the heaviest asks the one that does, by a message. */

static void budget_publish(struct loop *l)
{
    /* herald_loop_queued_bytes: the loop's own figure, as it stands after the flush. */
    atomic_store_explicit(&metrics_slots[l->id].v[METRIC_QUEUED_BYTES], (int64_t)l->queued,
                          memory_order_relaxed);
    int64_t delta = (int64_t)(l->queued - l->queued_shared);
    if (delta != 0) {
        l->queued_shared = l->queued;
        atomic_fetch_add_explicit(&l->net->queued_total, (uint64_t)delta, memory_order_relaxed);
    }
    atomic_store_explicit(&l->heavy_top, heavy_top(l), memory_order_relaxed);
}

/* Drop what c had queued and not begun to write: the frame being written goes on
 * (the peer then reads whole frames only), nothing after it. */
static void discard_unsent(struct conn *c)
{
    struct outq *q = c->out;
    if (q == NULL)
        return;
    uint32_t keep = q->off ? 1 : 0;
    while (q->count > keep) {
        struct frame *f = q->items[(q->head + q->count - 1) % q->cap];
        q->bytes -= f->len;
        c->loop->queued -= f->len;
        q->count--;
        frame_unref(f);
    }
    if (q->count == 0) {
        c->out = NULL;
        outq_put(c->loop, q);
    }
}

static void on_shed_asked(struct loop *l, struct loop_msg *msgs, size_t n)
{
    (void)msgs;
    (void)n;
    atomic_store_explicit(&l->shed_asked, 0, memory_order_relaxed);
    budget_publish(l);
    conn_budget_enforce(l);
}

static void ask_to_shed(struct loop *l)
{
    if (atomic_exchange_explicit(&l->shed_asked, 1, memory_order_relaxed))
        return; /* a message is already on its way */
    struct loop_msg m = {.handle = on_shed_asked};
    if (loop_post(l, &m) != 0)
        atomic_store_explicit(&l->shed_asked, 0, memory_order_relaxed);
}

void conn_budget_enforce(struct loop *l)
{
    struct net *net = l->net;
    uint64_t cap = net->cfg.client_queue_total_max;
    /* Shutting down, every connection goes anyway; and a message posted to a loop that
     * has ended would wake a closed handle. */
    if (cap == 0 || l->shutting_down)
        return;
    while (atomic_load_explicit(&net->queued_total, memory_order_relaxed) > cap) {
        /* The loop with the heaviest consumer (ties: the lowest id). */
        unsigned best = l->id, best_top = heavy_top(l);
        for (unsigned i = 0; i < net->nloops; i++) {
            unsigned t = atomic_load_explicit(&net->loops[i]->heavy_top, memory_order_relaxed);
            if (i != l->id && (t > best_top || (t == best_top && i < best))) {
                best = i;
                best_top = t;
            }
        }
        if (best_top == 0)
            return; /* nobody holds more than a little: nothing to take back */
        if (best != l->id) {
            ask_to_shed(net->loops[best]);
            return;
        }
        struct conn *c = l->heavy[best_top].first;
        heavy_unlink(c);
        c->shed = 1;
        metrics_add(l->id, METRIC_LIMIT_QUEUE_TOTAL, 1);
        if (c->closing || c->h == NULL || c->h->over_budget == NULL) {
            conn_abort(c); /* already closing (its close frame would wait behind it) */
        } else {
            discard_unsent(c);
            c->h->over_budget(c);
        }
        budget_publish(l);
    }
}

void conn_budget_settle(struct loop *l)
{
    if (l->queued == l->queued_shared)
        return;
    int grew = l->queued > l->queued_shared;
    budget_publish(l);
    if (grew)
        conn_budget_enforce(l);
}
