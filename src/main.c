/* herald command line: serve (default), genconfig, gentoken, version; and the wiring
 * of a server process: the loops, the engine, the hub, the HTTP and WebSocket sides,
 * signals. */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdint.h>
#include <unistd.h>
#include <uv.h>

#include "auth/jwt.h"
#include "auth/keys.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "core/rand.h"
#include "engine/engine.h"
#include "http/api.h"
#include "http/server.h"
#include "hub/hub.h"
#include "limit/node.h"
#include "metrics/metrics.h"
#include "net/fetch.h"
#include "net/loop.h"
#include "net/tls.h"
#include "pg/feed.h"
#include "proto/push.h"
#include "proto/session.h"
#include "proto/users.h"

#define HERALD_VERSION "0.1.0"
#ifndef HERALD_COMMIT
#define HERALD_COMMIT "unknown" /* the Makefile passes git's */
#endif

/* What one server process is made of. */
struct server {
    const struct config *config;
    struct net *net;
    struct engine *engine;
    struct loop *loops[LOOP_MAX];
    unsigned nloops;
    unsigned ticks; /* loop 0's */
};

#define ANNOUNCE_SEC 5
#define FDS_COUNT_MS 5000

static void on_count_fds(uv_timer_t *t)
{
    metrics_refresh_open_fds();
}

static void on_tick(struct loop *loop, void *ud)
{
    struct server *s = ud;
    log_tick(); /* summaries of the bad clients' lines held back last second */
    /* One loop does the engine's housekeeping: expired history, idle streams; then
     * hands the free memory of every malloc arena back to the system, so that a burst
     * (a large history answer, a flood that back-pressure stopped) does not stay in
     * herald's RSS for good. */
    if (loop_id(loop) == 0) {
        s->engine->ops->sweep(s->engine);
        malloc_trim(0);
        /* Every few seconds this node tells the others it is alive, and how it is. */
        if (s->ticks++ % ANNOUNCE_SEC == 0) {
            struct buf info = BUF_INIT;
            api_node_info(&info);
            if (!info.oom)
                hub_announce(api_node_uid(), info.p, info.len);
            buf_free(&info);
        }
    }
}

/* The engine's host: completions of a networked engine run on the loop that asked. */
static _Thread_local int current_slot = -1;

static void on_loop_start(struct loop *loop, void *ud)
{
    current_slot = (int)loop_id(loop);
    metrics_set_thread_slot(loop_id(loop));
}

static int host_current(void *ud)
{
    return current_slot;
}

static void run_posted(struct loop *loop, struct loop_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        void (*fn)(void *) = (void (*)(void *))(uintptr_t)msgs[i].u64;
        fn(msgs[i].ptr);
    }
}

static void *host_uv_loop(void *ud, int slot)
{
    struct server *s = ud;
    return slot >= 0 && (unsigned)slot < s->nloops ? loop_uv(s->loops[slot]) : NULL;
}

static int host_post(void *ud, int slot, void (*fn)(void *arg), void *arg)
{
    struct server *s = ud;
    if (slot < 0 || (unsigned)slot >= s->nloops)
        return -1;
    struct loop_msg m = {.handle = run_posted, .ptr = arg, .u64 = (uint64_t)(uintptr_t)fn};
    return loop_post(s->loops[slot], &m);
}

static void on_loop_exit(struct loop *loop, void *ud)
{
    session_loop_exit(loop);
    hub_loop_exit(loop);
    api_loop_exit();
}

/* /ready's body: {"status":"unavailable","unavailable":[{"name","reason"}, ...]}, every
 * store that does not answer listed, the engine's then PostgreSQL. */
struct unready {
    struct buf *out;
    unsigned n;
};

static void add_unready(struct unready *u, const char *name, const char *reason)
{
    buf_append_str(u->out, u->n++ ? ",{\"name\":"
                                  : "{\"status\":\"unavailable\",\"unavailable\":[{\"name\":");
    buf_append_json_str(u->out, (const uint8_t *)name, strlen(name));
    buf_append_str(u->out, ",\"reason\":");
    buf_append_json_str(u->out, (const uint8_t *)reason, strlen(reason));
    buf_append_char(u->out, '}');
}

static void on_store(void *ud, const char *name, const char *down_reason)
{
    if (down_reason)
        add_unready(ud, name, down_reason);
}

static int ready(struct buf *out)
{
    struct unready u = {out, 0};
    hub_stores(on_store, &u);
    char why[256];
    if (pg_feed_state(why, sizeof(why)) == 0)
        add_unready(&u, "postgres", why);
    if (u.n)
        buf_append_str(out, "]}");
    return u.n == 0;
}

