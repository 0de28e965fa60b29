/* Counters: one slot per event loop, each written only by its loop thread (relaxed
 * atomics, one cache line a slot), summed on read by any thread. What /api/info
 * reports today and /metrics will expose. Not logging, not histograms (yet). */
#ifndef HERALD_METRICS_METRICS_H
#define HERALD_METRICS_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

enum metric {
    METRIC_CONNECTIONS,  /* gauge: open connections, any state */
    METRIC_CLIENTS,      /* gauge: connected clients (after connect) */
    METRIC_SUBSCRIPTIONS, /* gauge: subscriptions */
    METRIC_MESSAGES_OUT, /* counter: frames queued to clients by fan-out */
    METRIC_PUBLICATIONS, /* counter: publications received for local delivery */
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

struct metrics_slot {
    _Alignas(64) atomic_int_fast64_t v[METRIC_COUNT];
};

extern struct metrics_slot *metrics_slots;
extern unsigned metrics_nslots;

/* Slots for nslots loops (at least one). 0, or -1 out of memory. Before any thread runs. */
int metrics_init(unsigned nslots);
void metrics_free(void);

/* Loop thread of slot: add d (negative for a gauge going down). */
static inline void metrics_add(unsigned slot, enum metric m, int64_t d)
{
    atomic_fetch_add_explicit(&metrics_slots[slot].v[m], d, memory_order_relaxed);
}

/* Any thread: the sum over every slot. */
uint64_t metrics_sum(enum metric m);

#endif
