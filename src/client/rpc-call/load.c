/* load.c: COUNT asynchronous calls with at most IN_FLIGHT outstanding; each
 * completion records its latency and outcome and frees a slot. */
#include "load.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct load {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int64_t in_flight, done, next;
	int64_t *lat_us; /* by call index */
	struct load_result *r;
};

struct ticket {
	struct load *l;
	int64_t i, started_us;
};

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Records one call's end; lock held. */
static void record(struct load *l, int64_t i, int64_t lat_us, warren_err err,
                   const warren_reply *reply)
{
	struct load_result *r = l->r;

	l->lat_us[i] = lat_us;
	if (reply != NULL) {
		int s = (int)warren_reply_status(reply);
		r->by_status[s >= 0 && s < 17 ? s : WARREN_STATUS_UNKNOWN]++;
	} else {
		r->by_err[(unsigned)err < 13 ? (unsigned)err : WARREN_ERR_SYSTEM]++;
	}
	if (err == WARREN_OK) {
		r->ok++;
	} else if (r->first_err == WARREN_OK) {
		r->first_err = err;
	}
	l->done++;
	l->in_flight--;
	pthread_cond_broadcast(&l->cond);
}

static void on_done(warren_err err, warren_reply *reply, const char *errmsg, void *arg)
{
	struct ticket *t = arg;
	struct load *l = t->l;
	int64_t lat = now_us() - t->started_us;

	pthread_mutex_lock(&l->mu);
	record(l, t->i, lat, err, reply);
	pthread_mutex_unlock(&l->mu);
	warren_reply_free(reply);
	free(t);
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* The q-quantile of n sorted latencies, in ms (nearest rank). */
static double quantile(const int64_t *sorted, int64_t n, double q)
{
	int64_t k = (int64_t)(q * (double)n + 0.999999);

	if (k < 1) {
		k = 1;
	}
	return (double)sorted[(k > n ? n : k) - 1] / 1000.0;
}

/* Starts call l->next, waiting first for a free slot; false when out of
 * memory. A call that cannot start is recorded as ended. Lock held. */
static bool start_one(struct load *l, warren_client *c, const char *method,
                      const warren_value *params, const warren_call_opts *opts, int in_flight)
{
	struct ticket *t;
	warren_err err;

	while (l->in_flight >= in_flight) {
		pthread_cond_wait(&l->cond, &l->mu);
	}
	t = malloc(sizeof(*t));
	if (t == NULL) {
		return false;
	}
	*t = (struct ticket){.l = l, .i = l->next++, .started_us = now_us()};
	l->in_flight++;
	/* The completion may run at once on the I/O thread: unlock. */
	pthread_mutex_unlock(&l->mu);
	err = warren_call_async(c, method, params, opts, on_done, t, NULL, 0);
	pthread_mutex_lock(&l->mu);
	if (err != WARREN_OK) {
		record(l, t->i, now_us() - t->started_us, err, NULL);
		free(t);
	}
	return true;
}

/* The latency percentiles of the calls made, from the sorted latencies. */
static void summarize(struct load_result *out, int64_t *lat_us)
{
	if (out->calls == 0) {
		return;
	}
	qsort(lat_us, (size_t)out->calls, sizeof(*lat_us), cmp64);
	out->p50 = quantile(lat_us, out->calls, 0.50);
	out->p90 = quantile(lat_us, out->calls, 0.90);
	out->p99 = quantile(lat_us, out->calls, 0.99);
	out->p999 = quantile(lat_us, out->calls, 0.999);
	out->max = (double)lat_us[out->calls - 1] / 1000.0;
}

warren_err load_run(warren_client *c, const char *method, const warren_value *params,
                    const warren_call_opts *opts, int64_t count, int in_flight,
                    struct load_result *out, char *errstr, size_t errlen)
{
	struct load l = {.r = out};
	int64_t t0;

	memset(out, 0, sizeof(*out));
	out->calls = count;
	l.lat_us = calloc((size_t)count, sizeof(*l.lat_us));
	if (l.lat_us == NULL) {
		snprintf(errstr, errlen, "out of memory for %lld latencies", (long long)count);
		return WARREN_ERR_NOMEM;
	}
	pthread_mutex_init(&l.mu, NULL);
	pthread_cond_init(&l.cond, NULL);
	t0 = now_us();
	pthread_mutex_lock(&l.mu);
	while (l.next < count) {
		if (!start_one(&l, c, method, params, opts, in_flight)) {
			break;
		}
	}
	while (l.done < l.next) {
		pthread_cond_wait(&l.cond, &l.mu);
	}
	pthread_mutex_unlock(&l.mu);
	out->seconds = (double)(now_us() - t0) / 1e6;
	out->calls = l.next;
	summarize(out, l.lat_us);
	pthread_cond_destroy(&l.cond);
	pthread_mutex_destroy(&l.mu);
	free(l.lat_us);
	return WARREN_OK;
}

void load_print(FILE *to, const char *method, int in_flight, const struct load_result *r)
{
	const char *sep = "";

	fprintf(to, "%s: %lld calls, %d in flight, %.2f s: %.0f calls/s\n", method,
	        (long long)r->calls, in_flight, r->seconds,
	        r->seconds > 0 ? (double)r->calls / r->seconds : 0.0);
	fprintf(to, "latency ms: p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", r->p50,
	        r->p90, r->p99, r->p999, r->max);
	fprintf(to, "outcomes: ");
	for (int s = 0; s < 17; s++) {
		if (r->by_status[s] > 0) {
			fprintf(to, "%s%lld %s", sep, (long long)r->by_status[s],
			        warren_status_name(s));
			sep = ", ";
		}
	}
	for (int e = 1; e < 13; e++) {
		if (r->by_err[e] > 0) {
			fprintf(to, "%s%lld %s", sep, (long long)r->by_err[e],
			        warren_status_name(warren_err_status((warren_err)e)));
			sep = ", ";
		}
	}
	fprintf(to, "\n");
}