static int start_websocket(struct conn *c, const struct limit_client *lc,
                           const uint8_t *query_token, size_t len, void *ud)
{
    if (session_start(c, lc) != 0)
        return -1;
    session_set_query_token(c, query_token, len);
    return 0;
}

/* The JWKS of token_jwks_url: fetched at start, every JWKS_REFRESH_MS, sooner when a
 * token names an unknown kid (auth/keys.h paces that); a failed fetch keeps the keys
 * there are and is retried with a growing delay. */
#define JWKS_MAX_BODY (1024 * 1024)
#define JWKS_TIMEOUT_MS 3000
#define JWKS_REFRESH_MS (10 * 60 * 1000)
#define JWKS_RETRY_MIN_MS 2000
#define JWKS_RETRY_MAX_MS (5 * 60 * 1000)

struct jwks_source {
    struct keys *keys;
    struct fetch *fetch;
    unsigned retry_ms;
    int loaded; /* a document was loaded once */
};

static unsigned on_jwks(void *ud, int status, const uint8_t *body, size_t len, const char *error)
{
    struct jwks_source *j = ud;
    char err[160];
    unsigned next;
    if (status == 200 && keys_load_jwks(j->keys, body, len, err, sizeof(err)) == 0) {
        if (j->retry_ms || !j->loaded)
            log_info("jwks_fetched", "token_jwks_url: %zu keys", keys_jwks_size(j->keys));
        j->retry_ms = 0;
        j->loaded = 1;
        next = JWKS_REFRESH_MS;
    } else {
        size_t have = keys_jwks_size(j->keys);
        if (status == 200)
            log_warn("jwks_failed", "token_jwks_url: %s; %zu cached keys kept", err, have);
        else if (status)
            log_warn("jwks_failed", "token_jwks_url: HTTP %d; %zu cached keys kept", status, have);
        else
            log_warn("jwks_failed", "token_jwks_url: %s; %zu cached keys kept", error, have);
        j->retry_ms = j->retry_ms ? j->retry_ms * 2 : JWKS_RETRY_MIN_MS;
        if (j->retry_ms > JWKS_RETRY_MAX_MS)
            j->retry_ms = JWKS_RETRY_MAX_MS;
        next = j->retry_ms;
    }
    keys_fetched(j->keys, loop_clock_ms());
    return next;
}

static void on_jwks_start(void *ud)
{
    struct jwks_source *j = ud;
    keys_fetch_starting(j->keys, loop_clock_ms());
}

static void jwks_soon(void *ud, unsigned delay_ms)
{
    fetch_soon(ud, delay_ms);
}

/* No more fetches: a connect that now meets an unknown kid is refused at once, and those
 * waiting are released (their completions go to the loops' inboxes). */
static void jwks_stop(struct jwks_source *j)
{
    keys_set_fetch(j->keys, NULL, NULL);
    fetch_stop(j->fetch);
    j->fetch = NULL;
    keys_fetched(j->keys, loop_clock_ms());
}

static void jwks_close(struct jwks_source *j)
{
    jwks_stop(j);
    keys_free(j->keys);
}

/* The token keys of the configuration; NULL (message logged) when a key is unusable. */
static struct keys *token_keys_open(const struct config *config)
{
    struct keys_config kc = {config->token_hmac_secret,
                             config->token_rsa_public_key,
                             config->token_ecdsa_public_key,
                             config->token_jwks_url != NULL,
                             config->token_audience,
                             config->token_issuer,
                             config->token_leeway};
    char err[200];
    struct keys *k = keys_new(&kc, err, sizeof(err));
    if (k == NULL)
        log_error("config_error", "%s", err);
    return k;
}

/* SIGHUP: the certificate and key are read again, for connections accepted from now
 * on (those open keep theirs); a pair that cannot be loaded leaves the current one. */
static void on_reload(uv_signal_t *h, int signum)
{
    struct server *s = h->data;
    const struct config *c = s->config;
    if (c->tls_cert == NULL) {
        log_info("reload_skipped", "SIGHUP: nothing to reload (tls_cert is not set)");
        return;
    }
    char err[512], what[512];
    struct tls_ctx *t = tls_ctx_load(c->tls_cert, c->tls_key, err, sizeof(err));
    if (t == NULL) {
        log_error("reload_failed", "SIGHUP: TLS not reloaded, the current certificate stays: %s",
                  err);
        return;
    }
    tls_ctx_describe(t, what, sizeof(what));
    net_set_tls(s->net, t);
    tls_ctx_unref(t);
    log_info("reloaded", "SIGHUP: TLS reloaded: %s", what);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *s = h->data;
    static int stopping;
    if (stopping++)
        return;
    log_info("shutting_down", "signal %d: shutting down", signum);
    pg_feed_stop();   /* nothing more is read from PostgreSQL; what was is published */
    net_stop(s->net); /* every client gets 3001; the loops end once their connections have */
    uv_stop(h->loop);
}

