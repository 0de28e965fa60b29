/* Unit tests for core/config: defaults, file, environment and flags with their precedence,
 * refusals naming the key, namespaces and config_generate. */
#include "core/config.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

int config_load_json(struct config *c, const uint8_t *p, size_t len, char *err, size_t errlen);

extern char **environ;

static char err[256];
static char file_path[64];

/* Remove every HERALD_ variable, so the tests do not depend on the caller's environment. */
static void clear_env(void)
{
    for (;;) {
        char **e = environ;
        while (e != NULL && *e != NULL && strncmp(*e, "HERALD_", 7) != 0)
            e++;
        if (e == NULL || *e == NULL)
            return;
        char name[128];
        size_t n = strcspn(*e, "=");
        snprintf(name, sizeof(name), "%.*s", (int)n, *e);
        unsetenv(name);
    }
}

static const char *write_file(const char *text)
{
    strcpy(file_path, "/tmp/herald-test-config-XXXXXX");
    int fd = mkstemp(file_path);
    if (fd < 0)
        return NULL;
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n) {
        close(fd);
        return NULL;
    }
    close(fd);
    return file_path;
}

/* config_load with argv given as a NULL-terminated list. */
static int load(struct config *c, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, c);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 32;)
        argv[argc++] = a;
    va_end(ap);
    err[0] = '\0';
    return config_load(c, argc, argv, err, sizeof(err));
}

/* Load a file with the given JSON; the file is removed afterwards. */
static int load_file(struct config *c, const char *json)
{
    const char *path = write_file(json);
    int rc = load(c, "--config", path, NULL);
    unlink(file_path);
    return rc;
}

static int has(const char *needle)
{
    if (strstr(err, needle) != NULL)
        return 1;
    fprintf(stderr, "  error was: %s\n", err);
    return 0;
}

TEST(test_config_defaults_match_the_header)
{
    struct config c;
    clear_env();
    CHECK_EQ(load(&c, NULL), 0);
    CHECK(strcmp(c.listen_host, "127.0.0.1") == 0);
    CHECK_EQ(c.listen_port, 8000);
    CHECK(c.token_hmac_secret == NULL);
    CHECK(c.api_key == NULL);
    CHECK(c.admin_password == NULL);
    CHECK_EQ(c.allow_anonymous, 0);
    CHECK_EQ(c.client_publish, 0);
    CHECK_EQ(c.n_allowed_origins, 0);
    CHECK_EQ(c.max_message_size, 65536);
    CHECK_EQ(c.max_request_body, 1048576);
    CHECK_EQ(c.threads, 0);
    CHECK_EQ(c.ping_interval, 25);
    CHECK_EQ(c.client_queue_max, 4194304);
    CHECK_EQ(c.recovery_max_publications, 1000);
    CHECK(strcmp(c.engine, "memory") == 0);
    CHECK_EQ(c.n_namespaces, 1);
    CHECK(c.namespaces != NULL && c.namespaces[0].name[0] == '\0');
    CHECK_EQ(c.namespaces[0].history_size, 0);
    CHECK_EQ(c.namespaces[0].client_publish, 0);
    config_free(&c);
    CHECK(c.namespaces == NULL);
    config_free(&c); /* twice is harmless */
}

TEST(test_config_file_sets_every_key)
{
    struct config c;
    clear_env();
    CHECK_EQ(load_file(&c, "{\n"
                           "  \"listen\": \"0.0.0.0:9001\",\n"
                           "  \"token_hmac_secret\": \"s\\u00e9cret\",\n"
                           "  \"api_key\": \"key\",\n"
                           "  \"admin_password\": \"status-pw\",\n"
                           "  \"allow_anonymous\": true,\n"
                           "  \"client_publish\": true,\n"
                           "  \"allowed_origins\": [\"https://a.example\",\n"
                           "                      \"https://b.example\"],\n"
                           "  \"max_message_size\": 1000,\n"
                           "  \"max_request_body\": 2000,\n"
                           "  \"threads\": 4,\n"
                           "  \"ping_interval\": 10,\n"
                           "  \"client_queue_max\": 3000,\n"
                           "  \"recovery_max_publications\": 50,\n"
                           "  \"engine\": \"memory\"\n"
                           "}\n"),
             0);
    CHECK(strcmp(c.listen_host, "0.0.0.0") == 0);
    CHECK_EQ(c.listen_port, 9001);
    CHECK(c.token_hmac_secret && strcmp(c.token_hmac_secret, "s\xc3\xa9"
                                                             "cret") == 0);
    CHECK(c.api_key && strcmp(c.api_key, "key") == 0);
    CHECK(c.admin_password && strcmp(c.admin_password, "status-pw") == 0);
    CHECK_EQ(c.allow_anonymous, 1);
    CHECK_EQ(c.client_publish, 1);
    CHECK_EQ(c.namespaces[0].client_publish, 1);
    CHECK_EQ(c.n_allowed_origins, 2);
    if (c.n_allowed_origins == 2) {
        CHECK(strcmp(c.allowed_origins[0], "https://a.example") == 0);
        CHECK(strcmp(c.allowed_origins[1], "https://b.example") == 0);
    }
    CHECK_EQ(c.max_message_size, 1000);
    CHECK_EQ(c.max_request_body, 2000);
    CHECK_EQ(c.threads, 4);
    CHECK_EQ(c.ping_interval, 10);
    CHECK_EQ(c.client_queue_max, 3000);
    CHECK_EQ(c.recovery_max_publications, 50);
    config_free(&c);
}

