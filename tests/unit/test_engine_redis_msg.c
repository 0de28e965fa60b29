/* Unit tests for engine/redis_msg: the messages nodes send each other through Redis
 * pub/sub, and what is refused when someone else writes there. */
#include "engine/redis_msg.h"

#include <string.h>

#include "test.h"

static int parse(const char *s, struct redis_msg *m)
{
    return redis_msg_parse(s, strlen(s), m);
}

TEST(test_redis_msg_publication_with_info_and_data)
{
    struct redis_msg m;
    CHECK_EQ(parse("p42 5 {\"a\"}{\"x\":1}", &m), 0);
    CHECK_EQ(m.type, REDIS_MSG_PUBLICATION);
    CHECK_EQ(m.offset, 42);
    CHECK_MEM(m.info, m.info_len, "{\"a\"}");
    CHECK_MEM(m.data, m.data_len, "{\"x\":1}");
    CHECK_EQ(parse("p0 0 ", &m), 0); /* no history, no info, empty data */
    CHECK_EQ(m.offset, 0);
    CHECK_EQ(m.info_len, 0);
    CHECK_EQ(m.data_len, 0);
}

TEST(test_redis_msg_join_and_leave)
{
    struct redis_msg m;
    CHECK_EQ(parse("j{\"user\":\"u\"}", &m), 0);
    CHECK_EQ(m.type, REDIS_MSG_JOIN);
    CHECK_MEM(m.info, m.info_len, "{\"user\":\"u\"}");
    CHECK_EQ(parse("l", &m), 0);
    CHECK_EQ(m.type, REDIS_MSG_LEAVE);
    CHECK_EQ(m.info_len, 0);
}

TEST(test_redis_msg_refuses_what_herald_never_sends)
{
    struct redis_msg m;
    static const char *bad[] = {
        "", "x", "p", "p1", "p1 ", "p1 2", "p 1 x", "p-1 0 ", "p+1 0 ", "p1 -0 ", "p1  0 ",
        "p1 0x", "p1 6 short",                   /* info longer than the message */
        "p1 18446744073709551615 x",             /* the length that used to wrap the bound */
        "p99999999999999999999 0 ",              /* offset past 64 bits */
        "p1 99999999999999999999 ",              /* info length past 64 bits */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_EQ(parse(bad[i], &m), -1);
    /* Not NUL-terminated: nothing past len is read. */
    char buf[8] = {'p', '1', ' ', '1', '9', '9', '9', '9'};
    CHECK_EQ(redis_msg_parse(buf, 4, &m), -1);
}

int main(void)
{
    RUN(test_redis_msg_publication_with_info_and_data);
    RUN(test_redis_msg_join_and_leave);
    RUN(test_redis_msg_refuses_what_herald_never_sends);
    return test_summary("engine_redis_msg");
}
