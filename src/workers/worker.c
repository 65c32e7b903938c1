/* worker.c: the worker pool. The engine's I/O thread consumes the service
 * queue (prefetch sized to the pool) and feeds a fixed pool of handler
 * threads; handlers never touch AMQP. A reply is published, confirmed by the
 * broker, and only then is its request acked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "config.h"
#include "deadletter.h"
#include "forward.h"
#include "log.h"
#include "retry.h"
#include "worker_int.h"

void worker_count(struct warren_worker *w, uint64_t *field, uint64_t n)
{
	pthread_mutex_lock(&w->mu);
	*field += n;
	pthread_mutex_unlock(&w->mu);
}

void warren_worker_get_stats(warren_worker *w, warren_worker_stats *out)
{
	pthread_mutex_lock(&w->mu);
	*out = w->stats;
	pthread_mutex_unlock(&w->mu);
	out->io_loops = engine_turns(w->engine);
	out->blocked_ms = (uint64_t)engine_blocked_ms(w->engine);
	out->threads = w->threads;
	/* Nudge the I/O thread: if it is alive, io_loops will have grown by
	 * the next reading however idle the connection is. */
	if (w->engine != NULL) {
		engine_wake(w->engine);
	}
}

const struct method *worker_find_method(const struct warren_worker *w, const char *name)
{
	for (size_t i = 0; i < w->nmethods; i++) {
		if (strcmp(w->methods[i].name, name) == 0) {
			return &w->methods[i];
		}
	}
	return NULL;
}

/* ------------------------------------------------------------ job ends */

void job_free(struct job *j)
{
	struct warren_worker *w = j->worker;

	if (atomic_fetch_sub(&j->refs, 1) > 1) {
		return; /* its other owner frees it */
	}
	engine_delivery_free(j->delivery);
	free(j->reply_body);
	free(j);
	pthread_mutex_lock(&w->mu);
	w->stats.in_progress--;
	pthread_cond_broadcast(&w->idle_cond);
	pthread_mutex_unlock(&w->mu);
}

static void on_reply_confirm(struct engine *e, void *ctx, enum engine_confirm outcome)
{
	struct job *j = ctx;
	struct warren_worker *w = j->worker;

	if (outcome == ENGINE_ACK) {
		worker_count(w, &w->stats.replied, 1);
		engine_ack(e, j->delivery->generation, j->delivery->delivery_tag);
		worker_count(w, &w->stats.acked, 1);
	} else if (outcome == ENGINE_NACK) {
		/* The broker could not take the reply: run the request again. */
		engine_reject(e, j->delivery->generation, j->delivery->delivery_tag, true);
	}
	/* ENGINE_LOST: the broker requeues the unacked request by itself. */
	job_free(j);
}

static warren_err publish_reply(struct engine *e, struct job *j, engine_confirm_fn fn)
{
	struct envelope_props props;
	struct envelope_meta rm = {
	    .status = j->status, .format = j->meta.format, .sealed = j->reply_sealed};

	memcpy(rm.correlation_id, j->meta.correlation_id, sizeof(rm.correlation_id));
	envelope_reply_props(&rm, &props);
	if (j->worker->sec != NULL && j->sig.len > 0) {
		envelope_add_signature(&props, j->sig.key_id, j->sig.signed_at_ms, j->sig.sig,
		                       j->sig.len);
	}
	/* Not mandatory: a direct reply-to publish is always "returned" (DESIGN.md 2). */
	return engine_publish(e, "", j->meta.reply_to, false, &props.props, j->reply_body,
	                      j->reply_len, fn, j);
}

/* The dead letter is safe: now tell the caller, if one waits, then ack. */
static void on_dead_letter_confirm(struct engine *e, void *ctx, enum engine_confirm outcome)
{
	struct job *j = ctx;
	struct warren_worker *w = j->worker;

	if (outcome == ENGINE_ACK) {
		worker_count(w, &w->stats.dead_lettered, 1);
		metrics_record_dead_letter(w, j->dead_reason);
		if (j->meta.reply_to[0] != '\0' && j->reply_body != NULL &&
		    publish_reply(e, j, on_reply_confirm) == WARREN_OK) {
			return; /* on_reply_confirm acks and frees */
		}
		engine_ack(e, j->delivery->generation, j->delivery->delivery_tag);
		worker_count(w, &w->stats.acked, 1);
	} else if (outcome == ENGINE_NACK) {
		engine_reject(e, j->delivery->generation, j->delivery->delivery_tag, true);
	}
	job_free(j);
}

