/* syncconn.h: one blocking rabbitmq-c connection with one channel in
 * publisher-confirm mode, for command-line tools that do one thing at a
 * time (rpc-dlq). No I/O thread, no reconnection: the first reachable URL
 * of broker.url is used, and a lost connection ends the tool's work.
 * Not thread-safe: one thread owns a syncconn. */
#ifndef WARREN_SYNCCONN_H
#define WARREN_SYNCCONN_H

#include <amqp.h>
#include <amqp_framing.h>

#include "warren.h"

struct syncconn;

/* What the broker said about one publish. */
enum syncconn_outcome {
	SYNCCONN_CONFIRMED, /* basic.ack and no basic.return: routed and stored */
	SYNCCONN_RETURNED,  /* basic.return: no queue bound for the routing key */
	SYNCCONN_NACKED,    /* basic.nack: the broker could not take it */
};

/* A message taken with syncconn_get; the caller frees it with syncconn_msg_free. */
struct syncconn_msg {
	uint64_t delivery_tag;
	bool redelivered;
	char *exchange;    /* malloc'd, NUL-terminated */
	char *routing_key; /* malloc'd, NUL-terminated */
	amqp_message_t message;
};

/* Connects to the first reachable URL of cfg's broker.url (broker.vhost,
 * broker.password_file, broker.tls_* and broker.connect_timeout apply;
 * heartbeats are off, since a tool may wait for its user), opens channel 1
 * and selects confirms, as connect_first does. name is the connection_name
 * shown by rabbitmqctl. broker.connect_timeout also bounds every later wait
 * for the broker. Returns WARREN_OK with *out the caller's;
 * WARREN_ERR_CONFIG for a bad URL anywhere in the list (before any is
 * tried), a bad password file or TLS files; WARREN_ERR_TRANSPORT when no URL
 * could be reached or logged in to (errstr names each failure);
 * WARREN_ERR_NOMEM. */
warren_err syncconn_open(const warren_config *cfg, const char *name, struct syncconn **out,
                         char *errstr, size_t errlen);

/* Closes the channel and the connection politely and frees. NULL-safe. */
void syncconn_close(struct syncconn *sc);

/* Closes the channel and waits for the broker's close-ok, the point at which
 * every ack and reject sent before has been applied. WARREN_ERR_BROKER if the
 * broker had closed the channel instead (errstr says why), _TRANSPORT if the
 * connection is lost. The syncconn can then only be closed. */
warren_err syncconn_finish(struct syncconn *sc, char *errstr, size_t errlen);

/* queue.declare passive: *exists false (and WARREN_OK) when the broker
 * answers 404; otherwise *count is its number of ready messages. The
 * channel is reopened after a 404. WARREN_ERR_BROKER/_TRANSPORT otherwise. */
warren_err syncconn_queue_count(struct syncconn *sc, const char *queue, bool *exists,
                                uint32_t *count, char *errstr, size_t errlen);

/* Polls syncconn_queue_count until the queue has at least want ready
 * messages: a quorum queue applies the nacks of a channel after the
 * channel's close-ok, so a command that follows another at once would
 * otherwise find some of them missing. WARREN_ERR_TIMEOUT when
 * broker.connect_timeout passes first (someone else may be consuming). */
warren_err syncconn_await_count(struct syncconn *sc, const char *queue, uint32_t want, char *errstr,
                                size_t errlen);

/* basic.get without auto-ack: *empty true when the queue had nothing ready;
 * otherwise *out holds the message until syncconn_msg_free. */
warren_err syncconn_get(struct syncconn *sc, const char *queue, struct syncconn_msg *out,
                        bool *empty, char *errstr, size_t errlen);
void syncconn_msg_free(struct syncconn_msg *m); /* NULL-safe, leaves *m zeroed */

/* basic.ack of one delivery. */
warren_err syncconn_ack(struct syncconn *sc, uint64_t tag, char *errstr, size_t errlen);
/* basic.nack with requeue of one delivery: it goes back to its queue.
 * RabbitMQ puts a message given back behind those still in the queue, in
 * the order they are given back; a multiple nack has no such order once it
 * covers more than a few dozen deliveries, so callers give back one by one. */
warren_err syncconn_requeue(struct syncconn *sc, uint64_t tag, char *errstr, size_t errlen);

/* Publishes with mandatory set and waits for the broker's answer: WARREN_OK
 * with *outcome set (errstr then holds the return's "312 NO_ROUTE" for
 * SYNCCONN_RETURNED); WARREN_ERR_BROKER when the broker closed the channel
 * (a missing exchange, a refused user_id...), _TRANSPORT when the connection
 * was lost or broker.connect_timeout passed. props and body are only read
 * during the call. */
warren_err syncconn_publish(struct syncconn *sc, const char *exchange, const char *routing_key,
                            const amqp_basic_properties_t *props, amqp_bytes_t body,
                            enum syncconn_outcome *outcome, char *errstr, size_t errlen);

#endif
