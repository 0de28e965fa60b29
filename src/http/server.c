/* HTTP/1.1 transport for herald's endpoints (see server.h): the connection handler
 * every accepted connection starts with. */
#include "http/server.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "auth/rules.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/frame.h"
#include "core/log.h"
#include "http/api.h"
#include "http/parser.h"
#include "hub/hub.h"
#include "limit/node.h"
#include "metrics/metrics.h"
#include "net/conn.h"
#include "net/loop.h"
#include "ws/handshake.h"

#define HTTP_KEEPALIVE_SEC 30
/* A request body must arrive whole within this of its head (a fixed deadline, not one
 * renewed by every byte: a body dribbled byte by byte cannot hold the connection). */
#define HTTP_BODY_SEC 30
#define HTTP_CLOSE_SEC 3
/* Pipelined API calls of one connection that may be answering at once (an engine on
 * Redis answers after a round trip: one at a time, a pipelining client would get one
 * publication per round trip). Their responses still go out in request order. */
#define HTTP_MAX_CALLS 128
/* What a client may send after an upgrade request that waits for the limits across
 * nodes: a client waits for the 101 (a few frames sent early are kept for the
 * WebSocket side). The connection is read meanwhile, so without a bound the input
 * buffer grows with whatever it sends. */
#define HTTP_MAX_EARLY_INPUT (64 * 1024)
/* The base64 of the status page's Basic credentials: room for a long user name and a
 * 64-byte key many times over; longer is refused. */
#define STATUS_MAX_BASIC 4096

/* Embedded by the Makefile from web/ (ld -r -b binary). */
extern const uint8_t _binary_index_html_start[], _binary_index_html_end[];
extern const uint8_t _binary_centrifuge_js_start[], _binary_centrifuge_js_end[];
extern const uint8_t _binary_status_html_start[], _binary_status_html_end[];

static struct http_server_config server;

void http_init(const struct http_server_config *cfg)
{
    server = *cfg;
}

struct http_conn;

/* An API call answering, in request order; an answer that comes before those ahead of
 * it waits here (a copy of its body). */
struct api_call {
    struct api_call *next;
    struct http_conn *h;
    uint8_t ka;   /* its keep-alive */
    uint8_t done; /* answered, waiting for those ahead */
    int status;
    uint8_t *body;
    size_t len;
};

/* A connection's HTTP state, until it upgrades or closes. */
struct http_conn {
    struct conn *c;
    uint8_t metrics_only;   /* accepted on metrics_listen: /metrics and nothing else */
    uint64_t skip_body;   /* bytes of a request body still to discard unread */
    struct api_call *calls, **calls_tail; /* answering, oldest first */
    unsigned ncalls;
    size_t held;          /* bytes of answers waiting for those ahead of them */
    uint8_t last;         /* a request without keep-alive was taken: no more after it */
    uint8_t dead;         /* the connection is gone while calls are answering */
    uint8_t in_call;      /* inside api_handle: the answer came before it returned */
    uint8_t limiting;     /* an upgrade waits for the per-IP limits across nodes */
    struct limit_client lc; /* what that upgrade holds of the limits meanwhile */
    char accept[29];        /* and its Sec-WebSocket-Accept */
    uint8_t *query_token;   /* and the connection token of its URL (allow_query_token) */
    size_t query_token_len;
    uint8_t phase;        /* enum http_phase: which deadline the connection's timer is */
};

/* Slowloris: a request head must arrive whole within handshake_timeout of its first
 * byte (of the accept, for the first request), however slowly it trickles in; an idle
 * keep-alive connection is closed after HTTP_KEEPALIVE_SEC. */
enum http_phase { PHASE_HEAD, PHASE_BODY, PHASE_IDLE };

static const struct conn_handler http_handler;

static void set_phase(struct http_conn *h, enum http_phase phase)
{
    if (h->phase == phase)
        return; /* the deadline runs from the phase's start, not from the latest bytes */
    h->phase = (uint8_t)phase;
    conn_timer_set(h->c, phase == PHASE_HEAD   ? server.config->handshake_timeout
                         : phase == PHASE_BODY ? HTTP_BODY_SEC
                                               : HTTP_KEEPALIVE_SEC);
}

/* Responses of one read of pipelined requests go out as one frame (one allocation and
 * one iovec for the lot, instead of a frame each): they gather here, on this loop's
 * thread, for the connection that answers, and are queued when its input is handled
 * (or before another connection answers, or before a response too large to gather).
 * Empty between callbacks of the loop. */
