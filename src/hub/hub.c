/* Channels, local subscribers and fan-out (see hub.h).
 *
 * Delivery path, per publication: the engine hands the hub the publication under its
 * channel lock; the hub has it encoded once into a frame (the channel name kept after
 * it), takes its routing shard's lock and posts the frame to every loop that has
 * local subscribers (so each loop sees a channel's publications in offset order); each
 * loop then queues the same frame on every local subscriber: no copy, no lock, no
 * allocation per delivery. */
#include "hub/hub.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/frame.h"
#include "core/pool.h"
#include "core/table.h"
#include "hub/survey.h"
#include "metrics/metrics.h"
#include "net/conn.h"
#include "net/loop.h"

#define SHARDS 64

/* A channel with local subscribers on some loop. */
struct route {
    struct table_node node;
    uint64_t loops_mask; /* loops with local subscribers */
    uint32_t num_subs;
    uint16_t name_len;
    uint8_t name[];
};

struct shard {
    pthread_mutex_t lock;
    struct table routes;
};

/* A loop's view of a channel: its subscribers there. A channel of one subscriber (the
 * per-user pattern) holds it inline: no array. */
struct local_channel {
    struct table_node node;
    union {
        struct hub_sub *one;   /* cap_shift 0 */
        struct hub_sub **many; /* 1 << cap_shift entries */
    } subs;
    uint32_t n;
    uint16_t name_len;
    uint8_t cap_shift;
    char name[]; /* NUL-terminated (the subscriptions' hub_sub_name) */
};

/* What a subscription of a namespace with presence or join/leave keeps for them. */
struct hub_presence {
    const struct ns_opts *ns;
    uint32_t info_len;
    char client[37];
    uint8_t info[]; /* ClientInfo JSON */
};

/* Local channels come from their loop's slabs by the size their name needs (no
 * allocator header: a channel of one subscriber on "ch-1234" takes 40 bytes); longer
 * names from malloc. */
static const uint16_t lc_sizes[] = {40, 48, 64, 96};
#define LC_CLASSES (sizeof(lc_sizes) / sizeof(lc_sizes[0]))

static size_t lc_need(size_t name_len)
{
    return offsetof(struct local_channel, name) + name_len + 1;
}

static int lc_class(size_t name_len)
{
    for (unsigned i = 0; i < LC_CLASSES; i++)
        if (lc_need(name_len) <= lc_sizes[i])
            return (int)i;
    return -1;
}

static struct hub_sub **lc_subs(struct local_channel *lc)
{
    return lc->cap_shift ? lc->subs.many : &lc->subs.one;
}

/* The hub's process-wide state, one per process (the fuzzers and tests init it too). */
static struct {
    struct shard shards[SHARDS];
    struct loop *loops[LOOP_MAX];
    unsigned nloops;
    struct table *locals[LOOP_MAX]; /* per loop: channel -> struct local_channel */
    struct pool subs[LOOP_MAX];     /* per loop: its struct hub_sub, once locals[] is made */
    struct pool channels[LOOP_MAX][LC_CLASSES]; /* and its local channels (lc_class) */
    atomic_size_t num_routes;
    size_t max_channels;
    struct hub_callbacks cb;
    struct engine *engine;
} hub;

static struct engine_stream_opts stream_opts(const struct ns_opts *ns)
{
    struct engine_stream_opts o = {0, 0};
    if (ns) {
        o.history_size = ns->history_size;
        o.history_ttl = ns->history_ttl;
    }
    return o;
}

int hub_init(unsigned nloops, struct loop *const *loops, size_t max_channels,
             const struct hub_callbacks *cb)
{
    memset(&hub, 0, sizeof(hub));
    hub.nloops = nloops;
    for (unsigned i = 0; i < nloops && i < LOOP_MAX; i++)
        hub.loops[i] = loops[i];
    hub.max_channels = max_channels;
    hub.cb = *cb;
    survey_init(hub.nloops, hub.loops);
    atomic_init(&hub.num_routes, 0);
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_init(&hub.shards[i].lock, NULL);
        if (table_init(&hub.shards[i].routes, 64) != 0)
            return -1;
    }
    return 0;
}

void hub_set_engine(struct engine *e)
{
    hub.engine = e;
}

