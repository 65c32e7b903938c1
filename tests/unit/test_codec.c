/* test_codec.c: the msgpack codec: round trips of every type, the smallest
 * encodings, and each kind of hostile input refused with its exact message
 * before any allocation proportional to a declared length. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

/* Decodes n bytes expecting failure with exactly msg. */
static void expect_refused(const void *buf, size_t n, const char *msg)
{
	warren_value *v = (warren_value *)1;
	char why[200] = "";

	assert_int_equal(codec_msgpack_decode(buf, n, &v, why, sizeof(why)), WARREN_ERR_DECODE);
	assert_null(v);
	assert_string_equal(why, msg);
}

static warren_value *decode_ok(const void *buf, size_t n)
{
	warren_value *v = NULL;
	char why[200] = "";

	assert_int_equal(codec_msgpack_decode(buf, n, &v, why, sizeof(why)), WARREN_OK);
	assert_string_equal(why, "");
	return v;
}

static void round_trip(const warren_value *v)
{
	void *buf = NULL;
	size_t len = 0;
	warren_value *back;

	assert_int_equal(codec_msgpack_encode(v, &buf, &len), WARREN_OK);
	back = decode_ok(buf, len);
	assert_true(warren_value_equal(v, back));
	warren_value_free(back);
	free(buf);
}

static void test_every_type_survives_a_round_trip(void **state)
{
	warren_value *m = warren_map();
	warren_value *a = warren_array();
	static const int64_t ints[] = {0,      1,          -1,         -32,        -33,
	                               127,    128,        255,        256,        -128,
	                               -129,   65535,      65536,      -32768,     -32769,
	                               INT64_MAX, INT64_MIN, 4294967295LL, 4294967296LL,
	                               -2147483648LL, -2147483649LL};

	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		assert_int_equal(warren_array_push(a, warren_int(ints[i])), WARREN_OK);
	}
	assert_int_equal(warren_array_push(a, warren_float(0.1)), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_float(-1e300)), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_nil()), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_bool(true)), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_bool(false)), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_strn("a\0b", 3)), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_str("h\xc3\xa9llo \xe2\x82\xac")), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_bin("\x00\xff\x01", 3)), WARREN_OK);
	assert_int_equal(warren_map_set(m, "list", a), WARREN_OK);
	assert_int_equal(warren_map_set(m, "empty map", warren_map()), WARREN_OK);
	assert_int_equal(warren_map_set(m, "", warren_str("")), WARREN_OK);
	round_trip(m);
	warren_value_free(m);
}

static void test_long_strings_and_containers_use_the_wide_forms(void **state)
{
	size_t sizes[] = {31, 32, 255, 256, 65535, 65536};
	char *text = malloc(70000);

	memset(text, 'x', 70000);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		warren_value *s = warren_strn(text, sizes[i]);
		warren_value *b = warren_bin(text, sizes[i]);
		round_trip(s);
		round_trip(b);
		warren_value_free(s);
		warren_value_free(b);
	}
	free(text);

	warren_value *a = warren_array(), *m = warren_map();
	for (int i = 0; i < 70000; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(warren_array_push(a, warren_int(i)), WARREN_OK);
		assert_int_equal(warren_map_set(m, key, warren_int(i)), WARREN_OK);
	}
	round_trip(a);
	round_trip(m);
	warren_value_free(a);
	warren_value_free(m);
}

static void test_integers_use_the_smallest_form(void **state)
{
	struct {
		int64_t i;
		size_t len;
	} cases[] = {{5, 1}, {-5, 1}, {200, 2}, {-100, 2}, {1000, 3}, {100000, 5}, {1LL << 40, 9}};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		warren_value *v = warren_int(cases[i].i);
		void *buf;
		size_t len;
		assert_int_equal(codec_msgpack_encode(v, &buf, &len), WARREN_OK);
		assert_int_equal(len, cases[i].len);
		free(buf);
		warren_value_free(v);
	}
}

