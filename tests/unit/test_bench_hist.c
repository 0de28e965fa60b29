/* Unit tests for herald-bench's latency histograms: the run's (fine buckets, quantiles
 * capped at the largest sample) and the per-window one (coarse buckets that tile the
 * range without gaps, each within 12.5% of the values it holds). */
#include "../../tools/bench/hist.h"

#include <stdint.h>

#include "test.h"

TEST(test_hist_quantiles_of_a_known_set)
{
    static struct hist h;
    bench_hist_init(&h);
    CHECK_EQ(bench_hist_quantile(&h, 0.99), 0);
    for (uint64_t v = 1; v <= 1000; v++)
        bench_hist_record(&h, v * 1000); /* 1..1000 us */
    CHECK_EQ(h.count, 1000);
    CHECK_EQ(h.min, 1000);
    CHECK_EQ(h.max, 1000000);
    uint64_t p50 = bench_hist_quantile(&h, 0.5), p99 = bench_hist_quantile(&h, 0.99);
    CHECK(p50 >= 500000 && p50 <= 500000 + 500000 / 64);
    CHECK(p99 >= 990000 && p99 <= 1000000);
    CHECK_EQ(bench_hist_quantile(&h, 1.0), 1000000);
}

TEST(test_window_buckets_tile_the_range)
{
    for (unsigned b = 0; b + 1 < WIN_BUCKETS; b++) {
        uint64_t top = bench_win_top_ns(b);
        CHECK_EQ(bench_win_bucket(top), b);
        CHECK_EQ(bench_win_bucket(top + 1), b + 1);
        CHECK(bench_win_top_ns(b + 1) > top);
    }
    CHECK_EQ(bench_win_bucket(0), 0);
    CHECK_EQ(bench_win_bucket(UINT64_MAX / 2), WIN_BUCKETS - 1);
    CHECK_EQ(bench_win_bucket(100ull * 1000000000ull), WIN_BUCKETS - 1); /* 100 s */
}

TEST(test_window_buckets_within_an_eighth)
{
    unsigned last = 0;
    for (uint64_t v = 0; v < (1ull << 24) * 1000; v = v < 1000 ? v + 7 : v + v / 97) {
        unsigned b = bench_win_bucket(v);
        CHECK(b >= last); /* monotonic */
        last = b;
        uint64_t top = bench_win_top_ns(b);
        CHECK(top >= v);
        if (v >= 16000) /* from 16 us: 8 sub-buckets a power of two */
            CHECK((double)top <= (double)v * 1.125 + 1000);
        else
            CHECK(top - v < 1000);
    }
    CHECK_EQ(last, WIN_BUCKETS - 1);
}

int main(void)
{
    RUN(test_hist_quantiles_of_a_known_set);
    RUN(test_window_buckets_tile_the_range);
    RUN(test_window_buckets_within_an_eighth);
    return test_summary("bench_hist");
}
