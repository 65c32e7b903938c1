/* client.c: the caller side. Calls are registered in the correlation table
 * before their request is published, and leave it on every terminal path:
 * reply, basic.return, nack, deadline, connection loss, shutdown. A request
 * the broker did not take (no route, nack, connection lost before the
 * confirm) is published again after a back-off, with the same message_id,
 * while client.retry_attempts and the deadline allow. Everything below the
 * public functions runs on the engine's I/O thread. */
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

enum reply_mode { REPLY_DIRECT, REPLY_QUEUE };

/* What is needed only until the request is published. */
struct outgoing {
	struct envelope_meta meta;
	void *body;
	size_t len;
	struct signature sig; /* when the client signs (security.scheme) */
};

struct call {
	struct engine_task task;    /* the publish, queued to the I/O thread */
	struct pending_entry entry; /* in the table from publish to its end */
	struct pending_entry retry; /* in c->retries while waiting to be published again */
	struct warren_client *client;
	struct outgoing *out;          /* freed once published */
	const unsigned char *seal_key; /* security.encrypt: seals the request, opens the reply */
	warren_done_fn done;
	void *arg;
	int64_t timeout_ms;
	/* Publishes tried so far, republishes included: the back-off and
	 * client.retry_attempts count these. A republish is the same attempt
	 * of the same call, so rpc-attempt stays 1 (warren(7)). */
	int tries;
	bool one_way;
	bool in_table;
	bool awaiting_confirm; /* the engine holds a pointer to this call */
	bool finished;         /* done has run */
	bool waiting_retry;    /* in c->retries */
	bool returned;         /* basic.return came for the current publish */
	bool fast;             /* transient: sent on the fast lane while it has a queue */
	bool on_fast;          /* the current publish went to rpc.fast */
	/* Held by the engine while its publish cannot be made (hold.on), since
	 * hold.since: client.blocked_timeout counts from there. */
	struct engine_held hold;
	/* Its method's metrics (NULL: client.metrics_listen is off), and when it began. */
	struct client_method *metrics;
	struct timespec started;
	/* Queued this turn to go in a batch of requests (c->outq); the engine
	 * is as good as holding it (awaiting_confirm is set meanwhile). */
	bool queued;
	TAILQ_ENTRY(call) out_link; /* in c->outq, then in flush_requests' list */
};

TAILQ_HEAD(call_tailq, call);
struct req_batch;
LIST_HEAD(req_batches, req_batch);

/* A service whose fast lane returned a request (no queue bound to rpc.fast
 * for it): its transient calls take the durable lane for LANE_DOWN_MS. */
#define LANE_DOWN_SLOTS 16
#define LANE_DOWN_MS    30000
/* A service whose batch lane was found missing: singles for LANE_OFF_MS. */
#define LANE_OFF_SLOTS 64
#define LANE_OFF_MS    30000

struct warren_client {
	struct engine *engine;
	struct pending table;   /* I/O thread only */
	struct security *sec;   /* NULL: nothing signed */
	struct pending retries; /* calls waiting to be published again, by due time */
	int retry_attempts;
	int64_t retry_delay_ms;
	int64_t blocked_timeout_ms;
	int64_t blocked_since; /* engine_now() when the tick first saw the block; 0: not blocked */
	enum reply_mode reply_mode;
	char reply_queue[128];
	char prefix[17]; /* this client's half of every correlation id */
	char app_id[128];
	char *transient; /* client.transient: methods sent with delivery_mode 1 */
	/* I/O thread only: rpc.fast exists (checked at each connection), and
	 * the services whose fast lane was found missing lately. */
	bool fast_exchange;
	struct lanes down;
	struct lanes_slot down_slot[LANE_DOWN_SLOTS];
	bool batch_replies; /* client.batch_replies: requests offer rpc-accept-batch */
	char *batch;        /* client.batch: methods whose requests may go batched */
	/* I/O thread only: requests queued this turn for a batch, batches
	 * published and not yet confirmed, services without a batch lane. */
	struct call_tailq outq;
	struct req_batches batches;
	uint64_t batch_seq;
	struct lanes lane_off;
	struct lanes_slot lane_off_slot[LANE_OFF_SLOTS];
	int64_t default_timeout_ms;
	size_t max_size;
	atomic_bool closing; /* set by warren_client_free, read on the I/O thread */
	bool first_connect_done;

	pthread_mutex_t stats_mu;
	warren_client_stats stats;
	struct client_metrics metrics; /* its own lock */
};

/* Calls gathered from the table before ending them (ending reshapes it). */
struct collect {
	struct call **calls;
	size_t *n;
	bool all;
};

/* ------------------------------------------------------------ ids */

static void random_hex(char *dst, size_t nbytes)
{
	unsigned char raw[32];

	fastrand_buf(raw, nbytes);
	sodium_bin2hex(dst, nbytes * 2 + 1, raw, nbytes);
}

/* 128 random bits as 32 hex digits; the first 16 are fixed per client, so a
 * reply to an ended call (late) can be told from one that was never ours. */
static void new_correlation_id(const warren_client *c, char *dst)
{
	memcpy(dst, c->prefix, 16);
	random_hex(dst + 16, 8);
}

/* ------------------------------------------------------------ stats */

#define STAT_ADD(c, field, n)                                                                      \
	do {                                                                                       \
		pthread_mutex_lock(&(c)->stats_mu);                                                \
		(c)->stats.field += (n);                                                           \
		pthread_mutex_unlock(&(c)->stats_mu);                                              \
	} while (0)

void warren_client_get_stats(warren_client *c, warren_client_stats *out)
{
	pthread_mutex_lock(&c->stats_mu);
	*out = c->stats;
	pthread_mutex_unlock(&c->stats_mu);
	out->blocked_ms = c->engine != NULL ? (uint64_t)engine_blocked_ms(c->engine) : 0;
}

/* The metrics server's thread: one scrape (metrics_render_fn). */
static bool render_metrics(FILE *f, void *arg)
{
	warren_client *c = arg;
	warren_client_stats st;

	warren_client_get_stats(c, &st);
	return client_metrics_render(f, &c->metrics, c->app_id, &st);
}

