/* Unit tests for proto/command: decoding commands as centrifuge-js 5 sends them. */
#include "proto/command.h"

#include <stdint.h>
#include <string.h>

#include "test.h"

static uint8_t buf[65536];

/* Decode a copy of s (the decoder writes into its input). */
static int decode(const char *s, struct proto_command *cmd)
{
    size_t n = strlen(s);
    if (n > sizeof(buf))
        return -2;
    memcpy(buf, s, n);
    return proto_command_decode(buf, n, cmd);
}

static int span_in_buf(struct json_span s, size_t len)
{
    return s.p == NULL || (s.p >= buf && s.p + s.len <= buf + len);
}

TEST(test_proto_command_decodes_connect_from_js_client)
{
    struct proto_command c;
    CHECK_EQ(decode("{\"id\":1,\"connect\":{\"token\":\"x\",\"name\":\"js\"}}", &c), 0);
    CHECK_EQ(c.id, 1);
    CHECK_EQ(c.method, PROTO_CONNECT);
    CHECK_MEM(c.token.p, c.token.len, "x");
    CHECK_MEM(c.name.p, c.name.len, "js");
    CHECK(c.version.p == NULL && c.version.len == 0);
    CHECK(c.data.p == NULL && c.channel.p == NULL);
}

TEST(test_proto_command_decodes_full_connect_with_data_and_subs)
{
    struct proto_command c;
    const char *s = "{\"id\":1,\"connect\":{\"token\":\"eyJhbGciOiJIUzI1NiJ9.e30.sig\","
                    "\"data\":{\"user\":\"a\",\"n\":[1,2]},\"subs\":{\"news\":{\"recover\":true,"
                    "\"offset\":3,\"epoch\":\"e\"}},\"name\":\"js\",\"version\":\"5.2.0\","
                    "\"headers\":{\"x\":\"y\"}}}";
    CHECK_EQ(decode(s, &c), 0);
    CHECK_EQ(c.method, PROTO_CONNECT);
    CHECK_MEM(c.token.p, c.token.len, "eyJhbGciOiJIUzI1NiJ9.e30.sig");
    CHECK_MEM(c.data.p, c.data.len, "{\"user\":\"a\",\"n\":[1,2]}");
    CHECK_MEM(c.version.p, c.version.len, "5.2.0");
    /* the subscriptions inside subs do not leak into the command's own fields */
    CHECK_EQ(c.recover, 0);
    CHECK_EQ(c.offset, 0);
    CHECK(c.epoch.p == NULL);
}

TEST(test_proto_command_decodes_subscribe_with_recovery_and_unknown_fields)
{
    struct proto_command c;
    const char *s = "{\"id\":2,\"subscribe\":{\"channel\":\"news\",\"recover\":true,\"offset\":5,"
                    "\"epoch\":\"abc\",\"flag\":1}}";
    CHECK_EQ(decode(s, &c), 0);
    CHECK_EQ(c.id, 2);
    CHECK_EQ(c.method, PROTO_SUBSCRIBE);
    CHECK_MEM(c.channel.p, c.channel.len, "news");
    CHECK_EQ(c.recover, 1);
    CHECK_EQ(c.offset, 5);
    CHECK_MEM(c.epoch.p, c.epoch.len, "abc");
    CHECK_EQ(c.join_leave, 0);
}

TEST(test_proto_command_decodes_subscribe_with_every_js_option)
{
    struct proto_command c;
    const char *s = "{\"id\":3,\"subscribe\":{\"channel\":\"chat:1\",\"token\":\"t\","
                    "\"data\":\"hello\",\"positioned\":true,\"recoverable\":true,"
                    "\"join_leave\":true,\"flag\":1,\"recover\":true,"
                    "\"offset\":18446744073709551615,\"epoch\":\"xyz\",\"delta\":\"fossil\","
                    "\"tf\":{\"filter\":{\"op\":\"eq\"}}}}";
    CHECK_EQ(decode(s, &c), 0);
    CHECK_EQ(c.method, PROTO_SUBSCRIBE);
    CHECK_MEM(c.token.p, c.token.len, "t");
    CHECK_MEM(c.data.p, c.data.len, "\"hello\"");
    CHECK_EQ(c.join_leave, 1);
    CHECK(c.offset == UINT64_MAX);
}

