/* test_wire.c: the broker side of the wire contract (wire.h): the names,
 * the header lookup, copies without the broker's history, and what the
 * module declares held against rabbitmq/definitions.json (its exchanges,
 * queues, bindings and their arguments, the policies that match each
 * queue, and the rights of the users that declare them). The declarations
 * are recorded, not sent: amqp_exchange_declare, amqp_queue_declare and
 * amqp_queue_bind are wrapped (Makefile WRAP_test_wire). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

/* ------------------------------------------------------------ recording */

/* What the wrapped calls were asked to declare, in definitions.json's
 * shape; NULL when not recording. */
static json_t *declared;
/* A name whose declaration the "broker" refuses (NULL: none). */
static const char *refuse;
static int calls;

static json_t *text(amqp_bytes_t b)
{
	return json_stringn(b.bytes, b.len);
}

/* An x-arguments table as definitions.json writes it: strings and
 * integers, the only kinds warren declares; anything else fails. */
static json_t *args_json(amqp_table_t t)
{
	json_t *o = json_object();

	for (int i = 0; i < t.num_entries; i++) {
		amqp_table_entry_t *e = &t.entries[i];
		char key[128];
		json_t *v = NULL;

		snprintf(key, sizeof(key), "%.*s", (int)e->key.len, (const char *)e->key.bytes);
		if (e->value.kind == AMQP_FIELD_KIND_UTF8) {
			v = text(e->value.value.bytes);
		} else if (e->value.kind == AMQP_FIELD_KIND_I64) {
			v = json_integer(e->value.value.i64);
		}
		if (v == NULL) {
			fail_msg("argument %s: kind %c is not in definitions.json's vocabulary",
			         key, e->value.kind);
		}
		json_object_set_new(o, key, v);
	}
	return o;
}

/* Records o under kind ("exchanges", "queues", "bindings") unless already
 * there (every service declares rpc, the delay tiers...). */
static void record(const char *kind, json_t *o)
{
	json_t *list = json_object_get(declared, kind), *v;
	size_t i;

	json_array_foreach(list, i, v)
	{
		if (json_equal(v, o)) {
			json_decref(o);
			return;
		}
	}
	json_array_append_new(list, o);
}

static bool refused(amqp_bytes_t name)
{
	calls++;
	return refuse != NULL && name.len == strlen(refuse) &&
	       memcmp(name.bytes, refuse, name.len) == 0;
}

amqp_exchange_declare_ok_t *
__wrap_amqp_exchange_declare(amqp_connection_state_t state, amqp_channel_t channel,
                             amqp_bytes_t exchange, amqp_bytes_t type, amqp_boolean_t passive,
                             amqp_boolean_t durable, amqp_boolean_t auto_delete,
                             amqp_boolean_t internal, amqp_table_t arguments);
amqp_exchange_declare_ok_t *
__wrap_amqp_exchange_declare(amqp_connection_state_t state, amqp_channel_t channel,
                             amqp_bytes_t exchange, amqp_bytes_t type, amqp_boolean_t passive,
                             amqp_boolean_t durable, amqp_boolean_t auto_delete,
                             amqp_boolean_t internal, amqp_table_t arguments)
{
	static amqp_exchange_declare_ok_t ok;

	if (refused(exchange)) {
		return NULL;
	}
	assert_false(passive);
	record("exchanges",
	       json_pack("{s:o, s:s, s:o, s:b, s:b, s:b, s:o}", "name", text(exchange), "vhost",
	                 "/", "type", text(type), "durable", durable, "auto_delete", auto_delete,
	                 "internal", internal, "arguments", args_json(arguments)));
	return &ok;
}

amqp_queue_declare_ok_t *
__wrap_amqp_queue_declare(amqp_connection_state_t state, amqp_channel_t channel, amqp_bytes_t queue,
                          amqp_boolean_t passive, amqp_boolean_t durable, amqp_boolean_t exclusive,
                          amqp_boolean_t auto_delete, amqp_table_t arguments);
