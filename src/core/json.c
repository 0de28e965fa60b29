/* JSON helpers (see json.h): a strict one-pass tokenizer into jsmn's token layout, key
 * look-up, number/bool reading and in-place unescaping. Not a JSON encoder. */
#include "core/json.h"

#include <limits.h>
#include <string.h>

static int is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int span_is(const uint8_t *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && memcmp(s, lit, l) == 0;
}

static int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

int json_scan_number(const uint8_t *p, size_t n, size_t *i)
{
    size_t j = *i;
    if (j < n && p[j] == '-')
        j++;
    if (j == n)
        return 0;
    if (p[j] == '0') {
        j++;
    } else if (p[j] >= '1' && p[j] <= '9') {
        while (j < n && is_digit(p[j]))
            j++;
    } else {
        return 0;
    }
    if (j < n && p[j] == '.') {
        j++;
        if (j == n || !is_digit(p[j]))
            return 0;
        while (j < n && is_digit(p[j]))
            j++;
    }
    if (j < n && (p[j] == 'e' || p[j] == 'E')) {
        j++;
        if (j < n && (p[j] == '+' || p[j] == '-'))
            j++;
        if (j == n || !is_digit(p[j]))
            return 0;
        while (j < n && is_digit(p[j]))
            j++;
    }
    *i = j;
    return 1;
}

static int hex_value(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Raw extent of a token in the input: strings include their quotes. */
static size_t raw_start(const jsmntok_t *t)
{
    return (size_t)t->start - (t->type == JSMN_STRING ? 1 : 0);
}

static size_t raw_end(const jsmntok_t *t)
{
    return (size_t)t->end + (t->type == JSMN_STRING ? 1 : 0);
}

/* ---- the tokenizer ----
 *
 * One pass builds jsmn's token layout (jsmntok_t with parent links: a member's value has
 * its key as parent, a key its object) and checks RFC 8259 as it goes: separators,
 * literals, numbers, escapes, raw control characters, the nesting bound. Hand-written
 * because every client command and API request goes through it: jsmn leaves all but the
 * brackets and the escapes' shape unchecked, and checking the rest after it (plus a scan
 * for the nesting bound jsmn needs to stay linear) walked the input three times, 3.5% of
 * herald's CPU when the API publishes to one subscriber a channel. tests/fuzz/fuzz_json_jsmn
 * holds it against jsmn with those checks on random input. */

/* Do the 8 bytes at s hold no '"', no backslash and no control character (< 0x20)? Exact
 * when it says yes (a false "no" only sends the caller to the byte-by-byte check): the
 * has-less and has-zero tests of "Bit Twiddling Hacks" (Sean Eron Anderson). */
static int plain8q(const uint8_t *s)
{
    uint64_t x, y, z;
    memcpy(&x, s, 8);
    y = x ^ 0x5c5c5c5c5c5c5c5cull;
    z = x ^ 0x2222222222222222ull;
    uint64_t ctl = (x - 0x2020202020202020ull) & ~x;
    uint64_t bs = (y - 0x0101010101010101ull) & ~y;
    uint64_t q = (z - 0x0101010101010101ull) & ~z;
    return ((ctl | bs | q) & 0x8080808080808080ull) == 0;
}

/* The string whose opening quote is p[i]: the index of its closing quote, or 0 when it
 * is not closed or holds a raw control character or a bad escape. */
static size_t scan_string(const uint8_t *p, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        while (len - i >= 8 && plain8q(p + i))
            i += 8;
        if (i == len)
            break;
        uint8_t c = p[i];
        if (c == '"')
            return i;
        if (c < 0x20)
            return 0;
        if (c != '\\')
            continue;
        if (++i == len)
            return 0;
        switch (p[i]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            break;
        case 'u':
            if (len - i < 5)
                return 0;
            for (int k = 1; k <= 4; k++)
                if (hex_value(p[i + k]) < 0)
                    return 0;
            i += 4;
            break;
        default:
            return 0;
        }
    }
    return 0;
}

static size_t skip_ws(const uint8_t *p, size_t len, size_t i)
{
    while (i < len && is_ws(p[i]))
        i++;
    return i;
}

/* A number or literal at p[i]: the index past it, or 0. What follows is the caller's to
 * check (a separator, a closing bracket, whitespace or the end). */
static size_t scan_primitive(const uint8_t *p, size_t len, size_t i)
{
    size_t e = i;
    if (json_scan_number(p, len, &e))
        return e;
    static const char *const lits[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(lits[k]);
        if (len - i >= n && memcmp(p + i, lits[k], n) == 0)
            return i + n;
    }
    return 0;
}

