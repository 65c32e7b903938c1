/* baseline.c: the yardstick warren is measured against. A minimal, careful
 * request-reply pair written directly on rabbitmq-c, on the same broker
 * objects as a warren worker of service "bench" (exchange rpc, quorum queue
 * rpc.bench bound with bench.#, direct reply-to):
 *
 *   baseline responder URL THREADS PREFETCH durable|transient
 *       THREADS consumer threads, each with a connection of its own and
 *       basic.qos PREFETCH/THREADS (the same total as the warren worker's
 *       single channel). Echoes each request's body to its reply_to. Durable:
 *       the channel is in confirm mode and a request is acked once its reply
 *       is confirmed; transient: acked once the reply is written. Acks are
 *       batched with multiple=1 whenever the socket has nothing more to read.
 *   baseline caller URL durable|transient IN_FLIGHT PAYLOAD MEASURE_MS WARMUP_MS PEER_PID
 *       one thread, one connection, IN_FLIGHT requests outstanding; each
 *       correlation id names its slot (O(1) lookup); durable requests are
 *       persistent (delivery_mode 2), mandatory and publisher-confirmed,
 *       transient ones delivery_mode 1 without confirms. Prints the
 *       benchlib result line for the MEASURE_MS after WARMUP_MS.
 *
 * With BASELINE_CLASSIC set in the environment, both sides use the objects
 * of warren's fast lane instead: exchange rpc.fast and the classic queue
 * rpc.bench.fast bound with bench.# (the yardstick for transient calls on
 * the fast lane, warren(7) THE FAST LANE).
 *
 * With BASELINE_WIRE set in the environment, both sides put on their
 * messages the properties and headers of warren's wire contract (fixed
 * values): what the contract costs the broker, apart from warren's code.
 *
 * Prints "ready" once consuming (responder). Exit status 0, 1 on failure,
 * 2 on bad usage. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include "benchlib.h"

#define CHANNEL     1
/* The durable lane's objects, or the fast lane's with BASELINE_CLASSIC (main). */
static const char *bench_exchange = "rpc", *bench_queue = "rpc.bench", *bench_queue_type = "quorum";
#define ROUTING_KEY "bench.echo"
#define REPLY_TO    "amq.rabbitmq.reply-to"
#define DRAIN_NS    (60 * INT64_C(1000000000))

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	stopping = 1;
}

static void die(const char *what, amqp_rpc_reply_t r)
{
	if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
		fprintf(stderr, "baseline: %s: %s\n", what, amqp_error_string2(r.library_error));
	} else {
		fprintf(stderr, "baseline: %s: failed (reply type %d)\n", what, (int)r.reply_type);
	}
	exit(1);
}

static amqp_connection_state_t connect_to(const char *url)
{
	struct amqp_connection_info ci;
	char *buf = strdup(url);
	amqp_connection_state_t conn = amqp_new_connection();
	amqp_socket_t *sock = amqp_tcp_socket_new(conn);

	if (buf == NULL || sock == NULL || amqp_parse_url(buf, &ci) != AMQP_STATUS_OK) {
		fprintf(stderr, "baseline: cannot use URL %s\n", url);
		exit(1);
	}
	if (amqp_socket_open(sock, ci.host, ci.port) != AMQP_STATUS_OK) {
		fprintf(stderr, "baseline: cannot connect to %s:%d\n", ci.host, ci.port);
		exit(1);
	}
	/* The same frame size as warren's engine; no heartbeats (short runs). */
	amqp_rpc_reply_t r =
	    amqp_login(conn, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		die("login", r);
	}
	free(buf);
	amqp_channel_open(conn, CHANNEL);
	if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
		die("channel.open", amqp_get_rpc_reply(conn));
	}
	return conn;
}

static void confirm_mode(amqp_connection_state_t conn)
{
	amqp_confirm_select(conn, CHANNEL);
	if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
		die("confirm.select", amqp_get_rpc_reply(conn));
	}
}

/* The queue as a warren worker of service "bench" declares it. */
static void declare(amqp_connection_state_t conn)
{
	amqp_table_entry_t qt = {.key = amqp_cstring_bytes("x-queue-type"),
	                         .value = {.kind = AMQP_FIELD_KIND_UTF8,
	                                   .value.bytes = amqp_cstring_bytes(bench_queue_type)}};

	amqp_queue_declare(conn, CHANNEL, amqp_cstring_bytes(bench_queue), 0, 1, 0, 0,
	                   (amqp_table_t){1, &qt});
	if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
		die("queue.declare", amqp_get_rpc_reply(conn));
	}
	amqp_queue_bind(conn, CHANNEL, amqp_cstring_bytes(bench_queue),
	                amqp_cstring_bytes(bench_exchange), amqp_cstring_bytes("bench.#"),
	                amqp_empty_table);
	if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
		die("queue.bind", amqp_get_rpc_reply(conn));
	}
}

