/* Engine contract, written against engine.h only, so that every engine (memory
 * now, redis later) runs the same cases: offsets, epochs, history bounds, since,
 * reverse, TTL, removal, presence availability, byte-exact data. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/config.h"
#include "engine/engine.h"
#include "test.h"

static struct engine *e;

static struct ns_opts ns_history(uint32_t size, uint32_t ttl)
{
    struct ns_opts ns;
    memset(&ns, 0, sizeof(ns));
    ns.history_size = size;
    ns.history_ttl = ttl;
    ns.recover = 1;
    return ns;
}

static int publish(const char *ch, const struct ns_opts *ns, const char *data,
                   struct hub_stream_pos *pos)
{
    return e->ops->publish(e, (const uint8_t *)ch, strlen(ch), ns, (const uint8_t *)data,
                           strlen(data), NULL, 0, pos);
}

static int history(const char *ch, const struct ns_opts *ns, int64_t limit, int has_since,
                   uint64_t since, const char *epoch, int reverse, struct buf *out,
                   struct hub_stream_pos *pos)
{
    return e->ops->history(e, (const uint8_t *)ch, strlen(ch), ns, limit, has_since, since,
                           (const uint8_t *)epoch, epoch ? strlen(epoch) : 0, reverse, out, pos);
}

/* Offsets in a history reply, in order. */
static int offsets(const struct buf *b, uint64_t *out, int max)
{
    int n = 0;
    const char *p = (const char *)b->p, *end = p + b->len;
    while (p && p < end && n < max) {
        const char *o = memmem(p, (size_t)(end - p), "\"offset\":", 9);
        if (o == NULL)
            break;
        out[n++] = strtoull(o + 9, NULL, 10);
        p = o + 9;
    }
    return n;
}

TEST(test_engine_publish_assigns_consecutive_offsets_in_one_epoch)
{
    struct ns_opts ns = ns_history(10, 60);
    struct hub_stream_pos a, b;
    CHECK_EQ(publish("t1", &ns, "{}", &a), 1);
    CHECK_EQ(publish("t1", &ns, "{}", &b), 1);
    CHECK_EQ(a.offset, 1);
    CHECK_EQ(b.offset, 2);
    CHECK(strlen(a.epoch) > 0);
    CHECK(strcmp(a.epoch, b.epoch) == 0);
}

TEST(test_engine_channels_have_independent_streams)
{
    struct ns_opts ns = ns_history(10, 60);
    struct hub_stream_pos a, b;
    publish("t2a", &ns, "1", &a);
    publish("t2b", &ns, "1", &b);
    CHECK_EQ(a.offset, 1);
    CHECK_EQ(b.offset, 1);
    CHECK(strcmp(a.epoch, b.epoch) != 0);
}

TEST(test_engine_publish_without_history_has_no_position)
{
    struct ns_opts ns = ns_history(0, 0);
    struct hub_stream_pos pos;
    CHECK_EQ(publish("t3", &ns, "{}", &pos), 0);
    struct buf out = BUF_INIT;
    CHECK_EQ(history("t3", &ns, -1, 0, 0, NULL, 0, &out, &pos), -108);
    buf_free(&out);
}

TEST(test_engine_history_keeps_only_history_size_newest)
{
    struct ns_opts ns = ns_history(3, 60);
    struct hub_stream_pos pos;
    for (int i = 0; i < 5; i++)
        publish("t4", &ns, "{}", &pos);
    struct buf out = BUF_INIT;
    CHECK_EQ(history("t4", &ns, -1, 0, 0, NULL, 0, &out, &pos), 0);
    uint64_t o[8];
    CHECK_EQ(offsets(&out, o, 8), 3);
    CHECK_EQ(o[0], 3);
    CHECK_EQ(o[2], 5);
    CHECK_EQ(pos.offset, 5);
    buf_free(&out);
}

TEST(test_engine_history_limit_since_and_reverse)
{
    struct ns_opts ns = ns_history(10, 60);
    struct hub_stream_pos pos;
    for (int i = 0; i < 6; i++)
        publish("t5", &ns, "{}", &pos);
    struct buf out = BUF_INIT;
    uint64_t o[8];
    CHECK_EQ(history("t5", &ns, 0, 0, 0, NULL, 0, &out, &pos), 0);
    CHECK_EQ(out.len, 0); /* limit 0: only the position */
    CHECK_EQ(pos.offset, 6);
    CHECK_EQ(history("t5", &ns, 2, 0, 0, NULL, 0, &out, &pos), 0);
    CHECK_EQ(offsets(&out, o, 8), 2);
    CHECK_EQ(o[0], 1);
    buf_reset(&out);
    CHECK_EQ(history("t5", &ns, -1, 1, 4, pos.epoch, 0, &out, &pos), 0);
    CHECK_EQ(offsets(&out, o, 8), 2);
    CHECK_EQ(o[0], 5);
    CHECK_EQ(o[1], 6);
    buf_reset(&out);
    CHECK_EQ(history("t5", &ns, 2, 0, 0, NULL, 1, &out, &pos), 0);
    CHECK_EQ(offsets(&out, o, 8), 2);
    CHECK_EQ(o[0], 6);
    CHECK_EQ(o[1], 5);
    buf_free(&out);
}

