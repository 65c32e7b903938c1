/* test_envelope.c: the wire contract's properties, headers and bodies, and
 * the clear errors for malformed, oversized and wrongly typed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "envelope.h"

static struct envelope_meta sample_request(void)
{
	struct envelope_meta m = {.format = ENVELOPE_FMT_JSON,
	                          .deadline_ms = 1700000000123,
	                          .attempt = 3,
	                          .status = -1,
	                          .persistent = true};

	strcpy(m.method, "user.get");
	strcpy(m.correlation_id, "0123456789abcdef0123456789abcdef");
	strcpy(m.message_id, "msg-1");
	strcpy(m.reply_to, "amq.rabbitmq.reply-to");
	strcpy(m.app_id, "notifier");
	strcpy(m.traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
	return m;
}

static void test_request_properties_round_trip(void **state)
{
	struct envelope_meta in = sample_request(), out;
	struct envelope_props p;
	char why[200];

	envelope_request_props(&in, &p);
	assert_int_equal(envelope_read(&p.props, &out, why, sizeof(why)), WARREN_OK);
	assert_string_equal(out.method, "user.get");
	assert_string_equal(out.correlation_id, in.correlation_id);
	assert_string_equal(out.message_id, "msg-1");
	assert_string_equal(out.reply_to, "amq.rabbitmq.reply-to");
	assert_string_equal(out.app_id, "notifier");
	assert_string_equal(out.traceparent, in.traceparent);
	assert_int_equal(out.deadline_ms, 1700000000123);
	assert_int_equal(out.attempt, 3);
	assert_int_equal(out.status, -1);
	assert_int_equal(out.format, ENVELOPE_FMT_JSON);
	assert_true(out.persistent);
	assert_int_equal(p.props.delivery_mode, 2);
}

static void test_request_without_deadline_or_reply_to_omits_them(void **state)
{
	struct envelope_meta in = sample_request(), out;
	struct envelope_props p;

	in.deadline_ms = 0;
	in.reply_to[0] = '\0';
	in.persistent = false;
	envelope_request_props(&in, &p);
	assert_false(p.props._flags & AMQP_BASIC_REPLY_TO_FLAG);
	assert_int_equal(p.props.delivery_mode, 1);
	assert_int_equal(envelope_read(&p.props, &out, NULL, 0), WARREN_OK);
	assert_int_equal(out.deadline_ms, 0);
	assert_string_equal(out.reply_to, "");
}

static void test_reply_properties_carry_status_and_correlation_id(void **state)
{
	struct envelope_meta in = {.status = 5, .format = ENVELOPE_FMT_MSGPACK}, out;
	struct envelope_props p;

	strcpy(in.correlation_id, "abc");
	envelope_reply_props(&in, &p);
	assert_int_equal(envelope_read(&p.props, &out, NULL, 0), WARREN_OK);
	assert_int_equal(out.status, 5);
	assert_string_equal(out.correlation_id, "abc");
	assert_int_equal(out.format, ENVELOPE_FMT_MSGPACK);
}

static amqp_basic_properties_t with_header(amqp_table_entry_t *h)
{
	amqp_basic_properties_t p = {0};

	p._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG;
	p.correlation_id = amqp_cstring_bytes("c1");
	p.headers = (amqp_table_t){1, h};
	return p;
}

static void test_wrongly_typed_deadline_is_a_clear_error_after_the_ids(void **state)
{
	amqp_table_entry_t h = {.key = amqp_cstring_bytes("rpc-deadline"),
	                        .value = {.kind = AMQP_FIELD_KIND_UTF8,
	                                  .value.bytes = amqp_cstring_bytes("soon")}};
	amqp_basic_properties_t p = with_header(&h);
	struct envelope_meta m;
	char why[200];

	assert_int_equal(envelope_read(&p, &m, why, sizeof(why)), WARREN_ERR_DECODE);
	assert_string_equal(why, "header rpc-deadline: expected an integer, got a string");
	assert_string_equal(m.correlation_id, "c1");
}

static void test_any_integer_kind_is_accepted_for_a_header(void **state)
{
	amqp_table_entry_t h = {.key = amqp_cstring_bytes("rpc-attempt"),
	                        .value = {.kind = AMQP_FIELD_KIND_U8, .value.u8 = 7}};
	amqp_basic_properties_t p = with_header(&h);
	struct envelope_meta m;

	assert_int_equal(envelope_read(&p, &m, NULL, 0), WARREN_OK);
	assert_int_equal(m.attempt, 7);
}

static amqp_basic_properties_t with_headers(amqp_table_entry_t *h, int n)
{
	amqp_basic_properties_t p = with_header(h);

	p.headers.num_entries = n;
	return p;
}

/* Earlier deliveries: the broker's x-delivery-count plus the deliveries of
 * the batch a request was republished from (rpc-crashes); the worker's
 * read of a request, its crash isolation and its batch lane all ask this. */