TEST(test_config_flags_beat_env_beat_file_beat_defaults)
{
    struct config c;
    clear_env();
    const char *path = write_file("{\"listen\": \"127.0.0.1:1111\", \"threads\": 3, "
                                  "\"ping_interval\": 7, \"api_key\": \"from-file\"}");
    setenv("HERALD_LISTEN", "127.0.0.1:2222", 1);
    setenv("HERALD_THREADS", "5", 1);
    CHECK_EQ(load(&c, "--config", path, "--listen", "127.0.0.1:3333", NULL), 0);
    CHECK_EQ(c.listen_port, 3333);       /* flag over env and file */
    CHECK_EQ(c.threads, 5);              /* env over file */
    CHECK_EQ(c.ping_interval, 7);        /* file over default */
    CHECK_EQ(c.max_message_size, 65536); /* default */
    CHECK(c.api_key && strcmp(c.api_key, "from-file") == 0);
    config_free(&c);
    clear_env();
    unlink(path);
}

TEST(test_config_flag_forms_and_boolean_without_value)
{
    struct config c;
    clear_env();
    CHECK_EQ(load(&c, "--listen=127.0.0.1:9000", "--allow_anonymous", "--max-message-size", "99",
                  "--client-publish", "--threads=2", NULL),
             0);
    CHECK_EQ(c.listen_port, 9000);
    CHECK_EQ(c.allow_anonymous, 1);
    CHECK_EQ(c.client_publish, 1);
    CHECK_EQ(c.namespaces[0].client_publish, 1);
    CHECK_EQ(c.max_message_size, 99);
    CHECK_EQ(c.threads, 2);
    config_free(&c);

    setenv("HERALD_ALLOW_ANONYMOUS", "true", 1);
    CHECK_EQ(load(&c, "--allow-anonymous=false", NULL), 0);
    CHECK_EQ(c.allow_anonymous, 0);
    config_free(&c);
    CHECK_EQ(load(&c, "--allow_anonymous", "false", "--api_key", "k", NULL), 0);
    CHECK_EQ(c.allow_anonymous, 0);
    config_free(&c);
    /* later flags win over earlier ones */
    CHECK_EQ(load(&c, "--threads", "1", "--threads", "8", NULL), 0);
    CHECK_EQ(c.threads, 8);
    config_free(&c);
    clear_env();
}

TEST(test_config_env_values_are_parsed_like_flags)
{
    struct config c;
    clear_env();
    setenv("HERALD_API_KEY", "env-key", 1);
    setenv("HERALD_TOKEN_HMAC_SECRET", "env-secret", 1);
    setenv("HERALD_CLIENT_QUEUE_MAX", "123456", 1);
    setenv("HERALD_ALLOW_ANONYMOUS", "1", 1);
    CHECK_EQ(load(&c, NULL), 0);
    CHECK(c.api_key && strcmp(c.api_key, "env-key") == 0);
    CHECK(c.token_hmac_secret && strcmp(c.token_hmac_secret, "env-secret") == 0);
    CHECK_EQ(c.client_queue_max, 123456);
    CHECK_EQ(c.allow_anonymous, 1);
    config_free(&c);
    clear_env();
}

