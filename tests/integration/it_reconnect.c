/* it_reconnect.c: calls that live through a lost connection and a broker
 * restart, against the real private broker and an example-service
 * process: a call waits for the connection within its deadline, a call
 * whose reply path was lost is sent again (client.resend), a named reply
 * queue is declared again after a restart, and freeing the client ends
 * the calls that wait at once (warren(7) GUARANTEES). The tests that stop
 * the broker start it again in their teardown and wait until it serves. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testenv.h"

static pid_t worker_pid;

/* One call's end, as its completion saw it. */
struct outcome {
	pthread_mutex_t mu;
	int n;
	warren_err err;
	char msg[512];
	char result[256]; /* the reply's result as JSON */
};

static void on_end(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct outcome *o = arg;
	char *json = NULL;

	if (reply != NULL &&
	    warren_value_to_json(warren_reply_result(reply), &json, NULL, 0) != WARREN_OK) {
		json = NULL;
	}
	pthread_mutex_lock(&o->mu);
	o->err = err;
	snprintf(o->msg, sizeof(o->msg), "%s", msg);
	snprintf(o->result, sizeof(o->result), "%s", json != NULL ? json : "");
	o->n++;
	pthread_mutex_unlock(&o->mu);
	free(json);
	warren_reply_free(reply);
}

static int ended(struct outcome *o)
{
	int n;

	pthread_mutex_lock(&o->mu);
	n = o->n;
	pthread_mutex_unlock(&o->mu);
	return n;
}

/* Waits up to ms for o to end; its count then. */
static int await_end(struct outcome *o, int ms)
{
	for (int t = 0; t < ms / 20 && ended(o) == 0; t++) {
		usleep(20000);
	}
	return ended(o);
}

static warren_value *json(const char *text)
{
	warren_value *v = NULL;

	assert_int_equal(warren_value_from_json(text, strlen(text), &v, NULL, 0), WARREN_OK);
	return v;
}

static void call_async(warren_client *c, const char *method, const char *params, int64_t timeout_ms,
                       struct outcome *o)
{
	warren_value *p = json(params);

	pthread_mutex_init(&o->mu, NULL);
	assert_int_equal(warren_call_async(c, method, p,
	                                   &(warren_call_opts){.timeout_ms = timeout_ms}, on_end, o,
	                                   NULL, 0),
	                 WARREN_OK);
	warren_value_free(p);
}

static warren_client_stats stats(warren_client *c)
{
	warren_client_stats st;

	warren_client_get_stats(c, &st);
	return st;
}

/* Waits up to ms until the client's connection is (or is not) up. */
static bool await_connected(warren_client *c, bool want, int ms)
{
	for (int t = 0; t < ms / 20 && stats(c).connected != want; t++) {
		usleep(20000);
	}
	return stats(c).connected == want;
}

/* A client of the test broker that reconnects within a second of the
 * broker's return, with the given overrides (NULL-ended) after. */
static warren_client *client_with(const char *app, const char *const *overrides)
{
	const char *args[16] = {"broker.reconnect_min=100ms", "broker.reconnect_max=1s"};
	warren_config *cfg;
	warren_client *c = NULL;
	char why[300] = "";
	size_t n = 2;

	for (size_t i = 0; overrides != NULL && overrides[i] != NULL && n < 15; i++) {
		args[n++] = overrides[i];
	}
	args[n] = NULL;
	cfg = testenv_config(args);
	if (warren_client_new(cfg, app, &c, why, sizeof(why)) != WARREN_OK) {
		fail_msg("client: %s", why);
	}
	warren_config_free(cfg);
	return c;
}

/* Whether the broker and the example service answer a call now. */
static bool served(void)
{
	warren_config *cfg =
	    testenv_config((const char *const[]){"broker.connect_timeout=1s", NULL});
	warren_client *c = NULL;
	warren_reply *reply = NULL;
	bool ok = false;

	if (warren_client_new(cfg, "it_reconnect_probe", &c, NULL, 0) == WARREN_OK) {
		ok = warren_call(c, "example.echo", NULL, &(warren_call_opts){.timeout_ms = 1000},
		                 &reply, NULL, 0) == WARREN_OK;
	}
	warren_reply_free(reply);
	warren_client_free(c);
	warren_config_free(cfg);
	return ok;
}

