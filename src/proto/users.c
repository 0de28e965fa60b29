/* Connected users (see users.h): a table user -> number of connections under one
 * lock, touched on connect and disconnect, never on the delivery path. */
#include "proto/users.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/table.h"

struct user_count {
    struct table_node node;
    uint32_t conns;
    char name[];
};

static pthread_mutex_t node_lock = PTHREAD_MUTEX_INITIALIZER;
static struct table node_users; /* user -> struct user_count, under node_lock */

static struct user_count *count_find(uint64_t hash, const char *name)
{
    if (node_users.buckets == NULL && table_init(&node_users, 1024) != 0)
        return NULL;
    for (struct table_node *n = table_bucket(&node_users, hash); n; n = n->next)
        if (n->hash == hash && strcmp(((struct user_count *)n)->name, name) == 0)
            return (struct user_count *)n;
    return NULL;
}

const char *users_online(const char *name)
{
    uint64_t hash = table_hash(name, strlen(name));
    pthread_mutex_lock(&node_lock);
    struct user_count *u = count_find(hash, name);
    if (u == NULL && node_users.buckets) {
        size_t len = strlen(name);
        u = malloc(sizeof(*u) + len + 1);
        if (u) {
            u->node.hash = hash;
            u->conns = 0;
            memcpy(u->name, name, len + 1);
            table_insert(&node_users, &u->node);
        }
    }
    if (u)
        u->conns++;
    pthread_mutex_unlock(&node_lock);
    /* Stays while this connection counts in it (freed when its count reaches 0). */
    return u ? u->name : NULL;
}

void users_offline(const char *name)
{
    uint64_t hash = table_hash(name, strlen(name));
    pthread_mutex_lock(&node_lock);
    struct user_count *u = count_find(hash, name);
    if (u && --u->conns == 0) {
        table_remove(&node_users, &u->node);
        free(u);
    }
    pthread_mutex_unlock(&node_lock);
}

uint64_t users_count(void)
{
    pthread_mutex_lock(&node_lock);
    uint64_t n = node_users.count;
    pthread_mutex_unlock(&node_lock);
    return n;
}
