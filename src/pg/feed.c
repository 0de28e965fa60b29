/* The change feed (see feed.h). */
#include "pg/feed.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "hub/hub.h"
#include "metrics/metrics.h"
#include "pg/pgoutput.h"

#define RETRY_MIN_MS 500
#define RETRY_MAX_MS 10000
#define STANDBY_RETRY_MS 3000 /* another node streams the slot: ask again this often */
#define STATUS_EVERY_MS 1000  /* the confirmed position told to PostgreSQL */
#define INFLIGHT_MAX 20000    /* changes handed to the engine and not answered yet */
#define MAX_COLUMNS 1664      /* PostgreSQL's own limit on a table's columns */

/* A table as pgoutput describes it (its Relation message), with what herald sends. */
struct rel {
    uint32_t relid;
    const struct feed_table *table; /* NULL: not one of ours (never published) */
    char name[132];                 /* "schema.table" */
    int ncols;
    int owner; /* the owner column's index, or -1 */
    struct col {
        char name[64];
        uint32_t type;
        uint8_t send; /* allowed and not excluded */
    } * cols;
};

/* A transaction whose changes the engine is still answering, oldest first. */
struct txn {
    struct txn *next;
    uint64_t end_lsn;
    unsigned remaining; /* publications not answered yet */
    uint8_t committed;  /* its Commit came: end_lsn is known */
};

static struct feed {
    const struct config *config;
    pthread_t thread;
    atomic_int running; /* read by /ready on any loop */
    atomic_int stop;
    int wake[2]; /* a byte written here ends a wait */
    pthread_mutex_t lock; /* everything below */
    pthread_cond_t answered;
    char status[240];   /* why the feed does not stream, or "" */
    int standby;        /* another node streams the slot */
    struct txn *head, **tail;
    unsigned inflight;
    uint64_t confirmed; /* every change up to here is in the engine */
    uint64_t received;  /* the newest WAL end seen */
    /* the feed thread's own */
    struct rel *rels;
    size_t nrels, caprels;
    struct txn *cur; /* the transaction being read */
    int skip;        /* it was handed on before this stream (a re-read): skipped */
    uint64_t handed; /* the commit LSN of the newest transaction handed to the hub */
    uint64_t cur_lsn;
    uint32_t cur_xid;
    int64_t cur_time;
    struct pgo_value *vals;
    struct buf data;
} F;

static void set_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The first line of a libpq message (they end with a newline), into a static buffer:
 * the feed thread's own. */
static const char *first_line(const char *m)
{
    static char line[200];
    snprintf(line, sizeof(line), "%s", m && m[0] ? m : "?");
    char *nl = strchr(line, '\n');
    if (nl)
        *nl = 0;
    return line;
}

static void set_status(const char *fmt, ...)
{
    char s[sizeof(F.status)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s, sizeof(s), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&F.lock);
    int changed = strcmp(F.status, s) != 0;
    memcpy(F.status, s, sizeof(s));
    pthread_mutex_unlock(&F.lock);
    if (changed && s[0])
        log_warn("feed_down", "change feed: %s", s);
}

/* ---- SQL ---- */

/* "schema"."name": names are checked by the config (letters, digits, _ and $). */
static void quoted(struct buf *b, const char *schema, const char *name)
{
    buf_appendf(b, "\"%s\".\"%s\"", schema, name);
}

static void sql_publication(struct buf *b, const struct change_feed *f, int create)
{
    buf_appendf(b, create ? "CREATE PUBLICATION \"%s\" FOR TABLE " : "ALTER PUBLICATION \"%s\" SET TABLE ",
                f->publication);
    for (size_t i = 0; i < f->n_tables; i++) {
        if (i)
            buf_append_str(b, ", ");
        quoted(b, f->tables[i].schema, f->tables[i].name);
    }
}

static void sql_identity(struct buf *b, const struct feed_table *t)
{
    buf_append_str(b, "ALTER TABLE ");
    quoted(b, t->schema, t->name);
    buf_append_str(b, " REPLICA IDENTITY FULL");
}

/* herald.publish(channel, data): a transactional logical message "<channel>\n<data>",
 * read from the same stream as the rows, so it is published iff the transaction
 * commits, in commit order. */
static const char publish_fn[] =
    "CREATE OR REPLACE FUNCTION herald.publish(channel text, data jsonb) RETURNS void "
    "LANGUAGE plpgsql AS $herald$ BEGIN "
    "PERFORM pg_logical_emit_message(true, 'herald', channel || E'\\n' || data::text); "
    "END $herald$";

