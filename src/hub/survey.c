/* Every node's channels (see hub.h, hub_channels_all): the server API's `channels` asks
 * each live node, through the engine's controls, for its channels with local
 * subscribers and sums what they answer, as Centrifugo's survey of the nodes does.
 *
 * The asking loop sends one request to every node (itself included) and waits on its
 * own thread for as many replies as there are live nodes, or SURVEY_TIMEOUT_S: a node
 * that died since it last announced itself costs the wait, not the answer. Replies
 * arrive on the engine's thread and are posted to the asking loop (its id is in the
 * survey's id), so a survey is only ever touched by its loop. A request is answered
 * from loop 0, off the engine's thread.
 *
 * On the wire, after the control's kind byte (hub.c sends these two kinds here):
 *   request: id (8 bytes, big endian), asker's uid (1-byte length), pattern (2-byte
 *            length);
 *   reply:   id, asker's uid, answerer's uid, then each channel as a 2-byte length, its
 *            name and its subscribers (4 bytes). */
#include "hub/survey.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "hub/hub.h"
#include "net/loop.h"

#define SURVEY_TIMEOUT_S 2 /* the loop's timer wheel: 2-3 s */

struct survey {
    struct loop_timer timer; /* first: on_timeout finds its survey */
    struct survey *next;
    struct loop *loop;
    uint64_t id;
    unsigned expected, got;
    int self_answered;
    struct buf entries; /* the replies' channels, in their wire form */
    hub_channels_cb cb;
    void *ud;
    size_t pattern_len;
    uint8_t pattern[];
};

static struct {
    char uid[40];
    unsigned nloops;
    struct loop *loops[LOOP_MAX];
    struct survey *open[LOOP_MAX]; /* per loop: its thread only */
    uint32_t next_id[LOOP_MAX];
} sv;

void survey_init(unsigned nloops, struct loop *const *loops)
{
    memset(sv.open, 0, sizeof(sv.open)); /* the uid stays: it may be set before */
    sv.nloops = nloops < LOOP_MAX ? nloops : LOOP_MAX;
    for (unsigned i = 0; i < sv.nloops; i++)
        sv.loops[i] = loops[i];
}

void hub_set_node(const char *uid)
{
    size_t n = strnlen(uid, sizeof(sv.uid) - 1);
    memcpy(sv.uid, uid, n);
    sv.uid[n] = 0;
}

/* ---- the wire form ---- */

struct reader {
    const uint8_t *p, *end;
    int bad;
};

