/* Client protocol session (see session.h): Centrifugo's JSON protocol v2 as the
 * official centrifuge-js v5 client speaks it (centrifugal/protocol client.proto,
 * centrifuge-js src/centrifuge.ts and src/subscription.ts). */
#include "proto/session.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/jwt.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/frame.h"
#include "core/log.h"
#include "core/rand.h"
#include "engine/engine.h"
#include "hub/hub.h"
#include "net/conn.h"
#include "net/loop.h"
#include "proto/command.h"

#define HERALD_VERSION "0.1.0"
#define CONNECT_TIMEOUT_SEC 10
#define MAX_SUBS_PER_CLIENT 512

struct session {
    char client[37];
    uint8_t connected;
    uint8_t awaiting_pong;
    uint32_t nsubs;
    uint32_t ping_at;   /* loop second (loop_now_sec) of the next ping */
    uint32_t expire_at; /* loop second when an expired token closes us, 0 = never */
    int64_t exp;        /* token exp (Unix seconds), 0 = none */
    char *user;         /* NUL-terminated, "" for anonymous */
    uint8_t *info;      /* conn_info from the token (raw JSON) or NULL */
    uint32_t info_len;
    struct hub_sub *subs;
};

static struct server *server;

/* Distinct connected users, for /api/info: user -> number of connections. One lock
 * per connect and disconnect, never on the delivery path. */
struct user_entry {
    struct user_entry *next;
    uint32_t conns;
    char name[];
};

#define USER_BUCKETS 4096
static pthread_mutex_t users_lock = PTHREAD_MUTEX_INITIALIZER;
static struct user_entry *user_table[USER_BUCKETS];
static uint64_t users_count;

static struct user_entry **user_slot(const char *name)
{
    uint32_t h = 2166136261u;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    struct user_entry **pp = &user_table[h % USER_BUCKETS];
    while (*pp && strcmp((*pp)->name, name) != 0)
        pp = &(*pp)->next;
    return pp;
}

static void user_online(const char *name)
{
    pthread_mutex_lock(&users_lock);
    struct user_entry **pp = user_slot(name);
    if (*pp == NULL) {
        size_t len = strlen(name);
        struct user_entry *u = malloc(sizeof(*u) + len + 1);
        if (u) {
            u->next = NULL;
            u->conns = 0;
            memcpy(u->name, name, len + 1);
            *pp = u;
            users_count++;
        }
    }
    if (*pp)
        (*pp)->conns++;
    pthread_mutex_unlock(&users_lock);
}

static void user_offline(const char *name)
{
    pthread_mutex_lock(&users_lock);
    struct user_entry **pp = user_slot(name);
    if (*pp && --(*pp)->conns == 0) {
        struct user_entry *u = *pp;
        *pp = u->next;
        free(u);
        users_count--;
    }
    pthread_mutex_unlock(&users_lock);
}

uint64_t session_num_users(void)
{
    pthread_mutex_lock(&users_lock);
    uint64_t n = users_count;
    pthread_mutex_unlock(&users_lock);
    return n;
}

void session_global_init(struct server *s)
{
    server = s;
}

static const struct config *cfg(void)
{
    return server->config;
}

/* Scratch buffers of the loop thread for recovered publications and client info. */
static _Thread_local struct buf scratch_pubs;
static _Thread_local struct buf scratch_info;

void session_loop_free(struct loop *loop)
{
    buf_free(&scratch_pubs);
    buf_free(&scratch_info);
}

int session_new(struct conn *c)
{
    struct session *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -1;
    c->session = s;
    loop_timer_set(c->loop, c, CONNECT_TIMEOUT_SEC);
    return 0;
}

static void drop_subs(struct conn *c)
{
    struct session *s = c->session;
    while (s->subs) {
        struct hub_sub *sub = s->subs;
        s->subs = sub->next;
        hub_unsubscribe(c->loop, sub);
    }
    s->nsubs = 0;
}

void session_free(struct conn *c)
{
    struct session *s = c->session;
    if (s == NULL)
        return;
    drop_subs(c);
    if (s->connected) {
        atomic_fetch_sub_explicit(&c->loop->stats.clients, 1, memory_order_relaxed);
        user_offline(s->user);
    }
    free(s->user);
    free(s->info);
    free(s);
    c->session = NULL;
}