TEST(test_proto_command_decodes_every_other_method)
{
    struct proto_command c;
    CHECK_EQ(decode("{\"id\":4,\"unsubscribe\":{\"channel\":\"news\"}}", &c), 0);
    CHECK_EQ(c.method, PROTO_UNSUBSCRIBE);
    CHECK_MEM(c.channel.p, c.channel.len, "news");

    CHECK_EQ(
        decode("{\"id\":5,\"publish\":{\"channel\":\"news\",\"data\":{\"input\":\"hi\"}}}", &c), 0);
    CHECK_EQ(c.method, PROTO_PUBLISH);
    CHECK_MEM(c.data.p, c.data.len, "{\"input\":\"hi\"}");

    CHECK_EQ(decode("{\"id\":6,\"presence\":{\"channel\":\"news\"}}", &c), 0);
    CHECK_EQ(c.method, PROTO_PRESENCE);
    CHECK_EQ(decode("{\"id\":7,\"presence_stats\":{\"channel\":\"news\"}}", &c), 0);
    CHECK_EQ(c.method, PROTO_PRESENCE_STATS);

    CHECK_EQ(decode("{\"id\":8,\"rpc\":{\"method\":\"sum\",\"data\":[1,2]}}", &c), 0);
    CHECK_EQ(c.method, PROTO_RPC);
    CHECK_MEM(c.rpc_method.p, c.rpc_method.len, "sum");
    CHECK_MEM(c.data.p, c.data.len, "[1,2]");

    CHECK_EQ(decode("{\"id\":9,\"refresh\":{\"token\":\"new\"}}", &c), 0);
    CHECK_EQ(c.method, PROTO_REFRESH);
    CHECK_MEM(c.token.p, c.token.len, "new");

    CHECK_EQ(decode("{\"id\":10,\"sub_refresh\":{\"channel\":\"news\",\"token\":\"st\"}}", &c), 0);
    CHECK_EQ(c.method, PROTO_SUB_REFRESH);
    CHECK_MEM(c.channel.p, c.channel.len, "news");
    CHECK_MEM(c.token.p, c.token.len, "st");

    CHECK_EQ(decode("{\"id\":11,\"ping\":{}}", &c), 0);
    CHECK_EQ(c.method, PROTO_PING);
}

TEST(test_proto_command_decodes_history_with_since_and_defaults)
{
    struct proto_command c;
    const char *s = "{\"id\":12,\"history\":{\"channel\":\"news\",\"limit\":10,"
                    "\"since\":{\"offset\":7,\"epoch\":\"ep\"},\"reverse\":true}}";
    CHECK_EQ(decode(s, &c), 0);
    CHECK_EQ(c.method, PROTO_HISTORY);
    CHECK_EQ(c.limit, 10);
    CHECK_EQ(c.has_since, 1);
    CHECK_EQ(c.since_offset, 7);
    CHECK_MEM(c.since_epoch.p, c.since_epoch.len, "ep");
    CHECK_EQ(c.reverse, 1);

    CHECK_EQ(decode("{\"id\":13,\"history\":{\"channel\":\"news\"}}", &c), 0);
    CHECK_EQ(c.limit, 0);
    CHECK_EQ(c.has_since, 0);
    CHECK_EQ(c.reverse, 0);

    CHECK_EQ(decode("{\"id\":14,\"history\":{\"channel\":\"news\",\"limit\":-1}}", &c), 0);
    CHECK_EQ(c.limit, -1);
    CHECK_EQ(decode("{\"id\":14,\"history\":{\"channel\":\"n\",\"limit\":2147483648}}", &c), -1);
    CHECK_EQ(decode("{\"id\":14,\"history\":{\"channel\":\"n\",\"since\":5}}", &c), -1);
    CHECK_EQ(decode("{\"id\":14,\"history\":{\"channel\":\"n\",\"since\":{\"offset\":-5}}}", &c),
             -1);
}

TEST(test_proto_command_decodes_send_without_id)
{
    struct proto_command c;
    CHECK_EQ(decode("{\"send\":{\"data\":{\"x\":1}}}", &c), 0);
    CHECK_EQ(c.id, 0);
    CHECK_EQ(c.method, PROTO_SEND);
    CHECK_MEM(c.data.p, c.data.len, "{\"x\":1}");
}

TEST(test_proto_command_decodes_empty_object_as_pong)
{
    struct proto_command c;
    c.id = 99;
    CHECK_EQ(decode("{}", &c), 0);
    CHECK_EQ(c.method, PROTO_EMPTY);
    CHECK_EQ(c.id, 0);
    CHECK_EQ(decode(" { } ", &c), 0);
    CHECK_EQ(c.method, PROTO_EMPTY);
}

