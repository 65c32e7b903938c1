/* test_dlq_letter.c: how rpc-dlq reads a dead letter (worker's, broker's,
 * malformed), its filters, durations and ages, what a replay keeps and
 * drops, and the text helpers that keep message data off the terminal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "rpc-dlq/dlq_letter.h"
#include "envelope.h"

#define NOW 1800000000000LL

static amqp_table_entry_t str_h(const char *key, const char *value)
{
	return (amqp_table_entry_t){
	    .key = amqp_cstring_bytes(key),
	    .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(value)}};
}

static amqp_table_entry_t int_h(const char *key, int64_t value)
{
	return (amqp_table_entry_t){.key = amqp_cstring_bytes(key),
	                            .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = value}};
}

static amqp_basic_properties_t props(amqp_table_entry_t *h, int n, const char *type,
                                     const char *corr)
{
	amqp_basic_properties_t p = {0};

	p._flags = AMQP_BASIC_HEADERS_FLAG;
	p.headers = (amqp_table_t){.num_entries = n, .entries = h};
	if (type != NULL) {
		p._flags |= AMQP_BASIC_TYPE_FLAG;
		p.type = amqp_cstring_bytes(type);
	}
	if (corr != NULL) {
		p._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
		p.correlation_id = amqp_cstring_bytes(corr);
	}
	return p;
}

static void test_a_worker_dead_letter_reads_every_header(void **state)
{
	amqp_table_entry_t h[] = {str_h("rpc-dead-reason", "retries-exhausted"),
	                          str_h("rpc-dead-error", "database unavailable"),
	                          int_h("rpc-dead-time", NOW - 5000), int_h("rpc-attempt", 5)};
	amqp_basic_properties_t p = props(h, 4, "user.get", "c-1");
	struct dlq_letter l;

	dlq_letter_read(&p, "user.get", "rpc.user.dlq", &l);
	assert_string_equal(l.method, "user.get");
	assert_string_equal(l.route, "user.get");
	assert_string_equal(l.reason, "retries-exhausted");
	assert_string_equal(l.error, "database unavailable");
	assert_string_equal(l.correlation_id, "c-1");
	assert_int_equal(l.time_ms, NOW - 5000);
	assert_int_equal(l.attempts, 5);
	assert_string_equal(l.notes, "");
}

static void test_a_broker_dead_letter_has_a_broker_reason_and_the_x_death_time(void **state)
{
	amqp_table_entry_t death[] = {
	    str_h("reason", "delivery_limit"),
	    str_h("queue", "rpc.user"),
	    {amqp_cstring_bytes("time"),
	     {.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = 1700000000}}};
	amqp_field_value_t item = {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {3, death}};
	amqp_table_entry_t h[] = {{amqp_cstring_bytes("x-death"),
	                           {.kind = AMQP_FIELD_KIND_ARRAY, .value.array = {1, &item}}},
	                          str_h("x-first-death-reason", "delivery_limit"),
	                          str_h("x-first-death-queue", "rpc.user")};
	amqp_basic_properties_t p = props(h, 3, "user.get", "c-2");
	struct dlq_letter l;

	dlq_letter_read(&p, "user.get", "rpc.user.dlq", &l);
	assert_string_equal(l.reason, "broker:delivery_limit");
	assert_string_equal(l.error, "dead-lettered by the broker from rpc.user");
	assert_int_equal(l.time_ms, 1700000000000LL);
	assert_int_equal(l.attempts, -1);
	assert_string_equal(l.notes, "");
}

static void test_x_death_alone_gives_the_reason_when_x_first_death_is_missing(void **state)
{
	amqp_table_entry_t death[] = {str_h("reason", "expired")};
	amqp_field_value_t item = {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {1, death}};
	amqp_table_entry_t h[] = {{amqp_cstring_bytes("x-death"),
	                           {.kind = AMQP_FIELD_KIND_ARRAY, .value.array = {1, &item}}}};
	amqp_basic_properties_t p = props(h, 1, "user.get", "c-3");
	struct dlq_letter l;

	dlq_letter_read(&p, "user.get", "rpc.user.dlq", &l);
	assert_string_equal(l.reason, "broker:expired");
	assert_string_equal(l.error, "dead-lettered by the broker");
	assert_int_equal(l.time_ms, 0);
}

static void test_wrong_header_types_show_as_unknown_with_notes(void **state)
{
	amqp_table_entry_t h[] = {int_h("rpc-dead-reason", 7), str_h("rpc-dead-time", "yesterday"),
	                          str_h("rpc-attempt", "3")};
	amqp_basic_properties_t p = props(h, 3, "user.get", NULL);
	struct dlq_letter l;

	dlq_letter_read(&p, "user.get", "rpc.user.dlq", &l);
	assert_string_equal(l.reason, "?");
	assert_string_equal(l.correlation_id, "?");
	assert_int_equal(l.time_ms, 0);
	assert_int_equal(l.attempts, -1);
	assert_string_equal(l.notes, "header rpc-dead-reason: expected a string, got int64; "
	                             "header rpc-dead-time: expected an integer, got string; "
	                             "header rpc-attempt: expected an integer, got string");
}

static void test_any_integer_type_is_read_as_an_integer(void **state)
{
	amqp_table_entry_t h[] = {
	    str_h("rpc-dead-reason", "crashed-worker"),
	    {amqp_cstring_bytes("rpc-attempt"), {.kind = AMQP_FIELD_KIND_I32, .value.i32 = 3}},
	    {amqp_cstring_bytes("rpc-dead-time"),
	     {.kind = AMQP_FIELD_KIND_U64, .value.u64 = 1700000000123}}};
	amqp_basic_properties_t p = props(h, 3, "user.get", "c");
	struct dlq_letter l;

	dlq_letter_read(&p, "user.get", "rpc.user.dlq", &l);
	assert_int_equal(l.attempts, 3);
	assert_int_equal(l.time_ms, 1700000000123LL);
}

static void test_the_method_falls_back_to_the_routing_key_but_not_the_queue_name(void **state)
{
	amqp_basic_properties_t p = props(NULL, 0, NULL, "c");
	struct dlq_letter l;

	dlq_letter_read(&p, "user.get", "rpc.user.dlq", &l);
	assert_string_equal(l.method, "user.get");
	assert_string_equal(l.route, "user.get");
	assert_non_null(
	    strstr(l.notes, "no type property: the method is taken from the routing key"));
	dlq_letter_read(&p, "rpc.user.dlq", "rpc.user.dlq", &l);
	assert_string_equal(l.method, "?");
	assert_string_equal(l.route, "");
	assert_non_null(strstr(l.notes, "no type property: the method is unknown"));
}

static void test_control_characters_never_reach_the_terminal(void **state)
{
	amqp_table_entry_t h[] = {str_h("rpc-dead-reason", "x"),
	                          str_h("rpc-dead-error", "\x1b]0;owned\x07 \xc2\x9b"
	                                                  "31m caf\xc3\xa9 \xff")};
	amqp_basic_properties_t p = props(h, 2, "user.get\n", "c");
	struct dlq_letter l;

	dlq_letter_read(&p, "", "rpc.user.dlq", &l);
	assert_string_equal(l.error, "?]0;owned? ?31m caf\xc3\xa9 ?");
	assert_string_equal(l.method, "user.get?");
	assert_string_equal(l.route, "user.get\n"); /* the routing key stays as it was */
}

