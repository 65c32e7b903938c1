/* it_frozen.c: a broker that stops reading its connections (the private
 * node frozen with SIGSTOP) must not stop a client: with 128 asynchronous
 * and a few blocking calls in flight, large enough to fill the socket's
 * buffers, every call still ends at its deadline, and the client can be
 * freed while the broker is frozen. The broker is always resumed
 * (SIGCONT): by the test, by its teardown when an assertion failed, and by
 * a guard process should this program die, so that later tests in the
 * same run still have a broker. */
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

#define ASYNC_CALLS    128
#define BLOCKING_CALLS 4
#define TIMEOUT_MS     1500
/* How late after its deadline a call may end (the bound). */
#define LATE_MS 100
/* Each request's body: 128 of them (12 MiB) are more than the kernel
 * buffers between the client and a broker that does not read hold. */
#define PAD_BYTES (96 * 1024)


static int resume_broker(void **state)
{
	testenv_broker_thaw();
	return 0;
}

struct ended {
	int64_t deadline; /* monotonic ms: when the call was made + TIMEOUT_MS */
	atomic_llong at;  /* monotonic ms when it ended; 0: not yet */
	warren_err err;
};

static void on_end(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct ended *e = arg;

	e->err = err;
	warren_reply_free(reply);
	atomic_store(&e->at, testenv_mono_ms());
}

struct blocking {
	pthread_t thread;
	warren_client *c;
	const warren_value *params;
	struct ended end;
};

static void *blocking_call(void *arg)
{
	struct blocking *b = arg;
	warren_reply *reply = NULL;
	char why[300];
	warren_err err;

	b->end.deadline = testenv_mono_ms() + TIMEOUT_MS;
	err = warren_call(b->c, "frozen.echo", b->params,
	                  &(warren_call_opts){.timeout_ms = TIMEOUT_MS}, &reply, why, sizeof(why));
	on_end(err, reply, why, &b->end);
	return NULL;
}

static warren_value *padded_params(void)
{
	warren_value *params = warren_map();
	char *pad = malloc(PAD_BYTES + 1);

	assert_non_null(pad);
	memset(pad, 'x', PAD_BYTES);
	pad[PAD_BYTES] = '\0';
	assert_int_equal(warren_map_set(params, "pad", warren_str(pad)), WARREN_OK);
	free(pad);
	return params;
}

/* Checks one call: ended at its deadline (not before, at most LATE_MS
 * after), with DEADLINE_EXCEEDED. Returns how late it was. */
static int64_t check_end(const struct ended *e, const char *what, int i)
{
	int64_t at = atomic_load(&e->at), late = at - e->deadline;

	if (at == 0) {
		fail_msg("%s call %d never ended", what, i);
	}
	if (e->err != WARREN_ERR_TIMEOUT || late < -5 || late > LATE_MS) {
		fail_msg("%s call %d ended %lld ms after its deadline with error %d", what, i,
		         (long long)late, (int)e->err);
	}
	return late;
}

static void test_every_call_ends_at_its_deadline_while_the_broker_is_frozen(void **state)
{
	warren_config *cfg = testenv_config((const char *const[]){
	    "broker.connect_timeout=1s", "log.level=error", "message.max_size=1M", NULL});
	static struct ended async[ASYNC_CALLS];
	struct blocking blocking[BLOCKING_CALLS];
	warren_value *params = padded_params();
	warren_client *c = NULL;
	int64_t until, freed, worst = 0;
	char why[300];
	bool all = false;

	assert_int_equal(warren_client_new(cfg, "it_frozen", &c, why, sizeof(why)), WARREN_OK);
	testenv_broker_freeze();
	for (int i = 0; i < BLOCKING_CALLS; i++) {
		blocking[i] = (struct blocking){.c = c, .params = params};
		assert_int_equal(
		    pthread_create(&blocking[i].thread, NULL, blocking_call, &blocking[i]), 0);
	}
	for (int i = 0; i < ASYNC_CALLS; i++) {
		async[i] = (struct ended){.deadline = testenv_mono_ms() + TIMEOUT_MS};
		assert_int_equal(warren_call_async(c, "frozen.echo", params,
		                                   &(warren_call_opts){.timeout_ms = TIMEOUT_MS},
		                                   on_end, &async[i], why, sizeof(why)),
		                 WARREN_OK);
	}
	/* A generous wait: what is asserted is when each call ended. */
	until = testenv_mono_ms() + TIMEOUT_MS + 5000;
	while (!all && testenv_mono_ms() < until) {
		all = true;
		for (int i = 0; i < ASYNC_CALLS && all; i++) {
			all = atomic_load(&async[i].at) != 0;
		}
		for (int i = 0; i < BLOCKING_CALLS && all; i++) {
			all = atomic_load(&blocking[i].end.at) != 0;
		}
		usleep(20000);
	}
	if (!all) {
		testenv_broker_thaw(); /* let the stuck client go, then report */
	}
	for (int i = 0; i < BLOCKING_CALLS; i++) {
		pthread_join(blocking[i].thread, NULL);
	}
	for (int i = 0; i < ASYNC_CALLS; i++) {
		int64_t late = check_end(&async[i], "asynchronous", i);
		worst = late > worst ? late : worst;
	}
	for (int i = 0; i < BLOCKING_CALLS; i++) {
		int64_t late = check_end(&blocking[i].end, "blocking", i);
		worst = late > worst ? late : worst;
	}
	print_message("latest end: %lld ms after its deadline\n", (long long)worst);

	/* Freed while the broker is still frozen: the graceful close is
	 * bounded by broker.connect_timeout (1 s), so a generous 20 s. */
	freed = testenv_mono_ms();
	warren_client_free(c);
	freed = testenv_mono_ms() - freed;
	print_message("warren_client_free took %lld ms\n", (long long)freed);
	assert_true(freed < 20000);
	testenv_broker_thaw();
	warren_value_free(params);
	warren_config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(
	        test_every_call_ends_at_its_deadline_while_the_broker_is_frozen, resume_broker),
	};

	return cmocka_run_group_tests_name("frozen", tests, NULL, NULL);
}