/* Waits up to timeout_ns for a frame: 1 got one, 0 timed out; exits when
 * the connection fails. */
static int next_frame(amqp_connection_state_t conn, amqp_frame_t *f, int64_t timeout_ns)
{
	struct timeval tv = {.tv_sec = timeout_ns / 1000000000,
	                     .tv_usec = (timeout_ns % 1000000000) / 1000};
	int st = amqp_simple_wait_frame_noblock(conn, f, &tv);

	if (st == AMQP_STATUS_TIMEOUT) {
		return 0;
	}
	if (st != AMQP_STATUS_OK) {
		fprintf(stderr, "baseline: connection lost: %s\n", amqp_error_string2(st));
		exit(1);
	}
	return 1;
}

static bool more_buffered(amqp_connection_state_t conn)
{
	return amqp_frames_enqueued(conn) || amqp_data_in_buffer(conn);
}

/* ------------------------------------------------------------ responder */

struct responder {
	const char *url;
	int prefetch;
	bool durable;
	bool wire;
	pthread_t thread;
};

/* One consumer's state: which delivery each unconfirmed reply answers. */
struct consumer {
	amqp_connection_state_t conn;
	bool durable;
	bool wire;
	uint64_t *tag_of; /* reply seq % cap -> delivery tag */
	bool *confirmed;  /* reply seq % cap -> its confirm came */
	size_t cap;
	uint64_t published, confirmed_upto;
	uint64_t ack_upto, acked; /* delivery tags */
};

static void reply_to(struct consumer *c, uint64_t tag)
{
	amqp_message_t msg;
	amqp_rpc_reply_t r = amqp_read_message(c->conn, CHANNEL, &msg, 0);
	amqp_basic_properties_t p = {
	    ._flags = AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG,
	    .delivery_mode = 1,
	};

	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		die("reading a request", r);
	}
	p.correlation_id = msg.properties.correlation_id;
	if (c->wire) {
		/* A warren reply: its content type and rpc-status. */
		static char key[] = "rpc-status";
		static amqp_table_entry_t status = {
		    .key = {.len = sizeof(key) - 1, .bytes = key},
		    .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 0}};

		p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG;
		p.content_type = amqp_cstring_bytes("application/msgpack");
		p.headers = (amqp_table_t){1, &status};
	}
	if (amqp_basic_publish(c->conn, CHANNEL, amqp_empty_bytes, msg.properties.reply_to, 0, 0,
	                       &p, msg.body) != AMQP_STATUS_OK) {
		fprintf(stderr, "baseline: publishing a reply failed\n");
		exit(1);
	}
	amqp_destroy_message(&msg);
	if (c->durable) {
		c->published++;
		c->tag_of[c->published % c->cap] = tag;
		c->confirmed[c->published % c->cap] = false;
	} else {
		c->ack_upto = tag;
	}
}

/* A reply confirm (durable): the requests whose replies are all confirmed
 * up to here may be acked. */
static void reply_confirmed(struct consumer *c, uint64_t seq, bool multiple)
{
	if (multiple) {
		for (uint64_t s = c->confirmed_upto + 1; s <= seq; s++) {
			c->confirmed[s % c->cap] = true;
		}
	} else {
		c->confirmed[seq % c->cap] = true;
	}
	while (c->confirmed_upto < c->published && c->confirmed[(c->confirmed_upto + 1) % c->cap]) {
		c->confirmed_upto++;
		c->ack_upto = c->tag_of[c->confirmed_upto % c->cap];
	}
}

static void flush_acks(struct consumer *c)
{
	if (c->ack_upto > c->acked) {
		if (amqp_basic_ack(c->conn, CHANNEL, c->ack_upto, 1) != AMQP_STATUS_OK) {
			fprintf(stderr, "baseline: basic.ack failed\n");
			exit(1);
		}
		c->acked = c->ack_upto;
	}
}

