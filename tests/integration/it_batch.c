/* it_batch.c: batching between warren ends (warren(7) BATCHES) against the
 * private broker. Replies ready together for one caller that offers
 * rpc-accept-batch travel as one message, and every call still gets its
 * own answer; a caller without the offer gets single replies; with signing
 * on, every entry of a batch is verified on its own. Whether batches form
 * depends on timing, so a test sends rounds of calls until one has (within
 * a generous bound) and never asserts how many. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "testenv.h"
#include "warren.h"

#define CALLS  200
#define ROUNDS 20

static char dir[64];

static warren_status echo(warren_request *req, void *arg)
{
	warren_request_set_result(req, warren_value_copy(warren_request_params(req)));
	return WARREN_STATUS_OK;
}

static int setup(void **state)
{
	unsigned char k[32];

	snprintf(dir, sizeof(dir), "/tmp/it-batch-%ld", (long)getpid());
	if (sodium_init() < 0 || mkdir(dir, 0700) != 0) {
		return -1;
	}
	mkdir(strcat(strcpy((char[128]){0}, dir), "/svc-ring"), 0700);
	mkdir(strcat(strcpy((char[128]){0}, dir), "/app-ring"), 0700);
	mkdir(strcat(strcpy((char[128]){0}, dir), "/bad-ring"), 0700);
	crypto_auth_keygen(k);
	testenv_write_key(dir, "app.mac", k, 32, 0600);
	testenv_write_key(dir, "svc-ring/app.key", k, 32, 0600);
	crypto_auth_keygen(k);
	testenv_write_key(dir, "svc.mac", k, 32, 0600);
	testenv_write_key(dir, "app-ring/svc.key", k, 32, 0600);
	crypto_auth_keygen(k);
	testenv_write_key(dir, "bad-ring/svc.key", k, 32, 0600); /* not the service's key */
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

/* ---- a side's configuration */

static warren_config *config(bool sign, const char *id, const char *ring, const char *batch_replies)
{
	char i[100], k[200], r[200], b[100], q[100];

	snprintf(i, sizeof(i), "security.key_id=%s", id);
	snprintf(k, sizeof(k), "security.key_file=%s/%s.mac", dir, id);
	snprintf(r, sizeof(r), "security.keyring=%s/%s", dir, ring);
	snprintf(b, sizeof(b), "client.batch_replies=%s", batch_replies);
	/* Off together: a client that takes no batches sends none either. */
	snprintf(q, sizeof(q), "client.batch=%s", strcmp(batch_replies, "true") == 0 ? "*" : "");
	return testenv_config((const char *const[]){
	    "worker.service=bulk", "worker.threads=8", "worker.prefetch=128", "log.level=error", b,
	    q, sign ? "security.scheme=mac" : NULL, i, k, r, NULL});
}

/* on_io_thread: bulk.echo is registered to run on the I/O thread. */
static warren_worker *start_worker_as(bool sign, bool on_io_thread)
{
	warren_config *cfg = config(sign, "svc", "svc-ring", "true");
	warren_worker *w = NULL;
	char why[300] = "";

	if (on_io_thread) {
		assert_int_equal(warren_worker_new(cfg, &w, why, sizeof(why)), WARREN_OK);
		assert_int_equal(warren_worker_handle_inline(w, "bulk.echo", echo, NULL), WARREN_OK);
		assert_int_equal(warren_worker_start(w, why, sizeof(why)), WARREN_OK);
	} else {
		w = testenv_worker_start(cfg, "bulk.echo", echo, NULL);
	}
	warren_config_free(cfg);
	assert_non_null(w);
	return w;
}

static warren_worker *start_worker(bool sign)
{
	return start_worker_as(sign, false);
}

static warren_client *start_client(bool sign, const char *ring, const char *batch_replies)
{
	warren_config *cfg = config(sign, "app", ring, batch_replies);
	warren_client *c = NULL;
	char why[300] = "";

	assert_int_equal(warren_client_new(cfg, "it_batch", &c, why, sizeof(why)), WARREN_OK);
	warren_config_free(cfg);
	return c;
}

/* ---- rounds of calls in flight */

static atomic_int ended, right, wrong;

static void on_done(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	int64_t got = -1;

	if (err == WARREN_OK &&
	    warren_value_get_int(warren_map_get(warren_reply_result(reply), "i"), &got) &&
	    got == (int64_t)(intptr_t)arg) {
		atomic_fetch_add(&right, 1);
	} else {
		atomic_fetch_add(&wrong, 1);
	}
	warren_reply_free(reply);
	atomic_fetch_add(&ended, 1);
}

