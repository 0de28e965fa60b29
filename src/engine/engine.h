/* The engine: the seam between one node and many. It owns channel streams
 * (offsets, epochs, history), presence, and node-to-node delivery of publications.
 * `memory` (engine/memory.c) is the embedded default: one node, streams in this
 * process, delivery straight into the hub. A `redis` engine implements the same
 * operations and runs the same tests (tests/unit/test_engine.c). */
#ifndef HERALD_ENGINE_ENGINE_H
#define HERALD_ENGINE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "hub/hub.h"

struct config;
struct ns_opts;
struct buf;
struct engine;

struct engine_ops {
    const char *name;
    /* Publish raw JSON data (borrowed) with the publisher's ClientInfo (or NULL).
     * Returns 1 with pos filled when the namespace keeps history, 0 when it does not,
     * -1 on failure. Every subscriber on every node receives it, in offset order. */
    int (*publish)(struct engine *e, const uint8_t *ch, size_t len, const struct ns_opts *ns,
                   const uint8_t *data, size_t data_len, const uint8_t *info, size_t info_len,
                   struct hub_stream_pos *pos);
    /* History query; see hub_history for the arguments. 0, -108, -112 or -100. */
    int (*history)(struct engine *e, const uint8_t *ch, size_t len, const struct ns_opts *ns,
                   int64_t limit, int has_since, uint64_t since_offset, const uint8_t *since_epoch,
                   size_t since_epoch_len, int reverse, struct buf *out,
                   struct hub_stream_pos *pos);
    void (*history_remove)(struct engine *e, const uint8_t *ch, size_t len);
    /* Presence members ({"client":ClientInfo,...} without braces) and counts. 0 or -108. */
    int (*presence)(struct engine *e, const uint8_t *ch, size_t len, const struct ns_opts *ns,
                    struct buf *out, uint64_t *num_clients, uint64_t *num_users);
    void (*close)(struct engine *e);
};

struct engine {
    const struct engine_ops *ops;
    void *state;
};

/* Open the engine the config names ("memory"). Returns NULL with a message in err. */
struct engine *engine_open(const struct config *config, char *err, size_t errlen);
void engine_close(struct engine *e);

/* The engine of this process (set by server_run). */
extern struct engine *engine_current;

#endif
