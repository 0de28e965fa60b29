/* PostgreSQL logical replication, parsed by hand: the CopyData framing of the streaming
 * replication protocol ('w' XLogData, 'k' keepalive, the 'r' status update herald sends
 * back) and the pgoutput messages inside XLogData (protocol version 1 with `messages`,
 * as PostgreSQL 15 sends them), plus how their values become JSON. Not a libpq client:
 * the caller owns the connection and hands over one CopyData payload at a time.
 *
 * Everything here is hostile input (whoever can write to the database or sit on the
 * connection chooses the bytes): nothing past len is read, no count or length is trusted,
 * malformed input is refused with -1, and the parsers never allocate. Every pointer
 * they return points into the bytes given (or into the caller's vals array) and is
 * borrowed: it is valid as long as those bytes are.
 *
 * References: PostgreSQL docs, "Streaming Replication Protocol" and "Logical Replication
 * Message Formats"; src/backend/replication/logical/proto.c. */
#ifndef HERALD_PG_PGOUTPUT_H
#define HERALD_PG_PGOUTPUT_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* ---- CopyData framing ---------------------------------------------------------------- */

enum pg_copy_kind {
    PG_COPY_XLOGDATA = 'w',  /* WAL data: the payload is one pgoutput message */
    PG_COPY_KEEPALIVE = 'k', /* primary keepalive */
};

struct pg_copy {
    enum pg_copy_kind kind;
    uint64_t wal_start;  /* w: where the payload starts in the WAL (0 for some messages) */
    uint64_t wal_end;    /* w, k: the server's current end of WAL */
    int64_t send_time;   /* w, k: the server's clock, microseconds since 2000-01-01 UTC */
    int reply_requested; /* k: 1 when the server wants a status update now */
    const uint8_t *data; /* w: the payload, pointing into p */
    size_t data_len;
};

/* Parse one CopyData payload (what follows the 'd' and its length) of a START_REPLICATION
 * stream. 0 and *out filled, or -1: not XLogData nor a keepalive (a keepalive must be
 * exactly 18 bytes, its reply flag 0 or 1). p is borrowed; out->data points into it. */
int pg_copy_parse(const uint8_t *p, size_t len, struct pg_copy *out);

/* Build the 'r' Standby status update: the WAL positions written, flushed and applied
 * (each "the last byte + 1"), the client's clock (pg_now_since_2000) and whether the
 * server should answer at once. Returns the length, 34; send it as a CopyData payload. */
size_t pg_status_update(uint8_t out[34], uint64_t written, uint64_t flushed, uint64_t applied,
                        int64_t now_us_since_2000, int reply);

/* Microseconds since 2000-01-01 00:00:00 UTC, the protocol's clock (CLOCK_REALTIME). */
int64_t pg_now_since_2000(void);

/* ---- pgoutput messages --------------------------------------------------------------- */

enum pgo_kind {
    PGO_BEGIN = 'B',
    PGO_COMMIT = 'C',
    PGO_ORIGIN = 'O',
    PGO_TYPE = 'Y',
    PGO_RELATION = 'R',
    PGO_INSERT = 'I',
    PGO_UPDATE = 'U',
    PGO_DELETE = 'D',
    PGO_TRUNCATE = 'T',
    PGO_MESSAGE = 'M',
};

/* One column value of a tuple. kind: 'n' null, 'u' unchanged TOASTed value (not sent),
 * 't' text, 'b' binary; p/len are the bytes for 't' and 'b' (pointing into the message,
 * not NUL-terminated), NULL/0 otherwise. */
struct pgo_value {
    char kind;
    const uint8_t *p;
    uint32_t len;
};

/* A tuple: n values at vals (a part of the caller's vals array). */
struct pgo_tuple {
    const struct pgo_value *vals;
    size_t n;
};

/* One column of a Relation message (see pgo_relation_columns). */
struct pgo_column {
    uint8_t key;      /* 1 when the column is part of the replica identity key */
    const char *name; /* into the message, NUL-terminated there, name_len bytes */
    size_t name_len;
    uint32_t type;  /* type OID */
    int32_t typmod; /* -1: none */
};

#define PGO_TRUNCATE_CASCADE 1
#define PGO_TRUNCATE_RESTART_IDENTITY 2

/* A parsed message. Fields not listed for the kind are 0/NULL. Strings point into the
 * message, are NUL-terminated there, and carry their length (without the NUL). */
