/* Fuzz target: the client protocol session (proto/session.c) with hostile text
 * messages, on a real connection object over a socketpair and the memory engine.
 * Input: text messages separated by 0xFF bytes (0xFF never occurs in UTF-8), each
 * handed to session_on_text as a WebSocket text message would be. Anonymous connect
 * is allowed so that every command is reachable. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/config.h"
#include "core/frame.h"
#include "engine/engine.h"
#include "hub/hub.h"
#include "net/conn.h"
#include "net/loop.h"
#include "proto/session.h"

static struct config config;
static struct server server;
static struct loop *lp;

static void on_wake(uv_async_t *h)
{
}

static void setup(void)
{
    static const char json[] =
        "{\"allow_anonymous\":true,\"token_hmac_secret\":\"fuzz\",\"client_queue_max\":65536,"
        "\"namespaces\":{\"\":{\"client_publish\":true},"
        "\"h\":{\"history_size\":8,\"history_ttl\":60,\"recover\":true,\"presence\":true,"
        "\"join_leave\":true,\"client_publish\":true},\"p\":{\"private\":true}}}";
    char err[200];
    if (config_load_json(&config, (const uint8_t *)json, sizeof(json) - 1, err, sizeof(err)) != 0)
        abort();
    lp = calloc(1, sizeof(*lp));
    lp->server = &server;
    lp->now_sec = 1;
    lp->hub = hub_local_new();
    uv_loop_init(&lp->uv);
    uv_async_init(&lp->uv, &lp->wake, on_wake);
    pthread_mutex_init(&lp->inbox_lock, NULL);
    server.config = &config;
    server.nloops = 1;
    server.loops[0] = lp;
    hub_init(1, server.loops, 1000000);
    session_global_init(&server);
    engine_current = engine_open(&config, err, sizeof(err));
    if (engine_current == NULL)
        abort();
}

/* What the loop's wake-up does: deliver what the session posted to this loop. */
static void drain_inbox(void)
{
    pthread_mutex_lock(&lp->inbox_lock);
    struct loop_msg *batch = lp->inbox;
    size_t n = lp->inbox_len;
    lp->inbox = NULL;
    lp->inbox_len = lp->inbox_cap = 0;
    pthread_mutex_unlock(&lp->inbox_lock);
    for (size_t i = 0; i < n; i++) {
        if (batch[i].type == LOOP_MSG_PUBLICATION)
            hub_deliver(lp, &batch[i], 1);
        else
            session_on_control(lp, &batch[i]);
    }
    free(batch);
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
    if (c == NULL || session_new(c) != 0)
        abort();
    c->state = CONN_WS;
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    size_t start = 0;
    while (start <= size && !c->closed) {
        uint8_t *sep = memchr(copy + start, 0xFF, size - start);
        size_t end = sep ? (size_t)(sep - copy) : size;
        if (c->state == CONN_WS)
            session_on_text(c, copy + start, end - start);
        drain_inbox();
        start = end + 1;
    }
    free(copy);
    if (!c->closed)
        conn_abort(c);
    drain_inbox();
    uv_run(&lp->uv, UV_RUN_NOWAIT); /* the close callback frees the connection */
    close(fds[1]);
    return 0;
}
