/* test_retry.c: back-off doubles from the base up to the cap, jitter stays
 * within [d, 2d), and each wait lands in the tier just below it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "retry.h"

static void test_the_delay_doubles_per_attempt_up_to_the_cap(void **state)
{
	assert_int_equal(retry_delay_ms(250, 1, 0), 250);
	assert_int_equal(retry_delay_ms(250, 2, 0), 500);
	assert_int_equal(retry_delay_ms(250, 3, 0), 1000);
	assert_int_equal(retry_delay_ms(1000, 4, 0), 8000);
	assert_int_equal(retry_delay_ms(250, 50, 0), 32000);
	assert_int_equal(retry_delay_ms(32000, 1, 0), 32000);
}

static void test_jitter_adds_up_to_the_delay_again(void **state)
{
	for (uint32_t r = 0; r < 100000; r += 7) {
		int64_t d = retry_delay_ms(1000, 2, r * 2654435761u);
		assert_true(d >= 2000 && d < 4000);
	}
	assert_int_equal(retry_delay_ms(1000, 2, 1999), 3999);
	assert_int_equal(retry_delay_ms(1000, 2, 2000), 2000);
}

static void test_each_wait_goes_to_the_tier_just_below_it(void **state)
{
	assert_string_equal(retry_tier_for(10)->name, "rpc.delay.250ms");
	assert_string_equal(retry_tier_for(250)->name, "rpc.delay.250ms");
	assert_string_equal(retry_tier_for(499)->name, "rpc.delay.250ms");
	assert_string_equal(retry_tier_for(500)->name, "rpc.delay.500ms");
	assert_string_equal(retry_tier_for(3999)->name, "rpc.delay.2s");
	assert_string_equal(retry_tier_for(63999)->name, "rpc.delay.32s");
	/* Every jittered delay differs from its tier by less than a factor 2. */
	for (int a = 1; a <= 10; a++) {
		for (uint32_t r = 0; r < 5000; r += 13) {
			int64_t d = retry_delay_ms(250, a, r);
			const struct wire_delay_tier *t = retry_tier_for(d);
			assert_true(t->ms <= d && d < 2 * t->ms);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_the_delay_doubles_per_attempt_up_to_the_cap),
		cmocka_unit_test(test_jitter_adds_up_to_the_delay_again),
		cmocka_unit_test(test_each_wait_goes_to_the_tier_just_below_it),
	};

	return cmocka_run_group_tests_name("retry", tests, NULL, NULL);
}
