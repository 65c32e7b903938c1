/* it_replycache.c: the worker's reply cache against the real broker, driven
 * by a plain AMQP client: the same request (same message_id, same app_id)
 * published twice is answered twice, each with its own correlation id, and
 * its handler runs once, whether the second copy comes after the first's
 * reply (answered from the cache) or while the first still runs (it waits
 * for that run); the same message_id from another app_id runs again. */
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

#include "testenv.h"

static warren_worker *worker;
static struct raw *raw;
static atomic_int runs; /* handler runs, of either method */

/* cache.count answers how many runs there have been, this one included:
 * a second run would answer a different number. */
static warren_status count(warren_request *req, void *arg)
{
	(void)arg;
	warren_request_set_result(req, warren_int(atomic_fetch_add(&runs, 1) + 1));
	return WARREN_STATUS_OK;
}

/* cache.slow does the same after 500 ms, so that a twin comes while it runs. */
static warren_status slow(warren_request *req, void *arg)
{
	usleep(500000);
	return count(req, arg);
}

/* cache.busy fails UNAVAILABLE after 500 ms: with worker.retry_attempts=1
 * that is the answer, a transient one, which the cache does not keep. */
static warren_status busy(warren_request *req, void *arg)
{
	(void)arg;
	atomic_fetch_add(&runs, 1);
	usleep(500000);
	return warren_request_fail(req, WARREN_STATUS_UNAVAILABLE, NULL, "busy");
}

static int setup(void **state)
{
	warren_config *cfg = testenv_config((const char *const[]){
	    "worker.service=cache", "worker.threads=4", "worker.retry_attempts=1", NULL});
	char why[300];

	(void)state;
	if (warren_worker_new(cfg, &worker, why, sizeof(why)) != WARREN_OK ||
	    warren_worker_handle(worker, "cache.count", count, NULL) != WARREN_OK ||
	    warren_worker_handle(worker, "cache.slow", slow, NULL) != WARREN_OK ||
	    warren_worker_handle(worker, "cache.busy", busy, NULL) != WARREN_OK ||
	    warren_worker_start(worker, why, sizeof(why)) != WARREN_OK) {
		fprintf(stderr, "worker: %s\n", why);
		return -1;
	}
	warren_config_free(cfg);
	raw = raw_connect();
	raw_consume_replies(raw);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	assert_int_equal(warren_worker_stop(worker, 5000), WARREN_OK);
	warren_worker_free(worker);
	raw_close(raw);
	return 0;
}

static int reset(void **state)
{
	(void)state;
	atomic_store(&runs, 0);
	return 0;
}

/* Publishes a JSON request for method with these ids, answered to raw. */
static void request(const char *method, const char *corr, const char *message_id,
                    const char *app_id)
{
	amqp_basic_properties_t p = {0};

	p._flags = AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
	           AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_REPLY_TO_FLAG |
	           AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_APP_ID_FLAG;
	p.correlation_id = amqp_cstring_bytes(corr);
	p.delivery_mode = 2;
	p.content_type = amqp_cstring_bytes("application/json");
	p.reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to");
	p.message_id = amqp_cstring_bytes(message_id);
	p.app_id = amqp_cstring_bytes(app_id);
	assert_int_equal(raw_publish(raw, method, &p, "[]", 2), 0);
}

/* Waits for a reply: OK, the body given; returns which correlation id. */
static char *reply(const char *body)
{
	amqp_envelope_t env;
	amqp_basic_properties_t *p;
	char *corr;

	assert_int_equal(raw_wait(raw, 10000, &env), 0);
	p = &env.message.properties;
	assert_string_equal(raw_header(p, "rpc-status"), "0");
	assert_int_equal((int)env.message.body.len, (int)strlen(body));
	assert_memory_equal(env.message.body.bytes, body, strlen(body));
	corr = strndup(p->correlation_id.bytes, p->correlation_id.len);
	amqp_destroy_envelope(&env);
	return corr;
}

static void expect_replies(const char *body, const char *corr1, const char *corr2)
{
	char *a = reply(body), *b = reply(body);

	/* Each copy gets its own correlation id, in whichever order. */
	if (strcmp(a, corr1) != 0) {
		char *t = a;

		a = b;
		b = t;
	}
	assert_string_equal(a, corr1);
	assert_string_equal(b, corr2);
	free(a);
	free(b);
}

static uint64_t hits(void)
{
	warren_worker_stats st;

	warren_worker_get_stats(worker, &st);
	return st.reply_cache_hits;
}

