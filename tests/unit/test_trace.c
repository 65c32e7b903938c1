/* test_trace.c: traceparent values: valid ones are continued with a span
 * of their own, anything else starts a new trace. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <sodium.h>

#include "trace.h"

static void test_validity(void **state)
{
	assert_true(trace_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
	assert_false(trace_valid("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
	assert_false(trace_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
	assert_false(trace_valid("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
	assert_false(trace_valid("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
	assert_false(trace_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"));
	assert_false(trace_valid(""));
	assert_false(trace_valid(NULL));
}

static void test_a_child_continues_the_trace_with_a_new_span(void **state)
{
	const char *parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
	char a[TRACEPARENT_LEN], b[TRACEPARENT_LEN];

	trace_child(parent, a);
	trace_child(parent, b);
	assert_true(trace_valid(a));
	assert_memory_equal(a, parent, 36);
	assert_string_equal(a + 52, "-00");
	assert_memory_not_equal(a + 36, b + 36, 16);
}

static void test_no_parent_starts_a_sampled_trace(void **state)
{
	char a[TRACEPARENT_LEN], b[TRACEPARENT_LEN];

	trace_child(NULL, a);
	trace_child("garbage", b);
	assert_true(trace_valid(a));
	assert_true(trace_valid(b));
	assert_string_equal(a + 52, "-01");
	assert_memory_not_equal(a + 3, b + 3, 32);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_validity),
		cmocka_unit_test(test_a_child_continues_the_trace_with_a_new_span),
		cmocka_unit_test(test_no_parent_starts_a_sampled_trace),
	};

	if (sodium_init() < 0) {
		return 1;
	}
	return cmocka_run_group_tests_name("trace", tests, NULL, NULL);
}
