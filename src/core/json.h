/* JSON helpers: strict one-pass tokenizing (RFC 8259: numbers, literals, escapes and
 * separators checked) into the token layout of jsmn (Debian libjsmn-dev: its header
 * gives the token type, its parser is the reference the fuzz target holds ours against),
 * key look-up, in-place string unescaping. Raw values (e.g. `data`) stay spans of the
 * input. */
#ifndef HERALD_CORE_JSON_H
#define HERALD_CORE_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#define JSMN_HEADER
#include <jsmn.h>

/* A borrowed slice of some buffer. */
struct json_span {
    const uint8_t *p;
    size_t len;
};

/* Deepest nesting of arrays and objects json_tokenize accepts: the containers still
 * open sit on a fixed stack of this depth (RFC 8259 section 9 lets a parser limit
 * nesting). Far deeper than any message a client sends. */
#define JSON_MAX_DEPTH 128

/* Tokenize exactly one JSON value filling p[0..len) (surrounding whitespace
 * allowed) into t[0..n). Validates numbers (RFC 8259 grammar), literals
 * (true/false/null), string escapes and the absence of raw control characters in
 * strings. Returns the token count (> 0) or -1 on invalid/truncated JSON, nesting
 * deeper than JSON_MAX_DEPTH or too many tokens. */
int json_tokenize(const uint8_t *p, size_t len, jsmntok_t *t, unsigned n);

/* A JSON number (RFC 8259 section 6: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?)
 * at p[*i], within p[0..n): 1 and *i past it, or 0 (*i unchanged). */
int json_scan_number(const uint8_t *p, size_t n, size_t *i);

/* Index of the first token after the subtree rooted at token i. */
int json_skip(const jsmntok_t *t, int ntok, int i);

/* Index of the value of key in the object at token obj (direct members only), or -1.
 * Keys are compared with their raw (escaped) bytes. */
int json_obj_get(const uint8_t *js, const jsmntok_t *t, int ntok, int obj, const char *key);

/* The string member key of the object at token obj, unescaped in place (js writable): 1
 * present (out set), 0 absent (out {NULL, 0}), -1 not a string or a bad escape. */
int json_obj_string(uint8_t *js, const jsmntok_t *t, int ntok, int obj, const char *key,
                    struct json_span *out);

/* Does string token i equal s (raw bytes)? */
int json_tok_eq(const uint8_t *js, const jsmntok_t *tok, const char *s);

/* Read an unsigned integer primitive (no sign, fraction or exponent, <= UINT64_MAX).
 * Returns 0 or -1. */
int json_tok_u64(const uint8_t *js, const jsmntok_t *tok, uint64_t *out);
/* Read a signed integer primitive. Returns 0 or -1. */
int json_tok_i64(const uint8_t *js, const jsmntok_t *tok, int64_t *out);
/* Read true/false. Returns 0 or -1. */
int json_tok_bool(const uint8_t *js, const jsmntok_t *tok, int *out);

/* The raw bytes of a token; for strings, without the quotes (still escaped). */
struct json_span json_tok_span(const uint8_t *js, const jsmntok_t *tok);
/* The raw bytes of any value including a string's quotes (for passing `data` through). */
struct json_span json_tok_raw(const uint8_t *js, const jsmntok_t *tok);

/* Unescape a string token's content in place (p points into a writable buffer;
 * \uXXXX and surrogate pairs become UTF-8; a lone surrogate is an error). Returns
 * the new length or -1. */
ssize_t json_unescape(uint8_t *p, size_t len);

#endif
