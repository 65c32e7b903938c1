/* it_worker.c: the worker pool in this process, driven by a plain AMQP client
 * (rabbitmq-c, no warren) as a caller in another language would be: JSON
 * requests, poison messages, expired deadlines, one-way requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testenv.h"

static warren_worker *worker;
static struct raw *raw;
static atomic_int handled;

static warren_status count_and_echo(warren_request *req, void *arg)
{
	atomic_fetch_add(&handled, 1);
	warren_request_set_result(req, warren_value_copy(warren_request_params(req)));
	return WARREN_STATUS_OK;
}

static warren_status meta(warren_request *req, void *arg)
{
	warren_value *m = warren_map();

	warren_map_set(m, "method", warren_str(warren_request_method(req)));
	warren_map_set(m, "message_id", warren_str(warren_request_message_id(req)));
	warren_map_set(m, "app_id", warren_str(warren_request_app_id(req)));
	warren_map_set(m, "attempt", warren_int(warren_request_attempt(req)));
	warren_map_set(m, "deadline", warren_int(warren_request_deadline_ms(req)));
	warren_request_set_result(req, m);
	return WARREN_STATUS_OK;
}

/* example.slow sleeps 400 ms; example.alone notes how many requests its
 * worker held (in progress) when it began. */
static atomic_int alone_in_progress = -1;

static warren_status slow(warren_request *req, void *arg)
{
	usleep(400000);
	warren_request_set_result(req, warren_value_copy(warren_request_params(req)));
	return WARREN_STATUS_OK;
}

static warren_status alone(warren_request *req, void *arg)
{
	warren_worker_stats st;

	warren_worker_get_stats(worker, &st);
	atomic_store(&alone_in_progress, (int)st.in_progress);
	warren_request_set_result(req, warren_value_copy(warren_request_params(req)));
	return WARREN_STATUS_OK;
}

/* example.inline, registered to run on the I/O thread: notes whether it
 * had thread data (a handler thread's; the I/O thread has none). */
static atomic_int inline_had_data = -1;

static warren_status on_io_thread(warren_request *req, void *arg)
{
	atomic_store(&inline_had_data, warren_request_thread_data(req) != NULL);
	warren_request_set_result(req, warren_value_copy(warren_request_params(req)));
	return WARREN_STATUS_OK;
}

static void *thread_data(int index, void *arg)
{
	return arg;
}

/* The suite shares one broker: a request another test left on
 * rpc.example (a crash test's, delivered several times already) would be
 * this worker's first delivery and count as a dead letter here. Emptied
 * on a connection of its own, since a queue not declared yet closes the
 * channel that asks. */
static void purge_leftovers(void)
{
	struct raw *r = raw_connect();

	if (r != NULL) {
		raw_purge(r, "rpc.example");
		raw_close(r);
	}
}

static int setup(void **state)
{
	warren_config *cfg = testenv_config((const char *const[]){"worker.service=example", NULL});
	char why[300];

	purge_leftovers();

	if (warren_worker_new(cfg, &worker, why, sizeof(why)) != WARREN_OK ||
	    warren_worker_handle(worker, "example.echo", count_and_echo, NULL) != WARREN_OK ||
	    warren_worker_handle(worker, "example.meta", meta, NULL) != WARREN_OK ||
	    warren_worker_handle(worker, "example.slow", slow, NULL) != WARREN_OK ||
	    warren_worker_handle(worker, "example.alone", alone, NULL) != WARREN_OK ||
	    warren_worker_handle_inline(worker, "example.inline", on_io_thread, NULL) !=
	        WARREN_OK ||
	    warren_worker_on_thread(worker, thread_data, NULL, &handled) != WARREN_OK ||
	    warren_worker_start(worker, why, sizeof(why)) != WARREN_OK) {
		fprintf(stderr, "worker: %s\n", why);
		return -1;
	}
	warren_config_free(cfg);
	raw = raw_connect();
	raw_consume_replies(raw);
	return 0;
}