TEST(test_proto_command_requires_id_except_for_send)
{
    struct proto_command c;
    CHECK_EQ(decode("{\"connect\":{}}", &c), -1);
    CHECK_EQ(decode("{\"id\":0,\"subscribe\":{\"channel\":\"a\"}}", &c), -1);
    CHECK_EQ(decode("{\"id\":null,\"subscribe\":{\"channel\":\"a\"}}", &c), -1);
}

TEST(test_proto_command_rejects_ids_outside_uint32)
{
    struct proto_command c;
    CHECK_EQ(decode("{\"id\":4294967295,\"ping\":{}}", &c), 0);
    CHECK(c.id == UINT32_MAX);
    CHECK_EQ(decode("{\"id\":4294967296,\"ping\":{}}", &c), -1);
    CHECK_EQ(decode("{\"id\":99999999999999999999999,\"ping\":{}}", &c), -1);
    CHECK_EQ(decode("{\"id\":-1,\"ping\":{}}", &c), -1);
    CHECK_EQ(decode("{\"id\":1.0,\"ping\":{}}", &c), -1);
    CHECK_EQ(decode("{\"id\":1e2,\"ping\":{}}", &c), -1);
    CHECK_EQ(decode("{\"id\":\"1\",\"ping\":{}}", &c), -1);
    CHECK_EQ(decode("{\"id\":true,\"ping\":{}}", &c), -1);
}

TEST(test_proto_command_rejects_known_fields_of_wrong_type)
{
    static const char *bad[] = {
        "{\"id\":1,\"connect\":\"x\"}",
        "{\"id\":1,\"connect\":[]}",
        "{\"id\":1,\"connect\":{\"token\":5}}",
        "{\"id\":1,\"connect\":{\"name\":{}}}",
        "{\"id\":1,\"connect\":{\"subs\":[]}}",
        "{\"id\":1,\"subscribe\":{\"channel\":5}}",
        "{\"id\":1,\"subscribe\":{\"channel\":\"a\",\"recover\":\"true\"}}",
        "{\"id\":1,\"subscribe\":{\"channel\":\"a\",\"recover\":1}}",
        "{\"id\":1,\"subscribe\":{\"channel\":\"a\",\"offset\":-1}}",
        "{\"id\":1,\"subscribe\":{\"channel\":\"a\",\"offset\":1.5}}",
        "{\"id\":1,\"subscribe\":{\"channel\":\"a\",\"offset\":\"5\"}}",
        "{\"id\":1,\"subscribe\":{\"channel\":\"a\",\"offset\":18446744073709551616}}",
        "{\"id\":1,\"subscribe\":{\"channel\":\"a\",\"epoch\":1}}",
        "{\"id\":1,\"subscribe\":{\"channel\":\"a\",\"positioned\":\"yes\"}}",
        "{\"id\":1,\"subscribe\":{\"channel\":\"a\",\"join_leave\":0}}",
        "{\"id\":1,\"history\":{\"channel\":\"a\",\"limit\":\"10\"}}",
        "{\"id\":1,\"history\":{\"channel\":\"a\",\"reverse\":1}}",
        "{\"id\":1,\"rpc\":{\"method\":[]}}",
        "{\"id\":1,\"refresh\":{\"token\":false}}",
    };
    struct proto_command c;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (decode(bad[i], &c) != -1)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
        CHECK_EQ(decode(bad[i], &c), -1);
    }
}

TEST(test_proto_command_treats_null_as_absent)
{
    struct proto_command c;
    CHECK_EQ(decode("{\"id\":1,\"connect\":{\"token\":null,\"data\":null,\"name\":\"js\"},"
                    "\"subscribe\":null}",
                    &c),
             0);
    CHECK_EQ(c.method, PROTO_CONNECT);
    CHECK(c.token.p == NULL);
    CHECK(c.data.p == NULL);
    CHECK_EQ(decode("{\"id\":1,\"history\":{\"channel\":\"a\",\"since\":null}}", &c), 0);
    CHECK_EQ(c.has_since, 0);
}

TEST(test_proto_command_ignores_fields_of_other_methods)
{
    struct proto_command c;
    /* "channel" means nothing to connect; "method" nothing to publish */
    CHECK_EQ(decode("{\"id\":1,\"connect\":{\"channel\":5,\"offset\":\"x\"}}", &c), 0);
    CHECK(c.channel.p == NULL);
    CHECK_EQ(decode("{\"id\":1,\"publish\":{\"channel\":\"a\",\"method\":1,\"data\":1}}", &c), 0);
    CHECK(c.rpc_method.p == NULL);
    CHECK_MEM(c.data.p, c.data.len, "1");
    CHECK_EQ(decode("{\"id\":1,\"foo\":[1,{\"connect\":{}}],\"ping\":{\"x\":{}}}", &c), 0);
    CHECK_EQ(c.method, PROTO_PING);
}

