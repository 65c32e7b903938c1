/* test_batch.c: the batch format of warren(7): every entry comes back as
 * the message it was, and malformed batches are refused with the error a
 * user sees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "envelope.h"

#define MAX (1024 * 1024)

static struct envelope_meta request(int i)
{
	struct envelope_meta m = {.format = ENVELOPE_FMT_MSGPACK,
	                          .deadline_ms = 1700000000123 + i,
	                          .attempt = 2,
	                          .status = -1,
	                          .persistent = true};

	strcpy(m.method, "user.get");
	snprintf(m.correlation_id, sizeof(m.correlation_id), "0123456789abcdef0123456789abcd%02d",
	         i);
	snprintf(m.message_id, sizeof(m.message_id), "msg-%d", i);
	strcpy(m.reply_to, "amq.rabbitmq.reply-to");
	strcpy(m.app_id, "notifier");
	strcpy(m.traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
	return m;
}

static const unsigned char sig[64] = {1, 2, 3, 0, 5, 255};

static void test_a_batch_round_trips_each_entry_as_the_message_it_was(void **state)
{
	struct envelope_meta in[3], out;
	struct envelope_props p[3];
	struct batch_item items[3];
	char bodies[3][8] = {"\x81\xa1x\x01", "", "\x81\xa1x\x03"};
	size_t lens[3] = {4, 0, 4};
	struct batch *b = NULL;
	void *buf;
	size_t len, bound = BATCH_OVERHEAD;
	char why[200] = "";
	amqp_basic_properties_t bp;
	amqp_table_entry_t bh[1];

	for (int i = 0; i < 3; i++) {
		in[i] = request(i);
		envelope_request_props(&in[i], &p[i]);
		envelope_add_signature(&p[i], "caller-1", 1700000000000, sig, sizeof(sig));
		items[i] = (struct batch_item){&p[i].props, bodies[i], lens[i]};
		bound += batch_item_bound(&items[i]);
	}
	assert_int_equal(batch_encode(items, 3, &buf, &len), WARREN_OK);
	assert_true(len <= bound);
	batch_props(&bp, bh, true);
	assert_true(batch_is(&bp));
	assert_int_equal(bp.delivery_mode, 2);
	assert_int_equal(batch_decode(&bp, buf, len, MAX, &b, why, sizeof(why)), WARREN_OK);
	assert_int_equal(b->n, 3);
	for (int i = 0; i < 3; i++) {
		const amqp_basic_properties_t *e = &b->entries[i].props;

		assert_int_equal(envelope_read(e, &out, why, sizeof(why)), WARREN_OK);
		assert_string_equal(out.correlation_id, in[i].correlation_id);
		assert_string_equal(out.message_id, in[i].message_id);
		assert_string_equal(out.method, "user.get");
		assert_string_equal(out.reply_to, "amq.rabbitmq.reply-to");
		assert_string_equal(out.app_id, "notifier");
		assert_string_equal(out.traceparent, in[i].traceparent);
		assert_int_equal(out.deadline_ms, in[i].deadline_ms);
		assert_int_equal(out.attempt, 2);
		assert_true(out.persistent); /* the batch's delivery_mode */
		assert_int_equal(e->timestamp, p[i].props.timestamp);
		assert_int_equal(e->headers.num_entries, p[i].props.headers.num_entries);
		/* The signature comes back byte for byte, as binary. */
		const amqp_table_entry_t *s = &e->headers.entries[e->headers.num_entries - 1];
		assert_int_equal(s->value.kind, AMQP_FIELD_KIND_BYTES);
		assert_int_equal(s->value.value.bytes.len, sizeof(sig));
		assert_memory_equal(s->value.value.bytes.bytes, sig, sizeof(sig));
		assert_int_equal(b->entries[i].body.len, lens[i]);
		if (lens[i] > 0) {
			assert_memory_equal(b->entries[i].body.bytes, bodies[i], lens[i]);
		}
	}
	batch_free(b);
	free(buf);
}