static int teardown(void **state)
{
	assert_int_equal(warren_worker_stop(worker, 5000), WARREN_OK);
	warren_worker_free(worker);
	raw_close(raw);
	return 0;
}

static int purge_dlq(void **state)
{
	raw_purge(raw, "rpc.example.dlq");
	return 0;
}

static amqp_basic_properties_t props(const char *content_type, const char *corr, bool reply)
{
	amqp_basic_properties_t p = {0};

	p._flags = AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
	p.correlation_id = amqp_cstring_bytes(corr);
	p.delivery_mode = 2;
	if (content_type != NULL) {
		p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
		p.content_type = amqp_cstring_bytes(content_type);
	}
	if (reply) {
		p._flags |= AMQP_BASIC_REPLY_TO_FLAG;
		p.reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to");
	}
	return p;
}

/* Waits for the reply and checks its correlation id, rpc-status and body. */
static void expect_reply(const char *corr, int status, const char *content_type, const char *body)
{
	amqp_envelope_t env;

	assert_int_equal(raw_wait(raw, 5000, &env), 0);
	amqp_basic_properties_t *p = &env.message.properties;
	assert_int_equal((int)p->correlation_id.len, (int)strlen(corr));
	assert_memory_equal(p->correlation_id.bytes, corr, strlen(corr));
	assert_int_equal((int)p->content_type.len, (int)strlen(content_type));
	assert_memory_equal(p->content_type.bytes, content_type, strlen(content_type));
	assert_int_equal(p->headers.num_entries, 1);
	assert_memory_equal(p->headers.entries[0].key.bytes, "rpc-status", 10);
	assert_int_equal(p->headers.entries[0].value.value.i64, status);
	if (body != NULL) {
		assert_int_equal((int)env.message.body.len, (int)strlen(body));
		assert_memory_equal(env.message.body.bytes, body, strlen(body));
	}
	amqp_destroy_envelope(&env);
}

/* The one dead letter in rpc.example.dlq: the request as sent (its
 * correlation id and body) with why, where and when in its headers. */
static void expect_dead_letter(const char *corr, const void *body, size_t len, const char *reason,
                               const char *error)
{
	amqp_message_t msg;
	amqp_basic_properties_t *p = &msg.properties;
	const char *h;

	assert_int_equal(raw_await_count(raw, "rpc.example.dlq", 1, 5000), 1);
	assert_int_equal(raw_get(raw, "rpc.example.dlq", &msg), 0);
	assert_int_equal((int)p->correlation_id.len, (int)strlen(corr));
	assert_memory_equal(p->correlation_id.bytes, corr, strlen(corr));
	assert_int_equal((int)msg.body.len, (int)len);
	assert_memory_equal(msg.body.bytes, body, len);
	assert_string_equal(raw_header(p, "rpc-dead-reason"), reason);
	assert_string_equal(raw_header(p, "rpc-dead-error"), error);
	assert_string_equal(raw_header(p, "rpc-dead-queue"), "rpc.example");
	assert_string_equal(raw_header(p, "rpc-attempt"), "1");
	h = raw_header(p, "rpc-dead-worker");
	assert_non_null(h);
	assert_memory_equal(h, "example@", 8);
	h = raw_header(p, "rpc-dead-time");
	assert_non_null(h);
	assert_true(llabs(warren_now_ms() - atoll(h)) < 10000);
	assert_int_equal(p->delivery_mode, 2);
	amqp_destroy_message(&msg);
}

static void test_plain_amqp_client_json_request_gets_a_json_reply(void **state)
{
	amqp_basic_properties_t p = props("application/json", "c-json-1", true);
	const char *body = "{\"user\":{\"id\":1,\"tags\":[\"a\",\"b\"]}}";

	assert_int_equal(raw_publish(raw, "example.echo", &p, body, strlen(body)), 0);
	expect_reply("c-json-1", 0, "application/json", body);
}

