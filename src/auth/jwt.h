/* JSON Web Tokens (RFC 7519) for connection and subscription tokens: verification of
 * JWS signatures (RFC 7515, algorithms of RFC 7518 and RFC 8037) with OpenSSL against
 * one key, the registered claims, and HS256 signing. Which key a token is checked
 * against is the key set's decision (auth/keys.h); not the channel rules
 * (auth/rules.h). Pure: no I/O. */
#ifndef HERALD_AUTH_JWT_H
#define HERALD_AUTH_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "core/json.h"

struct evp_pkey_st; /* OpenSSL's EVP_PKEY */

enum jwt_result {
    JWT_OK = 0,
    JWT_INVALID = -1,     /* malformed, wrong alg, bad signature, bad claims (nbf, iat, aud, iss) */
    JWT_EXPIRED = -2,     /* signature valid but exp <= now (minus the leeway) */
    JWT_UNKNOWN_KID = -3, /* auth/keys.h: the token names a key the set does not have */
};

/* The "alg" values herald verifies (RFC 7518 section 3.1, RFC 8037 section 3.1). */
enum jwt_alg {
    JWT_ALG_UNKNOWN = 0, /* absent, "none" or anything else: never verifies */
    JWT_HS256,
    JWT_HS384,
    JWT_HS512,
    JWT_RS256,
    JWT_RS384,
    JWT_RS512,
    JWT_PS256,
    JWT_ES256,
    JWT_ES384,
    JWT_EDDSA,
};

/* What a key is. The kind alone decides which algorithms it verifies: HMAC secrets
 * HS*, RSA keys RS* and PS256, an EC key only the ES* of its curve, Ed25519 EdDSA. A
 * token cannot choose another check by naming another alg (RFC 8725 section 3.1). */
enum jwt_key_kind {
    JWT_KEY_HMAC,
    JWT_KEY_RSA,
    JWT_KEY_EC_P256,
    JWT_KEY_EC_P384,
    JWT_KEY_ED25519,
};

/* A verification key. alg JWT_ALG_UNKNOWN: any algorithm of its kind; otherwise only
 * that one (a JWKS key's "alg"). secret (HMAC) and pkey (the others, an EVP_PKEY of the
 * kind's type) are borrowed; the key set owns them. */
struct jwt_key {
    enum jwt_key_kind kind;
    enum jwt_alg alg;
    const uint8_t *secret;
    size_t secret_len;
    struct evp_pkey_st *pkey;
};

#define JWT_MAX_KID 256

/* The JOSE header, as far as choosing a key needs it. */
struct jwt_header {
    enum jwt_alg alg;
    int has_kid;
    size_t kid_len;
    uint8_t kid[JWT_MAX_KID]; /* unescaped; not NUL-terminated */
};

/* What the claims are checked against. audience/issuer NULL: not checked. */
struct jwt_checks {
    int64_t now;     /* Unix seconds */
    unsigned leeway; /* seconds of clock skew allowed for exp, nbf and iat */
    const char *audience;
    const char *issuer;
};

/* Claims of a verified token. The spans point into claims->payload (the decoded
 * payload JSON, malloc'd, owned by the struct: call jwt_claims_free). String claims
 * are unescaped; info/channels are raw JSON. */
struct jwt_claims {
    uint8_t *payload;
    size_t payload_len;
    struct json_span sub;      /* user id; may be empty ("" = anonymous) */
    struct json_span channel;  /* subscription tokens */
    struct json_span info;     /* raw JSON object/value, conn_info or chan_info */
    struct json_span channels; /* raw JSON array of strings: server-side subscriptions */
    int64_t exp;               /* 0 when absent */
    int64_t iat;
    int64_t nbf; /* 0 when absent; a token before its nbf is JWT_INVALID */
};

/* The "alg" name p[0..len) (raw JSON string bytes), JWT_ALG_UNKNOWN if not one of ours. */
enum jwt_alg jwt_alg_parse(const uint8_t *p, size_t len);
const char *jwt_alg_name(enum jwt_alg alg);

/* May key verify a token of alg? */
int jwt_key_allows(const struct jwt_key *key, enum jwt_alg alg);

/* Split token and parse its header: alg (JWT_ALG_UNKNOWN for "none" and the rest) and
 * kid. A header with "crit" (RFC 7515 section 4.1.11: we understand no extension), a
 * non-string typ or kid, or a kid over JWT_MAX_KID bytes is refused. 0 or JWT_INVALID. */
int jwt_header_parse(const uint8_t *token, size_t len, struct jwt_header *h);

/* Verify token against key: the header's alg must be one the key allows, the signature
 * must verify, and the claims must pass chk (exp, nbf, iat not in the future, aud, iss;
 * leeway seconds of skew). On JWT_OK and JWT_EXPIRED, claims are filled and must be
 * freed; on JWT_INVALID nothing needs freeing. */
int jwt_verify(const uint8_t *token, size_t len, const struct jwt_key *key,
               const struct jwt_checks *chk, struct jwt_claims *claims);

/* jwt_verify with an HMAC secret that admits HS256 only, no leeway, no aud/iss. */
int jwt_verify_hs256(const uint8_t *token, size_t len, const uint8_t *secret, size_t secret_len,
                     int64_t now, struct jwt_claims *claims);
void jwt_claims_free(struct jwt_claims *claims);

/* Sign a payload (a JSON object, borrowed) with HS256. Returns a malloc'd NUL-terminated
 * token (caller frees) or NULL. */
char *jwt_sign_hs256(const uint8_t *payload, size_t len, const uint8_t *secret, size_t secret_len);

/* base64url without padding. Encode: out needs ((len + 2) / 3) * 4 + 1 bytes; returns
 * the length written (NUL-terminated). Decode: out needs len bytes; returns length or -1. */
size_t jwt_b64url_encode(const uint8_t *p, size_t len, char *out);
ssize_t jwt_b64url_decode(const uint8_t *p, size_t len, uint8_t *out);

#endif
