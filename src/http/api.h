/* Server API handlers: POST /api/<method> with a JSON body, as Centrifugo's HTTP API
 * (publish, broadcast, info, channels, history, presence, ...). Not the HTTP
 * transport (http/server.h). */
#ifndef HERALD_HTTP_API_H
#define HERALD_HTTP_API_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct loop;

/* What the handlers need of the process (borrowed for its life). */
struct api_context {
    const struct config *config;
    struct loop *const *loops; /* every loop, for a user's connections */
    unsigned nloops;
    uint64_t start_ms; /* loop_clock_ms() at start, for uptime */
    char node_uid[37];
    /* The change feed's PostgreSQL, for info (pg_feed_state, passed in by main.c so that
     * http/ does not depend on pg/): 1 up, 0 down with why in reason, -1 no feed. NULL:
     * no feed. */
    int (*database)(char *reason, size_t len);
};

/* Once, before the loops run. The context is copied (its loops array is borrowed). */
void api_init(const struct api_context *ctx);
/* On each loop thread as it ends: free what the thread kept for the next request. */
void api_loop_exit(void);

/* This node's info object (as /api/info lists it), appended to out; its uid. */
struct buf;
void api_node_info(struct buf *out);
const char *api_node_uid(void);

/* Is method[0..len) one of the server API's methods? */
int api_method_known(const uint8_t *method, size_t len);

/* The answer: HTTP status and a JSON body, borrowed for the call. */
typedef void (*api_done_cb)(void *ud, int status, const uint8_t *body, size_t len);

/* Run method on body (modifiable, borrowed for the call). done is called exactly once,
 * on this thread (before api_handle returns with the memory engine): 200 with a result
 * or an error object, 400 when the body is not UTF-8 JSON (nested deeper than
 * JSON_MAX_DEPTH included), 404 for an unknown method. */
void api_handle(const uint8_t *method, size_t method_len, uint8_t *body, size_t body_len,
                api_done_cb done, void *ud);

#endif
