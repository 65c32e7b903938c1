/* test_params.c: the user service's field checks (src/workers/user/params.c):
 * each refusal is INVALID_ARGUMENT with "field NAME: what is wrong", the
 * first failure ends the check, and absent optional fields are no failure.
 * The request is the test's: warren_request_params and warren_request_fail
 * are wrapped (WRAP_test_params). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "user/params.h"
#include "warren.h"

/* The request: its params, and the failures it was given. */
static warren_value *params;
static int fails;
static warren_status failed_status;
static char failed_message[512];

const warren_value *__wrap_warren_request_params(const warren_request *r);
warren_status __wrap_warren_request_fail(warren_request *r, warren_status status,
                                         warren_value *details, const char *fmt, ...);

const warren_value *__wrap_warren_request_params(const warren_request *r)
{
	return params;
}

warren_status __wrap_warren_request_fail(warren_request *r, warren_status status,
                                         warren_value *details, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(failed_message, sizeof(failed_message), fmt, ap);
	va_end(ap);
	warren_value_free(details);
	failed_status = status;
	fails++;
	return status;
}

/* Starts a check over the JSON text as params. */
static void start(struct check *c, const char *json, const char *const *allowed)
{
	char why[200];

	warren_value_free(params);
	params = NULL;
	fails = 0;
	failed_message[0] = '\0';
	assert_int_equal(warren_value_from_json(json, strlen(json), &params, why, sizeof(why)),
	                 WARREN_OK);
	check_start(c, (warren_request *)&params, allowed);
}

/* The check failed once, with this message. */
static void assert_refused(const struct check *c, const char *message)
{
	assert_int_equal(c->status, WARREN_STATUS_INVALID_ARGUMENT);
	assert_int_equal(failed_status, WARREN_STATUS_INVALID_ARGUMENT);
	assert_int_equal(fails, 1);
	assert_string_equal(failed_message, message);
}

static int teardown(void **state)
{
	warren_value_free(params);
	params = NULL;
	return 0;
}

static const char *const user_fields[] = {"id", "name", "email", "prefs", NULL};

static void test_params_must_be_a_map_of_known_fields(void **state)
{
	struct check c;

	start(&c, "[1, 2]", user_fields);
	assert_refused(&c, "params: expected a map, got array");
	start(&c, "{\"id\": 1, \"nmae\": \"x\"}", user_fields);
	assert_refused(&c, "unknown field \"nmae\"");
	start(&c, "{}", user_fields);
	assert_int_equal(c.status, WARREN_STATUS_OK);
	assert_int_equal(fails, 0);
}

static void test_an_int_within_its_range_inclusive(void **state)
{
	struct check c;
	int64_t id = 0;

	start(&c, "{\"id\": 1}", user_fields);
	assert_true(check_int(&c, "id", true, 1, INT64_MAX, &id));
	assert_int_equal(id, 1);
	start(&c, "{\"id\": 9223372036854775807}", user_fields);
	assert_true(check_int(&c, "id", true, 1, INT64_MAX, &id));
	assert_true(id == INT64_MAX);

	start(&c, "{\"id\": 0}", user_fields);
	assert_false(check_int(&c, "id", true, 1, 100, &id));
	assert_refused(&c, "field id: 0 is out of range 1..100");
	start(&c, "{\"id\": -5}", user_fields);
	assert_false(check_int(&c, "id", true, -4, 4, &id));
	assert_refused(&c, "field id: -5 is out of range -4..4");
	start(&c, "{\"id\": \"7\"}", user_fields);
	assert_false(check_int(&c, "id", true, 1, 100, &id));
	assert_refused(&c, "field id: expected integer, got string");
	start(&c, "{\"id\": 1.5}", user_fields);
	assert_false(check_int(&c, "id", true, 1, 100, &id));
	assert_refused(&c, "field id: expected integer, got float");
}

static void test_an_absent_field_fails_only_when_required(void **state)
{
	struct check c;
	const char *s = "unset";
	int64_t n = -1;

	start(&c, "{}", user_fields);
	assert_false(check_str(&c, "name", false, 1, 10, &s));
	assert_false(check_int(&c, "id", false, 1, 10, &n));
	assert_int_equal(c.status, WARREN_STATUS_OK);
	assert_string_equal(s, "unset");
	assert_int_equal(n, -1);
	assert_false(check_int(&c, "id", true, 1, 10, &n));
	assert_refused(&c, "field id: required");
}

static void test_the_first_failure_ends_the_check(void **state)
{
	struct check c;
	const char *s = NULL;
	int64_t n = 0;

	start(&c, "{\"id\": \"x\", \"name\": \"ok\"}", user_fields);
	assert_false(check_int(&c, "id", true, 1, 10, &n));
	/* Later fields, valid or not, are not looked at. */
	assert_false(check_str(&c, "name", true, 1, 10, &s));
	assert_null(s);
	assert_false(check_str(&c, "email", true, 1, 10, &s));
	check_fail(&c, "field %s: another", "x");
	assert_refused(&c, "field id: expected integer, got string");
}

