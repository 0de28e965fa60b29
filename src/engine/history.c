/* History ring of the memory engine (see history.h). */
#include "engine/history.h"

#include <stdlib.h>

#include "core/frame.h"
#include "metrics/metrics.h"

#define HISTORY_FIRST_CAP 4

/* herald_history_entries and _bytes: counted on whichever thread changes the ring (the
 * channel's lock is held); the gauges are the sums. */
static void counted(const struct history_entry *e, int sign)
{
    metrics_count(METRIC_HISTORY_ENTRIES, sign);
    metrics_count(METRIC_HISTORY_BYTES, sign * (int64_t)e->pub->len);
}

static void drop_head(struct history *h)
{
    counted(&h->e[h->head], -1);
    frame_unref(h->e[h->head].pub);
    h->head = (h->head + 1) % h->cap;
    h->count--;
}

struct history *history_new(uint32_t max)
{
    if (max == 0)
        return NULL;
    struct history *h = malloc(sizeof(*h));
    if (h == NULL)
        return NULL;
    h->max = max;
    h->cap = max < HISTORY_FIRST_CAP ? max : HISTORY_FIRST_CAP;
    h->count = h->head = 0;
    h->e = malloc((size_t)h->cap * sizeof(*h->e));
    if (h->e == NULL) {
        free(h);
        return NULL;
    }
    return h;
}

/* Double the ring (up to max), unwrapping it. Returns 0, or -1 out of memory. */
static int grow(struct history *h)
{
    uint32_t cap = h->cap > h->max / 2 ? h->max : h->cap * 2;
    struct history_entry *e = malloc((size_t)cap * sizeof(*e));
    if (e == NULL)
        return -1;
    for (uint32_t i = 0; i < h->count; i++)
        e[i] = h->e[(h->head + i) % h->cap];
    free(h->e);
    h->e = e;
    h->cap = cap;
    h->head = 0;
    return 0;
}

void history_clear(struct history *h)
{
    while (h->count)
        drop_head(h);
    h->head = 0;
}

void history_free(struct history *h)
{
    if (h == NULL)
        return;
    history_clear(h);
    free(h->e);
    free(h);
}

void history_push(struct history *h, const struct history_entry *e)
{
    if (h->count == h->cap && (h->cap == h->max || grow(h) != 0))
        drop_head(h);
    h->e[(h->head + h->count) % h->cap] = *e;
    h->count++;
    counted(e, 1);
}

uint32_t history_expire(struct history *h, uint64_t now_ms, uint64_t ttl_ms)
{
    if (ttl_ms == 0)
        return h->count;
    while (h->count && h->e[h->head].time_ms + ttl_ms <= now_ms)
        drop_head(h);
    return h->count;
}

const struct history_entry *history_at(const struct history *h, uint32_t i)
{
    return &h->e[(h->head + i) % h->cap];
}

uint64_t history_first_offset(const struct history *h)
{
    return h->count ? h->e[h->head].offset : 0;
}