void session_disconnect(struct conn *c, unsigned code, const char *reason)
{
    if (c->closed)
        return;
    if (c->session)
        drop_subs(c);
    conn_close_ws(c, code, reason);
}

/* ---- replies ---- */

static void reply_begin(struct buf *out, uint32_t id, const char *method)
{
    if (out->len)
        buf_append_char(out, '\n');
    buf_appendf(out, "{\"id\":%u,\"%s\":{", id, method);
}

static void reply_end(struct buf *out)
{
    buf_append_str(out, "}}");
}

static void reply_error(struct buf *out, uint32_t id, int code, const char *message)
{
    if (out->len)
        buf_append_char(out, '\n');
    buf_appendf(out, "{\"id\":%u,\"error\":{\"code\":%d,\"message\":\"%s\"}}", id, code, message);
}

static const char *error_message(int code)
{
    switch (code) {
    case PROTO_ERR_UNAUTHORIZED:
        return "unauthorized";
    case PROTO_ERR_UNKNOWN_CHANNEL:
        return "unknown channel";
    case PROTO_ERR_PERMISSION_DENIED:
        return "permission denied";
    case PROTO_ERR_METHOD_NOT_FOUND:
        return "method not found";
    case PROTO_ERR_ALREADY_SUBSCRIBED:
        return "already subscribed";
    case PROTO_ERR_LIMIT_EXCEEDED:
        return "limit exceeded";
    case PROTO_ERR_BAD_REQUEST:
        return "bad request";
    case PROTO_ERR_NOT_AVAILABLE:
        return "not available";
    case PROTO_ERR_TOKEN_EXPIRED:
        return "token expired";
    case PROTO_ERR_EXPIRED:
        return "expired";
    case PROTO_ERR_UNRECOVERABLE_POSITION:
        return "unrecoverable position";
    default:
        return "internal server error";
    }
}

static void fail(struct buf *out, uint32_t id, int code)
{
    reply_error(out, id, code, error_message(code));
}

/* The ClientInfo object of this session
 * ({"user":..,"client":..[,"conn_info":..][,"chan_info":..]}). */
static void client_info(struct buf *b, const struct session *s, const uint8_t *chan_info,
                        size_t chan_info_len)
{
    buf_append_str(b, "{\"user\":");
    buf_append_json_str(b, (const uint8_t *)s->user, strlen(s->user));
    buf_append_str(b, ",\"client\":\"");
    buf_append_str(b, s->client);
    buf_append_char(b, '"');
    if (s->info) {
        buf_append_str(b, ",\"conn_info\":");
        buf_append(b, s->info, s->info_len);
    }
    if (chan_info) {
        buf_append_str(b, ",\"chan_info\":");
        buf_append(b, chan_info, chan_info_len);
    }
    buf_append_char(b, '}');
}

/* ---- timers ---- */

/* Loop second at which a token expiring at exp (Unix seconds) closes its holder. */
static uint32_t grace_deadline(struct conn *c, int64_t exp)
{
    int64_t left = exp - (int64_t)time(NULL);
    if (left < 0)
        left = 0;
    return loop_now_sec(c->loop) + (uint32_t)left + cfg()->expired_close_delay;
}

static void schedule(struct conn *c)
{
    struct session *s = c->session;
    uint32_t now = loop_now_sec(c->loop);
    uint32_t at = s->ping_at;
    if (s->expire_at && s->expire_at < at)
        at = s->expire_at;
    for (struct hub_sub *sub = s->subs; sub; sub = sub->next)
        if (sub->expire_at && sub->expire_at < at)
            at = sub->expire_at;
    loop_timer_set(c->loop, c, at > now ? at - now : 1);
}

