/* herald-ceiling: the machine's ceiling for docs/benchmarks.md (issue 7). A minimal
 * single-threaded epoll server that speaks just enough of herald's wire protocol for
 * build/herald-bench (fanout, channels) to drive it unchanged: the WebSocket upgrade,
 * connect/subscribe replies, POST /api/publish, /api/batch (publish commands), /api/info,
 * /health; keep-alive, pipelined requests answered in order. Each publication is
 * framed once; per loop iteration every subscriber gets ONE write of all its channel's
 * frames. It is a yardstick, not a server: no auth (any API key, any token), no JSON
 * validation (ids and channels found by scanning; publish bodies must put "channel"
 * before "data"), no history, presence, pings, limits, UTF-8 checks or fragmentation. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>

/* A growable byte buffer; allocation failure ends the process (a yardstick). */
struct bytes {
    uint8_t *p;
    size_t len, cap;
};

static void bytes_add(struct bytes *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (b->p == NULL) {
            perror("herald-ceiling: realloc");
            exit(3);
        }
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

struct channel;

#define CONN_CHANNELS 8

struct conn {
    int fd;
    int ws;           /* upgraded to WebSocket */
    int dead;         /* closed at the end of this iteration */
    int want_out;     /* EPOLLOUT registered */
    struct bytes in;  /* unparsed bytes left from the last read */
    struct bytes out; /* bytes the kernel did not take yet (backpressure only) */
    struct channel *chans[CONN_CHANNELS];
    int nchans;
    struct conn *next_dead;
};

struct channel {
    char *name;
    size_t name_len;
    struct conn **subs;
    size_t nsubs, cap;
    struct bytes batch; /* frames published to it in this iteration */
    struct channel *next_dirty;
    int dirty;
};

static int ep;
static struct conn **conns; /* by fd */
static size_t nconns_cap;
static struct channel **table; /* open addressing, power-of-two size */
static size_t table_cap, table_used;
static struct channel *dirty_head;
static struct conn *dead; /* closed at the end of the iteration (fan-out holds pointers) */
static uint8_t rbuf[1 << 20];
static struct bytes reply; /* what one read's requests answer, written at once */

/* ---- channels ---- */

static uint64_t hash(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static struct channel *channel_get(const uint8_t *name, size_t n, int create)
{
    if (table_cap == 0 || (create && (table_used + 1) * 2 > table_cap)) {
        size_t cap = table_cap ? table_cap * 2 : 1024;
        struct channel **t = calloc(cap, sizeof(*t));
        if (t == NULL)
            exit(3);
        for (size_t i = 0; i < table_cap; i++) {
            if (table[i] == NULL)
                continue;
            size_t j = hash((uint8_t *)table[i]->name, table[i]->name_len) & (cap - 1);
            while (t[j] != NULL)
                j = (j + 1) & (cap - 1);
            t[j] = table[i];
        }
        free(table);
        table = t;
        table_cap = cap;
    }
    size_t j = hash(name, n) & (table_cap - 1);
    for (; table[j] != NULL; j = (j + 1) & (table_cap - 1)) {
        if (table[j]->name_len == n && memcmp(table[j]->name, name, n) == 0)
            return table[j];
    }
    if (!create)
        return NULL;
    struct channel *ch = calloc(1, sizeof(*ch));
    if (ch == NULL || (ch->name = malloc(n + 1)) == NULL)
        exit(3);
    memcpy(ch->name, name, n);
    ch->name[n] = '\0';
    ch->name_len = n;
    table[j] = ch;
    table_used++;
    return ch;
}

static void channel_add(struct channel *ch, struct conn *c)
{
    for (int i = 0; i < c->nchans; i++)
        if (c->chans[i] == ch)
            return;
    if (c->nchans == CONN_CHANNELS)
        return; /* a yardstick: a handful of subscriptions per connection */
    if (ch->nsubs == ch->cap) {
        ch->cap = ch->cap ? ch->cap * 2 : 4;
        ch->subs = realloc(ch->subs, ch->cap * sizeof(*ch->subs));
        if (ch->subs == NULL)
            exit(3);
    }
    ch->subs[ch->nsubs++] = c;
    c->chans[c->nchans++] = ch;
}

static void channel_remove(struct channel *ch, struct conn *c)
{
    for (size_t i = 0; i < ch->nsubs; i++) {
        if (ch->subs[i] == c) {
            ch->subs[i] = ch->subs[--ch->nsubs];
            return;
        }
    }
}

/* ---- connections ---- */

static void set_out_interest(struct conn *c, int want)
{
    if (c->want_out == want)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.fd = c->fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want;
}

static void conn_kill(struct conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    c->next_dead = dead;
    dead = c;
}

/* One write of p; what the kernel does not take waits in c->out for EPOLLOUT. Bytes
 * behind earlier unsent bytes queue behind them (order is kept, nothing is dropped). */
static void conn_send(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->dead || n == 0)
        return;
    if (c->out.len > 0) {
        bytes_add(&c->out, p, n);
        return;
    }
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_kill(c);
            return;
        }
        w = 0;
    }
    if ((size_t)w < n) {
        bytes_add(&c->out, p + w, n - (size_t)w);
        set_out_interest(c, 1);
    }
}

