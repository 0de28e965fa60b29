/* The logical replication stream parsed by hand (see pgoutput.h): CopyData framing,
 * pgoutput messages, their values as JSON. No I/O, no allocation while parsing. */
#include "pg/pgoutput.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/json.h"

/* ---- a bounds-checked big-endian reader ---------------------------------------------- */

/* A read that does not fit sets bad and empties the reader, so that every later read
 * fails too: a parser checks bad once where it matters, never reads past end. */
struct reader {
    const uint8_t *p, *end;
    int bad;
};

static size_t left(const struct reader *r)
{
    return (size_t)(r->end - r->p);
}

static const uint8_t *take(struct reader *r, size_t n)
{
    if (n > left(r)) {
        r->bad = 1;
        r->p = r->end;
        return NULL;
    }
    const uint8_t *q = r->p;
    r->p += n;
    return q;
}

static uint8_t get8(struct reader *r)
{
    const uint8_t *q = take(r, 1);
    return q ? q[0] : 0;
}

static uint16_t get16(struct reader *r)
{
    const uint8_t *q = take(r, 2);
    return q ? (uint16_t)(q[0] << 8 | q[1]) : 0;
}

static uint32_t get32(struct reader *r)
{
    const uint8_t *q = take(r, 4);
    return q ? (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3] : 0;
}

static uint64_t get64(struct reader *r)
{
    uint64_t hi = get32(r);
    return hi << 32 | get32(r);
}

/* Two's complement without implementation-defined conversion. */
static int64_t to_i64(uint64_t v)
{
    return v <= INT64_MAX ? (int64_t)v : -(int64_t)(~v) - 1;
}

static int32_t to_i32(uint32_t v)
{
    return v <= INT32_MAX ? (int32_t)v : -(int32_t)(~v) - 1;
}

/* A String field: bytes up to a NUL inside the message (the NUL is consumed). */
static void get_str(struct reader *r, const char **s, size_t *len)
{
    const uint8_t *nul = r->bad || left(r) == 0 ? NULL : memchr(r->p, 0, left(r));
    if (nul == NULL) {
        r->bad = 1;
        r->p = r->end;
        *s = NULL;
        *len = 0;
        return;
    }
    *s = (const char *)r->p;
    *len = (size_t)(nul - r->p);
    r->p = nul + 1;
}

