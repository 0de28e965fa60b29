/* limit/node.h: the node's limits from a config (memory engine: nothing shared): the
 * client address behind trusted proxies, the handshake's counts and their release, the
 * per-user count, the publish rates. */
#include <string.h>

#include "core/config.h"
#include "limit/node.h"
#include "metrics/metrics.h"
#include "test.h"

#define SEC 1000000ull

static struct config c;

static int load(const char *json)
{
    char err[256];
    config_free(&c);
    memset(&c, 0, sizeof(c));
    if (config_load_json(&c, (const uint8_t *)json, strlen(json), err, sizeof(err)) != 0) {
        fprintf(stderr, "  config: %s\n", err);
        return -1;
    }
    if (limit_init(&c, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "  limit_init: %s\n", err);
        return -1;
    }
    return 0;
}

static struct limit_addr addr(const char *s)
{
    struct limit_addr a;
    memset(&a, 0, sizeof(a));
    limit_addr_parse((const uint8_t *)s, strlen(s), &a);
    return a;
}

static void client_of(const char *peer, const char *xff, const char *real, char out[64])
{
    struct limit_addr p = addr(peer), a;
    limit_client_addr(&p, (const uint8_t *)xff, xff ? strlen(xff) : 0, (const uint8_t *)real,
                      real ? strlen(real) : 0, &a);
    limit_addr_format(&a, out, 64);
}

TEST(test_limit_node_forwarded_address_only_from_trusted_peers)
{
    CHECK_EQ(load("{\"trusted_proxies\": [\"10.0.0.0/8\", \"::1\"]}"), 0);
    char s[64];
    client_of("10.1.1.1", "203.0.113.5, 10.2.2.2", NULL, s);
    CHECK(strcmp(s, "203.0.113.5") == 0);
    client_of("::1", NULL, "198.51.100.4", s);
    CHECK(strcmp(s, "198.51.100.4") == 0);
    client_of("10.1.1.1", "garbage", "198.51.100.4", s); /* X-Forwarded-For unusable */
    CHECK(strcmp(s, "198.51.100.4") == 0);
    client_of("10.1.1.1", NULL, "not an address", s);
    CHECK(strcmp(s, "10.1.1.1") == 0);
    client_of("192.0.2.1", "203.0.113.5", "198.51.100.4", s); /* not a trusted peer */
    CHECK(strcmp(s, "192.0.2.1") == 0);
    CHECK_EQ(load("{}"), 0);
    client_of("10.1.1.1", "203.0.113.5", NULL, s); /* no proxies trusted */
    CHECK(strcmp(s, "10.1.1.1") == 0);
}

TEST(test_limit_node_refuses_a_config_with_a_bad_cidr_naming_the_key)
{
    struct config bad;
    memset(&bad, 0, sizeof(bad));
    const char *js = "{\"trusted_proxies\": [\"10.0.0.0/8\", \"10.0.0.300/8\"]}";
    char err[256];
    CHECK_EQ(config_load_json(&bad, (const uint8_t *)js, strlen(js), err, sizeof(err)), 0);
    CHECK_EQ(limit_check_config(&bad, err, sizeof(err)), -1);
    CHECK(strstr(err, "trusted_proxies") != NULL);
    CHECK(strstr(err, "10.0.0.300/8") != NULL);
    config_free(&bad);
}

