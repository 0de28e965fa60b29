/* The Redis engine (see engine.h): channels, history and presence in Redis, shared by
 * every herald node that names the same Redis and redis_prefix.
 *
 * Every Redis connection lives on one loop, the engine's home (loop 0): per shard (one
 * per redis_urls entry, a channel's shard picked by a jump consistent hash of its name)
 * a command connection, pipelined, and a pub/sub connection on which this node
 * subscribes once per channel that has local subscribers. The home loop's own requests
 * go straight to Redis; other loops' come through a mutex-guarded queue and a uv_async
 * wake-up, and their completions go back through the engine host. Owning all Redis
 * state on one loop keeps it free of locks, and keeps a channel's deliveries and the
 * reads of a subscribe in one order: while a subscribe reads the stream position (and
 * what the client missed), the channel's pub/sub messages are held back and delivered
 * after it, so that nothing is missed or sent twice. And a read of many pub/sub
 * messages becomes one run of publications on the home loop, one write per subscriber
 * for many of them, with no thread in between.
 *
 * The connections speak RESP, read with hiredis' reader (redisReader) and written by hand,
 * over libuv TCP handles of our own: no blocking call, and the socket layer is ours.
 * Publishing is one Lua script per publication (offset, stream, TTLs, epoch,
 * idempotency key, pub/sub message); a channel's keys share the hash tag {channel}. */
#include <netdb.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#include <hiredis/hiredis.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/config.h"
#include "core/log.h"
#include "core/rand.h"
#include "core/table.h"
#include "engine/engine.h"
#include "engine/redis_cluster.h"
#include "engine/redis_msg.h"
#include "metrics/metrics.h"

#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000
#define META_TTL_SEC (30 * 24 * 3600) /* a stream's epoch and offset, as Centrifugo's default */
#define IDEMPOTENCY_TTL_SEC 300
#define CHECK_INTERVAL_MS 5000 /* how often a followed stream's position is checked */
#define CLUSTER_MAX_SHARDS 64 /* the cluster's masters, and those that were (failed over) */
#define REMAP_FAST_MS 500     /* the slot map asked again while a slot has no live master */
#define MAX_REDIRECTS 5       /* MOVED/ASK followed for one command, at most */
#define NO_SHARD 0xffff
/* A shared limit Redis has not answered by then is decided by the node alone: a stalled
 * Redis must not hold connects and publishes (the late answer still counts). */
#define LIMIT_ANSWER_MS 250

/* KEYS: stream, meta, idempotency key. ARGV: history_size, history_ttl, data, info, epoch
 * candidate, pub/sub channel, use idempotency ('1'/'0'), meta ttl. Returns {offset, epoch}. */
static const char publish_lua[] =
    "if ARGV[7] == '1' then local p = redis.call('get', KEYS[3]) "
    "if p then local s = string.find(p, ' ') "
    "return {tonumber(string.sub(p, 1, s - 1)), string.sub(p, s + 1)} end end "
    "local size, offset, epoch = tonumber(ARGV[1]), 0, '' "
    "if size > 0 then epoch = redis.call('hget', KEYS[2], 'e') "
    "if not epoch then epoch = ARGV[5] redis.call('hset', KEYS[2], 'e', epoch) end "
    "offset = redis.call('hincrby', KEYS[2], 'o', 1) "
    "local t = redis.call('time') "
    "redis.call('xadd', KEYS[1], 'MAXLEN', size, '0-' .. offset, 'd', ARGV[3], 'i', ARGV[4], "
    "'t', t[1] * 1000 + math.floor(t[2] / 1000)) "
    "redis.call('expire', KEYS[1], ARGV[2]) redis.call('expire', KEYS[2], ARGV[8]) end "
    "redis.call('publish', ARGV[6], 'p' .. offset .. ' ' .. #ARGV[4] .. ' ' .. ARGV[4] .. ARGV[3]) "
    "if ARGV[7] == '1' then redis.call('set', KEYS[3], offset .. ' ' .. epoch, 'EX', 300) end "
    "return {offset, epoch}";

/* KEYS: stream, meta. ARGV: history_ttl (s), epoch candidate, limit (-1 all), since
 * (-1 none), reverse ('1'/'0'), meta ttl. Returns {epoch, top, {offset, data, info}...}. */
static const char history_lua[] =
    "local epoch = redis.call('hget', KEYS[2], 'e') "
    "if not epoch then epoch = ARGV[2] redis.call('hset', KEYS[2], 'e', epoch) "
    "redis.call('expire', KEYS[2], ARGV[6]) end "
    "local top = tonumber(redis.call('hget', KEYS[2], 'o') or '0') "
    "local out = {epoch, top} local limit, since = tonumber(ARGV[3]), tonumber(ARGV[4]) "
    "if limit == 0 then return out end "
    "local t = redis.call('time') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
    "local ttl = tonumber(ARGV[1]) * 1000 local e "
    "if ARGV[5] == '1' then e = redis.call('xrevrange', KEYS[1], "
    "since >= 0 and ('(0-' .. since) or '+', '-') "
    "else e = redis.call('xrange', KEYS[1], since >= 0 and ('(0-' .. since) or '-', '+') end "
    "local n = 0 for _, x in ipairs(e) do local f = x[2] local ts = 0 local d, i = '', '' "
    "for k = 1, #f, 2 do if f[k] == 'd' then d = f[k + 1] elseif f[k] == 'i' then i = f[k + 1] "
    "elseif f[k] == 't' then ts = tonumber(f[k + 1]) end end "
    "if ttl == 0 or ts + ttl > now then "
    "if limit > 0 and n >= limit then break end n = n + 1 "
    "table.insert(out, tonumber(string.sub(x[1], 3))) table.insert(out, d) "
    "table.insert(out, i) end end return out";

/* Presence: KEYS presence hash (client -> "<user length>:<user><info>"), users hash
 * (user -> connections), expiry sorted set (client -> ms). A member not refreshed by its
 * node within presence_ttl (a crashed node's) is removed by the next script that looks. */
#define PRESENCE_EXPIRE_LUA                                                                      \
    "local t = redis.call('time') local now = t[1] * 1000 + math.floor(t[2] / 1000) "          \
    "for _, c in ipairs(redis.call('zrangebyscore', KEYS[3], '-inf', now)) do "               \
    "local v = redis.call('hget', KEYS[1], c) if v then redis.call('hdel', KEYS[1], c) "        \
    "local i = string.find(v, ':') local u = string.sub(v, i + 1, i + tonumber(string.sub(v, 1, i - 1))) " \
    "if redis.call('hincrby', KEYS[2], u, -1) <= 0 then redis.call('hdel', KEYS[2], u) end end " \
    "redis.call('zrem', KEYS[3], c) end "

/* ARGV: client, user, info, join ('1'), pub/sub channel, presence ('1'), ttl (s). */
static const char presence_add_lua[] =
    PRESENCE_EXPIRE_LUA
    "if ARGV[6] == '1' then "
    "if redis.call('hset', KEYS[1], ARGV[1], #ARGV[2] .. ':' .. ARGV[2] .. ARGV[3]) == 1 then "
    "redis.call('hincrby', KEYS[2], ARGV[2], 1) end "
    "redis.call('zadd', KEYS[3], now + tonumber(ARGV[7]) * 1000, ARGV[1]) "
    "for k = 1, 3 do redis.call('expire', KEYS[k], ARGV[7]) end end "
    "if ARGV[4] == '1' then redis.call('publish', ARGV[5], 'j' .. ARGV[3]) end return 1";

/* ARGV: client, leave ('1'), pub/sub channel, info. */
static const char presence_remove_lua[] =
    "local v = redis.call('hget', KEYS[1], ARGV[1]) "
    "if v then redis.call('hdel', KEYS[1], ARGV[1]) local c = string.find(v, ':') "
    "local u = string.sub(v, c + 1, c + tonumber(string.sub(v, 1, c - 1))) "
    "if redis.call('hincrby', KEYS[2], u, -1) <= 0 then redis.call('hdel', KEYS[2], u) end end "
    "redis.call('zrem', KEYS[3], ARGV[1]) "
    "if ARGV[2] == '1' then redis.call('publish', ARGV[3], 'l' .. ARGV[4]) end return 1";

/* The live members ({client, value, ...}), or with ARGV[1] == 'stats' their counts. */
static const char presence_get_lua[] =
    PRESENCE_EXPIRE_LUA
    "if ARGV[1] == 'stats' then return {redis.call('hlen', KEYS[1]), redis.call('hlen', KEYS[2])} end "
    "return redis.call('hgetall', KEYS[1])";

/* ARGV: ttl (s), then this node's clients in the channel: their expiry moves on. */
static const char presence_refresh_lua[] =
    "local t = redis.call('time') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
    "for k = 2, #ARGV do redis.call('zadd', KEYS[3], 'XX', now + tonumber(ARGV[1]) * 1000, ARGV[k]) end "
    "for k = 1, 3 do redis.call('expire', KEYS[k], ARGV[1]) end return 1";

/* KEYS: nodes hash, seen sorted set. ARGV: uid, info, expiry (ms). */
static const char announce_lua[] =
    "local t = redis.call('time') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
    "redis.call('hset', KEYS[1], ARGV[1], ARGV[2]) redis.call('zadd', KEYS[2], now, ARGV[1]) "
    "for _, u in ipairs(redis.call('zrangebyscore', KEYS[2], '-inf', now - tonumber(ARGV[3]))) do "
    "redis.call('hdel', KEYS[1], u) redis.call('zrem', KEYS[2], u) end return 1";

/* KEYS: nodes hash, seen sorted set. ARGV: expiry (ms). Returns {uid, info, ...}. */
static const char nodes_lua[] =
    "local t = redis.call('time') local now = t[1] * 1000 + math.floor(t[2] / 1000) local out = {} "
    "for _, u in ipairs(redis.call('zrangebyscore', KEYS[2], now - tonumber(ARGV[1]), '+inf')) do "
    "local v = redis.call('hget', KEYS[1], u) if v then table.insert(out, u) table.insert(out, v) "
    "end end return out";

/* KEYS: meta. ARGV: the epoch seen, a new one, meta ttl. The stream's epoch becomes the
 * new one if it still is the one seen; returns the epoch it has now. */
static const char reepoch_lua[] =
    "local e = redis.call('hget', KEYS[1], 'e') "
    "if e == ARGV[1] then redis.call('hset', KEYS[1], 'e', ARGV[2]) "
    "redis.call('expire', KEYS[1], ARGV[3]) return ARGV[2] end return e";

/* A limit shared by the nodes. KEYS: bucket (its TAT, in microseconds of Redis' clock),
 * counts hash (node -> connections), expiry sorted set (node -> ms). ARGV: interval and
 * window (us; interval 0: no bucket), max (0: no count), delta, node, ttl (ms). The
 * counts of a node that stopped refreshing them (a dead one) go first. Returns 1 taken,
 * 0 refused (then nothing changed). Numbers leave as %.0f: Lua 5.1's tostring would
 * round a microsecond clock. */
static const char limit_lua[] =
    "local t = redis.call('time') local now = t[1] * 1000000 + t[2] "
    "local nowms = math.floor(now / 1000) "
    "local interval, window = tonumber(ARGV[1]), tonumber(ARGV[2]) "
    "local max, delta = tonumber(ARGV[3]), tonumber(ARGV[4]) "
    "if max > 0 then "
    "for _, n in ipairs(redis.call('zrangebyscore', KEYS[3], '-inf', nowms)) do "
    "redis.call('hdel', KEYS[2], n) redis.call('zrem', KEYS[3], n) end "
    "if delta > 0 then local total = 0 "
    "for _, v in ipairs(redis.call('hvals', KEYS[2])) do total = total + tonumber(v) end "
    "if total + delta > max then return 0 end end end "
    "if interval > 0 then local tat = tonumber(redis.call('get', KEYS[1]) or '0') "
    "if tat < now then tat = now end "
    "if tat + interval - now > window then return 0 end "
    "redis.call('set', KEYS[1], string.format('%.0f', tat + interval), 'PX', "
    "math.floor((tat + interval - now) / 1000) + 1000) end "
    "if max > 0 and delta ~= 0 then "
    "if redis.call('hincrby', KEYS[2], ARGV[5], delta) <= 0 then redis.call('hdel', KEYS[2], ARGV[5]) end "
    "redis.call('zadd', KEYS[3], nowms + tonumber(ARGV[6]), ARGV[5]) "
    "redis.call('pexpire', KEYS[2], ARGV[6]) redis.call('pexpire', KEYS[3], ARGV[6]) end "
    "return 1";

/* KEYS: counts hash, expiry sorted set. ARGV: node, its count (absolute: what this node
 * holds, so that a change lost while Redis was away is put right), ttl (ms). */
static const char limit_refresh_lua[] =
    "local t = redis.call('time') local nowms = t[1] * 1000 + math.floor(t[2] / 1000) "
    "if tonumber(ARGV[2]) > 0 then redis.call('hset', KEYS[1], ARGV[1], ARGV[2]) "
    "redis.call('zadd', KEYS[2], nowms + tonumber(ARGV[3]), ARGV[1]) "
    "redis.call('pexpire', KEYS[1], ARGV[3]) redis.call('pexpire', KEYS[2], ARGV[3]) "
    "else redis.call('hdel', KEYS[1], ARGV[1]) redis.call('zrem', KEYS[2], ARGV[1]) end return 1";

enum script {
    SCRIPT_PUBLISH,
    SCRIPT_HISTORY,
    SCRIPT_PRESENCE_ADD,
    SCRIPT_PRESENCE_REMOVE,
    SCRIPT_PRESENCE_GET,
    SCRIPT_PRESENCE_REFRESH,
    SCRIPT_ANNOUNCE,
    SCRIPT_NODES,
    SCRIPT_REEPOCH,
    SCRIPT_LIMIT,
    SCRIPT_LIMIT_REFRESH,
    NSCRIPTS
};
static const char *const scripts[NSCRIPTS] = {
    publish_lua,          history_lua,  presence_add_lua, presence_remove_lua, presence_get_lua,
    presence_refresh_lua, announce_lua, nodes_lua, reepoch_lua, limit_lua, limit_refresh_lua};

#define NODE_EXPIRY_MS 15000 /* three announcement intervals */

struct redis;
struct rconn;

/* A command awaiting its reply, in the order sent. */
struct pending {
    struct pending *next;
    void (*done)(struct redis *r, void *arg, redisReply *reply); /* reply NULL: connection lost */
    void *arg;
    char *cmd; /* on a cluster: the command's bytes, sent again where MOVED/ASK points */
    size_t len;
    unsigned redirects;
    uint32_t sent_us; /* metrics_stamp_us() when sent: herald_engine_command_seconds */
};

/* One RESP connection (command or pub/sub) of a shard, on the engine thread. */
struct rconn {
    struct redis *r;
    struct shard *sh;
    int pubsub;
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_timer_t retry;
    redisReader *reader;
    int up, connecting, closing;
    int down; /* lost, and not back yet: requests fail at once (temporary) */
    unsigned backoff_ms;
    struct pending *head, *tail;
    char *outbox; /* commands formatted while down, sent on connect */
    size_t outbox_len, outbox_cap;
    /* Commands of this loop turn, written together after it (flush_writes): Redis reads
     * a turn's publications at once, and sends their pub/sub messages back at once. */
    char *out;
    size_t out_len, out_cap;
    /* rediss://: OpenSSL over memory BIOs, our socket underneath (Debian's hiredis 0.14
     * has no TLS; its reader parses what SSL_read gives). */
    SSL *ssl;
    BIO *rbio, *wbio;
    int handshaking;
};

/* Pub/sub channels to (un)subscribe, gathered while a batch of requests is handled
 * and sent as one command per shard. */
struct batch {
    char **names;
    size_t *lens;
    size_t n, cap;
};

#define DOWN_LOST 1

struct shard {
    struct batch subscribe, unsubscribe;
    int tls;
    char host[256]; /* for the certificate check */
    char url[256]; /* without its password, for /ready */
    atomic_int reachable; /* both connections up: read by any thread */
    atomic_int down_why;  /* when not: 0 (never connected), DOWN_LOST or the last connect's
                             libuv error (ECONNREFUSED) */
    struct sockaddr_storage addr;
    char *user, *password;
    int db;
    struct rconn cmd, sub;
    char sha[NSCRIPTS][41];
    uint16_t index;
    atomic_int owns; /* on a cluster: the slots this master serves (read by any thread) */
};

/* A channel this node follows on pub/sub: its local subscribe calls, and the deliveries
 * held back while a subscribe reads the stream. */
struct held {
    struct held *next;
    size_t len;
    char msg[];
};