void pg_feed_sql(const struct config *c, FILE *out)
{
    const struct change_feed *f = &c->feed;
    struct buf b = BUF_INIT;
    buf_append_str(&b, "-- herald's change feed; run as a user that may create these. The user "
                       "herald connects as\n-- needs the REPLICATION attribute and SELECT on "
                       "the tables. The database needs wal_level = logical.\n");
    sql_publication(&b, f, 1);
    buf_append_str(&b, ";\n");
    for (size_t i = 0; i < f->n_tables; i++) {
        sql_identity(&b, &f->tables[i]);
        buf_append_str(&b, ";\n");
    }
    buf_append_str(&b, "CREATE SCHEMA IF NOT EXISTS herald;\n");
    buf_append_str(&b, publish_fn);
    buf_append_str(&b, ";\n");
    buf_appendf(&b, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput');\n", f->slot);
    if (!b.oom)
        fwrite(b.p, 1, b.len, out);
    buf_free(&b);
}

/* A simple query (the replication protocol takes no other); its result, or NULL with
 * the error in *why. */
static PGresult *query(PGconn *pg, const char *sql, ExecStatusType want, char *why, size_t n)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != want) {
        const char *m = PQresultErrorMessage(r);
        snprintf(why, n, "%s", m && m[0] ? m : PQerrorMessage(pg));
        char *nl = strchr(why, '\n');
        if (nl)
            *nl = 0;
        PQclear(r);
        return NULL;
    }
    return r;
}

static int run(PGconn *pg, const char *sql, char *why, size_t n)
{
    PGresult *r = query(pg, sql, PGRES_COMMAND_OK, why, n);
    if (r == NULL)
        return -1;
    PQclear(r);
    return 0;
}

/* The columns of a table, or 0 rows when it does not exist. */
static PGresult *columns_of(PGconn *pg, const struct feed_table *t, char *why, size_t n)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid "
             "JOIN pg_namespace s ON c.relnamespace = s.oid WHERE s.nspname = '%s' AND "
             "c.relname = '%s' AND a.attnum > 0 AND NOT a.attisdropped",
             t->schema, t->name);
    return query(pg, sql, PGRES_TUPLES_OK, why, n);
}

static int has_column(PGresult *r, const char *name)
{
    for (int i = 0; i < PQntuples(r); i++)
        if (strcmp(PQgetvalue(r, i, 0), name) == 0)
            return 1;
    return 0;
}

/* Every configured table and column exists: 0, or -1 with the unknown name in err. */
static int check_names(PGconn *pg, const struct change_feed *f, char *err, size_t errlen)
{
    for (size_t i = 0; i < f->n_tables; i++) {
        const struct feed_table *t = &f->tables[i];
        char why[200];
        PGresult *r = columns_of(pg, t, why, sizeof(why));
        if (r == NULL) {
            snprintf(err, errlen, "change_feed: %s.%s: %s", t->schema, t->name, why);
            return -2; /* not a verdict on the names */
        }
        int rc = 0;
        if (PQntuples(r) == 0) {
            snprintf(err, errlen, "change_feed.tables: %s.%s: no such table", t->schema, t->name);
            rc = -1;
        }
        const char *missing = NULL, *what = NULL;
        for (size_t k = 0; rc == 0 && k < t->n_columns && !missing; k++)
            if (!has_column(r, t->columns[k]))
                missing = t->columns[k], what = "columns";
        for (size_t k = 0; rc == 0 && k < t->n_exclude && !missing; k++)
            if (!has_column(r, t->exclude[k]))
                missing = t->exclude[k], what = "exclude_columns";
        if (rc == 0 && !missing && t->owner_column && !has_column(r, t->owner_column))
            missing = t->owner_column, what = "owner_column";
        if (missing) {
            snprintf(err, errlen, "change_feed.tables: %s.%s: %s: no such column \"%s\"",
                     t->schema, t->name, what, missing);
            rc = -1;
        }
        PQclear(r);
        if (rc)
            return rc;
    }
    return 0;
}

/* The connection string expanded (expand_dbname), with herald's own settings after it. */
static PGconn *connect_pg(const struct config *c, int replication)
{
    const char *keys[] = {"dbname", "connect_timeout", "application_name", "replication", NULL};
    const char *vals[] = {c->postgres, "5", "herald", "database", NULL};
    if (!replication)
        keys[3] = vals[3] = NULL;
    return PQconnectdbParams(keys, vals, 1);
}

