/* Timing and reporting helpers shared by the benchmarks. */
#ifndef IKV_TOOLS_BENCH_UTIL_H
#define IKV_TOOLS_BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>

/* Monotonic clock in nanoseconds. */
uint64_t bench_now_ns(void);
/* Median of n samples (sorts them in place). */
double bench_median(double *samples, int n);
/* The host CPU's model name, from /proc/cpuinfo ("unknown" otherwise). */
void bench_cpu_name(char *out, size_t cap);
/* Today's date as YYYY-MM-DD (UTC). */
void bench_date(char *out, size_t cap);

#endif
