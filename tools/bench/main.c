/* herald-bench: load generator and checker for herald (issue 7). The parent parses
 * options, forks the workers that hold the WebSocket connections, publishes through
 * the server API, paces the phases (connect, measure, drain) and prints the report.
 * Usage: herald-bench --help. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "api.h"
#include "bench.h"
#include "core/buf.h"

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bench_err_add(struct bench_err *errs, const char *name, uint64_t n)
{
    for (int i = 0; i < BENCH_ERR_SLOTS; i++) {
        if (errs[i].name[0] == '\0') {
            snprintf(errs[i].name, sizeof(errs[i].name), "%s",
                     i == BENCH_ERR_SLOTS - 1 ? "other" : name);
            errs[i].count = n;
            return;
        }
        if (strcmp(errs[i].name, name) == 0 || i == BENCH_ERR_SLOTS - 1) {
            errs[i].count += n;
            return;
        }
    }
}

void bench_pub_body(struct buf *b, const char *channel, uint64_t t, uint64_t seq, uint32_t size)
{
    char head[96];
    int n = snprintf(head, sizeof(head), "{\"t\":%llu,\"s\":%llu,\"p\":\"", (unsigned long long)t,
                     (unsigned long long)seq);
    size_t fixed = (size_t)n + 2; /* the closing "} */
    size_t pad = size > fixed ? size - fixed : 0;
    buf_append_str(b, "{\"channel\":\"");
    buf_append_str(b, channel);
    buf_append_str(b, "\",\"data\":");
    buf_append(b, head, (size_t)n);
    if (buf_reserve(b, pad + 3) == 0) {
        memset(b->p + b->len, 'x', pad);
        b->len += pad;
    }
    buf_append_str(b, "\"}}");
}

/* ---- herald's process figures ---- */

static double herald_cpu_seconds(int pid)
{
    char path[64], text[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    char *p = strrchr(text, ')');
    if (p == NULL)
        return -1;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15) */
    unsigned long long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long long proc_rss(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long long kb = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = atoll(line + 6);
            break;
        }
    }
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* POST /api/info with a blocking socket; process.rss from the reply, or -1. */
static long long api_rss(const struct bench_opts *o)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    uv_ip4_addr(o->api_host, o->api_port, &a);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "POST /api/info HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: apikey %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: 2\r\n"
                     "Connection: close\r\n\r\n{}",
                     o->api_host, o->api_port, o->api_key ? o->api_key : "");
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    static char resp[1 << 16];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, resp + len, sizeof(resp) - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        resp[len] = '\0';
        char *body = strstr(resp, "\r\n\r\n");
        char *rss = body ? strstr(body, "\"rss\":") : NULL;
        if (rss != NULL && strchr(rss, '}') != NULL)
            break;
    }
    close(fd);
    resp[len] = '\0';
    char *r = strstr(resp, "\"rss\":");
    return r ? atoll(r + 6) : -1;
}

static long long herald_rss(const struct bench_opts *o)
{
    return o->pid > 0 ? proc_rss(o->pid) : api_rss(o);
}

/* The machine's kernel memory (idle scenario): slab (SReclaimable + SUnreclaim) from
 * /proc/meminfo, TCP sockets in use and their buffer pages from /proc/net/sockstat.
 * Machine-wide: both ends of a loopback connection count. -1 where unreadable. */
struct kmem {
    long long slab;      /* bytes */
    long long tcp_inuse; /* sockets */
    long long tcp_mem;   /* bytes (sockstat pages x page size) */
};

static void kmem_read(struct kmem *k)
{
    char line[256];
    long long sr = -1, su = -1;
    k->slab = k->tcp_inuse = k->tcp_mem = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f != NULL) {
        while (fgets(line, sizeof(line), f) != NULL) {
            if (strncmp(line, "SReclaimable:", 13) == 0)
                sr = atoll(line + 13);
            else if (strncmp(line, "SUnreclaim:", 11) == 0)
                su = atoll(line + 11);
        }
        fclose(f);
    }
    if (sr >= 0 && su >= 0)
        k->slab = (sr + su) * 1024;
    f = fopen("/proc/net/sockstat", "r");
    if (f != NULL) {
        while (fgets(line, sizeof(line), f) != NULL) {
            long long inuse, mem;
            char *m = strstr(line, " mem ");
            if (strncmp(line, "TCP:", 4) == 0 && sscanf(line, "TCP: inuse %lld", &inuse) == 1 &&
                m != NULL && sscanf(m, " mem %lld", &mem) == 1) {
                k->tcp_inuse = inuse;
                k->tcp_mem = mem * sysconf(_SC_PAGESIZE);
            }
        }
        fclose(f);
    }
}

/* ---- the parent ---- */

enum phase { PH_CONNECTING, PH_RUNNING, PH_FLUSH, PH_DRAIN, PH_STOPPING, PH_DONE };

struct workerref {
    uv_pipe_t pipe;
    struct buf in;
    pid_t pid;
    int fd;
    int ready;
    int final;
    int dead;
    struct bench_progress prog;
};

struct parent {
    struct bench_opts *o;
    uv_loop_t *loop;
    struct workerref *wr;
    uv_timer_t tick;
    uv_timer_t pace;
    uv_timer_t phase_timer;
    struct api_client *api;
    unsigned api_n;
    enum phase phase;
    uint64_t t_start, t_go, t_pub_end, t_stop;
    uint64_t t_drain, t_last_change, drain_seen; /* drain: last time deliveries grew */
    uint64_t cpu_self0, cpu_self1;
    double herald_cpu0, herald_cpu1;
    long long rss_before, rss_after, rss_end;
    struct kmem kmem_before, kmem_after; /* idle */
    uint32_t nchan;
    uint32_t *ok;       /* accepted publications per channel */
    uint64_t *next_seq; /* per channel */
    unsigned next_conn;   /* --batch: the API connection the next batch tries first */
    uint32_t *cursor;     /* --batch, channels: per API connection, its next channel's rank */
    uint32_t *batch_ch;   /* --batch: per request slot, the count then the channels */
    uint32_t *batch_free; /* --batch: free request slots */
    uint32_t batch_free_n;
    uint64_t sent, published, publish_errors;
    uint64_t subscribed; /* at GO, all workers */
    uint64_t last_published, last_delivered;
    struct buf body;
    struct bench_stats total;
    struct hist api_latency;
    double worker_cpu_max; /* CPU seconds of the busiest worker */
    int finals;
    /* the hypervisor's steal over the run, on the server's CPUs and the machine's */
    cpu_set_t server_cpus;
    long long steal_server0, steal_server1, steal_all0, steal_all1;
    uint32_t nwin;
    uint64_t *win; /* nwin * WIN_BUCKETS latency counts by publication window, all workers */
};

static struct parent P;

