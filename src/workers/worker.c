/* worker.c: the worker pool. The engine's I/O thread consumes the service
 * queue (worker.prefetch requests at a time) and feeds a fixed pool of handler
 * threads; handlers never touch AMQP. A reply is published, confirmed by the
 * broker, and only then is its request acked. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "batch.h"
#include "config.h"
#include "deadletter.h"
#include "forward.h"
#include "log.h"
#include "retry.h"
#include "seal.h"
#include "wire.h"
#include "worker_int.h"

/* worker.prefetch 0: this many, or one per handler thread if that is more. */
#define PREFETCH_AUTO 128
/* The lanes a worker consumes, as bits of careful_lanes. */
enum { LANE_SERVICE = 1u, LANE_BATCH = 2u, LANE_FAST = 4u };

const struct method *worker_find_method(const struct warren_worker *w, const char *name)
{
	for (size_t i = 0; i < w->methods.n; i++) {
		if (strcmp(w->methods.list[i].name, name) == 0) {
			return &w->methods.list[i];
		}
	}
	return NULL;
}

/* ------------------------------------------------------------ job ends */

void job_free(struct job *j)
{
	struct warren_worker *w = j->worker;
	bool suspect = j->suspect;

	if (atomic_fetch_sub(&j->refs, 1) > 1) {
		return; /* its other owner frees it */
	}
	engine_delivery_free(j->delivery);
	if (j->lane != NULL) {
		lane_release(j->lane);
	}
	worker_spare_put(w, j->reply_body);
	free(j);
	pthread_mutex_lock(&w->mu);
	w->metrics.stats.in_progress--;
	w->careful.suspects -= suspect;
	pthread_cond_broadcast(&w->idle_cond);
	pthread_mutex_unlock(&w->mu);
}

/* Frees a job that was never queued (not in progress). */
static void job_free_unqueued(struct job *j)
{
	engine_delivery_free(j->delivery);
	free(j);
}

/* Acks j's request: its delivery, or its entry of a batch (lane.c). */
static void job_ack(struct engine *e, struct job *j)
{
	if (j->lane != NULL) {
		lane_settle(e, j->lane, false);
	} else {
		engine_ack(e, j->delivery->generation, j->delivery->delivery_tag);
	}
}

/* A request goes back to its queue by this worker's doing: rejected with
 * requeue (NACK), or left unacked on a lost connection (LOST). Noted, so
 * that its next delivery's crash count leaves the return out. */
static void give_back(struct engine *e, struct job *j, enum engine_confirm outcome)
{
	if (j->delivery == NULL) {
		return;
	}
	requeue_note(j->worker, j);
	if (outcome == ENGINE_NACK && j->lane != NULL) {
		lane_settle(e, j->lane, true); /* the batch goes back whole */
	} else if (outcome == ENGINE_NACK) {
		engine_reject(e, j->delivery->generation, j->delivery->delivery_tag, true);
	}
}

static void on_reply_confirm(struct engine *e, void *ctx, enum engine_confirm outcome)
{
	struct job *j = ctx;
	struct warren_worker *w = j->worker;

	if (outcome == ENGINE_ACK) {
		worker_count(w, &w->metrics.stats.replied, 1);
		if (j->delivery->generation == engine_generation(e)) {
			job_ack(e, j);
			worker_count(w, &w->metrics.stats.acked, 1);
		}
	} else {
		/* NACK: the broker could not take the reply: run the request
		 * again. LOST: the broker requeues the unacked request by itself.
		 * Either way a return that crashed nothing. */
		give_back(e, j, outcome);
	}
	job_free(j);
}

/* A reply body is written to the socket by its publish (engine_publish
 * keeps no pointer to it) and nothing publishes it again: it goes at once
 * rather than with its job, once the broker confirms. Held until then, the
 * replies a worker has in flight (prefetch many, 64 KiB each in the
 * bench's large rows) made its heap swing by megabytes at every burst of
 * confirms; glibc gave the top back to the kernel each time and faulted it
 * in again for the next replies (tests/bench/PROFILE.md). */
static void drop_reply_body(struct job *j)
{
	worker_spare_put(j->worker, j->reply_body);
	j->reply_body = NULL;
	j->reply_len = 0;
}

static warren_err publish_reply(struct engine *e, struct job *j, engine_confirm_fn fn)
{
	struct envelope_props props;
	warren_err err;
	struct envelope_meta rm = {
	    .status = j->status, .format = j->meta.format, .sealed = j->reply_sealed};

	memcpy(rm.correlation_id, j->meta.correlation_id, sizeof(rm.correlation_id));
	envelope_reply_props(&rm, &props);
	if (j->worker->sec != NULL && j->sig.len > 0) {
		envelope_add_signature(&props, j->sig.key_id, j->sig.signed_at_ms, j->sig.sig,
		                       j->sig.len);
	}
	/* Not mandatory: a direct reply-to publish is always "returned" (DESIGN.md 2). */
	err = engine_publish(e, WIRE_DEFAULT_EXCHANGE, j->meta.reply_to, false, &props.props,
	                     j->reply_body, j->reply_len, fn, j);
	if (err == WARREN_OK) {
		drop_reply_body(j);
	}
	return err;
}

/* ------------------------------------------------------------ batched replies */

/* Replies ready in one turn for the same reply_to, to callers that take
 * batches, go as one message (warren(7) BATCHES): the broker's cost is per
 * message. Nothing waits: the tick after the turn's tasks sends what is
 * there, one reply alone as it would have gone anyway. */
struct reply_batch {
	size_t n;
	struct job *jobs[];
};

static void queue_reply(struct warren_worker *w, struct job *j)
{
	TAILQ_INSERT_TAIL(&w->pending.replies, j, reply_link);
}

/* Each reply of the batch is confirmed (or not) as it would have been alone. */
static void on_batch_confirm(struct engine *e, void *ctx, enum engine_confirm outcome)
{
	struct reply_batch *b = ctx;

	for (size_t i = 0; i < b->n; i++) {
		on_reply_confirm(e, b->jobs[i], outcome);
	}
	free(b);
}

static void publish_single(struct engine *e, struct job *j)
{
	if (publish_reply(e, j, on_reply_confirm) != WARREN_OK) {
		job_free(j); /* unacked: the broker delivers the request again */
	}
}

/* The properties of j's reply, as publish_reply makes them. */
static void reply_props(const struct job *j, struct envelope_meta *rm, struct envelope_props *p)
{
	*rm = (struct envelope_meta){
	    .status = j->status, .format = j->meta.format, .sealed = j->reply_sealed};
	memcpy(rm->correlation_id, j->meta.correlation_id, sizeof(rm->correlation_id));
	envelope_reply_props(rm, p);
	if (j->worker->sec != NULL && j->sig.len > 0) {
		envelope_add_signature(p, j->sig.key_id, j->sig.signed_at_ms, j->sig.sig,
		                       j->sig.len);
	}
}

static warren_err encode_replies(struct reply_batch *b, void **body, size_t *len)
{
	struct envelope_meta *rm = malloc(b->n * sizeof(*rm));
	struct envelope_props *props = malloc(b->n * sizeof(*props));
	struct batch_item *items = malloc(b->n * sizeof(*items));
	warren_err err = WARREN_ERR_NOMEM;

	if (rm != NULL && props != NULL && items != NULL) {
		for (size_t i = 0; i < b->n; i++) {
			reply_props(b->jobs[i], &rm[i], &props[i]);
			items[i] = (struct batch_item){&props[i].props, b->jobs[i]->reply_body,
			                               b->jobs[i]->reply_len};
		}
		err = batch_encode(items, b->n, body, len);
	}
	free(rm);
	free(props);
	free(items);
	return err;
}

static size_t publish_len(const struct job *j);
static void hold(struct engine *e, struct job *j);

/* A reply that cannot be written now is held by the engine, as a single
 * reply is in finish_task: released, it is queued again once there is
 * room, so this thread never blocks in a write (true: it is held). */
static bool hold_unless_writable(struct engine *e, struct job *j)
{
	if (!engine_must_hold(e, publish_len(j))) {
		return false;
	}
	hold(e, j);
	return true;
}

static void publish_batch(struct warren_worker *w, struct engine *e, struct reply_batch *b)
{
	amqp_basic_properties_t props;
	amqp_table_entry_t headers[1];
	void *body = NULL;
	size_t len = 0;
	warren_err err = encode_replies(b, &body, &len);

	if (err != WARREN_OK) {
		for (size_t i = 0; i < b->n; i++) {
			if (!hold_unless_writable(e, b->jobs[i])) {
				publish_single(e, b->jobs[i]);
			}
		}
		free(b);
		return;
	}
	if (engine_must_hold(e, len)) {
		for (size_t i = 0; i < b->n; i++) {
			hold(e, b->jobs[i]);
		}
		free(body);
		free(b);
		return;
	}
	batch_props(&props, headers, false);
	err = engine_publish(e, WIRE_DEFAULT_EXCHANGE, b->jobs[0]->meta.reply_to, false, &props,
	                     body, len, on_batch_confirm, b);
	free(body);
	if (err != WARREN_OK) {
		for (size_t i = 0; i < b->n; i++) {
			job_free(b->jobs[i]);
		}
		free(b);
		return;
	}
	for (size_t i = 0; i < b->n; i++) {
		drop_reply_body(b->jobs[i]);
	}
	pthread_mutex_lock(&w->mu);
	w->metrics.stats.reply_batches++;
	w->metrics.stats.batched_replies += b->n;
	pthread_mutex_unlock(&w->mu);
}

