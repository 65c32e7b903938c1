/* test_errors.c: every local error has a description, every gRPC status
 * name parses back to its number, and local errors map to the statuses a
 * caller of rpc-call sees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <string.h>
#include <time.h>

#include "warren.h"

#define LAST_ERR    WARREN_ERR_SYSTEM
#define LAST_STATUS WARREN_STATUS_UNAUTHENTICATED

static void test_every_error_has_its_own_lower_case_description(void **state)
{
	for (int e = WARREN_OK; e <= LAST_ERR; e++) {
		const char *s = warren_err_str((warren_err)e);

		assert_non_null(s);
		assert_true(strlen(s) > 0);
		assert_true(islower((unsigned char)s[0]));
		for (int other = WARREN_OK; other < e; other++) {
			assert_string_not_equal(s, warren_err_str((warren_err)other));
		}
	}
	assert_string_equal(warren_err_str(WARREN_ERR_TIMEOUT), "deadline exceeded");
	assert_string_equal(warren_err_str(WARREN_ERR_NOMEM), "out of memory");
}

static void test_an_error_number_outside_the_enum_still_has_a_text(void **state)
{
	assert_string_equal(warren_err_str((warren_err)99), "unknown error");
	assert_string_equal(warren_err_str((warren_err)-1), "unknown error");
}

static void test_status_names_round_trip_through_parse(void **state)
{
	for (int s = WARREN_STATUS_OK; s <= LAST_STATUS; s++) {
		warren_status back = (warren_status)-1;

		assert_int_equal(warren_status_parse(warren_status_name(s), &back), WARREN_OK);
		assert_int_equal(back, s);
	}
	assert_string_equal(warren_status_name(WARREN_STATUS_OK), "OK");
	assert_string_equal(warren_status_name(WARREN_STATUS_NOT_FOUND), "NOT_FOUND");
	assert_string_equal(warren_status_name(WARREN_STATUS_UNAUTHENTICATED), "UNAUTHENTICATED");
}

static void test_a_status_out_of_range_is_named_unknown(void **state)
{
	assert_string_equal(warren_status_name(-1), "UNKNOWN");
	assert_string_equal(warren_status_name(LAST_STATUS + 1), "UNKNOWN");
	assert_string_equal(warren_status_name(1000), "UNKNOWN");
}

static void test_parse_refuses_unknown_or_differently_cased_names(void **state)
{
	warren_status s = WARREN_STATUS_ABORTED;

	assert_int_equal(warren_status_parse("NOPE", &s), WARREN_ERR_INVALID);
	assert_int_equal(warren_status_parse("not_found", &s), WARREN_ERR_INVALID);
	assert_int_equal(warren_status_parse("", &s), WARREN_ERR_INVALID);
	assert_int_equal(warren_status_parse(NULL, &s), WARREN_ERR_INVALID);
	assert_int_equal(warren_status_parse("OK", NULL), WARREN_ERR_INVALID);
	assert_int_equal(s, WARREN_STATUS_ABORTED);
}

static void test_local_errors_map_to_the_statuses_callers_see(void **state)
{
	static const int want[][2] = {
	    {WARREN_OK, WARREN_STATUS_OK},
	    {WARREN_ERR_INVALID, WARREN_STATUS_INVALID_ARGUMENT},
	    {WARREN_ERR_NOMEM, WARREN_STATUS_RESOURCE_EXHAUSTED},
	    {WARREN_ERR_CONFIG, WARREN_STATUS_INVALID_ARGUMENT},
	    {WARREN_ERR_DECODE, WARREN_STATUS_INTERNAL},
	    {WARREN_ERR_TRANSPORT, WARREN_STATUS_UNAVAILABLE},
	    {WARREN_ERR_BROKER, WARREN_STATUS_UNAVAILABLE},
	    {WARREN_ERR_UNROUTABLE, WARREN_STATUS_UNAVAILABLE},
	    {WARREN_ERR_TIMEOUT, WARREN_STATUS_DEADLINE_EXCEEDED},
	    {WARREN_ERR_REMOTE, WARREN_STATUS_UNKNOWN},
	    {WARREN_ERR_FULL, WARREN_STATUS_RESOURCE_EXHAUSTED},
	    {WARREN_ERR_CLOSED, WARREN_STATUS_CANCELLED},
	    {WARREN_ERR_SYSTEM, WARREN_STATUS_INTERNAL},
	};

	assert_int_equal(sizeof(want) / sizeof(want[0]), LAST_ERR + 1);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_int_equal(warren_err_status((warren_err)want[i][0]), want[i][1]);
	}
	assert_int_equal(warren_err_status((warren_err)99), WARREN_STATUS_UNKNOWN);
}

static void test_each_error_has_the_exit_status_of_the_table(void **state)
{
	static const int want[][2] = {
	    {WARREN_OK, 0},           {WARREN_ERR_REMOTE, 1},    {WARREN_ERR_CONFIG, 3},
	    {WARREN_ERR_TRANSPORT, 4}, {WARREN_ERR_BROKER, 4},   {WARREN_ERR_UNROUTABLE, 4},
	    {WARREN_ERR_CLOSED, 4},    {WARREN_ERR_TIMEOUT, 5},  {WARREN_ERR_NOMEM, 6},
	    {WARREN_ERR_DECODE, 6},    {WARREN_ERR_FULL, 6},     {WARREN_ERR_SYSTEM, 6},
	    {WARREN_ERR_INVALID, 7},
	};

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_int_equal(warren_exit_for((warren_err)want[i][0]), want[i][1]);
	}
	assert_int_equal(warren_exit_for((warren_err)99), WARREN_EXIT_INTERNAL);
}

static void test_now_is_wall_clock_milliseconds(void **state)
{
	int64_t before = (int64_t)time(NULL) * 1000;
	int64_t now = warren_now_ms();
	int64_t after = ((int64_t)time(NULL) + 1) * 1000;

	assert_true(now >= before && now <= after);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_error_has_its_own_lower_case_description),
	    cmocka_unit_test(test_an_error_number_outside_the_enum_still_has_a_text),
	    cmocka_unit_test(test_status_names_round_trip_through_parse),
	    cmocka_unit_test(test_a_status_out_of_range_is_named_unknown),
	    cmocka_unit_test(test_parse_refuses_unknown_or_differently_cased_names),
	    cmocka_unit_test(test_local_errors_map_to_the_statuses_callers_see),
	    cmocka_unit_test(test_each_error_has_the_exit_status_of_the_table),
	    cmocka_unit_test(test_now_is_wall_clock_milliseconds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
