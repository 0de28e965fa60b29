/* Growable byte buffer (see buf.h). */
#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MAX 0x7fffffffu

static int grow(struct buf *b, size_t n, size_t max, size_t first)
{
    if (b->oom)
        return -1;
    if (b->cap - b->len >= n)
        return 0;
    if (n > max - b->len)
        return -1;
    size_t cap = b->cap ? b->cap : first;
    while (cap - b->len < n)
        cap *= 2;
    if (cap > max)
        cap = max;
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = (uint32_t)cap;
    return 0;
}

int buf_reserve(struct buf *b, size_t n)
{
    if (grow(b, n, BUF_MAX, 256) == 0)
        return 0;
    b->oom = 1;
    return -1;
}

int buf_reserve_max(struct buf *b, size_t n, size_t max)
{
    return grow(b, n, max < BUF_MAX ? max : BUF_MAX, 4096);
}

void buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0 || buf_reserve(b, n) != 0)
        return;
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void buf_append_str(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_append_char(struct buf *b, char c)
{
    if (buf_reserve(b, 1) != 0)
        return;
    b->p[b->len++] = (uint8_t)c;
}

void buf_append_u64(struct buf *b, uint64_t v)
{
    char tmp[24];
    int i = (int)sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_append(b, tmp + i, sizeof(tmp) - (size_t)i);
}

void buf_append_i64(struct buf *b, int64_t v)
{
    if (v < 0) {
        buf_append_char(b, '-');
        buf_append_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        buf_append_u64(b, (uint64_t)v);
    }
}

size_t buf_json_plain(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && p[i] >= 0x20 && p[i] != '"' && p[i] != '\\')
        i++;
    return i;
}

void buf_append_json_str(struct buf *b, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (buf_reserve(b, n + 2) != 0)
        return;
    b->p[b->len++] = '"';
    size_t start = 0;
    /* each turn: the plain run before byte i, then its escape */
    for (size_t i = buf_json_plain(p, n); i < n; i = start + buf_json_plain(p + start, n - start)) {
        uint8_t c = p[i];
        buf_append(b, p + start, i - start);
        start = i + 1;
        switch (c) {
        case '"':
            buf_append(b, "\\\"", 2);
            break;
        case '\\':
            buf_append(b, "\\\\", 2);
            break;
        case '\n':
            buf_append(b, "\\n", 2);
            break;
        case '\r':
            buf_append(b, "\\r", 2);
            break;
        case '\t':
            buf_append(b, "\\t", 2);
            break;
        default: {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_append(b, e, 6);
        }
        }
    }
    buf_append(b, p + start, n - start);
    buf_append_char(b, '"');
}

void buf_appendf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        buf_append(b, tmp, (size_t)n);
        return;
    }
    if (buf_reserve(b, (size_t)n + 1) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf((char *)b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
}

void buf_shrink(struct buf *b, size_t keep)
{
    if (b->cap > keep)
        buf_free(b);
    b->len = 0;
}

void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}
