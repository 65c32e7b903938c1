/* connect.c: one connection to a broker of the broker.url list, made the
 * same way for the engine and for the tools: the socket (TCP, or TLS with
 * the broker.tls_* files), the login, channel 1 with publisher confirms,
 * and the text of a refusal. What happens around it (back-off and
 * reconnection, or one blocking attempt) is the caller's. */
#include "connect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <sodium.h>

#include "config.h"
#include "errstr.h"
#include "secret.h"

#define FRAME_MAX  131072
#define SYSTEM_CAS "/etc/ssl/certs/ca-certificates.crt"

struct connect_url {
	char *buf;  /* amqp_parse_url writes into it; info points into it */
	size_t len; /* of buf, which holds the password: wiped over len */
	struct amqp_connection_info info;
};

struct connect_target {
	struct connect_url *urls;
	size_t nurls;
	size_t next;                   /* the URL connect_next tries */
	size_t current;                /* the URL tried last */
	char *vhost, *password, *name; /* password: NULL for the URL's */
	char *tls_ca, *tls_cert, *tls_key;
	bool tls_verify, capabilities;
	int heartbeat_s;
	int64_t timeout_ms;
};

struct connect_config connect_config_of(const warren_config *cfg, const char *name)
{
	return (struct connect_config){
	    .urls = config_str(cfg, CFG_BROKER_URL),
	    .vhost = config_str(cfg, CFG_BROKER_VHOST),
	    .password_file = config_str(cfg, CFG_BROKER_PASSWORD_FILE),
	    .name = name,
	    .heartbeat_s = (int)(config_int(cfg, CFG_BROKER_HEARTBEAT) / 1000),
	    .timeout_ms = config_int(cfg, CFG_BROKER_CONNECT_TIMEOUT),
	    .tls_ca = config_str(cfg, CFG_BROKER_TLS_CA),
	    .tls_cert = config_str(cfg, CFG_BROKER_TLS_CERT),
	    .tls_key = config_str(cfg, CFG_BROKER_TLS_KEY),
	    .tls_verify = config_int(cfg, CFG_BROKER_TLS_VERIFY) != 0,
	};
}

/* ------------------------------------------------------------ the target */

/* A URL's text holds its password: wiped before it is freed (over its
 * whole length: amqp_parse_url cut it with NULs). */
static void url_text_free(struct connect_url *u)
{
	if (u->buf != NULL) {
		sodium_memzero(u->buf, u->len);
		free(u->buf);
		u->buf = NULL;
	}
}

