/* The engine: the seam between one node and many. It owns channel streams (offsets,
 * epochs, history), presence, and the delivery of what happens in a channel to every
 * node. `memory` (engine/memory.c) is the embedded default: one node, everything in
 * this process. A `redis` engine implements the same operations and runs the same
 * contract (tests/unit/test_engine.c). Not fan-out to connections (hub/hub.h): the
 * engine knows no hub, no client protocol and no transport.
 *
 * Asynchronous in the hiredis style: every request takes a completion callback and
 * its private data, called exactly once on the thread that made the request (the
 * memory engine calls it before the request returns; a networked engine later, from
 * the requesting loop). What the callback is handed is borrowed for the duration of
 * the call. Strings passed in are borrowed for the duration of the request call. */
#ifndef HERALD_ENGINE_ENGINE_H
#define HERALD_ENGINE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct engine;

#define ENGINE_EPOCH_LEN 8

/* Result codes: 0, or one of these (negated client-protocol error numbers, so that
 * callers turn them into the protocol's error without a table). */
enum engine_status {
    ENGINE_OK = 0,
    ENGINE_ERR_INTERNAL = -100,      /* out of memory, engine failure */
    ENGINE_ERR_LIMIT = -106,         /* a new channel past max_channels */
    ENGINE_ERR_NOT_AVAILABLE = -108, /* no history / no presence in this namespace */
    ENGINE_ERR_UNRECOVERABLE = -112, /* since: another epoch */
    /* The engine cannot reach its store now (Redis down): temporary, to be retried.
     * Reported as error 100 with "temporary": true (HTTP 503 from the server API). */
    ENGINE_ERR_UNAVAILABLE = -1100,
};

/* A stream's position: the offset of its newest publication and its epoch. */
struct engine_pos {
    uint64_t offset;
    char epoch[ENGINE_EPOCH_LEN + 1]; /* "" when the channel keeps no history */
};

/* A publication as engines store and deliver it: neutral bytes, no framing. */
struct engine_pub {
    const uint8_t *data; /* raw JSON, byte for byte as published */
    size_t data_len;
    const uint8_t *info; /* raw JSON ClientInfo of a client publisher, or NULL */
    size_t info_len;
    uint64_t offset; /* 0 when the channel keeps no history */
};

/* The stream options of a channel's namespace. */
struct engine_stream_opts {
    uint32_t history_size; /* 0: no history, no offsets */
    uint32_t history_ttl;  /* seconds */
};

/* What happens in channels, handed to the node's fan-out (the hub) for every channel,
 * from this node or another, in offset order per channel. Called from any thread; the
 * memory engine calls them under the channel's lock, so that a subscriber's recovery
 * and the deliveries after it neither miss nor repeat a publication. */
struct engine_events {
    void (*publication)(void *ud, const uint8_t *ch, size_t len, const struct engine_pub *pub);
    /* join (1) or leave (0) of the ClientInfo info in a channel with join_leave */
    void (*join_leave)(void *ud, const uint8_t *ch, size_t len, int join, const uint8_t *info,
                       size_t info_len);
    /* The channel's stream went on without this node and what it missed is no longer
     * held (or its epoch changed): its subscribers must resubscribe (and will learn
     * they did not recover). A networked engine's only; may be NULL. */
    void (*lost)(void *ud, const uint8_t *ch, size_t len);
    /* A control message (opaque bytes) sent by some node's engine ops->control: every
     * node gets it, the sender included. */
    void (*control)(void *ud, const uint8_t *msg, size_t len);
    void *ud;
};

/* A live node as it last announced itself. */
struct engine_node {
    const char *uid; /* NUL-terminated */
    const uint8_t *info; /* its JSON object */
    size_t info_len;
};
typedef void (*engine_nodes_cb)(void *ud, int status, const struct engine_node *nodes, size_t n);

struct engine_history_query {
    int64_t limit; /* -1: all, 0: none (only the position), n: at most n */
    int has_since;
    uint64_t since_offset;
    const uint8_t *since_epoch;
    size_t since_epoch_len;
    int reverse; /* newest first (with since: those before it) */
};

