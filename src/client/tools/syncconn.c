/* syncconn.c: a blocking connection for tools, beside the engine's I/O
 * thread: one walk over the URL list (connect.c, the engine's connection
 * stack), then synchronous gets, acks and confirmed publishes on channel 1.
 * Every wait is bounded by broker.connect_timeout, and a broker's
 * channel.close or connection.close is answered and turned into an error
 * with its code and text. */
#include "syncconn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "connect.h"
#include "errstr.h"

#define CHANNEL CONNECT_CHANNEL

struct syncconn {
	amqp_connection_state_t conn;
	bool channel_open;  /* channel 1 is open and in confirm mode */
	bool alive;         /* the connection can still be used */
	uint64_t next_tag;  /* the delivery tag of the next publish */
	int64_t timeout_ms; /* broker.connect_timeout: bounds every wait */
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval ms_to_tv(int64_t ms)
{
	return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

/* Turns a failed synchronous reply into an error: BROKER when the broker
 * closed only the channel, TRANSPORT (and the connection unusable) for
 * everything else. */
static warren_err reply_error(struct syncconn *sc, amqp_rpc_reply_t r, const char *what,
                              char *errstr, size_t errlen)
{
	warren_err err = connect_refusal(sc->conn, CHANNEL, r, what, errstr, errlen);

	sc->channel_open = false;
	if (err != WARREN_ERR_BROKER) {
		sc->alive = false;
	}
	return err;
}

warren_err syncconn_open(const warren_config *cfg, const char *name, struct syncconn **out,
                         char *errstr, size_t errlen)
{
	struct connect_config cc = connect_config_of(cfg, name);
	struct syncconn *sc = calloc(1, sizeof(*sc));
	struct connect_target *t = NULL;
	warren_err err;

	*out = NULL;
	if (sc == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	/* Heartbeat 0: a tool blocked on its user's answer must not be cut off. */
	cc.heartbeat_s = 0;
	sc->timeout_ms = cc.timeout_ms;
	err = connect_target_new(&cc, &t, errstr, errlen);
	if (err == WARREN_OK) {
		err = connect_first(t, &sc->conn, errstr, errlen);
	}
	connect_target_free(t);
	if (err != WARREN_OK) {
		free(sc);
		return err;
	}
	sc->alive = true;
	sc->channel_open = true;
	sc->next_tag = 1;
	*out = sc;
	return WARREN_OK;
}

void syncconn_close(struct syncconn *sc)
{
	if (sc == NULL) {
		return;
	}
	if (sc->alive) {
		if (sc->channel_open) {
			amqp_channel_close(sc->conn, CHANNEL, AMQP_REPLY_SUCCESS);
		}
		amqp_connection_close(sc->conn, AMQP_REPLY_SUCCESS);
	}
	amqp_destroy_connection(sc->conn);
	free(sc);
}

/* The error for an operation on a channel or connection already gone. */
static warren_err check_usable(const struct syncconn *sc, char *errstr, size_t errlen)
{
	if (!sc->alive) {
		errstr_set(errstr, errlen, "the connection to the broker is lost");
		return WARREN_ERR_TRANSPORT;
	}
	if (!sc->channel_open) {
		errstr_set(errstr, errlen, "the broker closed the channel");
		return WARREN_ERR_BROKER;
	}
	return WARREN_OK;
}

warren_err syncconn_finish(struct syncconn *sc, char *errstr, size_t errlen)
{
	warren_err err = check_usable(sc, errstr, errlen);
	amqp_rpc_reply_t r;

	if (err != WARREN_OK) {
		return err;
	}
	r = amqp_channel_close(sc->conn, CHANNEL, AMQP_REPLY_SUCCESS);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		return reply_error(sc, r, "channel.close", errstr, errlen);
	}
	sc->channel_open = false;
	return WARREN_OK;
}

/* Channel 1 again, after the broker closed it. */
static warren_err reopen_channel(struct syncconn *sc, char *errstr, size_t errlen)
{
	warren_err err = connect_open_channel(sc->conn, errstr, errlen);

	if (err == WARREN_OK) {
		sc->channel_open = true;
		sc->next_tag = 1;
	} else if (err != WARREN_ERR_BROKER) {
		sc->alive = false;
	}
	return err;
}

warren_err syncconn_queue_count(struct syncconn *sc, const char *queue, bool *exists,
                                uint32_t *count, char *errstr, size_t errlen)
{
	warren_err err = check_usable(sc, errstr, errlen);
	amqp_queue_declare_ok_t *ok;
	amqp_rpc_reply_t r;

	if (err != WARREN_OK) {
		return err;
	}
	ok = amqp_queue_declare(sc->conn, CHANNEL, amqp_cstring_bytes(queue), 1, 0, 0, 0,
	                        amqp_empty_table);
	if (ok != NULL) {
		*exists = true;
		*count = ok->message_count;
		return WARREN_OK;
	}
	r = amqp_get_rpc_reply(sc->conn);
	if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
	    r.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
	    ((amqp_channel_close_t *)r.reply.decoded)->reply_code == AMQP_NOT_FOUND) {
		connect_answer_close(sc->conn, CHANNEL, r.reply.id);
		sc->channel_open = false;
		*exists = false;
		*count = 0;
		return reopen_channel(sc, errstr, errlen);
	}
	return reply_error(sc, r, "queue.declare", errstr, errlen);
}

warren_err syncconn_await_count(struct syncconn *sc, const char *queue, uint32_t want, char *errstr,
                                size_t errlen)
{
	int64_t deadline = now_ms() + sc->timeout_ms;
	bool exists = true;
	uint32_t n = 0;

	for (;;) {
		warren_err err = syncconn_queue_count(sc, queue, &exists, &n, errstr, errlen);

		if (err != WARREN_OK || !exists || n >= want) {
			return err;
		}
		if (now_ms() >= deadline) {
			errstr_set(errstr, errlen, "%s: %u of %u messages back after %lld ms",
			           queue, n, want, (long long)sc->timeout_ms);
			return WARREN_ERR_TIMEOUT;
		}
		nanosleep(&(struct timespec){.tv_nsec = 20 * 1000000}, NULL);
	}
}

warren_err syncconn_get(struct syncconn *sc, const char *queue, struct syncconn_msg *out,
                        bool *empty, char *errstr, size_t errlen)
{
	warren_err err = check_usable(sc, errstr, errlen);
	amqp_basic_get_ok_t *ok;
	amqp_rpc_reply_t r;

	memset(out, 0, sizeof(*out));
	*empty = false;
	if (err != WARREN_OK) {
		return err;
	}
	amqp_maybe_release_buffers(sc->conn);
	r = amqp_basic_get(sc->conn, CHANNEL, amqp_cstring_bytes(queue), 0);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		return reply_error(sc, r, "basic.get", errstr, errlen);
	}
	if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) {
		*empty = true;
		return WARREN_OK;
	}
	ok = r.reply.decoded;
	out->delivery_tag = ok->delivery_tag;
	out->redelivered = ok->redelivered != 0;
	/* The method lives in the connection's frame pool: copy what we keep. */
	out->exchange =
	    strndup(ok->exchange.bytes != NULL ? ok->exchange.bytes : "", ok->exchange.len);
	out->routing_key = strndup(ok->routing_key.bytes != NULL ? ok->routing_key.bytes : "",
	                           ok->routing_key.len);
	r = amqp_read_message(sc->conn, CHANNEL, &out->message, 0);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		free(out->exchange);
		free(out->routing_key);
		memset(out, 0, sizeof(*out));
		return reply_error(sc, r, "basic.get", errstr, errlen);
	}
	if (out->exchange == NULL || out->routing_key == NULL) {
		syncconn_msg_free(out);
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	return WARREN_OK;
}

