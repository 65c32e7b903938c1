/* test_value.c: the warren_value tree (containers, accessors, copy,
 * equality) and its JSON form (strict parsing with exact messages, compact
 * output in insertion order). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "warren.h"

static char *to_json(const warren_value *v)
{
	char *text = NULL;
	char why[200] = "";

	assert_int_equal(warren_value_to_json(v, &text, why, sizeof(why)), WARREN_OK);
	assert_non_null(text);
	return text;
}

static void expect_json(const warren_value *v, const char *want)
{
	char *text = to_json(v);

	assert_string_equal(text, want);
	free(text);
}

static warren_value *parse(const char *text)
{
	warren_value *v = NULL;
	char why[200] = "";

	assert_int_equal(warren_value_from_json(text, strlen(text), &v, why, sizeof(why)),
	                 WARREN_OK);
	assert_string_equal(why, "");
	return v;
}

static void expect_parse_error(const char *text, size_t len, const char *msg)
{
	warren_value *v = (warren_value *)1;
	char why[200] = "";

	assert_int_equal(warren_value_from_json(text, len, &v, why, sizeof(why)), WARREN_ERR_DECODE);
	assert_null(v);
	assert_string_equal(why, msg);
}

static void test_scalars_keep_their_type_and_value(void **state)
{
	warren_value *v[] = {warren_nil(),        warren_bool(true),  warren_int(-42),
	                     warren_float(2.5),   warren_str("hi"),   warren_bin("\0\1", 2),
	                     warren_array(),      warren_map()};
	bool b = false;
	int64_t i = 0;
	double d = 0;
	const char *s = NULL;
	const void *p = NULL;
	size_t len = 0;

	for (int t = 0; t < 8; t++) {
		assert_int_equal(warren_value_type(v[t]), t);
	}
	assert_true(warren_value_get_bool(v[1], &b) && b);
	assert_true(warren_value_get_int(v[2], &i) && i == -42);
	assert_true(warren_value_get_float(v[3], &d) && d == 2.5);
	assert_true(warren_value_get_float(v[2], &d) && d == -42.0); /* INT converts */
	assert_true(warren_value_get_str(v[4], &s, &len) && len == 2 && strcmp(s, "hi") == 0);
	assert_true(warren_value_get_bin(v[5], &p, &len) && len == 2 && memcmp(p, "\0\1", 2) == 0);
	/* The wrong getter says no and leaves the output alone. */
	i = 7;
	assert_false(warren_value_get_int(v[3], &i));
	assert_int_equal(i, 7);
	assert_false(warren_value_get_str(v[5], &s, &len));
	assert_false(warren_value_get_bool(NULL, &b));
	assert_int_equal(warren_value_type(NULL), WARREN_NIL);
	for (int t = 0; t < 8; t++) {
		warren_value_free(v[t]);
	}
}

static void test_type_names_are_the_words_users_see(void **state)
{
	static const char *const want[] = {"nil",    "boolean", "integer", "float",
	                                   "string", "binary",  "array",   "map"};

	for (int t = 0; t < 8; t++) {
		assert_string_equal(warren_type_name((warren_type)t), want[t]);
	}
	assert_string_equal(warren_type_name((warren_type)99), "unknown");
}

static void test_strings_may_hold_nul_bytes_and_null_gives_null(void **state)
{
	warren_value *v = warren_strn("a\0b", 3);
	const char *s;
	size_t len;

	assert_true(warren_value_get_str(v, &s, &len));
	assert_int_equal(len, 3);
	assert_int_equal(s[3], '\0');
	warren_value_free(v);
	assert_null(warren_str(NULL));
	assert_null(warren_strn(NULL, 3));
}

static void test_maps_keep_insertion_order_and_replace_in_place(void **state)
{
	warren_value *m = warren_map();
	const char *key;
	const warren_value *val;
	int64_t i;

	assert_int_equal(warren_map_set(m, "b", warren_int(1)), WARREN_OK);
	assert_int_equal(warren_map_set(m, "a", warren_int(2)), WARREN_OK);
	assert_int_equal(warren_map_set(m, "b", warren_int(3)), WARREN_OK);
	assert_int_equal(warren_value_len(m), 2);
	assert_true(warren_map_at(m, 0, &key, &val));
	assert_string_equal(key, "b");
	assert_true(warren_value_get_int(val, &i) && i == 3);
	assert_true(warren_map_at(m, 1, &key, &val));
	assert_string_equal(key, "a");
	assert_false(warren_map_at(m, 2, &key, &val));
	assert_null(warren_map_get(m, "c"));
	expect_json(m, "{\"b\":3,\"a\":2}");
	warren_value_free(m);
}

