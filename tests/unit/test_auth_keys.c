/* Unit tests for auth/keys: configured PEM keys (refused at start when unusable), the
 * choice of key by a token's alg and kid, JWKS parsing of hostile documents, the swap of
 * a new document, and the pacing of refetches. Keys are generated here (sign.h). */
#include "auth/keys.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sign.h"
#include "test.h"

#define SECRET "keys-test-secret"
#define NOW 1800000000

static EVP_PKEY *rsa_key, *rsa2_key, *p256_key, *p384_key, *ed_key;
static char *rsa_pem, *p256_pem, *p384_pem, *ed_pem;

static int verify(struct keys *k, const char *token)
{
    struct jwt_claims c;
    int rc = keys_verify(k, (const uint8_t *)token, strlen(token), NOW, &c);
    if (rc == JWT_OK || rc == JWT_EXPIRED)
        jwt_claims_free(&c);
    return rc;
}

/* verify a freshly signed token, then free it */
static int verify_new(struct keys *k, char *token)
{
    int rc = verify(k, token);
    free(token);
    return rc;
}

static const char *PL = "{\"sub\":\"7\"}";

TEST(test_keys_refuses_unusable_pem_naming_the_key)
{
    char err[200];
    struct keys_config c = {0};
    c.rsa_pem = "not a key";
    CHECK(keys_new(&c, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "token_rsa_public_key") != NULL);
    c.rsa_pem = p256_pem; /* an EC key where RSA is expected */
    CHECK(keys_new(&c, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "token_rsa_public_key") != NULL);
    c.rsa_pem = NULL;
    c.ecdsa_pem = rsa_pem;
    CHECK(keys_new(&c, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "token_ecdsa_public_key") != NULL);
    c.ecdsa_pem = ed_pem; /* Ed25519 is not ECDSA */
    CHECK(keys_new(&c, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "token_ecdsa_public_key") != NULL);
    /* RFC 7518 3.3: 2048 bits at least. */
    EVP_PKEY *small = test_rsa_key(1024);
    char *small_pem = test_pem(small);
    c.ecdsa_pem = NULL;
    c.rsa_pem = small_pem;
    CHECK(keys_new(&c, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "token_rsa_public_key") != NULL);
    free(small_pem);
    EVP_PKEY_free(small);
    c.rsa_pem = rsa_pem;
    c.ecdsa_pem = p384_pem;
    struct keys *k = keys_new(&c, err, sizeof(err));
    CHECK(k != NULL);
    keys_free(k);
}

TEST(test_keys_choose_the_configured_key_by_alg_family)
{
    char err[200];
    struct keys_config c = {SECRET, rsa_pem, p256_pem, 0, NULL, NULL, 0};
    struct keys *k = keys_new(&c, err, sizeof(err));
    CHECK(k != NULL);
    CHECK_EQ(verify_new(k, test_token("HS256", NULL, PL, NULL, SECRET)), JWT_OK);
    CHECK_EQ(verify_new(k, test_token("HS512", NULL, PL, NULL, SECRET)), JWT_OK);
    CHECK_EQ(verify_new(k, test_token("RS256", NULL, PL, rsa_key, NULL)), JWT_OK);
    CHECK_EQ(verify_new(k, test_token("RS512", NULL, PL, rsa_key, NULL)), JWT_OK);
    CHECK_EQ(verify_new(k, test_token("PS256", NULL, PL, rsa_key, NULL)), JWT_OK);
    CHECK_EQ(verify_new(k, test_token("ES256", NULL, PL, p256_key, NULL)), JWT_OK);
    /* No P-384 key configured, no EdDSA outside a JWKS. */
    CHECK_EQ(verify_new(k, test_token("ES384", NULL, PL, p384_key, NULL)), JWT_INVALID);
    CHECK_EQ(verify_new(k, test_token("EdDSA", NULL, PL, ed_key, NULL)), JWT_INVALID);
    /* Another RSA key's signature. */
    CHECK_EQ(verify_new(k, test_token("RS256", NULL, PL, rsa2_key, NULL)), JWT_INVALID);
    /* A kid without a JWKS configured is ignored. */
    CHECK_EQ(verify_new(k, test_token("ES256", "whatever", PL, p256_key, NULL)), JWT_OK);
    keys_free(k);
}