/* A call ended with err (and reply, when one came): its method's series. */
static void record_end(warren_client *c, const struct call *call, warren_err err,
                       const warren_reply *reply)
{
	struct timespec now;
	double seconds;

	if (call->metrics == NULL) {
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &now);
	seconds = (double)(now.tv_sec - call->started.tv_sec) +
	          (double)(now.tv_nsec - call->started.tv_nsec) / 1e9;
	client_metrics_record(
	    &c->metrics, call->metrics,
	    reply != NULL ? (int)warren_reply_status(reply) : (int)warren_err_status(err), seconds);
}

/* ------------------------------------------------------------ ending calls */

static void call_release(struct call *call)
{
	if (call->out != NULL) {
		free(call->out->body);
		free(call->out);
	}
	free(call);
}

static void count_end(warren_client *c, warren_err err)
{
	pthread_mutex_lock(&c->stats_mu);
	switch (err) {
	case WARREN_OK:
	case WARREN_ERR_REMOTE:
		c->stats.replies++;
		break;
	case WARREN_ERR_TIMEOUT:
		c->stats.timeouts++;
		break;
	case WARREN_ERR_UNROUTABLE:
		c->stats.unroutable++;
		break;
	default:
		c->stats.failed++;
		break;
	}
	c->stats.in_flight--;
	pthread_mutex_unlock(&c->stats_mu);
}

/* The engine holds the call's publish until it can be made (publish_task
 * runs it then). A call held again (released, then batched into more
 * than the socket takes) keeps its first since: client.blocked_timeout
 * counts from when it first had to wait. */
static void publish_task(struct engine *e, struct engine_task *t);

static void release_call(struct engine *e, struct engine_held *h)
{
	struct call *call = (struct call *)((char *)h - offsetof(struct call, hold));

	publish_task(e, &call->task);
}

static void hold(warren_client *c, struct call *call)
{
	call->hold.len = call->out->len;
	engine_hold(c->engine, &call->hold);
}

/* The one terminal path: leaves the table, runs done, frees the call unless
 * the engine still holds it for a confirm. */
static void finish(struct call *call, warren_err err, warren_reply *reply, const char *fmt, ...)
    WARREN_PRINTF(4, 5);

static void finish(struct call *call, warren_err err, warren_reply *reply, const char *fmt, ...)
{
	warren_client *c = call->client;
	char msg[512] = "";
	va_list ap;

	if (call->finished) {
		warren_reply_free(reply);
		return;
	}
	if (call->in_table) {
		pending_remove(&c->table, &call->entry);
		call->in_table = false;
	}
	if (call->waiting_retry) {
		pending_remove(&c->retries, &call->retry);
		call->waiting_retry = false;
	}
	engine_unhold(c->engine, &call->hold);
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
	}
	call->finished = true;
	count_end(c, err);
	record_end(c, call, err, reply); /* before done, which takes reply */
	call->done(err, reply, msg, call->arg);
	if (!call->awaiting_confirm) {
		call_release(call);
	}
}

/* A call whose connection went away: CLOSED when we are shutting down. */
static warren_err lost_err(const warren_client *c)
{
	return atomic_load(&c->closing) ? WARREN_ERR_CLOSED : WARREN_ERR_TRANSPORT;
}

/* The broker did not take the request: publish it again after a back-off
 * if attempts are left and the deadline allows, else end the call with err
 * and what happened. */
static void retry_or_finish(struct call *call, warren_err err, const char *what)
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
		finish(call, err, NULL, "%s, after %d attempts", what, call->tries);
	} else {
		finish(call, err, NULL, "%s", what);
	}
}

static void on_confirm(struct engine *e, void *ctx, enum engine_confirm outcome)
{
	struct call *call = ctx;
	const char *method = call->out != NULL ? call->out->meta.method : "";
	char what[400];

	/* awaiting_confirm stays set across finish, so finish cannot free the call. */
	if (outcome == ENGINE_NACK) {
		snprintf(what, sizeof(what), "the broker refused the request for %s (nack)",
		         method);
		retry_or_finish(call, WARREN_ERR_BROKER, what);
	} else if (outcome == ENGINE_LOST) {
		snprintf(what, sizeof(what),
		         "connection lost before the broker confirmed the request for %s", method);
		retry_or_finish(call, lost_err(call->client), what);
	} else if (call->one_way && !call->returned) {
		finish(call, WARREN_OK, NULL, NULL);
	}
	call->awaiting_confirm = false;
	if (call->finished) {
		call_release(call);
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
static bool lane_fast(warren_client *c, const struct call *call, int64_t now)
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
static bool fall_back(warren_client *c, struct call *call)
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

static bool batchable(warren_client *c, const struct call *call);
static void queue_request(warren_client *c, struct call *call);

/* Publishes call's request alone, now: to rpc.fast for a transient call
 * while its service has a fast lane, else to rpc. */
static void publish_one(warren_client *c, struct engine *e, struct call *call)
{
	struct envelope_props props;

	call->returned = false;
	call->on_fast = lane_fast(c, call, engine_now());
	envelope_request_props(&call->out->meta, &props);
	if (c->sec != NULL) {
		const struct signature *sig = &call->out->sig;
		envelope_add_signature(&props, sig->key_id, sig->signed_at_ms, sig->sig, sig->len);
	}
	if (engine_publish(e, call->on_fast ? ENVELOPE_FAST_EXCHANGE : ENVELOPE_EXCHANGE,
	                   call->out->meta.method, true, &props.props, call->out->body,
	                   call->out->len, on_confirm, call) != WARREN_OK) {
		retry_or_finish(call, lost_err(c), "publish failed: connection lost");
		return;
	}
	call->awaiting_confirm = true;
	if (call->on_fast) {
		STAT_ADD(c, fast_sent, 1);
	}
}

static void publish_task(struct engine *e, struct engine_task *t)
{
	struct call *call = (struct call *)t;
	warren_client *c = call->client;
	int rc;

	if (!call->in_table) {
		/* The deadline runs from the call (start_call), not from when this
		 * thread first sees it: one that passed meanwhile ends here. */
		if (engine_now() >= call->entry.deadline) {
			finish(call, WARREN_ERR_TIMEOUT, NULL, "no reply within %lld ms",
			       (long long)call->timeout_ms);
			return;
		}
		rc = pending_insert(&c->table, &call->entry);
		if (rc != 0) {
			finish(call, rc == -1 ? WARREN_ERR_FULL : WARREN_ERR_INVALID, NULL,
			       rc == -1 ? "too many calls in flight (client.max_in_flight)"
			                : "duplicate correlation id");
			return;
		}
		call->in_table = true;
	}
	if (!engine_connected(e)) {
		retry_or_finish(call, lost_err(c), "not connected to the broker");
		return;
	}
	if (engine_must_hold(e, call->out->len)) {
		hold(c, call);
		return;
	}
	if (batchable(c, call)) {
		queue_request(c, call); /* published from this turn's tick */
		return;
	}
	publish_one(c, e, call);
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
		finish(calls[i], WARREN_ERR_BROKER, NULL,
		       "the broker refuses publishes (%s): not confirmed within %lld ms "
		       "(client.blocked_timeout)",
		       reason, (long long)c->blocked_timeout_ms);
	}
	free(calls);
}

/* Held calls are published by the engine once the broker takes
 * publishes again (release_call); here they fail when they have waited
 * client.blocked_timeout. */
static void expire_held(warren_client *c, struct engine *e, int64_t now)
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

		finish(call, WARREN_ERR_BROKER, NULL,
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
static void republish_due(warren_client *c, struct engine *e, int64_t now)
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
		publish_task(e, &call->task);
	}
}

