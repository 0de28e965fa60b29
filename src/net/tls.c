/* TLS on the listener (see tls.h): the server context, its swap on reload, and each
 * connection's OpenSSL session as a conn_io. OpenSSL reads the socket itself, through
 * a BIO of ours, into its own record buffer (no copy of ours on input), and writes the
 * records of a whole flush into one buffer of the loop that leaves in one send(); a
 * plaintext connection never comes here. */
#include "net/tls.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "core/log.h"
#include "net/internal.h"

/* Plaintext encrypted per send: a flush of many small frames becomes records of up to
 * 16 KB in one buffer, and a large one goes out in sends of about this much. It bounds
 * the ciphertext a connection holds when the socket is full. */
#define TLS_ROUND (64 * 1024)
#define TLS_RECORD 16384 /* the largest TLS plaintext record (RFC 8446 §5.1) */
/* Ciphertext a connection may hold for a full socket: a round and the small records
 * OpenSSL makes on its own (alerts, a KeyUpdate answered). Past it the peer is not
 * reading what it asks for, and is let go. */
#define TLS_PENDING_MAX (4 * TLS_ROUND)

struct tls_ctx {
    atomic_uint refs;
    SSL_CTX *ssl;
};

struct tls_conn {
    SSL *ssl; /* its BIO is ours: data == this */
    struct conn *c;
    struct buf pending;   /* ciphertext the socket did not take yet; empty otherwise */
    uint32_t pending_off; /* bytes of pending already sent */
    /* Plaintext at the head of the connection's queue that is already encrypted in
     * pending: reported written (so that the queue lets go of it) once pending is out. */
    size_t ahead;
    /* The loop second by which the handler wanted the first request (its timer as the
     * connection was accepted), restored once the handshake is done; 0: none. */
    uint32_t first_request_by;
    struct tls_conn *more_next, *more_prev; /* on the loop's list to be read again */
    uint8_t on_more;
    uint8_t unread;  /* the last read filled the buffer: OpenSSL may hold more */
    uint8_t drained; /* the socket's last recv was short: it had nothing more then */
    uint8_t handshaking;
};

struct tls_loop {
    struct tls_ctx *ctx; /* one reference; for connections accepted from now on */
    unsigned handshake_timeout;
    struct buf scratch;                /* this turn's ciphertext of one connection, sent at once */
    const struct tls_conn *scratch_of; /* whose records are in it */
    /* Connections whose read filled the buffer: OpenSSL may hold decrypted or read-ahead
     * records that the socket's readiness will not announce (the kernel has handed them
     * over already), so they are read again on the next turn. */
    struct tls_conn *more, *more_tail;
    unsigned nmore;
    uv_idle_t idle; /* active while the list is not empty: the loop does not sleep */
};

/* ---- the context ---- */

static int no_passphrase(char *buf, int size, int rwflag, void *ud)
{
    return 0; /* an encrypted key is refused, rather than a prompt on the terminal */
}

/* WebSocket and the API speak HTTP/1.1: a client offering h2 as well gets http/1.1;
 * one that offers neither, no ALPN (which means HTTP/1.1 too). */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *ud)
{
    for (unsigned i = 0; i < inlen;) {
        unsigned n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* The reason of OpenSSL's first error (the cause; later ones say where it surfaced). */
static const char *ssl_reason(void)
{
    unsigned long code = ERR_peek_error();
    const char *r = code ? ERR_reason_error_string(code) : NULL;
    return r ? r : "unknown error";
}

struct tls_ctx *tls_ctx_load(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    /* A file that cannot be opened says why in errno's words, not OpenSSL's. */
    if (access(cert_file, R_OK) != 0) {
        snprintf(err, errlen, "tls_cert: %s: %s", cert_file, strerror(errno));
        return NULL;
    }
    if (access(key_file, R_OK) != 0) {
        snprintf(err, errlen, "tls_key: %s: %s", key_file, strerror(errno));
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "tls_cert: cannot create a TLS context: %s", ssl_reason());
        ERR_clear_error();
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* No renegotiation (a client could make the server redo the expensive part at will),
     * no compression (CRIME); a peer that closes without close_notify has simply closed. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* An idle connection gives its record buffers back (about 34 KB). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1); /* several records per read system call */
    /* Resumption by stateless tickets only: no server-side session cache, which would
     * grow with the clients and take a lock shared by the loops. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    /* No client certificates are asked for: a short bound on what a client may send. */
    SSL_CTX_set_max_cert_list(ctx, 16 * 1024);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(err, errlen, "tls_cert: %s: not a PEM certificate (%s)", cert_file, ssl_reason());
        goto fail;
    }
    /* The key is checked against the certificate as it is loaded. */
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 &&
        ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH) {
        snprintf(err, errlen, "tls_key: %s: not an unencrypted PEM private key (%s)", key_file,
                 ssl_reason());
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "tls_key: %s does not match the certificate of tls_cert (%s)",
                 key_file, cert_file);
        goto fail;
    }
    struct tls_ctx *t = malloc(sizeof(*t));
    if (t == NULL) {
        snprintf(err, errlen, "tls_cert: out of memory");
        goto fail;
    }
    atomic_init(&t->refs, 1);
    t->ssl = ctx;
    return t;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