amqp_queue_declare_ok_t *
__wrap_amqp_queue_declare(amqp_connection_state_t state, amqp_channel_t channel, amqp_bytes_t queue,
                          amqp_boolean_t passive, amqp_boolean_t durable, amqp_boolean_t exclusive,
                          amqp_boolean_t auto_delete, amqp_table_t arguments)
{
	static amqp_queue_declare_ok_t ok;

	if (refused(queue)) {
		return NULL;
	}
	/* definitions.json has no word for these: they must stay off. */
	assert_false(passive);
	assert_false(exclusive);
	record("queues",
	       json_pack("{s:o, s:s, s:b, s:b, s:o}", "name", text(queue), "vhost", "/", "durable",
	                 durable, "auto_delete", auto_delete, "arguments", args_json(arguments)));
	return &ok;
}

amqp_queue_bind_ok_t *__wrap_amqp_queue_bind(amqp_connection_state_t state, amqp_channel_t channel,
                                             amqp_bytes_t queue, amqp_bytes_t exchange,
                                             amqp_bytes_t routing_key, amqp_table_t arguments);
amqp_queue_bind_ok_t *__wrap_amqp_queue_bind(amqp_connection_state_t state, amqp_channel_t channel,
                                             amqp_bytes_t queue, amqp_bytes_t exchange,
                                             amqp_bytes_t routing_key, amqp_table_t arguments)
{
	static amqp_queue_bind_ok_t ok;

	if (refused(queue)) {
		return NULL;
	}
	record("bindings",
	       json_pack("{s:o, s:s, s:o, s:s, s:o, s:o}", "source", text(exchange), "vhost", "/",
	                 "destination", text(queue), "destination_type", "queue", "routing_key",
	                 text(routing_key), "arguments", args_json(arguments)));
	return &ok;
}

static int start_recording(void **state)
{
	declared = json_pack("{s:[], s:[], s:[]}", "exchanges", "queues", "bindings");
	refuse = NULL;
	calls = 0;
	return declared == NULL;
}

static int stop_recording(void **state)
{
	json_decref(declared);
	declared = NULL;
	return 0;
}

/* ----------------------------------------------------------------- names */

static void test_a_service_s_queues_are_named_after_it(void **state)
{
	char buf[96];

	assert_true(wire_service_queue(buf, sizeof(buf), "user"));
	assert_string_equal(buf, "rpc.user");
	assert_true(wire_fast_queue(buf, sizeof(buf), "user"));
	assert_string_equal(buf, "rpc.user.fast");
	assert_true(wire_batch_queue(buf, sizeof(buf), "user"));
	assert_string_equal(buf, "rpc.user.batch");
	assert_true(wire_dlq(buf, sizeof(buf), "user"));
	assert_string_equal(buf, "rpc.user.dlq");
	assert_true(wire_binding(buf, sizeof(buf), "user"));
	assert_string_equal(buf, "user.#");
}

static void test_the_exchanges_and_direct_reply_to_keep_their_names(void **state)
{
	assert_string_equal(WIRE_EXCHANGE, "rpc");
	assert_string_equal(WIRE_FAST_EXCHANGE, "rpc.fast");
	assert_string_equal(WIRE_BATCH_EXCHANGE, "rpc.batch");
	assert_string_equal(WIRE_DLX, "rpc.dlx");
	assert_string_equal(WIRE_DEFAULT_EXCHANGE, "");
	assert_string_equal(WIRE_DIRECT_REPLY_TO, "amq.rabbitmq.reply-to");
}

static void test_a_name_that_does_not_fit_is_cut_and_said(void **state)
{
	char buf[8];

	assert_false(wire_dlq(buf, sizeof(buf), "user"));
	assert_string_equal(buf, "rpc.use");
	assert_true(wire_service_queue(buf, sizeof(buf), "usr"));
	assert_false(wire_service_queue(buf, sizeof(buf), "user"));
}

static void test_a_reply_queue_carries_at_most_64_bytes_of_the_app_id(void **state)
{
	char buf[160], app[100];

	assert_true(wire_reply_queue(buf, sizeof(buf), "notifier", "0a1b2c3d"));
	assert_string_equal(buf, "rpc.reply.notifier.0a1b2c3d");
	memset(app, 'a', sizeof(app) - 1);
	app[sizeof(app) - 1] = '\0';
	assert_true(wire_reply_queue(buf, sizeof(buf), app, "x"));
	assert_int_equal(strlen(buf), strlen("rpc.reply.") + 64 + strlen(".x"));
}

