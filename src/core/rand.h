/* Randomness from OpenSSL's DRBG (thread-safe): identifiers and secrets. */
#ifndef HERALD_CORE_RAND_H
#define HERALD_CORE_RAND_H

#include <stddef.h>

/* A random (version 4) UUID, 36 characters and a NUL. */
void rand_uuid(char out[37]);
/* n random bytes as 2n lowercase hex characters and a NUL. */
void rand_hex(char *out, size_t n);

#endif