TEST(test_config_allowed_origins_from_json_or_comma_list)
{
    struct config c;
    clear_env();
    setenv("HERALD_ALLOWED_ORIGINS", "[\"https://x.example\",\"http://localhost:3000\"]", 1);
    CHECK_EQ(load(&c, NULL), 0);
    CHECK_EQ(c.n_allowed_origins, 2);
    if (c.n_allowed_origins == 2)
        CHECK(strcmp(c.allowed_origins[1], "http://localhost:3000") == 0);
    config_free(&c);

    setenv("HERALD_ALLOWED_ORIGINS", " https://a.example , https://b.example,,https://c.example",
           1);
    CHECK_EQ(load(&c, NULL), 0);
    CHECK_EQ(c.n_allowed_origins, 3);
    if (c.n_allowed_origins == 3) {
        CHECK(strcmp(c.allowed_origins[0], "https://a.example") == 0);
        CHECK(strcmp(c.allowed_origins[1], "https://b.example") == 0);
        CHECK(strcmp(c.allowed_origins[2], "https://c.example") == 0);
    }
    config_free(&c);

    /* a flag replaces the list from the environment */
    CHECK_EQ(load(&c, "--allowed-origins", "https://only.example", NULL), 0);
    CHECK_EQ(c.n_allowed_origins, 1);
    config_free(&c);
    CHECK_EQ(load(&c, "--allowed_origins", "", NULL), 0);
    CHECK_EQ(c.n_allowed_origins, 0);
    config_free(&c);
    clear_env();

    CHECK_EQ(load_file(&c, "{\"allowed_origins\": \"https://a.example\"}"), -1);
    CHECK(has("allowed_origins: expected an array of strings"));
    CHECK_EQ(load_file(&c, "{\"allowed_origins\": [\"https://a.example\", 1]}"), -1);
    CHECK(has("allowed_origins: "));
    CHECK_EQ(load_file(&c, "{\"allowed_origins\": [\"\"]}"), -1);
    CHECK(has("allowed_origins: "));
}

TEST(test_config_unknown_keys_are_refused_by_name)
{
    struct config c;
    clear_env();
    CHECK_EQ(load_file(&c, "{\"listen\": \"127.0.0.1:8000\", \"foo\": 1}"), -1);
    CHECK(has("unknown key \"foo\""));
    CHECK_EQ(load(&c, "--foo", "1", NULL), -1);
    CHECK(has("unknown key \"foo\""));
    CHECK_EQ(load(&c, "--foo-bar", NULL), -1);
    CHECK(has("unknown key \"foo_bar\""));
    setenv("HERALD_API_KEYZ", "x", 1);
    CHECK_EQ(load(&c, NULL), -1);
    CHECK(has("unknown key \"api_keyz\""));
    CHECK(has("HERALD_API_KEYZ"));
    clear_env();
    /* "config" is a flag, not a key of the file */
    CHECK_EQ(load_file(&c, "{\"config\": \"x.json\"}"), -1);
    CHECK(has("unknown key \"config\""));
}

TEST(test_config_bad_listen_values_are_refused)
{
    struct config c;
    clear_env();
    const char *bad[] = {"127.0.0.1",    "127.0.0.1:",
                         "127.0.0.1:0",  "127.0.0.1:65536",
                         ":8000",        "127.0.0.1:80a",
                         "127.0.0.1:-1", "a b:80",
                         "[]:80",        "host:99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_EQ(load(&c, "--listen", bad[i], NULL), -1);
        CHECK(has("listen: expected \"host:port\""));
    }
    CHECK_EQ(load_file(&c, "{\"listen\": 8000}"), -1);
    CHECK(has("listen: expected a string"));
    CHECK_EQ(load(&c, "--listen", "[::1]:65535", NULL), 0);
    CHECK(strcmp(c.listen_host, "::1") == 0);
    CHECK_EQ(c.listen_port, 65535);
    config_free(&c);
    CHECK_EQ(load(&c, "--listen", "localhost:1", NULL), 0);
    CHECK(strcmp(c.listen_host, "localhost") == 0);
    CHECK_EQ(c.listen_port, 1);
    config_free(&c);
}