static void put64(uint8_t *q, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        q[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* ---- CopyData framing ---------------------------------------------------------------- */

int pg_copy_parse(const uint8_t *p, size_t len, struct pg_copy *out)
{
    *out = (struct pg_copy){0};
    if (len == 0) /* before p + len: p may be NULL then */
        return -1;
    struct reader r = {p, p + len, 0};
    uint8_t kind = get8(&r);
    if (kind == PG_COPY_XLOGDATA) {
        out->wal_start = get64(&r);
        out->wal_end = get64(&r);
        out->send_time = to_i64(get64(&r));
        if (r.bad)
            return -1;
        out->data = r.p;
        out->data_len = left(&r);
    } else if (kind == PG_COPY_KEEPALIVE) {
        out->wal_end = get64(&r);
        out->send_time = to_i64(get64(&r));
        uint8_t reply = get8(&r);
        if (r.bad || left(&r) != 0 || reply > 1)
            return -1;
        out->reply_requested = reply;
    } else {
        return -1;
    }
    out->kind = (enum pg_copy_kind)kind;
    return 0;
}

size_t pg_status_update(uint8_t out[34], uint64_t written, uint64_t flushed, uint64_t applied,
                        int64_t now_us_since_2000, int reply)
{
    out[0] = 'r';
    put64(out + 1, written);
    put64(out + 9, flushed);
    put64(out + 17, applied);
    put64(out + 25, (uint64_t)now_us_since_2000);
    out[33] = reply ? 1 : 0;
    return 34;
}

/* Seconds from the Unix epoch to 2000-01-01 00:00:00 UTC (PostgreSQL's epoch). */
#define PG_EPOCH_UNIX 946684800

int64_t pg_now_since_2000(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((int64_t)ts.tv_sec - PG_EPOCH_UNIX) * 1000000 + ts.tv_nsec / 1000;
}

/* ---- pgoutput messages --------------------------------------------------------------- */

/* TupleData: Int16 ncols, then per column Byte1 kind and, for 't'/'b', Int32 length and
 * the bytes. The values go to vals[0..cap); *n is the count. */
static int get_tuple(struct reader *r, struct pgo_value *vals, size_t cap, size_t *n)
{
    size_t ncols = get16(r);
    /* Each column takes at least its kind byte: a count beyond what is left is a lie. */
    if (r->bad || ncols > cap || ncols > left(r))
        return -1;
    for (size_t i = 0; i < ncols; i++) {
        struct pgo_value *v = &vals[i];
        v->kind = (char)get8(r);
        v->p = NULL;
        v->len = 0;
        if (v->kind == 't' || v->kind == 'b') {
            uint32_t l = get32(r);
            if (l > INT32_MAX) /* Int32 on the wire: negative is nonsense */
                return -1;
            v->p = take(r, l);
            v->len = l;
        } else if (v->kind != 'n' && v->kind != 'u') {
            return -1;
        }
        if (r->bad)
            return -1;
    }
    *n = ncols;
    return 0;
}

/* One column of a Relation: Int8 flags, String name, Int32 type OID, Int32 typmod. */
static void get_column(struct reader *r, struct pgo_column *c)
{
    uint8_t flags = get8(r);
    if (flags > 1) /* only bit 1 (part of the key) is defined */
        r->bad = 1;
    c->key = flags;
    get_str(r, &c->name, &c->name_len);
    c->type = get32(r);
    c->typmod = to_i32(get32(r));
}

static int parse_relation(struct reader *r, struct pgo_msg *m)
{
    m->relid = get32(r);
    get_str(r, &m->namespace, &m->namespace_len);
    get_str(r, &m->name, &m->name_len);
    m->identity = get8(r);
    m->ncols = get16(r);
    if (r->bad)
        return -1;
    if (m->identity != 'd' && m->identity != 'n' && m->identity != 'f' && m->identity != 'i')
        return -1;
    /* flags, an empty name and its NUL, type, typmod: at least 10 bytes a column. */
    if ((size_t)m->ncols > left(r) / 10)
        return -1;
    m->columns = r->p;
    struct pgo_column c;
    for (size_t i = 0; i < m->ncols && !r->bad; i++)
        get_column(r, &c);
    if (r->bad)
        return -1;
    m->columns_len = (size_t)(r->p - m->columns);
    return 0;
}

int pgo_parse(const uint8_t *p, size_t len, struct pgo_msg *m, struct pgo_value *vals,
              size_t vals_cap)
{
    *m = (struct pgo_msg){0};
    if (len == 0) /* before p + len: p may be NULL then */
        return -1;
    struct reader r = {p, p + len, 0};
    uint8_t kind = get8(&r);
    switch (kind) {
    case PGO_BEGIN:
        m->lsn = get64(&r);
        m->commit_time = to_i64(get64(&r));
        m->xid = get32(&r);
        break;
    case PGO_COMMIT:
        m->flags = get8(&r);
        m->lsn = get64(&r);
        m->end_lsn = get64(&r);
        m->commit_time = to_i64(get64(&r));
        break;
    case PGO_ORIGIN:
        m->lsn = get64(&r);
        get_str(&r, &m->name, &m->name_len);
        break;
    case PGO_TYPE:
        m->relid = get32(&r);
        get_str(&r, &m->namespace, &m->namespace_len);
        get_str(&r, &m->name, &m->name_len);
        break;
    case PGO_RELATION:
        if (parse_relation(&r, m) != 0)
            return -1;
        break;
    case PGO_INSERT:
        m->relid = get32(&r);
        if (get8(&r) != 'N' || get_tuple(&r, vals, vals_cap, &m->new_tuple.n) != 0)
            return -1;
        m->new_tuple.vals = vals;
        break;
    case PGO_UPDATE: {
        m->relid = get32(&r);
        uint8_t k = get8(&r);
        if (k == 'K' || k == 'O') {
            m->old_kind = (char)k;
            if (get_tuple(&r, vals, vals_cap, &m->old_tuple.n) != 0)
                return -1;
            m->old_tuple.vals = vals;
            k = get8(&r);
        }
        /* The new tuple follows the old one in vals. */
        struct pgo_value *rest = vals ? vals + m->old_tuple.n : NULL;
        if (k != 'N' || get_tuple(&r, rest, vals_cap - m->old_tuple.n, &m->new_tuple.n) != 0)
            return -1;
        m->new_tuple.vals = rest;
        break;
    }
    case PGO_DELETE: {
        m->relid = get32(&r);
        uint8_t k = get8(&r);
        if (k != 'K' && k != 'O')
            return -1;
        m->old_kind = (char)k;
        if (get_tuple(&r, vals, vals_cap, &m->old_tuple.n) != 0)
            return -1;
        m->old_tuple.vals = vals;
        break;
    }
    case PGO_TRUNCATE:
        m->nrels = get32(&r);
        m->truncate_options = get8(&r);
        if (r.bad || m->nrels > left(&r) / 4)
            return -1;
        m->relids = take(&r, (size_t)m->nrels * 4);
        break;
    case PGO_MESSAGE: {
        m->flags = get8(&r);
        m->transactional = m->flags & 1;
        m->lsn = get64(&r);
        get_str(&r, &m->prefix, &m->prefix_len);
        uint32_t n = get32(&r);
        if (n > INT32_MAX)
            return -1;
        m->content = take(&r, n);
        m->content_len = n;
        break;
    }
    default:
        return -1;
    }
    /* Every field read, nothing left over: a message is consumed exactly. */
    if (r.bad || left(&r) != 0)
        return -1;
    m->kind = (enum pgo_kind)kind;
    return 0;
}

int pgo_relation_columns(const struct pgo_msg *m, struct pgo_column *cols, size_t cap)
{
    if (m->kind != PGO_RELATION || m->ncols > cap)
        return -1;
    /* Parsed once already by pgo_parse; the reader keeps this safe all the same. */
    struct reader r = {m->columns, m->columns + m->columns_len, 0};
    for (size_t i = 0; i < m->ncols; i++)
        get_column(&r, &cols[i]);
    return r.bad ? -1 : m->ncols;
}

int pgo_truncate_relid(const struct pgo_msg *m, uint32_t i, uint32_t *relid)
{
    if (m->kind != PGO_TRUNCATE || i >= m->nrels)
        return -1;
    struct reader r = {m->relids + (size_t)i * 4, m->relids + (size_t)i * 4 + 4, 0};
    *relid = get32(&r);
    return 0;
}

/* ---- values as JSON ------------------------------------------------------------------ */

int pgo_value_unchanged(const struct pgo_value *v)
{
    return v->kind == 'u';
}

/* Length of the valid UTF-8 sequence at p[0..n) (RFC 3629: no overlongs, no surrogates,
 * at most U+10FFFF), or 0 when it is not one. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    size_t k;
    uint8_t lo = 0x80, hi = 0xbf; /* bounds of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        k = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        k = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* past U+10FFFF */
    } else {
        return 0;
    }
    if (n < k || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < k; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return k;
}

static int utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(p + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

/* A JSON string of the text, escaped by buf_append_json_str. Text that is not valid
 * UTF-8 (the server encoding should be UTF-8; rare) is first repaired in a copy: each
 * byte that does not start a valid sequence becomes U+FFFD. */
static void json_str(struct buf *b, const uint8_t *p, size_t n)
{
    if (utf8_valid(p, n)) {
        buf_append_json_str(b, p, n);
        return;
    }
    struct buf fixed = BUF_INIT;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (k == 0) {
            buf_append(&fixed, "\xef\xbf\xbd", 3);
            i++;
        } else {
            buf_append(&fixed, p + i, k);
            i += k;
        }
    }
    if (fixed.oom)
        b->oom = 1; /* the answer is lost as any failed append loses it */
    else
        buf_append_json_str(b, fixed.p, fixed.len);
    buf_free(&fixed);
}

static int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}