static void test_the_delivery_count_adds_the_batchs_crashes_to_the_brokers_count(void **state)
{
	amqp_table_entry_t h[] = {
	    {.key = amqp_cstring_bytes("x-delivery-count"),
	     .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 3}},
	    {.key = amqp_cstring_bytes("rpc-crashes"),
	     .value = {.kind = AMQP_FIELD_KIND_U8, .value.u8 = 2}},
	};
	amqp_basic_properties_t p = with_headers(h, 2);
	struct envelope_meta m;

	assert_int_equal(envelope_delivery_count(&p), 5);
	assert_int_equal(envelope_read(&p, &m, NULL, 0), WARREN_OK);
	assert_int_equal(m.delivery_count, 5);
}

/* Integer headers may come as timestamps (as rpc-deadline may): the
 * count is read the same way wherever it is asked. */
static void test_a_delivery_count_sent_as_a_timestamp_counts(void **state)
{
	amqp_table_entry_t h = {.key = amqp_cstring_bytes("x-delivery-count"),
	                        .value = {.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = 4}};
	amqp_basic_properties_t p = with_header(&h);

	assert_int_equal(envelope_delivery_count(&p), 4);
}

/* The broker's count is never the caller's error: an odd one is none. */
static void test_an_odd_delivery_count_is_taken_as_none(void **state)
{
	amqp_table_entry_t h[] = {
	    {.key = amqp_cstring_bytes("x-delivery-count"),
	     .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = -1}},
	    {.key = amqp_cstring_bytes("rpc-crashes"),
	     .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("2")}},
	};
	amqp_basic_properties_t p = with_headers(h, 2);

	assert_int_equal(envelope_delivery_count(&p), 0);
	h[0].value = (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I64, .value.i64 = INT32_MAX};
	h[1].value = (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I64, .value.i64 = 5};
	assert_int_equal(envelope_delivery_count(&p), INT32_MAX);
}

static void test_status_out_of_range_is_refused(void **state)
{
	amqp_table_entry_t h = {.key = amqp_cstring_bytes("rpc-status"),
	                        .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = 17}};
	amqp_basic_properties_t p = with_header(&h);
	struct envelope_meta m;
	char why[200];

	assert_int_equal(envelope_read(&p, &m, why, sizeof(why)), WARREN_ERR_DECODE);
	assert_string_equal(why, "header rpc-status: 17 is out of range 0..16");
}

static void test_attempt_zero_is_refused(void **state)
{
	amqp_table_entry_t h = {.key = amqp_cstring_bytes("rpc-attempt"),
	                        .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 0}};
	amqp_basic_properties_t p = with_header(&h);
	char why[200];
	struct envelope_meta m;

	assert_int_equal(envelope_read(&p, &m, why, sizeof(why)), WARREN_ERR_DECODE);
	assert_string_equal(why, "header rpc-attempt: 0 is out of range 1..1000000");
}

static void test_traceparent_must_be_a_string(void **state)
{
	amqp_table_entry_t h = {.key = amqp_cstring_bytes("traceparent"),
	                        .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}};
	amqp_basic_properties_t p = with_header(&h);
	char why[200];
	struct envelope_meta m;

	assert_int_equal(envelope_read(&p, &m, why, sizeof(why)), WARREN_ERR_DECODE);
	assert_string_equal(why, "header traceparent: expected a string, got a boolean");
}

