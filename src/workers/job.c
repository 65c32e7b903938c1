/* job.c: one request on a handler thread: read the envelope, drop it if its
 * deadline passed, check its signature, find the method, decode the body,
 * run the handler and encode the reply, then hand the job back to the I/O
 * thread with what to do. Poison (a bad envelope, an undecodable body, an
 * unknown method, a request that keeps crashing its worker, transient
 * failures past the last attempt) is dead-lettered and its caller answered,
 * unless the request failed authentication: then nobody is answered. A
 * transient failure with attempts left waits in a delay tier for the next. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "deadletter.h"
#include "log.h"
#include "retry.h"
#include "seal.h"
#include "worker_int.h"

void job_wrap_reply(struct job *j)
{
	void *sealed = NULL;
	size_t len = 0;

	if (j->seal_key != NULL && j->reply_body != NULL) {
		/* Out of memory: an empty body rather than one in the clear. */
		seal_body(j->seal_key, j->reply_body, j->reply_len, &sealed, &len);
		worker_spare_put(j->worker, j->reply_body);
		j->reply_body = sealed;
		j->reply_len = len;
		j->reply_sealed = sealed != NULL;
	}
	if (j->worker->sec != NULL && j->reply_body != NULL) {
		security_sign_reply(j->worker->sec, &j->meta, j->status, j->reply_sealed,
		                    j->reply_body, j->reply_len, &j->sig);
	}
}

/* ------------------------------------------------------------ reply cache */

/* Whether j's outcome is kept for its repeats: an answer (or a one-way
 * request's end) that says the work was done. A transient status says it
 * was not: a repeat may succeed. */
static bool keeps(const struct job *j)
{
	return (j->action == JOB_REPLY_THEN_ACK || j->action == JOB_ACK) && !TRANSIENT(j->status);
}

/* j is answered with body (taken: a worker_spare_take buffer, or NULL),
 * the status and format of r, then sealed and signed for j itself (its own
 * correlation id). */
static void answer_with(struct job *j, void *body, const struct replycache_reply *r)
{
	worker_spare_put(j->worker, j->reply_body);
	j->reply_body = body;
	j->reply_len = body != NULL ? r->len : 0;
	j->status = r->status;
	j->meta.format = (enum envelope_format)r->format;
	j->action = j->meta.reply_to[0] != '\0' ? JOB_REPLY_THEN_ACK : JOB_ACK;
	job_wrap_reply(j);
}

/* A twin parked on a run that ended (replycache_finish's answer; the
 * finishing thread): answered with its reply, or back to its queue when
 * the run left none. */
static void answer_twin(struct replycache_waiter *wt, const struct replycache_reply *r, void *arg)
{
	struct warren_worker *w = arg;
	struct job *j = (struct job *)((char *)wt - offsetof(struct job, cache_wait));

	if (r != NULL) {
		void *body = r->len > 0 ? worker_spare_take(r->len, w) : NULL;

		if (body != NULL) {
			memcpy(body, r->body, r->len);
		}
		answer_with(j, body, r);
	} else {
		j->action = JOB_REQUEUE;
	}
	if (!engine_submit(w->engine, &j->task)) {
		job_free(j); /* stopped: unacked, so the broker requeues it */
	}
}

/* The run j claimed ended: its reply (the encoded body, before sealing) is
 * kept if it says the work was done, and its parked twins answered. ours:
 * j is this thread's to read (false once the time limit's answer took it:
 * then nothing is kept). */
static void settle_run(struct warren_worker *w, struct job *j, bool ours)
{
	struct replycache_reply r;

	if (j->cache_run == NULL) {
		return;
	}
	if (ours) {
		r = (struct replycache_reply){.status = j->status,
		                              .format = j->meta.format,
		                              .body = j->reply_body,
		                              .len = j->reply_len};
	}
	replycache_finish(w->cache, j->cache_run, ours && keeps(j) ? &r : NULL, answer_twin, w);
	j->cache_run = NULL;
}