static warren_err fill_meta(warren_client *c, struct call *call, const char *method,
                            const warren_call_opts *o, char *errstr, size_t errlen)
{
	struct envelope_meta *m = &call->out->meta;
	size_t mlen = strlen(method);

	if (mlen == 0 || mlen >= sizeof(m->method) || strchr(method, '.') == NULL) {
		snprintf(errstr, errlen, "method \"%s\" must be SERVICE.NAME (at most 255 bytes)",
		         method);
		return WARREN_ERR_INVALID;
	}
	if (o->message_id != NULL && (o->message_id[0] == '\0' || strlen(o->message_id) > 64)) {
		snprintf(errstr, errlen, "message_id must be 1 to 64 bytes");
		return WARREN_ERR_INVALID;
	}
	memcpy(m->method, method, mlen + 1);
	new_correlation_id(c, m->correlation_id);
	snprintf(call->entry.id, sizeof(call->entry.id), "%s", m->correlation_id);
	call->entry.id_len = strlen(call->entry.id);
	if (o->message_id != NULL) {
		snprintf(m->message_id, sizeof(m->message_id), "%s", o->message_id);
	} else {
		random_hex(m->message_id, 16);
	}
	snprintf(m->app_id, sizeof(m->app_id), "%s", c->app_id);
	if (!call->one_way) {
		snprintf(m->reply_to, sizeof(m->reply_to), "%s",
		         c->reply_mode == REPLY_DIRECT ? ENVELOPE_DIRECT_REPLY_TO : c->reply_queue);
	}
	m->format = o->json ? ENVELOPE_FMT_JSON : ENVELOPE_FMT_MSGPACK;
	m->persistent = !o->transient && !patterns_match(c->transient, m->method, NULL, 0);
	call->fast = !m->persistent;
	m->attempt = 1;
	m->accept_batch = c->batch_replies ? BATCH_VERSION : 0;
	m->deadline_ms = warren_now_ms() + call->timeout_ms;
	trace_child(o->traceparent, m->traceparent);
	return WARREN_OK;
}

static warren_err encode_params(warren_client *c, struct call *call, const warren_value *params,
                                char *errstr, size_t errlen)
{
	warren_value *empty = NULL;
	warren_err err;

	if (params == NULL) {
		empty = warren_map();
		if (empty == NULL) {
			return WARREN_ERR_NOMEM;
		}
		params = empty;
	}
	err = envelope_encode_body(call->out->meta.format, params, &call->out->body,
	                           &call->out->len, errstr, errlen);
	warren_value_free(empty);
	if (err == WARREN_OK && call->out->len > c->max_size) {
		snprintf(errstr, errlen,
		         "request of %zu bytes is larger than message.max_size (%zu)",
		         call->out->len, c->max_size);
		err = WARREN_ERR_INVALID;
	}
	return err;
}

