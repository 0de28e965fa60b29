/* The memory engine (see engine.h): one node, every stream in this process. A sharded
 * table of channels, each shard under its own mutex, taken once per publication,
 * subscribe and query, never per delivery. Under that lock a publication gets its
 * offset, enters the history ring and is handed to events.publication, so each
 * channel's deliveries leave in offset order and a subscriber's recovery, read under
 * the same lock, is exactly what came before them. Completion callbacks run after the
 * lock is released (they may call the engine again); what they are handed stays valid
 * through references taken under the lock. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/frame.h"
#include "core/rand.h"
#include "core/table.h"
#include "engine/engine.h"
#include "engine/history.h"

#define SHARDS 64
#define IDEMPOTENCY_TTL_MS (5 * 60 * 1000) /* as Centrifugo's idempotent_result_ttl */
#define IDEMPOTENCY_KEYS 16                /* remembered per channel, newest first */
#define IDEMPOTENCY_KEY_MAX 64

/* A member of a channel's presence. */
struct member {
    struct member *next, *prev;
    struct user *user;
    char client[37];
    uint32_t info_len;
    uint8_t info[];
};

/* A user present in a channel with how many of its connections: distinct users are
 * counted as they come and go, never by comparing members (O(1) per query). */
struct user {
    struct table_node node;
    uint32_t conns;
    uint16_t len;
    uint8_t name[];
};

struct idempotent {
    uint64_t time_ms;
    struct engine_pos pos;
    uint8_t len;
    uint8_t key[IDEMPOTENCY_KEY_MAX];
};

struct channel {
    struct table_node node;
    uint64_t top_offset;
    uint64_t last_pub_ms;
    uint32_t history_ttl_ms;
    uint32_t subscribers; /* this node's subscribe calls not undone */
    struct history *hist;
    char epoch[ENGINE_EPOCH_LEN + 1]; /* "" until the channel has a stream */
    struct member *members;
    uint32_t num_members;
    struct table *users; /* user -> struct user, once presence is used */
    struct idempotent *idem; /* IDEMPOTENCY_KEYS slots, once a key is used */
    uint8_t idem_next;
    uint16_t name_len;
    uint8_t name[];
};

struct shard {
    pthread_mutex_t lock;
    struct table channels;
};

