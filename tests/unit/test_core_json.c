/* Unit tests for core/json: strict tokenizing, look-ups, numbers, unescaping. */
#include "core/json.h"

#include <stdint.h>
#include <string.h>

#include "test.h"

#define NTOK 64

static int tokenize(const char *s, jsmntok_t *t)
{
    return json_tokenize((const uint8_t *)s, strlen(s), t, NTOK);
}

static int valid(const char *s)
{
    jsmntok_t t[NTOK];
    return tokenize(s, t) > 0;
}

TEST(test_json_tokenize_accepts_valid_documents)
{
    static const char *ok[] = {
        "{}",
        "[]",
        " { } ",
        "\t\r\n[ ]\n",
        "{\"a\":1}",
        "{\"a\" : 1 , \"b\" : [1,2,{}]}",
        "[true,false,null]",
        "\"str\"",
        "0",
        "-0",
        "1.5",
        "-1.5e10",
        "1E+2",
        "2e-3",
        "123",
        " true ",
        "null",
        "[[[[[]]]]]",
        "{\"a\":{\"b\":{\"c\":[]}}}",
        "[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"]",
        "{\"\":\"\"}",
        "[1,\"a\",{\"k\":null},[]]",
        "\"\xc3\xa9\"",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (!valid(ok[i]))
            fprintf(stderr, "  rejected: %s\n", ok[i]);
        CHECK(valid(ok[i]));
    }
}

TEST(test_json_tokenize_rejects_invalid_grammar)
{
    static const char *bad[] = {
        "",
        "   ",
        "{",
        "}",
        "[",
        "]",
        "{]",
        "[}",
        "{\"a\"}",
        "{\"a\":}",
        "{:1}",
        "{1:2}",
        "{\"a\" 1}",
        "{\"a\":1 \"b\":2}",
        "{\"a\":1,}",
        "[1,]",
        "[,1]",
        "[1 2]",
        "[1,,2]",
        "{\"a\":1,,\"b\":2}",
        "{\"a\"::1}",
        "{\"a\":1:2}",
        "{\"a\":\"b\":\"c\"}",
        "[\"a\":1]",
        "{\"a\":[]:1}",
        "{\"a\":{}\"b\":1}",
        "{,}",
        "[:]",
        "{\"a\",1}",
        "{\"a\":1}}",
        "{\"a\":1}]",
        "[]]",
        "[[]",
        "{{}}",
        "{[]:1}",
        "{\"a\":1}x",
        "{} {}",
        "1 2",
        "\"a\" \"b\"",
        "[] []",
        "{}[]",
        "{\"a\":1},",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (valid(bad[i]))
            fprintf(stderr, "  accepted: %s\n", bad[i]);
        CHECK(!valid(bad[i]));
    }
}

TEST(test_json_tokenize_rejects_invalid_primitives)
{
    static const char *bad[] = {
        "[tru]",   "[truex]", "[True]",     "[nul]",       "[nulll]",  "[01]",        "[-]",
        "[1.]",    "[.5]",    "[1e]",       "[1e+]",       "[+1]",     "[--1]",       "[0x10]",
        "[1.5.5]", "[NaN]",   "[Infinity]", "[-Infinity]", "[1\"a\"]", "{\"a\":tru}", "01",
        "-",       "tru",     "1.",         "[1a]",        "[true{}]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (valid(bad[i]))
            fprintf(stderr, "  accepted: %s\n", bad[i]);
        CHECK(!valid(bad[i]));
    }
}

TEST(test_json_tokenize_rejects_invalid_strings)
{
    static const char *bad[] = {
        "[\"\\x\"]",  "[\"\\u12\"]", "[\"\\u12g4\"]", "[\"\\U1234\"]", "[\"\\'\"]",
        "[\"a\tb\"]", "[\"a\nb\"]",  "[\"\x01\"]",    "[\"abc]",       "\"abc",
        "\"\\\"",     "[\"\\\"]",    "['a']",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (valid(bad[i]))
            fprintf(stderr, "  accepted: %s\n", bad[i]);
        CHECK(!valid(bad[i]));
    }
}

