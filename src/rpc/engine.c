/* engine.c: the I/O thread that alone owns a rabbitmq-c connection (DESIGN.md
 * section 3). It polls the socket and a wake-up eventfd together, runs the
 * tasks other threads queue, reads frames, tracks publisher confirms and
 * reconnects with jittered exponential back-off over the URL list. */
#include "engine.h"
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "log.h"

#define CHANNEL CONNECT_CHANNEL
#define FRAMES_PER_TURN 256 /* so a flood of frames never starves the task queue */
/* engine_writable: what a publish adds to its body (frame headers, the
 * properties and headers, a signature), and the room kept free for small
 * frames (acks, heartbeats, channel.close) however full the socket is. */
#define WRITE_OVERHEAD 4096
#define WRITE_RESERVE  65536
/* While an owner waits for room, the loop waits for POLLOUT; when POLLOUT
 * came and there was still not room enough (it says some room, not how
 * much), the next wait is a plain timeout of this many ms instead, so the
 * loop never spins on a socket that stays writable. */
#define WRITE_RECHECK_MS 2

/* A publish waiting for its confirm; the ring is sorted by tag. */
struct confirm_slot {
	uint64_t tag;
	engine_confirm_fn fn;
	void *ctx;
};

enum start_state { START_PENDING, START_UP, START_FAILED };

/* A delivery not yet settled, or whose ack waits for the end of the turn
 * (batch_acks). Kept in delivery-tag order. */
enum settle_state { UNSETTLED, ACK_PENDING, SETTLED };
struct unsettled {
	uint64_t tag;
	enum settle_state state;
};

struct engine {
	struct engine_hooks hooks;
	bool blocked; /* connection.blocked: a resource alarm */
	char blocked_reason[128];
	int64_t blocked_since;          /* engine_now() when it began */
	atomic_int_fast64_t blocked_ms; /* time blocked, all connections */
	struct connect_target *target; /* the URL list, login and TLS */
	size_t failed_in_round;
	int heartbeat_s;
	int64_t connect_timeout_ms, reconnect_min_ms, reconnect_max_ms;

	pthread_t thread;
	bool thread_started;
	atomic_uint_fast64_t turns; /* loop turns: the thread is alive while this grows */
	int wakefd;

	/* Shared with other threads, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	STAILQ_HEAD(, engine_task) tasks;
	bool stopping;
	enum start_state start;
	char last_error[256];

	/* The I/O thread's own. */
	amqp_connection_state_t conn;
	bool connected;
	uint64_t generation;
	uint64_t next_tag;
	struct confirm_slot *ring;
	size_t ring_cap, ring_head, ring_len;
	/* batch_acks: deliveries from the oldest unsettled one on, in order
	 * (dl[dl_head .. dl_head + dl_len)); acks_pending: some ACK_PENDING. */
	bool batch_acks, acks_pending;
	size_t max_body; /* engine_config.max_body */
	struct unsettled *dl;
	size_t dl_cap, dl_head, dl_len;
	int64_t backoff_ms, next_attempt;
	bool fail_pending;
	char fail_why[256];
	bool gave_up;       /* the first connection failed: engine_start is stopping us */
	bool want_write;    /* engine_writable said no this turn: wait for room */
	bool woke_writable; /* the last wait ended with POLLOUT */
	bool pollout_idle;  /* ... and the owner still found no room: no POLLOUT next wait */
	int sndbuf;         /* SO_SNDBUF as engine_writable last read it (0: not yet) */
	bool ever_connected;
	/* Publishes held until they can be made (engine_hold), oldest first;
	 * releasing: one is being released (engine_must_hold lets it pass). */
	TAILQ_HEAD(, engine_held) held;
	bool releasing;
};

int64_t engine_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void engine_delivery_free(struct engine_delivery *d)
{
	if (d == NULL) {
		return;
	}
	amqp_destroy_message(&d->message);
	free(d);
}

/* ------------------------------------------------------------ configuration */

struct engine_config engine_config_of(const warren_config *cfg, const char *name)
{
	return (struct engine_config){
	    .broker = connect_config_of(cfg, name),
	    .reconnect_min_ms = config_int(cfg, CFG_BROKER_RECONNECT_MIN),
	    .reconnect_max_ms = config_int(cfg, CFG_BROKER_RECONNECT_MAX),
	};
}

