/* Client-side credentials for herald-bench: HS256 connection tokens (RFC 7519) and
 * the Sec-WebSocket-Key / expected Sec-WebSocket-Accept pair (RFC 6455 §4.1). */
#include "bench.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

static size_t b64url(const uint8_t *p, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = tab[v >> 6 & 63];
        out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = tab[v >> 6 & 63];
    }
    return o;
}

int bench_token(const char *secret, const char *user, char *out, size_t cap)
{
    static const char head[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char claims[256];
    int cl = snprintf(claims, sizeof(claims), "{\"sub\":\"%s\"}", user);
    if (cl < 0 || (size_t)cl >= sizeof(claims))
        return -1;
    size_t need = (sizeof(head) - 1 + 2) / 3 * 4 + 1 + ((size_t)cl + 2) / 3 * 4 + 1 + 44;
    if (cap < need)
        return -1;
    size_t o = b64url((const uint8_t *)head, sizeof(head) - 1, out);
    out[o++] = '.';
    o += b64url((const uint8_t *)claims, (size_t)cl, out + o);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (HMAC(EVP_sha256(), secret, (int)strlen(secret), (const uint8_t *)out, o, mac, &mac_len) ==
        NULL)
        return -1;
    out[o++] = '.';
    o += b64url(mac, mac_len, out + o);
    out[o] = '\0';
    return (int)o;
}

void bench_ws_key(char key[25], char accept[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    uint8_t raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        memset(raw, 0x5a, sizeof(raw));
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof(raw)); /* 24 chars + NUL */
    uint8_t cat[24 + sizeof(guid) - 1];
    memcpy(cat, key, 24);
    memcpy(cat + 24, guid, sizeof(guid) - 1);
    uint8_t digest[SHA_DIGEST_LENGTH];
    SHA1(cat, sizeof(cat), digest);
    EVP_EncodeBlock((unsigned char *)accept, digest, sizeof(digest)); /* 28 chars + NUL */
}
