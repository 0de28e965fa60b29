/* API key and Origin rules (see rules.h). */
#include "auth/rules.h"

#include <string.h>

#include "core/config.h"


/* Constant time in the key: the walk runs over what was given, comparing each byte
 * with the key's (cycled), so neither the key's length nor where a guess goes wrong
 * shows in the time. (Hashing both sides did the same at four SHA-256 calls a request,
 * a tenth of an API publish's CPU.) */
int auth_api_key_ok(const char *key, const uint8_t *given, size_t len)
{
    if (key == NULL || key[0] == 0)
        return 0;
    size_t kl = strlen(key);
    uint8_t diff = (uint8_t)((kl ^ len) != 0);
    for (size_t i = 0, k = 0; i < len; i++, k = k + 1 == kl ? 0 : k + 1)
        diff |= (uint8_t)(given[i] ^ (uint8_t)key[k]);
    /* diff lives in a register (a volatile one was stored and reloaded every byte); the
     * barrier keeps the compiler from turning the loop into an early exit */
    __asm__ volatile("" : "+r"(diff));
    return diff == 0;
}

int auth_api_keys_ok(const char *key, char *const *keys, size_t n, const uint8_t *given, size_t len)
{
    int ok = auth_api_key_ok(key, given, len);
    for (size_t i = 0; i < n; i++)
        ok |= auth_api_key_ok(keys[i], given, len);
    return ok;
}

int auth_origin_allowed(char *const *allowed, size_t n, const uint8_t *origin, size_t len)
{
    if (n == 0)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (strlen(allowed[i]) == len && memcmp(allowed[i], origin, len) == 0)
            return 1;
    return 0;
}

int auth_user_allowed(const uint8_t *ch, size_t len, const char *user)
{
    const uint8_t *hash = NULL;
    for (size_t i = 0; i < len; i++)
        if (ch[i] == '#')
            hash = ch + i;
    if (hash == NULL)
        return 1;
    const uint8_t *p = hash + 1, *end = ch + len;
    size_t ulen = strlen(user);
    while (p <= end) {
        const uint8_t *comma = memchr(p, ',', (size_t)(end - p));
        const uint8_t *e = comma ? comma : end;
        if ((size_t)(e - p) == ulen && ulen > 0 && memcmp(p, user, ulen) == 0)
            return 1;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 0;
}

int auth_subscribe_needs_token(const struct ns_opts *ns)
{
    return ns->private_;
}

int auth_client_may_publish(const struct ns_opts *ns, const uint8_t *ch, size_t len,
                            const char *user, int subscribed)
{
    return ns->client_publish && auth_user_allowed(ch, len, user) && (!ns->private_ || subscribed);
}

int auth_client_may_read(int subscribed)
{
    return subscribed;
}
