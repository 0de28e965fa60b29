/* JSON Web Tokens (RFC 7519): JWS verification against one key for HMAC, RSA
 * (PKCS#1 v1.5 and PSS), ECDSA and Ed25519 (RFC 7518, RFC 8037) with OpenSSL's EVP, the
 * registered claims, HS256 signing, and base64url (RFC 4648 section 5). Not the choice of
 * key (auth/keys.c), not the channel rules. */
#include "auth/jwt.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

/* Tokens travel in connect commands and API bodies; 16 KB is far above any sane claim set
 * and bounds the work (and the token array) an unauthenticated client can cause. */
#define JWT_MAX_TOKEN 16384
#define JWT_HEADER_MAX_TOKENS 32
#define SHA256_LEN 32
/* base64url of 32 bytes without padding */
#define SIG_B64_LEN 43
/* The largest signature: RSA with an 8192-bit modulus (auth/keys.c refuses larger). */
#define SIG_MAX 1024
#define SIG_MAX_B64 ((SIG_MAX * 4 + 2) / 3)

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t jwt_b64url_encode(const uint8_t *p, size_t len, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

static int b64url_value(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Strict: no padding, no whitespace, no '+' or '/', and the unused low bits of the last
 * character must be zero (RFC 4648 section 3.5), so every byte string has exactly one
 * encoding and a signature cannot be varied without changing its bytes. */
ssize_t jwt_b64url_decode(const uint8_t *p, size_t len, uint8_t *out)
{
    if (len % 4 == 1)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    unsigned nbits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value(p[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        nbits += 6;
        if (nbits >= 8) {
            nbits -= 8;
            out[o++] = (uint8_t)(acc >> nbits);
            acc &= (1u << nbits) - 1;
        }
    }
    if (acc != 0)
        return -1;
    return (ssize_t)o;
}

static const struct {
    const char *name;
    enum jwt_alg alg;
} alg_names[] = {
    {"HS256", JWT_HS256}, {"HS384", JWT_HS384}, {"HS512", JWT_HS512}, {"RS256", JWT_RS256},
    {"RS384", JWT_RS384}, {"RS512", JWT_RS512}, {"PS256", JWT_PS256}, {"ES256", JWT_ES256},
    {"ES384", JWT_ES384}, {"EdDSA", JWT_EDDSA},
};

enum jwt_alg jwt_alg_parse(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < sizeof(alg_names) / sizeof(alg_names[0]); i++)
        if (strlen(alg_names[i].name) == len && memcmp(alg_names[i].name, p, len) == 0)
            return alg_names[i].alg;
    return JWT_ALG_UNKNOWN;
}

const char *jwt_alg_name(enum jwt_alg alg)
{
    for (size_t i = 0; i < sizeof(alg_names) / sizeof(alg_names[0]); i++)
        if (alg_names[i].alg == alg)
            return alg_names[i].name;
    return "none";
}

int jwt_key_allows(const struct jwt_key *key, enum jwt_alg alg)
{
    if (alg == JWT_ALG_UNKNOWN || (key->alg != JWT_ALG_UNKNOWN && key->alg != alg))
        return 0;
    switch (key->kind) {
    case JWT_KEY_HMAC:
        return alg == JWT_HS256 || alg == JWT_HS384 || alg == JWT_HS512;
    case JWT_KEY_RSA:
        return alg == JWT_RS256 || alg == JWT_RS384 || alg == JWT_RS512 || alg == JWT_PS256;
    case JWT_KEY_EC_P256:
        return alg == JWT_ES256;
    case JWT_KEY_EC_P384:
        return alg == JWT_ES384;
    case JWT_KEY_ED25519:
        return alg == JWT_EDDSA;
    }
    return 0;
}

/* The three segments of a compact JWS (RFC 7515 section 7.1). */
struct jws_parts {
    const uint8_t *header, *payload, *sig;
    size_t header_len, payload_len, sig_len;
    size_t signed_len; /* header.payload */
};

static int split(const uint8_t *token, size_t len, struct jws_parts *j)
{
    if (token == NULL || len == 0 || len > JWT_MAX_TOKEN)
        return -1;
    const uint8_t *dot1 = memchr(token, '.', len);
    if (dot1 == NULL)
        return -1;
    size_t rest = len - (size_t)(dot1 + 1 - token);
    const uint8_t *dot2 = memchr(dot1 + 1, '.', rest);
    if (dot2 == NULL)
        return -1;
    j->signed_len = (size_t)(dot2 - token);
    j->sig = dot2 + 1;
    j->sig_len = len - j->signed_len - 1;
    if (memchr(j->sig, '.', j->sig_len) != NULL)
        return -1;
    j->header = token;
    j->header_len = (size_t)(dot1 - token);
    j->payload = dot1 + 1;
    j->payload_len = (size_t)(dot2 - j->payload);
    if (j->header_len == 0 || j->payload_len == 0 || j->sig_len == 0 || j->sig_len > SIG_MAX_B64)
        return -1;
    return 0;
}

static int parse_header(const uint8_t *seg, size_t seg_len, struct jwt_header *h)
{
    memset(h, 0, offsetof(struct jwt_header, kid));
    uint8_t *hdr = malloc(seg_len ? seg_len : 1);
    if (hdr == NULL)
        return JWT_INVALID;
    int rc = JWT_INVALID;
    ssize_t n = jwt_b64url_decode(seg, seg_len, hdr);
    jsmntok_t t[JWT_HEADER_MAX_TOKENS];
    int ntok = n > 0 ? json_tokenize(hdr, (size_t)n, t, JWT_HEADER_MAX_TOKENS) : -1;
    if (ntok > 0 && t[0].type == JSMN_OBJECT) {
        int alg = json_obj_get(hdr, t, ntok, 0, "alg");
        int typ = json_obj_get(hdr, t, ntok, 0, "typ");
        int kid = json_obj_get(hdr, t, ntok, 0, "kid");
        /* RFC 7515 section 4.1.11: a recipient that does not understand an extension
         * listed in "crit" must reject the token, and we understand none. */
        int crit = json_obj_get(hdr, t, ntok, 0, "crit");
        if (alg > 0 && t[alg].type == JSMN_STRING && (typ < 0 || t[typ].type == JSMN_STRING) &&
            (kid < 0 || t[kid].type == JSMN_STRING) && crit < 0) {
            struct json_span a = json_tok_span(hdr, &t[alg]);
            h->alg = jwt_alg_parse(a.p, a.len);
            rc = 0;
            if (kid > 0) {
                ssize_t kl = json_unescape(hdr + t[kid].start, (size_t)(t[kid].end - t[kid].start));
                if (kl < 0 || (size_t)kl > JWT_MAX_KID) {
                    rc = JWT_INVALID;
                } else {
                    h->has_kid = 1;
                    h->kid_len = (size_t)kl;
                    memcpy(h->kid, hdr + t[kid].start, (size_t)kl);
                }
            }
        }
    }
    free(hdr);
    return rc;
}

int jwt_header_parse(const uint8_t *token, size_t len, struct jwt_header *h)
{
    struct jws_parts j;
    if (split(token, len, &j) != 0) {
        memset(h, 0, offsetof(struct jwt_header, kid));
        return JWT_INVALID;
    }
    return parse_header(j.header, j.header_len, h);
}

static const EVP_MD *alg_md(enum jwt_alg alg)
{
    switch (alg) {
    case JWT_HS256:
    case JWT_RS256:
    case JWT_PS256:
    case JWT_ES256:
        return EVP_sha256();
    case JWT_HS384:
    case JWT_RS384:
    case JWT_ES384:
        return EVP_sha384();
    case JWT_HS512:
    case JWT_RS512:
        return EVP_sha512();
    default:
        return NULL; /* EdDSA hashes inside (RFC 8032) */
    }
}

static int verify_hmac(const struct jwt_key *key, enum jwt_alg alg, const uint8_t *msg, size_t len,
                       const uint8_t *sig, size_t sig_len)
{
    const EVP_MD *md = alg_md(alg);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    /* An empty secret would let anyone mint tokens; treat it as "cannot verify". */
    if (key->secret_len == 0 || key->secret_len > INT32_MAX)
        return 0;
    if (HMAC(md, key->secret, (int)key->secret_len, msg, len, mac, &mac_len) == NULL)
        return 0;
    return sig_len == mac_len && CRYPTO_memcmp(sig, mac, mac_len) == 0;
}

/* JWS carries an ECDSA signature as r || s, each as long as the curve's order (RFC 7518
 * section 3.4); OpenSSL verifies the DER SEQUENCE of two INTEGERs (RFC 3279). */
static int ecdsa_raw_to_der(const uint8_t *sig, size_t sig_len, size_t half, uint8_t *der,
                            size_t cap, size_t *der_len)
{
    if (sig_len != 2 * half)
        return -1;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL);
    BIGNUM *s = BN_bin2bn(sig + half, (int)half, NULL);
    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return -1;
    }
    int n = i2d_ECDSA_SIG(es, NULL);
    int rc = -1;
    if (n > 0 && (size_t)n <= cap) {
        uint8_t *p = der;
        *der_len = (size_t)i2d_ECDSA_SIG(es, &p);
        rc = 0;
    }
    ECDSA_SIG_free(es); /* frees r and s */
    return rc;
}

