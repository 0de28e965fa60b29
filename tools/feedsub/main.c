/* feedsub: one WebSocket subscriber to a herald change channel, for scripts/bench-feed. It
 * speaks Centrifugo's JSON protocol directly over a minimal RFC 6455 client (blocking socket,
 * poll(), masked frames out, unmasked in): connect with a token, subscribe to one channel, then
 * for each publication read the row's "ts" (microseconds since the epoch, clock_timestamp() at
 * the insert) and take now - ts as the commit-to-client latency (same machine, same clock), and
 * now - "commit_time" (PostgreSQL's commit timestamp, as herald sends it) next to it.
 *
 *   feedsub --host 127.0.0.1 --port P --token T [--channel table:public.bench]
 *           [--idle-ms 2000] [--max-s 30] [--ready FILE]
 *
 * Writes FILE once subscribed. Ends after --idle-ms without a publication (once one came), or
 * after --max-s. Prints key=value lines: received, rate (received over first..last arrival),
 * the count and rate at SIGUSR1 (sent when the load ends: the rate while it ran),
 * p50/p90/p99/max latency in ms (from ts, and from commit_time), order errors (a writer's "seq"
 * not one more than its last: lost, repeated or reordered), duplicate ids, its CPU seconds. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_WRITERS 1024

static int64_t now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static int64_t mono_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int sock;

static void die(const char *m) {
    fprintf(stderr, "feedsub: %s%s%s\n", m, errno ? ": " : "", errno ? strerror(errno) : "");
    exit(1);
}

static void send_all(const void *p, size_t n) {
    const char *s = p;
    while (n) {
        ssize_t w = send(sock, s, n, MSG_NOSIGNAL);
        if (w < 0) { if (errno == EINTR) continue; die("send"); }
        s += w, n -= (size_t)w;
    }
}

/* One masked client frame (the mask is fixed: nothing here needs it to be secret). */
static void send_frame(int opcode, const char *p, size_t n) {
    unsigned char h[14], mask[4] = {0x12, 0x34, 0x56, 0x78};
    size_t hl = 0;
    h[hl++] = 0x80 | (unsigned char)opcode;
    if (n < 126) h[hl++] = 0x80 | (unsigned char)n;
    else if (n < 65536) { h[hl++] = 0x80 | 126; h[hl++] = n >> 8; h[hl++] = n & 255; }
    else { h[hl++] = 0x80 | 127; for (int i = 7; i >= 0; i--) h[hl++] = (n >> (8 * i)) & 255; }
    memcpy(h + hl, mask, 4); hl += 4;
    char *m = malloc(hl + n);
    memcpy(m, h, hl);
    for (size_t i = 0; i < n; i++) m[hl + i] = p[i] ^ mask[i % 4];
    send_all(m, hl + n);
    free(m);
}

/* Received bytes not yet parsed. */
static char *in;
static size_t in_len, in_cap;

static int read_some(int timeout_ms) {
    struct pollfd p = {.fd = sock, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms);
    if (r < 0) { if (errno == EINTR) return 0; die("poll"); }
    if (r == 0) return 0;
    if (in_cap - in_len < 65536) in = realloc(in, in_cap = in_cap * 2 + 65536);
    ssize_t n = recv(sock, in + in_len, in_cap - in_len, 0);
    if (n < 0) { if (errno == EINTR || errno == EAGAIN) return 0; die("recv"); }
    if (n == 0) { errno = 0; die("herald closed the connection"); }
    in_len += (size_t)n;
    return 1;
}

/* The integer after key (searched from s), or -1. */
static long long field(const char *s, const char *key) {
    const char *p = strstr(s, key);
    if (!p) return -1;
    p += strlen(key);
    while (*p == ' ') p++;
    return strtoll(p, NULL, 10);
}

/* "2026-12-01T14:36:05.993986Z" after "commit_time": in s, as microseconds since the epoch;
 * or -1. */
static int64_t commit_time(const char *s) {
    const char *p = strstr(s, "\"commit_time\":\"");
    if (!p) return -1;
    p += 15;
    struct tm tm = {0};
    const char *e = strptime(p, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!e) return -1;
    int64_t us = 0, scale = 100000;
    if (*e == '.')
        for (e++; *e >= '0' && *e <= '9'; e++, scale /= 10) us += (*e - '0') * scale;
    return (int64_t)timegm(&tm) * 1000000 + us;
}

