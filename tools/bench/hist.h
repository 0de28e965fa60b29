/* Latency histogram for herald-bench: HDR-style log-linear buckets (64 linear
 * sub-buckets per power of two, < 1.6% relative error), fixed size, no per-sample
 * storage, mergeable across workers by adding counts. Not thread-safe. */
#ifndef HERALD_BENCH_HIST_H
#define HERALD_BENCH_HIST_H

#include <stdint.h>

/* Values below 128 are exact; above, 64 sub-buckets for each power of two up to 2^63. */
#define HIST_BUCKETS (128 + 57 * 64)

struct hist {
    uint64_t count;
    uint64_t max;
    uint64_t min;
    uint64_t counts[HIST_BUCKETS];
};

void bench_hist_init(struct hist *h);
void bench_hist_record(struct hist *h, uint64_t v);
/* Add every count of src into dst. */
void bench_hist_merge(struct hist *dst, const struct hist *src);
/* The value at quantile q (0..1): the upper edge of the bucket holding it, capped at max.
 * 0 when empty. */
uint64_t bench_hist_quantile(const struct hist *h, double q);

#endif
