/* test_engine_hold.c: the engine holds publishes while the broker blocks
 * the connection (connection.blocked) and releases them, in the order they
 * were held, once it unblocks. The connection is scripted by mocking
 * rabbitmq-c with -Wl,--wrap (WRAP_test_engine_hold in the Makefile): it
 * opens, logs in, sends connection.blocked, and connection.unblocked when
 * the test says so. */
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
#include "fake_open.h"

int __wrap_amqp_simple_wait_frame_noblock(amqp_connection_state_t c, amqp_frame_t *f,
                                          const struct timeval *tv);

#define NHELD 4

/* Shared with the I/O thread: the script of frames, and what it saw. */
static struct {
	atomic_bool blocked_sent;
	atomic_bool unblock; /* the test's word: send connection.unblocked */
	atomic_bool unblocked_sent;
} script;

struct publish {
	struct engine_task task; /* asks engine_must_hold on the I/O thread */
	struct engine_held held;
	int id;
	bool unhold; /* the task takes held[id] out instead */
};

static struct {
	struct publish p[NHELD];
	atomic_int tasks_run;
	bool must_hold[NHELD];       /* what engine_must_hold said for each */
	int order[NHELD];            /* ids, as released or published */
	atomic_int done;             /* entries of order */
	bool hold_in_release[NHELD]; /* engine_must_hold inside the release */
	atomic_bool blocked_at_tick; /* the tick saw engine_blocked */
} seen;

static void method_frame(amqp_frame_t *f, amqp_method_number_t id, void *decoded)
{
	memset(f, 0, sizeof(*f));
	f->frame_type = AMQP_FRAME_METHOD;
	f->channel = 0;
	f->payload.method.id = id;
	f->payload.method.decoded = decoded;
}

/* The loop's frames: connection.blocked at once, connection.unblocked
 * when the test asks, nothing else. */
int __wrap_amqp_simple_wait_frame_noblock(amqp_connection_state_t c, amqp_frame_t *f,
                                          const struct timeval *tv)
{
	static amqp_connection_blocked_t blocked = {.reason = {12, (void *)"low on disk"}};
	static amqp_connection_unblocked_t unblocked;

	if (!atomic_load(&script.blocked_sent)) {
		atomic_store(&script.blocked_sent, true);
		method_frame(f, AMQP_CONNECTION_BLOCKED_METHOD, &blocked);
		return AMQP_STATUS_OK;
	}
	if (atomic_load(&script.unblock) && !atomic_load(&script.unblocked_sent)) {
		atomic_store(&script.unblocked_sent, true);
		method_frame(f, AMQP_CONNECTION_UNBLOCKED_METHOD, &unblocked);
		return AMQP_STATUS_OK;
	}
	return AMQP_STATUS_TIMEOUT;
}

/* ------------------------------------------------------------ the owner */

static void record(int id)
{
	int k = atomic_load(&seen.done);

	seen.order[k] = id;
	atomic_store(&seen.done, k + 1);
}

static void release(struct engine *e, struct engine_held *h)
{
	struct publish *p = (struct publish *)((char *)h - offsetof(struct publish, held));

	seen.hold_in_release[p->id] = engine_must_hold(e, h->len);
	record(p->id);
}

/* As an owner publishes: held when the engine says so, else at once. */
static void publish_task(struct engine *e, struct engine_task *t)
{
	struct publish *p = (struct publish *)t;

	if (p->unhold) {
		engine_unhold(e, &seen.p[p->id].held);
		free(p);
	} else {
		seen.must_hold[p->id] = engine_must_hold(e, p->held.len);
		if (seen.must_hold[p->id]) {
			engine_hold(e, &p->held);
		} else {
			record(p->id);
		}
	}
	atomic_fetch_add(&seen.tasks_run, 1);
}

static int setup_hook(struct engine *e, void *arg, char *errstr, size_t errlen)
{
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
}

static int64_t tick_hook(struct engine *e, void *arg, int64_t now)
{
	atomic_store(&seen.blocked_at_tick, engine_blocked(e) != NULL);
	return INT64_MAX;
}

