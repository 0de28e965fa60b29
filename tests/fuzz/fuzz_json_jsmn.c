/* libFuzzer target: json_tokenize (herald's one-pass tokenizer) against the reference it
 * replaced, on the same input: jsmn's tokenizer (Debian libjsmn-dev) with the checks jsmn
 * lacks run over its tokens and, before it, the nesting bound. Both must accept the same
 * inputs and, when they do, give the same tokens (type, extent, size, parent). The
 * reference is herald's former json_tokenize, kept here only as this oracle. */
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#include "core/json.h"

#include <assert.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

/* ---- the reference ---- */

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

static int ref_tokenize(const uint8_t *p, size_t len, jsmntok_t *t, unsigned n)
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

/* ---- the comparison ---- */

#define NTOK 512

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static jsmntok_t a[NTOK], b[NTOK];
    /* the first byte picks a token budget, so running out of tokens is compared too */
    unsigned n = size > 0 ? 1u + data[0] % NTOK : NTOK;
    int x = json_tokenize(data, size, a, n);
    int y = ref_tokenize(data, size, b, n);
    assert(x == y);
    for (int i = 0; i < x; i++) {
        assert(a[i].type == b[i].type);
        assert(a[i].start == b[i].start && a[i].end == b[i].end);
        assert(a[i].size == b[i].size && a[i].parent == b[i].parent);
    }
    return 0;
}
