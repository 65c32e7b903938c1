/* test_handlerq.c: the handler queue (handlerq.c): jobs come out in the
 * order queued, a waiting handler wakes for a job, quit ends every
 * handler's wait, and a lost connection's jobs are taken back with the
 * rest left in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "handlerq.h"
#include "worker_int.h"

#define NJOBS 5

static struct job jobs[NJOBS];

static int setup(void **state)
{
	static struct handlerq q;

	memset(jobs, 0, sizeof(jobs));
	handlerq_init(&q, 2);
	*state = &q;
	return 0;
}

static int teardown(void **state)
{
	handlerq_destroy(*state);
	return 0;
}

static void jobs_come_out_in_the_order_queued(void **state)
{
	struct handlerq *q = *state;

	for (int i = 0; i < NJOBS; i++) {
		handlerq_push(q, &jobs[i], i % 2 == 0);
	}
	for (int i = 0; i < NJOBS; i++) {
		assert_ptr_equal(handlerq_pop(q), &jobs[i]);
	}
}

/* Pushes without a signal are counted for the end of the turn, which
 * wakes handlers once and starts counting again. */
static void unsignaled_pushes_are_counted_until_the_wake(void **state)
{
	struct handlerq *q = *state;

	handlerq_push(q, &jobs[0], false);
	handlerq_push(q, &jobs[1], false);
	handlerq_push(q, &jobs[2], true);
	assert_int_equal(q->unsignaled, 2);
	handlerq_wake(q);
	assert_int_equal(q->unsignaled, 0);
}

struct popper {
	struct handlerq *q;
	struct job *got;
	atomic_bool done;
};

static void *pop_one(void *arg)
{
	struct popper *p = arg;

	p->got = handlerq_pop(p->q);
	atomic_store(&p->done, true);
	return NULL;
}

static void await_done(struct popper *p)
{
	for (int i = 0; i < 500 && !atomic_load(&p->done); i++) {
		usleep(10000);
	}
	assert_true(atomic_load(&p->done));
}

/* Gives the popper time to block in handlerq_pop on the empty queue, and
 * checks it has not come back: what follows then wakes a waiting handler,
 * not one that has yet to look. */
static void let_it_wait(struct popper *p)
{
	usleep(100000);
	assert_false(atomic_load(&p->done));
}

static void a_waiting_handler_gets_the_job_queued_later(void **state)
{
	struct popper p = {.q = *state};
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, pop_one, &p), 0);
	let_it_wait(&p);
	handlerq_push(p.q, &jobs[3], true);
	await_done(&p);
	pthread_join(t, NULL);
	assert_ptr_equal(p.got, &jobs[3]);
}

/* A stop: the waiting handlers end, and what is still queued is never
 * started (the broker has it back). */
static void quit_ends_the_wait_and_leaves_the_queued_jobs(void **state)
{
	struct popper p = {.q = *state};
	struct job_queue left = TAILQ_HEAD_INITIALIZER(left);
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, pop_one, &p), 0);
	let_it_wait(&p);
	handlerq_quit(p.q);
	await_done(&p);
	pthread_join(t, NULL);
	assert_null(p.got);
	handlerq_push(p.q, &jobs[0], true);
	assert_null(handlerq_pop(p.q));
	handlerq_take_if(p.q, NULL, NULL, &left);
	assert_ptr_equal(TAILQ_FIRST(&left), &jobs[0]);
}

static bool odd(const struct job *j, void *arg)
{
	int *calls = arg;

	(*calls)++;
	return (j - jobs) % 2 == 1;
}

/* A lost connection: its jobs leave the queue; the others stay, in order. */
static void take_if_takes_the_matching_jobs_and_keeps_the_others_in_order(void **state)
{
	struct handlerq *q = *state;
	struct job_queue taken = TAILQ_HEAD_INITIALIZER(taken);
	struct job *j;
	int calls = 0, n = 0;

	for (int i = 0; i < NJOBS; i++) {
		handlerq_push(q, &jobs[i], true);
	}
	handlerq_take_if(q, odd, &calls, &taken);
	assert_int_equal(calls, NJOBS);
	TAILQ_FOREACH(j, &taken, queued)
	{
		assert_ptr_equal(j, &jobs[2 * n + 1]);
		n++;
	}
	assert_int_equal(n, 2);
	assert_ptr_equal(handlerq_pop(q), &jobs[0]);
	assert_ptr_equal(handlerq_pop(q), &jobs[2]);
	assert_ptr_equal(handlerq_pop(q), &jobs[4]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(jobs_come_out_in_the_order_queued, setup, teardown),
	    cmocka_unit_test_setup_teardown(unsignaled_pushes_are_counted_until_the_wake, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(a_waiting_handler_gets_the_job_queued_later, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(quit_ends_the_wait_and_leaves_the_queued_jobs, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(
	        take_if_takes_the_matching_jobs_and_keeps_the_others_in_order, setup, teardown),
	};

	return cmocka_run_group_tests_name("handlerq", tests, NULL, NULL);
}
