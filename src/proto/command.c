/* Decoding one client command of Centrifugo's JSON protocol v2 (see command.h).
 * Field names follow client.proto of centrifugal/protocol; replies live in reply.c. */
#include "proto/command.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define BIT(m) (1u << (m))

/* The method field names of a Command, in client.proto order. */
static const struct {
    const char *name;
    enum proto_method method;
} methods[] = {
    {"connect", PROTO_CONNECT},
    {"subscribe", PROTO_SUBSCRIBE},
    {"unsubscribe", PROTO_UNSUBSCRIBE},
    {"publish", PROTO_PUBLISH},
    {"presence", PROTO_PRESENCE},
    {"presence_stats", PROTO_PRESENCE_STATS},
    {"history", PROTO_HISTORY},
    {"ping", PROTO_PING},
    {"send", PROTO_SEND},
    {"rpc", PROTO_RPC},
    {"refresh", PROTO_REFRESH},
    {"sub_refresh", PROTO_SUB_REFRESH},
};

enum field_kind {
    FIELD_STRING,  /* unescaped in place into a json_span */
    FIELD_CHANNEL, /* a string with the channel rules */
    FIELD_RAW,     /* any JSON value, kept as its raw bytes */
    FIELD_U64,
    FIELD_I32,          /* stored as int64_t */
    FIELD_BOOL,         /* stored as int */
    FIELD_SINCE,        /* history's StreamPosition {offset, epoch} */
    FIELD_CHECK_OBJECT, /* known but not exposed: only its type is checked */
    FIELD_CHECK_BOOL,
};

#define NOWHERE ((size_t)-1)

/* The request fields we know, which methods carry them, and where they go. */
static const struct {
    const char *name;
    unsigned methods;
    enum field_kind kind;
    size_t offset;
} fields[] = {
    {"token",
     BIT(PROTO_CONNECT) | BIT(PROTO_SUBSCRIBE) | BIT(PROTO_REFRESH) | BIT(PROTO_SUB_REFRESH),
     FIELD_STRING, offsetof(struct proto_command, token)},
    {"name", BIT(PROTO_CONNECT), FIELD_STRING, offsetof(struct proto_command, name)},
    {"version", BIT(PROTO_CONNECT), FIELD_STRING, offsetof(struct proto_command, version)},
    {"subs", BIT(PROTO_CONNECT), FIELD_CHECK_OBJECT, NOWHERE},
    {"data",
     BIT(PROTO_CONNECT) | BIT(PROTO_SUBSCRIBE) | BIT(PROTO_PUBLISH) | BIT(PROTO_RPC) |
         BIT(PROTO_SEND),
     FIELD_RAW, offsetof(struct proto_command, data)},
    {"channel",
     BIT(PROTO_SUBSCRIBE) | BIT(PROTO_UNSUBSCRIBE) | BIT(PROTO_PUBLISH) | BIT(PROTO_PRESENCE) |
         BIT(PROTO_PRESENCE_STATS) | BIT(PROTO_HISTORY) | BIT(PROTO_SUB_REFRESH),
     FIELD_CHANNEL, offsetof(struct proto_command, channel)},
    {"recover", BIT(PROTO_SUBSCRIBE), FIELD_BOOL, offsetof(struct proto_command, recover)},
    {"epoch", BIT(PROTO_SUBSCRIBE), FIELD_STRING, offsetof(struct proto_command, epoch)},
    {"offset", BIT(PROTO_SUBSCRIBE), FIELD_U64, offsetof(struct proto_command, offset)},
    {"positioned", BIT(PROTO_SUBSCRIBE), FIELD_CHECK_BOOL, NOWHERE},
    {"recoverable", BIT(PROTO_SUBSCRIBE), FIELD_CHECK_BOOL, NOWHERE},
    {"join_leave", BIT(PROTO_SUBSCRIBE), FIELD_BOOL, offsetof(struct proto_command, join_leave)},
    {"limit", BIT(PROTO_HISTORY), FIELD_I32, offsetof(struct proto_command, limit)},
    {"since", BIT(PROTO_HISTORY), FIELD_SINCE, NOWHERE},
    {"reverse", BIT(PROTO_HISTORY), FIELD_BOOL, offsetof(struct proto_command, reverse)},
    {"method", BIT(PROTO_RPC), FIELD_STRING, offsetof(struct proto_command, rpc_method)},
};

