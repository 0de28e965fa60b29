/* GCRA rates and the keyed tables of limits (see limit.h). */
#include "limit/limit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/table.h"

#define LOCKS 64 /* sets share locks by set number: connects on many loops rarely meet */

void limit_rate_init(struct limit_rate *r, unsigned rate, unsigned burst)
{
    if (rate == 0) {
        r->interval_us = r->window_us = 0;
        return;
    }
    r->interval_us = 1000000u / rate;
    if (r->interval_us == 0)
        r->interval_us = 1;
    r->window_us = r->interval_us * (burst ? burst : rate);
}

struct entry {
    uint64_t hash; /* 0: empty (a key hashing to 0 is stored as 1) */
    uint64_t tat;
    uint32_t count;
    uint16_t len;
    uint8_t key[LIMIT_KEY_BYTES];
};

struct limit_table {
    size_t nsets; /* a power of two */
    pthread_mutex_t locks[LOCKS];
    struct entry *e; /* nsets * LIMIT_WAYS */
};

struct limit_table *limit_table_new(size_t capacity)
{
    size_t nsets = 1;
    while (nsets * LIMIT_WAYS < capacity)
        nsets <<= 1;
    struct limit_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    /* calloc: the pages of a large table are not touched (resident) until used. */
    t->e = calloc(nsets * LIMIT_WAYS, sizeof(*t->e));
    if (t->e == NULL) {
        free(t);
        return NULL;
    }
    t->nsets = nsets;
    for (int i = 0; i < LOCKS; i++)
        pthread_mutex_init(&t->locks[i], NULL);
    return t;
}

void limit_table_free(struct limit_table *t)
{
    if (t == NULL)
        return;
    for (int i = 0; i < LOCKS; i++)
        pthread_mutex_destroy(&t->locks[i]);
    free(t->e);
    free(t);
}

/* table_hash (FNV-1a) mixed again (the 64-bit finalizer of MurmurHash3): FNV's upper bits
 * barely move with the last bytes, so keys that differ only there ("user-1" ... "user-999")
 * crowded into an eighth of the sets, and a few hundred users filled sets of live
 * connections and were refused. Every bit of the result depends on every byte. */
static uint64_t hash_of(const uint8_t *key, size_t len)
{
    uint64_t h = table_hash(key, len);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h ? h : 1;
}

static int same(const struct entry *x, uint64_t hash, const uint8_t *key, size_t len)
{
    size_t n = len < LIMIT_KEY_BYTES ? len : LIMIT_KEY_BYTES;
    return x->hash == hash && x->len == (uint16_t)(len > 0xffff ? 0xffff : len) &&
           memcmp(x->key, key, n) == 0;
}

/* An entry that holds nothing: no count, and a bucket refilled (its TAT passed). */
static int idle(const struct entry *x, uint64_t now_us)
{
    return x->count == 0 && x->tat <= now_us;
}

/* A key's two sets (two choices: a new key goes to either, so a set of live counted keys
 * turns a key away only when both of its sets are full, which a table with room to spare
 * makes vanishingly rare; with one set, a few full ones refused keys while the table was
 * mostly empty), locked for the call. */
struct sets {
    struct entry *a, *b; /* b == a when both choices are the same set */
    pthread_mutex_t *la, *lb;
};

static void lock_sets(struct limit_table *t, uint64_t hash, struct sets *k)
{
    size_t a = (size_t)(hash >> 17) & (t->nsets - 1);
    size_t b = (size_t)(hash >> 41 ^ hash) & (t->nsets - 1);
    k->a = &t->e[a * LIMIT_WAYS];
    k->b = &t->e[b * LIMIT_WAYS];
    k->la = &t->locks[a % LOCKS];
    k->lb = &t->locks[b % LOCKS];
    if (k->la == k->lb) {
        pthread_mutex_lock(k->la);
        return;
    }
    /* Always in address order: two calls locking the same two never wait on each other. */
    pthread_mutex_t *first = k->la < k->lb ? k->la : k->lb;
    pthread_mutex_lock(first);
    pthread_mutex_lock(first == k->la ? k->lb : k->la);
}

static void unlock_sets(struct sets *k)
{
    pthread_mutex_unlock(k->la);
    if (k->lb != k->la)
        pthread_mutex_unlock(k->lb);
}