TEST(test_config_bad_numbers_are_refused_naming_the_key)
{
    struct config c;
    clear_env();
    const char *files[] = {
        "{\"max_message_size\": -1}",         "{\"max_message_size\": 1.5}",
        "{\"max_message_size\": 1e3}",        "{\"max_message_size\": \"100\"}",
        "{\"max_message_size\": 0}",          "{\"max_message_size\": 99999999999999999999999}",
        "{\"max_message_size\": 2000000000}", "{\"max_message_size\": true}",
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        CHECK_EQ(load_file(&c, files[i]), -1);
        CHECK(has("max_message_size: expected an integer from 1 to"));
    }
    CHECK_EQ(load(&c, "--threads", "-1", NULL), -1);
    CHECK(has("threads: expected an integer from 0 to 1024"));
    CHECK_EQ(load(&c, "--threads", "4x", NULL), -1);
    CHECK(has("threads: "));
    CHECK_EQ(load(&c, "--ping-interval", "0", NULL), -1);
    CHECK(has("ping_interval: "));
    CHECK_EQ(load(&c, "--recovery_max_publications", "", NULL), -1);
    CHECK(has("recovery_max_publications: "));
    setenv("HERALD_MAX_REQUEST_BODY", "1 000", 1);
    CHECK_EQ(load(&c, NULL), -1);
    CHECK(has("max_request_body: "));
    CHECK(has("HERALD_MAX_REQUEST_BODY"));
    clear_env();
    CHECK_EQ(load(&c, "--client_queue_max", "18446744073709551616", NULL), -1);
    CHECK(has("client_queue_max: "));
}

TEST(test_config_bad_bools_and_strings_are_refused_naming_the_key)
{
    struct config c;
    clear_env();
    CHECK_EQ(load_file(&c, "{\"allow_anonymous\": \"true\"}"), -1);
    CHECK(has("allow_anonymous: expected true or false"));
    CHECK_EQ(load(&c, "--client_publish=yes please", NULL), -1);
    CHECK(has("client_publish: expected true or false"));
    CHECK_EQ(load_file(&c, "{\"api_key\": 5}"), -1);
    CHECK(has("api_key: expected a string"));
    CHECK_EQ(load_file(&c, "{\"token_hmac_secret\": \"\"}"), -1);
    CHECK(has("token_hmac_secret: must not be empty"));
    /* An empty admin password would open the status page to a Basic "user:". */
    CHECK_EQ(load(&c, "--admin_password=", NULL), -1);
    CHECK(has("admin_password: must not be empty"));
    CHECK_EQ(load_file(&c, "{\"api_key\": \"a\\u0000b\"}"), -1);
    CHECK(has("api_key: "));
    CHECK_EQ(load(&c, "--api_key", NULL), -1);
    CHECK(has("api_key: missing value"));
    CHECK_EQ(load(&c, "listen", NULL), -1);
    CHECK(has("unexpected argument \"listen\""));
}

TEST(test_config_engine_is_memory_or_redis_with_urls)
{
    struct config c;
    clear_env();
    CHECK_EQ(load(&c, "--engine", "redis", NULL), -1);
    CHECK(has("redis_urls: engine redis needs at least one redis:// URL"));
    CHECK_EQ(load_file(&c, "{\"engine\": \"nats\"}"), -1);
    CHECK(has("engine: expected \"memory\" or \"redis\""));
    CHECK_EQ(load(&c, "--engine", "memory", NULL), 0);
    config_free(&c);
    CHECK_EQ(load(&c, "--engine", "redis", "--redis_urls",
                  "redis://127.0.0.1:6379, redis://u:p@127.0.0.1:6380/2", NULL),
             0);
    CHECK_EQ(c.n_redis_urls, 2);
    if (c.n_redis_urls == 2)
        CHECK(strcmp(c.redis_urls[1], "redis://u:p@127.0.0.1:6380/2") == 0);
    config_free(&c);
    CHECK_EQ(load_file(&c, "{\"engine\":\"redis\",\"redis_urls\":[\"rediss://h:1\"],"
                           "\"redis_tls_ca\":\"/etc/ca.pem\"}"),
             0);
    CHECK(c.redis_tls_ca && strcmp(c.redis_tls_ca, "/etc/ca.pem") == 0);
    config_free(&c);
    CHECK_EQ(load_file(&c, "{\"engine\":\"redis\",\"redis_urls\":[\"http://h:1\"]}"), -1);
    CHECK(has("redis_urls: http://h:1: expected redis[s]://"));
    CHECK_EQ(load_file(&c, "{\"engine\":\"redis\",\"redis_cluster_urls\":[\"redis://h:1\","
                           "\"redis://u:p@h:2\"]}"),
             0);
    CHECK_EQ(c.n_redis_cluster_urls, 2);
    config_free(&c);
    CHECK_EQ(load_file(&c, "{\"engine\":\"redis\",\"redis_cluster_urls\":[\"redis://h:1/0\"]}"), 0);
    config_free(&c);
    CHECK_EQ(load_file(&c, "{\"engine\":\"redis\",\"redis_cluster_urls\":[\"redis://h:1/3\"]}"), -1);
    CHECK(has("redis_cluster_urls: redis://h:1/3: a Redis Cluster has database 0 only"));
    CHECK_EQ(load_file(&c, "{\"engine\":\"redis\",\"redis_cluster_urls\":[\"redis://h:1\","
                           "\"rediss://h:2\"]}"),
             -1);
    CHECK(has("redis_cluster_urls: rediss://h:2: every seed redis:// or every seed rediss://"));
    CHECK_EQ(load_file(&c, "{\"engine\":\"redis\",\"redis_cluster_urls\":[\"tcp://h:1\"]}"), -1);
    CHECK(has("redis_cluster_urls: tcp://h:1: expected redis[s]://"));
    CHECK_EQ(load_file(&c, "{\"engine\":\"redis\",\"redis_urls\":[\"redis://h:1\"],"
                           "\"redis_cluster_urls\":[\"redis://h:2\"]}"),
             -1);
    CHECK(has("redis_cluster_urls: either redis_urls"));
    CHECK_EQ(load_file(&c, "{\"redis_prefix\":\"app1\",\"redis_urls\":[\"redis://h:1\"]}"), 0);
    CHECK(c.redis_prefix && strcmp(c.redis_prefix, "app1") == 0);
    config_free(&c);
}

