/* The key set (see keys.h): configured keys, JWKS parsing (RFC 7517, RFC 7518 section 6,
 * RFC 8037 section 2) into OpenSSL keys, the shared JWKS swapped under a mutex with a
 * reference count, and the waiters of a refetch. Not the signature checks (auth/jwt.c),
 * not the fetching (net/fetch.c, wired by main.c). */
#include "auth/keys.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* RFC 7518 section 3.3: RSA keys of 2048 bits or more. The cost of a check grows with
 * the modulus (about its square) and with the exponent's length: bounded, so that a
 * hostile JWKS cannot make every connect expensive. */
#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 8192
#define RSA_MAX_E_BYTES 8

struct jwks_entry {
    struct jwt_key key;
    size_t kid_len;
    uint8_t kid[JWT_MAX_KID];
};

struct keys_jwks {
    atomic_uint refs;
    size_t n;
    struct jwks_entry *keys;
};

struct waiter {
    struct waiter *next;
    void (*done)(void *ud);
    void *ud;
    uint32_t need; /* released by the end of the fetch that starts as number need */
};

struct keys {
    struct jwt_key hmac, rsa, ec; /* kind set; absent when secret_len == 0 / pkey NULL */
    uint8_t *secret;
    int jwks_enabled;
    char *audience, *issuer;
    unsigned leeway;

    pthread_mutex_t lock; /* guards what follows */
    struct keys_jwks *jwks;
    void (*fetch)(void *ud, unsigned delay_ms);
    void *fetch_ud;
    int fetch_asked;        /* a fetch was asked for and has not ended yet */
    int in_flight;          /* a fetch has started and not ended */
    int asked_after;        /* one more was asked for, to start after the one in flight */
    uint32_t started;       /* fetches started (keys_fetch_starting) */
    uint64_t started_ms;    /* when the one in flight started */
    uint64_t last_fetch_ms; /* when the last one ended; 0: never */
    struct waiter *waiters, **waiters_tail; /* in the order they came */
    unsigned nwaiters;
};

/* ---- configured keys ---- */

/* A public key from PEM text: SubjectPublicKeyInfo, PKCS#1 RSAPublicKey, or the key
 * of a certificate (what Centrifugo accepts for token_rsa_public_key). */
static EVP_PKEY *pem_public_key(const char *pem, const char *type)
{
    EVP_PKEY *pkey = NULL;
    OSSL_DECODER_CTX *dctx =
        OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, type, EVP_PKEY_PUBLIC_KEY, NULL, NULL);
    const unsigned char *p = (const unsigned char *)pem;
    size_t len = strlen(pem);
    if (dctx != NULL)
        OSSL_DECODER_from_data(dctx, &p, &len);
    OSSL_DECODER_CTX_free(dctx);
    if (pkey == NULL) {
        BIO *bio = BIO_new_mem_buf(pem, -1);
        X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        if (x != NULL)
            pkey = X509_get_pubkey(x);
        X509_free(x);
        BIO_free(bio);
    }
    ERR_clear_error();
    return pkey;
}

/* The kind of an EC key by its curve, or -1 for a curve we do not verify. */
static int ec_kind(EVP_PKEY *pkey)
{
    char group[64];
    size_t n = 0;
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       &n) != 1)
        return -1;
    if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
        return JWT_KEY_EC_P256;
    if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
        return JWT_KEY_EC_P384;
    return -1;
}

