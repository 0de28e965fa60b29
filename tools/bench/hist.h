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

/* Latency by the 100 ms window of the run its publication was sent in (data.t since
 * GO), so that each window can be set against what the machine did during it. Coarse
 * buckets keep a window small (704 bytes): microseconds, exact below 16, then 8
 * sub-buckets a power of two (< 12.5% relative error), the last holding all from 2^24 us
 * (16.8 s) up. */
#define WIN_NS 100000000ull
#define WIN_BUCKETS (16 + 20 * 8)
#define WIN_MAX 36001 /* an hour of windows (25 MB); later publications count in the last */

unsigned bench_win_bucket(uint64_t ns);
/* The upper edge of bucket b, in ns. */
uint64_t bench_win_top_ns(unsigned b);

#endif
