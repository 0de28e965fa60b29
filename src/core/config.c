/* Configuration: defaults, then a JSON file, then HERALD_* variables, then flags; every value
 * checked here so the rest of the server can trust struct config. Not the command line's
 * subcommands (main.c). */
#include "core/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "core/json.h"
#include "core/log.h"

/* A config file is a few kilobytes; the cap only keeps a wrong path (a log, a disk image)
 * from being slurped into memory. */
#define CONFIG_FILE_MAX (1u << 20)
#define KEY_MAX 64

extern char **environ;

int config_load_json(struct config *c, const uint8_t *p, size_t len, char *err, size_t errlen);

enum key_type {
    KEY_LISTEN,
    KEY_STRING,
    KEY_BOOL,
    KEY_UINT,
    KEY_LIST,
    KEY_ENGINE,
    KEY_NS,
    KEY_FEED,
    KEY_LOG
};

struct key {
    const char *name;
    enum key_type type;
    size_t offset; /* of the field in struct config */
    size_t width;  /* KEY_UINT: sizeof the field */
    uint64_t min, max;
};

#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)

static const struct key keys[] = {
    {"listen", KEY_LISTEN, 0, 0, 0, 0},
    {"metrics_listen", KEY_LISTEN, 1, 0, 0, 0}, /* offset 1: the metrics listener */
    {"metrics_key", KEY_STRING, FIELD(metrics_key), 0, 0},
    {"token_hmac_secret", KEY_STRING, FIELD(token_hmac_secret), 0, 0},
    {"api_key", KEY_STRING, FIELD(api_key), 0, 0},
    {"api_keys", KEY_LIST, offsetof(struct config, api_keys), 0, offsetof(struct config, n_api_keys),
     0},
    {"admin_password", KEY_STRING, FIELD(admin_password), 0, 0},
    {"token_rsa_public_key", KEY_STRING, FIELD(token_rsa_public_key), 0, 0},
    {"token_ecdsa_public_key", KEY_STRING, FIELD(token_ecdsa_public_key), 0, 0},
    {"token_jwks_url", KEY_STRING, FIELD(token_jwks_url), 0, 0},
    {"token_audience", KEY_STRING, FIELD(token_audience), 0, 0},
    {"token_issuer", KEY_STRING, FIELD(token_issuer), 0, 0},
    {"token_leeway", KEY_UINT, FIELD(token_leeway), 0, 3600},
    {"allow_query_token", KEY_BOOL, FIELD(allow_query_token), 0, 0},
    {"trusted_proxies", KEY_LIST, offsetof(struct config, trusted_proxies), 0,
     offsetof(struct config, n_trusted_proxies), 0},
    {"tls_cert", KEY_STRING, FIELD(tls_cert), 0, 0},
    {"tls_key", KEY_STRING, FIELD(tls_key), 0, 0},
    {"allow_anonymous", KEY_BOOL, FIELD(allow_anonymous), 0, 0},
    {"client_publish", KEY_BOOL, FIELD(client_publish), 0, 0},
    /* Lists: offset of the char ** field, min the offset of its count. */
    {"allowed_origins", KEY_LIST, offsetof(struct config, allowed_origins), 0,
     offsetof(struct config, n_allowed_origins), 0},
    {"redis_urls", KEY_LIST, offsetof(struct config, redis_urls), 0,
     offsetof(struct config, n_redis_urls), 0},
    {"redis_prefix", KEY_STRING, FIELD(redis_prefix), 0, 0},
    {"redis_tls_ca", KEY_STRING, FIELD(redis_tls_ca), 0, 0},
    {"redis_cluster_urls", KEY_LIST, offsetof(struct config, redis_cluster_urls), 0,
     offsetof(struct config, n_redis_cluster_urls), 0},
    /* Limits keep a typo (an extra zero or three) from turning into unbounded memory. */
    {"max_message_size", KEY_UINT, FIELD(max_message_size), 1, 1u << 30},
    {"max_request_body", KEY_UINT, FIELD(max_request_body), 1, 1u << 30},
    {"threads", KEY_UINT, FIELD(threads), 0, 1024},
    {"ping_interval", KEY_UINT, FIELD(ping_interval), 1, 3600},
    {"client_queue_max", KEY_UINT, FIELD(client_queue_max), 1, 1ull << 40},
    {"recovery_max_publications", KEY_UINT, FIELD(recovery_max_publications), 1, 1000000},
    {"max_channels", KEY_UINT, FIELD(max_channels), 1, 100000000},
    {"presence_ttl", KEY_UINT, FIELD(presence_ttl), 3, 86400},
    {"expired_close_delay", KEY_UINT, FIELD(expired_close_delay), 0, 3600},
    {"max_connections", KEY_UINT, FIELD(max_connections), 0, 100000000},
    {"max_connections_per_ip", KEY_UINT, FIELD(max_connections_per_ip), 0, 100000000},
    {"max_connections_per_user", KEY_UINT, FIELD(max_connections_per_user), 0, 100000000},
    {"connection_rate_per_ip", KEY_UINT, FIELD(connection_rate_per_ip), 0, 1000000},
    {"connection_burst_per_ip", KEY_UINT, FIELD(connection_burst_per_ip), 0, 1000000},
    {"client_command_rate", KEY_UINT, FIELD(client_command_rate), 0, 1000000},
    {"client_command_burst", KEY_UINT, FIELD(client_command_burst), 0, 1000000},
    {"user_publish_rate", KEY_UINT, FIELD(user_publish_rate), 0, 1000000},
    {"user_publish_burst", KEY_UINT, FIELD(user_publish_burst), 0, 1000000},
    {"channel_publish_rate", KEY_UINT, FIELD(channel_publish_rate), 0, 1000000},
    {"channel_publish_burst", KEY_UINT, FIELD(channel_publish_burst), 0, 1000000},
    {"max_subscriptions_per_connection", KEY_UINT, FIELD(max_subscriptions_per_connection), 1,
     1000000},
    {"client_connect_timeout", KEY_UINT, FIELD(client_connect_timeout), 1, 3600},
    {"handshake_timeout", KEY_UINT, FIELD(handshake_timeout), 1, 3600},
    {"max_commands_per_message", KEY_UINT, FIELD(max_commands_per_message), 1, 1000000},
    {"max_request_head", KEY_UINT, FIELD(max_request_head), 1024, 1u << 20},
    {"max_channel_length", KEY_UINT, FIELD(max_channel_length), 1, 65535},
    {"client_queue_total_max", KEY_UINT, FIELD(client_queue_total_max), 1, 1ull << 44},
    {"engine", KEY_ENGINE, 0, 0, 0, 0},
    {"log_format", KEY_LOG, 0, 0, 0, 0},
    {"log_level", KEY_LOG, 0, 0, 0, 0},
    {"namespaces", KEY_NS, 0, 0, 0, 0},
    {"postgres", KEY_STRING, FIELD(postgres), 0, 0},
    {"change_feed", KEY_FEED, 0, 0, 0, 0},
};

