/* test_engine_deliver.c: how the engine assembles a delivery from its
 * frames, on a connection whose frames this test scripts by mocking
 * rabbitmq-c with -Wl,--wrap (WRAP_test_engine_deliver in the Makefile): a
 * body within engine_config.max_body is assembled whole; a larger one is
 * read off frame by frame and dropped, never allocated, and the delivery is
 * handed over marked too_large with its properties. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include "config.h"
#include "engine.h"
#include "fake_open.h"

#define FRAGMENT 131064 /* frame_max less the frame's 8 bytes */

int __wrap_amqp_simple_wait_frame_noblock(amqp_connection_state_t c, amqp_frame_t *f,
                                          const struct timeval *tv);
int __wrap_amqp_simple_wait_frame(amqp_connection_state_t c, amqp_frame_t *f);
amqp_bytes_t __wrap_amqp_bytes_malloc(size_t amount);
amqp_bytes_t __real_amqp_bytes_malloc(size_t amount);

/* The wrappers run on the engine's I/O thread: they follow this script
 * and record what they saw; the test reads it once the thread is stopped. */
static struct {
	uint64_t body_size;   /* announced by the content header */
	int deliveries;       /* basic.deliver frames handed out */
	int content_frames;   /* header and body frames handed out */
	uint64_t body_sent;   /* body bytes handed out */
	size_t largest_alloc; /* the largest amqp_bytes_malloc */
} script;

static unsigned char fragment[FRAGMENT];

static struct {
	atomic_int count;
	bool too_large;
	uint64_t body_size;
	size_t body_len;
	bool body_intact;
	char correlation_id[64];
	char routing_key[64];
} seen;

/* The loop's frames: one basic.deliver, then nothing. */
int __wrap_amqp_simple_wait_frame_noblock(amqp_connection_state_t c, amqp_frame_t *f,
                                          const struct timeval *tv)
{
	static amqp_basic_deliver_t deliver = {.delivery_tag = 7,
	                                       .routing_key = {12, (void *)"example.echo"}};

	if (script.deliveries > 0) {
		return AMQP_STATUS_TIMEOUT;
	}
	script.deliveries++;
	memset(f, 0, sizeof(*f));
	f->frame_type = AMQP_FRAME_METHOD;
	f->channel = 1;
	f->payload.method.id = AMQP_BASIC_DELIVER_METHOD;
	f->payload.method.decoded = &deliver;
	return AMQP_STATUS_OK;
}

/* Its content: the header announcing body_size, then full body frames. */
int __wrap_amqp_simple_wait_frame(amqp_connection_state_t c, amqp_frame_t *f)
{
	static amqp_table_entry_t h = {.key = {10, (void *)"rpc-status"},
	                               .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 0}};
	static amqp_basic_properties_t props = {._flags = AMQP_BASIC_CORRELATION_ID_FLAG |
	                                                  AMQP_BASIC_HEADERS_FLAG,
	                                        .correlation_id = {3, (void *)"c-1"},
	                                        .headers = {1, &h}};
	uint64_t left = script.body_size - script.body_sent;

	memset(f, 0, sizeof(*f));
	f->channel = 1;
	if (script.content_frames++ == 0) {
		f->frame_type = AMQP_FRAME_HEADER;
		f->payload.properties.class_id = AMQP_BASIC_CLASS;
		f->payload.properties.body_size = script.body_size;
		f->payload.properties.decoded = &props;
		return AMQP_STATUS_OK;
	}
	if (left == 0) {
		return AMQP_STATUS_SOCKET_ERROR; /* read past the content */
	}
	f->frame_type = AMQP_FRAME_BODY;
	f->payload.body_fragment.len = left < FRAGMENT ? (size_t)left : FRAGMENT;
	f->payload.body_fragment.bytes = fragment;
	script.body_sent += f->payload.body_fragment.len;
	return AMQP_STATUS_OK;
}

amqp_bytes_t __wrap_amqp_bytes_malloc(size_t amount)
{
	if (amount > script.largest_alloc) {
		script.largest_alloc = amount;
	}
	return __real_amqp_bytes_malloc(amount);
}

/* ------------------------------------------------------------ hooks */

static int setup_hook(struct engine *e, void *arg, char *errstr, size_t errlen)
{
	return 0;
}