static uint64_t cpu_ns(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

static const char *scenario_name(int s)
{
    static const char *names[] = {"fanout", "channels", "idle", "churn"};
    return names[s];
}

struct ctl_write {
    uv_write_t req;
    uint8_t data[];
};

static void on_ctl_written(uv_write_t *req, int status)
{
    free(req);
}

static void send_worker(struct workerref *w, uint32_t type, const void *p, uint32_t len)
{
    if (w->dead)
        return;
    struct ctl_write *cw = malloc(sizeof(*cw) + sizeof(struct bench_msg) + len);
    if (cw == NULL)
        return;
    struct bench_msg m = {type, len};
    memcpy(cw->data, &m, sizeof(m));
    if (len)
        memcpy(cw->data + sizeof(m), p, len);
    uv_buf_t b = uv_buf_init((char *)cw->data, (unsigned)(sizeof(m) + len));
    if (uv_write(&cw->req, (uv_stream_t *)&w->pipe, &b, 1, on_ctl_written) != 0)
        free(cw);
}

static void send_all(uint32_t type, const void *p, uint32_t len)
{
    for (uint32_t i = 0; i < P.o->workers; i++)
        send_worker(&P.wr[i], type, p, len);
}

static void progress_sum(struct bench_progress *s)
{
    memset(s, 0, sizeof(*s));
    for (uint32_t i = 0; i < P.o->workers; i++) {
        s->connected += P.wr[i].prog.connected;
        s->subscribed += P.wr[i].prog.subscribed;
        s->failed += P.wr[i].prog.failed;
        s->delivered += P.wr[i].prog.delivered;
        s->completed += P.wr[i].prog.completed;
        if (P.wr[i].prog.connect_seconds > s->connect_seconds)
            s->connect_seconds = P.wr[i].prog.connect_seconds;
    }
}

static void start_stop(void);

static void on_phase_timer(uv_timer_t *t);

static void channel_of(uint32_t ch, char *name, size_t cap)
{
    if (P.o->scenario == BENCH_CHANNELS)
        snprintf(name, cap, "%s-%u", P.o->channel, ch);
    else
        snprintf(name, cap, "%s", P.o->channel);
}

/* --batch: the channels of the publications one POST /api/batch carries, in order (its
 * request tag is the slot's index). */
static uint32_t *batch_slot(uint32_t slot)
{
    return P.batch_ch + (size_t)slot * (P.o->batch + 1); /* [0]: the count */
}

/* One POST /api/batch of up to n publications on connection conn: fanout, all to the
 * channel; channels, round-robin over this connection's channels (those i with
 * i % connections == conn, so a channel's publications keep one connection and their
 * order). Returns the publications queued (0 when out of slots or memory). */
static uint32_t publish_batch(unsigned conn, uint64_t n, uint64_t now)
{
    const struct bench_opts *o = P.o;
    if (P.batch_free_n == 0 || n == 0)
        return 0;
    uint32_t slot = P.batch_free[P.batch_free_n - 1];
    uint32_t *chs = batch_slot(slot);
    uint32_t per_conn = (P.nchan - conn + P.api_n - 1) / P.api_n; /* channels of conn */
    buf_reset(&P.body);
    buf_append_str(&P.body, "{\"commands\":[");
    uint32_t k = 0;
    for (; k < n && k < o->batch; k++) {
        uint32_t ch = 0;
        if (o->scenario == BENCH_CHANNELS) {
            ch = conn + P.api_n * P.cursor[conn];
            if (++P.cursor[conn] >= per_conn)
                P.cursor[conn] = 0;
        }
        char name[300];
        channel_of(ch, name, sizeof(name));
        buf_append_str(&P.body, k ? ",{\"publish\":" : "{\"publish\":");
        bench_pub_body(&P.body, name, now, P.next_seq[ch], o->size);
        buf_append_char(&P.body, '}');
        chs[1 + k] = ch;
        P.next_seq[ch]++;
    }
    buf_append_str(&P.body, "]}");
    chs[0] = k;
    if (P.body.oom ||
        bench_api_post(P.api, conn, "/api/batch", P.body.p, P.body.len, slot, now) != 0) {
        for (uint32_t j = 0; j < k; j++) /* not sent: the sequence numbers are not used */
            P.next_seq[chs[1 + j]]--;
        if (o->scenario == BENCH_CHANNELS)
            P.cursor[conn] = (P.cursor[conn] + per_conn - k % per_conn) % per_conn;
        return 0;
    }
    P.batch_free_n--;
    return k;
}

static void publish_pump(void)
{
    const struct bench_opts *o = P.o;
    if (P.phase != PH_RUNNING || P.api == NULL)
        return;
    uint64_t now = bench_now_ns();
    uint64_t target = UINT64_MAX;
    if (o->rate > 0)
        target = (uint64_t)(o->rate * (double)(now - P.t_go) / 1e9) + 1;
    uint64_t lag_cap = UINT64_MAX, delivered = 0;
    uint64_t per_pub = o->scenario == BENCH_FANOUT ? P.subscribed : o->per_channel;
    if (o->rate == 0 && o->max_lag > 0) {
        struct bench_progress s;
        progress_sum(&s);
        lag_cap = o->max_lag;
        delivered = s.delivered;
    }
    while (P.sent < target) {
        if (lag_cap != UINT64_MAX && P.sent * per_pub > delivered + lag_cap)
            break; /* subscribers are this far behind: wait for their progress */
        if (o->batch > 0) {
            unsigned conn = P.api_n;
            for (unsigned i = 0; i < P.api_n && conn == P.api_n; i++)
                if (bench_api_can_send(P.api, (P.next_conn + i) % P.api_n))
                    conn = (P.next_conn + i) % P.api_n;
            if (conn == P.api_n)
                break;
            uint64_t n = target - P.sent;
            if (lag_cap != UINT64_MAX && per_pub > 0) {
                uint64_t room = (delivered + lag_cap - P.sent * per_pub) / per_pub + 1;
                if (n > room)
                    n = room;
            }
            uint32_t k = publish_batch(conn, n, now);
            if (k == 0)
                break;
            P.sent += k;
            P.next_conn = (conn + 1) % P.api_n;
            continue;
        }
        uint32_t ch = o->scenario == BENCH_CHANNELS ? (uint32_t)(P.sent % P.nchan) : 0;
        unsigned conn = ch % P.api_n;
        if (!bench_api_can_send(P.api, conn))
            break;
        char name[300];
        channel_of(ch, name, sizeof(name));
        buf_reset(&P.body);
        bench_pub_body(&P.body, name, now, P.next_seq[ch], o->size);
        if (P.body.oom ||
            bench_api_post(P.api, conn, "/api/publish", P.body.p, P.body.len, ch, now) != 0)
            break;
        P.next_seq[ch]++;
        P.sent++;
    }
    bench_api_flush(P.api);
}

#define DRAIN_QUIET_NS 1000000000ull /* no new delivery for this long: the rest is lost */
#define DRAIN_MAX_NS 20000000000ull

static uint64_t progress_count(void)
{
    struct bench_progress s;
    progress_sum(&s);
    return s.delivered + s.completed;
}

static void start_drain(void)
{
    P.phase = PH_DRAIN;
    P.t_drain = P.t_last_change = bench_now_ns();
    P.drain_seen = progress_count();
    uv_timer_start(&P.phase_timer, on_phase_timer, 250, 250);
}

static void maybe_drain(void)
{
    if (P.phase != PH_FLUSH || (P.api != NULL && bench_api_inflight(P.api) > 0))
        return;
    start_drain();
}

static void publication_ok(uint32_t ch, uint64_t sent_ns, uint64_t now)
{
    P.published++;
    if (ch < P.nchan)
        P.ok[ch]++;
    bench_hist_record(&P.api_latency, now - sent_ns);
}

static void publication_failed(int status, const uint8_t *body, size_t len)
{
    P.publish_errors++;
    char name[40];
    const uint8_t *c = memmem(body, len, "\"code\":", 7);
    if (status == 200 && c != NULL)
        snprintf(name, sizeof(name), "api_error_%d", atoi((const char *)c + 7));
    else
        snprintf(name, sizeof(name), "api_http_%d", status);
    bench_err_add(P.total.errs, name, 1);
}

/* The end of the JSON value starting at p (an object, array or string; scalars end at a
 * delimiter), or NULL if it does not end before end. */
static const uint8_t *json_value_end(const uint8_t *p, const uint8_t *end)
{
    int depth = 0, in_str = 0;
    for (; p < end; p++) {
        uint8_t c = *p;
        if (in_str) {
            if (c == '\\') {
                p++;
            } else if (c == '"') {
                in_str = 0;
                if (depth == 0)
                    return p + 1;
            }
            continue;
        }
        if (c == '"')
            in_str = 1;
        else if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']') {
            if (--depth <= 0)
                return depth == 0 ? p + 1 : NULL;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\n'))
            return p;
    }
    return NULL;
}

/* A batch's answer, {"replies":[R1,R2,...]} in the order of its commands: each reply an
 * accepted publication ({"publish":{...}}) or an error ({"error":{...}}). A failed
 * request, or replies missing, count as errors for the publications they leave. */
static void on_batch_reply(uint32_t slot, int status, const uint8_t *body, size_t len,
                           uint64_t sent_ns)
{
    uint32_t *chs = batch_slot(slot);
    uint32_t n = chs[0], k = 0;
    uint64_t now = bench_now_ns();
    static const char head[] = "{\"replies\":[";
    const uint8_t *end = body + len;
    if (status == 200 && len > sizeof(head) - 1 && memcmp(body, head, sizeof(head) - 1) == 0) {
        const uint8_t *p = body + sizeof(head) - 1;
        for (; k < n && p < end && *p != ']'; k++) {
            while (p < end && (*p == ' ' || *p == ','))
                p++;
            const uint8_t *e = p < end && *p == '{' ? json_value_end(p, end) : NULL;
            if (e == NULL)
                break;
            if ((size_t)(e - p) > 9 && memcmp(p, "{\"error\":", 9) == 0)
                publication_failed(200, p, (size_t)(e - p));
            else
                publication_ok(chs[1 + k], sent_ns, now);
            p = e;
            while (p < end && (*p == ' ' || *p == ','))
                p++;
        }
        if (k < n)
            bench_err_add(P.total.errs, "batch_replies_missing", n - k);
    }
    for (; k < n; k++)
        publication_failed(status, body, len);
    P.batch_free[P.batch_free_n++] = slot;
}

static void on_api_reply(void *ud, uint32_t tag, int status, const uint8_t *body, size_t len,
                         uint64_t sent_ns)
{
    if (P.o->batch > 0)
        on_batch_reply(tag, status, body, len, sent_ns);
    else if (status == 200 && memmem(body, len, "\"error\"", 7) == NULL)
        publication_ok(tag, sent_ns, bench_now_ns());
    else
        publication_failed(status, body, len);
    if (P.phase == PH_RUNNING && P.o->rate == 0)
        publish_pump();
    maybe_drain();
}

static void end_publishing(void)
{
    P.phase = PH_FLUSH;
    P.t_pub_end = bench_now_ns();
    uv_timer_stop(&P.pace);
    send_all(MSG_HALT, NULL, 0);
    if (P.o->scenario == BENCH_IDLE) {
        P.rss_end = herald_rss(P.o);
        start_stop();
        return;
    }
    uv_timer_start(&P.phase_timer, on_phase_timer, 10000, 0); /* flush timeout */
    maybe_drain();
}

static void start_stop(void)
{
    P.phase = PH_STOPPING;
    P.steal_server1 = bench_steal_ns(&P.server_cpus);
    P.steal_all1 = bench_steal_ns(NULL);
    P.t_stop = bench_now_ns();
    P.cpu_self1 = cpu_ns(RUSAGE_SELF);
    if (P.o->pid > 0)
        P.herald_cpu1 = herald_cpu_seconds(P.o->pid);
    uint32_t n = P.o->scenario == BENCH_FANOUT || P.o->scenario == BENCH_CHANNELS ? P.nchan : 0;
    send_all(MSG_STOP, P.ok, n * 4);
}

static void on_phase_timer(uv_timer_t *t)
{
    if (P.phase == PH_RUNNING) {
        end_publishing();
    } else if (P.phase == PH_FLUSH) {
        if (P.api && bench_api_inflight(P.api) > 0)
            bench_err_add(P.total.errs, "api_unanswered", bench_api_inflight(P.api));
        start_drain();
    } else if (P.phase == PH_DRAIN) {
        /* at least 1 s, longer while deliveries still arrive (herald working off a
         * backlog), at most 20 s */
        uint64_t now = bench_now_ns();
        uint64_t seen = progress_count();
        if (seen != P.drain_seen) {
            P.drain_seen = seen;
            P.t_last_change = now;
        }
        if (now - P.t_last_change >= DRAIN_QUIET_NS || now - P.t_drain >= DRAIN_MAX_NS) {
            uv_timer_stop(&P.phase_timer);
            start_stop();
        }
    }
}

static void on_pace(uv_timer_t *t)
{
    if (P.phase == PH_RUNNING && bench_now_ns() >= P.t_go + (uint64_t)(P.o->duration * 1e9)) {
        end_publishing();
        return;
    }
    publish_pump();
}

static void try_go(void)
{
    if (P.phase != PH_CONNECTING)
        return;
    for (uint32_t i = 0; i < P.o->workers; i++)
        if (!P.wr[i].ready && !P.wr[i].dead)
            return;
    int publishes = P.o->scenario == BENCH_FANOUT || P.o->scenario == BENCH_CHANNELS;
    if (publishes && (P.api == NULL || bench_api_ready(P.api) < P.api_n))
        return; /* retried from the tick */
    if (P.o->scenario == BENCH_IDLE) {
        P.rss_after = herald_rss(P.o);
        kmem_read(&P.kmem_after);
    }
    P.phase = PH_RUNNING;
    P.t_go = bench_now_ns();
    bench_cpus_of(P.o->pid, &P.server_cpus);
    P.steal_server0 = bench_steal_ns(&P.server_cpus);
    P.steal_all0 = bench_steal_ns(NULL);
    struct bench_go g = {P.t_go, 0, 0};
    if (publishes) {
        double n = (P.o->duration * 1e9 + WIN_NS - 1) / WIN_NS + 1;
        P.nwin = n < WIN_MAX ? (uint32_t)n : WIN_MAX;
        P.win = calloc((size_t)P.nwin * WIN_BUCKETS, sizeof(*P.win));
        if (P.win == NULL)
            P.nwin = 0;
        g.windows = P.nwin;
    }
    struct bench_progress s;
    progress_sum(&s);
    P.subscribed = s.subscribed;
    P.cpu_self0 = cpu_ns(RUSAGE_SELF);
    if (P.o->pid > 0)
        P.herald_cpu0 = herald_cpu_seconds(P.o->pid);
    send_all(MSG_GO, &g, sizeof(g));
    if (publishes) {
        uv_timer_start(&P.pace, on_pace, 1, 1);
        publish_pump();
    } else {
        uv_timer_start(&P.phase_timer, on_phase_timer, (uint64_t)(P.o->duration * 1000), 0);
    }
}

static void finish_all(void);

static void on_tick(uv_timer_t *t)
{
    struct bench_progress s;
    progress_sum(&s);
    double el = (double)(bench_now_ns() - P.t_start) / 1e9;
    const char *ph = P.phase == PH_CONNECTING ? "connecting"
                     : P.phase == PH_RUNNING  ? "running"
                                              : "draining";
    if (P.o->scenario == BENCH_CHURN)
        fprintf(stderr, "[%5.1fs] churn %s: cycles %llu (+%llu/s) failed %llu\n", el, ph,
                (unsigned long long)s.completed,
                (unsigned long long)(s.completed - P.last_delivered), (unsigned long long)s.failed);
    else
        fprintf(stderr,
                "[%5.1fs] %s %s: subscribed %llu/%u failed %llu published %llu (+%llu/s) "
                "delivered %llu (+%llu/s) api errors %llu\n",
                el, scenario_name(P.o->scenario), ph, (unsigned long long)s.subscribed,
                P.o->connections, (unsigned long long)s.failed, (unsigned long long)P.published,
                (unsigned long long)(P.published - P.last_published),
                (unsigned long long)s.delivered,
                (unsigned long long)(s.delivered - P.last_delivered),
                (unsigned long long)P.publish_errors);
    P.last_published = P.published;
    P.last_delivered = P.o->scenario == BENCH_CHURN ? s.completed : s.delivered;
    try_go();
}

static void merge_stats(const struct bench_stats *w)
{
    struct bench_stats *t = &P.total;
    t->assigned += w->assigned;
    t->subscribed += w->subscribed;
    t->failed += w->failed;
    t->expected += w->expected;
    t->delivered += w->delivered;
    t->duplicated += w->duplicated;
    t->out_of_order += w->out_of_order;
    t->surplus += w->surplus;
    t->published += w->published;
    t->publish_errors += w->publish_errors;
    t->completed += w->completed;
    t->cpu_ns += w->cpu_ns;
    t->spin_idle_ns += w->spin_idle_ns;
    t->reads += w->reads;
    t->read_bytes += w->read_bytes;
    if ((double)w->cpu_ns / 1e9 > P.worker_cpu_max)
        P.worker_cpu_max = (double)w->cpu_ns / 1e9;
    if (w->connect_seconds > t->connect_seconds)
        t->connect_seconds = w->connect_seconds;
    if (w->t_last_delivery > t->t_last_delivery)
        t->t_last_delivery = w->t_last_delivery;
    for (int i = 0; i < BENCH_ERR_SLOTS && w->errs[i].name[0]; i++)
        bench_err_add(t->errs, w->errs[i].name, w->errs[i].count);
    bench_hist_merge(&t->latency, &w->latency);
    bench_hist_merge(&t->handshake, &w->handshake);
    bench_hist_merge(&P.api_latency, &w->api_latency);
}

static void worker_gone(struct workerref *w)
{
    if (w->dead)
        return;
    w->dead = 1;
    if (!w->final) {
        bench_err_add(P.total.errs, "worker_died", 1);
        w->final = 1;
        P.finals++;
    }
    uv_close((uv_handle_t *)&w->pipe, NULL);
    if (P.finals == (int)P.o->workers)
        finish_all();
    else
        try_go();
}

static void on_worker_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct workerref *w = h->data;
    if (buf_reserve(&w->in, 1 << 17) != 0) {
        b->base = NULL;
        b->len = 0;
        return;
    }
    b->base = (char *)w->in.p + w->in.len;
    b->len = w->in.cap - w->in.len;
}

