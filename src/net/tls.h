/* TLS on the listener (wss:// and https on the same port): a server context made from
 * the PEM files of tls_cert and tls_key, refcounted so that a reload (SIGHUP) can hand
 * new connections a new one while the existing ones keep theirs; and, inside net, each
 * connection's OpenSSL session behind the conn_io seam (net/conn.h). Not the rediss://
 * client (engine/redis.c). */
#ifndef HERALD_NET_TLS_H
#define HERALD_NET_TLS_H

#include <stddef.h>

struct net;
struct tls_ctx;

/* Load the certificate chain and private key (PEM files) into a new context with one
 * reference. NULL with a message naming the key (tls_cert or tls_key) in err when a
 * file cannot be read or parsed, or when the key does not match the certificate. Any
 * thread; reads the files (not on a loop). */
struct tls_ctx *tls_ctx_load(const char *cert_file, const char *key_file, char *err, size_t errlen);
/* References: any thread. The last unref frees the context (connections made from it
 * hold OpenSSL's own reference and keep what they need). */
void tls_ctx_ref(struct tls_ctx *t);
void tls_ctx_unref(struct tls_ctx *t);
/* "CN=..., sha256 AB:CD:..., expires ...", for the log. */
void tls_ctx_describe(const struct tls_ctx *t, char *out, size_t len);

/* Any thread: connections accepted from now on use t (each loop takes its own
 * reference; the caller keeps its). -1 when the server was created without TLS. */
int net_set_tls(struct net *net, struct tls_ctx *t);

#endif
