/* Unit tests for ws/utf8.c: RFC 3629 rules, the ASCII fast path, and state carried
 * across calls. A naive decoder below is the reference the validator is checked against. */
#include "ws/utf8.h"

#include <stdint.h>
#include <stdlib.h>

#include "test.h"

#define S(lit) (const uint8_t *)(lit), sizeof(lit) - 1

/* Reference: decode code point by code point, then check minimality, surrogates and
 * range. Slow and obviously right; returns 1 if p[0..len) is valid UTF-8. */
static int reference_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        int n;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (len - i - 1 < (size_t)n)
            return 0;
        for (int k = 1; k <= n; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += (size_t)n + 1;
    }
    return 1;
}

TEST(test_ws_utf8_accepts_empty_and_ascii)
{
    CHECK(ws_utf8_valid((const uint8_t *)"", 0));
    uint8_t buf[100];
    for (size_t n = 0; n <= sizeof(buf); n++) {
        memset(buf, 'a', n);
        CHECK(ws_utf8_valid(buf, n));
    }
    CHECK(ws_utf8_valid(S("{\"method\":1,\"id\":2}\x00\x7f")));
}

TEST(test_ws_utf8_accepts_boundary_code_points)
{
    CHECK(ws_utf8_valid(S("\xC2\x80")));                                     /* U+0080 */
    CHECK(ws_utf8_valid(S("\xDF\xBF")));                                     /* U+07FF */
    CHECK(ws_utf8_valid(S("\xE0\xA0\x80")));                                 /* U+0800 */
    CHECK(ws_utf8_valid(S("\xED\x9F\xBF")));                                 /* U+D7FF */
    CHECK(ws_utf8_valid(S("\xEE\x80\x80")));                                 /* U+E000 */
    CHECK(ws_utf8_valid(S("\xEF\xBF\xBF")));                                 /* U+FFFF */
    CHECK(ws_utf8_valid(S("\xF0\x90\x80\x80")));                             /* U+10000 */
    CHECK(ws_utf8_valid(S("\xF4\x8F\xBF\xBF")));                             /* U+10FFFF */
    CHECK(ws_utf8_valid(S("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5"))); /* Autobahn 6.2 */
    CHECK(ws_utf8_valid(S("Hello-\xC2\xB5@\xC3\x9F\xC3\xB6\xC3\xA4\xC3\xBC\xC3\xA0\xC3\xA1"
                          "-UTF-8!!")));
}

TEST(test_ws_utf8_rejects_overlongs)
{
    CHECK(!ws_utf8_valid(S("\xC0\x80")));
    CHECK(!ws_utf8_valid(S("\xC0\xAF")));
    CHECK(!ws_utf8_valid(S("\xC1\xBF")));
    CHECK(!ws_utf8_valid(S("\xE0\x80\x80")));
    CHECK(!ws_utf8_valid(S("\xE0\x9F\xBF")));
    CHECK(!ws_utf8_valid(S("\xF0\x80\x80\x80")));
    CHECK(!ws_utf8_valid(S("\xF0\x8F\xBF\xBF")));
}

TEST(test_ws_utf8_rejects_surrogates)
{
    CHECK(!ws_utf8_valid(S("\xED\xA0\x80"))); /* U+D800 */
    CHECK(!ws_utf8_valid(S("\xED\xAD\xBF")));
    CHECK(!ws_utf8_valid(S("\xED\xBF\xBF")));             /* U+DFFF */
    CHECK(!ws_utf8_valid(S("\xED\xA0\x80\xED\xB0\x80"))); /* a surrogate pair, CESU-8 */
}

TEST(test_ws_utf8_rejects_above_u10ffff_and_invalid_bytes)
{
    CHECK(!ws_utf8_valid(S("\xF4\x90\x80\x80")));
    CHECK(!ws_utf8_valid(S("\xF7\xBF\xBF\xBF")));
    for (unsigned b = 0xF5; b <= 0xFF; b++) {
        uint8_t seq[4] = {(uint8_t)b, 0x80, 0x80, 0x80};
        CHECK(!ws_utf8_valid(seq, 4));
    }
    CHECK(!ws_utf8_valid(S("\x80")));
    CHECK(!ws_utf8_valid(S("\xBF")));
    CHECK(!ws_utf8_valid(S("a\x80"
                           "b")));
}

