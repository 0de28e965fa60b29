/* herald-bench worker: one libuv loop holding this process's share of WebSocket
 * client connections (handshake, connect, subscribe, count publications), plus the
 * churn cycle (connect, subscribe, publish through the API, receive, disconnect).
 * Receiving is cheap on purpose (issue 18): subscribed connections are read with recv()
 * from the worker's own epoll set into one 256 KiB buffer, server frames are parsed in
 * place, a publication's "t" and "s" are matched from the start of its message, and one
 * clock reading per read times every publication in it; anything unusual goes through
 * ws/frame.h's reader and the general path. */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "api.h"
#include "bench.h"
#include "core/buf.h"
#include "ws/frame.h"

enum conn_state {
    CS_FREE,
    CS_CONNECTING,
    CS_HANDSHAKE,
    CS_CONNECT_SENT,
    CS_SUBSCRIBE_SENT,
    CS_SUBSCRIBED,
    CS_CLOSING, /* close frame sent or uv_close pending */
};

/* One read() takes up to this much: under a flood a read holds hundreds of frames, parsed
 * in place; only the partial frame at its end is copied (to the connection's tail). */
#define RBUF_SIZE (256u * 1024u)
/* A tail longer than this (a frame over 128 KiB in progress) is read into directly. */
#define TAIL_INLINE_MAX (RBUF_SIZE / 2)
#define HANDSHAKE_TIMEOUT_NS (15ull * 1000000000ull)

struct wconn {
    uv_tcp_t tcp;
    struct worker *wk;
    uint32_t gidx; /* global connection index; churn: cycle number */
    uint32_t chan; /* index into the parent's per-channel counts */
    uint8_t state;
    uint8_t subscribed; /* reached CS_SUBSCRIBED at some point */
    uint8_t counted;    /* its failure/loss already counted */
    uint8_t need_pub;   /* churn: subscribed, its publication not yet sent */
    uint8_t direct;     /* read with recv() from the worker's epoll set, not by libuv */
    struct ws_reader rd;
    uint8_t *tail; /* unparsed bytes (a partial frame or handshake reply), copied out of rbuf */
    uint32_t tail_len;
    uint32_t tail_cap;
    char *accept; /* expected Sec-WebSocket-Accept while handshaking */
    uint64_t t_start;
    uint32_t high;   /* highest sequence number seen + 1, 0 = none yet */
    uint64_t window; /* bit k: sequence high-2-k was seen */
    uint32_t delivered;
    uint32_t dup;
    uint32_t ooo;
};

struct worker {
    const struct bench_opts *o;
    uint32_t w;
    uv_loop_t *loop;
    uv_pipe_t ctl;
    struct buf ctl_in;
    uv_timer_t tick;
    uv_timer_t pace;
    int ep;           /* epoll set of the subscribed connections read directly (-1: none) */
    uv_poll_t ep_poll; /* the epoll set's readiness, in the libuv loop */
    uv_idle_t spin;    /* --spin: polls the set every loop turn, so the loop never sleeps */
    uint64_t spin_t;   /* this thread's CPU clock when the last turn polled */
    int spin_empty;    /* the last turn found nothing: the time since was idle */
    struct wconn *conns;
    uint32_t nconns;
    uint32_t next; /* next connection to start */
    uint32_t pending;
    uint64_t connected;
    uint64_t t_begin;
    uint64_t t_go;
    uint64_t t_win0; /* the parent's GO: latency windows count from here */
    uint32_t nwin;
    uint32_t *win; /* nwin * WIN_BUCKETS latency counts by publication window */
    uint64_t cpu0;
    int ready_sent;
    int go;
    int halted;
    int stopping;
    int in_pump;
    struct api_client *api; /* churn only */
    uint64_t cycles;        /* churn cycles started */
    uint64_t rng;
    uint64_t t_progress; /* last progress message */
    uint64_t now; /* the clock at the current read: every publication it holds is timed by it */
    struct bench_stats st;
    uint8_t rbuf[RBUF_SIZE];
};

static const struct ws_limits limits = {16u << 20, 16u << 20};

static void conn_start(struct worker *wk, struct wconn *c, uint32_t gidx);
static void pump(struct worker *wk);

static uint64_t cpu_ns_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

static uint32_t rnd32(struct worker *wk)
{
    wk->rng ^= wk->rng << 13;
    wk->rng ^= wk->rng >> 7;
    wk->rng ^= wk->rng << 17;
    return (uint32_t)(wk->rng >> 16);
}

static void channel_name(const struct worker *wk, const struct wconn *c, char *out, size_t cap)
{
    if (wk->o->scenario == BENCH_FANOUT)
        snprintf(out, cap, "%s", wk->o->channel);
    else
        snprintf(out, cap, "%s-%u", wk->o->channel, c->chan);
}

/* ---- control channel to the parent ---- */

struct ctl_write {
    uv_write_t req;
    int exit_after;
    uint8_t data[];
};

static void on_ctl_written(uv_write_t *req, int status)
{
    struct ctl_write *cw = (struct ctl_write *)req;
    int ex = cw->exit_after;
    free(cw);
    if (ex)
        _exit(0); /* the kernel closes thousands of sockets faster than uv_close */
}

