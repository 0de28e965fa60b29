/* What the Redis engine needs to speak to a Redis Cluster: which of the 16384 hash slots
 * a key lives in, who serves which slots (the CLUSTER SLOTS reply), and where a MOVED
 * or ASK error sends a command. The replies come from the network, so they are parsed
 * as hostile input: nothing here trusts a count, a length or a port. */
#ifndef HERALD_ENGINE_REDIS_CLUSTER_H
#define HERALD_ENGINE_REDIS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#define REDIS_CLUSTER_SLOTS 16384
#define REDIS_CLUSTER_HOST_MAX 64 /* an address as text; longer names are refused */

/* The slot of a key, by Redis' rule: CRC16 of the text between the first '{' and the
 * first '}' after it when that text is not empty, else of the whole key. */
unsigned redis_key_slot(const char *key, size_t len);

/* The slot of a channel whose keys are prefix:{channel}:suffix; suffix only matters
 * when the channel's name gives no hash tag (it is empty or begins with '}'). */
unsigned redis_channel_slot(const char *prefix, const char *ch, size_t len, const char *suffix);

struct redis_endpoint {
    char host[REDIS_CLUSTER_HOST_MAX]; /* empty: the node that answered */
    uint16_t port;
};

/* One range of slots and the master serving it. */
struct redis_slot_range {
    unsigned start, end; /* inclusive */
    struct redis_endpoint master;
};

/* The ranges of a CLUSTER SLOTS reply, at most max of them, into out; their number,
 * or -1 when the reply is not one (a range out of bounds, no master, a bad port). */
int redis_slots_parse(const redisReply *reply, struct redis_slot_range *out, size_t max);

struct redis_redirect {
    int ask; /* ASK: this command only, after ASKING; MOVED: the slot has moved */
    unsigned slot;
    struct redis_endpoint to;
};

/* "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>": 0 and *out filled, or -1. */
int redis_redirect_parse(const char *err, size_t len, struct redis_redirect *out);

#endif
