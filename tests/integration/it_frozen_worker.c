/* it_frozen_worker.c: a broker that stops reading its connections (the
 * private node frozen with SIGSTOP) must not stop a worker's I/O thread:
 * with many large replies to publish, more than the kernel buffers between
 * the worker and the broker hold, the thread keeps turning (heartbeats,
 * acks, time limits, a stop), the replies wait in order and go once the
 * broker reads again, and a stop still ends within its bound. The broker is
 * always resumed (SIGCONT): by the test, by its teardown when an assertion
 * failed, and by a guard process should this program die. */
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

/* 64 replies of 256 KiB (16 MiB) are more than the kernel buffers between
 * the worker and a broker that does not read hold. */
#define CALLS       64
#define REPLY_BYTES (256 * 1024)
#define CALL_MS     60000
#define GRACE_MS    500
/* A stop's bound past its grace (libwarren(3)): a second for the handler
 * threads, and with a broker that does not answer broker.connect_timeout
 * (1 s here) for the consumer's cancel and for the close; the rest is slack
 * for a slow shared machine. Generous: what fails is a stop that never
 * returns. */
#define STOP_SLACK_MS 10000

static atomic_bool gate_open;
static atomic_int handled;
static char *reply_pad;

static int resume_broker(void **state)
{
	testenv_broker_thaw();
	return 0;
}

/* Waits at the gate (the test freezes the broker meanwhile), then answers
 * a reply of REPLY_BYTES. */
static warren_status big_reply(warren_request *req, void *arg)
{
	while (!atomic_load(&gate_open)) {
		usleep(5000);
	}
	warren_request_set_result(req, warren_str(reply_pad));
	atomic_fetch_add(&handled, 1);
	return WARREN_STATUS_OK;
}

struct ended {
	atomic_bool done;
	warren_err err;
	size_t len; /* of the reply's result */
};

static void on_end(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct ended *e = arg;
	const warren_value *r = reply != NULL ? warren_reply_result(reply) : NULL;
	const char *s = NULL;
	size_t len = 0;

	e->err = err;
	e->len = r != NULL && warren_value_get_str(r, &s, &len) ? len : 0;
	warren_reply_free(reply);
	atomic_store(&e->done, true);
}

struct fixture {
	warren_config *cfg;
	warren_worker *w;
	warren_client *c;
	struct ended ends[CALLS];
};

static void wait_for(bool (*cond)(struct fixture *), struct fixture *f, int ms, const char *what)
{
	int64_t until = testenv_mono_ms() + ms;

	while (!cond(f)) {
		if (testenv_mono_ms() > until) {
			testenv_broker_thaw();
			fail_msg("timed out waiting until %s", what);
		}
		usleep(10000);
	}
}

static bool all_received(struct fixture *f)
{
	warren_worker_stats s;

	warren_worker_get_stats(f->w, &s);
	return s.in_progress == CALLS;
}

static bool all_handled(struct fixture *f)
{
	return atomic_load(&handled) == CALLS;
}

static bool all_ended(struct fixture *f)
{
	for (int i = 0; i < CALLS; i++) {
		if (!atomic_load(&f->ends[i].done)) {
			return false;
		}
	}
	return true;
}

/* A worker whose CALLS requests are all delivered and waiting at the gate,
 * with the broker frozen, then the gate opened: every handler returns its
 * large reply while nothing reads the connection. */
static void start_frozen(struct fixture *f, const char *service)
{
	char svc[64], method[80], why[300];
	warren_value *params = warren_map();

	snprintf(svc, sizeof(svc), "worker.service=%s", service);
	snprintf(method, sizeof(method), "%s.big", service);
	f->cfg = testenv_config((const char *const[]){
	    svc, "worker.threads=4", "worker.prefetch=64", "broker.connect_timeout=1s",
	    "message.max_size=1M", "log.level=error", NULL});
	atomic_store(&gate_open, false);
	atomic_store(&handled, 0);
	assert_int_equal(warren_worker_new(f->cfg, &f->w, why, sizeof(why)), WARREN_OK);
	assert_int_equal(warren_worker_handle(f->w, method, big_reply, NULL), WARREN_OK);
	assert_int_equal(warren_worker_start(f->w, why, sizeof(why)), WARREN_OK);
	assert_int_equal(warren_client_new(f->cfg, "it_frozen_worker", &f->c, why, sizeof(why)),
	                 WARREN_OK);
	for (int i = 0; i < CALLS; i++) {
		assert_int_equal(warren_call_async(f->c, method, params,
		                                   &(warren_call_opts){.timeout_ms = CALL_MS},
		                                   on_end, &f->ends[i], why, sizeof(why)),
		                 WARREN_OK);
	}
	warren_value_free(params);
	wait_for(all_received, f, 20000, "the worker has every request");
	testenv_broker_freeze();
	atomic_store(&gate_open, true);
	wait_for(all_handled, f, 20000, "every handler has returned");
}