struct rchan {
    struct table_node node;
    uint32_t refs;
    uint8_t subscribed; /* SUBSCRIBE confirmed */
    uint8_t check;      /* read the stream once subscribed again (after a reconnect) */
    int16_t shard;      /* where its SUBSCRIBE was sent; -1: nowhere (a cluster dropped it) */
    struct engine_stream_opts opts;
    uint64_t last;                    /* with history: the last offset handed to the hub */
    char epoch[ENGINE_EPOCH_LEN + 1]; /* the stream's epoch as this node knows it */
    uint32_t reading;   /* subscribes reading the stream: deliveries held meanwhile */
    struct held *held, **held_tail;
    struct request *waiting; /* subscribes waiting for the SUBSCRIBE confirmation */
    uint16_t name_len;
    uint8_t name[];
};

/* A request from a loop, with copies of everything it needs. */
enum req_kind {
    REQ_PUBLISH,
    REQ_HISTORY,
    REQ_HISTORY_REMOVE,
    REQ_SUBSCRIBE,
    REQ_UNSUBSCRIBE,
    REQ_PRESENCE_ADD,
    REQ_PRESENCE_REMOVE,
    REQ_PRESENCE,
    REQ_PRESENCE_STATS,
    REQ_FILL, /* the engine's own: read what a followed stream's deliveries missed */
    REQ_CONTROL,
    REQ_ANNOUNCE,
    REQ_NODES,
    REQ_RESET,
    REQ_LIMIT,
};

struct request {
    struct request *next;
    enum req_kind kind;
    int slot;
    void *cb, *ud;
    struct engine_stream_opts opts;
    struct engine_history_query q; /* since_epoch points into bytes */
    struct engine_recovery rec;    /* epoch points into bytes */
    int flag_a, flag_b;            /* presence, join_leave */
    /* results */
    int status;
    struct engine_pos pos;
    int recovered;
    size_t n;
    void *items;       /* engine_pub[] or engine_presence[] */
    redisReply *reply; /* kept for the pubs' bytes */
    uint64_t num_a, num_b;
    /* REQ_LIMIT waiting for Redis: in the engine's list, oldest first; early: answered
     * already (LIMIT_ANSWER_MS passed), the reply only counts */
    struct request *lnext, *lprev;
    uint64_t asked_ms;
    int early;
    /* copied arguments: channel, then the others, NUL-separated */
    size_t ch_len, a_len, b_len, c_len, d_len;
    char *ch, *a, *b, *c, *d;
    char bytes[];
};

#define HOME_SLOT 0 /* the loop that runs the engine's I/O */

struct redis {
    struct engine e;
    char *prefix;
    unsigned nshards;
    struct shard *shards;
    uv_loop_t *uv; /* the home loop's */
    uv_async_t wake;
    uv_timer_t check;    /* the periodic position check */
    uv_timer_t presence; /* the refresh of this node's presence members */
    unsigned presence_ttl;
    SSL_CTX *tls; /* for rediss:// shards, or NULL */
    struct table pres; /* struct rpres, engine thread only */
    pthread_mutex_t lock; /* the request queue, and chans for channels() */
    struct request *queue, **queue_tail;
    int stopping;
    struct table chans; /* struct rchan, under lock when changed */
    /* node-to-node: the nodes hash, its seen set and the control channel share a slot */
    char nodes_key[300], seen_key[300], control[300];
    size_t nodes_len, seen_len, control_len;
    int control_shard; /* where the control channel is subscribed; -1: nowhere */
    const char *script_text[NSCRIPTS];
    /* A Redis Cluster (redis_cluster_urls): shards are its masters, found from the seeds
     * and added as the slot map names them; sharded pub/sub. */
    int cluster;
    unsigned cap;       /* shards' room: CLUSTER_MAX_SHARDS, or the number of redis_urls */
    uint16_t *slots;    /* slot -> shard, NO_SHARD unknown */
    unsigned nodes_slot;
    uv_timer_t remap;   /* the slot map asked for again */
    uv_check_t writes;  /* after each loop turn: the connections' buffered commands out */
    /* Active while commands wait in a buffer: the loop then polls without blocking, so
     * that flush_writes (which runs after the poll) sends what a timer or a prepare
     * callback asked for now, not when some other event next wakes the loop. */
    uv_idle_t kick;
    int remapping, remap_soon;
    atomic_int mapped;  /* every slot has a master */
    char *seed_user, *seed_password;
    /* Shared limits: this node's counts (struct rlimit, engine thread only), written to
     * Redis whole with the presence refresh; uid names this node's entries. */
    struct table limits;
    char uid[17];
    struct request *asking, *asking_tail; /* limit requests waiting for Redis */
    uv_timer_t limit_timer;               /* answers those waiting too long */
};

static struct redis *of(struct engine *e)
{
    return (struct redis *)e;
}

/* ---- keys ---- */

/* prefix:{channel}:suffix[extra], NUL-terminated, into buf when it fits in cap bytes,
 * else malloc'd (key_done frees it); *out_len its length. The publish path builds its
 * keys on its stack: four allocations a publication fewer. */
static char *key_in(const struct redis *r, char *buf, size_t cap, const char *ch, size_t len,
                    const char *suffix, const char *extra, size_t extra_len, size_t *out_len)
{
    size_t pl = strlen(r->prefix), sl = strlen(suffix);
    size_t n = pl + len + sl + extra_len + 5;
    char *k = n <= cap ? buf : malloc(n);
    if (k == NULL)
        return NULL;
    char *w = k;
    memcpy(w, r->prefix, pl);
    w += pl;
    *w++ = ':';
    *w++ = '{';
    memcpy(w, ch, len);
    w += len;
    *w++ = '}';
    *w++ = ':';
    memcpy(w, suffix, sl);
    w += sl;
    if (extra_len) {
        memcpy(w, extra, extra_len);
        w += extra_len;
    }
    *w = 0;
    *out_len = (size_t)(w - k);
    return k;
}

static void key_done(char *k, const char *buf)
{
    if (k != buf)
        free(k);
}

/* prefix:{channel}:suffix, malloc'd; *len its length. */
static char *key(const struct redis *r, const char *ch, size_t len, const char *suffix,
                 const char *extra, size_t extra_len, size_t *out_len)
{
    return key_in(r, NULL, 0, ch, len, suffix, extra, extra_len, out_len);
}

/* Decimal digits of v into w (no NUL); the end. */
static char *put_dec(char *w, uint64_t v)
{
    char t[20];
    int n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *w++ = t[--n];
    return w;
}

static size_t dec_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* v as a NUL-terminated decimal in out (at least 21 bytes); its length. */
static size_t dec(char *out, uint64_t v)
{
    char *e = put_dec(out, v);
    *e = 0;
    return (size_t)(e - out);
}

/* Jump consistent hash (Lamping and Veach, 2014): adding a shard moves 1/n of the
 * channels. */
static unsigned shard_of(const struct redis *r, const char *ch, size_t len)
{
    if (r->cluster) {
        /* A slot not known yet goes to a seed, whose MOVED puts it right. */
        uint16_t s = r->slots[redis_channel_slot(r->prefix, ch, len, "c")];
        return s == NO_SHARD ? 0 : s;
    }
    uint64_t k = table_hash(ch, len);
    int64_t b = -1, j = 0;
    while (j < (int64_t)r->nshards) {
        b = j;
        k = k * 2862933555777941757ULL + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((k >> 33) + 1)));
    }
    return (unsigned)b;
}

/* The nodes hash, its seen set and the control channel: the first shard, or on a
 * cluster the master of their slot. */
static unsigned nodes_shard(const struct redis *r)
{
    if (!r->cluster)
        return 0;
    uint16_t s = r->slots[r->nodes_slot];
    return s == NO_SHARD ? 0 : s;
}

/* ---- connections ---- */

static void conn_start(struct rconn *c);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static _Thread_local char chunk[64 * 1024];
    buf->base = chunk;
    buf->len = sizeof(chunk);
}

static void on_written(uv_write_t *w, int status)
{
    free(w->data);
    free(w);
}

static void conn_lost(struct rconn *c);
static void tls_handshake(struct rconn *c);

/* Write bytes (taking them) to the socket. */
static void write_socket(struct rconn *c, char *bytes, size_t len)
{
    uv_write_t *w = malloc(sizeof(*w));
    if (w == NULL) {
        free(bytes);
        return;
    }
    w->data = bytes;
    uv_buf_t b = uv_buf_init(bytes, (unsigned)len);
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(bytes);
        free(w);
    }
}

/* What TLS has to send (handshake records, encrypted commands), to the socket. */
static void tls_flush(struct rconn *c)
{
    size_t n = BIO_ctrl_pending(c->wbio);
    if (n == 0)
        return;
    char *out = malloc(n);
    if (out == NULL)
        return;
    int got = BIO_read(c->wbio, out, (int)n);
    if (got <= 0) {
        free(out);
        return;
    }
    write_socket(c, out, (size_t)got);
}

static void on_kick(uv_idle_t *h)
{
    (void)h; /* its being active is what counts (see struct redis) */
}

/* Commands wait in c's buffer: sent after this turn's poll, which must not block. */
static void kick(struct rconn *c)
{
    if (c->up && !c->r->stopping)
        uv_idle_start(&c->r->kick, on_kick);
}

/* Room for n more bytes at the end of what the connection sends next: this turn's
 * buffer, written after the turn, or while the connection is not up the outbox sent on
 * connect. NULL when out of memory. */
static char *out_room(struct rconn *c, size_t n)
{
    char **buf = c->up ? &c->out : &c->outbox;
    size_t *used = c->up ? &c->out_len : &c->outbox_len;
    size_t *cap = c->up ? &c->out_cap : &c->outbox_cap;
    if (*used + n > *cap) {
        size_t want = *cap * 2 > *used + n ? *cap * 2 : *used + n;
        if (want < 4096)
            want = 4096;
        char *o = realloc(*buf, want);
        if (o == NULL)
            return NULL;
        *buf = o;
        *cap = want;
    }
    char *at = *buf + *used;
    *used += n;
    kick(c);
    return at;
}

/* Send bytes already formatted (taking them). */
static void send_raw(struct rconn *c, char *cmd, size_t len)
{
    if (c->up && c->out == NULL) {
        c->out = cmd; /* the usual lone buffer: no copy */
        c->out_len = c->out_cap = len;
        kick(c);
        return;
    }
    char *at = out_room(c, len);
    if (at)
        memcpy(at, cmd, len);
    free(cmd);
}

/* The turn's commands of one connection, to its socket (through TLS for rediss://). */
static void flush_conn(struct rconn *c)
{
    if (c->out_len == 0 || !c->up)
        return;
    char *bytes = c->out;
    size_t len = c->out_len;
    c->out = NULL;
    c->out_len = c->out_cap = 0;
    if (c->ssl) {
        int wrote = SSL_write(c->ssl, bytes, (int)len);
        free(bytes);
        if (wrote != (int)len) {
            conn_lost(c);
            return;
        }
        tls_flush(c);
        return;
    }
    write_socket(c, bytes, len);
}

static struct pending *expect(struct rconn *c,
                              void (*done)(struct redis *, void *, redisReply *), void *arg)
{
    struct pending *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        done(c->r, arg, NULL);
        return NULL;
    }
    p->done = done;
    p->arg = arg;
    p->sent_us = metrics_stamp_us();
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    return p;
}

/* The RESP array of argv[0..argc): its length, and written at w. By hand rather than
 * with hiredis' redisFormatCommandArgv: that one allocates each command and prints each
 * length with sprintf, which was 4% of herald's cycles a publication on Redis. */
static size_t resp_len(int argc, const size_t *lens)
{
    size_t n = 3 + dec_len((uint64_t)argc);
    for (int i = 0; i < argc; i++)
        n += 5 + dec_len(lens[i]) + lens[i];
    return n;
}

static void resp_write(char *w, int argc, const char **argv, const size_t *lens)
{
    *w++ = '*';
    w = put_dec(w, (uint64_t)argc);
    *w++ = '\r';
    *w++ = '\n';
    for (int i = 0; i < argc; i++) {
        *w++ = '$';
        w = put_dec(w, lens[i]);
        *w++ = '\r';
        *w++ = '\n';
        memcpy(w, argv[i], lens[i]);
        w += lens[i];
        *w++ = '\r';
        *w++ = '\n';
    }
}

/* Send argv[0..argc) with its reply to done (NULL: no reply expected, pub/sub). */
static void command(struct rconn *c, int argc, const char **argv, const size_t *lens,
                    void (*done)(struct redis *, void *, redisReply *), void *arg)
{
    if (c->down && done) {
        done(c->r, arg, NULL); /* Redis is away: a temporary error, not a wait */
        return;
    }
    size_t len = resp_len(argc, lens);
    char *at = out_room(c, len);
    if (at == NULL) {
        if (done)
            done(c->r, arg, NULL);
        return;
    }
    resp_write(at, argc, argv, lens);
    if (done) {
        struct pending *p = expect(c, done, arg);
        if (p == NULL) {
            /* It has answered: the command must not go, or the replies would shift. */
            *(c->up ? &c->out_len : &c->outbox_len) -= len;
            return;
        }
        if (c->r->cluster && !c->pubsub) {
            /* Kept until the reply, in case the slot has moved. */
            p->cmd = malloc(len);
            if (p->cmd) {
                memcpy(p->cmd, at, len);
                p->len = len;
            }
        }
    }
}

static void fail_pending(struct rconn *c)
{
    struct pending *p = c->head;
    c->head = c->tail = NULL;
    while (p) {
        struct pending *next = p->next;
        p->done(c->r, p->arg, NULL);
        free(p->cmd);
        free(p);
        p = next;
    }
}

static void on_retry(uv_timer_t *t)
{
    conn_start(t->data);
}

static void on_tcp_closed(uv_handle_t *h)
{
    struct rconn *c = h->data;
    if (c->closing || c->r->stopping)
        return;
    /* Capped, jittered backoff. */
    unsigned ms = c->backoff_ms ? c->backoff_ms * 2 : RETRY_MIN_MS;
    if (ms > RETRY_MAX_MS)
        ms = RETRY_MAX_MS;
    c->backoff_ms = ms;
    char hex[9];
    rand_hex(hex, 4);
    uint32_t jitter = (uint32_t)strtoul(hex, NULL, 16);
    uv_timer_start(&c->retry, on_retry, ms / 2 + jitter % (ms / 2 + 1), 0);
}

static void resubscribe(struct redis *r, struct shard *sh);
static void flush_subscriptions(struct redis *r);
static void schedule_remap(struct redis *r);
static void remap(struct redis *r);

static void conn_lost(struct rconn *c)
{
    /* On a cluster, a node that serves no slot (a master failed over) is tried again
     * quietly: it may come back as a replica. */
    if (c->up || (c->connecting && (!c->r->cluster || atomic_load(&c->sh->owns) > 0)))
        log_warn("redis_down", "redis: %s: connection lost; reconnecting", c->sh->url);
    if (c->up)
        metrics_count(METRIC_ENGINE_RECONNECTS, 1);
    if (c->r->cluster)
        schedule_remap(c->r); /* a failover, perhaps: who serves its slots now */
    if (c->up)
        atomic_store(&c->sh->down_why, DOWN_LOST);
    c->up = c->connecting = 0;
    c->down = 1;
    atomic_store(&c->sh->reachable, 0);
    metrics_engine_shard(c->sh->index, c->sh->url);
    metrics_engine_up(c->sh->index, 0);
    if (c->reader) {
        redisReaderFree(c->reader);
        c->reader = NULL;
    }
    if (c->ssl) {
        SSL_free(c->ssl); /* and its BIOs */
        c->ssl = NULL;
        c->rbio = c->wbio = NULL;
    }
    c->handshaking = 0;
    free(c->out); /* never written: their callbacks fail just below */
    c->out = NULL;
    c->out_len = c->out_cap = 0;
    fail_pending(c);
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

static void on_pubsub(struct redis *r, struct shard *sh, redisReply *m);
static void on_subscribed(struct redis *r, struct shard *sh, const char *name, size_t len);
static void on_unsubscribed(struct redis *r, struct shard *sh, const char *name, size_t len);
static int redirect(struct rconn *c, struct pending *p, const redisReply *rep);
static void sub_error(struct rconn *c, const redisReply *rep);

/* A push on a pub/sub connection: {kind, channel, payload or count}. */
static int is_push(const redisReply *rep, const char *kind)
{
    return rep->elements >= 3 && rep->element[0]->type == REDIS_REPLY_STRING &&
           rep->element[1]->type == REDIS_REPLY_STRING && strcmp(rep->element[0]->str, kind) == 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct rconn *c = s->data;
    if (n < 0) {
        conn_lost(c);
        return;
    }
    if (n == 0)
        return;
    if (c->ssl) {
        BIO_write(c->rbio, buf->base, (int)n);
        if (c->handshaking) {
            tls_handshake(c);
            return;
        }
        char plain[16384];
        for (;;) {
            int got = SSL_read(c->ssl, plain, sizeof(plain));
            if (got <= 0) {
                int e = SSL_get_error(c->ssl, got);
                if (e != SSL_ERROR_WANT_READ) {
                    conn_lost(c);
                    return;
                }
                break;
            }
            if (redisReaderFeed(c->reader, plain, (size_t)got) != REDIS_OK) {
                conn_lost(c);
                return;
            }
        }
        tls_flush(c);
    } else if (redisReaderFeed(c->reader, buf->base, (size_t)n) != REDIS_OK) {
        conn_lost(c);
        return;
    }
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
            conn_lost(c);
            return;
        }
        if (reply == NULL)
            return;
        redisReply *rep = reply;
        if (c->pubsub && rep->type == REDIS_REPLY_ARRAY) {
            /* A cluster's sharded pub/sub says the same with an 's' in front. */
            if (is_push(rep, "message") || is_push(rep, "smessage")) {
                metrics_count(METRIC_ENGINE_PUBSUB, 1);
                on_pubsub(c->r, c->sh, rep);
            }
            else if (is_push(rep, "subscribe") || is_push(rep, "ssubscribe"))
                on_subscribed(c->r, c->sh, rep->element[1]->str, rep->element[1]->len);
            else if (is_push(rep, "sunsubscribe"))
                on_unsubscribed(c->r, c->sh, rep->element[1]->str, rep->element[1]->len);
            freeReplyObject(rep);
            continue;
        }
        struct pending *p = c->head;
        if (p) {
            c->head = p->next;
            if (c->head == NULL)
                c->tail = NULL;
            if (rep->type != REDIS_REPLY_ERROR || p->cmd == NULL || !redirect(c, p, rep)) {
                metrics_observe(METRIC_H_ENGINE_COMMAND,
                                (uint32_t)(metrics_stamp_us() - p->sent_us));
                p->done(c->r, p->arg, rep);
                free(p->cmd);
                free(p);
            }
        } else if (c->pubsub && rep->type == REDIS_REPLY_ERROR) {
            sub_error(c, rep); /* a (S)SUBSCRIBE refused: it carries no reply callback */
        }
        freeReplyObject(rep);
        if (c->reader == NULL)
            return; /* the callback lost the connection */
    }
}