static void test_the_delay_tiers_double_from_250ms_to_32s(void **state)
{
	static const char *const names[WIRE_DELAY_TIERS] = {
	    "rpc.delay.250ms", "rpc.delay.500ms", "rpc.delay.1s",  "rpc.delay.2s",
	    "rpc.delay.4s",    "rpc.delay.8s",    "rpc.delay.16s", "rpc.delay.32s"};

	for (int i = 0; i < WIRE_DELAY_TIERS; i++) {
		assert_string_equal(wire_delay_tiers[i].name, names[i]);
		assert_int_equal(wire_delay_tiers[i].ms, 250 << i);
	}
}

/* --------------------------------------------------------------- headers */

static void test_a_header_is_found_by_its_whole_key(void **state)
{
	amqp_table_entry_t h[] = {
	    {.key = amqp_cstring_bytes("rpc-attempt-x"),
	     .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = 1}},
	    {.key = amqp_cstring_bytes("rpc-attempt"),
	     .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = 2}},
	};
	amqp_table_t t = {2, h};
	amqp_basic_properties_t p = {._flags = AMQP_BASIC_HEADERS_FLAG, .headers = t};

	assert_ptr_equal(wire_header_find(&t, "rpc-attempt"), &h[1].value);
	assert_ptr_equal(wire_header_find(&t, "rpc-attempt-x"), &h[0].value);
	assert_ptr_equal(wire_header(&p, "rpc-attempt"), &h[1].value);
}

static void test_a_missing_header_is_null(void **state)
{
	amqp_table_entry_t h = {.key = amqp_cstring_bytes("rpc-attempt"),
	                        .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = 2}};
	amqp_table_t t = {1, &h};
	amqp_basic_properties_t p = {.headers = t};

	assert_null(wire_header_find(&t, "rpc-attempts"));
	assert_null(wire_header_find(&t, "rpc-attemp"));
	assert_null(wire_header_find(&t, ""));
	assert_null(wire_header_find(NULL, "rpc-attempt"));
	/* Headers present but not flagged: the message has none. */
	assert_null(wire_header(&p, "rpc-attempt"));
	p._flags = AMQP_BASIC_HEADERS_FLAG;
	assert_null(wire_header(&p, WIRE_H_DELIVERY_COUNT));
}

static amqp_table_entry_t str_h(const char *key, const char *value)
{
	return (amqp_table_entry_t){
	    .key = amqp_cstring_bytes(key),
	    .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(value)}};
}

static bool drop_custom(amqp_bytes_t key, const void *arg)
{
	return wire_key_is(key, arg);
}

/* Each history header alone among kept ones: it goes, they stay in order. */
static void test_each_history_header_is_dropped_and_the_rest_kept_in_order(void **state)
{
	static const char *const history[] = {"x-death",
	                                      "x-first-death-reason",
	                                      "x-first-death-queue",
	                                      "x-first-death-exchange",
	                                      "x-last-death-reason",
	                                      "x-last-death-queue",
	                                      "x-last-death-exchange",
	                                      "x-delivery-count"};

	for (size_t i = 0; i < sizeof(history) / sizeof(history[0]); i++) {
		amqp_table_entry_t in[] = {str_h("traceparent", "00-abc-01"),
		                           str_h(history[i], "h"), str_h("rpc-attempt", "2")};
		amqp_basic_properties_t orig = {._flags = AMQP_BASIC_HEADERS_FLAG |
		                                          AMQP_BASIC_CORRELATION_ID_FLAG,
		                                .headers = {3, in},
		                                .correlation_id = amqp_cstring_bytes("c-1")};
		amqp_basic_properties_t out;
		amqp_table_entry_t room[3];

		assert_true(wire_history_header(amqp_cstring_bytes(history[i])));
		assert_int_equal(wire_props_copy(&out, &orig, room, NULL, NULL), 2);
		assert_int_equal(out.headers.num_entries, 2);
		assert_ptr_equal(out.headers.entries, room);
		assert_null(wire_header(&out, history[i]));
		assert_memory_equal(room[0].key.bytes, "traceparent", 11);
		assert_memory_equal(room[1].key.bytes, "rpc-attempt", 11);
		assert_memory_equal(out.correlation_id.bytes, "c-1", 3);
		assert_int_equal(out._flags, orig._flags);
	}
}