/* Waits up to ms until the example service answers again. */
static bool await_served(int ms)
{
	int64_t until = testenv_mono_ms() + ms;

	while (!served()) {
		if (testenv_mono_ms() > until) {
			return false;
		}
		usleep(200000);
	}
	return true;
}

static int setup(void **state)
{
	worker_pid = testenv_spawn("example-service",
	                           (const char *const[]){"-o", "worker.threads=4", "-o",
	                                                 "broker.reconnect_min=100ms", "-o",
	                                                 "broker.reconnect_max=1s", NULL},
	                           true);
	return worker_pid > 0 ? 0 : -1;
}

static int teardown(void **state)
{
	if (worker_pid > 0) {
		testenv_stop(worker_pid, SIGTERM);
	}
	return 0;
}

/* A test's teardown: the broker runs and the service answers again,
 * whatever the test left behind (a stopped broker, a worker reconnecting). */
static int broker_serves(void **state)
{
	testenv_broker_ctl("start_app");
	if (!await_served(60000)) {
		fprintf(stderr, "it_reconnect: the service does not answer after start_app\n");
		return -1;
	}
	return 0;
}

/* ---- calls wait for the connection */

/* A call made while the broker is stopped waits for it (1.5 s here, longer
 * than client.retry_attempts' three tries 100 to 400 ms apart) and is
 * answered after it starts, within its deadline. Before, it failed within
 * a second with "not connected to the broker, after 3 attempts". */
static void test_a_call_made_while_the_broker_is_stopped_is_answered_after_it_starts(void **state)
{
	warren_client *c = client_with("it_reconnect_stopped", NULL);
	struct outcome o = {0};
	int64_t t0;

	assert_int_equal(testenv_broker_ctl("stop_app"), 0);
	assert_true(await_connected(c, false, 10000));
	call_async(c, "example.echo", "{\"n\":7}", 60000, &o);
	usleep(1500000);
	assert_int_equal(ended(&o), 0);
	assert_int_equal(testenv_broker_ctl("start_app"), 0);
	t0 = testenv_mono_ms();
	assert_int_equal(await_end(&o, 60000), 1);
	printf("# a call made while the broker was stopped: answered %lld ms after start_app "
	       "returned\n",
	       (long long)(testenv_mono_ms() - t0));
	assert_int_equal(o.err, WARREN_OK);
	assert_string_equal(o.result, "{\"n\":7}");
	assert_true(stats(c).reconnects >= 1);
	/* Its first publish was after the restart: nothing was sent again. */
	assert_int_equal(stats(c).resent, 0);
	assert_int_equal(stats(c).republished, 0);
	warren_client_free(c);
}

/* A call whose deadline passes while the client is not connected ends at
 * its deadline (not later than a generous bound after it) with
 * DEADLINE_EXCEEDED, saying since when. The client reconnects only 10 to
 * 20 s after the loss here. */