static void ignore_reply(struct redis *r, void *arg, redisReply *reply)
{
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_warn("redis_error", "redis: %s", reply->str);
}

static void on_script_loaded(struct redis *r, void *arg, redisReply *reply)
{
    char *sha = arg;
    if (reply && reply->type == REDIS_REPLY_STRING && reply->len == 40)
        memcpy(sha, reply->str, 41);
    else if (reply)
        log_warn("redis_script_failed", "redis: SCRIPT LOAD: %s",
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "?");
}

static void conn_ready(struct rconn *c);

/* Drive the TLS handshake with what has arrived; ready once it is done. */
static void tls_handshake(struct rconn *c)
{
    int rc = SSL_do_handshake(c->ssl);
    tls_flush(c);
    if (rc == 1) {
        c->handshaking = 0;
        conn_ready(c); /* Redis says nothing before we do: no records wait */
        return;
    }
    int e = SSL_get_error(c->ssl, rc);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        unsigned long code = ERR_get_error();
        char why[160];
        ERR_error_string_n(code, why, sizeof(why));
        log_warn("redis_tls_failed", "redis: %s: TLS handshake failed: %s", c->sh->url, why);
        ERR_clear_error();
        conn_lost(c);
    }
}

static void on_connected(uv_connect_t *req, int status)
{
    struct rconn *c = req->data;
    c->connecting = 0;
    if (status != 0) {
        atomic_store(&c->sh->down_why, status);
        conn_lost(c);
        return;
    }
    c->reader = redisReaderCreate();
    if (c->reader == NULL) {
        conn_lost(c);
        return;
    }
    int one = 1;
    uv_tcp_nodelay(&c->tcp, one);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (c->sh->tls) {
        c->ssl = SSL_new(c->r->tls);
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
            BIO_free(c->rbio);
            BIO_free(c->wbio);
            c->rbio = c->wbio = NULL;
            conn_lost(c);
            return;
        }
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_connect_state(c->ssl);
        /* The certificate must name the host we asked for (an address or a name). */
        X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
        if (X509_VERIFY_PARAM_set1_ip_asc(vp, c->sh->host) != 1) {
            SSL_set_tlsext_host_name(c->ssl, c->sh->host);
            SSL_set1_host(c->ssl, c->sh->host);
        }
        c->handshaking = 1;
        tls_handshake(c);
        return;
    }
    conn_ready(c);
}

/* Connected (and, for rediss://, through the TLS handshake): AUTH, SELECT, the scripts,
 * then what was waiting. */
static void conn_ready(struct rconn *c)
{
    c->up = 1;
    c->down = 0;
    c->backoff_ms = 0;
    atomic_store(&c->sh->reachable, c->sh->cmd.up && c->sh->sub.up);
    metrics_engine_shard(c->sh->index, c->sh->url);
    metrics_engine_up(c->sh->index, c->sh->cmd.up && c->sh->sub.up);
    struct shard *sh = c->sh;
    /* Before anything queued: AUTH, SELECT, the scripts. */
    char *held = c->outbox;
    size_t held_len = c->outbox_len;
    c->outbox = NULL;
    c->outbox_len = c->outbox_cap = 0;
    struct pending *queued = c->head, *queued_tail = c->tail;
    c->head = c->tail = NULL;
    if (sh->password) {
        const char *argv[3] = {"AUTH", sh->user ? sh->user : sh->password, sh->password};
        size_t lens[3] = {4, strlen(argv[1]), strlen(sh->password)};
        command(c, sh->user ? 3 : 2, argv, lens, ignore_reply, NULL);
    }
    if (sh->db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", sh->db);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, strlen(db)};
        command(c, 2, argv, lens, ignore_reply, NULL);
    }
    if (!c->pubsub) {
        for (int i = 0; i < NSCRIPTS; i++) {
            const char *argv[3] = {"SCRIPT", "LOAD", c->r->script_text[i]};
            size_t lens[3] = {6, 4, strlen(argv[2])};
            command(c, 3, argv, lens, on_script_loaded, sh->sha[i]);
        }
    }
    /* then what was waiting, in order */
    if (queued) {
        if (c->tail)
            c->tail->next = queued;
        else
            c->head = queued;
        c->tail = queued_tail;
    }
    if (held) {
        send_raw(c, held, held_len);
    }
    if (c->pubsub) {
        resubscribe(c->r, sh);
        flush_subscriptions(c->r);
    }
    if (c->r->cluster && !atomic_load(&c->r->mapped))
        schedule_remap(c->r);
}

static void conn_start(struct rconn *c)
{
    if (c->r->stopping)
        return;
    uv_tcp_init(c->r->uv, &c->tcp);
    uv_unref((uv_handle_t *)&c->tcp); /* the home loop ends without waiting for Redis */
    c->tcp.data = c;
    c->creq.data = c;
    c->connecting = 1;
    if (uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&c->sh->addr, on_connected) !=
        0) {
        c->connecting = 0;
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
    }
}

/* ---- completing on the asking loop ---- */

static void complete(void *arg);

static void finish(struct redis *r, struct request *q)
{
    if (r->e.host.post(r->e.host.ud, q->slot, complete, q) != 0)
        complete(q); /* no loop to go back to (shutting down): answer here */
}

static void request_free(struct request *q)
{
    if (q->reply)
        freeReplyObject(q->reply);
    free(q->items);
    free(q);
}

static void complete(void *arg)
{
    struct request *q = arg;
    switch (q->kind) {
    case REQ_PUBLISH:
        ((engine_publish_cb)q->cb)(q->ud, q->status, &q->pos);
        break;
    case REQ_HISTORY:
        ((engine_history_cb)q->cb)(q->ud, q->status, &q->pos, q->items, q->n);
        break;
    case REQ_SUBSCRIBE:
        ((engine_subscribe_cb)q->cb)(q->ud, q->status, &q->pos, q->recovered, q->items, q->n);
        break;
    case REQ_PRESENCE:
        ((engine_presence_cb)q->cb)(q->ud, q->status, q->items, q->n);
        break;
    case REQ_PRESENCE_STATS:
        ((engine_stats_cb)q->cb)(q->ud, q->status, q->num_a, q->num_b);
        break;
    case REQ_NODES:
        ((engine_nodes_cb)q->cb)(q->ud, q->status, q->items, q->n);
        break;
    case REQ_HISTORY_REMOVE:
    case REQ_PRESENCE_ADD:
    case REQ_RESET:
        if (q->cb)
            ((engine_done_cb)q->cb)(q->ud, q->status);
        break;
    case REQ_LIMIT:
        if (q->cb)
            ((engine_limit_cb)q->cb)(q->ud, q->status, (int)q->num_a);
        break;
    default:
        break;
    }
    request_free(q);
}

/* ---- requests ---- */

static struct request *request_new(struct redis *r, enum req_kind kind, const uint8_t *ch,
                                   size_t ch_len, const void *a, size_t a_len, const void *b,
                                   size_t b_len, const void *c, size_t c_len, const void *d,
                                   size_t d_len, void *cb, void *ud)
{
    struct request *q = calloc(1, sizeof(*q) + ch_len + a_len + b_len + c_len + d_len + 5);
    if (q == NULL)
        return NULL;
    q->kind = kind;
    q->slot = r->e.host.current(r->e.host.ud);
    q->cb = cb;
    q->ud = ud;
    char *w = q->bytes;
#define COPY(field, src, n)                                                                        \
    q->field = w;                                                                                  \
    q->field##_len = n;                                                                            \
    if (n)                                                                                         \
        memcpy(w, src, n);                                                                         \
    w += n;                                                                                        \
    *w++ = 0;
    COPY(ch, ch, ch_len)
    COPY(a, a, a_len)
    COPY(b, b, b_len)
    COPY(c, c, c_len)
    COPY(d, d, d_len)
#undef COPY
    return q;
}

static void dispatch(struct redis *r, struct request *q);
static void flush_subscriptions(struct redis *r);

static void submit(struct redis *r, struct request *q)
{
    if (q->slot == HOME_SLOT) {
        /* On the home loop: straight to Redis (completions still go through the host,
         * so that no callback runs inside the engine). */
        dispatch(r, q);
        flush_subscriptions(r);
        return;
    }
    pthread_mutex_lock(&r->lock);
    q->next = NULL;
    *r->queue_tail = q;
    r->queue_tail = &q->next;
    pthread_mutex_unlock(&r->lock);
    uv_async_send(&r->wake);
}

static void evalsha(struct redis *r, struct shard *sh, enum script s, int nkeys, int argc,
                    const char **argv, const size_t *lens,
                    void (*done)(struct redis *, void *, redisReply *), void *arg)
{
    /* EVALSHA sha nkeys keys... args... ; the script text when the SHA is unknown yet. */
    const char *av[24];
    size_t al[24];
    char nk[24];
    size_t nk_len = dec(nk, (uint64_t)nkeys);
    int known = sh->sha[s][0] != 0;
    av[0] = known ? "EVALSHA" : "EVAL";
    al[0] = strlen(av[0]);
    av[1] = known ? sh->sha[s] : r->script_text[s];
    al[1] = strlen(av[1]);
    av[2] = nk;
    al[2] = nk_len;
    for (int i = 0; i < argc && i < 21; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = lens[i];
    }
    command(&sh->cmd, 3 + argc, av, al, done, arg);
}

static int reply_error(redisReply *reply)
{
    return reply == NULL || reply->type == REDIS_REPLY_ERROR;
}

/* The status of a failed reply: no reply at all means the connection is down, and
 * the errors of a cluster in a failover or a migration (and of a Redis loading its
 * data) pass: the caller may try again. */
static int reply_status(redisReply *reply)
{
    static const char *const passing[] = {"CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK",
                                          "LOADING",     "MASTERDOWN", "READONLY", "BUSY"};
    if (reply == NULL)
        return ENGINE_ERR_UNAVAILABLE;
    for (size_t i = 0; reply->type == REDIS_REPLY_ERROR && i < sizeof(passing) / sizeof(*passing);
         i++) {
        size_t n = strlen(passing[i]);
        if (reply->len >= n && memcmp(reply->str, passing[i], n) == 0 &&
            (reply->len == n || reply->str[n] == ' '))
            return ENGINE_ERR_UNAVAILABLE;
    }
    return ENGINE_ERR_INTERNAL;
}

static void log_reply_error(redisReply *reply)
{
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_warn("redis_error", "redis: %s", reply->str);
}

static long long reply_int(const redisReply *x)
{
    if (x->type == REDIS_REPLY_INTEGER)
        return x->integer;
    if (x->type == REDIS_REPLY_STRING)
        return strtoll(x->str, NULL, 10);
    return 0;
}

/* A reply's epoch into a position's (cut to its length; "" when not a string). */
static void set_epoch(char out[ENGINE_EPOCH_LEN + 1], const redisReply *x)
{
    size_t n = x->type == REDIS_REPLY_STRING ? x->len : 0;
    if (n > ENGINE_EPOCH_LEN)
        n = ENGINE_EPOCH_LEN;
    if (n)
        memcpy(out, x->str, n);
    out[n] = 0;
}

/* -- publish -- */

static void on_published(struct redis *r, void *arg, redisReply *reply)
{
    struct request *q = arg;
    if (reply_error(reply) || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        log_reply_error(reply);
        q->status = reply_status(reply);
    } else {
        q->pos.offset = (uint64_t)reply_int(reply->element[0]);
        set_epoch(q->pos.epoch, reply->element[1]);
    }
    finish(r, q);
}

static void on_published_plain(struct redis *r, void *arg, redisReply *reply)
{
    struct request *q = arg;
    if (reply_error(reply)) {
        log_reply_error(reply);
        q->status = reply_status(reply);
    }
    finish(r, q);
}

static void do_publish(struct redis *r, struct request *q)
{
    struct shard *sh = &r->shards[shard_of(r, q->ch, q->ch_len)];
    char kb[4][320]; /* the keys, on the stack unless prefix and channel are long */
    size_t cl;
    char *pubch = key_in(r, kb[0], sizeof(kb[0]), q->ch, q->ch_len, "c", NULL, 0, &cl);
    if (q->opts.history_size == 0 && q->c_len == 0) {
        /* No stream, no key: one PUBLISH. */
        size_t ml = q->a_len + q->b_len + 32;
        char *msg = malloc(ml);
        if (pubch == NULL || msg == NULL) {
            key_done(pubch, kb[0]);
            free(msg);
            q->status = ENGINE_ERR_INTERNAL;
            finish(r, q);
            return;
        }
        memcpy(msg, "p0 ", 3);
        char *w = put_dec(msg + 3, q->b_len);
        *w++ = ' ';
        size_t h = (size_t)(w - msg);
        memcpy(msg + h, q->b, q->b_len);
        memcpy(msg + h + q->b_len, q->a, q->a_len);
        const char *argv[3] = {r->cluster ? "SPUBLISH" : "PUBLISH", pubch, msg};
        size_t lens[3] = {strlen(argv[0]), cl, h + q->b_len + q->a_len};
        command(&sh->cmd, 3, argv, lens, on_published_plain, q);
        key_done(pubch, kb[0]);
        free(msg);
        return;
    }
    size_t sl, ml, il;
    char *stream = key_in(r, kb[1], sizeof(kb[1]), q->ch, q->ch_len, "s", NULL, 0, &sl);
    char *meta = key_in(r, kb[2], sizeof(kb[2]), q->ch, q->ch_len, "m", NULL, 0, &ml);
    char *idem = key_in(r, kb[3], sizeof(kb[3]), q->ch, q->ch_len, "i:", q->c, q->c_len, &il);
    char size[24], ttl[24], mttl[24], epoch[ENGINE_EPOCH_LEN + 1];
    size_t size_len = dec(size, q->opts.history_size);
    size_t ttl_len = dec(ttl, q->opts.history_ttl ? q->opts.history_ttl : 1);
    size_t mttl_len = dec(mttl, META_TTL_SEC);
    rand_hex(epoch, ENGINE_EPOCH_LEN / 2);
    if (stream == NULL || meta == NULL || idem == NULL || pubch == NULL) {
        q->status = ENGINE_ERR_INTERNAL;
        finish(r, q);
    } else {
        /* The idempotency key only when there is one: during a cluster's slot
         * migration a key that exists nowhere would make the call TRYAGAIN. */
        int k = q->c_len ? 3 : 2;
        const char *argv[11] = {stream, meta, idem, size, ttl, q->a, q->b, epoch, pubch,
                                q->c_len ? "1" : "0", mttl};
        size_t lens[11] = {sl, ml, il, size_len, ttl_len, q->a_len, q->b_len,
                           ENGINE_EPOCH_LEN, cl, 1, mttl_len};
        if (k == 2) {
            memmove(&argv[2], &argv[3], 8 * sizeof(argv[0]));
            memmove(&lens[2], &lens[3], 8 * sizeof(lens[0]));
        }
        evalsha(r, sh, SCRIPT_PUBLISH, k, 8 + k, argv, lens, on_published, q);
    }
    key_done(stream, kb[1]);
    key_done(meta, kb[2]);
    key_done(idem, kb[3]);
    key_done(pubch, kb[0]);
}

/* -- history, and the subscribe's read -- */