static int verify_pkey(const struct jwt_key *key, enum jwt_alg alg, const uint8_t *msg, size_t len,
                       const uint8_t *sig, size_t sig_len)
{
    EVP_PKEY *pkey = key->pkey;
    if (pkey == NULL)
        return 0;
    uint8_t der[2 * 48 + 16];
    if (key->kind == JWT_KEY_EC_P256 || key->kind == JWT_KEY_EC_P384) {
        size_t der_len = 0;
        if (ecdsa_raw_to_der(sig, sig_len, key->kind == JWT_KEY_EC_P256 ? 32 : 48, der, sizeof(der),
                             &der_len) != 0)
            return 0;
        sig = der;
        sig_len = der_len;
    } else if (key->kind == JWT_KEY_RSA && sig_len != (size_t)EVP_PKEY_get_size(pkey)) {
        return 0; /* RFC 8017 section 8.2.2: the signature is exactly the modulus' length */
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    const EVP_MD *md = alg_md(alg);
    int ok = ctx != NULL && EVP_DigestVerifyInit(ctx, &pctx, md, NULL, pkey) == 1;
    /* RFC 7518 section 3.5: PSS with MGF1 of the same hash and a salt as long as it. */
    if (ok && alg == JWT_PS256)
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
    ok = ok && EVP_DigestVerify(ctx, sig, sig_len, msg, len) == 1;
    EVP_MD_CTX_free(ctx);
    /* A refused signature leaves errors on this thread's queue; nobody reads them. */
    ERR_clear_error();
    return ok;
}

/* A string claim, unescaped in place inside the payload; absent gives an empty span (not
 * NULL: callers compare it with memcmp). 0, or -1 not a string. */
static int claim_string(uint8_t *js, const jsmntok_t *t, int ntok, const char *key,
                        struct json_span *out)
{
    int rc = json_obj_string(js, t, ntok, 0, key, out);
    if (rc == 0)
        out->p = js;
    return rc < 0 ? -1 : 0;
}

static int claim_int(const uint8_t *js, const jsmntok_t *t, int ntok, const char *key, int64_t *out,
                     int *present)
{
    int i = json_obj_get(js, t, ntok, 0, key);
    *out = 0;
    *present = i >= 0;
    if (i < 0)
        return 0;
    return json_tok_i64(js, &t[i], out);
}

static int claim_channels(const uint8_t *js, const jsmntok_t *t, int ntok, struct json_span *out)
{
    int i = json_obj_get(js, t, ntok, 0, "channels");
    out->p = js;
    out->len = 0;
    if (i < 0)
        return 0;
    if (t[i].type != JSMN_ARRAY)
        return -1;
    int end = json_skip(t, ntok, i);
    /* Strings have no children, so every token inside the array is a direct element. */
    for (int k = i + 1; k < end; k++)
        if (t[k].type != JSMN_STRING)
            return -1;
    *out = json_tok_raw(js, &t[i]);
    return 0;
}

/* Does the aud claim at token i (a string or an array of strings, RFC 7519 section
 * 4.1.3) name audience? Strings are unescaped in place. */
static int aud_names(uint8_t *js, const jsmntok_t *t, int ntok, int i, const char *audience)
{
    size_t want = strlen(audience);
    int first = i, end = i + 1;
    if (t[i].type == JSMN_ARRAY) {
        first = i + 1;
        end = json_skip(t, ntok, i);
    }
    int found = 0;
    for (int k = first; k < end; k++) {
        if (t[k].type != JSMN_STRING)
            return -1;
        ssize_t n = json_unescape(js + t[k].start, (size_t)(t[k].end - t[k].start));
        if (n < 0)
            return -1;
        if ((size_t)n == want && memcmp(js + t[k].start, audience, want) == 0)
            found = 1;
    }
    return found;
}

static int decode_claims(const uint8_t *seg, size_t seg_len, const struct jwt_checks *chk,
                         struct jwt_claims *claims)
{
    /* +1 keeps a NUL after the JSON for callers that print it; never part of payload_len. */
    uint8_t *js = malloc(seg_len + 1);
    if (js == NULL)
        return -1;
    ssize_t n = jwt_b64url_decode(seg, seg_len, js);
    if (n <= 0) {
        free(js);
        return -1;
    }
    js[n] = '\0';
    /* Every token but the first needs at least two bytes of input (value plus separator),
     * so this many tokens always suffices for a payload that fits in the token cap. */
    unsigned max_tok = (unsigned)n / 2 + 2;
    jsmntok_t *t = malloc(max_tok * sizeof(*t));
    if (t == NULL) {
        free(js);
        return -1;
    }
    int ntok = json_tokenize(js, (size_t)n, t, max_tok);
    int exp_present = 0, iat_present = 0, nbf_present = 0;
    int rc = -1;
    if (ntok > 0 && t[0].type == JSMN_OBJECT &&
        claim_string(js, t, ntok, "sub", &claims->sub) == 0 &&
        claim_string(js, t, ntok, "channel", &claims->channel) == 0 &&
        claim_channels(js, t, ntok, &claims->channels) == 0 &&
        claim_int(js, t, ntok, "exp", &claims->exp, &exp_present) == 0 &&
        claim_int(js, t, ntok, "iat", &claims->iat, &iat_present) == 0 &&
        claim_int(js, t, ntok, "nbf", &claims->nbf, &nbf_present) == 0) {
        int i = json_obj_get(js, t, ntok, 0, "info");
        claims->info.p = js;
        claims->info.len = 0;
        if (i >= 0)
            claims->info = json_tok_raw(js, &t[i]);
        rc = exp_present ? 1 : 0;
        /* RFC 7519 section 4.1.3: a token for audiences that do not include us is not
         * ours. Without token_audience, aud is not looked at (as Centrifugo). */
        if (chk->audience) {
            int a = json_obj_get(js, t, ntok, 0, "aud");
            if (a < 0 || aud_names(js, t, ntok, a, chk->audience) != 1)
                rc = -1;
        }
        if (rc >= 0 && chk->issuer) {
            struct json_span iss;
            int has = json_obj_get(js, t, ntok, 0, "iss") >= 0;
            if (!has || claim_string(js, t, ntok, "iss", &iss) != 0 ||
                iss.len != strlen(chk->issuer) || memcmp(iss.p, chk->issuer, iss.len) != 0)
                rc = -1;
        }
    }
    free(t);
    if (rc < 0) {
        free(js);
        return -1;
    }
    claims->payload = js;
    claims->payload_len = (size_t)n;
    return rc;
}

int jwt_verify(const uint8_t *token, size_t len, const struct jwt_key *key,
               const struct jwt_checks *chk, struct jwt_claims *claims)
{
    memset(claims, 0, sizeof(*claims));
    struct jws_parts j;
    struct jwt_header h;
    if (split(token, len, &j) != 0 || parse_header(j.header, j.header_len, &h) != 0)
        return JWT_INVALID;
    /* The key decides what the token may be: its alg only picks among the key's own. */
    if (!jwt_key_allows(key, h.alg))
        return JWT_INVALID;
    uint8_t sig[SIG_MAX];
    ssize_t sig_len = jwt_b64url_decode(j.sig, j.sig_len, sig);
    if (sig_len <= 0)
        return JWT_INVALID;
    int ok = key->kind == JWT_KEY_HMAC
                 ? verify_hmac(key, h.alg, token, j.signed_len, sig, (size_t)sig_len)
                 : verify_pkey(key, h.alg, token, j.signed_len, sig, (size_t)sig_len);
    if (!ok)
        return JWT_INVALID;

    int rc = decode_claims(j.payload, j.payload_len, chk, claims);
    if (rc < 0) {
        memset(claims, 0, sizeof(*claims));
        return JWT_INVALID;
    }
    int64_t now = chk->now, leeway = chk->leeway;
    /* RFC 7519 sections 4.1.5 and 4.1.6: not to be accepted before nbf, nor when issued
     * in the future (a clock far ahead, or a token minted to outlive its exp check);
     * both give the leeway for skew between the clocks. */
    if (claims->nbf > now + leeway || claims->iat > now + leeway) {
        jwt_claims_free(claims);
        return JWT_INVALID;
    }
    if (rc == 1 && claims->exp <= now - leeway)
        return JWT_EXPIRED;
    return JWT_OK;
}

int jwt_verify_hs256(const uint8_t *token, size_t len, const uint8_t *secret, size_t secret_len,
                     int64_t now, struct jwt_claims *claims)
{
    struct jwt_key key = {JWT_KEY_HMAC, JWT_HS256, secret, secret_len, NULL};
    struct jwt_checks chk = {now, 0, NULL, NULL};
    return jwt_verify(token, len, &key, &chk, claims);
}

void jwt_claims_free(struct jwt_claims *claims)
{
    if (claims == NULL)
        return;
    free(claims->payload);
    memset(claims, 0, sizeof(*claims));
}

char *jwt_sign_hs256(const uint8_t *payload, size_t len, const uint8_t *secret, size_t secret_len)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    if (secret_len == 0 || len > JWT_MAX_TOKEN)
        return NULL;
    size_t hdr_b64 = ((sizeof(header) - 1 + 2) / 3) * 4;
    size_t pl_b64 = ((len + 2) / 3) * 4;
    char *out = malloc(hdr_b64 + 1 + pl_b64 + 1 + SIG_B64_LEN + 2);
    if (out == NULL)
        return NULL;
    size_t o = jwt_b64url_encode((const uint8_t *)header, sizeof(header) - 1, out);
    out[o++] = '.';
    o += jwt_b64url_encode(payload, len, out + o);
    uint8_t mac[SHA256_LEN];
    unsigned mac_len = 0;
    if (secret_len > INT32_MAX ||
        HMAC(EVP_sha256(), secret, (int)secret_len, (const uint8_t *)out, o, mac, &mac_len) ==
            NULL ||
        mac_len != SHA256_LEN) {
        free(out);
        return NULL;
    }
    out[o++] = '.';
    jwt_b64url_encode(mac, sizeof(mac), out + o);
    return out;
}
