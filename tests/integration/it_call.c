/* it_call.c: the caller against a real broker and a real example-service
 * process: round trips, error statuses, unroutable methods, deadlines, a
 * 10,000-call async run, and a worker restarted while calls are in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testenv.h"

static pid_t worker_pid;
static warren_client *client;

static int setup(void **state)
{
	warren_config *cfg = testenv_config(NULL);
	char why[300];

	worker_pid = testenv_spawn("example-service", (const char *const[]){"-o", "worker.threads=4", NULL}, true);
	if (warren_client_new(cfg, "it_call", &client, why, sizeof(why)) != WARREN_OK) {
		fprintf(stderr, "client: %s\n", why);
		return -1;
	}
	warren_config_free(cfg);
	return 0;
}

static int teardown(void **state)
{
	warren_client_free(client);
	if (worker_pid > 0) {
		testenv_stop(worker_pid, SIGTERM);
	}
	return 0;
}

static warren_value *json(const char *text)
{
	warren_value *v = NULL;

	assert_int_equal(warren_value_from_json(text, strlen(text), &v, NULL, 0), WARREN_OK);
	return v;
}

static void assert_json(const warren_value *v, const char *want)
{
	char *text = NULL;

	assert_int_equal(warren_value_to_json(v, &text, NULL, 0), WARREN_OK);
	assert_string_equal(text, want);
	free(text);
}

static void test_echo_round_trip_returns_the_params(void **state)
{
	warren_value *p = json("{\"name\":\"Ada\",\"n\":[1,2.5,true,null],\"m\":{\"k\":\"v\"}}");
	warren_reply *reply = NULL;
	char why[300];

	assert_int_equal(warren_call(client, "example.echo", p, NULL, &reply, why, sizeof(why)),
	                 WARREN_OK);
	assert_int_equal(warren_reply_status(reply), WARREN_STATUS_OK);
	assert_true(warren_value_equal(warren_reply_result(reply), p));
	assert_string_equal(warren_reply_message(reply), "");
	warren_reply_free(reply);
	warren_value_free(p);
}

static void test_json_on_the_wire_is_answered_in_json(void **state)
{
	warren_value *p = json("{\"text\":\"h\\u00e9llo\"}");
	warren_call_opts o = {.json = true};
	warren_reply *reply = NULL;

	assert_int_equal(warren_call(client, "example.echo", p, &o, &reply, NULL, 0), WARREN_OK);
	assert_json(warren_reply_result(reply), "{\"text\":\"h\xc3\xa9llo\"}");
	warren_reply_free(reply);
	warren_value_free(p);
}

static void test_handler_error_arrives_as_its_status_message_and_details(void **state)
{
	warren_value *p = json("{\"code\":\"NOT_FOUND\",\"message\":\"no user 42\",\"details\":{\"id\":42}}");
	warren_reply *reply = NULL;

	assert_int_equal(warren_call(client, "example.fail", p, NULL, &reply, NULL, 0),
	                 WARREN_ERR_REMOTE);
	assert_int_equal(warren_reply_status(reply), WARREN_STATUS_NOT_FOUND);
	assert_string_equal(warren_reply_message(reply), "no user 42");
	assert_json(warren_reply_result(reply), "{\"id\":42}");
	warren_reply_free(reply);
	warren_value_free(p);
}

static void test_invalid_params_are_invalid_argument(void **state)
{
	warren_value *p = json("{\"ms\":\"soon\"}");
	warren_reply *reply = NULL;

	assert_int_equal(warren_call(client, "example.sleep", p, NULL, &reply, NULL, 0),
	                 WARREN_ERR_REMOTE);
	assert_int_equal(warren_reply_status(reply), WARREN_STATUS_INVALID_ARGUMENT);
	assert_string_equal(warren_reply_message(reply),
	                    "field ms: expected an integer from 0 to 600000");
	warren_reply_free(reply);
	warren_value_free(p);
}

static void test_unknown_method_is_unimplemented(void **state)
{
	warren_reply *reply = NULL;

	assert_int_equal(warren_call(client, "example.nosuch", NULL, NULL, &reply, NULL, 0),
	                 WARREN_ERR_REMOTE);
	assert_int_equal(warren_reply_status(reply), WARREN_STATUS_UNIMPLEMENTED);
	assert_string_equal(warren_reply_message(reply), "unknown method example.nosuch");
	warren_reply_free(reply);
}

static void test_method_without_a_queue_fails_at_once_not_at_the_deadline(void **state)
{
	warren_call_opts o = {.timeout_ms = 10000};
	warren_reply *reply = NULL;
	char why[300];
	int64_t t0 = testenv_mono_ms();

	assert_int_equal(warren_call(client, "nosuch.method", NULL, &o, &reply, why, sizeof(why)),
	                 WARREN_ERR_UNROUTABLE);
	assert_null(reply);
	/* Published three times (client.retry_attempts) within 100 + 200 ms
	 * of back-off and its jitter: long before the deadline. */
	assert_string_equal(why, "no queue is bound for method nosuch.method (312 NO_ROUTE), after "
	                         "3 attempts");
	assert_true(testenv_mono_ms() - t0 < 2000);
}