/* Parse {epoch, top, offset, data, info, ...} into q (keeping the reply for the bytes). */
static int parse_history(struct request *q, redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 || (reply->elements - 2) % 3)
        return -1;
    set_epoch(q->pos.epoch, reply->element[0]);
    q->pos.offset = (uint64_t)reply_int(reply->element[1]);
    size_t n = (reply->elements - 2) / 3;
    struct engine_pub *pubs = n ? malloc(n * sizeof(*pubs)) : NULL;
    if (n && pubs == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        redisReply **x = &reply->element[2 + 3 * i];
        pubs[i].offset = (uint64_t)reply_int(x[0]);
        pubs[i].data = (const uint8_t *)x[1]->str;
        pubs[i].data_len = x[1]->len;
        pubs[i].info = x[2]->len ? (const uint8_t *)x[2]->str : NULL;
        pubs[i].info_len = x[2]->len;
    }
    q->items = pubs;
    q->n = n;
    return 0;
}

static redisReply *steal(redisReply *reply);

static void on_history(struct redis *r, void *arg, redisReply *reply)
{
    struct request *q = arg;
    if (reply_error(reply) || parse_history(q, reply) != 0) {
        log_reply_error(reply);
        q->status = reply_status(reply);
    } else if (q->q.has_since && (q->q.since_epoch_len != ENGINE_EPOCH_LEN ||
                                  memcmp(q->q.since_epoch, q->pos.epoch, ENGINE_EPOCH_LEN) != 0)) {
        q->status = ENGINE_ERR_UNRECOVERABLE;
        free(q->items);
        q->items = NULL;
        q->n = 0;
    } else {
        q->reply = steal(reply);
    }
    finish(r, q);
}

static void read_stream(struct redis *r, struct request *q, int64_t limit, int64_t since,
                        int reverse, void (*done)(struct redis *, void *, redisReply *))
{
    struct shard *sh = &r->shards[shard_of(r, q->ch, q->ch_len)];
    size_t sl, ml;
    char *stream = key(r, q->ch, q->ch_len, "s", NULL, 0, &sl);
    char *meta = key(r, q->ch, q->ch_len, "m", NULL, 0, &ml);
    char ttl[16], lim[24], sin[24], mttl[16], epoch[ENGINE_EPOCH_LEN + 1];
    snprintf(ttl, sizeof(ttl), "%u", q->opts.history_ttl);
    snprintf(lim, sizeof(lim), "%lld", (long long)limit);
    snprintf(sin, sizeof(sin), "%lld", (long long)since);
    snprintf(mttl, sizeof(mttl), "%u", META_TTL_SEC);
    rand_hex(epoch, ENGINE_EPOCH_LEN / 2);
    if (stream == NULL || meta == NULL) {
        free(stream);
        free(meta);
        done(r, q, NULL);
        return;
    }
    const char *argv[8] = {stream, meta, ttl, epoch, lim, sin, reverse ? "1" : "0", mttl};
    size_t lens[8] = {sl, ml, strlen(ttl), strlen(epoch), strlen(lim), strlen(sin), 1,
                      strlen(mttl)};
    evalsha(r, sh, SCRIPT_HISTORY, 2, 8, argv, lens, done, q);
    free(stream);
    free(meta);
}

static void do_history(struct redis *r, struct request *q)
{
    if (q->opts.history_size == 0) {
        q->status = ENGINE_ERR_NOT_AVAILABLE;
        finish(r, q);
        return;
    }
    q->q.since_epoch = (const uint8_t *)q->a;
    q->q.since_epoch_len = q->a_len;
    int64_t since = q->q.has_since ? (int64_t)q->q.since_offset : -1;
    read_stream(r, q, q->q.limit, since, q->q.reverse, on_history);
}

static void on_removed(struct redis *r, void *arg, redisReply *reply)
{
    struct request *q = arg;
    if (reply_error(reply))
        q->status = reply_status(reply);
    finish(r, q);
}

static void do_history_remove(struct redis *r, struct request *q)
{
    struct shard *sh = &r->shards[shard_of(r, q->ch, q->ch_len)];
    size_t sl;
    char *stream = key(r, q->ch, q->ch_len, "s", NULL, 0, &sl);
    if (stream == NULL) {
        q->status = ENGINE_ERR_INTERNAL;
        finish(r, q);
        return;
    }
    const char *argv[2] = {"DEL", stream};
    size_t lens[2] = {3, sl};
    command(&sh->cmd, 2, argv, lens, on_removed, q);
    free(stream);
}

/* -- reset: the streams of every channel with a prefix start again -- */

/* One shard's SCAN of a reset, cursor by cursor. */
struct scan {
    struct request *q;
    struct shard *sh;
    char *pattern;
    size_t pattern_len;
};

static void reset_done_shard(struct redis *r, struct request *q);

static void scan_next(struct redis *r, struct scan *sc, const char *cursor);

static void on_scan(struct redis *r, void *arg, redisReply *reply)
{
    struct scan *sc = arg;
    if (reply_error(reply) || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_ARRAY) {
        log_reply_error(reply);
        sc->q->status = reply_status(reply);
        reset_done_shard(r, sc->q);
        free(sc->pattern);
        free(sc);
        return;
    }
    redisReply *keys = reply->element[1];
    for (size_t i = 0; i < keys->elements; i++) {
        redisReply *k = keys->element[i];
        /* The stream and its meta (epoch, offset): not presence, not idempotency keys. */
        if (k->type != REDIS_REPLY_STRING || k->len < 3 || k->str[k->len - 2] != ':' ||
            (k->str[k->len - 1] != 's' && k->str[k->len - 1] != 'm') || k->str[k->len - 3] != '}')
            continue;
        const char *argv[2] = {"UNLINK", k->str};
        size_t lens[2] = {6, k->len};
        command(&sc->sh->cmd, 2, argv, lens, ignore_reply, NULL);
    }
    if (strcmp(reply->element[0]->str, "0") == 0) {
        reset_done_shard(r, sc->q);
        free(sc->pattern);
        free(sc);
        return;
    }
    scan_next(r, sc, reply->element[0]->str);
}

static void scan_next(struct redis *r, struct scan *sc, const char *cursor)
{
    const char *argv[6] = {"SCAN", cursor, "MATCH", sc->pattern, "COUNT", "1000"};
    size_t lens[6] = {4, strlen(cursor), 5, sc->pattern_len, 5, 4};
    command(&sc->sh->cmd, 6, argv, lens, on_scan, sc);
}

/* Every shard scanned: this node's followers of those channels learn of the loss, and
 * know the stream afresh on their next read. */
static void reset_done_shard(struct redis *r, struct request *q)
{
    if (--q->num_a > 0)
        return;
    for (size_t b = 0; b < r->chans.nbuckets; b++)
        for (struct table_node *n = r->chans.buckets[b]; n; n = n->next) {
            struct rchan *c = (struct rchan *)n;
            if (c->name_len < q->ch_len || memcmp(c->name, q->ch, q->ch_len) != 0)
                continue;
            c->epoch[0] = 0;
            c->last = 0;
            if (r->e.events.lost)
                r->e.events.lost(r->e.events.ud, c->name, c->name_len);
        }
    finish(r, q);
}

static void do_reset(struct redis *r, struct request *q)
{
    /* prefix:{<channel prefix>*, glob characters escaped. */
    char *pat = malloc(2 * (strlen(r->prefix) + q->ch_len) + 8);
    size_t pn = 0;
    if (pat == NULL) {
        q->status = ENGINE_ERR_INTERNAL;
        finish(r, q);
        return;
    }
    const char *parts[2] = {r->prefix, q->ch};
    size_t plens[2] = {strlen(r->prefix), q->ch_len};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < plens[k]; i++) {
            char ch = parts[k][i];
            if (ch == '*' || ch == '?' || ch == '[' || ch == ']' || ch == '\\')
                pat[pn++] = '\\';
            pat[pn++] = ch;
        }
        if (k == 0) {
            pat[pn++] = ':';
            pat[pn++] = '\\';
            pat[pn++] = '{'; /* no glob meaning, escaped all the same */
        }
    }
    pat[pn++] = '*';
    pat[pn] = 0;
    q->num_a = 1; /* until every scan has started */
    for (unsigned i = 0; i < r->nshards; i++) {
        struct shard *sh = &r->shards[i];
        if (r->cluster && atomic_load(&sh->owns) == 0)
            continue; /* not a master now */
        struct scan *sc = calloc(1, sizeof(*sc));
        char *copy = sc ? malloc(pn + 1) : NULL;
        if (copy == NULL) {
            free(sc);
            q->status = ENGINE_ERR_INTERNAL;
            continue;
        }
        memcpy(copy, pat, pn + 1);
        sc->q = q;
        sc->sh = sh;
        sc->pattern = copy;
        sc->pattern_len = pn;
        q->num_a++;
        scan_next(r, sc, "0");
    }
    free(pat);
    reset_done_shard(r, q);
}

/* -- pub/sub interest and the held-back deliveries -- */

static struct rchan *chan_find(struct redis *r, const char *ch, size_t len, uint64_t hash)
{
    for (struct table_node *n = table_bucket(&r->chans, hash); n; n = n->next) {
        struct rchan *c = (struct rchan *)n;
        if (n->hash == hash && c->name_len == len && memcmp(c->name, ch, len) == 0)
            return c;
    }
    return NULL;
}

/* The rchan a pub/sub name (prefix:{channel}:c) stands for, or NULL. */
static struct rchan *chan_of(struct redis *r, const char *name, size_t len)
{
    size_t plen = strlen(r->prefix) + 2;
    if (len < plen + 3)
        return NULL;
    const char *ch = name + plen;
    size_t ch_len = len - plen - 3;
    return chan_find(r, ch, ch_len, table_hash(ch, ch_len));
}

/* Gather a pub/sub name (taking it) for the shard's next SUBSCRIBE or UNSUBSCRIBE. */
static void batch_add(struct shard *sh, int subscribe, char *pubch, size_t cl)
{
    struct batch *b = subscribe ? &sh->subscribe : &sh->unsubscribe;
    if (pubch == NULL)
        return;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        char **names = realloc(b->names, cap * sizeof(*names));
        size_t *lens = names ? realloc(b->lens, cap * sizeof(*lens)) : NULL;
        if (names)
            b->names = names;
        if (lens == NULL) {
            free(pubch);
            return;
        }
        b->lens = lens;
        b->cap = cap;
    }
    b->names[b->n] = pubch;
    b->lens[b->n++] = cl;
}

/* The channel's pub/sub name, for the shard's next SUBSCRIBE or UNSUBSCRIBE. */
static void send_subscribe(struct redis *r, struct shard *sh, int subscribe, const char *ch,
                           size_t len)
{
    size_t cl;
    char *pubch = key(r, ch, len, "c", NULL, 0, &cl);
    batch_add(sh, subscribe, pubch, cl);
}

static void send_control_subscribe(struct redis *r, struct shard *sh, int subscribe)
{
    batch_add(sh, subscribe, strdup(r->control), r->control_len);
}

/* One SUBSCRIBE (and one UNSUBSCRIBE) per shard for what a batch of requests needs, at
 * most 256 channels a command. A cluster's SSUBSCRIBE takes the channels of one slot
 * only: there, one command a channel, all of them in one write. A connection that is
 * down drops the batch: a new connection subscribes to what is needed then. */
static void flush_batch(struct redis *r, struct shard *sh, struct batch *b, int subscribe)
{
    if (sh->sub.down) {
        for (size_t i = 0; i < b->n; i++)
            free(b->names[i]);
        b->n = 0;
        return;
    }
    const char *verb = subscribe ? (r->cluster ? "SSUBSCRIBE" : "SUBSCRIBE")
                                 : (r->cluster ? "SUNSUBSCRIBE" : "UNSUBSCRIBE");
    if (r->cluster && b->n) {
        /* One command a channel: a cluster refuses a sharded (un)subscribe of channels
         * in different slots. Their replies come as pushes, not to a callback. */
        for (size_t i = 0; i < b->n; i++) {
            const char *argv[2] = {verb, b->names[i]};
            size_t lens[2] = {strlen(verb), b->lens[i]};
            command(&sh->sub, 2, argv, lens, NULL, NULL);
        }
        for (size_t i = 0; i < b->n; i++)
            free(b->names[i]);
        b->n = 0;
        return;
    }
    for (size_t at = 0; at < b->n; at += 256) {
        const char *argv[257];
        size_t lens[257];
        int argc = 1;
        argv[0] = verb;
        lens[0] = strlen(verb);
        for (size_t i = at; i < b->n && i < at + 256; i++, argc++) {
            argv[argc] = b->names[i];
            lens[argc] = b->lens[i];
        }
        command(&sh->sub, argc, argv, lens, NULL, NULL);
    }
    for (size_t i = 0; i < b->n; i++)
        free(b->names[i]);
    b->n = 0;
}

static void flush_subscriptions(struct redis *r)
{
    for (unsigned i = 0; i < r->nshards; i++) {
        flush_batch(r, &r->shards[i], &r->shards[i].unsubscribe, 0);
        flush_batch(r, &r->shards[i], &r->shards[i].subscribe, 1);
    }
}

/* A shard's pub/sub connection is (back) up: what it carried is subscribed again. */
static void resubscribe(struct redis *r, struct shard *sh)
{
    if (r->control_shard == sh->index)
        send_control_subscribe(r, sh, 1); /* the node-to-node controls */
    for (size_t b = 0; b < r->chans.nbuckets; b++) {
        for (struct table_node *n = r->chans.buckets[b]; n; n = n->next) {
            struct rchan *c = (struct rchan *)n;
            if (c->shard == sh->index) {
                c->check = c->last != 0;
                send_subscribe(r, sh, 1, (const char *)c->name, c->name_len);
            }
        }
    }
}

static void start_fill(struct redis *r, struct rchan *c);
static void hold(struct rchan *c, const char *m, size_t len);

/* Hand one pub/sub message (type byte, then its fields) to the hub. A channel with
 * history gets its publications in offset order with none twice: what this node
 * already handed on is dropped, and a jump is first filled from the stream. */
static void deliver(struct redis *r, struct rchan *c, const char *m, size_t len)
{
    const uint8_t *ch = c->name;
    size_t ch_len = c->name_len;
    struct redis_msg msg;
    if (redis_msg_parse(m, len, &msg) != 0)
        return;
    if (msg.type != REDIS_MSG_PUBLICATION) {
        if (r->e.events.join_leave)
            r->e.events.join_leave(r->e.events.ud, ch, ch_len, msg.type == REDIS_MSG_JOIN,
                                   (const uint8_t *)msg.info, msg.info_len);
        return;
    }
    if (msg.offset && c->opts.history_size) {
        if (msg.offset <= c->last)
            return; /* already handed on (a fill, a recovery) */
        if (c->last && msg.offset != c->last + 1) {
            /* A jump: what lies between is read from the stream first. */
            hold(c, m, len);
            start_fill(r, c);
            return;
        }
        c->last = msg.offset;
    }
    struct engine_pub pub = {(const uint8_t *)msg.data, msg.data_len,
                             msg.info_len ? (const uint8_t *)msg.info : NULL, msg.info_len,
                             msg.offset};
    r->e.events.publication(r->e.events.ud, ch, ch_len, &pub);
}

static void hold(struct rchan *c, const char *m, size_t len)
{
    struct held *h = malloc(sizeof(*h) + len);
    if (h == NULL)
        return;
    h->next = NULL;
    h->len = len;
    memcpy(h->msg, m, len);
    *c->held_tail = h;
    c->held_tail = &h->next;
}

static void flush_held(struct redis *r, struct rchan *c)
{
    while (c->held && c->reading == 0) {
        struct held *h = c->held;
        c->held = h->next;
        if (c->held == NULL)
            c->held_tail = &c->held;
        deliver(r, c, h->msg, h->len);
        free(h);
    }
}

static int is_control(const struct redis *r, const char *name, size_t len)
{
    return len == r->control_len && memcmp(name, r->control, len) == 0;
}

static void on_pubsub(struct redis *r, struct shard *sh, redisReply *m)
{
    redisReply *name = m->element[1], *payload = m->element[2];
    if (name->type == REDIS_REPLY_STRING && payload->type == REDIS_REPLY_STRING &&
        is_control(r, name->str, name->len)) {
        if (r->e.events.control)
            r->e.events.control(r->e.events.ud, (const uint8_t *)payload->str, payload->len);
        return;
    }
    if (name->type != REDIS_REPLY_STRING || payload->type != REDIS_REPLY_STRING)
        return;
    struct rchan *c = chan_of(r, name->str, name->len);
    if (c == NULL)
        return;
    if (c->reading) {
        hold(c, payload->str, payload->len);
        return;
    }
    deliver(r, c, payload->str, payload->len);
}

static void on_subscribe_read(struct redis *r, void *arg, redisReply *reply);

/* The channel's pub/sub messages reach this node: read the position (and what the
 * client missed), holding deliveries back meanwhile. */
