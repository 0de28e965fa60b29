/* Server API handlers (see api.h): same request and reply shapes as Centrifugo's HTTP
 * API, so its server SDKs work with herald. `data` is passed byte for byte. Each call
 * owns a struct call that gathers its answer; hub and engine requests complete into it
 * through callbacks, and the last completion hands the answer to the transport. */
#include "http/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/json.h"
#include "hub/hub.h"
#include "metrics/metrics.h"
#include "net/loop.h"
#include "proto/codes.h"
#include "proto/command.h"
#include "proto/reply.h"
#include "proto/session.h"
#include "ws/utf8.h"

#define API_MAX_TOKENS 65536

static struct api_context ctx;

void api_init(const struct api_context *c)
{
    ctx = *c;
}

/* One API call: its parsed body and its answer. */
struct call {
    uint8_t *js;
    jsmntok_t *t;
    int n;
    struct buf out;
    int status;
    api_done_cb done;
    void *ud;
};

/* The answer when even the answer could not be built: from the stack. */
static void answer_oom(api_done_cb done, void *ud)
{
    char body[96];
    int n = snprintf(body, sizeof(body), "{\"error\":{\"code\":%d,\"message\":\"%s\"}}",
                     PROTO_ERR_INTERNAL, proto_error_message(PROTO_ERR_INTERNAL));
    done(ud, 500, (const uint8_t *)body, (size_t)n);
}

static void finish(struct call *r)
{
    if (r->out.oom) {
        answer_oom(r->done, r->ud);
    } else {
        r->done(r->ud, r->status, r->out.p, r->out.len);
    }
    buf_free(&r->out);
    free(r->t);
    free(r);
}

static void error(struct buf *out, int code)
{
    buf_appendf(out, "{\"error\":{\"code\":%d,\"message\":\"%s\"}}", code,
                proto_error_message(code));
}

/* An engine status as an error object; an unreachable store makes the call 503, with
 * a temporary error, never a false success. */
static void status_error(struct call *r, struct buf *out, int status)
{
    if (status == ENGINE_ERR_UNAVAILABLE) {
        r->status = 503;
        buf_appendf(out, "{\"error\":{\"code\":%d,\"message\":\"%s\",\"temporary\":true}}",
                    PROTO_ERR_INTERNAL, proto_error_message(PROTO_ERR_INTERNAL));
    } else {
        error(out, -status);
    }
}

/* Answer now with an error object (HTTP 200, as Centrifugo's API does). */
static void fail(struct call *r, int code)
{
    error(&r->out, code);
    finish(r);
}

/* A string member, unescaped in place; NULL span when absent. -1 when not a string. */
static int get_string(struct call *r, int obj, const char *key, struct json_span *out)
{
    return json_obj_string(r->js, r->t, r->n, obj, key, out) < 0 ? -1 : 0;
}

/* A channel over max_channel_length makes the whole call 400 (with error 107): the
 * request is malformed for this node, as a body that cannot be decoded. */
static int channel_too_long(struct json_span ch)
{
    return ch.len > ctx.config->max_channel_length;
}

static int valid_channel(struct json_span ch)
{
    if (ch.p == NULL || ch.len == 0 || channel_too_long(ch))
        return 0;
    for (size_t i = 0; i < ch.len; i++)
        if (ch.p[i] < 0x20)
            return 0;
    return 1;
}

/* The "channel" member and its namespace; NULL with *code 107 or 102. */
static const struct ns_opts *get_channel_ns(struct call *r, struct json_span *ch, int *code)
{
    if (get_string(r, 0, "channel", ch) != 0 || !valid_channel(*ch)) {
        if (channel_too_long(*ch))
            r->status = 400;
        *code = PROTO_ERR_BAD_REQUEST;
        return NULL;
    }
    const struct ns_opts *ns = config_namespace(ctx.config, ch->p, ch->len);
    if (ns == NULL)
        *code = PROTO_ERR_UNKNOWN_CHANNEL;
    return ns;
}

static int get_data(struct call *r, struct json_span *data)
{
    int i = json_obj_get(r->js, r->t, r->n, 0, "data");
    if (i < 0)
        return -1;
    *data = json_tok_raw(r->js, &r->t[i]);
    return 0;
}

