/* client_batch.c: the requests of one turn of the I/O thread that go as
 * one batch (warren(7) BATCHES), and their confirm. */
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

/* ------------------------------------------------------------ batched requests */

static void service_of(const char *method, char *out, size_t cap)
{
	size_t n = strcspn(method, ".");

	snprintf(out, cap, "%.*s", (int)n, method);
}

bool client_batchable(warren_client *c, const struct call *call)
{
	char service[65];

	/* Signed requests go alone: a batch delivered again is split into
	 * fresh single deliveries, which a worker's replay filter would drop
	 * as replays of entries it already saw (it_sign's lost-connection
	 * test lost calls so). */
	if (c->sec != NULL || c->batch[0] == '\0' ||
	    !patterns_match(c->batch, call->out->meta.method, NULL, 0)) {
		return false;
	}
	/* Transient requests travel batched on the fast lane, while their
	 * service has one; durable ones on the lane of batches. */
	if (!call->out->meta.persistent) {
		return client_lane_fast(c, call, engine_now());
	}
	service_of(call->out->meta.method, service, sizeof(service));
	return lanes_until(&c->lane_off, service, strlen(service)) <= engine_now();
}

void client_queue_request(warren_client *c, struct call *call)
{
	call->awaiting_confirm = true; /* so that finish leaves it to the flush */
	TAILQ_INSERT_TAIL(&c->outq, call, out_link);
}

/* Takes call out of the batching: false when it has ended meanwhile (it
 * is then released). */
static bool unqueue(struct call *call)
{
	call->awaiting_confirm = false;
	if (call->finished) {
		client_call_release(call);
		return false;
	}
	return true;
}

/* A batch no queue took: each of its requests goes alone, as its first
 * delivery (no worker saw the batch), so not counted as republished. */
static void publish_returned(warren_client *c, struct engine *e, struct req_batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		if (unqueue(b->calls[i])) {
			b->calls[i]->sent = false;
			client_publish_one(c, e, b->calls[i]);
		}
	}
}

static void on_batch_confirm(struct engine *e, void *ctx, enum engine_confirm outcome)
{
	struct req_batch *b = ctx;
	warren_client *c = b->c;

	if (b->listed) {
		LIST_REMOVE(b, link);
		b->listed = false;
	}
	if (outcome == ENGINE_ACK && b->returned && b->fast) {
		/* No fast lane for this service: its transient calls take the
		 * durable lane for LANE_DOWN_MS, these at once (as client_fall_back). */
		lanes_note(&c->down, b->service, strlen(b->service), engine_now() + LANE_DOWN_MS);
		STAT_ADD(c, fast_fallbacks, b->n);
		log_info("no fast-lane queue for %s: %zu requests sent on the durable lane; that "
		         "service's transient calls take it for %d s",
		         b->service, b->n, LANE_DOWN_MS / 1000);
		publish_returned(c, e, b);
	} else if (outcome == ENGINE_ACK && b->returned) {
		/* No batch lane for this service: its workers do not take batches. */
		lanes_note(&c->lane_off, b->service, strlen(b->service),
		           engine_now() + LANE_OFF_MS);
		STAT_ADD(c, batch_fallbacks, 1);
		log_info("service %s takes no batches (no queue on %s): single requests for %d s",
		         b->service, WIRE_BATCH_EXCHANGE, LANE_OFF_MS / 1000);
		publish_returned(c, e, b);
	} else {
		for (size_t i = 0; i < b->n; i++) {
			client_on_confirm(e, b->calls[i], outcome);
		}
	}
	free(b);
}

static warren_err encode_requests(warren_client *c, struct req_batch *b, void **body, size_t *len)
{
	struct envelope_props *props = malloc(b->n * sizeof(*props));
	struct batch_item *items = malloc(b->n * sizeof(*items));
	warren_err err = WARREN_ERR_NOMEM;

	if (props != NULL && items != NULL) {
		for (size_t i = 0; i < b->n; i++) {
			struct outgoing *out = b->calls[i]->out;

			envelope_request_props(&out->meta, &props[i]);
			if (c->sec != NULL) {
				envelope_add_signature(&props[i], out->sig.key_id,
				                       out->sig.signed_at_ms, out->sig.sig,
				                       out->sig.len);
			}
			items[i] = (struct batch_item){&props[i].props, out->body, out->len};
		}
		err = batch_encode(items, b->n, body, len);
	}
	free(props);
	free(items);
	return err;
}

/* The I/O thread never writes what the socket cannot take (client_publish_task,
 * engine_writable): a batch, like a single request, that does not fit now
 * is held, each of its calls, and sent again from a later tick. */
static bool hold_unwritable(warren_client *c, struct engine *e, struct call *call, size_t len)
{
	if (!engine_must_hold(e, len)) {
		return false;
	}
	if (unqueue(call)) {
		client_hold(c, call);
	}
	return true;
}

/* Each call of b goes alone on the durable lane: its service's fast lane
 * was found missing since they were queued. */
static void publish_each_alone(warren_client *c, struct engine *e, struct req_batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		if (unqueue(b->calls[i])) {
			client_publish_one(c, e, b->calls[i]);
		}
	}
	free(b);
}