/* Appends tok, parsed, to t's list. */
static warren_err add_url(struct connect_target *t, const char *tok, char *errstr, size_t errlen)
{
	struct connect_url *grown = realloc(t->urls, (t->nurls + 1) * sizeof(*grown));
	struct connect_url *u;
	char shown[512];

	if (grown == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	t->urls = grown;
	u = &grown[t->nurls];
	u->len = strlen(tok);
	u->buf = strdup(tok);
	if (u->buf == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	amqp_default_connection_info(&u->info);
	if (amqp_parse_url(u->buf, &u->info) != AMQP_STATUS_OK) {
		errstr_set(errstr, errlen, "broker.url: cannot parse \"%s\"",
		           secret_mask_url(tok, SIZE_MAX, shown, sizeof(shown)));
		url_text_free(u);
		return WARREN_ERR_CONFIG;
	}
	t->nurls++;
	return WARREN_OK;
}

static warren_err parse_urls(struct connect_target *t, const char *list, char *errstr,
                             size_t errlen)
{
	char *copy = strdup(list != NULL ? list : ""), *save = NULL;
	size_t len = copy != NULL ? strlen(copy) : 0; /* strtok_r cuts it with NULs */
	warren_err err = WARREN_OK;

	if (copy == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	for (char *tok = strtok_r(copy, ",", &save); tok != NULL && err == WARREN_OK;
	     tok = strtok_r(NULL, ",", &save)) {
		err = add_url(t, tok, errstr, errlen);
	}
	if (err == WARREN_OK && t->nurls == 0) {
		errstr_set(errstr, errlen, "broker.url: no URL given");
		err = WARREN_ERR_CONFIG;
	}
	sodium_memzero(copy, len);
	free(copy);
	return err;
}

static warren_err read_password(struct connect_target *t, const char *path, char *errstr,
                                size_t errlen)
{
	char line[1024];
	warren_err err = WARREN_ERR_CONFIG;

	if (secret_read_line("broker.password_file", path, line, sizeof(line), errstr, errlen) ==
	    0) {
		t->password = strdup(line);
		err = t->password != NULL ? WARREN_OK : WARREN_ERR_NOMEM;
		if (err != WARREN_OK) {
			errstr_set(errstr, errlen, "out of memory");
		}
	}
	sodium_memzero(line, sizeof(line));
	return err;
}

static char *copy_or_empty(const char *s)
{
	return strdup(s != NULL ? s : "");
}

warren_err connect_target_new(const struct connect_config *cc, struct connect_target **out,
                              char *errstr, size_t errlen)
{
	struct connect_target *t = calloc(1, sizeof(*t));
	warren_err err;

	*out = NULL;
	if (t == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	t->heartbeat_s = cc->heartbeat_s;
	t->timeout_ms = cc->timeout_ms;
	t->tls_verify = cc->tls_verify;
	t->capabilities = cc->capabilities;
	t->vhost = copy_or_empty(cc->vhost);
	t->name = strdup(cc->name != NULL ? cc->name : "warren");
	t->tls_ca = copy_or_empty(cc->tls_ca);
	t->tls_cert = copy_or_empty(cc->tls_cert);
	t->tls_key = copy_or_empty(cc->tls_key);
	if (t->vhost == NULL || t->name == NULL || t->tls_ca == NULL || t->tls_cert == NULL ||
	    t->tls_key == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		err = WARREN_ERR_NOMEM;
		goto out;
	}
	err = parse_urls(t, cc->urls, errstr, errlen);
	if (err == WARREN_OK && cc->password_file != NULL && cc->password_file[0] != '\0') {
		err = read_password(t, cc->password_file, errstr, errlen);
	}
out:
	if (err != WARREN_OK) {
		connect_target_free(t);
		return err;
	}
	*out = t;
	return WARREN_OK;
}

void connect_target_free(struct connect_target *t)
{
	if (t == NULL) {
		return;
	}
	for (size_t i = 0; i < t->nurls; i++) {
		url_text_free(&t->urls[i]);
	}
	free(t->urls);
	if (t->password != NULL) {
		sodium_memzero(t->password, strlen(t->password));
	}
	free(t->password);
	free(t->vhost);
	free(t->name);
	free(t->tls_ca);
	free(t->tls_cert);
	free(t->tls_key);
	free(t);
}

size_t connect_target_count(const struct connect_target *t)
{
	return t->nurls;
}

const struct amqp_connection_info *connect_current(const struct connect_target *t)
{
	return &t->urls[t->current].info;
}

/* ------------------------------------------------------------ describing */

/* "WHAT: 404 NOT_FOUND - no queue 'x' in vhost '/'" for a close carrying
 * code and text; "WHAT: unexpected method 0x..." for another method. */
static void describe_method(const amqp_method_t *m, const char *what, char *errstr, size_t errlen)
{
	const amqp_bytes_t *text;
	unsigned code;

	if (m->id == AMQP_CHANNEL_CLOSE_METHOD) {
		code = ((const amqp_channel_close_t *)m->decoded)->reply_code;
		text = &((const amqp_channel_close_t *)m->decoded)->reply_text;
	} else if (m->id == AMQP_CONNECTION_CLOSE_METHOD) {
		code = ((const amqp_connection_close_t *)m->decoded)->reply_code;
		text = &((const amqp_connection_close_t *)m->decoded)->reply_text;
	} else {
		errstr_set(errstr, errlen, "%s: unexpected method 0x%08x", what, m->id);
		return;
	}
	errstr_set(errstr, errlen, "%s: %u %.*s", what, code, (int)text->len,
	           (const char *)text->bytes);
}

void connect_describe_reply(amqp_rpc_reply_t r, const char *what, char *errstr, size_t errlen)
{
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
	case AMQP_RESPONSE_NONE:
		/* NORMAL: a call that failed without a reply of its own (the
		 * last one read was fine): no reason to give either. */
		errstr_set(errstr, errlen, "%s: no reply from the broker", what);
		return;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		errstr_set(errstr, errlen, "%s: %s", what, amqp_error_string2(r.library_error));
		return;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		describe_method(&r.reply, what, errstr, errlen);
		return;
	}
}

void connect_answer_close(amqp_connection_state_t c, amqp_channel_t ch, amqp_method_number_t id)
{
	if (id == AMQP_CHANNEL_CLOSE_METHOD) {
		amqp_channel_close_ok_t ok = {0};

		amqp_send_method(c, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
	} else if (id == AMQP_CONNECTION_CLOSE_METHOD) {
		amqp_connection_close_ok_t ok = {0};

		amqp_send_method(c, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
	}
}

warren_err connect_refusal(amqp_connection_state_t c, amqp_channel_t ch, amqp_rpc_reply_t r,
                           const char *what, char *errstr, size_t errlen)
{
	connect_describe_reply(r, what, errstr, errlen);
	if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION) {
		return WARREN_ERR_TRANSPORT;
	}
	connect_answer_close(c, ch, r.reply.id);
	return r.reply.id == AMQP_CHANNEL_CLOSE_METHOD ? WARREN_ERR_BROKER : WARREN_ERR_TRANSPORT;
}

warren_err connect_closed_by_broker(amqp_connection_state_t c, const amqp_frame_t *f, char *errstr,
                                    size_t errlen)
{
	bool channel = f->payload.method.id == AMQP_CHANNEL_CLOSE_METHOD;

	describe_method(&f->payload.method,
	                channel ? "channel closed by the broker"
	                        : "connection closed by the broker",
	                errstr, errlen);
	connect_answer_close(c, f->channel, f->payload.method.id);
	return channel ? WARREN_ERR_BROKER : WARREN_ERR_TRANSPORT;
}

/* ------------------------------------------------------------ connecting */

/* The TLS side of an amqps:// socket: the CAs (the system's by default),
 * the client certificate, and whether the broker's certificate and host
 * name are checked. */
static warren_err setup_tls(const struct connect_target *t, amqp_socket_t *sock, char *errstr,
                            size_t errlen)
{
	const char *ca = t->tls_ca[0] != '\0' ? t->tls_ca : SYSTEM_CAS;
	char key[4096];

	amqp_ssl_socket_set_verify_peer(sock, t->tls_verify);
	amqp_ssl_socket_set_verify_hostname(sock, t->tls_verify);
	if (amqp_ssl_socket_set_cacert(sock, ca) != AMQP_STATUS_OK) {
		errstr_set(errstr, errlen,
		           "broker.tls_ca: %s: not a readable PEM file of certificates", ca);
		return WARREN_ERR_CONFIG;
	}
	if (t->tls_cert[0] != '\0' &&
	    amqp_ssl_socket_set_key(sock, t->tls_cert,
	                            secret_resolve(t->tls_key, key, sizeof(key))) !=
	        AMQP_STATUS_OK) {
		errstr_set(
		    errstr, errlen,
		    "broker.tls_cert, broker.tls_key: %s and %s are not a certificate and its key",
		    t->tls_cert, t->tls_key);
		return WARREN_ERR_CONFIG;
	}
	return WARREN_OK;
}

/* The socket of c, TLS set up, opened within the timeout, which then also
 * bounds the AMQP handshake and every synchronous RPC (their expiry closes
 * the socket). */
static warren_err open_socket(const struct connect_target *t, const struct amqp_connection_info *u,
                              amqp_connection_state_t c, char *errstr, size_t errlen)
{
	struct timeval tv = {.tv_sec = t->timeout_ms / 1000,
	                     .tv_usec = (t->timeout_ms % 1000) * 1000};
	amqp_socket_t *sock = u->ssl ? amqp_ssl_socket_new(c) : amqp_tcp_socket_new(c);
	warren_err err;
	int st;

	if (sock == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	if (u->ssl) {
		err = setup_tls(t, sock, errstr, errlen);
		if (err != WARREN_OK) {
			return err;
		}
	}
	st = amqp_socket_open_noblock(sock, u->host, u->port, &tv);
	if (st != AMQP_STATUS_OK) {
		errstr_set(errstr, errlen, "cannot connect to %s:%d: %s", u->host, u->port,
		           amqp_error_string2(st));
		return WARREN_ERR_TRANSPORT;
	}
	amqp_set_handshake_timeout(c, &tv);
	amqp_set_rpc_timeout(c, &tv);
	return WARREN_OK;
}

/* Logs in with warren's client properties: connection_name, and the
 * capabilities when the owner handles what they bring. */
static amqp_rpc_reply_t login(const struct connect_target *t, const struct amqp_connection_info *u,
                              amqp_connection_state_t c)
{
	amqp_table_entry_t caps[2], props[2];
	/* broker.vhost wins; then the URL's path. "amqp://host/" names the
	 * empty vhost, which RabbitMQ never has: it means the default "/". */
	const char *vhost = t->vhost[0] != '\0' ? t->vhost : u->vhost;
	amqp_table_t table = {1, props};

	if (vhost[0] == '\0') {
		vhost = "/";
	}
	props[0].key = amqp_cstring_bytes("connection_name");
	props[0].value.kind = AMQP_FIELD_KIND_UTF8;
	props[0].value.value.bytes = amqp_cstring_bytes(t->name);
	if (t->capabilities) {
		caps[0].key = amqp_cstring_bytes("consumer_cancel_notify");
		caps[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
		caps[0].value.value.boolean = 1;
		caps[1].key = amqp_cstring_bytes("connection.blocked");
		caps[1].value.kind = AMQP_FIELD_KIND_BOOLEAN;
		caps[1].value.value.boolean = 1;
		props[1].key = amqp_cstring_bytes("capabilities");
		props[1].value.kind = AMQP_FIELD_KIND_TABLE;
		props[1].value.value.table = (amqp_table_t){2, caps};
		table.num_entries = 2;
	}
	return amqp_login_with_properties(c, vhost, 0, FRAME_MAX, t->heartbeat_s, &table,
	                                  AMQP_SASL_METHOD_PLAIN, u->user,
	                                  t->password != NULL ? t->password : u->password);
}

warren_err connect_open_channel(amqp_connection_state_t c, char *errstr, size_t errlen)
{
	if (amqp_channel_open(c, CONNECT_CHANNEL) == NULL) {
		return connect_refusal(c, CONNECT_CHANNEL, amqp_get_rpc_reply(c), "channel.open",
		                       errstr, errlen);
	}
	if (amqp_confirm_select(c, CONNECT_CHANNEL) == NULL) {
		return connect_refusal(c, CONNECT_CHANNEL, amqp_get_rpc_reply(c), "confirm.select",
		                       errstr, errlen);
	}
	return WARREN_OK;
}

/* One URL: a fresh connection, socket, login, channel. */
static warren_err open_url(struct connect_target *t, size_t i, amqp_connection_state_t *out,
                           char *errstr, size_t errlen)
{
	const struct amqp_connection_info *u = &t->urls[i].info;
	amqp_connection_state_t c = amqp_new_connection();
	amqp_rpc_reply_t r;
	warren_err err;

	t->current = i;
	*out = NULL;
	if (c == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	err = open_socket(t, u, c, errstr, errlen);
	if (err != WARREN_OK) {
		goto out;
	}
	r = login(t, u, c);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		char what[300];

		snprintf(what, sizeof(what), "login to %s:%d", u->host, u->port);
		connect_refusal(c, 0, r, what, errstr, errlen);
		err = WARREN_ERR_TRANSPORT;
		goto out;
	}
	/* A refused channel leaves no use for the connection either. */
	err =
	    connect_open_channel(c, errstr, errlen) == WARREN_OK ? WARREN_OK : WARREN_ERR_TRANSPORT;
out:
	if (err != WARREN_OK) {
		amqp_destroy_connection(c);
		return err;
	}
	*out = c;
	return WARREN_OK;
}

warren_err connect_next(struct connect_target *t, amqp_connection_state_t *out, char *errstr,
                        size_t errlen)
{
	size_t i = t->next;

	t->next = (t->next + 1) % t->nurls;
	return open_url(t, i, out, errstr, errlen);
}

warren_err connect_first(struct connect_target *t, amqp_connection_state_t *out, char *errstr,
                         size_t errlen)
{
	warren_err err = WARREN_ERR_TRANSPORT;
	size_t used = 0;

	for (size_t i = 0; i < t->nurls; i++) {
		char why[512];

		err = open_url(t, i, out, why, sizeof(why));
		if (err == WARREN_OK) {
			return WARREN_OK;
		}
		if (err == WARREN_ERR_CONFIG || err == WARREN_ERR_NOMEM) {
			errstr_set(errstr, errlen, "%s", why);
			return err;
		}
		if (errstr != NULL && used < errlen) {
			used += (size_t)snprintf(errstr + used, errlen - used, "%s%s",
			                         used > 0 ? "; " : "", why);
		}
	}
	return err;
}