static void subscribe_read(struct redis *r, struct request *q, struct rchan *c)
{
    if (q->opts.history_size == 0) {
        finish(r, q);
        return;
    }
    c->reading++;
    int64_t since = q->rec.recover ? (int64_t)q->rec.offset : -1;
    read_stream(r, q, q->rec.recover ? -1 : 0, since, 0, on_subscribe_read);
}

static void on_reepoch(struct redis *r, void *arg, redisReply *reply);

/* A request of the engine's own about a followed channel (a fill, a new epoch): it
 * completes on the engine thread, never through the host. */
static struct request *own_request(const struct rchan *c)
{
    struct request *q = calloc(1, sizeof(*q) + c->name_len + 5);
    if (q == NULL)
        return NULL;
    q->kind = REQ_FILL;
    q->slot = -1;
    q->ch = q->bytes;
    q->ch_len = c->name_len;
    memcpy(q->ch, c->name, c->name_len);
    q->opts = c->opts;
    return q;
}

/* The stream is behind what this node handed on: its master failed over before the
 * replica had the newest publications, and their offsets will be given to others. So
 * the stream takes a new epoch (the first node to see it sets one, the others take
 * that one) and no client recovers across the hole; meanwhile deliveries wait, then
 * the subscribers learn of the loss. */
static void went_back(struct redis *r, struct rchan *c, const struct engine_pos *pos)
{
    log_warn("redis_stream_reset",
             "redis: %.*s: the stream went back from offset %llu to %llu (a failover before "
             "replication); a new epoch",
             (int)c->name_len, c->name, (unsigned long long)c->last,
             (unsigned long long)pos->offset);
    c->last = pos->offset;
    memcpy(c->epoch, pos->epoch, sizeof(c->epoch));
    struct request *q = own_request(c);
    size_t ml;
    char *meta = key(r, (const char *)c->name, c->name_len, "m", NULL, 0, &ml);
    if (q == NULL || meta == NULL) {
        free(q);
        free(meta);
        if (r->e.events.lost)
            r->e.events.lost(r->e.events.ud, c->name, c->name_len);
        return;
    }
    c->reading++;
    char epoch[ENGINE_EPOCH_LEN + 1], mttl[16];
    rand_hex(epoch, ENGINE_EPOCH_LEN / 2);
    snprintf(mttl, sizeof(mttl), "%u", META_TTL_SEC);
    const char *argv[4] = {meta, pos->epoch, epoch, mttl};
    size_t lens[4] = {ml, strlen(pos->epoch), strlen(epoch), strlen(mttl)};
    evalsha(r, &r->shards[shard_of(r, (const char *)c->name, c->name_len)], SCRIPT_REEPOCH, 1, 4,
            argv, lens, on_reepoch, q);
    free(meta);
}

static void flush_held(struct redis *r, struct rchan *c);

static void on_reepoch(struct redis *r, void *arg, redisReply *reply)
{
    struct request *q = arg;
    struct rchan *c = chan_find(r, q->ch, q->ch_len, table_hash(q->ch, q->ch_len));
    request_free(q);
    if (c == NULL)
        return;
    c->reading--;
    if (reply && reply->type == REDIS_REPLY_STRING && reply->len == ENGINE_EPOCH_LEN)
        memcpy(c->epoch, reply->str, ENGINE_EPOCH_LEN + 1);
    else
        log_reply_error(reply); /* the next read sees whatever epoch it has */
    if (r->e.events.lost)
        r->e.events.lost(r->e.events.ud, c->name, c->name_len);
    flush_held(r, c);
}

static void on_subscribe_read(struct redis *r, void *arg, redisReply *reply)
{
    struct request *q = arg;
    struct rchan *c = chan_find(r, q->ch, q->ch_len, table_hash(q->ch, q->ch_len));
    if (reply_error(reply) || parse_history(q, reply) != 0) {
        log_reply_error(reply);
        q->status = reply_status(reply);
    } else if (q->rec.recover) {
        /* Recovered: the same epoch, and the publications after offset all held. */
        uint64_t missed = q->pos.offset >= q->rec.offset ? q->pos.offset - q->rec.offset : 0;
        const struct engine_pub *pubs = q->items;
        q->recovered = q->rec.epoch_len == ENGINE_EPOCH_LEN &&
                       memcmp(q->rec.epoch, q->pos.epoch, ENGINE_EPOCH_LEN) == 0 &&
                       q->rec.offset <= q->pos.offset && missed <= q->rec.max_pubs &&
                       q->n == missed && (missed == 0 || pubs[0].offset == q->rec.offset + 1);
        if (!q->recovered) {
            free(q->items);
            q->items = NULL;
            q->n = 0;
        } else {
            q->reply = steal(reply);
        }
    } else {
        free(q->items);
        q->items = NULL;
        q->n = 0;
    }
    if (q->status != ENGINE_OK && c && c->refs)
        c->refs--; /* the caller will not unsubscribe what failed */
    int fill = 0;
    if (q->status == ENGINE_OK && c) {
        if (c->epoch[0] && strcmp(c->epoch, q->pos.epoch) != 0) {
            /* The stream was lost meanwhile (Redis restarted): those already subscribed
             * here must resubscribe; from now on the new epoch counts. */
            if (r->e.events.lost)
                r->e.events.lost(r->e.events.ud, c->name, c->name_len);
            c->last = 0;
        }
        memcpy(c->epoch, q->pos.epoch, sizeof(c->epoch));
        if (c->last > q->pos.offset)
            went_back(r, c, &q->pos); /* never silently */
        if (c->last == 0)
            c->last = q->pos.offset;
        else if (c->last < q->pos.offset)
            fill = 1; /* the node's deliveries are behind: catch them up */
    }
    /* The completion goes to the loop's queue before the held deliveries: the loop
     * learns the position first, then drops what the reply already holds. */
    finish(r, q);
    if (c && c->reading && --c->reading == 0)
        flush_held(r, c);
    if (c && fill)
        start_fill(r, c);
}

/* ---- filling a gap ---- */

static void on_fill(struct redis *r, void *arg, redisReply *reply);

/* Read the followed stream after c->last, holding deliveries back meanwhile. */
static void start_fill(struct redis *r, struct rchan *c)
{
    if (c->opts.history_size == 0 || c->reading)
        return;
    struct request *q = own_request(c);
    if (q == NULL)
        return;
    c->reading++;
    read_stream(r, q, -1, (int64_t)c->last, 0, on_fill);
}

static void on_fill(struct redis *r, void *arg, redisReply *reply)
{
    struct request *q = arg;
    struct rchan *c = chan_find(r, q->ch, q->ch_len, table_hash(q->ch, q->ch_len));
    if (c == NULL) {
        request_free(q);
        return;
    }
    c->reading--;
    if (reply_error(reply) || parse_history(q, reply) != 0) {
        /* Redis is away: the held deliveries wait for the next check's fill. */
        log_reply_error(reply);
        request_free(q);
        return;
    }
    const struct engine_pub *pubs = q->items;
    if (q->n > 0)
        metrics_count(METRIC_ENGINE_GAPS, 1); /* the read found what pub/sub had not brought */
    /* Lost: another epoch, a gap the stream no longer holds, or a stream behind what
     * this node handed on (a failed-over master that had not replicated them). */
    int other_epoch = c->epoch[0] && strcmp(c->epoch, q->pos.epoch) != 0;
    int lost = other_epoch ||
               (q->pos.offset > c->last && (q->n == 0 || pubs[0].offset != c->last + 1));
    if (!other_epoch && q->pos.offset < c->last) {
        went_back(r, c, &q->pos);
    } else if (lost) {
        /* The stream no longer holds what this node missed: never silently, the
         * subscribers resubscribe and learn that they did not recover. */
        log_warn("redis_publications_lost",
                 "redis: %.*s: publications lost for this node (epoch %s, offset %llu after %llu)",
                 (int)q->ch_len, q->ch, q->pos.epoch, (unsigned long long)q->pos.offset,
                 (unsigned long long)c->last);
        if (r->e.events.lost)
            r->e.events.lost(r->e.events.ud, c->name, c->name_len);
        memcpy(c->epoch, q->pos.epoch, sizeof(c->epoch));
        c->last = q->pos.offset;
    } else {
        for (size_t i = 0; i < q->n; i++) {
            if (pubs[i].offset != c->last + 1)
                break;
            c->last = pubs[i].offset;
            r->e.events.publication(r->e.events.ud, c->name, c->name_len, &pubs[i]);
        }
    }
    request_free(q);
    flush_held(r, c);
}

/* Every few seconds, each followed stream's position: a publication whose pub/sub
 * message never came (a lost connection, a dropped message) is found and filled. */
static void on_check(uv_timer_t *t)
{
    struct redis *r = t->data;
    if (r->cluster)
        remap(r); /* a resharding that no MOVED has told us of yet */
    for (size_t b = 0; b < r->chans.nbuckets; b++)
        for (struct table_node *n = r->chans.buckets[b]; n; n = n->next) {
            struct rchan *c = (struct rchan *)n;
            if (c->subscribed && c->opts.history_size && c->last)
                start_fill(r, c);
        }
}

static void chan_remove(struct redis *r, struct rchan *c)
{
    pthread_mutex_lock(&r->lock);
    table_remove(&r->chans, &c->node);
    pthread_mutex_unlock(&r->lock);
    while (c->held) {
        struct held *h = c->held;
        c->held = h->next;
        free(h);
    }
    free(c);
}

static void do_subscribe(struct redis *r, struct request *q)
{
    q->rec.epoch = (const uint8_t *)q->a;
    q->rec.epoch_len = q->a_len;
    struct shard *sh = &r->shards[shard_of(r, q->ch, q->ch_len)];
    if (sh->cmd.down || sh->sub.down) {
        q->status = ENGINE_ERR_UNAVAILABLE; /* the SDK retries */
        finish(r, q);
        return;
    }
    uint64_t hash = table_hash(q->ch, q->ch_len);
    struct rchan *c = chan_find(r, q->ch, q->ch_len, hash);
    if (c == NULL) {
        c = calloc(1, sizeof(*c) + q->ch_len);
        if (c == NULL) {
            q->status = ENGINE_ERR_INTERNAL;
            finish(r, q);
            return;
        }
        c->node.hash = hash;
        c->name_len = (uint16_t)q->ch_len;
        memcpy(c->name, q->ch, q->ch_len);
        c->held_tail = &c->held;
        c->opts = q->opts;
        c->shard = (int16_t)sh->index;
        pthread_mutex_lock(&r->lock);
        table_insert(&r->chans, &c->node);
        pthread_mutex_unlock(&r->lock);
        send_subscribe(r, sh, 1, q->ch, q->ch_len);
    }
    c->refs++;
    if (!c->subscribed) {
        q->next = c->waiting;
        c->waiting = q;
        return;
    }
    subscribe_read(r, q, c);
}

/* A SUBSCRIBE confirmation on a shard's pub/sub connection. */
static void on_subscribed(struct redis *r, struct shard *sh, const char *name, size_t len)
{
    struct rchan *c = is_control(r, name, len) ? NULL : chan_of(r, name, len);
    if (c == NULL || c->shard != sh->index)
        return; /* the control channel, or a shard the channel has moved from */
    c->subscribed = 1;
    if (c->check) {
        c->check = 0;
        start_fill(r, c); /* what was published while the connection was down */
    }
    struct request *w = c->waiting;
    c->waiting = NULL;
    while (w) {
        struct request *next = w->next;
        subscribe_read(r, w, c);
        w = next;
    }
}

static void do_unsubscribe(struct redis *r, struct request *q)
{
    struct rchan *c = chan_find(r, q->ch, q->ch_len, table_hash(q->ch, q->ch_len));
    if (c && c->refs && --c->refs == 0 && c->waiting == NULL && c->reading == 0) {
        if (c->shard >= 0)
            send_subscribe(r, &r->shards[c->shard], 0, q->ch, q->ch_len);
        chan_remove(r, c);
    }
    request_free(q);
}

/* -- presence -- */

static void on_presence_done(struct redis *r, void *arg, redisReply *reply)
{
    struct request *q = arg;
    if (reply_error(reply)) {
        log_reply_error(reply);
        q->status = reply_status(reply);
    }
    if (q->kind == REQ_PRESENCE_REMOVE)
        request_free(q);
    else
        finish(r, q);
}

/* This node's presence members of a channel, refreshed in Redis every third of
 * presence_ttl while their connections live. */
struct rpres {
    struct table_node node;
    uint32_t n, cap;
    char (*clients)[37];
    uint16_t name_len;
    uint8_t name[];
};

static struct rpres *pres_find(struct redis *r, const char *ch, size_t len, uint64_t hash)
{
    for (struct table_node *n = table_bucket(&r->pres, hash); n; n = n->next) {
        struct rpres *p = (struct rpres *)n;
        if (n->hash == hash && p->name_len == len && memcmp(p->name, ch, len) == 0)
            return p;
    }
    return NULL;
}

static void pres_track(struct redis *r, const char *ch, size_t len, const char *client, int add)
{
    uint64_t hash = table_hash(ch, len);
    struct rpres *p = pres_find(r, ch, len, hash);
    if (add) {
        if (p == NULL) {
            p = calloc(1, sizeof(*p) + len);
            if (p == NULL)
                return;
            p->node.hash = hash;
            p->name_len = (uint16_t)len;
            memcpy(p->name, ch, len);
            table_insert(&r->pres, &p->node);
        }
        if (p->n == p->cap) {
            uint32_t cap = p->cap ? p->cap * 2 : 4;
            void *c = realloc(p->clients, cap * sizeof(*p->clients));
            if (c == NULL)
                return;
            p->clients = c;
            p->cap = cap;
        }
        snprintf(p->clients[p->n++], 37, "%s", client);
        return;
    }
    for (uint32_t i = 0; p && i < p->n; i++) {
        if (strcmp(p->clients[i], client) == 0) {
            memcpy(p->clients[i], p->clients[--p->n], 37);
            break;
        }
    }
    if (p && p->n == 0) {
        table_remove(&r->pres, &p->node);
        free(p->clients);
        free(p);
    }
}

static void do_presence_change(struct redis *r, struct request *q)
{
    struct shard *sh = &r->shards[shard_of(r, q->ch, q->ch_len)];
    size_t pl, ul, zl, cl;
    char *pk = key(r, q->ch, q->ch_len, "p", NULL, 0, &pl);
    char *uk = key(r, q->ch, q->ch_len, "u", NULL, 0, &ul);
    char *zk = key(r, q->ch, q->ch_len, "z", NULL, 0, &zl);
    char *pubch = key(r, q->ch, q->ch_len, "c", NULL, 0, &cl);
    if (q->flag_a)
        pres_track(r, q->ch, q->ch_len, q->a, q->kind == REQ_PRESENCE_ADD);
    if (pk && uk && zk && pubch) {
        if (q->kind == REQ_PRESENCE_ADD) {
            char ttl[16];
            snprintf(ttl, sizeof(ttl), "%u", r->presence_ttl);
            const char *argv[10] = {pk,    uk,    zk, q->a, q->b, q->c, q->flag_b ? "1" : "0",
                                    pubch, q->flag_a ? "1" : "0", ttl};
            size_t lens[10] = {pl, ul, zl, q->a_len, q->b_len, q->c_len, 1, cl, 1, strlen(ttl)};
            evalsha(r, sh, SCRIPT_PRESENCE_ADD, 3, 10, argv, lens, on_presence_done, q);
        } else {
            const char *argv[7] = {pk, uk, zk, q->a, q->flag_b ? "1" : "0", pubch, q->c};
            size_t lens[7] = {pl, ul, zl, q->a_len, 1, cl, q->c_len};
            evalsha(r, sh, SCRIPT_PRESENCE_REMOVE, 3, 7, argv, lens, on_presence_done, q);
        }
    } else {
        q->status = ENGINE_ERR_INTERNAL;
        on_presence_done(r, q, NULL);
    }
    free(pk);
    free(uk);
    free(zk);
    free(pubch);
}

static void limit_refresh(struct redis *r);

/* Every third of presence_ttl: this node's members live on, and its counts of the
 * shared limits. */
static void on_presence_refresh(uv_timer_t *t)
{
    struct redis *r = t->data;
    limit_refresh(r);
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%u", r->presence_ttl);
    for (size_t b = 0; b < r->pres.nbuckets; b++) {
        for (struct table_node *n = r->pres.buckets[b]; n; n = n->next) {
            struct rpres *p = (struct rpres *)n;
            struct shard *sh = &r->shards[shard_of(r, (const char *)p->name, p->name_len)];
            size_t pl, ul, zl;
            char *pk = key(r, (const char *)p->name, p->name_len, "p", NULL, 0, &pl);
            char *uk = key(r, (const char *)p->name, p->name_len, "u", NULL, 0, &ul);
            char *zk = key(r, (const char *)p->name, p->name_len, "z", NULL, 0, &zl);
            for (uint32_t at = 0; pk && uk && zk && at < p->n; at += 16) {
                const char *argv[20] = {pk, uk, zk, ttl};
                size_t lens[20] = {pl, ul, zl, strlen(ttl)};
                int argc = 4;
                for (uint32_t i = at; i < p->n && i < at + 16; i++, argc++) {
                    argv[argc] = p->clients[i];
                    lens[argc] = strlen(p->clients[i]);
                }
                evalsha(r, sh, SCRIPT_PRESENCE_REFRESH, 3, argc, argv, lens, ignore_reply, NULL);
            }
            free(pk);
            free(uk);
            free(zk);
        }
    }
}