/* This process's node id: in every log line, and what the engine announces. */
static char node_uid[37];

/* Run until SIGTERM or SIGINT; then every client gets close code 3001, output is
 * flushed, and 0 is returned (or -1 if the server could not start: message logged). */
static int server_run(const struct config *config)
{
    struct server s = {.config = config};
    unsigned n = config->threads;
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (unsigned)cpus : 1;
    }
    if (n > LOOP_MAX)
        n = LOOP_MAX;
    signal(SIGPIPE, SIG_IGN);
    char ferr[320];
    if (pg_feed_check(config, ferr, sizeof(ferr)) != 0) {
        log_error("config_error", "%s", ferr);
        return -1;
    }
    struct jwks_source jwks = {token_keys_open(config), NULL, 0, 0};
    if (jwks.keys == NULL)
        return -1;
    if (config->token_jwks_url) {
        /* Before the loops start: libcurl's global set-up is not for concurrent threads. */
        struct fetch_config fc = {.url = config->token_jwks_url,
                                  .max_body = JWKS_MAX_BODY,
                                  .timeout_ms = JWKS_TIMEOUT_MS,
                                  .done = on_jwks,
                                  .start = on_jwks_start,
                                  .ud = &jwks};
        jwks.fetch = fetch_start(&fc, ferr, sizeof(ferr));
        if (jwks.fetch == NULL) {
            log_error("config_error", "token_jwks_url: %s", ferr);
            keys_free(jwks.keys);
            return -1;
        }
        keys_set_fetch(jwks.keys, jwks_soon, jwks.fetch);
    }
    session_set_keys(jwks.keys);
    /* Large buffers (a big reply, a history answer) come from mmap and go back to the
     * system when freed: a fixed threshold stops glibc from raising it after the first
     * one and serving the next from the heap, where freed memory stays resident. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    if (metrics_init(n) != 0) {
        jwks_close(&jwks);
        return -1;
    }
    /* Before the listeners: a certificate that cannot serve is refused at once. */
    struct tls_ctx *tls = NULL;
    if (config->tls_cert) {
        char terr[512], what[512];
        tls = tls_ctx_load(config->tls_cert, config->tls_key, terr, sizeof(terr));
        if (tls == NULL) {
            log_error("config_error", "%s", terr);
            jwks_close(&jwks);
            return -1;
        }
        tls_ctx_describe(tls, what, sizeof(what));
        log_info("tls_loaded", "tls: %s", what);
    }
    struct net_config nc = {
        .host = config->listen_host,
        .port = config->listen_port,
        .nloops = n,
        .client_queue_max = config->client_queue_max,
        /* A request head and body (http/server.c keeps both until the call), or a
         * WebSocket message being reassembled, with room for the next one's start. */
        .input_max = (uint64_t)config->max_request_head + config->max_request_body +
                     config->max_message_size + 65536,
        .tls = tls,
        .tls_handshake_timeout = config->handshake_timeout,
        .client_queue_total_max = config->client_queue_total_max,
        .accept = http_accept,
        .tick = on_tick,
        .loop_start = on_loop_start,
        .loop_exit = on_loop_exit,
        .ud = &s,
        .metrics_host = config->metrics_listen_host,
        .metrics_port = config->metrics_listen_port,
        .metrics_accept = http_metrics_accept,
    };
    s.net = net_create(&nc);
    tls_ctx_unref(tls); /* the loops hold theirs */
    if (s.net == NULL) {
        jwks_close(&jwks);
        return -1;
    }
    s.nloops = net_nloops(s.net);
    for (unsigned i = 0; i < s.nloops; i++)
        s.loops[i] = net_loop(s.net, i);
    struct hub_callbacks hc = {proto_push_publication, proto_push_join_leave, session_slow,
                               session_lost, session_control_apply};
    if (hub_init(s.nloops, s.loops, config->max_channels, &hc) != 0) {
        net_join_and_free(s.net);
        jwks_close(&jwks);
        return -1;
    }
    char err[160];
    struct engine_events ev = hub_engine_events();
    struct engine_host host = {host_current, host_post, host_uv_loop, &s};
    s.engine = engine_open(config, &ev, &host, err, sizeof(err));
    if (s.engine == NULL) {
        log_error("start_failed", "%s", err);
        net_join_and_free(s.net);
        hub_shutdown();
        jwks_close(&jwks);
        return -1;
    }
    hub_set_engine(s.engine);
    if (limit_init(config, s.engine, err, sizeof(err)) != 0) {
        log_error("start_failed", "%s", err);
        engine_close(s.engine);
        net_join_and_free(s.net);
        hub_shutdown();
        return -1;
    }
    session_init(config, s.loops, s.nloops);
    struct api_context ac = {config, s.loops, s.nloops, loop_clock_ms(), "", pg_feed_state};
    memcpy(ac.node_uid, node_uid, sizeof(ac.node_uid));
    api_init(&ac);
    struct http_server_config hsc = {config, start_websocket, ready, &s};
    http_init(&hsc);
    struct metrics_sources ms = {
        .version = HERALD_VERSION,
        .commit = HERALD_COMMIT,
        .start_ms = ac.start_ms,
        .now_ms = loop_clock_ms,
        .users = users_count,
        .channels = hub_channel_count,
        .history = strcmp(config->engine, "memory") == 0,
        .feed = config->feed.n_tables > 0,
    };
    metrics_set_sources(&ms);
    if (ms.history) {
        /* The memory engine is always up: one shard, named so. */
        metrics_engine_up(0, 1);
        metrics_engine_shard(0, "memory");
    }

    uv_loop_t *main_loop = uv_default_loop();
    uv_signal_t sigterm, sigint, sighup;
    uv_signal_init(main_loop, &sigterm);
    uv_signal_init(main_loop, &sigint);
    uv_signal_init(main_loop, &sighup);
    sigterm.data = sigint.data = sighup.data = &s;
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sighup, on_reload, SIGHUP);
    /* process_open_fds is counted here, off the loops (metrics.h). */
    uv_timer_t fds_timer;
    uv_timer_init(main_loop, &fds_timer);
    uv_timer_start(&fds_timer, on_count_fds, 0, FDS_COUNT_MS);
    uv_unref((uv_handle_t *)&fds_timer);

    if (net_run(s.net) != 0) {
        log_error("start_failed", "cannot start the loop threads");
        return -1;
    }
    log_info("listening", "herald listening on %s:%u with %u loops%s", config->listen_host,
             config->listen_port, s.nloops, config->tls_cert ? " (TLS)" : "");
    if (pg_feed_start(config) != 0)
        log_error("start_failed", "change feed: cannot start its thread");
    /* The main thread only waits for signals. */
    uv_run(main_loop, UV_RUN_DEFAULT);
    pg_feed_stop();
    /* Before the loops end, so that commands waiting for the JWKS finish on their loop (or,
     * for a loop already ended, in net_free). */
    jwks_stop(&jwks);
    net_join(s.net);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_close((uv_handle_t *)&sighup, NULL);
    uv_close((uv_handle_t *)&fds_timer, NULL);
    uv_run(main_loop, UV_RUN_NOWAIT);
    engine_close(s.engine); /* its last completions wait in the loops' inboxes */
    hub_set_engine(NULL);   /* and must not call it: they run in net_free */
    limit_engine_gone();
    net_free(s.net);
    hub_shutdown();
    limit_shutdown();
    metrics_free();
    keys_free(jwks.keys);
    log_info("stopped", "herald stopped");
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: herald [serve] [--config FILE] [--key value ...]   run the server\n"
            "       herald genconfig [-o FILE]                        write a config with fresh "
            "secrets\n"
            "       herald gentoken --config FILE --user ID [--ttl SECONDS] [--channel CH]\n"
            "                                                         print a connection token\n"
            "                                                         (a subscription token with "
            "--channel)\n"
            "       herald pg sql --config FILE                         print the SQL that sets "
            "up\n"
            "                                                         the change feed\n"
            "       herald version\n"
            "Every config key is also a flag (--listen 127.0.0.1:8000) and an environment\n"
            "variable (HERALD_LISTEN); see docs/configuration.md.\n");
}

