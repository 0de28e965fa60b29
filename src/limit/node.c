/* The node's limits (see node.h): the config's rates and maxima, this node's tables,
 * and the engine's shared twin of the per-IP and per-user ones. */
#include "limit/node.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/config.h"
#include "core/log.h"
#include "core/table.h"
#include "engine/engine.h"
#include "metrics/metrics.h"

/* Entries of each table: IPs and users with live connections or a bucket still
 * refilling. At least this many (about 5 MB, touched only as it fills), and four per
 * descriptor the process may open: every live connection may hold a counted key of its
 * own (a user, an IP), and a table at most a quarter full of them all but never has both
 * sets of a new key full (limit.h). */
#define TABLE_MIN (64 * 1024)

static size_t table_capacity(void)
{
    struct rlimit rl;
    size_t n = TABLE_MIN;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (1u << 24) && 4 * (size_t)rl.rlim_cur > n)
        n = 4 * (size_t)rl.rlim_cur;
    return n;
}

struct limit_rate limit_command_rate;

static struct {
    const struct config *c;
    struct engine *engine;
    struct limit_cidr *trusted;
    size_t ntrusted;
    struct limit_rate ip_rate, user_publish, channel_publish;
    struct limit_table *ips, *users, *user_pubs, *channels;
    atomic_uint connections; /* WebSocket connections of this node (max_connections) */
    atomic_int shared_down;  /* the engine's last shared answer was "unreachable" */
} L;

static int parse_trusted(const struct config *c, struct limit_cidr *out, char *err, size_t errlen)
{
    for (size_t i = 0; i < c->n_trusted_proxies; i++) {
        struct limit_cidr x;
        if (limit_cidr_parse(c->trusted_proxies[i], &x) != 0) {
            snprintf(err, errlen, "trusted_proxies: \"%s\" is not a CIDR (10.0.0.0/8, ::1/128)",
                     c->trusted_proxies[i]);
            return -1;
        }
        if (out)
            out[i] = x;
    }
    return 0;
}

int limit_check_config(const struct config *c, char *err, size_t errlen)
{
    return parse_trusted(c, NULL, err, errlen);
}