static void test_filters_match_exactly_or_by_prefix_and_by_age(void **state)
{
	struct dlq_letter l = {
	    .method = "user.get", .reason = "broker:delivery_limit", .time_ms = NOW - 2 * 3600000};
	struct dlq_filter f = DLQ_FILTER_NONE;

	assert_true(dlq_filter_match(&f, &l, NOW));
	f.method = "user.get";
	assert_true(dlq_filter_match(&f, &l, NOW));
	f.method = "user.*";
	assert_true(dlq_filter_match(&f, &l, NOW));
	f.method = "user";
	assert_false(dlq_filter_match(&f, &l, NOW));
	f.method = NULL;
	f.reason = "broker:*";
	assert_true(dlq_filter_match(&f, &l, NOW));
	f.reason = "delivery_limit";
	assert_false(dlq_filter_match(&f, &l, NOW));
	f.reason = NULL;
	f.older_than_ms = 2 * 3600000;
	assert_true(dlq_filter_match(&f, &l, NOW));
	f.older_than_ms = 2 * 3600000 + 1;
	assert_false(dlq_filter_match(&f, &l, NOW));
	f.older_than_ms = -1;
	f.newer_than_ms = 2 * 3600000;
	assert_false(dlq_filter_match(&f, &l, NOW));
	f.newer_than_ms = 3 * 3600000;
	assert_true(dlq_filter_match(&f, &l, NOW));
	l.time_ms = 0; /* unknown: no time condition holds */
	assert_false(dlq_filter_match(&f, &l, NOW));
}