TEST(test_json_tokenize_rejects_bytes_after_nul)
{
    jsmntok_t t[NTOK];
    static const uint8_t a[] = "{}\0{}";
    CHECK_EQ(json_tokenize(a, sizeof(a) - 1, t, NTOK), -1);
    static const uint8_t b[] = "{\"a\":\"x\0y\"}";
    CHECK_EQ(json_tokenize(b, sizeof(b) - 1, t, NTOK), -1);
    static const uint8_t c[] = "{}\0";
    CHECK_EQ(json_tokenize(c, sizeof(c) - 1, t, NTOK), -1);
}

TEST(test_json_tokenize_reads_only_len_bytes)
{
    jsmntok_t t[NTOK];
    /* The byte after len would complete the value: it must not be looked at. */
    CHECK_EQ(json_tokenize((const uint8_t *)"{\"a\":1}", 6, t, NTOK), -1);
    CHECK_EQ(json_tokenize((const uint8_t *)"[1]", 3, t, NTOK), 2);
    CHECK_EQ(json_tokenize((const uint8_t *)"123", 2, t, NTOK), 1);
    CHECK_EQ(t[0].end, 2);
}

TEST(test_json_tokenize_rejects_more_tokens_than_given)
{
    jsmntok_t t[4];
    const char *s = "[1,2,3]";
    CHECK_EQ(json_tokenize((const uint8_t *)s, strlen(s), t, 4), 4);
    s = "[1,2,3,4]";
    CHECK_EQ(json_tokenize((const uint8_t *)s, strlen(s), t, 4), -1);
    CHECK_EQ(json_tokenize((const uint8_t *)s, strlen(s), t, 0), -1);
}

TEST(test_json_tokenize_refuses_nesting_deeper_than_the_limit)
{
    static uint8_t deep[20000];
    static jsmntok_t t[10001];
    for (size_t i = 0; i < 10000; i++) {
        deep[i] = '[';
        deep[10000 + i] = ']';
    }
    /* 10,000 deep: refused at the limit, not when the stack of open containers overflows. */
    CHECK_EQ(json_tokenize(deep, sizeof(deep), t, 10001), -1);
    /* Exactly the limit is accepted, one more is not. */
    size_t d = JSON_MAX_DEPTH;
    memmove(deep + d, deep + 10000, d); /* d '[' then d ']' */
    CHECK_EQ(json_tokenize(deep, 2 * d, t, 10001), (int)d);
    CHECK_EQ(json_tokenize(deep, 2 * d, t, 100), -1);
    CHECK_EQ(json_tokenize(deep, 2 * d - 1, t, 10001), -1);
    static uint8_t deeper[2 * JSON_MAX_DEPTH + 2];
    for (size_t i = 0; i <= d; i++) {
        deeper[i] = '[';
        deeper[d + 1 + i] = ']';
    }
    CHECK_EQ(json_tokenize(deeper, sizeof(deeper), t, 10001), -1);
    /* Brackets inside strings are not nesting. */
    static uint8_t str[2 * JSON_MAX_DEPTH + 16];
    size_t n = 0;
    str[n++] = '[';
    str[n++] = '"';
    for (size_t i = 0; i < 2 * d; i++)
        str[n++] = '[';
    str[n++] = '\\';
    str[n++] = '"';
    str[n++] = '"';
    str[n++] = ']';
    CHECK_EQ(json_tokenize(str, n, t, 16), 2);
}

/* Strings are skipped eight bytes at a time: an escape, a raw control character or a
 * closing quote must be found at every offset of a block. */
