/* Pipelined keep-alive HTTP/1.1 client for herald's server API (see api.h). */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"

struct api_conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    struct api_client *a;
    int up;
    int dead;
    struct buf out; /* requests queued since the last flush */
    struct buf in;  /* reply bytes not yet parsed */
    uint32_t *tags; /* ring of unanswered requests */
    uint64_t *sent;
    unsigned head;
    unsigned count;
};

struct api_client {
    uv_loop_t *loop;
    api_reply_cb cb;
    void *ud;
    char host[96];
    char key[256];
    unsigned n;
    unsigned cap;
    unsigned open_handles;
    struct api_conn conns[];
};

struct api_write {
    uv_write_t req;
    uint8_t *mem;
};

static void conn_fail(struct api_conn *c);

static void on_close(uv_handle_t *h)
{
    struct api_conn *c = h->data;
    struct api_client *a = c->a;
    buf_free(&c->out);
    buf_free(&c->in);
    free(c->tags);
    free(c->sent);
    c->tags = NULL;
    c->sent = NULL;
    if (--a->open_handles == 0 && a->cb == NULL)
        free(a);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct api_conn *c = h->data;
    if (buf_reserve(&c->in, 65536) != 0) {
        b->base = NULL;
        b->len = 0;
        return;
    }
    b->base = (char *)c->in.p + c->in.len;
    b->len = c->in.cap - c->in.len;
}

static const uint8_t *find_crlfcrlf(const uint8_t *p, size_t len)
{
    return memmem(p, len, "\r\n\r\n", 4);
}

/* Parse every complete reply in c->in; returns -1 on a reply we cannot handle. */
static int parse_replies(struct api_conn *c)
{
    size_t off = 0;
    while (off < c->in.len) {
        const uint8_t *p = c->in.p + off;
        size_t len = c->in.len - off;
        const uint8_t *end = find_crlfcrlf(p, len);
        if (end == NULL) {
            if (len > 65536)
                return -1;
            break;
        }
        size_t head_len = (size_t)(end - p) + 4;
        if (head_len < 12 || memcmp(p, "HTTP/1.", 7) != 0)
            return -1;
        int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
        size_t clen = 0;
        int have_len = 0;
        const uint8_t *line = memchr(p, '\n', head_len);
        while (line != NULL && (size_t)(line + 1 - p) < head_len) {
            line++;
            size_t rest = head_len - (size_t)(line - p);
            if (rest > 15 && strncasecmp((const char *)line, "content-length:", 15) == 0) {
                const uint8_t *q = line + 15;
                while (*q == ' ' || *q == '\t')
                    q++;
                for (; *q >= '0' && *q <= '9'; q++)
                    clen = clen * 10 + (size_t)(*q - '0');
                have_len = 1;
            } else if (rest > 18 &&
                       strncasecmp((const char *)line, "transfer-encoding:", 18) == 0) {
                return -1; /* chunked replies: not needed for herald's API */
            }
            line = memchr(line, '\n', rest);
        }
        if (!have_len && status != 204 && status != 304)
            return -1;
        if (len < head_len + clen)
            break;
        if (c->count == 0)
            return -1; /* a reply nobody asked for */
        uint32_t tag = c->tags[c->head];
        uint64_t sent = c->sent[c->head];
        c->head = (c->head + 1) % c->a->cap;
        c->count--;
        c->a->cb(c->a->ud, tag, status, p + head_len, clen, sent);
        off += head_len + clen;
    }
    if (off > 0) {
        memmove(c->in.p, c->in.p + off, c->in.len - off);
        c->in.len -= off;
    }
    return 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct api_conn *c = s->data;
    if (nread < 0) {
        conn_fail(c);
        return;
    }
    c->in.len += (size_t)nread;
    if (parse_replies(c) != 0)
        conn_fail(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct api_conn *c = req->data;
    if (status != 0) {
        fprintf(stderr, "herald-bench: API connect to %s: %s\n", c->a->host, uv_strerror(status));
        conn_fail(c);
        return;
    }
    c->up = 1;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void conn_fail(struct api_conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    c->up = 0;
    while (c->count > 0) {
        uint32_t tag = c->tags[c->head];
        uint64_t sent = c->sent[c->head];
        c->head = (c->head + 1) % c->a->cap;
        c->count--;
        c->a->cb(c->a->ud, tag, 0, (const uint8_t *)"", 0, sent);
    }
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_close);
}

struct api_client *bench_api_open(uv_loop_t *loop, const char *host, int port, const char *key,
                                  unsigned nconn, unsigned inflight_per_conn, api_reply_cb cb,
                                  void *ud)
{
    if (nconn == 0)
        nconn = 1;
    if (inflight_per_conn == 0)
        inflight_per_conn = 1;
    struct api_client *a = calloc(1, sizeof(*a) + nconn * sizeof(struct api_conn));
    if (a == NULL)
        return NULL;
    a->loop = loop;
    a->cb = cb;
    a->ud = ud;
    a->n = nconn;
    a->cap = inflight_per_conn;
    snprintf(a->host, sizeof(a->host), "%s:%d", host, port);
    snprintf(a->key, sizeof(a->key), "%s", key ? key : "");
    struct sockaddr_in addr;
    uv_ip4_addr(host, port, &addr);
    for (unsigned i = 0; i < nconn; i++) {
        struct api_conn *c = &a->conns[i];
        c->a = a;
        c->tags = calloc(a->cap, sizeof(*c->tags));
        c->sent = calloc(a->cap, sizeof(*c->sent));
        uv_tcp_init(loop, &c->tcp);
        c->tcp.data = c;
        c->creq.data = c;
        a->open_handles++;
        if (c->tags == NULL || c->sent == NULL ||
            uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&addr, on_connect) != 0)
            conn_fail(c);
    }
    return a;
}