static void ctl_send(struct worker *wk, uint32_t type, const void *p, uint32_t len, int exit_after)
{
    struct ctl_write *cw = malloc(sizeof(*cw) + sizeof(struct bench_msg) + len);
    if (cw == NULL)
        _exit(3);
    struct bench_msg m = {type, len};
    memcpy(cw->data, &m, sizeof(m));
    memcpy(cw->data + sizeof(m), p, len);
    cw->exit_after = exit_after;
    uv_buf_t b = uv_buf_init((char *)cw->data, (unsigned)(sizeof(m) + len));
    if (uv_write(&cw->req, (uv_stream_t *)&wk->ctl, &b, 1, on_ctl_written) != 0)
        _exit(3);
}

static void progress_fill(struct worker *wk, struct bench_progress *p)
{
    memset(p, 0, sizeof(*p));
    p->connected = wk->connected;
    p->subscribed = wk->st.subscribed;
    p->failed = wk->st.failed;
    p->delivered = wk->st.delivered;
    p->completed = wk->st.completed;
    p->connect_seconds = wk->st.connect_seconds;
}

/* while publications arrive, progress goes to the parent this often (--max-lag feedback) */
#define PROGRESS_NS 10000000ull

static void send_progress(struct worker *wk, uint64_t now)
{
    struct bench_progress p;
    progress_fill(wk, &p);
    wk->t_progress = now;
    ctl_send(wk, MSG_PROGRESS, &p, sizeof(p), 0);
}

static void check_ready(struct worker *wk)
{
    if (wk->ready_sent)
        return;
    if (wk->o->scenario == BENCH_CHURN) {
        if (bench_api_ready(wk->api) == 0)
            return;
    } else if (wk->st.subscribed + wk->st.failed < wk->nconns) {
        return;
    }
    wk->ready_sent = 1;
    wk->st.connect_seconds = (double)(bench_now_ns() - wk->t_begin) / 1e9;
    struct bench_progress p;
    progress_fill(wk, &p);
    ctl_send(wk, MSG_READY, &p, sizeof(p), 0);
}

/* ---- connection teardown ---- */

static void on_conn_closed(uv_handle_t *h)
{
    struct wconn *c = h->data;
    struct worker *wk = c->wk;
    ws_reader_free(&c->rd);
    free(c->tail);
    c->tail = NULL;
    c->tail_len = c->tail_cap = 0;
    free(c->accept);
    c->accept = NULL;
    if (wk->o->scenario == BENCH_CHURN) {
        c->state = CS_FREE;
        pump(wk);
    }
}

