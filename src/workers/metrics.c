/* metrics.c: a worker's counters, its stats and Prometheus metrics (see
 * metrics.h for the lock rule). Handler and I/O threads count under the
 * worker's mu; the metrics server's thread (metrics_http.c) renders a
 * snapshot taken under the same mutex. Nothing here touches AMQP. */
#include <stdlib.h>
#include <string.h>

#include "deadletter.h"
#include "worker_int.h"

static const char *const reasons[METRICS_NREASONS] = {
    DL_R_UNDECODABLE,     DL_R_BAD_ENVELOPE,  DL_R_UNKNOWN_METHOD, DL_R_CRASHED,  DL_R_RETRIES,
    DL_R_HANDLER_TIMEOUT, DL_R_BAD_SIGNATURE, DL_R_NOT_ALLOWED,    DL_R_TOO_LARGE};

/* ------------------------------------------------------------ recording */

void worker_count(struct warren_worker *w, uint64_t *field, uint64_t n)
{
	pthread_mutex_lock(&w->mu);
	*field += n;
	pthread_mutex_unlock(&w->mu);
}

void warren_worker_get_stats(warren_worker *w, warren_worker_stats *out)
{
	pthread_mutex_lock(&w->mu);
	*out = w->metrics.stats;
	pthread_mutex_unlock(&w->mu);
	out->io_loops = engine_turns(w->engine);
	out->blocked_ms = (uint64_t)engine_blocked_ms(w->engine);
	out->threads = w->settings.threads;
	out->reply_cache_hits = replycache_hits(w->cache);
	out->reply_cache_entries = replycache_count(w->cache);
	/* Nudge the I/O thread: if it is alive, io_loops will have grown by
	 * the next reading however idle the connection is. */
	if (w->engine != NULL) {
		engine_wake(w->engine);
	}
}

void metrics_record_call(struct warren_worker *w, const struct method *m, int status,
                         double seconds)
{
	/* Methods are fixed once the worker started: the slot is stable. */
	struct method_metrics *mm = &((struct method *)m)->metrics;

	pthread_mutex_lock(&w->mu);
	if (status >= 0 && status < PROM_NSTATUS) {
		mm->by_status[status]++;
	}
	prom_hist_observe(&mm->duration, seconds);
	pthread_mutex_unlock(&w->mu);
}

void metrics_record_dead_letter(struct warren_worker *w, const char *reason)
{
	for (int i = 0; i < METRICS_NREASONS; i++) {
		if (reason != NULL && strcmp(reason, reasons[i]) == 0) {
			worker_count(w, &w->metrics.dead_by_reason[i], 1);
			return;
		}
	}
}

/* ------------------------------------------------------------ rendering */

/* What one scrape shows, copied under mu so the text is written without it. */
struct snapshot {
	warren_worker_stats stats;
	uint64_t dead[METRICS_NREASONS];
	struct method_metrics *methods; /* nmethods, in registration order */
};

static bool take_snapshot(struct warren_worker *w, struct snapshot *s)
{
	s->methods = calloc(w->methods.n > 0 ? w->methods.n : 1, sizeof(*s->methods));
	if (s->methods == NULL) {
		return false;
	}
	warren_worker_get_stats(w, &s->stats);
	pthread_mutex_lock(&w->mu);
	memcpy(s->dead, w->metrics.dead_by_reason, sizeof(s->dead));
	for (size_t i = 0; i < w->methods.n; i++) {
		s->methods[i] = w->methods.list[i].metrics;
	}
	pthread_mutex_unlock(&w->mu);
	return true;
}

static void put_scalar(FILE *f, const struct warren_worker *w, const char *name, const char *type,
                       const char *help, uint64_t v)
{
	const struct prom_label l[] = {{"service", w->topo.service}};

	prom_put_metric(f, name, type, help, l, 1, v);
}

static void put_methods(FILE *f, const struct warren_worker *w, const struct snapshot *s)
{
	prom_put_head(f, "warren_worker_requests_total", "counter",
	              "Requests whose handler ended, by method and the status it answered.");
	for (size_t i = 0; i < w->methods.n; i++) {
		const struct prom_label l[] = {{"service", w->topo.service},
		                               {"method", w->methods.list[i].name}};

		prom_put_by_status(f, "warren_worker_requests_total", l, 2,
		                   s->methods[i].by_status);
	}
	prom_put_head(f, "warren_worker_request_duration_seconds", "histogram",
	              "How long handlers ran, by method.");
	for (size_t i = 0; i < w->methods.n; i++) {
		const struct prom_label l[] = {{"service", w->topo.service},
		                               {"method", w->methods.list[i].name}};

		prom_put_histogram(f, "warren_worker_request_duration_seconds", l, 2,
		                   &s->methods[i].duration);
	}
}

