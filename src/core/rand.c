/* Random identifiers (see rand.h). */
#include "core/rand.h"

#include <openssl/rand.h>
#include <stdint.h>

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

void rand_hex(char *out, size_t n)
{
    uint8_t b[64];
    size_t j = 0;
    while (n > 0) {
        size_t k = n < sizeof(b) ? n : sizeof(b);
        RAND_bytes(b, (int)k);
        for (size_t i = 0; i < k; i++) {
            out[j++] = hex[b[i] >> 4];
            out[j++] = hex[b[i] & 15];
        }
        n -= k;
    }
    out[j] = 0;
}
