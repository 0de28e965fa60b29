/* Unit tests for auth/jwt: HS256 verification against reference tokens, refusals, signing
 * and base64url; every algorithm against keys generated here (tests/unit/sign.h), the key
 * deciding the algorithm, and the registered claims with leeway, aud and iss. */
#include "auth/jwt.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sign.h"
#include "test.h"

#define SECRET "secret-for-tests"
#define NOW 1800000000

/* Signed outside herald (python3 hmac, checked with `openssl dgst -sha256 -hmac`):
 * header {"alg":"HS256","typ":"JWT"}, secret "secret-for-tests", payload
 * {"sub":"42","exp":2000000000,"iat":1700000000,"info":{"name":"Ann"},
 *  "channels":["news","chat:1"]} */
static const char reference_token[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiI0MiIsImV4cCI6MjAwMDAwMDAwMCwiaWF0IjoxNzAwMDAwMDAwLCJpbmZvIjp7Im5hbWUiOiJBbm4i"
    "fSwiY2hhbm5lbHMiOlsibmV3cyIsImNoYXQ6MSJdfQ."
    "r4RgNwXPxwivPu2mEprNSapYc9Y4yZRAY8iTV8Q7Aeo";

/* The example token of jwt.io (secret "your-256-bit-secret"). */
static const char jwtio_token[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

static int verify(const char *token, struct jwt_claims *c)
{
    return jwt_verify_hs256((const uint8_t *)token, strlen(token), (const uint8_t *)SECRET,
                            strlen(SECRET), NOW, c);
}

/* A token with any header and payload, correctly signed with SECRET. Caller frees. */
static char *make_token(const char *header, const char *payload)
{
    size_t hl = strlen(header), pl = strlen(payload);
    char *t = malloc((hl + 2) / 3 * 4 + (pl + 2) / 3 * 4 + 64);
    size_t o = jwt_b64url_encode((const uint8_t *)header, hl, t);
    t[o++] = '.';
    o += jwt_b64url_encode((const uint8_t *)payload, pl, t + o);
    unsigned char mac[32];
    unsigned mac_len;
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)t, o, mac, &mac_len);
    t[o++] = '.';
    jwt_b64url_encode(mac, sizeof(mac), t + o);
    return t;
}

static int verify_payload(const char *payload, struct jwt_claims *c)
{
    char *t = make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload);
    int rc = verify(t, c);
    free(t);
    return rc;
}

TEST(test_jwt_verifies_reference_token_and_extracts_claims)
{
    struct jwt_claims c;
    CHECK_EQ(verify(reference_token, &c), JWT_OK);
    CHECK_MEM(c.sub.p, c.sub.len, "42");
    CHECK_EQ(c.exp, 2000000000);
    CHECK_EQ(c.iat, 1700000000);
    CHECK_MEM(c.info.p, c.info.len, "{\"name\":\"Ann\"}");
    CHECK_MEM(c.channels.p, c.channels.len, "[\"news\",\"chat:1\"]");
    CHECK_EQ(c.channel.len, 0);
    CHECK(c.payload != NULL);
    CHECK_EQ(c.payload_len, strlen("{\"sub\":\"42\",\"exp\":2000000000,\"iat\":1700000000,"
                                   "\"info\":{\"name\":\"Ann\"},"
                                   "\"channels\":[\"news\",\"chat:1\"]}"));
    jwt_claims_free(&c);
    CHECK(c.payload == NULL);
}

TEST(test_jwt_verifies_jwtio_example_without_exp)
{
    struct jwt_claims c;
    const char *s = "your-256-bit-secret";
    CHECK_EQ(jwt_verify_hs256((const uint8_t *)jwtio_token, strlen(jwtio_token), (const uint8_t *)s,
                              strlen(s), NOW, &c),
             JWT_OK);
    CHECK_MEM(c.sub.p, c.sub.len, "1234567890");
    CHECK_EQ(c.exp, 0);
    CHECK_EQ(c.iat, 1516239022);
    CHECK_EQ(c.info.len, 0);
    jwt_claims_free(&c);
}

TEST(test_jwt_rejects_wrong_secret)
{
    struct jwt_claims c;
    const char *s = "secret-for-tests!";
    CHECK_EQ(jwt_verify_hs256((const uint8_t *)reference_token, strlen(reference_token),
                              (const uint8_t *)s, strlen(s), NOW, &c),
             JWT_INVALID);
    CHECK(c.payload == NULL);
}

