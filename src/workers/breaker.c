/* breaker.c: the worker's circuit breaker. Handler threads count transient
 * failures in a row; at worker.breaker_threshold the breaker opens and the
 * I/O thread cancels the consumer, so requests wait in the queue (and in
 * the delay tiers) instead of burning their attempts into the dead-letter
 * queue. Every worker.breaker_probe a probe runs on a handler thread; when
 * it succeeds the I/O thread consumes again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "worker_int.h"

void breaker_record(struct warren_worker *w, int status, const char *message)
{
	bool opened = false;

	if (w->breaker.threshold == 0) {
		return;
	}
	pthread_mutex_lock(&w->mu);
	if (!TRANSIENT(status)) {
		w->breaker.consecutive = 0;
	} else if (++w->breaker.consecutive >= w->breaker.threshold &&
	           !w->metrics.stats.breaker_open) {
		w->metrics.stats.breaker_open = true;
		w->metrics.stats.breaker_trips++;
		snprintf(w->metrics.stats.breaker_error, sizeof(w->metrics.stats.breaker_error),
		         "%s: %s", warren_status_name(status), message);
		w->breaker.next_probe = engine_now() + w->breaker.probe_ms;
		opened = true;
	}
	pthread_mutex_unlock(&w->mu);
	if (opened) {
		log_warn(
		    "circuit breaker open after %d failures in a row (last: %s: %s): consuming "
		    "stops; probing every %lld ms",
		    w->breaker.threshold, warren_status_name(status), message,
		    (long long)w->breaker.probe_ms);
		engine_wake(w->engine);
	}
}

void breaker_probed(struct warren_worker *w, int status)
{
	pthread_mutex_lock(&w->mu);
	w->breaker.probe_queued = false;
	if (status == WARREN_STATUS_OK) {
		w->metrics.stats.breaker_open = false;
		w->metrics.stats.breaker_error[0] = '\0';
		/* Without a probe of its own, one more failure opens it again. */
		w->breaker.consecutive = w->breaker.probe != NULL ? 0 : w->breaker.threshold - 1;
	} else {
		w->breaker.next_probe = engine_now() + w->breaker.probe_ms;
	}
	pthread_mutex_unlock(&w->mu);
	if (status == WARREN_STATUS_OK) {
		log_info("circuit breaker closed: %s; consuming again",
		         w->breaker.probe != NULL ? "the probe succeeded" : "trying again");
	} else {
		log_info("circuit breaker probe failed (%s); next in %lld ms",
		         warren_status_name(status), (long long)w->breaker.probe_ms);
	}
	engine_wake(w->engine);
}

/* Queues the probe to the handler threads. */
static void queue_probe(struct warren_worker *w)
{
	struct job *j = worker_job_new(w);

	if (j == NULL) {
		breaker_probed(w, WARREN_STATUS_RESOURCE_EXHAUSTED);
		return;
	}
	j->action = JOB_PROBE;
	worker_enqueue(w, j);
}

int64_t breaker_tick(struct warren_worker *w, struct engine *e, int64_t now)
{
	bool open, probe = false;
	int64_t next;

	pthread_mutex_lock(&w->mu);
	open = w->metrics.stats.breaker_open;
	next = w->breaker.next_probe;
	if (open && w->breaker.paused && !w->breaker.probe_queued && now >= w->breaker.next_probe) {
		w->breaker.probe_queued = true;
		probe = true;
	}
	pthread_mutex_unlock(&w->mu);
	if (open && !w->breaker.paused) {
		worker_cancel_consumer(w, e);
		w->breaker.paused = true;
	} else if (!open && w->breaker.paused) {
		w->breaker.paused = false;
		/* Isolating a suspect: its own tick consumes again once drained. */
		if (!w->life.stopping && !w->careful.draining && engine_connected(e)) {
			worker_consume(w, e);
		}
	}
	if (probe) {
		queue_probe(w);
	}
	return open ? next : INT64_MAX;
}
