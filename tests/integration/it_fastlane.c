/* it_fastlane.c: the fast lane (warren(7), THE FAST LANE). A transient call
 * goes to the exchange rpc.fast and waits in the service's classic queue
 * rpc.<service>.fast; a durable one still goes to rpc and the quorum queue;
 * a service with no fast queue gets its transient calls on the durable lane;
 * a fast-lane request redelivered after a possible crash is moved to the
 * durable lane before it runs; poison from the fast lane lands in the
 * service's dead-letter queue. The service here, "lanes", is declared by
 * its worker alone (not in rabbitmq/definitions.json). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testenv.h"

static struct raw *raw;
static atomic_int handled;

struct outcome {
	atomic_bool done;
	warren_err err;
	warren_status status;
	char msg[300];
};

static warren_status echo(warren_request *req, void *arg)
{
	atomic_fetch_add(&handled, 1);
	warren_request_set_result(req, warren_value_copy(warren_request_params(req)));
	return WARREN_STATUS_OK;
}

static warren_worker *start_worker(const char *service)
{
	char svc[64], method[80];
	warren_worker *w;
	warren_config *cfg;

	snprintf(svc, sizeof(svc), "worker.service=%s", service);
	snprintf(method, sizeof(method), "%s.echo", service);
	cfg = testenv_config((const char *const[]){svc, NULL});
	w = testenv_worker_start(cfg, method, echo, NULL);
	warren_config_free(cfg);
	assert_non_null(w);
	return w;
}

static void stop_worker(warren_worker *w)
{
	assert_int_equal(testenv_worker_stop(w), WARREN_OK);
}

static warren_client *new_client(const char *const *overrides)
{
	warren_config *cfg = testenv_config(overrides);
	warren_client *c;
	char why[300];

	if (warren_client_new(cfg, "it_fastlane", &c, why, sizeof(why)) != WARREN_OK) {
		fail_msg("client: %s", why);
	}
	warren_config_free(cfg);
	return c;
}

static void on_done(warren_err err, warren_reply *reply, const char *errmsg, void *arg)
{
	struct outcome *o = arg;

	o->err = err;
	o->status = reply != NULL ? warren_reply_status(reply) : WARREN_STATUS_UNKNOWN;
	snprintf(o->msg, sizeof(o->msg), "%s", errmsg);
	warren_reply_free(reply);
	atomic_store(&o->done, true);
}

static void call_async(warren_client *c, const char *method, bool transient, struct outcome *o)
{
	warren_call_opts opts = {.timeout_ms = 20000, .transient = transient, .json = true};
	char why[300];

	memset(o, 0, sizeof(*o));
	assert_int_equal(warren_call_async(c, method, NULL, &opts, on_done, o, why, sizeof(why)),
	                 WARREN_OK);
}

static void await_outcome(struct outcome *o, warren_err want)
{
	for (int i = 0; i < 1500 && !atomic_load(&o->done); i++) {
		usleep(10000);
	}
	assert_true(atomic_load(&o->done));
	if (o->err != want) {
		fail_msg("call ended with %d (%s), expected %d", o->err, o->msg, want);
	}
}

static warren_client_stats client_stats(warren_client *c)
{
	warren_client_stats st;

	warren_client_get_stats(c, &st);
	return st;
}

static int setup(void **state)
{
	warren_worker *w;

	raw = raw_connect();
	raw_consume_replies(raw);
	/* The worker declares the service's queues, then leaves them idle. */
	w = start_worker("lanes");
	stop_worker(w);
	return 0;
}

static int teardown(void **state)
{
	raw_close(raw);
	return 0;
}

static int purge(void **state)
{
	raw_purge(raw, "rpc.lanes");
	raw_purge(raw, "rpc.lanes.fast");
	raw_purge(raw, "rpc.lanes.dlq");
	atomic_store(&handled, 0);
	return 0;
}

/* One call to lanes.echo, transient or not: it waits in its lane's queue
 * and not the other's until a worker starts, which takes it from there
 * and answers it. */
