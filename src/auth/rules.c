/* API key and Origin rules (see rules.h). */
#include "auth/rules.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

int auth_api_key_ok(const char *key, const uint8_t *given, size_t len)
{
    if (key == NULL || key[0] == 0)
        return 0;
    unsigned char want[SHA256_DIGEST_LENGTH], got[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)key, strlen(key), want);
    SHA256(given, len, got);
    return CRYPTO_memcmp(want, got, sizeof(want)) == 0;
}

int auth_origin_allowed(char *const *allowed, size_t n, const uint8_t *origin, size_t len)
{
    if (n == 0)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (strlen(allowed[i]) == len && memcmp(allowed[i], origin, len) == 0)
            return 1;
    return 0;
}
