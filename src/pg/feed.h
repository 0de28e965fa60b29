/* The PostgreSQL change feed: a logical replication connection (libpq) streaming the
 * built-in pgoutput plugin from a persistent slot over a publication of the configured
 * tables, each change published through the hub to table:<schema>.<table> (and
 * table:<schema>.<table>#<owner>), and herald.publish() messages to their channel, in
 * commit order. The slot's position is confirmed to PostgreSQL only once every change
 * up to it has been handed to the engine, so a crash re-reads, never skips; each
 * publication carries its LSN as idempotency key, so a re-read is not delivered twice.
 *
 * It runs on a thread of its own (libpq's replication calls, with poll() for its
 * timers); the hub is called from it ("any thread"), and the engine's completions
 * come back on whatever thread the engine answers on, under the feed's lock. */
#ifndef HERALD_PG_FEED_H
#define HERALD_PG_FEED_H

#include <stddef.h>
#include <stdio.h>

struct config;

/* Before the loops run: when PostgreSQL answers, check that every configured table
 * and column exists. 0: fine or PostgreSQL not reachable now (the feed keeps trying);
 * -1: refused, err says which name is unknown. */
int pg_feed_check(const struct config *c, char *err, size_t errlen);

/* Start the feed thread (the hub must be ready). 0 or -1. */
int pg_feed_start(const struct config *c);
/* Stop and join it (before the engine closes). */
void pg_feed_stop(void);
/* Any thread: 1 when the feed streams or stands by (another node streams the slot);
 * 0 when PostgreSQL does not answer, with why in reason (NUL-terminated, cut to len);
 * -1 when there is no feed. */
int pg_feed_state(char *reason, size_t len);

/* The SQL that sets the feed up (publication, replica identity, herald.publish(), the
 * slot), as herald runs it: for `herald pg sql`. */
void pg_feed_sql(const struct config *c, FILE *out);

#endif