TEST(test_jwt_rejects_empty_secret)
{
    struct jwt_claims c;
    CHECK_EQ(jwt_verify_hs256((const uint8_t *)reference_token, strlen(reference_token),
                              (const uint8_t *)"", 0, NOW, &c),
             JWT_INVALID);
    CHECK(jwt_sign_hs256((const uint8_t *)"{}", 2, (const uint8_t *)"", 0) == NULL);
}

TEST(test_jwt_rejects_altered_signature_payload_and_header)
{
    struct jwt_claims c;
    size_t n = strlen(reference_token);
    char *t = malloc(n + 1);
    /* Flip one character in each of the three parts in turn. */
    size_t positions[] = {5, 40, n - 3, n - 1};
    for (size_t k = 0; k < sizeof(positions) / sizeof(positions[0]); k++) {
        memcpy(t, reference_token, n + 1);
        t[positions[k]] = t[positions[k]] == 'A' ? 'B' : 'A';
        CHECK_EQ(verify(t, &c), JWT_INVALID);
    }
    free(t);
}

TEST(test_jwt_rejects_noncanonical_signature_encoding)
{
    /* The last character of a 43-character signature carries 2 unused bits: "o" (40) and
     * "p" (41) decode to the same bytes, but only the canonical form is accepted. */
    struct jwt_claims c;
    size_t n = strlen(reference_token);
    char *t = malloc(n + 1);
    memcpy(t, reference_token, n + 1);
    CHECK_EQ(t[n - 1], 'o');
    t[n - 1] = 'p';
    CHECK_EQ(verify(t, &c), JWT_INVALID);
    free(t);
}

TEST(test_jwt_rejects_alg_none_and_others)
{
    struct jwt_claims c;
    const char *headers[] = {
        "{\"alg\":\"none\",\"typ\":\"JWT\"}",
        "{\"alg\":\"HS384\"}",
        "{\"alg\":\"RS256\"}",
        "{\"alg\":\"hs256\"}",
        "{\"typ\":\"JWT\"}",
        "{\"alg\":null}",
        "{\"alg\":[\"HS256\"]}",
        "{\"alg\":\"HS256\",\"typ\":1}",
        "[\"HS256\"]",
        "\"HS256\"",
        "{\"alg\":\"HS256\"",
    };
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        char *t = make_token(headers[i], "{\"sub\":\"1\"}");
        int rc = verify(t, &c);
        if (rc != JWT_INVALID)
            fprintf(stderr, "  header %s accepted\n", headers[i]);
        CHECK_EQ(rc, JWT_INVALID);
        free(t);
    }
    /* alg none with an empty signature, as attackers send it */
    char *t = make_token("{\"alg\":\"none\"}", "{\"sub\":\"1\"}");
    *(strrchr(t, '.') + 1) = '\0';
    CHECK_EQ(verify(t, &c), JWT_INVALID);
    free(t);
}

TEST(test_jwt_accepts_header_without_typ_and_with_extra_fields)
{
    struct jwt_claims c;
    char *t = make_token("{\"alg\":\"HS256\"}", "{\"sub\":\"7\"}");
    CHECK_EQ(verify(t, &c), JWT_OK);
    CHECK_MEM(c.sub.p, c.sub.len, "7");
    jwt_claims_free(&c);
    free(t);
    t = make_token("{\"kid\":\"k1\", \"typ\":\"JWT\", \"alg\":\"HS256\"}", "{}");
    CHECK_EQ(verify(t, &c), JWT_OK);
    CHECK_EQ(c.sub.len, 0);
    jwt_claims_free(&c);
    free(t);
}

TEST(test_jwt_expired_token_reports_expired_with_claims)
{
    struct jwt_claims c;
    CHECK_EQ(verify_payload("{\"sub\":\"u\",\"exp\":1800000000}", &c), JWT_EXPIRED);
    CHECK_MEM(c.sub.p, c.sub.len, "u");
    CHECK_EQ(c.exp, 1800000000);
    jwt_claims_free(&c);
    CHECK_EQ(verify_payload("{\"sub\":\"u\",\"exp\":1800000001}", &c), JWT_OK);
    jwt_claims_free(&c);
    /* An explicit exp of 0 is in the past, not "absent". */
    CHECK_EQ(verify_payload("{\"exp\":0}", &c), JWT_EXPIRED);
    jwt_claims_free(&c);
    CHECK_EQ(verify_payload("{\"exp\":-5}", &c), JWT_EXPIRED);
    jwt_claims_free(&c);
}

