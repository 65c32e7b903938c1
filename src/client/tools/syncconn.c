/* syncconn.c: a blocking connection for tools, beside the engine's I/O
 * thread: connect over the URL list once, then synchronous gets, acks and
 * confirmed publishes on channel 1. Every wait is bounded by
 * broker.connect_timeout, and a broker's channel.close or connection.close
 * is answered and turned into an error with its code and text. */
#include "syncconn.h"
#include "tls.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <sodium.h>

#include "config.h"
#include "errstr.h"
#include "secret.h"

#define CHANNEL   1
#define FRAME_MAX 131072

struct syncconn {
	amqp_connection_state_t conn;
	bool channel_open;  /* channel 1 is open and in confirm mode */
	bool alive;         /* the connection can still be used */
	uint64_t next_tag;  /* the delivery tag of the next publish */
	int64_t timeout_ms; /* broker.connect_timeout: bounds every wait */
};

/* What one connection attempt needs, from the config. */
struct target {
	const char *vhost;    /* broker.vhost; "" for the URL's */
	struct tls_options tls;
	const char *password; /* from broker.password_file; NULL for the URL's */
	const char *name;
	struct timeval tv;
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

/* Answers a close the broker sent, so the channel or connection ends cleanly. */
static void answer_close(struct syncconn *sc, amqp_method_number_t id)
{
	if (id == AMQP_CHANNEL_CLOSE_METHOD) {
		amqp_channel_close_ok_t ok = {0};

		amqp_send_method(sc->conn, CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
		sc->channel_open = false;
	} else if (id == AMQP_CONNECTION_CLOSE_METHOD) {
		amqp_connection_close_ok_t ok = {0};

		amqp_send_method(sc->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
		sc->alive = false;
		sc->channel_open = false;
	}
}

/* "WHAT: 404 NOT_FOUND - no queue 'x' in vhost '/'" for a close carrying
 * code and text; decoded is the close method's decoded body. */
static void describe_close(amqp_method_number_t id, const void *decoded, const char *what,
                           char *errstr, size_t errlen)
{
	const amqp_bytes_t *text;
	unsigned code;

	if (id == AMQP_CHANNEL_CLOSE_METHOD) {
		code = ((const amqp_channel_close_t *)decoded)->reply_code;
		text = &((const amqp_channel_close_t *)decoded)->reply_text;
	} else {
		code = ((const amqp_connection_close_t *)decoded)->reply_code;
		text = &((const amqp_connection_close_t *)decoded)->reply_text;
	}
	errstr_set(errstr, errlen, "%s: %u %.*s", what, code, (int)text->len,
	           (const char *)text->bytes);
}

/* Turns a failed synchronous reply into an error: BROKER when the broker
 * closed only the channel, TRANSPORT for everything else. */
static warren_err reply_error(struct syncconn *sc, amqp_rpc_reply_t r, const char *what,
                              char *errstr, size_t errlen)
{
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
	case AMQP_RESPONSE_NONE:
		errstr_set(errstr, errlen, "%s: no reply from the broker", what);
		break;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		errstr_set(errstr, errlen, "%s: %s", what, amqp_error_string2(r.library_error));
		sc->alive = false;
		break;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD ||
		    r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
			describe_close(r.reply.id, r.reply.decoded, what, errstr, errlen);
			answer_close(sc, r.reply.id);
			return r.reply.id == AMQP_CHANNEL_CLOSE_METHOD && sc->alive
			           ? WARREN_ERR_BROKER
			           : WARREN_ERR_TRANSPORT;
		}
		errstr_set(errstr, errlen, "%s: unexpected method 0x%08x", what, r.reply.id);
		break;
	}
	sc->alive = false;
	return WARREN_ERR_TRANSPORT;
}

static warren_err open_channel(struct syncconn *sc, char *errstr, size_t errlen)
{
	if (amqp_channel_open(sc->conn, CHANNEL) == NULL) {
		return reply_error(sc, amqp_get_rpc_reply(sc->conn), "channel.open", errstr,
		                   errlen);
	}
	if (amqp_confirm_select(sc->conn, CHANNEL) == NULL) {
		return reply_error(sc, amqp_get_rpc_reply(sc->conn), "confirm.select", errstr,
		                   errlen);
	}
	sc->channel_open = true;
	sc->next_tag = 1;
	return WARREN_OK;
}

static amqp_rpc_reply_t login(struct syncconn *sc, const struct amqp_connection_info *u,
                              const struct target *t)
{
	/* broker.vhost wins, then the URL's path; "amqp://host/" names the
	 * empty vhost, which means the default "/" (as in the engine). */
	const char *vhost = t->vhost[0] != '\0' ? t->vhost : u->vhost;
	amqp_table_entry_t props[1];

	if (vhost[0] == '\0') {
		vhost = "/";
	}
	props[0].key = amqp_cstring_bytes("connection_name");
	props[0].value.kind = AMQP_FIELD_KIND_UTF8;
	props[0].value.value.bytes = amqp_cstring_bytes(t->name);
	amqp_table_t table = {1, props};
	/* Heartbeat 0: a tool blocked on its user's answer must not be cut off. */
	return amqp_login_with_properties(sc->conn, vhost, 0, FRAME_MAX, 0, &table,
	                                  AMQP_SASL_METHOD_PLAIN, u->user,
	                                  t->password != NULL ? t->password : u->password);
}

/* One URL: a fresh connection, login, channel. On failure the connection
 * is destroyed and errstr says why. */
static warren_err connect_one(struct syncconn *sc, const struct amqp_connection_info *u,
                              const struct target *t, char *errstr, size_t errlen)
{
	struct timeval tv = t->tv;
	amqp_socket_t *sock;
	amqp_rpc_reply_t r;
	warren_err err = WARREN_ERR_TRANSPORT;
	int st;

	sc->conn = amqp_new_connection();
	sock = sc->conn == NULL ? NULL
	       : u->ssl         ? amqp_ssl_socket_new(sc->conn)
	                        : amqp_tcp_socket_new(sc->conn);
	if (sock == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		err = WARREN_ERR_NOMEM;
		goto fail;
	}
	if (u->ssl && tls_setup(sock, &t->tls, errstr, errlen) != 0) {
		err = WARREN_ERR_CONFIG;
		goto fail;
	}
	st = amqp_socket_open_noblock(sock, u->host, u->port, &tv);
	if (st != AMQP_STATUS_OK) {
		errstr_set(errstr, errlen, "cannot connect to %s:%d: %s", u->host, u->port,
		           amqp_error_string2(st));
		goto fail;
	}
	amqp_set_handshake_timeout(sc->conn, &tv);
	amqp_set_rpc_timeout(sc->conn, &tv);
	sc->alive = true;
	r = login(sc, u, t);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		char what[300];

		snprintf(what, sizeof(what), "login to %s:%d", u->host, u->port);
		reply_error(sc, r, what, errstr, errlen);
		goto fail;
	}
	err = open_channel(sc, errstr, errlen);
	if (err == WARREN_OK) {
		return WARREN_OK;
	}
	err = WARREN_ERR_TRANSPORT;
fail:
	if (sc->conn != NULL) {
		amqp_destroy_connection(sc->conn);
	}
	sc->conn = NULL;
	sc->alive = false;
	return err;
}

