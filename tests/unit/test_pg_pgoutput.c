/* Unit tests for pg/pgoutput: the replication CopyData framing, every pgoutput message
 * kind (real bytes from PostgreSQL 15 and hand-built ones), what is refused, and the
 * JSON form of values. */
#include "pg/pgoutput.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/json.h"
#include "test.h"

/* ---- building messages --------------------------------------------------------------- */

/* Bytes from hex (spaces between fields ignored), in an exact-size allocation so that
 * ASan sees a read past the end. */
struct bytes {
    uint8_t *p;
    size_t len;
};

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c - 'A' + 10;
}

static struct bytes from_hex(const char *h)
{
    char digits[4096];
    size_t n = 0;
    for (; *h && n < sizeof(digits); h++)
        if (*h != ' ')
            digits[n++] = *h;
    struct bytes b = {malloc(n / 2 ? n / 2 : 1), n / 2};
    for (size_t i = 0; i < b.len; i++)
        b.p[i] = (uint8_t)(hexval(digits[2 * i]) << 4 | hexval(digits[2 * i + 1]));
    return b;
}

static struct bytes copy_of(const uint8_t *p, size_t len)
{
    struct bytes b = {malloc(len ? len : 1), len};
    memcpy(b.p, p, len);
    return b;
}

/* A message built field by field, big-endian as on the wire. */
struct wire {
    uint8_t b[1024];
    size_t n;
};

static void w8(struct wire *w, uint8_t v)
{
    w->b[w->n++] = v;
}

static void w16(struct wire *w, uint16_t v)
{
    w8(w, (uint8_t)(v >> 8));
    w8(w, (uint8_t)v);
}

static void w32(struct wire *w, uint32_t v)
{
    w16(w, (uint16_t)(v >> 16));
    w16(w, (uint16_t)v);
}

static void w64(struct wire *w, uint64_t v)
{
    w32(w, (uint32_t)(v >> 32));
    w32(w, (uint32_t)v);
}

static void wstr(struct wire *w, const char *s) /* a String: with its NUL */
{
    size_t l = strlen(s) + 1;
    memcpy(w->b + w->n, s, l);
    w->n += l;
}

static void wtext(struct wire *w, char kind, const char *s) /* a 't' or 'b' column */
{
    w8(w, (uint8_t)kind);
    w32(w, (uint32_t)strlen(s));
    memcpy(w->b + w->n, s, strlen(s));
    w->n += strlen(s);
}

static struct bytes of_wire(const struct wire *w)
{
    return copy_of(w->b, w->n);
}

/* Real pgoutput messages (proto_version 1, messages true) from PostgreSQL 15.
 * CREATE TABLE t (id int8 primary key, name text, price numeric, ok bool, doc jsonb,
 * raw bytea, big text, f float8); CREATE TABLE u (a int4, b text) REPLICA IDENTITY FULL;
 * CREATE TYPE mood AS ENUM (...); CREATE TABLE e (id int4, m mood). */
static const char *pg_begin = "420000000001531958000304922e39b879000002d9";
static const char *pg_commit = "430000000000015319580000000001531988000304922e39b879";
static const char *pg_origin = "4f0000000000abcdef73726300";
static const char *pg_type = "59000040187075626c6963006d6f6f6400";
static const char *pg_relation_t =
    "52000040007075626c69630074006400080169640000000014ffffffff006e616d650000000019ffffffff"
    "00707269636500000006a4ffffffff006f6b0000000010ffffffff00646f630000000edaffffffff007261"
    "770000000011ffffffff006269670000000019ffffffff006600000002bdffffffff";
static const char *pg_relation_u =
    "52000040077075626c696300750066000201610000000017ffffffff01620000000019ffffffff";
static const char *pg_insert_u = "49000040074e0002740000000131740000000178";
static const char *pg_insert_e = "490000401d4e000274000000013174000000056861707079";
/* UPDATE t SET name = 'b': no old tuple, the TOASTed column `big` unchanged ('u'). */
static const char *pg_update_t =
    "55000040004e0008740000000131740000000162740000000531322e3530740000000174740000001a7b22"
    "6b223a205b312c20322c207b2278223a206e756c6c7d5d7d74000000085c78303066663130757400000003"
    "4e614e";
/* UPDATE t SET id = 2: the old key ('K', the other columns null), then the new row. */
static const char *pg_update_t_key =
    "55000040004b00087400000001316e6e6e6e6e6e6e4e0008740000000132740000000162740000000531"
    "322e3530740000000174740000001a7b226b223a205b312c20322c207b2278223a206e756c6c7d5d7d74"
    "000000085c783030666631307574000000034e614e";
/* UPDATE u SET b = 'y' with REPLICA IDENTITY FULL: the whole old row ('O'). */
static const char *pg_update_u_old =
    "55000040074f00027400000001317400000001784e0002740000000131740000000179";
static const char *pg_delete_u_old = "44000040074f0002740000000131740000000179";
static const char *pg_delete_t_key = "44000040004b00087400000001326e6e6e6e6e6e6e";
static const char *pg_truncate = "5400000002000000400000004007";
static const char *pg_message_tx = "4d010000000001531f88686572616c64000000000568656c6c6f";
static const char *pg_message_nontx = "4d000000000001531ff06e7400000000020001";

static const char **pg_all[] = {
    &pg_begin,        &pg_commit,       &pg_origin,       &pg_type,
    &pg_relation_t,   &pg_relation_u,   &pg_insert_u,     &pg_insert_e,
    &pg_update_t,     &pg_update_t_key, &pg_update_u_old, &pg_delete_u_old,
    &pg_delete_t_key, &pg_truncate,     &pg_message_tx,   &pg_message_nontx,
};

/* CopyData payloads captured from pg_recvlogical's connection: an XLogData carrying the
 * Begin above, and a keepalive. */