static int json_number(const uint8_t *p, size_t n)
{
    size_t i = 0;
    return json_scan_number(p, n, &i) && i == n;
}

static int is_hex(uint8_t c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 8259 section 7, from the opening quote at p[*i]: only the listed escapes, no raw
 * control characters (UTF-8 is checked over the whole text by the caller). */
static int scan_string(const uint8_t *p, size_t n, size_t *i)
{
    size_t j = *i + 1;
    while (j < n && p[j] != '"') {
        if (p[j] < 0x20)
            return 0;
        if (p[j++] != '\\')
            continue;
        if (j == n)
            return 0;
        uint8_t e = p[j++];
        if (e == 'u') {
            if (n - j < 4 || !is_hex(p[j]) || !is_hex(p[j + 1]) || !is_hex(p[j + 2]) ||
                !is_hex(p[j + 3]))
                return 0;
            j += 4;
        } else if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' &&
                   e != 'r' && e != 't') {
            return 0;
        }
    }
    if (j == n)
        return 0;
    *i = j + 1;
    return 1;
}

static int scan_literal(const uint8_t *p, size_t n, size_t *i, const char *lit)
{
    size_t l = strlen(lit);
    if (n - *i < l || memcmp(p + *i, lit, l) != 0)
        return 0;
    *i += l;
    return 1;
}

