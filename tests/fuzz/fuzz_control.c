/* Fuzz target: the node-to-node control messages as they come from the engine (another
 * node's, through Redis): a session's controls (disconnect, subscribe, unsubscribe a
 * user) and a survey's request and reply, on one loop the fuzzer drives, with the
 * memory engine (whose controls come straight back, so a request's reply is parsed
 * too). The input is also taken as a reply and, when whole, its channels merged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "engine/engine.h"
#include "hub/hub.h"
#include "hub/survey.h"
#include "metrics/metrics.h"
#include "net/internal.h"
#include "net/loop.h"
#include "proto/push.h"
#include "proto/session.h"

static struct config config;
static struct loop *lp;
static struct engine_events events;

static void accept_nothing(struct conn *c, void *ud)
{
}

static void setup(void)
{
    static const char json[] = "{\"max_channels\":64,\"namespaces\":{\"\":{}}}";
    char err[200];
    if (config_load_json(&config, (const uint8_t *)json, sizeof(json) - 1, err, sizeof(err)) != 0)
        abort();
    if (metrics_init(1) != 0)
        abort();
    struct net_config nc = {.host = "127.0.0.1",
                            .nloops = 1,
                            .client_queue_max = config.client_queue_max,
                            .accept = accept_nothing};
    struct net *net = net_create(&nc);
    if (net == NULL)
        abort();
    lp = net_loop(net, 0);
    struct hub_callbacks hc = {proto_push_publication, proto_push_join_leave, session_slow,
                               session_lost, session_control_apply};
    hub_set_node("00000000-0000-4000-8000-000000000000");
    hub_init(1, &lp, config.max_channels, &hc);
    events = hub_engine_events();
    struct engine *e = engine_open(&config, &events, NULL, err, sizeof(err));
    if (e == NULL)
        abort();
    hub_set_engine(e);
    session_init(&config, &lp, 1);
}

/* Merged channels are sorted by name with no name twice. */
static void on_merged(void *ud, int status, const struct hub_channel_count *chs, size_t n)
{
    for (size_t i = 1; status == 0 && i < n; i++) {
        size_t m = chs[i - 1].len < chs[i].len ? chs[i - 1].len : chs[i].len;
        int c = memcmp(chs[i - 1].name, chs[i].name, m);
        if (c > 0 || (c == 0 && chs[i - 1].len >= chs[i].len))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    events.control(events.ud, copy, size);
    for (int i = 0; i < 3; i++) /* the request, its reply, anything they posted */
        uv_run(&lp->uv, UV_RUN_NOWAIT);
    struct survey_reply rep;
    if (survey_parse_reply(copy, size, &rep) == 0)
        survey_merge(rep.entries, rep.entries_len, on_merged, NULL);
    free(copy);
    return 0;
}