static const char *pg_xlogdata =
    "7700000000015318000000000001531800000304922f3a12d3420000000001531958000304922e39b8790000"
    "02d9";
static const char *pg_keepalive = "6b000000000152ed60000304922f3a120300";

#define NVALS 16

static int parse_hex(const char *h, struct bytes *b, struct pgo_msg *m, struct pgo_value *vals)
{
    *b = from_hex(h);
    return pgo_parse(b->p, b->len, m, vals, NVALS);
}

static int value_is(const struct pgo_value *v, char kind, const char *text)
{
    if (v->kind != kind)
        return 0;
    if (text == NULL)
        return v->p == NULL && v->len == 0;
    return v->len == strlen(text) && memcmp(v->p, text, v->len) == 0;
}

/* ---- framing ------------------------------------------------------------------------- */

TEST(test_pg_copy_xlogdata_from_postgresql)
{
    struct bytes b = from_hex(pg_xlogdata);
    struct pg_copy c;
    CHECK_EQ(pg_copy_parse(b.p, b.len, &c), 0);
    CHECK_EQ(c.kind, PG_COPY_XLOGDATA);
    CHECK_EQ(c.wal_start, 0x1531800);
    CHECK_EQ(c.wal_end, 0x1531800);
    CHECK_EQ(c.send_time, 0x000304922f3a12d3);
    CHECK(c.data == b.p + 25);
    CHECK_EQ(c.data_len, 21);
    struct pgo_msg m;
    CHECK_EQ(pgo_parse(c.data, c.data_len, &m, NULL, 0), 0);
    CHECK_EQ(m.kind, PGO_BEGIN);
    /* The header alone is an empty payload, not an error of the framing. */
    CHECK_EQ(pg_copy_parse(b.p, 25, &c), 0);
    CHECK_EQ(c.data_len, 0);
    for (size_t n = 0; n < 25; n++) {
        struct bytes t = copy_of(b.p, n);
        CHECK_EQ(pg_copy_parse(t.p, n, &c), -1);
        free(t.p);
    }
    free(b.p);
}

TEST(test_pg_copy_keepalive)
{
    struct bytes b = from_hex(pg_keepalive);
    struct pg_copy c;
    CHECK_EQ(pg_copy_parse(b.p, b.len, &c), 0);
    CHECK_EQ(c.kind, PG_COPY_KEEPALIVE);
    CHECK_EQ(c.wal_end, 0x152ed60);
    CHECK_EQ(c.send_time, 0x000304922f3a1203);
    CHECK_EQ(c.reply_requested, 0);
    CHECK(c.data == NULL);
    b.p[17] = 1;
    CHECK_EQ(pg_copy_parse(b.p, b.len, &c), 0);
    CHECK_EQ(c.reply_requested, 1);
    b.p[17] = 2; /* a boolean */
    CHECK_EQ(pg_copy_parse(b.p, b.len, &c), -1);
    b.p[17] = 0;
    for (size_t n = 0; n < b.len; n++) {
        struct bytes t = copy_of(b.p, n);
        CHECK_EQ(pg_copy_parse(t.p, n, &c), -1);
        free(t.p);
    }
    uint8_t longer[19];
    memcpy(longer, b.p, 18);
    longer[18] = 0;
    CHECK_EQ(pg_copy_parse(longer, sizeof(longer), &c), -1);
    free(b.p);
}

TEST(test_pg_copy_refuses_other_kinds)
{
    struct pg_copy c;
    static const uint8_t other[][1] = {{'d'}, {'r'}, {'h'}, {0}, {'W'}};
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
        CHECK_EQ(pg_copy_parse(other[i], 1, &c), -1);
    CHECK_EQ(pg_copy_parse(NULL, 0, &c), -1);
}

TEST(test_pg_status_update_bytes)
{
    uint8_t out[34];
    CHECK_EQ(
        pg_status_update(out, 0x0102030405060708, 0x1112131415161718, 0x2122232425262728, -2, 1),
        34);
    static const uint8_t want[34] = {
        'r',  0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x11, 0x12, 0x13,
        0x14, 0x15, 0x16, 0x17, 0x18, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27,
        0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 1,
    };
    CHECK(memcmp(out, want, 34) == 0);
    pg_status_update(out, 0, 0, 0, 0, 7);
    CHECK_EQ(out[33], 1);
    pg_status_update(out, 0, 0, 0, 0, 0);
    CHECK_EQ(out[33], 0);
}

TEST(test_pg_now_since_2000_is_the_protocol_clock)
{
    int64_t now = pg_now_since_2000();
    int64_t unix_s = (int64_t)time(NULL);
    int64_t s = now / 1000000 + 946684800;
    CHECK(s >= unix_s - 2 && s <= unix_s + 2);
}

/* ---- messages ------------------------------------------------------------------------ */

TEST(test_pgoutput_begin_commit_from_postgresql)
{
    struct bytes b;
    struct pgo_msg m;
    struct pgo_value vals[NVALS];
    char t[40], l[24];
    CHECK_EQ(parse_hex(pg_begin, &b, &m, vals), 0);
    CHECK_EQ(m.kind, PGO_BEGIN);
    CHECK_EQ(m.lsn, 0x1531958);
    CHECK_EQ(m.commit_time, 0x000304922e39b879);
    CHECK_EQ(m.xid, 729);
    pgo_lsn_text(m.lsn, l);
    CHECK(strcmp(l, "0/1531958") == 0);
    pgo_time_text(m.commit_time, t);
    CHECK(strcmp(t, "2026-12-01T14:33:37.403001Z") == 0);
    free(b.p);

    CHECK_EQ(parse_hex(pg_commit, &b, &m, vals), 0);
    CHECK_EQ(m.kind, PGO_COMMIT);
    CHECK_EQ(m.flags, 0);
    CHECK_EQ(m.lsn, 0x1531958);
    CHECK_EQ(m.end_lsn, 0x1531988);
    CHECK_EQ(m.commit_time, 0x000304922e39b879);
    free(b.p);

    /* The extremes of each field: unsigned LSN and xid, a commit time before 2000. */
    struct wire w = {{0}, 0};
    w8(&w, 'B');
    w64(&w, UINT64_MAX);
    w64(&w, (uint64_t)-1);
    w32(&w, UINT32_MAX);
    b = of_wire(&w);
    CHECK_EQ(pgo_parse(b.p, b.len, &m, NULL, 0), 0);
    CHECK(m.lsn == UINT64_MAX);
    CHECK_EQ(m.commit_time, -1);
    CHECK(m.xid == UINT32_MAX);
    free(b.p);
}