static void one_call_waits_in_its_lane(bool transient)
{
	const char *queue = transient ? "rpc.lanes.fast" : "rpc.lanes";
	const char *other = transient ? "rpc.lanes" : "rpc.lanes.fast";
	warren_client *c = new_client(NULL);
	struct outcome o;
	warren_worker_stats ws;
	warren_worker *w;

	call_async(c, "lanes.echo", transient, &o);
	assert_int_equal(raw_await_count(raw, queue, 1, 5000), 1);
	assert_int_equal(raw_queue_count(raw, other), 0);
	w = start_worker("lanes");
	await_outcome(&o, WARREN_OK);
	warren_worker_get_stats(w, &ws);
	assert_int_equal(ws.fast_received, transient ? 1 : 0);
	assert_int_equal(ws.received, 1);
	assert_int_equal(ws.moved, 0);
	assert_int_equal(client_stats(c).fast_sent, transient ? 1 : 0);
	assert_int_equal(raw_queue_count(raw, queue), 0);
	stop_worker(w);
	warren_client_free(c);
}

static void test_a_transient_call_waits_in_the_fast_queue_and_is_answered_from_it(void **state)
{
	one_call_waits_in_its_lane(true);
}

static void test_a_durable_call_still_goes_to_the_quorum_queue(void **state)
{
	one_call_waits_in_its_lane(false);
}

/* client.transient names the methods whose calls take the fast lane. */
static void test_client_transient_patterns_send_calls_on_the_fast_lane(void **state)
{
	warren_client *c = new_client((const char *const[]){"client.transient=lanes.*", NULL});
	struct outcome o;
	warren_worker *w;

	call_async(c, "lanes.echo", false, &o);
	assert_int_equal(raw_await_count(raw, "rpc.lanes.fast", 1, 5000), 1);
	w = start_worker("lanes");
	await_outcome(&o, WARREN_OK);
	stop_worker(w);
	warren_client_free(c);
}

/* Plays a worker of a version without the fast lane: takes a request from
 * the durable queue (rpc.nofast) and answers it. */
static void answer_from(const char *queue)
{
	amqp_message_t msg;
	amqp_basic_properties_t p = {0};
	amqp_table_entry_t status = {.key = amqp_cstring_bytes("rpc-status"),
	                             .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 0}};
	char reply_to[256];

	for (int i = 0; raw_get(raw, queue, &msg) != 0; i++) {
		assert_true(i < 500); /* 5 s */
		usleep(10000);
	}
	snprintf(reply_to, sizeof(reply_to), "%.*s", (int)msg.properties.reply_to.len,
	         (const char *)msg.properties.reply_to.bytes);
	p._flags =
	    AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG;
	p.correlation_id = msg.properties.correlation_id;
	p.content_type = amqp_cstring_bytes("application/json");
	p.headers = (amqp_table_t){1, &status};
	assert_int_equal(raw_publish_to(raw, "", reply_to, &p, "{}", 2), 0);
	amqp_destroy_message(&msg);
}

/* A rolling upgrade: the service's workers are of a version without the
 * fast lane. The transient call comes back unroutable from rpc.fast and is
 * sent again at once on the durable lane, where it is answered; the next
 * one goes there straight away. */
static void test_a_transient_call_falls_back_to_the_durable_lane_when_the_service_has_no_fast_queue(
    void **state)
{
	warren_client *c = new_client(NULL);
	struct outcome o;
	warren_client_stats st;

	assert_int_equal(raw_declare_service(raw, "nofast"), 0);
	call_async(c, "nofast.echo", true, &o);
	answer_from("rpc.nofast");
	await_outcome(&o, WARREN_OK);
	st = client_stats(c);
	assert_int_equal(st.fast_sent, 1);
	assert_int_equal(st.fast_fallbacks, 1);
	assert_int_equal(st.unroutable, 0);

	call_async(c, "nofast.echo", true, &o);
	answer_from("rpc.nofast");
	await_outcome(&o, WARREN_OK);
	st = client_stats(c);
	assert_int_equal(st.fast_sent, 1); /* remembered: straight to the durable lane */
	assert_int_equal(st.fast_fallbacks, 1);
	warren_client_free(c);
}

/* Transient calls queued together travel as one batch on the fast lane
 * (client.batch is every method by default): fewer messages than calls
 * wait in rpc.lanes.fast, none in the lane of durable batches, and a
 * worker answers each from there. */
