/* Event-loop threads, listeners, the cross-thread inbox, the flush of dirty
 * connections and the timer wheel (see loop.h). */
#include "net/loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "metrics/metrics.h"
#include "net/internal.h"

unsigned loop_id(const struct loop *l)
{
    return l->id;
}

void *loop_uv(struct loop *l)
{
    return &l->uv;
}

struct each {
    void (*fn)(struct conn *c, void *ud);
    void *ud;
};

static void each_live(void *block, void *arg)
{
    struct conn *c = block;
    struct each *e = arg;
    if (!c->closed)
        e->fn(c, e->ud);
}

void loop_each_conn(struct loop *l, void (*fn)(struct conn *c, void *ud), void *ud)
{
    /* The slab holds every connection of the loop: no list through them. */
    struct each e = {fn, ud};
    pool_each(&l->conn_pool, each_live, &e);
}

struct buf *loop_reply_buf(struct loop *l)
{
    return &l->reply;
}

uint64_t loop_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t loop_now_ms(const struct loop *l)
{
    return uv_now(&l->uv);
}

uint32_t loop_now_sec(const struct loop *l)
{
    return (uint32_t)((loop_clock_ms() - l->net->start_ms) / 1000) + 1;
}

/* The listening address, IPv4 or IPv6 (config keeps "[::1]:8000" as host "::1"); its
 * length, or 0 (logged) when host is neither. */
static socklen_t listen_addr(const char *host, uint16_t port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        return sizeof(*v4);
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        return sizeof(*v6);
    }
    log_error("listen_failed", "listen: %s is not an IPv4 or IPv6 address", host);
    return 0;
}

/* Is the address free? SO_REUSEPORT lets any process of the same user join a group
 * of listeners, and the kernel then splits the connections between them: a second
 * herald started on the same address would silently take half of the first one's
 * clients. A socket bound without SO_REUSEPORT cannot share the port with a listener
 * (reuseport or not, on this address or on the wildcard), so its bind is the test;
 * with SO_REUSEADDR, as the listeners have it, so that the TIME_WAIT connections of
 * a herald that just stopped do not count. The probe is closed before the listeners
 * bind (it would stand in their way), which leaves a window of a few system calls in
 * which a process starting at the same instant could pass the same test; the
 * listeners are created right after it, before anything slower (the engine, Redis,
 * the threads). 0, or -1 with the message logged. */
static int probe_address(const char *host, uint16_t port)
{
    struct sockaddr_storage sa;
    socklen_t len = listen_addr(host, port, &sa);
    if (len == 0)
        return -1;
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error("listen_failed", "listen %s:%u: socket: %s", host, port, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (sa.ss_family == AF_INET6) /* the address given, not the IPv4 one mapped onto it */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    int rc = bind(fd, (struct sockaddr *)&sa, len);
    int err = errno;
    close(fd);
    if (rc == 0)
        return 0;
    if (err == EADDRINUSE)
        log_error("listen_failed",
                  "listen %s:%u: address already in use (by another herald or another "
                  "server); refusing to share it",
                  host, port);
    else
        log_error("listen_failed", "listen %s:%u: %s", host, port, strerror(err));
    return -1;
}

/* One listening socket per loop with SO_REUSEPORT: the kernel spreads new
 * connections over the loops, so no loop hands connections to another. */
static int listen_socket(const char *host, uint16_t port)
{
    struct sockaddr_storage sa;
    socklen_t len = listen_addr(host, port, &sa);
    if (len == 0)
        return -1;
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (sa.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, len) != 0 || listen(fd, 4096) != 0) {
        log_error("listen_failed", "listen %s:%u: %s", host, port, strerror(errno));
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
                log_warn("accept_paused",
                         "accept: %s (connections: %lu); pausing accepts for a second",
                         strerror(errno), (unsigned long)metrics_sum(METRIC_CONNECTIONS));
                uv_poll_stop(&l->listen_poll);
                l->accept_paused = 1;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = conn_new(l, fd);
        if (c == NULL)
            continue;
        l->net->cfg.accept(c, l->net->cfg.ud);
        /* After the handler, whose deadline for the first request the handshake's
         * counts against. */
        if (l->tls && !c->closed)
            tls_conn_start(c);
    }
}