#define RESP_GATHER (16 * 1024)

static _Thread_local struct {
    struct http_conn *owner;
    size_t len;
    uint8_t p[RESP_GATHER];
} gathered;

/* Queue what is gathered, as one reply frame of its exact size. */
static void resp_commit(void)
{
    struct http_conn *h = gathered.owner;
    if (h == NULL)
        return;
    gathered.owner = NULL;
    struct frame *f = frame_from(gathered.p, gathered.len);
    gathered.len = 0;
    if (f == NULL)
        conn_abort(h->c); /* out of memory: a reply cannot be half-sent */
    else
        conn_reply_frame(h->c, f);
}

/* Forget what h gathered: its connection is gone. */
static void resp_discard(struct http_conn *h)
{
    if (gathered.owner == h) {
        gathered.owner = NULL;
        gathered.len = 0;
    }
}

static uint8_t *put(uint8_t *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

static uint8_t *put_str(uint8_t *o, const char *s)
{
    return put(o, s, strlen(s));
}

/* The status line and the fields, into o (room enough: see respond_full); returns the end. */
static uint8_t *respond_head(uint8_t *o, int status, const char *reason, const char *content_type,
                             size_t body_len, int keep_alive, const char *extra)
{
    o = put(o, "HTTP/1.1 ", 9);
    *o++ = (uint8_t)('0' + status / 100 % 10);
    *o++ = (uint8_t)('0' + status / 10 % 10);
    *o++ = (uint8_t)('0' + status % 10);
    *o++ = ' ';
    o = put_str(o, reason);
    if (content_type) {
        o = put(o, "\r\nContent-Type: ", 16);
        o = put_str(o, content_type);
    }
    o = put(o, "\r\nContent-Length: ", 18);
    char digits[20];
    int n = 0;
    do
        digits[n++] = (char)('0' + body_len % 10);
    while ((body_len /= 10) != 0);
    while (n > 0)
        *o++ = (uint8_t)digits[--n];
    o = put(o, "\r\n", 2);
    if (!keep_alive)
        o = put(o, "Connection: close\r\n", 19);
    if (extra)
        o = put_str(o, extra);
    return put(o, "\r\n", 2);
}

/* One response, whole or not at all: the head and a copy of the body, gathered with the
 * responses before it, or in a frame of its own when large; queued as a reply (it may
 * exceed client_queue_max: the connection is then not read until the peer has read it). */
static void respond_full(struct conn *c, int status, const char *content_type, const uint8_t *body,
                         size_t body_len, int keep_alive, const char *extra, int head_only)
{
    if (conn_closing(c))
        return;
    struct http_conn *h = conn_ud(c);
    const char *reason = http_status_reason(status);
    size_t n = head_only ? 0 : body_len;
    /* "HTTP/1.1 NNN \r\n", the three fields' names and CRLFs, 20 digits, the final CRLF */
    size_t room = 96 + strlen(reason) + (content_type ? strlen(content_type) : 0) +
                  (extra ? strlen(extra) : 0) + n;
    if (gathered.owner != h || gathered.len + room > RESP_GATHER)
        resp_commit();
    if (room > RESP_GATHER) {
        struct frame *f = frame_new(room);
        if (f == NULL) {
            conn_abort(c);
            return;
        }
        uint8_t *o = respond_head(f->data, status, reason, content_type, body_len, keep_alive,
                                  extra);
        if (n)
            o = put(o, (const char *)body, n);
        f->len = (uint32_t)(o - f->data);
        if (conn_reply_frame(c, f) != 0)
            return;
    } else {
        gathered.owner = h;
        uint8_t *o = respond_head(gathered.p + gathered.len, status, reason, content_type,
                                  body_len, keep_alive, extra);
        if (n)
            o = put(o, (const char *)body, n);
        gathered.len = (size_t)(o - gathered.p);
        if (!keep_alive)
            resp_commit();
    }
    if (!keep_alive && !conn_closing(c))
        conn_close_after_flush(c, HTTP_CLOSE_SEC);
}

/* An error answer. To a HEAD request it has no body (RFC 9110 §9.3.2): the client
 * would read one as the start of the next response. */
static void respond_error_to(struct conn *c, int status, int keep_alive, const char *extra,
                             int head_only)
{
    char body[96];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, http_status_reason(status));
    respond_full(c, status, "text/plain", (const uint8_t *)body, (size_t)n, keep_alive, extra,
                 head_only);
}