static void test_durations_take_units_fractions_and_bare_seconds(void **state)
{
	int64_t ms = -1;

	assert_true(dlq_parse_duration("250ms", &ms));
	assert_int_equal(ms, 250);
	assert_true(dlq_parse_duration("90s", &ms));
	assert_int_equal(ms, 90000);
	assert_true(dlq_parse_duration("5m", &ms));
	assert_int_equal(ms, 300000);
	assert_true(dlq_parse_duration("1.5h", &ms));
	assert_int_equal(ms, 5400000);
	assert_true(dlq_parse_duration("4d", &ms));
	assert_int_equal(ms, 4 * 86400000LL);
	assert_true(dlq_parse_duration("30", &ms));
	assert_int_equal(ms, 30000);
	assert_true(dlq_parse_duration("0", &ms));
	assert_int_equal(ms, 0);
	assert_false(dlq_parse_duration("", &ms));
	assert_false(dlq_parse_duration("soon", &ms));
	assert_false(dlq_parse_duration("-5m", &ms));
	assert_false(dlq_parse_duration("5 m", &ms));
	assert_false(dlq_parse_duration("5w", &ms));
	assert_false(dlq_parse_duration("0x10", &ms));
	assert_false(dlq_parse_duration("1.2.3s", &ms));
	assert_false(dlq_parse_duration("3651d", &ms));
}

static void test_ages_use_the_largest_unit_that_fits(void **state)
{
	char buf[16];

	dlq_format_age(-5000, buf, sizeof(buf));
	assert_string_equal(buf, "0s");
	dlq_format_age(3999, buf, sizeof(buf));
	assert_string_equal(buf, "3s");
	dlq_format_age(59999, buf, sizeof(buf));
	assert_string_equal(buf, "59s");
	dlq_format_age(60000, buf, sizeof(buf));
	assert_string_equal(buf, "1m");
	dlq_format_age(3599999, buf, sizeof(buf));
	assert_string_equal(buf, "59m");
	dlq_format_age(2 * 3600000 + 1, buf, sizeof(buf));
	assert_string_equal(buf, "2h");
	dlq_format_age(86400000LL * 4 + 5, buf, sizeof(buf));
	assert_string_equal(buf, "4d");
}

static void test_a_replay_drops_death_deadline_and_reply_to_and_resets_the_attempt(void **state)
{
	amqp_table_entry_t h[] = {str_h("rpc-dead-reason", "x"),
	                          str_h("rpc-dead-error", "e"),
	                          int_h("rpc-dead-time", 1),
	                          str_h("rpc-dead-worker", "w"),
	                          str_h("rpc-dead-queue", "q"),
	                          int_h("rpc-deadline", 5),
	                          int_h("rpc-attempt", 4),
	                          str_h("x-death", "d"),
	                          str_h("x-first-death-reason", "r"),
	                          str_h("x-last-death-queue", "q"),
	                          int_h("x-delivery-count", 3),
	                          str_h("traceparent", "tp"),
	                          str_h("x-custom", "kept")};
	amqp_basic_properties_t p = props(h, 13, "user.get", "c");
	struct dlq_replay r;

	p._flags |= AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
	p.reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to.x");
	p.message_id = amqp_cstring_bytes("m-1");
	assert_true(dlq_replay_props(&p, &r));
	assert_false(r.props._flags & AMQP_BASIC_REPLY_TO_FLAG);
	assert_true(r.props._flags & AMQP_BASIC_MESSAGE_ID_FLAG);
	assert_true(r.props._flags & AMQP_BASIC_CORRELATION_ID_FLAG);
	assert_int_equal(r.props.headers.num_entries, 3);
	assert_non_null(wire_header_find(&r.props.headers, "traceparent"));
	assert_non_null(wire_header_find(&r.props.headers, "x-custom"));
	const amqp_field_value_t *a = wire_header_find(&r.props.headers, "rpc-attempt");
	assert_non_null(a);
	assert_int_equal(a->kind, AMQP_FIELD_KIND_I64);
	assert_int_equal(a->value.i64, 1);
	dlq_replay_free(&r);
}

static void test_a_replay_of_a_message_without_headers_gets_rpc_attempt(void **state)
{
	amqp_basic_properties_t p = {0};
	struct dlq_replay r;

	assert_true(dlq_replay_props(&p, &r));
	assert_true(r.props._flags & AMQP_BASIC_HEADERS_FLAG);
	assert_int_equal(r.props.headers.num_entries, 1);
	dlq_replay_free(&r);
}

/* The caller's signature covers fields a replay changes: it goes, and the
 * operator's (dlq_replay_add_signature) takes its place. */