static void test_transient_calls_queued_together_travel_batched_on_the_fast_lane(void **state)
{
	enum { N = 50, ROUNDS = 5 };
	warren_client *c = new_client(NULL);
	static struct outcome o[ROUNDS * N];
	warren_client_stats cs;
	warren_worker_stats ws;
	warren_worker *w;
	long waiting;
	int rounds = 0, sent;

	/* Calls queue together only when the I/O thread is busy while they
	 * come: rounds of N, as it_batch does, until one went batched. */
	do {
		for (int i = 0; i < N; i++) {
			call_async(c, "lanes.echo", true, &o[rounds * N + i]);
		}
		rounds++;
		for (int i = 0; i < 500 && client_stats(c).fast_sent < (uint64_t)rounds * N; i++) {
			usleep(10000);
		}
		cs = client_stats(c);
	} while (cs.request_batches == 0 && rounds < ROUNDS);
	sent = rounds * N;
	assert_int_equal(cs.fast_sent, sent);
	assert_true(cs.request_batches >= 1);
	waiting = raw_queue_count(raw, "rpc.lanes.fast");
	assert_true(waiting < sent);
	assert_int_equal(raw_queue_count(raw, "rpc.lanes.batch"), 0);
	assert_int_equal(raw_queue_count(raw, "rpc.lanes"), 0);
	w = start_worker("lanes");
	for (int i = 0; i < sent; i++) {
		await_outcome(&o[i], WARREN_OK);
	}
	warren_worker_get_stats(w, &ws);
	assert_int_equal(ws.received, sent);
	assert_int_equal(ws.request_batches, cs.request_batches);
	assert_int_equal(ws.fast_received, waiting);
	assert_int_equal(ws.moved, 0);
	stop_worker(w);
	warren_client_free(c);
}

/* The same rolling upgrade with transient calls batched: the batch comes
 * back unroutable from rpc.fast, and each of its calls is sent again alone
 * on the durable lane, where it is answered. */
static void test_a_batch_of_transient_calls_falls_back_to_the_durable_lane(void **state)
{
	enum { N = 20, ROUNDS = 5 };
	warren_client *c = new_client(NULL);
	static struct outcome o[ROUNDS * N];
	warren_client_stats st;
	int rounds = 0;

	/* Rounds as above, each to a service of its own: after its fallback
	 * a service's transient calls take the durable lane for 30 s. */
	do {
		char service[32], method[48], queue[48];

		snprintf(service, sizeof(service), "nofastb%d", rounds);
		snprintf(method, sizeof(method), "%s.echo", service);
		snprintf(queue, sizeof(queue), "rpc.%s", service);
		assert_int_equal(raw_declare_service(raw, service), 0);
		for (int i = 0; i < N; i++) {
			call_async(c, method, true, &o[rounds * N + i]);
		}
		for (int i = 0; i < N; i++) {
			answer_from(queue);
		}
		for (int i = 0; i < N; i++) {
			await_outcome(&o[rounds * N + i], WARREN_OK);
		}
		rounds++;
		st = client_stats(c);
	} while (st.request_batches == 0 && rounds < ROUNDS);
	assert_true(st.request_batches >= 1);
	assert_int_equal(st.fast_sent, rounds * N);
	assert_int_equal(st.fast_fallbacks, rounds * N);
	assert_int_equal(st.unroutable, 0);
	warren_client_free(c);
}

/* A broker that has neither this version's definitions nor one of its
 * workers has no exchange rpc.fast: a publish there would close the
 * client's channel, so the client checks for it when it connects. */
static void test_a_transient_call_takes_the_durable_lane_when_rpc_fast_is_missing(void **state)
{
	amqp_connection_state_t conn = raw_conn(raw);
	warren_client *c;
	struct outcome o;
	warren_worker *w;

	assert_non_null(amqp_exchange_delete(conn, 1, amqp_cstring_bytes("rpc.fast"), 0));
	c = new_client(NULL);
	call_async(c, "lanes.echo", true, &o);
	assert_int_equal(raw_await_count(raw, "rpc.lanes", 1, 5000), 1);
	w = start_worker("lanes"); /* declares rpc.fast and its binding again */
	await_outcome(&o, WARREN_OK);
	assert_int_equal(client_stats(c).fast_sent, 0);
	assert_int_equal(client_stats(c).failed, 0);
	stop_worker(w);
	warren_client_free(c);
}

