/* Server API handlers (see api.h): same request and reply shapes as Centrifugo's
 * HTTP API, so its server SDKs work with herald. `data` is passed byte for byte. */
#include "http/api.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/frame.h"
#include "core/json.h"
#include "engine/engine.h"
#include "hub/hub.h"
#include "net/loop.h"
#include "proto/command.h"
#include "proto/session.h"
#include "ws/utf8.h"

#define API_MAX_TOKENS 65536

struct req {
    uint8_t *js;
    jsmntok_t *t;
    int n;
    const struct config *cfg;
    struct loop *loop;
};

static void error(struct buf *out, int code, const char *message)
{
    buf_appendf(out, "{\"error\":{\"code\":%d,\"message\":\"%s\"}}", code, message);
}

/* A string member, unescaped in place; NULL span when absent or not a string. */
static int get_string(struct req *r, int obj, const char *key, struct json_span *out)
{
    out->p = NULL;
    out->len = 0;
    int i = json_obj_get(r->js, r->t, r->n, obj, key);
    if (i < 0)
        return 0;
    if (r->t[i].type != JSMN_STRING)
        return -1;
    uint8_t *p = r->js + r->t[i].start;
    ssize_t len = json_unescape(p, (size_t)(r->t[i].end - r->t[i].start));
    if (len < 0)
        return -1;
    out->p = p;
    out->len = (size_t)len;
    return 0;
}

static int valid_channel(struct json_span ch)
{
    if (ch.len == 0 || ch.len > PROTO_MAX_CHANNEL)
        return 0;
    for (size_t i = 0; i < ch.len; i++)
        if (ch.p[i] < 0x20)
            return 0;
    return 1;
}

/* The "channel" member and its namespace; NULL after answering 107 or 102. */
static const struct ns_opts *get_channel_ns(struct req *r, struct buf *out, struct json_span *ch)
{
    if (get_string(r, 0, "channel", ch) != 0 || !valid_channel(*ch)) {
        error(out, 107, "bad request");
        return NULL;
    }
    const struct ns_opts *ns = config_namespace(r->cfg, ch->p, ch->len);
    if (ns == NULL)
        error(out, 102, "unknown channel");
    return ns;
}

/* Publish data on one channel, appending {"result":...} or {"error":...}. */
static void publish_one(struct req *r, struct json_span ch, struct json_span data, struct buf *out)
{
    if (!valid_channel(ch)) {
        error(out, 107, "bad request");
        return;
    }
    const struct ns_opts *ns = config_namespace(r->cfg, ch.p, ch.len);
    if (ns == NULL) {
        error(out, 102, "unknown channel");
        return;
    }
    struct hub_stream_pos pos;
    int rc = engine_current->ops->publish(engine_current, ch.p, ch.len, ns, data.p, data.len, NULL,
                                          0, &pos);
    if (rc == HUB_LIMIT)
        error(out, 106, "limit exceeded");
    else if (rc < 0)
        error(out, 100, "internal server error");
    else if (rc == 1)
        buf_appendf(out, "{\"result\":{\"offset\":%llu,\"epoch\":\"%s\"}}",
                    (unsigned long long)pos.offset, pos.epoch);
    else
        buf_append_str(out, "{\"result\":{}}");
}

static int get_data(struct req *r, struct json_span *data)
{
    int i = json_obj_get(r->js, r->t, r->n, 0, "data");
    if (i < 0)
        return -1;
    *data = json_tok_raw(r->js, &r->t[i]);
    return 0;
}

static void api_publish(struct req *r, struct buf *out)
{
    struct json_span ch, data;
    if (get_string(r, 0, "channel", &ch) != 0 || ch.p == NULL || get_data(r, &data) != 0) {
        error(out, 107, "bad request");
        return;
    }
    publish_one(r, ch, data, out);
}

static void api_broadcast(struct req *r, struct buf *out)
{
    struct json_span data;
    int chs = json_obj_get(r->js, r->t, r->n, 0, "channels");
    if (chs < 0 || r->t[chs].type != JSMN_ARRAY || get_data(r, &data) != 0) {
        error(out, 107, "bad request");
        return;
    }
    buf_append_str(out, "{\"result\":{\"responses\":[");
    int first = 1;
    for (int i = chs + 1, k = 0; k < r->t[chs].size; k++, i = json_skip(r->t, r->n, i)) {
        if (!first)
            buf_append_char(out, ',');
        first = 0;
        if (r->t[i].type != JSMN_STRING) {
            error(out, 107, "bad request");
            continue;
        }
        uint8_t *p = r->js + r->t[i].start;
        ssize_t len = json_unescape(p, (size_t)(r->t[i].end - r->t[i].start));
        struct json_span ch = {p, len < 0 ? 0 : (size_t)len};
        publish_one(r, ch, data, out);
    }
    buf_append_str(out, "]}}");
}

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