static void test_large_maps_find_every_key(void **state)
{
	warren_value *m = warren_map();
	char key[16];
	int64_t i;

	for (int k = 0; k < 5000; k++) {
		snprintf(key, sizeof(key), "key%d", k);
		assert_int_equal(warren_map_set(m, key, warren_int(k)), WARREN_OK);
	}
	snprintf(key, sizeof(key), "key%d", 17);
	assert_int_equal(warren_map_set(m, key, warren_int(-1)), WARREN_OK);
	assert_int_equal(warren_value_len(m), 5000);
	for (int k = 0; k < 5000; k++) {
		snprintf(key, sizeof(key), "key%d", k);
		assert_true(warren_value_get_int(warren_map_get(m, key), &i));
		assert_int_equal(i, k == 17 ? -1 : k);
	}
	assert_null(warren_map_get(m, "key5000"));
	warren_value_free(m);
}

static void test_setters_take_ownership_and_refuse_wrong_containers(void **state)
{
	warren_value *m = warren_map(), *a = warren_array();

	/* Each refused value is freed by the setter: ASan/valgrind check. */
	assert_int_equal(warren_array_push(m, warren_int(1)), WARREN_ERR_INVALID);
	assert_int_equal(warren_map_set(a, "k", warren_int(1)), WARREN_ERR_INVALID);
	assert_int_equal(warren_map_set(m, NULL, warren_int(1)), WARREN_ERR_INVALID);
	assert_int_equal(warren_array_push(NULL, warren_int(1)), WARREN_ERR_INVALID);
	/* A NULL item stands for a failed constructor. */
	assert_int_equal(warren_array_push(a, NULL), WARREN_ERR_NOMEM);
	assert_int_equal(warren_map_set(m, "k", NULL), WARREN_ERR_NOMEM);
	assert_int_equal(warren_value_len(a), 0);
	assert_int_equal(warren_value_len(m), 0);
	assert_null(warren_array_at(a, 0));
	warren_value_free(m);
	warren_value_free(a);
	warren_value_free(NULL);
}

static void test_copy_is_deep_and_equal(void **state)
{
	warren_value *v = parse("{\"a\":[1,2.5,\"x\",null,true,{\"b\":{}}],\"c\":\"d\"}");
	warren_value *c = warren_value_copy(v);

	assert_true(warren_value_equal(v, c));
	assert_int_equal(warren_map_set(c, "c", warren_str("e")), WARREN_OK);
	assert_false(warren_value_equal(v, c));
	expect_json(v, "{\"a\":[1,2.5,\"x\",null,true,{\"b\":{}}],\"c\":\"d\"}");
	warren_value_free(v);
	warren_value_free(c);
	assert_null(warren_value_copy(NULL));
}

static void test_equality_is_strict_about_types_not_map_order(void **state)
{
	warren_value *i = warren_int(1), *f = warren_float(1.0);
	warren_value *m1 = parse("{\"a\":1,\"b\":2}"), *m2 = parse("{\"b\":2,\"a\":1}");
	warren_value *s = warren_str("ab"), *bin = warren_bin("ab", 2);

	assert_false(warren_value_equal(i, f));
	assert_true(warren_value_equal(m1, m2));
	assert_false(warren_value_equal(s, bin));
	assert_true(warren_value_equal(NULL, NULL));
	warren_value_free(i);
	warren_value_free(f);
	warren_value_free(m1);
	warren_value_free(m2);
	warren_value_free(s);
	warren_value_free(bin);
}