static void test_a_string_by_bytes_without_control_characters(void **state)
{
	struct check c;
	const char *s = NULL;

	start(&c, "{\"name\": \"Ada\"}", user_fields);
	assert_true(check_str(&c, "name", true, 3, 3, &s));
	assert_string_equal(s, "Ada");
	/* Lengths are in bytes: "é" is two. */
	start(&c, "{\"name\": \"\\u00e9\"}", user_fields);
	assert_false(check_str(&c, "name", true, 1, 1, &s));
	assert_refused(&c, "field name: must be 1 to 1 bytes without control characters");
	start(&c, "{\"name\": \"\"}", user_fields);
	assert_false(check_str(&c, "name", true, 1, 100, &s));
	assert_refused(&c, "field name: must be 1 to 100 bytes without control characters");
	start(&c, "{\"name\": \"a\\nb\"}", user_fields);
	assert_false(check_str(&c, "name", true, 1, 100, &s));
	assert_refused(&c, "field name: must be 1 to 100 bytes without control characters");
	start(&c, "{\"name\": \"a\\u007fb\"}", user_fields);
	assert_false(check_str(&c, "name", true, 1, 100, &s));
	assert_refused(&c, "field name: must be 1 to 100 bytes without control characters");
	start(&c, "{\"name\": \"a\\u0000b\"}", user_fields);
	assert_false(check_str(&c, "name", true, 1, 100, &s));
	assert_refused(&c, "field name: must be 1 to 100 bytes without control characters");
	start(&c, "{\"name\": 5}", user_fields);
	assert_false(check_str(&c, "name", true, 1, 100, &s));
	assert_refused(&c, "field name: expected string, got integer");
}

static void test_an_email_is_one_at_with_something_on_each_side(void **state)
{
	static const char *const bad[] = {"ada", "@example.org", "ada@", "a@b@c", "ada @x.org"};
	struct check c;
	const char *s = NULL;
	char json[128], want[160];

	start(&c, "{\"email\": \"ada@example.org\"}", user_fields);
	assert_true(check_email(&c, "email", true, &s));
	assert_string_equal(s, "ada@example.org");
	start(&c, "{\"email\": \"a@b\"}", user_fields);
	assert_true(check_email(&c, "email", true, &s));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(json, sizeof(json), "{\"email\": \"%s\"}", bad[i]);
		snprintf(want, sizeof(want), "field email: \"%s\" is not an email address", bad[i]);
		start(&c, json, user_fields);
		assert_false(check_email(&c, "email", true, &s));
		assert_refused(&c, want);
	}
	/* A tab is a control character: refused before the address is looked at. */
	start(&c, "{\"email\": \"ada@x\\t.org\"}", user_fields);
	assert_false(check_email(&c, "email", true, &s));
	assert_refused(&c, "field email: must be 3 to 254 bytes without control characters");
	/* Under three bytes it is a length failure first. */
	start(&c, "{\"email\": \"a@\"}", user_fields);
	assert_false(check_email(&c, "email", true, &s));
	assert_refused(&c, "field email: must be 3 to 254 bytes without control characters");
}

static void test_a_map_as_compact_json_within_its_size(void **state)
{
	struct check c;
	char *json = NULL;

	start(&c, "{\"prefs\": {\"channel\": \"sms\", \"quiet\": [22, 7]}}", user_fields);
	assert_true(check_map_json(&c, "prefs", true, 64, &json));
	assert_string_equal(json, "{\"channel\":\"sms\",\"quiet\":[22,7]}");
	free(json);
	json = NULL;
	/* Exactly at the limit is taken; one byte over is not. */
	start(&c, "{\"prefs\": {\"a\": 1}}", user_fields);
	assert_true(check_map_json(&c, "prefs", true, 7, &json));
	free(json);
	json = NULL;
	start(&c, "{\"prefs\": {\"a\": 1}}", user_fields);
	assert_false(check_map_json(&c, "prefs", true, 6, &json));
	assert_null(json);
	assert_refused(&c, "field prefs: larger than 6 bytes as JSON");
	start(&c, "{\"prefs\": [1]}", user_fields);
	assert_false(check_map_json(&c, "prefs", true, 64, &json));
	assert_refused(&c, "field prefs: expected map, got array");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_params_must_be_a_map_of_known_fields, teardown),
	    cmocka_unit_test_teardown(test_an_int_within_its_range_inclusive, teardown),
	    cmocka_unit_test_teardown(test_an_absent_field_fails_only_when_required, teardown),
	    cmocka_unit_test_teardown(test_the_first_failure_ends_the_check, teardown),
	    cmocka_unit_test_teardown(test_a_string_by_bytes_without_control_characters, teardown),
	    cmocka_unit_test_teardown(test_an_email_is_one_at_with_something_on_each_side,
	                              teardown),
	    cmocka_unit_test_teardown(test_a_map_as_compact_json_within_its_size, teardown),
	};

	return cmocka_run_group_tests_name("params", tests, NULL, NULL);
}