static void respond_error(struct conn *c, int status, int keep_alive, const char *extra)
{
    respond_error_to(c, status, keep_alive, extra, 0);
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
    /* RFC 6454 §7.3: a user agent sends at most one Origin. Two are refused whatever
     * they say: a proxy in front that checks the other one must not disagree with us. */
    for (const struct http_header *x = h + 1; x < r->headers + r->num_headers; x++)
        if (x->name_len == 6 && strncasecmp((const char *)x->name, "origin", 6) == 0 &&
            cfg->n_allowed_origins > 0)
            return 0;
    return auth_origin_allowed(cfg->allowed_origins, cfg->n_allowed_origins, h->value,
                               h->value_len);
}

/* metrics_key, when set: "Authorization: Bearer <key>" or "X-API-Key: <key>", compared
 * in constant time (a scraper's key is a secret like the API's). */
static int metrics_authorized(const struct config *cfg, const struct http_request *r)
{
    if (cfg->metrics_key == NULL)
        return 1;
    const struct http_header *h = http_find_header(r, "authorization");
    if (h && h->value_len >= 7 && strncasecmp((const char *)h->value, "bearer ", 7) == 0 &&
        auth_api_key_ok(cfg->metrics_key, h->value + 7, h->value_len - 7))
        return 1;
    h = http_find_header(r, "x-api-key");
    return h && auth_api_key_ok(cfg->metrics_key, h->value, h->value_len);
}

/* GET /metrics: the exposition, built on this loop (metrics/ sums the slots; nothing in
 * it walks connections or channels). */
static void serve_metrics(struct conn *c, const struct http_request *r, int ka)
{
    if (r->method != HTTP_GET && r->method != HTTP_HEAD) {
        respond_error(c, 405, ka, "Allow: GET, HEAD\r\n");
        return;
    }
    if (!metrics_authorized(server.config, r)) {
        respond_error(c, 401, ka, "WWW-Authenticate: Bearer\r\n");
        return;
    }
    struct buf b = BUF_INIT;
    buf_reserve(&b, 32 * 1024);
    metrics_write(&b);
    if (b.oom)
        respond_error(c, 500, ka, NULL);
    else
        respond_full(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len, ka, NULL,
                     r->method == HTTP_HEAD);
    buf_free(&b);
}

static int api_authorized(const struct config *cfg, const struct http_request *r)
{
    const struct http_header *h = http_find_header(r, "authorization");
    if (h && h->value_len >= 7 && strncasecmp((const char *)h->value, "apikey ", 7) == 0 &&
        auth_api_keys_ok(cfg->api_key, cfg->api_keys, cfg->n_api_keys, h->value + 7,
                         h->value_len - 7))
        return 1;
    h = http_find_header(r, "x-api-key");
    return h &&
           auth_api_keys_ok(cfg->api_key, cfg->api_keys, cfg->n_api_keys, h->value, h->value_len);
}

/* RFC 4648 §4 base64 (padding optional), decoded into out (room for len * 3 / 4 bytes);
 * -1 on a character outside the alphabet. */
static ssize_t base64_decode(const uint8_t *p, size_t len, uint8_t *out)
{
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t ch = p[i];
        int v;
        if (ch >= 'A' && ch <= 'Z')
            v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z')
            v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9')
            v = ch - '0' + 52;
        else if (ch == '+')
            v = 62;
        else if (ch == '/')
            v = 63;
        else if (ch == '=')
            break;
        else
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (ssize_t)o;
}

/* The status page and its data: HTTP Basic (RFC 7617) whose password is admin_password
 * or an API key, the user name ignored (a browser asks for both); or an API key as the
 * server API takes it, or as "Authorization: Bearer <key>". Every comparison in
 * constant time (auth/rules.h). */