enum { AT_VALUE, AT_KEY, AFTER_VALUE };

int json_tokenize(const uint8_t *p, size_t len, jsmntok_t *t, unsigned n)
{
    if (len > INT_MAX || n == 0 || n > INT_MAX)
        return -1;
    int open[JSON_MAX_DEPTH]; /* the containers not yet closed, outermost first */
    int depth = 0, ntok = 0, parent = -1, state = AT_VALUE;
    size_t i = skip_ws(p, len, 0);
    for (;;) {
        if (state == AFTER_VALUE) {
            i = skip_ws(p, len, i);
            if (depth == 0)
                return i == len ? ntok : -1;
            jsmntok_t *c = &t[open[depth - 1]];
            if (i == len)
                return -1;
            if (p[i] == ',') {
                i = skip_ws(p, len, i + 1);
                state = c->type == JSMN_OBJECT ? AT_KEY : AT_VALUE;
                parent = open[depth - 1];
            } else if (p[i] == (c->type == JSMN_OBJECT ? '}' : ']')) {
                c->end = (int)++i;
                depth--;
            } else {
                return -1;
            }
            continue;
        }
        if (i == len || ntok == (int)n)
            return -1;
        jsmntok_t *k = &t[ntok];
        k->parent = parent;
        k->size = 0;
        if (state == AT_KEY) { /* a member of object parent: its key, ':', its value */
            if (p[i] != '"')
                return -1;
            size_t e = scan_string(p, len, i);
            if (e == 0)
                return -1;
            k->type = JSMN_STRING;
            k->start = (int)i + 1;
            k->end = (int)e;
            k->size = 1;
            t[parent].size++;
            parent = ntok++;
            i = skip_ws(p, len, e + 1);
            if (i == len || p[i] != ':')
                return -1;
            i = skip_ws(p, len, i + 1);
            state = AT_VALUE;
            continue;
        }
        if (parent >= 0 && t[parent].type == JSMN_ARRAY)
            t[parent].size++;
        uint8_t c = p[i];
        if (c == '{' || c == '[') {
            if (depth == JSON_MAX_DEPTH)
                return -1;
            k->type = c == '{' ? JSMN_OBJECT : JSMN_ARRAY;
            k->start = (int)i;
            k->end = -1;
            open[depth++] = ntok;
            parent = ntok++;
            i = skip_ws(p, len, i + 1);
            if (i < len && p[i] == (c == '{' ? '}' : ']'))
                state = AFTER_VALUE; /* empty: closed there */
            else
                state = c == '{' ? AT_KEY : AT_VALUE;
            continue;
        }
        size_t e;
        if (c == '"') {
            e = scan_string(p, len, i);
            if (e == 0)
                return -1;
            k->type = JSMN_STRING;
            k->start = (int)i + 1;
            k->end = (int)e++;
        } else {
            e = scan_primitive(p, len, i);
            if (e == 0)
                return -1;
            k->type = JSMN_PRIMITIVE;
            k->start = (int)i;
            k->end = (int)e;
        }
        ntok++;
        i = e;
        state = AFTER_VALUE;
    }
}

int json_skip(const jsmntok_t *t, int ntok, int i)
{
    /* Each token stands for itself and opens size more subtrees (a key: its value). */
    int pending = 1;
    while (pending > 0 && i < ntok) {
        pending += t[i].size - 1;
        i++;
    }
    return i;
}

int json_obj_get(const uint8_t *js, const jsmntok_t *t, int ntok, int obj, const char *key)
{
    if (obj < 0 || obj >= ntok || t[obj].type != JSMN_OBJECT)
        return -1;
    int k = obj + 1;
    for (int m = 0; m < t[obj].size && k + 1 < ntok; m++) {
        if (json_tok_eq(js, &t[k], key))
            return k + 1;
        k = json_skip(t, ntok, k);
    }
    return -1;
}

int json_tok_eq(const uint8_t *js, const jsmntok_t *tok, const char *s)
{
    if (tok->type != JSMN_STRING)
        return 0;
    size_t n = strlen(s);
    return (size_t)(tok->end - tok->start) == n && memcmp(js + tok->start, s, n) == 0;
}

