/* test_client.c: the caller's call lifecycle against a scripted engine. The
 * engine functions client.c calls are wrapped with -Wl,--wrap (WRAP_test_client
 * in the Makefile): the test runs the I/O thread's side itself (tasks, ticks,
 * confirms) on its own thread, with a clock it moves by hand, so that the
 * orders of events a live broker shows only by chance happen on demand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "engine.h"
#include "envelope.h"
#include "warren.h"

struct engine *__wrap_engine_new(const struct engine_config *cfg, const struct engine_hooks *hooks,
                                 char *errstr, size_t errlen);
warren_err __wrap_engine_start(struct engine *e, char *errstr, size_t errlen);
void __wrap_engine_free(struct engine *e);
bool __wrap_engine_submit(struct engine *e, struct engine_task *t);
warren_err __wrap_engine_publish(struct engine *e, const char *exchange, const char *routing_key,
                                 bool mandatory, const amqp_basic_properties_t *props,
                                 const void *body, size_t len, engine_confirm_fn fn, void *ctx);
bool __wrap_engine_connected(const struct engine *e);
const char *__wrap_engine_blocked(const struct engine *e);
int64_t __wrap_engine_blocked_ms(struct engine *e);
int64_t __wrap_engine_now(void);
bool __wrap_engine_writable(struct engine *e, size_t len);
void __wrap_engine_ack(struct engine *e, uint64_t generation, uint64_t tag);
bool __wrap_engine_must_hold(struct engine *e, size_t len);
void __wrap_engine_hold(struct engine *e, struct engine_held *h);
void __wrap_engine_unhold(struct engine *e, struct engine_held *h);
struct engine_held *__wrap_engine_held_first(struct engine *e);
struct engine_held *__wrap_engine_held_next(struct engine *e, struct engine_held *h);

#define MAX_TASKS 16

/* What the scripted engine holds and saw. */
static struct {
	char fake; /* its address is the engine */
	struct engine_hooks hooks;
	struct engine_task *tasks[MAX_TASKS];
	int ntasks;
	int64_t now;
	bool full;           /* engine_writable says no */
	bool down;           /* not connected: publishes fail, nothing is released */
	const char *blocked; /* connection.blocked's reason, or NULL */
	/* Publishes held as the engine holds them (engine_hold), oldest first;
	 * releasing: the turn's release of one is under way. */
	struct engine_held *held[MAX_TASKS];
	int nheld;
	bool releasing;
	int publishes;
	int attempts[4]; /* rpc-attempt of the first publishes */
	char message_ids[4][65];
	char correlation_ids[4][65];
	int accept_batch[4]; /* rpc-accept-batch of the first publishes */
	/* The last publish: where it went, its correlation id, its body. */
	char exchange[64], routing_key[256], last_id[128];
	bool last_batch;
	unsigned char body[4096];
	size_t body_len;
	engine_confirm_fn confirm_fn;
	void *confirm_ctx;
	/* Every publish not yet confirmed (confirm() takes the last): the
	 * real engine reports each LOST when it stops. */
	struct {
		engine_confirm_fn fn;
		void *ctx;
	} unconfirmed[32];
	int nunconfirmed;
	bool batch_acks; /* as engine_new was asked */
	int acks;
	uint64_t acked[4];
} eng;

/* What the completion callback saw. */
static struct {
	int runs;
	warren_err err;
	char msg[512];
} done_seen;

struct engine *__wrap_engine_new(const struct engine_config *cfg, const struct engine_hooks *hooks,
                                 char *errstr, size_t errlen)
{
	eng.hooks = *hooks;
	eng.batch_acks = cfg->batch_acks;
	return (struct engine *)&eng.fake;
}

warren_err __wrap_engine_start(struct engine *e, char *errstr, size_t errlen)
{
	return WARREN_OK;
}

/* As the real engine stops: the unconfirmed publish is LOST, then the
 * connection is. */
void __wrap_engine_free(struct engine *e)
{
	eng.confirm_fn = NULL;
	while (eng.nunconfirmed > 0) {
		eng.nunconfirmed--;
		eng.unconfirmed[eng.nunconfirmed].fn(e, eng.unconfirmed[eng.nunconfirmed].ctx,
		                                     ENGINE_LOST);
	}
	eng.hooks.lost(e, eng.hooks.arg, "shut down");
}

bool __wrap_engine_submit(struct engine *e, struct engine_task *t)
{
	assert_true(eng.ntasks < MAX_TASKS);
	eng.tasks[eng.ntasks++] = t;
	return true;
}

warren_err __wrap_engine_publish(struct engine *e, const char *exchange, const char *routing_key,
                                 bool mandatory, const amqp_basic_properties_t *props,
                                 const void *body, size_t len, engine_confirm_fn fn, void *ctx)
{
	struct envelope_meta m;
	char why[200];

	if (eng.down) {
		return WARREN_ERR_TRANSPORT;
	}
	if (eng.publishes < 4 && envelope_read(props, &m, why, sizeof(why)) == WARREN_OK) {
		eng.attempts[eng.publishes] = m.attempt;
		snprintf(eng.message_ids[eng.publishes], sizeof(eng.message_ids[0]), "%s",
		         m.message_id);
		snprintf(eng.correlation_ids[eng.publishes], sizeof(eng.correlation_ids[0]), "%s",
		         m.correlation_id);
		eng.accept_batch[eng.publishes] = m.accept_batch;
	}
	snprintf(eng.exchange, sizeof(eng.exchange), "%s", exchange);
	snprintf(eng.routing_key, sizeof(eng.routing_key), "%s", routing_key);
	envelope_copy(eng.last_id, sizeof(eng.last_id), props->correlation_id);
	eng.last_batch = batch_is(props);
	assert_true(len <= sizeof(eng.body));
	memcpy(eng.body, body, len);
	eng.body_len = len;
	eng.publishes++;
	eng.confirm_fn = fn;
	eng.confirm_ctx = ctx;
	if (fn != NULL) {
		assert_true(eng.nunconfirmed < 32);
		eng.unconfirmed[eng.nunconfirmed].fn = fn;
		eng.unconfirmed[eng.nunconfirmed].ctx = ctx;
		eng.nunconfirmed++;
	}
	return WARREN_OK;
}

