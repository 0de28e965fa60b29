/* herald-bench: options, the statistics workers hand to the parent, the control
 * messages on the parent<->worker socketpair, and helpers shared by its files.
 * Not herald's server code: the bench only links the library's framing (ws/frame.h). */
#ifndef HERALD_BENCH_BENCH_H
#define HERALD_BENCH_BENCH_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "hist.h"

enum bench_scenario { BENCH_FANOUT, BENCH_CHANNELS, BENCH_IDLE, BENCH_CHURN };

struct bench_opts {
    int scenario;
    char ws_host[64];
    int ws_port;
    char ws_path[256];
    char api_host[64];
    int api_port;
    const char *api_key;
    const char *secret; /* HS256 secret for connection tokens */
    int anonymous;
    uint32_t connections;
    double rate;         /* publications (churn: cycles) per second; 0 = as fast as possible */
    double duration;     /* seconds of publishing (idle: holding) */
    uint32_t size;       /* bytes of publication data */
    const char *channel; /* fanout: the channel; channels/idle/churn: name prefix */
    uint32_t workers;
    uint32_t sources;  /* loopback source addresses 127.0.0.1..127.0.0.N */
    uint32_t inflight; /* unanswered API requests at most */
    uint32_t api_conns;
    uint32_t connect_concurrency; /* handshakes in progress per worker at most */
    uint32_t batch;   /* publications per POST /api/batch (0: one POST /api/publish each) */
    uint32_t per_channel; /* channels: subscribers a channel (1: one each, per-user) */
    uint64_t max_lag; /* rate 0: deliveries still owed to subscribers at most (0 = no cap) */
    int pid;
    int json;
    int pin;
    int libuv_reads; /* subscribed connections read by libuv (the comparison), not recv() */
    int spin;        /* workers poll their connections without sleeping */
};

/* Errors by name ("close_3008", "error_106", "tcp_ECONNREFUSED"...). */
#define BENCH_ERR_SLOTS 32
struct bench_err {
    char name[40];
    uint64_t count;
};

/* What a worker reports at the end (fixed size, written raw to the parent). */
struct bench_stats {
    uint64_t assigned;   /* connections (churn: cycles started) */
    uint64_t subscribed; /* reached "subscribed" */
    uint64_t failed;     /* never got there */
    uint64_t expected;   /* publications this worker's connections should have received */
    uint64_t delivered;  /* distinct publications received */
    uint64_t duplicated;
    uint64_t out_of_order; /* arrived after a later sequence number of the same channel */
    uint64_t surplus;      /* delivered beyond expected on some connection */
    uint64_t published;    /* churn: publications accepted by the API */
    uint64_t publish_errors;
    uint64_t completed;       /* churn: full cycles (publication received) */
    uint64_t cpu_ns;          /* this worker's user+system CPU between GO and STOP */
    uint64_t spin_idle_ns;    /* --spin: of it, loop turns that found nothing to read */
    uint64_t reads;           /* read() calls that returned data, between GO and STOP */
    uint64_t read_bytes;      /* the bytes they returned */
    double connect_seconds;   /* from start to all subscribed/failed */
    uint64_t t_last_delivery; /* bench_now_ns() of the last publication received */
    struct bench_err errs[BENCH_ERR_SLOTS];
    struct hist latency;     /* publication: data.t to receipt, ns */
    struct hist handshake;   /* TCP connect start to subscribe reply, ns */
    struct hist api_latency; /* churn: publish request to reply, ns */
};

/* Control messages: struct bench_msg then len payload bytes. */
enum bench_msg_type {
    MSG_PROGRESS = 1, /* worker -> parent: struct bench_progress */
    MSG_READY,        /* worker -> parent: struct bench_progress, every connection settled */
    MSG_FINAL,        /* worker -> parent: struct bench_stats */
    MSG_GO,           /* parent -> worker: measuring starts (struct bench_go) */
    MSG_HALT,         /* parent -> worker: start no more churn cycles */
    MSG_STOP,         /* parent -> worker: uint32 accepted publications per channel */
    MSG_WINDOWS,      /* worker -> parent, before MSG_FINAL: uint32 latency counts,
                       * WIN_BUCKETS for each of bench_go.windows */
};

struct bench_go {
    uint64_t t_go;    /* the parent's bench_now_ns() at GO: window 0 starts here */
    uint32_t windows; /* WIN_NS windows of publication times; later ones count in the last */
    uint32_t pad;
};

struct bench_msg {
    uint32_t type;
    uint32_t len;
};

struct bench_progress {
    uint64_t connected;
    uint64_t subscribed;
    uint64_t failed;
    uint64_t delivered;
    uint64_t completed;
    double connect_seconds;
};

/* The CPUs process pid may run on; all of them when pid <= 0 or unreadable. */
void bench_cpus_of(int pid, cpu_set_t *set);
/* Steal time (the hypervisor's, from /proc/stat) in ns summed over the CPUs in set, or
 * the machine's total when set is NULL; -1 when unreadable. Tick resolution. */
long long bench_steal_ns(const cpu_set_t *set);

/* Monotonic clock in ns (CLOCK_MONOTONIC: comparable across the bench's processes). */
uint64_t bench_now_ns(void);

/* Add one to the error counter called name in errs (a new slot if needed; the last
 * slot collects "other" when the table is full). */
void bench_err_add(struct bench_err *errs, const char *name, uint64_t n);

/* Connection token: a HS256 JWT {"sub":user} signed with secret, NUL-terminated in
 * out (cap bytes). Returns its length or -1 if it does not fit. */
int bench_token(const char *secret, const char *user, char *out, size_t cap);

/* Sec-WebSocket-Key (24 chars) from 16 random bytes, and its expected accept (28 chars);
 * both NUL-terminated. */
void bench_ws_key(char key[25], char accept[29]);

/* Append a publish request body to b: {"channel":channel,"data":{"t":t,"s":seq,"p":"xx.."}}
 * with the padding making data about size bytes. */
void bench_pub_body(struct buf *b, const char *channel, uint64_t t, uint64_t seq, uint32_t size);

/* Worker process main loop: connections with index i % workers == w. Never returns. */
void bench_worker_main(const struct bench_opts *o, uint32_t w, int ctl_fd);

#endif
