/* Connection lifecycle, input buffering and the outbound queue (see conn.h).
 * Hot path: conn_send_frame (one pointer and one reference per delivery, no
 * copy) and conn_flush (one sendmsg per connection per loop iteration). */
#include "net/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/config.h"
#include "core/frame.h"
#include "core/log.h"
#include "http/server.h"
#include "net/loop.h"
#include "proto/session.h"

/* Outbound queue: a ring of frame references. Exists only while output is pending;
 * small ones are recycled through a per-loop free list. */
#define OUTQ_SMALL 16
#define OUTQ_FREE_MAX 256
#define CLOSE_GRACE_SEC 2
#define HTTP_IDLE_SEC 30

struct outq {
    struct outq *next_free;
    uint32_t head, count, cap;
    uint32_t off;   /* bytes of the head frame already written */
    uint64_t bytes; /* bytes queued, minus off */
    struct frame *items[];
};

/* Per-loop free lists: outbound queues, and connection structs (they churn). */
#define CONN_FREE_MAX 1024

struct outq_pool {
    struct outq *free;
    size_t n;
    struct conn *free_conns; /* linked through next */
    size_t n_conns;
};

static struct outq_pool *pool_of(struct loop *l)
{
    if (l->outq_free == NULL)
        l->outq_free = calloc(1, sizeof(struct outq_pool));
    return l->outq_free;
}

static struct outq *outq_get(struct loop *l)
{
    struct outq_pool *pool = l->outq_free;
    if (pool && pool->free) {
        struct outq *q = pool->free;
        pool->free = q->next_free;
        pool->n--;
        return q;
    }
    struct outq *q = malloc(sizeof(*q) + OUTQ_SMALL * sizeof(struct frame *));
    if (q == NULL)
        return NULL;
    q->cap = OUTQ_SMALL;
    q->head = q->count = q->off = 0;
    q->bytes = 0;
    return q;
}

static void outq_put(struct loop *l, struct outq *q)
{
    struct outq_pool *pool = pool_of(l);
    if (pool && q->cap == OUTQ_SMALL && pool->n < OUTQ_FREE_MAX) {
        q->head = q->count = q->off = 0;
        q->bytes = 0;
        q->next_free = pool->free;
        pool->free = q;
        pool->n++;
        return;
    }
    free(q);
}

void conn_pool_free(struct loop *l)
{
    struct outq_pool *pool = l->outq_free;
    if (pool == NULL)
        return;
    while (pool->free) {
        struct outq *q = pool->free;
        pool->free = q->next_free;
        free(q);
    }
    while (pool->free_conns) {
        struct conn *c = pool->free_conns;
        pool->free_conns = c->next;
        free(c);
    }
    free(pool);
    l->outq_free = NULL;
}

/* Nothing is linked into the loop's lists once a connection is aborted: the struct
 * is recycled after uv_close, and a stale link would outlive it. */
static void mark_dirty(struct conn *c)
{
    if (c->dirty || c->closed)
        return;
    c->dirty = 1;
    c->dirty_next = c->loop->dirty;
    c->loop->dirty = c;
    c->loop->ndirty++;
}

static int outq_push(struct conn *c, struct frame *f, int force)
{
    struct outq *q = c->out;
    if (q == NULL) {
        q = c->out = outq_get(c->loop);
        if (q == NULL)
            return -1;
    }
    if (!force && q->bytes + f->len > c->loop->server->config->client_queue_max)
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
        free(q);
        q = c->out = nq;
    }
    q->items[(q->head + q->count) % q->cap] = f;
    q->count++;
    q->bytes += f->len;
    mark_dirty(c);
    return 0;
}

int conn_send_frame(struct conn *c, struct frame *f)
{
    if (c->closed || c->close_sent)
        return 0;
    frame_ref(f);
    if (outq_push(c, f, 0) != 0) {
        frame_unref(f);
        return -1;
    }
    return 0;
}

int conn_send_frame_owned(struct conn *c, struct frame *f)
{
    if (c->closed || c->close_sent)
        return 1;
    return outq_push(c, f, 0);
}

static int send_bytes(struct conn *c, const void *p, size_t len, int force)
{
    struct frame *f = frame_from(p, len);
    if (f == NULL)
        return -1;
    if (outq_push(c, f, force) != 0) {
        frame_unref(f);
        return -1;
    }
    return 0;
}

int conn_send_bytes(struct conn *c, const void *p, size_t len)
{
    if (c->closed || c->close_sent)
        return 0;
    return send_bytes(c, p, len, 1);
}

static int send_text(struct conn *c, const void *p, size_t len, int force)
{
    if (c->closed || c->close_sent)
        return 0;
    struct frame *f = frame_new(len + WS_FRAME_HEAD_MAX);
    if (f == NULL)
        return -1;
    size_t h = ws_frame_head_encode(f->data, WS_OP_TEXT, len);
    memcpy(f->data + h, p, len);
    f->len = (uint32_t)(h + len);
    if (outq_push(c, f, force) != 0) {
        frame_unref(f);
        return -1;
    }
    return 0;
}