static void test_a_reply_entry_keeps_its_status_and_encoding(void **state)
{
	struct envelope_meta m = {.status = 5, .format = ENVELOPE_FMT_JSON, .sealed = true}, out;
	struct envelope_props p;
	struct batch_item item;
	struct batch *b = NULL;
	amqp_basic_properties_t bp;
	amqp_table_entry_t bh[1];
	char why[200];
	void *buf;
	size_t len;

	strcpy(m.correlation_id, "abc");
	envelope_reply_props(&m, &p);
	item = (struct batch_item){&p.props, "{}", 2};
	assert_int_equal(batch_encode(&item, 1, &buf, &len), WARREN_OK);
	batch_props(&bp, bh, false);
	assert_int_equal(bp.delivery_mode, 1);
	assert_int_equal(batch_decode(&bp, buf, len, MAX, &b, why, sizeof(why)), WARREN_OK);
	assert_int_equal(envelope_read(&b->entries[0].props, &out, why, sizeof(why)), WARREN_OK);
	assert_int_equal(out.status, 5);
	assert_int_equal(out.format, ENVELOPE_FMT_JSON);
	assert_true(out.sealed);
	assert_string_equal(out.correlation_id, "abc");
	batch_free(b);
	free(buf);
}

static void test_a_header_the_format_cannot_carry_is_refused_when_encoding(void **state)
{
	amqp_table_entry_t h = {.key = amqp_cstring_bytes("flag"),
	                        .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}};
	amqp_basic_properties_t p = {._flags = AMQP_BASIC_HEADERS_FLAG,
	                             .headers = {.num_entries = 1, .entries = &h}};
	struct batch_item item = {&p, "", 0};
	void *buf;
	size_t len;

	assert_int_equal(batch_encode(&item, 1, &buf, &len), WARREN_ERR_INVALID);
	assert_null(buf);
	assert_int_equal(batch_encode(&item, 0, &buf, &len), WARREN_ERR_INVALID);
}

/* ---- malformed input: each with the text a user sees */

static msgpack_sbuffer sb;
static msgpack_packer pk;

static void start(void)
{
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
}

static void key(const char *k)
{
	msgpack_pack_str_with_body(&pk, k, strlen(k));
}

/* Decodes what was packed with version header v; returns the error text. */
static const char *refused_v(int64_t v, size_t max)
{
	static char why[300];
	amqp_basic_properties_t bp;
	amqp_table_entry_t bh[1];
	struct batch *b = (struct batch *)1;

	batch_props(&bp, bh, true);
	bh[0].value.value.i64 = v;
	why[0] = '\0';
	assert_int_equal(batch_decode(&bp, sb.data, sb.size, max, &b, why, sizeof(why)),
	                 WARREN_ERR_DECODE);
	assert_null(b);
	msgpack_sbuffer_destroy(&sb);
	return why;
}

static const char *refused(void)
{
	return refused_v(BATCH_VERSION, MAX);
}

static void test_a_batch_of_another_version_is_refused(void **state)
{
	start();
	msgpack_pack_array(&pk, 0);
	assert_string_equal(refused_v(2, MAX),
	                    "batch format version 2 is not supported (this end reads 1)");
}

static void test_a_batch_without_its_version_header_is_refused(void **state)
{
	amqp_basic_properties_t bp = {._flags = AMQP_BASIC_CONTENT_TYPE_FLAG,
	                              .content_type = amqp_cstring_bytes(BATCH_CONTENT_TYPE)};
	struct batch *b;
	char why[200];

	assert_true(batch_is(&bp));
	assert_int_equal(batch_decode(&bp, "\x90", 1, MAX, &b, why, sizeof(why)),
	                 WARREN_ERR_DECODE);
	assert_string_equal(why, "no rpc-batch header (the batch format version)");
}

static void test_a_batch_above_max_size_is_refused(void **state)
{
	start();
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 1);
	key("body");
	msgpack_pack_bin_with_body(&pk, "0123456789", 10);
	assert_string_equal(refused_v(1, 10),
	                    "batch of 19 bytes is larger than message.max_size (10)");
}