static int status_authorized(const struct config *cfg, const struct http_request *r)
{
    if (api_authorized(cfg, r))
        return 1;
    const struct http_header *h = http_find_header(r, "authorization");
    if (h == NULL)
        return 0;
    if (h->value_len >= 7 && strncasecmp((const char *)h->value, "bearer ", 7) == 0)
        return auth_api_keys_ok(cfg->api_key, cfg->api_keys, cfg->n_api_keys, h->value + 7,
                                h->value_len - 7);
    if (h->value_len < 6 || strncasecmp((const char *)h->value, "basic ", 6) != 0)
        return 0;
    uint8_t cred[STATUS_MAX_BASIC / 4 * 3 + 3];
    size_t n = h->value_len - 6;
    if (n > STATUS_MAX_BASIC)
        return 0;
    ssize_t m = base64_decode(h->value + 6, n, cred);
    const uint8_t *colon = m > 0 ? memchr(cred, ':', (size_t)m) : NULL;
    int ok = 0;
    if (colon) {
        const uint8_t *pw = colon + 1;
        size_t pw_len = (size_t)(cred + m - pw);
        /* Both compared whichever matches: the time does not tell which one it was. */
        int admin = auth_api_key_ok(cfg->admin_password, pw, pw_len);
        int key = auth_api_keys_ok(cfg->api_key, cfg->api_keys, cfg->n_api_keys, pw, pw_len);
        ok = admin | key;
    }
    explicit_bzero(cred, sizeof(cred)); /* the password goes no further than this call */
    return ok;
}

/* GET /status (the page), /status/metrics (the exposition, for the page: behind the
 * page's credential, whatever metrics_key and metrics_listen say of /metrics) and
 * /status/info (this node's info, the page's fallback for the connection count). Nothing
 * at all without a credential configured (404); 401 with the Basic challenge otherwise. */
static void status_route(struct conn *c, const struct http_request *r, int ka)
{
    const struct config *cfg = server.config;
    int head = r->method == HTTP_HEAD;
    if (cfg->admin_password == NULL && cfg->api_key == NULL && cfg->n_api_keys == 0) {
        respond_error_to(c, 404, ka, NULL, head);
        return;
    }
    if (r->method != HTTP_GET && !head) {
        respond_error(c, 405, ka, "Allow: GET, HEAD\r\n");
        return;
    }
    if (!status_authorized(cfg, r)) {
        respond_error_to(c, 401, ka,
                         "WWW-Authenticate: Basic realm=\"herald status\", charset=\"UTF-8\"\r\n",
                         head);
        return;
    }
    /* The page shows live numbers: never from a cache, never framed by another site. */
    static const char nocache[] = "Cache-Control: no-store\r\nX-Frame-Options: DENY\r\n"
                                  "X-Content-Type-Options: nosniff\r\n";
    if (path_is(r, "/status")) {
        respond_full(c, 200, "text/html; charset=utf-8", _binary_status_html_start,
                     (size_t)(_binary_status_html_end - _binary_status_html_start), ka, nocache,
                     head);
        return;
    }
    struct buf b = BUF_INIT;
    int metrics = path_is(r, "/status/metrics");
    if (metrics)
        metrics_write(&b);
    else
        api_node_info(&b);
    if (b.oom)
        respond_error(c, 500, 0, NULL);
    else
        respond_full(c, 200,
                     metrics ? "text/plain; version=0.0.4; charset=utf-8" : "application/json",
                     b.p, b.len, ka, nocache, head);
    buf_free(&b);
}

/* Does the request need its body: an authorised POST to a server API method? Every
 * other request is answered from its head alone, and its body is discarded as it
 * arrives, never buffered (an unauthenticated client cannot make us hold memory). */
static int wants_body(const struct config *cfg, const struct http_request *r)
{
    return r->method == HTTP_POST && r->path_len > 5 && memcmp(r->path, "/api/", 5) == 0 &&
           api_method_known(r->path + 5, r->path_len - 5) && api_authorized(cfg, r);
}

/* The value of the deadline phase while the requests of one read are taken: one came
 * whole, and the idle deadline (or the next head's) is set once, when the read is done. */
#define PHASE_TAKEN 0xff

int http_ws_check(const struct http_request *r, char accept[29])
{
    struct ws_header hs[HTTP_MAX_HEADERS];
    for (size_t i = 0; i < r->num_headers; i++)
        hs[i] = (struct ws_header){r->headers[i].name, r->headers[i].name_len,
                                   r->headers[i].value, r->headers[i].value_len};
    return ws_handshake_check(r->minor_version, hs, r->num_headers, accept);
}

static int hex_digit(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The value of the query's "token" parameter (RFC 3986 section 3.4, form-encoded as
 * browsers write it), percent-decoded into out (as long as the query); -1 when there
 * is none. */