/* Takes out of *list the replies to first's reply_to, first included, as
 * many as one batch may carry within message.max_size and BATCH_MAX_BYTES
 * (a large reply goes alone, as it would have anyway). */
static struct reply_batch *take_group(struct warren_worker *w, struct job_queue *list, size_t n)
{
	struct reply_batch *b = malloc(sizeof(*b) + n * sizeof(b->jobs[0]));
	const char *to = TAILQ_FIRST(list)->meta.reply_to;
	size_t max =
	    w->settings.max_size < BATCH_MAX_BYTES ? w->settings.max_size : BATCH_MAX_BYTES;
	size_t room = max > BATCH_OVERHEAD ? max - BATCH_OVERHEAD : 0;
	struct job *j, *next;

	if (b == NULL) {
		return NULL;
	}
	b->n = 0;
	for (j = TAILQ_FIRST(list); j != NULL && b->n < BATCH_MAX_ENTRIES; j = next) {
		struct envelope_meta rm;
		struct envelope_props p;
		size_t need;

		next = TAILQ_NEXT(j, reply_link);
		if (strcmp(j->meta.reply_to, to) != 0) {
			continue;
		}
		reply_props(j, &rm, &p);
		need =
		    batch_item_bound(&(struct batch_item){&p.props, j->reply_body, j->reply_len});
		if (b->n > 0 && need > room) {
			break; /* the rest go in the next batch */
		}
		room -= need < room ? need : room;
		TAILQ_REMOVE(list, j, reply_link);
		b->jobs[b->n++] = j;
	}
	return b;
}

static void flush_replies(struct warren_worker *w, struct engine *e)
{
	struct job_queue list = TAILQ_HEAD_INITIALIZER(list);
	struct job *j;
	size_t n = 0;

	TAILQ_CONCAT(&list, &w->pending.replies, reply_link);
	TAILQ_FOREACH(j, &list, reply_link)
	{
		n++;
	}
	while (!TAILQ_EMPTY(&list)) {
		struct reply_batch *b = take_group(w, &list, n);

		if (b == NULL) { /* out of memory: each alone */
			j = TAILQ_FIRST(&list);
			TAILQ_REMOVE(&list, j, reply_link);
			if (!hold_unless_writable(e, j)) {
				publish_single(e, j);
			}
			continue;
		}
		if (b->n == 1) {
			if (!hold_unless_writable(e, b->jobs[0])) {
				publish_single(e, b->jobs[0]);
			}
			free(b);
		} else {
			publish_batch(w, e, b);
		}
	}
}

/* ------------------------------------------------------------ unroutable */

/* Dead letters and retries are published mandatory: one that no queue
 * takes comes back (basic.return, before its confirm), and its request is
 * kept. */
static void sent_link(struct warren_worker *w, struct job *j)
{
	j->returned = false;
	LIST_INSERT_HEAD(&w->pending.sent, j, sent_link);
	j->is_sent = true;
}

static void sent_unlink(struct warren_worker *w, struct job *j)
{
	if (j->is_sent) {
		LIST_REMOVE(j, sent_link);
		j->is_sent = false;
	}
}

static bool same_bytes(bool a_set, amqp_bytes_t a, bool b_set, amqp_bytes_t b)
{
	if (!a_set || !b_set) {
		return a_set == b_set;
	}
	return a.len == b.len && (a.len == 0 || memcmp(a.bytes, b.bytes, a.len) == 0);
}

/* A returned message carries the properties it was published with, which
 * are its request's: the oldest unconfirmed publish with the same
 * correlation id is the one (returns come in publish order). */
static void worker_returned(struct engine *e, void *arg, const amqp_basic_properties_t *props,
                            int code, const char *text)
{
	struct warren_worker *w = arg;
	struct job *oldest = NULL;
	bool set = props->_flags & AMQP_BASIC_CORRELATION_ID_FLAG;

	struct job *j;

	LIST_FOREACH(j, &w->pending.sent, sent_link)
	{
		const amqp_basic_properties_t *p = &j->delivery->message.properties;

		if (!j->returned && same_bytes(p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG,
		                               p->correlation_id, set, props->correlation_id)) {
			oldest = j; /* the list is newest first */
		}
	}
	if (oldest != NULL) {
		oldest->returned = true;
		log_warn("the broker returned the %s of correlation_id=%s: %d %s",
		         oldest->action == JOB_RETRY  ? "retry"
		         : oldest->action == JOB_MOVE ? "move to the durable lane"
		                                      : "dead letter",
		         oldest->meta.correlation_id, code, text);
	}
}

/* Holds a request whose dead letter or retry came back unroutable: not
 * acked, published again after a back-off (1 s doubling to 30 s), until
 * half the broker's consumer_timeout has passed; then it goes back to the
 * queue (rejected with requeue), before the broker would close the
 * channel over it. */
#define PARK_MIN_MS 1000
#define PARK_MAX_MS 30000

static void park(struct warren_worker *w, struct engine *e, struct job *j)
{
	int64_t now = engine_now();

	worker_count(w, &w->metrics.stats.unroutable, 1);
	if (j->parked_since == 0) {
		j->parked_since = now;
		j->park_backoff = PARK_MIN_MS;
	} else {
		j->park_backoff =
		    j->park_backoff * 2 > PARK_MAX_MS ? PARK_MAX_MS : j->park_backoff * 2;
	}
	if (now - j->parked_since >= w->settings.consumer_timeout_ms / 2) {
		log_error(
		    "no queue took the %s of correlation_id=%s for %lld s: giving the request "
		    "back to %s",
		    j->action == JOB_RETRY ? "retry" : "dead letter", j->meta.correlation_id,
		    (long long)(now - j->parked_since) / 1000, w->topo.queue);
		give_back(e, j, ENGINE_NACK);
		job_free(j);
		return;
	}
	log_error("no queue is bound for the %s of correlation_id=%s (exchange %s): holding the "
	          "request unacked, trying again in %lld ms",
	          j->action == JOB_RETRY ? "retry" : "dead letter", j->meta.correlation_id,
	          j->action == JOB_RETRY ? WIRE_DELAY_PREFIX "*" : WIRE_DLX,
	          (long long)j->park_backoff);
	j->park_until = now + j->park_backoff;
	LIST_INSERT_HEAD(&w->pending.parked, j, park_link);
}

static void finish_task(struct engine *e, struct engine_task *t);

/* The dead letter is safe: now tell the caller, if one waits, then ack. */
static void on_dead_letter_confirm(struct engine *e, void *ctx, enum engine_confirm outcome)
{
	struct job *j = ctx;
	struct warren_worker *w = j->worker;

	sent_unlink(w, j);
	if (outcome == ENGINE_ACK && j->returned) {
		park(w, e, j);
		return;
	}
	if (outcome == ENGINE_ACK) {
		worker_count(w, &w->metrics.stats.dead_lettered, 1);
		metrics_record_dead_letter(w, j->dead_reason);
		if (j->meta.reply_to[0] != '\0' && j->reply_body != NULL) {
			/* Its answer is a publish like any other: it may wait. */
			j->action = JOB_DEAD_ANSWER;
			finish_task(e, &j->task);
			return;
		}
		job_ack(e, j);
		worker_count(w, &w->metrics.stats.acked, 1);
	} else {
		give_back(e, j, outcome);
	}
	job_free(j);
}

static void on_retry_confirm(struct engine *e, void *ctx, enum engine_confirm outcome)
{
	struct job *j = ctx;
	struct warren_worker *w = j->worker;

	sent_unlink(w, j);
	if (outcome == ENGINE_ACK && j->returned) {
		park(w, e, j);
		return;
	}
	if (outcome == ENGINE_ACK) {
		worker_count(w, &w->metrics.stats.retried, 1);
		job_ack(e, j);
		worker_count(w, &w->metrics.stats.acked, 1);
	} else {
		give_back(e, j, outcome);
	}
	job_free(j);
}

/* The routing key of a request's dead letter or retry: its method when
 * that is one of this service's, so that rpc.<service>.dlq's binding
 * (<service>.#) takes the dead letter, and rpc.<service>'s takes the retry
 * back after its wait, whatever key brought the request to the queue (the
 * default exchange and the queue's name, say); otherwise the service's
 * name, which the same bindings match. */
static void route_key(const struct job *j, char *out, size_t n)
{
	const char *svc = j->worker->topo.service;
	const char *cands[] = {j->meta.method, j->delivery->routing_key};
	size_t slen = strlen(svc);

	for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
		if (strncmp(cands[i], svc, slen) == 0 &&
		    (cands[i][slen] == '\0' || cands[i][slen] == '.')) {
			snprintf(out, n, "%s", cands[i]);
			return;
		}
	}
	snprintf(out, n, "%s", svc);
}