bool __wrap_engine_connected(const struct engine *e)
{
	return !eng.down;
}

const char *__wrap_engine_blocked(const struct engine *e)
{
	return eng.down ? NULL : eng.blocked;
}

int64_t __wrap_engine_blocked_ms(struct engine *e)
{
	return 0;
}

int64_t __wrap_engine_now(void)
{
	return eng.now;
}

bool __wrap_engine_writable(struct engine *e, size_t len)
{
	return !eng.full;
}

bool __wrap_engine_must_hold(struct engine *e, size_t len)
{
	if (eng.down) {
		return eng.nheld > 0;
	}
	return eng.full || eng.blocked != NULL || (eng.nheld > 0 && !eng.releasing);
}

void __wrap_engine_hold(struct engine *e, struct engine_held *h)
{
	assert_false(h->on);
	assert_true(eng.nheld < MAX_TASKS);
	if (h->since == 0) {
		h->since = eng.now;
	}
	h->on = true;
	eng.held[eng.nheld++] = h;
}

void __wrap_engine_unhold(struct engine *e, struct engine_held *h)
{
	for (int i = 0; h->on && i < eng.nheld; i++) {
		if (eng.held[i] == h) {
			memmove(&eng.held[i], &eng.held[i + 1],
			        (size_t)(eng.nheld - i - 1) * sizeof(h));
			eng.nheld--;
			h->on = false;
		}
	}
}

struct engine_held *__wrap_engine_held_first(struct engine *e)
{
	return eng.nheld > 0 ? eng.held[0] : NULL;
}

struct engine_held *__wrap_engine_held_next(struct engine *e, struct engine_held *h)
{
	for (int i = 0; i + 1 < eng.nheld; i++) {
		if (eng.held[i] == h) {
			return eng.held[i + 1];
		}
	}
	return NULL;
}

void __wrap_engine_ack(struct engine *e, uint64_t generation, uint64_t tag)
{
	if (eng.acks < 4) {
		eng.acked[eng.acks] = tag;
	}
	eng.acks++;
}

static void on_done(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	done_seen.runs++;
	done_seen.err = err;
	snprintf(done_seen.msg, sizeof(done_seen.msg), "%s", msg);
	warren_reply_free(reply);
}

/* Runs the submitted tasks, as the I/O thread's turn does. */
static void run_tasks(void)
{
	int n = eng.ntasks;

	eng.ntasks = 0;
	for (int i = 0; i < n; i++) {
		eng.tasks[i]->run((struct engine *)&eng.fake, eng.tasks[i]);
	}
}

/* Calls svc.m with opts, asynchronously into done_seen, and lets the I/O
 * thread take the call. */
static void call_svc_m(warren_client *c, const warren_call_opts *opts)
{
	char err[256] = "";

	assert_int_equal(warren_call_async(c, "svc.m", NULL, opts, on_done, NULL, err, sizeof(err)),
	                 WARREN_OK);
	run_tasks();
}

static void confirm(enum engine_confirm outcome)
{
	engine_confirm_fn fn = eng.confirm_fn;

	assert_non_null(fn);
	eng.confirm_fn = NULL;
	for (int i = 0; i < eng.nunconfirmed; i++) {
		if (eng.unconfirmed[i].ctx == eng.confirm_ctx) {
			eng.unconfirmed[i] = eng.unconfirmed[--eng.nunconfirmed];
			break;
		}
	}
	fn((struct engine *)&eng.fake, eng.confirm_ctx, outcome);
}

/* The turn's end, as the engine runs it: the held publishes that can go
 * are released, in order, then the owner's tick. */
static void tick_at(int64_t now)
{
	eng.now = now;
	while (eng.nheld > 0 && !eng.full && !eng.down && eng.blocked == NULL) {
		struct engine_held *h = eng.held[0];

		__wrap_engine_unhold((struct engine *)&eng.fake, h);
		eng.releasing = true;
		h->release((struct engine *)&eng.fake, h);
		eng.releasing = false;
	}
	eng.hooks.tick((struct engine *)&eng.fake, eng.hooks.arg, now);
}

/* A client with the tests' settings, then kv (key, value, ..., NULL). */
static warren_client *new_client_kv(const char *const *kv)
{
	warren_config *cfg = warren_config_new();
	warren_client *c = NULL;
	char err[256] = "";

	memset(&eng, 0, sizeof(eng));
	memset(&done_seen, 0, sizeof(done_seen));
	eng.now = 1000000;
	assert_int_equal(warren_config_set(cfg, "broker.url", "amqp://127.0.0.1:1", NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "client.retry_attempts", "5", NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "client.retry_delay", "10ms", NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "client.batch", "", NULL, 0), WARREN_OK);
	for (size_t i = 0; kv[i] != NULL; i += 2) {
		assert_int_equal(warren_config_set(cfg, kv[i], kv[i + 1], NULL, 0), WARREN_OK);
	}
	assert_int_equal(warren_client_new(cfg, "test", &c, err, sizeof(err)), WARREN_OK);
	warren_config_free(cfg);
	return c;
}

static warren_client *new_client_opts(const char *reply_mode, const char *batch_replies,
                                      const char *batch)
{
	warren_config *cfg = warren_config_new();
	warren_client *c = NULL;
	char err[256] = "";

	memset(&eng, 0, sizeof(eng));
	memset(&done_seen, 0, sizeof(done_seen));
	eng.now = 1000000;
	assert_int_equal(warren_config_set(cfg, "broker.url", "amqp://127.0.0.1:1", NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "client.retry_attempts", "5", NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "client.retry_delay", "10ms", NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "client.reply_mode", reply_mode, NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "client.batch_replies", batch_replies, NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "client.batch", batch, NULL, 0), WARREN_OK);
	assert_int_equal(warren_client_new(cfg, "test", &c, err, sizeof(err)), WARREN_OK);
	warren_config_free(cfg);
	return c;
}

/* Request batching off unless asked: the tests of single calls look at
 * each publish as its task runs, before the turn's tick. */
