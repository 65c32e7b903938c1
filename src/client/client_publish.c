/* client_publish.c: publishing requests on the I/O thread: alone, held by
 * the engine while it cannot be made, confirmed; a request the broker did
 * not take (no route, nack, connection lost before the confirm) is
 * published again after a back-off, with the same message_id, while
 * client.retry_attempts and the deadline allow. The fast lane's fallback. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <sodium.h>

#include "backoff.h"
#include "batch.h"
#include "client_metrics.h"
#include "config.h"
#include "engine.h"
#include "envelope.h"
#include "fastrand.h"
#include "lanes.h"
#include "log.h"
#include "pending.h"
#include "reply.h"
#include "patterns.h"
#include "seal.h"
#include "security.h"
#include "trace.h"
#include "wire.h"

#include "client_int.h"

/* The engine's go-ahead for a held call: its publish is made now, alone.
 * A released call never joins this turn's batch of requests: there it
 * could be held again, behind calls held after it. One whose deadline
 * passed while it was held ends instead. */
void client_release_call(struct engine *e, struct engine_held *h)
{
	struct call *call = (struct call *)((char *)h - offsetof(struct call, hold));
	warren_client *c = call->client;

	call->hold.since = 0; /* a later hold counts from its own start */
	if (engine_now() >= call->entry.deadline) {
		client_timeout(c, e, call);
		return;
	}
	client_publish_one(c, e, call);
}

/* The engine holds the call's publish until it can be made
 * (client_release_call). */
void client_hold(warren_client *c, struct call *call)
{
	call->hold.len = call->out->len;
	engine_hold(c->engine, &call->hold);
}

/* A signature older than this is made again before its request goes out. */
#define RESIGN_AFTER_MS 1000

/* A call whose request cannot be published for want of a connection: held
 * until the connection, its setup included, is back, without using up
 * client.retry_attempts. Its deadline ends it (client_timeout), or at once
 * the client's shutdown. */
void client_await_connection(warren_client *c, struct call *call)
{
	/* One waiting for its retry goes then (held, when still not
	 * connected): holding it too would publish it twice. */
	if (call->finished || call->waiting_retry) {
		return;
	}
	if (atomic_load(&c->closing)) {
		client_finish(call, WARREN_ERR_CLOSED, NULL, "the client is shutting down");
		return;
	}
	client_hold(c, call);
}

/* A monotonic time (engine_now) as UTC wall-clock text with ms. */
static void wall_text(int64_t mono, int64_t now, char *buf, size_t cap)
{
	int64_t wall = warren_now_ms() - (now - mono);
	time_t secs = (time_t)(wall / 1000);
	struct tm tm;
	char day[32] = "";

	gmtime_r(&secs, &tm);
	strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, cap, "%s.%03dZ", day, (int)(wall % 1000));
}

/* Why a call reached its deadline without a reply, when the client knows
 * better than "no reply": not connected, or the broker refuses publishes,
 * since when and for how long; "" otherwise. */
static void deadline_reason(warren_client *c, struct engine *e, int64_t now, char *buf, size_t cap)
{
	const char *blocked = engine_blocked(e);
	int64_t since = c->lost_since != 0 ? c->lost_since : c->blocked_since;
	char when[48];

	buf[0] = '\0';
	if (c->lost_since == 0 && blocked == NULL) {
		return;
	}
	if (since == 0 || since > now) {
		since = now;
	}
	wall_text(since, now, when, sizeof(when));
	if (c->lost_since != 0) {
		snprintf(buf, cap, "not connected to the broker since %s (for %.1f s): ", when,
		         (double)(now - since) / 1000.0);
	} else {
		snprintf(buf, cap,
		         "the broker refuses publishes (%s) since %s (for %.1f s): ", blocked, when,
		         (double)(now - since) / 1000.0);
	}
}

/* Ends call at its deadline: DEADLINE_EXCEEDED, saying why when known. */
void client_timeout(warren_client *c, struct engine *e, struct call *call)
{
	char why[256];

	deadline_reason(c, e, engine_now(), why, sizeof(why));
	client_finish(call, WARREN_ERR_TIMEOUT, NULL, "%sno reply within %lld ms", why,
	              (long long)call->timeout_ms);
}

/* The call's request went out (again): a resend or a republish is counted. */
void client_note_sent(warren_client *c, struct call *call)
{
	if (call->resending) {
		call->resending = false;
		STAT_ADD(c, resent, 1);
	} else if (call->sent) {
		STAT_ADD(c, republished, 1);
	}
	call->sent = true;
}

