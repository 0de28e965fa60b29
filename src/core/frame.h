/* Refcounted immutable byte buffers: one encoded WebSocket frame shared by every
 * subscriber on every loop. Not a growable buffer (see core/buf.h). */
#ifndef HERALD_CORE_FRAME_H
#define HERALD_CORE_FRAME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct frame {
    atomic_uint refs;
    uint32_t len;
    /* A publication's frame: when it was published (metrics_stamp_us), taken by the first
     * write of it to a socket for the publish-to-write histogram; 0 for any other. */
    atomic_uint stamp;
    uint8_t data[];
};

/* A frame with room for cap bytes, len 0, one reference held by the caller.
 * Returns NULL when out of memory. */
struct frame *frame_new(size_t cap);
/* Copy of p[0..len) in a new frame (one reference). */
struct frame *frame_from(const uint8_t *p, size_t len);

static inline struct frame *frame_ref(struct frame *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}
/* Take n references at once (one atomic add for a whole loop's subscribers). */
static inline void frame_ref_n(struct frame *f, unsigned n)
{
    atomic_fetch_add_explicit(&f->refs, n, memory_order_relaxed);
}
/* Give back n references taken with frame_ref_n but not used; the caller must still
 * hold another reference (so this never frees). */
static inline void frame_unref_unused(struct frame *f, unsigned n)
{
    atomic_fetch_sub_explicit(&f->refs, n, memory_order_relaxed);
}
/* Drop one reference; the last one frees the frame. */
void frame_unref(struct frame *f);

#endif