struct engine *engine_new(const struct engine_config *cfg, const struct engine_hooks *hooks,
                          char *errstr, size_t errlen)
{
	struct engine *e = calloc(1, sizeof(*e));
	struct connect_config broker = cfg->broker;

	/* The engine reads and handles basic.cancel and connection.blocked. */
	broker.capabilities = true;
	if (e == NULL) {
		snprintf(errstr, errlen, "out of memory");
		return NULL;
	}
	e->hooks = *hooks;
	e->wakefd = -1;
	pthread_mutex_init(&e->mu, NULL);
	STAILQ_INIT(&e->tasks);
	TAILQ_INIT(&e->held);
	pthread_cond_init(&e->cond, NULL);
	e->heartbeat_s = cfg->broker.heartbeat_s;
	e->connect_timeout_ms = cfg->broker.timeout_ms;
	e->reconnect_min_ms = cfg->reconnect_min_ms;
	e->reconnect_max_ms = cfg->reconnect_max_ms;
	e->backoff_ms = cfg->reconnect_min_ms;
	e->batch_acks = cfg->batch_acks;
	e->max_body = cfg->max_body;
	e->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (e->wakefd < 0) {
		snprintf(errstr, errlen, "cannot create the engine: %s", strerror(errno));
		goto fail;
	}
	if (connect_target_new(&broker, &e->target, errstr, errlen) != WARREN_OK) {
		goto fail;
	}
	return e;
fail:
	engine_free(e);
	return NULL;
}

/* ------------------------------------------------------------ confirm ring */

static int ring_push(struct engine *e, uint64_t tag, engine_confirm_fn fn, void *ctx)
{
	if (e->ring_len == e->ring_cap) {
		size_t cap = e->ring_cap != 0 ? e->ring_cap * 2 : 256;
		struct confirm_slot *r = malloc(cap * sizeof(*r));

		if (r == NULL) {
			return -1;
		}
		for (size_t i = 0; i < e->ring_len; i++) {
			r[i] = e->ring[(e->ring_head + i) % e->ring_cap];
		}
		free(e->ring);
		e->ring = r;
		e->ring_cap = cap;
		e->ring_head = 0;
	}
	e->ring[(e->ring_head + e->ring_len) % e->ring_cap] =
	    (struct confirm_slot){.tag = tag, .fn = fn, .ctx = ctx};
	e->ring_len++;
	return 0;
}

static struct confirm_slot *ring_at(struct engine *e, size_t i)
{
	return &e->ring[(e->ring_head + i) % e->ring_cap];
}

static void ring_pop_done(struct engine *e)
{
	while (e->ring_len > 0 && ring_at(e, 0)->fn == NULL) {
		e->ring_head = (e->ring_head + 1) % e->ring_cap;
		e->ring_len--;
	}
}

static void fire(struct engine *e, struct confirm_slot *s, enum engine_confirm outcome)
{
	engine_confirm_fn fn = s->fn;

	if (fn != NULL) {
		s->fn = NULL;
		fn(e, s->ctx, outcome);
	}
}

/* Finds tag by binary search: tags are pushed in increasing order. */
static struct confirm_slot *ring_find(struct engine *e, uint64_t tag)
{
	size_t lo = 0, hi = e->ring_len;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (ring_at(e, mid)->tag < tag) {
			lo = mid + 1;
		} else {
			hi = mid;
		}
	}
	return lo < e->ring_len && ring_at(e, lo)->tag == tag ? ring_at(e, lo) : NULL;
}

static void confirm(struct engine *e, uint64_t tag, bool multiple, enum engine_confirm outcome)
{
	if (multiple) {
		for (size_t i = 0; i < e->ring_len && ring_at(e, i)->tag <= tag; i++) {
			fire(e, ring_at(e, i), outcome);
		}
	} else {
		struct confirm_slot *s = ring_find(e, tag);

		if (s != NULL) {
			fire(e, s, outcome);
		}
	}
	ring_pop_done(e);
}

static void ring_fail_all(struct engine *e)
{
	for (size_t i = 0; i < e->ring_len; i++) {
		fire(e, ring_at(e, i), ENGINE_LOST);
	}
	e->ring_len = 0;
	e->ring_head = 0;
}

/* ------------------------------------------------------------ ack batching */

/* Makes room for one more delivery: drops the settled entries (kept only
 * while an older one is unsettled), then grows. */
static int dl_reserve(struct engine *e)
{
	size_t n = 0;

	if (e->dl_head + e->dl_len < e->dl_cap) {
		return 0;
	}
	for (size_t i = 0; i < e->dl_len; i++) {
		if (e->dl[e->dl_head + i].state != SETTLED) {
			e->dl[n++] = e->dl[e->dl_head + i];
		}
	}
	e->dl_head = 0;
	e->dl_len = n;
	if (n * 2 > e->dl_cap || e->dl_cap == 0) {
		size_t cap = e->dl_cap != 0 ? e->dl_cap * 2 : 256;
		struct unsettled *grown = realloc(e->dl, cap * sizeof(*grown));

		if (grown == NULL) {
			return -1;
		}
		e->dl = grown;
		e->dl_cap = cap;
	}
	return 0;
}

static void dl_track(struct engine *e, uint64_t tag)
{
	if (!e->batch_acks) {
		return;
	}
	if (dl_reserve(e) != 0) {
		engine_fail(e, "out of memory tracking deliveries");
		return;
	}
	e->dl[e->dl_head + e->dl_len++] = (struct unsettled){.tag = tag, .state = UNSETTLED};
}

