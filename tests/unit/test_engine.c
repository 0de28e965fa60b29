/* Engine contract, written against engine.h only, so that every engine (memory
 * now, redis later) runs the same cases: offsets, epochs, history bounds, since,
 * reverse, TTL, removal, byte-exact data, the delivery events, recovery on
 * subscribe, presence and its counts, join/leave, idempotent publishing, the channel
 * listing and max_channels. Each request waits for its completion (the memory engine
 * completes before returning; a networked engine posts completions that wait_for runs). */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "core/buf.h"
#include "core/config.h"
#include "engine/engine.h"
#include "test.h"

static struct engine *e;

/* Stream options of a namespace with history (size, ttl seconds); 0, 0: none. */
static struct engine_stream_opts ns_history(uint32_t size, uint32_t ttl)
{
    struct engine_stream_opts o = {size, ttl};
    return o;
}

/* ---- what the engine delivers ---- */

#define MAX_EVENTS 64
static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;
static struct event {
    char channel[32];
    int kind; /* 0 publication, 1 join, 2 leave */
    uint64_t offset;
    char data[64];
} events[MAX_EVENTS];
static int nevents;

/* Events come from any thread (a networked engine's own). */
static void record(const uint8_t *ch, size_t len, int kind, uint64_t offset, const uint8_t *d,
                   size_t dlen)
{
    pthread_mutex_lock(&events_lock);
    if (nevents < MAX_EVENTS) {
        struct event *ev = &events[nevents++];
        snprintf(ev->channel, sizeof(ev->channel), "%.*s", (int)len, (const char *)ch);
        ev->kind = kind;
        ev->offset = offset;
        snprintf(ev->data, sizeof(ev->data), "%.*s", (int)dlen, (const char *)d);
    }
    pthread_mutex_unlock(&events_lock);
}

static void reset_events(void)
{
    pthread_mutex_lock(&events_lock);
    nevents = 0;
    pthread_mutex_unlock(&events_lock);
}

/* Wait up to 3 s for n events; returns how many there are. */
static int wait_events(int n)
{
    int have = 0;
    for (int i = 0; i < 300; i++) {
        uv_run(uv_default_loop(), UV_RUN_NOWAIT);
        pthread_mutex_lock(&events_lock);
        have = nevents;
        pthread_mutex_unlock(&events_lock);
        if (have >= n)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return have;
}

static void on_publication(void *ud, const uint8_t *ch, size_t len, const struct engine_pub *pub)
{
    record(ch, len, 0, pub->offset, pub->data, pub->data_len);
}

static void on_join_leave(void *ud, const uint8_t *ch, size_t len, int join, const uint8_t *info,
                          size_t info_len)
{
    record(ch, len, join ? 1 : 2, 0, info, info_len);
}

/* ---- waiting for completions ---- */

static int done;

/* The engine host of this test: this thread is slot 0, and what a networked engine
 * posts back waits in a queue that wait_for() runs. */
struct posted {
    struct posted *next;
    void (*fn)(void *);
    void *arg;
};
static pthread_mutex_t posted_lock = PTHREAD_MUTEX_INITIALIZER;
static struct posted *posted_head, **posted_tail = &posted_head;

static int host_current(void *ud)
{
    return 0;
}

/* This thread's libuv loop: a networked engine runs its I/O on it, pumped by wait_for. */
static void *host_uv_loop(void *ud, int slot)
{
    return uv_default_loop();
}

/* A loop with only an engine's (unreferenced) handles would not poll: a server's loop
 * always has its listener; this test's has this timer. */
static uv_timer_t keep_polling;

static void on_keep_polling(uv_timer_t *t)
{
}

static int host_post(void *ud, int slot, void (*fn)(void *), void *arg)
{
    struct posted *p = malloc(sizeof(*p));
    if (p == NULL)
        return -1;
    p->next = NULL;
    p->fn = fn;
    p->arg = arg;
    pthread_mutex_lock(&posted_lock);
    *posted_tail = p;
    posted_tail = &p->next;
    pthread_mutex_unlock(&posted_lock);
    return 0;
}

/* One round: the loop's ready callbacks, then what the engine posted (or 2 ms of sleep
 * when it posted nothing). */
static void poll_once(void)
{
    uv_run(uv_default_loop(), UV_RUN_NOWAIT);
    pthread_mutex_lock(&posted_lock);
    struct posted *p = posted_head;
    posted_head = NULL;
    posted_tail = &posted_head;
    pthread_mutex_unlock(&posted_lock);
    if (p == NULL) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    while (p) {
        struct posted *next = p->next;
        p->fn(p->arg);
        free(p);
        p = next;
    }
}

/* Run posted completions until done reaches target (the memory engine completes
 * before returning: nothing to run). Up to 5 s. */
static void wait_for(int target)
{
    for (int i = 0; i < 2500 && done < target; i++)
        poll_once();
}

static int memory(void)
{
    return strcmp(e->ops->name, "memory") == 0;
}

static void follow(const char *ch, const struct engine_stream_opts *o);

struct pos_result {
    int status;
    struct engine_pos pos;
};

static void on_pos(void *ud, int status, const struct engine_pos *pos)
{
    struct pos_result *r = ud;
    r->status = status;
    r->pos = *pos;
    done++;
}

/* 1 with pos when the channel keeps history, 0 without, or a negative status. */
static int publish_key(const char *ch, const struct engine_stream_opts *o, const char *data,
                       const char *key, struct engine_pos *pos)
{
    struct engine_pub pub = {(const uint8_t *)data, strlen(data), NULL, 0, 0};
    struct pos_result r = {99, {0, ""}};
    int before = done;
    e->ops->publish(e, (const uint8_t *)ch, strlen(ch), o, &pub, (const uint8_t *)key,
                    key ? strlen(key) : 0, on_pos, &r);
    wait_for(before + 1);
    CHECK_EQ(done, before + 1);
    if (pos)
        *pos = r.pos;
    if (r.status != 0)
        return r.status;
    return r.pos.epoch[0] ? 1 : 0;
}

static int publish(const char *ch, const struct engine_stream_opts *o, const char *data,
                   struct engine_pos *pos)
{
    return publish_key(ch, o, data, NULL, pos);
}

/* Publications rendered as {"data":D,"offset":N},... into the caller's buffer. */
struct hist_result {
    int status;
    struct engine_pos pos;
    struct buf *out;
};

static void render(struct buf *out, const struct engine_pub *pubs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (out->len)
            buf_append_char(out, ',');
        buf_append_str(out, "{\"data\":");
        buf_append(out, pubs[i].data, pubs[i].data_len);
        buf_appendf(out, ",\"offset\":%llu}", (unsigned long long)pubs[i].offset);
    }
}

