/* The keys tokens are verified with: the HMAC secret and the PEM public keys of the
 * configuration, and the keys of a JWKS document (RFC 7517) chosen by the token's kid;
 * the choice of key for a token, the claims it is checked against, and when a missing
 * kid calls for the JWKS to be fetched again. No I/O: whoever fetches the JWKS hands the
 * document in (keys_load_jwks) and says when a fetch ended (keys_fetched). */
#ifndef HERALD_AUTH_KEYS_H
#define HERALD_AUTH_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "auth/jwt.h"

/* A JWKS document is a remote party's: at most this many keys are kept from it. */
#define KEYS_JWKS_MAX 256
/* A token naming an unknown kid asks for a new fetch at most this often. */
#define KEYS_REFETCH_MIN_MS 5000
/* Connections waiting for a fetch at once (each holds a few hundred bytes). */
#define KEYS_MAX_WAITERS 10000

/* What the configuration says. Strings are copied. */
struct keys_config {
    const char *hmac_secret; /* NULL or "": none */
    const char *rsa_pem;     /* PEM contents of an RSA public key (or certificate), or NULL */
    const char *ecdsa_pem;   /* PEM contents of a P-256 or P-384 public key, or NULL */
    int jwks;                /* a JWKS is fetched: tokens with a kid are looked up in it */
    const char *audience;    /* NULL: aud not checked */
    const char *issuer;      /* NULL: iss not checked */
    unsigned leeway;
};

struct keys;

/* NULL when a PEM key does not parse or is of the wrong type, with a message naming
 * the configuration key in err. */
struct keys *keys_new(const struct keys_config *c, char *err, size_t errlen);
/* After every other thread is done with it. */
void keys_free(struct keys *k);

/* Verify token (borrowed) at now (Unix seconds). A token with a kid the JWKS has is
 * checked with that key; otherwise with the configured key of its alg's family (HS* the
 * secret, RS* and PS256 the RSA key, ES* the EC key of that curve); none: JWT_INVALID,
 * or JWT_UNKNOWN_KID when it names a kid and a JWKS is configured. Claims as in
 * jwt_verify. Any thread. */
int keys_verify(struct keys *k, const uint8_t *token, size_t len, int64_t now,
                struct jwt_claims *claims);

/* A parsed JWKS document: immutable, shared by reference. */
struct keys_jwks;

/* Parse a JWKS document (hostile input): {"keys":[...]} with RSA (n, e; 2048 to 8192
 * bits), EC (crv P-256 or P-384, x, y on the curve) and OKP (crv Ed25519, x) keys.
 * Keys without a kid, with "use" other than "sig", an "alg" that does not fit the key,
 * or unusable members are skipped; duplicates of a kid too (the first counts). NULL
 * (message in err) when it is not such a document. */
struct keys_jwks *keys_jwks_parse(const uint8_t *p, size_t len, char *err, size_t errlen);
void keys_jwks_unref(struct keys_jwks *j);
size_t keys_jwks_count(const struct keys_jwks *j);
/* The key of a kid, borrowed from j; NULL if none. */
const struct jwt_key *keys_jwks_find(const struct keys_jwks *j, const uint8_t *kid, size_t len);

/* Replace the JWKS keys by those of a new document; readers on other threads finish with
 * the set they hold. On an error the cached keys stay (message in err). Any thread. */
int keys_load_jwks(struct keys *k, const uint8_t *p, size_t len, char *err, size_t errlen);
/* Keys of the current JWKS (0 before the first document). */
size_t keys_jwks_size(struct keys *k);

/* How a fetch is asked for: fetch(ud, delay_ms) wants one to start within delay_ms
 * (called under the set's lock: it must not call back into the set). NULL: no source any
 * more; once this returns, the old one is not called again. */
void keys_set_fetch(struct keys *k, void (*fetch)(void *ud, unsigned delay_ms), void *ud);

/* A token named an unknown kid: ask for a fetch (at most one per KEYS_REFETCH_MIN_MS,
 * by now_ms on CLOCK_MONOTONIC) and have done(ud) called, on the thread that reports
 * it, once a fetch that started after this call has ended (waiters in the order they came). 0, or
 * -1 (no fetch source, too many waiting, out of memory: done is never called). */
int keys_await(struct keys *k, uint64_t now_ms, void (*done)(void *ud), void *ud);
/* A fetch is starting (the request is about to go out). Any thread. A waiter is
 * released only by the end of a fetch that started after it began to wait: one already
 * under way may answer with the document from before a key rotation. */
void keys_fetch_starting(struct keys *k, uint64_t now_ms);
/* A fetch ended, whatever its outcome: the done of every waiter it was started for is
 * called (those that came while it was under way wait for the next, which is asked for).
 * Also at shutdown, after keys_set_fetch(NULL), to release every waiter. Any thread. */
void keys_fetched(struct keys *k, uint64_t now_ms);

#endif