static ssize_t query_token(const struct http_request *r, uint8_t *out)
{
    const uint8_t *q = r->query, *end = r->query + r->query_len;
    while (q && q < end) {
        const uint8_t *amp = memchr(q, '&', (size_t)(end - q));
        const uint8_t *pe = amp ? amp : end;
        if (pe - q >= 6 && memcmp(q, "token=", 6) == 0) {
            size_t o = 0;
            for (const uint8_t *v = q + 6; v < pe; v++) {
                int hi, lo;
                if (*v == '%' && pe - v >= 3 && (hi = hex_digit(v[1])) >= 0 &&
                    (lo = hex_digit(v[2])) >= 0) {
                    out[o++] = (uint8_t)(hi << 4 | lo);
                    v += 2;
                } else {
                    out[o++] = *v == '+' ? ' ' : *v;
                }
            }
            return (ssize_t)o;
        }
        q = pe + 1;
    }
    return -1;
}

/* The last header of that name (the nearest proxy's, for X-Forwarded-For), or NULL. */
static const struct http_header *last_header(const struct http_request *r, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = r->num_headers; i-- > 0;) {
        const struct http_header *x = &r->headers[i];
        if (x->name_len == n && strncasecmp((const char *)x->name, name, n) == 0)
            return x;
    }
    return NULL;
}

/* The client's address: the peer's, or whom trusted_proxies say it is. */
static void client_addr(struct conn *c, const struct http_request *r, struct limit_addr *out)
{
    struct sockaddr_storage ss;
    socklen_t n = sizeof(ss);
    struct limit_addr peer;
    memset(&peer, 0, sizeof(peer));
    if (getpeername(conn_fd(c), (struct sockaddr *)&ss, &n) == 0)
        limit_addr_from_sockaddr(&ss, &peer);
    const struct http_header *xff = last_header(r, "x-forwarded-for");
    /* The last of each: a proxy that adds its header puts it after what the client sent. */
    const struct http_header *real = last_header(r, "x-real-ip");
    limit_client_addr(&peer, xff ? xff->value : NULL, xff ? xff->value_len : 0,
                      real ? real->value : NULL, real ? real->value_len : 0, out);
}

/* A handshake over a connection limit: 503 when this node is full (another node may
 * not be), 429 for the client's IP; both retried by the client after a while. */
static void refuse_limit(struct conn *c, enum limit_verdict v)
{
    respond_error(c, v == LIMIT_FULL ? 503 : 429, 0, "Retry-After: 1\r\n");
}