static void conn_close_now(struct wconn *c)
{
    c->state = CS_CLOSING;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* The connection ends with an error called why: before it subscribed this is a
 * failed connection, after it a disconnection (its losses are counted at STOP). */
static void conn_error(struct wconn *c, const char *why)
{
    struct worker *wk = c->wk;
    if (c->state == CS_CLOSING || c->state == CS_FREE)
        return;
    if (!wk->stopping)
        bench_err_add(wk->st.errs, why, 1);
    if (!c->subscribed && !c->counted) {
        c->counted = 1;
        wk->st.failed++;
        if (wk->pending > 0)
            wk->pending--;
    }
    conn_close_now(c);
    if (wk->o->scenario != BENCH_CHURN) {
        pump(wk);
        check_ready(wk);
    }
}

/* ---- writing frames ---- */

struct frame_write {
    uv_write_t req;
    struct wconn *c;
    int close_after;
    uint8_t data[];
};

static void on_frame_written(uv_write_t *req, int status)
{
    struct frame_write *fw = (struct frame_write *)req;
    struct wconn *c = fw->c;
    int close_after = fw->close_after;
    free(fw);
    if (status == UV_ECANCELED)
        return;
    if (close_after && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static int send_frame(struct wconn *c, int opcode, const void *p, size_t len, int close_after)
{
    struct frame_write *fw = malloc(sizeof(*fw) + WS_FRAME_HEAD_MAX + len);
    if (fw == NULL)
        return -1;
    uint32_t m = rnd32(c->wk);
    uint8_t mask[4] = {(uint8_t)m, (uint8_t)(m >> 8), (uint8_t)(m >> 16), (uint8_t)(m >> 24)};
    size_t hl = ws_frame_head_encode_masked(fw->data, opcode, len, mask);
    memcpy(fw->data + hl, p, len);
    ws_mask(fw->data + hl, len, mask, 0);
    fw->c = c;
    fw->close_after = close_after;
    uv_buf_t b = uv_buf_init((char *)fw->data, (unsigned)(hl + len));
    if (uv_write(&fw->req, (uv_stream_t *)&c->tcp, &b, 1, on_frame_written) != 0) {
        free(fw);
        return -1;
    }
    return 0;
}

/* Send a close frame with code, then close once it is written. */
static void conn_goodbye(struct wconn *c, unsigned code)
{
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    c->state = CS_CLOSING;
    if (send_frame(c, WS_OP_CLOSE, p, 2, 1) != 0 && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* ---- protocol ---- */

static void send_connect(struct wconn *c)
{
    const struct bench_opts *o = c->wk->o;
    char cmd[1024];
    int n;
    if (o->anonymous) {
        n = snprintf(cmd, sizeof(cmd), "{\"id\":1,\"connect\":{\"name\":\"herald-bench\"}}");
    } else {
        char user[32], tok[700];
        snprintf(user, sizeof(user), "bench-%u", c->gidx);
        if (bench_token(o->secret, user, tok, sizeof(tok)) < 0) {
            conn_error(c, "token_too_long");
            return;
        }
        n = snprintf(cmd, sizeof(cmd),
                     "{\"id\":1,\"connect\":{\"token\":\"%s\",\"name\":\"herald-bench\"}}", tok);
    }
    c->state = CS_CONNECT_SENT;
    if (send_frame(c, WS_OP_TEXT, cmd, (size_t)n, 0) != 0)
        conn_error(c, "write_failed");
}

static void send_subscribe(struct wconn *c)
{
    char ch[300], cmd[400];
    channel_name(c->wk, c, ch, sizeof(ch));
    int n = snprintf(cmd, sizeof(cmd), "{\"id\":2,\"subscribe\":{\"channel\":\"%s\"}}", ch);
    c->state = CS_SUBSCRIBE_SENT;
    if (send_frame(c, WS_OP_TEXT, cmd, (size_t)n, 0) != 0)
        conn_error(c, "write_failed");
}

static int scan_u64(const uint8_t *p, size_t len, const char *key, uint64_t *out)
{
    size_t kl = strlen(key);
    const uint8_t *k = memmem(p, len, key, kl);
    if (k == NULL)
        return -1;
    const uint8_t *q = k + kl;
    const uint8_t *end = p + len;
    while (q < end && *q == ' ')
        q++;
    if (q >= end || *q < '0' || *q > '9')
        return -1;
    uint64_t v = 0;
    for (; q < end && *q >= '0' && *q <= '9'; q++)
        v = v * 10 + (uint64_t)(*q - '0');
    *out = v;
    return 0;
}

/* Churn: publish to the channel of every subscribed connection waiting for it, while
 * the API has room (the rest wait for the next pace tick). */
static void churn_publish(struct worker *wk)
{
    struct buf body = BUF_INIT;
    int sent = 0;
    for (uint32_t i = 0; i < wk->nconns && bench_api_can_send(wk->api, 0); i++) {
        struct wconn *c = &wk->conns[i];
        if (!c->need_pub || c->state != CS_SUBSCRIBED)
            continue;
        c->need_pub = 0;
        char ch[300];
        channel_name(wk, c, ch, sizeof(ch));
        uint64_t now = bench_now_ns();
        buf_reset(&body);
        bench_pub_body(&body, ch, now, 0, wk->o->size);
        if (body.oom ||
            bench_api_post(wk->api, 0, "/api/publish", body.p, body.len, c->gidx, now) != 0) {
            wk->st.publish_errors++;
            bench_err_add(wk->st.errs, "publish_not_sent", 1);
            continue;
        }
        sent = 1;
    }
    if (sent)
        bench_api_flush(wk->api);
    buf_free(&body);
}

static void go_direct(struct wconn *c);

static void on_subscribed(struct wconn *c)
{
    struct worker *wk = c->wk;
    c->state = CS_SUBSCRIBED;
    c->subscribed = 1;
    wk->st.subscribed++;
    if (wk->pending > 0)
        wk->pending--;
    bench_hist_record(&wk->st.handshake, bench_now_ns() - c->t_start);
    go_direct(c);
    if (wk->o->scenario == BENCH_CHURN) {
        c->need_pub = 1;
        churn_publish(wk);
    } else {
        pump(wk);
        check_ready(wk);
    }
}

/* Publication seq of connection c, timed t by the publisher, received at wk->now: counted
 * once for loss, duplicates and order (exact: the last 64 sequence numbers are remembered). */
static void count_publication(struct wconn *c, uint64_t t, uint64_t s)
{
    struct worker *wk = c->wk;
    uint64_t now = wk->now;
    uint64_t lat = now > t ? now - t : 0;
    bench_hist_record(&wk->st.latency, lat);
    if (wk->win != NULL) {
        uint64_t k = t > wk->t_win0 ? (t - wk->t_win0) / WIN_NS : 0;
        if (k >= wk->nwin)
            k = wk->nwin - 1;
        wk->win[k * WIN_BUCKETS + bench_win_bucket(lat)]++;
    }
    wk->st.t_last_delivery = now;
    uint32_t seq = (uint32_t)s;
    if (seq >= c->high) {
        uint32_t shift = seq + 1 - c->high;
        if (c->high == 0)
            c->window = 0;
        else if (shift >= 64)
            c->window = shift == 64 ? 1ull << 63 : 0;
        else
            c->window = c->window << shift | 1ull << (shift - 1);
        c->high = seq + 1;
    } else if (seq == c->high - 1) {
        c->dup++;
        wk->st.duplicated++;
        return;
    } else {
        uint32_t k = c->high - 2 - seq;
        if (k < 64) {
            if (c->window >> k & 1) {
                c->dup++;
                wk->st.duplicated++;
                return;
            }
            c->window |= 1ull << k;
        }
        c->ooo++;
        wk->st.out_of_order++;
    }
    c->delivered++;
    wk->st.delivered++;
    /* under a flood one loop iteration can last seconds (libuv reads every ready
     * socket dry): report progress from here so the parent's drain sees it */
    if (now - wk->t_progress >= PROGRESS_NS)
        send_progress(wk, now);
    if (wk->o->scenario == BENCH_CHURN) {
        wk->st.completed++;
        conn_goodbye(c, 1000);
    }
}

static void on_publication(struct wconn *c, const uint8_t *p, size_t len)
{
    uint64_t t, s;
    if (scan_u64(p, len, "\"t\":", &t) != 0 || scan_u64(p, len, "\"s\":", &s) != 0) {
        bench_err_add(c->wk->st.errs, "publication_unparsed", 1);
        return;
    }
    count_publication(c, t, s);
}

/* Digits at *q (below end) as a number; *q moves past them. -1 if there are none. */
static inline int digits(const uint8_t **q, const uint8_t *end, uint64_t *out)
{
    const uint8_t *d = *q;
    uint64_t v = 0;
    while (d < end && (unsigned)(*d - '0') < 10)
        v = v * 10 + (uint64_t)(*d++ - '0');
    if (d == *q)
        return -1;
    *q = d;
    *out = v;
    return 0;
}

static const char push_head[] = "{\"push\":{\"channel\":\"";
static const char pub_head[] = ",\"pub\":{\"data\":{\"t\":";

/* The publication push herald (and herald-ceiling) frame for data the bench published:
 * {"push":{"channel":"NAME","pub":{"data":{"t":T,"s":S,... Matched from the start of the
 * message, no search: returns the byte after S's digits with *t, *s and *data (the data's
 * "{") set, or NULL when p is anything else (handled by the general path). */
static const uint8_t *pub_fast(const uint8_t *p, const uint8_t *end, uint64_t *t, uint64_t *s,
                               const uint8_t **data)
{
    const size_t ph = sizeof(push_head) - 1, pb = sizeof(pub_head) - 1;
    if ((size_t)(end - p) < ph + pb + 8 || memcmp(p, push_head, ph) != 0)
        return NULL;
    const uint8_t *q = memchr(p + ph, '"', (size_t)(end - p - ph)); /* the name's end */
    if (q == NULL || (size_t)(end - q) < 1 + pb + 6 || memcmp(q + 1, pub_head, pb) != 0)
        return NULL;
    q += 1 + pb;
    *data = q - 5; /* {"t": */
    if (digits(&q, end, t) != 0 || end - q < 6 || memcmp(q, ",\"s\":", 5) != 0)
        return NULL;
    q += 5;
    if (digits(&q, end, s) != 0)
        return NULL;
    return q;
}

static void on_reply(struct wconn *c, const uint8_t *p, size_t len)
{
    uint64_t id = 0;
    scan_u64(p, len, "\"id\":", &id);
    if (memmem(p, len, "\"error\":", 8) != NULL) {
        uint64_t code = 0;
        scan_u64(p, len, "\"code\":", &code);
        char name[40];
        snprintf(name, sizeof(name), "error_%llu", (unsigned long long)code);
        if (c->state == CS_CONNECT_SENT || c->state == CS_SUBSCRIBE_SENT)
            conn_error(c, name);
        else
            bench_err_add(c->wk->st.errs, name, 1);
        return;
    }
    if (id == 1 && c->state == CS_CONNECT_SENT)
        send_subscribe(c);
    else if (id == 2 && c->state == CS_SUBSCRIBE_SENT)
        on_subscribed(c);
}

static void on_line(struct wconn *c, const uint8_t *p, size_t len)
{
    if (len == 2 && p[0] == '{' && p[1] == '}') {
        if (send_frame(c, WS_OP_TEXT, "{}", 2, 0) != 0)
            conn_error(c, "write_failed");
        return;
    }
    if (len > 6 && memcmp(p, "{\"id\":", 6) == 0) {
        on_reply(c, p, len);
        return;
    }
    if (memmem(p, len, "\"pub\":", 6) != NULL) {
        on_publication(c, p, len);
        return;
    }
    if (memmem(p, len, "\"disconnect\":", 13) != NULL)
        bench_err_add(c->wk->st.errs, "push_disconnect", 1);
    else if (memmem(p, len, "\"id\":", 5) != NULL)
        on_reply(c, p, len);
}

/* A text message: newline-separated replies and pushes, publications on the fast path. */
static void on_text(struct wconn *c, const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len;
    size_t size = c->wk->o->size;
    while (p < end && c->state != CS_CLOSING) {
        uint64_t t, s;
        const uint8_t *d = NULL;
        const uint8_t *q = pub_fast(p, end, &t, &s, &d);
        const uint8_t *le;
        /* The message is exactly one publication as the bench wrote it (bench_pub_body: the
         * data {"t":T,"s":S,"p":"x.."} of max(size, fixed) bytes, then "}}}" closing the
         * push) when it ends there: no newline to look for. Anything else is searched. */
        size_t dlen = q != NULL ? (size_t)(q - d) + 8 : 0;
        if (q != NULL && (dlen < size ? size : dlen) + 3 == (size_t)(end - d) &&
            memcmp(end - 5, "\"}}}}", 5) == 0) {
            le = end;
        } else {
            const uint8_t *nl = memchr(q ? q : p, '\n', (size_t)(end - (q ? q : p)));
            le = nl ? nl : end;
        }
        if (q != NULL)
            count_publication(c, t, s);
        else if (le > p)
            on_line(c, p, (size_t)(le - p));
        p = le + 1;
    }
}

static int on_message(void *ud, int opcode, uint8_t *p, size_t len)
{
    struct wconn *c = ud;
    switch (opcode) {
    case WS_OP_TEXT:
        on_text(c, p, len);
        break;
    case WS_OP_BINARY:
        conn_error(c, "binary_frame");
        break;
    case WS_OP_PING:
        if (send_frame(c, WS_OP_PONG, p, len, 0) != 0)
            conn_error(c, "write_failed");
        break;
    case WS_OP_CLOSE: {
        unsigned code = len >= 2 ? (unsigned)p[0] << 8 | p[1] : 1005;
        char name[40];
        snprintf(name, sizeof(name), "close_%u", code);
        int churn_done = c->wk->o->scenario == BENCH_CHURN && c->state == CS_CLOSING;
        if (!churn_done && c->state != CS_CLOSING) {
            conn_error(c, name); /* marks CS_CLOSING and closes */
        } else if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
            uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        }
        return 1;
    }
    default:
        break;
    }
    return c->state == CS_CLOSING;
}

/* ---- reading ---- */

/* Keep p[0..n) (the unparsed end of a read: a partial frame) in c->tail. */
static void keep_tail(struct wconn *c, const uint8_t *p, size_t n)
{
    if (n == 0) {
        c->tail_len = 0;
        if (c->tail_cap > 4096) { /* a large frame's buffer goes; small ones stay */
            free(c->tail);
            c->tail = NULL;
            c->tail_cap = 0;
        }
        return;
    }
    if (c->tail != NULL && p >= c->tail && p < c->tail + c->tail_cap) {
        memmove(c->tail, p, n);
    } else {
        if (c->tail_cap < n) {
            size_t cap = n < 512 ? 512 : n;
            uint8_t *t = realloc(c->tail, cap);
            if (t == NULL) {
                conn_error(c, "out_of_memory");
                return;
            }
            c->tail = t;
            c->tail_cap = (uint32_t)cap;
        }
        memcpy(c->tail, p, n);
    }
    c->tail_len = (uint32_t)n;
}

/* Reads go to the worker's rbuf, after a copy of the connection's tail; a tail too long for
 * that (a large frame arriving) is read into directly, grown. */
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct wconn *c = h->data;
    if (c->tail_len <= TAIL_INLINE_MAX) {
        if (c->tail_len > 0)
            memcpy(c->wk->rbuf, c->tail, c->tail_len);
        b->base = (char *)c->wk->rbuf + c->tail_len;
        b->len = RBUF_SIZE - c->tail_len;
        return;
    }
    if (c->tail_cap - c->tail_len < RBUF_SIZE / 4) {
        size_t cap = (size_t)c->tail_cap * 2;
        if (cap < (size_t)c->tail_len + RBUF_SIZE)
            cap = (size_t)c->tail_len + RBUF_SIZE;
        uint8_t *t = realloc(c->tail, cap);
        if (t == NULL) {
            b->base = NULL;
            b->len = 0;
            return;
        }
        c->tail = t;
        c->tail_cap = (uint32_t)cap;
    }
    b->base = (char *)c->tail + c->tail_len;
    b->len = c->tail_cap - c->tail_len;
}

static void frame_error(struct wconn *c, int code)
{
    char name[40];
    snprintf(name, sizeof(name), "ws_protocol_%d", code);
    conn_error(c, name);
}

/* Server frames in p[0..len), in place: an unfragmented unmasked text frame (all herald
 * sends for publications) is handled where it lies; any other frame (control, fragment,
 * or one breaking the rules) goes whole through ws_reader, which checks it and reassembles.
 * Returns the bytes consumed (complete frames), or -1 once the connection is closing. */
static ssize_t feed_frames(struct wconn *c, uint8_t *p, size_t len)
{
    size_t off = 0;
    while (len - off >= 2) {
        uint8_t *f = p + off;
        size_t avail = len - off;
        uint64_t plen = f[1] & 0x7f;
        size_t head = 2;
        if (plen == 126) {
            if (avail < 4)
                break;
            plen = (uint64_t)f[2] << 8 | f[3];
            head = 4;
        } else if (plen == 127) {
            if (avail < 10)
                break;
            plen = 0;
            for (int i = 2; i < 10; i++)
                plen = plen << 8 | f[i];
            head = 10;
        }
        if (f[1] & 0x80)
            head += 4; /* masked: ws_reader refuses it below */
        if (plen > limits.max_frame) {
            frame_error(c, WS_CLOSE_TOO_BIG);
            return -1;
        }
        if (avail < head || avail - head < plen)
            break;
        size_t flen = head + (size_t)plen;
        if (f[0] == (0x80 | WS_OP_TEXT) && !(f[1] & 0x80) && c->rd.msg_opcode == 0) {
            on_text(c, f + head, (size_t)plen);
        } else {
            ssize_t n = ws_reader_feed(&c->rd, f, flen, &limits, on_message, c);
            if (n < 0 && c->state != CS_CLOSING) {
                frame_error(c, (int)-n);
                return -1;
            }
        }
        if (c->state == CS_CLOSING)
            return -1;
        off += flen;
    }
    return (ssize_t)off;
}

static int handshake_reply(struct wconn *c, const uint8_t *p, size_t head_len)
{
    if (head_len < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0) {
        conn_error(c, "handshake_garbled");
        return -1;
    }
    if (memcmp(p + 9, "101", 3) != 0) {
        char name[40];
        snprintf(name, sizeof(name), "http_%.3s", (const char *)p + 9);
        conn_error(c, name);
        return -1;
    }
    const uint8_t *a = NULL;
    for (const uint8_t *q = p; q + 22 < p + head_len; q++) {
        if ((*q == 's' || *q == 'S') &&
            strncasecmp((const char *)q, "sec-websocket-accept:", 21) == 0) {
            a = q + 21;
            break;
        }
    }
    while (a != NULL && a < p + head_len && *a == ' ')
        a++;
    if (a == NULL || a + 28 > p + head_len || memcmp(a, c->accept, 28) != 0) {
        conn_error(c, "handshake_bad_accept");
        return -1;
    }
    free(c->accept);
    c->accept = NULL;
    c->wk->connected++;
    return 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct wconn *c = s->data;
    struct worker *wk = c->wk;
    if (nread == 0)
        return;
    if (c->state == CS_CLOSING)
        return;
    if (nread < 0) {
        if (nread == UV_EOF) {
            conn_error(c, "eof");
        } else {
            char name[40];
            snprintf(name, sizeof(name), "read_%s", uv_err_name((int)nread));
            conn_error(c, name);
        }
        return;
    }
    uint8_t *p;
    size_t len;
    if (b->base >= (char *)wk->rbuf && b->base < (char *)wk->rbuf + RBUF_SIZE) {
        p = wk->rbuf; /* on_alloc copied the tail in front */
        len = c->tail_len + (size_t)nread;
    } else {
        p = c->tail;
        len = c->tail_len + (size_t)nread;
    }
    wk->now = bench_now_ns(); /* one clock reading per read, for every publication in it */
    if (wk->go) {
        wk->st.reads++;
        wk->st.read_bytes += (uint64_t)nread;
    }
    size_t off = 0;
    if (c->state == CS_HANDSHAKE) {
        const uint8_t *end = memmem(p, len, "\r\n\r\n", 4);
        if (end == NULL) {
            if (len > 16384)
                conn_error(c, "handshake_too_long");
            else
                keep_tail(c, p, len);
            return;
        }
        off = (size_t)(end - p) + 4;
        if (handshake_reply(c, p, off) != 0)
            return;
        send_connect(c);
        if (c->state == CS_CLOSING)
            return;
    }
    if (off < len) {
        ssize_t n = feed_frames(c, p + off, len - off);
        if (n < 0)
            return;
        off += (size_t)n;
    }
    keep_tail(c, p + off, len - off);
}

/* ---- direct reads ---- */

/* A subscribed connection (fanout, channels) leaves libuv's reading for the worker's own
 * epoll set, read with recv(): no read() layers (vfs, file position) and no callbacks per
 * read. Writes (pongs, close frames) stay libuv's. */
static void go_direct(struct wconn *c)
{
    struct worker *wk = c->wk;
    uv_os_fd_t fd;
    if (wk->ep < 0 || uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (epoll_ctl(wk->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        return;
    }
    c->direct = 1;
}

/* Read c until the socket is empty (at most 4 full buffers, then the others get a turn).
 * Same buffers and parsing as libuv's path (on_alloc, on_read). */
static void direct_read(struct wconn *c)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return;
    for (int i = 0; i < 4 && c->state != CS_CLOSING; i++) {
        uv_buf_t b;
        on_alloc((uv_handle_t *)&c->tcp, RBUF_SIZE, &b);
        if (b.base == NULL) {
            conn_error(c, "out_of_memory");
            return;
        }
        ssize_t r = recv(fd, b.base, b.len, 0);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        ssize_t n = r > 0 ? r : r == 0 ? UV_EOF : uv_translate_sys_error(errno);
        on_read((uv_stream_t *)&c->tcp, n, &b);
        if (r <= 0 || (size_t)r < b.len)
            return;
    }
}

/* Read the ready connections of the set; how many were ready. */
static int ep_drain(struct worker *wk)
{
    static struct epoll_event evs[512];
    int ready = 0;
    for (int round = 0; round < 8; round++) {
        int n = epoll_wait(wk->ep, evs, 512, 0);
        for (int i = 0; i < n; i++) {
            struct wconn *c = evs[i].data.ptr;
            if (c->direct && c->state != CS_CLOSING) /* closed: its fd left the set */
                direct_read(c);
        }
        ready += n > 0 ? n : 0;
        if (n < 512)
            break;
    }
    return ready;
}

static void on_ep_ready(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    ep_drain(h->data);
}

/* Each loop turn (libuv polls with no timeout while an idle handle runs). A turn that
 * found nothing to read counts as idle until the next one, so the CPU the worker burns
 * waiting is told apart from the CPU it needs. The thread's own CPU clock: the wall
 * clock would count the time the publisher had the core. */
static void on_spin(uv_idle_t *h)
{
    struct worker *wk = h->data;
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    uint64_t t = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    if (wk->spin_empty && wk->go && !wk->stopping)
        wk->st.spin_idle_ns += t - wk->spin_t;
    wk->spin_t = t;
    wk->spin_empty = ep_drain(wk) == 0;
}

/* ---- connecting ---- */

static void on_tcp_connected(uv_connect_t *req, int status)
{
    struct wconn *c = req->data;
    free(req);
    if (c->state != CS_CONNECTING)
        return;
    if (status != 0) {
        char name[40];
        snprintf(name, sizeof(name), "tcp_%s", uv_err_name(status));
        conn_error(c, name);
        return;
    }
    char key[25];
    c->accept = malloc(29);
    if (c->accept == NULL) {
        conn_error(c, "out_of_memory");
        return;
    }
    bench_ws_key(key, c->accept);
    const struct bench_opts *o = c->wk->o;
    char *req_text = malloc(512 + strlen(o->ws_path));
    if (req_text == NULL) {
        conn_error(c, "out_of_memory");
        return;
    }
    int n = sprintf(req_text,
                    "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n",
                    o->ws_path, o->ws_host, o->ws_port, key);
    c->state = CS_HANDSHAKE;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_buf_t b = uv_buf_init(req_text, (unsigned)n);
    /* the request is small: uv_try_write sends it at once on a fresh socket */
    int w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    free(req_text);
    if (w != n) {
        conn_error(c, "handshake_write");
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void conn_start(struct worker *wk, struct wconn *c, uint32_t gidx)
{
    const struct bench_opts *o = wk->o;
    memset(c, 0, sizeof(*c));
    c->wk = wk;
    c->gidx = gidx;
    c->chan = o->scenario == BENCH_CHANNELS ? gidx / o->per_channel : 0;
    c->t_start = bench_now_ns();
    c->tcp.data = c;
    ws_reader_init(&c->rd, 1);
    wk->pending++;
    c->state = CS_CONNECTING;
    if (uv_tcp_init_ex(wk->loop, &c->tcp, AF_INET) != 0) {
        c->state = CS_CLOSING; /* no handle to close */
        c->counted = 1;
        wk->st.failed++;
        wk->pending--;
        bench_err_add(wk->st.errs, "socket_failed", 1);
        if (o->scenario == BENCH_CHURN)
            c->state = CS_FREE;
        return;
    }
    struct sockaddr_in dst;
    uv_ip4_addr(o->ws_host, o->ws_port, &dst);
    if (o->sources > 1) {
        uv_os_fd_t fd;
        int one = 1;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in src;
        char ip[32];
        snprintf(ip, sizeof(ip), "127.0.0.%u", 1 + gidx % o->sources);
        uv_ip4_addr(ip, 0, &src);
        int r = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0);
        if (r != 0) {
            char name[40];
            snprintf(name, sizeof(name), "bind_%s", uv_err_name(r));
            conn_error(c, name);
            return;
        }
    }
    uv_connect_t *req = malloc(sizeof(*req));
    if (req == NULL) {
        conn_error(c, "out_of_memory");
        return;
    }
    req->data = c;
    int r = uv_tcp_connect(req, &c->tcp, (const struct sockaddr *)&dst, on_tcp_connected);
    if (r != 0) {
        free(req);
        char name[40];
        snprintf(name, sizeof(name), "tcp_%s", uv_err_name(r));
        conn_error(c, name);
    }
}

/* Start connections while fewer than connect_concurrency handshakes are in flight
 * (churn: while the rate allows and a slot is free). */
static void pump(struct worker *wk)
{
    const struct bench_opts *o = wk->o;
    if (wk->stopping)
        return;
    if (o->scenario != BENCH_CHURN) {
        if (wk->in_pump)
            return; /* a connection failed while starting: the outer loop goes on */
        wk->in_pump = 1;
        while (wk->next < wk->nconns && wk->pending < o->connect_concurrency) {
            uint32_t i = wk->next++;
            conn_start(wk, &wk->conns[i], o->workers * i + wk->w);
        }
        wk->in_pump = 0;
        return;
    }
    if (!wk->go || wk->halted)
        return;
    double per_worker = o->rate / o->workers;
    uint64_t target = UINT64_MAX;
    if (per_worker > 0)
        target = (uint64_t)(per_worker * (double)(bench_now_ns() - wk->t_go) / 1e9) + 1;
    for (uint32_t i = 0; i < wk->nconns && wk->cycles < target; i++) {
        struct wconn *c = &wk->conns[i];
        if (c->state != CS_FREE)
            continue;
        uint32_t gidx = (uint32_t)(wk->cycles * o->workers + wk->w);
        wk->cycles++;
        wk->st.assigned++;
        conn_start(wk, c, gidx);
    }
}

/* ---- churn publications ---- */

static void on_api_reply(void *ud, uint32_t tag, int status, const uint8_t *body, size_t len,
                         uint64_t sent_ns)
{
    struct worker *wk = ud;
    if (status == 200 && memmem(body, len, "\"error\"", 7) == NULL) {
        wk->st.published++;
        wk->st.expected++;
        bench_hist_record(&wk->st.api_latency, bench_now_ns() - sent_ns);
        return;
    }
    wk->st.publish_errors++;
    char name[40];
    uint64_t code = 0;
    if (status == 200 && scan_u64(body, len, "\"code\":", &code) == 0)
        snprintf(name, sizeof(name), "api_error_%llu", (unsigned long long)code);
    else
        snprintf(name, sizeof(name), "api_http_%d", status);
    bench_err_add(wk->st.errs, name, 1);
}

/* ---- timers and parent messages ---- */

static void on_tick(uv_timer_t *t)
{
    struct worker *wk = t->data;
    uint64_t now = bench_now_ns();
    if (!wk->stopping) {
        for (uint32_t i = 0; i < wk->nconns; i++) {
            struct wconn *c = &wk->conns[i];
            if (c->state >= CS_CONNECTING && c->state < CS_SUBSCRIBED &&
                now - c->t_start > HANDSHAKE_TIMEOUT_NS)
                conn_error(c, "handshake_timeout");
        }
    }
    send_progress(wk, now);
}

static void on_pace(uv_timer_t *t)
{
    struct worker *wk = t->data;
    check_ready(wk);
    pump(wk);
    if (wk->go && !wk->stopping)
        churn_publish(wk);
}

static void finish(struct worker *wk, const uint32_t *counts, uint32_t n)
{
    struct bench_stats *st = &wk->st;
    wk->stopping = 1;
    if (wk->o->scenario == BENCH_CHURN) {
        for (uint32_t i = 0; i < wk->nconns; i++) {
            if (wk->conns[i].state != CS_FREE && wk->conns[i].state != CS_CLOSING)
                bench_err_add(st->errs, "churn_unfinished", 1);
        }
        st->surplus = st->delivered > st->expected ? st->delivered - st->expected : 0;
    } else {
        st->expected = 0;
        st->surplus = 0;
        for (uint32_t i = 0; i < wk->nconns; i++) {
            struct wconn *c = &wk->conns[i];
            if (!c->subscribed)
                continue;
            uint64_t e = c->chan < n ? counts[c->chan] : 0;
            st->expected += e;
            if (c->delivered > e)
                st->surplus += c->delivered - e;
        }
        st->assigned = wk->nconns;
    }
    st->cpu_ns = wk->go ? cpu_ns_self() - wk->cpu0 : 0;
    if (wk->win != NULL)
        ctl_send(wk, MSG_WINDOWS, wk->win, wk->nwin * WIN_BUCKETS * 4, 0);
    ctl_send(wk, MSG_FINAL, st, sizeof(*st), 1);
}

static void on_ctl_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct worker *wk = h->data;
    if (buf_reserve(&wk->ctl_in, 65536) != 0)
        _exit(3);
    b->base = (char *)wk->ctl_in.p + wk->ctl_in.len;
    b->len = wk->ctl_in.cap - wk->ctl_in.len;
}

static void on_ctl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct worker *wk = s->data;
    if (nread < 0)
        _exit(2); /* the parent is gone */
    wk->ctl_in.len += (size_t)nread;
    size_t off = 0;
    while (wk->ctl_in.len - off >= sizeof(struct bench_msg)) {
        struct bench_msg m;
        memcpy(&m, wk->ctl_in.p + off, sizeof(m));
        if (wk->ctl_in.len - off - sizeof(m) < m.len)
            break;
        const uint8_t *payload = wk->ctl_in.p + off + sizeof(m);
        off += sizeof(m) + m.len;
        if (m.type == MSG_GO) {
            wk->go = 1;
            wk->t_go = bench_now_ns();
            struct bench_go g;
            if (m.len == sizeof(g) && wk->win == NULL) {
                memcpy(&g, payload, sizeof(g));
                if (g.windows > 0 && g.windows <= WIN_MAX) {
                    wk->win = calloc((size_t)g.windows * WIN_BUCKETS, 4);
                    wk->nwin = wk->win ? g.windows : 0;
                    wk->t_win0 = g.t_go;
                }
            }
            wk->cpu0 = cpu_ns_self();
            pump(wk);
        } else if (m.type == MSG_HALT) {
            wk->halted = 1;
        } else if (m.type == MSG_STOP) {
            uint32_t n = m.len / 4;
            uint32_t *counts = malloc((size_t)n * 4 + 4);
            if (counts == NULL)
                _exit(3);
            memcpy(counts, payload, (size_t)n * 4);
            finish(wk, counts, n);
            free(counts);
            return;
        }
    }
    memmove(wk->ctl_in.p, wk->ctl_in.p + off, wk->ctl_in.len - off);
    wk->ctl_in.len -= off;
}

void bench_worker_main(const struct bench_opts *o, uint32_t w, int ctl_fd)
{
    static struct worker wk0;
    struct worker *wk = &wk0;
    wk->o = o;
    wk->w = w;
    wk->loop = uv_default_loop();
    wk->t_begin = bench_now_ns();
    wk->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)getpid() << 20) ^ wk->t_begin;
    bench_hist_init(&wk->st.latency);
    bench_hist_init(&wk->st.handshake);
    bench_hist_init(&wk->st.api_latency);
    if (o->scenario == BENCH_CHURN) {
        wk->nconns = o->connect_concurrency; /* cycles in progress at most */
        wk->api = bench_api_open(wk->loop, o->api_host, o->api_port, o->api_key, 1, o->inflight,
                                 on_api_reply, wk);
        if (wk->api == NULL)
            _exit(3);
    } else {
        wk->nconns = o->connections > w ? (o->connections - w + o->workers - 1) / o->workers : 0;
    }
    wk->conns = calloc(wk->nconns ? wk->nconns : 1, sizeof(struct wconn));
    if (wk->conns == NULL)
        _exit(3);
    uv_pipe_init(wk->loop, &wk->ctl, 0);
    wk->ctl.data = wk;
    if (uv_pipe_open(&wk->ctl, ctl_fd) != 0)
        _exit(3);
    uv_read_start((uv_stream_t *)&wk->ctl, on_ctl_alloc, on_ctl_read);
    wk->ep = -1;
    if (!o->libuv_reads && (o->scenario == BENCH_FANOUT || o->scenario == BENCH_CHANNELS)) {
        wk->ep = epoll_create1(EPOLL_CLOEXEC);
        if (wk->ep >= 0 && (uv_poll_init(wk->loop, &wk->ep_poll, wk->ep) != 0 ||
                            uv_poll_start(&wk->ep_poll, UV_READABLE, on_ep_ready) != 0)) {
            close(wk->ep);
            wk->ep = -1;
        }
        wk->ep_poll.data = wk;
        if (wk->ep >= 0 && o->spin) {
            uv_idle_init(wk->loop, &wk->spin);
            wk->spin.data = wk;
            uv_idle_start(&wk->spin, on_spin);
        }
    }
    uv_timer_init(wk->loop, &wk->tick);
    wk->tick.data = wk;
    uv_timer_start(&wk->tick, on_tick, 250, 250); /* progress feeds the parent's drain */
    uv_timer_init(wk->loop, &wk->pace);
    wk->pace.data = wk;
    if (o->scenario == BENCH_CHURN)
        uv_timer_start(&wk->pace, on_pace, 1, 1);
    pump(wk);
    check_ready(wk);
    uv_run(wk->loop, UV_RUN_DEFAULT);
    _exit(0);
}