static void test_method_comes_from_the_routing_key_when_type_is_absent(void **state)
{
	amqp_basic_properties_t p = props("application/json", "c-meta-1", true);

	assert_int_equal(raw_publish(raw, "example.meta", &p, "{}", 2), 0);
	expect_reply("c-meta-1", 0, "application/json",
	             "{\"method\":\"example.meta\",\"message_id\":\"\",\"app_id\":\"\",\"attempt\":1,"
	             "\"deadline\":0}");
}

static void test_undecodable_body_is_answered_invalid_argument_and_dead_lettered(void **state)
{
	amqp_basic_properties_t p = props("application/json", "c-bad-1", true);

	assert_int_equal(raw_publish(raw, "example.echo", &p, "{\"a\":", 5), 0);
	expect_reply("c-bad-1", 3, "application/json",
	             "{\"code\":\"INVALID_ARGUMENT\",\"message\":\"undecodable JSON body: line 1, "
	             "column 5: unexpected token near end of file\",\"details\":{\"reason\":"
	             "\"undecodable\",\"dlq\":\"rpc.example.dlq\"}}");
	expect_dead_letter("c-bad-1", "{\"a\":", 5, "undecodable",
	                   "undecodable JSON body: line 1, column 5: unexpected token near end of "
	                   "file");
}

static void test_hostile_msgpack_is_refused_without_a_crash(void **state)
{
	amqp_basic_properties_t p = props("application/msgpack", "c-bomb-1", true);
	const unsigned char bomb[] = {0xdd, 0x04, 0x00, 0x00, 0x00};

	assert_int_equal(raw_publish(raw, "example.echo", &p, bomb, sizeof(bomb)), 0);
	expect_reply("c-bomb-1", 3, "application/msgpack", NULL);
	expect_dead_letter("c-bomb-1", bomb, sizeof(bomb), "undecodable",
	                   "undecodable msgpack body: at byte 0: array of 67108864 items but only 0 "
	                   "bytes remain");
}

static void test_unsupported_content_type_is_poison(void **state)
{
	amqp_basic_properties_t p = props("text/plain", "c-ct-1", true);

	assert_int_equal(raw_publish(raw, "example.echo", &p, "hi", 2), 0);
	expect_reply("c-ct-1", 3, "application/msgpack", NULL);
	expect_dead_letter("c-ct-1", "hi", 2, "bad-envelope",
	                   "unsupported content type \"text/plain\" (expected application/msgpack or "
	                   "application/json)");
}

static void test_wrongly_typed_deadline_header_is_poison(void **state)
{
	amqp_basic_properties_t p = props("application/json", "c-hdr-1", true);
	amqp_table_entry_t h = {.key = amqp_cstring_bytes("rpc-deadline"),
	                        .value = {.kind = AMQP_FIELD_KIND_UTF8,
	                                  .value.bytes = amqp_cstring_bytes("tomorrow")}};

	p._flags |= AMQP_BASIC_HEADERS_FLAG;
	p.headers = (amqp_table_t){1, &h};
	assert_int_equal(raw_publish(raw, "example.echo", &p, "{}", 2), 0);
	expect_reply("c-hdr-1", 3, "application/json",
	             "{\"code\":\"INVALID_ARGUMENT\",\"message\":\"header rpc-deadline: expected an "
	             "integer, got a string\",\"details\":{\"reason\":\"bad-envelope\",\"dlq\":"
	             "\"rpc.example.dlq\"}}");
	expect_dead_letter("c-hdr-1", "{}", 2, "bad-envelope",
	                   "header rpc-deadline: expected an integer, got a string");
}

static void test_unknown_method_is_answered_unimplemented_and_dead_lettered(void **state)
{
	amqp_basic_properties_t p = props("application/json", "c-unk-1", true);

	assert_int_equal(raw_publish(raw, "example.nope", &p, "{}", 2), 0);
	expect_reply("c-unk-1", 12, "application/json",
	             "{\"code\":\"UNIMPLEMENTED\",\"message\":\"unknown method example.nope\","
	             "\"details\":{\"reason\":\"unknown-method\",\"dlq\":\"rpc.example.dlq\"}}");
	expect_dead_letter("c-unk-1", "{}", 2, "unknown-method", "unknown method example.nope");
}