static warren_client *new_client_batching(const char *reply_mode, const char *batch_replies)
{
	return new_client_opts(reply_mode, batch_replies, "");
}

static warren_client *new_client_with(const char *reply_mode)
{
	return new_client_batching(reply_mode, "true");
}

static warren_client *new_client(void)
{
	return new_client_with("direct");
}

/* A reply delivered by the scripted engine: tag, and a correlation id that
 * no call has (a stray reply: the client still has to settle it). */
static void deliver_stray(uint64_t tag)
{
	struct engine_delivery *d = calloc(1, sizeof(*d));

	assert_non_null(d);
	d->delivery_tag = tag;
	d->generation = 1;
	d->message.properties._flags = AMQP_BASIC_CORRELATION_ID_FLAG;
	d->message.properties.correlation_id =
	    amqp_cstring_bytes("0123456789abcdef0123456789abcdef");
	eng.hooks.deliver((struct engine *)&eng.fake, eng.hooks.arg, d);
}

/* With a reply queue of its own, the client consumes with acks and acks
 * each reply once handled (merged by the engine in its turn): a reply the
 * broker sent just before a connection was lost, unread, is delivered
 * again instead of lost with it. Before, replies were consumed without
 * acks and one in flight at the loss left its call waiting to its
 * deadline (it_sign's lost-connection test, 1 call in 2,405). */
static void queue_mode_acks_every_reply_it_handles(void **state)
{
	warren_client *c = new_client_with("queue");

	assert_true(eng.batch_acks);
	deliver_stray(7);
	deliver_stray(8);
	assert_int_equal(eng.acks, 2);
	assert_int_equal(eng.acked[0], 7);
	assert_int_equal(eng.acked[1], 8);
	warren_client_free(c);
}

/* Direct reply-to is consumed without acks: none is sent. */
static void direct_mode_sends_no_acks(void **state)
{
	warren_client *c = new_client_with("direct");

	assert_false(eng.batch_acks);
	deliver_stray(7);
	assert_int_equal(eng.acks, 0);
	warren_client_free(c);
}

/* A call whose deadline passed while its publish was unconfirmed, and whose
 * confirm then says outcome: it ended once with TIMEOUT, and is released,
 * not published again (under ASan a republish reads freed memory). */
static void deadline_then_confirm(enum engine_confirm outcome)
{
	warren_client *c = new_client();
	warren_call_opts opts = {.timeout_ms = 100};

	call_svc_m(c, &opts);
	assert_int_equal(eng.publishes, 1);
	assert_non_null(eng.confirm_fn);

	tick_at(eng.now + 150); /* past the deadline, no confirm yet */
	assert_int_equal(done_seen.runs, 1);
	assert_int_equal(done_seen.err, WARREN_ERR_TIMEOUT);

	confirm(outcome);
	for (int i = 1; i <= 20; i++) {
		tick_at(eng.now + 100); /* well past any back-off */
	}
	assert_int_equal(eng.publishes, 1);
	assert_int_equal(done_seen.runs, 1);

	warren_client_stats st;
	warren_client_get_stats(c, &st);
	assert_int_equal(st.republished, 0);
	assert_int_equal(st.in_flight, 0);
	warren_client_free(c);
}

static void finished_call_is_never_republished_after_nack(void **state)
{
	deadline_then_confirm(ENGINE_NACK);
}

static void finished_call_is_never_republished_after_lost(void **state)
{
	deadline_then_confirm(ENGINE_LOST);
}

/* The control: an unfinished call that is nacked is published again, with
 * the back-off, and still ends once. The copy is the same attempt of the
 * same call: its message_id and rpc-attempt (1) are kept. */
static void live_call_is_republished_as_the_same_attempt(void **state)
{
	warren_client *c = new_client();
	warren_call_opts opts = {.timeout_ms = 10000};

	call_svc_m(c, &opts);
	assert_int_equal(eng.publishes, 1);
	confirm(ENGINE_NACK);
	for (int i = 0; i < 20 && eng.publishes < 2; i++) {
		tick_at(eng.now + 100);
	}
	assert_int_equal(eng.publishes, 2);
	assert_int_equal(done_seen.runs, 0);
	assert_int_equal(eng.attempts[0], 1);
	assert_int_equal(eng.attempts[1], 1);
	assert_string_equal(eng.message_ids[1], eng.message_ids[0]);
	warren_client_free(c);
	assert_int_equal(done_seen.runs, 1);
	assert_int_equal(done_seen.err, WARREN_ERR_CLOSED);
}

/* A call's deadline runs from warren_call_async, not from when the I/O
 * thread first sees it: one that passed meanwhile ends unpublished. */
static void deadline_runs_from_the_call_not_from_the_io_thread(void **state)
{
	warren_client *c = new_client();
	warren_call_opts opts = {.timeout_ms = 100};
	char err[256] = "";

	assert_int_equal(
	    warren_call_async(c, "svc.m", NULL, &opts, on_done, NULL, err, sizeof(err)), WARREN_OK);
	eng.now += 150; /* the I/O thread was busy elsewhere */
	run_tasks();
	assert_int_equal(eng.publishes, 0);
	assert_int_equal(done_seen.runs, 1);
	assert_int_equal(done_seen.err, WARREN_ERR_TIMEOUT);
	warren_client_free(c);
}

/* A request the socket has no room for is held, not written (the write
 * would block the I/O thread), and published once there is room. */
static void a_call_waits_for_room_in_the_socket(void **state)
{
	warren_client *c = new_client();
	warren_call_opts opts = {.timeout_ms = 1000};

	eng.full = true;
	call_svc_m(c, &opts);
	tick_at(eng.now + 10);
	assert_int_equal(eng.publishes, 0);
	eng.full = false;
	tick_at(eng.now + 10);
	assert_int_equal(eng.publishes, 1);
	assert_int_equal(done_seen.runs, 0);
	confirm(ENGINE_ACK);
	tick_at(eng.now + 1000); /* no reply: its deadline */
	assert_int_equal(done_seen.runs, 1);
	assert_int_equal(done_seen.err, WARREN_ERR_TIMEOUT);
	warren_client_free(c);
}