void syncconn_msg_free(struct syncconn_msg *m)
{
	if (m == NULL) {
		return;
	}
	free(m->exchange);
	free(m->routing_key);
	if (m->delivery_tag != 0) {
		amqp_destroy_message(&m->message);
	}
	memset(m, 0, sizeof(*m));
}

warren_err syncconn_ack(struct syncconn *sc, uint64_t tag, char *errstr, size_t errlen)
{
	warren_err err = check_usable(sc, errstr, errlen);

	if (err == WARREN_OK && amqp_basic_ack(sc->conn, CHANNEL, tag, 0) != AMQP_STATUS_OK) {
		errstr_set(errstr, errlen, "basic.ack: the connection to the broker is lost");
		sc->alive = false;
		err = WARREN_ERR_TRANSPORT;
	}
	return err;
}

warren_err syncconn_requeue(struct syncconn *sc, uint64_t tag, char *errstr, size_t errlen)
{
	warren_err err = check_usable(sc, errstr, errlen);

	if (err == WARREN_OK && amqp_basic_nack(sc->conn, CHANNEL, tag, 0, 1) != AMQP_STATUS_OK) {
		errstr_set(errstr, errlen, "basic.nack: the connection to the broker is lost");
		sc->alive = false;
		err = WARREN_ERR_TRANSPORT;
	}
	return err;
}

/* Whether f, a basic.ack or basic.nack, settles tag (itself, or a
 * multiple one covering it); *nacked says which. */
static bool settles(const amqp_frame_t *f, uint64_t tag, bool *nacked)
{
	uint64_t got;
	bool multiple;

	*nacked = f->payload.method.id == AMQP_BASIC_NACK_METHOD;
	if (*nacked) {
		const amqp_basic_nack_t *n = f->payload.method.decoded;

		got = n->delivery_tag;
		multiple = n->multiple;
	} else {
		const amqp_basic_ack_t *a = f->payload.method.decoded;

		got = a->delivery_tag;
		multiple = a->multiple;
	}
	return got == tag || (multiple && got >= tag);
}

