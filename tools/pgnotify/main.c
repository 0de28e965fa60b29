/* pgnotify: the seeds' way of following a table, as a ceiling for herald's change feed. A
 * minimal libpq client: LISTEN on one channel, then wait on PQsocket() with poll(), and for
 * each notification (PQconsumeInput / PQnotifies) read the row's "ts" (microseconds since the
 * epoch, clock_timestamp() at the insert) from its JSON payload (row_to_json(NEW)) and take
 * now - ts as the commit-to-client latency (same machine, same clock).
 *
 *   pgnotify --conninfo STR [--channel bench] [--idle-ms 2000] [--max-s 30] [--ready FILE]
 *
 * Writes FILE once listening. Ends after --idle-ms without a notification (once one came), or
 * after --max-s. Prints key=value lines: received, rate (received over first..last arrival),
 * the count and rate at SIGUSR1 (sent when the load ends: the rate while it ran),
 * p50/p90/p99/max latency in ms, order errors (a writer's "seq" not one more than its last:
 * lost, repeated or reordered), duplicate ids, and its own CPU seconds. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>

#include <libpq-fe.h>

#define MAX_WRITERS 1024

static volatile sig_atomic_t got_usr1;
static void on_usr1(int sig) { (void)sig; got_usr1 = 1; }

static int64_t now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static int64_t mono_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* The integer after "key": in s, or -1. */
static long long field(const char *s, const char *key) {
    const char *p = strstr(s, key);
    if (!p) return -1;
    p += strlen(key);
    while (*p == ' ') p++;
    return strtoll(p, NULL, 10);
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *conninfo = NULL, *channel = "bench", *ready = NULL;
    long idle_ms = 2000, max_s = 30;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--conninfo")) conninfo = argv[i + 1];
        else if (!strcmp(argv[i], "--channel")) channel = argv[i + 1];
        else if (!strcmp(argv[i], "--idle-ms")) idle_ms = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-s")) max_s = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--ready")) ready = argv[i + 1];
        else { fprintf(stderr, "pgnotify: unknown option %s\n", argv[i]); return 2; }
    }
    if (!conninfo) { fprintf(stderr, "usage: pgnotify --conninfo STR [--channel C] [--idle-ms N] [--max-s N] [--ready FILE]\n"); return 2; }
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) { fprintf(stderr, "pgnotify: %s", PQerrorMessage(c)); return 1; }
    char sql[256];
    snprintf(sql, sizeof sql, "LISTEN \"%s\"", channel);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) { fprintf(stderr, "pgnotify: %s", PQerrorMessage(c)); return 1; }
    PQclear(r);
    signal(SIGUSR1, on_usr1);
    if (ready) { FILE *f = fopen(ready, "w"); if (f) fclose(f); }
    size_t n_usr1 = 0;
    int64_t t_usr1 = 0;

    size_t n = 0, cap = 1 << 20;
    int64_t *lat = malloc(cap * sizeof *lat);
    long long *last_seq = calloc(MAX_WRITERS, sizeof *last_seq);
    size_t idcap = 1 << 24; /* ids seen, a bit each, grown as needed */
    uint8_t *ids = calloc(idcap / 8, 1);
    long long order_errors = 0, dups = 0, unparsed = 0;
    int64_t first = 0, last = 0, first_rt = 0, last_rt = 0, start = mono_us();
    int fd = PQsocket(c);
    for (;;) {
        int64_t m = mono_us();
        if (got_usr1 == 1) { got_usr1 = 2; n_usr1 = n; t_usr1 = m; }
        if (m - start > max_s * 1000000) break;
        if (n && m - last > idle_ms * 1000) break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, 100);
        if (pr < 0 && errno != EINTR) { perror("poll"); break; }
        if (pr <= 0) continue;
        if (!PQconsumeInput(c)) { fprintf(stderr, "pgnotify: %s", PQerrorMessage(c)); break; }
        PGnotify *nt;
        while ((nt = PQnotifies(c))) {
            int64_t t = now_us();
            last = mono_us();
            last_rt = t;
            if (!n) first = last, first_rt = t;
            long long ts = field(nt->extra, "\"ts\":"), id = field(nt->extra, "\"id\":");
            long long w = field(nt->extra, "\"writer\":"), seq = field(nt->extra, "\"seq\":");
            if (ts < 0 || id < 0 || w < 0 || w >= MAX_WRITERS) { unparsed++; PQfreemem(nt); continue; }
            if (n == cap) lat = realloc(lat, (cap *= 2) * sizeof *lat);
            lat[n++] = t - ts;
            if (seq != last_seq[w] + 1) order_errors++;
            last_seq[w] = seq;
            while ((size_t)id >= idcap) {
                ids = realloc(ids, idcap / 4);
                memset(ids + idcap / 8, 0, idcap / 8);
                idcap *= 2;
            }
            if (ids[id / 8] & (1 << (id % 8))) dups++;
            ids[id / 8] |= 1 << (id % 8);
            PQfreemem(nt);
        }
    }
    qsort(lat, n, sizeof *lat, cmp64);
    double span = (last - first) / 1e6;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("received=%zu\n", n);
    printf("rate=%.0f\n", span > 0 ? (n - 1) / span : 0.0);
    printf("span_s=%.3f\n", span);
    printf("at_usr1=%zu\nrate_at_usr1=%.0f\n", n_usr1, n_usr1 > 1 && t_usr1 > first ? (n_usr1 - 1) / ((t_usr1 - first) / 1e6) : 0.0);
    printf("first_us=%lld\nlast_us=%lld\n", (long long)first_rt, (long long)last_rt);
#define PCT(q) (n ? lat[(size_t)((n - 1) * (q))] / 1000.0 : 0.0)
    printf("p50_ms=%.2f\np90_ms=%.2f\np99_ms=%.2f\nmax_ms=%.2f\n", PCT(0.5), PCT(0.9), PCT(0.99), PCT(1.0));
    printf("order_errors=%lld\nduplicates=%lld\nunparsed=%lld\n", order_errors, dups, unparsed);
    printf("cpu_s=%.2f\n", ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    PQfinish(c);
    return 0;
}
