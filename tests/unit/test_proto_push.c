/* Unit tests for proto/push: a publication's frame carries the channel quoted as it is when
 * nothing in it needs escaping and escaped otherwise, with the data, info and offset, in one
 * text frame whose head gives the payload's length. */
#include "proto/push.h"

#include <stdint.h>
#include <string.h>

#include "core/frame.h"
#include "engine/engine.h"
#include "test.h"

/* The payload of the text frame f (a head of 2 or 4 bytes here), NUL-terminated in out. */
static size_t payload_of(const struct frame *f, char *out, size_t cap)
{
    size_t head = 2, n = f->data[1] & 0x7f;
    if (n == 126) {
        n = (size_t)f->data[2] << 8 | f->data[3];
        head = 4;
    }
    if (f->data[0] != 0x81 || head + n != f->len || n >= cap)
        return (size_t)-1;
    memcpy(out, f->data + head, n);
    out[n] = '\0';
    return n;
}

static int frame_is(const char *ch, size_t ch_len, const struct engine_pub *pub, const char *want)
{
    struct frame *f = proto_push_publication((const uint8_t *)ch, ch_len, pub, 16);
    if (f == NULL)
        return 0;
    static char got[4096];
    size_t n = payload_of(f, got, sizeof(got));
    int ok = n == strlen(want) && memcmp(got, want, n) == 0;
    if (!ok)
        fprintf(stderr, "  got  %s\n  want %s\n", n == (size_t)-1 ? "(bad frame)" : got, want);
    frame_unref(f);
    return ok;
}

TEST(test_push_publication_quotes_a_plain_channel)
{
    struct engine_pub pub = {(const uint8_t *)"{\"a\":1}", 7, NULL, 0, 0};
    CHECK(frame_is("news", 4, &pub, "{\"push\":{\"channel\":\"news\",\"pub\":{\"data\":{\"a\":1}}}}"));
    pub.offset = 42;
    pub.info = (const uint8_t *)"{\"user\":\"u\"}";
    pub.info_len = 12;
    CHECK(frame_is("chat:room-1/ü", strlen("chat:room-1/ü"), &pub,
                   "{\"push\":{\"channel\":\"chat:room-1/ü\",\"pub\":{\"data\":{\"a\":1},"
                   "\"info\":{\"user\":\"u\"},\"offset\":42}}}"));
}

TEST(test_push_publication_escapes_a_channel_that_needs_it)
{
    struct engine_pub pub = {(const uint8_t *)"1", 1, NULL, 0, 0};
    CHECK(frame_is("a\"b", 3, &pub, "{\"push\":{\"channel\":\"a\\\"b\",\"pub\":{\"data\":1}}}"));
    CHECK(frame_is("a\\b", 3, &pub, "{\"push\":{\"channel\":\"a\\\\b\",\"pub\":{\"data\":1}}}"));
    CHECK(frame_is("x\x01", 2, &pub, "{\"push\":{\"channel\":\"x\\u0001\",\"pub\":{\"data\":1}}}"));
    /* the escape at the end, after a plain run */
    CHECK(frame_is("plain-part\t", 11, &pub,
                   "{\"push\":{\"channel\":\"plain-part\\t\",\"pub\":{\"data\":1}}}"));
}

TEST(test_push_publication_newlines_in_data_become_spaces)
{
    struct engine_pub pub = {(const uint8_t *)"{\n\"a\":\n1}", 9, NULL, 0, 0};
    CHECK(frame_is("c", 1, &pub, "{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":{ \"a\": 1}}}}"));
}

TEST(test_push_publication_long_payload_has_a_16_bit_length)
{
    static char data[402];
    data[0] = '"';
    memset(data + 1, 'x', 400);
    data[401] = '"';
    struct engine_pub pub = {(const uint8_t *)data, sizeof(data), NULL, 0, 0};
    static char want[600];
    snprintf(want, sizeof(want), "{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":%.*s}}}",
             (int)sizeof(data), data);
    CHECK(frame_is("c", 1, &pub, want));
}

int main(void)
{
    RUN(test_push_publication_quotes_a_plain_channel);
    RUN(test_push_publication_escapes_a_channel_that_needs_it);
    RUN(test_push_publication_newlines_in_data_become_spaces);
    RUN(test_push_publication_long_payload_has_a_16_bit_length);
    return test_summary("proto_push");
}
