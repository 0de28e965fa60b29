/* Counters and histograms: one slot per event loop (plus one for the threads that are
 * not loops: the change feed), each written only by its own thread (relaxed atomics,
 * slots cache-line aligned), summed on read by any thread; and the Prometheus text
 * exposition of them (format 0.0.4). Not the values other modules own (users,
 * channels, history): main.c registers getters for those (struct metrics_sources).
 * Nothing here locks or allocates per event. */
#ifndef HERALD_METRICS_METRICS_H
#define HERALD_METRICS_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

enum metric {
    METRIC_CONNECTIONS,   /* gauge: open connections, any state */
    METRIC_CLIENTS,       /* gauge: connected clients (after connect) */
    METRIC_SUBSCRIPTIONS, /* gauge: subscriptions */
    METRIC_MESSAGES_OUT,  /* counter: frames queued to clients by fan-out */
    METRIC_PUBLICATIONS,  /* counter: publications received for local delivery */
    /* counters and gauges of /metrics (docs/metrics.md) */
    METRIC_ACCEPTED,            /* connections accepted */
    METRIC_MESSAGES_IN,         /* WebSocket text messages received */
    METRIC_REPLIES_OUT,         /* WebSocket text frames sent by sessions (replies, pushes) */
    METRIC_BYTES_IN,            /* bytes read on WebSocket connections */
    METRIC_BYTES_OUT,           /* bytes written on WebSocket connections */
    METRIC_PUBLISHES,           /* publishes handed to the engine (API, client, feed) */
    METRIC_SLOW,                /* subscribers disconnected as slow (3008) */
    METRIC_RECOVERED,           /* subscribes recovering: recovered */
    METRIC_NOT_RECOVERED,       /* subscribes recovering: not recovered */
    METRIC_QUEUED_BYTES,        /* gauge: outbound bytes queued on the loop's connections */
    METRIC_REFUSED_ORIGIN,      /* handshakes refused: Origin not allowed (403) */
    METRIC_REFUSED_BAD_REQUEST, /* handshakes refused: not a valid upgrade (400, 426) */
    METRIC_REFUSED_QUERY_TOKEN, /* handshakes refused: a token in the URL (400) */
    METRIC_ENGINE_RECONNECTS,   /* Redis connections lost while up */
    METRIC_ENGINE_PUBSUB,       /* pub/sub messages read from Redis */
    METRIC_ENGINE_GAPS,         /* reads of a followed stream to fill a gap */
    METRIC_FEED_UP,             /* gauge (feed slot): streaming */
    METRIC_FEED_RECONNECTS,     /* replication streams that ended */
    METRIC_FEED_LAG_BYTES,      /* gauge (feed slot): WAL seen minus WAL confirmed */
    METRIC_FEED_BEHIND_MS,      /* gauge (feed slot): commit to hand-over, last transaction */
    METRIC_FEED_CHANGES,        /* changes handed to the hub */
    METRIC_HISTORY_ENTRIES,     /* gauge: publications in the memory engine's history */
    METRIC_HISTORY_BYTES,       /* gauge: their bytes */
    /* counters: refusals by limit (limit/node.h) */
    METRIC_LIMIT_CONNECTIONS,      /* max_connections: HTTP 503 */
    METRIC_LIMIT_IP_CONNECTIONS,   /* max_connections_per_ip: HTTP 429 */
    METRIC_LIMIT_IP_RATE,          /* connection_rate_per_ip: HTTP 429 */
    METRIC_LIMIT_USER_CONNECTIONS, /* max_connections_per_user: 3504 */
    METRIC_LIMIT_COMMANDS,         /* client_command_rate: error 111 */
    METRIC_LIMIT_COMMAND_FLOODS,   /* client_command_rate, kept going: 3013 */
    METRIC_LIMIT_USER_PUBLISH,     /* user_publish_rate: error 111 */
    METRIC_LIMIT_CHANNEL_PUBLISH,  /* channel_publish_rate: error 111 */
    METRIC_LIMIT_SUBSCRIPTIONS,    /* max_subscriptions_per_connection: error 106 */
    METRIC_LIMIT_LOCAL_FALLBACK,   /* shared limits decided locally: the engine unreachable */
    /* counters: timeouts and sizes (docs/configuration.md, "Timeouts and sizes") */
    METRIC_LIMIT_HEAD_TIMEOUTS,    /* handshake_timeout: the connection closed */
    METRIC_LIMIT_HEAD_SIZE,        /* max_request_head: HTTP 431 */
    METRIC_LIMIT_CONNECT_TIMEOUTS, /* client_connect_timeout: 3502 */
    METRIC_LIMIT_MESSAGE_COMMANDS, /* max_commands_per_message: 3501 */
    METRIC_LIMIT_CHANNEL_LENGTH,   /* max_channel_length, client commands: error 107 */
    METRIC_LIMIT_DATA_SIZE,        /* a namespace's max_data_size, client publishes: error 106 */
    METRIC_LIMIT_QUEUE_TOTAL,      /* client_queue_total_max: 3008 (HTTP: closed) */
    METRIC_COUNT,
};

