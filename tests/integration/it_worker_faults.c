/* it_worker_faults.c: a worker in this process against the private broker,
 * where things go wrong around it: requests that reach its queue by another
 * key than their method, a dead-letter queue an operator unbound, bodies
 * above message.max_size, a handler stuck past its time limit at shutdown,
 * and connections closed under it while handlers run and more requests
 * wait. Each test starts its own worker with the configuration it needs. */
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
#include <time.h>
#include <unistd.h>

#include "testenv.h"

#define NIDS 8

static struct raw *raw;
static warren_worker *worker;

/* What the handlers saw. */
static atomic_int runs[NIDS];    /* executions of example.gate, by params id */
static atomic_int echoes;        /* executions of example.echo */
static atomic_bool gate_open;    /* example.gate with "block" waits for it */
static atomic_bool gate_entered; /* a blocking example.gate is waiting */
static atomic_bool stuck_returned;

static warren_status echo(warren_request *req, void *arg)
{
	atomic_fetch_add(&echoes, 1);
	warren_request_set_result(req, warren_value_copy(warren_request_params(req)));
	return WARREN_STATUS_OK;
}

/* {"id": N, "block": true?}: counts its run; a blocking one waits (up to a
 * minute) until the test opens the gate. */
static warren_status gate(warren_request *req, void *arg)
{
	const warren_value *p = warren_request_params(req);
	int64_t id = -1;
	bool block = false;

	warren_value_get_int(warren_map_get(p, "id"), &id);
	warren_value_get_bool(warren_map_get(p, "block"), &block);
	if (id >= 0 && id < NIDS) {
		atomic_fetch_add(&runs[id], 1);
	}
	if (block) {
		atomic_store(&gate_entered, true);
		for (int i = 0; i < 6000 && !atomic_load(&gate_open); i++) {
			usleep(10000);
		}
	}
	return WARREN_STATUS_OK;
}

/* Fails UNAVAILABLE on its first attempt, succeeds on the next. */
static atomic_int flaky_runs;
static warren_status flaky(warren_request *req, void *arg)
{
	atomic_fetch_add(&flaky_runs, 1);
	if (warren_request_attempt(req) == 1) {
		return warren_request_fail(req, WARREN_STATUS_UNAVAILABLE, NULL, "not yet");
	}
	return WARREN_STATUS_OK;
}

/* Stuck far past its time limit, until the test lets it go (at most a minute). */
static warren_status stuck(warren_request *req, void *arg)
{
	atomic_store(&gate_entered, true);
	for (int i = 0; i < 6000 && !atomic_load(&gate_open); i++) {
		usleep(10000);
	}
	atomic_store(&stuck_returned, true);
	return WARREN_STATUS_OK;
}

static void start_worker(const char *const *overrides)
{
	const char *base[] = {"worker.service=example", "log.level=error",
	                      "broker.reconnect_min=50ms", NULL};
	const char *all[24];
	int n = 0;
	char why[300];

	for (int i = 0; base[i] != NULL; i++) {
		all[n++] = base[i];
	}
	for (int i = 0; overrides != NULL && overrides[i] != NULL; i++) {
		all[n++] = overrides[i];
	}
	all[n] = NULL;
	warren_config *cfg = testenv_config(all);
	assert_int_equal(warren_worker_new(cfg, &worker, why, sizeof(why)), WARREN_OK);
	assert_int_equal(warren_worker_handle(worker, "example.echo", echo, NULL), WARREN_OK);
	assert_int_equal(warren_worker_handle(worker, "example.gate", gate, NULL), WARREN_OK);
	assert_int_equal(warren_worker_handle(worker, "example.stuck", stuck, NULL), WARREN_OK);
	assert_int_equal(warren_worker_handle(worker, "example.flaky", flaky, NULL), WARREN_OK);
	if (warren_worker_start(worker, why, sizeof(why)) != WARREN_OK) {
		fail_msg("worker: %s", why);
	}
	warren_config_free(cfg);
}

