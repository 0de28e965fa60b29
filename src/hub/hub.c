/* Channels, fan-out and the memory engine's streams (see hub.h).
 *
 * Delivery path, per publication: one frame built once (WebSocket head + push JSON,
 * the channel name stored after it); under the channel's shard lock, the offset is
 * assigned, the frame is kept in history and posted to every loop that has local
 * subscribers (so each loop sees a channel's publications in offset order); each
 * loop then queues the same frame on every local subscriber: no copy, no lock, no
 * allocation per delivery. */
#include "hub/hub.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/frame.h"
#include "core/rand.h"
#include "core/table.h"
#include "hub/history.h"
#include "net/conn.h"
#include "net/loop.h"
#include "proto/session.h"
#include "ws/frame.h"

#define SHARDS 64

/* A user present in a channel, with how many of its connections are: distinct users
 * are counted as they come and go, never by comparing members (O(1) per query). */
struct presence_user {
    struct table_node node;
    uint32_t conns;
    uint16_t len;
    char name[];
};

/* One subscriber in a channel's presence set (its hub_sub points back at it). */
struct presence {
    struct presence *next, *prev;
    struct presence_user *user;
    char client[37];
    uint32_t info_len;
    uint8_t info[]; /* ClientInfo JSON */
};

struct channel {
    struct channel *next;
    struct presence *presence;
    uint32_t num_presence;
    struct table *presence_users; /* user -> struct presence_user, once presence is used */
    uint64_t hash;
    uint64_t loops_mask; /* loops with local subscribers */
    uint32_t num_subs;
    uint64_t top_offset;
    uint64_t last_pub_ms;
    uint32_t history_ttl_ms;
    struct history *hist;
    char epoch[HUB_EPOCH_LEN + 1];
    uint16_t name_len;
    char name[];
};

struct shard {
    pthread_mutex_t lock;
    struct channel **buckets;
    size_t nbuckets, count;
};

static struct shard shards[SHARDS];
static struct loop **hub_loops;
static unsigned hub_nloops;
/* Channels in every shard, against max_channels: one atomic per channel created or
 * freed, never per publication. */
static atomic_size_t hub_num_channels;
static size_t hub_max_channels;

struct local_channel {
    struct local_channel *next;
    uint64_t hash;
    struct hub_sub **subs;
    uint32_t n, cap;
    uint16_t name_len;
    char name[];
};

struct hub_local {
    struct local_channel **buckets;
    size_t nbuckets, count;
};

static uint64_t hash_name(const uint8_t *p, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static void presence_free_all(struct channel *ch)
{
    while (ch->presence) {
        struct presence *p = ch->presence;
        ch->presence = p->next;
        free(p);
    }
    ch->num_presence = 0;
    struct table *t = ch->presence_users;
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (struct table_node *n = t->buckets[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    }
    table_destroy(t);
    free(t);
    ch->presence_users = NULL;
}

int hub_init(unsigned nloops, struct loop **loops, size_t max_channels)
{
    hub_loops = loops;
    hub_nloops = nloops;
    hub_max_channels = max_channels;
    atomic_store(&hub_num_channels, 0);
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_init(&shards[i].lock, NULL);
        shards[i].nbuckets = 64;
        shards[i].buckets = calloc(64, sizeof(struct channel *));
        if (shards[i].buckets == NULL)
            return -1;
    }
    return 0;
}

void hub_shutdown(void)
{
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &shards[i];
        for (size_t b = 0; b < s->nbuckets; b++) {
            for (struct channel *ch = s->buckets[b], *next; ch; ch = next) {
                next = ch->next;
                history_free(ch->hist);
                presence_free_all(ch);
                free(ch);
            }
        }
        free(s->buckets);
        s->buckets = NULL;
        pthread_mutex_destroy(&s->lock);
    }
}

static struct shard *shard_of(uint64_t hash)
{
    return &shards[hash % SHARDS];
}

static struct channel *channel_find(struct shard *s, uint64_t hash, const uint8_t *name, size_t len)
{
    for (struct channel *ch = s->buckets[(hash / SHARDS) % s->nbuckets]; ch; ch = ch->next)
        if (ch->hash == hash && ch->name_len == len && memcmp(ch->name, name, len) == 0)
            return ch;
    return NULL;
}

