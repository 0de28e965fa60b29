/* HTTP/1.1 transport for herald's endpoints (see server.h). */
#include "http/server.h"

#include <string.h>

#include "auth/rules.h"
#include "core/buf.h"
#include "core/config.h"
#include "http/api.h"
#include "http/parser.h"
#include "net/conn.h"
#include "net/loop.h"
#include "proto/session.h"
#include "ws/handshake.h"

#define HTTP_KEEPALIVE_SEC 30

/* Embedded by the Makefile from web/ (ld -r -b binary). */
extern const uint8_t _binary_index_html_start[], _binary_index_html_end[];
extern const uint8_t _binary_centrifuge_js_start[], _binary_centrifuge_js_end[];

static void respond_head(struct buf *b, int status, const char *content_type, size_t body_len,
                         int keep_alive, const char *extra)
{
    buf_appendf(b, "HTTP/1.1 %d %s\r\n", status, http_status_reason(status));
    if (content_type)
        buf_appendf(b, "Content-Type: %s\r\n", content_type);
    buf_appendf(b, "Content-Length: %zu\r\n", body_len);
    if (!keep_alive)
        buf_append_str(b, "Connection: close\r\n");
    if (extra)
        buf_append_str(b, extra);
    buf_append_str(b, "\r\n");
}

static void respond_full(struct conn *c, int status, const char *content_type, const uint8_t *body,
                         size_t body_len, int keep_alive, const char *extra, int head_only)
{
    if (c->closed)
        return;
    struct buf *b = &c->loop->reply;
    buf_reset(b);
    respond_head(b, status, content_type, body_len, keep_alive, extra);
    if (!head_only)
        buf_append(b, body, body_len);
    /* Whole or not at all: a response that cannot be queued closes the connection
     * rather than leave a gap in a pipelined stream. */
    if (b->oom || conn_send_bytes(c, b->p, b->len) != 0) {
        buf_shrink(b, LOOP_REPLY_KEEP);
        conn_abort(c);
        return;
    }
    buf_shrink(b, LOOP_REPLY_KEEP);
    if (!keep_alive) {
        c->state = CONN_CLOSING;
        c->close_after = 1;
        loop_timer_set(c->loop, c, 3);
    }
}

void http_respond(struct conn *c, int status, const char *content_type, const uint8_t *body,
                  size_t body_len, int keep_alive)
{
    respond_full(c, status, content_type, body, body_len, keep_alive, NULL, 0);
}

static void respond_error(struct conn *c, int status, int keep_alive, const char *extra)
{
    char body[96];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, http_status_reason(status));
    respond_full(c, status, "text/plain", (const uint8_t *)body, (size_t)n, keep_alive, extra, 0);
}

static int path_is(const struct http_request *r, const char *s)
{
    size_t n = strlen(s);
    return r->path_len == n && memcmp(r->path, s, n) == 0;
}

static int origin_allowed(const struct config *cfg, const struct http_request *r)
{
    const struct http_header *h = http_find_header(r, "origin");
    if (h == NULL)
        return 1; /* not a browser: browsers always send Origin on WebSocket upgrades */
    return auth_origin_allowed(cfg->allowed_origins, cfg->n_allowed_origins, h->value,
                               h->value_len);
}

