/* Unit tests for auth/jwt: HS256 verification against reference tokens, refusals, signing
 * and base64url. */
#include "auth/jwt.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

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

int main(void)
{
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
    return test_summary("auth_jwt");
}