static void test_a_body_that_is_not_an_array_of_maps_is_refused(void **state)
{
	start();
	msgpack_pack_map(&pk, 0);
	assert_string_equal(refused(), "batch body: expected an array of entries, got map");
	start();
	msgpack_pack_array(&pk, 0);
	assert_string_equal(refused(), "batch body: 0 entries (expected 1 to 1024)");
	start();
	msgpack_pack_array(&pk, 1);
	msgpack_pack_int(&pk, 7);
	assert_string_equal(refused(), "entry 0: expected a map, got integer");
}

static void
test_a_batch_declaring_more_entries_than_bytes_is_refused_before_allocating(void **state)
{
	start();
	msgpack_pack_array(&pk, 2);
	msgpack_pack_map(&pk, 1);
	assert_string_equal(refused(), "batch body: at byte 0: array of 2 items but only 1 "
	                               "bytes remain");
}

static void test_an_unknown_key_is_refused(void **state)
{
	start();
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 2);
	key("priority");
	msgpack_pack_int(&pk, 1);
	key("body");
	msgpack_pack_bin_with_body(&pk, "", 0);
	assert_string_equal(refused(), "entry 0: unknown key \"priority\"");
}

static void test_an_entry_without_a_body_is_refused(void **state)
{
	start();
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 1);
	key("type");
	key("user.get");
	assert_string_equal(refused(), "entry 0: no body");
}

static void test_ill_typed_fields_are_refused(void **state)
{
	char longer[300];

	start();
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 1);
	key("body");
	key("text");
	assert_string_equal(refused(), "entry 0: body: expected binary, got string");

	start();
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 1);
	key("correlation_id");
	msgpack_pack_int(&pk, 5);
	assert_string_equal(refused(), "entry 0: correlation_id: expected a string, got integer");

	memset(longer, 'a', sizeof(longer));
	start();
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 1);
	key("reply_to");
	msgpack_pack_str_with_body(&pk, longer, 256);
	assert_string_equal(refused(), "entry 0: reply_to: longer than 255 bytes");

	start();
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 1);
	key("timestamp");
	msgpack_pack_int(&pk, -1);
	assert_string_equal(refused(), "entry 0: timestamp: expected a non-negative integer");

	start();
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 1);
	key("headers");
	msgpack_pack_array(&pk, 0);
	assert_string_equal(refused(), "entry 0: headers: expected a map, got array");

	start();
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 2);
	key("headers");
	msgpack_pack_map(&pk, 1);
	key("rpc-urgent");
	msgpack_pack_true(&pk);
	key("body");
	msgpack_pack_bin_with_body(&pk, "", 0);
	assert_string_equal(
	    refused(),
	    "entry 0: header rpc-urgent: expected a string, an integer or binary, got boolean");
}

static void test_a_batch_of_more_than_the_maximum_entries_is_refused(void **state)
{
	start();
	msgpack_pack_array(&pk, BATCH_MAX_ENTRIES + 1);
	for (int i = 0; i <= BATCH_MAX_ENTRIES; i++) {
		msgpack_pack_map(&pk, 1);
		key("body");
		msgpack_pack_bin_with_body(&pk, "", 0);
	}
	assert_string_equal(refused(), "batch body: 1025 entries (expected 1 to 1024)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_batch_round_trips_each_entry_as_the_message_it_was),
	    cmocka_unit_test(test_a_reply_entry_keeps_its_status_and_encoding),
	    cmocka_unit_test(test_a_header_the_format_cannot_carry_is_refused_when_encoding),
	    cmocka_unit_test(test_a_batch_of_another_version_is_refused),
	    cmocka_unit_test(test_a_batch_without_its_version_header_is_refused),
	    cmocka_unit_test(test_a_batch_above_max_size_is_refused),
	    cmocka_unit_test(test_a_body_that_is_not_an_array_of_maps_is_refused),
	    cmocka_unit_test(
	        test_a_batch_declaring_more_entries_than_bytes_is_refused_before_allocating),
	    cmocka_unit_test(test_an_unknown_key_is_refused),
	    cmocka_unit_test(test_an_entry_without_a_body_is_refused),
	    cmocka_unit_test(test_ill_typed_fields_are_refused),
	    cmocka_unit_test(test_a_batch_of_more_than_the_maximum_entries_is_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