/* Publishes a request to rpc.fast as a plain AMQP caller would. */
static void publish_fast(const char *corr, const char *content_type, const char *body)
{
	amqp_basic_properties_t p = {0};

	p._flags = AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
	           AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_TYPE_FLAG;
	p.correlation_id = amqp_cstring_bytes(corr);
	p.delivery_mode = 1;
	p.reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to");
	p.content_type = amqp_cstring_bytes(content_type);
	p.type = amqp_cstring_bytes("lanes.echo");
	assert_int_equal(raw_publish_to(raw, "rpc.fast", "lanes.echo", &p, body, strlen(body)), 0);
}

static int reply_status(const amqp_envelope_t *env, const char *corr)
{
	const amqp_basic_properties_t *p = &env->message.properties;
	const char *st = raw_header(p, "rpc-status");

	assert_int_equal((int)p->correlation_id.len, (int)strlen(corr));
	assert_memory_equal(p->correlation_id.bytes, corr, strlen(corr));
	assert_non_null(st);
	return atoi(st);
}

/* A worker died holding a fast-lane request (here a connection that took it
 * and closed without an ack): its redelivery is a crash suspect, and the
 * classic queue counts no deliveries. The worker moves it to the durable
 * lane first, where the quorum queue counts them, and runs it from there. */
static void
test_a_redelivered_fast_lane_request_moves_to_the_durable_lane_before_it_runs(void **state)
{
	struct raw *dying = raw_connect();
	amqp_envelope_t env;
	warren_worker_stats ws;
	warren_worker *w;

	publish_fast("moved-1", "application/json", "{\"x\":1}");
	assert_true(raw_take(dying, "rpc.lanes.fast") != 0);
	raw_close(dying); /* unacked: back in the queue, marked redelivered */

	w = start_worker("lanes");
	assert_int_equal(raw_wait(raw, 10000, &env), 0);
	assert_int_equal(reply_status(&env, "moved-1"), 0);
	assert_int_equal((int)env.message.body.len, 7);
	assert_memory_equal(env.message.body.bytes, "{\"x\":1}", 7);
	amqp_destroy_envelope(&env);
	warren_worker_get_stats(w, &ws);
	assert_int_equal(ws.moved, 1);
	assert_int_equal(ws.fast_received, 1); /* the suspect, which did not run there */
	assert_int_equal(ws.received, 2);      /* and its copy from the durable lane, which did */
	assert_int_equal(atomic_load(&handled), 1);
	assert_int_equal(raw_queue_count(raw, "rpc.lanes.fast"), 0);
	stop_worker(w);
}

/* Poison from the fast lane: answered, and dead-lettered to the service's
 * dead-letter queue under its method, with its reason and its queue. */
static void
test_poison_from_the_fast_lane_lands_in_the_dead_letter_queue_with_its_reason(void **state)
{
	warren_worker *w = start_worker("lanes");
	amqp_envelope_t env;
	amqp_message_t msg;

	publish_fast("poison-1", "application/json", "{not json");
	assert_int_equal(raw_wait(raw, 10000, &env), 0);
	assert_int_equal(reply_status(&env, "poison-1"), WARREN_STATUS_INVALID_ARGUMENT);
	amqp_destroy_envelope(&env);
	assert_int_equal(raw_await_count(raw, "rpc.lanes.dlq", 1, 5000), 1);
	assert_int_equal(raw_get(raw, "rpc.lanes.dlq", &msg), 0);
	assert_string_equal(raw_header(&msg.properties, "rpc-dead-reason"), "undecodable");
	assert_string_equal(raw_header(&msg.properties, "rpc-dead-queue"), "rpc.lanes.fast");
	assert_int_equal((int)msg.body.len, 9);
	assert_memory_equal(msg.body.bytes, "{not json", 9);
	amqp_destroy_message(&msg);
	stop_worker(w);
}

/* The fast queue lives on one node and cannot be declared while that node
 * is down; here it cannot be declared because it exists with other
 * arguments. Either way the worker serves the durable lane alone. */