static void shard_grow(struct shard *s)
{
    size_t n = s->nbuckets * 2;
    struct channel **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (struct channel *ch = s->buckets[i], *next; ch; ch = next) {
            next = ch->next;
            size_t j = (ch->hash / SHARDS) % n;
            ch->next = b[j];
            b[j] = ch;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

/* A new channel, or NULL: out of memory, or (*limited set) max_channels reached. */
static struct channel *channel_create(struct shard *s, uint64_t hash, const uint8_t *name,
                                      size_t len, int *limited)
{
    *limited = 0;
    if (atomic_fetch_add_explicit(&hub_num_channels, 1, memory_order_relaxed) >=
        hub_max_channels) {
        atomic_fetch_sub_explicit(&hub_num_channels, 1, memory_order_relaxed);
        *limited = 1;
        return NULL;
    }
    struct channel *ch = calloc(1, sizeof(*ch) + len + 1);
    if (ch == NULL) {
        atomic_fetch_sub_explicit(&hub_num_channels, 1, memory_order_relaxed);
        return NULL;
    }
    ch->hash = hash;
    ch->name_len = (uint16_t)len;
    memcpy(ch->name, name, len);
    if (s->count >= s->nbuckets)
        shard_grow(s);
    size_t j = (hash / SHARDS) % s->nbuckets;
    ch->next = s->buckets[j];
    s->buckets[j] = ch;
    s->count++;
    return ch;
}

static void channel_remove(struct shard *s, struct channel *ch)
{
    for (struct channel **pp = &s->buckets[(ch->hash / SHARDS) % s->nbuckets]; *pp;
         pp = &(*pp)->next) {
        if (*pp == ch) {
            *pp = ch->next;
            s->count--;
            history_free(ch->hist);
            presence_free_all(ch);
            free(ch);
            atomic_fetch_sub_explicit(&hub_num_channels, 1, memory_order_relaxed);
            return;
        }
    }
}

/* Give a channel of a history namespace its stream: epoch and ring. */
static void channel_ensure_stream(struct channel *ch, const struct ns_opts *ns)
{
    if (ns == NULL || ns->history_size == 0)
        return;
    if (ch->epoch[0] == 0) {
        char hex[HUB_EPOCH_LEN + 1];
        rand_hex(hex, HUB_EPOCH_LEN / 2);
        memcpy(ch->epoch, hex, sizeof(ch->epoch));
    }
    ch->history_ttl_ms = ns->history_ttl * 1000u;
    if (ch->hist == NULL)
        ch->hist = history_new(ns->history_size);
}

/* ---- local (per loop) table ---- */

struct hub_local *hub_local_new(void)
{
    struct hub_local *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->nbuckets = 256;
    h->buckets = calloc(h->nbuckets, sizeof(*h->buckets));
    if (h->buckets == NULL) {
        free(h);
        return NULL;
    }
    return h;
}

void hub_local_free(struct hub_local *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->nbuckets; i++) {
        for (struct local_channel *lc = h->buckets[i], *next; lc; lc = next) {
            next = lc->next;
            free(lc->subs);
            free(lc);
        }
    }
    free(h->buckets);
    free(h);
}

static struct local_channel *local_find(struct hub_local *h, uint64_t hash, const uint8_t *name,
                                        size_t len)
{
    for (struct local_channel *lc = h->buckets[hash % h->nbuckets]; lc; lc = lc->next)
        if (lc->hash == hash && lc->name_len == len && memcmp(lc->name, name, len) == 0)
            return lc;
    return NULL;
}

static void local_grow(struct hub_local *h)
{
    size_t n = h->nbuckets * 2;
    struct local_channel **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < h->nbuckets; i++) {
        for (struct local_channel *lc = h->buckets[i], *next; lc; lc = next) {
            next = lc->next;
            lc->next = b[lc->hash % n];
            b[lc->hash % n] = lc;
        }
    }
    free(h->buckets);
    h->buckets = b;
    h->nbuckets = n;
}