static void consumer_frame(struct consumer *c, const amqp_frame_t *f)
{
	if (f->frame_type != AMQP_FRAME_METHOD) {
		return;
	}
	switch (f->payload.method.id) {
	case AMQP_BASIC_DELIVER_METHOD:
		reply_to(c, ((amqp_basic_deliver_t *)f->payload.method.decoded)->delivery_tag);
		break;
	case AMQP_BASIC_ACK_METHOD: {
		const amqp_basic_ack_t *a = f->payload.method.decoded;

		reply_confirmed(c, a->delivery_tag, a->multiple != 0);
		break;
	}
	case AMQP_BASIC_NACK_METHOD: {
		const amqp_basic_nack_t *n = f->payload.method.decoded;

		fprintf(stderr, "baseline: a reply was nacked\n");
		reply_confirmed(c, n->delivery_tag, n->multiple != 0);
		break;
	}
	case AMQP_CHANNEL_CLOSE_METHOD:
	case AMQP_CONNECTION_CLOSE_METHOD:
		fprintf(stderr, "baseline: the broker closed the channel\n");
		exit(1);
	default:
		break;
	}
}

static void *responder_main(void *arg)
{
	struct responder *rs = arg;
	struct consumer c = {.conn = connect_to(rs->url), .durable = rs->durable, .wire = rs->wire};
	amqp_frame_t f;

	/* At most prefetch replies await their confirm: one per unacked request. */
	c.cap = (size_t)rs->prefetch + 1;
	c.tag_of = calloc(c.cap, sizeof(*c.tag_of));
	c.confirmed = calloc(c.cap, sizeof(*c.confirmed));
	if (c.tag_of == NULL || c.confirmed == NULL) {
		exit(1);
	}
	if (c.durable) {
		confirm_mode(c.conn);
	}
	amqp_basic_qos(c.conn, CHANNEL, 0, (uint16_t)rs->prefetch, 0);
	amqp_basic_consume(c.conn, CHANNEL, amqp_cstring_bytes(bench_queue), amqp_empty_bytes, 0, 0,
	                   0, amqp_empty_table);
	if (amqp_get_rpc_reply(c.conn).reply_type != AMQP_RESPONSE_NORMAL) {
		die("basic.consume", amqp_get_rpc_reply(c.conn));
	}
	while (!stopping) {
		if (next_frame(c.conn, &f, 200000000)) {
			consumer_frame(&c, &f);
		}
		if (!more_buffered(c.conn)) {
			flush_acks(&c);
			amqp_maybe_release_buffers(c.conn);
		}
	}
	amqp_channel_close(c.conn, CHANNEL, AMQP_REPLY_SUCCESS);
	amqp_connection_close(c.conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(c.conn);
	free(c.tag_of);
	free(c.confirmed);
	return NULL;
}

static int responder(int argc, char **argv)
{
	int threads, prefetch;
	struct responder *rs;
	amqp_connection_state_t conn;

	if (argc != 6) {
		return 2;
	}
	threads = (int)bench_arg(argv[3], "THREADS");
	prefetch = (int)bench_arg(argv[4], "PREFETCH") / (threads > 0 ? threads : 1);
	if (threads < 1 || prefetch < 1) {
		return 2;
	}
	conn = connect_to(argv[2]);
	declare(conn);
	amqp_channel_close(conn, CHANNEL, AMQP_REPLY_SUCCESS);
	amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(conn);
	rs = calloc((size_t)threads, sizeof(*rs));
	for (int i = 0; rs != NULL && i < threads; i++) {
		rs[i] = (struct responder){.url = argv[2],
		                           .prefetch = prefetch,
		                           .durable = strcmp(argv[5], "durable") == 0,
		                           .wire = getenv("BASELINE_WIRE") != NULL};
		pthread_create(&rs[i].thread, NULL, responder_main, &rs[i]);
	}
	printf("ready\n");
	fflush(stdout);
	for (int i = 0; rs != NULL && i < threads; i++) {
		pthread_join(rs[i].thread, NULL);
	}
	free(rs);
	return 0;
}

/* ------------------------------------------------------------ caller */

struct slot {
	int64_t started;
	uint32_t gen;
	bool busy;
};

struct caller {
	amqp_connection_state_t conn;
	bool durable;
	bool wire; /* the properties and headers of warren's wire contract */
	struct slot *slots;
	uint32_t *free_slots; /* a stack of idle slot numbers */
	size_t nfree, nslots;
	amqp_bytes_t body;
	bool measuring;
	uint64_t calls, errors;
	struct bench_lat lat;
};

/* The properties and headers warren's wire contract puts on a request
 * (warren(7)), with fixed values: what the broker handles per message when
 * the contract is kept, apart from how warren's code makes them. */
static void wire_request(amqp_basic_properties_t *p)
{
	static amqp_table_entry_t h[3];
	static char traceparent[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

	h[0] = (amqp_table_entry_t){
	    .key = amqp_cstring_bytes("rpc-deadline"),
	    .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 1700000000000}};
	h[1] = (amqp_table_entry_t){.key = amqp_cstring_bytes("rpc-attempt"),
	                            .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 1}};
	h[2] = (amqp_table_entry_t){.key = amqp_cstring_bytes("traceparent"),
	                            .value = {.kind = AMQP_FIELD_KIND_UTF8,
	                                      .value.bytes = amqp_cstring_bytes(traceparent)}};
	const char *what = getenv("BASELINE_WIRE");

	/* "headers" or "props": only that half, to see which costs what. */
	if (strcmp(what, "props") != 0) {
		p->_flags |= AMQP_BASIC_HEADERS_FLAG;
	}
	if (strcmp(what, "headers") != 0) {
		p->_flags |= AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
		             AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG |
		             AMQP_BASIC_APP_ID_FLAG;
	}
	p->content_type = amqp_cstring_bytes("application/msgpack");
	p->message_id = amqp_cstring_bytes("5f0c7e1d9a3b4c2e8f6a1b0d3c5e7f90");
	p->type = amqp_cstring_bytes(ROUTING_KEY);
	p->timestamp = 1700000000;
	p->app_id = amqp_cstring_bytes("bench");
	p->headers = (amqp_table_t){3, h};
}