static void on_presence_members(struct redis *r, void *arg, redisReply *reply)
{
    struct request *q = arg;
    if (reply_error(reply) || reply->type != REDIS_REPLY_ARRAY || reply->elements % 2) {
        log_reply_error(reply);
        q->status = reply_status(reply);
        finish(r, q);
        return;
    }
    size_t n = reply->elements / 2;
    struct engine_presence *m = n ? calloc(n, sizeof(*m)) : NULL;
    if (n && m == NULL) {
        q->status = ENGINE_ERR_INTERNAL;
        finish(r, q);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        redisReply *client = reply->element[2 * i], *v = reply->element[2 * i + 1];
        char *colon = memchr(v->str, ':', v->len);
        if (colon == NULL)
            continue;
        size_t ul = strtoul(v->str, NULL, 10);
        size_t info_at = (size_t)(colon - v->str) + 1 + ul;
        if (info_at > v->len)
            continue;
        m[k].client = client->str;
        m[k].info = (const uint8_t *)v->str + info_at;
        m[k].info_len = v->len - info_at;
        k++;
    }
    q->items = m;
    q->n = k;
    q->reply = steal(reply);
    finish(r, q);
}

static void on_presence_counts(struct redis *r, void *arg, redisReply *reply)
{
    struct request *q = arg;
    if (reply_error(reply) || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        q->status = reply_status(reply);
    } else {
        q->num_a = (uint64_t)reply_int(reply->element[0]);
        q->num_b = (uint64_t)reply_int(reply->element[1]);
    }
    finish(r, q);
}

static void do_presence_query(struct redis *r, struct request *q)
{
    struct shard *sh = &r->shards[shard_of(r, q->ch, q->ch_len)];
    size_t pl, ul, zl;
    char *pk = key(r, q->ch, q->ch_len, "p", NULL, 0, &pl);
    char *uk = key(r, q->ch, q->ch_len, "u", NULL, 0, &ul);
    char *zk = key(r, q->ch, q->ch_len, "z", NULL, 0, &zl);
    if (pk == NULL || uk == NULL || zk == NULL) {
        q->status = ENGINE_ERR_INTERNAL;
        finish(r, q);
    } else {
        int stats = q->kind == REQ_PRESENCE_STATS;
        const char *argv[4] = {pk, uk, zk, stats ? "stats" : "members"};
        size_t lens[4] = {pl, ul, zl, strlen(argv[3])};
        evalsha(r, sh, SCRIPT_PRESENCE_GET, 3, 4, argv, lens,
                stats ? on_presence_counts : on_presence_members, q);
    }
    free(pk);
    free(uk);
    free(zk);
}

/* -- controls and nodes, on the first shard -- */

static void on_nodes(struct redis *r, void *arg, redisReply *reply)
{
    struct request *q = arg;
    if (reply_error(reply) || reply->type != REDIS_REPLY_ARRAY || reply->elements % 2) {
        q->status = reply_status(reply);
    } else {
        size_t n = reply->elements / 2;
        struct engine_node *nodes = n ? calloc(n, sizeof(*nodes)) : NULL;
        for (size_t i = 0; nodes && i < n; i++) {
            nodes[i].uid = reply->element[2 * i]->str;
            nodes[i].info = (const uint8_t *)reply->element[2 * i + 1]->str;
            nodes[i].info_len = reply->element[2 * i + 1]->len;
        }
        if (n && nodes == NULL) {
            q->status = ENGINE_ERR_INTERNAL;
        } else {
            q->items = nodes;
            q->n = n;
            q->reply = steal(reply);
        }
    }
    finish(r, q);
}

static void do_nodes(struct redis *r, struct request *q)
{
    struct shard *sh = &r->shards[nodes_shard(r)];
    const char *hk = r->nodes_key, *zk = r->seen_key;
    size_t hl = r->nodes_len, zl = r->seen_len;
    char exp[16];
    snprintf(exp, sizeof(exp), "%d", NODE_EXPIRY_MS);
    if (q->kind == REQ_CONTROL) {
        const char *argv[3] = {r->cluster ? "SPUBLISH" : "PUBLISH", r->control, q->a};
        size_t lens[3] = {strlen(argv[0]), r->control_len, q->a_len};
        command(&sh->cmd, 3, argv, lens, ignore_reply, NULL);
        request_free(q);
    } else if (q->kind == REQ_ANNOUNCE) {
        const char *argv[5] = {hk, zk, q->a, q->b, exp};
        size_t lens[5] = {hl, zl, q->a_len, q->b_len, strlen(exp)};
        evalsha(r, sh, SCRIPT_ANNOUNCE, 2, 5, argv, lens, ignore_reply, NULL);
        request_free(q);
    } else {
        const char *argv[3] = {hk, zk, exp};
        size_t lens[3] = {hl, zl, strlen(exp)};
        evalsha(r, sh, SCRIPT_NODES, 2, 3, argv, lens, on_nodes, q);
    }
}

static void redis_control(struct engine *e, const uint8_t *msg, size_t len)
{
    struct redis *r = of(e);
    struct request *q =
        request_new(r, REQ_CONTROL, NULL, 0, msg, len, NULL, 0, NULL, 0, NULL, 0, NULL, NULL);
    if (q)
        submit(r, q);
}

static void redis_announce(struct engine *e, const char *uid, const uint8_t *info, size_t len)
{
    struct redis *r = of(e);
    struct request *q = request_new(r, REQ_ANNOUNCE, NULL, 0, uid, strlen(uid), info, len, NULL,
                                    0, NULL, 0, NULL, NULL);
    if (q)
        submit(r, q);
}

static void redis_nodes(struct engine *e, engine_nodes_cb cb, void *ud)
{
    struct redis *r = of(e);
    struct request *q =
        request_new(r, REQ_NODES, NULL, 0, NULL, 0, NULL, 0, NULL, 0, NULL, 0, (void *)cb, ud);
    if (q == NULL) {
        cb(ud, ENGINE_ERR_INTERNAL, NULL, 0);
        return;
    }
    submit(r, q);
}

/* -- shared limits -- */

/* This node's count under a limit's key, as it has told Redis. */
struct rlimit {
    struct table_node node;
    /* What this node holds. Below 0 for a while when a release comes before the reply
     * that counts its add (Redis kept waiting): the two meet at the right count. */
    int32_t count;
    uint16_t len;
    char key[];
};

static struct rlimit *rlimit_of(struct redis *r, const char *k, size_t len, int make)
{
    uint64_t hash = table_hash(k, len);
    for (struct table_node *n = table_bucket(&r->limits, hash); n; n = n->next) {
        struct rlimit *x = (struct rlimit *)n;
        if (n->hash == hash && x->len == len && memcmp(x->key, k, len) == 0)
            return x;
    }
    if (!make)
        return NULL;
    struct rlimit *x = calloc(1, sizeof(*x) + len);
    if (x == NULL)
        return NULL;
    x->node.hash = hash;
    x->len = (uint16_t)len;
    memcpy(x->key, k, len);
    table_insert(&r->limits, &x->node);
    return x;
}

/* The limit's keys share the hash tag {l:<key>}: one slot, one shard (returned). */
static struct shard *limit_keys(struct redis *r, const char *k, size_t len, char *ks[3],
                                size_t kl[3])
{
    static const char *const suffix[3] = {"b", "n", "z"};
    size_t n = len + 2;
    char *tag = malloc(n);
    ks[0] = ks[1] = ks[2] = NULL;
    if (tag == NULL)
        return NULL;
    memcpy(tag, "l:", 2);
    memcpy(tag + 2, k, len);
    int ok = 1;
    for (int i = 0; i < 3; i++)
        ok &= (ks[i] = key(r, tag, n, suffix[i], NULL, 0, &kl[i])) != NULL;
    struct shard *sh = &r->shards[shard_of(r, tag, n)];
    free(tag);
    if (!ok) {
        for (int i = 0; i < 3; i++)
            free(ks[i]);
        return NULL;
    }
    return sh;
}

static unsigned limit_ttl_ms(const struct redis *r)
{
    return r->presence_ttl * 1000;
}

static void asking_unlink(struct redis *r, struct request *q)
{
    if (q->lprev)
        q->lprev->lnext = q->lnext;
    else if (r->asking == q)
        r->asking = q->lnext;
    else
        return; /* not linked */
    if (q->lnext)
        q->lnext->lprev = q->lprev;
    else
        r->asking_tail = q->lprev;
    q->lnext = q->lprev = NULL;
    if (r->asking == NULL)
        uv_timer_stop(&r->limit_timer);
}

/* Limit requests Redis has kept waiting past LIMIT_ANSWER_MS: their askers hear
 * "unreachable" now (they decide locally); the requests stay for Redis' reply. */
static void on_limit_timer(uv_timer_t *t)
{
    struct redis *r = t->data;
    uint64_t now = uv_now(r->uv);
    while (r->asking && r->asking->asked_ms + LIMIT_ANSWER_MS <= now) {
        struct request *q = r->asking;
        asking_unlink(r, q);
        struct request *a = calloc(1, sizeof(*a));
        if (a == NULL)
            continue; /* the asker hears Redis' reply, late */
        a->kind = REQ_LIMIT;
        a->slot = q->slot;
        a->cb = q->cb;
        a->ud = q->ud;
        a->status = ENGINE_ERR_UNAVAILABLE;
        a->num_a = 1;
        q->cb = NULL;
        q->early = 1;
        finish(r, a);
    }
}

static void on_limit(struct redis *r, void *arg, redisReply *reply)
{
    struct request *q = arg;
    int delta = q->flag_b;
    asking_unlink(r, q);
    if (reply_error(reply) || reply->type != REDIS_REPLY_INTEGER) {
        log_reply_error(reply);
        q->status = reply_status(reply);
        q->num_a = 1;
    } else {
        q->num_a = reply->integer == 1;
    }
    /* Counted unless refused: Redis has it, or gets it with the next refresh. An asker
     * answered early holds its connection whatever Redis says: counted too (the refresh
     * tells Redis what this node holds). */
    if (delta > 0 && (q->num_a || q->early)) {
        struct rlimit *x = rlimit_of(r, q->a, q->a_len, 1);
        if (x)
            x->count++;
    }
    if (q->cb)
        finish(r, q);
    else
        request_free(q);
}

static void do_limit(struct redis *r, struct request *q)
{
    if (q->flag_b < 0) {
        struct rlimit *x = rlimit_of(r, q->a, q->a_len, 1);
        if (x)
            x->count--;
    }
    char *ks[3];
    size_t kl[3];
    struct shard *sh = limit_keys(r, q->a, q->a_len, ks, kl);
    if (sh == NULL) {
        q->status = ENGINE_ERR_INTERNAL;
        q->num_a = 1;
        if (q->cb)
            finish(r, q);
        else
            request_free(q);
        return;
    }
    char iv[24], win[24], max[16], delta[8], ttl[16];
    snprintf(iv, sizeof(iv), "%llu", (unsigned long long)q->num_a);
    snprintf(win, sizeof(win), "%llu", (unsigned long long)q->num_b);
    snprintf(max, sizeof(max), "%d", q->flag_a);
    snprintf(delta, sizeof(delta), "%d", q->flag_b);
    snprintf(ttl, sizeof(ttl), "%u", limit_ttl_ms(r));
    const char *argv[9] = {ks[0], ks[1], ks[2], iv, win, max, delta, r->uid, ttl};
    size_t lens[9] = {kl[0], kl[1], kl[2], strlen(iv), strlen(win), strlen(max),
                      strlen(delta), strlen(r->uid), strlen(ttl)};
    if (q->cb) {
        q->asked_ms = uv_now(r->uv);
        q->lprev = r->asking_tail;
        if (r->asking_tail)
            r->asking_tail->lnext = q;
        else
            r->asking = q;
        r->asking_tail = q;
        if (!uv_is_active((uv_handle_t *)&r->limit_timer))
            uv_timer_start(&r->limit_timer, on_limit_timer, LIMIT_ANSWER_MS / 2,
                           LIMIT_ANSWER_MS / 2);
    }
    evalsha(r, sh, SCRIPT_LIMIT, 3, 9, argv, lens, on_limit, q);
    for (int i = 0; i < 3; i++)
        free(ks[i]);
}

/* With the presence refresh: this node's counts live on in Redis, written whole (a
 * change that failed while Redis was away is put right); those back at 0 go. */
static void limit_refresh(struct redis *r)
{
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%u", limit_ttl_ms(r));
    for (size_t b = 0; b < r->limits.nbuckets; b++) {
        for (struct table_node *n = r->limits.buckets[b], *next; n; n = next) {
            next = n->next;
            struct rlimit *x = (struct rlimit *)n;
            char *ks[3];
            size_t kl[3];
            struct shard *sh = limit_keys(r, x->key, x->len, ks, kl);
            if (sh) {
                char count[16];
                snprintf(count, sizeof(count), "%d", x->count > 0 ? x->count : 0);
                const char *argv[5] = {ks[1], ks[2], r->uid, count, ttl};
                size_t lens[5] = {kl[1], kl[2], strlen(r->uid), strlen(count), strlen(ttl)};
                evalsha(r, sh, SCRIPT_LIMIT_REFRESH, 2, 5, argv, lens, ignore_reply, NULL);
                for (int i = 0; i < 3; i++)
                    free(ks[i]);
            }
            if (x->count == 0) {
                table_remove(&r->limits, &x->node);
                free(x);
            }
        }
    }
}

static void redis_limit(struct engine *e, const uint8_t *k, size_t len,
                        const struct engine_limit *l, engine_limit_cb cb, void *ud)
{
    struct redis *r = of(e);
    if (r->stopping) {
        /* Closing (the last completions may release what they held): nobody to ask. */
        if (cb)
            cb(ud, ENGINE_ERR_UNAVAILABLE, 1);
        return;
    }
    struct request *q =
        request_new(r, REQ_LIMIT, NULL, 0, k, len, NULL, 0, NULL, 0, NULL, 0, (void *)cb, ud);
    if (q == NULL) {
        if (cb)
            cb(ud, ENGINE_ERR_INTERNAL, 1);
        return;
    }
    q->num_a = l->interval_us;
    q->num_b = l->window_us;
    q->flag_a = (int)l->max;
    q->flag_b = l->delta;
    submit(r, q);
}

/* ---- the engine thread ---- */

/* on_read frees each reply after its callback; a callback that keeps it (pointers into
 * its bytes go back to the loop) steals it: on_read then frees a placeholder. */
static redisReply *steal(redisReply *reply)
{
    redisReply *keep = malloc(sizeof(*keep));
    if (keep == NULL)
        return NULL;
    *keep = *reply;
    /* The original is left empty, so that freeReplyObject frees only its shell. */
    reply->type = REDIS_REPLY_NIL;
    reply->element = NULL;
    reply->elements = 0;
    reply->str = NULL;
    reply->len = 0;
    return keep;
}

static void dispatch(struct redis *r, struct request *q)
{
    switch (q->kind) {
    case REQ_PUBLISH:
        do_publish(r, q);
        break;
    case REQ_HISTORY:
        do_history(r, q);
        break;
    case REQ_HISTORY_REMOVE:
        do_history_remove(r, q);
        break;
    case REQ_SUBSCRIBE:
        do_subscribe(r, q);
        break;
    case REQ_UNSUBSCRIBE:
        do_unsubscribe(r, q);
        break;
    case REQ_PRESENCE_ADD:
    case REQ_PRESENCE_REMOVE:
        do_presence_change(r, q);
        break;
    case REQ_PRESENCE:
    case REQ_PRESENCE_STATS:
        do_presence_query(r, q);
        break;
    case REQ_FILL: /* never queued: the engine starts its own */
        request_free(q);
        break;
    case REQ_CONTROL:
    case REQ_ANNOUNCE:
    case REQ_NODES:
        do_nodes(r, q);
        break;
    case REQ_RESET:
        do_reset(r, q);
        break;
    case REQ_LIMIT:
        do_limit(r, q);
        break;
    }
}

/* The other loops' requests, on the home loop. */
static void on_wake(uv_async_t *h)
{
    struct redis *r = h->data;
    pthread_mutex_lock(&r->lock);
    struct request *q = r->queue;
    r->queue = NULL;
    r->queue_tail = &r->queue;
    pthread_mutex_unlock(&r->lock);
    while (q) {
        struct request *next = q->next;
        dispatch(r, q);
        q = next;
    }
    flush_subscriptions(r);
}

/* ---- the interface ---- */