static size_t n, cap, ncommit;
static int64_t *lat, *clat, first, last, first_rt, last_rt;
static long long *last_seq, order_errors, dups, unparsed, others;
static uint8_t *ids;
static size_t idcap = 1 << 24;
static int subscribed;
static volatile sig_atomic_t got_usr1;
static void on_usr1(int sig) { (void)sig; got_usr1 = 1; }

static void on_message(char *m) {
    if (!strncmp(m, "{}", 2) && m[2] == 0) { send_frame(1, "{}", 2); return; } /* ping */
    char *row = strstr(m, "\"pub\":");
    if (!row) {
        if (strstr(m, "\"error\"")) { fprintf(stderr, "feedsub: %s\n", m); exit(1); }
        if (!strncmp(m, "{\"id\":2,", 8)) subscribed = 1;
        else others++;
        return;
    }
    if (!strstr(row, "\"op\":\"INSERT\"")) { others++; return; }
    int64_t t = now_us();
    last = mono_us();
    last_rt = t;
    if (!n) first = last, first_rt = t;
    char *r = strstr(row, "\"row\":");
    if (!r) { unparsed++; return; }
    long long ts = field(r, "\"ts\":"), id = field(r, "\"id\":");
    long long w = field(r, "\"writer\":"), seq = field(r, "\"seq\":");
    int64_t ct = commit_time(row);
    if (ts < 0 || id < 0 || w < 0 || w >= MAX_WRITERS) { unparsed++; return; }
    if (n == cap) {
        cap = cap ? cap * 2 : 1 << 20;
        lat = realloc(lat, cap * sizeof *lat);
        clat = realloc(clat, cap * sizeof *clat);
    }
    lat[n++] = t - ts;
    if (ct >= 0) clat[ncommit++] = t - ct;
    if (seq != last_seq[w] + 1) order_errors++;
    last_seq[w] = seq;
    while ((size_t)id >= idcap) {
        ids = realloc(ids, idcap / 4);
        memset(ids + idcap / 8, 0, idcap / 8);
        idcap *= 2;
    }
    if (ids[id / 8] & (1 << (id % 8))) dups++;
    ids[id / 8] |= 1 << (id % 8);
}