TEST(test_proto_command_rejects_zero_or_several_methods)
{
    struct proto_command c;
    CHECK_EQ(decode("{\"id\":1}", &c), -1);
    CHECK_EQ(decode("{\"id\":1,\"foo\":{}}", &c), -1);
    CHECK_EQ(decode("{\"flag\":1}", &c), -1);
    CHECK_EQ(decode("{\"id\":1,\"ping\":{},\"presence\":{\"channel\":\"a\"}}", &c), -1);
    CHECK_EQ(decode("{\"id\":1,\"ping\":{},\"ping\":{}}", &c), -1);
    CHECK_EQ(decode("{\"id\":1,\"connect\":null}", &c), -1);
}

TEST(test_proto_command_unescapes_channel_in_place)
{
    struct proto_command c;
    const char *s = "{\"id\":1,\"subscribe\":{\"channel\":\"a\\/b\\u00e9\\uD83D\\uDE00\\\"\"}}";
    CHECK_EQ(decode(s, &c), 0);
    CHECK_MEM(c.channel.p, c.channel.len, "a/b\xc3\xa9\xf0\x9f\x98\x80\"");
    CHECK(span_in_buf(c.channel, strlen(s)));
    s = "{\"id\":1,\"connect\":{\"token\":\"a\\\\b\",\"name\":\"\\u006As\"}}";
    CHECK_EQ(decode(s, &c), 0);
    CHECK_MEM(c.token.p, c.token.len, "a\\b");
    CHECK_MEM(c.name.p, c.name.len, "js");
}

TEST(test_proto_command_rejects_bad_channels)
{
    struct proto_command c;
    CHECK_EQ(decode("{\"id\":1,\"subscribe\":{}}", &c), -1);
    CHECK_EQ(decode("{\"id\":1,\"subscribe\":{\"channel\":\"\"}}", &c), -1);
    CHECK_EQ(decode("{\"id\":1,\"publish\":{\"data\":1}}", &c), -1);
    CHECK_EQ(decode("{\"id\":1,\"subscribe\":{\"channel\":\"a\\nb\"}}", &c), -1);
    CHECK_EQ(decode("{\"id\":1,\"subscribe\":{\"channel\":\"a\\u0000\"}}", &c), -1);
    CHECK_EQ(decode("{\"id\":1,\"subscribe\":{\"channel\":\"a\\u001f\"}}", &c), -1);
    CHECK_EQ(decode("{\"id\":1,\"subscribe\":{\"channel\":\"\\uD800\"}}", &c), -1);
    CHECK_EQ(decode("{\"id\":1,\"subscribe\":{\"channel\":\"\\uDC00x\"}}", &c), -1);

    char s[600];
    char name[300];
    memset(name, 'c', 255);
    name[255] = '\0';
    snprintf(s, sizeof(s), "{\"id\":1,\"subscribe\":{\"channel\":\"%s\"}}", name);
    CHECK_EQ(decode(s, &c), 0);
    CHECK_EQ(c.channel.len, 255);
    /* Longer names are the session's to refuse (max_channel_length, error 107); the
     * decoder only refuses what a 16-bit length cannot hold. */
    static char long_cmd[PROTO_MAX_CHANNEL + 64];
    size_t big = sizeof(long_cmd);
    int head = snprintf(long_cmd, big, "{\"id\":1,\"subscribe\":{\"channel\":\"");
    memset(long_cmd + head, 'c', PROTO_MAX_CHANNEL);
    snprintf(long_cmd + head + PROTO_MAX_CHANNEL, big - head - PROTO_MAX_CHANNEL, "\"}}");
    CHECK_EQ(proto_command_decode((uint8_t *)long_cmd, strlen(long_cmd), &c), 0);
    CHECK_EQ(c.channel.len, PROTO_MAX_CHANNEL);
    head = snprintf(long_cmd, big, "{\"id\":1,\"subscribe\":{\"channel\":\"");
    memset(long_cmd + head, 'c', PROTO_MAX_CHANNEL + 1);
    snprintf(long_cmd + head + PROTO_MAX_CHANNEL + 1, big - head - PROTO_MAX_CHANNEL - 1, "\"}}");
    CHECK_EQ(proto_command_decode((uint8_t *)long_cmd, strlen(long_cmd), &c), -1);
    /* the limit counts bytes after unescaping: 255 of them written as escapes */
    char *w = s + snprintf(s, sizeof(s), "{\"id\":1,\"subscribe\":{\"channel\":\"");
    for (int i = 0; i < 85; i++)
        w += sprintf(w, "\\u20ac"); /* 3 bytes each */
    sprintf(w, "\"}}");
    CHECK_EQ(decode(s, &c), 0);
    CHECK_EQ(c.channel.len, 255);
}