#define NS_HISTORY_SIZE_MAX 1000000u
#define NS_HISTORY_TTL_MAX (366u * 24 * 3600)

/* Where a value came from, in precedence order. */
enum level { LEVEL_DEFAULT, LEVEL_FILE, LEVEL_ENV, LEVEL_FLAG };

struct load {
    struct config *c;
    char *err;
    size_t errlen;
    char where[96];                     /* " (in f.json)", " (from HERALD_X)", " (from --x)" */
    enum level level;                   /* of the source being applied */
    enum level client_publish_level;    /* of the top-level client_publish */
    enum level ns_client_publish_level; /* of namespaces."".client_publish, if given */
};

/* One value: a JSON token (file, or JSON text from a flag) or plain text (flag, env). */
struct value {
    const uint8_t *js;
    const jsmntok_t *t;
    int ntok;
    int i;
    const char *text; /* when t == NULL */
};

static int fail(struct load *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct load *l, const char *fmt, ...)
{
    if (l->errlen == 0)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(l->err, l->errlen, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < l->errlen)
        snprintf(l->err + n, l->errlen - (size_t)n, "%s", l->where);
    return -1;
}

static void set_defaults(struct config *c)
{
    memset(c, 0, sizeof(*c));
    strcpy(c->listen_host, "127.0.0.1");
    c->listen_port = 8000;
    c->max_message_size = 65536;
    c->max_request_body = 1048576;
    c->threads = 0;
    c->ping_interval = 25;
    c->client_queue_max = 4194304;
    c->recovery_max_publications = 1000;
    c->max_channels = 1000000;
    c->presence_ttl = 60;
    c->expired_close_delay = 25;
    c->max_subscriptions_per_connection = 512;
    c->client_connect_timeout = 10;
    c->handshake_timeout = 10;
    c->max_commands_per_message = 1000;
    c->max_request_head = 16384;
    c->max_channel_length = 255;
    c->client_queue_total_max = 1ull << 30;
    strcpy(c->engine, "memory");
    c->log_format = LOG_JSON;
    c->log_level = LOG_INFO;
}

static void free_secret(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void free_origins(char **o, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(o[i]);
    free(o);
}

static void free_feed(struct change_feed *f)
{
    for (size_t i = 0; i < f->n_tables; i++) {
        struct feed_table *t = &f->tables[i];
        free(t->schema);
        free(t->name);
        free(t->owner_column);
        free_origins(t->columns, t->n_columns);
        free_origins(t->exclude, t->n_exclude);
    }
    free(f->tables);
    free(f->slot);
    free(f->publication);
    memset(f, 0, sizeof(*f));
}

void config_free(struct config *c)
{
    if (c == NULL)
        return;
    free_secret(c->token_hmac_secret);
    free_secret(c->api_key);
    free_secret(c->metrics_key);
    for (size_t i = 0; i < c->n_api_keys; i++)
        free_secret(c->api_keys[i]);
    free(c->api_keys);
    free_secret(c->admin_password);
    free(c->token_rsa_public_key);
    free(c->token_ecdsa_public_key);
    free(c->token_jwks_url);
    free(c->token_audience);
    free(c->token_issuer);
    free_origins(c->trusted_proxies, c->n_trusted_proxies);
    free(c->tls_cert);
    free(c->tls_key);
    free_origins(c->allowed_origins, c->n_allowed_origins);
    free_origins(c->redis_urls, c->n_redis_urls);
    free_origins(c->redis_cluster_urls, c->n_redis_cluster_urls);
    free(c->redis_prefix);
    free(c->redis_tls_ca);
    free(c->namespaces);
    free_secret(c->postgres);
    free_feed(&c->feed);
    memset(c, 0, sizeof(*c));
}

static const struct key *find_key(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strlen(keys[i].name) == len && memcmp(keys[i].name, name, len) == 0)
            return &keys[i];
    return NULL;
}

/* A JSON string token as a malloc'd C string (unescaped), or NULL with *bad set when it
 * is not a string or holds a NUL. */
static char *tok_strdup(const uint8_t *js, const jsmntok_t *t, int *bad)
{
    *bad = 1;
    if (t->type != JSMN_STRING)
        return NULL;
    size_t n = (size_t)(t->end - t->start);
    char *s = malloc(n + 1);
    if (s == NULL) {
        *bad = 0;
        return NULL;
    }
    memcpy(s, js + t->start, n);
    ssize_t m = json_unescape((uint8_t *)s, n);
    if (m < 0 || memchr(s, '\0', (size_t)m) != NULL) {
        free(s);
        return NULL;
    }
    s[m] = '\0';
    *bad = 0;
    return s;
}

/* The value as a malloc'd string; -1 with the error set. */
static int value_string(struct load *l, const char *key, const struct value *v, char **out)
{
    int bad = 0;
    if (v->t != NULL) {
        *out = tok_strdup(v->js, &v->t[v->i], &bad);
    } else {
        *out = strdup(v->text);
    }
    if (*out == NULL)
        return bad ? fail(l, "%s: expected a string", key) : fail(l, "%s: out of memory", key);
    return 0;
}