/* The broker did not take the request: publish it again after a back-off
 * if attempts are left and the deadline allows, else end the call with err
 * and what happened. */
void client_retry_or_finish(struct call *call, warren_err err, const char *what)
{
	warren_client *c = call->client;
	struct envelope_meta *m = call->out != NULL ? &call->out->meta : NULL;
	int64_t now = engine_now(), delay;

	/* A call that already ended (its deadline, its reply or a block came
	 * before this confirm) is never published again: the confirm that
	 * brought us here releases it. */
	if (call->finished) {
		return;
	}
	if (m != NULL && call->tries < c->retry_attempts && !atomic_load(&c->closing)) {
		delay = backoff_ms(c->retry_delay_ms, 60000, call->tries, randombytes_random());
		if (now + delay < call->entry.deadline) {
			call->retry.deadline = now + delay;
			memcpy(call->retry.id, call->entry.id, sizeof(call->retry.id));
			call->retry.id_len = call->entry.id_len;
			if (pending_insert(&c->retries, &call->retry) == 0) {
				call->waiting_retry = true;
				log_debug("republishing %s correlation_id=%s in %lld ms: %s",
				          m->method, m->correlation_id, (long long)delay, what);
				return;
			}
		}
	}
	if (m != NULL && call->tries > 1) {
		client_finish(call, err, NULL, "%s, after %d attempts", what, call->tries);
	} else {
		client_finish(call, err, NULL, "%s", what);
	}
}

void client_on_confirm(struct engine *e, void *ctx, enum engine_confirm outcome)
{
	struct call *call = ctx;
	char what[400];

	/* awaiting_confirm stays set across client_finish, so finish cannot free the call. */
	if (outcome == ENGINE_NACK) {
		snprintf(what, sizeof(what), "the broker refused the request for %s (nack)",
		         call->out->meta.method);
		client_retry_or_finish(call, WARREN_ERR_BROKER, what);
	} else if (outcome == ENGINE_LOST) {
		/* Published again once the connection is back: the broker may or
		 * may not have it, and the same message_id makes a second copy
		 * harmless. */
		client_await_connection(call->client, call);
	} else if (call->one_way && !call->returned) {
		client_finish(call, WARREN_OK, NULL, NULL);
	}
	call->awaiting_confirm = false;
	if (call->finished) {
		client_call_release(call);
	} else if (outcome == ENGINE_ACK && !call->waiting_retry && !call->resend) {
		/* Confirmed, and never sent again: the request is the broker's
		 * now (its meta stays, for the messages that name its method). */
		free(call->out->body);
		call->out->body = NULL;
		call->out->len = 0;
	}
}

/* ------------------------------------------------------------ lanes */

/* The length of the service part of a method (SERVICE.NAME). */
static size_t service_len(const char *method)
{
	const char *dot = strchr(method, '.');

	return dot != NULL ? (size_t)(dot - method) : strlen(method);
}

/* Whether the call's request goes to rpc.fast now: a transient call, while
 * the exchange exists and its service's fast lane was not found missing in
 * the last LANE_DOWN_MS. */
bool client_lane_fast(warren_client *c, const struct call *call, int64_t now)
{
	const char *method = call->out->meta.method;

	if (!call->fast || !c->fast_exchange) {
		return false;
	}
	return lanes_until(&c->down, method, service_len(method)) <= now;
}

/* The fast lane returned the request: no queue of its service is bound to
 * rpc.fast (a rolling upgrade: neither rabbitmq/definitions.json nor a
 * worker of this version has declared one yet). It is sent again at once
 * on the durable lane, without using up a retry, and the service's
 * transient calls take the durable lane for LANE_DOWN_MS. */
bool client_fall_back(warren_client *c, struct call *call)
{
	int64_t now = engine_now();

	if (call->finished || call->waiting_retry || call->out == NULL) {
		return false;
	}
	lanes_note(&c->down, call->out->meta.method, service_len(call->out->meta.method),
	           now + LANE_DOWN_MS);
	call->fast = false;
	call->retry.deadline = now;
	memcpy(call->retry.id, call->entry.id, sizeof(call->retry.id));
	call->retry.id_len = call->entry.id_len;
	if (pending_insert(&c->retries, &call->retry) != 0) {
		return false;
	}
	call->waiting_retry = true;
	call->tries--; /* republish_due counts a try: this one is free */
	log_info("no fast-lane queue for %s: sending correlation_id=%s on the durable lane; "
	         "that service's transient calls take it for %d s",
	         call->out->meta.method, call->out->meta.correlation_id, LANE_DOWN_MS / 1000);
	pthread_mutex_lock(&c->stats_mu);
	c->stats.fast_fallbacks++;
	pthread_mutex_unlock(&c->stats_mu);
	return true;
}

