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

/* The engine's go-ahead for a held call: its publish is made now. */
void client_release_call(struct engine *e, struct engine_held *h)
{
	struct call *call = (struct call *)((char *)h - offsetof(struct call, hold));

	client_publish_task(e, &call->task);
}

/* The engine holds the call's publish until it can be made
 * (client_release_call). A call held again (released, then batched into
 * more than the socket takes) keeps its first since: client.blocked_timeout
 * counts from when it first had to wait. */
void client_hold(warren_client *c, struct call *call)
{
	call->hold.len = call->out->len;
	engine_hold(c->engine, &call->hold);
}

/* A call whose connection went away: CLOSED when we are shutting down. */
warren_err client_lost_err(const warren_client *c)
{
	return atomic_load(&c->closing) ? WARREN_ERR_CLOSED : WARREN_ERR_TRANSPORT;
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
	const char *method = call->out != NULL ? call->out->meta.method : "";
	char what[400];

	/* awaiting_confirm stays set across client_finish, so finish cannot free the call. */
	if (outcome == ENGINE_NACK) {
		snprintf(what, sizeof(what), "the broker refused the request for %s (nack)",
		         method);
		client_retry_or_finish(call, WARREN_ERR_BROKER, what);
	} else if (outcome == ENGINE_LOST) {
		snprintf(what, sizeof(what),
		         "connection lost before the broker confirmed the request for %s", method);
		client_retry_or_finish(call, client_lost_err(call->client), what);
	} else if (call->one_way && !call->returned) {
		client_finish(call, WARREN_OK, NULL, NULL);
	}
	call->awaiting_confirm = false;
	if (call->finished) {
		client_call_release(call);
	} else if (call->out != NULL && !call->waiting_retry) {
		/* Confirmed: the request is the broker's now. */
		free(call->out->body);
		free(call->out);
		call->out = NULL;
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
	call->tries--; /* republish_due counts the republish: this one is free */
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
	envelope_request_props(&call->out->meta, &props);
	if (c->sec != NULL) {
		const struct signature *sig = &call->out->sig;
		envelope_add_signature(&props, sig->key_id, sig->signed_at_ms, sig->sig, sig->len);
	}
	if (engine_publish(e, call->on_fast ? WIRE_FAST_EXCHANGE : WIRE_EXCHANGE,
	                   call->out->meta.method, true, &props.props, call->out->body,
	                   call->out->len, client_on_confirm, call) != WARREN_OK) {
		client_retry_or_finish(call, client_lost_err(c), "publish failed: connection lost");
		return;
	}
	call->awaiting_confirm = true;
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
			client_finish(call, WARREN_ERR_TIMEOUT, NULL, "no reply within %lld ms",
			              (long long)call->timeout_ms);
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
		client_retry_or_finish(call, client_lost_err(c), "not connected to the broker");
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

/* Held calls are published by the engine once the broker takes
 * publishes again (client_release_call); here they fail when they have waited
 * client.blocked_timeout. */
void client_expire_held(warren_client *c, struct engine *e, int64_t now)
{
	const char *reason = engine_blocked(e);

	if (reason == NULL) {
		c->blocked_since = 0;
	} else if (c->blocked_since == 0) {
		c->blocked_since = now;
	} else if (now - c->blocked_since >= c->blocked_timeout_ms) {
		fail_blocked_unconfirmed(c, reason);
	}

	struct engine_held *h;

	/* The oldest is not due: none is. */
	while ((h = engine_held_first(e)) != NULL && now - h->since >= c->blocked_timeout_ms) {
		struct call *call = (struct call *)((char *)h - offsetof(struct call, hold));
		bool connected = engine_connected(e);

		client_finish(call, WARREN_ERR_BROKER, NULL,
		              "the broker refuses publishes (%s): not sent within %lld ms "
		              "(client.blocked_timeout)",
		              reason != NULL ? reason
		              : connected    ? "it does not read the connection"
		                             : "not connected",
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
		call->tries++;
		/* Signed afresh: the same request, but its first copy may have
		 * been delivered (the connection was lost before the confirm) and
		 * its signature taken by a worker's replay filter; rpc-attempt
		 * stays, as only a worker's own retry raises it. */
		if (c->sec != NULL) {
			security_sign_request(c->sec, &call->out->meta, call->out->body,
			                      call->out->len, &call->out->sig);
		}
		pthread_mutex_lock(&c->stats_mu);
		c->stats.republished++;
		pthread_mutex_unlock(&c->stats_mu);
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