TEST(test_jwt_rejects_bad_claim_types)
{
    struct jwt_claims c;
    const char *payloads[] = {
        "{\"exp\":\"2000000000\"}",
        "{\"exp\":2000000000.5}",
        "{\"exp\":2e9}",
        "{\"exp\":true}",
        "{\"exp\":null}",
        "{\"exp\":99999999999999999999}",
        "{\"iat\":\"x\"}",
        "{\"sub\":42}",
        "{\"sub\":null}",
        "{\"channel\":[\"a\"]}",
        "{\"channels\":\"news\"}",
        "{\"channels\":[\"news\",1]}",
        "{\"channels\":[[\"news\"]]}",
        "{\"sub\":\"bad\\escape\"}",
        "{\"sub\":\"\\ud800\"}",
        "[\"sub\"]",
        "\"sub\"",
        "{\"sub\":\"1\"",
        "{\"sub\":\"1\"} x",
        "",
    };
    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        int rc = verify_payload(payloads[i], &c);
        if (rc != JWT_INVALID)
            fprintf(stderr, "  payload %s accepted\n", payloads[i]);
        CHECK_EQ(rc, JWT_INVALID);
        CHECK(c.payload == NULL);
        if (rc != JWT_INVALID)
            jwt_claims_free(&c);
    }
}

TEST(test_jwt_unescapes_string_claims_in_place)
{
    struct jwt_claims c;
    CHECK_EQ(verify_payload("{\"sub\":\"a\\\"b\\u00e9\\ud83d\\ude00\",\"channel\":\"x\\/y\","
                            "\"info\":\"raw \\n\",\"exp\":2000000000}",
                            &c),
             JWT_OK);
    CHECK_MEM(c.sub.p, c.sub.len, "a\"b\xc3\xa9\xf0\x9f\x98\x80");
    CHECK_MEM(c.channel.p, c.channel.len, "x/y");
    /* info stays raw JSON, quotes and escapes included */
    CHECK_MEM(c.info.p, c.info.len, "\"raw \\n\"");
    jwt_claims_free(&c);
}

TEST(test_jwt_info_may_be_any_json_value)
{
    struct jwt_claims c;
    CHECK_EQ(verify_payload("{\"info\":[1,{\"a\":null}]}", &c), JWT_OK);
    CHECK_MEM(c.info.p, c.info.len, "[1,{\"a\":null}]");
    jwt_claims_free(&c);
    CHECK_EQ(verify_payload("{\"info\":12.5,\"channels\":[]}", &c), JWT_OK);
    CHECK_MEM(c.info.p, c.info.len, "12.5");
    CHECK_MEM(c.channels.p, c.channels.len, "[]");
    jwt_claims_free(&c);
}

