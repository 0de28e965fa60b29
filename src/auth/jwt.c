/* JSON Web Tokens (RFC 7519) signed with HS256 (RFC 7518 section 3.2): verification, signing
 * and base64url (RFC 4648 section 5). Not the channel rules, and no RSA/EC yet. */
#include "auth/jwt.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* Tokens travel in connect commands and API bodies; 16 KB is far above any sane claim set
 * and bounds the work (and the token array) an unauthenticated client can cause. */
#define JWT_MAX_TOKEN 16384
#define JWT_HEADER_MAX_TOKENS 32
#define SHA256_LEN 32
/* base64url of 32 bytes without padding */
#define SIG_B64_LEN 43

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

static int hmac_sha256(const uint8_t *secret, size_t secret_len, const uint8_t *p, size_t len,
                       uint8_t mac[SHA256_LEN])
{
    unsigned mac_len = 0;
    if (secret_len > INT32_MAX)
        return -1;
    if (HMAC(EVP_sha256(), secret, (int)secret_len, p, len, mac, &mac_len) == NULL ||
        mac_len != SHA256_LEN)
        return -1;
    return 0;
}

/* The JOSE header must say alg "HS256"; "none" and every other algorithm are refused so a
 * token cannot pick a weaker check than the one we are configured for (RFC 8725 3.1). */
static int header_ok(const uint8_t *seg, size_t seg_len)
{
    uint8_t *hdr = malloc(seg_len ? seg_len : 1);
    if (hdr == NULL)
        return 0;
    int ok = 0;
    ssize_t n = jwt_b64url_decode(seg, seg_len, hdr);
    jsmntok_t t[JWT_HEADER_MAX_TOKENS];
    int ntok = n > 0 ? json_tokenize(hdr, (size_t)n, t, JWT_HEADER_MAX_TOKENS) : -1;
    if (ntok > 0 && t[0].type == JSMN_OBJECT) {
        int alg = json_obj_get(hdr, t, ntok, 0, "alg");
        int typ = json_obj_get(hdr, t, ntok, 0, "typ");
        /* RFC 7515 section 4.1.11: a recipient that does not understand an extension
         * listed in "crit" must reject the token, and we understand none. */
        int crit = json_obj_get(hdr, t, ntok, 0, "crit");
        ok = alg > 0 && json_tok_eq(hdr, &t[alg], "HS256") &&
             (typ < 0 || t[typ].type == JSMN_STRING) && crit < 0;
    }
    free(hdr);
    return ok;
}

/* A string claim, unescaped in place inside the payload; absent gives an empty span. */
static int claim_string(uint8_t *js, const jsmntok_t *t, int ntok, const char *key,
                        struct json_span *out)
{
    int i = json_obj_get(js, t, ntok, 0, key);
    out->p = js;
    out->len = 0;
    if (i < 0)
        return 0;
    if (t[i].type != JSMN_STRING)
        return -1;
    ssize_t n = json_unescape(js + t[i].start, (size_t)(t[i].end - t[i].start));
    if (n < 0)
        return -1;
    out->p = js + t[i].start;
    out->len = (size_t)n;
    return 0;
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

static int decode_claims(const uint8_t *seg, size_t seg_len, struct jwt_claims *claims)
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

int jwt_verify_hs256(const uint8_t *token, size_t len, const uint8_t *secret, size_t secret_len,
                     int64_t now, struct jwt_claims *claims)
{
    memset(claims, 0, sizeof(*claims));
    /* An empty secret would let anyone mint tokens; treat it as "cannot verify". */
    if (token == NULL || len == 0 || len > JWT_MAX_TOKEN || secret_len == 0)
        return JWT_INVALID;
    const uint8_t *dot1 = memchr(token, '.', len);
    if (dot1 == NULL)
        return JWT_INVALID;
    size_t rest = len - (size_t)(dot1 + 1 - token);
    const uint8_t *dot2 = memchr(dot1 + 1, '.', rest);
    if (dot2 == NULL)
        return JWT_INVALID;
    size_t signed_len = (size_t)(dot2 - token);
    const uint8_t *sig = dot2 + 1;
    size_t sig_len = len - signed_len - 1;
    if (memchr(sig, '.', sig_len) != NULL)
        return JWT_INVALID;
    size_t header_len = (size_t)(dot1 - token);
    const uint8_t *payload = dot1 + 1;
    size_t payload_len = (size_t)(dot2 - payload);
    if (header_len == 0 || payload_len == 0 || sig_len != SIG_B64_LEN)
        return JWT_INVALID;

    if (!header_ok(token, header_len))
        return JWT_INVALID;

    uint8_t given[SIG_B64_LEN], expected[SHA256_LEN];
    if (jwt_b64url_decode(sig, sig_len, given) != SHA256_LEN)
        return JWT_INVALID;
    if (hmac_sha256(secret, secret_len, token, signed_len, expected) != 0)
        return JWT_INVALID;
    if (CRYPTO_memcmp(given, expected, SHA256_LEN) != 0)
        return JWT_INVALID;

    int rc = decode_claims(payload, payload_len, claims);
    if (rc < 0) {
        memset(claims, 0, sizeof(*claims));
        return JWT_INVALID;
    }
    /* RFC 7519 section 4.1.5: not to be accepted before nbf. */
    if (claims->nbf > now) {
        jwt_claims_free(claims);
        return JWT_INVALID;
    }
    if (rc == 1 && claims->exp <= now)
        return JWT_EXPIRED;
    return JWT_OK;
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
    if (hmac_sha256(secret, secret_len, (const uint8_t *)out, o, mac) != 0) {
        free(out);
        return NULL;
    }
    out[o++] = '.';
    jwt_b64url_encode(mac, sizeof(mac), out + o);
    return out;
}
