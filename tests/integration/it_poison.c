/* it_poison.c: poison and transient failures end to end, with
 * example-service run by a supervisor (this test, restarting it whenever it
 * dies, as systemd would): transient failures that recover within the
 * attempts succeed once; those that do not are dead-lettered and their
 * caller told why at once; a request that crashes its worker every time is
 * dead-lettered after worker.crash_limit deliveries while the queue keeps
 * flowing; a mixed run ends with exactly its good replies and its poison in
 * the dead-letter queue, each with its reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "supervisor.h"
#include "testenv.h"
#include "warren.h"

static const char *const service_args[] = {
    "-o", "worker.threads=1", "-o", "worker.retry_attempts=3", "-o", "worker.crash_limit=2",
    "-o", "worker.handler_timeout=1s", "-o", "log.level=error", NULL};

static warren_client *client;
static struct raw *raw;

static int setup(void **state)
{
	return supervisor_start("it_poison", service_args, NULL, &client, &raw);
}

/* ------------------------------------------------------------ helpers */

static warren_value *json(const char *text)
{
	warren_value *v = NULL;

	assert_int_equal(warren_value_from_json(text, strlen(text), &v, NULL, 0), WARREN_OK);
	return v;
}

static char *to_json(const warren_value *v)
{
	char *text = NULL;

	assert_int_equal(warren_value_to_json(v, &text, NULL, 0), WARREN_OK);
	return text;
}

/* A blocking call; returns how it ended and the reply (caller frees). */
static warren_err call(const char *method, const char *params, int timeout_ms,
                       warren_reply **reply)
{
	warren_value *p = json(params);
	warren_err err = warren_call(client, method, p,
	                             &(warren_call_opts){.timeout_ms = timeout_ms}, reply, NULL, 0);

	warren_value_free(p);
	return err;
}

/* ------------------------------------------------------------ tests */

static void test_transient_failures_that_recover_succeed_once(void **state)
{
	warren_reply *reply = NULL;
	int64_t t0 = testenv_mono_ms();
	char *text;

	assert_int_equal(call("example.flaky", "{\"failures\":2}", 10000, &reply), WARREN_OK);
	text = to_json(warren_reply_result(reply));
	assert_string_equal(text, "{\"attempt\":3}");
	/* Two waits in the broker: at least 250 ms, then 500 ms. */
	assert_true(testenv_mono_ms() - t0 >= 750);
	free(text);
	warren_reply_free(reply);
	assert_int_equal(raw_queue_count(raw, "rpc.example.dlq"), 0);
}

static void test_retries_that_run_out_are_dead_lettered_and_the_caller_told(void **state)
{
	warren_reply *reply = NULL;
	char *text;

	assert_int_equal(call("example.flaky", "{\"failures\":99}", 20000, &reply), WARREN_ERR_REMOTE);
	assert_int_equal(warren_reply_status(reply), WARREN_STATUS_UNAVAILABLE);
	assert_string_equal(warren_reply_message(reply),
	                    "flaky: attempt 3 of 99 planned failures (UNAVAILABLE after 3 attempts)");
	text = to_json(warren_reply_result(reply));
	assert_string_equal(text, "{\"reason\":\"retries-exhausted\",\"dlq\":\"rpc.example.dlq\"}");
	free(text);
	warren_reply_free(reply);
	assert_string_equal(supervisor_take_reasons(raw, 1), "retries-exhausted ");
}

static void test_a_retry_that_cannot_end_before_the_deadline_is_not_made(void **state)
{
	warren_reply *reply = NULL;
	int64_t t0 = testenv_mono_ms();

	/* The first wait alone (250 ms or more) would pass the 200 ms deadline:
	 * the error is the answer, at once. */
	assert_int_equal(call("example.flaky", "{\"failures\":2}", 200, &reply), WARREN_ERR_REMOTE);
	assert_int_equal(warren_reply_status(reply), WARREN_STATUS_UNAVAILABLE);
	assert_string_equal(warren_reply_message(reply), "flaky: attempt 1 of 2 planned failures");
	assert_true(testenv_mono_ms() - t0 < 200);
	warren_reply_free(reply);
	assert_int_equal(raw_queue_count(raw, "rpc.example.dlq"), 0);
}

static void test_a_request_that_crashes_its_worker_is_dead_lettered_and_the_rest_flows(
    void **state)
{
	struct supervisor_tally t = {0};
	warren_call_opts o = {.timeout_ms = 30000};

	assert_int_equal(
	    warren_call_async(client, "example.crash", NULL, &o, supervisor_on_crash, &t, NULL, 0),
	    WARREN_OK);
	/* Sent alone, not in a batch with the first echo: a request that
	 * crashes its worker from a batch takes one crash more (warren(7)
	 * BATCHES; it_batch). */
	usleep(100000);
	for (int i = 0; i < 30; i++) {
		assert_int_equal(warren_call_async(client, "example.echo", NULL, &o,
		                                   supervisor_on_echo, &t, NULL, 0),
		                 WARREN_OK);
		usleep(20000);
	}
	for (int i = 0; i < 600 && atomic_load(&t.done) < 31; i++) {
		usleep(50000);
	}
	assert_int_equal(atomic_load(&t.done), 31);
	assert_int_equal(atomic_load(&t.ok), 30);
	assert_int_equal(atomic_load(&t.other), 0);
	/* Delivered, crashed; again, crashed; the third delivery is refused. */
	assert_int_equal(supervisor_restarts(), 2);
	assert_int_equal(atomic_load(&t.crash_status), WARREN_STATUS_INTERNAL);
	assert_string_equal(t.crash_message,
	                    "delivered 3 times without an answer: it may crash its worker");
	assert_string_equal(t.crash_details,
	                    "{\"reason\":\"crashed-worker\",\"dlq\":\"rpc.example.dlq\"}");
	assert_string_equal(supervisor_take_reasons(raw, 1), "crashed-worker ");
}