static void test_look_alikes_of_history_headers_are_kept(void **state)
{
	amqp_table_entry_t in[] = {str_h("x-deathless", "1"), str_h("x-last-death", "2"),
	                           str_h("x-first-deaths", "3"), str_h("x-delivery-counts", "4"),
	                           str_h("X-Death", "5")};
	amqp_basic_properties_t orig = {._flags = AMQP_BASIC_HEADERS_FLAG, .headers = {5, in}};
	amqp_basic_properties_t out;
	amqp_table_entry_t room[5];

	assert_int_equal(wire_props_copy(&out, &orig, room, NULL, NULL), 5);
	for (int i = 0; i < 5; i++) {
		assert_false(wire_history_header(in[i].key));
		assert_memory_equal(room[i].key.bytes, in[i].key.bytes, in[i].key.len);
	}
}

static void test_the_caller_drops_more_and_a_copy_without_headers_gets_some(void **state)
{
	amqp_table_entry_t in[] = {str_h("x-custom", "1"), str_h("x-death", "2"),
	                           str_h("traceparent", "3")};
	amqp_basic_properties_t orig = {._flags = AMQP_BASIC_HEADERS_FLAG, .headers = {3, in}};
	amqp_basic_properties_t none = {._flags = AMQP_BASIC_TYPE_FLAG,
	                                .type = amqp_cstring_bytes("user.get")};
	amqp_basic_properties_t out;
	amqp_table_entry_t room[3];

	assert_int_equal(wire_props_copy(&out, &orig, room, drop_custom, "x-custom"), 1);
	assert_memory_equal(room[0].key.bytes, "traceparent", 11);
	/* No headers to copy: an empty table, flagged, for the caller to add to. */
	assert_int_equal(wire_header_count(&none), 0);
	assert_int_equal(wire_props_copy(&out, &none, room, NULL, NULL), 0);
	assert_int_equal(out._flags, AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG);
	assert_int_equal(out.headers.num_entries, 0);
}

/* ---------------------------------------------------------- declarations */

static void declare_services(void)
{
	static const char *const services[] = {"example", "user"};
	char what[200];

	for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++) {
		assert_true(wire_declare_service(NULL, 1, services[i], what, sizeof(what)));
		assert_true(wire_declare_fast_lane(NULL, 2, services[i]));
	}
}

static json_t *definitions(void)
{
	const char *dir = getenv("WARREN_SRC_DIR");
	char path[4096];
	json_error_t err;
	json_t *d;

	snprintf(path, sizeof(path), "%s/rabbitmq/definitions.json",
	         dir != NULL && dir[0] != '\0' ? dir : ".");
	d = json_load_file(path, 0, &err);
	if (d == NULL) {
		fail_msg("%s:%d: %s", path, err.line, err.text);
	}
	return d;
}

/* How many entries of a (kind) are not in b, each printed. */
static int missing(json_t *a, json_t *b, const char *kind, const char *why)
{
	json_t *v, *w;
	size_t i, j;
	int n = 0;

	json_array_foreach(json_object_get(a, kind), i, v)
	{
		bool found = false;

		json_array_foreach(json_object_get(b, kind), j, w)
		{
			found = found || json_equal(v, w);
		}
		if (!found) {
			char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);

			print_error("%s %s: %s\n", kind, why, s);
			free(s);
			n++;
		}
	}
	return n;
}

/* Both ways, with every field of each entry: a change on either side
 * (a name, a type, durability, an x-argument, a binding) fails. */