static int parse_bool_text(const char *s, int *out)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0) {
        *out = 1;
        return 0;
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0) {
        *out = 0;
        return 0;
    }
    return -1;
}

static int parse_u64_text(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int value_bool(struct load *l, const char *key, const struct value *v, int *out)
{
    int rc = v->t != NULL ? json_tok_bool(v->js, &v->t[v->i], out) : parse_bool_text(v->text, out);
    return rc == 0 ? 0 : fail(l, "%s: expected true or false", key);
}

static int value_uint(struct load *l, const char *key, const struct value *v, uint64_t min,
                      uint64_t max, uint64_t *out)
{
    int rc = v->t != NULL ? json_tok_u64(v->js, &v->t[v->i], out) : parse_u64_text(v->text, out);
    if (rc != 0 || *out < min || *out > max)
        return fail(l, "%s: expected an integer from %llu to %llu", key, (unsigned long long)min,
                    (unsigned long long)max);
    return 0;
}

/* "listen" or "metrics_listen" (which): "host:port". */
static int set_listen(struct load *l, const struct key *k, const struct value *v)
{
    char *s;
    char *dst_host = k->offset ? l->c->metrics_listen_host : l->c->listen_host;
    uint16_t *dst_port = k->offset ? &l->c->metrics_listen_port : &l->c->listen_port;
    if (value_string(l, k->name, v, &s) != 0)
        return -1;
    char *colon = strrchr(s, ':');
    uint64_t port = 0;
    char *host = s;
    int ok = colon != NULL && parse_u64_text(colon + 1, &port) == 0 && port >= 1 && port <= 65535;
    if (ok) {
        *colon = '\0';
        size_t n = strlen(host);
        /* "[::1]:8000": the brackets only delimit an IPv6 address from the port. */
        if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
            host[n - 1] = '\0';
            host++;
            n -= 2;
        }
        ok = n > 0 && n < sizeof(l->c->listen_host) && strpbrk(host, " \t[]") == NULL;
    }
    if (ok) {
        strcpy(dst_host, host);
        *dst_port = (uint16_t)port;
    }
    free(s);
    if (!ok)
        return fail(l, "%s: expected \"host:port\" with a port from 1 to 65535", k->name);
    return 0;
}

static int set_string(struct load *l, const struct key *k, const struct value *v)
{
    char *s;
    if (value_string(l, k->name, v, &s) != 0)
        return -1;
    /* An empty HMAC secret would let anyone sign tokens; an empty API key would match an
     * empty Authorization value. */
    if (s[0] == '\0') {
        free(s);
        return fail(l, "%s: must not be empty", k->name);
    }
    char **field = (char **)((char *)l->c + k->offset);
    free_secret(*field);
    *field = s;
    return 0;
}

static int set_engine(struct load *l, const struct value *v)
{
    char *s;
    if (value_string(l, "engine", v, &s) != 0)
        return -1;
    int rc = 0;
    if (strcmp(s, "memory") == 0)
        strcpy(l->c->engine, s);
    else if (strcmp(s, "redis") == 0)
        strcpy(l->c->engine, s);
    else
        rc = fail(l, "engine: expected \"memory\" or \"redis\"");
    free(s);
    return rc;
}

/* log_format: "json" or "text"; log_level: "debug", "info", "warn" or "error". */
static int set_log(struct load *l, const struct key *k, const struct value *v)
{
    static const char *const formats[] = {"json", "text"};
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    int format = strcmp(k->name, "log_format") == 0;
    const char *const *names = format ? formats : levels;
    unsigned n = format ? 2 : 4;
    char *s;
    if (value_string(l, k->name, v, &s) != 0)
        return -1;
    int rc = -1;
    for (unsigned i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *(format ? &l->c->log_format : &l->c->log_level) = (int)i;
            rc = 0;
        }
    }
    free(s);
    if (rc != 0)
        return format ? fail(l, "log_format: expected \"json\" or \"text\"")
                      : fail(l, "log_level: expected \"debug\", \"info\", \"warn\" or \"error\"");
    return 0;
}

static void replace_list(struct config *c, const struct key *k, char **o, size_t n)
{
    char ***field = (char ***)((char *)c + k->offset);
    size_t *count = (size_t *)((char *)c + k->min);
    free_origins(*field, *count);
    *field = o;
    *count = n;
}

static int list_from_json(struct load *l, const struct key *k, const uint8_t *js,
                          const jsmntok_t *t, int ntok, int i)
{
    if (t[i].type != JSMN_ARRAY)
        return fail(l, "%s: expected an array of strings", k->name);
    size_t n = (size_t)t[i].size;
    char **o = calloc(n ? n : 1, sizeof(*o));
    if (o == NULL)
        return fail(l, "%s: out of memory", k->name);
    int j0 = i + 1;
    for (size_t j = 0; j < n; j++) {
        int bad;
        o[j] = j0 < ntok ? tok_strdup(js, &t[j0], &bad) : NULL;
        if (o[j] == NULL || o[j][0] == '\0') {
            free_origins(o, n);
            return fail(l, "%s: expected an array of non-empty strings", k->name);
        }
        j0 = json_skip(t, ntok, j0);
    }
    replace_list(l->c, k, o, n);
    return 0;
}

/* "https://a.example, https://b.example": the form that is easy to write in a shell. */
static int list_from_text(struct load *l, const struct key *k, const char *s)
{
    size_t cap = 1;
    for (const char *q = s; *q; q++)
        cap += *q == ',';
    char **o = calloc(cap, sizeof(*o));
    if (o == NULL)
        return fail(l, "%s: out of memory", k->name);
    size_t n = 0;
    const char *p = s;
    for (;;) {
        const char *end = strchr(p, ',');
        if (end == NULL)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) {
            o[n] = strndup(a, (size_t)(b - a));
            if (o[n] == NULL) {
                free_origins(o, n);
                return fail(l, "%s: out of memory", k->name);
            }
            n++;
        }
        if (*end == '\0')
            break;
        p = end + 1;
    }
    replace_list(l->c, k, o, n);
    return 0;
}

