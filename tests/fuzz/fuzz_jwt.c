/* libFuzzer target for auth/jwt: verifies the input as a token (HMAC, and RSA, EC and Ed25519
 * keys made at start: the signature paths on hostile signatures, with aud/iss checks), then
 * signs it as a payload and verifies that (so claim parsing is reached past the HMAC), and
 * round-trips base64url. */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "auth/jwt.h"

static const uint8_t secret[] = "fuzz-secret";

static void check_span(const struct jwt_claims *c, struct json_span s)
{
    if (s.len && (s.p < c->payload || s.p + s.len > c->payload + c->payload_len))
        __builtin_trap();
}

static void check_claims(int rc, struct jwt_claims *c)
{
    if (rc == JWT_INVALID) {
        if (c->payload != NULL)
            __builtin_trap();
        return;
    }
    check_span(c, c->sub);
    check_span(c, c->channel);
    check_span(c, c->info);
    check_span(c, c->channels);
    jwt_claims_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *p, size_t len)
{
    static struct jwt_key keys[4];
    if (keys[0].pkey == NULL) {
        keys[0] = (struct jwt_key){JWT_KEY_RSA, JWT_ALG_UNKNOWN, NULL, 0,
                                   EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)};
        keys[1] = (struct jwt_key){JWT_KEY_EC_P256, JWT_ALG_UNKNOWN, NULL, 0,
                                   EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")};
        keys[2] = (struct jwt_key){JWT_KEY_EC_P384, JWT_ALG_UNKNOWN, NULL, 0,
                                   EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384")};
        keys[3] = (struct jwt_key){JWT_KEY_ED25519, JWT_ALG_UNKNOWN, NULL, 0,
                                   EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")};
    }
    struct jwt_claims c;
    int rc = jwt_verify_hs256(p, len, secret, sizeof(secret) - 1, 1700000000, &c);
    check_claims(rc, &c);
    struct jwt_checks chk = {1700000000, 60, "herald", "issuer"};
    for (size_t i = 0; i < 4; i++) {
        rc = jwt_verify(p, len, &keys[i], &chk, &c);
        /* Nothing here was signed with these keys. */
        if (rc == JWT_OK || rc == JWT_EXPIRED)
            __builtin_trap();
        check_claims(rc, &c);
    }
    struct jwt_header h;
    jwt_header_parse(p, len, &h);
    if (h.has_kid && h.kid_len > JWT_MAX_KID)
        __builtin_trap();

    char *token = jwt_sign_hs256(p, len, secret, sizeof(secret) - 1);
    if (token != NULL) {
        rc = jwt_verify_hs256((const uint8_t *)token, strlen(token), secret, sizeof(secret) - 1,
                              1700000000, &c);
        check_claims(rc, &c);
        free(token);
    }

    char *enc = malloc((len + 2) / 3 * 4 + 1);
    uint8_t *dec = malloc(len * 2 + 1);
    if (enc != NULL && dec != NULL) {
        size_t n = jwt_b64url_encode(p, len, enc);
        ssize_t d = jwt_b64url_decode((const uint8_t *)enc, n, dec);
        if (d != (ssize_t)len || memcmp(dec, p, len) != 0)
            __builtin_trap();
        /* and decoding arbitrary bytes stays within len output bytes */
        jwt_b64url_decode(p, len, dec);
    }
    free(enc);
    free(dec);
    return 0;
}