/* ------------------------------------------------------------ helpers */

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

	memset(&script, 0, sizeof(script));
	memset(&seen, 0, sizeof(seen));
	*cfg = warren_config_new();
	assert_int_equal(
	    warren_config_set(*cfg, "broker.url", "amqp://guest:guest@127.0.0.1:5990/", NULL, 0),
	    WARREN_OK);
	ec = engine_config_of(*cfg, "t");
	e = engine_new(&ec, &hooks, why, sizeof(why));
	assert_non_null(e);
	assert_int_equal(engine_start(e, why, sizeof(why)), WARREN_OK);
	/* Blocked: the first frame said so and a tick has run since. */
	for (int i = 0; i < 500 && !atomic_load(&seen.blocked_at_tick); i++) {
		engine_wake(e);
		usleep(10000);
	}
	assert_true(atomic_load(&seen.blocked_at_tick));
	return e;
}

static void submit(struct engine *e, int id, bool unhold)
{
	struct publish *p = unhold ? calloc(1, sizeof(*p)) : &seen.p[id];

	assert_non_null(p);
	p->task.run = publish_task;
	p->held.release = release;
	p->held.len = 100;
	p->id = id;
	p->unhold = unhold;
	assert_true(engine_submit(e, &p->task));
}

static void await_tasks(int n)
{
	for (int i = 0; i < 500 && atomic_load(&seen.tasks_run) < n; i++) {
		usleep(10000);
	}
	assert_int_equal(atomic_load(&seen.tasks_run), n);
}

static void await_done(int n)
{
	for (int i = 0; i < 500 && atomic_load(&seen.done) < n; i++) {
		usleep(10000);
	}
	assert_int_equal(atomic_load(&seen.done), n);
}

static void unblock(struct engine *e)
{
	atomic_store(&script.unblock, true);
	engine_wake(e);
}

/* ------------------------------------------------------------ tests */

static void held_publishes_go_in_the_order_held_once_the_broker_unblocks(void **state)
{
	warren_config *cfg;
	struct engine *e = start(&cfg);

	for (int i = 0; i < 3; i++) {
		submit(e, i, false);
	}
	await_tasks(3);
	usleep(50000); /* turns pass: nothing goes while blocked */
	assert_int_equal(atomic_load(&seen.done), 0);
	unblock(e);
	await_done(3);
	engine_free(e);
	warren_config_free(cfg);
	for (int i = 0; i < 3; i++) {
		assert_true(seen.must_hold[i]);
		assert_int_equal(seen.order[i], i);
		/* Released, the owner is told to publish, not to hold again. */
		assert_false(seen.hold_in_release[i]);
	}
}

/* Once unblocked, a publish made while others are still held waits behind
 * them: held publishes keep their order. */
static void a_publish_after_the_unblock_waits_behind_those_held(void **state)
{
	warren_config *cfg;
	struct engine *e = start(&cfg);

	submit(e, 0, false);
	submit(e, 1, false);
	await_tasks(2);
	/* The next turn reads connection.unblocked before it runs the task
	 * (frames first), and releases the held ones after its tasks. */
	atomic_store(&script.unblock, true);
	submit(e, 2, false);
	await_done(3);
	engine_free(e);
	warren_config_free(cfg);
	assert_true(seen.must_hold[2]);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(seen.order[i], i);
	}
}

/* An owner that gives up on a held publish (its deadline) takes it out:
 * it is never released, and the others keep their order. */
static void an_unheld_publish_is_never_released(void **state)
{
	warren_config *cfg;
	struct engine *e = start(&cfg);

	for (int i = 0; i < 3; i++) {
		submit(e, i, false);
	}
	submit(e, 1, true);
	await_tasks(4);
	assert_false(seen.p[1].held.on);
	unblock(e);
	await_done(2);
	usleep(50000);
	engine_free(e);
	warren_config_free(cfg);
	assert_int_equal(atomic_load(&seen.done), 2);
	assert_int_equal(seen.order[0], 0);
	assert_int_equal(seen.order[1], 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(held_publishes_go_in_the_order_held_once_the_broker_unblocks),
	    cmocka_unit_test(a_publish_after_the_unblock_waits_behind_those_held),
	    cmocka_unit_test(an_unheld_publish_is_never_released),
	};

	return cmocka_run_group_tests_name("engine_hold", tests, NULL, NULL);
}