/* The request as it came, to rpc.dlx under its method, with why. */
static warren_err publish_dead_letter(struct engine *e, struct job *j)
{
	const struct engine_delivery *d = j->delivery;
	struct warren_worker *w = j->worker;
	amqp_table_entry_t add[] = {
	    forward_str(DL_H_REASON, j->dead_reason),
	    forward_str(DL_H_ERROR, j->dead_error),
	    forward_str(DL_H_WORKER, w->settings.identity),
	    forward_int(DL_H_TIME, warren_now_ms()),
	    forward_str(DL_H_QUEUE, j->fast ? w->topo.fast_queue : w->topo.queue),
	    forward_int("rpc-attempt", j->meta.attempt),
	};
	struct forward f;
	char key[256];
	warren_err err;

	if (!forward_props(&f, &d->message.properties, add, (int)(sizeof(add) / sizeof(add[0])))) {
		return WARREN_ERR_NOMEM;
	}
	route_key(j, key, sizeof(key));
	log_warn("dead-lettering %s correlation_id=%s reason=%s: %s", key, j->meta.correlation_id,
	         j->dead_reason, j->dead_error);
	err = engine_publish(e, WIRE_DLX, key, true, &f.props, d->message.body.bytes,
	                     d->message.body.len, on_dead_letter_confirm, j);
	forward_free(&f);
	if (err == WARREN_OK) {
		sent_link(w, j);
	}
	return err;
}

/* The request as it came, to the delay tier for its wait, one attempt on. */
static warren_err publish_retry(struct engine *e, struct job *j)
{
	const struct engine_delivery *d = j->delivery;
	unsigned char token[SECURITY_TOKEN_BYTES];
	amqp_table_entry_t add[] = {forward_int("rpc-attempt", j->meta.attempt + 1),
	                            forward_bytes(SECURITY_RETRY_TOKEN, token, sizeof(token))};
	const struct wire_delay_tier *tier = retry_tier_for(j->retry_delay_ms);
	struct forward f;
	char key[256];
	warren_err err;

	/* A signed request's retry proves it is one (security.h). */
	if (j->worker->sec != NULL) {
		security_retry_token(j->worker->sec, j->signer, j->meta.message_id,
		                     j->meta.attempt + 1, token);
	}
	if (!forward_props(&f, &d->message.properties, add, j->worker->sec != NULL ? 2 : 1)) {
		return WARREN_ERR_NOMEM;
	}
	forward_expire_after(&f, j->retry_delay_ms);
	route_key(j, key, sizeof(key));
	log_info("retrying %s correlation_id=%s attempt=%d in %lld ms", key, j->meta.correlation_id,
	         j->meta.attempt + 1, (long long)j->retry_delay_ms);
	err = engine_publish(e, tier->name, key, true, &f.props, d->message.body.bytes,
	                     d->message.body.len, on_retry_confirm, j);
	forward_free(&f);
	if (err == WARREN_OK) {
		sent_link(j->worker, j);
	}
	return err;
}

/* The move is confirmed: the request is on the durable lane, where the
 * quorum queue counts its deliveries; the fast-lane copy goes. If no
 * queue took it, or the broker refused it, it goes back to the fast lane,
 * noted as this worker's doing, and runs there on its next delivery. */
static void on_move_confirm(struct engine *e, void *ctx, enum engine_confirm outcome)
{
	struct job *j = ctx;
	struct warren_worker *w = j->worker;

	sent_unlink(w, j);
	if (outcome == ENGINE_ACK && !j->returned) {
		worker_count(w, &w->metrics.stats.moved, 1);
		engine_ack(e, j->delivery->generation, j->delivery->delivery_tag);
		worker_count(w, &w->metrics.stats.acked, 1);
	} else {
		give_back(e, j, outcome == ENGINE_LOST ? ENGINE_LOST : ENGINE_NACK);
	}
	job_free(j);
}

/* A crash suspect from the fast lane, to rpc under its method, as it came
 * (persistent now): classic queues keep no x-delivery-count, so it is run
 * where the crash count is kept (warren(7), THE FAST LANE). */
static warren_err publish_move(struct engine *e, struct job *j)
{
	const struct engine_delivery *d = j->delivery;
	struct forward f;
	char key[256];
	warren_err err;

	if (!forward_props(&f, &d->message.properties, NULL, 0)) {
		return WARREN_ERR_NOMEM;
	}
	route_key(j, key, sizeof(key));
	log_warn("moving %s from %s to the durable lane: redelivered, its worker may have "
	         "crashed",
	         key, j->worker->topo.fast_queue);
	err = engine_publish(e, WIRE_EXCHANGE, key, true, &f.props, d->message.body.bytes,
	                     d->message.body.len, on_move_confirm, j);
	forward_free(&f);
	if (err == WARREN_OK) {
		sent_link(j->worker, j);
	}
	return err;
}

void worker_dead_letter(struct engine *e, struct job *j)
{
	/* So that a dead letter parked as unroutable is published again as
	 * one (the handler thread of an abandoned job no longer sets it). */
	j->action = JOB_DEAD_LETTER;
	finish_task(e, &j->task);
}

/* ------------------------------------------------------------ holding */

static bool publishes(const struct job *j)
{
	return j->action != JOB_ACK && j->action != JOB_PROBE && j->action != JOB_REQUEUE;
}

/* The bytes j's publish writes: its reply, or its request as it came (a
 * dead letter, a retry, a move). */
static size_t publish_len(const struct job *j)
{
	bool reply = j->action == JOB_REPLY_THEN_ACK || j->action == JOB_DEAD_ANSWER;

	return reply ? j->reply_len : j->delivery->message.body.len;
}

/* A publish that cannot be made now waits in the engine (engine_must_hold:
 * the broker blocks publishes, and a publish would stop it reading the
 * connection at all; or the socket holds more than engine_writable allows,
 * and rabbitmq-c 0.11 would wait inside the write with no time limit, this
 * thread stopped: no heartbeats, acks, time limits or stop). The engine
 * releases it in order (release_job). */
static void hold(struct engine *e, struct job *j)
{
	j->hold.len = publish_len(j);
	engine_hold(e, &j->hold);
}

/* Its connection is gone and the broker has requeued the request: a
 * reply still ends the caller's wait (the request's next delivery will
 * answer again, and the caller drops the duplicate), but a dead letter or
 * a retry would be made twice. True when j is dropped. */
static bool drop_stale(struct engine *e, struct job *j)
{
	const struct engine_delivery *d = j->delivery;

	if (d == NULL || d->generation == engine_generation(e)) {
		return false;
	}
	requeue_note(j->worker, j);
	if (j->action == JOB_REPLY_THEN_ACK || j->action == JOB_DEAD_ANSWER) {
		return false;
	}
	job_free(j);
	return true;
}

static void run_job(struct engine *e, struct job *j);

/* The engine's go-ahead for a held job; one from an older connection is
 * dropped (the broker has requeued its request). */
static void release_job(struct engine *e, struct engine_held *h)
{
	struct job *j = (struct job *)((char *)h - offsetof(struct job, hold));

	if (!drop_stale(e, j)) {
		run_job(e, j);
	}
}

/* Runs on the I/O thread once a handler thread is done with the job (and
 * for a dead letter the time limit or a park makes, or the answer after a
 * dead letter). A publish that cannot be made (no connection) leaves the
 * request unacked: the broker delivers it again. A publish that must wait,
 * or that would pass one already waiting, is held (hold). */
static void finish_task(struct engine *e, struct engine_task *t)
{
	struct job *j = (struct job *)t;

	if (drop_stale(e, j)) {
		return;
	}
	if (publishes(j) && engine_must_hold(e, publish_len(j))) {
		hold(e, j);
		return;
	}
	run_job(e, j);
}

static void run_job(struct engine *e, struct job *j)
{
	struct warren_worker *w = j->worker;

	switch (j->action) {
	case JOB_REPLY_THEN_ACK:
		if (j->meta.accept_batch >= BATCH_VERSION && j->meta.reply_to[0] != '\0') {
			queue_reply(w, j); /* sent from this turn's tick */
			return;
		}
		if (publish_reply(e, j, on_reply_confirm) == WARREN_OK) {
			return; /* on_reply_confirm frees it */
		}
		break;
	case JOB_DEAD_ANSWER:
		if (publish_reply(e, j, on_reply_confirm) == WARREN_OK) {
			return; /* on_reply_confirm acks and frees */
		}
		/* The dead letter is safe: ack it even unanswered. */
		job_ack(e, j);
		worker_count(w, &w->metrics.stats.acked, 1);
		break;
	case JOB_DEAD_LETTER:
		if (publish_dead_letter(e, j) == WARREN_OK) {
			return;
		}
		break;
	case JOB_RETRY:
		if (publish_retry(e, j) == WARREN_OK) {
			return;
		}
		break;
	case JOB_MOVE:
		if (publish_move(e, j) == WARREN_OK) {
			return;
		}
		break;
	case JOB_ACK:
		job_ack(e, j);
		worker_count(w, &w->metrics.stats.acked, 1);
		break;
	case JOB_REQUEUE:
		give_back(e, j, ENGINE_NACK);
		break;
	case JOB_PROBE:
		break;
	}
	job_free(j);
}

