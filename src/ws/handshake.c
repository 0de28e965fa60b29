/* WebSocket opening handshake, server side (RFC 6455 §4.2), see handshake.h: checks the
 * upgrade request's headers and computes Sec-WebSocket-Accept. Not the HTTP response. */
#include "ws/handshake.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string.h>


/* RFC 6455 §1.3: the GUID appended to the client's key before hashing. */
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
#define WS_GUID_LEN (sizeof(ws_guid) - 1)

void ws_accept_key(const uint8_t *key, size_t key_len, char out[29])
{
    unsigned char digest[SHA_DIGEST_LENGTH];
    uint8_t joined[128];

    /* Real keys are 24 bytes: hash them from the stack. Longer ones (only if a caller
     * passes an unchecked key) go through a digest context. */
    if (key_len <= sizeof(joined) - WS_GUID_LEN) {
        if (key_len > 0)
            memcpy(joined, key, key_len);
        memcpy(joined + key_len, ws_guid, WS_GUID_LEN);
        SHA1(joined, key_len + WS_GUID_LEN, digest);
    } else {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        unsigned int dlen = 0;
        if (ctx == NULL || !EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) ||
            !EVP_DigestUpdate(ctx, key, key_len) || !EVP_DigestUpdate(ctx, ws_guid, WS_GUID_LEN) ||
            !EVP_DigestFinal_ex(ctx, digest, &dlen))
            memset(digest, 0, sizeof(digest)); /* out of memory: a value no client accepts */
        EVP_MD_CTX_free(ctx);
    }
    /* 20 bytes -> 28 base64 characters and a NUL. */
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
}

/* Header name h equals name, ASCII case-insensitively (no locale). */
static int name_is(const struct ws_header *h, const char *name, size_t name_len)
{
    if (h->name_len != name_len)
        return 0;
    for (size_t i = 0; i < name_len; i++) {
        uint8_t a = h->name[i], b = (uint8_t)name[i];
        if (a >= 'A' && a <= 'Z')
            a |= 0x20;
        if (b >= 'A' && b <= 'Z')
            b |= 0x20;
        if (a != b)
            return 0;
    }
    return 1;
}

/* Does a comma-separated value contain token (ASCII case-insensitive, optional
 * whitespace around elements, RFC 9110 section 5.6.1)? */
static int value_has_token(const uint8_t *v, size_t len, const char *token)
{
    size_t tlen = strlen(token), i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tlen) {
            size_t k = 0;
            for (; k < tlen; k++) {
                uint8_t a = v[start + k], b = (uint8_t)token[k];
                if (a >= 'A' && a <= 'Z')
                    a |= 0x20;
                if (b >= 'A' && b <= 'Z')
                    b |= 0x20;
                if (a != b)
                    break;
            }
            if (k == tlen)
                return 1;
        }
    }
    return 0;
}

/* Does any header named `name` carry `token` in its comma-separated value? Connection
 * and Upgrade may be split over several field lines (RFC 9110 §5.3). */
static int any_header_has_token(const struct ws_header *hs, size_t n, const char *name,
                                const char *token)
{
    size_t name_len = strlen(name);
    for (size_t i = 0; i < n; i++) {
        const struct ws_header *h = &hs[i];
        if (name_is(h, name, name_len) && value_has_token(h->value, h->value_len, token))
            return 1;
    }
    return 0;
}

/* The only header with this name, or NULL when absent; *count says how many there were. */
static const struct ws_header *single_header(const struct ws_header *hs, size_t n,
                                             const char *name, int *count)
{
    size_t name_len = strlen(name);
    const struct ws_header *found = NULL;
    *count = 0;
    for (size_t i = 0; i < n; i++) {
        const struct ws_header *h = &hs[i];
        if (name_is(h, name, name_len)) {
            if (found == NULL)
                found = h;
            (*count)++;
        }
    }
    return found;
}

static int is_base64_char(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* RFC 6455 §4.1: the key is a base64-encoded 16-byte nonce, so 22 characters and "==".
 * The unused low bits of the last character are not checked: any decoder yields 16 bytes. */
static int is_valid_key(const uint8_t *k, size_t len)
{
    if (len != 24 || k[22] != '=' || k[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++)
        if (!is_base64_char(k[i]))
            return 0;
    return 1;
}

int ws_handshake_check(int http_minor, const struct ws_header *hs, size_t n, char accept[29])
{
    /* RFC 6455 §4.2.1: HTTP/1.1 or higher, Upgrade containing "websocket", Connection
     * containing "Upgrade" (both case-insensitive tokens). */
    if (http_minor < 1)
        return 400;
    if (!any_header_has_token(hs, n, "Upgrade", "websocket"))
        return 400;
    if (!any_header_has_token(hs, n, "Connection", "upgrade"))
        return 400;

    /* Version before key: a client speaking an older draft has no Sec-WebSocket-Key,
     * and 426 with "Sec-WebSocket-Version: 13" tells it what we speak (§4.4). */
    int count;
    const struct ws_header *version = single_header(hs, n, "Sec-WebSocket-Version", &count);
    if (count > 1)
        return 400; /* §11.3.5: must not appear more than once */
    if (version == NULL || version->value_len != 2 || memcmp(version->value, "13", 2) != 0)
        return 426;

    const struct ws_header *key = single_header(hs, n, "Sec-WebSocket-Key", &count);
    if (key == NULL || count > 1 || !is_valid_key(key->value, key->value_len))
        return 400; /* §11.3.1: exactly one key */

    ws_accept_key(key->value, key->value_len, accept);
    return 0;
}