static warren_status echo_attempt(warren_request *req, void *arg)
{
	warren_value *r = warren_map();

	warren_map_set(r, "attempt", warren_int(warren_request_attempt(req)));
	warren_request_set_result(req, r);
	return WARREN_STATUS_OK;
}

/* The service's queue appears while the call is still retrying (a service
 * being deployed): the call succeeds, with one request processed. */
static void *start_late_service(void *arg)
{
	warren_worker **w = arg;
	warren_config *cfg = testenv_config((const char *const[]){"worker.service=lateservice", NULL});

	usleep(150000);
	assert_int_equal(warren_worker_new(cfg, w, NULL, 0), WARREN_OK);
	assert_int_equal(warren_worker_handle(*w, "lateservice.echo", echo_attempt, NULL), WARREN_OK);
	assert_int_equal(warren_worker_start(*w, NULL, 0), WARREN_OK);
	warren_config_free(cfg);
	return NULL;
}

static void test_a_request_is_published_again_until_its_queue_appears(void **state)
{
	warren_config *cfg = testenv_config((const char *const[]){"client.retry_attempts=10", NULL});
	warren_call_opts o = {.timeout_ms = 10000};
	warren_client *c = NULL;
	warren_worker *w = NULL;
	warren_reply *reply = NULL;
	warren_client_stats st;
	pthread_t t;
	char why[300] = "";
	int64_t attempt = 0;

	assert_int_equal(warren_client_new(cfg, "it_call_late", &c, NULL, 0), WARREN_OK);
	pthread_create(&t, NULL, start_late_service, &w);
	assert_int_equal(warren_call(c, "lateservice.echo", NULL, &o, &reply, why, sizeof(why)),
	                 WARREN_OK);
	pthread_join(t, NULL);
	/* The copy that got through is the same attempt of the same call:
	 * a caller's republish keeps rpc-attempt (warren(7)). */
	assert_true(warren_value_get_int(warren_map_get(warren_reply_result(reply), "attempt"),
	                                 &attempt));
	assert_int_equal(attempt, 1);
	warren_client_get_stats(c, &st);
	assert_true(st.republished >= 1);
	assert_int_equal(st.unroutable, 0);
	warren_reply_free(reply);
	warren_client_free(c);
	warren_worker_free(w);
	warren_config_free(cfg);
	/* Leave no service behind the test. */
	struct raw *r = raw_connect();
	amqp_queue_delete(raw_conn(r), 1, amqp_cstring_bytes("rpc.lateservice"), 0, 0);
	amqp_queue_delete(raw_conn(r), 1, amqp_cstring_bytes("rpc.lateservice.dlq"), 0, 0);
	raw_close(r);
}

/* The traceparent a call carries: the caller's trace continued (same trace
 * id and flags, a span of its own), or a new trace. */
static void test_a_call_carries_its_trace_to_the_handler(void **state)
{
	const char *parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
	warren_reply *reply = NULL;
	const char *tp;
	size_t len;

	assert_int_equal(warren_call(client, "example.trace", NULL,
	                             &(warren_call_opts){.timeout_ms = 5000, .traceparent = parent},
	                             &reply, NULL, 0),
	                 WARREN_OK);
	assert_true(warren_value_get_str(warren_map_get(warren_reply_result(reply), "traceparent"),
	                                 &tp, &len));
	assert_int_equal(len, 55);
	assert_memory_equal(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36);
	assert_memory_not_equal(tp + 36, "00f067aa0ba902b7", 16);
	assert_string_equal(tp + 52, "-01");
	warren_reply_free(reply);

	assert_int_equal(warren_call(client, "example.trace", NULL, NULL, &reply, NULL, 0), WARREN_OK);
	assert_true(warren_value_get_str(warren_map_get(warren_reply_result(reply), "traceparent"),
	                                 &tp, &len));
	assert_int_equal(len, 55);
	assert_memory_equal(tp, "00-", 3);
	assert_memory_not_equal(tp + 3, "4bf92f3577b34da6a3ce929d0e0e4736", 32);
	warren_reply_free(reply);
}