TEST(test_ws_utf8_rejects_bad_continuations_and_truncation)
{
    CHECK(!ws_utf8_valid(S("\xE2\x28\xA1")));
    CHECK(!ws_utf8_valid(S("\xC3"
                           "a")));
    CHECK(!ws_utf8_valid(S("\xF0\x90\x80"
                           "a")));
    CHECK(!ws_utf8_valid(S("\xC3")));
    CHECK(!ws_utf8_valid(S("\xE2\x82")));
    CHECK(!ws_utf8_valid(S("\xF0\x90\x80")));
    CHECK(!ws_utf8_valid(S("\xC3\xA9\xA9"))); /* one continuation too many */
}

TEST(test_ws_utf8_feed_reports_valid_prefix_of_truncated_sequence)
{
    uint32_t st = WS_UTF8_ACCEPT;
    CHECK_EQ(ws_utf8_feed(&st, S("ab\xF0\x9F")), 0);
    CHECK(st != WS_UTF8_ACCEPT);
    CHECK_EQ(ws_utf8_feed(&st, S("\x98")), 0);
    CHECK(st != WS_UTF8_ACCEPT);
    CHECK_EQ(ws_utf8_feed(&st, S("\x80")), 0);
    CHECK_EQ(st, WS_UTF8_ACCEPT);
}

TEST(test_ws_utf8_feed_carries_bounds_across_calls)
{
    /* The narrowed range after E0/ED/F0/F4 must survive a split right after the lead. */
    const char *bad[] = {"\xE0\x80\x80", "\xED\xA0\x80", "\xF0\x80\x80\x80", "\xF4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint32_t st = WS_UTF8_ACCEPT;
        CHECK_EQ(ws_utf8_feed(&st, (const uint8_t *)bad[i], 1), 0);
        CHECK_EQ(ws_utf8_feed(&st, (const uint8_t *)bad[i] + 1, strlen(bad[i]) - 1), -1);
    }
}

TEST(test_ws_utf8_feed_fails_fast_and_stays_failed)
{
    uint32_t st = WS_UTF8_ACCEPT;
    CHECK_EQ(ws_utf8_feed(&st, S("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5")), 0);
    CHECK_EQ(ws_utf8_feed(&st, S("\xF4\x90")), -1); /* invalid already, more would not help */
    CHECK_EQ(ws_utf8_feed(&st, S("a")), -1);
    CHECK_EQ(ws_utf8_feed(&st, (const uint8_t *)"", 0), -1);
}

TEST(test_ws_utf8_split_at_every_position_agrees_with_whole)
{
    static const char text[] = "a\xC2\xB5"
                               "bc\xE2\x82\xAC\xF0\x9F\x98\x80"
                               "0123456789abcdef"
                               "\xED\x9F\xBF\xF4\x8F\xBF\xBF"
                               "end";
    size_t n = sizeof(text) - 1;
    CHECK(ws_utf8_valid((const uint8_t *)text, n));
    for (size_t cut = 0; cut <= n; cut++) {
        for (size_t cut2 = cut; cut2 <= n; cut2++) {
            uint32_t st = WS_UTF8_ACCEPT;
            CHECK_EQ(ws_utf8_feed(&st, (const uint8_t *)text, cut), 0);
            CHECK_EQ(ws_utf8_feed(&st, (const uint8_t *)text + cut, cut2 - cut), 0);
            CHECK_EQ(ws_utf8_feed(&st, (const uint8_t *)text + cut2, n - cut2), 0);
            CHECK_EQ(st, WS_UTF8_ACCEPT);
        }
    }
}