TEST(test_config_file_errors_are_reported)
{
    struct config c;
    clear_env();
    CHECK_EQ(load(&c, "--config", "/nonexistent/herald.json", NULL), -1);
    CHECK(has("cannot open /nonexistent/herald.json"));
    CHECK_EQ(load(&c, "--config", NULL), -1);
    CHECK(has("config: missing value"));
    CHECK_EQ(load_file(&c, "{\"listen\": "), -1);
    CHECK(has("not valid JSON"));
    CHECK_EQ(load_file(&c, "[1, 2]"), -1);
    CHECK(has("expected a JSON object"));
    CHECK_EQ(load_file(&c, ""), -1);
    CHECK_EQ(load_file(&c, "{\"threads\": 1, \"threads\": 2}"), -1);
    CHECK(has("duplicate key \"threads\""));
    /* the message says which file */
    CHECK_EQ(load_file(&c, "{\"threads\": -2}"), -1);
    CHECK(has("/tmp/herald-test-config-"));
}

TEST(test_config_herald_config_env_names_the_file)
{
    struct config c;
    clear_env();
    const char *path = write_file("{\"threads\": 6}");
    setenv("HERALD_CONFIG", path, 1);
    CHECK_EQ(load(&c, NULL), 0);
    CHECK_EQ(c.threads, 6);
    config_free(&c);
    /* --config wins */
    CHECK_EQ(load(&c, "--config", "/nonexistent.json", NULL), -1);
    clear_env();
    unlink(path);
}

TEST(test_config_namespaces_are_parsed_with_default_first)
{
    struct config c;
    clear_env();
    CHECK_EQ(load_file(&c, "{\"namespaces\": {"
                           "\"chat\": {\"history_size\": 100, \"history_ttl\": 300, "
                           "\"recover\": true, \"presence\": true, \"join_leave\": true},"
                           "\"\": {\"presence\": true},"
                           "\"secret.room-1_x\": {\"private\": true, \"client_publish\": true}}}"),
             0);
    CHECK_EQ(c.n_namespaces, 3);
    if (c.n_namespaces == 3) {
        CHECK(strcmp(c.namespaces[0].name, "") == 0);
        CHECK_EQ(c.namespaces[0].presence, 1);
        CHECK(strcmp(c.namespaces[1].name, "chat") == 0);
        CHECK_EQ(c.namespaces[1].history_size, 100);
        CHECK_EQ(c.namespaces[1].history_ttl, 300);
        CHECK_EQ(c.namespaces[1].recover, 1);
        CHECK_EQ(c.namespaces[1].presence, 1);
        CHECK_EQ(c.namespaces[1].join_leave, 1);
        CHECK_EQ(c.namespaces[1].private_, 0);
        CHECK(strcmp(c.namespaces[2].name, "secret.room-1_x") == 0);
        CHECK_EQ(c.namespaces[2].private_, 1);
        CHECK_EQ(c.namespaces[2].client_publish, 1);
    }
    config_free(&c);

    /* without "", the default namespace is created from the top-level client_publish */
    CHECK_EQ(load_file(&c, "{\"client_publish\": true, \"namespaces\": {\"a\": {}}}"), 0);
    CHECK_EQ(c.n_namespaces, 2);
    CHECK(c.namespaces[0].name[0] == '\0');
    CHECK_EQ(c.namespaces[0].client_publish, 1);
    CHECK_EQ(c.namespaces[1].client_publish, 0);
    config_free(&c);
}