/* Token k is a key of an object and k + 1 its value: guaranteed by json_tokenize, checked
 * anyway because an out-of-range index here would read past the token array. */
static int member_ok(const jsmntok_t *t, int ntok, int k)
{
    return k + 1 < ntok && t[k].type == JSMN_STRING;
}

static int valid_ns_name(const uint8_t *p, size_t n)
{
    if (n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return 0;
    }
    return 1;
}

static int ns_option(struct load *l, struct ns_opts *ns, const uint8_t *js, const jsmntok_t *t,
                     int ntok, int k)
{
    struct json_span key = json_tok_span(js, &t[k]);
    char name[KEY_MAX + 80];
    snprintf(name, sizeof(name), "namespaces.%s.%.*s", ns->name,
             (int)(key.len < KEY_MAX ? key.len : KEY_MAX), (const char *)key.p);
    struct value v = {js, t, ntok, k + 1, NULL};
    uint64_t u;
    if (json_tok_eq(js, &t[k], "history_size")) {
        if (value_uint(l, name, &v, 0, NS_HISTORY_SIZE_MAX, &u) != 0)
            return -1;
        ns->history_size = (uint32_t)u;
        return 0;
    }
    if (json_tok_eq(js, &t[k], "max_data_size")) {
        if (value_uint(l, name, &v, 0, 1u << 30, &u) != 0)
            return -1;
        ns->max_data_size = (uint32_t)u;
        return 0;
    }
    if (json_tok_eq(js, &t[k], "history_ttl")) {
        if (value_uint(l, name, &v, 0, NS_HISTORY_TTL_MAX, &u) != 0)
            return -1;
        ns->history_ttl = (uint32_t)u;
        return 0;
    }
    int *flag = NULL;
    if (json_tok_eq(js, &t[k], "recover"))
        flag = &ns->recover;
    else if (json_tok_eq(js, &t[k], "presence"))
        flag = &ns->presence;
    else if (json_tok_eq(js, &t[k], "join_leave"))
        flag = &ns->join_leave;
    else if (json_tok_eq(js, &t[k], "client_publish"))
        flag = &ns->client_publish;
    else if (json_tok_eq(js, &t[k], "private"))
        flag = &ns->private_;
    if (flag == NULL)
        return fail(l, "unknown key \"%s\"", name);
    if (flag == &ns->client_publish && ns->name[0] == '\0')
        l->ns_client_publish_level = l->level;
    return value_bool(l, name, &v, flag);
}

/* History without a TTL would never expire and recovery without history has nothing to
 * recover from (Centrifugo refuses both the same way). */
static int ns_check(struct load *l, const struct ns_opts *ns)
{
    if (ns->history_size > 0 && ns->history_ttl == 0)
        return fail(l, "namespaces.%s.history_ttl: must be set when history_size is", ns->name);
    if (ns->history_ttl > 0 && ns->history_size == 0)
        return fail(l, "namespaces.%s.history_size: must be set when history_ttl is", ns->name);
    if (ns->recover && ns->history_size == 0)
        return fail(l, "namespaces.%s.recover: needs history_size and history_ttl", ns->name);
    return 0;
}

static int namespaces_from_json(struct load *l, const uint8_t *js, const jsmntok_t *t, int ntok,
                                int i)
{
    if (t[i].type != JSMN_OBJECT)
        return fail(l, "namespaces: expected an object keyed by namespace name");
    size_t n = (size_t)t[i].size;
    struct ns_opts *ns = calloc(n ? n : 1, sizeof(*ns));
    if (ns == NULL)
        return fail(l, "namespaces: out of memory");
    enum level saved_level = l->ns_client_publish_level;
    l->ns_client_publish_level = LEVEL_DEFAULT;
    int k = i + 1;
    for (size_t j = 0; j < n; j++) {
        if (!member_ok(t, ntok, k)) {
            fail(l, "namespaces: expected an object keyed by namespace name");
            goto error;
        }
        struct json_span name = json_tok_span(js, &t[k]);
        if (!valid_ns_name(name.p, name.len)) {
            fail(l, "namespaces: bad name \"%.*s\" (expected 1 to 63 of A-Z a-z 0-9 _ . -)",
                 (int)(name.len < KEY_MAX ? name.len : KEY_MAX), (const char *)name.p);
            goto error;
        }
        memcpy(ns[j].name, name.p, name.len);
        ns[j].name[name.len] = '\0';
        for (size_t q = 0; q < j; q++) {
            if (strcmp(ns[q].name, ns[j].name) == 0) {
                fail(l, "namespaces: duplicate namespace \"%s\"", ns[j].name);
                goto error;
            }
        }
        int obj = k + 1;
        if (t[obj].type != JSMN_OBJECT) {
            fail(l, "namespaces.%s: expected an object", ns[j].name);
            goto error;
        }
        int opt = obj + 1;
        for (int m = 0; m < t[obj].size; m++) {
            if (!member_ok(t, ntok, opt)) {
                fail(l, "namespaces.%s: expected an object", ns[j].name);
                goto error;
            }
            if (ns_option(l, &ns[j], js, t, ntok, opt) != 0)
                goto error;
            opt = json_skip(t, ntok, opt + 1);
        }
        if (ns_check(l, &ns[j]) != 0)
            goto error;
        k = opt;
    }
    free(l->c->namespaces);
    l->c->namespaces = ns;
    l->c->n_namespaces = n;
    return 0;
error:
    l->ns_client_publish_level = saved_level;
    free(ns);
    return -1;
}

/* A PostgreSQL name as herald accepts it in the change feed: letters, digits, '_' and '$'
 * (not first), at most 63 bytes. herald quotes every name it writes into SQL. */