/* Tries each URL of the comma-separated list in turn. The reasons of the
 * failed ones are joined with "; ". */
static warren_err connect_list(struct syncconn *sc, const char *list, const struct target *t,
                               char *errstr, size_t errlen)
{
	char *copy = strdup(list), *save = NULL, why[512];
	warren_err err = WARREN_ERR_CONFIG;
	size_t used = 0;

	if (copy == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	errstr_set(errstr, errlen, "broker.url: no URL given");
	for (char *tok = strtok_r(copy, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save)) {
		char url[1024];
		struct amqp_connection_info info;

		snprintf(url, sizeof(url), "%s", tok);
		amqp_default_connection_info(&info);
		if (amqp_parse_url(url, &info) != AMQP_STATUS_OK) {
			errstr_set(errstr, errlen, "broker.url: cannot parse \"%s\"",
			           secret_mask_url(tok, SIZE_MAX, why, sizeof(why)));
			sodium_memzero(url, sizeof(url));
			err = WARREN_ERR_CONFIG;
			break;
		}
		err = connect_one(sc, &info, t, why, sizeof(why));
		sodium_memzero(url, sizeof(url));
		if (err == WARREN_OK || err == WARREN_ERR_CONFIG || err == WARREN_ERR_NOMEM) {
			errstr_set(errstr, errlen, "%s", why);
			break;
		}
		if (errstr != NULL && used < errlen) {
			used += (size_t)snprintf(errstr + used, errlen - used, "%s%s",
			                         used > 0 ? "; " : "", why);
		}
	}
	sodium_memzero(copy, strlen(list));
	free(copy);
	return err;
}

warren_err syncconn_open(const warren_config *cfg, const char *name, struct syncconn **out,
                         char *errstr, size_t errlen)
{
	struct syncconn *sc = calloc(1, sizeof(*sc));
	const char *pwfile = config_str(cfg, CFG_BROKER_PASSWORD_FILE);
	char password[1024];
	struct target t = {.vhost = config_str(cfg, CFG_BROKER_VHOST),
	                   .name = name,
	                   .tls = {.ca = config_str(cfg, CFG_BROKER_TLS_CA),
	                           .cert = config_str(cfg, CFG_BROKER_TLS_CERT),
	                           .key = config_str(cfg, CFG_BROKER_TLS_KEY),
	                           .verify = config_int(cfg, CFG_BROKER_TLS_VERIFY) != 0}};
	warren_err err;

	*out = NULL;
	if (sc == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	sc->timeout_ms = config_int(cfg, CFG_BROKER_CONNECT_TIMEOUT);
	t.tv = ms_to_tv(sc->timeout_ms);
	if (pwfile != NULL && pwfile[0] != '\0') {
		if (secret_read_line("broker.password_file", pwfile, password, sizeof(password),
		                     errstr, errlen) != 0) {
			free(sc);
			return WARREN_ERR_CONFIG;
		}
		t.password = password;
	}
	err = connect_list(sc, config_str(cfg, CFG_BROKER_URL), &t, errstr, errlen);
	explicit_bzero(password, sizeof(password));
	if (err != WARREN_OK) {
		free(sc);
		return err;
	}
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
		answer_close(sc, r.reply.id);
		*exists = false;
		*count = 0;
		return open_channel(sc, errstr, errlen);
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

/* True when an ack or nack for tag (or a multiple one covering it) arrived. */
static bool covers(uint64_t got, bool multiple, uint64_t tag)
{
	return got == tag || (multiple && got >= tag);
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
	bool returned = false;
	char ret_why[300] = "";

	for (;;) {
		int64_t left = deadline - now_ms();
		struct timeval tv = ms_to_tv(left > 0 ? left : 0);
		amqp_frame_t f;
		int st = amqp_simple_wait_frame_noblock(sc->conn, &f, &tv);

		if (st != AMQP_STATUS_OK) {
			errstr_set(errstr, errlen, "waiting for the broker's confirm: %s",
			           st == AMQP_STATUS_TIMEOUT ? "no answer in time"
			                                     : amqp_error_string2(st));
			sc->alive = false;
			return WARREN_ERR_TRANSPORT;
		}
		if (f.frame_type != AMQP_FRAME_METHOD) {
			continue;
		}
		switch (f.payload.method.id) {
		case AMQP_BASIC_RETURN_METHOD:
			if (take_return(sc, &f, ret_why, sizeof(ret_why)) != WARREN_OK) {
				errstr_set(errstr, errlen, "%s", ret_why);
				return WARREN_ERR_TRANSPORT;
			}
			returned = true;
			break;
		case AMQP_BASIC_ACK_METHOD: {
			const amqp_basic_ack_t *a = f.payload.method.decoded;

			if (covers(a->delivery_tag, a->multiple, tag)) {
				*outcome = returned ? SYNCCONN_RETURNED : SYNCCONN_CONFIRMED;
				errstr_set(errstr, errlen, "%s", ret_why);
				return WARREN_OK;
			}
			break;
		}
		case AMQP_BASIC_NACK_METHOD: {
			const amqp_basic_nack_t *n = f.payload.method.decoded;

			if (covers(n->delivery_tag, n->multiple, tag)) {
				*outcome = SYNCCONN_NACKED;
				errstr_set(errstr, errlen, "the broker nacked it");
				return WARREN_OK;
			}
			break;
		}
		case AMQP_CHANNEL_CLOSE_METHOD:
		case AMQP_CONNECTION_CLOSE_METHOD:
			describe_close(f.payload.method.id, f.payload.method.decoded,
			               f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD
			                   ? "the broker closed the channel"
			                   : "the broker closed the connection",
			               errstr, errlen);
			answer_close(sc, f.payload.method.id);
			return sc->alive ? WARREN_ERR_BROKER : WARREN_ERR_TRANSPORT;
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