/* The tracked entry of tag (binary search: tags only grow), or NULL. */
static struct unsettled *dl_find(struct engine *e, uint64_t tag)
{
	struct unsettled *v = e->dl + e->dl_head;
	size_t lo = 0, hi = e->dl_len;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (v[mid].tag < tag) {
			lo = mid + 1;
		} else {
			hi = mid;
		}
	}
	return lo < e->dl_len && v[lo].tag == tag ? &v[lo] : NULL;
}

static void dl_reset(struct engine *e)
{
	e->dl_head = 0;
	e->dl_len = 0;
	e->acks_pending = false;
}

static bool send_ack(struct engine *e, uint64_t tag, bool multiple)
{
	if (amqp_basic_ack(e->conn, CHANNEL, tag, multiple) != AMQP_STATUS_OK) {
		engine_fail(e, "basic.ack failed: connection lost");
		return false;
	}
	return true;
}

/* Sends the turn's acks: one multiple=1 ack for the settled run at the
 * front (its last pending ack names a delivery the broker still holds, as
 * multiple=1 requires), single acks for those past the oldest unsettled. */
static void flush_acks(struct engine *e)
{
	uint64_t multi = 0;

	if (!e->acks_pending || !e->connected || e->fail_pending) {
		return;
	}
	e->acks_pending = false;
	while (e->dl_len > 0 && e->dl[e->dl_head].state != UNSETTLED) {
		if (e->dl[e->dl_head].state == ACK_PENDING) {
			multi = e->dl[e->dl_head].tag;
		}
		e->dl_head++;
		e->dl_len--;
	}
	if (multi != 0 && !send_ack(e, multi, true)) {
		return;
	}
	for (size_t i = 0; i < e->dl_len; i++) {
		struct unsettled *u = &e->dl[e->dl_head + i];

		if (u->state == ACK_PENDING) {
			if (!send_ack(e, u->tag, false)) {
				return;
			}
			u->state = SETTLED;
		}
	}
}

/* ------------------------------------------------------------ connecting */

static void set_start(struct engine *e, enum start_state s, const char *why)
{
	pthread_mutex_lock(&e->mu);
	if (e->start == START_PENDING || s == START_UP) {
		e->start = s;
	}
	if (why != NULL) {
		snprintf(e->last_error, sizeof(e->last_error), "%s", why);
	}
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->mu);
}

static void schedule_retry(struct engine *e)
{
	int64_t half = e->backoff_ms / 2;

	/* Full jitter on the upper half: spreads a herd of reconnecting clients. */
	e->next_attempt = engine_now() + half + (int64_t)randombytes_uniform((uint32_t)half + 1);
	e->backoff_ms =
	    e->backoff_ms * 2 > e->reconnect_max_ms ? e->reconnect_max_ms : e->backoff_ms * 2;
}

static void destroy_conn(struct engine *e, bool graceful)
{
	if (e->conn == NULL) {
		return;
	}
	if (graceful) {
		amqp_channel_close(e->conn, CHANNEL, AMQP_REPLY_SUCCESS);
		amqp_connection_close(e->conn, AMQP_REPLY_SUCCESS);
	}
	amqp_destroy_connection(e->conn);
	e->conn = NULL;
}

static void try_connect(struct engine *e)
{
	char why[512] = "";

	if (connect_next(e->target, &e->conn, why, sizeof(why)) == WARREN_OK) {
		e->connected = true;
		e->sndbuf = 0; /* a new socket: engine_writable reads its buffer */
		if (e->blocked) {
			atomic_fetch_add(&e->blocked_ms, engine_now() - e->blocked_since);
		}
		e->blocked = false;
		e->generation++;
		e->next_tag = 1;
		dl_reset(e);
		e->fail_pending = false;
		if (e->hooks.setup(e, e->hooks.arg, why, sizeof(why)) == 0 && !e->fail_pending) {
			log_info("connected to %s:%d", connect_current(e->target)->host,
			         connect_current(e->target)->port);
			e->backoff_ms = e->reconnect_min_ms;
			e->failed_in_round = 0;
			e->ever_connected = true;
			set_start(e, START_UP, NULL);
			return;
		}
		e->connected = false;
		ring_fail_all(e);
	}
	destroy_conn(e, false);
	log_warn("%s", why);
	e->failed_in_round++;
	if (!e->ever_connected && e->failed_in_round >= connect_target_count(e->target)) {
		e->gave_up = true;
	}
	set_start(e, e->gave_up ? START_FAILED : START_PENDING, why);
	schedule_retry(e);
}

static void disconnect(struct engine *e, const char *why, bool graceful)
{
	bool was = e->connected;

	e->connected = false;
	e->fail_pending = false;
	ring_fail_all(e);
	dl_reset(e);
	if (was) {
		e->hooks.lost(e, e->hooks.arg, why);
	}
	destroy_conn(e, graceful);
	schedule_retry(e);
}