static void local_remove(struct hub_local *h, struct local_channel *lc)
{
    for (struct local_channel **pp = &h->buckets[lc->hash % h->nbuckets]; *pp; pp = &(*pp)->next) {
        if (*pp == lc) {
            *pp = lc->next;
            h->count--;
            free(lc->subs);
            free(lc);
            return;
        }
    }
}

/* ---- subscribe / unsubscribe ---- */

static void append_recovered(struct channel *ch, struct hub_recovery *rec)
{
    struct history *h = ch->hist;
    int first = 1;
    for (uint32_t i = 0; i < h->count; i++) {
        const struct history_entry *e = history_at(h, i);
        if (e->offset <= rec->offset)
            continue;
        if (!first)
            buf_append_char(rec->pubs, ',');
        first = 0;
        buf_append(rec->pubs, e->frame->data + e->pub_off, e->pub_len);
    }
}

/* Can the client continue from rec->offset within the held history? */
static int can_recover(struct channel *ch, const struct hub_recovery *rec)
{
    if (ch->epoch[0] == 0 || rec->epoch_len != HUB_EPOCH_LEN ||
        memcmp(rec->epoch, ch->epoch, HUB_EPOCH_LEN) != 0)
        return 0;
    if (rec->offset > ch->top_offset)
        return 0;
    uint64_t missed = ch->top_offset - rec->offset;
    if (missed == 0)
        return 1;
    if (missed > rec->max_pubs || ch->hist == NULL)
        return 0;
    history_expire(ch->hist, server_now_ms(), ch->history_ttl_ms);
    return ch->hist->count && history_first_offset(ch->hist) <= rec->offset + 1;
}

static void post_publication(struct channel *ch, struct frame *f, uint64_t offset);

/* {"push":{"channel":NAME,"join"|"leave":{"info":INFO}}} to every subscriber, in
 * order with the channel's publications (the caller holds the shard lock). */
static void post_join_leave(struct channel *ch, const char *kind, const uint8_t *info,
                            size_t info_len)
{
    struct buf b = BUF_INIT;
    uint8_t head[WS_FRAME_HEAD_MAX];
    buf_append_str(&b, "{\"push\":{\"channel\":");
    buf_append_json_str(&b, (const uint8_t *)ch->name, ch->name_len);
    buf_appendf(&b, ",\"%s\":{\"info\":", kind);
    buf_append(&b, info, info_len);
    buf_append_str(&b, "}}}");
    if (b.oom)
        goto out;
    size_t h = ws_frame_head_encode(head, WS_OP_TEXT, b.len);
    struct frame *f = frame_new(h + b.len + ch->name_len);
    if (f == NULL)
        goto out;
    memcpy(f->data, head, h);
    memcpy(f->data + h, b.p, b.len);
    f->len = (uint32_t)(h + b.len);
    memcpy(f->data + f->len, ch->name, ch->name_len);
    post_publication(ch, f, 0);
    frame_unref(f);
out:
    buf_free(&b);
}

static struct presence_user *presence_user_get(struct channel *ch, const char *user, size_t len)
{
    if (ch->presence_users == NULL) {
        struct table *t = malloc(sizeof(*t));
        if (t == NULL || table_init(t, 8) != 0) {
            free(t);
            return NULL;
        }
        ch->presence_users = t;
    }
    uint64_t hash = table_hash(user, len);
    for (struct table_node *n = table_bucket(ch->presence_users, hash); n; n = n->next) {
        struct presence_user *u = (struct presence_user *)n;
        if (n->hash == hash && u->len == len && memcmp(u->name, user, len) == 0)
            return u;
    }
    struct presence_user *u = malloc(sizeof(*u) + len);
    if (u == NULL)
        return NULL;
    u->node.hash = hash;
    u->conns = 0;
    u->len = (uint16_t)len;
    memcpy(u->name, user, len);
    table_insert(ch->presence_users, &u->node);
    return u;
}

