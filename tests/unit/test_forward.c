/* test_forward.c: a request republished as it came (forward.h): every
 * property kept, the broker's history headers dropped, the replaced headers
 * replaced, persistent, and its TTL only when asked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "forward.h"

static amqp_table_entry_t entry(const char *key, const char *value)
{
	return forward_str(key, value);
}

/* The value of header key as a string, NULL when absent; count how often. */
static const char *header(const amqp_basic_properties_t *p, const char *key, int *count)
{
	static char text[256];
	const char *found = NULL;

	*count = 0;
	for (int i = 0; i < p->headers.num_entries; i++) {
		amqp_table_entry_t *e = &p->headers.entries[i];

		if (e->key.len == strlen(key) && memcmp(e->key.bytes, key, e->key.len) == 0) {
			(*count)++;
			if (e->value.kind == AMQP_FIELD_KIND_UTF8) {
				snprintf(text, sizeof(text), "%.*s", (int)e->value.value.bytes.len,
				         (const char *)e->value.value.bytes.bytes);
			} else {
				snprintf(text, sizeof(text), "(kind %c)", e->value.kind);
			}
			found = text;
		}
	}
	return found;
}

static void test_the_history_goes_and_the_rest_stays_in_order(void **state)
{
	amqp_table_entry_t in[] = {
	    entry("traceparent", "00-abc-01"), entry("x-death", "list"),
	    entry("x-first-death-queue", "q"), entry("x-last-death-reason", "expired"),
	    entry("x-delivery-count", "3"),    entry("rpc-attempt", "1"),
	    entry("x-deathless", "kept"),      entry("x-last-death", "not a prefix match"),
	};
	amqp_table_entry_t add[] = {entry("rpc-attempt", "2"), forward_int("rpc-retry-at", 42)};
	amqp_basic_properties_t orig = {
	    ._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
	              AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG,
	    .headers = {.num_entries = 8, .entries = in},
	    .correlation_id = amqp_cstring_bytes("c-1"),
	    .reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to.x"),
	    .content_type = amqp_cstring_bytes("application/msgpack"),
	};
	struct forward f;
	int n;

	assert_true(forward_props(&f, &orig, add, 2));
	assert_int_equal(f.props.headers.num_entries, 5);
	assert_string_equal(header(&f.props, "traceparent", &n), "00-abc-01");
	assert_null(header(&f.props, "x-death", &n));
	assert_null(header(&f.props, "x-first-death-queue", &n));
	assert_null(header(&f.props, "x-last-death-reason", &n));
	assert_null(header(&f.props, "x-delivery-count", &n));
	/* Only the exact names and prefixes: a look-alike stays. */
	assert_string_equal(header(&f.props, "x-deathless", &n), "kept");
	assert_string_equal(header(&f.props, "x-last-death", &n), "not a prefix match");
	/* Replaced, once. */
	assert_string_equal(header(&f.props, "rpc-attempt", &n), "2");
	assert_int_equal(n, 1);
	assert_string_equal(header(&f.props, "rpc-retry-at", &n), "(kind l)");
	/* The kept ones first, in their order, then the added ones. */
	assert_memory_equal(f.props.headers.entries[0].key.bytes, "traceparent", 11);
	assert_memory_equal(f.props.headers.entries[3].key.bytes, "rpc-attempt", 11);
	/* Every other property as it came; the original is not touched. */
	assert_memory_equal(f.props.correlation_id.bytes, "c-1", 3);
	assert_memory_equal(f.props.reply_to.bytes, "amq.rabbitmq.reply-to.x", 23);
	assert_true(f.props._flags & AMQP_BASIC_CONTENT_TYPE_FLAG);
	assert_int_equal(orig.headers.num_entries, 8);
	assert_ptr_equal(orig.headers.entries, in);
	forward_free(&f);
	forward_free(&f); /* twice is harmless */
}

static void test_a_copy_is_persistent_without_the_originals_ttl(void **state)
{
	amqp_basic_properties_t orig = {
	    ._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_EXPIRATION_FLAG,
	    .delivery_mode = 1,
	    .expiration = amqp_cstring_bytes("5000"),
	};
	amqp_table_entry_t add[] = {entry("rpc-reason", "bad-signature")};
	struct forward f;
	int n;

	/* No headers on the original: only the added ones. */
	assert_true(forward_props(&f, &orig, add, 1));
	assert_true(f.props._flags & AMQP_BASIC_HEADERS_FLAG);
	assert_int_equal(f.props.headers.num_entries, 1);
	assert_string_equal(header(&f.props, "rpc-reason", &n), "bad-signature");
	assert_int_equal(f.props.delivery_mode, 2);
	assert_true(f.props._flags & AMQP_BASIC_DELIVERY_MODE_FLAG);
	assert_false(f.props._flags & AMQP_BASIC_EXPIRATION_FLAG);
	forward_free(&f);
}

static void test_the_ttl_is_whole_milliseconds_never_negative(void **state)
{
	amqp_basic_properties_t orig = {0};
	struct forward f;

	assert_true(forward_props(&f, &orig, NULL, 0));
	assert_int_equal(f.props.headers.num_entries, 0);
	forward_expire_after(&f, 30000);
	assert_true(f.props._flags & AMQP_BASIC_EXPIRATION_FLAG);
	assert_int_equal(f.props.expiration.len, 5);
	assert_memory_equal(f.props.expiration.bytes, "30000", 5);
	forward_expire_after(&f, -7);
	assert_int_equal(f.props.expiration.len, 1);
	assert_memory_equal(f.props.expiration.bytes, "0", 1);
	forward_expire_after(&f, INT64_MAX);
	assert_int_equal(f.props.expiration.len, 19);
	assert_memory_equal(f.props.expiration.bytes, "9223372036854775807", 19);
	forward_free(&f);
}

static void test_the_helpers_make_typed_entries(void **state)
{
	const unsigned char sig[3] = {0, 1, 2};
	amqp_table_entry_t s = forward_str("k", "v"), i = forward_int("n", -9),
	                   b = forward_bytes("b", sig, sizeof(sig));

	assert_int_equal(s.value.kind, AMQP_FIELD_KIND_UTF8);
	assert_int_equal(s.value.value.bytes.len, 1);
	assert_int_equal(i.value.kind, AMQP_FIELD_KIND_I64);
	assert_true(i.value.value.i64 == -9);
	assert_int_equal(b.value.kind, AMQP_FIELD_KIND_BYTES);
	assert_int_equal(b.value.value.bytes.len, 3);
	assert_ptr_equal(b.value.value.bytes.bytes, sig);
	assert_int_equal(b.key.len, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_the_history_goes_and_the_rest_stays_in_order),
	    cmocka_unit_test(test_a_copy_is_persistent_without_the_originals_ttl),
	    cmocka_unit_test(test_the_ttl_is_whole_milliseconds_never_negative),
	    cmocka_unit_test(test_the_helpers_make_typed_entries),
	};

	return cmocka_run_group_tests_name("forward", tests, NULL, NULL);
}