static void skip_ws(const uint8_t *p, size_t n, size_t *i)
{
    while (*i < n && (p[*i] == ' ' || p[*i] == '\t' || p[*i] == '\n' || p[*i] == '\r'))
        (*i)++;
}

/* Is p[0..n) exactly one JSON value (RFC 8259), surrounding whitespace allowed, nested
 * at most PGO_JSON_MAX_DEPTH? Iterative, with the open containers on a small stack:
 * linear time, no recursion for a hostile value to exhaust. */
static int json_valid(const uint8_t *p, size_t n)
{
    char open[PGO_JSON_MAX_DEPTH]; /* '{' or '[' */
    size_t depth = 0, i = 0;
    for (;;) {
        /* A value is expected at i. */
        skip_ws(p, n, &i);
        if (i == n)
            return 0;
        uint8_t c = p[i];
        if (c == '{' || c == '[') {
            if (depth == PGO_JSON_MAX_DEPTH)
                return 0;
            open[depth++] = (char)c;
            i++;
            skip_ws(p, n, &i);
            if (i < n && p[i] == (c == '{' ? '}' : ']')) {
                depth--;
                i++;
            } else if (c == '{') {
                if (i == n || p[i] != '"' || !scan_string(p, n, &i))
                    return 0;
                skip_ws(p, n, &i);
                if (i == n || p[i++] != ':')
                    return 0;
                continue;
            } else {
                continue;
            }
        } else if (c == '"') {
            if (!scan_string(p, n, &i))
                return 0;
        } else if (c == 't' || c == 'f' || c == 'n') {
            if (!scan_literal(p, n, &i, c == 't' ? "true" : c == 'f' ? "false" : "null"))
                return 0;
        } else if (!json_scan_number(p, n, &i)) {
            return 0;
        }
        /* A value ended: close containers, or go on to the next member or element. */
        for (;;) {
            skip_ws(p, n, &i);
            if (depth == 0)
                return i == n;
            if (i == n)
                return 0;
            char top = open[depth - 1];
            if (p[i] == (top == '{' ? '}' : ']')) {
                depth--;
                i++;
                continue;
            }
            if (p[i++] != ',')
                return 0;
            if (top == '{') {
                skip_ws(p, n, &i);
                if (i == n || p[i] != '"' || !scan_string(p, n, &i))
                    return 0;
                skip_ws(p, n, &i);
                if (i == n || p[i++] != ':')
                    return 0;
            }
            break;
        }
    }
}

