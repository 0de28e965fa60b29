/* History ring: size bound, order, TTL expiry, offsets. */
#include <stdlib.h>

#include "core/frame.h"
#include "engine/history.h"
#include "test.h"

static struct history_entry entry(uint64_t offset, uint64_t time_ms)
{
    struct history_entry e = {offset, time_ms, frame_from((const uint8_t *)"x", 1), 1, 0};
    return e;
}

TEST(test_history_keeps_at_most_cap_newest_entries)
{
    struct history *h = history_new(3);
    for (uint64_t i = 1; i <= 5; i++) {
        struct history_entry e = entry(i, 1000);
        history_push(h, &e);
    }
    CHECK_EQ(h->count, 3);
    CHECK_EQ(history_first_offset(h), 3);
    CHECK_EQ(history_at(h, 0)->offset, 3);
    CHECK_EQ(history_at(h, 2)->offset, 5);
    history_free(h);
}

TEST(test_history_expire_drops_only_old_entries)
{
    struct history *h = history_new(10);
    for (uint64_t i = 1; i <= 4; i++) {
        struct history_entry e = entry(i, i * 1000);
        history_push(h, &e);
    }
    CHECK_EQ(history_expire(h, 3500, 1000), 2); /* entries at 1000 and 2000 expire */
    CHECK_EQ(history_first_offset(h), 3);
    CHECK_EQ(history_expire(h, 3500, 0), 2); /* ttl 0 keeps everything */
    CHECK_EQ(history_expire(h, 5000, 1000), 0);
    CHECK_EQ(history_first_offset(h), 0);
    history_free(h);
}

TEST(test_history_clear_empties_and_ring_reuses_slots)
{
    struct history *h = history_new(2);
    for (uint64_t i = 1; i <= 3; i++) {
        struct history_entry e = entry(i, 0);
        history_push(h, &e);
    }
    history_clear(h);
    CHECK_EQ(h->count, 0);
    struct history_entry e = entry(9, 0);
    history_push(h, &e);
    CHECK_EQ(history_at(h, 0)->offset, 9);
    history_free(h);
}

TEST(test_history_zero_capacity_is_refused)
{
    CHECK(history_new(0) == NULL);
}

TEST(test_history_grows_on_demand_up_to_its_bound_keeping_order)
{
    struct history *h = history_new(1000);
    CHECK(h->cap < 16); /* one publication does not cost history_size entries */
    for (uint64_t i = 1; i <= 2500; i++) {
        struct history_entry e = entry(i, 0);
        history_push(h, &e);
        if (i == 3) {
            /* wrap the small ring before it grows */
            CHECK_EQ(history_expire(h, 1, 1), 0);
        }
    }
    CHECK_EQ(h->cap, 1000);
    CHECK_EQ(h->count, 1000);
    for (uint32_t i = 0; i < 1000; i++)
        CHECK_EQ(history_at(h, i)->offset, 1501 + i);
    history_free(h);
}

int main(void)
{
    RUN(test_history_keeps_at_most_cap_newest_entries);
    RUN(test_history_expire_drops_only_old_entries);
    RUN(test_history_clear_empties_and_ring_reuses_slots);
    RUN(test_history_zero_capacity_is_refused);
    RUN(test_history_grows_on_demand_up_to_its_bound_keeping_order);
    return test_summary("engine_history");
}