static void test_float32_and_unsigned_forms_are_read(void **state)
{
	const unsigned char f32[] = {0xca, 0x3f, 0xc0, 0x00, 0x00}; /* 1.5f */
	const unsigned char u64[] = {0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	const unsigned char i8[] = {0xd0, 0x80};
	warren_value *v;
	double d;
	int64_t i;

	v = decode_ok(f32, sizeof(f32));
	assert_true(warren_value_get_float(v, &d));
	assert_true(d == 1.5);
	warren_value_free(v);
	v = decode_ok(u64, sizeof(u64));
	assert_true(warren_value_get_int(v, &i));
	assert_true(i == INT64_MAX);
	warren_value_free(v);
	v = decode_ok(i8, sizeof(i8));
	assert_true(warren_value_get_int(v, &i));
	assert_int_equal(i, -128);
	warren_value_free(v);
}

static void test_truncated_input_is_refused(void **state)
{
	const unsigned char str[] = {0xa5, 'a', 'b'};
	const unsigned char hdr[] = {0xda, 0x00};
	const unsigned char num[] = {0xcd, 0x01};

	expect_refused(str, sizeof(str), "at byte 0: string of 5 bytes but only 2 remain");
	expect_refused(hdr, sizeof(hdr),
	               "at byte 2: unexpected end of data in the header at byte 0");
	expect_refused(num, sizeof(num),
	               "at byte 2: unexpected end of data in the integer at byte 0");
	expect_refused("", 0, "at byte 0: unexpected end of data");
}

static void test_trailing_bytes_are_refused(void **state)
{
	const unsigned char buf[] = {0x01, 0x02, 0x03};

	expect_refused(buf, sizeof(buf), "at byte 1: 2 trailing bytes after the value");
}

static void test_huge_declared_lengths_are_refused_before_allocating(void **state)
{
	const unsigned char arr[] = {0xdd, 0x04, 0x00, 0x00, 0x00};
	const unsigned char map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0};
	const unsigned char bin[] = {0xc6, 0xff, 0xff, 0xff, 0xff, 0x00};

	expect_refused(arr, sizeof(arr), "at byte 0: array of 67108864 items but only 0 bytes remain");
	expect_refused(map, sizeof(map),
	               "at byte 0: map of 4294967295 entries but only 2 bytes remain");
	expect_refused(bin, sizeof(bin), "at byte 0: binary of 4294967295 bytes but only 1 remain");
}

static void test_nesting_is_limited_to_32_levels(void **state)
{
	unsigned char buf[40];

	memset(buf, 0x91, sizeof(buf)); /* [[[[... */
	buf[CODEC_MAX_DEPTH] = 0xc0;
	warren_value_free(decode_ok(buf, CODEC_MAX_DEPTH + 1));
	buf[CODEC_MAX_DEPTH] = 0x91;
	buf[CODEC_MAX_DEPTH + 1] = 0xc0;
	expect_refused(buf, CODEC_MAX_DEPTH + 2, "at byte 32: nested deeper than 32 levels");
}

static void test_an_encoded_tree_deeper_than_the_limit_is_refused(void **state)
{
	warren_value *root = warren_array(), *cur = root;
	void *buf = (void *)1;
	size_t len;

	for (int i = 0; i < CODEC_MAX_DEPTH; i++) {
		warren_value *next = warren_array();
		assert_int_equal(warren_array_push(cur, next), WARREN_OK);
		cur = next;
	}
	assert_int_equal(codec_msgpack_encode(root, &buf, &len), WARREN_ERR_INVALID);
	assert_null(buf);
	warren_value_free(root);
}

static void test_bad_map_keys_are_refused(void **state)
{
	const unsigned char intkey[] = {0x81, 0x01, 0xc0};
	const unsigned char dup[] = {0x82, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02};
	const unsigned char nul[] = {0x81, 0xa2, 'a', 0x00, 0xc0};
	const unsigned char arrkey[] = {0x81, 0x90, 0xc0};

	expect_refused(intkey, sizeof(intkey), "at byte 1: map key is integer, expected string");
	expect_refused(arrkey, sizeof(arrkey), "at byte 1: map key is array, expected string");
	expect_refused(dup, sizeof(dup), "at byte 4: duplicate map key \"a\"");
	expect_refused(nul, sizeof(nul), "at byte 1: map key contains a NUL byte");
}

static void test_many_keys_with_one_duplicate_at_the_end_are_refused(void **state)
{
	/* 3000 distinct keys "0000".."2999", then "0000" again: each entry is a
	 * fixstr of 4 bytes and a nil, 6 bytes; the repeat is found through the
	 * map's hash index. */
	const size_t n = 3001;
	unsigned char *buf = malloc(3 + n * 6);
	size_t off = 0;
	char msg[64];

	buf[off++] = 0xde;
	buf[off++] = (unsigned char)(n >> 8);
	buf[off++] = (unsigned char)n;
	for (size_t i = 0; i < n; i++) {
		char key[5];
		snprintf(key, sizeof(key), "%04zu", i == n - 1 ? 0 : i);
		buf[off++] = 0xa4;
		memcpy(buf + off, key, 4);
		off += 4;
		buf[off++] = 0xc0;
	}
	snprintf(msg, sizeof(msg), "at byte %zu: duplicate map key \"0000\"", 3 + (n - 1) * 6);
	expect_refused(buf, off, msg);
	free(buf);
}