struct memory {
    struct shard shards[SHARDS];
    atomic_size_t num_channels;
    size_t max_channels;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct memory *mem(struct engine *e)
{
    return e->state;
}

static struct shard *shard_of(struct memory *m, uint64_t hash)
{
    return &m->shards[hash % SHARDS];
}

static struct channel *channel_find(struct shard *s, uint64_t hash, const uint8_t *name, size_t len)
{
    for (struct table_node *n = table_bucket(&s->channels, hash); n; n = n->next) {
        struct channel *ch = (struct channel *)n;
        if (n->hash == hash && ch->name_len == len && memcmp(ch->name, name, len) == 0)
            return ch;
    }
    return NULL;
}

/* A new channel, or NULL: out of memory (*status ENGINE_ERR_INTERNAL) or past
 * max_channels (ENGINE_ERR_LIMIT). */
static struct channel *channel_create(struct memory *m, struct shard *s, uint64_t hash,
                                      const uint8_t *name, size_t len, int *status)
{
    if (atomic_fetch_add_explicit(&m->num_channels, 1, memory_order_relaxed) >= m->max_channels) {
        atomic_fetch_sub_explicit(&m->num_channels, 1, memory_order_relaxed);
        *status = ENGINE_ERR_LIMIT;
        return NULL;
    }
    struct channel *ch = calloc(1, sizeof(*ch) + len + 1);
    if (ch == NULL) {
        atomic_fetch_sub_explicit(&m->num_channels, 1, memory_order_relaxed);
        *status = ENGINE_ERR_INTERNAL;
        return NULL;
    }
    ch->node.hash = hash;
    ch->name_len = (uint16_t)len;
    memcpy(ch->name, name, len);
    table_insert(&s->channels, &ch->node);
    return ch;
}

static struct channel *channel_get(struct memory *m, struct shard *s, uint64_t hash,
                                   const uint8_t *name, size_t len, int *status)
{
    struct channel *ch = channel_find(s, hash, name, len);
    return ch ? ch : channel_create(m, s, hash, name, len, status);
}

static void users_free(struct table *t)
{
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
}

static void channel_free(struct channel *ch)
{
    history_free(ch->hist);
    while (ch->members) {
        struct member *p = ch->members;
        ch->members = p->next;
        free(p);
    }
    users_free(ch->users);
    free(ch->idem);
    free(ch);
}

static void channel_remove(struct memory *m, struct shard *s, struct channel *ch)
{
    table_remove(&s->channels, &ch->node);
    channel_free(ch);
    atomic_fetch_sub_explicit(&m->num_channels, 1, memory_order_relaxed);
}

/* Is the channel still worth keeping? A stream is kept while it has subscribers or
 * history within its TTL (its epoch goes with it: a late recovery is then refused). */
static int channel_idle(const struct channel *ch, uint64_t now)
{
    if (ch->subscribers || ch->num_members)
        return 0;
    if (ch->epoch[0] == 0)
        return ch->idem == NULL || ch->last_pub_ms + IDEMPOTENCY_TTL_MS <= now;
    return ch->history_ttl_ms && (ch->hist == NULL || ch->hist->count == 0) &&
           ch->last_pub_ms + ch->history_ttl_ms <= now;
}

/* Give a channel of a history namespace its stream: epoch and ring. */
static void ensure_stream(struct channel *ch, const struct engine_stream_opts *o)
{
    if (o == NULL || o->history_size == 0)
        return;
    if (ch->epoch[0] == 0)
        rand_hex(ch->epoch, ENGINE_EPOCH_LEN / 2);
    ch->history_ttl_ms = o->history_ttl * 1000u;
    if (ch->hist == NULL)
        ch->hist = history_new(o->history_size);
}

static void position(const struct channel *ch, struct engine_pos *pos)
{
    pos->offset = ch ? ch->top_offset : 0;
    memcpy(pos->epoch, ch ? ch->epoch : "", ch ? sizeof(pos->epoch) : 1);
}

/* ---- publish ---- */

static const struct idempotent *idem_find(const struct channel *ch, const uint8_t *key,
                                          size_t len, uint64_t now)
{
    if (ch->idem == NULL)
        return NULL;
    for (int i = 0; i < IDEMPOTENCY_KEYS; i++) {
        const struct idempotent *k = &ch->idem[i];
        if (k->len == len && k->time_ms + IDEMPOTENCY_TTL_MS > now && memcmp(k->key, key, len) == 0)
            return k;
    }
    return NULL;
}

static void idem_add(struct channel *ch, const uint8_t *key, size_t len, uint64_t now,
                     const struct engine_pos *pos)
{
    if (ch->idem == NULL) {
        ch->idem = calloc(IDEMPOTENCY_KEYS, sizeof(*ch->idem));
        if (ch->idem == NULL)
            return;
    }
    struct idempotent *k = &ch->idem[ch->idem_next];
    ch->idem_next = (uint8_t)((ch->idem_next + 1) % IDEMPOTENCY_KEYS);
    k->time_ms = now;
    k->pos = *pos;
    k->len = (uint8_t)len;
    memcpy(k->key, key, len);
}

/* The publication as the ring keeps it: data then info in one refcounted block. */
static struct frame *pub_block(const struct engine_pub *pub)
{
    struct frame *f = frame_new(pub->data_len + pub->info_len);
    if (f == NULL)
        return NULL;
    memcpy(f->data, pub->data, pub->data_len);
    if (pub->info_len)
        memcpy(f->data + pub->data_len, pub->info, pub->info_len);
    f->len = (uint32_t)(pub->data_len + pub->info_len);
    return f;
}

static void memory_publish(struct engine *e, const uint8_t *name, size_t len,
                           const struct engine_stream_opts *o, const struct engine_pub *in,
                           const uint8_t *key, size_t key_len, engine_publish_cb cb, void *ud)
{
    struct memory *m = mem(e);
    struct engine_pos pos = {0, ""};
    int history = o && o->history_size > 0;
    if (key_len > IDEMPOTENCY_KEY_MAX) {
        cb(ud, ENGINE_ERR_INTERNAL, &pos);
        return;
    }
    if (!history && key == NULL) {
        /* No stream, nothing to remember: no lock. */
        struct engine_pub pub = *in;
        pub.offset = 0;
        e->events.publication(e->events.ud, name, len, &pub);
        cb(ud, ENGINE_OK, &pos);
        return;
    }
    uint64_t hash = table_hash(name, len);
    struct shard *s = shard_of(m, hash);
    int status = ENGINE_OK;
    pthread_mutex_lock(&s->lock);
    struct channel *ch = channel_get(m, s, hash, name, len, &status);
    if (ch == NULL) {
        pthread_mutex_unlock(&s->lock);
        cb(ud, status, &pos);
        return;
    }
    uint64_t now = now_ms();
    const struct idempotent *seen = key ? idem_find(ch, key, key_len, now) : NULL;
    if (seen) {
        pos = seen->pos;
        pthread_mutex_unlock(&s->lock);
        cb(ud, ENGINE_OK, &pos);
        return;
    }
    struct engine_pub pub = *in;
    pub.offset = 0;
    if (history) {
        ensure_stream(ch, o);
        struct frame *block = ch->hist ? pub_block(in) : NULL;
        if (block == NULL) {
            pthread_mutex_unlock(&s->lock);
            cb(ud, ENGINE_ERR_INTERNAL, &pos);
            return;
        }
        pub.offset = ++ch->top_offset;
        struct history_entry h = {pub.offset, now, block, (uint32_t)in->data_len,
                                  (uint32_t)in->info_len};
        history_push(ch->hist, &h);
    }
    ch->last_pub_ms = now;
    position(ch, &pos);
    if (key)
        idem_add(ch, key, key_len, now, &pos);
    e->events.publication(e->events.ud, name, len, &pub);
    pthread_mutex_unlock(&s->lock);
    cb(ud, ENGINE_OK, &pos);
}

/* ---- reading history ---- */

/* References to history entries taken under the lock, rendered after it. */
struct pub_refs {
    struct engine_pub *pubs;
    struct frame **blocks;
    size_t n;
};

static int refs_reserve(struct pub_refs *r, size_t n)
{
    r->n = 0;
    r->pubs = NULL;
    r->blocks = NULL;
    if (n == 0)
        return 0;
    r->pubs = malloc(n * sizeof(*r->pubs));
    r->blocks = malloc(n * sizeof(*r->blocks));
    if (r->pubs == NULL || r->blocks == NULL) {
        free(r->pubs);
        free(r->blocks);
        r->pubs = NULL;
        r->blocks = NULL;
        return -1;
    }
    return 0;
}

static void refs_add(struct pub_refs *r, const struct history_entry *h)
{
    struct engine_pub *p = &r->pubs[r->n];
    p->data = h->pub->data;
    p->data_len = h->data_len;
    p->info = h->info_len ? h->pub->data + h->data_len : NULL;
    p->info_len = h->info_len;
    p->offset = h->offset;
    r->blocks[r->n++] = frame_ref(h->pub);
}

static void refs_release(struct pub_refs *r)
{
    for (size_t i = 0; i < r->n; i++)
        frame_unref(r->blocks[i]);
    free(r->pubs);
    free(r->blocks);
}

static void memory_history(struct engine *e, const uint8_t *name, size_t len,
                           const struct engine_stream_opts *o, const struct engine_history_query *q,
                           engine_history_cb cb, void *ud)
{
    struct memory *m = mem(e);
    struct engine_pos pos = {0, ""};
    if (o == NULL || o->history_size == 0) {
        cb(ud, ENGINE_ERR_NOT_AVAILABLE, &pos, NULL, 0);
        return;
    }
    uint64_t hash = table_hash(name, len);
    struct shard *s = shard_of(m, hash);
    int status = ENGINE_OK;
    struct pub_refs refs = {NULL, NULL, 0};
    pthread_mutex_lock(&s->lock);
    /* A stream is created by its first reader too, so that its epoch holds from then. */
    struct channel *ch = channel_get(m, s, hash, name, len, &status);
    if (ch == NULL) {
        pthread_mutex_unlock(&s->lock);
        cb(ud, status, &pos, NULL, 0);
        return;
    }
    ensure_stream(ch, o);
    position(ch, &pos);
    if (q->has_since && (q->since_epoch_len != ENGINE_EPOCH_LEN ||
                         memcmp(q->since_epoch, ch->epoch, ENGINE_EPOCH_LEN) != 0)) {
        pthread_mutex_unlock(&s->lock);
        cb(ud, ENGINE_ERR_UNRECOVERABLE, &pos, NULL, 0);
        return;
    }
    struct history *h = ch->hist;
    if (h && q->limit != 0) {
        history_expire(h, now_ms(), ch->history_ttl_ms);
        uint64_t max = q->limit < 0 ? UINT64_MAX : (uint64_t)q->limit;
        if (refs_reserve(&refs, h->count < max ? h->count : (size_t)max) != 0)
            status = ENGINE_ERR_INTERNAL;
        for (uint32_t k = 0; status == ENGINE_OK && k < h->count && refs.n < max; k++) {
            uint32_t i = q->reverse ? h->count - 1 - k : k;
            const struct history_entry *x = history_at(h, i);
            /* since: forward, the publications after it; reverse, those before it,
             * newest first (as Centrifugo). */
            if (q->has_since &&
                (q->reverse ? x->offset >= q->since_offset : x->offset <= q->since_offset))
                continue;
            refs_add(&refs, x);
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (status == ENGINE_OK)
        cb(ud, ENGINE_OK, &pos, refs.pubs, refs.n);
    else
        cb(ud, status, &pos, NULL, 0);
    refs_release(&refs);
}

static void memory_history_remove(struct engine *e, const uint8_t *name, size_t len,
                                  engine_done_cb cb, void *ud)
{
    struct memory *m = mem(e);
    uint64_t hash = table_hash(name, len);
    struct shard *s = shard_of(m, hash);
    pthread_mutex_lock(&s->lock);
    struct channel *ch = channel_find(s, hash, name, len);
    if (ch && ch->hist)
        history_clear(ch->hist);
    pthread_mutex_unlock(&s->lock);
    if (cb)
        cb(ud, ENGINE_OK);
}

static void memory_reset(struct engine *e, const uint8_t *prefix, size_t len, engine_done_cb cb,
                         void *ud)
{
    struct memory *m = mem(e);
    for (size_t i = 0; i < SHARDS; i++) {
        struct shard *s = &m->shards[i];
        pthread_mutex_lock(&s->lock);
        for (size_t b = 0; b < s->channels.nbuckets; b++) {
            for (struct table_node *n = s->channels.buckets[b]; n; n = n->next) {
                struct channel *ch = (struct channel *)n;
                if (ch->name_len < len || memcmp(ch->name, prefix, len) != 0 || ch->epoch[0] == 0)
                    continue;
                if (ch->hist)
                    history_clear(ch->hist);
                rand_hex(ch->epoch, ENGINE_EPOCH_LEN / 2);
                ch->top_offset = 0;
                /* Events run under the lock, as deliveries do. */
                if (ch->subscribers && e->events.lost)
                    e->events.lost(e->events.ud, ch->name, ch->name_len);
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    if (cb)
        cb(ud, ENGINE_OK);
}

/* ---- subscribe ---- */

/* Can the client continue from rec->offset within the held history? */
static int can_recover(struct channel *ch, const struct engine_recovery *rec)
{
    if (ch->epoch[0] == 0 || rec->epoch_len != ENGINE_EPOCH_LEN ||
        memcmp(rec->epoch, ch->epoch, ENGINE_EPOCH_LEN) != 0)
        return 0;
    if (rec->offset > ch->top_offset)
        return 0;
    uint64_t missed = ch->top_offset - rec->offset;
    if (missed == 0)
        return 1;
    if (missed > rec->max_pubs || ch->hist == NULL)
        return 0;
    history_expire(ch->hist, now_ms(), ch->history_ttl_ms);
    return ch->hist->count && history_first_offset(ch->hist) <= rec->offset + 1;
}

static void memory_subscribe(struct engine *e, const uint8_t *name, size_t len,
                             const struct engine_stream_opts *o, const struct engine_recovery *rec,
                             engine_subscribe_cb cb, void *ud)
{
    struct memory *m = mem(e);
    struct engine_pos pos = {0, ""};
    if (o == NULL || o->history_size == 0) {
        /* Every delivery reaches this node's hub already: nothing to follow or read. */
        cb(ud, ENGINE_OK, &pos, 0, NULL, 0);
        return;
    }
    uint64_t hash = table_hash(name, len);
    struct shard *s = shard_of(m, hash);
    int status = ENGINE_OK, recovered = 0;
    struct pub_refs refs = {NULL, NULL, 0};
    pthread_mutex_lock(&s->lock);
    struct channel *ch = channel_get(m, s, hash, name, len, &status);
    if (ch == NULL) {
        pthread_mutex_unlock(&s->lock);
        cb(ud, status, &pos, 0, NULL, 0);
        return;
    }
    ensure_stream(ch, o);
    ch->subscribers++;
    position(ch, &pos);
    if (rec && rec->recover && can_recover(ch, rec)) {
        struct history *h = ch->hist;
        size_t missed = (size_t)(ch->top_offset - rec->offset);
        if (refs_reserve(&refs, missed) != 0) {
            status = ENGINE_ERR_INTERNAL;
        } else {
            recovered = 1;
            for (uint32_t i = 0; h && i < h->count; i++) {
                const struct history_entry *x = history_at(h, i);
                if (x->offset > rec->offset && refs.n < missed)
                    refs_add(&refs, x);
            }
        }
    }
    if (status != ENGINE_OK)
        ch->subscribers--;
    pthread_mutex_unlock(&s->lock);
    cb(ud, status, &pos, recovered, refs.pubs, refs.n);
    refs_release(&refs);
}

static void memory_unsubscribe(struct engine *e, const uint8_t *name, size_t len)
{
    struct memory *m = mem(e);
    uint64_t hash = table_hash(name, len);
    struct shard *s = shard_of(m, hash);
    pthread_mutex_lock(&s->lock);
    struct channel *ch = channel_find(s, hash, name, len);
    if (ch && ch->subscribers) {
        ch->subscribers--;
        /* A channel with a stream stays for its history's TTL (the sweep frees it). */
        if (ch->epoch[0] == 0 && channel_idle(ch, now_ms()))
            channel_remove(m, s, ch);
    }
    pthread_mutex_unlock(&s->lock);
}

/* ---- presence ---- */

static struct user *user_get(struct channel *ch, const uint8_t *name, size_t len)
{
    if (ch->users == NULL) {
        struct table *t = malloc(sizeof(*t));
        if (t == NULL || table_init(t, 8) != 0) {
            free(t);
            return NULL;
        }
        ch->users = t;
    }
    uint64_t hash = table_hash(name, len);
    for (struct table_node *n = table_bucket(ch->users, hash); n; n = n->next) {
        struct user *u = (struct user *)n;
        if (n->hash == hash && u->len == len && memcmp(u->name, name, len) == 0)
            return u;
    }
    struct user *u = malloc(sizeof(*u) + len);
    if (u == NULL)
        return NULL;
    u->node.hash = hash;
    u->conns = 0;
    u->len = (uint16_t)len;
    memcpy(u->name, name, len);
    table_insert(ch->users, &u->node);
    return u;
}

static void memory_presence_add(struct engine *e, const uint8_t *name, size_t len,
                                const char *client, const uint8_t *user, size_t user_len,
                                const uint8_t *info, size_t info_len, int presence,
                                int join_leave, engine_done_cb cb, void *ud)
{
    struct memory *m = mem(e);
    uint64_t hash = table_hash(name, len);
    struct shard *s = shard_of(m, hash);
    int status = ENGINE_OK;
    pthread_mutex_lock(&s->lock);
    if (presence) {
        struct channel *ch = channel_get(m, s, hash, name, len, &status);
        struct member *p = ch ? malloc(sizeof(*p) + info_len) : NULL;
        struct user *u = p ? user_get(ch, user, user_len) : NULL;
        if (u == NULL) {
            free(p);
            if (status == ENGINE_OK)
                status = ENGINE_ERR_INTERNAL;
        } else {
            u->conns++;
            p->user = u;
            snprintf(p->client, sizeof(p->client), "%s", client);
            p->info_len = (uint32_t)info_len;
            memcpy(p->info, info, info_len);
            p->prev = NULL;
            p->next = ch->members;
            if (p->next)
                p->next->prev = p;
            ch->members = p;
            ch->num_members++;
        }
    }
    /* In order with the channel's publications: under the same lock. */
    if (join_leave && status == ENGINE_OK && e->events.join_leave)
        e->events.join_leave(e->events.ud, name, len, 1, info, info_len);
    pthread_mutex_unlock(&s->lock);
    if (cb)
        cb(ud, status);
}

static void memory_presence_remove(struct engine *e, const uint8_t *name, size_t len,
                                   const char *client, const uint8_t *info, size_t info_len,
                                   int presence, int join_leave)
{
    struct memory *m = mem(e);
    uint64_t hash = table_hash(name, len);
    struct shard *s = shard_of(m, hash);
    pthread_mutex_lock(&s->lock);
    struct channel *ch = presence ? channel_find(s, hash, name, len) : NULL;
    struct member *p = ch ? ch->members : NULL;
    while (p && strcmp(p->client, client) != 0)
        p = p->next;
    if (p) {
        if (p->prev)
            p->prev->next = p->next;
        else
            ch->members = p->next;
        if (p->next)
            p->next->prev = p->prev;
        ch->num_members--;
        if (--p->user->conns == 0) {
            table_remove(ch->users, &p->user->node);
            free(p->user);
        }
        free(p);
        if (channel_idle(ch, now_ms()))
            channel_remove(m, s, ch);
    }
    if (join_leave && e->events.join_leave)
        e->events.join_leave(e->events.ud, name, len, 0, info, info_len);
    pthread_mutex_unlock(&s->lock);
}

static void memory_presence(struct engine *e, const uint8_t *name, size_t len,
                            engine_presence_cb cb, void *ud)
{
    struct memory *m = mem(e);
    uint64_t hash = table_hash(name, len);
    struct shard *s = shard_of(m, hash);
    pthread_mutex_lock(&s->lock);
    struct channel *ch = channel_find(s, hash, name, len);
    size_t n = ch ? ch->num_members : 0;
    /* Members are copied out, so that the answer is rendered without the lock. */
    size_t bytes = 0;
    for (struct member *p = ch ? ch->members : NULL; p; p = p->next)
        bytes += p->info_len;
    struct engine_presence *list = n ? malloc(n * sizeof(*list) + n * 37 + bytes) : NULL;
    if (n && list == NULL) {
        pthread_mutex_unlock(&s->lock);
        cb(ud, ENGINE_ERR_INTERNAL, NULL, 0);
        return;
    }
    char *w = list ? (char *)(list + n) : NULL; /* no members: no list, nothing written */
    size_t i = 0;
    for (struct member *p = ch ? ch->members : NULL; p; p = p->next, i++) {
        memcpy(w, p->client, 37);
        list[i].client = w;
        w += 37;
        memcpy(w, p->info, p->info_len);
        list[i].info = (const uint8_t *)w;
        list[i].info_len = p->info_len;
        w += p->info_len;
    }
    pthread_mutex_unlock(&s->lock);
    cb(ud, ENGINE_OK, list, n);
    free(list);
}

static void memory_presence_stats(struct engine *e, const uint8_t *name, size_t len,
                                  engine_stats_cb cb, void *ud)
{
    struct memory *m = mem(e);
    uint64_t hash = table_hash(name, len);
    struct shard *s = shard_of(m, hash);
    pthread_mutex_lock(&s->lock);
    struct channel *ch = channel_find(s, hash, name, len);
    uint64_t clients = ch ? ch->num_members : 0;
    uint64_t users = ch && ch->users ? ch->users->count : 0;
    pthread_mutex_unlock(&s->lock);
    cb(ud, ENGINE_OK, clients, users);
}

/* ---- the rest ---- */

static void memory_channels(struct engine *e, engine_channel_cb cb, void *ud)
{
    struct memory *m = mem(e);
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &m->shards[i];
        pthread_mutex_lock(&s->lock);
        for (size_t b = 0; b < s->channels.nbuckets; b++) {
            for (struct table_node *n = s->channels.buckets[b]; n; n = n->next) {
                struct channel *ch = (struct channel *)n;
                /* under the shard lock: cb must not call the engine */
                cb(ud, ch->name, ch->name_len);
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    cb(ud, NULL, 0);
}

static void memory_sweep(struct engine *e)
{
    struct memory *m = mem(e);
    uint64_t now = now_ms();
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &m->shards[i];
        pthread_mutex_lock(&s->lock);
        for (size_t b = 0; b < s->channels.nbuckets; b++) {
            for (struct table_node *n = s->channels.buckets[b], *next; n; n = next) {
                next = n->next;
                struct channel *ch = (struct channel *)n;
                if (ch->hist)
                    history_expire(ch->hist, now, ch->history_ttl_ms);
                if (channel_idle(ch, now))
                    channel_remove(m, s, ch);
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
}

static void memory_stores(struct engine *e, engine_store_cb cb, void *ud)
{
    /* Nothing outside the process. */
}

/* One node: a control reaches it at once; nodes are not listed (the caller knows the
 * only one). */
static void memory_control(struct engine *e, const uint8_t *msg, size_t len)
{
    if (e->events.control)
        e->events.control(e->events.ud, msg, len);
}

static void memory_announce(struct engine *e, const char *uid, const uint8_t *info, size_t len)
{
}

static void memory_nodes(struct engine *e, engine_nodes_cb cb, void *ud)
{
    cb(ud, ENGINE_OK, NULL, 0);
}

static void memory_close(struct engine *e)
{
    struct memory *m = mem(e);
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &m->shards[i];
        for (size_t b = 0; b < s->channels.nbuckets; b++) {
            for (struct table_node *n = s->channels.buckets[b], *next; n; n = next) {
                next = n->next;
                channel_free((struct channel *)n);
            }
        }
        table_destroy(&s->channels);
        pthread_mutex_destroy(&s->lock);
    }
    free(m);
    free(e);
}

static const struct engine_ops memory_ops = {
    .name = "memory",
    .publish = memory_publish,
    .history = memory_history,
    .history_remove = memory_history_remove,
    .reset = memory_reset,
    .subscribe = memory_subscribe,
    .unsubscribe = memory_unsubscribe,
    .presence_add = memory_presence_add,
    .presence_remove = memory_presence_remove,
    .presence = memory_presence,
    .presence_stats = memory_presence_stats,
    .channels = memory_channels,
    .sweep = memory_sweep,
    .stores = memory_stores,
    .control = memory_control,
    .announce = memory_announce,
    .nodes = memory_nodes,
    /* No .limit: one node, whose local limit tables are the whole truth (engine.h). */
    .close = memory_close,
};

struct engine *engine_memory_open(const struct config *config, const struct engine_events *events,
                                  char *err, size_t errlen)
{
    struct engine *e = calloc(1, sizeof(*e));
    struct memory *m = calloc(1, sizeof(*m));
    if (e == NULL || m == NULL) {
        free(e);
        free(m);
        snprintf(err, errlen, "engine: out of memory");
        return NULL;
    }
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_init(&m->shards[i].lock, NULL);
        if (table_init(&m->shards[i].channels, 64) != 0) {
            snprintf(err, errlen, "engine: out of memory");
            for (int k = 0; k <= i; k++) {
                table_destroy(&m->shards[k].channels);
                pthread_mutex_destroy(&m->shards[k].lock);
            }
            free(m);
            free(e);
            return NULL;
        }
    }
    m->max_channels = config->max_channels ? config->max_channels : 1000000;
    atomic_init(&m->num_channels, 0);
    e->ops = &memory_ops;
    e->events = *events;
    e->state = m;
    return e;
}

struct engine *engine_open(const struct config *config, const struct engine_events *events,
                           const struct engine_host *host, char *err, size_t errlen)
{
    if (strcmp(config->engine, "memory") == 0)
        return engine_memory_open(config, events, err, errlen);
    if (strcmp(config->engine, "redis") == 0) {
        if (host == NULL) {
            snprintf(err, errlen, "engine: redis needs a host to complete on");
            return NULL;
        }
        return engine_redis_open(config, events, host, err, errlen);
    }
    snprintf(err, errlen, "engine: %s is not available in this build", config->engine);
    return NULL;
}

void engine_close(struct engine *e)
{
    if (e)
        e->ops->close(e);
}