void engine_fail(struct engine *e, const char *why)
{
	if (!e->fail_pending) {
		e->fail_pending = true;
		snprintf(e->fail_why, sizeof(e->fail_why), "%s", why);
	}
}

/* ------------------------------------------------------------ frames */

static void dispatch(struct engine *e, const amqp_frame_t *f);

/* The properties of a content header live in the channel's pool, which
 * later frames recycle: copied into pool, as amqp_read_message does (its
 * clone is not exported). */
static int clone_bytes(amqp_pool_t *pool, amqp_bytes_t in, amqp_bytes_t *out)
{
	if (in.len == 0) {
		*out = amqp_empty_bytes;
		return 0;
	}
	amqp_pool_alloc_bytes(pool, in.len, out);
	if (out->bytes == NULL) {
		return -1;
	}
	memcpy(out->bytes, in.bytes, in.len);
	return 0;
}

static int clone_props(const amqp_basic_properties_t *in, amqp_basic_properties_t *out,
                       amqp_pool_t *pool)
{
	static const struct {
		amqp_flags_t flag;
		size_t offset;
	} fields[] = {
	    {AMQP_BASIC_CONTENT_TYPE_FLAG, offsetof(amqp_basic_properties_t, content_type)},
	    {AMQP_BASIC_CONTENT_ENCODING_FLAG, offsetof(amqp_basic_properties_t, content_encoding)},
	    {AMQP_BASIC_CORRELATION_ID_FLAG, offsetof(amqp_basic_properties_t, correlation_id)},
	    {AMQP_BASIC_REPLY_TO_FLAG, offsetof(amqp_basic_properties_t, reply_to)},
	    {AMQP_BASIC_EXPIRATION_FLAG, offsetof(amqp_basic_properties_t, expiration)},
	    {AMQP_BASIC_MESSAGE_ID_FLAG, offsetof(amqp_basic_properties_t, message_id)},
	    {AMQP_BASIC_TYPE_FLAG, offsetof(amqp_basic_properties_t, type)},
	    {AMQP_BASIC_USER_ID_FLAG, offsetof(amqp_basic_properties_t, user_id)},
	    {AMQP_BASIC_APP_ID_FLAG, offsetof(amqp_basic_properties_t, app_id)},
	    {AMQP_BASIC_CLUSTER_ID_FLAG, offsetof(amqp_basic_properties_t, cluster_id)},
	};

	*out = *in; /* the flags and the scalar fields */
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const amqp_bytes_t *from =
		    (const amqp_bytes_t *)((const char *)in + fields[i].offset);
		amqp_bytes_t *to = (amqp_bytes_t *)((char *)out + fields[i].offset);

		*to = amqp_empty_bytes;
		if ((in->_flags & fields[i].flag) && clone_bytes(pool, *from, to) != 0) {
			return -1;
		}
	}
	out->headers = amqp_empty_table;
	if ((in->_flags & AMQP_BASIC_HEADERS_FLAG) &&
	    amqp_table_clone(&in->headers, &out->headers, pool) != AMQP_STATUS_OK) {
		return -1;
	}
	return 0;
}

/* The next frame of the content being read. The frames of one content come
 * in a row on its channel; a method frame of channel 0 (connection.close,
 * connection.blocked) may come between them and is dispatched. */
static int content_frame(struct engine *e, amqp_frame_t *f, char *why, size_t n)
{
	for (;;) {
		int st = amqp_simple_wait_frame(e->conn, f);

		if (st != AMQP_STATUS_OK) {
			snprintf(why, n, "connection lost reading a delivery: %s",
			         amqp_error_string2(st));
			return -1;
		}
		if (f->channel != 0 || f->frame_type != AMQP_FRAME_METHOD) {
			return 0;
		}
		dispatch(e, f);
		if (e->fail_pending) {
			snprintf(why, n, "%s", e->fail_why);
			return -1;
		}
	}
}

/* Reads the content header and body of a delivery into d, as
 * amqp_read_message would, except that a body larger than max_body is
 * read off the socket frame by frame and dropped, never assembled: memory
 * held for deliveries stays within prefetch x max_body. */