static void test_request_past_its_deadline_is_dropped_unexecuted_and_counted(void **state)
{
	amqp_basic_properties_t p = props("application/json", "c-late-1", true);
	amqp_table_entry_t h = {.key = amqp_cstring_bytes("rpc-deadline"),
	                        .value = {.kind = AMQP_FIELD_KIND_I64,
	                                  .value.i64 = warren_now_ms() - 1000}};
	warren_worker_stats before, after;
	int handled_before = atomic_load(&handled);
	amqp_envelope_t env;

	p._flags |= AMQP_BASIC_HEADERS_FLAG;
	p.headers = (amqp_table_t){1, &h};
	warren_worker_get_stats(worker, &before);
	assert_int_equal(raw_publish(raw, "example.echo", &p, "{}", 2), 0);
	assert_int_equal(raw_wait(raw, 1000, &env), -1); /* no reply */
	warren_worker_get_stats(worker, &after);
	assert_int_equal(after.expired, before.expired + 1);
	assert_int_equal(atomic_load(&handled), handled_before);
	assert_int_equal(raw_queue_count(raw, "rpc.example"), 0);
	assert_int_equal(raw_queue_count(raw, "rpc.example.dlq"), 0);
}

static void test_one_way_request_is_handled_and_acked_without_a_reply(void **state)
{
	amqp_basic_properties_t p = props("application/json", "c-1way-1", false);
	int handled_before = atomic_load(&handled);
	amqp_envelope_t env;

	assert_int_equal(raw_publish(raw, "example.echo", &p, "{}", 2), 0);
	assert_int_equal(raw_wait(raw, 1000, &env), -1);
	assert_int_equal(atomic_load(&handled), handled_before + 1);
	assert_int_equal(raw_queue_count(raw, "rpc.example"), 0);
}

static void test_stats_count_what_happened(void **state)
{
	warren_worker_stats s;

	warren_worker_get_stats(worker, &s);
	assert_true(s.connected);
	assert_true(s.received >= 9);
	assert_int_equal(s.dead_lettered, 5);
	assert_int_equal(s.in_progress, 0);
}

static void test_registering_a_method_outside_the_service_is_refused(void **state)
{
	warren_config *cfg = testenv_config((const char *const[]){"worker.service=other", NULL});
	warren_worker *w = NULL;

	assert_int_equal(warren_worker_new(cfg, &w, NULL, 0), WARREN_OK);
	assert_int_equal(warren_worker_handle(w, "example.echo", count_and_echo, NULL),
	                 WARREN_ERR_INVALID);
	assert_int_equal(warren_worker_handle(w, "other.", count_and_echo, NULL), WARREN_ERR_INVALID);
	assert_int_equal(warren_worker_handle(w, "other.x", count_and_echo, NULL), WARREN_OK);
	assert_int_equal(warren_worker_handle(w, "other.x", count_and_echo, NULL), WARREN_ERR_INVALID);
	/* The same rules for a method on the I/O thread, which has no time
	 * limit of its own to set. */
	assert_int_equal(warren_worker_handle_inline(w, "example.y", count_and_echo, NULL),
	                 WARREN_ERR_INVALID);
	assert_int_equal(warren_worker_handle_inline(w, "other.x", count_and_echo, NULL),
	                 WARREN_ERR_INVALID);
	assert_int_equal(warren_worker_handle_inline(w, "other.y", count_and_echo, NULL), WARREN_OK);
	assert_int_equal(warren_worker_set_timeout(w, "other.y", 1000), WARREN_ERR_INVALID);
	assert_int_equal(warren_worker_set_timeout(w, "other.x", 1000), WARREN_OK);
	warren_worker_free(w);
	warren_config_free(cfg);
}

/* A suspect (a request whose x-delivery-count this worker cannot explain:
 * it was out with a worker process that died) reaching a worker busy with
 * others, with threads free and room in its prefetch, waits until they are
 * answered and acked, then runs with nothing else held. */