static void on_history(void *ud, int status, const struct engine_pos *pos,
                       const struct engine_pub *pubs, size_t n)
{
    struct hist_result *r = ud;
    r->status = status;
    r->pos = *pos;
    render(r->out, pubs, n);
    done++;
}

static int history(const char *ch, const struct engine_stream_opts *o, int64_t limit,
                   int has_since, uint64_t since, const char *epoch, int reverse, struct buf *out,
                   struct engine_pos *pos)
{
    struct engine_history_query q = {limit,  has_since, since, (const uint8_t *)epoch,
                                     epoch ? strlen(epoch) : 0, reverse};
    struct hist_result r = {99, {0, ""}, out};
    int before = done;
    e->ops->history(e, (const uint8_t *)ch, strlen(ch), o, &q, on_history, &r);
    wait_for(before + 1);
    CHECK_EQ(done, before + 1);
    *pos = r.pos;
    return r.status;
}

/* Offsets in a history reply, in order. */
static int offsets(const struct buf *b, uint64_t *out, int max)
{
    int n = 0;
    const char *p = (const char *)b->p, *end = p + b->len;
    while (p && p < end && n < max) {
        const char *o = memmem(p, (size_t)(end - p), "\"offset\":", 9);
        if (o == NULL)
            break;
        out[n++] = strtoull(o + 9, NULL, 10);
        p = o + 9;
    }
    return n;
}

TEST(test_engine_publish_assigns_consecutive_offsets_in_one_epoch)
{
    struct engine_stream_opts ns = ns_history(10, 60);
    struct engine_pos a, b;
    CHECK_EQ(publish("t1", &ns, "{}", &a), 1);
    CHECK_EQ(publish("t1", &ns, "{}", &b), 1);
    CHECK_EQ(a.offset, 1);
    CHECK_EQ(b.offset, 2);
    CHECK(strlen(a.epoch) > 0);
    CHECK(strcmp(a.epoch, b.epoch) == 0);
}

TEST(test_engine_channels_have_independent_streams)
{
    struct engine_stream_opts ns = ns_history(10, 60);
    struct engine_pos a, b;
    publish("t2a", &ns, "1", &a);
    publish("t2b", &ns, "1", &b);
    CHECK_EQ(a.offset, 1);
    CHECK_EQ(b.offset, 1);
    CHECK(strcmp(a.epoch, b.epoch) != 0);
}

TEST(test_engine_publish_without_history_has_no_position)
{
    struct engine_stream_opts ns = ns_history(0, 0);
    struct engine_pos pos;
    CHECK_EQ(publish("t3", &ns, "{}", &pos), 0);
    struct buf out = BUF_INIT;
    CHECK_EQ(history("t3", &ns, -1, 0, 0, NULL, 0, &out, &pos), -108);
    buf_free(&out);
}