static int valid_pg_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || (s[0] >= '0' && s[0] <= '9') || s[0] == '$')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '$'))
            return 0;
    }
    return 1;
}

/* A list of names (columns, exclude_columns) at token i into *out. */
static int feed_names(struct load *l, const char *what, const uint8_t *js, const jsmntok_t *t,
                      int ntok, int i, char ***out, size_t *n_out)
{
    if (t[i].type != JSMN_ARRAY)
        return fail(l, "%s: expected an array of column names", what);
    size_t n = (size_t)t[i].size;
    char **o = calloc(n ? n : 1, sizeof(*o));
    if (o == NULL)
        return fail(l, "%s: out of memory", what);
    int j0 = i + 1;
    for (size_t j = 0; j < n; j++) {
        int bad;
        o[j] = j0 < ntok ? tok_strdup(js, &t[j0], &bad) : NULL;
        if (o[j] == NULL || !valid_pg_name(o[j])) {
            int shown = o[j] != NULL;
            fail(l, "%s: %s%s%s (expected names of letters, digits, _ and $)", what,
                 shown ? "bad column name \"" : "expected strings", shown ? o[j] : "",
                 shown ? "\"" : "");
            free_origins(o, n);
            return -1;
        }
        j0 = json_skip(t, ntok, j0);
    }
    free_origins(*out, *n_out);
    *out = o;
    *n_out = n;
    return 0;
}

static int feed_table(struct load *l, struct feed_table *ft, size_t index, const uint8_t *js,
                      const jsmntok_t *t, int ntok, int i)
{
    char what[96];
    snprintf(what, sizeof(what), "change_feed.tables[%zu]", index);
    if (t[i].type != JSMN_OBJECT)
        return fail(l, "%s: expected an object {\"table\": \"schema.name\", ...}", what);
    int k = i + 1;
    for (int m = 0; m < t[i].size; m++) {
        if (!member_ok(t, ntok, k))
            return fail(l, "%s: expected an object", what);
        char name[160];
        struct json_span key = json_tok_span(js, &t[k]);
        snprintf(name, sizeof(name), "%s.%.*s", what, (int)(key.len < KEY_MAX ? key.len : KEY_MAX),
                 (const char *)key.p);
        struct value v = {js, t, ntok, k + 1, NULL};
        if (json_tok_eq(js, &t[k], "table")) {
            char *s;
            if (value_string(l, name, &v, &s) != 0)
                return -1;
            char *dot = strchr(s, '.');
            free(ft->schema);
            free(ft->name);
            ft->schema = strndup(dot ? s : "public", dot ? (size_t)(dot - s) : 6);
            ft->name = strdup(dot ? dot + 1 : s);
            free(s);
            if (ft->schema == NULL || ft->name == NULL)
                return fail(l, "%s: out of memory", name);
            if (!valid_pg_name(ft->schema) || !valid_pg_name(ft->name))
                return fail(l, "%s: expected \"schema.table\" of letters, digits, _ and $", name);
        } else if (json_tok_eq(js, &t[k], "owner_column")) {
            char *s;
            if (value_string(l, name, &v, &s) != 0)
                return -1;
            free(ft->owner_column);
            ft->owner_column = s;
            if (!valid_pg_name(s))
                return fail(l, "%s: bad column name \"%s\"", name, s);
        } else if (json_tok_eq(js, &t[k], "columns")) {
            if (feed_names(l, name, js, t, ntok, k + 1, &ft->columns, &ft->n_columns) != 0)
                return -1;
            if (ft->n_columns == 0)
                return fail(l, "%s: leave it out for every column", name);
        } else if (json_tok_eq(js, &t[k], "exclude_columns")) {
            if (feed_names(l, name, js, t, ntok, k + 1, &ft->exclude, &ft->n_exclude) != 0)
                return -1;
        } else {
            return fail(l, "unknown key \"%s\"", name);
        }
        k = json_skip(t, ntok, k + 1);
    }
    if (ft->name == NULL)
        return fail(l, "%s.table: missing", what);
    return 0;
}

