/* Per-loop counters and histograms, and their Prometheus exposition (see metrics.h).
 * The exposition walks slots and fixed arrays only: its cost does not grow with
 * connections or channels (the getters main.c registers must not either). */
#include "metrics/metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"

/* Before metrics_init (unit tests, fuzzers) counting goes to these, never nowhere. */
static struct metrics_slot fallback[2];
struct metrics_slot *metrics_slots = fallback;
unsigned metrics_nslots = 2;
_Thread_local unsigned metrics_self;

static struct metrics_sources sources;
static double start_wall; /* seconds since the epoch, at metrics_set_sources */

static struct {
    _Atomic(const char *) name; /* set once: published with release */
    char storage[96];
    atomic_int up;
} shards[METRIC_SHARDS_MAX];

/* Upper bounds in microseconds: 0.1 ms to 2.5 s, a delivery's range from idle to
 * overloaded. */
static const uint64_t bounds_us[METRIC_BUCKETS] = {
    100, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000};

int metrics_init(unsigned nloops)
{
    if (nloops == 0)
        nloops = 1;
    metrics_free();
    unsigned n = nloops + 1;
    metrics_slots = aligned_alloc(64, n * sizeof(struct metrics_slot));
    if (metrics_slots == NULL)
        return -1;
    /* All-zero is every atomic's 0 on the targets we build for (C11 7.17.2.1 asks for
     * atomic_init; memset of a lock-free atomic integer is what glibc's does). */
    memset(metrics_slots, 0, n * sizeof(struct metrics_slot));
    metrics_nslots = n;
    for (unsigned i = 0; i < METRIC_SHARDS_MAX; i++) {
        atomic_store(&shards[i].name, NULL);
        atomic_store(&shards[i].up, 0);
    }
    return 0;
}

void metrics_free(void)
{
    if (metrics_slots != fallback)
        free(metrics_slots);
    metrics_slots = fallback;
    metrics_nslots = 2;
}

void metrics_set_thread_slot(unsigned slot)
{
    metrics_self = slot < metrics_nslots ? slot : 0;
}

unsigned metrics_other_slot(void)
{
    return metrics_nslots ? metrics_nslots - 1 : 0;
}

void metrics_count_close(unsigned code)
{
    if (code == 0)
        return;
    unsigned i;
    if (code >= 1000 && code < 1016)
        i = code - 1000;
    else if (code >= 3000 && code < 5000)
        i = 16 + code - 3000;
    else
        i = METRIC_CLOSE_CODES - 1;
    atomic_fetch_add_explicit(&metrics_slots[metrics_self].close_code[i], 1, memory_order_relaxed);
}

void metrics_observe(enum metric_hist which, uint64_t us)
{
    struct metrics_hist *h = &metrics_slots[metrics_self].hist[which];
    unsigned b = 0;
    while (b < METRIC_BUCKETS && us > bounds_us[b])
        b++;
    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (int_fast64_t)us, memory_order_relaxed);
}

uint32_t metrics_stamp_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint32_t us = (uint32_t)((uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000);
    return us ? us : 1;
}

uint64_t metrics_sum(enum metric m)
{
    int64_t sum = 0;
    for (unsigned i = 0; i < metrics_nslots; i++)
        sum += atomic_load_explicit(&metrics_slots[i].v[m], memory_order_relaxed);
    return sum > 0 ? (uint64_t)sum : 0;
}

static uint64_t sum_array(size_t offset, unsigned i)
{
    int64_t sum = 0;
    for (unsigned s = 0; s < metrics_nslots; s++) {
        const atomic_int_fast64_t *a =
            (const atomic_int_fast64_t *)((const char *)&metrics_slots[s] + offset);
        sum += atomic_load_explicit(&a[i], memory_order_relaxed);
    }
    return sum > 0 ? (uint64_t)sum : 0;
}

void metrics_hist_sum(enum metric_hist which, struct metrics_hist *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned s = 0; s < metrics_nslots; s++) {
        struct metrics_hist *h = &metrics_slots[s].hist[which];
        for (unsigned b = 0; b <= METRIC_BUCKETS; b++)
            atomic_fetch_add_explicit(&out->bucket[b],
                                      atomic_load_explicit(&h->bucket[b], memory_order_relaxed),
                                      memory_order_relaxed);
        atomic_fetch_add_explicit(&out->sum_us,
                                  atomic_load_explicit(&h->sum_us, memory_order_relaxed),
                                  memory_order_relaxed);
    }
}