static int read_digits(const uint8_t *s, size_t n, uint64_t *out)
{
    if (n == 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int json_tok_u64(const uint8_t *js, const jsmntok_t *tok, uint64_t *out)
{
    if (tok->type != JSMN_PRIMITIVE)
        return -1;
    return read_digits(js + tok->start, (size_t)(tok->end - tok->start), out);
}

int json_tok_i64(const uint8_t *js, const jsmntok_t *tok, int64_t *out)
{
    if (tok->type != JSMN_PRIMITIVE)
        return -1;
    const uint8_t *s = js + tok->start;
    size_t n = (size_t)(tok->end - tok->start);
    int neg = n > 0 && s[0] == '-';
    uint64_t v;
    if (read_digits(s + neg, n - (size_t)neg, &v) != 0)
        return -1;
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return -1;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX)
            return -1;
        *out = (int64_t)v;
    }
    return 0;
}

int json_tok_bool(const uint8_t *js, const jsmntok_t *tok, int *out)
{
    if (tok->type != JSMN_PRIMITIVE)
        return -1;
    const uint8_t *s = js + tok->start;
    size_t n = (size_t)(tok->end - tok->start);
    if (span_is(s, n, "true")) {
        *out = 1;
        return 0;
    }
    if (span_is(s, n, "false")) {
        *out = 0;
        return 0;
    }
    return -1;
}

struct json_span json_tok_span(const uint8_t *js, const jsmntok_t *tok)
{
    struct json_span s = {js + tok->start, (size_t)(tok->end - tok->start)};
    return s;
}

struct json_span json_tok_raw(const uint8_t *js, const jsmntok_t *tok)
{
    size_t b = raw_start(tok);
    struct json_span s = {js + b, raw_end(tok) - b};
    return s;
}

static int read_hex4(const uint8_t *s)
{
    int v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hex_value(s[k]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Writing never overtakes reading: every escape is at least as long as its UTF-8. */
ssize_t json_unescape(uint8_t *p, size_t len)
{
    size_t r = 0, w = 0;
    while (r < len) {
        uint8_t c = p[r];
        if (c != '\\') {
            p[w++] = c;
            r++;
            continue;
        }
        if (len - r < 2)
            return -1;
        uint8_t e = p[r + 1];
        r += 2;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            p[w++] = e;
            continue;
        case 'b':
            p[w++] = '\b';
            continue;
        case 'f':
            p[w++] = '\f';
            continue;
        case 'n':
            p[w++] = '\n';
            continue;
        case 'r':
            p[w++] = '\r';
            continue;
        case 't':
            p[w++] = '\t';
            continue;
        case 'u':
            break;
        default:
            return -1;
        }
        if (len - r < 4)
            return -1;
        int hi = read_hex4(p + r);
        if (hi < 0)
            return -1;
        r += 4;
        uint32_t cp = (uint32_t)hi;
        if (hi >= 0xDC00 && hi <= 0xDFFF)
            return -1; /* low surrogate without a high one */
        if (hi >= 0xD800 && hi <= 0xDBFF) {
            /* RFC 8259 section 7: a pair of \u escapes encodes one code point */
            if (len - r < 6 || p[r] != '\\' || p[r + 1] != 'u')
                return -1;
            int lo = read_hex4(p + r + 2);
            if (lo < 0xDC00 || lo > 0xDFFF)
                return -1;
            r += 6;
            cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
        }
        if (cp < 0x80) {
            p[w++] = (uint8_t)cp;
        } else if (cp < 0x800) {
            p[w++] = (uint8_t)(0xC0 | (cp >> 6));
            p[w++] = (uint8_t)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            p[w++] = (uint8_t)(0xE0 | (cp >> 12));
            p[w++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            p[w++] = (uint8_t)(0x80 | (cp & 0x3F));
        } else {
            p[w++] = (uint8_t)(0xF0 | (cp >> 18));
            p[w++] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
            p[w++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            p[w++] = (uint8_t)(0x80 | (cp & 0x3F));
        }
    }
    return (ssize_t)w;
}

int json_obj_string(uint8_t *js, const jsmntok_t *t, int ntok, int obj, const char *key,
                    struct json_span *out)
{
    out->p = NULL;
    out->len = 0;
    int i = json_obj_get(js, t, ntok, obj, key);
    if (i < 0)
        return 0;
    if (t[i].type != JSMN_STRING)
        return -1;
    ssize_t n = json_unescape(js + t[i].start, (size_t)(t[i].end - t[i].start));
    if (n < 0)
        return -1;
    out->p = js + t[i].start;
    out->len = (size_t)n;
    return 1;
}