TEST(test_pgoutput_origin_and_type_from_postgresql)
{
    struct bytes b;
    struct pgo_msg m;
    struct pgo_value vals[NVALS];
    CHECK_EQ(parse_hex(pg_origin, &b, &m, vals), 0);
    CHECK_EQ(m.kind, PGO_ORIGIN);
    CHECK_EQ(m.lsn, 0xabcdef);
    CHECK_MEM(m.name, m.name_len, "src");
    CHECK(m.name[m.name_len] == '\0');
    free(b.p);

    CHECK_EQ(parse_hex(pg_type, &b, &m, vals), 0);
    CHECK_EQ(m.kind, PGO_TYPE);
    CHECK_EQ(m.relid, 16408);
    CHECK_MEM(m.namespace, m.namespace_len, "public");
    CHECK_MEM(m.name, m.name_len, "mood");
    free(b.p);
}

TEST(test_pgoutput_relation_from_postgresql)
{
    struct bytes b;
    struct pgo_msg m;
    struct pgo_value vals[NVALS];
    struct pgo_column cols[8];
    CHECK_EQ(parse_hex(pg_relation_t, &b, &m, vals), 0);
    CHECK_EQ(m.kind, PGO_RELATION);
    CHECK_EQ(m.relid, 16384);
    CHECK_MEM(m.namespace, m.namespace_len, "public");
    CHECK_MEM(m.name, m.name_len, "t");
    CHECK_EQ(m.identity, 'd');
    CHECK_EQ(m.ncols, 8);
    CHECK_EQ(pgo_relation_columns(&m, cols, 8), 8);
    static const struct {
        const char *name;
        uint32_t type;
        uint8_t key;
    } want[8] = {{"id", 20, 1},    {"name", 25, 0}, {"price", 1700, 0}, {"ok", 16, 0},
                 {"doc", 3802, 0}, {"raw", 17, 0},  {"big", 25, 0},     {"f", 701, 0}};
    for (int i = 0; i < 8; i++) {
        CHECK_MEM(cols[i].name, cols[i].name_len, want[i].name);
        CHECK_EQ(cols[i].type, want[i].type);
        CHECK_EQ(cols[i].key, want[i].key);
        CHECK_EQ(cols[i].typmod, -1);
        CHECK(cols[i].name >= (const char *)b.p &&
              cols[i].name + cols[i].name_len < (const char *)b.p + b.len);
    }
    CHECK_EQ(pgo_relation_columns(&m, cols, 7), -1); /* room for fewer than ncols */
    free(b.p);

    CHECK_EQ(parse_hex(pg_relation_u, &b, &m, vals), 0);
    CHECK_EQ(m.relid, 16391);
    CHECK_EQ(m.identity, 'f');
    CHECK_EQ(pgo_relation_columns(&m, cols, 8), 2);
    CHECK_MEM(cols[0].name, cols[0].name_len, "a");
    CHECK_EQ(cols[0].type, 23);
    CHECK_EQ(cols[0].key, 1); /* REPLICA IDENTITY FULL: every column is the key */
    CHECK_MEM(cols[1].name, cols[1].name_len, "b");
    CHECK_EQ(cols[1].key, 1);
    free(b.p);

    /* Not a relation. */
    CHECK_EQ(parse_hex(pg_begin, &b, &m, vals), 0);
    CHECK_EQ(pgo_relation_columns(&m, cols, 8), -1);
    free(b.p);
}

TEST(test_pgoutput_relation_typmod_and_no_columns)
{
    struct wire w = {{0}, 0};
    w8(&w, 'R');
    w32(&w, 77);
    wstr(&w, "");
    wstr(&w, "v");
    w8(&w, 'n');
    w16(&w, 1);
    w8(&w, 0);
    wstr(&w, "c");
    w32(&w, 1043); /* varchar(10): typmod 14 */
    w32(&w, 14);
    struct bytes b = of_wire(&w);
    struct pgo_msg m;
    struct pgo_column col;
    CHECK_EQ(pgo_parse(b.p, b.len, &m, NULL, 0), 0);
    CHECK_EQ(m.namespace_len, 0); /* pg_catalog is sent as "" */
    CHECK_EQ(m.identity, 'n');
    CHECK_EQ(pgo_relation_columns(&m, &col, 1), 1);
    CHECK_EQ(col.typmod, 14);
    CHECK_EQ(col.type, 1043);
    free(b.p);

    w.n = 0;
    w8(&w, 'R');
    w32(&w, 78);
    wstr(&w, "s");
    wstr(&w, "empty");
    w8(&w, 'i');
    w16(&w, 0);
    b = of_wire(&w);
    CHECK_EQ(pgo_parse(b.p, b.len, &m, NULL, 0), 0);
    CHECK_EQ(m.ncols, 0);
    CHECK_EQ(pgo_relation_columns(&m, NULL, 0), 0);
    free(b.p);
}