/* Methods whose request names a channel: it must be present and valid. */
#define CHANNEL_METHODS                                                                            \
    (BIT(PROTO_SUBSCRIBE) | BIT(PROTO_UNSUBSCRIBE) | BIT(PROTO_PUBLISH) | BIT(PROTO_PRESENCE) |    \
     BIT(PROTO_PRESENCE_STATS) | BIT(PROTO_HISTORY) | BIT(PROTO_SUB_REFRESH))

static int is_null(const uint8_t *p, const jsmntok_t *tok)
{
    return tok->type == JSMN_PRIMITIVE && tok->end - tok->start == 4 &&
           memcmp(p + tok->start, "null", 4) == 0;
}

/* Unescape string token tok in place; the span borrows the caller's buffer. */
static int read_string(uint8_t *p, const jsmntok_t *tok, struct json_span *out)
{
    if (tok->type != JSMN_STRING)
        return -1;
    ssize_t n = json_unescape(p + tok->start, (size_t)(tok->end - tok->start));
    if (n < 0)
        return -1;
    out->p = p + tok->start;
    out->len = (size_t)n;
    return 0;
}

static int valid_channel(struct json_span c)
{
    if (c.p == NULL || c.len == 0 || c.len > PROTO_MAX_CHANNEL)
        return 0;
    for (size_t i = 0; i < c.len; i++)
        if (c.p[i] < 0x20)
            return 0;
    return 1;
}

/* history.since: StreamPosition {offset, epoch}; unknown members ignored. */
static int read_since(uint8_t *p, const jsmntok_t *t, int ntok, int obj, struct proto_command *cmd)
{
    if (t[obj].type != JSMN_OBJECT)
        return -1;
    cmd->has_since = 1;
    int k = obj + 1;
    for (int m = 0; m < t[obj].size && k + 1 < ntok; m++) {
        const jsmntok_t *v = &t[k + 1];
        if (is_null(p, v)) {
            /* absent */
        } else if (json_tok_eq(p, &t[k], "offset")) {
            if (json_tok_u64(p, v, &cmd->since_offset) != 0)
                return -1;
        } else if (json_tok_eq(p, &t[k], "epoch")) {
            if (read_string(p, v, &cmd->since_epoch) != 0)
                return -1;
        }
        k = json_skip(t, ntok, k);
    }
    return 0;
}

static int read_field(uint8_t *p, const jsmntok_t *t, int ntok, int v, unsigned f,
                      struct proto_command *cmd)
{
    const jsmntok_t *tok = &t[v];
    void *dst = fields[f].offset == NOWHERE ? NULL : (char *)cmd + fields[f].offset;
    uint64_t u;
    int64_t i;
    int b;
    switch (fields[f].kind) {
    case FIELD_STRING:
    case FIELD_CHANNEL:
        return read_string(p, tok, dst);
    case FIELD_RAW:
        *(struct json_span *)dst = json_tok_raw(p, tok);
        return 0;
    case FIELD_U64:
        if (json_tok_u64(p, tok, &u) != 0)
            return -1;
        *(uint64_t *)dst = u;
        return 0;
    case FIELD_I32:
        if (json_tok_i64(p, tok, &i) != 0 || i < INT32_MIN || i > INT32_MAX)
            return -1;
        *(int64_t *)dst = i;
        return 0;
    case FIELD_BOOL:
        if (json_tok_bool(p, tok, &b) != 0)
            return -1;
        *(int *)dst = b;
        return 0;
    case FIELD_SINCE:
        return read_since(p, t, ntok, v, cmd);
    case FIELD_CHECK_OBJECT:
        return tok->type == JSMN_OBJECT ? 0 : -1;
    case FIELD_CHECK_BOOL:
        return json_tok_bool(p, tok, &b);
    }
    return -1;
}