TEST(test_engine_history_since_other_epoch_is_unrecoverable)
{
    struct ns_opts ns = ns_history(10, 60);
    struct hub_stream_pos pos;
    publish("t6", &ns, "{}", &pos);
    struct buf out = BUF_INIT;
    CHECK_EQ(history("t6", &ns, -1, 1, 0, "deadbeef", 0, &out, &pos), -112);
    buf_free(&out);
}

TEST(test_engine_history_expires_after_ttl)
{
    struct ns_opts ns = ns_history(10, 1);
    struct hub_stream_pos pos;
    publish("t7", &ns, "{}", &pos);
    struct timespec ts = {1, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    struct buf out = BUF_INIT;
    CHECK_EQ(history("t7", &ns, -1, 0, 0, NULL, 0, &out, &pos), 0);
    CHECK_EQ(out.len, 0);
    CHECK_EQ(pos.offset, 1); /* the stream position survives the expiry of its entries */
    buf_free(&out);
}

TEST(test_engine_history_remove_keeps_position)
{
    struct ns_opts ns = ns_history(10, 60);
    struct hub_stream_pos pos;
    publish("t8", &ns, "{}", &pos);
    publish("t8", &ns, "{}", &pos);
    e->ops->history_remove(e, (const uint8_t *)"t8", 2);
    struct buf out = BUF_INIT;
    CHECK_EQ(history("t8", &ns, -1, 0, 0, NULL, 0, &out, &pos), 0);
    CHECK_EQ(out.len, 0);
    CHECK_EQ(pos.offset, 2);
    CHECK_EQ(publish("t8", &ns, "{}", &pos), 1);
    CHECK_EQ(pos.offset, 3);
    buf_free(&out);
}

TEST(test_engine_history_returns_data_byte_for_byte)
{
    struct ns_opts ns = ns_history(10, 60);
    struct hub_stream_pos pos;
    const char *data = "{ \"b\" : [1, 2.50e3, \"\\u00e9\\n\"],  \"a\":null }";
    publish("t9", &ns, data, &pos);
    struct buf out = BUF_INIT;
    CHECK_EQ(history("t9", &ns, -1, 0, 0, NULL, 0, &out, &pos), 0);
    CHECK(memmem(out.p, out.len, data, strlen(data)) != NULL);
    buf_free(&out);
}

TEST(test_engine_presence_needs_a_presence_namespace)
{
    struct ns_opts ns = ns_history(10, 60);
    struct buf out = BUF_INIT;
    uint64_t clients = 9, users = 9;
    CHECK_EQ(e->ops->presence(e, (const uint8_t *)"t10", 3, &ns, &out, &clients, &users), -108);
    ns.presence = 1;
    CHECK_EQ(e->ops->presence(e, (const uint8_t *)"t10", 3, &ns, &out, &clients, &users), 0);
    CHECK_EQ(clients, 0);
    CHECK_EQ(users, 0);
    buf_free(&out);
}

int main(void)
{
    struct config c;
    memset(&c, 0, sizeof(c));
    const char *name = getenv("HERALD_TEST_ENGINE");
    strcpy(c.engine, name ? name : "memory");
    char err[160];
    hub_init(0, NULL, 1000000);
    e = engine_open(&c, err, sizeof(err));
    if (e == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    RUN(test_engine_publish_assigns_consecutive_offsets_in_one_epoch);
    RUN(test_engine_channels_have_independent_streams);
    RUN(test_engine_publish_without_history_has_no_position);
    RUN(test_engine_history_keeps_only_history_size_newest);
    RUN(test_engine_history_limit_since_and_reverse);
    RUN(test_engine_history_since_other_epoch_is_unrecoverable);
    RUN(test_engine_history_expires_after_ttl);
    RUN(test_engine_history_remove_keeps_position);
    RUN(test_engine_history_returns_data_byte_for_byte);
    RUN(test_engine_presence_needs_a_presence_namespace);
    engine_close(e);
    hub_shutdown();
    return test_summary("engine");
}