/* Before its handler: a repeat is answered from the reply cache, or parked
 * on its twin's run. True when j must not run (params freed); *done is
 * then job_process's result: false for a parked job, which belongs to its
 * twin's run from then on (it holds its own reference, so the caller's
 * job_free does not free it). Keyed by who sent it: the signer, else app_id. */
static bool repeated(struct warren_worker *w, struct job *j, warren_value *params, bool *done)
{
	const bool signer = j->signer[0] != '\0';
	const struct replycache_key k = {.signer = signer,
	                                 .caller = signer ? j->signer : j->meta.app_id,
	                                 .message_id = j->meta.message_id,
	                                 .method = j->meta.method};
	struct replycache_reply hit;
	enum replycache_verdict v;

	/* Nothing to key on: the cache off, no message_id, or no caller (an
	 * empty app_id would share its message_ids with every other caller
	 * that leaves it out). */
	if (w->cache == NULL || j->meta.message_id[0] == '\0' || k.caller[0] == '\0') {
		return false;
	}
	atomic_fetch_add(&j->refs, 1); /* the run's, should j be parked */
	v = replycache_claim(w->cache, &k, &j->cache_wait, &j->cache_run, worker_spare_take, w,
	                     &hit);
	if (v != REPLYCACHE_PARKED) {
		atomic_fetch_sub(&j->refs, 1);
	}
	if (v == REPLYCACHE_RUN) {
		return false;
	}
	warren_value_free(params);
	*done = v == REPLYCACHE_HIT;
	if (v == REPLYCACHE_HIT) {
		answer_with(j, (void *)hit.body, &hit);
		log_debug("answered from the reply cache: message_id=%s correlation_id=%s",
		          j->meta.message_id, j->meta.correlation_id);
	}
	return true;
}

static void encode_reply(struct job *j, int status, warren_value *body)
{
	char why[300];

	j->status = status;
	if (envelope_encode_body_alloc(j->meta.format, body, worker_spare_take, j->worker,
	                               &j->reply_body, &j->reply_len, why,
	                               sizeof(why)) != WARREN_OK) {
		warren_value *err;

		/* The handler's result has no form in this content type (binary in JSON). */
		j->status = WARREN_STATUS_INTERNAL;
		err = envelope_error_value(j->status, why, NULL);
		if (envelope_encode_body_alloc(j->meta.format, err, worker_spare_take, j->worker,
		                               &j->reply_body, &j->reply_len, why,
		                               sizeof(why)) != WARREN_OK) {
			j->reply_body = NULL;
			j->reply_len = 0;
		}
		warren_value_free(err);
	}
	warren_value_free(body);
	settle_run(j->worker, j, true); /* the plain body, before sealing */
	job_wrap_reply(j);
}

/* {"reason": R, "dlq": Q}: where a dead-lettered request went, and why. */
static warren_value *dead_details(const struct warren_worker *w, const char *reason)
{
	warren_value *d = warren_map();

	warren_map_set(d, "reason", warren_str(reason));
	warren_map_set(d, "dlq", warren_str(w->topo.dlq));
	return d;
}

/* Dead-letters the request with no answer: with no reply body, the I/O
 * thread acks it once the dead letter is confirmed. */
static void dead_letter_unanswered(struct job *j, const char *reason, const char *why)
{
	j->action = JOB_DEAD_LETTER;
	j->dead_reason = reason;
	snprintf(j->dead_error, sizeof(j->dead_error), "%s", why);
}

static void poison(struct warren_worker *w, struct job *j, int status, const char *reason,
                   const char *why)
{
	dead_letter_unanswered(j, reason, why);
	encode_reply(j, status, envelope_error_value(status, why, dead_details(w, reason)));
}

/* A request whose deadline has passed is dropped unexecuted: nobody waits
 * for its answer. Harmless before authentication too: nothing is run or
 * answered, and a forged deadline only gets a message dropped that its
 * sender could have left unsent. */