struct keys *keys_new(const struct keys_config *c, char *err, size_t errlen)
{
    struct keys *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&k->lock, NULL);
    k->hmac.kind = JWT_KEY_HMAC;
    k->rsa.kind = JWT_KEY_RSA;
    k->ec.kind = JWT_KEY_EC_P256;
    k->jwks_enabled = c->jwks;
    k->leeway = c->leeway;
    if ((c->audience && c->audience[0] && (k->audience = strdup(c->audience)) == NULL) ||
        (c->issuer && c->issuer[0] && (k->issuer = strdup(c->issuer)) == NULL) ||
        (c->hmac_secret && c->hmac_secret[0] &&
         (k->secret = (uint8_t *)strdup(c->hmac_secret)) == NULL)) {
        snprintf(err, errlen, "out of memory");
        keys_free(k);
        return NULL;
    }
    if (k->secret) {
        k->hmac.secret = k->secret;
        k->hmac.secret_len = strlen(c->hmac_secret);
    }
    if (c->rsa_pem && c->rsa_pem[0]) {
        EVP_PKEY *pkey = pem_public_key(c->rsa_pem, "RSA");
        if (pkey == NULL || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
            snprintf(err, errlen, "token_rsa_public_key: not a PEM RSA public key");
            EVP_PKEY_free(pkey);
            keys_free(k);
            return NULL;
        }
        if (EVP_PKEY_get_bits(pkey) < RSA_MIN_BITS || EVP_PKEY_get_bits(pkey) > RSA_MAX_BITS) {
            snprintf(err, errlen, "token_rsa_public_key: %d bits; 2048 to 8192 are accepted",
                     EVP_PKEY_get_bits(pkey));
            EVP_PKEY_free(pkey);
            keys_free(k);
            return NULL;
        }
        k->rsa.pkey = pkey;
    }
    if (c->ecdsa_pem && c->ecdsa_pem[0]) {
        EVP_PKEY *pkey = pem_public_key(c->ecdsa_pem, "EC");
        int kind = pkey && EVP_PKEY_get_base_id(pkey) == EVP_PKEY_EC ? ec_kind(pkey) : -1;
        if (kind < 0) {
            snprintf(err, errlen,
                     "token_ecdsa_public_key: not a PEM EC public key on P-256 or P-384");
            EVP_PKEY_free(pkey);
            keys_free(k);
            return NULL;
        }
        k->ec.kind = (enum jwt_key_kind)kind;
        k->ec.pkey = pkey;
    }
    return k;
}

void keys_free(struct keys *k)
{
    if (k == NULL)
        return;
    keys_jwks_unref(k->jwks);
    EVP_PKEY_free(k->rsa.pkey);
    EVP_PKEY_free(k->ec.pkey);
    if (k->secret) {
        OPENSSL_cleanse(k->secret, k->hmac.secret_len);
        free(k->secret);
    }
    for (struct waiter *w = k->waiters, *next; w; w = next) {
        next = w->next;
        free(w);
    }
    free(k->audience);
    free(k->issuer);
    pthread_mutex_destroy(&k->lock);
    free(k);
}

/* ---- JWKS ---- */

/* A base64url member of a JWK into a fresh buffer (NULL when absent, not a string, not
 * strict base64url, empty or longer than max bytes). */
static uint8_t *b64_member(const uint8_t *js, const jsmntok_t *t, int ntok, int obj,
                           const char *name, size_t max, size_t *len)
{
    int i = json_obj_get(js, t, ntok, obj, name);
    if (i < 0 || t[i].type != JSMN_STRING)
        return NULL;
    size_t n = (size_t)(t[i].end - t[i].start);
    if (n == 0 || n > (max * 4 + 2) / 3)
        return NULL;
    uint8_t *out = malloc(n);
    ssize_t d = out ? jwt_b64url_decode(js + t[i].start, n, out) : -1;
    if (d <= 0 || (size_t)d > max) {
        free(out);
        return NULL;
    }
    *len = (size_t)d;
    return out;
}

static int span_is(struct json_span s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = params ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *jwk_rsa(const uint8_t *js, const jsmntok_t *t, int ntok, int obj)
{
    size_t nl = 0, el = 0;
    uint8_t *n = b64_member(js, t, ntok, obj, "n", RSA_MAX_BITS / 8 + 1, &nl);
    uint8_t *e = b64_member(js, t, ntok, obj, "e", RSA_MAX_E_BYTES, &el);
    BIGNUM *bn = n ? BN_bin2bn(n, (int)nl, NULL) : NULL;
    BIGNUM *be = e ? BN_bin2bn(e, (int)el, NULL) : NULL;
    EVP_PKEY *pkey = NULL;
    /* An even or tiny exponent is no RSA key (RFC 8017 section 3.1). */
    if (bn && be && BN_num_bits(bn) >= RSA_MIN_BITS && BN_num_bits(bn) <= RSA_MAX_BITS &&
        BN_is_odd(bn) && BN_is_odd(be) && BN_num_bits(be) >= 2) {
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1)
            pkey = pkey_fromdata("RSA", bld);
        OSSL_PARAM_BLD_free(bld);
    }
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return pkey;
}