static int read_content(struct engine *e, struct engine_delivery *d, char *why, size_t n)
{
	amqp_frame_t f;
	uint64_t got = 0;

	if (content_frame(e, &f, why, n) != 0) {
		return -1;
	}
	if (f.frame_type != AMQP_FRAME_HEADER || f.channel != CHANNEL ||
	    f.payload.properties.class_id != AMQP_BASIC_CLASS) {
		snprintf(why, n, "reading a delivery: expected its content header");
		return -1;
	}
	init_amqp_pool(&d->message.pool, 4096);
	if (clone_props(f.payload.properties.decoded, &d->message.properties, &d->message.pool) !=
	    0) {
		snprintf(why, n, "out of memory reading a delivery");
		return -1;
	}
	d->body_size = f.payload.properties.body_size;
	d->too_large = e->max_body > 0 && d->body_size > e->max_body;
	if (!d->too_large && d->body_size > 0) {
		d->message.body = amqp_bytes_malloc((size_t)d->body_size);
		if (d->message.body.bytes == NULL) {
			snprintf(why, n, "out of memory reading a delivery of %llu bytes",
			         (unsigned long long)d->body_size);
			return -1;
		}
	}
	while (got < d->body_size) {
		if (content_frame(e, &f, why, n) != 0) {
			return -1;
		}
		if (f.frame_type != AMQP_FRAME_BODY || f.channel != CHANNEL ||
		    f.payload.body_fragment.len > d->body_size - got) {
			snprintf(why, n, "reading a delivery: a bad body frame");
			return -1;
		}
		if (!d->too_large) {
			memcpy((char *)d->message.body.bytes + got, f.payload.body_fragment.bytes,
			       f.payload.body_fragment.len);
		}
		got += f.payload.body_fragment.len;
	}
	return 0;
}

static void on_deliver(struct engine *e, const amqp_frame_t *f)
{
	const amqp_basic_deliver_t *m = f->payload.method.decoded;
	struct engine_delivery *d = calloc(1, sizeof(*d));
	char why[300];

	if (d == NULL) {
		engine_fail(e, "out of memory reading a delivery");
		return;
	}
	d->delivery_tag = m->delivery_tag;
	d->redelivered = m->redelivered != 0;
	d->generation = e->generation;
	amqp_bytes_t rk = m->routing_key;
	size_t n = rk.len < sizeof(d->routing_key) - 1 ? rk.len : sizeof(d->routing_key) - 1;
	if (n > 0) {
		memcpy(d->routing_key, rk.bytes, n);
	}
	/* An empty field may come with NULL bytes (memcpy's argument then
	 * must not be NULL even for 0 bytes). */
	n = m->consumer_tag.len < sizeof(d->consumer_tag) - 1 ? m->consumer_tag.len
	                                                      : sizeof(d->consumer_tag) - 1;
	if (n > 0) {
		memcpy(d->consumer_tag, m->consumer_tag.bytes, n);
	}
	/* m points into the channel's pool: nothing of it is read after this. */
	if (read_content(e, d, why, sizeof(why)) != 0) {
		engine_delivery_free(d);
		engine_fail(e, why);
		return;
	}
	dl_track(e, d->delivery_tag);
	e->hooks.deliver(e, e->hooks.arg, d);
}

static void on_return(struct engine *e, const amqp_frame_t *f)
{
	const amqp_basic_return_t *m = f->payload.method.decoded;
	int code = m->reply_code;
	char text[256];
	amqp_message_t msg;
	amqp_rpc_reply_t r;

	snprintf(text, sizeof(text), "%.*s", (int)m->reply_text.len,
	         (const char *)m->reply_text.bytes);
	/* The returned message's header and body frames follow: read them, or
	 * the channel desynchronises. */
	r = amqp_read_message(e->conn, f->channel, &msg, 0);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		engine_fail(e, "cannot read a returned message");
		return;
	}
	e->hooks.returned(e, e->hooks.arg, &msg.properties, code, text);
	amqp_destroy_message(&msg);
}

/* A consumer the broker cancelled: the owner's to judge, else the
 * connection is set up again from scratch. */
static void on_cancel(struct engine *e, const amqp_basic_cancel_t *m)
{
	char tag[256];

	snprintf(tag, sizeof(tag), "%.*s", (int)m->consumer_tag.len,
	         (const char *)m->consumer_tag.bytes);
	if (e->hooks.cancelled == NULL || !e->hooks.cancelled(e, e->hooks.arg, tag)) {
		engine_fail(e, "the broker cancelled the consumer (queue deleted or moved)");
	}
}

/* The broker closed the channel or the connection: answered, and the
 * connection is dropped either way (channel 1 is the only one). */
static void on_close(struct engine *e, const amqp_frame_t *f)
{
	char why[400];

	connect_closed_by_broker(e->conn, f, why, sizeof(why));
	engine_fail(e, why);
}