static uint64_t get_be(struct reader *r, int bytes)
{
    if (r->end - r->p < bytes) {
        r->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | *r->p++;
    return v;
}

static const uint8_t *get_bytes(struct reader *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

static void put_be(struct buf *b, uint64_t v, int bytes)
{
    uint8_t t[8];
    for (int i = 0; i < bytes; i++)
        t[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    buf_append(b, t, (size_t)bytes);
}

static void put_uid(struct buf *b, const char *uid, size_t len)
{
    put_be(b, len, 1);
    buf_append(b, uid, len);
}

static void put_channel(struct buf *b, const uint8_t *ch, size_t len, uint32_t n)
{
    put_be(b, len, 2);
    buf_append(b, ch, len);
    put_be(b, n, 4);
}

/* ---- merging ---- */

static int by_name(const void *a, const void *b)
{
    const struct hub_channel_count *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

struct local_add {
    struct buf *entries;
    int subscribed_too; /* this node did not answer: its subscribed channels as well */
};

/* This node's channels: those the engine holds state for (no local subscribers) always,
 * since every node sees the same engine; the subscribed ones when it did not answer. */
static void on_local(void *ud, const uint8_t *ch, size_t len, uint32_t num_clients)
{
    struct local_add *l = ud;
    if (num_clients == 0 || l->subscribed_too)
        put_channel(l->entries, ch, len, num_clients);
}

/* The channels of entries (their wire form, whole), sorted by name, the subscribers of
 * a name summed: cb once, with status -1 when out of memory. */
void survey_merge(const uint8_t *p, size_t len, hub_channels_cb cb, void *ud)
{
    size_t cap = 0;
    struct reader r = {p, p + len, 0};
    while (r.p < r.end && !r.bad) { /* each entry is at least 6 bytes */
        get_bytes(&r, get_be(&r, 2) + 4);
        cap++;
    }
    struct hub_channel_count *all = cap ? malloc(cap * sizeof(*all)) : NULL;
    if (cap && all == NULL) {
        cb(ud, -1, NULL, 0);
        return;
    }
    size_t n = 0;
    r = (struct reader){p, p + len, 0};
    while (n < cap) {
        size_t l = get_be(&r, 2);
        all[n].name = get_bytes(&r, l);
        all[n].len = l;
        all[n].num_clients = get_be(&r, 4);
        if (r.bad)
            break;
        n++;
    }
    if (n)
        qsort(all, n, sizeof(*all), by_name);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m && by_name(&all[m - 1], &all[i]) == 0)
            all[m - 1].num_clients += all[i].num_clients;
        else
            all[m++] = all[i];
    }
    cb(ud, 0, all, m);
    free(all);
}

static void finish(struct survey *s, int linked)
{
    if (linked) {
        unsigned id = loop_id(s->loop);
        for (struct survey **pp = &sv.open[id]; *pp; pp = &(*pp)->next) {
            if (*pp == s) {
                *pp = s->next;
                break;
            }
        }
        loop_timer_clear(s->loop, &s->timer);
    }
    struct local_add l = {&s->entries, !s->self_answered};
    hub_channels(s->pattern, s->pattern_len, on_local, &l);
    if (s->entries.oom)
        s->cb(s->ud, -1, NULL, 0);
    else
        survey_merge((const uint8_t *)s->entries.p, s->entries.len, s->cb, s->ud);
    buf_free(&s->entries);
    free(s);
}

static void on_timed_out(struct loop *loop, struct loop_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct survey *s = sv.open[loop_id(loop)];
        while (s && s->id != msgs[i].u64)
            s = s->next;
        if (s)
            finish(s, 1);
    }
}

/* Out of the timer wheel's walk first: answering may set other timers of the loop. */
static void on_timeout(struct loop_timer *t)
{
    struct survey *s = (struct survey *)t;
    struct loop_msg m = {.handle = on_timed_out, .u64 = s->id};
    if (loop_post(s->loop, &m) != 0)
        finish(s, 1);
}

/* ---- asking ---- */

static void on_nodes(void *ud, int status, const struct engine_node *nodes, size_t n)
{
    struct survey *s = ud;
    if (status == ENGINE_ERR_UNAVAILABLE) {
        /* The store the nodes announce themselves in does not answer: a list of this
         * node's channels alone would pass for every node's. */
        s->cb(s->ud, status, NULL, 0);
        buf_free(&s->entries);
        free(s);
        return;
    }
    unsigned others = 0;
    for (size_t i = 0; status == ENGINE_OK && i < n; i++)
        others += strcmp(nodes[i].uid, sv.uid) != 0;
    unsigned id = loop_id(s->loop);
    if (others == 0 || id >= sv.nloops || sv.loops[id] != s->loop) {
        finish(s, 0); /* alone (or the nodes unknown): this node's own channels */
        return;
    }
    s->expected = others + 1; /* this node answers its own request too */
    s->id = (uint64_t)++sv.next_id[id] << 8 | id;
    struct buf req = BUF_INIT;
    buf_append_char(&req, SURVEY_REQUEST);
    put_be(&req, s->id, 8);
    put_uid(&req, sv.uid, strlen(sv.uid));
    put_be(&req, s->pattern_len, 2);
    buf_append(&req, s->pattern, s->pattern_len);
    if (req.oom) {
        buf_free(&req);
        finish(s, 0);
        return;
    }
    s->next = sv.open[id];
    sv.open[id] = s;
    s->timer.fire = on_timeout;
    loop_timer_set(s->loop, &s->timer, SURVEY_TIMEOUT_S);
    hub_control((const uint8_t *)req.p, req.len);
    buf_free(&req);
}

void hub_channels_all(const uint8_t *pattern, size_t pattern_len, hub_channels_cb cb, void *ud)
{
    if (pattern_len > 0xffff)
        pattern_len = 0xffff;
    struct survey *s = calloc(1, sizeof(*s) + pattern_len);
    if (s == NULL) {
        cb(ud, -1, NULL, 0);
        return;
    }
    if (pattern_len)
        memcpy(s->pattern, pattern, pattern_len);
    s->pattern_len = pattern_len;
    s->cb = cb;
    s->ud = ud;
    s->loop = loop_self();
    if (s->loop == NULL || sv.uid[0] == 0) {
        finish(s, 0);
        return;
    }
    hub_nodes(on_nodes, s);
}

void survey_loop_exit(struct loop *loop)
{
    /* Its connections are closed by now: the callers get what there is, and nothing of
     * a survey outlives the loop. */
    unsigned id = loop_id(loop);
    while (id < LOOP_MAX && sv.open[id])
        finish(sv.open[id], 1);
}

/* ---- answering ---- */

/* A reply travels as one pub/sub message to every node: past this it is cut, so that it
 * stays far below what Redis lets a subscriber connection owe (32 MB by default, past
 * which it drops the connection, and every node's deliveries with it). */
#define SURVEY_REPLY_MAX (4u << 20)

struct reply {
    struct buf out;
    size_t channels, cut;
};

static void add_reply_channel(void *ud, const uint8_t *ch, size_t len, uint32_t num_clients)
{
    struct reply *r = ud;
    if (num_clients == 0) /* the engine's channels are the asker's to add */
        return;
    if (r->out.len + len + 6 > SURVEY_REPLY_MAX) {
        r->cut++;
        return;
    }
    put_channel(&r->out, ch, len, num_clients);
    r->channels++;
}

static void on_request(struct loop *loop, struct loop_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct reader r = {msgs[i].ptr, (const uint8_t *)msgs[i].ptr + msgs[i].u64, 0};
        r.p++; /* the kind */
        uint64_t id = get_be(&r, 8);
        size_t uid_len = get_be(&r, 1);
        const uint8_t *uid = get_bytes(&r, uid_len);
        size_t pattern_len = get_be(&r, 2);
        const uint8_t *pattern = get_bytes(&r, pattern_len);
        if (!r.bad) {
            struct reply rep = {BUF_INIT, 0, 0};
            buf_append_char(&rep.out, SURVEY_REPLY);
            put_be(&rep.out, id, 8);
            put_uid(&rep.out, (const char *)uid, uid_len);
            put_uid(&rep.out, sv.uid, strlen(sv.uid));
            hub_channels(pattern, pattern_len, add_reply_channel, &rep);
            if (rep.cut)
                log_warn("channels_cut",
                         "channels: this node's answer holds %zu channels, %zu more left out "
                         "(over %u bytes); ask with a pattern",
                         rep.channels, rep.cut, SURVEY_REPLY_MAX);
            if (!rep.out.oom)
                hub_control((const uint8_t *)rep.out.p, rep.out.len);
            buf_free(&rep.out);
        }
        free(msgs[i].ptr);
    }
}