int conn_send_text(struct conn *c, const void *p, size_t len)
{
    return send_text(c, p, len, 0);
}

int conn_reply_text(struct conn *c, const void *p, size_t len)
{
    return send_text(c, p, len, 1);
}

uint64_t conn_queued_bytes(const struct conn *c)
{
    return c->out ? c->out->bytes : 0;
}

static uint64_t queue_bound(const struct conn *c)
{
    return c->loop->server->config->client_queue_max;
}

int conn_output_full(const struct conn *c)
{
    return c->out && c->out->bytes >= queue_bound(c);
}

static void on_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct loop *l = c->loop;
    struct outq_pool *pool = pool_of(l);
    if (pool && pool->n_conns < CONN_FREE_MAX) {
        c->next = pool->free_conns;
        pool->free_conns = c;
        pool->n_conns++;
    } else {
        free(c);
    }
    loop_conn_gone(l);
}

void conn_abort(struct conn *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    struct loop *l = c->loop;
    loop_timer_clear(l, c);
    if (c->session)
        session_free(c);
    if (c->out) {
        struct outq *q = c->out;
        for (uint32_t i = 0; i < q->count; i++)
            frame_unref(q->items[(q->head + i) % q->cap]);
        c->out = NULL;
        outq_put(l, q);
    }
    ws_reader_free(&c->ws);
    free(c->in);
    c->in = NULL;
    /* Unlink from the loop's lists; the dirty list is singly linked, so walk it
     * (rare: only connections aborted with output pending are on it). */
    if (c->dirty) {
        for (struct conn **pp = &l->dirty; *pp; pp = &(*pp)->dirty_next) {
            if (*pp == c) {
                *pp = c->dirty_next;
                l->ndirty--;
                break;
            }
        }
        c->dirty = 0;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    atomic_fetch_sub_explicit(&l->stats.connections, 1, memory_order_relaxed);
    uv_poll_stop(&c->poll);
    close(c->fd);
    uv_close((uv_handle_t *)&c->poll, on_closed);
}

void conn_on_io(uv_poll_t *h, int status, int events);

/* Poll for what the connection waits for: input unless paused, output while the
 * socket is full. */
static void update_poll(struct conn *c, int want_write)
{
    if (c->closed)
        return;
    c->want_write = (uint8_t)want_write;
    uint8_t events = (uint8_t)((c->paused ? 0 : UV_READABLE) | (want_write ? UV_WRITABLE : 0));
    if (events == c->events)
        return;
    c->events = events;
    if (events)
        uv_poll_start(&c->poll, events, conn_on_io);
    else
        uv_poll_stop(&c->poll);
}

static void consume(struct conn *c, uint8_t *p, size_t len);

/* Back-pressure: a connection whose output is over client_queue_max is not read
 * (its replies count against the bound like everything else) until the peer has
 * read half of it; what it had already sent waits in c->in. */
static void pause_input(struct conn *c)
{
    if (c->paused || c->state == CONN_CLOSING)
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
    if (c->in_len)
        consume(c, c->in, c->in_len);
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
        /* sendmsg rather than writev: the socket path skips the VFS layer (file
         * position lock, iovec import through vfs_writev), a few percent per call. */
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
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
        q->bytes -= left;
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
        shutdown(c->fd, SHUT_WR);
        if (c->peer_closed)
            conn_abort(c);
        else
            loop_timer_set(c->loop, c, CLOSE_GRACE_SEC);
    }
}

void conn_close_ws(struct conn *c, unsigned code, const char *reason)
{
    if (c->closed || c->close_sent)
        return;
    uint8_t fr[2 + 2 + 123];
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > 123)
        rlen = 123;
    size_t plen = code ? 2 + rlen : 0;
    size_t h = ws_frame_head_encode(fr, WS_OP_CLOSE, plen);
    if (code) {
        fr[h] = (uint8_t)(code >> 8);
        fr[h + 1] = (uint8_t)code;
        if (rlen)
            memcpy(fr + h + 2, reason, rlen);
    }
    send_bytes(c, fr, h + plen, 1);
    c->close_sent = 1;
    c->state = CONN_CLOSING;
    c->close_after = 1;
    /* Closing: input is read again, and discarded, until the peer closes. */
    if (c->paused) {
        c->paused = 0;
        update_poll(c, c->want_write);
    }
    mark_dirty(c);
    loop_timer_set(c->loop, c, CLOSE_GRACE_SEC + 1);
}