static void a_repeated_request_is_answered_from_the_cache_and_runs_once(void **state)
{
	uint64_t before = hits();
	char *corr;

	(void)state;
	request("cache.count", "c-first", "m-repeat", "it_replycache");
	corr = reply("1");
	assert_string_equal(corr, "c-first");
	free(corr);
	request("cache.count", "c-again", "m-repeat", "it_replycache");
	corr = reply("1"); /* a second run would answer 2 */
	assert_string_equal(corr, "c-again");
	free(corr);
	assert_int_equal(atomic_load(&runs), 1);
	assert_int_equal(hits() - before, 1);
}

static void a_twin_that_comes_while_the_first_runs_waits_for_its_reply(void **state)
{
	uint64_t before = hits();

	(void)state;
	/* Four handler threads: without the cache both copies would run. */
	request("cache.slow", "c-twin-1", "m-twin", "it_replycache");
	request("cache.slow", "c-twin-2", "m-twin", "it_replycache");
	expect_replies("1", "c-twin-1", "c-twin-2");
	assert_int_equal(atomic_load(&runs), 1);
	assert_int_equal(hits() - before, 1);
}

/* Waits for a reply with status; returns its correlation id. */
static char *status_reply(const char *status)
{
	amqp_envelope_t env;
	char *corr;

	assert_int_equal(raw_wait(raw, 10000, &env), 0);
	assert_string_equal(raw_header(&env.message.properties, "rpc-status"), status);
	corr = strndup(env.message.properties.correlation_id.bytes,
	               env.message.properties.correlation_id.len);
	amqp_destroy_envelope(&env);
	return corr;
}

static void a_twin_of_a_run_that_failed_transiently_goes_back_and_runs_itself(void **state)
{
	uint64_t before = hits();
	warren_worker_stats st;
	uint64_t redelivered;
	char *a, *b;

	(void)state;
	warren_worker_get_stats(worker, &st);
	redelivered = st.redelivered;
	request("cache.busy", "c-busy-1", "m-busy", "it_replycache");
	request("cache.busy", "c-busy-2", "m-busy", "it_replycache");
	a = status_reply("14");
	b = status_reply("14");
	/* Each answered, whichever first: the twin waited, went back to the
	 * queue, and ran on its own (UNAVAILABLE says the work was not done). */
	assert_true((strcmp(a, "c-busy-1") == 0 && strcmp(b, "c-busy-2") == 0) ||
	            (strcmp(a, "c-busy-2") == 0 && strcmp(b, "c-busy-1") == 0));
	free(a);
	free(b);
	assert_int_equal(atomic_load(&runs), 2);
	assert_int_equal(hits() - before, 0);
	/* The twin's second delivery: it was given back, not run beside the first. */
	warren_worker_get_stats(worker, &st);
	assert_int_equal(st.redelivered - redelivered, 1);
}

static void the_same_message_id_from_another_caller_runs_again(void **state)
{
	char *a, *b;

	(void)state;
	request("cache.count", "c-billing", "m-shared", "billing");
	a = reply("1");
	request("cache.count", "c-notify", "m-shared", "notify");
	b = reply("2");
	assert_string_equal(a, "c-billing");
	assert_string_equal(b, "c-notify");
	free(a);
	free(b);
	assert_int_equal(atomic_load(&runs), 2);
}

/* Without an app_id (and no signature) a caller has no identity to key
 * on: two callers that both leave it out and reuse a message_id would get
 * each other's replies. Such a request is never cached. */
static void a_request_without_a_caller_runs_every_time(void **state)
{
	char *a, *b;

	(void)state;
	request("cache.count", "c-nobody-1", "m-nobody", "");
	a = reply("1");
	request("cache.count", "c-nobody-2", "m-nobody", "");
	b = reply("2");
	free(a);
	free(b);
	assert_int_equal(atomic_load(&runs), 2);
}

static void a_request_without_a_message_id_runs_every_time(void **state)
{
	char *a, *b;

	(void)state;
	request("cache.count", "c-anon-1", "", "it_replycache");
	a = reply("1");
	request("cache.count", "c-anon-2", "", "it_replycache");
	b = reply("2");
	free(a);
	free(b);
	assert_int_equal(atomic_load(&runs), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(a_repeated_request_is_answered_from_the_cache_and_runs_once,
	                           reset),
	    cmocka_unit_test_setup(a_twin_that_comes_while_the_first_runs_waits_for_its_reply,
	                           reset),
	    cmocka_unit_test_setup(
	        a_twin_of_a_run_that_failed_transiently_goes_back_and_runs_itself, reset),
	    cmocka_unit_test_setup(the_same_message_id_from_another_caller_runs_again, reset),
	    cmocka_unit_test_setup(a_request_without_a_caller_runs_every_time, reset),
	    cmocka_unit_test_setup(a_request_without_a_message_id_runs_every_time, reset),
	};

	return cmocka_run_group_tests_name("it_replycache", tests, setup, teardown);
}
