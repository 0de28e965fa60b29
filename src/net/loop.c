/* Event-loop threads, listeners, the cross-thread inbox, the flush of dirty
 * connections and the timer wheel (see loop.h). */
#include "net/loop.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/frame.h"
#include "core/log.h"
#include "core/rand.h"
#include "engine/engine.h"
#include "hub/hub.h"
#include "net/conn.h"
#include "proto/session.h"

static _Thread_local struct loop *current_loop;

struct loop *loop_current(void)
{
    return current_loop;
}

uint64_t server_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One listening socket per loop with SO_REUSEPORT: the kernel spreads new
 * connections over the loops, so no loop hands connections to another. */
static int listen_socket(const char *host, uint16_t port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        log_error("listen: %s is not an IPv4 address", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 4096) != 0) {
        log_error("listen %s:%u: %s", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void on_accept(uv_poll_t *h, int status, int events)
{
    struct loop *l = h->data;
    if (status < 0 || l->shutting_down)
        return;
    for (int i = 0; i < 128; i++) {
        int fd = accept4(l->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: the pending connection stays in the backlog and the
                 * listener stays readable, so a level-triggered poll would spin. Stop
                 * accepting until the next tick (one second). */
                log_warn("accept: %s (connections: %lu); pausing accepts for a second",
                         strerror(errno), (unsigned long)atomic_load(&l->stats.connections));
                uv_poll_stop(&l->listen_poll);
                l->accept_paused = 1;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_new(l, fd);
    }
}

int loop_post(struct loop *l, const struct loop_msg *msg)
{
    pthread_mutex_lock(&l->inbox_lock);
    if (l->inbox_len == l->inbox_cap) {
        size_t cap = l->inbox_cap ? l->inbox_cap * 2 : 256;
        struct loop_msg *p = realloc(l->inbox, cap * sizeof(*p));
        if (p == NULL) {
            pthread_mutex_unlock(&l->inbox_lock);
            return -1;
        }
        l->inbox = p;
        l->inbox_cap = cap;
    }
    l->inbox[l->inbox_len++] = *msg;
    int first = l->inbox_len == 1;
    pthread_mutex_unlock(&l->inbox_lock);
    /* One wake-up per batch: later posts find the loop already signalled. */
    if (first)
        uv_async_send(&l->wake);
    return 0;
}

static void loop_begin_shutdown(struct loop *l);

static int same_channel(const struct loop_msg *a, const struct loop_msg *b)
{
    return b->type == LOOP_MSG_PUBLICATION && a->arg == b->arg &&
           memcmp(a->frame->data + a->frame->len, b->frame->data + b->frame->len, a->arg) == 0;
}

static void on_wake(uv_async_t *h)
{
    struct loop *l = h->data;
    for (;;) {
        /* Swap the inbox with the spare array: the lock is held for two swaps. */
        pthread_mutex_lock(&l->inbox_lock);
        struct loop_msg *batch = l->inbox;
        size_t n = l->inbox_len, batch_cap = l->inbox_cap;
        l->inbox = l->work;
        l->inbox_cap = l->work_cap;
        l->inbox_len = 0;
        l->work = batch;
        l->work_cap = batch_cap;
        pthread_mutex_unlock(&l->inbox_lock);
        if (n == 0)
            return;
        for (size_t i = 0; i < n; i++) {
            struct loop_msg *m = &batch[i];
            switch (m->type) {
            case LOOP_MSG_PUBLICATION: {
                /* A run of publications of one channel is delivered as one. */
                size_t run = 1;
                while (i + run < n && run < 1024 && same_channel(m, &batch[i + run]))
                    run++;
                hub_deliver(l, m, run);
                i += run - 1;
                break;
            }
            case LOOP_MSG_SHUTDOWN:
                loop_begin_shutdown(l);
                break;
            default:
                session_on_control(l, m);
                break;
            }
        }
    }
}

/* Write coalescing: when a flush has to write to many connections (a fan-out) and
 * the previous one ended less than FLUSH_COALESCE_NS ago, wait for that interval, so
 * that publications arriving meanwhile share one writev per connection instead of
 * costing one syscall each. Adds at most that interval of latency, and
 * only under load; small flushes always go out at once. */
#define FLUSH_COALESCE_MIN 64
#define FLUSH_COALESCE_NS 2000000

static void flush_dirty(struct loop *l)
{
    while (l->dirty) {
        struct conn *c = l->dirty;
        l->dirty = c->dirty_next;
        l->ndirty--;
        c->dirty_next = NULL;
        c->dirty = 0;
        conn_flush(c);
    }
    l->last_flush_ns = uv_hrtime();
}

static void on_flush_timer(uv_timer_t *h)
{
    flush_dirty(h->data);
}

static void on_flush(uv_prepare_t *h)
{
    struct loop *l = h->data;
    if (l->dirty == NULL)
        return;
    uint64_t since = uv_hrtime() - l->last_flush_ns;
    if (l->ndirty >= FLUSH_COALESCE_MIN && !l->shutting_down && since < FLUSH_COALESCE_NS) {
        /* The rest of the interval, in libuv's whole milliseconds, rounded up. */
        if (!uv_is_active((uv_handle_t *)&l->flush_timer))
            uv_timer_start(&l->flush_timer, on_flush_timer,
                           (FLUSH_COALESCE_NS - since + 999999) / 1000000, 0);
        return;
    }
    flush_dirty(l);
}

void loop_timer_clear(struct loop *l, struct conn *c)
{
    if (c->timer_at == 0)
        return;
    if (c->timer_prev)
        c->timer_prev->timer_next = c->timer_next;
    else
        l->wheel[c->timer_at % WHEEL_SLOTS] = c->timer_next;
    if (c->timer_next)
        c->timer_next->timer_prev = c->timer_prev;
    c->timer_next = c->timer_prev = NULL;
    c->timer_at = 0;
}

uint32_t loop_now_sec(const struct loop *l)
{
    return (uint32_t)((server_now_ms() - l->server->start_ms) / 1000) + 1;
}

void loop_timer_set(struct loop *l, struct conn *c, uint32_t seconds)
{
    loop_timer_clear(l, c);
    if (c->closed)
        return; /* an aborted connection is freed after uv_close: never link it */
    if (seconds == 0)
        seconds = 1;
    /* From the clock, not from the wheel's position: after a stall the wheel lags
     * behind, and a deadline counted from it would already be due. */
    uint32_t now = loop_now_sec(l);
    if (now < l->now_sec)
        now = l->now_sec;
    c->timer_at = now + seconds;
    struct conn **slot = &l->wheel[c->timer_at % WHEEL_SLOTS];
    c->timer_prev = NULL;
    c->timer_next = *slot;
    if (*slot)
        (*slot)->timer_prev = c;
    *slot = c;
}

static void on_tick(uv_timer_t *h)
{
    struct loop *l = h->data;
    uint32_t now = loop_now_sec(l);
    uint32_t t = l->now_sec;
    while (t < now) {
        t++;
        l->now_sec = t;
        struct conn *list = l->wheel[t % WHEEL_SLOTS];
        l->wheel[t % WHEEL_SLOTS] = NULL;
        while (list) {
            struct conn *c = list;
            list = c->timer_next;
            if (list)
                list->timer_prev = NULL;
            c->timer_next = c->timer_prev = NULL;
            uint32_t at = c->timer_at;
            c->timer_at = 0;
            if (at > t) { /* a later lap of the wheel */
                c->timer_at = at;
                struct conn **slot = &l->wheel[at % WHEEL_SLOTS];
                c->timer_next = *slot;
                if (*slot)
                    (*slot)->timer_prev = c;
                *slot = c;
                continue;
            }
            conn_on_timer(c);
        }
    }
    if (l->accept_paused && !l->shutting_down) {
        l->accept_paused = 0;
        uv_poll_start(&l->listen_poll, UV_READABLE, on_accept);
    }
    /* One loop sweeps the streams: expired history, idle channels. */
    if (l->id == 0)
        hub_sweep(server_now_ms());
    if (l->shutting_down && ++l->shutting_down > 4) {
        /* Grace period over: whoever has not closed yet is cut off. */
        while (l->conns)
            conn_abort(l->conns);
    }
}

static void on_handle_closed(uv_handle_t *h)
{
}

static void loop_maybe_finish(struct loop *l)
{
    if (!l->shutting_down || l->conns != NULL)
        return;
    if (!uv_is_closing((uv_handle_t *)&l->tick)) {
        uv_close((uv_handle_t *)&l->tick, on_handle_closed);
        uv_close((uv_handle_t *)&l->flush_timer, on_handle_closed);
        uv_close((uv_handle_t *)&l->flush, on_handle_closed);
        uv_close((uv_handle_t *)&l->wake, on_handle_closed);
    }
}

/* Called by conn when a connection is freed; ends the loop once shutdown has
 * closed every connection. */
void loop_conn_gone(struct loop *l)
{
    loop_maybe_finish(l);
}

static void loop_begin_shutdown(struct loop *l)
{
    if (l->shutting_down)
        return;
    l->shutting_down = 1;
    if (l->listen_fd >= 0) {
        uv_poll_stop(&l->listen_poll);
        uv_close((uv_handle_t *)&l->listen_poll, on_handle_closed);
        close(l->listen_fd);
        l->listen_fd = -1;
    }
    for (struct conn *c = l->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_WS)
            conn_close_ws(c, 3001, "shutdown");
        else if (c->state == CONN_HTTP && c->out == NULL)
            conn_abort(c);
    }
    loop_maybe_finish(l);
}

static void *loop_thread(void *arg)
{
    struct loop *l = arg;
    current_loop = l;
    uv_run(&l->uv, UV_RUN_DEFAULT);
    /* Drain handles closed in the last iteration. */
    uv_run(&l->uv, UV_RUN_NOWAIT);
    session_loop_free(l); /* the session's scratch buffers are this thread's own */
    return NULL;
}

static struct loop *loop_new(struct server *s, unsigned id, int fd)
{
    struct loop *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->id = id;
    l->server = s;
    l->listen_fd = fd;
    l->read_buf = malloc(LOOP_READ_BUF);
    l->hub = hub_local_new();
    if (l->read_buf == NULL || l->hub == NULL || uv_loop_init(&l->uv) != 0) {
        free(l->read_buf);
        free(l);
        return NULL;
    }
    pthread_mutex_init(&l->inbox_lock, NULL);
    uv_async_init(&l->uv, &l->wake, on_wake);
    l->wake.data = l;
    uv_prepare_init(&l->uv, &l->flush);
    l->flush.data = l;
    uv_prepare_start(&l->flush, on_flush);
    uv_timer_init(&l->uv, &l->flush_timer);
    l->flush_timer.data = l;
    uv_timer_init(&l->uv, &l->tick);
    l->tick.data = l;
    uv_timer_start(&l->tick, on_tick, 1000, 1000);
    uv_poll_init(&l->uv, &l->listen_poll, fd);
    l->listen_poll.data = l;
    uv_poll_start(&l->listen_poll, UV_READABLE, on_accept);
    l->now_sec = 1;
    return l;
}

static struct server *signal_server;

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *s = h->data;
    if (atomic_exchange(&s->stopping, 1))
        return;
    log_info("signal %d: shutting down", signum);
    for (unsigned i = 0; i < s->nloops; i++) {
        struct loop_msg m = {.type = LOOP_MSG_SHUTDOWN};
        loop_post(s->loops[i], &m);
    }
    uv_stop(h->loop); /* server_run joins the loops once they have closed every connection */
}

int server_run(const struct config *config)
{
    static struct server s;
    s.config = config;
    s.start_ms = server_now_ms();
    rand_uuid(s.node_uid);
    unsigned n = config->threads;
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (unsigned)cpus : 1;
    }
    if (n > LOOP_MAX)
        n = LOOP_MAX;
    signal(SIGPIPE, SIG_IGN);
    for (unsigned i = 0; i < n; i++) {
        int fd = listen_socket(config->listen_host, config->listen_port);
        if (fd < 0)
            return -1;
        s.loops[i] = loop_new(&s, i, fd);
        if (s.loops[i] == NULL)
            return -1;
    }
    s.nloops = n;
    if (hub_init(n, s.loops, config->max_channels) != 0)
        return -1;
    char err[160];
    engine_current = engine_open(config, err, sizeof(err));
    if (engine_current == NULL) {
        log_error("%s", err);
        return -1;
    }
    session_global_init(&s);
    signal_server = &s;

    uv_loop_t *main_loop = uv_default_loop();
    uv_signal_t sigterm, sigint;
    uv_signal_init(main_loop, &sigterm);
    uv_signal_init(main_loop, &sigint);
    sigterm.data = sigint.data = &s;
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_start(&sigint, on_signal, SIGINT);

    for (unsigned i = 0; i < n; i++)
        pthread_create(&s.loops[i]->thread, NULL, loop_thread, s.loops[i]);
    log_info("herald listening on %s:%u with %u loops", config->listen_host, config->listen_port,
             n);
    /* The main thread only waits for signals. */
    uv_run(main_loop, UV_RUN_DEFAULT);
    for (unsigned i = 0; i < n; i++)
        pthread_join(s.loops[i]->thread, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_run(main_loop, UV_RUN_NOWAIT);
    for (unsigned i = 0; i < n; i++) {
        struct loop *l = s.loops[i];
        uv_loop_close(&l->uv);
        hub_local_free(l->hub);
        free(l->read_buf);
        free(l->inbox);
        free(l->work);
        buf_free(&l->reply);
        conn_pool_free(l);
        pthread_mutex_destroy(&l->inbox_lock);
        free(l);
    }
    engine_close(engine_current);
    engine_current = NULL;
    hub_shutdown();
    log_info("herald stopped");
    return 0;
}