TEST(test_pgoutput_insert_from_postgresql)
{
    struct bytes b;
    struct pgo_msg m;
    struct pgo_value vals[NVALS];
    CHECK_EQ(parse_hex(pg_insert_u, &b, &m, vals), 0);
    CHECK_EQ(m.kind, PGO_INSERT);
    CHECK_EQ(m.relid, 16391);
    CHECK_EQ(m.old_kind, 0);
    CHECK_EQ(m.old_tuple.n, 0);
    CHECK_EQ(m.new_tuple.n, 2);
    CHECK(m.new_tuple.vals == vals);
    CHECK(value_is(&vals[0], 't', "1"));
    CHECK(value_is(&vals[1], 't', "x"));
    free(b.p);

    CHECK_EQ(parse_hex(pg_insert_e, &b, &m, vals), 0);
    CHECK_EQ(m.relid, 16413);
    CHECK(value_is(&vals[1], 't', "happy"));
    free(b.p);
}

TEST(test_pgoutput_update_without_old_tuple_and_unchanged_toast)
{
    struct bytes b;
    struct pgo_msg m;
    struct pgo_value vals[NVALS];
    CHECK_EQ(parse_hex(pg_update_t, &b, &m, vals), 0);
    CHECK_EQ(m.kind, PGO_UPDATE);
    CHECK_EQ(m.relid, 16384);
    CHECK_EQ(m.old_kind, 0);
    CHECK_EQ(m.old_tuple.n, 0);
    CHECK(m.old_tuple.vals == NULL);
    CHECK_EQ(m.new_tuple.n, 8);
    CHECK(m.new_tuple.vals == vals);
    const struct pgo_value *v = m.new_tuple.vals;
    CHECK(value_is(&v[0], 't', "1"));
    CHECK(value_is(&v[1], 't', "b"));
    CHECK(value_is(&v[2], 't', "12.50"));
    CHECK(value_is(&v[3], 't', "t"));
    CHECK(value_is(&v[4], 't', "{\"k\": [1, 2, {\"x\": null}]}"));
    CHECK(value_is(&v[5], 't', "\\x00ff10"));
    CHECK(value_is(&v[6], 'u', NULL));
    CHECK(pgo_value_unchanged(&v[6]));
    CHECK(!pgo_value_unchanged(&v[5]));
    CHECK(value_is(&v[7], 't', "NaN"));
    /* Exactly 8 values of room is enough, 7 is not. */
    CHECK_EQ(pgo_parse(b.p, b.len, &m, vals, 8), 0);
    CHECK_EQ(pgo_parse(b.p, b.len, &m, vals, 7), -1);
    free(b.p);
}

TEST(test_pgoutput_update_with_old_key_and_old_row)
{
    struct bytes b;
    struct pgo_msg m;
    struct pgo_value vals[NVALS];
    CHECK_EQ(parse_hex(pg_update_t_key, &b, &m, vals), 0);
    CHECK_EQ(m.kind, PGO_UPDATE);
    CHECK_EQ(m.old_kind, 'K');
    CHECK_EQ(m.old_tuple.n, 8);
    CHECK(m.old_tuple.vals == vals);
    CHECK(value_is(&m.old_tuple.vals[0], 't', "1"));
    for (int i = 1; i < 8; i++)
        CHECK(value_is(&m.old_tuple.vals[i], 'n', NULL));
    /* The new tuple follows the old one in vals. */
    CHECK_EQ(m.new_tuple.n, 8);
    CHECK(m.new_tuple.vals == vals + 8);
    CHECK(value_is(&m.new_tuple.vals[0], 't', "2"));
    CHECK(value_is(&m.new_tuple.vals[6], 'u', NULL));
    CHECK_EQ(pgo_parse(b.p, b.len, &m, vals, 16), 0);
    CHECK_EQ(pgo_parse(b.p, b.len, &m, vals, 15), -1); /* both tuples need room */
    CHECK_EQ(pgo_parse(b.p, b.len, &m, vals, 8), -1);
    free(b.p);

    CHECK_EQ(parse_hex(pg_update_u_old, &b, &m, vals), 0);
    CHECK_EQ(m.old_kind, 'O');
    CHECK_EQ(m.relid, 16391);
    CHECK_EQ(m.old_tuple.n, 2);
    CHECK(value_is(&m.old_tuple.vals[1], 't', "x"));
    CHECK_EQ(m.new_tuple.n, 2);
    CHECK(m.new_tuple.vals == vals + 2);
    CHECK(value_is(&m.new_tuple.vals[1], 't', "y"));
    CHECK_EQ(pgo_parse(b.p, b.len, &m, vals, 4), 0);
    CHECK_EQ(pgo_parse(b.p, b.len, &m, vals, 3), -1);
    free(b.p);
}

TEST(test_pgoutput_delete_with_old_row_and_old_key)
{
    struct bytes b;
    struct pgo_msg m;
    struct pgo_value vals[NVALS];
    CHECK_EQ(parse_hex(pg_delete_u_old, &b, &m, vals), 0);
    CHECK_EQ(m.kind, PGO_DELETE);
    CHECK_EQ(m.relid, 16391);
    CHECK_EQ(m.old_kind, 'O');
    CHECK_EQ(m.old_tuple.n, 2);
    CHECK(value_is(&m.old_tuple.vals[0], 't', "1"));
    CHECK(value_is(&m.old_tuple.vals[1], 't', "y"));
    CHECK_EQ(m.new_tuple.n, 0);
    free(b.p);

    CHECK_EQ(parse_hex(pg_delete_t_key, &b, &m, vals), 0);
    CHECK_EQ(m.old_kind, 'K');
    CHECK_EQ(m.old_tuple.n, 8);
    CHECK(value_is(&m.old_tuple.vals[0], 't', "2"));
    CHECK(value_is(&m.old_tuple.vals[7], 'n', NULL));
    free(b.p);

    /* A Delete always has its old tuple: 'N' there is malformed. */
    b = from_hex("44000040074e0002740000000131740000000179");
    CHECK_EQ(pgo_parse(b.p, b.len, &m, vals, NVALS), -1);
    free(b.p);
}