/* A loop's local table, its channels and its slabs go. */
static void local_free(unsigned id)
{
    struct table *t = hub.locals[id];
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (struct table_node *n = t->buckets[i], *next; n; n = next) {
            next = n->next;
            struct local_channel *lc = (struct local_channel *)n;
            if (lc->cap_shift)
                free(lc->subs.many);
            if (lc_class(lc->name_len) < 0)
                free(lc);
        }
    }
    table_destroy(t);
    free(t);
    hub.locals[id] = NULL;
    pool_drain(&hub.subs[id]);
    for (unsigned c = 0; c < LC_CLASSES; c++)
        pool_drain(&hub.channels[id][c]);
}

void hub_loop_exit(struct loop *loop)
{
    survey_loop_exit(loop);
    local_free(loop_id(loop));
}

void hub_shutdown(void)
{
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &hub.shards[i];
        for (size_t b = 0; b < s->routes.nbuckets; b++) {
            for (struct table_node *n = s->routes.buckets[b], *next; n; n = next) {
                next = n->next;
                free(n);
            }
        }
        table_destroy(&s->routes);
        pthread_mutex_destroy(&s->lock);
    }
    for (unsigned i = 0; i < LOOP_MAX; i++)
        local_free(i);
}

static struct shard *shard_of(uint64_t hash)
{
    return &hub.shards[hash % SHARDS];
}

static struct route *route_find(struct shard *s, uint64_t hash, const uint8_t *name, size_t len)
{
    for (struct table_node *n = table_bucket(&s->routes, hash); n; n = n->next) {
        struct route *r = (struct route *)n;
        if (n->hash == hash && r->name_len == len && memcmp(r->name, name, len) == 0)
            return r;
    }
    return NULL;
}

static struct table *local_table(struct loop *loop)
{
    unsigned id = loop_id(loop);
    if (hub.locals[id] == NULL) {
        struct table *t = malloc(sizeof(*t));
        if (t == NULL || table_init(t, 256) != 0) {
            free(t);
            return NULL;
        }
        hub.locals[id] = t;
        pool_init(&hub.subs[id], sizeof(struct hub_sub));
        for (unsigned c = 0; c < LC_CLASSES; c++)
            pool_init(&hub.channels[id][c], lc_sizes[c]);
    }
    return hub.locals[id];
}

static struct local_channel *local_find(struct table *t, uint64_t hash, const uint8_t *name,
                                        size_t len)
{
    for (struct table_node *n = table_bucket(t, hash); n; n = n->next) {
        struct local_channel *lc = (struct local_channel *)n;
        if (n->hash == hash && lc->name_len == len && memcmp(lc->name, name, len) == 0)
            return lc;
    }
    return NULL;
}

/* ---- fan-out ---- */

/* When the publish this thread is inside was made (metrics_stamp_us), 0 outside one: the
 * memory engine hands the publication over inside hub_publish, so its frame carries the
 * publish's time; one that comes from elsewhere (Redis pub/sub) carries its arrival's. */
static _Thread_local uint32_t publishing_since;

/* Publications of one channel that reached this loop together are concatenated into
 * one frame buffer, once per loop, so each subscriber gets them as one iovec and one
 * queue entry (one reference) instead of n. NULL when n == 1 or out of memory. */
static struct frame *concat_frames(struct loop_msg *msgs, size_t n)
{
    if (n < 2)
        return NULL;
    size_t total = 0, name_len = msgs[0].u32;
    for (size_t i = 0; i < n; i++)
        total += ((struct frame *)msgs[i].ptr)->len;
    if (total > UINT32_MAX - name_len)
        return NULL;
    struct frame *f = frame_new(total + name_len);
    if (f == NULL)
        return NULL;
    uint8_t *w = f->data;
    uint32_t stamp = 0;
    for (size_t i = 0; i < n; i++) {
        struct frame *m = msgs[i].ptr;
        memcpy(w, m->data, m->len);
        w += m->len;
        if (stamp == 0) /* the oldest not yet written elsewhere */
            stamp = atomic_load_explicit(&m->stamp, memory_order_relaxed);
    }
    atomic_store_explicit(&f->stamp, stamp, memory_order_relaxed);
    f->len = (uint32_t)total;
    struct frame *first = msgs[0].ptr;
    memcpy(w, first->data + first->len, name_len);
    return f;
}

