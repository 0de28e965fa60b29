/* libFuzzer target for pg/pgoutput.c: any bytes parse or are refused, as a CopyData
 * payload (and an XLogData's payload as a pgoutput message) and directly as a pgoutput
 * message; everything parsed lies inside the input, and the JSON of every value (and of
 * the input taken as a value) is valid JSON in valid UTF-8 to herald's own parsers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/json.h"
#include "pg/pgoutput.h"
#include "ws/utf8.h"

/* Room for an Update of the most columns a tuple can announce (Int16), twice. */
#define MAX_VALS (2 * 65535)
static struct pgo_value vals[MAX_VALS];
static struct pgo_value few[3]; /* little room: a tuple over it is refused, never overrun */
static struct pgo_column cols[65535];

static const uint8_t *in_p;
static size_t in_len;

static void inside(const void *p, size_t n)
{
    const uint8_t *q = p;
    if (n == 0 && q == NULL)
        return;
    if (q == NULL || q < in_p || n > in_len || q - in_p > (ptrdiff_t)(in_len - n))
        abort();
}

static void inside_str(const char *s, size_t n)
{
    inside(s, n + 1); /* the NUL is in the message too */
    if (s[n] != '\0' || memchr(s, 0, n) != NULL)
        abort();
}

/* One type of each rule of pgo_json_value: bool, a number, json, any other. */
static const uint32_t types[] = {16, 1700, 3802, 25};

static void check_json(const struct pgo_value *v)
{
    static jsmntok_t tok[8192];
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        struct buf b = BUF_INIT;
        pgo_json_value(&b, types[t], v);
        if (pgo_value_unchanged(v)) {
            if (b.len != 0)
                abort();
        } else if (!b.oom) {
            if (!ws_utf8_valid(b.p, b.len))
                abort();
            /* Skipped only when herald's tokenizer runs out of tokens, not of validity. */
            if (b.len < sizeof(tok) / sizeof(tok[0]) &&
                json_tokenize(b.p, b.len, tok, sizeof(tok) / sizeof(tok[0])) <= 0)
                abort();
        }
        buf_free(&b);
    }
}

static void check_tuple(const struct pgo_tuple *t, const struct pgo_value *from, size_t cap)
{
    if (t->n == 0)
        return;
    if (t->vals < from || t->n > cap || (size_t)(t->vals - from) > cap - t->n)
        abort();
    for (size_t i = 0; i < t->n; i++) {
        const struct pgo_value *v = &t->vals[i];
        if (v->kind == 't' || v->kind == 'b')
            inside(v->p, v->len);
        else if ((v->kind != 'n' && v->kind != 'u') || v->p != NULL || v->len != 0)
            abort();
        check_json(v);
    }
}

static void message(const uint8_t *p, size_t len, struct pgo_value *room, size_t cap)
{
    struct pgo_msg m;
    if (pgo_parse(p, len, &m, room, cap) != 0)
        return;
    if (m.namespace)
        inside_str(m.namespace, m.namespace_len);
    if (m.name)
        inside_str(m.name, m.name_len);
    if (m.prefix)
        inside_str(m.prefix, m.prefix_len);
    if (m.content_len)
        inside(m.content, m.content_len);
    check_tuple(&m.old_tuple, room, cap);
    check_tuple(&m.new_tuple, room, cap);
    if (m.old_tuple.n && m.new_tuple.n && m.new_tuple.vals != m.old_tuple.vals + m.old_tuple.n)
        abort();
    if (m.kind == PGO_RELATION) {
        int n = pgo_relation_columns(&m, cols, sizeof(cols) / sizeof(cols[0]));
        if (n != m.ncols)
            abort();
        for (int i = 0; i < n; i++)
            inside_str(cols[i].name, cols[i].name_len);
        if (n > 0 && pgo_relation_columns(&m, cols, (size_t)n - 1) != -1)
            abort();
    }
    if (m.kind == PGO_TRUNCATE) {
        uint32_t relid;
        if ((size_t)m.nrels * 4 > len)
            abort();
        for (uint32_t i = 0; i < m.nrels; i++)
            if (pgo_truncate_relid(&m, i, &relid) != 0)
                abort();
        if (pgo_truncate_relid(&m, m.nrels, &relid) != -1)
            abort();
    }
    char text[40];
    pgo_lsn_text(m.lsn, text);
    pgo_time_text(m.commit_time, text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy, so that ASan sees any read past the end. */
    uint8_t *p = malloc(size ? size : 1);
    if (p == NULL)
        return 0;
    memcpy(p, data, size);
    in_p = p;
    in_len = size;

    struct pg_copy c;
    if (pg_copy_parse(p, size, &c) == 0) {
        if (c.kind == PG_COPY_XLOGDATA) {
            if (size < 25 || c.data != p + 25 || c.data_len != size - 25)
                abort();
            message(c.data, c.data_len, vals, MAX_VALS);
        } else if (c.kind != PG_COPY_KEEPALIVE || size != 18 || c.data != NULL) {
            abort();
        }
    }
    message(p, size, vals, MAX_VALS);
    message(p, size, few, sizeof(few) / sizeof(few[0]));
    /* The input itself as a value, so that the JSON checks see any bytes, not only those
     * that made it through a tuple. */
    if (size <= INT32_MAX) {
        struct pgo_value as_text = {'t', p, (uint32_t)size}, as_binary = {'b', p, (uint32_t)size};
        check_json(&as_text);
        check_json(&as_binary);
    }
    free(p);
    return 0;
}
