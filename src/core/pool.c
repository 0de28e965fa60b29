/* Free list of fixed-size blocks (see pool.h). */
#include "core/pool.h"

#include <stdlib.h>

void pool_init(struct pool *p, size_t size, size_t max)
{
    p->free = NULL;
    p->n = 0;
    p->max = max;
    p->size = size < sizeof(void *) ? sizeof(void *) : size;
}

void *pool_get(struct pool *p)
{
    void *b = p->free;
    if (b == NULL)
        return malloc(p->size);
    p->free = *(void **)b;
    p->n--;
    return b;
}

void pool_put(struct pool *p, void *block)
{
    if (block == NULL)
        return;
    if (p->n >= p->max) {
        free(block);
        return;
    }
    *(void **)block = p->free;
    p->free = block;
    p->n++;
}

void pool_drain(struct pool *p)
{
    while (p->free) {
        void *b = p->free;
        p->free = *(void **)b;
        free(b);
    }
    p->n = 0;
}