int pg_feed_check(const struct config *c, char *err, size_t errlen)
{
    if (c->feed.n_tables == 0)
        return 0;
    PGconn *pg = connect_pg(c, 0);
    if (PQstatus(pg) != CONNECTION_OK) {
        log_warn("feed_down", "change feed: PostgreSQL not reachable at start (%s); trying again",
                 first_line(PQerrorMessage(pg)));
        PQfinish(pg);
        return 0;
    }
    int rc = check_names(pg, &c->feed, err, errlen);
    PQfinish(pg);
    return rc == -1 ? -1 : 0;
}

static void on_reset(void *ud, int status)
{
    pthread_mutex_lock(&F.lock);
    (*(int *)ud)--;
    pthread_cond_broadcast(&F.answered);
    pthread_mutex_unlock(&F.lock);
}

/* The slot was invalidated: changes were lost. Every change channel of the feed's tables
 * starts a new stream (no recovery across the hole succeeds, and their subscribers are
 * told), then a new slot is made. herald.publish() channels are not known here and keep
 * theirs. */
static int replace_lost_slot(PGconn *pg, const struct change_feed *f, char *why, size_t n)
{
    log_error("feed_slot_invalidated",
              "change feed: replication slot %s was invalidated (it fell behind "
              "max_slot_wal_keep_size): the changes committed meanwhile are lost; the change "
              "channels start new streams and a new slot is made",
              f->slot);
    set_status("replication slot %s was invalidated: changes were lost", f->slot);
    int pending = (int)f->n_tables;
    for (size_t i = 0; i < f->n_tables; i++) {
        char prefix[160];
        int len = snprintf(prefix, sizeof(prefix), "table:%s.%s", f->tables[i].schema,
                           f->tables[i].name);
        hub_reset_streams((const uint8_t *)prefix, (size_t)len, on_reset, &pending);
    }
    pthread_mutex_lock(&F.lock);
    while (pending > 0)
        pthread_cond_wait(&F.answered, &F.lock);
    pthread_mutex_unlock(&F.lock);
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP_REPLICATION_SLOT \"%s\"", f->slot);
    PGresult *r = query(pg, sql, PGRES_COMMAND_OK, why, n);
    if (r == NULL)
        return -1;
    PQclear(r);
    return 0;
}

/* Publication, replica identity, herald.publish(), slot: created when missing (the same
 * SQL as `herald pg sql`), only checked when present. 0, or -1 with why. */
static int set_up(PGconn *pg, const struct change_feed *f, char *why, size_t n)
{
    char sql[1024];
    struct buf b = BUF_INIT;
    int rc = -1;
    snprintf(sql, sizeof(sql), "SELECT 1 FROM pg_publication WHERE pubname = '%s'", f->publication);
    PGresult *r = query(pg, sql, PGRES_TUPLES_OK, why, n);
    if (r == NULL)
        goto out;
    int have_pub = PQntuples(r) > 0;
    PQclear(r);
    int same = 0;
    if (have_pub) {
        snprintf(sql, sizeof(sql),
                 "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = '%s'",
                 f->publication);
        r = query(pg, sql, PGRES_TUPLES_OK, why, n);
        if (r == NULL)
            goto out;
        same = (size_t)PQntuples(r) == f->n_tables;
        for (size_t i = 0; same && i < f->n_tables; i++) {
            int found = 0;
            for (int k = 0; k < PQntuples(r) && !found; k++)
                found = strcmp(PQgetvalue(r, k, 0), f->tables[i].schema) == 0 &&
                        strcmp(PQgetvalue(r, k, 1), f->tables[i].name) == 0;
            same = found;
        }
        PQclear(r);
    }
    if (!same) {
        sql_publication(&b, f, !have_pub);
        buf_append_char(&b, 0);
        if (b.oom || run(pg, (const char *)b.p, why, n) != 0)
            goto out;
        log_info("feed_publication", "change feed: publication %s over %zu tables", f->publication,
                 f->n_tables);
    }
    for (size_t i = 0; i < f->n_tables; i++) {
        const struct feed_table *t = &f->tables[i];
        snprintf(sql, sizeof(sql),
                 "SELECT c.relreplident FROM pg_class c JOIN pg_namespace s ON c.relnamespace = "
                 "s.oid WHERE s.nspname = '%s' AND c.relname = '%s'",
                 t->schema, t->name);
        r = query(pg, sql, PGRES_TUPLES_OK, why, n);
        if (r == NULL)
            goto out;
        int full = PQntuples(r) > 0 && PQgetvalue(r, 0, 0)[0] == 'f';
        PQclear(r);
        if (!full) {
            b.len = 0;
            sql_identity(&b, t);
            buf_append_char(&b, 0);
            if (b.oom || run(pg, (const char *)b.p, why, n) != 0)
                goto out;
        }
    }
    r = query(pg,
              "SELECT 1 FROM pg_proc p JOIN pg_namespace s ON p.pronamespace = s.oid WHERE "
              "s.nspname = 'herald' AND p.proname = 'publish'",
              PGRES_TUPLES_OK, why, n);
    if (r == NULL)
        goto out;
    int have_fn = PQntuples(r) > 0;
    PQclear(r);
    if (!have_fn && (run(pg, "CREATE SCHEMA IF NOT EXISTS herald", why, n) != 0 ||
                     run(pg, publish_fn, why, n) != 0))
        goto out;
    snprintf(sql, sizeof(sql),
             "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '%s'", f->slot);
    r = query(pg, sql, PGRES_TUPLES_OK, why, n);
    if (r == NULL)
        goto out;
    int have_slot = PQntuples(r) > 0;
    int lost = have_slot && strcmp(PQgetvalue(r, 0, 0), "lost") == 0;
    PQclear(r);
    if (lost) {
        /* Invalidated: PostgreSQL removed WAL it still needed (max_slot_wal_keep_size).
         * Changes were lost; never silently. */
        if (replace_lost_slot(pg, f, why, n) != 0)
            goto out;
        have_slot = 0;
    }
    if (!have_slot) {
        snprintf(sql, sizeof(sql), "CREATE_REPLICATION_SLOT \"%s\" LOGICAL pgoutput", f->slot);
        r = query(pg, sql, PGRES_TUPLES_OK, why, n);
        if (r == NULL)
            goto out;
        PQclear(r);
        log_info("feed_slot_created", "change feed: replication slot %s created", f->slot);
    }
    rc = 0;
out:
    buf_free(&b);
    return rc;
}

