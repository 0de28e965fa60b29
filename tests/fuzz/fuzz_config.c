/* libFuzzer target for core/config: the JSON file stage (config_load_json, the same code that
 * loads --config FILE), then namespace look-ups with the input as a channel name. */
#include <stdint.h>
#include <string.h>

#include "core/config.h"

/* Fuzz-only entry point defined in src/core/config.c. */
int config_load_json(struct config *c, const uint8_t *p, size_t len, char *err, size_t errlen);

int LLVMFuzzerTestOneInput(const uint8_t *p, size_t len)
{
    struct config c;
    char err[256];
    if (config_load_json(&c, p, len, err, sizeof(err)) != 0) {
        if (memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0')
            __builtin_trap(); /* every refusal says why */
        return 0;
    }
    if (c.n_namespaces == 0 || c.namespaces[0].name[0] != '\0')
        __builtin_trap();
    if (config_namespace(&c, p, len > 80 ? 80 : len) == NULL && memchr(p, ':', len) == NULL)
        __builtin_trap(); /* channels without ':' always have the default namespace */
    config_free(&c);
    return 0;
}
