/* Incremental UTF-8 validator (see utf8.h). Validation only: it never decodes code
 * points, and knows nothing of WebSocket framing. */
#include "ws/utf8.h"

#include <string.h>

/* The state is ACCEPT (0) between characters. Inside a multi-byte sequence it holds
 * the number of continuation bytes still expected (bits 16-17) and the inclusive
 * range the next byte must fall in (low bound bits 8-15, high bound bits 0-7): the
 * range is narrower than 80..BF only right after E0, ED, F0 and F4 (RFC 3629 §4,
 * the table of well-formed byte sequences), which is how overlongs, surrogates and
 * code points above U+10FFFF are refused without decoding. REJECT is sticky. */
#define UTF8_REJECT 0xFFFFFFFFu

#define ASCII_MASK 0x8080808080808080ull

static inline uint32_t pack(unsigned need, unsigned lo, unsigned hi)
{
    return (uint32_t)need << 16 | (uint32_t)lo << 8 | (uint32_t)hi;
}

int ws_utf8_feed(uint32_t *state, const uint8_t *p, size_t len)
{
    uint32_t s = *state;
    if (s == UTF8_REJECT)
        return -1;
    unsigned need = s >> 16, lo = (s >> 8) & 0xFF, hi = s & 0xFF;
    const uint8_t *end = p + len;

    while (p < end) {
        if (need == 0) {
            /* Between characters: skip ASCII a word at a time. Most JSON text is ASCII. */
            while (end - p >= 8) {
                uint64_t w;
                memcpy(&w, p, 8);
                if (w & ASCII_MASK)
                    break;
                p += 8;
            }
            while (p < end && *p < 0x80)
                p++;
            if (p == end)
                break;
            unsigned c = *p++;
            if (c < 0xC2) { /* continuation byte without a lead, or overlong C0/C1 */
                goto reject;
            } else if (c < 0xE0) {
                need = 1, lo = 0x80, hi = 0xBF;
            } else if (c < 0xF0) { /* E0: no overlongs; ED: no surrogates D800-DFFF */
                need = 2;
                lo = c == 0xE0 ? 0xA0 : 0x80;
                hi = c == 0xED ? 0x9F : 0xBF;
            } else if (c < 0xF5) { /* F0: no overlongs; F4: nothing above U+10FFFF */
                need = 3;
                lo = c == 0xF0 ? 0x90 : 0x80;
                hi = c == 0xF4 ? 0x8F : 0xBF;
            } else {
                goto reject;
            }
        } else {
            unsigned c = *p++;
            if (c < lo || c > hi)
                goto reject;
            need--, lo = 0x80, hi = 0xBF;
        }
    }
    *state = need ? pack(need, lo, hi) : WS_UTF8_ACCEPT;
    return 0;

reject:
    *state = UTF8_REJECT;
    return -1;
}

int ws_utf8_valid(const uint8_t *p, size_t len)
{
    uint32_t state = WS_UTF8_ACCEPT;
    return ws_utf8_feed(&state, p, len) == 0 && state == WS_UTF8_ACCEPT;
}
