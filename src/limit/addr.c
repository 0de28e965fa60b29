/* Client addresses for the per-IP limits (see limit.h): parsing, CIDR matching, and the
 * client behind trusted proxies. */
#include "limit/limit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void map_v4(const void *v4, struct limit_addr *out)
{
    memset(out->b, 0, 10);
    out->b[10] = out->b[11] = 0xff;
    memcpy(out->b + 12, v4, 4);
}

int limit_addr_parse(const uint8_t *p, size_t len, struct limit_addr *out)
{
    char s[INET6_ADDRSTRLEN + 1];
    while (len && (*p == ' ' || *p == '\t')) {
        p++;
        len--;
    }
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= sizeof(s))
        return -1;
    memcpy(s, p, len);
    s[len] = 0;
    uint8_t b[16];
    if (inet_pton(AF_INET, s, b) == 1) {
        map_v4(b, out);
        return 0;
    }
    if (inet_pton(AF_INET6, s, b) == 1) {
        memcpy(out->b, b, 16);
        return 0;
    }
    return -1;
}

int limit_addr_from_sockaddr(const void *sa, struct limit_addr *out)
{
    const struct sockaddr *x = sa;
    if (x->sa_family == AF_INET) {
        map_v4(&((const struct sockaddr_in *)sa)->sin_addr, out);
        return 0;
    }
    if (x->sa_family == AF_INET6) {
        memcpy(out->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 0;
    }
    return -1;
}

static int is_mapped(const struct limit_addr *a)
{
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(a->b, prefix, 12) == 0;
}

void limit_addr_format(const struct limit_addr *a, char *out, size_t len)
{
    if (is_mapped(a))
        inet_ntop(AF_INET, a->b + 12, out, (socklen_t)len);
    else
        inet_ntop(AF_INET6, a->b, out, (socklen_t)len);
}

int limit_cidr_parse(const char *s, struct limit_cidr *out)
{
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (limit_addr_parse((const uint8_t *)s, n, &out->net) != 0)
        return -1;
    int v4 = is_mapped(&out->net) && memchr(s, ':', n) == NULL;
    unsigned max = v4 ? 32 : 128;
    unsigned bits = max;
    if (slash) {
        char *end;
        if (slash[1] < '0' || slash[1] > '9')
            return -1;
        unsigned long v = strtoul(slash + 1, &end, 10);
        if (*end || v > max)
            return -1;
        bits = (unsigned)v;
    }
    out->bits = v4 ? bits + 96 : bits;
    /* The host bits are cleared: 10.1.2.3/8 means 10.0.0.0/8. */
    for (unsigned i = out->bits; i < 128; i++)
        out->net.b[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
    return 0;
}

static int cidr_has(const struct limit_cidr *c, const struct limit_addr *a)
{
    unsigned full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->net.b, a->b, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return (a->b[full] & mask) == c->net.b[full];
}

int limit_cidr_match(const struct limit_cidr *c, size_t n, const struct limit_addr *a)
{
    for (size_t i = 0; i < n; i++)
        if (cidr_has(&c[i], a))
            return 1;
    return 0;
}

int limit_forwarded_for(const uint8_t *p, size_t len, const struct limit_cidr *trusted,
                        size_t ntrusted, struct limit_addr *out)
{
    /* From the right: each hop a trusted proxy appended is believed, up to the first
     * address that is not a trusted proxy: the client as the last trusted one saw it. */
    size_t end = len;
    while (end > 0) {
        size_t start = end;
        while (start > 0 && p[start - 1] != ',')
            start--;
        struct limit_addr a;
        if (limit_addr_parse(p + start, end - start, &a) != 0)
            return 0; /* garbage a trusted proxy would not have written: not believed */
        if (!limit_cidr_match(trusted, ntrusted, &a)) {
            *out = a;
            return 1;
        }
        end = start ? start - 1 : 0;
    }
    return 0;
}
