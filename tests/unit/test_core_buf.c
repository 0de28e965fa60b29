/* Unit tests for core/buf: appends, JSON strings, capped growth, shrinking. */
#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

#include "test.h"

TEST(test_buf_appends_and_formats)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "a");
    buf_append_char(&b, 'b');
    buf_append_u64(&b, 18446744073709551615ull);
    buf_append_i64(&b, -9223372036854775807ll - 1);
    buf_appendf(&b, "|%s|", "x");
    CHECK_MEM(b.p, b.len, "ab18446744073709551615-9223372036854775808|x|");
    CHECK(!b.oom);
    buf_free(&b);
    CHECK(b.p == NULL && b.len == 0 && b.cap == 0);
}

TEST(test_buf_json_string_escapes_what_rfc8259_requires)
{
    struct buf b = BUF_INIT;
    buf_append_json_str(&b, (const uint8_t *)"q\"\\\n\x01\xc3\xa9", 7);
    CHECK_MEM(b.p, b.len, "\"q\\\"\\\\\\n\\u0001\xc3\xa9\"");
    buf_free(&b);
}

TEST(test_buf_json_plain_stops_at_the_first_byte_to_escape)
{
    CHECK_EQ(buf_json_plain((const uint8_t *)"room-1/\xc3\xa9", 9), 9);
    CHECK_EQ(buf_json_plain((const uint8_t *)"ab\"c", 4), 2);
    CHECK_EQ(buf_json_plain((const uint8_t *)"ab\\c", 4), 2);
    CHECK_EQ(buf_json_plain((const uint8_t *)"\x1f", 1), 0);
    CHECK_EQ(buf_json_plain((const uint8_t *)"", 0), 0);
    /* escaped runs on both sides of plain ones come out the same as byte by byte */
    struct buf b = BUF_INIT;
    buf_append_json_str(&b, (const uint8_t *)"\"a\tbc\\", 6);
    CHECK_MEM(b.p, b.len, "\"\\\"a\\tbc\\\\\"");
    buf_free(&b);
}

TEST(test_buf_reserve_max_grows_by_doubling_up_to_the_cap)
{
    struct buf b = BUF_INIT;
    CHECK_EQ(buf_reserve_max(&b, 10, 10000), 0);
    CHECK_EQ(b.cap, 4096);
    b.len = 4000;
    CHECK_EQ(buf_reserve_max(&b, 5000, 10000), 0);
    CHECK_EQ(b.cap, 10000); /* 8192 was too small, 16384 is past the cap */
    b.len = 9000;
    CHECK_EQ(buf_reserve_max(&b, 1001, 10000), -1); /* past the cap: refused, not oom */
    CHECK(!b.oom);
    CHECK_EQ(buf_reserve_max(&b, 1000, 10000), 0);
    buf_free(&b);
}

TEST(test_buf_shrink_gives_back_large_buffers_only)
{
    struct buf b = BUF_INIT;
    buf_reserve(&b, 100);
    buf_append_str(&b, "x");
    buf_shrink(&b, 1024);
    CHECK(b.p != NULL && b.len == 0);
    buf_reserve(&b, 5000);
    buf_shrink(&b, 1024);
    CHECK(b.p == NULL && b.cap == 0);
}

TEST(test_buf_refuses_more_than_2_gib)
{
    struct buf b = BUF_INIT;
    CHECK_EQ(buf_reserve(&b, (size_t)1 << 31), -1);
    CHECK(b.oom);
    buf_append_str(&b, "ignored once oom");
    CHECK_EQ(b.len, 0);
    buf_free(&b);
    CHECK(!b.oom);
}

int main(void)
{
    RUN(test_buf_appends_and_formats);
    RUN(test_buf_json_string_escapes_what_rfc8259_requires);
    RUN(test_buf_json_plain_stops_at_the_first_byte_to_escape);
    RUN(test_buf_reserve_max_grows_by_doubling_up_to_the_cap);
    RUN(test_buf_shrink_gives_back_large_buffers_only);
    RUN(test_buf_refuses_more_than_2_gib);
    return test_summary("core_buf");
}