TEST(test_config_namespaces_from_env_and_flag_replace_the_file)
{
    struct config c;
    clear_env();
    const char *path = write_file("{\"namespaces\": {\"a\": {}, \"b\": {}}}");
    setenv("HERALD_NAMESPACES", "{\"env\": {\"presence\": true}}", 1);
    CHECK_EQ(load(&c, "--config", path, NULL), 0);
    CHECK_EQ(c.n_namespaces, 2);
    CHECK(c.n_namespaces == 2 && strcmp(c.namespaces[1].name, "env") == 0);
    config_free(&c);
    CHECK_EQ(load(&c, "--config", path, "--namespaces", "{\"flag\": {}}", NULL), 0);
    CHECK(c.n_namespaces == 2 && strcmp(c.namespaces[1].name, "flag") == 0);
    config_free(&c);
    CHECK_EQ(load(&c, "--namespaces", "{\"flag\": ", NULL), -1);
    CHECK(has("namespaces: not valid JSON"));
    clear_env();
    unlink(path);
}

TEST(test_config_default_namespace_client_publish_follows_precedence)
{
    struct config c;
    clear_env();
    /* the namespace's own setting wins over the top-level key of the same file */
    CHECK_EQ(load_file(&c, "{\"client_publish\": true, "
                           "\"namespaces\": {\"\": {\"client_publish\": false}}}"),
             0);
    CHECK_EQ(c.namespaces[0].client_publish, 0);
    CHECK_EQ(c.client_publish, 0);
    config_free(&c);
    /* a flag beats the file's namespace setting */
    const char *path = write_file("{\"namespaces\": {\"\": {\"client_publish\": false}}}");
    CHECK_EQ(load(&c, "--config", path, "--client_publish", NULL), 0);
    CHECK_EQ(c.namespaces[0].client_publish, 1);
    CHECK_EQ(c.client_publish, 1);
    config_free(&c);
    unlink(path);
}

TEST(test_config_bad_namespaces_are_refused_naming_the_key)
{
    struct config c;
    clear_env();
    CHECK_EQ(load_file(&c, "{\"namespaces\": {\"chat\": {\"histroy_size\": 1}}}"), -1);
    CHECK(has("unknown key \"namespaces.chat.histroy_size\""));
    CHECK_EQ(load_file(&c, "{\"namespaces\": {\"\": {\"x\": 1}}}"), -1);
    CHECK(has("unknown key \"namespaces..x\""));
    CHECK_EQ(load_file(&c, "{\"namespaces\": {\"chat\": {\"presence\": 1}}}"), -1);
    CHECK(has("namespaces.chat.presence: expected true or false"));
    CHECK_EQ(load_file(&c, "{\"namespaces\": {\"chat\": {\"history_size\": -1}}}"), -1);
    CHECK(has("namespaces.chat.history_size: expected an integer"));
    CHECK_EQ(load_file(&c, "{\"namespaces\": {\"chat\": {\"history_size\": 10}}}"), -1);
    CHECK(has("namespaces.chat.history_ttl: must be set"));
    CHECK_EQ(load_file(&c, "{\"namespaces\": {\"chat\": {\"recover\": true}}}"), -1);
    CHECK(has("namespaces.chat.recover: "));
    CHECK_EQ(load_file(&c, "{\"namespaces\": {\"chat\": true}}"), -1);
    CHECK(has("namespaces.chat: expected an object"));
    CHECK_EQ(load_file(&c, "{\"namespaces\": [\"chat\"]}"), -1);
    CHECK(has("namespaces: expected an object"));
    CHECK_EQ(load_file(&c, "{\"namespaces\": {\"a:b\": {}}}"), -1);
    CHECK(has("namespaces: bad name \"a:b\""));
    CHECK_EQ(load_file(&c, "{\"namespaces\": {\"a b\": {}}}"), -1);
    CHECK(has("namespaces: bad name"));
    /* 64 characters: one too many */
    CHECK_EQ(load_file(&c, "{\"namespaces\": {\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": {}}}"),
             -1);
    CHECK(has("namespaces: bad name"));
    CHECK_EQ(load_file(&c, "{\"namespaces\": {\"a\": {}, \"a\": {}}}"), -1);
    CHECK(has("namespaces: duplicate namespace \"a\""));
}