/* ------------------------------------------------------------ handler threads */

struct thread_start {
	struct warren_worker *w;
	int index;
};

static struct job *next_job(struct warren_worker *w)
{
	/* Stopping: what is still queued is never started (the broker has
	 * it back once the connection closes). */
	return handlerq_pop(&w->handlers);
}

static void worker_release(struct warren_worker *w);

/* A handler thread ends: false when a stop left it behind; it then drops
 * its reference to the worker (the last one frees it) and must not call
 * thread_fini, whose argument the owner may have freed since. */
static bool thread_exit(struct warren_worker *w, int index)
{
	bool left_behind;

	pthread_mutex_lock(&w->mu);
	left_behind = w->pool.state[index] == THREAD_DETACHED;
	if (!left_behind) {
		w->pool.state[index] = THREAD_EXITED;
	}
	pthread_mutex_unlock(&w->mu);
	if (left_behind) {
		worker_release(w);
	}
	return !left_behind;
}

static void *handler_main(void *arg)
{
	struct thread_start *ts = arg;
	struct warren_worker *w = ts->w;
	int index = ts->index;
	void *data = w->methods.thread_init != NULL
	                 ? w->methods.thread_init(ts->index, w->methods.thread_arg)
	                 : NULL;
	struct job *j;

	free(ts);
	while ((j = next_job(w)) != NULL) {
		bool answer = job_process(w, j, data);

		worker_count(w, &w->metrics.stats.completed, 1);
		if (!answer) {
			job_free(j); /* past its limit: the I/O thread answered */
		} else if (!engine_submit(w->engine, &j->task)) {
			job_free(j); /* stopped: unacked, so the broker requeues it */
		}
	}
	if (!thread_exit(w, index)) {
		return NULL;
	}
	if (w->methods.thread_fini != NULL) {
		w->methods.thread_fini(data, w->methods.thread_arg);
	}
	return NULL;
}

/* Queues j for a handler thread; signal: wake one now (otherwise
 * handlerq_wake does, at the end of the I/O thread's turn). Counted in
 * progress first, so that a handler done with it at once never takes the
 * count below what is really in progress. */
static void enqueue(struct warren_worker *w, struct job *j, bool signal)
{
	pthread_mutex_lock(&w->mu);
	if (j->delivery != NULL) {
		w->metrics.stats.received++;
	}
	w->metrics.stats.in_progress++;
	w->careful.suspects += j->suspect;
	pthread_mutex_unlock(&w->mu);
	handlerq_push(&w->handlers, j, signal);
}

void worker_enqueue(struct warren_worker *w, struct job *j)
{
	enqueue(w, j, true);
}

/* Whether j's request names a method registered to run on the I/O thread:
 * its type, or else its routing key, as job_process reads it. */
static bool runs_inline(const struct warren_worker *w, const struct job *j)
{
	const amqp_basic_properties_t *p = &j->delivery->message.properties;
	const struct method *m;
	char name[256];

	if (w->methods.ninline == 0 || j->action == JOB_PROBE) {
		return false;
	}
	if ((p->_flags & AMQP_BASIC_TYPE_FLAG) && p->type.len > 0) {
		if (p->type.len >= sizeof(name)) {
			return false;
		}
		memcpy(name, p->type.bytes, p->type.len);
		name[p->type.len] = '\0';
	} else {
		snprintf(name, sizeof(name), "%s", j->delivery->routing_key);
	}
	m = worker_find_method(w, name);
	return m != NULL && m->on_io_thread;
}

void worker_start_job(struct warren_worker *w, struct engine *e, struct job *j)
{
	bool answer;

	if (!runs_inline(w, j)) {
		enqueue(w, j, false);
		return;
	}
	pthread_mutex_lock(&w->mu);
	w->metrics.stats.received++;
	w->metrics.stats.in_progress++;
	w->careful.suspects += j->suspect;
	pthread_mutex_unlock(&w->mu);
	j->on_io_thread = true;
	answer = job_process(w, j, NULL);
	worker_count(w, &w->metrics.stats.completed, 1);
	if (answer) {
		finish_task(e, &j->task);
	} else {
		job_free(j);
	}
}

/* ------------------------------------------------------------ engine hooks */

/* The service's objects, as rabbitmq/definitions.json declares them
 * (wire_declare_service; its policies add the dead-lettering and the
 * delivery limit). */
static int declare_topology(struct warren_worker *w, amqp_connection_state_t conn, char *errstr,
                            size_t errlen)
{
	char what[200];

	if (wire_declare_service(conn, 1, w->topo.service, what, sizeof(what))) {
		return 0;
	}
	connect_describe_reply(amqp_get_rpc_reply(conn), what, errstr, errlen);
	return -1;
}

static int consume_queue(amqp_connection_state_t conn, const char *queue, char *tag, size_t taglen,
                         char *errstr, size_t errlen)
{
	amqp_basic_consume_ok_t *ok = amqp_basic_consume(
	    conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
	char what[128];

	if (ok == NULL) {
		snprintf(what, sizeof(what), "consuming %s", queue);
		connect_describe_reply(amqp_get_rpc_reply(conn), what, errstr, errlen);
		return -1;
	}
	envelope_copy(tag, taglen, ok->consumer_tag);
	return 0;
}

/* The fast lane is declared on a channel of its own, opened for it and
 * closed again: its classic queue lives on one node, and while that node
 * is down its declare fails, which closes the channel that asked. The
 * durable lane must not go down with it: the worker then serves the
 * durable lane alone and tries the fast one again every FAST_RETRY_MS.
 * 0: declared; 1: not now (logged); -1: the connection failed. */
#define FAST_CHANNEL  2
#define FAST_RETRY_MS 5000

static int declare_fast(struct warren_worker *w, amqp_connection_state_t conn)
{
	amqp_channel_close_ok_t ok = {0};
	amqp_rpc_reply_t r;
	char why[300];

	if (amqp_channel_open(conn, FAST_CHANNEL) == NULL) {
		return -1;
	}
	if (wire_declare_fast_lane(conn, FAST_CHANNEL, w->topo.service)) {
		r = amqp_channel_close(conn, FAST_CHANNEL, AMQP_REPLY_SUCCESS);
		return r.reply_type == AMQP_RESPONSE_NORMAL ? 0 : -1;
	}
	r = amqp_get_rpc_reply(conn);
	if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION ||
	    r.reply.id != AMQP_CHANNEL_CLOSE_METHOD) {
		return -1;
	}
	connect_describe_reply(r, "declaring the fast lane", why, sizeof(why));
	log_warn("%s: serving the durable lane %s alone, trying again in %d s", why, w->topo.queue,
	         FAST_RETRY_MS / 1000);
	return amqp_send_method(conn, FAST_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) ==
	               AMQP_STATUS_OK
	           ? 1
	           : -1;
}

/* Declares and consumes the fast lane when it is not consumed yet. */
static int consume_fast(struct warren_worker *w, amqp_connection_state_t conn, char *errstr,
                        size_t errlen)
{
	int rc;

	if (w->lanes.fast_tag[0] != '\0') {
		return 0;
	}
	w->lanes.fast_retry_at = engine_now() + FAST_RETRY_MS;
	rc = declare_fast(w, conn);
	if (rc != 0) {
		if (rc < 0) {
			connect_describe_reply(amqp_get_rpc_reply(conn), "declaring the fast lane",
			                       errstr, errlen);
		}
		return rc < 0 ? -1 : 0;
	}
	return consume_queue(conn, w->topo.fast_queue, w->lanes.fast_tag, sizeof(w->lanes.fast_tag),
	                     errstr, errlen);
}

/* A lane's consumer tag (LANE_SERVICE, LANE_BATCH, LANE_FAST). */
static char *lane_tag(struct warren_worker *w, unsigned lane)
{
	return lane == LANE_FAST    ? w->lanes.fast_tag
	       : lane == LANE_BATCH ? w->lanes.batch_consumer_tag
	                            : w->lanes.consumer_tag;
}

/* The lanes consumed now, as bits. */
static unsigned lanes_consumed(struct warren_worker *w)
{
	return (w->lanes.consumer_tag[0] != '\0' ? LANE_SERVICE : 0u) |
	       (w->lanes.batch_consumer_tag[0] != '\0' ? LANE_BATCH : 0u) |
	       (w->lanes.fast_tag[0] != '\0' ? LANE_FAST : 0u);
}

/* Consumes one lane with prefetch 1 (careful: noted in careful_lanes) or
 * worker.prefetch; basic.qos applies to the consumers started after it. */
