/* Client protocol (Centrifugo JSON protocol v2, centrifugal/protocol client.proto):
 * decoding one command. Encoding replies and pushes lives in proto/reply.h. */
#ifndef HERALD_PROTO_COMMAND_H
#define HERALD_PROTO_COMMAND_H

#include <stddef.h>
#include <stdint.h>

#include "core/json.h"

enum proto_method {
    PROTO_EMPTY = 0, /* "{}": a pong answering the server's ping */
    PROTO_CONNECT,
    PROTO_SUBSCRIBE,
    PROTO_UNSUBSCRIBE,
    PROTO_PUBLISH,
    PROTO_PRESENCE,
    PROTO_PRESENCE_STATS,
    PROTO_HISTORY,
    PROTO_PING,
    PROTO_SEND,
    PROTO_RPC,
    PROTO_REFRESH,
    PROTO_SUB_REFRESH,
};

/* The longest channel name a command may carry at all (names are kept with 16-bit
 * lengths); the configured max_channel_length, at most this, is checked by the session. */
#define PROTO_MAX_CHANNEL 65535
/* Commands up to about 1 KB tokenize on the stack; larger ones (data of any shape
 * within max_message_size) in a buffer sized by their length. */
#define PROTO_STACK_TOKENS 512

/* A decoded command. String fields are unescaped in place in the caller's buffer
 * and borrowed from it; raw JSON fields (data) are spans of the original bytes.
 * Absent fields have p == NULL and len 0; absent numbers/bools are 0. */
struct proto_command {
    uint32_t id;
    enum proto_method method;
    struct json_span token;   /* connect, subscribe, refresh, sub_refresh */
    struct json_span name;    /* connect: client name */
    struct json_span version; /* connect: client version */
    struct json_span channel; /* subscribe, unsubscribe, publish, presence*, history, sub_refresh */
    struct json_span data;    /* raw JSON: connect, subscribe, publish, rpc, send */
    struct json_span epoch;   /* subscribe (recover) */
    struct json_span rpc_method;
    uint64_t offset; /* subscribe (recover) */
    int recover;     /* subscribe */
    int join_leave;  /* subscribe: client asks for join/leave pushes */
    /* history */
    int64_t limit; /* history: 0 = only the stream position, -1 = no limit (as Centrifugo) */
    int has_since;
    uint64_t since_offset;
    struct json_span since_epoch;
    int reverse;
};

/* Decode one command from p[0..len), one JSON object (a line of a text frame).
 * p is modified in place (string unescaping). Unknown fields are ignored (clients
 * send fields newer than client.proto, e.g. "flag", "tf"). Returns 0, or -1 when it
 * is not a valid command: invalid JSON, not an object, id not a uint32, a known
 * field of the wrong type, no method or more than one, channel longer than
 * PROTO_MAX_CHANNEL or containing invalid bytes, nesting deeper than JSON_MAX_DEPTH.
 * A command without id is only valid for "send" and for the empty pong "{}". */
int proto_command_decode(uint8_t *p, size_t len, struct proto_command *cmd);

#endif