static void test_a_mixed_run_ends_with_its_good_replies_and_its_poison_dead_lettered(
    void **state)
{
	struct supervisor_tally t = {0};
	warren_call_opts o = {.timeout_ms = 30000};
	warren_value *flaky = json("{\"failures\":99}");
	const int good = 100, unknown = 7, exhausted = 3;

	for (int i = 0; i < good + unknown + exhausted; i++) {
		const char *method = "example.echo";
		const warren_value *p = NULL;
		/* Every tenth call from the fourth is poison: first the unknown
		 * methods, then the ones that keep failing. */
		if (i % 10 == 3 && i / 10 < unknown) {
			method = "example.nope";
		} else if (i % 10 == 3 && i / 10 < unknown + exhausted) {
			method = "example.flaky";
			p = flaky;
		}
		assert_int_equal(
		    warren_call_async(client, method, p, &o, supervisor_on_echo, &t, NULL, 0),
		    WARREN_OK);
	}
	for (int i = 0; i < 600 && atomic_load(&t.done) < good + unknown + exhausted; i++) {
		usleep(50000);
	}
	warren_value_free(flaky);
	assert_int_equal(atomic_load(&t.ok), good);
	assert_int_equal(atomic_load(&t.other), unknown + exhausted);
	const char *reasons = supervisor_take_reasons(raw, unknown + exhausted);
	int n_unknown = 0, n_exhausted = 0;
	for (const char *p = reasons; (p = strstr(p, "unknown-method")) != NULL; p++) {
		n_unknown++;
	}
	for (const char *p = reasons; (p = strstr(p, "retries-exhausted")) != NULL; p++) {
		n_exhausted++;
	}
	assert_int_equal(n_unknown, unknown);
	assert_int_equal(n_exhausted, exhausted);
	assert_int_equal(supervisor_restarts(), 0);
}

/* A handler past its time limit: its caller gets DEADLINE_EXCEEDED at the
 * limit (not at the call's deadline), the request is dead-lettered and
 * acked, and nothing more is sent when the handler finally returns. */
static void test_a_handler_past_its_time_limit_is_answered_and_dead_lettered(void **state)
{
	warren_reply *reply = NULL;
	int64_t t0 = testenv_mono_ms();
	char *text;

	assert_int_equal(call("example.sleep", "{\"ms\":2500}", 10000, &reply), WARREN_ERR_REMOTE);
	assert_true(testenv_mono_ms() - t0 < 2000);
	assert_int_equal(warren_reply_status(reply), WARREN_STATUS_DEADLINE_EXCEEDED);
	assert_string_equal(warren_reply_message(reply),
	                    "the handler of example.sleep ran past its time limit of 1000 ms");
	text = to_json(warren_reply_result(reply));
	assert_string_equal(text, "{\"reason\":\"handler-timeout\",\"dlq\":\"rpc.example.dlq\"}");
	free(text);
	warren_reply_free(reply);
	assert_string_equal(supervisor_take_reasons(raw, 1), "handler-timeout ");
	/* The handler ends 1.5 s later: no second answer, nothing requeued,
	 * and the one thread serves again. */
	usleep(1800000);
	assert_int_equal(raw_queue_count(raw, "rpc.example.dlq"), 0);
	assert_int_equal(raw_queue_count(raw, "rpc.example"), 0);
	assert_int_equal(call("example.echo", "{}", 5000, &reply), WARREN_OK);
	warren_reply_free(reply);
	assert_int_equal(supervisor_restarts(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_transient_failures_that_recover_succeed_once,
	                           supervisor_forget),
	    cmocka_unit_test_setup(test_retries_that_run_out_are_dead_lettered_and_the_caller_told,
	                           supervisor_forget),
	    cmocka_unit_test_setup(test_a_retry_that_cannot_end_before_the_deadline_is_not_made,
	                           supervisor_forget),
	    cmocka_unit_test_setup(
	        test_a_request_that_crashes_its_worker_is_dead_lettered_and_the_rest_flows,
	        supervisor_forget),
	    cmocka_unit_test_setup(
	        test_a_mixed_run_ends_with_its_good_replies_and_its_poison_dead_lettered,
	        supervisor_forget),
	    cmocka_unit_test_setup(test_a_handler_past_its_time_limit_is_answered_and_dead_lettered,
	                           supervisor_forget),
	};

	return cmocka_run_group_tests_name("poison", tests, setup, supervisor_teardown);
}