static void dispatch(struct engine *e, const amqp_frame_t *f)
{
	if (f->frame_type != AMQP_FRAME_METHOD) {
		engine_fail(e, "unexpected content frame");
		return;
	}
	switch (f->payload.method.id) {
	case AMQP_BASIC_DELIVER_METHOD:
		on_deliver(e, f);
		break;
	case AMQP_BASIC_ACK_METHOD: {
		const amqp_basic_ack_t *a = f->payload.method.decoded;

		confirm(e, a->delivery_tag, a->multiple, ENGINE_ACK);
		break;
	}
	case AMQP_BASIC_NACK_METHOD: {
		const amqp_basic_nack_t *n = f->payload.method.decoded;

		confirm(e, n->delivery_tag, n->multiple, ENGINE_NACK);
		break;
	}
	case AMQP_BASIC_RETURN_METHOD:
		on_return(e, f);
		break;
	case AMQP_BASIC_CANCEL_METHOD:
		on_cancel(e, f->payload.method.decoded);
		break;
	case AMQP_CHANNEL_CLOSE_METHOD:
	case AMQP_CONNECTION_CLOSE_METHOD:
		on_close(e, f);
		break;
	case AMQP_CONNECTION_BLOCKED_METHOD: {
		const amqp_connection_blocked_t *b = f->payload.method.decoded;

		if (!e->blocked) {
			e->blocked_since = engine_now();
		}
		e->blocked = true;
		snprintf(e->blocked_reason, sizeof(e->blocked_reason), "%.*s", (int)b->reason.len,
		         (const char *)b->reason.bytes);
		log_warn("the broker refuses publishes on this connection (%s): holding them",
		         e->blocked_reason);
		break;
	}
	case AMQP_CONNECTION_UNBLOCKED_METHOD:
		if (e->blocked) {
			atomic_fetch_add(&e->blocked_ms, engine_now() - e->blocked_since);
		}
		e->blocked = false;
		log_info("the broker takes publishes again");
		break;
	default:
		break;
	}
}

static void read_frames(struct engine *e)
{
	for (int i = 0; i < FRAMES_PER_TURN && e->connected && !e->fail_pending; i++) {
		struct timeval zero = {0, 0};
		amqp_frame_t f;
		int st = amqp_simple_wait_frame_noblock(e->conn, &f, &zero);

		if (st == AMQP_STATUS_TIMEOUT) {
			break;
		}
		if (st != AMQP_STATUS_OK) {
			char why[200];

			snprintf(why, sizeof(why), "connection lost: %s", amqp_error_string2(st));
			engine_fail(e, why);
			break;
		}
		dispatch(e, &f);
	}
	if (e->connected && !e->fail_pending) {
		amqp_maybe_release_buffers(e->conn);
	}
}

/* ------------------------------------------------------------ the loop */

static void run_tasks(struct engine *e)
{
	STAILQ_HEAD(, engine_task) list = STAILQ_HEAD_INITIALIZER(list);
	struct engine_task *t;

	pthread_mutex_lock(&e->mu);
	STAILQ_CONCAT(&list, &e->tasks);
	pthread_mutex_unlock(&e->mu);
	/* A task may free itself as it runs: take it off first. */
	while ((t = STAILQ_FIRST(&list)) != NULL) {
		STAILQ_REMOVE_HEAD(&list, link);
		t->run(e, t);
	}
}

static bool is_stopping(struct engine *e)
{
	bool s;

	pthread_mutex_lock(&e->mu);
	s = e->stopping;
	pthread_mutex_unlock(&e->mu);
	return s;
}

/* The held publishes that can go now, in order (engine_hold). */
static void release_held(struct engine *e)
{
	struct engine_held *h;

	while ((h = TAILQ_FIRST(&e->held)) != NULL && engine_connected(e) &&
	       engine_blocked(e) == NULL && engine_writable(e, h->len)) {
		TAILQ_REMOVE(&e->held, h, link);
		h->on = false;
		e->releasing = true;
		h->release(e, h);
		e->releasing = false;
	}
}

static int poll_timeout(struct engine *e, int64_t now, int64_t next_tick)
{
	int64_t wait = e->heartbeat_s > 0 ? e->heartbeat_s * 1000 / 4 : 1000;

	if (!e->connected && !e->gave_up && e->next_attempt - now < wait) {
		wait = e->next_attempt - now;
	}
	if (next_tick - now < wait) {
		wait = next_tick - now;
	}
	/* An owner waits for room in the socket: POLLOUT ends the wait (see
	 * wait_events); when it cannot, look again soon. */
	if (e->want_write && e->pollout_idle && wait > WRITE_RECHECK_MS) {
		wait = WRITE_RECHECK_MS;
	}
	if (e->connected && (amqp_frames_enqueued(e->conn) || amqp_data_in_buffer(e->conn))) {
		wait = 0;
	}
	return wait < 0 ? 0 : (int)wait;
}

static void wait_events(struct engine *e, int64_t next_tick)
{
	struct pollfd fds[2] = {{.fd = e->wakefd, .events = POLLIN}, {.fd = -1}};
	int n = 1;
	uint64_t count;

	if (e->connected) {
		fds[1].fd = amqp_get_sockfd(e->conn);
		fds[1].events = POLLIN | (e->want_write && !e->pollout_idle ? POLLOUT : 0);
		n = 2;
	}
	e->woke_writable = false;
	if (poll(fds, n, poll_timeout(e, engine_now(), next_tick)) <= 0) {
		return;
	}
	e->woke_writable = (fds[1].revents & POLLOUT) != 0;
	if (fds[0].revents & POLLIN) {
		if (read(e->wakefd, &count, sizeof(count)) < 0) {
			/* EAGAIN: another turn already drained it. */
		}
	}
}