TEST(test_ws_utf8_fast_path_does_not_skip_invalid_byte)
{
    /* A bad byte at each position of a long ASCII run, at each alignment. */
    uint8_t buf[64 + 8];
    for (size_t align = 0; align < 8; align++) {
        for (size_t pos = 0; pos < 64; pos++) {
            memset(buf, 'x', sizeof(buf));
            buf[align + pos] = 0xFF;
            CHECK(!ws_utf8_valid(buf + align, 64));
            buf[align + pos] = 0xC3; /* lead byte followed by ASCII */
            CHECK(!ws_utf8_valid(buf + align, 64));
            if (pos < 63) {
                buf[align + pos + 1] = 0xA9;
                CHECK(ws_utf8_valid(buf + align, 64));
            }
        }
    }
}

TEST(test_ws_utf8_agrees_with_reference_on_all_short_sequences)
{
    int disagree = 0;
    uint8_t s[4];
    for (unsigned a = 0; a < 256; a++) {
        s[0] = (uint8_t)a;
        disagree += ws_utf8_valid(s, 1) != reference_valid(s, 1);
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (uint8_t)b;
            disagree += ws_utf8_valid(s, 2) != reference_valid(s, 2);
            if (a < 0xC0)
                continue; /* 3-byte strings starting with ASCII or a continuation: the
                           * 2-byte cases above already cover their structure */
            for (unsigned c = 0; c < 256; c++) {
                s[2] = (uint8_t)c;
                disagree += ws_utf8_valid(s, 3) != reference_valid(s, 3);
            }
        }
    }
    /* 4-byte sequences: every lead from F0 up with every second byte, and third/fourth
     * bytes at and around the continuation range. */
    static const uint8_t edge[] = {0x00, 0x41, 0x7F, 0x80, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
    for (unsigned a = 0xF0; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            for (size_t c = 0; c < sizeof(edge); c++) {
                for (size_t d = 0; d < sizeof(edge); d++) {
                    s[0] = (uint8_t)a, s[1] = (uint8_t)b, s[2] = edge[c], s[3] = edge[d];
                    disagree += ws_utf8_valid(s, 4) != reference_valid(s, 4);
                }
            }
        }
    }
    CHECK_EQ(disagree, 0);
}

TEST(test_ws_utf8_byte_by_byte_agrees_with_reference_on_random_input)
{
    uint32_t seed = 12345;
    uint8_t buf[64];
    static const uint8_t pool[] = {'a',  0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF,
                                   0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF};
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)(iter % 12);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = pool[(seed >> 16) % sizeof(pool)];
        }
        int ref = reference_valid(buf, n);
        uint32_t st = WS_UTF8_ACCEPT;
        int rc = 0;
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = ws_utf8_feed(&st, buf + i, 1);
        int got = rc == 0 && st == WS_UTF8_ACCEPT;
        CHECK_EQ(got, ref);
        CHECK_EQ(ws_utf8_valid(buf, n), ref);
    }
}

int main(void)
{
    RUN(test_ws_utf8_accepts_empty_and_ascii);
    RUN(test_ws_utf8_accepts_boundary_code_points);
    RUN(test_ws_utf8_rejects_overlongs);
    RUN(test_ws_utf8_rejects_surrogates);
    RUN(test_ws_utf8_rejects_above_u10ffff_and_invalid_bytes);
    RUN(test_ws_utf8_rejects_bad_continuations_and_truncation);
    RUN(test_ws_utf8_feed_reports_valid_prefix_of_truncated_sequence);
    RUN(test_ws_utf8_feed_carries_bounds_across_calls);
    RUN(test_ws_utf8_feed_fails_fast_and_stays_failed);
    RUN(test_ws_utf8_split_at_every_position_agrees_with_whole);
    RUN(test_ws_utf8_fast_path_does_not_skip_invalid_byte);
    RUN(test_ws_utf8_agrees_with_reference_on_all_short_sequences);
    RUN(test_ws_utf8_byte_by_byte_agrees_with_reference_on_random_input);
    return test_summary("ws_utf8");
}