static void test_a_worker_that_cannot_declare_its_fast_queue_still_serves_the_durable_lane(
    void **state)
{
	amqp_connection_state_t conn = raw_conn(raw);
	amqp_table_entry_t qt = {.key = amqp_cstring_bytes("x-max-length"),
	                         .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 7}};
	warren_client *c = new_client(NULL);
	struct outcome o;
	warren_worker *w;

	assert_non_null(amqp_queue_declare(conn, 1, amqp_cstring_bytes("rpc.odd.fast"), 0, 1, 0, 0,
	                                   (amqp_table_t){1, &qt}));
	w = start_worker("odd");
	call_async(c, "odd.echo", false, &o);
	await_outcome(&o, WARREN_OK);
	assert_int_equal(raw_consumer_count(raw, "rpc.odd.fast"), 0);
	stop_worker(w);
	warren_client_free(c);
	assert_non_null(amqp_queue_delete(conn, 1, amqp_cstring_bytes("rpc.odd.fast"), 0, 0));
}

/* The broker cancels the worker's fast-lane consumer (its queue deleted,
 * or, in a cluster, its node gone): the worker keeps its connection and
 * its durable lane, and declares and consumes the fast lane again a few
 * seconds later. It dropped the whole connection, and with it every
 * request it held, then set everything up again. */
/* Consumers of queue, -1 when it does not exist, asked on a connection of
 * its own (a passive declare of a missing queue closes its channel). */
static long consumers_of(const char *queue)
{
	struct raw *r = raw_connect();
	long n = raw_consumer_count(r, queue);

	raw_close(r);
	return n;
}

static void test_a_cancelled_fast_lane_consumer_costs_the_worker_no_reconnect(void **state)
{
	amqp_connection_state_t conn = raw_conn(raw);
	warren_client *c = new_client(NULL);
	warren_worker *w = start_worker("cancel");
	warren_worker_stats ws;
	struct outcome o;

	assert_int_equal(raw_consumer_count(raw, "rpc.cancel.fast"), 1);
	assert_non_null(amqp_queue_delete(conn, 1, amqp_cstring_bytes("rpc.cancel.fast"), 0, 0));
	call_async(c, "cancel.echo", false, &o);
	await_outcome(&o, WARREN_OK);
	/* Declared and consumed again (FAST_RETRY_MS, 5 s, in worker.c). */
	for (int i = 0; i < 300 && consumers_of("rpc.cancel.fast") != 1; i++) {
		usleep(50000);
	}
	assert_int_equal(consumers_of("rpc.cancel.fast"), 1);
	warren_worker_get_stats(w, &ws);
	assert_int_equal(ws.reconnects, 0);
	assert_true(ws.connected);
	call_async(c, "cancel.echo", true, &o);
	await_outcome(&o, WARREN_OK);
	stop_worker(w);
	warren_client_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_a_cancelled_fast_lane_consumer_costs_the_worker_no_reconnect,
	                           purge),
	    cmocka_unit_test_setup(
	        test_a_transient_call_waits_in_the_fast_queue_and_is_answered_from_it, purge),
	    cmocka_unit_test_setup(test_a_durable_call_still_goes_to_the_quorum_queue, purge),
	    cmocka_unit_test_setup(test_client_transient_patterns_send_calls_on_the_fast_lane,
	                           purge),
	    cmocka_unit_test_setup(
	        test_a_transient_call_falls_back_to_the_durable_lane_when_the_service_has_no_fast_queue,
	        purge),
	    cmocka_unit_test_setup(
	        test_a_transient_call_takes_the_durable_lane_when_rpc_fast_is_missing, purge),
	    cmocka_unit_test_setup(
	        test_transient_calls_queued_together_travel_batched_on_the_fast_lane, purge),
	    cmocka_unit_test_setup(test_a_batch_of_transient_calls_falls_back_to_the_durable_lane,
	                           purge),
	    cmocka_unit_test_setup(
	        test_a_redelivered_fast_lane_request_moves_to_the_durable_lane_before_it_runs,
	        purge),
	    cmocka_unit_test_setup(
	        test_poison_from_the_fast_lane_lands_in_the_dead_letter_queue_with_its_reason,
	        purge),
	    cmocka_unit_test_setup(
	        test_a_worker_that_cannot_declare_its_fast_queue_still_serves_the_durable_lane,
	        purge),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