unsigned bench_api_ready(const struct api_client *a)
{
    unsigned n = 0;
    for (unsigned i = 0; i < a->n; i++)
        n += a->conns[i].up;
    return n;
}

int bench_api_can_send(const struct api_client *a, unsigned conn)
{
    const struct api_conn *c = &a->conns[conn % a->n];
    return c->up && c->count < a->cap;
}

int bench_api_post(struct api_client *a, unsigned conn, const char *path, const uint8_t *body,
                   size_t len, uint32_t tag, uint64_t now_ns)
{
    struct api_conn *c = &a->conns[conn % a->n];
    if (!c->up || c->count >= a->cap)
        return -1;
    buf_appendf(&c->out,
                "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: apikey %s\r\n"
                "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                path, a->host, a->key, len);
    buf_append(&c->out, body, len);
    unsigned slot = (c->head + c->count) % a->cap;
    c->tags[slot] = tag;
    c->sent[slot] = now_ns;
    c->count++;
    return 0;
}

static void on_write(uv_write_t *req, int status)
{
    struct api_write *w = (struct api_write *)req;
    free(w->mem);
    free(w);
}

void bench_api_flush(struct api_client *a)
{
    for (unsigned i = 0; i < a->n; i++) {
        struct api_conn *c = &a->conns[i];
        if (c->out.len == 0)
            continue;
        if (c->out.oom) {
            buf_free(&c->out);
            c->out = (struct buf)BUF_INIT;
            conn_fail(c);
            continue;
        }
        struct api_write *w = malloc(sizeof(*w));
        if (w == NULL) {
            conn_fail(c);
            continue;
        }
        w->mem = c->out.p;
        uv_buf_t b = uv_buf_init((char *)c->out.p, (unsigned)c->out.len);
        c->out = (struct buf)BUF_INIT;
        if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
            free(w->mem);
            free(w);
            conn_fail(c);
        }
    }
}

unsigned bench_api_inflight(const struct api_client *a)
{
    unsigned n = 0;
    for (unsigned i = 0; i < a->n; i++)
        n += a->conns[i].count;
    return n;
}

void bench_api_close(struct api_client *a)
{
    a->cb = NULL;
    for (unsigned i = 0; i < a->n; i++) {
        struct api_conn *c = &a->conns[i];
        c->count = 0;
        c->dead = 1;
        c->up = 0;
        if (!uv_is_closing((uv_handle_t *)&c->tcp))
            uv_close((uv_handle_t *)&c->tcp, on_close);
    }
}