/* The channel name a posted frame carries after its bytes (see post). */
static const uint8_t *msg_channel(const struct loop_msg *m)
{
    const struct frame *f = m->ptr;
    return f->data + f->len;
}

/* Deliver n frames of one channel, in offset order, to this loop's subscribers. hash:
 * the channel's table_hash. */
static void deliver(struct loop *loop, struct loop_msg *msgs, size_t n, uint64_t hash)
{
    struct frame *first = msgs[0].ptr;
    const uint8_t *name = msg_channel(&msgs[0]);
    unsigned id = loop_id(loop);
    struct table *t = hub.locals[id];
    struct local_channel *lc = t ? local_find(t, hash, name, msgs[0].u32) : NULL;
    metrics_add(id, METRIC_PUBLICATIONS, (int64_t)n);
    if (lc == NULL || lc->n == 0)
        return;
    struct frame *all = concat_frames(msgs, n);
    if (all == NULL && n > 1) {
        /* Out of memory for the concatenation: deliver one by one. */
        for (size_t i = 0; i < n; i++)
            deliver(loop, &msgs[i], 1, hash);
        return;
    }
    struct frame *f = all ? all : first;
    uint64_t first_offset = msgs[0].u64, last_offset = msgs[n - 1].u64;
    unsigned sent = 0, subs = lc->n, extra = 0;
    /* One atomic add for all of this loop's deliveries; the unused ones go back below. */
    frame_ref_n(f, subs);
    /* Every subscriber that cannot take the publication is disconnected (3008) at once:
     * none misses one silently. The walk goes from the last subscriber to the first, so
     * that dropping one (its slot is refilled from the end, already visited) leaves the
     * ones still to visit in place; once lc->n reaches 0, lc is gone and not touched. */
    for (uint32_t i = subs; i-- > 0;) {
        struct hub_sub *s = lc_subs(lc)[i];
        int r;
        if (first_offset && s->min_offset >= first_offset) {
            /* Recovered up to min_offset in its subscribe reply: skip those (rare). */
            if (s->min_offset >= last_offset)
                continue;
            r = 0;
            for (size_t k = 0; k < n && r == 0; k++) {
                if (msgs[k].u64 <= s->min_offset)
                    continue;
                r = conn_send_frame(s->conn, msgs[k].ptr);
                extra += r == 0;
            }
        } else {
            r = conn_send_frame_owned(s->conn, f);
            sent += r == 0;
        }
        if (r < 0)
            hub.cb.slow(s->conn);
    }
    if (sent < subs)
        frame_unref_unused(f, subs - sent);
    loop_fanout_queued(loop, sent);
    metrics_add(id, METRIC_MESSAGES_OUT, (int64_t)sent * (int64_t)n + extra);
    if (all)
        frame_unref(all);
}

/* How far ahead on_frames hashes the channels of the frames it will deliver and
 * prefetches their bucket slots, and then the channel each slot heads: a burst of
 * per-user publications finds each local channel cold, one miss after another, unless
 * the loads start a few deliveries before they are needed. Only hints: a slot or
 * channel gone meanwhile costs a wasted load. */
#define AHEAD_SLOT 4
#define AHEAD_CHANNEL 2

/* The loop's handler for posted frames: runs of one channel are delivered as one. */
static void on_frames(struct loop *loop, struct loop_msg *msgs, size_t n)
{
    const struct table *t = hub.locals[loop_id(loop)]; /* NULL before its first subscribe */
    uint64_t hashes[AHEAD_SLOT + 1]; /* of msgs[i .. i + AHEAD_SLOT], by index mod its size */
    for (size_t i = 0, hashed = 0; i < n;) {
        if (hashed < i)
            hashed = i; /* past a long run: its frames need no hash of their own */
        for (; hashed < n && hashed <= i + AHEAD_SLOT; hashed++) {
            uint64_t h = table_hash(msg_channel(&msgs[hashed]), msgs[hashed].u32);
            hashes[hashed % (AHEAD_SLOT + 1)] = h;
            if (t != NULL && hashed > i)
                __builtin_prefetch(table_slot(t, h));
        }
        if (t != NULL && i + AHEAD_CHANNEL < hashed) {
            size_t k = (i + AHEAD_CHANNEL) % (AHEAD_SLOT + 1);
            const struct table_node *c = table_bucket(t, hashes[k]);
            if (c != NULL)
                __builtin_prefetch(c);
        }
        size_t run = 1;
        const uint8_t *name = msg_channel(&msgs[i]);
        while (i + run < n && run < 1024 && msgs[i + run].u32 == msgs[i].u32 &&
               memcmp(name, msg_channel(&msgs[i + run]), msgs[i].u32) == 0)
            run++;
        deliver(loop, &msgs[i], run, hashes[i % (AHEAD_SLOT + 1)]);
        for (size_t k = 0; k < run; k++)
            frame_unref(msgs[i + k].ptr);
        i += run;
    }
}