static int cmd_genconfig(int argc, char **argv)
{
    FILE *out = stdout;
    if (argc >= 2 && (strcmp(argv[0], "-o") == 0 || strcmp(argv[0], "--output") == 0)) {
        out = fopen(argv[1], "wx");
        if (out == NULL) {
            fprintf(stderr, "herald genconfig: cannot create %s (it must not exist yet)\n",
                    argv[1]);
            return 1;
        }
    } else if (argc > 0) {
        usage(stderr);
        return 2;
    }
    int rc = config_generate(out);
    if (out != stdout)
        fclose(out);
    return rc == 0 ? 0 : 1;
}

static int cmd_gentoken(int argc, char **argv)
{
    const char *user = NULL, *channel = NULL;
    long long ttl = 0;
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0;
    if (rest == NULL)
        return 1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--user") == 0 && i + 1 < argc)
            user = argv[++i];
        else if (strcmp(argv[i], "--channel") == 0 && i + 1 < argc)
            channel = argv[++i];
        else if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc) {
            char *end;
            ttl = strtoll(argv[++i], &end, 10);
            if (*end || ttl < 0) {
                fprintf(stderr, "herald gentoken: --ttl: expected seconds\n");
                free(rest);
                return 2;
            }
        } else
            rest[nrest++] = argv[i];
    }
    if (user == NULL) {
        fprintf(stderr, "herald gentoken: --user ID is required\n");
        free(rest);
        return 2;
    }
    struct config c;
    char err[256];
    if (config_load(&c, nrest, rest, err, sizeof(err)) != 0) {
        fprintf(stderr, "herald gentoken: %s\n", err);
        free(rest);
        return 2;
    }
    free(rest);
    if (c.token_hmac_secret == NULL) {
        fprintf(stderr, "herald gentoken: token_hmac_secret is not set\n");
        config_free(&c);
        return 2;
    }
    struct buf payload = BUF_INIT;
    buf_append_str(&payload, "{\"sub\":");
    buf_append_json_str(&payload, (const uint8_t *)user, strlen(user));
    if (channel) {
        buf_append_str(&payload, ",\"channel\":");
        buf_append_json_str(&payload, (const uint8_t *)channel, strlen(channel));
    }
    long long now = (long long)time(NULL);
    buf_appendf(&payload, ",\"iat\":%lld", now);
    if (ttl > 0)
        buf_appendf(&payload, ",\"exp\":%lld", now + ttl);
    buf_append_char(&payload, '}');
    char *token = jwt_sign_hs256(payload.p, payload.len, (const uint8_t *)c.token_hmac_secret,
                                 strlen(c.token_hmac_secret));
    buf_free(&payload);
    config_free(&c);
    if (token == NULL)
        return 1;
    printf("%s\n", token);
    free(token);
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    struct config c;
    char err[256];
    if (config_load(&c, argc, argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "herald: %s\n", err);
        return 2;
    }
    if (limit_check_config(&c, err, sizeof(err)) != 0) {
        fprintf(stderr, "herald: %s\n", err);
        config_free(&c);
        return 2;
    }
    log_format = c.log_format;
    log_min_level = c.log_level;
    rand_uuid(node_uid);
    log_set_node(node_uid);
    hub_set_node(node_uid);
    if (c.token_hmac_secret == NULL && c.token_rsa_public_key == NULL &&
        c.token_ecdsa_public_key == NULL && c.token_jwks_url == NULL && !c.allow_anonymous)
        log_warn("no_token_key",
                 "no token key is set (token_hmac_secret, token_rsa_public_key, "
                 "token_ecdsa_public_key, token_jwks_url) and allow_anonymous is off: no client "
                 "can connect (run: herald genconfig -o herald.json)");
    if (c.api_key == NULL && c.n_api_keys == 0)
        log_warn("no_api_key", "api_key is not set: the server API answers 401 to everything");
    int rc = server_run(&c);
    config_free(&c);
    return rc == 0 ? 0 : 1;
}