static void on_retry_confirm(struct engine *e, void *ctx, enum engine_confirm outcome)
{
	struct job *j = ctx;
	struct warren_worker *w = j->worker;

	if (outcome == ENGINE_ACK) {
		worker_count(w, &w->stats.retried, 1);
		engine_ack(e, j->delivery->generation, j->delivery->delivery_tag);
		worker_count(w, &w->stats.acked, 1);
	} else if (outcome == ENGINE_NACK) {
		engine_reject(e, j->delivery->generation, j->delivery->delivery_tag, true);
	}
	job_free(j);
}

/* The request as it came, to rpc.dlx under its routing key, with why. */
static warren_err publish_dead_letter(struct engine *e, struct job *j)
{
	const struct engine_delivery *d = j->delivery;
	struct warren_worker *w = j->worker;
	amqp_table_entry_t add[] = {
	    forward_str(DL_H_REASON, j->dead_reason),
	    forward_str(DL_H_ERROR, j->dead_error),
	    forward_str(DL_H_WORKER, w->identity),
	    forward_int(DL_H_TIME, warren_now_ms()),
	    forward_str(DL_H_QUEUE, w->queue),
	    forward_int("rpc-attempt", j->meta.attempt),
	};
	struct forward f;
	warren_err err;

	if (!forward_props(&f, &d->message.properties, add, (int)(sizeof(add) / sizeof(add[0])))) {
		return WARREN_ERR_NOMEM;
	}
	log_warn("dead-lettering %s correlation_id=%s reason=%s: %s", d->routing_key,
	         j->meta.correlation_id, j->dead_reason, j->dead_error);
	err = engine_publish(e, DEADLETTER_EXCHANGE, d->routing_key, false, &f.props,
	                     d->message.body.bytes, d->message.body.len, on_dead_letter_confirm, j);
	forward_free(&f);
	return err;
}

/* The request as it came, to the delay tier for its wait, one attempt on. */
static warren_err publish_retry(struct engine *e, struct job *j)
{
	const struct engine_delivery *d = j->delivery;
	unsigned char token[SECURITY_TOKEN_BYTES];
	amqp_table_entry_t add[] = {forward_int("rpc-attempt", j->meta.attempt + 1),
	                            forward_bytes(SECURITY_RETRY_TOKEN, token, sizeof(token))};
	const struct retry_tier *tier = retry_tier_for(j->retry_delay_ms);
	struct forward f;
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
	log_info("retrying %s correlation_id=%s attempt=%d in %lld ms", d->routing_key,
	         j->meta.correlation_id, j->meta.attempt + 1, (long long)j->retry_delay_ms);
	err = engine_publish(e, tier->name, d->routing_key, false, &f.props, d->message.body.bytes,
	                     d->message.body.len, on_retry_confirm, j);
	forward_free(&f);
	return err;
}

void worker_dead_letter(struct engine *e, struct job *j)
{
	if (publish_dead_letter(e, j) != WARREN_OK) {
		job_free(j); /* unacked: the broker delivers it again */
	}
}

/* Runs on the I/O thread once a handler thread is done with the job. A
 * publish that cannot be made (no connection) leaves the request unacked:
 * the broker delivers it again. While the broker blocks publishes the job
 * waits in w->held (see release_held). */