static void copy(char *out, size_t n, amqp_bytes_t b)
{
	snprintf(out, n, "%.*s", (int)b.len, (const char *)b.bytes);
}

static void deliver_hook(struct engine *e, void *arg, struct engine_delivery *d)
{
	seen.too_large = d->too_large;
	seen.body_size = d->body_size;
	seen.body_len = d->message.body.len;
	seen.body_intact = true;
	for (size_t i = 0; i < d->message.body.len; i++) {
		if (((unsigned char *)d->message.body.bytes)[i] != fragment[i % FRAGMENT]) {
			seen.body_intact = false;
			break;
		}
	}
	copy(seen.correlation_id, sizeof(seen.correlation_id),
	     d->message.properties.correlation_id);
	snprintf(seen.routing_key, sizeof(seen.routing_key), "%s", d->routing_key);
	engine_delivery_free(d);
	atomic_fetch_add(&seen.count, 1);
}

static void returned_hook(struct engine *e, void *arg, const amqp_basic_properties_t *p, int code,
                          const char *text)
{
}

static void lost_hook(struct engine *e, void *arg, const char *why)
{
}

static int64_t tick_hook(struct engine *e, void *arg, int64_t now)
{
	return INT64_MAX;
}

/* Runs an engine with max_body until its one delivery is handed over. */
static void deliver_one(uint64_t body_size, size_t max_body)
{
	warren_config *cfg = warren_config_new();
	struct engine_hooks hooks = {.setup = setup_hook,
	                             .deliver = deliver_hook,
	                             .returned = returned_hook,
	                             .lost = lost_hook,
	                             .tick = tick_hook};
	struct engine_config ec;
	struct engine *e;
	char why[300];

	memset(&script, 0, sizeof(script));
	memset(&seen, 0, sizeof(seen));
	for (size_t i = 0; i < FRAGMENT; i++) {
		fragment[i] = (unsigned char)(i * 7 + 1);
	}
	script.body_size = body_size;
	assert_int_equal(
	    warren_config_set(cfg, "broker.url", "amqp://guest:guest@127.0.0.1:5990/", NULL, 0),
	    WARREN_OK);
	ec = engine_config_of(cfg, "t");
	ec.max_body = max_body;
	e = engine_new(&ec, &hooks, why, sizeof(why));
	assert_non_null(e);
	assert_int_equal(engine_start(e, why, sizeof(why)), WARREN_OK);
	for (int i = 0; i < 500 && atomic_load(&seen.count) == 0; i++) {
		usleep(10000);
	}
	engine_free(e);
	warren_config_free(cfg);
	assert_int_equal(atomic_load(&seen.count), 1);
	assert_string_equal(seen.correlation_id, "c-1");
	assert_string_equal(seen.routing_key, "example.echo");
	/* Every frame of the content was read, and none past it. */
	assert_int_equal(script.body_sent, body_size);
}

static void test_a_body_within_the_limit_is_assembled_whole(void **state)
{
	deliver_one(3 * FRAGMENT + 100, 1024 * 1024);
	assert_false(seen.too_large);
	assert_int_equal(seen.body_size, 3 * FRAGMENT + 100);
	assert_int_equal(seen.body_len, 3 * FRAGMENT + 100);
	assert_true(seen.body_intact);
}

static void test_a_body_above_the_limit_is_read_off_and_never_allocated(void **state)
{
	const uint64_t size = 64ull * 1024 * 1024;

	deliver_one(size, 1024 * 1024);
	assert_true(seen.too_large);
	assert_int_equal(seen.body_size, size);
	assert_int_equal(seen.body_len, 0);
	assert_true(script.largest_alloc < 1024 * 1024);
}

static void test_no_limit_keeps_every_body(void **state)
{
	deliver_one(2 * FRAGMENT, 0);
	assert_false(seen.too_large);
	assert_int_equal(seen.body_len, 2 * FRAGMENT);
	assert_true(seen.body_intact);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_body_within_the_limit_is_assembled_whole),
	    cmocka_unit_test(test_a_body_above_the_limit_is_read_off_and_never_allocated),
	    cmocka_unit_test(test_no_limit_keeps_every_body),
	};

	return cmocka_run_group_tests_name("engine_deliver", tests, NULL, NULL);
}