TEST(test_json_tokenize_finds_every_special_byte_in_a_string)
{
    jsmntok_t t[NTOK];
    for (size_t len = 0; len <= 24; len++) {
        for (size_t k = 0; k <= len; k++) {
            uint8_t s[40];
            size_t n = 0;
            s[n++] = '[';
            s[n++] = '"';
            memset(s + n, 'a', len);
            n += len;
            s[n++] = '"';
            s[n++] = ']';
            /* a closing quote at k, then len - k bytes that are not JSON */
            s[2 + k] = '"';
            CHECK_EQ(json_tokenize(s, n, t, NTOK), k == len ? 2 : -1);
            if (k == len)
                CHECK_EQ(t[1].end - t[1].start, (int)len);
            s[2 + k] = k == len ? '"' : 0x1f; /* a raw control character */
            CHECK_EQ(json_tokenize(s, n, t, NTOK), k == len ? 2 : -1);
            if (k == len)
                continue;
            s[2 + k] = '\\'; /* an escape: valid only when what follows makes one */
            s[3 + k] = 'n';
            CHECK_EQ(json_tokenize(s, n, t, NTOK), k + 1 < len ? 2 : -1);
            s[3 + k] = 'q';
            CHECK_EQ(json_tokenize(s, n, t, NTOK), -1);
        }
    }
}

TEST(test_json_tokenize_reports_token_layout)
{
    jsmntok_t t[NTOK];
    const char *s = " {\"id\":7,\"a\":[1,\"x\"],\"b\":{\"c\":null}} ";
    int n = tokenize(s, t);
    CHECK_EQ(n, 11);
    CHECK_EQ(t[0].type, JSMN_OBJECT);
    CHECK_EQ(t[0].size, 3);
    CHECK_EQ(t[0].start, 1);
    CHECK_EQ(t[0].end, (int)strlen(s) - 1);
    CHECK_EQ(t[1].type, JSMN_STRING);
    CHECK_EQ(t[2].type, JSMN_PRIMITIVE);
    CHECK_EQ(t[4].type, JSMN_ARRAY);
    CHECK_EQ(t[4].size, 2);
}

TEST(test_json_skip_and_obj_get_see_direct_members_only)
{
    jsmntok_t t[NTOK];
    const char *s = "{\"a\":{\"b\":1,\"c\":[1,2]},\"b\":2,\"c\":\"x\",\"\\u0064\":4}";
    const uint8_t *js = (const uint8_t *)s;
    int n = tokenize(s, t);
    CHECK(n > 0);
    CHECK_EQ(json_skip(t, n, 0), n);
    CHECK_EQ(json_skip(t, n, 1), 9); /* key "a" with its object value */
    CHECK_EQ(json_skip(t, n, 2), 9); /* the object value */
    int b = json_obj_get(js, t, n, 0, "b");
    CHECK_EQ(b, 10);
    uint64_t v = 0;
    CHECK_EQ(json_tok_u64(js, &t[b], &v), 0);
    CHECK_EQ(v, 2);
    int c = json_obj_get(js, t, n, 0, "c");
    CHECK_EQ(c, 12);
    CHECK_EQ(t[c].type, JSMN_STRING);
    CHECK_EQ(json_obj_get(js, t, n, 0, "d"), -1); /* keys compare escaped */
    CHECK_EQ(json_obj_get(js, t, n, 0, "\\u0064"), 14);
    CHECK_EQ(json_obj_get(js, t, n, 0, "zz"), -1);
    int a = json_obj_get(js, t, n, 0, "a");
    CHECK_EQ(json_obj_get(js, t, n, a, "c"), 6);
    CHECK_EQ(json_obj_get(js, t, n, 6, "c"), -1); /* not an object */
    CHECK_EQ(json_skip(t, n, n), n);
}

TEST(test_json_tok_eq_compares_whole_string_tokens)
{
    jsmntok_t t[NTOK];
    const char *s = "[\"abc\",\"ab\",true]";
    const uint8_t *js = (const uint8_t *)s;
    CHECK_EQ(tokenize(s, t), 4);
    CHECK(json_tok_eq(js, &t[1], "abc"));
    CHECK(!json_tok_eq(js, &t[1], "ab"));
    CHECK(!json_tok_eq(js, &t[1], "abcd"));
    CHECK(json_tok_eq(js, &t[2], "ab"));
    CHECK(!json_tok_eq(js, &t[3], "true")); /* not a string */
}