TEST(test_limit_node_handshake_counts_and_releases)
{
    CHECK_EQ(load("{\"max_connections\": 3, \"max_connections_per_ip\": 2}"), 0);
    struct limit_client a = {.addr = addr("192.0.2.1")}, b = a, x = a;
    struct limit_client o1 = {.addr = addr("192.0.2.2")}, o2 = o1;
    CHECK_EQ(limit_client_admit(&a, SEC, 0), LIMIT_OK);
    CHECK_EQ(limit_client_admit(&b, SEC, 0), LIMIT_OK);
    CHECK_EQ(limit_client_admit(&x, SEC, 0), LIMIT_OVER_COUNT); /* the IP's third */
    CHECK_EQ(x.node + x.ip, 0);                                 /* holding nothing */
    CHECK_EQ(limit_client_admit(&o1, SEC, 0), LIMIT_OK);
    CHECK_EQ(limit_client_admit(&o2, SEC, 0), LIMIT_FULL); /* the node's fourth */
    CHECK_EQ(metrics_sum(METRIC_LIMIT_IP_CONNECTIONS), 1);
    CHECK_EQ(metrics_sum(METRIC_LIMIT_CONNECTIONS), 1);
    limit_client_release(&a);
    limit_client_release(&a); /* twice: nothing more */
    CHECK_EQ(limit_client_admit(&o2, SEC, 0), LIMIT_OK);
    CHECK_EQ(limit_client_admit(&x, SEC, 0), LIMIT_FULL);
    limit_client_release(&b);
    CHECK_EQ(limit_client_admit(&x, SEC, 0), LIMIT_OK);
    limit_client_release(&x);
    limit_client_release(&o1);
    limit_client_release(&o2);
}

TEST(test_limit_node_connection_rate_per_ip)
{
    CHECK_EQ(load("{\"connection_rate_per_ip\": 1, \"connection_burst_per_ip\": 2}"), 0);
    struct limit_client a = {.addr = addr("2001:db8::1")};
    CHECK_EQ(limit_client_admit(&a, 10 * SEC, 0), LIMIT_OK);
    limit_client_release(&a);
    CHECK_EQ(limit_client_admit(&a, 10 * SEC, 0), LIMIT_OK);
    limit_client_release(&a);
    CHECK_EQ(limit_client_admit(&a, 10 * SEC, 0), LIMIT_OVER_RATE);
    CHECK_EQ(limit_client_admit(&a, 11 * SEC, 0), LIMIT_OK);
    limit_client_release(&a);
}

TEST(test_limit_node_per_user_count_leaves_anonymous_alone)
{
    CHECK_EQ(load("{\"max_connections_per_user\": 1}"), 0);
    CHECK(limit_user_admit("alice", 0));
    CHECK(!limit_user_admit("alice", 0));
    CHECK(limit_user_admit("bob", 0));
    CHECK(limit_user_admit("", 0));
    CHECK(limit_user_admit("", 0));
    limit_user_release("alice", 1, 0);
    CHECK(limit_user_admit("alice", 0));
    CHECK_EQ(limit_user_share("alice", 0, NULL, NULL), 0); /* the memory engine shares nothing */
}

TEST(test_limit_node_publish_rates_per_user_and_channel)
{
    CHECK_EQ(load("{\"user_publish_rate\": 1, \"user_publish_burst\": 2, "
                  "\"channel_publish_rate\": 1, \"channel_publish_burst\": 3}"),
             0);
    const uint8_t *ch = (const uint8_t *)"room";
    CHECK(limit_publish_admit("alice", ch, 4, SEC, 0));
    CHECK(limit_publish_admit("alice", ch, 4, SEC, 0));
    CHECK(!limit_publish_admit("alice", ch, 4, SEC, 0)); /* alice's */
    CHECK(limit_publish_admit("bob", ch, 4, SEC, 0));
    CHECK(!limit_publish_admit("bob", ch, 4, SEC, 0)); /* the channel's */
    /* That refusal did not spend bob's second. */
    CHECK(limit_publish_admit("bob", (const uint8_t *)"other", 5, SEC, 0));
    CHECK(!limit_publish_admit("bob", (const uint8_t *)"other", 5, SEC, 0));
}

int main(void)
{
    if (metrics_init(1) != 0)
        return 1;
    RUN(test_limit_node_forwarded_address_only_from_trusted_peers);
    RUN(test_limit_node_refuses_a_config_with_a_bad_cidr_naming_the_key);
    RUN(test_limit_node_handshake_counts_and_releases);
    RUN(test_limit_node_connection_rate_per_ip);
    RUN(test_limit_node_per_user_count_leaves_anonymous_alone);
    RUN(test_limit_node_publish_rates_per_user_and_channel);
    limit_shutdown();
    config_free(&c);
    metrics_free();
    return test_summary("limit_node");
}
