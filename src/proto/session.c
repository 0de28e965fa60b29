/* Client protocol session (see session.h): Centrifugo's JSON protocol v2 as the
 * official centrifuge-js v5 client speaks it (centrifugal/protocol client.proto,
 * centrifuge-js src/centrifuge.ts and src/subscription.ts).
 *
 * Replies to the commands of one message are gathered in one buffer and sent as one
 * frame. Hub and engine requests complete through callbacks; with the memory engine
 * they run before the request returns, so their replies join the same frame. A
 * completion that comes later (a networked engine) sends its reply on its own; a
 * session gone meanwhile lives on, marked dead, until its last request completes. */
#include "proto/session.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/jwt.h"
#include "auth/keys.h"
#include "auth/rules.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "core/pool.h"
#include "core/rand.h"
#include "hub/hub.h"
#include "limit/node.h"
#include "metrics/metrics.h"
#include "net/conn.h"
#include "net/loop.h"
#include "proto/command.h"
#include "proto/push.h"
#include "proto/reply.h"
#include "proto/users.h"
#include "ws/conn.h"

#define HERALD_VERSION "0.1.0"

/* Bytes a session keeps (conn_info, a URL's token), with their length. */
struct bytes {
    uint32_t len;
    uint8_t p[];
};

/* One per connection, idle ones included: laid out for size, from its loop's slab. */
struct session {
    struct ws_conn ws; /* first: the WebSocket phase hands it back */
    struct hub_sub *subs;
    /* NUL-terminated, "" for anonymous; NULL before connect. While connected, the users
     * table's copy (users_online), else the session's own (user_own). */
    const char *user;
    union {
        struct bytes *query_token; /* until connected: the URL query's token, or NULL */
        struct bytes *info;        /* once connected: conn_info (raw JSON), or NULL */
    };
    uint64_t command_tat;      /* its GCRA state (limit/limit.h) */
    uint32_t pending;          /* hub/engine requests not completed yet */
    uint32_t nsubs;
    uint32_t ping_at;          /* loop second (loop_now_sec) of the next ping */
    uint32_t expire_at;        /* loop second when an expired token closes us, 0 = never */
    struct limit_client lc;    /* the client's address and what it holds of the limits */
    uint8_t strikes;           /* commands refused in a row by client_command_rate */
    uint8_t deferred;          /* commands waiting for the JWKS */
    uint8_t loop;              /* its loop's id (loop_of) */
    unsigned connected : 1;
    unsigned awaiting_pong : 1;
    unsigned dead : 1;          /* the connection is gone; freed when pending reaches 0 */
    unsigned user_counted : 1;  /* in max_connections_per_user: on this node, */
    unsigned user_shared : 1;   /* and across nodes */
    unsigned user_own : 1;      /* user is the session's malloc'd copy */
    unsigned awaiting_keys : 1; /* its connect waits for the JWKS to be fetched (unknown kid) */
    unsigned retrying : 1;      /* running a deferred command: an unknown kid is final */
    uint8_t client[16];         /* the client id (a version 4 UUID) given at connect */
};

/* The replies being gathered for the message being handled on this loop thread, and
 * whose they are (kept here, not in every session: an idle session is small). */
static _Thread_local struct session *batch_owner;
static _Thread_local struct buf *batch_out;

static const struct config *config;

/* Sessions by loop (their slab; a session's loop thread, or, once the loops have ended,
 * the thread that frees what they left). */
static struct pool session_pools[LOOP_MAX];

static struct loop *const *control_loops;
static unsigned control_nloops;

void session_init(const struct config *c, struct loop *const *loops, unsigned nloops)
{
    config = c;
    control_loops = loops;
    control_nloops = nloops;
    for (unsigned i = 0; i < nloops && i < LOOP_MAX; i++)
        pool_init(&session_pools[i], sizeof(struct session));
}

uint64_t session_num_users(void)
{
    return users_count();
}

/* Scratch of the loop thread for client info. */
static _Thread_local struct buf scratch_info;

void session_loop_exit(struct loop *loop)
{
    buf_free(&scratch_info);
    /* Sessions waiting for a request to complete are freed later, into the slab. */
    struct pool *p = &session_pools[loop_id(loop)];
    if (p->used == 0)
        pool_drain(p);
}

static struct session *of(struct ws_conn *w)
{
    return (struct session *)w;
}

static struct loop *loop_of(const struct session *s)
{
    return control_loops[s->loop];
}

static struct conn *conn_of(const struct session *s)
{
    return s->ws.conn;
}

/* The client id as text (36 characters), into out; "" before connect. */
static const char *client_id(const struct session *s, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    int j = 0;
    if (s->client[6]) { /* set: a version 4 UUID's byte 6 is 0x4X */
        for (int i = 0; i < 16; i++) {
            if (i == 4 || i == 6 || i == 8 || i == 10)
                out[j++] = '-';
            out[j++] = hex[s->client[i] >> 4];
            out[j++] = hex[s->client[i] & 15];
        }
    }
    out[j] = 0;
    return out;
}

/* A random version 4 UUID (RFC 4122 section 4.4), as 16 bytes. */
static void new_client_id(uint8_t id[16])
{
    char hex[33];
    rand_hex(hex, 16);
    for (int i = 0; i < 16; i++) {
        unsigned hi = (unsigned)(hex[2 * i] <= '9' ? hex[2 * i] - '0' : hex[2 * i] - 'a' + 10);
        unsigned lo =
            (unsigned)(hex[2 * i + 1] <= '9' ? hex[2 * i + 1] - '0' : hex[2 * i + 1] - 'a' + 10);
        id[i] = (uint8_t)(hi << 4 | lo);
    }
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x40); /* version 4 */
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}

static struct bytes *bytes_new(const uint8_t *p, size_t len)
{
    struct bytes *b = len <= UINT32_MAX ? malloc(sizeof(*b) + len) : NULL;
    if (b) {
        b->len = (uint32_t)len;
        memcpy(b->p, p, len);
    }
    return b;
}

/* ---- replies ---- */

/* Where a reply goes: the message's gathered replies, or, for a completion that comes
 * after its message, a buffer of its own sent by reply_done. */
static struct buf *reply_to(struct session *s, struct buf *own)
{
    if (batch_owner == s)
        return batch_out;
    *own = (struct buf)BUF_INIT;
    return own;
}

static void reply_done(struct session *s, struct buf *out)
{
    if (batch_owner == s && out == batch_out)
        return;
    if (!s->dead && out->len && !out->oom)
        ws_conn_reply_text(&s->ws, out->p, out->len);
    buf_free(out);
}

static void fail(struct buf *out, uint32_t id, int code)
{
    metrics_count_error(code);
    proto_reply_error(out, id, code, 0);
}

/* An engine status as the reply's error (a temporary one for an unreachable store, so
 * that the SDK retries). */
static void fail_status(struct buf *out, uint32_t id, int status)
{
    if (status == ENGINE_ERR_UNAVAILABLE) {
        metrics_count_error(PROTO_ERR_INTERNAL);
        proto_reply_error(out, id, PROTO_ERR_INTERNAL, 1);
    } else {
        metrics_count_error(-status);
        proto_reply_error(out, id, -status, 0);
    }
}

/* The ClientInfo object of this session
 * ({"user":..,"client":..[,"conn_info":..][,"chan_info":..]}). */
static void client_info(struct buf *b, const struct session *s, const uint8_t *chan_info,
                        size_t chan_info_len)
{
    char id[37];
    buf_append_str(b, "{\"user\":");
    buf_append_json_str(b, (const uint8_t *)s->user, strlen(s->user));
    buf_append_str(b, ",\"client\":\"");
    buf_append_str(b, client_id(s, id));
    buf_append_char(b, '"');
    if (s->info) {
        buf_append_str(b, ",\"conn_info\":");
        buf_append(b, s->info->p, s->info->len);
    }
    if (chan_info) {
        buf_append_str(b, ",\"chan_info\":");
        buf_append(b, chan_info, chan_info_len);
    }
    buf_append_char(b, '}');
}

