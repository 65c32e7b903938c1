/* test_spare.c: a worker's recycled reply buffers (spare.c, worker_spare_*):
 * a large buffer put back is what the next large reply gets, small ones
 * are freed, and what is kept is bounded in number and in bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "worker_int.h"

static int setup(void **state)
{
	struct warren_worker *w = calloc(1, sizeof(*w));

	assert_non_null(w);
	spare_init(&w->spares);
	*state = w;
	return 0;
}

static int teardown(void **state)
{
	struct warren_worker *w = *state;

	worker_spare_free(w);
	assert_int_equal(w->spares.n, 0);
	free(w);
	return 0;
}

static void test_a_large_reply_buffer_is_reused_for_the_next_large_reply(void **state)
{
	struct warren_worker *w = *state;
	void *p = worker_spare_take(65541, w), *q;

	assert_non_null(p);
	memset(p, 0xab, 65541);
	worker_spare_put(w, p);
	assert_int_equal(w->spares.n, 1);
	q = worker_spare_take(65000, w); /* smaller fits too */
	assert_ptr_equal(q, p);
	assert_int_equal(w->spares.n, 0);
	assert_int_equal(w->spares.bytes, 0);
	worker_spare_put(w, q);
}

static void test_a_spare_too_small_is_left_for_a_smaller_reply(void **state)
{
	struct warren_worker *w = *state;
	void *small = worker_spare_take(20000, w), *big;

	worker_spare_put(w, small);
	big = worker_spare_take(65536, w);
	assert_ptr_not_equal(big, small);
	assert_true(malloc_usable_size(big) >= 65536);
	assert_int_equal(w->spares.n, 1);
	worker_spare_put(w, big);
	assert_int_equal(w->spares.n, 2);
}

static void test_small_buffers_are_freed_not_kept(void **state)
{
	struct warren_worker *w = *state;

	worker_spare_put(w, worker_spare_take(100, w));
	worker_spare_put(w, malloc(WORKER_SPARE_MIN / 2));
	worker_spare_put(w, NULL);
	assert_int_equal(w->spares.n, 0);
	assert_int_equal(w->spares.bytes, 0);
}

static void test_the_spares_are_bounded_in_number_and_in_bytes(void **state)
{
	struct warren_worker *w = *state;

	for (int i = 0; i < WORKER_SPARES + 10; i++) {
		worker_spare_put(w, malloc(65536));
	}
	assert_int_equal(w->spares.n, WORKER_SPARES);
	assert_true(w->spares.bytes <= WORKER_SPARE_BYTES);
	worker_spare_free(w);
	for (int i = 0; i < 20; i++) {
		worker_spare_put(w, malloc(1024 * 1024));
	}
	assert_true(w->spares.n < 20);
	assert_true(w->spares.bytes <= WORKER_SPARE_BYTES);
	assert_true(w->spares.bytes + 1024 * 1024 > WORKER_SPARE_BYTES); /* filled up to it */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
	        test_a_large_reply_buffer_is_reused_for_the_next_large_reply, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_a_spare_too_small_is_left_for_a_smaller_reply,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_small_buffers_are_freed_not_kept, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_the_spares_are_bounded_in_number_and_in_bytes,
	                                    setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
