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
/* Tokens of a body this small are on the stack (an API publish needs a dozen). */
#define API_STACK_TOKENS 256
/* The token array of a larger body stays with its thread for the next one, up to this
 * many tokens (320 KB): at the bound of one token per two bytes, a batch of 100
 * publishes asks for 170 KB, which glibc maps and unmaps for every request (the mmap
 * threshold grows only to the size freed, so the next request of that size maps again)
 * and whose pages fault in each time. */
#define API_KEEP_TOKENS 16384

static struct api_context ctx;

static _Thread_local struct {
    jsmntok_t *t;
    size_t cap;
} kept;

void api_init(const struct api_context *c)
{
    ctx = *c;
}

/* Room for n tokens: the thread's kept array when it is large enough (taken, so that a
 * nested call would not share it), else a new one. *cap: its size. */
static jsmntok_t *tokens_take(size_t n, size_t *cap)
{
    if (kept.t != NULL && kept.cap >= n) {
        jsmntok_t *t = kept.t;
        *cap = kept.cap;
        kept.t = NULL;
        kept.cap = 0;
        return t;
    }
    *cap = n;
    return malloc(n * sizeof(jsmntok_t));
}

/* Done with t: kept when it is the largest so far within API_KEEP_TOKENS, else freed. */
static void tokens_give(jsmntok_t *t, size_t cap)
{
    if (cap > API_KEEP_TOKENS || (kept.t != NULL && kept.cap >= cap)) {
        free(t);
        return;
    }
    free(kept.t);
    kept.t = t;
    kept.cap = cap;
}

void api_loop_exit(void)
{
    free(kept.t);
    kept.t = NULL;
    kept.cap = 0;
}

/* One API call: its parsed body and its answer. The body and its tokens are borrowed
 * for the handler's synchronous part only: a handler takes from them what it needs
 * before it asks the hub or the engine anything. */