/* ---- lifetime ---- */

static void drop_subs(struct session *s)
{
    while (s->subs) {
        struct hub_sub *sub = s->subs;
        s->subs = sub->next;
        hub_unsubscribe(loop_of(s), sub);
    }
    s->nsubs = 0;
}

static void session_free(struct session *s)
{
    free(s->info); /* or the query token */
    if (s->user_own)
        free((char *)s->user);
    pool_put(&session_pools[s->loop], s);
}

/* A request completed: 1 when the session is gone (the caller only cleans up). */
static int request_done(struct session *s)
{
    s->pending--;
    if (!s->dead)
        return 0;
    if (s->pending == 0)
        session_free(s);
    return 1;
}

/* Whom a line about s is about; addr (at least 48 bytes) and id are the caller's. */
static struct log_who who_of(const struct session *s, char *addr, char id[37], int code)
{
    limit_addr_format(&s->lc.addr, addr, 48);
    return (struct log_who){client_id(s, id), s->user ? s->user : "", addr, code};
}

/* Codes a client earns by what it sends (or fails to read): a bad client can have
 * them at will, so their lines are rate-limited (log_client). */
static int client_caused(unsigned code)
{
    switch (code) {
    case PROTO_DISC_EXPIRED:
    case PROTO_DISC_SUB_EXPIRED:
    case PROTO_DISC_SLOW:
    case PROTO_DISC_NO_PONG:
    case PROTO_DISC_TOO_MANY_REQUESTS:
    case PROTO_DISC_INVALID_TOKEN:
    case PROTO_DISC_BAD_REQUEST:
    case PROTO_DISC_STALE:
    case PROTO_DISC_CONNECTION_LIMIT:
    case PROTO_DISC_PERMISSION_DENIED:
    case PROTO_DISC_SERVER_ERROR: /* what a client sends can lead there too */
        return 1;
    default:
        return 0;
    }
}

static void log_disconnect(const struct session *s, unsigned code, const char *reason)
{
    char addr[48], id[37];
    struct log_who who = who_of(s, addr, id, (int)code);
    if (code == PROTO_DISC_SHUTDOWN) /* every client at once: one line says it (main.c) */
        log_event(LOG_DEBUG, "client_disconnected", &who, "disconnected: %s", reason);
    else if (client_caused(code))
        log_client(LOG_INFO, "client_disconnected", &who, "disconnected: %s", reason);
    else
        log_event(LOG_INFO, "client_disconnected", &who, "disconnected: %s", reason);
}

static void disconnect(struct session *s, unsigned code, const char *reason)
{
    if (s->dead || conn_closing(conn_of(s)))
        return;
    if (log_min_level <= (code == PROTO_DISC_SHUTDOWN ? LOG_DEBUG : LOG_INFO))
        log_disconnect(s, code, reason);
    drop_subs(s);
    ws_conn_close(&s->ws, code, reason);
}

void session_slow(struct conn *c)
{
    struct session *owner = of(conn_ud(c));
    metrics_count(METRIC_SLOW, 1);
    disconnect(owner, PROTO_DISC_SLOW, "slow");
}

void session_lost(struct conn *c, struct hub_sub *sub)
{
    struct session *s = of(conn_ud(c));
    for (struct hub_sub **pp = &s->subs; *pp; pp = &(*pp)->next) {
        if (*pp != sub)
            continue;
        *pp = sub->next;
        s->nsubs--;
        struct buf b = BUF_INIT;
        size_t len;
        const char *name = hub_sub_name(sub, &len);
        proto_push_insufficient_state(&b, (const uint8_t *)name, len);
        hub_unsubscribe(loop_of(s), sub);
        if (!b.oom)
            ws_conn_reply_text(&s->ws, b.p, b.len); /* must not be lost to the queue bound */
        buf_free(&b);
        return;
    }
}

static void on_gone(struct ws_conn *w)
{
    struct session *s = of(w);
    unsigned code = s->ws.close_code;
    /* A frame the WebSocket layer refused (RFC 6455 section 7.4.1): a bad client's doing. */
    int protocol = code == WS_CLOSE_PROTOCOL || code == WS_CLOSE_UNSUPPORTED ||
                   code == WS_CLOSE_INVALID_DATA || code == WS_CLOSE_TOO_BIG;
    if (log_min_level <= (protocol ? LOG_INFO : LOG_DEBUG)) {
        char addr[48], id[37];
        struct log_who who = who_of(s, addr, id, (int)code);
        if (protocol)
            log_client(LOG_INFO, "protocol_error", &who, "closed: WebSocket protocol error");
        else
            log_client(LOG_DEBUG, "client_gone", &who, "connection closed");
    }
    drop_subs(s);
    if (s->user_counted)
        limit_user_release(s->user, 1, s->user_shared);
    s->user_counted = s->user_shared = 0;
    if (s->connected) {
        metrics_add(loop_id(loop_of(s)), METRIC_CLIENTS, -1);
        const char *name = s->user;
        if (!s->user_own) {
            /* The table's copy goes with the last connection: requests still to complete
             * get one of their own (out of memory, they see the anonymous ""). */
            char *own = s->pending ? strdup(name) : NULL;
            s->user = own ? own : "";
            s->user_own = own != NULL;
        }
        users_offline(name);
    }
    limit_client_release(&s->lc);
    s->dead = 1;
    if (batch_owner == s)
        batch_owner = NULL;
    if (s->pending == 0)
        session_free(s);
}

static void on_shutdown(struct ws_conn *w)
{
    disconnect(of(w), PROTO_DISC_SHUTDOWN, "shutdown");
}

/* The node's output budget chose this client as one of the furthest behind. */
static void on_slow(struct ws_conn *w)
{
    disconnect(of(w), PROTO_DISC_SLOW, "slow");
}

/* ---- timers ---- */

/* Loop second at which a token expiring at exp (Unix seconds) closes its holder. */
static uint32_t grace_deadline(struct session *s, int64_t exp)
{
    int64_t left = exp - (int64_t)time(NULL);
    if (left < 0)
        left = 0;
    /* Loop time is 32-bit seconds: an exp 2^32 s away must not wrap to one due now. */
    if (left > INT32_MAX)
        left = INT32_MAX;
    return loop_now_sec(loop_of(s)) + (uint32_t)left + config->expired_close_delay;
}

static void schedule(struct session *s)
{
    uint32_t now = loop_now_sec(loop_of(s));
    uint32_t at = s->ping_at;
    if (s->expire_at && s->expire_at < at)
        at = s->expire_at;
    for (struct hub_sub *sub = s->subs; sub; sub = sub->next)
        if (sub->expire_at && sub->expire_at < at)
            at = sub->expire_at;
    conn_timer_set(conn_of(s), at > now ? at - now : 1);
}

static void on_timer(struct ws_conn *w)
{
    struct session *s = of(w);
    struct conn *c = conn_of(s);
    if (!s->connected) {
        metrics_add(loop_id(loop_of(s)), METRIC_LIMIT_CONNECT_TIMEOUTS, 1);
        disconnect(s, PROTO_DISC_STALE, "stale");
        return;
    }
    uint32_t now = loop_now_sec(loop_of(s));
    if (s->expire_at && now >= s->expire_at) {
        disconnect(s, PROTO_DISC_EXPIRED, "connection expired");
        return;
    }
    /* A subscription token not renewed with sub_refresh (as Centrifugo: 3006). */
    for (struct hub_sub *sub = s->subs; sub; sub = sub->next) {
        if (sub->expire_at && now >= sub->expire_at) {
            disconnect(s, PROTO_DISC_SUB_EXPIRED, "subscription expired");
            return;
        }
    }
    if (now >= s->ping_at) {
        if (s->awaiting_pong) {
            /* Judge the client on the pongs it sent, not on how late this loop is: a
             * stall may have kept its pong unread in the socket. */
            s->pending++; /* keeps s alive if the read ends the connection */
            conn_read_now(c);
            if (request_done(s) || conn_closing(c))
                return;
        }
        if (s->awaiting_pong) {
            disconnect(s, PROTO_DISC_NO_PONG, "no pong");
            return;
        }
        static const uint8_t ping[] = {0x81, 0x02, '{', '}'};
        conn_send_bytes(c, ping, sizeof(ping));
        s->awaiting_pong = 1;
        s->ping_at = now + config->ping_interval;
    }
    schedule(s);
}