/* Publishes b's encoded body with the batch's own properties. */
static warren_err send_batch(warren_client *c, struct engine *e, struct req_batch *b,
                             const void *body, size_t len)
{
	amqp_basic_properties_t props;
	amqp_table_entry_t headers[1];

	batch_props(&props, headers, !b->fast);
	snprintf(b->id, sizeof(b->id), "batch-%s-%llu", c->prefix,
	         (unsigned long long)++c->batch_seq);
	props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
	props.correlation_id = amqp_cstring_bytes(b->id);
	/* The broker gives a direct reply-to name its channel's suffix only in
	 * the properties of the message itself: the batch says it for its
	 * entries (warren(7) BATCHES). */
	if (c->reply_mode == REPLY_DIRECT) {
		props._flags |= AMQP_BASIC_REPLY_TO_FLAG;
		props.reply_to = amqp_cstring_bytes(WIRE_DIRECT_REPLY_TO);
	}
	return engine_publish(e, b->fast ? WIRE_FAST_EXCHANGE : WIRE_BATCH_EXCHANGE, b->service,
	                      true, &props, body, len, on_batch_confirm, b);
}

/* b could not be published (the connection is gone): each of its calls
 * waits for the next one. */
static void batch_not_sent(warren_client *c, struct req_batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		if (unqueue(b->calls[i])) {
			client_await_connection(c, b->calls[i]);
		}
	}
	free(b);
}

/* b is on the wire: listed until its confirm, its calls marked sent. */
static void batch_sent(warren_client *c, struct req_batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		b->calls[i]->returned = false;
		b->calls[i]->on_fast = b->fast;
		client_note_sent(c, b->calls[i]);
	}
	if (b->fast) {
		STAT_ADD(c, fast_sent, b->n);
	}
	LIST_INSERT_HEAD(&c->batches, b, link);
	b->listed = true;
	STAT_ADD(c, request_batches, 1);
}

/* Publishes b as one message; or its calls each alone when their fast
 * lane is gone, or held when the engine holds publishes. */
static void publish_batch(warren_client *c, struct engine *e, struct req_batch *b)
{
	void *body = NULL;
	size_t len = 0;
	warren_err err;

	if (b->fast && !client_lane_fast(c, b->calls[0], engine_now())) {
		publish_each_alone(c, e, b);
		return;
	}
	err = encode_requests(c, b, &body, &len);
	if (err == WARREN_OK && engine_must_hold(e, len)) {
		for (size_t i = 0; i < b->n; i++) {
			hold_unwritable(c, e, b->calls[i], len);
		}
		free(body);
		free(b);
		return;
	}
	if (err == WARREN_OK) {
		err = send_batch(c, e, b, body, len);
	}
	free(body);
	if (err != WARREN_OK) {
		batch_not_sent(c, b);
		return;
	}
	batch_sent(c, b);
}

/* Takes out of *list the live calls for the first one's service, as
 * many as one batch may carry within message.max_size and BATCH_MAX_BYTES
 * (n bounds them): a large request goes alone, as it would have anyway,
 * and no batch is larger than the socket is asked to take at once. */
static struct req_batch *take_requests(warren_client *c, struct call_tailq *list, size_t n)
{
	struct req_batch *b = malloc(sizeof(*b) + n * sizeof(b->calls[0]));
	size_t max = c->max_size < BATCH_MAX_BYTES ? c->max_size : BATCH_MAX_BYTES;
	size_t room = max > BATCH_OVERHEAD ? max - BATCH_OVERHEAD : 0;
	struct call *call, *next;

	if (b == NULL) {
		return NULL;
	}
	memset(b, 0, sizeof(*b));
	b->c = c;
	service_of(TAILQ_FIRST(list)->out->meta.method, b->service, sizeof(b->service));
	b->fast = !TAILQ_FIRST(list)->out->meta.persistent;
	for (call = TAILQ_FIRST(list); call != NULL && b->n < BATCH_MAX_ENTRIES; call = next) {
		char service[65];
		struct envelope_props p;
		size_t need;

		next = TAILQ_NEXT(call, out_link);
		service_of(call->out->meta.method, service, sizeof(service));
		if (strcmp(service, b->service) != 0 || b->fast == call->out->meta.persistent) {
			continue;
		}
		envelope_request_props(&call->out->meta, &p);
		need = batch_item_bound(&(struct batch_item){&p.props, NULL, call->out->len}) +
		       3 * 64; /* the signature headers */
		if (b->n > 0 && need > room) {
			break;
		}
		room -= need < room ? need : room;
		TAILQ_REMOVE(list, call, out_link);
		b->calls[b->n++] = call;
	}
	return b;
}

/* Publishes the requests queued this turn: together per service, one
 * alone as it would have gone anyway. */
void client_flush_requests(warren_client *c, struct engine *e)
{
	struct call_tailq list = TAILQ_HEAD_INITIALIZER(list);
	struct call *call;
	size_t n = 0;

	/* The calls that ended meanwhile are released, not sent. */
	while ((call = TAILQ_FIRST(&c->outq)) != NULL) {
		TAILQ_REMOVE(&c->outq, call, out_link);
		if (call->finished) {
			unqueue(call);
			continue;
		}
		TAILQ_INSERT_TAIL(&list, call, out_link);
		n++;
	}
	while (!TAILQ_EMPTY(&list)) {
		struct req_batch *b = take_requests(c, &list, n);

		if (b == NULL || b->n == 1) {
			call = b != NULL ? b->calls[0] : TAILQ_FIRST(&list);
			if (b == NULL) {
				TAILQ_REMOVE(&list, call, out_link);
			}
			free(b);
			if (!hold_unwritable(c, e, call, call->out->len) && unqueue(call)) {
				client_publish_one(c, e, call);
			}
			continue;
		}
		publish_batch(c, e, b);
	}
}

/* At shutdown, with the I/O thread gone: calls still queued end here. */
void client_drop_queued(warren_client *c)
{
	struct call *call;

	while ((call = TAILQ_FIRST(&c->outq)) != NULL) {
		TAILQ_REMOVE(&c->outq, call, out_link);
		client_finish(call, WARREN_ERR_CLOSED, NULL, "the client is shutting down");
		unqueue(call);
	}
}