static void test_what_the_module_declares_is_what_definitions_json_declares(void **state)
{
	static const char *const kinds[] = {"exchanges", "queues", "bindings"};
	json_t *defs = definitions();
	int bad = 0;

	declare_services();
	for (size_t i = 0; i < 3; i++) {
		bad += missing(declared, defs, kinds[i],
		               "declared by the module, not in definitions.json");
		bad += missing(defs, declared, kinds[i],
		               "in definitions.json, not declared by the module");
	}
	assert_int_equal(bad, 0);
	/* Not vacuous: 12 exchanges, 16 queues, 16 bindings today. */
	assert_true(json_array_size(json_object_get(declared, "queues")) >= 8);
	json_decref(defs);
}

static bool matches(const char *pattern, const char *name)
{
	regex_t re;
	int rc;

	assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
	rc = regexec(&re, name, 0, NULL, 0);
	regfree(&re);
	return rc == 0;
}

/* The policy that applies to a queue (the highest priority; they all
 * have 0, so more than one match is an error), or NULL. */
static json_t *policy_of(json_t *defs, const char *queue)
{
	json_t *p, *found = NULL;
	size_t i;

	json_array_foreach(json_object_get(defs, "policies"), i, p)
	{
		if (matches(json_string_value(json_object_get(p, "pattern")), queue)) {
			if (found != NULL) {
				fail_msg("queue %s: matched by two policies", queue);
			}
			found = p;
		}
	}
	return found;
}

static void expect_policy(json_t *defs, const char *queue, const char *policy)
{
	json_t *p = policy_of(defs, queue);

	if (policy == NULL) {
		if (p != NULL) {
			fail_msg("queue %s: no policy expected, got %s", queue,
			         json_string_value(json_object_get(p, "name")));
		}
		return;
	}
	if (p == NULL || strcmp(json_string_value(json_object_get(p, "name")), policy) != 0) {
		fail_msg("queue %s: policy %s expected", queue, policy);
	}
	/* A service's dead letters go to the module's dead-letter exchange. */
	assert_string_equal(json_string_value(json_object_get(json_object_get(p, "definition"),
	                                                      "dead-letter-exchange")),
	                    WIRE_DLX);
}

static void test_each_queue_the_module_names_gets_its_policy_from_definitions_json(void **state)
{
	json_t *defs = definitions();
	char q[96];

	wire_service_queue(q, sizeof(q), "user");
	expect_policy(defs, q, "rpc-service-queues");
	wire_fast_queue(q, sizeof(q), "user");
	expect_policy(defs, q, "rpc-fast-queues");
	wire_batch_queue(q, sizeof(q), "user");
	expect_policy(defs, q, "rpc-batch-queues");
	wire_dlq(q, sizeof(q), "user");
	expect_policy(defs, q, NULL);
	/* A delay tier's dead-lettering is its own x-arguments. */
	for (int i = 0; i < WIRE_DELAY_TIERS; i++) {
		expect_policy(defs, wire_delay_tiers[i].name, NULL);
	}
	json_decref(defs);
}

static json_t *permission_of(json_t *defs, const char *user)
{
	json_t *p;
	size_t i;

	json_array_foreach(json_object_get(defs, "permissions"), i, p)
	{
		if (strcmp(json_string_value(json_object_get(p, "user")), user) == 0) {
			return p;
		}
	}
	fail_msg("no permissions for %s in definitions.json", user);
	return NULL;
}

static void expect_right(json_t *perm, const char *right, const char *name)
{
	const char *re = json_string_value(json_object_get(perm, right));

	if (!matches(re, name)) {
		fail_msg("%s: no %s right on %s (%s)",
		         json_string_value(json_object_get(perm, "user")), right, name, re);
	}
}

/* Each service's user may configure all it declares; a caller may
 * configure and read its reply queue and write to the request exchanges. */