/* The metrics listener: a few scrapers, no TLS, no limits of the client side. */
static void on_metrics_accept(uv_poll_t *h, int status, int events)
{
    struct loop *l = h->data;
    if (status < 0 || l->shutting_down)
        return;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(l->metrics_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct conn *c = conn_new(l, fd);
        if (c != NULL)
            l->net->cfg.metrics_accept(c, l->net->cfg.ud);
    }
}

static void metrics_listener_close(struct loop *l, uv_close_cb cb)
{
    if (l->metrics_fd < 0)
        return;
    uv_poll_stop(&l->metrics_poll);
    uv_close((uv_handle_t *)&l->metrics_poll, cb);
    close(l->metrics_fd);
    l->metrics_fd = -1;
}

/* The loop whose thread this is, NULL on any other thread; and whether that loop is in
 * its flush (on_flush, on_flush_timer), which drains the inbox first. */
static _Thread_local struct loop *this_loop;
static _Thread_local int in_flush;

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
    /* One wake-up per batch: later posts find the loop already signalled. The loop's own
     * thread needs none (no eventfd write, no extra turn): it is awake, and its next flush
     * drains the inbox before it waits again; except from inside that flush. */
    if (first && (this_loop != l || in_flush))
        uv_async_send(&l->wake);
    return 0;
}

/* Run what the inbox holds, until it is empty. */
static void drain_inbox(struct loop *l)
{
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
        /* Runs of one handler go together. */
        for (size_t i = 0; i < n;) {
            size_t run = 1;
            while (i + run < n && batch[i + run].handle == batch[i].handle)
                run++;
            batch[i].handle(l, &batch[i], run);
            i += run;
        }
    }
}

static void on_wake(uv_async_t *h)
{
    drain_inbox(h->data);
}

/* Write coalescing: when a flush has to write to many connections after a wide fan-out
 * (one frame queued to at least FLUSH_COALESCE_MIN of them) and the previous flush ended
 * less than FLUSH_COALESCE_NS ago, it waits for the rest of that interval, so that
 * publications arriving meanwhile share one write per connection instead of costing one
 * syscall each. Many connections with a frame each (per-user channels) go out at once,
 * even when the loop is busy: their next frames are far away, and waiting added 2-5 ms
 * to every delivery and cost throughput besides (docs/benchmarks.md, issue 18). From
 * the previous flush's end: counted from its start, a long flush (10,000 subscribers
 * under load) was followed by the next at once with fewer publications to share each
 * write, and herald delivered less per CPU-second (docs/benchmarks.md, issue 18). Small
 * flushes always go out at once. */
#define FLUSH_COALESCE_MIN 64
#define FLUSH_COALESCE_NS 2000000

static void flush_dirty(struct loop *l)
{
    for (int pass = 0; pass < 2; pass++) {
        while (l->dirty) {
            struct conn *c = l->dirty;
            struct conn *n = c->dirty_next;
            if (n != NULL) {
                /* The next connection's queue and the one after it: the queues were
                 * filled a whole batch of deliveries ago and have left the cache, and
                 * each write gives the loads time to land. */
                __builtin_prefetch(n->out);
                __builtin_prefetch(n->dirty_next);
            }
            l->dirty = n;
            if (l->dirty == NULL)
                l->dirty_last = NULL;
            l->ndirty--;
            c->dirty_next = NULL;
            c->dirty = 0;
            conn_flush(c);
        }
        /* The output budget is judged on what the writes left queued: a client that keeps
         * up is never counted as behind for what one iteration queued to it. Those it
         * disconnects have a close frame to send: a second pass, now. */
        conn_budget_settle(l);
        if (l->dirty == NULL)
            break;
    }
    l->fanout_width = 0;
    l->last_flush_ns = uv_hrtime();
}

