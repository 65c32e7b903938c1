/* lane.c: the worker's side of batched requests (warren(7) BATCHES). A
 * batch delivered from rpc.<service>.batch becomes one job per entry, each
 * run, answered, dead-lettered or retried on its own as if it had come
 * alone; the batch is acked once every entry is settled. A batch delivered
 * again (after a crash or a requeue) is not run: its entries are
 * republished alone to the service queue, so that crash accounting and the
 * delivery limit stay per request. */
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "log.h"
#include "worker_int.h"
#include "wire.h"

/* The batch delivery its entries' jobs come from. pending and requeue: I/O
 * thread only; refs: one per entry job alive (any thread frees a job). */
struct lane_batch {
	struct engine_delivery *d;
	struct batch *b;
	size_t pending;  /* entries not yet settled */
	bool requeue;    /* an entry was given back: the batch goes back whole */
	atomic_int refs; /* entry jobs not yet freed */
};

/* A redelivered batch's entries being republished alone. */
struct lane_split {
	struct warren_worker *w;
	struct engine_delivery *d;
	size_t pending; /* publishes not yet confirmed */
	bool failed;    /* one was not confirmed: the batch goes back whole */
};

static void settle_delivery(struct engine *e, const struct engine_delivery *d, bool requeue)
{
	if (d->generation != engine_generation(e)) {
		return; /* the broker has requeued it already */
	}
	if (requeue) {
		engine_reject(e, d->generation, d->delivery_tag, true);
	} else {
		engine_ack(e, d->generation, d->delivery_tag);
	}
}

void lane_settle(struct engine *e, struct lane_batch *lb, bool requeue)
{
	lb->requeue = lb->requeue || requeue;
	if (--lb->pending == 0) {
		settle_delivery(e, lb->d, lb->requeue);
	}
}

void lane_release(struct lane_batch *lb)
{
	if (atomic_fetch_sub(&lb->refs, 1) > 1) {
		return;
	}
	engine_delivery_free(lb->d);
	batch_free(lb->b);
	free(lb);
}

/* An entry addressed to direct reply-to gets the batch's reply_to, the
 * name the broker completed on the batch itself (warren(7) BATCHES). One
 * whose batch has no such name gets no reply: a publish to the bare name
 * would close the channel (406). Points into d. */
static void direct_reply_to(const struct engine_delivery *d, amqp_basic_properties_t *p)
{
	const amqp_basic_properties_t *bp = &d->message.properties;
	size_t n = strlen(WIRE_DIRECT_REPLY_TO);

	if (!(p->_flags & AMQP_BASIC_REPLY_TO_FLAG) || p->reply_to.len != n ||
	    memcmp(p->reply_to.bytes, WIRE_DIRECT_REPLY_TO, n) != 0) {
		return;
	}
	if ((bp->_flags & AMQP_BASIC_REPLY_TO_FLAG) && bp->reply_to.len > n &&
	    memcmp(bp->reply_to.bytes, WIRE_DIRECT_REPLY_TO, n) == 0) {
		p->reply_to = bp->reply_to;
	} else {
		p->_flags &= ~AMQP_BASIC_REPLY_TO_FLAG;
	}
}

/* ------------------------------------------------------------ redelivered */

static void on_split_confirm(struct engine *e, void *ctx, enum engine_confirm outcome)
{
	struct lane_split *s = ctx;

	s->failed = s->failed || outcome != ENGINE_ACK;
	if (--s->pending > 0) {
		return;
	}
	settle_delivery(e, s->d, s->failed);
	s->w->splits.splitting--;
	engine_delivery_free(s->d);
	free(s);
}

/* A redelivered batch waiting for room to be split (w->splits.waiting). */
struct lane_wait {
	struct engine_delivery *d;
	struct batch *b;
	int64_t count;                /* the batch's x-delivery-count, for rpc-crashes */
	STAILQ_ENTRY(lane_wait) link; /* in w->splits.waiting */
};

/* The entry's headers with rpc-crashes set to crashes (any it had is
 * replaced): the batch's deliveries become the entry's, so that its crash
 * count goes on from the batch's instead of starting again at 0 on the
 * fresh message, and it runs alone as a suspect (requeue_suspect). NULL
 * when out of memory; free() it after the publish. */