static EVP_PKEY *jwk_ec(const uint8_t *js, const jsmntok_t *t, int ntok, int obj, size_t half,
                        const char *group)
{
    size_t xl = 0, yl = 0;
    uint8_t *x = b64_member(js, t, ntok, obj, "x", half, &xl);
    uint8_t *y = b64_member(js, t, ntok, obj, "y", half, &yl);
    EVP_PKEY *pkey = NULL;
    /* RFC 7518 section 6.2.1.2: x and y are the full length of the field, leading zeros
     * kept; the point is decoded uncompressed (SEC 1 section 2.3.3). */
    if (x && y && xl == half && yl == half) {
        uint8_t point[1 + 2 * 48];
        point[0] = 0x04;
        memcpy(point + 1, x, half);
        memcpy(point + 1 + half, y, half);
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (bld &&
            OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) == 1 &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * half) ==
                1)
            pkey = pkey_fromdata("EC", bld);
        OSSL_PARAM_BLD_free(bld);
        /* A point off the curve would make every check meaningless (invalid-curve
         * attacks): refuse it here, once, not at each token. */
        if (pkey) {
            EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
            if (ctx == NULL || EVP_PKEY_public_check(ctx) != 1) {
                EVP_PKEY_free(pkey);
                pkey = NULL;
            }
            EVP_PKEY_CTX_free(ctx);
        }
    }
    free(x);
    free(y);
    return pkey;
}

static EVP_PKEY *jwk_ed25519(const uint8_t *js, const jsmntok_t *t, int ntok, int obj)
{
    size_t xl = 0;
    uint8_t *x = b64_member(js, t, ntok, obj, "x", 32, &xl);
    EVP_PKEY *pkey = NULL;
    if (x && xl == 32)
        pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, 32);
    free(x);
    return pkey;
}

/* One member of "keys": 0 with e filled, -1 skipped. */
static int jwk_parse(uint8_t *js, const jsmntok_t *t, int ntok, int obj, struct jwks_entry *e)
{
    if (t[obj].type != JSMN_OBJECT)
        return -1;
    struct json_span kty = {0}, kid = {0}, alg = {0}, use = {0}, crv = {0};
    if (json_obj_string(js, t, ntok, obj, "kty", &kty) != 1 ||
        json_obj_string(js, t, ntok, obj, "kid", &kid) != 1 || kid.len == 0 ||
        kid.len > JWT_MAX_KID)
        return -1;
    int has_alg = json_obj_string(js, t, ntok, obj, "alg", &alg);
    int has_use = json_obj_string(js, t, ntok, obj, "use", &use);
    int has_crv = json_obj_string(js, t, ntok, obj, "crv", &crv);
    /* RFC 7517 section 4.2: "sig" keys verify; "enc" ones are not for us. */
    if (has_alg < 0 || has_use < 0 || has_crv < 0 || (has_use && !span_is(use, "sig")))
        return -1;
    memset(e, 0, sizeof(*e));
    e->key.alg = JWT_ALG_UNKNOWN;
    if (has_alg) {
        /* RFC 7517 section 4.4: a key that names its algorithm is used with no other. */
        e->key.alg = jwt_alg_parse(alg.p, alg.len);
        if (e->key.alg == JWT_ALG_UNKNOWN)
            return -1;
    }
    EVP_PKEY *pkey = NULL;
    if (span_is(kty, "RSA")) {
        e->key.kind = JWT_KEY_RSA;
        pkey = jwk_rsa(js, t, ntok, obj);
    } else if (span_is(kty, "EC") && has_crv && span_is(crv, "P-256")) {
        e->key.kind = JWT_KEY_EC_P256;
        pkey = jwk_ec(js, t, ntok, obj, 32, "prime256v1");
    } else if (span_is(kty, "EC") && has_crv && span_is(crv, "P-384")) {
        e->key.kind = JWT_KEY_EC_P384;
        pkey = jwk_ec(js, t, ntok, obj, 48, "secp384r1");
    } else if (span_is(kty, "OKP") && has_crv && span_is(crv, "Ed25519")) {
        e->key.kind = JWT_KEY_ED25519;
        pkey = jwk_ed25519(js, t, ntok, obj);
    }
    ERR_clear_error();
    if (pkey == NULL)
        return -1;
    e->key.pkey = pkey;
    /* An alg that the key cannot do (an RSA key saying ES256) makes the key unusable. */
    if (e->key.alg != JWT_ALG_UNKNOWN && !jwt_key_allows(&e->key, e->key.alg)) {
        EVP_PKEY_free(pkey);
        return -1;
    }
    memcpy(e->kid, kid.p, kid.len);
    e->kid_len = kid.len;
    return 0;
}

