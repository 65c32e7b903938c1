/* metrics.h: a worker's Prometheus metrics: what the handler and I/O threads
 * record, and the rendering the metrics server (metrics_http.h) shows at
 * /metrics. */
#ifndef WARREN_METRICS_H
#define WARREN_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "metrics_http.h"
#include "prom.h"
#include "warren.h"

struct warren_worker;
struct method;

/* The dead-letter reasons a worker writes (deadletter.h), in a fixed order. */
#define METRICS_NREASONS 9

/* One method's counts and latencies; under the worker's mu. */
struct method_metrics {
	uint64_t by_status[PROM_NSTATUS]; /* answers, by status */
	struct prom_hist duration;        /* how long its handlers ran */
};

/* Handler thread: a handler of m ended with status after seconds. Takes mu. */
void metrics_record_call(struct warren_worker *w, const struct method *m, int status,
                         double seconds);
/* I/O thread: a dead letter with reason (a DL_R_*) was confirmed. Takes mu. */
void metrics_record_dead_letter(struct warren_worker *w, const char *reason);
/* Starts serving the worker's metrics on listen ("HOST:PORT"), as
 * metrics_http_start does. */
warren_err metrics_start(struct warren_worker *w, const char *listen, struct metrics_http **out,
                         char *errstr, size_t errlen);

#endif
