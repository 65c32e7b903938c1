/* test_engine_failover.c: with several URLs in broker.url, an engine whose
 * connection is lost moves on to the next URL, every node in turn, and
 * skips one that is down (warren(7), Through a lost connection). The
 * brokers are scripted by mocking rabbitmq-c with -Wl,--wrap
 * (WRAP_test_engine_failover in the Makefile): each open is recorded by
 * port, a port the test marks down refuses, and the test drops the
 * current connection when it says so. */
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

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include "config.h"
#include "engine.h"

/* The login, channels and closes of fake_open.c; the opens are scripted
 * here, by port. */
#include "fake_open.h"

int __wrap_amqp_simple_wait_frame_noblock(amqp_connection_state_t c, amqp_frame_t *f,
                                          const struct timeval *tv);

#define MAX_OPENS 32

/* Shared with the I/O thread. */
static struct {
	atomic_int opens;           /* attempts so far */
	atomic_int port[MAX_OPENS]; /* the port of each */
	atomic_bool down[3];        /* ports 5990 + i refuse */
	atomic_bool drop;           /* the test's word: lose the connection now */
	atomic_int setups, losses;
} script;

int __wrap_amqp_socket_open_noblock(amqp_socket_t *s, const char *host, int port,
                                    const struct timeval *tv)
{
	int n = atomic_load(&script.opens);

	if (n < MAX_OPENS) {
		atomic_store(&script.port[n], port);
	}
	atomic_store(&script.opens, n + 1);
	if (port >= 5990 && port < 5993 && atomic_load(&script.down[port - 5990])) {
		return AMQP_STATUS_SOCKET_ERROR;
	}
	return AMQP_STATUS_OK;
}

/* No frames; a socket error when the test drops the connection. */
int __wrap_amqp_simple_wait_frame_noblock(amqp_connection_state_t c, amqp_frame_t *f,
                                          const struct timeval *tv)
{
	if (atomic_exchange(&script.drop, false)) {
		return AMQP_STATUS_SOCKET_ERROR;
	}
	return AMQP_STATUS_TIMEOUT;
}

static int setup_hook(struct engine *e, void *arg, char *errstr, size_t errlen)
{
	atomic_fetch_add(&script.setups, 1);
	return 0;
}

static void deliver_hook(struct engine *e, void *arg, struct engine_delivery *d)
{
	engine_delivery_free(d);
}

static void returned_hook(struct engine *e, void *arg, const amqp_basic_properties_t *p, int code,
                          const char *text)
{
}

static void lost_hook(struct engine *e, void *arg, const char *why)
{
	atomic_fetch_add(&script.losses, 1);
}

static int64_t tick_hook(struct engine *e, void *arg, int64_t now)
{
	return INT64_MAX;
}

static struct engine *start(warren_config **cfg)
{
	struct engine_hooks hooks = {.setup = setup_hook,
	                             .deliver = deliver_hook,
	                             .returned = returned_hook,
	                             .lost = lost_hook,
	                             .tick = tick_hook};
	struct engine_config ec;
	struct engine *e;
	char why[300];

	*cfg = warren_config_new();
	assert_int_equal(warren_config_set(*cfg, "broker.url",
	                                   "amqp://guest:guest@127.0.0.1:5990/,"
	                                   "amqp://guest:guest@127.0.0.1:5991/,"
	                                   "amqp://guest:guest@127.0.0.1:5992/",
	                                   NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_config_set(*cfg, "broker.reconnect_min", "10ms", NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_config_set(*cfg, "broker.reconnect_max", "100ms", NULL, 0),
	                 WARREN_OK);
	ec = engine_config_of(*cfg, "t");
	e = engine_new(&ec, &hooks, why, sizeof(why));
	assert_non_null(e);
	assert_int_equal(engine_start(e, why, sizeof(why)), WARREN_OK);
	return e;
}

/* Drops the connection and waits (up to 5 s) for the next setup. */
static void lose_and_await_reconnect(struct engine *e)
{
	int setups = atomic_load(&script.setups);

	atomic_store(&script.drop, true);
	engine_wake(e);
	for (int i = 0; i < 500 && atomic_load(&script.setups) == setups; i++) {
		usleep(10000);
		engine_wake(e);
	}
	assert_int_equal(atomic_load(&script.setups), setups + 1);
}

/* Each loss moves the engine to the next URL, round and round. */
static void a_lost_connection_moves_on_to_the_next_url_every_node_in_turn(void **state)
{
	warren_config *cfg;
	struct engine *e;

	memset(&script, 0, sizeof(script));
	e = start(&cfg);
	for (int i = 0; i < 3; i++) {
		lose_and_await_reconnect(e);
	}
	engine_free(e);
	warren_config_free(cfg);
	assert_int_equal(atomic_load(&script.opens), 4);
	assert_int_equal(atomic_load(&script.port[0]), 5990);
	assert_int_equal(atomic_load(&script.port[1]), 5991);
	assert_int_equal(atomic_load(&script.port[2]), 5992);
	assert_int_equal(atomic_load(&script.port[3]), 5990);
	assert_int_equal(atomic_load(&script.losses), 4); /* the last at the stop */
}

/* A node that is down (a rolling restart) is skipped: the engine tries it
 * once, then goes on to the one after it. */
static void a_node_that_is_down_is_tried_then_passed_over(void **state)
{
	warren_config *cfg;
	struct engine *e;

	memset(&script, 0, sizeof(script));
	e = start(&cfg);
	atomic_store(&script.down[1], true);
	lose_and_await_reconnect(e);
	engine_free(e);
	warren_config_free(cfg);
	assert_int_equal(atomic_load(&script.opens), 3);
	assert_int_equal(atomic_load(&script.port[0]), 5990);
	assert_int_equal(atomic_load(&script.port[1]), 5991);
	assert_int_equal(atomic_load(&script.port[2]), 5992);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(a_lost_connection_moves_on_to_the_next_url_every_node_in_turn),
	    cmocka_unit_test(a_node_that_is_down_is_tried_then_passed_over),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