/* CALLS calls in flight at once, each echoing its own number; waits for
 * every one to end. */
static void round_of_calls(warren_client *c, int64_t timeout_ms)
{
	char why[300];

	atomic_store(&ended, 0);
	for (intptr_t i = 0; i < CALLS; i++) {
		warren_value *p = warren_map();

		warren_map_set(p, "i", warren_int(i));
		assert_int_equal(warren_call_async(c, "bulk.echo", p,
		                                   &(warren_call_opts){.timeout_ms = timeout_ms},
		                                   on_done, (void *)i, why, sizeof(why)),
		                 WARREN_OK);
		warren_value_free(p);
	}
	for (int64_t end = testenv_mono_ms() + timeout_ms + 10000;
	     atomic_load(&ended) < CALLS && testenv_mono_ms() < end;) {
		usleep(10000);
	}
	assert_int_equal(atomic_load(&ended), CALLS);
}

/* Rounds until the client has received a batch (at most ROUNDS). */
/* requests: until requests went batched too (not when signed: signed
 * requests go alone, warren(7) BATCHES). */
static int rounds_until_batched(warren_client *c, int64_t timeout_ms, bool requests)
{
	warren_client_stats st;
	int rounds = 0;

	do {
		round_of_calls(c, timeout_ms);
		rounds++;
		warren_client_get_stats(c, &st);
	} while ((st.reply_batches == 0 || (requests && st.request_batches == 0)) &&
	         st.untrusted_replies == 0 && rounds < ROUNDS);
	return rounds;
}

/* A worker and a client for rounds of calls (the client's side of the
 * configuration as start_client), with the tallies at 0. */
static void start_pair(bool sign, const char *ring, const char *batch_replies, warren_worker **w,
                       warren_client **c)
{
	*w = start_worker(sign);
	*c = start_client(sign, ring, batch_replies);
	atomic_store(&right, 0);
	atomic_store(&wrong, 0);
}

static void stop_pair(warren_worker *w, warren_client *c)
{
	warren_client_free(c);
	assert_int_equal(testenv_worker_stop(w), WARREN_OK);
}

static void batched_both_ways(bool on_io_thread)
{
	warren_worker *w = start_worker_as(false, on_io_thread);
	warren_client *c = start_client(false, "", "true");
	warren_client_stats cs;
	warren_worker_stats ws;
	int rounds;

	atomic_store(&right, 0);
	atomic_store(&wrong, 0);
	rounds = rounds_until_batched(c, 10000, true);
	warren_client_get_stats(c, &cs);
	/* A worker counts a batch of replies just after its publish, and its
	 * replies at their confirm, by when the caller may have them already. */
	for (int64_t end = testenv_mono_ms() + 5000;; usleep(10000)) {
		warren_worker_get_stats(w, &ws);
		if ((ws.reply_batches >= cs.reply_batches &&
		     ws.replied >= (uint64_t)rounds * CALLS) ||
		    testenv_mono_ms() > end) {
			break;
		}
	}
	assert_true(cs.reply_batches >= 1);
	assert_int_equal(cs.reply_batches, ws.reply_batches);
	/* Requests went batched too, each entry run and answered alone. */
	assert_true(cs.request_batches >= 1);
	assert_int_equal(ws.request_batches, cs.request_batches);
	assert_int_equal(ws.received, (uint64_t)rounds * CALLS);
	assert_int_equal(cs.batch_fallbacks, 0);
	assert_true(ws.batched_replies >= 2 * ws.reply_batches);
	assert_int_equal(cs.bad_batches, 0);
	assert_int_equal(atomic_load(&right), rounds * CALLS);
	assert_int_equal(atomic_load(&wrong), 0);
	assert_int_equal(ws.replied, (uint64_t)rounds * CALLS);
	stop_pair(w, c);
}

static void many_calls_in_flight_get_batched_replies_each_its_own_answer(void **state)
{
	batched_both_ways(false);
}

/* The same with bulk.echo on the I/O thread: each entry of a batch runs as
 * it is taken out, and the batch (freed with its last entry) is acked once
 * all are answered. */
static void batched_requests_to_a_method_on_the_io_thread_are_each_answered(void **state)
{
	batched_both_ways(true);
}