/* Client commands by method (the session maps its own enum onto these). */
enum metric_method {
    METRIC_M_CONNECT,
    METRIC_M_SUBSCRIBE,
    METRIC_M_UNSUBSCRIBE,
    METRIC_M_PUBLISH,
    METRIC_M_PRESENCE,
    METRIC_M_PRESENCE_STATS,
    METRIC_M_HISTORY,
    METRIC_M_PING,
    METRIC_M_REFRESH,
    METRIC_M_SUB_REFRESH,
    METRIC_M_RPC,
    METRIC_M_SEND,
    METRIC_METHODS,
};

/* Reply error codes 100..112 (one more index for any other). */
#define METRIC_ERROR_MIN 100
#define METRIC_ERRORS 14
/* Close codes sent: WebSocket 1000..1015, herald's and applications' 3000..4999, and
 * one index for any other. */
#define METRIC_CLOSE_CODES (16 + 2000 + 1)

/* Histogram bucket upper bounds, microseconds (Prometheus' le, in seconds, at scrape);
 * one more bucket for +Inf. */
#define METRIC_BUCKETS 13

struct metrics_hist {
    atomic_int_fast64_t bucket[METRIC_BUCKETS + 1]; /* not cumulative: summed at scrape */
    atomic_int_fast64_t sum_us;
};

enum metric_hist {
    METRIC_H_PUBLISH_TO_WRITE, /* hub_publish to the write of its frame to a socket */
    METRIC_H_ENGINE_COMMAND,   /* a Redis command's round trip */
    METRIC_HISTS,
};

struct metrics_slot {
    _Alignas(64) atomic_int_fast64_t v[METRIC_COUNT];
    atomic_int_fast64_t method[METRIC_METHODS];
    atomic_int_fast64_t error[METRIC_ERRORS];
    atomic_int_fast64_t close_code[METRIC_CLOSE_CODES];
    struct metrics_hist hist[METRIC_HISTS];
};

extern struct metrics_slot *metrics_slots;
extern unsigned metrics_nslots; /* loops + 1: the last is for threads that are not loops */
extern _Thread_local unsigned metrics_self; /* this thread's slot (0 until set) */

/* Slots for nloops loops (at least one) and one more for other threads. 0, or -1 out of
 * memory. Before any thread runs. */
int metrics_init(unsigned nloops);
void metrics_free(void);
/* This thread writes slot (a loop's id, or metrics_other_slot()) from now on. */
void metrics_set_thread_slot(unsigned slot);
unsigned metrics_other_slot(void);

/* Loop thread of slot: add d (negative for a gauge going down). */
static inline void metrics_add(unsigned slot, enum metric m, int64_t d)
{
    atomic_fetch_add_explicit(&metrics_slots[slot].v[m], d, memory_order_relaxed);
}