static void test_bad_utf8_in_a_string_is_refused(void **state)
{
	const unsigned char overlong[] = {0xa2, 0xc0, 0xaf};
	const unsigned char surrogate[] = {0x91, 0xa3, 0xed, 0xa0, 0x80};
	const unsigned char cut[] = {0xa2, 0xe2, 0x82};

	expect_refused(overlong, sizeof(overlong), "at byte 0: string is not valid UTF-8");
	expect_refused(surrogate, sizeof(surrogate), "at byte 1: string is not valid UTF-8");
	expect_refused(cut, sizeof(cut), "at byte 0: string is not valid UTF-8");
}

static void test_unused_byte_ext_types_and_big_unsigned_are_refused(void **state)
{
	const unsigned char c1[] = {0x91, 0xc1};
	const unsigned char fixext[] = {0xd4, 0x05, 0x00};
	const unsigned char ext8[] = {0xc7, 0x01, 0xff, 0x00};
	const unsigned char big[] = {0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0};

	expect_refused(c1, sizeof(c1), "at byte 1: byte 0xc1 is never used in msgpack");
	expect_refused(fixext, sizeof(fixext), "at byte 0: ext type 5 is not supported");
	expect_refused(ext8, sizeof(ext8), "at byte 0: ext type -1 is not supported");
	expect_refused(big, sizeof(big),
	               "at byte 0: integer 9223372036854775808 is out of the int64 range");
}

static void test_a_null_errstr_is_allowed(void **state)
{
	const unsigned char c1[] = {0xc1};
	warren_value *v;

	assert_int_equal(codec_msgpack_decode(c1, 1, &v, NULL, 0), WARREN_ERR_DECODE);
}

/* Every prefix and every single-byte corruption of a valid body decodes or
 * fails cleanly (ASan and valgrind watch for the rest). */
static void test_every_prefix_and_corruption_fails_cleanly(void **state)
{
	warren_value *m = warren_map(), *a = warren_array();
	void *buf;
	size_t len;

	assert_int_equal(warren_array_push(a, warren_str("twelve bytes")), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_int(-70000)), WARREN_OK);
	assert_int_equal(warren_array_push(a, warren_float(2.5)), WARREN_OK);
	assert_int_equal(warren_map_set(m, "items", a), WARREN_OK);
	assert_int_equal(warren_map_set(m, "bin", warren_bin("\1\2\3", 3)), WARREN_OK);
	assert_int_equal(codec_msgpack_encode(m, &buf, &len), WARREN_OK);
	for (size_t n = 0; n < len; n++) {
		warren_value *v = NULL;
		assert_int_equal(codec_msgpack_decode(buf, n, &v, NULL, 0), WARREN_ERR_DECODE);
		assert_null(v);
	}
	unsigned char *copy = malloc(len);
	for (size_t i = 0; i < len; i++) {
		for (int b = 0; b < 256; b++) {
			warren_value *v = NULL;
			memcpy(copy, buf, len);
			copy[i] = (unsigned char)b;
			warren_err err = codec_msgpack_decode(copy, len, &v, NULL, 0);
			assert_true(err == WARREN_OK || err == WARREN_ERR_DECODE);
			assert_true((err == WARREN_OK) == (v != NULL));
			warren_value_free(v);
		}
	}
	free(copy);
	free(buf);
	warren_value_free(m);
}

/* Allocations made while encoding (malloc and realloc are wrapped for
 * this test binary: WRAP_test_codec in the Makefile). */
static int counting, mallocs, reallocs;
static size_t largest; /* the largest malloc while counting */
void *__real_malloc(size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_realloc(void *p, size_t n);

void *__wrap_malloc(size_t n)
{
	mallocs += counting;
	if (counting && n > largest) {
		largest = n;
	}
	return __real_malloc(n);
}

void *__wrap_realloc(void *p, size_t n)
{
	reallocs += counting;
	return __real_realloc(p, n);
}

/* A body is one allocation of its exact size: not a buffer grown by
 * doubling (a 64 KiB body in a 128 KiB buffer, which glibc maps and
 * unmaps on every call once its heap is trimmed) and shrunk afterwards. */
static void test_a_body_is_one_allocation_of_its_exact_size(void **state)
{
	size_t sizes[] = {0, 100, 8191, 65536, 100000};

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char *data = calloc(1, sizes[i] + 1);
		warren_value *v = warren_bin(data, sizes[i]);
		void *out;
		size_t len;

		mallocs = reallocs = 0;
		counting = 1;
		assert_int_equal(codec_msgpack_encode(v, &out, &len), WARREN_OK);
		counting = 0;
		assert_int_equal(mallocs, 1);
		assert_int_equal(reallocs, 0);
		assert_true(len >= sizes[i] && len <= sizes[i] + 5);
		assert_true(malloc_usable_size(out) >= len);
		free(out);
		warren_value_free(v);
		free(data);
	}
}