static void on_worker_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct workerref *w = s->data;
    if (nread < 0) {
        worker_gone(w);
        return;
    }
    w->in.len += (size_t)nread;
    size_t off = 0;
    while (w->in.len - off >= sizeof(struct bench_msg)) {
        struct bench_msg m;
        memcpy(&m, w->in.p + off, sizeof(m));
        if (w->in.len - off - sizeof(m) < m.len)
            break;
        const uint8_t *p = w->in.p + off + sizeof(m);
        off += sizeof(m) + m.len;
        if ((m.type == MSG_PROGRESS || m.type == MSG_READY) && m.len == sizeof(w->prog)) {
            memcpy(&w->prog, p, sizeof(w->prog));
            if (P.phase == PH_RUNNING && P.o->max_lag > 0)
                publish_pump();
            if (m.type == MSG_READY) {
                w->ready = 1;
                try_go();
            }
        } else if (m.type == MSG_WINDOWS && P.win != NULL &&
                   m.len == (uint64_t)P.nwin * WIN_BUCKETS * 4 && !w->final) {
            for (size_t i = 0; i < (size_t)P.nwin * WIN_BUCKETS; i++) {
                uint32_t c;
                memcpy(&c, p + i * 4, 4);
                P.win[i] += c;
            }
        } else if (m.type == MSG_FINAL && m.len == sizeof(struct bench_stats) && !w->final) {
            static struct bench_stats st;
            memcpy(&st, p, sizeof(st));
            merge_stats(&st);
            w->final = 1;
            P.finals++;
            if (P.finals == (int)P.o->workers) {
                finish_all();
                return;
            }
        }
    }
    memmove(w->in.p, w->in.p + off, w->in.len - off);
    w->in.len -= off;
}