static int feed_from_json(struct load *l, const uint8_t *js, const jsmntok_t *t, int ntok, int i)
{
    if (t[i].type != JSMN_OBJECT)
        return fail(l, "change_feed: expected an object {\"slot\", \"tables\": [...]}");
    struct change_feed f;
    memset(&f, 0, sizeof(f));
    int k = i + 1;
    for (int m = 0; m < t[i].size; m++) {
        if (!member_ok(t, ntok, k)) {
            fail(l, "change_feed: expected an object");
            goto error;
        }
        struct value v = {js, t, ntok, k + 1, NULL};
        if (json_tok_eq(js, &t[k], "slot") || json_tok_eq(js, &t[k], "publication")) {
            int slot = json_tok_eq(js, &t[k], "slot");
            char **field = slot ? &f.slot : &f.publication;
            const char *name = slot ? "change_feed.slot" : "change_feed.publication";
            free(*field);
            *field = NULL;
            if (value_string(l, name, &v, field) != 0)
                goto error;
            /* A slot's name: lower case letters, digits and '_' (PostgreSQL's rule). */
            int ok = valid_pg_name(*field);
            for (const char *q = *field; slot && ok && *q; q++)
                ok = (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '_';
            if (!ok) {
                fail(l, "%s: expected 1 to 63 of %s", name, slot ? "a-z 0-9 _" : "A-Z a-z 0-9 _ $");
                goto error;
            }
        } else if (json_tok_eq(js, &t[k], "tables")) {
            int a = k + 1;
            if (t[a].type != JSMN_ARRAY || t[a].size == 0) {
                fail(l, "change_feed.tables: expected a non-empty array of tables");
                goto error;
            }
            for (size_t q = 0; q < f.n_tables; q++) {
                free(f.tables[q].schema);
                free(f.tables[q].name);
            }
            free(f.tables);
            f.n_tables = (size_t)t[a].size;
            f.tables = calloc(f.n_tables, sizeof(*f.tables));
            if (f.tables == NULL) {
                f.n_tables = 0;
                fail(l, "change_feed: out of memory");
                goto error;
            }
            int e = a + 1;
            for (size_t q = 0; q < f.n_tables; q++) {
                if (e >= ntok || feed_table(l, &f.tables[q], q, js, t, ntok, e) != 0) {
                    if (e >= ntok)
                        fail(l, "change_feed.tables: not valid JSON");
                    goto error;
                }
                for (size_t r = 0; r < q; r++) {
                    if (strcmp(f.tables[r].schema, f.tables[q].schema) == 0 &&
                        strcmp(f.tables[r].name, f.tables[q].name) == 0) {
                        fail(l, "change_feed.tables: %s.%s twice", f.tables[q].schema,
                             f.tables[q].name);
                        goto error;
                    }
                }
                e = json_skip(t, ntok, e);
            }
        } else {
            struct json_span key = json_tok_span(js, &t[k]);
            fail(l, "unknown key \"change_feed.%.*s\"", (int)(key.len < KEY_MAX ? key.len : KEY_MAX),
                 (const char *)key.p);
            goto error;
        }
        k = json_skip(t, ntok, k + 1);
    }
    if (f.n_tables == 0) {
        fail(l, "change_feed.tables: expected a non-empty array of tables");
        goto error;
    }
    if (f.slot == NULL)
        f.slot = strdup("herald");
    if (f.publication == NULL)
        f.publication = strdup("herald");
    if (f.slot == NULL || f.publication == NULL) {
        fail(l, "change_feed: out of memory");
        goto error;
    }
    free_feed(&l->c->feed);
    l->c->feed = f;
    return 0;
error:
    free_feed(&f);
    return -1;
}

/* allowed_origins and namespaces given as text (flag or environment) hold JSON. */
static int json_text(struct load *l, const struct key *k, const char *s)
{
    size_t len = strlen(s);
    unsigned max_tok = (unsigned)(len / 2 + 2);
    jsmntok_t *t = len < CONFIG_FILE_MAX ? malloc(max_tok * sizeof(*t)) : NULL;
    if (t == NULL)
        return fail(l, "%s: value too large", k->name);
    int ntok = json_tokenize((const uint8_t *)s, len, t, max_tok);
    int rc;
    if (ntok <= 0)
        rc = fail(l, "%s: not valid JSON", k->name);
    else if (k->type == KEY_NS)
        rc = namespaces_from_json(l, (const uint8_t *)s, t, ntok, 0);
    else if (k->type == KEY_FEED)
        rc = feed_from_json(l, (const uint8_t *)s, t, ntok, 0);
    else
        rc = list_from_json(l, k, (const uint8_t *)s, t, ntok, 0);
    free(t);
    return rc;
}

static int set_key(struct load *l, const struct key *k, const struct value *v)
{
    uint64_t u;
    switch (k->type) {
    case KEY_LISTEN:
        return set_listen(l, k, v);
    case KEY_STRING:
        return set_string(l, k, v);
    case KEY_ENGINE:
        return set_engine(l, v);
    case KEY_LOG:
        return set_log(l, k, v);
    case KEY_BOOL:
        if (value_bool(l, k->name, v, (int *)((char *)l->c + k->offset)) != 0)
            return -1;
        if (strcmp(k->name, "client_publish") == 0)
            l->client_publish_level = l->level;
        return 0;
    case KEY_UINT:
        if (value_uint(l, k->name, v, k->min, k->max, &u) != 0)
            return -1;
        if (k->width == sizeof(uint64_t))
            *(uint64_t *)((char *)l->c + k->offset) = u;
        else
            *(unsigned *)((char *)l->c + k->offset) = (unsigned)u;
        return 0;
    case KEY_LIST:
        if (v->t != NULL)
            return list_from_json(l, k, v->js, v->t, v->ntok, v->i);
        const char *s = v->text;
        while (*s == ' ' || *s == '\t' || *s == '\n')
            s++;
        return *s == '[' ? json_text(l, k, s) : list_from_text(l, k, s);
    case KEY_NS:
        if (v->t != NULL)
            return namespaces_from_json(l, v->js, v->t, v->ntok, v->i);
        return json_text(l, k, v->text);
    case KEY_FEED:
        if (v->t != NULL)
            return feed_from_json(l, v->js, v->t, v->ntok, v->i);
        return json_text(l, k, v->text);
    }
    return -1;
}

static int apply_json(struct load *l, const uint8_t *p, size_t len)
{
    if (len == 0 || len > CONFIG_FILE_MAX)
        return fail(l, "config: expected a JSON object of at most 1 MiB");
    unsigned max_tok = (unsigned)(len / 2 + 2);
    jsmntok_t *t = malloc(max_tok * sizeof(*t));
    if (t == NULL)
        return fail(l, "config: out of memory");
    int ntok = json_tokenize(p, len, t, max_tok);
    int rc = 0;
    if (ntok <= 0) {
        rc = fail(l, "config: not valid JSON");
    } else if (t[0].type != JSMN_OBJECT) {
        rc = fail(l, "config: expected a JSON object");
    }
    int k = 1;
    for (int m = 0; rc == 0 && m < t[0].size; m++) {
        if (!member_ok(t, ntok, k)) {
            rc = fail(l, "config: not valid JSON");
            break;
        }
        struct json_span name = json_tok_span(p, &t[k]);
        const struct key *key = find_key((const char *)name.p, name.len);
        if (key == NULL) {
            rc = fail(l, "unknown key \"%.*s\"", (int)(name.len < KEY_MAX ? name.len : KEY_MAX),
                      (const char *)name.p);
            break;
        }
        /* A repeated key is almost always an edit gone wrong; refuse rather than guess. */
        for (int q = 1; q < k; q = json_skip(t, ntok, q + 1)) {
            if (json_tok_eq(p, &t[q], key->name)) {
                rc = fail(l, "duplicate key \"%s\"", key->name);
                break;
            }
        }
        struct value v = {p, t, ntok, k + 1, NULL};
        if (rc == 0)
            rc = set_key(l, key, &v);
        k = json_skip(t, ntok, k + 1);
    }
    free(t);
    return rc;
}

static int apply_file(struct load *l, const char *path)
{
    snprintf(l->where, sizeof(l->where), " (in %.80s)", path);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        l->where[0] = '\0';
        return fail(l, "config: cannot open %s: %s", path, strerror(errno));
    }
    uint8_t *p = malloc(CONFIG_FILE_MAX + 1);
    size_t n = p != NULL ? fread(p, 1, CONFIG_FILE_MAX + 1, f) : 0;
    int rc;
    if (p == NULL)
        rc = fail(l, "config: out of memory");
    else if (ferror(f))
        rc = fail(l, "config: cannot read %s", path);
    else if (n > CONFIG_FILE_MAX)
        rc = fail(l, "config: %s is larger than 1 MiB", path);
    else
        rc = apply_json(l, p, n);
    fclose(f);
    free(p);
    return rc;
}