static void finish_task(struct engine *e, struct engine_task *t)
{
	struct job *j = (struct job *)t;
	const struct engine_delivery *d = j->delivery;
	struct warren_worker *w = j->worker;

	if (j->action != JOB_ACK && j->action != JOB_PROBE && engine_blocked(e) != NULL) {
		j->held_next = NULL;
		if (w->held_tail != NULL) {
			w->held_tail->held_next = j;
		} else {
			w->held = j;
		}
		w->held_tail = j;
		return;
	}
	switch (j->action) {
	case JOB_REPLY_THEN_ACK:
		if (publish_reply(e, j, on_reply_confirm) == WARREN_OK) {
			return; /* on_reply_confirm frees it */
		}
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
	case JOB_ACK:
		engine_ack(e, d->generation, d->delivery_tag);
		worker_count(j->worker, &j->worker->stats.acked, 1);
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
	struct job *j;

	pthread_mutex_lock(&w->mu);
	while (w->head == NULL && !w->quit) {
		pthread_cond_wait(&w->cond, &w->mu);
	}
	j = w->head;
	if (j != NULL) {
		w->head = j->next;
		if (w->head == NULL) {
			w->tail = NULL;
		}
	}
	pthread_mutex_unlock(&w->mu);
	return j;
}

static void *handler_main(void *arg)
{
	struct thread_start *ts = arg;
	struct warren_worker *w = ts->w;
	void *data = w->thread_init != NULL ? w->thread_init(ts->index, w->thread_arg) : NULL;
	struct job *j;

	free(ts);
	while ((j = next_job(w)) != NULL) {
		bool answer = job_process(w, j, data);

		worker_count(w, &w->stats.completed, 1);
		if (!answer) {
			job_free(j); /* past its limit: the I/O thread answered */
		} else if (!engine_submit(w->engine, &j->task)) {
			job_free(j); /* stopped: unacked, so the broker requeues it */
		}
	}
	if (w->thread_fini != NULL) {
		w->thread_fini(data, w->thread_arg);
	}
	return NULL;
}

/* Queues j for a handler thread; signal: wake one now (otherwise
 * wake_handlers does, at the end of the I/O thread's turn). */
static void enqueue(struct warren_worker *w, struct job *j, bool signal)
{
	pthread_mutex_lock(&w->mu);
	j->next = NULL;
	if (w->tail != NULL) {
		w->tail->next = j;
	} else {
		w->head = j;
	}
	w->tail = j;
	if (j->delivery != NULL) {
		w->stats.received++;
	}
	w->stats.in_progress++;
	if (signal) {
		pthread_cond_signal(&w->cond);
	}
	pthread_mutex_unlock(&w->mu);
}

void worker_enqueue(struct warren_worker *w, struct job *j)
{
	enqueue(w, j, true);
}

/* I/O thread, at the end of each turn: wakes as many handlers as the
 * turn's deliveries need, once, rather than at each delivery (when a
 * handler woken by the first would contend for w->mu with the I/O thread
 * queueing the rest). */
static void wake_handlers(struct warren_worker *w)
{
	int n = w->unsignaled;

	w->unsignaled = 0;
	if (n >= w->threads) {
		pthread_cond_broadcast(&w->cond);
	} else {
		while (n-- > 0) {
			pthread_cond_signal(&w->cond);
		}
	}
}

/* ------------------------------------------------------------ engine hooks */

static int declare_queue(amqp_connection_state_t conn, const char *name, char *errstr,
                         size_t errlen)
{
	amqp_table_entry_t qt = {.key = amqp_cstring_bytes("x-queue-type"),
	                         .value = {.kind = AMQP_FIELD_KIND_UTF8,
	                                   .value.bytes = amqp_cstring_bytes("quorum")}};
	amqp_table_t args = {1, &qt};
	char what[128];

	if (amqp_queue_declare(conn, 1, amqp_cstring_bytes(name), 0, 1, 0, 0, args) != NULL) {
		return 0;
	}
	snprintf(what, sizeof(what), "declaring queue %s", name);
	engine_describe_reply(amqp_get_rpc_reply(conn), what, errstr, errlen);
	return -1;
}

static int declare_exchange(amqp_connection_state_t conn, const char *name, char *errstr,
                            size_t errlen)
{
	char what[128];

	if (amqp_exchange_declare(conn, 1, amqp_cstring_bytes(name), amqp_cstring_bytes("topic"), 0,
	                          1, 0, 0, amqp_empty_table) != NULL) {
		return 0;
	}
	snprintf(what, sizeof(what), "declaring exchange %s", name);
	engine_describe_reply(amqp_get_rpc_reply(conn), what, errstr, errlen);
	return -1;
}

static int bind_queue(amqp_connection_state_t conn, const char *queue, const char *exchange,
                      const char *key, char *errstr, size_t errlen)
{
	char what[200];

	if (amqp_queue_bind(conn, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
	                    amqp_cstring_bytes(key), amqp_empty_table) != NULL) {
		return 0;
	}
	snprintf(what, sizeof(what), "binding %s to %s", queue, exchange);
	engine_describe_reply(amqp_get_rpc_reply(conn), what, errstr, errlen);
	return -1;
}

/* A delay tier: a fanout exchange and a quorum queue that dead-letters what
 * expires back to rpc, as rabbitmq/definitions.json declares them. */
static int declare_delay_tier(amqp_connection_state_t conn, const char *name, char *errstr,
                              size_t errlen)
{
	amqp_table_entry_t args[] = {
	    {.key = amqp_cstring_bytes("x-queue-type"),
	     .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("quorum")}},
	    {.key = amqp_cstring_bytes("x-dead-letter-exchange"),
	     .value = {.kind = AMQP_FIELD_KIND_UTF8,
	               .value.bytes = amqp_cstring_bytes(ENVELOPE_EXCHANGE)}},
	    {.key = amqp_cstring_bytes("x-dead-letter-strategy"),
	     .value = {.kind = AMQP_FIELD_KIND_UTF8,
	               .value.bytes = amqp_cstring_bytes("at-least-once")}},
	    {.key = amqp_cstring_bytes("x-overflow"),
	     .value = {.kind = AMQP_FIELD_KIND_UTF8,
	               .value.bytes = amqp_cstring_bytes("reject-publish")}},
	};
	char what[128];

	if (amqp_exchange_declare(conn, 1, amqp_cstring_bytes(name), amqp_cstring_bytes("fanout"), 0,
	                          1, 0, 0, amqp_empty_table) == NULL) {
		snprintf(what, sizeof(what), "declaring exchange %s", name);
		engine_describe_reply(amqp_get_rpc_reply(conn), what, errstr, errlen);
		return -1;
	}
	if (amqp_queue_declare(conn, 1, amqp_cstring_bytes(name), 0, 1, 0, 0,
	                       (amqp_table_t){4, args}) == NULL) {
		snprintf(what, sizeof(what), "declaring queue %s", name);
		engine_describe_reply(amqp_get_rpc_reply(conn), what, errstr, errlen);
		return -1;
	}
	return bind_queue(conn, name, name, "", errstr, errlen);
}