TEST(test_engine_history_keeps_only_history_size_newest)
{
    struct engine_stream_opts ns = ns_history(3, 60);
    struct engine_pos pos;
    for (int i = 0; i < 5; i++)
        publish("t4", &ns, "{}", &pos);
    struct buf out = BUF_INIT;
    CHECK_EQ(history("t4", &ns, -1, 0, 0, NULL, 0, &out, &pos), 0);
    uint64_t o[8];
    CHECK_EQ(offsets(&out, o, 8), 3);
    CHECK_EQ(o[0], 3);
    CHECK_EQ(o[2], 5);
    CHECK_EQ(pos.offset, 5);
    buf_free(&out);
}

TEST(test_engine_history_limit_since_and_reverse)
{
    struct engine_stream_opts ns = ns_history(10, 60);
    struct engine_pos pos;
    for (int i = 0; i < 6; i++)
        publish("t5", &ns, "{}", &pos);
    struct buf out = BUF_INIT;
    uint64_t o[8];
    CHECK_EQ(history("t5", &ns, 0, 0, 0, NULL, 0, &out, &pos), 0);
    CHECK_EQ(out.len, 0); /* limit 0: only the position */
    CHECK_EQ(pos.offset, 6);
    CHECK_EQ(history("t5", &ns, 2, 0, 0, NULL, 0, &out, &pos), 0);
    CHECK_EQ(offsets(&out, o, 8), 2);
    CHECK_EQ(o[0], 1);
    buf_reset(&out);
    CHECK_EQ(history("t5", &ns, -1, 1, 4, pos.epoch, 0, &out, &pos), 0);
    CHECK_EQ(offsets(&out, o, 8), 2);
    CHECK_EQ(o[0], 5);
    CHECK_EQ(o[1], 6);
    buf_reset(&out);
    CHECK_EQ(history("t5", &ns, 2, 0, 0, NULL, 1, &out, &pos), 0);
    CHECK_EQ(offsets(&out, o, 8), 2);
    CHECK_EQ(o[0], 6);
    CHECK_EQ(o[1], 5);
    buf_free(&out);
}

TEST(test_engine_history_since_other_epoch_is_unrecoverable)
{
    struct engine_stream_opts ns = ns_history(10, 60);
    struct engine_pos pos;
    publish("t6", &ns, "{}", &pos);
    struct buf out = BUF_INIT;
    CHECK_EQ(history("t6", &ns, -1, 1, 0, "deadbeef", 0, &out, &pos), -112);
    buf_free(&out);
}