static void test_one_way_send_is_confirmed(void **state)
{
	char why[300];

	assert_int_equal(warren_send(client, "example.echo", NULL, NULL, why, sizeof(why)), WARREN_OK);
}

/* Durable by default; transient for the methods of client.transient and
 * for a call that asks (opts.transient): what the queue receives. */
static void test_durability_is_chosen_per_method_and_per_call(void **state)
{
	warren_config *cfg =
	    testenv_config((const char *const[]){"client.transient=durability.read*, other.*", NULL});
	struct raw *r = raw_connect();
	amqp_connection_state_t conn = raw_conn(r);
	const warren_call_opts transient = {.transient = true};
	const struct {
		const char *method;
		const warren_call_opts *opts;
		int mode;
	} sends[] = {
	    {"durability.write", NULL, 2},
	    {"durability.read_user", NULL, 1},
	    {"durability.write", &transient, 1},
	};
	warren_client *c = NULL;
	amqp_message_t msg;
	char why[300];

	assert_int_equal(warren_client_new(cfg, "it_call", &c, why, sizeof(why)), WARREN_OK);
	/* Exclusive: gone with the raw connection. */
	assert_non_null(amqp_queue_declare(conn, 1, amqp_cstring_bytes("it_call.durability"), 0, 0, 1,
	                                   0, amqp_empty_table));
	assert_non_null(amqp_queue_bind(conn, 1, amqp_cstring_bytes("it_call.durability"),
	                                amqp_cstring_bytes("rpc"), amqp_cstring_bytes("durability.#"),
	                                amqp_empty_table));
	for (size_t i = 0; i < sizeof(sends) / sizeof(sends[0]); i++) {
		assert_int_equal(warren_send(c, sends[i].method, NULL, sends[i].opts, why, sizeof(why)),
		                 WARREN_OK);
		assert_int_equal(raw_get(r, "it_call.durability", &msg), 0);
		assert_true(msg.properties._flags & AMQP_BASIC_DELIVERY_MODE_FLAG);
		assert_int_equal(msg.properties.delivery_mode, sends[i].mode);
		amqp_destroy_message(&msg);
	}
	warren_client_free(c);
	warren_config_free(cfg);
	raw_close(r);
}

static void test_bad_method_name_is_refused_locally(void **state)
{
	warren_reply *reply = NULL;
	char why[300];

	assert_int_equal(warren_call(client, "noservice", NULL, NULL, &reply, why, sizeof(why)),
	                 WARREN_ERR_INVALID);
	assert_string_equal(why, "method \"noservice\" must be SERVICE.NAME (at most 255 bytes)");
}


struct end_record {
	int calls;
	warren_err err;
};

static void record_end(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct end_record *r = arg;

	r->calls++;
	r->err = err;
	warren_reply_free(reply);
}

/* ---- the client's own limits and reply paths ---- */

static void free_reply_cb(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	warren_reply_free(reply);
}

static warren_value *sleep_params(int ms)
{
	warren_value *p = warren_map();

	warren_map_set(p, "ms", warren_int(ms));
	return p;
}

static void test_a_full_correlation_table_refuses_the_call_at_once(void **state)
{
	warren_config *cfg = testenv_config((const char *const[]){"client.max_in_flight=2", NULL});
	warren_value *p = sleep_params(500);
	warren_call_opts o = {.timeout_ms = 5000};
	warren_client *small = NULL;
	warren_reply *reply = NULL;
	char why[300];

	assert_int_equal(warren_client_new(cfg, "it_full", &small, why, sizeof(why)), WARREN_OK);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(warren_call_async(small, "example.sleep", p, &o, free_reply_cb, NULL,
		                                   NULL, 0),
		                 WARREN_OK);
	}
	assert_int_equal(warren_call(small, "example.echo", NULL, &o, &reply, why, sizeof(why)),
	                 WARREN_ERR_FULL);
	assert_string_equal(why, "too many calls in flight (client.max_in_flight)");
	warren_client_free(small);
	warren_value_free(p);
	warren_config_free(cfg);
}