TEST(test_jwt_rejects_wrong_number_of_parts)
{
    struct jwt_claims c;
    const char *bad[] = {
        "",
        "abc",
        "a.b",
        "eyJhbGciOiJIUzI1NiJ9.e30",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        ".e30.r4RgNwXPxwivPu2mEprNSapYc9Y4yZRAY8iTV8Q7Aeo",
        "eyJhbGciOiJIUzI1NiJ9..r4RgNwXPxwivPu2mEprNSapYc9Y4yZRAY8iTV8Q7Aeo",
        "...",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_EQ(verify(bad[i], &c), JWT_INVALID);
    /* Three dots: a valid token with a fourth part appended. */
    size_t n = strlen(reference_token);
    char *t = malloc(n + 3);
    memcpy(t, reference_token, n);
    memcpy(t + n, ".x", 3);
    CHECK_EQ(verify(t, &c), JWT_INVALID);
    free(t);
}

TEST(test_jwt_rejects_every_truncation_of_a_valid_token)
{
    struct jwt_claims c;
    size_t n = strlen(reference_token);
    for (size_t i = 0; i < n; i++)
        CHECK_EQ(jwt_verify_hs256((const uint8_t *)reference_token, i, (const uint8_t *)SECRET,
                                  strlen(SECRET), NOW, &c),
                 JWT_INVALID);
}

TEST(test_jwt_rejects_bad_base64)
{
    struct jwt_claims c;
    size_t n = strlen(reference_token);
    char *t = malloc(n + 8);
    /* '+' and '/' are standard base64, not base64url; '=' is padding; '*' is garbage. */
    const char bad_chars[] = {'+', '/', '=', '*', ' ', '\0'};
    for (size_t k = 0; k < sizeof(bad_chars); k++) {
        memcpy(t, reference_token, n + 1);
        t[3] = bad_chars[k];
        CHECK_EQ(jwt_verify_hs256((const uint8_t *)t, n, (const uint8_t *)SECRET, strlen(SECRET),
                                  NOW, &c),
                 JWT_INVALID);
    }
    /* padded signature */
    memcpy(t, reference_token, n);
    memcpy(t + n, "=", 2);
    CHECK_EQ(verify(t, &c), JWT_INVALID);
    free(t);
}

TEST(test_jwt_rejects_token_over_16k)
{
    struct jwt_claims c;
    size_t big = 16384;
    char *payload = malloc(big + 32);
    strcpy(payload, "{\"sub\":\"");
    memset(payload + 8, 'x', big - 8);
    strcpy(payload + big, "\"}");
    CHECK_EQ(verify_payload(payload, &c), JWT_INVALID);
    /* just under the cap still verifies */
    size_t fits = 12000 - 10;
    strcpy(payload + fits, "\"}");
    CHECK_EQ(verify_payload(payload, &c), JWT_OK);
    CHECK_EQ(c.sub.len, fits - 8);
    jwt_claims_free(&c);
    free(payload);
}

TEST(test_jwt_sign_roundtrips_and_matches_reference)
{
    const char *payload = "{\"sub\":\"42\",\"exp\":2000000000,\"iat\":1700000000,"
                          "\"info\":{\"name\":\"Ann\"},\"channels\":[\"news\",\"chat:1\"]}";
    char *t = jwt_sign_hs256((const uint8_t *)payload, strlen(payload), (const uint8_t *)SECRET,
                             strlen(SECRET));
    CHECK(t != NULL);
    if (t == NULL)
        return;
    CHECK(strcmp(t, reference_token) == 0);
    struct jwt_claims c;
    CHECK_EQ(verify(t, &c), JWT_OK);
    jwt_claims_free(&c);
    free(t);
}

TEST(test_jwt_b64url_matches_rfc4648_vectors)
{
    /* RFC 4648 section 10, without padding and in the URL alphabet. */
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    char out[16];
    uint8_t dec[16];
    for (size_t i = 0; i < 7; i++) {
        size_t n = jwt_b64url_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
        CHECK_MEM(out, n, enc[i]);
        CHECK_EQ(out[n], '\0');
        ssize_t d = jwt_b64url_decode((const uint8_t *)enc[i], strlen(enc[i]), dec);
        CHECK_EQ(d, (ssize_t)strlen(plain[i]));
        if (d >= 0)
            CHECK_MEM(dec, (size_t)d, plain[i]);
    }
    const uint8_t bin[] = {0xfb, 0xff, 0xbf};
    size_t n = jwt_b64url_encode(bin, 3, out);
    CHECK_MEM(out, n, "-_-_");
}

TEST(test_jwt_b64url_decode_rejects_padding_bad_length_and_stray_bits)
{
    uint8_t dec[16];
    CHECK_EQ(jwt_b64url_decode((const uint8_t *)"Zg==", 4, dec), -1);
    CHECK_EQ(jwt_b64url_decode((const uint8_t *)"Zm9vY", 5, dec), -1);
    CHECK_EQ(jwt_b64url_decode((const uint8_t *)"Zh", 2, dec), -1);
    CHECK_EQ(jwt_b64url_decode((const uint8_t *)"Zm+v", 4, dec), -1);
    CHECK_EQ(jwt_b64url_decode((const uint8_t *)"Zm/v", 4, dec), -1);
    CHECK_EQ(jwt_b64url_decode((const uint8_t *)"Zm9\0", 4, dec), -1);
    CHECK_EQ(jwt_b64url_decode((const uint8_t *)"Zm 9v", 5, dec), -1);
}

TEST(test_jwt_rejects_crit_header)
{
    struct jwt_claims c;
    /* RFC 7515 4.1.11: we understand no extension, so any crit is refused, even one that
     * names a registered claim. */
    char *t = make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\",\"crit\":[\"exp\"]}",
                         "{\"sub\":\"1\"}");
    CHECK_EQ(verify(t, &c), JWT_INVALID);
    free(t);
    t = make_token("{\"alg\":\"HS256\",\"crit\":[]}", "{\"sub\":\"1\"}");
    CHECK_EQ(verify(t, &c), JWT_INVALID);
    free(t);
}