TEST(test_keys_hs256_signed_with_the_rsa_pem_is_refused)
{
    char err[200];
    /* Only the RSA key: an HS256 token has no key to be checked with. */
    struct keys_config c = {NULL, rsa_pem, NULL, 0, NULL, NULL, 0};
    struct keys *k = keys_new(&c, err, sizeof(err));
    CHECK_EQ(verify_new(k, test_token("HS256", NULL, PL, NULL, rsa_pem)), JWT_INVALID);
    keys_free(k);
    /* A secret and the RSA key: it is checked with the secret, and does not verify. */
    c.hmac_secret = SECRET;
    k = keys_new(&c, err, sizeof(err));
    CHECK_EQ(verify_new(k, test_token("HS256", NULL, PL, NULL, rsa_pem)), JWT_INVALID);
    CHECK_EQ(verify_new(k, test_token("HS256", NULL, PL, NULL, SECRET)), JWT_OK);
    keys_free(k);
}

TEST(test_keys_rs_token_refused_with_only_an_ec_key)
{
    char err[200];
    struct keys_config c = {NULL, NULL, p256_pem, 0, NULL, NULL, 0};
    struct keys *k = keys_new(&c, err, sizeof(err));
    CHECK_EQ(verify_new(k, test_token("RS256", NULL, PL, rsa_key, NULL)), JWT_INVALID);
    CHECK_EQ(verify_new(k, test_token("HS256", NULL, PL, NULL, SECRET)), JWT_INVALID);
    CHECK_EQ(verify_new(k, test_token("ES256", NULL, PL, p256_key, NULL)), JWT_OK);
    keys_free(k);
}

TEST(test_keys_claims_checks_come_from_the_config)
{
    char err[200];
    struct keys_config c = {SECRET, NULL, NULL, 0, "herald", "https://auth", 30};
    struct keys *k = keys_new(&c, err, sizeof(err));
    char p[200];
    snprintf(p, sizeof(p),
             "{\"sub\":\"1\",\"aud\":[\"x\",\"herald\"],\"iss\":\"https://auth\","
             "\"exp\":%d}",
             NOW - 10);
    CHECK_EQ(verify_new(k, test_token("HS256", NULL, p, NULL, SECRET)), JWT_OK);
    snprintf(p, sizeof(p),
             "{\"sub\":\"1\",\"aud\":\"herald\",\"iss\":\"https://auth\","
             "\"exp\":%d}",
             NOW - 40);
    CHECK_EQ(verify_new(k, test_token("HS256", NULL, p, NULL, SECRET)), JWT_EXPIRED);
    CHECK_EQ(verify_new(
                 k, test_token("HS256", NULL, "{\"aud\":\"herald\",\"iss\":\"x\"}", NULL, SECRET)),
             JWT_INVALID);
    CHECK_EQ(verify_new(k, test_token("HS256", NULL, "{\"aud\":\"h\",\"iss\":\"https://auth\"}",
                                      NULL, SECRET)),
             JWT_INVALID);
    keys_free(k);
}

static char *jwks_of(const char *a, const char *b, const char *c)
{
    char *out = malloc(16384);
    snprintf(out, 16384, "{\"keys\":[%s%s%s%s%s]}", a ? a : "", b ? "," : "", b ? b : "",
             c ? "," : "", c ? c : "");
    return out;
}

static struct keys_jwks *parse(const char *doc)
{
    char err[200];
    return keys_jwks_parse((const uint8_t *)doc, strlen(doc), err, sizeof(err));
}

TEST(test_keys_jwks_parses_rsa_ec_and_okp_keys)
{
    char *a = test_jwk(rsa_key, "rsa-1", "RS256"), *b = test_jwk(p384_key, "ec-1", NULL),
         *c = test_jwk(ed_key, "ed-1", "EdDSA");
    char *doc = jwks_of(a, b, c);
    struct keys_jwks *j = parse(doc);
    CHECK(j != NULL);
    CHECK_EQ(keys_jwks_count(j), 3);
    const struct jwt_key *k = keys_jwks_find(j, (const uint8_t *)"ec-1", 4);
    CHECK(k != NULL && k->kind == JWT_KEY_EC_P384 && k->alg == JWT_ALG_UNKNOWN);
    k = keys_jwks_find(j, (const uint8_t *)"rsa-1", 5);
    CHECK(k != NULL && k->kind == JWT_KEY_RSA && k->alg == JWT_RS256);
    k = keys_jwks_find(j, (const uint8_t *)"ed-1", 4);
    CHECK(k != NULL && k->kind == JWT_KEY_ED25519);
    CHECK(keys_jwks_find(j, (const uint8_t *)"ed-", 3) == NULL);
    keys_jwks_unref(j);
    free(a), free(b), free(c), free(doc);
}

