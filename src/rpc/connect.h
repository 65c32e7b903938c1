/* connect.h: the one AMQP connection stack, under the engine's I/O thread
 * and the tools' blocking connection (syncconn.c) alike: the broker.url
 * list in failover order, one connection to one URL (a TCP or TLS socket,
 * the login with warren's client properties, channel 1 in publisher-confirm
 * mode), and the one text that describes a broker's refusal. Not
 * thread-safe: one thread owns a target and the connections it makes. */
#ifndef WARREN_CONNECT_H
#define WARREN_CONNECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "warren.h"

/* The channel connect_next and connect_first open; the only one used. */
#define CONNECT_CHANNEL 1

/* A broker as the broker.* keys describe it. Only read by
 * connect_target_new, which copies what it keeps. */
struct connect_config {
	const char *urls;          /* comma-separated amqp:// and amqps:// URLs */
	const char *vhost;         /* broker.vhost; "": the URL's path, "/" when empty */
	const char *password_file; /* "": the URL's password */
	const char *name;          /* the connection_name client property */
	int heartbeat_s;           /* asked for at login; 0: no heartbeats */
	int64_t timeout_ms;        /* bounds the TCP connect, the TLS and AMQP
	                            * handshakes and every later synchronous RPC */
	/* amqps:// ("": the system's CAs, no client certificate) */
	const char *tls_ca, *tls_cert, *tls_key;
	bool tls_verify; /* the broker's certificate and host name */
	/* Asks the broker for the consumer_cancel_notify and connection.blocked
	 * capabilities: the owner then reads and handles basic.cancel and
	 * connection.blocked frames (the engine does; a tool need not). */
	bool capabilities;
};

/* The broker.* keys of cfg (capabilities off); name is the connection's
 * name. Points into cfg. */
struct connect_config connect_config_of(const warren_config *cfg, const char *name);

struct connect_target;

/* Parses every URL of cc->urls (an unparsable one anywhere in the list is
 * refused before any connection is tried) and reads broker.password_file.
 * WARREN_OK with *out the caller's; WARREN_ERR_CONFIG ("broker.url: cannot
 * parse ...", shown without its password; "broker.url: no URL given";
 * "broker.password_file: ..."); WARREN_ERR_NOMEM. */
warren_err connect_target_new(const struct connect_config *cc, struct connect_target **out,
                              char *errstr, size_t errlen);
/* Wipes the URLs and password, frees. NULL-safe. */
void connect_target_free(struct connect_target *t);
/* How many URLs the list holds (at least one). */
size_t connect_target_count(const struct connect_target *t);
/* The URL the last connect_next or connect_first tried (host and port,
 * for messages). */
const struct amqp_connection_info *connect_current(const struct connect_target *t);

/* Connects to the next URL of the list: the first, then each in turn, then
 * the first again (the engine's failover order, one URL per attempt). On
 * WARREN_OK *out is a connection with channel CONNECT_CHANNEL open in
 * confirm mode, the caller's to amqp_destroy_connection. Otherwise *out is
 * NULL, errstr says why ("cannot connect to HOST:PORT: ...", "login to
 * HOST:PORT: 403 ACCESS_REFUSED - ...", "channel.open: ...") and the error
 * is WARREN_ERR_CONFIG for the TLS files (broker.tls_*), _NOMEM, or
 * _TRANSPORT for anything the broker or the network did. */
warren_err connect_next(struct connect_target *t, amqp_connection_state_t *out, char *errstr,
                        size_t errlen);
/* Tries each URL once from the first, as a tool does: WARREN_OK at the
 * first that answers; a CONFIG or NOMEM error ends the walk with that
 * reason alone; otherwise WARREN_ERR_TRANSPORT with every reason, joined
 * by "; ". */
warren_err connect_first(struct connect_target *t, amqp_connection_state_t *out, char *errstr,
                         size_t errlen);

/* channel.open and confirm.select of CONNECT_CHANNEL on a live connection
 * (again after the broker closed it). Errors as connect_refusal's. */
warren_err connect_open_channel(amqp_connection_state_t c, char *errstr, size_t errlen);

/* The text of a failed synchronous reply of rabbitmq-c: "WHAT: CODE TEXT"
 * for the broker's channel.close or connection.close ("queue.declare: 404
 * NOT_FOUND - no queue 'x' in vhost '/'"), "WHAT: " and rabbitmq-c's
 * message for a library error, "WHAT: no reply from the broker" when there
 * was none, "WHAT: unexpected method 0x..." for another method. */
void connect_describe_reply(amqp_rpc_reply_t r, const char *what, char *errstr, size_t errlen);

/* Answers a close the broker sent (channel.close on channel ch, or
 * connection.close) with its close-ok, so that it ends cleanly. */
void connect_answer_close(amqp_connection_state_t c, amqp_channel_t ch, amqp_method_number_t id);

/* A failed synchronous reply on channel ch: describes it (as
 * connect_describe_reply) and answers a close. WARREN_ERR_BROKER when the
 * broker closed only the channel (the connection is still usable),
 * WARREN_ERR_TRANSPORT otherwise (the connection is gone or out of step). */
warren_err connect_refusal(amqp_connection_state_t c, amqp_channel_t ch, amqp_rpc_reply_t r,
                           const char *what, char *errstr, size_t errlen);

/* A channel.close or connection.close frame read from the connection
 * unasked: "channel closed by the broker: CODE TEXT" or "connection closed
 * by the broker: CODE TEXT", answered as connect_answer_close does.
 * WARREN_ERR_BROKER for a channel.close, _TRANSPORT for a connection.close. */
warren_err connect_closed_by_broker(amqp_connection_state_t c, const amqp_frame_t *f, char *errstr,
                                    size_t errlen);

#endif