static void presence_add(struct channel *ch, struct hub_sub *sub, const char *client,
                         const uint8_t *info, size_t info_len, const char *user, size_t user_len)
{
    struct presence *p = malloc(sizeof(*p) + info_len);
    if (p == NULL)
        return;
    p->user = presence_user_get(ch, user, user_len);
    if (p->user == NULL) {
        free(p);
        return;
    }
    p->user->conns++;
    memcpy(p->client, client, sizeof(p->client));
    p->client[36] = 0;
    p->info_len = (uint32_t)info_len;
    memcpy(p->info, info, info_len);
    p->prev = NULL;
    p->next = ch->presence;
    if (p->next)
        p->next->prev = p;
    ch->presence = p;
    ch->num_presence++;
    sub->presence = p;
}

static void presence_remove(struct channel *ch, struct hub_sub *sub)
{
    struct presence *p = sub->presence;
    if (p == NULL)
        return;
    sub->presence = NULL;
    if (p->prev)
        p->prev->next = p->next;
    else
        ch->presence = p->next;
    if (p->next)
        p->next->prev = p->prev;
    ch->num_presence--;
    if (--p->user->conns == 0) {
        table_remove(ch->presence_users, &p->user->node);
        free(p->user);
    }
    free(p);
}

/* The "user" value of a ClientInfo JSON we built ({"user":"...",...}), unescaped
 * enough for distinct counting: the raw string bytes. */
static void info_user(const uint8_t *info, size_t len, const char **user, size_t *ulen)
{
    *user = "";
    *ulen = 0;
    if (len < 10 || memcmp(info, "{\"user\":\"", 9) != 0)
        return;
    const uint8_t *p = info + 9, *end = info + len;
    const uint8_t *q = p;
    while (q < end && *q != '"') {
        if (*q == '\\')
            q++;
        q++;
    }
    if (q > end)
        q = end;
    *user = (const char *)p;
    *ulen = (size_t)(q - p);
}

struct hub_sub *hub_subscribe(struct loop *loop, struct conn *c, const uint8_t *name, size_t len,
                              const struct ns_opts *ns, struct hub_recovery *rec)
{
    uint64_t hash = hash_name(name, len);
    struct hub_local *h = loop->hub;
    rec->limited = 0;
    struct local_channel *lc = local_find(h, hash, name, len);
    if (lc == NULL) {
        lc = calloc(1, sizeof(*lc) + len + 1);
        if (lc == NULL)
            return NULL;
        lc->hash = hash;
        lc->name_len = (uint16_t)len;
        memcpy(lc->name, name, len);
        if (h->count >= h->nbuckets)
            local_grow(h);
        lc->next = h->buckets[hash % h->nbuckets];
        h->buckets[hash % h->nbuckets] = lc;
        h->count++;
    }
    if (lc->n == lc->cap) {
        uint32_t cap = lc->cap ? lc->cap * 2 : 1;
        struct hub_sub **subs = realloc(lc->subs, cap * sizeof(*subs));
        if (subs == NULL)
            goto fail;
        lc->subs = subs;
        lc->cap = cap;
    }
    struct hub_sub *s = calloc(1, sizeof(*s) + len + 1);
    if (s == NULL)
        goto fail;
    s->conn = c;
    s->lc = lc;
    s->ns = ns;
    s->name_len = (uint16_t)len;
    memcpy(s->name, name, len);

    struct shard *sh = shard_of(hash);
    pthread_mutex_lock(&sh->lock);
    struct channel *ch = channel_find(sh, hash, name, len);
    if (ch == NULL)
        ch = channel_create(sh, hash, name, len, &rec->limited);
    if (ch == NULL) {
        pthread_mutex_unlock(&sh->lock);
        free(s);
        goto fail;
    }
    ch->loops_mask |= 1ULL << loop->id;
    ch->num_subs++;
    channel_ensure_stream(ch, ns);
    rec->has_history = ch->epoch[0] != 0;
    if (rec->has_history) {
        rec->pos.offset = ch->top_offset;
        memcpy(rec->pos.epoch, ch->epoch, sizeof(rec->pos.epoch));
        s->min_offset = ch->top_offset;
        rec->recovered = 0;
        if (rec->recover && can_recover(ch, rec)) {
            rec->recovered = 1;
            if (rec->pubs)
                append_recovered(ch, rec);
        }
    }
    if (ns && (ns->presence || ns->join_leave) && rec->info) {
        s->info = malloc(rec->info_len);
        if (s->info) {
            memcpy(s->info, rec->info, rec->info_len);
            s->info_len = (uint32_t)rec->info_len;
        }
    }
    if (ns && ns->presence && s->info && rec->client) {
        const char *user;
        size_t ulen;
        info_user(s->info, s->info_len, &user, &ulen);
        presence_add(ch, s, rec->client, s->info, s->info_len, user, ulen);
    }
    if (ns && ns->join_leave && s->info)
        post_join_leave(ch, "join", s->info, s->info_len);
    pthread_mutex_unlock(&sh->lock);

    s->index = lc->n;
    lc->subs[lc->n++] = s;
    atomic_fetch_add_explicit(&loop->stats.subscriptions, 1, memory_order_relaxed);
    return s;
fail:
    if (lc->n == 0)
        local_remove(h, lc);
    return NULL;
}