/* The same objects and arguments as rabbitmq/definitions.json (its policy
 * adds the dead-lettering and the delivery limit). */
static int declare_topology(struct warren_worker *w, amqp_connection_state_t conn, char *errstr,
                            size_t errlen)
{
	for (int i = 0; i < RETRY_TIERS; i++) {
		if (declare_delay_tier(conn, retry_tiers[i].name, errstr, errlen) != 0) {
			return -1;
		}
	}
	if (declare_exchange(conn, ENVELOPE_EXCHANGE, errstr, errlen) != 0 ||
	    declare_exchange(conn, DEADLETTER_EXCHANGE, errstr, errlen) != 0 ||
	    declare_queue(conn, w->queue, errstr, errlen) != 0 ||
	    declare_queue(conn, w->dlq, errstr, errlen) != 0 ||
	    bind_queue(conn, w->queue, ENVELOPE_EXCHANGE, w->binding, errstr, errlen) != 0 ||
	    bind_queue(conn, w->dlq, DEADLETTER_EXCHANGE, w->binding, errstr, errlen) != 0) {
		return -1;
	}
	return 0;
}

static int consume(struct warren_worker *w, amqp_connection_state_t conn, char *errstr,
                   size_t errlen)
{
	amqp_basic_consume_ok_t *ok = amqp_basic_consume(conn, 1, amqp_cstring_bytes(w->queue),
	                                                 amqp_empty_bytes, 0, 0, 0, amqp_empty_table);

	if (ok == NULL) {
		engine_describe_reply(amqp_get_rpc_reply(conn), "consuming", errstr, errlen);
		return -1;
	}
	envelope_copy(w->consumer_tag, sizeof(w->consumer_tag), ok->consumer_tag);
	return 0;
}

void worker_consume(struct warren_worker *w, struct engine *e)
{
	char why[300];

	if (consume(w, engine_conn(e), why, sizeof(why)) != 0) {
		engine_fail(e, why);
	}
}

void worker_cancel_consumer(struct warren_worker *w, struct engine *e)
{
	if (engine_connected(e) && w->consumer_tag[0] != '\0' &&
	    amqp_basic_cancel(engine_conn(e), 1, amqp_cstring_bytes(w->consumer_tag)) == NULL) {
		engine_fail(e, "basic.cancel failed");
	}
	w->consumer_tag[0] = '\0';
}