TEST(test_jwt_rejects_token_before_nbf)
{
    struct jwt_claims c;
    char payload[128];
    snprintf(payload, sizeof(payload), "{\"sub\":\"1\",\"nbf\":%d}", NOW + 600);
    CHECK_EQ(verify_payload(payload, &c), JWT_INVALID);
    snprintf(payload, sizeof(payload), "{\"sub\":\"1\",\"nbf\":%d}", NOW);
    CHECK_EQ(verify_payload(payload, &c), JWT_OK);
    CHECK_EQ(c.nbf, NOW);
    jwt_claims_free(&c);
    snprintf(payload, sizeof(payload), "{\"sub\":\"1\",\"nbf\":\"soon\"}");
    CHECK_EQ(verify_payload(payload, &c), JWT_INVALID);
}

/* Keys of this run (main generates them). */
static EVP_PKEY *rsa_key, *p256_key, *p384_key, *ed_key;

static struct jwt_key hmac_of(const char *secret)
{
    return (struct jwt_key){JWT_KEY_HMAC, JWT_ALG_UNKNOWN, (const uint8_t *)secret,
                            strlen(secret), NULL};
}

static struct jwt_key pkey_of(enum jwt_key_kind kind, EVP_PKEY *k)
{
    return (struct jwt_key){kind, JWT_ALG_UNKNOWN, NULL, 0, k};
}

static int verify_with(const char *token, const struct jwt_key *key, const struct jwt_checks *chk)
{
    struct jwt_claims c;
    int rc = jwt_verify((const uint8_t *)token, strlen(token), key, chk, &c);
    if (rc == JWT_OK || rc == JWT_EXPIRED)
        jwt_claims_free(&c);
    return rc;
}

static const struct jwt_checks plain = {NOW, 0, NULL, NULL};

/* Flip a bit in the signature's first character (still valid base64url). */
static void corrupt_signature(char *token)
{
    char *sig = strrchr(token, '.') + 1;
    sig[0] = sig[0] == 'A' ? 'B' : 'A';
}

TEST(test_jwt_every_algorithm_verifies_with_its_key_and_not_when_altered)
{
    struct jwt_key hmac = hmac_of(SECRET), rsa = pkey_of(JWT_KEY_RSA, rsa_key),
                   p256 = pkey_of(JWT_KEY_EC_P256, p256_key),
                   p384 = pkey_of(JWT_KEY_EC_P384, p384_key),
                   ed = pkey_of(JWT_KEY_ED25519, ed_key);
    const struct {
        const char *alg;
        struct jwt_key *key;
        EVP_PKEY *pkey;
    } cases[] = {
        {"HS256", &hmac, NULL}, {"HS384", &hmac, NULL},     {"HS512", &hmac, NULL},
        {"RS256", &rsa, rsa_key}, {"RS384", &rsa, rsa_key}, {"RS512", &rsa, rsa_key},
        {"PS256", &rsa, rsa_key}, {"ES256", &p256, p256_key}, {"ES384", &p384, p384_key},
        {"EdDSA", &ed, ed_key},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *t = test_token(cases[i].alg, NULL, "{\"sub\":\"42\",\"exp\":2000000000}",
                             cases[i].pkey, SECRET);
        struct jwt_claims c;
        int rc = jwt_verify((const uint8_t *)t, strlen(t), cases[i].key, &plain, &c);
        if (rc != JWT_OK)
            fprintf(stderr, "  %s: %d\n", cases[i].alg, rc);
        CHECK_EQ(rc, JWT_OK);
        if (rc == JWT_OK) {
            CHECK_MEM(c.sub.p, c.sub.len, "42");
            jwt_claims_free(&c);
        }
        corrupt_signature(t);
        CHECK_EQ(verify_with(t, cases[i].key, &plain), JWT_INVALID);
        free(t);
    }
}

