/* Test-side JWS signing with OpenSSL for the auth tests, independent of what auth/jwt.c
 * verifies with: keys generated per run, tokens of any header and payload (ECDSA
 * signatures turned from OpenSSL's DER into JWS's r || s), JWKs of public keys. */
#ifndef HERALD_TEST_SIGN_H
#define HERALD_TEST_SIGN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "auth/jwt.h"

/* "RSA" (bits), "EC" (curve "P-256" / "P-384"), "ED25519". */
static inline EVP_PKEY *test_rsa_key(size_t bits)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", bits);
}

static inline EVP_PKEY *test_ec_key(const char *curve)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
}

static inline EVP_PKEY *test_ed25519_key(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
}

/* The SubjectPublicKeyInfo PEM of key; malloc'd. */
static inline char *test_pem(EVP_PKEY *key)
{
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, key);
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    char *out = malloc((size_t)n + 1);
    memcpy(out, p, (size_t)n);
    out[n] = 0;
    BIO_free(bio);
    return out;
}

static char *test_b64(const uint8_t *p, size_t n)
{
    char *out = malloc((n + 2) / 3 * 4 + 1);
    jwt_b64url_encode(p, n, out);
    return out;
}

static const EVP_MD *test_md(const char *alg)
{
    if (strstr(alg, "384"))
        return EVP_sha384();
    if (strstr(alg, "512"))
        return EVP_sha512();
    if (strcmp(alg, "EdDSA") == 0)
        return NULL;
    return EVP_sha256();
}

/* header.payload signed as alg says, with key (or, for HS*, secret). malloc'd. The
 * header's own "alg" is whatever header says: a test may lie in it. */
static char *test_sign(const char *header, const char *payload, const char *alg, EVP_PKEY *key,
                       const char *secret)
{
    char *h = test_b64((const uint8_t *)header, strlen(header));
    char *p = test_b64((const uint8_t *)payload, strlen(payload));
    size_t in_len = strlen(h) + 1 + strlen(p);
    char *in = malloc(in_len + 1);
    snprintf(in, in_len + 1, "%s.%s", h, p);
    free(h);
    free(p);
    uint8_t sig[1024];
    size_t sig_len = sizeof(sig);
    const EVP_MD *md = test_md(alg);
    if (alg[0] == 'H') {
        unsigned n = 0;
        HMAC(md, secret, (int)strlen(secret), (const uint8_t *)in, in_len, sig, &n);
        sig_len = n;
    } else {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pctx = NULL;
        EVP_DigestSignInit(ctx, &pctx, md, NULL, key);
        if (alg[0] == 'P') {
            EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
        }
        uint8_t der[1024];
        size_t der_len = sizeof(der);
        EVP_DigestSign(ctx, der, &der_len, (const uint8_t *)in, in_len);
        EVP_MD_CTX_free(ctx);
        if (alg[0] == 'E' && alg[1] == 'S') {
            size_t half = strstr(alg, "384") ? 48 : 32;
            const uint8_t *q = der;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)der_len);
            BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, (int)half);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + half, (int)half);
            ECDSA_SIG_free(es);
            sig_len = 2 * half;
        } else {
            memcpy(sig, der, der_len);
            sig_len = der_len;
        }
    }
    char *s = test_b64(sig, sig_len);
    char *out = malloc(in_len + 2 + strlen(s));
    sprintf(out, "%s.%s", in, s);
    free(in);
    free(s);
    return out;
}

/* A token whose header is {"alg":alg[,"kid":kid]} signed accordingly. malloc'd. */
static inline char *test_token(const char *alg, const char *kid, const char *payload, EVP_PKEY *key,
                               const char *secret)
{
    char header[256];
    if (kid)
        snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg,
                 kid);
    else
        snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    return test_sign(header, payload, alg, key, secret);
}

static inline char *test_bn_b64(EVP_PKEY *key, const char *param, int pad)
{
    BIGNUM *bn = NULL;
    EVP_PKEY_get_bn_param(key, param, &bn);
    uint8_t buf[1024];
    int n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
    BN_free(bn);
    return test_b64(buf, (size_t)n);
}

/* The JWK of key's public part ("kid" and, unless NULL, "alg"). malloc'd. */
static inline char *test_jwk(EVP_PKEY *key, const char *kid, const char *alg)
{
    char *out = malloc(4096);
    char algm[64] = "";
    if (alg)
        snprintf(algm, sizeof(algm), ",\"alg\":\"%s\"", alg);
    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA) {
        char *n = test_bn_b64(key, OSSL_PKEY_PARAM_RSA_N, 0);
        char *e = test_bn_b64(key, OSSL_PKEY_PARAM_RSA_E, 0);
        snprintf(out, 4096,
                 "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\"%s,\"n\":\"%s\",\"e\":\"%s\"}",
                 kid, algm, n, e);
        free(n);
        free(e);
    } else if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC) {
        int half = EVP_PKEY_get_bits(key) == 384 ? 48 : 32;
        char *x = test_bn_b64(key, OSSL_PKEY_PARAM_EC_PUB_X, half);
        char *y = test_bn_b64(key, OSSL_PKEY_PARAM_EC_PUB_Y, half);
        snprintf(out, 4096,
                 "{\"kty\":\"EC\",\"kid\":\"%s\"%s,\"crv\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}", kid,
                 algm, half == 48 ? "P-384" : "P-256", x, y);
        free(x);
        free(y);
    } else {
        uint8_t raw[32];
        size_t n = sizeof(raw);
        EVP_PKEY_get_raw_public_key(key, raw, &n);
        char *x = test_b64(raw, n);
        snprintf(out, 4096, "{\"kty\":\"OKP\",\"kid\":\"%s\"%s,\"crv\":\"Ed25519\",\"x\":\"%s\"}",
                 kid, algm, x);
        free(x);
    }
    return out;
}

#endif
