/* test_utf8.c: strict UTF-8 (RFC 3629) at every boundary: the first and last
 * code point of each length, overlongs, surrogates, code points above
 * U+10FFFF, bytes that never occur, and sequences cut short. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "utf8.h"

/* VALID(BYTES...): utf8_valid over exactly these bytes. */
#define BYTES(...) ((const unsigned char[]){__VA_ARGS__})
#define VALID(...) utf8_valid(BYTES(__VA_ARGS__), sizeof(BYTES(__VA_ARGS__)))

static void test_the_empty_string_and_ascii_are_valid(void **state)
{
	const char text[] = "plain ASCII, punctuation ~!@#$%^&*() and \x7f";

	assert_true(utf8_valid("", 0));
	assert_true(utf8_valid(text, strlen(text)));
	/* A NUL byte is a valid code point: the length decides, not a NUL. */
	assert_true(VALID(0x00));
	assert_true(VALID('a', 0x00, 'b'));
	/* NULL with no bytes is nothing to read. */
	assert_true(utf8_valid(NULL, 0));
}

static void test_the_first_and_last_code_point_of_each_length(void **state)
{
	assert_true(VALID(0x7f));                   /* U+007F */
	assert_true(VALID(0xc2, 0x80));             /* U+0080 */
	assert_true(VALID(0xdf, 0xbf));             /* U+07FF */
	assert_true(VALID(0xe0, 0xa0, 0x80));       /* U+0800 */
	assert_true(VALID(0xef, 0xbf, 0xbf));       /* U+FFFF */
	assert_true(VALID(0xf0, 0x90, 0x80, 0x80)); /* U+10000 */
	assert_true(VALID(0xf4, 0x8f, 0xbf, 0xbf)); /* U+10FFFF */
	/* "é€😀" written out. */
	assert_true(utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
}

static void test_overlong_forms_are_refused(void **state)
{
	assert_false(VALID(0xc0, 0x80));             /* U+0000 in two bytes */
	assert_false(VALID(0xc1, 0xbf));             /* U+007F in two bytes */
	assert_false(VALID(0xe0, 0x80, 0x80));       /* U+0000 in three */
	assert_false(VALID(0xe0, 0x9f, 0xbf));       /* U+07FF in three */
	assert_false(VALID(0xf0, 0x80, 0x80, 0x80)); /* U+0000 in four */
	assert_false(VALID(0xf0, 0x8f, 0xbf, 0xbf)); /* U+FFFF in four */
}

static void test_surrogates_are_refused_and_their_neighbours_taken(void **state)
{
	assert_true(VALID(0xed, 0x9f, 0xbf));  /* U+D7FF */
	assert_false(VALID(0xed, 0xa0, 0x80)); /* U+D800 */
	assert_false(VALID(0xed, 0xbf, 0xbf)); /* U+DFFF */
	assert_true(VALID(0xee, 0x80, 0x80));  /* U+E000 */
	/* A CESU-8 pair (U+1F600 as two surrogates) is not UTF-8. */
	assert_false(VALID(0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80));
}

static void test_nothing_above_u10ffff(void **state)
{
	assert_false(VALID(0xf4, 0x90, 0x80, 0x80)); /* U+110000 */
	assert_false(VALID(0xf5, 0x80, 0x80, 0x80));
	assert_false(VALID(0xf7, 0xbf, 0xbf, 0xbf));
	assert_false(VALID(0xf8, 0x88, 0x80, 0x80, 0x80)); /* the old five-byte form */
	assert_false(VALID(0xfc, 0x84, 0x80, 0x80, 0x80, 0x80));
}

static void test_bytes_that_never_occur_are_refused(void **state)
{
	assert_false(VALID(0xfe));
	assert_false(VALID(0xff));
	assert_false(VALID('a', 0xff, 'b'));
}

static void test_a_continuation_byte_alone_is_refused(void **state)
{
	assert_false(VALID(0x80));
	assert_false(VALID(0xbf));
	assert_false(VALID('a', 0x80));
	/* One continuation byte too many after a complete sequence. */
	assert_false(VALID(0xc3, 0xa9, 0xa9));
}

static void test_a_sequence_cut_short_is_refused(void **state)
{
	assert_false(VALID(0xc3));
	assert_false(VALID(0xe2, 0x82));
	assert_false(VALID(0xf0, 0x9f, 0x98));
	/* Cut by the length: the bytes after len are not read. */
	assert_false(utf8_valid("\xe2\x82\xac", 2));
	assert_true(utf8_valid("ab\xe2\x82\xac", 2));
	/* A lead byte followed by ASCII where a continuation belongs. */
	assert_false(VALID(0xc3, 'a'));
	assert_false(VALID(0xe2, 0x82, 'a'));
	assert_false(VALID(0xf0, 0x9f, 0x98, 'a'));
	assert_false(VALID(0xe2, 0xc2, 0xac));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_the_empty_string_and_ascii_are_valid),
	    cmocka_unit_test(test_the_first_and_last_code_point_of_each_length),
	    cmocka_unit_test(test_overlong_forms_are_refused),
	    cmocka_unit_test(test_surrogates_are_refused_and_their_neighbours_taken),
	    cmocka_unit_test(test_nothing_above_u10ffff),
	    cmocka_unit_test(test_bytes_that_never_occur_are_refused),
	    cmocka_unit_test(test_a_continuation_byte_alone_is_refused),
	    cmocka_unit_test(test_a_sequence_cut_short_is_refused),
	};

	return cmocka_run_group_tests_name("utf8", tests, NULL, NULL);
}