static int worker_setup(struct engine *e, void *arg, char *errstr, size_t errlen)
{
	struct warren_worker *w = arg;
	amqp_connection_state_t conn = engine_conn(e);

	w->consumer_tag[0] = '\0';
	if (declare_topology(w, conn, errstr, errlen) != 0) {
		return -1;
	}
	if (amqp_basic_qos(conn, 1, 0, (uint16_t)w->prefetch, 0) == NULL) {
		engine_describe_reply(amqp_get_rpc_reply(conn), "basic.qos", errstr, errlen);
		return -1;
	}
	pthread_mutex_lock(&w->mu);
	w->stats.connected = true;
	pthread_mutex_unlock(&w->mu);
	/* Stopping, or the breaker is open: connected, but not consuming. */
	if (w->stopping || w->paused) {
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
		atomic_init(&j->refs, 1);
	}
	return j;
}

static void worker_deliver(struct engine *e, void *arg, struct engine_delivery *d)
{
	struct warren_worker *w = arg;
	struct job *j;

	if (w->stopping) {
		/* Raced in after basic.cancel: give it back untouched. */
		engine_reject(e, d->generation, d->delivery_tag, true);
		engine_delivery_free(d);
		return;
	}
	if (d->redelivered) {
		worker_count(w, &w->stats.redelivered, 1);
	}
	j = worker_job_new(w);
	if (j == NULL) {
		engine_reject(e, d->generation, d->delivery_tag, true);
		engine_delivery_free(d);
		return;
	}
	j->delivery = d;
	enqueue(w, j, false);
	w->unsignaled++;
}

static void worker_returned(struct engine *e, void *arg, const amqp_basic_properties_t *props,
                            int code, const char *text)
{
	/* Replies are published without mandatory: nothing comes back. */
}

static void worker_lost(struct engine *e, void *arg, const char *why)
{
	struct warren_worker *w = arg;

	pthread_mutex_lock(&w->mu);
	w->stats.connected = false;
	if (!w->stopping) {
		w->stats.reconnects++;
	}
	pthread_mutex_unlock(&w->mu);
}

/* Once the broker takes publishes again, the held jobs go on; a job from
 * an older connection is dropped (the broker has requeued its request). */
static void release_held(struct warren_worker *w, struct engine *e)
{
	while (w->held != NULL && engine_connected(e) && engine_blocked(e) == NULL) {
		struct job *j = w->held;

		w->held = j->held_next;
		if (w->held == NULL) {
			w->held_tail = NULL;
		}
		if (j->delivery != NULL && j->delivery->generation != engine_generation(e)) {
			job_free(j);
		} else {
			finish_task(e, &j->task);
		}
	}
}

static int64_t worker_tick(struct engine *e, void *arg, int64_t now)
{
	int64_t a, b;

	wake_handlers(arg);
	release_held(arg, e);
	a = timelimit_check(arg, e, now);
	b = breaker_tick(arg, e, now);
	return a < b ? a : b;
}

/* ------------------------------------------------------------ lifecycle */

static warren_err worker_init(struct warren_worker *w, const warren_config *cfg, char *errstr,
                              size_t errlen)
{
	const char *service = config_str(cfg, CFG_WORKER_SERVICE);
	struct engine_config ec = engine_config_of(cfg, w->queue);
	struct engine_hooks hooks = {.arg = w,
	                             .setup = worker_setup,
	                             .deliver = worker_deliver,
	                             .returned = worker_returned,
	                             .lost = worker_lost,
	                             .tick = worker_tick};

	ec.batch_acks = true; /* every request is acked or rejected through the engine */
	if (service[0] == '\0') {
		snprintf(errstr, errlen, "worker.service is not set");
		return WARREN_ERR_CONFIG;
	}
	snprintf(w->service, sizeof(w->service), "%s", service);
	snprintf(w->queue, sizeof(w->queue), "rpc.%s", service);
	snprintf(w->dlq, sizeof(w->dlq), "rpc.%s.dlq", service);
	snprintf(w->binding, sizeof(w->binding), "%s.#", service);
	w->threads = (int)config_int(cfg, CFG_WORKER_THREADS);
	w->prefetch = (int)config_int(cfg, CFG_WORKER_PREFETCH);
	if (w->prefetch == 0) {
		w->prefetch = w->threads;
	}
	w->max_size = (size_t)config_int(cfg, CFG_MESSAGE_MAX_SIZE);
	w->retry_attempts = (int)config_int(cfg, CFG_WORKER_RETRY_ATTEMPTS);
	w->retry_delay_ms = config_int(cfg, CFG_WORKER_RETRY_DELAY);
	w->crash_limit = (int)config_int(cfg, CFG_WORKER_CRASH_LIMIT);
	w->handler_timeout_ms = config_int(cfg, CFG_WORKER_HANDLER_TIMEOUT);
	w->limit_known = INT64_MAX;
	w->consumer_timeout_ms = config_int(cfg, CFG_BROKER_CONSUMER_TIMEOUT);
	w->breaker_threshold = (int)config_int(cfg, CFG_WORKER_BREAKER_THRESHOLD);
	w->probe_ms = config_int(cfg, CFG_WORKER_BREAKER_PROBE);
	snprintf(w->metrics_listen, sizeof(w->metrics_listen), "%s",
	         config_str(cfg, CFG_METRICS_LISTEN));
	char host[128] = "?";
	gethostname(host, sizeof(host) - 1);
	snprintf(w->identity, sizeof(w->identity), "%s@%s:%ld", service, host, (long)getpid());
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
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cond, NULL);
	pthread_cond_init(&w->idle_cond, NULL);
	err = worker_init(w, cfg, errstr, errlen);
	if (err != WARREN_OK) {
		warren_worker_free(w);
		return err;
	}
	*out = w;
	return WARREN_OK;
}