static void test_overlong_correlation_id_is_refused(void **state)
{
	char id[100];
	amqp_basic_properties_t p = {0};
	struct envelope_meta m;
	char why[200];

	memset(id, 'x', 99);
	id[99] = '\0';
	p._flags = AMQP_BASIC_CORRELATION_ID_FLAG;
	p.correlation_id = amqp_cstring_bytes(id);
	assert_int_equal(envelope_read(&p, &m, why, sizeof(why)), WARREN_ERR_DECODE);
	assert_string_equal(why, "property correlation_id: longer than 64 bytes");
}

static void test_unsupported_content_type_is_named(void **state)
{
	amqp_basic_properties_t p = {0};
	struct envelope_meta m;
	char why[200];

	p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG;
	p.content_type = amqp_cstring_bytes("text/xml");
	assert_int_equal(envelope_read(&p, &m, why, sizeof(why)), WARREN_ERR_DECODE);
	assert_string_equal(why, "unsupported content type \"text/xml\" (expected "
	                         "application/msgpack or application/json)");
}

static void test_absent_content_type_means_msgpack(void **state)
{
	amqp_basic_properties_t p = {0};
	struct envelope_meta m;

	assert_int_equal(envelope_read(&p, &m, NULL, 0), WARREN_OK);
	assert_int_equal(m.format, ENVELOPE_FMT_MSGPACK);
	assert_int_equal(m.attempt, 1);
	assert_int_equal(m.status, -1);
}

static void test_oversized_body_is_refused_before_decoding(void **state)
{
	char body[2000];
	warren_value *v = NULL;
	char why[200];

	memset(body, ' ', sizeof(body));
	assert_int_equal(envelope_decode_body(ENVELOPE_FMT_JSON, body, sizeof(body), 1000, &v, why,
	                                      sizeof(why)),
	                 WARREN_ERR_DECODE);
	assert_null(v);
	assert_string_equal(why, "body of 2000 bytes is larger than message.max_size (1000)");
}

static void test_truncated_json_body_is_a_clear_error(void **state)
{
	warren_value *v = NULL;
	char why[200];

	assert_int_equal(envelope_decode_body(ENVELOPE_FMT_JSON, "{\"a\":", 5, 1000, &v, why,
	                                      sizeof(why)),
	                 WARREN_ERR_DECODE);
	assert_string_equal(why, "undecodable JSON body: line 1, column 5: unexpected token "
	                         "near end of file");
}

static void test_truncated_msgpack_body_is_a_clear_error(void **state)
{
	const unsigned char body[] = {0x82, 0xa1, 'a'};
	warren_value *v = NULL;
	char why[200];

	assert_int_equal(envelope_decode_body(ENVELOPE_FMT_MSGPACK, body, sizeof(body), 1000, &v,
	                                      why, sizeof(why)),
	                 WARREN_ERR_DECODE);
	assert_string_equal(why, "undecodable msgpack body: at byte 0: map of 2 entries but only 2 bytes remain");
}