struct call {
    uint8_t *js;
    jsmntok_t *t;
    int n;
    struct buf out;
    int status;
    uint8_t in_batch; /* a batch_item's own: not freed alone */
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

/* Hand the answer over; r is gone after it (a batch's command may end the batch). */
static void finish_with(struct call *r, const uint8_t *body, size_t len)
{
    struct buf out = r->out;
    api_done_cb done = r->done;
    void *ud = r->ud;
    int status = r->status;
    if (!r->in_batch)
        free(r);
    if (out.oom)
        answer_oom(done, ud);
    else
        done(ud, status, body ? body : out.p, body ? len : out.len);
    buf_free(&out);
}

static void finish(struct call *r)
{
    finish_with(r, NULL, 0);
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

static char *put_u64(char *o, uint64_t v)
{
    char d[20];
    int n = 0;
    do
        d[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0)
        *o++ = d[--n];
    return o;
}

static void on_published(void *ud, int status, const struct engine_pos *pos)
{
    struct call *r = ud;
    if (status != 0) {
        publish_result(r, &r->out, status, pos);
        finish(r);
        return;
    }
    /* The answer of every publish: from the stack, as publish_result writes it. */
    static const char empty[] = "{\"result\":{}}";
    char body[64 + ENGINE_EPOCH_LEN];
    char *o = body;
    if (pos->epoch[0]) {
        size_t el = strnlen(pos->epoch, ENGINE_EPOCH_LEN);
        memcpy(o, "{\"result\":{\"offset\":", 20);
        o = put_u64(o + 20, pos->offset);
        memcpy(o, ",\"epoch\":\"", 10);
        memcpy(o + 10, pos->epoch, el);
        memcpy(o + 10 + el, "\"}}", 3);
        o += 13 + el;
    } else {
        memcpy(o, empty, sizeof(empty) - 1);
        o += sizeof(empty) - 1;
    }
    finish_with(r, (const uint8_t *)body, (size_t)(o - body));
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

/* Every node's channels, their subscribers summed (Centrifugo's shape). */
static void on_channels(void *ud, int status, const struct hub_channel_count *chs, size_t n)
{
    struct call *r = ud;
    if (status != 0) {
        /* Redis down: 503 with a temporary error, as for a publish */
        status_error(r, &r->out, status == -1 ? ENGINE_ERR_INTERNAL : status);
        finish(r);
        return;
    }
    buf_append_str(&r->out, "{\"result\":{\"channels\":{");
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_append_char(&r->out, ',');
        buf_append_json_str(&r->out, chs[i].name, chs[i].len);
        buf_append_str(&r->out, ":{\"num_clients\":");
        buf_append_u64(&r->out, chs[i].num_clients);
        buf_append_char(&r->out, '}');
    }
    buf_append_str(&r->out, "}}}");
    finish(r);
}

static void api_channels(struct call *r)
{
    struct json_span pattern = {NULL, 0};
    if (r->n > 0 && get_string(r, 0, "pattern", &pattern) != 0) {
        fail(r, PROTO_ERR_BAD_REQUEST);
        return;
    }
    hub_channels_all(pattern.p, pattern.len, on_channels, r);
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

/* One command of a batch: its call, and its reply while one before it is unanswered. */
struct batch_item {
    struct batch *b;
    struct call call;
    struct buf out;
    uint8_t answered;
    char name[16];
};

/* Centrifugo's batch: {"commands": [{"publish": {...}}, {"broadcast": {...}}, ...]}, answered
 * {"replies": [{"publish": {...}}, {"error": {...}}, ...]} in the order of the commands.
 * Each command runs as the method would alone, on its object in the batch's body and
 * tokens (checked once for the whole body: UTF-8, JSON, nesting); they are all issued at
 * once, in order, so on Redis they share the round trips and a channel's publications
 * keep their order. A reply goes into the answer as it comes when those before it are
 * there (always, with the memory engine); a reply that comes early waits in its item. */
struct batch {
    struct call *r;
    size_t n, left;
    size_t next;  /* the first command whose reply is not in the answer yet */
    size_t bytes; /* of the replies kept: bounded by client_queue_max (the first is kept) */
    struct batch_item items[];
};

struct method {
    const char *name;
    void (*handle)(struct call *r);
    int body_optional; /* an empty body means {} */
};

static const struct method *find_method(const uint8_t *name, size_t name_len);

static void batch_finish(struct batch *b)
{
    struct call *r = b->r;
    buf_append_str(&r->out, "]}");
    free(b);
    finish(r);
}

/* Item k's reply is in its out: into the answer with those after it that wait. */
static void batch_advance(struct batch *b)
{
    struct buf *out = &b->r->out;
    while (b->next < b->n && b->items[b->next].answered) {
        struct batch_item *it = &b->items[b->next];
        if (b->next)
            buf_append_char(out, ',');
        buf_append(out, it->out.p, it->out.len);
        buf_free(&it->out);
        b->next++;
    }
}

/* A command's reply ({"<name>": reply with a name): into the answer now when it is next,
 * else kept in its item. counted: an answer of the command's call, which the bound on
 * the replies kept counts. */
static void batch_reply(struct batch_item *it, const uint8_t *reply, size_t len,
                        const char *name, int counted)
{
    struct batch *b = it->b;
    size_t k = (size_t)(it - b->items);
    struct buf *to = k == b->next ? &b->r->out : &it->out;
    if (k == b->next && k > 0)
        buf_append_char(to, ',');
    size_t before = to->len;
    if (name) {
        buf_append_str(to, "{\"");
        buf_append_str(to, name);
        buf_append_str(to, "\":");
    }
    buf_append(to, reply, len);
    if (counted)
        b->bytes += to->len - before;
    it->answered = 1;
    if (k == b->next) {
        b->next++;
        batch_advance(b);
    }
    if (--b->left == 0)
        batch_finish(b);
}

static void batch_error(struct batch_item *it, int code, int counted)
{
    char body[160];
    int n = snprintf(body, sizeof(body), "{\"error\":{\"code\":%d,\"message\":\"%s\"}}", code,
                     proto_error_message(code));
    batch_reply(it, (const uint8_t *)body, (size_t)n, NULL, counted);
}

/* A command's answer: {"result": X} becomes {"<method>": X}; an error object stays. */
static void on_batch_reply(void *ud, int status, const uint8_t *body, size_t len)
{
    struct batch_item *it = ud;
    static const char result[] = "{\"result\":";
    size_t rl = sizeof(result) - 1;
    /* Replies wait for the last one: a batch of large answers (1,000 history calls) would
     * hold a thousand times what one call may. Past the bound, error 106 in their place. */
    if (it->b->bytes && it->b->bytes + len > ctx.config->client_queue_max)
        batch_error(it, PROTO_ERR_LIMIT_EXCEEDED, 1);
    else if (len > rl + 1 && memcmp(body, result, rl) == 0 && body[len - 1] == '}')
        batch_reply(it, body + rl, len - rl, it->name, 1);
    else if (len > 0 && body[0] == '{')
        batch_reply(it, body, len, NULL, 1);
    else
        batch_error(it, PROTO_ERR_INTERNAL, 1);
}

/* How many commands ahead a batch starts loading the route of a publication's channel:
 * per-user publications each find theirs cold, and the publish before them gives the
 * load time to land. */
#define BATCH_AHEAD 2

/* Is token i a batch's command, one member (the method, *name) whose value is its
 * request object (token i + 2)? */
static int batch_command(const struct call *r, int i, struct json_span *name)
{
    const jsmntok_t *c = &r->t[i];
    if (c->type != JSMN_OBJECT || c->size != 1 || r->t[i + 1].type != JSMN_STRING ||
        r->t[i + 2].type != JSMN_OBJECT)
        return 0;
    *name = json_tok_span(r->js, &r->t[i + 1]);
    return 1;
}

/* If token i is {"publish": {... "channel": "<name>" ...}} with a name that needs no
 * unescaping, hint the hub at it. */
static void batch_prefetch(const struct call *r, int i)
{
    struct json_span name;
    if (!batch_command(r, i, &name) || name.len != 7 || memcmp(name.p, "publish", 7) != 0)
        return;
    int k = json_obj_get(r->js, r->t, r->n, i + 2, "channel");
    if (k < 0 || r->t[k].type != JSMN_STRING)
        return;
    struct json_span ch = json_tok_span(r->js, &r->t[k]);
    if (ch.len > 0 && memchr(ch.p, '\\', ch.len) == NULL)
        hub_prefetch(ch.p, ch.len);
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
    buf_append_str(&r->out, "{\"replies\":[");
    int ahead = cmds + 1; /* command k + BATCH_AHEAD, once k reaches 0 */
    for (size_t k = 0; k < BATCH_AHEAD && k < n; k++) {
        batch_prefetch(r, ahead);
        ahead = json_skip(r->t, r->n, ahead);
    }
    for (int i = cmds + 1, k = 0; (size_t)k < n; k++, i = json_skip(r->t, r->n, i)) {
        if ((size_t)k + BATCH_AHEAD < n) {
            batch_prefetch(r, ahead);
            ahead = json_skip(r->t, r->n, ahead);
        }
        struct batch_item *it = &b->items[k];
        it->b = b;
        it->out = (struct buf)BUF_INIT;
        struct json_span name;
        if (!batch_command(r, i, &name)) {
            batch_error(it, PROTO_ERR_BAD_REQUEST, 0);
            continue;
        }
        const struct method *m = find_method(name.p, name.len);
        if (m == NULL || (name.len == 5 && memcmp(name.p, "batch", 5) == 0)) {
            batch_error(it, PROTO_ERR_METHOD_NOT_FOUND, 0);
            continue;
        }
        memcpy(it->name, name.p, name.len); /* a known method's name: short */
        /* The command's object is token 0 of its own span of the batch's tokens. */
        struct call *sub = &it->call;
        sub->js = r->js;
        sub->t = &r->t[i + 2];
        sub->n = json_skip(r->t, r->n, i + 2) - (i + 2);
        sub->out = (struct buf)BUF_INIT;
        sub->status = 200;
        sub->in_batch = 1;
        sub->done = on_batch_reply;
        sub->ud = it;
        m->handle(sub);
    }
    if (--b->left == 0)
        batch_finish(b);
}

/* ---- dispatch ---- */

static const struct method methods[] = {
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
    jsmntok_t small[API_STACK_TOKENS], *t = NULL;
    size_t cap = 0;
    if (!empty) {
        /* RFC 8259 section 8.1: JSON text exchanged between systems is UTF-8. Checked on
         * the whole body, so that nothing taken from it (data, channel, user, reason)
         * reaches a client's text frame invalid (RFC 6455 section 8.1 would fail it). */
        if (!ws_utf8_valid(body, body_len)) {
            r->status = 400;
            fail(r, PROTO_ERR_BAD_REQUEST);
            return;
        }
        /* JSON holds at most one token per two bytes of input, plus the root. */
        size_t ntok = body_len / 2 + 16;
        if (ntok > API_MAX_TOKENS)
            ntok = API_MAX_TOKENS;
        t = ntok <= API_STACK_TOKENS ? small : tokens_take(ntok, &cap);
        if (t == NULL) {
            fail(r, PROTO_ERR_INTERNAL);
            return;
        }
        r->t = t;
        r->n = json_tokenize(body, body_len, t, (unsigned)ntok);
        if (r->n <= 0 || t[0].type != JSMN_OBJECT) {
            /* Not a JSON object (malformed, nested deeper than JSON_MAX_DEPTH, too
             * many tokens): the body cannot be decoded, as Centrifugo answers 400. */
            r->status = 400;
            fail(r, PROTO_ERR_BAD_REQUEST);
            if (t != small)
                tokens_give(t, cap);
            return;
        }
    }
    m->handle(r); /* r may be gone already: the tokens are this function's */
    if (t != NULL && t != small)
        tokens_give(t, cap);
}
