/* libFuzzer target for auth/keys' JWKS parsing (a document from a remote server): parse,
 * look every kept key up by its kid, and check tokens of each algorithm against the set
 * (header parsing, the choice of key, every verification path on hostile keys). */
#include <stdlib.h>
#include <string.h>

#include "auth/keys.h"

/* Tokens with kids the seeds use ("k1", "rsa", "ec", "ed"), signatures of no key. */
static const char *const tokens[] = {
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYSJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjIn0.eyJzdWIiOiIxIn0."
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImVkIn0.eyJzdWIiOiIxIn0."
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "eyJhbGciOiJQUzI1NiIsImtpZCI6InJzYSJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
};

int LLVMFuzzerTestOneInput(const uint8_t *p, size_t len)
{
    char err[200];
    struct keys_jwks *j = keys_jwks_parse(p, len, err, sizeof(err));
    if (j == NULL)
        return 0;
    if (keys_jwks_count(j) > KEYS_JWKS_MAX)
        __builtin_trap();
    keys_jwks_unref(j);

    static struct keys *k;
    if (k == NULL) {
        struct keys_config c = {.hmac_secret = "fuzz", .jwks = 1};
        k = keys_new(&c, err, sizeof(err));
        if (k == NULL)
            __builtin_trap();
    }
    if (keys_load_jwks(k, p, len, err, sizeof(err)) != 0)
        __builtin_trap(); /* it parsed just above */
    for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++) {
        struct jwt_claims c;
        int rc = keys_verify(k, (const uint8_t *)tokens[i], strlen(tokens[i]), 1700000000, &c);
        /* None of these is signed by anything: it cannot verify. */
        if (rc == JWT_OK || rc == JWT_EXPIRED)
            __builtin_trap();
        if (c.payload != NULL)
            __builtin_trap();
    }
    return 0;
}
