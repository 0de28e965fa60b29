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
#include "net/loop.h"

static const char *methods[] = {"publish", "broadcast", "info", "channels", "history",
                                "history_remove", "subscribe", "unsubscribe", "disconnect",
                                "presence", "presence_stats", "nope"};

static struct config config;
static struct server server;
static struct loop loop;

static void setup(void)
{
    static const char json[] = "{\"max_channels\":64,\"namespaces\":{\"\":{},\"h\":{\"history_size\":4,"
                               "\"history_ttl\":60,\"recover\":true,\"presence\":true}}}";
    char err[200];
    if (config_load_json(&config, (const uint8_t *)json, sizeof(json) - 1, err, sizeof(err)) != 0)
        abort();
    server.config = &config;
    server.nloops = 0;
    loop.server = &server;
    hub_init(0, NULL, config.max_channels);
    engine_current = engine_open(&config, err, sizeof(err));
    if (engine_current == NULL)
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
    struct buf out = BUF_INIT;
    int status = api_handle(&loop, (const uint8_t *)m, strlen(m), body, size - 1, &out);
    if (status != 200 && status != 400 && status != 404)
        abort();
    /* Every answer is a JSON object. */
    if (out.len == 0 || out.p[0] != '{' || out.p[out.len - 1] != '}')
        abort();
    buf_free(&out);
    free(body);
    return 0;
}
