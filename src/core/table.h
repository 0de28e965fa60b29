/* An intrusive chained hash table: entries embed a struct table_node and stay owned
 * by the caller; the table owns only its bucket array. Grows by doubling at load 1.
 * Not thread-safe (the caller's lock or loop guards it). Not a map with its own keys:
 * the caller compares keys while walking a bucket. */
#ifndef HERALD_CORE_TABLE_H
#define HERALD_CORE_TABLE_H

#include <stddef.h>
#include <stdint.h>

struct table_node {
    struct table_node *next;
    uint64_t hash;
};

struct table {
    struct table_node **buckets;
    unsigned shift; /* 64 - log2(nbuckets) */
    size_t nbuckets, count;
};

/* FNV-1a over p[0..len) with a final mix: the same bytes hash the same everywhere. */
uint64_t table_hash(const void *p, size_t len);

/* An empty table of nbuckets (a power of two >= 2). Returns 0 or -1 (out of memory). */
int table_init(struct table *t, size_t nbuckets);
/* Free the bucket array; the entries are the caller's. */
void table_destroy(struct table *t);

/* The bucket that holds the chain of entries with this hash. Fibonacci hashing takes
 * the high bits, so callers may use the low bits of the same hash for something else
 * (the hub picks shards with them). */
static inline struct table_node **table_slot(const struct table *t, uint64_t hash)
{
    return &t->buckets[(hash * 11400714819323198485ull) >> t->shift];
}

/* The chain itself (walk it with ->next, compare ->hash, then the caller's key). */
static inline struct table_node *table_bucket(const struct table *t, uint64_t hash)
{
    return *table_slot(t, hash);
}

/* Link n (n->hash set by the caller; borrowed until table_remove). Never fails: when
 * doubling the buckets runs out of memory the chains just get longer. */
void table_insert(struct table *t, struct table_node *n);
/* Unlink n, which must be in t. */
void table_remove(struct table *t, struct table_node *n);

/* Visit every entry: for (i = 0; i < t->nbuckets; i++) for (n = t->buckets[i]; n; n = next). */

#endif