static void set_expiry(struct session *s, int64_t exp)
{
    s->expire_at = exp ? grace_deadline(s, exp) : 0;
}

/* ---- tokens ---- */

/* The token keys (auth/keys.h), set by main.c before the loops run; NULL refuses every
 * token. */
static struct keys *token_keys;

void session_set_keys(struct keys *k)
{
    token_keys = k;
}

enum token_check { TOKEN_OK, TOKEN_EXPIRED, TOKEN_REFUSED, TOKEN_UNKNOWN_KID };

/* Verify a token with the key set (the key decides the algorithm). After connect, its
 * sub must be the session's user; with channel, its channel claim must be that channel,
 * without, it must have none (a connection token). TOKEN_OK: claims filled, the caller
 * frees them; otherwise nothing to free. A valid token for another user or channel is
 * TOKEN_REFUSED, like a bad signature (3500). TOKEN_UNKNOWN_KID: its kid is not in the
 * JWKS (yet): the caller defers the command (defer) or refuses it. */
static enum token_check check_token(const struct session *s, struct json_span token,
                                    const struct json_span *channel, struct jwt_claims *claims)
{
    if (token_keys == NULL)
        return TOKEN_REFUSED;
    int r = keys_verify(token_keys, token.p, token.len, (int64_t)time(NULL), claims);
    if (r == JWT_UNKNOWN_KID)
        return s->retrying ? TOKEN_REFUSED : TOKEN_UNKNOWN_KID;
    if (r == JWT_INVALID)
        return TOKEN_REFUSED;
    /* A subscription token (it names a channel) is not a connection token: refused for
     * connect and refresh, as Centrifugo does. */
    int mismatch = (s->connected && (claims->sub.len != strlen(s->user) ||
                                     memcmp(claims->sub.p, s->user, claims->sub.len) != 0)) ||
                   (channel && (claims->channel.len != channel->len ||
                                memcmp(claims->channel.p, channel->p, channel->len) != 0)) ||
                   (channel == NULL && claims->channel.len != 0);
    if (mismatch) {
        jwt_claims_free(claims);
        return TOKEN_REFUSED;
    }
    if (r == JWT_EXPIRED) {
        jwt_claims_free(claims);
        return TOKEN_EXPIRED;
    }
    return TOKEN_OK;
}

/* Commands of one session waiting for the JWKS at once; more are refused as invalid. */
#define MAX_DEFERRED 4

/* A command whose token names a kid the JWKS does not have yet (keys rotated): it runs
 * again once the keys are fetched anew, on the session's loop, its spans pointing into
 * bytes (the message it came in is gone by then). */
struct deferred {
    struct session *s;
    struct proto_command cmd;
    uint8_t bytes[];
};

static void handle_command(struct session *s, struct proto_command *cmd, struct buf *out);
static void flush_replies(struct session *s, struct buf *out);

static void run_deferred(struct loop *loop, struct loop_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct deferred *d = msgs[i].ptr;
        struct session *s = d->s;
        s->deferred--;
        if (d->cmd.method == PROTO_CONNECT)
            s->awaiting_keys = 0;
        if (!request_done(s) && !conn_closing(conn_of(s))) {
            /* As on_text does for a message: the replies gathered, sent as one frame. */
            struct buf *out = loop_reply_buf(loop);
            buf_reset(out);
            batch_owner = s;
            batch_out = out;
            s->pending++;
            s->retrying = 1;
            handle_command(s, &d->cmd, out);
            s->retrying = 0;
            if (!request_done(s) && batch_owner == s) {
                if (conn_closing(conn_of(s))) {
                    batch_owner = NULL;
                    buf_shrink(out, LOOP_REPLY_KEEP);
                } else {
                    flush_replies(s, out);
                }
            }
        }
        free(d);
    }
}

/* On the thread that ended the fetch: back to the session's loop. */
static void on_keys_fetched(void *ud)
{
    struct deferred *d = ud;
    struct loop_msg m = {.handle = run_deferred, .ptr = d};
    /* Out of memory: the session stays pending (leaked) rather than be touched here, off
     * its loop. */
    loop_post(loop_of(d->s), &m);
}

static void rebase(struct json_span *sp, uint8_t *bytes, size_t *at)
{
    if (sp->p == NULL)
        return;
    memcpy(bytes + *at, sp->p, sp->len);
    sp->p = bytes + *at;
    *at += sp->len;
}

/* Wait for the JWKS to be fetched again and run cmd then: 1 when it will be, 0 when not
 * (it is already the retry, too many wait, no JWKS source): the caller refuses it. */
static int defer(struct session *s, const struct proto_command *cmd)
{
    if (s->retrying || s->deferred >= MAX_DEFERRED || token_keys == NULL)
        return 0;
    size_t total = cmd->token.len + cmd->name.len + cmd->version.len + cmd->channel.len +
                   cmd->data.len + cmd->epoch.len + cmd->rpc_method.len + cmd->since_epoch.len;
    struct deferred *d = malloc(sizeof(*d) + total);
    if (d == NULL)
        return 0;
    d->s = s;
    d->cmd = *cmd;
    /* Every span of struct proto_command (a new one must be added here), so that none
     * points into the message. */
    struct json_span *spans[] = {&d->cmd.token,      &d->cmd.name,       &d->cmd.version,
                                 &d->cmd.channel,    &d->cmd.data,       &d->cmd.epoch,
                                 &d->cmd.rpc_method, &d->cmd.since_epoch};
    size_t at = 0;
    for (size_t i = 0; i < sizeof(spans) / sizeof(spans[0]); i++)
        rebase(spans[i], d->bytes, &at);
    s->pending++;
    s->deferred++;
    if (cmd->method == PROTO_CONNECT)
        s->awaiting_keys = 1;
    if (keys_await(token_keys, loop_clock_ms(), on_keys_fetched, d) != 0) {
        s->pending--;
        s->deferred--;
        if (cmd->method == PROTO_CONNECT)
            s->awaiting_keys = 0;
        free(d);
        return 0;
    }
    return 1;
}

/* ,"expires":true,"ttl":N for a token with exp (leading comma unless first). */
static void append_expiry(struct buf *out, int64_t exp, int first)
{
    if (exp == 0)
        return;
    int64_t ttl = exp - (int64_t)time(NULL);
    buf_appendf(out, "%s\"expires\":true,\"ttl\":%lld", first ? "" : ",",
                (long long)(ttl > 0 ? ttl : 0));
}

/* ---- subscribe ---- */

static int sub_is(const struct hub_sub *sub, const uint8_t *ch, size_t len)
{
    size_t n;
    const char *name = hub_sub_name(sub, &n);
    return n == len && memcmp(name, ch, len) == 0;
}

static struct hub_sub *find_sub(struct session *s, const uint8_t *ch, size_t len)
{
    for (struct hub_sub *sub = s->subs; sub; sub = sub->next)
        if (sub_is(sub, ch, len))
            return sub;
    return NULL;
}

