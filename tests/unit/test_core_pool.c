/* Unit tests for core/pool: blocks are distinct and aligned, come back for reuse, are
 * walked exactly when handed out, and empty chunks are given back. */
#include "core/pool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

TEST(test_pool_blocks_are_distinct_aligned_and_reused)
{
    struct pool p;
    pool_init(&p, 100);
    CHECK_EQ(p.size, 104);
    enum { N = 8000 }; /* thirteen chunks */
    static uint8_t *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = pool_get(&p);
        CHECK(b[i] != NULL);
        CHECK_EQ((uintptr_t)b[i] % 8, 0);
        memset(b[i], (uint8_t)i, 100);
    }
    CHECK_EQ(p.used, N);
    for (int i = 0; i < N; i++)
        CHECK(b[i][0] == (uint8_t)i && b[i][99] == (uint8_t)i); /* no overlap */
    uint8_t *freed = b[17];
    pool_put(&p, freed);
    CHECK(pool_get(&p) == freed); /* the freed block is the next one handed out */
    for (int i = 0; i < N; i++)
        pool_put(&p, b[i]);
    CHECK_EQ(p.used, 0);
    CHECK_EQ(p.empty, 8); /* emptied chunks were freed, eight kept against churn */
    for (int i = 0; i < N; i++) /* a second burst takes the kept chunks first */
        CHECK((b[i] = pool_get(&p)) != NULL);
    CHECK_EQ(p.empty, 0);
    for (int i = 0; i < N; i++)
        pool_put(&p, b[i]);
    CHECK_EQ(p.empty, 8);
    pool_put(&p, NULL);
    pool_drain(&p);
    CHECK(p.first == NULL);
}

static void count_and_put_odd(void *block, void *ud)
{
    struct pool *p = ((void **)ud)[0];
    int *seen = ((void **)ud)[1];
    int i = *(int *)block;
    seen[i]++;
    if (i % 2)
        pool_put(p, block);
}

TEST(test_pool_each_walks_the_blocks_handed_out)
{
    struct pool p;
    pool_init(&p, sizeof(int));
    enum { N = 40000 };
    static int *b[N];
    static int seen[N];
    for (int i = 0; i < N; i++) {
        b[i] = pool_get(&p);
        *b[i] = i;
    }
    for (int i = 0; i < N; i += 3)
        pool_put(&p, b[i]);
    void *ud[2] = {&p, seen};
    pool_each(&p, count_and_put_odd, ud); /* the callback puts half of them back */
    int wrong = 0;
    for (int i = 0; i < N; i++)
        wrong += seen[i] != (i % 3 ? 1 : 0);
    CHECK_EQ(wrong, 0);
    memset(seen, 0, sizeof(seen));
    size_t left = p.used;
    pool_each(&p, count_and_put_odd, ud);
    size_t walked = 0;
    for (int i = 0; i < N; i++) {
        walked += (size_t)seen[i];
        CHECK(seen[i] == 0 || (i % 3 && i % 2 == 0));
    }
    CHECK_EQ(walked, left);
    pool_drain(&p);
}

int main(void)
{
    RUN(test_pool_blocks_are_distinct_aligned_and_reused);
    RUN(test_pool_each_walks_the_blocks_handed_out);
    return test_summary("core_pool");
}