/* ---- confirming ---- */

/* Under the lock: the position moves past every transaction wholly answered. */
static void advance(void)
{
    while (F.head && F.head->committed && F.head->remaining == 0) {
        struct txn *t = F.head;
        F.head = t->next;
        if (F.head == NULL)
            F.tail = &F.head;
        if (t->end_lsn > F.confirmed)
            F.confirmed = t->end_lsn;
        free(t);
    }
    if (F.head == NULL && F.cur == NULL && F.received > F.confirmed)
        F.confirmed = F.received; /* nothing in flight: all seen is done */
}

static void on_published(void *ud, int status, const struct engine_pos *pos)
{
    struct txn *t = ud;
    if (status != 0 && status != ENGINE_ERR_NOT_AVAILABLE)
        log_warn("feed_publish_refused",
                 "change feed: a publication was refused by the engine (%d)", status);
    pthread_mutex_lock(&F.lock);
    t->remaining--;
    F.inflight--;
    advance();
    pthread_cond_signal(&F.answered);
    pthread_mutex_unlock(&F.lock);
}

/* ---- changes ---- */

static struct rel *rel_find(uint32_t relid)
{
    for (size_t i = 0; i < F.nrels; i++)
        if (F.rels[i].relid == relid)
            return &F.rels[i];
    return NULL;
}

static const struct feed_table *table_of(const char *schema, size_t sl, const char *name,
                                         size_t nl)
{
    const struct change_feed *f = &F.config->feed;
    for (size_t i = 0; i < f->n_tables; i++)
        if (strlen(f->tables[i].schema) == sl && memcmp(f->tables[i].schema, schema, sl) == 0 &&
            strlen(f->tables[i].name) == nl && memcmp(f->tables[i].name, name, nl) == 0)
            return &f->tables[i];
    return NULL;
}

static int listed(char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return 1;
    return 0;
}

static void on_relation(const struct pgo_msg *m)
{
    struct rel *r = rel_find(m->relid);
    if (r == NULL) {
        if (F.nrels == F.caprels) {
            size_t cap = F.caprels ? F.caprels * 2 : 8;
            struct rel *g = realloc(F.rels, cap * sizeof(*g));
            if (g == NULL)
                return;
            F.rels = g;
            F.caprels = cap;
        }
        r = &F.rels[F.nrels++];
        memset(r, 0, sizeof(*r));
        r->relid = m->relid;
    }
    free(r->cols);
    r->cols = NULL;
    r->ncols = 0;
    r->owner = -1;
    r->table = table_of(m->namespace, m->namespace_len, m->name, m->name_len);
    snprintf(r->name, sizeof(r->name), "%.*s.%.*s", (int)m->namespace_len, m->namespace,
             (int)m->name_len, m->name);
    struct pgo_column cols[MAX_COLUMNS];
    int n = pgo_relation_columns(m, cols, MAX_COLUMNS);
    if (n <= 0 || (r->cols = calloc((size_t)n, sizeof(*r->cols))) == NULL)
        return;
    r->ncols = n;
    for (int i = 0; i < n; i++) {
        struct col *c = &r->cols[i];
        snprintf(c->name, sizeof(c->name), "%.*s", (int)cols[i].name_len, cols[i].name);
        c->type = cols[i].type;
        const struct feed_table *t = r->table;
        c->send = t && (t->n_columns == 0 || listed(t->columns, t->n_columns, c->name)) &&
                  !listed(t->exclude, t->n_exclude, c->name);
        if (t && t->owner_column && strcmp(t->owner_column, c->name) == 0)
            r->owner = i;
    }
}