/* A blocking call whose I/O thread never gets to it (stuck) still ends
 * shortly after its deadline, and the call the I/O thread ends later
 * finds its waiter gone without touching freed memory (ASan). */
static void blocking_call_ends_at_its_deadline_when_the_io_thread_is_stuck(void **state)
{
	warren_client *c = new_client();
	warren_call_opts opts = {.timeout_ms = 100};
	warren_reply *reply = NULL;
	char err[256] = "";

	/* Nobody runs the submitted task: the I/O thread is stuck. */
	assert_int_equal(warren_call(c, "svc.m", NULL, &opts, &reply, err, sizeof(err)),
	                 WARREN_ERR_TIMEOUT);
	assert_null(reply);
	assert_string_equal(
	    err, "no reply within 100 ms (the client's I/O thread did not end the call in time)");
	/* The I/O thread comes back: publishes, and ends the call at its
	 * deadline; the confirm releases it. */
	run_tasks();
	assert_int_equal(eng.publishes, 1);
	tick_at(eng.now + 150);
	confirm(ENGINE_ACK);
	warren_client_free(c);
}

/* ---- batched replies (warren(7) BATCHES) */

/* What each call's completion saw, by the call's own slot. */
struct seen {
	int runs;
	warren_err err;
	int64_t result;
};

static void on_done_into(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct seen *s = arg;

	s->runs++;
	s->err = err;
	if (reply != NULL) {
		assert_true(warren_value_get_int(warren_reply_result(reply), &s->result));
	}
	warren_reply_free(reply);
}

/* Delivers one batch of replies: to correlation_ids[i] the msgpack int
 * results[i] (a positive fixint). */
static void deliver_batch(const char *const *ids, const int *results, size_t n, bool broken)
{
	struct engine_delivery *d = calloc(1, sizeof(*d));
	struct envelope_meta m[4];
	struct envelope_props p[4];
	struct batch_item items[4];
	unsigned char bodies[4];
	amqp_table_entry_t *h = calloc(1, sizeof(*h));
	void *buf;
	size_t len;

	assert_non_null(d);
	for (size_t i = 0; i < n; i++) {
		m[i] = (struct envelope_meta){.status = 0, .format = ENVELOPE_FMT_MSGPACK};
		snprintf(m[i].correlation_id, sizeof(m[i].correlation_id), "%s", ids[i]);
		envelope_reply_props(&m[i], &p[i]);
		bodies[i] = (unsigned char)results[i];
		items[i] = (struct batch_item){&p[i].props, &bodies[i], 1};
	}
	assert_int_equal(batch_encode(items, n, &buf, &len), WARREN_OK);
	if (broken) {
		len--; /* truncated */
	}
	batch_props(&d->message.properties, h, false);
	d->message.body = (amqp_bytes_t){.len = len, .bytes = buf};
	d->generation = 1;
	eng.hooks.deliver((struct engine *)&eng.fake, eng.hooks.arg, d);
	free(h);
}

/* Two calls in flight, their replies in one batch in the other order:
 * each call ends with its own answer, as if each had come alone. */
static void a_batch_of_replies_ends_each_call_with_its_own_answer(void **state)
{
	warren_client *c = new_client();
	warren_call_opts opts = {.timeout_ms = 10000};
	struct seen a = {0}, b = {0};
	char err[256] = "";
	warren_client_stats st;

	assert_int_equal(
	    warren_call_async(c, "svc.m", NULL, &opts, on_done_into, &a, err, sizeof(err)),
	    WARREN_OK);
	assert_int_equal(
	    warren_call_async(c, "svc.m", NULL, &opts, on_done_into, &b, err, sizeof(err)),
	    WARREN_OK);
	run_tasks();
	assert_int_equal(eng.publishes, 2);
	/* By default every request offers to take its reply batched. */
	assert_int_equal(eng.accept_batch[0], BATCH_VERSION);
	assert_int_equal(eng.accept_batch[1], BATCH_VERSION);
	deliver_batch((const char *const[]){eng.correlation_ids[1], eng.correlation_ids[0]},
	              (const int[]){22, 11}, 2, false);
	assert_int_equal(a.runs, 1);
	assert_int_equal(a.err, WARREN_OK);
	assert_int_equal(a.result, 11);
	assert_int_equal(b.runs, 1);
	assert_int_equal(b.err, WARREN_OK);
	assert_int_equal(b.result, 22);
	warren_client_get_stats(c, &st);
	assert_int_equal(st.reply_batches, 1);
	assert_int_equal(st.replies, 2);
	assert_int_equal(st.bad_batches, 0);
	/* An entry for a call that has ended is a late reply, as alone. */
	deliver_batch((const char *const[]){eng.correlation_ids[0]}, (const int[]){1}, 1, false);
	warren_client_get_stats(c, &st);
	assert_int_equal(st.late_replies, 1);
	assert_int_equal(a.runs, 1);
	warren_client_free(c);
}

/* A batch that does not decode is counted and dropped: the call it may
 * have answered keeps waiting (to its deadline or a good reply). */
static void a_malformed_batch_is_counted_and_ends_no_call(void **state)
{
	warren_client *c = new_client();
	warren_call_opts opts = {.timeout_ms = 10000};
	struct seen a = {0};
	char err[256] = "";
	warren_client_stats st;

	assert_int_equal(
	    warren_call_async(c, "svc.m", NULL, &opts, on_done_into, &a, err, sizeof(err)),
	    WARREN_OK);
	run_tasks();
	deliver_batch((const char *const[]){eng.correlation_ids[0]}, (const int[]){5}, 1, true);
	warren_client_get_stats(c, &st);
	assert_int_equal(st.bad_batches, 1);
	assert_int_equal(st.reply_batches, 0);
	assert_int_equal(a.runs, 0);
	deliver_batch((const char *const[]){eng.correlation_ids[0]}, (const int[]){5}, 1, false);
	assert_int_equal(a.runs, 1);
	assert_int_equal(a.result, 5);
	warren_client_free(c);
}