TEST(test_config_namespace_lookup_uses_prefix_before_first_colon)
{
    struct config c;
    clear_env();
    CHECK_EQ(load_file(&c, "{\"namespaces\": {\"chat\": {\"presence\": true}}}"), 0);
    const struct ns_opts *ns = config_namespace(&c, (const uint8_t *)"news", 4);
    CHECK(ns == &c.namespaces[0]);
    ns = config_namespace(&c, (const uint8_t *)"chat:room:1", 11);
    CHECK(ns != NULL && strcmp(ns->name, "chat") == 0);
    CHECK(config_namespace(&c, (const uint8_t *)"chats:1", 7) == NULL);
    CHECK(config_namespace(&c, (const uint8_t *)"cha:1", 5) == NULL);
    /* not NUL-terminated: only len bytes count */
    ns = config_namespace(&c, (const uint8_t *)"chat:x", 4);
    CHECK(ns == &c.namespaces[0]);
    CHECK(config_namespace(&c, (const uint8_t *)"", 0) == &c.namespaces[0]);
    config_free(&c);
}

TEST(test_config_generate_output_loads_back)
{
    struct config c;
    clear_env();
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    CHECK_EQ(config_generate(f), 0);
    fclose(f);
    CHECK_EQ(load_file(&c, text), 0);
    CHECK(c.token_hmac_secret != NULL && strlen(c.token_hmac_secret) == 64);
    CHECK(c.api_key != NULL && strlen(c.api_key) == 64);
    CHECK(c.api_key && c.token_hmac_secret && strcmp(c.api_key, c.token_hmac_secret) != 0);
    CHECK(c.api_key && strspn(c.api_key, "0123456789abcdef") == 64);
    CHECK_EQ(c.allow_anonymous, 0);
    CHECK_EQ(c.n_allowed_origins, 0);
    CHECK_EQ(c.n_namespaces, 2);
    const struct ns_opts *chat = config_namespace(&c, (const uint8_t *)"chat:1", 6);
    CHECK(chat != NULL && chat->history_size == 100 && chat->history_ttl == 300 && chat->recover &&
          chat->presence && chat->join_leave);
    char first[65];
    snprintf(first, sizeof(first), "%s", c.api_key ? c.api_key : "");
    config_free(&c);
    free(text);

    /* a second run gives fresh secrets */
    f = open_memstream(&text, &size);
    CHECK_EQ(config_generate(f), 0);
    fclose(f);
    CHECK(strstr(text, first) == NULL);
    free(text);
}

TEST(test_config_load_json_fuzz_entry_loads_a_buffer)
{
    struct config c;
    const char *js = "{\"threads\": 3, \"namespaces\": {\"x\": {}}}";
    CHECK_EQ(config_load_json(&c, (const uint8_t *)js, strlen(js), err, sizeof(err)), 0);
    CHECK_EQ(c.threads, 3);
    CHECK_EQ(c.n_namespaces, 2);
    config_free(&c);
    /* not NUL-terminated: the closing brace is outside len */
    CHECK_EQ(config_load_json(&c, (const uint8_t *)js, strlen(js) - 1, err, sizeof(err)), -1);
    CHECK_EQ(config_load_json(&c, (const uint8_t *)"{\"listen\": 1}", 13, err, 0), -1);
}