struct loop *loop_self(void)
{
    return this_loop;
}

void loop_fanout_queued(struct loop *l, unsigned width)
{
    if (width > l->fanout_width)
        l->fanout_width = width;
}

static void on_flush_timer(uv_timer_t *h)
{
    struct loop *l = h->data;
    in_flush = 1;
    drain_inbox(l);
    flush_dirty(l);
    in_flush = 0;
}

/* Every turn of the loop, before it waits for I/O: the messages posted meanwhile (the
 * publications this turn's input made, above all) are delivered first, so that they go
 * out in this flush rather than a turn later. */
static void on_flush(uv_prepare_t *h)
{
    struct loop *l = h->data;
    in_flush = 1;
    drain_inbox(l);
    if (l->dirty != NULL) {
        uint64_t since = uv_hrtime() - l->last_flush_ns;
        if (l->ndirty >= FLUSH_COALESCE_MIN && !l->shutting_down && since < FLUSH_COALESCE_NS &&
            l->fanout_width >= FLUSH_COALESCE_MIN) {
            /* The rest of the interval, in libuv's whole milliseconds, rounded up. */
            if (!uv_is_active((uv_handle_t *)&l->flush_timer))
                uv_timer_start(&l->flush_timer, on_flush_timer,
                               (FLUSH_COALESCE_NS - since + 999999) / 1000000, 0);
        } else {
            flush_dirty(l);
        }
    }
    in_flush = 0;
}

/* ---- the timer wheel ---- */

static void wheel_link(struct loop *l, struct loop_timer *t)
{
    struct loop_timer **slot = &l->wheel[t->at % WHEEL_SLOTS];
    t->prev = NULL;
    t->next = *slot;
    if (*slot)
        (*slot)->prev = t;
    *slot = t;
}

void loop_timer_clear(struct loop *l, struct loop_timer *t)
{
    if (t->at == 0)
        return;
    if (t->prev)
        t->prev->next = t->next;
    else
        l->wheel[t->at % WHEEL_SLOTS] = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->next = t->prev = NULL;
    t->at = 0;
}

void loop_timer_set(struct loop *l, struct loop_timer *t, uint32_t seconds)
{
    loop_timer_clear(l, t);
    if (seconds == 0)
        seconds = 1;
    /* From the clock, not from the wheel's position: after a stall the wheel lags
     * behind, and a deadline counted from it would already be due. */
    uint32_t now = loop_now_sec(l);
    if (now < l->now_sec)
        now = l->now_sec;
    t->at = now + seconds;
    wheel_link(l, t);
}

static void abort_one(struct conn *c, void *ud)
{
    conn_abort(c);
}

static void on_tick(uv_timer_t *h)
{
    struct loop *l = h->data;
    uint32_t now = loop_now_sec(l);
    uint32_t s = l->now_sec;
    while (s < now) {
        s++;
        l->now_sec = s;
        struct loop_timer *list = l->wheel[s % WHEEL_SLOTS];
        l->wheel[s % WHEEL_SLOTS] = NULL;
        while (list) {
            struct loop_timer *t = list;
            list = t->next;
            if (list)
                list->prev = NULL;
            t->next = t->prev = NULL;
            uint32_t at = t->at;
            if (at > s) { /* a later lap of the wheel */
                wheel_link(l, t);
                continue;
            }
            t->at = 0;
            t->fire(t);
        }
    }
    conn_budget_settle(l);
    if (l->accept_paused && !l->shutting_down) {
        l->accept_paused = 0;
        uv_poll_start(&l->listen_poll, UV_READABLE, on_accept);
    }
    if (l->net->cfg.tick)
        l->net->cfg.tick(l, l->net->cfg.ud);
    if (l->shutting_down && ++l->shutting_down > 4) {
        /* Grace period over: whoever has not closed yet is cut off. */
        loop_each_conn(l, abort_one, NULL);
    }
}