/* Subscribe's recovery: what the client saw last. */
struct engine_recovery {
    int recover;
    uint64_t offset;
    const uint8_t *epoch;
    size_t epoch_len;
    unsigned max_pubs; /* more missed than this: not recovered */
};

/* One member of a channel's presence. */
struct engine_presence {
    const char *client;  /* NUL-terminated */
    const uint8_t *info; /* raw JSON ClientInfo */
    size_t info_len;
};

typedef void (*engine_publish_cb)(void *ud, int status, const struct engine_pos *pos);
typedef void (*engine_history_cb)(void *ud, int status, const struct engine_pos *pos,
                                  const struct engine_pub *pubs, size_t n);
/* recovered: the missed publications pubs[0..n) (oldest first) cover the gap. */
typedef void (*engine_subscribe_cb)(void *ud, int status, const struct engine_pos *pos,
                                    int recovered, const struct engine_pub *pubs, size_t n);
typedef void (*engine_presence_cb)(void *ud, int status, const struct engine_presence *members,
                                   size_t n);
typedef void (*engine_stats_cb)(void *ud, int status, uint64_t num_clients, uint64_t num_users);
typedef void (*engine_done_cb)(void *ud, int status);
/* allowed: 1, or 0 refused by the limit (status 0 either way). */
typedef void (*engine_limit_cb)(void *ud, int status, int allowed);

/* A limit shared by every node (engine_ops.limit): a GCRA bucket (interval_us 0: none;
 * see limit/limit.h) and a count of connections kept per node (max 0: none), both or
 * neither taken. */
struct engine_limit {
    uint64_t interval_us, window_us;
    uint32_t max;
    int delta; /* +1: count one more unless the total would pass max; -1: one ends */
};
/* Once per channel holding state, then once with ch == NULL at the end. */
typedef void (*engine_channel_cb)(void *ud, const uint8_t *ch, size_t len);
/* One store an engine needs: its name (a Redis shard's URL without its password) and,
 * when it does not answer, why (NULL when it does). Both borrowed for the call. */
typedef void (*engine_store_cb)(void *ud, const char *name, const char *down_reason);