TEST(test_pgoutput_binary_values)
{
    struct wire w = {{0}, 0};
    w8(&w, 'I');
    w32(&w, 5);
    w8(&w, 'N');
    w16(&w, 4);
    wtext(&w, 'b', "\x01\x02");
    w8(&w, 'n');
    wtext(&w, 't', "");
    wtext(&w, 'b', "");
    struct bytes b = of_wire(&w);
    struct pgo_msg m;
    struct pgo_value vals[4];
    CHECK_EQ(pgo_parse(b.p, b.len, &m, vals, 4), 0);
    CHECK(value_is(&vals[0], 'b', "\x01\x02"));
    CHECK(vals[0].p == b.p + 13);
    CHECK(value_is(&vals[1], 'n', NULL));
    CHECK_EQ(vals[2].kind, 't');
    CHECK_EQ(vals[2].len, 0);
    CHECK_EQ(vals[3].kind, 'b');
    CHECK_EQ(vals[3].len, 0);
    free(b.p);
}

TEST(test_pgoutput_truncate)
{
    struct bytes b;
    struct pgo_msg m;
    struct pgo_value vals[NVALS];
    uint32_t relid = 0;
    CHECK_EQ(parse_hex(pg_truncate, &b, &m, vals), 0);
    CHECK_EQ(m.kind, PGO_TRUNCATE);
    CHECK_EQ(m.nrels, 2);
    CHECK_EQ(m.truncate_options, 0);
    CHECK_EQ(pgo_truncate_relid(&m, 0, &relid), 0);
    CHECK_EQ(relid, 16384);
    CHECK_EQ(pgo_truncate_relid(&m, 1, &relid), 0);
    CHECK_EQ(relid, 16391);
    CHECK_EQ(pgo_truncate_relid(&m, 2, &relid), -1);
    CHECK_EQ(pgo_truncate_relid(&m, UINT32_MAX, &relid), -1);
    free(b.p);

    struct wire w = {{0}, 0};
    w8(&w, 'T');
    w32(&w, 4);
    w8(&w, PGO_TRUNCATE_CASCADE | PGO_TRUNCATE_RESTART_IDENTITY);
    for (uint32_t i = 0; i < 4; i++)
        w32(&w, 0xfffffff0u + i);
    b = of_wire(&w);
    CHECK_EQ(pgo_parse(b.p, b.len, &m, NULL, 0), 0);
    CHECK_EQ(m.nrels, 4);
    CHECK_EQ(m.truncate_options, 3);
    for (uint32_t i = 0; i < 4; i++) {
        CHECK_EQ(pgo_truncate_relid(&m, i, &relid), 0);
        CHECK_EQ(relid, 0xfffffff0u + i);
    }
    CHECK_EQ(pgo_truncate_relid(&m, 4, &relid), -1);
    free(b.p);

    /* Not a truncate. */
    CHECK_EQ(parse_hex(pg_begin, &b, &m, vals), 0);
    CHECK_EQ(pgo_truncate_relid(&m, 0, &relid), -1);
    free(b.p);
}

TEST(test_pgoutput_logical_messages)
{
    struct bytes b;
    struct pgo_msg m;
    struct pgo_value vals[NVALS];
    CHECK_EQ(parse_hex(pg_message_tx, &b, &m, vals), 0);
    CHECK_EQ(m.kind, PGO_MESSAGE);
    CHECK_EQ(m.transactional, 1);
    CHECK_EQ(m.flags, 1);
    CHECK_EQ(m.lsn, 0x1531f88);
    CHECK_MEM(m.prefix, m.prefix_len, "herald");
    CHECK_MEM((const char *)m.content, m.content_len, "hello");
    free(b.p);

    CHECK_EQ(parse_hex(pg_message_nontx, &b, &m, vals), 0);
    CHECK_EQ(m.transactional, 0);
    CHECK_EQ(m.lsn, 0x1531ff0);
    CHECK_MEM(m.prefix, m.prefix_len, "nt");
    CHECK_EQ(m.content_len, 2);
    CHECK(m.content[0] == 0 && m.content[1] == 1);
    free(b.p);
}

/* ---- what is refused ----------------------------------------------------------------- */

/* Every proper prefix of a valid message is refused, and so is the message with one byte
 * more; each in an exact-size allocation, so that ASan would catch a read past it. */
static int prefixes_and_trailing_refused(const uint8_t *p, size_t len)
{
    struct pgo_msg m;
    struct pgo_value vals[NVALS];
    int ok = 1;
    for (size_t n = 0; n < len; n++) {
        struct bytes t = copy_of(p, n);
        if (pgo_parse(t.p, n, &m, vals, NVALS) != -1) {
            fprintf(stderr, "  prefix of %zu bytes (of %zu) parsed\n", n, len);
            ok = 0;
        }
        free(t.p);
    }
    struct bytes t = {malloc(len + 1), len + 1};
    memcpy(t.p, p, len);
    t.p[len] = 0;
    if (pgo_parse(t.p, t.len, &m, vals, NVALS) != -1) {
        fprintf(stderr, "  message with a trailing byte parsed\n");
        ok = 0;
    }
    free(t.p);
    return ok;
}

TEST(test_pgoutput_refuses_every_truncation_and_trailing_bytes)
{
    for (size_t i = 0; i < sizeof(pg_all) / sizeof(pg_all[0]); i++) {
        struct bytes b = from_hex(*pg_all[i]);
        struct pgo_msg m;
        struct pgo_value vals[NVALS];
        CHECK_EQ(pgo_parse(b.p, b.len, &m, vals, NVALS), 0);
        CHECK(prefixes_and_trailing_refused(b.p, b.len));
        free(b.p);
    }
}