/* herald pg sql: the change feed's setup, for a database user that may run DDL. */
static int cmd_pg(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "sql") != 0) {
        fprintf(stderr, "usage: herald pg sql --config FILE\n");
        return 2;
    }
    struct config c;
    char err[256];
    if (config_load(&c, argc - 1, argv + 1, err, sizeof(err)) != 0) {
        fprintf(stderr, "herald pg sql: %s\n", err);
        return 2;
    }
    if (c.feed.n_tables == 0) {
        fprintf(stderr, "herald pg sql: change_feed has no tables\n");
        config_free(&c);
        return 2;
    }
    pg_feed_sql(&c, stdout);
    config_free(&c);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2) {
        const char *cmd = argv[1];
        if (strcmp(cmd, "genconfig") == 0)
            return cmd_genconfig(argc - 2, argv + 2);
        if (strcmp(cmd, "pg") == 0)
            return cmd_pg(argc - 2, argv + 2);
        if (strcmp(cmd, "gentoken") == 0)
            return cmd_gentoken(argc - 2, argv + 2);
        if (strcmp(cmd, "serve") == 0)
            return cmd_serve(argc - 2, argv + 2);
        if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
            printf("herald 0.1.0\n");
            return 0;
        }
        if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
            usage(stdout);
            return 0;
        }
    }
    return cmd_serve(argc - 1, argv + 1);
}