TEST(test_keys_jwks_skips_unusable_keys_and_refuses_non_documents)
{
    char *good = test_jwk(p256_key, "good", "ES256");
    const char *skipped[] = {
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"use\":\"enc\",\"kid\":\"enc\",\"x\":\"AA\",\"y\":"
        "\"AA\"}",
        "{\"kty\":\"oct\",\"kid\":\"sym\",\"k\":\"c2VjcmV0\"}",
        "{\"kty\":\"RSA\",\"kid\":\"short\",\"n\":\"AQAB\",\"e\":\"AQAB\"}",
        "{\"kty\":\"EC\",\"kid\":\"x-short\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}",
        "{\"kty\":\"EC\",\"kid\":\"k1\",\"crv\":\"secp256k1\",\"x\":\"AA\",\"y\":\"AA\"}",
        "{\"kty\":\"OKP\",\"kid\":\"x448\",\"crv\":\"Ed448\",\"x\":\"AA\"}",
        "{\"kty\":7,\"kid\":\"num\"}",
        "[]",
        "\"key\"",
    };
    for (size_t i = 0; i < sizeof(skipped) / sizeof(skipped[0]); i++) {
        char *doc = jwks_of(skipped[i], good, NULL);
        struct keys_jwks *j = parse(doc);
        CHECK(j != NULL);
        if (keys_jwks_count(j) != 1)
            fprintf(stderr, "  case %zu: %zu keys\n", i, keys_jwks_count(j));
        CHECK_EQ(keys_jwks_count(j), 1);
        keys_jwks_unref(j);
        free(doc);
    }
    /* Keys that parse but may not be used: no kid, an alg the key cannot do, a point
     * off the curve, a duplicate kid (the first counts). */
    char *nokid = test_jwk(p256_key, "", NULL);
    char *wrongalg = test_jwk(rsa_key, "r", "ES256");
    char *eddsa_on_ec = test_jwk(p256_key, "e", "EdDSA");
    char *offcurve = test_jwk(p256_key, "off", NULL);
    char *y = strstr(offcurve, "\"y\":\"") + 5;
    y[0] = y[0] == 'A' ? 'B' : 'A';
    char *dup = test_jwk(p384_key, "good", NULL);
    const char *unusable[] = {nokid, wrongalg, eddsa_on_ec, offcurve, dup};
    for (size_t i = 0; i < sizeof(unusable) / sizeof(unusable[0]); i++) {
        char *doc = jwks_of(good, unusable[i], NULL);
        struct keys_jwks *j = parse(doc);
        CHECK(j != NULL);
        if (keys_jwks_count(j) != 1)
            fprintf(stderr, "  unusable case %zu: %zu keys\n", i, keys_jwks_count(j));
        CHECK_EQ(keys_jwks_count(j), 1);
        const struct jwt_key *k = keys_jwks_find(j, (const uint8_t *)"good", 4);
        CHECK(k != NULL && k->kind == JWT_KEY_EC_P256);
        keys_jwks_unref(j);
        free(doc);
    }
    free(nokid), free(wrongalg), free(eddsa_on_ec), free(offcurve), free(dup);
    const char *refused[] = {
        "", "{}", "[]", "{\"keys\":{}}", "{\"keys\":[", "null", "{\"keys\":\"x\"}"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        CHECK(parse(refused[i]) == NULL);
    struct keys_jwks *empty = parse("{\"keys\":[]}");
    CHECK(empty != NULL && keys_jwks_count(empty) == 0);
    keys_jwks_unref(empty);
    free(good);
}

TEST(test_keys_token_kid_picks_the_jwks_key)
{
    char err[200];
    struct keys_config c = {NULL, NULL, NULL, 1, NULL, NULL, 0};
    struct keys *k = keys_new(&c, err, sizeof(err));
    char *a = test_jwk(p256_key, "a", NULL), *b = test_jwk(rsa_key, "b", "RS256"),
         *e = test_jwk(ed_key, "e", NULL);
    char *doc = jwks_of(a, b, e);
    CHECK_EQ(keys_load_jwks(k, (const uint8_t *)doc, strlen(doc), err, sizeof(err)), 0);
    CHECK_EQ(keys_jwks_size(k), 3);
    CHECK_EQ(verify_new(k, test_token("ES256", "a", PL, p256_key, NULL)), JWT_OK);
    CHECK_EQ(verify_new(k, test_token("RS256", "b", PL, rsa_key, NULL)), JWT_OK);
    CHECK_EQ(verify_new(k, test_token("EdDSA", "e", PL, ed_key, NULL)), JWT_OK);
    /* The kid's key, not another one that would verify. */
    CHECK_EQ(verify_new(k, test_token("ES256", "b", PL, p256_key, NULL)), JWT_INVALID);
    CHECK_EQ(verify_new(k, test_token("RS256", "a", PL, rsa_key, NULL)), JWT_INVALID);
    /* The JWK's "alg" is the only one: PS256 with the RS256 key is refused. */
    CHECK_EQ(verify_new(k, test_token("PS256", "b", PL, rsa_key, NULL)), JWT_INVALID);
    /* HS256 with a JWK's key as secret, and alg none, under a known kid. */
    CHECK_EQ(verify_new(k, test_token("HS256", "b", PL, NULL, b)), JWT_INVALID);
    CHECK_EQ(verify(k, "eyJhbGciOiJub25lIiwia2lkIjoiYSJ9.eyJzdWIiOiIxIn0."), JWT_INVALID);
    CHECK_EQ(verify_new(k, test_token("ES256", "c", PL, p256_key, NULL)), JWT_UNKNOWN_KID);
    /* Without a kid and without configured keys there is nothing to check with. */
    CHECK_EQ(verify_new(k, test_token("ES256", NULL, PL, p256_key, NULL)), JWT_INVALID);
    keys_free(k);
    free(a), free(b), free(e), free(doc);
}

TEST(test_keys_new_jwks_replaces_the_old_and_a_bad_one_keeps_it)
{
    char err[200];
    struct keys_config c = {SECRET, NULL, NULL, 1, NULL, NULL, 0};
    struct keys *k = keys_new(&c, err, sizeof(err));
    char *a = test_jwk(p256_key, "old", NULL), *b = test_jwk(p384_key, "new", NULL);
    char *doc1 = jwks_of(a, NULL, NULL), *doc2 = jwks_of(b, NULL, NULL);
    CHECK_EQ(keys_load_jwks(k, (const uint8_t *)doc1, strlen(doc1), err, sizeof(err)), 0);
    CHECK_EQ(verify_new(k, test_token("ES256", "old", PL, p256_key, NULL)), JWT_OK);
    CHECK_EQ(keys_load_jwks(k, (const uint8_t *)"<html>", 6, err, sizeof(err)), -1);
    CHECK_EQ(verify_new(k, test_token("ES256", "old", PL, p256_key, NULL)), JWT_OK);
    CHECK_EQ(keys_load_jwks(k, (const uint8_t *)doc2, strlen(doc2), err, sizeof(err)), 0);
    CHECK_EQ(verify_new(k, test_token("ES256", "old", PL, p256_key, NULL)), JWT_UNKNOWN_KID);
    CHECK_EQ(verify_new(k, test_token("ES384", "new", PL, p384_key, NULL)), JWT_OK);
    /* An HS256 token with a kid the JWKS lacks is still checked with the secret. */
    CHECK_EQ(verify_new(k, test_token("HS256", "gone", PL, NULL, SECRET)), JWT_OK);
    keys_free(k);
    free(a), free(b), free(doc1), free(doc2);
}

static int fetch_calls;
static unsigned fetch_delay;
static int done_calls;

static void record_fetch(void *ud, unsigned delay_ms)
{
    fetch_calls++;
    fetch_delay = delay_ms;
}

static int done_order[8];

static void record_done(void *ud)
{
    if (done_calls < 8)
        done_order[done_calls] = (int)(intptr_t)ud;
    done_calls++;
}

TEST(test_keys_refetch_is_asked_once_and_paced)
{
    char err[200];
    struct keys_config c = {NULL, NULL, NULL, 1, NULL, NULL, 0};
    struct keys *k = keys_new(&c, err, sizeof(err));
    /* No fetch source: nothing to wait for. */
    CHECK_EQ(keys_await(k, 1000, record_done, NULL), -1);
    keys_set_fetch(k, record_fetch, NULL);
    CHECK_EQ(keys_await(k, 1000, record_done, (void *)1), 0);
    CHECK_EQ(keys_await(k, 1100, record_done, (void *)2), 0);
    CHECK_EQ(fetch_calls, 1);
    CHECK_EQ(fetch_delay, 0);
    CHECK_EQ(done_calls, 0);
    keys_fetch_starting(k, 1500);
    keys_fetched(k, 2000);
    CHECK_EQ(done_calls, 2);
    /* In the order they came: a connect before the commands queued behind it. */
    CHECK_EQ(done_order[0], 1);
    CHECK_EQ(done_order[1], 2);
    /* 1 s after the last fetch: the next one waits out the interval. */
    CHECK_EQ(keys_await(k, 3000, record_done, NULL), 0);
    CHECK_EQ(fetch_calls, 2);
    CHECK_EQ(fetch_delay, KEYS_REFETCH_MIN_MS - 1000);
    keys_fetch_starting(k, 6900);
    keys_fetched(k, 7000);
    CHECK_EQ(done_calls, 3);
    CHECK_EQ(keys_await(k, 20000, record_done, NULL), 0);
    CHECK_EQ(fetch_calls, 3);
    CHECK_EQ(fetch_delay, 0);
    /* Waiters left at the end are released by keys_fetched, or freed with the set. */
    keys_free(k);
    CHECK_EQ(done_calls, 3);
}

/* A key rotation: a fetch already under way when a token names the new kid may carry the
 * document from before the rotation. The waiter is released by the next fetch, which it
 * asks for (paced from the start of the one in flight), not by the one in flight. */
TEST(test_keys_waiter_of_a_fetch_under_way_waits_for_the_next)
{
    char err[200];
    struct keys_config c = {NULL, NULL, NULL, 1, NULL, NULL, 0};
    struct keys *k = keys_new(&c, err, sizeof(err));
    fetch_calls = done_calls = 0;
    keys_set_fetch(k, record_fetch, NULL);
    /* At start the first document serves those who come while it is on its way. */
    keys_fetch_starting(k, 100);
    CHECK_EQ(keys_await(k, 150, record_done, (void *)9), 0);
    CHECK_EQ(fetch_calls, 0);
    keys_fetched(k, 200);
    CHECK_EQ(done_calls, 1);
    CHECK_EQ(done_order[0], 9);
    done_calls = 0;
    /* The periodic refresh starts with nobody waiting. */
    keys_fetch_starting(k, 10000);
    CHECK_EQ(keys_await(k, 10200, record_done, (void *)1), 0);
    CHECK_EQ(fetch_calls, 1); /* once more, after the one in flight */
    CHECK_EQ(fetch_delay, KEYS_REFETCH_MIN_MS - 200);
    CHECK_EQ(keys_await(k, 10300, record_done, (void *)2), 0);
    CHECK_EQ(fetch_calls, 1); /* that one is asked for already */
    keys_fetched(k, 10400);
    CHECK_EQ(done_calls, 0); /* the one in flight started before they came */
    CHECK_EQ(fetch_calls, 1);
    /* Asked before the next one starts: it releases this one as well. */
    CHECK_EQ(keys_await(k, 12000, record_done, (void *)3), 0);
    CHECK_EQ(fetch_calls, 1);
    keys_fetch_starting(k, 15000);
    CHECK_EQ(keys_await(k, 15100, record_done, (void *)4), 0); /* under way again */
    CHECK_EQ(fetch_calls, 2);
    keys_fetched(k, 15200);
    CHECK_EQ(done_calls, 3);
    CHECK_EQ(done_order[0], 1);
    CHECK_EQ(done_order[1], 2);
    CHECK_EQ(done_order[2], 3);
    /* Waiter 4 is the next one's. Without a source, every waiter goes at once. */
    keys_set_fetch(k, NULL, NULL);
    keys_fetched(k, 16000);
    CHECK_EQ(done_calls, 4);
    CHECK_EQ(done_order[3], 4);
    keys_free(k);
}

int main(void)
{
    rsa_key = test_rsa_key(2048);
    rsa2_key = test_rsa_key(2048);
    p256_key = test_ec_key("P-256");
    p384_key = test_ec_key("P-384");
    ed_key = test_ed25519_key();
    rsa_pem = test_pem(rsa_key);
    p256_pem = test_pem(p256_key);
    p384_pem = test_pem(p384_key);
    ed_pem = test_pem(ed_key);
    RUN(test_keys_refuses_unusable_pem_naming_the_key);
    RUN(test_keys_choose_the_configured_key_by_alg_family);
    RUN(test_keys_hs256_signed_with_the_rsa_pem_is_refused);
    RUN(test_keys_rs_token_refused_with_only_an_ec_key);
    RUN(test_keys_claims_checks_come_from_the_config);
    RUN(test_keys_jwks_parses_rsa_ec_and_okp_keys);
    RUN(test_keys_jwks_skips_unusable_keys_and_refuses_non_documents);
    RUN(test_keys_token_kid_picks_the_jwks_key);
    RUN(test_keys_new_jwks_replaces_the_old_and_a_bad_one_keeps_it);
    RUN(test_keys_refetch_is_asked_once_and_paced);
    RUN(test_keys_waiter_of_a_fetch_under_way_waits_for_the_next);
    free(rsa_pem), free(p256_pem), free(p384_pem), free(ed_pem);
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(rsa2_key);
    EVP_PKEY_free(p256_key);
    EVP_PKEY_free(p384_key);
    EVP_PKEY_free(ed_key);
    return test_summary("auth_keys");
}