static void turn(struct engine *e)
{
	int64_t next_tick;

	if (!e->connected && !e->gave_up && engine_now() >= e->next_attempt) {
		try_connect(e);
	}
	/* Frames first: a connection.blocked, a confirm or a reply already
	 * received is seen before this turn's tasks publish anything. */
	e->want_write = false;
	if (e->connected && !e->fail_pending) {
		read_frames(e);
	}
	run_tasks(e);
	if (e->fail_pending) {
		log_warn("%s", e->fail_why);
		disconnect(e, e->fail_why, false);
	}
	release_held(e);
	next_tick = e->hooks.tick(e, e->hooks.arg, engine_now());
	/* Woken by room in the socket, and still not room enough: the next
	 * wait is a short timeout rather than a POLLOUT that fires at once. */
	e->pollout_idle = e->want_write && e->woke_writable;
	flush_acks(e);
	atomic_fetch_add(&e->turns, 1);
	wait_events(e, next_tick);
}

static void *io_main(void *arg)
{
	struct engine *e = arg;

	while (!is_stopping(e)) {
		turn(e);
	}
	/* Tasks accepted before the stop still run (they fail if not connected). */
	run_tasks(e);
	flush_acks(e);
	if (e->connected) {
		disconnect(e, "shut down", true);
	}
	return NULL;
}

/* ------------------------------------------------------------ public side */

warren_err engine_start(struct engine *e, char *errstr, size_t errlen)
{
	struct timespec until;

	if (pthread_create(&e->thread, NULL, io_main, e) != 0) {
		snprintf(errstr, errlen, "cannot start the I/O thread");
		return WARREN_ERR_SYSTEM;
	}
	e->thread_started = true;
	clock_gettime(CLOCK_REALTIME, &until);
	/* Every URL gets one full connect_timeout, plus slack for the setup. */
	int64_t ms = e->connect_timeout_ms * (int64_t)connect_target_count(e->target) + 1000;
	until.tv_sec += ms / 1000;
	until.tv_nsec += (ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&e->mu);
	while (e->start == START_PENDING) {
		if (pthread_cond_timedwait(&e->cond, &e->mu, &until) != 0) {
			break;
		}
	}
	enum start_state s = e->start;
	snprintf(errstr, errlen, "%s", s == START_PENDING ? "timed out connecting" : e->last_error);
	pthread_mutex_unlock(&e->mu);
	if (s != START_UP) {
		engine_stop(e);
		return WARREN_ERR_TRANSPORT;
	}
	return WARREN_OK;
}

void engine_stop(struct engine *e)
{
	if (e == NULL || !e->thread_started) {
		return;
	}
	pthread_mutex_lock(&e->mu);
	e->stopping = true;
	pthread_mutex_unlock(&e->mu);
	engine_wake(e);
	pthread_join(e->thread, NULL);
	e->thread_started = false;
}

void engine_free(struct engine *e)
{
	if (e == NULL) {
		return;
	}
	engine_stop(e);
	destroy_conn(e, false);
	connect_target_free(e->target);
	free(e->ring);
	free(e->dl);
	if (e->wakefd >= 0) {
		close(e->wakefd);
	}
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cond);
	free(e);
}

