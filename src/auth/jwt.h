/* JSON Web Tokens (RFC 7519) for connection and subscription tokens: HS256
 * verification and signing with OpenSSL's HMAC. Not the channel rules (auth/rules.h). */
#ifndef HERALD_AUTH_JWT_H
#define HERALD_AUTH_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "core/json.h"

enum jwt_result {
    JWT_OK = 0,
    JWT_INVALID = -1, /* malformed, wrong alg, bad signature, bad claim types */
    JWT_EXPIRED = -2, /* signature valid but exp <= now */
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

/* Verify an HS256 token (header alg must be "HS256"; "none" and others are refused,
 * as is any "crit" header, RFC 7515 4.1.11; nbf in the future is refused)
 * against secret at time now (Unix seconds). On JWT_OK and JWT_EXPIRED, claims are
 * filled and must be freed; on JWT_INVALID nothing needs freeing. */
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