static void publish(struct caller *c)
{
	uint32_t i = c->free_slots[--c->nfree];
	struct slot *s = &c->slots[i];
	char id[20];
	amqp_basic_properties_t p = {
	    ._flags = AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_REPLY_TO_FLAG |
	              AMQP_BASIC_DELIVERY_MODE_FLAG,
	    .delivery_mode = c->durable ? 2 : 1,
	    .reply_to = amqp_cstring_bytes(REPLY_TO),
	};

	s->gen++;
	s->busy = true;
	snprintf(id, sizeof(id), "%08x%08x", i, s->gen);
	p.correlation_id = (amqp_bytes_t){.len = 16, .bytes = id};
	if (c->wire) {
		wire_request(&p);
	}
	s->started = bench_now_ns();
	if (amqp_basic_publish(c->conn, CHANNEL, amqp_cstring_bytes(bench_exchange),
	                       amqp_cstring_bytes(ROUTING_KEY), 1, 0, &p,
	                       c->body) != AMQP_STATUS_OK) {
		fprintf(stderr, "baseline: publish failed\n");
		exit(1);
	}
}

static uint32_t hex32(const char *p)
{
	uint32_t v = 0;

	for (int k = 0; k < 8; k++) {
		char ch = p[k];

		v = v * 16 + (uint32_t)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
	}
	return v;
}

/* The slot a reply's correlation id names, or NULL if it is stale or foreign. */
static struct slot *slot_of(struct caller *c, amqp_bytes_t id, uint32_t *index)
{
	uint32_t i, gen;

	if (id.len != 16) {
		return NULL;
	}
	i = hex32(id.bytes);
	gen = hex32((const char *)id.bytes + 8);
	if (i >= c->nslots || !c->slots[i].busy || c->slots[i].gen != gen) {
		return NULL;
	}
	*index = i;
	return &c->slots[i];
}

static void on_reply(struct caller *c)
{
	amqp_message_t msg;
	amqp_rpc_reply_t r = amqp_read_message(c->conn, CHANNEL, &msg, 0);
	struct slot *s;
	uint32_t i;

	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		die("reading a reply", r);
	}
	s = slot_of(c, msg.properties.correlation_id, &i);
	if (s != NULL) {
		if (c->measuring) {
			bench_lat_add(&c->lat, bench_now_ns() - s->started);
			c->calls++;
		}
		s->busy = false;
		c->free_slots[c->nfree++] = i;
	}
	amqp_destroy_message(&msg);
}

static void caller_frame(struct caller *c, const amqp_frame_t *f)
{
	amqp_message_t msg;

	if (f->frame_type != AMQP_FRAME_METHOD) {
		return;
	}
	switch (f->payload.method.id) {
	case AMQP_BASIC_DELIVER_METHOD:
		on_reply(c);
		break;
	case AMQP_BASIC_ACK_METHOD:
		break; /* the request is the broker's; its reply ends the call */
	case AMQP_BASIC_NACK_METHOD:
		c->errors++;
		break;
	case AMQP_BASIC_RETURN_METHOD:
		/* No queue bound: its content follows, and the call ends. */
		if (amqp_read_message(c->conn, CHANNEL, &msg, 0).reply_type ==
		    AMQP_RESPONSE_NORMAL) {
			uint32_t i;

			if (slot_of(c, msg.properties.correlation_id, &i) != NULL) {
				c->slots[i].busy = false;
				c->free_slots[c->nfree++] = i;
			}
			amqp_destroy_message(&msg);
		}
		c->errors++;
		break;
	case AMQP_CHANNEL_CLOSE_METHOD:
	case AMQP_CONNECTION_CLOSE_METHOD:
		fprintf(stderr, "baseline: the broker closed the channel\n");
		exit(1);
	default:
		break;
	}
}

