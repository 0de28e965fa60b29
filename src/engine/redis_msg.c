#include "engine/redis_msg.h"

/* Decimal digits only (no sign, no spaces, at most 19 of them, so no overflow);
 * *p moves past them. -1 when there are none. */
static int parse_u64(const char **p, const char *end, uint64_t *v)
{
    const char *q = *p;
    uint64_t x = 0;
    int n = 0;
    while (q < end && *q >= '0' && *q <= '9' && n < 19) {
        x = x * 10 + (uint64_t)(*q - '0');
        q++;
        n++;
    }
    if (n == 0 || (q < end && *q >= '0' && *q <= '9'))
        return -1;
    *p = q;
    *v = x;
    return 0;
}

int redis_msg_parse(const char *m, size_t len, struct redis_msg *out)
{
    if (len < 1)
        return -1;
    const char *end = m + len;
    *out = (struct redis_msg){0};
    if (m[0] == 'j' || m[0] == 'l') {
        out->type = m[0] == 'j' ? REDIS_MSG_JOIN : REDIS_MSG_LEAVE;
        out->info = m + 1;
        out->info_len = len - 1;
        return 0;
    }
    if (m[0] != 'p')
        return -1;
    const char *p = m + 1;
    uint64_t offset, il;
    if (parse_u64(&p, end, &offset) != 0 || p == end || *p++ != ' ')
        return -1;
    if (parse_u64(&p, end, &il) != 0 || p == end || *p++ != ' ')
        return -1;
    if (il > (uint64_t)(end - p)) /* compared with what is left: no sum to wrap */
        return -1;
    out->type = REDIS_MSG_PUBLICATION;
    out->offset = offset;
    out->info = p;
    out->info_len = (size_t)il;
    out->data = p + il;
    out->data_len = (size_t)(end - out->data);
    return 0;
}
