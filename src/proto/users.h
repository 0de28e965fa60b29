/* Who is connected: the node-wide count of distinct users (for /api/info), and each
 * loop's index user -> its sessions there (for the server API's disconnect, subscribe
 * and unsubscribe of a user). Not authentication. */
#ifndef HERALD_PROTO_USERS_H
#define HERALD_PROTO_USERS_H

#include <stddef.h>
#include <stdint.h>

/* Embedded in a session: its place in its loop's list of the user's sessions. */
struct user_link {
    struct user_link *next, *prev;
    struct user_entry *entry;
};

/* A connected session of user (NUL-terminated) on loop slot (loop thread); link is
 * the session's (borrowed until users_remove). Counts the user node-wide. */
void users_add(unsigned slot, const char *user, struct user_link *link);
void users_remove(unsigned slot, const char *user, struct user_link *link);
/* The first session link of user[0..len) on loop slot (loop thread), or NULL; walk
 * ->next. */
struct user_link *users_find(unsigned slot, const uint8_t *user, size_t len);
/* Distinct users connected to this node (any thread). */
uint64_t users_count(void);
/* A loop thread's index goes at its end. */
void users_loop_exit(unsigned slot);

#endif