/* The SubscribeResult fields (without braces). */
static void subscribe_result(struct buf *out, const struct ns_opts *ns, int64_t exp,
                             const struct engine_pos *pos, int was_recovering, int recovered,
                             const struct engine_pub *pubs, size_t n)
{
    int comma = 0;
#define SEP() (comma ? buf_append_char(out, ',') : (void)0, comma = 1)
    if (exp) {
        SEP();
        int64_t ttl = exp - (int64_t)time(NULL);
        buf_appendf(out, "\"expires\":true,\"ttl\":%lld", (long long)(ttl > 0 ? ttl : 0));
    }
    if (pos->epoch[0]) {
        if (ns->recover) {
            SEP();
            buf_append_str(out, "\"recoverable\":true");
        }
        SEP();
        proto_render_position(out, pos);
        if (was_recovering) {
            metrics_count(recovered ? METRIC_RECOVERED : METRIC_NOT_RECOVERED, 1);
            buf_appendf(out, ",\"was_recovering\":true,\"recovered\":%s",
                        recovered ? "true" : "false");
            if (recovered && n) {
                buf_append_str(out, ",\"publications\":[");
                proto_render_publications(out, pubs, n);
                buf_append_char(out, ']');
            }
        }
    }
#undef SEP
}

/* Who asked for a subscription and how its result is written. */
enum sub_origin { SUB_COMMAND, SUB_CLAIM, SUB_SERVER };

struct subscribing {
    struct session *s;
    enum sub_origin origin;
    uint32_t id; /* command id */
    const struct ns_opts *ns;
    int64_t exp; /* subscription token exp */
    int was_recovering;
    struct connecting *connect; /* SUB_CLAIM: the connect reply gathering them */
    uint16_t name_len;
    uint8_t name[];
};

/* The connect reply, sent once every subscription of the token's channels claim has
 * completed. */
struct connecting {
    struct session *s;
    uint32_t id;
    uint32_t remaining;
    int64_t exp;
    struct buf subs; /* "name":{SubscribeResult},... */
};

static void connect_finish(struct connecting *k);

static void on_subscribed(void *ud, int status, struct hub_sub *sub, const struct engine_pos *pos,
                          int recovered, const struct engine_pub *pubs, size_t n)
{
    struct subscribing *x = ud;
    struct session *s = x->s;
    struct connecting *k = x->connect;
    if (request_done(s)) {
        if (sub)
            hub_unsubscribe(loop_of(s), sub);
        if (k && --k->remaining == 0)
            connect_finish(k);
        free(x);
        return;
    }
    if (sub) {
        sub->next = s->subs;
        s->subs = sub;
        s->nsubs++;
        if (x->exp) {
            sub->expire_at = grace_deadline(s, x->exp);
            schedule(s);
        }
    }
    if (x->origin == SUB_COMMAND) {
        struct buf own, *out = reply_to(s, &own);
        if (status != 0) {
            fail_status(out, x->id, status);
        } else {
            proto_reply_begin(out, x->id, "subscribe");
            subscribe_result(out, x->ns, x->exp, pos, x->was_recovering, recovered, pubs, n);
            proto_reply_end(out);
        }
        reply_done(s, out);
    } else if (x->origin == SUB_CLAIM) {
        if (status == 0) {
            struct buf *b = &k->subs;
            if (b->len)
                buf_append_char(b, ',');
            buf_append_json_str(b, x->name, x->name_len);
            buf_append_str(b, ":{");
            subscribe_result(b, x->ns, 0, pos, 0, 0, NULL, 0);
            buf_append_char(b, '}');
        }
        if (--k->remaining == 0)
            connect_finish(k);
    } else if (status == 0) {
        /* A server-side subscription: its push. */
        struct buf b = BUF_INIT;
        proto_push_subscribe_begin(&b, x->name, x->name_len);
        subscribe_result(&b, x->ns, 0, pos, 0, 0, NULL, 0);
        proto_push_end(&b);
        if (!b.oom)
            ws_conn_send_text(&s->ws, b.p, b.len);
        buf_free(&b);
    }
    free(x);
}

/* Start a subscription (client command, token claim or server API). Returns 0 when
 * the request is on its way (on_subscribed answers), or an error code to answer now. */
static int subscribe(struct session *s, enum sub_origin origin, uint32_t id, const uint8_t *ch,
                     size_t len, const struct ns_opts *ns, const struct proto_command *cmd,
                     const struct jwt_claims *sub_claims, struct connecting *k)
{
    if (find_sub(s, ch, len))
        return PROTO_ERR_ALREADY_SUBSCRIBED;
    if (s->nsubs >= config->max_subscriptions_per_connection) {
        metrics_add(loop_id(loop_of(s)), METRIC_LIMIT_SUBSCRIPTIONS, 1);
        return PROTO_ERR_LIMIT_EXCEEDED;
    }
    struct subscribing *x = malloc(sizeof(*x) + len);
    if (x == NULL)
        return PROTO_ERR_INTERNAL;
    *x = (struct subscribing){s, origin, id, ns, sub_claims ? sub_claims->exp : 0, 0, k,
                              (uint16_t)len};
    memcpy(x->name, ch, len);
    struct hub_subscribe_req r;
    memset(&r, 0, sizeof(r));
    r.channel = ch;
    r.len = len;
    r.ns = ns;
    r.conn = conn_of(s);
    if (cmd && cmd->recover && ns->recover) {
        r.rec.recover = 1;
        r.rec.offset = cmd->offset;
        r.rec.epoch = cmd->epoch.p;
        r.rec.epoch_len = cmd->epoch.len;
        x->was_recovering = 1;
    }
    r.rec.max_pubs = config->recovery_max_publications;
    char client[37];
    r.client = client_id(s, client);
    r.user = (const uint8_t *)s->user;
    r.user_len = strlen(s->user);
    if (ns->presence || ns->join_leave) {
        int has = sub_claims && sub_claims->info.len;
        buf_reset(&scratch_info);
        client_info(&scratch_info, s, has ? sub_claims->info.p : NULL,
                    has ? sub_claims->info.len : 0);
        if (scratch_info.oom) {
            free(x);
            return PROTO_ERR_INTERNAL;
        }
        r.info = scratch_info.p;
        r.info_len = scratch_info.len;
    }
    s->pending++;
    hub_subscribe(loop_of(s), &r, on_subscribed, x);
    return 0;
}

/* The namespace of a command's channel, or NULL after answering 107 (no channel) or
 * 102 (unknown namespace). */
static const struct ns_opts *command_ns(const struct proto_command *cmd, struct buf *out)
{
    if (cmd->channel.len == 0) {
        fail(out, cmd->id, PROTO_ERR_BAD_REQUEST);
        return NULL;
    }
    const struct ns_opts *ns = config_namespace(config, cmd->channel.p, cmd->channel.len);
    if (ns == NULL)
        fail(out, cmd->id, PROTO_ERR_UNKNOWN_CHANNEL);
    return ns;
}

static void handle_subscribe(struct session *s, struct proto_command *cmd, struct buf *out)
{
    const struct ns_opts *ns = command_ns(cmd, out);
    if (ns == NULL)
        return;
    if (!auth_user_allowed(cmd->channel.p, cmd->channel.len, s->user)) {
        fail(out, cmd->id, PROTO_ERR_PERMISSION_DENIED);
        return;
    }
    struct jwt_claims claims;
    int have_claims = 0;
    if (auth_subscribe_needs_token(ns) || cmd->token.len) {
        if (cmd->token.len == 0) {
            fail(out, cmd->id, PROTO_ERR_PERMISSION_DENIED);
            return;
        }
        enum token_check t = check_token(s, cmd->token, &cmd->channel, &claims);
        if (t == TOKEN_UNKNOWN_KID && defer(s, cmd))
            return;
        if (t == TOKEN_EXPIRED) {
            fail(out, cmd->id, PROTO_ERR_TOKEN_EXPIRED);
            return;
        }
        if (t == TOKEN_REFUSED || t == TOKEN_UNKNOWN_KID) {
            disconnect(s, PROTO_DISC_INVALID_TOKEN, "invalid token");
            return;
        }
        have_claims = 1;
    }
    int err = subscribe(s, SUB_COMMAND, cmd->id, cmd->channel.p, cmd->channel.len, ns, cmd,
                        have_claims ? &claims : NULL, NULL);
    if (have_claims)
        jwt_claims_free(&claims);
    if (err)
        fail(out, cmd->id, err);
}