static void redis_publish(struct engine *e, const uint8_t *ch, size_t len,
                          const struct engine_stream_opts *opts, const struct engine_pub *pub,
                          const uint8_t *key_, size_t key_len, engine_publish_cb cb, void *ud)
{
    struct redis *r = of(e);
    struct request *q = request_new(r, REQ_PUBLISH, ch, len, pub->data, pub->data_len, pub->info,
                                    pub->info ? pub->info_len : 0, key_, key_len, NULL, 0,
                                    (void *)cb, ud);
    if (q == NULL) {
        struct engine_pos none = {0, ""};
        cb(ud, ENGINE_ERR_INTERNAL, &none);
        return;
    }
    q->opts = *opts;
    submit(r, q);
}

static void redis_history(struct engine *e, const uint8_t *ch, size_t len,
                          const struct engine_stream_opts *opts,
                          const struct engine_history_query *hq, engine_history_cb cb, void *ud)
{
    struct redis *r = of(e);
    struct request *q = request_new(r, REQ_HISTORY, ch, len, hq->since_epoch, hq->since_epoch_len,
                                    NULL, 0, NULL, 0, NULL, 0, (void *)cb, ud);
    if (q == NULL) {
        struct engine_pos none = {0, ""};
        cb(ud, ENGINE_ERR_INTERNAL, &none, NULL, 0);
        return;
    }
    q->opts = *opts;
    q->q = *hq;
    submit(r, q);
}

static void redis_history_remove(struct engine *e, const uint8_t *ch, size_t len,
                                 engine_done_cb cb, void *ud)
{
    struct redis *r = of(e);
    struct request *q = request_new(r, REQ_HISTORY_REMOVE, ch, len, NULL, 0, NULL, 0, NULL, 0,
                                    NULL, 0, (void *)cb, ud);
    if (q == NULL) {
        if (cb)
            cb(ud, ENGINE_ERR_INTERNAL);
        return;
    }
    submit(r, q);
}

static void redis_reset(struct engine *e, const uint8_t *prefix, size_t len, engine_done_cb cb,
                        void *ud)
{
    struct redis *r = of(e);
    struct request *q = request_new(r, REQ_RESET, prefix, len, NULL, 0, NULL, 0, NULL, 0, NULL, 0,
                                    (void *)cb, ud);
    if (q == NULL) {
        if (cb)
            cb(ud, ENGINE_ERR_INTERNAL);
        return;
    }
    submit(r, q);
}

static void redis_subscribe(struct engine *e, const uint8_t *ch, size_t len,
                            const struct engine_stream_opts *opts,
                            const struct engine_recovery *rec, engine_subscribe_cb cb, void *ud)
{
    struct redis *r = of(e);
    struct request *q = request_new(r, REQ_SUBSCRIBE, ch, len, rec ? rec->epoch : NULL,
                                    rec ? rec->epoch_len : 0, NULL, 0, NULL, 0, NULL, 0,
                                    (void *)cb, ud);
    if (q == NULL) {
        struct engine_pos none = {0, ""};
        cb(ud, ENGINE_ERR_INTERNAL, &none, 0, NULL, 0);
        return;
    }
    q->opts = *opts;
    if (rec)
        q->rec = *rec;
    submit(r, q);
}

static void redis_unsubscribe(struct engine *e, const uint8_t *ch, size_t len)
{
    struct redis *r = of(e);
    struct request *q =
        request_new(r, REQ_UNSUBSCRIBE, ch, len, NULL, 0, NULL, 0, NULL, 0, NULL, 0, NULL, NULL);
    if (q)
        submit(r, q);
}

static void redis_presence_add(struct engine *e, const uint8_t *ch, size_t len, const char *client,
                               const uint8_t *user, size_t user_len, const uint8_t *info,
                               size_t info_len, int presence, int join_leave, engine_done_cb cb,
                               void *ud)
{
    struct redis *r = of(e);
    struct request *q =
        request_new(r, REQ_PRESENCE_ADD, ch, len, client, strlen(client), user, user_len, info,
                    info_len, NULL, 0, (void *)cb, ud);
    if (q == NULL) {
        if (cb)
            cb(ud, ENGINE_ERR_INTERNAL);
        return;
    }
    q->flag_a = presence;
    q->flag_b = join_leave;
    submit(r, q);
}

static void redis_presence_remove(struct engine *e, const uint8_t *ch, size_t len,
                                  const char *client, const uint8_t *info, size_t info_len,
                                  int presence, int join_leave)
{
    struct redis *r = of(e);
    struct request *q = request_new(r, REQ_PRESENCE_REMOVE, ch, len, client, strlen(client), NULL,
                                    0, info, info_len, NULL, 0, NULL, NULL);
    if (q == NULL)
        return;
    q->flag_a = presence;
    q->flag_b = join_leave;
    submit(r, q);
}

static void redis_presence(struct engine *e, const uint8_t *ch, size_t len, engine_presence_cb cb,
                           void *ud)
{
    struct redis *r = of(e);
    struct request *q = request_new(r, REQ_PRESENCE, ch, len, NULL, 0, NULL, 0, NULL, 0, NULL, 0,
                                    (void *)cb, ud);
    if (q == NULL) {
        cb(ud, ENGINE_ERR_INTERNAL, NULL, 0);
        return;
    }
    submit(r, q);
}

static void redis_presence_stats(struct engine *e, const uint8_t *ch, size_t len,
                                 engine_stats_cb cb, void *ud)
{
    struct redis *r = of(e);
    struct request *q = request_new(r, REQ_PRESENCE_STATS, ch, len, NULL, 0, NULL, 0, NULL, 0,
                                    NULL, 0, (void *)cb, ud);
    if (q == NULL) {
        cb(ud, ENGINE_ERR_INTERNAL, 0, 0);
        return;
    }
    submit(r, q);
}

/* The channels this node follows (streams in Redis are not enumerated). */
static void redis_channels(struct engine *e, engine_channel_cb cb, void *ud)
{
    struct redis *r = of(e);
    pthread_mutex_lock(&r->lock);
    for (size_t b = 0; b < r->chans.nbuckets; b++)
        for (struct table_node *n = r->chans.buckets[b]; n; n = n->next)
            cb(ud, ((struct rchan *)n)->name, ((struct rchan *)n)->name_len);
    pthread_mutex_unlock(&r->lock);
    cb(ud, NULL, 0);
}

static void redis_sweep(struct engine *e)
{
    /* Redis expires history and streams itself (EXPIRE, MAXLEN). */
}

static const char *down_reason(const struct shard *sh)
{
    int why = atomic_load(&sh->down_why);
    if (why < 0)
        return uv_strerror(why); /* static text: safe from any thread */
    return why == DOWN_LOST ? "connection lost" : "not connected yet";
}

static void redis_stores(struct engine *e, engine_store_cb cb, void *ud)
{
    struct redis *r = of(e);
    if (r->cluster) {
        /* Every slot served, and every master that serves one reachable. */
        if (!atomic_load(&r->mapped))
            cb(ud, "redis cluster", "slots without a master");
        for (unsigned i = 0; i < r->cap; i++) {
            const struct shard *sh = &r->shards[i];
            if (atomic_load(&sh->owns) > 0)
                cb(ud, sh->url, atomic_load(&sh->reachable) ? NULL : down_reason(sh));
        }
        return;
    }
    for (unsigned i = 0; i < r->nshards; i++) {
        const struct shard *sh = &r->shards[i];
        cb(ud, sh->url, atomic_load(&sh->reachable) ? NULL : down_reason(sh));
    }
}

/* After the home loop's thread has ended: its handles are closed from here. */
static void free_parts(struct redis *r);

static void redis_close(struct engine *e)
{
    struct redis *r = of(e);
    r->stopping = 1;
    for (unsigned i = 0; i < r->nshards; i++) {
        struct rconn *cs[2] = {&r->shards[i].cmd, &r->shards[i].sub};
        for (int k = 0; k < 2; k++) {
            struct rconn *c = cs[k];
            c->closing = 1;
            uv_timer_stop(&c->retry);
            uv_close((uv_handle_t *)&c->retry, NULL);
            if (!uv_is_closing((uv_handle_t *)&c->tcp))
                uv_close((uv_handle_t *)&c->tcp, NULL);
        }
    }
    uv_close((uv_handle_t *)&r->wake, NULL);
    uv_timer_stop(&r->check);
    uv_close((uv_handle_t *)&r->check, NULL);
    uv_timer_stop(&r->presence);
    uv_close((uv_handle_t *)&r->presence, NULL);
    uv_timer_stop(&r->remap);
    uv_close((uv_handle_t *)&r->remap, NULL);
    uv_timer_stop(&r->limit_timer);
    uv_close((uv_handle_t *)&r->limit_timer, NULL);
    uv_check_stop(&r->writes);
    uv_close((uv_handle_t *)&r->writes, NULL);
    uv_idle_stop(&r->kick);
    uv_close((uv_handle_t *)&r->kick, NULL);
    uv_run(r->uv, UV_RUN_NOWAIT);
    /* Requests queued after the loop ended are answered (unavailable) and freed. */
    for (struct request *q = r->queue, *next; q; q = next) {
        next = q->next;
        q->status = ENGINE_ERR_UNAVAILABLE;
        complete(q);
    }
    r->queue = NULL;
    /* So are those still waiting for a reply (a presence leave sent as the last
     * connection closed): every connection is down first, so that what their callbacks
     * send fails at once too. */
    for (unsigned i = 0; i < r->nshards; i++) {
        struct rconn *cs[2] = {&r->shards[i].cmd, &r->shards[i].sub};
        for (int k = 0; k < 2; k++) {
            cs[k]->up = 0;
            cs[k]->down = 1;
        }
    }
    for (unsigned i = 0; i < r->nshards; i++) {
        fail_pending(&r->shards[i].cmd);
        fail_pending(&r->shards[i].sub);
    }
    for (unsigned i = 0; i < r->nshards; i++) {
        struct shard *sh = &r->shards[i];
        struct rconn *cs[2] = {&sh->cmd, &sh->sub};
        for (int k = 0; k < 2; k++) {
            if (cs[k]->reader)
                redisReaderFree(cs[k]->reader);
            if (cs[k]->ssl)
                SSL_free(cs[k]->ssl);
            struct pending *p = cs[k]->head;
            while (p) {
                struct pending *next = p->next;
                free(p->cmd);
                free(p);
                p = next;
            }
            free(cs[k]->outbox);
            free(cs[k]->out);
        }
        struct batch *bs[2] = {&sh->subscribe, &sh->unsubscribe};
        for (int k = 0; k < 2; k++) {
            for (size_t j = 0; j < bs[k]->n; j++)
                free(bs[k]->names[j]);
            free(bs[k]->names);
            free(bs[k]->lens);
        }
    }
    for (size_t b = 0; b < r->chans.nbuckets; b++) {
        for (struct table_node *n = r->chans.buckets[b], *next; n; n = next) {
            next = n->next;
            struct rchan *c = (struct rchan *)n;
            while (c->held) {
                struct held *h = c->held;
                c->held = h->next;
                free(h);
            }
            free(c);
        }
    }
    table_destroy(&r->chans);
    for (size_t b = 0; b < r->pres.nbuckets; b++) {
        for (struct table_node *n = r->pres.buckets[b], *next; n; n = next) {
            next = n->next;
            free(((struct rpres *)n)->clients);
            free(n);
        }
    }
    table_destroy(&r->pres);
    for (size_t b = 0; b < r->limits.nbuckets; b++) {
        for (struct table_node *n = r->limits.buckets[b], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    }
    table_destroy(&r->limits);
    SSL_CTX_free(r->tls);
    pthread_mutex_destroy(&r->lock);
    free_parts(r);
}

static const struct engine_ops redis_ops = {
    .name = "redis",
    .publish = redis_publish,
    .history = redis_history,
    .history_remove = redis_history_remove,
    .reset = redis_reset,
    .subscribe = redis_subscribe,
    .unsubscribe = redis_unsubscribe,
    .presence_add = redis_presence_add,
    .presence_remove = redis_presence_remove,
    .presence = redis_presence,
    .presence_stats = redis_presence_stats,
    .channels = redis_channels,
    .sweep = redis_sweep,
    .stores = redis_stores,
    .control = redis_control,
    .announce = redis_announce,
    .nodes = redis_nodes,
    .limit = redis_limit,
    .close = redis_close,
};

/* redis://[user:password@]host:port[/db] (a password alone: redis://:password@...). */
static int parse_url(const char *name, const char *url, struct shard *sh, char *err,
                     size_t errlen)
{
    char red[300]; /* url in an error message, without its password */
    sh->tls = strncmp(url, "rediss://", 9) == 0;
    const char *p = url + (sh->tls ? 9 : 8); /* checked by the config */
    const char *at = strrchr(p, '@');
    /* Named in /ready, /api/info and the log without its user and password. */
    snprintf(sh->url, sizeof(sh->url), "%s://%s", sh->tls ? "rediss" : "redis", at ? at + 1 : p);
    for (char *q = sh->url; *q; q++)
        if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
            *q = '?';
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL) {
            snprintf(err, errlen, "%s: %s: expected user:password@ before the host", name,
                     log_redact_url(url, red, sizeof(red)));
            return -1;
        }
        if (colon > p)
            sh->user = strndup(p, (size_t)(colon - p));
        sh->password = strndup(colon + 1, (size_t)(at - colon - 1));
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    const char *hostend = slash ? slash : p + strlen(p);
    const char *colon = NULL;
    for (const char *q = hostend; q > p; q--)
        if (q[-1] == ':') {
            colon = q - 1;
            break;
        }
    char host[256], port[16] = "6379";
    size_t hl = (size_t)((colon ? colon : hostend) - p);
    if (hl == 0 || hl >= sizeof(host)) {
        snprintf(err, errlen, "%s: %s: expected a host", name,
                 log_redact_url(url, red, sizeof(red)));
        return -1;
    }
    memcpy(host, p, hl);
    host[hl] = 0;
    snprintf(sh->host, sizeof(sh->host), "%s", host);
    if (colon) {
        size_t pl = (size_t)(hostend - colon - 1);
        if (pl == 0 || pl >= sizeof(port)) {
            snprintf(err, errlen, "%s: %s: expected a port", name,
                     log_redact_url(url, red, sizeof(red)));
            return -1;
        }
        memcpy(port, colon + 1, pl);
        port[pl] = 0;
    }
    sh->db = slash && slash[1] ? atoi(slash + 1) : 0;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL) {
        snprintf(err, errlen, "%s: %s: cannot resolve %s", name,
                 log_redact_url(url, red, sizeof(red)), host);
        return -1;
    }
    memcpy(&sh->addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static void init_conn(struct redis *r, struct shard *sh, struct rconn *c, int pubsub)
{
    c->r = r;
    c->sh = sh;
    c->pubsub = pubsub;
    uv_timer_init(r->uv, &c->retry);
    uv_unref((uv_handle_t *)&c->retry);
    c->retry.data = c;
}

/* After every turn of the home loop: what its callbacks asked of Redis, one write a
 * connection. */
static void flush_writes(uv_check_t *h)
{
    struct redis *r = h->data;
    uv_idle_stop(&r->kick);
    for (unsigned i = 0; i < r->nshards; i++) {
        flush_conn(&r->shards[i].cmd);
        flush_conn(&r->shards[i].sub);
    }
}

static void shard_start(struct redis *r, struct shard *sh)
{
    init_conn(r, sh, &sh->cmd, 0);
    init_conn(r, sh, &sh->sub, 1);
    conn_start(&sh->cmd);
    conn_start(&sh->sub);
}

/* ---- a Redis Cluster ---- */

/* The shard for a master named by the cluster (an empty host: the node that said it),
 * added (and connected, with the seeds' user, password and TLS) when it is new. */
static struct shard *shard_at(struct redis *r, const struct shard *from,
                              const struct redis_endpoint *ep)
{
    const char *host = ep->host[0] ? ep->host : from->host;
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof(addr));
    if (uv_ip4_addr(host, ep->port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, ep->port, (struct sockaddr_in6 *)&addr) != 0) {
        /* A name would need a resolver call on the loop; clusters announce addresses
         * unless told otherwise (cluster-preferred-endpoint-type). */
        log_warn("redis_cluster_bad_node", "redis: cluster node %s:%u is not an address; ignored",
                 host, ep->port);
        return NULL;
    }
    for (unsigned i = 0; i < r->nshards; i++) {
        const struct sockaddr_storage *a = &r->shards[i].addr;
        if (a->ss_family != addr.ss_family)
            continue;
        if (a->ss_family == AF_INET) {
            const struct sockaddr_in *x = (const void *)a, *y = (const void *)&addr;
            if (x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr)
                return &r->shards[i];
        } else {
            const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)&addr;
            if (x->sin6_port == y->sin6_port &&
                memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0)
                return &r->shards[i];
        }
    }
    if (r->nshards == r->cap) {
        log_warn("redis_cluster_too_many", "redis: more than %u cluster masters; %s:%u ignored",
                 r->cap, host, ep->port);
        return NULL;
    }
    struct shard *sh = &r->shards[r->nshards];
    sh->index = (uint16_t)r->nshards;
    sh->tls = r->shards[0].tls;
    sh->addr = addr;
    snprintf(sh->host, sizeof(sh->host), "%s", host);
    snprintf(sh->url, sizeof(sh->url), "%s://%.200s:%u", sh->tls ? "rediss" : "redis", host, ep->port);
    for (char *q = sh->url; *q; q++)
        if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
            *q = '?';
    sh->user = r->seed_user ? strdup(r->seed_user) : NULL;
    sh->password = r->seed_password ? strdup(r->seed_password) : NULL;
    r->nshards++;
    log_info("redis_cluster_master", "redis: cluster master %s", sh->url);
    shard_start(r, sh);
    return sh;
}