/* Seals the encoded request when security.encrypt names its method. */
static warren_err seal_request(warren_client *c, struct call *call, char *errstr, size_t errlen)
{
	struct outgoing *out = call->out;
	void *sealed = NULL;
	size_t len = 0;

	const char *to = "";

	if (security_request_key(c->sec, out->meta.method, &call->seal_key, &to) != 0) {
		snprintf(errstr, errlen,
		         "security.encrypt: the entry for %s names no key of the keyring",
		         out->meta.method);
		return WARREN_ERR_INVALID;
	}
	if (call->seal_key == NULL) {
		return WARREN_OK;
	}
	if (seal_body(call->seal_key, out->body, out->len, &sealed, &len) != 0) {
		snprintf(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	free(out->body);
	out->body = sealed;
	out->len = len;
	out->meta.sealed = true;
	snprintf(out->meta.sealed_to, sizeof(out->meta.sealed_to), "%s", to);
	return WARREN_OK;
}

static struct call *call_new(warren_client *c, const char *method, const warren_value *params,
                             const warren_call_opts *opts, bool one_way, char *errstr,
                             size_t errlen, warren_err *err)
{
	static const warren_call_opts defaults = {0};
	const warren_call_opts *o = opts != NULL ? opts : &defaults;
	struct call *call = calloc(1, sizeof(*call));

	*err = WARREN_ERR_NOMEM;
	if (call == NULL || (call->out = calloc(1, sizeof(*call->out))) == NULL) {
		snprintf(errstr, errlen, "out of memory");
		goto fail;
	}
	call->client = c;
	call->one_way = one_way;
	call->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : c->default_timeout_ms;
	call->tries = 1;
	call->task.run = publish_task;
	call->hold.release = release_call;
	*err = fill_meta(c, call, method, o, errstr, errlen);
	if (*err == WARREN_OK) {
		*err = encode_params(c, call, params, errstr, errlen);
	}
	if (*err == WARREN_OK && c->sec != NULL) {
		*err = seal_request(c, call, errstr, errlen);
	}
	if (*err == WARREN_OK && c->sec != NULL) {
		security_sign_request(c->sec, &call->out->meta, call->out->body, call->out->len,
		                      &call->out->sig);
	}
	if (*err == WARREN_OK) {
		return call;
	}
fail:
	if (call != NULL) {
		call_release(call);
	}
	return NULL;
}

static warren_err start_call(warren_client *c, const char *method, const warren_value *params,
                             const warren_call_opts *opts, bool one_way, warren_done_fn done,
                             void *arg, char *errstr, size_t errlen)
{
	warren_err err;
	struct call *call;

	if (c == NULL || method == NULL || done == NULL) {
		snprintf(errstr, errlen, "client, method and callback are required");
		return WARREN_ERR_INVALID;
	}
	call = call_new(c, method, params, opts, one_way, errstr, errlen, &err);
	if (call == NULL) {
		return err;
	}
	call->done = done;
	call->arg = arg;
	call->entry.deadline = engine_now() + call->timeout_ms;
	call->metrics = client_metrics_method(&c->metrics, method);
	clock_gettime(CLOCK_MONOTONIC, &call->started);
	pthread_mutex_lock(&c->stats_mu);
	c->stats.calls++;
	c->stats.in_flight++;
	pthread_mutex_unlock(&c->stats_mu);
	if (!engine_submit(c->engine, &call->task)) {
		pthread_mutex_lock(&c->stats_mu);
		c->stats.calls--;
		c->stats.in_flight--;
		pthread_mutex_unlock(&c->stats_mu);
		call_release(call);
		snprintf(errstr, errlen, "the client is shutting down");
		return WARREN_ERR_CLOSED;
	}
	return WARREN_OK;
}

warren_err warren_call_async(warren_client *c, const char *method, const warren_value *params,
                             const warren_call_opts *opts, warren_done_fn done, void *arg,
                             char *errstr, size_t errlen)
{
	return start_call(c, method, params, opts, false, done, arg, errstr, errlen);
}

/* ------------------------------------------------------------ blocking calls */

/* How long a blocking caller waits past its call's deadline for the I/O
 * thread to end the call, before it ends its wait itself. */
#define WAIT_GRACE_MS 25

/* A blocking caller's wait. On the heap, shared by the caller and the
 * call's completion (on the I/O thread), and freed by whichever lets go
 * last: a caller that gave up at its deadline returns at once, and the
 * completion that comes later finds the waiter abandoned. */
struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	int refs;            /* under mu: the caller, the completion */
	bool done;           /* the completion has run */
	bool abandoned;      /* the caller returned without the outcome */
	warren_err err;
	warren_reply *reply;
	char msg[512];
};

/* Drops one reference, with w->mu held (and releases it). */
static void waiter_release(struct waiter *w)
{
	bool last = --w->refs == 0;

	pthread_mutex_unlock(&w->mu);
	if (last) {
		pthread_mutex_destroy(&w->mu);
		pthread_cond_destroy(&w->cond);
		free(w);
	}
}

static struct waiter *waiter_new(void)
{
	struct waiter *w = calloc(1, sizeof(*w));
	pthread_condattr_t attr;

	if (w == NULL) {
		return NULL;
	}
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cond, &attr);
	pthread_condattr_destroy(&attr);
	w->refs = 2;
	return w;
}

static void wake_waiter(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct waiter *w = arg;

	pthread_mutex_lock(&w->mu);
	if (w->abandoned) {
		warren_reply_free(reply);
	} else {
		w->err = err;
		w->reply = reply;
		snprintf(w->msg, sizeof(w->msg), "%s", msg);
		w->done = true;
		pthread_cond_signal(&w->cond);
	}
	waiter_release(w);
}

/* Waits for w's outcome until timeout_ms + WAIT_GRACE_MS from now; true
 * when it came, false when the wait was given up (w is then abandoned).
 * With w->mu held. */
static bool waiter_wait(struct waiter *w, int64_t timeout_ms)
{
	struct timespec until;
	int64_t ms = timeout_ms + WAIT_GRACE_MS;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	while (!w->done) {
		if (pthread_cond_timedwait(&w->cond, &w->mu, &until) == ETIMEDOUT && !w->done) {
			w->abandoned = true;
			return false;
		}
	}
	return true;
}

/* The call's own deadline bounds the wait: when the I/O thread cannot end
 * the call (it is stuck in the library), the caller ends its wait itself
 * shortly after the deadline, and the call is released by the I/O thread
 * whenever it gets to it. */