static void conn_flush(struct conn *c)
{
    while (c->out.len > 0) {
        ssize_t w = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_kill(c);
            return;
        }
        memmove(c->out.p, c->out.p + w, c->out.len - (size_t)w);
        c->out.len -= (size_t)w;
    }
    set_out_interest(c, 0);
}

static void reap(void)
{
    while (dead != NULL) {
        struct conn *c = dead;
        dead = c->next_dead;
        for (int k = 0; k < c->nchans; k++)
            channel_remove(c->chans[k], c);
        conns[c->fd] = NULL;
        close(c->fd); /* also leaves the epoll set */
        free(c->in.p);
        free(c->out.p);
        free(c);
    }
}

/* ---- WebSocket (RFC 6455) ---- */

/* Server frame head: FIN + opcode, unmasked length (RFC 6455 §5.2). */
static size_t frame_head(uint8_t *h, int opcode, size_t n)
{
    h[0] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        h[1] = (uint8_t)n;
        return 2;
    }
    if (n < 65536) {
        h[1] = 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)(n >> (56 - 8 * i));
    return 10;
}

static void reply_frame(const char *text, size_t n)
{
    uint8_t h[10];
    bytes_add(&reply, h, frame_head(h, 1, n));
    bytes_add(&reply, text, n);
}

/* The value of "key": in p as digits (ids), or as a string's bytes (channels). */
static const uint8_t *scan_after(const uint8_t *p, size_t n, const char *key, size_t *rest)
{
    size_t kl = strlen(key);
    const uint8_t *k = memmem(p, n, key, kl);
    if (k == NULL)
        return NULL;
    *rest = n - (size_t)(k - p) - kl;
    return k + kl;
}

static void on_command(struct conn *c, const uint8_t *p, size_t n)
{
    size_t rest = 0, idl = 0;
    const uint8_t *id = scan_after(p, n, "\"id\":", &rest);
    while (id != NULL && idl < rest && idl < 20 && id[idl] >= '0' && id[idl] <= '9')
        idl++;
    char text[160];
    int tl;
    if (memmem(p, n, "\"connect\":", 10) != NULL) {
        tl = snprintf(text, sizeof(text),
                      "{\"id\":%.*s,\"connect\":{\"client\":\"x\",\"version\":\"0\","
                      "\"ping\":25,\"pong\":true}}",
                      (int)idl, id ? (const char *)id : "");
    } else if (memmem(p, n, "\"subscribe\":", 12) != NULL) {
        const uint8_t *ch = scan_after(p, n, "\"channel\":\"", &rest);
        const uint8_t *q = ch ? memchr(ch, '"', rest) : NULL;
        if (q == NULL)
            return;
        channel_add(channel_get(ch, (size_t)(q - ch), 1), c);
        tl = snprintf(text, sizeof(text), "{\"id\":%.*s,\"subscribe\":{}}", (int)idl,
                      id ? (const char *)id : "");
    } else {
        return; /* {} (pong) and everything else: ignored */
    }
    reply_frame(text, (size_t)tl);
}