static void upgrade(struct conn *c, const struct http_request *r)
{
    const struct config *cfg = c->loop->server->config;
    if (!origin_allowed(cfg, r)) {
        respond_error(c, 403, 0, NULL);
        return;
    }
    char accept[29];
    int status = ws_handshake_check(r, accept);
    if (status != 0) {
        respond_error(c, status, 0, status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL);
        return;
    }
    struct buf *b = &c->loop->reply;
    buf_reset(b);
    buf_append_str(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: ");
    buf_append(b, accept, 28);
    buf_append_str(b, "\r\n\r\n");
    if (b->oom || conn_send_bytes(c, b->p, b->len) != 0 || session_new(c) != 0) {
        conn_abort(c);
        return;
    }
    c->state = CONN_WS;
}

static int api_authorized(const struct config *cfg, const struct http_request *r)
{
    const struct http_header *h = http_find_header(r, "authorization");
    if (h && h->value_len >= 7 && strncasecmp((const char *)h->value, "apikey ", 7) == 0 &&
        auth_api_key_ok(cfg->api_key, h->value + 7, h->value_len - 7))
        return 1;
    h = http_find_header(r, "x-api-key");
    return h && auth_api_key_ok(cfg->api_key, h->value, h->value_len);
}

/* Does the request need its body: an authorised POST to a server API method? Every
 * other request is answered from its head alone, and its body is discarded as it
 * arrives, never buffered (an unauthenticated client cannot make us hold memory). */
static int wants_body(const struct config *cfg, const struct http_request *r)
{
    return r->method == HTTP_POST && r->path_len > 5 && memcmp(r->path, "/api/", 5) == 0 &&
           api_method_known(r->path + 5, r->path_len - 5) && api_authorized(cfg, r);
}

static void route(struct conn *c, const struct http_request *r, uint8_t *body, size_t body_len)
{
    const struct config *cfg = c->loop->server->config;
    int ka = r->keep_alive;
    int get = r->method == HTTP_GET || r->method == HTTP_HEAD;
    int head = r->method == HTTP_HEAD;
    if (path_is(r, "/connection/websocket")) {
        if (r->method != HTTP_GET)
            respond_error(c, 405, ka, "Allow: GET\r\n");
        else
            upgrade(c, r);
        return;
    }
    if (r->path_len > 5 && memcmp(r->path, "/api/", 5) == 0) {
        if (r->method != HTTP_POST) {
            respond_error(c, 405, ka, "Allow: POST\r\n");
            return;
        }
        if (!api_authorized(cfg, r)) {
            respond_error(c, 401, ka, NULL);
            return;
        }
        struct buf out = BUF_INIT;
        int status = api_handle(c->loop, r->path + 5, r->path_len - 5, body, body_len, &out);
        if (out.oom)
            respond_error(c, 500, 0, NULL);
        else
            respond_full(c, status, "application/json", out.p, out.len, ka, NULL, 0);
        buf_free(&out);
        return;
    }
    if (path_is(r, "/health")) {
        if (!get) {
            respond_error(c, 405, ka, "Allow: GET, HEAD\r\n");
            return;
        }
        static const char ok[] = "{\"status\":\"ok\"}";
        respond_full(c, 200, "application/json", (const uint8_t *)ok, sizeof(ok) - 1, ka, NULL,
                     head);
        return;
    }
    const uint8_t *asset = NULL, *asset_end = NULL;
    const char *type = NULL;
    if (path_is(r, "/") || path_is(r, "/index.html")) {
        asset = _binary_index_html_start;
        asset_end = _binary_index_html_end;
        type = "text/html; charset=utf-8";
    } else if (path_is(r, "/centrifuge.js")) {
        asset = _binary_centrifuge_js_start;
        asset_end = _binary_centrifuge_js_end;
        type = "application/javascript";
    }
    if (asset) {
        if (!get)
            respond_error(c, 405, ka, "Allow: GET, HEAD\r\n");
        else
            respond_full(c, 200, type, asset, (size_t)(asset_end - asset), ka, NULL, head);
        return;
    }
    respond_error(c, 404, ka, NULL);
}

size_t http_serve(struct conn *c, uint8_t *p, size_t len)
{
    const struct config *cfg = c->loop->server->config;
    struct http_limits lim = {HTTP_MAX_HEAD, HTTP_MAX_HEADERS};
    size_t used = 0;
    /* One request at a time, and none while the output is full: a peer that pipelines
     * without reading gets every response, whole and in order, as it reads them. */
    while (used < len && c->state == CONN_HTTP && !c->closed && !conn_output_full(c)) {
        if (c->skip_body) {
            size_t n = len - used < c->skip_body ? len - used : (size_t)c->skip_body;
            used += n;
            c->skip_body -= n;
            continue;
        }
        struct http_request req;
        int rc = http_parse_request(p + used, len - used, &lim, &req);
        if (rc == 0)
            return used;
        if (rc < 0) {
            respond_error(c, -rc, 0, NULL);
            return len;
        }
        size_t head = (size_t)rc;
        if (req.has_transfer_encoding) {
            /* Only Content-Length bodies: every API client sends one. */
            respond_error(c, 411, 0, NULL);
            return len;
        }
        uint64_t body_len = req.content_length > 0 ? (uint64_t)req.content_length : 0;
        if (body_len > cfg->max_request_body) {
            respond_error(c, 413, 0, NULL);
            return len;
        }
        if (!wants_body(cfg, &req)) {
            if (body_len && path_is(&req, "/connection/websocket")) {
                respond_error(c, 400, 0, NULL); /* the body would be read as frames */
                return len;
            }
            route(c, &req, NULL, 0);
            used += head;
            c->skip_body = body_len;
        } else {
            if (len - used - head < body_len)
                return used; /* wait for the rest of the body */
            route(c, &req, p + used + head, (size_t)body_len);
            used += head + (size_t)body_len;
        }
        if (c->closed)
            return len;
        if (c->state == CONN_HTTP)
            loop_timer_set(c->loop, c, HTTP_KEEPALIVE_SEC);
    }
    return c->state == CONN_CLOSING ? len : used;
}