void engine_wake(struct engine *e)
{
	uint64_t one = 1;

	if (write(e->wakefd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, so the thread is awake anyway. */
	}
}

bool engine_submit(struct engine *e, struct engine_task *t)
{
	bool was_empty;

	pthread_mutex_lock(&e->mu);
	if (e->stopping) {
		pthread_mutex_unlock(&e->mu);
		return false;
	}
	was_empty = STAILQ_EMPTY(&e->tasks);
	STAILQ_INSERT_TAIL(&e->tasks, t, link);
	pthread_mutex_unlock(&e->mu);
	/* One wake per batch: the thread takes the whole list at once. */
	if (was_empty) {
		engine_wake(e);
	}
	return true;
}

warren_err engine_publish(struct engine *e, const char *exchange, const char *routing_key,
                          bool mandatory, const amqp_basic_properties_t *props, const void *body,
                          size_t len, engine_confirm_fn fn, void *ctx)
{
	amqp_bytes_t b = {.len = len, .bytes = (void *)body};
	int st;

	if (!e->connected || e->fail_pending) {
		return WARREN_ERR_TRANSPORT;
	}
	st = amqp_basic_publish(e->conn, CHANNEL, amqp_cstring_bytes(exchange),
	                        amqp_cstring_bytes(routing_key), mandatory, 0, props, b);
	if (st != AMQP_STATUS_OK) {
		char why[200];

		snprintf(why, sizeof(why), "publish failed: %s", amqp_error_string2(st));
		engine_fail(e, why);
		return WARREN_ERR_TRANSPORT;
	}
	uint64_t tag = e->next_tag++;
	if (fn != NULL && ring_push(e, tag, fn, ctx) != 0) {
		engine_fail(e, "out of memory tracking confirms");
		return WARREN_ERR_NOMEM;
	}
	return WARREN_OK;
}

/* rabbitmq-c 0.11 writes a publish on its non-blocking socket and, when
 * the socket is full, polls it with no time limit (amqp_basic_publish has
 * no timeout; a send timeout on the socket does not apply to a
 * non-blocking one). A broker that stops reading (frozen, or a
 * connection.blocked not yet read) would stop this thread there: no tick,
 * no deadlines, no heartbeats. So a publish is started only when what the
 * kernel already holds (SIOCOUTQ) plus the message fits in half the send
 * buffer (the kernel counts about twice the payload against SO_SNDBUF),
 * keeping WRITE_RESERVE for small frames. An empty socket always takes
 * one message, so that one larger than the buffer can still go. */
static bool fits(size_t queued, size_t len, int sndbuf)
{
	return queued + len + WRITE_OVERHEAD + WRITE_RESERVE <= (size_t)sndbuf / 2;
}

bool engine_writable(struct engine *e, size_t len)
{
	int fd, queued = 0;
	socklen_t sl = sizeof(e->sndbuf);

	if (!e->connected || e->fail_pending) {
		return true; /* engine_publish fails at once */
	}
	/* One system call on the hot path: SO_SNDBUF (which the kernel's
	 * autotuning changes) is read again only when the last size read
	 * says no. */
	fd = amqp_get_sockfd(e->conn);
	if (ioctl(fd, SIOCOUTQ, &queued) != 0 || queued <= 0 ||
	    fits((size_t)queued, len, e->sndbuf)) {
		return true;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &e->sndbuf, &sl) != 0 ||
	    fits((size_t)queued, len, e->sndbuf)) {
		return true;
	}
	e->want_write = true;
	return false;
}

void engine_ack(struct engine *e, uint64_t generation, uint64_t tag)
{
	struct unsettled *u;

	if (!e->connected || e->fail_pending || generation != e->generation) {
		return;
	}
	u = e->batch_acks ? dl_find(e, tag) : NULL;
	if (u != NULL && u->state == UNSETTLED) {
		u->state = ACK_PENDING;
		e->acks_pending = true;
	} else if (u == NULL) {
		send_ack(e, tag, false);
	}
}

void engine_reject(struct engine *e, uint64_t generation, uint64_t tag, bool requeue)
{
	struct unsettled *u;

	if (!e->connected || e->fail_pending || generation != e->generation) {
		return;
	}
	u = e->batch_acks ? dl_find(e, tag) : NULL;
	if (u != NULL && u->state != UNSETTLED) {
		return; /* settled already */
	}
	if (u != NULL) {
		u->state = SETTLED;
	}
	if (amqp_basic_reject(e->conn, CHANNEL, tag, requeue) != AMQP_STATUS_OK) {
		engine_fail(e, "basic.reject failed: connection lost");
	}
}

amqp_connection_state_t engine_conn(struct engine *e)
{
	return e->conn;
}

bool engine_connected(const struct engine *e)
{
	return e->connected && !e->fail_pending;
}

const char *engine_blocked(const struct engine *e)
{
	return e->connected && e->blocked ? e->blocked_reason : NULL;
}

int64_t engine_blocked_ms(struct engine *e)
{
	return (int64_t)atomic_load(&e->blocked_ms);
}

bool engine_must_hold(struct engine *e, size_t len)
{
	if (engine_blocked(e) != NULL) {
		return true;
	}
	if (!TAILQ_EMPTY(&e->held) && !e->releasing) {
		return true;
	}
	return !engine_writable(e, len);
}

void engine_hold(struct engine *e, struct engine_held *h)
{
	if (h->on) {
		return;
	}
	if (h->since == 0) {
		h->since = engine_now();
	}
	TAILQ_INSERT_TAIL(&e->held, h, link);
	h->on = true;
}

void engine_unhold(struct engine *e, struct engine_held *h)
{
	if (h->on) {
		TAILQ_REMOVE(&e->held, h, link);
		h->on = false;
	}
}

struct engine_held *engine_held_first(struct engine *e)
{
	return TAILQ_FIRST(&e->held);
}

struct engine_held *engine_held_next(struct engine *e, struct engine_held *h)
{
	return TAILQ_NEXT(h, link);
}

uint64_t engine_turns(struct engine *e)
{
	return atomic_load(&e->turns);
}

uint64_t engine_generation(const struct engine *e)
{
	return e->generation;
}

warren_err engine_global_init(bool args_ok, char *errstr, size_t errlen)
{
	if (!args_ok) {
		snprintf(errstr, errlen, "config and out are required");
		return WARREN_ERR_INVALID;
	}
	if (sodium_init() < 0) {
		snprintf(errstr, errlen, "libsodium failed to initialise");
		return WARREN_ERR_SYSTEM;
	}
	return WARREN_OK;
}
