/* test_breaker.c: the worker's circuit breaker (breaker.c): transient
 * failures in a row open it, anything else resets the count, the I/O
 * thread's tick pauses consuming and queues one probe when it is due, and
 * the probe's outcome closes it or waits another probe interval. The
 * engine and the worker's consumer and handler queue are the test's
 * (WRAP_test_breaker). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "worker_int.h"

static int64_t now_ms;
static int wakes, cancels, consumes, enqueued;
static bool connected;
static bool no_memory;
static struct job *queued;

int64_t __wrap_engine_now(void);
void __wrap_engine_wake(struct engine *e);
bool __wrap_engine_connected(const struct engine *e);
void __wrap_worker_cancel_consumer(struct warren_worker *w, struct engine *e);
void __wrap_worker_consume(struct warren_worker *w, struct engine *e);
struct job *__wrap_worker_job_new(struct warren_worker *w);
void __wrap_worker_enqueue(struct warren_worker *w, struct job *j);

int64_t __wrap_engine_now(void)
{
	return now_ms;
}

void __wrap_engine_wake(struct engine *e)
{
	wakes++;
}

bool __wrap_engine_connected(const struct engine *e)
{
	return connected;
}

void __wrap_worker_cancel_consumer(struct warren_worker *w, struct engine *e)
{
	cancels++;
}

void __wrap_worker_consume(struct warren_worker *w, struct engine *e)
{
	consumes++;
}

struct job *__wrap_worker_job_new(struct warren_worker *w)
{
	return no_memory ? NULL : calloc(1, sizeof(struct job));
}

void __wrap_worker_enqueue(struct warren_worker *w, struct job *j)
{
	enqueued++;
	free(queued);
	queued = j;
}

static struct warren_worker *w;
static struct engine *const e = (struct engine *)&now_ms; /* never dereferenced */

static int setup(void **state)
{
	now_ms = 1000;
	wakes = cancels = consumes = enqueued = 0;
	connected = true;
	no_memory = false;
	w = calloc(1, sizeof(*w));
	assert_non_null(w);
	pthread_mutex_init(&w->mu, NULL);
	w->engine = e;
	w->breaker.threshold = 3;
	w->breaker.probe_ms = 5000;
	return 0;
}

static int teardown(void **state)
{
	pthread_mutex_destroy(&w->mu);
	free(w);
	free(queued);
	queued = NULL;
	return 0;
}

static void fail_times(int n, int status)
{
	for (int i = 0; i < n; i++) {
		breaker_record(w, status, "db down");
	}
}

static void test_transient_failures_in_a_row_open_it(void **state)
{
	fail_times(2, WARREN_STATUS_UNAVAILABLE);
	assert_false(w->metrics.stats.breaker_open);
	assert_int_equal(wakes, 0);
	breaker_record(w, WARREN_STATUS_RESOURCE_EXHAUSTED, "pool full");
	assert_true(w->metrics.stats.breaker_open);
	assert_int_equal(w->metrics.stats.breaker_trips, 1);
	assert_string_equal(w->metrics.stats.breaker_error, "RESOURCE_EXHAUSTED: pool full");
	assert_true(w->breaker.next_probe == 1000 + 5000);
	assert_int_equal(wakes, 1); /* the I/O thread is told at once */
	/* More failures while open trip nothing more. */
	fail_times(10, WARREN_STATUS_UNAVAILABLE);
	assert_int_equal(w->metrics.stats.breaker_trips, 1);
	assert_int_equal(wakes, 1);
}

static void test_anything_but_a_transient_failure_resets_the_count(void **state)
{
	static const int others[] = {WARREN_STATUS_OK, WARREN_STATUS_INTERNAL,
	                             WARREN_STATUS_NOT_FOUND, WARREN_STATUS_DEADLINE_EXCEEDED,
	                             WARREN_STATUS_INVALID_ARGUMENT};

	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		fail_times(2, WARREN_STATUS_UNAVAILABLE);
		breaker_record(w, others[i], "");
		assert_int_equal(w->breaker.consecutive, 0);
	}
	fail_times(2, WARREN_STATUS_UNAVAILABLE);
	assert_false(w->metrics.stats.breaker_open);
	assert_int_equal(w->metrics.stats.breaker_trips, 0);
}

static void test_a_threshold_of_0_turns_it_off(void **state)
{
	w->breaker.threshold = 0;
	fail_times(1000, WARREN_STATUS_UNAVAILABLE);
	assert_false(w->metrics.stats.breaker_open);
	assert_int_equal(w->breaker.consecutive, 0);
	assert_int_equal(breaker_tick(w, e, now_ms), INT64_MAX);
	assert_int_equal(cancels, 0);
}

