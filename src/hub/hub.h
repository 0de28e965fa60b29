/* Channels and their subscribers. Global part: a sharded table of channels
 * (routing mask of loops with local subscribers, subscriber count, and the memory
 * engine's stream: offset, epoch, history), each shard under its own mutex, taken
 * once per publication and per subscribe, never per delivery. Local part: each
 * loop's own table channel -> its connections, touched only by that loop. */
#ifndef HERALD_HUB_HUB_H
#define HERALD_HUB_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

struct loop;
struct conn;
struct loop_msg;
struct ns_opts;
struct hub_local;
struct local_channel;

#define HUB_EPOCH_LEN 8
/* hub_publish's return when a new channel would pass max_channels (error 106). */
#define HUB_LIMIT (-2)

struct presence;

/* A connection's subscription to a channel. Owned by the session (list via next),
 * indexed from the loop's channel entry. */
struct hub_sub {
    struct conn *conn;
    struct local_channel *lc;
    uint32_t index;      /* position in lc's subscriber array */
    uint64_t min_offset; /* publications with offset <= this were already sent (recovery) */
    const struct ns_opts *ns;
    struct hub_sub *next;
    uint32_t
        expire_at; /* session's: loop second its subscription token expires (+grace), 0 = never */
    uint8_t *info; /* ClientInfo JSON for presence and join/leave, malloc'd, or NULL */
    struct presence *presence; /* this subscriber's presence entry (hub-owned), or NULL */
    uint32_t info_len;
    uint16_t name_len;
    char name[]; /* NUL-terminated */
};

struct hub_stream_pos {
    uint64_t offset;
    char epoch[HUB_EPOCH_LEN + 1];
};

/* What subscribe asks for and gets back about history. */
struct hub_recovery {
    int recover;          /* in: client asks for recovery */
    uint64_t offset;      /* in: last offset the client saw */
    const uint8_t *epoch; /* in: borrowed */
    size_t epoch_len;
    int has_history;           /* out: the namespace keeps history (offset/epoch valid) */
    struct hub_stream_pos pos; /* out: the stream's current top */
    int recovered;             /* out */
    struct buf *pubs;          /* in: where to append recovered publications as JSON array
                                  elements ({"data":..,"offset":N},...), borrowed */
    unsigned max_pubs;         /* in: recovery limit */
    const char *client;        /* in: client id (presence key) */
    const uint8_t *info;       /* in: ClientInfo JSON {"user":..,"client":..,...}, borrowed */
    size_t info_len;
    int limited; /* out: hub_subscribe returned NULL because max_channels is reached */
};

/* max_channels: channels that may hold state at once (config max_channels). */
int hub_init(unsigned nloops, struct loop **loops, size_t max_channels);
void hub_shutdown(void);
struct hub_local *hub_local_new(void);
void hub_local_free(struct hub_local *h);

/* Loop thread of c. Subscribe c to channel (borrowed name). Returns the subscription
 * (caller links it into the session) or NULL when out of memory or, with rec->limited
 * set, when the channel is new and max_channels is reached. Recovery (when
 * rec->recover) appends the missed publications to rec->pubs under the channel's lock,
 * so that nothing published meanwhile is lost or sent twice. */
struct hub_sub *hub_subscribe(struct loop *loop, struct conn *c, const uint8_t *name, size_t len,
                              const struct ns_opts *ns, struct hub_recovery *rec);
/* Loop thread. Remove and free the subscription. */
void hub_unsubscribe(struct loop *loop, struct hub_sub *s);

/* Any thread. Publish raw JSON data (borrowed, passed byte for byte) on channel.
 * info: raw JSON ClientInfo of the publisher or NULL. pos gets offset/epoch when
 * the namespace keeps history (returns 1 then), else returns 0. -1 out of memory,
 * HUB_LIMIT when the channel's stream would be new and max_channels is reached. */
int hub_publish(const uint8_t *name, size_t len, const struct ns_opts *ns, const uint8_t *data,
                size_t data_len, const uint8_t *info, size_t info_len, struct hub_stream_pos *pos);

/* Loop thread: deliver n LOOP_MSG_PUBLICATIONs of one channel, in offset order, to this
 * loop's subscribers (takes the messages' frame references). */
void hub_deliver(struct loop *loop, struct loop_msg *msgs, size_t n);

/* Presence of a channel (any thread): appends {"<client>":ClientInfo,...} members
 * (without braces) to out when out != NULL, counts clients and distinct users.
 * Returns 0, or -108 when the namespace keeps no presence. */
int hub_presence(const uint8_t *name, size_t len, const struct ns_opts *ns, struct buf *out,
                 uint64_t *num_clients, uint64_t *num_users);

/* Totals for /api/info (any thread): every channel holding state, and subscribers. */
void hub_counts(uint64_t *channels, uint64_t *subscriptions);
/* Append {"name":{"num_clients":N},...} members (without braces) for the channels
 * holding state (subscribers or history) whose name contains pattern (NULL/empty:
 * all). Any thread. */
void hub_channels_json(struct buf *out, const uint8_t *pattern, size_t pattern_len);

/* History query (any thread): publications after `since` (when has_since; the epoch
 * must match, else -112), at most limit (-1: all, 0: none, only the position), oldest
 * first, or with reverse newest first (and, with since, those before it), appended to out as JSON
 * array elements. Fills pos. Returns 0, -108 when the namespace keeps no history, -112 on an epoch
 * mismatch, -106 when the channel would be new and max_channels is reached. */
int hub_history(const uint8_t *name, size_t len, const struct ns_opts *ns, int64_t limit,
                int has_since, uint64_t since_offset, const uint8_t *since_epoch,
                size_t since_epoch_len, int reverse, struct buf *out, struct hub_stream_pos *pos);
/* Drop a channel's history (the stream position stays). */
void hub_history_remove(const uint8_t *name, size_t len);
/* Loop 0 calls this about once a second: expire history, free idle channels. */
void hub_sweep(uint64_t now_ms);

#endif