static void stop_worker(void)
{
	if (worker != NULL) {
		warren_worker_stop(worker, 2000);
		warren_worker_free(worker);
		worker = NULL;
	}
}

static int fresh(void **state)
{
	raw_purge(raw, "rpc.example");
	raw_purge(raw, "rpc.example.dlq");
	for (int i = 0; i < NIDS; i++) {
		atomic_store(&runs[i], 0);
	}
	atomic_store(&echoes, 0);
	atomic_store(&flaky_runs, 0);
	atomic_store(&gate_open, false);
	atomic_store(&gate_entered, false);
	atomic_store(&stuck_returned, false);
	return 0;
}

static int done(void **state)
{
	atomic_store(&gate_open, true);
	stop_worker();
	return 0;
}

static int setup(void **state)
{
	raw = raw_connect();
	return 0;
}

static int teardown(void **state)
{
	raw_close(raw);
	return 0;
}

/* ------------------------------------------------------------ helpers */

static amqp_basic_properties_t props(const char *corr, const char *type)
{
	amqp_basic_properties_t p = {0};

	p._flags = AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
	           AMQP_BASIC_CONTENT_TYPE_FLAG;
	p.correlation_id = amqp_cstring_bytes(corr);
	p.delivery_mode = 2;
	p.content_type = amqp_cstring_bytes("application/json");
	if (type != NULL) {
		p._flags |= AMQP_BASIC_TYPE_FLAG;
		p.type = amqp_cstring_bytes(type);
	}
	return p;
}

/* Publishes to any exchange (raw_publish only knows rpc) and waits for the
 * broker's confirm. */
static void publish_to(const char *exchange, const char *routing_key,
                       const amqp_basic_properties_t *p, const void *body, size_t len)
{
	amqp_bytes_t b = {.len = len, .bytes = (void *)body};

	assert_int_equal(amqp_basic_publish(raw_conn(raw), 1, amqp_cstring_bytes(exchange),
	                                    amqp_cstring_bytes(routing_key), 0, 0, p, b),
	                 AMQP_STATUS_OK);
	for (;;) {
		amqp_frame_t f;
		struct timeval tv = {5, 0};

		assert_int_equal(amqp_simple_wait_frame_noblock(raw_conn(raw), &f, &tv),
		                 AMQP_STATUS_OK);
		if (f.frame_type == AMQP_FRAME_METHOD &&
		    f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
			return;
		}
	}
}

static void publish_gate(int id, bool block)
{
	char corr[32], body[64];
	amqp_basic_properties_t p;

	snprintf(corr, sizeof(corr), "gate-%d", id);
	snprintf(body, sizeof(body), "{\"id\":%d,\"block\":%s}", id, block ? "true" : "false");
	p = props(corr, "example.gate");
	assert_int_equal(raw_publish(raw, "example.gate", &p, body, strlen(body)), 0);
}

static warren_worker_stats stats(void)
{
	warren_worker_stats s;

	warren_worker_get_stats(worker, &s);
	return s;
}

/* Waits up to timeout_ms for what(); true if it came. */
static bool await(bool (*what)(void), int timeout_ms)
{
	int64_t until = testenv_mono_ms() + timeout_ms;

	while (!what()) {
		if (testenv_mono_ms() > until) {
			return false;
		}
		usleep(20000);
	}
	return true;
}

static int want_received;
static bool received_enough(void)
{
	return stats().received >= (uint64_t)want_received;
}

static bool entered(void)
{
	return atomic_load(&gate_entered);
}

static uint64_t want_reconnects;
static bool reconnected(void)
{
	warren_worker_stats s = stats();

	return s.connected && s.reconnects >= want_reconnects;
}

static bool idle(void)
{
	return stats().in_progress == 0 && raw_queue_count(raw, "rpc.example") == 0;
}

/* Closes every connection of the broker (the worker's among them), then
 * reconnects the test's own client. */
static void close_connections(void)
{
	want_reconnects = stats().reconnects + 1;
	assert_int_equal(testenv_broker_ctl("close_all_connections it_worker_faults"), 0);
	raw_close(raw);
	raw = raw_connect();
	assert_true(await(reconnected, 15000));
}