static void batch_replies_off_sends_no_offer(void **state)
{
	warren_client *c = new_client_batching("direct", "false");
	char err[256] = "";

	assert_int_equal(warren_call_async(c, "svc.m", NULL, NULL, on_done, NULL, err, sizeof(err)),
	                 WARREN_OK);
	run_tasks();
	assert_int_equal(eng.publishes, 1);
	assert_int_equal(eng.accept_batch[0], 0);
	warren_client_free(c);
}

/* ---- batched requests (warren(7) BATCHES) */

static void call_n(warren_client *c, int n, bool transient)
{
	warren_call_opts opts = {.timeout_ms = 10000, .transient = transient};
	char err[256] = "";

	for (int i = 0; i < n; i++) {
		assert_int_equal(
		    warren_call_async(c, "svc.m", NULL, &opts, on_done, NULL, err, sizeof(err)),
		    WARREN_OK);
	}
}

/* Three durable calls in one turn: nothing goes out while the turn's
 * tasks run; the tick publishes one batch on the lane of batches, its
 * entries the three requests with their own ids. */
static void durable_calls_of_one_turn_go_as_one_batch_on_the_lane(void **state)
{
	warren_client *c = new_client_opts("direct", "true", "*");
	struct batch *b = NULL;
	amqp_basic_properties_t bp;
	amqp_table_entry_t bh[1];
	char why[200];
	warren_client_stats st;

	call_n(c, 3, false);
	run_tasks();
	assert_int_equal(eng.publishes, 0);
	tick_at(eng.now);
	assert_int_equal(eng.publishes, 1);
	assert_true(eng.last_batch);
	assert_string_equal(eng.exchange, "rpc.batch");
	assert_string_equal(eng.routing_key, "svc");
	batch_props(&bp, bh, true);
	assert_int_equal(batch_decode(&bp, eng.body, eng.body_len, 1 << 20, &b, why, sizeof(why)),
	                 WARREN_OK);
	assert_int_equal(b->n, 3);
	for (size_t i = 0; i < 3; i++) {
		struct envelope_meta m;

		assert_int_equal(envelope_read(&b->entries[i].props, &m, why, sizeof(why)),
		                 WARREN_OK);
		assert_string_equal(m.method, "svc.m");
		assert_true(m.persistent);
		assert_int_equal(strlen(m.correlation_id), 32);
		for (size_t k = 0; k < i; k++) {
			assert_memory_not_equal(b->entries[k].props.correlation_id.bytes,
			                        m.correlation_id, 32);
		}
	}
	batch_free(b);
	confirm(ENGINE_ACK);
	warren_client_get_stats(c, &st);
	assert_int_equal(st.request_batches, 1);
	assert_int_equal(st.in_flight, 3);
	warren_client_free(c);
	assert_int_equal(done_seen.runs, 3); /* ended by the shutdown */
}

/* One call in a turn goes alone, on rpc, with no added wait; so do
 * transient calls, and every call when client.batch is empty. */
static void a_lone_call_and_transient_calls_go_alone(void **state)
{
	warren_client *c = new_client_opts("direct", "true", "*");

	call_n(c, 1, false);
	run_tasks();
	tick_at(eng.now);
	assert_int_equal(eng.publishes, 1);
	assert_false(eng.last_batch);
	assert_string_equal(eng.exchange, "rpc");
	assert_string_equal(eng.routing_key, "svc.m");
	call_n(c, 3, true);
	run_tasks();
	assert_int_equal(eng.publishes, 4); /* at once, from their tasks */
	assert_false(eng.last_batch);
	warren_client_free(c);

	c = new_client_opts("direct", "true", "");
	call_n(c, 3, false);
	run_tasks();
	assert_int_equal(eng.publishes, 3);
	assert_false(eng.last_batch);
	warren_client_free(c);

	c = new_client_opts("direct", "true", "other.*");
	call_n(c, 3, false);
	run_tasks();
	assert_int_equal(eng.publishes, 3);
	warren_client_free(c);
}

/* A batch returned unroutable (no worker of the service ever declared its
 * lane): its requests go alone at once, and the service gets singles
 * until 30 s have passed. */
static void a_returned_batch_goes_alone_and_the_service_gets_singles_for_a_while(void **state)
{
	warren_client *c = new_client_opts("direct", "true", "*");
	amqp_basic_properties_t rp = {._flags = AMQP_BASIC_CORRELATION_ID_FLAG |
	                                        AMQP_BASIC_CONTENT_TYPE_FLAG,
	                              .content_type = amqp_cstring_bytes(BATCH_CONTENT_TYPE)};
	warren_client_stats st;

	call_n(c, 2, false);
	run_tasks();
	tick_at(eng.now);
	assert_int_equal(eng.publishes, 1);
	assert_true(eng.last_batch);
	rp.correlation_id = amqp_cstring_bytes(eng.last_id);
	eng.hooks.returned((struct engine *)&eng.fake, eng.hooks.arg, &rp, 312, "NO_ROUTE");
	confirm(ENGINE_ACK);
	assert_int_equal(eng.publishes, 3);
	assert_false(eng.last_batch);
	assert_string_equal(eng.exchange, "rpc");
	warren_client_get_stats(c, &st);
	assert_int_equal(st.batch_fallbacks, 1);
	assert_int_equal(st.unroutable, 0);
	assert_int_equal(done_seen.runs, 0); /* still waiting for their replies */

	call_n(c, 2, false);
	run_tasks();
	assert_int_equal(eng.publishes, 5); /* singles, at once */
	tick_at(eng.now + 30001);
	call_n(c, 2, false);
	run_tasks();
	tick_at(eng.now);
	assert_int_equal(eng.publishes, 6);
	assert_true(eng.last_batch);
	warren_client_free(c);
}

/* A nacked batch: each of its calls is retried as if its own publish had
 * been nacked. */
static void a_nacked_batch_retries_each_call(void **state)
{
	warren_client *c = new_client_opts("direct", "true", "*");
	warren_client_stats st;

	call_n(c, 2, false);
	run_tasks();
	tick_at(eng.now);
	assert_int_equal(eng.publishes, 1);
	confirm(ENGINE_NACK);
	for (int i = 0; i < 5; i++) {
		tick_at(eng.now + 100);
	}
	warren_client_get_stats(c, &st);
	assert_int_equal(st.republished, 2);
	assert_int_equal(done_seen.runs, 0);
	warren_client_free(c);
}