/* The same on this thread's slot (metrics_set_thread_slot). */
static inline void metrics_count(enum metric m, int64_t d)
{
    metrics_add(metrics_self, m, d);
}

/* A gauge only one thread sets, in this thread's slot. */
static inline void metrics_set(enum metric m, int64_t v)
{
    atomic_store_explicit(&metrics_slots[metrics_self].v[m], v, memory_order_relaxed);
}

static inline void metrics_count_method(enum metric_method m)
{
    atomic_fetch_add_explicit(&metrics_slots[metrics_self].method[m], 1, memory_order_relaxed);
}

static inline void metrics_count_error(int code)
{
    unsigned i = code >= METRIC_ERROR_MIN && code < METRIC_ERROR_MIN + METRIC_ERRORS - 1
                     ? (unsigned)(code - METRIC_ERROR_MIN)
                     : METRIC_ERRORS - 1;
    atomic_fetch_add_explicit(&metrics_slots[metrics_self].error[i], 1, memory_order_relaxed);
}

/* A close frame with code was sent (0: none, not counted). */
void metrics_count_close(unsigned code);

/* Record a duration (microseconds) in this thread's slot. */
void metrics_observe(enum metric_hist h, uint64_t us);

/* Microseconds of CLOCK_MONOTONIC, modulo 2^32 and never 0: the stamp a publication's
 * frame carries (core/frame.h) from hub_publish to its write; differences of two are
 * right for up to 71 minutes. */
uint32_t metrics_stamp_us(void);

/* Any thread: the sum over every slot. */
uint64_t metrics_sum(enum metric m);

/* Engine shards for herald_engine_up{shard}: named once (any thread, before or while
 * the loops run: the name is published with a release store), then set up or down. */
#define METRIC_SHARDS_MAX 64
void metrics_engine_shard(unsigned i, const char *name);
void metrics_engine_up(unsigned i, int up);

/* What other modules own, read at scrape time by getters main.c registers (each may be
 * NULL: that metric is left out). Called on the loop serving the scrape: they must be
 * cheap and take no lock that a delivery holds for long. */
struct metrics_sources {
    const char *version, *commit;
    uint64_t start_ms; /* loop_clock_ms() at start, for herald_uptime_seconds */
    uint64_t (*now_ms)(void);
    uint64_t (*users)(void);
    uint64_t (*channels)(void);
    int history; /* history is kept here (the memory engine): herald_history_* exposed */
    int feed;    /* a change feed is configured: herald_feed_* are exposed */
};
/* Once, before the loops run (copied). */
void metrics_set_sources(const struct metrics_sources *src);

/* Count the open descriptors for process_open_fds (procfs: milliseconds with tens of
 * thousands of connections). Not on a loop: main.c calls it every few seconds on the main
 * thread; a scrape reports the last count. */
void metrics_refresh_open_fds(void);

/* The whole exposition (text format 0.0.4) appended to out; out->oom on failure.
 * Any thread. */
void metrics_write(struct buf *out);

/* Writer pieces, for the exposition above and its unit tests. */
void metrics_write_family(struct buf *out, const char *name, const char *type, const char *help);
/* name{labels} value: labels is "" or `k="v",...` (already escaped). */
void metrics_write_sample(struct buf *out, const char *name, const char *labels, double v);
void metrics_write_counter(struct buf *out, const char *name, const char *labels, uint64_t v);
/* A histogram's _bucket, _sum and _count lines from per-slot sums h (not cumulative). */
void metrics_write_hist(struct buf *out, const char *name, const struct metrics_hist *h);
/* The sum of one histogram over every slot. */
void metrics_hist_sum(enum metric_hist h, struct metrics_hist *out);
/* Escape a label value (\\, \", \n) into out (cap bytes, NUL-terminated). */
void metrics_escape_label(const char *v, char *out, size_t cap);

#endif