struct keys_jwks *keys_jwks_parse(const uint8_t *p, size_t len, char *err, size_t errlen)
{
    if (len > UINT32_MAX) {
        snprintf(err, errlen, "too large");
        return NULL;
    }
    /* Parsed in a copy: members are unescaped in place. */
    uint8_t *js = malloc(len ? len : 1);
    /* As in jwt.c: every token but the first takes at least two bytes of input. */
    unsigned max_tok = (unsigned)(len / 2 + 2);
    jsmntok_t *t = malloc(max_tok * sizeof(*t));
    struct keys_jwks *j = calloc(1, sizeof(*j));
    if (js == NULL || t == NULL || j == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    memcpy(js, p, len);
    int ntok = json_tokenize(js, len, t, max_tok);
    int arr = ntok > 0 && t[0].type == JSMN_OBJECT ? json_obj_get(js, t, ntok, 0, "keys") : -1;
    if (arr < 0 || t[arr].type != JSMN_ARRAY) {
        snprintf(err, errlen, "not a JWKS document (a JSON object with a \"keys\" array)");
        goto fail;
    }
    size_t cap = (size_t)t[arr].size < KEYS_JWKS_MAX ? (size_t)t[arr].size : KEYS_JWKS_MAX;
    j->keys = calloc(cap ? cap : 1, sizeof(*j->keys));
    if (j->keys == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    atomic_init(&j->refs, 1);
    int end = json_skip(t, ntok, arr);
    for (int i = arr + 1; i < end && j->n < cap; i = json_skip(t, ntok, i)) {
        struct jwks_entry *e = &j->keys[j->n];
        if (jwk_parse(js, t, ntok, i, e) != 0)
            continue;
        if (keys_jwks_find(j, e->kid, e->kid_len) != NULL) {
            EVP_PKEY_free(e->key.pkey);
            continue;
        }
        j->n++;
    }
    free(js);
    free(t);
    return j;
fail:
    free(js);
    free(t);
    if (j)
        free(j->keys);
    free(j);
    return NULL;
}

void keys_jwks_unref(struct keys_jwks *j)
{
    if (j == NULL || atomic_fetch_sub(&j->refs, 1) != 1)
        return;
    for (size_t i = 0; i < j->n; i++)
        EVP_PKEY_free(j->keys[i].key.pkey);
    free(j->keys);
    free(j);
}

size_t keys_jwks_count(const struct keys_jwks *j)
{
    return j ? j->n : 0;
}

const struct jwt_key *keys_jwks_find(const struct keys_jwks *j, const uint8_t *kid, size_t len)
{
    for (size_t i = 0; j && i < j->n; i++)
        if (j->keys[i].kid_len == len && memcmp(j->keys[i].kid, kid, len) == 0)
            return &j->keys[i].key;
    return NULL;
}

int keys_load_jwks(struct keys *k, const uint8_t *p, size_t len, char *err, size_t errlen)
{
    struct keys_jwks *j = keys_jwks_parse(p, len, err, errlen);
    if (j == NULL)
        return -1;
    pthread_mutex_lock(&k->lock);
    struct keys_jwks *old = k->jwks;
    k->jwks = j;
    pthread_mutex_unlock(&k->lock);
    keys_jwks_unref(old); /* freed once the last reader lets go */
    return 0;
}

size_t keys_jwks_size(struct keys *k)
{
    pthread_mutex_lock(&k->lock);
    size_t n = keys_jwks_count(k->jwks);
    pthread_mutex_unlock(&k->lock);
    return n;
}

/* ---- verification ---- */

/* The configured key for a token of alg without a JWKS key, or NULL. */
static const struct jwt_key *configured_key(const struct keys *k, enum jwt_alg alg)
{
    const struct jwt_key *cands[] = {&k->hmac, &k->rsa, &k->ec};
    for (size_t i = 0; i < 3; i++) {
        const struct jwt_key *key = cands[i];
        int present = key->kind == JWT_KEY_HMAC ? key->secret_len != 0 : key->pkey != NULL;
        if (present && jwt_key_allows(key, alg))
            return key;
    }
    return NULL;
}

int keys_verify(struct keys *k, const uint8_t *token, size_t len, int64_t now,
                struct jwt_claims *claims)
{
    memset(claims, 0, sizeof(*claims));
    struct jwt_header h;
    if (jwt_header_parse(token, len, &h) != 0 || h.alg == JWT_ALG_UNKNOWN)
        return JWT_INVALID;
    struct jwt_checks chk = {now, k->leeway, k->audience, k->issuer};
    if (h.has_kid && k->jwks_enabled) {
        /* One reference for the check: a new document may replace this one meanwhile. */
        pthread_mutex_lock(&k->lock);
        struct keys_jwks *j = k->jwks;
        if (j)
            atomic_fetch_add(&j->refs, 1);
        pthread_mutex_unlock(&k->lock);
        const struct jwt_key *key = keys_jwks_find(j, h.kid, h.kid_len);
        if (key) {
            int rc = jwt_verify(token, len, key, &chk, claims);
            keys_jwks_unref(j);
            return rc;
        }
        keys_jwks_unref(j);
    }
    const struct jwt_key *key = configured_key(k, h.alg);
    if (key)
        return jwt_verify(token, len, key, &chk, claims);
    return h.has_kid && k->jwks_enabled ? JWT_UNKNOWN_KID : JWT_INVALID;
}

/* ---- refetch ---- */

void keys_set_fetch(struct keys *k, void (*fetch)(void *ud, unsigned delay_ms), void *ud)
{
    pthread_mutex_lock(&k->lock);
    k->fetch = fetch;
    k->fetch_ud = ud;
    pthread_mutex_unlock(&k->lock);
}

/* The wait before the next fetch may start: none, or what is left of the minimum
 * interval since the last one ended (or, while one is in flight, since it started). */
static unsigned pace(const struct keys *k, uint64_t now_ms)
{
    uint64_t last = k->in_flight ? k->started_ms : k->last_fetch_ms;
    uint64_t since = now_ms - last;
    return last && since < KEYS_REFETCH_MIN_MS ? (unsigned)(KEYS_REFETCH_MIN_MS - since) : 0;
}

int keys_await(struct keys *k, uint64_t now_ms, void (*done)(void *ud), void *ud)
{
    struct waiter *w = malloc(sizeof(*w));
    if (w == NULL)
        return -1;
    pthread_mutex_lock(&k->lock);
    if (k->fetch == NULL || k->nwaiters >= KEYS_MAX_WAITERS) {
        pthread_mutex_unlock(&k->lock);
        free(w);
        return -1;
    }
    /* A fetch already under way may have been answered before the key it needs was
     * published (a key rotation): only one that starts from now on releases it. But the
     * first document, on its way at start, serves everyone who came meanwhile (no key is
     * known yet: those are the tokens of every reconnecting client). */
    int first = k->in_flight && k->last_fetch_ms == 0;
    *w = (struct waiter){NULL, done, ud, first ? k->started : k->started + 1};
    if (k->waiters == NULL)
        k->waiters_tail = &k->waiters;
    *k->waiters_tail = w;
    k->waiters_tail = &w->next;
    k->nwaiters++;
    /* One fetch answers everyone waiting; the next one no sooner than the minimum
     * interval after the last, whatever the tokens say (a flood of made-up kids must
     * not make us hammer the JWKS server). Under the lock, so that once
     * keys_set_fetch(NULL) returns nobody calls the old source (it is stopped and freed
     * next). */
    if (!first && (k->in_flight ? !k->asked_after : !k->fetch_asked)) {
        if (k->in_flight)
            k->asked_after = 1; /* the source runs it after the one in flight */
        else
            k->fetch_asked = 1;
        k->fetch(k->fetch_ud, pace(k, now_ms));
    }
    pthread_mutex_unlock(&k->lock);
    return 0;
}

void keys_fetch_starting(struct keys *k, uint64_t now_ms)
{
    pthread_mutex_lock(&k->lock);
    k->started++;
    k->in_flight = 1;
    k->started_ms = now_ms ? now_ms : 1;
    pthread_mutex_unlock(&k->lock);
}

void keys_fetched(struct keys *k, uint64_t now_ms)
{
    pthread_mutex_lock(&k->lock);
    /* Released: those this fetch (or an earlier one) was started for, or every waiter
     * when there is no source any more. The others stay, in order, for the next. */
    struct waiter *w = NULL, **wt = &w, *keep = NULL, **kt = &keep;
    unsigned kept = 0;
    for (struct waiter *x = k->waiters, *next; x; x = next) {
        next = x->next;
        x->next = NULL;
        if (k->fetch == NULL || (int32_t)(x->need - k->started) <= 0) {
            *wt = x;
            wt = &x->next;
        } else {
            *kt = x;
            kt = &x->next;
            kept++;
        }
    }
    k->waiters = keep;
    k->waiters_tail = keep ? kt : &k->waiters;
    k->nwaiters = kept;
    k->in_flight = 0;
    k->last_fetch_ms = now_ms ? now_ms : 1;
    k->fetch_asked = k->asked_after;
    k->asked_after = 0;
    if (kept && !k->fetch_asked && k->fetch) {
        k->fetch_asked = 1;
        k->fetch(k->fetch_ud, pace(k, now_ms));
    }
    pthread_mutex_unlock(&k->lock);
    /* Outside the lock: a waiter may verify (and so lock) again at once. */
    while (w) {
        struct waiter *next = w->next;
        w->done(w->ud);
        free(w);
        w = next;
    }
}
