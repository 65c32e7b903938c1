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

	if (w->breaker_threshold == 0) {
		return;
	}
	pthread_mutex_lock(&w->mu);
	if (!TRANSIENT(status)) {
		w->consecutive = 0;
	} else if (++w->consecutive >= w->breaker_threshold && !w->stats.breaker_open) {
		w->stats.breaker_open = true;
		w->stats.breaker_trips++;
		snprintf(w->stats.breaker_error, sizeof(w->stats.breaker_error), "%s: %s",
		         warren_status_name(status), message);
		w->next_probe = engine_now() + w->probe_ms;
		opened = true;
	}
	pthread_mutex_unlock(&w->mu);
	if (opened) {
		log_warn("circuit breaker open after %d failures in a row (last: %s: %s): consuming "
		         "stops; probing every %lld ms",
		         w->breaker_threshold, warren_status_name(status), message,
		         (long long)w->probe_ms);
		engine_wake(w->engine);
	}
}

void breaker_probed(struct warren_worker *w, int status)
{
	pthread_mutex_lock(&w->mu);
	w->probe_queued = false;
	if (status == WARREN_STATUS_OK) {
		w->stats.breaker_open = false;
		w->stats.breaker_error[0] = '\0';
		/* Without a probe of its own, one more failure opens it again. */
		w->consecutive = w->probe != NULL ? 0 : w->breaker_threshold - 1;
	} else {
		w->next_probe = engine_now() + w->probe_ms;
	}
	pthread_mutex_unlock(&w->mu);
	if (status == WARREN_STATUS_OK) {
		log_info("circuit breaker closed: %s; consuming again",
		         w->probe != NULL ? "the probe succeeded" : "trying again");
	} else {
		log_info("circuit breaker probe failed (%s); next in %lld ms",
		         warren_status_name(status), (long long)w->probe_ms);
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
	open = w->stats.breaker_open;
	next = w->next_probe;
	if (open && w->paused && !w->probe_queued && now >= w->next_probe) {
		w->probe_queued = true;
		probe = true;
	}
	pthread_mutex_unlock(&w->mu);
	if (open && !w->paused) {
		worker_cancel_consumer(w, e);
		w->paused = true;
	} else if (!open && w->paused) {
		w->paused = false;
		/* Isolating a suspect: its own tick consumes again once drained. */
		if (!w->stopping && !w->draining && engine_connected(e)) {
			worker_consume(w, e);
		}
	}
	if (probe) {
		queue_probe(w);
	}
	return open ? next : INT64_MAX;
}