static int consume_lane(struct warren_worker *w, amqp_connection_state_t conn, unsigned lane,
                        bool careful, char *errstr, size_t errlen)
{
	int rc;

	if (amqp_basic_qos(conn, 1, 0, (uint16_t)(careful ? 1 : w->settings.prefetch), 0) == NULL) {
		connect_describe_reply(amqp_get_rpc_reply(conn), "basic.qos", errstr, errlen);
		return -1;
	}
	if (lane == LANE_FAST) {
		rc = consume_fast(w, conn, errstr, errlen);
	} else if (lane == LANE_BATCH) {
		rc = consume_queue(conn, w->topo.batch_queue, w->lanes.batch_consumer_tag,
		                   sizeof(w->lanes.batch_consumer_tag), errstr, errlen);
	} else {
		rc = consume_queue(conn, w->topo.queue, w->lanes.consumer_tag,
		                   sizeof(w->lanes.consumer_tag), errstr, errlen);
	}
	if (rc == 0 && careful && lane_tag(w, lane)[0] != '\0') {
		w->careful.lanes |= lane;
	}
	return rc;
}

/* The three lanes (the service queue, its batches, the fast lane), on the
 * one channel, each with prefetch 1 while careful (all_careful),
 * worker.prefetch otherwise. */
static int consume(struct warren_worker *w, amqp_connection_state_t conn, char *errstr,
                   size_t errlen)
{
	w->careful.lanes = 0;
	if (consume_lane(w, conn, LANE_SERVICE, w->careful.on, errstr, errlen) != 0 ||
	    consume_lane(w, conn, LANE_BATCH, w->careful.on, errstr, errlen) != 0) {
		return -1;
	}
	return consume_lane(w, conn, LANE_FAST, w->careful.on, errstr, errlen);
}

void worker_consume(struct warren_worker *w, struct engine *e)
{
	char why[300];

	if (consume(w, engine_conn(e), why, sizeof(why)) != 0) {
		engine_fail(e, why);
	}
}

/* I/O thread, every turn: the fast lane again, when its last try failed. */
static int64_t fast_tick(struct warren_worker *w, struct engine *e, int64_t now)
{
	char why[300];

	if (!engine_connected(e) || w->life.stopping || w->breaker.paused ||
	    w->lanes.consumer_tag[0] == '\0' || w->lanes.fast_tag[0] != '\0') {
		return INT64_MAX;
	}
	if (now < w->lanes.fast_retry_at) {
		return w->lanes.fast_retry_at;
	}
	if (consume_lane(w, engine_conn(e), LANE_FAST, w->careful.on, why, sizeof(why)) != 0) {
		engine_fail(e, why);
		return INT64_MAX;
	}
	return w->lanes.fast_tag[0] != '\0' ? INT64_MAX : w->lanes.fast_retry_at;
}

/* The broker cancelled a consumer: the fast lane's (its classic queue
 * deleted, or its node down) is declared and consumed again after
 * FAST_RETRY_MS, the durable lanes served meanwhile, the connection kept
 * with every request it holds. Another lane's: false, the connection is
 * set up again. */
static bool worker_cancelled(struct engine *e, void *arg, const char *consumer_tag)
{
	struct warren_worker *w = arg;

	if (w->lanes.fast_tag[0] == '\0' || strcmp(consumer_tag, w->lanes.fast_tag) != 0) {
		return false;
	}
	w->lanes.fast_tag[0] = '\0';
	w->careful.lanes &= ~(unsigned)LANE_FAST;
	w->lanes.fast_retry_at = engine_now() + FAST_RETRY_MS;
	log_warn("the broker cancelled the consumer of %s (deleted, or its node is down): serving "
	         "the durable lane %s alone, trying again in %d s",
	         w->topo.fast_queue, w->topo.queue, FAST_RETRY_MS / 1000);
	engine_wake(e);
	return true;
}

static void cancel_tag(struct engine *e, char *tag)
{
	if (engine_connected(e) && tag[0] != '\0' &&
	    amqp_basic_cancel(engine_conn(e), 1, amqp_cstring_bytes(tag)) == NULL) {
		engine_fail(e, "basic.cancel failed");
	}
	tag[0] = '\0';
}

void worker_cancel_consumer(struct warren_worker *w, struct engine *e)
{
	cancel_tag(e, w->lanes.consumer_tag);
	cancel_tag(e, w->lanes.fast_tag);
	cancel_tag(e, w->lanes.batch_consumer_tag);
}

static int worker_setup(struct engine *e, void *arg, char *errstr, size_t errlen)
{
	struct warren_worker *w = arg;
	amqp_connection_state_t conn = engine_conn(e);

	w->lanes.consumer_tag[0] = '\0';
	/* Whatever the last connection held is the broker's again (noted): a
	 * new connection starts careful, as a new process does. */
	w->careful.on = true;
	w->careful.draining = false;
	w->lanes.fast_tag[0] = '\0';
	w->lanes.batch_consumer_tag[0] = '\0';
	if (declare_topology(w, conn, errstr, errlen) != 0) {
		return -1;
	}
	pthread_mutex_lock(&w->mu);
	w->metrics.stats.connected = true;
	pthread_mutex_unlock(&w->mu);
	/* Stopping, or the breaker is open: connected, but not consuming. */
	if (w->life.stopping || w->breaker.paused) {
		return 0;
	}
	return consume(w, conn, errstr, errlen);
}

struct job *worker_job_new(struct warren_worker *w)
{
	struct job *j = calloc(1, sizeof(*j));

	if (j != NULL) {
		j->worker = w;
		j->task.run = finish_task;
		j->hold.release = release_job;
		atomic_init(&j->refs, 1);
	}
	return j;
}

/* Whether this worker holds a request: queued, running, answering, or a
 * batch being split. */
static bool holds_any(struct warren_worker *w)
{
	int64_t held;

	pthread_mutex_lock(&w->mu);
	held = w->metrics.stats.in_progress;
	pthread_mutex_unlock(&w->mu);
	return held > 0 || engine_held_first(w->engine) != NULL || !LIST_EMPTY(&w->pending.sent) ||
	       !LIST_EMPTY(&w->pending.parked) || w->splits.splitting > 0;
}

/* Suspects run alone. A request that was out with a worker process that
 * died (requeue_suspect) may be the one that killed it: it must not run
 * while this worker holds anything else, or a second crash would count
 * against its neighbours too (x-delivery-count counts every return). A
 * worker consuming with the full prefetch that receives a suspect keeps it
 * aside, cancels its consumers, lets every other request it holds finish
 * and be acked, runs the suspect alone (isolate_tick), and consumes again
 * careful: every lane with prefetch 1, so that each further suspect runs
 * alone. Further suspects that raced in before the cancel are given back
 * (noted). A worker starts careful: a new process knows of no return, and
 * the requests its predecessor held wait at the queue's head.
 *
 * A lane leaves careful mode on its own (relax), when it hands over a
 * request (or a batch) that is no suspect while no suspect is held: its
 * one-request window is then full, so cancelling its consumer returns
 * nothing the broker had already sent it (RabbitMQ gives such requests
 * back with x-delivery-count raised, returns this worker never sees and
 * cannot note). A suspect runs at once only while every lane is careful;
 * once one has left, it is kept aside as above. */
static bool all_careful(struct warren_worker *w)
{
	return w->careful.on && w->careful.lanes == lanes_consumed(w);
}

/* Whether a suspect is queued or running (of this connection or the
 * last: a handler still runs on after its connection is lost). */
static bool holds_suspect(struct warren_worker *w)
{
	int64_t n;

	pthread_mutex_lock(&w->mu);
	n = w->careful.suspects;
	pthread_mutex_unlock(&w->mu);
	return n > 0;
}

/* The lane d came on, while careful (0 otherwise: nothing to relax, and
 * no tag compared on the hot path). */
static unsigned careful_lane(struct warren_worker *w, const struct engine_delivery *d, bool fast)
{
	if (!w->careful.on) {
		return 0;
	}
	if (fast) {
		return LANE_FAST;
	}
	return strcmp(d->consumer_tag, w->lanes.batch_consumer_tag) == 0 ? LANE_BATCH
	                                                                 : LANE_SERVICE;
}

/* A request that is no suspect came on lane while careful (beside:
 * whether a suspect was held when it came): that lane goes back to the
 * full prefetch, unless a suspect is still held, which may yet crash this
 * worker. The full prefetch would hand it more requests to hold beside
 * that suspect, each counted in its crash; careful, they wait at the
 * queue, and the lane's next request that finds no suspect held relaxes
 * it. Careful mode ends with its last careful lane. */
static void relax(struct warren_worker *w, struct engine *e, unsigned lane, bool beside)
{
	char why[300];

	if (!w->careful.on || beside || !(w->careful.lanes & lane) || w->breaker.paused ||
	    w->life.stopping || !engine_connected(e)) {
		return;
	}
	cancel_tag(e, lane_tag(w, lane));
	w->careful.lanes &= ~lane;
	if (consume_lane(w, engine_conn(e), lane, false, why, sizeof(why)) != 0) {
		engine_fail(e, why);
		return;
	}
	if (w->careful.lanes == 0) {
		w->careful.on = false;
	}
}