static warren_err call_and_wait(warren_client *c, const char *method, const warren_value *params,
                                const warren_call_opts *opts, bool one_way, warren_reply **reply,
                                char *errstr, size_t errlen)
{
	struct waiter *w = waiter_new();
	int64_t timeout_ms;
	warren_err err;

	if (w == NULL) {
		snprintf(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	timeout_ms = opts != NULL && opts->timeout_ms > 0 ? opts->timeout_ms
	             : c != NULL                          ? c->default_timeout_ms
	                                                  : 0;
	err = start_call(c, method, params, opts, one_way, wake_waiter, w, errstr, errlen);
	pthread_mutex_lock(&w->mu);
	if (err != WARREN_OK) {
		w->refs--; /* done will not run */
	} else if (!waiter_wait(w, timeout_ms)) {
		err = WARREN_ERR_TIMEOUT;
		snprintf(errstr, errlen,
		         "no reply within %lld ms (the client's I/O thread did not "
		         "end the call in time)",
		         (long long)timeout_ms);
	} else {
		err = w->err;
		if (err != WARREN_OK && err != WARREN_ERR_REMOTE) {
			snprintf(errstr, errlen, "%s", w->msg);
		}
		if (reply != NULL) {
			*reply = w->reply;
		} else {
			warren_reply_free(w->reply);
		}
		w->reply = NULL;
	}
	waiter_release(w);
	return err;
}

warren_err warren_call(warren_client *c, const char *method, const warren_value *params,
                       const warren_call_opts *opts, warren_reply **reply, char *errstr,
                       size_t errlen)
{
	if (reply == NULL) {
		snprintf(errstr, errlen, "reply is required");
		return WARREN_ERR_INVALID;
	}
	*reply = NULL;
	return call_and_wait(c, method, params, opts, false, reply, errstr, errlen);
}

warren_err warren_send(warren_client *c, const char *method, const warren_value *params,
                       const warren_call_opts *opts, char *errstr, size_t errlen)
{
	return call_and_wait(c, method, params, opts, true, NULL, errstr, errlen);
}

/* ------------------------------------------------------------ batched requests */

/* Durable requests for the same service queued in one turn of the I/O
 * thread go as one batch (warren(7) BATCHES) on the lane of batches,
 * rpc.batch, which only workers that take batches consume: a worker that
 * does not take them never sees one. A batch that no queue takes (no
 * such worker ever declared the lane) comes back, and its requests go
 * alone at once; that service then gets singles for LANE_OFF_MS. */
struct req_batch {
	LIST_ENTRY(req_batch) link; /* in c->batches once published */
	bool listed;
	warren_client *c;
	char id[32]; /* its correlation_id: a basic.return names it */
	char service[65];
	bool fast; /* transient requests, to rpc.fast; else to rpc.batch */
	bool returned;
	size_t n;
	struct call *calls[];
};

static void service_of(const char *method, char *out, size_t cap)
{
	size_t n = strcspn(method, ".");

	snprintf(out, cap, "%.*s", (int)n, method);
}

static bool batchable(warren_client *c, const struct call *call)
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
		return lane_fast(c, call, engine_now());
	}
	service_of(call->out->meta.method, service, sizeof(service));
	return lanes_until(&c->lane_off, service, strlen(service)) <= engine_now();
}

static void queue_request(warren_client *c, struct call *call)
{
	call->queued = true;
	call->awaiting_confirm = true; /* so that finish leaves it to the flush */
	TAILQ_INSERT_TAIL(&c->outq, call, out_link);
}

/* Takes call out of the batching: false when it has ended meanwhile (it
 * is then released). */
static bool unqueue(struct call *call)
{
	call->queued = false;
	call->awaiting_confirm = false;
	if (call->finished) {
		call_release(call);
		return false;
	}
	return true;
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
		 * durable lane for LANE_DOWN_MS, these at once (as fall_back). */
		lanes_note(&c->down, b->service, strlen(b->service), engine_now() + LANE_DOWN_MS);
		STAT_ADD(c, fast_fallbacks, b->n);
		log_info("no fast-lane queue for %s: %zu requests sent on the durable lane; that "
		         "service's transient calls take it for %d s",
		         b->service, b->n, LANE_DOWN_MS / 1000);
		for (size_t i = 0; i < b->n; i++) {
			if (unqueue(b->calls[i])) {
				publish_one(c, e, b->calls[i]);
			}
		}
	} else if (outcome == ENGINE_ACK && b->returned) {
		/* No batch lane for this service: its workers do not take batches. */
		lanes_note(&c->lane_off, b->service, strlen(b->service),
		           engine_now() + LANE_OFF_MS);
		STAT_ADD(c, batch_fallbacks, 1);
		log_info("service %s takes no batches (no queue on %s): single requests for %d s",
		         b->service, BATCH_EXCHANGE, LANE_OFF_MS / 1000);
		for (size_t i = 0; i < b->n; i++) {
			if (unqueue(b->calls[i])) {
				publish_one(c, e, b->calls[i]);
			}
		}
	} else {
		for (size_t i = 0; i < b->n; i++) {
			b->calls[i]->queued = false;
			on_confirm(e, b->calls[i], outcome);
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

/* The I/O thread never writes what the socket cannot take (publish_task,
 * engine_writable): a batch, like a single request, that does not fit now
 * is held, each of its calls, and sent again from a later tick. */
static bool hold_unwritable(warren_client *c, struct engine *e, struct call *call, size_t len)
{
	if (!engine_must_hold(e, len)) {
		return false;
	}
	if (unqueue(call)) {
		hold(c, call);
	}
	return true;
}

static void publish_batch(warren_client *c, struct engine *e, struct req_batch *b)
{
	amqp_basic_properties_t props;
	amqp_table_entry_t headers[1];
	void *body = NULL;
	size_t len = 0;
	warren_err err;

	if (b->fast && !lane_fast(c, b->calls[0], engine_now())) {
		/* Its service's fast lane was found missing since they were
		 * queued: each goes alone on the durable lane. */
		for (size_t i = 0; i < b->n; i++) {
			if (unqueue(b->calls[i])) {
				publish_one(c, e, b->calls[i]);
			}
		}
		free(b);
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
		batch_props(&props, headers, !b->fast);
		snprintf(b->id, sizeof(b->id), "batch-%s-%llu", c->prefix,
		         (unsigned long long)++c->batch_seq);
		props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
		props.correlation_id = amqp_cstring_bytes(b->id);
		/* The broker gives a direct reply-to name its channel's suffix
		 * only in the properties of the message itself: the batch says
		 * it for its entries (warren(7) BATCHES). */
		if (c->reply_mode == REPLY_DIRECT) {
			props._flags |= AMQP_BASIC_REPLY_TO_FLAG;
			props.reply_to = amqp_cstring_bytes(ENVELOPE_DIRECT_REPLY_TO);
		}
		err = engine_publish(e, b->fast ? ENVELOPE_FAST_EXCHANGE : BATCH_EXCHANGE,
		                     b->service, true, &props, body, len, on_batch_confirm, b);
	}
	free(body);
	if (err != WARREN_OK) {
		for (size_t i = 0; i < b->n; i++) {
			if (unqueue(b->calls[i])) {
				retry_or_finish(b->calls[i], lost_err(c),
				                "publish failed: connection lost");
			}
		}
		free(b);
		return;
	}
	for (size_t i = 0; i < b->n; i++) {
		b->calls[i]->returned = false;
		b->calls[i]->on_fast = b->fast;
	}
	if (b->fast) {
		STAT_ADD(c, fast_sent, b->n);
	}
	LIST_INSERT_HEAD(&c->batches, b, link);
	b->listed = true;
	STAT_ADD(c, request_batches, 1);
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
static void flush_requests(warren_client *c, struct engine *e)
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
				publish_one(c, e, call);
			}
			continue;
		}
		publish_batch(c, e, b);
	}
}

