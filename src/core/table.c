/* Intrusive chained hash table (see table.h). */
#include "core/table.h"

#include <stdlib.h>

uint64_t table_hash(const void *p, size_t len)
{
    const uint8_t *s = p;
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static unsigned log2_of(size_t n)
{
    unsigned k = 0;
    while (((size_t)1 << k) < n)
        k++;
    return k;
}

int table_init(struct table *t, size_t nbuckets)
{
    if (nbuckets < 2)
        nbuckets = 2;
    unsigned k = log2_of(nbuckets);
    t->buckets = calloc((size_t)1 << k, sizeof(*t->buckets));
    if (t->buckets == NULL)
        return -1;
    t->nbuckets = (size_t)1 << k;
    t->shift = 64 - k;
    t->count = 0;
    return 0;
}

void table_destroy(struct table *t)
{
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = t->count = 0;
}

static void grow(struct table *t)
{
    struct table bigger;
    if (table_init(&bigger, t->nbuckets * 2) != 0)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (struct table_node *n = t->buckets[i], *next; n; n = next) {
            next = n->next;
            struct table_node **slot = table_slot(&bigger, n->hash);
            n->next = *slot;
            *slot = n;
        }
    }
    free(t->buckets);
    t->buckets = bigger.buckets;
    t->nbuckets = bigger.nbuckets;
    t->shift = bigger.shift;
}

void table_insert(struct table *t, struct table_node *n)
{
    if (t->count >= t->nbuckets)
        grow(t);
    struct table_node **slot = table_slot(t, n->hash);
    n->next = *slot;
    *slot = n;
    t->count++;
}

void table_remove(struct table *t, struct table_node *n)
{
    for (struct table_node **pp = table_slot(t, n->hash); *pp; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            t->count--;
            return;
        }
    }
}