/* The next method frame before deadline; TRANSPORT (and the connection
 * unusable) when none comes or the connection fails. */
static warren_err next_method(struct syncconn *sc, int64_t deadline, amqp_frame_t *f, char *errstr,
                              size_t errlen)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		struct timeval tv = ms_to_tv(left > 0 ? left : 0);
		int st = amqp_simple_wait_frame_noblock(sc->conn, f, &tv);

		if (st != AMQP_STATUS_OK) {
			errstr_set(errstr, errlen, "waiting for the broker's confirm: %s",
			           st == AMQP_STATUS_TIMEOUT ? "no answer in time"
			                                     : amqp_error_string2(st));
			sc->alive = false;
			return WARREN_ERR_TRANSPORT;
		}
		if (f->frame_type == AMQP_FRAME_METHOD) {
			return WARREN_OK;
		}
	}
}

/* A channel.close or connection.close instead of the confirm: BROKER when
 * only the channel closed, TRANSPORT (and the connection unusable) else. */
static warren_err closed_while_waiting(struct syncconn *sc, const amqp_frame_t *f, char *errstr,
                                       size_t errlen)
{
	sc->channel_open = false;
	if (connect_closed_by_broker(sc->conn, f, errstr, errlen) != WARREN_ERR_BROKER) {
		sc->alive = false;
		return WARREN_ERR_TRANSPORT;
	}
	return WARREN_ERR_BROKER;
}

/* Reads a basic.return's content and remembers its code and text. */
static warren_err take_return(struct syncconn *sc, const amqp_frame_t *f, char *errstr,
                              size_t errlen)
{
	const amqp_basic_return_t *ret = f->payload.method.decoded;
	amqp_message_t m;
	amqp_rpc_reply_t r;

	errstr_set(errstr, errlen, "%u %.*s", ret->reply_code, (int)ret->reply_text.len,
	           (const char *)ret->reply_text.bytes);
	r = amqp_read_message(sc->conn, f->channel, &m, 0);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		return reply_error(sc, r, "basic.return", errstr, errlen);
	}
	amqp_destroy_message(&m);
	return WARREN_OK;
}

/* Waits for the confirm of tag; a basic.return before it marks it returned. */
static warren_err await_confirm(struct syncconn *sc, uint64_t tag, enum syncconn_outcome *outcome,
                                char *errstr, size_t errlen)
{
	int64_t deadline = now_ms() + sc->timeout_ms;
	bool returned = false, nacked;
	char ret_why[300] = "";
	amqp_frame_t f;

	for (;;) {
		warren_err err = next_method(sc, deadline, &f, errstr, errlen);

		if (err != WARREN_OK) {
			return err;
		}
		switch (f.payload.method.id) {
		case AMQP_BASIC_RETURN_METHOD:
			if (take_return(sc, &f, ret_why, sizeof(ret_why)) != WARREN_OK) {
				errstr_set(errstr, errlen, "%s", ret_why);
				return WARREN_ERR_TRANSPORT;
			}
			returned = true;
			break;
		case AMQP_BASIC_ACK_METHOD:
		case AMQP_BASIC_NACK_METHOD:
			if (!settles(&f, tag, &nacked)) {
				break;
			}
			*outcome = nacked     ? SYNCCONN_NACKED
			           : returned ? SYNCCONN_RETURNED
			                      : SYNCCONN_CONFIRMED;
			errstr_set(errstr, errlen, "%s", nacked ? "the broker nacked it" : ret_why);
			return WARREN_OK;
		case AMQP_CHANNEL_CLOSE_METHOD:
		case AMQP_CONNECTION_CLOSE_METHOD:
			return closed_while_waiting(sc, &f, errstr, errlen);
		default:
			break;
		}
	}
}

warren_err syncconn_publish(struct syncconn *sc, const char *exchange, const char *routing_key,
                            const amqp_basic_properties_t *props, amqp_bytes_t body,
                            enum syncconn_outcome *outcome, char *errstr, size_t errlen)
{
	warren_err err = check_usable(sc, errstr, errlen);
	int st;

	if (err != WARREN_OK) {
		return err;
	}
	amqp_maybe_release_buffers(sc->conn);
	st = amqp_basic_publish(sc->conn, CHANNEL, amqp_cstring_bytes(exchange),
	                        amqp_cstring_bytes(routing_key), 1, 0, props, body);
	if (st != AMQP_STATUS_OK) {
		errstr_set(errstr, errlen, "basic.publish: %s", amqp_error_string2(st));
		sc->alive = false;
		return WARREN_ERR_TRANSPORT;
	}
	return await_confirm(sc, sc->next_tag++, outcome, errstr, errlen);
}
