/* Random identifiers (see rand.h). */
#include "core/rand.h"

#include <openssl/rand.h>
#include <stdint.h>
#include <string.h>

static const char hex[] = "0123456789abcdef";

void rand_uuid(char out[37])
{
    uint8_t b[16];
    RAND_bytes(b, sizeof(b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    int j = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[j++] = '-';
        out[j++] = hex[b[i] >> 4];
        out[j++] = hex[b[i] & 15];
    }
    out[j] = 0;
}

/* Bytes from a per-thread pool of DRBG output, refilled 512 bytes at a time: the
 * DRBG's lock and fork check once a refill, not once a publication (an epoch
 * candidate goes with every publish to Redis). */
static void pooled(uint8_t *b, size_t n)
{
    static _Thread_local uint8_t pool[512];
    static _Thread_local size_t left;
    while (n > 0) {
        if (left == 0) {
            RAND_bytes(pool, sizeof(pool));
            left = sizeof(pool);
        }
        size_t k = n < left ? n : left;
        memcpy(b, pool + sizeof(pool) - left, k);
        memset(pool + sizeof(pool) - left, 0, k); /* handed out once */
        left -= k;
        b += k;
        n -= k;
    }
}

void rand_hex(char *out, size_t n)
{
    uint8_t b[64];
    size_t j = 0;
    while (n > 0) {
        size_t k = n < sizeof(b) ? n : sizeof(b);
        pooled(b, k);
        for (size_t i = 0; i < k; i++) {
            out[j++] = hex[b[i] >> 4];
            out[j++] = hex[b[i] & 15];
        }
        n -= k;
    }
    out[j] = 0;
}
