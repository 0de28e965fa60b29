/* Client protocol session (Centrifugo JSON protocol v2): connect, subscriptions,
 * publish, pings, replies and pushes, on the connection's loop. Not command
 * decoding (proto/command.h). */
#ifndef HERALD_PROTO_SESSION_H
#define HERALD_PROTO_SESSION_H

#include <stddef.h>
#include <stdint.h>

struct conn;
struct loop;
struct loop_msg;
struct server;

/* Error codes (Centrifugo's client protocol). */
enum proto_error {
    PROTO_ERR_INTERNAL = 100,
    PROTO_ERR_UNAUTHORIZED = 101,
    PROTO_ERR_UNKNOWN_CHANNEL = 102,
    PROTO_ERR_PERMISSION_DENIED = 103,
    PROTO_ERR_METHOD_NOT_FOUND = 104,
    PROTO_ERR_ALREADY_SUBSCRIBED = 105,
    PROTO_ERR_LIMIT_EXCEEDED = 106,
    PROTO_ERR_BAD_REQUEST = 107,
    PROTO_ERR_NOT_AVAILABLE = 108,
    PROTO_ERR_TOKEN_EXPIRED = 109,
    PROTO_ERR_EXPIRED = 110,
    PROTO_ERR_TOO_MANY_REQUESTS = 111,
    PROTO_ERR_UNRECOVERABLE_POSITION = 112,
};

/* Disconnect codes sent as WebSocket close codes. */
enum proto_disconnect {
    PROTO_DISC_SHUTDOWN = 3001,
    PROTO_DISC_SERVER_ERROR = 3004,
    PROTO_DISC_EXPIRED = 3005,
    PROTO_DISC_SUB_EXPIRED = 3006,
    PROTO_DISC_SLOW = 3008,
    PROTO_DISC_WRITE_ERROR = 3009,
    PROTO_DISC_NO_PONG = 3012,
    PROTO_DISC_INVALID_TOKEN = 3500,
    PROTO_DISC_BAD_REQUEST = 3501,
    PROTO_DISC_FORCE_NO_RECONNECT = 3503,
    PROTO_DISC_PERMISSION_DENIED = 3507,
};

void session_global_init(struct server *s);
/* WebSocket upgrade done: create the session (ping timer starts at connect). */
int session_new(struct conn *c);
void session_free(struct conn *c);
void session_loop_free(struct loop *loop);
/* One text message: commands separated by '\n' (p modifiable, borrowed). */
void session_on_text(struct conn *c, uint8_t *p, size_t len);
void session_on_timer(struct conn *c);
/* Control messages from other threads (disconnect/subscribe/unsubscribe a user). */
void session_on_control(struct loop *loop, struct loop_msg *m);
/* Distinct users connected to this node (any thread). */
uint64_t session_num_users(void);
/* Disconnect c: its subscriptions are dropped and a close frame with code/reason sent. */
void session_disconnect(struct conn *c, unsigned code, const char *reason);

#endif
