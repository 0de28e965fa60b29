/* libFuzzer target for ws/utf8.c: feeding in random-sized chunks must agree with the
 * whole-buffer check and with a naive decoder, chunk by chunk (a chunk fails exactly
 * when the bytes so far can no longer be the start of valid UTF-8).
 * Input: byte 0 seeds the chunk sizes, the rest is the text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws/utf8.h"

/* Is the sequence seq[0..n) (lead byte first, all bytes present) a well-formed
 * character: right continuation bytes, shortest form, no surrogate, <= U+10FFFF? */
static int sequence_ok(const uint8_t *seq, int n)
{
    static const uint32_t min[] = {0, 0x80, 0x800, 0x10000};
    static const uint8_t lead_bits[] = {0x7F, 0x1F, 0x0F, 0x07};
    uint32_t cp = seq[0] & lead_bits[n - 1];
    for (int k = 1; k < n; k++) {
        if ((seq[k] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (seq[k] & 0x3F);
    }
    return cp >= min[n - 1] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
}

/* 1: p[0..len) is valid UTF-8; 2: a valid prefix ending inside a character; 0: neither. */
static int reference(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        int n = c < 0x80             ? 1
                : (c & 0xE0) == 0xC0 ? 2
                : (c & 0xF0) == 0xE0 ? 3
                : (c & 0xF8) == 0xF0 ? 4
                                     : 0;
        if (n == 0)
            return 0;
        if (len - i < (size_t)n) {
            /* Truncated: a prefix if some continuation bytes would complete it. */
            static const uint8_t cont[] = {0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF};
            int have = (int)(len - i), missing = n - have, combos = 1;
            for (int k = 0; k < missing; k++)
                combos *= 6;
            for (int m = 0; m < combos; m++) {
                uint8_t seq[4];
                memcpy(seq, p + i, (size_t)have);
                for (int k = 0, x = m; k < missing; k++, x /= 6)
                    seq[have + k] = cont[x % 6];
                if (sequence_ok(seq, n))
                    return 2;
            }
            return 0;
        }
        if (!sequence_ok(p + i, n))
            return 0;
        i += (size_t)n;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    uint32_t seed = data[0] * 2654435761u + 1;
    const uint8_t *p = data + 1;
    size_t len = size - 1;

    /* Heap copy so ASan catches any read past the end. */
    uint8_t *text = malloc(len ? len : 1);
    memcpy(text, p, len);

    int whole = ws_utf8_valid(text, len);
    int ref = reference(text, len);
    if (whole != (ref == 1))
        abort();

    uint32_t state = WS_UTF8_ACCEPT;
    size_t pos = 0;
    int failed = 0;
    while (pos < len) {
        seed = seed * 1103515245u + 12345u;
        size_t chunk = 1 + (seed >> 16) % ((seed & 1) ? 5 : 64);
        if (chunk > len - pos)
            chunk = len - pos;
        int rc = ws_utf8_feed(&state, text + pos, chunk);
        pos += chunk;
        int prefix = reference(text, pos);
        if ((rc == 0) != (prefix != 0))
            abort();
        if (rc == 0 && (state == WS_UTF8_ACCEPT) != (prefix == 1))
            abort();
        if (rc != 0) {
            failed = 1;
            break;
        }
    }
    if (!failed && (state == WS_UTF8_ACCEPT) != whole)
        abort();
    if (failed && whole)
        abort();
    free(text);
    return 0;
}