void tls_ctx_ref(struct tls_ctx *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void tls_ctx_unref(struct tls_ctx *t)
{
    if (t == NULL || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    SSL_CTX_free(t->ssl);
    free(t);
}

void tls_ctx_describe(const struct tls_ctx *t, char *out, size_t len)
{
    X509 *x = SSL_CTX_get0_certificate(t->ssl);
    char subject[256] = "?", fp[3 * EVP_MAX_MD_SIZE + 1] = "", until[64] = "?";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (x) {
        X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
        if (X509_digest(x, EVP_sha256(), md, &mdlen) == 1) {
            static const char hex[] = "0123456789ABCDEF";
            for (unsigned i = 0; i < mdlen; i++) {
                fp[3 * i] = hex[md[i] >> 4];
                fp[3 * i + 1] = hex[md[i] & 15];
                fp[3 * i + 2] = i + 1 < mdlen ? ':' : '\0';
            }
        }
        BIO *b = BIO_new(BIO_s_mem());
        if (b && ASN1_TIME_print(b, X509_get0_notAfter(x)) == 1) {
            int n = BIO_read(b, until, sizeof(until) - 1);
            until[n > 0 ? n : 0] = '\0';
        }
        BIO_free(b);
    }
    snprintf(out, len, "%s, sha256 %s, expires %s", subject, fp, until);
    ERR_clear_error();
}

/* ---- the socket under OpenSSL: our BIO ---- */

/* Empty the loop's scratch after a failure (what is in it belongs to a connection that
 * is going; the next one must not send it). */
static void scratch_clear(struct tls_loop *tl)
{
    if (tl->scratch.oom)
        buf_free(&tl->scratch);
    else
        buf_reset(&tl->scratch);
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

/* OpenSSL asks for ciphertext: straight from the socket into its record buffer. */
static int bio_read(BIO *b, char *buf, int len)
{
    struct tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = recv(t->c->fd, buf, (size_t)len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_read(b);
    t->drained = n < len;
    return (int)n;
}

/* OpenSSL has records to send: after what waits, or in this turn's buffer. Never
 * refused, so that SSL_write always completes (the caller bounds what it encrypts). */
static int bio_write(BIO *b, const char *p, int len)
{
    struct tls_conn *t = BIO_get_data(b);
    struct tls_loop *tl = t->c->loop->tls;
    struct buf *out = &t->pending;
    if (t->pending.len == 0) {
        out = &tl->scratch;
        /* Every path empties the scratch after its connection's call; should one not,
         * its records still never reach another connection's peer. */
        if (tl->scratch_of != t)
            scratch_clear(tl);
        tl->scratch_of = t;
    }
    BIO_clear_retry_flags(b);
    buf_append(out, p, (size_t)len);
    return out->oom ? -1 : len;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "herald conn");
    if (m && (BIO_meth_set_read(m, bio_read) != 1 || BIO_meth_set_write(m, bio_write) != 1 ||
              BIO_meth_set_ctrl(m, bio_ctrl) != 1)) {
        BIO_meth_free(m);
        m = NULL;
    }
    bio_method = m;
}

/* ---- sending ---- */

/* out_send's work; on -1 the scratch may still hold what failed to go. */
static int out_send_some(struct tls_conn *t)
{
    struct buf *scratch = &t->c->loop->tls->scratch;
    /* bio_write appends to pending whenever it holds something: then scratch is empty. */
    struct buf *b = t->pending.len ? &t->pending : scratch;
    uint32_t off = b == scratch ? 0 : t->pending_off;
    if (b->oom) {
        errno = ENOMEM;
        return -1;
    }
    while (off < b->len) {
        ssize_t w = send(t->c->fd, b->p + off, b->len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            break;
        }
        off += (uint32_t)w;
    }
    if (off == b->len) {
        if (b == scratch)
            buf_reset(scratch);
        else {
            buf_shrink(&t->pending, 0); /* only under back-pressure: give it back */
            t->pending_off = 0;
        }
        return 0;
    }
    if (b == scratch) {
        buf_append(&t->pending, scratch->p + off, scratch->len - off);
        buf_reset(scratch);
        t->pending_off = 0;
        if (t->pending.oom) {
            errno = ENOMEM;
            return -1;
        }
    } else {
        t->pending_off = off;
    }
    if (t->pending.len - t->pending_off > TLS_PENDING_MAX) {
        errno = ENOBUFS;
        return -1;
    }
    return 1;
}

/* What TLS wrote waits in pending (earlier, the socket was full) or in the loop's
 * scratch (this turn): send it. 0 when everything is out, 1 when some is left in
 * pending (the socket is full), -1 on a socket error (errno); the scratch is empty
 * after, whatever the outcome. */
static int out_send(struct tls_conn *t)
{
    int rc = out_send_some(t);
    if (rc < 0) {
        int err = errno;
        scratch_clear(t->c->loop->tls); /* never sent on the next connection's behalf */
        errno = err;
    }
    return rc;
}

/* ---- reading again what the socket will not announce ---- */

static void more_unlink(struct tls_loop *tl, struct tls_conn *t)
{
    if (!t->on_more)
        return;
    if (t->more_prev)
        t->more_prev->more_next = t->more_next;
    else
        tl->more = t->more_next;
    if (t->more_next)
        t->more_next->more_prev = t->more_prev;
    else
        tl->more_tail = t->more_prev;
    t->more_next = t->more_prev = NULL;
    t->on_more = 0;
    tl->nmore--;
}

static void on_idle(uv_idle_t *h)
{
    struct tls_loop *tl = h->data;
    /* Those on the list now, once each: one that fills its buffer again goes to the
     * end, for the next turn, so that a fast sender cannot keep the loop to itself. */
    for (unsigned n = tl->nmore; n > 0 && tl->more; n--) {
        struct tls_conn *t = tl->more;
        more_unlink(tl, t);
        /* Paused (its output is full): tls_writev asks again once the peer reads. */
        conn_read_now(t->c);
    }
    if (tl->more == NULL)
        uv_idle_stop(&tl->idle);
}

static void more_link(struct tls_conn *t)
{
    struct tls_loop *tl = t->c->loop->tls;
    if (t->on_more)
        return;
    t->on_more = 1;
    t->more_next = NULL;
    t->more_prev = tl->more_tail;
    if (tl->more_tail)
        tl->more_tail->more_next = t;
    else
        tl->more = t;
    tl->more_tail = t;
    if (tl->nmore++ == 0)
        uv_idle_start(&tl->idle, on_idle);
}

/* ---- the connection's I/O ---- */

/* A failed TLS operation: the OpenSSL error queue is per thread and must be left empty
 * for the next connection's calls. */
static ssize_t tls_failed(struct tls_conn *t, const char *what)
{
    if (log_min_level <= LOG_DEBUG) {
        char why[160];
        ERR_error_string_n(ERR_peek_last_error(), why, sizeof(why));
        log_debug("tls_failed", "tls: %s failed: %s", what, why);
    }
    ERR_clear_error();
    scratch_clear(t->c->loop->tls);
    errno = EPROTO;
    return -1;
}

static ssize_t tls_read(struct conn *c, void *buf, size_t len)
{
    struct tls_conn *t = c->tls;
    if (t->handshaking) {
        int rc = SSL_do_handshake(t->ssl);
        int e = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, rc);
        /* Our flight (ServerHello ... Finished, then a session ticket). A client that
         * does not read it cannot finish: the handshake timer ends it. */
        if (out_send(t) < 0)
            return -1;
        if (e == SSL_ERROR_WANT_READ) {
            errno = EAGAIN;
            return -1;
        }
        if (e != SSL_ERROR_NONE) /* garbage, a protocol we do not speak, EOF */
            return tls_failed(t, "handshake");
        t->handshaking = 0;
        /* The handler's deadline for the first request, counted from the accept as on a
         * plaintext connection. */
        if (t->first_request_by) {
            uint32_t now = loop_now_sec(c->loop);
            conn_timer_set(c, t->first_request_by > now ? t->first_request_by - now : 1);
        } else {
            loop_timer_clear(c->loop, &c->timer);
        }
    }
    size_t got = 0;
    int e = SSL_ERROR_NONE;
    uint32_t waiting = t->pending.len;
    t->drained = 0;
    while (got < len) {
        size_t want = len - got;
        int r = SSL_read(t->ssl, (uint8_t *)buf + got, want > INT_MAX ? INT_MAX : (int)want);
        if (r <= 0) {
            e = SSL_get_error(t->ssl, r);
            break;
        }
        got += (size_t)r;
        /* Nothing left in OpenSSL and the socket had no more: another SSL_read would
         * only cost a recv that says EAGAIN (what arrives later, the poll announces). */
        if (t->drained && !SSL_has_pending(t->ssl)) {
            e = SSL_ERROR_WANT_READ;
            break;
        }
    }
    /* Reading may have made records of ours (a KeyUpdate answered, an alert): they go
     * now, or after what already waits for the socket (then not tried again here). */
    if ((c->loop->tls->scratch.len || t->pending.len != waiting) && out_send(t) < 0)
        return -1;
    t->unread = got == len;
    if (got && e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ) {
        /* The data first; the error or EOF after it comes back on the next turn's read
         * (the SSL stays failed or shut; the socket may not say so). */
        ERR_clear_error();
        t->unread = 1;
    }
    if (t->unread)
        more_link(t);
    if (got)
        return (ssize_t)got;
    if (e == SSL_ERROR_WANT_READ) {
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0; /* close_notify, or the socket's EOF */
    if (e == SSL_ERROR_SYSCALL && errno != 0) {
        ERR_clear_error();
        return -1; /* the socket's own error, errno as recv left it */
    }
    return tls_failed(t, "read");
}

/* Plaintext iov[0..n) (the head of the connection's queue) is encrypted in rounds of
 * TLS_ROUND, the records of each round in one buffer and one send. Returns the
 * plaintext bytes whose records have gone out; a round the socket did not take
 * entirely is reported on a later call, once the rest of it has gone (conn_flush
 * presents the same bytes again and they are skipped, not encrypted twice). */
static ssize_t tls_writev(struct conn *c, const struct iovec *iov, int n)
{
    struct tls_conn *t = c->tls;
    if (t->unread)
        more_link(t); /* a paused reader that the peer's reading may have resumed */
    /* Nothing can be sent before the handshake is done, and nothing is queued before
     * the first request, which comes after it. Should something be, the connection is
     * closed rather than polled for a writability that would not help. */
    if (t->handshaking) {
        errno = EPROTO;
        return -1;
    }
    if (t->pending.len) {
        int r = out_send(t);
        if (r < 0)
            return -1;
        if (r > 0) {
            errno = EAGAIN;
            return -1;
        }
    }
    size_t done = t->ahead;
    t->ahead = 0;
    int i = 0;
    size_t off = done;
    while (i < n && off >= iov[i].iov_len)
        off -= iov[i++].iov_len;
    uint8_t rec[TLS_RECORD];
    while (i < n) {
        size_t round = 0, fill = 0;
        while (i < n && round + fill < TLS_ROUND) {
            const uint8_t *p = (const uint8_t *)iov[i].iov_base + off;
            size_t rest = iov[i].iov_len - off, room = TLS_ROUND - round - fill;
            size_t take;
            if (fill == 0 && rest >= TLS_RECORD) {
                /* A large frame: encrypted from where it is, in whole records. */
                take = rest < room ? rest : room;
                if (SSL_write(t->ssl, p, (int)take) != (int)take)
                    return tls_failed(t, "write");
                round += take;
            } else {
                take = rest < TLS_RECORD - fill ? rest : TLS_RECORD - fill;
                if (take > room)
                    take = room;
                memcpy(rec + fill, p, take);
                fill += take;
                if (fill == TLS_RECORD) {
                    if (SSL_write(t->ssl, rec, (int)fill) != (int)fill)
                        return tls_failed(t, "write");
                    round += fill;
                    fill = 0;
                }
            }
            off += take;
            if (off == iov[i].iov_len) {
                off = 0;
                i++;
            }
        }
        if (fill) {
            if (SSL_write(t->ssl, rec, (int)fill) != (int)fill)
                return tls_failed(t, "write");
            round += fill;
        }
        int r = out_send(t);
        if (r < 0)
            return -1;
        if (r > 0) {
            t->ahead = round; /* encrypted, not all sent: reported once it is */
            break;
        }
        done += round;
    }
    return (ssize_t)done;
}

static int tls_shutdown(struct conn *c)
{
    struct tls_conn *t = c->tls;
    /* close_notify, so that the peer knows the stream is complete (RFC 8446 §6.1);
     * if the socket cannot take it now, the TCP FIN says as much. */
    if (!t->handshaking) {
        if (SSL_shutdown(t->ssl) < 0)
            ERR_clear_error();
        if (out_send(t) < 0)
            ERR_clear_error();
    }
    return shutdown(c->fd, SHUT_WR);
}

const struct conn_io tls_conn_io = {tls_read, tls_writev, tls_shutdown};

int tls_conn_start(struct conn *c)
{
    struct tls_loop *tl = c->loop->tls;
    struct tls_conn *t = calloc(1, sizeof(*t));
    SSL *ssl = t ? SSL_new(tl->ctx->ssl) : NULL;
    BIO *bio = ssl && bio_method ? BIO_new(bio_method) : NULL;
    if (bio == NULL) {
        SSL_free(ssl);
        free(t);
        ERR_clear_error();
        conn_abort(c);
        return -1;
    }
    BIO_set_data(bio, t);
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl, bio, bio); /* one BIO both ways: the SSL takes the one reference */
    SSL_set_accept_state(ssl);
    t->ssl = ssl;
    t->c = c;
    t->handshaking = 1;
    c->tls = t; /* its I/O is tls_conn_io from now on */
    /* A slow or silent handshake is cut off after handshake_timeout, or sooner if the
     * handler wants the first request sooner. */
    uint32_t now = loop_now_sec(c->loop);
    t->first_request_by = c->timer.at;
    if (t->first_request_by == 0 || t->first_request_by > now + tl->handshake_timeout)
        conn_timer_set(c, tl->handshake_timeout);
    return 0;
}

void tls_conn_free(struct conn *c)
{
    struct tls_conn *t = c->tls;
    struct tls_loop *tl = c->loop->tls;
    more_unlink(tl, t);
    SSL_free(t->ssl); /* and the BIO */
    ERR_clear_error();
    if (tl->scratch_of == t) {
        scratch_clear(tl); /* empty already; and the next at this address is another */
        tl->scratch_of = NULL;
    }
    buf_free(&t->pending);
    free(t);
    c->tls = NULL;
}

/* ---- per loop ---- */

int tls_loop_init(struct loop *l, struct tls_ctx *ctx, unsigned handshake_timeout)
{
    pthread_once(&bio_once, bio_method_init);
    if (bio_method == NULL) {
        log_error("tls_out_of_memory", "tls: cannot create the connection BIO");
        return -1;
    }
    struct tls_loop *tl = calloc(1, sizeof(*tl));
    if (tl == NULL)
        return -1;
    tls_ctx_ref(ctx);
    tl->ctx = ctx;
    tl->handshake_timeout = handshake_timeout ? handshake_timeout : 10;
    uv_idle_init(&l->uv, &tl->idle);
    tl->idle.data = tl;
    l->tls = tl;
    return 0;
}

void tls_loop_close(struct loop *l)
{
    if (l->tls && !uv_is_closing((uv_handle_t *)&l->tls->idle))
        uv_close((uv_handle_t *)&l->tls->idle, NULL);
}

void tls_loop_free(struct loop *l)
{
    struct tls_loop *tl = l->tls;
    if (tl == NULL)
        return;
    tls_ctx_unref(tl->ctx);
    buf_free(&tl->scratch);
    free(tl);
    l->tls = NULL;
}

/* The swap, on the loop's thread: nothing else there reads the pointer meanwhile. */
static void on_set_tls(struct loop *l, struct loop_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct tls_ctx *old = l->tls->ctx;
        l->tls->ctx = msgs[i].ptr;
        tls_ctx_unref(old);
    }
}

int net_set_tls(struct net *net, struct tls_ctx *t)
{
    if (net->nloops == 0 || net->loops[0]->tls == NULL)
        return -1;
    for (unsigned i = 0; i < net->nloops; i++) {
        tls_ctx_ref(t);
        struct loop_msg m = {.handle = on_set_tls, .ptr = t};
        if (loop_post(net->loops[i], &m) != 0) {
            tls_ctx_unref(t);
            log_error("tls_out_of_memory", "tls: loop %u keeps its certificate (out of memory)", i);
        }
    }
    return 0;
}
