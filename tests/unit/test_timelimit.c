/* test_timelimit.c: handler time limits (timelimit.c): a running handler is
 * tracked from begin to end; the I/O thread's check answers for each one
 * past its limit (DEADLINE_EXCEEDED, dead-lettered as handler-timeout) and
 * says when the next limit falls; a handler that ends after that is told
 * its result is dropped. The engine and the worker's publishing are the
 * test's (WRAP_test_timelimit). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadletter.h"
#include "worker_int.h"

static int64_t now_ms;
static int wakes, wrapped, dead;
static struct job *dead_jobs[8];

int64_t __wrap_engine_now(void);
void __wrap_engine_wake(struct engine *e);
void __wrap_job_wrap_reply(struct job *j);
void __wrap_worker_dead_letter(struct engine *e, struct job *j);

int64_t __wrap_engine_now(void)
{
	return now_ms;
}

void __wrap_engine_wake(struct engine *e)
{
	wakes++;
}

void __wrap_job_wrap_reply(struct job *j)
{
	wrapped++;
}

void __wrap_worker_dead_letter(struct engine *e, struct job *j)
{
	assert_true(dead < 8);
	dead_jobs[dead++] = j;
}

static struct warren_worker *w;
static struct engine *const e = (struct engine *)&now_ms; /* never dereferenced */
static struct job jobs[3];
static const struct method default_limit = {.timeout_ms = 0}, own_limit = {.timeout_ms = 200};

static int setup(void **state)
{
	now_ms = 10000;
	wakes = wrapped = dead = 0;
	w = calloc(1, sizeof(*w));
	assert_non_null(w);
	pthread_mutex_init(&w->mu, NULL);
	w->engine = e;
	w->limits.default_ms = 1000;
	w->limits.known = INT64_MAX;
	strcpy(w->topo.dlq, "rpc.svc.dlq");
	memset(jobs, 0, sizeof(jobs));
	for (int i = 0; i < 3; i++) {
		jobs[i].worker = w;
		atomic_init(&jobs[i].refs, 1);
		snprintf(jobs[i].meta.method, sizeof(jobs[i].meta.method), "svc.m%d", i);
		snprintf(jobs[i].meta.correlation_id, sizeof(jobs[i].meta.correlation_id), "c-%d",
		         i);
		jobs[i].meta.format = ENVELOPE_FMT_JSON;
	}
	return 0;
}

static int teardown(void **state)
{
	for (int i = 0; i < 3; i++) {
		free(jobs[i].reply_body);
	}
	pthread_mutex_destroy(&w->mu);
	free(w);
	return 0;
}

static void test_a_handler_that_ends_in_time_is_its_own(void **state)
{
	timelimit_begin(w, &jobs[0], &default_limit);
	assert_int_equal(jobs[0].run_state, RUN_RUNNING);
	assert_true(jobs[0].limit_at == 11000);
	assert_int_equal(jobs[0].limit_ms, 1000);
	assert_ptr_equal(LIST_FIRST(&w->limits.running), &jobs[0]);
	assert_true(timelimit_end(w, &jobs[0]));
	assert_int_equal(jobs[0].run_state, RUN_DONE);
	assert_true(LIST_EMPTY(&w->limits.running));
	/* Nothing overdue after it ended, even long after its limit. */
	assert_true(timelimit_check(w, e, 99999) == INT64_MAX);
	assert_int_equal(dead, 0);
}

static void test_the_io_thread_is_woken_only_for_a_sooner_limit(void **state)
{
	timelimit_begin(w, &jobs[0], &default_limit); /* 11000: sooner than none */
	assert_int_equal(wakes, 1);
	now_ms = 10100;
	timelimit_begin(w, &jobs[1], &default_limit); /* 11100: later */
	assert_int_equal(wakes, 1);
	timelimit_begin(w, &jobs[2], &own_limit); /* 10300: sooner */
	assert_int_equal(wakes, 2);
	assert_int_equal(jobs[2].limit_ms, 200);
	/* The check says when the next one falls. */
	assert_true(timelimit_check(w, e, 10200) == 10300);
	assert_true(w->limits.known == 10300);
	assert_int_equal(dead, 0);
}

static void test_a_handler_past_its_limit_is_answered_for(void **state)
{
	char *json = NULL;
	warren_value *v = NULL;

	timelimit_begin(w, &jobs[0], &default_limit); /* 11000 */
	timelimit_begin(w, &jobs[1], &own_limit);     /* 10200 */
	timelimit_begin(w, &jobs[2], &default_limit); /* 11000 */
	/* Exactly at its limit, one handler is overdue; the next limit is 11000. */
	assert_true(timelimit_check(w, e, 10200) == 11000);
	assert_int_equal(dead, 1);
	assert_ptr_equal(dead_jobs[0], &jobs[1]);
	assert_int_equal(wrapped, 1);
	assert_int_equal(jobs[1].run_state, RUN_ABANDONED);
	assert_int_equal(atomic_load(&jobs[1].refs), 2); /* the handler thread keeps one */
	assert_int_equal(jobs[1].status, WARREN_STATUS_DEADLINE_EXCEEDED);
	assert_string_equal(jobs[1].dead_reason, DL_R_HANDLER_TIMEOUT);
	assert_string_equal(jobs[1].dead_error,
	                    "the handler of svc.m1 ran past its time limit of 200 ms");
	/* The reply the caller gets. */
	assert_non_null(jobs[1].reply_body);
	assert_int_equal(envelope_decode_body(ENVELOPE_FMT_JSON, jobs[1].reply_body,
	                                      jobs[1].reply_len, 1 << 20, &v, NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_value_to_json(v, &json, NULL, 0), WARREN_OK);
	assert_non_null(
	    strstr(json, "\"the handler of svc.m1 ran past its time limit of 200 ms\""));
	assert_non_null(strstr(json, "\"reason\":\"handler-timeout\""));
	assert_non_null(strstr(json, "\"dlq\":\"rpc.svc.dlq\""));
	free(json);
	warren_value_free(v);
	/* The others still run, in the list. */
	assert_int_equal(jobs[0].run_state, RUN_RUNNING);
	assert_int_equal(jobs[2].run_state, RUN_RUNNING);
	/* The abandoned handler's end drops its result. */
	assert_false(timelimit_end(w, &jobs[1]));
	assert_true(timelimit_end(w, &jobs[2]));
	assert_true(timelimit_end(w, &jobs[0]));
	assert_true(LIST_EMPTY(&w->limits.running));
}

static void test_every_overdue_handler_is_answered_for_once(void **state)
{
	for (int i = 0; i < 3; i++) {
		timelimit_begin(w, &jobs[i], &own_limit);
	}
	assert_true(timelimit_check(w, e, 20000) == INT64_MAX);
	assert_int_equal(dead, 3);
	assert_true(LIST_EMPTY(&w->limits.running));
	assert_true(timelimit_check(w, e, 30000) == INT64_MAX);
	assert_int_equal(dead, 3);
	for (int i = 0; i < 3; i++) {
		assert_false(timelimit_end(w, &jobs[i]));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_a_handler_that_ends_in_time_is_its_own, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_the_io_thread_is_woken_only_for_a_sooner_limit,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_a_handler_past_its_limit_is_answered_for, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_every_overdue_handler_is_answered_for_once, setup,
	                                    teardown),
	};

	return cmocka_run_group_tests_name("timelimit", tests, NULL, NULL);
}
