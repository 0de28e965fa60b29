/* A free list of fixed-size blocks that churn (connections, output queues): freed
 * blocks are kept, up to max, for the next get. One per owner thread; not
 * thread-safe. Not a general allocator: blocks come from malloc. */
#ifndef HERALD_CORE_POOL_H
#define HERALD_CORE_POOL_H

#include <stddef.h>

struct pool {
    void *free; /* blocks linked through their first word */
    size_t n, max, size;
};

/* Blocks of size bytes (at least a pointer), at most max kept. */
void pool_init(struct pool *p, size_t size, size_t max);
/* A block (uninitialised), recycled or malloc'd; NULL out of memory. */
void *pool_get(struct pool *p);
/* Give a block back (kept, or freed when max are kept). NULL is ignored. */
void pool_put(struct pool *p, void *block);
/* Free every kept block. */
void pool_drain(struct pool *p);

#endif