static void test_empty_body_is_nil(void **state)
{
	warren_value *v = NULL;

	assert_int_equal(envelope_decode_body(ENVELOPE_FMT_MSGPACK, "", 0, 1000, &v, NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_value_type(v), WARREN_NIL);
	warren_value_free(v);
}

static void body_round_trip(enum envelope_format fmt)
{
	const char *json = "{\"id\":42,\"name\":\"Ada\",\"prefs\":{\"email\":true},\"score\":1.5}";
	warren_value *in = NULL, *out = NULL;
	void *buf = NULL;
	size_t len = 0;

	assert_int_equal(warren_value_from_json(json, strlen(json), &in, NULL, 0), WARREN_OK);
	assert_int_equal(envelope_encode_body(fmt, in, &buf, &len, NULL, 0), WARREN_OK);
	assert_int_equal(envelope_decode_body(fmt, buf, len, 1 << 20, &out, NULL, 0), WARREN_OK);
	assert_true(warren_value_equal(in, out));
	warren_value_free(in);
	warren_value_free(out);
	free(buf);
}

static void test_bodies_round_trip_in_msgpack_and_json(void **state)
{
	body_round_trip(ENVELOPE_FMT_MSGPACK);
	body_round_trip(ENVELOPE_FMT_JSON);
}

static void test_binary_result_cannot_be_encoded_as_json(void **state)
{
	warren_value *v = warren_bin("\x00\x01", 2);
	void *buf = NULL;
	size_t len = 0;
	char why[200];

	assert_int_equal(envelope_encode_body(ENVELOPE_FMT_JSON, v, &buf, &len, why, sizeof(why)),
	                 WARREN_ERR_INVALID);
	assert_string_equal(why, "binary data (2 bytes) has no JSON form");
	warren_value_free(v);
}

static void test_error_body_has_code_message_and_details(void **state)
{
	warren_value *details = warren_map();
	warren_value *v;
	const char *message;
	const warren_value *d;
	char *text = NULL;

	warren_map_set(details, "field", warren_str("email"));
	v = envelope_error_value(WARREN_STATUS_INVALID_ARGUMENT, "bad email", details);
	assert_int_equal(warren_value_to_json(v, &text, NULL, 0), WARREN_OK);
	assert_string_equal(text, "{\"code\":\"INVALID_ARGUMENT\",\"message\":\"bad email\","
	                          "\"details\":{\"field\":\"email\"}}");
	envelope_error_parse(v, &message, &d);
	assert_string_equal(message, "bad email");
	assert_non_null(warren_map_get(d, "field"));
	free(text);
	warren_value_free(v);
}

static void test_error_body_of_another_shape_parses_to_empty_message(void **state)
{
	warren_value *v = warren_str("oops");
	const char *message;
	const warren_value *d;

	envelope_error_parse(v, &message, &d);
	assert_string_equal(message, "");
	assert_null(d);
	warren_value_free(v);
}

static void test_the_accept_batch_offer_round_trips_and_an_odd_one_is_ignored(void **state)
{
	struct envelope_meta in = sample_request(), out;
	struct envelope_props p;
	char why[200];

	in.accept_batch = 1;
	envelope_request_props(&in, &p);
	assert_int_equal(envelope_read(&p.props, &out, why, sizeof(why)), WARREN_OK);
	assert_int_equal(out.accept_batch, 1);
	in.accept_batch = 0;
	envelope_request_props(&in, &p);
	assert_int_equal(envelope_read(&p.props, &out, why, sizeof(why)), WARREN_OK);
	assert_int_equal(out.accept_batch, 0);
	/* A string where an integer belongs: as no offer, not a bad request. */
	in.accept_batch = 1;
	envelope_request_props(&in, &p);
	for (int i = 0; i < p.props.headers.num_entries; i++) {
		if (strncmp(p.headers[i].key.bytes, "rpc-accept-batch", 16) == 0) {
			p.headers[i].value.kind = AMQP_FIELD_KIND_UTF8;
			p.headers[i].value.value.bytes = amqp_cstring_bytes("yes");
		}
	}
	assert_int_equal(envelope_read(&p.props, &out, why, sizeof(why)), WARREN_OK);
	assert_int_equal(out.accept_batch, 0);
}

/* ------------------------------------------------ envelope_field_int, _header */

static void test_every_amqp_integer_kind_is_read_as_int64(void **state)
{
	const struct {
		amqp_field_value_t v;
		int64_t want;
	} cases[] = {
	    {{.kind = AMQP_FIELD_KIND_I8, .value.i8 = -128}, -128},
	    {{.kind = AMQP_FIELD_KIND_U8, .value.u8 = 255}, 255},
	    {{.kind = AMQP_FIELD_KIND_I16, .value.i16 = -32768}, -32768},
	    {{.kind = AMQP_FIELD_KIND_U16, .value.u16 = 65535}, 65535},
	    {{.kind = AMQP_FIELD_KIND_I32, .value.i32 = INT32_MIN}, INT32_MIN},
	    {{.kind = AMQP_FIELD_KIND_U32, .value.u32 = UINT32_MAX}, UINT32_MAX},
	    {{.kind = AMQP_FIELD_KIND_I64, .value.i64 = INT64_MIN}, INT64_MIN},
	    {{.kind = AMQP_FIELD_KIND_U64, .value.u64 = INT64_MAX}, INT64_MAX},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t n = 0;

		assert_true(envelope_field_int(&cases[i].v, &n));
		assert_true(n == cases[i].want);
	}
}

static void test_a_uint64_beyond_int64_max_is_refused(void **state)
{
	amqp_field_value_t v = {.kind = AMQP_FIELD_KIND_U64, .value.u64 = (uint64_t)INT64_MAX + 1};
	int64_t n = 42;

	assert_false(envelope_field_int(&v, &n));
	assert_int_equal(n, 42);
	v.value.u64 = UINT64_MAX;
	assert_false(envelope_field_int(&v, &n));
	assert_int_equal(n, 42);
}

static void test_a_non_integer_kind_is_refused(void **state)
{
	const amqp_field_value_t cases[] = {
	    {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = {1, (void *)"7"}},
	    {.kind = AMQP_FIELD_KIND_BYTES, .value.bytes = {1, (void *)"7"}},
	    {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1},
	    {.kind = AMQP_FIELD_KIND_F32, .value.f32 = 7},
	    {.kind = AMQP_FIELD_KIND_F64, .value.f64 = 7},
	    {.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = 7},
	    {.kind = AMQP_FIELD_KIND_VOID},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t n = 42;

		assert_false(envelope_field_int(&cases[i], &n));
		assert_int_equal(n, 42);
	}
}

/* The request headers took a timestamp as an integer before
 * envelope_field_int was shared, and still do. */
static void test_a_timestamp_is_still_taken_as_a_deadline(void **state)
{
	amqp_table_entry_t h = {
	    .key = amqp_cstring_bytes("rpc-deadline"),
	    .value = {.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = 1700000000123}};
	amqp_basic_properties_t p = with_header(&h);
	struct envelope_meta m;

	assert_int_equal(envelope_read(&p, &m, NULL, 0), WARREN_OK);
	assert_true(m.deadline_ms == 1700000000123);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_the_accept_batch_offer_round_trips_and_an_odd_one_is_ignored),
	    cmocka_unit_test(test_request_properties_round_trip),
	    cmocka_unit_test(test_every_amqp_integer_kind_is_read_as_int64),
	    cmocka_unit_test(test_a_uint64_beyond_int64_max_is_refused),
	    cmocka_unit_test(test_a_non_integer_kind_is_refused),
	    cmocka_unit_test(test_a_timestamp_is_still_taken_as_a_deadline),
	    cmocka_unit_test(test_request_without_deadline_or_reply_to_omits_them),
	    cmocka_unit_test(test_reply_properties_carry_status_and_correlation_id),
	    cmocka_unit_test(test_wrongly_typed_deadline_is_a_clear_error_after_the_ids),
	    cmocka_unit_test(test_any_integer_kind_is_accepted_for_a_header),
	    cmocka_unit_test(test_the_delivery_count_adds_the_batchs_crashes_to_the_brokers_count),
	    cmocka_unit_test(test_a_delivery_count_sent_as_a_timestamp_counts),
	    cmocka_unit_test(test_an_odd_delivery_count_is_taken_as_none),
	    cmocka_unit_test(test_status_out_of_range_is_refused),
	    cmocka_unit_test(test_attempt_zero_is_refused),
	    cmocka_unit_test(test_traceparent_must_be_a_string),
	    cmocka_unit_test(test_overlong_correlation_id_is_refused),
	    cmocka_unit_test(test_unsupported_content_type_is_named),
	    cmocka_unit_test(test_absent_content_type_means_msgpack),
	    cmocka_unit_test(test_oversized_body_is_refused_before_decoding),
	    cmocka_unit_test(test_truncated_json_body_is_a_clear_error),
	    cmocka_unit_test(test_truncated_msgpack_body_is_a_clear_error),
	    cmocka_unit_test(test_empty_body_is_nil),
	    cmocka_unit_test(test_bodies_round_trip_in_msgpack_and_json),
	    cmocka_unit_test(test_binary_result_cannot_be_encoded_as_json),
	    cmocka_unit_test(test_error_body_has_code_message_and_details),
	    cmocka_unit_test(test_error_body_of_another_shape_parses_to_empty_message),
	};

	return cmocka_run_group_tests_name("envelope", tests, NULL, NULL);
}