TEST(test_engine_history_expires_after_ttl)
{
    struct engine_stream_opts ns = ns_history(10, 1);
    struct engine_pos pos;
    publish("t7", &ns, "{}", &pos);
    struct timespec ts = {1, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    struct buf out = BUF_INIT;
    CHECK_EQ(history("t7", &ns, -1, 0, 0, NULL, 0, &out, &pos), 0);
    CHECK_EQ(out.len, 0);
    CHECK_EQ(pos.offset, 1); /* the stream position survives the expiry of its entries */
    buf_free(&out);
}

TEST(test_engine_history_remove_keeps_position)
{
    struct engine_stream_opts ns = ns_history(10, 60);
    struct engine_pos pos;
    publish("t8", &ns, "{}", &pos);
    publish("t8", &ns, "{}", &pos);
    e->ops->history_remove(e, (const uint8_t *)"t8", 2, NULL, NULL);
    struct buf out = BUF_INIT;
    CHECK_EQ(history("t8", &ns, -1, 0, 0, NULL, 0, &out, &pos), 0);
    CHECK_EQ(out.len, 0);
    CHECK_EQ(pos.offset, 2);
    CHECK_EQ(publish("t8", &ns, "{}", &pos), 1);
    CHECK_EQ(pos.offset, 3);
    buf_free(&out);
}

static void on_reset(void *ud, int status)
{
    *(int *)ud = status;
    done++;
}

TEST(test_engine_reset_starts_the_streams_of_a_prefix_again)
{
    struct engine_stream_opts ns = ns_history(10, 60);
    struct engine_pos a, b, other, after;
    publish("rs:a", &ns, "1", &a);
    publish("rs:a", &ns, "2", &a);
    publish("rs:b#u1", &ns, "3", &b);
    publish("rt:x", &ns, "4", &other);
    int status = 99, before = done;
    e->ops->reset(e, (const uint8_t *)"rs:", 3, on_reset, &status);
    wait_for(before + 1);
    CHECK_EQ(status, 0);
    struct buf out = BUF_INIT;
    /* History gone, and another epoch: a recovery from before cannot succeed. */
    CHECK_EQ(history("rs:a", &ns, -1, 0, 0, NULL, 0, &out, &after), 0);
    CHECK_EQ(out.len, 0);
    CHECK(strcmp(after.epoch, a.epoch) != 0);
    out.len = 0;
    CHECK_EQ(history("rs:b#u1", &ns, -1, 0, 0, NULL, 0, &out, &after), 0);
    CHECK_EQ(out.len, 0);
    CHECK(strcmp(after.epoch, b.epoch) != 0);
    /* A channel outside the prefix keeps everything. */
    out.len = 0;
    CHECK_EQ(history("rt:x", &ns, -1, 0, 0, NULL, 0, &out, &after), 0);
    CHECK(out.len > 0);
    CHECK(strcmp(after.epoch, other.epoch) == 0);
    CHECK_EQ(after.offset, other.offset);
    /* Publishing goes on, in the new stream. */
    CHECK_EQ(publish("rs:a", &ns, "5", &after), 1);
    CHECK(strcmp(after.epoch, a.epoch) != 0);
    buf_free(&out);
}

TEST(test_engine_history_returns_data_byte_for_byte)
{
    struct engine_stream_opts ns = ns_history(10, 60);
    struct engine_pos pos;
    const char *data = "{ \"b\" : [1, 2.50e3, \"\\u00e9\\n\"],  \"a\":null }";
    publish("t9", &ns, data, &pos);
    struct buf out = BUF_INIT;
    CHECK_EQ(history("t9", &ns, -1, 0, 0, NULL, 0, &out, &pos), 0);
    CHECK(memmem(out.p, out.len, data, strlen(data)) != NULL);
    buf_free(&out);
}



TEST(test_engine_delivers_every_publication_in_offset_order)
{
    struct engine_stream_opts ns = ns_history(10, 60), none = ns_history(0, 0);
    struct engine_pos pos;
    /* Events reach a node for the channels it follows (subscribe). */
    follow("d1", &ns);
    follow("d2", &none);
    reset_events();
    publish("d1", &ns, "\"a\"", &pos);
    publish("d1", &ns, "\"b\"", &pos);
    publish("d2", &none, "\"c\"", &pos);
    CHECK_EQ(wait_events(3), 3);
    CHECK(strcmp(events[0].channel, "d1") == 0 && events[0].offset == 1);
    CHECK(strcmp(events[0].data, "\"a\"") == 0);
    CHECK(strcmp(events[1].channel, "d1") == 0 && events[1].offset == 2);
    CHECK(strcmp(events[2].channel, "d2") == 0 && events[2].offset == 0); /* no history */
    CHECK(strcmp(events[2].data, "\"c\"") == 0);
    e->ops->unsubscribe(e, (const uint8_t *)"d1", 2);
    e->ops->unsubscribe(e, (const uint8_t *)"d2", 2);
}

struct sub_result {
    int status, recovered;
    struct engine_pos pos;
    uint64_t offsets[16];
    size_t n;
};

static void on_subscribed(void *ud, int status, const struct engine_pos *pos, int recovered,
                          const struct engine_pub *pubs, size_t n)
{
    struct sub_result *r = ud;
    r->status = status;
    r->recovered = recovered;
    r->pos = *pos;
    r->n = n;
    for (size_t i = 0; i < n && i < 16; i++)
        r->offsets[i] = pubs[i].offset;
    done++;
}

static struct sub_result subscribe(const char *ch, const struct engine_stream_opts *o, int recover,
                                   uint64_t offset, const char *epoch, unsigned max)
{
    struct engine_recovery rec = {recover, offset, (const uint8_t *)epoch,
                                  epoch ? strlen(epoch) : 0, max};
    struct sub_result r = {99, 0, {0, ""}, {0}, 0};
    int before = done;
    e->ops->subscribe(e, (const uint8_t *)ch, strlen(ch), o, &rec, on_subscribed, &r);
    wait_for(before + 1);
    CHECK_EQ(done, before + 1);
    return r;
}

/* Follow a channel (its events reach this node until unsubscribe). */
static void follow(const char *ch, const struct engine_stream_opts *o)
{
    struct sub_result r = subscribe(ch, o, 0, 0, NULL, 100);
    CHECK_EQ(r.status, 0);
}

TEST(test_engine_subscribe_recovers_what_was_missed_without_gap)
{
    struct engine_stream_opts ns = ns_history(10, 60);
    struct engine_pos pos;
    for (int i = 0; i < 5; i++)
        publish("r1", &ns, "{}", &pos);
    char epoch[ENGINE_EPOCH_LEN + 1];
    memcpy(epoch, pos.epoch, sizeof(epoch));
    /* saw up to 2: gets 3, 4, 5 and the top */
    struct sub_result r = subscribe("r1", &ns, 1, 2, epoch, 100);
    CHECK_EQ(r.status, 0);
    CHECK_EQ(r.recovered, 1);
    CHECK_EQ(r.pos.offset, 5);
    CHECK(strcmp(r.pos.epoch, epoch) == 0);
    CHECK_EQ(r.n, 3);
    CHECK_EQ(r.offsets[0], 3);
    CHECK_EQ(r.offsets[2], 5);
    e->ops->unsubscribe(e, (const uint8_t *)"r1", 2);
    /* another epoch, a gap past max_pubs or past the history: not recovered */
    r = subscribe("r1", &ns, 1, 2, "00000000", 100);
    CHECK_EQ(r.recovered, 0);
    CHECK_EQ(r.n, 0);
    e->ops->unsubscribe(e, (const uint8_t *)"r1", 2);
    r = subscribe("r1", &ns, 1, 1, epoch, 2);
    CHECK_EQ(r.recovered, 0);
    e->ops->unsubscribe(e, (const uint8_t *)"r1", 2);
    struct engine_stream_opts small = ns_history(2, 60);
    for (int i = 0; i < 5; i++)
        publish("r2", &small, "{}", &pos);
    r = subscribe("r2", &small, 1, 1, pos.epoch, 100);
    CHECK_EQ(r.recovered, 0); /* 2..3 fell out of a 2-entry history */
    e->ops->unsubscribe(e, (const uint8_t *)"r2", 2);
    /* nothing missed */
    r = subscribe("r1", &ns, 1, 5, epoch, 100);
    CHECK_EQ(r.recovered, 1);
    CHECK_EQ(r.n, 0);
    e->ops->unsubscribe(e, (const uint8_t *)"r1", 2);
    /* without history: no position, nothing to recover */
    struct engine_stream_opts none = ns_history(0, 0);
    r = subscribe("r3", &none, 1, 0, NULL, 100);
    CHECK_EQ(r.status, 0);
    CHECK_EQ(r.pos.epoch[0], 0);
}

TEST(test_engine_subscribe_keeps_the_epoch_of_a_channel_with_subscribers)
{
    struct engine_stream_opts ns = ns_history(10, 1);
    struct sub_result a = subscribe("r4", &ns, 0, 0, NULL, 100);
    CHECK(a.pos.epoch[0] != 0);
    struct timespec ts = {1, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    e->ops->sweep(e);
    struct sub_result b = subscribe("r4", &ns, 0, 0, NULL, 100);
    CHECK(strcmp(a.pos.epoch, b.pos.epoch) == 0);
    e->ops->unsubscribe(e, (const uint8_t *)"r4", 2);
    e->ops->unsubscribe(e, (const uint8_t *)"r4", 2);
    /* The memory engine forgets an idle stream once its history expired (Redis keeps a
     * stream's epoch for 30 days, as Centrifugo's history meta TTL). */
    if (!memory())
        return;
    nanosleep(&ts, NULL);
    e->ops->sweep(e); /* idle, no subscriber, history expired: forgotten with its epoch */
    struct sub_result c = subscribe("r4", &ns, 0, 0, NULL, 100);
    CHECK(strcmp(a.pos.epoch, c.pos.epoch) != 0);
    e->ops->unsubscribe(e, (const uint8_t *)"r4", 2);
}

struct presence_result {
    int status;
    size_t n;
    char clients[8][37];
    uint64_t num_clients, num_users;
};

static void on_presence(void *ud, int status, const struct engine_presence *m, size_t n)
{
    struct presence_result *r = ud;
    r->status = status;
    r->n = n;
    for (size_t i = 0; i < n && i < 8; i++)
        snprintf(r->clients[i], 37, "%s", m[i].client);
    done++;
}

static void on_stats(void *ud, int status, uint64_t clients, uint64_t users)
{
    struct presence_result *r = ud;
    r->status = status;
    r->num_clients = clients;
    r->num_users = users;
    done++;
}

static void join(const char *ch, const char *client, const char *user, int jl)
{
    static const char info[] = "{\"user\":\"u\"}";
    e->ops->presence_add(e, (const uint8_t *)ch, strlen(ch), client, (const uint8_t *)user,
                         strlen(user), (const uint8_t *)info, sizeof(info) - 1, 1, jl, NULL, NULL);
}

static void leave(const char *ch, const char *client, int jl)
{
    static const char info[] = "{\"user\":\"u\"}";
    e->ops->presence_remove(e, (const uint8_t *)ch, strlen(ch), client, (const uint8_t *)info,
                            sizeof(info) - 1, 1, jl);
}

static struct presence_result stats(const char *ch)
{
    struct presence_result r;
    memset(&r, 0, sizeof(r));
    int before = done;
    e->ops->presence_stats(e, (const uint8_t *)ch, strlen(ch), on_stats, &r);
    wait_for(before + 1);
    e->ops->presence(e, (const uint8_t *)ch, strlen(ch), on_presence, &r);
    wait_for(before + 2);
    CHECK_EQ(done, before + 2);
    return r;
}

TEST(test_engine_presence_counts_clients_and_distinct_users)
{
    struct presence_result r = stats("p1");
    CHECK_EQ(r.status, 0);
    CHECK_EQ(r.num_clients, 0);
    CHECK_EQ(r.num_users, 0);
    join("p1", "c1", "ann", 0);
    join("p1", "c2", "ann", 0);
    join("p1", "c3", "bob", 0);
    r = stats("p1");
    CHECK_EQ(r.num_clients, 3);
    CHECK_EQ(r.num_users, 2);
    CHECK_EQ(r.n, 3);
    leave("p1", "c1", 0);
    r = stats("p1");
    CHECK_EQ(r.num_clients, 2);
    CHECK_EQ(r.num_users, 2); /* ann still has c2 */
    leave("p1", "c2", 0);
    r = stats("p1");
    CHECK_EQ(r.num_users, 1);
    CHECK_EQ(r.n, 1);
    CHECK(strcmp(r.clients[0], "c3") == 0);
    leave("p1", "c3", 0);
    leave("p1", "c3", 0); /* twice: no-op */
    r = stats("p1");
    CHECK_EQ(r.num_clients, 0);
    CHECK_EQ(r.num_users, 0);
}

TEST(test_engine_join_and_leave_are_delivered)
{
    struct engine_stream_opts none = ns_history(0, 0);
    follow("p2", &none);
    reset_events();
    join("p2", "c1", "ann", 1);
    leave("p2", "c1", 1);
    join("p2", "c2", "bob", 0);
    stats("p2"); /* after the three, in order */
    CHECK_EQ(wait_events(2), 2);
    CHECK_EQ(events[0].kind, 1);
    CHECK_EQ(events[1].kind, 2);
    CHECK(strcmp(events[0].channel, "p2") == 0);
    CHECK(strcmp(events[0].data, "{\"user\":\"u\"}") == 0);
    leave("p2", "c2", 0);
    e->ops->unsubscribe(e, (const uint8_t *)"p2", 2);
}

TEST(test_engine_idempotency_key_publishes_once)
{
    struct engine_stream_opts ns = ns_history(10, 60), none = ns_history(0, 0);
    struct engine_pos a, b, c;
    follow("i1", &ns);
    follow("i2", &none);
    reset_events();
    CHECK_EQ(publish_key("i1", &ns, "1", "k-1", &a), 1);
    CHECK_EQ(publish_key("i1", &ns, "1", "k-1", &b), 1);
    CHECK_EQ(publish_key("i1", &ns, "2", "k-2", &c), 1);
    CHECK_EQ(a.offset, 1);
    CHECK_EQ(b.offset, 1); /* the first one's position, not published again */
    CHECK_EQ(c.offset, 2);
    CHECK_EQ(wait_events(2), 2);
    CHECK_EQ(publish_key("i2", &none, "1", "k-1", &a), 0);
    CHECK_EQ(publish_key("i2", &none, "1", "k-1", &a), 0);
    CHECK_EQ(wait_events(3), 3);
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CHECK_EQ(wait_events(4), 3); /* and no fourth */
    e->ops->unsubscribe(e, (const uint8_t *)"i1", 2);
    e->ops->unsubscribe(e, (const uint8_t *)"i2", 2);
}

struct listing {
    int n, found;
    const char *want;
};

static void on_channel(void *ud, const uint8_t *ch, size_t len)
{
    struct listing *l = ud;
    if (ch == NULL) {
        done++;
        return;
    }
    l->n++;
    if (strlen(l->want) == len && memcmp(ch, l->want, len) == 0)
        l->found = 1;
}

TEST(test_engine_lists_channels_holding_state)
{
    struct engine_stream_opts ns = ns_history(10, 60);
    struct engine_pos pos;
    publish("l1", &ns, "{}", &pos);
    follow("l1", &ns);
    struct listing l = {0, 0, "l1"};
    int before = done;
    e->ops->channels(e, on_channel, &l);
    wait_for(before + 1);
    CHECK_EQ(done, before + 1);
    CHECK(l.found);
    CHECK(l.n >= 1);
    e->ops->unsubscribe(e, (const uint8_t *)"l1", 2);
}

/* ---- shared limits (engine_ops.limit), asked of two nodes ---- */

static struct engine *e2; /* a second node on the same store, for the limit tests */

static void on_limit_answer(void *ud, int status, int allowed)
{
    int *r = ud;
    *r = status ? status : allowed;
    done++;
}

/* 1 taken, 0 refused, or the status; waits for the answer (the release's too, so that
 * what the next call sees is in order across the two nodes' connections). */
static int limit_ask(struct engine *x, const char *k, uint64_t interval_us, unsigned burst,
                     uint32_t max, int delta)
{
    struct engine_limit l = {interval_us, interval_us * burst, max, delta};
    int r = -1000, target = done + 1;
    x->ops->limit(x, (const uint8_t *)k, strlen(k), &l, on_limit_answer, &r);
    wait_for(target);
    return r;
}

TEST(test_engine_limit_counts_hold_across_nodes)
{
    if (e->ops->limit == NULL) {
        CHECK(memory()); /* one node: the caller's local tables are the whole truth */
        return;
    }
    CHECK_EQ(limit_ask(e, "user:u1", 0, 0, 2, 1), 1);
    CHECK_EQ(limit_ask(e2, "user:u1", 0, 0, 2, 1), 1);
    CHECK_EQ(limit_ask(e, "user:u1", 0, 0, 2, 1), 0);  /* two on two nodes: at max */
    CHECK_EQ(limit_ask(e2, "user:u1", 0, 0, 2, 1), 0);
    CHECK_EQ(limit_ask(e2, "user:u1", 0, 0, 2, -1), 1); /* one ends on the second node */
    CHECK_EQ(limit_ask(e, "user:u1", 0, 0, 2, 1), 1);
    CHECK_EQ(limit_ask(e, "user:u1", 0, 0, 2, 1), 0); /* the refusals counted nothing */
    CHECK_EQ(limit_ask(e, "user:other", 0, 0, 2, 1), 1);
}

TEST(test_engine_limit_bucket_is_shared_across_nodes)
{
    if (e->ops->limit == NULL)
        return;
    /* One a minute (nothing comes back during the test), 3 at once: the nodes drain
     * one bucket. */
    const uint64_t minute = 60000000;
    CHECK_EQ(limit_ask(e, "pub:u1", minute, 3, 0, 0), 1);
    CHECK_EQ(limit_ask(e2, "pub:u1", minute, 3, 0, 0), 1);
    CHECK_EQ(limit_ask(e, "pub:u1", minute, 3, 0, 0), 1);
    CHECK_EQ(limit_ask(e2, "pub:u1", minute, 3, 0, 0), 0);
    CHECK_EQ(limit_ask(e, "pub:u1", minute, 3, 0, 0), 0);
    CHECK_EQ(limit_ask(e2, "pub:u2", minute, 3, 0, 0), 1);
    /* A count refused does not drain the bucket, nor a bucket refused add to the count
     * (both or neither): 2 at once, 1 at a time. */
    CHECK_EQ(limit_ask(e, "ip:10.0.0.1", minute, 2, 1, 1), 1);
    CHECK_EQ(limit_ask(e2, "ip:10.0.0.1", minute, 2, 1, 1), 0); /* the count */
    CHECK_EQ(limit_ask(e, "ip:10.0.0.1", 0, 0, 1, -1), 1);
    CHECK_EQ(limit_ask(e2, "ip:10.0.0.1", minute, 2, 1, 1), 1); /* the bucket's second */
    CHECK_EQ(limit_ask(e2, "ip:10.0.0.1", 0, 0, 1, -1), 1);
    CHECK_EQ(limit_ask(e, "ip:10.0.0.1", minute, 2, 1, 1), 0); /* the bucket */
    CHECK_EQ(limit_ask(e2, "ip:10.0.0.1", 0, 0, 1, 1), 1);     /* not counted by it */
}

/* A node whose add Redis answers only after the connection was released again (Redis
 * stalled: the asker hears "unavailable" after 250 ms and decides alone). The release
 * must still count: the node's refresh then tells Redis it holds nothing, and the other
 * node may take the one place. The node's count once ended at 1 here for good. */
static pid_t redis_pid;
static struct engine *e3; /* presence_ttl 3 s: its counts are refreshed every second */

static void run_for(int ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        poll_once();
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}

TEST(test_engine_limit_release_before_the_add_is_answered)
{
    if (e3 == NULL)
        return; /* the memory engine, or no redis-server pid to stall */
    struct engine_limit add = {0, 0, 1, 1}, release = {0, 0, 1, -1};
    const uint8_t *k = (const uint8_t *)"user:late";
    CHECK_EQ(kill(redis_pid, SIGSTOP), 0);
    int r = -1000, target = done + 1;
    e3->ops->limit(e3, k, 9, &add, on_limit_answer, &r);
    wait_for(target);
    CHECK_EQ(r, ENGINE_ERR_UNAVAILABLE); /* answered early: the node decides alone */
    e3->ops->limit(e3, k, 9, &release, NULL, NULL);
    CHECK_EQ(kill(redis_pid, SIGCONT), 0);
    run_for(2500); /* Redis answers both; then a refresh or two */
    CHECK_EQ(limit_ask(e2, "user:late", 0, 0, 1, 1), 1);
}

int main(void)
{
    struct config c;
    memset(&c, 0, sizeof(c));
    const char *name = getenv("HERALD_TEST_ENGINE");
    strcpy(c.engine, name ? name : "memory");
    c.max_channels = 1000;
    char err[160];
    struct engine_events ev = {on_publication, on_join_leave, NULL, NULL, NULL};
    struct engine_host host = {host_current, host_post, host_uv_loop, NULL};
    /* A Redis engine runs against the server in HERALD_TEST_REDIS, under a prefix of its
     * own so that runs never see each other's keys. */
    char *url = getenv("HERALD_TEST_REDIS");
    /* Or a Redis Cluster: its seeds, comma-separated, in HERALD_TEST_REDIS_CLUSTER. */
    char *cluster = getenv("HERALD_TEST_REDIS_CLUSTER");
    char *seeds[8];
    char prefix[32] = "test-";
    if (strcmp(c.engine, "redis") == 0) {
        if (cluster) {
            c.n_redis_cluster_urls = 0;
            for (char *s = strtok(cluster, ","); s && c.n_redis_cluster_urls < 8;
                 s = strtok(NULL, ","))
                seeds[c.n_redis_cluster_urls++] = s;
            c.redis_cluster_urls = seeds;
        } else if (url == NULL) {
            fprintf(stderr, "HERALD_TEST_REDIS=redis://host:port is needed\n");
            return 1;
        } else {
            c.redis_urls = &url;
            c.n_redis_urls = 1;
        }
        srand((unsigned)time(NULL) ^ (unsigned)getpid());
        snprintf(prefix + 5, sizeof(prefix) - 5, "%08x", (unsigned)rand());
        c.redis_prefix = prefix;
    }
    uv_timer_init(uv_default_loop(), &keep_polling);
    uv_timer_start(&keep_polling, on_keep_polling, 1000, 1000);
    e = engine_open(&c, &ev, &host, err, sizeof(err));
    if (e == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    RUN(test_engine_publish_assigns_consecutive_offsets_in_one_epoch);
    RUN(test_engine_channels_have_independent_streams);
    RUN(test_engine_publish_without_history_has_no_position);
    RUN(test_engine_history_keeps_only_history_size_newest);
    RUN(test_engine_history_limit_since_and_reverse);
    RUN(test_engine_history_since_other_epoch_is_unrecoverable);
    RUN(test_engine_history_expires_after_ttl);
    RUN(test_engine_history_remove_keeps_position);
    RUN(test_engine_history_returns_data_byte_for_byte);
    RUN(test_engine_reset_starts_the_streams_of_a_prefix_again);
    RUN(test_engine_delivers_every_publication_in_offset_order);
    RUN(test_engine_subscribe_recovers_what_was_missed_without_gap);
    RUN(test_engine_subscribe_keeps_the_epoch_of_a_channel_with_subscribers);
    RUN(test_engine_presence_counts_clients_and_distinct_users);
    RUN(test_engine_join_and_leave_are_delivered);
    RUN(test_engine_idempotency_key_publishes_once);
    RUN(test_engine_lists_channels_holding_state);
    if (e->ops->limit) {
        e2 = engine_open(&c, &ev, &host, err, sizeof(err));
        if (e2 == NULL) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    RUN(test_engine_limit_counts_hold_across_nodes);
    RUN(test_engine_limit_bucket_is_shared_across_nodes);
    /* The stalled-Redis case needs the server's pid (scripts/with-redis gives it). */
    const char *pid = getenv("HERALD_TEST_REDIS_PID");
    if (e->ops->limit && url && cluster == NULL && pid && atoi(pid) > 0) {
        redis_pid = (pid_t)atoi(pid);
        struct config c3 = c;
        c3.presence_ttl = 3;
        e3 = engine_open(&c3, &ev, &host, err, sizeof(err));
        if (e3 == NULL) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    RUN(test_engine_limit_release_before_the_add_is_answered);
    if (e3)
        engine_close(e3);
    if (e2)
        engine_close(e2);
    engine_close(e);
    uv_close((uv_handle_t *)&keep_polling, NULL);
    uv_run(uv_default_loop(), UV_RUN_NOWAIT);
    if (strcmp(c.engine, "memory") != 0)
        return test_summary(c.engine);
    /* max_channels: a fresh engine with room for 3 */
    c.max_channels = 3;
    e = engine_open(&c, &ev, &host, err, sizeof(err));
    struct engine_stream_opts ns = ns_history(10, 60);
    struct engine_pos pos;
    test_failed_now = 0;
    CHECK_EQ(publish("m1", &ns, "{}", &pos), 1);
    CHECK_EQ(publish("m2", &ns, "{}", &pos), 1);
    CHECK_EQ(publish("m3", &ns, "{}", &pos), 1);
    CHECK_EQ(publish("m4", &ns, "{}", &pos), ENGINE_ERR_LIMIT);
    CHECK_EQ(publish("m1", &ns, "{}", &pos), 1); /* existing channels go on */
    struct buf out = BUF_INIT;
    CHECK_EQ(history("m5", &ns, -1, 0, 0, NULL, 0, &out, &pos), ENGINE_ERR_LIMIT);
    buf_free(&out);
    if (test_failed_now) {
        test_failed++;
        fprintf(stderr, "FAIL test_engine_refuses_new_channels_past_max_channels\n");
    } else {
        test_passed++;
    }
    engine_close(e);
    return test_summary("engine");
}