/* client.batch_replies=false: no offer, so the worker sends none. */
static void a_client_that_does_not_offer_gets_single_replies(void **state)
{
	warren_worker *w;
	warren_client *c;
	warren_client_stats cs;
	warren_worker_stats ws;

	start_pair(false, "", "false", &w, &c);
	for (int i = 0; i < 3; i++) {
		round_of_calls(c, 10000);
	}
	warren_client_get_stats(c, &cs);
	warren_worker_get_stats(w, &ws);
	assert_int_equal(cs.reply_batches, 0);
	assert_int_equal(ws.reply_batches, 0);
	/* client.batch="": every request alone. */
	assert_int_equal(cs.request_batches, 0);
	assert_int_equal(ws.request_batches, 0);
	assert_int_equal(atomic_load(&right), 3 * CALLS);
	stop_pair(w, c);
}

/* Publishes CALLS JSON requests to bulk.echo from a plain AMQP client, as
 * a caller in another language would, offering to take batches (accept)
 * or not. They are queued before a worker consumes them (raw_publish
 * awaits each confirm and takes no reply meanwhile), so the worker
 * receives them at once. */
static void publish_plain(struct raw *raw, bool accept, char ids[][16])
{
	amqp_table_entry_t h = {.key = amqp_cstring_bytes(BATCH_ACCEPT_HEADER),
	                        .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 1}};

	for (int i = 0; i < CALLS; i++) {
		amqp_basic_properties_t p = {0};

		snprintf(ids[i], 16, "plain-%d", i);
		p._flags = AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_REPLY_TO_FLAG |
		           AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
		p.correlation_id = amqp_cstring_bytes(ids[i]);
		p.reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to");
		p.content_type = amqp_cstring_bytes("application/json");
		p.delivery_mode = 2;
		if (accept) {
			p._flags |= AMQP_BASIC_HEADERS_FLAG;
			p.headers = (amqp_table_t){.num_entries = 1, .entries = &h};
		}
		assert_int_equal(raw_publish(raw, "bulk.echo", &p, "{}", 2), 0);
	}
}

/* Counts a reply to plain-N in seen[N]. */
static void note_reply(const amqp_basic_properties_t *p, int *seen)
{
	char id[16] = {0};
	int i;

	assert_false(batch_is(p));
	assert_true(p->correlation_id.len > 6 && p->correlation_id.len < sizeof(id));
	memcpy(id, p->correlation_id.bytes, p->correlation_id.len);
	i = atoi(id + 6);
	assert_true(i >= 0 && i < CALLS);
	assert_string_equal(raw_header(p, "rpc-status"), "0");
	seen[i]++;
}

/* Reads replies until each of the CALLS requests has one; returns the
 * batches among them, each checked against the format of warren(7). */
static int read_replies(struct raw *raw, int *seen)
{
	int got = 0, batches = 0;

	while (got < CALLS) {
		amqp_envelope_t env;
		amqp_basic_properties_t *p = &env.message.properties;

		assert_int_equal(raw_wait(raw, 10000, &env), 0);
		if (batch_is(p)) {
			struct batch *b = NULL;
			char why[300] = "";

			assert_string_equal(raw_header(p, BATCH_HEADER), "1");
			assert_int_equal(batch_decode(p, env.message.body.bytes,
			                              env.message.body.len, 1 << 20, &b, why,
			                              sizeof(why)),
			                 WARREN_OK);
			assert_true(b->n >= 2);
			for (size_t i = 0; i < b->n; i++) {
				note_reply(&b->entries[i].props, seen);
			}
			got += (int)b->n;
			batches++;
			batch_free(b);
		} else {
			note_reply(p, seen);
			got++;
		}
		amqp_destroy_envelope(&env);
	}
	return batches;
}

/* A round of plain requests taken by a worker started after they were
 * queued; returns the batches of replies. */
static int plain_round(bool accept)
{
	warren_worker *w = start_worker(false);
	struct raw *raw = raw_connect();
	char ids[CALLS][16];
	int seen[CALLS] = {0}, batches;
	warren_worker_stats ws;

	assert_int_equal(testenv_worker_stop(w), WARREN_OK); /* the queue is declared */
	assert_int_equal(raw_consume_replies(raw), 0);
	publish_plain(raw, accept, ids);
	w = start_worker(false);
	batches = read_replies(raw, seen);
	for (int i = 0; i < CALLS; i++) {
		assert_int_equal(seen[i], 1);
	}
	warren_worker_get_stats(w, &ws);
	assert_int_equal((int)ws.reply_batches, batches);
	raw_close(raw);
	assert_int_equal(testenv_worker_stop(w), WARREN_OK);
	return batches;
}