/* Parse whole frames out of in[]; each text frame holds one or more JSON objects, one a line. */
static void parse(void) {
    static char *msg;
    static size_t msg_len, msg_cap;
    size_t off = 0;
    for (;;) {
        unsigned char *b = (unsigned char *)in + off;
        size_t avail = in_len - off;
        if (avail < 2) break;
        int fin = b[0] & 0x80, op = b[0] & 15;
        uint64_t len = b[1] & 127;
        size_t hl = 2;
        if (b[1] & 0x80) { errno = 0; die("masked server frame"); }
        if (len == 126) { if (avail < 4) break; len = (uint64_t)b[2] << 8 | b[3]; hl = 4; }
        else if (len == 127) {
            if (avail < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = len << 8 | b[2 + i];
            hl = 10;
        }
        if (avail < hl + len) break;
        char *p = (char *)b + hl;
        off += hl + len;
        if (op == 8) { errno = 0; fprintf(stderr, "feedsub: close frame %d\n", len >= 2 ? (unsigned char)p[0] << 8 | (unsigned char)p[1] : 0); exit(1); }
        if (op == 9) { send_frame(10, p, len); continue; }
        if (op == 10) continue;
        if (msg_len + len + 1 > msg_cap) msg = realloc(msg, msg_cap = (msg_len + len + 1) * 2);
        memcpy(msg + msg_len, p, len);
        msg_len += len;
        if (!fin) continue;
        msg[msg_len] = 0;
        for (char *s = msg, *nl; s && *s; s = nl ? nl + 1 : NULL) {
            nl = strchr(s, '\n');
            if (nl) *nl = 0;
            on_message(s);
        }
        msg_len = 0;
    }
    memmove(in, in + off, in_len - off);
    in_len -= off;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *token = NULL, *channel = "table:public.bench", *ready = NULL;
    int port = 0;
    long idle_ms = 2000, max_s = 30;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--token")) token = argv[i + 1];
        else if (!strcmp(argv[i], "--channel")) channel = argv[i + 1];
        else if (!strcmp(argv[i], "--idle-ms")) idle_ms = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-s")) max_s = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--ready")) ready = argv[i + 1];
        else { fprintf(stderr, "feedsub: unknown option %s\n", argv[i]); return 2; }
    }
    if (!port || !token) { fprintf(stderr, "usage: feedsub --port P --token T [--host H] [--channel C] [--idle-ms N] [--max-s N] [--ready FILE]\n"); return 2; }
    last_seq = calloc(MAX_WRITERS, sizeof *last_seq);
    ids = calloc(idcap / 8, 1);
    sock = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) { errno = 0; die("--host: an IPv4 address"); }
    if (connect(sock, (struct sockaddr *)&a, sizeof a)) die("connect");
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[512];
    int rl = snprintf(req, sizeof req,
                      "GET /connection/websocket HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n", host, port);
    send_all(req, (size_t)rl);
    char *end;
    for (;;) {
        read_some(5000);
        if (in_len && (end = memmem(in, in_len, "\r\n\r\n", 4))) break;
    }
    if (in_len < 12 || memcmp(in + 9, "101", 3)) { errno = 0; die("no 101 Switching Protocols"); }
    size_t hlen = (size_t)(end + 4 - in);
    memmove(in, in + hlen, in_len - hlen);
    in_len -= hlen;
    size_t cl = strlen(token) + strlen(channel) + 128;
    char *cmd = malloc(cl);
    int cn = snprintf(cmd, cl, "{\"id\":1,\"connect\":{\"token\":\"%s\",\"name\":\"feedsub\"}}\n"
                               "{\"id\":2,\"subscribe\":{\"channel\":\"%s\"}}", token, channel);
    send_frame(1, cmd, (size_t)cn);
    int64_t start = mono_us();
    while (!subscribed) {
        if (mono_us() - start > 5000000) { errno = 0; die("no subscribe reply in 5 s"); }
        read_some(100);
        parse();
    }
    signal(SIGUSR1, on_usr1);
    if (ready) { FILE *f = fopen(ready, "w"); if (f) fclose(f); }
    size_t n_usr1 = 0;
    int64_t t_usr1 = 0;
    for (;;) {
        int64_t m = mono_us();
        if (got_usr1 == 1) { got_usr1 = 2; n_usr1 = n; t_usr1 = m; }
        if (m - start > max_s * 1000000) break;
        if (n && m - last > idle_ms * 1000) break;
        if (read_some(100)) parse();
    }
    qsort(lat, n, sizeof *lat, cmp64);
    qsort(clat, ncommit, sizeof *clat, cmp64);
    double span = (last - first) / 1e6;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("received=%zu\n", n);
    printf("rate=%.0f\n", span > 0 ? (n - 1) / span : 0.0);
    printf("span_s=%.3f\n", span);
    printf("at_usr1=%zu\nrate_at_usr1=%.0f\n", n_usr1, n_usr1 > 1 && t_usr1 > first ? (n_usr1 - 1) / ((t_usr1 - first) / 1e6) : 0.0);
    printf("first_us=%lld\nlast_us=%lld\n", (long long)first_rt, (long long)last_rt);
#define PCT(v, k, q) ((k) ? (v)[(size_t)(((k) - 1) * (q))] / 1000.0 : 0.0)
    printf("p50_ms=%.2f\np90_ms=%.2f\np99_ms=%.2f\nmax_ms=%.2f\n", PCT(lat, n, 0.5), PCT(lat, n, 0.9),
           PCT(lat, n, 0.99), PCT(lat, n, 1.0));
    printf("commit_p50_ms=%.2f\ncommit_p99_ms=%.2f\n", PCT(clat, ncommit, 0.5), PCT(clat, ncommit, 0.99));
    printf("order_errors=%lld\nduplicates=%lld\nunparsed=%lld\nother_messages=%lld\n", order_errors, dups,
           unparsed, others);
    printf("cpu_s=%.2f\n", ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    return 0;
}