/* ------------------------------------------------------------ publishing */

/* Publishes call's request alone, now: to rpc.fast for a transient call
 * while its service has a fast lane, else to rpc. */
void client_publish_one(warren_client *c, struct engine *e, struct call *call)
{
	struct envelope_props props;

	call->returned = false;
	call->on_fast = client_lane_fast(c, call, engine_now());
	/* Signed afresh when sent again: the same request, but its first copy
	 * may have been delivered and its signature taken by a worker's replay
	 * filter; rpc-attempt stays, as only a worker's own retry raises it.
	 * Afresh too when it was signed more than RESIGN_AFTER_MS ago: a call
	 * held through an outage must not go out past security.window.
	 * (Signed requests never go batched: this is their one way out.) */
	if (c->sec != NULL &&
	    (call->sent || warren_now_ms() - call->out->sig.signed_at_ms > RESIGN_AFTER_MS)) {
		security_sign_request(c->sec, &call->out->meta, call->out->body, call->out->len,
		                      &call->out->sig);
	}
	envelope_request_props(&call->out->meta, &props);
	if (c->sec != NULL) {
		const struct signature *sig = &call->out->sig;
		envelope_add_signature(&props, sig->key_id, sig->signed_at_ms, sig->sig, sig->len);
	}
	if (engine_publish(e, call->on_fast ? WIRE_FAST_EXCHANGE : WIRE_EXCHANGE,
	                   call->out->meta.method, true, &props.props, call->out->body,
	                   call->out->len, client_on_confirm, call) != WARREN_OK) {
		client_await_connection(c, call);
		return;
	}
	call->awaiting_confirm = true;
	client_note_sent(c, call);
	if (call->on_fast) {
		STAT_ADD(c, fast_sent, 1);
	}
}

void client_publish_task(struct engine *e, struct engine_task *t)
{
	struct call *call = (struct call *)t;
	warren_client *c = call->client;
	int rc;

	if (!call->in_table) {
		/* The deadline runs from the call (client_start_call), not from when this
		 * thread first sees it: one that passed meanwhile ends here. */
		if (engine_now() >= call->entry.deadline) {
			client_timeout(c, e, call);
			return;
		}
		rc = pending_insert(&c->table, &call->entry);
		if (rc != 0) {
			client_finish(call, rc == -1 ? WARREN_ERR_FULL : WARREN_ERR_INVALID, NULL,
			              rc == -1 ? "too many calls in flight (client.max_in_flight)"
			                       : "duplicate correlation id");
			return;
		}
		call->in_table = true;
	}
	if (!engine_connected(e)) {
		client_await_connection(c, call);
		return;
	}
	if (engine_must_hold(e, call->out->len)) {
		client_hold(c, call);
		return;
	}
	if (client_batchable(c, call)) {
		client_queue_request(c, call); /* published from this turn's tick */
		return;
	}
	client_publish_one(c, e, call);
}

/* A request written just before the broker blocked the connection is not
 * read (nor confirmed) until the alarm ends: its call fails like a held
 * one after client.blocked_timeout (the request may still be delivered
 * later; a retry with the same message_id is safe). */
static void fail_unconfirmed(struct pending_entry *entry, void *arg)
{
	struct collect *col = arg;
	struct call *call = (struct call *)((char *)entry - offsetof(struct call, entry));

	if (call->awaiting_confirm) {
		col->calls[(*col->n)++] = call;
	}
}

static void fail_blocked_unconfirmed(warren_client *c, const char *reason)
{
	size_t k = 0, n = pending_count(&c->table);
	struct call **calls = malloc(sizeof(*calls) * (n > 0 ? n : 1));
	struct collect col = {calls, &k, false};

	if (calls == NULL) {
		return;
	}
	pending_each(&c->table, fail_unconfirmed, &col);
	for (size_t i = 0; i < k; i++) {
		client_finish(calls[i], WARREN_ERR_BROKER, NULL,
		              "the broker refuses publishes (%s): not confirmed within %lld ms "
		              "(client.blocked_timeout)",
		              reason, (long long)c->blocked_timeout_ms);
	}
	free(calls);
}