TEST(test_json_tok_u64_reads_digits_and_rejects_overflow)
{
    jsmntok_t t[NTOK];
    const char *s = "[0,18446744073709551615,18446744073709551616,-1,1.0,1e3,\"5\",true,"
                    "99999999999999999999999]";
    const uint8_t *js = (const uint8_t *)s;
    CHECK_EQ(tokenize(s, t), 10);
    uint64_t v = 42;
    CHECK_EQ(json_tok_u64(js, &t[1], &v), 0);
    CHECK_EQ(v, 0);
    CHECK_EQ(json_tok_u64(js, &t[2], &v), 0);
    CHECK(v == UINT64_MAX);
    for (int i = 3; i <= 9; i++)
        CHECK_EQ(json_tok_u64(js, &t[i], &v), -1);
}

TEST(test_json_tok_i64_reads_full_range)
{
    jsmntok_t t[NTOK];
    const char *s = "[-9223372036854775808,9223372036854775807,-9223372036854775809,"
                    "9223372036854775808,-0,-1,1.5,\"1\"]";
    const uint8_t *js = (const uint8_t *)s;
    CHECK_EQ(tokenize(s, t), 9);
    int64_t v;
    CHECK_EQ(json_tok_i64(js, &t[1], &v), 0);
    CHECK(v == INT64_MIN);
    CHECK_EQ(json_tok_i64(js, &t[2], &v), 0);
    CHECK(v == INT64_MAX);
    CHECK_EQ(json_tok_i64(js, &t[3], &v), -1);
    CHECK_EQ(json_tok_i64(js, &t[4], &v), -1);
    CHECK_EQ(json_tok_i64(js, &t[5], &v), 0);
    CHECK_EQ(v, 0);
    CHECK_EQ(json_tok_i64(js, &t[6], &v), 0);
    CHECK_EQ(v, -1);
    CHECK_EQ(json_tok_i64(js, &t[7], &v), -1);
    CHECK_EQ(json_tok_i64(js, &t[8], &v), -1);
}

TEST(test_json_tok_bool_reads_only_true_and_false)
{
    jsmntok_t t[NTOK];
    const char *s = "[true,false,null,1,\"true\"]";
    const uint8_t *js = (const uint8_t *)s;
    CHECK_EQ(tokenize(s, t), 6);
    int b = -1;
    CHECK_EQ(json_tok_bool(js, &t[1], &b), 0);
    CHECK_EQ(b, 1);
    CHECK_EQ(json_tok_bool(js, &t[2], &b), 0);
    CHECK_EQ(b, 0);
    CHECK_EQ(json_tok_bool(js, &t[3], &b), -1);
    CHECK_EQ(json_tok_bool(js, &t[4], &b), -1);
    CHECK_EQ(json_tok_bool(js, &t[5], &b), -1);
}

TEST(test_json_tok_span_and_raw_bound_strings_and_values)
{
    jsmntok_t t[NTOK];
    const char *s = "{\"s\":\"a\\nb\",\"o\":{\"x\":[1]},\"n\":-2.5}";
    const uint8_t *js = (const uint8_t *)s;
    int n = tokenize(s, t);
    CHECK(n > 0);
    int v = json_obj_get(js, t, n, 0, "s");
    struct json_span sp = json_tok_span(js, &t[v]);
    CHECK_MEM(sp.p, sp.len, "a\\nb");
    sp = json_tok_raw(js, &t[v]);
    CHECK_MEM(sp.p, sp.len, "\"a\\nb\"");
    v = json_obj_get(js, t, n, 0, "o");
    sp = json_tok_raw(js, &t[v]);
    CHECK_MEM(sp.p, sp.len, "{\"x\":[1]}");
    v = json_obj_get(js, t, n, 0, "n");
    sp = json_tok_raw(js, &t[v]);
    CHECK_MEM(sp.p, sp.len, "-2.5");
}