/* A suspect came while consuming with the full prefetch: the first is kept
 * aside to run alone, any other is given back. */
static void isolate(struct warren_worker *w, struct engine *e, struct job *j)
{
	if (w->careful.isolated != NULL || w->careful.draining) {
		give_back(e, j, ENGINE_NACK);
		job_free_unqueued(j);
		return;
	}
	w->careful.isolated = j;
	w->careful.draining = true;
	w->careful.drained_ticks = 0;
	worker_cancel_consumer(w, e);
}

/* Whether nothing has been held for two turns: the last ack is flushed at
 * the end of the turn that first saw none, and what follows it on the
 * channel (the suspect's own reply and ack, basic.qos, basic.consume)
 * reaches the broker after it. */
static bool drained(struct warren_worker *w)
{
	if (holds_any(w)) {
		w->careful.drained_ticks = 0;
		return false;
	}
	return ++w->careful.drained_ticks >= 2;
}

/* Every turn while draining: once drained, the suspect kept aside runs
 * alone; once it too has ended, consume again, careful. */
static int64_t isolate_tick(struct warren_worker *w, struct engine *e, int64_t now)
{
	if (!w->careful.draining) {
		return INT64_MAX;
	}
	if (!drained(w)) {
		return w->careful.drained_ticks > 0 ? now : now + 20;
	}
	if (w->life.stopping) {
		return INT64_MAX; /* nothing new starts; the broker has it back */
	}
	if (w->careful.isolated != NULL) {
		struct job *j = w->careful.isolated;

		w->careful.isolated = NULL;
		w->careful.drained_ticks = 0;
		worker_enqueue(w, j);
		return now + 20;
	}
	w->careful.draining = false;
	w->careful.on = true;
	if (!w->breaker.paused && !w->life.stopping && engine_connected(e)) {
		worker_consume(w, e);
	}
	return INT64_MAX;
}

/* A fast-lane request the broker redelivers, which this worker did not
 * give back itself: its last worker may have died running it. The classic
 * queue keeps no count of that, so it moves to the durable lane before it
 * runs (JOB_MOVE), where the quorum queue counts its crashes. */
static bool crash_suspect(struct warren_worker *w, const struct job *j)
{
	return j->fast && j->delivery->redelivered && !requeue_noted(w, j->delivery);
}

/* A move has no handler: in progress (and received) until its confirm. */
static void move(struct warren_worker *w, struct engine *e, struct job *j)
{
	pthread_mutex_lock(&w->mu);
	w->metrics.stats.received++;
	w->metrics.stats.in_progress++;
	w->careful.suspects += j->suspect;
	pthread_mutex_unlock(&w->mu);
	j->action = JOB_MOVE;
	finish_task(e, &j->task);
}

/* A batch delivered for the first time holds no suspect (one delivered
 * again is split into single requests, which are judged one by one): like
 * any request that is no suspect, it relaxes its lane (else a careful
 * worker that gets only batches would take one batch at a time on that
 * lane), but not beside a suspect still held (see relax). */
static void deliver_batch(struct warren_worker *w, struct engine *e, struct engine_delivery *d,
                          bool fast)
{
	bool beside = w->careful.on && holds_suspect(w);
	unsigned lane = careful_lane(w, d, fast);

	if (lane_deliver(w, e, d)) {
		relax(w, e, lane, beside);
	}
}

/* The job of a single request, or NULL when it was given back (no memory,
 * or the worker stopping). */
static struct job *job_of(struct warren_worker *w, struct engine *e, struct engine_delivery *d,
                          bool fast)
{
	struct job *j = worker_job_new(w);

	if (j == NULL) {
		engine_reject(e, d->generation, d->delivery_tag, true);
		engine_delivery_free(d);
		return NULL;
	}
	j->delivery = d;
	j->suspect = requeue_suspect(w, d);
	j->fast = fast;
	if (w->life.stopping) {
		/* Raced in after basic.cancel: give it back untouched. */
		give_back(e, j, ENGINE_NACK);
		engine_delivery_free(d);
		free(j); /* never queued: not in progress */
		return NULL;
	}
	return j;
}

static void worker_deliver(struct engine *e, void *arg, struct engine_delivery *d)
{
	struct warren_worker *w = arg;
	bool fast = w->lanes.fast_tag[0] != '\0' && strcmp(d->consumer_tag, w->lanes.fast_tag) == 0;
	struct job *j;

	if (d->redelivered) {
		worker_count(w, &w->metrics.stats.redelivered, 1);
	}
	if (fast) {
		worker_count(w, &w->metrics.stats.fast_received, 1);
	}
	if (batch_is(&d->message.properties)) {
		deliver_batch(w, e, d, fast);
		return;
	}
	j = job_of(w, e, d, fast);
	if (j == NULL) {
		return;
	}
	if (crash_suspect(w, j)) {
		move(w, e, j);
		return;
	}
	if (j->suspect && (!all_careful(w) || w->splits.splitting > 0)) {
		/* Careful, a suspect still waits while a redelivered batch it may
		 * come from is not acked yet: a crash now would bring the batch
		 * back and split it again, its entries counted twice. */
		isolate(w, e, j);
		return;
	}
	if (!j->suspect) {
		/* No crash is pending on this queue's head any more. */
		relax(w, e, careful_lane(w, d, fast), w->careful.on && holds_suspect(w));
	}
	worker_start_job(w, e, j);
}

/* Under mu: takes the queued jobs of connection gen out of the handler
 * queue (their requests are the broker's again) and notes, for the crash
 * count, every request of gen this worker still holds. Returns the taken
 * jobs in stale. */
static bool of_generation(const struct job *j, void *gen)
{
	return j->delivery != NULL && j->delivery->generation == *(uint64_t *)gen;
}

static void take_stale_locked(struct warren_worker *w, uint64_t gen, struct job_queue *stale)
{
	struct job *j;

	handlerq_take_if(&w->handlers, of_generation, &gen, stale);
	TAILQ_FOREACH(j, stale, queued)
	{
		requeue_note_locked(w, j);
		w->metrics.stats.stale_dropped++;
	}
	LIST_FOREACH(j, &w->limits.running, run_link)
	{
		if (j->delivery != NULL && j->delivery->generation == gen) {
			requeue_note_locked(w, j);
		}
	}
}

/* The held and parked jobs of connection gen are dropped: the broker has
 * requeued their requests. */
static void drop_stale_waiting(struct warren_worker *w, struct engine *e, uint64_t gen)
{
	struct engine_held *h, *next;
	struct job *j;

	for (h = engine_held_first(e); h != NULL; h = next) {
		next = engine_held_next(e, h);
		j = (struct job *)((char *)h - offsetof(struct job, hold));
		if (j->delivery != NULL && j->delivery->generation == gen) {
			engine_unhold(e, h);
			requeue_note(w, j);
			job_free(j);
		}
	}
	while ((j = LIST_FIRST(&w->pending.parked)) != NULL) {
		LIST_REMOVE(j, park_link);
		requeue_note(w, j);
		job_free(j);
	}
}

/* The connection is gone, and with it every delivery it brought: requests
 * still queued for a handler are dropped before they start (the broker
 * gives them to the next connection, where they would run a second
 * time). */
static void worker_lost(struct engine *e, void *arg, const char *why)
{
	struct warren_worker *w = arg;
	uint64_t gen = engine_generation(e);
	struct job_queue stale = TAILQ_HEAD_INITIALIZER(stale);
	struct job *j;

	pthread_mutex_lock(&w->mu);
	w->metrics.stats.connected = false;
	if (!w->life.stopping) {
		w->metrics.stats.reconnects++;
	}
	take_stale_locked(w, gen, &stale);
	pthread_mutex_unlock(&w->mu);
	if (w->careful.isolated != NULL) {
		/* The suspect kept aside is the broker's again: a return this
		 * worker caused. */
		requeue_note(w, w->careful.isolated);
		job_free_unqueued(w->careful.isolated);
		w->careful.isolated = NULL;
	}
	while ((j = TAILQ_FIRST(&stale)) != NULL) {
		TAILQ_REMOVE(&stale, j, queued);
		job_free(j);
	}
	drop_stale_waiting(w, e, gen);
}

/* Publishes again the parked dead letters and retries that are due;
 * returns when the next one is. */
static int64_t release_parked(struct warren_worker *w, struct engine *e, int64_t now)
{
	struct job *j, *after;
	int64_t next = INT64_MAX;

	for (j = LIST_FIRST(&w->pending.parked); j != NULL; j = after) {
		after = LIST_NEXT(j, park_link);
		if (j->park_until <= now && engine_connected(e)) {
			LIST_REMOVE(j, park_link);
			finish_task(e, &j->task);
			continue;
		}
		if (j->park_until < next) {
			next = j->park_until;
		}
	}
	return next;
}