static void test_json_output_is_compact_and_escaped(void **state)
{
	warren_value *a = warren_array();

	assert_int_equal(warren_array_push(a, warren_str("q\"b\\n\n\t\x01/\xc3\xa9")), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_int(INT64_MIN)), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_float(0.1)), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_float(3.0)), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_float(1e300)), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_float(-0.0)), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_strn("a\0b", 3)), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_bool(false)), WARREN_OK);
	expect_json(a, "[\"q\\\"b\\\\n\\n\\t\\u0001/\xc3\xa9\",-9223372036854775808,0.1,3.0,1e+300,"
	               "-0.0,\"a\\u0000b\",false]");
	warren_value_free(a);
}

static void test_json_round_trips_floats_exactly(void **state)
{
	const double ds[] = {0.1, 1.0 / 3.0, 123456.789, 5e-324, 1.7976931348623157e308, -2.5};

	for (size_t k = 0; k < sizeof(ds) / sizeof(ds[0]); k++) {
		warren_value *v = warren_float(ds[k]), *back;
		char *text = to_json(v);
		double d;
		back = parse(text);
		assert_true(warren_value_get_float(back, &d));
		assert_true(d == ds[k]);
		assert_int_equal(warren_value_type(back), WARREN_FLOAT);
		free(text);
		warren_value_free(v);
		warren_value_free(back);
	}
}

static void test_values_json_cannot_hold_are_refused(void **state)
{
	warren_value *m = warren_map();
	warren_value *nan = warren_float(NAN), *inf = warren_float(-INFINITY);
	warren_value *bad = warren_strn("\xff", 1);
	char *text = (char *)1;
	char why[200];

	assert_int_equal(warren_map_set(m, "blob", warren_bin("abc", 3)), WARREN_OK);
	assert_int_equal(warren_value_to_json(m, &text, why, sizeof(why)), WARREN_ERR_INVALID);
	assert_null(text);
	assert_string_equal(why, "binary data (3 bytes) has no JSON form");
	assert_int_equal(warren_value_to_json(nan, &text, why, sizeof(why)), WARREN_ERR_INVALID);
	assert_string_equal(why, "the float NaN has no JSON form");
	assert_int_equal(warren_value_to_json(inf, &text, why, sizeof(why)), WARREN_ERR_INVALID);
	assert_string_equal(why, "the float -infinity has no JSON form");
	assert_int_equal(warren_value_to_json(bad, &text, why, sizeof(why)), WARREN_ERR_INVALID);
	assert_string_equal(why, "a string is not valid UTF-8");
	assert_int_equal(warren_value_to_json(bad, &text, NULL, 0), WARREN_ERR_INVALID);
	warren_value_free(m);
	warren_value_free(nan);
	warren_value_free(inf);
	warren_value_free(bad);
}

static void test_json_parsing_accepts_any_value_at_the_top(void **state)
{
	warren_value *v;
	int64_t i;
	const char *s;
	size_t len;

	v = parse("-9223372036854775808");
	assert_true(warren_value_get_int(v, &i) && i == INT64_MIN);
	warren_value_free(v);
	v = parse(" \"a\\u0000b\" ");
	assert_true(warren_value_get_str(v, &s, &len) && len == 3);
	warren_value_free(v);
	v = parse("null");
	assert_int_equal(warren_value_type(v), WARREN_NIL);
	warren_value_free(v);
}

static void test_bad_json_gets_a_message_with_its_place(void **state)
{
	expect_parse_error("{\"a\"", 4, "line 1, column 4: ':' expected near end of file");
	expect_parse_error("{\"a\":1,\"a\":2}", 13,
	                   "line 1, column 10: duplicate object key near '\"a\"'");
	expect_parse_error("99999999999999999999", 20,
	                   "line 1, column 20: too big integer near '99999999999999999999'");
	expect_parse_error("\"\xff\"", 3, "line 1, column 1: unable to decode byte 0xff near '\"'");
	expect_parse_error("1 2", 3, "line 1, column 3: end of file expected near '2'");
	expect_parse_error("[1,\n  x]", 8, "line 2, column 3: invalid token near 'x'");
	expect_parse_error("{\"\\u0000\":1}", 12,
	                   "line 1, column 9: NUL byte in object key not supported near "
	                   "'\"\\u0000\"'");
	expect_parse_error("", 0, "empty JSON text");
}

