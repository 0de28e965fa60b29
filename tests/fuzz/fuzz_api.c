/* Fuzz target: the server API handlers with hostile bodies (first byte picks the
 * method). Runs against the memory engine with no loops, so publications go
 * nowhere but history, presence and the channel table are exercised. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/config.h"
#include "engine/engine.h"
#include "http/api.h"
#include "hub/hub.h"
#include "metrics/metrics.h"
#include "proto/push.h"
#include "proto/session.h"

static const char *methods[] = {"publish", "broadcast", "info", "channels", "history",
                                "history_remove", "subscribe", "unsubscribe", "disconnect",
                                "presence", "presence_stats", "nope", "batch"};

static struct config config;

static void setup(void)
{
    static const char json[] = "{\"max_channels\":64,\"namespaces\":{\"\":{},\"h\":{\"history_size\":4,"
                               "\"history_ttl\":60,\"recover\":true,\"presence\":true}}}";
    char err[200];
    if (config_load_json(&config, (const uint8_t *)json, sizeof(json) - 1, err, sizeof(err)) != 0)
        abort();
    if (metrics_init(1) != 0)
        abort();
    struct hub_callbacks hc = {proto_push_publication, proto_push_join_leave, session_slow, session_lost,
                               session_control_apply};
    hub_init(0, NULL, config.max_channels, &hc);
    struct engine_events ev = hub_engine_events();
    struct engine *e = engine_open(&config, &ev, NULL, err, sizeof(err));
    if (e == NULL)
        abort();
    hub_set_engine(e);
    struct api_context ctx = {&config, NULL, 0, 0, "fuzz"};
    api_init(&ctx);
}

/* The answer: every one is a JSON object, with one of the statuses api.h names. */
static void on_done(void *ud, int status, const uint8_t *body, size_t len)
{
    int *answered = ud;
    (*answered)++;
    if (status != 200 && status != 400 && status != 404 && status != 500)
        abort();
    if (len == 0 || body[0] != '{' || body[len - 1] != '}')
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size == 0)
        return 0;
    const char *m = methods[data[0] % (sizeof(methods) / sizeof(methods[0]))];
    uint8_t *body = malloc(size - 1 ? size - 1 : 1);
    memcpy(body, data + 1, size - 1);
    int answered = 0;
    api_handle((const uint8_t *)m, strlen(m), body, size - 1, on_done, &answered);
    if (answered != 1) /* exactly once, before returning with the memory engine */
        abort();
    free(body);
    return 0;
}