static int64_t worker_tick(struct engine *e, void *arg, int64_t now)
{
	int64_t a, b, c, d;

	handlerq_wake(&((struct warren_worker *)arg)->handlers);
	flush_replies(arg, e);
	lane_tick(arg, e);
	a = timelimit_check(arg, e, now);
	b = breaker_tick(arg, e, now);
	c = release_parked(arg, e, now);
	d = isolate_tick(arg, e, now);
	a = a < b ? a : b;
	c = c < d ? c : d;
	b = fast_tick(arg, e, now);
	a = a < b ? a : b;
	return a < c ? a : c;
}

/* ------------------------------------------------------------ lifecycle */

/* The broker names of service's queues (the wire contract's). */
static void topology_init(struct worker_topology *t, const char *service)
{
	snprintf(t->service, sizeof(t->service), "%s", service);
	wire_service_queue(t->queue, sizeof(t->queue), service);
	wire_dlq(t->dlq, sizeof(t->dlq), service);
	wire_fast_queue(t->fast_queue, sizeof(t->fast_queue), service);
	wire_batch_queue(t->batch_queue, sizeof(t->batch_queue), service);
}

/* What the worker reads from the configuration once, and the engine's
 * limits that follow from it. */
static void settings_init(struct warren_worker *w, const warren_config *cfg, const char *service,
                          struct engine_config *ec)
{
	char host[128] = "?";

	w->settings.threads = (int)config_int(cfg, CFG_WORKER_THREADS);
	w->handlers.threads = w->settings.threads;
	w->settings.prefetch = (int)config_int(cfg, CFG_WORKER_PREFETCH);
	if (w->settings.prefetch == 0) {
		/* Chosen by measurement (warren.conf(5), worker.prefetch). */
		w->settings.prefetch =
		    w->settings.threads > PREFETCH_AUTO ? w->settings.threads : PREFETCH_AUTO;
	}
	w->settings.max_size = (size_t)config_int(cfg, CFG_MESSAGE_MAX_SIZE);
	/* A body above this is not even assembled (a sealed one may be the
	 * seal's overhead larger); job.c refuses it as too-large. */
	ec->max_body = w->settings.max_size + SEAL_OVERHEAD;
	w->settings.retry_attempts = (int)config_int(cfg, CFG_WORKER_RETRY_ATTEMPTS);
	w->settings.retry_delay_ms = config_int(cfg, CFG_WORKER_RETRY_DELAY);
	w->settings.crash_limit = (int)config_int(cfg, CFG_WORKER_CRASH_LIMIT);
	w->limits.default_ms = config_int(cfg, CFG_WORKER_HANDLER_TIMEOUT);
	w->limits.known = INT64_MAX;
	w->settings.consumer_timeout_ms = config_int(cfg, CFG_BROKER_CONSUMER_TIMEOUT);
	w->breaker.threshold = (int)config_int(cfg, CFG_WORKER_BREAKER_THRESHOLD);
	w->breaker.probe_ms = config_int(cfg, CFG_WORKER_BREAKER_PROBE);
	snprintf(w->metrics.listen, sizeof(w->metrics.listen), "%s",
	         config_str(cfg, CFG_METRICS_LISTEN));
	gethostname(host, sizeof(host) - 1);
	snprintf(w->settings.identity, sizeof(w->settings.identity), "%s@%s:%ld", service, host,
	         (long)getpid());
}

