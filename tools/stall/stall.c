/* herald-stall: how long this machine takes a CPU away from a program that wants it.
 *
 * One thread per CPU given (pinned), each spinning on CLOCK_MONOTONIC for the duration and
 * counting the gaps between two readings: on an idle machine every gap above a few
 * microseconds is time the CPU ran something else (another process, the kernel, or, on a
 * virtual machine, the host). A benchmark's tail latency cannot be lower than the longest
 * of these: docs/benchmarks.md quotes it next to the latency rows.
 *
 *   herald-stall [-d SECONDS] [CPU ...]     (default: 5 s on CPUs 0 and 1)
 *
 * Prints one line per CPU: gaps over 0.1, 1, 5 and 10 ms, the longest, and the share of
 * the time lost in gaps over 0.1 ms. */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct probe {
    int cpu;
    double seconds;
    uint64_t over[4]; /* > 0.1, 1, 5, 10 ms */
    uint64_t longest, lost;
};

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void *spin(void *arg)
{
    struct probe *p = arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(p->cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
        fprintf(stderr, "herald-stall: CPU %d: cannot pin, measuring unpinned\n", p->cpu);
    static const uint64_t limits[4] = {100000, 1000000, 5000000, 10000000};
    uint64_t start = now_ns(), end = start + (uint64_t)(p->seconds * 1e9), last = start, t;
    while ((t = now_ns()) < end) {
        uint64_t gap = t - last;
        last = t;
        if (gap <= limits[0])
            continue;
        p->lost += gap;
        if (gap > p->longest)
            p->longest = gap;
        for (int i = 0; i < 4; i++)
            p->over[i] += gap > limits[i];
    }
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = 5;
    int cpus[64], n = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1] == 'd' && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (argv[i][0] >= '0' && argv[i][0] <= '9' && n < 64) {
            cpus[n++] = atoi(argv[i]);
        } else {
            fprintf(stderr, "usage: herald-stall [-d SECONDS] [CPU ...]\n");
            return 2;
        }
    }
    if (seconds <= 0 || seconds > 600) {
        fprintf(stderr, "herald-stall: -d takes 0 to 600 seconds\n");
        return 2;
    }
    if (n == 0) {
        cpus[n++] = 0;
        cpus[n++] = 1;
    }
    struct probe p[64];
    pthread_t th[64];
    for (int i = 0; i < n; i++) {
        p[i] = (struct probe){.cpu = cpus[i], .seconds = seconds};
        if (pthread_create(&th[i], NULL, spin, &p[i]) != 0) {
            fprintf(stderr, "herald-stall: cannot start a thread\n");
            return 1;
        }
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < n; i++)
        printf("CPU %d, %.0f s: gaps > 0.1 ms %llu, > 1 ms %llu, > 5 ms %llu, > 10 ms %llu; "
               "longest %.2f ms; %.3f%% of the time lost\n",
               p[i].cpu, seconds, (unsigned long long)p[i].over[0],
               (unsigned long long)p[i].over[1], (unsigned long long)p[i].over[2],
               (unsigned long long)p[i].over[3], (double)p[i].longest / 1e6,
               100.0 * (double)p[i].lost / (seconds * 1e9));
    return 0;
}