/* {"result":{"offset":N,"epoch":"E"}}, {"result":{}} or {"error":...} */
static void publish_result(struct call *r, struct buf *out, int status,
                           const struct engine_pos *pos)
{
    if (status != 0)
        status_error(r, out, status);
    else if (pos->epoch[0])
        buf_appendf(out, "{\"result\":{\"offset\":%llu,\"epoch\":\"%s\"}}",
                    (unsigned long long)pos->offset, pos->epoch);
    else
        buf_append_str(out, "{\"result\":{}}");
}

/* ---- publish, broadcast ---- */

static void on_published(void *ud, int status, const struct engine_pos *pos)
{
    struct call *r = ud;
    publish_result(r, &r->out, status, pos);
    finish(r);
}

static void api_publish(struct call *r)
{
    struct json_span ch, data, key = {NULL, 0};
    /* The channel is read (unescaped in place) once: a second read would unescape what the
     * first one left, and an escaped name would become another. */
    int code;
    const struct ns_opts *ns = get_channel_ns(r, &ch, &code);
    if (ns == NULL) {
        fail(r, code);
        return;
    }
    if (get_data(r, &data) != 0 || get_string(r, 0, "idempotency_key", &key) != 0 || key.len > 64) {
        fail(r, PROTO_ERR_BAD_REQUEST);
        return;
    }
    if (ns->max_data_size && data.len > ns->max_data_size) {
        fail(r, PROTO_ERR_LIMIT_EXCEEDED); /* the namespace's max_data_size, as for clients */
        return;
    }
    hub_publish(ch.p, ch.len, ns, data.p, data.len, NULL, 0, key.p, key.len, on_published, r);
}

/* A broadcast's answers, one per channel in request order, whatever order the
 * publications complete in. */
struct broadcast {
    struct call *r;
    size_t n, remaining;
    struct slot {
        int status;
        struct engine_pos pos;
        struct json_span ch;
        const struct ns_opts *ns; /* NULL: not published (status says why) */
    } slots[];
};

struct broadcast_one {
    struct broadcast *b;
    size_t i;
};

static void broadcast_done(struct broadcast *b)
{
    struct buf *out = &b->r->out;
    buf_append_str(out, "{\"result\":{\"responses\":[");
    for (size_t i = 0; i < b->n; i++) {
        if (i)
            buf_append_char(out, ',');
        publish_result(b->r, out, b->slots[i].status, &b->slots[i].pos);
    }
    buf_append_str(out, "]}}");
    finish(b->r);
    free(b);
}

static void on_broadcast_one(void *ud, int status, const struct engine_pos *pos)
{
    struct broadcast_one *one = ud;
    struct broadcast *b = one->b;
    b->slots[one->i].status = status;
    b->slots[one->i].pos = *pos;
    free(one);
    if (--b->remaining == 0)
        broadcast_done(b);
}

static void api_broadcast(struct call *r)
{
    struct json_span data;
    int chs = json_obj_get(r->js, r->t, r->n, 0, "channels");
    if (chs < 0 || r->t[chs].type != JSMN_ARRAY || get_data(r, &data) != 0) {
        fail(r, PROTO_ERR_BAD_REQUEST);
        return;
    }
    size_t n = (size_t)r->t[chs].size;
    struct broadcast *b = malloc(sizeof(*b) + n * sizeof(b->slots[0]));
    if (b == NULL) {
        fail(r, PROTO_ERR_INTERNAL);
        return;
    }
    b->r = r;
    b->n = n;
    b->remaining = n + 1; /* one for this function: nothing completes the call under it */
    struct engine_pos none = {0, ""};
    /* Every channel is checked before any is published: one too long refuses the call. */
    for (int i = chs + 1, k = 0; (size_t)k < n; k++, i = json_skip(r->t, r->n, i)) {
        struct slot *sl = &b->slots[k];
        sl->pos = none;
        sl->ch = (struct json_span){NULL, 0};
        sl->ns = NULL;
        sl->status = -PROTO_ERR_BAD_REQUEST;
        if (r->t[i].type != JSMN_STRING)
            continue;
        uint8_t *p = r->js + r->t[i].start;
        ssize_t len = json_unescape(p, (size_t)(r->t[i].end - r->t[i].start));
        sl->ch.p = p;
        sl->ch.len = len < 0 ? 0 : (size_t)len;
        if (channel_too_long(sl->ch)) {
            free(b);
            r->status = 400;
            fail(r, PROTO_ERR_BAD_REQUEST);
            return;
        }
        if (!valid_channel(sl->ch))
            continue;
        sl->ns = config_namespace(ctx.config, sl->ch.p, sl->ch.len);
        if (sl->ns == NULL)
            sl->status = -PROTO_ERR_UNKNOWN_CHANNEL;
        else if (sl->ns->max_data_size && data.len > sl->ns->max_data_size) {
            sl->status = -PROTO_ERR_LIMIT_EXCEEDED;
            sl->ns = NULL;
        }
    }
    for (size_t k = 0; k < n; k++) {
        struct slot *sl = &b->slots[k];
        struct broadcast_one *one = sl->ns ? malloc(sizeof(*one)) : NULL;
        if (sl->ns && one == NULL)
            sl->status = -PROTO_ERR_INTERNAL;
        if (one == NULL) {
            b->remaining--;
            continue;
        }
        one->b = b;
        one->i = k;
        hub_publish(sl->ch.p, sl->ch.len, sl->ns, data.p, data.len, NULL, 0, NULL, 0,
                    on_broadcast_one, one);
    }
    if (--b->remaining == 0)
        broadcast_done(b);
}