void hub_unsubscribe(struct loop *loop, struct hub_sub *s)
{
    struct local_channel *lc = s->lc;
    uint32_t i = s->index;
    lc->subs[i] = lc->subs[--lc->n];
    lc->subs[i]->index = i;
    int last_local = lc->n == 0;
    uint64_t hash = lc->hash;
    struct shard *sh = shard_of(hash);
    pthread_mutex_lock(&sh->lock);
    struct channel *ch = channel_find(sh, hash, (const uint8_t *)s->name, s->name_len);
    if (ch) {
        ch->num_subs--;
        if (last_local)
            ch->loops_mask &= ~(1ULL << loop->id);
        if (s->ns && s->ns->presence)
            presence_remove(ch, s);
        if (s->ns && s->ns->join_leave && s->info)
            post_join_leave(ch, "leave", s->info, s->info_len);
        if (ch->num_subs == 0 && ch->epoch[0] == 0)
            channel_remove(sh, ch);
    }
    pthread_mutex_unlock(&sh->lock);
    if (last_local)
        local_remove(loop->hub, lc);
    atomic_fetch_sub_explicit(&loop->stats.subscriptions, 1, memory_order_relaxed);
    free(s->info);
    free(s);
}

/* ---- publish / deliver ---- */

/* Frame: head + {"push":{"channel":NAME,"pub":{"data":DATA[,"info":INFO][,"offset":N]}}}
 * followed (outside f->len) by the raw channel name for the loops' look-up. */
static struct frame *build_publication(const uint8_t *name, size_t len, const uint8_t *data,
                                       size_t data_len, const uint8_t *info, size_t info_len,
                                       uint64_t offset, uint32_t *pub_off, uint32_t *pub_len)
{
    struct buf esc = BUF_INIT;
    buf_append_json_str(&esc, name, len);
    if (esc.oom)
        return NULL;
    char off[32] = "";
    int off_len =
        offset ? snprintf(off, sizeof(off), ",\"offset\":%llu", (unsigned long long)offset) : 0;
    static const char p1[] = "{\"push\":{\"channel\":";
    static const char p2[] = ",\"pub\":";
    static const char p3[] = "{\"data\":";
    static const char p4[] = ",\"info\":";
    size_t pub =
        sizeof(p3) - 1 + data_len + (info ? sizeof(p4) - 1 + info_len : 0) + (size_t)off_len + 1;
    size_t payload = sizeof(p1) - 1 + esc.len + sizeof(p2) - 1 + pub + 2;
    struct frame *f = frame_new(WS_FRAME_HEAD_MAX + payload + len);
    if (f == NULL) {
        buf_free(&esc);
        return NULL;
    }
    uint8_t *w = f->data;
    w += ws_frame_head_encode(w, WS_OP_TEXT, payload);
#define PUT(src, n) (memcpy(w, (src), (n)), w += (n))
    PUT(p1, sizeof(p1) - 1);
    PUT(esc.p, esc.len);
    PUT(p2, sizeof(p2) - 1);
    *pub_off = (uint32_t)(w - f->data);
    *pub_len = (uint32_t)pub;
    PUT(p3, sizeof(p3) - 1);
    /* Raw newlines can only be insignificant whitespace in valid JSON (inside strings
     * they must be escaped); replies are newline-delimited, so they become spaces:
     * same length, same value. */
    uint8_t *d = w;
    PUT(data, data_len);
    for (uint8_t *nl = memchr(d, '\n', data_len); nl; nl = memchr(nl, '\n', (size_t)(w - nl)))
        *nl = ' ';
    if (info) {
        PUT(p4, sizeof(p4) - 1);
        PUT(info, info_len);
    }
    PUT(off, (size_t)off_len);
    PUT("}}}", 3);
    f->len = (uint32_t)(w - f->data);
    memcpy(w, name, len); /* tail: not sent */
#undef PUT
    buf_free(&esc);
    return f;
}