/* Type OIDs from PostgreSQL's pg_type.dat. */
enum {
    OID_BOOL = 16,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_OID = 26,
    OID_JSON = 114,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_NUMERIC = 1700,
    OID_JSONB = 3802,
};

/* bytea's hex output: "\x" and two lowercase digits a byte, as a JSON string (the
 * backslash escaped). */
static void json_hex(struct buf *b, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (n > (SIZE_MAX - 5) / 2 || buf_reserve(b, 2 * n + 5) != 0)
        return;
    uint8_t *q = b->p + b->len;
    *q++ = '"';
    *q++ = '\\';
    *q++ = '\\';
    *q++ = 'x';
    for (size_t i = 0; i < n; i++) {
        *q++ = (uint8_t)hex[p[i] >> 4];
        *q++ = (uint8_t)hex[p[i] & 15];
    }
    *q++ = '"';
    b->len += (uint32_t)(2 * n + 5);
}

void pgo_json_value(struct buf *b, uint32_t type_oid, const struct pgo_value *v)
{
    if (v->kind == 'u')
        return;
    if (v->kind == 'b') {
        json_hex(b, v->p, v->len);
        return;
    }
    if (v->kind != 't') {
        buf_append_str(b, "null");
        return;
    }
    const uint8_t *p = v->p;
    size_t n = v->len;
    switch (type_oid) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
    case OID_OID:
    case OID_FLOAT4:
    case OID_FLOAT8:
    case OID_NUMERIC:
        if (json_number(p, n)) {
            buf_append(b, p, n);
            return;
        }
        break;
    case OID_BOOL:
        if (n == 1 && (p[0] == 't' || p[0] == 'f')) {
            buf_append_str(b, p[0] == 't' ? "true" : "false");
            return;
        }
        break;
    case OID_JSON:
    case OID_JSONB:
        if (utf8_valid(p, n) && json_valid(p, n)) {
            buf_append(b, p, n);
            return;
        }
        break;
    }
    json_str(b, p, n);
}

void pgo_lsn_text(uint64_t lsn, char out[24])
{
    snprintf(out, 24, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xffffffffu));
}

/* Floor division: the time before 2000 counts down to earlier days, not towards zero. */
static int64_t floor_div(int64_t a, int64_t d)
{
    int64_t q = a / d;
    return (a % d != 0 && (a < 0) != (d < 0)) ? q - 1 : q;
}

void pgo_time_text(int64_t us_since_2000, char out[40])
{
    if (us_since_2000 == INT64_MAX || us_since_2000 == INT64_MIN) {
        snprintf(out, 40, "%s", us_since_2000 == INT64_MAX ? "infinity" : "-infinity");
        return;
    }
    const int64_t us_day = INT64_C(86400000000);
    int64_t days = floor_div(us_since_2000, us_day);
    int64_t us = us_since_2000 % us_day; /* days * us_day itself can overflow */
    if (us < 0)
        us += us_day;
    /* Days since 1970-01-01 to a civil date: Howard Hinnant's days_from_civil inverse
     * (http://howardhinnant.github.io/date_algorithms.html#civil_from_days). */
    int64_t z = days + 10957 + 719468; /* 10957 days from 1970 to 2000 */
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t mo = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (mo <= 2);
    /* Unsigned and bounded, so that the compiler sees the text fits in 40 bytes (an int64
     * of microseconds spans less than 300,000 years either way). */
    unsigned year = (unsigned)(y < 0 ? -y : y) % 1000000u;
    unsigned sec = (unsigned)(us / 1000000) % 86400u, frac = (unsigned)(us % 1000000);
    snprintf(out, 40, "%s%04u-%02u-%02uT%02u:%02u:%02u.%06uZ", y < 0 ? "-" : "", year,
             (unsigned)mo % 100u, (unsigned)d % 100u, sec / 3600, sec / 60 % 60, sec % 60,
             frac % 1000000u);
}