/* The reason of the one dead letter in rpc.example.dlq, taken; its body
 * length in *body_len. */
static const char *take_dead_reason(size_t *body_len)
{
	static char reason[128];
	amqp_message_t msg;
	const char *r;

	assert_int_equal(raw_await_count(raw, "rpc.example.dlq", 1, 10000), 1);
	assert_int_equal(raw_get(raw, "rpc.example.dlq", &msg), 0);
	r = raw_header(&msg.properties, "rpc-dead-reason");
	snprintf(reason, sizeof(reason), "%s", r != NULL ? r : "(none)");
	if (body_len != NULL) {
		*body_len = msg.body.len;
	}
	amqp_destroy_message(&msg);
	return reason;
}

/* A body just above message.max_size, within the seal's overhead the
 * engine still assembles, is dead-lettered without its body as well: the
 * dead letter of any too-large request is empty (warren(7)); it kept the
 * body, as the conformance kit found. */
static void test_a_request_just_above_max_size_is_dead_lettered_without_its_body(void **state)
{
	char body[1025];
	amqp_basic_properties_t p = props("big-2", "example.echo");
	size_t len = 1;

	start_worker((const char *const[]){"message.max_size=1k", NULL});
	memset(body, 0, sizeof(body));
	assert_int_equal(raw_publish(raw, "example.echo", &p, body, sizeof(body)), 0);
	assert_string_equal(take_dead_reason(&len), "too-large");
	assert_int_equal(len, 0);
	assert_int_equal(atomic_load(&echoes), 0);
}

/* ------------------------------------------------------------ 7: routing dead letters */

/* Requests that reached rpc.example through the default exchange (routing
 * key "rpc.example"), with and without a type: their dead letters are
 * routed by method to rpc.example.dlq, not lost under the queue's name. */
static void test_poison_from_the_default_exchange_is_dead_lettered_by_method(void **state)
{
	amqp_basic_properties_t typed = props("dx-typed", "example.nope");
	amqp_basic_properties_t untyped = props("dx-untyped", NULL);
	amqp_message_t msg;
	int unknown = 0;

	start_worker(NULL);
	publish_to("", "rpc.example", &typed, "{}", 2);
	publish_to("", "rpc.example", &untyped, "{}", 2);
	assert_int_equal(raw_await_count(raw, "rpc.example.dlq", 2, 10000), 2);
	while (raw_get(raw, "rpc.example.dlq", &msg) == 0) {
		const char *r = raw_header(&msg.properties, "rpc-dead-reason");

		unknown += r != NULL && strcmp(r, "unknown-method") == 0;
		amqp_destroy_message(&msg);
	}
	assert_int_equal(unknown, 2);
	assert_int_equal(stats().dead_lettered, 2);
}

static int rebind_dlq(void **state)
{
	amqp_queue_bind(raw_conn(raw), 1, amqp_cstring_bytes("rpc.example.dlq"),
	                amqp_cstring_bytes("rpc.dlx"), amqp_cstring_bytes("example.#"),
	                amqp_empty_table);
	return done(state);
}

/* An operator removed the DLQ's binding: a dead letter comes back
 * unroutable, so its request is neither acked nor counted; it stays with
 * the worker (unacked), goes back to the queue when the worker stops, and
 * reaches the DLQ once the binding is back. */
