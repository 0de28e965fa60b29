/* Per-loop counters (see metrics.h). */
#include "metrics/metrics.h"

#include <stdlib.h>

struct metrics_slot *metrics_slots;
unsigned metrics_nslots;

int metrics_init(unsigned nslots)
{
    if (nslots == 0)
        nslots = 1;
    metrics_free();
    metrics_slots = aligned_alloc(64, nslots * sizeof(struct metrics_slot));
    if (metrics_slots == NULL)
        return -1;
    for (unsigned i = 0; i < nslots; i++)
        for (int m = 0; m < METRIC_COUNT; m++)
            atomic_init(&metrics_slots[i].v[m], 0);
    metrics_nslots = nslots;
    return 0;
}

void metrics_free(void)
{
    free(metrics_slots);
    metrics_slots = NULL;
    metrics_nslots = 0;
}

uint64_t metrics_sum(enum metric m)
{
    int64_t sum = 0;
    for (unsigned i = 0; i < metrics_nslots; i++)
        sum += atomic_load_explicit(&metrics_slots[i].v[m], memory_order_relaxed);
    return sum > 0 ? (uint64_t)sum : 0;
}