/* The 101, and the WebSocket side takes the connection (and what h->lc holds) over. */
static void switch_protocols(struct http_conn *h)
{
    struct conn *c = h->c;
    struct limit_client lc = h->lc;
    resp_commit(); /* the answers before the upgrade, before its 101 */
    struct buf b = BUF_INIT;
    buf_append_str(&b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Accept: ");
    buf_append(&b, h->accept, 28);
    buf_append_str(&b, "\r\n\r\n");
    int failed = b.oom || conn_send_bytes(c, b.p, b.len) != 0;
    buf_free(&b);
    /* The WebSocket side takes the connection over: this state goes. */
    conn_set_handler(c, NULL, NULL);
    uint8_t *token = h->query_token;
    size_t token_len = h->query_token_len;
    free(h);
    if (failed || server.websocket(c, &lc, token, token_len, server.ud) != 0) {
        limit_client_release(&lc);
        conn_abort(c);
    }
    free(token);
}

/* The per-IP limits across nodes answered (on this loop). */
static void on_shared_admit(void *ud, int allowed)
{
    struct http_conn *h = ud;
    h->limiting = 0;
    if (!allowed)
        h->lc.ip_shared = 0; /* refused: not counted there */
    if (h->dead || !allowed) {
        free(h->query_token);
        h->query_token = NULL;
    }
    if (h->dead) {
        limit_client_release(&h->lc);
        if (h->ncalls == 0)
            free(h);
        return;
    }
    struct conn *c = h->c;
    if (!allowed) {
        metrics_add(loop_id(conn_loop(c)), METRIC_LIMIT_IP_CONNECTIONS, 1);
        limit_client_release(&h->lc);
        refuse_limit(c, LIMIT_OVER_COUNT);
        return;
    }
    switch_protocols(h);
    conn_continue(c); /* what the client sent after its request, to the WebSocket side */
}

/* A refused handshake, rate-limited: a bad client sends them as fast as it likes. */
static void log_refused(struct conn *c, const struct http_request *r, int status, const char *why)
{
    if (log_min_level > LOG_INFO)
        return;
    struct limit_addr a;
    char addr[48];
    client_addr(c, r, &a);
    limit_addr_format(&a, addr, sizeof(addr));
    struct log_who who = {NULL, NULL, addr, status};
    log_client(LOG_INFO, "handshake_refused", &who, "WebSocket handshake refused: %s", why);
}

static void upgrade(struct http_conn *h, const struct http_request *r)
{
    struct conn *c = h->c;
    if (!origin_allowed(server.config, r)) {
        metrics_count(METRIC_REFUSED_ORIGIN, 1);
        log_refused(c, r, 403, "Origin not allowed");
        respond_error(c, 403, 0, NULL);
        return;
    }
    int status = http_ws_check(r, h->accept);
    if (status != 0) {
        metrics_count(METRIC_REFUSED_BAD_REQUEST, 1);
        log_refused(c, r, status, "not a valid WebSocket upgrade");
        respond_error(c, status, 0, status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL);
        return;
    }
    /* A URL lands in proxies' and browsers' logs and histories: a token there is refused
     * unless allow_query_token says otherwise. */
    uint8_t *token = r->query_len ? malloc(r->query_len) : NULL;
    if (r->query_len && token == NULL) {
        respond_error(c, 500, 0, NULL);
        return;
    }
    ssize_t token_len = token ? query_token(r, token) : -1;
    if (token_len >= 0 && !server.config->allow_query_token) {
        log_refused(c, r, 400, "a token in the URL query");
        static const char why[] = "400 Bad Request: a token in the URL query is refused; send "
                                  "it in the connect command (or set allow_query_token)\n";
        free(token);
        metrics_count(METRIC_REFUSED_QUERY_TOKEN, 1);
        respond_full(c, 400, "text/plain", (const uint8_t *)why, sizeof(why) - 1, 0, NULL, 0);
        return;
    }
    struct loop *loop = conn_loop(c);
    client_addr(c, r, &h->lc.addr);
    enum limit_verdict v = limit_client_admit(&h->lc, loop_now_ms(loop) * 1000, loop_id(loop));
    if (v != LIMIT_OK) {
        free(token);
        log_refused(c, r, v == LIMIT_FULL ? 503 : 429,
                    v == LIMIT_FULL ? "max_connections" : "a per-IP connection limit");
        refuse_limit(c, v);
        return;
    }
    if (token_len > 0) {
        h->query_token = token;
        h->query_token_len = (size_t)token_len;
    } else {
        free(token);
    }
    /* Across nodes (Redis): the 101 waits for the shared count and rate; this
     * connection reads nothing more meanwhile. */
    if (limit_client_share(&h->lc, loop_id(loop), on_shared_admit, h)) {
        h->limiting = 1;
        return;
    }
    switch_protocols(h);
}

static void call_pop(struct http_conn *h)
{
    struct api_call *x = h->calls;
    h->calls = x->next;
    if (h->calls == NULL)
        h->calls_tail = &h->calls;
    h->ncalls--;
    h->held -= x->len;
    free(x->body);
    free(x);
}

static void on_api_done(void *ud, int status, const uint8_t *body, size_t len)
{
    struct api_call *x = ud;
    struct http_conn *h = x->h;
    x->done = 1;
    if (h->calls == x && !h->dead) {
        respond_full(h->c, status, "application/json", body, len, x->ka, NULL, 0);
        x->len = 0;
        call_pop(h);
    } else if (!h->dead) {
        /* Those ahead of it are still answering: a copy waits for them. */
        x->status = status;
        x->body = len ? malloc(len) : NULL;
        if (len && x->body == NULL) {
            x->status = 500;
            x->len = 0;
        } else {
            memcpy(x->body, body, len);
            x->len = len;
            h->held += len;
        }
    }
    /* The answers that waited behind it, in order. */
    while (h->calls && h->calls->done) {
        struct api_call *y = h->calls;
        if (!h->dead) {
            if (y->status == 500 && y->body == NULL)
                respond_error(h->c, 500, y->ka, NULL);
            else
                respond_full(h->c, y->status, "application/json", y->body, y->len, y->ka, NULL,
                             0);
        }
        call_pop(h);
    }
    if (h->dead) {
        if (h->calls == NULL && !h->limiting)
            free(h);
        return;
    }
    /* An answer that came later: it goes out now, and the requests that waited behind it
     * go on. */
    if (!h->in_call) {
        resp_commit();
        conn_continue(h->c);
    }
}

/* authorized: the caller found the request an authorised API call (wants_body). */
static void route(struct http_conn *h, const struct http_request *r, uint8_t *body,
                  size_t body_len, int authorized)
{
    struct conn *c = h->c;
    const struct config *cfg = server.config;
    int ka = r->keep_alive;
    int get = r->method == HTTP_GET || r->method == HTTP_HEAD;
    int head = r->method == HTTP_HEAD;
    if (h->metrics_only || path_is(r, "/metrics")) {
        /* With metrics_listen, /metrics is there only (and nothing else is). */
        if (path_is(r, "/metrics") && h->metrics_only == (cfg->metrics_listen_port != 0))
            serve_metrics(c, r, ka);
        else
            respond_error_to(c, 404, ka, NULL, head);
        return;
    }
    if (path_is(r, "/connection/websocket")) {
        if (r->method != HTTP_GET)
            respond_error_to(c, 405, ka, "Allow: GET\r\n", head);
        else
            upgrade(h, r);
        return;
    }
    if (r->path_len > 5 && memcmp(r->path, "/api/", 5) == 0) {
        if (r->method != HTTP_POST) {
            respond_error_to(c, 405, ka, "Allow: POST\r\n", head);
            return;
        }
        if (!authorized && !api_authorized(cfg, r)) {
            respond_error(c, 401, ka, NULL);
            return;
        }
        struct api_call *x = calloc(1, sizeof(*x));
        if (x == NULL) {
            respond_error(c, 500, 0, NULL);
            return;
        }
        x->h = h;
        x->ka = (uint8_t)ka;
        *h->calls_tail = x;
        h->calls_tail = &x->next;
        h->ncalls++;
        h->in_call = 1;
        api_handle(r->path + 5, r->path_len - 5, body, body_len, on_api_done, x);
        h->in_call = 0;
        return;
    }
    if (path_is(r, "/ready")) {
        /* Ready to serve: every store reachable. /health says only that herald runs. */
        if (!get) {
            respond_error(c, 405, ka, "Allow: GET, HEAD\r\n");
            return;
        }
        struct buf detail = BUF_INIT;
        int ready = server.ready ? server.ready(&detail) : 1;
        if (detail.oom) {
            buf_free(&detail);
            respond_error(c, 500, ka, NULL);
            return;
        }
        static const char ok[] = "{\"status\":\"ready\"}";
        if (ready)
            respond_full(c, 200, "application/json", (const uint8_t *)ok, sizeof(ok) - 1, ka, NULL,
                         head);
        else
            respond_full(c, 503, "application/json", detail.p, detail.len, ka, NULL, head);
        buf_free(&detail);
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
    if (path_is(r, "/status") || path_is(r, "/status/info") || path_is(r, "/status/metrics")) {
        status_route(c, r, ka);
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
    respond_error_to(c, 404, ka, NULL, head);
}

/* After the requests of one read: the deadline of what the connection waits for next,
 * counted from now when a request came whole meanwhile. */
static void read_done(struct http_conn *h, enum http_phase next)
{
    if (conn_closing(h->c))
        return; /* its own close deadline stands */
    set_phase(h, next);
}

static size_t take_requests(struct http_conn *h, uint8_t *p, size_t len)
{
    struct conn *c = h->c;
    const struct config *cfg = server.config;
    struct http_limits lim = {cfg->max_request_head, HTTP_MAX_HEADERS};
    size_t used = 0;
    /* None while the output is full (a peer that pipelines without reading gets every
     * response, whole and in order, as it reads them), nor while answers that wait for
     * those ahead of them hold as much; API calls up to HTTP_MAX_CALLS at once, any
     * other request only once every call ahead of it has answered. */
    while (used < len && !conn_closing(c) && !conn_output_full(c) && !h->last && !h->limiting &&
           h->ncalls < HTTP_MAX_CALLS && h->held < cfg->client_queue_max) {
        if (h->skip_body) {
            size_t n = len - used < h->skip_body ? len - used : (size_t)h->skip_body;
            used += n;
            h->skip_body -= n;
            continue;
        }
        struct http_request req;
        int rc = http_parse_request(p + used, len - used, &lim, &req);
        if (rc == 0) {
            read_done(h, PHASE_HEAD);
            return used;
        }
        if (rc < 0) {
            if (rc == -431)
                metrics_add(loop_id(conn_loop(c)), METRIC_LIMIT_HEAD_SIZE, 1);
            respond_error(c, -rc, 0, NULL);
            return len;
        }
        size_t head = (size_t)rc;
        if (req.has_transfer_encoding) {
            /* RFC 9112 §6.3: chunked not final (or twice) leaves no length: 400, as for
             * any Transfer-Encoding on HTTP/1.0 (§6.1). A chunked body has one, but we
             * take Content-Length bodies only (every API client sends one): 411. Both
             * close: what follows cannot be told from the body. */
            int te_ok = req.transfer_chunked && req.minor_version == 1;
            respond_error_to(c, te_ok ? 411 : 400, 0, NULL, req.method == HTTP_HEAD);
            return len;
        }
        uint64_t body_len = req.content_length > 0 ? (uint64_t)req.content_length : 0;
        if (body_len > cfg->max_request_body) {
            respond_error_to(c, 413, 0, NULL, req.method == HTTP_HEAD);
            return len;
        }
        int call = wants_body(cfg, &req); /* the API key compared once a request */
        if (h->ncalls && !call) {
            if (h->phase == PHASE_TAKEN)
                read_done(h, PHASE_IDLE);
            return used; /* answered after the calls ahead of it */
        }
        if (!call) {
            if (body_len && path_is(&req, "/connection/websocket")) {
                /* the body would be read as frames */
                respond_error_to(c, 400, 0, NULL, req.method == HTTP_HEAD);
                return len;
            }
            used += head;
            h->skip_body = body_len;
            h->last = !req.keep_alive;
            route(h, &req, NULL, 0, 0);
        } else {
            if (len - used - head < body_len) {
                read_done(h, PHASE_BODY);
                return used; /* wait for the rest of the body */
            }
            h->last = !req.keep_alive; /* nothing after a request that closes */
            route(h, &req, p + used + head, (size_t)body_len, 1);
            used += head + (size_t)body_len;
        }
        /* Upgraded: the WebSocket side reads the rest. By the handler, not by the state:
         * h is freed then, and the session made next may well get its address. */
        if (conn_handler_of(c) != &http_handler)
            return used;
        /* Whatever it was: the next deadline starts once this read is done. */
        h->phase = PHASE_TAKEN;
    }
    if (h->phase == PHASE_TAKEN)
        read_done(h, PHASE_IDLE);
    return conn_closing(c) ? len : used;
}

static size_t on_data(struct conn *c, uint8_t *p, size_t len)
{
    struct http_conn *h = conn_ud(c);
    if (h->limiting) {
        if (len > HTTP_MAX_EARLY_INPUT)
            conn_abort(c);
        return 0;
    }
    size_t used = take_requests(h, p, len);
    resp_commit(); /* the answers of this read, in one frame */
    return used;
}

static void on_timer(struct conn *c)
{
    struct http_conn *h = conn_ud(c);
    if (h && h->phase == PHASE_HEAD)
        metrics_add(loop_id(conn_loop(c)), METRIC_LIMIT_HEAD_TIMEOUTS, 1);
    conn_abort(c); /* a head or body not in time, or idle */
}

static void on_shutdown(struct conn *c)
{
    if (conn_queued_bytes(c) == 0)
        conn_abort(c);
    else
        conn_close_after_flush(c, HTTP_CLOSE_SEC);
}

static void on_gone(struct conn *c)
{
    struct http_conn *h = conn_ud(c);
    if (h == NULL)
        return;
    resp_discard(h);
    if (h->ncalls || h->limiting)
        h->dead = 1; /* freed by the last answer */
    else
        free(h);
}

/* Over the output budget an HTTP connection is aborted (no over_budget). */
static const struct conn_handler http_handler = {on_data, on_timer, on_shutdown, on_gone, NULL};

void http_accept(struct conn *c, void *ud)
{
    struct http_conn *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        conn_abort(c);
        return;
    }
    h->c = c;
    h->calls_tail = &h->calls;
    h->metrics_only = (uint8_t)(ud == &server); /* http_metrics_accept */
    conn_set_handler(c, &http_handler, h);
    h->phase = PHASE_IDLE;
    set_phase(h, PHASE_HEAD); /* the first request's head, from the accept */
}

void http_metrics_accept(struct conn *c, void *ud)
{
    http_accept(c, &server);
}