/* ---- info, channels ---- */

static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

struct store_list {
    struct buf *out;
    unsigned n, down;
};

static void on_store(void *ud, const char *name, const char *down_reason)
{
    struct store_list *sl = ud;
    buf_append_str(sl->out, sl->n++ ? ",{\"name\":" : "{\"name\":");
    buf_append_json_str(sl->out, (const uint8_t *)name, strlen(name));
    buf_appendf(sl->out, ",\"state\":\"%s\"", down_reason ? "down" : "up");
    if (down_reason) {
        sl->down++;
        buf_append_str(sl->out, ",\"reason\":");
        buf_append_json_str(sl->out, (const uint8_t *)down_reason, strlen(down_reason));
    }
    buf_append_char(sl->out, '}');
}

void api_node_info(struct buf *out)
{
    /* Clients before subscriptions: a client that goes meanwhile drops its
     * subscriptions first, so the two never disagree the other way round. */
    uint64_t clients = metrics_sum(METRIC_CLIENTS);
    uint64_t connections = metrics_sum(METRIC_CONNECTIONS);
    uint64_t channels, subs;
    hub_counts(&channels, &subs);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    char host[64] = "herald";
    gethostname(host, sizeof(host) - 1);
    buf_appendf(out, "{\"uid\":\"%s\",\"name\":", ctx.node_uid);
    buf_append_json_str(out, (const uint8_t *)host, strlen(host));
    buf_appendf(out,
                ",\"version\":\"0.1.0\",\"num_clients\":%llu,\"num_users\":%llu,"
                "\"num_channels\":%llu,\"num_subs\":%llu,\"num_connections\":%llu,"
                "\"uptime\":%llu,\"process\":{\"cpu\":%.3f,\"rss\":%ld}",
                (unsigned long long)clients, (unsigned long long)session_num_users(),
                (unsigned long long)channels, (unsigned long long)subs,
                (unsigned long long)connections,
                (unsigned long long)((loop_clock_ms() - ctx.start_ms) / 1000), cpu, rss_bytes());
    /* The stores, as /ready sees them: "engine":{"name","state","shards":[{"name",
     * "state"[,"reason"]}]}, "database":{"name":"postgres","state"[,"reason"]} or null. */
    struct store_list sl = {out, 0, 0};
    buf_append_str(out, ",\"engine\":{\"name\":");
    buf_append_json_str(out, (const uint8_t *)ctx.config->engine, strlen(ctx.config->engine));
    buf_append_str(out, ",\"shards\":[");
    hub_stores(on_store, &sl);
    buf_appendf(out, "],\"state\":\"%s\"},\"database\":", sl.down ? "down" : "up");
    char why[256];
    int feed = ctx.database ? ctx.database(why, sizeof(why)) : -1;
    if (feed < 0) {
        buf_append_str(out, "null}");
        return;
    }
    buf_appendf(out, "{\"name\":\"postgres\",\"state\":\"%s\"", feed ? "up" : "down");
    if (!feed) {
        buf_append_str(out, ",\"reason\":");
        buf_append_json_str(out, (const uint8_t *)why, strlen(why));
    }
    buf_append_str(out, "}}");
}

