/* The fetch worker (see fetch.h): one thread, one libcurl easy handle reused (its
 * connection stays open between fetches), a deadline for the next fetch under a mutex
 * with a condition variable on CLOCK_MONOTONIC. */
#include "net/fetch.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

struct fetch {
    struct fetch_config cfg;
    char *url;
    pthread_t thread;
    pthread_mutex_t lock; /* guards next_ms and stop */
    pthread_cond_t wake;
    uint64_t next_ms; /* CLOCK_MONOTONIC ms of the next fetch; UINT64_MAX: none planned */
    int stop;
    atomic_int stopping; /* read by a transfer under way, to end it early */
};

struct body {
    uint8_t *p;
    size_t len, cap, max;
    int too_large;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* libcurl hands the body in pieces; past max the transfer is aborted (returning less
 * than given), so a hostile server cannot make us hold more. */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct body *b = ud;
    size_t len = size * n;
    if (len > b->max - b->len) {
        b->too_large = 1;
        return 0;
    }
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + len)
            cap *= 2;
        if (cap > b->max)
            cap = b->max;
        uint8_t *q = realloc(b->p, cap);
        if (q == NULL)
            return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, len);
    b->len += len;
    return len;
}

/* A transfer under way when herald stops ends now, not at its timeout. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct fetch *f = ud;
    return atomic_load(&f->stopping) ? 1 : 0;
}

static unsigned fetch_once(struct fetch *f, CURL *curl)
{
    struct body b = {NULL, 0, 0, f->cfg.max_body, 0};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    unsigned next;
    if (rc == CURLE_OK) {
        next = f->cfg.done(f->cfg.ud, (int)status, b.p ? b.p : (const uint8_t *)"", b.len, NULL);
    } else {
        char why[CURL_ERROR_SIZE + 64];
        if (b.too_large)
            snprintf(why, sizeof(why), "body over %zu bytes", f->cfg.max_body);
        else
            snprintf(why, sizeof(why), "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
        next = f->cfg.done(f->cfg.ud, 0, NULL, 0, why);
    }
    free(b.p);
    return next;
}

static void *worker(void *arg)
{
    struct fetch *f = arg;
    CURL *curl = curl_easy_init();
    if (curl) {
        curl_easy_setopt(curl, CURLOPT_URL, f->url);
        /* Threads and signals: no SIGALRM for name resolution timeouts. */
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)f->cfg.timeout_ms);
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)f->cfg.timeout_ms);
        curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->cfg.max_body);
        curl_easy_setopt(curl, CURLOPT_USERAGENT, "herald");
        curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(curl, CURLOPT_XFERINFODATA, f);
    }
    pthread_mutex_lock(&f->lock);
    while (!f->stop) {
        uint64_t now = now_ms();
        if (now < f->next_ms) {
            if (f->next_ms == UINT64_MAX) {
                pthread_cond_wait(&f->wake, &f->lock);
            } else {
                struct timespec ts = {(time_t)(f->next_ms / 1000),
                                      (long)(f->next_ms % 1000) * 1000000};
                pthread_cond_timedwait(&f->wake, &f->lock, &ts);
            }
            continue;
        }
        /* Asked for during this fetch: once more after it. */
        f->next_ms = UINT64_MAX;
        pthread_mutex_unlock(&f->lock);
        if (f->cfg.start)
            f->cfg.start(f->cfg.ud);
        unsigned delay =
            curl ? fetch_once(f, curl) : f->cfg.done(f->cfg.ud, 0, NULL, 0, "cannot start libcurl");
        pthread_mutex_lock(&f->lock);
        uint64_t at = now_ms() + delay;
        if (at < f->next_ms)
            f->next_ms = at;
    }
    pthread_mutex_unlock(&f->lock);
    curl_easy_cleanup(curl);
    return NULL;
}

struct fetch *fetch_start(const struct fetch_config *cfg, char *err, size_t errlen)
{
    if (strncmp(cfg->url, "http://", 7) != 0 && strncmp(cfg->url, "https://", 8) != 0) {
        snprintf(err, errlen, "not an http:// or https:// URL");
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "cannot initialise libcurl");
        return NULL;
    }
    struct fetch *f = calloc(1, sizeof(*f));
    if (f == NULL || (f->url = strdup(cfg->url)) == NULL) {
        free(f);
        curl_global_cleanup();
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f->cfg = *cfg;
    f->cfg.url = f->url;
    f->next_ms = 0;
    pthread_mutex_init(&f->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->wake, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&f->thread, NULL, worker, f);
    if (rc != 0) {
        pthread_cond_destroy(&f->wake);
        pthread_mutex_destroy(&f->lock);
        free(f->url);
        free(f);
        curl_global_cleanup();
        snprintf(err, errlen, "cannot start its thread: %s", strerror(rc));
        return NULL;
    }
    return f;
}

void fetch_soon(struct fetch *f, unsigned delay_ms)
{
    pthread_mutex_lock(&f->lock);
    uint64_t at = now_ms() + delay_ms;
    if (at < f->next_ms) {
        f->next_ms = at;
        pthread_cond_signal(&f->wake);
    }
    pthread_mutex_unlock(&f->lock);
}

void fetch_stop(struct fetch *f)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->lock);
    f->stop = 1;
    atomic_store(&f->stopping, 1);
    pthread_cond_signal(&f->wake);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->thread, NULL);
    pthread_cond_destroy(&f->wake);
    pthread_mutex_destroy(&f->lock);
    free(f->url);
    free(f);
    curl_global_cleanup();
}
