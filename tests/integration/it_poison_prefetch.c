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

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testenv.h"
#include "warren.h"

/* ------------------------------------------------------------ supervisor */

static struct {
	pthread_t thread;
	atomic_bool stop;
	atomic_int restarts; /* deaths other than the final stop */
	atomic_int pid;
} sup;

static void *supervise(void *arg)
{
	const char *const *args = arg;

	while (!atomic_load(&sup.stop)) {
		pid_t pid = testenv_spawn("example-service", args, false);
		int status;

		atomic_store(&sup.pid, pid);
		waitpid(pid, &status, 0);
		if (!atomic_load(&sup.stop)) {
			atomic_fetch_add(&sup.restarts, 1);
			usleep(100000); /* as Restart= waits a little */
		}
	}
	return NULL;
}

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
	/* client sends every request alone; batching, its burst as batches. */
	warren_config *cfg = testenv_config((const char *const[]){"client.batch=", NULL});

	raw = raw_connect();
	raw_purge(raw, "rpc.example");
	raw_purge(raw, "rpc.example.dlq");
	pthread_create(&sup.thread, NULL, supervise, (void *)service_args);
	if (warren_client_new(cfg, "it_poison_prefetch", &client, NULL, 0) != WARREN_OK) {
		return -1;
	}
	warren_config_free(cfg);
	cfg = testenv_config((const char *const[]){"client.batch=*", NULL});
	if (warren_client_new(cfg, "it_poison_prefetch_batching", &batching, NULL, 0) != WARREN_OK) {
		return -1;
	}
	warren_config_free(cfg);
	/* Up once it answers. */
	for (int i = 0; i < 100; i++) {
		warren_reply *r = NULL;
		if (warren_call(client, "example.echo", NULL,
		                &(warren_call_opts){.timeout_ms = 500}, &r, NULL, 0) == WARREN_OK) {
			warren_reply_free(r);
			return 0;
		}
	}
	return -1;
}

static int teardown(void **state)
{
	atomic_store(&sup.stop, true);
	kill(atomic_load(&sup.pid), SIGTERM);
	pthread_join(sup.thread, NULL);
	warren_client_free(batching);
	warren_client_free(client);
	raw_close(raw);
	return 0;
}

static int purge_dlq(void **state)
{
	raw_purge(raw, "rpc.example.dlq");
	atomic_store(&sup.restarts, 0);
	return 0;
}

/* ------------------------------------------------------------ helpers */

static warren_value *json(const char *text)
{
	warren_value *v = NULL;

	assert_int_equal(warren_value_from_json(text, strlen(text), &v, NULL, 0), WARREN_OK);
	return v;
}

/* The reasons of every dead letter in rpc.example.dlq, taken, in order,
 * separated by spaces. */
static const char *take_reasons(long want)
{
	static char out[4096];
	amqp_message_t msg;

	out[0] = '\0';
	assert_int_equal(raw_await_count(raw, "rpc.example.dlq", want, 10000), want);
	while (raw_get(raw, "rpc.example.dlq", &msg) == 0) {
		const char *r = raw_header(&msg.properties, "rpc-dead-reason");
		strncat(out, r != NULL ? r : "(none)", sizeof(out) - strlen(out) - 2);
		strcat(out, " ");
		amqp_destroy_message(&msg);
	}
	return out;
}

/* ------------------------------------------------------------ tests */

struct tally {
	atomic_int done, ok, other;
	atomic_int crash_status;
	char crash_details[200];
};

static void on_echo(warren_err err, warren_reply *reply, const char *errmsg, void *arg)
{
	struct tally *t = arg;

	atomic_fetch_add(err == WARREN_OK ? &t->ok : &t->other, 1);
	atomic_fetch_add(&t->done, 1);
	warren_reply_free(reply);
}

static void on_crash(warren_err err, warren_reply *reply, const char *errmsg, void *arg)
{
	struct tally *t = arg;
	char *text = NULL;

	atomic_store(&t->crash_status, reply != NULL ? (int)warren_reply_status(reply) : -1);
	if (reply != NULL &&
	    warren_value_to_json(warren_reply_result(reply), &text, NULL, 0) == WARREN_OK) {
		snprintf(t->crash_details, sizeof(t->crash_details), "%s", text);
		free(text);
	}
	atomic_fetch_add(&t->done, 1);
	warren_reply_free(reply);
}