/* {"col": value, ...} of a tuple's sent columns; an unchanged TOAST value (not in the
 * stream) from the old row when there is one, else left out. */
static void row_json(struct buf *b, const struct rel *r, const struct pgo_tuple *t,
                     const struct pgo_tuple *old)
{
    buf_append_char(b, '{');
    int first = 1;
    for (int i = 0; i < r->ncols && i < (int)t->n; i++) {
        if (!r->cols[i].send)
            continue;
        const struct pgo_value *v = &t->vals[i];
        if (v->kind == 'u') {
            if (old == NULL || i >= (int)old->n || old->vals[i].kind == 'u')
                continue;
            v = &old->vals[i];
        }
        if (!first)
            buf_append_char(b, ',');
        first = 0;
        buf_append_json_str(b, (const uint8_t *)r->cols[i].name, strlen(r->cols[i].name));
        buf_append_char(b, ':');
        pgo_json_value(b, r->cols[i].type, v);
    }
    buf_append_char(b, '}');
}

/* Hand one publication to the hub, counted against the current transaction. */
static void publish(const char *ch, size_t ch_len, const uint8_t *data, size_t len,
                    uint64_t lsn)
{
    const struct ns_opts *ns = config_namespace(F.config, (const uint8_t *)ch, ch_len);
    if (ns == NULL) {
        log_warn("feed_no_namespace", "change feed: %.*s: no such namespace; not published",
                 (int)ch_len, ch);
        return;
    }
    char key[40];
    int kl = snprintf(key, sizeof(key), "pg:%llx", (unsigned long long)lsn);
    pthread_mutex_lock(&F.lock);
    while (F.inflight >= INFLIGHT_MAX && !atomic_load(&F.stop))
        pthread_cond_wait(&F.answered, &F.lock);
    F.inflight++;
    F.cur->remaining++;
    pthread_mutex_unlock(&F.lock);
    metrics_count(METRIC_FEED_CHANGES, 1);
    hub_publish((const uint8_t *)ch, ch_len, ns, data, len, NULL, 0, (const uint8_t *)key,
                (size_t)kl, on_published, F.cur);
}

static const char *op_name(int kind)
{
    switch (kind) {
    case PGO_INSERT:
        return "INSERT";
    case PGO_UPDATE:
        return "UPDATE";
    case PGO_DELETE:
        return "DELETE";
    default:
        return "TRUNCATE";
    }
}

/* "lsn" is the transaction's commit LSN: increasing in commit order (the order of
 * delivery), shared by the rows of one transaction; a change's own position only keys
 * its idempotency. */
static void envelope_tail(struct buf *b)
{
    char lt[24], tt[40];
    pgo_lsn_text(F.cur_lsn, lt);
    pgo_time_text(F.cur_time, tt);
    buf_appendf(b, ",\"lsn\":\"%s\",\"xid\":%u,\"commit_time\":\"%s\"}", lt, F.cur_xid, tt);
}

static void on_change(const struct pgo_msg *m, uint64_t lsn)
{
    const struct rel *r = rel_find(m->relid);
    if (r == NULL || r->table == NULL || F.cur == NULL)
        return;
    struct buf *b = &F.data;
    b->len = 0;
    b->oom = 0;
    buf_append_str(b, "{\"table\":");
    buf_append_json_str(b, (const uint8_t *)r->name, strlen(r->name));
    buf_appendf(b, ",\"op\":\"%s\"", op_name(m->kind));
    const struct pgo_tuple *row = m->kind == PGO_DELETE ? NULL : &m->new_tuple;
    const struct pgo_tuple *old = m->old_kind ? &m->old_tuple : NULL;
    if (row) {
        buf_append_str(b, ",\"row\":");
        row_json(b, r, row, old);
    }
    if (old) {
        buf_append_str(b, ",\"old\":");
        row_json(b, r, old, NULL);
    }
    envelope_tail(b);
    if (b->oom) {
        log_error("feed_out_of_memory", "change feed: %s: out of memory for a change", r->name);
        return;
    }
    char ch[300];
    int n = snprintf(ch, sizeof(ch), "table:%s", r->name);
    publish(ch, (size_t)n, b->p, b->len, lsn);
    /* The owner's channel: from the new row, or the old one for a DELETE. */
    const struct pgo_tuple *src = row ? row : old;
    if (r->owner >= 0 && src && r->owner < (int)src->n) {
        const struct pgo_value *v = &src->vals[r->owner];
        if (v->kind == 'u' && old && r->owner < (int)old->n)
            v = &old->vals[r->owner];
        if (v->kind == 't' && v->len > 0 && v->len < 200 && memchr(v->p, 0, v->len) == NULL) {
            n = snprintf(ch, sizeof(ch), "table:%s#%.*s", r->name, (int)v->len, (const char *)v->p);
            publish(ch, (size_t)n, b->p, b->len, lsn);
        }
    }
}

