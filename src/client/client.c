/* client.c: the caller side's lifecycle: a client's engine and its hooks
 * (setup, lost connection, the tick), its stats, and the one terminal path
 * of a call (client_finish). Calls are registered in the correlation table
 * before their request is published, and leave it on every terminal path:
 * reply, basic.return, nack, deadline, connection loss, shutdown. The rest
 * of the client is in client_request.c (building and sealing requests),
 * client_publish.c (publishing, holding, returns, republishing),
 * client_batch.c (batches of requests) and client_reply.c (the reply path).
 * Everything below the public functions runs on the engine's I/O thread. */
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

/* ------------------------------------------------------------ stats */

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

void client_call_release(struct call *call)
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

void client_finish(struct call *call, warren_err err, warren_reply *reply, const char *fmt, ...)
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
		client_call_release(call);
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
	if (wire_check_exchange(conn, CLIENT_PROBE_CHANNEL, WIRE_FAST_EXCHANGE)) {
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
	amqp_bytes_t queue = amqp_cstring_bytes(WIRE_DIRECT_REPLY_TO);

	/* Only checked (a passive declare): a caller needs no right to create
	 * it (rabbitmq/definitions.json, or any worker, does). */
	if (!wire_check_exchange(conn, 1, WIRE_EXCHANGE)) {
		connect_describe_reply(amqp_get_rpc_reply(conn),
		                       "exchange " WIRE_EXCHANGE
		                       " (import rabbitmq/definitions.json)",
		                       errstr, errlen);
		return -1;
	}
	if (fast_exchange_exists(conn, &c->fast_exchange) != 0) {
		connect_describe_reply(amqp_get_rpc_reply(conn), "exchange " WIRE_FAST_EXCHANGE,
		                       errstr, errlen);
		return -1;
	}
	if (!c->fast_exchange) {
		log_info("exchange %s is missing: transient calls take the durable lane until the "
		         "next connection",
		         WIRE_FAST_EXCHANGE);
	}
	if (c->reply_mode == REPLY_QUEUE) {
		queue = amqp_cstring_bytes(c->reply_queue);
		if (!wire_declare_reply_queue(conn, 1, c->reply_queue)) {
			connect_describe_reply(amqp_get_rpc_reply(conn),
			                       "declaring the reply queue", errstr, errlen);
			return -1;
		}
	}
	/* A reply queue of our own is consumed with acks: a reply the broker
	 * sent just before the connection was lost, unread, is delivered again
	 * on the next one instead of being lost with it (its call would wait to
	 * its deadline). Direct reply-to can only be consumed without. */
	if (amqp_basic_consume(conn, 1, queue, amqp_empty_bytes, 0, c->reply_mode == REPLY_DIRECT,
	                       0, amqp_empty_table) == NULL) {
		connect_describe_reply(amqp_get_rpc_reply(conn), "consuming replies", errstr,
		                       errlen);
		return -1;
	}
	pthread_mutex_lock(&c->stats_mu);
	c->stats.reconnects += c->first_connect_done;
	c->stats.connected = true;
	pthread_mutex_unlock(&c->stats_mu);
	c->first_connect_done = true;
	/* The calls held meanwhile are released after this, by the engine:
	 * the reply queue exists again before anything is sent. */
	c->lost_since = 0;
	c->up_since = engine_now();
	return 0;
}

/* The calls whose request the broker had confirmed when the connection
 * was lost: their reply path is gone (direct reply-to), or may be (a named
 * queue a restarted broker lost). The others are not the broker's yet:
 * their confirm (LOST), their retry or their hold decides. At shutdown,
 * all. */
static void collect_confirmed(struct pending_entry *entry, void *arg)
{
	struct collect *col = arg;
	struct call *call = (struct call *)((char *)entry - offsetof(struct call, entry));

	if (col->all || (!call->awaiting_confirm && !call->waiting_retry && !call->hold.on)) {
		col->calls[(*col->n)++] = call;
	}
}

/* The calls of the table, collected (all, or those confirmed), as ending
 * or holding one reshapes the table; NULL when none or out of memory. */
static struct call **collect(warren_client *c, bool all, size_t *k)
{
	size_t n = pending_count(&c->table);
	struct call **calls = malloc(sizeof(*calls) * (n > 0 ? n : 1));
	struct collect col = {calls, k, all};