TEST(test_jwt_the_key_decides_the_algorithm)
{
    struct jwt_key hmac = hmac_of(SECRET), rsa = pkey_of(JWT_KEY_RSA, rsa_key),
                   p256 = pkey_of(JWT_KEY_EC_P256, p256_key),
                   p384 = pkey_of(JWT_KEY_EC_P384, p384_key),
                   ed = pkey_of(JWT_KEY_ED25519, ed_key);
    const char *pl = "{\"sub\":\"1\"}";
    char *rs = test_token("RS256", NULL, pl, rsa_key, NULL);
    char *ps = test_token("PS256", NULL, pl, rsa_key, NULL);
    char *es256 = test_token("ES256", NULL, pl, p256_key, NULL);
    char *es384 = test_token("ES384", NULL, pl, p384_key, NULL);
    char *eddsa = test_token("EdDSA", NULL, pl, ed_key, NULL);
    char *hs = test_token("HS256", NULL, pl, NULL, SECRET);
    /* RS token, EC keys only; EC tokens against the other curve; EdDSA against RSA. */
    CHECK_EQ(verify_with(rs, &p256, &plain), JWT_INVALID);
    CHECK_EQ(verify_with(rs, &hmac, &plain), JWT_INVALID);
    CHECK_EQ(verify_with(es256, &p384, &plain), JWT_INVALID);
    CHECK_EQ(verify_with(es384, &p256, &plain), JWT_INVALID);
    CHECK_EQ(verify_with(es256, &rsa, &plain), JWT_INVALID);
    CHECK_EQ(verify_with(eddsa, &rsa, &plain), JWT_INVALID);
    CHECK_EQ(verify_with(hs, &rsa, &plain), JWT_INVALID);
    CHECK_EQ(verify_with(hs, &ed, &plain), JWT_INVALID);
    /* A key restricted to one alg (a JWKS "alg") refuses its kind's others. */
    struct jwt_key rs256_only = rsa;
    rs256_only.alg = JWT_RS256;
    CHECK_EQ(verify_with(rs, &rs256_only, &plain), JWT_OK);
    CHECK_EQ(verify_with(ps, &rs256_only, &plain), JWT_INVALID);
    /* A PSS signature under an RS256 header is not PKCS#1 v1.5 (and the reverse). */
    char *ps_as_rs = test_sign("{\"alg\":\"RS256\"}", pl, "PS256", rsa_key, NULL);
    char *rs_as_ps = test_sign("{\"alg\":\"PS256\"}", pl, "RS256", rsa_key, NULL);
    CHECK_EQ(verify_with(ps_as_rs, &rsa, &plain), JWT_INVALID);
    CHECK_EQ(verify_with(rs_as_ps, &rsa, &plain), JWT_INVALID);
    /* An ES256 token whose header says ES384, and an HS512 MAC labelled HS256. */
    char *es_lie = test_sign("{\"alg\":\"ES384\"}", pl, "ES256", p256_key, NULL);
    char *hs_lie = test_sign("{\"alg\":\"HS256\"}", pl, "HS512", NULL, SECRET);
    CHECK_EQ(verify_with(es_lie, &p256, &plain), JWT_INVALID);
    CHECK_EQ(verify_with(es_lie, &p384, &plain), JWT_INVALID);
    CHECK_EQ(verify_with(hs_lie, &hmac, &plain), JWT_INVALID);
    free(rs), free(ps), free(es256), free(es384), free(eddsa), free(hs);
    free(ps_as_rs), free(rs_as_ps), free(es_lie), free(hs_lie);
}

TEST(test_jwt_alg_none_is_refused_by_every_key)
{
    struct jwt_key keys[] = {hmac_of(SECRET), pkey_of(JWT_KEY_RSA, rsa_key),
                             pkey_of(JWT_KEY_EC_P256, p256_key), pkey_of(JWT_KEY_ED25519, ed_key)};
    const char *none[] = {
        /* {"alg":"none"}.{"sub":"1"}. and with a stray signature */
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.c2ln",
        /* {"alg":"None"} */
        "eyJhbGciOiJOb25lIn0.eyJzdWIiOiIxIn0.c2ln",
    };
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
        for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
            CHECK_EQ(verify_with(none[i], &keys[k], &plain), JWT_INVALID);
}

TEST(test_jwt_hs256_with_the_rsa_public_pem_as_secret_is_refused_by_the_rsa_key)
{
    char *pem = test_pem(rsa_key);
    char *t = test_token("HS256", NULL, "{\"sub\":\"1\"}", NULL, pem);
    struct jwt_key rsa = pkey_of(JWT_KEY_RSA, rsa_key);
    CHECK_EQ(verify_with(t, &rsa, &plain), JWT_INVALID);
    /* ... and it does not verify with another secret either. */
    struct jwt_key hmac = hmac_of(SECRET);
    CHECK_EQ(verify_with(t, &hmac, &plain), JWT_INVALID);
    free(t);
    free(pem);
}