static uint64_t io_loops(warren_worker *w)
{
	warren_worker_stats s;

	warren_worker_get_stats(w, &s);
	return s.io_loops;
}

static void test_large_replies_wait_while_the_broker_is_frozen_and_go_once_it_reads(void **state)
{
	static struct fixture f;
	uint64_t before, after;

	start_frozen(&f, "frozenw");
	/* Every reply has reached the I/O thread; over a second it must
	 * still turn (a thread stuck in a write does not). */
	usleep(500000);
	before = io_loops(f.w);
	usleep(1000000);
	after = io_loops(f.w);
	print_message("I/O loop turns over 1 s with the broker frozen: %llu\n",
	              (unsigned long long)(after - before));
	testenv_broker_thaw();
	if (after == before) {
		fail_msg("the worker's I/O thread stopped turning while the broker was frozen");
	}
	/* Once the broker reads again, every reply goes, whole. */
	wait_for(all_ended, &f, 30000, "every call has its reply");
	for (int i = 0; i < CALLS; i++) {
		if (f.ends[i].err != WARREN_OK || f.ends[i].len != REPLY_BYTES) {
			fail_msg("call %d ended with error %d and a %zu-byte result", i,
			         (int)f.ends[i].err, f.ends[i].len);
		}
	}
	assert_int_equal(warren_worker_stop(f.w, 5000), WARREN_OK);
	warren_worker_free(f.w);
	warren_client_free(f.c);
	warren_config_free(f.cfg);
}

struct stopper {
	warren_worker *w;
	atomic_bool done;
	warren_err err;
};

static void *stop_worker(void *arg)
{
	struct stopper *s = arg;

	s->err = warren_worker_stop(s->w, GRACE_MS);
	warren_worker_free(s->w);
	atomic_store(&s->done, true);
	return NULL;
}

static void test_a_worker_stops_within_its_bound_while_the_broker_is_frozen(void **state)
{
	static struct fixture f;
	struct stopper s = {0};
	pthread_t t;
	int64_t began, took, until;

	start_frozen(&f, "frozenx");
	usleep(500000);
	s.w = f.w;
	began = testenv_mono_ms();
	assert_int_equal(pthread_create(&t, NULL, stop_worker, &s), 0);
	until = began + GRACE_MS + STOP_SLACK_MS;
	while (!atomic_load(&s.done) && testenv_mono_ms() < until) {
		usleep(10000);
	}
	took = testenv_mono_ms() - began;
	testenv_broker_thaw(); /* a stop stuck in a write ends once the broker reads */
	pthread_join(t, NULL);
	print_message("warren_worker_stop + free took %lld ms with the broker frozen\n",
	              (long long)took);
	if (took >= GRACE_MS + STOP_SLACK_MS) {
		fail_msg("warren_worker_stop did not return within %d ms with the broker frozen",
		         GRACE_MS + STOP_SLACK_MS);
	}
	/* Its replies were held: the requests go back to the queue. */
	assert_int_equal(s.err, WARREN_ERR_TIMEOUT);
	warren_client_free(f.c);
	warren_config_free(f.cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(
	        test_large_replies_wait_while_the_broker_is_frozen_and_go_once_it_reads,
	        resume_broker),
	    cmocka_unit_test_teardown(
	        test_a_worker_stops_within_its_bound_while_the_broker_is_frozen, resume_broker),
	};

	reply_pad = malloc(REPLY_BYTES + 1);
	if (reply_pad == NULL) {
		return 1;
	}
	memset(reply_pad, 'r', REPLY_BYTES);
	reply_pad[REPLY_BYTES] = '\0';
	int rc = cmocka_run_group_tests_name("frozen_worker", tests, NULL, NULL);
	free(reply_pad);
	return rc;
}
