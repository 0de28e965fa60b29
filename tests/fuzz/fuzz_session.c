/* Fuzz target: the client protocol session (proto/session.c) with hostile text
 * messages, on a real connection object over a socketpair, the hub and the memory
 * engine. Input: text messages separated by 0xFF bytes (0xFF never occurs in UTF-8),
 * each handed to session_on_text as a WebSocket text message would be. Anonymous
 * connect is allowed so that every command is reachable. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth/keys.h"
#include "core/config.h"
#include "engine/engine.h"
#include "hub/hub.h"
#include "limit/node.h"
#include "metrics/metrics.h"
#include "net/conn.h"
#include "net/internal.h"
#include "net/loop.h"
#include "proto/push.h"
#include "proto/session.h"

static struct config config;
static struct net *net;
static struct loop *lp;

static void accept_nothing(struct conn *c, void *ud)
{
}

static void setup(void)
{
    static const char json[] =
        "{\"allow_anonymous\":true,\"token_hmac_secret\":\"fuzz\",\"client_queue_max\":65536,"
        "\"max_channels\":64,\"namespaces\":{\"\":{\"client_publish\":true},"
        "\"h\":{\"history_size\":8,\"history_ttl\":60,\"recover\":true,\"presence\":true,"
        "\"join_leave\":true,\"client_publish\":true},\"p\":{\"private\":true}}}";
    char err[200];
    if (config_load_json(&config, (const uint8_t *)json, sizeof(json) - 1, err, sizeof(err)) != 0)
        abort();
    if (metrics_init(1) != 0)
        abort();
    /* One loop that is never run as a thread: the fuzzer drives it. */
    struct net_config nc = {.host = "127.0.0.1",
                            .nloops = 1,
                            .client_queue_max = config.client_queue_max,
                            .accept = accept_nothing};
    net = net_create(&nc);
    if (net == NULL)
        abort();
    lp = net_loop(net, 0);
    struct hub_callbacks hc = {proto_push_publication, proto_push_join_leave, session_slow, session_lost,
                               session_control_apply};
    hub_init(1, &lp, config.max_channels, &hc);
    struct engine_events ev = hub_engine_events();
    struct engine *e = engine_open(&config, &ev, NULL, err, sizeof(err));
    if (e == NULL)
        abort();
    hub_set_engine(e);
    if (limit_init(&config, e, err, sizeof(err)) != 0)
        abort();
    session_init(&config, &lp, 1);
    struct keys_config kc = {.hmac_secret = config.token_hmac_secret};
    struct keys *k = keys_new(&kc, err, sizeof(err));
    if (k == NULL)
        abort();
    session_set_keys(k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) != 0)
        return 0;
    struct conn *c = conn_new(lp, fds[0]);
    if (c == NULL || session_start(c, NULL) != 0)
        abort();
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    size_t start = 0;
    while (start <= size && !conn_closing(c)) {
        uint8_t *sep = memchr(copy + start, 0xFF, size - start);
        size_t end = sep ? (size_t)(sep - copy) : size;
        session_on_text(c, copy + start, end - start);
        /* What the loop's wake-up does: deliver what was posted to this loop. */
        uv_run(&lp->uv, UV_RUN_NOWAIT);
        start = end + 1;
    }
    free(copy);
    conn_abort(c);
    uv_run(&lp->uv, UV_RUN_NOWAIT); /* deliveries, and the close callback frees c */
    close(fds[1]);
    return 0;
}