static void on_truncate(const struct pgo_msg *m, uint64_t lsn)
{
    for (uint32_t i = 0; i < m->nrels; i++) {
        uint32_t relid;
        if (pgo_truncate_relid(m, i, &relid) != 0)
            return;
        const struct rel *r = rel_find(relid);
        if (r == NULL || r->table == NULL || F.cur == NULL)
            continue;
        struct buf *b = &F.data;
        b->len = 0;
        b->oom = 0;
        buf_append_str(b, "{\"table\":");
        buf_append_json_str(b, (const uint8_t *)r->name, strlen(r->name));
        buf_append_str(b, ",\"op\":\"TRUNCATE\"");
        envelope_tail(b);
        char ch[300];
        int n = snprintf(ch, sizeof(ch), "table:%s", r->name);
        if (!b->oom)
            publish(ch, (size_t)n, b->p, b->len, lsn);
    }
}

/* herald.publish(): "<channel>\n<data>". */
static void on_message(const struct pgo_msg *m, uint64_t lsn)
{
    if (m->prefix_len != 6 || memcmp(m->prefix, "herald", 6) != 0)
        return;
    const uint8_t *nl = memchr(m->content, '\n', m->content_len);
    if (nl == NULL || nl == m->content) {
        log_warn("feed_bad_message", "change feed: a herald message without its channel; ignored");
        return;
    }
    size_t cl = (size_t)(nl - m->content);
    if (F.cur == NULL)
        return; /* not transactional: not herald.publish()'s (it emits inside the transaction) */
    publish((const char *)m->content, cl, nl + 1, m->content_len - cl - 1, lsn);
}

static void on_begin(const struct pgo_msg *m)
{
    /* After a reconnect PostgreSQL sends again from the position last confirmed: what
     * this process already handed on is skipped here (a restart or another node relies
     * on the engine refusing an idempotency key it has seen). */
    F.skip = m->lsn <= F.handed;
    if (F.skip)
        return;
    struct txn *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return;
    F.cur_lsn = m->lsn;
    F.cur_xid = m->xid;
    F.cur_time = m->commit_time;
    pthread_mutex_lock(&F.lock);
    *F.tail = t;
    F.tail = &t->next;
    F.cur = t;
    pthread_mutex_unlock(&F.lock);
}

static void on_commit(const struct pgo_msg *m)
{
    if (F.skip) {
        F.skip = 0;
        return;
    }
    if (m->lsn > F.handed)
        F.handed = m->lsn;
    /* herald_feed_seconds_behind: PostgreSQL's commit to its hand-over to the hub. */
    int64_t behind_us = pg_now_since_2000() - F.cur_time;
    metrics_set(METRIC_FEED_BEHIND_MS, behind_us > 0 ? behind_us / 1000 : 0);
    pthread_mutex_lock(&F.lock);
    if (F.cur) {
        F.cur->end_lsn = m->end_lsn;
        F.cur->committed = 1;
        F.cur = NULL;
    }
    advance();
    pthread_mutex_unlock(&F.lock);
}

/* One XLogData payload: a pgoutput message at WAL position lsn. */
static int on_xlog(const uint8_t *p, size_t len, uint64_t lsn)
{
    struct pgo_msg m;
    if (pgo_parse(p, len, &m, F.vals, 2 * MAX_COLUMNS) != 0) {
        log_error("feed_bad_message",
                  "change feed: a pgoutput message herald cannot read (%zu bytes at %llx)", len,
                  (unsigned long long)lsn);
        return -1;
    }
    switch (m.kind) {
    case PGO_BEGIN:
        on_begin(&m);
        break;
    case PGO_COMMIT:
        on_commit(&m);
        break;
    case PGO_RELATION:
        on_relation(&m);
        break;
    case PGO_INSERT:
    case PGO_UPDATE:
    case PGO_DELETE:
        on_change(&m, lsn);
        break;
    case PGO_TRUNCATE:
        on_truncate(&m, lsn);
        break;
    case PGO_MESSAGE:
        on_message(&m, lsn);
        break;
    default:
        break;
    }
    return 0;
}