TEST(test_pgoutput_refuses_counts_larger_than_the_data)
{
    struct pgo_msg m;
    struct pgo_value vals[NVALS];
    static const char *bad[] = {
        /* Insert: 0xffff columns announced, one sent */
        "4900000001 4e ffff 6e",
        /* Insert: 3 columns announced, 2 sent */
        "4900000001 4e 0003 6e6e",
        /* text value longer than the message */
        "4900000001 4e 0001 74 00000005 6162",
        /* text value length 0x7fffffff */
        "4900000001 4e 0001 74 7fffffff 6162",
        /* a negative text value length */
        "4900000001 4e 0001 74 ffffffff 6162",
        "4900000001 4e 0001 62 80000000",
        /* Relation: 0xffff columns announced, one sent */
        "5200000001 7300 7400 64 ffff 00 6300 00000017 ffffffff",
        /* Truncate: 3 relations announced, 2 sent; 0xffffffff; 0x40000000 (4 * n wraps 32 bits) */
        "54 00000003 00 00000001 00000002",
        "54 ffffffff 00 00000001 00000002",
        "54 40000000 00 00000001",
        /* Message: content length past the end, and negative */
        "4d 01 0000000000000001 7000 00000006 68656c6c6f",
        "4d 01 0000000000000001 7000 ffffffff 68656c6c6f",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct bytes b = from_hex(bad[i]);
        if (pgo_parse(b.p, b.len, &m, vals, NVALS) != -1) {
            fprintf(stderr, "  accepted bad[%zu]\n", i);
            CHECK(0);
        }
        free(b.p);
    }
}

TEST(test_pgoutput_refuses_malformed_fields)
{
    struct pgo_msg m;
    struct pgo_value vals[NVALS];
    static const char *bad[] = {
        /* nothing; the kinds of streaming and two-phase, which herald does not ask for */
        "",
        "53",
        "45",
        "63",
        "41",
        "62",
        "4b",
        "50",
        "4f0000000000abcdef737263",         /* Origin: a name without its NUL */
        "59000040187075626c6963006d6f6f64", /* Type: a name without its NUL */
        "5900004018",                       /* Type: no strings at all */
        /* Relation: an unknown replica identity, then unknown column flags */
        "5200000001 7300 7400 7a 0000",
        "5200000001 7300 7400 64 0001 02 6300 00000017 ffffffff",
        /* Relation: a column name that runs off the end */
        "5200000001 7300 7400 64 0001 00 636363",
        /* Insert: an unknown value kind; no 'N'; an old tuple ('K') */
        "4900000001 4e 0001 78",
        "4900000001 0001 6e",
        "4900000001 4b 0001 6e",
        /* Update: an unknown tuple marker; the old tuple without a new one; two old ones */
        "5500000001 58 0001 6e",
        "5500000001 4b 0001 6e",
        "5500000001 4b 0001 6e 4f 0001 6e 4e 0001 6e",
        /* Delete: 'N' instead of 'K'/'O' */
        "4400000001 4e 0001 6e",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct bytes b = from_hex(bad[i]);
        if (pgo_parse(b.p, b.len, &m, vals, NVALS) != -1) {
            fprintf(stderr, "  accepted bad[%zu] %s\n", i, bad[i]);
            CHECK(0);
        }
        free(b.p);
    }
    CHECK_EQ(pgo_parse(NULL, 0, &m, vals, NVALS), -1);
}

TEST(test_pgoutput_tuple_over_vals_cap)
{
    struct bytes b = from_hex(pg_insert_u);
    struct pgo_msg m;
    struct pgo_value vals[2];
    CHECK_EQ(pgo_parse(b.p, b.len, &m, vals, 2), 0);
    CHECK_EQ(pgo_parse(b.p, b.len, &m, vals, 1), -1);
    CHECK_EQ(pgo_parse(b.p, b.len, &m, NULL, 0), -1);
    free(b.p);
    /* A tuple of no columns needs no room at all. */
    b = from_hex("4900000001 4e 0000");
    CHECK_EQ(pgo_parse(b.p, b.len, &m, NULL, 0), 0);
    CHECK_EQ(m.new_tuple.n, 0);
    free(b.p);
    b = from_hex("5500000001 4b 0000 4e 0000");
    CHECK_EQ(pgo_parse(b.p, b.len, &m, NULL, 0), 0);
    CHECK_EQ(m.old_kind, 'K');
    free(b.p);
}

/* ---- values as JSON ------------------------------------------------------------------ */

/* The JSON of one value, which must also be one valid JSON value to herald's parser. */
static int json_is(uint32_t type, char kind, const char *text, size_t len, const char *want)
{
    struct bytes t = copy_of((const uint8_t *)text, len);
    struct pgo_value v = {kind, kind == 't' || kind == 'b' ? t.p : NULL, (uint32_t)len};
    struct buf b = BUF_INIT;
    buf_append_str(&b, "#"); /* what was there stays */
    pgo_json_value(&b, type, &v);
    int ok = b.len == strlen(want) + 1 && memcmp(b.p + 1, want, b.len - 1) == 0;
    if (!ok)
        fprintf(stderr, "  type %u %c '%.*s': got %.*s, expected %s\n", type, kind, (int)len, text,
                (int)b.len - 1, b.p + 1, want);
    jsmntok_t tok[256];
    if (ok && json_tokenize(b.p + 1, b.len - 1, tok, 256) <= 0) {
        fprintf(stderr, "  type %u '%.*s': %s is not valid JSON\n", type, (int)len, text, want);
        ok = 0;
    }
    buf_free(&b);
    free(t.p);
    return ok;
}

#define JSON_IS(type, kind, text, want) CHECK(json_is(type, kind, text, strlen(text), want))