void metrics_engine_shard(unsigned i, const char *name)
{
    if (i >= METRIC_SHARDS_MAX || atomic_load_explicit(&shards[i].name, memory_order_acquire))
        return;
    snprintf(shards[i].storage, sizeof(shards[i].storage), "%s", name);
    atomic_store_explicit(&shards[i].name, shards[i].storage, memory_order_release);
}

void metrics_engine_up(unsigned i, int up)
{
    if (i < METRIC_SHARDS_MAX)
        atomic_store_explicit(&shards[i].up, up ? 1 : 0, memory_order_relaxed);
}

void metrics_set_sources(const struct metrics_sources *src)
{
    sources = *src;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    start_wall = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the writer ---- */

void metrics_escape_label(const char *v, char *out, size_t cap)
{
    size_t o = 0;
    for (; v && *v && o + 3 < cap; v++) {
        if (*v == '\\' || *v == '"') {
            out[o++] = '\\';
            out[o++] = *v;
        } else if (*v == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *v;
        }
    }
    if (cap)
        out[o < cap ? o : cap - 1] = '\0';
}

void metrics_write_family(struct buf *out, const char *name, const char *type, const char *help)
{
    buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_write_sample(struct buf *out, const char *name, const char *labels, double v)
{
    /* Whole numbers (most gauges) as such; others with microsecond precision. */
    const char *fmt = v == (double)(int64_t)v && v < 9e15 && v > -9e15 ? "%.0f" : "%.6f";
    char num[48];
    snprintf(num, sizeof(num), fmt, v);
    if (labels[0])
        buf_appendf(out, "%s{%s} %s\n", name, labels, num);
    else
        buf_appendf(out, "%s %s\n", name, num);
}

void metrics_write_counter(struct buf *out, const char *name, const char *labels, uint64_t v)
{
    buf_append_str(out, name);
    if (labels[0]) {
        buf_append_char(out, '{');
        buf_append_str(out, labels);
        buf_append_char(out, '}');
    }
    buf_append_char(out, ' ');
    buf_append_u64(out, v);
    buf_append_char(out, '\n');
}

void metrics_write_hist(struct buf *out, const char *name, const struct metrics_hist *h)
{
    uint64_t cum = 0;
    for (unsigned b = 0; b <= METRIC_BUCKETS; b++) {
        cum += (uint64_t)atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
        if (b < METRIC_BUCKETS)
            buf_appendf(out, "%s_bucket{le=\"%g\"} %llu\n", name, (double)bounds_us[b] / 1e6,
                        (unsigned long long)cum);
        else
            buf_appendf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    buf_appendf(out, "%s_sum %.6f\n%s_count %llu\n", name,
                (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6, name,
                (unsigned long long)cum);
}

static void counter(struct buf *out, const char *name, const char *help, uint64_t v)
{
    metrics_write_family(out, name, "counter", help);
    metrics_write_counter(out, name, "", v);
}

static void gauge(struct buf *out, const char *name, const char *help, double v)
{
    metrics_write_family(out, name, "gauge", help);
    metrics_write_sample(out, name, "", v);
}

#define SLOT_OFFSET(field) offsetof(struct metrics_slot, field)

static const char *const method_names[METRIC_METHODS] = {
    "connect", "subscribe", "unsubscribe", "publish",     "presence", "presence_stats",
    "history", "ping",      "refresh",     "sub_refresh", "rpc",      "send",
};

static const struct {
    const char *limit;
    enum metric m;
} limits[] = {
    {"connections", METRIC_LIMIT_CONNECTIONS},
    {"ip_connections", METRIC_LIMIT_IP_CONNECTIONS},
    {"ip_rate", METRIC_LIMIT_IP_RATE},
    {"user_connections", METRIC_LIMIT_USER_CONNECTIONS},
    {"commands", METRIC_LIMIT_COMMANDS},
    {"command_floods", METRIC_LIMIT_COMMAND_FLOODS},
    {"user_publish", METRIC_LIMIT_USER_PUBLISH},
    {"channel_publish", METRIC_LIMIT_CHANNEL_PUBLISH},
    {"subscriptions", METRIC_LIMIT_SUBSCRIPTIONS},
    {"local_fallback", METRIC_LIMIT_LOCAL_FALLBACK},
    {"connect_timeout", METRIC_LIMIT_CONNECT_TIMEOUTS},
    {"message_commands", METRIC_LIMIT_MESSAGE_COMMANDS},
    {"channel_length", METRIC_LIMIT_CHANNEL_LENGTH},
    {"data_size", METRIC_LIMIT_DATA_SIZE},
    {"queue_total", METRIC_LIMIT_QUEUE_TOTAL},
};

static const struct {
    const char *reason;
    enum metric m;
} refusals[] = {
    {"origin", METRIC_REFUSED_ORIGIN},
    {"bad_request", METRIC_REFUSED_BAD_REQUEST},
    {"query_token", METRIC_REFUSED_QUERY_TOKEN},
    {"limit_connections", METRIC_LIMIT_CONNECTIONS},
    {"limit_ip", METRIC_LIMIT_IP_CONNECTIONS},
    {"limit_ip_rate", METRIC_LIMIT_IP_RATE},
    {"head_timeout", METRIC_LIMIT_HEAD_TIMEOUTS},
    {"head_too_large", METRIC_LIMIT_HEAD_SIZE},
};

/* The last count of open descriptors (metrics_refresh_open_fds); -1 before the first. */
static atomic_long open_fds_count = -1;

/* Open descriptors: the entries of /proc/self/fd, read with getdents64 into a buffer on
 * the stack. procfs makes each entry on the fly: 14 ms for 20,000 descriptors, which is
 * why a scrape does not do it on a loop. */
static long open_fds(void)
{
    int fd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char dents[32768];
    long count = 0;
    for (;;) {
        long n = syscall(SYS_getdents64, fd, dents, sizeof(dents));
        if (n <= 0)
            break;
        for (long off = 0; off < n;) {
            /* struct linux_dirent64: d_ino, d_off, d_reclen (u16), d_type, d_name */
            unsigned short reclen;
            memcpy(&reclen, dents + off + 16, sizeof(reclen));
            const char *name = dents + off + 19;
            if (name[0] != '.')
                count++;
            off += reclen;
        }
    }
    close(fd);
    return count - 1; /* the descriptor reading it */
}

void metrics_refresh_open_fds(void)
{
    atomic_store_explicit(&open_fds_count, open_fds(), memory_order_relaxed);
}

/* Process figures from /proc/self/stat (proc(5): utime 14, stime 15, num_threads 20,
 * rss 24), fds and their limit. */
static void write_process(struct buf *out)
{
    char st[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, st, sizeof(st) - 1) : -1;
    if (fd >= 0)
        close(fd);
    unsigned long long utime = 0, stime = 0, threads = 0, rss = 0;
    /* After the command name, which is in parentheses and may hold spaces. */
    char *p = n > 0 ? (st[n] = '\0', strrchr(st, ')')) : NULL;
    if (p == NULL ||
        sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %llu "
               "%*d %*u %*u %llu",
               &utime, &stime, &threads, &rss) != 4)
        utime = stime = threads = rss = 0;
    double tick = (double)sysconf(_SC_CLK_TCK);
    double page = (double)sysconf(_SC_PAGESIZE);
    metrics_write_family(out, "process_cpu_seconds_total", "counter",
                         "User and system CPU time spent, in seconds.");
    metrics_write_sample(out, "process_cpu_seconds_total", "",
                         (double)(utime + stime) / (tick > 0 ? tick : 100));
    gauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.",
          (double)rss * page);
    long fds = atomic_load_explicit(&open_fds_count, memory_order_relaxed);
    if (fds >= 0)
        gauge(out, "process_open_fds", "Number of open file descriptors.", (double)fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        gauge(out, "process_max_fds", "Maximum number of open file descriptors.",
              rl.rlim_cur == RLIM_INFINITY ? -1 : (double)rl.rlim_cur);
    gauge(out, "process_start_time_seconds",
          "Start time of the process since the epoch, in "
          "seconds.",
          start_wall);
    gauge(out, "herald_threads", "OS threads of the process.", (double)threads);
}

static void labelled(struct buf *out, const char *name, const char *type, const char *help,
                     const char *key, const char *const *values, const enum metric *ms, size_t n)
{
    metrics_write_family(out, name, type, help);
    char labels[96];
    for (size_t i = 0; i < n; i++) {
        snprintf(labels, sizeof(labels), "%s=\"%s\"", key, values[i]);
        metrics_write_counter(out, name, labels, metrics_sum(ms[i]));
    }
}

void metrics_write(struct buf *out)
{
    char a[160], b[160], labels[400];
    metrics_escape_label(sources.version ? sources.version : "", a, sizeof(a));
    metrics_escape_label(sources.commit ? sources.commit : "", b, sizeof(b));
    snprintf(labels, sizeof(labels), "version=\"%s\",commit=\"%s\"", a, b);
    metrics_write_family(out, "herald_build_info", "gauge",
                         "Always 1; the version and commit herald was built from.");
    metrics_write_sample(out, "herald_build_info", labels, 1);
    if (sources.now_ms)
        gauge(out, "herald_uptime_seconds", "Seconds since herald started.",
              (double)(sources.now_ms() - sources.start_ms) / 1000);

    gauge(out, "herald_connections", "Open connections (HTTP and WebSocket, any state).",
          (double)metrics_sum(METRIC_CONNECTIONS));
    counter(out, "herald_connections_accepted_total", "Connections accepted.",
            metrics_sum(METRIC_ACCEPTED));
    gauge(out, "herald_clients", "Clients connected (after their connect command).",
          (double)metrics_sum(METRIC_CLIENTS));
    if (sources.users)
        gauge(out, "herald_users", "Distinct users of the connected clients.",
              (double)sources.users());

    metrics_write_family(out, "herald_disconnects_total", "counter",
                         "WebSocket close frames sent, by close code.");
    for (unsigned i = 0; i < METRIC_CLOSE_CODES; i++) {
        uint64_t v = sum_array(SLOT_OFFSET(close_code), i);
        if (v == 0)
            continue;
        if (i == METRIC_CLOSE_CODES - 1)
            snprintf(labels, sizeof(labels), "code=\"other\"");
        else
            snprintf(labels, sizeof(labels), "code=\"%u\"", i < 16 ? 1000 + i : 3000 + i - 16);
        metrics_write_counter(out, "herald_disconnects_total", labels, v);
    }
    metrics_write_family(out, "herald_handshakes_refused_total", "counter",
                         "WebSocket upgrade requests refused, by reason.");
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        snprintf(labels, sizeof(labels), "reason=\"%s\"", refusals[i].reason);
        metrics_write_counter(out, "herald_handshakes_refused_total", labels,
                              metrics_sum(refusals[i].m));
    }

    gauge(out, "herald_subscriptions", "Client subscriptions on this node.",
          (double)metrics_sum(METRIC_SUBSCRIPTIONS));
    if (sources.channels)
        gauge(out, "herald_channels", "Channels with subscribers on this node.",
              (double)sources.channels());

    metrics_write_family(out, "herald_commands_total", "counter",
                         "Client commands received, by method (rate-limited ones included).");
    for (unsigned i = 0; i < METRIC_METHODS; i++) {
        snprintf(labels, sizeof(labels), "method=\"%s\"", method_names[i]);
        metrics_write_counter(out, "herald_commands_total", labels,
                              sum_array(SLOT_OFFSET(method), i));
    }
    metrics_write_family(out, "herald_command_errors_total", "counter",
                         "Replies to client commands with an error, by error code.");
    for (unsigned i = 0; i < METRIC_ERRORS; i++) {
        uint64_t v = sum_array(SLOT_OFFSET(error), i);
        if (i == METRIC_ERRORS - 1) {
            if (v == 0)
                continue;
            snprintf(labels, sizeof(labels), "code=\"other\"");
        } else {
            snprintf(labels, sizeof(labels), "code=\"%u\"", METRIC_ERROR_MIN + i);
        }
        metrics_write_counter(out, "herald_command_errors_total", labels, v);
    }

    counter(out, "herald_messages_received_total", "WebSocket text messages received from clients.",
            metrics_sum(METRIC_MESSAGES_IN));
    counter(out, "herald_messages_sent_total",
            "Messages sent to clients: publications and pushes delivered by fan-out, and "
            "reply frames.",
            metrics_sum(METRIC_MESSAGES_OUT) + metrics_sum(METRIC_REPLIES_OUT));
    counter(out, "herald_bytes_received_total", "Bytes read on WebSocket connections.",
            metrics_sum(METRIC_BYTES_IN));
    counter(out, "herald_bytes_sent_total", "Bytes written on WebSocket connections.",
            metrics_sum(METRIC_BYTES_OUT));
    counter(out, "herald_publications_total",
            "Publications handed to the engine (server API, clients, change feed).",
            metrics_sum(METRIC_PUBLISHES));

    struct metrics_hist h;
    metrics_hist_sum(METRIC_H_PUBLISH_TO_WRITE, &h);
    metrics_write_family(out, "herald_publish_to_write_seconds", "histogram",
                         "From a publish to the write of its frame to a client socket, "
                         "once per frame.");
    metrics_write_hist(out, "herald_publish_to_write_seconds", &h);

    metrics_write_family(out, "herald_loop_queued_bytes", "gauge",
                         "Outbound bytes queued on the connections of each loop.");
    for (unsigned i = 0; i + 1 < metrics_nslots; i++) {
        int64_t q =
            atomic_load_explicit(&metrics_slots[i].v[METRIC_QUEUED_BYTES], memory_order_relaxed);
        snprintf(labels, sizeof(labels), "loop=\"%u\"", i);
        metrics_write_counter(out, "herald_loop_queued_bytes", labels, q > 0 ? (uint64_t)q : 0);
    }
    counter(out, "herald_slow_consumer_disconnects_total",
            "Subscribers disconnected because they could not keep up (3008).",
            metrics_sum(METRIC_SLOW));

    metrics_write_family(out, "herald_rate_limited_total", "counter",
                         "Requests refused by a limit, by limit.");
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        snprintf(labels, sizeof(labels), "limit=\"%s\"", limits[i].limit);
        metrics_write_counter(out, "herald_rate_limited_total", labels, metrics_sum(limits[i].m));
    }
    static const char *const recovered[] = {"true", "false"};
    static const enum metric recovered_m[] = {METRIC_RECOVERED, METRIC_NOT_RECOVERED};
    labelled(out, "herald_recoveries_total", "counter",
             "Subscribes that asked to recover, by whether they did.", "recovered", recovered,
             recovered_m, 2);

    metrics_write_family(out, "herald_engine_up", "gauge",
                         "1 when the engine's shard is reachable, else 0.");
    for (unsigned i = 0; i < METRIC_SHARDS_MAX; i++) {
        const char *name = atomic_load_explicit(&shards[i].name, memory_order_acquire);
        if (name == NULL)
            continue;
        metrics_escape_label(name, a, sizeof(a));
        snprintf(labels, sizeof(labels), "shard=\"%s\"", a);
        metrics_write_counter(out, "herald_engine_up", labels,
                              (uint64_t)atomic_load_explicit(&shards[i].up, memory_order_relaxed));
    }
    counter(out, "herald_engine_reconnects_total", "Engine (Redis) connections lost.",
            metrics_sum(METRIC_ENGINE_RECONNECTS));
    metrics_hist_sum(METRIC_H_ENGINE_COMMAND, &h);
    metrics_write_family(out, "herald_engine_command_seconds", "histogram",
                         "Round trip of an engine (Redis) command.");
    metrics_write_hist(out, "herald_engine_command_seconds", &h);
    counter(out, "herald_engine_pubsub_messages_total", "Pub/sub messages read from Redis.",
            metrics_sum(METRIC_ENGINE_PUBSUB));
    counter(out, "herald_engine_gaps_filled_total",
            "Reads of a followed stream to fill a gap (a jump in offsets, a reconnect).",
            metrics_sum(METRIC_ENGINE_GAPS));

    if (sources.feed) {
        gauge(out, "herald_feed_up", "1 while the PostgreSQL change feed streams, else 0.",
              (double)metrics_sum(METRIC_FEED_UP));
        counter(out, "herald_feed_reconnects_total", "Replication streams that ended.",
                metrics_sum(METRIC_FEED_RECONNECTS));
        gauge(out, "herald_feed_slot_lag_bytes",
              "WAL received from PostgreSQL and not yet confirmed, in bytes.",
              (double)metrics_sum(METRIC_FEED_LAG_BYTES));
        gauge(out, "herald_feed_seconds_behind",
              "From the commit of the last transaction to its hand-over, in seconds.",
              (double)metrics_sum(METRIC_FEED_BEHIND_MS) / 1000);
        counter(out, "herald_feed_changes_published_total", "Changes handed to the hub.",
                metrics_sum(METRIC_FEED_CHANGES));
    }
    if (sources.history) {
        gauge(out, "herald_history_entries", "Publications kept in history on this node.",
              (double)metrics_sum(METRIC_HISTORY_ENTRIES));
        gauge(out, "herald_history_bytes", "Bytes of publications kept in history.",
              (double)metrics_sum(METRIC_HISTORY_BYTES));
    }
    write_process(out);
}