static void put_dead_letters(FILE *f, const struct warren_worker *w, const struct snapshot *s)
{
	prom_put_head(f, "warren_worker_dead_letters_total", "counter",
	              "Requests dead-lettered (confirmed), by reason.");
	for (int i = 0; i < METRICS_NREASONS; i++) {
		const struct prom_label l[] = {{"service", w->topo.service},
		                               {"reason", reasons[i]}};

		prom_put_sample(f, "warren_worker_dead_letters_total", l, 2, s->dead[i]);
	}
}
static void put_stats(FILE *f, const struct warren_worker *w, const warren_worker_stats *st)
{
	put_scalar(f, w, "warren_worker_connected", "gauge",
	           "1 while connected to the broker, its queue declared.", st->connected ? 1 : 0);
	put_scalar(f, w, "warren_worker_in_flight", "gauge",
	           "Requests in a handler or waiting for one.", st->in_progress);
	put_scalar(f, w, "warren_worker_received_total", "counter",
	           "Deliveries taken from the queue.", st->received);
	put_scalar(f, w, "warren_worker_fast_received_total", "counter",
	           "Of the deliveries taken, those from the fast lane (rpc.<service>.fast); the "
	           "rest came on the durable lane.",
	           st->fast_received);
	put_scalar(f, w, "warren_worker_moved_total", "counter",
	           "Fast-lane requests redelivered after a possible crash and moved to the "
	           "durable lane before running.",
	           st->moved);
	put_scalar(f, w, "warren_worker_acked_total", "counter", "Requests acknowledged.",
	           st->acked);
	put_scalar(f, w, "warren_worker_expired_total", "counter",
	           "Requests dropped unexecuted: their deadline had passed.", st->expired);
	put_scalar(f, w, "warren_worker_retried_total", "counter",
	           "Transient failures sent to wait for another attempt.", st->retried);
	put_scalar(f, w, "warren_worker_dead_lettered_total", "counter",
	           "Requests dead-lettered (confirmed).", st->dead_lettered);
	put_scalar(f, w, "warren_worker_reconnects_total", "counter",
	           "Connections to the broker made after the first.", st->reconnects);
	put_scalar(f, w, "warren_worker_breaker_open", "gauge",
	           "1 while the circuit breaker has stopped consuming.", st->breaker_open ? 1 : 0);
	put_scalar(f, w, "warren_worker_unauthenticated_total", "counter",
	           "Requests refused: unsigned, badly signed, or the key not allowed.",
	           st->unauthenticated);
	put_scalar(f, w, "warren_worker_replays_total", "counter",
	           "Signed requests dropped as replays.", st->replays);
	put_scalar(f, w, "warren_worker_redelivered_total", "counter",
	           "Deliveries the broker marked redelivered.", st->redelivered);
	put_scalar(f, w, "warren_worker_unroutable_total", "counter",
	           "Dead letters and retries the broker returned unroutable; their requests are "
	           "held, not acked.",
	           st->unroutable);
	put_scalar(f, w, "warren_worker_stale_dropped_total", "counter",
	           "Queued requests of a lost connection dropped before their handler ran.",
	           st->stale_dropped);
	put_scalar(f, w, "warren_worker_detached_handlers_total", "counter",
	           "Handler threads a stop left behind, stuck in their handler.",
	           st->detached_handlers);
	put_scalar(f, w, "warren_worker_reply_cache_hits_total", "counter",
	           "Repeated requests (same caller, same message_id) answered from the reply cache "
	           "or by their twin's run; their handler did not run.",
	           st->reply_cache_hits);
	put_scalar(f, w, "warren_worker_reply_cache_entries", "gauge",
	           "Replies (and runs still going) in the reply cache.", st->reply_cache_entries);
	put_scalar(f, w, "warren_worker_blocked_seconds_total", "counter",
	           "Time the broker blocked this worker's publishes (memory or disk alarm).",
	           st->blocked_ms / 1000);
}

/* The whole exposition (metrics_render_fn). */
static bool render(FILE *f, void *arg)
{
	struct warren_worker *w = arg;
	struct snapshot s;

	if (!take_snapshot(w, &s)) {
		return false;
	}
	put_methods(f, w, &s);
	put_dead_letters(f, w, &s);
	put_stats(f, w, &s.stats);
	free(s.methods);
	return true;
}

warren_err metrics_start(struct warren_worker *w, const char *listen, struct metrics_http **out,
                         char *errstr, size_t errlen)
{
	return metrics_http_start("metrics.listen", listen, render, w, out, errstr, errlen);
}
