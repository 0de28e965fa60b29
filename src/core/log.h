/* Logging to stderr: one line per event, a JSON object (log_format "json") or the
 * plain "time level message" line (log_format "text"). Not metrics: counts belong in
 * metrics/, a line is for a person reading what happened. */
#ifndef HERALD_CORE_LOG_H
#define HERALD_CORE_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_JSON, LOG_TEXT };

extern int log_min_level;
extern int log_format;

/* Lines per second per event and per thread that log_client lets through; the rest
 * are counted and summarised once the second is over. */
#define LOG_CLIENT_RATE 10

/* Whom a line is about; any member may be NULL (or code 0) when it does not apply.
 * Borrowed for the call. Never a token, a key or a payload: they do not belong here. */
struct log_who {
    const char *client; /* the client id herald gave the connection */
    const char *user;   /* the token's sub ("" anonymous) */
    const char *addr;   /* the client's address (limit_addr_format) */
    int code;           /* a disconnect code or an HTTP status */
};

/* Before the loops start: the node id every line carries (copied). */
void log_set_node(const char *node);

/* Any thread: one line, one write(2). event is a short stable snake_case name
 * ("listening", "redis_down"); fmt makes the human msg. */
void log_event(enum log_level level, const char *event, const struct log_who *who, const char *fmt,
               ...) __attribute__((format(printf, 4, 5)));

/* As log_event, for what a bad client can cause at will (a refused handshake, an
 * invalid token): at most LOG_CLIENT_RATE lines per second of each event on this
 * thread (no lock: the counters are the thread's); the suppressed ones are summarised
 * in one line ("1,204 similar lines suppressed") by log_tick or the next call. event
 * must be a string literal (compared by address). */
void log_client(enum log_level level, const char *event, const struct log_who *who, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));

/* Once a second on each loop thread: the summaries of seconds that are over. */
void log_tick(void);

/* url with the password of its user-info replaced, "redis://user:[***]@host:6379" where
 * [***] is three stars (a user-info without ':' is taken for a secret whole), into
 * out[0..len); returns out. For a URL that has to be named in a message. */
const char *log_redact_url(const char *url, char *out, size_t len);

/* The line as it is written, newline included, into out[0..cap) (cut short to fit, a
 * valid line still); its length. suppressed: a summary's count, else 0. For tests. */
size_t log_format_line(char *out, size_t cap, enum log_format format, enum log_level level,
                       const char *event, const struct log_who *who, uint64_t suppressed,
                       const char *msg, const struct timespec *now);

#define log_debug(event, ...)                                                                      \
    (log_min_level <= LOG_DEBUG ? log_event(LOG_DEBUG, event, NULL, __VA_ARGS__) : (void)0)
#define log_info(event, ...) log_event(LOG_INFO, event, NULL, __VA_ARGS__)
#define log_warn(event, ...) log_event(LOG_WARN, event, NULL, __VA_ARGS__)
#define log_error(event, ...) log_event(LOG_ERROR, event, NULL, __VA_ARGS__)

#endif