int survey_parse_reply(const uint8_t *msg, size_t len, struct survey_reply *out)
{
    struct reader r = {msg, msg + len, 0};
    if (get_be(&r, 1) != SURVEY_REPLY)
        return -1;
    out->id = get_be(&r, 8);
    out->asker_len = get_be(&r, 1);
    out->asker = get_bytes(&r, out->asker_len);
    out->from_len = get_be(&r, 1);
    out->from = get_bytes(&r, out->from_len);
    out->entries = r.p;
    out->entries_len = r.bad ? 0 : (size_t)(r.end - r.p);
    /* Every entry whole, or the reply is refused. */
    while (!r.bad && r.p < r.end)
        get_bytes(&r, get_be(&r, 2) + 4);
    return r.bad ? -1 : 0;
}

static void on_reply(struct loop *loop, struct loop_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct survey_reply rep;
        struct survey *s = NULL;
        if (survey_parse_reply(msgs[i].ptr, msgs[i].u64, &rep) == 0) {
            s = sv.open[loop_id(loop)];
            while (s && s->id != rep.id)
                s = s->next;
        }
        if (s) { /* else it came too late (or was refused): the survey waits it out */
            buf_append(&s->entries, rep.entries, rep.entries_len);
            if (rep.from_len == strlen(sv.uid) && memcmp(rep.from, sv.uid, rep.from_len) == 0)
                s->self_answered = 1;
            if (++s->got >= s->expected)
                finish(s, 1);
        }
        free(msgs[i].ptr);
    }
}

int survey_control(const uint8_t *msg, size_t len)
{
    if (len == 0 || (msg[0] != SURVEY_REQUEST && msg[0] != SURVEY_REPLY))
        return 0;
    struct loop *to = NULL;
    if (msg[0] == SURVEY_REQUEST) {
        to = sv.nloops ? sv.loops[0] : NULL;
    } else {
        struct survey_reply rep;
        if (survey_parse_reply(msg, len, &rep) == 0 && (rep.id & 0xff) < sv.nloops &&
            rep.asker_len == strlen(sv.uid) && memcmp(rep.asker, sv.uid, rep.asker_len) == 0)
            to = sv.loops[rep.id & 0xff];
    }
    uint8_t *copy = to ? malloc(len) : NULL;
    if (copy == NULL)
        return 1;
    memcpy(copy, msg, len);
    struct loop_msg m = {
        .handle = msg[0] == SURVEY_REQUEST ? on_request : on_reply, .ptr = copy, .u64 = len};
    if (loop_post(to, &m) != 0)
        free(copy);
    return 1;
}