static void test_a_named_reply_queue_carries_replies_too(void **state)
{
	warren_config *cfg = testenv_config((const char *const[]){"client.reply_mode=queue", NULL});
	warren_value *p = warren_map();
	warren_client *qc = NULL;
	warren_reply *reply = NULL;
	char why[300];

	warren_map_set(p, "via", warren_str("queue"));
	assert_int_equal(warren_client_new(cfg, "it_queue", &qc, why, sizeof(why)), WARREN_OK);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(warren_call(qc, "example.echo", p, NULL, &reply, why, sizeof(why)),
		                 WARREN_OK);
		assert_true(warren_value_equal(warren_reply_result(reply), p));
		warren_reply_free(reply);
	}
	warren_client_free(qc);
	warren_value_free(p);
	warren_config_free(cfg);
}

static void test_a_reply_after_the_deadline_is_dropped_and_counted_late(void **state)
{
	warren_value *p = sleep_params(300);
	warren_call_opts o = {.timeout_ms = 100};
	warren_client_stats before, after;
	warren_reply *reply = NULL;

	warren_client_get_stats(client, &before);
	assert_int_equal(warren_call(client, "example.sleep", p, &o, &reply, NULL, 0),
	                 WARREN_ERR_TIMEOUT);
	assert_null(reply);
	for (int i = 0; i < 100; i++) {
		warren_client_get_stats(client, &after);
		if (after.late_replies > before.late_replies) {
			break;
		}
		usleep(20000);
	}
	assert_int_equal(after.late_replies - before.late_replies, 1);
	assert_int_equal(after.timeouts - before.timeouts, 1);
	warren_value_free(p);
}

/* A queue that refuses every message (max-length 0, reject-publish), so the
 * broker nacks the publish. */
static void declare_refusing_queue(struct raw *r)
{
	amqp_table_entry_t args[2] = {
		{.key = amqp_cstring_bytes("x-max-length"),
		 .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 0}},
		{.key = amqp_cstring_bytes("x-overflow"),
		 .value = {.kind = AMQP_FIELD_KIND_UTF8,
		           .value.bytes = amqp_cstring_bytes("reject-publish")}},
	};
	amqp_connection_state_t conn = raw_conn(r);

	assert_non_null(amqp_queue_declare(conn, 1, amqp_cstring_bytes("test-refusing"), 0, 0, 0, 1,
	                                   (amqp_table_t){2, args}));
	assert_non_null(amqp_queue_bind(conn, 1, amqp_cstring_bytes("test-refusing"),
	                                amqp_cstring_bytes("rpc"), amqp_cstring_bytes("refusing.#"),
	                                amqp_empty_table));
}

static void test_a_request_the_broker_nacks_fails_at_once_as_unavailable(void **state)
{
	struct raw *r = raw_connect();
	warren_call_opts o = {.timeout_ms = 10000};
	warren_reply *reply = NULL;
	int64_t t0 = testenv_mono_ms();
	warren_err err;
	char why[300];

	declare_refusing_queue(r);
	err = warren_call(client, "refusing.call", NULL, &o, &reply, why, sizeof(why));
	assert_int_equal(err, WARREN_ERR_BROKER);
	assert_int_equal(warren_err_status(err), WARREN_STATUS_UNAVAILABLE);
	assert_string_equal(why, "the broker refused the request for refusing.call (nack), after 3 "
	                         "attempts");
	assert_true(testenv_mono_ms() - t0 < 5000);
	raw_close(r);
}

struct ended {
	atomic_int n;
	atomic_int err;
};

static void on_end(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct ended *d = arg;

	atomic_store(&d->err, err);
	warren_reply_free(reply);
	atomic_fetch_add(&d->n, 1);
}

/* A memory alarm: the broker blocks publishers. A new call fails with
 * UNAVAILABLE after client.blocked_timeout instead of waiting for its
 * deadline; a call already made is answered (when its reply got through
 * depends on when the broker blocked the worker's connection), and after
 * the alarm new calls work again. */