int limit_init(const struct config *c, struct engine *e, char *err, size_t errlen)
{
    limit_shutdown();
    L.c = c;
    L.engine = e && e->ops->limit ? e : NULL;
    if (c->n_trusted_proxies) {
        L.trusted = calloc(c->n_trusted_proxies, sizeof(*L.trusted));
        if (L.trusted == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        if (parse_trusted(c, L.trusted, err, errlen) != 0) {
            limit_shutdown();
            return -1;
        }
        L.ntrusted = c->n_trusted_proxies;
    }
    limit_rate_init(&limit_command_rate, c->client_command_rate, c->client_command_burst);
    limit_rate_init(&L.ip_rate, c->connection_rate_per_ip, c->connection_burst_per_ip);
    limit_rate_init(&L.user_publish, c->user_publish_rate, c->user_publish_burst);
    limit_rate_init(&L.channel_publish, c->channel_publish_rate, c->channel_publish_burst);
    /* A table only for a limit that is on: a node without limits holds none. */
    int ok = 1;
    size_t cap = table_capacity();
    if (c->max_connections_per_ip || c->connection_rate_per_ip)
        ok &= (L.ips = limit_table_new(cap)) != NULL;
    if (c->max_connections_per_user)
        ok &= (L.users = limit_table_new(cap)) != NULL;
    if (c->user_publish_rate)
        ok &= (L.user_pubs = limit_table_new(cap)) != NULL;
    if (c->channel_publish_rate)
        ok &= (L.channels = limit_table_new(cap)) != NULL;
    if (!ok) {
        limit_shutdown();
        snprintf(err, errlen, "limits: out of memory");
        return -1;
    }
    return 0;
}

void limit_engine_gone(void)
{
    L.engine = NULL;
}

void limit_shutdown(void)
{
    free(L.trusted);
    limit_table_free(L.ips);
    limit_table_free(L.users);
    limit_table_free(L.user_pubs);
    limit_table_free(L.channels);
    memset(&L, 0, sizeof(L));
    memset(&limit_command_rate, 0, sizeof(limit_command_rate));
}

/* ---- shared through the engine ---- */

/* The key a limit has in the shared store: "<kind>:<name>" into out (SHARED_KEY_MAX
 * bytes); a longer name keeps its start and ends with the hash of the whole. */
#define SHARED_KEY_MAX 320
static size_t shared_key(char *out, const char *kind, const uint8_t *name, size_t len)
{
    int k = snprintf(out, SHARED_KEY_MAX, "%s:", kind);
    if ((size_t)k + len <= SHARED_KEY_MAX) {
        memcpy(out + k, name, len);
        return (size_t)k + len;
    }
    size_t keep = SHARED_KEY_MAX - (size_t)k - 17;
    memcpy(out + k, name, keep);
    char tail[18];
    snprintf(tail, sizeof(tail), "#%016llx", (unsigned long long)table_hash(name, len));
    memcpy(out + k + keep, tail, 17);
    return SHARED_KEY_MAX;
}

static void ip_name(const struct limit_addr *a, char out[48])
{
    limit_addr_format(a, out, 48);
}

struct asking {
    limit_cb cb;
    void *ud;
    unsigned slot;
};

/* The engine's answer. Unreachable: the local decision stands, counted and logged
 * when it starts and ends (never silently open, never waiting for Redis). */
static void on_shared(void *ud, int status, int allowed)
{
    struct asking *a = ud;
    if (status != 0) {
        metrics_add(a->slot, METRIC_LIMIT_LOCAL_FALLBACK, 1);
        if (atomic_exchange(&L.shared_down, 1) == 0)
            log_warn("limits_local",
                     "limits: the engine cannot be asked (status %d): per-IP and per-user "
                     "limits apply on this node alone",
                     status);
        allowed = 1;
    } else if (atomic_exchange(&L.shared_down, 0) == 1) {
        log_info("limits_shared", "limits: per-IP and per-user limits hold across nodes again");
    }
    limit_cb cb = a->cb;
    void *cud = a->ud;
    free(a);
    cb(cud, allowed);
}

static int ask(const char *kind, const uint8_t *name, size_t len, const struct limit_rate *rate,
               unsigned max, int delta, unsigned slot, limit_cb cb, void *ud)
{
    if (L.engine == NULL)
        return 0;
    char key[SHARED_KEY_MAX + 1];
    size_t klen = shared_key(key, kind, name, len);
    struct engine_limit l = {rate ? rate->interval_us : 0, rate ? rate->window_us : 0, max, delta};
    if (cb == NULL) {
        L.engine->ops->limit(L.engine, (const uint8_t *)key, klen, &l, NULL, NULL);
        return 0;
    }
    struct asking *a = malloc(sizeof(*a));
    if (a == NULL)
        return 0;                       /* out of memory: the local decision stands */
    *a = (struct asking){cb, ud, slot}; /* the engine answers on the asking loop */
    L.engine->ops->limit(L.engine, (const uint8_t *)key, klen, &l, on_shared, a);
    return 1;
}

/* ---- connections ---- */

void limit_client_addr(const struct limit_addr *peer, const uint8_t *xff, size_t xff_len,
                       const uint8_t *real_ip, size_t real_ip_len, struct limit_addr *out)
{
    *out = *peer;
    if (L.ntrusted == 0 || !limit_cidr_match(L.trusted, L.ntrusted, peer))
        return;
    if (xff && limit_forwarded_for(xff, xff_len, L.trusted, L.ntrusted, out))
        return;
    if (real_ip)
        limit_addr_parse(real_ip, real_ip_len, out); /* unchanged when it is no address */
}

enum limit_verdict limit_client_admit(struct limit_client *lc, uint64_t now_us, unsigned slot)
{
    const struct config *c = L.c;
    lc->node = lc->ip = lc->ip_shared = 0;
    if (c->max_connections) {
        if (atomic_fetch_add(&L.connections, 1) >= c->max_connections) {
            atomic_fetch_sub(&L.connections, 1);
            metrics_add(slot, METRIC_LIMIT_CONNECTIONS, 1);
            return LIMIT_FULL;
        }
        lc->node = 1;
    }
    if (L.ips) {
        enum limit_verdict v = limit_table_admit(L.ips, lc->addr.b, sizeof(lc->addr.b), &L.ip_rate,
                                                 c->max_connections_per_ip, now_us);
        if (v != LIMIT_OK) {
            metrics_add(
                slot, v == LIMIT_OVER_RATE ? METRIC_LIMIT_IP_RATE : METRIC_LIMIT_IP_CONNECTIONS, 1);
            limit_client_release(lc);
            return v == LIMIT_FULL ? LIMIT_OVER_COUNT : v;
        }
        lc->ip = c->max_connections_per_ip != 0;
    }
    return LIMIT_OK;
}

void limit_client_release(struct limit_client *lc)
{
    if (lc->node)
        atomic_fetch_sub(&L.connections, 1);
    if (lc->ip && L.ips)
        limit_table_release(L.ips, lc->addr.b, sizeof(lc->addr.b));
    if (lc->ip_shared) {
        char name[48];
        ip_name(&lc->addr, name);
        ask("ip", (const uint8_t *)name, strlen(name), NULL, L.c->max_connections_per_ip, -1, 0,
            NULL, NULL);
    }
    lc->node = lc->ip = lc->ip_shared = 0;
}

int limit_client_share(struct limit_client *lc, unsigned slot, limit_cb cb, void *ud)
{
    const struct config *c = L.c;
    if (L.engine == NULL || (!c->max_connections_per_ip && !c->connection_rate_per_ip))
        return 0;
    char name[48];
    ip_name(&lc->addr, name);
    int asked = ask("ip", (const uint8_t *)name, strlen(name), &L.ip_rate,
                    c->max_connections_per_ip, c->max_connections_per_ip ? 1 : 0, slot, cb, ud);
    if (asked && c->max_connections_per_ip)
        lc->ip_shared = 1; /* until the answer says it was refused */
    return asked;
}

/* Anonymous connections (user "") are no user's: the per-user limits leave them alone
 * (as Centrifugo's do); the per-IP ones hold them. */
int limit_user_admit(const char *user, unsigned slot)
{
    if (L.users == NULL || user[0] == 0)
        return 1;
    if (limit_table_admit(L.users, (const uint8_t *)user, strlen(user), NULL,
                          L.c->max_connections_per_user, 0) == LIMIT_OK)
        return 1;
    metrics_add(slot, METRIC_LIMIT_USER_CONNECTIONS, 1);
    return 0;
}

void limit_user_release(const char *user, int local, int shared)
{
    if (local && L.users && user[0])
        limit_table_release(L.users, (const uint8_t *)user, strlen(user));
    if (shared)
        ask("user", (const uint8_t *)user, strlen(user), NULL, L.c->max_connections_per_user, -1, 0,
            NULL, NULL);
}

int limit_user_share(const char *user, unsigned slot, limit_cb cb, void *ud)
{
    if (L.users == NULL || user[0] == 0)
        return 0;
    return ask("user", (const uint8_t *)user, strlen(user), NULL, L.c->max_connections_per_user, 1,
               slot, cb, ud);
}

/* ---- publishes ---- */

int limit_publish_admit(const char *user, const uint8_t *ch, size_t ch_len, uint64_t now_us,
                        unsigned slot)
{
    if (L.user_pubs && user[0] &&
        limit_table_admit(L.user_pubs, (const uint8_t *)user, strlen(user), &L.user_publish, 0,
                          now_us) != LIMIT_OK) {
        metrics_add(slot, METRIC_LIMIT_USER_PUBLISH, 1);
        return 0;
    }
    if (L.channels &&
        limit_table_admit(L.channels, ch, ch_len, &L.channel_publish, 0, now_us) != LIMIT_OK) {
        if (L.user_pubs && user[0]) /* refused after all: the user's is not spent */
            limit_table_refund(L.user_pubs, (const uint8_t *)user, strlen(user), &L.user_publish);
        metrics_add(slot, METRIC_LIMIT_CHANNEL_PUBLISH, 1);
        return 0;
    }
    return 1;
}

void limit_publish_refund(const char *user, const uint8_t *ch, size_t ch_len)
{
    if (L.user_pubs && user[0])
        limit_table_refund(L.user_pubs, (const uint8_t *)user, strlen(user), &L.user_publish);
    if (L.channels)
        limit_table_refund(L.channels, ch, ch_len, &L.channel_publish);
}

int limit_publish_share(const char *user, unsigned slot, limit_cb cb, void *ud)
{
    if (L.user_pubs == NULL || user[0] == 0)
        return 0;
    return ask("pub", (const uint8_t *)user, strlen(user), &L.user_publish, 0, 0, slot, cb, ud);
}