/* At shutdown, with the I/O thread gone: calls still queued end here. */
static void drop_queued(warren_client *c)
{
	struct call *call;

	while ((call = TAILQ_FIRST(&c->outq)) != NULL) {
		TAILQ_REMOVE(&c->outq, call, out_link);
		finish(call, WARREN_ERR_TRANSPORT, NULL, "the client is shutting down");
		unqueue(call);
	}
}

/* ------------------------------------------------------------ engine hooks */

/* Whether rpc.fast exists, asked on a channel of its own: a passive
 * declare of a missing exchange closes its channel, and a publish to one
 * would close channel 1 with every call on it. Missing (the broker has
 * neither this version's definitions nor a worker of it), transient calls
 * take the durable lane until the next connection. -1: the connection
 * failed. */
#define CLIENT_PROBE_CHANNEL 2

static int fast_exchange_exists(amqp_connection_state_t conn, bool *exists)
{
	amqp_channel_close_ok_t ok = {0};
	amqp_rpc_reply_t r;

	*exists = false;
	if (amqp_channel_open(conn, CLIENT_PROBE_CHANNEL) == NULL) {
		return -1;
	}
	if (amqp_exchange_declare(
	        conn, CLIENT_PROBE_CHANNEL, amqp_cstring_bytes(ENVELOPE_FAST_EXCHANGE),
	        amqp_cstring_bytes("topic"), 1, 1, 0, 0, amqp_empty_table) != NULL) {
		*exists = true;
		return amqp_channel_close(conn, CLIENT_PROBE_CHANNEL, AMQP_REPLY_SUCCESS)
		                   .reply_type == AMQP_RESPONSE_NORMAL
		           ? 0
		           : -1;
	}
	r = amqp_get_rpc_reply(conn);
	if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
	    r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
		return amqp_send_method(conn, CLIENT_PROBE_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD,
		                        &ok) == AMQP_STATUS_OK
		           ? 0
		           : -1;
	}
	return -1;
}

static int client_setup(struct engine *e, void *arg, char *errstr, size_t errlen)
{
	warren_client *c = arg;
	amqp_connection_state_t conn = engine_conn(e);
	amqp_bytes_t queue = amqp_cstring_bytes(ENVELOPE_DIRECT_REPLY_TO);

	/* Only checked (a passive declare): a caller needs no right to create
	 * it (rabbitmq/definitions.json, or any worker, does). */
	if (amqp_exchange_declare(conn, 1, amqp_cstring_bytes(ENVELOPE_EXCHANGE),
	                          amqp_cstring_bytes("topic"), 1, 1, 0, 0,
	                          amqp_empty_table) == NULL) {
		engine_describe_reply(amqp_get_rpc_reply(conn),
		                      "exchange rpc (import rabbitmq/definitions.json)", errstr,
		                      errlen);
		return -1;
	}
	if (fast_exchange_exists(conn, &c->fast_exchange) != 0) {
		engine_describe_reply(amqp_get_rpc_reply(conn), "exchange rpc.fast", errstr,
		                      errlen);
		return -1;
	}
	if (!c->fast_exchange) {
		log_info("exchange %s is missing: transient calls take the durable lane until the "
		         "next connection",
		         ENVELOPE_FAST_EXCHANGE);
	}
	if (c->reply_mode == REPLY_QUEUE) {
		amqp_table_entry_t exp = {
		    .key = amqp_cstring_bytes("x-expires"),
		    .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 300000}};
		amqp_table_t args = {1, &exp};

		queue = amqp_cstring_bytes(c->reply_queue);
		if (amqp_queue_declare(conn, 1, queue, 0, 0, 0, 0, args) == NULL) {
			engine_describe_reply(amqp_get_rpc_reply(conn), "declaring the reply queue",
			                      errstr, errlen);
			return -1;
		}
	}
	/* A reply queue of our own is consumed with acks: a reply the broker
	 * sent just before the connection was lost, unread, is delivered again
	 * on the next one instead of being lost with it (its call would wait to
	 * its deadline). Direct reply-to can only be consumed without. */
	if (amqp_basic_consume(conn, 1, queue, amqp_empty_bytes, 0, c->reply_mode == REPLY_DIRECT,
	                       0, amqp_empty_table) == NULL) {
		engine_describe_reply(amqp_get_rpc_reply(conn), "consuming replies", errstr,
		                      errlen);
		return -1;
	}
	pthread_mutex_lock(&c->stats_mu);
	c->stats.reconnects += c->first_connect_done;
	c->stats.connected = true;
	pthread_mutex_unlock(&c->stats_mu);
	c->first_connect_done = true;
	return 0;
}

static void count_stray(warren_client *c, const char *id)
{
	bool ours = strlen(id) == 32 && memcmp(id, c->prefix, 16) == 0;

	if (ours) {
		STAT_ADD(c, late_replies, 1);
		log_debug("late reply dropped: correlation_id=%s", id);
	} else {
		STAT_ADD(c, unknown_replies, 1);
		log_debug("unknown reply dropped: correlation_id=%s", id);
	}
}

/* A reply that fails authentication (a signature that does not verify, a
 * sealed body that does not open): not from our service, so it does not
 * end the call, which keeps waiting for the real reply or its deadline. */
static void drop_untrusted(warren_client *c, const char *id, const char *why)
{
	STAT_ADD(c, untrusted_replies, 1);
	log_warn("untrusted reply ignored: correlation_id=%s: %s", id, why);
}

/* The reply of a sealed call, opened into *opened (malloc'd; NULL bytes
 * when the reply came in the clear). A call sent in the clear takes only
 * clear replies; a sealed one takes sealed ones, and error replies in the
 * clear (a worker that could not open the request answers so). 0; -1 with
 * why for a mismatch of modes (the call ends: the sender is the service,
 * its signature verified, but it does not follow security.encrypt); -2
 * with why when the sealed body does not open (the box's authentication
 * fails: not from our service). */