/* Decoded in place, a binary value is the body's own bytes: nothing of its
 * size is allocated or copied (a worker's params, whose body outlives
 * them). Its copy owns its bytes, and freeing either leaves the body alone;
 * strings are still copies, with their NUL. */
static void test_decoding_in_place_leaves_binary_values_in_the_body(void **state)
{
	size_t n = 65536;
	unsigned char *blob = malloc(n);
	warren_value *m = warren_map(), *v = NULL, *copy;
	const void *bytes, *copied;
	const char *s;
	size_t len, slen;
	void *body;
	size_t body_len;
	char why[200] = "";

	(void)state;
	for (size_t i = 0; i < n; i++) {
		blob[i] = (unsigned char)(i * 7 + 3);
	}
	warren_map_set(m, "blob", warren_bin(blob, n));
	warren_map_set(m, "name", warren_str("ada"));
	assert_int_equal(codec_msgpack_encode(m, &body, &body_len), WARREN_OK);

	mallocs = 0;
	largest = 0;
	counting = 1;
	assert_int_equal(codec_msgpack_decode_in_place(body, body_len, &v, why, sizeof(why)),
	                 WARREN_OK);
	counting = 0;
	assert_string_equal(why, "");
	assert_true(largest < 1024);
	assert_true(warren_value_equal(v, m));
	assert_true(warren_value_get_bin(warren_map_get(v, "blob"), &bytes, &len));
	assert_int_equal(len, n);
	assert_true((const char *)bytes > (const char *)body &&
	            (const char *)bytes + len <= (const char *)body + body_len);
	assert_true(warren_value_get_str(warren_map_get(v, "name"), &s, &slen));
	assert_true(s < (const char *)body || s >= (const char *)body + body_len);
	assert_string_equal(s, "ada");

	copy = warren_value_copy(v);
	warren_value_free(v);
	assert_true(warren_value_get_bin(warren_map_get(copy, "blob"), &copied, &len));
	assert_ptr_not_equal(copied, bytes);
	assert_memory_equal(copied, blob, n);
	assert_memory_equal(bytes, blob, n); /* the body untouched by the free */
	warren_value_free(copy);

	/* Not in place, as before: the bytes are the value's own. */
	assert_int_equal(codec_msgpack_decode(body, body_len, &v, why, sizeof(why)), WARREN_OK);
	assert_true(warren_value_get_bin(warren_map_get(v, "blob"), &bytes, &len));
	assert_true((const char *)bytes + len <= (const char *)body ||
	            (const char *)bytes >= (const char *)body + body_len);
	warren_value_free(v);
	free(body);
	warren_value_free(m);
	free(blob);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_type_survives_a_round_trip),
	    cmocka_unit_test(test_long_strings_and_containers_use_the_wide_forms),
	    cmocka_unit_test(test_integers_use_the_smallest_form),
	    cmocka_unit_test(test_float32_and_unsigned_forms_are_read),
	    cmocka_unit_test(test_truncated_input_is_refused),
	    cmocka_unit_test(test_trailing_bytes_are_refused),
	    cmocka_unit_test(test_huge_declared_lengths_are_refused_before_allocating),
	    cmocka_unit_test(test_nesting_is_limited_to_32_levels),
	    cmocka_unit_test(test_an_encoded_tree_deeper_than_the_limit_is_refused),
	    cmocka_unit_test(test_bad_map_keys_are_refused),
	    cmocka_unit_test(test_many_keys_with_one_duplicate_at_the_end_are_refused),
	    cmocka_unit_test(test_bad_utf8_in_a_string_is_refused),
	    cmocka_unit_test(test_unused_byte_ext_types_and_big_unsigned_are_refused),
	    cmocka_unit_test(test_a_null_errstr_is_allowed),
	    cmocka_unit_test(test_a_body_is_one_allocation_of_its_exact_size),
	    cmocka_unit_test(test_decoding_in_place_leaves_binary_values_in_the_body),
	    cmocka_unit_test(test_every_prefix_and_corruption_fails_cleanly),
	};

	return cmocka_run_group_tests_name("codec", tests, NULL, NULL);
}
