/* The WebSocket phase of a connection (see conn.h). */
#include "ws/conn.h"

#include <string.h>

#include "core/frame.h"
#include "metrics/metrics.h"
#include "net/conn.h"

#define CLOSE_GRACE_SEC 3

static struct ws_conn *of(struct conn *c)
{
    return conn_ud(c);
}

struct frame *ws_text_frame(const void *p, size_t len)
{
    struct frame *f = frame_new(len + WS_FRAME_HEAD_MAX);
    if (f == NULL)
        return NULL;
    size_t h = ws_frame_head_encode(f->data, WS_OP_TEXT, len);
    memcpy(f->data + h, p, len);
    f->len = (uint32_t)(h + len);
    return f;
}

int ws_conn_send_text(struct ws_conn *w, const void *p, size_t len)
{
    if (conn_closing(w->conn))
        return 1;
    struct frame *f = ws_text_frame(p, len);
    if (f == NULL)
        return -1;
    int r = conn_send_frame_owned(w->conn, f);
    if (r != 0)
        frame_unref(f);
    else
        metrics_count(METRIC_REPLIES_OUT, 1);
    return r;
}

int ws_conn_reply_text(struct ws_conn *w, const void *p, size_t len)
{
    if (conn_closing(w->conn))
        return 1;
    struct frame *f = ws_text_frame(p, len);
    if (f == NULL)
        return -1;
    int r = conn_reply_frame(w->conn, f);
    if (r == 0)
        metrics_count(METRIC_REPLIES_OUT, 1);
    return r;
}

void ws_conn_close(struct ws_conn *w, unsigned code, const char *reason)
{
    struct conn *c = w->conn;
    if (conn_closing(c))
        return;
    w->close_code = (uint16_t)code; /* for the owner's log line when the connection goes */
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
    conn_send_bytes(c, fr, h + plen);
    metrics_count_close(code);
    conn_close_after_flush(c, CLOSE_GRACE_SEC);
}

static int on_message(void *ud, int opcode, uint8_t *p, size_t len)
{
    struct ws_conn *w = ud;
    struct conn *c = w->conn;
    switch (opcode) {
    case WS_OP_TEXT:
        metrics_count(METRIC_MESSAGES_IN, 1);
        w->h->text(w, p, len);
        return conn_closing(c) || conn_output_full(c);
    case WS_OP_BINARY:
        ws_conn_close(w, WS_CLOSE_UNSUPPORTED, "binary frames are not supported");
        return 1;
    case WS_OP_PING: {
        /* The pong counts against the output bound like any reply. */
        uint8_t fr[WS_FRAME_HEAD_MAX + 125];
        size_t h = ws_frame_head_encode(fr, WS_OP_PONG, len);
        memcpy(fr + h, p, len);
        conn_send_bytes(c, fr, h + len);
        return conn_output_full(c);
    }
    case WS_OP_PONG:
        return 0;
    case WS_OP_CLOSE: {
        /* RFC 6455 §5.5.1: answer with a close frame echoing the status code. */
        unsigned code = len >= 2 ? ((unsigned)p[0] << 8 | p[1]) : 0;
        ws_conn_close(w, code, NULL);
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

static size_t on_data(struct conn *c, uint8_t *p, size_t len)
{
    struct ws_conn *w = of(c);
    struct ws_limits lim = {w->max_message, w->max_message};
    ssize_t r = ws_reader_feed(&w->reader, p, len, &lim, on_message, w);
    if (r < 0) {
        ws_conn_close(w, (unsigned)-r, close_reason((int)-r));
        return len;
    }
    return (size_t)r;
}

static void on_timer(struct conn *c)
{
    struct ws_conn *w = of(c);
    w->h->timer(w);
}

static void on_shutdown(struct conn *c)
{
    struct ws_conn *w = of(c);
    w->h->shutdown(w);
}

static void on_gone(struct conn *c)
{
    struct ws_conn *w = of(c);
    ws_reader_free(&w->reader);
    w->h->gone(w);
}

static void on_over_budget(struct conn *c)
{
    struct ws_conn *w = of(c);
    if (w->h->slow)
        w->h->slow(w);
    else
        ws_conn_close(w, WS_CLOSE_POLICY, "slow");
}

static const struct conn_handler ws_handler = {on_data, on_timer, on_shutdown, on_gone,
                                               on_over_budget};

struct ws_conn *ws_conn_of(struct conn *c)
{
    return conn_handler_of(c) == &ws_handler ? conn_ud(c) : NULL;
}

void ws_conn_start(struct ws_conn *w, struct conn *c, const struct ws_conn_handler *h,
                   uint32_t max_message)
{
    ws_reader_init(&w->reader, 0);
    w->conn = c;
    w->h = h;
    w->max_message = max_message;
    w->close_code = 0;
    conn_set_handler(c, &ws_handler, w);
    conn_set_metered(c);
}