static amqp_table_entry_t *carry_crashes(amqp_basic_properties_t *p, int64_t crashes)
{
	int n = (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? p->headers.num_entries : 0;
	amqp_table_entry_t *t = malloc((size_t)(n + 1) * sizeof(*t));
	size_t klen = strlen(BATCH_CRASHES_HEADER);
	int k = 0;

	if (t == NULL) {
		return NULL;
	}
	for (int i = 0; i < n; i++) {
		const amqp_table_entry_t *h = &p->headers.entries[i];

		if (h->key.len != klen || memcmp(h->key.bytes, BATCH_CRASHES_HEADER, klen) != 0) {
			t[k++] = *h;
		}
	}
	t[k].key = amqp_cstring_bytes(BATCH_CRASHES_HEADER);
	t[k].value.kind = AMQP_FIELD_KIND_I64;
	t[k].value.value.i64 = crashes;
	p->headers = (amqp_table_t){.num_entries = k + 1, .entries = t};
	p->_flags |= AMQP_BASIC_HEADERS_FLAG;
	return t;
}

/* Each entry goes to the service queue through the default exchange,
 * whatever its method (one that is not the service's is then refused as
 * it would have been in the batch), carrying the batch's delivery count;
 * the batch is acked once all are confirmed, or given back whole if one
 * is not. Until then the worker counts as holding it (w->splits.splitting), so
 * that a suspect among the entries does not run before the batch is
 * acked: a crash then would bring the batch back and split it again. */
static void split_now(struct warren_worker *w, struct engine *e, struct engine_delivery *d,
                      struct batch *b, int64_t count)
{
	struct lane_split *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		settle_delivery(e, d, true);
		engine_delivery_free(d);
		return;
	}
	*s = (struct lane_split){.w = w, .d = d, .pending = b->n};
	w->splits.splitting++;
	for (size_t i = 0; i < b->n; i++) {
		const struct batch_entry *en = &b->entries[i];
		amqp_basic_properties_t props = en->props;
		amqp_table_entry_t *headers = carry_crashes(&props, count);
		warren_err err = WARREN_ERR_NOMEM;

		direct_reply_to(d, &props);
		if (headers != NULL) {
			err = engine_publish(e, WIRE_DEFAULT_EXCHANGE, w->topo.queue, true, &props,
			                     en->body.bytes, en->body.len, on_split_confirm, s);
		}
		free(headers);
		if (err != WARREN_OK) {
			/* Not connected (the broker has the batch back already), or out
			 * of memory: the batch goes back whole. */
			s->failed = true;
			s->pending -= b->n - i - 1;
			on_split_confirm(e, s, ENGINE_LOST);
			break;
		}
	}
	worker_count(w, &w->metrics.stats.batches_split, 1);
}

/* Whether the socket takes the split of d now: its entries together are
 * about the batch's size. As for every publish of this thread, not while
 * the broker blocks publishes nor beyond engine_writable, which would
 * block the thread in a write to a broker that does not read. */
static bool split_writable(struct engine *e, const struct engine_delivery *d)
{
	return engine_blocked(e) == NULL && engine_writable(e, d->message.body.len);
}

static void free_wait(struct lane_wait *lw)
{
	engine_delivery_free(lw->d);
	batch_free(lw->b);
	free(lw);
}

/* Splits d now, or keeps it (with b) for lane_tick: takes both. */
static void split(struct warren_worker *w, struct engine *e, struct engine_delivery *d,
                  struct batch *b, int64_t count)
{
	struct lane_wait *lw;

	if (STAILQ_EMPTY(&w->splits.waiting) && (!engine_connected(e) || split_writable(e, d))) {
		split_now(w, e, d, b, count);
		batch_free(b);
		return;
	}
	lw = malloc(sizeof(*lw));
	if (lw == NULL) {
		settle_delivery(e, d, true);
		engine_delivery_free(d);
		batch_free(b);
		return;
	}
	*lw = (struct lane_wait){.d = d, .b = b, .count = count};
	STAILQ_INSERT_TAIL(&w->splits.waiting, lw, link);
}

void lane_tick(struct warren_worker *w, struct engine *e)
{
	struct lane_wait *lw;

	while ((lw = STAILQ_FIRST(&w->splits.waiting)) != NULL) {
		if (lw->d->generation == engine_generation(e) && engine_connected(e) &&
		    !split_writable(e, lw->d)) {
			break; /* engine_writable has the loop turn again soon */
		}
		STAILQ_REMOVE_HEAD(&w->splits.waiting, link);
		if (lw->d->generation == engine_generation(e)) {
			split_now(w, e, lw->d, lw->b, lw->count);
			batch_free(lw->b);
			free(lw);
		} else {
			free_wait(lw); /* the broker has requeued it already */
		}
	}
}