/* Parse client frames in p; returns the bytes consumed (whole frames only). */
static size_t ws_feed(struct conn *c, uint8_t *p, size_t n)
{
    size_t off = 0;
    while (n - off >= 2) {
        uint8_t *f = p + off;
        int opcode = f[0] & 0x0f;
        size_t hl = 2, len = f[1] & 0x7f;
        if (len == 126) {
            if (n - off < 4)
                break;
            len = (size_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (len == 127) {
            if (n - off < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | f[2 + i];
            hl = 10;
        }
        int masked = f[1] & 0x80;
        if (masked)
            hl += 4;
        if (len > sizeof(rbuf) / 2) {
            conn_kill(c);
            return n;
        }
        if (n - off < hl + len)
            break;
        uint8_t *d = f + hl;
        for (size_t i = 0; masked && i < len; i++)
            d[i] ^= f[hl - 4 + (i & 3)];
        off += hl + len;
        if (opcode == 8) { /* close: no closing handshake, just go */
            conn_kill(c);
            return n;
        }
        if (opcode != 1)
            continue;                  /* pings, pongs, binary and continuation frames: ignored */
        for (size_t i = 0; i < len;) { /* commands separated by "\n" */
            const uint8_t *nl = memchr(d + i, '\n', len - i);
            size_t end = nl ? (size_t)(nl - d) : len;
            if (end > i)
                on_command(c, d + i, end - i);
            i = end + 1;
        }
    }
    return off;
}

/* ---- HTTP ---- */

static void http_reply(const char *status, const char *body)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     status, strlen(body));
    bytes_add(&reply, head, (size_t)n);
    bytes_add(&reply, body, strlen(body));
}

/* Value of header name (with its ':') in the head, trimmed; NULL if absent. */
static const uint8_t *header(const uint8_t *h, size_t n, const char *name, size_t *vl)
{
    size_t nl = strlen(name);
    for (const uint8_t *l = memchr(h, '\n', n); l != NULL && (size_t)(l - h) + 1 < n;
         l = memchr(l + 1, '\n', n - (size_t)(l + 1 - h))) {
        const uint8_t *s = l + 1, *end = h + n;
        if ((size_t)(end - s) <= nl || strncasecmp((const char *)s, name, nl) != 0)
            continue;
        s += nl;
        while (s < end && (*s == ' ' || *s == '\t'))
            s++;
        const uint8_t *e = memchr(s, '\r', (size_t)(end - s));
        *vl = (size_t)((e ? e : end) - s);
        return s;
    }
    return NULL;
}

/* Frame {"push":{"channel":ch,"pub":{"data":data}}} once, into the channel's batch. */
static void publish(const uint8_t *body, size_t n)
{
    size_t rest;
    const uint8_t *name = scan_after(body, n, "\"channel\":\"", &rest);
    const uint8_t *q = name ? memchr(name, '"', rest) : NULL;
    const uint8_t *data = scan_after(body, n, "\"data\":", &rest);
    const uint8_t *end = body + n;
    while (end > body && end[-1] != '}')
        end--; /* the body's closing brace ends data */
    if (q == NULL || data == NULL || end <= data)
        return;
    struct channel *ch = channel_get(name, (size_t)(q - name), 0);
    if (ch == NULL || ch->nsubs == 0)
        return;
    static const char open[] = "{\"push\":{\"channel\":\"", mid[] = "\",\"pub\":{\"data\":";
    size_t dl = (size_t)(end - 1 - data);
    size_t pl = sizeof(open) - 1 + ch->name_len + sizeof(mid) - 1 + dl + 3;
    uint8_t h[10];
    bytes_add(&ch->batch, h, frame_head(h, 1, pl));
    bytes_add(&ch->batch, open, sizeof(open) - 1);
    bytes_add(&ch->batch, ch->name, ch->name_len);
    bytes_add(&ch->batch, mid, sizeof(mid) - 1);
    bytes_add(&ch->batch, data, dl);
    bytes_add(&ch->batch, "}}}", 3);
    if (!ch->dirty) {
        ch->dirty = 1;
        ch->next_dirty = dirty_head;
        dirty_head = ch;
    }
}

/* The end of the JSON object or array at p (strings skipped), or NULL if it runs past end. */
static const uint8_t *json_end(const uint8_t *p, const uint8_t *end)
{
    int depth = 0, in_str = 0;
    for (; p < end; p++) {
        if (in_str) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                in_str = 0;
        } else if (*p == '"') {
            in_str = 1;
        } else if (*p == '{' || *p == '[') {
            depth++;
        } else if ((*p == '}' || *p == ']') && --depth == 0) {
            return p + 1;
        }
    }
    return NULL;
}

