/* test_dlq_json.c: the JSON form of dead letters that rpc-dlq exports and
 * imports: plain JSON where it is unambiguous, "$type" tags for every
 * other AMQP type, every type back as it was, bodies decoded for people,
 * and a clear error naming the field for each malformed line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rpc-dlq/dlq_json.h"

static char *dump(json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);

	json_decref(j);
	assert_non_null(text);
	return text;
}

static void assert_field_json(amqp_field_value_t v, const char *want)
{
	char *text = dump(dlq_json_field(&v));

	assert_string_equal(text, want);
	free(text);
}

static void test_common_types_are_plain_json(void **state)
{
	assert_field_json((amqp_field_value_t){.kind = AMQP_FIELD_KIND_UTF8,
	                                       .value.bytes = amqp_cstring_bytes("h\xc3\xa9")},
	                  "\"h\xc3\xa9\"");
	assert_field_json((amqp_field_value_t){.kind = AMQP_FIELD_KIND_I64, .value.i64 = -42},
	                  "-42");
	assert_field_json((amqp_field_value_t){.kind = AMQP_FIELD_KIND_F64, .value.f64 = 1.5},
	                  "1.5");
	assert_field_json((amqp_field_value_t){.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1},
	                  "true");
	assert_field_json((amqp_field_value_t){.kind = AMQP_FIELD_KIND_VOID}, "null");
}

static void test_other_types_are_tagged(void **state)
{
	assert_field_json((amqp_field_value_t){.kind = AMQP_FIELD_KIND_I32, .value.i32 = 7},
	                  "{\"$type\":\"int32\",\"value\":7}");
	assert_field_json((amqp_field_value_t){.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = 17},
	                  "{\"$type\":\"timestamp\",\"value\":17}");
	assert_field_json((amqp_field_value_t){.kind = AMQP_FIELD_KIND_BYTES,
	                                       .value.bytes = {3, (void *)"\x00\x01\x02"}},
	                  "{\"$type\":\"bytes\",\"value\":\"AAEC\"}");
	assert_field_json(
	    (amqp_field_value_t){.kind = AMQP_FIELD_KIND_DECIMAL, .value.decimal = {2, 12345}},
	    "{\"$type\":\"decimal\",\"decimals\":2,\"value\":12345}");
	assert_field_json((amqp_field_value_t){.kind = AMQP_FIELD_KIND_UTF8,
	                                       .value.bytes = {2, (void *)"\xff\xfe"}},
	                  "{\"$type\":\"string\",\"base64\":\"//4=\"}");
	assert_field_json(
	    (amqp_field_value_t){.kind = AMQP_FIELD_KIND_U64, .value.u64 = UINT64_MAX},
	    "{\"$type\":\"uint64\",\"value\":\"18446744073709551615\"}");
	assert_field_json((amqp_field_value_t){.kind = AMQP_FIELD_KIND_F64, .value.f64 = NAN},
	                  "{\"$type\":\"float64\",\"value\":\"NaN\"}");
}

static void test_a_table_json_cannot_hold_as_an_object_is_a_list_of_entries(void **state)
{
	amqp_table_entry_t e[] = {
	    {amqp_cstring_bytes("a"), {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 1}},
	    {amqp_cstring_bytes("a"), {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 2}}};
	amqp_table_entry_t t[] = {{amqp_cstring_bytes("$type"), {.kind = AMQP_FIELD_KIND_VOID}}};
	amqp_table_t dup = {2, e}, typed = {1, t};
	char *text = dump(dlq_json_table(&dup));

	assert_string_equal(text, "{\"$type\":\"table\",\"entries\":[[\"a\",1],[\"a\",2]]}");
	free(text);
	text = dump(dlq_json_table(&typed));
	assert_string_equal(text, "{\"$type\":\"table\",\"entries\":[[\"$type\",null]]}");
	free(text);
}

/* field -> JSON text -> field gives the same kind and value. */
static void round_trip(amqp_field_value_t v)
{
	char *text = dump(dlq_json_field(&v));
	json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	amqp_field_value_t back;
	amqp_pool_t pool;
	char why[200];

	assert_non_null(j);
	init_amqp_pool(&pool, 1024);
	assert_int_equal(dlq_field_from_json(j, &pool, "h", &back, why, sizeof(why)), 0);
	assert_int_equal(back.kind, v.kind);
	switch (v.kind) {
	case AMQP_FIELD_KIND_UTF8:
	case AMQP_FIELD_KIND_BYTES:
		assert_int_equal(back.value.bytes.len, v.value.bytes.len);
		assert_memory_equal(back.value.bytes.bytes, v.value.bytes.bytes, v.value.bytes.len);
		break;
	case AMQP_FIELD_KIND_F32:
		assert_memory_equal(&back.value.f32, &v.value.f32, sizeof(float));
		break;
	case AMQP_FIELD_KIND_F64:
		assert_memory_equal(&back.value.f64, &v.value.f64, sizeof(double));
		break;
	case AMQP_FIELD_KIND_DECIMAL:
		assert_int_equal(back.value.decimal.decimals, v.value.decimal.decimals);
		assert_int_equal(back.value.decimal.value, v.value.decimal.value);
		break;
	default:
		assert_int_equal(back.value.u64, v.value.u64);
		break;
	}
	empty_amqp_pool(&pool);
	json_decref(j);
	free(text);
}