static void post_publication(struct channel *ch, struct frame *f, uint64_t offset)
{
    uint64_t mask = ch->loops_mask;
    while (mask) {
        unsigned id = (unsigned)__builtin_ctzll(mask);
        mask &= mask - 1;
        struct loop_msg m = {LOOP_MSG_PUBLICATION, ch->name_len, offset, frame_ref(f)};
        if (loop_post(hub_loops[id], &m) != 0)
            frame_unref(f);
    }
}

int hub_publish(const uint8_t *name, size_t len, const struct ns_opts *ns, const uint8_t *data,
                size_t data_len, const uint8_t *info, size_t info_len, struct hub_stream_pos *pos)
{
    uint64_t hash = hash_name(name, len);
    struct shard *sh = shard_of(hash);
    int history = ns && ns->history_size > 0;
    uint32_t pub_off, pub_len;
    struct frame *f = NULL;
    if (!history) {
        /* No offset to wait for: frame outside the lock. */
        f = build_publication(name, len, data, data_len, info, info_len, 0, &pub_off, &pub_len);
        if (f == NULL)
            return -1;
    }
    pthread_mutex_lock(&sh->lock);
    struct channel *ch = channel_find(sh, hash, name, len);
    int limited = 0;
    if (history && ch == NULL)
        ch = channel_create(sh, hash, name, len, &limited);
    if (ch == NULL) {
        pthread_mutex_unlock(&sh->lock);
        if (f)
            frame_unref(f);
        return !history ? 0 : limited ? HUB_LIMIT : -1;
    }
    int ret = 0;
    uint64_t offset = 0;
    if (history) {
        channel_ensure_stream(ch, ns);
        offset = ch->top_offset + 1;
        f = build_publication(name, len, data, data_len, info, info_len, offset, &pub_off,
                              &pub_len);
        if (f == NULL) {
            pthread_mutex_unlock(&sh->lock);
            return -1;
        }
        ch->top_offset = offset;
        ch->last_pub_ms = server_now_ms();
        if (ch->hist) {
            struct history_entry e = {offset, ch->last_pub_ms, frame_ref(f), pub_off, pub_len};
            history_push(ch->hist, &e);
        }
        if (pos) {
            pos->offset = offset;
            memcpy(pos->epoch, ch->epoch, sizeof(pos->epoch));
        }
        ret = 1;
    }
    post_publication(ch, f, offset);
    pthread_mutex_unlock(&sh->lock);
    frame_unref(f);
    return ret;
}

/* Publications of one channel that reached this loop together are concatenated
 * into one frame buffer, once per loop, so each subscriber gets them as one iovec
 * and one queue entry (one reference) instead of n. NULL when n == 1 or out of memory. */
static struct frame *concat_frames(struct loop_msg *msgs, size_t n)
{
    if (n < 2)
        return NULL;
    size_t total = 0, name_len = msgs[0].arg;
    for (size_t i = 0; i < n; i++)
        total += msgs[i].frame->len;
    if (total > UINT32_MAX - name_len)
        return NULL;
    struct frame *f = frame_new(total + name_len);
    if (f == NULL)
        return NULL;
    uint8_t *w = f->data;
    for (size_t i = 0; i < n; i++) {
        memcpy(w, msgs[i].frame->data, msgs[i].frame->len);
        w += msgs[i].frame->len;
    }
    f->len = (uint32_t)total;
    memcpy(w, msgs[0].frame->data + msgs[0].frame->len, name_len);
    return f;
}