void session_on_timer(struct conn *c)
{
    struct session *s = c->session;
    if (s == NULL)
        return;
    if (!s->connected) {
        session_disconnect(c, 3502, "stale");
        return;
    }
    uint32_t now = loop_now_sec(c->loop);
    if (s->expire_at && now >= s->expire_at) {
        session_disconnect(c, PROTO_DISC_EXPIRED, "connection expired");
        return;
    }
    /* A subscription token not renewed with sub_refresh (as Centrifugo: 3006). */
    for (struct hub_sub *sub = s->subs; sub; sub = sub->next) {
        if (sub->expire_at && now >= sub->expire_at) {
            session_disconnect(c, PROTO_DISC_SUB_EXPIRED, "subscription expired");
            return;
        }
    }
    if (now >= s->ping_at) {
        if (s->awaiting_pong) {
            /* Judge the client on the pongs it sent, not on how late this loop is: a
             * stall may have kept its pong unread in the socket. */
            conn_read_now(c);
            if (c->closed || c->close_sent || c->session != s)
                return;
        }
        if (s->awaiting_pong) {
            session_disconnect(c, PROTO_DISC_NO_PONG, "no pong");
            return;
        }
        static const uint8_t ping[] = {0x81, 0x02, '{', '}'};
        conn_send_bytes(c, ping, sizeof(ping));
        s->awaiting_pong = 1;
        s->ping_at = now + cfg()->ping_interval;
    }
    schedule(c);
}

static void set_expiry(struct conn *c, int64_t exp)
{
    struct session *s = c->session;
    s->exp = exp;
    s->expire_at = exp ? grace_deadline(c, exp) : 0;
}

/* ---- tokens ---- */

enum token_check { TOKEN_OK, TOKEN_EXPIRED, TOKEN_REFUSED };

/* Verify a token (HS256 with token_hmac_secret). After connect, its sub must be the
 * session's user; with channel, its channel claim must be that channel, without, it
 * must have none (a connection token). TOKEN_OK:
 * claims filled, the caller frees them; otherwise nothing to free. A valid token
 * for another user or channel is TOKEN_REFUSED, like a bad signature (3500). */