static int open_reply(const struct call *call, const struct envelope_meta *m,
                      const amqp_bytes_t *body, amqp_bytes_t *opened, char *why, size_t whylen)
{
	if (!m->sealed && (call->seal_key == NULL || m->status != WARREN_STATUS_OK)) {
		return 0;
	}
	if (call->seal_key == NULL) {
		snprintf(why, whylen, "the reply is encrypted but its request was not");
		return -1;
	}
	if (!m->sealed) {
		snprintf(why, whylen,
		         "the reply is in the clear but its request was encrypted "
		         "(security.encrypt)");
		return -1;
	}
	if (seal_open(call->seal_key, body->bytes, body->len, &opened->bytes, &opened->len) != 0) {
		snprintf(why, whylen, "the reply cannot be decrypted with the service's key");
		return -2;
	}
	return 0;
}

/* One reply, alone or an entry of a batch: whatever came in a batch is
 * checked and handled exactly as if it had come alone. */
static void handle_reply(warren_client *c, const amqp_basic_properties_t *props,
                         const amqp_bytes_t *body)
{
	struct envelope_meta m;
	struct pending_entry *entry;
	char why[300];
	warren_reply *reply;
	amqp_bytes_t opened = {0};

	if (envelope_read(props, &m, why, sizeof(why)) != WARREN_OK) {
		log_warn("malformed reply dropped: %s", why);
		STAT_ADD(c, unknown_replies, 1);
		return;
	}
	entry = pending_find(&c->table, m.correlation_id, strlen(m.correlation_id));
	if (entry == NULL) {
		count_stray(c, m.correlation_id);
		return;
	}
	struct call *call = (struct call *)((char *)entry - offsetof(struct call, entry));
	if (c->sec != NULL && security_check_reply(c->sec, props, &m, body->bytes, body->len, why,
	                                           sizeof(why)) != WARREN_STATUS_OK) {
		drop_untrusted(c, m.correlation_id, why);
		return;
	}
	int rc = open_reply(call, &m, body, &opened, why, sizeof(why));
	if (rc == -2) {
		drop_untrusted(c, m.correlation_id, why);
		return;
	}
	if (rc != 0) {
		finish(call, WARREN_ERR_DECODE, NULL, "%s", why);
		return;
	}
	reply =
	    opened.bytes != NULL
	        ? reply_from_message(&m, opened.bytes, opened.len, c->max_size, why, sizeof(why))
	        : reply_from_message(&m, body->bytes, body->len, c->max_size, why, sizeof(why));
	free(opened.bytes);
	if (reply == NULL) {
		finish(call, WARREN_ERR_DECODE, NULL, "%s", why);
	} else {
		finish(call, reply->status == WARREN_STATUS_OK ? WARREN_OK : WARREN_ERR_REMOTE,
		       reply, NULL);
	}
}

/* A batch of replies (warren(7) BATCHES): split, each entry a reply. One
 * that does not decode is dropped whole and counted: its calls keep
 * waiting, to their deadlines or a retry's reply. */
static void handle_batch(warren_client *c, const struct engine_delivery *d)
{
	struct batch *b = NULL;
	char why[300];

	if (batch_decode(&d->message.properties, d->message.body.bytes, d->message.body.len,
	                 c->max_size, &b, why, sizeof(why)) != WARREN_OK) {
		STAT_ADD(c, bad_batches, 1);
		log_warn("malformed batch of replies dropped: %s", why);
		return;
	}
	STAT_ADD(c, reply_batches, 1);
	for (size_t i = 0; i < b->n; i++) {
		handle_reply(c, &b->entries[i].props, &b->entries[i].body);
	}
	batch_free(b);
}

static void client_deliver(struct engine *e, void *arg, struct engine_delivery *d)
{
	warren_client *c = arg;

	if (batch_is(&d->message.properties)) {
		handle_batch(c, d);
	} else {
		handle_reply(c, &d->message.properties, &d->message.body);
	}
	if (c->reply_mode == REPLY_QUEUE) {
		engine_ack(e, d->generation, d->delivery_tag); /* handled, whatever it was */
	}
	engine_delivery_free(d);
}

static void client_returned(struct engine *e, void *arg, const amqp_basic_properties_t *props,
                            int code, const char *text)
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
		if (call->on_fast && fall_back(c, call)) {
			return;
		}
		retry_or_finish(call, WARREN_ERR_UNROUTABLE, what);
	}
}

/* The calls a lost connection ends: those whose request the broker had
 * confirmed (their reply path is gone); the others are not the broker's
 * yet, and their confirm (LOST), their retry or their hold decides. At
 * shutdown, all. */
static void collect_failing(struct pending_entry *entry, void *arg)
{
	struct collect *col = arg;
	struct call *call = (struct call *)((char *)entry - offsetof(struct call, entry));

	if (col->all || (!call->awaiting_confirm && !call->waiting_retry && !call->hold.on)) {
		col->calls[(*col->n)++] = call;
	}
}

/* Ends every call still in the table with the connection's loss. */
static void fail_all(warren_client *c, const char *why)
{
	size_t k = 0, n = pending_count(&c->table);
	struct call **calls = malloc(sizeof(*calls) * (n > 0 ? n : 1));
	struct collect col = {calls, &k, atomic_load(&c->closing)};

	if (calls == NULL) {
		return;
	}
	/* Collected first, as finishing reshapes the table. */
	pending_each(&c->table, collect_failing, &col);
	for (size_t i = 0; i < k; i++) {
		finish(calls[i], lost_err(c), NULL, "reply path lost: %s", why);
	}
	free(calls);
}

static void client_lost(struct engine *e, void *arg, const char *why)
{
	warren_client *c = arg;

	pthread_mutex_lock(&c->stats_mu);
	c->stats.connected = false;
	pthread_mutex_unlock(&c->stats_mu);
	/* A named reply queue outlives the connection: its calls keep waiting
	 * (to their deadlines) unless we are shutting down. */
	if (c->reply_mode == REPLY_QUEUE && !atomic_load(&c->closing)) {
		return;
	}
	fail_all(c, why);
}

