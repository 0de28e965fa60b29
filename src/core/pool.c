/* A slab of fixed-size blocks (see pool.h). A chunk is POOL_CHUNK bytes aligned on its
 * size, so a block finds its chunk by masking its address: a header, a bitmap of the
 * blocks handed out (for pool_each), then the blocks. Freed blocks are linked through
 * their first word; blocks never handed out are carved in order, so a fresh chunk's
 * pages stay untouched until they are needed. */
#include "core/pool.h"

#include <assert.h>
#include <stdlib.h>
#include <sys/mman.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(POOL_ASAN)
/* A block in the slab is poisoned while it is free: a use after pool_put is reported as
 * one after free() would be. */
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define POOL_CHUNK (64 * 1024)
/* Empty chunks kept against churn: a burst that fills a few chunks and gives them back
 * (the output queues of one API batch, one per connection it reaches) finds them again
 * instead of mapping, faulting in and unmapping them each time. At most
 * POOL_KEEP * 64 KB per pool stays held while empty. */
#define POOL_KEEP 8

struct pool_chunk {
    struct pool_chunk *next, *prev; /* pool->first .. last */
    void *free;                     /* blocks put back, linked through their first word */
    uint32_t used;                  /* blocks handed out */
    uint32_t carved;                /* blocks ever handed out: the rest are untouched */
    char *blocks;
    uint64_t map[]; /* bit i: block i is handed out */
};

/* A chunk aligned on its size. From the system, not malloc (whose aligned blocks this
 * large come from a mapping twice their size, with a header page touched before each):
 * a mapping of twice the size, trimmed to the aligned half. Under AddressSanitizer from
 * its allocator, whose leak check then sees the pointers the blocks hold. */