/* POST /api/batch, publish commands only: {"commands":[{"publish":{...}},...]}, answered
 * {"replies":[{"publish":{}},...]} in order; any other command gets an error reply. */
static void batch(const uint8_t *body, size_t n)
{
    static struct bytes out;
    out.len = 0;
    bytes_add(&out, "{\"replies\":[", 12);
    size_t rest;
    const uint8_t *p = scan_after(body, n, "\"commands\":", &rest);
    const uint8_t *end = body + n;
    while (p != NULL && p < end && *p != '[')
        p++;
    int k = 0;
    for (p = p ? p + 1 : NULL; p != NULL && p < end && *p != ']'; k++) {
        while (p < end && (*p == ' ' || *p == ',' || *p == '\n'))
            p++;
        const uint8_t *e = p < end && *p == '{' ? json_end(p, end) : NULL;
        if (e == NULL)
            break;
        static const char pub[] = "{\"publish\":";
        const uint8_t *o = p + sizeof(pub) - 1;
        if (k)
            bytes_add(&out, ",", 1);
        if ((size_t)(e - p) > sizeof(pub) && memcmp(p, pub, sizeof(pub) - 1) == 0 && *o == '{') {
            const uint8_t *oe = json_end(o, e);
            publish(o, (size_t)((oe ? oe : e) - o));
            bytes_add(&out, "{\"publish\":{}}", 14);
        } else {
            static const char err[] = "{\"error\":{\"code\":102,\"message\":\"unknown method\"}}";
            bytes_add(&out, err, sizeof(err) - 1);
        }
        p = e;
        while (p < end && (*p == ' ' || *p == ',' || *p == '\n'))
            p++;
    }
    bytes_add(&out, "]}", 2);
    char head[128];
    int m = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     out.len);
    bytes_add(&reply, head, (size_t)m);
    bytes_add(&reply, out.p, out.len);
}

/* Parse pipelined requests in p; returns the bytes consumed. */
static size_t http_feed(struct conn *c, uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n && !c->ws) {
        const uint8_t *h = p + off;
        const uint8_t *e = memmem(h, n - off, "\r\n\r\n", 4);
        if (e == NULL)
            break;
        size_t hl = (size_t)(e - h) + 4, vl = 0, clen = 0;
        const uint8_t *v = header(h, hl, "content-length:", &vl);
        for (size_t i = 0; v != NULL && i < vl && v[i] >= '0' && v[i] <= '9'; i++)
            clen = clen * 10 + (size_t)(v[i] - '0');
        if (clen > sizeof(rbuf) / 2) {
            conn_kill(c);
            return n;
        }
        if (n - off < hl + clen)
            break;
        const uint8_t *body = h + hl;
        off += hl + clen;
        const uint8_t *sp = memchr(h, ' ', hl);
        const uint8_t *sp2 = sp ? memchr(sp + 1, ' ', hl - (size_t)(sp + 1 - h)) : NULL;
        if (sp2 == NULL) {
            conn_kill(c);
            return n;
        }
        size_t pl = (size_t)(sp2 - sp - 1);
        const char *path = (const char *)sp + 1;
        if (pl == 21 && memcmp(path, "/connection/websocket", 21) == 0 &&
            (v = header(h, hl, "sec-websocket-key:", &vl)) != NULL && vl < 64) {
            /* RFC 6455 §4.2.2: base64(SHA-1(key + GUID)) */
            uint8_t cat[128], md[SHA_DIGEST_LENGTH];
            char accept[40], head[200];
            memcpy(cat, v, vl);
            memcpy(cat + vl, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
            SHA1(cat, vl + 36, md);
            EVP_EncodeBlock((unsigned char *)accept, md, sizeof(md));
            int m = snprintf(head, sizeof(head),
                             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                             accept);
            bytes_add(&reply, head, (size_t)m);
            c->ws = 1;
        } else if (pl == 12 && memcmp(path, "/api/publish", 12) == 0) {
            publish(body, clen);
            http_reply("200 OK", "{\"result\":{}}");
        } else if (pl == 10 && memcmp(path, "/api/batch", 10) == 0) {
            batch(body, clen);
        } else if (pl == 9 && memcmp(path, "/api/info", 9) == 0) {
            long pages = 0;
            FILE *f = fopen("/proc/self/statm", "r");
            if (f != NULL) {
                if (fscanf(f, "%*d %ld", &pages) != 1)
                    pages = 0;
                fclose(f);
            }
            char text[160];
            snprintf(text, sizeof(text), "{\"result\":{\"nodes\":[{\"process\":{\"rss\":%lld}}]}}",
                     (long long)pages * sysconf(_SC_PAGESIZE));
            http_reply("200 OK", text);
        } else if (pl == 7 && memcmp(path, "/health", 7) == 0) {
            http_reply("200 OK", "{\"status\":\"ok\"}");
        } else {
            http_reply("404 Not Found", "{}");
        }
    }
    return off;
}