const char *api_node_uid(void)
{
    return ctx.node_uid;
}

/* This node, fresh, then every other live node as it last announced itself. */
static void on_nodes(void *ud, int status, const struct engine_node *nodes, size_t n)
{
    struct call *r = ud;
    struct buf *out = &r->out;
    buf_append_str(out, "{\"result\":{\"nodes\":[");
    api_node_info(out);
    for (size_t i = 0; status == ENGINE_OK && i < n; i++) {
        if (strcmp(nodes[i].uid, ctx.node_uid) == 0)
            continue;
        buf_append_char(out, ',');
        buf_append(out, nodes[i].info, nodes[i].info_len);
    }
    buf_append_str(out, "]}}");
    finish(r);
}

static void api_info(struct call *r)
{
    hub_nodes(on_nodes, r);
}

struct channel_list {
    struct buf *out;
    int first;
};

static void on_channel(void *ud, const uint8_t *ch, size_t len, uint32_t num_clients)
{
    struct channel_list *l = ud;
    if (!l->first)
        buf_append_char(l->out, ',');
    l->first = 0;
    buf_append_json_str(l->out, ch, len);
    buf_appendf(l->out, ":{\"num_clients\":%u}", num_clients);
}

static void api_channels(struct call *r)
{
    struct json_span pattern = {NULL, 0};
    if (r->n > 0 && get_string(r, 0, "pattern", &pattern) != 0) {
        fail(r, PROTO_ERR_BAD_REQUEST);
        return;
    }
    buf_append_str(&r->out, "{\"result\":{\"channels\":{");
    struct channel_list l = {&r->out, 1};
    hub_channels(pattern.p, pattern.len, on_channel, &l);
    buf_append_str(&r->out, "}}}");
    finish(r);
}

/* ---- history ---- */

static void on_history(void *ud, int status, const struct engine_pos *pos,
                       const struct engine_pub *pubs, size_t n)
{
    struct call *r = ud;
    struct buf *out = &r->out;
    if (status != 0) {
        status_error(r, out, status);
    } else {
        buf_append_str(out, "{\"result\":{\"publications\":[");
        proto_render_publications(out, pubs, n);
        buf_append_str(out, "],");
        proto_render_position(out, pos);
        buf_append_str(out, "}}");
    }
    finish(r);
}

static void api_history(struct call *r)
{
    struct json_span ch, epoch = {NULL, 0};
    int code;
    const struct ns_opts *ns = get_channel_ns(r, &ch, &code);
    if (ns == NULL) {
        fail(r, code);
        return;
    }
    struct engine_history_query q = {0, 0, 0, NULL, 0, 0};
    int i = json_obj_get(r->js, r->t, r->n, 0, "limit");
    if (i >= 0 && json_tok_i64(r->js, &r->t[i], &q.limit) != 0) {
        fail(r, PROTO_ERR_BAD_REQUEST);
        return;
    }
    i = json_obj_get(r->js, r->t, r->n, 0, "reverse");
    if (i >= 0 && json_tok_bool(r->js, &r->t[i], &q.reverse) != 0) {
        fail(r, PROTO_ERR_BAD_REQUEST);
        return;
    }
    i = json_obj_get(r->js, r->t, r->n, 0, "since");
    if (i >= 0 && r->t[i].type == JSMN_OBJECT) {
        q.has_since = 1;
        int o = json_obj_get(r->js, r->t, r->n, i, "offset");
        if ((o >= 0 && json_tok_u64(r->js, &r->t[o], &q.since_offset) != 0) ||
            get_string(r, i, "epoch", &epoch) != 0) {
            fail(r, PROTO_ERR_BAD_REQUEST);
            return;
        }
        q.since_epoch = epoch.p;
        q.since_epoch_len = epoch.len;
    }
    hub_history(ch.p, ch.len, ns, &q, on_history, r);
}