static void test_a_suspect_runs_alone_once_the_requests_held_are_answered(void **state)
{
	amqp_table_entry_t count = {.key = amqp_cstring_bytes("x-delivery-count"),
	                            .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 1}};
	amqp_basic_properties_t p;
	const char *order[4];
	char corr[16];

	for (int i = 0; i < 3; i++) {
		snprintf(corr, sizeof(corr), "c-slow-%d", i);
		p = props("application/json", corr, true);
		assert_int_equal(raw_publish(raw, "example.slow", &p, "{}", 2), 0);
	}
	p = props("application/json", "c-alone", true);
	p._flags |= AMQP_BASIC_HEADERS_FLAG;
	p.headers = (amqp_table_t){.num_entries = 1, .entries = &count};
	assert_int_equal(raw_publish(raw, "example.alone", &p, "{}", 2), 0);
	for (int i = 0; i < 4; i++) {
		amqp_envelope_t env;
		static char got[4][16];

		assert_int_equal(raw_wait(raw, 10000, &env), 0);
		const amqp_bytes_t *c = &env.message.properties.correlation_id;

		snprintf(got[i], sizeof(got[i]), "%.*s", (int)c->len, (const char *)c->bytes);
		order[i] = got[i];
		amqp_destroy_envelope(&env);
	}
	/* Answered last, and nothing else was held while it ran. */
	assert_string_equal(order[3], "c-alone");
	assert_int_equal(atomic_load(&alone_in_progress), 1);
	/* And the worker serves as before. */
	p = props("application/json", "c-after", true);
	assert_int_equal(raw_publish(raw, "example.echo", &p, "{}", 2), 0);
	expect_reply("c-after", 0, "application/json", "{}");
}

/* A method registered with warren_worker_handle_inline runs on the I/O
 * thread: with every handler thread (worker.threads=4) busy with a slow
 * request, it is still answered first, and without thread data. */
static void test_an_inline_method_is_answered_while_every_handler_thread_is_busy(void **state)
{
	amqp_basic_properties_t p;
	amqp_envelope_t env;
	char corr[16];

	for (int i = 0; i < 4; i++) {
		snprintf(corr, sizeof(corr), "c-busy-%d", i);
		p = props("application/json", corr, true);
		assert_int_equal(raw_publish(raw, "example.slow", &p, "{}", 2), 0);
	}
	p = props("application/json", "c-inline", true);
	assert_int_equal(raw_publish(raw, "example.inline", &p, "[1]", 3), 0);
	expect_reply("c-inline", 0, "application/json", "[1]");
	assert_int_equal(atomic_load(&inline_had_data), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(raw_wait(raw, 10000, &env), 0);
		amqp_destroy_envelope(&env);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_amqp_client_json_request_gets_a_json_reply),
		cmocka_unit_test(test_method_comes_from_the_routing_key_when_type_is_absent),
		cmocka_unit_test_setup(test_undecodable_body_is_answered_invalid_argument_and_dead_lettered, purge_dlq),
		cmocka_unit_test_setup(test_hostile_msgpack_is_refused_without_a_crash, purge_dlq),
		cmocka_unit_test_setup(test_unsupported_content_type_is_poison, purge_dlq),
		cmocka_unit_test_setup(test_wrongly_typed_deadline_header_is_poison, purge_dlq),
		cmocka_unit_test_setup(test_unknown_method_is_answered_unimplemented_and_dead_lettered, purge_dlq),
		cmocka_unit_test_setup(test_request_past_its_deadline_is_dropped_unexecuted_and_counted, purge_dlq),
		cmocka_unit_test(test_one_way_request_is_handled_and_acked_without_a_reply),
		cmocka_unit_test(test_stats_count_what_happened),
		cmocka_unit_test(test_registering_a_method_outside_the_service_is_refused),
		cmocka_unit_test(test_a_suspect_runs_alone_once_the_requests_held_are_answered),
		cmocka_unit_test(test_an_inline_method_is_answered_while_every_handler_thread_is_busy),
	};

	return cmocka_run_group_tests_name("it_worker", tests, setup, teardown);
}
