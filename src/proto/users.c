/* Connected users (see users.h). The node-wide count is a table user -> number of
 * connections under one lock, touched on connect and disconnect, never on the
 * delivery path; the per-loop index is the loop's own. */
#include "proto/users.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/table.h"
#include "net/loop.h"

struct user_count {
    struct table_node node;
    uint32_t conns;
    char name[];
};

/* A user's sessions on one loop. */
struct user_entry {
    struct table_node node;
    struct user_link *head;
    uint16_t len;
    char name[];
};

static pthread_mutex_t node_lock = PTHREAD_MUTEX_INITIALIZER;
static struct table node_users; /* user -> struct user_count, under node_lock */
static struct table *loop_users[LOOP_MAX];

static struct user_count *count_find(uint64_t hash, const char *name)
{
    if (node_users.buckets == NULL && table_init(&node_users, 1024) != 0)
        return NULL;
    for (struct table_node *n = table_bucket(&node_users, hash); n; n = n->next)
        if (n->hash == hash && strcmp(((struct user_count *)n)->name, name) == 0)
            return (struct user_count *)n;
    return NULL;
}

static void node_online(const char *name)
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
}

static void node_offline(const char *name)
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

static struct user_entry *entry_find(struct table *t, uint64_t hash, const uint8_t *name,
                                     size_t len)
{
    for (struct table_node *n = table_bucket(t, hash); n; n = n->next) {
        struct user_entry *e = (struct user_entry *)n;
        if (n->hash == hash && e->len == len && memcmp(e->name, name, len) == 0)
            return e;
    }
    return NULL;
}

void users_add(unsigned slot, const char *user, struct user_link *link)
{
    node_online(user);
    link->next = link->prev = NULL;
    link->entry = NULL;
    struct table *t = loop_users[slot];
    if (t == NULL) {
        t = malloc(sizeof(*t));
        if (t == NULL || table_init(t, 256) != 0) {
            free(t);
            return; /* out of memory: counted, but not reachable by user controls */
        }
        loop_users[slot] = t;
    }
    size_t len = strlen(user);
    uint64_t hash = table_hash(user, len);
    struct user_entry *e = entry_find(t, hash, (const uint8_t *)user, len);
    if (e == NULL) {
        e = malloc(sizeof(*e) + len + 1);
        if (e == NULL)
            return;
        e->node.hash = hash;
        e->head = NULL;
        e->len = (uint16_t)len;
        memcpy(e->name, user, len + 1);
        table_insert(t, &e->node);
    }
    link->entry = e;
    link->next = e->head;
    if (e->head)
        e->head->prev = link;
    e->head = link;
}

void users_remove(unsigned slot, const char *user, struct user_link *link)
{
    node_offline(user);
    struct user_entry *e = link->entry;
    if (e) {
        if (link->prev)
            link->prev->next = link->next;
        else
            e->head = link->next;
        if (link->next)
            link->next->prev = link->prev;
        if (e->head == NULL) {
            table_remove(loop_users[slot], &e->node);
            free(e);
        }
        link->entry = NULL;
    }
}

struct user_link *users_find(unsigned slot, const uint8_t *user, size_t len)
{
    struct table *t = loop_users[slot];
    if (t == NULL)
        return NULL;
    struct user_entry *e = entry_find(t, table_hash(user, len), user, len);
    return e ? e->head : NULL;
}

void users_loop_exit(unsigned slot)
{
    struct table *t = loop_users[slot];
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (struct table_node *n = t->buckets[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    }
    table_destroy(t);
    free(t);
    loop_users[slot] = NULL;
}