static void on_removed(void *ud, int status)
{
    struct call *r = ud;
    if (status != 0)
        status_error(r, &r->out, status);
    else
        buf_append_str(&r->out, "{\"result\":{}}");
    finish(r);
}

static void api_history_remove(struct call *r)
{
    struct json_span ch;
    if (get_string(r, 0, "channel", &ch) != 0 || !valid_channel(ch)) {
        if (channel_too_long(ch))
            r->status = 400;
        fail(r, PROTO_ERR_BAD_REQUEST);
        return;
    }
    hub_history_remove(ch.p, ch.len, on_removed, r);
}

/* ---- presence ---- */

static void on_presence(void *ud, int status, const struct engine_presence *m, size_t n)
{
    struct call *r = ud;
    if (status != 0) {
        status_error(r, &r->out, status);
    } else {
        buf_append_str(&r->out, "{\"result\":{\"presence\":{");
        proto_render_presence(&r->out, m, n);
        buf_append_str(&r->out, "}}}");
    }
    finish(r);
}

static void on_presence_stats(void *ud, int status, uint64_t clients, uint64_t users)
{
    struct call *r = ud;
    if (status != 0)
        status_error(r, &r->out, status);
    else
        buf_appendf(&r->out, "{\"result\":{\"num_clients\":%llu,\"num_users\":%llu}}",
                    (unsigned long long)clients, (unsigned long long)users);
    finish(r);
}

static void api_presence(struct call *r, int stats)
{
    struct json_span ch;
    int code;
    const struct ns_opts *ns = get_channel_ns(r, &ch, &code);
    if (ns == NULL) {
        fail(r, code);
        return;
    }
    if (stats)
        hub_presence_stats(ch.p, ch.len, ns, on_presence_stats, r);
    else
        hub_presence(ch.p, ch.len, ns, on_presence, r);
}

static void api_presence_members(struct call *r)
{
    api_presence(r, 0);
}

static void api_presence_stats(struct call *r)
{
    api_presence(r, 1);
}

/* ---- a user's connections ---- */

static void api_user_control(struct call *r, enum session_control kind)
{
    struct json_span user, ch = {NULL, 0}, reason = {NULL, 0};
    uint64_t code = PROTO_DISC_FORCE_NO_RECONNECT;
    if (get_string(r, 0, "user", &user) != 0 || user.p == NULL) {
        fail(r, PROTO_ERR_BAD_REQUEST);
        return;
    }
    if (kind != SESSION_DISCONNECT) {
        if (get_string(r, 0, "channel", &ch) != 0 || !valid_channel(ch)) {
            if (channel_too_long(ch))
                r->status = 400;
            fail(r, PROTO_ERR_BAD_REQUEST);
            return;
        }
        if (kind == SESSION_SUBSCRIBE && config_namespace(ctx.config, ch.p, ch.len) == NULL) {
            fail(r, PROTO_ERR_UNKNOWN_CHANNEL);
            return;
        }
    } else {
        int d = json_obj_get(r->js, r->t, r->n, 0, "disconnect");
        if (d >= 0 && r->t[d].type == JSMN_OBJECT) {
            int c = json_obj_get(r->js, r->t, r->n, d, "code");
            if ((c >= 0 &&
                 (json_tok_u64(r->js, &r->t[c], &code) != 0 || code < 3000 || code > 4999)) ||
                get_string(r, d, "reason", &reason) != 0 || reason.len > 120) {
                fail(r, PROTO_ERR_BAD_REQUEST);
                return;
            }
        }
    }
    if (memchr(user.p, 0, user.len) || (ch.p && memchr(ch.p, 0, ch.len)) ||
        (reason.p && memchr(reason.p, 0, reason.len))) {
        fail(r, PROTO_ERR_BAD_REQUEST);
        return;
    }
    static const char default_reason[] = "force disconnect";
    if (reason.p == NULL) {
        reason.p = (const uint8_t *)default_reason;
        reason.len = sizeof(default_reason) - 1;
    }
    struct buf msg = BUF_INIT;
    if (session_control_encode(&msg, kind, user.p, user.len, ch.p, ch.len, (unsigned)code,
                               reason.p, reason.len) != 0) {
        buf_free(&msg);
        fail(r, PROTO_ERR_BAD_REQUEST);
        return;
    }
    hub_control(msg.p, msg.len); /* every node, this one included */
    buf_free(&msg);
    buf_append_str(&r->out, "{\"result\":{}}");
    finish(r);
}