/* The key's entry in its sets, or NULL. */
static struct entry *find(const struct sets *k, uint64_t hash, const uint8_t *key, size_t len)
{
    for (int i = 0; i < LIMIT_WAYS; i++)
        if (same(&k->a[i], hash, key, len))
            return &k->a[i];
    if (k->b != k->a)
        for (int i = 0; i < LIMIT_WAYS; i++)
            if (same(&k->b[i], hash, key, len))
                return &k->b[i];
    return NULL;
}

/* Where a new key goes: an empty entry, else one that holds nothing, else the idle one
 * whose bucket refills first (forgetting it lets that key a little early: the price of a
 * bound); NULL when every entry of both sets is counted. */
static struct entry *room(const struct sets *k, uint64_t now_us)
{
    struct entry *victim = NULL;
    for (int n = 0; n < 2 * LIMIT_WAYS; n++) {
        if (n == LIMIT_WAYS && k->b == k->a)
            break;
        struct entry *y = n < LIMIT_WAYS ? &k->a[n] : &k->b[n - LIMIT_WAYS];
        if (y->hash == 0 || idle(y, now_us))
            return y;
        if (y->count == 0 && (victim == NULL || y->tat < victim->tat))
            victim = y;
    }
    return victim;
}

enum limit_verdict limit_table_admit(struct limit_table *t, const uint8_t *key, size_t len,
                                     const struct limit_rate *rate, unsigned max, uint64_t now_us)
{
    uint64_t hash = hash_of(key, len);
    struct sets k;
    lock_sets(t, hash, &k);
    struct entry *x = find(&k, hash, key, len);
    if (x == NULL) {
        struct entry *victim = room(&k, now_us);
        if (victim == NULL) {
            unlock_sets(&k);
            return LIMIT_FULL;
        }
        x = victim;
        x->hash = hash;
        x->tat = 0;
        x->count = 0;
        x->len = (uint16_t)(len > 0xffff ? 0xffff : len);
        memcpy(x->key, key, len < LIMIT_KEY_BYTES ? len : LIMIT_KEY_BYTES);
    }
    enum limit_verdict v = LIMIT_OK;
    uint64_t tat = x->tat;
    if (max && x->count >= max)
        v = LIMIT_OVER_COUNT;
    else if (rate && rate->interval_us && !limit_take(rate, &tat, now_us))
        v = LIMIT_OVER_RATE;
    if (v == LIMIT_OK) {
        x->tat = tat;
        if (max)
            x->count++;
    }
    if (idle(x, now_us))
        x->hash = 0; /* a refused count of a key holding nothing else */
    unlock_sets(&k);
    return v;
}

void limit_table_release(struct limit_table *t, const uint8_t *key, size_t len)
{
    uint64_t hash = hash_of(key, len);
    struct sets k;
    lock_sets(t, hash, &k);
    struct entry *x = find(&k, hash, key, len);
    if (x && x->count)
        x->count--;
    unlock_sets(&k);
}

void limit_table_refund(struct limit_table *t, const uint8_t *key, size_t len,
                        const struct limit_rate *rate)
{
    uint64_t hash = hash_of(key, len);
    struct sets k;
    lock_sets(t, hash, &k);
    struct entry *x = find(&k, hash, key, len);
    if (x && x->tat >= rate->interval_us)
        x->tat -= rate->interval_us;
    unlock_sets(&k);
}

unsigned limit_table_count(struct limit_table *t, const uint8_t *key, size_t len)
{
    uint64_t hash = hash_of(key, len);
    struct sets k;
    lock_sets(t, hash, &k);
    struct entry *x = find(&k, hash, key, len);
    unsigned n = x ? x->count : 0;
    unlock_sets(&k);
    return n;
}

size_t limit_table_entries(struct limit_table *t)
{
    size_t n = 0;
    for (size_t s = 0; s < t->nsets; s++) {
        pthread_mutex_t *lock = &t->locks[s % LOCKS];
        pthread_mutex_lock(lock);
        for (int i = 0; i < LIMIT_WAYS; i++)
            n += t->e[s * LIMIT_WAYS + i].hash != 0;
        pthread_mutex_unlock(lock);
    }
    return n;
}

size_t limit_table_capacity(const struct limit_table *t)
{
    return t->nsets * LIMIT_WAYS;
}
