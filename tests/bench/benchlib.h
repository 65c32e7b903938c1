/* benchlib.h: what the benchmark programs (baseline.c, bench_warren.c)
 * share: clocks, the CPU time and memory of a process read from /proc,
 * exact latency percentiles, and the one result line bench.sh parses. */
#ifndef WARREN_BENCHLIB_H
#define WARREN_BENCHLIB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Monotonic nanoseconds. */
int64_t bench_now_ns(void);
/* Sleeps until the monotonic time t (ns). */
void bench_sleep_until(int64_t t);
/* CPU time of every thread of process pid (0: this one) in ns, summed from
 * /proc/PID/task/TID/schedstat (ns precision, unlike the clock ticks of
 * /proc/PID/stat); -1 when pid is gone. */
int64_t bench_cpu_ns(pid_t pid);
/* A line of /proc/PID/status ("VmRSS", "VmHWM") in KiB; -1 if unreadable. */
long bench_status_kb(pid_t pid, const char *field);
/* Bytes the allocator has handed out and not taken back (all arenas and
 * mmapped chunks), from mallinfo2. */
int64_t bench_heap_bytes(void);

/* Latencies in ns, kept whole so that percentiles are exact. */
struct bench_lat {
	int64_t *v;
	size_t n, cap;
};
/* 0, or -1 when out of memory (the sample is then dropped). */
int bench_lat_add(struct bench_lat *l, int64_t ns);
/* Sorts the samples; the q-quantile (nearest rank) in ms afterwards. */
void bench_lat_sort(struct bench_lat *l);
double bench_lat_ms(const struct bench_lat *l, double q);
void bench_lat_free(struct bench_lat *l);

/* A measurement window: CPU of both processes (and of the broker, whose
 * pid bench.sh passes in BENCH_BROKER_PID), sampled at its start and end. */
struct bench_window {
	int64_t t0, t1;       /* ns */
	int64_t cpu0, cpu1;   /* this process */
	int64_t wcpu0, wcpu1; /* the responder or worker (pid) */
	long crss, wrss;      /* VmRSS of both in KiB at the end (-1: unknown) */
	int64_t bcpu0, bcpu1; /* the broker, when BENCH_BROKER_PID names it */
	pid_t peer, broker;
};
void bench_window_open(struct bench_window *w, pid_t peer);
void bench_window_close(struct bench_window *w);

/* Prints the result line bench.sh reads:
 * calls= secs= rate= p50= p99= p999= (ms) ccpu= wcpu= bcpu= (CPU seconds
 * per 1000 calls: caller, worker, broker or -1) crss= wrss= (KiB, at the
 * window's end) errors= */
void bench_report(const char *label, const struct bench_window *w, uint64_t calls,
                  struct bench_lat *lat, uint64_t errors);

/* len bytes of a fixed pattern (malloc'd); NULL when out of memory. */
unsigned char *bench_payload(size_t len);
/* Parses a decimal number or exits with usage. */
long bench_arg(const char *s, const char *what);

#endif