static void api_subscribe(struct call *r)
{
    api_user_control(r, SESSION_SUBSCRIBE);
}

static void api_unsubscribe(struct call *r)
{
    api_user_control(r, SESSION_UNSUBSCRIBE);
}

static void api_disconnect(struct call *r)
{
    api_user_control(r, SESSION_DISCONNECT);
}

/* ---- batch ---- */

/* Commands one batch may carry: each holds a reply until the last is answered. */
#define BATCH_MAX 1000

/* One command of a batch: its reply, once answered. */
struct batch_item {
    struct batch *b;
    struct buf out;
    char name[16];
};

/* Centrifugo's batch: {"commands": [{"publish": {...}}, {"broadcast": {...}}, ...]}, answered
 * {"replies": [{"publish": {...}}, {"error": {...}}, ...]} in the order of the commands.
 * Each command runs as the method would alone (its body a copy of its object); they are
 * all issued at once, in order, so on Redis they share the round trips and a channel's
 * publications keep their order. */
struct batch {
    struct call *r;
    size_t n, left;
    size_t bytes; /* of the replies kept: bounded by client_queue_max (the first is kept) */
    struct batch_item items[];
};

static void batch_finish(struct batch *b)
{
    struct call *r = b->r;
    buf_append_str(&r->out, "{\"replies\":[");
    for (size_t i = 0; i < b->n; i++) {
        if (i)
            buf_append_char(&r->out, ',');
        buf_append(&r->out, b->items[i].out.p, b->items[i].out.len);
        buf_free(&b->items[i].out);
    }
    buf_append_str(&r->out, "]}");
    free(b);
    finish(r);
}

/* A command's answer: {"result": X} becomes {"<method>": X}; an error object stays. */
static void on_batch_reply(void *ud, int status, const uint8_t *body, size_t len)
{
    struct batch_item *it = ud;
    static const char result[] = "{\"result\":";
    size_t rl = sizeof(result) - 1;
    /* Replies wait for the last one: a batch of large answers (1,000 history calls) would
     * hold a thousand times what one call may. Past the bound, error 106 in their place. */
    if (it->b->bytes && it->b->bytes + len > ctx.config->client_queue_max) {
        error(&it->out, PROTO_ERR_LIMIT_EXCEEDED);
    } else if (len > rl + 1 && memcmp(body, result, rl) == 0 && body[len - 1] == '}') {
        buf_appendf(&it->out, "{\"%s\":", it->name);
        buf_append(&it->out, body + rl, len - rl);
    } else if (len > 0 && body[0] == '{') {
        buf_append(&it->out, body, len);
    } else {
        error(&it->out, PROTO_ERR_INTERNAL);
    }
    it->b->bytes += it->out.len;
    if (--it->b->left == 0)
        batch_finish(it->b);
}

static void api_batch(struct call *r)
{
    int cmds = json_obj_get(r->js, r->t, r->n, 0, "commands");
    if (cmds < 0 || r->t[cmds].type != JSMN_ARRAY || r->t[cmds].size > BATCH_MAX) {
        fail(r, r->t && cmds >= 0 && r->t[cmds].type == JSMN_ARRAY ? PROTO_ERR_LIMIT_EXCEEDED
                                                                    : PROTO_ERR_BAD_REQUEST);
        return;
    }
    size_t n = (size_t)r->t[cmds].size;
    struct batch *b = calloc(1, sizeof(*b) + n * sizeof(b->items[0]));
    if (b == NULL) {
        fail(r, PROTO_ERR_INTERNAL);
        return;
    }
    b->r = r;
    b->n = n;
    b->left = n + 1; /* the loop below holds one: answers may come before it ends */
    for (int i = cmds + 1, k = 0; (size_t)k < n; k++, i = json_skip(r->t, r->n, i)) {
        struct batch_item *it = &b->items[k];
        it->b = b;
        it->out = (struct buf)BUF_INIT;
        const jsmntok_t *c = &r->t[i];
        /* One member, the method, whose value is its request object. */
        if (c->type != JSMN_OBJECT || c->size != 1 || r->t[i + 1].type != JSMN_STRING ||
            r->t[i + 2].type != JSMN_OBJECT) {
            error(&it->out, PROTO_ERR_BAD_REQUEST);
            b->left--;
            continue;
        }
        struct json_span name = json_tok_span(r->js, &r->t[i + 1]);
        if (!api_method_known(name.p, name.len) ||
            (name.len == 5 && memcmp(name.p, "batch", 5) == 0)) {
            error(&it->out, PROTO_ERR_METHOD_NOT_FOUND);
            b->left--;
            continue;
        }
        memcpy(it->name, name.p, name.len); /* a known method's name: short */
        struct json_span req = json_tok_raw(r->js, &r->t[i + 2]);
        uint8_t *copy = malloc(req.len ? req.len : 1);
        if (copy == NULL) {
            error(&it->out, PROTO_ERR_INTERNAL);
            b->left--;
            continue;
        }
        memcpy(copy, req.p, req.len);
        api_handle(name.p, name.len, copy, req.len, on_batch_reply, it);
        free(copy); /* borrowed for the call only */
    }
    if (--b->left == 0)
        batch_finish(b);
}