static void
test_a_call_whose_deadline_passes_while_disconnected_fails_on_time_saying_since_when(void **state)
{
	warren_client *c = client_with(
	    "it_reconnect_deadline",
	    (const char *const[]){"broker.reconnect_min=20s", "broker.reconnect_max=20s", NULL});
	warren_reply *reply = NULL;
	char why[512] = "";
	int64_t t0, elapsed, lost_wall, since_wall;
	regex_t re;
	regmatch_t m[3];
	int year, mon, day, hour, min, sec, ms;
	double for_s;

	assert_int_equal(testenv_broker_ctl("close_all_connections it_reconnect"), 0);
	assert_true(await_connected(c, false, 10000));
	lost_wall = warren_now_ms();
	t0 = testenv_mono_ms();
	assert_int_equal(warren_call(c, "example.echo", NULL,
	                             &(warren_call_opts){.timeout_ms = 1500}, &reply, why,
	                             sizeof(why)),
	                 WARREN_ERR_TIMEOUT);
	elapsed = testenv_mono_ms() - t0;
	assert_int_equal(warren_err_status(WARREN_ERR_TIMEOUT), WARREN_STATUS_DEADLINE_EXCEEDED);
	assert_null(reply);
	assert_true(elapsed >= 1450);
	assert_true(elapsed < 1500 + 3000);
	assert_int_equal(
	    regcomp(&re,
	            "^not connected to the broker since "
	            "([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z) "
	            "\\(for ([0-9]+\\.[0-9]) s\\): no reply within 1500 ms$",
	            REG_EXTENDED),
	    0);
	if (regexec(&re, why, 3, m, 0) != 0) {
		fail_msg("message: %s", why);
	}
	regfree(&re);
	/* The time named is the loss's (seen by the test up to 10 s later),
	 * and the wait it gives is at least the call's. */
	assert_int_equal(sscanf(why + m[1].rm_so, "%4d-%2d-%2dT%2d:%2d:%2d.%3d", &year, &mon, &day,
	                        &hour, &min, &sec, &ms),
	                 7);
	struct tm tm = {.tm_year = year - 1900,
	                .tm_mon = mon - 1,
	                .tm_mday = day,
	                .tm_hour = hour,
	                .tm_min = min,
	                .tm_sec = sec};
	since_wall = (int64_t)timegm(&tm) * 1000 + ms;
	assert_true(since_wall <= lost_wall + 1000);
	assert_true(since_wall >= lost_wall - 11000);
	for_s = strtod(why + m[2].rm_so, NULL);
	assert_true(for_s >= 1.4);
	assert_true(for_s < 15.0);
	warren_client_free(c);
}

/* ---- a call whose reply path was lost is sent again */

/* A call in flight (its handler sleeping) when the broker closes the
 * connection: its request had been confirmed, so it is sent again after
 * the reconnect, to the new reply path, and answered. Before, it failed at
 * once with "reply path lost". */
static void test_a_call_in_flight_when_the_connection_closes_is_resent_and_answered(void **state)
{
	warren_client *c = client_with("it_reconnect_resend", NULL);
	struct outcome o = {0};

	/* rabbitmqctl itself takes a second or more to start: the handler
	 * sleeps well past the close. */
	call_async(c, "example.sleep", "{\"ms\":6000}", 30000, &o);
	usleep(500000); /* confirmed; the handler sleeps */
	assert_int_equal(ended(&o), 0);
	assert_int_equal(testenv_broker_ctl("close_all_connections it_reconnect"), 0);
	assert_int_equal(ended(&o), 0);
	assert_int_equal(await_end(&o, 30000), 1);
	if (o.err != WARREN_OK) {
		fail_msg("err %d: %s", (int)o.err, o.msg);
	}
	assert_int_equal(stats(c).resent, 1);
	assert_true(stats(c).reconnects >= 1);
	warren_client_free(c);
}

/* With client.resend not naming its method, the same call fails at the
 * loss, with the reason, as before this option. */
static void
test_with_client_resend_not_matching_the_call_fails_at_the_loss_with_the_reason(void **state)
{
	warren_client *c = client_with("it_reconnect_noresend",
	                               (const char *const[]){"client.resend=example.echo", NULL});
	struct outcome o = {0};
	int64_t t0;

	call_async(c, "example.sleep", "{\"ms\":6000}", 30000, &o);
	usleep(500000);
	t0 = testenv_mono_ms();
	assert_int_equal(testenv_broker_ctl("close_all_connections it_reconnect"), 0);
	assert_int_equal(await_end(&o, 10000), 1);
	assert_true(testenv_mono_ms() - t0 < 10000);
	assert_int_equal(o.err, WARREN_ERR_TRANSPORT);
	assert_int_equal(warren_err_status(o.err), WARREN_STATUS_UNAVAILABLE);
	assert_string_equal(o.msg,
	                    "reply path lost: connection closed by the broker: 320 "
	                    "CONNECTION_FORCED - it_reconnect; not sent again: client.resend does "
	                    "not match example.sleep");
	assert_int_equal(stats(c).resent, 0);
	warren_client_free(c);
}

/* ---- named reply queues survive a broker restart */

