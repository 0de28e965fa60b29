/* Channels and their local subscribers, and the fan-out of opaque frames. Global part:
 * a sharded routing table, channel -> mask of the loops with local subscribers and
 * their count, each shard under its own mutex, taken once per publication and per
 * subscribe, never per delivery. Local part: each loop's own table channel -> its
 * subscribers, touched only by that loop. Streams, history and presence are the
 * engine's (engine/engine.h): the hub calls the engine, and the engine hands the hub
 * what happens in channels through the events it was opened with. What a frame says
 * is the client protocol's business (proto/push.h), given to hub_init as encoders. */
#ifndef HERALD_HUB_HUB_H
#define HERALD_HUB_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

struct conn;
struct frame;
struct loop;
struct ns_opts;
struct local_channel;
struct hub_sub;

/* How the hub turns what the engine delivers into frames, and tells the owner of a
 * subscription that it cannot keep up. Set once by hub_init. */
struct hub_callbacks {
    /* One frame for a publication of channel ch, with tail spare bytes of capacity
     * after f->len (the hub keeps the channel name there). One reference for the
     * hub, or NULL out of memory. Any thread, under the engine's channel lock. */
    struct frame *(*encode_publication)(const uint8_t *ch, size_t len,
                                        const struct engine_pub *pub, size_t tail);
    /* Likewise for a join (1) or leave (0) of the ClientInfo info. */
    struct frame *(*encode_join_leave)(const uint8_t *ch, size_t len, int join,
                                       const uint8_t *info, size_t info_len, size_t tail);
    /* A local subscriber's queue is full: the owner (the handler of its connection c)
     * disconnects it (3008) now. Loop thread of the subscriber, during a delivery: the
     * owner may unsubscribe it. */
    void (*slow)(struct conn *c);
    /* The engine lost the channel's continuity for this node: the owner (the handler of
     * s's connection c) tells its client to resubscribe and unsubscribes s. Loop thread
     * of the subscriber. */
    void (*lost)(struct conn *c, struct hub_sub *s);
    /* A control message from some node (any thread): the owner applies it here. */
    void (*control)(const uint8_t *msg, size_t len);
};

/* A local subscription. The hub owns it (hub_subscribe creates it, hub_unsubscribe
 * frees it); the owner reads it and uses its two fields. One per subscriber: kept small
 * (from a slab of its loop; the channel's name is its local channel's). */
struct hub_presence;
struct hub_sub {
    /* the owner's */
    struct hub_sub *next; /* the owner's list of its subscriptions */
    uint32_t expire_at;   /* loop second its subscription token expires (+grace), 0 never */
    /* the hub's, read-only for the owner */
    uint32_t index : 31; /* position in lc's subscriber array */
    uint32_t stream : 1; /* its namespace keeps history: the engine follows the channel */
    struct conn *conn;   /* where deliveries go; its handler is the owner */
    struct local_channel *lc;
    uint64_t min_offset; /* publications with offset <= this were already sent (recovery) */
    /* client id, ClientInfo and namespace, where it keeps presence or join/leave */
    struct hub_presence *presence;
};

/* The subscription's channel: its name (NUL-terminated, valid while s lives), *len its
 * length. */
const char *hub_sub_name(const struct hub_sub *s, size_t *len);
/* The ClientInfo JSON kept for presence and join/leave (valid while s lives), or NULL
 * when the namespace has neither. */
const uint8_t *hub_sub_info(const struct hub_sub *s, size_t *len);

/* Before the engine is opened: the loops (borrowed), max_channels, the callbacks. */
int hub_init(unsigned nloops, struct loop *const *loops, size_t max_channels,
             const struct hub_callbacks *cb);
/* The events to open the engine with (they deliver into the hub). */
struct engine_events hub_engine_events(void);
/* The engine the hub calls (borrowed until hub_shutdown). NULL once it is closed: the
 * completions it left in the loops' inboxes then unsubscribe without calling it. */
void hub_set_engine(struct engine *e);
void hub_shutdown(void);
/* A loop thread's local table goes at its end. */
void hub_loop_exit(struct loop *loop);

/* What a subscribe needs. Everything is borrowed for the call (client and info are
 * copied where the namespace keeps presence or join/leave). */
struct hub_subscribe_req {
    const uint8_t *channel;
    size_t len;
    const struct ns_opts *ns;
    struct conn *conn; /* where deliveries go; its handler (the owner) gets callbacks */
    struct engine_recovery rec;
    const char *client; /* presence key */
    const uint8_t *user;
    size_t user_len;
    const uint8_t *info; /* ClientInfo for presence and join/leave, or NULL */
    size_t info_len;
};

