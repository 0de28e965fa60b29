/* libFuzzer target for core/json: strict tokenizing, then every look-up helper and
 * json_unescape on every string token (on a writable copy). */
#include "core/json.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NTOK 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jsmntok_t t[NTOK];
    int n = json_tokenize(data, size, t, NTOK);
    if (n < 0)
        return 0;
    assert(n >= 1 && n <= NTOK);
    assert(json_skip(t, n, 0) == n); /* one value covers every token */
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    for (int i = 0; i < n; i++) {
        assert(t[i].start >= 0 && t[i].start <= t[i].end && (size_t)t[i].end <= size);
        struct json_span raw = json_tok_raw(data, &t[i]);
        assert(raw.p >= data && raw.p + raw.len <= data + size);
        uint64_t u;
        int64_t s;
        int b;
        (void)json_tok_u64(data, &t[i], &u);
        (void)json_tok_i64(data, &t[i], &s);
        (void)json_tok_bool(data, &t[i], &b);
        assert(json_skip(t, n, i) > i && json_skip(t, n, i) <= n);
        if (t[i].type == JSMN_OBJECT) {
            (void)json_obj_get(data, t, n, i, "id");
            (void)json_obj_get(data, t, n, i, "");
        }
        if (t[i].type == JSMN_STRING) {
            size_t len = (size_t)(t[i].end - t[i].start);
            ssize_t r = json_unescape(copy + t[i].start, len);
            assert(r <= (ssize_t)len);
        }
    }
    free(copy);
    return 0;
}