/* ---- the loop ---- */

static void on_readable(struct conn *c)
{
    size_t have = c->in.len;
    if (have > 0)
        memcpy(rbuf, c->in.p, have); /* leftovers are small: a partial request or frame */
    ssize_t r = read(c->fd, rbuf + have, sizeof(rbuf) - have);
    if (r <= 0) {
        if (r == 0 || (errno != EAGAIN && errno != EINTR))
            conn_kill(c);
        return;
    }
    size_t n = have + (size_t)r, off = 0;
    reply.len = 0;
    if (!c->ws)
        off = http_feed(c, rbuf, n);
    if (c->ws && !c->dead)
        off += ws_feed(c, rbuf + off, n - off);
    conn_send(c, reply.p, reply.len);
    c->in.len = 0;
    if (!c->dead && off < n) {
        if (n - off > sizeof(rbuf) / 2)
            conn_kill(c);
        else
            bytes_add(&c->in, rbuf + off, n - off);
    }
}

/* Every channel that got publications in this iteration: one write per subscriber. */
static void fan_out(void)
{
    while (dirty_head != NULL) {
        struct channel *ch = dirty_head;
        dirty_head = ch->next_dirty;
        ch->dirty = 0;
        for (size_t i = 0; i < ch->nsubs; i++)
            conn_send(ch->subs[i], ch->batch.p, ch->batch.len);
        ch->batch.len = 0;
    }
}

static void on_accept(int lfd)
{
    for (int k = 0; k < 256; k++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if ((size_t)fd >= nconns_cap) {
            size_t cap = nconns_cap ? nconns_cap : 1024;
            while (cap <= (size_t)fd)
                cap *= 2;
            conns = realloc(conns, cap * sizeof(*conns));
            if (conns == NULL)
                exit(3);
            memset(conns + nconns_cap, 0, (cap - nconns_cap) * sizeof(*conns));
            nconns_cap = cap;
        }
        struct conn *c = calloc(1, sizeof(*c));
        if (c == NULL)
            exit(3);
        c->fd = fd;
        conns[fd] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: herald-ceiling --listen 127.0.0.1:PORT\n"
               "  A minimal single-threaded epoll fan-out server: the machine's ceiling for\n"
               "  herald-bench fanout/channels (WebSocket /connection/websocket, POST\n"
               "  /api/publish, /api/batch, /api/info, GET /health). No auth, no validation,\n"
               "  no history.\n");
}

int main(int argc, char **argv)
{
    const char *listen_at = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_at = argv[++i];
        } else if (strncmp(argv[i], "--listen=", 9) == 0) {
            listen_at = argv[i] + 9;
        } else {
            usage(stderr);
            return 2;
        }
    }
    char host[64];
    int port = 0;
    struct sockaddr_in a = {.sin_family = AF_INET};
    if (listen_at == NULL || sscanf(listen_at, "%63[^:]:%d", host, &port) != 2 || port <= 0 ||
        port > 65535 || inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "herald-ceiling: --listen IPV4:PORT is required\n");
        usage(stderr);
        return 2;
    }
    a.sin_port = htons((uint16_t)port);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 4096) != 0) {
        perror("herald-ceiling: listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    fprintf(stderr, "herald-ceiling: listening on %s\n", listen_at);
    static struct epoll_event evs[1024];
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, -1);
        if (n < 0 && errno != EINTR) {
            perror("herald-ceiling: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                on_accept(lfd);
                continue;
            }
            struct conn *c = (size_t)fd < nconns_cap ? conns[fd] : NULL;
            if (c == NULL || c->dead)
                continue;
            if (evs[i].events & EPOLLOUT)
                conn_flush(c);
            if (!c->dead && evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(c);
        }
        fan_out();
        reap();
    }
}