static void test_an_unroutable_dead_letter_keeps_its_request(void **state)
{
	amqp_basic_properties_t p = props("unbound-1", "example.nope");
	size_t len;

	start_worker(NULL);
	assert_non_null(amqp_queue_unbind(raw_conn(raw), 1, amqp_cstring_bytes("rpc.example.dlq"),
	                                  amqp_cstring_bytes("rpc.dlx"),
	                                  amqp_cstring_bytes("example.#"), amqp_empty_table));
	assert_int_equal(raw_publish(raw, "example.nope", &p, "{}", 2), 0);
	want_received = 1;
	assert_true(await(received_enough, 10000));
	sleep(2); /* time enough to dead-letter it, and then some */
	assert_int_equal(stats().dead_lettered, 0);
	assert_true(stats().unroutable >= 1);
	assert_int_equal(stats().acked, 0);
	assert_int_equal(raw_queue_count(raw, "rpc.example.dlq"), 0);
	/* Stopped, the worker gives it back: it was never acked. */
	warren_worker_stop(worker, 200);
	warren_worker_free(worker);
	worker = NULL;
	assert_int_equal(raw_await_count(raw, "rpc.example", 1, 10000), 1);
	/* With the binding back, the next worker dead-letters it for good. */
	assert_non_null(amqp_queue_bind(raw_conn(raw), 1, amqp_cstring_bytes("rpc.example.dlq"),
	                                amqp_cstring_bytes("rpc.dlx"),
	                                amqp_cstring_bytes("example.#"), amqp_empty_table));
	start_worker(NULL);
	assert_string_equal(take_dead_reason(&len), "unknown-method");
	assert_int_equal(stats().dead_lettered, 1);
}

static bool ran_twice(void)
{
	return atomic_load(&flaky_runs) >= 2;
}

/* A transient failure of a request that came through the default exchange:
 * its retry waits in a delay tier and comes back under its method, so its
 * second attempt runs (under the queue's name no binding would take it back). */
static void test_a_retry_of_a_request_from_the_default_exchange_comes_back(void **state)
{
	amqp_basic_properties_t p = props("dx-flaky", "example.flaky");

	start_worker(NULL);
	publish_to("", "rpc.example", &p, "{}", 2);
	assert_true(await(ran_twice, 10000));
	assert_int_equal(stats().retried, 1);
	assert_int_equal(raw_queue_count(raw, "rpc.example.dlq"), 0);
}

/* The delay tiers a first retry may use (250 to 500 ms). */
static const char *const first_tiers[] = {"rpc.delay.250ms", "rpc.delay.500ms"};

static int rebind_tiers(void **state)
{
	for (int i = 0; i < 2; i++) {
		amqp_queue_bind(raw_conn(raw), 1, amqp_cstring_bytes(first_tiers[i]),
		                amqp_cstring_bytes(first_tiers[i]), amqp_cstring_bytes(""),
		                amqp_empty_table);
	}
	return done(state);
}

/* A retry no delay tier takes comes back unroutable: the request is kept,
 * not acked, and its retry goes through once the tier is bound again. */
static void test_an_unroutable_retry_keeps_its_request(void **state)
{
	amqp_basic_properties_t p = props("unbound-retry", "example.flaky");

	start_worker(NULL);
	for (int i = 0; i < 2; i++) {
		assert_non_null(amqp_queue_unbind(
		    raw_conn(raw), 1, amqp_cstring_bytes(first_tiers[i]),
		    amqp_cstring_bytes(first_tiers[i]), amqp_cstring_bytes(""), amqp_empty_table));
	}
	assert_int_equal(raw_publish(raw, "example.flaky", &p, "{}", 2), 0);
	sleep(2);
	assert_int_equal(atomic_load(&flaky_runs), 1);
	assert_int_equal(stats().retried, 0);
	assert_int_equal(stats().acked, 0);
	assert_true(stats().unroutable >= 1);
	for (int i = 0; i < 2; i++) {
		assert_non_null(amqp_queue_bind(
		    raw_conn(raw), 1, amqp_cstring_bytes(first_tiers[i]),
		    amqp_cstring_bytes(first_tiers[i]), amqp_cstring_bytes(""), amqp_empty_table));
	}
	assert_true(await(ran_twice, 15000));
	assert_int_equal(stats().retried, 1);
}

/* ------------------------------------------------------------ 8: message size */

/* A body above message.max_size is dead-lettered "too-large" as it
 * arrives, its body not kept, and its handler never runs; its caller is
 * answered INVALID_ARGUMENT (this worker checks no signatures). */