static void *chunk_alloc(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(POOL_ASAN)
    return aligned_alloc(POOL_CHUNK, POOL_CHUNK);
#else
    char *m = mmap(NULL, 2 * POOL_CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    char *c = (char *)(((uintptr_t)m + POOL_CHUNK - 1) & ~(uintptr_t)(POOL_CHUNK - 1));
    if (c > m)
        munmap(m, (size_t)(c - m));
    munmap(c + POOL_CHUNK, (size_t)(m + POOL_CHUNK - c));
    return c;
#endif
}

static void chunk_free(void *c)
{
#if defined(__SANITIZE_ADDRESS__) || defined(POOL_ASAN)
    free(c);
#else
    munmap(c, POOL_CHUNK);
#endif
}

static size_t map_words(uint32_t n)
{
    return (n + 63) / 64;
}

void pool_init(struct pool *p, size_t size)
{
    assert(size <= 4096);
    size = size < sizeof(void *) ? sizeof(void *) : (size + 7) & ~(size_t)7;
    p->first = p->last = NULL;
    p->size = size;
    p->empty = 0;
    p->used = 0;
    p->walking = 0;
    /* The most blocks that fit after the header and its bitmap. */
    uint32_t n = (uint32_t)((POOL_CHUNK - sizeof(struct pool_chunk)) / size);
    while (sizeof(struct pool_chunk) + map_words(n) * 8 + (size_t)n * size > POOL_CHUNK)
        n--;
    p->per_chunk = n;
}

static struct pool_chunk *chunk_of(const void *block)
{
    return (struct pool_chunk *)((uintptr_t)block & ~(uintptr_t)(POOL_CHUNK - 1));
}

static void unlink_chunk(struct pool *p, struct pool_chunk *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        p->first = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        p->last = c->prev;
}

static void push_front(struct pool *p, struct pool_chunk *c)
{
    c->prev = NULL;
    c->next = p->first;
    if (p->first)
        p->first->prev = c;
    else
        p->last = c;
    p->first = c;
}

static void push_back(struct pool *p, struct pool_chunk *c)
{
    c->next = NULL;
    c->prev = p->last;
    if (p->last)
        p->last->next = c;
    else
        p->first = c;
    p->last = c;
}

static int chunk_full(const struct pool *p, const struct pool_chunk *c)
{
    return c->used == p->per_chunk;
}

void *pool_get(struct pool *p)
{
    struct pool_chunk *c = p->first;
    if (c == NULL || chunk_full(p, c)) {
        c = chunk_alloc();
        if (c == NULL)
            return NULL;
        size_t words = map_words(p->per_chunk);
        c->free = NULL;
        c->used = c->carved = 0;
        for (size_t i = 0; i < words; i++)
            c->map[i] = 0;
        c->blocks = (char *)&c->map[words];
        POISON(c->blocks, (size_t)p->per_chunk * p->size);
        push_front(p, c);
        p->empty++;
    }
    void *b;
    if (c->free) {
        b = c->free;
        UNPOISON(b, p->size);
        c->free = *(void **)b;
        /* Blocks come back a whole burst before they are wanted again (the output queues
         * of one flush): start loading the next one's link now. */
        if (c->free != NULL)
            __builtin_prefetch(c->free);
    } else {
        b = c->blocks + (size_t)c->carved++ * p->size;
        UNPOISON(b, p->size);
    }
    if (c->used++ == 0)
        p->empty--;
    size_t i = (size_t)((char *)b - c->blocks) / p->size;
    c->map[i / 64] |= 1ull << (i % 64);
    p->used++;
    if (chunk_full(p, c)) { /* the chunks with room stay in front */
        unlink_chunk(p, c);
        push_back(p, c);
    }
    return b;
}

/* An empty chunk goes, unless it is one of the POOL_KEEP kept against churn. */
static void maybe_release(struct pool *p, struct pool_chunk *c)
{
    if (c->used != 0 || p->empty <= POOL_KEEP)
        return;
    unlink_chunk(p, c);
    p->empty--;
    UNPOISON(c->blocks, (size_t)p->per_chunk * p->size);
    chunk_free(c);
}

static void put(struct pool *p, void *block, int release)
{
    struct pool_chunk *c = chunk_of(block);
    size_t i = (size_t)((char *)block - c->blocks) / p->size;
    assert(c->map[i / 64] & (1ull << (i % 64)));
    c->map[i / 64] &= ~(1ull << (i % 64));
    int was_full = chunk_full(p, c);
    *(void **)block = c->free;
    c->free = block;
    POISON(block, p->size);
    p->used--;
    if (--c->used == 0)
        p->empty++;
    if (was_full) {
        unlink_chunk(p, c);
        push_front(p, c);
    }
    if (release)
        maybe_release(p, c);
}

void pool_put(struct pool *p, void *block)
{
    if (block != NULL)
        put(p, block, !p->walking);
}

void pool_each(struct pool *p, void (*fn)(void *block, void *ud), void *ud)
{
    /* fn may put its block back: its chunk may then move to the front (its successor is
     * taken first), and no chunk is freed during the walk. */
    p->walking = 1;
    for (struct pool_chunk *c = p->first, *next; c; c = next) {
        next = c->next;
        for (size_t w = 0; w < map_words(c->carved); w++) {
            uint64_t bits = c->map[w];
            while (bits) {
                unsigned bit = (unsigned)__builtin_ctzll(bits);
                bits &= bits - 1;
                fn(c->blocks + (w * 64 + bit) * p->size, ud);
            }
        }
    }
    p->walking = 0;
    /* Empty chunks beyond those kept go now. */
    for (struct pool_chunk *c = p->first, *next; c && p->empty > POOL_KEEP; c = next) {
        next = c->next;
        maybe_release(p, c);
    }
}

void pool_drain(struct pool *p)
{
    for (struct pool_chunk *c = p->first, *next; c; c = next) {
        next = c->next;
        UNPOISON(c->blocks, (size_t)p->per_chunk * p->size);
        chunk_free(c);
    }
    p->first = p->last = NULL;
    p->empty = 0;
    p->used = 0;
}