struct pgo_msg {
    enum pgo_kind kind;
    uint64_t lsn;          /* B: final LSN of the transaction; C: commit LSN;
                              O: the commit LSN on the origin server; M: the message's LSN */
    uint64_t end_lsn;      /* C: end LSN of the transaction */
    int64_t commit_time;   /* B, C: microseconds since 2000-01-01 UTC */
    uint32_t xid;          /* B */
    uint32_t relid;        /* R, I, U, D: relation OID; Y: the type's OID */
    uint8_t flags;         /* C: flags (unused so far); M: flags (bit 1: transactional) */
    const char *namespace; /* R, Y: schema name ("" for pg_catalog) */
    size_t namespace_len;
    const char *name; /* R: relation name; Y: type name; O: origin name */
    size_t name_len;
    uint8_t identity;       /* R: replica identity setting: 'd', 'n', 'f' or 'i' */
    uint16_t ncols;         /* R: number of columns (read them with pgo_relation_columns) */
    const uint8_t *columns; /* R: the encoded column list (private to pgo_relation_columns) */
    size_t columns_len;
    char old_kind;              /* U: 'K' (old key), 'O' (old row) or 0 (no old tuple);
                                   D: 'K' or 'O' */
    struct pgo_tuple old_tuple; /* U with old_kind, D */
    struct pgo_tuple new_tuple; /* I, U */
    uint32_t nrels;             /* T: number of relations (read them with pgo_truncate_relid) */
    uint8_t truncate_options;   /* T: PGO_TRUNCATE_CASCADE | PGO_TRUNCATE_RESTART_IDENTITY */
    const uint8_t *relids;      /* T: nrels big-endian Int32 (private to pgo_truncate_relid) */
    int transactional;          /* M: 1 when the message was emitted inside the transaction */
    const char *prefix;         /* M */
    size_t prefix_len;
    const uint8_t *content; /* M: content_len bytes, any bytes (not NUL-terminated) */
    size_t content_len;
};

/* Parse one pgoutput message p[0..len) (the payload of an XLogData) into *m, the values
 * of its tuples into vals[0..vals_cap). Returns 0, or -1: unknown kind, truncated, a
 * count or length larger than what follows, a string without its NUL, an unknown value
 * kind or replica identity, bytes left after the last field, or a tuple that does not
 * fit in vals (*m is then partly filled and meaningless).
 *
 * An Update's two tuples share vals: the old one (if any) takes vals[0..old_n) and the
 * new one follows it at vals[old_n..old_n + new_n); both must fit in vals_cap together,
 * so a relation of n columns needs 2 * n values for its updates (n for the others).
 * m->old_tuple / m->new_tuple point at their part. p and vals are borrowed; m points
 * into both. */
int pgo_parse(const uint8_t *p, size_t len, struct pgo_msg *m, struct pgo_value *vals,
              size_t vals_cap);

/* The columns of a Relation message that pgo_parse accepted, into cols[0..cap). Returns
 * m->ncols, or -1 when m is not a Relation or cap < m->ncols. Names point into the
 * message. */
int pgo_relation_columns(const struct pgo_msg *m, struct pgo_column *cols, size_t cap);

/* Relation i of a Truncate message that pgo_parse accepted: 0 and *relid, or -1 when m
 * is not a Truncate or i >= m->nrels. */
int pgo_truncate_relid(const struct pgo_msg *m, uint32_t i, uint32_t *relid);

/* ---- values as JSON ------------------------------------------------------------------ */

/* 1 when v is an unchanged TOASTed value ('u'): an Update did not touch it and the server
 * did not send it. It has no JSON form: the caller leaves the column out of the row (and
 * pgo_json_value writes nothing for it). */
int pgo_value_unchanged(const struct pgo_value *v);

/* Deepest nesting of a json/jsonb value that is embedded as JSON; deeper ones are sent
 * as a JSON string. Half of core/json.h's JSON_MAX_DEPTH (128), which leaves room for the
 * envelope a row is wrapped in, so that herald's own parser still reads the result. */
#define PGO_JSON_MAX_DEPTH 64

/* Append value v of a column of type type_oid to b as one JSON value:
 *   'n'                        null
 *   'u'                        nothing (see pgo_value_unchanged)
 *   'b' (binary)               a string of its bytea hex form, "\\x00ff..."
 *   't', int2 21, int4 23, int8 20, oid 26, float4 700, float8 701, numeric 1700:
 *                              the text as a number when it is a valid JSON number
 *                              (RFC 8259 section 6), else a string ("NaN", "Infinity",
 *                              "-Infinity"); int8 and numeric are not rounded to doubles
 *   't', bool 16               true for "t", false for "f", else a string of the text
 *   't', json 114, jsonb 3802  the text as is when it is one valid JSON value in valid
 *                              UTF-8, nested at most PGO_JSON_MAX_DEPTH; else a string
 *   't', any other type        a string of the text
 * Strings are escaped as RFC 8259 requires; invalid UTF-8 in a text (the server encoding
 * should be UTF-8) becomes U+FFFD, one per bad byte, so the output is always valid JSON.
 * Any other v->kind writes null. v is borrowed. */
void pgo_json_value(struct buf *b, uint32_t type_oid, const struct pgo_value *v);

/* An LSN as PostgreSQL prints it: "X/Y", uppercase hex of the high and low 32 bits
 * (e.g. 0/16B3748). NUL-terminated. */
void pgo_lsn_text(uint64_t lsn, char out[24]);

/* A protocol time (microseconds since 2000-01-01 UTC) as ISO 8601 UTC with microseconds,
 * "2026-12-01T14:00:00.123456Z" (proleptic Gregorian; years past 9999 or before 0 keep
 * their digits and sign). INT64_MAX and INT64_MIN are PostgreSQL's "infinity" and
 * "-infinity" and are written so. NUL-terminated. */
void pgo_time_text(int64_t us_since_2000, char out[40]);

#endif