static void test_a_broker_alarm_fails_new_calls_after_the_blocked_timeout(void **state)
{
	warren_config *cfg = testenv_config((const char *const[]){"client.blocked_timeout=300ms",
	                                                          NULL});
	warren_client *c = NULL;
	warren_reply *reply = NULL;
	warren_value *p = NULL;
	struct ended slow = {0};
	char why[300] = "";
	int64_t t0;
	warren_err err;

	assert_int_equal(warren_client_new(cfg, "it_call_alarm", &c, NULL, 0), WARREN_OK);
	assert_int_equal(warren_value_from_json("{\"ms\":300}", 10, &p, NULL, 0), WARREN_OK);
	assert_int_equal(warren_call_async(c, "example.sleep", p,
	                                   &(warren_call_opts){.timeout_ms = 20000}, on_end, &slow,
	                                   NULL, 0),
	                 WARREN_OK);
	usleep(100000); /* the worker has it */
	assert_int_equal(testenv_broker_ctl("set_vm_memory_high_watermark absolute 1"), 0);
	usleep(500000);
	t0 = testenv_mono_ms();
	err = warren_call(c, "example.echo", NULL, &(warren_call_opts){.timeout_ms = 10000}, &reply,
	                  why, sizeof(why));
	/* The first publish is what the broker blocks the connection on: it
	 * is written but not confirmed. */
	assert_int_equal(err, WARREN_ERR_BROKER);
	assert_int_equal(warren_err_status(err), WARREN_STATUS_UNAVAILABLE);
	assert_string_equal(why, "the broker refuses publishes (low on memory): not confirmed "
	                         "within 300 ms (client.blocked_timeout)");
	assert_true(testenv_mono_ms() - t0 < 2000);
	/* Later calls are held by the client, not written. */
	t0 = testenv_mono_ms();
	err = warren_call(c, "example.echo", NULL, &(warren_call_opts){.timeout_ms = 10000}, &reply,
	                  why, sizeof(why));
	assert_int_equal(err, WARREN_ERR_BROKER);
	assert_string_equal(why, "the broker refuses publishes (low on memory): not sent within "
	                         "300 ms (client.blocked_timeout)");
	assert_true(testenv_mono_ms() - t0 < 2000);

	assert_int_equal(testenv_broker_ctl("set_vm_memory_high_watermark 0.4"), 0);
	for (int i = 0; i < 100 && atomic_load(&slow.n) == 0; i++) {
		usleep(50000);
	}
	assert_int_equal(atomic_load(&slow.n), 1);
	assert_int_equal(atomic_load(&slow.err), WARREN_OK);
	assert_int_equal(warren_call(c, "example.echo", NULL, &(warren_call_opts){.timeout_ms = 5000},
	                             &reply, why, sizeof(why)),
	                 WARREN_OK);
	warren_reply_free(reply);
	warren_value_free(p);
	warren_client_free(c);
	warren_config_free(cfg);
}

/* Sends sig to the broker's Erlang VM (SIGSTOP freezes it, SIGCONT thaws
 * it); -1 when its pid file cannot be read. */
static int broker_signal(int sig)
{
	char path[512];
	FILE *f;
	long pid = 0;
	int n;

	snprintf(path, sizeof(path), "%s/rabbitmq.pid", getenv("WARREN_TEST_BROKER_DIR"));
	f = fopen(path, "r");
	if (f == NULL) {
		return -1;
	}
	n = fscanf(f, "%ld", &pid);
	fclose(f);
	return n == 1 ? kill((pid_t)pid, sig) : -1;
}

/* A broker that stops answering (frozen, not closed: no FIN ever comes) is
 * found dead by the heartbeats within two intervals; the call whose reply
 * path it was does not fail: the client reconnects once the broker is
 * back and sends it again (client.resend), and it is answered. */
static void test_a_frozen_broker_is_found_dead_within_two_heartbeats(void **state)
{
	warren_config *cfg = testenv_config((const char *const[]){"broker.heartbeat=1s", NULL});
	warren_client *c = NULL;
	warren_reply *reply = NULL;
	warren_value *p = NULL;
	struct ended slow = {0};
	warren_client_stats st;
	int64_t t0;

	assert_int_equal(warren_client_new(cfg, "it_call_frozen", &c, NULL, 0), WARREN_OK);
	assert_int_equal(warren_value_from_json("{\"ms\":2000}", 11, &p, NULL, 0), WARREN_OK);
	assert_int_equal(warren_call_async(c, "example.sleep", p,
	                                   &(warren_call_opts){.timeout_ms = 30000}, on_end, &slow,
	                                   NULL, 0),
	                 WARREN_OK);
	usleep(300000);
	assert_int_equal(broker_signal(SIGSTOP), 0);
	t0 = testenv_mono_ms();
	for (int i = 0; i < 200; i++) {
		warren_client_get_stats(c, &st);
		if (!st.connected) {
			break;
		}
		usleep(20000);
	}
	int64_t found = testenv_mono_ms() - t0;
	assert_int_equal(broker_signal(SIGCONT), 0);
	printf("# frozen broker found dead after %lld ms (heartbeat 1000 ms)\n", (long long)found);
	assert_false(st.connected);
	assert_true(found <= 2500);
	assert_int_equal(atomic_load(&slow.n), 0);
	/* Back: the client reconnects, the call is sent again and answered,
	 * and calls work again. */
	for (int i = 0; i < 1000 && atomic_load(&slow.n) == 0; i++) {
		usleep(20000);
	}
	assert_int_equal(atomic_load(&slow.n), 1);
	assert_int_equal(atomic_load(&slow.err), WARREN_OK);
	warren_client_get_stats(c, &st);
	assert_int_equal(st.resent, 1);
	assert_true(st.reconnects >= 1);
	assert_int_equal(warren_call(c, "example.echo", NULL,
	                             &(warren_call_opts){.timeout_ms = 5000}, &reply, NULL, 0),
	                 WARREN_OK);
	warren_reply_free(reply);
	warren_value_free(p);
	warren_client_free(c);
	warren_config_free(cfg);
}