static int64_t client_tick(struct engine *e, void *arg, int64_t now)
{
	warren_client *c = arg;
	struct pending_entry *entry;
	struct engine_held *held;

	flush_requests(c, e); /* this turn's: before any of them can expire */
	while ((entry = pending_pop_expired(&c->table, now)) != NULL) {
		struct call *call = (struct call *)((char *)entry - offsetof(struct call, entry));

		call->in_table = false;
		finish(call, WARREN_ERR_TIMEOUT, NULL, "no reply within %lld ms",
		       (long long)call->timeout_ms);
	}
	republish_due(c, e, now);
	expire_held(c, e, now);
	flush_requests(c, e);
	entry = pending_first(&c->table);
	int64_t next = entry != NULL ? entry->deadline : INT64_MAX;
	held = engine_held_first(e);
	if (held != NULL && held->since + c->blocked_timeout_ms < next) {
		next = held->since + c->blocked_timeout_ms;
	}
	if (c->blocked_since != 0 && c->blocked_since + c->blocked_timeout_ms < next) {
		next = c->blocked_since + c->blocked_timeout_ms;
	}
	entry = pending_first(&c->retries);
	if (entry != NULL && entry->deadline < next) {
		next = entry->deadline;
	}
	return next;
}

/* ------------------------------------------------------------ lifecycle */

static warren_err client_init(warren_client *c, const warren_config *cfg, const char *app_id,
                              char *errstr, size_t errlen)
{
	struct engine_config ec = engine_config_of(cfg, app_id);
	struct engine_hooks hooks = {.arg = c,
	                             .setup = client_setup,
	                             .deliver = client_deliver,
	                             .returned = client_returned,
	                             .lost = client_lost,
	                             .tick = client_tick};

	c->down = (struct lanes){c->down_slot, LANE_DOWN_SLOTS};
	c->lane_off = (struct lanes){c->lane_off_slot, LANE_OFF_SLOTS};
	/* Queue mode acks every reply in the turn that handled it: merged. */
	ec.batch_acks = config_int(cfg, CFG_CLIENT_REPLY_MODE) == 1;
	snprintf(c->app_id, sizeof(c->app_id), "%s", app_id);
	random_hex(c->prefix, 8);
	snprintf(c->reply_queue, sizeof(c->reply_queue), "rpc.reply.%.64s.%s", c->app_id,
	         c->prefix);
	c->reply_mode = config_int(cfg, CFG_CLIENT_REPLY_MODE) == 1 ? REPLY_QUEUE : REPLY_DIRECT;
	c->default_timeout_ms = config_int(cfg, CFG_CLIENT_TIMEOUT);
	c->max_size = (size_t)config_int(cfg, CFG_MESSAGE_MAX_SIZE);
	pthread_mutex_init(&c->stats_mu, NULL);
	TAILQ_INIT(&c->outq);
	client_metrics_init(&c->metrics);
	c->retry_attempts = (int)config_int(cfg, CFG_CLIENT_RETRY_ATTEMPTS);
	c->retry_delay_ms = config_int(cfg, CFG_CLIENT_RETRY_DELAY);
	c->blocked_timeout_ms = config_int(cfg, CFG_CLIENT_BLOCKED_TIMEOUT);
	c->transient = strdup(config_str(cfg, CFG_CLIENT_TRANSIENT));
	c->batch_replies = config_int(cfg, CFG_CLIENT_BATCH_REPLIES) != 0;
	c->batch = strdup(config_str(cfg, CFG_CLIENT_BATCH));
	if (c->transient == NULL || c->batch == NULL ||
	    pending_init(&c->table, (size_t)config_int(cfg, CFG_CLIENT_MAX_IN_FLIGHT)) != 0 ||
	    pending_init(&c->retries, (size_t)config_int(cfg, CFG_CLIENT_MAX_IN_FLIGHT)) != 0) {
		snprintf(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	if (security_load(cfg, &c->sec, errstr, errlen) != 0 ||
	    security_check_encrypt(c->sec, config_str(cfg, CFG_SECURITY_KEYRING), errstr, errlen) !=
	        0) {
		return WARREN_ERR_CONFIG;
	}
	c->engine = engine_new(&ec, &hooks, errstr, errlen);
	return c->engine != NULL ? WARREN_OK : WARREN_ERR_CONFIG;
}

warren_err warren_client_new(const warren_config *cfg, const char *app_id, warren_client **out,
                             char *errstr, size_t errlen)
{
	warren_client *c;
	warren_err err;

	err = engine_global_init(cfg != NULL && out != NULL, errstr, errlen);
	if (err != WARREN_OK) {
		return err;
	}
	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		snprintf(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	err = client_init(c, cfg, app_id != NULL ? app_id : "warren", errstr, errlen);
	/* Before connecting: an address that cannot be bound costs no connection. */
	if (err == WARREN_OK) {
		err = client_metrics_start(&c->metrics, config_str(cfg, CFG_CLIENT_METRICS_LISTEN),
		                           render_metrics, c, errstr, errlen);
	}
	if (err == WARREN_OK) {
		err = engine_start(c->engine, errstr, errlen);
	}
	if (err != WARREN_OK) {
		warren_client_free(c);
		return err;
	}
	*out = c;
	return WARREN_OK;
}

void warren_client_free(warren_client *c)
{
	if (c == NULL) {
		return;
	}
	atomic_store(&c->closing, true);
	client_metrics_stop(&c->metrics); /* its server reads the client: first */
	if (c->engine != NULL) {
		engine_free(c->engine);
	}
	/* The I/O thread is gone, so this thread owns the table now. Calls still
	 * in it (their connection was already down at shutdown) end here. */
	fail_all(c, "the client is shutting down");
	drop_queued(c);
	pending_destroy(&c->table);
	pending_destroy(&c->retries);
	security_free(c->sec);
	client_metrics_free(&c->metrics); /* after fail_all: calls point into it */
	pthread_mutex_destroy(&c->stats_mu);
	free(c->transient);
	free(c->batch);
	free(c);
}