static warren_err worker_init(struct warren_worker *w, const warren_config *cfg, char *errstr,
                              size_t errlen)
{
	const char *service = config_str(cfg, CFG_WORKER_SERVICE);
	struct engine_config ec = engine_config_of(cfg, w->topo.queue);
	struct engine_hooks hooks = {.arg = w,
	                             .setup = worker_setup,
	                             .deliver = worker_deliver,
	                             .returned = worker_returned,
	                             .lost = worker_lost,
	                             .cancelled = worker_cancelled,
	                             .tick = worker_tick};

	ec.batch_acks = true; /* every request is acked or rejected through the engine */
	if (service[0] == '\0') {
		snprintf(errstr, errlen, "worker.service is not set");
		return WARREN_ERR_CONFIG;
	}
	topology_init(&w->topo, service);
	w->careful.on = true; /* see all_careful */
	if (!requeue_init(w)) {
		snprintf(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	settings_init(w, cfg, service, &ec);
	if (replycache_new(&w->cache, (size_t)config_int(cfg, CFG_WORKER_REPLY_CACHE_SIZE),
	                   (size_t)config_int(cfg, CFG_WORKER_REPLY_CACHE_BYTES),
	                   config_int(cfg, CFG_WORKER_REPLY_CACHE_TTL)) != 0) {
		snprintf(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	if (security_load(cfg, &w->sec, errstr, errlen) != 0) {
		return WARREN_ERR_CONFIG;
	}
	w->engine = engine_new(&ec, &hooks, errstr, errlen);
	return w->engine != NULL ? WARREN_OK : WARREN_ERR_CONFIG;
}

warren_err warren_worker_new(const warren_config *cfg, warren_worker **out, char *errstr,
                             size_t errlen)
{
	struct warren_worker *w;
	warren_err err;

	err = engine_global_init(cfg != NULL && out != NULL, errstr, errlen);
	if (err != WARREN_OK) {
		return err;
	}
	*out = NULL;
	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		snprintf(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	atomic_init(&w->refs, 1);
	pthread_mutex_init(&w->mu, NULL);
	handlerq_init(&w->handlers, 0); /* threads: from worker_init */
	TAILQ_INIT(&w->pending.replies);
	STAILQ_INIT(&w->splits.waiting);
	spare_init(&w->spares);
	pthread_cond_init(&w->idle_cond, NULL);
	err = worker_init(w, cfg, errstr, errlen);
	if (err != WARREN_OK) {
		warren_worker_free(w);
		return err;
	}
	*out = w;
	return WARREN_OK;
}

static warren_err add_method(warren_worker *w, const char *method, warren_handler_fn fn, void *arg,
                             bool on_io_thread)
{
	size_t slen = strlen(w->topo.service);
	struct method *grown;

	if (w->life.started || fn == NULL || method == NULL ||
	    strncmp(method, w->topo.service, slen) != 0 || method[slen] != '.' ||
	    method[slen + 1] == '\0' || worker_find_method(w, method) != NULL) {
		return WARREN_ERR_INVALID;
	}
	grown = realloc(w->methods.list, (w->methods.n + 1) * sizeof(*grown));
	if (grown == NULL) {
		return WARREN_ERR_NOMEM;
	}
	w->methods.list = grown;
	/* realloc leaves the new entry's counters uninitialised. */
	memset(&grown[w->methods.n], 0, sizeof(grown[w->methods.n]));
	grown[w->methods.n].name = strdup(method);
	if (grown[w->methods.n].name == NULL) {
		return WARREN_ERR_NOMEM;
	}
	grown[w->methods.n].fn = fn;
	grown[w->methods.n].arg = arg;
	grown[w->methods.n].timeout_ms = 0;
	grown[w->methods.n].on_io_thread = on_io_thread;
	w->methods.n++;
	w->methods.ninline += on_io_thread;
	return WARREN_OK;
}

warren_err warren_worker_handle(warren_worker *w, const char *method, warren_handler_fn fn,
                                void *arg)
{
	return add_method(w, method, fn, arg, false);
}

warren_err warren_worker_handle_inline(warren_worker *w, const char *method, warren_handler_fn fn,
                                       void *arg)
{
	return add_method(w, method, fn, arg, true);
}

warren_err warren_worker_set_timeout(warren_worker *w, const char *method, int64_t timeout_ms)
{
	struct method *m =
	    w != NULL && method != NULL ? (struct method *)worker_find_method(w, method) : NULL;

	/* An inline handler holds the I/O thread, which could not answer for
	 * it past a limit. */
	if (m == NULL || w->life.started || timeout_ms <= 0 || m->on_io_thread) {
		return WARREN_ERR_INVALID;
	}
	m->timeout_ms = timeout_ms;
	return WARREN_OK;
}

/* Every handler must end (or be answered for) before the broker's
 * consumer_timeout, which would close the whole channel. */
static warren_err check_time_limits(const struct warren_worker *w, char *errstr, size_t errlen)
{
	if (w->limits.default_ms >= w->settings.consumer_timeout_ms) {
		snprintf(errstr, errlen,
		         "worker.handler_timeout (%lld ms) must be shorter than "
		         "broker.consumer_timeout (%lld ms)",
		         (long long)w->limits.default_ms,
		         (long long)w->settings.consumer_timeout_ms);
		return WARREN_ERR_CONFIG;
	}
	for (size_t i = 0; i < w->methods.n; i++) {
		if (w->methods.list[i].timeout_ms >= w->settings.consumer_timeout_ms) {
			snprintf(errstr, errlen,
			         "the time limit of %s (%lld ms) must be shorter than "
			         "broker.consumer_timeout (%lld ms)",
			         w->methods.list[i].name, (long long)w->methods.list[i].timeout_ms,
			         (long long)w->settings.consumer_timeout_ms);
			return WARREN_ERR_CONFIG;
		}
	}
	return WARREN_OK;
}

warren_err warren_worker_set_probe(warren_worker *w, warren_probe_fn fn, void *arg)
{
	if (w == NULL || w->life.started) {
		return WARREN_ERR_INVALID;
	}
	w->breaker.probe = fn;
	w->breaker.probe_arg = arg;
	return WARREN_OK;
}

warren_err warren_worker_on_thread(warren_worker *w, warren_thread_init_fn init,
                                   warren_thread_fini_fn fini, void *arg)
{
	if (w->life.started) {
		return WARREN_ERR_INVALID;
	}
	w->methods.thread_init = init;
	w->methods.thread_fini = fini;
	w->methods.thread_arg = arg;
	return WARREN_OK;
}

static warren_err start_handlers(struct warren_worker *w, char *errstr, size_t errlen)
{
	w->pool.ids = calloc((size_t)w->settings.threads, sizeof(pthread_t));
	w->pool.state = calloc((size_t)w->settings.threads, sizeof(int));
	if (w->pool.ids == NULL || w->pool.state == NULL) {
		snprintf(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	for (int i = 0; i < w->settings.threads; i++) {
		struct thread_start *ts = malloc(sizeof(*ts));

		if (ts == NULL) {
			snprintf(errstr, errlen, "out of memory");
			return WARREN_ERR_NOMEM;
		}
		*ts = (struct thread_start){.w = w, .index = i};
		w->pool.state[i] = THREAD_RUNNING;
		if (pthread_create(&w->pool.ids[i], NULL, handler_main, ts) != 0) {
			free(ts);
			snprintf(errstr, errlen, "cannot start handler thread %d", i);
			return WARREN_ERR_SYSTEM;
		}
		w->pool.started++;
	}
	return WARREN_OK;
}

warren_err warren_worker_start(warren_worker *w, char *errstr, size_t errlen)
{
	warren_err err;

	if (w->life.started) {
		snprintf(errstr, errlen, "already started");
		return WARREN_ERR_INVALID;
	}
	err = check_time_limits(w, errstr, errlen);
	if (err != WARREN_OK) {
		return err;
	}
	/* Before anything is consumed: an address that cannot be bound must not
	 * cost a request. */
	if (w->metrics.listen[0] != '\0') {
		err = metrics_start(w, w->metrics.listen, &w->metrics.http, errstr, errlen);
		if (err != WARREN_OK) {
			return err;
		}
	}
	w->life.started = true;
	err = start_handlers(w, errstr, errlen);
	if (err == WARREN_OK) {
		err = engine_start(w->engine, errstr, errlen);
	}
	return err;
}

/* ------------------------------------------------------------ stopping */

struct cancel_req {
	struct engine_task task; /* first: the engine hands back &task */
	struct warren_worker *w;
};

static void cancel_task(struct engine *e, struct engine_task *t)
{
	struct warren_worker *w = ((struct cancel_req *)t)->w;

	w->life.stopping = true;
	worker_cancel_consumer(w, e);
}

/* Waits until no job is in progress or the deadline (monotonic ms) passes. */
static bool wait_idle(struct warren_worker *w, int64_t deadline)
{
	bool idle;

	pthread_mutex_lock(&w->mu);
	while (w->metrics.stats.in_progress > 0 && engine_now() < deadline) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&w->idle_cond, &w->mu, &ts);
	}
	idle = w->metrics.stats.in_progress == 0;
	pthread_mutex_unlock(&w->mu);
	return idle;
}

/* How long a stop waits for its handler threads to end once the grace
 * has passed, before it leaves those still running behind. */
#define STOP_BOUND_MS 1000

/* Under mu, with handler threads left behind: their jobs are abandoned, so
 * that when their handlers return they drop the job and touch neither the
 * engine nor the security state of a stopped worker. */
static void abandon_running_locked(struct warren_worker *w)
{
	struct job *j;

	while ((j = LIST_FIRST(&w->limits.running)) != NULL) {
		LIST_REMOVE(j, run_link);
		j->run_state = RUN_ABANDONED;
	}
}

/* Tells the handler threads to end and joins them, waiting up to
 * STOP_BOUND_MS in all; a thread still in its handler then (stuck past its
 * time limit, say) is detached with a reference to the worker, logged and
 * counted. Returns how many were left behind. */
static int stop_handlers(struct warren_worker *w)
{
	struct timespec until;
	int left = 0;

	handlerq_quit(&w->handlers);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += STOP_BOUND_MS / 1000;
	until.tv_nsec += (STOP_BOUND_MS % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	for (int i = 0; i < w->pool.started; i++) {
		if (pthread_timedjoin_np(w->pool.ids[i], NULL, &until) == 0) {
			continue;
		}
		bool detach;

		pthread_mutex_lock(&w->mu);
		detach = w->pool.state[i] == THREAD_RUNNING;
		if (detach) {
			w->pool.state[i] = THREAD_DETACHED;
			atomic_fetch_add(&w->refs, 1); /* the thread's, until it ends */
			w->metrics.stats.detached_handlers++;
			abandon_running_locked(w);
			left++;
		}
		pthread_mutex_unlock(&w->mu);
		if (detach) {
			pthread_detach(w->pool.ids[i]);
		} else {
			pthread_join(w->pool.ids[i], NULL); /* it was ending */
		}
	}
	w->pool.started = 0;
	if (left > 0) {
		log_error(
		    "%d handler thread(s) still running %d ms after the stop's grace (stuck past "
		    "their time limit?): left behind, not joined",
		    left, STOP_BOUND_MS);
	}
	return left;
}

warren_err warren_worker_stop(warren_worker *w, int grace_ms)
{
	struct cancel_req cancel = {.task = {.run = cancel_task}, .w = w};
	bool idle;
	int left;

	if (w == NULL || !w->life.started || w->life.stopped) {
		return WARREN_OK;
	}
	w->life.stopped = true;
	if (engine_submit(w->engine, &cancel.task)) {
		/* The task is on the stack: wait for the I/O thread to have run it. */
		idle = wait_idle(w, engine_now() + (grace_ms > 0 ? grace_ms : 0));
	} else {
		idle = wait_idle(w, engine_now());
	}
	engine_stop(w->engine);
	left = stop_handlers(w);
	return idle && left == 0 ? WARREN_OK : WARREN_ERR_TIMEOUT;
}

static void free_unacked(struct job *j)
{
	if (j != NULL) {
		engine_delivery_free(j->delivery);
		free(j->reply_body);
		free(j);
	}
}

/* A request still parked on a run when the worker ends (none once every
 * run finished): unacked, the broker has it back. */
static void drop_parked(struct replycache_waiter *wt, void *arg)
{
	(void)arg;
	free_unacked((struct job *)((char *)wt - offsetof(struct job, cache_wait)));
}

/* The last reference is gone: no thread of the worker runs any more. */
static void worker_destroy(struct warren_worker *w)
{
	struct job_queue queued = TAILQ_HEAD_INITIALIZER(queued);
	struct engine_held *h;
	struct job *j;

	/* Jobs still queued, held or parked were never acked: the broker has
	 * requeued them. The held ones are freed once the I/O thread is gone,
	 * before the engine that holds them. */
	engine_stop(w->engine);
	while (w->engine != NULL && (h = engine_held_first(w->engine)) != NULL) {
		engine_unhold(w->engine, h);
		free_unacked((struct job *)((char *)h - offsetof(struct job, hold)));
	}
	engine_free(w->engine);
	handlerq_take_if(&w->handlers, NULL, NULL, &queued);
	while ((j = TAILQ_FIRST(&queued)) != NULL) {
		TAILQ_REMOVE(&queued, j, queued);
		free_unacked(j);
	}
	while ((j = LIST_FIRST(&w->pending.parked)) != NULL) {
		LIST_REMOVE(j, park_link);
		free_unacked(j);
	}
	free_unacked(w->careful.isolated);
	while ((j = TAILQ_FIRST(&w->pending.replies)) != NULL) {
		TAILQ_REMOVE(&w->pending.replies, j, reply_link);
		free_unacked(j);
	}
	lane_free(w);
	replycache_free(w->cache, drop_parked, NULL);
	for (size_t i = 0; i < w->methods.n; i++) {
		free(w->methods.list[i].name);
	}
	free(w->methods.list);
	free(w->pool.ids);
	free(w->pool.state);
	free(w->notes.list);
	security_free(w->sec);
	worker_spare_free(w);
	pthread_mutex_destroy(&w->mu);
	handlerq_destroy(&w->handlers);
	pthread_cond_destroy(&w->idle_cond);
	free(w);
}

static void worker_release(struct warren_worker *w)
{
	if (atomic_fetch_sub(&w->refs, 1) == 1) {
		worker_destroy(w);
	}
}

void warren_worker_free(warren_worker *w)
{
	if (w == NULL) {
		return;
	}
	metrics_http_stop(w->metrics.http); /* it reads the worker: first */
	w->metrics.http = NULL;
	warren_worker_stop(w, 0);
	worker_release(w);
}
