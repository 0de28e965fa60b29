/* Who is connected: the node-wide count of distinct users (for /api/info). Not
 * authentication. */
#ifndef HERALD_PROTO_USERS_H
#define HERALD_PROTO_USERS_H

#include <stdint.h>

/* A connection of user (NUL-terminated, borrowed for the call) came or went.
 * users_online returns the table's copy of the name, which a connection may keep
 * instead of its own until its users_offline (NULL out of memory: not counted). */
const char *users_online(const char *user);
void users_offline(const char *user);
/* Distinct users connected to this node (any thread). */
uint64_t users_count(void);

#endif