static void test_json_nesting_is_limited_to_32_levels(void **state)
{
	char text[80] = "";
	warren_value *v;

	for (int k = 0; k < 32; k++) {
		strcat(text, "[");
	}
	for (int k = 0; k < 32; k++) {
		strcat(text, "]");
	}
	v = parse(text);
	warren_value_free(v);
	memmove(text + 1, text, strlen(text) + 1);
	text[0] = '[';
	strcat(text, "]");
	expect_parse_error(text, strlen(text), "nested deeper than 32 levels");
}

static void test_json_input_need_not_be_nul_terminated(void **state)
{
	warren_value *v = NULL;
	char why[100] = "";

	assert_int_equal(warren_value_from_json("[1]garbage", 3, &v, why, sizeof(why)), WARREN_OK);
	assert_int_equal(warren_value_len(v), 1);
	warren_value_free(v);
}

/* ------------------------------------------------- hash flooding (issue 13) */

/* Keys built to collide for the unkeyed FNV-1a map index warren used before
 * issue 13: the low bits of FNV-1a's state depend only on the low bits
 * before each byte, so two 3-byte blocks taking one low-17-bit state to the
 * same one can be swapped freely. FLOOD_STAGES such choices give
 * 2^FLOOD_STAGES keys whose hashes agree in their low 17 bits: one slot of
 * any index up to 131072 slots, which is the index of this map. */
#define FLOOD_STAGES 16
#define FLOOD_MASK   0x1ffffu
#define FLOOD_BLEN   3
#define FLOOD_KEYS   (1u << FLOOD_STAGES)
#define FLOOD_KLEN   (FLOOD_BLEN * FLOOD_STAGES)

static const char flood_abc[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

static void flood_block(uint32_t i, char *blk)
{
	for (int k = FLOOD_BLEN - 1; k >= 0; k--) {
		blk[k] = flood_abc[i % 62];
		i /= 62;
	}
}

/* FNV-1a's state after p, in its low 17 bits. */
static uint32_t fnv_step(uint32_t h, const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		h = ((h ^ (unsigned char)p[i]) * 0x1b3u) & FLOOD_MASK; /* the FNV prime, mod 2^17 */
	}
	return h;
}

/* blocks[stage][0|1]: two blocks taking the stage's state to one state. */
static void flood_blocks(char blocks[FLOOD_STAGES][2][FLOOD_BLEN])
{
	uint32_t h = (uint32_t)(14695981039346656037ULL & FLOOD_MASK);
	uint32_t *seen = calloc(FLOOD_MASK + 1, sizeof(*seen));

	assert_non_null(seen);
	for (int st = 0; st < FLOOD_STAGES; st++) {
		bool found = false;

		memset(seen, 0, (FLOOD_MASK + 1) * sizeof(*seen));
		for (uint32_t i = 0; i < 62 * 62 * 62 && !found; i++) {
			char blk[FLOOD_BLEN];
			uint32_t to;

			flood_block(i, blk);
			to = fnv_step(h, blk, FLOOD_BLEN);
			if (seen[to] != 0) {
				flood_block(seen[to] - 1, blocks[st][0]);
				memcpy(blocks[st][1], blk, FLOOD_BLEN);
				h = to;
				found = true;
			}
			seen[to] = i + 1;
		}
		assert_true(found);
	}
	free(seen);
}