struct engine_ops {
    const char *name;
    /* Publish: assign the next offset (with history), keep it, hand it to every node's
     * events.publication. idempotency_key (or NULL): a repeat within 5 minutes is not
     * published again and completes with the first one's position. pos->epoch is ""
     * without history. */
    void (*publish)(struct engine *e, const uint8_t *ch, size_t len,
                    const struct engine_stream_opts *opts, const struct engine_pub *pub,
                    const uint8_t *idempotency_key, size_t key_len, engine_publish_cb cb,
                    void *ud);
    /* History of a channel whose namespace keeps it (opts->history_size > 0). */
    void (*history)(struct engine *e, const uint8_t *ch, size_t len,
                    const struct engine_stream_opts *opts, const struct engine_history_query *q,
                    engine_history_cb cb, void *ud);
    /* Drop a channel's history; the position stays. */
    void (*history_remove)(struct engine *e, const uint8_t *ch, size_t len, engine_done_cb cb,
                           void *ud);
    /* Every channel whose name begins with prefix loses its stream (what fed it lost
     * publications: a replication slot invalidated): history gone and a new epoch, so no
     * recovery across the hole succeeds; this node's subscribers of those channels get
     * events.lost. cb (or NULL) once it is done on every store. */
    void (*reset)(struct engine *e, const uint8_t *prefix, size_t len, engine_done_cb cb,
                  void *ud);
    /* A subscriber of this node joins ch: from now on the channel's events reach this
     * node (a networked engine follows local interest), then the position and, when
     * rec->recover, the publications after rec->offset are read with no gap between
     * them and the deliveries that follow (a caller drops deliveries at or below
     * pos->offset). Counted once per call; unsubscribe undoes one. */
    void (*subscribe)(struct engine *e, const uint8_t *ch, size_t len,
                      const struct engine_stream_opts *opts, const struct engine_recovery *rec,
                      engine_subscribe_cb cb, void *ud);
    void (*unsubscribe)(struct engine *e, const uint8_t *ch, size_t len);
    /* A subscriber joins ch: with presence, client (NUL-terminated id) of user with its
     * ClientInfo becomes a member; with join_leave, events.join_leave(join) goes to
     * every node. cb may be NULL. */
    void (*presence_add)(struct engine *e, const uint8_t *ch, size_t len, const char *client,
                         const uint8_t *user, size_t user_len, const uint8_t *info,
                         size_t info_len, int presence, int join_leave, engine_done_cb cb,
                         void *ud);
    /* It leaves: the member goes (with presence), events.join_leave(leave) with its info
     * (with join_leave). */
    void (*presence_remove)(struct engine *e, const uint8_t *ch, size_t len, const char *client,
                            const uint8_t *info, size_t info_len, int presence, int join_leave);
    void (*presence)(struct engine *e, const uint8_t *ch, size_t len, engine_presence_cb cb,
                     void *ud);
    void (*presence_stats)(struct engine *e, const uint8_t *ch, size_t len, engine_stats_cb cb,
                           void *ud);
    /* Every channel that holds engine state (a stream or presence). */
    void (*channels)(struct engine *e, engine_channel_cb cb, void *ud);
    /* Housekeeping, about once a second from one thread: expire history, forget idle
     * streams. */
    void (*sweep)(struct engine *e);
    /* Any thread: every store the engine needs, each once, for /ready and /api/info. */
    void (*stores)(struct engine *e, engine_store_cb cb, void *ud);
    /* Send msg (borrowed) to every node's events.control, this one's included. */
    void (*control)(struct engine *e, const uint8_t *msg, size_t len);
    /* This node is alive: its uid and JSON info (borrowed), every few seconds. */
    void (*announce)(struct engine *e, const char *uid, const uint8_t *info, size_t len);
    /* The nodes that announced themselves within the last three intervals (this one
     * included once it has announced). */
    void (*nodes)(struct engine *e, engine_nodes_cb cb, void *ud);
    /* The limit named key (borrowed) across every node: take from its bucket and, with
     * max, change this node's count by delta; cb (NULL for delta -1 alone) with the
     * verdict. A node's counts live while it does (refreshed; a dead node's expire).
     * NULL in an engine that is one node (memory): the caller's local tables are then
     * the whole truth, and asking would only add a call. ENGINE_ERR_UNAVAILABLE while the
     * store cannot be asked: the caller decides locally. */
    void (*limit)(struct engine *e, const uint8_t *key, size_t len, const struct engine_limit *l,
                  engine_limit_cb cb, void *ud);
    void (*close)(struct engine *e);
};

/* How an engine that completes later (a networked one) hands a completion to the
 * thread that asked: given by whoever opens it. The memory engine never needs it. */
struct engine_host {
    /* The calling thread's slot (its loop's id), or -1 on a thread that is no loop. */
    int (*current)(void *ud);
    /* Run fn(arg) on the thread of slot, soon; from any thread. 0, or -1. */
    int (*post)(void *ud, int slot, void (*fn)(void *arg), void *arg);
    /* The libuv loop (uv_loop_t *) of slot, where an engine may run its own I/O (it is
     * then called there like any handler of that loop). */
    void *(*uv_loop)(void *ud, int slot);
    void *ud;
};

struct engine {
    const struct engine_ops *ops;
    struct engine_events events;
    struct engine_host host;
    void *state;
};

/* Open the engine the config names ("memory", "redis"), delivering to events and
 * completing through host (both copied; host may be NULL for the memory engine).
 * Returns NULL with a message in err (naming the config key at fault). */
struct engine *engine_open(const struct config *config, const struct engine_events *events,
                           const struct engine_host *host, char *err, size_t errlen);
void engine_close(struct engine *e);

/* The engines' constructors (engine_open picks by name). */
struct engine *engine_memory_open(const struct config *config, const struct engine_events *events,
                                  char *err, size_t errlen);
struct engine *engine_redis_open(const struct config *config, const struct engine_events *events,
                                 const struct engine_host *host, char *err, size_t errlen);

#endif