TEST(test_pgoutput_json_numbers)
{
    JSON_IS(23, 't', "42", "42");
    JSON_IS(21, 't', "-17", "-17");
    JSON_IS(20, 't', "-9223372036854775808", "-9223372036854775808");
    JSON_IS(20, 't', "9223372036854775807", "9223372036854775807"); /* not rounded */
    JSON_IS(26, 't', "4294967295", "4294967295");
    JSON_IS(1700, 't', "12.50", "12.50");
    JSON_IS(1700, 't', "-0.000001", "-0.000001");
    JSON_IS(1700, 't', "NaN", "\"NaN\"");
    JSON_IS(1700, 't', "Infinity", "\"Infinity\"");
    JSON_IS(1700, 't', "-Infinity", "\"-Infinity\"");
    JSON_IS(701, 't', "NaN", "\"NaN\"");
    JSON_IS(701, 't', "Infinity", "\"Infinity\"");
    JSON_IS(701, 't', "-Infinity", "\"-Infinity\"");
    JSON_IS(701, 't', "1e+10", "1e+10");
    JSON_IS(700, 't', "1e10", "1e10");
    JSON_IS(701, 't', "-1.5e-07", "-1.5e-07");
    JSON_IS(701, 't', "-0", "-0");
    /* Not RFC 8259 numbers: sent as strings rather than as broken JSON. */
    JSON_IS(23, 't', "+1", "\"+1\"");
    JSON_IS(23, 't', "01", "\"01\"");
    JSON_IS(1700, 't', ".5", "\".5\"");
    JSON_IS(1700, 't', "1.", "\"1.\"");
    JSON_IS(701, 't', "1e", "\"1e\"");
    JSON_IS(23, 't', "", "\"\"");
    JSON_IS(23, 't', "1 ", "\"1 \"");
    JSON_IS(23, 't', "0x10", "\"0x10\"");
}

TEST(test_pgoutput_json_bool_null_unchanged)
{
    JSON_IS(16, 't', "t", "true");
    JSON_IS(16, 't', "f", "false");
    JSON_IS(16, 't', "true", "\"true\"");
    JSON_IS(16, 't', "", "\"\"");
    JSON_IS(16, 'n', "", "null");
    JSON_IS(25, 'n', "", "null");
    /* Unchanged TOAST: nothing written (the caller leaves the column out). */
    struct pgo_value v = {'u', NULL, 0};
    struct buf b = BUF_INIT;
    pgo_json_value(&b, 25, &v);
    CHECK_EQ(b.len, 0);
    CHECK(pgo_value_unchanged(&v));
    /* A kind the parser never produces: null, never nothing. */
    v.kind = 'x';
    pgo_json_value(&b, 25, &v);
    CHECK_MEM((const char *)b.p, b.len, "null");
    buf_free(&b);
}

TEST(test_pgoutput_json_embeds_json_and_jsonb)
{
    JSON_IS(3802, 't', "{\"k\": [1, 2, {\"x\": null}]}", "{\"k\": [1, 2, {\"x\": null}]}");
    JSON_IS(114, 't', " [1,\"a\\u00e9\\n\",true,false,null,-2.5E+3] ",
            " [1,\"a\\u00e9\\n\",true,false,null,-2.5E+3] ");
    JSON_IS(114, 't', "\"caf\xc3\xa9\"", "\"caf\xc3\xa9\"");
    JSON_IS(3802, 't', "1", "1");
    JSON_IS(3802, 't', "{}", "{}");
    JSON_IS(3802, 't', "[[], {\"a\": {}}]", "[[], {\"a\": {}}]");
    /* Not one valid JSON value: a string of the text. */
    JSON_IS(114, 't', "", "\"\"");
    JSON_IS(114, 't', "   ", "\"   \"");
    JSON_IS(114, 't', "{", "\"{\"");
    JSON_IS(114, 't', "[1,]", "\"[1,]\"");
    JSON_IS(114, 't', "{\"a\" 1}", "\"{\\\"a\\\" 1}\"");
    JSON_IS(114, 't', "{\"a\":1,}", "\"{\\\"a\\\":1,}\"");
    JSON_IS(114, 't', "{1:2}", "\"{1:2}\"");
    JSON_IS(114, 't', "[1] [2]", "\"[1] [2]\"");
    JSON_IS(114, 't', "nul", "\"nul\"");
    JSON_IS(114, 't', "\"\\x\"", "\"\\\"\\\\x\\\"\"");
    JSON_IS(114, 't', "[NaN]", "\"[NaN]\"");
    JSON_IS(114, 't', "]", "\"]\"");
    JSON_IS(114, 't', "[}", "\"[}\"");
    /* Invalid UTF-8 is never embedded; in the string it becomes U+FFFD. */
    JSON_IS(114, 't', "\"\xff\"", "\"\\\"\xef\xbf\xbd\\\"\"");

    /* Nesting: PGO_JSON_MAX_DEPTH levels embed, one more is a string. */
    char deep[2 * PGO_JSON_MAX_DEPTH + 1];
    for (int i = 0; i < PGO_JSON_MAX_DEPTH; i++) {
        deep[i] = '[';
        deep[PGO_JSON_MAX_DEPTH + i] = ']';
    }
    deep[2 * PGO_JSON_MAX_DEPTH] = '\0';
    JSON_IS(3802, 't', deep, deep);
    char deeper[2 * PGO_JSON_MAX_DEPTH + 3], want[2 * PGO_JSON_MAX_DEPTH + 5];
    snprintf(deeper, sizeof(deeper), "[%s]", deep);
    snprintf(want, sizeof(want), "\"%s\"", deeper);
    JSON_IS(3802, 't', deeper, want);
}