static void test_the_users_of_definitions_json_may_declare_what_the_module_does(void **state)
{
	static const char *const services[] = {"example", "user"};
	json_t *defs = definitions(), *caller = permission_of(defs, "warren-caller"), *v;
	char q[160], user[64];
	size_t j;

	for (size_t i = 0; i < 2; i++) {
		json_t *perm;

		snprintf(user, sizeof(user), "warren-%s-service", services[i]);
		perm = permission_of(defs, user);
		json_array_clear(json_object_get(declared, "exchanges"));
		json_array_clear(json_object_get(declared, "queues"));
		assert_true(wire_declare_service(NULL, 1, services[i], q, sizeof(q)));
		assert_true(wire_declare_fast_lane(NULL, 2, services[i]));
		json_array_foreach(json_object_get(declared, "exchanges"), j, v)
		{
			expect_right(perm, "configure",
			             json_string_value(json_object_get(v, "name")));
		}
		json_array_foreach(json_object_get(declared, "queues"), j, v)
		{
			expect_right(perm, "configure",
			             json_string_value(json_object_get(v, "name")));
		}
	}
	assert_true(wire_reply_queue(q, sizeof(q), "notifier", "0a1b2c3d"));
	expect_right(caller, "configure", q);
	expect_right(caller, "read", q);
	expect_right(caller, "read", WIRE_DIRECT_REPLY_TO);
	expect_right(caller, "write", WIRE_EXCHANGE);
	expect_right(caller, "write", WIRE_FAST_EXCHANGE);
	expect_right(caller, "write", WIRE_BATCH_EXCHANGE);
	json_decref(defs);
}

/* Per caller, not in definitions.json: not durable, gone 5 min after use. */
static void test_a_reply_queue_is_declared_transient_with_an_expiry(void **state)
{
	json_t *want =
	    json_pack("{s:s, s:s, s:b, s:b, s:{s:i}}", "name", "rpc.reply.n.1", "vhost", "/",
	              "durable", 0, "auto_delete", 0, "arguments", "x-expires", 300000);

	assert_true(wire_declare_reply_queue(NULL, 1, "rpc.reply.n.1"));
	assert_true(json_equal(json_array_get(json_object_get(declared, "queues"), 0), want));
	json_decref(want);
}

static void test_a_refused_step_is_named_and_ends_the_declarations(void **state)
{
	char what[200];
	int before;

	refuse = "rpc.user.dlq";
	assert_false(wire_declare_service(NULL, 1, "user", what, sizeof(what)));
	assert_string_equal(what, "declaring queue rpc.user.dlq");
	before = calls;
	refuse = "rpc.delay.1s";
	assert_false(wire_declare_service(NULL, 1, "user", what, sizeof(what)));
	assert_string_equal(what, "declaring exchange rpc.delay.1s");
	/* Tiers 250ms and 500ms (3 calls each), then the refused exchange. */
	assert_int_equal(calls - before, 7);
	refuse = "rpc.user.fast";
	assert_false(wire_declare_fast_lane(NULL, 2, "user"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_service_s_queues_are_named_after_it),
	    cmocka_unit_test(test_the_exchanges_and_direct_reply_to_keep_their_names),
	    cmocka_unit_test(test_a_name_that_does_not_fit_is_cut_and_said),
	    cmocka_unit_test(test_a_reply_queue_carries_at_most_64_bytes_of_the_app_id),
	    cmocka_unit_test(test_the_delay_tiers_double_from_250ms_to_32s),
	    cmocka_unit_test(test_a_header_is_found_by_its_whole_key),
	    cmocka_unit_test(test_a_missing_header_is_null),
	    cmocka_unit_test(test_each_history_header_is_dropped_and_the_rest_kept_in_order),
	    cmocka_unit_test(test_look_alikes_of_history_headers_are_kept),
	    cmocka_unit_test(test_the_caller_drops_more_and_a_copy_without_headers_gets_some),
	    cmocka_unit_test_setup_teardown(
	        test_what_the_module_declares_is_what_definitions_json_declares, start_recording,
	        stop_recording),
	    cmocka_unit_test(
	        test_each_queue_the_module_names_gets_its_policy_from_definitions_json),
	    cmocka_unit_test_setup_teardown(
	        test_the_users_of_definitions_json_may_declare_what_the_module_does,
	        start_recording, stop_recording),
	    cmocka_unit_test_setup_teardown(test_a_reply_queue_is_declared_transient_with_an_expiry,
	                                    start_recording, stop_recording),
	    cmocka_unit_test_setup_teardown(test_a_refused_step_is_named_and_ends_the_declarations,
	                                    start_recording, stop_recording),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