/* Notes when the broker began to refuse publishes (0: it does not). */
void client_note_blocked(warren_client *c, struct engine *e, int64_t now)
{
	if (engine_blocked(e) == NULL) {
		c->blocked_since = 0;
	} else if (c->blocked_since == 0) {
		c->blocked_since = now;
	}
}

/* When client.blocked_timeout is set: the time from which it counts for a
 * publish held since since (the block's start, or the connection's, when
 * later). */
static int64_t blocked_from(const warren_client *c, struct engine *e, int64_t since)
{
	int64_t from = engine_blocked(e) != NULL ? c->blocked_since : c->up_since;

	return since > from ? since : from;
}

/* The time at which client.blocked_timeout ends a publish held since
 * since; INT64_MAX when it does not apply (off, or not connected: the
 * deadline decides). */
int64_t client_blocked_due(const warren_client *c, struct engine *e, int64_t since)
{
	if (c->blocked_timeout_ms == 0 || !engine_connected(e)) {
		return INT64_MAX;
	}
	return blocked_from(c, e, since) + c->blocked_timeout_ms;
}

/* Held calls are published by the engine once the broker takes publishes
 * again (client_release_call); by default their deadline ends them. With
 * client.blocked_timeout set, they fail once they have waited that long
 * for a connected broker, and so do those whose publish the broker has
 * not read since it blocked. */
void client_expire_held(warren_client *c, struct engine *e, int64_t now)
{
	const char *reason = engine_blocked(e);
	struct engine_held *h;

	if (reason != NULL && now >= client_blocked_due(c, e, 0)) {
		fail_blocked_unconfirmed(c, reason);
	}
	/* The oldest is not due: none is. */
	while ((h = engine_held_first(e)) != NULL && now >= client_blocked_due(c, e, h->since)) {
		struct call *call = (struct call *)((char *)h - offsetof(struct call, hold));

		client_finish(call, WARREN_ERR_BROKER, NULL,
		              "the broker refuses publishes (%s): not sent within %lld ms "
		              "(client.blocked_timeout)",
		              reason != NULL ? reason : "it does not read the connection",
		              (long long)c->blocked_timeout_ms);
	}
}

/* The calls whose wait is over are published again (one whose last publish
 * is not confirmed yet waits for that confirm first). */
void client_republish_due(warren_client *c, struct engine *e, int64_t now)
{
	struct pending_entry *entry;

	while ((entry = pending_pop_expired(&c->retries, now)) != NULL) {
		struct call *call = (struct call *)((char *)entry - offsetof(struct call, retry));

		call->waiting_retry = false;
		if (call->awaiting_confirm) {
			call->retry.deadline = now + 5;
			if (pending_insert(&c->retries, &call->retry) == 0) {
				call->waiting_retry = true;
				continue;
			}
		}
		call->tries++; /* counted as republished, and signed afresh, as it goes */
		client_publish_task(e, &call->task);
	}
}

void client_returned(struct engine *e, void *arg, const amqp_basic_properties_t *props, int code,
                     const char *text)
{
	warren_client *c = arg;
	char id[PENDING_ID_MAX + 1];
	struct pending_entry *entry;

	if (!(props->_flags & AMQP_BASIC_CORRELATION_ID_FLAG)) {
		return;
	}
	envelope_copy(id, sizeof(id), props->correlation_id);
	if (batch_is(props)) {
		struct req_batch *b;

		LIST_FOREACH(b, &c->batches, link)
		{
			if (strcmp(b->id, id) == 0) {
				b->returned = true; /* its confirm follows */
			}
		}
		return;
	}
	entry = pending_find(&c->table, id, strlen(id));
	if (entry != NULL) {
		struct call *call = (struct call *)((char *)entry - offsetof(struct call, entry));
		char method[256];

		char what[400];

		envelope_copy(method, sizeof(method), props->type);
		snprintf(what, sizeof(what), "no queue is bound for method %s (%d %s)", method,
		         code, text);
		call->returned = true;
		if (call->on_fast && client_fall_back(c, call)) {
			return;
		}
		client_retry_or_finish(call, WARREN_ERR_UNROUTABLE, what);
	}
}