static void test_a_request_above_max_size_is_dead_lettered_too_large_unrun(void **state)
{
	const size_t n = 64 * 1024;
	char *body = malloc(n + 16);
	amqp_basic_properties_t p = props("big-1", "example.echo");
	amqp_envelope_t env;
	const char *why = "body of 65544 bytes is larger than message.max_size (1024)";
	size_t len = 1;

	start_worker((const char *const[]){"message.max_size=1k", NULL});
	assert_int_equal(raw_consume_replies(raw), 0);
	p._flags |= AMQP_BASIC_REPLY_TO_FLAG;
	p.reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to");
	memcpy(body, "{\"s\":\"", 6);
	memset(body + 6, 'a', n);
	memcpy(body + 6 + n, "\"}", 2);
	assert_int_equal(raw_publish(raw, "example.echo", &p, body, n + 8), 0);
	free(body);
	assert_int_equal(raw_wait(raw, 10000, &env), 0);
	assert_string_equal(raw_header(&env.message.properties, "rpc-status"), "3");
	assert_non_null(memmem(env.message.body.bytes, env.message.body.len, why, strlen(why)));
	amqp_destroy_envelope(&env);
	assert_string_equal(take_dead_reason(&len), "too-large");
	assert_int_equal(len, 0);
	assert_int_equal(atomic_load(&echoes), 0);
	/* A request within the limit still runs. */
	p = props("small-1", "example.echo");
	assert_int_equal(raw_publish(raw, "example.echo", &p, "{}", 2), 0);
	for (int i = 0; i < 500 && atomic_load(&echoes) == 0; i++) {
		usleep(20000);
	}
	assert_int_equal(atomic_load(&echoes), 1);
}

/* ------------------------------------------------------------ 9: stuck handlers */

static atomic_bool freed;

static void *stop_and_free(void *arg)
{
	warren_worker_stop(worker, 500);
	warren_worker_free(worker);
	atomic_store(&freed, true);
	return NULL;
}

static bool is_freed(void)
{
	return atomic_load(&freed);
}

/* A handler stuck far past its time limit: stopping and freeing the
 * worker end within the grace plus a bound; the stuck thread is left
 * behind (reported) and touches nothing freed when it finally returns. */
static void test_freeing_a_worker_with_a_stuck_handler_ends_within_grace_and_a_bound(void **state)
{
	amqp_basic_properties_t p = props("stuck-1", "example.stuck");
	pthread_t t;
	bool in_time;

	atomic_store(&freed, false);
	start_worker((const char *const[]){"worker.handler_timeout=1s", "worker.threads=1", NULL});
	assert_int_equal(raw_publish(raw, "example.stuck", &p, "{}", 2), 0);
	assert_true(await(entered, 10000));
	usleep(1500000); /* past its limit: answered for, still running */
	assert_int_equal(pthread_create(&t, NULL, stop_and_free, NULL), 0);
	/* Grace 500 ms plus a bound of a second or so; 10 s is generous. */
	in_time = await(is_freed, 10000);
	/* Let it go, so that a hanging free ends and the test can. */
	atomic_store(&gate_open, true);
	pthread_join(t, NULL);
	worker = NULL;
	assert_true(in_time);
	/* The detached handler returns into freed worker state, or not. */
	for (int i = 0; i < 500 && !atomic_load(&stuck_returned); i++) {
		usleep(10000);
	}
	assert_true(atomic_load(&stuck_returned));
	usleep(300000);
}

/* Before it is freed, the worker says how many threads it left behind. */
static void test_a_stop_that_leaves_a_stuck_handler_behind_reports_it(void **state)
{
	amqp_basic_properties_t p = props("stuck-2", "example.stuck");
	int64_t t0;

	start_worker((const char *const[]){"worker.handler_timeout=1s", "worker.threads=1", NULL});
	assert_int_equal(raw_publish(raw, "example.stuck", &p, "{}", 2), 0);
	assert_true(await(entered, 10000));
	t0 = testenv_mono_ms();
	assert_int_equal(warren_worker_stop(worker, 300), WARREN_ERR_TIMEOUT);
	assert_true(testenv_mono_ms() - t0 < 10000);
	assert_int_equal(stats().detached_handlers, 1);
	warren_worker_free(worker);
	worker = NULL;
	atomic_store(&gate_open, true);
	for (int i = 0; i < 500 && !atomic_load(&stuck_returned); i++) {
		usleep(10000);
	}
	usleep(300000);
}