/* status 0: sub is the new subscription (the owner links it); otherwise sub is NULL
 * and status an engine status (-106 past max_channels). pos/pubs as the engine's
 * subscribe gives them (borrowed for the call). */
typedef void (*hub_subscribe_cb)(void *ud, int status, struct hub_sub *sub,
                                 const struct engine_pos *pos, int recovered,
                                 const struct engine_pub *pubs, size_t n);

/* Loop thread of r->conn: subscribe, with recovery when r->rec.recover. Deliveries
 * that the recovered publications already hold are not sent twice, none after them
 * is missed. cb is called once (before this returns with the memory engine). */
void hub_subscribe(struct loop *loop, const struct hub_subscribe_req *r, hub_subscribe_cb cb,
                   void *ud);
/* Loop thread. Remove and free the subscription. */
void hub_unsubscribe(struct loop *loop, struct hub_sub *s);

/* Any thread. A hint, a few publications before publishing to ch: start loading its
 * route, so that the publication finds it in the cache (the batch API looks ahead). */
void hub_prefetch(const uint8_t *ch, size_t len);
/* Any thread. Publish raw JSON data (borrowed, byte for byte) with the publisher's
 * ClientInfo (or NULL) on channel ch of namespace ns; cb gets the stream position. */
void hub_publish(const uint8_t *ch, size_t len, const struct ns_opts *ns, const uint8_t *data,
                 size_t data_len, const uint8_t *info, size_t info_len, const uint8_t *key,
                 size_t key_len, engine_publish_cb cb, void *ud);
/* Queries, passed to the engine with the namespace's stream options. */
void hub_history(const uint8_t *ch, size_t len, const struct ns_opts *ns,
                 const struct engine_history_query *q, engine_history_cb cb, void *ud);
void hub_history_remove(const uint8_t *ch, size_t len, engine_done_cb cb, void *ud);
/* Any thread: the streams of every channel named prefix... start again (engine.h reset). */
void hub_reset_streams(const uint8_t *prefix, size_t len, engine_done_cb cb, void *ud);
/* ENGINE_ERR_NOT_AVAILABLE when the namespace keeps no presence. */
void hub_presence(const uint8_t *ch, size_t len, const struct ns_opts *ns, engine_presence_cb cb,
                  void *ud);
void hub_presence_stats(const uint8_t *ch, size_t len, const struct ns_opts *ns,
                        engine_stats_cb cb, void *ud);

/* Any thread: the engine's stores and whether each answers (engine.h). */
void hub_stores(engine_store_cb cb, void *ud);
/* Any thread: channels with local subscribers on this node. */
uint64_t hub_channel_count(void);
/* Any thread: msg (borrowed) to every node's callbacks.control, this one's included. */
void hub_control(const uint8_t *msg, size_t len);
/* This node's announcement (every few seconds), and the live nodes. */
void hub_announce(const char *uid, const uint8_t *info, size_t len);
void hub_nodes(engine_nodes_cb cb, void *ud);

/* This node's uid, which a survey of the nodes (hub_channels_all) goes out under. */
void hub_set_node(const char *uid);
/* One channel of hub_channels_all's answer. */
struct hub_channel_count {
    const uint8_t *name;
    size_t len;
    uint64_t num_clients;
};
/* status 0 with chs[0..n) sorted by name (borrowed for the call); ENGINE_ERR_UNAVAILABLE
 * when the engine cannot say which nodes live (its store is down); -1 out of memory. */
typedef void (*hub_channels_cb)(void *ud, int status, const struct hub_channel_count *chs,
                                size_t n);
/* Loop thread: the channels of every live node whose name contains pattern, each with
 * its subscribers summed across the nodes that answered within 2-3 s (a node dead
 * since it last announced itself costs that wait), and the channels the engine holds
 * state for with 0; cb once, on this loop (at once on a node alone, or off a loop). */
void hub_channels_all(const uint8_t *pattern, size_t pattern_len, hub_channels_cb cb, void *ud);

/* Any thread: every channel holding state (local subscribers, a stream or presence),
 * and the local subscriptions. */
void hub_counts(uint64_t *channels, uint64_t *subscriptions);
/* Any thread: for each channel holding state whose name contains pattern (NULL or
 * empty: all), cb(ud, name, len, local subscribers). */
void hub_channels(const uint8_t *pattern, size_t pattern_len,
                  void (*cb)(void *ud, const uint8_t *ch, size_t len, uint32_t num_clients),
                  void *ud);

#endif