TEST(test_jwt_ecdsa_signature_must_be_raw_r_s_of_the_curve_length)
{
    struct jwt_key p256 = pkey_of(JWT_KEY_EC_P256, p256_key);
    char *t = test_token("ES256", NULL, "{\"sub\":\"1\"}", p256_key, NULL);
    CHECK_EQ(verify_with(t, &p256, &plain), JWT_OK);
    /* One byte short (the signature re-encoded without its last byte). */
    char *sig = strrchr(t, '.') + 1;
    uint8_t raw[64];
    CHECK_EQ(jwt_b64url_decode((const uint8_t *)sig, strlen(sig), raw), 64);
    jwt_b64url_encode(raw, 63, sig);
    CHECK_EQ(verify_with(t, &p256, &plain), JWT_INVALID);
    free(t);
}

static int verify_claims(const char *payload, const struct jwt_checks *chk)
{
    char *t = make_token("{\"alg\":\"HS256\"}", payload);
    struct jwt_key hmac = hmac_of(SECRET);
    int rc = verify_with(t, &hmac, chk);
    free(t);
    return rc;
}

TEST(test_jwt_exp_nbf_iat_with_leeway)
{
    char p[160];
    struct jwt_checks strict = {NOW, 0, NULL, NULL}, lenient = {NOW, 10, NULL, NULL};
    snprintf(p, sizeof(p), "{\"sub\":\"1\",\"exp\":%d}", NOW - 5);
    CHECK_EQ(verify_claims(p, &strict), JWT_EXPIRED);
    CHECK_EQ(verify_claims(p, &lenient), JWT_OK);
    snprintf(p, sizeof(p), "{\"sub\":\"1\",\"exp\":%d}", NOW - 10);
    CHECK_EQ(verify_claims(p, &lenient), JWT_EXPIRED);
    snprintf(p, sizeof(p), "{\"sub\":\"1\",\"nbf\":%d}", NOW + 5);
    CHECK_EQ(verify_claims(p, &strict), JWT_INVALID);
    CHECK_EQ(verify_claims(p, &lenient), JWT_OK);
    snprintf(p, sizeof(p), "{\"sub\":\"1\",\"nbf\":%d}", NOW + 11);
    CHECK_EQ(verify_claims(p, &lenient), JWT_INVALID);
    /* Issued in the future: refused beyond the leeway. */
    snprintf(p, sizeof(p), "{\"sub\":\"1\",\"iat\":%d}", NOW + 3600);
    CHECK_EQ(verify_claims(p, &strict), JWT_INVALID);
    CHECK_EQ(verify_claims(p, &lenient), JWT_INVALID);
    snprintf(p, sizeof(p), "{\"sub\":\"1\",\"iat\":%d}", NOW + 5);
    CHECK_EQ(verify_claims(p, &strict), JWT_INVALID);
    CHECK_EQ(verify_claims(p, &lenient), JWT_OK);
    snprintf(p, sizeof(p), "{\"sub\":\"1\",\"iat\":%d}", NOW);
    CHECK_EQ(verify_claims(p, &strict), JWT_OK);
}

TEST(test_jwt_aud_string_or_array_and_iss)
{
    struct jwt_checks aud = {NOW, 0, "herald", NULL}, iss = {NOW, 0, NULL, "https://auth"},
                      none = {NOW, 0, NULL, NULL};
    CHECK_EQ(verify_claims("{\"sub\":\"1\",\"aud\":\"herald\"}", &aud), JWT_OK);
    CHECK_EQ(verify_claims("{\"sub\":\"1\",\"aud\":[\"web\",\"herald\"]}", &aud), JWT_OK);
    CHECK_EQ(verify_claims("{\"sub\":\"1\",\"aud\":\"her\\u0061ld\"}", &aud), JWT_OK);
    CHECK_EQ(verify_claims("{\"sub\":\"1\",\"aud\":\"other\"}", &aud), JWT_INVALID);
    CHECK_EQ(verify_claims("{\"sub\":\"1\",\"aud\":[\"web\",\"other\"]}", &aud), JWT_INVALID);
    CHECK_EQ(verify_claims("{\"sub\":\"1\",\"aud\":[]}", &aud), JWT_INVALID);
    CHECK_EQ(verify_claims("{\"sub\":\"1\",\"aud\":[\"herald\",1]}", &aud), JWT_INVALID);
    CHECK_EQ(verify_claims("{\"sub\":\"1\",\"aud\":\"heraldx\"}", &aud), JWT_INVALID);
    CHECK_EQ(verify_claims("{\"sub\":\"1\"}", &aud), JWT_INVALID);
    /* Without token_audience aud is not looked at. */
    CHECK_EQ(verify_claims("{\"sub\":\"1\",\"aud\":\"other\"}", &none), JWT_OK);
    CHECK_EQ(verify_claims("{\"sub\":\"1\",\"iss\":\"https://auth\"}", &iss), JWT_OK);
    CHECK_EQ(verify_claims("{\"sub\":\"1\",\"iss\":\"https://evil\"}", &iss), JWT_INVALID);
    CHECK_EQ(verify_claims("{\"sub\":\"1\",\"iss\":[\"https://auth\"]}", &iss), JWT_INVALID);
    CHECK_EQ(verify_claims("{\"sub\":\"1\"}", &iss), JWT_INVALID);
    CHECK_EQ(verify_claims("{\"sub\":\"1\",\"iss\":\"https://evil\"}", &none), JWT_OK);
}