static void test_every_type_comes_back_as_it_was(void **state)
{
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_I8, .value.i8 = -128});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_U8, .value.u8 = 255});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_I16, .value.i16 = -32768});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_U16, .value.u16 = 65535});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_I32, .value.i32 = INT32_MIN});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_U32, .value.u32 = UINT32_MAX});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_I64, .value.i64 = INT64_MIN});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_U64, .value.u64 = UINT64_MAX});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_U64, .value.u64 = 5});
	round_trip(
	    (amqp_field_value_t){.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = 1700000000});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_F32, .value.f32 = 0.1f});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_F32, .value.f32 = INFINITY});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_F64, .value.f64 = 0.1});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_F64, .value.f64 = 2.0});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_F64, .value.f64 = -INFINITY});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_DECIMAL, .value.decimal = {3, 7}});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 0});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_VOID});
	round_trip(
	    (amqp_field_value_t){.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = {3, (void *)"a\0b"}});
	round_trip(
	    (amqp_field_value_t){.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = {1, (void *)"\x80"}});
	round_trip((amqp_field_value_t){.kind = AMQP_FIELD_KIND_BYTES, .value.bytes = {0, NULL}});
}

/* Imports text as one line; returns its error ("" when it is fine). */
static const char *import_error(const char *text)
{
	static char why[300];
	json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
	amqp_basic_properties_t p;
	amqp_bytes_t body;
	amqp_pool_t pool;

	assert_non_null(j);
	init_amqp_pool(&pool, 1024);
	why[0] = '\0';
	dlq_json_import(j, &pool, &p, &body, why, sizeof(why));
	empty_amqp_pool(&pool);
	json_decref(j);
	return why;
}

static void test_import_names_the_field_that_is_wrong(void **state)
{
	assert_string_equal(import_error("{\"properties\":{},\"body\":\"\"}"), "");
	assert_string_equal(import_error("[]"), "expected a JSON object");
	assert_string_equal(import_error("{\"body\":\"\"}"), "no \"properties\"");
	assert_string_equal(import_error("{\"properties\":{}}"), "no \"body\"");
	assert_string_equal(import_error("{\"properties\":{},\"body\":\"\",\"x\":1}"),
	                    "the line: unknown key \"x\"");
	assert_string_equal(import_error("{\"properties\":{\"kind\":1},\"body\":\"\"}"),
	                    "properties: unknown key \"kind\"");
	assert_string_equal(import_error("{\"properties\":{\"priority\":256},\"body\":\"\"}"),
	                    "properties.priority: expected an integer from 0 to 255");
	assert_string_equal(import_error("{\"properties\":{\"type\":7},\"body\":\"\"}"),
	                    "properties.type: expected a string of at most 255 bytes");
	assert_string_equal(import_error("{\"properties\":{\"headers\":[]},\"body\":\"\"}"),
	                    "properties.headers: expected an object");
	assert_string_equal(
	    import_error("{\"properties\":{\"headers\":{\"a\":{\"b\":[1,{\"$type\":\"int8\","
	                 "\"value\":300}]}}},\"body\":\"\"}"),
	    "properties.headers.a.b[1].value: expected an integer from -128 to 127");
	assert_string_equal(import_error("{\"properties\":{\"headers\":{\"a\":{\"$type\":\"int8\","
	                                 "\"value\":1,\"x\":2}}},\"body\":\"\"}"),
	                    "properties.headers.a: unknown key \"x\"");
	assert_string_equal(import_error("{\"properties\":{\"headers\":{\"a\":{\"$type\":\"table\","
	                                 "\"entries\":[[1,2]]}}},\"body\":\"\"}"),
	                    "properties.headers.a.entries[0]: a key must be a string");
	assert_string_equal(import_error("{\"properties\":{},\"body\":\"a\"}"),
	                    "body: not valid base64");
}

static void test_import_reads_properties_headers_and_body(void **state)
{
	json_t *j =
	    json_loads("{\"properties\":{\"content_type\":\"application/json\","
	               "\"delivery_mode\":2,\"timestamp\":1700000000,\"type\":\"user.get\","
	               "\"headers\":{\"rpc-attempt\":2,\"n\":{\"$type\":\"int32\",\"value\":-1}}},"
	               "\"body\":\"e30=\",\"body_json\":{}}",
	               0, NULL);
	amqp_basic_properties_t p;
	amqp_bytes_t body;
	amqp_pool_t pool;
	char why[200];

	init_amqp_pool(&pool, 1024);
	assert_int_equal(dlq_json_import(j, &pool, &p, &body, why, sizeof(why)), 0);
	assert_int_equal(p._flags, AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
	                               AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_TYPE_FLAG |
	                               AMQP_BASIC_HEADERS_FLAG);
	assert_int_equal(p.delivery_mode, 2);
	assert_int_equal(p.timestamp, 1700000000);
	assert_int_equal(p.headers.num_entries, 2);
	assert_int_equal(p.headers.entries[1].value.kind, AMQP_FIELD_KIND_I32);
	assert_int_equal(p.headers.entries[1].value.value.i32, -1);
	assert_int_equal(body.len, 2);
	assert_memory_equal(body.bytes, "{}", 2);
	empty_amqp_pool(&pool);
	json_decref(j);
}

