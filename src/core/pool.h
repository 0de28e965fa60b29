/* A slab of fixed-size blocks for structs that churn and are held by the thousand
 * (connections, sessions, subscriptions, output queues): blocks are carved from 64 KB
 * chunks, so they carry no allocator header or rounding, and a chunk's pages are touched
 * only as its blocks are first handed out. A chunk whose blocks are all back is freed
 * (up to eight empty chunks are kept against churn). One per owner thread; not
 * thread-safe. Not a general allocator: one size per pool. */
#ifndef HERALD_CORE_POOL_H
#define HERALD_CORE_POOL_H

#include <stddef.h>
#include <stdint.h>

struct pool_chunk;

struct pool {
    /* every chunk; those with a free block come first */
    struct pool_chunk *first, *last;
    size_t size;        /* of a block (rounded up to 8 bytes) */
    uint32_t per_chunk; /* blocks a chunk holds */
    uint32_t empty;     /* chunks with no block handed out (at most eight kept) */
    uint32_t walking;   /* in pool_each: no chunk is freed */
    size_t used;        /* blocks handed out */
};

/* Blocks of size bytes (at least a pointer, at most 4 KB), 8-byte aligned. */
void pool_init(struct pool *p, size_t size);
/* A block (uninitialised); NULL out of memory. */
void *pool_get(struct pool *p);
/* Give a block of p back. NULL is ignored. */
void pool_put(struct pool *p, void *block);
/* fn for every block handed out, in no particular order. fn may put the block it is
 * given back, and get no block. */
void pool_each(struct pool *p, void (*fn)(void *block, void *ud), void *ud);
/* Free every chunk: blocks still handed out are gone with them. */
void pool_drain(struct pool *p);

#endif
