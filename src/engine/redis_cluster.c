#include "engine/redis_cluster.h"

#include <pthread.h>
#include <string.h>

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), the one Redis Cluster uses, a
 * byte at a time from a table built on first use. Hand-written because it is twenty
 * lines and runs once per publication; no Debian library exports Redis' variant. */
static uint16_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (unsigned i = 0; i < 256; i++) {
        uint16_t c = (uint16_t)(i << 8);
        for (int k = 0; k < 8; k++)
            c = (uint16_t)(c & 0x8000 ? (c << 1) ^ 0x1021 : c << 1);
        crc_table[i] = c;
    }
}

static uint16_t crc16(const char *p, size_t len, uint16_t crc)
{
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)((crc << 8) ^ crc_table[((crc >> 8) ^ (uint8_t)p[i]) & 0xff]);
    return crc;
}

unsigned redis_key_slot(const char *key, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(open + 1, '}', len - from);
        if (close && close > open + 1)
            return crc16(open + 1, (size_t)(close - open - 1), 0) & (REDIS_CLUSTER_SLOTS - 1);
    }
    return crc16(key, len, 0) & (REDIS_CLUSTER_SLOTS - 1);
}

unsigned redis_channel_slot(const char *prefix, const char *ch, size_t len, const char *suffix)
{
    pthread_once(&crc_once, crc_init);
    if (strchr(prefix, '{') == NULL && len > 0 && ch[0] != '}') {
        /* The tag is the channel's name up to its first '}' (the one we add, else). */
        const char *close = memchr(ch, '}', len);
        size_t tag = close ? (size_t)(close - ch) : len;
        return crc16(ch, tag, 0) & (REDIS_CLUSTER_SLOTS - 1);
    }
    /* The whole key decides: prefix:{channel}:suffix, hashed as Redis would. */
    uint16_t crc = 0;
    size_t pl = strlen(prefix), sl = strlen(suffix);
    const char *open = strchr(prefix, '{');
    if (open == NULL) {
        /* The tag opens after the prefix and is empty ("{}"): the whole key. */
        crc = crc16(prefix, pl, crc);
        crc = crc16(":{", 2, crc);
        crc = crc16(ch, len, crc);
        crc = crc16("}:", 2, crc);
        crc = crc16(suffix, sl, crc);
        return crc & (REDIS_CLUSTER_SLOTS - 1);
    }
    /* A '{' in the prefix: build the key and apply the rule. Names are short. */
    char k[1024];
    size_t n = pl + 2 + len + 2 + sl;
    if (n > sizeof(k))
        return crc16(prefix, pl, 0) & (REDIS_CLUSTER_SLOTS - 1);
    memcpy(k, prefix, pl);
    memcpy(k + pl, ":{", 2);
    memcpy(k + pl + 2, ch, len);
    memcpy(k + pl + 2 + len, "}:", 2);
    memcpy(k + pl + 4 + len, suffix, sl);
    return redis_key_slot(k, n);
}

/* host:port (the last ':' splits, so an IPv6 address keeps its colons). */
static int endpoint_parse(const char *s, size_t len, struct redis_endpoint *out)
{
    const char *colon = NULL;
    for (size_t i = len; i > 0; i--)
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    if (colon == NULL)
        return -1;
    size_t hl = (size_t)(colon - s);
    if (hl >= sizeof(out->host))
        return -1;
    const char *p = colon + 1, *end = s + len;
    unsigned port = 0;
    int digits = 0;
    for (; p < end && *p >= '0' && *p <= '9' && digits < 6; p++, digits++)
        port = port * 10 + (unsigned)(*p - '0');
    /* "host:port@cport" (the cluster bus port) is accepted, the rest refused. */
    if (digits == 0 || port == 0 || port > 65535 || (p < end && *p != '@'))
        return -1;
    memcpy(out->host, s, hl);
    out->host[hl] = 0;
    out->port = (uint16_t)port;
    return 0;
}

int redis_redirect_parse(const char *err, size_t len, struct redis_redirect *out)
{
    size_t at;
    if (len > 6 && memcmp(err, "MOVED ", 6) == 0) {
        out->ask = 0;
        at = 6;
    } else if (len > 4 && memcmp(err, "ASK ", 4) == 0) {
        out->ask = 1;
        at = 4;
    } else {
        return -1;
    }
    unsigned slot = 0;
    int digits = 0;
    while (at < len && err[at] >= '0' && err[at] <= '9' && digits < 6) {
        slot = slot * 10 + (unsigned)(err[at++] - '0');
        digits++;
    }
    if (digits == 0 || slot >= REDIS_CLUSTER_SLOTS || at >= len || err[at] != ' ')
        return -1;
    at++;
    out->slot = slot;
    return endpoint_parse(err + at, len - at, &out->to);
}

static int slot_number(const redisReply *x, unsigned *out)
{
    if (x == NULL || x->type != REDIS_REPLY_INTEGER || x->integer < 0 ||
        x->integer >= REDIS_CLUSTER_SLOTS)
        return -1;
    *out = (unsigned)x->integer;
    return 0;
}

int redis_slots_parse(const redisReply *reply, struct redis_slot_range *out, size_t max)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        /* {start, end, {host, port, id, ...}, replicas...} */
        if (e == NULL || e->type != REDIS_REPLY_ARRAY || e->elements < 3)
            return -1;
        struct redis_slot_range r;
        if (slot_number(e->element[0], &r.start) != 0 || slot_number(e->element[1], &r.end) != 0 ||
            r.start > r.end)
            return -1;
        const redisReply *m = e->element[2];
        if (m == NULL || m->type != REDIS_REPLY_ARRAY || m->elements < 2)
            return -1;
        const redisReply *host = m->element[0], *port = m->element[1];
        if (host == NULL || port == NULL || port->type != REDIS_REPLY_INTEGER ||
            port->integer <= 0 || port->integer > 65535)
            return -1;
        if (host->type == REDIS_REPLY_NIL) {
            r.master.host[0] = 0;
        } else if (host->type == REDIS_REPLY_STRING && host->len < sizeof(r.master.host) &&
                   memchr(host->str, 0, host->len) == NULL) {
            memcpy(r.master.host, host->str, host->len);
            r.master.host[host->len] = 0;
        } else {
            return -1;
        }
        r.master.port = (uint16_t)port->integer;
        if (n == max)
            return -1;
        out[n++] = r;
    }
    return (int)n;
}