/* ---- the thread ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Sleep ms unless stopped. */
static void pause_ms(unsigned ms)
{
    struct pollfd p = {F.wake[0], POLLIN, 0};
    poll(&p, 1, (int)ms);
}

static int send_status(PGconn *pg, int reply)
{
    pthread_mutex_lock(&F.lock);
    uint64_t at = F.confirmed;
    uint64_t lag = F.received > F.confirmed ? F.received - F.confirmed : 0;
    int idle = F.head == NULL && F.cur == NULL;
    pthread_mutex_unlock(&F.lock);
    metrics_set(METRIC_FEED_LAG_BYTES, (int64_t)lag);
    if (idle)
        metrics_set(METRIC_FEED_BEHIND_MS, 0); /* nothing waits: not behind */
    uint8_t msg[34];
    size_t n = pg_status_update(msg, at, at, at, pg_now_since_2000(), reply);
    if (PQputCopyData(pg, (const char *)msg, (int)n) != 1 || PQflush(pg) < 0)
        return -1;
    return 0;
}

/* Stream until the connection fails or the feed stops. */
static void stream(PGconn *pg)
{
    uint64_t last_status = 0;
    set_status("%s", "");
    for (;;) {
        if (atomic_load(&F.stop))
            return;
        char *buf = NULL;
        int n = PQgetCopyData(pg, &buf, 1);
        if (n > 0) {
            struct pg_copy cm;
            int rc = pg_copy_parse((const uint8_t *)buf, (size_t)n, &cm);
            if (rc == 0 && cm.kind == 'w') {
                pthread_mutex_lock(&F.lock);
                if (cm.wal_end > F.received)
                    F.received = cm.wal_end;
                pthread_mutex_unlock(&F.lock);
                rc = on_xlog(cm.data, cm.data_len, cm.wal_start);
            } else if (rc == 0 && cm.kind == 'k') {
                pthread_mutex_lock(&F.lock);
                if (cm.wal_end > F.received)
                    F.received = cm.wal_end;
                advance();
                pthread_mutex_unlock(&F.lock);
                if (cm.reply_requested && send_status(pg, 0) != 0)
                    rc = -1;
            }
            PQfreemem(buf);
            if (rc != 0) {
                set_status("the replication stream could not be read");
                return;
            }
        } else if (n == 0) {
            struct pollfd p[2] = {{PQsocket(pg), POLLIN, 0}, {F.wake[0], POLLIN, 0}};
            poll(p, 2, STATUS_EVERY_MS);
            if (PQconsumeInput(pg) != 1) {
                set_status("replication connection lost: %s",
                           first_line(PQerrorMessage(pg)));
                return;
            }
        } else {
            PGresult *r = PQgetResult(pg);
            set_status("replication stream ended: %s",
                       first_line(r && PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r)
                                                                  : PQerrorMessage(pg)));
            PQclear(r);
            return;
        }
        uint64_t now = now_ms();
        if (now - last_status >= STATUS_EVERY_MS) {
            if (send_status(pg, 0) != 0) {
                set_status("replication connection lost while confirming");
                return;
            }
            last_status = now;
        }
    }
}

/* A transaction cut off by a lost connection is read again from its beginning. */
static void drop_partial(void)
{
    pthread_mutex_lock(&F.lock);
    if (F.cur) {
        F.cur->committed = 1;
        F.cur->end_lsn = 0; /* never moves the position */
        F.cur = NULL;
    }
    advance();
    pthread_mutex_unlock(&F.lock);
}