static enum token_check check_token(const struct session *s, struct json_span token,
                                    const struct json_span *channel, struct jwt_claims *claims)
{
    const char *secret = cfg()->token_hmac_secret;
    if (secret == NULL)
        return TOKEN_REFUSED;
    int r = jwt_verify_hs256(token.p, token.len, (const uint8_t *)secret, strlen(secret),
                             (int64_t)time(NULL), claims);
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

/* ,"expires":true,"ttl":N for a token with exp (leading comma unless first). */
static void append_expiry(struct buf *out, int64_t exp, int first)
{
    if (exp == 0)
        return;
    int64_t ttl = exp - (int64_t)time(NULL);
    buf_appendf(out, "%s\"expires\":true,\"ttl\":%lld", first ? "" : ",",
                (long long)(ttl > 0 ? ttl : 0));
}

/* ---- commands ---- */

static int user_allowed(const struct session *s, const uint8_t *ch, size_t len)
{
    /* "chat:dm#42,43": only users 42 and 43. */
    const uint8_t *hash = NULL;
    for (size_t i = 0; i < len; i++)
        if (ch[i] == '#')
            hash = ch + i;
    if (hash == NULL)
        return 1;
    const uint8_t *p = hash + 1, *end = ch + len;
    size_t ulen = strlen(s->user);
    while (p <= end) {
        const uint8_t *comma = memchr(p, ',', (size_t)(end - p));
        const uint8_t *e = comma ? comma : end;
        if ((size_t)(e - p) == ulen && ulen > 0 && memcmp(p, s->user, ulen) == 0)
            return 1;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 0;
}

static struct hub_sub *find_sub(struct session *s, const uint8_t *ch, size_t len)
{
    for (struct hub_sub *sub = s->subs; sub; sub = sub->next)
        if (sub->name_len == len && memcmp(sub->name, ch, len) == 0)
            return sub;
    return NULL;
}

static void subscribe_result(struct buf *out, const struct ns_opts *ns, struct hub_recovery *rec,
                             int64_t exp)
{
    int comma = 0;
#define SEP() (comma ? buf_append_char(out, ',') : (void)0, comma = 1)
    if (exp) {
        SEP();
        int64_t ttl = exp - (int64_t)time(NULL);
        buf_appendf(out, "\"expires\":true,\"ttl\":%lld", (long long)(ttl > 0 ? ttl : 0));
    }
    if (rec->has_history) {
        if (ns->recover) {
            SEP();
            buf_append_str(out, "\"recoverable\":true");
        }
        SEP();
        buf_appendf(out, "\"epoch\":\"%s\",\"offset\":%llu", rec->pos.epoch,
                    (unsigned long long)rec->pos.offset);
        if (rec->recover) {
            buf_appendf(out, ",\"was_recovering\":true,\"recovered\":%s",
                        rec->recovered ? "true" : "false");
            if (rec->recovered && rec->pubs && rec->pubs->len) {
                buf_append_str(out, ",\"publications\":[");
                buf_append(out, rec->pubs->p, rec->pubs->len);
                buf_append_char(out, ']');
            }
        }
    }
#undef SEP
}

/* Subscribe (client command, token claim or server API). Returns 0 or an error code. */
static int do_subscribe(struct conn *c, const uint8_t *ch, size_t len, const struct ns_opts *ns,
                        struct hub_recovery *rec, struct jwt_claims *sub_claims,
                        struct hub_sub **out)
{
    struct session *s = c->session;
    if (find_sub(s, ch, len))
        return PROTO_ERR_ALREADY_SUBSCRIBED;
    if (s->nsubs >= MAX_SUBS_PER_CLIENT)
        return PROTO_ERR_LIMIT_EXCEEDED;
    if (!ns->recover)
        rec->recover = 0;
    rec->max_pubs = cfg()->recovery_max_publications;
    buf_reset(&scratch_pubs);
    rec->pubs = &scratch_pubs;
    buf_reset(&scratch_info);
    if (ns->presence || ns->join_leave) {
        int has = sub_claims && sub_claims->info.len;
        client_info(&scratch_info, s, has ? sub_claims->info.p : NULL,
                    has ? sub_claims->info.len : 0);
        rec->info = scratch_info.p;
        rec->info_len = scratch_info.len;
        rec->client = s->client;
    }
    struct hub_sub *sub = hub_subscribe(c->loop, c, ch, len, ns, rec);
    if (sub == NULL)
        return rec->limited ? PROTO_ERR_LIMIT_EXCEEDED : PROTO_ERR_INTERNAL;
    sub->next = s->subs;
    s->subs = sub;
    s->nsubs++;
    *out = sub;
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
    const struct ns_opts *ns = config_namespace(cfg(), cmd->channel.p, cmd->channel.len);
    if (ns == NULL)
        fail(out, cmd->id, PROTO_ERR_UNKNOWN_CHANNEL);
    return ns;
}

static void handle_subscribe(struct conn *c, struct proto_command *cmd, struct buf *out)
{
    struct session *s = c->session;
    const struct ns_opts *ns = command_ns(cmd, out);
    if (ns == NULL)
        return;
    if (!user_allowed(s, cmd->channel.p, cmd->channel.len)) {
        fail(out, cmd->id, PROTO_ERR_PERMISSION_DENIED);
        return;
    }
    struct jwt_claims claims;
    int have_claims = 0;
    int64_t exp = 0;
    if (ns->private_ || cmd->token.len) {
        if (cmd->token.len == 0) {
            fail(out, cmd->id, PROTO_ERR_PERMISSION_DENIED);
            return;
        }
        enum token_check t = check_token(s, cmd->token, &cmd->channel, &claims);
        if (t == TOKEN_EXPIRED) {
            fail(out, cmd->id, PROTO_ERR_TOKEN_EXPIRED);
            return;
        }
        if (t == TOKEN_REFUSED) {
            session_disconnect(c, PROTO_DISC_INVALID_TOKEN, "invalid token");
            return;
        }
        have_claims = 1;
        exp = claims.exp;
    }
    struct hub_recovery rec = {0};
    rec.recover = cmd->recover;
    rec.offset = cmd->offset;
    rec.epoch = cmd->epoch.p;
    rec.epoch_len = cmd->epoch.len;
    struct hub_sub *sub;
    int err = do_subscribe(c, cmd->channel.p, cmd->channel.len, ns, &rec,
                           have_claims ? &claims : NULL, &sub);
    if (have_claims)
        jwt_claims_free(&claims);
    if (err) {
        fail(out, cmd->id, err);
        return;
    }
    if (exp) {
        sub->expire_at = grace_deadline(c, exp);
        schedule(c);
    }
    reply_begin(out, cmd->id, "subscribe");
    subscribe_result(out, ns, &rec, exp);
    reply_end(out);
}

/* Drop c's subscription to a channel; 1 if there was one. */
static int remove_sub(struct conn *c, const uint8_t *ch, size_t len)
{
    struct session *s = c->session;
    for (struct hub_sub **pp = &s->subs; *pp; pp = &(*pp)->next) {
        struct hub_sub *sub = *pp;
        if (sub->name_len == len && memcmp(sub->name, ch, len) == 0) {
            *pp = sub->next;
            s->nsubs--;
            hub_unsubscribe(c->loop, sub);
            return 1;
        }
    }
    return 0;
}

static void handle_unsubscribe(struct conn *c, struct proto_command *cmd, struct buf *out)
{
    remove_sub(c, cmd->channel.p, cmd->channel.len);
    reply_begin(out, cmd->id, "unsubscribe");
    reply_end(out);
}

static void handle_publish(struct conn *c, struct proto_command *cmd, struct buf *out)
{
    struct session *s = c->session;
    if (cmd->data.p == NULL) {
        fail(out, cmd->id, PROTO_ERR_BAD_REQUEST);
        return;
    }
    const struct ns_opts *ns = command_ns(cmd, out);
    if (ns == NULL)
        return;
    if (!ns->client_publish || !user_allowed(s, cmd->channel.p, cmd->channel.len) ||
        (ns->private_ && !find_sub(s, cmd->channel.p, cmd->channel.len))) {
        fail(out, cmd->id, PROTO_ERR_PERMISSION_DENIED);
        return;
    }
    struct hub_sub *own = find_sub(s, cmd->channel.p, cmd->channel.len);
    buf_reset(&scratch_info);
    if (own && own->info)
        buf_append(&scratch_info, own->info, own->info_len); /* includes chan_info */
    else
        client_info(&scratch_info, s, NULL, 0);
    struct hub_stream_pos pos;
    int r = engine_current->ops->publish(engine_current, cmd->channel.p, cmd->channel.len, ns,
                                         cmd->data.p, cmd->data.len, scratch_info.p,
                                         scratch_info.len, &pos);
    if (r < 0) {
        fail(out, cmd->id, r == HUB_LIMIT ? PROTO_ERR_LIMIT_EXCEEDED : PROTO_ERR_INTERNAL);
        return;
    }
    reply_begin(out, cmd->id, "publish");
    /* Not in client.proto's PublishResult (clients ignore it): the stream position the
     * publication got, as the server API's publish result has it. */
    if (r == 1)
        buf_appendf(out, "\"offset\":%llu,\"epoch\":\"%s\"", (unsigned long long)pos.offset,
                    pos.epoch);
    reply_end(out);
}

/* The namespace of a channel the client reads (history, presence): only its
 * subscribers may. NULL after answering 107, 102 or 103. */
static const struct ns_opts *subscribed_ns(struct conn *c, const struct proto_command *cmd,
                                           struct buf *out)
{
    const struct ns_opts *ns = command_ns(cmd, out);
    if (ns && !find_sub(c->session, cmd->channel.p, cmd->channel.len)) {
        fail(out, cmd->id, PROTO_ERR_PERMISSION_DENIED);
        return NULL;
    }
    return ns;
}

static void handle_history(struct conn *c, struct proto_command *cmd, struct buf *out)
{
    const struct ns_opts *ns = subscribed_ns(c, cmd, out);
    if (ns == NULL)
        return;
    buf_reset(&scratch_pubs);
    struct hub_stream_pos pos;
    int r = engine_current->ops->history(engine_current, cmd->channel.p, cmd->channel.len, ns,
                                         cmd->limit, cmd->has_since, cmd->since_offset,
                                         cmd->since_epoch.p, cmd->since_epoch.len, cmd->reverse,
                                         &scratch_pubs, &pos);
    if (r < 0) {
        fail(out, cmd->id, -r);
        return;
    }
    reply_begin(out, cmd->id, "history");
    buf_append_str(out, "\"publications\":[");
    buf_append(out, scratch_pubs.p, scratch_pubs.len);
    buf_appendf(out, "],\"epoch\":\"%s\",\"offset\":%llu", pos.epoch,
                (unsigned long long)pos.offset);
    reply_end(out);
}

static void handle_presence(struct conn *c, struct proto_command *cmd, struct buf *out, int stats)
{
    const struct ns_opts *ns = subscribed_ns(c, cmd, out);
    if (ns == NULL)
        return;
    buf_reset(&scratch_pubs);
    uint64_t clients, users;
    int r = engine_current->ops->presence(engine_current, cmd->channel.p, cmd->channel.len, ns,
                                          stats ? NULL : &scratch_pubs, &clients, &users);
    if (r < 0) {
        fail(out, cmd->id, -r);
        return;
    }
    if (stats) {
        reply_begin(out, cmd->id, "presence_stats");
        buf_appendf(out, "\"num_clients\":%llu,\"num_users\":%llu", (unsigned long long)clients,
                    (unsigned long long)users);
    } else {
        reply_begin(out, cmd->id, "presence");
        buf_append_str(out, "\"presence\":{");
        buf_append(out, scratch_pubs.p, scratch_pubs.len);
        buf_append_char(out, '}');
    }
    reply_end(out);
}

/* Server-side subscriptions from the token's "channels" claim, as the connect
 * reply's "subs" map. */
static void subscribe_claimed(struct conn *c, struct jwt_claims *claims, struct buf *out)
{
    if (claims->channels.len == 0)
        return;
    jsmntok_t t[128];
    int n = json_tokenize(claims->channels.p, claims->channels.len, t, 128);
    if (n <= 0 || t[0].type != JSMN_ARRAY)
        return;
    int first = 1;
    for (int i = 1; i < n; i = json_skip(t, n, i)) {
        if (t[i].type != JSMN_STRING)
            continue;
        struct json_span name = json_tok_span(claims->channels.p, &t[i]);
        const struct ns_opts *ns = config_namespace(cfg(), name.p, name.len);
        if (ns == NULL || name.len == 0 || name.len > PROTO_MAX_CHANNEL ||
            memchr(name.p, '\\', name.len) != NULL)
            continue;
        struct hub_recovery rec = {0};
        struct hub_sub *sub;
        if (do_subscribe(c, name.p, name.len, ns, &rec, NULL, &sub) != 0)
            continue;
        buf_append_str(out, first ? ",\"subs\":{" : ",");
        first = 0;
        buf_append_json_str(out, name.p, name.len);
        buf_append_str(out, ":{");
        subscribe_result(out, ns, &rec, 0);
        buf_append_char(out, '}');
    }
    if (!first)
        buf_append_char(out, '}');
}

static void connect_reply(struct conn *c, uint32_t id, int64_t exp, struct buf *out)
{
    struct session *s = c->session;
    reply_begin(out, id, "connect");
    buf_appendf(out, "\"client\":\"%s\",\"version\":\"" HERALD_VERSION "\"", s->client);
    append_expiry(out, exp, 0);
    buf_appendf(out, ",\"ping\":%u,\"pong\":true", cfg()->ping_interval);
}

static void handle_connect(struct conn *c, struct proto_command *cmd, struct buf *out)
{
    struct session *s = c->session;
    const struct config *conf = cfg();
    if (s->connected) {
        session_disconnect(c, PROTO_DISC_BAD_REQUEST, "bad request");
        return;
    }
    struct jwt_claims claims;
    int have_claims = 0;
    if (cmd->token.len == 0) {
        if (!conf->allow_anonymous) {
            session_disconnect(c, PROTO_DISC_INVALID_TOKEN, "invalid token");
            return;
        }
    } else {
        enum token_check t = check_token(s, cmd->token, NULL, &claims);
        if (t == TOKEN_EXPIRED) {
            fail(out, cmd->id, PROTO_ERR_TOKEN_EXPIRED);
            return;
        }
        if (t == TOKEN_REFUSED) {
            session_disconnect(c, PROTO_DISC_INVALID_TOKEN, "invalid token");
            return;
        }
        have_claims = 1;
    }
    s->user = malloc(have_claims ? claims.sub.len + 1 : 1);
    if (s->user == NULL) {
        if (have_claims)
            jwt_claims_free(&claims);
        session_disconnect(c, PROTO_DISC_SERVER_ERROR, "internal server error");
        return;
    }
    s->user[0] = 0;
    if (have_claims) {
        memcpy(s->user, claims.sub.p, claims.sub.len);
        s->user[claims.sub.len] = 0;
        if (claims.info.len) {
            s->info = malloc(claims.info.len);
            if (s->info) {
                memcpy(s->info, claims.info.p, claims.info.len);
                s->info_len = (uint32_t)claims.info.len;
            }
        }
    }
    rand_uuid(s->client);
    s->connected = 1;
    atomic_fetch_add_explicit(&c->loop->stats.clients, 1, memory_order_relaxed);
    user_online(s->user);
    set_expiry(c, have_claims ? claims.exp : 0);
    s->ping_at = loop_now_sec(c->loop) + conf->ping_interval;
    schedule(c);
    connect_reply(c, cmd->id, s->exp, out);
    if (have_claims) {
        subscribe_claimed(c, &claims, out);
        jwt_claims_free(&claims);
    }
    reply_end(out);
}

static void handle_refresh(struct conn *c, struct proto_command *cmd, struct buf *out)
{
    struct session *s = c->session;
    struct jwt_claims claims;
    enum token_check t = check_token(s, cmd->token, NULL, &claims);
    if (t == TOKEN_EXPIRED) {
        session_disconnect(c, PROTO_DISC_EXPIRED, "connection expired");
        return;
    }
    if (t == TOKEN_REFUSED) {
        session_disconnect(c, PROTO_DISC_INVALID_TOKEN, "invalid token");
        return;
    }
    set_expiry(c, claims.exp);
    schedule(c);
    reply_begin(out, cmd->id, "refresh");
    buf_appendf(out, "\"client\":\"%s\",\"version\":\"" HERALD_VERSION "\"", s->client);
    append_expiry(out, claims.exp, 0);
    reply_end(out);
    jwt_claims_free(&claims);
}

static void handle_sub_refresh(struct conn *c, struct proto_command *cmd, struct buf *out)
{
    struct session *s = c->session;
    struct hub_sub *sub = find_sub(s, cmd->channel.p, cmd->channel.len);
    if (sub == NULL) {
        fail(out, cmd->id, PROTO_ERR_PERMISSION_DENIED);
        return;
    }
    struct jwt_claims claims;
    enum token_check t = check_token(s, cmd->token, &cmd->channel, &claims);
    if (t == TOKEN_EXPIRED) {
        fail(out, cmd->id, PROTO_ERR_TOKEN_EXPIRED);
        return;
    }
    if (t == TOKEN_REFUSED) {
        session_disconnect(c, PROTO_DISC_INVALID_TOKEN, "invalid token");
        return;
    }
    sub->expire_at = claims.exp ? grace_deadline(c, claims.exp) : 0;
    schedule(c);
    reply_begin(out, cmd->id, "sub_refresh");
    append_expiry(out, claims.exp, 1);
    reply_end(out);
    jwt_claims_free(&claims);
}

static void handle_command(struct conn *c, struct proto_command *cmd, struct buf *out)
{
    struct session *s = c->session;
    if (cmd->method == PROTO_EMPTY) {
        s->awaiting_pong = 0; /* pong */
        return;
    }
    if (cmd->method == PROTO_CONNECT) {
        handle_connect(c, cmd, out);
        return;
    }
    if (!s->connected) {
        /* Anything before connect is a protocol violation (Centrifugo: bad request). */
        session_disconnect(c, PROTO_DISC_BAD_REQUEST, "bad request");
        return;
    }
    switch (cmd->method) {
    case PROTO_SUBSCRIBE:
        handle_subscribe(c, cmd, out);
        break;
    case PROTO_UNSUBSCRIBE:
        handle_unsubscribe(c, cmd, out);
        break;
    case PROTO_PUBLISH:
        handle_publish(c, cmd, out);
        break;
    case PROTO_HISTORY:
        handle_history(c, cmd, out);
        break;
    case PROTO_PRESENCE:
        handle_presence(c, cmd, out, 0);
        break;
    case PROTO_PRESENCE_STATS:
        handle_presence(c, cmd, out, 1);
        break;
    case PROTO_REFRESH:
        handle_refresh(c, cmd, out);
        break;
    case PROTO_SUB_REFRESH:
        handle_sub_refresh(c, cmd, out);
        break;
    case PROTO_PING:
        reply_begin(out, cmd->id, "ping");
        reply_end(out);
        break;
    case PROTO_SEND:
        break; /* no reply, no handler yet */
    default:
        fail(out, cmd->id, PROTO_ERR_NOT_AVAILABLE);
        break;
    }
}

/* The replies to one message are bounded: once they reach client_queue_max, the
 * remaining commands of the message are answered with 106 (limit exceeded) instead
 * of being run, so one small message cannot make us build an unbounded reply. */
static void flush_replies(struct conn *c, struct buf *out)
{
    if (out->oom)
        session_disconnect(c, PROTO_DISC_SERVER_ERROR, "internal server error");
    else if (out->len && conn_reply_text(c, out->p, out->len) != 0)
        session_disconnect(c, PROTO_DISC_SERVER_ERROR, "internal server error");
    buf_shrink(out, LOOP_REPLY_KEEP);
    buf_shrink(&scratch_pubs, LOOP_REPLY_KEEP);
}

void session_on_text(struct conn *c, uint8_t *p, size_t len)
{
    struct buf *out = &c->loop->reply;
    const uint64_t budget = cfg()->client_queue_max;
    buf_reset(out);
    size_t start = 0;
    while (start < len && !c->close_sent && !c->closed) {
        uint8_t *nl = memchr(p + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - p) : len;
        size_t n = end - start;
        start = end + 1;
        if (n == 0 || (n == 1 && p[end - 1] == '\r'))
            continue;
        struct proto_command cmd;
        if (proto_command_decode(p + end - n, n, &cmd) != 0) {
            flush_replies(c, out);
            session_disconnect(c, PROTO_DISC_BAD_REQUEST, "bad request");
            return;
        }
        if (out->len >= budget && cmd.id != 0 && c->session->connected)
            fail(out, cmd.id, PROTO_ERR_LIMIT_EXCEEDED);
        else
            handle_command(c, &cmd, out);
        if (c->close_sent || c->closed) {
            buf_shrink(out, LOOP_REPLY_KEEP);
            return; /* a disconnect: replies of this batch after it are moot */
        }
    }
    flush_replies(c, out);
}

/* ---- control messages from the server API (any loop) ---- */

void session_on_control(struct loop *loop, struct loop_msg *m)
{
    /* payload: user \0 channel \0 reason \0 (malloc'd frame) */
    struct frame *f = m->frame;
    const char *user = (const char *)f->data;
    const char *channel = user + strlen(user) + 1;
    const char *reason = channel + strlen(channel) + 1;
    size_t chlen = strlen(channel);
    for (struct conn *c = loop->conns, *next; c; c = next) {
        next = c->next;
        struct session *s = c->session;
        if (s == NULL || !s->connected || c->close_sent || strcmp(s->user, user) != 0)
            continue;
        if (m->type == LOOP_MSG_DISCONNECT) {
            session_disconnect(c, m->arg, reason);
        } else if (m->type == LOOP_MSG_UNSUBSCRIBE) {
            if (!remove_sub(c, (const uint8_t *)channel, chlen))
                continue;
            struct buf b = BUF_INIT;
            buf_append_str(&b, "{\"push\":{\"channel\":");
            buf_append_json_str(&b, (const uint8_t *)channel, chlen);
            buf_append_str(&b,
                           ",\"unsubscribe\":{\"code\":2000,\"reason\":\"server unsubscribe\"}}}");
            if (!b.oom)
                conn_send_text(c, b.p, b.len);
            buf_free(&b);
        } else if (m->type == LOOP_MSG_SUBSCRIBE) {
            const struct ns_opts *ns = config_namespace(cfg(), (const uint8_t *)channel, chlen);
            struct hub_recovery rec = {0};
            struct hub_sub *sub;
            if (ns == NULL ||
                do_subscribe(c, (const uint8_t *)channel, chlen, ns, &rec, NULL, &sub) != 0)
                continue;
            struct buf b = BUF_INIT;
            buf_append_str(&b, "{\"push\":{\"channel\":");
            buf_append_json_str(&b, (const uint8_t *)channel, chlen);
            buf_append_str(&b, ",\"subscribe\":{");
            subscribe_result(&b, ns, &rec, 0);
            buf_append_str(&b, "}}}");
            if (!b.oom)
                conn_send_text(c, b.p, b.len);
            buf_free(&b);
        }
    }
    frame_unref(f);
}
