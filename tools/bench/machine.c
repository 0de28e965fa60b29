/* What the machine did during a run: the time its hypervisor kept the CPUs from running
 * ("steal" in /proc/stat). On a virtual machine a vCPU descheduled for tens of
 * milliseconds stops the server and the bench alike, and every publication sent around
 * it waits that long: the tail of a run's latency is then the host's, not the server's. */
#include "bench.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void bench_cpus_of(int pid, cpu_set_t *set)
{
    CPU_ZERO(set);
    if (pid > 0 && sched_getaffinity(pid, sizeof(*set), set) == 0 && CPU_COUNT(set) > 0)
        return;
    CPU_ZERO(set);
    for (int i = 0; i < CPU_SETSIZE; i++)
        CPU_SET(i, set);
}

long long bench_steal_ns(const cpu_set_t *set)
{
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return -1;
    char line[512];
    unsigned long long sum = 0;
    int found = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "cpu", 3) != 0)
            break; /* the cpu lines come first */
        int cpu = -1, off = 0;
        if (line[3] == ' ') {
            if (set != NULL)
                continue;
            off = 3;
        } else {
            if (set == NULL || sscanf(line + 3, "%d%n", &cpu, &off) != 1 || cpu < 0 ||
                cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, set))
                continue;
            off += 3;
        }
        /* user nice system idle iowait irq softirq steal */
        unsigned long long v[8];
        if (sscanf(line + off, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7]) != 8)
            continue;
        sum += v[7];
        found = 1;
    }
    fclose(f);
    if (!found)
        return -1;
    return (long long)(sum * (1000000000ull / (unsigned long long)sysconf(_SC_CLK_TCK)));
}