/* A caller in another language, with no rpc-accept-batch: every reply
 * comes alone, in the reply format it knows, though all were ready
 * together. */
static void a_plain_amqp_caller_gets_single_replies(void **state)
{
	assert_int_equal(plain_round(false), 0);
}

/* One that offers rpc-accept-batch 1 gets batches in the documented
 * format, which the test reads with nothing but the format's decoder. */
static void a_plain_caller_that_offers_gets_the_documented_format(void **state)
{
	int batches = 0;

	for (int round = 0; round < ROUNDS && batches == 0; round++) {
		batches = plain_round(true);
	}
	assert_true(batches >= 1);
}

/* Signing on: replies are signed one by one and travel batched; the
 * caller verifies every entry (all verify with the service's key)... */
static void signed_replies_in_a_batch_are_each_verified(void **state)
{
	warren_worker *w;
	warren_client *c;
	warren_client_stats cs;
	int rounds;

	start_pair(true, "app-ring", "true", &w, &c);
	rounds = rounds_until_batched(c, 10000, false);
	warren_client_get_stats(c, &cs);
	assert_true(cs.reply_batches >= 1);
	assert_int_equal(cs.request_batches, 0); /* signed requests go alone */
	assert_int_equal(cs.untrusted_replies, 0);
	assert_int_equal(atomic_load(&right), rounds * CALLS);
	stop_pair(w, c);
}

/* ...and with the wrong key for the service, no entry is taken: each is
 * counted untrusted on its own and its call keeps waiting to its deadline. */
static void a_batch_signed_with_another_key_has_every_entry_refused(void **state)
{
	warren_worker *w;
	warren_client *c;
	warren_client_stats cs;

	start_pair(true, "bad-ring", "true", &w, &c);
	round_of_calls(c, 3000);
	warren_client_get_stats(c, &cs);
	assert_int_equal(atomic_load(&right), 0);
	assert_int_equal(atomic_load(&wrong), CALLS);
	assert_int_equal(cs.timeouts, CALLS);
	/* Every reply was seen and refused, batched or not. */
	assert_int_equal(cs.untrusted_replies, CALLS);
	stop_pair(w, c);
}

/* ---- batches of requests published by hand */

/* A JSON request entry for method, answered to the raw client. */
static void request_entry(amqp_basic_properties_t *p, const char *method, const char *id)
{
	memset(p, 0, sizeof(*p));
	p->_flags = AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_REPLY_TO_FLAG |
	            AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_TYPE_FLAG |
	            AMQP_BASIC_MESSAGE_ID_FLAG;
	p->correlation_id = amqp_cstring_bytes(id);
	p->message_id = amqp_cstring_bytes(id);
	p->type = amqp_cstring_bytes(method);
	p->reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to");
	p->content_type = amqp_cstring_bytes("application/json");
}

/* Publishes a batch of three requests, the second for an unknown method,
 * to the lane of batches. */
static void publish_three(struct raw *raw, const char *tag)
{
	amqp_basic_properties_t ep[3], bp;
	amqp_table_entry_t bh[1];
	char ids[3][32];
	const char *methods[3] = {"bulk.echo", "bulk.nope", "bulk.echo"};
	struct batch_item items[3];
	void *body;
	size_t len;

	for (int i = 0; i < 3; i++) {
		snprintf(ids[i], sizeof(ids[i]), "%s-%d", tag, i);
		request_entry(&ep[i], methods[i], ids[i]);
		items[i] = (struct batch_item){&ep[i], "{}", 2};
	}
	assert_int_equal(batch_encode(items, 3, &body, &len), WARREN_OK);
	batch_props(&bp, bh, true);
	bp._flags |= AMQP_BASIC_REPLY_TO_FLAG; /* completed by the broker for the entries */
	bp.reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to");
	/* Confirmed: published before any worker consumes it. */
	assert_int_equal(raw_publish_to(raw, "rpc.batch", "bulk", &bp, body, len), 0);
	free(body);
}

/* The batch of publish_three waiting on the lane of batches, which a
 * worker declared and nobody consumes now; replies go to raw, the
 * dead-letter queue is empty. */
static struct raw *three_waiting(const char *tag)
{
	struct raw *raw = raw_connect();

