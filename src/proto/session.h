/* Client protocol session (Centrifugo JSON protocol v2): connect, subscriptions,
 * publish, history, presence, pings, on the connection's loop, over the WebSocket
 * phase (ws/conn.h). Not command decoding (proto/command.h), not encoding
 * (proto/reply.h, proto/push.h). */
#ifndef HERALD_PROTO_SESSION_H
#define HERALD_PROTO_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "proto/codes.h"

struct config;
struct conn;
struct limit_client;
struct loop;

/* Once, before the loops run: the config and the loops (both borrowed for the life of
 * the process). */
void session_init(const struct config *config, struct loop *const *loops, unsigned nloops);

/* The HTTP side upgraded c (its 101 queued): the session starts (the connect command
 * is due within a few seconds) and takes over what lc (copied; NULL: nothing) holds of
 * the connection limits, released when it ends. 0, or -1 out of memory (nothing taken:
 * the caller releases lc and aborts c). */
int session_start(struct conn *c, const struct limit_client *lc);
/* After session_start: the connection token of the upgrade's URL query (copied), used
 * when the connect command carries none. Out of memory, the connection is closed (3004). */
void session_set_query_token(struct conn *c, const uint8_t *token, size_t len);

/* Once, before the loops run: the keys tokens are verified with (auth/keys.h; borrowed
 * for the life of the process). Without, every token is refused. */
struct keys;
void session_set_keys(struct keys *k);

/* One text message of c's session (the WebSocket phase's callback; public for the
 * fuzz target): commands separated by '\n', p modifiable, borrowed. */
void session_on_text(struct conn *c, uint8_t *p, size_t len);

/* The hub's slow callback: the session of c cannot keep up: disconnect (3008). */
void session_slow(struct conn *c);
/* The hub's lost callback: the client of c is told to resubscribe (2500), s is dropped. */
struct hub_sub;
void session_lost(struct conn *c, struct hub_sub *s);

/* The server API's controls of a user's connections on every node: disconnect (code,
 * reason), subscribe to channel, unsubscribe from channel. Encoded once (appended to
 * out; -1 when a part is over 64 KB or out of memory), carried to every node by the
 * engine, and applied on each of its loops by session_control_apply (any thread;
 * malformed messages are ignored). */
struct buf;
enum session_control { SESSION_DISCONNECT, SESSION_SUBSCRIBE, SESSION_UNSUBSCRIBE };
int session_control_encode(struct buf *out, enum session_control kind, const uint8_t *user,
                           size_t user_len, const uint8_t *channel, size_t channel_len,
                           unsigned code, const uint8_t *reason, size_t reason_len);
void session_control_apply(const uint8_t *msg, size_t len);

/* Distinct users connected to this node (any thread). */
uint64_t session_num_users(void);

/* A loop thread's session state goes at its end. */
void session_loop_exit(struct loop *loop);

#endif
