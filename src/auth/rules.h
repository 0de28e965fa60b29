/* Who may do what: the server API key, the Origin allow-list. Decisions only, on
 * bytes the caller borrowed to us; no I/O. Not tokens (auth/jwt.h). */
#ifndef HERALD_AUTH_RULES_H
#define HERALD_AUTH_RULES_H

#include <stddef.h>
#include <stdint.h>

/* Does given[0..len) equal the NUL-terminated key? In constant time for any given of
 * any length: both are hashed (SHA-256) and the digests compared with CRYPTO_memcmp,
 * so neither the bytes nor the length of the key leak through timing. A NULL or
 * empty key matches nothing. */
int auth_api_key_ok(const char *key, const uint8_t *given, size_t len);

/* Is origin[0..len) one of the n exact values allowed (n == 0: any origin)? */
int auth_origin_allowed(char *const *allowed, size_t n, const uint8_t *origin, size_t len);

#endif