TEST(test_jwt_header_gives_alg_and_kid)
{
    struct jwt_header h;
    char *t = test_token("ES256", "key-1", "{\"sub\":\"1\"}", p256_key, NULL);
    CHECK_EQ(jwt_header_parse((const uint8_t *)t, strlen(t), &h), 0);
    CHECK_EQ(h.alg, JWT_ES256);
    CHECK_EQ(h.has_kid, 1);
    CHECK_MEM(h.kid, h.kid_len, "key-1");
    free(t);
    t = make_token("{\"alg\":\"HS256\",\"kid\":7}", "{}");
    CHECK_EQ(jwt_header_parse((const uint8_t *)t, strlen(t), &h), JWT_INVALID);
    free(t);
    t = make_token("{\"alg\":\"RS1\"}", "{}");
    CHECK_EQ(jwt_header_parse((const uint8_t *)t, strlen(t), &h), 0);
    CHECK_EQ(h.alg, JWT_ALG_UNKNOWN);
    CHECK_EQ(h.has_kid, 0);
    free(t);
}

int main(void)
{
    rsa_key = test_rsa_key(2048);
    p256_key = test_ec_key("P-256");
    p384_key = test_ec_key("P-384");
    ed_key = test_ed25519_key();
    RUN(test_jwt_verifies_reference_token_and_extracts_claims);
    RUN(test_jwt_verifies_jwtio_example_without_exp);
    RUN(test_jwt_rejects_wrong_secret);
    RUN(test_jwt_rejects_empty_secret);
    RUN(test_jwt_rejects_altered_signature_payload_and_header);
    RUN(test_jwt_rejects_noncanonical_signature_encoding);
    RUN(test_jwt_rejects_alg_none_and_others);
    RUN(test_jwt_accepts_header_without_typ_and_with_extra_fields);
    RUN(test_jwt_expired_token_reports_expired_with_claims);
    RUN(test_jwt_rejects_bad_claim_types);
    RUN(test_jwt_unescapes_string_claims_in_place);
    RUN(test_jwt_info_may_be_any_json_value);
    RUN(test_jwt_rejects_wrong_number_of_parts);
    RUN(test_jwt_rejects_every_truncation_of_a_valid_token);
    RUN(test_jwt_rejects_bad_base64);
    RUN(test_jwt_rejects_token_over_16k);
    RUN(test_jwt_sign_roundtrips_and_matches_reference);
    RUN(test_jwt_b64url_matches_rfc4648_vectors);
    RUN(test_jwt_b64url_decode_rejects_padding_bad_length_and_stray_bits);
    RUN(test_jwt_rejects_crit_header);
    RUN(test_jwt_rejects_token_before_nbf);
    RUN(test_jwt_every_algorithm_verifies_with_its_key_and_not_when_altered);
    RUN(test_jwt_the_key_decides_the_algorithm);
    RUN(test_jwt_alg_none_is_refused_by_every_key);
    RUN(test_jwt_hs256_with_the_rsa_public_pem_as_secret_is_refused_by_the_rsa_key);
    RUN(test_jwt_ecdsa_signature_must_be_raw_r_s_of_the_curve_length);
    RUN(test_jwt_exp_nbf_iat_with_leeway);
    RUN(test_jwt_aud_string_or_array_and_iss);
    RUN(test_jwt_header_gives_alg_and_kid);
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(p256_key);
    EVP_PKEY_free(p384_key);
    EVP_PKEY_free(ed_key);
    return test_summary("auth_jwt");
}
