/* metrics.h: a worker's Prometheus metrics: what the handler and I/O threads
 * record, and the HTTP server (libmicrohttpd) that shows it at /metrics. */
#ifndef WARREN_METRICS_H
#define WARREN_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "warren.h"

struct warren_worker;
struct method;

/* Upper bounds (seconds) of the duration histogram, +Inf implied. */
#define METRICS_NBUCKETS 8
/* The dead-letter reasons a worker writes (deadletter.h), in a fixed order. */
#define METRICS_NREASONS 8
/* gRPC statuses 0..16. */
#define METRICS_NSTATUS 17

/* One method's counts and latencies; under the worker's mu. */
struct method_metrics {
	uint64_t by_status[METRICS_NSTATUS]; /* answers, by status */
	uint64_t buckets[METRICS_NBUCKETS];  /* runs no longer than each bound (not cumulative) */
	uint64_t count;                      /* runs measured */
	double sum;                          /* their seconds */
};

/* Handler thread: a handler of m ended with status after seconds. Takes mu. */
void metrics_record_call(struct warren_worker *w, const struct method *m, int status,
                         double seconds);
/* I/O thread: a dead letter with reason (a DL_R_*) was confirmed. Takes mu. */
void metrics_record_dead_letter(struct warren_worker *w, const char *reason);
/* Starts serving /metrics on listen ("HOST:PORT"); *out stays NULL on error.
 * Any thread; the server runs its own. */
warren_err metrics_start(struct warren_worker *w, const char *listen, void **out, char *errstr,
                         size_t errlen);
/* Stops the server (NULL-safe); no request is being answered on return. */
void metrics_stop(void *server);

#endif
