/* limit/limit.h: the GCRA bucket, the keyed tables (bounded under key rotation), client
 * addresses and X-Forwarded-For. */
#include <stdio.h>
#include <string.h>

#include "limit/limit.h"
#include "test.h"

#define SEC 1000000ull

TEST(test_limit_gcra_allows_the_burst_then_refuses)
{
    struct limit_rate r;
    limit_rate_init(&r, 10, 5);
    uint64_t tat = 0, now = 100 * SEC;
    for (int i = 0; i < 5; i++)
        CHECK(limit_take(&r, &tat, now));
    CHECK(!limit_take(&r, &tat, now));
    CHECK(!limit_take(&r, &tat, now));
}

TEST(test_limit_gcra_refills_at_the_rate)
{
    struct limit_rate r;
    limit_rate_init(&r, 10, 5); /* one every 100 ms */
    uint64_t tat = 0, now = 100 * SEC;
    for (int i = 0; i < 5; i++)
        CHECK(limit_take(&r, &tat, now));
    CHECK(!limit_take(&r, &tat, now + 99999));
    CHECK(limit_take(&r, &tat, now + 100000)); /* one has come back */
    CHECK(!limit_take(&r, &tat, now + 100000));
    /* Long idle: full again, never more than the burst. */
    int n = 0;
    while (limit_take(&r, &tat, now + 60 * SEC))
        n++;
    CHECK_EQ(n, 5);
}

TEST(test_limit_gcra_refused_request_costs_nothing)
{
    struct limit_rate r;
    limit_rate_init(&r, 1, 1);
    uint64_t tat = 0, now = 10 * SEC;
    CHECK(limit_take(&r, &tat, now));
    uint64_t before = tat;
    for (int i = 0; i < 100; i++)
        CHECK(!limit_take(&r, &tat, now + SEC / 2));
    CHECK_EQ(tat, before);
    CHECK(limit_take(&r, &tat, now + SEC));
}

TEST(test_limit_gcra_burst_zero_is_the_rate)
{
    struct limit_rate r;
    limit_rate_init(&r, 3, 0);
    uint64_t tat = 0, now = SEC;
    int n = 0;
    while (limit_take(&r, &tat, now))
        n++;
    CHECK_EQ(n, 3);
    limit_rate_init(&r, 0, 7);
    CHECK_EQ(r.interval_us, 0);
}

TEST(test_limit_table_counts_up_to_max_and_releases)
{
    struct limit_table *t = limit_table_new(64);
    const uint8_t *k = (const uint8_t *)"alice";
    CHECK_EQ(limit_table_admit(t, k, 5, NULL, 2, SEC), LIMIT_OK);
    CHECK_EQ(limit_table_admit(t, k, 5, NULL, 2, SEC), LIMIT_OK);
    CHECK_EQ(limit_table_admit(t, k, 5, NULL, 2, SEC), LIMIT_OVER_COUNT);
    CHECK_EQ(limit_table_count(t, k, 5), 2);
    CHECK_EQ(limit_table_admit(t, (const uint8_t *)"bob", 3, NULL, 2, SEC), LIMIT_OK);
    limit_table_release(t, k, 5);
    CHECK_EQ(limit_table_count(t, k, 5), 1);
    CHECK_EQ(limit_table_admit(t, k, 5, NULL, 2, SEC), LIMIT_OK);
    limit_table_release(t, k, 5);
    limit_table_release(t, k, 5);
    limit_table_release(t, k, 5); /* one too many: stays at 0 */
    CHECK_EQ(limit_table_count(t, k, 5), 0);
    limit_table_free(t);
}

TEST(test_limit_table_rate_and_count_both_or_neither)
{
    struct limit_table *t = limit_table_new(64);
    struct limit_rate r;
    limit_rate_init(&r, 1, 2);
    const uint8_t *k = (const uint8_t *)"10.0.0.1";
    CHECK_EQ(limit_table_admit(t, k, 8, &r, 1, SEC), LIMIT_OK);
    /* At max: refused by the count, the bucket not drained. */
    CHECK_EQ(limit_table_admit(t, k, 8, &r, 1, SEC), LIMIT_OVER_COUNT);
    limit_table_release(t, k, 8);
    CHECK_EQ(limit_table_admit(t, k, 8, &r, 1, SEC), LIMIT_OK); /* the burst's second */
    limit_table_release(t, k, 8);
    /* The bucket is empty now: refused by the rate, not counted. */
    CHECK_EQ(limit_table_admit(t, k, 8, &r, 1, SEC), LIMIT_OVER_RATE);
    CHECK_EQ(limit_table_count(t, k, 8), 0);
    CHECK_EQ(limit_table_admit(t, k, 8, &r, 1, 2 * SEC), LIMIT_OK);
    limit_table_free(t);
}