warren_err warren_worker_handle(warren_worker *w, const char *method, warren_handler_fn fn,
                                void *arg)
{
	size_t slen = strlen(w->service);
	struct method *grown;

	if (w->started || fn == NULL || method == NULL || strncmp(method, w->service, slen) != 0 ||
	    method[slen] != '.' || method[slen + 1] == '\0' || worker_find_method(w, method) != NULL) {
		return WARREN_ERR_INVALID;
	}
	grown = realloc(w->methods, (w->nmethods + 1) * sizeof(*grown));
	if (grown == NULL) {
		return WARREN_ERR_NOMEM;
	}
	w->methods = grown;
	/* realloc leaves the new entry's counters uninitialised. */
	memset(&grown[w->nmethods], 0, sizeof(grown[w->nmethods]));
	grown[w->nmethods].name = strdup(method);
	if (grown[w->nmethods].name == NULL) {
		return WARREN_ERR_NOMEM;
	}
	grown[w->nmethods].fn = fn;
	grown[w->nmethods].arg = arg;
	grown[w->nmethods].timeout_ms = 0;
	w->nmethods++;
	return WARREN_OK;
}

warren_err warren_worker_set_timeout(warren_worker *w, const char *method, int64_t timeout_ms)
{
	struct method *m = w != NULL && method != NULL ? (struct method *)worker_find_method(w, method)
	                                               : NULL;

	if (m == NULL || w->started || timeout_ms <= 0) {
		return WARREN_ERR_INVALID;
	}
	m->timeout_ms = timeout_ms;
	return WARREN_OK;
}

/* Every handler must end (or be answered for) before the broker's
 * consumer_timeout, which would close the whole channel. */
static warren_err check_time_limits(const struct warren_worker *w, char *errstr, size_t errlen)
{
	if (w->handler_timeout_ms >= w->consumer_timeout_ms) {
		snprintf(errstr, errlen,
		         "worker.handler_timeout (%lld ms) must be shorter than "
		         "broker.consumer_timeout (%lld ms)",
		         (long long)w->handler_timeout_ms, (long long)w->consumer_timeout_ms);
		return WARREN_ERR_CONFIG;
	}
	for (size_t i = 0; i < w->nmethods; i++) {
		if (w->methods[i].timeout_ms >= w->consumer_timeout_ms) {
			snprintf(errstr, errlen,
			         "the time limit of %s (%lld ms) must be shorter than "
			         "broker.consumer_timeout (%lld ms)",
			         w->methods[i].name, (long long)w->methods[i].timeout_ms,
			         (long long)w->consumer_timeout_ms);
			return WARREN_ERR_CONFIG;
		}
	}
	return WARREN_OK;
}

warren_err warren_worker_set_probe(warren_worker *w, warren_probe_fn fn, void *arg)
{
	if (w == NULL || w->started) {
		return WARREN_ERR_INVALID;
	}
	w->probe = fn;
	w->probe_arg = arg;
	return WARREN_OK;
}