static void test_export_leaves_out_the_brokers_delivery_count(void **state)
{
	amqp_table_entry_t h[] = {{amqp_cstring_bytes("x-delivery-count"),
	                           {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 3}}};
	amqp_basic_properties_t p = {._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_TYPE_FLAG,
	                             .type = amqp_cstring_bytes("user.get"),
	                             .headers = {1, h}};
	char *text = dump(dlq_json_export(&p, (amqp_bytes_t){2, (void *)"\x81\xc4"}));

	assert_string_equal(text, "{\"properties\":{\"type\":\"user.get\"},\"body\":\"gcQ=\","
	                          "\"body_error\":\"not valid msgpack: at byte 0: map of 1 entries "
	                          "but only 1 bytes remain\"}");
	free(text);
	text = dump(dlq_json_properties(&p, false));
	assert_string_equal(text, "{\"type\":\"user.get\",\"headers\":{\"x-delivery-count\":3}}");
	free(text);
}

static void test_bodies_decode_by_content_type(void **state)
{
	amqp_basic_properties_t mp = {0},
	                        js = {._flags = AMQP_BASIC_CONTENT_TYPE_FLAG,
	                              .content_type =
	                                  amqp_cstring_bytes("application/json; charset=utf-8")};
	amqp_basic_properties_t txt = {._flags = AMQP_BASIC_CONTENT_TYPE_FLAG,
	                               .content_type = amqp_cstring_bytes("text/plain")};
	char why[200], *text;
	json_t *j;

	/* {"b": <bin 01 02>} in msgpack, no content type: msgpack. */
	text = dump(dlq_json_body(&mp,
	                          (amqp_bytes_t){7, (void *)"\x81\xa1"
	                                                    "b\xc4\x02\x01\x02"},
	                          why, sizeof(why)));
	assert_string_equal(text, "{\"b\":{\"$type\":\"bytes\",\"value\":\"AQI=\"}}");
	free(text);
	text = dump(dlq_json_body(&js, (amqp_bytes_t){8, (void *)"{\"a\":[]}"}, why, sizeof(why)));
	assert_string_equal(text, "{\"a\":[]}");
	free(text);
	text = dump(dlq_json_body(&txt, (amqp_bytes_t){0, NULL}, why, sizeof(why)));
	assert_string_equal(text, "null");
	free(text);
	j = dlq_json_body(&txt, (amqp_bytes_t){2, (void *)"hi"}, why, sizeof(why));
	assert_null(j);
	assert_string_equal(why, "content type \"text/plain\" is neither application/msgpack nor "
	                         "application/json");
	j = dlq_json_body(&js, (amqp_bytes_t){2, (void *)"{x"}, why, sizeof(why));
	assert_null(j);
	assert_true(strncmp(why, "not valid JSON: ", 16) == 0);
	/* An encrypted body is not decoded (and stays as it is, in base64). */
	js._flags |= AMQP_BASIC_CONTENT_ENCODING_FLAG;
	js.content_encoding = amqp_cstring_bytes("x-warren-sealed");
	j = dlq_json_body(&js, (amqp_bytes_t){8, (void *)"{\"a\":[]}"}, why, sizeof(why));
	assert_null(j);
	assert_string_equal(
	    why, "encrypted (content_encoding x-warren-sealed): only its service can read it");
	js.content_encoding = amqp_cstring_bytes("gzip");
	assert_null(dlq_json_body(&js, (amqp_bytes_t){8, (void *)"{\"a\":[]}"}, why, sizeof(why)));
	assert_string_equal(why, "content encoding \"gzip\" is not decoded");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_common_types_are_plain_json),
	    cmocka_unit_test(test_other_types_are_tagged),
	    cmocka_unit_test(test_a_table_json_cannot_hold_as_an_object_is_a_list_of_entries),
	    cmocka_unit_test(test_every_type_comes_back_as_it_was),
	    cmocka_unit_test(test_import_names_the_field_that_is_wrong),
	    cmocka_unit_test(test_import_reads_properties_headers_and_body),
	    cmocka_unit_test(test_export_leaves_out_the_brokers_delivery_count),
	    cmocka_unit_test(test_bodies_decode_by_content_type),
	};

	return cmocka_run_group_tests_name("test_dlq_json", tests, NULL, NULL);
}