void hub_deliver(struct loop *loop, struct loop_msg *msgs, size_t n)
{
    struct frame *first = msgs[0].frame;
    const uint8_t *name = first->data + first->len;
    struct local_channel *lc =
        local_find(loop->hub, hash_name(name, msgs[0].arg), name, msgs[0].arg);
    atomic_fetch_add_explicit(&loop->stats.publications, n, memory_order_relaxed);
    if (lc == NULL)
        goto out;
    struct frame *all = concat_frames(msgs, n);
    if (all == NULL && n > 1) {
        /* Out of memory for the concatenation: deliver one by one. */
        for (size_t i = 0; i < n; i++) {
            frame_ref(msgs[i].frame);
            hub_deliver(loop, &msgs[i], 1);
        }
        goto out;
    }
    struct frame *f = all ? all : first;
    uint64_t first_offset = msgs[0].offset, last_offset = msgs[n - 1].offset;
    unsigned sent = 0, subs = lc->n, extra = 0;
    /* One atomic add for all of this loop's deliveries; the unused ones go back below. */
    frame_ref_n(f, subs);
    /* Every subscriber that cannot take the publication is disconnected (3008) at once:
     * none misses one silently. The walk goes from the last subscriber to the first, so
     * that dropping one (its slot is refilled from the end, already visited) leaves the
     * ones still to visit in place; once lc->n reaches 0, lc is gone and not touched. */
    for (uint32_t i = subs; i-- > 0;) {
        struct hub_sub *s = lc->subs[i];
        struct conn *c = s->conn;
        int r;
        if (first_offset && s->min_offset >= first_offset) {
            /* Recovered up to min_offset in its subscribe reply: skip those (rare). */
            if (s->min_offset >= last_offset)
                continue;
            r = 0;
            for (size_t k = 0; k < n && r == 0; k++) {
                if (msgs[k].offset <= s->min_offset)
                    continue;
                r = conn_send_frame(c, msgs[k].frame);
                extra += r == 0;
            }
        } else {
            r = conn_send_frame_owned(c, f);
            sent += r == 0;
        }
        if (r < 0)
            session_disconnect(c, PROTO_DISC_SLOW, "slow");
    }
    if (sent < subs)
        frame_unref_unused(f, subs - sent);
    atomic_fetch_add_explicit(&loop->stats.messages_out, (uint64_t)sent * n + extra,
                              memory_order_relaxed);
    if (all)
        frame_unref(all);
out:
    for (size_t i = 0; i < n; i++)
        frame_unref(msgs[i].frame);
}

/* ---- queries ---- */

void hub_counts(uint64_t *channels, uint64_t *subscriptions)
{
    uint64_t nch = 0, nsub = 0;
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &shards[i];
        pthread_mutex_lock(&s->lock);
        nch += s->count;
        for (size_t b = 0; b < s->nbuckets; b++)
            for (struct channel *ch = s->buckets[b]; ch; ch = ch->next)
                nsub += ch->num_subs;
        pthread_mutex_unlock(&s->lock);
    }
    *channels = nch;
    *subscriptions = nsub;
}

static int contains(const char *hay, size_t n, const uint8_t *needle, size_t m)
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

