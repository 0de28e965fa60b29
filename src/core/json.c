/* JSON helpers over jsmn (see json.h): strict validation on top of jsmn's tokens, key
 * look-up, number/bool reading and in-place unescaping. Not a JSON encoder. */

/* jsmn is header-only: this file is the one place its implementation is compiled.
 * Same configuration as json.h, without JSMN_HEADER; json.h's second inclusion of
 * <jsmn.h> is then a no-op thanks to jsmn's include guard. */
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#include "core/json.h"

#include <limits.h>
#include <string.h>

static int is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Are js[from..to) all whitespace (RFC 8259 section 2)? from > to is a failure. */
static int ws_only(const uint8_t *js, size_t from, size_t to)
{
    if (from > to)
        return 0;
    for (size_t i = from; i < to; i++)
        if (!is_ws(js[i]))
            return 0;
    return 1;
}

/* Is js[from..to) whitespace, one punct byte, whitespace? */
static int ws_punct_ws(const uint8_t *js, size_t from, size_t to, uint8_t punct)
{
    if (from > to)
        return 0;
    while (from < to && is_ws(js[from]))
        from++;
    if (from == to || js[from] != punct)
        return 0;
    return ws_only(js, from + 1, to);
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

static int valid_number(const uint8_t *s, size_t n)
{
    size_t i = 0;
    return json_scan_number(s, n, &i) && i == n;
}

static int span_is(const uint8_t *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && memcmp(s, lit, l) == 0;
}

static int valid_primitive(const uint8_t *s, size_t n)
{
    return span_is(s, n, "true") || span_is(s, n, "false") || span_is(s, n, "null") ||
           valid_number(s, n);
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

/* Do the 8 bytes at s hold no control character (< 0x20) and no backslash? Exact when
 * it says yes (a false "no" only sends the caller to the byte-by-byte check): the
 * has-less and has-zero tests of "Bit Twiddling Hacks" (Sean Eron Anderson). */
static int plain8(const uint8_t *s)
{
    uint64_t x, y;
    memcpy(&x, s, 8);
    y = x ^ 0x5c5c5c5c5c5c5c5cull;
    uint64_t ctl = (x - 0x2020202020202020ull) & ~x;
    uint64_t bs = (y - 0x0101010101010101ull) & ~y;
    return ((ctl | bs) & 0x8080808080808080ull) == 0;
}

/* RFC 8259 section 7: only the listed escapes, no raw control characters. Most of a
 * string is plain text: it is skipped eight bytes at a time. */
static int valid_string(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        while (n - i >= 8 && plain8(s + i))
            i += 8;
        if (i == n)
            break;
        if (s[i] < 0x20)
            return 0;
        if (s[i] != '\\')
            continue;
        if (++i == n)
            return 0;
        switch (s[i]) {
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
            if (n - i < 5)
                return 0;
            for (int k = 1; k <= 4; k++)
                if (hex_value(s[i + k]) < 0)
                    return 0;
            i += 4;
            break;
        default:
            return 0;
        }
    }
    return 1;
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

static int is_key(const jsmntok_t *t, int ntok, int i)
{
    int p = t[i].parent;
    return t[i].type == JSMN_STRING && p >= 0 && p < ntok && t[p].type == JSMN_OBJECT;
}

/* The container (object or array) a token sits in, skipping the key of a member value;
 * -1 for the root. Returns -2 when the parent is neither a container nor a key (jsmn
 * builds such trees from input like `{"a":1:2}`). */
static int container_of(const jsmntok_t *t, int ntok, int i)
{
    int p = t[i].parent;
    if (p < 0)
        return -1;
    if (p >= i)
        return -2;
    if (t[p].type == JSMN_OBJECT || t[p].type == JSMN_ARRAY)
        return p;
    if (is_key(t, ntok, p))
        return t[p].parent;
    return -2;
}

/* jsmn checks brackets, string escapes' shape and (in strict mode) where primitives may
 * start, but not the separators between values, nor that each key has one value, nor
 * the primitives themselves. Walk the tokens in document order and check every byte of
 * the input: token contents, and the gaps between tokens (whitespace plus exactly the
 * separator the grammar wants there). */
static int check_tokens(const uint8_t *js, size_t len, const jsmntok_t *t, int ntok)
{
    size_t cur = 0; /* bytes before cur are verified */
    int open = -1;  /* innermost container still open at cur */
    for (int i = 0; i < ntok; i++) {
        const jsmntok_t *tok = &t[i];
        if (tok->start < 0 || tok->end < tok->start || (size_t)tok->end > len)
            return -1;
        int want = container_of(t, ntok, i);
        if (want == -2)
            return -1;
        while (open != want) {
            if (open < 0)
                return -1; /* token i is not inside the containers we are in */
            if (!ws_only(js, cur, (size_t)t[open].end - 1))
                return -1;
            cur = (size_t)t[open].end;
            open = container_of(t, ntok, open);
        }
        size_t rs = raw_start(tok);
        if (open >= 0 && raw_end(tok) > (size_t)t[open].end - 1)
            return -1; /* a child must sit inside its container's brackets */
        if (open < 0) {
            if (i != 0 || !ws_only(js, cur, rs))
                return -1;
        } else if (t[open].type == JSMN_OBJECT && tok->parent == open) {
            /* a key: a string with exactly one value */
            if (tok->type != JSMN_STRING || tok->size != 1)
                return -1;
            if (cur == (size_t)t[open].start + 1) {
                if (!ws_only(js, cur, rs))
                    return -1;
            } else if (!ws_punct_ws(js, cur, rs, ',')) {
                return -1;
            }
        } else if (t[open].type == JSMN_OBJECT) {
            if (!ws_punct_ws(js, cur, rs, ':'))
                return -1;
        } else {
            if (cur == (size_t)t[open].start + 1) {
                if (!ws_only(js, cur, rs))
                    return -1;
            } else if (!ws_punct_ws(js, cur, rs, ',')) {
                return -1;
            }
        }
        const uint8_t *s = js + tok->start;
        size_t n = (size_t)(tok->end - tok->start);
        switch (tok->type) {
        case JSMN_OBJECT:
        case JSMN_ARRAY:
            cur = (size_t)tok->start + 1;
            open = i;
            break;
        case JSMN_STRING:
            if ((!is_key(t, ntok, i) && tok->size != 0) || !valid_string(s, n))
                return -1;
            cur = raw_end(tok);
            break;
        case JSMN_PRIMITIVE:
            if (tok->size != 0 || !valid_primitive(s, n))
                return -1;
            cur = raw_end(tok);
            break;
        default:
            return -1;
        }
    }
    while (open >= 0) {
        if (!ws_only(js, cur, (size_t)t[open].end - 1))
            return -1;
        cur = (size_t)t[open].end;
        open = container_of(t, ntok, open);
        if (open == -2)
            return -1;
    }
    return ws_only(js, cur, len) ? 0 : -1;
}

/* Is the nesting of p[0..len) at most JSON_MAX_DEPTH? One pass, brackets inside
 * strings skipped (by memchr to the next quote: one an odd number of backslashes
 * escapes is inside); malformed input is left for the tokenizer to refuse. */
static int depth_ok(const uint8_t *p, size_t len)
{
    unsigned depth = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = p[i];
        if (c == '"') {
            size_t open = i;
            for (;;) {
                const uint8_t *q = memchr(p + i + 1, '"', len - i - 1);
                if (q == NULL)
                    return 1; /* not closed: not JSON */
                size_t j = (size_t)(q - p), k = j;
                while (k > open + 1 && p[k - 1] == '\\')
                    k--;
                i = j;
                if ((j - k) % 2 == 0)
                    break;
            }
        } else if (c == '[' || c == '{') {
            if (++depth > JSON_MAX_DEPTH)
                return 0;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return 1;
}

int json_tokenize(const uint8_t *p, size_t len, jsmntok_t *t, unsigned n)
{
    if (len > INT_MAX || n == 0 || n > INT_MAX)
        return -1;
    size_t b = 0;
    while (b < len && is_ws(p[b]))
        b++;
    if (b == len)
        return -1;
    if (p[b] != '{' && p[b] != '[' && p[b] != '"') {
        /* A bare top-level primitive: strict jsmn wants a delimiter after it and
         * reports such input as truncated, so take it here. */
        size_t e = b;
        while (e < len && !is_ws(p[e]))
            e++;
        if (!ws_only(p, e, len) || !valid_primitive(p + b, e - b))
            return -1;
        t[0].type = JSMN_PRIMITIVE;
        t[0].start = (int)b;
        t[0].end = (int)e;
        t[0].size = 0;
        t[0].parent = -1;
        return 1;
    }
    if (!depth_ok(p + b, len - b))
        return -1;
    jsmn_parser parser;
    jsmn_init(&parser);
    int r = jsmn_parse(&parser, (const char *)p, len, t, n);
    if (r <= 0)
        return -1;
    int ntok = (int)parser.toknext;
    if (ntok <= 0 || check_tokens(p, len, t, ntok) != 0)
        return -1;
    return ntok;
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
