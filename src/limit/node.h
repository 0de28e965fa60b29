/* The node's limits, from the config (limit_* keys, 0 = none): connections in total, per
 * IP and per user, new connections per IP, commands per connection, client publishes
 * per user and per channel. Each is decided here on this node's tables; with an engine
 * that spans nodes (Redis) the per-IP and per-user ones are asked of it too, so that they
 * hold across nodes, and while it cannot answer the local decision stands (counted and
 * logged). What a refusal is on the wire (HTTP 429/503, error 111, 3504) is the caller's.
 * Not the bucket and table structures (limit/limit.h). */
#ifndef HERALD_LIMIT_NODE_H
#define HERALD_LIMIT_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "limit/limit.h"

struct config;
struct engine;

/* The config's trusted_proxies are CIDRs: 0, or -1 with a message naming the key. */
int limit_check_config(const struct config *c, char *err, size_t errlen);
/* Once before the loops run: the tables, the rates, the trusted proxies; e (borrowed
 * until limit_shutdown) is asked for the shared limits when it has a limit operation.
 * 0, or -1 (out of memory, a bad CIDR: message in err). */
int limit_init(const struct config *c, struct engine *e, char *err, size_t errlen);
/* The engine is closed: decisions are local from now on (the completions it left in the
 * loops' inboxes release their counts without asking it). Main thread, loops joined. */
void limit_engine_gone(void);
void limit_shutdown(void);

/* The per-connection command rate (interval 0: none), read by every loop. */
extern struct limit_rate limit_command_rate;
/* Commands refused in a row after which a client is disconnected (3013). */
#define LIMIT_COMMAND_STRIKES 4

/* What a WebSocket connection holds from its handshake, released when it ends. */
struct limit_client {
    struct limit_addr addr; /* the client's: the peer, or whom trusted proxies forward */
    uint8_t node;           /* counted in max_connections */
    uint8_t ip;             /* counted in max_connections_per_ip on this node */
    uint8_t ip_shared;      /* counted in the engine's count across nodes */
};

/* The client's address: the peer, or when the peer is a trusted proxy, the rightmost
 * untrusted address of X-Forwarded-For (xff, xff_len; NULL when absent), else X-Real-IP. */
void limit_client_addr(const struct limit_addr *peer, const uint8_t *xff, size_t xff_len,
                       const uint8_t *real_ip, size_t real_ip_len, struct limit_addr *out);

/* The handshake's limits on this node: max_connections, then per IP the connection
 * rate and count. LIMIT_OK with lc's flags set (release with limit_client_release), or
 * the verdict (LIMIT_FULL: the node is full) with nothing held. Counted in metrics on
 * the loop of slot. */
enum limit_verdict limit_client_admit(struct limit_client *lc, uint64_t now_us, unsigned slot);
/* Everything lc holds ends (locally and across nodes). Safe on a zeroed one. */
void limit_client_release(struct limit_client *lc);

/* The shared calls below take the asking loop's slot (the answer comes there). */
/* The answer of a shared limit: 1 allowed (or the shared store unreachable: the local
 * decision stands), 0 refused across nodes. On the asking loop. */
typedef void (*limit_cb)(void *ud, int allowed);

/* After limit_client_admit: the per-IP limits across nodes. 1 when cb will answer
 * (lc->ip_shared is set meanwhile: clear it on a refusal, which counted nothing there),
 * 0 when nothing is shared (the local decision is all). */
int limit_client_share(struct limit_client *lc, unsigned slot, limit_cb cb, void *ud);

/* A connection of user (NUL-terminated) connects: 1 counted (release with
 * limit_user_release), 0 at max_connections_per_user on this node. */
int limit_user_admit(const char *user, unsigned slot);
/* It ends: its count on this node (local) and across nodes (shared) go. */
void limit_user_release(const char *user, int local, int shared);
/* The per-user count across nodes: 1 when cb will answer (then, allowed, release with
 * shared = 1), 0 when nothing is shared. */
int limit_user_share(const char *user, unsigned slot, limit_cb cb, void *ud);

/* A client publish by user to channel at now_us: 1 allowed, 0 over user_publish_rate or
 * channel_publish_rate on this node (counted). */
int limit_publish_admit(const char *user, const uint8_t *ch, size_t ch_len, uint64_t now_us,
                        unsigned slot);
/* A publish admitted here and refused across nodes after all: what it took is given
 * back (this node's buckets count only what was published). */
void limit_publish_refund(const char *user, const uint8_t *ch, size_t ch_len);
/* The per-user publish rate across nodes: 1 when cb will answer, 0 when not shared. */
int limit_publish_share(const char *user, unsigned slot, limit_cb cb, void *ud);

#endif