/* "allow-anonymous" -> "allow_anonymous"; -1 when too long to be a key. */
static int normalize(const char *s, size_t n, char *out)
{
    if (n >= KEY_MAX)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = s[i] == '-' ? '_' : s[i];
    out[n] = '\0';
    return 0;
}

/* Environment: HERALD_<KEY>. Unknown HERALD_ variables are refused like unknown keys, so a
 * misspelt HERALD_API_KEYS does not silently leave the API without its key. HERALD_CONFIG
 * names the file (a --config flag wins). */
static int apply_env(struct load *l, int apply, const char **config_path)
{
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, "HERALD_", 7) != 0)
            continue;
        const char *name = *e + 7;
        const char *eq = strchr(name, '=');
        if (eq == NULL)
            continue;
        char key[KEY_MAX];
        size_t n = (size_t)(eq - name);
        int bad = n >= KEY_MAX;
        for (size_t i = 0; !bad && i < n; i++) {
            char ch = name[i];
            if (ch >= 'a' && ch <= 'z')
                bad = 1;
            key[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
        }
        if (!bad)
            key[n] = '\0';
        snprintf(l->where, sizeof(l->where), " (from HERALD_%.*s)", (int)(n < 60 ? n : 60), name);
        if (!bad && strcmp(key, "config") == 0) {
            if (*config_path == NULL)
                *config_path = eq + 1;
            continue;
        }
        const struct key *k = bad ? NULL : find_key(key, n);
        if (k == NULL)
            return fail(l, "unknown key \"%.*s\"", (int)(n < 60 ? n : 60), bad ? name : key);
        if (!apply)
            continue;
        struct value v = {NULL, NULL, 0, 0, eq + 1};
        if (set_key(l, k, &v) != 0)
            return -1;
    }
    return 0;
}

/* Flags: --key value, --key=value; a boolean flag alone means true. With apply == 0 only
 * checks the syntax and finds --config. */
static int apply_flags(struct load *l, int argc, char **argv, int apply, const char **config_path)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        l->where[0] = '\0';
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0')
            return fail(l, "unexpected argument \"%.60s\"", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        char key[KEY_MAX];
        snprintf(l->where, sizeof(l->where), " (from --%.*s)", (int)(n < 60 ? n : 60), name);
        if (normalize(name, n, key) != 0)
            return fail(l, "unknown key \"%.60s\"", name);
        const struct key *k = find_key(key, n);
        int is_config = strcmp(key, "config") == 0;
        if (k == NULL && !is_config)
            return fail(l, "unknown key \"%s\"", key);
        const char *value = eq ? eq + 1 : NULL;
        if (value == NULL && (k == NULL || k->type != KEY_BOOL)) {
            if (i + 1 >= argc)
                return fail(l, "%s: missing value", key);
            value = argv[++i];
        } else if (value == NULL) {
            if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
                value = argv[++i];
            else
                value = "true";
        }
        if (is_config) {
            *config_path = value;
            continue;
        }
        if (!apply)
            continue;
        struct value v = {NULL, NULL, 0, 0, value};
        if (set_key(l, k, &v) != 0)
            return -1;
    }
    return 0;
}

/* namespaces[0] is the default namespace "": created when not configured, moved to the
 * front when it was. Its client_publish comes from the top-level key unless the namespace
 * set it from a source of at least the same precedence. */