/* ---- start and stop ---- */

static void on_handle_closed(uv_handle_t *h)
{
}

static void loop_maybe_finish(struct loop *l)
{
    if (!l->shutting_down || l->nconns != 0)
        return;
    if (!uv_is_closing((uv_handle_t *)&l->tick)) {
        uv_close((uv_handle_t *)&l->epoll_poll, on_handle_closed);
        uv_close((uv_handle_t *)&l->reap, on_handle_closed);
        uv_close((uv_handle_t *)&l->tick, on_handle_closed);
        uv_close((uv_handle_t *)&l->flush_timer, on_handle_closed);
        uv_close((uv_handle_t *)&l->flush, on_handle_closed);
        uv_close((uv_handle_t *)&l->wake, on_handle_closed);
        tls_loop_close(l);
    }
}

void loop_conn_gone(struct loop *l)
{
    loop_maybe_finish(l);
}

static void shutdown_one(struct conn *c, void *ud)
{
    conn_shutdown(c);
}

static void on_shutdown(struct loop *l, struct loop_msg *msgs, size_t n)
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
    metrics_listener_close(l, on_handle_closed);
    loop_each_conn(l, shutdown_one, NULL);
    loop_maybe_finish(l);
}

static void *loop_thread(void *arg)
{
    struct loop *l = arg;
    this_loop = l;
    if (l->net->cfg.loop_start)
        l->net->cfg.loop_start(l, l->net->cfg.ud);
    uv_run(&l->uv, UV_RUN_DEFAULT);
    /* Drain handles closed in the last iteration. */
    uv_run(&l->uv, UV_RUN_NOWAIT);
    if (l->net->cfg.loop_exit)
        l->net->cfg.loop_exit(l, l->net->cfg.ud);
    return NULL;
}

static void loop_free(struct loop *l)
{
    uv_loop_close(&l->uv);
    close(l->epoll_fd);
    free(l->read_buf);
    free(l->inbox);
    free(l->work);
    buf_free(&l->reply);
    conn_pools_free(l);
    tls_loop_free(l);
    pthread_mutex_destroy(&l->inbox_lock);
    free(l);
}