static bool expired(struct warren_worker *w, struct job *j)
{
	if (j->meta.deadline_ms == 0 || warren_now_ms() <= j->meta.deadline_ms) {
		return false;
	}
	worker_count(w, &w->metrics.stats.expired, 1);
	log_debug("dropped unexecuted, deadline passed: correlation_id=%s", j->meta.correlation_id);
	j->action = JOB_ACK;
	return true;
}

/* Who sent it, before anything of its body is looked at. True when the
 * job is settled (refused or dropped as a replay). A refusal is answered
 * only when the request is authentic: otherwise its reply_to and
 * correlation id are anybody's, and answering would sign an attacker's
 * correlation id and publish into a queue of the attacker's choosing. */
static bool refused(struct warren_worker *w, struct job *j, struct checked *chk)
{
	const amqp_message_t *msg = &j->delivery->message;
	char why[400];
	int st =
	    security_check_request(w->sec, &msg->properties, &j->meta, msg->body.bytes,
	                           msg->body.len, j->delivery->redelivered, chk, why, sizeof(why));
	const char *reason =
	    st == WARREN_STATUS_PERMISSION_DENIED ? DL_R_NOT_ALLOWED : DL_R_BAD_SIGNATURE;

	if (st == WARREN_STATUS_OK) {
		return false;
	}
	if (st == WARREN_STATUS_ALREADY_EXISTS) {
		log_warn("dropped: %s (correlation_id=%s)", why, j->meta.correlation_id);
		worker_count(w, &w->metrics.stats.replays, 1);
		j->action = JOB_ACK;
		return true;
	}
	worker_count(w, &w->metrics.stats.unauthenticated, 1);
	if (chk->authentic) {
		poison(w, j, st, reason, why);
	} else {
		dead_letter_unanswered(j, reason, why);
	}
	return true;
}

static int clamp_status(warren_status s)
{
	return (int)s >= 0 && (int)s <= 16 ? (int)s : WARREN_STATUS_UNKNOWN;
}

/* A transient failure: another attempt after a wait, if attempts are left
 * and the wait ends before the deadline; dead-lettered after the last one;
 * otherwise the error is the answer. True when it took the job. */
static bool retry_or_give_up(struct warren_worker *w, struct job *j, int status,
                             const char *message)
{
	char why[400];

	if (j->meta.attempt < w->settings.retry_attempts) {
		j->retry_delay_ms = retry_delay_ms(w->settings.retry_delay_ms, j->meta.attempt,
		                                   randombytes_random());
		if (j->meta.deadline_ms == 0 ||
		    warren_now_ms() + j->retry_delay_ms < j->meta.deadline_ms) {
			j->action = JOB_RETRY;
			return true;
		}
		return false;
	}
	snprintf(why, sizeof(why), "%s (%s after %d attempts)", message, warren_status_name(status),
	         j->meta.attempt);
	poison(w, j, status, DL_R_RETRIES, why);
	return true;
}

static void record_call(struct warren_worker *w, const struct method *m, int status,
                        const struct timespec *t0, const struct timespec *t1)
{
	double seconds =
	    (double)(t1->tv_sec - t0->tv_sec) + (double)(t1->tv_nsec - t0->tv_nsec) / 1e9;

	metrics_record_call(w, m, status, seconds);
}

/* One logfmt line per request handled, at debug level, with its trace id
 * (the middle of its traceparent) so a request can be followed through
 * the services it calls. */
static void log_request(const struct job *j, int status, const struct timespec *t0,
                        const struct timespec *t1)
{
	char extra[512], trace_id[33] = "";
	double ms;

	if (!log_enabled(LOG_DEBUG)) {
		return;
	}
	if (strlen(j->meta.traceparent) >= 35) {
		memcpy(trace_id, j->meta.traceparent + 3, 32);
	}
	ms = (double)(t1->tv_sec - t0->tv_sec) * 1e3 + (double)(t1->tv_nsec - t0->tv_nsec) / 1e6;
	snprintf(extra, sizeof(extra),
	         "method=%s correlation_id=%s status=%s duration_ms=%.3f trace_id=%s",
	         j->meta.method, j->meta.correlation_id, warren_status_name(status), ms,
	         trace_id[0] != '\0' ? trace_id : "-");
	log_event(LOG_DEBUG, extra, "handled");
}

