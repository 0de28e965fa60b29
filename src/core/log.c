/* Logging (see log.h). A line is built on the stack and written with one write(2):
 * the kernel keeps a pipe write under PIPE_BUF whole, so lines from different loops do
 * not interleave, and no lock is taken. */
#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int log_min_level = LOG_INFO;
int log_format = LOG_JSON;

static char node[64];

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Under PIPE_BUF (4096 on Linux): one atomic write. */
#define LINE_MAX_BYTES 4000
#define MSG_MAX_BYTES 1024

void log_set_node(const char *n)
{
    snprintf(node, sizeof(node), "%s", n ? n : "");
}

struct line {
    char *p;
    size_t len, cap; /* cap keeps room for the closing "}\n" */
};

static void put(struct line *l, const char *s, size_t n)
{
    if (n > l->cap - l->len)
        n = l->cap - l->len;
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* JSON syntax: all of it or nothing, so that a line cut short still parses. */
static void put_whole(struct line *l, const char *s)
{
    size_t n = strlen(s);
    if (n <= l->cap - l->len)
        put(l, s, n);
}

/* Length of the valid UTF-8 sequence at s[0..n) (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF), 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* A JSON string (RFC 8259 section 7): quotes, backslashes and control characters
 * escaped, bytes that are not UTF-8 replaced by U+FFFD, so that the line always
 * parses. Never cut inside an escape: what does not fit is left out whole. */
static void put_json_str(struct line *l, const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str);
    put(l, "\"", 1);
    size_t room = l->cap - l->len - 1; /* the closing quote (put_field made room for both) */
    size_t start = l->len;
    for (size_t i = 0; i < n;) {
        char esc[8];
        const char *out = esc;
        size_t k = 0, take = 1;
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c, k = 2;
        } else if (c == '\n') {
            memcpy(esc, "\\n", 2), k = 2;
        } else if (c == '\t') {
            memcpy(esc, "\\t", 2), k = 2;
        } else if (c == '\r') {
            memcpy(esc, "\\r", 2), k = 2;
        } else if (c < 0x20 || c == 0x7f) {
            k = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", c);
        } else if (c < 0x80) {
            esc[0] = (char)c, k = 1;
        } else if ((take = utf8_seq(s + i, n - i)) > 0) {
            out = (const char *)s + i, k = take;
        } else {
            memcpy(esc, "\\ufffd", 6), k = 6, take = 1;
        }
        if (l->len - start + k > room)
            break;
        put(l, out, k);
        i += take;
    }
    put(l, "\"", 1);
}

static void put_field(struct line *l, const char *name, const char *value)
{
    if (l->cap - l->len < strlen(name) + 6) /* ,"name":"" */
        return;
    put(l, ",\"", 2);
    puts_(l, name);
    put(l, "\":", 2);
    put_json_str(l, value);
}

const char *log_redact_url(const char *url, char *out, size_t len)
{
    const char *p = strstr(url, "://");
    const char *at = p ? strrchr(p + 3, '@') : NULL;
    if (at == NULL) {
        snprintf(out, len, "%s", url);
        return out;
    }
    p += 3;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon)
        snprintf(out, len, "%.*s***%s", (int)(colon + 1 - url), url, at);
    else
        snprintf(out, len, "%.*s***%s", (int)(p - url), url, at);
    return out;
}

/* 1234567 -> "1,234,567". */
static void group_thousands(uint64_t v, char *out, size_t len)
{
    char digits[24];
    int n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < len; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = 0;
}