/* ---- the connection lost and back (warren(7) GUARANTEES) */

/* As the real engine loses its connection: not connected, every publish
 * not yet confirmed LOST, then the owner's lost hook. */
static void lose_connection(void)
{
	eng.down = true;
	eng.confirm_fn = NULL;
	while (eng.nunconfirmed > 0) {
		eng.nunconfirmed--;
		eng.unconfirmed[eng.nunconfirmed].fn(
		    (struct engine *)&eng.fake, eng.unconfirmed[eng.nunconfirmed].ctx, ENGINE_LOST);
	}
	eng.hooks.lost((struct engine *)&eng.fake, eng.hooks.arg, "connection lost: test");
}

/* The connection is back (its setup done): the next turn releases. */
static void connection_back(void)
{
	eng.down = false;
	tick_at(eng.now + 1);
}

static warren_client_stats stats_of(warren_client *c)
{
	warren_client_stats st;

	warren_client_get_stats(c, &st);
	return st;
}

/* A call made while the client is not connected is held, for longer than
 * client.retry_attempts with its back-off would last, and published once
 * the connection is back. Before, it was retried 5 times 10 ms apart and
 * failed with "not connected to the broker, after 5 attempts". */
static void a_call_made_while_disconnected_waits_for_the_connection(void **state)
{
	warren_client *c = new_client_kv((const char *const[]){NULL});
	warren_call_opts opts = {.timeout_ms = 30000};

	lose_connection();
	call_svc_m(c, &opts);
	for (int i = 0; i < 50; i++) {
		tick_at(eng.now + 200); /* 10 s */
	}
	assert_int_equal(done_seen.runs, 0);
	assert_int_equal(eng.publishes, 0);
	connection_back();
	assert_int_equal(eng.publishes, 1);
	assert_int_equal(eng.attempts[0], 1);
	assert_int_equal(done_seen.runs, 0);
	assert_int_equal(stats_of(c).republished, 0);
	warren_client_free(c);
}

/* The time in a "since" message, as Unix ms; -1 when it is not one. */
static int64_t since_ms(const char *text)
{
	struct tm tm = {0};
	int ms = -1, n = 0;

	if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	           &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &n) != 7 ||
	    n != 24) {
		return -1;
	}
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm) * 1000 + ms;
}

/* Whether msg is exactly PREFIX<UTC time with ms>SUFFIX, the time within
 * 5 s of want_ms. */
static void assert_since_message(const char *msg, const char *prefix, const char *suffix,
                                 int64_t want_ms)
{
	size_t p = strlen(prefix), s = strlen(suffix), len = strlen(msg);
	int64_t got;

	if (len != p + 24 + s || strncmp(msg, prefix, p) != 0 ||
	    strcmp(msg + p + 24, suffix) != 0) {
		fail_msg("got \"%s\", want \"%s<time>%s\"", msg, prefix, suffix);
	}
	got = since_ms(msg + p);
	if (got < want_ms - 5000 || got > want_ms + 5000) {
		fail_msg("got %s, want about %lld ms since the epoch", msg, (long long)want_ms);
	}
}

/* A call whose deadline passes while the client is not connected ends at
 * its deadline with DEADLINE_EXCEEDED and says since when. */
static void a_deadline_passed_while_disconnected_says_since_when(void **state)
{
	warren_client *c = new_client_kv((const char *const[]){NULL});
	warren_call_opts opts = {.timeout_ms = 1500};

	lose_connection();
	call_svc_m(c, &opts);
	tick_at(eng.now + 1499);
	assert_int_equal(done_seen.runs, 0);
	tick_at(eng.now + 1);
	assert_int_equal(done_seen.runs, 1);
	assert_int_equal(done_seen.err, WARREN_ERR_TIMEOUT);
	assert_int_equal(warren_err_status(done_seen.err), WARREN_STATUS_DEADLINE_EXCEEDED);
	/* The loss was 1.5 s ago on the client's clock. */
	assert_since_message(done_seen.msg, "not connected to the broker since ",
	                     " (for 1.5 s): no reply within 1500 ms", warren_now_ms() - 1500);
	warren_client_free(c);
}

/* A request the broker confirmed, whose connection is then lost: the call
 * is not failed; after the reconnect the same request (message_id,
 * correlation id, rpc-attempt 1) is published again, counted as resent.
 * Before, the call failed at the loss with "reply path lost". */
static void a_confirmed_call_is_resent_after_the_reconnect(void **state)
{
	warren_client *c = new_client_kv((const char *const[]){NULL});
	warren_call_opts opts = {.timeout_ms = 10000};

	call_svc_m(c, &opts);
	confirm(ENGINE_ACK);
	lose_connection();
	tick_at(eng.now + 1000);
	assert_int_equal(done_seen.runs, 0);
	assert_int_equal(eng.publishes, 1);
	connection_back();
	assert_int_equal(eng.publishes, 2);
	assert_string_equal(eng.message_ids[1], eng.message_ids[0]);
	assert_string_equal(eng.correlation_ids[1], eng.correlation_ids[0]);
	assert_int_equal(eng.attempts[1], 1);
	assert_int_equal(stats_of(c).resent, 1);
	assert_int_equal(stats_of(c).republished, 0);
	assert_int_equal(done_seen.runs, 0);
	/* Confirmed again and lost again: resent again. */
	confirm(ENGINE_ACK);
	lose_connection();
	connection_back();
	assert_int_equal(eng.publishes, 3);
	assert_int_equal(stats_of(c).resent, 2);
	warren_client_free(c);
	assert_int_equal(done_seen.err, WARREN_ERR_CLOSED);
}

