/* Rate and count limits as data structures: a GCRA bucket (a few integer operations,
 * no allocation), keyed tables of buckets and counts for IPs, users and channels with
 * a fixed memory bound, and client addresses (CIDRs, X-Forwarded-For). No I/O, no
 * protocol: what a refusal means on the wire is the caller's (proto/, http/); the
 * node's limits from the config and their sharing through the engine are limit/node.h. */
#ifndef HERALD_LIMIT_LIMIT_H
#define HERALD_LIMIT_LIMIT_H

#include <stddef.h>
#include <stdint.h>

/* ---- GCRA (the generic cell rate algorithm, ITU-T I.371): one number per bucket, the
 * theoretical arrival time of the next request. A request at now is conforming when
 * taking it leaves the TAT no further ahead of now than the burst allows. Equivalent to
 * a token bucket of `burst` tokens refilled at `rate` per second, without the refill. */

struct limit_rate {
    uint64_t interval_us; /* 1e6 / rate; 0: no limit */
    uint64_t window_us;   /* interval * burst: how far ahead of now the TAT may run */
};

/* rate per second (0: no limit) and burst (0: the rate). */
void limit_rate_init(struct limit_rate *r, unsigned rate, unsigned burst);

/* Take one at now_us (any monotonic microsecond clock) from the bucket whose state is
 * *tat (0 initially: full). 1 taken, 0 over the limit (the state is unchanged, so a
 * refused request costs the client nothing more). */
static inline int limit_take(const struct limit_rate *r, uint64_t *tat, uint64_t now_us)
{
    uint64_t t = *tat > now_us ? *tat : now_us;
    if (t + r->interval_us - now_us > r->window_us)
        return 0;
    *tat = t + r->interval_us;
    return 1;
}

/* ---- Keyed tables: one entry per key (an IP, a user, a channel) holding a bucket and a
 * count, in a fixed array allocated once: set-associative, LIMIT_WAYS entries a set, a
 * key in either of two sets picked by its hash. An attacker rotating keys cannot grow it:
 * an entry whose count is 0 and whose bucket has refilled says nothing a missing one does
 * not, and is dropped whenever its sets are looked at; full sets give up the idle entry
 * whose bucket refills first. A new key whose two sets are full of counted entries (live
 * connections) is refused: size the table well above the keys that can be live.
 * Thread-safe: a lock per group of sets, taken per call (connects, publishes: never on
 * the delivery path). Keys are compared by length, 64-bit hash and their first
 * LIMIT_KEY_BYTES bytes. */

#define LIMIT_WAYS 8
#define LIMIT_KEY_BYTES 48

struct limit_table;

enum limit_verdict {
    LIMIT_OK = 0,
    LIMIT_OVER_RATE,  /* the key's bucket is empty */
    LIMIT_OVER_COUNT, /* the key's count is at max */
    LIMIT_FULL,       /* no room for a new key (every entry of its set is counted) */
};

/* A table of at least capacity entries (rounded up to a power of two sets). NULL out of
 * memory. */
struct limit_table *limit_table_new(size_t capacity);
void limit_table_free(struct limit_table *t);

/* Admit one request of key (borrowed for the call) at now_us: with rate (NULL or its
 * interval 0: none) take from its bucket; with max > 0 add one to its count unless it is
 * at max. Both or neither: a refused count does not drain the bucket, nor the reverse.
 * LIMIT_OK, or why not. */
enum limit_verdict limit_table_admit(struct limit_table *t, const uint8_t *key, size_t len,
                                     const struct limit_rate *rate, unsigned max, uint64_t now_us);
/* Give back what limit_table_admit took from key's bucket (a request admitted here and
 * refused by another limit after all). */
void limit_table_refund(struct limit_table *t, const uint8_t *key, size_t len,
                        const struct limit_rate *rate);
/* One counted by limit_table_admit (with max > 0) ends. */
void limit_table_release(struct limit_table *t, const uint8_t *key, size_t len);
/* The key's count now (0 when absent). */
unsigned limit_table_count(struct limit_table *t, const uint8_t *key, size_t len);
/* Entries held now, and room: for tests and /metrics. */
size_t limit_table_entries(struct limit_table *t);
size_t limit_table_capacity(const struct limit_table *t);

/* ---- Addresses ---- */

/* An IPv4 or IPv6 address, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d): one form to
 * compare and to key tables by. */
struct limit_addr {
    uint8_t b[16];
};

struct limit_cidr {
    struct limit_addr net;
    unsigned bits; /* prefix length over the 128 bits (an IPv4 /24 is 120) */
};

/* "a.b.c.d", "::1", "2001:db8::5" (p[0..len), no NUL needed). 0, or -1 not an address. */
int limit_addr_parse(const uint8_t *p, size_t len, struct limit_addr *out);
/* From a struct sockaddr (IPv4 or IPv6). 0, or -1 another family. */
int limit_addr_from_sockaddr(const void *sa, struct limit_addr *out);
/* Text form (IPv4 dotted for mapped addresses) into out (at least 46 bytes). */
void limit_addr_format(const struct limit_addr *a, char *out, size_t len);
/* "10.0.0.0/8", "fd00::/8", or an address alone (a /32 or /128). 0, or -1. */
int limit_cidr_parse(const char *s, struct limit_cidr *out);
int limit_cidr_match(const struct limit_cidr *c, size_t n, const struct limit_addr *a);

/* The client behind a proxy: value is an X-Forwarded-For header (p[0..len), the
 * comma-separated hops, the nearest last). Its rightmost address that is not one of the
 * trusted proxies in *out (each proxy appends the peer it saw, so only the entries the
 * trusted ones appended are believed; anything to the left of the first untrusted one
 * may be forged by the client). 1 found, 0 none usable (*out unchanged). */
int limit_forwarded_for(const uint8_t *p, size_t len, const struct limit_cidr *trusted,
                        size_t ntrusted, struct limit_addr *out);

#endif