static void test_a_replay_drops_the_callers_signature_and_carries_the_operators(void **state)
{
	amqp_table_entry_t h[] = {str_h("rpc-key-id", "app"), int_h("rpc-signed-at", 7),
	                          str_h("rpc-signature", "sig"), str_h("rpc-retry-token", "t"),
	                          str_h("traceparent", "tp")};
	amqp_basic_properties_t p = props(h, 5, "user.get", "c");
	const unsigned char sig[3] = {1, 2, 3};
	const amqp_field_value_t *v;
	struct dlq_replay r;

	assert_true(dlq_replay_props(&p, &r));
	assert_int_equal(r.props.headers.num_entries, 2);
	assert_null(wire_header_find(&r.props.headers, "rpc-key-id"));
	assert_null(wire_header_find(&r.props.headers, "rpc-retry-token"));
	dlq_replay_add_signature(&r, "ops", 1700000000123, sig, sizeof(sig));
	assert_int_equal(r.props.headers.num_entries, 5);
	v = wire_header_find(&r.props.headers, "rpc-key-id");
	assert_non_null(v);
	assert_int_equal(v->kind, AMQP_FIELD_KIND_UTF8);
	assert_int_equal(v->value.bytes.len, 3);
	assert_memory_equal(v->value.bytes.bytes, "ops", 3);
	v = wire_header_find(&r.props.headers, "rpc-signed-at");
	assert_non_null(v);
	assert_int_equal(v->kind, AMQP_FIELD_KIND_I64);
	assert_int_equal(v->value.i64, 1700000000123);
	v = wire_header_find(&r.props.headers, "rpc-signature");
	assert_non_null(v);
	assert_int_equal(v->kind, AMQP_FIELD_KIND_BYTES);
	assert_int_equal(v->value.bytes.len, 3);
	assert_memory_equal(v->value.bytes.bytes, sig, 3);
	assert_non_null(wire_header_find(&r.props.headers, "traceparent"));
	dlq_replay_free(&r);
}

static void test_truncation_counts_characters_and_ends_with_dots(void **state)
{
	char s[64];

	strcpy(s, "database unavailable");
	dlq_truncate(s, 20);
	assert_string_equal(s, "database unavailable");
	dlq_truncate(s, 10);
	assert_string_equal(s, "databas...");
	strcpy(s, "caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9"
	          "e");
	assert_int_equal(dlq_columns(s), 17);
	dlq_truncate(s, 8);
	assert_string_equal(s, "caf\xc3\xa9 ...");
	strcpy(s, "abcdef");
	dlq_truncate(s, 2);
	assert_string_equal(s, "ab");
}

static void test_printable_stops_at_a_character_boundary(void **state)
{
	char s[5];

	dlq_printable(s, sizeof(s), "ab\xc3\xa9\xc3\xa9", 6);
	assert_string_equal(s, "ab\xc3\xa9");
	dlq_printable(s, sizeof(s), "a\0b", 3);
	assert_string_equal(s, "a?b");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_worker_dead_letter_reads_every_header),
	    cmocka_unit_test(test_a_broker_dead_letter_has_a_broker_reason_and_the_x_death_time),
	    cmocka_unit_test(test_x_death_alone_gives_the_reason_when_x_first_death_is_missing),
	    cmocka_unit_test(test_wrong_header_types_show_as_unknown_with_notes),
	    cmocka_unit_test(test_any_integer_type_is_read_as_an_integer),
	    cmocka_unit_test(test_the_method_falls_back_to_the_routing_key_but_not_the_queue_name),
	    cmocka_unit_test(test_control_characters_never_reach_the_terminal),
	    cmocka_unit_test(test_filters_match_exactly_or_by_prefix_and_by_age),
	    cmocka_unit_test(test_durations_take_units_fractions_and_bare_seconds),
	    cmocka_unit_test(test_ages_use_the_largest_unit_that_fits),
	    cmocka_unit_test(
	        test_a_replay_drops_death_deadline_and_reply_to_and_resets_the_attempt),
	    cmocka_unit_test(test_a_replay_of_a_message_without_headers_gets_rpc_attempt),
	    cmocka_unit_test(test_a_replay_drops_the_callers_signature_and_carries_the_operators),
	    cmocka_unit_test(test_truncation_counts_characters_and_ends_with_dots),
	    cmocka_unit_test(test_printable_stops_at_a_character_boundary),
	};

	return cmocka_run_group_tests_name("test_dlq_letter", tests, NULL, NULL);
}