static int finish(struct load *l)
{
    struct config *c = l->c;
    size_t d = 0;
    while (d < c->n_namespaces && c->namespaces[d].name[0] != '\0')
        d++;
    if (d == c->n_namespaces) {
        struct ns_opts *ns = realloc(c->namespaces, (c->n_namespaces + 1) * sizeof(*ns));
        if (ns == NULL)
            return fail(l, "namespaces: out of memory");
        memset(&ns[c->n_namespaces], 0, sizeof(*ns));
        c->namespaces = ns;
        c->n_namespaces++;
        l->ns_client_publish_level = LEVEL_DEFAULT;
    }
    if (d != 0) {
        struct ns_opts def = c->namespaces[d];
        memmove(&c->namespaces[1], &c->namespaces[0], d * sizeof(def));
        c->namespaces[0] = def;
    }
    if (l->ns_client_publish_level == LEVEL_DEFAULT ||
        l->client_publish_level > l->ns_client_publish_level)
        c->namespaces[0].client_publish = c->client_publish;
    c->client_publish = c->namespaces[0].client_publish;
    char red[300]; /* a URL named in a message, without its password */
    for (size_t i = 0; i < c->n_redis_urls; i++) {
        if (strncmp(c->redis_urls[i], "redis://", 8) != 0 &&
            strncmp(c->redis_urls[i], "rediss://", 9) != 0)
            return fail(l, "redis_urls: %s: expected redis[s]://[user:password@]host:port[/db]",
                        log_redact_url(c->redis_urls[i], red, sizeof(red)));
    }
    if (c->n_redis_urls && c->n_redis_cluster_urls)
        return fail(l, "redis_cluster_urls: either redis_urls (independent instances) or "
                       "redis_cluster_urls (one Redis Cluster), not both");
    for (size_t i = 0; i < c->n_redis_cluster_urls; i++) {
        const char *u = c->redis_cluster_urls[i];
        int tls = strncmp(u, "rediss://", 9) == 0;
        if (!tls && strncmp(u, "redis://", 8) != 0)
            return fail(l, "redis_cluster_urls: %s: expected redis[s]://[user:password@]host:port",
                        log_redact_url(u, red, sizeof(red)));
        if (tls != (strncmp(c->redis_cluster_urls[0], "rediss://", 9) == 0))
            return fail(l, "redis_cluster_urls: %s: every seed redis:// or every seed rediss://",
                        log_redact_url(u, red, sizeof(red)));
        const char *host = strrchr(u, '@');
        const char *slash = strchr(host ? host : u + 8 + tls, '/');
        if (slash && slash[1] && strcmp(slash, "/0") != 0)
            return fail(l, "redis_cluster_urls: %s: a Redis Cluster has database 0 only",
                        log_redact_url(u, red, sizeof(red)));
    }
    if ((c->tls_cert == NULL) != (c->tls_key == NULL))
        return fail(l, "%s: tls_cert and tls_key go together", c->tls_cert ? "tls_key" : "tls_cert");
    if (c->feed.n_tables && c->postgres == NULL)
        return fail(l, "change_feed: needs postgres (a libpq connection string)");
    if (c->feed.n_tables && config_namespace(c, (const uint8_t *)"table:x", 7) == NULL)
        return fail(l, "change_feed: needs a namespace \"table\" in namespaces (its options, "
                       "history and recovery, apply to the change channels)");
    if (strcmp(c->engine, "redis") == 0 && c->n_redis_urls == 0 && c->n_redis_cluster_urls == 0)
        return fail(l, "redis_urls: engine redis needs at least one redis:// URL "
                       "(or redis_cluster_urls: the seed nodes of a Redis Cluster)");
    return 0;
}

static void load_init(struct load *l, struct config *c, char *err, size_t errlen)
{
    memset(l, 0, sizeof(*l));
    l->c = c;
    l->err = err;
    l->errlen = errlen;
    if (errlen > 0)
        err[0] = '\0';
    set_defaults(c);
}

int config_load(struct config *c, int argc, char **argv, char *err, size_t errlen)
{
    struct load l;
    const char *path = NULL;
    load_init(&l, c, err, errlen);
    int rc = apply_flags(&l, argc, argv, 0, &path);
    if (rc == 0)
        rc = apply_env(&l, 0, &path);
    if (rc == 0 && path != NULL) {
        l.level = LEVEL_FILE;
        rc = apply_file(&l, path);
    }
    if (rc == 0) {
        l.level = LEVEL_ENV;
        rc = apply_env(&l, 1, &path);
    }
    if (rc == 0) {
        l.level = LEVEL_FLAG;
        rc = apply_flags(&l, argc, argv, 1, &path);
    }
    if (rc == 0) {
        l.where[0] = '\0';
        rc = finish(&l);
    }
    if (rc != 0)
        config_free(c);
    return rc;
}

/* The file stage alone, from a buffer: for the fuzz target (tests/fuzz/fuzz_config.c). */
int config_load_json(struct config *c, const uint8_t *p, size_t len, char *err, size_t errlen)
{
    struct load l;
    load_init(&l, c, err, errlen);
    l.level = LEVEL_FILE;
    int rc = apply_json(&l, p, len);
    if (rc == 0)
        rc = finish(&l);
    if (rc != 0)
        config_free(c);
    return rc;
}

const struct ns_opts *config_namespace(const struct config *c, const uint8_t *channel, size_t len)
{
    const uint8_t *colon = len ? memchr(channel, ':', len) : NULL;
    size_t n = colon ? (size_t)(colon - channel) : 0;
    for (size_t i = 0; i < c->n_namespaces; i++) {
        const struct ns_opts *ns = &c->namespaces[i];
        if (strlen(ns->name) == n && memcmp(ns->name, channel, n) == 0)
            return ns;
    }
    return NULL;
}

static int random_hex(char out[65])
{
    uint8_t b[32];
    if (RAND_bytes(b, sizeof(b)) != 1)
        return -1;
    for (size_t i = 0; i < sizeof(b); i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    OPENSSL_cleanse(b, sizeof(b));
    return 0;
}

int config_generate(FILE *out)
{
    char secret[65], api_key[65];
    if (random_hex(secret) != 0 || random_hex(api_key) != 0)
        return -1;
    fprintf(out,
            "{\n"
            "  \"listen\": \"127.0.0.1:8000\",\n"
            "  \"token_hmac_secret\": \"%s\",\n"
            "  \"api_key\": \"%s\",\n"
            "  \"allow_anonymous\": false,\n"
            "  \"client_publish\": false,\n"
            "  \"allowed_origins\": [],\n"
            "  \"max_message_size\": 65536,\n"
            "  \"namespaces\": {\n"
            "    \"\": {\n"
            "      \"history_size\": 0,\n"
            "      \"history_ttl\": 0,\n"
            "      \"recover\": false,\n"
            "      \"presence\": false,\n"
            "      \"join_leave\": false,\n"
            "      \"client_publish\": false,\n"
            "      \"private\": false\n"
            "    },\n"
            "    \"chat\": {\n"
            "      \"history_size\": 100,\n"
            "      \"history_ttl\": 300,\n"
            "      \"recover\": true,\n"
            "      \"presence\": true,\n"
            "      \"join_leave\": true\n"
            "    }\n"
            "  }\n"
            "}\n",
            secret, api_key);
    OPENSSL_cleanse(secret, sizeof(secret));
    OPENSSL_cleanse(api_key, sizeof(api_key));
    return fflush(out) == 0 && !ferror(out) ? 0 : -1;
}