static struct loop *loop_new(struct net *net, unsigned id, int fd)
{
    struct loop *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->id = id;
    l->net = net;
    l->listen_fd = fd;
    l->metrics_fd = -1;
    l->read_buf = malloc(LOOP_READ_BUF);
    l->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (l->read_buf == NULL || l->epoll_fd < 0 || uv_loop_init(&l->uv) != 0) {
        if (l->epoll_fd >= 0)
            close(l->epoll_fd);
        free(l->read_buf);
        free(l);
        return NULL;
    }
    int polled = uv_poll_init(&l->uv, &l->epoll_poll, l->epoll_fd) == 0;
    if (!polled ||
        (net->cfg.tls && tls_loop_init(l, net->cfg.tls, net->cfg.tls_handshake_timeout) != 0)) {
        if (polled) {
            uv_close((uv_handle_t *)&l->epoll_poll, NULL);
            uv_run(&l->uv, UV_RUN_NOWAIT);
        }
        uv_loop_close(&l->uv);
        close(l->epoll_fd);
        free(l->read_buf);
        free(l);
        return NULL;
    }
    l->epoll_poll.data = l;
    uv_poll_start(&l->epoll_poll, UV_READABLE, conn_poll_events);
    uv_check_init(&l->uv, &l->reap);
    l->reap.data = l;
    conn_pools_init(l);
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

struct net *net_create(const struct net_config *cfg)
{
    struct net *net = calloc(1, sizeof(*net));
    if (net == NULL)
        return NULL;
    net->cfg = *cfg;
    if (net->cfg.input_max == 0)
        net->cfg.input_max = 1u << 20;
    net->start_ms = loop_clock_ms();
    unsigned n = cfg->nloops ? cfg->nloops : 1;
    if (n > LOOP_MAX)
        n = LOOP_MAX;
    if (probe_address(cfg->host, cfg->port) != 0) {
        free(net);
        return NULL;
    }
    for (unsigned i = 0; i < n; i++) {
        int fd = listen_socket(cfg->host, cfg->port);
        struct loop *l = fd < 0 ? NULL : loop_new(net, i, fd);
        if (l == NULL) {
            if (fd >= 0)
                close(fd);
            net->nloops = i;
            net_join_and_free(net);
            return NULL;
        }
        net->loops[i] = l;
    }
    net->nloops = n;
    if (cfg->metrics_port) {
        struct loop *l = net->loops[0];
        int fd = probe_address(cfg->metrics_host, cfg->metrics_port) == 0
                     ? listen_socket(cfg->metrics_host, cfg->metrics_port)
                     : -1;
        if (fd < 0) {
            net_join_and_free(net);
            return NULL;
        }
        l->metrics_fd = fd;
        uv_poll_init(&l->uv, &l->metrics_poll, fd);
        l->metrics_poll.data = l;
        uv_poll_start(&l->metrics_poll, UV_READABLE, on_metrics_accept);
    }
    return net;
}

unsigned net_nloops(const struct net *net)
{
    return net->nloops;
}

struct loop *net_loop(const struct net *net, unsigned i)
{
    return net->loops[i];
}

int net_run(struct net *net)
{
    for (unsigned i = 0; i < net->nloops; i++) {
        if (pthread_create(&net->loops[i]->thread, NULL, loop_thread, net->loops[i]) != 0)
            return -1;
    }
    return 0;
}

void net_stop(struct net *net)
{
    for (unsigned i = 0; i < net->nloops; i++) {
        struct loop_msg m = {.handle = on_shutdown};
        loop_post(net->loops[i], &m);
    }
}

void net_join(struct net *net)
{
    for (unsigned i = 0; i < net->nloops; i++) {
        if (net->loops[i]->thread) {
            pthread_join(net->loops[i]->thread, NULL);
            net->loops[i]->joined = 1;
        }
    }
}

void net_free(struct net *net)
{
    for (unsigned i = 0; i < net->nloops; i++) {
        struct loop *l = net->loops[i];
        /* What was posted after the loop ended (an engine's late completions). */
        for (;;) {
            struct loop_msg *batch = l->inbox;
            size_t n = l->inbox_len;
            l->inbox = NULL;
            l->inbox_len = l->inbox_cap = 0;
            if (n == 0) {
                free(batch);
                break;
            }
            for (size_t k = 0; k < n; k++)
                batch[k].handle(l, &batch[k], 1);
            free(batch);
        }
    }
    for (unsigned i = 0; i < net->nloops; i++) {
        struct loop *l = net->loops[i];
        if (!l->joined) {
            /* never ran: close what loop_new opened */
            uv_close((uv_handle_t *)&l->epoll_poll, NULL);
            uv_close((uv_handle_t *)&l->reap, NULL);
            uv_close((uv_handle_t *)&l->listen_poll, NULL);
            uv_close((uv_handle_t *)&l->tick, NULL);
            uv_close((uv_handle_t *)&l->flush_timer, NULL);
            uv_close((uv_handle_t *)&l->flush, NULL);
            uv_close((uv_handle_t *)&l->wake, NULL);
            tls_loop_close(l);
            uv_run(&l->uv, UV_RUN_NOWAIT);
            if (l->listen_fd >= 0)
                close(l->listen_fd);
            metrics_listener_close(l, NULL);
            uv_run(&l->uv, UV_RUN_NOWAIT);
        }
        loop_free(l);
    }
    free(net);
}

void net_join_and_free(struct net *net)
{
    net_join(net);
    net_free(net);
}