void hub_channels_json(struct buf *out, const uint8_t *pattern, size_t pattern_len)
{
    int first = 1;
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &shards[i];
        pthread_mutex_lock(&s->lock);
        for (size_t b = 0; b < s->nbuckets; b++) {
            for (struct channel *ch = s->buckets[b]; ch; ch = ch->next) {
                if (!contains(ch->name, ch->name_len, pattern, pattern_len))
                    continue;
                if (!first)
                    buf_append_char(out, ',');
                first = 0;
                buf_append_json_str(out, (const uint8_t *)ch->name, ch->name_len);
                buf_appendf(out, ":{\"num_clients\":%u}", ch->num_subs);
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
}

int hub_history(const uint8_t *name, size_t len, const struct ns_opts *ns, int64_t limit,
                int has_since, uint64_t since_offset, const uint8_t *since_epoch,
                size_t since_epoch_len, int reverse, struct buf *out, struct hub_stream_pos *pos)
{
    if (ns == NULL || ns->history_size == 0)
        return -108;
    uint64_t hash = hash_name(name, len);
    struct shard *sh = shard_of(hash);
    pthread_mutex_lock(&sh->lock);
    struct channel *ch = channel_find(sh, hash, name, len);
    int limited = 0;
    if (ch == NULL)
        ch = channel_create(sh, hash, name, len, &limited);
    if (ch == NULL) {
        pthread_mutex_unlock(&sh->lock);
        return limited ? -106 : -100;
    }
    channel_ensure_stream(ch, ns);
    pos->offset = ch->top_offset;
    memcpy(pos->epoch, ch->epoch, sizeof(pos->epoch));
    if (has_since &&
        (since_epoch_len != HUB_EPOCH_LEN || memcmp(since_epoch, ch->epoch, HUB_EPOCH_LEN) != 0)) {
        pthread_mutex_unlock(&sh->lock);
        return -112;
    }
    struct history *h = ch->hist;
    if (h && limit != 0) {
        history_expire(h, server_now_ms(), ch->history_ttl_ms);
        uint64_t n = 0, max = limit < 0 ? UINT64_MAX : (uint64_t)limit;
        int first = 1;
        for (uint32_t k = 0; k < h->count && n < max; k++) {
            uint32_t i = reverse ? h->count - 1 - k : k;
            const struct history_entry *e = history_at(h, i);
            /* since: forward, the publications after it; reverse, those before it,
             * newest first (as Centrifugo). */
            if (has_since && (reverse ? e->offset >= since_offset : e->offset <= since_offset))
                continue;
            if (!first)
                buf_append_char(out, ',');
            first = 0;
            buf_append(out, e->frame->data + e->pub_off, e->pub_len);
            n++;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    return 0;
}

void hub_history_remove(const uint8_t *name, size_t len)
{
    uint64_t hash = hash_name(name, len);
    struct shard *sh = shard_of(hash);
    pthread_mutex_lock(&sh->lock);
    struct channel *ch = channel_find(sh, hash, name, len);
    if (ch && ch->hist)
        history_clear(ch->hist);
    pthread_mutex_unlock(&sh->lock);
}

void hub_sweep(uint64_t now_ms)
{
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &shards[i];
        pthread_mutex_lock(&s->lock);
        for (size_t b = 0; b < s->nbuckets; b++) {
            for (struct channel *ch = s->buckets[b], *next; ch; ch = next) {
                next = ch->next;
                if (ch->hist == NULL)
                    continue;
                uint32_t left = history_expire(ch->hist, now_ms, ch->history_ttl_ms);
                /* An idle stream without subscribers is forgotten once its history
                 * expired: its epoch goes with it, so a late recovery is refused. */
                if (left == 0 && ch->num_subs == 0 && ch->history_ttl_ms &&
                    ch->last_pub_ms + ch->history_ttl_ms <= now_ms)
                    channel_remove(s, ch);
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
}

int hub_presence(const uint8_t *name, size_t len, const struct ns_opts *ns, struct buf *out,
                 uint64_t *num_clients, uint64_t *num_users)
{
    if (ns == NULL || !ns->presence)
        return -108;
    uint64_t hash = hash_name(name, len);
    struct shard *sh = shard_of(hash);
    uint64_t clients = 0, users = 0;
    pthread_mutex_lock(&sh->lock);
    struct channel *ch = channel_find(sh, hash, name, len);
    if (ch) {
        clients = ch->num_presence;
        users = ch->presence_users ? ch->presence_users->count : 0;
    }
    for (struct presence *p = ch && out ? ch->presence : NULL; p; p = p->next) {
        if (p != ch->presence)
            buf_append_char(out, ',');
        buf_append_char(out, '"');
        buf_append_str(out, p->client);
        buf_append_str(out, "\":");
        buf_append(out, p->info, p->info_len);
    }
    pthread_mutex_unlock(&sh->lock);
    *num_clients = clients;
    *num_users = users;
    return 0;
}