/* The loops with local subscribers of ch: their mask, read under the routing shard's
 * lock; fn(id, arg) is called for each while it is held (so that what it posts stays in
 * order with what other threads post for the channel). */
static void each_loop(const uint8_t *ch, size_t len, void (*fn)(unsigned id, void *arg),
                      void *arg)
{
    uint64_t hash = table_hash(ch, len);
    struct shard *s = shard_of(hash);
    pthread_mutex_lock(&s->lock);
    struct route *r = route_find(s, hash, ch, len);
    uint64_t mask = r ? r->loops_mask : 0;
    while (mask) {
        unsigned id = (unsigned)__builtin_ctzll(mask);
        mask &= mask - 1;
        fn(id, arg);
    }
    pthread_mutex_unlock(&s->lock);
}

struct posting {
    struct frame *f;
    uint64_t offset;
    uint32_t len;
};

static void post_frame(unsigned id, void *arg)
{
    struct posting *p = arg;
    struct loop_msg m = {on_frames, frame_ref(p->f), p->offset, p->len};
    if (loop_post(hub.loops[id], &m) != 0)
        frame_unref(p->f);
}

/* Post f (the hub's reference is kept by the caller) to every loop with local
 * subscribers of ch. */
static void post(const uint8_t *ch, size_t len, struct frame *f, uint64_t offset)
{
    memcpy(f->data + f->len, ch, len); /* tail: the loops' look-up key, not sent */
    struct posting p = {f, offset, (uint32_t)len};
    each_loop(ch, len, post_frame, &p);
}

static void on_engine_publication(void *ud, const uint8_t *ch, size_t len,
                                  const struct engine_pub *pub)
{
    struct frame *f = hub.cb.encode_publication(ch, len, pub, len);
    if (f == NULL)
        return;
    atomic_store_explicit(&f->stamp, publishing_since ? publishing_since : metrics_stamp_us(),
                          memory_order_relaxed);
    post(ch, len, f, pub->offset);
    frame_unref(f);
}

static void on_engine_join_leave(void *ud, const uint8_t *ch, size_t len, int join,
                                 const uint8_t *info, size_t info_len)
{
    struct frame *f = hub.cb.encode_join_leave(ch, len, join, info, info_len, len);
    if (f == NULL)
        return;
    post(ch, len, f, 0);
    frame_unref(f);
}

/* On each loop with local subscribers of a channel whose continuity was lost. */
static void on_lost(struct loop *loop, struct loop_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const uint8_t *name = msgs[i].ptr;
        size_t len = msgs[i].u32;
        struct table *t = hub.locals[loop_id(loop)];
        struct local_channel *lc = t ? local_find(t, table_hash(name, len), name, len) : NULL;
        /* From the last to the first: each owner unsubscribes its own (see deliver). */
        for (uint32_t k = lc ? lc->n : 0; k-- > 0;)
            hub.cb.lost(lc_subs(lc)[k]->conn, lc_subs(lc)[k]);
        free(msgs[i].ptr);
    }
}

struct losing {
    const uint8_t *ch;
    size_t len;
};

static void post_lost(unsigned id, void *arg)
{
    struct losing *l = arg;
    uint8_t *name = malloc(l->len ? l->len : 1);
    if (name == NULL)
        return;
    memcpy(name, l->ch, l->len);
    struct loop_msg m = {on_lost, name, 0, (uint32_t)l->len};
    if (loop_post(hub.loops[id], &m) != 0)
        free(name);
}