static ssize_t unescape(const char *in, char *out)
{
    size_t n = strlen(in);
    memcpy(out, in, n + 1);
    return json_unescape((uint8_t *)out, n);
}

TEST(test_json_unescape_decodes_every_escape)
{
    char b[64];
    ssize_t n = unescape("a\\\"\\\\\\/\\b\\f\\n\\r\\tz", b);
    CHECK_MEM(b, (size_t)n, "a\"\\/\b\f\n\r\tz");
    n = unescape("\\u0041\\u00e9\\u20AC", b);
    CHECK_MEM(b, (size_t)n, "A\xc3\xa9\xe2\x82\xac");
    n = unescape("plain", b);
    CHECK_MEM(b, (size_t)n, "plain");
    CHECK_EQ(unescape("", b), 0);
}

TEST(test_json_unescape_joins_surrogate_pairs)
{
    char b[64];
    ssize_t n = unescape("x\\uD83D\\uDE00y", b);
    CHECK_MEM(b, (size_t)n, "x\xf0\x9f\x98\x80y");
    n = unescape("\\udbff\\udfff", b);
    CHECK_MEM(b, (size_t)n, "\xf4\x8f\xbf\xbf");
}

TEST(test_json_unescape_rejects_lone_surrogates)
{
    char b[64];
    CHECK_EQ(unescape("\\uD83D", b), -1);
    CHECK_EQ(unescape("\\uD83Dx", b), -1);
    CHECK_EQ(unescape("\\uD83D\\n", b), -1);
    CHECK_EQ(unescape("\\uD83D\\u0041", b), -1);
    CHECK_EQ(unescape("\\uD83D\\uD83D", b), -1);
    CHECK_EQ(unescape("\\uDE00", b), -1);
    CHECK_EQ(unescape("\\uDE00\\uD83D", b), -1);
}

TEST(test_json_unescape_keeps_nul_escape_as_a_byte)
{
    char b[64];
    ssize_t n = unescape("a\\u0000b", b);
    CHECK_EQ(n, 3);
    CHECK(memcmp(b, "a\0b", 3) == 0);
}

TEST(test_json_unescape_rejects_malformed_escapes)
{
    char b[64];
    CHECK_EQ(unescape("\\", b), -1);
    CHECK_EQ(unescape("a\\x", b), -1);
    CHECK_EQ(unescape("\\u12", b), -1);
    CHECK_EQ(unescape("\\u12z4", b), -1);
    CHECK_EQ(unescape("\\uD83D\\uDE0", b), -1);
}

int main(void)
{
    RUN(test_json_tokenize_accepts_valid_documents);
    RUN(test_json_tokenize_rejects_invalid_grammar);
    RUN(test_json_tokenize_rejects_invalid_primitives);
    RUN(test_json_tokenize_rejects_invalid_strings);
    RUN(test_json_tokenize_rejects_bytes_after_nul);
    RUN(test_json_tokenize_reads_only_len_bytes);
    RUN(test_json_tokenize_rejects_more_tokens_than_given);
    RUN(test_json_tokenize_refuses_nesting_deeper_than_the_limit);
    RUN(test_json_tokenize_finds_every_special_byte_in_a_string);
    RUN(test_json_tokenize_reports_token_layout);
    RUN(test_json_skip_and_obj_get_see_direct_members_only);
    RUN(test_json_tok_eq_compares_whole_string_tokens);
    RUN(test_json_tok_u64_reads_digits_and_rejects_overflow);
    RUN(test_json_tok_i64_reads_full_range);
    RUN(test_json_tok_bool_reads_only_true_and_false);
    RUN(test_json_tok_span_and_raw_bound_strings_and_values);
    RUN(test_json_unescape_decodes_every_escape);
    RUN(test_json_unescape_joins_surrogate_pairs);
    RUN(test_json_unescape_rejects_lone_surrogates);
    RUN(test_json_unescape_keeps_nul_escape_as_a_byte);
    RUN(test_json_unescape_rejects_malformed_escapes);
    return test_summary("core_json");
}
