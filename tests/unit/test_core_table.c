/* Unit tests for core/table: insert, find, remove, growth, and the spread of keys that
 * share their low bits (the hub uses those for shards). */
#include "core/table.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

struct item {
    struct table_node node;
    int key;
};

static struct item *find(struct table *t, int key)
{
    uint64_t h = table_hash(&key, sizeof(key));
    for (struct table_node *n = table_bucket(t, h); n; n = n->next)
        if (n->hash == h && ((struct item *)n)->key == key)
            return (struct item *)n;
    return NULL;
}

TEST(test_table_inserts_finds_and_removes)
{
    struct table t;
    CHECK_EQ(table_init(&t, 2), 0);
    static struct item items[5000];
    for (int i = 0; i < 5000; i++) {
        items[i].key = i;
        items[i].node.hash = table_hash(&i, sizeof(i));
        table_insert(&t, &items[i].node);
    }
    CHECK_EQ(t.count, 5000);
    CHECK(t.nbuckets >= 4096); /* grew by doubling */
    for (int i = 0; i < 5000; i++)
        CHECK(find(&t, i) == &items[i]);
    CHECK(find(&t, 5000) == NULL);
    for (int i = 0; i < 5000; i += 2)
        table_remove(&t, &items[i].node);
    CHECK_EQ(t.count, 2500);
    for (int i = 0; i < 5000; i++)
        CHECK(find(&t, i) == (i % 2 ? &items[i] : NULL));
    table_destroy(&t);
}

TEST(test_table_spreads_hashes_with_equal_low_bits)
{
    struct table t;
    CHECK_EQ(table_init(&t, 1024), 0);
    static struct table_node nodes[1024];
    /* Hashes that differ only above the low 6 bits (one hub shard's channels). */
    for (int i = 0; i < 1024; i++) {
        nodes[i].hash = ((uint64_t)i << 6) | 5;
        table_insert(&t, &nodes[i]);
    }
    size_t longest = 0;
    for (size_t b = 0; b < t.nbuckets; b++) {
        size_t n = 0;
        for (struct table_node *x = t.buckets[b]; x; x = x->next)
            n++;
        if (n > longest)
            longest = n;
    }
    CHECK(longest <= 8);
    table_destroy(&t);
}

TEST(test_table_hash_is_stable)
{
    CHECK(table_hash("news", 4) == table_hash("news", 4));
    CHECK(table_hash("news", 4) != table_hash("newt", 4));
    CHECK(table_hash("", 0) != 0);
}

int main(void)
{
    RUN(test_table_inserts_finds_and_removes);
    RUN(test_table_spreads_hashes_with_equal_low_bits);
    RUN(test_table_hash_is_stable);
    return test_summary("core_table");
}
