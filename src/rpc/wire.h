/* wire.h: the broker side of the wire contract (warren(7), DESIGN.md
 * section 2) in one room: every broker name (exchanges, service, lane and
 * dead-letter queues, delay tiers, reply queues), every declaration with
 * its arguments, and the helpers that read and copy AMQP headers. Nothing
 * else in src/ spells a broker name; rabbitmq/definitions.json declares the
 * same objects with the same arguments (tests/unit/test_wire.c checks).
 *
 * wire_names.c: names and arguments; wire_declare.c: declarations;
 * wire_headers.c: header lookup and copies without the broker's history. */
#ifndef WARREN_WIRE_H
#define WARREN_WIRE_H

#include <amqp.h>
#include <amqp_framing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ names */

/* Exchanges, all topic and durable; a request's routing key is its method,
 * <service>.<method>. */
#define WIRE_EXCHANGE       "rpc"       /* requests, durable lane */
#define WIRE_FAST_EXCHANGE  "rpc.fast"  /* transient requests, the fast lane */
#define WIRE_BATCH_EXCHANGE "rpc.batch" /* batches of requests (batch.h) */
#define WIRE_DLX            "rpc.dlx"   /* dead letters (deadletter.h) */
/* The default exchange: replies, and publishes straight to a queue. */
#define WIRE_DEFAULT_EXCHANGE ""
/* Direct reply-to: the pseudo-queue a caller consumes without declaring;
 * the broker completes the name on each request ("amq.rabbitmq.reply-to.g1h2..."). */
#define WIRE_DIRECT_REPLY_TO "amq.rabbitmq.reply-to"

/* A service's queues. Each writes the name into buf (cap bytes, cut short
 * like snprintf) and returns false when it did not fit. */
bool wire_service_queue(char *buf, size_t cap, const char *service); /* rpc.<service> */
bool wire_fast_queue(char *buf, size_t cap, const char *service);    /* rpc.<service>.fast */
bool wire_batch_queue(char *buf, size_t cap, const char *service);   /* rpc.<service>.batch */
bool wire_dlq(char *buf, size_t cap, const char *service);           /* rpc.<service>.dlq */
/* The binding key of each of them: <service>.# */
bool wire_binding(char *buf, size_t cap, const char *service);
/* A caller's own reply queue (client.reply_mode queue): rpc.reply.<app_id,
 * at most 64 bytes of it>.<suffix>. */
bool wire_reply_queue(char *buf, size_t cap, const char *app_id, const char *suffix);
/* A reply queue outlives its caller by this long, then the broker deletes it. */
#define WIRE_REPLY_QUEUE_EXPIRES_MS 300000

/* The delay tiers where a retried request waits: each a fanout exchange
 * and a quorum queue of the same name, whose expired messages the broker
 * dead-letters back to WIRE_EXCHANGE under their own routing key. The
 * wait is the message's own TTL (the expiration property). */
#define WIRE_DELAY_PREFIX "rpc.delay."
#define WIRE_DELAY_TIERS  8
struct wire_delay_tier {
	int64_t ms;       /* the waits this tier takes, from ms to twice that */
	const char *name; /* the exchange and the queue */
};
extern const struct wire_delay_tier wire_delay_tiers[WIRE_DELAY_TIERS];

/* ------------------------------------------------------------ arguments */

/* The x-arguments of each kind of queue, as declared (static storage,
 * never to be freed or changed). The policies of rabbitmq/definitions.json
 * add the dead-lettering and the limits of the service and lane queues. */
amqp_table_t wire_quorum_queue_args(void); /* service, batch and dead-letter queues */
amqp_table_t wire_fast_queue_args(void);   /* the fast lane: classic */
amqp_table_t wire_delay_queue_args(void);  /* a delay tier: dead-letters back to rpc */
amqp_table_t wire_reply_queue_args(void);  /* x-expires */

/* ---------------------------------------------------------- declarations */

/* Each declares one thing on channel ch of conn as rabbitmq/definitions.json
 * does: true when the broker agreed; false with the broker's answer in
 * amqp_get_rpc_reply(conn) (a refusal closes ch). I/O thread of conn only. */
bool wire_declare_exchange(amqp_connection_state_t conn, amqp_channel_t ch, const char *name);
bool wire_declare_fast_queue(amqp_connection_state_t conn, amqp_channel_t ch, const char *name);
bool wire_declare_reply_queue(amqp_connection_state_t conn, amqp_channel_t ch, const char *name);
bool wire_bind(amqp_connection_state_t conn, amqp_channel_t ch, const char *queue,
               const char *exchange, const char *key);
/* Whether exchange name exists (a passive declare, which needs no right
 * to configure it); a missing one closes ch. */
bool wire_check_exchange(amqp_connection_state_t conn, amqp_channel_t ch, const char *name);

/* Everything a worker of service declares on ch at each connection, in
 * this order: each delay tier (exchange, queue, binding), rpc, rpc.dlx, the
 * service queue and its dead-letter queue and their bindings, rpc.batch,
 * the batch queue and its binding. On false, what (whatlen bytes) names
 * the step the broker refused ("declaring queue rpc.user"). */
bool wire_declare_service(amqp_connection_state_t conn, amqp_channel_t ch, const char *service,
                          char *what, size_t whatlen);
/* The fast lane of service: rpc.fast, rpc.<service>.fast and its binding.
 * Apart from the rest because its classic queue lives on one node. */
bool wire_declare_fast_lane(amqp_connection_state_t conn, amqp_channel_t ch, const char *service);

/* --------------------------------------------------------------- headers */

/* The headers the broker writes about a message's past. */
#define WIRE_H_DELIVERY_COUNT     "x-delivery-count" /* quorum queues: earlier deliveries */
#define WIRE_H_DEATH              "x-death"          /* array of tables, latest first */
#define WIRE_H_FIRST_DEATH        "x-first-death-"   /* a prefix: -reason, -queue, -exchange */
#define WIRE_H_LAST_DEATH         "x-last-death-"    /* a prefix, as above */
#define WIRE_H_FIRST_DEATH_REASON WIRE_H_FIRST_DEATH "reason"
#define WIRE_H_FIRST_DEATH_QUEUE  WIRE_H_FIRST_DEATH "queue"

/* The value of key in t (NULL-safe), or NULL; points into t. */
const amqp_field_value_t *wire_header_find(const amqp_table_t *t, const char *key);
/* The value of the header key of p, or NULL when p has no headers or not
 * that one; points into p. */
const amqp_field_value_t *wire_header(const amqp_basic_properties_t *p, const char *key);
/* Whether a header key is s exactly, or starts with prefix. */
bool wire_key_is(amqp_bytes_t key, const char *s);
bool wire_key_starts(amqp_bytes_t key, const char *prefix);
/* Whether key is one of the broker's history headers: x-death,
 * x-first-death-*, x-last-death-*, x-delivery-count. */
bool wire_history_header(amqp_bytes_t key);

/* The number of headers of p (0 without the headers flag). */
int wire_header_count(const amqp_basic_properties_t *p);
/* Copies orig's properties into *out and its headers, in their order,
 * into entries (room for wire_header_count(orig) at least), leaving out
 * the broker's history and those drop (NULL: none) says true for, with
 * arg. out's headers are entries, the headers flag set. Returns how many
 * were kept; entries[kept..] are the caller's, to add more. out points
 * into orig and entries. */
int wire_props_copy(amqp_basic_properties_t *out, const amqp_basic_properties_t *orig,
                    amqp_table_entry_t *entries, bool (*drop)(amqp_bytes_t key, const void *arg),
                    const void *arg);

#endif