/* A slow call holds the one handler thread while the crashing call and its
 * neighbours arrive, so that all of them are prefetched together: the
 * first crash returns every one of them with x-delivery-count raised. */
static void test_a_crash_counts_only_against_the_request_that_was_running(void **state)
{
	struct tally t = {0};
	warren_call_opts o = {.timeout_ms = 60000};
	warren_value *slow = json("{\"ms\":300}");
	const int neighbours = 20;

	assert_int_equal(warren_call_async(client, "example.sleep", slow, &o, on_echo, &t, NULL, 0),
	                 WARREN_OK);
	assert_int_equal(
	    warren_call_async(client, "example.crash", NULL, &o, on_crash, &t, NULL, 0), WARREN_OK);
	for (int i = 0; i < neighbours; i++) {
		assert_int_equal(
		    warren_call_async(client, "example.echo", NULL, &o, on_echo, &t, NULL, 0),
		    WARREN_OK);
	}
	warren_value_free(slow);
	for (int i = 0; i < 1200 && atomic_load(&t.done) < neighbours + 2; i++) {
		usleep(50000);
	}
	assert_int_equal(atomic_load(&t.done), neighbours + 2);
	/* Every neighbour answered, the slow call too; only the crash is poison. */
	assert_int_equal(atomic_load(&t.ok), neighbours + 1);
	assert_int_equal(atomic_load(&t.other), 0);
	assert_int_equal(atomic_load(&t.crash_status), WARREN_STATUS_INTERNAL);
	assert_string_equal(t.crash_details,
	                    "{\"reason\":\"crashed-worker\",\"dlq\":\"rpc.example.dlq\"}");
	assert_string_equal(take_reasons(1), "crashed-worker ");
	/* Two crashes (crash_limit=2), each with the crashing request alone or
	 * the first one among its neighbours. */
	assert_int_equal(atomic_load(&sup.restarts), 2);
}

/* As above, with the neighbours sent as batches (rpc.example.batch): the
 * first crash returns them too, and each batch comes back as a suspect to
 * be split into single requests. A split is a publish and a confirm: a
 * worker that ran the crashing request while a split was still on its way
 * crashed with the batch unacked, which came back a second time and split
 * again with two crashes against each of its requests, and crash_limit=2
 * dead-lettered them (answered "delivered 3 times without an answer"). */
static void test_a_crash_counts_only_against_the_request_that_was_running_among_batches(
    void **state)
{
	struct tally t = {0};
	warren_call_opts o = {.timeout_ms = 60000};
	warren_value *slow = json("{\"ms\":300}");
	const int neighbours = 40;

	assert_int_equal(warren_call_async(client, "example.sleep", slow, &o, on_echo, &t, NULL, 0),
	                 WARREN_OK);
	assert_int_equal(
	    warren_call_async(client, "example.crash", NULL, &o, on_crash, &t, NULL, 0), WARREN_OK);
	warren_value_free(slow);
	usleep(100000); /* both queued at the worker before the batches */
	for (int i = 0; i < neighbours; i++) {
		assert_int_equal(
		    warren_call_async(batching, "example.echo", NULL, &o, on_echo, &t, NULL, 0),
		    WARREN_OK);
	}
	for (int i = 0; i < 1200 && atomic_load(&t.done) < neighbours + 2; i++) {
		usleep(50000);
	}
	assert_int_equal(atomic_load(&t.done), neighbours + 2);
	assert_int_equal(atomic_load(&t.ok), neighbours + 1);
	assert_int_equal(atomic_load(&t.other), 0);
	assert_int_equal(atomic_load(&t.crash_status), WARREN_STATUS_INTERNAL);
	assert_string_equal(take_reasons(1), "crashed-worker ");
	assert_int_equal(atomic_load(&sup.restarts), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_a_crash_counts_only_against_the_request_that_was_running,
	                           purge_dlq),
	    cmocka_unit_test_setup(
	        test_a_crash_counts_only_against_the_request_that_was_running_among_batches,
	        purge_dlq),
	};

	return cmocka_run_group_tests_name("poison_prefetch", tests, setup, teardown);
}