TEST(test_limit_table_refund_gives_back_one)
{
    struct limit_table *t = limit_table_new(64);
    struct limit_rate r;
    limit_rate_init(&r, 1, 1);
    const uint8_t *k = (const uint8_t *)"u";
    CHECK_EQ(limit_table_admit(t, k, 1, &r, 0, SEC), LIMIT_OK);
    CHECK_EQ(limit_table_admit(t, k, 1, &r, 0, SEC), LIMIT_OVER_RATE);
    limit_table_refund(t, k, 1, &r);
    CHECK_EQ(limit_table_admit(t, k, 1, &r, 0, SEC), LIMIT_OK);
    limit_table_free(t);
}

TEST(test_limit_table_keys_differ_by_bytes_past_the_stored_prefix)
{
    struct limit_table *t = limit_table_new(64);
    char a[100], b[100];
    memset(a, 'x', sizeof(a));
    memset(b, 'x', sizeof(b));
    b[99] = 'y';
    CHECK_EQ(limit_table_admit(t, (uint8_t *)a, 100, NULL, 1, SEC), LIMIT_OK);
    CHECK_EQ(limit_table_admit(t, (uint8_t *)b, 100, NULL, 1, SEC), LIMIT_OK);
    CHECK_EQ(limit_table_admit(t, (uint8_t *)a, 100, NULL, 1, SEC), LIMIT_OVER_COUNT);
    limit_table_free(t);
}

/* An attacker rotating keys (IPs, users) never grows the table past its capacity, and
 * the keys that hold connections keep their counts through it. */
TEST(test_limit_table_bounded_under_key_rotation)
{
    struct limit_table *t = limit_table_new(1024);
    size_t cap = limit_table_capacity(t);
    CHECK(cap >= 1024);
    struct limit_rate r;
    limit_rate_init(&r, 1, 1);
    const uint8_t *held = (const uint8_t *)"held";
    CHECK_EQ(limit_table_admit(t, held, 4, NULL, 5, SEC), LIMIT_OK);
    size_t full = 0;
    for (unsigned i = 0; i < 200000; i++) {
        char k[32];
        int n = snprintf(k, sizeof(k), "rot-%u", i);
        /* Each drains its bucket: not idle for a second, so the table must evict. */
        enum limit_verdict v = limit_table_admit(t, (uint8_t *)k, (size_t)n, &r, 0, SEC);
        CHECK(v == LIMIT_OK || v == LIMIT_FULL);
        full += v == LIMIT_FULL;
    }
    CHECK(limit_table_entries(t) <= cap);
    CHECK_EQ(full, 0); /* idle entries always give way */
    CHECK_EQ(limit_table_count(t, held, 4), 1);
    limit_table_free(t);
}

/* Keys holding connections are never evicted: a set full of them refuses new keys. */
TEST(test_limit_table_full_of_counted_keys_refuses_new_ones)
{
    struct limit_table *t = limit_table_new(8); /* one set */
    CHECK_EQ(limit_table_capacity(t), LIMIT_WAYS);
    for (int i = 0; i < LIMIT_WAYS; i++) {
        char k[8];
        int n = snprintf(k, sizeof(k), "k%d", i);
        CHECK_EQ(limit_table_admit(t, (uint8_t *)k, (size_t)n, NULL, 10, SEC), LIMIT_OK);
    }
    CHECK_EQ(limit_table_admit(t, (const uint8_t *)"new", 3, NULL, 10, SEC), LIMIT_FULL);
    limit_table_release(t, (const uint8_t *)"k3", 2);
    CHECK_EQ(limit_table_admit(t, (const uint8_t *)"new", 3, NULL, 10, SEC), LIMIT_OK);
    CHECK_EQ(limit_table_count(t, (const uint8_t *)"k3", 2), 0);
    CHECK_EQ(limit_table_entries(t), LIMIT_WAYS);
    limit_table_free(t);
}