/* client.reply_mode=queue through stop_app and start_app: the restart
 * deletes the reply queue (not durable); the client declares it again
 * before it sends anything, and the call in flight at the stop is sent
 * again and answered, as is one made while the broker was down. Before,
 * the first waited to its deadline (its reply, if any, was published to a
 * queue that did not exist). */
static void test_a_named_reply_queue_call_is_answered_through_a_broker_restart(void **state)
{
	warren_client *c = client_with("it_reconnect_queue",
	                               (const char *const[]){"client.reply_mode=queue", NULL});
	struct outcome in_flight = {0}, during = {0};
	int64_t t0;

	call_async(c, "example.sleep", "{\"ms\":6000}", 40000, &in_flight);
	usleep(300000); /* confirmed; the handler sleeps */
	assert_int_equal(testenv_broker_ctl("stop_app"), 0);
	assert_true(await_connected(c, false, 10000));
	assert_int_equal(ended(&in_flight), 0);
	call_async(c, "example.echo", "{\"k\":\"v\"}", 40000, &during);
	usleep(500000);
	assert_int_equal(testenv_broker_ctl("start_app"), 0);
	t0 = testenv_mono_ms();
	assert_int_equal(await_end(&in_flight, 45000), 1);
	printf("# reply_mode=queue: the call in flight at stop_app answered %lld ms after "
	       "start_app returned\n",
	       (long long)(testenv_mono_ms() - t0));
	if (in_flight.err != WARREN_OK) {
		fail_msg("err %d: %s", (int)in_flight.err, in_flight.msg);
	}
	assert_int_equal(await_end(&during, 45000), 1);
	assert_int_equal(during.err, WARREN_OK);
	assert_string_equal(during.result, "{\"k\":\"v\"}");
	assert_int_equal(stats(c).resent, 1);
	warren_client_free(c);
}

/* ---- shutdown */

/* Freeing the client while calls wait for the connection (one to be sent
 * again, three never sent) ends each at once with CLOSED. Also the
 * regression test of a use-after-free in warren_client_free (run it under
 * SANITIZE=1): it freed the engine before ending the held calls, which
 * then unheld themselves from freed memory. */
static void
test_freeing_the_client_while_calls_wait_for_the_connection_ends_them_with_closed(void **state)
{
	warren_client *c = client_with(
	    "it_reconnect_free",
	    (const char *const[]){"broker.reconnect_min=20s", "broker.reconnect_max=20s", NULL});
	struct outcome o[4] = {0};
	int64_t t0;

	call_async(c, "example.sleep", "{\"ms\":8000}", 30000, &o[0]);
	usleep(500000);
	assert_int_equal(testenv_broker_ctl("close_all_connections it_reconnect"), 0);
	assert_true(await_connected(c, false, 10000));
	for (int i = 1; i < 4; i++) {
		call_async(c, "example.echo", "{}", 30000, &o[i]);
	}
	usleep(200000);
	t0 = testenv_mono_ms();
	warren_client_free(c);
	assert_true(testenv_mono_ms() - t0 < 3000);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(ended(&o[i]), 1);
		assert_int_equal(o[i].err, WARREN_ERR_CLOSED);
		assert_string_equal(o[i].msg, "the client is shutting down");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(
	        test_a_call_made_while_the_broker_is_stopped_is_answered_after_it_starts,
	        broker_serves),
	    cmocka_unit_test_teardown(
	        test_a_call_whose_deadline_passes_while_disconnected_fails_on_time_saying_since_when,
	        broker_serves),
	    cmocka_unit_test_teardown(
	        test_a_call_in_flight_when_the_connection_closes_is_resent_and_answered,
	        broker_serves),
	    cmocka_unit_test_teardown(
	        test_with_client_resend_not_matching_the_call_fails_at_the_loss_with_the_reason,
	        broker_serves),
	    cmocka_unit_test_teardown(
	        test_a_named_reply_queue_call_is_answered_through_a_broker_restart, broker_serves),
	    cmocka_unit_test_teardown(
	        test_freeing_the_client_while_calls_wait_for_the_connection_ends_them_with_closed,
	        broker_serves),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