static int thaw_broker(void **state)
{
	broker_signal(SIGCONT);
	return 0;
}

static int clear_alarm(void **state)
{
	testenv_broker_ctl("set_vm_memory_high_watermark 0.4");
	return 0;
}

static void test_freeing_the_client_ends_pending_calls_as_closed(void **state)
{
	warren_config *cfg = testenv_config(NULL);
	warren_value *p = sleep_params(1000);
	warren_call_opts o = {.timeout_ms = 10000};
	warren_client *short_lived = NULL;
	struct end_record run = {0};

	assert_int_equal(warren_client_new(cfg, "it_closed", &short_lived, NULL, 0), WARREN_OK);
	assert_int_equal(warren_call_async(short_lived, "example.sleep", p, &o, record_end, &run,
	                                   NULL, 0),
	                 WARREN_OK);
	usleep(100000);
	warren_client_free(short_lived);
	assert_int_equal(run.calls, 1);
	assert_int_equal(run.err, WARREN_ERR_CLOSED);
	warren_value_free(p);
	warren_config_free(cfg);
}

/* ---- many calls in flight ---- */

#define ASYNC_CALLS 10000
#define IN_FLIGHT 256

struct run {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int in_flight, done, wrong, failed;
	int64_t started[ASYNC_CALLS];
	int64_t latency[ASYNC_CALLS];
};

struct slot {
	struct run *run;
	int i;
};

static void on_done(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct slot *s = arg;
	struct run *r = s->run;
	int64_t got = -1;

	if (err == WARREN_OK) {
		warren_value_get_int(warren_map_get(warren_reply_result(reply), "i"), &got);
	}
	pthread_mutex_lock(&r->mu);
	r->latency[s->i] = testenv_mono_ms() - r->started[s->i];
	if (err != WARREN_OK) {
		r->failed++;
	} else if (got != s->i) {
		r->wrong++;
	}
	r->done++;
	r->in_flight--;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->mu);
	warren_reply_free(reply);
	free(s);
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static void test_10000_async_calls_256_in_flight_each_get_their_own_result(void **state)
{
	struct run *r = calloc(1, sizeof(*r));
	int64_t t0 = testenv_mono_ms();

	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cond, NULL);
	for (int i = 0; i < ASYNC_CALLS; i++) {
		struct slot *s = malloc(sizeof(*s));
		warren_value *p = warren_map();
		warren_call_opts o = {.timeout_ms = 30000};

		warren_map_set(p, "i", warren_int(i));
		*s = (struct slot){.run = r, .i = i};
		pthread_mutex_lock(&r->mu);
		while (r->in_flight >= IN_FLIGHT) {
			pthread_cond_wait(&r->cond, &r->mu);
		}
		r->in_flight++;
		r->started[i] = testenv_mono_ms();
		pthread_mutex_unlock(&r->mu);
		assert_int_equal(warren_call_async(client, "example.echo", p, &o, on_done, s, NULL, 0),
		                 WARREN_OK);
		warren_value_free(p);
	}
	pthread_mutex_lock(&r->mu);
	while (r->done < ASYNC_CALLS) {
		pthread_cond_wait(&r->cond, &r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	int64_t elapsed = testenv_mono_ms() - t0;
	qsort(r->latency, ASYNC_CALLS, sizeof(int64_t), cmp64);
	printf("# async: %d calls, %d in flight, %.0f calls/s, p50 %lld ms, p99 %lld ms\n",
	       ASYNC_CALLS, IN_FLIGHT, ASYNC_CALLS * 1000.0 / (double)(elapsed > 0 ? elapsed : 1),
	       (long long)r->latency[ASYNC_CALLS / 2], (long long)r->latency[ASYNC_CALLS * 99 / 100]);
	assert_int_equal(r->failed, 0);
	assert_int_equal(r->wrong, 0);
	free(r);
}

/* Large replies, many in flight: the worker recycles its large reply
 * buffers (job.c, worker_spare_*), and each reply must still be its own
 * call's bytes, never a buffer reused while another reply was in it. */
#define LARGE_CALLS 300
#define LARGE_BYTES 65536

static void fill_large(unsigned char *p, int i)
{
	for (size_t k = 0; k < LARGE_BYTES; k++) {
		p[k] = (unsigned char)(k * 31 + (size_t)i * 7 + 1);
	}
}

static void on_large_done(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct slot *s = arg;
	struct run *r = s->run;
	const warren_value *res = warren_reply_result(reply);
	unsigned char *want = malloc(LARGE_BYTES);
	const void *got = NULL;
	size_t len = 0;
	int64_t i = -1;

	fill_large(want, s->i);
	if (err == WARREN_OK) {
		warren_value_get_int(warren_map_get(res, "i"), &i);
		warren_value_get_bin(warren_map_get(res, "blob"), &got, &len);
	}
	pthread_mutex_lock(&r->mu);
	if (err != WARREN_OK) {
		r->failed++;
	} else if (i != s->i || len != LARGE_BYTES || memcmp(got, want, LARGE_BYTES) != 0) {
		r->wrong++;
	}
	r->done++;
	r->in_flight--;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->mu);
	free(want);
	warren_reply_free(reply);
	free(s);
}

