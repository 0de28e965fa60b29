/* herald-tokenbench: token verifications per second on one thread, through the path a
 * connect takes (auth/keys.h: header, choice of key, signature, claims), for HS256,
 * RS256 (2048-bit) and ES256 (P-256); keys and tokens made here with OpenSSL. Rates are
 * per CPU-second of the thread (the machine may be shared) and per wall second. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "auth/keys.h"

#define SECRET "tokenbench-secret-0123456789abcdef"

static char *pem_of(EVP_PKEY *key)
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

/* A token as an issuer would make it: {"alg":alg} and a connect's claims. */
static char *make_token(const char *alg, EVP_PKEY *key)
{
    char header[64], payload[128], in[512];
    snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    snprintf(payload, sizeof(payload), "{\"sub\":\"user-42\",\"exp\":%lld,\"iat\":%lld}",
             (long long)time(NULL) + 3600, (long long)time(NULL));
    size_t o = jwt_b64url_encode((const uint8_t *)header, strlen(header), in);
    in[o++] = '.';
    o += jwt_b64url_encode((const uint8_t *)payload, strlen(payload), in + o);
    uint8_t sig[512];
    size_t sig_len = sizeof(sig);
    if (key == NULL) {
        unsigned n = 0;
        HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const uint8_t *)in, o, sig, &n);
        sig_len = n;
    } else {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        uint8_t der[512];
        size_t der_len = sizeof(der);
        EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key);
        EVP_DigestSign(ctx, der, &der_len, (const uint8_t *)in, o);
        EVP_MD_CTX_free(ctx);
        if (alg[0] == 'E') { /* DER to JWS's r || s */
            const uint8_t *q = der;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)der_len);
            BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
            ECDSA_SIG_free(es);
            sig_len = 64;
        } else {
            memcpy(sig, der, der_len);
            sig_len = der_len;
        }
    }
    char *token = malloc(o + 2 + (sig_len + 2) / 3 * 4 + 1);
    memcpy(token, in, o);
    token[o] = '.';
    jwt_b64url_encode(sig, sig_len, token + o + 1);
    return token;
}

static double seconds(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run(const char *alg, struct keys *k, const char *token, double duration)
{
    size_t len = strlen(token);
    struct jwt_claims c;
    if (keys_verify(k, (const uint8_t *)token, len, (int64_t)time(NULL), &c) != JWT_OK) {
        fprintf(stderr, "%s: the token does not verify\n", alg);
        return -1;
    }
    jwt_claims_free(&c);
    double w0 = seconds(CLOCK_MONOTONIC), c0 = seconds(CLOCK_THREAD_CPUTIME_ID), w1 = w0;
    unsigned long n = 0;
    while (w1 - w0 < duration) {
        for (int i = 0; i < 64; i++) {
            if (keys_verify(k, (const uint8_t *)token, len, (int64_t)time(NULL), &c) != JWT_OK)
                return -1;
            jwt_claims_free(&c);
        }
        n += 64;
        w1 = seconds(CLOCK_MONOTONIC);
    }
    double cpu = seconds(CLOCK_THREAD_CPUTIME_ID) - c0;
    printf("%-6s %10.0f verifications per CPU-second  %10.0f per wall second  (%lu in %.2f s)\n",
           alg, (double)n / cpu, (double)n / (w1 - w0), n, w1 - w0);
    return 0;
}

int main(int argc, char **argv)
{
    double duration = argc > 1 ? atof(argv[1]) : 3.0;
    if (duration <= 0) {
        fprintf(stderr, "usage: herald-tokenbench [SECONDS per algorithm, default 3]\n");
        return 2;
    }
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    char *rsa_pem = pem_of(rsa), *ec_pem = pem_of(ec);
    struct keys_config kc = {SECRET, rsa_pem, ec_pem, 0, NULL, NULL, 0};
    char err[200];
    struct keys *k = keys_new(&kc, err, sizeof(err));
    if (k == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    char *hs = make_token("HS256", NULL), *rs = make_token("RS256", rsa),
         *es = make_token("ES256", ec);
    int rc = run("HS256", k, hs, duration) || run("RS256", k, rs, duration) ||
             run("ES256", k, es, duration);
    free(hs), free(rs), free(es), free(rsa_pem), free(ec_pem);
    keys_free(k);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    return rc ? 1 : 0;
}