/* Drop s's subscription to a channel; 1 if there was one. */
static int remove_sub(struct session *s, const uint8_t *ch, size_t len)
{
    for (struct hub_sub **pp = &s->subs; *pp; pp = &(*pp)->next) {
        struct hub_sub *sub = *pp;
        if (sub_is(sub, ch, len)) {
            *pp = sub->next;
            s->nsubs--;
            hub_unsubscribe(loop_of(s), sub);
            return 1;
        }
    }
    return 0;
}

static void handle_unsubscribe(struct session *s, struct proto_command *cmd, struct buf *out)
{
    remove_sub(s, cmd->channel.p, cmd->channel.len);
    proto_reply_begin(out, cmd->id, "unsubscribe");
    proto_reply_end(out);
}

/* ---- publish, history, presence ---- */

struct request {
    struct session *s;
    uint32_t id;
};

static struct request *request_new(struct session *s, uint32_t id)
{
    struct request *q = malloc(sizeof(*q));
    if (q) {
        q->s = s;
        q->id = id;
        s->pending++;
    }
    return q;
}

static void on_published(void *ud, int status, const struct engine_pos *pos)
{
    struct request *q = ud;
    struct session *s = q->s;
    if (!request_done(s)) {
        struct buf own, *out = reply_to(s, &own);
        if (status != 0) {
            fail_status(out, q->id, status);
        } else {
            proto_reply_begin(out, q->id, "publish");
            /* Not in client.proto's PublishResult (clients ignore it): the stream
             * position the publication got, as the server API's publish result has it. */
            if (pos->epoch[0])
                buf_appendf(out, "\"offset\":%llu,\"epoch\":\"%s\"",
                            (unsigned long long)pos->offset, pos->epoch);
            proto_reply_end(out);
        }
        reply_done(s, out);
    }
    free(q);
}

/* A publish waiting for user_publish_rate across nodes: copies of what it publishes
 * (the message it came in is gone by the answer). */
struct publishing {
    struct session *s;
    uint32_t id;
    const struct ns_opts *ns;
    size_t ch_len, data_len, info_len;
    uint8_t bytes[]; /* channel, data, info */
};

static void on_publish_shared(void *ud, int allowed)
{
    struct publishing *p = ud;
    struct session *s = p->s;
    if (!s->dead) {
        struct request *q = allowed ? request_new(s, p->id) : NULL;
        if (q) {
            const uint8_t *ch = p->bytes, *data = ch + p->ch_len, *info = data + p->data_len;
            hub_publish(ch, p->ch_len, p->ns, data, p->data_len, info, p->info_len, NULL, 0,
                        on_published, q);
        } else {
            if (!allowed) {
                limit_publish_refund(s->user, p->bytes, p->ch_len);
                metrics_add(loop_id(loop_of(s)), METRIC_LIMIT_USER_PUBLISH, 1);
            }
            struct buf own, *out = reply_to(s, &own);
            fail(out, p->id, allowed ? PROTO_ERR_INTERNAL : PROTO_ERR_TOO_MANY_REQUESTS);
            reply_done(s, out);
        }
    }
    request_done(s);
    free(p);
}

/* Ask the engine for the user's publish rate across nodes first: 1 when it will answer
 * (and then publish), 0 when nothing is shared (publish now). */
static int publish_shared(struct session *s, const struct proto_command *cmd,
                          const struct ns_opts *ns, struct buf *out)
{
    size_t n = cmd->channel.len + cmd->data.len + scratch_info.len;
    struct publishing *p = malloc(sizeof(*p) + n);
    if (p == NULL)
        return 0; /* the local limit stands */
    *p = (struct publishing){s, cmd->id, ns, cmd->channel.len, cmd->data.len, scratch_info.len};
    memcpy(p->bytes, cmd->channel.p, cmd->channel.len);
    memcpy(p->bytes + cmd->channel.len, cmd->data.p, cmd->data.len);
    memcpy(p->bytes + cmd->channel.len + cmd->data.len, scratch_info.p, scratch_info.len);
    s->pending++;
    if (limit_publish_share(s->user, loop_id(loop_of(s)), on_publish_shared, p))
        return 1;
    s->pending--;
    free(p);
    return 0;
}

static void handle_publish(struct session *s, struct proto_command *cmd, struct buf *out)
{
    if (cmd->data.p == NULL) {
        fail(out, cmd->id, PROTO_ERR_BAD_REQUEST);
        return;
    }
    const struct ns_opts *ns = command_ns(cmd, out);
    if (ns == NULL)
        return;
    if (ns->max_data_size && cmd->data.len > ns->max_data_size) {
        metrics_add(loop_id(loop_of(s)), METRIC_LIMIT_DATA_SIZE, 1);
        fail(out, cmd->id, PROTO_ERR_LIMIT_EXCEEDED); /* the namespace's max_data_size */
        return;
    }
    struct hub_sub *own = find_sub(s, cmd->channel.p, cmd->channel.len);
    if (!auth_client_may_publish(ns, cmd->channel.p, cmd->channel.len, s->user, own != NULL)) {
        fail(out, cmd->id, PROTO_ERR_PERMISSION_DENIED);
        return;
    }
    if (!limit_publish_admit(s->user, cmd->channel.p, cmd->channel.len,
                             loop_now_ms(loop_of(s)) * 1000, loop_id(loop_of(s)))) {
        fail(out, cmd->id, PROTO_ERR_TOO_MANY_REQUESTS);
        return;
    }
    buf_reset(&scratch_info);
    size_t own_info_len;
    const uint8_t *own_info = own ? hub_sub_info(own, &own_info_len) : NULL;
    if (own_info)
        buf_append(&scratch_info, own_info, own_info_len); /* includes chan_info */
    else
        client_info(&scratch_info, s, NULL, 0);
    if (scratch_info.oom) {
        fail(out, cmd->id, PROTO_ERR_INTERNAL);
        return;
    }
    if (config->user_publish_rate && s->user[0] && publish_shared(s, cmd, ns, out))
        return;
    struct request *q = request_new(s, cmd->id);
    if (q == NULL) {
        fail(out, cmd->id, PROTO_ERR_INTERNAL);
        return;
    }
    hub_publish(cmd->channel.p, cmd->channel.len, ns, cmd->data.p, cmd->data.len, scratch_info.p,
                scratch_info.len, NULL, 0, on_published, q);
}

/* The namespace of a channel the client reads (history, presence): only its
 * subscribers may. NULL after answering 107, 102 or 103. */
static const struct ns_opts *readable_ns(struct session *s, const struct proto_command *cmd,
                                         struct buf *out)
{
    const struct ns_opts *ns = command_ns(cmd, out);
    if (ns && !auth_client_may_read(find_sub(s, cmd->channel.p, cmd->channel.len) != NULL)) {
        fail(out, cmd->id, PROTO_ERR_PERMISSION_DENIED);
        return NULL;
    }
    return ns;
}

static void on_history(void *ud, int status, const struct engine_pos *pos,
                       const struct engine_pub *pubs, size_t n)
{
    struct request *q = ud;
    struct session *s = q->s;
    if (!request_done(s)) {
        struct buf own, *out = reply_to(s, &own);
        if (status != 0) {
            fail_status(out, q->id, status);
        } else {
            proto_reply_begin(out, q->id, "history");
            buf_append_str(out, "\"publications\":[");
            proto_render_publications(out, pubs, n);
            buf_append_str(out, "],");
            proto_render_position(out, pos);
            proto_reply_end(out);
        }
        reply_done(s, out);
    }
    free(q);
}

static void handle_history(struct session *s, struct proto_command *cmd, struct buf *out)
{
    const struct ns_opts *ns = readable_ns(s, cmd, out);
    if (ns == NULL)
        return;
    struct request *q = request_new(s, cmd->id);
    if (q == NULL) {
        fail(out, cmd->id, PROTO_ERR_INTERNAL);
        return;
    }
    struct engine_history_query hq = {cmd->limit,         cmd->has_since,       cmd->since_offset,
                                      cmd->since_epoch.p, cmd->since_epoch.len, cmd->reverse};
    hub_history(cmd->channel.p, cmd->channel.len, ns, &hq, on_history, q);
}

