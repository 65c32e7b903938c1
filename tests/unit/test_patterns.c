/* test_patterns.c: lists of method patterns with values, as security.allow,
 * security.encrypt and client.transient take them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "patterns.h"

static void test_entries_come_with_their_values_or_none(void **state)
{
	const char *list = "user.*=app+ops,  billing.get, *=";
	char pattern[32], value[32];

	assert_true(patterns_next(&list, pattern, sizeof(pattern), value, sizeof(value)));
	assert_string_equal(pattern, "user.*");
	assert_string_equal(value, "app+ops");
	assert_true(patterns_next(&list, pattern, sizeof(pattern), value, sizeof(value)));
	assert_string_equal(pattern, "billing.get");
	assert_string_equal(value, "");
	assert_true(patterns_next(&list, pattern, sizeof(pattern), value, sizeof(value)));
	assert_string_equal(pattern, "*");
	assert_string_equal(value, "");
	assert_false(patterns_next(&list, pattern, sizeof(pattern), value, sizeof(value)));
}

static void test_the_first_matching_entry_decides(void **state)
{
	const char *list = "user.get=first, user.*=second, *=rest";
	char value[32];

	assert_true(patterns_match(list, "user.get", value, sizeof(value)));
	assert_string_equal(value, "first");
	assert_true(patterns_match(list, "user.create", value, sizeof(value)));
	assert_string_equal(value, "second");
	assert_true(patterns_match(list, "billing.get", value, sizeof(value)));
	assert_string_equal(value, "rest");
}

static void test_no_entry_no_match(void **state)
{
	char value[32] = "untouched";

	assert_false(patterns_match("", "user.get", value, sizeof(value)));
	assert_false(patterns_match("user.*", "billing.get", value, sizeof(value)));
	/* A pattern matches whole names, not prefixes. */
	assert_false(patterns_match("user", "user.get", value, sizeof(value)));
	/* No room asked for the value: only whether it matches. */
	assert_true(patterns_match("user.*=x", "user.get", NULL, 0));
}

static void test_values_too_long_are_cut(void **state)
{
	const char *list = "a=0123456789";
	char pattern[8], value[5];

	assert_true(patterns_next(&list, pattern, sizeof(pattern), value, sizeof(value)));
	assert_string_equal(value, "0123");
	assert_string_equal(list, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_entries_come_with_their_values_or_none),
	    cmocka_unit_test(test_the_first_matching_entry_decides),
	    cmocka_unit_test(test_no_entry_no_match),
	    cmocka_unit_test(test_values_too_long_are_cut),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
