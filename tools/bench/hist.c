/* Log-linear latency histogram (see hist.h). */
#include "hist.h"

#include <string.h>

void bench_hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

static unsigned bucket_of(uint64_t v)
{
    if (v < 128)
        return (unsigned)v;
    unsigned m = 63u - (unsigned)__builtin_clzll(v); /* 7..63 */
    unsigned shift = m - 6;                          /* v >> shift is in [64, 128) */
    return 128u + (m - 7) * 64u + (unsigned)((v >> shift) - 64);
}

/* Largest value that falls in bucket i. */
static uint64_t bucket_top(unsigned i)
{
    if (i < 128)
        return i;
    unsigned m = (i - 128) / 64 + 7;
    unsigned sub = (i - 128) % 64 + 64;
    unsigned shift = m - 6;
    uint64_t low = (uint64_t)sub << shift;
    return low + ((uint64_t)1 << shift) - 1;
}

void bench_hist_record(struct hist *h, uint64_t v)
{
    h->counts[bucket_of(v)]++;
    h->count++;
    if (v > h->max)
        h->max = v;
    if (v < h->min)
        h->min = v;
}

void bench_hist_merge(struct hist *dst, const struct hist *src)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->count += src->count;
    if (src->max > dst->max)
        dst->max = src->max;
    if (src->min < dst->min)
        dst->min = src->min;
}

uint64_t bench_hist_quantile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q >= 1.0)
        return h->max;
    /* rank of the sample at quantile q, 1-based: ceil(q * count), at least 1 */
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t top = bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

unsigned bench_win_bucket(uint64_t ns)
{
    uint64_t us = ns / 1000;
    if (us < 16)
        return (unsigned)us;
    unsigned m = 63u - (unsigned)__builtin_clzll(us); /* 4.. */
    if (m > 23)
        return WIN_BUCKETS - 1;
    return 16u + (m - 4) * 8u + (unsigned)((us >> (m - 3)) & 7);
}

uint64_t bench_win_top_ns(unsigned b)
{
    if (b < 16)
        return (uint64_t)(b + 1) * 1000 - 1;
    unsigned m = (b - 16) / 8 + 4;
    uint64_t sub = (b - 16) % 8 + 8;
    return ((sub + 1) << (m - 3)) * 1000 - 1;
}
