/* it_poison_prefetch.c: a request that crashes its worker, among
 * neighbours that a large prefetch hands the same worker process at the
 * same time. The crash loop (example-service restarted by this test, as
 * systemd would) must dead-letter the request that crashes and nothing
 * else: a crash counts only against the request that was running when its
 * worker died, never against those that were merely prefetched beside it. */
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

/* One handler thread and a prefetch that holds every neighbour of the
 * request that crashes it. */
static const char *const service_args[] = {
    "-o", "worker.threads=1",          "-o", "worker.prefetch=64", "-o", "worker.crash_limit=2",
    "-o", "worker.handler_timeout=2s", "-o", "log.level=error",    NULL};

static warren_client *client;
static warren_client *batching; /* client.batch=*: its calls in one turn go as one batch */
static struct raw *raw;

static int setup(void **state)
{
	warren_config *cfg = testenv_config((const char *const[]){"client.batch=*", NULL});
	int rc;

	/* client sends every request alone; batching, its bursts as batches. */
	rc = supervisor_start("it_poison_prefetch", service_args,
	                      (const char *const[]){"client.batch=", NULL}, &client, &raw);
	if (rc == 0 && warren_client_new(cfg, "it_poison_prefetch_batching", &batching, NULL, 0) !=
	                   WARREN_OK) {
		rc = -1;
	}
	warren_config_free(cfg);
	return rc;
}

static int teardown(void **state)
{
	warren_client_free(batching);
	return supervisor_teardown(state);
}

/* ------------------------------------------------------------ helpers */

static warren_value *json(const char *text)
{
	warren_value *v = NULL;

	assert_int_equal(warren_value_from_json(text, strlen(text), &v, NULL, 0), WARREN_OK);
	return v;
}

/* Waits for the slow call, the crash and its neighbours to end: every
 * neighbour answered, the slow call too; only the crash is poison, after
 * two crashes (crash_limit=2), each with the crashing request alone or the
 * first one among its neighbours. */
static void expect_only_the_crash_dead_lettered(struct supervisor_tally *t, int neighbours)
{
	for (int i = 0; i < 1200 && atomic_load(&t->done) < neighbours + 2; i++) {
		usleep(50000);
	}
	assert_int_equal(atomic_load(&t->done), neighbours + 2);
	assert_int_equal(atomic_load(&t->ok), neighbours + 1);
	assert_int_equal(atomic_load(&t->other), 0);
	assert_int_equal(atomic_load(&t->crash_status), WARREN_STATUS_INTERNAL);
	assert_string_equal(t->crash_details,
	                    "{\"reason\":\"crashed-worker\",\"dlq\":\"rpc.example.dlq\"}");
	assert_string_equal(supervisor_take_reasons(raw, 1), "crashed-worker ");
	assert_int_equal(supervisor_restarts(), 2);
}

/* ------------------------------------------------------------ tests */

/* A slow call holds the one handler thread while the crashing call and its
 * neighbours (sent by via) arrive, so that all of them are prefetched
 * together: the first crash returns every one of them with
 * x-delivery-count raised. settle_us: a pause after the crash is sent. */
static void crash_among(warren_client *via, int neighbours, useconds_t settle_us)
{
	struct supervisor_tally t = {0};
	warren_call_opts o = {.timeout_ms = 60000};
	warren_value *slow = json("{\"ms\":300}");

	assert_int_equal(
	    warren_call_async(client, "example.sleep", slow, &o, supervisor_on_echo, &t, NULL, 0),
	    WARREN_OK);
	assert_int_equal(
	    warren_call_async(client, "example.crash", NULL, &o, supervisor_on_crash, &t, NULL, 0),
	    WARREN_OK);
	warren_value_free(slow);
	usleep(settle_us);
	for (int i = 0; i < neighbours; i++) {
		assert_int_equal(
		    warren_call_async(via, "example.echo", NULL, &o, supervisor_on_echo, &t, NULL, 0),
		    WARREN_OK);
	}
	expect_only_the_crash_dead_lettered(&t, neighbours);
}

static void test_a_crash_counts_only_against_the_request_that_was_running(void **state)
{
	crash_among(client, 20, 0);
}

/* As above, with the neighbours sent as batches (rpc.example.batch) once
 * the slow call and the crash are queued at the worker: the first crash
 * returns them too, and each batch comes back as a suspect to be split
 * into single requests. A split is a publish and a confirm: a worker that
 * ran the crashing request while a split was still on its way crashed
 * with the batch unacked, which came back a second time and split again
 * with two crashes against each of its requests, and crash_limit=2
 * dead-lettered them (answered "delivered 3 times without an answer"). */
static void
test_a_crash_counts_only_against_the_request_that_was_running_among_batches(void **state)
{
	crash_among(batching, 40, 100000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_a_crash_counts_only_against_the_request_that_was_running,
	                           supervisor_forget),
	    cmocka_unit_test_setup(
	        test_a_crash_counts_only_against_the_request_that_was_running_among_batches,
	        supervisor_forget),
	};

	return cmocka_run_group_tests_name("poison_prefetch", tests, setup, teardown);
}
