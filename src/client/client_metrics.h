/* client_metrics.h: a caller's Prometheus metrics (client.metrics_listen):
 * its calls by method and status, and their durations, recorded as they end;
 * a scrape adds the client's own counters (warren_client_stats). */
#ifndef WARREN_CLIENT_METRICS_H
#define WARREN_CLIENT_METRICS_H

#include <pthread.h>
#include <search.h>
#include <stdbool.h>
#include <stdio.h>

#include "metrics_http.h"
#include "prom.h"
#include "warren.h"

/* Methods with series of their own; calls of any further method are counted
 * under method="_other" (no real method has that name: it has no dot), so
 * that a caller of arbitrary names cannot grow the scrape without bound. */
#define CLIENT_METRICS_MAX_METHODS 1000
#define CLIENT_METRICS_OTHER       "_other"

/* One method's counts; under the metrics' mu. Never freed before the client. */
struct client_method {
	uint64_t by_status[PROM_NSTATUS]; /* calls ended, by status */
	struct prom_hist duration;        /* from the call's start to its end */
	char name[];
};

struct client_metrics {
	pthread_mutex_t mu;
	bool on;                        /* client.metrics_listen is set */
	struct hsearch_data index;      /* name -> struct client_method; under mu */
	struct client_method **methods; /* first sighting first; the last may be _other */
	size_t n;                       /* under mu */
	struct metrics_http *server;
};

/* Before anything else; the metrics are off until started. */
void client_metrics_init(struct client_metrics *m);
/* listen empty: stays off. Otherwise turns recording on and serves render
 * (with arg) at /metrics on listen; errors as metrics_http_start's, the key
 * named client.metrics_listen. */
warren_err client_metrics_start(struct client_metrics *m, const char *listen,
                                metrics_render_fn render, void *arg, char *errstr, size_t errlen);
/* Stops the server (no scrape is being answered on return); idempotent. */
void client_metrics_stop(struct client_metrics *m);
/* Stops the server if need be and frees everything: no call may still
 * hold a slot. */
void client_metrics_free(struct client_metrics *m);

/* Any thread, at a call's start: the method's slot, made on its first
 * sighting (the only allocation); NULL when the metrics are off or memory
 * ran out, and then the call is not recorded. */
struct client_method *client_metrics_method(struct client_metrics *m, const char *method);
/* Any thread: a call of cm ended with status after seconds. */
void client_metrics_record(struct client_metrics *m, struct client_method *cm, int status,
                           double seconds);
/* The exposition: the recorded calls, then st's counters, labelled
 * app="app". False when out of memory. */
bool client_metrics_render(FILE *f, struct client_metrics *m, const char *app,
                           const warren_client_stats *st);

#endif
