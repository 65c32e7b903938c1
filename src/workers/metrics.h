/* metrics.h: a worker's counters: its stats (warren_worker_get_stats) and
 * Prometheus metrics, what the handler and I/O threads record, and the
 * rendering the metrics server (metrics_http.h) shows at /metrics.
 *
 * Lock rule: stats, dead_by_reason and every method's method_metrics are
 * under the worker's mu, by design: stats.in_progress is the count a stop
 * waits on (idle_cond, with mu), and stats.breaker_* change with the
 * breaker's state (breaker.h) in one step; a snapshot (get_stats, a
 * /metrics page) is then one consistent reading. Each record is a few
 * additions under mu, no other lock taken while it is held; worker_count
 * and the metrics_record_* functions take it, any thread may call them.
 * listen is set before the worker starts; http is started and stopped by
 * the owner's thread (warren_worker_start/free), and its thread only
 * renders snapshots taken under mu. */
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

struct worker_metrics {
	warren_worker_stats stats;                 /* under mu */
	uint64_t dead_by_reason[METRICS_NREASONS]; /* under mu: confirmed dead letters */
	char listen[256];                          /* metrics.listen; empty: no server */
	struct metrics_http *http;                 /* the running server, or NULL */
};

/* Any thread: adds n to a counter of the worker's (a field of
 * w->metrics.stats or w->metrics.dead_by_reason). Takes mu. */
void worker_count(struct warren_worker *w, uint64_t *field, uint64_t n);

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