/* ---- dispatch ---- */

static const struct method {
    const char *name;
    void (*handle)(struct call *r);
    int body_optional; /* an empty body means {} */
} methods[] = {
    {"publish", api_publish, 0},
    {"broadcast", api_broadcast, 0},
    {"info", api_info, 1},
    {"channels", api_channels, 1},
    {"history", api_history, 0},
    {"history_remove", api_history_remove, 0},
    {"subscribe", api_subscribe, 0},
    {"unsubscribe", api_unsubscribe, 0},
    {"disconnect", api_disconnect, 0},
    {"presence", api_presence_members, 0},
    {"presence_stats", api_presence_stats, 0},
    {"batch", api_batch, 0},
};

static const struct method *find_method(const uint8_t *name, size_t name_len)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (strlen(methods[i].name) == name_len && memcmp(methods[i].name, name, name_len) == 0)
            return &methods[i];
    }
    return NULL;
}

int api_method_known(const uint8_t *name, size_t name_len)
{
    return find_method(name, name_len) != NULL;
}

void api_handle(const uint8_t *name, size_t name_len, uint8_t *body, size_t body_len,
                api_done_cb done, void *ud)
{
    struct call *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        answer_oom(done, ud);
        return;
    }
    r->js = body;
    r->status = 200;
    r->done = done;
    r->ud = ud;
    const struct method *m = find_method(name, name_len);
    if (m == NULL) {
        r->status = 404;
        fail(r, PROTO_ERR_METHOD_NOT_FOUND);
        return;
    }
    int empty = 1;
    for (size_t i = 0; i < body_len && empty; i++)
        if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' && body[i] != '\n')
            empty = 0;
    if (empty && !m->body_optional) {
        fail(r, PROTO_ERR_BAD_REQUEST);
        return;
    }
    if (!empty) {
        /* RFC 8259 section 8.1: JSON text exchanged between systems is UTF-8. Checked on
         * the whole body, so that nothing taken from it (data, channel, user, reason)
         * reaches a client's text frame invalid (RFC 6455 section 8.1 would fail it). */
        if (!ws_utf8_valid(body, body_len)) {
            r->status = 400;
            fail(r, PROTO_ERR_BAD_REQUEST);
            return;
        }
        /* jsmn needs at most one token per two bytes of input, plus the root. */
        size_t ntok = body_len / 2 + 16;
        if (ntok > API_MAX_TOKENS)
            ntok = API_MAX_TOKENS;
        r->t = malloc(ntok * sizeof(jsmntok_t));
        if (r->t == NULL) {
            fail(r, PROTO_ERR_INTERNAL);
            return;
        }
        r->n = json_tokenize(body, body_len, r->t, (unsigned)ntok);
        if (r->n <= 0 || r->t[0].type != JSMN_OBJECT) {
            /* Not a JSON object (malformed, nested deeper than JSON_MAX_DEPTH, too
             * many tokens): the body cannot be decoded, as Centrifugo answers 400. */
            r->status = 400;
            fail(r, PROTO_ERR_BAD_REQUEST);
            return;
        }
    }
    m->handle(r);
}
