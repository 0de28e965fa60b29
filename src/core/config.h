/* Configuration: one JSON file (--config FILE), every key also settable by a flag
 * (--key value, or --key=value; '-' and '_' are interchangeable) and by the
 * environment (HERALD_KEY, upper case). Precedence: flag > environment > file >
 * default. Unknown keys and bad values are refused with a message naming the key. */
#ifndef HERALD_CORE_CONFIG_H
#define HERALD_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Options of one channel namespace (config key "namespaces", an object keyed by
 * namespace name; "" is the default namespace of channels without ':'). */
struct ns_opts {
    char name[64];
    uint32_t history_size; /* publications kept; 0 = no history */
    uint32_t history_ttl;  /* seconds a channel's history is kept after its last publication */
    int recover;           /* subscribers may recover from history */
    int presence;          /* presence kept */
    int join_leave;        /* join/leave pushes */
    int client_publish;    /* subscribers may publish */
    int private_;          /* key "private": subscribing needs a subscription token */
    uint32_t max_data_size; /* largest publication data in bytes; 0: max_message_size bounds it */
};

/* One table of the change feed ("change_feed": {"tables": [...]}). */
struct feed_table {
    char *schema, *name;  /* "table": "schema.name" (no dot: schema "public") */
    char *owner_column;   /* its value names the user of table:<schema>.<name>#<owner>; or NULL */
    char **columns;       /* allow-list; n_columns == 0: every column */
    size_t n_columns;
    char **exclude;       /* "exclude_columns": never sent */
    size_t n_exclude;
};

/* The PostgreSQL change feed ("change_feed"), with "postgres" the connection string. */
struct change_feed {
    char *slot;        /* logical replication slot, default "herald" */
    char *publication; /* default "herald" */
    struct feed_table *tables;
    size_t n_tables;
};

