/* test_lanes.c: the client's table of services whose lane was found
 * missing, until when (lanes.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "lanes.h"

#define SLOTS 3

static struct lanes_slot slot[SLOTS];
static struct lanes table = {slot, SLOTS};

static int reset(void **state)
{
	memset(slot, 0, sizeof(slot));
	return 0;
}

static void test_a_service_not_noted_has_no_time(void **state)
{
	assert_true(lanes_until(&table, "user", 4) == 0);
	assert_true(lanes_until(&table, "", 0) == 0);
}

static void test_a_noted_service_is_found_by_a_methods_first_part(void **state)
{
	lanes_note(&table, "user.get", 4, 1000);
	assert_true(lanes_until(&table, "user.delete", 4) == 1000);
	assert_true(lanes_until(&table, "user", 4) == 1000);
	/* Only the whole name: neither a prefix nor a longer one. */
	assert_true(lanes_until(&table, "use", 3) == 0);
	assert_true(lanes_until(&table, "users", 5) == 0);
}

static void test_noting_a_service_again_keeps_one_slot(void **state)
{
	lanes_note(&table, "user", 4, 1000);
	lanes_note(&table, "user", 4, 2000);
	lanes_note(&table, "mail", 4, 1500);
	lanes_note(&table, "bill", 4, 1700);
	/* Three slots, three services: none pushed out. */
	assert_true(lanes_until(&table, "user", 4) == 2000);
	assert_true(lanes_until(&table, "mail", 4) == 1500);
	assert_true(lanes_until(&table, "bill", 4) == 1700);
}

static void test_a_full_table_gives_up_the_slot_that_frees_first(void **state)
{
	lanes_note(&table, "a", 1, 3000);
	lanes_note(&table, "b", 1, 1000);
	lanes_note(&table, "c", 1, 2000);
	lanes_note(&table, "d", 1, 4000);
	assert_true(lanes_until(&table, "b", 1) == 0);
	assert_true(lanes_until(&table, "a", 1) == 3000);
	assert_true(lanes_until(&table, "c", 1) == 2000);
	assert_true(lanes_until(&table, "d", 1) == 4000);
}

static void test_a_name_longer_than_a_slot_is_kept_cut(void **state)
{
	char name[100];

	memset(name, 'x', sizeof(name));
	lanes_note(&table, name, sizeof(name), 1000);
	assert_true(lanes_until(&table, name, 64) == 1000);
	assert_true(lanes_until(&table, name, sizeof(name)) == 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_a_service_not_noted_has_no_time, reset),
	    cmocka_unit_test_setup(test_a_noted_service_is_found_by_a_methods_first_part, reset),
	    cmocka_unit_test_setup(test_noting_a_service_again_keeps_one_slot, reset),
	    cmocka_unit_test_setup(test_a_full_table_gives_up_the_slot_that_frees_first, reset),
	    cmocka_unit_test_setup(test_a_name_longer_than_a_slot_is_kept_cut, reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