static void caller_setup(struct caller *c, const char *url, size_t in_flight, size_t payload)
{
	c->conn = connect_to(url);
	if (c->durable) {
		confirm_mode(c->conn);
	}
	amqp_basic_consume(c->conn, CHANNEL, amqp_cstring_bytes(REPLY_TO), amqp_empty_bytes, 0, 1,
	                   0, amqp_empty_table);
	if (amqp_get_rpc_reply(c->conn).reply_type != AMQP_RESPONSE_NORMAL) {
		die("consuming replies", amqp_get_rpc_reply(c->conn));
	}
	c->nslots = in_flight;
	c->slots = calloc(in_flight, sizeof(*c->slots));
	c->free_slots = calloc(in_flight, sizeof(*c->free_slots));
	c->body = (amqp_bytes_t){.len = payload, .bytes = bench_payload(payload)};
	if (c->slots == NULL || c->free_slots == NULL || c->body.bytes == NULL) {
		exit(1);
	}
	for (size_t i = 0; i < in_flight; i++) {
		c->free_slots[c->nfree++] = (uint32_t)(in_flight - 1 - i);
	}
}

static int caller(int argc, char **argv)
{
	struct caller c = {0};
	struct bench_window w;
	int64_t open_at, close_at, give_up;
	bool opened = false, closed = false;
	amqp_frame_t f;

	if (argc != 9) {
		return 2;
	}
	c.durable = strcmp(argv[3], "durable") == 0;
	c.wire = getenv("BASELINE_WIRE") != NULL;
	caller_setup(&c, argv[2], (size_t)bench_arg(argv[4], "IN_FLIGHT"),
	             (size_t)bench_arg(argv[5], "PAYLOAD"));
	open_at = bench_now_ns() + bench_arg(argv[7], "WARMUP_MS") * 1000000;
	close_at = open_at + bench_arg(argv[6], "MEASURE_MS") * 1000000;
	give_up = close_at + DRAIN_NS;
	for (;;) {
		int64_t now = bench_now_ns(), next = closed ? give_up : opened ? close_at : open_at;

		if (!opened && now >= open_at) {
			bench_window_open(&w, (pid_t)bench_arg(argv[8], "PEER_PID"));
			opened = c.measuring = true;
		} else if (opened && !closed && now >= close_at) {
			bench_window_close(&w);
			closed = true;
			c.measuring = false;
		}
		if (closed && (c.nfree == c.nslots || now >= give_up)) {
			break;
		}
		while (!closed && c.nfree > 0) {
			publish(&c);
		}
		if (next_frame(c.conn, &f, next - now > 0 ? next - now : 0)) {
			caller_frame(&c, &f);
			while (more_buffered(c.conn) && next_frame(c.conn, &f, 0)) {
				caller_frame(&c, &f);
			}
		}
		amqp_maybe_release_buffers(c.conn);
	}
	c.errors += c.nslots - c.nfree; /* never answered */
	bench_report(c.durable                            ? "baseline durable"
	             : getenv("BASELINE_CLASSIC") != NULL ? "baseline transient classic"
	                                                  : "baseline transient",
	             &w, c.calls, &c.lat, c.errors);
	amqp_channel_close(c.conn, CHANNEL, AMQP_REPLY_SUCCESS);
	amqp_connection_close(c.conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(c.conn);
	bench_lat_free(&c.lat);
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa = {.sa_handler = on_signal};
	int rc = 2;

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (getenv("BASELINE_CLASSIC") != NULL) {
		bench_exchange = "rpc.fast";
		bench_queue = "rpc.bench.fast";
		bench_queue_type = "classic";
	}
	if (argc >= 2 && strcmp(argv[1], "responder") == 0) {
		rc = responder(argc, argv);
	} else if (argc >= 2 && strcmp(argv[1], "caller") == 0) {
		rc = caller(argc, argv);
	}
	if (rc == 2) {
		fprintf(stderr, "usage: baseline responder URL THREADS PREFETCH durable|transient\n"
		                "       baseline caller URL durable|transient IN_FLIGHT PAYLOAD "
		                "MEASURE_MS WARMUP_MS PEER_PID\n");
	}
	return rc;
}