TEST(test_proto_command_rejects_garbage_and_trailing_data)
{
    static const char *bad[] = {
        "",
        " ",
        "x",
        "null",
        "[]",
        "[{\"id\":1,\"ping\":{}}]",
        "\"ping\"",
        "5",
        "{\"id\":1,\"ping\":{}",
        "{\"id\":1,\"ping\":{}}}",
        "{\"id\":1,\"ping\":{}} x",
        "{\"id\":1,\"ping\":{}}{\"id\":2,\"ping\":{}}",
        "{\"id\":1,\"ping\":{}}\n{}",
        "{\"id\":1,,\"ping\":{}}",
        "{'id':1}",
        "{\"id\":01,\"ping\":{}}",
        "{\"id\":1,\"ping\":{},}",
        "{\"id\":1 \"ping\":{}}",
    };
    struct proto_command c;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (decode(bad[i], &c) != -1)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
        CHECK_EQ(decode(bad[i], &c), -1);
    }
    CHECK_EQ(decode("\r\n {\"id\":1,\"ping\":{}} \n", &c), 0);
}

TEST(test_proto_command_accepts_data_of_any_shape_within_its_size)
{
    /* data is bounded by bytes (max_message_size), not by how many values it holds. */
    static char s[65536];
    struct proto_command c;
    for (int count = 507; count <= 20000; count = count < 600 ? 5000 : 20000) {
        char *w = s + sprintf(s, "{\"id\":7,\"publish\":{\"channel\":\"c\",\"data\":[");
        for (int i = 0; i < count; i++)
            w += sprintf(w, i ? ",1" : "1");
        sprintf(w, "]}}");
        CHECK_EQ(decode(s, &c), 0);
        CHECK_EQ(c.method, PROTO_PUBLISH);
        CHECK_EQ(c.data.len, (size_t)(2 * count + 1));
        if (count == 20000)
            break;
    }
    /* ... and still refused when it is not JSON. */
    sprintf(s + strlen(s) - 3, "],}}");
    CHECK_EQ(decode(s, &c), -1);
}

TEST(test_proto_command_keeps_spans_inside_the_input)
{
    struct proto_command c;
    const char *s = "{\"id\":3,\"subscribe\":{\"channel\":\"n\\u00e9ws\",\"token\":\"t\\n\","
                    "\"data\":{\"k\":\"v\\u0041\"},\"epoch\":\"e\"}}";
    size_t n = strlen(s);
    CHECK_EQ(decode(s, &c), 0);
    CHECK(span_in_buf(c.channel, n));
    CHECK(span_in_buf(c.token, n));
    CHECK(span_in_buf(c.data, n));
    CHECK(span_in_buf(c.epoch, n));
    /* raw data is not unescaped */
    CHECK_MEM(c.data.p, c.data.len, "{\"k\":\"v\\u0041\"}");
    CHECK_MEM(c.token.p, c.token.len, "t\n");
}

int main(void)
{
    RUN(test_proto_command_decodes_connect_from_js_client);
    RUN(test_proto_command_decodes_full_connect_with_data_and_subs);
    RUN(test_proto_command_decodes_subscribe_with_recovery_and_unknown_fields);
    RUN(test_proto_command_decodes_subscribe_with_every_js_option);
    RUN(test_proto_command_decodes_every_other_method);
    RUN(test_proto_command_decodes_history_with_since_and_defaults);
    RUN(test_proto_command_decodes_send_without_id);
    RUN(test_proto_command_decodes_empty_object_as_pong);
    RUN(test_proto_command_requires_id_except_for_send);
    RUN(test_proto_command_rejects_ids_outside_uint32);
    RUN(test_proto_command_rejects_known_fields_of_wrong_type);
    RUN(test_proto_command_treats_null_as_absent);
    RUN(test_proto_command_ignores_fields_of_other_methods);
    RUN(test_proto_command_rejects_zero_or_several_methods);
    RUN(test_proto_command_unescapes_channel_in_place);
    RUN(test_proto_command_rejects_bad_channels);
    RUN(test_proto_command_rejects_garbage_and_trailing_data);
    RUN(test_proto_command_accepts_data_of_any_shape_within_its_size);
    RUN(test_proto_command_keeps_spans_inside_the_input);
    return test_summary("proto_command");
}