static int on_ws_message(void *ud, int opcode, uint8_t *p, size_t len)
{
    struct conn *c = ud;
    switch (opcode) {
    case WS_OP_TEXT:
        session_on_text(c, p, len);
        return c->close_sent || c->closed || conn_output_full(c);
    case WS_OP_BINARY:
        conn_close_ws(c, WS_CLOSE_UNSUPPORTED, "binary frames are not supported");
        return 1;
    case WS_OP_PING: {
        uint8_t fr[WS_FRAME_HEAD_MAX + 125];
        size_t h = ws_frame_head_encode(fr, WS_OP_PONG, len);
        memcpy(fr + h, p, len);
        send_bytes(c, fr, h + len, 1);
        return conn_output_full(c);
    }
    case WS_OP_PONG:
        return 0;
    case WS_OP_CLOSE: {
        /* RFC 6455 §5.5.1: answer with a close frame echoing the status code. */
        unsigned code = len >= 2 ? ((unsigned)p[0] << 8 | p[1]) : 0;
        conn_close_ws(c, code, NULL);
        return 1;
    }
    }
    return 0;
}

static const char *close_reason(int code)
{
    switch (code) {
    case WS_CLOSE_PROTOCOL:
        return "protocol error";
    case WS_CLOSE_INVALID_DATA:
        return "invalid UTF-8";
    case WS_CLOSE_TOO_BIG:
        return "message too big";
    default:
        return "";
    }
}

/* Process input; returns bytes consumed. */
static size_t process(struct conn *c, uint8_t *p, size_t len)
{
    size_t used = 0;
    if (c->state == CONN_HTTP) {
        used = http_serve(c, p, len);
        if (c->closed || c->state != CONN_WS)
            return c->state == CONN_CLOSING ? len : used;
    }
    if (c->state == CONN_WS) {
        const struct config *cfg = c->loop->server->config;
        struct ws_limits lim = {cfg->max_message_size, cfg->max_message_size};
        ssize_t r = ws_reader_feed(&c->ws, p + used, len - used, &lim, on_ws_message, c);
        if (r < 0) {
            conn_close_ws(c, (unsigned)-r, close_reason((int)-r));
            return len;
        }
        used += (size_t)r;
        if (c->state == CONN_CLOSING)
            return len;
        return used;
    }
    return len; /* CONN_CLOSING: input is drained and discarded */
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
        free(c->in);
        c->in = NULL;
        c->in_len = c->in_cap = 0;
    } else if (p == c->in) {
        memmove(c->in, c->in + used, rest);
        c->in_len = (uint32_t)rest;
    } else {
        uint32_t cap = 4096;
        while (cap < rest + 4096)
            cap *= 2;
        c->in = malloc(cap);
        if (c->in == NULL) {
            conn_abort(c);
            return;
        }
        memcpy(c->in, p + used, rest);
        c->in_len = (uint32_t)rest;
        c->in_cap = cap;
    }
    if (conn_output_full(c))
        pause_input(c);
}

static void conn_read(struct conn *c)
{
    struct loop *l = c->loop;
    uint8_t *dst;
    size_t room;
    if (c->paused || c->closed)
        return;
    if (c->in_len) {
        if (c->in_cap - c->in_len < 4096) {
            uint32_t cap = c->in_cap * 2;
            uint8_t *p = realloc(c->in, cap);
            if (p == NULL) {
                conn_abort(c);
                return;
            }
            c->in = p;
            c->in_cap = cap;
        }
        dst = c->in + c->in_len;
        room = c->in_cap - c->in_len;
    } else {
        dst = l->read_buf;
        room = LOOP_READ_BUF;
    }
    ssize_t n = read(c->fd, dst, room);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        c->peer_closed = 1;
        conn_abort(c);
        return;
    }
    uint8_t *p = c->in_len ? c->in : l->read_buf;
    size_t len = c->in_len ? c->in_len + (size_t)n : (size_t)n;
    consume(c, p, len);
}

void conn_read_now(struct conn *c)
{
    conn_read(c);
}

void conn_on_io(uv_poll_t *h, int status, int events)
{
    struct conn *c = h->data;
    if (status < 0) {
        conn_abort(c);
        return;
    }
    if (events & UV_WRITABLE)
        conn_flush(c);
    if (!c->closed && (events & UV_READABLE))
        conn_read(c);
}

struct conn *conn_new(struct loop *l, int fd)
{
    struct outq_pool *pool = pool_of(l);
    struct conn *c;
    if (pool && pool->free_conns) {
        c = pool->free_conns;
        pool->free_conns = c->next;
        pool->n_conns--;
        memset(c, 0, sizeof(*c));
    } else {
        c = calloc(1, sizeof(*c));
    }
    if (c == NULL || uv_poll_init(&l->uv, &c->poll, fd) != 0) {
        free(c);
        close(fd);
        return NULL;
    }
    c->poll.data = c;
    c->fd = fd;
    c->loop = l;
    c->state = CONN_HTTP;
    ws_reader_init(&c->ws, 0);
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    atomic_fetch_add_explicit(&l->stats.connections, 1, memory_order_relaxed);
    c->events = UV_READABLE;
    uv_poll_start(&c->poll, UV_READABLE, conn_on_io);
    loop_timer_set(l, c, HTTP_IDLE_SEC);
    return c;
}

void conn_on_timer(struct conn *c)
{
    switch (c->state) {
    case CONN_WS:
        session_on_timer(c);
        break;
    default:
        conn_abort(c);
        break;
    }
}
