/* test_lane.c: what a worker does with a batch of requests when it comes
 * (lane.c): a batch the broker has delivered before, as its
 * x-delivery-count says in whatever integer kind, is split into single
 * requests instead of run. The engine and the worker's job queue are
 * mocked (WRAP_test_lane in the Makefile). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "worker_int.h"

#define ENTRIES 2

/* What the mocks saw. */
static struct {
	int published, acked, requeued, jobs_asked;
	int64_t crashes[ENTRIES]; /* rpc-crashes of each republished entry */
	char routing_key[ENTRIES][80];
	engine_confirm_fn fn[ENTRIES];
	void *ctx[ENTRIES];
} seen;

struct job *__wrap_worker_job_new(struct warren_worker *w);
void __wrap_worker_start_job(struct warren_worker *w, struct engine *e, struct job *j);
void __wrap_worker_count(struct warren_worker *w, uint64_t *field, uint64_t n);
warren_err __wrap_engine_publish(struct engine *e, const char *exchange, const char *routing_key,
                                 bool mandatory, const amqp_basic_properties_t *props,
                                 const void *body, size_t len, engine_confirm_fn fn, void *ctx);
bool __wrap_engine_connected(const struct engine *e);
const char *__wrap_engine_blocked(const struct engine *e);
bool __wrap_engine_writable(struct engine *e, size_t len);
uint64_t __wrap_engine_generation(const struct engine *e);
void __wrap_engine_ack(struct engine *e, uint64_t generation, uint64_t tag);
void __wrap_engine_reject(struct engine *e, uint64_t generation, uint64_t tag, bool requeue);

/* No job to be had: a batch that is run settles at once, given back. */
struct job *__wrap_worker_job_new(struct warren_worker *w)
{
	seen.jobs_asked++;
	return NULL;
}

void __wrap_worker_start_job(struct warren_worker *w, struct engine *e, struct job *j)
{
	fail_msg("no job was made, none can be queued");
}

void __wrap_worker_count(struct warren_worker *w, uint64_t *field, uint64_t n)
{
	*field += n;
}

warren_err __wrap_engine_publish(struct engine *e, const char *exchange, const char *routing_key,
                                 bool mandatory, const amqp_basic_properties_t *props,
                                 const void *body, size_t len, engine_confirm_fn fn, void *ctx)
{
	const amqp_field_value_t *c = wire_header(props, BATCH_CRASHES_HEADER);
	int i = seen.published++;

	assert_true(i < ENTRIES);
	assert_non_null(c);
	assert_true(envelope_field_int(c, &seen.crashes[i]));
	snprintf(seen.routing_key[i], sizeof(seen.routing_key[i]), "%s", routing_key);
	seen.fn[i] = fn;
	seen.ctx[i] = ctx;
	return WARREN_OK;
}

bool __wrap_engine_connected(const struct engine *e)
{
	return true;
}

const char *__wrap_engine_blocked(const struct engine *e)
{
	return NULL;
}

bool __wrap_engine_writable(struct engine *e, size_t len)
{
	return true;
}

uint64_t __wrap_engine_generation(const struct engine *e)
{
	return 1;
}

void __wrap_engine_ack(struct engine *e, uint64_t generation, uint64_t tag)
{
	seen.acked++;
}

void __wrap_engine_reject(struct engine *e, uint64_t generation, uint64_t tag, bool requeue)
{
	seen.requeued += requeue;
}

/* A batch of ENTRIES requests, delivered once before when count is not
 * NULL; freed by lane.c (engine_delivery_free). */
static struct engine_delivery *batch_delivery(const amqp_field_value_t *count)
{
	static amqp_table_entry_t headers[2];
	struct engine_delivery *d = calloc(1, sizeof(*d));
	struct envelope_meta m[ENTRIES];
	struct envelope_props p[ENTRIES];
	struct batch_item items[ENTRIES];
	void *body;
	size_t len;

	assert_non_null(d);
	for (int i = 0; i < ENTRIES; i++) {
		m[i] = (struct envelope_meta){.format = ENVELOPE_FMT_JSON, .status = -1};
		strcpy(m[i].method, "echo.echo");
		snprintf(m[i].correlation_id, sizeof(m[i].correlation_id), "c%d", i);
		strcpy(m[i].reply_to, "replies");
		envelope_request_props(&m[i], &p[i]);
		items[i] = (struct batch_item){&p[i].props, "{}", 2};
	}
	assert_int_equal(batch_encode(items, ENTRIES, &body, &len), WARREN_OK);
	batch_props(&d->message.properties, headers, true);
	if (count != NULL) {
		headers[1] = (amqp_table_entry_t){.key = amqp_cstring_bytes("x-delivery-count"),
		                                  .value = *count};
		d->message.properties.headers.num_entries = 2;
	}
	d->message.body = (amqp_bytes_t){.len = len, .bytes = body};
	d->body_size = len;
	d->generation = 1;
	d->delivery_tag = 7;
	strcpy(d->routing_key, "echo.echo");
	return d;
}