static void api_info(struct req *r, struct buf *out)
{
    struct server *s = r->loop->server;
    uint64_t clients = 0, conns = 0, channels, subs;
    for (unsigned i = 0; i < s->nloops; i++) {
        clients += atomic_load_explicit(&s->loops[i]->stats.clients, memory_order_relaxed);
        conns += atomic_load_explicit(&s->loops[i]->stats.connections, memory_order_relaxed);
    }
    hub_counts(&channels, &subs);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    char host[64] = "herald";
    gethostname(host, sizeof(host) - 1);
    buf_appendf(out, "{\"result\":{\"nodes\":[{\"uid\":\"%s\",\"name\":", s->node_uid);
    buf_append_json_str(out, (const uint8_t *)host, strlen(host));
    buf_appendf(out,
                ",\"version\":\"0.1.0\",\"num_clients\":%llu,\"num_users\":%llu,"
                "\"num_channels\":%llu,\"num_subs\":%llu,\"num_connections\":%llu,"
                "\"uptime\":%llu,\"process\":{\"cpu\":%.3f,\"rss\":%ld}}]}}",
                (unsigned long long)clients, (unsigned long long)session_num_users(),
                (unsigned long long)channels, (unsigned long long)subs, (unsigned long long)conns,
                (unsigned long long)((server_now_ms() - s->start_ms) / 1000), cpu, rss_bytes());
}

static void api_channels(struct req *r, struct buf *out)
{
    struct json_span pattern = {NULL, 0};
    if (r->n > 0 && get_string(r, 0, "pattern", &pattern) != 0) {
        error(out, 107, "bad request");
        return;
    }
    buf_append_str(out, "{\"result\":{\"channels\":{");
    hub_channels_json(out, pattern.p, pattern.len);
    buf_append_str(out, "}}}");
}

static void api_history(struct req *r, struct buf *out)
{
    struct json_span ch, epoch = {NULL, 0};
    const struct ns_opts *ns = get_channel_ns(r, out, &ch);
    if (ns == NULL)
        return;
    int64_t limit = 0;
    int reverse = 0, has_since = 0;
    uint64_t since = 0;
    int i = json_obj_get(r->js, r->t, r->n, 0, "limit");
    if (i >= 0 && json_tok_i64(r->js, &r->t[i], &limit) != 0) {
        error(out, 107, "bad request");
        return;
    }
    i = json_obj_get(r->js, r->t, r->n, 0, "reverse");
    if (i >= 0 && json_tok_bool(r->js, &r->t[i], &reverse) != 0) {
        error(out, 107, "bad request");
        return;
    }
    i = json_obj_get(r->js, r->t, r->n, 0, "since");
    if (i >= 0 && r->t[i].type == JSMN_OBJECT) {
        has_since = 1;
        int o = json_obj_get(r->js, r->t, r->n, i, "offset");
        if ((o >= 0 && json_tok_u64(r->js, &r->t[o], &since) != 0) ||
            get_string(r, i, "epoch", &epoch) != 0) {
            error(out, 107, "bad request");
            return;
        }
    }
    struct buf pubs = BUF_INIT;
    struct hub_stream_pos pos;
    int rc = engine_current->ops->history(engine_current, ch.p, ch.len, ns, limit, has_since, since,
                                          epoch.p, epoch.len, reverse, &pubs, &pos);
    if (rc == -108)
        error(out, 108, "not available");
    else if (rc == -112)
        error(out, 112, "unrecoverable position");
    else if (rc == -106)
        error(out, 106, "limit exceeded");
    else if (rc < 0)
        error(out, 100, "internal server error");
    else {
        buf_append_str(out, "{\"result\":{\"publications\":[");
        buf_append(out, pubs.p, pubs.len);
        buf_appendf(out, "],\"epoch\":\"%s\",\"offset\":%llu}}", pos.epoch,
                    (unsigned long long)pos.offset);
    }
    buf_free(&pubs);
}

static void api_history_remove(struct req *r, struct buf *out)
{
    struct json_span ch;
    if (get_string(r, 0, "channel", &ch) != 0 || !valid_channel(ch)) {
        error(out, 107, "bad request");
        return;
    }
    engine_current->ops->history_remove(engine_current, ch.p, ch.len);
    buf_append_str(out, "{\"result\":{}}");
}

static void api_presence(struct req *r, struct buf *out, int stats)
{
    struct json_span ch;
    const struct ns_opts *ns = get_channel_ns(r, out, &ch);
    if (ns == NULL)
        return;
    struct buf members = BUF_INIT;
    uint64_t clients, users;
    if (engine_current->ops->presence(engine_current, ch.p, ch.len, ns, stats ? NULL : &members,
                                      &clients, &users) != 0) {
        error(out, 108, "not available");
    } else if (stats) {
        buf_appendf(out, "{\"result\":{\"num_clients\":%llu,\"num_users\":%llu}}",
                    (unsigned long long)clients, (unsigned long long)users);
    } else {
        buf_append_str(out, "{\"result\":{\"presence\":{");
        buf_append(out, members.p, members.len);
        buf_append_str(out, "}}}");
    }
    buf_free(&members);
}