/* ---- report ---- */

static void json_errs(FILE *f, const struct bench_err *e)
{
    fputc('{', f);
    for (int i = 0; i < BENCH_ERR_SLOTS && e[i].name[0]; i++)
        fprintf(f, "%s\"%s\":%llu", i ? "," : "", e[i].name, (unsigned long long)e[i].count);
    fputc('}', f);
}

/* The latency of a run window by window (publications by the 100 ms they were sent in):
 * a few stalls of the machine and a server that is slow throughout give the same p99
 * over the run, but not the same windows. */
#define WIN_SLOW_NS 10000000ull /* a window is slow when its p99 is above 10 ms */

struct windows {
    uint32_t of;   /* windows with any publication */
    uint32_t slow; /* of them, p99 above WIN_SLOW_NS */
    double median_p99_us;
};

/* Quantile q of the n samples in window counts w, the bucket's upper edge capped at
 * max_ns; the largest sample's for q >= 1. */
static uint64_t win_quantile(const uint64_t *w, uint64_t n, double q, uint64_t max_ns)
{
    uint64_t rank = q >= 1.0 ? n : (uint64_t)(q * (double)n), seen = 0;
    if ((double)rank < q * (double)n || rank == 0)
        rank++;
    for (unsigned b = 0; b < WIN_BUCKETS; b++) {
        seen += w[b];
        if (seen >= rank) {
            uint64_t top = bench_win_top_ns(b);
            return top < max_ns ? top : max_ns;
        }
    }
    return max_ns;
}