	assert_int_equal(testenv_worker_stop(start_worker(false)), WARREN_OK);
	raw_purge(raw, "rpc.bulk.dlq");
	assert_int_equal(raw_consume_replies(raw), 0);
	publish_three(raw, tag);
	assert_int_equal(raw_await_count(raw, "rpc.bulk.batch", 1, 5000), 1);
	return raw;
}

/* Takes the batch waiting on the lane and gives it back, as a worker that
 * died with it would: it comes again redelivered, its x-delivery-count up
 * by one. */
static void return_batch(struct raw *raw)
{
	uint64_t tag = raw_take(raw, "rpc.bulk.batch");

	assert_true(tag != 0);
	assert_int_equal(amqp_basic_reject(raw_conn(raw), 1, tag, 1), 0);
}

/* Reads the three answers: two echoes and the unknown method's error. */
static void expect_three(struct raw *raw)
{
	int ok = 0, unimplemented = 0;

	for (int n = 0; n < 3; n++) {
		amqp_envelope_t env;

		assert_int_equal(raw_wait(raw, 10000, &env), 0);
		const char *status = raw_header(&env.message.properties, "rpc-status");
		if (strcmp(status, "0") == 0) {
			ok++;
		} else if (strcmp(status, "12") == 0) {
			unimplemented++;
		}
		amqp_destroy_envelope(&env);
	}
	assert_int_equal(ok, 2);
	assert_int_equal(unimplemented, 1);
}

/* A poison entry is dead-lettered alone, as the single request it is,
 * with its reason; the others are answered and the batch acked. */
static void a_poison_request_in_a_batch_is_dead_lettered_alone(void **state)
{
	struct raw *raw = three_waiting("poison");
	warren_worker *w = start_worker(false);
	amqp_message_t msg;
	warren_worker_stats ws;

	expect_three(raw);
	assert_int_equal(raw_await_count(raw, "rpc.bulk.dlq", 1, 5000), 1);
	assert_int_equal(raw_get(raw, "rpc.bulk.dlq", &msg), 0);
	assert_false(batch_is(&msg.properties));
	assert_string_equal(raw_header(&msg.properties, "rpc-dead-reason"), "unknown-method");
	assert_int_equal((int)msg.properties.correlation_id.len, 8);
	assert_memory_equal(msg.properties.correlation_id.bytes, "poison-1", 8);
	amqp_destroy_message(&msg);
	warren_worker_get_stats(w, &ws);
	assert_int_equal(ws.request_batches, 1);
	assert_int_equal(ws.received, 3);
	assert_int_equal(ws.dead_lettered, 1);
	assert_int_equal(raw_await_count(raw, "rpc.bulk.batch", 0, 5000), 0);
	raw_close(raw);
	assert_int_equal(testenv_worker_stop(w), WARREN_OK);
}

/* A batch delivered a second time is not run: its requests are
 * republished alone to the service queue (x-delivery-count 0 each), then
 * it is acked; they are answered from there. */
static void a_redelivered_batch_is_split_into_single_requests(void **state)
{
	struct raw *raw = three_waiting("again");
	warren_worker *w;
	warren_worker_stats ws;

	return_batch(raw); /* its next delivery is a redelivery */
	w = start_worker(false);
	expect_three(raw);
	warren_worker_get_stats(w, &ws);
	assert_int_equal(ws.batches_split, 1);
	assert_int_equal(ws.received, 3); /* the three singles */
	assert_int_equal(raw_await_count(raw, "rpc.bulk.batch", 0, 5000), 0);
	raw_close(raw);
	assert_int_equal(testenv_worker_stop(w), WARREN_OK);
}

/* A batch of publish_three sent back `returns` times without an answer,
 * as a worker that died with it would, then split by a fresh worker: its
 * three requests' replies that say they crashed their worker ("13"), in
 * *crashed, and the reasons of the dead letters, in order, each followed
 * by a space. */