/* subscribe / unsubscribe / disconnect a user on every loop. */
static void api_user_control(struct req *r, struct buf *out, enum loop_msg_type type)
{
    struct json_span user, ch = {NULL, 0}, reason = {NULL, 0};
    uint64_t code = 3503;
    if (get_string(r, 0, "user", &user) != 0 || user.p == NULL) {
        error(out, 107, "bad request");
        return;
    }
    if (type != LOOP_MSG_DISCONNECT) {
        if (get_string(r, 0, "channel", &ch) != 0 || !valid_channel(ch)) {
            error(out, 107, "bad request");
            return;
        }
        if (type == LOOP_MSG_SUBSCRIBE && config_namespace(r->cfg, ch.p, ch.len) == NULL) {
            error(out, 102, "unknown channel");
            return;
        }
    } else {
        int d = json_obj_get(r->js, r->t, r->n, 0, "disconnect");
        if (d >= 0 && r->t[d].type == JSMN_OBJECT) {
            int c = json_obj_get(r->js, r->t, r->n, d, "code");
            if ((c >= 0 &&
                 (json_tok_u64(r->js, &r->t[c], &code) != 0 || code < 3000 || code > 4999)) ||
                get_string(r, d, "reason", &reason) != 0 || reason.len > 120) {
                error(out, 107, "bad request");
                return;
            }
        }
    }
    if (memchr(user.p, 0, user.len) || (ch.p && memchr(ch.p, 0, ch.len)) ||
        (reason.p && memchr(reason.p, 0, reason.len))) {
        error(out, 107, "bad request");
        return;
    }
    const char *default_reason = "force disconnect";
    if (reason.p == NULL) {
        reason.p = (const uint8_t *)default_reason;
        reason.len = strlen(default_reason);
    }
    struct server *s = r->loop->server;
    for (unsigned i = 0; i < s->nloops; i++) {
        struct frame *f = frame_new(user.len + ch.len + reason.len + 3);
        if (f == NULL)
            break;
        uint8_t *w = f->data;
        memcpy(w, user.p, user.len);
        w += user.len;
        *w++ = 0;
        if (ch.len)
            memcpy(w, ch.p, ch.len);
        w += ch.len;
        *w++ = 0;
        memcpy(w, reason.p, reason.len);
        w += reason.len;
        *w++ = 0;
        f->len = (uint32_t)(w - f->data);
        struct loop_msg m = {type, (uint32_t)code, 0, f};
        if (loop_post(s->loops[i], &m) != 0)
            frame_unref(f);
    }
    buf_append_str(out, "{\"result\":{}}");
}

static void api_subscribe(struct req *r, struct buf *out)
{
    api_user_control(r, out, LOOP_MSG_SUBSCRIBE);
}

static void api_unsubscribe(struct req *r, struct buf *out)
{
    api_user_control(r, out, LOOP_MSG_UNSUBSCRIBE);
}

static void api_disconnect(struct req *r, struct buf *out)
{
    api_user_control(r, out, LOOP_MSG_DISCONNECT);
}

static void api_presence_members(struct req *r, struct buf *out)
{
    api_presence(r, out, 0);
}

static void api_presence_stats(struct req *r, struct buf *out)
{
    api_presence(r, out, 1);
}

static const struct method {
    const char *name;
    void (*handle)(struct req *r, struct buf *out);
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

int api_handle(struct loop *loop, const uint8_t *name, size_t name_len, uint8_t *body,
               size_t body_len, struct buf *out)
{
    const struct method *m = find_method(name, name_len);
    if (m == NULL) {
        error(out, 104, "method not found");
        return 404;
    }
    struct req r = {body, NULL, 0, loop->server->config, loop};
    int empty = 1;
    for (size_t i = 0; i < body_len && empty; i++)
        if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' && body[i] != '\n')
            empty = 0;
    if (empty && !m->body_optional) {
        error(out, 107, "bad request");
        return 200;
    }
    /* RFC 8259 section 8.1: JSON text exchanged between systems is UTF-8. Checked on
     * the whole body, so that nothing taken from it (data, channel, user, reason)
     * reaches a client's text frame invalid (RFC 6455 section 8.1 would fail it). */
    if (!empty && !ws_utf8_valid(body, body_len)) {
        error(out, 107, "bad request: invalid UTF-8");
        return 400;
    }
    if (!empty) {
        /* jsmn needs at most one token per two bytes of input, plus the root. */
        size_t ntok = body_len / 2 + 16;
        if (ntok > API_MAX_TOKENS)
            ntok = API_MAX_TOKENS;
        r.t = malloc(ntok * sizeof(jsmntok_t));
        if (r.t == NULL) {
            error(out, 100, "internal server error");
            return 200;
        }
        r.n = json_tokenize(body, body_len, r.t, (unsigned)ntok);
        if (r.n <= 0 || r.t[0].type != JSMN_OBJECT) {
            /* Not a JSON object (malformed, nested deeper than JSON_MAX_DEPTH, too
             * many tokens): the body cannot be decoded, as Centrifugo answers 400. */
            free(r.t);
            error(out, 107, "bad request");
            return 400;
        }
    }
    m->handle(&r, out);
    free(r.t);
    return 200;
}