static void on_presence(void *ud, int status, const struct engine_presence *m, size_t n)
{
    struct request *q = ud;
    struct session *s = q->s;
    if (!request_done(s)) {
        struct buf own, *out = reply_to(s, &own);
        if (status != 0) {
            fail_status(out, q->id, status);
        } else {
            proto_reply_begin(out, q->id, "presence");
            buf_append_str(out, "\"presence\":{");
            proto_render_presence(out, m, n);
            buf_append_char(out, '}');
            proto_reply_end(out);
        }
        reply_done(s, out);
    }
    free(q);
}

static void on_presence_stats(void *ud, int status, uint64_t clients, uint64_t users)
{
    struct request *q = ud;
    struct session *s = q->s;
    if (!request_done(s)) {
        struct buf own, *out = reply_to(s, &own);
        if (status != 0) {
            fail_status(out, q->id, status);
        } else {
            proto_reply_begin(out, q->id, "presence_stats");
            buf_appendf(out, "\"num_clients\":%llu,\"num_users\":%llu",
                        (unsigned long long)clients, (unsigned long long)users);
            proto_reply_end(out);
        }
        reply_done(s, out);
    }
    free(q);
}

static void handle_presence(struct session *s, struct proto_command *cmd, struct buf *out,
                            int stats)
{
    const struct ns_opts *ns = readable_ns(s, cmd, out);
    if (ns == NULL)
        return;
    struct request *q = request_new(s, cmd->id);
    if (q == NULL) {
        fail(out, cmd->id, PROTO_ERR_INTERNAL);
        return;
    }
    if (stats)
        hub_presence_stats(cmd->channel.p, cmd->channel.len, ns, on_presence_stats, q);
    else
        hub_presence(cmd->channel.p, cmd->channel.len, ns, on_presence, q);
}

/* ---- connect and refresh ---- */

static void connect_finish(struct connecting *k)
{
    struct session *s = k->s;
    if (!request_done(s)) {
        struct buf own, *out = reply_to(s, &own);
        proto_reply_begin(out, k->id, "connect");
        char id[37];
        buf_appendf(out, "\"client\":\"%s\",\"version\":\"" HERALD_VERSION "\"",
                    client_id(s, id));
        append_expiry(out, k->exp, 0);
        buf_appendf(out, ",\"ping\":%u,\"pong\":true", config->ping_interval);
        if (k->subs.len) {
            buf_append_str(out, ",\"subs\":{");
            buf_append(out, k->subs.p, k->subs.len);
            buf_append_char(out, '}');
        }
        proto_reply_end(out);
        reply_done(s, out);
    }
    buf_free(&k->subs);
    free(k);
}

/* Server-side subscriptions from the token's "channels" claim, gathered into the
 * connect reply's "subs" map. */
static void subscribe_claimed(struct session *s, const struct jwt_claims *claims,
                              struct connecting *k)
{
    if (claims->channels.len == 0)
        return;
    jsmntok_t t[128];
    int n = json_tokenize(claims->channels.p, claims->channels.len, t, 128);
    if (n <= 0 || t[0].type != JSMN_ARRAY)
        return;
    for (int i = 1; i < n; i = json_skip(t, n, i)) {
        if (t[i].type != JSMN_STRING)
            continue;
        struct json_span name = json_tok_span(claims->channels.p, &t[i]);
        const struct ns_opts *ns = config_namespace(config, name.p, name.len);
        if (ns == NULL || name.len == 0 || name.len > config->max_channel_length ||
            memchr(name.p, '\\', name.len) != NULL)
            continue;
        k->remaining++;
        if (subscribe(s, SUB_CLAIM, 0, name.p, name.len, ns, NULL, NULL, k) != 0)
            k->remaining--;
    }
}

/* max_connections_per_user across nodes answered: over it, 3504 (the connect reply,
 * still due, goes nowhere). */
static void on_user_shared(void *ud, int allowed)
{
    struct connecting *k = ud;
    struct session *s = k->s;
    if (allowed && !s->dead)
        s->user_shared = 1;
    else if (allowed)
        limit_user_release(s->user, 0, 1); /* gone meanwhile: its local count went then */
    if (!allowed && !s->dead) {
        metrics_add(loop_id(loop_of(s)), METRIC_LIMIT_USER_CONNECTIONS, 1);
        disconnect(s, PROTO_DISC_CONNECTION_LIMIT, "connection limit");
    }
    if (--k->remaining == 0)
        connect_finish(k);
}

static void handle_connect(struct session *s, struct proto_command *cmd, struct buf *out)
{
    /* A second connect, also while the first waits for the JWKS, is a protocol error. */
    if (s->connected || s->awaiting_keys) {
        disconnect(s, PROTO_DISC_BAD_REQUEST, "bad request");
        return;
    }
    struct jwt_claims claims;
    int have_claims = 0;
    /* A token in the URL query (allowed by allow_query_token, or the upgrade was
     * refused) stands in for a connect without one. */
    struct json_span token = cmd->token;
    if (token.len == 0 && s->query_token)
        token = (struct json_span){s->query_token->p, s->query_token->len};
    if (token.len == 0) {
        if (!config->allow_anonymous) {
            disconnect(s, PROTO_DISC_INVALID_TOKEN, "invalid token");
            return;
        }
    } else {
        enum token_check t = check_token(s, token, NULL, &claims);
        if (t == TOKEN_UNKNOWN_KID && defer(s, cmd))
            return;
        if (t == TOKEN_EXPIRED) {
            fail(out, cmd->id, PROTO_ERR_TOKEN_EXPIRED);
            return;
        }
        if (t == TOKEN_REFUSED || t == TOKEN_UNKNOWN_KID) {
            disconnect(s, PROTO_DISC_INVALID_TOKEN, "invalid token");
            return;
        }
        /* The user id becomes a C string: "victim\u0000x" would be user "victim". */
        if (memchr(claims.sub.p, 0, claims.sub.len) != NULL) {
            jwt_claims_free(&claims);
            disconnect(s, PROTO_DISC_INVALID_TOKEN, "invalid token");
            return;
        }
        have_claims = 1;
    }
    struct connecting *k = calloc(1, sizeof(*k));
    char *user = malloc(have_claims ? claims.sub.len + 1 : 1);
    if (user == NULL || k == NULL) {
        free(user);
        free(k);
        if (have_claims)
            jwt_claims_free(&claims);
        disconnect(s, PROTO_DISC_SERVER_ERROR, "internal server error");
        return;
    }
    user[0] = 0;
    struct bytes *info = NULL;
    if (have_claims) {
        memcpy(user, claims.sub.p, claims.sub.len);
        user[claims.sub.len] = 0;
        if (claims.info.len)
            info = bytes_new(claims.info.p, claims.info.len);
    }
    s->user = user;
    s->user_own = 1;
    if (!limit_user_admit(s->user, loop_id(loop_of(s)))) {
        free(info);
        free(k);
        if (have_claims)
            jwt_claims_free(&claims);
        disconnect(s, PROTO_DISC_CONNECTION_LIMIT, "connection limit");
        return;
    }
    s->user_counted = 1;
    new_client_id(s->client);
    /* The query token's slot holds conn_info from now on (the token goes at the end). */
    struct bytes *query_token = s->query_token;
    s->info = info;
    s->connected = 1;
    metrics_add(loop_id(loop_of(s)), METRIC_CLIENTS, 1);
    /* The users table keeps the name anyway: the session points at its copy. */
    const char *shared = users_online(s->user);
    if (shared) {
        free(user);
        s->user = shared;
        s->user_own = 0;
    }
    set_expiry(s, have_claims ? claims.exp : 0);
    s->ping_at = loop_now_sec(loop_of(s)) + config->ping_interval;
    schedule(s);
    *k = (struct connecting){s, cmd->id, 1, have_claims ? claims.exp : 0, BUF_INIT};
    s->pending++;
    /* Across nodes (Redis): the connect reply waits for the user's count there. */
    if (limit_user_share(s->user, loop_id(loop_of(s)), on_user_shared, k))
        k->remaining++;
    if (have_claims) {
        subscribe_claimed(s, &claims, k);
        jwt_claims_free(&claims);
    }
    free(query_token);
    if (--k->remaining == 0)
        connect_finish(k);
}