static void test_the_tick_pauses_consuming_then_probes_once_when_due(void **state)
{
	fail_times(3, WARREN_STATUS_UNAVAILABLE);
	/* First tick: the consumer is cancelled; the probe is not due yet. */
	assert_true(breaker_tick(w, e, now_ms) == 6000);
	assert_int_equal(cancels, 1);
	assert_true(w->breaker.paused);
	assert_int_equal(enqueued, 0);
	/* Not yet due: nothing. */
	assert_true(breaker_tick(w, e, 5999) == 6000);
	assert_int_equal(enqueued, 0);
	assert_int_equal(cancels, 1);
	/* Due: one probe, whatever the number of ticks. */
	breaker_tick(w, e, 6000);
	breaker_tick(w, e, 6001);
	breaker_tick(w, e, 9000);
	assert_int_equal(enqueued, 1);
	assert_non_null(queued);
	assert_int_equal(queued->action, JOB_PROBE);
	assert_true(w->breaker.probe_queued);
	assert_int_equal(cancels, 1);
}

static void test_a_failed_probe_waits_another_interval(void **state)
{
	fail_times(3, WARREN_STATUS_UNAVAILABLE);
	breaker_tick(w, e, now_ms);
	breaker_tick(w, e, 6000);
	now_ms = 6100;
	breaker_probed(w, WARREN_STATUS_UNAVAILABLE);
	assert_true(w->metrics.stats.breaker_open);
	assert_false(w->breaker.probe_queued);
	assert_true(w->breaker.next_probe == 11100);
	assert_true(breaker_tick(w, e, 11099) == 11100);
	assert_int_equal(enqueued, 1);
	breaker_tick(w, e, 11100);
	assert_int_equal(enqueued, 2);
}

static void test_a_probe_that_succeeds_closes_it_and_consuming_resumes(void **state)
{
	fail_times(3, WARREN_STATUS_UNAVAILABLE);
	breaker_tick(w, e, now_ms);
	breaker_tick(w, e, 6000);
	breaker_probed(w, WARREN_STATUS_OK);
	assert_false(w->metrics.stats.breaker_open);
	assert_string_equal(w->metrics.stats.breaker_error, "");
	assert_true(breaker_tick(w, e, 6001) == INT64_MAX);
	assert_false(w->breaker.paused);
	assert_int_equal(consumes, 1);
	/* Without a probe of its own the worker only tried again: one more
	 * transient failure opens it again. */
	breaker_record(w, WARREN_STATUS_UNAVAILABLE, "still down");
	assert_true(w->metrics.stats.breaker_open);
	assert_int_equal(w->metrics.stats.breaker_trips, 2);
}

static warren_status probe_fn(void *thread_data, void *arg)
{
	return WARREN_STATUS_OK;
}

static void test_after_its_own_probe_succeeds_the_count_starts_over(void **state)
{
	w->breaker.probe = probe_fn;
	fail_times(3, WARREN_STATUS_UNAVAILABLE);
	breaker_probed(w, WARREN_STATUS_OK);
	fail_times(2, WARREN_STATUS_UNAVAILABLE);
	assert_false(w->metrics.stats.breaker_open);
	breaker_record(w, WARREN_STATUS_UNAVAILABLE, "down again");
	assert_true(w->metrics.stats.breaker_open);
}

static void test_closing_while_stopping_or_disconnected_does_not_consume(void **state)
{
	fail_times(3, WARREN_STATUS_UNAVAILABLE);
	breaker_tick(w, e, now_ms);
	breaker_probed(w, WARREN_STATUS_OK);
	connected = false;
	breaker_tick(w, e, now_ms);
	assert_false(w->breaker.paused);
	assert_int_equal(consumes, 0);

	fail_times(1, WARREN_STATUS_UNAVAILABLE); /* one more reopens it (no probe) */
	breaker_tick(w, e, now_ms);
	assert_true(w->breaker.paused);
	breaker_probed(w, WARREN_STATUS_OK);
	connected = true;
	w->life.stopping = true;
	breaker_tick(w, e, now_ms);
	assert_false(w->breaker.paused);
	assert_int_equal(consumes, 0);
}

static void test_no_memory_for_the_probe_is_a_failed_probe(void **state)
{
	fail_times(3, WARREN_STATUS_UNAVAILABLE);
	breaker_tick(w, e, now_ms);
	no_memory = true;
	now_ms = 6000;
	breaker_tick(w, e, 6000);
	assert_int_equal(enqueued, 0);
	assert_false(w->breaker.probe_queued);
	assert_true(w->metrics.stats.breaker_open);
	assert_true(w->breaker.next_probe == 11000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_transient_failures_in_a_row_open_it, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_anything_but_a_transient_failure_resets_the_count,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_a_threshold_of_0_turns_it_off, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_the_tick_pauses_consuming_then_probes_once_when_due, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_a_failed_probe_waits_another_interval, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(
	        test_a_probe_that_succeeds_closes_it_and_consuming_resumes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_after_its_own_probe_succeeds_the_count_starts_over,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_closing_while_stopping_or_disconnected_does_not_consume, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_memory_for_the_probe_is_a_failed_probe, setup,
	                                    teardown),
	};

	return cmocka_run_group_tests_name("breaker", tests, NULL, NULL);
}
