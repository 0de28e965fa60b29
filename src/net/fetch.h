/* HTTP(S) GET of one URL, again and again, on a worker thread of its own (libcurl): the
 * body, bounded, goes to a callback that says when to fetch next; any thread may ask
 * for a fetch sooner. Generic: it knows nothing of what the document is (main.c hands
 * a JWKS to auth/keys.h). Never on a loop thread: a fetch blocks its worker. */
#ifndef HERALD_NET_FETCH_H
#define HERALD_NET_FETCH_H

#include <stddef.h>
#include <stdint.h>

struct fetch_config {
    const char *url;     /* http:// or https:// (copied); other schemes are refused */
    size_t max_body;     /* a longer body fails the fetch */
    unsigned timeout_ms; /* for the whole request */
    /* On the worker thread after each attempt: status is the HTTP status, or 0 when there
     * was no complete response (error says why: refused, timeout, body too large). body
     * is borrowed for the call. Returns the milliseconds until the next fetch. */
    unsigned (*done)(void *ud, int status, const uint8_t *body, size_t len, const char *error);
    /* On the worker thread just before each attempt (may be NULL). */
    void (*start)(void *ud);
    void *ud;
};

struct fetch;

/* Start the worker; its first fetch begins at once. NULL on failure (message in err).
 * Call once libcurl may be initialised (before other threads use it). */
struct fetch *fetch_start(const struct fetch_config *cfg, char *err, size_t errlen);
/* Fetch within delay_ms (sooner than planned; never later). Any thread. */
void fetch_soon(struct fetch *f, unsigned delay_ms);
/* Stop the worker (a fetch under way ends at its timeout at worst), join, free. */
void fetch_stop(struct fetch *f);

#endif