size_t log_format_line(char *out, size_t cap, enum log_format format, enum log_level level,
                       const char *event, const struct log_who *who, uint64_t suppressed,
                       const char *msg, const struct timespec *now)
{
    if (cap < 64)
        return 0;
    struct tm tm;
    gmtime_r(&now->tv_sec, &tm);
    char time[80];
    snprintf(time, sizeof(time), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now->tv_nsec / 1000000);
    struct line l = {out, 0, cap - 2};
    if (format == LOG_TEXT) {
        /* Today's line, and whom it is about after it. */
        puts_(&l, time);
        put(&l, " ", 1);
        puts_(&l, level_names[level]);
        put(&l, " ", 1);
        if (suppressed) {
            puts_(&l, event);
            put(&l, ": ", 2);
        }
        puts_(&l, msg);
        char extra[64];
        if (who && who->client && who->client[0])
            puts_(&l, " client="), puts_(&l, who->client);
        if (who && who->user && who->user[0])
            puts_(&l, " user="), puts_(&l, who->user);
        if (who && who->addr && who->addr[0])
            puts_(&l, " addr="), puts_(&l, who->addr);
        if (who && who->code) {
            snprintf(extra, sizeof(extra), " code=%d", who->code);
            puts_(&l, extra);
        }
        /* One line, whatever the message holds. */
        for (size_t i = 0; i < l.len; i++)
            if (out[i] == '\n' || out[i] == '\r')
                out[i] = ' ';
        out[l.len++] = '\n';
        return l.len;
    }
    puts_(&l, "{\"time\":\"");
    puts_(&l, time);
    puts_(&l, "\",\"level\":\"");
    puts_(&l, level_names[level]);
    put(&l, "\"", 1);
    put_field(&l, "event", event);
    put_field(&l, "node", node);
    if (who && who->client && who->client[0])
        put_field(&l, "client", who->client);
    if (who && who->user)
        put_field(&l, "user", who->user);
    if (who && who->addr && who->addr[0])
        put_field(&l, "addr", who->addr);
    char num[48];
    if (who && who->code) {
        snprintf(num, sizeof(num), ",\"code\":%d", who->code);
        put_whole(&l, num);
    }
    if (suppressed) {
        snprintf(num, sizeof(num), ",\"suppressed\":%llu", (unsigned long long)suppressed);
        put_whole(&l, num);
    }
    put_field(&l, "msg", msg);
    /* The room kept by cap - 2: the object always closes. */
    out[l.len++] = '}';
    out[l.len++] = '\n';
    return l.len;
}

static void write_line(enum log_level level, const char *event, const struct log_who *who,
                       uint64_t suppressed, const char *msg, const struct timespec *ts)
{
    char line[LINE_MAX_BYTES];
    size_t n = log_format_line(line, sizeof(line), (enum log_format)log_format, level, event, who,
                               suppressed, msg, ts);
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(STDERR_FILENO, line + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* stderr is gone or full (non-blocking): the line is lost, not the loop */
        off += (size_t)w;
    }
}

void log_event(enum log_level level, const char *event, const struct log_who *who, const char *fmt,
               ...)
{
    if ((int)level < log_min_level)
        return;
    char msg[MSG_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    write_line(level, event, who, 0, msg, &ts);
}

/* ---- rate-limited events ---- */

/* A thread's counters for one event kind. Few kinds exist; a full table lets a new
 * kind through unlimited rather than lose it. */
#define RATE_SLOTS 16
struct rate {
    const char *event;
    enum log_level level;
    int64_t second; /* the wall-clock second the counts are of: the one lines show */
    uint32_t lines;
    uint64_t suppressed;
};
static _Thread_local struct rate rates[RATE_SLOTS];

static void summarise(struct rate *r, const struct timespec *ts)
{
    if (r->suppressed == 0)
        return;
    char grouped[32], msg[96];
    group_thousands(r->suppressed, grouped, sizeof(grouped));
    snprintf(msg, sizeof(msg), "%s similar line%s suppressed", grouped,
             r->suppressed == 1 ? "" : "s");
    write_line(r->level, r->event, NULL, r->suppressed, msg, ts);
    r->suppressed = 0;
}

void log_client(enum log_level level, const char *event, const struct log_who *who, const char *fmt,
                ...)
{
    if ((int)level < log_min_level)
        return;
    /* The window is the second the line's time shows (a jump of the clock only starts
     * a new window early). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec;
    struct rate *r = NULL;
    for (unsigned i = 0; i < RATE_SLOTS; i++) {
        if (rates[i].event == event || rates[i].event == NULL) {
            r = &rates[i];
            break;
        }
    }
    if (r) {
        if (r->event == NULL) {
            r->event = event;
            r->second = now;
        }
        if (r->second != now) {
            summarise(r, &ts);
            r->second = now;
            r->lines = 0;
        }
        r->level = level;
        if (r->lines >= LOG_CLIENT_RATE) {
            r->suppressed++;
            return;
        }
        r->lines++;
    }
    char msg[MSG_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    write_line(level, event, who, 0, msg, &ts);
}

void log_tick(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec;
    for (unsigned i = 0; i < RATE_SLOTS && rates[i].event; i++) {
        if (rates[i].second != now && rates[i].suppressed) {
            summarise(&rates[i], &ts);
            rates[i].second = now;
            rates[i].lines = 0;
        }
    }
}
