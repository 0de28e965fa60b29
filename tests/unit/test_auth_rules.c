/* Unit tests for auth/rules: the API key (one, or several at once) and Origin checks. */
#include "auth/rules.h"

#include <string.h>

#include "test.h"

static int key_ok(const char *key, const char *given)
{
    return auth_api_key_ok(key, (const uint8_t *)given, strlen(given));
}

TEST(test_auth_api_key_matches_only_the_exact_key)
{
    CHECK(key_ok("s3cret-key", "s3cret-key"));
    CHECK(!key_ok("s3cret-key", "s3cret-kez"));
    CHECK(!key_ok("s3cret-key", "s3cret-ke"));
    CHECK(!key_ok("s3cret-key", "s3cret-key!"));
    CHECK(!key_ok("s3cret-key", ""));
    /* No key configured: nothing matches, not even the empty string. */
    CHECK(!key_ok("", ""));
    CHECK(!key_ok(NULL, "x"));
    /* Bytes after a NUL are not ignored. */
    CHECK(!auth_api_key_ok("ab", (const uint8_t *)"ab\0c", 4));
}

static int keys_ok(const char *key, char **keys, size_t n, const char *given)
{
    return auth_api_keys_ok(key, keys, n, (const uint8_t *)given, strlen(given));
}

TEST(test_auth_api_keys_every_listed_key_is_valid_and_only_those)
{
    char *more[] = {"new-key-2", "next-key-3"};
    CHECK(keys_ok("old-key-1", more, 2, "old-key-1"));
    CHECK(keys_ok("old-key-1", more, 2, "new-key-2"));
    CHECK(keys_ok("old-key-1", more, 2, "next-key-3"));
    CHECK(!keys_ok("old-key-1", more, 2, "other-key"));
    CHECK(!keys_ok("old-key-1", more, 2, "new-key-"));
    CHECK(!keys_ok("old-key-1", more, 2, ""));
    /* Only api_keys, no api_key; an empty entry matches nothing. */
    CHECK(keys_ok(NULL, more, 2, "next-key-3"));
    CHECK(!keys_ok(NULL, more, 0, "next-key-3"));
    char *empty[] = {""};
    CHECK(!keys_ok(NULL, empty, 1, ""));
}

TEST(test_auth_origin_allowed_is_exact)
{
    char *allowed[] = {"https://app.example", "http://localhost:3000"};
    CHECK(auth_origin_allowed(allowed, 2, (const uint8_t *)"https://app.example", 19));
    CHECK(!auth_origin_allowed(allowed, 2, (const uint8_t *)"https://app.example.evil", 24));
    CHECK(!auth_origin_allowed(allowed, 2, (const uint8_t *)"https://app.exampl", 18));
    CHECK(auth_origin_allowed(allowed, 0, (const uint8_t *)"anything", 8));
}

int main(void)
{
    RUN(test_auth_api_key_matches_only_the_exact_key);
    RUN(test_auth_api_keys_every_listed_key_is_valid_and_only_those);
    RUN(test_auth_origin_allowed_is_exact);
    return test_summary("auth_rules");
}