/* ------------------------------------------------------------ 11: lost connections */

/* One handler thread busy, three requests queued behind it, and the
 * connection is closed: the queued ones are dropped (the broker gives them
 * to the new connection), so each runs once; the busy one ran once per
 * delivery that reached a handler. */
static void test_queued_requests_of_a_lost_connection_do_not_run(void **state)
{
	start_worker((const char *const[]){"worker.threads=1", "worker.prefetch=4", NULL});
	publish_gate(0, true);
	assert_true(await(entered, 10000));
	for (int i = 1; i <= 3; i++) {
		publish_gate(i, false);
	}
	want_received = 4;
	assert_true(await(received_enough, 10000));
	close_connections();
	want_received = 8;
	assert_true(await(received_enough, 10000));
	atomic_store(&gate_open, true);
	assert_true(await(idle, 15000));
	assert_int_equal(atomic_load(&runs[0]), 2);
	for (int i = 1; i <= 3; i++) {
		assert_int_equal(atomic_load(&runs[i]), 1);
	}
	assert_true(stats().stale_dropped >= 3);
	assert_int_equal(raw_queue_count(raw, "rpc.example.dlq"), 0);
}

/* worker.crash_limit=1: a request the worker held (queued or running) each
 * time its connection was lost came back with x-delivery-count raised by
 * every reconnect; it crashed no worker, and runs. */
static void test_requeues_by_reconnects_do_not_count_as_crashes(void **state)
{
	start_worker((const char *const[]){"worker.threads=1", "worker.prefetch=2",
	                                   "worker.crash_limit=1", NULL});
	publish_gate(0, true);
	assert_true(await(entered, 10000));
	publish_gate(1, false);
	want_received = 2;
	assert_true(await(received_enough, 10000));
	close_connections();
	want_received = 4;
	assert_true(await(received_enough, 10000));
	close_connections();
	want_received = 6;
	assert_true(await(received_enough, 10000));
	atomic_store(&gate_open, true);
	assert_true(await(idle, 15000));
	assert_int_equal(raw_queue_count(raw, "rpc.example.dlq"), 0);
	assert_int_equal(stats().dead_lettered, 0);
	assert_int_equal(atomic_load(&runs[1]), 1);
	assert_true(atomic_load(&runs[0]) >= 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
	        test_poison_from_the_default_exchange_is_dead_lettered_by_method, fresh, done),
	    cmocka_unit_test_setup_teardown(test_an_unroutable_dead_letter_keeps_its_request, fresh,
	                                    rebind_dlq),
	    cmocka_unit_test_setup_teardown(
	        test_a_retry_of_a_request_from_the_default_exchange_comes_back, fresh, done),
	    cmocka_unit_test_setup_teardown(test_an_unroutable_retry_keeps_its_request, fresh,
	                                    rebind_tiers),
	    cmocka_unit_test_setup_teardown(
	        test_a_request_above_max_size_is_dead_lettered_too_large_unrun, fresh, done),
	    cmocka_unit_test_setup_teardown(
	        test_a_request_just_above_max_size_is_dead_lettered_without_its_body, fresh, done),
	    cmocka_unit_test_setup_teardown(
	        test_freeing_a_worker_with_a_stuck_handler_ends_within_grace_and_a_bound, fresh,
	        done),
	    cmocka_unit_test_setup_teardown(
	        test_a_stop_that_leaves_a_stuck_handler_behind_reports_it, fresh, done),
	    cmocka_unit_test_setup_teardown(test_queued_requests_of_a_lost_connection_do_not_run,
	                                    fresh, done),
	    cmocka_unit_test_setup_teardown(test_requeues_by_reconnects_do_not_count_as_crashes,
	                                    fresh, done),
	};

	return cmocka_run_group_tests_name("worker_faults", tests, setup, teardown);
}