	*k = 0;
	if (calls != NULL) {
		pending_each(&c->table, collect_confirmed, &col);
	}
	return calls;
}

/* At shutdown: every call still in the table ends, at once. */
static void fail_all(warren_client *c)
{
	size_t k;
	struct call **calls = collect(c, true, &k);

	for (size_t i = 0; calls != NULL && i < k; i++) {
		client_finish(calls[i], WARREN_ERR_CLOSED, NULL, "the client is shutting down");
	}
	free(calls);
}

/* The connection is lost: a confirmed call that client.resend names is
 * held to be sent again once it is back (same message_id, same attempt,
 * to the new reply path). Another fails now in direct reply-to mode, its
 * reply path gone; with a queue of its own it keeps waiting, for the
 * queue may have outlived the connection. */
static void resend_or_fail(warren_client *c, const char *why)
{
	size_t k;
	struct call **calls = collect(c, false, &k);

	for (size_t i = 0; calls != NULL && i < k; i++) {
		struct call *call = calls[i];

		if (call->resend) {
			call->resending = true;
			client_hold(c, call);
		} else if (c->reply_mode == REPLY_DIRECT) {
			client_finish(call, WARREN_ERR_TRANSPORT, NULL,
			              "reply path lost: %s; not sent again: client.resend does not "
			              "match %s",
			              why, call->out->meta.method);
		}
	}
	free(calls);
}

static void client_lost(struct engine *e, void *arg, const char *why)
{
	warren_client *c = arg;

	pthread_mutex_lock(&c->stats_mu);
	c->stats.connected = false;
	pthread_mutex_unlock(&c->stats_mu);
	if (atomic_load(&c->closing)) {
		fail_all(c);
		return;
	}
	c->lost_since = engine_now();
	resend_or_fail(c, why);
}

static int64_t client_tick(struct engine *e, void *arg, int64_t now)
{
	warren_client *c = arg;
	struct pending_entry *entry;
	struct engine_held *held;
	int64_t next, due;

	client_note_blocked(c, e, now);
	client_flush_requests(c, e); /* this turn's: before any of them can expire */
	while ((entry = pending_pop_expired(&c->table, now)) != NULL) {
		struct call *call = (struct call *)((char *)entry - offsetof(struct call, entry));

		call->in_table = false;
		client_timeout(c, e, call);
	}
	client_republish_due(c, e, now);
	client_expire_held(c, e, now);
	client_flush_requests(c, e);
	entry = pending_first(&c->table);
	next = entry != NULL ? entry->deadline : INT64_MAX;
	held = engine_held_first(e);
	due = held != NULL ? client_blocked_due(c, e, held->since) : INT64_MAX;
	if (due < next) {
		next = due;
	}
	/* The block's own due time, once past, has ended the unconfirmed
	 * publishes it ends (client_expire_held), and none is written while it
	 * lasts: it asks for no further turn (one in the past would spin the
	 * I/O thread for as long as the block lasts). */
	due = c->blocked_since != 0 ? client_blocked_due(c, e, 0) : INT64_MAX;
	if (due > now && due < next) {
		next = due;
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
	client_random_hex(c->prefix, 8);
	wire_reply_queue(c->reply_queue, sizeof(c->reply_queue), c->app_id, c->prefix);
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
	c->resend = strdup(config_str(cfg, CFG_CLIENT_RESEND));
	if (c->transient == NULL || c->batch == NULL || c->resend == NULL ||
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
	engine_stop(c->engine);
	/* The I/O thread is gone, so this thread owns the table now. Calls still
	 * in it (their connection was already down at shutdown) end here, and
	 * a held one leaves the engine's hold queue: before the engine is
	 * freed. */
	fail_all(c);
	client_drop_queued(c);
	engine_free(c->engine);
	pending_destroy(&c->table);
	pending_destroy(&c->retries);
	security_free(c->sec);
	client_metrics_free(&c->metrics); /* after fail_all: calls point into it */
	pthread_mutex_destroy(&c->stats_mu);
	free(c->transient);
	free(c->batch);
	free(c->resend);
	free(c);
}