struct config {
    char listen_host[64]; /* "listen": "host:port", default "127.0.0.1:8000" */
    uint16_t listen_port;
    /* "metrics_listen": "host:port", a listener of its own serving /metrics only (plain
     * HTTP); port 0: unset, /metrics is on the main listener. */
    char metrics_listen_host[64];
    uint16_t metrics_listen_port;
    char *metrics_key; /* when set, /metrics needs it (Bearer or X-API-Key); NULL: open */
    char *token_hmac_secret; /* HS256 secret for connection/subscription tokens; NULL if unset */
    char *token_rsa_public_key;   /* PEM: RS256/384/512 and PS256 tokens; NULL if unset */
    char *token_ecdsa_public_key; /* PEM: ES256/384 tokens; NULL if unset */
    char *token_jwks_url;         /* JWKS over http(s): keys chosen by the token's kid */
    char *token_audience;         /* when set, a token's aud must name it */
    char *token_issuer;           /* when set, a token's iss must equal it */
    unsigned token_leeway;        /* seconds of clock skew allowed for exp, nbf, iat; default 0 */
    int allow_query_token;        /* a connection token in the URL query (?token=) is accepted */
    char *api_key;           /* server API key; NULL if unset (then the API answers 401) */
    char **api_keys;         /* more valid API keys, for rotation without downtime */
    size_t n_api_keys;
    char *admin_password;   /* HTTP Basic password of the status page /status; NULL if unset */
    int allow_anonymous;     /* connect without token (default false) */
    int client_publish;      /* default namespace option, default false */
    char **allowed_origins;  /* exact Origin values allowed; n == 0: no check */
    size_t n_allowed_origins;
    uint64_t max_message_size; /* WebSocket message/frame payload limit, default 65536 */
    uint64_t max_request_body; /* HTTP API body limit, default 1048576 ("max_request_body") */
    unsigned threads;          /* event loops; 0 = number of cores ("threads") */
    unsigned ping_interval;    /* seconds between server pings, default 25 ("ping_interval") */
    uint64_t client_queue_max; /* bytes queued to a client before 3008, default 4194304
                                  ("client_queue_max") */
    unsigned recovery_max_publications; /* most publications a recovery returns, default 1000 */
    unsigned presence_ttl; /* seconds a node's presence lives in Redis unless refreshed (it is,
                              every third of it, while the connection lives); default 60 */
    unsigned max_channels; /* channels holding state (subscribers, history, presence) on this
                              node; past it new channels get error 106; default 1000000 */
    unsigned expired_close_delay; /* seconds past a token's exp before 3005/3006, default 25 */
    /* Limits (0 = no limit unless said otherwise). */
    unsigned max_connections;          /* on this node; past it HTTP 503 at the handshake */
    unsigned max_connections_per_ip;   /* across nodes on Redis */
    unsigned max_connections_per_user; /* across nodes on Redis; past it 3504 */
    unsigned connection_rate_per_ip;   /* new connections per second per IP */
    unsigned connection_burst_per_ip;  /* 0: the rate */
    unsigned client_command_rate;      /* commands per second per connection: 111, then 3013 */
    unsigned client_command_burst;     /* 0: the rate */
    unsigned user_publish_rate;        /* client publishes per second per user (111) */
    unsigned user_publish_burst;
    unsigned channel_publish_rate;     /* client publishes per second per channel (111) */
    unsigned channel_publish_burst;
    unsigned max_subscriptions_per_connection; /* error 106 past it; default 512 */
    unsigned client_connect_timeout;   /* seconds to send connect after the upgrade; default 10 */
    unsigned handshake_timeout;        /* seconds for an HTTP request head; default 10 */
    unsigned max_commands_per_message; /* commands in one WebSocket message; default 1000 */
    unsigned max_request_head;         /* HTTP request head bytes; default 16384 */
    unsigned max_channel_length;       /* channel name bytes; default 255 */
    uint64_t client_queue_total_max;   /* bytes queued to all clients of this node before the
                                          slowest are disconnected (3008); default 1 GiB */
    char **trusted_proxies;            /* CIDRs whose X-Forwarded-For / X-Real-IP are believed */
    size_t n_trusted_proxies;
    char *tls_cert, *tls_key;          /* PEM files: TLS on the listener, reloaded on SIGHUP */
    int log_format;                    /* LOG_JSON (default) or LOG_TEXT (core/log.h) */
    int log_level;                     /* the least level logged: LOG_INFO by default */
    char engine[16];              /* "memory" (default) or "redis" */
    char **redis_urls; /* redis[s]://[user:password@]host:port[/db], one per shard */
    size_t n_redis_urls;
    char **redis_cluster_urls; /* seed nodes of one Redis Cluster */
    size_t n_redis_cluster_urls;
    char *redis_prefix; /* prefix of every key and pub/sub channel; NULL: "herald" */
    char *redis_tls_ca; /* CA file that rediss:// servers' certificates are checked against;
                           NULL: the system's trusted CAs */
    struct ns_opts *namespaces;   /* namespaces[0] is always the default namespace "" */
    size_t n_namespaces;
    char *postgres; /* libpq connection string; NULL: no PostgreSQL */
    struct change_feed feed; /* feed.n_tables == 0: no change feed */
};

/* Fill c from defaults, then the file named by --config (if any), then HERALD_*
 * variables, then flags in argv[0..argc) (argv excludes the program and
 * subcommand). On error returns -1 with a message naming the key in err. */
int config_load(struct config *c, int argc, char **argv, char *err, size_t errlen);
void config_free(struct config *c);
/* The file stage alone, from a buffer (defaults, then the JSON): for tests and fuzzing. */
int config_load_json(struct config *c, const uint8_t *p, size_t len, char *err, size_t errlen);

/* Namespace of a channel: the part before the first ':' ("" without ':'). NULL if
 * no such namespace is configured. Borrowed from c. */
const struct ns_opts *config_namespace(const struct config *c, const uint8_t *channel, size_t len);

/* Write a complete config with fresh random token_hmac_secret and api_key
 * (OpenSSL RAND_bytes, 32 bytes, hex) to out. Returns 0 or -1. */
int config_generate(FILE *out);

#endif