static void handle_refresh(struct session *s, struct proto_command *cmd, struct buf *out)
{
    struct jwt_claims claims;
    enum token_check t = check_token(s, cmd->token, NULL, &claims);
    if (t == TOKEN_UNKNOWN_KID && defer(s, cmd))
        return;
    if (t == TOKEN_EXPIRED) {
        disconnect(s, PROTO_DISC_EXPIRED, "connection expired");
        return;
    }
    if (t == TOKEN_REFUSED || t == TOKEN_UNKNOWN_KID) {
        disconnect(s, PROTO_DISC_INVALID_TOKEN, "invalid token");
        return;
    }
    set_expiry(s, claims.exp);
    schedule(s);
    proto_reply_begin(out, cmd->id, "refresh");
    char id[37];
    buf_appendf(out, "\"client\":\"%s\",\"version\":\"" HERALD_VERSION "\"",
                client_id(s, id));
    append_expiry(out, claims.exp, 0);
    proto_reply_end(out);
    jwt_claims_free(&claims);
}

static void handle_sub_refresh(struct session *s, struct proto_command *cmd, struct buf *out)
{
    struct hub_sub *sub = find_sub(s, cmd->channel.p, cmd->channel.len);
    if (sub == NULL) {
        fail(out, cmd->id, PROTO_ERR_PERMISSION_DENIED);
        return;
    }
    struct jwt_claims claims;
    enum token_check t = check_token(s, cmd->token, &cmd->channel, &claims);
    if (t == TOKEN_UNKNOWN_KID && defer(s, cmd))
        return;
    if (t == TOKEN_EXPIRED) {
        fail(out, cmd->id, PROTO_ERR_TOKEN_EXPIRED);
        return;
    }
    if (t == TOKEN_REFUSED || t == TOKEN_UNKNOWN_KID) {
        disconnect(s, PROTO_DISC_INVALID_TOKEN, "invalid token");
        return;
    }
    sub->expire_at = claims.exp ? grace_deadline(s, claims.exp) : 0;
    schedule(s);
    proto_reply_begin(out, cmd->id, "sub_refresh");
    append_expiry(out, claims.exp, 1);
    proto_reply_end(out);
    jwt_claims_free(&claims);
}

static void handle_command(struct session *s, struct proto_command *cmd, struct buf *out)
{
    if (cmd->method == PROTO_EMPTY) {
        s->awaiting_pong = 0; /* pong */
        return;
    }
    if (cmd->method == PROTO_CONNECT) {
        handle_connect(s, cmd, out);
        return;
    }
    if (!s->connected) {
        /* Behind a connect that waits for the JWKS: run after it, in order. */
        if (s->awaiting_keys && defer(s, cmd))
            return;
        /* Anything before connect is a protocol violation (Centrifugo: bad request). */
        disconnect(s, PROTO_DISC_BAD_REQUEST, "bad request");
        return;
    }
    if (cmd->channel.len > config->max_channel_length) {
        /* As Centrifugo's channel_max_length: an error, not a disconnect. */
        metrics_add(loop_id(loop_of(s)), METRIC_LIMIT_CHANNEL_LENGTH, 1);
        fail(out, cmd->id, PROTO_ERR_BAD_REQUEST);
        return;
    }
    switch (cmd->method) {
    case PROTO_SUBSCRIBE:
        handle_subscribe(s, cmd, out);
        break;
    case PROTO_UNSUBSCRIBE:
        handle_unsubscribe(s, cmd, out);
        break;
    case PROTO_PUBLISH:
        handle_publish(s, cmd, out);
        break;
    case PROTO_HISTORY:
        handle_history(s, cmd, out);
        break;
    case PROTO_PRESENCE:
        handle_presence(s, cmd, out, 0);
        break;
    case PROTO_PRESENCE_STATS:
        handle_presence(s, cmd, out, 1);
        break;
    case PROTO_REFRESH:
        handle_refresh(s, cmd, out);
        break;
    case PROTO_SUB_REFRESH:
        handle_sub_refresh(s, cmd, out);
        break;
    case PROTO_PING:
        proto_reply_begin(out, cmd->id, "ping");
        proto_reply_end(out);
        break;
    case PROTO_SEND:
        break; /* no reply, no handler yet */
    default:
        fail(out, cmd->id, PROTO_ERR_NOT_AVAILABLE);
        break;
    }
}

/* The replies of one message are bounded: once they reach client_queue_max, the
 * remaining commands of the message are answered with 106 (limit exceeded) instead of
 * being run, so one small message cannot make us build an unbounded reply. */
static void flush_replies(struct session *s, struct buf *out)
{
    batch_owner = NULL;
    if (out->oom)
        disconnect(s, PROTO_DISC_SERVER_ERROR, "internal server error");
    else if (out->len && ws_conn_reply_text(&s->ws, out->p, out->len) < 0)
        disconnect(s, PROTO_DISC_SERVER_ERROR, "internal server error");
    buf_shrink(out, LOOP_REPLY_KEEP);
}

/* client_command_rate (pongs aside: they answer our pings): a command over it gets 111
 * and is not run; LIMIT_COMMAND_STRIKES of them in a row and the next one refused
 * disconnects the client (3013), which reconnects after a backoff. */
static int command_admitted(struct session *s, const struct proto_command *cmd, struct buf *out)
{
    if (limit_take(&limit_command_rate, &s->command_tat, loop_now_ms(loop_of(s)) * 1000)) {
        s->strikes = 0;
        return 1;
    }
    unsigned slot = loop_id(loop_of(s));
    if (++s->strikes > LIMIT_COMMAND_STRIKES) {
        metrics_add(slot, METRIC_LIMIT_COMMAND_FLOODS, 1);
        flush_replies(s, out);
        disconnect(s, PROTO_DISC_TOO_MANY_REQUESTS, "too many requests");
        return 0;
    }
    metrics_add(slot, METRIC_LIMIT_COMMANDS, 1);
    if (cmd->id)
        fail(out, cmd->id, PROTO_ERR_TOO_MANY_REQUESTS);
    return 0;
}

/* herald_commands_total's label of each method (metrics/ knows nothing of proto/). */
static const enum metric_method metric_method_of[] = {
    [PROTO_CONNECT] = METRIC_M_CONNECT,
    [PROTO_SUBSCRIBE] = METRIC_M_SUBSCRIBE,
    [PROTO_UNSUBSCRIBE] = METRIC_M_UNSUBSCRIBE,
    [PROTO_PUBLISH] = METRIC_M_PUBLISH,
    [PROTO_PRESENCE] = METRIC_M_PRESENCE,
    [PROTO_PRESENCE_STATS] = METRIC_M_PRESENCE_STATS,
    [PROTO_HISTORY] = METRIC_M_HISTORY,
    [PROTO_PING] = METRIC_M_PING,
    [PROTO_SEND] = METRIC_M_SEND,
    [PROTO_RPC] = METRIC_M_RPC,
    [PROTO_REFRESH] = METRIC_M_REFRESH,
    [PROTO_SUB_REFRESH] = METRIC_M_SUB_REFRESH,
};
_Static_assert(sizeof(metric_method_of) / sizeof(metric_method_of[0]) == PROTO_SUB_REFRESH + 1,
               "every method has its label");

/* Does p[0..len) hold more than max commands (non-empty lines)? */
static int too_many_commands(const uint8_t *p, size_t len, unsigned max)
{
    size_t n = 0, start = 0;
    while (start < len) {
        const uint8_t *nl = memchr(p + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - p) : len;
        if (end > start && !(end - start == 1 && p[start] == '\r') && ++n > max)
            return 1;
        start = end + 1;
    }
    return 0;
}

