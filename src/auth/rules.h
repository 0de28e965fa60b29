/* Who may do what: the server API key, the Origin allow-list, user-limited channels
 * and the namespace rules for subscribing, publishing and reading a channel.
 * Decisions only, on what the caller lends for the call; no I/O. Not tokens
 * (auth/jwt.h). */
#ifndef HERALD_AUTH_RULES_H
#define HERALD_AUTH_RULES_H

#include <stddef.h>
#include <stdint.h>

/* Does given[0..len) equal the NUL-terminated key? In constant time for any given of
 * any length: both are hashed (SHA-256) and the digests compared with CRYPTO_memcmp,
 * so neither the bytes nor the length of the key leak through timing. A NULL or
 * empty key matches nothing. */
int auth_api_key_ok(const char *key, const uint8_t *given, size_t len);

/* Does given equal key or one of keys[0..n) (api_key and api_keys: several valid at
 * once, so that they rotate without downtime)? Every key is compared, in constant time
 * each, whichever matches: the time tells neither which key nor how many bytes. */
int auth_api_keys_ok(const char *key, char *const *keys, size_t n, const uint8_t *given,
                     size_t len);

/* Is origin[0..len) one of the n exact values allowed (n == 0: any origin)? */
int auth_origin_allowed(char *const *allowed, size_t n, const uint8_t *origin, size_t len);

struct ns_opts;

/* User-limited channels: "chat:dm#42,43" admits only users 42 and 43 (the part after
 * the last '#', comma-separated); a channel without '#' admits everyone. */
int auth_user_allowed(const uint8_t *ch, size_t len, const char *user);

/* Does subscribing need a subscription token (a private namespace)? */
int auth_subscribe_needs_token(const struct ns_opts *ns);

/* May a client publish to ch of namespace ns? It must be allowed to publish in the
 * namespace (client_publish), be admitted by a user-limited channel, and in a private
 * namespace be subscribed (subscribed: whether it is). */
int auth_client_may_publish(const struct ns_opts *ns, const uint8_t *ch, size_t len,
                            const char *user, int subscribed);

/* May a client read ch's history or presence? Only its subscribers may. */
int auth_client_may_read(int subscribed);

#endif