/* Runs the handler within its time limit and prepares the answer; false
 * when the limit passed first (the I/O thread has answered for it). Takes
 * params. */
static bool run_handler(struct warren_worker *w, struct job *j, const struct method *m,
                        warren_value *params, void *thread_data)
{
	struct warren_request req = {.meta = &j->meta,
	                             .params = params,
	                             .redelivered = j->delivery->redelivered,
	                             .thread_data = thread_data};
	int status;
	const char *message;
	struct timespec t0, t1;

	if (!j->on_io_thread) {
		timelimit_begin(w, j, m);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	status = clamp_status(m->fn(&req, m->arg));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	warren_value_free(params);
	if (!j->on_io_thread && !timelimit_end(w, j)) {
		/* The I/O thread answered DEADLINE_EXCEEDED for it. */
		record_call(w, m, WARREN_STATUS_DEADLINE_EXCEEDED, &t0, &t1);
		warren_value_free(req.result);
		warren_value_free(req.details);
		return false;
	}
	record_call(w, m, status, &t0, &t1);
	log_request(j, status, &t0, &t1);
	j->action = j->meta.reply_to[0] != '\0' ? JOB_REPLY_THEN_ACK : JOB_ACK;
	if (status == WARREN_STATUS_OK) {
		breaker_record(w, status, "");
		warren_value_free(req.details);
		encode_reply(j, status, req.result);
		return true;
	}
	worker_count(w, &w->metrics.stats.handler_errors, 1);
	warren_value_free(req.result);
	message = req.message[0] != '\0' ? req.message : warren_status_name(status);
	breaker_record(w, status, message);
	if (TRANSIENT(status) && retry_or_give_up(w, j, status, message)) {
		warren_value_free(req.details);
		return true;
	}
	encode_reply(j, status, envelope_error_value(status, message, req.details));
	return true;
}

/* The checks between a trusted request and its handler: its crash count,
 * its method, its body (the opened one for a sealed request).
 * WARREN_OK with *m and *params; anything else, the job says what to do. */
static warren_err admit(struct warren_worker *w, struct job *j, const struct method **m,
                        const void *body, size_t len, warren_value **params)
{
	char why[400];

	/* Handed out this often without ever being answered: it takes its
	 * worker down with it. Do not run it again. Returns this worker caused
	 * itself (a requeue, a lost connection) are no crash (requeue.c). */
	if (w->settings.crash_limit > 0 && requeue_crashes(w, j) >= w->settings.crash_limit) {
		snprintf(why, sizeof(why),
		         "delivered %d times without an answer: it may crash its worker",
		         j->meta.delivery_count + 1);
		poison(w, j, WARREN_STATUS_INTERNAL, DL_R_CRASHED, why);
		return WARREN_ERR_REMOTE;
	}
	*m = worker_find_method(w, j->meta.method);
	if (*m == NULL) {
		snprintf(why, sizeof(why), "unknown method %s", j->meta.method);
		poison(w, j, WARREN_STATUS_UNIMPLEMENTED, DL_R_UNKNOWN_METHOD, why);
		return WARREN_ERR_REMOTE;
	}
	/* In place: the params live only for the handler's call (warren.h),
	 * the body they point into until the job ends. */
	if (envelope_decode_body_in_place(j->meta.format, body, len, w->settings.max_size, params,
	                                  why, sizeof(why)) != WARREN_OK) {
		poison(w, j, WARREN_STATUS_INVALID_ARGUMENT, DL_R_UNDECODABLE, why);
		return WARREN_ERR_DECODE;
	}
	return WARREN_OK;
}

/* A body above message.max_size (the seal's overhead more when sealed) is
 * refused before anything else is done with it: no signature check, no
 * opening, no decoding. The dead letter carries the request's properties
 * and an empty body: above the engine's limit the body was not even kept
 * (engine_delivery.too_large), and one within the seal's overhead the
 * engine did assemble is dropped here, so that every too-large dead letter
 * is alike (warren(7)). Its sender is unknown when the worker checks
 * signatures, and when its envelope is bad: then no reply. */
static bool refuse_too_large(struct warren_worker *w, struct job *j, bool envelope_ok)
{
	struct engine_delivery *d = j->delivery;
	size_t limit = w->settings.max_size + (envelope_ok && j->meta.sealed ? SEAL_OVERHEAD : 0);
	char why[200];

	if (!d->too_large && d->message.body.len <= limit) {
		return false;
	}
	amqp_bytes_free(d->message.body);
	d->message.body = amqp_empty_bytes;
	snprintf(why, sizeof(why), "body of %llu bytes is larger than message.max_size (%zu)",
	         (unsigned long long)d->body_size, w->settings.max_size);
	/* Answered only when the request can be trusted to name its caller:
	 * a readable envelope, and no signing (its signature is not checked). */
	if (envelope_ok && w->sec == NULL) {
		poison(w, j, WARREN_STATUS_INVALID_ARGUMENT, DL_R_TOO_LARGE, why);
	} else {
		dead_letter_unanswered(j, DL_R_TOO_LARGE, why);
	}
	return true;
}

bool job_process(struct warren_worker *w, struct job *j, void *thread_data)
{
	const amqp_message_t *msg;
	warren_value *params = NULL;
	const struct method *m;
	struct checked chk = {0};
	warren_err err;
	char why[400];
	bool done;

	if (j->action == JOB_PROBE) {
		breaker_probed(w, w->breaker.probe != NULL ? clamp_status(w->breaker.probe(
		                                                 thread_data, w->breaker.probe_arg))
		                                           : WARREN_STATUS_OK);
		return true;
	}
	msg = &j->delivery->message;

	err = envelope_read(&msg->properties, &j->meta, why, sizeof(why));
	if (refuse_too_large(w, j, err == WARREN_OK)) {
		return true;
	}
	if (err != WARREN_OK) {
		/* With signing on, nothing of it can be verified: no answer. */
		if (w->sec != NULL) {
			dead_letter_unanswered(j, DL_R_BAD_ENVELOPE, why);
		} else {
			poison(w, j, WARREN_STATUS_INVALID_ARGUMENT, DL_R_BAD_ENVELOPE, why);
		}
		return true;
	}
	/* A plain AMQP caller may leave type out: the routing key names the method. */
	if (j->meta.method[0] == '\0') {
		snprintf(j->meta.method, sizeof(j->meta.method), "%s", j->delivery->routing_key);
	}
	/* Before its signature: a request that waited past its deadline is
	 * expired, not poison, even if its signature has left the window since. */
	if (expired(w, j) || (w->sec != NULL && refused(w, j, &chk))) {
		return true;
	}
	/* From here on every answer is sealed when the request was. */
	j->seal_key = chk.key;
	memcpy(j->signer, chk.signer, sizeof(j->signer));
	if (j->meta.sealed && chk.key == NULL) {
		poison(w, j, WARREN_STATUS_INVALID_ARGUMENT, DL_R_UNDECODABLE,
		       "the body is encrypted (" SEAL_ENCODING ") and this worker has no keys "
		       "(security.scheme is none)");
		return true;
	}
	err = admit(w, j, &m, chk.body != NULL ? chk.body : msg->body.bytes,
	            chk.body != NULL ? chk.len : msg->body.len, &params);
	/* After the handler: the params may point into the opened body. */
	if (err != WARREN_OK) {
		done = true;
	} else if (!repeated(w, j, params, &done)) {
		done = run_handler(w, j, m, params, thread_data);
		settle_run(w, j, done); /* a run with no reply to keep (a retry, a time limit) */
	}
	free(chk.body);
	return done;
}