static void test_large_replies_many_in_flight_each_come_back_intact(void **state)
{
	struct run *r = calloc(1, sizeof(*r));
	unsigned char *blob = malloc(LARGE_BYTES);

	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cond, NULL);
	for (int i = 0; i < LARGE_CALLS; i++) {
		struct slot *s = malloc(sizeof(*s));
		warren_value *p = warren_map();
		warren_call_opts o = {.timeout_ms = 30000};

		fill_large(blob, i);
		warren_map_set(p, "i", warren_int(i));
		warren_map_set(p, "blob", warren_bin(blob, LARGE_BYTES));
		*s = (struct slot){.run = r, .i = i};
		pthread_mutex_lock(&r->mu);
		while (r->in_flight >= 64) {
			pthread_cond_wait(&r->cond, &r->mu);
		}
		r->in_flight++;
		pthread_mutex_unlock(&r->mu);
		assert_int_equal(
		    warren_call_async(client, "example.echo", p, &o, on_large_done, s, NULL, 0),
		    WARREN_OK);
		warren_value_free(p);
	}
	pthread_mutex_lock(&r->mu);
	while (r->done < LARGE_CALLS) {
		pthread_cond_wait(&r->cond, &r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	assert_int_equal(r->failed, 0);
	assert_int_equal(r->wrong, 0);
	free(blob);
	free(r);
}

/* ---- deadlines and a worker going away ---- */

static void test_call_with_no_worker_ends_with_deadline_exceeded_near_its_deadline(void **state)
{
	warren_call_opts o = {.timeout_ms = 1000};
	warren_reply *reply = NULL;
	char why[300];
	int64_t t0, elapsed;

	assert_int_equal(testenv_stop(worker_pid, SIGTERM), 0);
	worker_pid = 0;
	t0 = testenv_mono_ms();
	assert_int_equal(warren_call(client, "example.echo", NULL, &o, &reply, why, sizeof(why)),
	                 WARREN_ERR_TIMEOUT);
	elapsed = testenv_mono_ms() - t0;
	assert_string_equal(why, "no reply within 1000 ms");
	printf("# deadline 1000 ms, ended after %lld ms\n", (long long)elapsed);
	assert_true(elapsed >= 995);
	assert_true(elapsed <= 1300);
	worker_pid = testenv_spawn("example-service", NULL, true);
}

struct steady {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int started, ended, ok, timeouts, other, overdue;
	int64_t worst_overrun;
};

struct steady_call {
	struct steady *s;
	int64_t deadline;
};

static void steady_done(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct steady_call *c = arg;
	struct steady *s = c->s;
	int64_t over = testenv_mono_ms() - c->deadline;

	pthread_mutex_lock(&s->mu);
	s->ended++;
	s->ok += err == WARREN_OK;
	s->timeouts += err == WARREN_ERR_TIMEOUT;
	s->other += err != WARREN_OK && err != WARREN_ERR_TIMEOUT;
	if (over > s->worst_overrun) {
		s->worst_overrun = over;
	}
	s->overdue += over > 200;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->mu);
	warren_reply_free(reply);
	free(c);
}