static struct warren_worker *worker(void)
{
	struct warren_worker *w = calloc(1, sizeof(*w));

	assert_non_null(w);
	strcpy(w->topo.service, "echo");
	strcpy(w->topo.queue, "rpc.echo");
	strcpy(w->topo.dlq, "rpc.echo.dlq");
	w->settings.max_size = 1024 * 1024;
	STAILQ_INIT(&w->splits.waiting);
	return w;
}

static int reset(void **state)
{
	memset(&seen, 0, sizeof(seen));
	return 0;
}

/* lane_deliver on a batch delivered before with this count: each entry
 * republished alone to the service queue with want as rpc-crashes (the
 * count less one, warren(7) BATCHES),
 * and the batch acked once all are confirmed. */
static void assert_split(amqp_field_value_t count, int64_t want)
{
	struct warren_worker *w = worker();

	reset(NULL);
	assert_false(lane_deliver(w, NULL, batch_delivery(&count)));
	assert_int_equal(seen.jobs_asked, 0);
	assert_int_equal(seen.published, ENTRIES);
	assert_int_equal(w->splits.splitting, 1);
	for (int i = 0; i < ENTRIES; i++) {
		assert_string_equal(seen.routing_key[i], "rpc.echo");
		assert_true(seen.crashes[i] == want);
		seen.fn[i](NULL, seen.ctx[i], ENGINE_ACK);
	}
	assert_int_equal(seen.acked, 1);
	assert_int_equal(w->splits.splitting, 0);
	assert_int_equal(w->metrics.stats.batches_split, 1);
	free(w);
}

/* I8, U16 and U64 were read as 0 before lane.c shared
 * envelope_field_int: such a batch was run again instead of split. */
static void test_a_batch_delivered_before_is_split_whatever_the_count_kind(void **state)
{
	assert_split((amqp_field_value_t){.kind = AMQP_FIELD_KIND_I8, .value.i8 = 1}, 0);
	assert_split((amqp_field_value_t){.kind = AMQP_FIELD_KIND_U8, .value.u8 = 2}, 1);
	assert_split((amqp_field_value_t){.kind = AMQP_FIELD_KIND_I16, .value.i16 = 3}, 2);
	assert_split((amqp_field_value_t){.kind = AMQP_FIELD_KIND_U16, .value.u16 = 4}, 3);
	assert_split((amqp_field_value_t){.kind = AMQP_FIELD_KIND_I32, .value.i32 = 5}, 4);
	assert_split((amqp_field_value_t){.kind = AMQP_FIELD_KIND_U32, .value.u32 = 6}, 5);
	assert_split((amqp_field_value_t){.kind = AMQP_FIELD_KIND_I64, .value.i64 = 7}, 6);
	assert_split((amqp_field_value_t){.kind = AMQP_FIELD_KIND_U64, .value.u64 = 8}, 7);
}

/* The other side: a first delivery is run (here no job can be had, so
 * it goes back whole), and a count that is not an integer counts as none. */
static void assert_run(const amqp_field_value_t *count)
{
	struct warren_worker *w = worker();

	reset(NULL);
	assert_true(lane_deliver(w, NULL, batch_delivery(count)));
	assert_int_equal(seen.jobs_asked, 1);
	assert_int_equal(seen.published, 0);
	assert_int_equal(seen.requeued, 1);
	assert_int_equal(w->metrics.stats.batches_split, 0);
	free(w);
}

static void test_a_first_delivery_of_a_batch_is_run_not_split(void **state)
{
	amqp_field_value_t zero = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 0};
	amqp_field_value_t text = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = {1, (void *)"3"}};

	assert_run(NULL);
	assert_run(&zero);
	assert_run(&text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_batch_delivered_before_is_split_whatever_the_count_kind),
	    cmocka_unit_test(test_a_first_delivery_of_a_batch_is_run_not_split),
	};

	return cmocka_run_group_tests(tests, reset, NULL);
}
