/* The memory engine: streams and presence live in the hub's sharded channel table
 * of this process (hub/hub.c), so that assigning an offset, keeping the publication
 * in history and handing it to the loops happen under one lock. One node only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "engine/engine.h"

struct engine *engine_current;

static int memory_publish(struct engine *e, const uint8_t *ch, size_t len, const struct ns_opts *ns,
                          const uint8_t *data, size_t data_len, const uint8_t *info,
                          size_t info_len, struct hub_stream_pos *pos)
{
    return hub_publish(ch, len, ns, data, data_len, info, info_len, pos);
}

static int memory_history(struct engine *e, const uint8_t *ch, size_t len, const struct ns_opts *ns,
                          int64_t limit, int has_since, uint64_t since_offset,
                          const uint8_t *since_epoch, size_t since_epoch_len, int reverse,
                          struct buf *out, struct hub_stream_pos *pos)
{
    return hub_history(ch, len, ns, limit, has_since, since_offset, since_epoch, since_epoch_len,
                       reverse, out, pos);
}

static void memory_history_remove(struct engine *e, const uint8_t *ch, size_t len)
{
    hub_history_remove(ch, len);
}

static int memory_presence(struct engine *e, const uint8_t *ch, size_t len,
                           const struct ns_opts *ns, struct buf *out, uint64_t *num_clients,
                           uint64_t *num_users)
{
    return hub_presence(ch, len, ns, out, num_clients, num_users);
}

static void memory_close(struct engine *e)
{
    free(e);
}

static const struct engine_ops memory_ops = {
    "memory", memory_publish, memory_history, memory_history_remove, memory_presence, memory_close,
};

struct engine *engine_open(const struct config *config, char *err, size_t errlen)
{
    if (strcmp(config->engine, "memory") != 0) {
        snprintf(err, errlen, "engine: %s is not available in this build", config->engine);
        return NULL;
    }
    struct engine *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        snprintf(err, errlen, "engine: out of memory");
        return NULL;
    }
    e->ops = &memory_ops;
    return e;
}

void engine_close(struct engine *e)
{
    if (e)
        e->ops->close(e);
}