static void flood_key(char blocks[FLOOD_STAGES][2][FLOOD_BLEN], uint32_t n, char *key)
{
	for (int st = 0; st < FLOOD_STAGES; st++) {
		memcpy(key + FLOOD_BLEN * st, blocks[st][(n >> st) & 1], FLOOD_BLEN);
	}
	key[FLOOD_KLEN] = '\0';
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Every key is present once with its value n. */
static void expect_flood_map(const warren_value *m, char blocks[FLOOD_STAGES][2][FLOOD_BLEN])
{
	char key[FLOOD_KLEN + 1];
	int64_t i;

	assert_int_equal(warren_value_type(m), WARREN_MAP);
	assert_int_equal(warren_value_len(m), FLOOD_KEYS);
	for (uint32_t n = 0; n < FLOOD_KEYS; n += 97) {
		flood_key(blocks, n, key);
		assert_true(warren_value_get_int(warren_map_get(m, key), &i));
		assert_int_equal(i, n);
	}
}

static void test_colliding_keys_decode_from_json(void **state)
{
	char blocks[FLOOD_STAGES][2][FLOOD_BLEN];
	size_t cap = (size_t)FLOOD_KEYS * (FLOOD_KLEN + 12) + 2, len = 0;
	char *text = malloc(cap), key[FLOOD_KLEN + 1], why[200] = "";
	warren_value *v = NULL;
	struct timespec t0;

	assert_non_null(text);
	flood_blocks(blocks);
	text[len++] = '{';
	for (uint32_t n = 0; n < FLOOD_KEYS; n++) {
		flood_key(blocks, n, key);
		len += (size_t)snprintf(text + len, cap - len, "%s\"%s\":%u", n ? "," : "", key, n);
	}
	text[len++] = '}';
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(warren_value_from_json(text, len, &v, why, sizeof(why)), WARREN_OK);
	fprintf(stderr, "bench: %u colliding keys, %zu bytes of JSON decoded in %.3f s\n",
	        FLOOD_KEYS, len, seconds_since(&t0));
	expect_flood_map(v, blocks);
	warren_value_free(v);
	free(text);
}

static void test_colliding_keys_decode_from_msgpack(void **state)
{
	char blocks[FLOOD_STAGES][2][FLOOD_BLEN];
	size_t len = 0;
	unsigned char *buf = malloc(5 + (size_t)FLOOD_KEYS * (FLOOD_KLEN + 3 + 5));
	char key[FLOOD_KLEN + 1], why[200] = "";
	warren_value *v = NULL;
	struct timespec t0;

	assert_non_null(buf);
	flood_blocks(blocks);
	buf[len++] = 0xdf; /* map 32 */
	for (int sh = 24; sh >= 0; sh -= 8) {
		buf[len++] = (unsigned char)(FLOOD_KEYS >> sh);
	}
	for (uint32_t n = 0; n < FLOOD_KEYS; n++) {
		flood_key(blocks, n, key);
		buf[len++] = 0xd9; /* str 8 */
		buf[len++] = FLOOD_KLEN;
		memcpy(buf + len, key, FLOOD_KLEN);
		len += FLOOD_KLEN;
		buf[len++] = 0xce; /* uint 32 */
		for (int sh = 24; sh >= 0; sh -= 8) {
			buf[len++] = (unsigned char)(n >> sh);
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(codec_msgpack_decode(buf, len, &v, why, sizeof(why)), WARREN_OK);
	fprintf(stderr, "bench: %u colliding keys, %zu bytes of msgpack decoded in %.3f s\n",
	        FLOOD_KEYS, len, seconds_since(&t0));
	expect_flood_map(v, blocks);
	warren_value_free(v);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scalars_keep_their_type_and_value),
		cmocka_unit_test(test_type_names_are_the_words_users_see),
		cmocka_unit_test(test_strings_may_hold_nul_bytes_and_null_gives_null),
		cmocka_unit_test(test_maps_keep_insertion_order_and_replace_in_place),
		cmocka_unit_test(test_large_maps_find_every_key),
		cmocka_unit_test(test_setters_take_ownership_and_refuse_wrong_containers),
		cmocka_unit_test(test_copy_is_deep_and_equal),
		cmocka_unit_test(test_equality_is_strict_about_types_not_map_order),
		cmocka_unit_test(test_json_output_is_compact_and_escaped),
		cmocka_unit_test(test_json_round_trips_floats_exactly),
		cmocka_unit_test(test_values_json_cannot_hold_are_refused),
		cmocka_unit_test(test_json_parsing_accepts_any_value_at_the_top),
		cmocka_unit_test(test_bad_json_gets_a_message_with_its_place),
		cmocka_unit_test(test_json_nesting_is_limited_to_32_levels),
		cmocka_unit_test(test_json_input_need_not_be_nul_terminated),
		cmocka_unit_test(test_colliding_keys_decode_from_json),
		cmocka_unit_test(test_colliding_keys_decode_from_msgpack),
	};

	return cmocka_run_group_tests_name("value", tests, NULL, NULL);
}