void lane_free(struct warren_worker *w)
{
	struct lane_wait *lw;

	while ((lw = STAILQ_FIRST(&w->splits.waiting)) != NULL) {
		STAILQ_REMOVE_HEAD(&w->splits.waiting, link);
		free_wait(lw);
	}
}

/* ------------------------------------------------------------ first delivery */

/* An entry as a delivery of its own: its properties point into the
 * batch, its body is its own (engine_delivery_free frees it). */
static struct engine_delivery *entry_delivery(const struct engine_delivery *d,
                                              const struct batch_entry *en)
{
	struct engine_delivery *c = calloc(1, sizeof(*c));
	void *body = malloc(en->body.len > 0 ? en->body.len : 1);

	if (c == NULL || body == NULL) {
		free(c);
		free(body);
		return NULL;
	}
	memcpy(body, en->body.bytes, en->body.len);
	c->delivery_tag = d->delivery_tag;
	c->generation = d->generation;
	c->message.properties = en->props;
	direct_reply_to(d, &c->message.properties);
	c->message.body = (amqp_bytes_t){.len = en->body.len, .bytes = body};
	c->body_size = en->body.len;
	envelope_copy(c->routing_key, sizeof(c->routing_key),
	              (en->props._flags & AMQP_BASIC_TYPE_FLAG)
	                  ? en->props.type
	                  : amqp_cstring_bytes(d->routing_key));
	return c;
}

static void run_entries(struct warren_worker *w, struct engine *e, struct engine_delivery *d,
                        struct batch *b)
{
	struct lane_batch *lb = calloc(1, sizeof(*lb));
	size_t i = 0, n = b->n;

	if (lb == NULL) {
		settle_delivery(e, d, true);
		engine_delivery_free(d);
		batch_free(b);
		return;
	}
	lb->d = d;
	lb->b = b;
	lb->pending = n;
	atomic_init(&lb->refs, (int)n);
	for (; i < n; i++) {
		struct job *j = worker_job_new(w);
		struct engine_delivery *c = j != NULL ? entry_delivery(d, &b->entries[i]) : NULL;

		if (c == NULL) {
			free(j);
			break;
		}
		j->delivery = c;
		j->lane = lb;
		worker_start_job(w, e, j);
	}
	/* Out of memory part way: the rest go back with the batch (n: b is
	 * freed with the last entry's job, which may have ended inline). */
	for (size_t left = n - i; left > 0; left--) {
		lane_settle(e, lb, true);
		lane_release(lb);
	}
}

bool lane_deliver(struct warren_worker *w, struct engine *e, struct engine_delivery *d)
{
	struct batch *b = NULL;
	char why[300] = "the body is larger than message.max_size";
	int64_t count = 0;

	worker_count(w, &w->metrics.stats.request_batches, 1);
	if (w->life.stopping) {
		settle_delivery(e, d, true);
		engine_delivery_free(d);
		return false;
	}
	if (d->too_large ||
	    batch_decode(&d->message.properties, d->message.body.bytes, d->message.body.len,
	                 w->settings.max_size, &b, why, sizeof(why)) != WARREN_OK) {
		/* Poison as a whole: the queue's policy dead-letters it. */
		log_warn("malformed batch of requests rejected to %s: %s", w->topo.dlq, why);
		worker_count(w, &w->metrics.stats.bad_batches, 1);
		engine_reject(e, d->generation, d->delivery_tag, false);
		engine_delivery_free(d);
		return false;
	}
	count = envelope_delivery_count(&d->message.properties);
	if (d->redelivered || count >= 1) {
		/* Its entries' crashes: the batch's returns less one. A batch is
		 * held whole while one entry runs at a time: it comes back from
		 * any crash its worker had while holding it, the one an entry of
		 * its own caused or one of a suspect it was held beside, or while
		 * it was being split (a publish and a confirm from its ack). One
		 * return of every batch is therefore taken for no crash of its
		 * entries': an innocent entry is never dead-lettered for a crash
		 * it was only held beside, and an entry that does crash its worker
		 * is dead-lettered one crash later than a request that came alone
		 * (warren(7), BATCHES). */
		split(w, e, d, b, count > 0 ? count - 1 : 0);
		return false;
	}
	run_entries(w, e, d, b);
	return true;
}
