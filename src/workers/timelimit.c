/* timelimit.c: handler time limits. A job is in w->limits.running while its
 * handler runs; the I/O thread answers for one past its limit (reply
 * DEADLINE_EXCEEDED, dead letter, ack) so that the broker's
 * consumer_timeout never closes the channel over one stuck handler. The
 * handler thread keeps its reference and drops the result when it returns. */
#include <stdio.h>
#include <string.h>

#include "deadletter.h"
#include "log.h"
#include "worker_int.h"

void timelimit_begin(struct warren_worker *w, struct job *j, const struct method *m)
{
	int64_t limit = m->timeout_ms > 0 ? m->timeout_ms : w->limits.default_ms;

	pthread_mutex_lock(&w->mu);
	j->limit_ms = limit;
	j->limit_at = engine_now() + limit;
	j->run_state = RUN_RUNNING;
	LIST_INSERT_HEAD(&w->limits.running, j, run_link);
	/* The I/O thread only needs waking when this limit comes before the
	 * one its timer already waits for: not on every request. */
	bool sooner = j->limit_at < w->limits.known;
	if (sooner) {
		w->limits.known = j->limit_at;
	}
	pthread_mutex_unlock(&w->mu);
	if (sooner) {
		engine_wake(w->engine);
	}
}

bool timelimit_end(struct warren_worker *w, struct job *j)
{
	bool on_time;

	pthread_mutex_lock(&w->mu);
	on_time = j->run_state == RUN_RUNNING;
	if (on_time) {
		LIST_REMOVE(j, run_link);
		j->run_state = RUN_DONE;
	}
	pthread_mutex_unlock(&w->mu);
	return on_time;
}

/* The I/O thread answers for a handler past its limit. */
static void abandon(struct engine *e, struct job *j)
{
	struct warren_worker *w = j->worker;
	char why[300];
	warren_value *details = warren_map();

	snprintf(why, sizeof(why), "the handler of %s ran past its time limit of %lld ms",
	         j->meta.method, (long long)j->limit_ms);
	log_warn("%s (correlation_id=%s): answering DEADLINE_EXCEEDED and dead-lettering it", why,
	         j->meta.correlation_id);
	warren_map_set(details, "reason", warren_str(DL_R_HANDLER_TIMEOUT));
	warren_map_set(details, "dlq", warren_str(w->topo.dlq));
	j->status = WARREN_STATUS_DEADLINE_EXCEEDED;
	j->dead_reason = DL_R_HANDLER_TIMEOUT;
	snprintf(j->dead_error, sizeof(j->dead_error), "%s", why);
	warren_value *body = envelope_error_value(j->status, why, details);
	if (envelope_encode_body(j->meta.format, body, &j->reply_body, &j->reply_len, NULL, 0) !=
	    WARREN_OK) {
		j->reply_body = NULL;
		j->reply_len = 0;
	}
	warren_value_free(body);
	job_wrap_reply(j);
	worker_dead_letter(e, j);
}

int64_t timelimit_check(struct warren_worker *w, struct engine *e, int64_t now)
{
	struct job_list overdue = LIST_HEAD_INITIALIZER(overdue);
	struct job *j, *next;
	int64_t earliest = INT64_MAX;

	pthread_mutex_lock(&w->mu);
	if (now < w->limits.known) {
		/* known is never later than the earliest limit of a running job
		 * (timelimit_begin lowers it, an ending job only removes one):
		 * none is overdue, and the walk below is not needed every turn. */
		earliest = w->limits.known;
		pthread_mutex_unlock(&w->mu);
		return earliest;
	}
	for (j = LIST_FIRST(&w->limits.running); j != NULL; j = next) {
		next = LIST_NEXT(j, run_link);
		if (j->limit_at <= now) {
			LIST_REMOVE(j, run_link);
			j->run_state = RUN_ABANDONED;
			atomic_fetch_add(&j->refs, 1); /* the handler thread keeps one */
			LIST_INSERT_HEAD(&overdue, j, run_link);
		} else if (j->limit_at < earliest) {
			earliest = j->limit_at;
		}
	}
	w->limits.known = earliest;
	pthread_mutex_unlock(&w->mu);
	while ((j = LIST_FIRST(&overdue)) != NULL) {
		LIST_REMOVE(j, run_link);
		abandon(e, j);
	}
	return earliest;
}