static uint64_t win_count(uint32_t k)
{
    uint64_t n = 0;
    for (unsigned b = 0; b < WIN_BUCKETS; b++)
        n += P.win[(size_t)k * WIN_BUCKETS + b];
    return n;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void windows_of(struct windows *s, uint64_t max_ns)
{
    memset(s, 0, sizeof(*s));
    uint64_t *p99 = P.nwin ? malloc((size_t)P.nwin * sizeof(*p99)) : NULL;
    if (p99 == NULL)
        return;
    for (uint32_t k = 0; k < P.nwin; k++) {
        uint64_t n = win_count(k);
        if (n == 0)
            continue;
        p99[s->of] = win_quantile(P.win + (size_t)k * WIN_BUCKETS, n, 0.99, max_ns);
        s->slow += p99[s->of] > WIN_SLOW_NS;
        s->of++;
    }
    if (s->of > 0) {
        qsort(p99, s->of, sizeof(*p99), cmp_u64);
        s->median_p99_us = (double)p99[(s->of - 1) / 2] / 1e3;
    }
    free(p99);
}

/* "name":[...] with each window's quantile q in us (windows without publications: -1). */
static void json_windows(FILE *f, const char *name, double q, uint64_t max_ns)
{
    fprintf(f, "\"%s\":[", name);
    for (uint32_t k = 0; k < P.nwin; k++) {
        uint64_t n = win_count(k);
        double v =
            n ? (double)win_quantile(P.win + (size_t)k * WIN_BUCKETS, n, q, max_ns) / 1e3 : -1.0;
        fprintf(f, "%s%.0f", k ? "," : "", v);
    }
    fputc(']', f);
}

static double steal_ms(long long a, long long b)
{
    return a >= 0 && b >= a ? (double)(b - a) / 1e6 : -1;
}

static void report(void)
{
    const struct bench_opts *o = P.o;
    struct bench_stats *t = &P.total;
    double pub_s = (double)(P.t_pub_end - P.t_go) / 1e9;
    if (pub_s <= 0)
        pub_s = o->duration;
    uint64_t published = o->scenario == BENCH_CHURN ? t->published : P.published;
    uint64_t pub_errors = o->scenario == BENCH_CHURN ? t->publish_errors : P.publish_errors;
    uint64_t owed = t->expected + t->surplus;
    uint64_t lost = owed > t->delivered ? owed - t->delivered : 0;
    /* deliveries per second over the time they took: until the last one when herald
     * was still working off a backlog after the last publication */
    double deliv_s = pub_s;
    if (t->t_last_delivery > P.t_pub_end)
        deliv_s = (double)(t->t_last_delivery - P.t_go) / 1e9;
    double dps = (double)t->delivered / deliv_s;
    double pub_cpu = (double)(P.cpu_self1 - P.cpu_self0) / 1e9;
    double bench_cpu = (double)t->cpu_ns / 1e9 + pub_cpu;
    double spin_idle = (double)t->spin_idle_ns / 1e9;
    double bench_busy = bench_cpu - spin_idle; /* --spin: without the polls that found nothing */
    double per_bench_cpu = bench_busy > 0 ? (double)t->delivered / bench_busy : 0;
    double herald_cpu = o->pid > 0 && P.herald_cpu0 >= 0 && P.herald_cpu1 >= 0
                            ? P.herald_cpu1 - P.herald_cpu0
                            : -1; /* no --pid, or herald was gone by the end */
    double conn_rate = t->connect_seconds > 0 ? (double)t->subscribed / t->connect_seconds : 0;
    if (o->scenario == BENCH_CHURN) { /* connections opened per second while cycling */
        t->connect_seconds = pub_s;
        conn_rate = (double)t->assigned / pub_s;
    }
    const struct hist *lh = &t->latency;
    double lat[5] = {bench_hist_quantile(lh, 0.5) / 1e3, bench_hist_quantile(lh, 0.9) / 1e3,
                     bench_hist_quantile(lh, 0.99) / 1e3, bench_hist_quantile(lh, 0.999) / 1e3,
                     (double)lh->max / 1e3};
    struct windows win;
    windows_of(&win, lh->max);
    double steal_srv = steal_ms(P.steal_server0, P.steal_server1);
    double steal_all = steal_ms(P.steal_all0, P.steal_all1);
    uint64_t subscribed = t->subscribed;
    double bpc = subscribed > 0 && P.rss_before > 0 && P.rss_after > 0
                     ? (double)(P.rss_after - P.rss_before) / (double)subscribed
                     : -1;
    if (o->json) {
        FILE *f = stdout;
        fprintf(f, "{\"scenario\":\"%s\",\"connections\":%u,\"workers\":%u,\"sources\":%u,",
                scenario_name(o->scenario), o->connections, o->workers, o->sources);
        fprintf(f, "\"batch\":%u,", o->batch);
        fprintf(f, "\"per_channel\":%u,", o->per_channel);
        fprintf(f, "\"rate\":%g,\"duration\":%g,\"size\":%u,\"subscribed\":%llu,\"failed\":%llu,",
                o->rate, o->duration, o->size, (unsigned long long)subscribed,
                (unsigned long long)t->failed);
        fprintf(f, "\"published\":%llu,\"publish_errors\":%llu,\"publications_per_sec\":%.1f,",
                (unsigned long long)published, (unsigned long long)pub_errors,
                (double)published / pub_s);
        fprintf(f,
                "\"expected\":%llu,\"delivered\":%llu,\"lost\":%llu,\"duplicated\":%llu,"
                "\"out_of_order\":%llu,\"surplus\":%llu,\"deliveries_per_sec\":%.1f,",
                (unsigned long long)t->expected, (unsigned long long)t->delivered,
                (unsigned long long)lost, (unsigned long long)t->duplicated,
                (unsigned long long)t->out_of_order, (unsigned long long)t->surplus, dps);
        fprintf(f,
                "\"latency_us\":{\"count\":%llu,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
                "\"p999\":%.1f,\"max\":%.1f},",
                (unsigned long long)t->latency.count, lat[0], lat[1], lat[2], lat[3], lat[4]);
        fprintf(f, "\"steal_ms\":{\"server\":%.0f,\"machine\":%.0f},", steal_srv, steal_all);
        if (P.win != NULL) {
            fprintf(f,
                    "\"latency_windows\":{\"ms\":%llu,\"of\":%u,\"slow\":%u,"
                    "\"median_p99_us\":%.0f,",
                    WIN_NS / 1000000, win.of, win.slow, win.median_p99_us);
            json_windows(f, "p99_us", 0.99, lh->max);
            fputc(',', f);
            json_windows(f, "max_us", 1.0, lh->max);
            fprintf(f, "},");
        }
        fprintf(f, "\"api_latency_us\":{\"p50\":%.1f,\"p99\":%.1f},",
                bench_hist_quantile(&P.api_latency, 0.5) / 1e3,
                bench_hist_quantile(&P.api_latency, 0.99) / 1e3);
        fprintf(f,
                "\"connect\":{\"seconds\":%.3f,\"per_sec\":%.1f,\"handshake_ms_p50\":%.2f,"
                "\"handshake_ms_p99\":%.2f},",
                t->connect_seconds, conn_rate, bench_hist_quantile(&t->handshake, 0.5) / 1e6,
                bench_hist_quantile(&t->handshake, 0.99) / 1e6);
        if (o->scenario == BENCH_CHURN)
            fprintf(f, "\"churn\":{\"started\":%llu,\"completed\":%llu,\"per_sec\":%.1f},",
                    (unsigned long long)t->assigned, (unsigned long long)t->completed,
                    (double)t->completed / pub_s);
        if (o->scenario == BENCH_IDLE)
            fprintf(f,
                    "\"rss_before\":%lld,\"rss_after\":%lld,\"rss_end\":%lld,"
                    "\"bytes_per_connection\":%.0f,",
                    P.rss_before, P.rss_after, P.rss_end, bpc);
        if (o->scenario == BENCH_IDLE)
            fprintf(f,
                    "\"kernel\":{\"slab_before\":%lld,\"slab_after\":%lld,"
                    "\"tcp_inuse_before\":%lld,\"tcp_inuse_after\":%lld,"
                    "\"tcp_mem_before\":%lld,\"tcp_mem_after\":%lld},",
                    P.kmem_before.slab, P.kmem_after.slab, P.kmem_before.tcp_inuse,
                    P.kmem_after.tcp_inuse, P.kmem_before.tcp_mem, P.kmem_after.tcp_mem);
        fprintf(f,
                "\"herald_cpu_s\":%.3f,\"bench_cpu_s\":%.3f,\"bench_publisher_cpu_s\":%.3f,"
                "\"bench_worker_cpu_max_s\":%.3f,\"bench_spin_idle_s\":%.3f,"
                "\"deliveries_per_bench_cpu_s\":%.0f,"
                "\"reads\":%llu,\"read_bytes\":%llu,\"window_s\":%.3f,\"publish_s\":%.3f,"
                "\"delivery_s\":%.3f,\"errors\":",
                herald_cpu, bench_cpu, pub_cpu, P.worker_cpu_max, spin_idle, per_bench_cpu,
                (unsigned long long)t->reads, (unsigned long long)t->read_bytes,
                (double)(P.t_stop - P.t_go) / 1e9, pub_s, deliv_s);
        json_errs(f, t->errs);
        fprintf(f, "}\n");
        fflush(f);
        return;
    }
    printf("herald-bench %s: %llu connections (%llu subscribed, %llu failed) in %.2f s "
           "(%.0f/s; handshake p50 %.2f ms, p99 %.2f ms)\n",
           scenario_name(o->scenario),
           (unsigned long long)(o->scenario == BENCH_CHURN ? t->assigned : o->connections),
           (unsigned long long)subscribed, (unsigned long long)t->failed, t->connect_seconds,
           conn_rate, bench_hist_quantile(&t->handshake, 0.5) / 1e6,
           bench_hist_quantile(&t->handshake, 0.99) / 1e6);
    if (o->scenario == BENCH_IDLE) {
        printf("  herald RSS: %lld before, %lld after connecting, %lld at the end: "
               "%.0f bytes per connection\n",
               P.rss_before, P.rss_after, P.rss_end, bpc);
        printf("  kernel (machine-wide, both ends): slab %lld -> %lld, TCP sockets %lld -> %lld, "
               "TCP buffers %lld -> %lld bytes\n",
               P.kmem_before.slab, P.kmem_after.slab, P.kmem_before.tcp_inuse,
               P.kmem_after.tcp_inuse, P.kmem_before.tcp_mem, P.kmem_after.tcp_mem);
    } else {
        if (o->scenario == BENCH_CHURN)
            printf("  cycles: %llu started, %llu completed (%.1f/s)\n",
                   (unsigned long long)t->assigned, (unsigned long long)t->completed,
                   (double)t->completed / pub_s);
        printf("  published %llu in %.2f s (%.1f/s), %llu API errors; API latency p50 %.0f us, "
               "p99 %.0f us\n",
               (unsigned long long)published, pub_s, (double)published / pub_s,
               (unsigned long long)pub_errors, bench_hist_quantile(&P.api_latency, 0.5) / 1e3,
               bench_hist_quantile(&P.api_latency, 0.99) / 1e3);
        printf("  expected %llu delivered %llu lost %llu duplicated %llu out-of-order %llu "
               "(%.0f deliveries/s)\n",
               (unsigned long long)t->expected, (unsigned long long)t->delivered,
               (unsigned long long)lost, (unsigned long long)t->duplicated,
               (unsigned long long)t->out_of_order, dps);
        printf("  latency us: p50 %.0f p90 %.0f p99 %.0f p99.9 %.0f max %.0f\n", lat[0], lat[1],
               lat[2], lat[3], lat[4]);
        if (P.win != NULL && win.of > 0)
            printf("  by the 100 ms a publication was sent in: the median window's p99 %.0f us; "
                   "%u of %u windows with a p99 over %llu ms\n",
                   win.median_p99_us, win.slow, win.of, WIN_SLOW_NS / 1000000);
    }
    printf("  the hypervisor's steal over the run: %.0f ms of the server's CPUs, %.0f ms of "
           "the machine's\n",
           steal_srv, steal_all);
    printf("  CPU seconds over %.2f s: herald %.2f, bench %.2f (publisher %.2f, busiest worker "
           "%.2f)\n",
           (double)(P.t_stop - P.t_go) / 1e9, herald_cpu, bench_cpu, pub_cpu, P.worker_cpu_max);
    if (o->spin)
        printf("  of the bench's, %.2f s polled without finding anything (--spin)\n", spin_idle);
    if (o->scenario != BENCH_IDLE)
        printf("  bench: %.0f deliveries per bench CPU-second; %llu reads, %.0f bytes per read\n",
               per_bench_cpu, (unsigned long long)t->reads,
               t->reads ? (double)t->read_bytes / (double)t->reads : 0.0);
    printf("  errors:");
    if (t->errs[0].name[0] == '\0')
        printf(" none");
    for (int i = 0; i < BENCH_ERR_SLOTS && t->errs[i].name[0]; i++)
        printf(" %s=%llu", t->errs[i].name, (unsigned long long)t->errs[i].count);
    printf("\n");
    fflush(stdout);
}

static void finish_all(void)
{
    if (P.phase == PH_DONE)
        return;
    if (P.phase != PH_STOPPING) { /* every worker died early */
        P.t_stop = bench_now_ns();
        P.cpu_self1 = cpu_ns(RUSAGE_SELF);
        if (P.t_pub_end == 0)
            P.t_pub_end = P.t_stop;
    }
    P.phase = PH_DONE;
    report();
    uv_stop(P.loop);
}

/* ---- options ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: herald-bench fanout|channels|idle|churn --url ws://127.0.0.1:8000\n"
            "         [--api http://127.0.0.1:8000] --api-key K (--secret S | --anonymous)\n"
            "         -c CONNECTIONS -r RATE -d SECONDS [--size BYTES] [--channel NAME]\n"
            "         [--workers N] [--sources N] [--inflight N] [--api-conns N]\n"
            "         [--connect-concurrency N] [--max-lag MESSAGES] [--pid HERALD_PID] [--json]\n"
            "         [--pin CPU] [--batch N] [--per-channel K] [--libuv-reads] [--spin]\n"
            "  fanout    C connections on one channel, R publications/s to it\n"
            "  channels  connection i on channel <name>-i, R publications/s round-robin\n"
            "            (--per-channel K: on <name>-(i/K), K subscribers a channel)\n"
            "  idle      C connections held D seconds; herald RSS per connection\n"
            "  churn     connect, subscribe, receive one publication, disconnect; R cycles/s\n"
            "  R = 0: as fast as possible with at most --inflight unanswered API requests\n"
            "         and, with --max-lag M, at most M deliveries owed to subscribers\n"
            "  --batch N (fanout, channels): publish through POST /api/batch, up to N\n"
            "         publications a request (at most 1000); --inflight counts requests\n"
            "  --libuv-reads: subscribers read through libuv (uv_read_start), not recv() from\n"
            "         the worker's own epoll set (the default, cheaper)\n"
            "  --spin: workers poll their subscribers without ever sleeping, so the server\n"
            "         does not pay for waking them (on loopback a send runs the receiver's\n"
            "         wake-up on the sender's CPU); each worker then uses a whole core\n");
}

static int parse_hostport(const char *s, const char *scheme, char *host, size_t hcap, int *port,
                          char *path, size_t pcap)
{
    size_t sl = strlen(scheme);
    if (strncmp(s, scheme, sl) != 0)
        return -1;
    s += sl;
    const char *colon = strchr(s, ':');
    const char *slash = strchr(s, '/');
    const char *hend = colon && (!slash || colon < slash) ? colon : (slash ? slash : s + strlen(s));
    size_t hl = (size_t)(hend - s);
    if (hl == 0 || hl >= hcap)
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (strcmp(host, "localhost") == 0)
        snprintf(host, hcap, "127.0.0.1");
    *port = 80;
    if (*hend == ':')
        *port = atoi(hend + 1);
    if (*port <= 0 || *port > 65535)
        return -1;
    if (path != NULL) {
        const char *p = slash && strcmp(slash, "/") != 0 ? slash : "/connection/websocket";
        snprintf(path, pcap, "%s", p);
    }
    struct sockaddr_in a;
    return uv_ip4_addr(host, *port, &a) == 0 ? 0 : -1;
}

static int parse_opts(int argc, char **argv, struct bench_opts *o)
{
    static const struct option lo[] = {
        {"url", required_argument, 0, 'u'},
        {"api", required_argument, 0, 'a'},
        {"api-key", required_argument, 0, 'k'},
        {"secret", required_argument, 0, 's'},
        {"anonymous", no_argument, 0, 'A'},
        {"connections", required_argument, 0, 'c'},
        {"rate", required_argument, 0, 'r'},
        {"duration", required_argument, 0, 'd'},
        {"size", required_argument, 0, 'S'},
        {"channel", required_argument, 0, 'C'},
        {"workers", required_argument, 0, 'w'},
        {"sources", required_argument, 0, 'n'},
        {"inflight", required_argument, 0, 'i'},
        {"api-conns", required_argument, 0, 'N'},
        {"connect-concurrency", required_argument, 0, 'x'},
        {"pid", required_argument, 0, 'p'},
        {"json", no_argument, 0, 'j'},
        {"pin", required_argument, 0, 'P'},
        {"help", no_argument, 0, 'h'},
        {"max-lag", required_argument, 0, 'L'},
        {"batch", required_argument, 0, 'B'},
        {"per-channel", required_argument, 0, 'K'},
        {"libuv-reads", no_argument, 0, 'U'},
        {"spin", no_argument, 0, 'Z'},
        {0, 0, 0, 0},
    };
    memset(o, 0, sizeof(*o));
    o->connections = 100;
    o->duration = 10;
    o->size = 64;
    o->workers = 1;
    o->sources = 1;
    o->inflight = 64;
    o->api_conns = 4;
    o->per_channel = 1;
    o->connect_concurrency = 256;
    o->pin = -1;
    const char *url = NULL, *api = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:r:d:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'u':
            url = optarg;
            break;
        case 'a':
            api = optarg;
            break;
        case 'k':
            o->api_key = optarg;
            break;
        case 's':
            o->secret = optarg;
            break;
        case 'A':
            o->anonymous = 1;
            break;
        case 'c':
            o->connections = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'r':
            o->rate = strtod(optarg, NULL);
            break;
        case 'd':
            o->duration = strtod(optarg, NULL);
            break;
        case 'S':
            o->size = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'C':
            o->channel = optarg;
            break;
        case 'w':
            o->workers = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'n':
            o->sources = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'i':
            o->inflight = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'N':
            o->api_conns = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'x':
            o->connect_concurrency = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'p':
            o->pid = atoi(optarg);
            break;
        case 'j':
            o->json = 1;
            break;
        case 'P':
            o->pin = atoi(optarg);
            break;
        case 'L':
            o->max_lag = strtoull(optarg, NULL, 10);
            break;
        case 'B':
            o->batch = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'K':
            o->per_channel = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'U':
            o->libuv_reads = 1;
            break;
        case 'Z':
            o->spin = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return -1;
    }
    const char *sc = argv[optind];
    if (strcmp(sc, "fanout") == 0)
        o->scenario = BENCH_FANOUT;
    else if (strcmp(sc, "channels") == 0)
        o->scenario = BENCH_CHANNELS;
    else if (strcmp(sc, "idle") == 0)
        o->scenario = BENCH_IDLE;
    else if (strcmp(sc, "churn") == 0)
        o->scenario = BENCH_CHURN;
    else {
        fprintf(stderr, "herald-bench: unknown scenario %s\n", sc);
        return -1;
    }
    if (url == NULL) {
        fprintf(stderr, "herald-bench: --url ws://HOST:PORT is required\n");
        return -1;
    }
    if (parse_hostport(url, "ws://", o->ws_host, sizeof(o->ws_host), &o->ws_port, o->ws_path,
                       sizeof(o->ws_path)) != 0) {
        fprintf(stderr, "herald-bench: bad --url %s (ws://IPV4:PORT[/path])\n", url);
        return -1;
    }
    if (api == NULL) {
        snprintf(o->api_host, sizeof(o->api_host), "%s", o->ws_host);
        o->api_port = o->ws_port;
    } else if (parse_hostport(api, "http://", o->api_host, sizeof(o->api_host), &o->api_port, NULL,
                              0) != 0) {
        fprintf(stderr, "herald-bench: bad --api %s (http://IPV4:PORT)\n", api);
        return -1;
    }
    if (!o->anonymous && (o->secret == NULL || o->secret[0] == '\0')) {
        fprintf(stderr, "herald-bench: --secret S (token HMAC secret) or --anonymous\n");
        return -1;
    }
    if (o->scenario != BENCH_IDLE && o->api_key == NULL) {
        fprintf(stderr, "herald-bench: --api-key K is required to publish\n");
        return -1;
    }
    if (o->workers == 0 || o->workers > 256 || o->sources == 0 || o->sources > 254 ||
        o->inflight == 0 || o->api_conns == 0 || o->connect_concurrency == 0 || o->duration <= 0 ||
        o->rate < 0 || o->batch > 1000 || o->per_channel == 0) {
        fprintf(stderr, "herald-bench: bad option value\n");
        return -1;
    }
    if (o->scenario != BENCH_CHURN && o->connections == 0) {
        fprintf(stderr, "herald-bench: -c must be > 0\n");
        return -1;
    }
    if (o->channel == NULL)
        o->channel = o->scenario == BENCH_FANOUT  ? "bench"
                     : o->scenario == BENCH_CHURN ? "churn"
                                                  : "ch";
    if (strlen(o->channel) > 200 || strpbrk(o->channel, "\"\\") != NULL) {
        fprintf(stderr, "herald-bench: bad --channel\n");
        return -1;
    }
    if (o->scenario == BENCH_CHURN)
        o->connections = 0;
    return 0;
}

int main(int argc, char **argv)
{
    static struct bench_opts o;
    if (parse_opts(argc, argv, &o) != 0)
        return 2;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (o.pin >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(o.pin, &set);
        if (sched_setaffinity(0, sizeof(set), &set) != 0)
            perror("herald-bench: --pin");
    }
    signal(SIGPIPE, SIG_IGN);
    P.o = &o;
    P.t_start = bench_now_ns();
    P.herald_cpu0 = P.herald_cpu1 = -1;
    bench_hist_init(&P.total.latency);
    bench_hist_init(&P.total.handshake);
    bench_hist_init(&P.api_latency);
    P.nchan =
        o.scenario == BENCH_CHANNELS ? (o.connections + o.per_channel - 1) / o.per_channel : 1;
    P.ok = calloc(P.nchan, sizeof(*P.ok));
    P.next_seq = calloc(P.nchan, sizeof(*P.next_seq));
    P.wr = calloc(o.workers, sizeof(*P.wr));
    if (P.ok == NULL || P.next_seq == NULL || P.wr == NULL)
        return 3;
    if (o.scenario == BENCH_IDLE) {
        P.rss_before = herald_rss(&o);
        kmem_read(&P.kmem_before);
        if (P.rss_before < 0)
            fprintf(stderr, "herald-bench: cannot read herald's RSS (--pid or /api/info)\n");
    }
    fflush(NULL);
    for (uint32_t i = 0; i < o.workers; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            perror("herald-bench: socketpair");
            return 3;
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("herald-bench: fork");
            return 3;
        }
        if (pid == 0) {
            close(sv[0]);
            for (uint32_t j = 0; j < i; j++)
                close(P.wr[j].fd);
            bench_worker_main(&o, i, sv[1]);
        }
        close(sv[1]);
        P.wr[i].pid = pid;
        P.wr[i].fd = sv[0];
    }
    P.loop = uv_default_loop();
    for (uint32_t i = 0; i < o.workers; i++) {
        int fd = P.wr[i].fd;
        uv_pipe_init(P.loop, &P.wr[i].pipe, 0);
        P.wr[i].pipe.data = &P.wr[i];
        uv_pipe_open(&P.wr[i].pipe, fd);
        uv_read_start((uv_stream_t *)&P.wr[i].pipe, on_worker_alloc, on_worker_read);
    }
    if (o.scenario == BENCH_FANOUT || o.scenario == BENCH_CHANNELS) {
        /* one channel's publications always travel on the same connection, in order */
        P.api_n = o.scenario == BENCH_FANOUT ? 1 : (o.api_conns < P.nchan ? o.api_conns : P.nchan);
        unsigned per = (o.inflight + P.api_n - 1) / P.api_n;
        P.api = bench_api_open(P.loop, o.api_host, o.api_port, o.api_key, P.api_n, per,
                               on_api_reply, NULL);
        if (o.batch > 0) {
            uint32_t slots = P.api_n * per;
            P.cursor = calloc(P.api_n, sizeof(*P.cursor));
            P.batch_ch = calloc((size_t)slots * (o.batch + 1), sizeof(*P.batch_ch));
            P.batch_free = calloc(slots, sizeof(*P.batch_free));
            if (P.cursor == NULL || P.batch_ch == NULL || P.batch_free == NULL)
                return 3;
            for (uint32_t i = 0; i < slots; i++)
                P.batch_free[P.batch_free_n++] = slots - 1 - i;
        }
    }
    uv_timer_init(P.loop, &P.tick);
    uv_timer_init(P.loop, &P.pace);
    uv_timer_init(P.loop, &P.phase_timer);
    uv_timer_start(&P.tick, on_tick, 1000, 1000);
    uv_run(P.loop, UV_RUN_DEFAULT);
    for (uint32_t i = 0; i < o.workers; i++) {
        int status;
        waitpid(P.wr[i].pid, &status, 0);
    }
    return P.finals == (int)o.workers && P.total.subscribed + P.total.completed > 0 ? 0 : 1;
}