static void start_steady_call(struct steady *s)
{
	struct steady_call *c = malloc(sizeof(*c));
	warren_call_opts o = {.timeout_ms = 2000};

	c->s = s;
	c->deadline = testenv_mono_ms() + o.timeout_ms;
	pthread_mutex_lock(&s->mu);
	s->started++;
	pthread_mutex_unlock(&s->mu);
	assert_int_equal(warren_call_async(client, "example.echo", NULL, &o, steady_done, c, NULL, 0),
	                 WARREN_OK);
}

static void restart_under_load(int sig)
{
	struct steady s = {.worst_overrun = INT64_MIN};

	pthread_mutex_init(&s.mu, NULL);
	pthread_cond_init(&s.cond, NULL);
	for (int i = 0; i < 300; i++) {
		start_steady_call(&s);
		if (i == 100) {
			testenv_stop(worker_pid, sig);
			worker_pid = 0;
		}
		if (i == 200) {
			worker_pid = testenv_spawn("example-service", NULL, false);
		}
		usleep(5000);
	}
	pthread_mutex_lock(&s.mu);
	while (s.ended < s.started) {
		pthread_cond_wait(&s.cond, &s.mu);
	}
	pthread_mutex_unlock(&s.mu);
	printf("# restart (signal %d): %d calls, %d ok, %d timed out, %d other, worst end %lld ms "
	       "after deadline\n",
	       sig, s.started, s.ok, s.timeouts, s.other, (long long)s.worst_overrun);
	assert_int_equal(s.ended, s.started);
	assert_int_equal(s.overdue, 0);
	assert_true(s.ok > 0);
}

static void test_worker_stopped_and_started_under_load_no_call_outlives_its_deadline(void **state)
{
	restart_under_load(SIGTERM);
}

static void test_worker_killed_and_started_under_load_no_call_outlives_its_deadline(void **state)
{
	restart_under_load(SIGKILL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_echo_round_trip_returns_the_params),
		cmocka_unit_test(test_json_on_the_wire_is_answered_in_json),
		cmocka_unit_test(test_handler_error_arrives_as_its_status_message_and_details),
		cmocka_unit_test(test_invalid_params_are_invalid_argument),
		cmocka_unit_test(test_unknown_method_is_unimplemented),
		cmocka_unit_test(test_method_without_a_queue_fails_at_once_not_at_the_deadline),
		cmocka_unit_test(test_a_request_is_published_again_until_its_queue_appears),
		cmocka_unit_test_teardown(test_a_broker_alarm_fails_new_calls_after_the_blocked_timeout,
		                          clear_alarm),
		cmocka_unit_test_teardown(test_a_frozen_broker_is_found_dead_within_two_heartbeats,
		                          thaw_broker),
		cmocka_unit_test(test_a_call_carries_its_trace_to_the_handler),
		cmocka_unit_test(test_one_way_send_is_confirmed),
		cmocka_unit_test(test_durability_is_chosen_per_method_and_per_call),
		cmocka_unit_test(test_bad_method_name_is_refused_locally),
		cmocka_unit_test(test_a_full_correlation_table_refuses_the_call_at_once),
		cmocka_unit_test(test_a_named_reply_queue_carries_replies_too),
		cmocka_unit_test(test_a_reply_after_the_deadline_is_dropped_and_counted_late),
		cmocka_unit_test(test_a_request_the_broker_nacks_fails_at_once_as_unavailable),
		cmocka_unit_test(test_freeing_the_client_ends_pending_calls_as_closed),
		cmocka_unit_test(test_10000_async_calls_256_in_flight_each_get_their_own_result),
		cmocka_unit_test(test_large_replies_many_in_flight_each_come_back_intact),
		cmocka_unit_test(test_call_with_no_worker_ends_with_deadline_exceeded_near_its_deadline),
		cmocka_unit_test(test_worker_stopped_and_started_under_load_no_call_outlives_its_deadline),
		cmocka_unit_test(test_worker_killed_and_started_under_load_no_call_outlives_its_deadline),
	};

	return cmocka_run_group_tests_name("it_call", tests, setup, teardown);
}