/* A channel's SUBSCRIBE moves to the shard that serves its slot now; what was published
 * meanwhile is read from the stream once the new one confirms. */
static void chan_move(struct redis *r, struct rchan *c, unsigned to)
{
    if (c->shard >= 0 && r->shards[c->shard].sub.up)
        send_subscribe(r, &r->shards[c->shard], 0, (const char *)c->name, c->name_len);
    c->shard = (int16_t)to;
    c->subscribed = 0;
    c->check = c->last != 0;
    if (r->shards[to].sub.up) /* else its connection subscribes once it is up */
        send_subscribe(r, &r->shards[to], 1, (const char *)c->name, c->name_len);
}

/* After the slot map changed: every followed channel, and the control channel, where
 * its slot is served. */
static void route_all(struct redis *r)
{
    for (size_t b = 0; b < r->chans.nbuckets; b++)
        for (struct table_node *n = r->chans.buckets[b]; n; n = n->next) {
            struct rchan *c = (struct rchan *)n;
            unsigned to = shard_of(r, (const char *)c->name, c->name_len);
            if (c->shard != (int)to)
                chan_move(r, c, to);
        }
    unsigned to = nodes_shard(r);
    if (r->control_shard != (int)to) {
        if (r->control_shard >= 0 && r->shards[r->control_shard].sub.up)
            send_control_subscribe(r, &r->shards[r->control_shard], 0);
        r->control_shard = (int)to;
        if (r->shards[to].sub.up)
            send_control_subscribe(r, &r->shards[to], 1);
    }
    flush_subscriptions(r);
}

/* The owners' slot counts (for /ready), and whether every slot has one. */
static void count_slots(struct redis *r)
{
    unsigned counts[CLUSTER_MAX_SHARDS] = {0}, unserved = 0;
    for (unsigned s = 0; s < REDIS_CLUSTER_SLOTS; s++) {
        if (r->slots[s] == NO_SHARD)
            unserved++;
        else
            counts[r->slots[s]]++;
    }
    for (unsigned i = 0; i < r->nshards; i++)
        atomic_store(&r->shards[i].owns, (int)counts[i]);
    atomic_store(&r->mapped, unserved == 0);
}

static void on_slots(struct redis *r, void *arg, redisReply *reply)
{
    struct shard *from = arg;
    r->remapping = 0;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        if (reply && reply->type == REDIS_REPLY_ERROR)
            log_warn("redis_cluster_slots_failed", "redis: %s: CLUSTER SLOTS: %s", from->url,
                     reply->str);
        return;
    }
    struct redis_slot_range *ranges =
        reply->elements ? malloc(reply->elements * sizeof(*ranges)) : NULL;
    int n = redis_slots_parse(reply, ranges, reply->elements);
    if (n < 0 || (reply->elements && ranges == NULL)) {
        log_warn("redis_cluster_slots_failed", "redis: %s: CLUSTER SLOTS: not a slot map; ignored",
                 from->url);
        free(ranges);
        return;
    }
    uint16_t *map = malloc(REDIS_CLUSTER_SLOTS * sizeof(*map));
    if (map == NULL) {
        free(ranges);
        return;
    }
    memset(map, 0xff, REDIS_CLUSTER_SLOTS * sizeof(*map));
    for (int i = 0; i < n; i++) {
        struct shard *sh = shard_at(r, from, &ranges[i].master);
        for (unsigned s = ranges[i].start; sh && s <= ranges[i].end; s++)
            map[s] = sh->index;
    }
    int changed = memcmp(map, r->slots, REDIS_CLUSTER_SLOTS * sizeof(*map)) != 0;
    memcpy(r->slots, map, REDIS_CLUSTER_SLOTS * sizeof(*map));
    free(map);
    free(ranges);
    count_slots(r);
    if (changed)
        log_info("redis_cluster_slot_map", "redis: cluster slot map: %d ranges%s", n,
                 atomic_load(&r->mapped) ? "" : ", some slots without a master");
    route_all(r);
}

/* Ask a reachable node (a master if one is up, else any) who serves which slots. */
static void remap(struct redis *r)
{
    if (r->remapping || r->stopping)
        return;
    struct shard *ask = NULL;
    for (unsigned i = 0; i < r->nshards; i++) {
        struct shard *sh = &r->shards[i];
        if (sh->cmd.up && (ask == NULL || atomic_load(&sh->owns) > atomic_load(&ask->owns)))
            ask = sh;
    }
    if (ask == NULL)
        return; /* nobody up: the timer asks again */
    r->remapping = 1;
    const char *argv[2] = {"CLUSTER", "SLOTS"};
    size_t lens[2] = {7, 5};
    command(&ask->cmd, 2, argv, lens, on_slots, ask);
}

/* Degraded: a slot without a master, or a master that is not reachable. */
static int degraded(struct redis *r)
{
    if (!atomic_load(&r->mapped))
        return 1;
    for (unsigned i = 0; i < r->nshards; i++)
        if (atomic_load(&r->shards[i].owns) > 0 && !atomic_load(&r->shards[i].reachable))
            return 1;
    return 0;
}

static void on_remap(uv_timer_t *t)
{
    struct redis *r = t->data;
    r->remap_soon = 0;
    remap(r);
    if (degraded(r)) {
        /* Until the cluster has a master for every slot again (a failover takes the
         * node timeout and an election), asked twice a second. */
        r->remap_soon = 1;
        uv_timer_start(&r->remap, on_remap, REMAP_FAST_MS, 0);
    }
}

static void schedule_remap(struct redis *r)
{
    if (!r->cluster || r->remap_soon || r->stopping)
        return;
    r->remap_soon = 1;
    uv_timer_start(&r->remap, on_remap, 20, 0);
}

/* MOVED or ASK in reply to a command kept for it: sent again where it points (after
 * ASKING for an ASK); 1 when it took p. A MOVED also moves the slot in the map, and
 * the whole map is asked for again. */
static int redirect(struct rconn *c, struct pending *p, const redisReply *rep)
{
    struct redis *r = c->r;
    struct redis_redirect to;
    if (p->redirects >= MAX_REDIRECTS || redis_redirect_parse(rep->str, rep->len, &to) != 0)
        return 0;
    struct shard *sh = shard_at(r, c->sh, &to.to);
    char *again = sh && !sh->cmd.down ? malloc(p->len) : NULL;
    if (again == NULL)
        return 0; /* the caller gets the error: temporary */
    if (!to.ask) {
        r->slots[to.slot] = sh->index;
        count_slots(r);
        schedule_remap(r);
    }
    struct rconn *t = &sh->cmd;
    if (to.ask) {
        const char *argv[1] = {"ASKING"};
        size_t lens[1] = {6};
        command(t, 1, argv, lens, ignore_reply, NULL);
    }
    struct pending *n = expect(t, p->done, p->arg); /* on failure it has answered */
    if (n) {
        n->cmd = p->cmd;
        n->len = p->len;
        n->redirects = p->redirects + 1;
        memcpy(again, p->cmd, p->len);
        send_raw(t, again, p->len);
    } else {
        free(again);
        free(p->cmd);
    }
    free(p);
    return 1;
}

/* An error on a pub/sub connection: a (S)SUBSCRIBE refused. MOVED: the slot is served
 * elsewhere, its channels follow; ASK (a slot being migrated): they try again soon. */
static void sub_error(struct rconn *c, const redisReply *rep)
{
    struct redis *r = c->r;
    struct redis_redirect to;
    if (!r->cluster || redis_redirect_parse(rep->str, rep->len, &to) != 0) {
        log_warn("redis_error", "redis: %s: %s", c->sh->url, rep->str);
        return;
    }
    if (!to.ask) {
        struct shard *sh = shard_at(r, c->sh, &to.to);
        if (sh) {
            r->slots[to.slot] = sh->index;
            count_slots(r);
        }
        route_all(r);
        schedule_remap(r);
        return;
    }
    for (size_t b = 0; b < r->chans.nbuckets; b++)
        for (struct table_node *n = r->chans.buckets[b]; n; n = n->next) {
            struct rchan *ch = (struct rchan *)n;
            if (ch->shard == c->sh->index &&
                redis_channel_slot(r->prefix, (const char *)ch->name, ch->name_len, "c") ==
                    to.slot) {
                ch->shard = -1;
                ch->subscribed = 0;
            }
        }
    if (!r->remap_soon) {
        r->remap_soon = 1;
        uv_timer_start(&r->remap, on_remap, REMAP_FAST_MS, 0);
    }
}

/* A cluster node drops sharded subscriptions when it stops serving their slot (a
 * failover, a migration): they are made again where the slot went. */
static void on_unsubscribed(struct redis *r, struct shard *sh, const char *name, size_t len)
{
    if (!r->cluster)
        return;
    if (is_control(r, name, len)) {
        if (r->control_shard == sh->index) {
            r->control_shard = -1;
            schedule_remap(r);
        }
        return;
    }
    struct rchan *c = chan_of(r, name, len);
    if (c == NULL || c->shard != sh->index)
        return; /* ours: an unsubscribe we sent */
    c->shard = -1;
    c->subscribed = 0;
    schedule_remap(r);
}

/* ---- opening ---- */

static void free_parts(struct redis *r)
{
    for (unsigned i = 0; i < r->cap; i++) {
        free(r->shards ? r->shards[i].user : NULL);
        free(r->shards ? r->shards[i].password : NULL);
    }
    for (int i = 0; i < NSCRIPTS; i++)
        if (r->script_text[i] != scripts[i])
            free((char *)r->script_text[i]);
    free(r->seed_user);
    free(r->seed_password);
    free(r->slots);
    free(r->shards);
    free(r->prefix);
    free(r);
}

/* On a cluster, the scripts publish with SPUBLISH: to the shard of their keys' slot. */
static const char *script_for(const char *text, int cluster)
{
    if (!cluster)
        return text;
    static const char from[] = "redis.call('publish',", to[] = "redis.call('spublish',";
    size_t n = 0;
    for (const char *p = strstr(text, from); p; p = strstr(p + 1, from))
        n++;
    char *out = malloc(strlen(text) + n + 1);
    if (out == NULL)
        return NULL;
    char *w = out;
    for (const char *p = text;;) {
        const char *hit = strstr(p, from);
        if (hit == NULL) {
            strcpy(w, p);
            break;
        }
        memcpy(w, p, (size_t)(hit - p));
        w += hit - p;
        memcpy(w, to, sizeof(to) - 1);
        w += sizeof(to) - 1;
        p = hit + sizeof(from) - 1;
    }
    return out;
}

struct engine *engine_redis_open(const struct config *config, const struct engine_events *events,
                                 const struct engine_host *host, char *err, size_t errlen)
{
    struct redis *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, errlen, "engine: out of memory");
        return NULL;
    }
    r->e.ops = &redis_ops;
    r->e.events = *events;
    r->e.host = *host;
    r->cluster = config->n_redis_cluster_urls > 0;
    const char *key_name = r->cluster ? "redis_cluster_urls" : "redis_urls";
    char *const *urls = r->cluster ? config->redis_cluster_urls : config->redis_urls;
    unsigned nurls = (unsigned)(r->cluster ? config->n_redis_cluster_urls : config->n_redis_urls);
    r->prefix = strdup(config->redis_prefix ? config->redis_prefix : "herald");
    r->nshards = nurls;
    r->cap = r->cluster ? CLUSTER_MAX_SHARDS : nurls;
    if (r->cap < nurls)
        r->cap = nurls;
    r->shards = calloc(r->cap ? r->cap : 1, sizeof(*r->shards));
    r->queue_tail = &r->queue;
    r->presence_ttl = config->presence_ttl ? config->presence_ttl : 60;
    int ok = r->prefix && r->shards;
    for (int i = 0; i < NSCRIPTS; i++)
        ok &= (r->script_text[i] = script_for(scripts[i], r->cluster)) != NULL;
    if (r->cluster) {
        r->slots = malloc(REDIS_CLUSTER_SLOTS * sizeof(*r->slots));
        ok &= r->slots != NULL;
        if (r->slots)
            memset(r->slots, 0xff, REDIS_CLUSTER_SLOTS * sizeof(*r->slots));
    }
    if (!ok || (r->uv = host->uv_loop(host->ud, HOME_SLOT)) == NULL) {
        snprintf(err, errlen, "engine: out of memory");
        free_parts(r);
        return NULL;
    }
    if (r->prefix && strlen(r->prefix) > 200) {
        snprintf(err, errlen, "redis_prefix: at most 200 bytes");
        free_parts(r);
        return NULL;
    }
    /* The nodes' keys and the control channel share the hash tag {nodes}. */
    r->nodes_len = (size_t)snprintf(r->nodes_key, sizeof(r->nodes_key), "%s:{nodes}", r->prefix);
    r->seen_len = (size_t)snprintf(r->seen_key, sizeof(r->seen_key), "%s:{nodes}:seen", r->prefix);
    r->control_len =
        (size_t)snprintf(r->control, sizeof(r->control), "%s:{nodes}:control", r->prefix);
    r->nodes_slot = redis_key_slot(r->nodes_key, r->nodes_len);
    r->control_shard = r->cluster ? -1 : 0;
    int any_tls = 0;
    for (unsigned i = 0; i < nurls; i++)
        any_tls |= strncmp(urls[i], "rediss://", 9) == 0;
    if (any_tls) {
        /* Peers are verified: against redis_tls_ca, else the system's trusted CAs. */
        r->tls = SSL_CTX_new(TLS_client_method());
        int tok = r->tls != NULL;
        if (tok) {
            SSL_CTX_set_verify(r->tls, SSL_VERIFY_PEER, NULL);
            SSL_CTX_set_min_proto_version(r->tls, TLS1_2_VERSION);
            tok = config->redis_tls_ca ? SSL_CTX_load_verify_locations(r->tls, config->redis_tls_ca,
                                                                       NULL) == 1
                                       : SSL_CTX_set_default_verify_paths(r->tls) == 1;
        }
        if (!tok) {
            snprintf(err, errlen, "redis_tls_ca: cannot load %s",
                     config->redis_tls_ca ? config->redis_tls_ca : "the system's CA certificates");
            SSL_CTX_free(r->tls);
            free_parts(r);
            return NULL;
        }
    }
    for (unsigned i = 0; i < nurls; i++) {
        r->shards[i].index = (uint16_t)i;
        if (parse_url(key_name, urls[i], &r->shards[i], err, errlen) != 0) {
            SSL_CTX_free(r->tls);
            free_parts(r);
            return NULL;
        }
    }
    if (r->cluster && r->shards[0].user)
        r->seed_user = strdup(r->shards[0].user);
    if (r->cluster && r->shards[0].password)
        r->seed_password = strdup(r->shards[0].password);
    rand_hex(r->uid, 8);
    if (table_init(&r->chans, 256) != 0 || table_init(&r->pres, 256) != 0 ||
        table_init(&r->limits, 256) != 0) {
        snprintf(err, errlen, "engine: out of memory");
        table_destroy(&r->chans);
        table_destroy(&r->pres);
        SSL_CTX_free(r->tls);
        free_parts(r);
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    uv_async_init(r->uv, &r->wake, on_wake);
    uv_unref((uv_handle_t *)&r->wake);
    r->wake.data = r;
    uv_timer_init(r->uv, &r->check);
    uv_unref((uv_handle_t *)&r->check);
    r->check.data = r;
    uv_timer_start(&r->check, on_check, CHECK_INTERVAL_MS, CHECK_INTERVAL_MS);
    uv_timer_init(r->uv, &r->presence);
    uv_unref((uv_handle_t *)&r->presence);
    r->presence.data = r;
    uint64_t every = (uint64_t)r->presence_ttl * 1000 / 3;
    uv_timer_start(&r->presence, on_presence_refresh, every, every);
    uv_timer_init(r->uv, &r->remap);
    uv_unref((uv_handle_t *)&r->remap);
    r->remap.data = r;
    uv_timer_init(r->uv, &r->limit_timer);
    uv_unref((uv_handle_t *)&r->limit_timer);
    r->limit_timer.data = r;
    uv_check_init(r->uv, &r->writes);
    uv_unref((uv_handle_t *)&r->writes);
    r->writes.data = r;
    uv_check_start(&r->writes, flush_writes);
    uv_idle_init(r->uv, &r->kick);
    uv_unref((uv_handle_t *)&r->kick);
    r->kick.data = r;
    for (unsigned i = 0; i < nurls; i++)
        shard_start(r, &r->shards[i]);
    return &r->e;
}
