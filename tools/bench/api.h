/* herald-bench's HTTP/1.1 client for herald's server API: a few keep-alive
 * connections, requests pipelined on each up to a cap, replies matched in order.
 * Minimal response handling (status line, Content-Length); not a general HTTP client. */
#ifndef HERALD_BENCH_API_H
#define HERALD_BENCH_API_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct api_client;

/* One reply (status 0: the connection failed before the reply came, body empty).
 * body is borrowed for the duration of the call; sent_ns is when the request was queued. */
typedef void (*api_reply_cb)(void *ud, uint32_t tag, int status, const uint8_t *body, size_t len,
                             uint64_t sent_ns);

/* Connects nconn connections to host:port. Returns NULL when out of memory. */
struct api_client *bench_api_open(uv_loop_t *loop, const char *host, int port, const char *key,
                                  unsigned nconn, unsigned inflight_per_conn, api_reply_cb cb,
                                  void *ud);
/* Connections that are established and not failed. */
unsigned bench_api_ready(const struct api_client *a);
/* 1 if connection conn is up and has room for one more request. */
int bench_api_can_send(const struct api_client *a, unsigned conn);
/* Queue POST path with body (copied) on connection conn; sent at the next api_flush.
 * Returns 0, or -1 if api_can_send was false. */
int bench_api_post(struct api_client *a, unsigned conn, const char *path, const uint8_t *body,
                   size_t len, uint32_t tag, uint64_t now_ns);
/* Write what api_post queued (one write per connection). */
void bench_api_flush(struct api_client *a);
/* Requests sent and not answered, all connections. */
unsigned bench_api_inflight(const struct api_client *a);
/* Close every connection (unanswered requests get no callback) and free once closed. */
void bench_api_close(struct api_client *a);

#endif