/* The members of the method's request object. */
static int read_request(uint8_t *p, const jsmntok_t *t, int ntok, int obj,
                        struct proto_command *cmd)
{
    unsigned bit = BIT(cmd->method);
    int k = obj + 1;
    for (int m = 0; m < t[obj].size && k + 1 < ntok; m++) {
        int v = k + 1;
        if (!is_null(p, &t[v])) {
            for (unsigned f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
                if ((fields[f].methods & bit) && json_tok_eq(p, &t[k], fields[f].name)) {
                    if (read_field(p, t, ntok, v, f, cmd) != 0)
                        return -1;
                    break;
                }
            }
        }
        k = json_skip(t, ntok, k);
    }
    if ((CHANNEL_METHODS & bit) && !valid_channel(cmd->channel))
        return -1;
    return 0;
}

static int decode(uint8_t *p, size_t len, struct proto_command *cmd, jsmntok_t *t, unsigned n);

int proto_command_decode(uint8_t *p, size_t len, struct proto_command *cmd)
{
    /* Every token but the root takes at least two bytes of input (itself and a
     * separator), so len / 2 + 2 tokens always suffice: what bounds a command is its
     * size (max_message_size), never how many values its data holds. Small commands,
     * nearly all of them, tokenize on the stack. */
    size_t need = len / 2 + 2;
    if (need <= PROTO_STACK_TOKENS) {
        jsmntok_t t[PROTO_STACK_TOKENS];
        return decode(p, len, cmd, t, PROTO_STACK_TOKENS);
    }
    if (need > UINT32_MAX / sizeof(jsmntok_t)) {
        memset(cmd, 0, sizeof(*cmd));
        return -1;
    }
    jsmntok_t *t = malloc(need * sizeof(*t));
    if (t == NULL) {
        memset(cmd, 0, sizeof(*cmd));
        return -1;
    }
    int rc = decode(p, len, cmd, t, (unsigned)need);
    free(t);
    return rc;
}

static int decode(uint8_t *p, size_t len, struct proto_command *cmd, jsmntok_t *t, unsigned n)
{
    memset(cmd, 0, sizeof(*cmd));
    int ntok = json_tokenize(p, len, t, n);
    if (ntok < 1 || t[0].type != JSMN_OBJECT)
        return -1;
    if (t[0].size == 0) {
        cmd->method = PROTO_EMPTY; /* the pong */
        return 0;
    }
    int request = -1;
    int k = 1;
    for (int m = 0; m < t[0].size && k + 1 < ntok; m++) {
        int v = k + 1;
        if (is_null(p, &t[v])) {
            /* null is the zero value, as Go's decoder in Centrifugo reads it */
        } else if (json_tok_eq(p, &t[k], "id")) {
            uint64_t id;
            if (json_tok_u64(p, &t[v], &id) != 0 || id > UINT32_MAX)
                return -1;
            cmd->id = (uint32_t)id;
        } else {
            for (unsigned i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
                if (!json_tok_eq(p, &t[k], methods[i].name))
                    continue;
                if (request >= 0 || t[v].type != JSMN_OBJECT)
                    return -1;
                request = v;
                cmd->method = methods[i].method;
                break;
            }
        }
        k = json_skip(t, ntok, k);
    }
    if (request < 0)
        return -1;
    /* Centrifugo answers commands by id; only send expects no reply. */
    if (cmd->id == 0 && cmd->method != PROTO_SEND)
        return -1;
    return read_request(p, t, ntok, request, cmd);
}
