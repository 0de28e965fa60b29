/* Refcounted frames (see frame.h). */
#include "core/frame.h"

#include <stdlib.h>
#include <string.h>

struct frame *frame_new(size_t cap)
{
    if (cap > UINT32_MAX)
        return NULL;
    struct frame *f = malloc(sizeof(*f) + cap);
    if (f == NULL)
        return NULL;
    atomic_init(&f->refs, 1);
    f->len = 0;
    atomic_init(&f->stamp, 0);
    return f;
}

struct frame *frame_from(const uint8_t *p, size_t len)
{
    struct frame *f = frame_new(len);
    if (f == NULL)
        return NULL;
    memcpy(f->data, p, len);
    f->len = (uint32_t)len;
    return f;
}

void frame_unref(struct frame *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1)
        free(f);
}