TEST(test_pgoutput_json_strings_and_binary)
{
    JSON_IS(25, 't', "a \"quoted\" \\ name\n", "\"a \\\"quoted\\\" \\\\ name\\n\"");
    JSON_IS(25, 't', "tab\there\x01", "\"tab\\there\\u0001\"");
    JSON_IS(1043, 't', "caf\xc3\xa9 \xf0\x9f\x98\x80", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"");
    JSON_IS(25, 't', "12", "\"12\""); /* text stays text, even when it looks like a number */
    JSON_IS(3802, 'b', "", "\"\\\\x\"");
    CHECK(json_is(17, 't', "\\x00ff10", 8, "\"\\\\x00ff10\"")); /* bytea as text */
    CHECK(json_is(17, 'b', "\x00\xff\x10", 3, "\"\\\\x00ff10\""));
    CHECK(json_is(25, 't', "a\0b", 3, "\"a\\u0000b\""));
    /* Invalid UTF-8: each bad byte becomes U+FFFD, the rest is kept and escaped. */
    JSON_IS(25, 't', "a\xffz", "\"a\xef\xbf\xbdz\"");
    JSON_IS(25, 't', "\xc3\"\n", "\"\xef\xbf\xbd\\\"\\n\"");
    JSON_IS(25, 't', "\xed\xa0\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""); /* a surrogate */
    JSON_IS(25, 't', "\xc0\xaf", "\"\xef\xbf\xbd\xef\xbf\xbd\"");                 /* overlong */
    JSON_IS(25, 't', "\xf4\x90\x80\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    JSON_IS(25, 't', "ok\xe2\x82", "\"ok\xef\xbf\xbd\xef\xbf\xbd\""); /* cut short */
    JSON_IS(25, 't', "\x7f\x1f", "\"\x7f\\u001f\"");
}

/* ---- LSN and time text --------------------------------------------------------------- */

TEST(test_pgoutput_lsn_text)
{
    char out[24];
    pgo_lsn_text(0x16B3748, out);
    CHECK(strcmp(out, "0/16B3748") == 0);
    pgo_lsn_text(0, out);
    CHECK(strcmp(out, "0/0") == 0);
    pgo_lsn_text(0x100000000, out);
    CHECK(strcmp(out, "1/0") == 0);
    pgo_lsn_text(0xABCDEF0012345678, out);
    CHECK(strcmp(out, "ABCDEF00/12345678") == 0);
    pgo_lsn_text(UINT64_MAX, out);
    CHECK(strcmp(out, "FFFFFFFF/FFFFFFFF") == 0);
}

static int time_is(int64_t us, const char *want)
{
    char out[40];
    pgo_time_text(us, out);
    if (strcmp(out, want) != 0) {
        fprintf(stderr, "  %lld: got %s, expected %s\n", (long long)us, out, want);
        return 0;
    }
    return 1;
}

/* The same instant as glibc's gmtime_r prints it. */
static int time_matches_gmtime(int64_t us)
{
    int64_t s = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        s--;
        frac += 1000000;
    }
    time_t t = (time_t)(s + 946684800);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        return 0;
    char want[64];
    long long year = (long long)tm.tm_year + 1900;
    snprintf(want, sizeof(want), "%s%04lld-%02d-%02dT%02d:%02d:%02d.%06lldZ", year < 0 ? "-" : "",
             year < 0 ? -year : year, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long long)frac);
    return time_is(us, want);
}

TEST(test_pgoutput_time_text)
{
    CHECK(time_is(0, "2000-01-01T00:00:00.000000Z"));
    CHECK(time_is(849448800123456, "2026-12-01T14:00:00.123456Z"));
    CHECK(time_is(762525296789012, "2024-02-29T12:34:56.789012Z")); /* a leap day */
    CHECK(time_is(-1, "1999-12-31T23:59:59.999999Z"));
    CHECK(time_is(-946684800000000, "1970-01-01T00:00:00.000000Z"));
    CHECK(time_is(-63082281600000000, "0001-01-01T00:00:00.000000Z"));
    CHECK(time_is(INT64_MAX, "infinity"));
    CHECK(time_is(INT64_MIN, "-infinity"));
    static const int64_t at[] = {
        1,
        86399999999,
        86400000000,
        951782400000000 - 1,
        4102444800000000,   /* 2130 */
        -2208988800000000,  /* 1930 */
        -63082281600000001, /* the last microsecond of 1 BC */
        -70000000000000000,
        253402300800000000, /* 10000-01-01 */
        INT64_MAX - 1,
        INT64_MIN + 1,
    };
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++)
        CHECK(time_matches_gmtime(at[i]));
    /* Every day over a few centuries, at a varying time of day. */
    for (int64_t d = -40000; d < 80000; d += 7) {
        int64_t us = d * INT64_C(86400000000) + (d * INT64_C(123456789)) % INT64_C(86400000000);
        CHECK(time_matches_gmtime(us));
    }
}

int main(void)
{
    RUN(test_pg_copy_xlogdata_from_postgresql);
    RUN(test_pg_copy_keepalive);
    RUN(test_pg_copy_refuses_other_kinds);
    RUN(test_pg_status_update_bytes);
    RUN(test_pg_now_since_2000_is_the_protocol_clock);
    RUN(test_pgoutput_begin_commit_from_postgresql);
    RUN(test_pgoutput_origin_and_type_from_postgresql);
    RUN(test_pgoutput_relation_from_postgresql);
    RUN(test_pgoutput_relation_typmod_and_no_columns);
    RUN(test_pgoutput_insert_from_postgresql);
    RUN(test_pgoutput_update_without_old_tuple_and_unchanged_toast);
    RUN(test_pgoutput_update_with_old_key_and_old_row);
    RUN(test_pgoutput_delete_with_old_row_and_old_key);
    RUN(test_pgoutput_binary_values);
    RUN(test_pgoutput_truncate);
    RUN(test_pgoutput_logical_messages);
    RUN(test_pgoutput_refuses_every_truncation_and_trailing_bytes);
    RUN(test_pgoutput_refuses_counts_larger_than_the_data);
    RUN(test_pgoutput_refuses_malformed_fields);
    RUN(test_pgoutput_tuple_over_vals_cap);
    RUN(test_pgoutput_json_numbers);
    RUN(test_pgoutput_json_bool_null_unchanged);
    RUN(test_pgoutput_json_embeds_json_and_jsonb);
    RUN(test_pgoutput_json_strings_and_binary);
    RUN(test_pgoutput_lsn_text);
    RUN(test_pgoutput_time_text);
    return test_summary("pg_pgoutput");
}