/* A resend waits for the connection within the call's deadline only. */
static void a_resend_whose_deadline_passes_while_disconnected_is_not_sent(void **state)
{
	warren_client *c = new_client_kv((const char *const[]){NULL});
	warren_call_opts opts = {.timeout_ms = 2000};

	call_svc_m(c, &opts);
	confirm(ENGINE_ACK);
	tick_at(eng.now + 500);
	lose_connection();
	tick_at(eng.now + 1500);
	assert_int_equal(done_seen.runs, 1);
	assert_int_equal(done_seen.err, WARREN_ERR_TIMEOUT);
	assert_since_message(done_seen.msg, "not connected to the broker since ",
	                     " (for 1.5 s): no reply within 2000 ms", warren_now_ms() - 1500);
	connection_back();
	assert_int_equal(eng.publishes, 1);
	assert_int_equal(stats_of(c).resent, 0);
	warren_client_free(c);
}

/* With client.resend not naming the method, a confirmed call fails at the
 * loss, as before, with the reason. */
static void a_call_client_resend_does_not_name_fails_at_the_loss(void **state)
{
	warren_client *c = new_client_kv((const char *const[]){"client.resend", "other.*", NULL});
	warren_call_opts opts = {.timeout_ms = 10000};

	call_svc_m(c, &opts);
	confirm(ENGINE_ACK);
	lose_connection();
	assert_int_equal(done_seen.runs, 1);
	assert_int_equal(done_seen.err, WARREN_ERR_TRANSPORT);
	assert_int_equal(warren_err_status(done_seen.err), WARREN_STATUS_UNAVAILABLE);
	assert_string_equal(done_seen.msg,
	                    "reply path lost: connection lost: test; not sent again: "
	                    "client.resend does not match svc.m");
	connection_back();
	assert_int_equal(eng.publishes, 1);
	warren_client_free(c);
}

/* With a reply queue of its own, a confirmed call is resent too: a broker
 * restart deleted the queue (not durable), and a reply published before it
 * was declared again is lost. Before, the call waited to its deadline. */
static void a_confirmed_call_is_resent_in_queue_mode(void **state)
{
	warren_client *c = new_client_kv((const char *const[]){"client.reply_mode", "queue", NULL});
	warren_call_opts opts = {.timeout_ms = 10000};

	call_svc_m(c, &opts);
	confirm(ENGINE_ACK);
	lose_connection();
	assert_int_equal(done_seen.runs, 0);
	connection_back();
	assert_int_equal(eng.publishes, 2);
	assert_string_equal(eng.message_ids[1], eng.message_ids[0]);
	assert_int_equal(stats_of(c).resent, 1);
	warren_client_free(c);
}

/* A request not yet confirmed when the connection is lost is published
 * again once it is back, however many times that happens: waiting for the
 * connection uses up none of client.retry_attempts (5 here). Before, the
 * fifth loss failed the call. */
static void unconfirmed_requests_lost_many_times_use_up_no_attempts(void **state)
{
	warren_client *c = new_client_kv((const char *const[]){NULL});
	warren_call_opts opts = {.timeout_ms = 60000};

	call_svc_m(c, &opts);
	for (int i = 0; i < 8; i++) {
		lose_connection();
		tick_at(eng.now + 1000);
		connection_back();
	}
	assert_int_equal(eng.publishes, 9);
	assert_int_equal(done_seen.runs, 0);
	assert_int_equal(stats_of(c).republished, 8);
	assert_int_equal(stats_of(c).resent, 0);
	assert_string_equal(eng.message_ids[3], eng.message_ids[0]);
	warren_client_free(c);
	assert_int_equal(done_seen.runs, 1);
}

/* Held calls released together each go alone, in the order held, and each
 * once: a released call does not join the turn's batch (there it could be
 * held again behind later calls). Before, the three went as one batch. */
static void released_calls_publish_alone_each_once(void **state)
{
	warren_client *c = new_client_kv(
	    (const char *const[]){"client.batch", "*", "client.blocked_timeout", "5s", NULL});
	warren_call_opts opts = {.timeout_ms = 10000};
	char ids[3][65];
	char err[256] = "";

	eng.full = true;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(
		    warren_call_async(c, "svc.m", NULL, &opts, on_done, NULL, err, sizeof(err)),
		    WARREN_OK);
	}
	run_tasks();
	tick_at(eng.now + 10);
	assert_int_equal(eng.publishes, 0);
	assert_int_equal(eng.nheld, 3);
	eng.full = false;
	tick_at(eng.now + 10);
	assert_int_equal(eng.publishes, 3);
	assert_false(eng.last_batch);
	assert_int_equal(stats_of(c).request_batches, 0);
	for (int i = 0; i < 3; i++) {
		snprintf(ids[i], sizeof(ids[i]), "%s", eng.correlation_ids[i]);
		for (int k = 0; k < i; k++) {
			assert_string_not_equal(ids[k], ids[i]);
		}
	}
	tick_at(eng.now + 10);
	assert_int_equal(eng.publishes, 3);
	warren_client_free(c);
	assert_int_equal(done_seen.runs, 3);
}

/* Freeing the client while calls wait for the connection ends each of
 * them at once with CLOSED (ASan: nothing touches the freed engine). */
static void freeing_the_client_ends_held_calls_with_closed(void **state)
{
	warren_client *c = new_client_kv((const char *const[]){NULL});
	warren_call_opts opts = {.timeout_ms = 30000};

	call_svc_m(c, &opts);
	confirm(ENGINE_ACK);
	lose_connection(); /* held to be resent */
	call_svc_m(c, &opts); /* held: not connected */
	assert_int_equal(eng.nheld, 2);
	warren_client_free(c);
	assert_int_equal(done_seen.runs, 2);
	assert_int_equal(done_seen.err, WARREN_ERR_CLOSED);
	assert_string_equal(done_seen.msg, "the client is shutting down");
}

/* By default a call held while the broker refuses publishes waits to its
 * deadline, which then says since when. Before, it failed after 5 s
 * (client.blocked_timeout's old default) with UNAVAILABLE. */
