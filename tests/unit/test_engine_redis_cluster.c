/* Unit tests for engine/redis_cluster: hash slots as Redis computes them (the expected
 * values are what CLUSTER KEYSLOT answers), the CLUSTER SLOTS reply, MOVED and ASK. */
#include "engine/redis_cluster.h"

#include <stdlib.h>
#include <string.h>

#include "test.h"

static unsigned slot(const char *k)
{
    return redis_key_slot(k, strlen(k));
}

TEST(test_redis_cluster_key_slots_match_redis)
{
    CHECK_EQ(slot("somekey"), 11058);
    CHECK_EQ(slot("foo{hash_tag}"), 2515);
    CHECK_EQ(slot("{user1000}.following"), 3443);
    CHECK_EQ(slot("a{}b"), 13694); /* an empty tag: the whole key */
    CHECK_EQ(slot("{}"), 15257);
    CHECK_EQ(slot("x{y"), 2740); /* no closing brace: the whole key */
    CHECK_EQ(slot(""), 0);
    CHECK_EQ(slot("p:{nodes}"), 9928);
}

TEST(test_redis_cluster_channel_slot_is_its_keys_slot)
{
    /* Every key of a channel, and its pub/sub name, in one slot: the channel's. */
    CHECK_EQ(redis_channel_slot("m1", "rec:a", 5, "c"), 10352);
    CHECK_EQ(redis_channel_slot("m1", "rec:a", 5, "s"), 10352);
    /* A '}' in the name ends the tag early, as Redis reads the key. */
    CHECK_EQ(redis_channel_slot("p", "a}b", 3, "s"), 15495);
    /* A name that gives no tag: the whole key, as Redis hashes it. */
    CHECK_EQ(redis_channel_slot("p", "", 0, "c"), 16244);
    CHECK_EQ(redis_channel_slot("p", "}abc", 4, "c"), 9720);
    /* A '{' in the prefix: the prefix's tag decides. */
    CHECK_EQ(redis_channel_slot("p{x", "ch", 2, "c"), 199);
}

TEST(test_redis_cluster_redirects)
{
    struct redis_redirect r;
    const char *moved = "MOVED 3999 127.0.0.1:6381";
    CHECK_EQ(redis_redirect_parse(moved, strlen(moved), &r), 0);
    CHECK_EQ(r.ask, 0);
    CHECK_EQ(r.slot, 3999);
    CHECK(strcmp(r.to.host, "127.0.0.1") == 0);
    CHECK_EQ(r.to.port, 6381);
    const char *ask = "ASK 16383 ::1:7000";
    CHECK_EQ(redis_redirect_parse(ask, strlen(ask), &r), 0);
    CHECK_EQ(r.ask, 1);
    CHECK_EQ(r.slot, 16383);
    CHECK(strcmp(r.to.host, "::1") == 0);
    CHECK_EQ(r.to.port, 7000);
    const char *nohost = "MOVED 1 :6380"; /* the node does not know its address */
    CHECK_EQ(redis_redirect_parse(nohost, strlen(nohost), &r), 0);
    CHECK_EQ(r.to.host[0], 0);
    static const char *bad[] = {
        "MOVED", "MOVED 1", "MOVED 1 h", "MOVED 16384 h:1", "MOVED x h:1", "MOVED 1 h:0",
        "MOVED 1 h:65536", "MOVED 1 h:1x", "ASK 1 h:", "ERR wrong", "MOVED  1 h:1",
        "MOVED 1 "
        "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh:1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_EQ(redis_redirect_parse(bad[i], strlen(bad[i]), &r), -1);
    /* Not NUL-terminated: nothing past len is read. */
    char buf[16] = "MOVED 1 h:12345";
    CHECK_EQ(redis_redirect_parse(buf, 12, &r), 0);
    CHECK_EQ(r.to.port, 12);
}

/* A RESP reply from its bytes, as it comes off the wire. */
static redisReply *reply_of(const char *resp)
{
    redisReader *rd = redisReaderCreate();
    void *out = NULL;
    redisReaderFeed(rd, resp, strlen(resp));
    if (redisReaderGetReply(rd, &out) != REDIS_OK)
        out = NULL;
    redisReaderFree(rd);
    return out;
}

TEST(test_redis_cluster_slots_reply)
{
    /* Two masters, the second with a replica; Redis 7 adds a map after the id. */
    redisReply *r = reply_of("*2\r\n"
                             "*3\r\n:0\r\n:8191\r\n*4\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n*0\r\n"
                             "*4\r\n:8192\r\n:16383\r\n*3\r\n$0\r\n\r\n:7001\r\n$2\r\nid\r\n"
                             "*3\r\n$9\r\n127.0.0.1\r\n:7002\r\n$2\r\nid\r\n");
    CHECK(r != NULL);
    struct redis_slot_range out[4];
    CHECK_EQ(redis_slots_parse(r, out, 4), 2);
    CHECK_EQ(out[0].start, 0);
    CHECK_EQ(out[0].end, 8191);
    CHECK(strcmp(out[0].master.host, "127.0.0.1") == 0);
    CHECK_EQ(out[0].master.port, 7000);
    CHECK_EQ(out[1].start, 8192);
    CHECK_EQ(out[1].end, 16383);
    CHECK_EQ(out[1].master.host[0], 0); /* "": the node that answered */
    CHECK_EQ(out[1].master.port, 7001);
    CHECK_EQ(redis_slots_parse(r, out, 1), -1); /* more ranges than room */
    freeReplyObject(r);
    static const char *bad[] = {
        ":1\r\n",                                                  /* not an array */
        "*1\r\n:1\r\n",                                            /* a range not an array */
        "*1\r\n*2\r\n:0\r\n:1\r\n",                                /* no master */
        "*1\r\n*3\r\n:5\r\n:4\r\n*2\r\n$1\r\nh\r\n:1\r\n",         /* start after end */
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n",     /* past the last slot */
        "*1\r\n*3\r\n:-1\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n",        /* negative */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:0\r\n",         /* port 0 */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:70000\r\n",     /* port past 65535 */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n$4\r\n7000\r\n", /* port as text */
        "*1\r\n*3\r\n$1\r\n0\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n",    /* slot as text */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        redisReply *b = reply_of(bad[i]);
        CHECK(b != NULL);
        CHECK_EQ(redis_slots_parse(b, out, 4), -1);
        freeReplyObject(b);
    }
    /* A host longer than an address, and one with a NUL in it. */
    char longhost[256];
    snprintf(longhost, sizeof(longhost), "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$70\r\n%070d\r\n:1\r\n", 0);
    redisReply *b = reply_of(longhost);
    CHECK(b != NULL);
    CHECK_EQ(redis_slots_parse(b, out, 4), -1);
    freeReplyObject(b);
    static const char nul[] = "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$3\r\na\0b\r\n:1\r\n";
    redisReader *rd = redisReaderCreate();
    void *o = NULL;
    redisReaderFeed(rd, nul, sizeof(nul) - 1);
    CHECK_EQ(redisReaderGetReply(rd, &o), REDIS_OK);
    CHECK(o != NULL);
    CHECK_EQ(redis_slots_parse(o, out, 4), -1);
    freeReplyObject(o);
    redisReaderFree(rd);
}

int main(void)
{
    RUN(test_redis_cluster_key_slots_match_redis);
    RUN(test_redis_cluster_channel_slot_is_its_keys_slot);
    RUN(test_redis_cluster_redirects);
    RUN(test_redis_cluster_slots_reply);
    return test_summary("engine_redis_cluster");
}
