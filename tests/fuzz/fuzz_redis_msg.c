/* libFuzzer target for engine/redis_msg.c: any bytes parse or are refused, and what
 * parses lies inside the message and, sent again the way herald sends it, parses the same. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/redis_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy, so that ASan sees any read past the end. */
    char *m = malloc(size ? size : 1);
    if (m == NULL)
        return 0;
    memcpy(m, data, size);
    struct redis_msg msg;
    if (redis_msg_parse(m, size, &msg) == 0) {
        if (msg.info_len && (msg.info < m || msg.info + msg.info_len > m + size))
            abort();
        if (msg.type == REDIS_MSG_PUBLICATION) {
            if (msg.data < m || msg.data + msg.data_len != m + size)
                abort();
            size_t n = msg.info_len + msg.data_len + 48;
            char *again = malloc(n);
            if (again == NULL) {
                free(m);
                return 0;
            }
            int h = snprintf(again, n, "p%llu %zu ", (unsigned long long)msg.offset, msg.info_len);
            memcpy(again + h, msg.info, msg.info_len);
            memcpy(again + h + msg.info_len, msg.data, msg.data_len);
            struct redis_msg back;
            size_t len = (size_t)h + msg.info_len + msg.data_len;
            if (redis_msg_parse(again, len, &back) != 0 || back.offset != msg.offset ||
                back.info_len != msg.info_len || back.data_len != msg.data_len ||
                memcmp(back.info, msg.info, msg.info_len) != 0 ||
                memcmp(back.data, msg.data, msg.data_len) != 0)
                abort();
            free(again);
        }
    }
    free(m);
    return 0;
}