TEST(test_config_change_feed)
{
    struct config c;
    clear_env();
    const char *ok = "{\"postgres\":\"host=h dbname=d\",\"namespaces\":{\"table\":{}},"
                     "\"change_feed\":{\"slot\":\"s1\",\"tables\":[{\"table\":\"app.orders\","
                     "\"owner_column\":\"user_id\",\"columns\":[\"id\",\"user_id\"]},"
                     "{\"table\":\"users\",\"exclude_columns\":[\"password\"]}]}}";
    CHECK_EQ(load_file(&c, ok), 0);
    CHECK_EQ(c.feed.n_tables, 2);
    if (c.feed.n_tables == 2) {
        CHECK(strcmp(c.feed.slot, "s1") == 0);
        CHECK(strcmp(c.feed.publication, "herald") == 0);
        CHECK(strcmp(c.feed.tables[0].schema, "app") == 0);
        CHECK(strcmp(c.feed.tables[0].name, "orders") == 0);
        CHECK(strcmp(c.feed.tables[0].owner_column, "user_id") == 0);
        CHECK_EQ(c.feed.tables[0].n_columns, 2);
        CHECK(strcmp(c.feed.tables[1].schema, "public") == 0);
        CHECK_EQ(c.feed.tables[1].n_exclude, 1);
    }
    config_free(&c);
    static const char *const bad[][2] = {
        {"{\"namespaces\":{\"table\":{}},\"change_feed\":{\"tables\":[{\"table\":\"t\"}]}}",
         "change_feed: needs postgres"},
        {"{\"postgres\":\"x\",\"change_feed\":{\"tables\":[{\"table\":\"t\"}]}}",
         "change_feed: needs a namespace \"table\""},
        {"{\"postgres\":\"x\",\"namespaces\":{\"table\":{}},\"change_feed\":{\"tables\":[]}}",
         "change_feed.tables: expected a non-empty array"},
        {"{\"postgres\":\"x\",\"namespaces\":{\"table\":{}},\"change_feed\":{\"tables\":"
         "[{\"table\":\"a b\"}]}}",
         "change_feed.tables[0].table: expected \"schema.table\""},
        {"{\"postgres\":\"x\",\"namespaces\":{\"table\":{}},\"change_feed\":{\"tables\":"
         "[{\"table\":\"t\",\"columns\":[\"x;drop\"]}]}}",
         "bad column name \"x;drop\""},
        {"{\"postgres\":\"x\",\"namespaces\":{\"table\":{}},\"change_feed\":{\"slot\":\"Big\","
         "\"tables\":[{\"table\":\"t\"}]}}",
         "change_feed.slot: expected 1 to 63 of a-z 0-9 _"},
        {"{\"postgres\":\"x\",\"namespaces\":{\"table\":{}},\"change_feed\":{\"tables\":"
         "[{\"table\":\"t\"},{\"table\":\"public.t\"}]}}",
         "change_feed.tables: public.t twice"},
        {"{\"postgres\":\"x\",\"namespaces\":{\"table\":{}},\"change_feed\":{\"tables\":"
         "[{\"table\":\"t\",\"owner\":\"u\"}]}}",
         "unknown key \"change_feed.tables[0].owner\""},
        {"{\"postgres\":\"x\",\"namespaces\":{\"table\":{}},\"change_feed\":{\"table\":[]}}",
         "unknown key \"change_feed.table\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_EQ(load_file(&c, bad[i][0]), -1);
        CHECK(has(bad[i][1]));
    }
}

TEST(test_config_metrics_listen_and_key)
{
    struct config c;
    clear_env();
    CHECK_EQ(load(&c, NULL), 0);
    CHECK_EQ(c.metrics_listen_port, 0); /* unset: /metrics on the main listener */
    CHECK(c.metrics_key == NULL);
    config_free(&c);
    CHECK_EQ(load(&c, "--metrics_listen", "[::1]:9100", "--metrics-key", "k1", NULL), 0);
    CHECK(strcmp(c.metrics_listen_host, "::1") == 0);
    CHECK_EQ(c.metrics_listen_port, 9100);
    CHECK(strcmp(c.listen_host, "127.0.0.1") == 0); /* the main listener untouched */
    CHECK_EQ(c.listen_port, 8000);
    CHECK(c.metrics_key && strcmp(c.metrics_key, "k1") == 0);
    config_free(&c);
    CHECK_EQ(load_file(&c, "{\"metrics_listen\": \"127.0.0.1:0\"}"), -1);
    CHECK(has("metrics_listen: expected \"host:port\""));
}

int main(void)
{
    RUN(test_config_metrics_listen_and_key);
    RUN(test_config_defaults_match_the_header);
    RUN(test_config_file_sets_every_key);
    RUN(test_config_flags_beat_env_beat_file_beat_defaults);
    RUN(test_config_flag_forms_and_boolean_without_value);
    RUN(test_config_env_values_are_parsed_like_flags);
    RUN(test_config_allowed_origins_from_json_or_comma_list);
    RUN(test_config_unknown_keys_are_refused_by_name);
    RUN(test_config_bad_listen_values_are_refused);
    RUN(test_config_bad_numbers_are_refused_naming_the_key);
    RUN(test_config_bad_bools_and_strings_are_refused_naming_the_key);
    RUN(test_config_engine_is_memory_or_redis_with_urls);
    RUN(test_config_file_errors_are_reported);
    RUN(test_config_herald_config_env_names_the_file);
    RUN(test_config_namespaces_are_parsed_with_default_first);
    RUN(test_config_namespaces_from_env_and_flag_replace_the_file);
    RUN(test_config_default_namespace_client_publish_follows_precedence);
    RUN(test_config_bad_namespaces_are_refused_naming_the_key);
    RUN(test_config_namespace_lookup_uses_prefix_before_first_colon);
    RUN(test_config_generate_output_loads_back);
    RUN(test_config_load_json_fuzz_entry_loads_a_buffer);
    RUN(test_config_change_feed);
    return test_summary("core_config");
}