warren_err warren_worker_on_thread(warren_worker *w, warren_thread_init_fn init,
                                   warren_thread_fini_fn fini, void *arg)
{
	if (w->started) {
		return WARREN_ERR_INVALID;
	}
	w->thread_init = init;
	w->thread_fini = fini;
	w->thread_arg = arg;
	return WARREN_OK;
}

static warren_err start_handlers(struct warren_worker *w, char *errstr, size_t errlen)
{
	w->handler_threads = calloc((size_t)w->threads, sizeof(pthread_t));
	if (w->handler_threads == NULL) {
		snprintf(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	for (int i = 0; i < w->threads; i++) {
		struct thread_start *ts = malloc(sizeof(*ts));

		if (ts == NULL) {
			snprintf(errstr, errlen, "out of memory");
			return WARREN_ERR_NOMEM;
		}
		*ts = (struct thread_start){.w = w, .index = i};
		if (pthread_create(&w->handler_threads[i], NULL, handler_main, ts) != 0) {
			free(ts);
			snprintf(errstr, errlen, "cannot start handler thread %d", i);
			return WARREN_ERR_SYSTEM;
		}
		w->started_threads++;
	}
	return WARREN_OK;
}

warren_err warren_worker_start(warren_worker *w, char *errstr, size_t errlen)
{
	warren_err err;

	if (w->started) {
		snprintf(errstr, errlen, "already started");
		return WARREN_ERR_INVALID;
	}
	err = check_time_limits(w, errstr, errlen);
	if (err != WARREN_OK) {
		return err;
	}
	/* Before anything is consumed: an address that cannot be bound must not
	 * cost a request. */
	if (w->metrics_listen[0] != '\0') {
		err = metrics_start(w, w->metrics_listen, &w->metrics, errstr, errlen);
		if (err != WARREN_OK) {
			return err;
		}
	}
	w->started = true;
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

	w->stopping = true;
	worker_cancel_consumer(w, e);
}

/* Waits until no job is in progress or the deadline (monotonic ms) passes. */
static bool wait_idle(struct warren_worker *w, int64_t deadline)
{
	bool idle;

	pthread_mutex_lock(&w->mu);
	while (w->stats.in_progress > 0 && engine_now() < deadline) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&w->idle_cond, &w->mu, &ts);
	}
	idle = w->stats.in_progress == 0;
	pthread_mutex_unlock(&w->mu);
	return idle;
}

static void stop_handlers(struct warren_worker *w)
{
	pthread_mutex_lock(&w->mu);
	w->quit = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->mu);
	for (int i = 0; i < w->started_threads; i++) {
		pthread_join(w->handler_threads[i], NULL);
	}
	w->started_threads = 0;
}

warren_err warren_worker_stop(warren_worker *w, int grace_ms)
{
	struct cancel_req cancel = {.task = {.run = cancel_task}, .w = w};
	bool idle;

	if (w == NULL || !w->started || w->stopped) {
		return WARREN_OK;
	}
	w->stopped = true;
	if (engine_submit(w->engine, &cancel.task)) {
		/* The task is on the stack: wait for the I/O thread to have run it. */
		idle = wait_idle(w, engine_now() + (grace_ms > 0 ? grace_ms : 0));
	} else {
		idle = wait_idle(w, engine_now());
	}
	engine_stop(w->engine);
	if (idle) {
		stop_handlers(w);
	}
	return idle ? WARREN_OK : WARREN_ERR_TIMEOUT;
}

void warren_worker_free(warren_worker *w)
{
	if (w == NULL) {
		return;
	}
	metrics_http_stop(w->metrics); /* it reads the worker: first */
	w->metrics = NULL;
	warren_worker_stop(w, 0);
	stop_handlers(w);
	engine_free(w->engine);
	/* Jobs still queued or held were never acked: the broker has requeued
	 * them. */
	while (w->head != NULL) {
		struct job *j = w->head;

		w->head = j->next;
		engine_delivery_free(j->delivery);
		free(j);
	}
	while (w->held != NULL) {
		struct job *j = w->held;

		w->held = j->held_next;
		engine_delivery_free(j->delivery);
		free(j->reply_body);
		free(j);
	}
	for (size_t i = 0; i < w->nmethods; i++) {
		free(w->methods[i].name);
	}
	free(w->methods);
	free(w->handler_threads);
	security_free(w->sec);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cond);
	pthread_cond_destroy(&w->idle_cond);
	free(w);
}