static void on_engine_lost(void *ud, const uint8_t *ch, size_t len)
{
    struct losing l = {ch, len};
    each_loop(ch, len, post_lost, &l);
}

static void on_engine_control(void *ud, const uint8_t *msg, size_t len)
{
    if (survey_control(msg, len))
        return;
    if (hub.cb.control)
        hub.cb.control(msg, len);
}

struct engine_events hub_engine_events(void)
{
    struct engine_events ev = {on_engine_publication, on_engine_join_leave, on_engine_lost,
                               on_engine_control, NULL};
    return ev;
}

/* ---- subscribe / unsubscribe ---- */

/* Take a routing entry for ch on this loop (mask bit set, count up). Returns 0, or an
 * engine status. */
static int route_add(unsigned loop, const uint8_t *ch, size_t len, uint64_t hash)
{
    struct shard *s = shard_of(hash);
    pthread_mutex_lock(&s->lock);
    struct route *r = route_find(s, hash, ch, len);
    if (r == NULL) {
        if (atomic_fetch_add_explicit(&hub.num_routes, 1, memory_order_relaxed) >=
            hub.max_channels) {
            atomic_fetch_sub_explicit(&hub.num_routes, 1, memory_order_relaxed);
            pthread_mutex_unlock(&s->lock);
            return ENGINE_ERR_LIMIT;
        }
        r = calloc(1, sizeof(*r) + len);
        if (r == NULL) {
            atomic_fetch_sub_explicit(&hub.num_routes, 1, memory_order_relaxed);
            pthread_mutex_unlock(&s->lock);
            return ENGINE_ERR_INTERNAL;
        }
        r->node.hash = hash;
        r->name_len = (uint16_t)len;
        memcpy(r->name, ch, len);
        table_insert(&s->routes, &r->node);
    }
    r->loops_mask |= 1ULL << loop;
    r->num_subs++;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static void route_remove(unsigned loop, const uint8_t *ch, size_t len, uint64_t hash,
                         int last_local)
{
    struct shard *s = shard_of(hash);
    pthread_mutex_lock(&s->lock);
    struct route *r = route_find(s, hash, ch, len);
    if (r) {
        r->num_subs--;
        if (last_local)
            r->loops_mask &= ~(1ULL << loop);
        if (r->num_subs == 0) {
            table_remove(&s->routes, &r->node);
            free(r);
            atomic_fetch_sub_explicit(&hub.num_routes, 1, memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

/* Unlink an emptied local channel from loop id's table and free it. */
static void local_channel_free(unsigned id, struct local_channel *lc)
{
    table_remove(hub.locals[id], &lc->node);
    if (lc->cap_shift)
        free(lc->subs.many);
    int c = lc_class(lc->name_len);
    if (c >= 0)
        pool_put(&hub.channels[id][c], lc);
    else
        free(lc);
}

/* Room for one more subscriber in lc: 0, or -1 out of memory. */
static int local_reserve(struct local_channel *lc)
{
    if (lc->n < 1u << lc->cap_shift)
        return 0;
    size_t cap = (size_t)2 << lc->cap_shift;
    struct hub_sub **subs = lc->cap_shift ? lc->subs.many : NULL;
    subs = realloc(subs, cap * sizeof(*subs));
    if (subs == NULL)
        return -1;
    if (lc->cap_shift == 0)
        subs[0] = lc->subs.one;
    lc->subs.many = subs;
    lc->cap_shift++;
    return 0;
}

/* Unlink s from its local channel; 1 when it was the loop's last subscriber there (the
 * caller frees the local channel, whose name s has, once done with it). */
static int local_remove(struct hub_sub *s)
{
    struct local_channel *lc = s->lc;
    struct hub_sub **subs = lc_subs(lc);
    uint32_t i = s->index;
    subs[i] = subs[--lc->n];
    subs[i]->index = i;
    if (lc->n == 1 && lc->cap_shift) { /* back to one, inline */
        struct hub_sub *one = subs[0];
        free(subs);
        lc->subs.one = one;
        lc->cap_shift = 0;
    }
    return lc->n == 0;
}

const char *hub_sub_name(const struct hub_sub *s, size_t *len)
{
    *len = s->lc->name_len;
    return s->lc->name;
}

const uint8_t *hub_sub_info(const struct hub_sub *s, size_t *len)
{
    *len = s->presence ? s->presence->info_len : 0;
    return s->presence ? s->presence->info : NULL;
}

/* Give back s and what it holds (unlinked already); its local channel too when it was
 * the last one there. */
static void sub_free(struct loop *loop, struct hub_sub *s, int last)
{
    unsigned id = loop_id(loop);
    if (last)
        local_channel_free(id, s->lc);
    free(s->presence);
    pool_put(&hub.subs[id], s);
}

struct subscribing {
    struct loop *loop;
    struct hub_sub *sub;
    hub_subscribe_cb cb;
    void *ud;
};

/* The engine read the position (and the recovery) with the channel's events already
 * flowing to this loop: deliveries at or below pos are what the client gets in its
 * reply, so they are not sent again. */
static void on_engine_subscribed(void *ud, int status, const struct engine_pos *pos,
                                 int recovered, const struct engine_pub *pubs, size_t n)
{
    struct subscribing *x = ud;
    struct hub_sub *s = x->sub;
    struct engine *e = hub.engine;
    unsigned id = loop_id(x->loop);
    struct hub_presence *p = s->presence;
    if (status != ENGINE_OK) {
        struct local_channel *lc = s->lc;
        if (e && p && p->ns->presence) /* added before the subscribe: taken back */
            e->ops->presence_remove(e, (const uint8_t *)lc->name, lc->name_len, p->client,
                                    p->info, p->info_len, 1, 0);
        int last = local_remove(s);
        route_remove(id, (const uint8_t *)lc->name, lc->name_len, lc->node.hash, last);
        sub_free(x->loop, s, last);
        x->cb(x->ud, status, NULL, pos, 0, NULL, 0);
        free(x);
        return;
    }
    s->min_offset = pos->offset;
    metrics_add(id, METRIC_SUBSCRIPTIONS, 1);
    if (e && p && p->ns->join_leave) /* the member went in before the subscribe; its join */
        e->ops->presence_add(e, (const uint8_t *)s->lc->name, s->lc->name_len, p->client,
                             NULL, 0, p->info, p->info_len, 0, 1, NULL, NULL);
    x->cb(x->ud, ENGINE_OK, s, pos, recovered, pubs, n);
    free(x);
}

void hub_subscribe(struct loop *loop, const struct hub_subscribe_req *r, hub_subscribe_cb cb,
                   void *ud)
{
    struct engine_pos none = {0, ""};
    unsigned id = loop_id(loop);
    uint64_t hash = table_hash(r->channel, r->len);
    struct table *t = local_table(loop);
    struct hub_sub *s = t ? pool_get(&hub.subs[id]) : NULL;
    if (s == NULL) {
        cb(ud, ENGINE_ERR_INTERNAL, NULL, &none, 0, NULL, 0);
        return;
    }
    memset(s, 0, sizeof(*s));
    s->conn = r->conn;
    s->stream = r->ns && r->ns->history_size > 0;
    if (r->ns && (r->ns->presence || r->ns->join_leave) && r->info) {
        struct hub_presence *p = s->presence = malloc(sizeof(*p) + r->info_len);
        if (p == NULL) {
            pool_put(&hub.subs[id], s);
            cb(ud, ENGINE_ERR_INTERNAL, NULL, &none, 0, NULL, 0);
            return;
        }
        p->ns = r->ns;
        size_t clen = r->client ? strnlen(r->client, sizeof(p->client) - 1) : 0;
        memcpy(p->client, r->client ? r->client : "", clen);
        p->client[clen] = 0;
        memcpy(p->info, r->info, r->info_len);
        p->info_len = (uint32_t)r->info_len;
    }
    struct local_channel *lc = local_find(t, hash, r->channel, r->len);
    int status = 0;
    if (lc == NULL) {
        int c = lc_class(r->len);
        lc = c >= 0 ? pool_get(&hub.channels[id][c]) : malloc(lc_need(r->len));
        if (lc)
            memset(lc, 0, lc_need(r->len));
        if (lc == NULL) {
            status = ENGINE_ERR_INTERNAL;
        } else {
            lc->node.hash = hash;
            lc->name_len = (uint16_t)r->len;
            memcpy(lc->name, r->channel, r->len);
            table_insert(t, &lc->node);
        }
    }
    if (status == 0 && local_reserve(lc) != 0)
        status = ENGINE_ERR_INTERNAL;
    /* Routing first, then the engine: a publication that races the subscribe is either
     * in the recovery or posted here (then skipped by min_offset), never neither. */
    if (status == 0)
        status = route_add(id, r->channel, r->len, hash);
    struct subscribing *x = NULL;
    if (status == 0 && (x = malloc(sizeof(*x))) == NULL) {
        route_remove(id, r->channel, r->len, hash, lc->n == 0);
        status = ENGINE_ERR_INTERNAL;
    }
    if (status != 0) {
        if (lc && lc->n == 0)
            local_channel_free(id, lc);
        free(s->presence);
        pool_put(&hub.subs[id], s);
        cb(ud, status, NULL, &none, 0, NULL, 0);
        return;
    }
    s->lc = lc;
    s->index = lc->n;
    lc_subs(lc)[lc->n++] = s;
    /* Until the engine answers, nothing is sent; then nothing at or below its position. */
    s->min_offset = UINT64_MAX;
    *x = (struct subscribing){loop, s, cb, ud};
    /* The presence entry goes to the engine before the subscribe: a networked engine
     * sends both on the channel's one command connection, in order, so when the subscribe
     * is answered the member is already visible from every node. */
    struct engine *e = hub.engine;
    struct hub_presence *p = s->presence;
    if (p && p->ns->presence)
        e->ops->presence_add(e, r->channel, r->len, p->client, r->user, r->user_len, p->info,
                             p->info_len, 1, 0, NULL, NULL);
    struct engine_stream_opts o = stream_opts(r->ns);
    e->ops->subscribe(e, r->channel, r->len, &o, &r->rec, on_engine_subscribed, x);
}

void hub_unsubscribe(struct loop *loop, struct hub_sub *s)
{
    unsigned id = loop_id(loop);
    struct local_channel *lc = s->lc; /* its name serves until sub_free */
    const uint8_t *name = (const uint8_t *)lc->name;
    size_t len = lc->name_len;
    int last = local_remove(s);
    route_remove(id, name, len, lc->node.hash, last);
    /* No engine any more: the last completions, run after it closed (hub_set_engine). */
    struct engine *e = hub.engine;
    struct hub_presence *p = s->presence;
    if (e && p)
        e->ops->presence_remove(e, name, len, p->client, p->info, p->info_len, p->ns->presence,
                                p->ns->join_leave);
    if (e && s->stream)
        e->ops->unsubscribe(e, name, len);
    metrics_add(id, METRIC_SUBSCRIPTIONS, -1);
    sub_free(loop, s, last);
}

/* ---- publish and queries ---- */

void hub_prefetch(const uint8_t *ch, size_t len)
{
    uint64_t hash = table_hash(ch, len);
    struct shard *s = shard_of(hash);
    pthread_mutex_lock(&s->lock);
    const struct table_node *n = table_bucket(&s->routes, hash);
    pthread_mutex_unlock(&s->lock);
    /* Only a hint: the route may be gone by the time the load lands. */
    if (n != NULL)
        __builtin_prefetch(n);
}

void hub_publish(const uint8_t *ch, size_t len, const struct ns_opts *ns, const uint8_t *data,
                 size_t data_len, const uint8_t *info, size_t info_len, const uint8_t *key,
                 size_t key_len, engine_publish_cb cb, void *ud)
{
    struct engine_stream_opts o = stream_opts(ns);
    struct engine_pub pub = {data, data_len, info, info ? info_len : 0, 0};
    publishing_since = metrics_stamp_us();
    metrics_count(METRIC_PUBLISHES, 1);
    hub.engine->ops->publish(hub.engine, ch, len, &o, &pub, key, key_len, cb, ud);
    publishing_since = 0;
}

void hub_history(const uint8_t *ch, size_t len, const struct ns_opts *ns,
                 const struct engine_history_query *q, engine_history_cb cb, void *ud)
{
    struct engine_stream_opts o = stream_opts(ns);
    hub.engine->ops->history(hub.engine, ch, len, &o, q, cb, ud);
}

void hub_history_remove(const uint8_t *ch, size_t len, engine_done_cb cb, void *ud)
{
    hub.engine->ops->history_remove(hub.engine, ch, len, cb, ud);
}

void hub_reset_streams(const uint8_t *prefix, size_t len, engine_done_cb cb, void *ud)
{
    hub.engine->ops->reset(hub.engine, prefix, len, cb, ud);
}

void hub_presence(const uint8_t *ch, size_t len, const struct ns_opts *ns, engine_presence_cb cb,
                  void *ud)
{
    if (ns == NULL || !ns->presence) {
        cb(ud, ENGINE_ERR_NOT_AVAILABLE, NULL, 0);
        return;
    }
    hub.engine->ops->presence(hub.engine, ch, len, cb, ud);
}

void hub_presence_stats(const uint8_t *ch, size_t len, const struct ns_opts *ns,
                        engine_stats_cb cb, void *ud)
{
    if (ns == NULL || !ns->presence) {
        cb(ud, ENGINE_ERR_NOT_AVAILABLE, 0, 0);
        return;
    }
    hub.engine->ops->presence_stats(hub.engine, ch, len, cb, ud);
}

uint64_t hub_channel_count(void)
{
    return atomic_load_explicit(&hub.num_routes, memory_order_relaxed);
}

void hub_stores(engine_store_cb cb, void *ud)
{
    hub.engine->ops->stores(hub.engine, cb, ud);
}

void hub_control(const uint8_t *msg, size_t len)
{
    hub.engine->ops->control(hub.engine, msg, len);
}

void hub_announce(const char *uid, const uint8_t *info, size_t len)
{
    hub.engine->ops->announce(hub.engine, uid, info, len);
}

void hub_nodes(engine_nodes_cb cb, void *ud)
{
    hub.engine->ops->nodes(hub.engine, cb, ud);
}

/* ---- listing ---- */

static int contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m)
{
    if (m == 0)
        return 1;
    if (m > n)
        return 0;
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return 1;
    return 0;
}

static int routed(const uint8_t *ch, size_t len)
{
    uint64_t hash = table_hash(ch, len);
    struct shard *s = shard_of(hash);
    pthread_mutex_lock(&s->lock);
    int found = route_find(s, hash, ch, len) != NULL;
    pthread_mutex_unlock(&s->lock);
    return found;
}

struct listing {
    const uint8_t *pattern;
    size_t pattern_len;
    void (*cb)(void *ud, const uint8_t *ch, size_t len, uint32_t num_clients);
    void *ud;
    uint64_t count;
};

/* A channel the engine holds: listed unless it has local subscribers (listed already).
 * Called under the engine's channel lock (engine, then hub: the order every path
 * takes). */
static void on_engine_channel(void *ud, const uint8_t *ch, size_t len)
{
    struct listing *l = ud;
    if (ch == NULL || routed(ch, len))
        return;
    l->count++;
    if (l->cb && contains(ch, len, l->pattern, l->pattern_len))
        l->cb(l->ud, ch, len, 0);
}

static void list_all(struct listing *l, uint64_t *subs)
{
    uint64_t nsub = 0;
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &hub.shards[i];
        pthread_mutex_lock(&s->lock);
        for (size_t b = 0; b < s->routes.nbuckets; b++) {
            for (struct table_node *n = s->routes.buckets[b]; n; n = n->next) {
                struct route *r = (struct route *)n;
                nsub += r->num_subs;
                l->count++;
                if (l->cb && contains(r->name, r->name_len, l->pattern, l->pattern_len))
                    l->cb(l->ud, r->name, r->name_len, r->num_subs);
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    if (hub.engine)
        hub.engine->ops->channels(hub.engine, on_engine_channel, l);
    if (subs)
        *subs = nsub;
}

void hub_counts(uint64_t *channels, uint64_t *subscriptions)
{
    struct listing l = {NULL, 0, NULL, NULL, 0};
    list_all(&l, subscriptions);
    *channels = l.count;
}

void hub_channels(const uint8_t *pattern, size_t pattern_len,
                  void (*cb)(void *ud, const uint8_t *ch, size_t len, uint32_t num_clients),
                  void *ud)
{
    struct listing l = {pattern, pattern_len, cb, ud, 0};
    list_all(&l, NULL);
}
