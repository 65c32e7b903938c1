/* benchlib.c: clocks, /proc readings and exact percentiles for the
 * benchmark programs; see benchlib.h. */
#include "benchlib.h"

#include <dirent.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_sleep_until(int64_t t)
{
	struct timespec ts = {.tv_sec = t / 1000000000, .tv_nsec = t % 1000000000};

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
		/* EINTR: sleep on */
	}
}

static int64_t task_cpu_ns(const char *path)
{
	FILE *f = fopen(path, "r");
	long long ns = -1;

	if (f == NULL) {
		return 0; /* the thread ended meanwhile */
	}
	if (fscanf(f, "%lld", &ns) != 1) {
		ns = 0;
	}
	fclose(f);
	return ns;
}

int64_t bench_cpu_ns(pid_t pid)
{
	char dir[64], path[128];
	struct dirent *de;
	DIR *d;
	int64_t sum = 0;

	if (pid == 0) {
		snprintf(dir, sizeof(dir), "/proc/self/task");
	} else {
		snprintf(dir, sizeof(dir), "/proc/%ld/task", (long)pid);
	}
	d = opendir(dir);
	if (d == NULL) {
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.') {
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s/schedstat", dir, de->d_name);
		sum += task_cpu_ns(path);
	}
	closedir(d);
	return sum;
}

long bench_status_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t flen = strlen(field);
	long kb = -1;
	FILE *f;

	if (pid == 0) {
		snprintf(path, sizeof(path), "/proc/self/status");
	} else {
		snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	}
	f = fopen(path, "r");
	if (f == NULL) {
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
			kb = strtol(line + flen + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

int64_t bench_heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();

	return (int64_t)(mi.uordblks + mi.hblkhd);
}

int bench_lat_add(struct bench_lat *l, int64_t ns)
{
	if (l->n == l->cap) {
		size_t cap = l->cap != 0 ? l->cap * 2 : 65536;
		int64_t *v = realloc(l->v, cap * sizeof(*v));

		if (v == NULL) {
			return -1;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = ns;
	return 0;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

void bench_lat_sort(struct bench_lat *l)
{
	if (l->n > 0) {
		qsort(l->v, l->n, sizeof(*l->v), cmp64);
	}
}

double bench_lat_ms(const struct bench_lat *l, double q)
{
	size_t k;

	if (l->n == 0) {
		return 0.0;
	}
	/* Nearest rank: the smallest sample with at least q of them at or below. */
	k = (size_t)(q * (double)l->n + 0.999999);
	if (k < 1) {
		k = 1;
	}
	if (k > l->n) {
		k = l->n;
	}
	return (double)l->v[k - 1] / 1e6;
}

void bench_lat_free(struct bench_lat *l)
{
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

void bench_window_open(struct bench_window *w, pid_t peer)
{
	const char *broker = getenv("BENCH_BROKER_PID");

	w->peer = peer;
	w->broker = broker != NULL ? (pid_t)strtol(broker, NULL, 10) : 0;
	w->bcpu0 = w->broker > 0 ? bench_cpu_ns(w->broker) : 0;
	w->wcpu0 = peer > 0 ? bench_cpu_ns(peer) : 0;
	w->cpu0 = bench_cpu_ns(0);
	w->t0 = bench_now_ns();
}

void bench_window_close(struct bench_window *w)
{
	w->t1 = bench_now_ns();
	w->cpu1 = bench_cpu_ns(0);
	w->wcpu1 = w->peer > 0 ? bench_cpu_ns(w->peer) : 0;
	w->bcpu1 = w->broker > 0 ? bench_cpu_ns(w->broker) : 0;
	w->crss = bench_status_kb(0, "VmRSS");
	w->wrss = w->peer > 0 ? bench_status_kb(w->peer, "VmRSS") : -1L;
}

void bench_report(const char *label, const struct bench_window *w, uint64_t calls,
                  struct bench_lat *lat, uint64_t errors)
{
	double secs = (double)(w->t1 - w->t0) / 1e9;
	double per_k = calls > 0 ? 1000.0 / (double)calls / 1e9 : 0.0;

	bench_lat_sort(lat);
	printf("%s calls=%llu secs=%.3f rate=%.0f p50=%.3f p99=%.3f p999=%.3f ccpu=%.4f "
	       "wcpu=%.4f bcpu=%.4f crss=%ld wrss=%ld errors=%llu\n",
	       label, (unsigned long long)calls, secs, secs > 0 ? (double)calls / secs : 0.0,
	       bench_lat_ms(lat, 0.50), bench_lat_ms(lat, 0.99), bench_lat_ms(lat, 0.999),
	       (double)(w->cpu1 - w->cpu0) * per_k, (double)(w->wcpu1 - w->wcpu0) * per_k,
	       w->broker > 0 ? (double)(w->bcpu1 - w->bcpu0) * per_k : -1.0, w->crss, w->wrss,
	       (unsigned long long)errors);
	fflush(stdout);
}

unsigned char *bench_payload(size_t len)
{
	unsigned char *p = malloc(len > 0 ? len : 1);

	if (p != NULL) {
		for (size_t i = 0; i < len; i++) {
			p[i] = (unsigned char)('a' + i % 26);
		}
	}
	return p;
}

long bench_arg(const char *s, const char *what)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < 0) {
		fprintf(stderr, "bench: %s: expected a number, got \"%s\"\n", what, s);
		exit(2);
	}
	return v;
}