static void *feed_main(void *arg)
{
    const struct config *c = F.config;
    metrics_set_thread_slot(metrics_other_slot()); /* not a loop: the slot for the others */
    unsigned backoff = 0;
    while (!atomic_load(&F.stop)) {
        char why[240] = "";
        unsigned wait = 0;
        PGconn *pg = connect_pg(c, 1);
        if (PQstatus(pg) != CONNECTION_OK) {
            set_status("postgres unreachable: %s", first_line(PQerrorMessage(pg)));
            goto retry;
        }
        PGresult *r = query(pg, "SHOW wal_level", PGRES_TUPLES_OK, why, sizeof(why));
        if (r == NULL) {
            set_status("postgres: %s", why);
            goto retry;
        }
        if (strcmp(PQgetvalue(r, 0, 0), "logical") != 0) {
            set_status("postgres: wal_level is %s; the change feed needs wal_level = logical "
                       "(set it in postgresql.conf and restart PostgreSQL)",
                       PQgetvalue(r, 0, 0));
            PQclear(r);
            wait = RETRY_MAX_MS;
            goto retry;
        }
        PQclear(r);
        int names = check_names(pg, &c->feed, why, sizeof(why));
        if (names != 0) {
            set_status("%s", why);
            wait = RETRY_MAX_MS;
            goto retry;
        }
        if (set_up(pg, &c->feed, why, sizeof(why)) != 0) {
            set_status("postgres: setting up the change feed: %s", why);
            wait = RETRY_MAX_MS;
            goto retry;
        }
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "START_REPLICATION SLOT \"%s\" LOGICAL 0/0 (proto_version '1', "
                 "publication_names '\"%s\"', messages 'true')",
                 c->feed.slot, c->feed.publication);
        r = query(pg, sql, PGRES_COPY_BOTH, why, sizeof(why));
        if (r == NULL) {
            if (strstr(why, "is active for PID")) {
                /* Another node streams the slot: this one stands by. */
                pthread_mutex_lock(&F.lock);
                int was = F.standby;
                F.standby = 1;
                F.status[0] = 0;
                pthread_mutex_unlock(&F.lock);
                if (!was)
                    log_info("feed_standby",
                             "change feed: another node streams slot %s; standing by",
                             c->feed.slot);
                wait = STANDBY_RETRY_MS;
            } else {
                set_status("postgres: %s", why);
            }
            goto retry;
        }
        PQclear(r);
        pthread_mutex_lock(&F.lock);
        F.standby = 0;
        pthread_mutex_unlock(&F.lock);
        log_info("feed_streaming", "change feed: streaming slot %s", c->feed.slot);
        backoff = 0;
        for (size_t i = 0; i < F.nrels; i++)
            free(F.rels[i].cols);
        F.nrels = 0; /* PostgreSQL sends each Relation again on a new stream */
        metrics_set(METRIC_FEED_UP, 1);
        stream(pg);
        metrics_set(METRIC_FEED_UP, 0);
        metrics_count(METRIC_FEED_RECONNECTS, 1);
        drop_partial();
    retry:
        PQfinish(pg);
        if (atomic_load(&F.stop))
            break;
        if (wait == 0) {
            backoff = backoff ? backoff * 2 : RETRY_MIN_MS;
            if (backoff > RETRY_MAX_MS)
                backoff = RETRY_MAX_MS;
            wait = backoff / 2 + (unsigned)rand() % (backoff / 2 + 1);
        }
        pause_ms(wait);
    }
    return NULL;
}

int pg_feed_start(const struct config *c)
{
    if (c->feed.n_tables == 0)
        return 0;
    F.config = c;
    F.tail = &F.head;
    F.vals = calloc(2 * MAX_COLUMNS, sizeof(*F.vals));
    if (F.vals == NULL || pipe(F.wake) != 0)
        return -1;
    pthread_mutex_init(&F.lock, NULL);
    pthread_cond_init(&F.answered, NULL);
    snprintf(F.status, sizeof(F.status), "postgres: connecting");
    if (pthread_create(&F.thread, NULL, feed_main, NULL) != 0)
        return -1;
    atomic_store(&F.running, 1);
    return 0;
}

void pg_feed_stop(void)
{
    if (!atomic_load(&F.running))
        return;
    atomic_store(&F.stop, 1);
    if (write(F.wake[1], "x", 1) < 0) {
        /* the thread sees stop at its next wake-up anyway */
    }
    pthread_mutex_lock(&F.lock);
    pthread_cond_broadcast(&F.answered);
    pthread_mutex_unlock(&F.lock);
    pthread_join(F.thread, NULL);
    atomic_store(&F.running, 0);
    close(F.wake[0]);
    close(F.wake[1]);
    for (size_t i = 0; i < F.nrels; i++)
        free(F.rels[i].cols);
    free(F.rels);
    free(F.vals);
    buf_free(&F.data);
    /* Transactions still answering are freed by nobody: their callbacks may still come
     * from the engine, which closes after this. */
}

int pg_feed_state(char *reason, size_t len)
{
    if (!atomic_load(&F.running))
        return -1;
    pthread_mutex_lock(&F.lock);
    int ok = F.status[0] == 0;
    if (!ok)
        snprintf(reason, len, "%s", F.status);
    pthread_mutex_unlock(&F.lock);
    return ok;
}