/* Live keys like real user ids ("user-1" ... "user-20000", differing in their last bytes)
 * all find room in a table of 65,536 entries: they were crowded into an eighth of the sets
 * by a hash whose upper bits barely moved, and a thousand users already met full sets. */
TEST(test_limit_table_similar_keys_fill_it_evenly)
{
    struct limit_table *t = limit_table_new(64 * 1024);
    int full = 0;
    for (int i = 0; i < 20000; i++) {
        char k[16];
        int n = snprintf(k, sizeof(k), "user-%d", i);
        full += limit_table_admit(t, (uint8_t *)k, (size_t)n, NULL, 1, SEC) != LIMIT_OK;
    }
    CHECK_EQ(full, 0);
    CHECK_EQ(limit_table_entries(t), 20000);
    limit_table_free(t);
}

/* Idle entries expire: released counts with refilled buckets leave the table as soon
 * as their set is looked at. */
TEST(test_limit_table_idle_entries_expire)
{
    struct limit_table *t = limit_table_new(8);
    struct limit_rate r;
    limit_rate_init(&r, 1, 1);
    for (int i = 0; i < 4; i++) {
        char k[8];
        int n = snprintf(k, sizeof(k), "i%d", i);
        CHECK_EQ(limit_table_admit(t, (uint8_t *)k, (size_t)n, &r, 0, SEC), LIMIT_OK);
    }
    CHECK_EQ(limit_table_entries(t), 4);
    /* Much later, a new key finds them idle and takes their place: a set of 8 fills
     * with new keys without refusing any and without holding the old ones. */
    for (int i = 0; i < LIMIT_WAYS; i++) {
        char k[8];
        int n = snprintf(k, sizeof(k), "n%d", i);
        CHECK_EQ(limit_table_admit(t, (uint8_t *)k, (size_t)n, &r, 0, 100 * SEC), LIMIT_OK);
    }
    CHECK_EQ(limit_table_entries(t), LIMIT_WAYS);
    CHECK_EQ(limit_table_admit(t, (const uint8_t *)"i0", 2, &r, 0, 100 * SEC), LIMIT_OK);
    limit_table_free(t);
}

static struct limit_addr addr(const char *s)
{
    struct limit_addr a;
    memset(&a, 0, sizeof(a));
    CHECK_EQ(limit_addr_parse((const uint8_t *)s, strlen(s), &a), 0);
    return a;
}

TEST(test_limit_addr_parses_ipv4_as_mapped_and_ipv6)
{
    char out[64];
    struct limit_addr a = addr("192.168.1.20");
    limit_addr_format(&a, out, sizeof(out));
    CHECK(strcmp(out, "192.168.1.20") == 0);
    struct limit_addr m = addr("::ffff:192.168.1.20");
    CHECK(memcmp(a.b, m.b, 16) == 0);
    struct limit_addr v6 = addr(" 2001:db8::5 ");
    limit_addr_format(&v6, out, sizeof(out));
    CHECK(strcmp(out, "2001:db8::5") == 0);
    struct limit_addr x;
    CHECK_EQ(limit_addr_parse((const uint8_t *)"1.2.3", 5, &x), -1);
    CHECK_EQ(limit_addr_parse((const uint8_t *)"unknown", 7, &x), -1);
    CHECK_EQ(limit_addr_parse((const uint8_t *)"", 0, &x), -1);
}