static void split_after_returns(int returns, int *crashed, char *reasons, size_t size)
{
	struct raw *raw = three_waiting("crashed");
	warren_worker *w;
	warren_worker_stats ws;

	for (int i = 0; i < returns; i++) {
		return_batch(raw);
	}
	w = start_worker(false);
	*crashed = 0;
	for (int n = 0; n < 3; n++) {
		amqp_envelope_t env;

		assert_int_equal(raw_wait(raw, 10000, &env), 0);
		*crashed += strcmp(raw_header(&env.message.properties, "rpc-status"), "13") == 0;
		amqp_destroy_envelope(&env);
	}
	/* Every request is dead-lettered before it is answered. */
	reasons[0] = '\0';
	for (long n = raw_queue_count(raw, "rpc.bulk.dlq"); n > 0; n--) {
		amqp_message_t msg;

		assert_int_equal(raw_get(raw, "rpc.bulk.dlq", &msg), 0);
		snprintf(reasons + strlen(reasons), size - strlen(reasons), "%s ",
		         raw_header(&msg.properties, "rpc-dead-reason"));
		amqp_destroy_message(&msg);
	}
	warren_worker_get_stats(w, &ws);
	assert_int_equal(ws.batches_split, 1);
	raw_close(raw);
	assert_int_equal(testenv_worker_stop(w), WARREN_OK);
}

/* A batch back worker.crash_limit (3) + 1 times without an answer: its
 * entries, republished alone, carry its count less one (rpc-crashes: one
 * return of a batch is no crash of its entries, warren(7) BATCHES) and are
 * dead-lettered as having crashed their worker; they do not start again
 * from 0 on the fresh message. */
static void a_split_batch_passes_its_crash_count_to_its_requests(void **state)
{
	int crashed;
	char reasons[200];

	split_after_returns(4, &crashed, reasons, sizeof(reasons));
	assert_int_equal(crashed, 3);
	assert_string_equal(reasons, "crashed-worker crashed-worker crashed-worker ");
}

/* Back worker.crash_limit (3) times: a batch is held whole while its
 * entries run one after another, so one of its returns is taken for no
 * crash of theirs: each has two, and is run (the unknown method is
 * refused as such) and answered. Before, each carried the batch's three
 * and was dead-lettered unrun. */
static void a_batch_back_as_often_as_the_crash_limit_has_its_requests_answered(void **state)
{
	int crashed;
	char reasons[200];

	split_after_returns(3, &crashed, reasons, sizeof(reasons));
	assert_int_equal(crashed, 0);
	assert_string_equal(reasons, "unknown-method ");
}

/* A service whose workers take no batches (no queue on its lane): the
 * client's batches come back, and every request reaches the service queue
 * alone, none lost. */
static void requests_go_alone_to_a_service_without_a_batch_lane(void **state)
{
	struct raw *raw = raw_connect();
	warren_client *c = start_client(false, "", "true");
	warren_client_stats cs;
	char why[300];
	int sent = 0;

	assert_int_equal(raw_declare_service(raw, "legacy"), 0);
	for (int round = 0; round < ROUNDS; round++) {
		for (int i = 0; i < 50; i++) {
			assert_int_equal(warren_call_async(c, "legacy.get", NULL,
			                                   &(warren_call_opts){.timeout_ms = 60000},
			                                   on_done, NULL, why, sizeof(why)),
			                 WARREN_OK);
		}
		sent += 50;
		assert_int_equal(raw_await_count(raw, "rpc.legacy", sent, 10000), sent);
		warren_client_get_stats(c, &cs);
		if (cs.batch_fallbacks > 0) {
			break;
		}
	}
	warren_client_get_stats(c, &cs);
	assert_true(cs.batch_fallbacks >= 1);
	assert_int_equal(cs.unroutable, 0);
	assert_int_equal(cs.failed, 0);
	raw_purge(raw, "rpc.legacy");
	raw_close(raw);
	warren_client_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(many_calls_in_flight_get_batched_replies_each_its_own_answer),
	    cmocka_unit_test(a_client_that_does_not_offer_gets_single_replies),
	    cmocka_unit_test(a_plain_amqp_caller_gets_single_replies),
	    cmocka_unit_test(a_plain_caller_that_offers_gets_the_documented_format),
	    cmocka_unit_test(signed_replies_in_a_batch_are_each_verified),
	    cmocka_unit_test(a_batch_signed_with_another_key_has_every_entry_refused),
	    cmocka_unit_test(a_poison_request_in_a_batch_is_dead_lettered_alone),
	    cmocka_unit_test(a_redelivered_batch_is_split_into_single_requests),
	    cmocka_unit_test(batched_requests_to_a_method_on_the_io_thread_are_each_answered),
	    cmocka_unit_test(a_split_batch_passes_its_crash_count_to_its_requests),
	    cmocka_unit_test(a_batch_back_as_often_as_the_crash_limit_has_its_requests_answered),
	    cmocka_unit_test(requests_go_alone_to_a_service_without_a_batch_lane),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
