/* libFuzzer target for engine/redis_cluster.c: any bytes, read as RESP the way the engine
 * reads a reply, make a CLUSTER SLOTS map or are refused; read as an error's text, a
 * redirect or a refusal; and a key's slot is always one of the 16384. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/redis_cluster.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *m = malloc(size ? size : 1); /* exact size: ASan sees a read past the end */
    if (m == NULL)
        return 0;
    memcpy(m, data, size);
    if (redis_key_slot(m, size) >= REDIS_CLUSTER_SLOTS)
        abort();
    struct redis_redirect to;
    if (redis_redirect_parse(m, size, &to) == 0 &&
        (to.slot >= REDIS_CLUSTER_SLOTS || to.to.port == 0 ||
         strlen(to.to.host) >= sizeof(to.to.host)))
        abort();
    redisReader *rd = redisReaderCreate();
    if (rd && redisReaderFeed(rd, m, size) == REDIS_OK) {
        void *reply = NULL;
        if (redisReaderGetReply(rd, &reply) == REDIS_OK && reply) {
            struct redis_slot_range out[64];
            int n = redis_slots_parse(reply, out, 64);
            for (int i = 0; i < n; i++)
                if (out[i].start > out[i].end || out[i].end >= REDIS_CLUSTER_SLOTS ||
                    out[i].master.port == 0)
                    abort();
            freeReplyObject(reply);
        }
    }
    if (rd)
        redisReaderFree(rd);
    free(m);
    return 0;
}