static void a_blocked_call_waits_to_its_deadline_by_default(void **state)
{
	warren_client *c = new_client_kv((const char *const[]){NULL});
	warren_call_opts opts = {.timeout_ms = 8000};

	eng.blocked = "low on memory";
	tick_at(eng.now); /* the client sees the block */
	call_svc_m(c, &opts);
	tick_at(eng.now + 6000);
	assert_int_equal(done_seen.runs, 0);
	assert_int_equal(eng.publishes, 0);
	tick_at(eng.now + 2000);
	assert_int_equal(done_seen.runs, 1);
	assert_int_equal(done_seen.err, WARREN_ERR_TIMEOUT);
	assert_since_message(done_seen.msg, "the broker refuses publishes (low on memory) since ",
	                     " (for 8.0 s): no reply within 8000 ms", warren_now_ms() - 8000);
	warren_client_free(c);
}

/* client.blocked_timeout, when set, still ends a blocked call early; but
 * never one that waits for the connection. */
static void blocked_timeout_applies_to_blocks_not_to_lost_connections(void **state)
{
	warren_client *c =
	    new_client_kv((const char *const[]){"client.blocked_timeout", "300ms", NULL});
	warren_call_opts opts = {.timeout_ms = 5000};

	lose_connection();
	call_svc_m(c, &opts);
	tick_at(eng.now + 1000);
	assert_int_equal(done_seen.runs, 0);
	eng.down = false;
	eng.blocked = "low on disk";
	tick_at(eng.now + 1); /* connected, blocked: still held */
	assert_int_equal(done_seen.runs, 0);
	tick_at(eng.now + 300);
	assert_int_equal(done_seen.runs, 1);
	assert_int_equal(done_seen.err, WARREN_ERR_BROKER);
	assert_string_equal(done_seen.msg, "the broker refuses publishes (low on disk): not sent "
	                                   "within 300 ms (client.blocked_timeout)");
	warren_client_free(c);
}

/* Once client.blocked_timeout has ended what it ends, a block that goes
 * on asks for no tick before the next deadline: the I/O thread sleeps
 * rather than turning again at once, and again (it did: the block's due
 * time stayed in the past while the block lasted). */
static void a_block_past_its_timeout_does_not_spin_the_io_thread(void **state)
{
	warren_client *c =
	    new_client_kv((const char *const[]){"client.blocked_timeout", "300ms", NULL});
	warren_call_opts opts = {.timeout_ms = 5000};
	int64_t next;

	eng.blocked = "low on disk";
	tick_at(eng.now); /* the block is seen */
	call_svc_m(c, &opts);
	tick_at(eng.now + 300);
	assert_int_equal(done_seen.runs, 1);
	next = eng.hooks.tick((struct engine *)&eng.fake, eng.hooks.arg, eng.now + 1);
	assert_true(next > eng.now + 1);
	warren_client_free(c);
}

/* A call returned unroutable waits for its retry; the connection lost
 * before that return's confirm does not also hold it: held and retried,
 * it went out twice after the reconnect. */
static void a_call_waiting_for_its_retry_is_not_held_too_at_a_loss(void **state)
{
	warren_client *c = new_client_kv((const char *const[]){NULL});
	warren_call_opts opts = {.timeout_ms = 60000};
	amqp_basic_properties_t rp = {._flags = AMQP_BASIC_CORRELATION_ID_FLAG};

	call_svc_m(c, &opts);
	assert_int_equal(eng.publishes, 1);
	rp.correlation_id = amqp_cstring_bytes(eng.last_id);
	eng.hooks.returned((struct engine *)&eng.fake, eng.hooks.arg, &rp, 312, "NO_ROUTE");
	lose_connection(); /* its confirm: LOST */
	connection_back();
	tick_at(eng.now + 5000); /* past its retry's back-off */
	assert_int_equal(eng.publishes, 2);
	confirm(ENGINE_ACK); /* the retry's */
	tick_at(eng.now + 5000);
	assert_int_equal(eng.publishes, 2);
	assert_int_equal(done_seen.runs, 0);
	warren_client_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(finished_call_is_never_republished_after_nack),
	    cmocka_unit_test(queue_mode_acks_every_reply_it_handles),
	    cmocka_unit_test(direct_mode_sends_no_acks),
	    cmocka_unit_test(finished_call_is_never_republished_after_lost),
	    cmocka_unit_test(live_call_is_republished_as_the_same_attempt),
	    cmocka_unit_test(deadline_runs_from_the_call_not_from_the_io_thread),
	    cmocka_unit_test(a_call_waits_for_room_in_the_socket),
	    cmocka_unit_test(blocking_call_ends_at_its_deadline_when_the_io_thread_is_stuck),
	    cmocka_unit_test(a_batch_of_replies_ends_each_call_with_its_own_answer),
	    cmocka_unit_test(a_malformed_batch_is_counted_and_ends_no_call),
	    cmocka_unit_test(batch_replies_off_sends_no_offer),
	    cmocka_unit_test(durable_calls_of_one_turn_go_as_one_batch_on_the_lane),
	    cmocka_unit_test(a_lone_call_and_transient_calls_go_alone),
	    cmocka_unit_test(a_returned_batch_goes_alone_and_the_service_gets_singles_for_a_while),
	    cmocka_unit_test(a_nacked_batch_retries_each_call),
	    cmocka_unit_test(a_call_made_while_disconnected_waits_for_the_connection),
	    cmocka_unit_test(a_deadline_passed_while_disconnected_says_since_when),
	    cmocka_unit_test(a_confirmed_call_is_resent_after_the_reconnect),
	    cmocka_unit_test(a_resend_whose_deadline_passes_while_disconnected_is_not_sent),
	    cmocka_unit_test(a_call_client_resend_does_not_name_fails_at_the_loss),
	    cmocka_unit_test(a_confirmed_call_is_resent_in_queue_mode),
	    cmocka_unit_test(unconfirmed_requests_lost_many_times_use_up_no_attempts),
	    cmocka_unit_test(released_calls_publish_alone_each_once),
	    cmocka_unit_test(freeing_the_client_ends_held_calls_with_closed),
	    cmocka_unit_test(a_blocked_call_waits_to_its_deadline_by_default),
	    cmocka_unit_test(blocked_timeout_applies_to_blocks_not_to_lost_connections),
	    cmocka_unit_test(a_block_past_its_timeout_does_not_spin_the_io_thread),
	    cmocka_unit_test(a_call_waiting_for_its_retry_is_not_held_too_at_a_loss),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