static void on_text(struct ws_conn *w, uint8_t *p, size_t len)
{
    struct session *s = of(w);
    struct conn *c = conn_of(s);
    struct buf *out = loop_reply_buf(loop_of(s));
    const uint64_t budget = config->client_queue_max;
    /* A message of more than max_commands_per_message commands is refused whole, before
     * any of it runs: 3501, as Centrifugo answers a malformed command stream. */
    if (too_many_commands(p, len, config->max_commands_per_message)) {
        metrics_add(loop_id(loop_of(s)), METRIC_LIMIT_MESSAGE_COMMANDS, 1);
        disconnect(s, PROTO_DISC_BAD_REQUEST, "bad request");
        return;
    }
    buf_reset(out);
    batch_owner = s;
    batch_out = out;
    s->pending++; /* a disconnect inside the message must not free s under us */
    size_t start = 0;
    while (start < len && !conn_closing(c)) {
        uint8_t *nl = memchr(p + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - p) : len;
        size_t n = end - start;
        start = end + 1;
        if (n == 0 || (n == 1 && p[end - 1] == '\r'))
            continue;
        struct proto_command cmd;
        if (proto_command_decode(p + end - n, n, &cmd) != 0) {
            flush_replies(s, out);
            disconnect(s, PROTO_DISC_BAD_REQUEST, "bad request");
            break;
        }
        if (cmd.method != PROTO_EMPTY)
            metrics_count_method(metric_method_of[cmd.method]);
        if (limit_command_rate.interval_us && cmd.method != PROTO_EMPTY &&
            !command_admitted(s, &cmd, out))
            continue;
        if (out->len >= budget && cmd.id != 0 && s->connected)
            fail(out, cmd.id, PROTO_ERR_LIMIT_EXCEEDED);
        else
            handle_command(s, &cmd, out);
    }
    if (request_done(s))
        return;
    if (batch_owner != s)
        return; /* flushed before a disconnect */
    if (conn_closing(c)) {
        /* a disconnect: replies of this message after it are moot */
        batch_owner = NULL;
        buf_shrink(out, LOOP_REPLY_KEEP);
        return;
    }
    flush_replies(s, out);
}

void session_on_text(struct conn *c, uint8_t *p, size_t len)
{
    on_text(conn_ud(c), p, len);
}

static const struct ws_conn_handler handler = {on_text, on_timer, on_shutdown, on_gone, on_slow};

void session_set_query_token(struct conn *c, const uint8_t *token, size_t len)
{
    struct session *s = of(conn_ud(c));
    if (len == 0)
        return;
    free(s->query_token);
    s->query_token = bytes_new(token, len);
    if (s->query_token == NULL) {
        disconnect(s, PROTO_DISC_SERVER_ERROR, "internal server error");
        return;
    }
}

int session_start(struct conn *c, const struct limit_client *lc)
{
    struct loop *loop = conn_loop(c);
    struct session *s = pool_get(&session_pools[loop_id(loop)]);
    if (s == NULL)
        return -1;
    memset(s, 0, sizeof(*s));
    if (lc)
        s->lc = *lc;
    s->loop = (uint8_t)loop_id(loop);
    ws_conn_start(&s->ws, c, &handler, (uint32_t)config->max_message_size);
    conn_timer_set(c, config->client_connect_timeout); /* then 3502 stale, as Centrifugo */
    return 0;
}

/* ---- the server API's controls of a user's connections ---- */

struct control {
    enum session_control kind;
    unsigned code;
    size_t user_len, channel_len, reason_len;
    uint8_t bytes[]; /* user, channel, reason, each NUL-terminated */
};

static void control_one(struct session *s, const struct control *m)
{
    const uint8_t *channel = m->bytes + m->user_len + 1;
    const char *reason = (const char *)channel + m->channel_len + 1;
    if (m->kind == SESSION_DISCONNECT) {
        disconnect(s, m->code, reason);
    } else if (m->kind == SESSION_UNSUBSCRIBE) {
        if (!remove_sub(s, channel, m->channel_len))
            return;
        struct buf b = BUF_INIT;
        proto_push_unsubscribe(&b, channel, m->channel_len);
        if (!b.oom)
            ws_conn_send_text(&s->ws, b.p, b.len);
        buf_free(&b);
    } else {
        const struct ns_opts *ns = config_namespace(config, channel, m->channel_len);
        if (ns)
            subscribe(s, SUB_SERVER, 0, channel, m->channel_len, ns, NULL, NULL, NULL);
    }
}

static const struct ws_conn_handler handler;

/* One connection of the loop: the control's user's sessions take it. */
static void control_conn(struct conn *c, void *ud)
{
    const struct control *m = ud;
    struct ws_conn *w = ws_conn_of(c);
    if (w == NULL || w->h != &handler || conn_closing(c))
        return;
    struct session *s = of(w);
    if (!s->connected || strlen(s->user) != m->user_len ||
        memcmp(s->user, m->bytes, m->user_len) != 0)
        return;
    control_one(s, m);
}

/* The user's connections are found by walking the loop's (as rare as the API calls that
 * ask): an index by user would cost every idle connection its entry. */
static void on_control(struct loop *loop, struct loop_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        loop_each_conn(loop, control_conn, msgs[i].ptr);
        free(msgs[i].ptr);
    }
}

/* The wire form of a control, the same on every node: kind, code (4 bytes, big
 * endian), then user, channel and reason, each as a 2-byte length and its bytes. */
int session_control_encode(struct buf *out, enum session_control kind, const uint8_t *user,
                           size_t user_len, const uint8_t *channel, size_t channel_len,
                           unsigned code, const uint8_t *reason, size_t reason_len)
{
    if (user_len > 0xffff || channel_len > 0xffff || reason_len > 0xffff)
        return -1;
    uint8_t head[5] = {(uint8_t)kind, (uint8_t)(code >> 24), (uint8_t)(code >> 16),
                       (uint8_t)(code >> 8), (uint8_t)code};
    buf_append(out, head, sizeof(head));
    const uint8_t *parts[3] = {user, channel, reason};
    size_t lens[3] = {user_len, channel_len, reason_len};
    for (int i = 0; i < 3; i++) {
        uint8_t l[2] = {(uint8_t)(lens[i] >> 8), (uint8_t)lens[i]};
        buf_append(out, l, 2);
        buf_append(out, parts[i], lens[i]);
    }
    return out->oom ? -1 : 0;
}

void session_control_apply(const uint8_t *msg, size_t len)
{
    if (len < 5 || msg[0] > SESSION_UNSUBSCRIBE)
        return;
    const uint8_t *parts[3];
    size_t lens[3], at = 5;
    for (int i = 0; i < 3; i++) {
        if (len - at < 2)
            return;
        lens[i] = (size_t)msg[at] << 8 | msg[at + 1];
        at += 2;
        if (len - at < lens[i])
            return;
        parts[i] = msg + at;
        at += lens[i];
    }
    if (memchr(parts[0], 0, lens[0]) || memchr(parts[1], 0, lens[1]) ||
        memchr(parts[2], 0, lens[2]))
        return;
    unsigned code = (unsigned)msg[1] << 24 | (unsigned)msg[2] << 16 | (unsigned)msg[3] << 8 | msg[4];
    for (unsigned i = 0; i < control_nloops; i++) {
        struct control *m = malloc(sizeof(*m) + lens[0] + lens[1] + lens[2] + 3);
        if (m == NULL)
            return;
        m->kind = (enum session_control)msg[0];
        m->code = code;
        m->user_len = lens[0];
        m->channel_len = lens[1];
        m->reason_len = lens[2];
        uint8_t *w = m->bytes;
        for (int k = 0; k < 3; k++) {
            if (lens[k])
                memcpy(w, parts[k], lens[k]);
            w += lens[k];
            *w++ = 0;
        }
        struct loop_msg lm = {.handle = on_control, .ptr = m};
        if (loop_post(control_loops[i], &lm) != 0)
            free(m);
    }
}