TEST(test_limit_cidr_parse_and_match)
{
    struct limit_cidr c[3];
    CHECK_EQ(limit_cidr_parse("10.1.2.3/8", &c[0]), 0);
    CHECK_EQ(limit_cidr_parse("fd00::/8", &c[1]), 0);
    CHECK_EQ(limit_cidr_parse("127.0.0.1", &c[2]), 0);
    struct limit_addr a = addr("10.200.0.1");
    CHECK(limit_cidr_match(c, 3, &a));
    a = addr("11.0.0.1");
    CHECK(!limit_cidr_match(c, 3, &a));
    a = addr("fdab::1");
    CHECK(limit_cidr_match(c, 3, &a));
    a = addr("fe00::1");
    CHECK(!limit_cidr_match(c, 3, &a));
    a = addr("127.0.0.1");
    CHECK(limit_cidr_match(c, 3, &a));
    a = addr("127.0.0.2");
    CHECK(!limit_cidr_match(c, 3, &a));
    struct limit_cidr bad;
    CHECK_EQ(limit_cidr_parse("10.0.0.0/33", &bad), -1);
    CHECK_EQ(limit_cidr_parse("10.0.0.0/", &bad), -1);
    CHECK_EQ(limit_cidr_parse("10.0.0.0/8x", &bad), -1);
    CHECK_EQ(limit_cidr_parse("::/129", &bad), -1);
    CHECK_EQ(limit_cidr_parse("example.com", &bad), -1);
    CHECK_EQ(limit_cidr_parse("::/0", &bad), 0);
    CHECK_EQ(limit_cidr_parse("0.0.0.0/0", &bad), 0);
    a = addr("2001:db8::1");
    CHECK(!limit_cidr_match(&bad, 1, &a)); /* an IPv4 /0 is every IPv4 address, no IPv6 */
}

TEST(test_limit_forwarded_for_takes_the_rightmost_untrusted)
{
    struct limit_cidr t[2];
    CHECK_EQ(limit_cidr_parse("127.0.0.0/8", &t[0]), 0);
    CHECK_EQ(limit_cidr_parse("10.0.0.0/8", &t[1]), 0);
    struct limit_addr out = addr("127.0.0.1");
    char s[64];
    /* The client forged the first entry; 203.0.113.7 is whom our proxy saw. */
    const char *xff = "1.1.1.1, 203.0.113.7, 10.0.0.2";
    CHECK_EQ(limit_forwarded_for((const uint8_t *)xff, strlen(xff), t, 2, &out), 1);
    limit_addr_format(&out, s, sizeof(s));
    CHECK(strcmp(s, "203.0.113.7") == 0);
    const char *one = "198.51.100.1";
    CHECK_EQ(limit_forwarded_for((const uint8_t *)one, strlen(one), t, 2, &out), 1);
    limit_addr_format(&out, s, sizeof(s));
    CHECK(strcmp(s, "198.51.100.1") == 0);
    /* Only trusted hops, or garbage: nothing believed. */
    struct limit_addr keep = addr("127.0.0.1");
    const char *all = "10.0.0.1,127.0.0.1";
    CHECK_EQ(limit_forwarded_for((const uint8_t *)all, strlen(all), t, 2, &keep), 0);
    const char *junk = "1.1.1.1, nonsense";
    CHECK_EQ(limit_forwarded_for((const uint8_t *)junk, strlen(junk), t, 2, &keep), 0);
    CHECK_EQ(limit_forwarded_for((const uint8_t *)"", 0, t, 2, &keep), 0);
    limit_addr_format(&keep, s, sizeof(s));
    CHECK(strcmp(s, "127.0.0.1") == 0);
    const char *v6 = "2001:db8::9";
    CHECK_EQ(limit_forwarded_for((const uint8_t *)v6, strlen(v6), t, 2, &out), 1);
    limit_addr_format(&out, s, sizeof(s));
    CHECK(strcmp(s, "2001:db8::9") == 0);
}

int main(void)
{
    RUN(test_limit_gcra_allows_the_burst_then_refuses);
    RUN(test_limit_gcra_refills_at_the_rate);
    RUN(test_limit_gcra_refused_request_costs_nothing);
    RUN(test_limit_gcra_burst_zero_is_the_rate);
    RUN(test_limit_table_counts_up_to_max_and_releases);
    RUN(test_limit_table_rate_and_count_both_or_neither);
    RUN(test_limit_table_refund_gives_back_one);
    RUN(test_limit_table_keys_differ_by_bytes_past_the_stored_prefix);
    RUN(test_limit_table_bounded_under_key_rotation);
    RUN(test_limit_table_full_of_counted_keys_refuses_new_ones);
    RUN(test_limit_table_similar_keys_fill_it_evenly);
    RUN(test_limit_table_idle_entries_expire);
    RUN(test_limit_addr_parses_ipv4_as_mapped_and_ipv6);
    RUN(test_limit_cidr_parse_and_match);
    RUN(test_limit_forwarded_for_takes_the_rightmost_untrusted);
    return test_summary("limit");
}
