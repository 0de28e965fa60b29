/* The client protocol's error and disconnect codes (Centrifugo's codes page), used by
 * the session and the server API alike. Not encoding (proto/reply.h). */
#ifndef HERALD_PROTO_CODES_H
#define HERALD_PROTO_CODES_H

/* Error codes of replies (and of the server API's error objects). */
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

/* Disconnect codes, sent as WebSocket close codes (3000-3499 reconnect, 3500+ not). */
enum proto_disconnect {
    PROTO_DISC_SHUTDOWN = 3001,
    PROTO_DISC_SERVER_ERROR = 3004,
    PROTO_DISC_EXPIRED = 3005,
    PROTO_DISC_SUB_EXPIRED = 3006,
    PROTO_DISC_SLOW = 3008,
    PROTO_DISC_WRITE_ERROR = 3009,
    PROTO_DISC_NO_PONG = 3012,
    PROTO_DISC_TOO_MANY_REQUESTS = 3013, /* kept sending commands over client_command_rate */
    PROTO_DISC_INVALID_TOKEN = 3500,
    PROTO_DISC_BAD_REQUEST = 3501,
    PROTO_DISC_STALE = 3502,
    PROTO_DISC_FORCE_NO_RECONNECT = 3503,
    PROTO_DISC_CONNECTION_LIMIT = 3504, /* max_connections_per_user */
    PROTO_DISC_PERMISSION_DENIED = 3507,
};

/* Unsubscribe push codes: a server-side unsubscribe; the server lost the channel's
 * continuity (the client resubscribes, and recovers if history still covers it). */
#define PROTO_UNSUBSCRIBE_SERVER 2000
#define PROTO_UNSUBSCRIBE_INSUFFICIENT_STATE 2500

/* "unauthorized", "bad request", ... ("internal server error" for unknown codes). */
const char *proto_error_message(int code);

#endif
